//! Recording backends: they carry out the `BackendStart`/`BackendStop`
//! effects of the state machine and mirror state to the provider. Their
//! answers come back to the room as further inputs (through the REST API or a
//! provider's webhook, see `webhooks`), never by reaching into the room's
//! sockets.

pub mod jaas;
pub mod livekit;
pub mod nextcloud;

use crate::config::{BackendKind, Config};
use crate::protocol::RecordingStatus;
use crate::recording::{Policy, StartMode};

/// A failed backend call; its text becomes the `reason` of a `failed` status.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// What a backend needs to start a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// The room id.
    pub room: String,
    /// onair's id for the recording.
    pub recording_id: String,
    /// Record audio only, where supported.
    pub audio_only: bool,
    /// The user (token `sub`) who asked, if a participant asked.
    pub requested_by_user: Option<String>,
}

/// What a backend needs to stop a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    /// The room id.
    pub room: String,
    /// onair's id for the recording.
    pub recording_id: String,
}

/// The configured recording backend.
pub enum Backend {
    /// The application's own recorder: onair calls nothing; the recorder
    /// reports through `POST /v1/rooms/{room}/recording/status`.
    Manual {
        /// Wait for the recorder's `recording` report instead of confirming at once.
        confirm: bool,
    },
    /// LiveKit / OpenVidu 3 egress.
    Livekit(livekit::Livekit),
    /// The Nextcloud Talk recording server.
    Nextcloud(nextcloud::Nextcloud),
    /// 8x8 JaaS: takes no commands; its webhooks report recordings.
    Jaas(jaas::Jaas),
}

impl Backend {
    /// The backend the configuration asks for.
    pub fn from_config(config: &Config, http: reqwest::Client) -> Self {
        match config.recording.backend {
            BackendKind::Manual => Self::Manual {
                confirm: config.recording.manual_confirm,
            },
            BackendKind::Livekit => Self::Livekit(livekit::Livekit::new(&config.livekit, http)),
            BackendKind::Nextcloud => {
                Self::Nextcloud(nextcloud::Nextcloud::new(&config.nextcloud, http))
            }
            BackendKind::Jaas => Self::Jaas(jaas::Jaas::new(&config.jaas, http)),
        }
    }

    /// The provider name reported in `status` events.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Manual { .. } => "manual",
            Self::Livekit(_) => "livekit",
            Self::Nextcloud(_) => "nextcloud",
            Self::Jaas(_) => "jaas",
        }
    }

    /// The state machine's policy for this backend (`[recording] enabled`,
    /// and whether an emptied room has a grace period).
    pub fn policy(&self, enabled: bool, empty_room_grace: bool) -> Policy {
        let mode = match self {
            Self::Manual { confirm: false } => StartMode::Immediate,
            Self::Manual { confirm: true } | Self::Livekit(_) | Self::Nextcloud(_) => {
                StartMode::AwaitProvider
            }
            Self::Jaas(_) => StartMode::ProviderDriven,
        };
        Policy {
            mode,
            enabled,
            empty_room_grace,
        }
    }

    /// Asks the backend to start recording.
    pub async fn start(&self, request: &StartRequest) -> Result<(), BackendError> {
        match self {
            // The recorder learns of the start from the room's events.
            Self::Manual { .. } => Ok(()),
            Self::Livekit(livekit) => livekit.start(request).await,
            Self::Nextcloud(nextcloud) => nextcloud.start(request).await,
            // The state machine refuses starts with `not_supported` before this.
            Self::Jaas(_) => Err(BackendError("8x8 JaaS takes no start commands".into())),
        }
    }

    /// Asks the backend to stop recording.
    pub async fn stop(&self, request: &StopRequest) -> Result<(), BackendError> {
        match self {
            Self::Manual { .. } => Ok(()),
            Self::Livekit(livekit) => livekit.stop(request).await,
            Self::Nextcloud(nextcloud) => nextcloud.stop(request).await,
            Self::Jaas(_) => Err(BackendError("8x8 JaaS takes no stop commands".into())),
        }
    }

    /// Tells the provider that a recording was deleted (LiveKit: a
    /// `RECORDING_DELETED` data message to the room); best effort.
    pub async fn recording_deleted(&self, room: &str, recording_id: &str, name: &str) {
        if let Self::Livekit(livekit) = self {
            livekit.recording_deleted(room, recording_id, name).await;
        }
    }

    /// Tells the provider about a state change (LiveKit mirrors it into room
    /// metadata). Only queues, so it is called where the transition happens and
    /// the provider sees transitions in order; never blocks the room.
    pub fn status_changed(&self, room: &str, status: RecordingStatus) {
        if let Self::Livekit(livekit) = self {
            livekit.mirror_status(room, status);
        }
    }
}
