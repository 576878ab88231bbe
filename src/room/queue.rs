//! The bounded per-socket send queue, and the frames that travel through it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

use crate::metrics::METRICS;
use crate::protocol::ServerFrame;

/// A serialized server frame, shared by every recipient (cloning is a refcount).
pub type Frame = Utf8Bytes;

/// Serializes a frame once, for any number of recipients.
pub fn encode(frame: &ServerFrame) -> Frame {
    Frame::from(frame.to_json())
}

/// How the room reaches one participant's socket task.
#[derive(Clone, Debug)]
pub struct Outlet {
    /// The participant's bounded outgoing queue.
    pub queue: Arc<Queue>,
    /// Cancelled when the room drops the participant for not reading.
    pub kick: CancellationToken,
}

impl Outlet {
    /// Drops the participant: its session closes the socket and leaves.
    pub fn kick_out(&self) {
        self.queue.kicked.store(true, Ordering::Relaxed);
        self.kick.cancel();
    }

    /// Whether it was kicked out. Read from the queue, which a fan-out
    /// touches next anyway: the token's own flag sits behind a pointer and
    /// a mutex, which cost a cache miss and a lock per member per frame.
    pub fn is_kicked(&self) -> bool {
        self.queue.kicked.load(Ordering::Relaxed)
    }

    /// Queues a frame; `false` if the queue is full (the client is not reading).
    pub fn offer(&self, frame: Frame) -> bool {
        let queued = self.queue.offer(frame);
        if queued {
            METRICS.frames_sent.inc();
        }
        queued
    }
}

/// One participant's bounded queue of frames waiting for its socket task.
///
/// A `VecDeque` behind a mutex (held only to push or drain, never across
/// `.await`) rather than a tokio channel: an idle queue holds no buffer at all,
/// where a bounded `mpsc` channel keeps at least one 32-slot block (~1 KiB)
/// plus its cache-padded state (~0.5 KiB) for every participant, and keeps the
/// blocks a burst made it grow.
pub struct Queue {
    frames: Mutex<VecDeque<Frame>>,
    ready: Notify,
    /// Frames it holds at most (`[server] send_queue`).
    capacity: u32,
    /// Keepalive sweeps since the socket last sent anything (a pong counts);
    /// [`SILENCED`] once the sweep closed it for that. Beside `capacity`, it
    /// costs no memory: the keepalive needs no timer or field per socket.
    silent: AtomicU8,
    /// Set by [`Outlet::kick_out`]; it too fits in the padding after `capacity`.
    kicked: AtomicBool,
}

/// [`Queue::silent`] of a socket closed for not answering pings.
const SILENCED: u8 = u8::MAX;

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// An empty queue holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            frames: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            silent: AtomicU8::new(0),
            kicked: AtomicBool::new(false),
        })
    }

    /// The socket sent something: it is alive.
    pub fn heard(&self) {
        // Read first: most frames find it at 0 and need not write the line.
        if self.silent.load(Ordering::Relaxed) != 0 {
            self.silent.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the keepalive sweep closed this socket for its silence.
    pub fn silenced(&self) -> bool {
        self.silent.load(Ordering::Relaxed) == SILENCED
    }

    /// One keepalive sweep: counts it, and says whether the socket has now
    /// been silent for more than `limit` sweeps.
    pub(super) fn sweep(&self, limit: u8) -> bool {
        let silent = self.silent.load(Ordering::Relaxed).saturating_add(1);
        if silent > limit {
            self.silent.store(SILENCED, Ordering::Relaxed);
            return true;
        }
        self.silent.store(silent, Ordering::Relaxed);
        false
    }

    /// Adds a frame; `false` if the queue is full.
    pub fn offer(&self, frame: Frame) -> bool {
        let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if frames.len() >= self.capacity as usize {
            return false;
        }
        frames.push_back(frame);
        drop(frames);
        // Stores a permit if the socket task is not waiting right now.
        self.ready.notify_one();
        true
    }

    /// Waits until frames are queued and takes up to `max` of them.
    /// Cancel-safe: frames leave the queue only in the poll that returns them.
    pub async fn take(&self, max: usize) -> VecDeque<Frame> {
        loop {
            {
                let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
                if frames.len() > max {
                    let batch: VecDeque<Frame> = frames.drain(..max).collect();
                    return batch;
                }
                if !frames.is_empty() {
                    // The usual case: the whole queue, buffer and all, so the
                    // queue is left holding none and nothing is copied.
                    return std::mem::take(&mut *frames);
                }
            }
            self.ready.notified().await;
        }
    }
}
