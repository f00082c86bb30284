//! `warden serve`: one plugin file, or every plugin of a manifest, over
//! HTTP, with `warden_serve::Server`. This module installs the server's
//! JSON-lines log, turns the flags and the manifest's `[serve]` table into
//! a `ServerConfig`, loads the plugins, and maps what happens to exit codes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;
use warden::{Manifest, Registry, ServeSettings};
use warden_serve::{ConnectionLimits, Server, ServerConfig};

use crate::args::{ListenAddr, SandboxArgs, ServeArgs};
use crate::exit;
use crate::output;

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let log = tracing_subscriber::registry().with(warden_serve::log::json_lines());
    tracing::subscriber::set_global_default(log).context("installing the server's log")?;
    let addr = args.addr.clone();
    let (config, loaded) = match args.manifest.clone() {
        Some(path) => {
            let manifest = Manifest::from_file(&path)?;
            let config = server_config(&args, &manifest.serve)?;
            (config, load_manifest(&args, &manifest, &path).await?)
        }
        None => {
            let config = server_config(&args, &ServeSettings::default())?;
            (config, load_plugin(args).await?)
        }
    };
    // A replica with a plugin that does not load must not become ready.
    let registry = match loaded {
        Ok(registry) => registry,
        Err(code) => return Ok(code),
    };

    let listener = bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    Server::new(registry, config)
        .run(listener, terminated())
        .await
        .context("reading the bound address")?;
    Ok(ExitCode::SUCCESS)
}

/// The registry serving every plugin of `manifest` (read from `path`), or,
/// when one did not load, the exit code of its error (the failures are
/// printed).
async fn load_manifest(
    args: &ServeArgs,
    manifest: &Manifest,
    path: &Path,
) -> anyhow::Result<Result<Registry, ExitCode>> {
    anyhow::ensure!(
        !manifest.plugins.is_empty(),
        "{} declares no plugins; add a [plugins.NAME] table",
        path.display()
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
    let registry = Registry::new(builder.build()?);
    let loaded = registry.load_manifest(path).await?;
    if let Some((name, err)) = loaded.failed.first() {
        for (name, err) in &loaded.failed {
            print_not_loaded(name, err);
        }
        eprintln!(
            "warden: not serving: {} of {} plugins failed to load (first: `{name}`)",
            loaded.failed.len(),
            manifest.plugins.len()
        );
        return Ok(Err(ExitCode::from(exit::for_kind(err.kind()))));
    }
    log_unverified(&registry, &loaded.loaded);
    Ok(Ok(registry))
}

/// The registry serving the one plugin file `args` names, under its file's
/// stem, in the sandbox its flags give; or, when it did not load, the exit
/// code of its error (printed).
async fn load_plugin(args: ServeArgs) -> anyhow::Result<Result<Registry, ExitCode>> {
    let Some(component) = args.plugin else {
        anyhow::bail!("name a plugin (warden serve PLUGIN.wasm) or a manifest (--manifest PATH)");
    };
    // The registry reads the signature beside the plugin, and watches it.
    anyhow::ensure!(
        args.trust.keys.signature.is_none(),
        "warden serve reads a plugin's detached signature from PLUGIN.wasm.sig beside it, and \
         reloads when it changes; put the signature there instead of naming it with --signature"
    );
    let sandbox_args = SandboxArgs {
        manifest: None,
        limits: args.limits,
        grants: args.grants,
        strict: args.strict,
        trust: args.trust,
        cache_dir: args.cache_dir,
        no_cache: args.no_cache,
        cache_key: args.cache_key,
    };
    let target = sandbox_args.resolve(&component)?;
    let not_loaded = |err: warden::Error| {
        print_not_loaded(&target.name, &err);
        Ok(Err(ExitCode::from(exit::for_kind(err.kind()))))
    };
    // Read once for what the sandbox derives from the component (a kv
    // namespace named after its signer or hash), which later versions the
    // server reloads keep.
    let source = match sandbox_args.trust.keys.source(&target.path).await {
        Ok(source) => source,
        Err(err) => return not_loaded(err),
    };
    let runtime = sandbox_args.runtime(&target.sandbox)?;
    let sandbox = match target.sandbox_for(&source, &runtime) {
        Ok(sandbox) => sandbox,
        Err(err) => return not_loaded(err),
    };
    let registry = Registry::new(runtime);
    if let Err(err) = registry
        .load_file(&target.name, &target.path, sandbox)
        .await
    {
        return not_loaded(err);
    }
    log_unverified(&registry, std::slice::from_ref(&target.name));
    Ok(Ok(registry))
}

fn print_not_loaded(name: &str, err: &warden::Error) {
    // A load error may quote the plugin's text.
    output::print_guest_line(&format!("warden: plugin `{name}` did not load: {err}"));
}

/// Listens on `addr`; a host name is resolved, and the first of its
/// addresses that can be bound is used.
async fn bind(addr: &ListenAddr) -> std::io::Result<TcpListener> {
    match addr {
        ListenAddr::Ip(addr) => TcpListener::bind(addr).await,
        ListenAddr::Host(host, port) => TcpListener::bind((host.as_str(), *port)).await,
    }
}

/// The server's bounds: each flag, else the manifest's `[serve]` setting,
/// else its default. The flags refuse zero when they are parsed, and the
/// manifest its zero durations; a count or size of zero in the table would
/// refuse everything, so it is refused here.
fn server_config(args: &ServeArgs, settings: &ServeSettings) -> anyhow::Result<ServerConfig> {
    let table = || {
        let manifest = args
            .manifest
            .as_deref()
            .unwrap_or(Path::new("the manifest"));
        format!("the [serve] table of {}", manifest.display())
    };
    let connection_limits = connection_limits(args, settings);
    let max_connections = args
        .max_connections
        .or(settings.max_connections)
        .unwrap_or(ServeSettings::DEFAULT_MAX_CONNECTIONS);
    anyhow::ensure!(
        max_connections > 0,
        "max_connections in {} must be at least 1",
        table()
    );
    let max_body_memory = args
        .max_body_memory
        .or(settings.max_body_memory)
        .unwrap_or(ServeSettings::DEFAULT_MAX_BODY_MEMORY);
    anyhow::ensure!(
        max_body_memory > 0,
        "max_body_memory in {} must be at least 1 byte",
        table()
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
                message = format!("serving an unverified plugin ({reason}); see `warden sign`, --unsigned and the manifest's [trust] table"),
            );
        }
    }
}

/// The connection bounds: each flag, else the manifest's `[serve]`
/// setting, else its default. Both refuse zero when they are parsed.
fn connection_limits(args: &ServeArgs, settings: &ServeSettings) -> ConnectionLimits {
    ConnectionLimits {
        header_read: args
            .header_read_timeout
            .or(settings.header_read_timeout)
            .unwrap_or(ServeSettings::DEFAULT_HEADER_READ_TIMEOUT),
        idle: args
            .idle_timeout
            .or(settings.idle_timeout)
            .unwrap_or(ServeSettings::DEFAULT_IDLE_TIMEOUT),
        write: args
            .write_timeout
            .or(settings.write_timeout)
            .unwrap_or(ServeSettings::DEFAULT_WRITE_TIMEOUT),
    }
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
