//! The circuit breaker in front of Redis: after `failures` calls in a row fail, no call is
//! made for `open_for`; then one call probes, and its answer closes the breaker or opens
//! it again. Requests meanwhile get their route's `on_redis_failure` at once instead of
//! each waiting out a timeout.

use crate::model::BreakerSettings;
use std::sync::Mutex;
use std::time::Instant;

/// A change worth one log line: Redis stopped or started deciding limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

#[derive(Debug)]
enum State {
    /// Calls are made; this many failed in a row.
    Closed { failures: u32 },
    /// No call until then.
    Open { until: Instant },
    /// One call is probing; the others wait for its answer by not calling.
    Probing,
}

/// The breaker of one Redis.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may be made at `now` (an open breaker past its time lets one through).
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => false,
        }
    }

    /// Records how an allowed call ended.
    pub fn record(&self, succeeded: bool, now: Instant) -> Option<Change> {
        let mut state = self.lock();
        let (next, change) = match (&*state, succeeded) {
            (State::Closed { .. }, true) => (State::Closed { failures: 0 }, None),
            (State::Closed { failures }, false) if failures + 1 < self.settings.failures => {
                let failures = failures + 1;
                (State::Closed { failures }, None)
            }
            (State::Closed { .. }, false) => (self.open(now), Some(Change::Opened)),
            (State::Probing, true) => (State::Closed { failures: 0 }, Some(Change::Closed)),
            (State::Probing, false) => (self.open(now), None),
            // A call that was in flight when the breaker opened: the probe decides.
            (State::Open { until }, _) => (State::Open { until: *until }, None),
        };
        *state = next;
        change
    }

    /// Whether calls are being refused.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    /// Whether [`Self::allow`] would refuse a call at `now` (without taking the probe).
    pub fn refusing(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until } => now < until,
            State::Probing => true,
        }
    }

    fn open(&self, now: Instant) -> State {
        State::Open {
            until: now + self.settings.open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(2),
        })
    }

    #[test]
    fn opens_after_failures_in_a_row_only() {
        let b = breaker();
        let now = Instant::now();
        assert_eq!(b.record(false, now), None);
        assert_eq!(b.record(false, now), None);
        assert_eq!(b.record(true, now), None);
        assert_eq!(b.record(false, now), None);
        assert_eq!(b.record(false, now), None);
        assert!(b.allow(now));
        assert_eq!(b.record(false, now), Some(Change::Opened));
        assert!(b.is_open());
        assert!(b.refusing(now + Duration::from_millis(1999)));
        assert!(!b.allow(now + Duration::from_millis(1999)));
        assert!(!b.refusing(now + Duration::from_secs(2)), "a probe may go");
    }

    #[test]
    fn one_probe_after_open_for_closes_or_reopens() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            b.record(false, now);
        }
        let later = now + Duration::from_secs(2);
        assert!(b.allow(later), "the probe");
        assert!(!b.allow(later), "only one probe at a time");
        assert_eq!(b.record(false, later), None, "still open: no new log line");
        assert!(!b.allow(later + Duration::from_secs(1)));
        let again = later + Duration::from_secs(2);
        assert!(b.allow(again));
        assert_eq!(b.record(true, again), Some(Change::Closed));
        assert!(!b.is_open());
        assert!(b.allow(again));
    }

    #[test]
    fn calls_in_flight_when_it_opened_do_not_close_it() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            b.record(false, now);
        }
        assert_eq!(b.record(true, now), None);
        assert!(b.is_open());
    }
}
