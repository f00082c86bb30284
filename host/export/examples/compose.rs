//! Composing a Warden plugin into a `wasi:http` app for `wasmtime serve`,
//! as `warden export-http` does: check the plugin by loading it, compose it
//! with the HTTP adapter and the shims the target needs, write the app.
//!
//! ```text
//! cargo run -p warden-export --example compose -- target/guests/wasm32-wasip2/release/hello.wasm hello-http.wasm
//! wasmtime serve -Scli hello-http.wasm    # the command it prints
//! ```

use warden::{Runtime, Sandbox, Source};
use warden_export::{Target, compose};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(plugin), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: compose PLUGIN.wasm APP.wasm".into());
    };
    let bytes = std::fs::read(&plugin)?;

    // `compose` takes a plugin already checked: loading verifies the trust
    // policy and that the bytes are a component of Warden's plugin world.
    // Nothing runs, and nothing needs caching or an instance pool.
    let runtime = Runtime::builder()
        .no_compile_cache()
        .pooling(false)
        .build()?;
    runtime
        .load(Source::new("plugin", bytes.clone()), Sandbox::default())
        .await?;

    let app = compose(&bytes, Target::Wasmtime)?;
    std::fs::write(&output, &app.bytes)?;
    println!(
        "{output}: {} bytes for {}, exporting {:?}",
        app.bytes.len(),
        Target::Wasmtime.name(),
        app.exports
    );
    for (shim, serves) in &app.shims {
        println!("  shim {shim} serves {serves:?}");
    }
    // The `-S` flags `wasmtime serve` needs to link what the app imports.
    println!(
        "serve it with: wasmtime serve {} {output}",
        app.wasmtime_serve_flags().join(" ")
    );
    Ok(())
}
