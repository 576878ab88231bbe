//! `[cluster]`: at every connection a node checks whether its Redis persists
//! (`CONFIG GET appendonly`/`save`, or `INFO persistence` where `CONFIG` is
//! refused, as on managed Redis) and says so in its log: loudly when a
//! restart of Redis would lose the rooms' state. Real `redis-server`s, the
//! real binary.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::binary::{self, Onair};
use support::redis::Redis;

/// The log lines of a node that connected to `redis`, became ready, and was stopped.
async fn node_logs(redis: &Redis) -> Vec<Value> {
    let data = tempfile::tempdir().unwrap();
    // A cluster keeps its recording files in the shared bucket.
    let storage = support::moto::shared_storage_env("persistence").await;
    let mut onair = Onair::spawn_keeping_logs(
        binary::command(data.path())
            .envs(storage)
            .env("ONAIR_CLUSTER__REDIS_URL", redis.url())
            .env("RUST_LOG", "info"),
    )
    .owning(data);
    onair.server.readyz(200, Duration::from_secs(15)).await;
    onair.terminate_within(Duration::from_secs(15));
    onair
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The level and message of the node's line about Redis's persistence.
fn persistence_line(logs: &[Value]) -> (String, String) {
    let line = logs
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cluster:") && m.to_lowercase().contains("persist"))
        })
        .unwrap_or_else(|| panic!("no line about Redis's persistence in {logs:#?}"));
    (
        line["level"].as_str().unwrap().to_owned(),
        line["fields"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_redis_that_does_not_persist_is_reported_as_an_error() {
    let redis = Redis::start();
    let (level, message) = persistence_line(&node_logs(&redis).await);
    assert_eq!(level, "ERROR", "{message}");
    assert!(message.contains("DOES NOT PERSIST"), "{message}");
    assert!(message.contains("--appendonly yes"), "{message}");
}

#[tokio::test]
async fn a_redis_with_its_append_only_file_is_reported_as_persisting() {
    let redis = Redis::start_persisting();
    let (level, message) = persistence_line(&node_logs(&redis).await);
    assert_eq!(level, "INFO", "{message}");
    assert!(message.contains("append-only file"), "{message}");
}

#[tokio::test]
async fn without_config_the_node_asks_info_or_says_it_could_not_check() {
    // Managed Redis services refuse CONFIG: INFO persistence still tells.
    let redis = Redis::start_with(&["--rename-command", "CONFIG", ""]);
    let (level, message) = persistence_line(&node_logs(&redis).await);
    assert_eq!(level, "WARN", "{message}");
    assert!(message.contains("append-only file is off"), "{message}");
    // And when INFO is refused too, the node says it could not check.
    let redis = Redis::start_with(&[
        "--rename-command",
        "CONFIG",
        "",
        "--rename-command",
        "INFO",
        "",
    ]);
    let (level, message) = persistence_line(&node_logs(&redis).await);
    assert_eq!(level, "WARN", "{message}");
    assert!(message.contains("could not check"), "{message}");
}
