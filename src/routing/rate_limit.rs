//! Per-route rate limits (`routes[].rate_limit`), on pingora-limits' sliding-window counter.
//!
//! Semantics are a token bucket's: `requests_per_second` sustained, and `burst` more at once.
//! A bucket of `burst + 1` requests refilled at `requests_per_second` admits at most
//! `burst + 1` requests in any window of `(burst + 1) / requests_per_second` seconds, so the
//! limiter counts requests per key over that window (pingora-limits `Rate`: count-min
//! sketches, fixed memory whatever the number of keys; the previous window is weighted by
//! how much of it still overlaps the sliding window) and admits a request while that count
//! stays within `burst + 1`. Windows are at least 100 ms, with the allowance scaled to match.
//!
//! Limits are per sluice process: N replicas behind a load balancer admit up to N times the
//! configured rate. Keys that collide in the sketch share a count (over-limiting, never
//! under-limiting).

use crate::model::{LimitKey, RateLimit};
use pingora::http::RequestHeader;
use pingora_limits::rate::{Rate, RateComponents};
use std::net::IpAddr;
use std::time::Duration;

/// The shortest counting window; shorter ones would count too few requests to be accurate.
const MIN_WINDOW: Duration = Duration::from_millis(100);

/// The rate limit of one route.
pub struct RouteLimiter {
    config: RateLimit,
    counts: Rate,
    /// Requests admitted per window.
    allowance: f64,
}

impl RouteLimiter {
    /// A limiter enforcing `config`.
    pub fn new(config: &RateLimit) -> Self {
        let rate = f64::from(config.requests_per_second.max(1));
        let bucket = f64::from(config.burst) + 1.0;
        let window = Duration::from_secs_f64(bucket / rate).max(MIN_WINDOW);
        Self {
            config: config.clone(),
            counts: Rate::new(window),
            allowance: (rate * window.as_secs_f64()).max(bucket),
        }
    }

    /// The config this limiter enforces (to keep its counts across reloads that keep it).
    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// Counts a request and admits it, or says how long the client should wait.
    pub fn admit(
        &self,
        request: &RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> Result<(), Duration> {
        let exempt = &self.config.exempt;
        if client_ip.is_some_and(|ip| exempt.iter().any(|net| net.contains(ip))) {
            return Ok(());
        }
        match &self.config.by {
            LimitKey::Route => self.admit_key(&()),
            LimitKey::ClientIp => self.admit_key(&client_ip),
            LimitKey::Header(name) => {
                let value = request.headers.get(name).map(|v| v.as_bytes());
                self.admit_key(&value)
            }
        }
    }

    fn admit_key<K: std::hash::Hash>(&self, key: &K) -> Result<(), Duration> {
        let window_estimate = |c: RateComponents| {
            c.prev_samples as f64 * (1.0 - c.current_interval_fraction) + c.curr_samples as f64
        };
        let before = self.counts.rate_with(key, window_estimate);
        if before + 1.0 > self.allowance {
            let excess = before + 1.0 - self.allowance;
            let rate = f64::from(self.config.requests_per_second.max(1));
            return Err(Duration::from_secs_f64(excess / rate));
        }
        self.counts.observe(key, 1);
        Ok(())
    }
}

/// `Retry-After` seconds for a wait of `wait` (at least 1).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests_per_second: u32, burst: u32, by: LimitKey) -> RouteLimiter {
        RouteLimiter::new(&RateLimit {
            requests_per_second,
            burst,
            by,
            exempt: Vec::new(),
        })
    }

    fn request(api_key: Option<&str>) -> RequestHeader {
        let mut header = RequestHeader::build("GET", b"/", None).expect("request");
        if let Some(key) = api_key {
            header.insert_header("x-api-key", key).expect("header");
        }
        header
    }

    #[test]
    fn a_burst_gets_burst_plus_one_then_waits() {
        let route = limiter(5, 10, LimitKey::Route);
        let admitted = (0..40)
            .filter(|_| route.admit(&request(None), None).is_ok())
            .count();
        assert_eq!(admitted, 11);
        let wait = route.admit(&request(None), None).expect_err("limited");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
        assert!(retry_after_seconds(wait) >= 1);
    }

    #[test]
    fn keys_are_counted_apart() {
        let by_header = limiter(
            1,
            0,
            LimitKey::Header(http::HeaderName::from_static("x-api-key")),
        );
        assert!(by_header.admit(&request(Some("a")), None).is_ok());
        assert!(by_header.admit(&request(Some("a")), None).is_err());
        assert!(by_header.admit(&request(Some("b")), None).is_ok());
        let by_ip = limiter(1, 0, LimitKey::ClientIp);
        let (one, two) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
        assert!(by_ip.admit(&request(None), one).is_ok());
        assert!(by_ip.admit(&request(None), one).is_err());
        assert!(by_ip.admit(&request(None), two).is_ok());
    }

    #[test]
    fn high_rates_use_the_minimum_window_with_a_scaled_allowance() {
        let route = limiter(1000, 0, LimitKey::Route);
        let admitted = (0..500)
            .filter(|_| route.admit(&request(None), None).is_ok())
            .count();
        // 1000/s over a 100 ms window; a little more if the loop straddles two windows.
        assert!((100..=110).contains(&admitted), "{admitted}");
    }
}
