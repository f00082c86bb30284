//! The SQLite database behind the `kv` capability.
//!
//! One file holds every plugin's data, each plugin in its own namespace. Each
//! operation is one transaction; writes take SQLite's write lock up front
//! (`BEGIN IMMEDIATE`) so that concurrent writers, in this process or in
//! others, queue for it instead of failing. WAL journaling keeps readers off
//! the writers' backs and makes a killed process lose at most its own
//! uncommitted transaction. A batch checks its call's [`Interrupt`] between
//! rows and while it waits for the lock, and rolls back when it comes.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use super::backend::{
    Backend, Entry, LIST_PAGE, Place, Scope, StoreError, Usage, entry_size, incremented, into_page,
};
use crate::capabilities::interrupt::Interrupt;

/// How long an operation waits for another process's transaction before
/// giving up. Longer than any sane transaction; shorter than forever.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a writer sleeps between two looks at a lock that another
/// connection holds: short next to a call's timeout, so a cancelled call
/// stops waiting promptly.
const BUSY_PAUSE: Duration = Duration::from_millis(5);

thread_local! {
    /// The interrupt of the operation running on this thread, for
    /// [`wait_while_busy`] (SQLite's busy handler is a plain function).
    static CURRENT_INTERRUPT: RefCell<Option<Interrupt>> = const { RefCell::new(None) };
}

/// SQLite's busy handler: wait [`BUSY_PAUSE`] and try again, until
/// [`BUSY_TIMEOUT`] has passed or the operation's call is interrupted.
fn wait_while_busy(attempts: i32) -> bool {
    let interrupted = CURRENT_INTERRUPT
        .with_borrow(|interrupt| interrupt.as_ref().is_some_and(Interrupt::is_due));
    let waited = BUSY_PAUSE.saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX));
    if interrupted || waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(BUSY_PAUSE);
    true
}

/// Makes `interrupt` the one [`wait_while_busy`] looks at, until dropped.
struct InterruptScope<'a> {
    interrupt: &'a Interrupt,
}

impl<'a> InterruptScope<'a> {
    fn enter(interrupt: &'a Interrupt) -> Self {
        CURRENT_INTERRUPT.set(Some(interrupt.clone()));
        InterruptScope { interrupt }
    }

    /// A failure while interrupted is the interrupt: SQLite reports a busy
    /// wait it gave up on as "database is locked".
    fn explain(&self, err: StoreError) -> StoreError {
        if self.interrupt.is_due() {
            StoreError::Interrupted
        } else {
            err
        }
    }
}

impl Drop for InterruptScope<'_> {
    fn drop(&mut self) {
        CURRENT_INTERRUPT.set(None);
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS entries (
        namespace TEXT NOT NULL,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (namespace, bucket, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS usage (
        namespace TEXT PRIMARY KEY,
        keys INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    ) WITHOUT ROWID;
";

/// An open database file.
#[derive(Debug)]
pub(crate) struct Database {
    connection: Mutex<Connection>,
}

/// How long a set-up that found the file locked waits before trying again.
const SET_UP_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// WAL journaling, its usual durability setting, and the tables.
fn set_up(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.execute_batch(SCHEMA)
}

impl Database {
    /// Opens (creating if needed) the database at `path`. A new file is
    /// readable and writable by its owner only (SQLite gives its WAL and
    /// shared-memory files the same mode), also when `path` is a symbolic
    /// link to a file that does not exist yet; an existing one that another
    /// user could have written is refused.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        // Created here rather than by SQLite, which would use the umask's
        // mode (usually 0644): through a link planted where the store
        // should be, that would leave every plugin's data readable by all.
        // The checks look at the file that was opened; a file this process
        // cannot open for writing is checked by its path. Other failures
        // are left for SQLite to report.
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path);
        let metadata = match opened {
            Ok(file) => file.metadata(),
            Err(_) => std::fs::metadata(path),
        };
        if let Ok(metadata) = metadata {
            crate::fsutil::check_not_writable_by_others(path, &metadata)
                .map_err(StoreError::Exposed)?;
        }
        let connection = Connection::open(path)?;
        connection.busy_handler(Some(wait_while_busy))?;
        // Another process creating the file or switching it to WAL at the
        // same moment can make the set-up fail with "database is locked" at
        // once, without SQLite's busy handler: retry it for as long as an
        // operation would wait.
        let started = Instant::now();
        while let Err(err) = set_up(&connection) {
            let busy = matches!(
                err.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            );
            if !busy || started.elapsed() >= BUSY_TIMEOUT {
                return Err(err.into());
            }
            std::thread::sleep(SET_UP_RETRY_PAUSE);
        }
        Ok(Database {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-operation rolls its transaction back on drop; the
        // connection itself stays usable.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every bucket of a namespace that holds keys, for operators.
    pub(crate) fn buckets(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT DISTINCT bucket FROM entries WHERE namespace = ?1 ORDER BY bucket")?;
        let buckets = statement
            .query_map(params![namespace], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(buckets)
    }
}

impl Backend for Database {
    fn get(&self, place: Place<'_>, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let connection = self.connection();
        Ok(connection
            .query_row(
                "SELECT value FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                params![place.namespace, place.bucket, key],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn set_many(&self, scope: Scope<'_>, pairs: &[Entry]) -> Result<(), StoreError> {
        scope.quotas.check_entries(pairs)?;
        let interrupt_scope = InterruptScope::enter(scope.interrupt);
        let mut connection = self.connection();
        // Dropping the transaction on an error (the interrupt included)
        // rolls it back: a batch is written whole or not at all.
        let mut write = || -> Result<(), StoreError> {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut usage = read_usage(&transaction, scope.place.namespace)?;
            for (key, value) in pairs {
                scope.interrupt.check()?;
                let old = stored_size(&transaction, scope.place, key)?;
                usage.replace(
                    old.map(|old| entry_size(scope.place, key, old)),
                    Some(entry_size(scope.place, key, value.len())),
                );
                transaction.execute(
                    "INSERT INTO entries (namespace, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
                    params![scope.place.namespace, scope.place.bucket, key, value],
                )?;
            }
            usage.check(scope.quotas)?;
            write_usage(&transaction, scope.place.namespace, &usage)?;
            scope.interrupt.check()?;
            transaction.commit()?;
            Ok(())
        };
        write().map_err(|err| interrupt_scope.explain(err))
    }

    fn delete_many(&self, scope: Scope<'_>, keys: &[String]) -> Result<(), StoreError> {
        let interrupt_scope = InterruptScope::enter(scope.interrupt);
        let mut connection = self.connection();
        let mut delete = || -> Result<(), StoreError> {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut usage = read_usage(&transaction, scope.place.namespace)?;
            for key in keys {
                scope.interrupt.check()?;
                if let Some(old) = stored_size(&transaction, scope.place, key)? {
                    usage.replace(Some(entry_size(scope.place, key, old)), None);
                    transaction.execute(
                        "DELETE FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                        params![scope.place.namespace, scope.place.bucket, key],
                    )?;
                }
            }
            write_usage(&transaction, scope.place.namespace, &usage)?;
            scope.interrupt.check()?;
            transaction.commit()?;
            Ok(())
        };
        delete().map_err(|err| interrupt_scope.explain(err))
    }

    fn get_many(
        &self,
        scope: Scope<'_>,
        keys: &[String],
    ) -> Result<Vec<Option<Entry>>, StoreError> {
        let interrupt_scope = InterruptScope::enter(scope.interrupt);
        let mut connection = self.connection();
        let mut read = || -> Result<Vec<Option<Entry>>, StoreError> {
            // One read transaction, so the values come from one snapshot.
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let mut values = Vec::with_capacity(keys.len());
            let mut bytes = 0;
            for key in keys {
                scope.interrupt.check()?;
                // The size first, so that values past the batch's bound are
                // never read into memory.
                let Some(size) = stored_size(&transaction, scope.place, key)? else {
                    values.push(None);
                    continue;
                };
                bytes += key.len() + size;
                scope.quotas.check_batch_bytes(bytes)?;
                let value: Option<Vec<u8>> = transaction
                    .query_row(
                        "SELECT value FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                        params![scope.place.namespace, scope.place.bucket, key],
                        |row| row.get(0),
                    )
                    .optional()?;
                values.push(value.map(|value| (key.clone(), value)));
            }
            transaction.commit()?;
            Ok(values)
        };
        read().map_err(|err| interrupt_scope.explain(err))
    }

    fn list_keys(
        &self,
        place: Place<'_>,
        offset: u64,
    ) -> Result<(Vec<String>, Option<u64>), StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare_cached(
            "SELECT key FROM entries WHERE namespace = ?1 AND bucket = ?2
             ORDER BY key LIMIT ?3 OFFSET ?4",
        )?;
        let offset_sql = i64::try_from(offset).unwrap_or(i64::MAX);
        let keys = statement
            .query_map(
                params![
                    place.namespace,
                    place.bucket,
                    LIST_PAGE as i64 + 1,
                    offset_sql
                ],
                |row| row.get(0),
            )?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(into_page(keys, offset))
    }

    fn increment(&self, scope: Scope<'_>, key: &str, delta: u64) -> Result<u64, StoreError> {
        let interrupt_scope = InterruptScope::enter(scope.interrupt);
        let mut connection = self.connection();
        let mut add = || -> Result<u64, StoreError> {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<Vec<u8>> = transaction
                .query_row(
                    "SELECT value FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                    params![scope.place.namespace, scope.place.bucket, key],
                    |row| row.get(0),
                )
                .optional()?;
            let old_size = current.as_ref().map(Vec::len);
            let (next, value) = incremented(key, current.as_deref(), delta)?;
            scope.quotas.check_entry(key, &value)?;
            let mut usage = read_usage(&transaction, scope.place.namespace)?;
            usage.replace(
                old_size.map(|old| entry_size(scope.place, key, old)),
                Some(entry_size(scope.place, key, value.len())),
            );
            usage.check(scope.quotas)?;
            transaction.execute(
                "INSERT INTO entries (namespace, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
                params![scope.place.namespace, scope.place.bucket, key, value],
            )?;
            write_usage(&transaction, scope.place.namespace, &usage)?;
            transaction.commit()?;
            Ok(next)
        };
        add().map_err(|err| interrupt_scope.explain(err))
    }
}

fn stored_size(
    connection: &Connection,
    place: Place<'_>,
    key: &str,
) -> Result<Option<usize>, StoreError> {
    let size: Option<i64> = connection
        .query_row(
            "SELECT length(value) FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
            params![place.namespace, place.bucket, key],
            |row| row.get(0),
        )
        .optional()?;
    Ok(size.map(|size| size as usize))
}

/// A namespace's usage as kept in the `usage` table.
fn read_usage(connection: &Connection, namespace: &str) -> Result<Usage, StoreError> {
    let usage = connection
        .query_row(
            "SELECT keys, bytes FROM usage WHERE namespace = ?1",
            params![namespace],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0));
    Ok(Usage {
        keys: usage.0 as u64,
        bytes: usage.1 as u64,
    })
}

fn write_usage(connection: &Connection, namespace: &str, usage: &Usage) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO usage (namespace, keys, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
        params![namespace, usage.keys as i64, usage.bytes as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
