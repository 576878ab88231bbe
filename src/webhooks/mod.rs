//! Inbound webhooks from recording providers. Each provider's module verifies
//! the request exactly as the provider signs it (raw body, constant-time
//! comparison, replay window), then feeds what it learned to the room as a
//! recording input, the same path a socket command takes.

pub mod jaas;
pub mod livekit;
pub mod nextcloud;
pub mod outbound;

use std::sync::Arc;

use axum::Router;

use crate::backends::Backend;
use crate::server::AppState;

/// The webhook routes of the configured backend (other providers' paths answer 404).
pub fn routes(backend: &Backend) -> Router<Arc<AppState>> {
    match backend {
        Backend::Manual { .. } => Router::new(),
        Backend::Livekit(_) => livekit::routes(),
        Backend::Nextcloud(_) => nextcloud::routes(),
        Backend::Jaas(_) => jaas::routes(),
    }
}
