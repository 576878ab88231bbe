//! Outbound webhooks, Standard Webhooks style, from a durable outbox.
//!
//! An event becomes one outbox row per subscribed endpoint, written in the
//! same SQLite transaction as the change that caused it. A single delivery
//! task sends due rows with `webhook-id` (stable across retries),
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`,
//! retries non-2xx answers and timeouts with exponential backoff and jitter
//! (honouring `Retry-After`), disables an endpoint that answers 410, and gives
//! a row up as dead after the last attempt. A restart resumes where it left off.
//!
//! The same outbox carries the Temasys-style recording notifications
//! (`notifications`): rows of kind `notification`, a plain JSON POST of the
//! recording's metadata to the owner's `url`, written with the catalog entry
//! and retried with `[notifications]`' attempts, backoff and timeout.
//!
//! Where the rows live is chosen at start ([`Rows`]): a single node keeps
//! them in its SQLite store; a cluster (`[cluster] redis_url`) in Redis
//! ([`crate::cluster::outbox`]), where every node runs this delivery loop,
//! claims due rows for a lease, and takes over the rows of a node that died.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::cluster::ClusterError;
use crate::cluster::outbox::Finish;
use crate::config::WebhooksConfig;
pub use crate::config::{EVENT_TYPES, decode_secret};
use crate::delivery::{Delivery, DeliveryKind, NewDelivery};
use crate::metrics::{METRICS, count};
use crate::post::{
    PostOutcome, PostPolicy, check_public_destination, post_once, public_only_client,
};
use crate::store::{Store, StoreError};

struct Endpoint {
    url: String,
    key: Vec<u8>,
    events: Vec<String>,
}

/// Why the outbox could not read or write its rows.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The single node's SQLite store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster's Redis, where the rows are, failed or is away; rows not
    /// recorded come due again (when the next pass or a claim's lease ends).
    #[error("the outbox in the cluster's Redis: {0}")]
    Cluster(#[from] ClusterError),
}

/// Rows claimed per pass.
const BATCH: usize = 32;
/// Cluster mode: how often a node looks for rows due (others' rows included,
/// e.g. those of a node that died) when nothing woke it sooner.
const POLL: Duration = Duration::from_secs(1);
/// Cluster mode: a claim lasts twice as long as one attempt may take, and this more.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Where the outbox rows live, chosen at start.
pub enum Rows {
    /// A single node: its SQLite store.
    Local(Arc<Store>),
    /// A cluster: Redis, shared by every node.
    Shared {
        /// The cluster's Redis.
        cluster: Arc<Cluster>,
        /// The lease end of each row this node has claimed (its outcome names it).
        leases: Mutex<HashMap<i64, i64>>,
        /// When this node started (ms): rows it held before are let go.
        started_ms: u64,
    },
}

/// The outbox: turns events into deliveries and delivers them.
pub struct Outbox {
    endpoints: Vec<Endpoint>,
    disabled: Mutex<HashSet<String>>,
    rows: Rows,
    wake: Notify,
    max_attempts: u32,
    retry_base: Duration,
    timeout: Duration,
    /// `[webhooks] keep_days`: how long finished rows stay (`None`: forever).
    keep: Option<Duration>,
    /// When finished rows were last pruned.
    pruned: Mutex<Option<std::time::Instant>>,
    /// How notification rows are delivered (set by the catalog from `[notifications]`).
    notification_policy: OnceLock<PostPolicy>,
    /// The client for owners' URLs when only public addresses are allowed.
    public_client: OnceLock<reqwest::Client>,
}

/// The `webhook-signature` value for one message.
pub fn sign(key: &[u8], message_id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Outbox {
    /// The outbox for the configured endpoints (secrets were checked by the
    /// config), its rows in `store`, or in the `cluster`'s Redis if there is one.
    pub fn new(config: &WebhooksConfig, store: Arc<Store>, cluster: Option<Arc<Cluster>>) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint {
                url: e.url.clone(),
                key: decode_secret(&e.secret).unwrap_or_default(),
                events: e.events.clone(),
            })
            .collect();
        let rows = match cluster {
            // The disabled endpoints come with each claim; held rows of a
            // dead node (or of this one's previous life) go with a claim too.
            Some(cluster) => Rows::Shared {
                cluster,
                leases: Mutex::new(HashMap::new()),
                started_ms: u64::try_from(now_ms()).unwrap_or_default(),
            },
            None => Rows::Local(store),
        };
        let mut disabled = HashSet::new();
        if let Rows::Local(store) = &rows {
            disabled.extend(store.disabled_endpoints().unwrap_or_default());
            // Rows held by a notification task that died with the previous
            // process go as they were written (their retrievalUrl is onair's).
            match store.release_all_held() {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "released notification POSTs held before a restart"),
                Err(e) => tracing::error!(error = %e, "cannot release held notification POSTs"),
            }
        }
        Self {
            endpoints,
            disabled: Mutex::new(disabled),
            rows,
            wake: Notify::new(),
            max_attempts: config.max_attempts,
            retry_base: Duration::from_millis(config.retry_base_ms),
            timeout: Duration::from_secs(config.timeout_s),
            keep: (config.keep_days > 0).then(|| Duration::from_secs(config.keep_days * 24 * 3600)),
            pruned: Mutex::new(None),
            notification_policy: OnceLock::new(),
            public_client: OnceLock::new(),
        }
    }

    /// Delivers notification rows with `policy` (the first call wins;
    /// without one, `[notifications]`' defaults apply).
    pub fn deliver_notifications_with(&self, policy: PostPolicy) {
        let _ = self.notification_policy.set(policy);
    }

    /// The deliveries an event causes (none without subscribed endpoints).
    pub fn deliveries(&self, event_type: &str, data: Value) -> Vec<NewDelivery> {
        let disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        let subscribed: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.events.is_empty() || e.events.iter().any(|t| t == event_type))
            .filter(|e| !disabled.contains(&e.url))
            .collect();
        if subscribed.is_empty() {
            return Vec::new();
        }
        let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let payload = json!({
            "type": event_type,
            "timestamp": crate::protocol::now_rfc3339(),
            "data": data,
        })
        .to_string();
        subscribed
            .into_iter()
            .map(|e| NewDelivery {
                kind: DeliveryKind::Webhook,
                held: false,
                message_id: message_id.clone(),
                endpoint: e.url.clone(),
                event_type: event_type.to_owned(),
                payload: payload.clone(),
            })
            .collect()
    }

    /// Tells the delivery task that new rows were written.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether the rows live in the cluster's Redis (else in the SQLite store).
    pub fn is_shared(&self) -> bool {
        matches!(self.rows, Rows::Shared { .. })
    }

    /// Writes rows on their own (a cause that did not write them itself) and
    /// wakes the delivery task.
    pub async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match &self.rows {
            Rows::Local(store) => store.enqueue(&deliveries).map_err(OutboxError::from)?,
            Rows::Shared { cluster, .. } => cluster
                .outbox_enqueue(deliveries)
                .await
                .map_err(OutboxError::from)?,
        }
        self.wake();
        Ok(())
    }

    /// [`Outbox::enqueue`] for synchronous callers: at once into SQLite; in
    /// a task into Redis (errors are logged, naming `what`).
    pub fn enqueue_detached(self: &Arc<Self>, deliveries: Vec<NewDelivery>, what: &'static str) {
        if deliveries.is_empty() {
            return;
        }
        match &self.rows {
            Rows::Local(store) => match store.enqueue(&deliveries) {
                Ok(()) => self.wake(),
                Err(e) => tracing::error!(error = %e, "cannot queue the {what}"),
            },
            Rows::Shared { .. } => {
                let outbox = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = outbox.enqueue(deliveries).await {
                        tracing::error!(error = %e, "cannot queue the {what} in the cluster's outbox");
                    }
                });
            }
        }
    }

    /// Lets a held row go, with a new payload if given, and wakes the
    /// delivery task; `false` if no row of `message_id` was held.
    pub async fn release_held(
        &self,
        message_id: &str,
        payload: Option<&str>,
    ) -> Result<bool, OutboxError> {
        let released = match &self.rows {
            Rows::Local(store) => store
                .release_held(message_id, payload)
                .map_err(OutboxError::from)?,
            Rows::Shared { cluster, .. } => cluster
                .outbox_release_held(message_id, payload)
                .await
                .map_err(OutboxError::from)?,
        };
        self.wake();
        Ok(released)
    }

    /// How long a claim lasts: comfortably more than one attempt may take.
    fn lease(&self) -> Duration {
        let notification = self
            .notification_policy
            .get()
            .copied()
            .unwrap_or_default()
            .timeout;
        self.timeout.max(notification) * 2 + LEASE_MARGIN
    }

    /// The rows due now (claimed, in cluster mode) and when the next one is.
    async fn claim_due(&self) -> Result<(Vec<Delivery>, Option<i64>), OutboxError> {
        match &self.rows {
            Rows::Local(store) => {
                let due = store
                    .due_deliveries(now_ms(), BATCH)
                    .map_err(OutboxError::from)?;
                Ok((due, None))
            }
            Rows::Shared {
                cluster,
                leases,
                started_ms,
            } => {
                if !cluster.is_ready() {
                    // Not connected (yet, or any more): the next poll tries again.
                    return Ok((Vec::new(), None));
                }
                let claimed = cluster
                    .outbox_claim(self.lease(), BATCH, *started_ms, self.keep)
                    .await
                    .map_err(OutboxError::from)?;
                *self.disabled.lock().unwrap_or_else(|e| e.into_inner()) =
                    claimed.disabled.into_iter().collect();
                let mut leases = leases.lock().unwrap_or_else(|e| e.into_inner());
                for row in &claimed.rows {
                    leases.insert(row.seq, claimed.lease_end);
                }
                Ok((claimed.rows, claimed.next_due_ms))
            }
        }
    }

    /// When the next row is due, if any is known.
    fn next_due_ms(&self) -> Option<i64> {
        match &self.rows {
            Rows::Local(store) => store.next_due_ms().ok().flatten(),
            Rows::Shared { .. } => None,
        }
    }

    /// Records the outcome of an attempt at a row (in a cluster, only while
    /// this node's claim on it holds).
    async fn finish(&self, seq: i64, outcome: Finish) {
        let done = match &self.rows {
            Rows::Local(store) => match outcome {
                Finish::Delivered => store.delivered(seq),
                Finish::Retry(error, at) => store.failed_attempt(seq, &error, Some(at)),
                Finish::Dead(error) => store.failed_attempt(seq, &error, None),
            }
            .map_err(OutboxError::from),
            Rows::Shared {
                cluster, leases, ..
            } => {
                let lease_end = leases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&seq);
                match lease_end {
                    Some(lease_end) => match cluster
                        .outbox_finish(seq, lease_end, outcome, self.keep)
                        .await
                    {
                        Ok(true) => Ok(()),
                        Ok(false) => {
                            tracing::warn!(
                                seq,
                                "outbox: a claim lapsed before its attempt ended; the row's new holder decides"
                            );
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    },
                    None => Ok(()),
                }
            }
        };
        if let Err(e) = done {
            // The row comes due again (a lapsed claim, or the next pass).
            tracing::error!(seq, error = %e, "outbox: cannot record a delivery attempt");
        }
    }

    /// Disables an endpoint that answered 410 Gone (for every node, in a cluster).
    async fn disable(&self, seq: i64, endpoint: &str) {
        let done = match &self.rows {
            Rows::Local(store) => store.disable_endpoint(endpoint).map_err(OutboxError::from),
            Rows::Shared {
                cluster, leases, ..
            } => {
                leases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&seq);
                cluster
                    .outbox_disable(endpoint, self.keep)
                    .await
                    .map_err(OutboxError::from)
            }
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "outbox: cannot disable an endpoint");
        }
    }

    /// Delivers due rows until `shutdown`, then makes one last bounded pass.
    pub async fn run(self: Arc<Self>, http: reqwest::Client, shutdown: CancellationToken) {
        if let Rows::Shared { cluster, .. } = &self.rows {
            // Another node wrote rows: look at once rather than at the next poll.
            let outbox = self.clone();
            cluster.outbox_wakes(move || outbox.wake(), shutdown.clone());
        }
        loop {
            let next = self.deliver_due(&http).await.or_else(|| self.next_due_ms());
            self.prune();
            // A cluster looks again soon: other nodes write rows too.
            let most = if self.is_shared() {
                POLL
            } else {
                Duration::from_secs(60)
            };
            let wait = match next {
                Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64).min(most),
                None => most,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.deliver_due(&http)).await;
        self.give_back().await;
    }

    /// Cluster mode, stopping: the rows claimed but not attempted to the end
    /// are due again at once for the other nodes (not after the lease).
    async fn give_back(&self) {
        let Rows::Shared {
            cluster, leases, ..
        } = &self.rows
        else {
            return;
        };
        let claims: Vec<(i64, i64)> = leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        match cluster.outbox_give_back(claims).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                n,
                "outbox: claimed deliveries given back for the other nodes"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot give claimed deliveries back; they come due when their lease ends")
            }
        }
    }

    /// At most hourly: deletes delivered and dead rows older than `[webhooks]
    /// keep_days`, so the outbox does not grow without bound.
    fn prune(&self) {
        // Redis expires finished rows itself (see `crate::cluster::outbox`).
        let (Some(keep), Rows::Local(store)) = (self.keep, &self.rows) else {
            return;
        };
        let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        if pruned.is_some_and(|at| at.elapsed() < Duration::from_secs(3600)) {
            return;
        }
        *pruned = Some(std::time::Instant::now());
        drop(pruned);
        let before =
            humantime::format_rfc3339_millis(std::time::SystemTime::now() - keep).to_string();
        match store.prune_outbox(&before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                n,
                "outbox: finished rows older than [webhooks] keep_days deleted"
            ),
            Err(e) => tracing::error!(error = %e, "outbox: cannot delete finished rows"),
        }
    }

    /// Delivers every row due; returns when the next one is due, if known.
    async fn deliver_due(&self, http: &reqwest::Client) -> Option<i64> {
        loop {
            let (due, next) = match self.claim_due().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot read due deliveries");
                    return None;
                }
            };
            if due.is_empty() {
                return next;
            }
            let attempts = due.iter().map(|d| self.attempt(http, d));
            futures_util::future::join_all(attempts).await;
        }
    }

    async fn attempt(&self, http: &reqwest::Client, delivery: &Delivery) {
        if delivery.kind == DeliveryKind::Notification {
            return self.notify(http, delivery).await;
        }
        let Some(endpoint) = self.endpoints.iter().find(|e| e.url == delivery.endpoint) else {
            // The endpoint was removed from the configuration: nobody wants it any more.
            self.finish(
                delivery.seq,
                Finish::Dead("endpoint no longer configured".to_owned()),
            )
            .await;
            return;
        };
        let timestamp = now_ms() / 1000;
        let signature = sign(
            &endpoint.key,
            &delivery.message_id,
            timestamp,
            &delivery.payload,
        );
        let sent = http
            .post(&endpoint.url)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let (error, retry_after) = match sent {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(endpoint = %endpoint.url, event = %delivery.event_type, "webhook delivered");
                self.finish(delivery.seq, Finish::Delivered).await;
                count(&METRICS.webhook_attempts, "delivered");
                return;
            }
            Ok(response) if response.status() == reqwest::StatusCode::GONE => {
                tracing::warn!(endpoint = %endpoint.url, "webhook endpoint answered 410 Gone: disabling it");
                self.disabled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(endpoint.url.clone());
                self.disable(delivery.seq, &endpoint.url).await;
                count(&METRICS.webhook_attempts, "gone");
                return;
            }
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                (format!("HTTP {}", response.status().as_u16()), retry_after)
            }
            Err(e) if e.is_timeout() => ("timed out".to_owned(), None),
            Err(e) => (format!("request failed: {}", without_url(&e)), None),
        };
        let attempts = delivery.attempts + 1;
        let next = (attempts < self.max_attempts).then(|| {
            let delay = retry_after.unwrap_or_else(|| self.backoff(attempts));
            now_ms() + delay.as_millis() as i64
        });
        count(
            &METRICS.webhook_attempts,
            if next.is_none() { "dead" } else { "retry" },
        );
        if next.is_none() {
            tracing::warn!(endpoint = %endpoint.url, event = %delivery.event_type, %error, attempts, "webhook dead after the last attempt");
        } else {
            tracing::info!(endpoint = %endpoint.url, event = %delivery.event_type, %error, attempts, "webhook attempt failed; will retry");
        }
        self.finish(delivery.seq, failed(error, next)).await;
    }

    /// One attempt of a notification POST (`notifications::post_once`).
    async fn notify(&self, http: &reqwest::Client, delivery: &Delivery) {
        let policy = self.notification_policy.get().copied().unwrap_or_default();
        // The owner's URL may carry a token: logs name its host only.
        let host = reqwest::Url::parse(&delivery.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let outcome = if policy.public_only {
            // Owners choose their URL: never into onair's own network.
            match check_public_destination(&delivery.endpoint).await {
                Ok(()) => {
                    let client = self.public_client.get_or_init(public_only_client);
                    post_once(
                        client,
                        &delivery.endpoint,
                        &delivery.payload,
                        policy.timeout,
                    )
                    .await
                }
                Err(refused) => PostOutcome::GiveUp(refused),
            }
        } else {
            post_once(http, &delivery.endpoint, &delivery.payload, policy.timeout).await
        };
        let attempts = delivery.attempts + 1;
        let (error, next) = match outcome {
            PostOutcome::Delivered => {
                tracing::info!(%host, attempts, "recording notification POSTed");
                self.finish(delivery.seq, Finish::Delivered).await;
                count(&METRICS.notification_posts, "delivered");
                return;
            }
            PostOutcome::GiveUp(error) => (error, None),
            PostOutcome::Retry(error, asked) => {
                let next = (attempts < policy.attempts)
                    .then(|| now_ms() + policy.pause(attempts, asked).as_millis() as i64);
                (error, next)
            }
        };
        if next.is_some() {
            tracing::info!(%host, %error, attempts, "recording notification POST failed; will retry");
            count(&METRICS.notification_posts, "retry");
        } else {
            tracing::warn!(%host, %error, attempts, "recording notification POST failed; giving up");
            count(&METRICS.notification_posts, "dead");
        }
        self.finish(delivery.seq, failed(error, next)).await;
    }

    /// `base · 2^(n-1)`, capped at an hour, with ±20 % jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        let base = self
            .retry_base
            .saturating_mul(1 << exponent)
            .min(Duration::from_secs(3600));
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }
}

/// A failed attempt's outcome: another at `next`, or none.
fn failed(error: String, next: Option<i64>) -> Finish {
    match next {
        Some(at) => Finish::Retry(error, at),
        None => Finish::Dead(error),
    }
}

/// reqwest errors name the URL; endpoint URLs may carry tokens, so drop it.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<endpoint>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_vector() {
        // The example from the Standard Webhooks specification.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_must_look_like_secrets() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
    }
}
