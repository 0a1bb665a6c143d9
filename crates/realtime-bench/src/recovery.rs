//! [`RecoveryCheck`]: what a client reconnecting with `since` must receive, checked frame by
//! frame: every stream it named `recovered: true` in `connected`, then exactly the missed
//! publications of each stream, in offset order, before anything else.

use std::collections::BTreeMap;

use crate::wire::{Positions, StreamState};

/// Why a reconnect with `since` did not recover what the client missed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// `connected` says `recovered: false` for a stream named in `since`, or does not name
    /// it at all.
    #[error("stream {stream:?} not recovered")]
    NotRecovered {
        /// The stream.
        stream: String,
    },
    /// `connected` reports a new epoch for a stream while saying it was recovered.
    #[error("stream {stream:?} recovered in epoch {got:?}, the client was in {expected:?}")]
    EpochChanged {
        /// The stream.
        stream: String,
        /// The client's epoch.
        expected: String,
        /// The server's.
        got: String,
    },
    /// The offsets in `connected` do not add up to the number of publications missed.
    #[error("connected positions are {got} publications ahead of since, {expected} were missed")]
    WrongCount {
        /// Publications missed.
        expected: u64,
        /// Sum over the streams of (offset in `connected` − offset in `since`).
        got: u64,
    },
    /// A frame other than the next missed publication arrived before all of them did.
    #[error("expected {stream:?} offset {expected}, got {got}")]
    WrongOffset {
        /// The stream the next publication was expected in.
        stream: String,
        /// The offset expected next.
        expected: u64,
        /// What arrived (`stream offset`, or the frame's start).
        got: String,
    },
    /// The connection ended or timed out before every missed publication arrived.
    #[error("{got} of {expected} missed publications arrived")]
    Missing {
        /// Publications missed.
        expected: u64,
        /// Publications that arrived.
        got: u64,
    },
}

impl RecoveryError {
    /// Whether the server said it could not recover (as opposed to a wrong count or order).
    pub fn is_not_recovered(&self) -> bool {
        matches!(self, RecoveryError::NotRecovered { .. } | RecoveryError::EpochChanged { .. })
    }
}

/// The missed publications a reconnecting client still waits for, per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCheck {
    /// Per stream: (next offset expected, last offset, epoch).
    pending: BTreeMap<String, (u64, u64, String)>,
    expected: u64,
    received: u64,
}

impl RecoveryCheck {
    /// What must follow `connected` (whose streams are `connected`) for a client that
    /// reconnected with `since` after missing `missed` publications over all its streams.
    ///
    /// # Errors
    /// [`RecoveryError::NotRecovered`] or [`RecoveryError::EpochChanged`] when a stream of
    /// `since` was not recovered, [`RecoveryError::WrongCount`] when the positions in
    /// `connected` are not `missed` publications ahead of `since`.
    pub fn new(
        since: &Positions,
        connected: &BTreeMap<String, StreamState>,
        missed: u64,
    ) -> Result<RecoveryCheck, RecoveryError> {
        let mut pending = BTreeMap::new();
        let mut ahead = 0u64;
        for (stream, from) in since {
            let state = connected
                .get(stream)
                .filter(|s| s.recovered)
                .ok_or_else(|| RecoveryError::NotRecovered { stream: stream.clone() })?;
            if state.epoch != from.epoch {
                return Err(RecoveryError::EpochChanged {
                    stream: stream.clone(),
                    expected: from.epoch.clone(),
                    got: state.epoch.clone(),
                });
            }
            let delta = state
                .offset
                .checked_sub(from.offset)
                .ok_or(RecoveryError::WrongCount { expected: missed, got: 0 })?;
            ahead = ahead.saturating_add(delta);
            if delta > 0 {
                pending
                    .insert(stream.clone(), (from.offset + 1, state.offset, state.epoch.clone()));
            }
        }
        if ahead != missed {
            return Err(RecoveryError::WrongCount { expected: missed, got: ahead });
        }
        Ok(RecoveryCheck { pending, expected: missed, received: 0 })
    }

    /// Accounts the next frame after `connected`: a publication in `stream` at `offset`
    /// (`None` for a frame without a position, described by `what`).
    ///
    /// # Errors
    /// [`RecoveryError::WrongOffset`] when it is not the next missed publication of a stream.
    pub fn handle(
        &mut self,
        position: Option<(&str, u64, &str)>,
        what: &str,
    ) -> Result<(), RecoveryError> {
        let wrong = |stream: &str, expected: u64, got: String| RecoveryError::WrongOffset {
            stream: stream.to_owned(),
            expected,
            got,
        };
        let Some((stream, offset, epoch)) = position else {
            let (stream, (next, _, _)) = self
                .pending
                .iter()
                .next()
                .map_or(("", (0, 0, String::new())), |(s, p)| (s.as_str(), p.clone()));
            return Err(wrong(stream, next, what.chars().take(80).collect()));
        };
        let Some((next, last, known_epoch)) = self.pending.get_mut(stream) else {
            return Err(wrong(stream, 0, format!("{stream} {offset}")));
        };
        if offset != *next || epoch != known_epoch {
            return Err(wrong(stream, *next, format!("{stream} {offset} (epoch {epoch})")));
        }
        self.received += 1;
        if offset == *last {
            self.pending.remove(stream);
        } else {
            *next += 1;
        }
        Ok(())
    }

    /// Whether every missed publication arrived.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Missed publications received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The error for a connection that ended (or timed out) now.
    pub fn missing(&self) -> RecoveryError {
        RecoveryError::Missing { expected: self.expected, got: self.received }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Position;

    fn since(entries: &[(&str, &str, u64)]) -> Positions {
        entries
            .iter()
            .map(|&(s, e, o)| (s.to_owned(), Position { epoch: e.to_owned(), offset: o }))
            .collect()
    }

    fn connected(entries: &[(&str, &str, u64, bool)]) -> BTreeMap<String, StreamState> {
        entries
            .iter()
            .map(|&(s, e, o, r)| {
                (s.to_owned(), StreamState { epoch: e.to_owned(), offset: o, recovered: r })
            })
            .collect()
    }

    #[track_caller]
    fn check(
        since_: &[(&str, &str, u64)],
        connected_: &[(&str, &str, u64, bool)],
        missed: u64,
        frames: &[Option<(&str, u64, &str)>],
        expected: Result<(), RecoveryError>,
    ) {
        let result = RecoveryCheck::new(&since(since_), &connected(connected_), missed).and_then(
            |mut check| {
                for &frame in frames {
                    if check.is_done() {
                        break;
                    }
                    check.handle(frame, "{\"type\":\"other\"}")?;
                }
                if check.is_done() { Ok(()) } else { Err(check.missing()) }
            },
        );
        assert_eq!(result, expected);
    }

    #[test]
    fn the_missed_publications_must_follow_in_order() {
        let since_ = [("broadcast", "e1", 7), ("user:u", "e2", 3)];
        let ok = [("broadcast", "e1", 9, true), ("user:u", "e2", 3, true)];
        let b = |offset| Some(("broadcast", offset, "e1"));
        check(&since_, &ok, 2, &[b(8), b(9)], Ok(()));
        check(&since_, &ok, 2, &[b(8)], Err(RecoveryError::Missing { expected: 2, got: 1 }));
        let wrong = |expected, got: &str| {
            Err(RecoveryError::WrongOffset {
                stream: "broadcast".into(),
                expected,
                got: got.into(),
            })
        };
        check(&since_, &ok, 2, &[b(9)], wrong(8, "broadcast 9 (epoch e1)"));
        check(&since_, &ok, 2, &[b(8), b(8)], wrong(9, "broadcast 8 (epoch e1)"));
        check(&since_, &ok, 2, &[b(8), None], wrong(9, "{\"type\":\"other\"}"));
        check(&since_, &ok, 2, &[Some(("broadcast", 8, "e9"))], wrong(8, "broadcast 8 (epoch e9)"));
        check(
            &since_,
            &ok,
            2,
            &[Some(("user:u", 4, "e2"))],
            Err(RecoveryError::WrongOffset {
                stream: "user:u".into(),
                expected: 0,
                got: "user:u 4".into(),
            }),
        );
        // Nothing missed: done at once.
        let none = [("broadcast", "e1", 7, true), ("user:u", "e2", 3, true)];
        check(&since_, &none, 0, &[], Ok(()));
    }

    #[test]
    fn connected_must_say_recovered_at_the_right_positions() {
        let since_ = [("broadcast", "e1", 7), ("user:u", "e2", 3)];
        let not = |stream: &str| Err(RecoveryError::NotRecovered { stream: stream.into() });
        check(
            &since_,
            &[("broadcast", "e1", 9, true), ("user:u", "e2", 3, false)],
            2,
            &[],
            not("user:u"),
        );
        check(&since_, &[("broadcast", "e1", 9, true)], 2, &[], not("user:u"));
        check(&since_, &[], 2, &[], not("broadcast"));
        check(
            &since_,
            &[("broadcast", "e5", 9, true), ("user:u", "e2", 3, true)],
            2,
            &[],
            Err(RecoveryError::EpochChanged {
                stream: "broadcast".into(),
                expected: "e1".into(),
                got: "e5".into(),
            }),
        );
        check(
            &since_,
            &[("broadcast", "e1", 8, true), ("user:u", "e2", 3, true)],
            2,
            &[],
            Err(RecoveryError::WrongCount { expected: 2, got: 1 }),
        );
        check(
            &since_,
            &[("broadcast", "e1", 6, true), ("user:u", "e2", 3, true)],
            2,
            &[],
            Err(RecoveryError::WrongCount { expected: 2, got: 0 }),
        );
        assert!(RecoveryError::NotRecovered { stream: "x".into() }.is_not_recovered());
        assert!(!RecoveryError::WrongCount { expected: 1, got: 0 }.is_not_recovered());
    }
}
