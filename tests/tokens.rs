//! Token keys against the real server: RS256, ES256 and EdDSA from PEM files
//! and from a JWKS URL (a small identity provider in the test serves it),
//! `kid` rotation, refusals (`alg: none`, HS/RS confusion, unknown `kid`,
//! `iss`/`aud`, leeway), and a well-behaved client that keeps working.
//!
//! Keys are generated with the `openssl` CLI; tokens are signed with
//! `jsonwebtoken` from the private PEM, and JWKs are built from openssl's
//! output, not from the library under test.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use onair::Config;
use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{self, Client, RECV_TIMEOUT, Server};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A key pair made by openssl.
struct KeyPair {
    /// The algorithm it signs with.
    alg: Algorithm,
    /// The private key, PKCS#8 PEM.
    private_pem: Vec<u8>,
    /// The public key file, SPKI PEM.
    public_path: PathBuf,
    /// The public key as a JWK (no `kid`).
    jwk: Value,
}

impl KeyPair {
    fn generate(dir: &Path, name: &str, alg: Algorithm) -> Self {
        let private = dir.join(format!("{name}.key.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        let kind: &[&str] = match alg {
            Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::EdDSA => &["-algorithm", "ED25519"],
            other => panic!("no key generation for {other:?}"),
        };
        openssl(&[&["genpkey"], kind, &["-out", path_str(&private)]].concat());
        openssl(&[
            "pkey",
            "-in",
            path_str(&private),
            "-pubout",
            "-out",
            path_str(&public),
        ]);
        let der = openssl(&[
            "pkey",
            "-in",
            path_str(&private),
            "-pubout",
            "-outform",
            "DER",
        ]);
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let jwk = match alg {
            Algorithm::RS256 => {
                let out = openssl(&["rsa", "-in", path_str(&private), "-noout", "-modulus"]);
                let hex_n = String::from_utf8(out).unwrap();
                let n = hex::decode(hex_n.trim().trim_start_matches("Modulus=")).unwrap();
                json!({"kty": "RSA", "use": "sig", "alg": "RS256", "n": b64(&n), "e": "AQAB"})
            }
            Algorithm::ES256 => {
                // SPKI DER ends with the uncompressed point 04 || x || y.
                let point = &der[der.len() - 65..];
                assert_eq!(point[0], 4);
                json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            _ => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&der[der.len() - 32..])}),
        };
        Self {
            alg,
            private_pem: std::fs::read(&private).unwrap(),
            public_path: public,
            jwk,
        }
    }

    fn jwk_with_kid(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let key = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.private_pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.private_pem),
            _ => EncodingKey::from_ed_pem(&self.private_pem),
        }
        .unwrap();
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(room: &str, name: &str, role: &str) -> Value {
    json!({"sub": name.to_lowercase(), "room": room, "name": name, "role": role, "exp": now() + 600})
}

/// The server's answer to an upgrade with `Authorization: Bearer <token>`:
/// the open socket, or the refusal's status and JSON body.
async fn attempt(server: &Server, token: &str) -> Result<Client, (u16, Value)> {
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let connected = tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("an answer in time");
    match connected {
        Ok((ws, _)) => Ok(Client {
            ws,
            id: String::new(),
            protocol: None,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).expect("a JSON error body"))
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Connects and joins; panics on a refusal.
async fn joins(server: &Server, token: &str) -> Client {
    let mut client = attempt(server, token)
        .await
        .unwrap_or_else(|(status, body)| panic!("refused with {status}: {body}"));
    client.join(None).await;
    client
}

/// Asserts a 401 `invalid_token` whose message contains `why`.
async fn refused_because(server: &Server, token: &str, why: &str) {
    match attempt(server, token).await {
        Ok(_) => panic!("a token that should fail ({why}) was accepted"),
        Err((status, body)) => {
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["code"], "invalid_token", "{body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(why), "expected `{why}` in {body}");
            assert!(!message.contains(token), "the token is echoed: {body}");
        }
    }
}

/// Polls `check` until it is true; fails after a generous deadline (the
/// condition, not a duration, is what the test waits for).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A moderator starts a recording; everyone listed sees `started`.
async fn recording_still_works(moderator: &mut Client, others: &mut [&mut Client]) {
    moderator.recording(json!({"action": "start"})).await;
    let started = moderator.until("recording", "started").await;
    for other in others {
        assert_eq!(other.until("recording", "started").await, started);
    }
}

fn pem_config(keys: &KeyPair) -> Config {
    let mut config = harness::config();
    config.auth.public_key_path = Some(keys.public_path.clone());
    config.auth.algorithm = Some(keys.alg);
    config
}

#[tokio::test]
async fn pem_keys_verify_exactly_their_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = [
        KeyPair::generate(dir.path(), "rsa", Algorithm::RS256),
        KeyPair::generate(dir.path(), "ec", Algorithm::ES256),
        KeyPair::generate(dir.path(), "ed", Algorithm::EdDSA),
    ];
    for (i, keys) in pairs.iter().enumerate() {
        let server = Server::with(pem_config(keys)).await;
        // The HS256 secret keeps working beside the public key.
        let (mut moderator, _) = server.join("pem", "Mod", Role::Moderator).await;
        let mut user = joins(&server, &keys.sign(None, &claims("pem", "Ada", "user"))).await;
        assert_eq!(moderator.expect("control", "joined").await["id"], user.id);
        // A kid is not needed with a PEM key, and does not hurt.
        drop(
            joins(
                &server,
                &keys.sign(Some("any"), &claims("pem", "Bob", "guest")),
            )
            .await,
        );
        // The other key pairs' tokens are refused: their algorithm is not this key's.
        let other = &pairs[(i + 1) % pairs.len()];
        refused_because(
            &server,
            &other.sign(None, &claims("pem", "Eve", "moderator")),
            "algorithm not allowed",
        )
        .await;
        recording_still_works(&mut moderator, &mut [&mut user]).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn alg_none_and_hs_rs_confusion_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = KeyPair::generate(dir.path(), "rsa", Algorithm::RS256);
    let public_pem = std::fs::read(&rsa.public_path).unwrap();
    let mallory = claims("room", "Mallory", "moderator");
    // The classic confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &mallory,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&mallory)
    );
    let none_with_rsa_signature = {
        let real = rsa.sign(None, &mallory);
        let signature = real.rsplit('.').next().unwrap().to_owned();
        format!(
            "{}.{}.{signature}",
            b64(&json!({"alg": "none"})),
            b64(&mallory)
        )
    };

    // Secret and public key both configured: each verifies its own algorithm only.
    let server = Server::with(pem_config(&rsa)).await;
    let (mut moderator, _) = server.join("room", "Mod", Role::Moderator).await;
    refused_because(&server, &confused, "bad signature").await;
    refused_because(&server, &none, "algorithm not allowed").await;
    refused_because(&server, &none_with_rsa_signature, "algorithm not allowed").await;
    // An RS256 signature under a header that says HS256 finds only the secret.
    let relabelled = {
        let real = rsa.sign(None, &mallory);
        let mut parts = real.split('.');
        let (_, body, signature) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        format!(
            "{}.{body}.{signature}",
            b64(&json!({"alg": "HS256", "typ": "JWT"}))
        )
    };
    refused_because(&server, &relabelled, "bad signature").await;

    // Public key only: no HS256 at all, and not development mode.
    let mut config = pem_config(&rsa);
    config.auth.jwt_secret = None;
    let keys_only = Server::with(config).await;
    refused_because(&keys_only, &confused, "algorithm not allowed").await;
    refused_because(&keys_only, &none, "algorithm not allowed").await;
    let dev_token = harness::http()
        .post(keys_only.url("/v1/dev/token"))
        .json(&json!({"room": "room", "name": "Eve", "role": "moderator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dev_token.status(), 404, "no token minting without a secret");
    drop(joins(&keys_only, &rsa.sign(None, &claims("room", "Ada", "user"))).await);
    keys_only.stop().await;

    recording_still_works(&mut moderator, &mut []).await;
    server.stop().await;
}

#[test]
fn onair_token_cannot_mint_with_public_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = KeyPair::generate(dir.path(), "rsa", Algorithm::RS256);
    let output = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["token", "--room", "r", "--name", "Ada"])
        .env_remove("ONAIR_AUTH__JWT_SECRET")
        .env_remove("ONAIR_CONFIG")
        .env("ONAIR_AUTH__PUBLIC_KEY_PATH", &rsa.public_path)
        .env("ONAIR_AUTH__ALGORITHM", "RS256")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot mint"), "{stderr}");
    assert!(stderr.contains("identity provider"), "{stderr}");
}

#[tokio::test]
async fn issuer_audience_and_leeway() {
    let dir = tempfile::tempdir().unwrap();
    let ec = KeyPair::generate(dir.path(), "ec", Algorithm::ES256);
    let mut config = pem_config(&ec);
    config.auth.issuer = Some("https://idp.test".into());
    config.auth.audience = Some("onair".into());
    config.auth.leeway_s = 60;
    let server = Server::with(config).await;
    let token = |patch: Value| {
        let mut claims = claims("room", "Ada", "user");
        claims["iss"] = json!("https://idp.test");
        claims["aud"] = json!("onair");
        for (key, value) in patch.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(key),
                v => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(key.clone(), v.clone()),
            };
        }
        ec.sign(None, &claims)
    };
    let mut moderator = joins(&server, &{
        let mut c = claims("room", "Mod", "moderator");
        c["iss"] = json!("https://idp.test");
        c["aud"] = json!(["other-app", "onair"]);
        ec.sign(None, &c)
    })
    .await;

    drop(joins(&server, &token(json!({}))).await);
    refused_because(
        &server,
        &token(json!({"iss": "https://evil.test"})),
        "wrong issuer",
    )
    .await;
    refused_because(&server, &token(json!({"iss": null})), "iss").await;
    refused_because(
        &server,
        &token(json!({"aud": "another-app"})),
        "wrong audience",
    )
    .await;
    refused_because(&server, &token(json!({"aud": null})), "aud").await;
    // Clock skew within the leeway is tolerated on exp and nbf; beyond it, not.
    drop(joins(&server, &token(json!({"exp": now() - 20}))).await);
    refused_because(&server, &token(json!({"exp": now() - 600})), "expired").await;
    drop(joins(&server, &token(json!({"nbf": now() + 20}))).await);
    refused_because(
        &server,
        &token(json!({"nbf": now() + 600})),
        "not valid yet",
    )
    .await;
    refused_because(&server, &token(json!({"exp": null})), "token rejected").await;

    recording_still_works(&mut moderator, &mut []).await;
    server.stop().await;
}

/// A stand-in identity provider: serves `GET /jwks`, counts fetches, and can fail.
#[derive(Clone, Default)]
struct Idp {
    /// The key set it serves.
    jwks: Arc<Mutex<Value>>,
    /// While set, answers 500.
    failing: Arc<AtomicBool>,
    /// Requests received.
    hits: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: Vec<Value>) -> (Self, SocketAddr) {
        let idp = Self::default();
        idp.publish(keys);
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(
                    |axum::extract::State(idp): axum::extract::State<Idp>| async move {
                        idp.hits.fetch_add(1, Ordering::SeqCst);
                        if idp.failing.load(Ordering::SeqCst) {
                            return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                        }
                        let jwks = idp.jwks.lock().unwrap().clone();
                        Ok(axum::Json(jwks))
                    },
                ),
            )
            .with_state(idp.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (idp, addr)
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwks_config(idp: SocketAddr, cache_s: u64, min_refetch_s: u64) -> Config {
    let mut config = harness::config();
    config.auth.jwks_url = Some(format!("http://{idp}/jwks"));
    config.auth.jwks_allow_http = true;
    config.auth.jwks_cache_s = cache_s;
    config.auth.jwks_min_refetch_s = min_refetch_s;
    config
}

#[tokio::test]
async fn jwks_rotation_by_kid_and_a_rate_limited_refetch() {
    let dir = tempfile::tempdir().unwrap();
    let a = KeyPair::generate(dir.path(), "a", Algorithm::RS256);
    let b = KeyPair::generate(dir.path(), "b", Algorithm::ES256);
    let (idp, addr) = Idp::start(vec![a.jwk_with_kid("key-a")]).await;
    // A long cache: only an unknown kid makes onair fetch again.
    // A long cache and a long refetch interval: only the first unknown kid fetches again.
    let server = Server::with(jwks_config(addr, 3600, 3600)).await;
    let provider = &idp;
    eventually("the cache is warmed at startup", move || async move {
        provider.hits() >= 1
    })
    .await;

    let mut moderator = joins(
        &server,
        &a.sign(Some("key-a"), &claims("room", "Mod", "moderator")),
    )
    .await;
    assert_eq!(idp.hits(), 1, "a known kid needs no fetch");

    // The provider rotates: B is published beside A. B's first token triggers the refetch.
    idp.publish(vec![a.jwk_with_kid("key-a"), b.jwk_with_kid("key-b")]);
    let mut bob = joins(
        &server,
        &b.sign(Some("key-b"), &claims("room", "Bob", "user")),
    )
    .await;
    assert_eq!(idp.hits(), 2);
    moderator.expect("control", "joined").await;
    // Each key verifies only its own algorithm, whatever the token header says.
    refused_because(
        &server,
        &a.sign(Some("key-b"), &claims("room", "Eve", "user")),
        "algorithm not allowed",
    )
    .await;
    // A token signed by A but naming B's kid with B's algorithm: B's key, bad signature.
    let forged_b = {
        let real = b.sign(Some("key-b"), &claims("room", "Eve", "moderator"));
        let other = b.sign(Some("key-b"), &claims("room", "Ada", "user"));
        let head_body: Vec<&str> = real.split('.').take(2).collect();
        format!(
            "{}.{}.{}",
            head_body[0],
            head_body[1],
            other.rsplit('.').next().unwrap()
        )
    };
    refused_because(&server, &forged_b, "bad signature").await;

    // A flood of made-up kids: all refused, and no fetch before
    // jwks_min_refetch_s has passed since the one for key-b.
    for i in 0..25 {
        let kid = format!("random-{i}");
        refused_because(
            &server,
            &a.sign(Some(&kid), &claims("room", "Eve", "user")),
            "unknown key id",
        )
        .await;
    }
    assert_eq!(
        idp.hits(),
        2,
        "unknown kids within the interval fetch nothing"
    );

    recording_still_works(&mut moderator, &mut [&mut bob]).await;
    server.stop().await;
}

#[tokio::test]
async fn jwks_expired_cache_drops_removed_keys_and_a_failed_fetch_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = KeyPair::generate(dir.path(), "a", Algorithm::EdDSA);
    let b = KeyPair::generate(dir.path(), "b", Algorithm::RS256);
    let (idp, addr) = Idp::start(vec![a.jwk_with_kid("key-a"), b.jwk_with_kid("key-b")]).await;
    // A short cache: the background refresh runs every second.
    let server = Server::with(jwks_config(addr, 1, 0)).await;
    let mut moderator = joins(
        &server,
        &b.sign(Some("key-b"), &claims("room", "Mod", "moderator")),
    )
    .await;
    drop(
        joins(
            &server,
            &a.sign(Some("key-a"), &claims("room", "Ada", "user")),
        )
        .await,
    );

    // A is removed at the provider; once the cache expires it is refused.
    idp.publish(vec![b.jwk_with_kid("key-b")]);
    let token_a = a.sign(Some("key-a"), &claims("room", "Ada", "user"));
    let (onair, token_a) = (&server, &token_a);
    eventually(
        "key-a is refused after the cache expires",
        move || async move {
            match attempt(onair, token_a).await {
                Ok(_) => false,
                Err((status, body)) => {
                    assert_eq!(status, 401, "{body}");
                    assert!(
                        body["message"].as_str().unwrap().contains("unknown key id"),
                        "{body}"
                    );
                    true
                }
            }
        },
    )
    .await;

    // The provider fails: fetches (background and unknown-kid) fail, and B keeps working.
    idp.failing.store(true, Ordering::SeqCst);
    let before = idp.hits();
    let provider = &idp;
    eventually("two refreshes fail", move || async move {
        provider.hits() >= before + 2
    })
    .await;
    refused_because(
        &server,
        &a.sign(Some("key-c"), &claims("room", "Eve", "user")),
        "unknown key id",
    )
    .await;
    let mut carol = joins(
        &server,
        &b.sign(Some("key-b"), &claims("room", "Carol", "user")),
    )
    .await;

    recording_still_works(&mut moderator, &mut [&mut carol]).await;
    server.stop().await;
}
