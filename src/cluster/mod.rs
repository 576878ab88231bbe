//! Several onair processes acting as one over Redis (SPEC §7).
//!
//! With `[cluster] redis_url`, a room's members (their public [`Participant`]
//! data, consent included) and its recording state live in Redis, and every
//! event of a room travels over Redis pub/sub, so each node forwards it to its
//! own sockets only. This module does the Redis I/O; the room engine keeps the
//! local sockets and runs the pure [`crate::recording::step`] against the state
//! read from here, writing it back with a compare-and-set ([`scripts::CAS`]).
//!
//! **One channel per room** (`onair:room:<id>:events`): a node subscribes
//! only to the rooms it has sockets in, so it receives exactly the traffic it
//! forwards, and the order of one room's events is the order Redis ran the
//! scripts that published them. A sharded scheme (N channels, rooms hashed onto
//! them) would bound the number of subscriptions but make every node receive
//! and drop the events of rooms it does not host; a Redis subscription is cheap
//! and onair's rooms are few and long-lived compared with their events.
//!
//! **Failure.** Each node writes `onair:node:<id>` with a TTL every
//! `heartbeat_s` and lists its participants in `onair:node:<id>:participants`.
//! Every node sweeps: a node whose heartbeat key expired is reaped by exactly
//! one survivor ([`scripts::REAP`]), which removes its participants and
//! publishes `left` for each. When Redis is lost, `/readyz` answers 503, every
//! local socket gets a `control` `error` `cluster_unavailable`, and the node
//! reconnects with backoff, re-registers its participants and resubscribes.
//!
//! Redis I/O never happens under a room lock; every round trip has a timeout.
//!
//! **A runtime of its own.** The room API is async: a join, a leave or a
//! command awaits its Redis round trips, and no thread ever blocks on Redis.
//! The Redis connections, their timers and the pub/sub loop still run on a
//! small dedicated runtime ([`IoRuntime`]): a node busy with a join storm
//! cannot starve the task that drives the very connection every join waits
//! on, and heartbeats keep their rhythm. Every round trip has a timeout
//! (`command_timeout_s`).
//! A standalone Redis (or a primary) is assumed, not Redis Cluster: the
//! scripts touch keys of several rooms.

mod migrate;
pub mod outbox;
pub mod persistence;
mod receipts;
pub use receipts::EgressAdmission;
pub mod scripts;
pub mod wire;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{Client, Script};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::metrics::METRICS;
use crate::protocol::Participant;
use crate::recording::{Deadline, State};

/// Why a cluster operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not connected to Redis (yet, or any more).
    #[error("the cluster's Redis is unavailable")]
    Unavailable,
    /// A round trip took longer than `[cluster] command_timeout_s`.
    #[error("the cluster's Redis did not answer in time")]
    Timeout,
    /// Redis answered with an error, or the connection broke.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The answer did not have the expected shape.
    #[error("unexpected data in Redis: {0}")]
    Data(&'static str),
    /// The cluster's own runtime could not start (threads exhausted?).
    #[error("cannot start the cluster's runtime: {0}")]
    IoRuntime(std::io::Error),
}

/// What the cluster needs from the node's local rooms.
pub trait Host: Send + Sync + 'static {
    /// A pub/sub message for `room` arrived.
    fn deliver(self: &Arc<Self>, room: &str, message: wire::Message<'_>);
    /// Every local participant, by room, to re-register after a reconnect.
    fn local_members(&self) -> Vec<(String, Participant)>;
    /// Whether this node has sockets in `room`.
    fn is_local(&self, room: &str) -> bool;
    /// Redis was lost: tell the sockets.
    fn connection_lost(&self);
    /// A reaped node left these rooms empty.
    fn rooms_emptied(self: &Arc<Self>, rooms: Vec<String>);
    /// The start or stop of `recording_id` in `room` was not confirmed in
    /// time and the node that armed its deadline did not handle it (it died):
    /// this node feeds the deadline in instead.
    fn deadline_overdue(self: &Arc<Self>, room: String, recording_id: String, deadline: Deadline);
}

/// The state of a room's recording in Redis.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// Bumped by every write; the compare-and-set compares it.
    pub version: u64,
    /// The state (inactive when never written).
    pub state: State,
    /// Whether the key exists at all.
    pub exists: bool,
}

/// What the compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written: this node won the transition.
    Won,
    /// Someone else wrote first: read again and retry.
    Moved,
    /// The room was required to be empty and is not.
    NotEmpty,
}

/// What `join` sees, atomically with its own `joined`.
#[derive(Debug, Clone)]
pub struct JoinView {
    /// The members, in joining order, the joiner included.
    pub members: Vec<Participant>,
    /// The recording state.
    pub state: State,
}

enum SubRequest {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// Queued subscription changes; joins wait for theirs, so this is small.
const SUB_QUEUE: usize = 1024;
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a shared LiveKit egress is remembered (as long as the store keeps it).
const SHARED_EGRESS_TTL_S: u64 = 48 * 3600;
/// Overdue start timeouts taken over per sweep (the rest wait for the next one).
const OVERDUE_BATCH: u64 = 100;
/// Expiry of a room's recording key once it rests (inactive or failed).
const RESTING_STATE_TTL_MS: u64 = 24 * 3600 * 1000;

/// This node's handle on the cluster.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    client: Client,
    heartbeat: Duration,
    ttl: Duration,
    timeout: Duration,
    /// Where the Redis connections, their timers and the pub/sub loop run.
    io: IoRuntime,
    /// The command connection, while connected.
    conn: Mutex<Option<MultiplexedConnection>>,
    ready: AtomicBool,
    subs: mpsc::Sender<SubRequest>,
    sub_rx: Mutex<Option<mpsc::Receiver<SubRequest>>>,
    join: Script,
    leave: Script,
    reregister: Script,
    update: Script,
    cas: Script,
    reap: Script,
    join_rate: Script,
    ticket_issue: Script,
}

impl Cluster {
    /// A cluster handle for `[cluster]`; `None` without `redis_url`.
    pub fn from_config(config: &ClusterConfig) -> Result<Option<Arc<Self>>, ClusterError> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let (subs, sub_rx) = mpsc::channel(SUB_QUEUE);
        Ok(Some(Arc::new(Self {
            node_id: config.node_id.clone(),
            client: Client::open(url.as_str())?,
            io: IoRuntime::new()?,
            heartbeat: Duration::from_secs(config.heartbeat_s),
            ttl: Duration::from_secs(config.node_ttl_s),
            timeout: Duration::from_secs(config.command_timeout_s),
            conn: Mutex::new(None),
            ready: AtomicBool::new(false),
            subs,
            sub_rx: Mutex::new(Some(sub_rx)),
            join: Script::new(scripts::JOIN),
            leave: Script::new(scripts::LEAVE),
            reregister: Script::new(scripts::REREGISTER),
            update: Script::new(scripts::UPDATE),
            cas: Script::new(scripts::CAS),
            reap: Script::new(scripts::REAP),
            join_rate: Script::new(scripts::JOIN_RATE),
            ticket_issue: Script::new(scripts::TICKET_ISSUE),
        })))
    }

    /// Whether the node is connected, registered and subscribed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn conn(&self) -> Result<MultiplexedConnection, ClusterError> {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(ClusterError::Unavailable)
    }

    /// Runs `fut` with the command timeout.
    pub(crate) async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Takes one join from `sub`'s bucket, shared by every node
    /// ([`scripts::JOIN_RATE`]): `None` when the join may go ahead, else how
    /// long until it may. For async callers: the round trip runs on the
    /// cluster's own runtime and is awaited, no thread is blocked.
    pub async fn take_join(
        self: &Arc<Self>,
        sub: &str,
        rate: f64,
        burst: f64,
    ) -> Result<Option<Duration>, ClusterError> {
        let key = wire::joins_key(sub);
        self.on_io(move |this, mut conn| async move {
            let wait_ms: i64 = this
                .timed(
                    this.join_rate
                        .key(key)
                        .arg(rate)
                        .arg(burst)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms.unsigned_abs())))
        })
        .await
    }

    /// Keeps a single-use ticket for every node ([`scripts::TICKET_ISSUE`]):
    /// `false` when `sub` already holds `max` (0 = no limit). `claims` is
    /// what redeeming it gives back; it expires after `ttl`. Awaited on the
    /// cluster's own runtime: no thread is blocked.
    pub async fn issue_ticket(
        self: &Arc<Self>,
        ticket: &str,
        sub: &str,
        claims: String,
        ttl: Duration,
        max: usize,
    ) -> Result<bool, ClusterError> {
        let keys = (wire::ticket_key(ticket), wire::tickets_of_key(sub));
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.on_io(move |this, mut conn| async move {
            let issued: i64 = this
                .timed(
                    this.ticket_issue
                        .key(keys.0)
                        .key(keys.1)
                        .arg(claims)
                        .arg(ttl_ms)
                        .arg(max)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(issued == 1)
        })
        .await
    }

    /// Redeems a ticket on whichever node it was issued: its claims (JSON)
    /// the first time, `None` after that or once it expired. `sub_of` reads
    /// the `sub` out of the claims, to give the ticket's place back.
    pub async fn redeem_ticket(
        self: &Arc<Self>,
        ticket: &str,
        sub_of: fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ClusterError> {
        let key = wire::ticket_key(ticket);
        self.on_io(move |this, mut conn| async move {
            let claims: Option<String> = this
                .timed(redis::cmd("GETDEL").arg(&key).query_async(&mut conn))
                .await?;
            if let Some(sub) = claims.as_deref().and_then(sub_of) {
                // Best effort: the entry also goes when its score passes.
                let freed: Result<i64, _> = this
                    .timed(
                        redis::cmd("ZREM")
                            .arg(wire::tickets_of_key(&sub))
                            .arg(&key)
                            .query_async(&mut conn),
                    )
                    .await;
                if let Err(e) = freed {
                    tracing::debug!(error = %e, "cluster: a redeemed ticket's place is given back when it expires");
                }
            }
            Ok(claims)
        })
        .await
    }

    /// Runs one Redis exchange on the cluster's own runtime and awaits it:
    /// no thread of the caller's is blocked, and the command timeout applies
    /// inside `exchange`.
    pub(crate) async fn on_io<T, F, Fut>(self: &Arc<Self>, exchange: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>, MultiplexedConnection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ClusterError>> + Send + 'static,
    {
        let this = self.clone();
        self.io
            .handle()
            .spawn(async move {
                let conn = this.conn()?;
                exchange(this, conn).await
            })
            .await
            .map_err(|_| ClusterError::Unavailable)?
    }

    /// Makes sure this node receives `room`'s events; returns once subscribed.
    pub async fn subscribe(&self, room: &str) -> Result<(), ClusterError> {
        if !self.is_ready() {
            return Err(ClusterError::Unavailable);
        }
        let (done, subscribed) = oneshot::channel();
        self.subs
            .try_send(SubRequest::Subscribe(room.to_owned(), done))
            .map_err(|_| ClusterError::Unavailable)?;
        match tokio::time::timeout(self.timeout, subscribed).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ClusterError::Unavailable),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Asks to stop receiving `room`'s events (done unless the room became local again).
    pub fn unsubscribe(&self, room: &str) {
        let _ = self.subs.try_send(SubRequest::Unsubscribe(room.to_owned()));
    }

    /// Adds a participant to a room and publishes `joined_message` in the same
    /// step; returns the room as of that step.
    pub async fn join(
        &self,
        room: &str,
        participant: &Participant,
        joined_message: &str,
    ) -> Result<JoinView, ClusterError> {
        self.subscribe(room).await?;
        let mut conn = self.conn()?;
        let json = serde_json::to_string(participant).expect("wire types serialize");
        let (flat, state): (Vec<String>, Option<String>) = self
            .timed(
                self.join
                    .key(wire::members_key(room))
                    .key(wire::seq_key(room))
                    .key(wire::node_participants_key(&self.node_id))
                    .key(wire::rooms_key())
                    .key(wire::recording_key(room))
                    .arg(&participant.id)
                    .arg(json)
                    .arg(room)
                    .arg(wire::channel(room))
                    .arg(joined_message)
                    .invoke_async(&mut conn),
            )
            .await?;
        METRICS.cluster_published.inc();
        Ok(JoinView {
            members: wire::members(&flat),
            state: state
                .as_deref()
                .and_then(wire::state_from_json)
                .unwrap_or_default(),
        })
    }

    /// Removes a participant and publishes `left`; returns how many members the
    /// room still has, or `None` if the participant was not there (already reaped).
    pub async fn leave(
        &self,
        room: &str,
        participant_id: &str,
    ) -> Result<Option<u64>, ClusterError> {
        let mut conn = self.conn()?;
        let (removed, count): (u64, u64) = self
            .timed(
                self.leave
                    .key(wire::members_key(room))
                    .key(wire::node_participants_key(&self.node_id))
                    .key(wire::rooms_key())
                    .arg(participant_id)
                    .arg(room)
                    .arg(wire::channel(room))
                    .arg(wire::encode(wire::Kind::Left, participant_id, ""))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok((removed == 1).then_some(count))
    }

    /// Stores a participant's changed public data and publishes `message`.
    pub async fn update(
        &self,
        room: &str,
        participant: &Participant,
        message: &str,
        webhooks: &[crate::delivery::NewDelivery],
    ) -> Result<bool, ClusterError> {
        let mut conn = self.conn()?;
        let json = serde_json::to_string(participant).expect("wire types serialize");
        let mut invocation = self.update.prepare_invoke();
        invocation
            .key(wire::members_key(room))
            .key(wire::outbox_seq_key())
            .key(wire::outbox_due_key())
            .key(wire::outbox_held_key())
            .arg(&participant.id)
            .arg(json)
            .arg(wire::channel(room))
            .arg(message);
        outbox::row_args(&mut invocation, &self.node_id, webhooks);
        let done: u64 = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    /// Publishes a message to a room; returns how many nodes received it.
    pub async fn publish(&self, room: &str, message: &str) -> Result<u64, ClusterError> {
        let mut conn = self.conn()?;
        let receivers: u64 = self
            .timed(
                redis::cmd("PUBLISH")
                    .arg(wire::channel(room))
                    .arg(message)
                    .query_async(&mut conn),
            )
            .await?;
        METRICS.cluster_published.inc();
        Ok(receivers)
    }

    /// Forgets a shared deadline once its timeout has been handled.
    pub async fn disarm_deadline(
        &self,
        room: &str,
        recording_id: &str,
        deadline: Deadline,
    ) -> Result<(), ClusterError> {
        let mut conn = self.conn()?;
        let member = wire::deadline_member(room, recording_id, deadline);
        let _: u64 = self
            .timed(
                redis::cmd("ZREM")
                    .arg(wire::deadlines_key())
                    .arg(member)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Shares a LiveKit egress this node started with the other nodes.
    pub async fn share_egress(
        &self,
        egress_id: &str,
        room: &str,
        recording_id: &str,
    ) -> Result<(), ClusterError> {
        let mut conn = self.conn()?;
        let _: () = self
            .timed(
                redis::pipe()
                    .cmd("SET")
                    .arg(wire::egress_key(egress_id))
                    .arg(format!("{room} {recording_id}"))
                    .arg("EX")
                    .arg(SHARED_EGRESS_TTL_S)
                    .ignore()
                    .cmd("SET")
                    .arg(wire::recording_egress_key(recording_id))
                    .arg(egress_id)
                    .arg("EX")
                    .arg(SHARED_EGRESS_TTL_S)
                    .ignore()
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// A LiveKit egress some node shared: `(egress id, room, recording id)`.
    pub async fn shared_egress(
        &self,
        egress_id: &str,
    ) -> Result<Option<(String, String, String)>, ClusterError> {
        let mut conn = self.conn()?;
        let value: Option<String> = self
            .timed(
                redis::cmd("GET")
                    .arg(wire::egress_key(egress_id))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(value.and_then(|v| {
            let (room, recording_id) = wire::parse_room_and_recording(&v)?;
            Some((
                egress_id.to_owned(),
                room.to_owned(),
                recording_id.to_owned(),
            ))
        }))
    }

    /// The LiveKit egress some node shared for a recording.
    pub async fn shared_egress_of(
        &self,
        recording_id: &str,
    ) -> Result<Option<(String, String, String)>, ClusterError> {
        let mut conn = self.conn()?;
        let egress_id: Option<String> = self
            .timed(
                redis::cmd("GET")
                    .arg(wire::recording_egress_key(recording_id))
                    .query_async(&mut conn),
            )
            .await?;
        match egress_id {
            Some(egress_id) => self.shared_egress(&egress_id).await,
            None => Ok(None),
        }
    }

    /// A room's recording state and its version.
    pub async fn read_state(&self, room: &str) -> Result<Versioned, ClusterError> {
        let mut conn = self.conn()?;
        let (version, json): (Option<u64>, Option<String>) = self
            .timed(
                redis::cmd("HMGET")
                    .arg(wire::recording_key(room))
                    .arg("v")
                    .arg("s")
                    .query_async(&mut conn),
            )
            .await?;
        let state = match &json {
            Some(json) => {
                wire::state_from_json(json).ok_or(ClusterError::Data("recording state"))?
            }
            None => State::Inactive,
        };
        Ok(Versioned {
            version: version.unwrap_or(0),
            state,
            exists: json.is_some(),
        })
    }

    /// Writes `state` if the version is still `expected`, publishing `messages`
    /// and writing the outbox rows of its `webhooks` in the same step. With
    /// `require_empty`, only while nobody is in the room.
    #[allow(clippy::too_many_arguments)]
    pub async fn compare_and_set(
        &self,
        room: &str,
        expected: u64,
        state: &State,
        require_empty: bool,
        deadline: Option<(Deadline, &str, Duration)>,
        messages: &[String],
        webhooks: &[crate::delivery::NewDelivery],
    ) -> Result<Cas, ClusterError> {
        let mut conn = self.conn()?;
        let resting = matches!(state, State::Inactive | State::Failed { .. });
        // The deadline the transition arms (which, for which recording, how
        // far off) is shared in the same step, so that a survivor enforces it
        // should the node that armed the timer die.
        let (deadline, wait) = match deadline {
            Some((deadline, recording_id, wait)) => {
                (wire::deadline_member(room, recording_id, deadline), wait)
            }
            None => (String::new(), Duration::ZERO),
        };
        let due = epoch_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        let mut invocation = self.cas.prepare_invoke();
        invocation
            .key(wire::recording_key(room))
            .key(wire::members_key(room))
            .key(wire::deadlines_key())
            .key(wire::outbox_seq_key())
            .key(wire::outbox_due_key())
            .key(wire::outbox_held_key())
            .arg(expected)
            .arg(wire::state_to_json(state))
            .arg(if require_empty { "1" } else { "0" })
            .arg(if resting { RESTING_STATE_TTL_MS } else { 0 })
            .arg(wire::channel(room))
            .arg(deadline)
            .arg(due)
            .arg(messages.len());
        for message in messages {
            invocation.arg(message);
        }
        outbox::row_args(&mut invocation, &self.node_id, webhooks);
        let outcome: i64 = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(match outcome {
            -1 => {
                METRICS.cluster_cas_retries.inc();
                Cas::Moved
            }
            -2 => Cas::NotEmpty,
            _ => {
                METRICS.cluster_published.inc_by(messages.len() as u64);
                Cas::Won
            }
        })
    }

    /// The members of a room, in joining order.
    pub async fn members(&self, room: &str) -> Result<Vec<Participant>, ClusterError> {
        let mut conn = self.conn()?;
        let flat: Vec<String> = self
            .timed(
                redis::cmd("HGETALL")
                    .arg(wire::members_key(room))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(wire::members(&flat))
    }

    /// The rooms that have members on some node.
    pub async fn rooms(&self) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn()?;
        self.timed(
            redis::cmd("SMEMBERS")
                .arg(wire::rooms_key())
                .query_async(&mut conn),
        )
        .await
    }

    /// Keeps the node connected until `shutdown`: connects, registers,
    /// forwards pub/sub messages to `host`, heartbeats and reaps dead nodes;
    /// when Redis is lost, tells `host` and reconnects with backoff.
    ///
    /// The loop itself runs on the cluster's own runtime (see the module
    /// documentation); this future only waits for it to end.
    pub async fn run<H: Host>(self: Arc<Self>, host: Arc<H>, shutdown: CancellationToken) {
        let main = tokio::runtime::Handle::current();
        let io = self.io.handle();
        if let Err(e) = io.spawn(self.keep_connected(host, shutdown, main)).await {
            tracing::error!(error = %e, "cluster: the Redis loop ended abnormally");
        }
    }

    async fn keep_connected<H: Host>(
        self: Arc<Self>,
        host: Arc<H>,
        shutdown: CancellationToken,
        main: tokio::runtime::Handle,
    ) {
        let Some(mut requests) = self.sub_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        let mut connected_once = false;
        loop {
            let outcome = self
                .serve(
                    &host,
                    &main,
                    &mut requests,
                    &shutdown,
                    &mut backoff,
                    &mut connected_once,
                )
                .await;
            let was_ready = self.ready.swap(false, Ordering::AcqRel);
            METRICS.cluster_up.set(0);
            if shutdown.is_cancelled() {
                // The connection stays for the last bounded work of the
                // shutdown (the outbox records its attempts, gives its claims back).
                return;
            }
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if let Err(e) = outcome {
                tracing::warn!(error = %e, retry_in = ?backoff, "cluster: Redis unavailable");
            }
            if was_ready {
                host.connection_lost();
            }
            // Pending subscriptions cannot succeed now; their joins time out and report it.
            while let Ok(request) = requests.try_recv() {
                drop(request);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life; returns when it breaks (or on shutdown).
    async fn serve<H: Host>(
        &self,
        host: &Arc<H>,
        main: &tokio::runtime::Handle,
        requests: &mut mpsc::Receiver<SubRequest>,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
        connected_once: &mut bool,
    ) -> Result<(), ClusterError> {
        let mut conn = self
            .timed(self.client.get_multiplexed_async_connection())
            .await?;
        let (mut sink, mut stream) = self.timed(self.client.get_async_pubsub()).await?.split();
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        self.beat(&mut conn).await?;
        // Each connection: the Redis may have been replaced by one that does not persist.
        self.persistence(&mut conn)
            .await
            .report(&self.client.get_connection_info().addr().to_string());
        // Re-register every local participant (Redis may have restarted empty)
        // and resubscribe to their rooms.
        let members = host.local_members();
        let mut rooms: Vec<&str> = members.iter().map(|(room, _)| room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        for room in &rooms {
            self.timed(sink.subscribe(wire::channel(room))).await?;
        }
        for (room, participant) in &members {
            let json = serde_json::to_string(participant).expect("wire types serialize");
            let _: i64 = self
                .timed(
                    self.reregister
                        .key(wire::members_key(room))
                        .key(wire::seq_key(room))
                        .key(wire::node_participants_key(&self.node_id))
                        .key(wire::rooms_key())
                        .arg(&participant.id)
                        .arg(json)
                        .arg(room)
                        .invoke_async(&mut conn),
                )
                .await?;
        }
        // Participants that left while Redis was away are still listed under
        // this node: remove them now, telling the others.
        let registered: Vec<String> = self
            .timed(
                redis::cmd("HGETALL")
                    .arg(wire::node_participants_key(&self.node_id))
                    .query_async(&mut conn),
            )
            .await?;
        for pair in registered.chunks_exact(2) {
            let (id, room) = (&pair[0], &pair[1]);
            if !members.iter().any(|(_, p)| p.id == *id) {
                self.leave(room, id).await?;
            }
        }
        if *connected_once {
            METRICS.cluster_reconnects.inc();
            tracing::info!(
                node = %self.node_id,
                participants = members.len(),
                rooms = rooms.len(),
                "cluster: reconnected to Redis and re-registered"
            );
        } else {
            tracing::info!(node = %self.node_id, "cluster: connected to Redis");
        }
        *connected_once = true;
        *backoff = Duration::from_millis(100);
        self.ready.store(true, Ordering::Release);
        METRICS.cluster_up.set(1);

        let mut beats = tokio::time::interval(self.heartbeat);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(ClusterError::Unavailable);
                    };
                    METRICS.cluster_received.inc();
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    let Some(room) = wire::room_of_channel(message.get_channel_name()) else { continue };
                    match wire::decode(&payload) {
                        Some(decoded) => host.deliver(room, decoded),
                        None => tracing::warn!(room, "cluster: unreadable pub/sub message"),
                    }
                }
                Some(request) = requests.recv() => match request {
                    SubRequest::Subscribe(room, done) => {
                        self.timed(sink.subscribe(wire::channel(&room))).await?;
                        let _ = done.send(());
                    }
                    SubRequest::Unsubscribe(room) => {
                        // Decided now, in order with the subscriptions: a room
                        // that became local again meanwhile stays subscribed.
                        if !host.is_local(&room) {
                            self.timed(sink.unsubscribe(wire::channel(&room))).await?;
                        }
                    }
                },
                _ = beats.tick() => {
                    self.beat(&mut conn).await?;
                    self.sweep(host, main, &mut conn).await?;
                }
            }
        }
    }

    /// Refreshes this node's heartbeat.
    async fn beat(&self, conn: &mut MultiplexedConnection) -> Result<(), ClusterError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let _: () = self
            .timed(
                redis::pipe()
                    .cmd("SET")
                    .arg(wire::alive_key(&self.node_id))
                    .arg(1)
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore()
                    .cmd("SADD")
                    .arg(wire::nodes_key())
                    .arg(&self.node_id)
                    .ignore()
                    .query_async(conn),
            )
            .await?;
        Ok(())
    }

    /// Reaps the nodes whose heartbeat expired.
    async fn sweep<H: Host>(
        &self,
        host: &Arc<H>,
        main: &tokio::runtime::Handle,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), ClusterError> {
        let nodes: Vec<String> = self
            .timed(
                redis::cmd("SMEMBERS")
                    .arg(wire::nodes_key())
                    .query_async(conn),
            )
            .await?;
        for node in nodes.iter().filter(|n| **n != self.node_id) {
            let (reaped, emptied): (u8, Vec<String>) = self
                .timed(
                    self.reap
                        .key(wire::alive_key(node))
                        .key(wire::node_participants_key(node))
                        .key(wire::nodes_key())
                        .key(wire::rooms_key())
                        .arg(node)
                        .invoke_async(conn),
                )
                .await?;
            if reaped == 1 {
                METRICS.cluster_nodes_reaped.inc();
                tracing::warn!(dead = %node, emptied = emptied.len(), "cluster: reaped a node whose heartbeat expired");
            }
            if !emptied.is_empty() {
                // The host spawns what follows; it belongs on the main runtime.
                let _main = main.enter();
                host.rooms_emptied(emptied);
            }
        }
        // Start timeouts overdue by more than a node's TTL: the node that armed
        // them is gone. ZREM decides which survivor takes each one over.
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let overdue: Vec<String> = self
            .timed(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(wire::deadlines_key())
                    .arg("-inf")
                    .arg(epoch_ms().saturating_sub(ttl_ms))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(OVERDUE_BATCH)
                    .query_async(conn),
            )
            .await?;
        for member in overdue {
            let taken: u64 = self
                .timed(
                    redis::cmd("ZREM")
                        .arg(wire::deadlines_key())
                        .arg(&member)
                        .query_async(conn),
                )
                .await?;
            if taken == 1
                && let Some((room, recording_id, deadline)) = wire::parse_deadline(&member)
            {
                tracing::warn!(
                    room,
                    recording_id,
                    deadline = deadline.as_str(),
                    "cluster: taking over a deadline of a dead node"
                );
                let _main = main.enter();
                host.deadline_overdue(room.to_owned(), recording_id.to_owned(), deadline);
            }
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (deadlines are compared across nodes,
/// so they use wall-clock time; the node TTL absorbs small clock skew).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The cluster's own small runtime (see the module documentation). Shut down
/// in the background when the cluster is dropped, which may happen on a
/// runtime thread, where a blocking shutdown is not allowed.
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn new() -> Result<Self, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("onair-redis")
            .enable_all()
            .build()
            .map_err(ClusterError::IoRuntime)?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the cluster")
            .handle()
            .clone()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
