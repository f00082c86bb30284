//! Capabilities granted by `warden run`'s flags: directories, environment,
//! config, HTTP origins and socket addresses, `--strict` and
//! `--deterministic`, and grant paths a plugin tries to turn into links.

use serde_json::Value;
use warden_tests::guests;

use crate::support::{Scratch, assert_status, json, json_at_home, warden};

#[test]
fn writing_into_a_read_only_preopen_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), "original").unwrap();
    let write_file_through = |grant: &str| {
        json(&[
            "run",
            guests::HOSTILE,
            "write-file",
            "--input",
            "/data/file.txt",
            "--dir",
            grant,
        ])
    };
    let (value, code) = write_file_through(&format!("{}::/data", dir.path().display()));
    assert_status(&value, code, "plugin-error", 1);
    assert!(
        value["error"].as_str().unwrap().contains("not permitted"),
        "{value}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file.txt")).unwrap(),
        "original"
    );

    let (value, code) = write_file_through(&format!("{}::/data:rw", dir.path().display()));
    assert_status(&value, code, "ok", 0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file.txt")).unwrap(),
        "overwritten"
    );
}

#[test]
fn reading_outside_any_preopen_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data", dir.path().display());
    for path in ["/etc/passwd", "/data/../../etc/passwd"] {
        let (value, code) = json(&[
            "run",
            guests::HOSTILE,
            "read-file",
            "--input",
            path,
            "--dir",
            &grant,
        ]);
        assert_status(&value, code, "plugin-error", 1);
        assert_eq!(value["output"], Value::Null);
    }
}

#[test]
fn environment_variables_are_granted_one_by_one() {
    let (value, code) = json(&[
        "run",
        guests::HOSTILE,
        "env",
        "--input",
        "TOKEN",
        "--env",
        "TOKEN=abc",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "abc");
    let (value, code) = json(&["run", guests::HOSTILE, "env", "--input", "PATH"]);
    assert_status(&value, code, "plugin-error", 1);
}

#[test]
fn a_missing_directory_grant_is_a_usage_error() {
    let (value, code) = json(&["run", guests::HELLO, "--dir", "/no/such/dir::/data"]);
    assert_status(&value, code, "invalid-config", 2);
    assert!(value["error"].as_str().unwrap().contains("/no/such/dir"));
}

#[test]
fn config_values_and_environment_are_granted_by_flags() {
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "config-get",
        "--input",
        "mode",
        "--config",
        "mode=fast",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "fast");
    let (value, code) = json(&["run", guests::PROBE, "config-get", "--input", "mode"]);
    assert_status(&value, code, "denied", 30);
    let (value, code) = json(&["run", guests::PROBE, "env", "--input", "A", "--env", "A=1"]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "1");
}

/// A denial names the grant that would have allowed it, for the flag and
/// for the manifest.
#[test]
fn a_denial_says_how_to_grant_it() {
    let scratch = Scratch::new();
    let (value, code) = scratch.run_json(&[guests::PROBE, "kv-get", "--input", "a"]);
    assert_status(&value, code, "denied", 30);
    let error = value["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "denied: kv capability: opening bucket `default` — grant it with --kv or \
             --kv-store PATH|URL, or `kv` in a manifest's [grants] (the plugin then failed: "
        ),
        "{error}"
    );
    let (value, code) = scratch.run_json(&[guests::PROBE, "config-get", "--input", "mode"]);
    assert_status(&value, code, "denied", 30);
    let error = value["error"].as_str().unwrap();
    assert!(
        error.contains(
            "— grant it with --config KEY=VALUE, or the plugin's [config] table in a manifest"
        ),
        "{error}"
    );
}

/// `--allow-udp` on the command line: datagrams reach the granted address
/// and no other.
#[test]
fn udp_is_granted_by_address() {
    let sink = warden_tests::UdpSink::start();
    let address = sink.addr.to_string();
    let scratch = Scratch::new();
    let send = |grants: &[&str]| {
        scratch.run_json(
            &[
                &[guests::PROBE, "udp-send", "--input", &address][..],
                grants,
            ]
            .concat(),
        )
    };
    let (value, code) = send(&["--allow-udp", &address]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "sent");
    assert_eq!(
        sink.next(std::time::Duration::from_secs(10)).as_deref(),
        Some(&b"ping"[..])
    );

    let elsewhere = format!("127.0.0.1:{}", sink.addr.port().wrapping_add(1).max(1));
    for grants in [&[][..], &["--allow-udp", &elsewhere]] {
        let (value, code) = send(grants);
        assert_status(&value, code, "denied", 30);
        assert_eq!(value["denials"][0]["capability"], "sockets", "{value}");
    }
    assert_eq!(sink.next(std::time::Duration::from_millis(300)), None);
}

#[test]
fn http_is_allowed_per_origin_and_denied_otherwise() {
    let server = warden_tests::HttpServer::start();
    let url = server.url("/");
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "http-get",
        "--input",
        &url,
        "--allow-http",
        &server.origin(),
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], warden_tests::HTTP_GREETING);
    assert_eq!(value["denials"], serde_json::json!([]));

    let (value, code) = json(&["run", guests::PROBE, "http-get", "--input", &url]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(value["denials"][0]["capability"], "http");
    assert!(
        value["denials"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&url),
        "{value}"
    );
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{value}"
    );

    let output = warden(&["run", guests::PROBE, "http-get", "--input", &url]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("[denied] http capability:"), "{stderr}");
    assert!(stderr.contains("warden: denied:"), "{stderr}");
}

#[test]
fn sockets_are_granted_by_address() {
    let server = warden_tests::TcpPong::start();
    let address = server.addr.to_string();
    let echo = |grants: &[&str]| {
        json(
            &[
                &["run", guests::PROBE, "tcp-echo", "--input", &address][..],
                grants,
            ]
            .concat(),
        )
    };
    let (value, code) = echo(&["--allow-tcp", &address]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "pong");
    // Without a grant no socket is even created.
    let (value, code) = echo(&[]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(
        value["denials"][0]["detail"],
        "creating a TCP socket without a --allow-tcp or --allow-tcp-listen grant"
    );
    let elsewhere = format!("127.0.0.1:{}", server.addr.port() + 1);
    let (value, code) = echo(&["--allow-tcp", &elsewhere]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(
        value["denials"][0]["detail"],
        format!("TCP connect to {address}")
    );
}

#[test]
fn strict_refuses_and_names_every_missing_grant() {
    let (value, code) = json(&["run", guests::PROBE, "clock", "--strict"]);
    assert_status(&value, code, "denied", 30);
    let error = value["error"].as_str().unwrap();
    for hint in ["http", "--allow-http ORIGIN", "sockets", "--allow-tcp"] {
        assert!(error.contains(hint), "{hint} missing from {error}");
    }
    // An ungranted environment is empty, so low risk: not a missing grant.
    assert!(!error.contains("--env"), "{error}");
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "clock",
        "--strict",
        "--allow-http",
        "https://example.com",
        "--allow-tcp",
        "127.0.0.1:1",
    ]);
    assert_status(&value, code, "ok", 0);
}

#[test]
fn deterministic_runs_print_the_same_output() {
    let run = || {
        let (value, code) = json(&[
            "run",
            guests::PROBE,
            "random",
            "--input",
            "8",
            "--deterministic",
        ]);
        assert_status(&value, code, "ok", 0);
        let output = value["output"].as_str().unwrap().to_owned();
        assert!(!output.is_empty(), "{value}");
        output
    };
    assert_eq!(run(), run());
    let (value, code) = json(&["run", guests::PROBE, "clock", "--deterministic"]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "946684800 0 1000000");
}

#[test]
fn run_refuses_a_grant_path_that_a_plugin_turned_into_a_link_out() {
    let home = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let secret = tree.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    std::fs::create_dir_all(tree.path().join("outer/inner")).unwrap();
    let writer = format!("{}::/outer:rw", tree.path().join("outer").display());
    let reader = format!("{}::/inner", tree.path().join("outer/inner").display());
    let read_secret = format!("/inner{}", secret.display());

    // One run of the writer plants `inner -> ../../…/..` (the host's root).
    let (value, code) = json_at_home(
        home.path(),
        &[
            "run",
            guests::HOSTILE,
            "rename",
            "--input",
            "/outer/inner>/outer/moved",
            "--dir",
            &writer,
        ],
    );
    assert_status(&value, code, "ok", 0);
    let plant = format!("{}>/outer/inner", "../".repeat(32));
    let (value, code) = json_at_home(
        home.path(),
        &[
            "run",
            guests::HOSTILE,
            "symlink",
            "--input",
            &plant,
            "--dir",
            &writer,
        ],
    );
    assert_status(&value, code, "ok", 0);

    // The reader's next run refuses the grant instead of reading the host.
    let (value, code) = json_at_home(
        home.path(),
        &[
            "run",
            guests::HOSTILE,
            "read-file",
            "--input",
            &read_secret,
            "--dir",
            &reader,
        ],
    );
    assert_status(&value, code, "invalid-config", 2);
    let error = value["error"].as_str().unwrap();
    assert!(
        error.contains("`inner` is a symbolic link to `../"),
        "{value}"
    );
    assert_eq!(value["output"], Value::Null, "{value}");
}
