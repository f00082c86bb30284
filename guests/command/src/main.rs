//! A plain `wasi:cli/run` command. Warden must refuse it as a plugin because
//! it does not export `warden:plugin/guest`.

fn main() {
    println!("hello from a wasi:cli command");
}
