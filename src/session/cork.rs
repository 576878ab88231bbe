//! The socket under the WebSocket: a TCP stream whose writes are corked
//! until the next flush.
//!
//! tungstenite runs with `write_buffer_size(0)` (a buffer it keeps costs
//! every idle socket its largest frame), so each frame it writes goes
//! straight to the kernel: one `send` per frame. A batch of queued frames
//! (a transition's `started` and `status`, a burst of `update`s) then costs
//! one system call, and on loopback one wake-up of the reader, per frame.
//! Here the frames of a batch gather in a buffer that the session's flush
//! writes with one `send`, and the buffer is dropped once written, so an
//! idle socket still holds none. tokio's `BufWriter` would keep its capacity
//! for the socket's whole life, which is why this is written by hand.
//! Measured in `load-tests/RESULTS.md` ("Corked writes").
//!
//! A whole text frame can also be put in the buffer directly
//! ([`Corked::put_text`]), its header formatted by tungstenite's own
//! [`FrameHeader`]: the room's frames are encoded once and shared, and a
//! server's frames are not masked, so each recipient needs only a header
//! and a copy, not tungstenite's whole `Sink` path per frame (callgrind,
//! `load-tests/RESULTS.md`). A short batch of them, when nothing is
//! gathered, is not even copied: [`Corked::send_texts`] hands their headers
//! and the shared payloads to one vectored `send`, and only what the kernel
//! does not take is gathered (the buffer's allocation and copy were the next
//! largest cost of a delivery).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// Bytes gathered before they are written without waiting for the flush.
const CORK_LIMIT: usize = 16 * 1024;

/// What a batch's buffer starts with: a transition's two frames fit.
const CORK_START: usize = 1024;

/// The longest header of an unmasked frame (RFC 6455 §5.2).
const MAX_HEADER: usize = 10;

/// Frames [`Corked::send_texts`] sends in one vectored `send` at most.
pub const VECTORED: usize = 8;

/// The header of a whole, final text frame, as a server sends it (unmasked).
fn text_header() -> FrameHeader {
    FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    }
}

/// A TCP stream that holds writes until `flush` (or [`CORK_LIMIT`]).
#[derive(Debug)]
pub struct Corked {
    tcp: TcpStream,
    /// Written by the caller, not yet by the kernel; empty (unallocated) when idle.
    out: Vec<u8>,
}

impl Corked {
    /// Wraps an open stream.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            out: Vec::new(),
        }
    }

    /// The stream itself, for reads that bypass the WebSocket.
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Gathers one whole, final text frame carrying `text`, behind what is
    /// gathered already; the next flush writes it.
    ///
    /// Only between whole frames of tungstenite's: it writes its buffered
    /// frames to this stream whole (each `write` is handed all it holds, and
    /// [`AsyncWrite::poll_write`] takes a write of up to [`CORK_LIMIT`]
    /// whole or not at all), so a frame put here never splits one of its.
    /// The caller puts frames only while tungstenite holds none of its own
    /// (after a completed flush), so the order of messages is kept too.
    pub fn put_text(&mut self, text: &[u8]) {
        if self.out.capacity() == 0 {
            self.out.reserve((text.len() + MAX_HEADER).max(CORK_START));
        }
        // Writing to a `Vec` cannot fail.
        let _ = text_header().format(text.len() as u64, &mut self.out);
        self.out.extend_from_slice(text);
    }

    /// Sends whole, final text frames now, in one vectored `send` of their
    /// headers and payloads, when nothing is gathered (otherwise, or with
    /// more than [`VECTORED`] frames, they are put behind it). What the
    /// kernel does not take, all of it if the socket is full, is gathered
    /// for the next flush. The same conditions as [`Corked::put_text`].
    pub fn send_texts(&mut self, texts: &[&[u8]]) -> io::Result<()> {
        if !self.out.is_empty() || texts.len() > VECTORED {
            texts.iter().for_each(|text| self.put_text(text));
            return Ok(());
        }
        let mut headers = [[0u8; MAX_HEADER]; VECTORED];
        let mut header_lens = [0usize; VECTORED];
        for ((text, header), len) in texts.iter().zip(&mut headers).zip(&mut header_lens) {
            let mut rest = &mut header[..];
            // MAX_HEADER bytes hold any header of an unmasked frame.
            let _ = text_header().format(text.len() as u64, &mut rest);
            *len = MAX_HEADER - rest.len();
        }
        let mut slices = [io::IoSlice::new(&[]); 2 * VECTORED];
        for (i, text) in texts.iter().enumerate() {
            slices[2 * i] = io::IoSlice::new(&headers[i][..header_lens[i]]);
            slices[2 * i + 1] = io::IoSlice::new(text);
        }
        let slices = &slices[..2 * texts.len()];
        let mut sent = match self.tcp.try_write_vectored(slices) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        for slice in slices {
            if sent >= slice.len() {
                sent -= slice.len();
                continue;
            }
            if self.out.capacity() == 0 {
                self.out.reserve(CORK_START);
            }
            self.out.extend_from_slice(&slice[sent..]);
            sent = 0;
        }
        Ok(())
    }

    /// Writes out what is gathered; frees the buffer once it is all written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let result = loop {
            if written == self.out.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.tcp).poll_write(cx, &self.out[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if written == self.out.len() {
            // An idle socket holds no buffer.
            self.out = Vec::new();
        } else {
            self.out.drain(..written);
        }
        result
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + data.len() > CORK_LIMIT {
            ready!(this.poll_write_out(cx))?;
            if data.len() > CORK_LIMIT {
                return Pin::new(&mut this.tcp).poll_write(cx, data);
            }
        }
        if this.out.capacity() == 0 {
            // One allocation for a typical batch, where growing from empty
            // took three (header, `started`, `status`): callgrind counted
            // `realloc` among the top costs of a delivery.
            this.out.reserve(data.len().max(CORK_START));
        }
        this.out.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A corked server side of a loopback connection, and its client side.
    async fn connected() -> (Corked, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Corked::new(server.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_leave_no_buffer() {
        let (mut corked, mut client) = connected().await;
        corked.write_all(b"one ").await.unwrap();
        corked.write_all(b"two").await.unwrap();
        assert_eq!(corked.out, b"one two");
        let mut buf = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut buf)).await;
        assert!(early.is_err(), "nothing leaves before the flush");
        corked.flush().await.unwrap();
        assert_eq!(corked.out.capacity(), 0);
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one two");
        // Over the limit, what is gathered goes out without a flush.
        let big = vec![7u8; CORK_LIMIT + 1];
        corked.write_all(&big).await.unwrap();
        let mut got = vec![0u8; big.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
    }

    #[tokio::test]
    async fn frames_put_or_sent_directly_read_as_tungstenite_writes_them() {
        use futures_util::StreamExt;
        use tokio_tungstenite::WebSocketStream;
        use tungstenite::protocol::Role;

        let (mut corked, client) = connected().await;
        let short = "{\"a\":1}";
        let long = "x".repeat(300);
        let longer = "y".repeat(2 << 20);
        corked.put_text(short.as_bytes());
        corked.put_text(long.as_bytes());
        corked.flush().await.unwrap();
        // Sent at once, without the buffer.
        corked
            .send_texts(&[long.as_bytes(), short.as_bytes()])
            .unwrap();
        assert_eq!(corked.out.capacity(), 0);
        // Behind what is gathered, they are gathered too.
        corked.put_text(short.as_bytes());
        corked.send_texts(&[short.as_bytes()]).unwrap();
        assert!(!corked.out.is_empty());
        corked.flush().await.unwrap();
        // More than the socket takes at once (16 MiB, past the socket
        // buffers on both ends): the rest waits for the flush.
        let many: Vec<&[u8]> = vec![longer.as_bytes(); VECTORED];
        corked.send_texts(&many).unwrap();
        assert!(!corked.out.is_empty());
        let reader = tokio::spawn(async move {
            let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
            let mut got = Vec::new();
            for _ in 0..6 + VECTORED {
                got.push(client.next().await.unwrap().unwrap());
            }
            got
        });
        corked.flush().await.unwrap();
        let got = reader.await.unwrap();
        let mut expected = vec![short, long.as_str(), long.as_str(), short, short, short];
        expected.extend(std::iter::repeat_n(longer.as_str(), VECTORED));
        assert_eq!(got.len(), expected.len());
        for (message, expected) in got.into_iter().zip(expected) {
            assert_eq!(message, tungstenite::Message::text(expected));
        }
    }
}
