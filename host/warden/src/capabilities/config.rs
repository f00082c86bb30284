//! The `config` capability: `wasi:config/store`, answering from the values
//! the host configured for the plugin (`--config KEY=VALUE`, the manifest's
//! `[plugins.NAME.config]` table, or [`Grants::config`](crate::Grants::config)).
//! A plugin with no values configured is not granted the capability: its
//! reads fail with an `upstream` error that says so, recorded as a denial.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, DenialLog, InstanceSetup, Risk};
use crate::bindings::wasi::config::store::{self, Error};
use crate::grants::Sandbox;
use crate::host_memory::truncate_record_text;
use crate::state::HostState;

/// The `config` capability.
pub(crate) struct Config;

impl Capability for Config {
    const NAME: &'static str = "config";
    const INTERFACES: &'static [&'static str] = &["wasi:config/store"];
    const HOW_TO_GRANT: &'static str =
        "--config KEY=VALUE, or the plugin's [config] table in a manifest";
    type Shared = Arc<BTreeMap<String, String>>;
    type State = ConfigState;

    fn risk(_: &Sandbox) -> Risk {
        Risk::Low
    }

    fn granted(sandbox: &Sandbox) -> bool {
        !sandbox.grants.config.is_empty()
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        store::add_to_linker::<HostState, HasSelf<ConfigState>>(linker, |state| {
            &mut state.caps.config
        })
    }

    fn prepare(_: &str, sandbox: &Sandbox) -> Result<Self::Shared, crate::error::Error> {
        Ok(Arc::new(sandbox.grants.config.clone()))
    }

    fn instantiate(values: &Self::Shared, setup: &mut InstanceSetup<'_>) -> ConfigState {
        ConfigState {
            values: values.clone(),
            denials: setup.denials.clone(),
        }
    }
}

/// The configuration values one instance sees.
#[derive(Debug)]
pub(crate) struct ConfigState {
    values: Arc<BTreeMap<String, String>>,
    denials: DenialLog,
}

impl ConfigState {
    fn granted(&self, request: impl FnOnce() -> String) -> Result<(), Error> {
        if self.values.is_empty() {
            self.denials.record("config", request());
            return Err(Error::Upstream(
                "the config capability is not granted to this plugin".into(),
            ));
        }
        Ok(())
    }
}

impl store::Host for ConfigState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(self
            .granted(|| format!("reading `{}`", truncate_record_text(&key)))
            .map(|()| self.values.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(self.granted(|| "reading every value".into()).map(|()| {
            self.values
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }))
    }
}
