//! The `stdio` capability: the guest's stdout and stderr are captured into
//! bounded buffers that end up in the call's report; stdin is closed.
//!
//! Unlike wasmtime's `MemoryOutputPipe`, a full buffer never fails the
//! guest's write (which would trap it): further bytes are counted and
//! dropped, so a chatty plugin still completes and the report says how much
//! was lost.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::report::Captured;

/// Largest write the guest is told it may make in one go; guests split
/// bigger writes. Bounds the host buffer a single write can demand.
const WRITE_PERMIT_BYTES: usize = 64 << 10;

/// A bounded, shareable capture buffer for one output stream.
#[derive(Clone, Debug)]
pub(crate) struct CapturedOutput {
    buffer: Arc<Mutex<Buffer>>,
}

#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    capacity: usize,
    dropped_bytes: u64,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        CapturedOutput {
            buffer: Arc::new(Mutex::new(Buffer {
                bytes: Vec::new(),
                capacity,
                dropped_bytes: 0,
            })),
        }
    }

    /// Takes what was captured so far, leaving the buffer empty for the next call.
    pub(crate) fn take(&self) -> Captured {
        let mut buffer = self.lock();
        Captured {
            bytes: std::mem::take(&mut buffer.bytes),
            dropped_bytes: std::mem::take(&mut buffer.dropped_bytes),
        }
    }

    fn append(&self, data: &[u8]) {
        let mut buffer = self.lock();
        let room = buffer.capacity.saturating_sub(buffer.bytes.len());
        let kept = data.len().min(room);
        buffer.bytes.extend_from_slice(&data[..kept]);
        buffer.dropped_bytes += (data.len() - kept) as u64;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // The buffer holds plain bytes; a panic elsewhere cannot leave it inconsistent.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut output = CapturedOutput::new(5);
        output.write(Bytes::from_static(b"hel")).unwrap();
        output.write(Bytes::from_static(b"lo, world")).unwrap();
        let captured = output.take();
        assert_eq!(captured.bytes, b"hello");
        assert_eq!(captured.dropped_bytes, 7);
        assert!(output.take().is_empty());
    }
}
