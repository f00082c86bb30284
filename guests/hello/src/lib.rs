//! The `hello` plugin: the smallest useful Warden plugin.
//!
//! Actions:
//! - `count-vowels`: the number of a, e, i, o, u (either case) in the input, as decimal text;
//! - `echo`: the input, unchanged;
//! - `greet`: `Hello, NAME!` for the UTF-8 input (`world` when empty); it also
//!   writes that line to stdout and logs it through `wasi:logging`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "warden:plugin/plugin",
    generate_all,
});

use exports::warden::plugin::guest::Guest;
use warden::plugin::types::{Metadata, PluginError};
use wasi::logging::logging::{Level, log};

struct Hello;

impl Guest for Hello {
    fn init() -> Result<Metadata, PluginError> {
        Ok(Metadata {
            name: "hello".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Counts vowels, echoes its input and greets".into(),
            actions: vec!["count-vowels".into(), "echo".into(), "greet".into()],
        })
    }

    fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        match action.as_str() {
            "count-vowels" => Ok(vowels::count_vowels(&input).to_string().into_bytes()),
            "echo" => Ok(input),
            "greet" => greet(&input),
            _ => Err(PluginError::UnknownAction(action)),
        }
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
