//! A plain WASI program, run by `warden exec`; Warden refuses it as a plugin
//! because it does not export `warden:plugin/guest`. Built for both
//! `wasm32-wasip2` (a component) and `wasm32-wasip1` (a core module that
//! Warden runs on wasmtime-wasi's preview 1 implementation).
//!
//! Usage: `command [SUBCOMMAND ARGS...]`
//! - (none): prints a greeting;
//! - `args`: prints each argument on its own line;
//! - `env NAME`: prints the variable, or exits 3 when it is not set;
//! - `cat PATH`: prints the file (exits 4 when it cannot);
//! - `write PATH TEXT`: writes the file (exits 5 when it cannot);
//! - `argv`: writes each argument followed by a NUL byte, verbatim;
//! - `environ`: writes each `NAME=VALUE` followed by a NUL byte, verbatim;
//! - `bad-fd`: writes to, reads from, seeks, syncs, truncates and asks for
//!   the metadata of descriptors that are not open, and prints the error
//!   number each operation returned;
//! - `exit CODE`: exits with CODE (0 to 255);
//! - `loop`: spins forever;
//! - `grow`: allocates until memory runs out;
//! - `ls PATH`: prints each entry of the directory, sorted, with `dir`,
//!   `file` or `other` (exits 6 when it cannot list it).

use std::hint::black_box;
use std::io::Write;

#[cfg(target_env = "p2")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:cli/imports@0.2.12",
    generate_all,
});

/// Exits with `code`: through `exit-with-code` as a component, through
/// `proc_exit` as a preview 1 module.
fn exit_with(code: u8) -> ! {
    // Exiting skips the standard library's own flush of buffered output.
    let _ = std::io::stdout().flush();
    #[cfg(target_env = "p2")]
    wasi::cli::exit::exit_with_code(code);
    std::process::exit(i32::from(code))
}

fn main() {
    exit_with(run());
}

/// Does what the arguments say and returns the exit code.
fn run() -> u8 {
    let args: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match words.as_slice() {
        [] => println!("hello from a wasi:cli command"),
        ["args", rest @ ..] => {
            for arg in rest {
                println!("{arg}");
            }
        }
        ["env", name] => match std::env::var(name) {
            Ok(value) => println!("{value}"),
            Err(_) => {
                eprintln!("{name} is not set");
                return 3;
            }
        },
        ["cat", path] => match std::fs::read_to_string(path) {
            Ok(text) => print!("{text}"),
            Err(err) => {
                eprintln!("cannot read {path}: {err}");
                return 4;
            }
        },
        ["write", path, text] => {
            if let Err(err) = std::fs::write(path, text) {
                eprintln!("cannot write {path}: {err}");
                return 5;
            }
        }
        ["argv", rest @ ..] => {
            let mut out = std::io::stdout().lock();
            for arg in rest {
                let _ = out.write_all(arg.as_bytes()).and(out.write_all(b"\0"));
            }
        }
        ["environ"] => {
            let mut out = std::io::stdout().lock();
            for (name, value) in std::env::vars() {
                let _ = write!(out, "{name}={value}\0");
            }
        }
        ["bad-fd"] => bad_descriptor(),
        ["exit", code] => return code.parse().unwrap_or(1),
        ["loop"] => {
            let mut counter = 0u64;
            loop {
                counter = black_box(counter.wrapping_add(1));
            }
        }
        ["grow"] => {
            let mut blocks = Vec::new();
            loop {
                blocks.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        ["ls", path] => match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut lines = Vec::new();
                for entry in entries {
                    let Ok(entry) = entry else {
                        return 6;
                    };
                    let kind = match entry.file_type() {
                        Ok(kind) if kind.is_dir() => "dir",
                        Ok(kind) if kind.is_file() => "file",
                        _ => "other",
                    };
                    lines.push(format!("{} {kind}", entry.file_name().to_string_lossy()));
                }
                lines.sort();
                for line in lines {
                    println!("{line}");
                }
            }
            Err(err) => {
                eprintln!("cannot list {path}: {err}");
                return 6;
            }
        },
        other => {
            eprintln!("unknown arguments: {other:?}");
            return 2;
        }
    }
    0
}

/// Descriptor numbers no WASI host hands out before a program opens files:
/// a small one, and the largest a descriptor can be.
const UNOPENED_DESCRIPTORS: [i32; 2] = [42, i32::MAX];

/// Uses descriptors that are not open and prints the error number of each
/// operation (`badf` is 8 in WASI), as a program checking its I/O would.
fn bad_descriptor() {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::FromRawFd;
    let errno = |result: std::io::Result<()>| match result {
        Ok(()) => "ok".to_owned(),
        Err(err) => err
            .raw_os_error()
            .map_or_else(|| format!("{err}"), |code| code.to_string()),
    };
    for descriptor in UNOPENED_DESCRIPTORS {
        // SAFETY: the descriptor is never closed or used for anything but
        // these failing calls; `ManuallyDrop` keeps the file from closing it.
        let mut file =
            std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(descriptor) });
        println!(
            "{descriptor}: write {} read {} seek {} metadata {} sync {} set-len {}",
            errno(file.write(b"x").map(drop)),
            errno(file.read(&mut [0; 4]).map(drop)),
            errno(file.seek(SeekFrom::Start(1)).map(drop)),
            errno(file.metadata().map(drop)),
            errno(file.sync_all()),
            errno(file.set_len(0)),
        );
    }
}
