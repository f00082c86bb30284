use super::*;

#[test]
fn stable_versions_match_on_their_semver_track() {
    assert!(satisfies(
        "wasi:cli/stdout@0.2.12",
        "wasi:cli/stdout@0.2.12"
    ));
    assert!(satisfies("wasi:cli/stdout@0.2.12", "wasi:cli/stdout@0.2.3"));
    assert!(satisfies("wasi:cli/stdout@0.2.6", "wasi:cli/stdout@0.2.12"));
    assert!(satisfies("a:b/c@1.0.1", "a:b/c@1.4.0"));
    assert!(satisfies("a:b/c@2.1.2+abc", "a:b/c@2.0.0"));
    assert!(!satisfies(
        "wasi:cli/stdout@0.3.0",
        "wasi:cli/stdout@0.2.12"
    ));
    assert!(!satisfies("a:b/c@2.0.0", "a:b/c@1.9.9"));
    assert!(!satisfies("a:b/c@0.0.2", "a:b/c@0.0.1"));
    assert!(satisfies("a:b/c@0.0.1", "a:b/c@0.0.1"));
}

#[test]
fn pre_releases_only_match_exactly() {
    assert!(satisfies(
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:keyvalue/store@0.2.0-draft"
    ));
    assert!(!satisfies(
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:keyvalue/store@0.2.0-draft"
    ));
    assert!(!satisfies(
        "wasi:config/store@0.2.0-rc.1",
        "wasi:config/store@0.2.0-draft-2024-09-27"
    ));
    assert!(!satisfies(
        "wasi:config/store@0.2.0",
        "wasi:config/store@0.2.0-rc.1"
    ));
    assert!(!satisfies(
        "wasi:config/store@0.2.0-rc.1",
        "wasi:config/store@0.2.0"
    ));
    assert!(!satisfies("a:b/c@1.0.0-pre", "a:b/c@1.0.0"));
}

#[test]
fn different_interfaces_never_match() {
    assert!(!satisfies(
        "wasi:cli/stdout@0.2.12",
        "wasi:cli/stderr@0.2.12"
    ));
    assert!(!satisfies(
        "wasi:config/runtime@0.2.0-draft",
        "wasi:config/store@0.2.0-draft"
    ));
    assert!(!satisfies(
        "wasi:keyvalue/store@0.2.0",
        "wasi:blobstore/store@0.2.0"
    ));
    assert!(!satisfies(
        "wasi:logging/logging",
        "wasi:logging/logging@0.1.0-draft"
    ));
    // The track is a prefix of the name, not of the text: `0.2` is not `0.22`.
    assert!(!satisfies("a:b/c@0.22.0", "a:b/c@0.2.0"));
}

#[test]
fn versions_that_are_not_semver_only_match_exactly() {
    assert!(satisfies("a:b/c@0.2", "a:b/c@0.2"));
    assert!(!satisfies("a:b/c@0.2", "a:b/c@0.2.0"));
    assert!(!satisfies("a:b/c@0.02.0", "a:b/c@0.2.0"));
    assert!(!satisfies("a:b/c@0.2.0+", "a:b/c@0.2.1"));
    assert!(!satisfies("a:b/c@0.2.x", "a:b/c@0.2.1"));
    assert!(satisfies("wasi:logging/logging", "wasi:logging/logging"));
}

#[test]
fn the_semver_track_is_the_shared_part_of_the_version() {
    assert_eq!(semver_track("x:y/z@1.1.2"), Some("x:y/z@1"));
    assert_eq!(semver_track("x:y/z@0.2.3+abc"), Some("x:y/z@0.2"));
    assert_eq!(semver_track("x:y/z@0.0.1"), None);
    assert_eq!(semver_track("x:y/z@0.1.0-pre"), None);
    assert_eq!(semver_track("x:y/z"), None);
}

#[test]
fn tables_name_each_interface_once_and_carry_their_sources() {
    for target in Target::ALL {
        let provided = target.provides();
        let mut unique = provided.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            provided.len(),
            "{target:?} lists an interface twice"
        );
        assert!(
            provided
                .iter()
                .all(|name| name.contains(':') && name.contains('/'))
        );
        assert!(!target.sources().is_empty());
    }
}

#[cfg(feature = "clap")]
#[test]
fn names_are_the_command_line_values() {
    use clap::ValueEnum as _;
    let listed: Vec<Target> = Target::value_variants().to_vec();
    assert_eq!(listed, Target::ALL);
    for target in Target::ALL {
        let value = target.to_possible_value().expect("every target is listed");
        assert_eq!(value.get_name(), target.name());
    }
}

#[test]
fn spin_needs_bridges_and_a_logging_shim_for_wardens_world() {
    let spin = Target::Spin.provides();
    let provided = |import: &str| spin.iter().any(|name| satisfies(name, import));
    assert!(provided("wasi:cli/environment@0.2.12"));
    assert!(provided("wasi:http/outgoing-handler@0.2.12"));
    assert!(!provided("wasi:keyvalue/store@0.2.0-draft"));
    assert!(!provided("wasi:config/store@0.2.0-rc.1"));
    assert!(!provided("wasi:logging/logging@0.1.0-draft"));
    assert!(provided("wasi:keyvalue/atomics@0.2.0-draft2"));
    assert!(provided("wasi:config/store@0.2.0-draft-2024-09-27"));
}

#[test]
fn wasmcloud_needs_only_the_config_bridge_for_wardens_world() {
    let wasmcloud = Target::Wasmcloud.provides();
    let provided = |import: &str| wasmcloud.iter().any(|name| satisfies(name, import));
    assert!(provided("wasi:keyvalue/batch@0.2.0-draft"));
    assert!(provided("wasi:logging/logging@0.1.0-draft"));
    assert!(!provided("wasi:config/store@0.2.0-rc.1"));
    assert!(provided("wasi:config/store@0.2.0-draft"));
}
