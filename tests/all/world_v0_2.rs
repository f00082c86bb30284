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
