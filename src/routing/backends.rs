//! Which upstream of a route takes a request: the canary when its rules say so, else one
//! of the weighted backends.

use super::conditions::cookie_value;
use crate::model::Canary;
use pingora::http::RequestHeader;

/// Backends' weights as cumulative sums, for a weighted pick in O(log n).
#[derive(Debug, Clone)]
pub struct WeightedSplit {
    cumulative: Box<[u64]>,
}

impl WeightedSplit {
    /// The split of `weights` (a weight of 0 takes no requests).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// How many shares it picks among (a backend's each, and any others given).
    pub fn shares(&self) -> usize {
        self.cumulative.len()
    }

    /// The backend for `roll`, a uniformly random number; `None` when every weight is 0.
    pub fn pick(&self, roll: u64) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let point = roll % total;
        Some(self.cumulative.partition_point(|&sum| sum <= point))
    }
}

/// Whether the canary takes `request`: its header rule decides if the header says so, then
/// its cookie rule, then `roll` (uniform in 0..weight_total) against its weight.
pub fn canary_takes(canary: &Canary, request: &RequestHeader, roll: impl FnOnce() -> u32) -> bool {
    if let Some(rule) = &canary.header {
        if let Some(value) = request
            .headers
            .get(&rule.name)
            .and_then(|v| v.to_str().ok())
        {
            match &rule.value {
                None if value == "always" => return true,
                None if value == "never" => return false,
                Some(wanted) if wanted.matches(value) => return true,
                _ => {}
            }
        }
    }
    if let Some(name) = &canary.cookie {
        match cookie_value(request, name) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    canary.weight > 0 && roll() < canary.weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CanaryHeader, ValueMatch};

    fn canary() -> Canary {
        Canary {
            upstream: "c".into(),
            header: Some(CanaryHeader {
                name: http::HeaderName::from_static("x-canary"),
                value: None,
            }),
            cookie: Some("canary".into()),
            weight: 10,
            weight_total: 100,
            fallback: false,
        }
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        crate::routing::test_request("GET", "/", headers)
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = canary();
        assert!(canary_takes(&c, &request(&[("x-canary", "always")]), || 99));
        assert!(!canary_takes(
            &c,
            &request(&[("x-canary", "never"), ("cookie", "canary=always")]),
            || 0
        ));
        assert!(canary_takes(
            &c,
            &request(&[("x-canary", "other"), ("cookie", "canary=always")]),
            || 99
        ));
        assert!(!canary_takes(
            &c,
            &request(&[("cookie", "canary=never")]),
            || 0
        ));
        assert!(canary_takes(&c, &request(&[]), || 9));
        assert!(!canary_takes(&c, &request(&[]), || 10));
    }

    #[test]
    fn a_header_value_rule_selects_only_on_a_match() {
        let mut c = canary();
        c.weight = 0;
        c.header = Some(CanaryHeader {
            name: http::HeaderName::from_static("x-canary"),
            value: Some(ValueMatch::Exact("blue".into())),
        });
        assert!(canary_takes(&c, &request(&[("x-canary", "blue")]), || 0));
        assert!(!canary_takes(&c, &request(&[("x-canary", "always")]), || 0));
    }

    #[test]
    fn weighted_picks_follow_the_weights() {
        let split = WeightedSplit::new([3, 0, 1]);
        let picks: Vec<_> = (0..4).map(|roll| split.pick(roll)).collect();
        assert_eq!(picks, [Some(0), Some(0), Some(0), Some(2)]);
        assert_eq!(WeightedSplit::new([0, 0]).pick(7), None);
        assert_eq!(WeightedSplit::new([5]).pick(7), Some(0));
    }
}
