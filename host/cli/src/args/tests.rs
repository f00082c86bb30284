use std::time::Duration;

use clap::CommandFactory;
use warden::trust::{SignerPolicy, UnsignedPolicy};
use warden::{KvGrant, Preopen, Source};

use super::*;

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn run_args(extra: &[&str]) -> RunArgs {
    let cli = Cli::try_parse_from(["warden", "run", "p.wasm", "echo"].iter().chain(extra)).unwrap();
    match cli.command {
        Command::Run(args) => args,
        other => panic!("expected run, got {other:?}"),
    }
}

#[test]
fn limits_and_grants_parse() {
    let args = run_args(&[
        "--timeout",
        "300ms",
        "--memory",
        "32M",
        "--dir",
        "/tmp::/data:rw",
        "--env",
        "A=1",
        "--allow-http",
        "https://*.example.com",
        "--config",
        "k=v",
        "--allow-tcp",
        "127.0.0.1:6379",
        "--allow-tcp-listen",
        "127.0.0.1:8081",
        "--kv-store",
        "/tmp/kv.sqlite",
        "--strict",
        "--deterministic",
    ]);
    let target = args.sandbox.resolve(&args.plugin).unwrap();
    assert_eq!(target.name, "p");
    let sandbox = target.sandbox;
    assert_eq!(sandbox.limits.timeout, Duration::from_millis(300));
    assert_eq!(sandbox.limits.memory_bytes, 32 << 20);
    assert_eq!(
        sandbox.grants.dirs,
        vec![Preopen::read_write("/tmp", "/data")]
    );
    assert_eq!(sandbox.grants.env, vec![("A".to_owned(), "1".to_owned())]);
    assert_eq!(sandbox.grants.http.allow.len(), 1);
    assert_eq!(sandbox.grants.config["k"], "v");
    assert_eq!(sandbox.grants.tcp.len(), 1);
    assert_eq!(
        sandbox.grants.tcp_listen,
        ["127.0.0.1:8081".parse().unwrap()]
    );
    assert_eq!(sandbox.grants.kv, Some(KvGrant::at("/tmp/kv.sqlite")));
    assert!(sandbox.strict && sandbox.grants.deterministic);
}

#[test]
fn kv_store_takes_a_file_or_a_redis_url() {
    for (store, expected) in [
        (
            "redis://127.0.0.1:6379/0",
            KvGrant::redis("redis://127.0.0.1:6379/0"),
        ),
        (
            "rediss://cache.internal",
            KvGrant::redis("rediss://cache.internal"),
        ),
        ("state/kv.sqlite", KvGrant::at("state/kv.sqlite")),
    ] {
        let args = run_args(&["--kv-store", store]);
        let sandbox = args.sandbox.resolve(&args.plugin).unwrap().sandbox;
        assert_eq!(sandbox.grants.kv, Some(expected), "{store}");
    }
}

#[test]
fn signed_by_trusted_implies_deny_and_refuses_allow_or_warn() {
    for unsigned in ["allow", "warn"] {
        let args = [
            "warden",
            "run",
            "p.wasm",
            "--signed-by",
            "trusted",
            "--unsigned",
            unsigned,
        ];
        let err = Cli::try_parse_checked_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{unsigned}");
        assert!(
            err.to_string().contains("contradicts --signed-by trusted"),
            "{err}"
        );
    }
    // A store path that does not exist: nothing is read from $HOME.
    let no_store = ["--trust-store", "/nonexistent/trust.toml"];
    for extra in [
        &["--signed-by", "trusted"][..],
        &["--signed-by", "trusted", "--unsigned", "deny"],
    ] {
        let args = run_args(&[extra, &no_store[..]].concat());
        let trust = args.sandbox.resolve(&args.plugin).unwrap().sandbox.trust;
        assert_eq!(
            (trust.signed_by, trust.unsigned),
            (SignerPolicy::Trusted, UnsignedPolicy::Deny),
            "{extra:?}"
        );
    }
}

#[test]
fn host_memory_and_the_kv_namespace_are_the_operators() {
    let args = run_args(&[
        "--host-memory",
        "8MiB",
        "--kv-store",
        "/tmp/kv.sqlite",
        "--kv-namespace",
        "wallet",
    ]);
    let target = args.sandbox.resolve(&args.plugin).unwrap();
    assert_eq!(target.sandbox.limits.host_memory_bytes, 8 << 20);
    let source = Source::new("p", b"\0asm".to_vec());
    let runtime = warden::Runtime::builder()
        .no_compile_cache()
        .build()
        .unwrap();
    let kv = target
        .sandbox_for(&source, &runtime)
        .unwrap()
        .grants
        .kv
        .unwrap();
    assert_eq!(kv.namespace.as_deref(), Some("wallet"));

    // Unnamed, a plugin file's namespace comes from what it is.
    let args = run_args(&["--kv-store", "/tmp/kv.sqlite"]);
    let target = args.sandbox.resolve(&args.plugin).unwrap();
    let namespace = |bytes: &[u8]| {
        let source = Source::new("p", bytes.to_vec());
        target
            .sandbox_for(&source, &runtime)
            .unwrap()
            .grants
            .kv
            .unwrap()
            .namespace
            .unwrap()
    };
    assert!(namespace(b"one").starts_with("p@sha256:"));
    assert_eq!(namespace(b"one").len(), "p@sha256:".len() + 16);
    assert_ne!(namespace(b"one"), namespace(b"two"));

    let args = run_args(&["--kv-namespace", "wallet"]);
    let err = args.sandbox.resolve(&args.plugin).err().unwrap();
    assert!(format!("{err:#}").contains("--kv-namespace needs a kv grant"));
}

#[test]
fn stream_limits_parse_and_default_as_the_library_says() {
    let args = run_args(&[
        "--max-stream-input",
        "1GiB",
        "--max-stream-output",
        "64K",
        "--stream-idle-timeout",
        "1m30s",
        "--no-stream",
    ]);
    assert!(args.no_stream);
    let limits = args.sandbox.resolve(&args.plugin).unwrap().sandbox.limits;
    assert_eq!(limits.max_stream_input_bytes, 1 << 30);
    assert_eq!(limits.max_stream_output_bytes, 64 << 10);
    assert_eq!(limits.stream_idle_timeout, Duration::from_secs(90));

    let args = run_args(&[]);
    assert!(!args.no_stream);
    let limits = args.sandbox.resolve(&args.plugin).unwrap().sandbox.limits;
    let defaults = warden::Limits::default();
    assert_eq!(
        (
            limits.max_stream_input_bytes,
            limits.max_stream_output_bytes,
            limits.stream_idle_timeout
        ),
        (4 << 30, 4 << 30, Duration::from_secs(10)),
    );
    assert_eq!(limits, defaults);
}

#[test]
fn bad_values_are_usage_errors() {
    for bad in [
        &["--timeout", "5"][..],
        &["--memory", "lots"],
        &["--dir", "/tmp"],
        &["--env", "=NOKEY"],
        &["--config", "NOVALUE"],
        &["--allow-http", "example.com"],
        &["--allow-tcp", "localhost"],
        &["--stream-idle-timeout", "0s"],
        &["--stream-idle-timeout", "10"],
        &["--max-stream-input", "lots"],
        &["--max-stream-output", "-1"],
    ] {
        let err = Cli::try_parse_from(["warden", "run", "p.wasm"].iter().chain(bad)).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}
