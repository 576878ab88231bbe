//! `[cluster]`: the outbox of outbound webhooks and notification POSTs in
//! Redis, shared by every node (SPEC §7: each event delivered once, whichever
//! nodes run).
//!
//! The layout ([`wire::outbox_row_key`] and its neighbours): a row is a hash,
//! a pending row's `seq` sits in the `due` sorted set scored by when it is
//! due, a held row's in the `held` set. Every node runs the delivery loop
//! (`outbox.rs`); a node *claims* due rows in one script
//! ([`scripts::OUTBOX_CLAIM`]) by re-scoring them to the end of its lease, so
//! only one node holds a row at a time. Its outcome is applied only while its
//! claim holds ([`scripts::OUTBOX_FINISH`]). A node killed mid-delivery
//! leaves its claimed rows to come due again when the lease ends, and a
//! survivor delivers them; held rows whose holder's heartbeat is gone are let
//! go by the next claim. Finished rows expire `[webhooks] keep_days` after
//! they were written. A node that writes rows publishes a notice
//! ([`wire::outbox_wake_channel`]) so that every node looks at once; each
//! also looks every second regardless.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError, epoch_ms, scripts, wire};
use crate::delivery::{Delivery, DeliveryKind, NewDelivery};

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_ENQUEUE));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_CLAIM));
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_FINISH));
static DISABLE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_DISABLE));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_RELEASE));
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_GIVE_BACK));

/// What one claim gave this node.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The rows this node now holds, until `lease_end`.
    pub rows: Vec<Delivery>,
    /// When (ms since the epoch) the claim ends; the outcome names it.
    pub lease_end: i64,
    /// When the next pending row is due (a claimed one: when its lease ends).
    pub next_due_ms: Option<i64>,
    /// The endpoints that answered 410 Gone, on any node.
    pub disabled: Vec<String>,
}

/// The outcome of one attempt at a claimed row.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Delivered.
    Delivered,
    /// Failed; try again at (ms since the epoch).
    Retry(String, i64),
    /// Failed for the last time.
    Dead(String),
}

/// Appends the outbox part of a script's ARGV: now, this node, the row
/// prefix, the wake channel, then six per row (see `outbox_write` in [`scripts`]).
pub(super) fn row_args(
    invocation: &mut redis::ScriptInvocation<'_>,
    node: &str,
    rows: &[NewDelivery],
) {
    invocation
        .arg(epoch_ms())
        .arg(node)
        .arg(wire::outbox_row_prefix())
        .arg(wire::outbox_wake_channel());
    for row in rows {
        invocation
            .arg(row.kind.as_str())
            .arg(if row.held { "1" } else { "0" })
            .arg(&row.message_id)
            .arg(&row.endpoint)
            .arg(&row.event_type)
            .arg(&row.payload);
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The longest pause before the wake notices' subscription is tried again.
const WAKES_RETRY: Duration = Duration::from_secs(1);

impl Cluster {
    /// Until `shutdown`, calls `wake` for every notice that some node wrote
    /// outbox rows, on a subscription of its own (tried again after
    /// [`WAKES_RETRY`] whenever Redis is away). Returns at once.
    pub fn outbox_wakes(
        self: &Arc<Self>,
        wake: impl Fn() + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) {
        let this = self.clone();
        self.io.handle().spawn(async move {
            loop {
                match this.timed(this.client.get_async_pubsub()).await {
                    Ok(mut pubsub) => {
                        match this
                            .timed(pubsub.subscribe(wire::outbox_wake_channel()))
                            .await
                        {
                            Ok(()) => {
                                // Rows written while not subscribed are found now.
                                wake();
                                let mut notices = pubsub.on_message();
                                loop {
                                    tokio::select! {
                                        _ = shutdown.cancelled() => return,
                                        notice = notices.next() => match notice {
                                            Some(_) => wake(),
                                            None => break,
                                        },
                                    }
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "outbox: cannot subscribe to wake notices"),
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "outbox: cannot subscribe to wake notices"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(WAKES_RETRY) => {}
                }
            }
        });
    }

    /// Writes outbox rows for every node to deliver (a pending row is due at
    /// once; a held one waits for [`Cluster::outbox_release_held`], by this node).
    pub async fn outbox_enqueue(
        self: &Arc<Self>,
        rows: Vec<NewDelivery>,
    ) -> Result<(), ClusterError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.on_io(move |this, mut conn| async move {
            let mut invocation = ENQUEUE.prepare_invoke();
            invocation
                .key(wire::outbox_seq_key())
                .key(wire::outbox_due_key())
                .key(wire::outbox_held_key());
            row_args(&mut invocation, &this.node_id, &rows);
            let _: i64 = this.timed(invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
        .await
    }

    /// Claims at most `limit` due rows for `lease` ([`scripts::OUTBOX_CLAIM`]),
    /// letting go first the held rows of dead nodes (and this node's from
    /// before `started_ms`). `keep`: how long finished rows stay.
    pub async fn outbox_claim(
        self: &Arc<Self>,
        lease: Duration,
        limit: usize,
        started_ms: u64,
        keep: Option<Duration>,
    ) -> Result<Claimed, ClusterError> {
        self.on_io(move |this, mut conn| async move {
            let (rows, head, disabled, lease_end): (Vec<Vec<String>>, String, Vec<String>, String) =
                this.timed(
                    CLAIM
                        .key(wire::outbox_due_key())
                        .key(wire::outbox_held_key())
                        .key(wire::outbox_disabled_key())
                        .arg(epoch_ms())
                        .arg(ms(lease))
                        .arg(limit)
                        .arg(wire::outbox_row_prefix())
                        .arg(wire::alive_key(""))
                        .arg(&this.node_id)
                        .arg(started_ms)
                        .arg(keep.map_or(0, ms))
                        .invoke_async(&mut conn),
                )
                .await?;
            let rows = rows
                .into_iter()
                .map(|row| match <[String; 7]>::try_from(row) {
                    Ok(
                        [
                            seq,
                            kind,
                            message_id,
                            endpoint,
                            event_type,
                            payload,
                            attempts,
                        ],
                    ) => Ok(Delivery {
                        seq: seq.parse().map_err(|_| ClusterError::Data("outbox seq"))?,
                        kind: DeliveryKind::parse(&kind),
                        message_id,
                        endpoint,
                        event_type,
                        payload,
                        attempts: attempts.parse().unwrap_or(0),
                    }),
                    Err(_) => Err(ClusterError::Data("outbox row")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Claimed {
                rows,
                lease_end: lease_end
                    .parse()
                    .map_err(|_| ClusterError::Data("outbox lease"))?,
                next_due_ms: head.parse::<f64>().ok().map(|at| at as i64),
                disabled,
            })
        })
        .await
    }

    /// Applies the outcome of an attempt at a row claimed until `lease_end`;
    /// `false` if the claim had lapsed (another node's outcome counts).
    pub async fn outbox_finish(
        self: &Arc<Self>,
        seq: i64,
        lease_end: i64,
        outcome: Finish,
        keep: Option<Duration>,
    ) -> Result<bool, ClusterError> {
        self.on_io(move |this, mut conn| async move {
            let (state, next, error) = match outcome {
                Finish::Delivered => ("delivered", 0, String::new()),
                Finish::Retry(error, at) => ("retry", at, error),
                Finish::Dead(error) => ("dead", 0, error),
            };
            let applied: i64 = this
                .timed(
                    FINISH
                        .key(wire::outbox_due_key())
                        .key(wire::outbox_row_key(seq))
                        .arg(seq)
                        .arg(lease_end)
                        .arg(state)
                        .arg(next)
                        .arg(error)
                        .arg(keep.map_or(0, ms))
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(applied == 1)
        })
        .await
    }

    /// An endpoint answered 410 Gone: no node sends to it any more.
    pub async fn outbox_disable(
        self: &Arc<Self>,
        endpoint: &str,
        keep: Option<Duration>,
    ) -> Result<(), ClusterError> {
        let endpoint = endpoint.to_owned();
        self.on_io(move |this, mut conn| async move {
            let _: i64 = this
                .timed(
                    DISABLE
                        .key(wire::outbox_due_key())
                        .key(wire::outbox_disabled_key())
                        .arg(endpoint)
                        .arg(wire::outbox_row_prefix())
                        .arg(keep.map_or(0, ms))
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Gives claimed rows (`(seq, lease end)`) back, due at once, so that a
    /// stopping node's claims need not wait for their lease to end; returns
    /// how many were still this node's.
    pub async fn outbox_give_back(
        self: &Arc<Self>,
        claims: Vec<(i64, i64)>,
    ) -> Result<u64, ClusterError> {
        if claims.is_empty() {
            return Ok(0);
        }
        self.on_io(move |this, mut conn| async move {
            let mut invocation = GIVE_BACK.prepare_invoke();
            invocation.key(wire::outbox_due_key()).arg(epoch_ms());
            for (seq, lease_end) in claims {
                invocation.arg(seq).arg(lease_end);
            }
            this.timed(invocation.invoke_async(&mut conn)).await
        })
        .await
    }

    /// Lets the held row of `message_id` go, with `payload` if given; `false`
    /// if none is held (a survivor let it go already).
    pub async fn outbox_release_held(
        self: &Arc<Self>,
        message_id: &str,
        payload: Option<&str>,
    ) -> Result<bool, ClusterError> {
        let message_id = message_id.to_owned();
        let payload = payload.map(str::to_owned);
        self.on_io(move |this, mut conn| async move {
            let released: i64 = this
                .timed(
                    RELEASE
                        .key(wire::outbox_due_key())
                        .key(wire::outbox_held_key())
                        .arg(message_id)
                        .arg(if payload.is_some() { "1" } else { "0" })
                        .arg(payload.unwrap_or_default())
                        .arg(wire::outbox_row_prefix())
                        .arg(epoch_ms())
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(released == 1)
        })
        .await
    }
}
