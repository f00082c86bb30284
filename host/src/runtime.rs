//! The [`Runtime`]: one wasmtime engine, configured once, and the linker that
//! every plugin is linked against.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use crate::capabilities;
use crate::epoch::{EpochTicker, TickGuard};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::loaded::{Accept, Compiled};
use crate::plugin::Plugin;
use crate::program::Program;
use crate::source::Source;
use crate::state::HostState;

/// Loads and runs plugins. Cheap to clone; clones share the engine.
///
/// A runtime owns one wasmtime [`Engine`] with the component model, epoch
/// interruption (driven by one background thread that ticks only while calls
/// are in flight), optional fuel metering and a bounded wasm stack.
///
/// Calls need a Tokio runtime with timers enabled (as `#[tokio::main]`
/// provides): timeouts of calls blocked in host functions use Tokio's timer.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    fuel_metering: bool,
    ticker: EpochTicker,
}

/// Configures a [`Runtime`]; start from [`Runtime::builder`].
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    fuel: bool,
    max_wasm_stack: usize,
    epoch_tick: Duration,
}

impl RuntimeBuilder {
    /// Default for [`RuntimeBuilder::max_wasm_stack`].
    pub const DEFAULT_MAX_WASM_STACK: usize = 1 << 20;
    /// Default for [`RuntimeBuilder::epoch_tick`].
    pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(1);

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
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(self.fuel)
            .max_wasm_stack(self.max_wasm_stack)
            // Host functions called from wasm run on the same fiber stack, so
            // it needs room beyond the guest's share.
            .async_stack_size(self.max_wasm_stack + HOST_STACK_HEADROOM);
        let engine = Engine::new(&config).map_err(Error::Internal)?;
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker).map_err(Error::Internal)?;
        let ticker = EpochTicker::start(engine.clone(), self.epoch_tick)
            .map_err(|err| Error::io("starting the epoch thread", err))?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                fuel_metering: self.fuel,
                ticker,
            }),
        })
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
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Whether this runtime meters fuel.
    pub fn fuel_metering(&self) -> bool {
        self.inner.fuel_metering
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
        let compiled = Compiled::compile(self, source, sandbox, Accept::Components).await?;
        Plugin::link(compiled)
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
    /// is adapted into a component first. The trust check applies to the
    /// bytes as given.
    pub async fn load_program(&self, source: Source, sandbox: Sandbox) -> Result<Program, Error> {
        let compiled =
            Compiled::compile(self, source, sandbox, Accept::ComponentsAndPreview1Commands).await?;
        Program::link(compiled)
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    pub(crate) fn keep_ticking(&self) -> TickGuard {
        self.inner.ticker.keep_ticking()
    }
}
