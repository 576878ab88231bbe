//! Whether the cluster's Redis keeps what onair writes across its own restart.
//!
//! With `[cluster]`, room state, deadlines, tickets and join buckets live in
//! Redis. A Redis without persistence comes back empty after a restart: the
//! rooms' recording states and deadlines are gone. So each time a node
//! connects it asks (`CONFIG GET appendonly`, `CONFIG GET save`, or where
//! `CONFIG` is refused, as managed Redis services do, `INFO persistence`) and
//! says loudly what it found.

use redis::aio::MultiplexedConnection;

use super::{Cluster, ClusterError};

/// What the Redis says about its persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// The append-only file is on (`appendfsync` as given, when known).
    AppendOnly(Option<String>),
    /// Snapshots only (`save` rules as given): a restart loses what came after the last.
    SnapshotsOnly(String),
    /// Neither: a restart loses everything.
    None,
    /// `CONFIG` was refused and `INFO` says the append-only file is off; the
    /// snapshot rules cannot be read.
    NoAppendOnlySnapshotsUnknown,
    /// Both questions were refused.
    Unknown(String),
}

impl Persistence {
    /// From `CONFIG GET appendonly`, `CONFIG GET appendfsync` and `CONFIG GET save`.
    pub fn from_config(appendonly: &str, appendfsync: Option<&str>, save: &str) -> Self {
        if appendonly.eq_ignore_ascii_case("yes") {
            Self::AppendOnly(appendfsync.map(str::to_owned))
        } else if !save.trim().is_empty() {
            Self::SnapshotsOnly(save.trim().to_owned())
        } else {
            Self::None
        }
    }

    /// From the text of `INFO persistence`, `None` when it has no `aof_enabled`.
    pub fn from_info(info: &str) -> Option<Self> {
        let aof = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("aof_enabled:"))?;
        Some(if aof.trim() == "1" {
            Self::AppendOnly(None)
        } else {
            Self::NoAppendOnlySnapshotsUnknown
        })
    }

    /// Logs what was found: info when it persists every write, a warning otherwise.
    pub fn report(&self, redis: &str) {
        const LOST: &str =
            "recording states, deadlines and tickets kept in Redis are lost when it restarts";
        match self {
            Self::AppendOnly(fsync) => tracing::info!(
                redis,
                appendfsync = fsync.as_deref().unwrap_or("unknown"),
                "cluster: Redis persists with its append-only file"
            ),
            Self::SnapshotsOnly(save) => tracing::warn!(
                redis,
                save = %save,
                "cluster: Redis persists by snapshots only: {LOST} since the last snapshot; \
                 run it with `--appendonly yes`"
            ),
            Self::None => tracing::error!(
                redis,
                "cluster: Redis DOES NOT PERSIST (appendonly no, no save rules): all {LOST}; \
                 run it with `--appendonly yes`"
            ),
            Self::NoAppendOnlySnapshotsUnknown => tracing::warn!(
                redis,
                "cluster: Redis's append-only file is off (INFO persistence) and its snapshot \
                 rules could not be read (CONFIG refused): {LOST} since the last snapshot, if any"
            ),
            Self::Unknown(why) => tracing::warn!(
                redis,
                error = %why,
                "cluster: could not check whether Redis persists (CONFIG and INFO refused): \
                 make sure it runs with `--appendonly yes`, or {LOST}"
            ),
        }
    }
}

impl Cluster {
    /// Asks the Redis behind `conn` how it persists.
    pub(super) async fn persistence(&self, conn: &mut MultiplexedConnection) -> Persistence {
        let config = async {
            let get = |key: &'static str| {
                let mut conn = conn.clone();
                async move {
                    let pair: Vec<String> = self
                        .timed(
                            redis::cmd("CONFIG")
                                .arg("GET")
                                .arg(key)
                                .query_async(&mut conn),
                        )
                        .await?;
                    Ok::<_, ClusterError>(pair.get(1).cloned().unwrap_or_default())
                }
            };
            let appendonly = get("appendonly").await?;
            let appendfsync = get("appendfsync").await.ok();
            let save = get("save").await?;
            Ok::<_, ClusterError>(Persistence::from_config(
                &appendonly,
                appendfsync.as_deref(),
                &save,
            ))
        };
        let refused = match config.await {
            Ok(found) => return found,
            Err(e) => e,
        };
        let info: Result<String, _> = self
            .timed(redis::cmd("INFO").arg("persistence").query_async(conn))
            .await;
        match info.map(|text| Persistence::from_info(&text)) {
            Ok(Some(found)) => found,
            Ok(None) => Persistence::Unknown(format!("{refused}; INFO has no aof_enabled")),
            Err(e) => Persistence::Unknown(format!("{refused}; {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_say_how_redis_persists() {
        assert_eq!(
            Persistence::from_config("yes", Some("everysec"), ""),
            Persistence::AppendOnly(Some("everysec".into()))
        );
        assert_eq!(
            Persistence::from_config("no", None, "3600 1 300 100"),
            Persistence::SnapshotsOnly("3600 1 300 100".into())
        );
        assert_eq!(Persistence::from_config("no", None, " "), Persistence::None);
        let info = "# Persistence\r\nloading:0\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\n";
        assert_eq!(
            Persistence::from_info(info),
            Some(Persistence::AppendOnly(None))
        );
        assert_eq!(
            Persistence::from_info("aof_enabled:0\r\n"),
            Some(Persistence::NoAppendOnlySnapshotsUnknown)
        );
        assert_eq!(Persistence::from_info("loading:0"), None);
    }
}
