//! Who may connect: participant JWTs, single-use tickets, and the admin key.
//!
//! Tokens are checked against keys whose algorithm is fixed by configuration
//! or by the key itself, never by the token: the HS256 `jwt_secret` only
//! verifies HS256, a PEM public key only the `[auth] algorithm` it is pinned
//! to, a JWKS key only what its `kty`/`crv`/`alg` say. So an `alg: none`
//! token, or an HS256 token "signed" with a public key as the HMAC secret,
//! finds no key and is refused.
//!
//! JWKS keys are cached ([`Jwks`]): fetched at startup and every
//! `jwks_cache_s` in the background, and once more when a token names a `kid`
//! the cache does not know — at most once per `jwks_min_refetch_s`, so a flood
//! of made-up `kid`s cannot hammer the identity provider. That refetch happens
//! in a layer in front of the routes ([`fetch_unknown_keys`]); checking a token
//! ([`Verifier::verify`]) stays synchronous and never does I/O. A failed fetch
//! keeps the keys already cached.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::AuthConfig;
use crate::metrics::{METRICS, count};
use crate::protocol::Role;

/// The claims of a participant token (SPEC §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The participant's user id.
    pub sub: String,
    /// The room the token admits to.
    pub room: String,
    /// Display name, unless `join` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `moderator`, `user` or `guest`.
    #[serde(default)]
    pub role: Role,
    /// `false` takes the right to start/stop even from a moderator (seed 000's `features.recording`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<bool>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issuer, checked when `[auth] issuer` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, checked when `[auth] audience` is set. Identity providers may
    /// send a list; it is then checked as a whole and the first entry kept here.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "one_or_first"
    )]
    pub aud: Option<String>,
}

impl Claims {
    /// Whether this participant may start and stop recordings.
    pub fn may_record(&self) -> bool {
        self.role == Role::Moderator && self.recording != Some(false)
    }
}

/// `"aud": "x"` or `"aud": ["x", "y"]`.
fn one_or_first<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(s),
        Some(OneOrMany::Many(list)) => list.into_iter().next(),
    })
}

/// Why a credential was refused. The messages go to the client; they never
/// repeat the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token, ticket or bearer header at all.
    #[error(
        "no credential: send a token as `Authorization: Bearer`, `?token=` or a `ticket#` subprotocol"
    )]
    Missing,
    /// The token's signature, claims or expiry did not verify.
    #[error("token rejected: {0}")]
    Invalid(String),
    /// The ticket is unknown, used or expired.
    #[error("ticket unknown, already used or expired")]
    BadTicket,
}

/// Why a token did not verify; its `reason` labels `onair_tokens_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("bad signature")]
    BadSignature,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unknown key id (kid)")]
    UnknownKey,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    #[error("claim `sub` must not be empty")]
    EmptySubject,
    #[error("claim `name` {0}")]
    BadName(crate::protocol::DisplayNameError),
    #[error("malformed token")]
    Malformed,
    #[error("invalid token")]
    Other,
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) | Self::EmptySubject => "missing_claim",
            Self::BadName(_) => "invalid_name",
            Self::Malformed => "malformed",
            Self::Other => "invalid",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for Refusal {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm => Self::AlgorithmNotAllowed,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) => Self::MissingClaim(c.clone()),
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => Self::Malformed,
            _ => Self::Other,
        }
    }
}

/// A public key from `[auth] public_key_path` or `[auth] jwks_url` that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM file could not be read.
    #[error("auth.public_key_path {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not a public key of the kind `[auth] algorithm` needs.
    #[error("auth.public_key_path {path}: not a {algorithm:?} public key in PEM ({reason})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The algorithm it was pinned to.
        algorithm: Algorithm,
        /// What the parser said.
        reason: String,
    },
    /// `[auth] public_key_path` without `[auth] algorithm`.
    #[error("auth.public_key_path needs auth.algorithm (RS256, ES256, EdDSA, …)")]
    NoAlgorithm,
}

/// Why fetching the JWKS failed (the cached keys stay in use).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The request failed or timed out, or the answer was not 2xx.
    #[error("fetching the JWKS: {0}")]
    Http(#[from] reqwest::Error),
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not a JSON `{"keys": […]}` document.
    #[error("the JWKS is not a JSON key set: {0}")]
    Json(#[from] serde_json::Error),
    /// Not one key in the set can verify tokens.
    #[error("the JWKS holds no usable signing key")]
    NoUsableKey,
}

/// The largest JWKS document onair reads.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A verification key with the one algorithm it may verify.
#[derive(Clone)]
struct PinnedKey {
    /// The JWK `kid`; PEM keys and the secret have none.
    kid: Option<String>,
    /// The only algorithm this key verifies.
    algorithm: Algorithm,
    /// The key material.
    key: DecodingKey,
}

/// Checks participant tokens; mints HS256 ones when it has the secret.
pub struct Verifier {
    /// The HS256 secret's verification key, pinned to HS256.
    hs256: Option<PinnedKey>,
    /// The HS256 secret's signing key (minting: `onair token`, development mode).
    encoding: Option<EncodingKey>,
    /// `[auth] public_key_path`, pinned to `[auth] algorithm`.
    pem: Option<PinnedKey>,
    /// `[auth] jwks_url` and its cache.
    jwks: Option<Arc<Jwks>>,
    /// Leeway, required claims, issuer and audience; the algorithm is set per key.
    validation: Validation,
}

impl Verifier {
    /// A verifier for HS256 tokens with `secret` only, checking `iss`/`aud` when configured.
    pub fn new(secret: &str, config: &AuthConfig) -> Self {
        Self {
            hs256: Some(PinnedKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            }),
            encoding: Some(EncodingKey::from_secret(secret.as_bytes())),
            pem: None,
            jwks: None,
            validation: base_validation(config),
        }
    }

    /// The verifier `[auth]` describes: HS256 with `secret` (the configured
    /// one, or development mode's), a PEM public key, a JWKS URL — any
    /// combination, each key pinned to its own algorithm. JWKS keys arrive
    /// once [`Jwks::keep_fresh`] runs.
    pub fn from_config(
        config: &AuthConfig,
        secret: Option<&str>,
        http: reqwest::Client,
    ) -> Result<Self, KeyError> {
        let pem = match &config.public_key_path {
            None => None,
            Some(path) => {
                let algorithm = config.algorithm.ok_or(KeyError::NoAlgorithm)?;
                Some(load_pem(path, algorithm)?)
            }
        };
        let jwks = config.jwks_url.as_ref().map(|url| {
            Arc::new(Jwks::new(
                url.clone(),
                http,
                Duration::from_secs(config.jwks_cache_s),
                Duration::from_secs(config.jwks_min_refetch_s),
                Duration::from_secs(config.jwks_timeout_s),
            ))
        });
        let mut verifier = match secret {
            Some(secret) => Self::new(secret, config),
            None => Self {
                hs256: None,
                encoding: None,
                pem: None,
                jwks: None,
                validation: base_validation(config),
            },
        };
        verifier.pem = pem;
        verifier.jwks = jwks;
        Ok(verifier)
    }

    /// The JWKS cache, when `[auth] jwks_url` is set.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Whether this verifier holds the HS256 secret and so can [`mint`](Self::mint).
    pub fn can_mint(&self) -> bool {
        self.encoding.is_some()
    }

    /// Verifies a token and its claims against the keys in hand (no I/O).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.check(token).map_err(|refusal| {
            count(&METRICS.tokens_refused, refusal.reason());
            AuthError::Invalid(refusal.to_string())
        })
    }

    fn check(&self, token: &str) -> Result<Claims, Refusal> {
        let (algorithm, kid) = peek_header(token)?;
        let keys = self.keys_for(algorithm, kid.as_deref())?;
        for key in &keys {
            let mut validation = self.validation.clone();
            validation.algorithms = vec![key.algorithm];
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) if data.claims.sub.is_empty() => return Err(Refusal::EmptySubject),
                Ok(data) => return name_fits(data.claims),
                Err(e) => match Refusal::from(e) {
                    // Another key of the same algorithm may have signed it.
                    Refusal::BadSignature => continue,
                    // The signature held: the claims are wrong.
                    other => return Err(other),
                },
            }
        }
        Err(Refusal::BadSignature)
    }

    /// The keys that may have signed a token with this header: only those
    /// pinned to exactly `algorithm`.
    fn keys_for(&self, algorithm: Algorithm, kid: Option<&str>) -> Result<Vec<PinnedKey>, Refusal> {
        if algorithm == Algorithm::HS256 {
            return self
                .hs256
                .clone()
                .map(|k| vec![k])
                .ok_or(Refusal::AlgorithmNotAllowed);
        }
        let mut keys = Vec::new();
        let mut kid_unknown = false;
        if let Some(jwks) = &self.jwks {
            let cached = jwks.keys();
            match kid {
                Some(kid) => {
                    kid_unknown = !cached.iter().any(|k| k.kid.as_deref() == Some(kid));
                    keys.extend(
                        cached
                            .iter()
                            .filter(|k| k.kid.as_deref() == Some(kid) && k.algorithm == algorithm)
                            .cloned(),
                    );
                }
                None => keys.extend(cached.iter().filter(|k| k.algorithm == algorithm).cloned()),
            }
        }
        if let Some(pem) = self.pem.as_ref().filter(|k| k.algorithm == algorithm) {
            keys.push(pem.clone());
        }
        match keys.is_empty() {
            false => Ok(keys),
            true if kid_unknown => Err(Refusal::UnknownKey),
            true => Err(Refusal::AlgorithmNotAllowed),
        }
    }

    /// Signs claims with the HS256 secret.
    ///
    /// # Panics
    ///
    /// If this verifier has no secret (public keys only): check
    /// [`can_mint`](Self::can_mint) first. Development mode and
    /// [`Verifier::new`] always have one.
    pub fn mint(&self, claims: &Claims) -> String {
        let key = self
            .encoding
            .as_ref()
            .expect("minting needs the HS256 secret; check can_mint()");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .expect("HS256 signing of plain claims cannot fail")
    }
}

/// The claims, unless their `name` (which others see as this participant's
/// display name) holds control or bidirectional formatting characters. A
/// name too long to show is left to `join`, which a `display_name` can
/// still satisfy.
fn name_fits(claims: Claims) -> Result<Claims, Refusal> {
    use crate::protocol::{DisplayNameError, check_display_name};
    match claims.name.as_deref().map(check_display_name) {
        None | Some(Ok(()) | Err(DisplayNameError::TooLong)) => Ok(claims),
        Some(Err(e)) => Err(Refusal::BadName(e)),
    }
}

fn base_validation(config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = config.leeway_s;
    // A configured issuer or audience is also required to be present.
    let mut required = vec!["exp", "sub"];
    required.extend(config.issuer.as_ref().map(|_| "iss"));
    required.extend(config.audience.as_ref().map(|_| "aud"));
    validation.set_required_spec_claims(&required);
    validation.validate_nbf = true;
    match &config.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &config.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

fn load_pem(path: &std::path::Path, algorithm: Algorithm) -> Result<PinnedKey, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed = match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        // HS*: a public key is never an HMAC secret.
        _ => {
            return Err(KeyError::Parse {
                path: path.to_owned(),
                algorithm,
                reason: "not a public-key algorithm".into(),
            });
        }
    };
    let key = parsed.map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        algorithm,
        reason: e.to_string(),
    })?;
    Ok(PinnedKey {
        kid: None,
        algorithm,
        key,
    })
}

/// A token's header fields that choose the key: `alg` and `kid`.
fn peek_header(token: &str) -> Result<(Algorithm, Option<String>), Refusal> {
    #[derive(Deserialize)]
    struct Peek {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let encoded = token.split('.').next().ok_or(Refusal::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Refusal::Malformed)?;
    let peek: Peek = serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
    // `none` and names jsonwebtoken does not know are no algorithm at all.
    let algorithm = Algorithm::from_str(&peek.alg).map_err(|_| Refusal::AlgorithmNotAllowed)?;
    Ok((algorithm, peek.kid))
}

/// The algorithm a JWK may verify, from the key itself: `kty` and `crv`,
/// with `alg` (when present) only allowed to agree. Symmetric and encryption
/// keys are never taken from a URL.
fn pin_jwk(jwk: &Jwk) -> Result<Algorithm, &'static str> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err("not a signature key (`use`)");
    }
    let alg = jwk.common.key_algorithm;
    let pinned = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS384)) => Algorithm::RS384,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS512)) => Algorithm::RS512,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS384)) => Algorithm::PS384,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS512)) => Algorithm::PS512,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES384))
            if p.curve == EllipticCurve::P384 =>
        {
            Algorithm::ES384
        }
        (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        (AlgorithmParameters::OctetKey(_), _) => return Err("symmetric key"),
        _ => return Err("unsupported key type, curve or algorithm"),
    };
    Ok(pinned)
}

/// `[auth] jwks_url`: the identity provider's keys, cached.
pub struct Jwks {
    /// Where the key set is fetched from.
    url: String,
    /// The shared HTTP client (rustls).
    http: reqwest::Client,
    /// How long a fetched set is used before the background refresh fetches it again.
    cache_for: Duration,
    /// The least time between two fetches caused by unknown `kid`s.
    min_refetch: Duration,
    /// How long one fetch may take.
    timeout: Duration,
    /// The keys in use. A std lock: it is never held across an `.await`.
    keys: RwLock<Arc<[PinnedKey]>>,
    /// When a token's unknown `kid` last caused a fetch.
    last_kid_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time; others wait for its result instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished (successful or not), so a waiter can tell one happened.
    generation: AtomicU64,
}

impl Jwks {
    fn new(
        url: String,
        http: reqwest::Client,
        cache_for: Duration,
        min_refetch: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            url,
            http,
            cache_for,
            min_refetch,
            timeout,
            keys: RwLock::new(Arc::from(Vec::new())),
            last_kid_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    fn keys(&self) -> Arc<[PinnedKey]> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether a key with this `kid` is cached.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys().iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Fetches the set now (unless a fetch finished while this one waited for
    /// its turn) and, on success, replaces the cached keys.
    async fn fetch(&self, seen: Option<u64>) -> Result<(), JwksError> {
        let _turn = self.fetching.lock().await;
        if seen.is_some_and(|seen| self.generation.load(Ordering::Acquire) != seen) {
            return Ok(());
        }
        let result = self.download().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(keys) => {
                count(&METRICS.jwks_fetches, "ok");
                tracing::debug!(keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(keys);
                Ok(())
            }
            Err(e) => {
                count(&METRICS.jwks_fetches, "failed");
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the cached keys");
                Err(e)
            }
        }
    }

    async fn download(&self) -> Result<Vec<PinnedKey>, JwksError> {
        let mut response = self
            .http
            .get(&self.url)
            .timeout(self.timeout)
            .send()
            .await?
            .error_for_status()?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }

    /// Fetches once for a token whose `kid` is not cached: right away if no
    /// such fetch happened in the last `jwks_min_refetch_s`, or by waiting for
    /// a fetch already under way; otherwise not at all.
    pub async fn fetch_for_unknown_kid(&self, kid: &str) {
        if self.knows(kid) {
            return;
        }
        let seen = self.generation.load(Ordering::Acquire);
        let in_flight = self.fetching.try_lock().is_err();
        if !in_flight {
            let mut last = self
                .last_kid_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
                return;
            }
            *last = Some(Instant::now());
        }
        let _ = self.fetch(in_flight.then_some(seen)).await;
    }

    /// Fetches at once, then every `jwks_cache_s` (sooner after a failure)
    /// until `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wait = match self.fetch(None).await {
                Ok(()) => self.cache_for,
                Err(_) => self.cache_for.min(Duration::from_secs(10)),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

fn parse_jwks(body: &[u8]) -> Result<Vec<PinnedKey>, JwksError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body)?;
    let mut keys = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            tracing::warn!("JWKS: skipping an entry that is not a JWK");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        match pin_jwk(&jwk).and_then(|algorithm| {
            DecodingKey::from_jwk(&jwk)
                .map(|key| (algorithm, key))
                .map_err(|_| "bad key parameters")
        }) {
            Ok((algorithm, key)) => keys.push(PinnedKey {
                kid,
                algorithm,
                key,
            }),
            Err(why) => tracing::warn!(
                kid = kid.as_deref().unwrap_or(""),
                why,
                "JWKS: skipping a key"
            ),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

/// A layer in front of the routes: a token whose `kid` the JWKS cache does not
/// know gets one (rate-limited) fetch before the handler checks it. Looks
/// wherever a token may be: `Authorization: Bearer`, `?token=`, `ticket#`.
pub async fn fetch_unknown_keys(
    State(jwks): State<Arc<Jwks>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(kid) = unknown_kid(&jwks, &request) {
        jwks.fetch_for_unknown_kid(&kid).await;
    }
    next.run(request).await
}

fn unknown_kid(jwks: &Jwks, request: &Request) -> Option<String> {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let tickets = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("ticket#"));
    let query = request
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("token="));
    bearer
        .into_iter()
        .chain(tickets)
        .chain(query)
        .filter(|t| t.contains('.'))
        .find_map(|token| match peek_header(token) {
            Ok((algorithm, Some(kid)))
                if algorithm != Algorithm::HS256 && kid.len() <= 256 && !jwks.knows(&kid) =>
            {
                Some(kid)
            }
            _ => None,
        })
}

/// Room ids: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn valid_room_id(room: &str) -> bool {
    (1..=128).contains(&room.len())
        // Room ids name storage directories: never `.` or `..`.
        && room != "."
        && room != ".."
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Builds claims for a new token that lives `ttl`.
pub fn claims_for(room: &str, name: &str, sub: Option<&str>, role: Role, ttl: Duration) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Claims {
        sub: sub
            .map(str::to_owned)
            .unwrap_or_else(|| format!("user-{}", random_string(12))),
        room: room.to_owned(),
        name: Some(name.to_owned()),
        role,
        recording: None,
        exp: (now + ttl).as_secs(),
        iss: None,
        aud: None,
    }
}

/// Compares a presented admin key with the configured one in constant time.
pub fn admin_key_matches(configured: &str, presented: &str) -> bool {
    configured.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// A random alphanumeric string (secrets, tickets, ids).
pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new("0123456789abcdef0123", &AuthConfig::default())
    }

    #[test]
    fn minted_tokens_verify() {
        let v = verifier();
        let claims = claims_for(
            "room-1",
            "Ada",
            Some("ada"),
            Role::Moderator,
            Duration::from_secs(60),
        );
        let token = v.mint(&claims);
        assert_eq!(v.verify(&token).unwrap(), claims);
        assert!(claims.may_record());
    }

    #[test]
    fn forged_and_expired_tokens_fail() {
        let v = verifier();
        let other = Verifier::new("another-secret-0000000", &AuthConfig::default());
        let claims = claims_for("r", "Ada", None, Role::User, Duration::from_secs(60));
        assert_eq!(
            v.verify(&other.mint(&claims)),
            Err(AuthError::Invalid("bad signature".into()))
        );
        let mut old = claims.clone();
        old.exp = 1_000;
        assert_eq!(
            v.verify(&v.mint(&old)),
            Err(AuthError::Invalid("token expired".into()))
        );
        assert!(v.verify("not.a.token").is_err());
    }

    #[test]
    fn recording_claim_false_removes_the_right() {
        let mut claims = claims_for("r", "Ada", None, Role::Moderator, Duration::from_secs(60));
        claims.recording = Some(false);
        assert!(!claims.may_record());
        claims.role = Role::User;
        claims.recording = None;
        assert!(!claims.may_record());
    }

    #[test]
    fn room_ids() {
        assert!(valid_room_id("a.b_c-D9"));
        assert!(!valid_room_id(""));
        assert!(!valid_room_id("a/b"));
        assert!(!valid_room_id(".."));
        assert!(!valid_room_id("."));
        assert!(!valid_room_id(&"x".repeat(129)));
    }

    #[test]
    fn admin_key_comparison() {
        assert!(admin_key_matches("secret-key", "secret-key"));
        assert!(!admin_key_matches("secret-key", "secret-kez"));
        assert!(!admin_key_matches("secret-key", "secret"));
    }

    fn header(json: serde_json::Value) -> String {
        format!("{}.e30.", URL_SAFE_NO_PAD.encode(json.to_string()))
    }

    #[test]
    fn the_header_names_no_key_of_its_own_choosing() {
        assert_eq!(
            peek_header(&header(serde_json::json!({"alg": "none"}))),
            Err(Refusal::AlgorithmNotAllowed)
        );
        assert_eq!(
            peek_header(&header(serde_json::json!({"alg": "RS256", "kid": "k"}))),
            Ok((Algorithm::RS256, Some("k".into())))
        );
        assert_eq!(peek_header("%%%.e30."), Err(Refusal::Malformed));
        // Secret only: any asymmetric algorithm finds no key.
        let v = verifier();
        for alg in ["RS256", "ES256", "EdDSA", "HS384", "none"] {
            let token = header(serde_json::json!({"alg": alg}));
            assert_eq!(
                v.verify(&token),
                Err(AuthError::Invalid("algorithm not allowed".into())),
                "{alg}"
            );
        }
    }

    #[test]
    fn jwks_keys_are_pinned_by_their_type_and_curve() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "pss", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": x, "y": x},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": x},
            // Refused: a key whose alg contradicts its type, a symmetric key,
            // an encryption key, and something that is not a JWK.
            {"kty": "EC", "kid": "liar", "crv": "P-256", "alg": "RS256", "x": x, "y": x},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"hello": "world"}
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let pinned: Vec<(Option<&str>, Algorithm)> = keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.algorithm))
            .collect();
        assert_eq!(
            pinned,
            [
                (Some("rsa"), Algorithm::RS256),
                (Some("pss"), Algorithm::PS256),
                (Some("ec"), Algorithm::ES256),
                (Some("ed"), Algorithm::EdDSA),
            ]
        );
        let only_bad = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(matches!(
            parse_jwks(only_bad.to_string().as_bytes()),
            Err(JwksError::NoUsableKey)
        ));
        assert!(matches!(parse_jwks(b"[]"), Err(JwksError::Json(_))));
    }

    #[test]
    fn audience_may_be_a_list() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": "a", "room": "r", "exp": 1, "aud": ["x", "y"]
        }))
        .unwrap();
        assert_eq!(claims.aud.as_deref(), Some("x"));
    }
}
