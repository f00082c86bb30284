//! What one instance leaves in its pooled slot: nothing the next instance of
//! that slot can read. The pooling allocator keeps slot memory resident and
//! resets it in place instead of returning it to the kernel (see
//! `capacity.rs`), so these tests plant a secret in every part of a slot a
//! guest can read (linear memory, grown pages included, and table elements)
//! and look for it from the instances that reuse the slot.

use warden::{Plugin, Runtime, Sandbox, Source};
use warden_tests::slot_residue_plugin;

/// A runtime with one instance slot, so that every instance reuses it.
fn one_slot_runtime() -> Runtime {
    warden_tests::runtime_builder()
        .max_instances(1)
        .build()
        .expect("creating the runtime")
}

async fn residue(runtime: &Runtime, variant: char) -> Plugin {
    runtime
        .load(
            Source::new(format!("residue-{variant}"), slot_residue_plugin(variant)),
            Sandbox::default(),
        )
        .await
        .expect("loading the slot-residue plugin")
}

/// What `look` saw: memory pages, secrets found in memory, table size,
/// table elements set.
#[derive(Debug, PartialEq, Eq)]
struct Residue {
    pages: u32,
    secrets: u32,
    table_size: u32,
    elements_set: u32,
}

impl Residue {
    /// What a pristine instance of the fixture holds.
    const NONE: Residue = Residue {
        pages: 1,
        secrets: 0,
        table_size: 2,
        elements_set: 0,
    };

    fn parse(answer: &[u8]) -> Self {
        let field = |index: usize| {
            u32::from_le_bytes(
                answer[index * 4..index * 4 + 4]
                    .try_into()
                    .expect("4 bytes"),
            )
        };
        assert_eq!(answer.len(), 16, "look answers four u32s");
        Residue {
            pages: field(0),
            secrets: field(1),
            table_size: field(2),
            elements_set: field(3),
        }
    }
}

async fn plant(plugin: &Plugin) {
    let answer = plugin.execute("plant", b"").await.result.expect("planting");
    assert_eq!(answer, b"planted");
}

async fn look(plugin: &Plugin) -> Residue {
    Residue::parse(&plugin.execute("look", b"").await.result.expect("looking"))
}

#[tokio::test]
async fn the_looker_finds_a_secret_its_own_instance_planted() {
    let runtime = one_slot_runtime();
    let plugin = residue(&runtime, 'a').await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    instance.execute("plant", b"").await.result.unwrap();
    let seen = Residue::parse(&instance.execute("look", b"").await.result.unwrap());
    // 15 planted pages of 8-byte words, and every element of the grown table.
    assert_eq!(
        seen,
        Residue {
            pages: 16,
            secrets: 15 * 65536 / 8,
            table_size: 32,
            elements_set: 32,
        }
    );
}

#[tokio::test]
async fn the_next_call_of_a_plugin_finds_nothing_its_last_call_left() {
    let runtime = one_slot_runtime();
    let plugin = residue(&runtime, 'a').await;
    for _ in 0..3 {
        plant(&plugin).await;
        assert_eq!(look(&plugin).await, Residue::NONE);
    }
}

#[tokio::test]
async fn another_plugin_finds_nothing_in_a_reused_slot() {
    let runtime = one_slot_runtime();
    let planters = [residue(&runtime, 'a').await, residue(&runtime, 'b').await];
    let looker = residue(&runtime, 'c').await;
    // The runtime has as many memory slots as one instance may use (two),
    // and both planters dirty theirs, so the looker's memory reuses a
    // planted slot whichever the allocator picks.
    for _ in 0..3 {
        for planter in &planters {
            plant(planter).await;
        }
        assert_eq!(look(&looker).await, Residue::NONE);
    }
}

#[tokio::test]
async fn a_slot_freed_by_a_dropped_kept_instance_is_clean() {
    let runtime = one_slot_runtime();
    let plugin = residue(&runtime, 'a').await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    instance.execute("plant", b"").await.result.unwrap();
    drop(instance);
    assert_eq!(look(&plugin).await, Residue::NONE);
}
