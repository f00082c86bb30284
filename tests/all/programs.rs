//! Generic WASI programs (`Runtime::load_program`, `warden exec`): components
//! and preview 1 modules, with arguments, environment, preopens, exit codes
//! and the same limits as plugins. Preview 1 modules run on wasmtime-wasi's
//! preview 1 implementation, so they behave as under `wasmtime run`.

use warden::{
    Error, ErrorKind, Grants, Outcome, Preopen, Program, Runtime, Sandbox, Source, Stdio,
};
use warden_tests::{guest_bytes, guests};

use crate::{runtime, tight_limits};

/// The same program, as a component and as a preview 1 module.
const BUILDS: [(&str, &str); 2] = [
    ("component", guests::COMMAND),
    ("preview 1 module", guests::COMMAND_PREVIEW1),
];

async fn program(runtime: &Runtime, path: &str, grants: Grants) -> Program {
    let mut sandbox = Sandbox::with_limits(tight_limits());
    sandbox.grants = grants;
    runtime
        .load_program(Source::new("command", guest_bytes(path)), sandbox)
        .await
        .unwrap_or_else(|err| panic!("loading {path}: {err}"))
}

async fn run(program: &Program, args: &[&str]) -> Outcome<i32> {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    program.run(&args, Stdio::Capture).await
}

fn stdout(outcome: &Outcome<i32>) -> String {
    String::from_utf8_lossy(&outcome.report.stdout.bytes).into_owned()
}

#[tokio::test]
async fn arguments_reach_the_program() {
    for (build, path) in BUILDS {
        let program = program(&runtime(), path, Grants::default()).await;
        let outcome = run(&program, &["args", "one", "two words", "ünïcode"]).await;
        assert_eq!(stdout(&outcome), "one\ntwo words\nünïcode\n", "{build}");
        assert_eq!(outcome.result.unwrap(), 0, "{build}");
        let outcome = run(&program, &[]).await;
        assert_eq!(
            stdout(&outcome),
            "hello from a wasi:cli command\n",
            "{build}"
        );
    }
}

#[tokio::test]
async fn only_granted_environment_variables_are_visible() {
    for (build, path) in BUILDS {
        let mut grants = Grants::default();
        grants.env.push(("TOKEN".into(), "abc".into()));
        let program = program(&runtime(), path, grants).await;
        let outcome = run(&program, &["env", "TOKEN"]).await;
        assert_eq!(stdout(&outcome), "abc\n", "{build}");
        let outcome = run(&program, &["env", "PATH"]).await;
        assert_ne!(outcome.result.unwrap(), 0, "{build}: PATH is not inherited");
    }
}

#[tokio::test]
async fn exit_codes_pass_through() {
    for (build, path) in BUILDS {
        let runtime = runtime();
        let program = program(&runtime, path, Grants::default()).await;
        for code in [0, 1, 33, 255] {
            let outcome = run(&program, &["exit", &code.to_string()]).await;
            assert_eq!(outcome.result.unwrap(), code, "{build}");
        }
        assert_eq!(
            run(&program, &["env", "MISSING"]).await.result.unwrap(),
            3,
            "{build}"
        );
        assert_eq!(runtime.instances_in_use(), 0, "{build}");
    }
}

/// Text that an adapter or a careless host would mangle: spaces, quotes,
/// backslashes, newlines, tabs, an empty string and non-ASCII text; and
/// 100 KiB of it, more than the preview 1 adapter's 64 KiB buffer holds.
fn awkward_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "two words",
        "\"double\" and 'single' quotes",
        "back\\slash",
        "line one\nline two\n",
        "tab\there",
        "",
        "ünïcode → 日本語 🦀",
    ]
    .map(String::from)
    .into();
    texts.push("a 'long' \"text\"\n".repeat(100 << 10 >> 4));
    texts
}

#[tokio::test]
async fn arguments_and_environment_arrive_verbatim() {
    let texts = awkward_texts();
    for (build, path) in BUILDS {
        let mut grants = Grants::default();
        for (index, value) in texts.iter().enumerate() {
            grants.env.push((format!("AWKWARD_{index}"), value.clone()));
        }
        let runtime = runtime();
        let program = program(&runtime, path, grants).await;

        let mut args = vec!["argv"];
        args.extend(texts.iter().map(String::as_str));
        let outcome = run(&program, &args).await;
        let expected: String = texts.iter().map(|arg| format!("{arg}\0")).collect();
        assert!(stdout(&outcome) == expected, "{build}: arguments differ");
        assert_eq!(outcome.result.unwrap(), 0, "{build}");

        let outcome = run(&program, &["environ"]).await;
        let expected: String = texts
            .iter()
            .enumerate()
            .map(|(index, value)| format!("AWKWARD_{index}={value}\0"))
            .collect();
        assert!(stdout(&outcome) == expected, "{build}: variables differ");
        assert_eq!(outcome.result.unwrap(), 0, "{build}");
        assert_eq!(runtime.instances_in_use(), 0, "{build}");
    }
}

#[tokio::test]
async fn a_descriptor_that_is_not_open_is_badf_not_a_trap() {
    // WASI's `badf` is errno 8, for every operation on the descriptor.
    for (build, path) in BUILDS {
        let runtime = runtime();
        let program = program(&runtime, path, Grants::default()).await;
        let outcome = run(&program, &["bad-fd"]).await;
        assert_eq!(
            stdout(&outcome),
            "42: write 8 read 8 seek 8 metadata 8 sync 8 set-len 8\n\
             2147483647: write 8 read 8 seek 8 metadata 8 sync 8 set-len 8\n",
            "{build}"
        );
        assert_eq!(outcome.result.unwrap(), 0, "{build}");
        assert_eq!(run(&program, &[]).await.result.unwrap(), 0, "{build}");
        assert_eq!(runtime.instances_in_use(), 0, "{build}");
    }
}

#[tokio::test]
async fn preopens_work_at_a_path_and_at_the_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), "from the host").unwrap();
    for (build, path) in BUILDS {
        for (guest, file) in [("/data", "/data/file.txt"), ("/", "/file.txt")] {
            let mut grants = Grants::default();
            grants.dirs.push(Preopen::read_write(dir.path(), guest));
            let program = program(&runtime(), path, grants).await;
            let outcome = run(&program, &["cat", file]).await;
            assert_eq!(stdout(&outcome), "from the host", "{build} at {guest}");
            let written = run(&program, &["write", file, "from the guest"]).await;
            assert_eq!(written.result.unwrap(), 0, "{build} at {guest}");
            assert_eq!(
                std::fs::read_to_string(dir.path().join("file.txt")).unwrap(),
                "from the guest"
            );
            std::fs::write(dir.path().join("file.txt"), "from the host").unwrap();
        }
        let program = program(&runtime(), path, Grants::default()).await;
        let outcome = run(&program, &["cat", "/etc/passwd"]).await;
        assert_eq!(outcome.result.unwrap(), 4, "{build}");
    }
}

#[tokio::test]
async fn limits_hold_for_programs() {
    for (build, path) in BUILDS {
        let runtime = runtime();
        let program = program(&runtime, path, Grants::default()).await;
        let err = run(&program, &["loop"]).await.result.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{build}: {err:?}");
        let err = run(&program, &["grow"]).await.result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{build}: {err:?}");
        assert_eq!(
            run(&program, &[]).await.result.unwrap(),
            0,
            "{build}: still serving"
        );
        assert_eq!(runtime.instances_in_use(), 0, "{build}");
    }
}

#[tokio::test]
async fn plugins_and_programs_are_told_apart() {
    let runtime = runtime();
    let err = runtime
        .load_program(
            Source::new("hello", guest_bytes(guests::HELLO)),
            Sandbox::default(),
        )
        .await
        .err()
        .expect("a plugin is not a program");
    assert_eq!(err.kind(), ErrorKind::InvalidPlugin);
    assert!(
        err.to_string().contains("run it with `warden run`"),
        "{err}"
    );

    let err = runtime
        .load_program(
            Source::new("random", b"\0asm\x01\0\0\0garbage".to_vec()),
            Sandbox::default(),
        )
        .await
        .err()
        .expect("garbage is not a program");
    assert_eq!(err.kind(), ErrorKind::InvalidPlugin);
    assert!(err.to_string().contains("WASI preview 1 command"), "{err}");
}
