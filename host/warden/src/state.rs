//! The per-instance state every store carries, and the per-call bookkeeping
//! around it.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::capabilities::{InstanceOptions, InstanceState, WasiContext};
use crate::epoch::TickGuard;
use crate::error::{Error, FailureContext};
use crate::host_memory::{HostMemory, truncate_record_text};
use crate::limits::{LimitRefusal, StoreLimiter};
use crate::load::Loaded;
use crate::report::{Outcome, Report};

/// Everything a store holds for one instance: the resource table, every
/// capability's state, the limiter, the deadline, and, for plugins of an
/// application's own [`World`](crate::World), the application's data.
///
/// Host functions of a custom world are implemented on this type (or reach
/// their data through [`HostState::extension_mut`]), and check their
/// capability's grant with [`HostState::require`].
pub struct HostState {
    pub(crate) table: ResourceTable,
    pub(crate) caps: InstanceState,
    limiter: StoreLimiter,
    /// What the host holds on the instance's behalf outside its memory.
    host_memory: HostMemory,
    /// When the current call must stop; checked on every epoch tick.
    deadline: Instant,
    /// Host-defined capabilities the sandbox grants, by name (shared by
    /// every instance of the plugin).
    host_grants: Arc<BTreeSet<String>>,
    /// The application's data for this call ([`WorldPlugin::call`](crate::WorldPlugin::call)).
    extension: Option<Box<dyn Any + Send>>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        match &mut self.caps.wasi {
            WasiContext::Component(ctx) => WasiCtxView {
                ctx,
                table: &mut self.table,
            },
            WasiContext::Preview1(preview1) => preview1.ctx(),
        }
    }
}

impl WasiHttpView for HostState {
    /// Every `wasi:http` call starts here, which makes it the place to keep
    /// what the guest builds within its host-memory budget.
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let allowance = self.host_memory.before_http_call(&mut self.table);
        if let Some(refusal) = allowance.refusal {
            self.limiter.record_refusal(refusal);
        }
        self.caps.http.allow(allowance);
        WasiHttpCtxView {
            ctx: &mut self.caps.http.ctx,
            table: &mut self.table,
            hooks: &mut self.caps.http.hooks,
        }
    }
}

impl HostState {
    /// The instance's resource table, for host-defined resources. It holds
    /// at most [`Limits::host_resources`](crate::Limits::host_resources)
    /// entries.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The application's data for the current call, if it is a `T`.
    pub fn extension<T: Any>(&self) -> Option<&T> {
        self.extension.as_ref()?.downcast_ref()
    }

    /// The application's data for the current call, if it is a `T`.
    pub fn extension_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.extension.as_mut()?.downcast_mut()
    }

    pub(crate) fn set_extension(&mut self, extension: Box<dyn Any + Send>) {
        self.extension = Some(extension);
    }

    /// The preview 1 context of a store made for a preview 1 module.
    ///
    /// # Panics
    ///
    /// When the store was made for a component. Only the preview 1 linker
    /// calls this, and only modules are linked with it; their stores are
    /// always made with [`InstanceOptions::preview1`].
    pub(crate) fn preview1(&mut self) -> &mut WasiP1Ctx {
        match &mut self.caps.wasi {
            WasiContext::Preview1(preview1) => preview1,
            WasiContext::Component(_) => {
                panic!("a component's store has no WASI preview 1 context")
            }
        }
    }

    /// When the current call must end.
    pub(crate) fn call_deadline(&self) -> Instant {
        self.deadline
    }

    /// The instance's host-memory budget.
    pub(crate) fn host_memory(&self) -> &HostMemory {
        &self.host_memory
    }

    /// Records that the host-memory budget refused something, so that the
    /// trap which usually follows is reported as that limit.
    pub(crate) fn refuse_host_memory(&mut self, refusal: LimitRefusal) {
        self.limiter.record_refusal(refusal);
    }

    /// Checks, at call time, that the plugin was granted the host-defined
    /// capability `capability`. When it was not, the denial is recorded in
    /// the call's report and an error is returned: return it from the host
    /// function (with `?`) and the call fails with
    /// [`Error::Denied`]. `detail` says what was
    /// refused, e.g. the argument; it is cut to
    /// [`MAX_RECORD_TEXT_BYTES`](crate::MAX_RECORD_TEXT_BYTES).
    pub fn require(
        &mut self,
        capability: &'static str,
        detail: impl Into<String>,
    ) -> wasmtime::Result<()> {
        if self.host_grants.contains(capability) {
            return Ok(());
        }
        let detail = detail.into();
        let detail = truncate_record_text(&detail);
        self.caps.denials.record(capability, detail.clone());
        Err(wasmtime::Error::msg(format!(
            "the {capability} capability is not granted: {detail}"
        )))
    }

    /// Creates a store for a new instance of a loaded component, with its
    /// limits and grants in place. Nothing runs yet.
    pub(crate) fn new_store(
        loaded: &Loaded,
        options: &InstanceOptions,
    ) -> Result<Store<HostState>, Error> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(loaded.sandbox.limits.host_resources);
        let host_memory = HostMemory::new(&loaded.sandbox.limits);
        let state = HostState {
            table,
            caps: InstanceState::new(
                &loaded.name,
                &loaded.sandbox,
                &loaded.resources,
                options,
                &host_memory,
            ),
            limiter: StoreLimiter::new(&loaded.sandbox.limits),
            host_memory,
            deadline: Instant::now(),
            host_grants: loaded.resources.host_grants.clone(),
            extension: None,
        };
        let mut store = Store::new(&loaded.engine.engine, state);
        store.limiter(|state| &mut state.limiter);
        if loaded.engine.concurrent {
            // A 0.2 guest makes streams, futures and tasks without the host
            // in the loop; each is host-side state, so they count against
            // the same bound as the handles the host makes for it.
            store.set_max_component_handles(loaded.sandbox.limits.host_resources);
        }
        store.epoch_deadline_callback(|context| {
            if Instant::now() >= context.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Give other executions on this thread a turn.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }
}

/// The bookkeeping of one call into a store: it keeps the epoch ticking and
/// arms the deadline and fuel when it starts, and turns what happened into an
/// [`Outcome`] when it ends.
pub(crate) struct CallScope {
    _ticking: TickGuard,
    started: Instant,
    deadline: Instant,
    timeout: Duration,
    fuel_budget: Option<u64>,
    instances: u32,
    host_resources: usize,
    memories: u32,
    tables: u32,
}

impl CallScope {
    /// Arms `store` for a call into `loaded` under its limits, with `timeout`
    /// (the limits' own, or a shorter one the host chose for `shutdown`).
    ///
    /// When the runtime meters fuel but the limits set no budget, the call may
    /// use as much as it likes and its consumption is still reported.
    pub(crate) fn begin(
        store: &mut Store<HostState>,
        loaded: &Loaded,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let limits = &loaded.sandbox.limits;
        let ticking = loaded.engine.keep_ticking();
        let started = Instant::now();
        let deadline = started + timeout;
        let state = store.data_mut();
        state.deadline = deadline;
        // A refusal the guest survived in an earlier call explains nothing now.
        state.limiter.take_refusal();
        store.set_epoch_deadline(1);
        let fuel_budget = if loaded.runtime.fuel_metering() {
            let budget = limits.fuel.unwrap_or(u64::MAX);
            store.set_fuel(budget).map_err(Error::Internal)?;
            Some(budget)
        } else {
            None
        };
        Ok(CallScope {
            _ticking: ticking,
            started,
            deadline,
            timeout,
            fuel_budget,
            instances: limits.instances,
            host_resources: limits.host_resources,
            memories: limits.memories,
            tables: limits.tables,
        })
    }

    /// When the call must have finished.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The error for a call that did not finish before its deadline.
    pub(crate) fn timed_out(&self) -> Error {
        Error::Timeout {
            limit: self.timeout,
        }
    }

    /// Classifies a failure that wasmtime reported during this call.
    pub(crate) fn failure(&self, store: &mut Store<HostState>, err: wasmtime::Error) -> Error {
        FailureContext {
            refusal: store.data_mut().limiter.take_refusal(),
            timeout: self.timeout,
            fuel: self.fuel_budget,
            instances: self.instances,
            host_resources: self.host_resources,
            memories: self.memories,
            tables: self.tables,
        }
        .classify(err)
    }

    /// Ends the call: collects its measurements, captured output and
    /// denials. A failure that followed a denial is reported as the denial,
    /// since that is what the caller can act on.
    pub(crate) fn finish<T>(
        self,
        store: &mut Store<HostState>,
        result: Result<T, Error>,
    ) -> Outcome<T> {
        let fuel_consumed = self.fuel_budget.map(|budget| {
            let remaining = store.get_fuel().unwrap_or(0);
            budget.saturating_sub(remaining)
        });
        let state = store.data_mut();
        let mut report = Report {
            duration: self.started.elapsed(),
            fuel_consumed,
            peak_memory_bytes: state.limiter.peak_memory_bytes(),
            ..Report::default()
        };
        state.caps.report(&mut report);
        let result =
            result.map_err(|err| err.with_bounded_guest_text().after_denials(&report.denials));
        Outcome { result, report }
    }
}
