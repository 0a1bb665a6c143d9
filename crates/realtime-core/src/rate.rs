//! Per-connection inbound rate limit as a pure state machine: a token bucket (in its GCRA
//! form: one "theoretical arrival time" instead of a token count), fed `now` by the shell.

use std::time::{Duration, Instant};

/// How many refused messages in a row end the connection ([`RateVerdict::Exceeded`]).
pub const REFUSALS_BEFORE_CLOSE: u32 = 10;

/// Inbound rate limit settings: a steady rate and a burst on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Messages per second a client may send on average.
    pub per_second: u32,
    /// Messages a client may send at once after being quiet (the bucket's size).
    pub burst: u32,
}

impl RateLimitConfig {
    /// The largest accepted `per_second` and `burst`.
    pub const MAX: u32 = 1_000_000;
}

impl Default for RateLimitConfig {
    /// 100 messages per second, bursts of 200.
    fn default() -> Self {
        RateLimitConfig { per_second: 100, burst: 200 }
    }
}

/// What the shell does with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the limit: handle it.
    Allowed,
    /// Over the limit: drop it and tell the client (`rate_limited`).
    Limited,
    /// Over the limit [`REFUSALS_BEFORE_CLOSE`] times in a row: close the connection.
    Exceeded,
}

/// The rate limit state of one connection.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Time one message costs, in nanoseconds (every connection has a limiter: 8 bytes, not
    /// a `Duration`'s 16).
    interval: u64,
    /// How far ahead of `now` the arrival time may run (the burst less one message), in
    /// nanoseconds.
    tolerance: u64,
    /// When the bucket would be full again if nothing more came.
    full_at: Instant,
    refusals: u32,
}

impl RateLimiter {
    /// A full bucket at `now`. Zero settings count as 1.
    pub fn new(config: RateLimitConfig, now: Instant) -> Self {
        let interval = Duration::from_secs(1) / config.per_second.max(1);
        let tolerance = interval.saturating_mul(config.burst.max(1) - 1);
        RateLimiter {
            interval: nanos(interval),
            tolerance: nanos(tolerance),
            full_at: now,
            refusals: 0,
        }
    }

    /// A client message arrived at `now`: whether it is within the limit.
    pub fn handle_message(&mut self, now: Instant) -> RateVerdict {
        let full_at = self.full_at.max(now);
        let next = full_at.checked_add(Duration::from_nanos(self.interval));
        match next {
            Some(next) if full_at.duration_since(now) <= Duration::from_nanos(self.tolerance) => {
                self.full_at = next;
                self.refusals = 0;
                RateVerdict::Allowed
            }
            _ => {
                self.refusals = self.refusals.saturating_add(1);
                if self.refusals >= REFUSALS_BEFORE_CLOSE {
                    RateVerdict::Exceeded
                } else {
                    RateVerdict::Limited
                }
            }
        }
    }

    /// The earliest instant at which a message would be allowed (`now` or earlier when one
    /// would be allowed already).
    pub fn poll_allowed_at(&self) -> Instant {
        self.full_at.checked_sub(Duration::from_nanos(self.tolerance)).unwrap_or(self.full_at)
    }
}

/// `duration` in nanoseconds, saturating (584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a test needs one real Instant to offset from
    fn t0() -> Instant {
        Instant::now()
    }

    /// Sends one message at each offset (milliseconds from the start) and compares the
    /// verdicts.
    #[track_caller]
    fn check(config: RateLimitConfig, at_ms: &[u64], expected: &[RateVerdict]) {
        let start = t0();
        let mut limiter = RateLimiter::new(config, start);
        let got: Vec<RateVerdict> = at_ms
            .iter()
            .map(|ms| limiter.handle_message(start + Duration::from_millis(*ms)))
            .collect();
        assert_eq!(got, expected);
    }

    use RateVerdict::{Allowed as A, Exceeded as X, Limited as L};

    #[test]
    fn a_burst_then_the_steady_rate() {
        let config = RateLimitConfig { per_second: 10, burst: 3 };
        // Three at once, the fourth refused; one more every 100 ms.
        check(config, &[0, 0, 0, 0, 50, 100, 150, 200, 200], &[A, A, A, L, L, A, L, A, L]);
        // After a quiet second the bucket is full again.
        check(config, &[0, 0, 0, 1000, 1000, 1000, 1000], &[A, A, A, A, A, A, L]);
    }

    #[test]
    fn refusals_in_a_row_end_with_exceeded_and_an_allowed_message_resets_them() {
        let config = RateLimitConfig { per_second: 1, burst: 1 };
        let mut at = vec![0u64; 1 + REFUSALS_BEFORE_CLOSE as usize];
        let mut expected = vec![A];
        expected.extend(std::iter::repeat_n(L, REFUSALS_BEFORE_CLOSE as usize - 1));
        expected.push(X);
        check(config, &at, &expected);
        // One allowed message in between starts the count again.
        at = vec![0, 0, 0, 1000, 1000];
        check(config, &at, &[A, L, L, A, L]);
    }

    #[test]
    fn zero_and_extreme_settings_do_not_panic() {
        let start = t0();
        for config in [
            RateLimitConfig { per_second: 0, burst: 0 },
            RateLimitConfig { per_second: u32::MAX, burst: u32::MAX },
            RateLimitConfig { per_second: 1, burst: u32::MAX },
        ] {
            let mut limiter = RateLimiter::new(config, start);
            assert_eq!(limiter.handle_message(start), A, "{config:?}");
            let _ = limiter.poll_allowed_at();
        }
    }

    #[test]
    fn poll_allowed_at_says_when_the_next_message_passes() {
        let start = t0();
        let mut limiter = RateLimiter::new(RateLimitConfig { per_second: 10, burst: 1 }, start);
        assert!(limiter.poll_allowed_at() <= start);
        assert_eq!(limiter.handle_message(start), A);
        let at = limiter.poll_allowed_at();
        assert_eq!(at, start + Duration::from_millis(100));
        assert_eq!(limiter.handle_message(at - Duration::from_millis(1)), L);
        assert_eq!(limiter.handle_message(at), A);
    }
}
