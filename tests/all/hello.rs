//! The `hello` plugin end to end through the library: outputs, logs, stdout,
//! metadata and the report.

use warden::{Error, LogLevel, PluginError};
use warden_tests::guests;

use crate::{fuel_runtime, hello, runtime};

#[tokio::test]
async fn count_vowels_counts_ascii_vowels_in_either_case() {
    let plugin = hello(&runtime()).await;
    for (input, expected) in [
        (&b"hello world"[..], &b"3"[..]),
        (b"AEIOU aeiou", b"10"),
        (b"", b"0"),
        (b"rhythm", b"0"),
        ("héllo wörld ünïcode".as_bytes(), b"3"),
    ] {
        let output = plugin.execute("count-vowels", input).await.result.unwrap();
        assert_eq!(
            output,
            expected,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[tokio::test]
async fn echo_returns_arbitrary_bytes_unchanged() {
    let plugin = hello(&runtime()).await;
    let input: Vec<u8> = (0..=255).collect();
    assert_eq!(plugin.execute("echo", &input).await.result.unwrap(), input);
    assert_eq!(plugin.execute("echo", b"").await.result.unwrap(), b"");
}

#[tokio::test]
async fn greet_logs_and_prints() {
    let plugin = hello(&runtime()).await;
    let outcome = plugin.execute("greet", "Zoë".as_bytes()).await;
    assert_eq!(outcome.result.unwrap(), "Hello, Zoë!".as_bytes());
    assert_eq!(outcome.report.stdout.bytes, "Hello, Zoë!\n".as_bytes());
    assert_eq!(outcome.report.logs.len(), 1);
    let record = &outcome.report.logs[0];
    assert_eq!(record.level, LogLevel::Info);
    assert_eq!(record.context, "greet");
    assert_eq!(record.message, "greeted Zoë");

    let outcome = plugin.execute("greet", b"").await;
    assert_eq!(outcome.result.unwrap(), b"Hello, world!");
}

#[tokio::test]
async fn plugin_errors_come_back_typed() {
    let plugin = hello(&runtime()).await;
    let err = plugin.execute("shout", b"hi").await.result.unwrap_err();
    assert!(
        matches!(&err, Error::Plugin(PluginError::UnknownAction(action)) if action == "shout"),
        "{err:?}"
    );
    let err = plugin
        .execute("greet", &[0xff, 0xfe])
        .await
        .result
        .unwrap_err();
    assert!(
        matches!(&err, Error::Plugin(PluginError::InvalidInput(why)) if why.contains("UTF-8")),
        "{err:?}"
    );
    assert_eq!(err.kind().as_str(), "plugin-error");
}

#[tokio::test]
async fn metadata_and_component_facts() {
    let plugin = hello(&runtime()).await;
    let metadata = plugin.metadata().await.unwrap();
    assert_eq!(metadata.name, "hello");
    assert_eq!(metadata.actions, ["count-vowels", "echo", "greet"]);
    let info = plugin.info();
    let bytes = warden_tests::guest_bytes(guests::HELLO);
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.sha256.len(), 64);
    assert!(
        info.exports
            .iter()
            .any(|name| name == warden::GUEST_INTERFACE)
    );
    assert!(
        info.imports
            .iter()
            .any(|name| name == "wasi:logging/logging@0.1.0-draft")
    );
}

#[tokio::test]
async fn reports_measure_every_call() {
    let plugin = hello(&runtime()).await;
    let report = plugin.execute("count-vowels", b"hello").await.report;
    assert!(report.duration > std::time::Duration::ZERO);
    assert!(report.peak_memory_bytes >= 64 << 10);
    assert_eq!(report.fuel_consumed, None, "fuel is off by default");

    let plugin = hello(&fuel_runtime()).await;
    let small = plugin.execute("count-vowels", b"hello").await.report;
    let large = plugin.execute("count-vowels", &[b'a'; 10_000]).await.report;
    let small_fuel = small.fuel_consumed.expect("fuel is metered");
    assert!(small_fuel > 0);
    assert!(large.fuel_consumed.unwrap() > small_fuel);
}

/// Warden's own generated bindings, public in `warden::bindings`, call
/// `init` and `execute` with typed values through a [`warden::World`].
#[tokio::test]
async fn the_typed_bindings_call_init_and_execute() {
    let runtime = runtime();
    let world = warden::World::new(&runtime);
    let plugin = runtime
        .load_world(
            warden::Source::new("hello", warden_tests::guest_bytes(guests::HELLO)),
            warden::Sandbox::default(),
            &world,
        )
        .await
        .unwrap();
    let outcome = plugin
        .call((), |store, instance| -> warden::CallFuture<'_, _> {
            Box::pin(async move {
                let bindings = warden::bindings::Plugin::new(&mut *store, instance)?;
                let guest = bindings.warden_plugin_guest();
                let metadata = guest.call_init(&mut *store).await?;
                let counted = guest
                    .call_execute(&mut *store, "count-vowels", b"typed")
                    .await?;
                let unknown = guest.call_execute(&mut *store, "shout", b"").await?;
                Ok((metadata, counted, unknown))
            })
        })
        .await;
    let (metadata, counted, unknown) = outcome.result.unwrap();
    assert_eq!(metadata.unwrap().name, "hello");
    assert_eq!(counted.unwrap(), b"1");
    assert!(matches!(unknown, Err(PluginError::UnknownAction(action)) if action == "shout"));
}
