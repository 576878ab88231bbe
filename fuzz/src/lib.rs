//! What each fuzz target does with its input, shared by the libFuzzer
//! targets in `fuzz_targets/` and by the stable-Rust replay of the committed
//! corpus in `tests/fuzz_corpus.rs` (which includes this file as a module).
//!
//! Every function here hands outside input to the functions the server
//! itself calls — nothing is parsed a second time here — and checks what can
//! be checked about the answer. A panic is a finding.
//!
//! The webhook targets take a small line-based text framing, so that the
//! corpus is readable and seeds can be written by hand: the first line says
//! how to authenticate the request, the following lines carry headers, and
//! the rest is the body. `signed` inputs are signed inside the target with a
//! fixed test secret, so that half of what the fuzzer tries gets past the
//! signature check into the body parsers behind it; `raw` inputs carry the
//! header verbatim and exercise the signature checks themselves.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use figment::providers::Env;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use onair::Config;
use onair::auth::valid_room_id;
use onair::backends::jaas::{recording_id, room_of};
use onair::backends::nextcloud::{Nextcloud, checksum};
use onair::config::{LivekitConfig, NextcloudConfig};
use onair::protocol::{
    ControlError, ControlEvent, Namespace, Parsed, RecordingError, RecordingEvent, ServerFrame,
    parse_client_frame,
};
use onair::webhooks::{jaas, livekit, nextcloud};

/// The moment every webhook is verified at: signatures are made relative to
/// it, so the result never depends on the wall clock.
pub const NOW_S: i64 = 1_700_000_000;
/// The LiveKit API key (the token's `iss`) the targets configure.
pub const LIVEKIT_KEY: &str = "APIfuzzkey";
/// The LiveKit API secret the targets configure and sign with.
pub const LIVEKIT_SECRET: &str = "onair-fuzz-livekit-secret-0123456789";
/// The JaaS webhook secret the targets configure and sign with.
pub const JAAS_SECRET: &str = "whsec_0123456789abcdef0123456789abcdef";
/// The Nextcloud recording-server secret the targets configure and sign with.
pub const NEXTCLOUD_SECRET: &str = "onair-fuzz-nextcloud-secret";

/// How far one input got, for `tests/fuzz_corpus.rs` to check that the
/// corpus reaches every stage (the fuzz targets ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reached {
    /// Not in the target's framing, or refused by the signature check.
    Refused,
    /// Past the signature (if any), refused by the parser.
    Rejected,
    /// Parsed and accepted.
    Accepted,
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_S as u64)
}

/// Splits off the first line (without its `\n`); the rest follows it.
fn next_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The first line as text (lossy: headers reach the server as `&str` only).
fn next_text(data: &[u8]) -> (String, &[u8]) {
    let (line, rest) = next_line(data);
    (String::from_utf8_lossy(line).into_owned(), rest)
}

/// `mode key=value key=value …`: the mode and the options that follow it.
fn mode_line(line: &str) -> (&str, Vec<(&str, &str)>) {
    let mut words = line.split(' ');
    let mode = words.next().unwrap_or_default();
    let options = words
        .filter(|w| !w.is_empty())
        .map(|w| w.split_once('=').unwrap_or((w, "")))
        .collect();
    (mode, options)
}

/// A time claim or field: `none` leaves it out, `min`/`max` are the extreme
/// 64-bit values, `+N`/`-N` is relative to [`NOW_S`], an integer is taken as
/// is, anything else becomes a string (a wrongly typed claim).
fn time_value(text: &str) -> Option<Value> {
    match text {
        "none" => return None,
        "min" => return Some(Value::from(i64::MIN)),
        "max" => return Some(Value::from(i64::MAX)),
        _ => {}
    }
    if let Some(offset) = text.strip_prefix('+').and_then(|n| n.parse::<i64>().ok()) {
        return Some(Value::from(NOW_S.saturating_add(offset)));
    }
    if text.starts_with('-')
        && let Ok(offset) = text[1..].parse::<i64>()
    {
        return Some(Value::from(NOW_S.saturating_sub(offset)));
    }
    Some(match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(text),
    })
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The `client_frame` target: one WebSocket text frame, as the session reads it.
///
/// Checks: a command serializes back to a frame that parses to the same
/// command; an unknown namespace is echoed at most 64 characters long; an
/// error's detail is at most `MAX_DETAIL_CHARS` (and an ellipsis) long; the
/// error the session would send back is valid JSON.
pub fn client_frame(data: &[u8]) -> Reached {
    // A text frame is UTF-8 by the time the session sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return Reached::Refused;
    };
    let bounded = |detail: &str| {
        assert!(
            detail.chars().count() <= onair::protocol::MAX_DETAIL_CHARS + 1,
            "error details are bounded: {detail}"
        );
    };
    let reply = match parse_client_frame(text) {
        Parsed::Command(message) => {
            let again = serde_json::to_string(&message).expect("commands serialize");
            assert_eq!(
                parse_client_frame(&again),
                Parsed::Command(message.clone()),
                "a command must survive a round trip"
            );
            return Reached::Accepted;
        }
        Parsed::InvalidJson(detail) => {
            bounded(&detail);
            ServerFrame::control(ControlEvent::Error {
                error: ControlError::InvalidJson,
                detail: Some(detail),
            })
        }
        Parsed::InvalidNamespace(namespace) => {
            assert!(namespace.chars().count() <= 64, "namespace echo is bounded");
            ServerFrame::control(ControlEvent::Error {
                error: ControlError::InvalidNamespace,
                detail: Some(format!("unknown namespace `{namespace}`")),
            })
        }
        Parsed::InvalidPayload { namespace, detail } => {
            bounded(&detail);
            match namespace {
                Namespace::Control => ServerFrame::control(ControlEvent::Error {
                    error: ControlError::InvalidPayload,
                    detail: Some(detail),
                }),
                Namespace::Recording => ServerFrame::recording(RecordingEvent::Error {
                    error: RecordingError::InvalidPayload,
                    detail: Some(detail),
                }),
            }
        }
    };
    let json = reply.to_json();
    assert!(
        serde_json::from_str::<Value>(&json).is_ok(),
        "error replies are JSON: {json}"
    );
    Reached::Rejected
}

/// The `livekit_webhook` target: `POST /webhooks/livekit`.
///
/// Framing: line 1 is `raw` (line 2 is the `Authorization` header verbatim)
/// or `signed [alg=…] [iss=…|none] [exp=…] [nbf=…] [iat=…] [sha=ok|none|…]
/// [secret=…] [claims=<raw JSON, to the end of the line>]` (a token made here
/// with [`LIVEKIT_SECRET`]); the rest is the body. Bare `signed` must verify.
pub fn livekit_webhook(data: &[u8]) -> Reached {
    let (first, rest) = next_text(data);
    let (mode, options) = mode_line(&first);
    let (authorization, body) = match mode {
        "raw" => {
            let (header, body) = next_text(rest);
            (header, body)
        }
        "signed" => (livekit_token(&first, &options, rest), rest),
        _ => return Reached::Refused,
    };
    let config = LivekitConfig {
        api_key: Some(LIVEKIT_KEY.into()),
        api_secret: Some(LIVEKIT_SECRET.into()),
        ..LivekitConfig::default()
    };
    let verified = livekit::verify(&config, Some(&authorization), body, now());
    if first == "signed" {
        assert!(
            verified.is_ok(),
            "a correctly signed webhook verifies: {verified:?}"
        );
    }
    if verified.is_err() {
        return Reached::Refused;
    }
    // What the handler does next.
    match serde_json::from_slice::<livekit::WebhookEvent>(body) {
        Ok(_) => Reached::Accepted,
        Err(_) => Reached::Rejected,
    }
}

/// A LiveKit-style webhook token over `body`, as the options describe it.
fn livekit_token(line: &str, options: &[(&str, &str)], body: &[u8]) -> String {
    let mut alg = "HS256";
    let mut secret = LIVEKIT_SECRET;
    let mut claims = Map::new();
    claims.insert("iss".into(), LIVEKIT_KEY.into());
    claims.insert("exp".into(), Value::from(NOW_S + 300));
    claims.insert("nbf".into(), Value::from(NOW_S));
    claims.insert(
        "sha256".into(),
        STANDARD.encode(Sha256::digest(body)).into(),
    );
    claims.insert("video".into(), json!({}));
    let mut raw_claims = None;
    for &(key, value) in options {
        match key {
            "alg" => alg = value,
            "secret" => secret = value,
            "iss" | "sub" | "jti" => {
                if value == "none" {
                    claims.remove(key);
                } else {
                    claims.insert(key.into(), value.into());
                }
            }
            "exp" | "nbf" | "iat" => match time_value(value) {
                Some(v) => {
                    claims.insert(key.into(), v);
                }
                None => {
                    claims.remove(key);
                }
            },
            "sha" => match value {
                "ok" => {}
                "none" => {
                    claims.remove("sha256");
                }
                other => {
                    claims.insert("sha256".into(), other.into());
                }
            },
            "claims" => {
                // The raw payload runs to the end of the line, spaces and all.
                raw_claims = line.split_once("claims=").map(|(_, json)| json.to_owned());
                break;
            }
            _ => {}
        }
    }
    let header = json!({"alg": alg, "typ": "JWT"}).to_string();
    let payload = raw_claims.unwrap_or_else(|| Value::Object(claims).to_string());
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = hmac_sha256(secret.as_bytes(), &[signing_input.as_bytes()]);
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The `jaas_webhook` target: `POST /webhooks/jaas`.
///
/// Framing: line 1 is `raw` (line 2 is `X-Jaas-Signature` verbatim) or
/// `signed [t=…] [secret=…] [pre=…] [post=…] [sig=bad]` (the header is
/// `<pre>t=<t>,v1=<base64 HMAC with JAAS_SECRET><post>`, `t` relative to
/// [`NOW_S`] as `+N`/`-N`, or literal); the rest is the body. Bare `signed`
/// must verify.
///
/// Checks, past the signature: the room named by `fqn` is a valid room id
/// (it names storage directories) and the recording id is a UUID.
pub fn jaas_webhook(data: &[u8]) -> Reached {
    let (first, rest) = next_text(data);
    let (mode, options) = mode_line(&first);
    let (signature, body) = match mode {
        "raw" => next_text(rest),
        "signed" => {
            let mut t = NOW_S.to_string();
            let mut secret = JAAS_SECRET;
            let (mut pre, mut post, mut bad) = ("", "", false);
            for &(key, value) in &options {
                match key {
                    "t" => {
                        t = match time_value(value) {
                            Some(Value::Number(n)) => n.to_string(),
                            Some(Value::String(s)) => s,
                            _ => String::new(),
                        }
                    }
                    "secret" => secret = value,
                    "pre" => pre = value,
                    "post" => post = value,
                    "sig" => bad = value == "bad",
                    _ => {}
                }
            }
            let signed: &[u8] = if bad { b"another body" } else { rest };
            let mac = hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", signed]);
            let header = format!("{pre}t={t},v1={}{post}", STANDARD.encode(mac));
            (header, rest)
        }
        _ => return Reached::Refused,
    };
    let verified = jaas::verify(Some(JAAS_SECRET), Some(&signature), body, now());
    if first == "signed" {
        assert!(
            verified.is_ok(),
            "a correctly signed webhook verifies: {verified:?}"
        );
    }
    if verified.is_err() {
        return Reached::Refused;
    }
    // What the handler does next: the event, then its room, recording id and,
    // for an upload, its `data`.
    if serde_json::from_slice::<jaas::Event>(body).is_err() {
        return Reached::Rejected;
    }
    // The fields onair reads, for the checks below. serde skips unknown
    // fields without validating their UTF-8, so an accepted event may still
    // not be a `Value` (found by this target; harmless: nothing reads them).
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(body) else {
        return Reached::Accepted;
    };
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default();
    if let Some(room) = room_of(text("fqn")) {
        assert!(
            valid_room_id(room),
            "room_of gives valid room ids: {room:?}"
        );
    }
    let id = recording_id(text("sessionId"));
    assert!(
        id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
        "recording ids are UUIDs: {id}"
    );
    if text("eventType") == "RECORDING_UPLOADED" {
        let data = event.get("data").cloned().unwrap_or_default();
        if serde_json::from_value::<jaas::UploadedData>(data).is_err() {
            return Reached::Rejected;
        }
    }
    Reached::Accepted
}

/// The configured Nextcloud backend, made once (it holds an HTTP client).
fn nextcloud_backend() -> &'static Nextcloud {
    static BACKEND: OnceLock<Nextcloud> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let config = NextcloudConfig {
            recording_server: Some("http://127.0.0.1:9".into()),
            secret: Some(NEXTCLOUD_SECRET.into()),
            backend_url: Some("http://127.0.0.1:7800".into()),
        };
        Nextcloud::new(&config, Default::default())
    })
}

/// The `nextcloud_request` target: what the Talk recording server sends to
/// `…/recording/backend` (a state report) and `…/recording/{token}/store`
/// (an upload's checksum, file name, owner and first bytes).
///
/// Framing: line 1 is `report` or `store`, then `signed` or `raw`, then
/// options (`secret=…`); line 2 is `Talk-Recording-Random`, line 3
/// `Talk-Recording-Checksum` (replaced by the real checksum when signed; an
/// empty line is no header), line 4 the query string, line 5 the `Accept`
/// header; the rest is the body. For `store` the rest is the room token, the
/// file name, the owner, each on a line, then the file's first bytes.
///
/// Checks: a signed request with a long enough random verifies; a parsed
/// report names a valid room; a refusal's message cannot add XML elements to
/// the OCS answer; an accepted file name has no path in it.
pub fn nextcloud_request(data: &[u8]) -> Reached {
    let (first, rest) = next_text(data);
    let (mode, options) = mode_line(&first);
    let signed = options.iter().any(|(k, _)| *k == "signed");
    let secret = options
        .iter()
        .find(|(k, _)| *k == "secret")
        .map_or(NEXTCLOUD_SECRET, |(_, v)| *v);
    let (random, rest) = next_text(rest);
    let (presented, rest) = next_text(rest);
    let (query, rest) = next_text(rest);
    let (accept, rest) = next_text(rest);

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&accept)
        && !accept.is_empty()
    {
        headers.insert(header::ACCEPT, value);
    }
    let query = (!query.is_empty()).then_some(query.as_str());
    let _format = nextcloud::negotiate(query, &headers);

    let nc = nextcloud_backend();
    let random = (!random.is_empty()).then_some(random.as_str());
    let checked = |data: &[u8]| {
        let sum = if signed {
            Some(checksum(
                secret.as_bytes(),
                random.unwrap_or_default(),
                data,
            ))
        } else {
            (!presented.is_empty()).then(|| presented.clone())
        };
        let ok = nc.verify(random, sum.as_deref(), data);
        if signed && secret == NEXTCLOUD_SECRET && random.is_some_and(|r| r.len() >= 32) {
            assert!(ok, "a correctly signed request verifies");
        }
        ok
    };
    match mode {
        "report" => {
            if !checked(rest) {
                return Reached::Refused;
            }
            match nextcloud::parse_report(rest) {
                Ok(report) => {
                    assert!(valid_room_id(&report.token), "{report:?}");
                    Reached::Accepted
                }
                Err(e) => {
                    xml_stays_closed(&e.to_string());
                    Reached::Rejected
                }
            }
        }
        "store" => {
            let (token, rest) = next_text(rest);
            let (name, rest) = next_text(rest);
            let (owner, head) = next_text(rest);
            if !valid_room_id(&token) || !checked(token.as_bytes()) {
                return Reached::Refused;
            }
            let mut accepted = nextcloud::valid_owner(&owner);
            accepted &= nextcloud::sniff(head).is_some();
            match nextcloud::file_name(Some(&name)) {
                Ok(base) => {
                    assert!(
                        !base.contains(['/', '\\'])
                            && !base.starts_with('.')
                            && !base.is_empty()
                            && base.len() <= 255
                            && !base.chars().any(char::is_control),
                        "file names are bare: {base:?}"
                    );
                    accepted &= nextcloud::extension(&base).is_ok();
                }
                Err(_) => accepted = false,
            }
            if accepted {
                Reached::Accepted
            } else {
                Reached::Rejected
            }
        }
        _ => Reached::Refused,
    }
}

/// A refusal's message, echoed in an OCS XML answer, adds no element.
fn xml_stays_closed(message: &str) {
    let render = |message: &str| {
        let data = json!({"type": "error", "error": {"code": "unknown_type", "message": message}});
        nextcloud::ocs_xml("failure", 400, "", &data)
    };
    let tags = |xml: &str| xml.matches('<').count();
    let xml = render(message);
    assert_eq!(tags(&xml), tags(&render("")), "message escaped: {xml}");
}

/// Where the `config_file` target writes its input: the loader reads a path.
fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("onair-fuzz-config-{}.toml", std::process::id()))
    })
}

/// The `config_file` target: a `--config` file, through `Config::load_from`
/// (with an environment provider that matches no variable).
///
/// Checks: a configuration that loads passed validation (positive limits).
pub fn config_file(data: &[u8]) -> Reached {
    let path = config_path();
    if std::fs::write(path, data).is_err() {
        return Reached::Refused;
    }
    let loaded = Config::load_from(Some(path), Env::prefixed("ONAIR_FUZZ_UNSET_PREFIX_"));
    let _ = std::fs::remove_file(path);
    match loaded {
        Ok(config) => {
            assert!(config.server.max_frame_bytes > 0 && config.server.send_queue > 0);
            assert!(config.recording.start_timeout_s > 0);
            Reached::Accepted
        }
        Err(_) => Reached::Rejected,
    }
}
