//! The one call driver. Every call into a guest, whatever runs inside it
//! ([`Plugin::execute`](crate::Plugin::execute),
//! [`Plugin::instantiate`](crate::Plugin::instantiate),
//! [`Instance::execute`](crate::Instance::execute),
//! [`Program::run`](crate::Program::run),
//! [`WorldPlugin::call`](crate::WorldPlugin::call)), goes the same way:
//!
//! 1. refuse what the call can be refused for before any guest code runs
//!    ([`GuestWork::check`]);
//! 2. for a new instance, take an instance slot and create its store;
//! 3. arm the store ([`CallScope::begin`]: deadline, fuel, epoch ticking);
//! 4. run the [`GuestWork`] until its deadline;
//! 5. classify a failure (timeout, fuel, memory limit, trap, ...);
//! 6. finish the report ([`CallScope::finish`]);
//! 7. count the call in the component's metrics, once.

use std::future::Future;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;

use crate::capabilities::InstanceOptions;
use crate::deadline::{self, DeadlinePassed};
use crate::error::Error;
use crate::load::Loaded;
use crate::report::Outcome;
use crate::state::{CallScope, HostState};

/// What runs inside a call: the guest code, given the call's store.
pub(crate) trait GuestWork {
    /// What the call returns when it succeeds.
    type Output;

    /// Refuses the call before any guest code runs (and before it waits for
    /// an instance slot). Nothing is refused by default.
    fn check(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Runs the guest. A wasmtime error (a trap, a limit, an interrupt) is
    /// classified by the driver; an [`Error`] is the call's own failure.
    fn run(
        self,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Result<Self::Output, Error>>>;
}

/// The right to hold one instance: a slot of the runtime's, and one of the
/// component's own when it limits its concurrency. Released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    _component: Option<OwnedSemaphorePermit>,
    _runtime: OwnedSemaphorePermit,
}

/// A new instance's store and the slot it holds. The store is dropped
/// first (fields drop in order), so that its memory is back in the pools
/// before the slot lets another instance in.
pub(crate) struct NewInstance {
    pub store: Store<HostState>,
    pub slot: Slot,
}

/// Runs `work` as one call in a new instance of `loaded`, which is dropped
/// afterwards, and counts the call.
pub(crate) async fn in_new_instance<W: GuestWork>(
    loaded: &Loaded,
    options: &InstanceOptions,
    work: W,
) -> Outcome<W::Output> {
    let outcome = new_instance(loaded, options, work).await;
    counted(loaded, outcome.map(|(output, _instance)| output))
}

/// Runs `work` in a new instance of `loaded` and hands the instance back
/// with its output, for the caller to keep. Creating an instance is not
/// counted as a call; a call that needed one counts its failure with
/// [`counted`].
pub(crate) async fn new_instance<W: GuestWork>(
    loaded: &Loaded,
    options: &InstanceOptions,
    work: W,
) -> Outcome<(W::Output, NewInstance)> {
    if let Err(err) = work.check() {
        return Outcome::before_guest(err);
    }
    let slot = slot(loaded).await;
    let mut store = match HostState::new_store(loaded, options) {
        Ok(store) => store,
        Err(err) => return Outcome::before_guest(err),
    };
    let outcome = run(loaded, &mut store, work).await;
    outcome.map(|output| (output, NewInstance { store, slot }))
}

/// Runs `work` as one call in the live instance whose store is `store`,
/// and counts the call.
pub(crate) async fn in_instance<W: GuestWork>(
    loaded: &Loaded,
    store: &mut Store<HostState>,
    work: W,
) -> Outcome<W::Output> {
    if let Err(err) = work.check() {
        return counted(loaded, Outcome::before_guest(err));
    }
    let outcome = run(loaded, store, work).await;
    counted(loaded, outcome)
}

/// Counts a finished call in `loaded`'s metrics.
pub(crate) fn counted<T>(loaded: &Loaded, outcome: Outcome<T>) -> Outcome<T> {
    loaded.metrics.record(&outcome);
    outcome
}

/// Arms the store, runs `work` until the deadline, classifies what went
/// wrong and finishes the report.
async fn run<W: GuestWork>(
    loaded: &Loaded,
    store: &mut Store<HostState>,
    work: W,
) -> Outcome<W::Output> {
    host_call(loaded, store, loaded.sandbox.limits.timeout, work).await
}

/// Arms the store for `timeout`, runs `work` until the deadline, classifies
/// what went wrong and finishes the report. Not counted as a call: with
/// a timeout other than the limits', this is the host's own call into a
/// live instance, such as `shutdown`.
pub(crate) async fn host_call<W: GuestWork>(
    loaded: &Loaded,
    store: &mut Store<HostState>,
    timeout: Duration,
    work: W,
) -> Outcome<W::Output> {
    let call = match CallScope::begin(store, loaded, timeout) {
        Ok(call) => call,
        Err(err) => return Outcome::before_guest(err),
    };
    let finished = deadline::until(call.deadline(), std::pin::pin!(work.run(store))).await;
    let result = match finished {
        Ok(Ok(returned)) => returned,
        Ok(Err(err)) => Err(call.failure(store, err)),
        Err(DeadlinePassed) => Err(call.timed_out()),
    };
    call.finish(store, result)
}

/// Waits until `loaded` may hold one more instance: first for its own
/// concurrency limit, then for a slot of the runtime's, so that a component
/// at its limit never sits on runtime slots.
async fn slot(loaded: &Loaded) -> Slot {
    let component = match &loaded.concurrency {
        Some(semaphore) => Some(
            semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("a component never closes its concurrency semaphore"),
        ),
        None => None,
    };
    Slot {
        _component: component,
        _runtime: loaded.runtime.instance_slot().await,
    }
}
