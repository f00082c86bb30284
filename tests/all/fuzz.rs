//! Replays the fuzz corpus (the seeds and every input the fuzzer caught,
//! `tests/fuzz/`) through the in-process fuzz targets. The `cli` target is
//! replayed by the `warden` crate's CLI tests, which have the binary.

use warden_tests::fuzz::{self, Target};

fn replay(target: Target, mut check: impl FnMut(&[u8]) -> fuzz::Verdict) {
    let corpus = target.corpus();
    assert!(!corpus.is_empty(), "no {} corpus", target.name());
    let findings: Vec<String> = corpus
        .iter()
        .filter_map(|(path, input)| {
            check(input)
                .err()
                .map(|why| format!("{}: {why}", path.display()))
        })
        .collect();
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

#[test]
fn the_load_corpus_loads_or_is_refused() {
    let executor = tokio::runtime::Runtime::new().unwrap();
    let runtime = fuzz::runtime();
    replay(Target::Load, |input| {
        executor.block_on(fuzz::load(&runtime, input))
    });
}

#[test]
fn the_execute_corpus_matches_the_reference() {
    let executor = tokio::runtime::Runtime::new().unwrap();
    let runtime = fuzz::runtime();
    let hello = executor.block_on(fuzz::hello(&runtime));
    replay(Target::Execute, |input| {
        executor.block_on(fuzz::execute(&hello, input))
    });
}

#[test]
fn the_manifest_corpus_parses_or_is_refused() {
    replay(Target::Manifest, fuzz::manifest);
}
