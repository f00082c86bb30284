//! `warden inspect`: a plugin's metadata, imports, exports, hash and
//! capabilities.

use warden_tests::guests;

use crate::support::{assert_status, json, warden};

#[test]
fn inspect_shows_metadata_imports_exports_and_hash() {
    let (value, code) = json(&["inspect", guests::HELLO]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["metadata"]["name"], "hello");
    assert_eq!(
        value["metadata"]["actions"],
        serde_json::json!(["count-vowels", "echo", "greet"])
    );
    let bytes = std::fs::read(guests::HELLO).unwrap();
    assert_eq!(value["size"], bytes.len());
    assert_eq!(value["sha256"].as_str().unwrap().len(), 64);
    let imports = value["imports"].as_array().unwrap();
    assert!(imports.contains(&"wasi:logging/logging@0.1.0-draft".into()));
    assert_eq!(
        value["exports"],
        serde_json::json!(["warden:plugin/guest@0.1.0"])
    );

    let output = warden(&["inspect", guests::HELLO]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("hello 0.1.0: "), "{stdout}");
    assert!(
        stdout.contains("actions: count-vowels, echo, greet"),
        "{stdout}"
    );
}

#[test]
fn inspect_lists_capabilities_and_their_grants() {
    let (value, code) = json(&[
        "inspect",
        guests::PROBE,
        "--allow-http",
        "https://example.com",
    ]);
    assert_status(&value, code, "ok", 0);
    let capabilities = value["capabilities"].as_array().unwrap();
    let http = capabilities.iter().find(|c| c["name"] == "http").unwrap();
    assert_eq!(
        (&http["risk"], &http["granted"]),
        (&"high".into(), &true.into())
    );
    let kv = capabilities.iter().find(|c| c["name"] == "kv").unwrap();
    assert_eq!(
        (&kv["risk"], &kv["granted"]),
        (&"medium".into(), &false.into())
    );

    let output = warden(&["inspect", guests::PROBE]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("http     high    not granted (--allow-http ORIGIN, or `allow_http` in a manifest's [grants])"),
        "{stdout}"
    );
}
