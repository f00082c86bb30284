//! `warden serve`: every plugin of a manifest over HTTP, with
//! `warden_serve::Server`. This module installs the server's JSON-lines
//! log, turns the flags and the manifest's `[serve]` table into a
//! `ServerConfig`, loads the plugins, and maps what happens to exit codes.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;
use warden::{Manifest, Registry, ServeSettings};
use warden_serve::{ConnectionLimits, Server, ServerConfig};

use crate::args::ServeArgs;
use crate::exit;
use crate::output;

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let log = tracing_subscriber::registry().with(warden_serve::log::json_lines());
    tracing::subscriber::set_global_default(log).context("installing the server's log")?;
    let manifest = Manifest::from_file(&args.manifest)?;
    anyhow::ensure!(
        !manifest.plugins.is_empty(),
        "{} declares no plugins; add a [plugins.NAME] table",
        args.manifest.display()
    );
    let mut builder = warden::Runtime::builder();
    // Fuel metering is engine-wide: on when any plugin has a fuel limit.
    builder.fuel(
        manifest
            .plugins
            .values()
            .any(|entry| entry.sandbox.limits.fuel.is_some()),
    );
    if let Some(dir) = &args.cache_dir {
        builder.compile_cache(dir);
    }
    if let Some(key) = &args.cache_key {
        builder.compile_cache_key(key);
    }
    if args.no_cache {
        builder.no_compile_cache();
    }
    let config = server_config(&args, &manifest.serve)?;
    let registry = Registry::new(builder.build()?);

    // A replica with a plugin that does not load must not become ready.
    let loaded = registry.load_manifest(&args.manifest).await?;
    if let Some((name, err)) = loaded.failed.first() {
        for (name, err) in &loaded.failed {
            output::print_guest_line(&format!("warden: plugin `{name}` did not load: {err}"));
        }
        eprintln!(
            "warden: not serving: {} of {} plugins failed to load (first: `{name}`)",
            loaded.failed.len(),
            manifest.plugins.len()
        );
        return Ok(ExitCode::from(exit::for_kind(err.kind())));
    }
    log_unverified(&registry, &loaded.loaded);

    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    Server::new(registry, config)
        .run(listener, terminated())
        .await
        .context("reading the bound address")?;
    Ok(ExitCode::SUCCESS)
}

/// The server's bounds: each flag, else the manifest's `[serve]` setting,
/// else its default. A bound of zero would refuse everything, so it is
/// refused.
fn server_config(args: &ServeArgs, settings: &ServeSettings) -> anyhow::Result<ServerConfig> {
    let connection_limits = connection_limits(args, settings)?;
    let max_connections = args
        .max_connections
        .or(settings.max_connections)
        .unwrap_or(ServeSettings::DEFAULT_MAX_CONNECTIONS);
    anyhow::ensure!(
        max_connections > 0,
        "max_connections in [serve] of {} must be at least 1",
        args.manifest.display()
    );
    let max_body_memory = args
        .max_body_memory
        .or(settings.max_body_memory)
        .unwrap_or(ServeSettings::DEFAULT_MAX_BODY_MEMORY);
    anyhow::ensure!(
        max_body_memory > 0,
        "max_body_memory in [serve] of {} must be at least 1 byte",
        args.manifest.display()
    );
    Ok(ServerConfig {
        max_concurrent: args.max_concurrent as usize,
        max_queue: args.max_queue.map(|queue| queue as usize),
        max_connections,
        max_body_memory,
        request_timeout: args.request_timeout,
        shutdown_grace: args.shutdown_grace,
        watch_interval: (!args.no_watch).then_some(args.watch_interval),
        access_log: !args.no_access_log,
        connection_limits,
    })
}

/// Logs an `unverified-plugin` event for each of `loaded` that serves
/// without a verified signature.
fn log_unverified(registry: &Registry, loaded: &[String]) {
    for name in loaded {
        if let Some(plugin) = registry.get(name)
            && let Some(reason) = output::unverified_warning(plugin.info(), plugin.sandbox())
        {
            tracing::warn!(
                target: warden_serve::log::TARGET,
                event = "unverified-plugin",
                plugin = name.as_str(),
                message = format!("serving an unverified plugin ({reason}); see `warden sign` and the manifest's [trust] table"),
            );
        }
    }
}

/// The connection bounds: each flag, else the manifest's `[serve]`
/// setting, else its default. Zero would close every connection at once,
/// so it is refused.
fn connection_limits(
    args: &ServeArgs,
    settings: &ServeSettings,
) -> anyhow::Result<ConnectionLimits> {
    let resolve = |flag: Option<Duration>, setting: Option<Duration>, default, name: &str| {
        let value = flag.or(setting).unwrap_or(default);
        anyhow::ensure!(
            !value.is_zero(),
            "--{} (or {} in the manifest's [serve] table) must be longer than zero",
            name.replace('_', "-"),
            name
        );
        Ok(value)
    };
    Ok(ConnectionLimits {
        header_read: resolve(
            args.header_read_timeout,
            settings.header_read_timeout,
            ServeSettings::DEFAULT_HEADER_READ_TIMEOUT,
            "header_read_timeout",
        )?,
        idle: resolve(
            args.idle_timeout,
            settings.idle_timeout,
            ServeSettings::DEFAULT_IDLE_TIMEOUT,
            "idle_timeout",
        )?,
        write: resolve(
            args.write_timeout,
            settings.write_timeout,
            ServeSettings::DEFAULT_WRITE_TIMEOUT,
            "write_timeout",
        )?,
    })
}

/// Resolves on SIGTERM or SIGINT, with the signal's name.
async fn terminated() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "SIGINT",
                _ = terminate.recv() => return "SIGTERM",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}
