//! The README's `warden` examples, typed as written in a fresh directory
//! with a home of its own: the demo transcript (```` ```text readme-demo ````)
//! must print what it shows, and the signing example (```` ```sh
//! readme-signing ````) must succeed. (The guide's quick starts are typed the
//! same way in `new.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use warden_tests::{guests, without_user_environment};

/// The README's fenced block whose info string is `info`.
fn readme_block(info: &str) -> String {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(readme_path).expect("reading the README");
    let fence = format!("```{info}\n");
    let start = readme
        .find(&fence)
        .unwrap_or_else(|| panic!("no {fence:?} in the README"))
        + fence.len();
    let length = readme[start..].find("```").expect("the block's end");
    readme[start..start + length].to_owned()
}

/// A fresh directory holding the guests the README's examples name, and a
/// home of its own for the trust store, cache and kv store.
struct Fresh {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Fresh {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a working directory");
        for (name, path) in [
            ("hello.wasm", guests::HELLO),
            ("hostile.wasm", guests::HOSTILE),
        ] {
            std::fs::copy(path, dir.path().join(name)).expect("copying a guest");
        }
        Fresh {
            dir,
            home: tempfile::tempdir().expect("a home"),
        }
    }

    /// `program` with `args`, run in the directory, with `warden` first on
    /// the PATH and no trace of the user's own home.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let warden_dir = Path::new(env!("CARGO_BIN_EXE_warden"))
            .parent()
            .expect("warden's folder")
            .to_path_buf();
        let path = std::env::join_paths(std::iter::once(warden_dir).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("a PATH");
        let mut command = Command::new(program);
        without_user_environment(&mut command)
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", path)
            // No XDG variables, so paths print as the README shows them.
            .env("HOME", self.home.path());
        command
    }

    /// What a terminal shows for `line` typed into `sh`: run under a
    /// pseudo-terminal by `script`, so stdout and stderr interleave as they
    /// do on screen and output is shown as on a terminal.
    fn typed(&self, line: &str) -> String {
        let output = self
            .command(
                "script",
                &["--quiet", "--return", "--command", line, "/dev/null"],
            )
            .env("SHELL", "/bin/sh")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running script(1), from util-linux");
        String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n")
    }

    fn home(&self) -> PathBuf {
        self.home.path().to_path_buf()
    }
}

/// `text` with what differs from run to run replaced by placeholders:
/// durations, sizes, fuel counts and key ids.
fn normalized(text: &str) -> String {
    let mut words = Vec::new();
    for line in text.lines() {
        let mut out = Vec::new();
        let tokens: Vec<&str> = line.split(' ').collect();
        let mut i = 0;
        while i < tokens.len() {
            let token = tokens[i];
            let next = tokens.get(i + 1).copied().unwrap_or("");
            let number = !token.is_empty()
                && token.chars().all(|c| c.is_ascii_digit() || c == '.')
                && token.chars().next().is_some_and(|c| c.is_ascii_digit());
            let unit = |units: &[&str]| units.contains(&next.trim_end_matches([',', ')', ';']));
            if number
                && unit(&["ns", "µs", "ms", "s"])
                && tokens.get(i.wrapping_sub(1)) != Some(&"after")
            {
                out.push("DURATION".to_owned());
                i += 2;
                continue;
            }
            if number && unit(&["B", "KiB", "MiB", "GiB"]) {
                out.push("SIZE".to_owned());
                i += 2;
                continue;
            }
            if number && tokens.get(i.wrapping_sub(1)) == Some(&"fuel") {
                out.push("N".to_owned());
                i += 1;
                continue;
            }
            out.push(key_ids_replaced(token));
            i += 1;
        }
        words.push(out.join(" "));
    }
    words.join("\n")
}

/// `token` with any run of exactly 24 lower-case hex digits (a key id)
/// replaced by `KEYID`.
fn key_ids_replaced(token: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        out.push_str(if run.len() == 24 { "KEYID" } else { run });
        run.clear();
    };
    for c in token.chars() {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[test]
fn the_readmes_demo_prints_what_it_shows() {
    let fresh = Fresh::new();
    let transcript = readme_block("text readme-demo");
    // Each `$ ` line is typed; the lines up to the next blank line are what
    // it prints.
    let mut checked = 0;
    for step in transcript.split("\n\n") {
        let (line, expected) = step.split_once('\n').unwrap_or((step, ""));
        let line = line
            .strip_prefix("$ ")
            .unwrap_or_else(|| panic!("a step starts with `$ `: {step}"));
        let shown = fresh.typed(line);
        let home = fresh.home().display().to_string();
        let shown = shown.replace(&home, "~");
        assert_eq!(
            normalized(shown.trim_end()),
            normalized(expected.trim_end()),
            "`{line}` printed:\n{shown}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "the demo has four commands:\n{transcript}");
    // The key really went to the user's trust store, as the transcript says.
    assert!(fresh.home().join(".config/warden/trust.toml").is_file());
}

#[test]
fn the_readmes_signing_example_runs_as_written() {
    let fresh = Fresh::new();
    let script = readme_block("sh readme-signing");
    let output = fresh
        .command("sh", &["-e", "-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running sh");
    assert!(
        output.status.success(),
        "the README's signing example failed ({:?}):\n{script}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("as `alice` in"), "{stdout}");
    assert!(fresh.dir.path().join("alice.key").is_file());
}

#[test]
fn normalizing_keeps_what_must_match() {
    assert_eq!(
        normalized("warden: timed out after 300 ms · in 303 ms · peak memory 1.1 MiB · fuel 4880"),
        "warden: timed out after 300 ms · in DURATION · peak memory SIZE · fuel N"
    );
    assert_eq!(
        normalized("signed `a` with key 03ae59ddcf50f8e0ecf7ab31; done"),
        "signed `a` with key KEYID; done"
    );
    assert_ne!(normalized("exit code 20"), normalized("exit code 2"));
}
