//! The livekit backend (being built: every call fails until it is).

use super::{BackendError, StartRequest, StopRequest};
use crate::config::LivekitConfig;

/// The livekit backend.
pub struct Livekit {
    #[allow(dead_code)]
    config: LivekitConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Livekit {
    /// A backend for this configuration.
    pub fn new(config: &LivekitConfig, http: reqwest::Client) -> Self {
        Self {
            config: config.clone(),
            http,
        }
    }

    /// Starts a recording.
    pub async fn start(&self, _request: &StartRequest) -> Result<(), BackendError> {
        Err(BackendError("the livekit backend is not built yet".into()))
    }

    /// Stops a recording.
    pub async fn stop(&self, _request: &StopRequest) -> Result<(), BackendError> {
        Err(BackendError("the livekit backend is not built yet".into()))
    }

    /// Mirrors the recording status into the LiveKit room's metadata.
    pub async fn status_changed(&self, _room: &str, _status: crate::protocol::RecordingStatus) {}

    /// Tells the LiveKit room that a recording was deleted.
    pub async fn recording_deleted(&self, _room: &str, _recording_id: &str) {}
}
