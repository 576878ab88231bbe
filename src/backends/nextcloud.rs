//! The nextcloud backend (being built: every call fails until it is).

use super::{BackendError, StartRequest, StopRequest};
use crate::config::NextcloudConfig;

/// The nextcloud backend.
pub struct Nextcloud {
    #[allow(dead_code)]
    config: NextcloudConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Nextcloud {
    /// A backend for this configuration.
    pub fn new(config: &NextcloudConfig, http: reqwest::Client) -> Self {
        Self {
            config: config.clone(),
            http,
        }
    }

    /// Starts a recording.
    pub async fn start(&self, _request: &StartRequest) -> Result<(), BackendError> {
        Err(BackendError(
            "the nextcloud backend is not built yet".into(),
        ))
    }

    /// Stops a recording.
    pub async fn stop(&self, _request: &StopRequest) -> Result<(), BackendError> {
        Err(BackendError(
            "the nextcloud backend is not built yet".into(),
        ))
    }
}
