//! The `onair` binary itself: tokens, configuration errors, SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onair::auth::Verifier;
use onair::protocol::Role;
use support::harness::{Client, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_onair");

fn onair() -> Command {
    let mut command = Command::new(BIN);
    // The developer's own environment must not leak into these tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("ONAIR_") {
            command.env_remove(key);
        }
    }
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
    let mut child = onair()
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("ONAIR_AUTH__JWT_SECRET", SECRET)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "onair exited early"
        );
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON logs");
        if log["fields"]["message"] == "onair listening" {
            break log["fields"]["local"].as_str().unwrap().parse().unwrap();
        }
    };
    let server = support::harness::Server::remote(addr);
    let token = server.token("r", "Ada", Role::User);
    let mut client = Client::connect_query(&server, &token).await;
    client.join(None).await;

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The logs never carry the token.
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains(&token));
    assert!(rest.contains("onair stopped"), "{rest}");
}
