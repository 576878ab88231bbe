//! Prometheus metrics for operators (`GET /metrics`, from `[metrics] allowed_ips` only).
//!
//! One process-wide set, so any module can count without threading a handle
//! through: the counters are atomics. Labels are small closed sets (reasons,
//! results, statuses); never room or participant ids.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label naming a reason or result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reason or result, snake_case.
    pub reason: String,
}

/// Labels of an HTTP request refused by a limit or check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRefusal {
    /// Why: `body_too_large`, `json_too_deep`, `origin_not_allowed`.
    pub reason: String,
    /// Which kind of endpoint: `api` (REST and pages) or `webhook` (providers' webhooks).
    pub endpoint: String,
}

/// A label naming a recording status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    /// The status entered.
    pub status: String,
}

/// Every metric onair exports.
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Joined participants.
    pub participants: Gauge,
    /// Live rooms.
    pub rooms: Gauge,
    /// Frames received from clients.
    pub frames_received: Counter,
    /// Frames queued to clients (one per recipient).
    pub frames_sent: Counter,
    /// Upgrades refused before the WebSocket opened, by reason.
    pub upgrades_refused: Family<Reason, Counter>,
    /// Participant tokens refused, by reason (`expired`, `bad_signature`,
    /// `algorithm_not_allowed`, `unknown_key`, `wrong_issuer`, …).
    pub tokens_refused: Family<Reason, Counter>,
    /// `[auth] jwks_url` fetches, by result (`ok`, `failed`).
    pub jwks_fetches: Family<Reason, Counter>,
    /// Client messages refused with an error event, by error (`json_too_deep`
    /// for frames nested deeper than `[server] max_json_depth`, answered `invalid_json`).
    pub client_errors: Family<Reason, Counter>,
    /// HTTP requests (other than the upgrade) refused by a limit or check.
    pub http_refused: Family<HttpRefusal, Counter>,
    /// Connections closed by the server, by reason.
    pub closed_by_server: Family<Reason, Counter>,
    /// Open HTTP connections (not upgraded to WebSockets).
    pub http_connections: Gauge,
    /// Limits reached and timeouts that closed an HTTP connection, by reason
    /// (`too_many_http_connections`, `too_many_http_connections_from_ip`,
    /// `open_files`, `header_timeout`, `idle_timeout`, `body_timeout`, and the
    /// upgrade refusals over a connection limit).
    pub limits_reached: Family<Reason, Counter>,
    /// Recording state transitions, by the status entered.
    pub recording_transitions: Family<Status, Counter>,
    /// Backend calls that failed, by call.
    pub backend_errors: Family<Reason, Counter>,
    /// Outbound webhook attempts, by result (`delivered`, `retry`, `dead`, `gone`).
    pub webhook_attempts: Family<Reason, Counter>,
    /// Recording notification POSTs (from the outbox), by result (`delivered`, `retry`, `dead`).
    pub notification_posts: Family<Reason, Counter>,
    /// Inbound provider webhooks, by result (`applied`, `duplicate`, `stale`, `rejected`, `ignored`).
    pub inbound_webhooks: Family<Reason, Counter>,
    /// Repairs made by reconciliation with the provider, by kind (`ended`:
    /// a recording the provider ended unheard; `stopped`: an egress onair no
    /// longer accounted for, asked to stop).
    pub reconciled: Family<Reason, Counter>,
    /// `[cluster]`: 1 while this node is connected to Redis and registered.
    pub cluster_up: Gauge,
    /// `[cluster]`: room events this node published to Redis.
    pub cluster_published: Counter,
    /// `[cluster]`: room events this node received from Redis.
    pub cluster_received: Counter,
    /// `[cluster]`: recording compare-and-sets lost to another writer and retried.
    pub cluster_cas_retries: Counter,
    /// `[cluster]`: reconnections to Redis after losing it.
    pub cluster_reconnects: Counter,
    /// `[cluster]`: dead nodes whose participants this node removed.
    pub cluster_nodes_reaped: Counter,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("onair");
        let m = Self {
            connections: Gauge::default(),
            participants: Gauge::default(),
            rooms: Gauge::default(),
            frames_received: Counter::default(),
            frames_sent: Counter::default(),
            upgrades_refused: Family::default(),
            tokens_refused: Family::default(),
            jwks_fetches: Family::default(),
            client_errors: Family::default(),
            http_refused: Family::default(),
            closed_by_server: Family::default(),
            http_connections: Gauge::default(),
            limits_reached: Family::default(),
            recording_transitions: Family::default(),
            backend_errors: Family::default(),
            webhook_attempts: Family::default(),
            notification_posts: Family::default(),
            inbound_webhooks: Family::default(),
            reconciled: Family::default(),
            cluster_up: Gauge::default(),
            cluster_published: Counter::default(),
            cluster_received: Counter::default(),
            cluster_cas_retries: Counter::default(),
            cluster_reconnects: Counter::default(),
            cluster_nodes_reaped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "participants",
            "Joined participants",
            m.participants.clone(),
        );
        registry.register("rooms", "Live rooms", m.rooms.clone());
        registry.register(
            "frames_received",
            "Frames received from clients",
            m.frames_received.clone(),
        );
        registry.register(
            "frames_sent",
            "Frames queued to clients, one per recipient",
            m.frames_sent.clone(),
        );
        registry.register(
            "http_connections",
            "Open HTTP connections, not upgraded to WebSockets",
            m.http_connections.clone(),
        );
        registry.register(
            "limits_reached",
            "Limits reached and timeouts that closed an HTTP connection, by reason",
            m.limits_reached.clone(),
        );
        registry.register(
            "upgrades_refused",
            "Upgrades refused before the WebSocket opened",
            m.upgrades_refused.clone(),
        );
        registry.register(
            "tokens_refused",
            "Participant tokens refused, by reason",
            m.tokens_refused.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Fetches of the [auth] jwks_url key set, by result",
            m.jwks_fetches.clone(),
        );
        registry.register(
            "client_errors",
            "Client messages answered with an error event",
            m.client_errors.clone(),
        );
        registry.register(
            "http_refused",
            "HTTP requests refused by a limit or check, by reason and endpoint kind",
            m.http_refused.clone(),
        );
        registry.register(
            "closed_by_server",
            "Connections the server closed",
            m.closed_by_server.clone(),
        );
        registry.register(
            "recording_transitions",
            "Recording state transitions by status entered",
            m.recording_transitions.clone(),
        );
        registry.register(
            "backend_errors",
            "Failed calls to the recording backend",
            m.backend_errors.clone(),
        );
        registry.register(
            "notification_posts",
            "Recording notification POST attempts by result",
            m.notification_posts.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Outbound webhook delivery attempts by result",
            m.webhook_attempts.clone(),
        );
        registry.register(
            "reconciled",
            "Repairs made by reconciliation with the recording provider",
            m.reconciled.clone(),
        );
        registry.register(
            "inbound_webhooks",
            "Inbound provider webhooks by result",
            m.inbound_webhooks.clone(),
        );
        // [cluster]
        registry.register(
            "cluster_up",
            "1 while this node is connected to the cluster's Redis",
            m.cluster_up.clone(),
        );
        registry.register(
            "cluster_published",
            "Room events published to the cluster",
            m.cluster_published.clone(),
        );
        registry.register(
            "cluster_received",
            "Room events received from the cluster",
            m.cluster_received.clone(),
        );
        registry.register(
            "cluster_cas_retries",
            "Recording compare-and-sets retried after another node wrote first",
            m.cluster_cas_retries.clone(),
        );
        registry.register(
            "cluster_reconnects",
            "Reconnections to the cluster's Redis",
            m.cluster_reconnects.clone(),
        );
        registry.register(
            "cluster_nodes_reaped",
            "Dead nodes whose participants this node removed",
            m.cluster_nodes_reaped.clone(),
        );
        Self { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Counts one refused HTTP request.
pub fn count_http_refusal(reason: &str, endpoint: &str) {
    METRICS
        .http_refused
        .get_or_create(&HttpRefusal {
            reason: reason.to_owned(),
            endpoint: endpoint.to_owned(),
        })
        .inc();
}

/// Counts one event under a reason label.
pub fn count(family: &Family<Reason, Counter>, reason: &str) {
    family
        .get_or_create(&Reason {
            reason: reason.to_owned(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_metrics() {
        count(&METRICS.client_errors, "invalid_json");
        METRICS.connections.inc();
        let text = METRICS.encode();
        assert!(text.contains("onair_connections "), "{text}");
        assert!(
            text.contains("onair_client_errors_total{reason=\"invalid_json\"}"),
            "{text}"
        );
        METRICS.connections.dec();
    }
}
