//! `warden run` of a plugin that streams (world 0.2's `execute-stream`):
//! stdin and `--input-file` flow through as they are read and the output
//! comes out as it is written, in flat memory; `--no-stream`, `--json` and
//! the stream limits, each with its status and exit code.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::guests;

use crate::support::{Scratch, assert_status, report, stderr_of, warden_with_stdin};

const MIB: u64 = 1 << 20;

/// Starts `warden ARGS` (the test guests are unsigned: allowed) in the
/// scratch home with stdin piped.
fn start(scratch: &Scratch, args: &[&str]) -> Child {
    let mut all = args.to_vec();
    all.extend(["--unsigned", "allow"]);
    scratch
        .command(&all)
        .stdin(Stdio::piped())
        .spawn()
        .expect("starting warden")
}

/// The input of the gibibyte test: lower-case text in lines, one block
/// repeated; the plugin's output is the same block upper-cased.
fn block() -> Vec<u8> {
    let line = b"the quick brown fox jumps over the lazy dog 0123456789\n";
    line.iter().copied().cycle().take(64 << 10).collect()
}

/// Writes `block` into `stdin` until `total` bytes are written, then
/// closes it.
fn write_blocks(mut stdin: ChildStdin, block: Vec<u8>, total: u64) -> std::io::Result<()> {
    let mut written = 0;
    while written < total {
        let take = block
            .len()
            .min(usize::try_from(total - written).unwrap_or(usize::MAX));
        stdin.write_all(&block[..take])?;
        written += take as u64;
    }
    Ok(())
}

/// The size a one-line report gives after `label` (`peak memory 1.2 MiB`).
fn reported_size(report_line: &str, label: &str) -> u64 {
    let size = report_line
        .split(" · ")
        .find_map(|part| part.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {report_line:?}"));
    warden::units::parse_size(size.trim()).expect("a size")
}

/// 1 GiB through `upper` from a pipe: the output is the input upper-cased,
/// byte for byte, and neither warden's resident memory nor the plugin's
/// linear memory grows with it. Nothing holds the gibibyte: the test
/// writes it from a thread and checks the output as it reads it.
///
/// Takes about 17 s with a debug build on 2 cores (measured while other
/// builds ran); the timeout is generous for a busier machine.
#[test]
fn a_gibibyte_streams_through_in_flat_memory() {
    const TOTAL: u64 = 1 << 30;
    let scratch = Scratch::new();
    let mut child = start(
        &scratch,
        &["run", guests::HELLO_V2, "upper", "--timeout", "300s"],
    );
    let block = block();
    let expected = block.to_ascii_uppercase();
    let stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || write_blocks(stdin, block, TOTAL));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, u64)> {
        let (mut seen, mut wrong) = (0_u64, 0_u64);
        let mut piece = vec![0; 256 << 10];
        loop {
            let read = stdout.read(&mut piece)?;
            if read == 0 {
                return Ok((seen, wrong));
            }
            for &byte in &piece[..read] {
                let at = (seen % expected.len() as u64) as usize;
                wrong += u64::from(byte != expected[at]);
                seen += 1;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let pid = child.id().to_string();
    let started = Instant::now();
    let mut peak_rss = 0;
    let status = loop {
        // VmHWM is the high-water mark: the last reading is the peak.
        if let Some(bytes) = warden_tests::proc_status_bytes(&pid, "VmHWM") {
            peak_rss = peak_rss.max(bytes);
        }
        if let Some(status) = child.try_wait().expect("waiting for warden") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().ok();
            panic!("1 GiB took more than 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    writer.join().unwrap().expect("writing the input");
    let (seen, wrong) = reader.join().unwrap().expect("reading the output");
    let stderr = errors.join().unwrap().expect("reading stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(seen, TOTAL, "every byte came out; {stderr}");
    assert_eq!(wrong, 0, "each byte upper-cased, in order");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("warden: ok · in "), "{stderr}");
    let guest_peak = reported_size(line, "peak memory ");
    assert!(guest_peak < 64 * MIB, "the plugin's memory: {line}");
    assert!(
        peak_rss < 64 * MIB,
        "warden's resident memory peaked at {} MiB",
        peak_rss / MIB
    );
    eprintln!(
        "1 GiB in {took:?}: warden's peak RSS {} MiB; {line}",
        peak_rss / MIB
    );
}

/// Reads from `stdout` until `expected.len()` bytes have come, on a thread
/// of its own, so that the test can give up after `limit`.
fn read_exactly(
    mut stdout: impl Read + Send + 'static,
    length: usize,
) -> mpsc::Receiver<(Vec<u8>, Box<dyn Read + Send>)> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = vec![0; length];
        if stdout.read_exact(&mut bytes).is_ok() {
            let _ = sender.send((bytes, Box::new(stdout) as Box<dyn Read + Send>));
        }
    });
    receiver
}

/// The first output comes out while stdin is still open: the plugin gets
/// each piece of input as it is written, and its output is written through.
#[test]
fn output_comes_out_before_the_input_ends() {
    let scratch = Scratch::new();
    let mut child = start(&scratch, &["run", guests::HELLO_V2, "upper"]);
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"first piece\n").unwrap();
    stdin.flush().unwrap();
    let first = read_exactly(child.stdout.take().expect("piped stdout"), 12);
    let (bytes, mut stdout) = first
        .recv_timeout(Duration::from_secs(30))
        .expect("the first output, while stdin is still open");
    assert_eq!(bytes, b"FIRST PIECE\n");
    stdin.write_all(b"and the rest").unwrap();
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"AND THE REST");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert!(stderr.starts_with("warden: ok · in "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `--input-file` streams too; `--input TEXT` and `--no-stream` call
/// `execute`, which has no `upper`.
#[test]
fn no_stream_and_input_text_call_execute_with_the_whole_input() {
    let scratch = Scratch::new();
    let file = scratch.path("input.txt");
    std::fs::write(&file, b"shout this").unwrap();
    let streamed = scratch.run(&[
        "run",
        guests::HELLO_V2,
        "upper",
        "--input-file",
        &file,
        "--unsigned",
        "allow",
    ]);
    assert_eq!(streamed.status.code(), Some(0), "{}", stderr_of(&streamed));
    assert_eq!(streamed.stdout, b"SHOUT THIS");

    for whole in [
        &["--input-file", file.as_str(), "--no-stream"][..],
        &["--input", "shout this"],
    ] {
        let mut args = vec![guests::HELLO_V2, "upper", "--unsigned", "allow"];
        args.extend_from_slice(whole);
        let (value, code) = scratch.run_json(&args);
        assert_status(&value, code, "plugin-error", 1);
        assert_eq!(
            value["plugin_error"]["variant"], "unknown-action",
            "{whole:?}"
        );
    }
    let (value, code) = report(&warden_with_stdin(
        &[
            "run",
            "--json",
            guests::HELLO_V2,
            "count-vowels",
            "--no-stream",
        ],
        b"streams of vowels",
    ));
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "5");
}

/// With `--json` a streaming call's output is collected into the usual
/// report, up to `--max-output`.
#[test]
fn json_collects_the_streamed_output_within_max_output() {
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--json", guests::HELLO_V2, "upper"];
        args.extend_from_slice(extra);
        report(&warden_with_stdin(&args, b"hello, stream"))
    };
    let (value, code) = run(&[]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "HELLO, STREAM");
    assert_eq!(value["output_encoding"], "utf-8");
    assert_eq!(value["error"], Value::Null);
    assert!(value["peak_memory_bytes"].as_u64().unwrap() > 0);
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let (whole, _) = report(&warden_with_stdin(
        &["run", "--json", guests::HELLO, "echo"],
        b"x",
    ));
    let whole_keys: Vec<&str> = whole
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, whole_keys, "the same fields as a whole-input call");

    let (value, code) = run(&["--max-output", "8"]);
    assert_status(&value, code, "output-too-large", 25);
    assert_eq!(value["output"], Value::Null);
    let error = value["error"].as_str().unwrap();
    assert!(error.contains("exceeds the limit of 8 bytes"), "{error}");
}

/// A 0.1 plugin fed from stdin is called as before: the whole input, read
/// within --max-input, then `execute` (`--no-stream` changes nothing).
#[test]
fn a_plugin_that_does_not_stream_reads_stdin_whole_as_before() {
    for extra in [&[][..], &["--no-stream"]] {
        let mut args = vec!["run", guests::HELLO, "echo"];
        args.extend_from_slice(extra);
        let output = warden_with_stdin(&args, b"whole\x00input");
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        assert_eq!(output.stdout, b"whole\x00input");
        let stderr = stderr_of(&output);
        assert!(
            stderr
                .lines()
                .last()
                .unwrap()
                .starts_with("warden: ok · in "),
            "{stderr}"
        );
    }
    let output = warden_with_stdin(
        &["run", "--json", guests::HELLO, "echo", "--max-input", "4"],
        b"too long",
    );
    let (value, code) = report(&output);
    assert_status(&value, code, "input-too-large", 26);
    assert!(
        value["error"].as_str().unwrap().contains("8 bytes"),
        "{value}"
    );
}

/// The stream limits end a call with their own status and exit code, with
/// or without `--json`; `--max-input` does not bound a streamed input.
#[test]
fn stream_limits_end_the_call_with_their_status() {
    let input = vec![b'x'; 5000];
    let (value, code) = report(&warden_with_stdin(
        &[
            "run",
            "--json",
            guests::HELLO_V2,
            "echo",
            "--max-stream-output",
            "1KiB",
        ],
        &input,
    ));
    assert_status(&value, code, "output-too-large", 25);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("limit of 1024 bytes"),
        "{value}"
    );

    let output = warden_with_stdin(
        &[
            "run",
            guests::HELLO_V2,
            "echo",
            "--max-stream-output",
            "1KiB",
        ],
        &input,
    );
    assert_eq!(output.status.code(), Some(25), "{}", stderr_of(&output));
    assert!(output.stdout.len() <= 1024, "at most the limit came out");
    let stderr = stderr_of(&output);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("warden: output of "),
        "{stderr}"
    );

    let (value, code) = report(&warden_with_stdin(
        &[
            "run",
            "--json",
            guests::HELLO_V2,
            "echo",
            "--max-stream-input",
            "1KiB",
        ],
        &input,
    ));
    assert_status(&value, code, "input-too-large", 26);

    let (value, code) = report(&warden_with_stdin(
        &[
            "run",
            "--json",
            guests::HELLO_V2,
            "echo",
            "--max-input",
            "1KiB",
        ],
        &input,
    ));
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"].as_str().unwrap().len(), 5000);
}

/// A plugin that never reads its input, never writes and never ends is
/// stopped by `--stream-idle-timeout`, long before `--timeout`.
#[test]
fn a_stalled_stream_ends_at_the_idle_timeout() {
    let started = Instant::now();
    let (value, code) = report(&warden_with_stdin(
        &[
            "run",
            "--json",
            guests::HOSTILE_V2,
            "never-reads",
            "--stream-idle-timeout",
            "300ms",
            "--timeout",
            "60s",
        ],
        b"never read",
    ));
    assert_status(&value, code, "stream-idle", 27);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("stream idle timeout"),
        "{value}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let output = warden_with_stdin(
        &[
            "run",
            guests::HOSTILE_V2,
            "never-reads",
            "--stream-idle-timeout",
            "300ms",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(27), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("warden: the stream stalled"),
        "{}",
        stderr_of(&output)
    );
}
