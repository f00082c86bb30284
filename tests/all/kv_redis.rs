//! The kv capability on a Redis server, through real plugins: the same
//! behaviour as on a SQLite file (checked by running the same calls on
//! both), and one store shared exactly by separate runtimes, which stand for
//! separate processes.

use std::time::Duration;

use tokio::task::JoinSet;
use warden::{Error, KvGrant, KvQuotas, Plugin, Runtime, Sandbox, Source};
use warden_tests::{RedisServer, guest_bytes, guests};

use crate::capabilities::{self, assert_kv_round_trip, call, increment_hits_concurrently};
use crate::runtime;

/// A sandbox granting `kv`.
fn sandbox(kv: KvGrant) -> Sandbox {
    capabilities::sandbox(|grants| grants.kv = Some(kv))
}

async fn probe_in(runtime: &Runtime, name: &str, kv: KvGrant) -> Plugin {
    capabilities::probe_in(runtime, name, sandbox(kv)).await
}

async fn probe(kv: KvGrant) -> Plugin {
    probe_in(&runtime(), "probe", kv).await
}

/// Runs `calls` in order and writes down each answer or error, so that two
/// backends can be compared call by call.
async fn transcript(plugin: &Plugin, calls: &[(&str, &str)]) -> Vec<String> {
    let mut answers = Vec::new();
    for (action, input) in calls {
        answers.push(match call(plugin, action, input).await {
            Ok(output) => format!("{action} {input} -> {output}"),
            Err(err) => format!("{action} {input} -> error: {err}"),
        });
    }
    answers
}

/// The transcripts of `calls` on a fresh SQLite file and on a fresh Redis
/// server, both granted with `quotas`.
async fn on_both_backends(quotas: &KvQuotas, calls: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut file = KvGrant::at(dir.path().join("kv.sqlite"));
    file.quotas = quotas.clone();
    let server = RedisServer::start();
    let mut redis = KvGrant::redis(&server.url);
    redis.quotas = quotas.clone();
    let on_file = transcript(&probe(file).await, calls).await;
    let on_redis = transcript(&probe(redis).await, calls).await;
    (on_file, on_redis)
}

#[tokio::test]
async fn redis_kv_stores_counts_lists_and_is_shared_by_runtimes() {
    let server = RedisServer::start();
    let plugin = probe(KvGrant::redis(&server.url)).await;
    assert_kv_round_trip(&plugin).await;

    // Another runtime (another process, in production) sees everything.
    let elsewhere = probe(KvGrant::redis(&server.url)).await;
    assert_eq!(call(&elsewhere, "kv-get", "colour").await.unwrap(), "blue");
    assert_eq!(call(&elsewhere, "kv-incr", "visits").await.unwrap(), "3");
    assert_eq!(
        call(&elsewhere, "kv-list", "").await.unwrap(),
        "b,colour,visits"
    );
}

#[tokio::test]
async fn redis_kv_namespaces_keep_plugins_apart() {
    let server = RedisServer::start();
    let runtime = runtime();
    let alpha = probe_in(&runtime, "alpha", KvGrant::redis(&server.url)).await;
    let beta = probe_in(&runtime, "beta", KvGrant::redis(&server.url)).await;
    call(&alpha, "kv-set", "secret=alpha's").await.unwrap();
    let err = call(&beta, "kv-get", "secret").await.unwrap_err();
    assert!(err.to_string().contains("no key"), "{err}");
    assert_eq!(call(&beta, "kv-list", "").await.unwrap(), "");

    // A namespace can be shared on purpose.
    let mut shared = KvGrant::redis(&server.url);
    shared.namespace = Some("alpha".into());
    let gamma = probe_in(&runtime, "gamma", shared).await;
    assert_eq!(call(&gamma, "kv-get", "secret").await.unwrap(), "alpha's");

    // Names with the separator in them cannot reach into each other:
    // namespace `x` with bucket `1:y` and namespace `x:1` with bucket `y`.
    let mut short = KvGrant::redis(&server.url);
    short.namespace = Some("x".into());
    let mut long = KvGrant::redis(&server.url);
    long.namespace = Some("x:1".into());
    let short = probe_in(&runtime, "short", short).await;
    let long = probe_in(&runtime, "long", long).await;
    call(&short, "kv-set", "1:y/k=short").await.unwrap();
    assert!(call(&long, "kv-get", "y/k").await.is_err());
    assert_eq!(call(&long, "kv-list", "y").await.unwrap(), "");
}

#[tokio::test]
async fn redis_kv_refuses_what_sqlite_refuses_with_the_same_errors() {
    let mut quotas = KvQuotas::default();
    quotas.max_key_bytes = 8;
    quotas.max_value_bytes = 8;
    // Bucket names count toward the total: 7 bytes of `default` for each
    // of the three keys the namespace may hold.
    quotas.max_total_bytes = 24 + 3 * 7;
    quotas.max_keys = 3;
    let calls = [
        ("kv-set", "a=1"),
        ("kv-set", "a-long-key=1"),
        ("kv-set", "b=123456789"),
        ("kv-set", "b=22"),
        // Over the key count: the whole batch is refused.
        ("kv-set-many", "c=3,d=4"),
        // Over the byte total: three entries of 9 bytes, 16 with their bucket.
        ("kv-set-many", "c=12345678,a=12345678,b=12345678"),
        // A key given twice: the last value counts.
        ("kv-set-many", "c=1,c=333"),
        ("kv-list", ""),
        ("kv-get", "c"),
        ("kv-delete", "c"),
        ("kv-set", "d=4"),
        ("kv-set", "e=5"),
        ("kv-delete", "d"),
        ("kv-set", "text=hello"),
        ("kv-incr", "text"),
        ("kv-delete", "text"),
        ("kv-set", "max=18446744073709551615"),
        ("kv-delete", "max"),
        ("kv-set", "max=1844674"),
        ("kv-incr", "max"),
        ("kv-incr", "fresh"),
        ("kv-list", ""),
    ];
    let (on_file, on_redis) = on_both_backends(&quotas, &calls).await;
    assert_eq!(on_redis, on_file);
    let refusals = on_redis
        .iter()
        .filter(|answer| answer.contains("kv quota exceeded"))
        .count();
    assert_eq!(refusals, 7, "{on_redis:#?}");
    assert!(
        on_redis[4].contains("the namespace would hold 4 keys (at most 3)"),
        "{on_redis:#?}"
    );
    assert!(
        on_redis.contains(&"kv-list  -> a,b,c".to_owned()),
        "the refused batches left nothing behind: {on_redis:#?}"
    );
    assert!(
        on_redis
            .iter()
            .any(|answer| answer.contains("is not a decimal counter")),
        "{on_redis:#?}"
    );
}

#[tokio::test]
async fn redis_kv_counters_fail_like_sqlite() {
    let calls = [
        ("kv-set", "text=hello"),
        ("kv-incr", "text"),
        ("kv-set", "max=18446744073709551615"),
        ("kv-incr", "max"),
        ("kv-get", "max"),
        ("kv-set", "padded=007"),
        ("kv-incr", "padded"),
    ];
    let (on_file, on_redis) = on_both_backends(&KvQuotas::default(), &calls).await;
    assert_eq!(on_redis, on_file);
    assert!(
        on_redis[3].contains("kv counter `max` would overflow"),
        "{on_redis:#?}"
    );
    assert_eq!(on_redis[6], "kv-incr padded -> 8");
}

#[tokio::test]
async fn redis_kv_lists_pages_in_byte_order() {
    let calls = [
        // 1,100 keys: two pages.
        ("kv-batches", "11"),
        ("kv-set", "mixed/b=1"),
        ("kv-set", "mixed/B=1"),
        ("kv-set", "mixed/é=1"),
        ("kv-set", "mixed/a~=1"),
        ("kv-set", "mixed/a=1"),
        ("kv-set", "mixed/=1"),
        ("kv-list", "mixed"),
    ];
    let (on_file, on_redis) = on_both_backends(&KvQuotas::default(), &calls).await;
    assert_eq!(on_redis, on_file);
    assert_eq!(on_redis[7], "kv-list mixed -> ,B,a,a~,b,é");

    let server = RedisServer::start();
    let plugin = probe(KvGrant::redis(&server.url)).await;
    call(&plugin, "kv-batches", "11").await.unwrap();
    let listed = call(&plugin, "kv-list", "").await.unwrap();
    let keys: Vec<&str> = listed.split(',').collect();
    assert_eq!(keys.len(), 1100);
    assert_eq!(keys[0], "b000000-00");
    assert_eq!(keys[1099], "b000010-99");
    assert!(keys.is_sorted(), "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kv_increments_from_two_runtimes_are_exact() {
    let server = RedisServer::start();
    // Two runtimes, each with its own plugin, connections and threads, as
    // two `warden serve` replicas would be.
    let replicas = [
        probe_in(&runtime(), "counter", KvGrant::redis(&server.url)).await,
        probe_in(&runtime(), "counter", KvGrant::redis(&server.url)).await,
    ];
    increment_hits_concurrently(&replicas, 4).await;
    let plugin = probe(KvGrant::redis(&server.url)).await;
    let mut renamed = KvGrant::redis(&server.url);
    renamed.namespace = Some("counter".into());
    let counter = probe(renamed).await;
    assert_eq!(call(&counter, "kv-get", "hits").await.unwrap(), "200");
    assert!(
        call(&plugin, "kv-get", "hits").await.is_err(),
        "another namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kv_quotas_hold_exactly_across_runtimes() {
    let server = RedisServer::start();
    let mut grant = KvGrant::redis(&server.url);
    grant.quotas.max_keys = 50;
    let mut writers = JoinSet::new();
    for runtime_index in 0..2 {
        let plugin = probe_in(&runtime(), "bounded", grant.clone()).await;
        for task in 0..4 {
            let plugin = plugin.clone();
            writers.spawn(async move {
                let mut stored = 0;
                for key in 0..20 {
                    let pair = format!("r{runtime_index}-t{task}-k{key:02}=v");
                    if call(&plugin, "kv-set", &pair).await.is_ok() {
                        stored += 1;
                    }
                }
                stored
            });
        }
    }
    let mut stored = 0;
    while let Some(joined) = writers.join_next().await {
        stored += joined.unwrap();
    }
    assert_eq!(stored, 50, "160 attempts, 50 keys allowed");
    let plugin = probe_in(&runtime(), "bounded", grant).await;
    let listed = call(&plugin, "kv-list", "").await.unwrap();
    assert_eq!(listed.split(',').count(), 50);
}

#[tokio::test]
async fn redis_kv_reconnects_after_the_server_drops_idle_connections() {
    let server = RedisServer::start();
    let plugin = probe(KvGrant::redis(&server.url)).await;
    call(&plugin, "kv-set", "kept=yes").await.unwrap();
    server.close_client_connections();
    // Past the idle time after which a pooled connection is checked.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&plugin, "kv-get", "kept").await.unwrap(), "yes");
    assert_eq!(call(&plugin, "kv-incr", "after").await.unwrap(), "1");
}

#[tokio::test]
async fn a_redis_store_that_cannot_be_used_fails_the_load() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let runtime = runtime();
    for (url, expected) in [
        (format!("redis://127.0.0.1:{closed_port}/0"), "refused"),
        ("redis://127.0.0.1:port/0".to_owned(), "kv store"),
        (format!("rediss://127.0.0.1:{closed_port}/0"), "TLS"),
        (
            format!("redis://:hunter2@127.0.0.1:{closed_port}/0"),
            "redis://***@127.0.0.1",
        ),
    ] {
        let loaded = runtime
            .load(
                Source::new("probe", guest_bytes(guests::PROBE)),
                sandbox(KvGrant::redis(&url)),
            )
            .await;
        let Err(Error::InvalidConfig(message)) = &loaded else {
            panic!("{url}: expected an invalid configuration");
        };
        assert!(message.contains(expected), "{url}: {message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
