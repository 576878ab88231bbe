//! Inbound webhooks from 8x8 JaaS (being built).

use std::sync::Arc;

use axum::Router;

use crate::server::AppState;

/// The JaaS webhook routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
