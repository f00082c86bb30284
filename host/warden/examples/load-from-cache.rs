//! How long a component takes to load from the compile cache, warm: the
//! median of 20 `Runtime::compile(Source::read(path))` calls after the
//! first (which compiles) and the second (which checks the entry in full
//! and records the identities that later loads are vouched for by).
//!
//! ```text
//! cargo run --release -p warden --example load-from-cache -- target/guests/python/hello.wasm
//! ```
//!
//! The cache lives in a fresh directory under the system's temporary
//! directory, removed at the end.

use std::time::{Duration, Instant};

use anyhow::Context;
use warden::{Runtime, Sandbox, Source};

/// Warm loads measured.
const SAMPLES: usize = 20;
/// Longer than the compile cache's racy window (2 s): an identity is only
/// recorded once the file's last change is that old.
const SETTLE: Duration = Duration::from_millis(2500);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: load-from-cache COMPONENT.wasm")?;
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::builder()
        .compile_cache(dir.path().join("compiled"))
        .compile_cache_key(dir.path().join("key/cache.key"))
        .build()?;
    let load = || async {
        let started = Instant::now();
        let info = runtime
            .compile(Source::read(&path).await?, Sandbox::default())
            .await?;
        anyhow::Ok((started.elapsed(), info.cached))
    };
    let (first, _) = load().await?;
    println!("first load (compiles): {first:?}");
    tokio::time::sleep(SETTLE).await;
    let (second, _) = load().await?;
    println!("second load (checks the entry in full): {second:?}");
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let (took, cached) = load().await?;
        anyhow::ensure!(cached, "a warm load compiled");
        samples.push(took);
    }
    samples.sort();
    println!(
        "warm load from the cache, median of {SAMPLES}: {:?} (min {:?}, max {:?})",
        samples[SAMPLES / 2],
        samples[0],
        samples[SAMPLES - 1]
    );
    Ok(())
}
