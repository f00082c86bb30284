//! {{name}}: a Warden plugin in Rust for world 0.2 (async, on WASI 0.3). It
//! greets, and upper-cases a stream as it flows; replace the actions with
//! your own.
//!
//! Build: cargo build --release --target wasm32-wasip2
//! Run:   warden run target/wasm32-wasip2/release/{{crate}}.wasm greet --input Ada

wit_bindgen::generate!({
    path: "wit",
    world: "warden:plugin/streaming-plugin@0.2.0",
    generate_all,
});

use exports::warden::plugin::guest::Guest;
use exports::warden::plugin::streaming::Guest as Streaming;
use warden::plugin::types::{Action, Metadata, PluginError};
use wasi::logging::logging::{Level, log};
use wit_bindgen::{FutureReader, StreamReader, StreamResult};

/// How many bytes one read asks for: the plugin's memory stays flat whatever
/// the input's size.
const CHUNK_BYTES: usize = 64 * 1024;

struct Plugin;

impl Guest for Plugin {
    async fn init() -> Result<Metadata, PluginError> {
        Ok(Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Greets, and upper-cases a stream".into(),
            actions: vec![
                Action {
                    name: "greet".into(),
                    description: "Greets the name given as input".into(),
                    input_type: "text/plain".into(),
                    output_type: "text/plain".into(),
                },
                Action {
                    name: "upper".into(),
                    description: "Streaming: upper-cases ASCII letters as they flow".into(),
                    input_type: "text/plain".into(),
                    output_type: "text/plain".into(),
                },
            ],
            authors: vec![],
            license: None,
            homepage: None,
        })
    }

    /// Whole input in, whole output out.
    async fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        match action.as_str() {
            "greet" => {
                let name = std::str::from_utf8(&input).map_err(|err| {
                    PluginError::InvalidInput(format!("the name must be UTF-8: {err}"))
                })?;
                let name = if name.is_empty() { "world" } else { name };
                let greeting = format!("Hello, {name}!");
                println!("{greeting}");
                log(Level::Info, "greet", &format!("greeted {name}"));
                Ok(greeting.into_bytes())
            }
            _ => Err(PluginError::UnknownAction(action)),
        }
    }
}

impl Streaming for Plugin {
    /// Returns the output stream at once; a task that outlives this call
    /// writes it while the input arrives, then writes the outcome.
    async fn execute_stream(
        action: String,
        mut input: StreamReader<u8>,
    ) -> (StreamReader<u8>, FutureReader<Result<(), PluginError>>) {
        let (mut output, output_reader) = wit_stream::new::<u8>();
        // What the host reads if the task ends without writing an outcome.
        let (outcome, outcome_reader) = wit_future::new::<Result<(), PluginError>>(|| {
            Err(PluginError::Failed("the plugin stopped early".into()))
        });
        wit_bindgen::spawn_local(async move {
            let result = match action.as_str() {
                "upper" => {
                    while let Some(mut chunk) = read_chunk(&mut input).await {
                        chunk.make_ascii_uppercase();
                        // Whatever is left unwritten means the reader has gone.
                        if !output.write_all(chunk).await.is_empty() {
                            break;
                        }
                    }
                    Ok(())
                }
                _ => Err(PluginError::UnknownAction(action)),
            };
            drop(output);
            let _ = outcome.write(result).await;
        });
        (output_reader, outcome_reader)
    }
}

/// The next chunk of `input`, or `None` once it has ended.
async fn read_chunk(input: &mut StreamReader<u8>) -> Option<Vec<u8>> {
    loop {
        let (result, chunk) = input.read(Vec::with_capacity(CHUNK_BYTES)).await;
        match result {
            StreamResult::Complete(_) if !chunk.is_empty() => return Some(chunk),
            StreamResult::Complete(_) | StreamResult::Cancelled => continue,
            StreamResult::Dropped => return None,
        }
    }
}

export!(Plugin);
