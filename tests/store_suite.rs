//! One catalog suite, two stores: every function below takes a
//! [`CatalogStore`] and runs once against SQLite (the single node) and once
//! against a real `redis-server` (`[cluster]`), so both keep the catalog,
//! legal holds, facts, owners, notification settings and JaaS downloads
//! with the same meaning. Then what only the Redis side has: the outbox rows
//! it writes with a catalog change, and an error (never a silent loss) when
//! Redis is gone.

mod support;

use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use onair::catalog::{Location, Recording};
use onair::cluster::{Cluster, Host, wire};
use onair::config::ClusterConfig;
use onair::protocol::Participant;
use onair::recording::Deadline;
use onair::store::{CatalogError, CatalogStore, DeliveryKind, NewDelivery, Store};
use support::redis::Redis;
use tokio_util::sync::CancellationToken;

/// How long a node may take to connect to a fresh redis-server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A node with no rooms: the catalog needs the cluster's connection only.
struct NoRooms;

impl Host for NoRooms {
    fn deliver(self: &Arc<Self>, _room: &str, _message: wire::Message<'_>) {}
    fn local_members(&self) -> Vec<(String, Participant)> {
        Vec::new()
    }
    fn is_local(&self, _room: &str) -> bool {
        false
    }
    fn connection_lost(&self) {}
    fn rooms_emptied(self: &Arc<Self>, _rooms: Vec<String>) {}
    fn deadline_overdue(
        self: &Arc<Self>,
        _room: String,
        _recording_id: String,
        _deadline: Deadline,
    ) {
    }
}

/// A store of each kind; the Redis one's server and connection live as long
/// as the returned guard.
struct Stores {
    sqlite: CatalogStore,
    redis: CatalogStore,
    server: Redis,
    shutdown: CancellationToken,
}

impl Stores {
    async fn start() -> Self {
        let server = Redis::start();
        let config = ClusterConfig {
            redis_url: Some(server.url()),
            node_id: "node-a".into(),
            heartbeat_s: 1,
            node_ttl_s: 2,
            command_timeout_s: 2,
        };
        let cluster = Cluster::from_config(&config)
            .expect("a valid Redis URL")
            .expect("cluster mode");
        let shutdown = CancellationToken::new();
        tokio::spawn(cluster.clone().run(Arc::new(NoRooms), shutdown.clone()));
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        while !cluster.is_ready() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not connect to redis-server"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let store = Arc::new(Store::in_memory().unwrap());
        Self {
            sqlite: CatalogStore::new(store.clone(), None),
            redis: CatalogStore::new(store, Some(cluster.clone())),
            server,
            shutdown,
        }
    }

    /// Both, named for the assertion messages.
    fn both(&self) -> [(&'static str, &CatalogStore); 2] {
        [("sqlite", &self.sqlite), ("redis", &self.redis)]
    }

    /// A plain connection to the redis-server, to look at what was written.
    async fn inspect(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Pending and held outbox rows, whatever keeps them.
async fn outbox_rows(stores: &Stores, which: &str) -> u64 {
    match which {
        "sqlite" => {
            let CatalogStore::Sqlite(store) = &stores.sqlite else {
                unreachable!()
            };
            store.outbox_counts().unwrap().pending + store.notification_counts().unwrap().pending
        }
        _ => {
            let mut conn = stores.inspect().await;
            let due: u64 = redis::cmd("ZCARD")
                .arg(wire::outbox_due_key())
                .query_async(&mut conn)
                .await
                .unwrap();
            let held: u64 = redis::cmd("SCARD")
                .arg(wire::outbox_held_key())
                .query_async(&mut conn)
                .await
                .unwrap();
            due + held
        }
    }
}

fn recording(id: &str, room: &str, created_at: &str) -> Recording {
    Recording {
        id: id.into(),
        room: room.into(),
        name: "a.mp4".into(),
        duration_s: 1.5,
        size_bytes: 42,
        location: Location::File("/tmp/a.mp4".into()),
        provider: "manual".into(),
        created_at: created_at.into(),
        participants: Vec::new(),
        initiator: None,
    }
}

fn delivery(id: &str) -> NewDelivery {
    NewDelivery {
        kind: DeliveryKind::Webhook,
        held: false,
        message_id: id.into(),
        endpoint: "http://127.0.0.1:1/hook".into(),
        event_type: "recording.available".into(),
        payload: "{}".into(),
    }
}

fn notification(id: &str, held: bool) -> NewDelivery {
    NewDelivery {
        kind: DeliveryKind::Notification,
        held,
        message_id: id.into(),
        endpoint: "http://127.0.0.1:1/notify".into(),
        event_type: "recording.notification".into(),
        payload: "{\"retrievalUrl\":\"/v1/recordings/r1/media\"}".into(),
    }
}

const T1: &str = "2026-01-01T00:00:00.000Z";
const T2: &str = "2026-01-02T00:00:00.000Z";
const T3: &str = "2026-06-01T00:00:00.000Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_catalogued_once_with_their_deliveries() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        let r1 = recording("r1", "room", T1);
        assert!(
            store
                .insert_recording(&r1, &[delivery("m1"), notification("n1", true)])
                .await
                .unwrap(),
            "{which}"
        );
        // The same id again: nothing written, its deliveries neither.
        assert!(
            !store
                .insert_recording(&r1, &[delivery("m2")])
                .await
                .unwrap(),
            "{which}"
        );
        assert_eq!(outbox_rows(&stores, which).await, 2, "{which}");
        assert_eq!(store.recording("r1").await.unwrap(), Some(r1), "{which}");
        assert_eq!(store.recordings(Some("room")).await.unwrap().len(), 1);
        assert_eq!(store.recordings(Some("other")).await.unwrap().len(), 0);
        let removed = store
            .delete_recording("r1", |r| vec![delivery(&format!("deleted-{}", r.id))])
            .await
            .unwrap();
        assert_eq!(removed.map(|r| r.id).as_deref(), Some("r1"), "{which}");
        assert_eq!(store.recording("r1").await.unwrap(), None, "{which}");
        assert!(store.recordings(None).await.unwrap().is_empty(), "{which}");
        assert_eq!(outbox_rows(&stores, which).await, 3, "{which}");
        // Gone already: nothing removed, nothing written.
        let again = store
            .delete_recording("r1", |_| vec![delivery("never")])
            .await
            .unwrap();
        assert_eq!(again, None, "{which}");
        assert_eq!(outbox_rows(&stores, which).await, 3, "{which}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_a_recording_round_trips() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        let locations = [
            Location::File("/var/lib/onair/recordings/room/r-1.mp4".into()),
            Location::External("https://cdn.example.com/a b.mp4?x=1".into()),
            Location::Object {
                key: "onair/recordings/room/r-3/a.mp4".into(),
            },
        ];
        for (n, location) in locations.into_iter().enumerate() {
            let r = Recording {
                id: format!("r-{n}"),
                room: "standup:1".into(),
                name: "Standup – weekly.mp4".into(),
                duration_s: 754.125,
                size_bytes: u64::from(u32::MAX) + 7,
                location,
                provider: "jaas".into(),
                created_at: T2.into(),
                participants: vec!["ada".into(), "grace hopper".into()],
                initiator: Some("ada".into()),
            };
            store.insert_recording(&r, &[]).await.unwrap();
            assert_eq!(
                store.recording(&r.id).await.unwrap().as_ref(),
                Some(&r),
                "{which}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_listed_newest_first_by_room() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        for (id, room, at) in [
            ("b", "one", T1),
            ("a", "two", T3),
            ("c", "one", T3),
            ("d", "one", T2),
        ] {
            store
                .insert_recording(&recording(id, room, at), &[])
                .await
                .unwrap();
        }
        let ids = |list: Vec<Recording>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
        // Newest first; the same time, by id.
        assert_eq!(
            ids(store.recordings(None).await.unwrap()),
            ["a", "c", "d", "b"],
            "{which}"
        );
        assert_eq!(
            ids(store.recordings(Some("one")).await.unwrap()),
            ["c", "d", "b"],
            "{which}"
        );
        assert_eq!(store.recording("nothing").await.unwrap(), None, "{which}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_move_only_from_where_they_are() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        store
            .insert_recording(&recording("r1", "room", T1), &[])
            .await
            .unwrap();
        let file = Location::File("/tmp/a.mp4".into());
        let object = Location::Object {
            key: "recordings/room/r1/a.mp4".into(),
        };
        let elsewhere = Location::File("/elsewhere".into());
        assert!(
            !store
                .move_recording("r1", &elsewhere, &object)
                .await
                .unwrap()
        );
        assert!(!store.move_recording("r2", &file, &object).await.unwrap());
        assert!(
            store.move_recording("r1", &file, &object).await.unwrap(),
            "{which}"
        );
        let moved = store.recording("r1").await.unwrap().unwrap();
        assert_eq!(moved.location, object, "{which}");
        assert!(!store.move_recording("r1", &file, &object).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_recordings_expire_unless_held() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        for (id, created) in [("old", T1), ("held", T2), ("new", T3)] {
            store
                .insert_recording(&recording(id, "room", created), &[])
                .await
                .unwrap();
        }
        let hold = "2026-07-01T00:00:00.000Z";
        assert!(store.set_keep_until("held", Some(hold)).await.unwrap());
        assert!(!store.set_keep_until("nothing", None).await.unwrap());
        assert_eq!(
            store.keep_until("held").await.unwrap().as_deref(),
            Some(hold)
        );
        let cutoff = "2026-03-01T00:00:00.000Z";
        assert_eq!(
            store
                .expired_recordings(cutoff, "2026-04-01T00:00:00.000Z", 10)
                .await
                .unwrap(),
            ["old"],
            "{which}"
        );
        // Once the hold has passed, or is lifted, the retention applies.
        assert_eq!(
            store
                .expired_recordings(cutoff, "2026-08-01T00:00:00.000Z", 10)
                .await
                .unwrap(),
            ["old", "held"],
            "{which}"
        );
        store.set_keep_until("held", None).await.unwrap();
        assert_eq!(store.keep_until("held").await.unwrap(), None, "{which}");
        assert_eq!(
            store.expired_recordings(cutoff, cutoff, 1).await.unwrap(),
            ["old"],
            "{which}"
        );
        // A recording made exactly at the cutoff is not older than it.
        assert_eq!(
            store.expired_recordings(T1, T1, 10).await.unwrap(),
            Vec::<String>::new(),
            "{which}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_keep_the_start_and_only_raise_the_peak() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        assert_eq!(store.recording_facts("r1").await.unwrap(), None);
        // No start noted: a peak alone is not a fact.
        store.recording_peak("r1", 4).await.unwrap();
        assert_eq!(store.recording_facts("r1").await.unwrap(), None, "{which}");
        store.recording_started("r1", 2).await.unwrap();
        let started = store.recording_facts("r1").await.unwrap().unwrap();
        assert_eq!(started.peak_participants, 2, "{which}");
        store.recording_started("r1", 9).await.unwrap();
        store.recording_peak("r1", 5).await.unwrap();
        store.recording_peak("r1", 3).await.unwrap();
        let facts = store.recording_facts("r1").await.unwrap().unwrap();
        assert_eq!(facts.started_at, started.started_at, "{which}");
        assert_eq!(facts.peak_participants, 5, "{which}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_their_settings_are_remembered() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        store.set_owner("r1", "ada").await.unwrap();
        store.set_owner("r1", "mallory").await.unwrap();
        assert_eq!(
            store.owner("r1").await.unwrap().as_deref(),
            Some("ada"),
            "{which}"
        );
        assert_eq!(store.owner("r2").await.unwrap(), None, "{which}");
        assert_eq!(store.notification_settings("ada").await.unwrap(), None);
        store
            .save_notification_settings("ada", "{\"notify\":true}")
            .await
            .unwrap();
        store
            .save_notification_settings("ada", "{\"notify\":false}")
            .await
            .unwrap();
        assert_eq!(
            store.notification_settings("ada").await.unwrap().as_deref(),
            Some("{\"notify\":false}"),
            "{which}"
        );
        assert_eq!(store.notification_settings("grace").await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jaas_download_is_journalled_with_its_key_once() {
    let stores = Stores::start().await;
    for (which, store) in stores.both() {
        assert!(
            store
                .jaas_download_accepted("r1", "{\"n\":1}", Some("k1"), 2_000)
                .await
                .unwrap(),
            "{which}"
        );
        // The same key again (a redelivery) writes nothing.
        assert!(
            !store
                .jaas_download_accepted("r2", "{}", Some("k1"), 2_000)
                .await
                .unwrap(),
            "{which}"
        );
        // Without a key (an older onair's journal), always written.
        assert!(
            store
                .jaas_download_accepted("r0", "{\"n\":0}", None, 1_000)
                .await
                .unwrap()
        );
        assert_eq!(
            store.jaas_downloads().await.unwrap(),
            [
                ("r0".to_owned(), "{\"n\":0}".to_owned()),
                ("r1".to_owned(), "{\"n\":1}".to_owned())
            ],
            "{which}: oldest first"
        );
        store.jaas_download_done("r1").await.unwrap();
        store.jaas_download_done("r0").await.unwrap();
        assert!(store.jaas_downloads().await.unwrap().is_empty(), "{which}");
    }
}

/// Redis only: the rows a catalog change writes follow the outbox layout
/// shared with the outbox's Redis side (pending rows due now, held rows
/// held by this node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_writes_outbox_rows_with_the_entry() {
    let stores = Stores::start().await;
    // Writing rows tells every node to look at once.
    let mut wakes = redis::Client::open(stores.server.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    wakes.subscribe(wire::outbox_wake_channel()).await.unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    stores
        .redis
        .insert_recording(
            &recording("r1", "room", T1),
            &[delivery("m1"), notification("n1", true)],
        )
        .await
        .unwrap();
    let mut conn = stores.inspect().await;
    let due: Vec<(i64, f64)> = redis::cmd("ZRANGE")
        .arg(wire::outbox_due_key())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let held: Vec<i64> = redis::cmd("SMEMBERS")
        .arg(wire::outbox_held_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((due.len(), held.len()), (1, 1));
    assert!(due[0].1 >= before, "due now");
    let row = |seq: i64| {
        let mut conn = conn.clone();
        async move {
            let row: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(wire::outbox_row_key(seq))
                .query_async(&mut conn)
                .await
                .unwrap();
            row
        }
    };
    let webhook = row(due[0].0).await;
    assert_eq!(webhook["kind"], "webhook");
    assert_eq!(webhook["message_id"], "m1");
    assert_eq!(webhook["endpoint"], "http://127.0.0.1:1/hook");
    assert_eq!(webhook["event_type"], "recording.available");
    assert_eq!(webhook["payload"], "{}");
    assert_eq!(webhook["attempts"], "0");
    assert_eq!(webhook["state"], "pending");
    assert!(webhook["created_ms"].parse::<f64>().unwrap() >= before);
    assert!(!webhook.contains_key("holder"));
    let post = row(held[0]).await;
    assert_eq!(post["kind"], "notification");
    assert_eq!(post["state"], "held");
    assert_eq!(post["holder"], "node-a");
    let seq: i64 = redis::cmd("GET")
        .arg(wire::outbox_seq_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(seq, 2);
    let notice = tokio::time::timeout(Duration::from_secs(5), wakes.on_message().next())
        .await
        .expect("a wake notice was published")
        .unwrap();
    assert_eq!(notice.get_payload::<String>().unwrap(), "node-a");
}

/// Redis only: without Redis every call is an error the caller can answer
/// 503 with; nothing is dropped quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_every_call_fails_loudly() {
    let mut stores = Stores::start().await;
    stores
        .redis
        .insert_recording(&recording("r1", "room", T1), &[])
        .await
        .unwrap();
    stores.server.kill();
    let store = &stores.redis;
    let unavailable = |result: Result<(), CatalogError>| {
        assert!(
            matches!(result, Err(CatalogError::Cluster(_))),
            "{result:?}"
        );
    };
    unavailable(
        store
            .insert_recording(&recording("r2", "room", T1), &[delivery("m1")])
            .await
            .map(drop),
    );
    unavailable(store.recording("r1").await.map(drop));
    unavailable(store.recordings(None).await.map(drop));
    unavailable(store.delete_recording("r1", |_| Vec::new()).await.map(drop));
    unavailable(store.set_keep_until("r1", None).await.map(drop));
    unavailable(store.set_owner("r1", "ada").await);
    unavailable(store.save_notification_settings("ada", "{}").await);
    unavailable(
        store
            .jaas_download_accepted("r1", "{}", None, 1)
            .await
            .map(drop),
    );
}
