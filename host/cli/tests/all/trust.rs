//! Keys, signing and verification from the command line: `warden keygen`,
//! `sign`, `verify` and `trust`.

use std::path::Path;

use crate::support::{
    Scratch, assert_status, exit_code, json, report, stderr_of, warden, write_file,
};

#[test]
fn keygen_writes_a_private_key_pair_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let shop = Scratch::with_hello();
    let output = warden(&["keygen", &shop.path("alice")]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("key id:"), "{stdout}");
    let mode = std::fs::metadata(shop.path("alice.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(Path::new(&shop.path("alice.pub")).exists());
    let again = warden(&["keygen", &shop.path("alice")]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("refusing to overwrite")
    );
}

#[test]
fn sign_trust_verify_run_from_the_command_line() {
    let shop = Scratch::with_hello();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    // An empty store: `verify` refuses a --trust-store that does not exist.
    warden::trust::TrustStore::default().save(&store).unwrap();
    let plugin = shop.path("hello.wasm");
    let verify_json = || {
        report(&warden(&[
            "verify",
            &plugin,
            "--trust-store",
            &store,
            "--json",
        ]))
    };
    let only_trusted = [
        "--unsigned",
        "deny",
        "--signed-by",
        "trusted",
        "--trust-store",
        &store,
    ];

    let output = warden(&["verify", &plugin, "--trust-store", &store]);
    assert_eq!(output.status.code(), Some(31), "unsigned does not verify");
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("unsigned")
    );

    assert_eq!(
        exit_code(&["sign", &plugin, "--key", &shop.path("alice.key")]),
        Some(0)
    );
    let (value, code) = verify_json();
    assert_eq!(code, 31, "signed by a key nobody knows");
    assert_eq!(value["signatures"][0]["status"], "unknown-key");

    let output = warden(&["verify", &plugin, "--key", &shop.path("alice.pub")]);
    assert_eq!(output.status.code(), Some(0), "valid with the key given");
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("no signer is trusted")
    );

    let added = warden(&[
        "trust",
        "add",
        &shop.path("alice.pub"),
        "--name",
        "alice",
        "--trust-store",
        &store,
    ]);
    assert_eq!(added.status.code(), Some(0), "{added:?}");
    let (listed, _) = report(&warden(&[
        "trust",
        "list",
        "--trust-store",
        &store,
        "--json",
    ]));
    assert_eq!(listed[0]["name"], "alice");
    let duplicate = warden(&[
        "trust",
        "add",
        &shop.path("alice.pub"),
        "--name",
        "again",
        "--trust-store",
        &store,
    ]);
    assert_eq!(duplicate.status.code(), Some(2));

    let (value, code) = verify_json();
    assert_eq!(code, 0);
    assert_eq!(
        (&value["verified"], &value["trusted"]),
        (&true.into(), &true.into())
    );
    assert_eq!(value["signatures"][0]["trusted_as"], "alice");

    let run = ["run", &plugin, "count-vowels", "--input", "trusted"];
    let (value, code) = json(&[&run[..], &only_trusted].concat());
    assert_status(&value, code, "ok", 0);

    let (value, code) = json(&["inspect", &plugin, "--trust-store", &store]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["trusted"], true);
    assert_eq!(value["signatures"][0]["trusted_as"], "alice");

    assert_eq!(
        exit_code(&["trust", "remove", "alice", "--trust-store", &store]),
        Some(0)
    );
    let (value, code) = json(&[&["run", &plugin, "count-vowels"][..], &only_trusted].concat());
    assert_status(&value, code, "untrusted", 31);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("signed by unknown key"),
        "{value}"
    );
    assert_eq!(
        exit_code(&["trust", "remove", "alice", "--trust-store", &store]),
        Some(2)
    );
}

#[test]
fn signing_to_another_file_and_detached_signatures() {
    let shop = Scratch::with_hello();
    shop.keygen("alice");
    let plugin = shop.path("hello.wasm");
    let original = std::fs::read(&plugin).unwrap();
    let signed = shop.path("signed.wasm");
    let output = warden(&[
        "sign",
        &plugin,
        "--key",
        &shop.path("alice.key"),
        "-o",
        &signed,
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        original,
        "-o leaves the input alone"
    );
    assert_eq!(
        exit_code(&["verify", &signed, "--key", &shop.path("alice.pub")]),
        Some(0)
    );

    let output = warden(&[
        "sign",
        &plugin,
        "--key",
        &shop.path("alice.key"),
        "--detached",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        original,
        "a detached signature leaves the plugin alone"
    );
    assert!(Path::new(&format!("{plugin}.sig")).exists());
    assert_eq!(
        exit_code(&["verify", &plugin, "--key", &shop.path("alice.pub")]),
        Some(0)
    );
    let (value, code) = json(&[
        "run",
        &plugin,
        "echo",
        "--input",
        "detached",
        "--unsigned",
        "deny",
        "--key",
        &shop.path("alice.pub"),
    ]);
    assert_status(&value, code, "ok", 0);
}

#[test]
fn tampering_after_signing_is_caught() {
    let shop = Scratch::with_hello();
    shop.keygen("alice");
    let plugin = shop.path("hello.wasm");
    warden(&["sign", &plugin, "--key", &shop.path("alice.key")]);
    let mut bytes = std::fs::read(&plugin).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&plugin, &bytes).unwrap();
    let output = warden(&["verify", &plugin, "--key", &shop.path("alice.pub")]);
    assert_eq!(output.status.code(), Some(31));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("bad signature")
    );
    let (value, code) = json(&[
        "run",
        &plugin,
        "echo",
        "--unsigned",
        "allow",
        "--key",
        &shop.path("alice.pub"),
    ]);
    assert_status(&value, code, "untrusted", 31);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("changed after signing"),
        "{value}"
    );
}

#[test]
fn bad_key_files_are_reported_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let shop = Scratch::with_hello();
    shop.keygen("alice");
    let key = shop.path("alice.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = warden(&["sign", &shop.path("hello.wasm"), "--key", &key]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("chmod 600")
    );
    let garbage = write_file(shop.dir.path(), "garbage.pub", b"nonsense");
    let output = warden(&["verify", &shop.path("hello.wasm"), "--key", &garbage]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("not an Ed25519 public key")
    );
}

#[test]
fn signing_with_a_public_key_names_the_secret_key() {
    let shop = Scratch::with_hello();
    shop.keygen("alice");
    let output = shop.run(&[
        "sign",
        &shop.path("hello.wasm"),
        "--key",
        &shop.path("alice.pub"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!(
            "`{}` is a public key; sign with its secret key (`{}`",
            shop.path("alice.pub"),
            shop.path("alice.key")
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("chmod"), "{stderr}");
}

#[test]
fn keygen_into_a_missing_directory_gives_the_os_error_once() {
    let shop = Scratch::new();
    let output = shop.run(&["keygen", &shop.path("missing/dir/k")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!(
            "cannot write `{}`",
            shop.path("missing/dir/k.key")
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn verify_says_a_file_that_is_not_wasm_is_not_wasm() {
    let shop = Scratch::new();
    let text = write_file(shop.dir.path(), "notes.txt", b"hello\n");
    let output = shop.run(&["verify", &text]);
    assert_eq!(output.status.code(), Some(10));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "{text}: not a WebAssembly file (it does not start with the `\\0asm` magic bytes)\n"
        )
    );
    let (value, code) = report(&shop.run(&["verify", &text, "--json"]));
    assert_eq!(code, 10);
    assert_eq!(value["verified"], false);
    assert!(
        value["summary"]
            .as_str()
            .unwrap()
            .starts_with("not a WebAssembly file"),
        "{value}"
    );
}
