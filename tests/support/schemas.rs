//! Validation of wire frames against the JSON Schemas in `protocol/schemas/`.
//!
//! Include it from a test with `#[path = "support/schemas.rs"] mod schemas;`.
//! The schema files are read and compiled once per test binary. Each file is
//! registered under a fixed base URI, so the relative `$ref`s between them
//! (`common.json#/$defs/…`, `server.recording.status.json`) resolve from that
//! registry alone: nothing is fetched over the network or from disk. Formats
//! (`date-time`, `uri-reference`) are asserted, not just annotated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

/// The base URI the schema files are registered under. It is never fetched.
#[allow(dead_code)]
pub const BASE_URI: &str = "https://onair.invalid/protocol/schemas/";

/// Schema files that describe no single message: shared definitions and the
/// two umbrella schemas.
#[allow(dead_code)]
pub const NON_MESSAGE_SCHEMAS: [&str; 3] = ["common.json", "client.json", "server.json"];

/// Where the schema files live.
#[allow(dead_code)]
pub fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol/schemas")
}

/// Where the example files live.
#[allow(dead_code)]
pub fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol/examples")
}

/// Checks a frame the server sends against the umbrella `server.json`.
#[allow(dead_code)]
pub fn validate_server_frame(frame: &Value) -> Result<(), String> {
    validate_umbrella("server", "message", frame)
}

/// Checks a frame a client sends against the umbrella `client.json`.
#[allow(dead_code)]
pub fn validate_client_frame(frame: &Value) -> Result<(), String> {
    validate_umbrella("client", "action", frame)
}

/// Parses a server text frame and checks it; returns the parsed value.
#[allow(dead_code)]
pub fn validate_server_text(text: &str) -> Result<Value, String> {
    let frame: Value =
        serde_json::from_str(text).map_err(|e| format!("server frame is not JSON: {e}: {text}"))?;
    validate_server_frame(&frame)?;
    Ok(frame)
}

/// Checks a value against one schema file, by file name
/// (e.g. `server.recording.status.json`).
#[allow(dead_code)]
pub fn validate_with(schema_file: &str, instance: &Value) -> Result<(), String> {
    let validator = compiled()
        .get(schema_file)
        .ok_or_else(|| format!("no schema file {schema_file} in {}", schema_dir().display()))?;
    let errors = describe_errors(validator, instance);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "does not match {schema_file}:\n{errors}\nvalue: {instance}"
        ))
    }
}

/// The file names of every schema (sorted), umbrella and shared ones included.
#[allow(dead_code)]
pub fn schema_files() -> Vec<&'static str> {
    compiled().keys().map(String::as_str).collect()
}

/// Reads every `*.json` file of a directory into (file name, JSON), sorted by name.
#[allow(dead_code)]
pub fn read_json_dir(dir: &std::path::Path) -> Result<BTreeMap<String, Value>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: file name is not UTF-8", path.display()))?
            .to_owned();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        files.insert(name, value);
    }
    Ok(files)
}

/// Every schema file, compiled once.
fn compiled() -> &'static BTreeMap<String, Validator> {
    static COMPILED: OnceLock<BTreeMap<String, Validator>> = OnceLock::new();
    COMPILED.get_or_init(|| compile_all().unwrap_or_else(|e| panic!("protocol schemas: {e}")))
}

fn compile_all() -> Result<BTreeMap<String, Validator>, String> {
    let documents = read_json_dir(&schema_dir())?;
    if documents.is_empty() {
        return Err(format!("no schema files in {}", schema_dir().display()));
    }
    let registry = Registry::new()
        .extend(
            documents
                .iter()
                .map(|(name, schema)| (format!("{BASE_URI}{name}"), schema)),
        )
        .and_then(|builder| builder.prepare())
        .map_err(|e| format!("registering the schemas: {e}"))?;
    documents
        .iter()
        .map(|(name, schema)| {
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .offline()
                .with_registry(&registry)
                .with_base_uri(format!("{BASE_URI}{name}"))
                .should_validate_formats(true)
                .build(schema)
                .map(|validator| (name.clone(), validator))
                .map_err(|e| format!("{name}: {e}"))
        })
        .collect()
}

/// Validates against `client.json` or `server.json`. On failure, the errors
/// come from the schema of the message the frame claims to be (its namespace
/// and `action`/`message`), which names the offending field; the umbrella's
/// own errors only say "not valid under any of the schemas".
fn validate_umbrella(side: &str, tag: &str, frame: &Value) -> Result<(), String> {
    let validators = compiled();
    let umbrella_file = format!("{side}.json");
    let umbrella = validators
        .get(&umbrella_file)
        .ok_or_else(|| format!("no schema file {umbrella_file}"))?;
    if umbrella.is_valid(frame) {
        return Ok(());
    }
    let namespace = frame.get("namespace").and_then(Value::as_str);
    let name = frame
        .get("payload")
        .and_then(|p| p.get(tag))
        .and_then(Value::as_str);
    let claimed = match (namespace, name) {
        (Some(namespace), Some(name)) => Some(format!("{side}.{namespace}.{name}.json")),
        _ => None,
    };
    let report = match claimed
        .as_deref()
        .and_then(|file| validators.get(file).map(|v| (file, v)))
    {
        Some((file, validator)) => {
            let errors = describe_errors(validator, frame);
            if errors.is_empty() {
                format!(
                    "{side} frame matches {file} but not exactly one message of {umbrella_file}:\n{}",
                    describe_errors(umbrella, frame)
                )
            } else {
                format!("{side} frame does not match {file}:\n{errors}")
            }
        }
        None => match claimed {
            Some(file) => format!("{side} frame is no known {side} message: there is no {file}"),
            None => format!(
                "{side} frame has no string `namespace` and `payload.{tag}`:\n{}",
                describe_errors(umbrella, frame)
            ),
        },
    };
    Err(format!("{report}\nframe: {frame}"))
}

/// One line per error: where in the instance, and what is wrong.
fn describe_errors(validator: &Validator, instance: &Value) -> String {
    validator
        .iter_errors(instance)
        .map(|error| {
            let path = error.instance_path().as_str();
            let at = if path.is_empty() { "(root)" } else { path };
            format!("  at {at}: {error}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a catalogued recording, as the REST API shows it, against
/// `protocol/rest/recording.json`.
#[allow(dead_code)]
pub fn validate_rest_recording(recording: &Value) -> Result<(), String> {
    let path = schema_dir().join("../rest/recording.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator
        .iter_errors(recording)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(format!("{}\nvalue: {recording}", errors.join("\n"))),
    }
}
