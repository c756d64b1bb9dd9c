//! Exponential backoff with jitter, for reconnecting to brokers and retrying Twinzo, so that
//! a fleet of clients does not hammer a recovering service in lockstep.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, ceiling: base }
    }

    /// The next delay: uniformly between half the current ceiling and the ceiling, which
    /// then doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let low = ceiling / 2;
        let spread = (ceiling - low).as_millis() as u64;
        low + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Back to the first, short delay (after a success).
    pub fn reset(&mut self) {
        self.ceiling = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let later: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(later.last().unwrap() >= &Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
