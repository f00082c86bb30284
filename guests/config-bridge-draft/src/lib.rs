//! `wasi:config/store@0.2.0-rc.1`, the version in Warden's world, on top of
//! `wasi:config/store@0.2.0-draft`, the version the wasmCloud 1.x host
//! provides (`wasmcloud-runtime` 0.12.0, which also links the same interface
//! under its older name, `wasi:config/runtime@0.2.0-draft`).
//! `warden export-http --target wasmcloud` composes it in front of plugins
//! that read configuration.
//!
//! The two versions declare the same interface: `get`, `get-all` and an
//! `error` variant with `upstream` and `io` cases. Only the version differs,
//! and pre-release versions never match each other, so each call and each
//! error is passed through unchanged.

wit_bindgen::generate!({
    path: ["../../wit", "wit/config-0.2.0-draft"],
    inline: "
        package warden:config-bridge-draft;

        world config-bridge {
            import wasi:config/store@0.2.0-draft;
            export wasi:config/store@0.2.0-rc.1;
        }
    ",
    world: "warden:config-bridge-draft/config-bridge",
    generate_all,
});

use exports::wasi::config0_2_0_rc_1::store::{Error, Guest};
use wasi::config0_2_0_draft::store as wasmcloud;

struct Bridge;

impl Guest for Bridge {
    fn get(key: String) -> Result<Option<String>, Error> {
        wasmcloud::get(&key).map_err(from_wasmcloud)
    }

    fn get_all() -> Result<Vec<(String, String)>, Error> {
        wasmcloud::get_all().map_err(from_wasmcloud)
    }
}

/// The same two cases, carried over with their messages.
fn from_wasmcloud(error: wasmcloud::Error) -> Error {
    match error {
        wasmcloud::Error::Upstream(message) => Error::Upstream(message),
        wasmcloud::Error::Io(message) => Error::Io(message),
    }
}

export!(Bridge);
