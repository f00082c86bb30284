use std::time::Duration;

use super::*;
use crate::capabilities::kv::KvStore;
use crate::grants::Preopen;
use crate::trust::{SignerPolicy, UnsignedPolicy};

fn parse(text: &str) -> Result<Manifest, Error> {
    Manifest::parse(text, Path::new("/srv/app/warden.toml"))
}

#[test]
fn a_complete_manifest() {
    let manifest = parse(
        r#"
        [defaults.limits]
        timeout = "2s"
        memory = "32MiB"

        [plugins.hello]
        path = "plugins/hello.wasm"
        strict = true
        deterministic = true

        [plugins.hello.limits]
        memory = "16MiB"
        fuel = 1000
        memories = 1
        tables = 2
        sockets = 10

        [plugins.hello.grants]
        dirs = ["data::/data:rw"]
        env = { GREETING = "hi" }
        allow_http = ["https://*.example.com"]
        allow_tcp = ["127.0.0.1:6379"]
        allow_tcp_listen = ["127.0.0.1:8081"]
        kv = { path = "state/kv.sqlite", max_keys = 10, max_value = "1KiB" }

        [plugins.hello.config]
        greeting = "hello"

        [plugins.other]
        path = "/opt/other.wasm"
        "#,
    )
    .unwrap();
    let hello = manifest.plugin("hello").unwrap();
    assert_eq!(hello.path, Path::new("/srv/app/plugins/hello.wasm"));
    let sandbox = &hello.sandbox;
    assert!(sandbox.strict);
    assert_eq!(
        sandbox.limits.timeout,
        Duration::from_secs(2),
        "from the defaults"
    );
    assert_eq!(sandbox.limits.memory_bytes, 16 << 20, "the plugin's own");
    assert_eq!(sandbox.limits.fuel, Some(1000));
    assert_eq!(
        (
            sandbox.limits.memories,
            sandbox.limits.tables,
            sandbox.limits.sockets
        ),
        (1, 2, 10)
    );
    let grants = &sandbox.grants;
    assert!(grants.deterministic);
    assert_eq!(grants.dirs, [Preopen::read_write("/srv/app/data", "/data")]);
    assert_eq!(grants.env, [("GREETING".to_owned(), "hi".to_owned())]);
    assert_eq!(grants.http.allow.len(), 1);
    assert_eq!(grants.tcp.len(), 1);
    assert_eq!(grants.tcp_listen, ["127.0.0.1:8081".parse().unwrap()]);
    let kv = grants.kv.as_ref().unwrap();
    assert_eq!(kv.store, KvStore::File("/srv/app/state/kv.sqlite".into()));
    assert_eq!(kv.quotas.max_keys, 10);
    assert_eq!(kv.quotas.max_value_bytes, 1024);
    assert_eq!(grants.config["greeting"], "hello");
    assert!(manifest.needs_fuel());

    let other = manifest.plugin("other").unwrap();
    assert_eq!(other.path, Path::new("/opt/other.wasm"));
    assert_eq!(other.sandbox.limits.memory_bytes, 32 << 20);
    assert_eq!(other.sandbox.grants, Grants::default());
    assert_eq!(other.sandbox.trust.unsigned, UnsignedPolicy::Warn);
}

#[test]
fn host_memory_and_kv_batch_bounds_are_manifest_keys() {
    let manifest = parse(
        r#"
        [defaults.limits]
        host_memory = "8MiB"

        [plugins.bulk]
        path = "bulk.wasm"
        [plugins.bulk.grants]
        kv = { max_batch_keys = 50, max_batch_bytes = "1MiB" }

        [plugins.other]
        path = "other.wasm"
        [plugins.other.limits]
        host_memory = 1024
        "#,
    )
    .unwrap();
    let bulk = &manifest.plugin("bulk").unwrap().sandbox;
    assert_eq!(bulk.limits.host_memory_bytes, 8 << 20, "from the defaults");
    let quotas = &bulk.grants.kv.as_ref().unwrap().quotas;
    assert_eq!(
        (quotas.max_batch_keys, quotas.max_batch_bytes),
        (50, 1 << 20)
    );
    let other = &manifest.plugin("other").unwrap().sandbox;
    assert_eq!(other.limits.host_memory_bytes, 1024);
}

#[test]
fn errors_point_at_the_line_and_key() {
    for (text, expected) in [
        (
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.limits]\ntimout = \"1s\"\n",
            "line 4",
        ),
        (
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.limits]\ntimout = \"1s\"\n",
            "unknown field `timout`",
        ),
        (
            "[plugins.a]\npath = \"a.wasm\"\n\n[plugins.a.limits]\nmemory = \"lots\"\n",
            "line 5",
        ),
        (
            "[plugins.a]\npath = \"a.wasm\"\n\n[plugins.a.limits]\nmemory = \"lots\"\n",
            "invalid size `lots`",
        ),
        ("[plugins.a]\n[plugins.a.grants]\n", "missing field `path`"),
        (
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\nallow_http = [\"ftp://x\"]\n",
            "invalid HTTP origin",
        ),
        (
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\ndirs = [\"nocolons\"]\n",
            "line 4",
        ),
        ("[plugins.a\n", "line 1"),
        (
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\nunsigned = \"maybe\"\n",
            "line 4",
        ),
        (
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\nkeys = [\"/no/such.pub\"]\n",
            "cannot read public key",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
        assert!(err.contains("/srv/app/warden.toml"), "{err}");
    }
}

#[test]
fn signed_by_trusted_implies_deny_and_contradicting_unsigned_is_refused() {
    // Each case: [defaults.trust], [plugins.a.trust], and the plugin's
    // resulting `unsigned` (or the error's words).
    let cases: [(&str, &str, Result<UnsignedPolicy, &str>); 8] = [
        ("", r#"signed_by = "trusted""#, Ok(UnsignedPolicy::Deny)),
        (
            "",
            "signed_by = \"trusted\"\nunsigned = \"deny\"",
            Ok(UnsignedPolicy::Deny),
        ),
        (
            r#"unsigned = "warn""#,
            r#"signed_by = "trusted""#,
            Ok(UnsignedPolicy::Deny),
        ),
        (r#"signed_by = "trusted""#, "", Ok(UnsignedPolicy::Deny)),
        ("", r#"signed_by = "any""#, Ok(UnsignedPolicy::Warn)),
        (
            "",
            "signed_by = \"trusted\"\nunsigned = \"warn\"",
            Err("plugin `a`: `unsigned = \"warn\"` contradicts `signed_by = \"trusted\"`"),
        ),
        (
            r#"signed_by = "trusted""#,
            r#"unsigned = "allow""#,
            Err("plugin `a`: `unsigned = \"allow\"` contradicts"),
        ),
        (
            "signed_by = \"trusted\"\nunsigned = \"allow\"",
            "",
            Err("[defaults.trust]: `unsigned = \"allow\"` contradicts"),
        ),
    ];
    for (defaults, own, expected) in cases {
        let text = format!(
            "[defaults.trust]\ntrust_store = \"none.toml\"\n{defaults}\n\
             [plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\n{own}\n"
        );
        let result = parse(&text).map(|manifest| manifest.plugins["a"].sandbox.trust.clone());
        match (result, expected) {
            (Ok(policy), Ok(unsigned)) => assert_eq!(policy.unsigned, unsigned, "{text}"),
            (Err(err), Err(words)) => {
                assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
                assert!(err.to_string().contains(words), "{text}: {err}");
            }
            (result, expected) => panic!("{text}: expected {expected:?}, got {result:?}"),
        }
    }
}

#[test]
fn a_plugin_that_only_says_signed_by_any_keeps_the_defaults_implied_deny() {
    let policy = |own: &str| {
        let text = format!(
            "[defaults.trust]\ntrust_store = \"none.toml\"\nsigned_by = \"trusted\"\n\
             [plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\n{own}\n"
        );
        let trust = parse(&text).unwrap().plugins["a"].sandbox.trust.clone();
        (trust.signed_by, trust.unsigned)
    };
    // Any known key's valid signature, as `--signed-by any` over such a
    // manifest gives: not the development tier.
    assert_eq!(
        policy(r#"signed_by = "any""#),
        (SignerPolicy::Any, UnsignedPolicy::Deny)
    );
    // Loosening further takes saying so.
    assert_eq!(
        policy("signed_by = \"any\"\nunsigned = \"warn\""),
        (SignerPolicy::Any, UnsignedPolicy::Warn)
    );
}

#[test]
fn kv_names_a_file_or_a_redis_server() {
    let grant = |kv: &str| {
        let manifest = parse(&format!(
            "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\nkv = {kv}\n"
        ))?;
        Ok::<_, Error>(manifest.plugins["a"].sandbox.grants.kv.clone().unwrap())
    };
    let redis = grant(r#"{ redis = "redis://127.0.0.1:6379/0", max_keys = 5 }"#).unwrap();
    assert_eq!(
        redis.store,
        KvStore::Redis("redis://127.0.0.1:6379/0".into())
    );
    assert_eq!(redis.quotas.max_keys, 5);
    let file = grant(r#"{ path = "kv.sqlite" }"#).unwrap();
    assert_eq!(file.store, KvStore::File("/srv/app/kv.sqlite".into()));

    for (kv, expected) in [
        (
            r#"{ path = "kv.sqlite", redis = "redis://127.0.0.1" }"#,
            "not both",
        ),
        (
            r#"{ redis = "127.0.0.1:6379" }"#,
            "not a redis:// or rediss:// URL",
        ),
    ] {
        let err = grant(kv).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
        assert!(
            err.contains("/srv/app/warden.toml") && err.contains("plugin `a`"),
            "{err}"
        );
    }
}

#[test]
fn asking_for_an_undeclared_plugin_lists_the_declared_ones() {
    let manifest =
        parse("[plugins.a]\npath = \"a.wasm\"\n[plugins.b]\npath = \"b.wasm\"\n").unwrap();
    let err = manifest.plugin("c").unwrap_err().to_string();
    assert!(
        err.contains("no plugin `c`") && err.contains("a, b"),
        "{err}"
    );
}

#[test]
fn serve_settings_are_read_and_unknown_ones_refused() {
    let manifest = parse(
        "[serve]\nheader_read_timeout = \"2s\"\nidle_timeout = \"1m\"\n\
         write_timeout = \"5s\"\nmax_connections = 64\nmax_body_memory = \"64MiB\"\n",
    )
    .unwrap();
    assert_eq!(
        manifest.serve.header_read_timeout,
        Some(Duration::from_secs(2))
    );
    assert_eq!(manifest.serve.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(manifest.serve.write_timeout, Some(Duration::from_secs(5)));
    assert_eq!(manifest.serve.max_connections, Some(64));
    assert_eq!(manifest.serve.max_body_memory, Some(64 << 20));
    assert_eq!(parse("").unwrap().serve, ServeSettings::default());
    let err = parse("[serve]\nidle = \"1s\"\n").unwrap_err().to_string();
    assert!(err.contains("unknown field `idle`"), "{err}");
}

#[test]
fn limits_take_every_size_and_duration_form_and_refuse_ones_no_call_survives() {
    let manifest = parse(
        r#"
        [plugins.a]
        path = "a.wasm"
        [plugins.a.limits]
        timeout = "1m30s"
        memory = "48Mi"
        fuel = 1
        max_stream_input = "1GiB"
        max_stream_output = 1024
        stream_idle_timeout = "250ms"
        "#,
    )
    .unwrap();
    let limits = &manifest.plugin("a").unwrap().sandbox.limits;
    assert_eq!(limits.timeout, Duration::from_secs(90));
    assert_eq!(limits.memory_bytes, 48 << 20);
    assert_eq!(limits.fuel, Some(1));
    assert_eq!(limits.max_stream_input_bytes, 1 << 30);
    assert_eq!(limits.max_stream_output_bytes, 1024);
    assert_eq!(limits.stream_idle_timeout, Duration::from_millis(250));
    for (setting, expected) in [
        (
            "memory = 64",
            "64 bytes is below the smallest memory (64 KiB",
        ),
        ("memory = \"64KiB\"", ""),
        ("timeout = \"0s\"", "`0s` is zero"),
        ("stream_idle_timeout = \"0s\"", "`0s` is zero"),
        ("max_stream_output = \"lots\"", "lots"),
        ("fuel = 0", "a fuel limit of 0"),
    ] {
        let text = format!("[plugins.a]\npath = \"a.wasm\"\n[plugins.a.limits]\n{setting}\n");
        match parse(&text) {
            Ok(_) => assert_eq!(expected, "", "{setting} was accepted"),
            Err(err) => {
                let message = err.to_string();
                assert!(
                    !expected.is_empty()
                        && message.contains(expected)
                        && message.contains("line 4"),
                    "{setting}: {message}"
                );
            }
        }
    }
}

#[test]
fn kv_given_a_string_says_what_kv_takes() {
    let err = parse("[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\nkv = \"kv.sqlite\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`kv = \"kv.sqlite\"`: `kv` takes `true` (the default location) or a table: `kv = { path = \"kv.sqlite\" }`"),
        "{err}"
    );
    assert!(!err.contains("untagged"), "{err}");
}

#[test]
fn a_plugin_says_whether_its_manifest_decides_the_unsigned_policy() {
    let states = |trust: &str| {
        let text = format!("{trust}\n[plugins.a]\npath = \"a.wasm\"\n");
        parse(&text).unwrap().plugin("a").unwrap().states_unsigned
    };
    assert!(!states(""));
    assert!(!states("[defaults.trust]\nsigned_by = \"any\""));
    assert!(states("[defaults.trust]\nunsigned = \"warn\""));
    assert!(states("[defaults.trust]\nsigned_by = \"trusted\""));
}
