//! `warden inspect`: what a plugin is, from its component and its `init`.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value, json};
use warden::units::format_bytes;
use warden::{Error, Metadata, Plugin, Report};

use crate::args::ComponentArgs;
use crate::exit;
use crate::load;
use crate::output;

/// `warden inspect`: loads the plugin, runs its `init` and prints what it is.
pub async fn inspect(args: ComponentArgs) -> anyhow::Result<ExitCode> {
    let target = args.sandbox.resolve(&args.plugin)?;
    let plugin = match load::plugin(&target, &args.sandbox).await {
        Ok(plugin) => plugin,
        Err(err) => {
            if args.json {
                let mut object = Map::new();
                object.insert("status".into(), err.kind().as_str().into());
                object.insert("plugin".into(), target.name.into());
                object.insert("error".into(), err.to_string().into());
                if let Error::Untrusted { signatures, .. } = &err {
                    object.insert("signatures".into(), output::signatures_json(signatures));
                }
                output::print_json(&Value::Object(object)).context("writing the report")?;
            } else {
                output::print_error(&err);
            }
            return Ok(ExitCode::from(exit::for_kind(err.kind())));
        }
    };
    // `init` runs guest code, so it runs in the same sandbox as any call.
    let outcome = plugin.instantiate().await;
    let result = outcome.result.map(|instance| instance.metadata().clone());
    if args.json {
        print_json(&plugin, &result, &outcome.report)?;
    } else {
        print_text(&plugin, &result);
        if let Err(err) = &result {
            output::print_human_report(Some(err), &outcome.report);
        }
    }
    Ok(exit::code(&result))
}

fn status<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.kind().as_str(),
    }
}

fn error_text<T>(result: &Result<T, Error>) -> Value {
    match result {
        Ok(_) => Value::Null,
        Err(err) => err.to_string().into(),
    }
}

/// The namespace the plugin's kv keys live in, when it is granted kv: what
/// an operator gives `warden kv --namespace`.
fn kv_namespace(plugin: &Plugin) -> Option<String> {
    let kv = plugin.sandbox().grants.kv.as_ref()?;
    Some(
        kv.namespace
            .clone()
            .unwrap_or_else(|| plugin.name().to_owned()),
    )
}

/// The optional interfaces of world 0.2 the plugin exports: `streaming`
/// (`execute-stream`) and `lifecycle` (`shutdown`).
fn interfaces(plugin: &Plugin) -> Vec<&'static str> {
    [
        ("streaming", plugin.streams()),
        ("lifecycle", plugin.has_lifecycle()),
    ]
    .into_iter()
    .filter_map(|(name, exported)| exported.then_some(name))
    .collect()
}

/// The lines of text for what a 0.2 plugin says beyond its actions' names:
/// each action described, with its input and output media types (`bytes`
/// when it names none), its authors, licence and homepage. Empty for a
/// plugin that says none of it (every 0.1 plugin).
fn described(metadata: &Metadata) -> String {
    let mut text = String::new();
    let details = &metadata.action_details;
    if details.iter().any(|action| {
        !(action.description.is_empty()
            && action.input_type.is_empty()
            && action.output_type.is_empty())
    }) {
        let width = details.iter().map(|action| action.name.len()).max();
        let media = |media_type: &str| match media_type {
            "" => "bytes".to_owned(),
            named => named.to_owned(),
        };
        for action in details {
            text.push_str(&format!(
                "  {:<width$}  {} → {}  {}\n",
                action.name,
                media(&action.input_type),
                media(&action.output_type),
                action.description,
                width = width.unwrap_or_default()
            ));
        }
    }
    if !metadata.authors.is_empty() {
        text.push_str(&format!("authors: {}\n", metadata.authors.join(", ")));
    }
    for (label, value) in [
        ("license", &metadata.license),
        ("homepage", &metadata.homepage),
    ] {
        if let Some(value) = value {
            text.push_str(&format!("{label}: {value}\n"));
        }
    }
    text
}

fn print_json(
    plugin: &Plugin,
    result: &Result<Metadata, Error>,
    report: &Report,
) -> anyhow::Result<()> {
    let info = plugin.info();
    let mut object = Map::new();
    object.insert("status".into(), status(result).into());
    object.insert("plugin".into(), plugin.name().into());
    object.insert("size".into(), info.size.into());
    object.insert("sha256".into(), info.sha256.clone().into());
    object.insert("imports".into(), info.imports.clone().into());
    object.insert("exports".into(), info.exports.clone().into());
    object.insert(
        "capabilities".into(),
        output::capabilities_json(plugin.capabilities()),
    );
    object.insert(
        "signatures".into(),
        output::signatures_json(&info.trust.signatures),
    );
    object.insert("trusted".into(), info.trust.trusted.into());
    object.insert("kv_namespace".into(), kv_namespace(plugin).into());
    object.insert(
        "world_version".into(),
        plugin.world_version().as_str().into(),
    );
    object.insert("interfaces".into(), interfaces(plugin).into());
    let metadata = match result {
        Ok(metadata) => json!({
            "name": metadata.name,
            "version": metadata.version,
            "description": metadata.description,
            "actions": metadata.actions,
            "action_details": metadata.action_details.iter().map(|action| json!({
                "name": action.name,
                "description": action.description,
                "input_type": action.input_type,
                "output_type": action.output_type,
            })).collect::<Vec<_>>(),
            "authors": metadata.authors,
            "license": metadata.license,
            "homepage": metadata.homepage,
        }),
        Err(_) => Value::Null,
    };
    object.insert("metadata".into(), metadata);
    object.insert("error".into(), error_text(result));
    output::report_fields(&mut object, report);
    output::print_json(&Value::Object(object)).context("writing the report")
}

fn print_text(plugin: &Plugin, result: &Result<Metadata, Error>) {
    let info = plugin.info();
    if let Ok(metadata) = result {
        // The plugin wrote its metadata: on a terminal it is shown escaped.
        let actions = if metadata.actions.is_empty() {
            "(one unnamed action)".to_owned()
        } else {
            metadata.actions.join(", ")
        };
        output::print_guest_text(&format!(
            "{} {}: {}\nactions: {actions}\n{}",
            metadata.name,
            metadata.version,
            metadata.description,
            described(metadata)
        ));
    } else {
        println!("{}: init failed, metadata unavailable", plugin.name());
    }
    let interfaces = interfaces(plugin);
    let interfaces = if interfaces.is_empty() {
        String::new()
    } else {
        format!(" ({})", interfaces.join(", "))
    };
    println!("world:   {}{interfaces}", plugin.world_version().as_str());
    println!("capabilities:");
    for capability in plugin.capabilities() {
        let status = if capability.granted {
            "granted".to_owned()
        } else {
            format!("not granted ({})", capability.how_to_grant)
        };
        println!(
            "  {:<8} {:<7} {status}",
            capability.name,
            capability.risk.as_str()
        );
    }
    println!("signatures:");
    if info.trust.signatures.is_empty() {
        println!("  (unsigned)");
    }
    for signature in &info.trust.signatures {
        println!("  {}", output::describe_signature(signature));
    }
    if let Some(namespace) = kv_namespace(plugin) {
        println!("kv namespace: {namespace}");
    }
    println!("size:    {} ({} bytes)", format_bytes(info.size), info.size);
    println!("sha256:  {}", info.sha256);
    println!("imports:");
    for name in &info.imports {
        println!("  {name}");
    }
    println!("exports:");
    for name in &info.exports {
        println!("  {name}");
    }
}
