//! What `onair migrate-to-redis` (`migrate`) needs of the cluster:
//! a connection to its Redis without joining it as a node, and the copy of
//! a single node's undelivered outbox rows in the cluster's row layout.

use std::sync::{Arc, LazyLock};

use redis::Script;

use super::{Cluster, ClusterError, outbox, scripts, wire};
use crate::delivery::{Delivery, NewDelivery};

static IMPORT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::OUTBOX_IMPORT));

impl Cluster {
    /// Connects to the cluster's Redis for a one-off job: no heartbeat, no
    /// subscriptions, no participants, so no node counts this process as
    /// one of them. Warns, as a node does, when that Redis does not persist.
    pub async fn connect_without_joining(self: &Arc<Self>) -> Result<(), ClusterError> {
        let this = self.clone();
        self.io
            .handle()
            .spawn(async move {
                let mut conn = this
                    .timed(this.client.get_multiplexed_async_connection())
                    .await?;
                this.persistence(&mut conn)
                    .await
                    .report(&this.client.get_connection_info().addr().to_string());
                *this.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                Ok(())
            })
            .await
            .map_err(|_| ClusterError::Unavailable)?
    }

    /// Copies one undelivered row of a single node's outbox
    /// ([`scripts::OUTBOX_IMPORT`]): pending and due at once, with its
    /// message id and attempts; `false` if it was copied before.
    pub async fn outbox_import(self: &Arc<Self>, row: &Delivery) -> Result<bool, ClusterError> {
        let marker = wire::migrated_key("outbox", &format!("{} {}", row.message_id, row.endpoint));
        let new = [NewDelivery {
            kind: row.kind,
            held: false,
            message_id: row.message_id.clone(),
            endpoint: row.endpoint.clone(),
            event_type: row.event_type.clone(),
            payload: row.payload.clone(),
        }];
        let attempts = row.attempts;
        self.on_io(move |this, mut conn| async move {
            let mut invocation = IMPORT.prepare_invoke();
            invocation
                .key(wire::outbox_seq_key())
                .key(wire::outbox_due_key())
                .key(wire::outbox_held_key())
                .key(marker);
            outbox::row_args(&mut invocation, &this.node_id, &new);
            invocation.arg(attempts);
            let written: i64 = this.timed(invocation.invoke_async(&mut conn)).await?;
            Ok(written == 1)
        })
        .await
    }
}
