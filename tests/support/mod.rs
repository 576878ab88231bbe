//! Shared test support: the server harness, the real binary, the fake
//! LiveKit, the protocol schemas, a redis-server, a client that never reads,
//! a Standard Webhooks receiver.
pub mod binary;
pub mod fake_livekit;
pub mod harness;
pub mod moto;
pub mod receiver;
pub mod redis;
pub mod schemas;
pub mod slow;
