//! Per-plugin resource limits, and the `ResourceLimiter` that enforces the
//! memory-like ones inside each store.

use std::fmt;
use std::time::Duration;

use crate::units::format_bytes;

/// Limits applied to every instance of a plugin and to every call into it.
///
/// `Limits::default()` is a safe starting point for untrusted code; every
/// field can be changed before loading the plugin:
///
/// ```
/// use std::time::Duration;
///
/// let mut limits = warden::Limits::default();
/// limits.timeout = Duration::from_millis(250);
/// limits.memory_bytes = 16 << 20;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Total linear memory an instance may hold, across all of its memories.
    /// Growth beyond it is refused and reported as [`Error::MemoryLimit`](crate::Error::MemoryLimit).
    /// Default: 64 MiB.
    pub memory_bytes: u64,
    /// Elements any one table may hold. Default: 100,000.
    pub table_elements: u64,
    /// Core instances each instance of the plugin may create; a component
    /// needs a fixed number (its modules plus adapters), counted at load: a
    /// component that needs more is refused with
    /// [`Error::InvalidPlugin`](crate::Error::InvalidPlugin). Default: 100.
    pub instances: u32,
    /// Fuel each call may consume, or `None` for no fuel limit. Needs a
    /// runtime built with [`RuntimeBuilder::fuel`](crate::RuntimeBuilder::fuel).
    /// Default: `None`.
    pub fuel: Option<u64>,
    /// Wall-clock time per call, including time spent blocked in host calls.
    /// For a fresh-instance call it covers instantiation and `init` too.
    /// Default: 5 s.
    pub timeout: Duration,
    /// Largest input a call accepts. Default: 16 MiB.
    pub max_input_bytes: usize,
    /// Largest output a call may return. Default: 16 MiB.
    pub max_output_bytes: usize,
    /// Bytes of the guest's stdout kept per call; the rest is counted and
    /// dropped. Default: 1 MiB.
    pub stdout_bytes: usize,
    /// Bytes of the guest's stderr kept per call; the rest is counted and
    /// dropped. Default: 1 MiB.
    pub stderr_bytes: usize,
    /// Log records kept per call; further records are counted and dropped.
    /// Default: 1,000.
    pub log_records: usize,
    /// Bytes of log context and message text kept per call; a record larger
    /// than the room left keeps the start of its message, cut to fit with a
    /// note of its full length, and further records are counted and dropped.
    /// Default: 1 MiB.
    pub log_bytes: usize,
    /// Host resources (open files, streams, buckets, HTTP requests, …) an
    /// instance may hold at once; a guest that creates more and never drops
    /// them fails with [`Error::MemoryLimit`](crate::Error::MemoryLimit)
    /// instead of growing the host's memory. For a plugin of world 0.2 it
    /// also bounds the streams, futures and tasks the guest holds at once
    /// (wasmtime's component handles); making one more traps. Default: 10,000.
    pub host_resources: usize,
    /// Instances of this plugin that may exist at once (calls in flight plus
    /// live instances); further calls wait. Default: `None`, bounded only by
    /// the runtime's [`max_instances`](crate::RuntimeBuilder::max_instances).
    pub concurrency: Option<u32>,
    /// Linear memories each instance of the plugin may define, whatever
    /// their size (a memory of zero pages takes a pool slot too). Counted at
    /// load: a component that defines more is refused with
    /// [`Error::InvalidPlugin`](crate::Error::InvalidPlugin). Default: 2.
    pub memories: u32,
    /// Tables each instance of the plugin may define, counted at load like
    /// [`Limits::memories`]. With [`Limits::table_elements`] it bounds the
    /// host memory tables take: at most `tables × table_elements` pointers,
    /// with or without pooling. Default: 4.
    pub tables: u32,
    /// Sockets (TCP and UDP, accepted connections included) an instance may
    /// hold open at once; creating one more fails with `new-socket-limit`.
    /// The connections of its outgoing HTTP requests count too, each until
    /// its response is read or dropped; one more request fails with
    /// `connection-limit-reached`. Default: 100.
    pub sockets: usize,
    /// Bytes of host memory an instance may make the host hold on its
    /// behalf, outside its linear memory: the `wasi:http` header maps,
    /// requests and responses it builds and keeps, the directory listings
    /// behind its `read-directory` streams, and the log and denial records
    /// of the current call. Past it, the host builds nothing more
    /// for the guest and the call fails with
    /// [`Error::MemoryLimit`](crate::Error::MemoryLimit) (host memory).
    /// Default: 64 MiB ([`Limits::DEFAULT_HOST_MEMORY_BYTES`]).
    pub host_memory_bytes: u64,
    /// Bytes a streaming call ([`Plugin::execute_stream`](crate::Plugin::execute_stream))
    /// may take in; past it the call fails with
    /// [`Error::InputTooLarge`](crate::Error::InputTooLarge). Whole-input
    /// calls are bounded by [`Limits::max_input_bytes`] instead. Default: 4 GiB.
    pub max_stream_input_bytes: u64,
    /// Bytes a streaming call may give out; past it the call fails with
    /// [`Error::OutputTooLarge`](crate::Error::OutputTooLarge). Default: 4 GiB.
    pub max_stream_output_bytes: u64,
    /// How long a streaming call may go without either side moving (no
    /// input taken by the plugin, no output taken by the caller) before it
    /// fails with [`Error::StreamIdle`](crate::Error::StreamIdle). The whole
    /// call is bounded by [`Limits::timeout`] as well. Default: 10 s.
    pub stream_idle_timeout: Duration,
}

impl Limits {
    /// Default for [`Limits::memory_bytes`].
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
    /// Default for [`Limits::table_elements`].
    pub const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
    /// Default for [`Limits::instances`].
    pub const DEFAULT_INSTANCES: u32 = 100;
    /// Default for [`Limits::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default for [`Limits::max_input_bytes`].
    pub const DEFAULT_MAX_INPUT_BYTES: usize = 16 << 20;
    /// Default for [`Limits::max_output_bytes`].
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 << 20;
    /// Default for [`Limits::stdout_bytes`] and [`Limits::stderr_bytes`].
    pub const DEFAULT_CAPTURE_BYTES: usize = 1 << 20;
    /// Default for [`Limits::log_records`].
    pub const DEFAULT_LOG_RECORDS: usize = 1_000;
    /// Default for [`Limits::log_bytes`].
    pub const DEFAULT_LOG_BYTES: usize = 1 << 20;
    /// Default for [`Limits::host_resources`].
    pub const DEFAULT_HOST_RESOURCES: usize = 10_000;
    /// Default for [`Limits::memories`]: room for a module's memory and a
    /// WASI adapter's (the toolchains Warden's tests build use one).
    pub const DEFAULT_MEMORIES: u32 = 2;
    /// Default for [`Limits::tables`]: a module's function table plus the
    /// adapter's and shims', with room to spare.
    pub const DEFAULT_TABLES: u32 = 4;
    /// Default for [`Limits::sockets`]: enough for a client with a
    /// connection pool, far below a process's descriptor limit.
    pub const DEFAULT_SOCKETS: usize = 100;
    /// Default for [`Limits::host_memory_bytes`]: as much as the default
    /// linear memory, so that a plugin can make the host hold at most about
    /// twice what its memory limit says.
    pub const DEFAULT_HOST_MEMORY_BYTES: u64 = 64 << 20;
    /// Default for [`Limits::max_stream_input_bytes`] and
    /// [`Limits::max_stream_output_bytes`].
    pub const DEFAULT_MAX_STREAM_BYTES: u64 = 4 << 30;
    /// Default for [`Limits::stream_idle_timeout`].
    pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            table_elements: Self::DEFAULT_TABLE_ELEMENTS,
            instances: Self::DEFAULT_INSTANCES,
            fuel: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_input_bytes: Self::DEFAULT_MAX_INPUT_BYTES,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            stdout_bytes: Self::DEFAULT_CAPTURE_BYTES,
            stderr_bytes: Self::DEFAULT_CAPTURE_BYTES,
            log_records: Self::DEFAULT_LOG_RECORDS,
            log_bytes: Self::DEFAULT_LOG_BYTES,
            host_resources: Self::DEFAULT_HOST_RESOURCES,
            concurrency: None,
            memories: Self::DEFAULT_MEMORIES,
            tables: Self::DEFAULT_TABLES,
            sockets: Self::DEFAULT_SOCKETS,
            host_memory_bytes: Self::DEFAULT_HOST_MEMORY_BYTES,
            max_stream_input_bytes: Self::DEFAULT_MAX_STREAM_BYTES,
            max_stream_output_bytes: Self::DEFAULT_MAX_STREAM_BYTES,
            stream_idle_timeout: Self::DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }
}

/// A resource whose growth the host refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitedResource {
    /// Linear memory, counted in bytes across all memories of the instance.
    LinearMemory,
    /// Elements of one table.
    TableElements,
    /// Core instances.
    Instances,
    /// Host resources held by the instance (handles in its resource table).
    HostResources,
    /// Linear memories defined by the instance.
    Memories,
    /// Tables defined by the instance.
    Tables,
    /// Bytes of host memory held on the instance's behalf
    /// ([`Limits::host_memory_bytes`]).
    HostMemory,
}

/// A growth the host refused because it would exceed a [`Limits`] field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRefusal {
    /// What was to grow.
    pub resource: LimitedResource,
    /// The size the guest asked for, when known (bytes for memory, elements
    /// for tables).
    pub requested: Option<u64>,
    /// The limit in force.
    pub limit: u64,
}

impl fmt::Display for LimitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.resource {
            LimitedResource::LinearMemory => {
                write!(f, "linear memory growth")?;
                if let Some(requested) = self.requested {
                    write!(f, " to {}", format_bytes(requested))?;
                }
                write!(f, " refused (limit {})", format_bytes(self.limit))
            }
            LimitedResource::TableElements => {
                write!(f, "table growth")?;
                if let Some(requested) = self.requested {
                    write!(f, " to {requested} elements")?;
                }
                write!(f, " refused (limit {} elements)", self.limit)
            }
            LimitedResource::Instances => write!(
                f,
                "the plugin needs more than {} core instances",
                self.limit
            ),
            LimitedResource::HostResources => write!(
                f,
                "the instance holds {} host resources (files, streams, buckets, requests) and may not open more",
                self.limit
            ),
            LimitedResource::Memories => write!(
                f,
                "the plugin defines more than {} linear memories per instance",
                self.limit
            ),
            LimitedResource::Tables => write!(
                f,
                "the plugin defines more than {} tables per instance",
                self.limit
            ),
            LimitedResource::HostMemory => {
                write!(
                    f,
                    "the host memory held for the instance (HTTP header maps, requests, directory listings, records)"
                )?;
                if let Some(requested) = self.requested {
                    write!(f, " would reach {}", format_bytes(requested))?;
                }
                write!(
                    f,
                    ", past its budget of {}; raise --host-memory (host_memory in a manifest) if the plugin needs more",
                    format_bytes(self.limit)
                )
            }
        }
    }
}

/// The per-store `ResourceLimiter`: enforces [`Limits`] on memories, tables
/// and instances, tracks the linear-memory high-water mark, and remembers a
/// refusal so that the trap which usually follows is reported as a limit.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory_limit: u64,
    table_limit: u64,
    instance_limit: u32,
    memory_count_limit: u32,
    table_count_limit: u32,
    /// Linear memory held by the store right now. Memories never shrink, so
    /// this is also the peak.
    memory_bytes: u64,
    /// Growth granted by the last `memory_growing`, undone if it then fails.
    pending_growth: u64,
    refusal: Option<LimitRefusal>,
}

impl StoreLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        StoreLimiter {
            memory_limit: limits.memory_bytes,
            table_limit: limits.table_elements,
            instance_limit: limits.instances,
            memory_count_limit: limits.memories,
            table_count_limit: limits.tables,
            memory_bytes: 0,
            pending_growth: 0,
            refusal: None,
        }
    }

    /// Linear memory held now, which is also the store's peak.
    pub(crate) fn peak_memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The refusal recorded since the last call to this method, if any.
    pub(crate) fn take_refusal(&mut self) -> Option<LimitRefusal> {
        self.refusal.take()
    }

    /// Records a refusal made outside the limiter (the host-memory budget),
    /// so that it explains the trap that usually follows.
    pub(crate) fn record_refusal(&mut self, refusal: LimitRefusal) {
        self.refusal = Some(refusal);
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired - current) as u64;
        let total = self.memory_bytes.saturating_add(growth);
        if total > self.memory_limit {
            self.refusal = Some(LimitRefusal {
                resource: LimitedResource::LinearMemory,
                requested: Some(total),
                limit: self.memory_limit,
            });
            return Ok(false);
        }
        // Growth within the host's limit but past the memory's own maximum
        // (declared by the module) fails without being the host's refusal.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.memory_bytes = total;
        self.pending_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes -= std::mem::take(&mut self.pending_growth);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The host's limit comes first: the maximum wasmtime passes includes
        // the pooling allocator's, which equals the default limit.
        if desired as u64 > self.table_limit {
            self.refusal = Some(LimitRefusal {
                resource: LimitedResource::TableElements,
                requested: Some(desired as u64),
                limit: self.table_limit,
            });
            return Ok(false);
        }
        Ok(maximum.is_none_or(|maximum| desired <= maximum))
    }

    fn instances(&self) -> usize {
        self.instance_limit as usize
    }

    // Wasmtime counts the memories and tables each instantiation defines,
    // whatever the allocator: without pooling this is what bounds the host
    // memory of tables (each at most `table_limit` elements).
    fn memories(&self) -> usize {
        self.memory_count_limit as usize
    }

    fn tables(&self) -> usize {
        self.table_count_limit as usize
    }
}

#[cfg(test)]
mod tests;
