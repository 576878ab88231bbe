//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) on stable
//! Rust, through the same harness the libFuzzer targets run
//! (`fuzz/src/lib.rs`, included here as a module), so that CI catches a
//! regression on any seed or past crash without cargo-fuzz or nightly.
//!
//! Each input must not panic (the harness asserts what can be asserted about
//! each answer), and each target's corpus must reach every stage: some inputs
//! refused, some rejected by the parser, some accepted.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use harness::Reached;

/// Runs every corpus file of `target` through `run`; returns the stages reached.
fn replay(target: &str, run: fn(&[u8]) -> Reached) -> HashSet<Reached> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{target}: only {} corpus files in {}",
        files.len(),
        dir.display()
    );
    let mut reached = HashSet::new();
    let mut panicked = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("a readable corpus file");
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(stage) => {
                reached.insert(stage);
            }
            Err(_) => panicked.push(file.display().to_string()),
        }
    }
    assert!(panicked.is_empty(), "{target}: panicked on {panicked:?}");
    reached
}

fn assert_reaches(target: &str, run: fn(&[u8]) -> Reached, stages: &[Reached]) {
    let reached = replay(target, run);
    for stage in stages {
        assert!(
            reached.contains(stage),
            "{target}: no corpus input ends {stage:?} (reached {reached:?})"
        );
    }
}

#[test]
fn client_frame_corpus() {
    assert_reaches(
        "client_frame",
        harness::client_frame,
        &[Reached::Accepted, Reached::Rejected],
    );
}

#[test]
fn livekit_webhook_corpus() {
    assert_reaches(
        "livekit_webhook",
        harness::livekit_webhook,
        &[Reached::Refused, Reached::Rejected, Reached::Accepted],
    );
}

#[test]
fn jaas_webhook_corpus() {
    assert_reaches(
        "jaas_webhook",
        harness::jaas_webhook,
        &[Reached::Refused, Reached::Rejected, Reached::Accepted],
    );
}

#[test]
fn nextcloud_request_corpus() {
    assert_reaches(
        "nextcloud_request",
        harness::nextcloud_request,
        &[Reached::Refused, Reached::Rejected, Reached::Accepted],
    );
}

#[test]
fn config_file_corpus() {
    assert_reaches(
        "config_file",
        harness::config_file,
        &[Reached::Accepted, Reached::Rejected],
    );
}
