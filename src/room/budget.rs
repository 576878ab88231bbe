//! A room's fan-out budget: `[server] room_fanout_per_second` as a token bucket.

use std::time::{Duration, Instant};

/// Deliveries a room may still make: a token bucket refilled at the room's
/// rate, holding at most one second's worth.
#[derive(Default)]
pub(super) struct Budget {
    /// Deliveries available; negative after events that may not wait.
    pub(super) tokens: f64,
    /// When `tokens` was last brought up to date; `None` before the first use.
    pub(super) at: Option<Instant>,
}

impl Budget {
    /// Brings the tokens up to date at `rate` per second.
    pub(super) fn refill(&mut self, rate: f64, now: Instant) {
        self.tokens = match self.at {
            None => rate,
            Some(at) => {
                (self.tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(rate)
            }
        };
        self.at = Some(now);
    }

    /// Takes `cost` if the budget has it (a fan-out larger than a whole
    /// second's budget needs a full bucket); `rate` 0 = no budget.
    pub(super) fn try_take(&mut self, rate: f64, cost: usize, now: Instant) -> bool {
        if rate <= 0.0 {
            return true;
        }
        self.refill(rate, now);
        let cost = cost as f64;
        if self.tokens >= cost.min(rate) {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Charges `cost` for a delivery that may not wait (down to one second in debt).
    pub(super) fn charge(&mut self, rate: f64, cost: usize, now: Instant) {
        if rate <= 0.0 {
            return;
        }
        self.refill(rate, now);
        self.tokens = (self.tokens - cost as f64).max(-rate);
    }

    /// How long until `try_take(cost)` can succeed.
    pub(super) fn wait(&self, rate: f64, cost: usize) -> Duration {
        let missing = (cost as f64).min(rate) - self.tokens;
        Duration::from_secs_f64((missing / rate).max(0.001))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_at_its_rate_and_holds_one_second() {
        let rate = 1000.0;
        let t0 = Instant::now();
        let mut budget = Budget::default();
        // A fresh budget holds one second's worth.
        assert!(budget.try_take(rate, 600, t0));
        assert!(!budget.try_take(rate, 600, t0));
        let wait = budget.wait(rate, 600);
        assert!(wait > Duration::from_millis(150) && wait <= Duration::from_millis(200));
        assert!(budget.try_take(rate, 600, t0 + Duration::from_millis(200)));
        // Events that may not wait put it in debt, at most one second's worth.
        budget.charge(rate, 10_000, t0 + Duration::from_millis(200));
        assert!((budget.tokens + rate).abs() < 1e-9);
        assert!(!budget.try_take(rate, 1, t0 + Duration::from_millis(500)));
        assert!(budget.try_take(rate, 1, t0 + Duration::from_millis(1202)));
        // Never more than a second's worth, however long it rested.
        let rested = t0 + Duration::from_secs(60);
        assert!(budget.try_take(rate, 1000, rested));
        assert!(!budget.try_take(rate, 1, rested));
        // A fan-out bigger than a second's budget goes out with a full bucket.
        let mut big = Budget::default();
        assert!(big.try_take(rate, 5000, t0));
        assert!(!big.try_take(rate, 5000, t0 + Duration::from_secs(1)));
        // 0 = no budget.
        let mut off = Budget::default();
        assert!((0..100).all(|_| off.try_take(0.0, 1_000_000, t0)));
    }
}
