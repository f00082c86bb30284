//! Filesystem and environment grants: what is granted works, what is not is
//! refused, and nothing is inherited from the host.

use warden::{Error, Grants, Preopen, Sandbox};
use warden_tests::guests;

use crate::{load, runtime, tight_limits};

fn sandbox(grants: Grants) -> Sandbox {
    let mut sandbox = Sandbox::with_limits(tight_limits());
    sandbox.grants = grants;
    sandbox
}

/// How the guest's standard library words WASI's `not-permitted` (errno 63),
/// the host's refusal of a path out of a preopen or a change to a read-only
/// one: the "not permitted" the docs promise.
const NOT_PERMITTED: &str = "Operation not permitted (os error 63)";

/// How it words `noent` (errno 44), wasi-libc's own refusal of a path under
/// no preopen, which never reaches the host.
const NO_PREOPEN: &str = "No such file or directory (os error 44)";

fn failure(result: Result<Vec<u8>, Error>) -> String {
    match result {
        Err(Error::Plugin(warden::PluginError::Failed(why))) => why,
        other => panic!("expected the guest to report a failure, got {other:?}"),
    }
}

/// A temporary tree: `granted/` (holding `inside.txt`) and, beside it,
/// `secret.txt` that no grant covers.
struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("granted")).unwrap();
        std::fs::write(root.path().join("granted/inside.txt"), "inside").unwrap();
        std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
        Tree { root }
    }

    fn granted(&self) -> std::path::PathBuf {
        self.root.path().join("granted")
    }
}

#[tokio::test]
async fn a_read_only_preopen_can_be_read_but_not_written() {
    let tree = Tree::new();
    let mut grants = Grants::default();
    grants
        .dirs
        .push(Preopen::read_only(tree.granted(), "/data"));
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(grants)).await;

    let read = plugin.execute("read-file", b"/data/inside.txt").await;
    assert_eq!(read.result.unwrap(), b"inside");

    for path in ["/data/inside.txt", "/data/new.txt"] {
        let why = failure(plugin.execute("write-file", path.as_bytes()).await.result);
        assert_eq!(why, NOT_PERMITTED, "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(tree.granted().join("inside.txt")).unwrap(),
        "inside"
    );
    assert!(!tree.granted().join("new.txt").exists());
}

#[tokio::test]
async fn a_read_write_preopen_can_be_written() {
    let tree = Tree::new();
    let mut grants = Grants::default();
    grants
        .dirs
        .push(Preopen::read_write(tree.granted(), "/data"));
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(grants)).await;
    let written = plugin.execute("write-file", b"/data/new.txt").await;
    assert_eq!(written.result.unwrap(), b"written");
    assert_eq!(
        std::fs::read_to_string(tree.granted().join("new.txt")).unwrap(),
        "overwritten"
    );
}

#[tokio::test]
async fn nothing_outside_a_preopen_is_reachable() {
    let tree = Tree::new();
    let mut grants = Grants::default();
    grants
        .dirs
        .push(Preopen::read_write(tree.granted(), "/data"));
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(grants)).await;
    let secret = tree.root.path().join("secret.txt");
    // Through the standard library, wasi-libc matches a path against the
    // preopens and sends the host only what lies under one: `..` out of
    // `/data` reaches the host, which refuses it; a path under no preopen
    // never leaves the guest.
    for (path, expected) in [
        ("/data/../secret.txt", NOT_PERMITTED),
        ("/data/./../secret.txt", NOT_PERMITTED),
        ("../secret.txt", NO_PREOPEN),
        ("/etc/passwd", NO_PREOPEN),
        (secret.to_str().unwrap(), NO_PREOPEN),
    ] {
        for action in ["read-file", "write-file"] {
            let why = failure(plugin.execute(action, path.as_bytes()).await.result);
            assert_eq!(why, expected, "{action} {path}");
        }
    }
    // Sent to the host as written, each is refused there.
    for path in ["../secret.txt", "./../secret.txt", secret.to_str().unwrap()] {
        for mode in ["read", "write"] {
            let input = format!("{mode} {path}");
            let why = failure(plugin.execute("open-at", input.as_bytes()).await.result);
            assert_eq!(why, "not-permitted", "open-at {input}");
        }
    }
    assert_eq!(
        plugin
            .execute("open-at", b"read inside.txt")
            .await
            .result
            .unwrap(),
        b"opened"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
}

#[tokio::test]
async fn without_grants_there_is_no_filesystem() {
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(Grants::default())).await;
    for path in ["/etc/passwd", ".", "/"] {
        let why = failure(plugin.execute("read-file", path.as_bytes()).await.result);
        assert_eq!(why, NO_PREOPEN, "{path}");
    }
}

#[tokio::test]
async fn only_granted_environment_variables_are_visible() {
    let mut grants = Grants::default();
    grants.env.push(("GREETING".into(), "hi".into()));
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(grants)).await;
    assert_eq!(
        plugin.execute("env", b"GREETING").await.result.unwrap(),
        b"hi"
    );
    // The test process certainly has these; the guest must not.
    for inherited in ["PATH", "HOME", "CARGO"] {
        let why = failure(plugin.execute("env", inherited.as_bytes()).await.result);
        assert_eq!(why, "environment variable not found", "{inherited}");
    }
}

#[tokio::test]
async fn a_missing_directory_grant_is_refused_at_load() {
    let mut grants = Grants::default();
    grants
        .dirs
        .push(Preopen::read_only("/no/such/directory", "/data"));
    let err = runtime()
        .load_file(guests::HOSTILE, sandbox(grants))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::InvalidConfig(why) if why.contains("/no/such/directory")),
        "{err:?}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let mut grants = Grants::default();
    grants.dirs.push(Preopen::read_only(file.path(), "/data"));
    let err = runtime()
        .load_file(guests::HOSTILE, sandbox(grants))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::InvalidConfig(why) if why.contains("not a directory")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_read_only_preopen_refuses_every_kind_of_change() {
    let tree = Tree::new();
    std::fs::create_dir(tree.granted().join("sub")).unwrap();
    let mut grants = Grants::default();
    grants
        .dirs
        .push(Preopen::read_only(tree.granted(), "/data"));
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(grants)).await;
    for (action, input) in [
        ("truncate", "/data/inside.txt"),
        ("rename", "/data/inside.txt>/data/moved.txt"),
        ("link", "/data/inside.txt>/data/linked.txt"),
        ("remove", "/data/inside.txt"),
        ("mkdir", "/data/newdir"),
        ("write-file", "/data/sub/new.txt"),
    ] {
        let why = failure(plugin.execute(action, input.as_bytes()).await.result);
        assert_eq!(why, NOT_PERMITTED, "{action} {input}");
    }
    let entries: Vec<_> = std::fs::read_dir(tree.granted())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 2, "nothing created or removed: {entries:?}");
    assert_eq!(
        std::fs::read_to_string(tree.granted().join("inside.txt")).unwrap(),
        "inside",
        "not truncated"
    );
}

#[tokio::test]
async fn symlinks_and_trailing_slashes_do_not_lead_out_of_a_preopen() {
    let tree = Tree::new();
    let secret = tree.root.path().join("secret.txt");
    std::os::unix::fs::symlink(&secret, tree.granted().join("escape")).unwrap();
    std::os::unix::fs::symlink(tree.root.path(), tree.granted().join("parent")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", tree.granted().join("relative")).unwrap();
    let mut grants = Grants::default();
    grants
        .dirs
        .push(Preopen::read_write(tree.granted(), "/data"));
    let plugin = load(&runtime(), guests::HOSTILE, sandbox(grants)).await;
    for path in [
        "/data/escape",
        "/data/parent/secret.txt",
        "/data/relative",
        "/data/escape/",
        "/data/../secret.txt/",
        "/data/parent/",
        "/data/inside.txt/",
    ] {
        for action in ["read-file", "write-file", "truncate"] {
            let why = failure(plugin.execute(action, path.as_bytes()).await.result);
            // `..` out of the preopen is refused first; then creating a file
            // at a path with a trailing slash is refused before any link is
            // followed; and a file is not a directory.
            let expected = match (action, path) {
                (_, "/data/../secret.txt/") => NOT_PERMITTED,
                ("write-file", _) if path.ends_with('/') => "Is a directory (os error 31)",
                (_, "/data/inside.txt/") => "Not a directory (os error 54)",
                _ => NOT_PERMITTED,
            };
            assert_eq!(why, expected, "{action} {path}");
        }
    }
    // Hard-linking the symlink copies the link, not its target: the guest
    // still cannot read through it.
    assert_eq!(
        plugin
            .execute("link", b"/data/escape>/data/hard")
            .await
            .result
            .unwrap(),
        b"linked"
    );
    let why = failure(plugin.execute("read-file", b"/data/hard").await.result);
    assert_eq!(why, NOT_PERMITTED);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    assert_eq!(
        std::fs::read_to_string(tree.granted().join("inside.txt")).unwrap(),
        "inside"
    );
}
