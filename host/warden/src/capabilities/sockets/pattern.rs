//! The addresses a socket grant names: `HOST:PORT` patterns.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::units::ParseError;

/// Which hosts and ports a plugin may use, as `HOST:PORT`.
///
/// `HOST` is an IP address (`127.0.0.1`, `[::1]`), a host name
/// (`db.internal`, resolved when the plugin connects) or `*` for any host;
/// `PORT` is a number or `*`.
///
/// ```
/// let pattern: warden::SocketPattern = "127.0.0.1:6379".parse()?;
/// assert!(pattern.matches_addr("127.0.0.1:6379".parse().unwrap()));
/// assert!(!pattern.matches_addr("127.0.0.1:6380".parse().unwrap()));
/// # Ok::<(), warden::units::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPattern {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Any,
    Ip(IpAddr),
    Name(String),
}

impl SocketPattern {
    /// Whether an address matches without resolving any name.
    pub fn matches_addr(&self, addr: SocketAddr) -> bool {
        self.port_matches(addr.port())
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Ip(ip) => *ip == addr.ip(),
                HostPattern::Name(_) => false,
            }
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|allowed| allowed == port)
    }

    /// Whether an address matches, resolving a host-name pattern if needed.
    pub(super) async fn matches(&self, addr: SocketAddr) -> bool {
        match &self.host {
            HostPattern::Name(name) if self.port_matches(addr.port()) => {
                match tokio::net::lookup_host((name.as_str(), 0)).await {
                    Ok(mut resolved) => resolved.any(|candidate| candidate.ip() == addr.ip()),
                    Err(_) => false,
                }
            }
            _ => self.matches_addr(addr),
        }
    }

    /// Whether a lookup of `name` (lower case, without a trailing dot) is
    /// allowed by this pattern: it names that host, or any host.
    pub(super) fn allows_lookup(&self, name: &str) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Name(allowed) => allowed == name,
            HostPattern::Ip(_) => false,
        }
    }
}

impl FromStr for SocketPattern {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let invalid = |why: &str| {
            ParseError::new(format!(
                "invalid socket grant `{text}`: {why}; expected HOST:PORT such as 127.0.0.1:6379, [::1]:53, db.internal:5432 or *:443"
            ))
        };
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("missing `:PORT`"))?;
        let port = match port {
            "*" => None,
            port => Some(
                port.parse()
                    .map_err(|_| invalid("the port is not a number"))?,
            ),
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            HostPattern::Ip(ip.parse().map_err(|_| invalid("bad IPv6 address"))?)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if is_host_name(host) {
            HostPattern::Name(host.to_ascii_lowercase())
        } else {
            return Err(invalid("the host is neither an address nor a host name"));
        };
        Ok(SocketPattern { host, port })
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl fmt::Display for SocketPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => write!(f, "*")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Name(name) => write!(f, "{name}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => write!(f, ":*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_print() {
        for text in [
            "127.0.0.1:6379",
            "[::1]:53",
            "db.internal:5432",
            "*:443",
            "10.0.0.1:*",
        ] {
            let pattern: SocketPattern = text.parse().unwrap();
            assert_eq!(pattern.to_string(), text);
        }
        for bad in ["127.0.0.1", "host:port", ":80", "bad host:80", "[::1:53"] {
            assert!(bad.parse::<SocketPattern>().is_err(), "{bad}");
        }
    }
}
