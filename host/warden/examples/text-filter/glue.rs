//! The host side of the `example:filters/text-filter` world: its generated
//! bindings, its host-defined capability and a typed call. Shared by the
//! example (`main.rs`) and its test (`host/warden/tests/all/text_filter.rs`).

use std::collections::BTreeSet;

use warden::{CallFuture, HostCapability, HostState, Outcome, Risk, Runtime, World, WorldPlugin};
use wasmtime::component::HasSelf;

wasmtime::component::bindgen!({
    path: "examples/text-filter/wit",
    world: "text-filter",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

pub use example::filters::types::{Rule, Stats, Verdict};

/// The capability behind the `dictionary` import.
pub const DICTIONARY: HostCapability = HostCapability {
    name: "dictionary",
    interfaces: &["example:filters/dictionary"],
    risk: Risk::Low,
    how_to_grant: "grants.host = [\"dictionary\"]",
};

/// The application's data for a call: the words it bans.
pub struct Dictionary {
    pub banned: BTreeSet<String>,
}

/// Host functions are implemented on Warden's store state: the grant check
/// and the call's data are both there.
impl example::filters::dictionary::Host for HostState {
    async fn is_banned(&mut self, word: String) -> wasmtime::Result<bool> {
        self.require(DICTIONARY.name, format!("is-banned({word:?})"))?;
        Ok(self
            .extension::<Dictionary>()
            .is_some_and(|dictionary| dictionary.banned.contains(&word)))
    }
}

/// The `types` interface has no functions; the bindings still ask for it.
impl example::filters::types::Host for HostState {}

/// Warden's imports plus the dictionary.
pub fn world(runtime: &Runtime) -> Result<World, warden::Error> {
    let mut world = World::new(runtime);
    add_imports(&mut world)?;
    world.define(DICTIONARY);
    Ok(world)
}

/// Adds the world's imports (the dictionary) to `world`'s linker.
pub fn add_imports(world: &mut World) -> Result<(), warden::Error> {
    TextFilter::add_to_linker::<_, HasSelf<HostState>>(world.linker(), |state| state)
        .map_err(warden::Error::Internal)
}

/// Creates a pipeline with `rules`, judges every line, reads the counts and
/// drops the pipeline, all in one instance under the plugin's limits.
pub async fn filter(
    plugin: &WorldPlugin,
    dictionary: Dictionary,
    rules: Vec<Rule>,
    lines: Vec<String>,
) -> Outcome<(Vec<Verdict>, Stats)> {
    plugin
        .call(dictionary, move |store, instance| -> CallFuture<'_, _> {
            Box::pin(async move {
                let bindings = TextFilter::new(&mut *store, instance)?;
                let pipeline = bindings.example_filters_filter().pipeline();
                let handle = pipeline.call_constructor(&mut *store, &rules).await?;
                let mut verdicts = Vec::new();
                for line in &lines {
                    verdicts.push(pipeline.call_judge(&mut *store, handle, line).await?);
                }
                let stats = pipeline.call_stats(&mut *store, handle).await?;
                handle.resource_drop_async(&mut *store).await?;
                Ok((verdicts, stats))
            })
        })
        .await
}
