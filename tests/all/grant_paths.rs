//! Grant paths under attack: a plugin with a writable grant renames,
//! swaps and links the directories that other grants (its own or another
//! plugin's) name, and the other grant must keep showing the directory it
//! was given at load, never the host's files.
//!
//! The tree: `secret.txt` (no grant covers it) beside `outer/`, which holds
//! `inner/` and `other/`, each with a `marker.txt` naming it. The writer is
//! granted `outer` read-write, the reader `outer/inner` read-only.

use std::path::PathBuf;

use warden::{Error, Grants, Preopen, Registry, Reload, Sandbox};
use warden_tests::guests;

use crate::{runtime, tight_limits};

const SECRET: &str = "the host's secret";

struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("secret.txt"), SECRET).unwrap();
        for name in ["inner", "other"] {
            let dir = root.path().join("outer").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("marker.txt"), name).unwrap();
        }
        Tree { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    /// The secret as a guest would name it through `/inner` if `inner` led
    /// to the host's root.
    fn secret_through(&self, guest_dir: &str) -> String {
        format!("{guest_dir}{}", self.path("secret.txt").display())
    }
}

/// A link text that climbs from anywhere in the tree to the host's root.
fn to_the_root() -> String {
    "../".repeat(32)
}

fn sandbox(dirs: &[Preopen]) -> Sandbox {
    let mut sandbox = Sandbox::with_limits(tight_limits());
    let mut grants = Grants::default();
    grants.dirs = dirs.to_vec();
    sandbox.grants = grants;
    sandbox
}

fn writer(tree: &Tree) -> Sandbox {
    sandbox(&[Preopen::read_write(tree.path("outer"), "/outer")])
}

fn reader(tree: &Tree) -> Sandbox {
    sandbox(&[Preopen::read_only(tree.path("outer/inner"), "/inner")])
}

async fn call(
    registry: &Registry,
    plugin: &str,
    action: &str,
    input: &str,
) -> Result<String, Error> {
    registry
        .execute(plugin, action, input.as_bytes())
        .await
        .result
        .map(|output| String::from_utf8(output).unwrap())
}

/// Runs a writer action that must succeed.
async fn write(registry: &Registry, action: &str, input: &str) {
    let done = call(registry, "writer", action, input).await;
    assert!(done.is_ok(), "writer {action} {input}: {done:?}");
}

/// Asserts that `plugin` cannot read `path`: the guest gets a filesystem
/// error, which it reports as its own failure.
async fn assert_unreadable(registry: &Registry, plugin: &str, path: &str) {
    match call(registry, plugin, "read-file", path).await {
        Err(Error::Plugin(warden::PluginError::Failed(_))) => {}
        other => panic!("{plugin} read {path}: {other:?}"),
    }
}

async fn assert_marker(registry: &Registry, plugin: &str, path: &str, expected: &str) {
    assert_eq!(
        call(registry, plugin, "read-file", path).await.unwrap(),
        expected,
        "{plugin} reads {path}"
    );
}

async fn registry_with(plugins: &[(&str, Sandbox)]) -> Registry {
    let registry = Registry::new(runtime());
    for (name, sandbox) in plugins {
        registry
            .load_file(name, guests::HOSTILE, sandbox.clone())
            .await
            .unwrap_or_else(|err| panic!("loading {name}: {err}"));
    }
    registry
}

fn assert_planted_link_refused(err: &Error) {
    assert!(
        matches!(err, Error::InvalidConfig(why)
            if why.contains("`inner` is a symbolic link to `../")
                && why.contains("leads out of the directory holding the link")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_link_planted_over_another_plugins_grant_never_leads_out() {
    let tree = Tree::new();
    let registry = registry_with(&[("writer", writer(&tree)), ("reader", reader(&tree))]).await;
    assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;

    // The issue's reproduction: the writer replaces `inner` with a link to
    // the host's root, keeping the original directory under another name.
    write(&registry, "rename", "/outer/inner>/outer/moved").await;
    write(
        &registry,
        "symlink",
        &format!("{}>/outer/inner", to_the_root()),
    )
    .await;
    assert!(std::fs::read_link(tree.path("outer/inner")).is_ok());

    // The reader's next instances still see the directory they were given.
    for _ in 0..3 {
        assert_unreadable(&registry, "reader", &tree.secret_through("/inner")).await;
        assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;
    }

    // Loading the reader again resolves the path again, and refuses the link;
    // the version already loaded keeps serving its own directory.
    let err = registry
        .load_file("reader", guests::HOSTILE, reader(&tree))
        .await
        .err()
        .expect("the planted link is refused");
    assert_planted_link_refused(&err);
    assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;
    assert_eq!(registry.runtime().instances_in_use(), 0);
}

#[tokio::test]
async fn swaps_between_load_and_the_first_call_and_between_calls_change_nothing() {
    let tree = Tree::new();
    let registry = registry_with(&[("writer", writer(&tree)), ("reader", reader(&tree))]).await;

    // Between load and the first call: `inner` and `other` trade places.
    write(&registry, "rename", "/outer/inner>/outer/swap").await;
    write(&registry, "rename", "/outer/other>/outer/inner").await;
    write(&registry, "rename", "/outer/swap>/outer/other").await;
    assert_eq!(
        std::fs::read_to_string(tree.path("outer/inner/marker.txt")).unwrap(),
        "other"
    );
    assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;

    // Between two calls: the directory the reader holds is replaced by a
    // link that stays inside `outer` (allowed at load, see below), then by
    // a link out of it.
    write(&registry, "rename", "/outer/other>/outer/gone").await;
    write(&registry, "symlink", "gone>/outer/other").await;
    assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;
    write(&registry, "remove", "/outer/other").await;
    write(
        &registry,
        "symlink",
        &format!("{}>/outer/other", to_the_root()),
    )
    .await;
    assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;
    assert_unreadable(&registry, "reader", &tree.secret_through("/inner")).await;
    assert_eq!(registry.runtime().instances_in_use(), 0);
}

#[tokio::test]
async fn nested_grants_of_one_plugin_keep_their_directories() {
    let tree = Tree::new();
    let both = sandbox(&[
        Preopen::read_write(tree.path("outer"), "/outer"),
        Preopen::read_only(tree.path("outer/inner"), "/inner"),
    ]);
    let registry = registry_with(&[("writer", both)]).await;
    write(&registry, "rename", "/outer/inner>/outer/moved").await;
    write(
        &registry,
        "symlink",
        &format!("{}>/outer/inner", to_the_root()),
    )
    .await;

    assert_marker(&registry, "writer", "/inner/marker.txt", "inner").await;
    assert_unreadable(&registry, "writer", &tree.secret_through("/inner")).await;
    // Through its writable grant the link leads out of the preopen, which
    // wasmtime-wasi refuses.
    assert_unreadable(&registry, "writer", &tree.secret_through("/outer/inner")).await;
    assert_eq!(
        std::fs::read_to_string(tree.path("secret.txt")).unwrap(),
        SECRET
    );
}

#[tokio::test]
async fn hard_links_carry_no_host_file_into_another_grant() {
    let tree = Tree::new();
    let registry = registry_with(&[("writer", writer(&tree)), ("reader", reader(&tree))]).await;
    // A hard link of a planted symlink is the link again, which the
    // reader's preopen refuses to follow out.
    write(
        &registry,
        "symlink",
        &format!("{}>/outer/evil", to_the_root()),
    )
    .await;
    write(&registry, "link", "/outer/evil>/outer/inner/evil").await;
    assert_unreadable(&registry, "reader", &tree.secret_through("/inner/evil")).await;
    // A hard link to a file outside the writer's grant cannot be made.
    let outside = call(
        &registry,
        "writer",
        "link",
        "/outer/../secret.txt>/outer/inner/leak",
    )
    .await;
    assert!(outside.is_err(), "{outside:?}");
    assert_unreadable(&registry, "reader", "/inner/leak").await;
    // A hard link to the writer's own file is shared, as the writer could
    // copy it anyway.
    write(
        &registry,
        "link",
        "/outer/other/marker.txt>/outer/inner/shared",
    )
    .await;
    assert_marker(&registry, "reader", "/inner/shared", "other").await;
    assert_eq!(registry.runtime().instances_in_use(), 0);
}

#[tokio::test]
async fn grant_paths_through_links_are_checked_at_every_load() {
    let tree = Tree::new();
    let runtime = runtime();
    // A link that stays inside its own directory is followed.
    std::os::unix::fs::symlink("other", tree.path("outer/sideways")).unwrap();
    let sideways = sandbox(&[Preopen::read_only(tree.path("outer/sideways"), "/inner")]);
    let plugin = runtime.load_file(guests::HOSTILE, sideways).await.unwrap();
    assert_eq!(
        plugin
            .execute("read-file", b"/inner/marker.txt")
            .await
            .result
            .unwrap(),
        b"other"
    );

    // A link out of it is refused, whether it is the last component or not.
    std::fs::rename(tree.path("outer/inner"), tree.path("outer/moved")).unwrap();
    std::os::unix::fs::symlink(to_the_root(), tree.path("outer/inner")).unwrap();
    let err = runtime
        .load_file(guests::HOSTILE, reader(&tree))
        .await
        .err()
        .unwrap();
    assert_planted_link_refused(&err);
    let deeper = sandbox(&[Preopen::read_only(
        tree.path("outer/inner")
            .join(tree.path("").strip_prefix("/").unwrap()),
        "/inner",
    )]);
    let err = runtime
        .load_file(guests::HOSTILE, deeper)
        .await
        .err()
        .unwrap();
    assert_planted_link_refused(&err);
}

#[tokio::test]
async fn a_manifest_reload_refuses_a_planted_link_and_keeps_the_loaded_directory() {
    let tree = Tree::new();
    let manifest = tree.path("warden.toml");
    let write_manifest = |timeout: &str| {
        std::fs::write(
            &manifest,
            format!(
                r#"[plugins.writer]
path = "{hostile}"
[plugins.writer.grants]
dirs = ["{outer}::/outer:rw"]

[plugins.reader]
path = "{hostile}"
[plugins.reader.limits]
timeout = "{timeout}"
[plugins.reader.grants]
dirs = ["{outer}/inner::/inner:ro"]
"#,
                hostile = guests::HOSTILE,
                outer = tree.path("outer").display(),
            ),
        )
        .unwrap();
    };
    write_manifest("5s");
    let registry = Registry::new(runtime());
    let loaded = registry.load_manifest(&manifest).await.unwrap();
    assert!(loaded.failed.is_empty(), "{:?}", loaded.failed);

    write(&registry, "rename", "/outer/inner>/outer/moved").await;
    write(
        &registry,
        "symlink",
        &format!("{}>/outer/inner", to_the_root()),
    )
    .await;
    // A changed sandbox (and a longer file, so the change is seen at once)
    // makes the reader load again.
    write_manifest("10s");
    let mut reloads = registry.check_for_changes().await;
    let failed = match reloads.pop() {
        Some(Reload::Manifest(load)) if reloads.is_empty() => load.failed,
        other => panic!("expected one manifest reload, got {other:?} and {reloads:?}"),
    };
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "reader");
    assert_planted_link_refused(&failed[0].1);
    assert_marker(&registry, "reader", "/inner/marker.txt", "inner").await;
    assert_unreadable(&registry, "reader", &tree.secret_through("/inner")).await;
    assert_eq!(registry.runtime().instances_in_use(), 0);
}
