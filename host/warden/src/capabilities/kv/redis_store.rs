//! The Redis backend of the `kv` capability, for hosts on several machines
//! that share plugin state.
//!
//! Per namespace, a hash `warden:kv:usage:<namespace>` holds the key count
//! and byte total the quotas are checked against. Per bucket, a hash
//! `warden:kv:values:<namespace>:<bucket>` maps keys to values and a sorted
//! set `warden:kv:order:<namespace>:<bucket>` holds the same keys, all
//! scored 0, which Redis keeps in byte order: that is what `list-keys` pages
//! through. Names are written as `<length>:<bytes>`, so no namespace, bucket
//! or key can make two places share a Redis key.
//!
//! Every write is an optimistic transaction: `WATCH` the usage and values,
//! read what the quota checks need, then `MULTI` … `EXEC`, which Redis
//! refuses if another writer (in any process) changed a watched key in
//! between; the write is then planned again from fresh reads. Arithmetic
//! happens here, in `u64`, because Redis scripts only have doubles.
//!
//! This file is over 400 lines on purpose: every operation of the
//! [`Backend`] is one such transaction over the same keys and connections,
//! and reads best beside the others.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{Client, Connection, Pipeline, Value};

use super::backend::{
    Backend, Entry, LIST_PAGE, Place, Scope, StoreError, Usage, entry_size, incremented, into_page,
};
use super::database::BUSY_TIMEOUT;
use crate::capabilities::interrupt::Interrupt;

/// How long opening a connection may take: the server is expected on a
/// nearby network, so seconds mean it is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command's reply may take before the connection is given up;
/// a stuck server must not hold a call's thread forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write keeps retrying while other writers change the same
/// namespace: as long as the SQLite backend waits for its lock.
const CONTENTION_TIMEOUT: Duration = BUSY_TIMEOUT;

/// Idle connections kept for reuse; more are opened when more calls run at
/// once, and closed after them, so a burst does not pin sockets forever.
const MAX_IDLE_CONNECTIONS: usize = 16;

/// A connection idle longer than this is checked with a `PING` before use:
/// the server may have restarted or closed it meanwhile. Busy connections
/// skip the round trip.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// The longest pause between two attempts of a conflicting transaction:
/// long enough to let the writer that won finish, short next to a call.
const MAX_BACKOFF: Duration = Duration::from_millis(5);

/// A Redis server holding plugins' keys, with a small pool of connections so
/// that concurrent calls do not queue on one socket.
pub(crate) struct RedisStore {
    client: Client,
    /// Connections not in use, with when each was last used.
    idle: Mutex<Vec<(Connection, Instant)>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info holds the password: leave it out.
        formatter
            .debug_struct("RedisStore")
            .field("addr", &self.client.get_connection_info().addr())
            .finish_non_exhaustive()
    }
}

/// What a write decided after its reads.
enum Plan<T> {
    /// Run these commands atomically, then answer this.
    Write(Pipeline, T),
    /// Nothing to change; answer this.
    Nothing(T),
}

impl RedisStore {
    /// Connects to the server at `url` and checks that it answers `PING`.
    pub(crate) fn connect(url: &str) -> Result<Self, StoreError> {
        let store = RedisStore {
            client: Client::open(url)?,
            idle: Mutex::new(Vec::new()),
        };
        store.with_connection(|connection| Ok(redis::cmd("PING").exec(connection)?))?;
        Ok(store)
    }

    fn open_connection(&self) -> Result<Connection, StoreError> {
        let connection = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        connection.set_read_timeout(Some(REPLY_TIMEOUT))?;
        connection.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(connection)
    }

    /// A live idle connection, else a new one.
    fn checkout(&self) -> Result<Connection, StoreError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some((mut connection, last_used)) = idle else {
                return self.open_connection();
            };
            if last_used.elapsed() < IDLE_CHECK_AFTER
                || redis::cmd("PING").exec(&mut connection).is_ok()
            {
                return Ok(connection);
            }
        }
    }

    /// Runs `operation` on a pooled connection, and keeps the connection
    /// for reuse unless Redis failed: then it may be mid-reply or
    /// mid-transaction, and is closed.
    fn with_connection<T>(
        &self,
        operation: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.checkout()?;
        let result = operation(&mut connection);
        if !matches!(result, Err(StoreError::Redis(_))) {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push((connection, Instant::now()));
            }
        }
        result
    }

    /// Runs a write as an optimistic transaction on `watched`: `plan` reads
    /// what it needs and returns the commands, which commit only if no
    /// watched key changed meanwhile; otherwise it is planned again, unless
    /// the call was interrupted meanwhile.
    fn transaction<T>(
        &self,
        watched: &[&str],
        interrupt: &Interrupt,
        mut plan: impl FnMut(&mut Connection) -> Result<Plan<T>, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_connection(|connection| {
            let started = Instant::now();
            let mut attempt = 0;
            loop {
                interrupt.check()?;
                redis::cmd("WATCH").arg(watched).exec(connection)?;
                let (mut pipeline, answer) = match plan(connection) {
                    Ok(Plan::Write(pipeline, answer)) => (pipeline, answer),
                    Ok(Plan::Nothing(answer)) => {
                        redis::cmd("UNWATCH").exec(connection)?;
                        return Ok(answer);
                    }
                    Err(err @ StoreError::Redis(_)) => return Err(err),
                    Err(err) => {
                        redis::cmd("UNWATCH").exec(connection)?;
                        return Err(err);
                    }
                };
                let committed: Option<Vec<Value>> = pipeline.atomic().query(connection)?;
                if committed.is_some() {
                    return Ok(answer);
                }
                if started.elapsed() >= CONTENTION_TIMEOUT {
                    return Err(StoreError::Contended {
                        seconds: CONTENTION_TIMEOUT.as_secs(),
                    });
                }
                attempt += 1;
                std::thread::sleep(backoff(attempt));
            }
        })
    }
}

/// A random pause, growing with the attempt up to [`MAX_BACKOFF`], so that
/// writers that conflicted do not all retry at the same moment.
fn backoff(attempt: u32) -> Duration {
    let ceiling = (Duration::from_micros(50) * 2u32.saturating_pow(attempt)).min(MAX_BACKOFF);
    let random = RandomState::new().hash_one(attempt);
    let ceiling_micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(random % ceiling_micros.max(1))
}

/// A name as it appears inside a Redis key: its length, then its bytes.
fn framed(name: &str) -> String {
    format!("{}:{name}", name.len())
}

/// The Redis keys behind a place.
struct Keys {
    usage: String,
    values: String,
    order: String,
}

impl Keys {
    fn new(place: Place<'_>) -> Self {
        let namespace = framed(place.namespace);
        let bucket = format!("{namespace}:{}", framed(place.bucket));
        Keys {
            usage: format!("warden:kv:usage:{namespace}"),
            values: format!("warden:kv:values:{bucket}"),
            order: format!("warden:kv:order:{bucket}"),
        }
    }

    /// The keys a write watches: the namespace's usage and the bucket's
    /// values (the order set always changes with the values).
    fn watched(&self) -> [&str; 2] {
        [&self.usage, &self.values]
    }

    fn read_usage(&self, connection: &mut Connection) -> Result<Usage, StoreError> {
        let (keys, bytes): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&self.usage)
            .arg("keys")
            .arg("bytes")
            .query(connection)?;
        Ok(Usage {
            keys: keys.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        })
    }

    fn write_usage(&self, pipeline: &mut Pipeline, usage: &Usage) {
        pipeline
            .cmd("HSET")
            .arg(&self.usage)
            .arg("keys")
            .arg(usage.keys)
            .arg("bytes")
            .arg(usage.bytes);
    }

    /// The stored size of each key's value, `None` for a missing key.
    fn stored_sizes<'k>(
        &self,
        connection: &mut Connection,
        keys: impl Iterator<Item = &'k str> + Clone,
    ) -> Result<Vec<Option<usize>>, StoreError> {
        let mut pipeline = redis::pipe();
        for key in keys.clone() {
            pipeline
                .cmd("HEXISTS")
                .arg(&self.values)
                .arg(key)
                .cmd("HSTRLEN")
                .arg(&self.values)
                .arg(key);
        }
        if keys.clone().next().is_none() {
            return Ok(Vec::new());
        }
        let replies: Vec<usize> = pipeline.query(connection)?;
        Ok(replies
            .chunks_exact(2)
            .map(|reply| (reply[0] == 1).then_some(reply[1]))
            .collect())
    }

    /// Adds the commands that store `entries` in the bucket.
    fn write_entries<'e>(
        &self,
        pipeline: &mut Pipeline,
        entries: impl Iterator<Item = (&'e str, &'e [u8])> + Clone,
    ) {
        pipeline.cmd("HSET").arg(&self.values);
        for (key, value) in entries.clone() {
            pipeline.arg(key).arg(value);
        }
        pipeline.cmd("ZADD").arg(&self.order);
        for (key, _) in entries {
            pipeline.arg(0).arg(key);
        }
    }
}

impl Backend for RedisStore {
    fn get(&self, place: Place<'_>, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = Keys::new(place);
        self.with_connection(|connection| {
            Ok(redis::cmd("HGET")
                .arg(&keys.values)
                .arg(key)
                .query(connection)?)
        })
    }

    fn exists(&self, place: Place<'_>, key: &str) -> Result<bool, StoreError> {
        let keys = Keys::new(place);
        self.with_connection(|connection| {
            Ok(redis::cmd("HEXISTS")
                .arg(&keys.values)
                .arg(key)
                .query(connection)?)
        })
    }

    fn get_many(
        &self,
        scope: Scope<'_>,
        requested: &[String],
    ) -> Result<Vec<Option<Entry>>, StoreError> {
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        scope.interrupt.check()?;
        let keys = Keys::new(scope.place);
        // The sizes first, so that values past the batch's bound are never
        // read into memory, then the values in one command, so that they
        // come from one moment.
        let values: Vec<Option<Vec<u8>>> = self.with_connection(|connection| {
            let sizes = keys.stored_sizes(connection, requested.iter().map(String::as_str))?;
            let bytes = requested
                .iter()
                .zip(sizes)
                .filter_map(|(key, size)| Some(key.len() + size?))
                .sum();
            scope.quotas.check_batch_bytes(bytes)?;
            Ok(redis::cmd("HMGET")
                .arg(&keys.values)
                .arg(requested)
                .query(connection)?)
        })?;
        Ok(requested
            .iter()
            .zip(values)
            .map(|(key, value)| value.map(|value| (key.clone(), value)))
            .collect())
    }

    fn set_many(&self, scope: Scope<'_>, pairs: &[Entry]) -> Result<(), StoreError> {
        scope.quotas.check_entries(pairs)?;
        // A key given twice is written once, with its last value.
        let latest: BTreeMap<&str, &[u8]> = pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_slice()))
            .collect();
        if latest.is_empty() {
            return Ok(());
        }
        let keys = Keys::new(scope.place);
        self.transaction(&keys.watched(), scope.interrupt, |connection| {
            let mut usage = keys.read_usage(connection)?;
            let old_sizes = keys.stored_sizes(connection, latest.keys().copied())?;
            for ((key, value), old) in latest.iter().zip(old_sizes) {
                usage.replace(
                    old.map(|old| entry_size(scope.place, key, old)),
                    Some(entry_size(scope.place, key, value.len())),
                );
            }
            usage.check(scope.quotas)?;
            let mut pipeline = redis::pipe();
            keys.write_entries(
                &mut pipeline,
                latest.iter().map(|(key, value)| (*key, *value)),
            );
            keys.write_usage(&mut pipeline, &usage);
            Ok(Plan::Write(pipeline, ()))
        })
    }

    fn delete_many(&self, scope: Scope<'_>, requested: &[String]) -> Result<(), StoreError> {
        let unique: BTreeSet<&str> = requested.iter().map(String::as_str).collect();
        if unique.is_empty() {
            return Ok(());
        }
        let keys = Keys::new(scope.place);
        self.transaction(&keys.watched(), scope.interrupt, |connection| {
            let mut usage = keys.read_usage(connection)?;
            let old_sizes = keys.stored_sizes(connection, unique.iter().copied())?;
            let existing: Vec<&str> = unique
                .iter()
                .zip(old_sizes)
                .filter_map(|(key, old)| {
                    let old = old?;
                    usage.replace(Some(entry_size(scope.place, key, old)), None);
                    Some(*key)
                })
                .collect();
            if existing.is_empty() {
                return Ok(Plan::Nothing(()));
            }
            let mut pipeline = redis::pipe();
            pipeline
                .cmd("HDEL")
                .arg(&keys.values)
                .arg(&existing)
                .cmd("ZREM")
                .arg(&keys.order)
                .arg(&existing);
            keys.write_usage(&mut pipeline, &usage);
            Ok(Plan::Write(pipeline, ()))
        })
    }

    fn increment(&self, scope: Scope<'_>, key: &str, delta: u64) -> Result<u64, StoreError> {
        let keys = Keys::new(scope.place);
        self.transaction(&keys.watched(), scope.interrupt, |connection| {
            let current: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(&keys.values)
                .arg(key)
                .query(connection)?;
            let (next, value) = incremented(key, current.as_deref(), delta)?;
            scope.quotas.check_entry(key, &value)?;
            let mut usage = keys.read_usage(connection)?;
            usage.replace(
                current.map(|old| entry_size(scope.place, key, old.len())),
                Some(entry_size(scope.place, key, value.len())),
            );
            usage.check(scope.quotas)?;
            let mut pipeline = redis::pipe();
            keys.write_entries(&mut pipeline, std::iter::once((key, value.as_slice())));
            keys.write_usage(&mut pipeline, &usage);
            Ok(Plan::Write(pipeline, next))
        })
    }

    fn list_keys(
        &self,
        place: Place<'_>,
        offset: u64,
    ) -> Result<(Vec<String>, Option<u64>), StoreError> {
        let keys = Keys::new(place);
        // Redis ranks are signed; an offset past them is past every key.
        let Ok(start) = i64::try_from(offset) else {
            return Ok((Vec::new(), None));
        };
        // ZRANGE's stop is inclusive: this reads one key more than a page,
        // to tell whether another page follows.
        let stop = start.saturating_add(LIST_PAGE as i64);
        let page: Vec<String> = self.with_connection(|connection| {
            Ok(redis::cmd("ZRANGE")
                .arg(&keys.order)
                .arg(start)
                .arg(stop)
                .query(connection)?)
        })?;
        Ok(into_page(page, offset))
    }
}

#[cfg(test)]
mod tests;
