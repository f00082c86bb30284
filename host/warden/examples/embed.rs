//! Embedding Warden in a Rust application: load a plugin, run it under
//! limits, read its output and report, and handle its failures.
//!
//! ```text
//! cargo run --example embed -- target/guests/wasm32-wasip2/release/hello.wasm
//! ```

use std::time::Duration;

use warden::{Error, Limits, PluginError, Runtime, Sandbox};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: embed PATH/TO/hello.wasm")?;

    // One runtime per process; it is cheap to clone and safe to share.
    let runtime = Runtime::new()?;
    let mut limits = Limits::default();
    limits.timeout = Duration::from_secs(1);
    limits.memory_bytes = 32 << 20;
    let plugin = runtime
        .load_file(&path, Sandbox::with_limits(limits))
        .await?;

    // Each call runs in a fresh instance and comes back with a report.
    let outcome = plugin.execute("count-vowels", b"hello world").await;
    let vowels = String::from_utf8(outcome.result?)?;
    println!(
        "count-vowels(\"hello world\") = {vowels} in {:?}, peak memory {} bytes",
        outcome.report.duration, outcome.report.peak_memory_bytes
    );

    let outcome = plugin.execute("greet", b"embedder").await;
    println!("greet → {}", String::from_utf8_lossy(&outcome.result?));
    for record in &outcome.report.logs {
        println!(
            "  log [{}] {}: {}",
            record.level, record.context, record.message
        );
    }

    // Failures are typed: match on what you would handle differently.
    match plugin.execute("shout", b"hi").await.result {
        Err(Error::Plugin(PluginError::UnknownAction(action))) => {
            let actions = plugin.metadata().await?.actions;
            println!("{}", warden::unknown_action_message(&action, &actions));
        }
        other => return Err(format!("expected an unknown action, got {other:?}").into()),
    }

    // A live instance keeps its state between calls.
    let mut instance = plugin.instantiate().await.result?;
    let metadata = instance.metadata().clone();
    for text in ["aeiou", "xyz"] {
        let output = instance
            .execute("count-vowels", text.as_bytes())
            .await
            .result?;
        println!(
            "{} on a live instance: {text} → {}",
            metadata.name,
            String::from_utf8_lossy(&output)
        );
    }
    Ok(())
}
