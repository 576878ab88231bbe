//! Limits on what one client, one address and one room may hold: open
//! sockets (per server, per client IP, per room), the client IP behind trusted
//! proxies, how deeply a JSON text may nest, and how often one token `sub`
//! may join ([`JoinRate`], at the end).
//!
//! Every admitted socket holds a [`Slot`]; its `Drop` gives the counts back,
//! so no path out of a session (close, error, kick, panic, a failed upgrade)
//! can leak one. The counts are per process: in `[cluster]` mode each node
//! enforces them for the sockets it holds.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::config::ServerConfig;

pub use crate::ip_range::IpRange;

/// The client's address: the TCP peer, or, when the peer is one of
/// `trusted_proxies`, the rightmost `X-Forwarded-For` hop that is not itself a
/// trusted proxy. Hops to the left of that one are the client's own word and
/// are ignored; an unreadable hop ends the walk at the last address known.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpRange]) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|r| r.contains(ip));
    let mut client = peer.to_canonical();
    if !trusted(client) {
        return client;
    }
    // Several X-Forwarded-For headers are one list, in order (RFC 9110 §5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    None
}

/// Whether a JSON text nests objects and arrays more than `max` levels deep.
///
/// A byte scan that counts brackets outside strings, so a hostile frame is
/// refused before any parser recurses into it. It does not validate the
/// text: whatever passes still goes to serde.
pub fn json_too_deep(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Why a socket was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `[server] max_connections` sockets are open.
    #[error("the server holds as many connections as it allows ([server] max_connections)")]
    TooManyConnections,
    /// This client IP holds `[server] max_connections_per_ip` sockets.
    #[error("too many connections from this address ([server] max_connections_per_ip)")]
    TooManyConnectionsFromIp,
    /// The room holds `[server] max_participants_per_room` sockets.
    #[error("the room is full ([server] max_participants_per_room)")]
    RoomFull,
    /// `[server] max_http_connections` HTTP connections are open.
    #[error(
        "the server holds as many HTTP connections as it allows ([server] max_http_connections)"
    )]
    TooManyHttpConnections,
    /// This peer holds `[server] max_http_connections_per_ip` HTTP connections.
    #[error("too many HTTP connections from this address ([server] max_http_connections_per_ip)")]
    TooManyHttpConnectionsFromIp,
}

impl Refusal {
    /// The HTTP status it is answered with.
    pub fn status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::TooManyConnections | Self::TooManyHttpConnections => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::TooManyConnectionsFromIp | Self::TooManyHttpConnectionsFromIp => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::RoomFull => StatusCode::CONFLICT,
        }
    }

    /// The snake_case code of the JSON error and the metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyConnectionsFromIp => "too_many_connections_from_ip",
            Self::RoomFull => "room_full",
            Self::TooManyHttpConnections => "too_many_http_connections",
            Self::TooManyHttpConnectionsFromIp => "too_many_http_connections_from_ip",
        }
    }
}

/// The socket counts of one server, and the limits they are held to.
#[derive(Debug)]
pub struct Limits {
    /// Open sockets on this server.
    total: AtomicUsize,
    /// Open sockets per client IP (IPs with none are removed).
    per_ip: DashMap<IpAddr, usize>,
    /// Open sockets per room (rooms with none are removed).
    per_room: DashMap<Arc<str>, usize>,
    /// `[server] max_connections`; 0 = no limit.
    max_connections: usize,
    /// `[server] max_connections_per_ip`; 0 = no limit.
    max_per_ip: usize,
    /// `[server] per_ip_exempt`: client IPs the per-IP limit does not apply to.
    exempt: Vec<IpRange>,
    /// `[server] max_participants_per_room`; 0 = no limit.
    max_per_room: usize,
    /// `[server] trusted_proxies`.
    trusted_proxies: Vec<IpRange>,
    /// `[server] max_json_depth`.
    pub max_json_depth: usize,
    /// `[server] max_body_bytes`: the REST API's JSON bodies.
    pub max_body_bytes: usize,
    /// `[server] body_timeout_s`.
    pub body_timeout: Duration,
    /// Open HTTP connections (not upgraded) on this server.
    http_total: AtomicUsize,
    /// Open HTTP connections per peer address (addresses with none are removed).
    http_per_ip: DashMap<IpAddr, usize>,
    /// `[server] max_http_connections`.
    max_http: usize,
    /// `[server] max_http_connections_per_ip`; 0 = no limit.
    max_http_per_ip: usize,
}

impl Limits {
    /// The limits of `[server]`, with nothing open yet.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            per_room: DashMap::new(),
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            exempt: config.per_ip_exempt.clone(),
            max_per_room: config.max_participants_per_room,
            trusted_proxies: config.trusted_proxies.clone(),
            max_json_depth: config.max_json_depth,
            max_body_bytes: config.max_body_bytes,
            body_timeout: Duration::from_secs(config.body_timeout_s),
            http_total: AtomicUsize::new(0),
            http_per_ip: DashMap::new(),
            max_http: config.max_http_connections,
            max_http_per_ip: config.max_http_connections_per_ip,
        }
    }

    /// Fits the connection limits into `open_files` file descriptors: HTTP
    /// connections and WebSockets each keep their own share, so neither can
    /// starve the other, and [`RESERVED_FILES`] stay for the store, storage
    /// and outbound calls. Returns the WebSocket limit now in force.
    pub fn fit_open_files(&mut self, open_files: u64) -> usize {
        let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
        let room = open_files
            .saturating_sub(RESERVED_FILES)
            .saturating_sub(self.max_http);
        if self.max_connections == 0 || self.max_connections > room {
            self.max_connections = room.max(1);
        }
        self.max_connections
    }

    /// Takes an HTTP connection's slot for a TCP peer, before anything is
    /// read from it. Peers in `per_ip_exempt` or `trusted_proxies` (which
    /// carry many clients) skip the per-address count.
    pub fn admit_http(self: &Arc<Self>, peer: IpAddr) -> Result<Arc<HttpSlot>, Refusal> {
        let max = self.max_http;
        self.http_total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::TooManyHttpConnections)?;
        let mut slot = HttpSlot {
            limits: self.clone(),
            ip: None,
            held: std::sync::atomic::AtomicBool::new(true),
        };
        let peer = peer.to_canonical();
        let counted = !self.exempt.iter().any(|r| r.contains(peer))
            && !self.trusted_proxies.iter().any(|r| r.contains(peer));
        if self.max_http_per_ip > 0 && counted {
            if !increment(&self.http_per_ip, peer, self.max_http_per_ip) {
                return Err(Refusal::TooManyHttpConnectionsFromIp);
            }
            slot.ip = Some(peer);
        }
        crate::metrics::METRICS.http_connections.inc();
        Ok(Arc::new(slot))
    }

    /// Open HTTP connections (not upgraded) on this server.
    pub fn http_connections(&self) -> usize {
        self.http_total.load(Ordering::Acquire)
    }

    /// The client's address as these limits see it (see [`client_ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Takes a connection slot for a client, checking the server's and the
    /// address's limits. The slot gives itself back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let max = self.max_connections;
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::TooManyConnections)?;
        // From here the slot exists, so an early return gives the total back.
        let mut slot = Slot {
            limits: self.clone(),
            ip: None,
            room: None,
        };
        if self.max_per_ip > 0 && !self.exempt.iter().any(|r| r.contains(ip)) {
            increment(&self.per_ip, ip, self.max_per_ip)
                .then_some(())
                .ok_or(Refusal::TooManyConnectionsFromIp)?;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }

    /// Adds a room to an admitted slot, checking the room's limit.
    pub fn enter(&self, slot: &mut Slot, room: &str) -> Result<(), Refusal> {
        debug_assert!(slot.room.is_none(), "a socket belongs to one room");
        let max = self.max_per_room;
        // The slot shares the map's key: one room id per room, not per socket.
        let key = match self.per_room.get_mut(room) {
            Some(mut count) => {
                if max > 0 && *count >= max {
                    return Err(Refusal::RoomFull);
                }
                *count += 1;
                count.key().clone()
            }
            None => {
                let key: Arc<str> = Arc::from(room);
                if !increment(&self.per_room, key.clone(), max) {
                    return Err(Refusal::RoomFull);
                }
                key
            }
        };
        slot.room = Some(key);
        Ok(())
    }

    /// Open sockets on this server.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Adds one to `key`'s count unless it is at `max` (0 = no limit).
fn increment<K: std::hash::Hash + Eq + Clone>(map: &DashMap<K, usize>, key: K, max: usize) -> bool {
    let mut count = map.entry(key).or_insert(0);
    // At the limit the entry already held `max` (> 0), so a refusal leaves no empty entry.
    if max > 0 && *count >= max {
        return false;
    }
    *count += 1;
    true
}

/// Takes one off `key`'s count, removing it at zero.
fn decrement<K: std::hash::Hash + Eq>(map: &DashMap<K, usize>, key: K) {
    if let Entry::Occupied(mut entry) = map.entry(key) {
        let count = entry.get_mut();
        *count = count.saturating_sub(1);
        if *count == 0 {
            entry.remove();
        }
    }
}

/// File descriptors kept out of the connection limits: the store, recording
/// files, Redis, provider and webhook calls, logs.
pub const RESERVED_FILES: usize = 256;

/// One HTTP connection's share of the HTTP counts. It is given back when the
/// connection closes, or earlier, when the connection becomes a WebSocket and
/// takes a [`Slot`] instead ([`HttpSlot::release`]).
#[derive(Debug)]
pub struct HttpSlot {
    /// The counts to give back to.
    limits: Arc<Limits>,
    /// The peer counted against `max_http_connections_per_ip`, if it was.
    ip: Option<IpAddr>,
    /// Whether the share is still held.
    held: std::sync::atomic::AtomicBool,
}

impl HttpSlot {
    /// Gives the share back (once; later calls and the drop do nothing).
    pub fn release(&self) {
        if !self.held.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Some(ip) = self.ip {
            decrement(&self.limits.http_per_ip, ip);
        }
        self.limits.http_total.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::METRICS.http_connections.dec();
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Counts a limit reached or a connection closed by a timeout
/// (`onair_limits_reached_total{reason}`) and logs it, at most once per
/// 10 s (`LOG_EVERY`) for each reason, with how many went unlogged in between.
pub fn limit_reached(reason: &'static str, detail: &dyn std::fmt::Display) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static LOGGED: Mutex<Option<HashMap<&'static str, (Instant, u64)>>> = Mutex::new(None);
    crate::metrics::count(&crate::metrics::METRICS.limits_reached, reason);
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    let entry = logged
        .get_or_insert_with(HashMap::new)
        .entry(reason)
        .or_insert((Instant::now() - LOG_EVERY, 0));
    entry.1 += 1;
    if entry.0.elapsed() >= LOG_EVERY {
        tracing::warn!(reason, times = entry.1, last = %detail, "limit reached");
        *entry = (Instant::now(), 0);
    }
}

/// How often [`limit_reached`] logs one reason.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Its `Content-Length`, or what arrived, is over the limit.
    #[error("a body of this request may have at most {0} bytes")]
    TooLarge(usize),
    /// It did not arrive within `[server] body_timeout_s`.
    #[error("the body did not arrive within {0} s ([server] body_timeout_s)")]
    TimedOut(u64),
    /// The connection failed while it was read.
    #[error("the body could not be read")]
    Unreadable,
}

/// Whether a request declares a body longer than `limit` (`Content-Length`),
/// so it can be refused before anything is read.
pub fn declared_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Reads a whole body of at most `limit` bytes within `deadline`: the
/// declared length is checked before anything is read, the bytes as they
/// arrive.
pub async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, BodyError> {
    if declared_too_large(headers, limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let limited = http_body_util::Limited::new(body, limit);
    let read = tokio::time::timeout(deadline, http_body_util::BodyExt::collect(limited)).await;
    let timed_out = || {
        limit_reached("body_timeout", &"request body");
        BodyError::TimedOut(deadline.as_secs())
    };
    match read {
        Err(_) => Err(timed_out()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Ok(Err(e)) if stalled(e.as_ref()) => Err(timed_out()),
        Ok(Err(_)) => Err(BodyError::Unreadable),
    }
}

/// Whether a body error is the stall timeout every request body has
/// (`http::router`), wherever it sits in the error's chain.
pub fn stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// One admitted socket's share of the counts; dropping it gives them back.
#[derive(Debug)]
pub struct Slot {
    /// The counts to give back to.
    limits: Arc<Limits>,
    /// The client IP counted against `max_connections_per_ip`, if it was.
    ip: Option<IpAddr>,
    /// The room counted against `max_participants_per_room`, once entered.
    room: Option<Arc<str>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(room) = self.room.take() {
            decrement(&self.limits.per_room, room);
        }
        if let Some(ip) = self.ip.take() {
            decrement(&self.limits.per_ip, ip);
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Joins per token `sub` (`[server] joins_per_second_per_sub`, burst
/// `join_burst_per_sub`): a token bucket per `sub`, checked on `GET
/// /signaling` after the token is verified and before the upgrade, so that
/// reconnecting cannot get around the per-socket message rate.
///
/// With `[cluster] redis_url` the bucket lives in Redis and every node takes
/// from the same one. When Redis does not answer, the check **fails open to
/// this node's own bucket**: joins stay limited per node (at most the number
/// of nodes times the limit), and a Redis outage does not lock everyone out.
///
/// The local buckets are a `DashMap` keyed by a keyed hash of the `sub` (16
/// bytes an entry: every participant who joined recently has one). A bucket
/// that has filled up again is the same as none, so every [`JOIN_SWEEP`] a
/// task drops those: the map holds the subs that joined in the last seconds.
pub struct JoinRate {
    /// Joins per second; 0 = no limit.
    rate: f64,
    /// Bucket size.
    burst: f64,
    /// Hashes subs (randomly keyed: nobody can make two subs share a bucket).
    hasher: std::hash::RandomState,
    buckets: Arc<DashMap<u64, JoinBucket>>,
    /// The clock of [`JoinBucket::at_ms`].
    epoch: std::time::Instant,
}

/// How often full join buckets are dropped.
pub const JOIN_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Copy)]
struct JoinBucket {
    tokens: f32,
    /// Milliseconds since [`JoinRate::epoch`], wrapping (a bucket lives seconds, not 49 days).
    at_ms: u32,
}

impl JoinBucket {
    /// The tokens at `now_ms`.
    fn refilled(self, now_ms: u32, rate: f64, burst: f64) -> f64 {
        let elapsed = f64::from(now_ms.wrapping_sub(self.at_ms)) / 1000.0;
        (f64::from(self.tokens) + elapsed * rate).min(burst)
    }
}

/// A join refused by [`JoinRate`]: try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyJoins {
    /// How long until the `sub` may join again.
    pub retry_after: std::time::Duration,
}

impl JoinRate {
    /// The limiter for `[server] joins_per_second_per_sub` and
    /// `join_burst_per_sub`; inside a tokio runtime it starts its sweeping
    /// task, which ends when the limiter is dropped.
    pub fn new(server: &ServerConfig) -> Self {
        let joins = Self {
            rate: f64::from(server.joins_per_second_per_sub),
            burst: f64::from(server.join_burst_per_sub.max(1)),
            hasher: std::hash::RandomState::new(),
            buckets: Arc::new(DashMap::new()),
            epoch: std::time::Instant::now(),
        };
        if joins.rate > 0.0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let buckets = Arc::downgrade(&joins.buckets);
            let (rate, burst, epoch) = (joins.rate, joins.burst, joins.epoch);
            runtime.spawn(async move {
                let mut every = tokio::time::interval(JOIN_SWEEP);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(buckets) = buckets.upgrade() else {
                        return;
                    };
                    sweep_joins(
                        &buckets,
                        ms_since(epoch, std::time::Instant::now()),
                        rate,
                        burst,
                    );
                }
            });
        }
        joins
    }

    /// Takes one join for `sub`: from the shared bucket in Redis when
    /// `cluster` is given (this node's own if Redis fails), else from this node's.
    pub async fn take(
        &self,
        sub: &str,
        cluster: Option<&Arc<crate::cluster::Cluster>>,
    ) -> Result<(), TooManyJoins> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if let Some(cluster) = cluster {
            match cluster.take_join(sub, self.rate, self.burst).await {
                Ok(None) => return Ok(()),
                Ok(Some(retry_after)) => return Err(TooManyJoins { retry_after }),
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: join rate not shared; this node's bucket decides")
                }
            }
        }
        self.take_local(sub, std::time::Instant::now())
    }

    /// Takes one join for `sub` from this node's bucket.
    pub fn take_local(&self, sub: &str, now: std::time::Instant) -> Result<(), TooManyJoins> {
        use std::hash::BuildHasher;
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst);
        let now_ms = ms_since(self.epoch, now);
        let mut bucket = self
            .buckets
            .entry(self.hasher.hash_one(sub))
            .or_insert(JoinBucket {
                tokens: burst as f32,
                at_ms: now_ms,
            });
        let tokens = bucket.refilled(now_ms, rate, burst);
        bucket.at_ms = now_ms;
        if tokens >= 1.0 {
            bucket.tokens = (tokens - 1.0) as f32;
            Ok(())
        } else {
            bucket.tokens = tokens as f32;
            Err(TooManyJoins {
                retry_after: std::time::Duration::from_secs_f64((1.0 - tokens) / rate),
            })
        }
    }

    /// Drops the buckets that are full again at `now` (the sweeping task does this every [`JOIN_SWEEP`]).
    pub fn sweep(&self, now: std::time::Instant) {
        sweep_joins(
            &self.buckets,
            ms_since(self.epoch, now),
            self.rate,
            self.burst,
        );
    }

    /// Subs with a bucket on this node.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Milliseconds from `epoch` to `now`, wrapping at `u32`.
fn ms_since(epoch: std::time::Instant, now: std::time::Instant) -> u32 {
    now.saturating_duration_since(epoch).as_millis() as u32
}

/// Drops full buckets; gives the table's memory back when most of it is empty.
fn sweep_joins(buckets: &DashMap<u64, JoinBucket>, now_ms: u32, rate: f64, burst: f64) {
    buckets.retain(|_, bucket| bucket.refilled(now_ms, rate, burst) < burst);
    if buckets.capacity() > 64 && buckets.len() < buckets.capacity() / 4 {
        buckets.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ranges_parse_and_match() {
        let net: IpRange = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        let one: IpRange = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        let v6: IpRange = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(ranges(&["::/0"])[0].contains(ip("::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        assert_eq!(net.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.9, 203.0.113.5"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let trusted = ranges(&["10.0.0.0/8"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("192.0.2.1"), &headers, &trusted),
            ip("192.0.2.1")
        );
        // Behind two trusted proxies the rightmost untrusted hop is the client;
        // the spoofable hop to its left is not.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.5")
        );
        // Without the header the proxy itself is all we know.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        // An unreadable hop ends the walk.
        let mut junk = HeaderMap::new();
        junk.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, unknown, 10.0.0.3"),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &junk, &trusted), ip("10.0.0.3"));
        // Ports and brackets are tolerated.
        let mut ported = HeaderMap::new();
        ported.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:4711"),
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &ported, &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!json_too_deep(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_too_deep(br#"{"a":[1,{"b":[]}]}"#, 3));
        // Brackets and escaped quotes inside strings do not count.
        assert!(!json_too_deep(br#"{"a":"[[[[{{{{\"[[[["}"#, 1));
        assert!(!json_too_deep(br#"["\\",[]]"#, 2));
        assert!(json_too_deep(br#"["\\",[[]]]"#, 2));
        let deep = "[".repeat(100_000);
        assert!(json_too_deep(deep.as_bytes(), 32));
    }

    fn limits(total: usize, per_ip: usize, per_room: usize, exempt: &[&str]) -> Arc<Limits> {
        let config = ServerConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_participants_per_room: per_room,
            per_ip_exempt: ranges(exempt),
            ..ServerConfig::default()
        };
        Arc::new(Limits::new(&config))
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let limits = limits(3, 2, 1, &["127.0.0.0/8"]);
        let a = ip("192.0.2.1");
        let mut first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(
            limits.admit(a).unwrap_err(),
            Refusal::TooManyConnectionsFromIp
        );
        // The refused attempt gave its share of the total back.
        assert_eq!(limits.connections(), 2);
        let mut third = limits.admit(ip("127.0.0.5")).unwrap();
        assert_eq!(
            limits.admit(ip("192.0.2.2")).unwrap_err(),
            Refusal::TooManyConnections
        );
        limits.enter(&mut first, "r").unwrap();
        assert_eq!(
            limits.enter(&mut third, "r").unwrap_err(),
            Refusal::RoomFull
        );
        limits.enter(&mut third, "s").unwrap();
        drop(first);
        assert!(limits.per_room.get("r").is_none());
        let mut again = limits.admit(a).unwrap();
        limits.enter(&mut again, "r").unwrap();
        drop((again, third));
        drop(_second);
        assert_eq!(limits.connections(), 0);
        assert!(limits.per_ip.is_empty() && limits.per_room.is_empty());
    }

    #[test]
    fn zero_means_no_limit_and_exempt_ips_skip_the_per_ip_count() {
        let limits = limits(0, 1, 0, &["127.0.0.0/8", "::1"]);
        let slots: Vec<_> = (0..50)
            .map(|_| limits.admit(ip("127.0.0.1")).unwrap())
            .collect();
        let slots6: Vec<_> = (0..5).map(|_| limits.admit(ip("::1")).unwrap()).collect();
        assert_eq!(limits.connections(), 55);
        assert!(limits.per_ip.is_empty());
        drop((slots, slots6));
        assert_eq!(limits.connections(), 0);
    }

    #[test]
    fn joins_per_sub_are_a_token_bucket_and_full_buckets_are_swept() {
        let config = ServerConfig {
            joins_per_second_per_sub: 2,
            join_burst_per_sub: 10,
            ..ServerConfig::default()
        };
        let joins = JoinRate::new(&config);
        let t0 = std::time::Instant::now();
        for _ in 0..10 {
            assert!(joins.take_local("ada", t0).is_ok());
        }
        let refused = joins.take_local("ada", t0).unwrap_err();
        assert!(refused.retry_after > std::time::Duration::ZERO);
        assert!(refused.retry_after <= std::time::Duration::from_millis(500));
        // Another sub has its own bucket.
        assert!(joins.take_local("bob", t0).is_ok());
        // Half a second later one more join of ada's is allowed, and only one.
        let later = t0 + std::time::Duration::from_millis(500);
        assert!(joins.take_local("ada", later).is_ok());
        assert!(joins.take_local("ada", later).is_err());
        // Once their buckets are full again they are dropped.
        let much_later = t0 + std::time::Duration::from_secs(10);
        assert!(joins.take_local("carol", much_later).is_ok());
        joins.sweep(much_later);
        assert_eq!(joins.tracked(), 1, "only carol's bucket is left");
        // 0 = no limit.
        let off = JoinRate::new(&ServerConfig {
            joins_per_second_per_sub: 0,
            ..ServerConfig::default()
        });
        assert!((0..100).all(|_| off.take_local("ada", t0).is_ok()));
        assert_eq!(off.tracked(), 0);
    }
}
