//! What a plugin is allowed to touch outside its own memory.
//!
//! Nothing is inherited from the host process: no environment, no arguments,
//! no stdin, no network, no files. Each grant opens exactly one door;
//! [`Grants`] is declared with the capabilities it grants (the `capabilities`
//! module, which also says what each one does when it is not granted).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use crate::capabilities::Grants;
use crate::limits::Limits;
use crate::trust::TrustPolicy;
use crate::units::ParseError;

/// Everything that decides what one plugin may do: its limits, its grants,
/// how strictly imports and signatures are checked, and how long its
/// instances live.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sandbox {
    /// Resource limits for each instance and call.
    pub limits: Limits,
    /// Capabilities granted to the plugin.
    pub grants: Grants,
    /// Refuse to load a plugin that imports a high-risk capability it is not
    /// granted, instead of denying its use at call time. Default: off, since
    /// toolchains (Rust's standard library, Python, JavaScript) import more
    /// than a plugin uses.
    pub strict: bool,
    /// How many calls one instance serves before it is replaced. `1` (the
    /// default) runs every call in a fresh instance: nothing survives
    /// between calls. A larger number keeps an instance, and whatever state
    /// the guest holds, for that many calls (cheaper, less isolated); an
    /// instance that traps or hits a limit is discarded at once.
    pub calls_per_instance: u32,
    /// Which signatures the plugin must carry, checked before it is
    /// compiled. Default: [`TrustPolicy::development`], which loads unsigned
    /// plugins; hosts that run third-party code should choose
    /// [`TrustPolicy::trusted_only`].
    pub trust: TrustPolicy,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            limits: Limits::default(),
            grants: Grants::default(),
            strict: false,
            calls_per_instance: 1,
            trust: TrustPolicy::default(),
        }
    }
}

impl Sandbox {
    /// A sandbox with the given limits and no grants.
    pub fn with_limits(limits: Limits) -> Self {
        Sandbox {
            limits,
            ..Sandbox::default()
        }
    }
}

/// A host directory made visible to the guest at a path of its own.
///
/// Written on the command line as `HOST::GUEST`, optionally followed by
/// `:ro` (the default) or `:rw`:
///
/// ```
/// use warden::{DirAccess, Preopen};
///
/// let preopen: Preopen = "./data::/data:rw".parse()?;
/// assert_eq!(preopen.guest, "/data");
/// assert_eq!(preopen.access, DirAccess::ReadWrite);
/// # Ok::<(), warden::units::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// Whether the guest may modify it.
    pub access: DirAccess,
}

/// Whether a preopened directory may be modified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DirAccess {
    /// Read files and list directories; every change is refused. The default.
    #[default]
    ReadOnly,
    /// Everything, including creating, writing, renaming and deleting.
    ReadWrite,
}

impl DirAccess {
    /// `ro` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            DirAccess::ReadOnly => "ro",
            DirAccess::ReadWrite => "rw",
        }
    }
}

impl Preopen {
    /// A read-only preopen of `host` at `guest`.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen {
            host: host.into(),
            guest: guest.into(),
            access: DirAccess::ReadOnly,
        }
    }

    /// A read-write preopen of `host` at `guest`.
    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen {
            host: host.into(),
            guest: guest.into(),
            access: DirAccess::ReadWrite,
        }
    }
}

impl FromStr for Preopen {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let invalid = |why: &str| {
            ParseError::new(format!(
                "invalid directory grant `{text}`: {why}; expected HOST::GUEST[:ro|:rw], e.g. ./data::/data:ro"
            ))
        };
        let (host, guest) = text
            .split_once("::")
            .ok_or_else(|| invalid("missing `::` between the host and guest paths"))?;
        let (guest, access) = match guest.rsplit_once(':') {
            Some((guest, "ro")) => (guest, DirAccess::ReadOnly),
            Some((guest, "rw")) => (guest, DirAccess::ReadWrite),
            Some((_, other)) => {
                return Err(invalid(&format!("unknown access `{other}` (use ro or rw)")));
            }
            None => (guest, DirAccess::ReadOnly),
        };
        if host.is_empty() {
            return Err(invalid("the host path is empty"));
        }
        if guest.is_empty() {
            return Err(invalid("the guest path is empty"));
        }
        Ok(Preopen {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            access,
        })
    }
}

impl fmt::Display for Preopen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}::{}:{}",
            self.host.display(),
            self.guest,
            self.access.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preopens_parse_with_default_read_only() {
        let preopen: Preopen = "/srv/data::/data".parse().unwrap();
        assert_eq!(preopen, Preopen::read_only("/srv/data", "/data"));
        let preopen: Preopen = "out::/out:rw".parse().unwrap();
        assert_eq!(preopen, Preopen::read_write("out", "/out"));
        let preopen: Preopen = "in::.:ro".parse().unwrap();
        assert_eq!(preopen, Preopen::read_only("in", "."));
        assert_eq!(preopen.to_string(), "in::.:ro");
    }

    #[test]
    fn malformed_preopens_say_what_is_wrong() {
        for (text, why) in [
            ("/data", "missing `::`"),
            ("::/data", "host path is empty"),
            ("/data::", "guest path is empty"),
            ("/data::/data:rx", "unknown access `rx`"),
        ] {
            let err = text.parse::<Preopen>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
