//! {{name}}: a Warden plugin in Rust. It counts vowels, echoes its input and
//! greets; replace the actions with your own.
//!
//! Build: cargo build --release --target wasm32-wasip2
//! Run:   warden run target/wasm32-wasip2/release/{{crate}}.wasm count-vowels --input "hello world"

wit_bindgen::generate!({
    path: "wit",
    world: "warden:plugin/plugin",
    generate_all,
});

use exports::warden::plugin::guest::Guest;
use warden::plugin::types::{Metadata, PluginError};
use wasi::logging::logging::{Level, log};

const ACTIONS: &[&str] = &["count-vowels", "echo", "greet"];

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<Metadata, PluginError> {
        Ok(Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Counts vowels, echoes, greets".into(),
            actions: ACTIONS.iter().map(|action| action.to_string()).collect(),
        })
    }

    fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        match action.as_str() {
            "count-vowels" => {
                let vowels = input
                    .iter()
                    .filter(|byte| b"aeiouAEIOU".contains(byte))
                    .count();
                Ok(vowels.to_string().into_bytes())
            }
            "echo" => Ok(input),
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

export!(Plugin);
