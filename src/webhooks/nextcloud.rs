//! Inbound webhooks from nextcloud (being built).

use std::sync::Arc;

use axum::Router;

use crate::server::AppState;

/// The nextcloud webhook routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
