//! Inbound webhooks from livekit (being built).

use std::sync::Arc;

use axum::Router;

use crate::server::AppState;

/// The livekit webhook routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
