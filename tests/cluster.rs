//! Several real onair processes acting as one over a real `redis-server`:
//! shared rooms, one recording per room under concurrent starts, a node killed
//! with SIGKILL, and Redis restarted under live rooms.

mod support;

use std::time::Duration;

use onair::protocol::Role;
use serde_json::Value;
use serde_json::json;
use support::binary::{self, Onair};
use support::harness::{ADMIN_KEY, Client, RECV_TIMEOUT, Server, http};
use support::redis::Redis;

/// One onair process of the cluster, on its own store, killed on drop.
struct Node(Onair);

impl std::ops::Deref for Node {
    type Target = Onair;
    fn deref(&self) -> &Onair {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Onair {
        &mut self.0
    }
}

impl Node {
    /// Starts the binary on a free port with its own store, and waits until it is ready.
    async fn start(redis: &Redis, id: &str) -> Self {
        Self::start_with(redis, id, &[]).await
    }

    async fn start_with(redis: &Redis, id: &str, extra_env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut command =
            binary::cluster_command(data.path(), &redis.url(), id, "cluster", 2).await;
        let onair = Onair::spawn(command.envs(extra_env.iter().copied())).owning(data);
        let node = Self(onair);
        node.readiness(200).await;
        node
    }

    /// Waits until `/readyz` answers `status`.
    async fn readiness(&self, status: u16) {
        self.server.readyz(status, Duration::from_secs(15)).await;
    }

    async fn join(&self, room: &str, name: &str, role: Role) -> (Client, Value) {
        self.server.join(room, name, role).await
    }
}

fn ids(success: &Value) -> Vec<String> {
    success["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_share_a_room() {
    let redis = Redis::start();
    let a = Node::start(&redis, "node-a").await;
    let b = Node::start(&redis, "node-b").await;

    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, success) = b.join("standup", "Bob", Role::User).await;
    // Bob, on the other node, sees Ada; Ada sees Bob join.
    assert_eq!(ids(&success), [ada.id.clone()]);
    assert_eq!(success["participants"][0]["control"]["display_name"], "Ada");
    let joined = ada.expect("control", "joined").await;
    assert_eq!(joined["id"], bob.id.as_str());

    // A third client on node A sees both, in joining order.
    let (mut cid, success) = a.join("standup", "Cid", Role::Guest).await;
    assert_eq!(ids(&success), [ada.id.clone(), bob.id.clone()]);
    ada.expect("control", "joined").await;
    bob.expect("control", "joined").await;

    // Consent crosses nodes, and the REST API on either node sees it.
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    for client in [&mut ada, &mut cid] {
        let update = client.expect("control", "update").await;
        assert_eq!(update["id"], bob.id.as_str());
        assert_eq!(update["recording"]["consents_recording"], true);
    }
    let room: Value = http()
        .get(a.server.url("/v1/rooms/standup"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(room["participants"].as_array().unwrap().len(), 3, "{room}");

    // The recording lifecycle reaches everyone on every node.
    ada.recording(json!({"action": "start"})).await;
    let started = ada.until("recording", "started").await;
    for client in [&mut bob, &mut cid] {
        assert_eq!(
            client.until("recording", "started").await["recording_id"],
            started["recording_id"]
        );
    }
    // A late joiner on the other node sees the recording in join_success.
    let (mut dee, success) = b.join("standup", "Dee", Role::User).await;
    assert_eq!(
        success["recording"]["recording_id"],
        started["recording_id"]
    );
    ada.recording(json!({"action": "stop", "recording_id": started["recording_id"]}))
        .await;
    for client in [&mut ada, &mut bob, &mut cid, &mut dee] {
        client.until("recording", "stopped").await;
    }

    // Leaving is seen on the other node.
    let bob_id = bob.id.clone();
    drop(bob);
    let left = ada.until("control", "left").await;
    assert_eq!(left["id"], bob_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_on_two_nodes_start_one_recording() {
    let redis = Redis::start();
    let a = Node::start(&redis, "node-a").await;
    let b = Node::start(&redis, "node-b").await;
    for round in 0..5 {
        let room = format!("race-{round}");
        let (mut ada, _) = a.join(&room, "Ada", Role::Moderator).await;
        let (mut bea, _) = b.join(&room, "Bea", Role::Moderator).await;
        ada.expect("control", "joined").await;

        // Both moderators press start at the same time, on different nodes.
        tokio::join!(
            ada.recording(json!({"action": "start"})),
            bea.recording(json!({"action": "start"}))
        );
        let (ada_frames, bea_frames) = tokio::join!(
            frames_until_settled(&mut ada),
            frames_until_settled(&mut bea)
        );
        let all: Vec<&Value> = ada_frames.iter().chain(&bea_frames).collect();
        let started: Vec<&&Value> = all
            .iter()
            .filter(|f| f["payload"]["message"] == "started")
            .collect();
        let refused: Vec<&&Value> = all
            .iter()
            .filter(|f| f["payload"]["message"] == "error")
            .collect();
        // One `started` per client (the same recording), one refusal in all.
        assert_eq!(started.len(), 2, "{all:#?}");
        assert_eq!(
            started[0]["payload"]["recording_id"],
            started[1]["payload"]["recording_id"]
        );
        assert_eq!(refused.len(), 1, "{all:#?}");
        assert_eq!(refused[0]["payload"]["error"], "already_recording");
    }
}

/// Reads a client's frames until it has seen `started`, and, if it also lost
/// the race, the refusal: both arrive, in either order.
async fn frames_until_settled(client: &mut Client) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let has = |message: &str| {
            frames
                .iter()
                .any(|f: &Value| f["payload"]["message"] == message)
        };
        if has("started") {
            // The winner's own refusal cannot come; the loser's may still be
            // queued behind `started`: a short look for it.
            if has("error") {
                return frames;
            }
            match tokio::time::timeout(Duration::from_millis(500), client.recv()).await {
                Ok(frame) => {
                    frames.push(frame);
                    continue;
                }
                Err(_) => return frames,
            }
        }
        let frame = tokio::time::timeout_at(deadline, client.recv())
            .await
            .expect("`started` arrives in time");
        frames.push(frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_participants_leave_and_its_recording_goes_on() {
    let redis = Redis::start();
    let mut a = Node::start(&redis, "node-a").await;
    let b = Node::start(&redis, "node-b").await;
    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join("standup", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    let started = bob.until("recording", "started").await;

    // kill -9 of the node Ada is on: no goodbye, only its heartbeat stops.
    a.kill();
    // Bob learns within the TTL (2 s) plus a sweep (1 s): well inside the receive timeout.
    let left = bob.until("control", "left").await;
    assert_eq!(left["id"], ada.id.as_str());

    // The recording Ada started keeps going: a new joiner sees it.
    let (_carol, success) = b.join("standup", "Carol", Role::User).await;
    assert_eq!(ids(&success), [bob.id.clone()]);
    assert_eq!(success["recording"]["status"], "recording");
    assert_eq!(
        success["recording"]["recording_id"],
        started["recording_id"]
    );
    drop(ada);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_live_rooms() {
    let mut redis = Redis::start();
    let a = Node::start(&redis, "node-a").await;
    let b = Node::start(&redis, "node-b").await;
    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join("standup", "Bob", Role::User).await;
    ada.expect("control", "joined").await;

    redis.kill();
    // Every socket is told instead of silently missing events; /readyz fails.
    for client in [&mut ada, &mut bob] {
        let error = client.until("control", "error").await;
        assert_eq!(error["error"], "cluster_unavailable");
    }
    a.readiness(503).await;
    b.readiness(503).await;

    // Redis comes back empty; both nodes reconnect and re-register their participants.
    redis.restart();
    a.readiness(200).await;
    b.readiness(200).await;

    // The room works again across nodes.
    let (mut cid, success) = b.join("standup", "Cid", Role::Guest).await;
    let mut seen = ids(&success);
    seen.sort();
    let mut want = vec![ada.id.clone(), bob.id.clone()];
    want.sort();
    assert_eq!(seen, want);
    ada.until("control", "joined").await;
    bob.until("control", "joined").await;
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    assert_eq!(ada.until("control", "update").await["id"], bob.id.as_str());
    ada.recording(json!({"action": "start"})).await;
    for client in [&mut ada, &mut bob, &mut cid] {
        client.until("recording", "started").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_report_at_any_node_reaches_every_node() {
    let redis = Redis::start();
    // The manual recorder confirms through the REST API, like a provider webhook.
    let confirm = [("ONAIR_RECORDING__MANUAL_CONFIRM", "true")];
    let a = Node::start_with(&redis, "node-a", &confirm).await;
    let b = Node::start_with(&redis, "node-b", &confirm).await;
    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join("standup", "Bob", Role::User).await;
    ada.expect("control", "joined").await;

    ada.recording(json!({"action": "start"})).await;
    let initializing = bob.until("recording", "status").await;
    assert_eq!(initializing["status"], "initializing");
    let id = initializing["recording_id"].clone();

    // The recorder reports to node B; Ada, on node A, sees the recording start.
    let response = http()
        .post(b.server.url("/v1/rooms/standup/recording/status"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"status": "recording", "recording_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for client in [&mut ada, &mut bob] {
        assert_eq!(
            client.until("recording", "started").await["recording_id"],
            id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_start_timeout_is_taken_over() {
    let redis = Redis::start();
    // The recorder never confirms; the start times out after 2 s.
    let env = [
        ("ONAIR_RECORDING__MANUAL_CONFIRM", "true"),
        ("ONAIR_RECORDING__START_TIMEOUT_S", "2"),
    ];
    let mut a = Node::start_with(&redis, "node-a", &env).await;
    let b = Node::start_with(&redis, "node-b", &env).await;
    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join("standup", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    let initializing = bob.until("recording", "status").await;
    assert_eq!(initializing["status"], "initializing");

    // Node A armed the timeout and dies before it fires: node B fires it
    // once the deadline is overdue by a node TTL (2 s + 2 s + a 1 s sweep).
    a.kill();
    let left = bob.until("control", "left").await;
    assert_eq!(left["id"], ada.id.as_str());
    let settled = bob.until("recording", "status").await;
    assert_eq!(settled["status"], "inactive");
    assert_eq!(settled["reason"], "recorder_timeout");
    assert_eq!(settled["recording_id"], initializing["recording_id"]);

    // The room is free again: a moderator on node B starts a new recording.
    let (mut cleo, success) = b.join("standup", "Cleo", Role::Moderator).await;
    assert!(success["recording"].is_null());
    cleo.recording(json!({"action": "start"})).await;
    let next = bob.until("recording", "status").await;
    assert_eq!(next["status"], "initializing");
    assert_ne!(next["recording_id"], initializing["recording_id"]);
    drop(ada);
}

#[tokio::test]
async fn a_dead_nodes_stop_deadline_is_taken_over() {
    let redis = Redis::start();
    // The recorder confirms the start but never the stop (stop deadline 2 s).
    let env = [
        ("ONAIR_RECORDING__MANUAL_CONFIRM", "true"),
        ("ONAIR_RECORDING__STOP_TIMEOUT_S", "2"),
    ];
    let mut a = Node::start_with(&redis, "node-a", &env).await;
    let b = Node::start_with(&redis, "node-b", &env).await;
    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join("standup", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    let id = bob.until("recording", "status").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmed = http()
        .post(a.server.url("/v1/rooms/standup/recording/status"))
        .bearer_auth(support::harness::ADMIN_KEY)
        .json(&json!({"status": "recording", "recording_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert_eq!(bob.until("recording", "started").await["recording_id"], id);
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    loop {
        if bob.until("recording", "status").await["status"] == "stopping" {
            break;
        }
    }
    // Node A armed the stop deadline and dies: node B enforces it, and Bob,
    // who saw `started`, gets `stopped`.
    a.kill();
    let left = bob.until("control", "left").await;
    assert_eq!(left["id"], ada.id.as_str());
    assert_eq!(bob.until("recording", "stopped").await["recording_id"], id);
    let settled = bob.until("recording", "status").await;
    assert_eq!(settled["status"], "inactive");
    assert_eq!(settled["reason"], "stop_timeout");
    drop(ada);
}

#[tokio::test]
async fn a_dead_nodes_empty_room_deadline_is_taken_over() {
    let redis = Redis::start();
    let env = [("ONAIR_RECORDING__EMPTY_ROOM_GRACE_S", "1")];
    let mut a = Node::start_with(&redis, "node-a", &env).await;
    let b = Node::start_with(&redis, "node-b", &env).await;
    let (mut ada, _) = a.join("standup", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.until("recording", "started").await["recording_id"].clone();
    // The last participant leaves node A, which armed the grace period and
    // then dies before it passes.
    drop(ada);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill();
    // Node B enforces it: well after the grace period and a node TTL, the
    // next one in finds the recording ended (looking sooner would keep it).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_bob, success) = b.join("standup", "Bob", Role::User).await;
    assert_eq!(success["recording"], Value::Null, "{success} ({id})");
}

/// A storm of joins and then of leaves (every socket dropped at once) used
/// to park every worker of a node in a Redis wait, leaving none to drive the
/// Redis connection: the node froze and ignored SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_leave_storm_leaves_both_nodes_responsive() {
    const CLIENTS: usize = 1_000;
    let redis = Redis::start();
    let mut a = Node::start(&redis, "node-a").await;
    let mut b = Node::start(&redis, "node-b").await;
    let addrs = [a.server.addr, b.server.addr];
    let storm = |wave: usize| async move {
        let joins = (0..CLIENTS).map(|i| {
            let server = Server::remote(addrs[i % 2]);
            tokio::spawn(async move {
                let room = format!("storm-{wave}-{}", i / 10);
                server.join(&room, &format!("bot {i}"), Role::User).await
            })
        });
        let joined = tokio::time::timeout(
            Duration::from_secs(120),
            futures_util::future::join_all(joins),
        )
        .await
        .expect("every join is answered");
        joined
            .into_iter()
            .map(|j| j.expect("the join succeeds").0)
            .collect::<Vec<Client>>()
    };
    let first = storm(1).await;
    // Every socket goes at once, and a second wave joins while they leave.
    drop(first);
    let second = storm(2).await;
    drop(second);

    // Both nodes still answer, and a new room works across them.
    a.readiness(200).await;
    b.readiness(200).await;
    let (mut ada, _) = a.join("after", "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join("after", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    bob.until("recording", "started").await;

    // And each exits on SIGTERM.
    for node in [&mut a, &mut b] {
        node.terminate_within(Duration::from_secs(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_recording_saw_is_noted_for_every_node() {
    let redis = Redis::start();
    let a = Node::start(&redis, "node-a").await;
    let b = Node::start(&redis, "node-b").await;
    let (mut ada, _) = a.join("facts", "Ada", Role::Moderator).await;
    let (mut bea, _) = b.join("facts", "Bea", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.until("recording", "started").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bea.until("recording", "started").await;
    // A third participant comes and goes while it records, through node B.
    let (cid, _) = b.join("facts", "Cid", Role::User).await;
    ada.until("control", "joined").await;
    drop(cid);
    ada.until("control", "left").await;
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    ada.until("recording", "stopped").await;

    // Started with two present, three at most: in Redis, where any node
    // (the one that catalogues the file) reads it.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let facts: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("onair:catalog:facts:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        facts.get("peak").map(String::as_str),
        Some("3"),
        "{facts:?}"
    );
    let started = facts.get("started_at").expect("a start time");
    assert!(humantime::parse_rfc3339(started).is_ok(), "{started}");
}
