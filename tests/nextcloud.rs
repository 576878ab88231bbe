//! The `nextcloud` backend against a fake Nextcloud Talk recording server
//! (`tests/nextcloud/fake_recording_server.py`) that validates onair's requests
//! and reports back exactly as nextcloud-talk-recording does. onair runs in
//! process on a port bound before its configuration is built, because the
//! recording server must know onair's URL (`Talk-Recording-Backend`) and
//! onair must know the recording server's.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use onair::config::BackendKind;
use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{ADMIN_KEY, Client, RECV_TIMEOUT, Server, config, http};
use tokio::sync::oneshot;

const SECRET: &str = "the-shared-recording-secret";
const BACKEND_PATH: &str = "/ocs/v2.php/apps/spreed/api/v1/recording/backend";

/// Lowercase hex HMAC-SHA256(secret, random + data), computed independently of onair.
fn checksum(secret: &str, random: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(random.as_bytes());
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// The fake recording server process; killed when dropped (and it exits by
/// itself when its stdin closes).
struct Fake {
    child: Child,
    url: String,
}

impl Fake {
    async fn start(backend: &str) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nextcloud/fake_recording_server.py");
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg(script)
            .args(["--backend", backend, "--secret", SECRET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the fake recording server");
        let stdout = child.stdout.take().unwrap();
        let mut fake = Self {
            child,
            url: String::new(),
        };
        let line = tokio::time::timeout(
            RECV_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("the fake recording server starts in time")
        .unwrap()
        .unwrap();
        let port = serde_json::from_str::<Value>(&line).expect("a {\"port\":…} line")["port"]
            .as_u64()
            .unwrap();
        fake.url = format!("http://127.0.0.1:{port}");
        fake
    }

    async fn get(&self, path: &str) -> Value {
        let response = http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = http()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    async fn behave(&self, behaviour: Value) {
        self.post("/control/behaviour", behaviour).await;
    }

    /// The requests onair sent to `/api/v1/room/*`, once `ready` holds for them.
    async fn requests_until(&self, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.poll("/control/requests", "requests", ready).await
    }

    /// The reports and uploads sent to onair, once `ready` holds for them.
    async fn events_until(&self, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.poll("/control/events", "events", ready).await
    }

    async fn poll(&self, path: &str, key: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let list = self.get(path).await[key].as_array().unwrap().clone();
            if ready(&list) {
                return list;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fake recording server did not see what was expected in time: {list:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One upload attempt by the fake, with overrides; returns (status, body).
    async fn upload(&self, spec: Value) -> (u64, Value) {
        let event = self.post("/control/upload", spec).await;
        let body = serde_json::from_str(event["body"].as_str().unwrap()).unwrap_or(Value::Null);
        (event["status"].as_u64().unwrap_or(0), body)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// onair with the nextcloud backend, and its fake recording server.
struct Onair {
    server: Server,
    url: String,
    fake: Fake,
    storage: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Onair {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn setup() -> Onair {
    setup_with(|_| {}).await
}

async fn setup_with(adjust: impl FnOnce(&mut onair::Config)) -> Onair {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let fake = Fake::start(&format!("{url}/")).await;
    let storage = tempfile::tempdir().unwrap();
    let mut config = config();
    config.recording.backend = BackendKind::Nextcloud;
    config.nextcloud.recording_server = Some(fake.url.clone());
    config.nextcloud.secret = Some(SECRET.into());
    config.nextcloud.backend_url = Some(url.clone());
    config.storage.path = storage.path().join("recordings");
    config.store.path = storage.path().join("onair.db");
    adjust(&mut config);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(onair::run(listener, config, async move {
        let _ = stopped.await;
    }));
    Onair {
        server: Server::remote(addr),
        url,
        fake,
        storage,
        stop: Some(stop),
    }
}

impl Onair {
    /// A moderator in `room`, and the user id (`sub`) its token names.
    async fn moderator(&self, room: &str) -> (Client, String) {
        let claims = self.server.claims(room, "Ada", Role::Moderator);
        let mut client = Client::connect_query(&self.server, &self.server.mint(&claims)).await;
        client.join(None).await;
        (client, claims.sub)
    }

    fn recordings_dir(&self) -> PathBuf {
        self.storage.path().join("recordings")
    }

    /// The files in the storage directory (none if it does not exist yet).
    fn stored_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.recordings_dir())
            .map(|dir| {
                dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Posts a state report as the recording server would, signed by the test.
    async fn report(
        &self,
        query: &str,
        accept: Option<&str>,
        body: &str,
        random: Option<&str>,
        checksum: Option<&str>,
    ) -> (u16, String, String) {
        let mut request = http()
            .post(format!("{}{BACKEND_PATH}{query}", self.url))
            .header("OCS-ApiRequest", "true")
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        if let Some(random) = random {
            request = request.header("Talk-Recording-Random", random);
        }
        if let Some(checksum) = checksum {
            request = request.header("Talk-Recording-Checksum", checksum);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, response.text().await.unwrap())
    }

    /// A correctly signed JSON report; returns (status, OCS envelope).
    async fn signed(&self, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let random = onair::auth::random_string(64);
        let sum = checksum(SECRET, &random, body.as_bytes());
        let (status, _, text) = self
            .report(
                "",
                Some("application/json"),
                &body,
                Some(&random),
                Some(&sum),
            )
            .await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn room_status(&self, room: &str) -> Value {
        let response = http()
            .get(format!("{}/v1/rooms/{room}", self.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        response.json::<Value>().await.unwrap()["recording"].clone()
    }
}

fn started(token: &str) -> Value {
    json!({"type": "started", "started": {"token": token, "status": 1, "actor": {"type": "users", "id": "x"}}})
}

/// Starts a recording and waits for `initializing`; returns the recording id.
async fn start(client: &mut Client, payload: Value) -> String {
    client.recording(payload).await;
    let status = client.expect("recording", "status").await;
    assert_eq!(status["status"], "initializing", "{status}");
    assert_eq!(status["provider"], "nextcloud");
    status["recording_id"].as_str().unwrap().to_owned()
}

/// Waits for `started` and `status recording` of this recording.
async fn confirmed(client: &mut Client, id: &str) {
    assert_eq!(
        client.expect("recording", "started").await["recording_id"],
        id
    );
    let status = client.expect("recording", "status").await;
    assert_eq!(
        (status["status"].as_str(), status["recording_id"].as_str()),
        (Some("recording"), Some(id))
    );
}

fn error_code(envelope: &Value) -> &Value {
    &envelope["ocs"]["data"]["error"]["code"]
}

#[tokio::test]
async fn a_recording_runs_through_the_recording_server_and_its_file_fans_out() {
    let onair = setup().await;
    let (mut ada, sub) = onair.moderator("standup-1").await;
    let id = start(&mut ada, json!({"action": "start"})).await;
    confirmed(&mut ada, &id).await;

    // What the recording server was asked, and that it accepted it.
    let requests = onair.fake.requests_until(|r| !r.is_empty()).await;
    let request = &requests[0];
    assert_eq!(request["path"], "/api/v1/room/standup-1");
    assert_eq!(request["status"], 200);
    let headers = &request["headers"];
    assert_eq!(headers["talk-recording-backend"], format!("{}/", onair.url));
    assert_eq!(headers["ocs-apirequest"], "true");
    assert_eq!(headers["content-type"], "application/json");
    let random = headers["talk-recording-random"].as_str().unwrap();
    assert_eq!(random.len(), 64);
    let body = request["body"].as_str().unwrap();
    assert_eq!(
        headers["talk-recording-checksum"],
        checksum(SECRET, random, body.as_bytes())
    );
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"type": "start", "start": {"status": 1, "owner": sub, "actor": {"type": "users", "id": sub}}})
    );

    // A late joiner sees the recording.
    let (mut bob, success) = onair.server.join("standup-1", "Bob", Role::User).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    ada.expect("control", "joined").await;

    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    for client in [&mut ada, &mut bob] {
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "stopping");
        assert_eq!(
            client.expect("recording", "stopped").await["recording_id"],
            id
        );
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "inactive");
        let available = client.expect("recording", "recording_available").await;
        assert_eq!(available["recording_id"], id);
        let name = available["name"].as_str().unwrap();
        assert!(
            name.starts_with("Recording ") && name.ends_with(".webm"),
            "{name}"
        );
        assert_eq!(available["size_bytes"], 100_000);
        assert_eq!(available["duration_s"], 0.0);
        let url = available["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("/v1/recordings/{id}/media?expires=")),
            "a signed link: {url}"
        );
    }

    let requests = onair.fake.requests_until(|r| r.len() >= 2).await;
    assert_eq!(requests[1]["status"], 200);
    assert_eq!(
        serde_json::from_str::<Value>(requests[1]["body"].as_str().unwrap()).unwrap(),
        json!({"type": "stop", "stop": {"actor": {"type": "users", "id": "onair"}}})
    );

    // Every report and the upload were accepted with an OCS envelope: XML for
    // the reports (BackendNotifier sends no Accept), JSON for the upload.
    let events = onair.fake.events_until(|e| e.len() >= 3).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "stopped", "upload"]);
    for event in &events[..2] {
        assert_eq!(event["status"], 200, "{event}");
        assert!(
            event["content_type"]
                .as_str()
                .unwrap()
                .starts_with("application/xml")
        );
        let body = event["body"].as_str().unwrap();
        assert!(
            body.starts_with("<?xml") && body.contains("<statuscode>200</statuscode>"),
            "{body}"
        );
    }
    assert_eq!(events[2]["status"], 200);
    let envelope: Value = serde_json::from_str(events[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        envelope,
        json!({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"}, "data": null}})
    );

    // The file is in storage under the recording's id, nothing else is left.
    assert_eq!(onair.stored_files(), [format!("{id}.webm")]);
    let stored = std::fs::read(onair.recordings_dir().join(format!("{id}.webm"))).unwrap();
    assert_eq!(stored.len(), 100_000);
    assert_eq!(&stored[..4], [0x1A, 0x45, 0xDF, 0xA3]);
    assert!(
        stored[28..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );
}

#[tokio::test]
async fn an_audio_only_start_asks_for_status_2_and_stores_ogg() {
    let onair = setup().await;
    let (mut ada, _) = onair.moderator("podcast").await;
    let id = start(&mut ada, json!({"action": "start", "audio_only": true})).await;
    confirmed(&mut ada, &id).await;
    let requests = onair.fake.requests_until(|r| !r.is_empty()).await;
    let body: Value = serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["start"]["status"], 2);

    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    let available = ada.until("recording", "recording_available").await;
    assert_eq!(available["recording_id"], id);
    assert!(available["name"].as_str().unwrap().ends_with(".ogg"));
    assert_eq!(onair.stored_files(), [format!("{id}.ogg")]);
}

#[tokio::test]
async fn a_recording_server_error_fails_the_room_and_a_new_start_works() {
    let onair = setup().await;
    let (mut ada, _) = onair.moderator("flaky").await;

    // A 5xx is retried (three attempts), then the room fails.
    onair
        .fake
        .behave(json!({"start": "reject", "reject_status": 503}))
        .await;
    let first = start(&mut ada, json!({"action": "start"})).await;
    let failed = ada.expect("recording", "status").await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["recording_id"], first);
    assert!(
        failed["reason"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    let requests = onair.fake.requests_until(|r| r.len() >= 3).await;
    assert!(requests.iter().all(|r| r["status"] == 503));

    // A 4xx is not retried.
    onair
        .fake
        .behave(json!({"start": "reject", "reject_status": 400}))
        .await;
    let second = start(&mut ada, json!({"action": "start"})).await;
    assert_ne!(second, first);
    let failed = ada.expect("recording", "status").await;
    assert_eq!(
        (failed["status"].as_str(), failed["recording_id"].as_str()),
        (Some("failed"), Some(second.as_str()))
    );
    assert!(
        failed["reason"].as_str().unwrap().contains("400"),
        "{failed}"
    );
    assert_eq!(onair.fake.requests_until(|r| r.len() >= 4).await.len(), 4);

    // After `failed` a new start behaves as from inactive.
    onair.fake.behave(json!({"start": "ok"})).await;
    let third = start(&mut ada, json!({"action": "start"})).await;
    confirmed(&mut ada, &third).await;
}

#[tokio::test]
async fn a_failed_report_fails_the_room() {
    let onair = setup().await;
    let (mut ada, _) = onair.moderator("crashy").await;

    // The recording server cannot start (its browser or ffmpeg fails).
    onair.fake.behave(json!({"start": "fail"})).await;
    let first = start(&mut ada, json!({"action": "start"})).await;
    let failed = ada.expect("recording", "status").await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["recording_id"], first);
    assert_eq!(failed["reason"], "the recording server reported a failure");
    let events = onair.fake.events_until(|e| !e.is_empty()).await;
    assert_eq!(
        (events[0]["kind"].as_str(), events[0]["status"].as_u64()),
        (Some("failed"), Some(200))
    );

    // A new start works; then the recorder dies mid-recording.
    onair.fake.behave(json!({"start": "ok"})).await;
    let second = start(&mut ada, json!({"action": "start"})).await;
    confirmed(&mut ada, &second).await;
    let (status, _) = onair
        .signed(&json!({"type": "failed", "failed": {"token": "crashy"}}))
        .await;
    assert_eq!(status, 200);
    // It had been announced with `started`: a seed-002 client gets `stopped`.
    let stopped = ada.expect("recording", "stopped").await;
    assert_eq!(stopped["recording_id"], second.as_str());
    let failed = ada.expect("recording", "status").await;
    assert_eq!(
        (failed["status"].as_str(), failed["recording_id"].as_str()),
        (Some("failed"), Some(second.as_str()))
    );
    assert!(onair.room_status("crashy").await["status"] == "failed");
}

#[tokio::test]
async fn forged_malformed_and_foreign_reports_change_nothing() {
    let onair = setup().await;
    let (mut ada, _) = onair.moderator("guarded").await;
    // The recording server takes the start but has not confirmed it yet.
    onair.fake.behave(json!({"start": "silent"})).await;
    let id = start(&mut ada, json!({"action": "start"})).await;

    let body = started("guarded").to_string();
    let random = onair::auth::random_string(64);
    let good = checksum(SECRET, &random, body.as_bytes());
    let json = Some("application/json");

    // Wrong secret, tampered body, missing headers, a short random: 403.
    let forged = [
        (
            Some(random.as_str()),
            Some(checksum("not-the-secret", &random, body.as_bytes())),
        ),
        (
            Some(random.as_str()),
            Some(checksum(SECRET, &random, b"{\"type\":\"stopped\"}")),
        ),
        (Some(random.as_str()), Some("zz-not-hex".to_owned())),
        (None, Some(good.clone())),
        (Some(random.as_str()), None),
    ];
    for (random, sum) in forged {
        let (status, content_type, text) =
            onair.report("", json, &body, random, sum.as_deref()).await;
        assert_eq!(status, 403, "{text}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let envelope: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(envelope["ocs"]["meta"]["status"], "failure");
        assert_eq!(envelope["ocs"]["meta"]["statuscode"], 403);
        assert_eq!(error_code(&envelope), "invalid_request");
    }
    let short = onair::auth::random_string(31);
    let (status, _, _) = onair
        .report(
            "",
            json,
            &body,
            Some(&short),
            Some(&checksum(SECRET, &short, body.as_bytes())),
        )
        .await;
    assert_eq!(status, 403);

    // XML unless JSON is asked for, by Accept or by ?format=json.
    let (status, content_type, text) = onair
        .report("", None, &body, Some(&random), Some("00"))
        .await;
    assert_eq!(status, 403);
    assert!(
        content_type.starts_with("application/xml"),
        "{content_type}"
    );
    assert!(text.starts_with("<?xml"), "{text}");
    assert!(
        text.contains("<status>failure</status>") && text.contains("<statuscode>403</statuscode>"),
        "{text}"
    );
    assert!(text.contains("<code>invalid_request</code>"), "{text}");
    let (_, content_type, _) = onair
        .report("?format=json", None, &body, Some(&random), Some("00"))
        .await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );

    // Authentic but unknown types and malformed bodies: 400.
    let (status, envelope) = onair
        .signed(&json!({"type": "paused", "paused": {"token": "guarded"}}))
        .await;
    assert_eq!(
        (status, error_code(&envelope).as_str()),
        (400, Some("unknown_type"))
    );
    for bad in [
        json!({"type": "started", "started": []}),
        json!({"type": "stopped"}),
        json!({"type": "failed", "failed": {"token": 42}}),
    ] {
        let (status, envelope) = onair.signed(&bad).await;
        assert_eq!(status, 400, "{bad} → {envelope}");
        assert_eq!(envelope["ocs"]["meta"]["statuscode"], 400);
    }
    let not_json = "started, surely";
    let r = onair::auth::random_string(40);
    let (status, _, _) = onair
        .report(
            "",
            json,
            not_json,
            Some(&r),
            Some(&checksum(SECRET, &r, not_json.as_bytes())),
        )
        .await;
    assert_eq!(status, 400);

    // Authentic reports about rooms onair does not have: 404.
    for foreign in [
        started("nobody-here"),
        json!({"type": "stopped", "stopped": {"token": "nobody-here"}}),
        json!({"type": "failed", "failed": {"token": "nobody-here"}}),
        started("not a room id"),
    ] {
        let (status, envelope) = onair.signed(&foreign).await;
        assert_eq!(status, 404, "{foreign}");
        assert_eq!(error_code(&envelope), "no_such_room");
    }

    // Nothing of that reached the room.
    ada.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        onair.room_status("guarded").await,
        json!({"status": "initializing", "recording_id": id})
    );

    // The real confirmation (hex in upper case is the same checksum).
    let (status, _, text) = onair
        .report("", json, &body, Some(&random), Some(&good.to_uppercase()))
        .await;
    assert_eq!(status, 200, "{text}");
    confirmed(&mut ada, &id).await;

    // Replayed as is, or sent again: acknowledged, nothing happens.
    let (status, _, _) = onair
        .report("", json, &body, Some(&random), Some(&good))
        .await;
    assert_eq!(status, 200);
    let (status, _) = onair.signed(&started("guarded")).await;
    assert_eq!(status, 200);
    ada.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(onair.room_status("guarded").await["status"], "recording");
}

#[tokio::test]
async fn a_started_report_nobody_asked_for_is_refused() {
    let onair = setup().await;
    let (mut ada, _) = onair.moderator("quiet").await;
    let (status, envelope) = onair.signed(&started("quiet")).await;
    assert_eq!(
        (status, error_code(&envelope).as_str()),
        (404, Some("no_such_room"))
    );
    // A `stopped` for a live room is acknowledged and changes nothing.
    let (status, _) = onair
        .signed(&json!({"type": "stopped", "stopped": {"token": "quiet"}}))
        .await;
    assert_eq!(status, 200);
    ada.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        onair.room_status("quiet").await,
        json!({"status": "inactive"})
    );
}

#[tokio::test]
async fn uploads_are_checked_as_talk_checks_them() {
    let onair = setup().await;
    let upload = |spec: Value| onair.fake.upload(spec);
    let base = json!({"token": "archive", "owner": "ada", "name": "Recording 2025-06-03 14-05-02.webm", "content": "webm"});
    let with = |changes: Value| {
        let mut spec = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };

    // Authentication: the checksum is over the token, with a long random.
    for spec in [
        with(json!({"checksum_data": "the body, not the token"})),
        with(json!({"checksum": "0".repeat(64)})),
        with(json!({"random": "short"})),
    ] {
        let (status, body) = upload(spec.clone()).await;
        assert_eq!(status, 401, "{spec}");
        assert_eq!(error_code(&body), "invalid_request");
        assert_eq!(body["ocs"]["meta"]["statuscode"], 401);
    }
    // A token that cannot be a room.
    let (status, body) = upload(with(json!({"token": "not%20a%20room"}))).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, Some("no_such_room"))
    );

    // Talk's 400s.
    for (changes, expected) in [
        (json!({"content": "text"}), "file_mimetype"),
        (json!({"content": "ogg"}), "file_extension"),
        (json!({"name": "notes.txt"}), "file_extension"),
        (json!({"name": "Recording"}), "file_extension"),
        (json!({"name": "/tmp/x/Recording.MKV"}), "file_extension"),
        (json!({"name": ".webm"}), "file_name"),
        (json!({"content": "empty"}), "empty_file"),
        (json!({"owner": null}), "owner_invalid"),
        (json!({"owner": ""}), "owner_invalid"),
        (json!({"omit_file": true}), "invalid_file"),
    ] {
        let (status, body) = upload(with(changes.clone())).await;
        assert_eq!(status, 400, "{changes} → {body}");
        assert_eq!(body["ocs"]["data"]["error"], expected, "{changes}");
    }
    // Nothing refused was kept, not even a temporary file.
    assert!(
        onair.stored_files().is_empty(),
        "{:?}",
        onair.stored_files()
    );

    // A valid file for a room that is not live (everyone left) is stored.
    let (status, body) = upload(base.clone()).await;
    assert_eq!(status, 200, "{body}");
    let files = onair.stored_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".webm"));
    assert_eq!(
        std::fs::metadata(onair.recordings_dir().join(&files[0]))
            .unwrap()
            .len(),
        1000
    );
    // No start of onair's is waiting for it (as after a restart): the
    // upload's owner owns it, so its notifications still go out.
    let list: Value = http()
        .get(onair.server.url("/v1/recordings?room=archive"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["recordings"][0]["owner"], "ada", "{list}");
}

#[tokio::test]
async fn an_upload_over_the_storage_limit_is_refused_and_not_kept() {
    // The fake's valid file is 1,000 bytes.
    let onair = setup_with(|config| config.storage.max_upload_bytes = 500).await;
    let spec = json!({"token": "archive", "owner": "ada", "name": "Recording 2025-06-03 14-05-02.webm", "content": "webm"});
    let (status, body) = onair.fake.upload(spec).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["ocs"]["data"]["error"], "size");
    assert!(
        onair.stored_files().is_empty(),
        "{:?}",
        onair.stored_files()
    );
}

#[tokio::test]
async fn the_file_arrives_after_everyone_left() {
    // No grace period: the room's emptying stops the recording at once.
    let onair = setup_with(|config| config.recording.empty_room_grace_s = 0).await;
    let (mut ada, _) = onair.moderator("weekly").await;
    let id = start(&mut ada, json!({"action": "start"})).await;
    confirmed(&mut ada, &id).await;

    // Only the owner onair named may own the file.
    let (status, body) = onair
        .fake
        .upload(json!({"token": "weekly", "owner": "mallory", "name": "Recording.webm"}))
        .await;
    assert_eq!(
        (status, body["ocs"]["data"]["error"].as_str()),
        (400, Some("owner_participant"))
    );

    // The last participant leaves: onair stops the recording; the recording
    // server reports `stopped` for a room that is gone and uploads the file.
    drop(ada);
    let events = onair
        .fake
        .events_until(|e| {
            e.iter()
                .any(|e| e["kind"] == "upload" && e["status"] == 200)
        })
        .await;
    let stopped = events.iter().find(|e| e["kind"] == "stopped").unwrap();
    assert_eq!(stopped["status"], 200, "{stopped}");
    let requests = onair.fake.requests_until(|r| r.len() >= 2).await;
    assert!(requests[1]["body"].as_str().unwrap().contains("\"stop\""));
    assert_eq!(onair.stored_files(), [format!("{id}.webm")]);

    // The room is gone and owes nothing now.
    let (status, _) = onair
        .signed(&json!({"type": "stopped", "stopped": {"token": "weekly"}}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_file_name_too_long_for_a_file_system_is_cut_not_refused() {
    let onair = setup().await;
    // 200 characters of 3 bytes each.
    let long = format!("{}.webm", "録".repeat(200));
    let spec = json!({"token": "archive", "owner": "ada", "name": long, "content": "webm"});
    let (status, body) = onair.fake.upload(spec).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = http()
        .get(onair.server.url("/v1/recordings?room=archive"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = list["recordings"][0]["name"].as_str().unwrap();
    assert!(name.len() <= 255, "{} bytes", name.len());
    assert!(name.ends_with(".webm") && long.starts_with(name.trim_end_matches(".webm")));
    assert_eq!(onair.stored_files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_replayed_to_another_node_is_acknowledged_and_ignored() {
    // Two nodes sharing one Redis; each has a recording server of its own,
    // but the reports below are written by the test and sent to either node.
    let redis = support::redis::Redis::start();
    let node = |id: &'static str| {
        let url = redis.url();
        move |config: &mut onair::Config| {
            config.cluster.redis_url = Some(url);
            config.cluster.node_id = id.into();
        }
    };
    let a = setup_with(node("node-a")).await;
    let b = setup_with(node("node-b")).await;
    a.server.readyz(200, RECV_TIMEOUT).await;
    b.server.readyz(200, RECV_TIMEOUT).await;
    let (mut ada, _) = a.moderator("shared").await;

    // The first recording: confirmed by a report to node A, then failed.
    a.fake.behave(json!({"start": "silent"})).await;
    let first = start(&mut ada, json!({"action": "start"})).await;
    let body = started("shared").to_string();
    let random = onair::auth::random_string(64);
    let sum = checksum(SECRET, &random, body.as_bytes());
    let json = Some("application/json");
    let (status, _, text) = a.report("", json, &body, Some(&random), Some(&sum)).await;
    assert_eq!(status, 200, "{text}");
    confirmed(&mut ada, &first).await;
    let (status, _) = a
        .signed(&json!({"type": "failed", "failed": {"token": "shared"}}))
        .await;
    assert_eq!(status, 200);
    ada.expect("recording", "stopped").await;
    assert_eq!(ada.expect("recording", "status").await["status"], "failed");

    // A second recording waits for its recording server. The first
    // `started` report, replayed to node B, must not confirm it.
    let second = start(&mut ada, json!({"action": "start"})).await;
    let (status, _, text) = b.report("", json, &body, Some(&random), Some(&sum)).await;
    assert_eq!(status, 200, "acknowledged: {text}");
    ada.expect_silence(Duration::from_millis(300)).await;
    for node in [&a, &b] {
        assert_eq!(
            node.room_status("shared").await,
            json!({"status": "initializing", "recording_id": second})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_made_on_one_node_is_owed_its_file_on_another() {
    // Behind a load balancer the recording server's reports and upload reach
    // whichever node: here node A makes the start, and the recording server
    // (node B's) reports to and uploads to node B.
    let redis = support::redis::Redis::start();
    let url = redis.url();
    let b = setup_with(|config| {
        config.cluster.redis_url = Some(url.clone());
        config.cluster.node_id = "node-b".into();
    })
    .await;
    let (recorder, backend) = (b.fake.url.clone(), b.url.clone());
    let a = setup_with(|config| {
        config.cluster.redis_url = Some(url.clone());
        config.cluster.node_id = "node-a".into();
        config.nextcloud.recording_server = Some(recorder);
        config.nextcloud.backend_url = Some(backend);
    })
    .await;
    a.server.readyz(200, RECV_TIMEOUT).await;
    b.server.readyz(200, RECV_TIMEOUT).await;
    let (mut ada, sub) = a.moderator("relay").await;
    let id = start(&mut ada, json!({"action": "start"})).await;
    confirmed(&mut ada, &id).await;
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    assert_eq!(
        ada.expect("recording", "status").await["status"],
        "stopping"
    );
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    assert_eq!(
        ada.expect("recording", "status").await["status"],
        "inactive"
    );
    // Node B took the upload of node A's start: the file is that recording's.
    let available = ada.expect("recording", "recording_available").await;
    assert_eq!(available["recording_id"], id, "{available}");
    let events = b.fake.events_until(|e| e.len() >= 3).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "stopped", "upload"]);
    assert!(events.iter().all(|e| e["status"] == 200), "{events:#?}");
    // And its owner is the one node A asked to record for.
    let shown = http()
        .get(format!("{}/v1/recordings/{id}", a.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown["owner"], sub, "{shown}");
}
