//! Which plugins `warden run` accepts: `--unsigned`, `--signed-by`, a
//! manifest's trust table and its hash pin.

use crate::support::{
    Scratch, assert_status, json, json_at_home, report, stderr_of, warden, warden_at_home,
    write_file,
};

#[test]
fn the_command_line_warns_about_unsigned_plugins_by_default() {
    let shop = Scratch::with_hello();
    let store = shop.path("trust.toml");
    let output = warden(&[
        "run",
        &shop.path("hello.wasm"),
        "echo",
        "--input",
        "x",
        "--trust-store",
        &store,
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("warning: running an unverified plugin (it is unsigned)"),
        "{stderr}"
    );
    let quiet = warden(&[
        "run",
        &shop.path("hello.wasm"),
        "echo",
        "--input",
        "x",
        "--unsigned",
        "allow",
        "--trust-store",
        &store,
    ]);
    assert!(!String::from_utf8(quiet.stderr).unwrap().contains("warning"));
    let (value, code) = json(&[
        "run",
        &shop.path("hello.wasm"),
        "echo",
        "--unsigned",
        "deny",
        "--trust-store",
        &store,
    ]);
    assert_status(&value, code, "untrusted", 31);
    assert!(value["error"].as_str().unwrap().contains("unsigned"));
}

#[test]
fn signed_by_and_unsigned_flags_in_every_combination() {
    let shop = Scratch::with_hello();
    let home = shop.dir.path();
    for name in ["alice", "bob", "mallory"] {
        shop.keygen(name);
    }
    let store = shop.path("trust.toml");
    shop.trust("alice", "alice", &store);
    for (signer, file) in [
        ("mallory", "stranger.wasm"),
        ("bob", "known.wasm"),
        ("alice", "trusted.wasm"),
    ] {
        let key = shop.path(&format!("{signer}.key"));
        let signed = warden_at_home(
            home,
            &[
                "sign",
                &shop.path("hello.wasm"),
                "--key",
                &key,
                "-o",
                &shop.path(file),
            ],
        );
        assert_eq!(signed.status.code(), Some(0), "{}", stderr_of(&signed));
    }
    let bob_pub = shop.path("bob.pub");
    // Each plugin, and the key its refusal must name (None: it is unsigned).
    let plugins = [
        ("unsigned", shop.path("hello.wasm"), None),
        (
            "stranger-signed",
            shop.path("stranger.wasm"),
            Some(key_id(&shop.path("mallory.pub"))),
        ),
        (
            "known-untrusted-signed",
            shop.path("known.wasm"),
            Some(key_id(&bob_pub)),
        ),
        ("trusted-signed", shop.path("trusted.wasm"), None),
    ];
    for unsigned in [None, Some("allow"), Some("warn"), Some("deny")] {
        for signed_by in [None, Some("any"), Some("trusted")] {
            let only_trusted = signed_by == Some("trusted");
            let contradiction = only_trusted && matches!(unsigned, Some("allow" | "warn"));
            let deny = only_trusted || unsigned == Some("deny");
            for (kind, plugin, named_key) in &plugins {
                let label = format!("--unsigned {unsigned:?} --signed-by {signed_by:?}, {kind}");
                let mut args = vec![
                    "run",
                    "--json",
                    plugin,
                    "count-vowels",
                    "--input",
                    "hello",
                    "--trust-store",
                    &store,
                    "--key",
                    &bob_pub,
                ];
                if let Some(unsigned) = unsigned {
                    args.extend(["--unsigned", unsigned]);
                }
                if let Some(signed_by) = signed_by {
                    args.extend(["--signed-by", signed_by]);
                }
                let output = warden_at_home(home, &args);
                let code = output.status.code().expect("exit code");
                if contradiction {
                    assert_eq!(code, 2, "{label}");
                    let stderr = stderr_of(&output);
                    assert!(
                        stderr.contains("contradicts --signed-by trusted"),
                        "{label}: {stderr}"
                    );
                    assert!(output.stdout.is_empty(), "{label}: nothing ran");
                    continue;
                }
                let runs = match *kind {
                    "trusted-signed" => true,
                    "known-untrusted-signed" => !only_trusted,
                    _ => !deny,
                };
                let (value, _) = report(&output);
                if runs {
                    assert_status(&value, code, "ok", 0);
                    assert_eq!(value["output"], "2", "{label}");
                } else {
                    assert_status(&value, code, "untrusted", 31);
                    let error = value["error"].as_str().unwrap();
                    let expected = named_key.as_deref().unwrap_or("unsigned");
                    assert!(error.contains(expected), "{label}: {error}");
                }
            }
        }
    }
}

#[test]
fn nothing_loosens_a_manifests_signed_by_trusted() {
    let shop = Scratch::with_hello();
    let home = shop.dir.path();
    let manifest = |trust: &str| {
        let text = format!(
            "[plugins.hello]\npath = \"hello.wasm\"\n[plugins.hello.trust]\ntrust_store = \"trust.toml\"\n{trust}\n"
        );
        write_file(home, "warden.toml", text.as_bytes())
    };
    /// `warden run --manifest MANIFEST hello echo --input x FLAGS…`
    fn echo<'a>(manifest: &'a str, flags: &[&'a str]) -> Vec<&'a str> {
        [
            &[
                "run",
                "--manifest",
                manifest,
                "hello",
                "echo",
                "--input",
                "x",
            ][..],
            flags,
        ]
        .concat()
    }
    let contradicting = manifest("signed_by = \"trusted\"\nunsigned = \"warn\"");
    let output = warden_at_home(home, &echo(&contradicting, &[]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("plugin `hello`: `unsigned = \"warn\"` contradicts"),
        "{stderr}"
    );

    let trusted_only = manifest("signed_by = \"trusted\"");
    let output = warden_at_home(home, &echo(&trusted_only, &["--unsigned", "warn"]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("cannot loosen the manifest's `signed_by = \"trusted\"`"),
        "{stderr}"
    );

    let (value, code) = json_at_home(home, &echo(&trusted_only, &[]));
    assert_status(&value, code, "untrusted", 31);

    // Saying both explicitly is loosening on purpose.
    let loosened = ["--signed-by", "any", "--unsigned", "allow"];
    let (value, code) = json_at_home(home, &echo(&trusted_only, &loosened));
    assert_status(&value, code, "ok", 0);
}

#[test]
fn a_manifest_can_pin_a_plugins_hash() {
    let shop = Scratch::with_hello();
    let bytes = std::fs::read(shop.path("hello.wasm")).unwrap();
    let (inspected, _) = json(&["inspect", &shop.path("hello.wasm"), "--unsigned", "allow"]);
    let sha256 = inspected["sha256"].as_str().unwrap().to_owned();
    assert_eq!(inspected["size"], bytes.len());
    for (pin, status) in [(sha256.as_str(), "ok"), (&"ab".repeat(32), "untrusted")] {
        let manifest = format!(
            "[plugins.hello]\npath = \"hello.wasm\"\n[plugins.hello.trust]\nunsigned = \"allow\"\nsha256 = \"{pin}\"\n"
        );
        let manifest = write_file(shop.dir.path(), "warden.toml", manifest.as_bytes());
        let (value, _) = json(&[
            "run",
            "--manifest",
            &manifest,
            "hello",
            "echo",
            "--input",
            "pinned",
        ]);
        assert_eq!(value["status"], status, "{value}");
        if status == "untrusted" {
            assert!(value["error"].as_str().unwrap().contains("hash mismatch"));
        }
    }
}

fn key_id(public_key: &str) -> String {
    warden::trust::PublicKey::from_file(public_key)
        .unwrap()
        .key_id()
}

/// `WARDEN_UNSIGNED` sets the unsigned policy for every run on a machine,
/// below the flag and the manifest: flag > manifest > environment > `warn`.
#[test]
fn warden_unsigned_sets_the_default_below_the_flag_and_the_manifest() {
    let shop = Scratch::with_hello();
    let hello = shop.path("hello.wasm");
    let silent = write_file(
        shop.dir.path(),
        "silent.toml",
        b"[plugins.hello]\npath = \"hello.wasm\"\n",
    );
    let warns = write_file(
        shop.dir.path(),
        "warns.toml",
        b"[plugins.hello]\npath = \"hello.wasm\"\n\n[plugins.hello.trust]\nunsigned = \"warn\"\n",
    );
    let run = |environment: &str, plugin: &[&str], flags: &[&str]| {
        let mut all = vec!["run"];
        all.extend_from_slice(plugin);
        all.extend_from_slice(&["echo", "--input", "x"]);
        all.extend_from_slice(flags);
        let output = shop
            .command(&all)
            .env("WARDEN_UNSIGNED", environment)
            .output()
            .unwrap();
        (output.status.code(), stderr_of(&output))
    };
    const WARNING: &str = "warning: running an unverified plugin (it is unsigned)";

    // The environment over the default, for a file and for a manifest
    // that says nothing.
    let (code, stderr) = run("allow", &[&hello], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr) = run("deny", &[&hello], &[]);
    assert_eq!(code, Some(31), "{stderr}");
    assert!(stderr.contains("unsigned"), "{stderr}");
    let (code, stderr) = run("deny", &["--manifest", &silent, "hello"], &[]);
    assert_eq!(code, Some(31), "{stderr}");
    let (code, stderr) = run("allow", &["--manifest", &silent, "hello"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // The manifest over the environment.
    let (code, stderr) = run("allow", &["--manifest", &warns, "hello"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(WARNING), "{stderr}");

    // The flag over both.
    let (code, stderr) = run("deny", &[&hello], &["--unsigned", "allow"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr) = run(
        "allow",
        &["--manifest", &warns, "hello"],
        &["--unsigned", "deny"],
    );
    assert_eq!(code, Some(31), "{stderr}");

    // `--signed-by trusted` refuses unsigned plugins whatever it says.
    let (code, stderr) = run("allow", &[&hello], &["--signed-by", "trusted"]);
    assert_eq!(code, Some(31), "{stderr}");

    // Unset (or empty), the default warns; a value that is not a policy
    // is a usage error naming the variable.
    let (code, stderr) = run("", &[&hello], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(WARNING) && stderr.contains("WARDEN_UNSIGNED=allow"),
        "{stderr}"
    );
    let (code, stderr) = run("maybe", &[&hello], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "WARDEN_UNSIGNED=maybe: invalid unsigned policy `maybe`: expected allow, warn or deny"
        ),
        "{stderr}"
    );
}
