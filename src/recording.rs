//! The recording state machine of one room: a pure function of
//! (state, input) → (state, effects).
//!
//! ```text
//! inactive → initializing → recording → stopping → inactive
//! initializing | recording | stopping → failed     (failed rests until a new start)
//! ```
//!
//! Nothing here does I/O or knows about sockets, backends or time: the room
//! carries out the [`Effect`]s (fan-out, backend calls, timers) and feeds the
//! answers back as further [`Input`]s. That keeps every transition testable
//! without a runtime, and lets a cluster run the same core against shared state.

use crate::protocol::{RecordingData, RecordingError, RecordingStatus};

/// How the configured backend confirms a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// `manual`: a start is confirmed at once, a stop likewise.
    Immediate,
    /// `livekit`, `nextcloud`: the provider confirms; until then the room is `initializing`.
    AwaitProvider,
    /// `jaas`: recording is started in the provider's own client; onair takes no commands.
    ProviderDriven,
}

/// The deployment's recording policy, fixed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How starts are confirmed.
    pub mode: StartMode,
    /// `false` refuses every start with `recording_disabled`.
    pub enabled: bool,
    /// Whether a room that empties keeps its recording for a grace period
    /// (`[recording] empty_room_grace_s` > 0), so that a page reload does not
    /// end it; otherwise it is stopped at once.
    pub empty_room_grace: bool,
}

/// A wait that must end: every waiting state has a deadline (SPEC §3). The
/// room stores it with the transition that armed it, and feeds
/// [`Input::Expired`] back when it passes, after a restart too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// `initializing` ends after `[recording] start_timeout_s`.
    Start,
    /// `stopping` ends after `[recording] stop_timeout_s`.
    Stop,
    /// A room nobody is in stops its recording after `[recording] empty_room_grace_s`.
    EmptyRoom,
}

impl Deadline {
    /// The name it is stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::EmptyRoom => "empty_room",
        }
    }

    /// The deadline stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "start" => Some(Self::Start),
            "stop" => Some(Self::Stop),
            "empty_room" => Some(Self::EmptyRoom),
            _ => None,
        }
    }
}

/// The recording state of one room.
///
/// It serializes as `{"status":"<snake_case>", …fields}`: the form the
/// cluster keeps in Redis (`cluster::wire`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum State {
    /// Nothing is recording.
    #[default]
    Inactive,
    /// The backend was asked to start and has not confirmed yet.
    Initializing {
        /// onair's id for this recording.
        recording_id: String,
        /// Who asked, to tell them if the backend never confirms.
        requested_by: Option<String>,
    },
    /// The backend records; `started` has been announced.
    Recording {
        /// The recording id.
        recording_id: String,
    },
    /// The backend was asked to stop and has not confirmed yet.
    Stopping {
        /// The recording id.
        recording_id: String,
        /// Whether `started` was announced, so `stopped` must follow.
        announced: bool,
    },
    /// The backend failed; behaves as `inactive` for a new start.
    Failed {
        /// The recording that failed.
        recording_id: String,
        /// The backend's reason.
        reason: String,
    },
}

impl State {
    /// The status as the `status` event names it.
    pub fn status(&self) -> RecordingStatus {
        match self {
            Self::Inactive => RecordingStatus::Inactive,
            Self::Initializing { .. } => RecordingStatus::Initializing,
            Self::Recording { .. } => RecordingStatus::Recording,
            Self::Stopping { .. } => RecordingStatus::Stopping,
            Self::Failed { .. } => RecordingStatus::Failed,
        }
    }

    /// The recording this state is about, if any.
    pub fn recording_id(&self) -> Option<&str> {
        match self {
            Self::Inactive => None,
            Self::Initializing { recording_id, .. }
            | Self::Recording { recording_id }
            | Self::Stopping { recording_id, .. }
            | Self::Failed { recording_id, .. } => Some(recording_id),
        }
    }

    /// Whether a recording is in progress (the "one per room" rule).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Self::Initializing { .. } | Self::Recording { .. } | Self::Stopping { .. }
        )
    }

    /// What a late joiner sees in `join_success` (seed 002): only the
    /// initializing and recording states are reported; a stopping recording
    /// is still being written, so it reports as recording.
    pub fn join_data(&self) -> Option<RecordingData> {
        match self {
            Self::Initializing { recording_id, .. } => Some(RecordingData::Initializing {
                recording_id: Some(recording_id.clone()),
            }),
            Self::Recording { recording_id }
            | Self::Stopping {
                recording_id,
                announced: true,
            } => Some(RecordingData::Recording {
                recording_id: recording_id.clone(),
            }),
            Self::Stopping {
                recording_id,
                announced: false,
            } => Some(RecordingData::Initializing {
                recording_id: Some(recording_id.clone()),
            }),
            Self::Inactive | Self::Failed { .. } => None,
        }
    }
}

/// Who issues a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The participant id, or `None` for the server-to-server API.
    pub participant: Option<String>,
    /// Whether this actor may start and stop recordings.
    pub may_record: bool,
}

/// What the backend needs to know about a start besides the room and id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartOptions {
    /// Record audio only, where the backend supports it.
    pub audio_only: bool,
    /// The user (token `sub`) who asked, for backends that record an owner or actor.
    pub requested_by_user: Option<String>,
}

/// What can happen to a room's recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A moderator (or the API) asks to start; the caller picks the new id.
    Start {
        /// Who asks.
        actor: Actor,
        /// The id the recording will get if it starts.
        new_recording_id: String,
        /// Passed on to the backend.
        options: StartOptions,
    },
    /// A moderator (or the API) asks to stop this recording.
    Stop {
        /// Who asks.
        actor: Actor,
        /// The id the actor named.
        recording_id: String,
    },
    /// The backend confirms that it records.
    BackendRecording {
        /// The recording concerned.
        recording_id: String,
    },
    /// A provider that records on its own (8x8 JaaS) reports a recording
    /// it started; from `inactive` or `failed` the room goes straight to `recording`.
    ProviderStarted {
        /// onair's id for the provider's recording.
        recording_id: String,
    },
    /// The backend reports that the recording ended.
    BackendStopped {
        /// The recording concerned.
        recording_id: String,
    },
    /// The backend reports a failure.
    BackendFailed {
        /// The recording concerned.
        recording_id: String,
        /// The backend's words.
        reason: String,
    },
    /// A deadline armed by [`Effect::Arm`] passed. For
    /// [`Deadline::EmptyRoom`], the room feeds it only while nobody is in it.
    Expired {
        /// Which wait ended.
        deadline: Deadline,
        /// The recording concerned.
        recording_id: String,
    },
    /// The last participant left; the room is about to be dropped.
    RoomEmptied,
    /// Reconciliation found that the provider ended the recording without
    /// onair hearing of it: as [`Input::BackendStopped`], with the reason
    /// [`RECONCILED`] on the `inactive` status.
    Reconciled {
        /// The recording concerned.
        recording_id: String,
    },
}

/// The status reason of a recording that reconciliation with the provider ended.
pub const RECONCILED: &str = "reconciled";

/// What the room must carry out after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Fan `started` out to everyone.
    AnnounceStarted {
        /// The recording id.
        recording_id: String,
    },
    /// Fan `stopped` out to everyone.
    AnnounceStopped {
        /// The recording id.
        recording_id: String,
    },
    /// Fan the `status` extension event out to everyone.
    AnnounceStatus {
        /// The new status.
        status: RecordingStatus,
        /// The recording concerned.
        recording_id: Option<String>,
        /// Why, for failures and timeouts.
        reason: Option<String>,
    },
    /// Refuse the command, to its sender only.
    Refuse(RecordingError),
    /// Send an error to one participant (not the sender of this input).
    Tell {
        /// The participant id.
        participant: String,
        /// The error.
        error: RecordingError,
    },
    /// Ask the backend to start recording.
    BackendStart {
        /// The recording id.
        recording_id: String,
        /// What the requester asked for.
        options: StartOptions,
    },
    /// Ask the backend to stop recording.
    BackendStop {
        /// The recording id.
        recording_id: String,
    },
    /// Feed [`Input::Expired`] back once this deadline passes.
    Arm {
        /// Which wait.
        deadline: Deadline,
        /// The recording id.
        recording_id: String,
    },
}

/// One step of the machine. Inputs that do not apply to the current state
/// (late, duplicated or foreign backend reports) change nothing.
pub fn step(policy: Policy, state: &State, input: Input) -> (State, Vec<Effect>) {
    use Effect::*;
    let unchanged = |effects: Vec<Effect>| (state.clone(), effects);
    match input {
        Input::Start {
            actor,
            new_recording_id,
            options,
        } => {
            if !actor.may_record {
                return unchanged(vec![Refuse(RecordingError::InsufficientPermissions)]);
            }
            if !policy.enabled {
                return unchanged(vec![Refuse(RecordingError::RecordingDisabled)]);
            }
            if policy.mode == StartMode::ProviderDriven {
                return unchanged(vec![Refuse(RecordingError::NotSupported)]);
            }
            if state.is_active() {
                return unchanged(vec![Refuse(RecordingError::AlreadyRecording)]);
            }
            let id = new_recording_id;
            match policy.mode {
                StartMode::Immediate => (
                    State::Recording {
                        recording_id: id.clone(),
                    },
                    vec![
                        AnnounceStarted {
                            recording_id: id.clone(),
                        },
                        status(RecordingStatus::Recording, &id, None),
                    ],
                ),
                _ => (
                    State::Initializing {
                        recording_id: id.clone(),
                        requested_by: actor.participant,
                    },
                    vec![
                        status(RecordingStatus::Initializing, &id, None),
                        BackendStart {
                            recording_id: id.clone(),
                            options,
                        },
                        Arm {
                            deadline: Deadline::Start,
                            recording_id: id,
                        },
                    ],
                ),
            }
        }
        Input::Stop {
            actor,
            recording_id,
        } => {
            if !actor.may_record {
                return unchanged(vec![Refuse(RecordingError::InsufficientPermissions)]);
            }
            if policy.mode == StartMode::ProviderDriven {
                return unchanged(vec![Refuse(RecordingError::NotSupported)]);
            }
            match state {
                State::Initializing {
                    recording_id: id, ..
                } if *id == recording_id => stop(policy, id, false, None),
                State::Recording { recording_id: id } if *id == recording_id => {
                    stop(policy, id, true, None)
                }
                // Already on its way out: a second stop is not an error.
                State::Stopping {
                    recording_id: id, ..
                } if *id == recording_id => unchanged(vec![]),
                _ => unchanged(vec![Refuse(RecordingError::InvalidRecordingId)]),
            }
        }
        Input::BackendRecording { recording_id } => match state {
            State::Initializing {
                recording_id: id, ..
            } if *id == recording_id => (
                State::Recording {
                    recording_id: id.clone(),
                },
                vec![
                    AnnounceStarted {
                        recording_id: id.clone(),
                    },
                    status(RecordingStatus::Recording, id, None),
                ],
            ),
            _ => unchanged(vec![]),
        },
        Input::ProviderStarted { recording_id } => match state {
            State::Inactive | State::Failed { .. } => (
                State::Recording {
                    recording_id: recording_id.clone(),
                },
                vec![
                    AnnounceStarted {
                        recording_id: recording_id.clone(),
                    },
                    status(RecordingStatus::Recording, &recording_id, None),
                ],
            ),
            // One recording per room: a second report while one is active changes nothing.
            _ => unchanged(vec![]),
        },
        Input::BackendStopped { recording_id } => {
            let announced = match state {
                State::Initializing {
                    recording_id: id, ..
                } if *id == recording_id => false,
                State::Recording { recording_id: id } if *id == recording_id => true,
                State::Stopping {
                    recording_id: id,
                    announced,
                } if *id == recording_id => *announced,
                _ => return unchanged(vec![]),
            };
            let mut effects = Vec::with_capacity(2);
            if announced {
                effects.push(AnnounceStopped {
                    recording_id: recording_id.clone(),
                });
            }
            effects.push(status(RecordingStatus::Inactive, &recording_id, None));
            (State::Inactive, effects)
        }
        Input::BackendFailed {
            recording_id,
            reason,
        } => match state {
            s if s.is_active() && s.recording_id() == Some(recording_id.as_str()) => {
                // A client that knows only seed 002 saw `started`: it must see
                // `stopped`, or it shows "recording" forever.
                let announced = matches!(
                    s,
                    State::Recording { .. }
                        | State::Stopping {
                            announced: true,
                            ..
                        }
                );
                let mut effects = Vec::with_capacity(2);
                if announced {
                    effects.push(AnnounceStopped {
                        recording_id: recording_id.clone(),
                    });
                }
                effects.push(status(
                    RecordingStatus::Failed,
                    &recording_id,
                    Some(reason.clone()),
                ));
                (
                    State::Failed {
                        recording_id,
                        reason,
                    },
                    effects,
                )
            }
            _ => unchanged(vec![]),
        },
        Input::Expired {
            deadline: Deadline::Start,
            recording_id,
        } => match state {
            State::Initializing {
                recording_id: id,
                requested_by,
            } if *id == recording_id => {
                let mut effects = Vec::with_capacity(3);
                if let Some(participant) = requested_by {
                    effects.push(Tell {
                        participant: participant.clone(),
                        error: RecordingError::RecorderTimeout,
                    });
                }
                effects.push(status(
                    RecordingStatus::Inactive,
                    id,
                    Some("recorder_timeout".into()),
                ));
                // The backend may still come up late: tell it to stand down.
                effects.push(BackendStop {
                    recording_id: id.clone(),
                });
                (State::Inactive, effects)
            }
            _ => unchanged(vec![]),
        },
        Input::Expired {
            deadline: Deadline::Stop,
            recording_id,
        } => match state {
            // The provider never confirmed the stop: the room is free again.
            State::Stopping {
                recording_id: id,
                announced,
            } if *id == recording_id => {
                let mut effects = Vec::with_capacity(3);
                if *announced {
                    effects.push(AnnounceStopped {
                        recording_id: id.clone(),
                    });
                }
                effects.push(status(
                    RecordingStatus::Inactive,
                    id,
                    Some("stop_timeout".into()),
                ));
                // Once more, in case the first stop was lost (best effort).
                effects.push(BackendStop {
                    recording_id: id.clone(),
                });
                (State::Inactive, effects)
            }
            _ => unchanged(vec![]),
        },
        // A provider that records on its own keeps recording when onair's
        // room empties; its own webhooks end the recording.
        Input::RoomEmptied if policy.mode == StartMode::ProviderDriven => unchanged(vec![]),
        Input::RoomEmptied => match state {
            State::Initializing { recording_id, .. } | State::Recording { recording_id }
                if policy.empty_room_grace =>
            {
                // Kept for the grace period: a reload must not end it.
                unchanged(vec![Arm {
                    deadline: Deadline::EmptyRoom,
                    recording_id: recording_id.clone(),
                }])
            }
            State::Initializing { recording_id, .. } => stop(policy, recording_id, false, None),
            State::Recording { recording_id } => stop(policy, recording_id, true, None),
            _ => unchanged(vec![]),
        },
        Input::Expired {
            deadline: Deadline::EmptyRoom,
            recording_id,
        } => match state {
            State::Initializing {
                recording_id: id, ..
            } if *id == recording_id => stop(policy, id, false, Some("empty_room")),
            State::Recording { recording_id: id } if *id == recording_id => {
                stop(policy, id, true, Some("empty_room"))
            }
            _ => unchanged(vec![]),
        },
        Input::Reconciled { recording_id } => {
            let (next, mut effects) = step(policy, state, Input::BackendStopped { recording_id });
            for effect in &mut effects {
                if let AnnounceStatus {
                    status: RecordingStatus::Inactive,
                    reason,
                    ..
                } = effect
                {
                    *reason = Some(RECONCILED.into());
                }
            }
            (next, effects)
        }
    }
}

/// Stops an initializing or recording room; `reason` goes on the status
/// event when the stop was not asked for (`empty_room`).
fn stop(
    policy: Policy,
    recording_id: &str,
    announced: bool,
    reason: Option<&str>,
) -> (State, Vec<Effect>) {
    let reason = reason.map(str::to_owned);
    if policy.mode == StartMode::Immediate {
        let mut effects = Vec::with_capacity(2);
        if announced {
            effects.push(Effect::AnnounceStopped {
                recording_id: recording_id.to_owned(),
            });
        }
        effects.push(status(RecordingStatus::Inactive, recording_id, reason));
        return (State::Inactive, effects);
    }
    (
        State::Stopping {
            recording_id: recording_id.to_owned(),
            announced,
        },
        vec![
            status(RecordingStatus::Stopping, recording_id, reason),
            Effect::BackendStop {
                recording_id: recording_id.to_owned(),
            },
            Effect::Arm {
                deadline: Deadline::Stop,
                recording_id: recording_id.to_owned(),
            },
        ],
    )
}

fn status(status: RecordingStatus, recording_id: &str, reason: Option<String>) -> Effect {
    Effect::AnnounceStatus {
        status,
        recording_id: Some(recording_id.to_owned()),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::Effect::*;
    use super::*;

    const MANUAL: Policy = Policy {
        mode: StartMode::Immediate,
        enabled: true,
        empty_room_grace: false,
    };
    const PROVIDER: Policy = Policy {
        mode: StartMode::AwaitProvider,
        enabled: true,
        empty_room_grace: false,
    };

    fn expired(deadline: Deadline, recording_id: &str) -> Input {
        Input::Expired {
            deadline,
            recording_id: recording_id.into(),
        }
    }

    fn moderator() -> Actor {
        Actor {
            participant: Some("mod".into()),
            may_record: true,
        }
    }

    fn user() -> Actor {
        Actor {
            participant: Some("user".into()),
            may_record: false,
        }
    }

    fn start(actor: Actor) -> Input {
        Input::Start {
            actor,
            new_recording_id: "r1".into(),
            options: StartOptions::default(),
        }
    }

    fn stop_input(actor: Actor, id: &str) -> Input {
        Input::Stop {
            actor,
            recording_id: id.into(),
        }
    }

    fn recording(id: &str) -> State {
        State::Recording {
            recording_id: id.into(),
        }
    }

    fn initializing(id: &str) -> State {
        State::Initializing {
            recording_id: id.into(),
            requested_by: Some("mod".into()),
        }
    }

    fn st(s: RecordingStatus, reason: Option<&str>) -> Effect {
        AnnounceStatus {
            status: s,
            recording_id: Some("r1".into()),
            reason: reason.map(Into::into),
        }
    }

    #[test]
    fn manual_start_records_at_once() {
        let (s, e) = step(MANUAL, &State::Inactive, start(moderator()));
        assert_eq!(s, recording("r1"));
        assert_eq!(
            e,
            vec![
                AnnounceStarted {
                    recording_id: "r1".into()
                },
                st(RecordingStatus::Recording, None)
            ]
        );
    }

    #[test]
    fn manual_stop_is_immediate() {
        let (s, e) = step(MANUAL, &recording("r1"), stop_input(moderator(), "r1"));
        assert_eq!(s, State::Inactive);
        assert_eq!(
            e,
            vec![
                AnnounceStopped {
                    recording_id: "r1".into()
                },
                st(RecordingStatus::Inactive, None)
            ]
        );
    }

    #[test]
    fn provider_start_waits_for_confirmation() {
        let (s, e) = step(PROVIDER, &State::Inactive, start(moderator()));
        assert_eq!(s, initializing("r1"));
        assert_eq!(
            e,
            vec![
                st(RecordingStatus::Initializing, None),
                BackendStart {
                    recording_id: "r1".into(),
                    options: StartOptions::default(),
                },
                Arm {
                    deadline: Deadline::Start,
                    recording_id: "r1".into()
                }
            ]
        );
        let (s, e) = step(
            PROVIDER,
            &s,
            Input::BackendRecording {
                recording_id: "r1".into(),
            },
        );
        assert_eq!(s, recording("r1"));
        assert_eq!(
            e,
            vec![
                AnnounceStarted {
                    recording_id: "r1".into()
                },
                st(RecordingStatus::Recording, None)
            ]
        );
    }

    #[test]
    fn provider_stop_passes_through_stopping() {
        let (s, e) = step(PROVIDER, &recording("r1"), stop_input(moderator(), "r1"));
        assert_eq!(
            s,
            State::Stopping {
                recording_id: "r1".into(),
                announced: true
            }
        );
        assert_eq!(
            e,
            vec![
                st(RecordingStatus::Stopping, None),
                BackendStop {
                    recording_id: "r1".into()
                },
                Arm {
                    deadline: Deadline::Stop,
                    recording_id: "r1".into()
                }
            ]
        );
        // A second stop while stopping is quietly accepted.
        assert_eq!(
            step(PROVIDER, &s, stop_input(moderator(), "r1")),
            (s.clone(), vec![])
        );
        let (s, e) = step(
            PROVIDER,
            &s,
            Input::BackendStopped {
                recording_id: "r1".into(),
            },
        );
        assert_eq!(s, State::Inactive);
        assert_eq!(
            e,
            vec![
                AnnounceStopped {
                    recording_id: "r1".into()
                },
                st(RecordingStatus::Inactive, None)
            ]
        );
    }

    #[test]
    fn stop_while_initializing_never_announces_stopped() {
        let (s, _) = step(PROVIDER, &initializing("r1"), stop_input(moderator(), "r1"));
        let (s, e) = step(
            PROVIDER,
            &s,
            Input::BackendStopped {
                recording_id: "r1".into(),
            },
        );
        assert_eq!(s, State::Inactive);
        assert_eq!(e, vec![st(RecordingStatus::Inactive, None)]);
    }

    #[test]
    fn refusals() {
        for policy in [MANUAL, PROVIDER] {
            let (s, e) = step(policy, &State::Inactive, start(user()));
            assert_eq!(s, State::Inactive);
            assert_eq!(e, vec![Refuse(RecordingError::InsufficientPermissions)]);
            let (_, e) = step(policy, &recording("r1"), stop_input(user(), "r1"));
            assert_eq!(e, vec![Refuse(RecordingError::InsufficientPermissions)]);
            for active in [
                initializing("r1"),
                recording("r1"),
                State::Stopping {
                    recording_id: "r1".into(),
                    announced: true,
                },
            ] {
                let (s, e) = step(policy, &active, start(moderator()));
                assert_eq!(s, active);
                assert_eq!(e, vec![Refuse(RecordingError::AlreadyRecording)]);
            }
            let (_, e) = step(policy, &recording("r1"), stop_input(moderator(), "r2"));
            assert_eq!(e, vec![Refuse(RecordingError::InvalidRecordingId)]);
            let (_, e) = step(policy, &State::Inactive, stop_input(moderator(), "r1"));
            assert_eq!(e, vec![Refuse(RecordingError::InvalidRecordingId)]);
        }
        let disabled = Policy {
            enabled: false,
            ..MANUAL
        };
        let (_, e) = step(disabled, &State::Inactive, start(moderator()));
        assert_eq!(e, vec![Refuse(RecordingError::RecordingDisabled)]);
        let jaas = Policy {
            mode: StartMode::ProviderDriven,
            enabled: true,
            empty_room_grace: true,
        };
        let (_, e) = step(jaas, &State::Inactive, start(moderator()));
        assert_eq!(e, vec![Refuse(RecordingError::NotSupported)]);
        let (_, e) = step(jaas, &recording("r1"), stop_input(moderator(), "r1"));
        assert_eq!(e, vec![Refuse(RecordingError::NotSupported)]);
    }

    #[test]
    fn failure_rests_until_a_new_start() {
        for (from, announced) in [
            (initializing("r1"), false),
            (recording("r1"), true),
            (
                State::Stopping {
                    recording_id: "r1".into(),
                    announced: true,
                },
                true,
            ),
            (
                State::Stopping {
                    recording_id: "r1".into(),
                    announced: false,
                },
                false,
            ),
        ] {
            let (s, e) = step(
                PROVIDER,
                &from,
                Input::BackendFailed {
                    recording_id: "r1".into(),
                    reason: "disk full".into(),
                },
            );
            assert_eq!(
                s,
                State::Failed {
                    recording_id: "r1".into(),
                    reason: "disk full".into()
                }
            );
            // After `started`, a failure is also a `stopped`.
            let mut expected = Vec::new();
            if announced {
                expected.push(AnnounceStopped {
                    recording_id: "r1".into(),
                });
            }
            expected.push(st(RecordingStatus::Failed, Some("disk full")));
            assert_eq!(e, expected);
            assert_eq!(s.join_data(), None);
            let (s, _) = step(
                PROVIDER,
                &s,
                Input::Start {
                    actor: moderator(),
                    new_recording_id: "r2".into(),
                    options: StartOptions::default(),
                },
            );
            assert_eq!(s.recording_id(), Some("r2"));
            assert_eq!(s.status(), RecordingStatus::Initializing);
        }
    }

    #[test]
    fn timeout_returns_to_inactive_and_tells_the_requester() {
        let (s, e) = step(
            PROVIDER,
            &initializing("r1"),
            expired(Deadline::Start, "r1"),
        );
        assert_eq!(s, State::Inactive);
        assert_eq!(
            e,
            vec![
                Tell {
                    participant: "mod".into(),
                    error: RecordingError::RecorderTimeout
                },
                st(RecordingStatus::Inactive, Some("recorder_timeout")),
                BackendStop {
                    recording_id: "r1".into()
                }
            ]
        );
        // A timeout for a recording that was confirmed in time does nothing.
        let (s, e) = step(PROVIDER, &recording("r1"), expired(Deadline::Start, "r1"));
        assert_eq!((s, e), (recording("r1"), vec![]));
    }

    #[test]
    fn stale_backend_reports_change_nothing() {
        let stale = [
            Input::BackendRecording {
                recording_id: "old".into(),
            },
            Input::BackendStopped {
                recording_id: "old".into(),
            },
            Input::BackendFailed {
                recording_id: "old".into(),
                reason: "x".into(),
            },
            expired(Deadline::Start, "old"),
        ];
        for state in [State::Inactive, initializing("r1"), recording("r1")] {
            for input in stale.clone() {
                assert_eq!(step(PROVIDER, &state, input), (state.clone(), vec![]));
            }
        }
        // A confirmation after the recording is already confirmed is a duplicate.
        let dup = Input::BackendRecording {
            recording_id: "r1".into(),
        };
        assert_eq!(
            step(PROVIDER, &recording("r1"), dup),
            (recording("r1"), vec![])
        );
    }

    #[test]
    fn emptied_room_stops_through_the_backend() {
        let (s, e) = step(PROVIDER, &recording("r1"), Input::RoomEmptied);
        assert_eq!(s.status(), RecordingStatus::Stopping);
        assert!(e.contains(&BackendStop {
            recording_id: "r1".into()
        }));
        let (s, e) = step(MANUAL, &recording("r1"), Input::RoomEmptied);
        assert_eq!(s, State::Inactive);
        assert!(e.contains(&AnnounceStopped {
            recording_id: "r1".into()
        }));
        assert_eq!(
            step(MANUAL, &State::Inactive, Input::RoomEmptied),
            (State::Inactive, vec![])
        );
    }

    #[test]
    fn an_unconfirmed_stop_ends_at_its_deadline() {
        let (s, e) = step(PROVIDER, &recording("r1"), stop_input(moderator(), "r1"));
        assert!(e.contains(&Arm {
            deadline: Deadline::Stop,
            recording_id: "r1".into()
        }));
        // The provider never confirms: the room is free again, `stopped` goes
        // out (it had been announced), and the stop is sent once more.
        let (s, e) = step(PROVIDER, &s, expired(Deadline::Stop, "r1"));
        assert_eq!(s, State::Inactive);
        assert_eq!(
            e,
            vec![
                AnnounceStopped {
                    recording_id: "r1".into()
                },
                st(RecordingStatus::Inactive, Some("stop_timeout")),
                BackendStop {
                    recording_id: "r1".into()
                }
            ]
        );
        // A stop that was confirmed in time, or another recording's deadline: nothing.
        for state in [State::Inactive, recording("r2")] {
            assert_eq!(
                step(PROVIDER, &state, expired(Deadline::Stop, "r1")),
                (state.clone(), vec![])
            );
        }
        // An unannounced recording that never confirmed its stop: no `stopped`.
        let stopping = State::Stopping {
            recording_id: "r1".into(),
            announced: false,
        };
        let (_, e) = step(PROVIDER, &stopping, expired(Deadline::Stop, "r1"));
        assert!(!e.iter().any(|e| matches!(e, AnnounceStopped { .. })));
    }

    #[test]
    fn an_emptied_room_keeps_its_recording_for_the_grace_period() {
        for base in [MANUAL, PROVIDER] {
            let policy = Policy {
                empty_room_grace: true,
                ..base
            };
            // Emptied: nothing stops yet, a deadline is armed.
            let (s, e) = step(policy, &recording("r1"), Input::RoomEmptied);
            assert_eq!(s, recording("r1"));
            assert_eq!(
                e,
                vec![Arm {
                    deadline: Deadline::EmptyRoom,
                    recording_id: "r1".into()
                }]
            );
            // Still empty when it passes: stopped, with the reason.
            let (s, e) = step(policy, &s, expired(Deadline::EmptyRoom, "r1"));
            assert!(
                e.contains(&AnnounceStopped {
                    recording_id: "r1".into()
                }) || s.status() == RecordingStatus::Stopping
            );
            assert!(e.iter().any(|e| matches!(
                e,
                AnnounceStatus { reason: Some(r), .. } if r == "empty_room"
            )));
            // A deadline for another recording does nothing.
            assert_eq!(
                step(policy, &recording("r2"), expired(Deadline::EmptyRoom, "r1")),
                (recording("r2"), vec![])
            );
        }
    }

    #[test]
    fn provider_started_recordings_need_no_start() {
        let jaas = Policy {
            mode: StartMode::ProviderDriven,
            enabled: true,
            empty_room_grace: true,
        };
        let started = Input::ProviderStarted {
            recording_id: "r1".into(),
        };
        let (s, e) = step(jaas, &State::Inactive, started.clone());
        assert_eq!(s, recording("r1"));
        assert_eq!(
            e,
            vec![
                AnnounceStarted {
                    recording_id: "r1".into()
                },
                st(RecordingStatus::Recording, None)
            ]
        );
        // A duplicate or a second recording changes nothing.
        assert_eq!(step(jaas, &s, started), (s.clone(), vec![]));
        let other = Input::ProviderStarted {
            recording_id: "r2".into(),
        };
        assert_eq!(step(jaas, &s, other), (s.clone(), vec![]));
        let (s, e) = step(
            jaas,
            &s,
            Input::BackendStopped {
                recording_id: "r1".into(),
            },
        );
        assert_eq!(s, State::Inactive);
        assert_eq!(
            e[0],
            AnnounceStopped {
                recording_id: "r1".into()
            }
        );
    }

    #[test]
    fn join_data_matches_seed_002() {
        assert_eq!(State::Inactive.join_data(), None);
        assert_eq!(
            recording("r1").join_data(),
            Some(RecordingData::Recording {
                recording_id: "r1".into()
            })
        );
        assert!(matches!(
            initializing("r1").join_data(),
            Some(RecordingData::Initializing { .. })
        ));
    }
}
