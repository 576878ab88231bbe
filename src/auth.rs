//! Who may connect: participant JWTs, single-use tickets, and the admin key.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
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
    /// Audience, checked when `[auth] audience` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// Whether this participant may start and stop recordings.
    pub fn may_record(&self) -> bool {
        self.role == Role::Moderator && self.recording != Some(false)
    }
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

/// Checks participant tokens and mints them with the same secret.
pub struct Verifier {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for HS256 tokens with `secret`, checking `iss`/`aud` when configured.
    pub fn new(secret: &str, config: &AuthConfig) -> Self {
        // The algorithm is pinned: a token that names another one is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_s;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies a token and its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(describe_jwt_error(&e)))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("claim `sub` must not be empty".into()));
        }
        Ok(claims)
    }

    /// Signs claims with the configured secret.
    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }
}

fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not allowed".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token".into(),
        _ => "invalid token".into(),
    }
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

/// Single-use tickets (OpenTalk's `ticket#…` subprotocol), each good for a short time.
pub struct Tickets {
    issued: DashMap<String, (Claims, Instant)>,
    ttl: Duration,
}

impl Tickets {
    /// A ticket store whose tickets expire after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            issued: DashMap::new(),
            ttl,
        }
    }

    /// Issues a ticket for verified claims.
    pub fn issue(&self, claims: Claims) -> String {
        let ticket = random_string(48);
        self.issued
            .insert(ticket.clone(), (claims, Instant::now() + self.ttl));
        ticket
    }

    /// Redeems a ticket: it works once, and only before it expires.
    pub fn redeem(&self, ticket: &str) -> Option<Claims> {
        let (_, (claims, expires)) = self.issued.remove(ticket)?;
        (Instant::now() < expires).then_some(claims)
    }

    /// Forgets expired tickets that were never redeemed.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.issued.retain(|_, (_, expires)| *expires > now);
    }

    /// The ticket lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
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
    fn tickets_are_single_use_and_expire() {
        let tickets = Tickets::new(Duration::from_secs(30));
        let claims = claims_for("r", "Ada", None, Role::User, Duration::from_secs(60));
        let t = tickets.issue(claims.clone());
        assert_eq!(tickets.redeem(&t), Some(claims.clone()));
        assert_eq!(tickets.redeem(&t), None);
        let short = Tickets::new(Duration::ZERO);
        let t = short.issue(claims);
        assert_eq!(short.redeem(&t), None);
    }

    #[test]
    fn admin_key_comparison() {
        assert!(admin_key_matches("secret-key", "secret-key"));
        assert!(!admin_key_matches("secret-key", "secret-kez"));
        assert!(!admin_key_matches("secret-key", "secret"));
    }
}
