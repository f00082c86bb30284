//! Exit codes: one per status, so scripts can tell failures apart without --json.

use std::process::ExitCode;

use warden::ErrorKind;

/// The call succeeded.
pub const OK: u8 = 0;
/// The plugin reported an error itself.
pub const PLUGIN_ERROR: u8 = 1;
/// Bad flags, an unreadable input file, an unusable grant.
pub const USAGE: u8 = 2;
/// The file is not a Warden plugin.
pub const INVALID_PLUGIN: u8 = 10;
/// The plugin file could not be read.
pub const IO_ERROR: u8 = 11;
/// The plugin's `init` reported an error, so no action ran.
pub const INIT_FAILED: u8 = 12;
/// The call exceeded its timeout.
pub const TIMEOUT: u8 = 20;
/// The call used all of its fuel.
pub const OUT_OF_FUEL: u8 = 21;
/// The plugin hit its memory limit.
pub const MEMORY_LIMIT: u8 = 22;
/// The plugin overflowed the wasm stack.
pub const STACK_OVERFLOW: u8 = 23;
/// The plugin trapped.
pub const TRAP: u8 = 24;
/// The plugin returned more than the output limit.
pub const OUTPUT_TOO_LARGE: u8 = 25;
/// The input exceeded the input limit.
pub const INPUT_TOO_LARGE: u8 = 26;
/// A streaming call stalled: neither its input nor its output moved for
/// the stream idle timeout.
pub const STREAM_IDLE: u8 = 27;
/// A streaming plugin broke the `execute-stream` contract (it dropped its
/// outcome without writing it, say).
pub const STREAM_BROKEN: u8 = 28;
/// A streaming call was asked of a plugin that does not stream.
pub const STREAMING_UNSUPPORTED: u8 = 29;
/// The plugin used a capability it was not granted, or (with --strict)
/// imports one.
pub const DENIED: u8 = 30;
/// The trust policy refused the plugin (or `warden verify` found no valid
/// signature).
pub const UNTRUSTED: u8 = 31;
/// The call was cancelled because warden was shutting down.
pub const CANCELLED: u8 = 40;
/// A bug in Warden or a broken host.
pub const INTERNAL: u8 = 70;

/// The table printed under `--help`; keep it in step with the constants.
pub const EXIT_CODES_HELP: &str = "\
Exit codes (and --json statuses):
   0  ok                      20  timeout
   1  plugin-error            21  out-of-fuel
   2  usage, invalid-config,  22  memory-limit
      unknown-plugin          23  stack-overflow
  10  invalid-plugin          24  trap
  11  io-error                25  output-too-large
  12  init-failed             26  input-too-large
  30  denied                  27  stream-idle
  31  untrusted               28  stream-broken
  40  cancelled               29  streaming-unsupported
  70  internal-error
`warden exec` exits with the program's own code when it runs to the end.";

/// The exit code for a failed call.
pub fn for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::PluginError => PLUGIN_ERROR,
        ErrorKind::InvalidPlugin => INVALID_PLUGIN,
        ErrorKind::Io => IO_ERROR,
        ErrorKind::InitFailed => INIT_FAILED,
        ErrorKind::InvalidConfig | ErrorKind::UnknownPlugin => USAGE,
        ErrorKind::Cancelled => CANCELLED,
        ErrorKind::Timeout => TIMEOUT,
        ErrorKind::OutOfFuel => OUT_OF_FUEL,
        ErrorKind::MemoryLimit => MEMORY_LIMIT,
        ErrorKind::StackOverflow => STACK_OVERFLOW,
        ErrorKind::Trap => TRAP,
        ErrorKind::OutputTooLarge => OUTPUT_TOO_LARGE,
        ErrorKind::InputTooLarge => INPUT_TOO_LARGE,
        ErrorKind::StreamIdle => STREAM_IDLE,
        ErrorKind::StreamBroken => STREAM_BROKEN,
        ErrorKind::StreamingUnsupported => STREAMING_UNSUPPORTED,
        ErrorKind::Denied => DENIED,
        ErrorKind::Untrusted => UNTRUSTED,
        _ => INTERNAL,
    }
}

/// The process exit code for a call's result.
pub fn code<T>(result: &Result<T, warden::Error>) -> ExitCode {
    ExitCode::from(match result {
        Ok(_) => OK,
        Err(err) => for_kind(err.kind()),
    })
}
