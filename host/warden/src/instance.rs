//! A live plugin [`Instance`]: one store, initialised once, called many times.

use std::time::Duration;

use wasmtime::Store;

use crate::call::{self, GuestWork, NewInstance, Slot};
use crate::error::{Error, ErrorKind};
use crate::guest::Guest;
use crate::metadata::Metadata;
use crate::plugin::{Action, Plugin};
use crate::report::Outcome;
use crate::state::HostState;

/// A live instance of a plugin, created by [`Plugin::instantiate`].
///
/// Its `init` has run; each [`Instance::execute`] runs under the plugin's
/// limits afresh (timeout and fuel per call), while linear memory and any
/// state the guest keeps persist between calls. After a trap, a timeout, or
/// a limit that stopped the guest (memory, fuel, stack) the instance is
/// discarded: further calls fail with [`Error::InstanceDiscarded`]. Errors
/// the guest returned normally keep it: its own [`Error::Plugin`], and
/// [`Error::OutputTooLarge`], where the guest finished and only its answer
/// was refused. A plugin that keeps instances
/// ([`Sandbox::calls_per_instance`](crate::Sandbox::calls_per_instance))
/// runs the call after a discard in a fresh instance.
pub struct Instance {
    plugin: Plugin,
    live: KeptInstance,
}

/// An instance without a handle on its plugin: what a plugin holds between
/// calls. (Held as [`Instance`]s, the plugin and its instances would keep
/// each other alive.)
pub(crate) struct KeptInstance {
    store: Store<HostState>,
    guest: Guest,
    metadata: Metadata,
    discarded_after: Option<ErrorKind>,
    calls: u32,
    /// Released, with the instance, when it is dropped (after the store).
    _slot: Slot,
}

impl Instance {
    pub(crate) fn new(
        plugin: Plugin,
        instance: NewInstance,
        guest: Guest,
        metadata: Metadata,
    ) -> Self {
        Instance {
            plugin,
            live: KeptInstance {
                store: instance.store,
                guest,
                metadata,
                discarded_after: None,
                calls: 0,
                _slot: instance.slot,
            },
        }
    }

    /// The instance without its handle on the plugin, for the plugin to keep.
    pub(crate) fn into_kept(self) -> KeptInstance {
        self.live
    }

    /// A kept instance of `plugin`, ready for calls again.
    pub(crate) fn from_kept(plugin: Plugin, live: KeptInstance) -> Self {
        Instance { plugin, live }
    }

    /// How many calls this instance has served.
    pub fn calls(&self) -> u32 {
        self.live.calls
    }

    /// What this instance's `init` returned.
    pub fn metadata(&self) -> &Metadata {
        &self.live.metadata
    }

    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Whether an earlier failure discarded this instance.
    pub fn is_discarded(&self) -> bool {
        self.live.discarded_after.is_some()
    }

    /// Ends the instance: a plugin that exports `warden:plugin/lifecycle`
    /// (world 0.2) gets its `shutdown` called first, once, under
    /// [`SHUTDOWN_TIMEOUT`], when the instance is still sound (never after a
    /// trap or a limit discarded it). Returns that call's outcome, with what
    /// it logged and printed, or `None` when there was none to make.
    ///
    /// Dropping an instance instead skips `shutdown`.
    pub async fn shutdown(mut self) -> Option<Outcome<()>> {
        if self.is_discarded() || !self.plugin.has_lifecycle() {
            return None;
        }
        let work = Shutdown {
            guest: &self.live.guest,
        };
        let loaded = self.plugin.loaded();
        Some(call::host_call(loaded, &mut self.live.store, SHUTDOWN_TIMEOUT, work).await)
    }

    /// Runs one action on this instance.
    pub async fn execute(&mut self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let loaded = self.plugin.loaded();
        if let Some(kind) = self.live.discarded_after {
            return call::counted(
                loaded,
                Outcome::before_guest(Error::InstanceDiscarded(kind)),
            );
        }
        let call = KeptCall {
            guest: &self.live.guest,
            calls: &mut self.live.calls,
            action: Action::new(action, input, &loaded.sandbox.limits),
        };
        let outcome = call::in_instance(loaded, &mut self.live.store, call).await;
        if let Err(err) = &outcome.result
            && err.poisons_instance()
        {
            self.live.discarded_after = Some(err.kind());
        }
        outcome
    }
}

/// How long a plugin's `shutdown` may take: it is for flushing and saying
/// goodbye, not for work, and it holds up whatever retires the instance (a
/// reload, a server's drain).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The host's `shutdown` call into a live instance.
struct Shutdown<'a> {
    guest: &'a Guest,
}

impl GuestWork for Shutdown<'_> {
    type Output = ();

    async fn run(self, store: &mut Store<HostState>) -> wasmtime::Result<Result<(), Error>> {
        self.guest.shutdown(store).await.map(Ok)
    }
}

/// A call into a live instance: `execute` alone, its `init` long done.
struct KeptCall<'a> {
    guest: &'a Guest,
    /// The instance's call count, raised once the call gets to run.
    calls: &'a mut u32,
    action: Action<'a>,
}

impl GuestWork for KeptCall<'_> {
    type Output = Vec<u8>;

    fn check(&self) -> Result<(), Error> {
        self.action.check_input()
    }

    async fn run(self, store: &mut Store<HostState>) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        *self.calls += 1;
        self.action.run(self.guest, store).await
    }
}
