//! The [`Runtime`]: one wasmtime engine, configured once, and the linker that
//! every plugin is linked against.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use crate::cache::{CacheLocation, CompileCache};
use crate::capabilities;
use crate::capacity::{Capacity, PoolSizes};
use crate::epoch::{EpochTicker, TickGuard};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::load::{self, ComponentInfo};
use crate::plugin::Plugin;
use crate::preview1;
use crate::program::Program;
use crate::source::Source;
use crate::state::HostState;
use crate::trust::{SignatureCheck, TrustPolicy};
use crate::world::{World, WorldPlugin};

/// Loads and runs plugins. Cheap to clone; clones share the engine.
///
/// A runtime owns one wasmtime [`Engine`] with the component model, epoch
/// interruption (driven by one background thread that ticks only while calls
/// are in flight), optional fuel metering, a bounded wasm stack, the pooling
/// instance allocator and the compile cache.
///
/// It holds at most [`RuntimeBuilder::max_instances`] instances at once
/// (fresh-call instances while their call runs, and live [`Instance`]s for
/// as long as they exist). A call that finds every slot taken waits for one:
/// load is absorbed as latency, never as failures or an unbounded pile of
/// instances.
///
/// Calls need a Tokio runtime with timers enabled (as `#[tokio::main]`
/// provides): timeouts of calls blocked in host functions use Tokio's timer.
///
/// [`Instance`]: crate::Instance
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    /// The engine of 0.1 plugins, programs and application worlds: without
    /// component-model concurrency, which makes every call cheaper.
    plain: Arc<EngineUnit>,
    /// The engine of 0.2 plugins (WASI 0.3, async exports and streams),
    /// created when the first one loads.
    concurrent: OnceLock<Arc<EngineUnit>>,
    /// What built `plain`, for building `concurrent` the same way.
    builder: RuntimeBuilder,
    /// What WASI preview 1 programs are linked against.
    preview1_linker: wasmtime::Linker<HostState>,
    cache: Option<CompileCache>,
    on_compile: Option<CompileNotice>,
    slots: Arc<Semaphore>,
    max_instances: usize,
    /// The limits a plugin may ask for.
    capacity: Capacity,
}

/// Configures a [`Runtime`]; start from [`Runtime::builder`].
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    fuel: bool,
    max_wasm_stack: usize,
    epoch_tick: Duration,
    max_instances: u32,
    max_memory_bytes: u64,
    pooling: bool,
    cache: CacheLocation,
    cache_key: Option<PathBuf>,
    on_compile: Option<CompileNotice>,
}

/// A function of a component's name and size in bytes.
type NoticeFn = dyn Fn(&str, u64) + Send + Sync;

/// What [`RuntimeBuilder::on_compile`] calls: the component's name and
/// size in bytes.
#[derive(Clone)]
pub(crate) struct CompileNotice(Arc<NoticeFn>);

impl CompileNotice {
    pub(crate) fn notify(&self, name: &str, size: u64) {
        (self.0)(name, size);
    }
}

impl std::fmt::Debug for CompileNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompileNotice(..)")
    }
}

impl RuntimeBuilder {
    /// Default for [`RuntimeBuilder::max_wasm_stack`].
    pub const DEFAULT_MAX_WASM_STACK: usize = 1 << 20;
    /// Default for [`RuntimeBuilder::epoch_tick`].
    pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(1);
    /// Default for [`RuntimeBuilder::max_instances`].
    pub const DEFAULT_MAX_INSTANCES: u32 = 256;
    /// Default for [`RuntimeBuilder::max_memory_bytes`]: all a 32-bit memory can hold.
    pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 4 << 30;

    /// Meters fuel, so that [`Limits::fuel`](crate::Limits::fuel) can bound
    /// calls and reports say how much fuel each call used.
    ///
    /// Fuel makes guest code slower (roughly ×1.5 on compute-bound guests), so
    /// it is off by default; timeouts need no fuel.
    pub fn fuel(&mut self, enable: bool) -> &mut Self {
        self.fuel = enable;
        self
    }

    /// The most native stack a guest's wasm frames may use before the call
    /// fails with [`Error::StackOverflow`]. Default: 1 MiB.
    pub fn max_wasm_stack(&mut self, bytes: usize) -> &mut Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// How often the epoch advances while calls are in flight. It bounds how
    /// far past its timeout a busy guest can run, and how long one guest can
    /// run before yielding to others on the same thread. Default: 1 ms.
    pub fn epoch_tick(&mut self, tick: Duration) -> &mut Self {
        self.epoch_tick = tick;
        self
    }

    /// How many instances may exist at once across all plugins: calls beyond
    /// it wait for a slot. With pooling, the pools (memories, tables, fiber
    /// stacks) are sized for this many. Default: 256.
    pub fn max_instances(&mut self, count: u32) -> &mut Self {
        self.max_instances = count;
        self
    }

    /// The largest linear memory any plugin may grow: a plugin whose
    /// [`Limits::memory_bytes`](crate::Limits::memory_bytes) is larger is
    /// refused at load. With pooling it is the size of each memory slot
    /// (address space reserved, not memory used). Default: 4 GiB.
    pub fn max_memory_bytes(&mut self, bytes: u64) -> &mut Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// Allocates instances from pre-reserved pools, with copy-on-write memory
    /// images, instead of mapping memory for each one: instantiation takes
    /// microseconds. Default: on.
    ///
    /// Each instance takes at most the default [`Limits`](crate::Limits)
    /// counts from the pools (100 core instances, 2 memories, 4 tables), so
    /// a plugin whose limits ask for more is refused at load; without
    /// pooling, plugins may raise them.
    pub fn pooling(&mut self, enable: bool) -> &mut Self {
        self.pooling = enable;
        self
    }

    /// Keeps compiled components in `dir` (created, private, if missing).
    /// Default: `$XDG_CACHE_HOME/warden/compiled`, else
    /// `~/.cache/warden/compiled`.
    ///
    /// The directory must belong to the user running Warden (or root) and
    /// not be writable by group or others: [`build`](Self::build) refuses
    /// one that is, with [`Error::InvalidConfig`], wherever it is.
    pub fn compile_cache(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cache = CacheLocation::Dir(dir.into());
        self
    }

    /// Where the key that seals compile cache entries lives: 32 random bytes,
    /// created readable by the user only if missing. An entry not sealed
    /// with this key is never deserialized (see the cache's threat model in
    /// `docs/security.md`). Default: `$XDG_DATA_HOME/warden/cache.key`, else
    /// `~/.local/share/warden/cache.key`.
    ///
    /// The key must not be inside the cache directory, must belong to the
    /// user running Warden and must not be readable or writable by anyone
    /// else; [`build`](Self::build) refuses it otherwise.
    pub fn compile_cache_key(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.cache_key = Some(path.into());
        self
    }

    /// Compiles every component on load instead of caching it.
    pub fn no_compile_cache(&mut self) -> &mut Self {
        self.cache = CacheLocation::Disabled;
        self
    }

    /// Calls `notice` with a component's name and size in bytes just before
    /// it is compiled because the compile cache holds no entry for it (or
    /// there is no cache), after the trust policy passed it: for telling a
    /// person who waits that a first load takes a while. Not called for
    /// cache hits nor for WASI preview 1 modules. Default: none.
    pub fn on_compile(&mut self, notice: impl Fn(&str, u64) + Send + Sync + 'static) -> &mut Self {
        self.on_compile = Some(CompileNotice(Arc::new(notice)));
        self
    }

    /// Creates the engine and starts the epoch thread.
    pub fn build(&self) -> Result<Runtime, Error> {
        if self.max_wasm_stack == 0 {
            return Err(Error::InvalidConfig(
                "the wasm stack limit must be greater than zero".into(),
            ));
        }
        if self.epoch_tick.is_zero() {
            return Err(Error::InvalidConfig(
                "the epoch tick must be greater than zero".into(),
            ));
        }
        if self.max_instances == 0 {
            return Err(Error::InvalidConfig(
                "the instance limit must be greater than zero".into(),
            ));
        }
        let plain = Arc::new(self.engine_unit(Concurrency::Off)?);
        let preview1_linker = preview1::linker(&plain.engine).map_err(Error::Internal)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                plain,
                concurrent: OnceLock::new(),
                builder: self.clone(),
                preview1_linker,
                cache: self.cache.open(self.cache_key.clone())?,
                on_compile: self.on_compile.clone(),
                slots: Arc::new(Semaphore::new(self.max_instances as usize)),
                max_instances: self.max_instances as usize,
                capacity: Capacity::new(self.fuel, self.pooling, self.memory_slot_bytes()),
            }),
        })
    }

    /// The largest memory a plugin may have: a pool's memory slot, or the
    /// configured maximum without pooling.
    fn memory_slot_bytes(&self) -> u64 {
        if self.pooling {
            PoolSizes::for_instances(self.max_instances, self.max_memory_bytes).memory_slot_bytes
        } else {
            self.max_memory_bytes
        }
    }

    /// An engine configured by this builder, its linker and its epoch thread.
    fn engine_unit(&self, concurrency: Concurrency) -> Result<EngineUnit, Error> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(self.fuel)
            .max_wasm_stack(self.max_wasm_stack)
            // Host functions called from wasm run on the same fiber stack, so
            // it needs room beyond the guest's share.
            .async_stack_size(self.max_wasm_stack + HOST_STACK_HEADROOM)
            .memory_init_cow(true)
            // Without the concurrency machinery a component call costs about
            // a quarter as much, so only 0.2 plugins, whose async exports and
            // streams need it, get an engine with it.
            .concurrency_support(concurrency == Concurrency::On);
        if concurrency == Concurrency::On {
            config.wasm_component_model_async(true);
        }
        if self.pooling {
            PoolSizes::for_instances(self.max_instances, self.max_memory_bytes)
                .configure(&mut config);
        }
        let engine = Engine::new(&config)
            .map_err(|err| Error::InvalidConfig(format!("cannot create the engine: {err:#}")))?;
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker).map_err(Error::Internal)?;
        if concurrency == Concurrency::On {
            capabilities::add_wasi_0_3_to_linker(&mut linker).map_err(Error::Internal)?;
        }
        let ticker = EpochTicker::start(engine.clone(), self.epoch_tick)
            .map_err(|err| Error::io("starting the epoch thread", err))?;
        Ok(EngineUnit {
            engine,
            linker,
            concurrent: concurrency == Concurrency::On,
            ticker,
        })
    }
}

/// Whether an engine has component-model concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Concurrency {
    Off,
    On,
}

/// One wasmtime engine, the linker of the plugins that run on it, and the
/// thread that advances its epoch.
pub(crate) struct EngineUnit {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// Whether the engine has component-model concurrency (0.2 plugins).
    pub concurrent: bool,
    ticker: EpochTicker,
}

impl EngineUnit {
    /// Keeps the epoch advancing until the guard is dropped.
    pub(crate) fn keep_ticking(&self) -> TickGuard {
        self.ticker.keep_ticking()
    }
}

/// Native stack reserved for host code on each guest fiber.
const HOST_STACK_HEADROOM: usize = 1 << 20;

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            fuel: false,
            max_wasm_stack: Self::DEFAULT_MAX_WASM_STACK,
            epoch_tick: Self::DEFAULT_EPOCH_TICK,
            max_instances: Self::DEFAULT_MAX_INSTANCES,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            pooling: true,
            cache: CacheLocation::Default,
            cache_key: None,
            on_compile: None,
        }
    }
}

impl Runtime {
    /// A runtime with the default configuration: no fuel metering, 1 MiB wasm
    /// stack, 1 ms epoch tick.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// Starts configuring a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The wasmtime engine, for embedders that need it directly.
    ///
    /// This is the engine of 0.1 plugins, programs and application worlds;
    /// 0.2 plugins run on a second engine with component-model concurrency.
    pub fn engine(&self) -> &Engine {
        &self.inner.plain.engine
    }

    /// Whether this runtime meters fuel.
    pub fn fuel_metering(&self) -> bool {
        self.inner.capacity.fuel_metering
    }

    /// Reads a plugin from a file and loads it; see [`Source::read`] and
    /// [`Runtime::load`].
    pub async fn load_file(
        &self,
        path: impl AsRef<Path>,
        sandbox: Sandbox,
    ) -> Result<Plugin, Error> {
        self.load(Source::read(path).await?, sandbox).await
    }

    /// Loads a plugin: checks its bytes against the sandbox's trust policy,
    /// checks that they are a component of the `warden:plugin/plugin` world,
    /// compiles them, links the plugin's imports, checks its exports, applies
    /// `strict` and opens what the grants name. No guest code runs.
    ///
    /// Compilation runs on Tokio's blocking pool; it can take seconds for
    /// large components.
    pub async fn load(&self, source: Source, sandbox: Sandbox) -> Result<Plugin, Error> {
        load::plugin(self, source, sandbox).await
    }

    /// Checks a component against the trust policy and compiles it into the
    /// compile cache (when there is one), without linking it: later loads of
    /// the same bytes then skip compilation. Takes plugins and programs
    /// alike. Returns what it learned about the component.
    pub async fn compile(&self, source: Source, sandbox: Sandbox) -> Result<ComponentInfo, Error> {
        load::compile_only(self, source, sandbox).await
    }

    /// The SHA-256 of a component, as lowercase hex, as a load of `source`
    /// on this runtime sees it: from the compile cache's digest index when
    /// the component's file has not changed since it was last hashed, else
    /// by hashing it. A load of the same source (or of a clone of it) takes
    /// this digest rather than computing it again.
    pub fn component_sha256(&self, source: &Source) -> Result<String, Error> {
        load::sha256(self, source).map(hex::encode)
    }

    /// Finds and checks a component's signatures against the keys `policy`
    /// knows, without applying its verdict, as a load on this runtime
    /// checks them: a check its compile cache remembers for these exact
    /// bytes, signature and key is not done again. A signature that is
    /// present but malformed is an [`Error::Untrusted`].
    pub fn inspect_signatures(
        &self,
        source: &Source,
        policy: &TrustPolicy,
    ) -> Result<Vec<SignatureCheck>, Error> {
        load::inspect_signatures(self, source, policy)
    }

    /// How many instances exist right now (calls in flight and live
    /// instances). Drops back to zero when all are done.
    pub fn instances_in_use(&self) -> usize {
        self.inner.max_instances - self.inner.slots.available_permits()
    }

    /// Whether this runtime keeps a compile cache.
    pub fn has_compile_cache(&self) -> bool {
        self.inner.cache.is_some()
    }

    /// Reads a program from a file and loads it; see [`Runtime::load_program`].
    pub async fn load_program_file(
        &self,
        path: impl AsRef<Path>,
        sandbox: Sandbox,
    ) -> Result<Program, Error> {
        self.load_program(Source::read(path).await?, sandbox).await
    }

    /// Loads a program: a component exporting `wasi:cli/run`, or a WASI
    /// preview 1 command module (as `wasm32-wasip1` toolchains build), which
    /// runs on wasmtime-wasi's own preview 1 implementation, as under
    /// `wasmtime run`, with the same limits, grants and report. The trust
    /// check applies to the bytes as given.
    pub async fn load_program(&self, source: Source, sandbox: Sandbox) -> Result<Program, Error> {
        load::program(self, source, sandbox).await
    }

    /// Loads a component of the application's own world: verifies it,
    /// compiles it (or takes it from the compile cache), links it against
    /// `world` and pre-instantiates it, then admits it under `sandbox`.
    ///
    /// Fails with [`Error::InvalidPlugin`] when the component imports
    /// something `world` does not provide, naming it.
    pub async fn load_world(
        &self,
        source: Source,
        sandbox: Sandbox,
        world: &World,
    ) -> Result<WorldPlugin, Error> {
        load::world(self, source, sandbox, world).await
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.plain.linker
    }

    /// The engine of 0.1 plugins, programs and application worlds.
    pub(crate) fn plain_engine(&self) -> &Arc<EngineUnit> {
        &self.inner.plain
    }

    /// The engine of 0.2 plugins, created on first use.
    pub(crate) fn concurrent_engine(&self) -> Result<&Arc<EngineUnit>, Error> {
        if let Some(unit) = self.inner.concurrent.get() {
            return Ok(unit);
        }
        let unit = Arc::new(self.inner.builder.engine_unit(Concurrency::On)?);
        // Two loads may race to create it; the first one's stands.
        Ok(self.inner.concurrent.get_or_init(|| unit))
    }

    pub(crate) fn preview1_linker(&self) -> &wasmtime::Linker<HostState> {
        &self.inner.preview1_linker
    }

    /// Waits for one of the runtime's instance slots.
    pub(crate) async fn instance_slot(&self) -> OwnedSemaphorePermit {
        self.inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the runtime never closes its instance semaphore")
    }

    pub(crate) fn compile_cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }

    /// What to tell before compiling a component the cache does not hold.
    pub(crate) fn compile_notice(&self) -> Option<&CompileNotice> {
        self.inner.on_compile.as_ref()
    }

    pub(crate) fn capacity(&self) -> &Capacity {
        &self.inner.capacity
    }
}
