//! The files behind trust, kv and the compile cache: the trust store edited
//! concurrently, through a link and after damage, and the private modes
//! Warden gives its files and demands of them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    PROBE_KV_SET, Scratch, assert_status, in_home, report, stderr_of, warden_at_home, write_file,
};

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
            let editor = in_home(
                Command::new(env!("CARGO_BIN_EXE_warden"))
                    .args(&args)
                    .args(["--trust-store", store]),
                home,
            )
            .stdout(Stdio::null())
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

#[test]
fn trust_add_names_a_key_after_its_file_and_adding_it_again_changes_nothing() {
    let shop = Scratch::new();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    let alice = shop.path("alice.pub");
    let add = |args: &[&str]| {
        let mut all = vec!["trust", "add"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--trust-store", &store]);
        shop.run(&all)
    };
    let output = add(&[&alice]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("trusting key ") && stdout.contains(" as `alice` in "),
        "{stdout}"
    );
    assert_eq!(trusted_names(&store), ["alice"]);

    let output = add(&[&alice]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("already trusting key "), "{stdout}");
    assert_eq!(trusted_names(&store), ["alice"]);

    // The same key under another name, or another key under the same name,
    // is still refused: either would change what a name means.
    let output = add(&[&alice, "--name", "bob"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("is already trusted as `alice`"),
        "{}",
        stderr_of(&output)
    );
    shop.keygen("other");
    let output = add(&[&shop.path("other.pub"), "--name", "alice"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("a key named `alice` is already trusted"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(trusted_names(&store), ["alice"]);
}

#[test]
fn an_empty_trust_list_says_so() {
    let shop = Scratch::new();
    let output = shop.run(&["trust", "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("no trusted keys in `")
            && stdout.contains("add one with `warden trust add NAME.pub`"),
        "{stdout}"
    );
    let (value, code) = report(&shop.run(&["trust", "list", "--json"]));
    assert_eq!((value, code), (serde_json::json!([]), 0));
}

#[test]
fn a_trust_store_named_on_the_command_line_must_exist() {
    let shop = Scratch::with_hello();
    let typo = shop.path("typo.toml");
    for args in [
        vec!["verify", &*shop.path("hello.wasm"), "--trust-store", &typo],
        vec!["trust", "list", "--trust-store", &typo],
    ] {
        let output = shop.run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&format!("trust store `{typo}` does not exist")),
            "{args:?}: {stderr}"
        );
    }
    assert!(!Path::new(&typo).exists());
}

/// `trust add --trust-store` with a mistyped directory names it rather than
/// creating it (the default location's directory is made on first use).
#[test]
fn trust_add_does_not_create_a_mistyped_directory() {
    let shop = Scratch::new();
    let key = shop.path("alice");
    warden::trust::KeyFiles::named(&key).generate().unwrap();
    let typo = shop.path("tpyo/trust.toml");
    let output = shop.run(&[
        "trust",
        "add",
        &format!("{key}.pub"),
        "--trust-store",
        &typo,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains(&format!(
            "there is no directory `{}` for trust store `{typo}`",
            shop.path("tpyo")
        )),
        "{}",
        stderr_of(&output)
    );
    assert!(!Path::new(&shop.path("tpyo")).exists());
    let output = shop.run(&["trust", "add", &format!("{key}.pub")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}
