//! The one public error type, and (in `classify`) how failures inside
//! wasmtime map onto it.

use std::fmt;
use std::time::Duration;

use crate::PluginError;
use crate::capabilities::{CapabilityUse, Denial};
use crate::host_memory::truncate_record_text;
use crate::limits::LimitRefusal;
use crate::trust::{SignatureCheck, TrustFailure};

mod classify;

pub(crate) use classify::FailureContext;

/// Everything that can go wrong loading or running a plugin.
///
/// Each variant is something a caller handles differently; [`Error::kind`]
/// gives a stable, matchable summary (also used as the CLI's `status`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a Warden plugin: not WebAssembly, a core module
    /// rather than a component, malformed, or a component that lacks the
    /// `warden:plugin/guest` export or imports something Warden cannot provide.
    #[error("invalid plugin: {reason}")]
    InvalidPlugin {
        /// What is wrong, in words that name the fix.
        reason: String,
    },

    /// The plugin reported a failure itself (the `plugin-error` of the WIT)
    /// from `execute`. Shown as `plugin error: ` and the plugin's text
    /// (`invalid input: …` for that variant; for an unknown action, the
    /// words of [`unknown_action_message`] without the list of actions,
    /// which only the plugin's metadata knows).
    #[error("plugin error: {}", describe_plugin_error(.0))]
    Plugin(PluginError),

    /// The plugin's `init` reported a failure, so no action ran. The fault
    /// is in the plugin or what it was given (a missing config value, say),
    /// not in the call's input: retrying the call will not help.
    #[error("init failed: {}", describe_plugin_error(.0))]
    InitFailed(PluginError),

    /// The call ran past its wall-clock timeout, whether it was computing or
    /// blocked in a host call.
    #[error("timed out after {}", crate::units::format_duration(*limit))]
    Timeout {
        /// The timeout that was exceeded.
        limit: Duration,
    },

    /// The call consumed all of its fuel.
    #[error("out of fuel: the call used its whole budget of {limit} units")]
    OutOfFuel {
        /// The fuel budget of the call.
        limit: u64,
    },

    /// The host refused to grow memory, a table or the number of instances
    /// beyond the plugin's limits. Reported as such even when the guest then
    /// trapped because of the refusal.
    #[error("memory limit: {0}")]
    MemoryLimit(LimitRefusal),

    /// The guest exhausted the wasm call stack (see
    /// [`RuntimeBuilder::max_wasm_stack`](crate::RuntimeBuilder::max_wasm_stack)).
    #[error("stack overflow{}", format_backtrace(backtrace))]
    StackOverflow {
        /// The innermost frames of the wasm backtrace, if one was captured.
        backtrace: Vec<String>,
    },

    /// The guest trapped: `unreachable` (e.g. a Rust panic), an out-of-bounds
    /// access, a division by zero, or a host call that failed fatally.
    #[error("trap: {message}{}", format_backtrace(backtrace))]
    Trap {
        /// What trapped.
        message: String,
        /// The innermost frames of the wasm backtrace, if one was captured.
        backtrace: Vec<String>,
    },

    /// The plugin returned more bytes than [`Limits::max_output_bytes`](crate::Limits::max_output_bytes).
    #[error("output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// Bytes the plugin returned.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// Neither side of a streaming call moved (no input taken, no output
    /// given) for [`Limits::stream_idle_timeout`](crate::Limits::stream_idle_timeout):
    /// a plugin that never reads its input or never ends its output, or a
    /// caller that stopped reading.
    #[error("the stream stalled: neither side moved for {limit:?} (the stream idle timeout)")]
    StreamIdle {
        /// The idle timeout.
        limit: Duration,
    },

    /// A streaming plugin broke the contract of `execute-stream`, e.g. it
    /// dropped its outcome future without writing it.
    #[error("the plugin broke the streaming contract: {0}")]
    StreamBroken(String),

    /// [`Plugin::execute_stream`](crate::Plugin::execute_stream) was called on
    /// a plugin that does not export `warden:plugin/streaming@0.2.0`.
    #[error(
        "the plugin does not export `warden:plugin/streaming@0.2.0`, so it cannot take streamed input; \
         call `execute` with the whole input, or rebuild it for world `streaming-plugin` of warden:plugin@0.2.0"
    )]
    StreamingUnsupported,

    /// The caller passed more bytes than [`Limits::max_input_bytes`](crate::Limits::max_input_bytes).
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    InputTooLarge {
        /// Bytes the caller passed.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// A capability the plugin was not granted was refused, and the call then
    /// failed: the denial is the cause a caller can act on. The message says
    /// how to grant it ([`Denial::how_to_grant`]).
    #[error(
        "denied: {denial}{} (the plugin then failed: {then})",
        grant_hint(denial)
    )]
    Denied {
        /// The first request the host refused during the call.
        denial: Denial,
        /// How the call ended after it.
        then: Box<Error>,
    },

    /// The sandbox is `strict` and the plugin imports high-risk capabilities
    /// it is not granted; each is listed with the flag that grants it.
    #[error("the plugin imports capabilities it is not granted: {}", describe_missing(.0))]
    MissingGrants(Vec<CapabilityUse>),

    /// The trust policy refused the plugin before it was compiled.
    #[error("untrusted plugin: {failure}")]
    Untrusted {
        /// Why.
        failure: TrustFailure,
        /// Every signature found, checked (empty when none was looked at).
        signatures: Vec<SignatureCheck>,
    },

    /// A live [`Instance`](crate::Instance) was used again after a trap, a
    /// limit or a cancelled call left it in an unknown state.
    #[error(
        "this instance was discarded after an earlier call failed ({0}); create a new one with Plugin::instantiate"
    )]
    InstanceDiscarded(ErrorKind),

    /// No plugin is registered under this name in the
    /// [`Registry`](crate::Registry).
    #[error(
        "no plugin named `{name}` is loaded; loaded: {}",
        describe_names(known)
    )]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The names that are registered.
        known: Vec<String>,
    },

    /// The call was refused or stopped because its host is shutting down
    /// ([`Registry::shutdown`](crate::Registry::shutdown)).
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },

    /// The limits or grants given to the host are unusable, e.g. a preopened
    /// directory that does not exist or a fuel limit on a runtime built
    /// without fuel metering.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Reading a plugin or opening a granted resource failed.
    #[error("{context}: {source}")]
    Io {
        /// What Warden was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Wasmtime failed in a way that is not the guest's doing (for example
    /// the engine could not be created). Indicates a bug or a broken host.
    #[error("internal error: {0:#}")]
    Internal(wasmtime::Error),
}

/// A stable, matchable summary of an [`Error`]; also the CLI's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidPlugin`].
    InvalidPlugin,
    /// [`Error::Plugin`].
    PluginError,
    /// [`Error::InitFailed`].
    InitFailed,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::OutOfFuel`].
    OutOfFuel,
    /// [`Error::MemoryLimit`].
    MemoryLimit,
    /// [`Error::StackOverflow`].
    StackOverflow,
    /// [`Error::Trap`].
    Trap,
    /// [`Error::OutputTooLarge`].
    OutputTooLarge,
    /// [`Error::InputTooLarge`].
    InputTooLarge,
    /// [`Error::StreamIdle`].
    StreamIdle,
    /// [`Error::StreamBroken`].
    StreamBroken,
    /// [`Error::StreamingUnsupported`].
    StreamingUnsupported,
    /// [`Error::InstanceDiscarded`].
    InstanceDiscarded,
    /// [`Error::Denied`] and [`Error::MissingGrants`].
    Denied,
    /// [`Error::Untrusted`].
    Untrusted,
    /// [`Error::InvalidConfig`].
    InvalidConfig,
    /// [`Error::UnknownPlugin`].
    UnknownPlugin,
    /// [`Error::Cancelled`].
    Cancelled,
    /// [`Error::Io`].
    Io,
    /// [`Error::Internal`].
    Internal,
}

impl ErrorKind {
    /// The kebab-case name, e.g. `out-of-fuel`, as printed in `--json` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidPlugin => "invalid-plugin",
            ErrorKind::PluginError => "plugin-error",
            ErrorKind::InitFailed => "init-failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfFuel => "out-of-fuel",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::StackOverflow => "stack-overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::OutputTooLarge => "output-too-large",
            ErrorKind::InputTooLarge => "input-too-large",
            ErrorKind::StreamIdle => "stream-idle",
            ErrorKind::StreamBroken => "stream-broken",
            ErrorKind::StreamingUnsupported => "streaming-unsupported",
            ErrorKind::InstanceDiscarded => "instance-discarded",
            ErrorKind::Denied => "denied",
            ErrorKind::Untrusted => "untrusted",
            ErrorKind::InvalidConfig => "invalid-config",
            ErrorKind::UnknownPlugin => "unknown-plugin",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Io => "io-error",
            ErrorKind::Internal => "internal-error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidPlugin { .. } => ErrorKind::InvalidPlugin,
            Error::Plugin(_) => ErrorKind::PluginError,
            Error::InitFailed(_) => ErrorKind::InitFailed,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::OutOfFuel { .. } => ErrorKind::OutOfFuel,
            Error::MemoryLimit(_) => ErrorKind::MemoryLimit,
            Error::StackOverflow { .. } => ErrorKind::StackOverflow,
            Error::Trap { .. } => ErrorKind::Trap,
            Error::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Error::InputTooLarge { .. } => ErrorKind::InputTooLarge,
            Error::StreamIdle { .. } => ErrorKind::StreamIdle,
            Error::StreamBroken(_) => ErrorKind::StreamBroken,
            Error::StreamingUnsupported => ErrorKind::StreamingUnsupported,
            Error::InstanceDiscarded(_) => ErrorKind::InstanceDiscarded,
            Error::Denied { .. } | Error::MissingGrants(_) => ErrorKind::Denied,
            Error::Untrusted { .. } => ErrorKind::Untrusted,
            Error::InvalidConfig(_) => ErrorKind::InvalidConfig,
            Error::UnknownPlugin { .. } => ErrorKind::UnknownPlugin,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Io { .. } => ErrorKind::Io,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True when the failure leaves a live instance in an unknown state, so
    /// it must be discarded rather than called again.
    pub fn poisons_instance(&self) -> bool {
        match self {
            Error::Denied { then, .. } => then.poisons_instance(),
            _ => matches!(
                self.kind(),
                ErrorKind::Timeout
                    | ErrorKind::OutOfFuel
                    | ErrorKind::MemoryLimit
                    | ErrorKind::StackOverflow
                    | ErrorKind::Trap
                    | ErrorKind::Internal
            ),
        }
    }

    /// A guest failure (its own error, or a trap) that followed a denial is
    /// reported as the denial. Limits and timeouts stand on their own.
    pub(crate) fn after_denials(self, denials: &[Denial]) -> Self {
        match (denials.first(), &self) {
            (Some(denial), Error::Plugin(_) | Error::InitFailed(_) | Error::Trap { .. }) => {
                Error::Denied {
                    denial: denial.clone(),
                    then: Box::new(self),
                }
            }
            _ => self,
        }
    }

    /// The same error with the text a guest wrote into it (its own error
    /// message, a trap's message) cut to
    /// [`MAX_RECORD_TEXT_BYTES`](crate::MAX_RECORD_TEXT_BYTES), so that no
    /// report or response carries megabytes of it.
    pub(crate) fn with_bounded_guest_text(self) -> Self {
        fn bounded(text: String) -> String {
            match truncate_record_text(&text) {
                std::borrow::Cow::Borrowed(_) => text,
                std::borrow::Cow::Owned(cut) => cut,
            }
        }
        fn bounded_plugin_error(err: PluginError) -> PluginError {
            match err {
                PluginError::InvalidInput(text) => PluginError::InvalidInput(bounded(text)),
                PluginError::UnknownAction(text) => PluginError::UnknownAction(bounded(text)),
                PluginError::Failed(text) => PluginError::Failed(bounded(text)),
            }
        }
        match self {
            Error::Plugin(err) => Error::Plugin(bounded_plugin_error(err)),
            Error::InitFailed(err) => Error::InitFailed(bounded_plugin_error(err)),
            Error::Trap { message, backtrace } => Error::Trap {
                message: bounded(message),
                backtrace,
            },
            other => other,
        }
    }

    pub(crate) fn invalid_plugin(reason: impl Into<String>) -> Self {
        Error::InvalidPlugin {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// How Warden words a call to an action the plugin does not have, given
/// the actions its metadata lists, the same on the command line and in
/// `warden serve`'s replies: "the plugin has no action `shout`; its actions
/// are: count-vowels, greet". An empty `action` is a call that named none.
pub fn unknown_action_message(action: &str, actions: &[String]) -> String {
    let listed = actions.join(", ");
    match (action.is_empty(), actions.is_empty()) {
        (false, false) => format!("the plugin has no action `{action}`; its actions are: {listed}"),
        (true, false) => format!("no action was given; the plugin's actions are: {listed}"),
        (false, true) => {
            format!("the plugin has no action `{action}`; it takes no action name")
        }
        (true, true) => {
            "the plugin refused a call without an action name, yet lists no actions".to_owned()
        }
    }
}

/// The plugin's own error in words: its text, after what kind of failure
/// it is when the variant adds something.
fn describe_plugin_error(err: &PluginError) -> String {
    match err {
        PluginError::InvalidInput(text) => format!("invalid input: {text}"),
        PluginError::UnknownAction(action) if action.is_empty() => {
            "the plugin needs an action name".to_owned()
        }
        PluginError::UnknownAction(action) => format!("the plugin has no action `{action}`"),
        PluginError::Failed(text) => text.clone(),
    }
}

fn grant_hint(denial: &Denial) -> String {
    match denial.how_to_grant() {
        Some(how) => format!(" — grant it with {how}"),
        None => String::new(),
    }
}

fn describe_missing(missing: &[CapabilityUse]) -> String {
    missing
        .iter()
        .map(|capability| {
            format!(
                "{} ({} risk; imports {}; grant with {})",
                capability.name,
                capability.risk,
                capability.imports.join(", "),
                capability.how_to_grant
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_names(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn format_backtrace(frames: &[String]) -> String {
    if frames.is_empty() {
        return String::new();
    }
    let mut text = String::from("\nwasm backtrace:");
    for (index, frame) in frames.iter().enumerate() {
        if frame.starts_with("...") {
            text.push_str(&format!("\n      {frame}"));
        } else {
            text.push_str(&format!("\n  {index:>2}: {frame}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn an_unknown_action_is_worded_once_for_every_case() {
        assert_eq!(
            unknown_action_message("shout", &actions(&["echo", "greet"])),
            "the plugin has no action `shout`; its actions are: echo, greet"
        );
        assert_eq!(
            unknown_action_message("", &actions(&["echo", "greet"])),
            "no action was given; the plugin's actions are: echo, greet"
        );
        assert_eq!(
            unknown_action_message("shout", &[]),
            "the plugin has no action `shout`; it takes no action name"
        );
    }

    #[test]
    fn plugin_errors_read_as_words_not_rust() {
        let cases = [
            (
                Error::Plugin(PluginError::Failed("kv: access denied".into())),
                "plugin error: kv: access denied",
            ),
            (
                Error::Plugin(PluginError::InvalidInput("not UTF-8".into())),
                "plugin error: invalid input: not UTF-8",
            ),
            (
                Error::Plugin(PluginError::UnknownAction("shout".into())),
                "plugin error: the plugin has no action `shout`",
            ),
            (
                Error::InitFailed(PluginError::Failed("no config".into())),
                "init failed: no config",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn a_denial_names_its_grant_and_a_host_capability_goes_without() {
        let denied = |capability| Error::Denied {
            denial: Denial {
                capability,
                detail: "reading `mode`".into(),
            },
            then: Box::new(Error::Plugin(PluginError::Failed("no value".into()))),
        };
        assert_eq!(
            denied("config").to_string(),
            "denied: config capability: reading `mode` — grant it with --config KEY=VALUE, \
             or the plugin's [config] table in a manifest (the plugin then failed: \
             plugin error: no value)"
        );
        assert_eq!(
            denied("dictionary").to_string(),
            "denied: dictionary capability: reading `mode` (the plugin then failed: \
             plugin error: no value)"
        );
    }
}
