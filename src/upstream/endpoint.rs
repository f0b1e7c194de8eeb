//! An endpoint of an upstream and the state that outlives config reloads.

use super::health::EndpointHealth;
use pingora_prometheus::prometheus::IntCounter;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// One address of an upstream, as the current snapshot sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    /// Discovered as terminating but still serving (used because no ready one is left).
    pub terminating: bool,
    /// Shared with the previous snapshot when the address was already there.
    pub state: Arc<EndpointState>,
}

/// Live state of an endpoint, kept across reloads and weight changes.
#[derive(Debug, Default)]
pub struct EndpointState {
    in_flight: AtomicUsize,
    pub health: EndpointHealth,
    /// Its `sluice_endpoint_requests_total{result="2xx"}`, looked up at its first answer.
    pub answered_2xx: OnceLock<IntCounter>,
    /// Its tries and failures, in all and lately (the status page).
    pub tries: RecentTries,
}

/// Seconds of one window of [`RecentTries`].
pub const WINDOW_SECONDS: u64 = 10;

/// An endpoint's tries and failures: in all, and in the current and the previous window
/// of [`WINDOW_SECONDS`], whose counts give its recent rates. Two relaxed atomic adds per
/// try; the windows turn lazily, on the first try or read of a new window (a try racing
/// the turn may land in either window: these are rates for people, not for billing).
#[derive(Debug, Default)]
pub struct RecentTries {
    /// The window the `current` counts are of (seconds since the epoch / WINDOW_SECONDS).
    window: AtomicU64,
    current: [AtomicU64; 2],
    previous: [AtomicU64; 2],
    total: [AtomicU64; 2],
}

/// What [`RecentTries`] says at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriesSeen {
    pub tries: u64,
    pub failures: u64,
    /// Per second, over the last whole window.
    pub tries_per_second: f64,
    pub failures_per_second: f64,
}

impl RecentTries {
    /// Counts a try at `now` (seconds since the epoch) that `failed` or not.
    pub fn count(&self, now: u64, failed: bool) {
        self.turn(now / WINDOW_SECONDS);
        let kinds: &[usize] = if failed { &[0, 1] } else { &[0] };
        for &kind in kinds {
            self.current[kind].fetch_add(1, Ordering::Relaxed);
            self.total[kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts and rates at `now` (seconds since the epoch).
    pub fn seen(&self, now: u64) -> TriesSeen {
        self.turn(now / WINDOW_SECONDS);
        let rate = |kind: usize| {
            self.previous[kind].load(Ordering::Relaxed) as f64 / WINDOW_SECONDS as f64
        };
        TriesSeen {
            tries: self.total[0].load(Ordering::Relaxed),
            failures: self.total[1].load(Ordering::Relaxed),
            tries_per_second: rate(0),
            failures_per_second: rate(1),
        }
    }

    /// Makes `window` the current one: the current counts become the previous window's
    /// if it follows them, else both start from zero.
    fn turn(&self, window: u64) {
        let was = self.window.load(Ordering::Relaxed);
        if was >= window
            || self
                .window
                .compare_exchange(was, window, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for kind in 0..2 {
            let counted = self.current[kind].swap(0, Ordering::Relaxed);
            let previous = if window == was + 1 { counted } else { 0 };
            self.previous[kind].store(previous, Ordering::Relaxed);
        }
    }
}

impl EndpointState {
    /// State of an endpoint with the given health.
    pub fn with_health(health: EndpointHealth) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            health,
            answered_2xx: OnceLock::new(),
            tries: RecentTries::default(),
        }
    }

    /// Requests currently sent to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }
}

/// Decrements the endpoint's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<EndpointState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_rates_are_of_the_last_whole_window() {
        let tries = RecentTries::default();
        let start = 1_000 * WINDOW_SECONDS;
        for i in 0..30 {
            tries.count(start + i % WINDOW_SECONDS, i % 3 == 0);
        }
        // The window is not over: no whole window yet.
        assert_eq!(tries.seen(start).tries_per_second, 0.0);
        let next = tries.seen(start + WINDOW_SECONDS);
        assert_eq!((next.tries, next.failures), (30, 10));
        assert_eq!(next.tries_per_second, 30.0 / WINDOW_SECONDS as f64);
        assert_eq!(next.failures_per_second, 10.0 / WINDOW_SECONDS as f64);
        // A quiet window later, the rate is zero and the totals stay.
        let later = tries.seen(start + 3 * WINDOW_SECONDS);
        assert_eq!((later.tries, later.tries_per_second), (30, 0.0));
    }
}
