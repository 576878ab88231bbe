//! Shared test support: the server harness and the protocol schemas.
pub mod harness;
pub mod schemas;
