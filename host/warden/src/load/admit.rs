//! Stage 6: admit the linked code under its sandbox: apply `strict` and open
//! what the grants name. This comes after linking, so that a component of
//! the wrong world is refused for that first.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::capabilities::{CapabilityUse, PluginResources, Risk};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::metrics::Metrics;
use crate::runtime::{EngineUnit, Runtime};

use super::compile::{Compiled, ComponentInfo};

/// A component (or preview 1 module) admitted into a runtime under its
/// sandbox: what every call into it needs besides the code itself.
pub(crate) struct Loaded {
    /// The runtime its calls run on: its engine, instance slots and epoch.
    pub runtime: Runtime,
    /// The engine its code was compiled for: the runtime's plain engine, or
    /// its concurrent one for plugins of world 0.2.
    pub engine: Arc<EngineUnit>,
    pub name: Arc<str>,
    pub sandbox: Sandbox,
    pub info: ComponentInfo,
    pub resources: PluginResources,
    pub metrics: Metrics,
    /// Bounds this component's instances when its limits ask for that.
    pub concurrency: Option<Arc<Semaphore>>,
}

/// The public accessors [`Plugin`](crate::Plugin), [`Program`](crate::Program)
/// and [`WorldPlugin`](crate::WorldPlugin) share, read from the [`Loaded`]
/// their `loaded()` returns; `$what` names the type in their docs.
macro_rules! loaded_accessors {
    ($what:literal) => {
        #[doc = concat!("The name the ", $what, " was loaded under.")]
        pub fn name(&self) -> &str {
            &self.loaded().name
        }

        /// Facts about the component: size, hash, imports, exports, trust
        /// and the capabilities they need.
        pub fn info(&self) -> &$crate::ComponentInfo {
            &self.loaded().info
        }

        #[doc = concat!("The limits and grants every instance of this ", $what, " runs under.")]
        pub fn sandbox(&self) -> &$crate::Sandbox {
            &self.loaded().sandbox
        }

        #[doc = concat!("Counters and distributions of this ", $what, "'s calls so far.")]
        pub fn metrics(&self) -> $crate::MetricsSnapshot {
            self.loaded().metrics.snapshot()
        }
    };
}
pub(crate) use loaded_accessors;

/// Applies `strict`, opens what the grants name, and admits the compiled
/// code for calls on `runtime` (kept for those calls; admitting asks nothing
/// of it).
pub(crate) fn admit<Code>(compiled: Compiled<Code>, runtime: Runtime) -> Result<Loaded, Error> {
    if compiled.sandbox.strict {
        let missing: Vec<CapabilityUse> = compiled
            .info
            .capabilities
            .iter()
            .filter(|capability| capability.risk == Risk::High && !capability.granted)
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingGrants(missing));
        }
    }
    let resources = PluginResources::prepare(&compiled.name, &compiled.sandbox)?;
    let concurrency = compiled
        .sandbox
        .limits
        .concurrency
        .map(|permits| Arc::new(Semaphore::new(permits as usize)));
    Ok(Loaded {
        runtime,
        engine: compiled.engine,
        name: compiled.name,
        sandbox: compiled.sandbox,
        info: compiled.info,
        resources,
        metrics: Metrics::default(),
        concurrency,
    })
}
