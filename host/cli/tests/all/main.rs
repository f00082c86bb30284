//! The `warden` command, end to end. One test binary with a module per
//! command or concern, so the suite links once; `support` starts `warden`
//! and reads its reports for all of them.

mod budget;
mod cache;
mod compile;
mod exec;
mod export_http;
mod export_targets;
mod grants;
mod inspect;
mod kv;
mod kv_default;
mod manifest;
mod new;
mod policy;
mod readme;
mod run;
mod serve;
mod stream;
mod support;
mod terminal;
mod trust;
mod trust_store;
mod usage;
