//! Many calls in flight on one runtime: busy guests neither starve nor block
//! good ones.

use std::time::Duration;

use tokio::task::JoinSet;
use warden::{ErrorKind, Instance, Plugin, Runtime};

use crate::{hello, hostile, runtime, tight_limits};

#[test]
fn handles_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Runtime>();
    send_sync::<Plugin>();
    send::<Instance>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_time_out_while_good_calls_keep_succeeding() {
    let runtime = runtime();
    let good = hello(&runtime).await;
    let mut limits = tight_limits();
    limits.timeout = Duration::from_millis(500);
    let looping = hostile(&runtime, limits).await;

    let mut calls = JoinSet::new();
    for _ in 0..8 {
        let looping = looping.clone();
        calls.spawn(async move { ("loop", looping.execute("loop", b"").await.result) });
    }
    for _ in 0..64 {
        let good = good.clone();
        calls.spawn(async move {
            (
                "good",
                good.execute("count-vowels", b"hello world").await.result,
            )
        });
    }
    let (mut timeouts, mut successes) = (0, 0);
    while let Some(joined) = calls.join_next().await {
        match joined.unwrap() {
            ("loop", result) => {
                assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
                timeouts += 1;
            }
            (_, result) => {
                assert_eq!(result.unwrap(), b"3");
                successes += 1;
            }
        }
    }
    assert_eq!((timeouts, successes), (8, 64));
}
