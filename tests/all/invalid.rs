//! Things that are not Warden plugins are refused with a message that says
//! what they are.

use warden::{Error, ErrorKind, Sandbox, Source};
use warden_tests::{guest_bytes, guests};

use crate::{assert_runtime_serves, runtime};

async fn refusal(bytes: Vec<u8>) -> String {
    let runtime = runtime();
    let err = runtime
        .load(Source::new("candidate", bytes), Sandbox::default())
        .await
        .err()
        .expect("the runtime must refuse this");
    assert_eq!(err.kind(), ErrorKind::InvalidPlugin, "{err:?}");
    assert_runtime_serves(&runtime).await;
    err.to_string()
}

#[tokio::test]
async fn random_bytes_are_not_webassembly() {
    let why = refusal(b"#!/bin/sh\necho definitely not wasm\n".to_vec()).await;
    assert!(why.contains("not a WebAssembly binary"), "{why}");
    let why = refusal(Vec::new()).await;
    assert!(why.contains("not a WebAssembly binary"), "{why}");
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    let module = wat::parse_str("(module (func (export \"run\")))").unwrap();
    let why = refusal(module).await;
    assert!(why.contains("core WebAssembly module"), "{why}");
    assert!(why.contains("wasm32-wasip2"), "{why}");
}

#[tokio::test]
async fn a_wasi_command_is_not_a_plugin() {
    let why = refusal(guest_bytes(guests::COMMAND)).await;
    assert!(
        why.contains("does not export `warden:plugin/guest@0.1.0`"),
        "{why}"
    );
    assert!(why.contains("wasi:cli command"), "{why}");
    assert!(why.contains("wasi:cli/run@"), "{why}");
}

#[tokio::test]
async fn a_truncated_component_is_malformed() {
    let bytes = guest_bytes(guests::HELLO);
    let why = refusal(bytes[..bytes.len() / 2].to_vec()).await;
    assert!(why.contains("failed to validate or compile"), "{why}");
}

#[tokio::test]
async fn an_export_with_the_wrong_signature_is_named() {
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $guest (export "init" (func $f)) (export "execute" (func $f)))
            (export "warden:plugin/guest@0.1.0" (instance $guest)))"#,
    )
    .unwrap();
    let why = refusal(component).await;
    assert!(why.contains("does not match Warden's WIT"), "{why}");
    assert!(
        why.contains("`init` must be `func() -> result<metadata, plugin-error>`"),
        "{why}"
    );
}

#[tokio::test]
async fn an_import_warden_cannot_provide_is_named() {
    let component = wat::parse_str(
        r#"(component
            (import "example:unknown/thing@1.0.0" (instance (export "f" (func))))
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $guest (export "init" (func $f)))
            (export "warden:plugin/guest@0.1.0" (instance $guest)))"#,
    )
    .unwrap();
    let why = refusal(component).await;
    assert!(why.contains("does not provide"), "{why}");
    assert!(why.contains("example:unknown/thing@1.0.0"), "{why}");
}

#[tokio::test]
async fn an_unreadable_path_is_an_io_error() {
    let err = runtime()
        .load_file("/no/such/plugin.wasm", Sandbox::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/no/such/plugin.wasm"));

    let dir = tempfile::tempdir().unwrap();
    let err = runtime()
        .load_file(dir.path(), Sandbox::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
}
