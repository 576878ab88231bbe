//! The keepalive sweep: pings, and sockets that answer none closed.
//!
//! Every socket is pinged once per `[server] ping_interval_s`, but not all
//! at once: the interval is cut into [`SLICES`] and each tick pings one
//! slice: the rooms of that slice whole, and in a room of more than
//! [`WHOLE_ROOM`] the members of that slice (each has its own [`slot`]),
//! so that a tick reads no socket's state but those it pings. Pinging
//! 10,000 sockets in one go put 10,000 writes, and then 10,000 pongs to
//! read, in front of whatever the rooms were sending at that moment: the
//! fan-out's tail latency paid for it once per interval (measured in
//! `load-tests/RESULTS.md`, "Issue 14 on the final tree").

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::{Frame, Registry, Room};

/// Ticks per ping interval. It divides 256, so every slot (a `u8`) belongs
/// to exactly one slice and the slices hold the same number of slots.
pub const SLICES: u8 = 64;

/// Rooms up to this size are pinged whole in their own slice; in a larger
/// one each member goes in its own (a room of 10,000 would be one burst).
/// A room that crosses it changes scheme, so a member may be pinged twice
/// in that interval or wait for the next: a live client answers each ping
/// at once, and a dead one is closed at most one interval later.
const WHOLE_ROOM: usize = 256;

/// The keepalive slot of the next room or member (wrapping): consecutive
/// ones land in different slices, so each slice holds about the same number.
pub(super) fn slot() -> u8 {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Time between two ticks of the sweep, for a ping every `ping_interval`.
pub fn tick(ping_interval: Duration) -> Duration {
    ping_interval / u32::from(SLICES)
}

impl Registry {
    /// One tick of the keepalive sweep: every joined socket of `slice`
    /// (`0..SLICES`) gets a ping (an empty frame in its queue, which its
    /// task sends as a WebSocket Ping), and one that has sent nothing, not
    /// even a pong, for more than `limit` of its sweeps is closed; the
    /// others then get `left`.
    pub fn sweep_silent(&self, limit: u8, slice: u8) {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        let mut closed = 0usize;
        for room in rooms {
            let due = room.sweep_slot % SLICES == slice;
            let inner = room.lock();
            let by_member = inner.members.len() > WHOLE_ROOM;
            if !due && !by_member {
                continue;
            }
            for member in &inner.members {
                if by_member && member.sweep_slot % SLICES != slice {
                    continue;
                }
                let queue = &member.outlet.queue;
                if queue.sweep(limit) {
                    member.outlet.kick_out();
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
