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

/// An ungranted environment is empty, so Rust's `std`, which always imports
/// `wasi:cli/environment`, is low risk and passes `--strict`; granted
/// variables are host data: medium.
#[test]
fn an_ungranted_environment_is_low_risk_and_passes_strict() {
    let environment = |value: &serde_json::Value| {
        value["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "env")
            .map(|env| (env["risk"].clone(), env["granted"].clone()))
            .unwrap()
    };
    let (value, code) = json(&["inspect", guests::HELLO]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(environment(&value), ("low".into(), false.into()));
    let (value, code) = json(&["inspect", guests::HELLO, "--env", "GREETING=hi"]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(environment(&value), ("medium".into(), true.into()));

    let (value, code) = json(&[
        "run",
        guests::HELLO,
        "greet",
        "--input",
        "Ada",
        "--unsigned",
        "allow",
        "--strict",
    ]);
    assert_status(&value, code, "ok", 0);
    // What --strict still refuses: an ungranted high-risk import.
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "echo",
        "--unsigned",
        "allow",
        "--strict",
    ]);
    assert_status(&value, code, "denied", 30);
    assert!(
        value["error"].as_str().unwrap().contains("http (high risk"),
        "{value}"
    );
}

/// A 0.1 plugin: world 0.1.0, no optional interfaces, actions named only;
/// the fields and lines 0.2 added say so and nothing else changes.
#[test]
fn inspect_shows_the_world_version_of_a_0_1_plugin() {
    let (value, code) = json(&["inspect", guests::HELLO]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["world_version"], "0.1.0");
    assert_eq!(value["interfaces"], serde_json::json!([]));
    let metadata = &value["metadata"];
    assert_eq!(
        metadata["action_details"][0],
        serde_json::json!({"name": "count-vowels", "description": "", "input_type": "", "output_type": ""})
    );
    assert_eq!(metadata["authors"], serde_json::json!([]));
    assert_eq!(metadata["license"], serde_json::Value::Null);
    assert_eq!(metadata["homepage"], serde_json::Value::Null);

    let output = warden(&["inspect", guests::HELLO]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("actions: count-vowels, echo, greet\nworld:   0.1.0\ncapabilities:\n"),
        "{stdout}"
    );
}

/// A 0.2 plugin: its world, the optional interfaces it exports, each
/// action with its media types, its authors and licence.
#[test]
fn inspect_shows_what_a_0_2_plugin_says_about_itself() {
    let (value, code) = json(&["inspect", guests::HELLO_V2]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["world_version"], "0.2.0");
    assert_eq!(
        value["interfaces"],
        serde_json::json!(["streaming", "lifecycle"])
    );
    let metadata = &value["metadata"];
    assert_eq!(
        metadata["actions"],
        serde_json::json!(["count-vowels", "echo", "greet", "count", "upper"])
    );
    let upper = &metadata["action_details"][4];
    assert_eq!(
        upper,
        &serde_json::json!({
            "name": "upper",
            "description": "Streaming: upper-cases ASCII letters as they flow",
            "input_type": "text/plain",
            "output_type": "text/plain",
        })
    );
    assert_eq!(
        metadata["authors"],
        serde_json::json!(["The Warden developers"])
    );
    assert_eq!(metadata["license"], "Apache-2.0");
    assert_eq!(metadata["homepage"], serde_json::Value::Null);

    let output = warden(&["inspect", guests::HELLO_V2]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    for line in [
        "actions: count-vowels, echo, greet, count, upper\n",
        "  upper         text/plain → text/plain  Streaming: upper-cases ASCII letters as they flow\n",
        "  echo          bytes → bytes  Returns the input unchanged\n",
        "authors: The Warden developers\nlicense: Apache-2.0\n",
        "world:   0.2.0 (streaming, lifecycle)\n",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    assert!(!stdout.contains("homepage"), "{stdout}");
}
