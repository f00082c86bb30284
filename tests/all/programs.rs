//! Generic WASI programs (`Runtime::load_program`, `warden exec`): components
//! and preview 1 modules, with arguments, environment, preopens, exit codes
//! and the same limits as plugins.

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

/// The exit code `code` arrives as: whole from a component, as 1 from a
/// preview 1 module (its adapter reports any failure as 1).
fn arrives_as(path: &str, code: i32) -> i32 {
    if path == guests::COMMAND_PREVIEW1 && code != 0 {
        1
    } else {
        code
    }
}

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
    let program_p2 = program(&runtime(), guests::COMMAND, Grants::default()).await;
    assert_eq!(run(&program_p2, &["exit", "7"]).await.result.unwrap(), 7);
    assert_eq!(run(&program_p2, &["exit", "0"]).await.result.unwrap(), 0);
    assert_eq!(
        run(&program_p2, &["env", "MISSING"]).await.result.unwrap(),
        3
    );
    let program_p1 = program(&runtime(), guests::COMMAND_PREVIEW1, Grants::default()).await;
    assert_eq!(run(&program_p1, &["exit", "0"]).await.result.unwrap(), 0);
    assert_eq!(run(&program_p1, &["exit", "7"]).await.result.unwrap(), 1);
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
        assert_eq!(outcome.result.unwrap(), arrives_as(path, 4), "{build}");
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
