//! The manifest's `[serve]` table: connection bounds for `warden serve`.

use std::time::Duration;

use serde::Deserialize;

use super::de::{positive_duration, size};

/// The `[serve]` table: connection bounds for `warden serve`, each unset
/// unless the manifest sets it. `warden serve`'s flags take precedence;
/// what neither sets takes the default named on each field. Read when the
/// server starts; a reload does not change them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSettings {
    /// `header_read_timeout`: how long a client has to send a whole request
    /// head, counted from its first byte; then the connection is closed.
    /// Default: [`ServeSettings::DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Option<Duration>,
    /// `idle_timeout`: how long a connection may stay open with no request
    /// in progress (before its first request, or between keep-alive
    /// requests). Default: [`ServeSettings::DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Option<Duration>,
    /// `write_timeout`: how long writing a response may make no progress
    /// (a client that stops reading) before the connection is dropped and
    /// the response freed. Default: [`ServeSettings::DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Option<Duration>,
    /// `max_connections`: connections open at once. Further connections are
    /// not accepted until one closes: they wait in the kernel's listen
    /// backlog. Default: [`ServeSettings::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<u32>,
    /// `max_body_memory`: bytes of request bodies the server holds at once,
    /// over all connections, from their arrival until their call ends. A
    /// body that would go past it is answered `503 saturated` at once.
    /// Default: [`ServeSettings::DEFAULT_MAX_BODY_MEMORY`].
    pub max_body_memory: Option<u64>,
}

impl ServeSettings {
    /// Default `header_read_timeout`: ten seconds, ample for any client on
    /// a working network, short enough that half-sent heads do not pile up.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `idle_timeout`: one minute, longer than the keep-alive pools
    /// of common HTTP clients and load balancers hold idle connections.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default `write_timeout`: thirty seconds without progress, which only
    /// a client that stopped reading takes.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_connections`: 512, well under the common limit of 1,024
    /// open files, which plugins' files and sockets share.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
    /// Default `max_body_memory`: 1 GiB, as many bodies of the default
    /// input limit (16 MiB) as calls run at once by default (64), instead of
    /// one such body per open connection (8 GiB at 512 connections).
    pub const DEFAULT_MAX_BODY_MEMORY: u64 = 1 << 30;
}

/// `[serve]`: connection bounds for `warden serve`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServe {
    #[serde(default, deserialize_with = "positive_duration")]
    header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "positive_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "positive_duration")]
    write_timeout: Option<Duration>,
    max_connections: Option<u32>,
    #[serde(default, deserialize_with = "size")]
    max_body_memory: Option<u64>,
}

impl RawServe {
    pub(super) fn into_settings(self) -> ServeSettings {
        ServeSettings {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
            max_body_memory: self.max_body_memory,
        }
    }
}
