//! The `onair` binary itself: tokens, configuration errors, SIGTERM.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use onair::auth::Verifier;
use onair::protocol::Role;
use support::binary::{self, Onair};
use support::harness::{Client, SECRET};

fn onair() -> Command {
    // The developer's own environment must not leak into these tests.
    let mut command = binary::without_host_env();
    // Keep the data of these runs out of the working directory.
    let data = std::env::temp_dir().join(format!("onair-cli-test-{}", std::process::id()));
    command
        .env("ONAIR_STORE__PATH", data.join("onair.db"))
        .env("ONAIR_STORAGE__PATH", data.join("recordings"));
    command
}

#[test]
fn token_prints_a_verifiable_token() {
    let output = onair()
        .args([
            "token",
            "--room",
            "standup",
            "--name",
            "Ada",
            "--role",
            "moderator",
            "--ttl",
            "2h",
        ])
        .env("ONAIR_AUTH__JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = Verifier::new(SECRET, &Default::default())
        .verify(token.trim())
        .unwrap();
    assert_eq!(claims.room, "standup");
    assert_eq!(claims.name.as_deref(), Some("Ada"));
    assert_eq!(claims.role, Role::Moderator);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 7100..=now + 7300).contains(&claims.exp));
}

#[test]
fn token_without_a_secret_explains_itself() {
    let output = onair()
        .args(["token", "--room", "r", "--name", "Ada"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("jwt_secret"), "{stderr}");
}

#[test]
fn a_bad_config_file_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("onair.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nsend_queu = 5\n").unwrap();
    let output = onair().arg("--config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("send_queu"), "{stderr}");

    std::fs::write(&path, "[auth]\njwt_secret = 42\nleeway_s = \"soon\"\n").unwrap();
    let output = onair().arg("--config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("leeway_s"), "{stderr}");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits() {
    let mut onair = Onair::spawn_keeping_logs(
        onair()
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("ONAIR_AUTH__JWT_SECRET", SECRET),
    );
    let server = &onair.server;
    let token = server.token("r", "Ada", Role::User);
    let mut client = Client::connect_query(server, &token).await;
    client.join(None).await;

    let started = Instant::now();
    onair.sigterm();
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    let (exit, rest) = tokio::task::spawn_blocking(move || (onair.wait(), onair.logs()))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The logs never carry the token.
    assert!(!rest.contains(&token));
    assert!(rest.contains("onair stopped"), "{rest}");
}

#[test]
fn jaas_token_mints_an_rs256_meeting_token_for_8x8() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("jaas.pem");
    let public = dir.path().join("jaas.pub.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let made = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");

    let app = "vpaas-magic-cookie-0123456789abcdef";
    let mint = |extra: &[&str]| {
        onair()
            .args([
                "jaas-token",
                "--room",
                "standup",
                "--name",
                "Ada",
                "--id",
                "ada",
            ])
            .args(extra)
            .env("ONAIR_JAAS__APP_ID", app)
            .env("ONAIR_JAAS__API_KEY_ID", "4f4910")
            .env("ONAIR_JAAS__PRIVATE_KEY_PATH", &private)
            .output()
            .unwrap()
    };
    let output = mint(&["--moderator", "--recording"]);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let token = token.trim();

    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(&*format!("{app}/4f4910")));
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&std::fs::read(&public).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["jitsi"]);
    validation.set_issuer(&["chat"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], app);
    assert_eq!(claims["room"], "standup");
    assert_eq!(claims["context"]["user"]["moderator"], "true");
    assert_eq!(claims["context"]["user"]["id"], "ada");
    assert_eq!(claims["context"]["features"]["recording"], "true");

    // Seed 000: recording is a moderator's feature.
    let output = mint(&["--recording"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("moderators only"));
    let output = mint(&[]);
    assert!(output.status.success());
    let plain = String::from_utf8(output.stdout).unwrap();
    let claims = jsonwebtoken::decode::<serde_json::Value>(plain.trim(), &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["context"]["user"]["moderator"], "false");
    assert_eq!(claims["context"]["features"]["recording"], "false");
}
