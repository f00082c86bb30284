//! Plugins of world 0.2 (WASI 0.3, async exports, streams, lifecycle)
//! through the library, beside 0.1 ones on the same runtime.

use tokio::io::AsyncReadExt;
use warden::{Error, PluginError, Sandbox, WorldVersion};

use warden_tests::guests::HELLO_V2;

use crate::{hello, load, runtime};

#[tokio::test]
async fn a_0_2_plugin_runs_whole_calls_beside_a_0_1_plugin() {
    let runtime = runtime();
    let old = hello(&runtime).await;
    let new = load(&runtime, HELLO_V2, Sandbox::default()).await;
    assert_eq!(old.world_version(), WorldVersion::V0_1);
    assert_eq!(new.world_version(), WorldVersion::V0_2);
    assert!(new.streams() && new.has_lifecycle());
    assert!(!old.streams() && !old.has_lifecycle());
    for plugin in [&old, &new] {
        let outcome = plugin.execute("count-vowels", b"hello world").await;
        assert_eq!(outcome.result.unwrap(), b"3");
        let outcome = plugin.execute("greet", b"Zo").await;
        assert_eq!(outcome.result.unwrap(), b"Hello, Zo!");
        assert_eq!(outcome.report.stdout.bytes, b"Hello, Zo!\n");
        assert_eq!(outcome.report.logs.len(), 1);
        let err = plugin.execute("shout", b"").await.result.unwrap_err();
        assert!(
            matches!(&err, Error::Plugin(PluginError::UnknownAction(action)) if action == "shout"),
            "{err:?}"
        );
    }
    let metadata = new.metadata().await.unwrap();
    assert_eq!(metadata.license.as_deref(), Some("Apache-2.0"));
    assert_eq!(metadata.action_details[3].name, "count");
    assert_eq!(metadata.action_details[3].input_type, "text/plain");
}

#[tokio::test]
async fn a_streaming_action_transforms_its_input_as_it_flows() {
    let runtime = runtime();
    let plugin = load(&runtime, HELLO_V2, Sandbox::default()).await;
    let input: Vec<u8> = b"hello, streaming world\n".repeat(10_000);
    let (mut output, outcome) = plugin.execute_stream("upper", std::io::Cursor::new(input.clone()));
    let mut collected = Vec::new();
    output.read_to_end(&mut collected).await.unwrap();
    let streamed = outcome.await.into_result().unwrap();
    assert_eq!(collected, input.to_ascii_uppercase());
    assert_eq!(streamed.bytes_in, input.len() as u64);
    assert_eq!(streamed.bytes_out, input.len() as u64);

    let (mut output, outcome) = plugin.execute_stream("count", std::io::Cursor::new(input));
    let mut summary = String::new();
    output.read_to_string(&mut summary).await.unwrap();
    outcome.await.into_result().unwrap();
    assert_eq!(summary, "lines 10000 vowels 60000");
}

/// A reader that gives some input, then fails.
struct BreaksOff {
    sent: bool,
}

impl tokio::io::AsyncRead for BreaksOff {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.sent {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the client went away",
            )));
        }
        self.sent = true;
        buf.put_slice(b"half of the input\n");
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_input_that_breaks_off_fails_the_call_rather_than_ending_it() {
    let runtime = runtime();
    let plugin = load(&runtime, HELLO_V2, Sandbox::default()).await;
    for action in ["count", "upper"] {
        let (mut output, outcome) = plugin.execute_stream(action, BreaksOff { sent: false });
        let mut ignored = Vec::new();
        output.read_to_end(&mut ignored).await.unwrap();
        let err = outcome.await.result.unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionReset),
            "{action}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "reading the input of a streaming call: the client went away",
            "{action}"
        );
    }
    assert_eq!(runtime.instances_in_use(), 0);
}

#[tokio::test]
async fn a_dropped_plugin_frees_its_kept_instances() {
    let runtime = runtime();
    for path in [warden_tests::guests::HELLO, HELLO_V2] {
        let mut sandbox = Sandbox::default();
        sandbox.calls_per_instance = 4;
        let plugin = load(&runtime, path, sandbox).await;
        plugin.execute("echo", b"kept").await.result.unwrap();
        assert_eq!(runtime.instances_in_use(), 1, "{path}: one instance kept");
        drop(plugin);
        assert_eq!(
            runtime.instances_in_use(),
            0,
            "{path}: kept past its plugin"
        );
    }
}

#[tokio::test]
async fn no_instance_is_kept_after_retirement_even_by_a_call_in_flight() {
    let runtime = runtime();
    let mut sandbox = Sandbox::default();
    sandbox.calls_per_instance = 4;
    let plugin = load(&runtime, warden_tests::guests::HOSTILE, sandbox).await;
    let in_flight = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.execute("nap", b"300").await.result }
    });
    crate::wait_for_instances(&runtime, 1).await;
    plugin.retire_kept_instances().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), b"rested");
    // Its shutdown runs on a task of its own; give it a moment to end.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while runtime.instances_in_use() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an instance was kept after retirement"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hostile_shutdowns_are_retired_together_within_their_deadline() {
    let runtime = runtime();
    let registry = warden::Registry::new(runtime.clone());
    let mut sandbox = Sandbox::default();
    sandbox.calls_per_instance = 100;
    sandbox.grants.env = vec![("HOSTILE_SHUTDOWN".into(), "loop".into())];
    // Three plugins, each with a kept instance whose `shutdown` loops.
    for name in ["a", "b", "c"] {
        registry
            .load_file(name, warden_tests::guests::HOSTILE_V2, sandbox.clone())
            .await
            .unwrap();
        registry.execute(name, "echo", b"x").await.result.unwrap();
    }
    assert_eq!(runtime.instances_in_use(), 3);
    let started = std::time::Instant::now();
    registry.shutdown(std::time::Duration::ZERO).await;
    let took = started.elapsed();
    assert_eq!(runtime.instances_in_use(), 0);
    // One after another they would take 3 × SHUTDOWN_TIMEOUT.
    assert!(
        took < 2 * warden::SHUTDOWN_TIMEOUT,
        "retiring took {took:?}"
    );
}
