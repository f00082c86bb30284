//! Running a call until its deadline without paying for a timer when the
//! call finishes on its first poll, as most do.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::time::Sleep;

/// The call's future was still pending at its deadline.
#[derive(Debug)]
pub(crate) struct DeadlinePassed;

/// Polls `future` until it completes or `deadline` passes. The timer is
/// registered only once the future first returns `Pending` (it is blocked in
/// a host call, or yielding at an epoch tick); a guest that computes past
/// its deadline is stopped by the epoch callback instead.
pub(crate) fn until<F: Future + Unpin>(deadline: Instant, future: F) -> Until<F> {
    Until {
        future,
        deadline,
        timer: None,
    }
}

pub(crate) struct Until<F> {
    future: F,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F: Future + Unpin> Future for Until<F> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(DeadlinePassed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_ready_future_needs_no_timer() {
        let mut call = until(Instant::now(), std::future::ready(7));
        assert_eq!(
            std::future::poll_fn(|cx| Pin::new(&mut call).poll(cx))
                .await
                .unwrap(),
            7
        );
        assert!(call.timer.is_none());
    }

    #[tokio::test]
    async fn a_pending_future_ends_at_the_deadline() {
        let started = Instant::now();
        let never = std::pin::pin!(std::future::pending::<()>());
        let result = until(started + Duration::from_millis(50), never).await;
        assert!(result.is_err());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
