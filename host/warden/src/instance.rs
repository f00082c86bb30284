//! A live plugin [`Instance`]: one store, initialised once, called many times.

use wasmtime::Store;

use crate::Metadata;
use crate::bindings;
use crate::deadline::{self, DeadlinePassed};
use crate::error::{Error, ErrorKind};
use crate::loaded::Slot;
use crate::plugin::{Plugin, outcome_without_call};
use crate::report::Outcome;
use crate::state::{CallScope, HostState};

/// A live instance of a plugin, created by [`Plugin::instantiate`].
///
/// Its `init` has run; each [`Instance::execute`] runs under the plugin's
/// limits afresh (timeout and fuel per call), while linear memory and any
/// state the guest keeps persist between calls. After a trap, a limit or a
/// timeout the instance is discarded: further calls fail with
/// [`Error::InstanceDiscarded`].
pub struct Instance {
    plugin: Plugin,
    store: Store<HostState>,
    guest: bindings::Plugin,
    metadata: Metadata,
    discarded_after: Option<ErrorKind>,
    calls: u32,
    /// Released, with the instance, when it is dropped.
    _slot: Slot,
}

impl Instance {
    pub(crate) fn new(
        plugin: Plugin,
        store: Store<HostState>,
        guest: bindings::Plugin,
        metadata: Metadata,
        slot: Slot,
    ) -> Self {
        Instance {
            plugin,
            store,
            guest,
            metadata,
            discarded_after: None,
            calls: 0,
            _slot: slot,
        }
    }

    /// How many calls this instance has served.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// What this instance's `init` returned.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Whether an earlier failure discarded this instance.
    pub fn is_discarded(&self) -> bool {
        self.discarded_after.is_some()
    }

    /// Runs one action on this instance.
    pub async fn execute(&mut self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let outcome = self.execute_uncounted(action, input).await;
        self.plugin.loaded().metrics.record(&outcome);
        outcome
    }

    /// [`Instance::execute`] without recording metrics, for callers that
    /// record the call themselves.
    pub(crate) async fn execute_uncounted(
        &mut self,
        action: &str,
        input: &[u8],
    ) -> Outcome<Vec<u8>> {
        if let Some(kind) = self.discarded_after {
            return outcome_without_call(Error::InstanceDiscarded(kind));
        }
        if let Err(err) = self.plugin.loaded().check_input(input) {
            return outcome_without_call(err);
        }
        let call = match CallScope::begin(&mut self.store, self.plugin.loaded()) {
            Ok(call) => call,
            Err(err) => return outcome_without_call(err),
        };
        self.calls += 1;
        let run = self
            .guest
            .warden_plugin_guest()
            .call_execute(&mut self.store, action, input);
        let finished = deadline::until(call.deadline(), std::pin::pin!(run)).await;
        let result = match finished {
            Ok(returned) => self.plugin.output_from(
                returned.map(|result| result.map_err(Error::Plugin)),
                &call,
                &mut self.store,
            ),
            Err(DeadlinePassed) => Err(call.timed_out()),
        };
        let outcome = call.finish(&mut self.store, result);
        if let Err(err) = &outcome.result
            && err.poisons_instance()
        {
            self.discarded_after = Some(err.kind());
        }
        outcome
    }
}
