//! Per-connection timers as a pure state machine: heartbeat pings, the pong deadline, and
//! token expiry. The shell feeds it `now` and sleeps until [`Liveness::poll_timeout`].

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// Heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Idle time after which the server sends a ping.
    pub ping_interval: Duration,
    /// Time after a ping within which the client must show a pong or any other traffic.
    pub pong_timeout: Duration,
}

/// A [`LivenessConfig`] that cannot work: a zero ping interval pings in a loop, a zero pong
/// timeout closes every idle client, an hour-long pong timeout never notices a dead one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LivenessConfigError {
    /// `ping_interval` is outside [`LivenessConfig::PING_INTERVAL`].
    #[error("ping_interval must be between {min:?} and {max:?}, got {got:?}")]
    PingInterval {
        /// The configured value.
        got: Duration,
        /// The shortest accepted value.
        min: Duration,
        /// The longest accepted value.
        max: Duration,
    },
    /// `pong_timeout` is outside [`LivenessConfig::PONG_TIMEOUT`].
    #[error("pong_timeout must be between {min:?} and {max:?}, got {got:?}")]
    PongTimeout {
        /// The configured value.
        got: Duration,
        /// The shortest accepted value.
        min: Duration,
        /// The longest accepted value.
        max: Duration,
    },
}

impl LivenessConfig {
    /// Accepted `ping_interval`s: 10 ms (the floor only stops a busy loop; tests use
    /// short timers) to 1 hour.
    pub const PING_INTERVAL: RangeInclusive<Duration> =
        Duration::from_millis(10)..=Duration::from_secs(3600);
    /// Accepted `pong_timeout`s: 10 ms to 10 minutes.
    pub const PONG_TIMEOUT: RangeInclusive<Duration> =
        Duration::from_millis(10)..=Duration::from_secs(600);

    /// Checks that the heartbeat can work.
    ///
    /// # Errors
    /// [`LivenessConfigError`] names the first setting outside its range.
    pub fn validate(&self) -> Result<(), LivenessConfigError> {
        let (ping, pong) = (Self::PING_INTERVAL, Self::PONG_TIMEOUT);
        if !ping.contains(&self.ping_interval) {
            let (min, max) = (*ping.start(), *ping.end());
            return Err(LivenessConfigError::PingInterval { got: self.ping_interval, min, max });
        }
        if !pong.contains(&self.pong_timeout) {
            let (min, max) = (*pong.start(), *pong.end());
            return Err(LivenessConfigError::PongTimeout { got: self.pong_timeout, min, max });
        }
        Ok(())
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// What the shell must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    /// Send a WebSocket ping.
    SendPing,
    /// The client showed nothing within the pong timeout: close (heartbeat timeout).
    Close,
    /// The token expired: close (token expired).
    Expired,
}

/// Heartbeat and expiry state of one connection.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// The config's two durations, in nanoseconds (every connection has one: 16 bytes, not
    /// 32).
    ping_interval: u64,
    pong_timeout: u64,
    last_seen: Instant,
    ping_sent_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl Liveness {
    /// A connection that was last heard from at `now`, whose token expires at `expires_at`.
    pub fn new(config: LivenessConfig, now: Instant, expires_at: Option<Instant>) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Liveness {
            ping_interval: nanos(config.ping_interval),
            pong_timeout: nanos(config.pong_timeout),
            last_seen: now,
            ping_sent_at: None,
            expires_at,
        }
    }

    /// The client sent something (a pong or any frame) at `now`.
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(now);
        self.ping_sent_at = None;
    }

    /// The connection's token changed (an in-band refresh): from now on it expires at
    /// `expires_at` (`None`: never). The heartbeat is unchanged.
    pub fn set_expiry(&mut self, expires_at: Option<Instant>) {
        self.expires_at = expires_at;
    }

    /// Time has reached `now`: what to do, if anything.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LivenessAction> {
        if self.expires_at.is_some_and(|at| now >= at) {
            return Some(LivenessAction::Expired);
        }
        match self.ping_sent_at {
            Some(sent) if now >= sent + Duration::from_nanos(self.pong_timeout) => {
                Some(LivenessAction::Close)
            }
            Some(_) => None,
            None if now >= self.last_seen + Duration::from_nanos(self.ping_interval) => {
                self.ping_sent_at = Some(now);
                Some(LivenessAction::SendPing)
            }
            None => None,
        }
    }

    /// When [`Liveness::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Instant {
        let heartbeat = match self.ping_sent_at {
            Some(sent) => sent + Duration::from_nanos(self.pong_timeout),
            None => self.last_seen + Duration::from_nanos(self.ping_interval),
        };
        self.expires_at.map_or(heartbeat, |at| at.min(heartbeat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a test needs one real Instant to offset from
    fn t0() -> Instant {
        Instant::now()
    }

    const S: Duration = Duration::from_secs(1);

    #[track_caller]
    fn check_config(ping_ms: u64, pong_ms: u64, expected: Result<(), &str>) {
        let config = LivenessConfig {
            ping_interval: Duration::from_millis(ping_ms),
            pong_timeout: Duration::from_millis(pong_ms),
        };
        let got = config.validate().map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(text), Err(want)) if text.starts_with(want) => {}
            _ => panic!("ping {ping_ms} ms, pong {pong_ms} ms: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn config_validation() {
        assert_eq!(LivenessConfig::default().validate(), Ok(()));
        check_config(25_000, 10_000, Ok(()));
        check_config(10, 10, Ok(()));
        check_config(3_600_000, 600_000, Ok(()));
        check_config(0, 10_000, Err("ping_interval must be between 10ms and 3600s, got 0ns"));
        check_config(9, 10_000, Err("ping_interval"));
        check_config(3_600_001, 10_000, Err("ping_interval"));
        check_config(25_000, 0, Err("pong_timeout must be between 10ms and 600s, got 0ns"));
        check_config(25_000, 600_001, Err("pong_timeout"));
        assert_eq!(
            LivenessConfig { ping_interval: Duration::ZERO, pong_timeout: Duration::ZERO }
                .validate(),
            Err(LivenessConfigError::PingInterval {
                got: Duration::ZERO,
                min: Duration::from_millis(10),
                max: Duration::from_secs(3600),
            }),
            "the first bad setting is named"
        );
    }

    #[test]
    fn idle_connection_is_pinged_then_closed() {
        let t = t0();
        let mut l = Liveness::new(LivenessConfig::default(), t, None);
        assert_eq!(l.poll_timeout(), t + 25 * S);
        assert_eq!(l.handle_timeout(t + 24 * S), None);
        assert_eq!(l.handle_timeout(t + 25 * S), Some(LivenessAction::SendPing));
        assert_eq!(l.poll_timeout(), t + 35 * S);
        assert_eq!(l.handle_timeout(t + 34 * S), None);
        assert_eq!(l.handle_timeout(t + 35 * S), Some(LivenessAction::Close));
    }

    #[test]
    fn activity_resets_the_heartbeat() {
        let t = t0();
        let mut l = Liveness::new(LivenessConfig::default(), t, None);
        assert_eq!(l.handle_timeout(t + 25 * S), Some(LivenessAction::SendPing));
        l.handle_activity(t + 30 * S);
        assert_eq!(l.poll_timeout(), t + 55 * S);
        assert_eq!(l.handle_timeout(t + 40 * S), None);
    }

    #[test]
    fn expiry_wins() {
        let t = t0();
        let mut l = Liveness::new(LivenessConfig::default(), t, Some(t + 5 * S));
        assert_eq!(l.poll_timeout(), t + 5 * S);
        assert_eq!(l.handle_timeout(t + 4 * S), None);
        assert_eq!(l.handle_timeout(t + 5 * S), Some(LivenessAction::Expired));
    }

    #[test]
    fn a_refresh_moves_the_expiry() {
        let t = t0();
        let mut l = Liveness::new(LivenessConfig::default(), t, Some(t + 5 * S));
        l.set_expiry(Some(t + 60 * S));
        assert_eq!(l.poll_timeout(), t + 25 * S, "the heartbeat comes first now");
        assert_eq!(l.handle_timeout(t + 5 * S), None, "the old expiry no longer counts");
        assert_eq!(l.handle_timeout(t + 25 * S), Some(LivenessAction::SendPing));
        l.handle_activity(t + 26 * S);
        assert_eq!(l.handle_timeout(t + 60 * S), Some(LivenessAction::Expired));
        // An earlier expiry, or none at all, counts at once.
        l.set_expiry(Some(t + 2 * S));
        assert_eq!(l.poll_timeout(), t + 2 * S);
        l.set_expiry(None);
        assert_eq!(l.poll_timeout(), t + 51 * S);
        assert_eq!(l.handle_timeout(t + 50 * S), None);
    }
}
