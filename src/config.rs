//! Configuration: a TOML file, overlaid by `ONAIR_<SECTION>__<KEY>` environment
//! variables, overlaid by command-line flags.
//!
//! Every section rejects unknown keys, so a typo in the file is an error that
//! names the key instead of a setting silently ignored.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening, origins and per-connection limits.
    pub server: ServerConfig,
    /// Token verification and the server-to-server key.
    pub auth: AuthConfig,
    /// The recording backend and its timing.
    pub recording: RecordingConfig,
    /// The LiveKit / OpenVidu 3 backend.
    pub livekit: LivekitConfig,
    /// The Nextcloud Talk recording server backend.
    pub nextcloud: NextcloudConfig,
    /// The 8x8 JaaS bridge.
    pub jaas: JaasConfig,
    /// Where recording files are kept.
    pub storage: StorageConfig,
    /// The embedded database.
    pub store: StoreConfig,
    /// Outbound webhooks.
    pub webhooks: WebhooksConfig,
    /// The mail server for recording notification e-mails.
    pub smtp: SmtpConfig,
    /// Recording notifications (Temasys style): delivery and owners' S3 uploads.
    pub notifications: NotificationsConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Several onair processes acting as one over Redis (SPEC §7).
    pub cluster: ClusterConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`--listen`, `ONAIR_LISTEN`).
    pub listen: SocketAddr,
    /// The address people and services reach onair at, e.g.
    /// `https://onair.example.com`: the base of every link onair hands out
    /// (recordings' media). Without it links are paths.
    pub public_url: Option<String>,
    /// Browser origins (`https://app.example`) allowed to open the socket and
    /// to call the REST API cross-origin (CORS); a request with another
    /// `Origin` is refused with 403. Empty: the socket takes any origin and the
    /// REST API sends no CORS headers (same-origin only).
    pub allowed_origins: Vec<String>,
    /// Open WebSockets this server holds at most; more are refused with 503
    /// `too_many_connections`. 0 = no limit.
    pub max_connections: usize,
    /// Open WebSockets one client IP may hold; more are refused with 429
    /// `too_many_connections_from_ip`. 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Client IPs or CIDR blocks the per-IP limit does not apply to (loopback by
    /// default: load tests, and a local proxy that is not in `trusted_proxies`).
    pub per_ip_exempt: Vec<crate::ip_range::IpRange>,
    /// Proxies (IPs or CIDR blocks) whose `X-Forwarded-For` names the client IP.
    pub trusted_proxies: Vec<crate::ip_range::IpRange>,
    /// Sockets one room may hold on this server; more are refused with 409
    /// `room_full`. 0 = no limit.
    pub max_participants_per_room: usize,
    /// Deepest nesting of objects and arrays accepted in a client frame or a
    /// REST JSON body.
    pub max_json_depth: usize,
    /// Largest REST API request body, in bytes (413 `body_too_large`).
    pub max_body_bytes: usize,
    /// Largest inbound provider webhook body, in bytes (413).
    pub max_webhook_body_bytes: usize,
    /// Largest text frame a client may send, in bytes; bigger ones close the socket with 1009.
    pub max_frame_bytes: usize,
    /// The kernel send buffer of each accepted socket, in bytes (`SO_SNDBUF`,
    /// set on the listener and inherited; Linux doubles it). It bounds what a
    /// client that stops reading pins in kernel memory beyond `send_queue`
    /// (autotuning lets it grow to `net.ipv4.tcp_wmem`'s maximum, often
    /// 4 MiB). 0 keeps the kernel's autotuning.
    pub socket_send_buffer_bytes: usize,
    /// Frames queued for one client before it counts as not reading and is closed with 1008.
    pub send_queue: usize,
    /// Messages a client may send per second, on average.
    pub messages_per_second: u32,
    /// Messages a client may send in one burst above the average rate.
    pub message_burst: u32,
    /// Seconds a socket may stay open without sending `join`.
    pub join_timeout_s: u64,
    /// Seconds to wait for sockets to close on shutdown.
    pub shutdown_grace_s: u64,
    /// Seconds between keepalive pings to every joined socket; 0 = none.
    pub ping_interval_s: u64,
    /// Seconds a joined socket may send nothing (no frame, no pong) before it
    /// is closed and the others get `left`; checked at each ping, so a dead
    /// peer goes between this and this plus `ping_interval_s`.
    pub ping_timeout_s: u64,
    /// Seconds a client has to send a request's headers, counted from the
    /// connection's start or from the request's first byte on a kept-alive
    /// connection; slower ones are closed.
    pub header_timeout_s: u64,
    /// Seconds a request body may take to arrive: the whole body of a JSON or
    /// webhook request; for uploads (recording files), the longest pause
    /// between two pieces of it. Answered 408 `body_timeout`.
    pub body_timeout_s: u64,
    /// Seconds a kept-alive HTTP connection may wait for its next request
    /// before it is closed.
    pub idle_timeout_s: u64,
    /// HTTP connections (not yet WebSockets: reading a request, or kept
    /// alive between requests) this server holds at most; more are answered
    /// 503 and closed. They and `max_connections` together must fit in the
    /// process's open-file limit, or `max_connections` is lowered at start.
    pub max_http_connections: usize,
    /// HTTP connections one peer address may hold (`per_ip_exempt` and
    /// `trusted_proxies` excepted); more are answered 429 and closed. An
    /// upgrade moves its connection from this count to `max_connections_per_ip`.
    /// 0 = no limit.
    pub max_http_connections_per_ip: usize,
    // Churn and room isolation (issue 16).
    /// Joins (`GET /signaling` upgrades) one token `sub` may make per second,
    /// on average; more are refused with 429 `too_many_joins` before the
    /// upgrade. With `[cluster] redis_url` the count is shared by every node.
    /// 0 = no limit.
    pub joins_per_second_per_sub: u32,
    /// Joins one `sub` may make in a burst above `joins_per_second_per_sub`.
    pub join_burst_per_sub: u32,
    /// Fan-out budget of one room: frames per second this node delivers to
    /// the room's sockets. A room over it sends `update`s late, coalesced per
    /// participant (the latest consent wins), so that one busy room cannot
    /// starve the others; recording events, `joined` and `left` are never
    /// held back (they count against the budget). 0 = no budget.
    pub room_fanout_per_second: u32,
    /// Large rooms (webinars, town halls): in a room with more members than
    /// this, only moderators get `joined`/`left`/`update` of everyone; the
    /// others see the moderators plus a `participant_count` at most once a
    /// second. 0 = off. One node only for now: ignored with `[cluster]`.
    pub large_room_threshold: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            public_url: None,
            allowed_origins: Vec::new(),
            max_connections: 50_000,
            max_connections_per_ip: 1_000,
            per_ip_exempt: vec![
                "127.0.0.0/8".parse().expect("a CIDR block"),
                "::1".parse().expect("an address"),
            ],
            trusted_proxies: Vec::new(),
            max_participants_per_room: 10_000,
            max_json_depth: 32,
            max_body_bytes: 64 * 1024,
            max_webhook_body_bytes: 256 * 1024,
            max_frame_bytes: 64 * 1024,
            socket_send_buffer_bytes: 128 * 1024,
            send_queue: 1024,
            messages_per_second: 20,
            message_burst: 40,
            join_timeout_s: 10,
            shutdown_grace_s: 10,
            ping_interval_s: 20,
            ping_timeout_s: 45,
            header_timeout_s: 10,
            body_timeout_s: 10,
            idle_timeout_s: 60,
            max_http_connections: 2_048,
            max_http_connections_per_ip: 64,
            joins_per_second_per_sub: 2,
            join_burst_per_sub: 10,
            room_fanout_per_second: 10_000,
            large_room_threshold: 250,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for participant tokens; without it onair runs in development mode.
    #[serde(deserialize_with = "text")]
    pub jwt_secret: Option<String>,
    /// Key for the server-to-server REST API, sent as `Authorization: Bearer <key>`.
    #[serde(deserialize_with = "text")]
    pub admin_key: Option<String>,
    /// Required `iss` claim, when set.
    #[serde(deserialize_with = "text")]
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[serde(deserialize_with = "text")]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Lifetime of a ticket from `POST /v1/rooms/{room}/start`, in seconds.
    pub ticket_ttl_s: u64,
    /// A PEM public key (`BEGIN PUBLIC KEY`) that verifies tokens of `algorithm` only.
    pub public_key_path: Option<std::path::PathBuf>,
    /// The one algorithm `public_key_path` verifies: RS256/384/512, PS256/384/512, ES256/384 or EdDSA.
    pub algorithm: Option<jsonwebtoken::Algorithm>,
    /// The identity provider's JWKS (`https://idp.example/.well-known/jwks.json`); each
    /// key verifies the algorithm its `kty`/`crv`/`alg` name, chosen by the token's `kid`.
    pub jwks_url: Option<String>,
    /// Seconds fetched JWKS keys are used before they are fetched again.
    pub jwks_cache_s: u64,
    /// Least seconds between two JWKS fetches caused by tokens with an unknown `kid`.
    pub jwks_min_refetch_s: u64,
    /// Seconds one JWKS fetch may take.
    pub jwks_timeout_s: u64,
    /// Allows a plain `http://` `jwks_url` (an identity provider on loopback or a private network).
    pub jwks_allow_http: bool,
    /// Unredeemed tickets one token `sub` may hold at once; more are refused
    /// with 429 `too_many_tickets`. 0 = no limit.
    pub max_tickets_per_sub: usize,
}

impl AuthConfig {
    /// Whether any token key is configured; without one onair runs in development mode.
    pub fn has_token_keys(&self) -> bool {
        self.jwt_secret.is_some() || self.public_key_path.is_some() || self.jwks_url.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.public_key_path, self.algorithm) {
            (Some(_), None) => {
                return Err(ConfigError(
                    "auth.public_key_path needs auth.algorithm (RS256, ES256, EdDSA, …)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "auth.algorithm is set but auth.public_key_path is not".into(),
                ));
            }
            (_, Some(alg)) if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac => {
                return Err(ConfigError(format!(
                    "auth.algorithm = \"{alg:?}\": a public key verifies RS*, PS*, ES* or EdDSA; \
                     HS256 tokens use auth.jwt_secret"
                )));
            }
            _ => {}
        }
        if let Some(url) = &self.jwks_url {
            if url.starts_with("http://") {
                if !self.jwks_allow_http {
                    return Err(ConfigError(
                        "auth.jwks_url is plain http://: set auth.jwks_allow_http = true to allow it"
                            .into(),
                    ));
                }
            } else if !url.starts_with("https://") {
                return Err(ConfigError("auth.jwks_url must be an http(s) URL".into()));
            }
        }
        if self.jwks_cache_s == 0 || self.jwks_timeout_s == 0 {
            return Err(ConfigError(
                "auth.jwks_cache_s and auth.jwks_timeout_s must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            admin_key: None,
            issuer: None,
            audience: None,
            leeway_s: 30,
            ticket_ttl_s: 30,
            public_key_path: None,
            algorithm: None,
            jwks_url: None,
            jwks_cache_s: 300,
            jwks_min_refetch_s: 30,
            jwks_timeout_s: 5,
            jwks_allow_http: false,
            max_tickets_per_sub: 10,
        }
    }
}

/// The recording backends onair can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// The application's own recorder, driven by the REST API.
    #[default]
    Manual,
    /// LiveKit (or OpenVidu 3) egress.
    Livekit,
    /// The Nextcloud Talk recording server.
    Nextcloud,
    /// 8x8 JaaS: recordings are started in the Jitsi client; onair follows its webhooks.
    Jaas,
}

/// `[recording]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Which backend records: `manual`, `livekit`, `nextcloud` or `jaas`.
    pub backend: BackendKind,
    /// `false` refuses every start with `recording_disabled`.
    pub enabled: bool,
    /// Seconds the backend has to confirm a start before `recorder_timeout`.
    pub start_timeout_s: u64,
    /// Seconds the backend has to confirm a stop; then the room goes to
    /// `inactive` with reason `stop_timeout` (and the stop is sent once more).
    pub stop_timeout_s: u64,
    /// Seconds a recording outlives its room's last participant, so that a
    /// page reload does not end it; then it is stopped (reason `empty_room`).
    /// 0 stops it at once.
    pub empty_room_grace_s: u64,
    /// Seconds between two comparisons of onair's recordings with what the
    /// provider reports (LiveKit `Egress/ListEgress`): a recording the
    /// provider ended without onair hearing of it ends (reason `reconciled`),
    /// an egress onair started but no longer accounts for is stopped.
    /// 0 = off. Providers without a list API (Nextcloud, JaaS) are not
    /// reconciled; their deadlines cover them.
    pub reconcile_interval_s: u64,
    /// `manual` only: wait for the recorder to report `recording` through
    /// `POST /v1/rooms/{room}/recording/status` instead of confirming at once.
    pub manual_confirm: bool,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Manual,
            enabled: true,
            start_timeout_s: 30,
            stop_timeout_s: 30,
            empty_room_grace_s: 30,
            reconcile_interval_s: 60,
            manual_confirm: false,
        }
    }
}

/// `[livekit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivekitConfig {
    /// The LiveKit server's HTTP(S) URL, e.g. `https://livekit.example.com`.
    pub url: Option<String>,
    /// API key: the `iss` of tokens onair signs and of webhooks it accepts.
    #[serde(deserialize_with = "text")]
    pub api_key: Option<String>,
    /// API secret (HS256) for both directions.
    #[serde(deserialize_with = "text")]
    pub api_secret: Option<String>,
    /// Egress file path template; `{room_name}` and `{time}` are filled in by LiveKit.
    pub file_path: String,
    /// Seconds one call to LiveKit may take.
    pub request_timeout_s: u64,
    /// The S3-compatible bucket the egress uploads its files to. With the two
    /// keys, onair serves, copies and deletes the files LiveKit reports there.
    #[serde(deserialize_with = "text")]
    pub s3_bucket: Option<String>,
    /// The bucket's region; `us-east-1` when not set.
    #[serde(deserialize_with = "text")]
    pub s3_region: Option<String>,
    /// An S3-compatible endpoint (MinIO, …) as onair reaches it; AWS S3 when
    /// not set. Requests are path-style (`endpoint/bucket/key`).
    #[serde(deserialize_with = "text")]
    pub s3_endpoint: Option<String>,
    /// The access key id; required with `s3_bucket`.
    #[serde(deserialize_with = "text")]
    pub s3_access_key_id: Option<String>,
    /// The secret access key; required with `s3_bucket`. Never logged.
    #[serde(deserialize_with = "text")]
    pub s3_secret_access_key: Option<String>,
    /// Allows a plain `http://` endpoint (a bucket on loopback or a private network).
    pub s3_allow_http: bool,
}

impl Default for LivekitConfig {
    fn default() -> Self {
        Self {
            url: None,
            api_key: None,
            api_secret: None,
            file_path: "{room_name}-{time}.mp4".into(),
            request_timeout_s: 10,
            s3_bucket: None,
            s3_region: None,
            s3_endpoint: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
        }
    }
}

impl LivekitConfig {
    /// The egress bucket's S3 keys, as one group.
    pub fn s3(&self) -> S3Keys<'_> {
        S3Keys {
            section: "livekit",
            bucket: self.s3_bucket.as_deref(),
            region: self.s3_region.as_deref(),
            endpoint: self.s3_endpoint.as_deref(),
            access_key_id: self.s3_access_key_id.as_deref(),
            secret_access_key: self.s3_secret_access_key.as_deref(),
            allow_http: self.s3_allow_http,
        }
    }
}

/// `[nextcloud]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NextcloudConfig {
    /// The recording server's base URL, e.g. `http://recording.example:8000`.
    pub recording_server: Option<String>,
    /// The secret shared with the recording server (HMAC-SHA256 checksums).
    #[serde(deserialize_with = "text")]
    pub secret: Option<String>,
    /// onair's own base URL as the recording server reaches it (`Talk-Recording-Backend`).
    pub backend_url: Option<String>,
}

/// `[jaas]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JaasConfig {
    /// The secret 8x8 signs webhooks with (`X-Jaas-Signature`).
    #[serde(deserialize_with = "text")]
    pub webhook_secret: Option<String>,
    /// Attempts to download a recording file before giving up.
    pub download_attempts: u32,
    /// Seconds one download attempt may take.
    pub download_timeout_s: u64,
    /// The JaaS AppID (`vpaas-magic-cookie-…`), for `onair jaas-token`.
    pub app_id: Option<String>,
    /// The id of the API key uploaded to the JaaS console (the part after the `/` of the `kid`).
    pub api_key_id: Option<String>,
    /// The PEM file of that API key's RSA private key.
    pub private_key_path: Option<std::path::PathBuf>,
}

impl Default for JaasConfig {
    fn default() -> Self {
        Self {
            webhook_secret: None,
            download_attempts: 6,
            download_timeout_s: 1800,
            app_id: None,
            api_key_id: None,
            private_key_path: None,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for recording files handed to onair.
    pub path: std::path::PathBuf,
    /// Largest recording file accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Lifetime of signed media URLs, in seconds.
    pub url_ttl_s: u64,
    /// An S3-compatible bucket for recording files. When set (with the two
    /// keys), files still arrive in `path` but are then moved to the bucket.
    #[serde(deserialize_with = "text")]
    pub s3_bucket: Option<String>,
    /// The bucket's region; `us-east-1` when not set.
    #[serde(deserialize_with = "text")]
    pub s3_region: Option<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, …), e.g. `https://s3.example.com`;
    /// AWS S3 when not set. Requests are path-style (`endpoint/bucket/key`).
    #[serde(deserialize_with = "text")]
    pub s3_endpoint: Option<String>,
    /// The access key id; required with `s3_bucket`.
    #[serde(deserialize_with = "text")]
    pub s3_access_key_id: Option<String>,
    /// The secret access key; required with `s3_bucket`. Never logged.
    #[serde(deserialize_with = "text")]
    pub s3_secret_access_key: Option<String>,
    /// A key prefix for onair's objects, e.g. `onair/recordings`.
    pub s3_prefix: String,
    /// Allows a plain `http://` endpoint (a bucket on loopback or a private network).
    pub s3_allow_http: bool,
    /// How long recordings are kept, e.g. `"90d"`; older ones are deleted
    /// as `DELETE /v1/recordings/{id}` would, unless on legal hold
    /// (`keep_until`). `"0s"` keeps them forever.
    pub retention: String,
}

impl StorageConfig {
    /// `retention` as a duration; `None` keeps recordings forever. The value
    /// is checked when the configuration is loaded.
    pub fn retention(&self) -> Option<std::time::Duration> {
        humantime::parse_duration(self.retention.trim())
            .ok()
            .filter(|d| !d.is_zero())
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: "./onair-data/recordings".into(),
            max_upload_bytes: 8 * 1024 * 1024 * 1024,
            url_ttl_s: 3600,
            s3_bucket: None,
            s3_region: None,
            s3_endpoint: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_prefix: String::new(),
            s3_allow_http: false,
            retention: "0s".into(),
        }
    }
}

impl StorageConfig {
    /// onair's bucket's S3 keys, as one group.
    pub fn s3(&self) -> S3Keys<'_> {
        S3Keys {
            section: "storage",
            bucket: self.s3_bucket.as_deref(),
            region: self.s3_region.as_deref(),
            endpoint: self.s3_endpoint.as_deref(),
            access_key_id: self.s3_access_key_id.as_deref(),
            secret_access_key: self.s3_secret_access_key.as_deref(),
            allow_http: self.s3_allow_http,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.s3()
            .validate(&[("s3_prefix", !self.s3_prefix.is_empty())])
    }
}

/// The `s3_*` keys of one section (`[storage]`: onair's bucket, `[livekit]`:
/// the egress bucket), so that both are checked and turned into a client
/// the same way.
#[derive(Debug, Clone, Copy)]
pub struct S3Keys<'a> {
    /// The section, for messages: `storage` or `livekit`.
    pub section: &'static str,
    /// `s3_bucket`.
    pub bucket: Option<&'a str>,
    /// `s3_region`.
    pub region: Option<&'a str>,
    /// `s3_endpoint`.
    pub endpoint: Option<&'a str>,
    /// `s3_access_key_id`.
    pub access_key_id: Option<&'a str>,
    /// `s3_secret_access_key`.
    pub secret_access_key: Option<&'a str>,
    /// `s3_allow_http`.
    pub allow_http: bool,
}

/// The S3 connection settings, shared by onair's bucket and (possibly) the
/// owners' buckets of the notifications.
pub struct S3Settings<'a> {
    /// The bucket name.
    pub bucket: &'a str,
    /// The region (`us-east-1` when not given).
    pub region: Option<&'a str>,
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`; AWS when `None`.
    pub endpoint: Option<&'a str>,
    /// The access key id.
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a str,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: bool,
}

impl<'a> S3Keys<'a> {
    /// The client settings, when bucket and both keys are set (a partial
    /// setting is refused by [`Config`]'s validation).
    pub fn settings(&self) -> Option<S3Settings<'a>> {
        Some(S3Settings {
            bucket: self.bucket?,
            region: self.region,
            endpoint: self.endpoint,
            access_key_id: self.access_key_id?,
            secret_access_key: self.secret_access_key?,
            allow_http: self.allow_http,
        })
    }

    /// Bucket and keys all or none; the other keys (and the section's own,
    /// `also`) only with them; an endpoint is an http(s) URL, plain http only
    /// when allowed. Every message names the key.
    fn validate(&self, also: &[(&str, bool)]) -> Result<(), ConfigError> {
        let section = self.section;
        let required = [
            ("s3_bucket", self.bucket.is_some()),
            ("s3_access_key_id", self.access_key_id.is_some()),
            ("s3_secret_access_key", self.secret_access_key.is_some()),
        ];
        if required.iter().all(|(_, present)| !present) {
            let optional = [
                ("s3_region", self.region.is_some()),
                ("s3_endpoint", self.endpoint.is_some()),
                ("s3_allow_http", self.allow_http),
            ];
            if let Some((key, _)) = optional.iter().chain(also).find(|(_, present)| *present) {
                return Err(ConfigError(format!(
                    "{section}.{key} is set but {section}.s3_bucket, {section}.s3_access_key_id \
                     and {section}.s3_secret_access_key are not"
                )));
            }
            return Ok(());
        }
        if let Some((missing, _)) = required.iter().find(|(_, present)| !present) {
            return Err(ConfigError(format!(
                "{section}.s3_bucket, {section}.s3_access_key_id and \
                 {section}.s3_secret_access_key go together: {section}.{missing} is missing"
            )));
        }
        if let Some(endpoint) = self.endpoint {
            if endpoint.starts_with("http://") {
                if !self.allow_http {
                    return Err(ConfigError(format!(
                        "{section}.s3_endpoint is plain http://: set {section}.s3_allow_http = \
                         true to allow it"
                    )));
                }
            } else if !endpoint.starts_with("https://") {
                return Err(ConfigError(format!(
                    "{section}.s3_endpoint must be an http(s) URL"
                )));
            }
        }
        Ok(())
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Peer addresses (IPs or CIDR blocks) allowed to read `GET /metrics`.
    /// Only the TCP peer counts, never `X-Forwarded-For`.
    pub allowed_ips: Vec<crate::ip_range::IpRange>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            allowed_ips: vec![
                "127.0.0.1".parse().expect("an address"),
                "::1".parse().expect("an address"),
            ],
        }
    }
}

/// `[cluster]`: without `redis_url`, rooms stay in this process only.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL (`redis://host:6379/0`); setting it turns clustering on.
    pub redis_url: Option<String>,
    /// This node's id in Redis; random per start unless set.
    pub node_id: String,
    /// Seconds between this node's heartbeats.
    pub heartbeat_s: u64,
    /// Seconds after its last heartbeat a node counts as dead and its participants leave.
    pub node_ttl_s: u64,
    /// Seconds one Redis round trip may take before the node counts Redis as unavailable.
    pub command_timeout_s: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            heartbeat_s: 2,
            node_ttl_s: 10,
            command_timeout_s: 2,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file (created with its directory).
    pub path: std::path::PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: "./onair-data/onair.db".into(),
        }
    }
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// `[[webhooks.endpoints]]`: where events are sent.
    pub endpoints: Vec<WebhookEndpoint>,
    /// Attempts per delivery before it is given up as dead.
    pub max_attempts: u32,
    /// The first retry's delay in milliseconds; each further one doubles it (with jitter, at most an hour).
    pub retry_base_ms: u64,
    /// Seconds one delivery attempt may take.
    pub timeout_s: u64,
    /// Days delivered and dead outbox rows (webhooks and notification POSTs)
    /// are kept, for inspection; older ones are deleted. 0 keeps them forever.
    pub keep_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            max_attempts: 10,
            retry_base_ms: 5_000,
            timeout_s: 10,
            keep_days: 7,
        }
    }
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// The URL events are POSTed to.
    pub url: String,
    /// The Standard Webhooks secret, `whsec_` + base64.
    pub secret: String,
    /// Event types to send; empty sends all.
    #[serde(default)]
    pub events: Vec<String>,
}

/// `[smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// The mail server's host name; without it no notification e-mails are sent.
    pub host: Option<String>,
    /// The mail server's port (587: submission with STARTTLS).
    pub port: u16,
    /// User name for SMTP AUTH, when the server wants one.
    #[serde(deserialize_with = "text")]
    pub username: Option<String>,
    /// Password for SMTP AUTH.
    #[serde(deserialize_with = "text")]
    pub password: Option<String>,
    /// The sender, e.g. `onair <recordings@example.com>`; needed with `host`.
    pub from: Option<String>,
    /// Require STARTTLS; `false` talks plain text (only for a relay on loopback).
    pub starttls: bool,
    /// Seconds one SMTP conversation may take.
    pub timeout_s: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: 587,
            username: None,
            password: None,
            from: None,
            starttls: true,
            timeout_s: 30,
        }
    }
}

/// `[notifications]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Kept for older configurations: `[server] public_url` wins when both are set.
    pub public_url: Option<String>,
    /// An S3-compatible endpoint to upload to instead of AWS (e.g. MinIO); owners' ARNs still name bucket and path.
    pub s3_endpoint: Option<String>,
    /// Seconds the presigned `retrievalUrl` of a file uploaded to an owner's S3 stays valid (at most 7 days).
    pub s3_url_ttl_s: u64,
    /// Attempts per POST or e-mail before giving up.
    pub attempts: u32,
    /// The first retry's delay in milliseconds; each further one doubles it (with jitter).
    pub retry_base_ms: u64,
    /// Seconds one POST to an owner's `url` may take.
    pub timeout_s: u64,
    /// Whether an owner's `url` may point at a loopback, private, link-local
    /// or otherwise non-public address. Off by default: the URL is chosen by
    /// users, and onair would otherwise POST into its own network (SSRF).
    pub allow_private_addresses: bool,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            s3_endpoint: None,
            s3_url_ttl_s: 7 * 24 * 3600,
            attempts: 5,
            retry_base_ms: 2_000,
            timeout_s: 10,
            allow_private_addresses: false,
        }
    }
}

/// A configuration that could not be loaded; the message names the key and source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads the file (if any), then `ONAIR_<SECTION>__<KEY>` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("ONAIR_"))
    }

    /// Loads with the given environment provider (tests pass their own).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only `SECTION__KEY` variables are configuration keys; ONAIR_LISTEN and
        // ONAIR_CONFIG are flags' environment fallbacks.
        let env = env.filter(|key| key.as_str().contains("__")).split("__");
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let positive = [
            ("server.max_frame_bytes", s.max_frame_bytes as u64),
            ("server.send_queue", s.send_queue as u64),
            (
                "server.messages_per_second",
                u64::from(s.messages_per_second),
            ),
            ("server.message_burst", u64::from(s.message_burst)),
            ("server.join_timeout_s", s.join_timeout_s),
            ("server.header_timeout_s", s.header_timeout_s),
            ("server.body_timeout_s", s.body_timeout_s),
            ("server.idle_timeout_s", s.idle_timeout_s),
            ("server.max_http_connections", s.max_http_connections as u64),
            ("server.max_json_depth", s.max_json_depth as u64),
            ("server.max_body_bytes", s.max_body_bytes as u64),
            (
                "server.max_webhook_body_bytes",
                s.max_webhook_body_bytes as u64,
            ),
            ("auth.ticket_ttl_s", self.auth.ticket_ttl_s),
            ("recording.start_timeout_s", self.recording.start_timeout_s),
            ("recording.stop_timeout_s", self.recording.stop_timeout_s),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        if let Err(e) = humantime::parse_duration(self.storage.retention.trim()) {
            return Err(ConfigError(format!(
                "storage.retention: `{}` is not a duration such as \"90d\" or \"0s\" ({e})",
                self.storage.retention
            )));
        }
        if let Some(url) = &s.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError(
                "server.public_url must be an http(s) URL, e.g. https://onair.example.com".into(),
            ));
        }
        let missing = |section: &str, keys: &[(&str, bool)]| -> Result<(), ConfigError> {
            match keys.iter().find(|(_, present)| !present) {
                Some((key, _)) => Err(ConfigError(format!(
                    "recording.backend = \"{section}\" needs {section}.{key}"
                ))),
                None => Ok(()),
            }
        };
        match self.recording.backend {
            BackendKind::Manual => {}
            BackendKind::Livekit => missing(
                "livekit",
                &[
                    ("url", self.livekit.url.is_some()),
                    ("api_key", self.livekit.api_key.is_some()),
                    ("api_secret", self.livekit.api_secret.is_some()),
                ],
            )?,
            BackendKind::Nextcloud => missing(
                "nextcloud",
                &[
                    (
                        "recording_server",
                        self.nextcloud.recording_server.is_some(),
                    ),
                    ("secret", self.nextcloud.secret.is_some()),
                    ("backend_url", self.nextcloud.backend_url.is_some()),
                ],
            )?,
            BackendKind::Jaas => missing(
                "jaas",
                &[("webhook_secret", self.jaas.webhook_secret.is_some())],
            )?,
        }
        for (i, endpoint) in self.webhooks.endpoints.iter().enumerate() {
            if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "webhooks.endpoints[{i}].url must be an http(s) URL"
                )));
            }
            decode_secret(&endpoint.secret)
                .map_err(|e| ConfigError(format!("webhooks.endpoints[{i}].secret: {e}")))?;
            if let Some(unknown) = endpoint
                .events
                .iter()
                .find(|e| !EVENT_TYPES.contains(&e.as_str()))
            {
                return Err(ConfigError(format!(
                    "webhooks.endpoints[{i}].events: unknown event type `{unknown}`"
                )));
            }
        }
        self.storage.validate()?;
        self.livekit.s3().validate(&[])?;
        self.auth.validate()?;
        // [cluster]
        let c = &self.cluster;
        if c.redis_url.is_some() {
            if c.heartbeat_s == 0 || c.command_timeout_s == 0 {
                return Err(ConfigError(
                    "cluster.heartbeat_s and cluster.command_timeout_s must be greater than 0"
                        .into(),
                ));
            }
            if c.node_ttl_s <= c.heartbeat_s {
                return Err(ConfigError(
                    "cluster.node_ttl_s must be greater than cluster.heartbeat_s".into(),
                ));
            }
            if c.node_id.is_empty() || c.node_id.contains(['{', '}', ' ']) {
                return Err(ConfigError(
                    "cluster.node_id must be non-empty, without braces or spaces".into(),
                ));
            }
            // SPEC §7: any node serves any recording, and a node can be
            // replaced with its disk, so files cannot stay on one node's disk.
            if self.storage.s3_bucket.is_none() {
                return Err(ConfigError(
                    "cluster.redis_url is set but storage.s3_bucket is not: in cluster mode \
                     recording files must go to the shared S3 bucket (every node serves every \
                     recording, and a node can be replaced with its disk); set \
                     storage.s3_bucket, storage.s3_access_key_id and storage.s3_secret_access_key \
                     (and storage.s3_endpoint for a store other than AWS), or remove \
                     cluster.redis_url to run a single node"
                        .into(),
                ));
            }
        }
        if self.webhooks.max_attempts == 0 {
            return Err(ConfigError(
                "webhooks.max_attempts must be greater than 0".into(),
            ));
        }
        check_notifications(self).map_err(ConfigError)?;
        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 16
        {
            return Err(ConfigError(
                "auth.jwt_secret must be at least 16 bytes long".into(),
            ));
        }
        if let Some(key) = &self.auth.admin_key
            && key.len() < 16
        {
            return Err(ConfigError(
                "auth.admin_key must be at least 16 bytes long".into(),
            ));
        }
        Ok(())
    }
}

/// Reads a text setting that an environment variable may have spelled as a
/// number or boolean (`ONAIR_AUTH__JWT_SECRET=1234…` parses as an integer).
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|t| match t {
        Text::String(s) => s,
        Text::Unsigned(n) => n.to_string(),
        Text::Signed(n) => n.to_string(),
        Text::Float(n) => n.to_string(),
        Text::Bool(b) => b.to_string(),
    }))
}

/// Figment's errors name the key path and the source; keep all of them.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| format!(" (in {s})")))
                .or_else(|| e.metadata.as_ref().map(|m| format!(" (in {})", m.name)))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The event types onair sends.
pub const EVENT_TYPES: &[&str] = &[
    "recording.started",
    "recording.stopped",
    "recording.failed",
    "recording.available",
    "recording.deleted",
    "participant.consent_changed",
];

/// Decodes a `whsec_…` secret into the HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("a webhook secret starts with `whsec_`")?;
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "a webhook secret is `whsec_` followed by base64".to_owned())
}

/// Checks `[smtp]` and `[notifications]` (called from `Config::validate`).
fn check_notifications(config: &Config) -> Result<(), String> {
    let smtp = &config.smtp;
    if smtp.host.is_some() {
        let from = smtp
            .from
            .as_deref()
            .ok_or("smtp.from is needed when smtp.host is set")?;
        from.parse::<lettre::message::Mailbox>()
            .map_err(|_| format!("smtp.from: `{from}` is not an e-mail address"))?;
        if smtp.username.is_some() != smtp.password.is_some() {
            return Err("smtp.username and smtp.password go together".into());
        }
    }
    let n = &config.notifications;
    if n.attempts == 0 {
        return Err("notifications.attempts must be greater than 0".into());
    }
    for (key, value) in [
        ("notifications.public_url", &n.public_url),
        ("notifications.s3_endpoint", &n.s3_endpoint),
    ] {
        if let Some(value) = value
            && !is_http_url(value)
        {
            return Err(format!("{key} must be an http(s) URL"));
        }
    }
    Ok(())
}

/// Longest URL accepted in a setting (an owner's `url`, an endpoint).
pub const MAX_URL_LEN: usize = 2048;

/// An absolute `http`/`https` URL with a host, at most [`MAX_URL_LEN`] long.
fn is_http_url(text: &str) -> bool {
    let text = text.trim();
    text.len() <= MAX_URL_LEN
        && reqwest::Url::parse(text)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Env {
        Env::prefixed("ONAIR_TEST_NOTHING_")
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::load_from(None, no_env()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:7800");
        assert_eq!(c.server.max_frame_bytes, 65536);
        assert!(c.auth.jwt_secret.is_none());
        assert_eq!(c.recording.backend, BackendKind::Manual);
    }

    #[test]
    fn file_values_are_read() {
        let f = file(
            "[auth]\njwt_secret = \"0123456789abcdef\"\n[server]\nlisten = \"0.0.0.0:9000\"\n",
        );
        let c = Config::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("0123456789abcdef"));
        assert_eq!(c.server.listen.port(), 9000);
    }

    #[test]
    fn unknown_key_is_named() {
        let f = file("[server]\nlisten_adress = \"0.0.0.0:9000\"\n");
        let err = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_adress"), "{err}");
        let f = file("[recording]\nbackend = \"betamax\"\n");
        let err = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend") && err.contains("betamax"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn env_overrides_file() {
        // figment::Jail isolates the process environment for this test.
        figment::Jail::expect_with(|jail| {
            jail.set_env("ONAIR_TEST_AUTH__JWT_SECRET", "1234567890123456");
            jail.set_env("ONAIR_TEST_SERVER__SEND_QUEUE", "9");
            jail.set_env("ONAIR_TEST_LISTEN", "ignored-here");
            let f = file("[server]\nsend_queue = 3\n");
            let c = Config::load_from(Some(f.path()), Env::prefixed("ONAIR_TEST_"))
                .map_err(|e| e.to_string())?;
            assert_eq!(c.auth.jwt_secret.as_deref(), Some("1234567890123456"));
            assert_eq!(c.server.send_queue, 9);
            Ok(())
        });
    }

    #[test]
    fn a_cluster_keeps_its_files_in_the_shared_bucket() {
        let load = |text: &str| {
            let f = file(text);
            Config::load_from(Some(f.path()), no_env()).map_err(|e| e.to_string())
        };
        let cluster = "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n";
        let err = load(cluster).unwrap_err();
        assert!(
            err.contains("cluster.redis_url") && err.contains("storage.s3_bucket"),
            "{err}"
        );
        let c = load(&format!(
            "{cluster}[storage]\ns3_bucket = \"rec\"\ns3_access_key_id = \"a\"\n\
             s3_secret_access_key = \"s\"\n"
        ))
        .unwrap();
        assert_eq!(c.storage.s3_bucket.as_deref(), Some("rec"));
    }

    #[test]
    fn s3_storage_settings_go_together() {
        let load = |text: &str| {
            let f = file(text);
            Config::load_from(Some(f.path()), no_env()).map_err(|e| e.to_string())
        };
        let c = load(
            "[storage]\ns3_bucket = \"rec\"\ns3_access_key_id = \"a\"\ns3_secret_access_key = \"s\"\n\
             s3_endpoint = \"http://127.0.0.1:9000\"\ns3_allow_http = true\ns3_prefix = \"onair\"\n",
        )
        .unwrap();
        assert_eq!(c.storage.s3_bucket.as_deref(), Some("rec"));
        let err = load("[storage]\ns3_bucket = \"rec\"\ns3_access_key_id = \"a\"\n").unwrap_err();
        assert!(err.contains("storage.s3_secret_access_key"), "{err}");
        let err = load("[storage]\ns3_endpoint = \"https://s3.example.com\"\n").unwrap_err();
        assert!(err.contains("storage.s3_endpoint"), "{err}");
        let err = load(
            "[storage]\ns3_bucket = \"rec\"\ns3_access_key_id = \"a\"\ns3_secret_access_key = \"s\"\n\
             s3_endpoint = \"http://127.0.0.1:9000\"\n",
        )
        .unwrap_err();
        assert!(err.contains("s3_allow_http"), "{err}");
    }

    #[test]
    fn livekit_egress_bucket_settings_go_together() {
        let load = |text: &str| {
            let f = file(text);
            Config::load_from(Some(f.path()), no_env()).map_err(|e| e.to_string())
        };
        let c = load(
            "[livekit]\ns3_bucket = \"egress\"\ns3_access_key_id = \"a\"\n\
             s3_secret_access_key = \"s\"\ns3_region = \"eu-west-1\"\n\
             s3_endpoint = \"http://minio:9000\"\ns3_allow_http = true\n",
        )
        .unwrap();
        let settings = c.livekit.s3().settings().unwrap();
        assert_eq!(
            (settings.bucket, settings.region, settings.endpoint),
            ("egress", Some("eu-west-1"), Some("http://minio:9000"))
        );
        assert!(load("").unwrap().livekit.s3().settings().is_none());
        // Each of the three missing is named, with its section.
        for (text, missing) in [
            (
                "s3_access_key_id = \"a\"\ns3_secret_access_key = \"s\"",
                "s3_bucket",
            ),
            (
                "s3_bucket = \"egress\"\ns3_secret_access_key = \"s\"",
                "s3_access_key_id",
            ),
            (
                "s3_bucket = \"egress\"\ns3_access_key_id = \"a\"",
                "s3_secret_access_key",
            ),
        ] {
            let err = load(&format!("[livekit]\n{text}\n")).unwrap_err();
            assert!(
                err.contains(&format!("livekit.{missing} is missing")),
                "{err}"
            );
        }
        let err = load("[livekit]\ns3_region = \"eu-west-1\"\n").unwrap_err();
        assert!(err.contains("livekit.s3_region is set"), "{err}");
        let err = load(
            "[livekit]\ns3_bucket = \"egress\"\ns3_access_key_id = \"a\"\n\
             s3_secret_access_key = \"s\"\ns3_endpoint = \"http://minio:9000\"\n",
        )
        .unwrap_err();
        assert!(err.contains("livekit.s3_allow_http"), "{err}");
        // [storage] has no say over [livekit] and the other way round.
        let err = load("[livekit]\ns3_prefix = \"x\"\n").unwrap_err();
        assert!(err.contains("s3_prefix"), "{err}");
    }

    #[test]
    fn token_keys_are_checked() {
        let load = |text: &str| {
            let f = file(text);
            Config::load_from(Some(f.path()), no_env()).map_err(|e| e.to_string())
        };
        let c = load("[auth]\npublic_key_path = \"/k.pem\"\nalgorithm = \"ES256\"\n").unwrap();
        assert_eq!(c.auth.algorithm, Some(jsonwebtoken::Algorithm::ES256));
        assert!(c.auth.has_token_keys());
        assert_eq!(c.auth.jwks_cache_s, 300);
        let err = load("[auth]\npublic_key_path = \"/k.pem\"\n").unwrap_err();
        assert!(err.contains("auth.algorithm"), "{err}");
        let err =
            load("[auth]\npublic_key_path = \"/k.pem\"\nalgorithm = \"HS256\"\n").unwrap_err();
        assert!(err.contains("auth.algorithm"), "{err}");
        let err = load("[auth]\njwks_url = \"http://idp.example/jwks\"\n").unwrap_err();
        assert!(err.contains("jwks_allow_http"), "{err}");
        let err = load("[auth]\njwks_url = \"ftp://idp.example/jwks\"\n").unwrap_err();
        assert!(err.contains("auth.jwks_url"), "{err}");
        assert!(load("[auth]\njwks_url = \"https://idp.example/jwks\"\n").is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        let f = file("[server]\nsend_queue = 0\n");
        let err = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.send_queue"), "{err}");
        let f = file("[auth]\njwt_secret = \"short\"\n");
        assert!(Config::load_from(Some(f.path()), no_env()).is_err());
        let missing = Config::load_from(Some(Path::new("/nonexistent/onair.toml")), no_env());
        assert!(missing.unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn proxies_and_exemptions_are_ips_or_cidr_blocks() {
        let f = file("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nper_ip_exempt = []\n");
        let c = Config::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert!(c.server.per_ip_exempt.is_empty());
        let f = file("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
        let err = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("10.0.0.0/33"),
            "{err}"
        );
        // Plain addresses (as configs before CIDR support had them) and blocks.
        let f = file("[metrics]\nallowed_ips = [\"192.0.2.7\", \"10.0.0.0/8\"]\n");
        let c = Config::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.metrics.allowed_ips.len(), 2);
        assert!(c.metrics.allowed_ips[1].contains("10.1.2.3".parse().unwrap()));
        let f = file("[metrics]\nallowed_ips = [\"10.0.0.0/40\"]\n");
        let err = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.allowed_ips"), "{err}");
        let f = file("[server]\nmax_json_depth = 0\n");
        let err = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.max_json_depth"), "{err}");
    }

    #[test]
    fn smtp_needs_a_valid_sender_and_endpoints_are_urls() {
        let mut config = Config::default();
        assert_eq!(check_notifications(&config), Ok(()));
        config.smtp.host = Some("mail.example.org".into());
        assert!(
            check_notifications(&config)
                .unwrap_err()
                .contains("smtp.from")
        );
        config.smtp.from = Some("not an address".into());
        assert!(
            check_notifications(&config)
                .unwrap_err()
                .contains("smtp.from")
        );
        config.smtp.from = Some("onair <recordings@example.org>".into());
        assert_eq!(check_notifications(&config), Ok(()));
        config.smtp.username = Some("onair".into());
        assert!(
            check_notifications(&config)
                .unwrap_err()
                .contains("smtp.password")
        );
        config.smtp.password = Some("pw".into());
        config.notifications.s3_endpoint = Some("minio:9000".into());
        assert!(
            check_notifications(&config)
                .unwrap_err()
                .contains("s3_endpoint")
        );
        config.notifications.s3_endpoint = Some("http://127.0.0.1:9000".into());
        assert_eq!(check_notifications(&config), Ok(()));
        config.notifications.attempts = 0;
        assert!(check_notifications(&config).is_err());
    }
}
