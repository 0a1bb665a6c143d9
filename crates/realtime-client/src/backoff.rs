//! Exponential backoff with full jitter, as a pure function of the attempt and a uniform
//! draw: the shell owns the random number generator (seeded in tests), this owns the rule.

use std::time::Duration;

/// How long to wait before a reconnect: before attempt `n` (0 for the first after a
/// disconnect), a uniform draw in `[0, min(max, min · factorⁿ))` ("full jitter"), so many
/// clients that lost the same server spread their reconnects instead of arriving together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first attempt.
    pub min: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// How much the ceiling grows per attempt (at least 1).
    pub factor: f64,
}

impl Backoff {
    /// The ceiling of attempt `attempt`: `min(max, min · factor^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let ceiling = self.min.as_secs_f64() * self.factor.powi(exponent);
        // An infinite or NaN product (a huge factor or attempt) is capped too.
        if ceiling.is_finite() && ceiling < self.max.as_secs_f64() {
            Duration::from_secs_f64(ceiling.max(0.0))
        } else {
            self.max
        }
    }

    /// The delay before attempt `attempt` for `draw`, a uniform draw in `[0, 1)` (a value
    /// outside is clamped into it).
    pub fn delay(&self, attempt: u32, draw: f64) -> Duration {
        let draw = if draw.is_finite() { draw.clamp(0.0, 1.0) } else { 0.0 };
        self.ceiling(attempt).mul_f64(draw)
    }

    /// [`Backoff::delay`] with a draw from `rng`.
    pub fn delay_with(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        self.delay(attempt, rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn backoff() -> Backoff {
        Backoff { min: MS(100), max: MS(5_000), factor: 2.0 }
    }

    struct Stats {
        mean: f64,
        sd: f64,
        min: f64,
        max: f64,
    }

    fn stats(values: &[Duration]) -> Stats {
        let values: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        Stats { mean, sd, min, max }
    }

    #[test]
    fn the_delay_is_the_draw_times_a_capped_exponential_ceiling() {
        let b = backoff();
        for (attempt, ceiling) in
            [(0, 100), (1, 200), (3, 800), (5, 3_200), (6, 5_000), (40, 5_000), (u32::MAX, 5_000)]
        {
            assert_eq!(b.ceiling(attempt), MS(ceiling), "attempt {attempt}");
            assert_eq!(b.delay(attempt, 0.5), MS(ceiling / 2), "attempt {attempt}");
            assert_eq!(b.delay(attempt, 0.0), Duration::ZERO, "attempt {attempt}");
        }
        // Out-of-range draws are clamped, never a panic.
        assert_eq!(b.delay(0, 7.0), MS(100));
        assert_eq!(b.delay(0, -1.0), Duration::ZERO);
        assert_eq!(b.delay(0, f64::NAN), Duration::ZERO);
        // A factor of 1 is a constant ceiling; an enormous one is capped.
        assert_eq!(Backoff { factor: 1.0, ..b }.ceiling(30), MS(100));
        assert_eq!(Backoff { factor: 1e300, ..b }.ceiling(3), MS(5_000));
    }

    #[test]
    fn draws_over_seeds_are_uniform_under_the_ceiling() {
        let b = backoff();
        for attempt in [0, 3, 5, 6, 40] {
            let ceiling = b.ceiling(attempt).as_secs_f64();
            let draws: Vec<Duration> = (0..2_000)
                .map(|seed| b.delay_with(attempt, &mut StdRng::seed_from_u64(seed)))
                .collect();
            let s = stats(&draws);
            assert!(s.min >= 0.0 && s.max < ceiling, "attempt {attempt}: [{}, {}]", s.min, s.max);
            // Uniform on [0, c): mean c/2, standard deviation c/sqrt(12) ~ 0.29c. Wide margins.
            assert!(
                (s.mean - ceiling / 2.0).abs() < ceiling * 0.1,
                "attempt {attempt}: {}",
                s.mean
            );
            assert!(s.sd > ceiling * 0.2, "attempt {attempt}: sd {}: not spread", s.sd);
            assert!(s.max > ceiling * 0.9 && s.min < ceiling * 0.1, "attempt {attempt}: range");
        }
    }

    #[test]
    fn fifty_clients_retrying_five_times_are_not_in_lockstep() {
        // Each client its own seeded generator, as each process has its own.
        let b = Backoff { min: MS(1), max: MS(20), factor: 2.0 };
        let mut rngs: Vec<StdRng> =
            (0..50).map(|seed| StdRng::seed_from_u64(1_000 + seed)).collect();
        let rounds: Vec<Vec<Duration>> = (0..5)
            .map(|attempt| rngs.iter_mut().map(|rng| b.delay_with(attempt, rng)).collect())
            .collect();
        for (attempt, round) in rounds.iter().enumerate() {
            let ceiling = b.ceiling(attempt as u32).as_secs_f64();
            let s = stats(round);
            assert!(s.max < ceiling, "attempt {attempt}: {round:?}");
            let distinct: std::collections::BTreeSet<Duration> = round.iter().copied().collect();
            assert!(distinct.len() > 45, "attempt {attempt}: clients share delays: {round:?}");
            assert!(s.sd > ceiling * 0.15, "attempt {attempt}: sd {} of {round:?}", s.sd);
        }
        // The ceiling grows with the attempt: the fifth round waits longer than the first.
        assert!(stats(&rounds[4]).mean > stats(&rounds[0]).mean * 4.0);
        // Seeded: the same seed gives the same delays.
        let again = b.delay_with(4, &mut StdRng::seed_from_u64(7));
        assert_eq!(b.delay_with(4, &mut StdRng::seed_from_u64(7)), again);
    }
}
