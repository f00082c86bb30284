//! The `warden` command, end to end. One test
//! binary with a module per concern, so the suite links once.

mod budget;
mod cli;
mod export_http;
mod export_targets;
mod kv_default;
mod serve;
