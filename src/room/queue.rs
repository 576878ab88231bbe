//! The bounded per-socket send queue, and the frames that travel through it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::{ArcWake, AtomicWaker, WakerRef, waker_ref};
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
}

impl Outlet {
    /// Drops the participant: its session closes the socket and leaves.
    pub fn kick_out(&self) {
        self.queue.kick_out();
    }

    /// Whether it was kicked out.
    pub fn is_kicked(&self) -> bool {
        self.queue.is_kicked()
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
///
/// The socket task is woken through an [`AtomicWaker`], not a tokio
/// `Notify`: a queue has exactly one reader, and `Notify` takes its waiter
/// list's mutex on both sides of every wake-up (callgrind put it at ~580
/// instructions a delivery, `load-tests/RESULTS.md`).
pub struct Queue {
    frames: Mutex<VecDeque<Frame>>,
    ready: AtomicWaker,
    /// Frames it holds at most (`[server] send_queue`).
    capacity: u32,
    /// Keepalive sweeps since the socket last sent anything (a pong counts);
    /// [`SILENCED`] once the sweep closed it for that. Beside `capacity`, it
    /// costs no memory: the keepalive needs no timer or field per socket.
    silent: AtomicU8,
    /// Set by [`Queue::kick_out`]; it too fits in the padding after
    /// `capacity`. A flag and a wake-up of the queue's reader, not a
    /// `CancellationToken`: a token is an allocation per socket, and its
    /// future takes the token's mutex twice every time the session polls it.
    kicked: AtomicBool,
    /// Set when something other than a frame woke the reader: the queue is
    /// also the waker its session polls the socket's reads, its timers and
    /// the shutdown with ([`Queue::stir_waker`]), so the session knows
    /// whether a wake-up brought more than frames. Also in the padding.
    stirred: AtomicBool,
}

/// The queue as a waker: waking it marks it stirred, then wakes its reader.
impl ArcWake for Queue {
    fn wake_by_ref(queue: &Arc<Self>) {
        queue.stirred.store(true, Ordering::Release);
        queue.ready.wake();
    }
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
            ready: AtomicWaker::new(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            silent: AtomicU8::new(0),
            kicked: AtomicBool::new(false),
            stirred: AtomicBool::new(false),
        })
    }

    /// Drops the participant: its session closes the socket and leaves.
    pub fn kick_out(&self) {
        self.kicked.store(true, Ordering::Relaxed);
        self.ready.wake();
    }

    /// Whether its participant was kicked out: read from the queue, which a
    /// fan-out touches next anyway.
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Relaxed)
    }

    /// Ready once the queue's participant is kicked out ([`Queue::kick_out`]).
    pub fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_kicked() {
            return Poll::Ready(());
        }
        self.ready.register(cx.waker());
        if self.is_kicked() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// A waker that marks the queue stirred and wakes its reader: what the
    /// session polls everything but the queue with. Its reader must have
    /// registered with [`Queue::poll_take`] or [`Queue::poll_kicked`] (the
    /// queue wakes the waker they were given).
    pub fn stir_waker(self: &Arc<Self>) -> WakerRef<'_> {
        waker_ref(self)
    }

    /// Whether something woke the reader through [`Queue::stir_waker`]
    /// since the last call; clears it.
    pub fn take_stirred(&self) -> bool {
        self.stirred.load(Ordering::Acquire) && self.stirred.swap(false, Ordering::AcqRel)
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
        self.offer_all(std::slice::from_ref(&frame)) == 1
    }

    /// Adds `frames` in order, as many as fit; returns how many did. One
    /// lock and one wake-up for all of them, so the socket task finds a
    /// transition's `started` and `status` together and writes them at once.
    pub fn offer_all(&self, frames: &[Frame]) -> usize {
        let mut queued = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        let room = (self.capacity as usize).saturating_sub(queued.len());
        let taken = frames.len().min(room);
        queued.extend(frames[..taken].iter().cloned());
        drop(queued);
        if taken > 0 {
            self.ready.wake();
        }
        taken
    }

    /// Ready with up to `max` queued frames, or pending with the task
    /// registered to be woken by the next offer (or kick, or stir).
    /// Cancel-safe: frames leave the queue only in the poll that returns them.
    pub fn poll_take(&self, cx: &mut Context<'_>, max: usize) -> Poll<VecDeque<Frame>> {
        if let Some(batch) = self.try_take(max) {
            return Poll::Ready(batch);
        }
        self.ready.register(cx.waker());
        // A frame offered before the registration woke nobody: look again.
        match self.try_take(max) {
            Some(batch) => Poll::Ready(batch),
            None => Poll::Pending,
        }
    }

    /// Up to `max` queued frames, or `None` when there are none.
    fn try_take(&self, max: usize) -> Option<VecDeque<Frame>> {
        let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if frames.len() > max {
            return Some(frames.drain(..max).collect());
        }
        // The usual case: the whole queue, buffer and all, so the queue is
        // left holding none and nothing is copied.
        (!frames.is_empty()).then(|| std::mem::take(&mut *frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::from(text.to_owned())
    }

    /// Waits until frames are queued and takes up to `max` of them.
    async fn take(queue: &Queue, max: usize) -> VecDeque<Frame> {
        std::future::poll_fn(|cx| queue.poll_take(cx, max)).await
    }

    #[tokio::test]
    async fn offered_frames_wake_the_reader_in_order_up_to_capacity() {
        let queue = Queue::new(3);
        let reader = tokio::spawn({
            let queue = queue.clone();
            async move { take(&queue, 64).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(queue.offer_all(&[frame("a"), frame("b")]), 2);
        let batch = reader.await.unwrap();
        assert_eq!(batch, [frame("a"), frame("b")]);
        // Full: the fourth is refused, and so is the rest of a batch.
        assert!(queue.offer(frame("c")));
        assert_eq!(queue.offer_all(&[frame("d"), frame("e"), frame("f")]), 2);
        assert!(!queue.offer(frame("g")));
        assert_eq!(take(&queue, 2).await, [frame("c"), frame("d")]);
        assert_eq!(take(&queue, 64).await, [frame("e")]);
    }

    #[tokio::test]
    async fn a_kick_wakes_the_reader() {
        let queue = Queue::new(3);
        let reader = tokio::spawn({
            let queue = queue.clone();
            async move { std::future::poll_fn(|cx| queue.poll_kicked(cx)).await }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        queue.kick_out();
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        woke.expect("the reader is woken").unwrap();
        assert!(queue.is_kicked());
    }

    #[tokio::test]
    async fn the_stirring_waker_marks_the_queue_and_wakes_its_reader() {
        let queue = Queue::new(3);
        let reader = tokio::spawn({
            let queue = queue.clone();
            async move {
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(frames) = queue.poll_take(cx, 8) {
                        return Poll::Ready(Some(frames));
                    }
                    if queue.take_stirred() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        // What the socket's reads, the timers and the shutdown token do.
        queue.stir_waker().wake_by_ref();
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert_eq!(
            woke.expect("the reader is woken").unwrap(),
            None,
            "not for frames"
        );
        assert!(!queue.take_stirred(), "taken once");
    }
}
