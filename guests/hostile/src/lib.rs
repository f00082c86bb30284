//! A plugin that misbehaves on purpose. Each action attacks one limit or
//! sandbox boundary, so Warden's tests can prove that the host contains it.
//!
//! Actions (the input is described where it matters):
//! - `loop`: spins forever without calling the host;
//! - `sleep`: blocks in a host call (`wasi:clocks` poll) forever;
//! - `nap MS`: sleeps MS milliseconds, then returns `rested`;
//! - `grow-memory`: allocates and touches 1 MiB blocks until allocation fails;
//! - `recurse`: recurses without bound, overflowing the wasm stack;
//! - `panic`: panics (a trap, with a message on stderr);
//! - `output BYTES`: returns a buffer of BYTES bytes;
//! - `print BYTES`: writes BYTES bytes to stdout, then returns `done`;
//! - `read-file PATH`: returns the file's contents;
//! - `write-file PATH`: overwrites the file with `overwritten`;
//! - `truncate PATH`: opens the file for writing with truncation;
//! - `rename FROM>TO`, `link FROM>TO`: renames or hard-links a file;
//! - `remove PATH`, `mkdir PATH`: removes a file, creates a directory;
//! - `env NAME`: returns the environment variable's value;
//! - `log-flood COUNT`: emits COUNT log records of 1 KiB each;
//! - `calls`: how many times `execute` has run in this instance (state that
//!   survives between calls on a live instance, and never on a fresh one);
//! - `busy-host-calls`: spins forever, calling the host (the monotonic clock)
//!   on every turn;
//! - `grow-slowly`: allocates 256 KiB every millisecond until allocation fails;
//! - `memory-grow`: executes `memory.grow` directly until the host refuses,
//!   then returns how many pages it got (a refused growth is `-1` to the
//!   guest, not a trap);
//! - `leak-handles`: creates timer pollables and never drops them;
//! - `log-huge BYTES`: emits one log record with a BYTES-byte message;
//! - `symlink TARGET>LINK`: creates LINK, a symbolic link whose text is
//!   TARGET, which may point anywhere (`../../..` included);
//! - `stat PATH`: the file's modification time in seconds, as `stat-at` on
//!   its directory and as `stat` on the open file report it, then its
//!   access time.
//! - `header-maps COUNT`: builds COUNT `wasi:http` header maps of 100 KiB
//!   each and keeps them all (host memory its memory limit does not see);
//!   panics if the host refuses one;
//! - `dir-streams COUNT`: opens COUNT `read-directory` streams on the
//!   directory granted at `/data` and keeps them all, unread; panics if the
//!   host refuses one;
//! - `body-buffers COUNT`: builds COUNT outgoing `wasi:http` requests, fills
//!   each one's body with as much as the host buffers, and keeps them unsent;
//! - `open-at MODE PATH`: opens PATH (`..`, absolute and trailing-slash paths
//!   included, as written) relative to the directory granted at `/data`
//!   through `wasi:filesystem` itself, following symbolic links, for
//!   `read`, `write` (creating the file) or `truncate`; answers `opened`, or
//!   fails with the host's `wasi:filesystem` error code by its WIT name
//!   (`not-permitted`). The
//!   standard library's paths go through wasi-libc, which refuses some of
//!   them in the guest before the host sees them.
//!
//! `init` misbehaves when the environment variable `HOSTILE_INIT` (which only
//! a grant makes visible) says so: `trap`, `fail` or `loop`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "warden:plugin/plugin",
    generate_all,
});

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use exports::warden::plugin::guest::Guest;
use warden::plugin::types::{Metadata, PluginError};
use wasi::logging::logging::{Level, log};

const ACTIONS: &[&str] = &[
    "loop",
    "sleep",
    "nap",
    "grow-memory",
    "recurse",
    "panic",
    "output",
    "print",
    "read-file",
    "write-file",
    "truncate",
    "rename",
    "link",
    "remove",
    "mkdir",
    "env",
    "log-flood",
    "calls",
    "busy-host-calls",
    "grow-slowly",
    "memory-grow",
    "leak-handles",
    "log-huge",
    "symlink",
    "stat",
    "header-maps",
    "dir-streams",
    "body-buffers",
    "open-at",
];

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Hostile;

impl Guest for Hostile {
    fn init() -> Result<Metadata, PluginError> {
        match std::env::var("HOSTILE_INIT").as_deref() {
            Ok("trap") => panic!("the hostile plugin traps in init on purpose"),
            Ok("fail") => return Err(PluginError::Failed("init refuses on purpose".into())),
            Ok("loop") => spin_forever(),
            _ => {}
        }
        Ok(Metadata {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose; one action per limit".into(),
            actions: ACTIONS.iter().map(|action| action.to_string()).collect(),
        })
    }

    fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match action.as_str() {
            "loop" => spin_forever(),
            "sleep" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            "nap" => {
                let millis = parse_size(&input)? as u64;
                std::thread::sleep(std::time::Duration::from_millis(millis));
                Ok(b"rested".to_vec())
            }
            "grow-memory" => grow_memory(),
            "recurse" => Ok(recurse(u64::MAX).to_string().into_bytes()),
            "panic" => panic!("the hostile plugin panics on purpose"),
            "output" => Ok(vec![b'x'; parse_size(&input)?]),
            "print" => {
                let mut remaining = parse_size(&input)?;
                let chunk = [b'y'; 4096];
                let mut stdout = std::io::stdout();
                while remaining > 0 {
                    let len = remaining.min(chunk.len());
                    stdout.write_all(&chunk[..len]).map_err(failed)?;
                    remaining -= len;
                }
                stdout.flush().map_err(failed)?;
                Ok(b"done".to_vec())
            }
            "read-file" => std::fs::read(utf8(&input)?).map_err(failed),
            "write-file" => std::fs::write(utf8(&input)?, b"overwritten")
                .map(|()| b"written".to_vec())
                .map_err(failed),
            "truncate" => std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(utf8(&input)?)
                .map(|_| b"truncated".to_vec())
                .map_err(failed),
            "rename" => {
                let (from, to) = two_paths(&input)?;
                std::fs::rename(from, to)
                    .map(|()| b"renamed".to_vec())
                    .map_err(failed)
            }
            "link" => {
                let (from, to) = two_paths(&input)?;
                std::fs::hard_link(from, to)
                    .map(|()| b"linked".to_vec())
                    .map_err(failed)
            }
            "remove" => std::fs::remove_file(utf8(&input)?)
                .map(|()| b"removed".to_vec())
                .map_err(failed),
            "mkdir" => std::fs::create_dir(utf8(&input)?)
                .map(|()| b"created".to_vec())
                .map_err(failed),
            "env" => std::env::var(utf8(&input)?)
                .map(String::into_bytes)
                .map_err(failed),
            "log-flood" => {
                let message = "z".repeat(1024);
                for _ in 0..parse_size(&input)? {
                    log(Level::Info, "flood", &message);
                }
                Ok(b"done".to_vec())
            }
            "calls" => Ok(calls.to_string().into_bytes()),
            "busy-host-calls" => loop {
                black_box(wasi::clocks::monotonic_clock::now());
            },
            "grow-slowly" => grow_slowly(),
            "memory-grow" => Ok(grow_until_refused().to_string().into_bytes()),
            "leak-handles" => loop {
                std::mem::forget(wasi::clocks::monotonic_clock::subscribe_duration(u64::MAX));
            },
            "log-huge" => {
                log(Level::Info, "huge", &"h".repeat(parse_size(&input)?));
                Ok(b"done".to_vec())
            }
            "symlink" => {
                let (target, link) = two_paths(&input)?;
                let (dir, link) = in_preopen(link)?;
                dir.symlink_at(target, link)
                    .map(|()| b"linked".to_vec())
                    .map_err(|code| failed(format!("{code:?}")))
            }
            "stat" => {
                let path = utf8(&input)?;
                let seconds = |time: std::io::Result<std::time::SystemTime>| {
                    time.map_err(failed)?
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|since| since.as_secs())
                        .map_err(failed)
                };
                let at = std::fs::metadata(path).map_err(failed)?;
                let open = std::fs::File::open(path)
                    .and_then(|file| file.metadata())
                    .map_err(failed)?;
                let times = format!(
                    "{} {} {}",
                    seconds(at.modified())?,
                    seconds(open.modified())?,
                    seconds(at.accessed())?
                );
                Ok(times.into_bytes())
            }
            "header-maps" => keep_header_maps(parse_size(&input)?),
            "dir-streams" => keep_directory_streams(parse_size(&input)?),
            "body-buffers" => keep_body_buffers(parse_size(&input)?),
            "open-at" => open_at(utf8(&input)?),
            _ => Err(PluginError::UnknownAction(action)),
        }
    }
}

/// Builds `count` header maps of 100 KiB and keeps every one.
fn keep_header_maps(count: usize) -> Result<Vec<u8>, PluginError> {
    let value = vec![b'h'; 100 << 10];
    let mut kept = Vec::with_capacity(count);
    for _ in 0..count {
        let fields = wasi::http::types::Fields::from_list(&[("x-bulk".to_owned(), value.clone())])
            .expect("the host refused a header map");
        kept.push(fields);
    }
    Ok(format!("kept {}", kept.len()).into_bytes())
}

/// Builds `count` outgoing requests, fills each one's body with as much as
/// the host buffers, and keeps them all unsent.
fn keep_body_buffers(count: usize) -> Result<Vec<u8>, PluginError> {
    use wasi::http::types::{Fields, OutgoingRequest};
    let chunk = vec![b'b'; 1 << 20];
    let mut kept = Vec::with_capacity(count);
    let mut buffered = 0;
    for _ in 0..count {
        let request = OutgoingRequest::new(Fields::new());
        let body = request.body().expect("a new request has a body");
        let stream = body.write().expect("a new body has a stream");
        let mut written = 0;
        loop {
            let room = stream
                .check_write()
                .map_err(|err| failed(format!("{err:?}")))? as usize;
            if room == 0 {
                break;
            }
            let len = room.min(chunk.len());
            stream
                .write(&chunk[..len])
                .map_err(|err| failed(format!("{err:?}")))?;
            written += len;
        }
        assert!(written > 0, "the host refused an outgoing body");
        buffered += written;
        // Children before their parents, for the drop at the end.
        kept.push((stream, body, request));
    }
    Ok(format!("kept {} bodies holding {buffered} bytes", kept.len()).into_bytes())
}

/// Opens `count` listings of `/data` and keeps every one.
fn keep_directory_streams(count: usize) -> Result<Vec<u8>, PluginError> {
    let data = granted_data()?;
    let mut kept = Vec::with_capacity(count);
    for _ in 0..count {
        kept.push(
            data.read_directory()
                .expect("the host refused a directory listing"),
        );
    }
    Ok(format!("kept {}", kept.len()).into_bytes())
}

/// `MODE PATH`: opens PATH relative to `/data` with the raw
/// `wasi:filesystem` call, so the host alone judges the path.
fn open_at(input: &str) -> Result<Vec<u8>, PluginError> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let (mode, path) = input
        .split_once(' ')
        .ok_or_else(|| PluginError::InvalidInput("expected MODE PATH".into()))?;
    let (open_flags, flags) = match mode {
        "read" => (OpenFlags::empty(), DescriptorFlags::READ),
        "write" => (OpenFlags::CREATE, DescriptorFlags::WRITE),
        "truncate" => (OpenFlags::TRUNCATE, DescriptorFlags::WRITE),
        other => {
            return Err(PluginError::InvalidInput(format!(
                "mode `{other}` is not read, write or truncate"
            )));
        }
    };
    granted_data()?
        .open_at(PathFlags::SYMLINK_FOLLOW, path, open_flags, flags)
        .map(|_| b"opened".to_vec())
        .map_err(|code| failed(code.name()))
}

/// The directory granted at `/data`.
fn granted_data() -> Result<wasi::filesystem::types::Descriptor, PluginError> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/data")
        .map(|(dir, _)| dir)
        .ok_or_else(|| failed("no directory is granted at /data"))
}

fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn grow_memory() -> Result<Vec<u8>, PluginError> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed, not just reserved.
        let block = vec![1u8; 1 << 20];
        blocks.push(black_box(block));
    }
}

fn grow_slowly() -> Result<Vec<u8>, PluginError> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(black_box(vec![1u8; 256 << 10]));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Pages gained before `memory.grow` returned `-1`.
fn grow_until_refused() -> usize {
    let mut pages = 0;
    while core::arch::wasm32::memory_grow(0, 1) != usize::MAX {
        pages += 1;
    }
    pages
}

/// Not a tail call: the addition after the call keeps every frame alive, and
/// all state stays in wasm locals, so this exhausts the wasm stack rather than
/// the shadow stack in linear memory.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == 0 {
        return 0;
    }
    black_box(recurse(depth - 1)) + 1
}

fn utf8(input: &[u8]) -> Result<&str, PluginError> {
    std::str::from_utf8(input).map_err(|err| PluginError::InvalidInput(err.to_string()))
}

/// `FROM>TO`.
fn two_paths(input: &[u8]) -> Result<(&str, &str), PluginError> {
    utf8(input)?
        .split_once('>')
        .ok_or_else(|| PluginError::InvalidInput("expected FROM>TO".into()))
}

/// The preopened directory `path` lies in, and the rest of the path. The
/// standard library has no stable way to create a symbolic link on WASI.
fn in_preopen(path: &str) -> Result<(wasi::filesystem::types::Descriptor, &str), PluginError> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find_map(|(dir, name)| {
            let rest = path.strip_prefix(name.as_str())?.strip_prefix('/')?;
            Some((dir, rest))
        })
        .ok_or_else(|| PluginError::InvalidInput(format!("`{path}` is in no preopen")))
}

fn parse_size(input: &[u8]) -> Result<usize, PluginError> {
    utf8(input)?
        .trim()
        .parse()
        .map_err(|err| PluginError::InvalidInput(format!("expected a byte count: {err}")))
}

fn failed(err: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(err.to_string())
}

export!(Hostile);
