//! The `hello` plugin on world 0.2: the same actions as the 0.1 `hello`,
//! async, plus streaming actions that work on input as it arrives.
//!
//! Actions:
//! - `count-vowels`: the number of a, e, i, o, u (either case) in the input, as decimal text;
//! - `echo`: the input, unchanged;
//! - `greet`: `Hello, NAME!` for the UTF-8 input (`world` when empty); it also
//!   writes that line to stdout and logs it through `wasi:logging`.
//!
//! Streaming actions (`execute-stream`):
//! - `count`: reads the whole input, then writes `lines N vowels M`;
//! - `upper`: a `tee`-like transform: every chunk comes back with ASCII
//!   letters in upper case as soon as it has been read;
//! - `echo`: the input, unchanged, chunk by chunk;
//! - the whole-input actions above, on input collected up to 16 MiB, so that
//!   a host may stream any action of this plugin.

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "warden:plugin/streaming-lifecycle-plugin@0.2.0",
    generate_all,
});

use exports::warden::plugin::guest::Guest;
use exports::warden::plugin::lifecycle::Guest as Lifecycle;
use exports::warden::plugin::streaming::Guest as Streaming;
use warden::plugin::types::{Action, Metadata, PluginError};
use wasi::logging::logging::{Level, log};
use wit_bindgen::{FutureReader, StreamReader, StreamResult};

struct Hello;

/// How many bytes one read asks for: small enough that the plugin's memory
/// stays flat whatever the input's size.
const CHUNK_BYTES: usize = 64 * 1024;

fn action(name: &str, description: &str, input: &str, output: &str) -> Action {
    Action {
        name: name.into(),
        description: description.into(),
        input_type: input.into(),
        output_type: output.into(),
    }
}

impl Guest for Hello {
    async fn init() -> Result<Metadata, PluginError> {
        Ok(Metadata {
            name: "hello".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Counts vowels, echoes its input and greets; streams too".into(),
            actions: vec![
                action(
                    "count-vowels",
                    "Counts the vowels of the input",
                    "text/plain",
                    "text/plain",
                ),
                action("echo", "Returns the input unchanged", "", ""),
                action(
                    "greet",
                    "Greets the name given as input",
                    "text/plain",
                    "text/plain",
                ),
                action(
                    "count",
                    "Streaming: counts lines and vowels",
                    "text/plain",
                    "text/plain",
                ),
                action(
                    "upper",
                    "Streaming: upper-cases ASCII letters as they flow",
                    "text/plain",
                    "text/plain",
                ),
            ],
            authors: vec!["The Warden developers".into()],
            license: Some("Apache-2.0".into()),
            homepage: None,
        })
    }

    async fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        match action.as_str() {
            "count-vowels" => Ok(vowels::count_vowels(&input).to_string().into_bytes()),
            "echo" => Ok(input),
            "greet" => greet(&input),
            _ => Err(PluginError::UnknownAction(action)),
        }
    }
}

impl Streaming for Hello {
    async fn execute_stream(
        action: String,
        mut input: StreamReader<u8>,
    ) -> (StreamReader<u8>, FutureReader<Result<(), PluginError>>) {
        let (mut output, output_reader) = wit_stream::new::<u8>();
        let (outcome, outcome_reader) = wit_future::new::<Result<(), PluginError>>(|| {
            Err(PluginError::Failed("the plugin stopped early".into()))
        });
        wit_bindgen::spawn_local(async move {
            let result = match action.as_str() {
                "count" => {
                    let mut counts = Counts::default();
                    while let Some(chunk) = read_chunk(&mut input).await {
                        counts.add(&chunk);
                    }
                    let summary = format!("lines {} vowels {}", counts.lines, counts.vowels);
                    output.write_all(summary.into_bytes()).await;
                    Ok(())
                }
                "upper" | "echo" => {
                    let upper = action == "upper";
                    while let Some(mut chunk) = read_chunk(&mut input).await {
                        if upper {
                            chunk.make_ascii_uppercase();
                        }
                        if !output.write_all(chunk).await.is_empty() {
                            break;
                        }
                    }
                    Ok(())
                }
                // The other actions need their whole input: collect it (up to
                // WHOLE_INPUT_BYTES) and answer as `execute` does.
                _ => match read_whole(&mut input).await {
                    Ok(whole) => match Hello::execute(action, whole).await {
                        Ok(answer) => {
                            output.write_all(answer).await;
                            Ok(())
                        }
                        Err(err) => Err(err),
                    },
                    Err(err) => Err(err),
                },
            };
            drop(output);
            let _ = outcome.write(result).await;
        });
        (output_reader, outcome_reader)
    }
}

impl Lifecycle for Hello {
    async fn shutdown() {
        log(Level::Info, "lifecycle", "shutting down");
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

/// The most input a whole-input action collects when called through
/// `execute-stream`.
const WHOLE_INPUT_BYTES: usize = 16 << 20;

/// All of `input`, for an action that needs it whole.
async fn read_whole(input: &mut StreamReader<u8>) -> Result<Vec<u8>, PluginError> {
    let mut whole = Vec::new();
    while let Some(chunk) = read_chunk(input).await {
        whole.extend_from_slice(&chunk);
        if whole.len() > WHOLE_INPUT_BYTES {
            return Err(PluginError::InvalidInput(format!(
                "this action takes at most {WHOLE_INPUT_BYTES} bytes"
            )));
        }
    }
    Ok(whole)
}

/// Lines and vowels seen so far.
#[derive(Default)]
struct Counts {
    lines: u64,
    vowels: u64,
}

impl Counts {
    fn add(&mut self, chunk: &[u8]) {
        self.lines += chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
        self.vowels += vowels::count_vowels(chunk) as u64;
    }
}

fn greet(input: &[u8]) -> Result<Vec<u8>, PluginError> {
    let name = std::str::from_utf8(input)
        .map_err(|err| PluginError::InvalidInput(format!("the name must be UTF-8: {err}")))?;
    let name = if name.is_empty() { "world" } else { name };
    let greeting = format!("Hello, {name}!");
    println!("{greeting}");
    log(Level::Info, "greet", &format!("greeted {name}"));
    Ok(greeting.into_bytes())
}

export!(Hello);
