//! Large rooms (SPEC §3 "Large rooms"): who hears about whom, and the pace of
//! `participant_count`.
//!
//! In a room with more members than `[server] large_room_threshold`,
//! presence stops growing with the square of the room: an event about a
//! moderator still reaches everyone, an event about anyone else reaches only
//! the moderators, and everyone gets `participant_count {count, consenting}`
//! at most once a second instead. Recording events are not presence and
//! reach everyone as before.

use std::time::{Duration, Instant};

/// How often `participant_count` may go out, at most.
pub(super) const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Who receives a presence event (`joined`, `left`, `update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Audience {
    /// Every member (small rooms; events about moderators).
    Everyone,
    /// Moderators only (events about others in a large room).
    Moderators,
    /// Everyone but moderators (catching the others up when a large room
    /// becomes small again: moderators already know everyone).
    Others,
}

impl Audience {
    /// The audience of an event about a member, moderator or not, in a room
    /// that is large or not.
    pub(super) fn of(large: bool, subject_is_moderator: bool) -> Self {
        if large && !subject_is_moderator {
            Self::Moderators
        } else {
            Self::Everyone
        }
    }

    /// Whether a member, moderator or not, is in this audience.
    pub(super) fn includes(self, is_moderator: bool) -> bool {
        match self {
            Self::Everyone => true,
            Self::Moderators => is_moderator,
            Self::Others => !is_moderator,
        }
    }
}

/// Whether a room of `members` is large (`threshold` 0 = never).
pub(super) fn is_large(threshold: usize, members: usize) -> bool {
    threshold > 0 && members > threshold
}

/// The pacing of a large room's `participant_count`: at once when none went
/// out in the last second, else once, a second after the last.
#[derive(Default)]
pub(super) struct Headcount {
    /// When the last one went out.
    last: Option<Instant>,
    /// Whether a task will send the next one.
    scheduled: bool,
}

/// What to do about a changed headcount.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Send it now.
    Now,
    /// Start a task that sends it after this long.
    Later(Duration),
    /// Nothing: a task will send it.
    Scheduled,
}

impl Headcount {
    /// The count changed at `now`.
    pub(super) fn changed(&mut self, now: Instant) -> Next {
        if self.scheduled {
            return Next::Scheduled;
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) < COUNT_EVERY => {
                self.scheduled = true;
                Next::Later(COUNT_EVERY - now.saturating_duration_since(last))
            }
            _ => {
                self.last = Some(now);
                Next::Now
            }
        }
    }

    /// The scheduled one is due at `now`: `true` if it is still to be sent
    /// (the task sends it).
    pub(super) fn due(&mut self, now: Instant) -> bool {
        let was = std::mem::replace(&mut self.scheduled, false);
        if was {
            self.last = Some(now);
        }
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_about_others_reaches_only_moderators_in_a_large_room() {
        assert_eq!(Audience::of(false, false), Audience::Everyone);
        assert_eq!(Audience::of(true, true), Audience::Everyone);
        assert_eq!(Audience::of(true, false), Audience::Moderators);
        assert!(Audience::Moderators.includes(true));
        assert!(!Audience::Moderators.includes(false));
        assert!(Audience::Others.includes(false));
        assert!(!Audience::Others.includes(true));
        assert!(!is_large(0, 10_000));
        assert!(!is_large(250, 250));
        assert!(is_large(250, 251));
    }

    #[test]
    fn the_count_goes_out_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut headcount = Headcount::default();
        assert_eq!(headcount.changed(t0), Next::Now);
        let later = headcount.changed(t0 + Duration::from_millis(300));
        assert_eq!(later, Next::Later(Duration::from_millis(700)));
        assert_eq!(
            headcount.changed(t0 + Duration::from_millis(500)),
            Next::Scheduled
        );
        assert!(headcount.due(t0 + Duration::from_millis(1000)));
        // Sent at 1.0 s: a change at 1.5 s waits until 2.0 s.
        assert_eq!(
            headcount.changed(t0 + Duration::from_millis(1500)),
            Next::Later(Duration::from_millis(500))
        );
        assert!(headcount.due(t0 + Duration::from_millis(2000)));
        assert!(!headcount.due(t0 + Duration::from_millis(2001)));
        assert_eq!(
            headcount.changed(t0 + Duration::from_millis(3100)),
            Next::Now
        );
    }
}
