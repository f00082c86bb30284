//! Keys, signing, verification and the trust store (`warden keygen`, `sign`,
//! `verify`, `trust`), and the private files Warden keeps.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    PROBE_KV_SET, Scratch, assert_status, exit_code, json, report, stderr_of, warden,
    warden_at_home, write_file,
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
fn concurrent_trust_edits_all_take_effect() {
    const EDITORS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let store = home.join("trust.toml");
    let store = store.to_str().unwrap();
    let key_file = |name: &str| {
        let files = warden::trust::KeyFiles::named(home.join(name));
        let key = files.generate().unwrap();
        (files.public.to_str().unwrap().to_owned(), key)
    };
    let mut initial = warden::trust::TrustStore::default();
    for index in 0..EDITORS {
        let name = format!("old{index}");
        initial.add(&name, key_file(&name).1).unwrap();
    }
    initial.save(store).unwrap();
    let mut editors = Vec::new();
    for index in 0..EDITORS {
        let name = format!("new{index}");
        let (public, _) = key_file(&name);
        for args in [
            vec![
                "trust".to_owned(),
                "add".into(),
                public,
                "--name".into(),
                name,
            ],
            vec!["trust".to_owned(), "remove".into(), format!("old{index}")],
        ] {
            let editor = Command::new(env!("CARGO_BIN_EXE_warden"))
                .args(&args)
                .args(["--trust-store", store])
                .env("HOME", home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            editors.push((args, editor));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (args, mut editor) in editors {
        let status = loop {
            if let Some(status) = editor.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = editor.kill();
                panic!("`warden {}` did not finish", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut editor.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "`warden {}`: {stderr}", args.join(" "));
    }
    let mut expected: Vec<String> = (0..EDITORS).map(|index| format!("new{index}")).collect();
    expected.sort();
    assert_eq!(trusted_names(store), expected);
}

#[test]
fn a_linked_trust_store_is_edited_through_the_link() {
    let shop = Scratch::with_hello();
    let home = shop.dir.path();
    shop.keygen("alice");
    std::fs::create_dir(home.join("dotfiles")).unwrap();
    let link = shop.path("trust.toml");
    let target = shop.path("dotfiles/trust.toml");
    std::os::unix::fs::symlink("dotfiles/trust.toml", &link).unwrap();
    shop.trust("alice", "alice", &link);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(trusted_names(&target), ["alice"]);
    let removed = warden_at_home(home, &["trust", "remove", "alice", "--trust-store", &link]);
    assert_eq!(removed.status.code(), Some(0), "{}", stderr_of(&removed));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(
        trusted_names(&target).is_empty(),
        "the shared target lost the key"
    );
}

#[test]
fn a_damaged_trust_store_fails_only_the_commands_that_need_it() {
    let shop = Scratch::with_hello();
    let home = shop.dir.path();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    let plugin = shop.path("hello.wasm");

    let output = warden_at_home(
        home,
        &[
            "trust",
            "add",
            &shop.path("alice.pub"),
            "--name",
            "bob\u{ad}",
            "--trust-store",
            &store,
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("not a usable key name"),
        "{}",
        stderr_of(&output)
    );
    assert!(!Path::new(&store).exists(), "nothing was written");

    // The store an earlier version wrote for that name: not TOML.
    let key: String = warden::trust::PublicKey::from_file(shop.path("alice.pub"))
        .unwrap()
        .to_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    write_file(
        home,
        "trust.toml",
        format!("[keys]\n\"bob\\u{{ad}}\" = \"{key}\"\n").as_bytes(),
    );
    for flags in [
        &[][..],
        &["--unsigned", "allow"],
        &["--unsigned", "warn", "--signed-by", "any"],
    ] {
        let args = [
            &[
                "run",
                &plugin,
                "echo",
                "--input",
                "x",
                "--trust-store",
                &store,
            ][..],
            flags,
        ]
        .concat();
        let output = warden_at_home(home, &args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{flags:?}: {}",
            stderr_of(&output)
        );
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains("warning: ignoring the trust store"),
            "{stderr}"
        );
        assert!(stderr.contains(&store), "{stderr}");
    }
    let inspected = warden_at_home(home, &["inspect", &plugin, "--trust-store", &store]);
    assert_eq!(
        inspected.status.code(),
        Some(0),
        "{}",
        stderr_of(&inspected)
    );
    for flags in [&["--unsigned", "deny"][..], &["--signed-by", "trusted"]] {
        let args = [
            &["run", "--json", &plugin, "echo", "--trust-store", &store][..],
            flags,
        ]
        .concat();
        let (value, code) = report(&warden_at_home(home, &args));
        assert_status(&value, code, "invalid-config", 2);
        let error = value["error"].as_str().unwrap();
        assert!(
            error.contains(&store) && error.contains("repair or remove it"),
            "{error}"
        );
    }
    for args in [
        vec!["trust", "list", "--trust-store", &store],
        vec!["trust", "remove", "bob", "--trust-store", &store],
        vec!["verify", &plugin, "--trust-store", &store],
    ] {
        let output = warden_at_home(home, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr_of(&output).contains(&store),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
}

#[test]
fn trust_kv_and_cache_files_are_private_and_refused_when_others_can_write_them() {
    let shop = Scratch::with_hello();
    let home = shop.dir.path();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    let plugin = shop.path("hello.wasm");
    shop.trust("alice", "alice", &store);
    assert_eq!(file_mode(&store), 0o600);
    set_file_mode(&store, 0o666);
    for args in [
        vec!["trust", "list", "--trust-store", &store],
        vec![
            "run",
            &plugin,
            "echo",
            "--signed-by",
            "trusted",
            "--trust-store",
            &store,
        ],
    ] {
        let output = warden_at_home(home, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&format!("chmod go-w {store}")),
            "{args:?}: {stderr}"
        );
    }

    let kv = shop.path("kv.sqlite");
    let probe = [&PROBE_KV_SET[..], &["--kv-store", &kv]].concat();
    let output = warden_at_home(home, &[&["run"][..], &probe].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(file_mode(&kv), 0o600);
    set_file_mode(&kv, 0o666);
    let output = warden_at_home(home, &[&["run"][..], &probe].concat());
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains(&format!("chmod go-w {kv}")), "{stderr}");

    // The default cache and its key were made in the (test's) home.
    let key = shop.path("data/warden/cache.key");
    assert_eq!(file_mode(&key), 0o600);
    assert_eq!(file_mode(&shop.path("cache/warden/compiled")), 0o700);
    let cache = shop.path("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    set_file_mode(&cache, 0o777);
    let output = warden_at_home(
        home,
        &[
            "run",
            &plugin,
            "echo",
            "--unsigned",
            "allow",
            "--cache-dir",
            &cache,
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("refusing the compile cache"), "{stderr}");
    assert!(stderr.contains(&format!("chmod go-w {cache}")), "{stderr}");
}

fn file_mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_file_mode(path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn trusted_names(store: &str) -> Vec<String> {
    warden::trust::TrustStore::open(store)
        .unwrap()
        .keys()
        .map(|(name, _)| name.to_owned())
        .collect()
}
