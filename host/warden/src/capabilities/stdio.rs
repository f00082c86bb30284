//! The `stdio` capability: `wasi:cli/stdin`, `stdout`, `stderr` and the
//! terminal interfaces. Stdin is empty (a program run with
//! [`Program::run_with_stdin`](crate::Program::run_with_stdin) reads the
//! bytes it was given) and no stream is a terminal; stdout
//! and stderr are captured into bounded buffers that end up in the call's
//! report, or, for programs run with `warden exec`, written through to the
//! host's own streams up to the same bounds. Output forwarded to a host
//! stream that is a terminal has its control characters escaped
//! ([`crate::terminal`]); forwarded to a pipe or a file it is unchanged.
//!
//! Unlike wasmtime's `MemoryOutputPipe`, reaching the bound never fails the
//! guest's write (which would trap it): further bytes are counted and
//! dropped, so a chatty plugin still completes and the report says how much
//! was lost.

use std::io::{IsTerminal, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::p2::bindings::cli;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::{Capability, InstanceSetup, Risk, Stdio};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::report::{Captured, Report};
use crate::state::HostState;
use crate::terminal::StreamEscaper;

/// The `stdio` capability.
pub(crate) struct StandardStreams;

impl Capability for StandardStreams {
    const NAME: &'static str = "stdio";
    const INTERFACES: &'static [&'static str] = &[
        "wasi:cli/stdin",
        "wasi:cli/stdout",
        "wasi:cli/stderr",
        "wasi:cli/terminal-input",
        "wasi:cli/terminal-output",
        "wasi:cli/terminal-stdin",
        "wasi:cli/terminal-stdout",
        "wasi:cli/terminal-stderr",
    ];
    const HOW_TO_GRANT: &'static str = "always granted";
    type Shared = ();
    type State = OutputStreams;

    fn risk(_: &Sandbox) -> Risk {
        Risk::Low
    }

    fn granted(_: &Sandbox) -> bool {
        true
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let getter = <HostState as WasiCliView>::cli;
        cli::stdin::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::stdout::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::stderr::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(linker, getter)
    }

    fn add_wasi_0_3_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        use wasmtime_wasi::p3::bindings::cli;
        let getter = <HostState as WasiCliView>::cli;
        cli::stdin::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::stdout::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::stderr::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(linker, getter)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(linker, getter)
    }

    fn prepare(_: &str, _: &Sandbox) -> Result<(), Error> {
        Ok(())
    }

    fn instantiate((): &(), setup: &mut InstanceSetup<'_>) -> OutputStreams {
        let limits = &setup.sandbox.limits;
        let forward = |stream| match setup.options.stdio {
            Stdio::Capture => None,
            Stdio::Forward => Some(stream),
        };
        let streams = OutputStreams {
            stdout: CapturedOutput::new(limits.stdout_bytes, forward(HostStream::Stdout)),
            stderr: CapturedOutput::new(limits.stderr_bytes, forward(HostStream::Stderr)),
        };
        setup
            .wasi
            .stdout(streams.stdout.clone())
            .stderr(streams.stderr.clone());
        if !setup.options.stdin.is_empty() {
            setup
                .wasi
                .stdin(MemoryInputPipe::new(setup.options.stdin.clone()));
        }
        streams
    }

    fn report(streams: &mut OutputStreams, report: &mut Report) {
        report.stdout = streams.stdout.take();
        report.stderr = streams.stderr.take();
    }
}

/// An instance's stdout and stderr.
pub(crate) struct OutputStreams {
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

/// One of the host process's own output streams.
#[derive(Clone, Copy, Debug)]
enum HostStream {
    Stdout,
    Stderr,
}

impl HostStream {
    fn is_terminal(self) -> bool {
        match self {
            HostStream::Stdout => std::io::stdout().is_terminal(),
            HostStream::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn write_all(self, data: &[u8]) {
        // The guest cannot be told about a failing host stream (a closed
        // pipe, say) in a useful way; its output is best effort, like a
        // terminal's.
        let _ = match self {
            HostStream::Stdout => std::io::stdout().lock().write_all(data),
            HostStream::Stderr => std::io::stderr().lock().write_all(data),
        };
    }
}

/// Largest write the guest is told it may make in one go; guests split
/// bigger writes. Bounds the host buffer a single write can demand.
const WRITE_PERMIT_BYTES: usize = 64 << 10;

/// A bounded, shareable output stream: it keeps (or forwards to the host)
/// the first `capacity` bytes of each call and counts the rest.
#[derive(Clone, Debug)]
pub(crate) struct CapturedOutput {
    buffer: Arc<Mutex<Buffer>>,
}

#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    capacity: usize,
    /// Bytes accepted this call, kept or forwarded.
    accepted: usize,
    dropped_bytes: u64,
    forward_to: Option<HostStream>,
    /// Escapes forwarded output; present when the host stream is a terminal.
    escaper: Option<StreamEscaper>,
}

impl CapturedOutput {
    fn new(capacity: usize, forward_to: Option<HostStream>) -> Self {
        CapturedOutput {
            buffer: Arc::new(Mutex::new(Buffer {
                bytes: Vec::new(),
                capacity,
                accepted: 0,
                dropped_bytes: 0,
                forward_to,
                escaper: forward_to
                    .filter(|stream| stream.is_terminal())
                    .map(|_| StreamEscaper::default()),
            })),
        }
    }

    /// Takes what was captured so far, leaving the buffer empty for the next
    /// call. Forwarded bytes are not kept, so they do not appear here.
    fn take(&self) -> Captured {
        let mut buffer = self.lock();
        buffer.accepted = 0;
        if let (Some(stream), Some(escaper)) = (buffer.forward_to, buffer.escaper.as_mut()) {
            stream.write_all(&escaper.finish());
        }
        Captured {
            bytes: std::mem::take(&mut buffer.bytes),
            dropped_bytes: std::mem::take(&mut buffer.dropped_bytes),
        }
    }

    fn append(&self, data: &[u8]) {
        let mut buffer = self.lock();
        let room = buffer.capacity.saturating_sub(buffer.accepted);
        let accepted = data.len().min(room);
        buffer.accepted += accepted;
        buffer.dropped_bytes += (data.len() - accepted) as u64;
        let data = &data[..accepted];
        let buffer = &mut *buffer;
        match (buffer.forward_to, buffer.escaper.as_mut()) {
            (Some(stream), Some(escaper)) => stream.write_all(&escaper.escape(data)),
            (Some(stream), None) => stream.write_all(data),
            (None, _) => buffer.bytes.extend_from_slice(data),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // The buffer holds plain bytes; a panic elsewhere cannot leave it inconsistent.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl wasmtime_wasi::cli::IsTerminal for CapturedOutput {
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
        let mut output = CapturedOutput::new(5, None);
        output.write(Bytes::from_static(b"hel")).unwrap();
        output.write(Bytes::from_static(b"lo, world")).unwrap();
        let captured = output.take();
        assert_eq!(captured.bytes, b"hello");
        assert_eq!(captured.dropped_bytes, 7);
        assert!(output.take().is_empty());
    }
}
