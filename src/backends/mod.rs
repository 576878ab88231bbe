//! Recording backends: they carry out the `BackendStart`/`BackendStop`
//! effects of the state machine. Their answers come back to the room as
//! further inputs (through the REST API or a provider's webhook), never by
//! reaching into the room's sockets.
//!
//! Only the `manual` backend is built so far; LiveKit/OpenVidu egress,
//! the Nextcloud Talk recording server and 8x8 JaaS are tracked as open work.

use crate::config::{BackendKind, RecordingConfig};
use crate::recording::{Policy, StartMode};

/// A failed backend call; its text becomes the `reason` of a `failed` status.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// The configured recording backend.
#[derive(Debug)]
pub enum Backend {
    /// The application's own recorder: onair calls nothing; the recorder learns of
    /// starts and stops from onair and reports through `POST /v1/rooms/{room}/recording/status`.
    Manual {
        /// Wait for the recorder's `recording` report instead of confirming at once.
        confirm: bool,
    },
}

impl Backend {
    /// The backend the configuration asks for.
    pub fn from_config(config: &RecordingConfig) -> Self {
        match config.backend {
            BackendKind::Manual => Self::Manual {
                confirm: config.manual_confirm,
            },
        }
    }

    /// The provider name reported in `status` events.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Manual { .. } => "manual",
        }
    }

    /// The state machine's policy for this backend.
    pub fn policy(&self, config: &RecordingConfig) -> Policy {
        let mode = match self {
            Self::Manual { confirm: false } => StartMode::Immediate,
            Self::Manual { confirm: true } => StartMode::AwaitProvider,
        };
        Policy {
            mode,
            enabled: config.enabled,
        }
    }

    /// Asks the backend to start recording `room`.
    pub async fn start(&self, room: &str, recording_id: &str) -> Result<(), BackendError> {
        match self {
            // The recorder is told through the room's events and, later, the outbound webhooks.
            Self::Manual { .. } => {
                tracing::info!(room, recording_id, "manual backend: recording requested");
                Ok(())
            }
        }
    }

    /// Asks the backend to stop recording `room`.
    pub async fn stop(&self, room: &str, recording_id: &str) -> Result<(), BackendError> {
        match self {
            Self::Manual { .. } => {
                tracing::info!(room, recording_id, "manual backend: stop requested");
                Ok(())
            }
        }
    }
}
