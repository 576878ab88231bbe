//! Property tests of the pure recording state machine: for any sequence of
//! commands, backend reports, timeouts, reconciliations and disconnects, there is never more
//! than one active recording, every `started` is followed by exactly one
//! `stopped` for that id (also when it fails: a seed-002 client knows no
//! other end), and a recording never moves backwards.

use std::collections::HashMap;

use onair::protocol::RecordingStatus;
use onair::recording::{
    Actor, Deadline, Effect, Input, Policy, StartMode, StartOptions, State, step,
};
use proptest::prelude::*;

/// An abstract input: ids are picked from a small pool so that stale and
/// duplicate reports are common.
#[derive(Debug, Clone)]
enum Op {
    Start {
        may_record: bool,
    },
    Stop {
        may_record: bool,
        id: usize,
    },
    StopCurrent,
    Recording {
        id: usize,
    },
    RecordingCurrent,
    Stopped {
        id: usize,
    },
    StoppedCurrent,
    Failed {
        id: usize,
    },
    FailedCurrent,
    ProviderStarted,
    TimedOut {
        id: usize,
    },
    TimedOutCurrent,
    StopTimedOutCurrent,
    EmptyRoomExpiredCurrent,
    /// Reconciliation: the provider ended it without onair hearing of it.
    Reconciled {
        id: usize,
    },
    ReconciledCurrent,
    RoomEmptied,
    /// The process dies and comes back: the state is what was saved.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(|may_record| Op::Start { may_record }),
        (any::<bool>(), 0..4usize).prop_map(|(may_record, id)| Op::Stop { may_record, id }),
        Just(Op::StopCurrent),
        (0..4usize).prop_map(|id| Op::Recording { id }),
        Just(Op::RecordingCurrent),
        (0..4usize).prop_map(|id| Op::Stopped { id }),
        Just(Op::StoppedCurrent),
        (0..4usize).prop_map(|id| Op::Failed { id }),
        Just(Op::FailedCurrent),
        Just(Op::ProviderStarted),
        (0..4usize).prop_map(|id| Op::TimedOut { id }),
        Just(Op::TimedOutCurrent),
        Just(Op::StopTimedOutCurrent),
        Just(Op::EmptyRoomExpiredCurrent),
        (0..4usize).prop_map(|id| Op::Reconciled { id }),
        Just(Op::ReconciledCurrent),
        Just(Op::RoomEmptied),
        Just(Op::Restart),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(StartMode::Immediate),
        Just(StartMode::AwaitProvider),
        Just(StartMode::ProviderDriven),
    ]
    .prop_flat_map(|mode| {
        any::<bool>().prop_map(move |empty_room_grace| Policy {
            mode,
            enabled: true,
            empty_room_grace,
        })
    })
}

/// How far along a recording is; a recording's rank never decreases.
fn rank(status: RecordingStatus) -> u8 {
    match status {
        RecordingStatus::Initializing => 0,
        RecordingStatus::Recording => 1,
        RecordingStatus::Stopping => 2,
        RecordingStatus::Failed | RecordingStatus::Inactive => 3,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn invariants_hold_for_any_sequence(policy in policy(), ops in prop::collection::vec(op(), 0..60)) {
        let mut state = State::Inactive;
        let mut issued: Vec<String> = Vec::new();
        // Per recording id: announced started, ended (stopped or failed), last rank.
        let mut started: HashMap<String, bool> = HashMap::new();
        let mut ended: HashMap<String, u32> = HashMap::new();
        let mut ranks: HashMap<String, u8> = HashMap::new();
        let pick = |issued: &Vec<String>, i: usize| issued.get(i).cloned().unwrap_or_else(|| format!("unknown-{i}"));
        for op in ops {
            let current = state.recording_id().map(str::to_owned).unwrap_or_else(|| "none".into());
            let actor = |may_record| Actor { participant: Some("p".into()), may_record };
            let input = match op {
                Op::Start { may_record } => {
                    let id = format!("r{}", issued.len());
                    issued.push(id.clone());
                    Input::Start { actor: actor(may_record), new_recording_id: id, options: StartOptions::default() }
                }
                Op::Stop { may_record, id } => Input::Stop { actor: actor(may_record), recording_id: pick(&issued, id) },
                Op::StopCurrent => Input::Stop { actor: actor(true), recording_id: current },
                Op::Recording { id } => Input::BackendRecording { recording_id: pick(&issued, id) },
                Op::RecordingCurrent => Input::BackendRecording { recording_id: current },
                Op::Stopped { id } => Input::BackendStopped { recording_id: pick(&issued, id) },
                Op::StoppedCurrent => Input::BackendStopped { recording_id: current },
                Op::Failed { id } => Input::BackendFailed { recording_id: pick(&issued, id), reason: "x".into() },
                Op::FailedCurrent => Input::BackendFailed { recording_id: current, reason: "x".into() },
                Op::ProviderStarted => {
                    let id = format!("r{}", issued.len());
                    issued.push(id.clone());
                    Input::ProviderStarted { recording_id: id }
                }
                Op::TimedOut { id } => Input::Expired { deadline: Deadline::Start, recording_id: pick(&issued, id) },
                Op::TimedOutCurrent => Input::Expired { deadline: Deadline::Start, recording_id: current },
                Op::StopTimedOutCurrent => Input::Expired { deadline: Deadline::Stop, recording_id: current },
                Op::EmptyRoomExpiredCurrent => Input::Expired { deadline: Deadline::EmptyRoom, recording_id: current },
                Op::Reconciled { id } => Input::Reconciled { recording_id: pick(&issued, id) },
                Op::ReconciledCurrent => Input::Reconciled { recording_id: current },
                Op::RoomEmptied => Input::RoomEmptied,
                Op::Restart => {
                    // What was saved is what comes back.
                    let saved = serde_json::to_string(&state).unwrap();
                    state = serde_json::from_str(&saved).unwrap();
                    continue;
                }
            };
            let before = state.clone();
            let (next, effects) = step(policy, &state, input);

            // At most one active recording: a new active id only from a resting state.
            if next.is_active() && before.is_active() {
                prop_assert_eq!(next.recording_id(), before.recording_id());
            }
            for effect in &effects {
                match effect {
                    Effect::AnnounceStarted { recording_id } => {
                        prop_assert!(!started.contains_key(recording_id), "started twice for {}", recording_id);
                        started.insert(recording_id.clone(), true);
                    }
                    Effect::AnnounceStopped { recording_id } => {
                        prop_assert!(started.contains_key(recording_id), "stopped without started for {}", recording_id);
                        *ended.entry(recording_id.clone()).or_default() += 1;
                    }
                    Effect::AnnounceStatus { status, recording_id: Some(id), .. } => {
                        let r = rank(*status);
                        let previous = ranks.insert(id.clone(), r).unwrap_or(0);
                        prop_assert!(r >= previous, "{} moved backwards to {:?}", id, status);
                    }
                    _ => {}
                }
            }
            // Every waiting state it enters has its deadline armed.
            if next != before {
                let wait = match &next {
                    State::Initializing { .. } => Some(Deadline::Start),
                    State::Stopping { .. } => Some(Deadline::Stop),
                    _ => None,
                };
                if let (Some(wait), Some(id)) = (wait, next.recording_id()) {
                    prop_assert!(
                        effects.iter().any(|e| matches!(e, Effect::Arm { deadline, recording_id } if *deadline == wait && recording_id == id)),
                        "{:?} entered without its deadline", next
                    );
                }
            }
            for (id, n) in &ended {
                prop_assert!(*n <= 1, "{} ended {} times", id, n);
            }
            state = next;
        }
        // Every started recording that is no longer active has ended exactly once.
        for id in started.keys() {
            if state.recording_id() != Some(id.as_str()) || !state.is_active() {
                prop_assert_eq!(ended.get(id).copied().unwrap_or(0), 1, "{} started but never ended", id);
            }
        }
    }
}
