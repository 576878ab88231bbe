//! `onair-floor`: the floor for a Rust WebSocket fan-out server on this machine.
//!
//! A bare tokio-tungstenite hub with no JSON, no auth and no state beyond room
//! membership: a client connects to any path with `?room=<id>`, and every text
//! frame it sends is relayed, unchanged, to every socket in that room (the
//! sender included). It is built the way onair's socket path is built (one
//! task per socket, a bounded queue per socket, one shared frame per
//! broadcast, 4 KiB read buffers, batched writes), so the difference between
//! the two is what onair's protocol, auth and state cost.
//!
//! ```text
//! onair-floor --listen 127.0.0.1:7802
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The floor: a bare tokio-tungstenite fan-out hub (no JSON, auth or state).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:7802")]
    listen: SocketAddr,
    /// Frames queued per socket before a client that does not read is dropped.
    #[arg(long, default_value_t = 256)]
    send_queue: usize,
    /// Tokio worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Frames written before one flush, as onair does.
const WRITE_BATCH: usize = 64;

type Members = Vec<(u64, mpsc::Sender<Utf8Bytes>)>;

/// Rooms by id; each room's member list has its own lock, held only to `try_send`.
#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Arc<Mutex<Members>>>>,
    next_id: AtomicU64,
}

impl Hub {
    fn join(&self, room: &str, tx: mpsc::Sender<Utf8Bytes>) -> (u64, Arc<Mutex<Members>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Join under the map's lock, so a leaver cannot remove the room in between.
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let members = rooms.entry(room.to_owned()).or_default().clone();
        members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, tx));
        (id, members)
    }

    fn leave(&self, room: &str, id: u64, members: &Arc<Mutex<Members>>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = members.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(m, _)| *m != id);
        if list.is_empty() {
            rooms.remove(room);
        }
    }
}

/// Offers the frame to every member; a member whose queue is full is dropped
/// (its task sees its queue close and ends).
fn broadcast(members: &Mutex<Members>, frame: &Utf8Bytes) {
    let mut list = members.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|(_, tx)| tx.try_send(frame.clone()).is_ok());
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.listen.ip().is_loopback(),
        "the floor listens on loopback only"
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        builder.worker_threads(cli.threads);
    }
    builder.enable_all().build()?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    // A deep accept queue: tokio's `TcpListener::bind` listens with a backlog
    // of 128, which a join storm overflows (SYNs dropped, retried after 1 s).
    let socket = match cli.listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(cli.listen)?;
    let listener = socket.listen(4096)?;
    eprintln!("onair-floor listening on {}", listener.local_addr()?);
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait and go on.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let hub = hub.clone();
        let queue = cli.send_queue;
        tokio::spawn(async move {
            let _ = connection(stream, hub, queue).await;
        });
    }
}

// The handshake callback's error type is tungstenite's, large by design.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, hub: Arc<Hub>, queue: usize) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut room = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(128 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let callback = |request: &Request, response: Response| {
        room = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("room="))
            .unwrap_or("default")
            .to_owned();
        Ok(response)
    };
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(queue);
    let (id, members) = hub.join(&room, tx);
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    // `None`: the hub dropped this client for not reading.
                    let Some(frame) = frame else { break };
                    ws.feed(Message::Text(frame)).await?;
                    for _ in 1..WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(frame) => ws.feed(Message::Text(frame)).await?,
                            Err(_) => break,
                        }
                    }
                    ws.flush().await?;
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => broadcast(&members, &text),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                },
            }
        }
        Ok(())
    }
    .await;
    hub.leave(&room, id, &members);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(None)).await;
    result
}
