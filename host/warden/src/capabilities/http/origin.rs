//! The origins an HTTP grant names: `scheme://host[:port]` patterns.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::units::ParseError;

/// An origin a plugin may send HTTP requests to: `scheme://host[:port]`.
///
/// The scheme is `http` or `https`. The host is a name or address, `*.`
/// followed by a domain (any subdomain of it, not the domain itself), or `*`
/// (any host). Without a port the scheme's default port is meant; `:*`
/// allows any port.
///
/// ```
/// let origin: warden::OriginPattern = "https://*.example.com".parse()?;
/// assert!(origin.matches("https", "api.example.com", 443));
/// assert!(!origin.matches("https", "example.com", 443));
/// assert!(!origin.matches("http", "api.example.com", 80));
/// # Ok::<(), warden::units::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern {
    https: bool,
    host: HostMatch,
    port: PortMatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortMatch {
    /// The scheme's default port.
    Default,
    Exact(u16),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    SubdomainOf(String),
}

impl OriginPattern {
    /// Whether a request to `scheme://host:port` is allowed.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_matches = match scheme.to_ascii_lowercase().as_str() {
            "https" => self.https,
            "http" => !self.https,
            _ => false,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_matches = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(allowed) => *allowed == host,
            HostMatch::SubdomainOf(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| !prefix.is_empty()),
        };
        let port_matches = match self.port {
            PortMatch::Default => port == if self.https { 443 } else { 80 },
            PortMatch::Exact(allowed) => allowed == port,
            PortMatch::Any => true,
        };
        scheme_matches && host_matches && port_matches
    }

    /// Whether the pattern names one host by its address, or `localhost`:
    /// only such a grant lets a request reach a loopback, private or
    /// link-local address.
    pub(super) fn names_address(&self) -> bool {
        match &self.host {
            HostMatch::Exact(host) => host == "localhost" || host.parse::<IpAddr>().is_ok(),
            HostMatch::Any | HostMatch::SubdomainOf(_) => false,
        }
    }
}

impl FromStr for OriginPattern {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let invalid = |why: &str| {
            ParseError::new(format!(
                "invalid HTTP origin `{text}`: {why}; expected scheme://host[:port] such as https://api.example.com, https://*.example.com or http://127.0.0.1:8080"
            ))
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| invalid("missing `scheme://`"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(invalid("an origin has no path, query or user"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| invalid("bad host or port"))?;
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid("the port must be 1-65535 or *")),
                Ok(port) => PortMatch::Exact(port),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(invalid("a wildcard must be `*` or `*.domain`"));
            }
            HostMatch::SubdomainOf(format!(".{domain}"))
        } else if host.is_empty() || host.contains('*') {
            return Err(invalid("a wildcard must be `*` or `*.domain`"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(OriginPattern { https, host, port })
    }
}

/// Splits `host[:port]`, keeping IPv6 literals (`[::1]:8080`) whole.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            after => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.https { "https" } else { "http" })?;
        match &self.host {
            HostMatch::Any => write!(f, "*")?,
            HostMatch::Exact(host) if host.contains(':') => write!(f, "[{host}]")?,
            HostMatch::Exact(host) => write!(f, "{host}")?,
            HostMatch::SubdomainOf(domain) => write!(f, "*{domain}")?,
        }
        match self.port {
            PortMatch::Default => Ok(()),
            PortMatch::Exact(port) => write!(f, ":{port}"),
            PortMatch::Any => write!(f, ":*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> OriginPattern {
        text.parse().unwrap()
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let exact = origin("http://127.0.0.1:8080");
        assert!(exact.matches("http", "127.0.0.1", 8080));
        assert!(!exact.matches("http", "127.0.0.1", 8081));
        assert!(!exact.matches("https", "127.0.0.1", 8080));

        let default_port = origin("https://api.example.com");
        assert!(default_port.matches("https", "API.example.com", 443));
        assert!(!default_port.matches("https", "api.example.com", 8443));

        let any_port = origin("http://localhost:*");
        assert!(any_port.matches("http", "localhost", 1234));

        let wildcard = origin("https://*.example.com");
        assert!(wildcard.matches("https", "a.b.example.com", 443));
        assert!(!wildcard.matches("https", "example.com", 443));
        assert!(!wildcard.matches("https", "badexample.com", 443));
        assert!(!wildcard.matches("https", "example.com.evil.net", 443));

        assert!(origin("https://*").matches("https", "anything.net", 443));
        assert!(origin("http://[::1]:80").matches("http", "::1", 80));
    }

    #[test]
    fn origins_round_trip_and_reject_nonsense() {
        for text in [
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "https://*.example.com",
            "http://localhost:*",
            "http://[::1]:80",
        ] {
            assert_eq!(origin(text).to_string(), text);
        }
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://a*.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://user@x.com",
            "https://",
        ] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_addresses_and_localhost_are_named_explicitly() {
        assert!(origin("http://127.0.0.1:8080").names_address());
        assert!(origin("http://[::1]:8080").names_address());
        assert!(origin("http://localhost:*").names_address());
        assert!(!origin("http://*:8080").names_address());
        assert!(!origin("https://*.example.com").names_address());
        assert!(!origin("https://api.example.com").names_address());
    }
}
