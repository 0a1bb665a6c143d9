//! Per-connection timers as a pure state machine: heartbeat pings, the pong deadline, and
//! token expiry. The shell feeds it `now` and sleeps until [`Liveness::poll_timeout`].

use std::time::{Duration, Instant};

/// Heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Idle time after which the server sends a ping.
    pub ping_interval: Duration,
    /// Time after a ping within which the client must show a pong or any other traffic.
    pub pong_timeout: Duration,
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
    config: LivenessConfig,
    last_seen: Instant,
    ping_sent_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl Liveness {
    /// A connection that was last heard from at `now`, whose token expires at `expires_at`.
    pub fn new(config: LivenessConfig, now: Instant, expires_at: Option<Instant>) -> Self {
        Liveness { config, last_seen: now, ping_sent_at: None, expires_at }
    }

    /// The client sent something (a pong or any frame) at `now`.
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(now);
        self.ping_sent_at = None;
    }

    /// Time has reached `now`: what to do, if anything.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LivenessAction> {
        if self.expires_at.is_some_and(|at| now >= at) {
            return Some(LivenessAction::Expired);
        }
        match self.ping_sent_at {
            Some(sent) if now >= sent + self.config.pong_timeout => Some(LivenessAction::Close),
            Some(_) => None,
            None if now >= self.last_seen + self.config.ping_interval => {
                self.ping_sent_at = Some(now);
                Some(LivenessAction::SendPing)
            }
            None => None,
        }
    }

    /// When [`Liveness::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Instant {
        let heartbeat = match self.ping_sent_at {
            Some(sent) => sent + self.config.pong_timeout,
            None => self.last_seen + self.config.ping_interval,
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
}
