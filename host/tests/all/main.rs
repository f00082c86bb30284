//! The `warden` command and the library's examples, end to end. One test
//! binary with a module per concern, so the suite links once.

mod budget;
mod cli;
mod export_http;
mod export_targets;
mod serve;
mod text_filter;
