//! onair: a real-time room signaling server over WebSockets that owns the
//! recording state of each room and who in it consents to being recorded.
//!
//! How the code is laid out (one concept, one module):
//!
//! * [`config`] — `Config`: TOML file + `ONAIR_<SECTION>__<KEY>` env + flags, with errors that name the key;
//!   [`ip_range`] — the IP addresses and CIDR blocks it names.
//! * [`auth`] — participant JWTs (HS256 secret, PEM public keys, a cached JWKS; each key pinned
//!   to its algorithm), the admin key.
//! * [`tickets`] — single-use tickets: in memory on one node, in Redis with `[cluster]`.
//! * [`protocol`] — wire types only (serde): the envelope, `control` and `recording`
//!   messages. No tokio, no I/O. Checked against `protocol/` by tests.
//! * [`recording`] — the recording state machine: pure `(state, input) → (state, effects)`.
//! * [`room`] — rooms in a `DashMap`, participants and consent, fan-out into bounded
//!   per-socket queues (offered outside the room's lock), and the carrying-out of the state
//!   machine's effects. Its parts: `room/queue.rs` (the per-socket queue and the shared
//!   frames), `room/budget.rs` (each room's fan-out budget, which holds back and merges
//!   `update`s), `room/large.rs` (large-room presence), `room/cluster.rs` (joins, leaves and
//!   snapshots against Redis, and what the cluster hands a node), `room/deadlines.rs`
//!   (durable deadlines: start, stop, empty room; saved with their transitions, fed back by
//!   one sweep), `room/keepalive.rs` (pings, silent sockets closed).
//! * [`cluster`] — `[cluster]`: several nodes as one over Redis (shared members and
//!   recording state, compare-and-set transitions, per-room pub/sub, node heartbeats,
//!   deadlines a survivor enforces, shared LiveKit egresses and their ordering marks,
//!   tickets, inbound idempotency keys, the outbox every node delivers from, claiming rows
//!   for a lease), on a small runtime of its own.
//! * [`session`] — one WebSocket: read loop, bounded write queue, rate limit, close codes.
//! * [`limits`] — open sockets per server, client IP (behind trusted proxies) and room,
//!   with slots that give themselves back on drop; joins per token `sub` (`JoinRate`,
//!   shared through Redis in a cluster); the JSON nesting-depth scan.
//! * [`backends`] — what a recording start/stop is sent to: `manual`, `livekit`, `nextcloud`, `jaas`.
//! * [`webhooks`] — inbound provider webhooks (inbound only), verified, turned into
//!   recording inputs.
//! * [`outbox`] — delivery of outbound events (Standard Webhooks, Temasys POSTs) from the
//!   durable outbox: rows in SQLite, or with `[cluster]` in Redis, claimed for a lease so
//!   that one node delivers each.
//! * [`delivery`] — an outbox row as data (what to POST where), for the stores and the cluster.
//! * [`post`] — one POST to a URL an owner chose: public addresses only, one attempt.
//! * [`reconcile`] — `[recording] reconcile_interval_s`: the backend compares the provider's
//!   list (LiveKit `Egress/ListEgress`) with onair's rooms; this task applies the repairs.
//! * [`catalog`] — finished recordings, kept in the store (shared in Redis with `[cluster]`);
//!   [`catalog_entry`] — one entry and where its file is, as data; [`links`] — the signed,
//!   expiring links to the files that onair hands out.
//! * [`retention`] — how a recording goes away: the one deletion (DELETE or
//!   `[storage] retention`), and the retention sweep with its legal hold.
//! * [`storage`] — where their files are: `[storage] path`, or moved to an S3-compatible bucket.
//! * [`store`] — the embedded SQLite store: catalog (with legal holds and what onair saw
//!   of each recording), active recording state per room and its deadlines, the outbox
//!   (webhooks and notification POSTs; in Redis with `[cluster]`), inbound idempotency
//!   keys and provider ordering marks; and `CatalogStore`, the one async API over the
//!   catalog (with owners, notification settings, JaaS downloads) in SQLite or, with
//!   `[cluster]`, in Redis (`store::redis`).
//! * [`migrate`] — `onair migrate-to-redis`: a single node's SQLite catalog (local files put
//!   in the bucket), owners, notification settings, owed JaaS downloads and undelivered
//!   outbox copied into a cluster's Redis, each at most once (`store/export.rs` pages
//!   SQLite, `store/redis/import.rs` and `cluster/migrate.rs` write only what is not there).
//! * [`notifications`] — Temasys-style recording notifications per owner: the POST
//!   (through the outbox), e-mail over SMTP, upload to the owner's S3 bucket.
//! * [`web`] — the demo page at `/` and its JS client, with a strict CSP.
//! * [`http`] — the accept loop (header and idle timeouts, HTTP connection caps; WebSockets
//!   leave it as plain TCP streams) and the axum router: `/signaling` upgrade, tickets,
//!   REST API, health.
//! * [`app`] — what every handler shares, whichever door a request came in by: `AppState`
//!   and the one error answer, `AppError`.
//! * [`metrics`] — Prometheus counters and gauges (`GET /metrics`).
//! * [`server`] — the lifecycle: [`run`] builds the state, serves until shutdown, then
//!   closes every socket with 1001.
//!
//! How one command travels:
//!
//! ```text
//! socket frame ─▶ session (protocol::parse_client_frame) ─▶ Registry::apply(..).await
//!   (the socket's next frame is read once it is done; with [cluster] it awaits
//!   Redis, no thread blocks)
//!   Registry::apply ─▶ recording::step(state, input) ─▶ (new state, effects)
//!   effects ─▶ fan-out: serialize once; queued in the room's order under its lock,
//!              then try_send the shared bytes to each socket's queue after it
//!           ─▶ backend call (after the room lock is released); a deadline saved with the
//!              transition ─▶ its answer comes back as another input (REST report, webhook,
//!              deadline passed)
//! ```

pub mod app;
pub mod auth;
pub mod backends;
pub mod catalog;
pub mod catalog_entry;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod http;
pub mod ip_range;
pub mod limits;
pub mod links;
pub mod metrics;
pub mod migrate;
pub mod notifications;
pub mod outbox;
pub mod post;
pub mod protocol;
pub mod reconcile;
pub mod recording;
pub mod retention;
pub mod room;
pub mod server;
pub mod session;
pub mod storage;
pub mod store;
pub mod tickets;
pub mod web;
pub mod webhooks;

pub use config::Config;
pub use server::{ServerError, run};
