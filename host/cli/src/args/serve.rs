//! `warden serve`'s flags: what to serve (one plugin file with the sandbox
//! flags `run` takes, or a manifest), where to listen, and the server's
//! bounds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use warden::{GrantOptions, LimitOptions};

use super::TrustArgs;

pub(super) const SERVE_HELP: &str = "\
Serve one plugin:        warden serve hello.wasm --addr :8080 --timeout 2s --unsigned allow
Serve a manifest:        warden serve --manifest warden.toml --addr 0.0.0.0:8080
A plugin file answers under its file's stem (/plugins/hello/ACTION); the limit, grant and
signature flags apply to it alone. A manifest's plugins take theirs from its tables, so those
flags are refused beside --manifest.
--addr: IP:PORT, [IPv6]:PORT, HOST:PORT (localhost:8080), :PORT (every IPv4 interface,
0.0.0.0) or PORT (127.0.0.1); port 0 picks a free one (the `listening` log line says which).
Replies: 200 with the output; plugin errors 400 (invalid-input), 404 (unknown-action) and
500 (failed); limits and traps 500; bodies over the plugin's max_input 413; saturation (call
slots, or request bodies over --max-body-memory) and shutdown 503 with Retry-After; a plugin
whose signer is no longer trusted 503 (untrusted).
Errors are JSON: {\"error\": KIND, \"message\": TEXT}; a host-side failure's full text (a
backtrace, host paths) goes to the log only. Connections: --max-connections, --idle-timeout,
--header-read-timeout and --write-timeout, or the manifest's [serve] table.
Exit codes: 0 after a clean shutdown; 2 for a bad manifest, flag or address; when a plugin
does not load, the code of its error (see `warden run --help`).";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A plugin component (.wasm) to serve alone, under its file's stem,
    /// with the limits, grants and signature policy the flags give. The
    /// file and its PLUGIN.wasm.sig are watched for changes unless
    /// --no-watch.
    #[arg(value_name = "PLUGIN.wasm", conflicts_with = "manifest")]
    pub plugin: Option<String>,
    /// The warden.toml declaring the plugins, their limits, grants and trust
    /// policy. Watched for changes unless --no-watch.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Address to listen on: IP:PORT, HOST:PORT, :PORT (every IPv4
    /// interface) or PORT (127.0.0.1); port 0 picks a free one (the
    /// `listening` log line says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = ListenAddr::parse)]
    pub addr: ListenAddr,
    /// Plugin calls running at once, across plugins.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent: u32,
    /// Calls waiting for a free slot beyond those; more are answered 503
    /// [default: --max-concurrent].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_queue: Option<u32>,
    /// Time for a whole request: receiving the body, waiting for a slot and
    /// running. A slow body is answered 408, a slow call 504.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = warden::units::parse_positive_duration)]
    pub request_timeout: Duration,
    /// How long requests in flight may finish after SIGTERM before they are
    /// cancelled (answered 503); 0s cancels them at once.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = warden::units::parse_duration)]
    pub shutdown_grace: Duration,
    /// How often the manifest and plugin files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = watch_interval)]
    pub watch_interval: Duration,
    /// Do not reload plugins when the manifest or their files change.
    #[arg(long)]
    pub no_watch: bool,
    /// Do not write a log line per request.
    #[arg(long)]
    pub no_access_log: bool,
    /// Where compiled plugins are cached [default: the user's cache directory].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin at start instead of using the compile cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// The key that seals compile cache entries: created (owner-only) if
    /// missing, never inside the cache directory [default:
    /// $XDG_DATA_HOME/warden/cache.key, else ~/.local/share/warden/cache.key].
    #[arg(long, value_name = "PATH", conflicts_with = "no_cache")]
    pub cache_key: Option<PathBuf>,
    /// Time a client has to send a whole request head, from its first byte;
    /// then the connection is closed [default: the manifest's [serve]
    /// header_read_timeout, else 10s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_positive_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Time a connection may stay open with no request in progress
    /// [default: the manifest's [serve] idle_timeout, else 60s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_positive_duration)]
    pub idle_timeout: Option<Duration>,
    /// Time writing a response may make no progress (the client stopped
    /// reading) before the connection is dropped [default: the manifest's
    /// [serve] write_timeout, else 30s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_positive_duration)]
    pub write_timeout: Option<Duration>,
    /// Connections open at once; further ones wait in the listen backlog
    /// until one closes [default: the manifest's [serve] max_connections,
    /// else 512].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// Bytes of request bodies held at once over all connections, from
    /// their arrival until their call ends; a body that would go past it is
    /// answered 503 [default: the manifest's [serve] max_body_memory, else
    /// 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = positive_size)]
    pub max_body_memory: Option<u64>,
    #[command(flatten, next_help_heading = "Limits and grants (PLUGIN.wasm only)")]
    pub limits: LimitOptions,
    #[command(flatten, next_help_heading = "Limits and grants (PLUGIN.wasm only)")]
    pub grants: GrantOptions,
    /// Refuse to load a plugin that imports a high-risk capability it is not
    /// granted (instead of denying it at call time).
    #[arg(long, help_heading = "Limits and grants (PLUGIN.wasm only)")]
    pub strict: bool,
    #[command(flatten, next_help_heading = "Signatures (PLUGIN.wasm only)")]
    pub trust: TrustArgs,
}

/// Why `serve`'s flags (`matches`) do not say what to serve: neither a
/// plugin nor a manifest, or a manifest with a flag that configures a
/// plugin file, which its plugins take from their tables instead.
pub(super) fn refusal(matches: &ArgMatches) -> Option<(ErrorKind, String)> {
    if !matches.contains_id("plugin") && !matches.contains_id("manifest") {
        return Some((
            ErrorKind::MissingRequiredArgument,
            "name what to serve: a plugin file (warden serve PLUGIN.wasm) or a manifest \
             (warden serve --manifest warden.toml)"
                .to_owned(),
        ));
    }
    if !matches.contains_id("manifest") {
        return None;
    }
    let plugin_flags = [
        LimitOptions::augment_args,
        GrantOptions::augment_args,
        TrustArgs::augment_args,
    ]
    .into_iter()
    .fold(clap::Command::new("serve"), |command, augment| {
        augment(command)
    });
    let given = plugin_flags
        .get_arguments()
        .map(|arg| (arg.get_id().as_str(), arg.get_long()))
        .chain([("strict", Some("strict"))])
        .find(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))?;
    let flag = given.1.unwrap_or(given.0);
    Some((
        ErrorKind::ArgumentConflict,
        format!(
            "--{flag} configures a plugin file served alone (warden serve PLUGIN.wasm --{flag} …); \
             the plugins of a manifest take their limits, grants and signature policy from its \
             [plugins.NAME] and [defaults] tables, so set it there"
        ),
    ))
}

/// Where `warden serve` listens, as `--addr` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// An IP address and a port.
    Ip(SocketAddr),
    /// A host name and a port (`localhost:8080`), resolved when the server
    /// binds; it listens on the first address that can be bound.
    Host(String, u16),
}

impl ListenAddr {
    /// Parses `--addr`: `IP:PORT` (`[IPv6]:PORT`), `HOST:PORT`, `:PORT`
    /// (every IPv4 interface, as in Go's and Caddy's addresses) or `PORT`
    /// (127.0.0.1, the default host).
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "`{text}` is not an address to listen on; write IP:PORT, HOST:PORT, :PORT or \
                 PORT (e.g. 127.0.0.1:8080, localhost:8080, :8080, 8080)"
            )
        };
        let port = |digits: &str| -> Result<u16, String> {
            digits.parse().map_err(|_| {
                if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                    expected()
                } else {
                    format!("port `{digits}` in `{text}` is beyond 65535")
                }
            })
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr::Ip(addr));
        }
        if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Ok(ListenAddr::Ip(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port(text)?,
            )));
        }
        let (host, digits) = text.rsplit_once(':').ok_or_else(expected)?;
        let port = port(digits)?;
        if host.is_empty() {
            return Ok(ListenAddr::Ip(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            )));
        }
        if host.contains(':') {
            return Err(format!(
                "`{text}`: write an IPv6 address in brackets, e.g. [::1]:{port}"
            ));
        }
        if host.starts_with('[') || host.contains(char::is_whitespace) {
            return Err(expected());
        }
        Ok(ListenAddr::Host(host.to_owned(), port))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Ip(addr) => addr.fmt(f),
            ListenAddr::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// `--watch-interval`: longer than zero, which would check the files in a
/// busy loop; --no-watch is how to stop watching.
fn watch_interval(text: &str) -> Result<Duration, String> {
    // Unparsable text gets the plain error; only zero gets the way out.
    warden::units::parse_duration(text).map_err(|err| err.to_string())?;
    warden::units::parse_positive_duration(text)
        .map_err(|zero| format!("{zero}; to stop watching the files, use --no-watch"))
}

/// A size flag that zero would break: every body would be refused.
fn positive_size(text: &str) -> Result<u64, String> {
    match warden::units::parse_size(text).map_err(|err| err.to_string())? {
        0 => Err("must be at least 1 byte".to_owned()),
        bytes => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::ListenAddr;

    fn ip(text: &str) -> ListenAddr {
        ListenAddr::Ip(text.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn every_form_of_listen_address_parses_to_what_its_help_says() {
        assert_eq!(ListenAddr::parse("8080"), Ok(ip("127.0.0.1:8080")));
        assert_eq!(ListenAddr::parse(":8080"), Ok(ip("0.0.0.0:8080")));
        assert_eq!(ListenAddr::parse("0"), Ok(ip("127.0.0.1:0")));
        assert_eq!(ListenAddr::parse("10.0.0.7:80"), Ok(ip("10.0.0.7:80")));
        assert_eq!(ListenAddr::parse("[::1]:8080"), Ok(ip("[::1]:8080")));
        assert_eq!(
            ListenAddr::parse("localhost:8080"),
            Ok(ListenAddr::Host("localhost".into(), 8080))
        );
        assert_eq!(
            ListenAddr::parse("localhost:8080").unwrap().to_string(),
            "localhost:8080"
        );
    }

    #[test]
    fn malformed_listen_addresses_are_refused_naming_the_forms() {
        for text in [
            "",
            "localhost",
            "host:",
            "host:http",
            ":",
            "a b:80",
            "[x]:80",
        ] {
            let err = ListenAddr::parse(text).unwrap_err();
            assert!(
                err.contains("write IP:PORT, HOST:PORT, :PORT or PORT"),
                "{text:?}: {err}"
            );
        }
        assert_eq!(
            ListenAddr::parse("::1:8080").unwrap_err(),
            "`::1:8080`: write an IPv6 address in brackets, e.g. [::1]:8080"
        );
        assert_eq!(
            ListenAddr::parse(":70000").unwrap_err(),
            "port `70000` in `:70000` is beyond 65535"
        );
        assert_eq!(
            ListenAddr::parse("70000").unwrap_err(),
            "port `70000` in `70000` is beyond 65535"
        );
    }
}
