//! `warden export-http` apps served by a real `wasmtime serve` (installed
//! by `make wasmtime`), and the command's refusals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{HttpReply, guests, http_request, http_request_chunked};

use crate::support::{in_home, report, warden};

/// The largest request body the adapter accepts (16 MiB).
const MAX_BODY_BYTES: usize = 16 << 20;

/// How long `wasmtime serve` may take to compile the app and listen.
const STARTUP: Duration = Duration::from_secs(60);

/// `wasmtime serve`, from `make wasmtime`; the test fails without it.
fn wasmtime() -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/toolchains/wasmtime/bin/wasmtime");
    assert!(
        path.exists(),
        "wasmtime is not installed at {}; run `make wasmtime`",
        path.display()
    );
    path
}

/// Runs warden in a fresh temporary home (see [`warden`]), so no trust
/// store or config of the user running the tests is picked up.
pub(crate) fn warden_with_tmp_home(args: &[&str]) -> Output {
    warden(args)
}

/// Exports `plugin` for `target` into `dir` and returns the app's path and
/// the command's JSON report, failing the test if the command fails.
pub(crate) fn export_for(plugin: &str, target: &str, dir: &Path) -> (PathBuf, Value) {
    let app = dir.join(format!("{target}.wasm"));
    let output = warden_with_tmp_home(&[
        "export-http",
        plugin,
        "-o",
        app.to_str().expect("a UTF-8 path"),
        "--target",
        target,
        "--unsigned",
        "allow",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "export-http --target {target} {plugin} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (report, _) = report(&output);
    assert_eq!(report["target"], target);
    (app, report)
}

/// An app exported for `wasmtime serve`, and the flags of the command that
/// `warden export-http` printed to serve it.
struct WasmtimeApp {
    path: PathBuf,
    serve_flags: Vec<String>,
}

/// Exports `plugin` for `wasmtime serve` into `dir`, checking what the
/// command reports of the composition.
fn export(plugin: &str, dir: &Path) -> WasmtimeApp {
    let (app, report) = export_for(plugin, "wasmtime", dir);
    let command = report["serve_command"].as_str().expect("a serve command");
    let words: Vec<&str> = command.split(' ').collect();
    assert_eq!(&words[..2], ["wasmtime", "serve"], "{command}");
    assert_eq!(words.last(), app.to_str().as_ref(), "{command}");
    assert_eq!(
        report["exports"],
        serde_json::json!(["wasi:http/incoming-handler@0.2.12"])
    );
    let imports = report["imports"].as_array().expect("a list of imports");
    assert!(
        imports
            .iter()
            .all(|import| !import.as_str().expect("names").starts_with("wasi:logging/")),
        "wasi:logging is served by the shim, not imported: {imports:?}"
    );
    assert_eq!(report["shims"][0]["name"], "logging-shim", "{report}");
    assert_eq!(
        report["shims"][0]["serves"][0],
        "wasi:logging/logging@0.1.0-draft"
    );
    WasmtimeApp {
        serve_flags: words[2..words.len() - 1]
            .iter()
            .map(|flag| (*flag).to_owned())
            .collect(),
        path: app,
    }
}

/// A `wasmtime serve` process on a free port of 127.0.0.1, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// Its home (see [`in_home`]): wasmtime keeps its compile cache there.
    _home: tempfile::TempDir,
}

impl Serve {
    /// Serves `app` with the flags `warden export-http` printed for it and
    /// the test's `extra` ones (limits, configuration values).
    fn start(app: &WasmtimeApp, extra: &[&str]) -> Self {
        let home = tempfile::tempdir().expect("a home for wasmtime serve");
        let mut child = in_home(
            Command::new(wasmtime())
                .arg("serve")
                .args(&app.serve_flags)
                .args(extra)
                .args(["--addr", "127.0.0.1:0"])
                .arg(&app.path),
            home.path(),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("starting wasmtime serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready, listening) = mpsc::channel();
        let pipe = child.stderr.take().expect("a piped stderr");
        let collected = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                // wasmtime serve says where it listens once it can serve.
                if let Some(rest) = line.strip_prefix("Serving HTTP on http://") {
                    let _ = ready.send(rest.trim_end_matches('/').to_owned());
                }
                let mut text = collected.lock().expect("the stderr buffer");
                text.push_str(&line);
                text.push('\n');
            }
        });
        let addr = match listening.recv_timeout(STARTUP) {
            Ok(addr) => addr.parse().expect("a socket address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "wasmtime serve did not start: {}",
                    stderr.lock().expect("the stderr buffer")
                );
            }
        };
        Serve {
            child,
            addr,
            stderr,
            _home: home,
        }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> HttpReply {
        http_request(self.addr, method, path, body)
    }

    /// Waits up to ten seconds for `text` to appear on wasmtime's stderr.
    fn wait_for_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stderr = self.stderr.lock().expect("the stderr buffer").clone();
            if stderr.contains(text) || Instant::now() > deadline {
                return stderr;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(reply: &HttpReply) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    serde_json::from_slice(&reply.body).expect("a JSON body")
}

fn assert_error(reply: &HttpReply, status: u16, kind: &str) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = json(reply);
    assert_eq!(body["error"], kind, "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}

#[test]
fn hello_answers_over_http_under_wasmtime_serve() {
    let dir = tempfile::tempdir().unwrap();
    let app = export(guests::HELLO, dir.path());
    let serve = Serve::start(&app, &[]);

    let metadata = serve.request("GET", "/", b"");
    assert_eq!(metadata.status, 200);
    let metadata = json(&metadata);
    assert_eq!(metadata["name"], "hello");
    assert_eq!(
        metadata["actions"],
        serde_json::json!(["count-vowels", "echo", "greet"])
    );
    assert!(metadata["version"].is_string() && metadata["description"].is_string());

    let counted = serve.request("POST", "/count-vowels", b"hello world");
    assert_eq!(counted.status, 200);
    assert_eq!(
        counted.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(counted.body, b"3");

    // The action is percent-decoded and the query ignored.
    let decoded = serve.request("POST", "/count%2Dvowels?verbose=1", b"aeiou");
    assert_eq!((decoded.status, decoded.text().as_str()), (200, "5"));

    // A body larger than one write chunk comes back whole.
    let big: Vec<u8> = (0..1_000_000u32).map(|n| (n % 251) as u8).collect();
    let echoed = serve.request("POST", "/echo", &big);
    assert_eq!(echoed.status, 200);
    assert!(echoed.body == big, "the echo differs from its input");

    let greeted = serve.request("POST", "/greet", b"HTTP");
    assert_eq!(greeted.text(), "Hello, HTTP!");
    // The logging shim turns the plugin's log record into a stderr line.
    let stderr = serve.wait_for_stderr("INFO greet: greeted HTTP");
    assert!(stderr.contains("INFO greet: greeted HTTP"), "{stderr}");

    let invalid = serve.request("POST", "/greet", &[0xff, 0xfe]);
    assert_error(&invalid, 400, "invalid-input");
    let unknown = serve.request("POST", "/no-such-action", b"");
    let body = assert_error(&unknown, 404, "unknown-action");
    assert_eq!(body["message"], "the plugin has no action `no-such-action`");
    let undecodable = serve.request("POST", "/%zz", b"");
    assert_error(&undecodable, 400, "bad-request");

    for (method, path) in [("PUT", "/echo"), ("DELETE", "/"), ("GET", "/echo")] {
        let refused = serve.request(method, path, b"");
        assert_error(&refused, 405, "method-not-allowed");
        assert_eq!(
            refused.header("allow"),
            Some("GET, POST"),
            "{method} {path}"
        );
    }

    // Refused on the declared length, and (chunked, with no length) on the
    // first byte past the cap.
    let too_large = serve.request("POST", "/echo", &vec![b'x'; MAX_BODY_BYTES + 1]);
    assert_error(&too_large, 413, "payload-too-large");
    let streamed = http_request_chunked(
        serve.addr,
        "POST",
        "/echo",
        &vec![b'x'; MAX_BODY_BYTES + 1],
        1 << 20,
    );
    assert_error(&streamed, 413, "payload-too-large");
    // Exactly the limit is accepted.
    let at_limit = serve.request("POST", "/count-vowels", &vec![b'a'; MAX_BODY_BYTES]);
    assert_eq!(at_limit.status, 200, "{}", at_limit.text());
    assert_eq!(at_limit.text(), MAX_BODY_BYTES.to_string());
}

#[test]
fn failures_and_engine_limits_are_500s() {
    let dir = tempfile::tempdir().unwrap();
    let app = export(guests::HOSTILE, dir.path());
    let serve = Serve::start(&app, &["-Wtimeout=1s", "-Wmax-memory-size=33554432"]);

    // The plugin's own `failed`: no file system is granted.
    let failed = serve.request("POST", "/read-file", b"/etc/hostname");
    assert_error(&failed, 500, "failed");

    let started = Instant::now();
    let looped = serve.request("POST", "/loop", b"");
    assert_eq!(looped.status, 500, "{}", looped.text());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout stopped the loop after {:?}",
        started.elapsed()
    );
    let stderr = serve.wait_for_stderr("guest timed out");
    assert!(stderr.contains("guest timed out"), "{stderr}");

    let grown = serve.request("POST", "/grow-memory", b"");
    assert_eq!(grown.status, 500, "{}", grown.text());
    // Growth past -Wmax-memory-size fails, and the guest aborts.
    let stderr = serve.wait_for_stderr("memory allocation of");
    assert!(stderr.contains("memory allocation of"), "{stderr}");

    // The engine keeps serving after both, each request in a fresh instance.
    let calls = serve.request("POST", "/calls", b"");
    assert_eq!((calls.status, calls.text().as_str()), (200, "1"));
}

#[test]
fn a_failing_init_is_a_500_for_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = export(guests::HOSTILE, dir.path());
    let serve = Serve::start(&app, &["--env", "HOSTILE_INIT=fail"]);
    for (method, path) in [("GET", "/"), ("POST", "/calls")] {
        let refused = serve.request(method, path, b"");
        let body = assert_error(&refused, 500, "init-failed");
        assert_eq!(
            body["message"], "init refuses on purpose",
            "{method} {path}"
        );
    }
}

#[test]
fn config_and_kv_imports_are_served_by_wasmtimes_own_stores() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("probe.wasm");
    let output = warden_with_tmp_home(&[
        "export-http",
        guests::PROBE,
        "-o",
        path.to_str().expect("a UTF-8 path"),
        "--unsigned",
        "allow",
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let (report, _) = report(&output);
    let imports = report["imports"].as_array().expect("a list of imports");
    for interface in [
        "wasi:config/store@0.2.0-rc.1",
        "wasi:keyvalue/store@0.2.0-draft",
    ] {
        assert!(imports.iter().any(|import| import == interface), "{report}");
    }
    // The printed command enables both stores; the test adds a value.
    let command = format!(
        "wasmtime serve -Scli -Sconfig -Skeyvalue {}",
        path.display()
    );
    assert_eq!(report["serve_command"], command.as_str(), "{report}");
    let app = WasmtimeApp {
        path,
        serve_flags: ["-Scli", "-Sconfig", "-Skeyvalue"]
            .map(str::to_owned)
            .to_vec(),
    };

    let serve = Serve::start(&app, &["-Sconfig-var=greeting=hi"]);
    let reply = serve.request("POST", "/config-get", b"greeting");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, b"hi");
    // wasmtime's in-memory store has no bucket called `default`: the answer
    // comes from its own wasi:keyvalue implementation.
    let reply = serve.request("POST", "/kv-get", b"greeting");
    assert_eq!(
        assert_error(&reply, 500, "failed")["message"],
        "kv: no such store"
    );
}

#[test]
fn export_refuses_what_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("app.wasm");
    let output = output.to_str().unwrap();
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, wat::parse_str("(module)").unwrap()).unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    for (input, expected) in [
        (core_module.to_str().unwrap(), "core WebAssembly module"),
        (guests::COMMAND, "guest"),
        (garbage.to_str().unwrap(), "invalid plugin: "),
    ] {
        let result =
            warden_with_tmp_home(&["export-http", input, "-o", output, "--unsigned", "allow"]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(10), "{input}: {stderr}");
        assert!(stderr.contains(expected), "{input}: {stderr}");
        assert!(!Path::new(output).exists(), "{input} left an output behind");
    }

    // A plugin of world 0.2: its async exports are not what the adapter calls.
    let result = warden_with_tmp_home(&[
        "export-http",
        guests::HELLO_V2,
        "-o",
        output,
        "--unsigned",
        "allow",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(
            "the plugin targets world 0.2 (it exports `warden:plugin/guest@0.2.0`); \
             export-http composes world 0.1 plugins"
        ),
        "{stderr}"
    );
    assert_ne!(result.status.code(), Some(0), "{stderr}");
    assert!(
        !Path::new(output).exists(),
        "a 0.2 plugin left an output behind"
    );

    // The output's folder is a file: nothing can be written there.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let unwritable = file.join("app.wasm");
    let result = warden_with_tmp_home(&[
        "export-http",
        guests::HELLO,
        "-o",
        unwritable.to_str().unwrap(),
        "--unsigned",
        "allow",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");

    // A mistyped folder is not created: the error names it.
    let typo = dir.path().join("ouptut");
    let result = warden_with_tmp_home(&[
        "export-http",
        guests::HELLO,
        "-o",
        typo.join("app.wasm").to_str().unwrap(),
        "--unsigned",
        "allow",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(11), "{stderr}");
    assert!(
        stderr.contains(&format!("there is no directory `{}`", typo.display())),
        "{stderr}"
    );
    assert!(!typo.exists(), "the mistyped folder was created");

    // The trust policy applies as it does to `warden run`.
    let result = warden_with_tmp_home(&[
        "export-http",
        guests::HELLO,
        "-o",
        output,
        "--unsigned",
        "deny",
    ]);
    assert_eq!(
        result.status.code(),
        Some(31),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn the_text_report_lists_shims_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-app.wasm");
    let result = warden_with_tmp_home(&[
        "export-http",
        guests::HELLO,
        "-o",
        app.to_str().unwrap(),
        "--unsigned",
        "allow",
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.starts_with("hello: exported for wasmtime to "),
        "{stdout}"
    );
    assert!(
        stdout.contains("logging-shim for wasi:logging/logging@0.1.0-draft"),
        "{stdout}"
    );
    assert!(stdout.contains("wasi:cli/stderr@"), "{stdout}");
    assert!(
        stdout.ends_with(&format!(
            "\nserve it with: wasmtime serve -Scli {}\n",
            app.display()
        )),
        "{stdout}"
    );
    assert!(app.exists());
    // Exporting runs nothing, and the warning says what it does instead.
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.is_empty(),
        "--unsigned allow warns of nothing: {stderr}"
    );
    let warned = warden_with_tmp_home(&["export-http", guests::HELLO, "-o", app.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        "warden: warning: exporting an unverified plugin (it is unsigned); see `warden sign` and \
         --unsigned\n"
    );
}

/// `export-http` takes a plugin file, never a manifest: its help says no
/// manifest default, and `--manifest` is refused as an unknown flag.
#[test]
fn export_http_help_mentions_no_manifest() {
    let help = warden_with_tmp_home(&["export-http", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    assert!(!text.contains("manifest"), "{text}");
    assert!(text.contains("[default: warn; deny under"), "{text}");
    assert!(text.contains("[default: any]"), "{text}");
    assert!(
        text.contains("wasmtime serve -Scli -Skeyvalue APP.wasm"),
        "{text}"
    );
    let refused = warden_with_tmp_home(&[
        "export-http",
        guests::HELLO,
        "-o",
        "app.wasm",
        "--manifest",
        "warden.toml",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unexpected argument '--manifest'"),
        "{refused:?}"
    );
}

/// `docs/scale-out.md`'s quick start (its first `sh` block), typed as
/// written in a fresh directory holding `hello.wasm`: the export prints the
/// serve command the block quotes, and the app served with the block's
/// command answers each `curl` line with the value in its comment. Only the
/// port differs (a free one instead of 8080).
#[test]
fn the_scale_out_quick_start_works_as_written() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scale-out.md"),
    )
    .expect("reading docs/scale-out.md");
    let start = doc.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let block = &doc[start..start + doc[start..].find("```").expect("the block's end")];
    let command_of = |line: &str| line.split(" #").next().unwrap_or(line).trim().to_owned();
    let mut lines = block.lines().filter(|line| !line.trim().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::copy(guests::HELLO, dir.path().join("hello.wasm")).unwrap();
    let export = command_of(lines.next().expect("the export line"));
    let words: Vec<&str> = export.split_whitespace().collect();
    assert_eq!(words[0], "warden", "{export}");
    let output = in_home(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(&words[1..])
            .current_dir(dir.path()),
        home.path(),
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{export}: {output:?}");
    let quoted = lines
        .next()
        .and_then(|line| line.strip_prefix("# … it ends with: "))
        .expect("the line quoting the serve command");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().last(), Some(quoted), "{stdout}");

    let serve = command_of(lines.next().expect("the serve line"));
    let words: Vec<&str> = serve.split_whitespace().collect();
    assert_eq!(&words[..2], ["wasmtime", "serve"], "{serve}");
    let mut serve_flags = Vec::new();
    let mut rest = words[2..words.len() - 1].iter();
    while let Some(word) = rest.next() {
        match *word {
            // The test picks a free port instead.
            "--addr" => _ = rest.next(),
            flag => serve_flags.push(flag.to_owned()),
        }
    }
    let app = WasmtimeApp {
        path: dir.path().join(words[words.len() - 1]),
        serve_flags,
    };
    let server = Serve::start(&app, &[]);

    let mut curls = 0;
    for line in lines {
        let (command, expected) = line.split_once(" # ").expect("a curl line with its answer");
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "curl", "{line}");
        let path = words
            .last()
            .unwrap()
            .split_once('/')
            .map_or("/", |(_, path)| path);
        let path = format!("/{path}");
        let reply = match command.split_once("--data-binary '") {
            Some((_, data)) => {
                let body = data.split('\'').next().unwrap();
                server.request("POST", &path, body.as_bytes())
            }
            None => server.request("GET", &path, b""),
        };
        assert_eq!(reply.status, 200, "{line}: {reply:?}");
        let body = String::from_utf8(reply.body).unwrap();
        let expected = expected.trim();
        // `…` stands for text the comment leaves out.
        match expected.split_once('…') {
            Some((head, tail)) => assert!(
                body.starts_with(head) && body.trim_end().ends_with(tail),
                "{line}: {body}"
            ),
            None => assert_eq!(body.trim_end(), expected, "{line}"),
        }
        curls += 1;
    }
    assert_eq!(curls, 2, "the block's curl lines");
}
