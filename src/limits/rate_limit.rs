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
//! configured rate (`routes[].global_rate_limit`, [`super::global`], holds across replicas).
//! Keys that collide in the sketch share a count (over-limiting, never under-limiting).

use crate::model::{IpNet, LimitKey, RateLimit};
pub use crate::upstream::hash_key::RequestFacts;
use pingora_limits::rate::{Rate, RateComponents};
use std::cell::RefCell;
use std::io::Write;
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
    pub fn admit(&self, facts: &RequestFacts) -> Result<(), Duration> {
        if exempt(&self.config.exempt, facts.client_ip) {
            return Ok(());
        }
        with_key(&self.config.by, facts, |key| self.admit_key(&key))
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

/// Whether `client_ip` is in one of the `exempt` networks.
pub fn exempt(exempt: &[IpNet], client_ip: Option<IpAddr>) -> bool {
    client_ip.is_some_and(|ip| exempt.iter().any(|net| net.contains(ip)))
}

/// Appends what a limit keyed `by` counts `facts` under to `out`: the same bytes for the
/// same key in every replica, so that it can name a shared counter.
pub fn key_into(by: &LimitKey, facts: &RequestFacts, out: &mut Vec<u8>) {
    match by {
        LimitKey::Route => {}
        LimitKey::ClientIp => {
            if let Some(ip) = facts.client_ip {
                // Infallible: writing to a Vec.
                let _ = write!(out, "{ip}");
            }
        }
        LimitKey::Header(name) => {
            let value = (facts.header).and_then(|h| h.headers.get(name));
            out.extend_from_slice(value.map_or(&[][..], |v| v.as_bytes()));
        }
        LimitKey::Template(template) => template.evaluate_into(facts, out),
    }
}

/// Evaluates the key of a limit keyed `by` into a per-thread buffer and passes it to
/// `use_key`: one evaluation for both kinds of limit, without allocating per request.
pub fn with_key<R>(by: &LimitKey, facts: &RequestFacts, use_key: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static KEY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    KEY_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        key_into(by, facts, &mut buffer);
        use_key(&buffer)
    })
}

/// `Retry-After` seconds for a wait of `wait` (at least 1).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HashKey;
    use pingora::http::RequestHeader;

    fn limiter(requests_per_second: u32, burst: u32, by: LimitKey) -> RouteLimiter {
        RouteLimiter::new(&RateLimit {
            requests_per_second,
            burst,
            by,
            exempt: Vec::new(),
        })
    }

    fn admit(
        limiter: &RouteLimiter,
        header: &RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> Result<(), Duration> {
        limiter.admit(&RequestFacts {
            header: Some(header),
            client_ip,
            scheme: "http",
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
            .filter(|_| admit(&route, &request(None), None).is_ok())
            .count();
        assert_eq!(admitted, 11);
        let wait = admit(&route, &request(None), None).expect_err("limited");
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
        assert!(admit(&by_header, &request(Some("a")), None).is_ok());
        assert!(admit(&by_header, &request(Some("a")), None).is_err());
        assert!(admit(&by_header, &request(Some("b")), None).is_ok());
        let by_ip = limiter(1, 0, LimitKey::ClientIp);
        let (one, two) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
        assert!(admit(&by_ip, &request(None), one).is_ok());
        assert!(admit(&by_ip, &request(None), one).is_err());
        assert!(admit(&by_ip, &request(None), two).is_ok());
    }

    #[test]
    fn a_template_key_counts_each_value_apart() {
        let template = HashKey::parse("$http_x_api_key:$uri").expect("template");
        let by_template = limiter(1, 0, LimitKey::Template(template.clone()));
        assert!(admit(&by_template, &request(Some("a")), None).is_ok());
        assert!(admit(&by_template, &request(Some("a")), None).is_err());
        assert!(admit(&by_template, &request(Some("b")), None).is_ok());
        let facts = |header| RequestFacts {
            header: Some(header),
            client_ip: "10.0.0.1".parse().ok(),
            scheme: "http",
        };
        let mut key = Vec::new();
        let with_key = request(Some("a"));
        key_into(&LimitKey::Template(template), &facts(&with_key), &mut key);
        assert_eq!(key, b"a:/");
        key.clear();
        let without = request(None);
        key_into(&LimitKey::ClientIp, &facts(&without), &mut key);
        assert_eq!(key, b"10.0.0.1");
    }

    #[test]
    fn high_rates_use_the_minimum_window_with_a_scaled_allowance() {
        let route = limiter(1000, 0, LimitKey::Route);
        let admitted = (0..500)
            .filter(|_| admit(&route, &request(None), None).is_ok())
            .count();
        // 1000/s over a 100 ms window; a little more if the loop straddles two windows.
        assert!((100..=110).contains(&admitted), "{admitted}");
    }
}
