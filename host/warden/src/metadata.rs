//! What a plugin says about itself, in one shape for both world versions.

use crate::bindings::v0_2::warden::plugin::types as v0_2;
use crate::bindings::warden::plugin::types as v0_1;

/// What a plugin says about itself, from its `init`.
///
/// A 0.1 plugin gives names of actions only; a 0.2 plugin describes each
/// action and may name its authors, licence and homepage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// Short, stable name of the plugin, e.g. `hello`.
    pub name: String,
    /// Version of the plugin, preferably semver.
    pub version: String,
    /// One line saying what the plugin does.
    pub description: String,
    /// The names of the actions it offers, in its order; empty means a
    /// single unnamed action.
    pub actions: Vec<String>,
    /// Each action of [`Metadata::actions`], described: for a 0.1 plugin,
    /// the names alone.
    pub action_details: Vec<ActionDetails>,
    /// Who wrote it (0.2 plugins; empty otherwise).
    pub authors: Vec<String>,
    /// Its licence as an SPDX expression (0.2 plugins).
    pub license: Option<String>,
    /// Where to read more about it (0.2 plugins).
    pub homepage: Option<String>,
}

/// One action a plugin offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActionDetails {
    /// What `execute` is called with.
    pub name: String,
    /// One line saying what it does; empty when the plugin did not say.
    pub description: String,
    /// The media type of the input it expects, e.g. `text/plain`; empty for
    /// opaque bytes (and for 0.1 plugins).
    pub input_type: String,
    /// The media type of its output; empty for opaque bytes.
    pub output_type: String,
}

impl From<v0_1::Metadata> for Metadata {
    fn from(metadata: v0_1::Metadata) -> Self {
        let action_details = metadata
            .actions
            .iter()
            .map(|name| ActionDetails {
                name: name.clone(),
                ..ActionDetails::default()
            })
            .collect();
        Metadata {
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
            actions: metadata.actions,
            action_details,
            authors: Vec::new(),
            license: None,
            homepage: None,
        }
    }
}

impl From<v0_2::Metadata> for Metadata {
    fn from(metadata: v0_2::Metadata) -> Self {
        let action_details: Vec<ActionDetails> = metadata
            .actions
            .into_iter()
            .map(|action| ActionDetails {
                name: action.name,
                description: action.description,
                input_type: action.input_type,
                output_type: action.output_type,
            })
            .collect();
        Metadata {
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
            actions: action_details
                .iter()
                .map(|action| action.name.clone())
                .collect(),
            action_details,
            authors: metadata.authors,
            license: metadata.license,
            homepage: metadata.homepage,
        }
    }
}

impl From<v0_2::PluginError> for v0_1::PluginError {
    fn from(err: v0_2::PluginError) -> Self {
        match err {
            v0_2::PluginError::InvalidInput(text) => v0_1::PluginError::InvalidInput(text),
            v0_2::PluginError::UnknownAction(text) => v0_1::PluginError::UnknownAction(text),
            v0_2::PluginError::Failed(text) => v0_1::PluginError::Failed(text),
        }
    }
}
