//! The one exponential backoff for pauses between attempts: the claim loop after errors and
//! releases, the channel listener when idle, heartbeat retries, the webhook sidecar and the
//! Agentuity client. Each doubles from `initial` up to `max`, with the jitter its caller wants.
//!
//! The AGH client's retries inside one call use backon's builder instead (`api::RetryOptions`):
//! there a whole retry schedule with a total budget is wanted, here a pause that can be reset.

use std::time::Duration;

/// Doubling pauses, `initial` up to `max`, each scaled by a random factor in `jitter`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    jitter: (f64, f64),
}

impl Backoff {
    /// Pauses of exactly `initial`, `2 × initial`, … up to `max` (no jitter).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            jitter: (1.0, 1.0),
        }
    }

    /// Scales each pause by a random factor between `low` and `high` (still capped at `max`),
    /// so many workers do not retry in step.
    pub fn with_jitter(mut self, low: f64, high: f64) -> Self {
        self.jitter = (low.min(high), low.max(high));
        self
    }

    /// The pause to take now; the following one is twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let (low, high) = self.jitter;
        if low == 1.0 && high == 1.0 {
            return base;
        }
        base.mul_f64(low + fastrand::f64() * (high - low))
            .min(self.max)
    }

    /// The pause a fresh backoff would take after `attempts` pauses, without changing this one.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let mut fresh = Backoff {
            next: self.initial,
            ..self.clone()
        };
        for _ in 0..attempts.min(64) {
            if fresh.next >= fresh.max {
                break;
            }
            fresh.next = fresh.next.saturating_mul(2).min(fresh.max);
        }
        fresh.next_delay()
    }

    /// Back to `initial`: the next pause is the first again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_a_reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u64> = (0..5)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_keeps_each_pause_within_its_band_and_under_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .with_jitter(0.75, 1.25);
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(75), "{delays:?}");
        assert!(delays[0] <= Duration::from_millis(125), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "{delays:?}"
        );
        assert!(delays[7] >= Duration::from_millis(750), "{delays:?}");
    }

    #[test]
    fn the_delay_after_some_attempts_leaves_the_backoff_as_it_was() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff.delay_after(0), Duration::from_millis(100));
        assert_eq!(backoff.delay_after(2), Duration::from_millis(400));
        assert_eq!(backoff.delay_after(40), Duration::from_secs(1));
        let mut backoff = backoff;
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
