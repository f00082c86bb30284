//! `wasi:config/store@0.2.0-rc.1`, the version in Warden's world, on top of
//! `wasi:config/store@0.2.0-draft-2024-09-27`, the version Spin 3.x provides
//! (a component's `variables`). `warden export-http --target spin` composes
//! it in front of plugins that read configuration.
//!
//! The two versions declare the same interface: `get`, `get-all` and an
//! `error` variant with `upstream` and `io` cases. Only the version differs,
//! and pre-release versions never match each other, so each call and each
//! error is passed through unchanged.

wit_bindgen::generate!({
    path: ["../../wit", "wit/config-0.2.0-draft-2024-09-27"],
    inline: "
        package warden:config-bridge-2024-09-27;

        world config-bridge {
            import wasi:config/store@0.2.0-draft-2024-09-27;
            export wasi:config/store@0.2.0-rc.1;
        }
    ",
    world: "warden:config-bridge-2024-09-27/config-bridge",
    generate_all,
});

use exports::wasi::config0_2_0_rc_1::store::{Error, Guest};
use wasi::config0_2_0_draft_2024_09_27::store as spin;

struct Bridge;

impl Guest for Bridge {
    fn get(key: String) -> Result<Option<String>, Error> {
        spin::get(&key).map_err(from_spin)
    }

    fn get_all() -> Result<Vec<(String, String)>, Error> {
        spin::get_all().map_err(from_spin)
    }
}

/// The same two cases, carried over with their messages.
fn from_spin(error: spin::Error) -> Error {
    match error {
        spin::Error::Upstream(message) => Error::Upstream(message),
        spin::Error::Io(message) => Error::Io(message),
    }
}

export!(Bridge);
