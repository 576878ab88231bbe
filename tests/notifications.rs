//! Recording notifications, Temasys style (seed 001): the settings API over
//! the real server, and the sending path against real services on loopback
//! — an HTTP receiver, an SMTP sink (`aiosmtpd`) and an S3 API (`moto`).
//! The sending tests catalogue a recording as onair does (`Catalog` over a
//! real SQLite file) and let the real outbox worker deliver the POST; that
//! the POST survives `kill -9` of the real binary is in `tests/crash_safety.rs`.

mod support;

#[path = "notifications/services.rs"]
mod services;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onair::catalog::{Catalog, Location, Recording};
use onair::notifications::{self, Notifications, Settings};
use onair::outbox::Outbox;
use onair::protocol::Role;
use onair::store::Store;
use serde_json::{Value, json};
use services::{Receiver, S3, SmtpSink, client, file};
use support::harness::{ADMIN_KEY, Server, config, http};
use tokio_util::sync::CancellationToken;

const PATH: &str = "/rest/recording/notifications";
const SECRET_KEY: &str = "iewmdfuasfwnwksd-0123456789";

/// A token whose `sub` is `sub`.
fn token(server: &Server, sub: &str, role: Role) -> String {
    let mut claims = server.claims("room", sub, role);
    claims.sub = sub.into();
    server.mint(&claims)
}

/// Sends a request and returns the HTTP status and the JSON body.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http().request(method, server.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(SECRET_KEY),
        "the secret was echoed in full: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn seed_example() -> Value {
    json!({
        "notify": true,
        "url": "https://site.com/events",
        "email": "a@b.com,b@c.com",
        "s3Arn": "arn:aws:s3:region::bucketname/objectpath",
        "s3AccessKeyId": "akewjdwifuendjf",
        "s3SecretAccessKey": SECRET_KEY
    })
}

#[tokio::test]
async fn settings_are_created_read_and_updated_with_the_secret_masked() {
    let server = Server::start().await;
    let ada = token(&server, "ada", Role::Moderator);
    use reqwest::Method;

    let (status, body) = call(
        &server,
        Method::POST,
        PATH,
        Some(&ada),
        Some(seed_example()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let expected = json!({
        "status": 1,
        "content": {"data": {
            "username": "ada",
            "notify": true,
            "url": "https://site.com/events",
            "email": ["a@b.com", "b@c.com"],
            "s3Settings": {
                "s3Arn": "arn:aws:s3:region::bucketname/objectpath",
                "s3AccessKeyId": "akewjdwifuendjf",
                "s3SecretAccessKey": "********6789"
            }
        }}
    });
    assert_eq!(body, expected);
    let (status, body) = call(&server, Method::GET, PATH, Some(&ada), None).await;
    assert_eq!((status, &body), (200, &expected));

    // POST creates only.
    let (status, body) = call(
        &server,
        Method::POST,
        PATH,
        Some(&ada),
        Some(seed_example()),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["status"], 0);
    assert_eq!(body["content"]["code"], "settings_exist");

    // PUT changes what it names; `""` clears the url, which GET then leaves out.
    let (status, body) = call(
        &server,
        Method::PUT,
        PATH,
        Some(&ada),
        Some(json!({"url": "", "email": "c@d.org; e@f.net", "notify": 0})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["content"]["data"];
    assert_eq!(data["notify"], false);
    assert!(data.get("url").is_none(), "{body}");
    assert_eq!(data["email"], json!(["c@d.org", "e@f.net"]));
    assert_eq!(data["s3Settings"]["s3SecretAccessKey"], "********6789");
    let (_, again) = call(&server, Method::GET, PATH, Some(&ada), None).await;
    assert_eq!(again, body);

    // All three S3 fields blank remove the S3 settings.
    let (_, body) = call(
        &server,
        Method::PUT,
        PATH,
        Some(&ada),
        Some(json!({"s3Arn": "", "s3AccessKeyId": "", "s3SecretAccessKey": ""})),
    )
    .await;
    assert!(
        body["content"]["data"].get("s3Settings").is_none(),
        "{body}"
    );

    // Settings are per owner: someone else has none.
    let bob = token(&server, "bob", Role::Moderator);
    let (status, body) = call(&server, Method::GET, PATH, Some(&bob), None).await;
    assert_eq!((status, &body["status"]), (404, &json!(0)));
    server.stop().await;
}

#[tokio::test]
async fn put_works_only_on_existing_settings() {
    let server = Server::start().await;
    let ada = token(&server, "ada", Role::Moderator);
    use reqwest::Method;
    let (status, body) = call(
        &server,
        Method::PUT,
        PATH,
        Some(&ada),
        Some(json!({"notify": true})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 0);
    assert_eq!(body["content"]["code"], "no_settings");
    let (status, body) = call(&server, Method::GET, PATH, Some(&ada), None).await;
    assert_eq!(
        (status, &body["content"]["code"]),
        (404, &json!("no_settings"))
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_settings_fail_with_status_0_and_store_nothing() {
    let server = Server::start().await;
    let ada = token(&server, "ada", Role::Moderator);
    let arn = "arn:aws:s3:eu-west-1::recordings/ada";
    let cases = [
        (json!({"url": "https://a.example"}), "invalid_notify"),
        (json!({"notify": "maybe"}), "invalid_notify"),
        (
            json!({"notify": true, "url": "ftp://a.example"}),
            "invalid_url",
        ),
        (
            json!({"notify": true, "email": "a@b.com, nobody"}),
            "invalid_email",
        ),
        (
            json!({"notify": true, "s3Arn": arn, "s3AccessKeyId": "AKIA"}),
            "incomplete_s3_settings",
        ),
        (
            json!({"notify": true, "s3AccessKeyId": "AKIA", "s3SecretAccessKey": "x"}),
            "incomplete_s3_settings",
        ),
        (
            json!({"notify": true, "s3Arn": "arn:aws:sqs:::q", "s3AccessKeyId": "AKIA", "s3SecretAccessKey": "x"}),
            "invalid_s3_arn",
        ),
        (
            json!({"notify": true, "emails": "a@b.com"}),
            "unknown_field",
        ),
        (json!([true]), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, answer) = call(
            &server,
            reqwest::Method::POST,
            PATH,
            Some(&ada),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["status"], 0, "{answer}");
        assert_eq!(answer["content"]["code"], code, "{body} → {answer}");
        assert!(answer["content"]["message"].as_str().unwrap().len() > 5);
    }
    let response = http()
        .post(server.url(PATH))
        .bearer_auth(&ada)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (&answer["status"], &answer["content"]["code"]),
        (&json!(0), &json!("invalid_body"))
    );
    let (status, _) = call(&server, reqwest::Method::GET, PATH, Some(&ada), None).await;
    assert_eq!(status, 404, "nothing was stored");
    server.stop().await;
}

#[tokio::test]
async fn callers_without_the_right_credential_get_status_minus_1() {
    let server = Server::start().await;
    use reqwest::Method;
    let body = Some(json!({"notify": true}));
    let (status, answer) = call(&server, Method::GET, PATH, None, None).await;
    assert_eq!((status, &answer["status"]), (401, &json!(-1)));
    let (status, answer) = call(&server, Method::POST, PATH, None, body.clone()).await;
    assert_eq!((status, &answer["status"]), (401, &json!(-1)));
    let (status, answer) = call(
        &server,
        Method::POST,
        PATH,
        Some("not-a-token"),
        body.clone(),
    )
    .await;
    assert_eq!((status, &answer["status"]), (401, &json!(-1)));
    // Unauthorized wins over a malformed body.
    let (status, answer) = call(&server, Method::POST, PATH, None, Some(json!([1]))).await;
    assert_eq!((status, &answer["status"]), (401, &json!(-1)));

    // A participant who may not record reads but does not write.
    let guest = token(&server, "gus", Role::Guest);
    let (status, answer) = call(&server, Method::POST, PATH, Some(&guest), body.clone()).await;
    assert_eq!((status, &answer["status"]), (403, &json!(-1)));
    let (status, answer) = call(&server, Method::GET, PATH, Some(&guest), None).await;
    assert_eq!((status, &answer["status"]), (404, &json!(0)));

    // A participant touches only their own settings.
    let ada = token(&server, "ada", Role::Moderator);
    let (status, answer) = call(
        &server,
        Method::POST,
        &format!("{PATH}?username=bob"),
        Some(&ada),
        body.clone(),
    )
    .await;
    assert_eq!((status, &answer["status"]), (403, &json!(-1)));
    let (status, answer) = call(
        &server,
        Method::POST,
        PATH,
        Some(&ada),
        Some(json!({"notify": true, "username": "bob"})),
    )
    .await;
    assert_eq!((status, &answer["status"]), (403, &json!(-1)));
    server.stop().await;
}

#[tokio::test]
async fn the_admin_key_names_the_owner() {
    let server = Server::start().await;
    use reqwest::Method;
    let (status, answer) = call(
        &server,
        Method::POST,
        PATH,
        Some(ADMIN_KEY),
        Some(json!({"notify": true})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["status"], 0);
    assert_eq!(answer["content"]["code"], "username_required");

    let (status, answer) = call(
        &server,
        Method::POST,
        &format!("{PATH}?username=ada"),
        Some(ADMIN_KEY),
        Some(json!({"notify": true, "email": "ada@example.org"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"]["data"]["username"], "ada");

    // Ada's own token sees what the admin set.
    let ada = token(&server, "ada", Role::User);
    let (status, mine) = call(&server, Method::GET, PATH, Some(&ada), None).await;
    assert_eq!((status, &mine), (200, &answer));

    // `username` may come in the body instead; it must not contradict the query.
    let (status, answer) = call(
        &server,
        Method::PUT,
        PATH,
        Some(ADMIN_KEY),
        Some(json!({"username": "ada", "notify": false})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"]["data"]["notify"], false);
    let (status, answer) = call(
        &server,
        Method::PUT,
        &format!("{PATH}?username=ada"),
        Some(ADMIN_KEY),
        Some(json!({"username": "bob", "notify": false})),
    )
    .await;
    assert_eq!(
        (status, &answer["content"]["code"]),
        (400, &json!("username_mismatch"))
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Sending, against real services
// ---------------------------------------------------------------------------

/// What a sending test needs: the services, and onair's catalog, outbox
/// (with its delivery worker running) and notifications over one store.
struct Rig {
    store: Arc<Store>,
    catalog: Catalog,
    /// Signs the links it hands out, to check them.
    links: onair::catalog::Links,
    notifications: Arc<Notifications>,
    shutdown: CancellationToken,
    delivering: tokio::task::JoinHandle<()>,
    receiver: Receiver,
    smtp: SmtpSink,
    s3: Option<S3>,
    files: tempfile::TempDir,
}

impl Rig {
    /// A rig whose receiver (on loopback) owners' URLs may name.
    async fn start(statuses: &[u16], with_s3: bool) -> Self {
        Self::start_with(statuses, with_s3, true).await
    }

    async fn start_with(statuses: &[u16], with_s3: bool, allow_private: bool) -> Self {
        let s3 = async {
            match with_s3 {
                true => Some(S3::start().await),
                false => None,
            }
        };
        let (receiver, smtp, s3) = tokio::join!(Receiver::start(statuses), SmtpSink::start(), s3);
        let files = tempfile::tempdir().unwrap();
        let mut config = config();
        config.store.path = files.path().join("onair.db");
        config.smtp.host = Some("127.0.0.1".into());
        config.smtp.port = smtp.port;
        config.smtp.starttls = false;
        config.smtp.from = Some("onair <onair@example.org>".into());
        config.notifications.s3_endpoint = s3.as_ref().map(|s3| s3.endpoint.clone());
        config.notifications.retry_base_ms = 20;
        config.notifications.attempts = 4;
        config.notifications.timeout_s = 5;
        // The receiver is on loopback, which owners' URLs may not name by default.
        config.notifications.allow_private_addresses = allow_private;
        config.server.public_url = Some(PUBLIC_URL.into());
        let store = Arc::new(Store::open(&config.store.path).unwrap());
        let outbox = Arc::new(Outbox::new(&config.webhooks, store.clone(), None));
        let links = onair::catalog::Links::from_config(&config, [7; 32]);
        let notifications = Arc::new(Notifications::new(
            &config,
            store.clone(),
            store.clone().into(),
            links.clone(),
            None,
        ));
        let catalog = Catalog::new(
            store.clone(),
            outbox.clone(),
            notifications.clone(),
            links.clone(),
        );
        let shutdown = CancellationToken::new();
        let delivering = tokio::spawn(outbox.run(client(), shutdown.clone()));
        Self {
            store,
            catalog,
            links,
            notifications,
            shutdown,
            delivering,
            receiver,
            smtp,
            s3,
            files,
        }
    }

    fn s3(&self) -> &S3 {
        self.s3.as_ref().expect("started with S3")
    }

    /// Ada's settings, as the API saves them (the API itself is tested above).
    async fn settings(&self, body: Value) {
        let settings = Settings::from_request(&body, None).expect("valid settings");
        notifications::save(&self.store.clone().into(), "ada", &settings)
            .await
            .unwrap();
    }

    fn recording(&self, id: &str, location: Location, size: usize) -> Recording {
        Recording {
            id: id.into(),
            room: "standup".into(),
            name: "standup.mp4".into(),
            duration_s: 754.2,
            size_bytes: size as u64,
            location,
            provider: "manual".into(),
            created_at: "2024-05-01T10:30:00.000Z".into(),
            participants: Vec::new(),
            initiator: None,
        }
    }

    /// `recording`, started by `owner`, becomes available: onair catalogues it.
    async fn available(&self, recording: Recording, owner: &str) {
        self.store.set_owner(&recording.id, owner).unwrap();
        assert!(self.catalog.insert(recording).await.unwrap(), "catalogued");
    }

    fn file(&self, bytes: &[u8]) -> PathBuf {
        file(self.files.path(), "standup.mp4", bytes)
    }

    /// Waits for the work under way (uploads, e-mails, and the outbox's
    /// POSTs); fails the test if it does not end.
    async fn settle(&self) {
        assert!(
            self.notifications.drain(Duration::from_secs(60)).await,
            "the notifications finished"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.store.notification_counts().unwrap().pending > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the POSTs finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.delivering)
            .await
            .expect("the outbox stops in time")
            .unwrap();
    }
}

/// `[server] public_url` of the rig.
const PUBLIC_URL: &str = "https://onair.example.com";

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn an_available_recording_is_uploaded_posted_and_mailed() {
    let mut rig = Rig::start(&[], true).await;
    rig.s3().create_bucket("onair-uploads").await;
    rig.settings(json!({
        "notify": true,
        "url": rig.receiver.url,
        "email": "ada@example.org; bob@example.org",
        "s3Arn": "arn:aws:s3:us-east-1::onair-uploads/recordings/2024",
        "s3AccessKeyId": "AKIAONAIRTEST",
        "s3SecretAccessKey": SECRET_KEY
    }))
    .await;
    // Over one S3 part (8 MiB), so the upload really is multipart.
    let bytes = content(9 * 1024 * 1024 + 12_345);
    let path = rig.file(&bytes);
    let recording = rig.recording("rec-1", Location::File(path), bytes.len());

    rig.available(recording, "ada").await;

    // The POST carries the seed's metadata.
    let post = rig.receiver.next().await;
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    let metadata = &post.body;
    assert_eq!(metadata["meetingId"], "rec-1");
    assert_eq!(metadata["apiKey"], "ada");
    assert_eq!(metadata["roomId"], "standup");
    assert_eq!(metadata["unixTime"], 1_714_559_400);
    assert_eq!(metadata["startTime"], "2024-05-01T10:17:26Z");
    assert_eq!(metadata["endTime"], "2024-05-01T10:30:00Z");
    assert_eq!(metadata["participants"], Value::Null);
    let mut keys: Vec<&str> = metadata
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "apiKey",
            "endTime",
            "meetingId",
            "participants",
            "retrievalUrl",
            "roomId",
            "startTime",
            "unixTime"
        ]
    );

    // The object arrived whole, and `retrievalUrl` is its presigned URL.
    let key = "recordings/2024/rec-1/standup.mp4";
    assert_eq!(rig.s3().keys("onair-uploads").await, [key]);
    let stored = rig
        .s3()
        .object("onair-uploads", key)
        .await
        .expect("the object");
    assert!(stored == bytes, "the uploaded bytes differ");
    let url = metadata["retrievalUrl"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/onair-uploads/{key}?", rig.s3().endpoint)),
        "{url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let fetched = client().get(url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.bytes().await.unwrap() == bytes);

    // One e-mail per address, from [smtp] from, naming the recording and its link.
    let mut mails = rig.smtp.messages(2).await;
    mails.sort_by_key(|m| m.header("to").unwrap_or_default().to_owned());
    let recipients: Vec<&str> = mails
        .iter()
        .map(|m| m.header("x-rcptto").unwrap())
        .collect();
    assert_eq!(recipients, ["ada@example.org", "bob@example.org"]);
    for mail in &mails {
        assert_eq!(mail.header("subject"), Some("Recording available: standup"));
        assert!(mail.header("from").unwrap().contains("onair@example.org"));
        assert!(mail.body.contains("standup.mp4 (rec-1)"), "{}", mail.body);
        assert!(mail.body.contains("Duration:  0:12:34"), "{}", mail.body);
        assert!(mail.body.contains(url), "{}", mail.body);
    }

    rig.settle().await;
    assert!(rig.receiver.pending().is_empty(), "one POST only");
    assert_eq!(rig.smtp.so_far().len(), 2);
    let counts = rig.store.notification_counts().unwrap();
    assert_eq!((counts.delivered, counts.pending), (1, 0));
    rig.stop().await;
}

#[tokio::test]
async fn failed_posts_are_retried_and_client_errors_are_not() {
    // 503 and 429 are worth retrying; the third attempt gets 200.
    let mut rig = Rig::start(&[503, 429], false).await;
    rig.settings(json!({"notify": true, "url": rig.receiver.url}))
        .await;
    let external = "https://cdn.example.org/rec-2.mp4";
    let recording = rig.recording("rec-2", Location::External(external.into()), 10);
    rig.available(recording, "ada").await;
    let attempts = [
        rig.receiver.next().await,
        rig.receiver.next().await,
        rig.receiver.next().await,
    ];
    for attempt in &attempts {
        assert_eq!(attempt.body, attempts[0].body);
    }
    // A recording that lives outside onair is fetched where it lives.
    assert_eq!(attempts[0].body["retrievalUrl"], external);
    rig.settle().await;
    assert!(rig.receiver.pending().is_empty(), "no attempt after a 200");
    rig.stop().await;

    // A 400 is given up at once.
    let mut rig = Rig::start(&[400], false).await;
    rig.settings(json!({"notify": true, "url": rig.receiver.url}))
        .await;
    let recording = rig.recording("rec-3", Location::External(external.into()), 10);
    rig.available(recording, "ada").await;
    rig.receiver.next().await;
    rig.settle().await;
    assert!(rig.receiver.pending().is_empty(), "a 400 is not retried");
    assert_eq!(rig.store.notification_counts().unwrap().dead, 1);
    rig.stop().await;
}

#[tokio::test]
async fn by_default_an_owners_url_may_not_reach_a_private_address() {
    // The default configuration: owners' URLs must be public (no SSRF).
    let mut rig = Rig::start_with(&[], false, false).await;
    let port = rig.receiver.url.rsplit(':').next().unwrap().to_owned();
    let external = "https://cdn.example.org/rec.mp4";
    for (n, url) in [
        rig.receiver.url.clone(),
        // A name that resolves to loopback is refused the same way.
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}/events"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        rig.settings(json!({"notify": true, "url": url})).await;
        let id = format!("rec-private-{n}");
        rig.available(
            rig.recording(&id, Location::External(external.into()), 10),
            "ada",
        )
        .await;
        rig.settle().await;
        assert_eq!(
            rig.store.notification_counts().unwrap().dead,
            n as u64 + 1,
            "{url}: given up at once, not retried"
        );
    }
    assert!(
        rig.receiver.pending().is_empty(),
        "nothing reached the receiver"
    );
    rig.stop().await;
}

#[tokio::test]
async fn without_notify_the_file_is_still_uploaded_but_nobody_is_told() {
    let mut rig = Rig::start(&[], true).await;
    rig.s3().create_bucket("quiet").await;
    rig.settings(json!({
        "notify": false,
        "url": rig.receiver.url,
        "email": "ada@example.org",
        "s3Arn": "arn:aws:s3:::quiet",
        "s3AccessKeyId": "AKIAONAIRTEST",
        "s3SecretAccessKey": "s3cr3t"
    }))
    .await;
    let bytes = content(70_000);
    let recording = rig.recording("rec-4", Location::File(rig.file(&bytes)), bytes.len());
    rig.available(recording.clone(), "ada").await;
    rig.settle().await;
    let stored = rig.s3().object("quiet", "rec-4/standup.mp4").await;
    assert!(stored.as_ref() == Some(&bytes), "the object arrived");
    assert!(rig.receiver.pending().is_empty(), "no POST without notify");
    assert!(rig.smtp.so_far().is_empty(), "no e-mail without notify");

    // An owner without settings gets nothing at all.
    let recording = rig.recording("rec-5", Location::File(rig.file(&bytes)), bytes.len());
    rig.available(recording, "nobody").await;
    rig.settle().await;
    assert!(rig.receiver.pending().is_empty());
    assert_eq!(rig.store.notification_counts().unwrap(), Default::default());
    rig.stop().await;
}

#[tokio::test]
async fn a_file_onair_serves_is_linked_absolute_and_signed_in_the_post_and_the_mail() {
    let mut rig = Rig::start(&[], false).await;
    rig.settings(json!({"notify": true, "url": rig.receiver.url, "email": "ada@example.org"}))
        .await;
    let path = rig.file(&content(1000));
    let recording = rig.recording("rec-3", Location::File(path), 1000);
    rig.available(recording, "ada").await;
    let post = rig.receiver.next().await;
    let url = post.body["retrievalUrl"].as_str().unwrap().to_owned();
    let prefix = format!("{PUBLIC_URL}/v1/recordings/rec-3/media?expires=");
    assert!(url.starts_with(&prefix), "{url}");
    // Signed with onair's key: it opens with no token (the media route checks
    // exactly this; tests/recordings.rs fetches such a link).
    let (expires, signature) = url[prefix.len()..].split_once("&signature=").unwrap();
    assert!(
        rig.links
            .valid("rec-3", expires.parse().unwrap(), signature)
    );
    let mails = rig.smtp.messages(1).await;
    assert!(mails[0].body.contains(&url), "{}", mails[0].body);
    rig.stop().await;
}

#[tokio::test]
async fn the_post_names_the_real_start_and_the_most_people_present() {
    let (mut receiver, smtp) = tokio::join!(Receiver::start(&[]), SmtpSink::start());
    let mut config = config();
    config.notifications.allow_private_addresses = true;
    config.smtp.host = Some("127.0.0.1".into());
    config.smtp.port = smtp.port;
    config.smtp.starttls = false;
    config.smtp.from = Some("onair <onair@example.org>".into());
    let server = Server::with(config).await;
    // Ada turns her notifications on.
    let ada_token = token(&server, "ada", Role::Moderator);
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        PATH,
        Some(&ada_token),
        Some(json!({"notify": true, "url": receiver.url, "email": "ada@example.org"})),
    )
    .await;
    assert_eq!(status, 200);
    // Three people are in the room while Ada records; one leaves before the end.
    let mut ada = support::harness::Client::connect_query(&server, &ada_token).await;
    ada.join(None).await;
    let (_bob, _) = server.join("room", "Bob", Role::User).await;
    let (carol, _) = server.join("room", "Carol", Role::User).await;
    let before = std::time::SystemTime::now();
    ada.recording(json!({"action": "start"})).await;
    let id = ada.until("recording", "started").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let after = std::time::SystemTime::now();
    drop(carol);
    ada.until("control", "left").await;
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    ada.until("recording", "stopped").await;
    // Later, the recorder hands the file in (the old estimate, hand-in minus
    // duration, would be past the start by more than a second).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let bytes = content(5000);
    let form = reqwest::multipart::Form::new()
        .text("recording_id", id.clone())
        .text("duration_s", "0.5")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name("r.mp4")
                .mime_str("video/mp4")
                .unwrap(),
        );
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let post = receiver.next().await;
    assert_eq!(post.body["participants"], 3, "{}", post.body);
    // The start onair saw, not the hand-in time minus the duration.
    let start = humantime::parse_rfc3339(post.body["startTime"].as_str().unwrap()).unwrap();
    let second = Duration::from_secs(1);
    assert!(
        start + second >= before && start <= after,
        "{:?} not within the start ({before:?}..{after:?})",
        post.body["startTime"]
    );
    // The POST's link and the e-mail's open with no credentials at all.
    let link = post.body["retrievalUrl"].as_str().unwrap().to_owned();
    let mails = smtp.messages(1).await;
    assert!(mails[0].body.contains(&link), "{}", mails[0].body);
    let fetched = client().get(server.url(&link)).send().await.unwrap();
    assert_eq!(fetched.status(), 200, "{link}");
    assert!(fetched.bytes().await.unwrap() == bytes);
}
