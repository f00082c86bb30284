//! The custom-world example (`host/warden/examples/text-filter`): typed results,
//! a limit, and the host-defined capability granted and denied.

#[path = "../../examples/text-filter/glue.rs"]
mod glue;

use std::time::Duration;

use glue::{Dictionary, Rule, Stats, Verdict};
use warden::{Error, ErrorKind, Limits, Risk, Runtime, Sandbox, Source, WorldPlugin};
use warden_tests::{guest_bytes, guests};

async fn load(runtime: &Runtime, grant_dictionary: bool, limits: Limits) -> WorldPlugin {
    let world = glue::world(runtime).unwrap();
    let mut sandbox = Sandbox::with_limits(limits);
    if grant_dictionary {
        sandbox.grants.host.insert(glue::DICTIONARY.name.to_owned());
    }
    runtime
        .load_world(
            Source::new("text-filter", guest_bytes(guests::TEXT_FILTER)),
            sandbox,
            &world,
        )
        .await
        .unwrap()
}

fn dictionary() -> Dictionary {
    Dictionary {
        banned: ["darn".to_owned()].into(),
    }
}

fn rule(pattern: &str, replacement: &str) -> Rule {
    Rule {
        pattern: pattern.into(),
        replacement: replacement.into(),
    }
}

fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| line.to_string()).collect()
}

#[tokio::test]
async fn typed_calls_return_typed_results() {
    let runtime = warden_tests::runtime_builder().build().unwrap();
    let plugin = load(&runtime, true, Limits::default()).await;
    let outcome = glue::filter(
        &plugin,
        dictionary(),
        vec![rule("colour", "color"), rule("grey", "gray")],
        lines(&["plain", "a grey colour", "Darn, it rains", ""]),
    )
    .await;
    let (verdicts, stats) = outcome.result.unwrap();
    assert_eq!(
        verdicts,
        [
            Verdict::Keep,
            Verdict::Rewrite("a gray color".into()),
            Verdict::Drop("banned word `Darn`".into()),
            Verdict::Keep,
        ]
    );
    assert_eq!(
        stats,
        Stats {
            kept: 2,
            rewritten: 1,
            dropped: 1
        }
    );
    assert!(outcome.report.denials.is_empty());
    assert_eq!(plugin.metrics().calls, 1);
}

#[tokio::test]
async fn a_runaway_rule_stops_at_the_timeout() {
    let runtime = warden_tests::runtime_builder().build().unwrap();
    let mut limits = Limits::default();
    limits.timeout = Duration::from_millis(300);
    let plugin = load(&runtime, true, limits).await;
    // Each replacement creates the pattern again: the guest never finishes.
    let outcome = glue::filter(&plugin, dictionary(), vec![rule("a", "aa")], lines(&["a"])).await;
    let err = outcome.result.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(runtime.instances_in_use(), 0);
}

#[tokio::test]
async fn the_host_defined_capability_is_listed_and_denied_without_a_grant() {
    let runtime = warden_tests::runtime_builder().build().unwrap();
    let granted = load(&runtime, true, Limits::default()).await;
    let denied = load(&runtime, false, Limits::default()).await;
    let dictionary_of = |plugin: &WorldPlugin| {
        plugin
            .capabilities()
            .iter()
            .find(|capability| capability.name == "dictionary")
            .cloned()
            .expect("the dictionary is listed")
    };
    assert_eq!(dictionary_of(&granted).risk, Risk::Low);
    assert!(dictionary_of(&granted).granted);
    assert!(!dictionary_of(&denied).granted);
    assert_eq!(
        dictionary_of(&denied).imports,
        ["example:filters/dictionary@0.1.0"]
    );

    let outcome = glue::filter(&denied, dictionary(), vec![], lines(&["hello"])).await;
    let err = outcome.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    let Error::Denied { denial, .. } = &err else {
        unreachable!()
    };
    assert_eq!(denial.capability, "dictionary");
    assert!(denial.detail.contains("hello"), "{denial}");
    assert_eq!(outcome.report.denials.len(), 1);
}

#[tokio::test]
async fn a_plugin_of_another_world_is_refused_with_the_missing_import() {
    let runtime = warden_tests::runtime_builder().build().unwrap();
    // A world without the application's imports: Warden's alone.
    let world = warden::World::new(&runtime);
    let err = runtime
        .load_world(
            Source::new("text-filter", guest_bytes(guests::TEXT_FILTER)),
            Sandbox::default(),
            &world,
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidPlugin);
    assert!(
        err.to_string().contains("example:filters/dictionary"),
        "{err}"
    );
}

#[tokio::test]
async fn strict_refuses_an_ungranted_high_risk_host_capability() {
    let runtime = warden_tests::runtime_builder().build().unwrap();
    // The same imports, declared as a high-risk capability this time.
    let mut world = warden::World::new(&runtime);
    glue::add_imports(&mut world).unwrap();
    world.define(warden::HostCapability {
        risk: Risk::High,
        ..glue::DICTIONARY
    });
    let mut sandbox = Sandbox::default();
    sandbox.strict = true;
    let err = runtime
        .load_world(
            Source::new("text-filter", guest_bytes(guests::TEXT_FILTER)),
            sandbox,
            &world,
        )
        .await
        .err()
        .expect("refused");
    let Error::MissingGrants(missing) = &err else {
        panic!("expected missing grants, got {err:?}");
    };
    let dictionary = missing
        .iter()
        .find(|capability| capability.name == "dictionary")
        .unwrap_or_else(|| panic!("the dictionary is not among {missing:?}"));
    assert_eq!(dictionary.risk, Risk::High);
    assert!(err.to_string().contains("grants.host"), "{err}");
}
