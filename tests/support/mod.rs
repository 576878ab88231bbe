//! Shared test support: the server harness, the protocol schemas, a redis-server.
pub mod harness;
pub mod redis;
pub mod schemas;
