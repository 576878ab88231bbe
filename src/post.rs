//! One POST of a JSON body to a URL someone else chose (an owner's
//! notification `url`): the checks that keep it to public addresses, the
//! client that enforces them, and one attempt with its outcome. The outbox
//! retries it ([`PostPolicy`]).

use std::time::Duration;

use rand::Rng;

/// The longest pause between two attempts, whatever `Retry-After` says.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);

/// `base · 2^(n-1)` with ±20 % jitter.
pub fn backoff(base: Duration, n: u32) -> Duration {
    let exponent = n.saturating_sub(1).min(16);
    base.saturating_mul(1 << exponent)
        .min(MAX_PAUSE)
        .mul_f64(rand::rng().random_range(0.8..1.2))
}

/// How the outbox delivers notification POSTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostPolicy {
    /// Attempts in all (`[notifications] attempts`).
    pub attempts: u32,
    /// The first pause; each further one doubles (`[notifications] retry_base_ms`).
    pub retry_base: Duration,
    /// The bound on one attempt (`[notifications] timeout_s`).
    pub timeout: Duration,
    /// Only public addresses (`[notifications] allow_private_addresses = false`).
    pub public_only: bool,
}

impl Default for PostPolicy {
    fn default() -> Self {
        let n = crate::config::NotificationsConfig::default();
        Self {
            attempts: n.attempts.max(1),
            retry_base: Duration::from_millis(n.retry_base_ms),
            timeout: Duration::from_secs(n.timeout_s.max(1)),
            public_only: !n.allow_private_addresses,
        }
    }
}

impl PostPolicy {
    /// The pause after `made` failed attempts: what the receiver asked
    /// (`Retry-After`), or `retry_base · 2^(made-1)` ±20 %, at most 10 minutes.
    pub fn pause(&self, made: u32, asked: Option<Duration>) -> Duration {
        asked
            .unwrap_or_else(|| backoff(self.retry_base, made))
            .min(MAX_PAUSE)
    }
}

/// What one notification POST attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// A 2xx answer.
    Delivered,
    /// Worth another try (5xx, 408, 429, a timeout, no connection), after
    /// the pause the receiver named, if it did.
    Retry(String, Option<Duration>),
    /// Another answer (4xx): trying again would not help.
    GiveUp(String),
}

/// One attempt to POST a notification's metadata (`payload`, JSON) to `url`.
/// Errors never name the URL (it may carry a token).
/// Whether `ip` is an address on the public internet: not loopback,
/// private, carrier-grade NAT, link-local (cloud metadata services live
/// there), unique-local, multicast, broadcast, documentation or unspecified.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Why an owner's URL may not be POSTed to.
const NOT_PUBLIC: &str = "the url's host is a loopback, private or link-local address \
     ([notifications] allow_private_addresses is off)";

/// Checks that `url`'s host is, or resolves only to, public addresses.
/// The connection itself goes through [`public_only_client`], whose resolver
/// repeats the check, so a name that changes its answer in between gains nothing.
pub async fn check_public_destination(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("unusable url: {e}"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let Some(host) = parsed.host_str() else {
        return Err("the url has no host".into());
    };
    // An IP literal (IPv6 ones in brackets) needs no lookup.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::IpAddr> = match literal.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve the url's host: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() || !addrs.iter().all(|ip| is_public(*ip)) {
        return Err(NOT_PUBLIC.into());
    }
    Ok(())
}

/// Resolves names to their public addresses only (see [`is_public`]).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.is_empty() || !addrs.iter().all(|a| is_public(a.ip())) {
                return Err(NOT_PUBLIC.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for owners' URLs when only public addresses are allowed: its
/// resolver refuses non-public answers, and it follows no redirect (a
/// redirect could name a private address literally, which no resolver sees).
pub fn public_only_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("onair/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(PublicOnly))
        .build()
        .expect("the TLS backend initializes")
}

pub async fn post_once(
    http: &reqwest::Client,
    url: &str,
    payload: &str,
    timeout: Duration,
) -> PostOutcome {
    let sent = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload.to_owned())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => PostOutcome::Delivered,
        Ok(response) => {
            let status = response.status();
            let error = format!("HTTP {}", status.as_u16());
            if status.is_server_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            {
                PostOutcome::Retry(error, retry_after(&response))
            } else {
                PostOutcome::GiveUp(error)
            }
        }
        Err(e) if e.is_timeout() => PostOutcome::Retry("timed out".into(), None),
        Err(e) => PostOutcome::Retry(e.without_url().to_string(), None),
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
