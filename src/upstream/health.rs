//! Endpoint health: the verdict of active checks, passive ejection, and slow start.
//!
//! Everything the request path reads is an atomic (is the endpoint usable now, how far is its
//! slow start); counters and the last check result, touched only when a check finishes or a
//! request fails, sit behind a mutex. The state lives in the endpoint's shared state, so it
//! survives reloads and weight changes of an endpoint that stays.

use crate::model::{ActiveCheck, PassiveEjection};
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Slow start begins at this share of an endpoint's weight.
const SLOW_START_FLOOR: f64 = 0.1;
/// Repeated ejections double the ejection time, up to this multiple of `eject_for`.
const MAX_EJECTION_MULTIPLIER: u32 = 10;

static CLOCK_BASE: Lazy<Instant> = Lazy::new(Instant::now);

/// Milliseconds on a monotonic clock, never 0 (0 means "unset" in the atomics below).
pub fn now_ms() -> u64 {
    CLOCK_BASE.elapsed().as_millis() as u64 + 1
}

/// The verdict of active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveVerdict {
    /// Not checked yet: not used while active checks are configured.
    Unknown,
    Healthy,
    Unhealthy,
}

impl ActiveVerdict {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Healthy,
            2 => Self::Unhealthy,
            _ => Self::Unknown,
        }
    }

    /// The label used in `/upstreams`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// A state change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
    /// `readmitted`: an earlier ejection had ended unannounced just before this one.
    Ejected {
        for_ms: u64,
        readmitted: bool,
    },
}

/// The last active check of an endpoint.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub at: SystemTime,
    pub result: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
struct Counters {
    consecutive_ok: u32,
    consecutive_failed: u32,
    last_check: Option<CheckRecord>,
    /// Ejections that still count towards doubling the next one.
    ejections: u32,
    last_ejection_end_ms: u64,
}

/// Health of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    verdict: AtomicU8,
    /// End of the current ejection (ms on [`now_ms`]'s clock); 0 = never ejected.
    ejected_until: AtomicU64,
    /// Set while an ejection has not been reported as over in the log.
    ejection_announced: AtomicBool,
    /// Start of the slow-start ramp; 0 = none.
    ramp_from: AtomicU64,
    /// Start the ramp when the first check passes (added to a running upstream).
    ramp_on_first_success: AtomicBool,
    passive_failures: AtomicU32,
    counters: Mutex<Counters>,
}

impl EndpointHealth {
    /// State for an endpoint added to an upstream that already serves traffic: with slow
    /// start configured, its share ramps up once it is first usable.
    pub fn added_to_running_upstream(slow_start: bool, active_checks: bool) -> Self {
        let health = Self::default();
        if slow_start {
            if active_checks {
                health.ramp_on_first_success.store(true, Ordering::Relaxed);
            } else {
                health.ramp_from.store(now_ms(), Ordering::Relaxed);
            }
        }
        health
    }

    /// The active-check verdict.
    pub fn verdict(&self) -> ActiveVerdict {
        ActiveVerdict::from_u8(self.verdict.load(Ordering::Relaxed))
    }

    /// Whether the endpoint may get requests at `now` (ms).
    pub fn is_available(&self, now: u64, actively_checked: bool) -> bool {
        (!actively_checked || self.verdict() == ActiveVerdict::Healthy) && !self.is_ejected(now)
    }

    /// Whether a passive ejection is in force at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// End of the current ejection, if one is in force.
    pub fn ejected_until(&self, now: u64) -> Option<SystemTime> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until > now).then(|| SystemTime::now() + Duration::from_millis(until - now))
    }

    /// Share of its weight the endpoint gets at `now`: 1.0 outside slow start.
    pub fn slow_start_share(&self, now: u64, window: Option<Duration>) -> f64 {
        let (Some(window), from) = (window, self.ramp_from.load(Ordering::Relaxed)) else {
            return 1.0;
        };
        if from == 0 || now >= from + window.as_millis() as u64 {
            return 1.0;
        }
        let progress = now.saturating_sub(from) as f64 / window.as_millis().max(1) as f64;
        SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress
    }

    /// Records one active check; returns the verdict change it caused, if any.
    pub fn record_check(
        &self,
        check: &ActiveCheck,
        passed: bool,
        result: &'static str,
        detail: String,
        slow_start: bool,
    ) -> Option<Transition> {
        let mut counters = self.lock();
        counters.last_check = Some(CheckRecord {
            at: SystemTime::now(),
            result,
            detail,
        });
        let verdict = self.verdict();
        if passed {
            counters.consecutive_ok += 1;
            counters.consecutive_failed = 0;
            // A new endpoint is usable after its first passing check; a failed one needs
            // `healthy_after` passes in a row.
            let needed = if verdict == ActiveVerdict::Unknown {
                1
            } else {
                check.healthy_after
            };
            if verdict != ActiveVerdict::Healthy && counters.consecutive_ok >= needed {
                self.verdict.store(1, Ordering::Relaxed);
                let ramp = slow_start
                    && (verdict == ActiveVerdict::Unhealthy
                        || self.ramp_on_first_success.swap(false, Ordering::Relaxed));
                if ramp {
                    self.ramp_from.store(now_ms(), Ordering::Relaxed);
                }
                return Some(Transition::BecameHealthy);
            }
        } else {
            counters.consecutive_failed += 1;
            counters.consecutive_ok = 0;
            let needed = if verdict == ActiveVerdict::Unknown {
                1
            } else {
                check.unhealthy_after
            };
            if verdict != ActiveVerdict::Unhealthy && counters.consecutive_failed >= needed {
                self.verdict.store(2, Ordering::Relaxed);
                return Some(Transition::BecameUnhealthy);
            }
        }
        None
    }

    /// The last active check.
    pub fn last_check(&self) -> Option<CheckRecord> {
        self.lock().last_check.clone()
    }

    /// Records a real request's outcome. A failure may eject the endpoint if `may_eject`
    /// says the upstream can spare it; returns the ejection.
    pub fn record_request(
        &self,
        passive: &PassiveEjection,
        failed: bool,
        slow_start: bool,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        if !failed {
            if self.passive_failures.load(Ordering::Relaxed) != 0 {
                self.passive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let failures = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        if failures < passive.consecutive_failures || self.is_ejected(now) || !may_eject() {
            return None;
        }
        let readmitted = self.take_ejection_end(now);
        let mut counters = self.lock();
        // Ejections are forgiven one per `eject_for` spent back in service.
        let base = passive.eject_for.as_millis().max(1) as u64;
        let served = now.saturating_sub(counters.last_ejection_end_ms);
        let forgiven = if counters.last_ejection_end_ms == 0 {
            0
        } else {
            served / base
        };
        counters.ejections = counters.ejections.saturating_sub(forgiven as u32);
        let multiplier = 2u32
            .saturating_pow(counters.ejections)
            .min(MAX_EJECTION_MULTIPLIER);
        counters.ejections += 1;
        let for_ms = base * u64::from(multiplier);
        let until = now + for_ms;
        counters.last_ejection_end_ms = until;
        self.ejected_until.store(until, Ordering::Relaxed);
        self.ejection_announced.store(true, Ordering::Relaxed);
        self.passive_failures.store(0, Ordering::Relaxed);
        if slow_start {
            self.ramp_from.store(until, Ordering::Relaxed);
        }
        Some(Transition::Ejected { for_ms, readmitted })
    }

    /// True once per ejection, when it has ended (for the "readmitted" log line).
    pub fn take_ejection_end(&self, now: u64) -> bool {
        !self.is_ejected(now) && self.ejection_announced.swap(false, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Plain counters stay consistent even if a holder panicked.
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Probe;

    fn check() -> ActiveCheck {
        ActiveCheck {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_after: 2,
            unhealthy_after: 3,
        }
    }

    fn passive() -> PassiveEjection {
        PassiveEjection {
            consecutive_failures: 2,
            eject_for: Duration::from_secs(10),
            max_ejected_percent: 50,
            on_5xx: false,
        }
    }

    #[test]
    fn new_endpoint_needs_one_pass_recovered_needs_healthy_after() {
        let h = EndpointHealth::default();
        let c = check();
        assert!(!h.is_available(now_ms(), true));
        assert!(
            h.is_available(now_ms(), false),
            "without checks it is used at once"
        );
        assert_eq!(
            h.record_check(&c, true, "ok", String::new(), false),
            Some(Transition::BecameHealthy)
        );
        assert!(h.is_available(now_ms(), true));
        for _ in 0..2 {
            assert_eq!(
                h.record_check(&c, false, "bad_status", String::new(), false),
                None
            );
        }
        assert_eq!(
            h.record_check(&c, false, "bad_status", String::new(), false),
            Some(Transition::BecameUnhealthy)
        );
        assert!(!h.is_available(now_ms(), true));
        assert_eq!(h.record_check(&c, true, "ok", String::new(), false), None);
        assert_eq!(
            h.record_check(&c, true, "ok", String::new(), false),
            Some(Transition::BecameHealthy)
        );
        assert_eq!(h.last_check().map(|r| r.result), Some("ok"));
    }

    #[test]
    fn recovery_starts_slow_start_ramp() {
        let h = EndpointHealth::default();
        let c = check();
        let window = Some(Duration::from_secs(100));
        h.record_check(&c, true, "ok", String::new(), true);
        assert_eq!(
            h.slow_start_share(now_ms(), window),
            1.0,
            "initial endpoints do not ramp"
        );
        for _ in 0..3 {
            h.record_check(&c, false, "timeout", String::new(), true);
        }
        h.record_check(&c, true, "ok", String::new(), true);
        h.record_check(&c, true, "ok", String::new(), true);
        let share = h.slow_start_share(now_ms(), window);
        assert!((0.1..0.2).contains(&share), "{share}");
        assert_eq!(h.slow_start_share(now_ms() + 100_000, window), 1.0);
        assert_eq!(
            h.slow_start_share(now_ms() + 50_000, window),
            0.1 + 0.9 * 0.5
        );
    }

    #[test]
    fn added_endpoint_ramps_after_first_pass() {
        let h = EndpointHealth::added_to_running_upstream(true, true);
        let window = Some(Duration::from_secs(100));
        assert_eq!(
            h.slow_start_share(now_ms(), window),
            1.0,
            "not ramping before it is usable"
        );
        h.record_check(&check(), true, "ok", String::new(), true);
        assert!(h.slow_start_share(now_ms(), window) < 0.2);
        let unchecked = EndpointHealth::added_to_running_upstream(true, false);
        assert!(unchecked.slow_start_share(now_ms(), window) < 0.2);
    }

    #[test]
    fn passive_ejection_doubles_and_respects_the_cap() {
        let h = EndpointHealth::default();
        let p = passive();
        assert_eq!(h.record_request(&p, true, false, || true), None);
        assert_eq!(
            h.record_request(&p, false, false, || true),
            None,
            "success resets"
        );
        assert_eq!(h.record_request(&p, true, false, || true), None);
        assert_eq!(
            h.record_request(&p, true, false, || false),
            None,
            "cap refuses"
        );
        assert_eq!(
            h.record_request(&p, true, false, || true),
            Some(Transition::Ejected {
                for_ms: 10_000,
                readmitted: false
            })
        );
        assert!(h.is_ejected(now_ms()));
        assert!(!h.take_ejection_end(now_ms()));
        // Pretend the ejection is over, then fail again right away: doubled.
        h.ejected_until.store(1, Ordering::Relaxed);
        h.record_request(&p, true, false, || true);
        assert_eq!(
            h.record_request(&p, true, false, || true),
            Some(Transition::Ejected {
                for_ms: 20_000,
                readmitted: true
            })
        );
    }
}
