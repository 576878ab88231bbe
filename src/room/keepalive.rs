//! The keepalive sweep: pings, and sockets that answer none closed.

use std::sync::Arc;

use super::{Frame, Registry, Room};

impl Registry {
    /// One keepalive sweep (`[server] ping_interval_s`): every joined
    /// socket gets a ping (an empty frame in its queue, which its task sends
    /// as a WebSocket Ping), and one that has sent nothing, not even a pong,
    /// for more than `limit` sweeps is closed; the others then get `left`.
    pub fn sweep_silent(&self, limit: u8) {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        let mut closed = 0usize;
        for room in rooms {
            let inner = room.lock();
            for member in &inner.members {
                let queue = &member.outlet.queue;
                if queue.sweep(limit) {
                    member.outlet.kick.cancel();
                    closed += 1;
                } else {
                    // Not counted as a frame sent: it carries nothing.
                    queue.offer(Frame::default());
                }
            }
        }
        if closed > 0 {
            tracing::info!(closed, "keepalive: closed sockets that answered no ping");
        }
    }
}
