//! Deterministic mode: timers and file timestamps follow the virtual clock,
//! so that the same calls give the same output on every run, and waiting
//! for a timer takes no real time.

use std::time::{Duration, Instant};

use warden::{Error, Grants, Plugin, Preopen, Runtime, Sandbox};
use warden_tests::guests;

use crate::{load, runtime, tight_limits};

async fn probe(deterministic: bool) -> Plugin {
    load_on(&runtime(), guests::PROBE, deterministic, Vec::new()).await
}

/// The hostile guest, which reads files (the probe imports no filesystem).
async fn hostile(deterministic: bool, dirs: Vec<Preopen>) -> Plugin {
    load_on(&runtime(), guests::HOSTILE, deterministic, dirs).await
}

async fn load_on(
    runtime: &Runtime,
    guest: &str,
    deterministic: bool,
    dirs: Vec<Preopen>,
) -> Plugin {
    let mut grants = Grants::default();
    grants.deterministic = deterministic;
    grants.dirs = dirs;
    let mut sandbox = Sandbox::with_limits(tight_limits());
    sandbox.grants = grants;
    load(runtime, guest, sandbox).await
}

async fn call(plugin: &Plugin, action: &str, input: &str) -> Result<String, Error> {
    plugin
        .execute(action, input.as_bytes())
        .await
        .result
        .map(|output| String::from_utf8(output).unwrap())
}

#[tokio::test]
async fn timers_follow_the_virtual_clock_and_take_no_real_time() {
    let runtime = runtime();
    let plugin = load_on(&runtime, guests::PROBE, true, Vec::new()).await;
    // Readings 0 ms (before), then one per `ready` check from 1 ms: the
    // 51st check, at 51 ms, finds the timer due; `block` reads 52 ms and
    // the last reading is 53 ms.
    for _ in 0..3 {
        assert_eq!(call(&plugin, "timer", "50").await.unwrap(), "0 53000000 50");
    }
    // Of two timers polled together (due at 1 s and 10 ms on a fresh
    // clock), only the earlier is due; the clock jumps to it.
    assert_eq!(
        call(&plugin, "poll-timers", "1000,10").await.unwrap(),
        "[1] 10000000"
    );

    // An hour's sleep returns at once, and the clock shows the hour passed.
    let started = Instant::now();
    let nap = call(&plugin, "nap", "3600000").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (before, after) = nap.split_once(' ').unwrap();
    let slept = after.parse::<u64>().unwrap() - before.parse::<u64>().unwrap();
    assert!(slept >= 3_600_000_000_000, "{nap}");
    assert_eq!(call(&plugin, "nap", "3600000").await.unwrap(), nap);
    assert_eq!(runtime.instances_in_use(), 0);
}

#[tokio::test]
async fn real_timers_still_wait_in_real_time() {
    let plugin = probe(false).await;
    let started = Instant::now();
    let nap = call(&plugin, "nap", "200").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "{nap}");
    let ready = call(&plugin, "poll-timers", "5000,10").await.unwrap();
    assert!(ready.starts_with("[1] "), "{ready}");
}

#[tokio::test]
async fn file_timestamps_read_as_the_fixed_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), "x").unwrap();
    let grant = vec![Preopen::read_only(dir.path(), "/data")];

    let fixed = warden::DETERMINISTIC_WALL_CLOCK.as_secs().to_string();
    let plugin = hostile(true, grant.clone()).await;
    assert_eq!(
        call(&plugin, "stat", "/data/file.txt").await.unwrap(),
        [fixed.as_str(); 3].join(" "),
        "stat-at, stat, access time"
    );
    // Errors pass through unchanged.
    let missing = call(&plugin, "stat", "/data/missing.txt").await;
    assert!(
        matches!(&missing, Err(Error::Plugin(warden::PluginError::Failed(why))) if why.contains("No such file")),
        "{missing:?}"
    );

    let real = hostile(false, grant).await;
    let stat = call(&real, "stat", "/data/file.txt").await.unwrap();
    let modified: u64 = stat.split(' ').next().unwrap().parse().unwrap();
    assert!(modified > 1_700_000_000, "the file's own time: {stat}");
}
