//! When a failed record is delivered again: a pure, deterministic function of the policy, the
//! attempt that failed, and a jitter sample the caller draws.

use std::time::Duration;

/// How redeliveries are spaced and when a record gives up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries before a record is dead-lettered (1 = never redelivered).
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub initial: Duration,
    /// Growth of the delay per further failure.
    pub multiplier: f64,
    /// Longest delay.
    pub max: Duration,
    /// Each delay is scaled by a random factor in `1 - jitter ..= 1 + jitter`, so records that
    /// failed together do not all come back at once.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// Delay before the delivery that follows failed attempt `attempt` (1-based). `sample` is
    /// uniform in `0.0..1.0`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// A small, fast pseudo-random source for jitter (xorshift64*); not for anything secret.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from anything that differs between groups and runs.
    pub fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    /// Uniform in `0.0..1.0`.
    pub fn sample(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (value >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_geometrically_up_to_the_cap() {
        let policy = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
        let secs: Vec<u64> = (1..=10).map(|a| policy.delay(a, 0.5).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let policy = RetryPolicy::default();
        let mut jitter = Jitter::new(42);
        for _ in 0..1000 {
            let d = policy.delay(3, jitter.sample()).as_secs_f64();
            assert!((3.6..=4.4).contains(&d), "{d}");
        }
    }

    #[test]
    fn samples_are_spread_over_the_unit_interval() {
        let mut jitter = Jitter::new(7);
        let samples: Vec<f64> = (0..10_000).map(|_| jitter.sample()).collect();
        assert!(samples.iter().all(|s| (0.0..1.0).contains(s)));
        let low = samples.iter().filter(|&&s| s < 0.5).count();
        assert!((4500..5500).contains(&low), "{low}");
    }
}
