//! A loaded [`Plugin`]: a compiled component of the `warden:plugin/plugin`
//! world, pre-instantiated against the runtime's linker, ready to run calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::io::AsyncRead;
use wasmtime::Store;

use crate::call::{self, GuestWork};
use crate::capabilities::{CapabilityUse, InstanceOptions};
use crate::error::Error;
use crate::guest::{Guest, GuestPre, WorldVersion};
use crate::instance::{Instance, KeptInstance};
use crate::limits::Limits;
use crate::load::{Loaded, loaded_accessors};
use crate::metadata::Metadata;
use crate::report::Outcome;
use crate::state::HostState;
use crate::streaming::{self, OutputStream, StreamOutcome};

/// The export every plugin of world 0.1 provides; a plugin of world 0.2
/// exports `warden:plugin/guest@0.2.0` instead (see [`WorldVersion`]).
pub const GUEST_INTERFACE: &str = "warden:plugin/guest@0.1.0";

/// A plugin ready to run. Cheap to clone; clones share the compiled code.
///
/// [`Plugin::execute`] runs each call in a fresh instance (the strongest
/// isolation: nothing survives between calls); [`Plugin::instantiate`] gives
/// a live [`Instance`] that keeps its state across calls.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    loaded: Loaded,
    pre: GuestPre,
    metadata: OnceLock<Metadata>,
    /// Kept instances waiting for their next call (with `calls_per_instance` > 1).
    idle: Mutex<Vec<KeptInstance>>,
    /// Set once [`Plugin::retire_kept_instances`] ran: instances finishing a
    /// call after it are retired too, not kept.
    retired: AtomicBool,
}

/// Kept instances a plugin holds between calls at most; each holds an
/// instance slot, so a bound keeps idle plugins from starving busy ones.
const MAX_IDLE_INSTANCES: usize = 8;

impl Plugin {
    /// A plugin of a loaded component, linked as `pre`.
    pub(crate) fn new(loaded: Loaded, pre: GuestPre) -> Self {
        Plugin {
            inner: Arc::new(PluginInner {
                loaded,
                pre,
                metadata: OnceLock::new(),
                idle: Mutex::new(Vec::new()),
                retired: AtomicBool::new(false),
            }),
        }
    }

    loaded_accessors!("plugin");

    /// The version of Warden's plugin world the plugin targets.
    pub fn world_version(&self) -> WorldVersion {
        self.inner.pre.version()
    }

    /// Whether the plugin exports `warden:plugin/streaming` (world 0.2),
    /// so that [`Plugin::execute_stream`] can call it.
    pub fn streams(&self) -> bool {
        self.inner.pre.streams()
    }

    /// Whether the plugin exports `warden:plugin/lifecycle` (world 0.2):
    /// its kept instances are told before they are dropped.
    pub fn has_lifecycle(&self) -> bool {
        self.inner.pre.has_lifecycle()
    }

    /// The capabilities the plugin imports, with their risk and grant status.
    pub fn capabilities(&self) -> &[CapabilityUse] {
        &self.loaded().info.capabilities
    }

    /// What the plugin says about itself, from its `init`.
    ///
    /// The first instance that initialises successfully fills this in; if
    /// none has yet, this creates one to ask.
    pub async fn metadata(&self) -> Result<Metadata, Error> {
        if let Some(metadata) = self.inner.metadata.get() {
            return Ok(metadata.clone());
        }
        let instance = self.instantiate().await.result?;
        Ok(instance.metadata().clone())
    }

    /// Runs one action.
    ///
    /// By default ([`Sandbox::calls_per_instance`](crate::Sandbox::calls_per_instance)
    /// of 1) the call gets a fresh instance: instantiate, `init`, `execute`,
    /// then drop it. The timeout and fuel budget cover all three, and the
    /// report includes what `init` logged or printed. With a larger `calls_per_instance` the call
    /// runs in a kept instance when one is idle (its `init` ran earlier).
    ///
    /// When the runtime or the plugin has no free instance slot, the call
    /// waits for one before its timeout starts.
    pub async fn execute(&self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let loaded = &self.inner.loaded;
        if loaded.sandbox.calls_per_instance > 1 {
            return self.execute_in_kept_instance(action, input).await;
        }
        let call = FreshCall {
            plugin: self,
            action: Action::new(action, input, &loaded.sandbox.limits),
        };
        call::in_new_instance(loaded, &InstanceOptions::default(), call).await
    }

    /// Runs a call in an idle kept instance, or a new one, and keeps the
    /// instance for the next call while it is sound and has calls left.
    async fn execute_in_kept_instance(&self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut instance = match idle {
            Some(kept) => Instance::from_kept(self.clone(), kept),
            None => {
                let created = self.instantiate().await;
                match created.result {
                    Ok(instance) => instance,
                    Err(err) => {
                        let failed = Outcome {
                            result: Err(err),
                            report: created.report,
                        };
                        return call::counted(&self.inner.loaded, failed);
                    }
                }
            }
        };
        let outcome = instance.execute(action, input).await;
        let keep = !instance.is_discarded()
            && instance.calls() < self.inner.loaded.sandbox.calls_per_instance;
        let ending = if keep {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Checked under the lock that `retire_kept_instances` empties
            // the list under, so no instance is kept after it.
            if idle.len() < MAX_IDLE_INSTANCES && !self.inner.retired.load(Ordering::Acquire) {
                idle.push(instance.into_kept());
                None
            } else {
                Some(instance)
            }
        } else {
            Some(instance)
        };
        if let Some(instance) = ending {
            // Its `shutdown` (if any) runs without holding up this call.
            tokio::spawn(instance.shutdown());
        }
        outcome
    }

    /// Ends the kept instances waiting for their next call (see
    /// [`Sandbox::calls_per_instance`](crate::Sandbox::calls_per_instance)),
    /// calling each one's `shutdown` when the plugin exports
    /// `warden:plugin/lifecycle`. A registry does this for a plugin it
    /// unloads or replaces, and `warden serve` at the end of its drain;
    /// calls after it still run, each in an instance that is not kept.
    /// The `shutdown` calls run at once, so this takes at most
    /// [`SHUTDOWN_TIMEOUT`](crate::SHUTDOWN_TIMEOUT) however many there are.
    pub async fn retire_kept_instances(&self) {
        let idle = {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.inner.retired.store(true, Ordering::Release);
            std::mem::take(&mut *idle)
        };
        let mut shutdowns = tokio::task::JoinSet::new();
        for kept in idle {
            shutdowns.spawn(Instance::from_kept(self.clone(), kept).shutdown());
        }
        shutdowns.join_all().await;
    }

    /// Runs one action of a plugin that exports `warden:plugin/streaming`
    /// (world 0.2) on input that flows in as the plugin reads it, giving
    /// its output as the plugin writes it.
    ///
    /// The call starts at once on a Tokio task of its own, in a fresh
    /// instance (instantiate, `init`, `execute-stream`), under the plugin's
    /// limits: its timeout covers the whole call, time blocked on either
    /// stream included, and the stream limits
    /// ([`Limits::max_stream_input_bytes`], [`Limits::max_stream_output_bytes`],
    /// [`Limits::stream_idle_timeout`]) apply. Read the output while the
    /// call runs: the host holds at most
    /// [`STREAM_BUFFER_BYTES`](crate::STREAM_BUFFER_BYTES) of it, after
    /// which the plugin's writes wait for the reader. The outcome resolves
    /// when the call is over, with its report; for a plugin without the
    /// `streaming` export it is [`Error::StreamingUnsupported`]. A reader
    /// that fails is an [`Error::Io`]: the plugin's input did not end, it
    /// broke off.
    ///
    /// Must be called within a Tokio runtime, which runs the call.
    ///
    /// ```no_run
    /// # async fn example(plugin: warden::Plugin) -> Result<(), Box<dyn std::error::Error>> {
    /// let input = tokio::fs::File::open("big.log").await?;
    /// let (mut output, outcome) = plugin.execute_stream("upper", input);
    /// tokio::io::copy(&mut output, &mut tokio::io::stdout()).await?;
    /// let streamed = outcome.await.into_result()?;
    /// eprintln!("{} bytes in, {} out", streamed.bytes_in, streamed.bytes_out);
    /// # Ok(()) }
    /// ```
    pub fn execute_stream<R>(&self, action: &str, input: R) -> (OutputStream, StreamOutcome)
    where
        R: AsyncRead + Send + 'static,
    {
        streaming::start(self, action, input)
    }

    /// Creates a live instance and runs its `init`. The instance keeps its
    /// state between [`Instance::execute`] calls, and holds an instance slot
    /// until it is dropped.
    pub async fn instantiate(&self) -> Outcome<Instance> {
        let init = Init { plugin: self };
        call::new_instance(&self.inner.loaded, &InstanceOptions::default(), init)
            .await
            .map(|((guest, metadata), instance)| {
                Instance::new(self.clone(), instance, guest, metadata)
            })
    }

    pub(crate) fn loaded(&self) -> &Loaded {
        &self.inner.loaded
    }

    pub(crate) fn guest_pre(&self) -> &GuestPre {
        &self.inner.pre
    }

    pub(crate) fn remember(&self, metadata: Metadata) {
        // Every instance describes the same plugin; the first answer stands.
        let _ = self.inner.metadata.set(metadata);
    }
}

/// One `execute` call: the action, its input, and the limits on both.
pub(crate) struct Action<'a> {
    name: &'a str,
    input: &'a [u8],
    max_input_bytes: usize,
    max_output_bytes: usize,
}

impl<'a> Action<'a> {
    pub(crate) fn new(name: &'a str, input: &'a [u8], limits: &Limits) -> Self {
        Action {
            name,
            input,
            max_input_bytes: limits.max_input_bytes,
            max_output_bytes: limits.max_output_bytes,
        }
    }

    /// Refuses input larger than the limit before any guest code runs.
    pub(crate) fn check_input(&self) -> Result<(), Error> {
        if self.input.len() > self.max_input_bytes {
            return Err(Error::InputTooLarge {
                size: self.input.len(),
                limit: self.max_input_bytes,
            });
        }
        Ok(())
    }

    /// Calls the guest's `execute` and enforces the output limit.
    pub(crate) async fn run(
        &self,
        guest: &Guest,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let returned = guest.execute(store, self.name, self.input).await?;
        Ok(returned.map_err(Error::Plugin).and_then(|output| {
            if output.len() > self.max_output_bytes {
                return Err(Error::OutputTooLarge {
                    size: output.len(),
                    limit: self.max_output_bytes,
                });
            }
            Ok(output)
        }))
    }
}

/// A call in a fresh instance: instantiate, `init`, then `execute`.
struct FreshCall<'a> {
    plugin: &'a Plugin,
    action: Action<'a>,
}

impl GuestWork for FreshCall<'_> {
    type Output = Vec<u8>;

    fn check(&self) -> Result<(), Error> {
        self.action.check_input()
    }

    async fn run(self, store: &mut Store<HostState>) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let guest = self.plugin.inner.pre.instantiate(&mut *store).await?;
        match guest.init(&mut *store).await? {
            Ok(metadata) => self.plugin.remember(metadata),
            Err(err) => return Ok(Err(Error::InitFailed(err))),
        }
        self.action.run(&guest, store).await
    }
}

/// Creating a live instance: instantiate and `init`.
struct Init<'a> {
    plugin: &'a Plugin,
}

impl GuestWork for Init<'_> {
    type Output = (Guest, Metadata);

    async fn run(
        self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<(Guest, Metadata), Error>> {
        let guest = self.plugin.inner.pre.instantiate(&mut *store).await?;
        let init = guest.init(&mut *store).await?;
        Ok(match init {
            Ok(metadata) => {
                self.plugin.remember(metadata.clone());
                Ok((guest, metadata))
            }
            Err(err) => Err(Error::InitFailed(err)),
        })
    }
}
