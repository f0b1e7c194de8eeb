//! When a failed upstream attempt may be tried again, and how many retries an upstream may
//! carry at once.
//!
//! Retries are safe only when the upstream cannot have acted on the request: the connection
//! failed or the request head could not be written to a reused connection (nothing was
//! sent), or it broke before any response header arrived and the method is idempotent (or
//! the operator allowed all methods) and the whole body can be replayed.
//! A retry budget per upstream bounds retries in flight to a share of its active requests,
//! so a failing upstream cannot multiply its own load (Envoy's retry_budget, minimum 3).

use crate::config::{RetryMethods, RetryPolicy};
use pingora::http::Method;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Retries in flight are always allowed up to this many, however few requests are active.
const MIN_RETRY_CONCURRENCY: usize = 3;

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be established (refused, timed out).
    Connect,
    /// The request head could not be written to a pooled connection the upstream had
    /// already closed: the upstream never saw the request.
    RequestUnsent,
    /// The connection broke before a response header arrived.
    BeforeResponse,
    /// A read or write timed out: the upstream may still be working on the request.
    Timeout,
    /// The response had started: a retry would send the client a second response.
    AfterResponseStarted,
    /// The client side failed (closed, sent garbage): nobody is waiting for a retry.
    Downstream,
}

/// What is known about the request when an attempt fails.
#[derive(Debug, Clone, Copy)]
pub struct AttemptFacts<'a> {
    pub method: &'a Method,
    /// Tries made so far, the failed one included.
    pub attempts_made: u32,
    /// False when more body was streamed upstream than can be replayed.
    pub body_replayable: bool,
}

/// Whether the policy allows another try after `failure` (the budget is checked separately).
///
/// A request that was never sent is retried for every method, as nginx does, and once even
/// beyond `attempts`: the stale pooled connection was sluice's doing, not the upstream's.
pub fn allows_retry(policy: &RetryPolicy, failure: Failure, facts: AttemptFacts) -> bool {
    let attempts = match failure {
        Failure::RequestUnsent => policy.attempts.saturating_add(1),
        _ => policy.attempts,
    };
    if facts.attempts_made >= attempts {
        return false;
    }
    match failure {
        Failure::Connect => policy.on_connect_failure,
        Failure::BeforeResponse => {
            policy.on_reset_before_response
                && facts.body_replayable
                && (policy.methods == RetryMethods::All || is_idempotent(facts.method))
        }
        Failure::RequestUnsent => true,
        Failure::Timeout | Failure::AfterResponseStarted | Failure::Downstream => false,
    }
}

/// RFC 9110 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Active requests and retries in flight of one upstream.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicUsize,
    retries: AtomicUsize,
}

impl RetryBudget {
    /// Counts an active request until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> BudgetGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        BudgetGuard {
            budget: self.clone(),
            counter: Counter::Active,
        }
    }

    /// Takes a retry slot if retries in flight stay within `percent` of active requests
    /// (and at least [`MIN_RETRY_CONCURRENCY`]); the slot is held until the guard drops.
    pub fn try_retry(self: &Arc<Self>, percent: u32) -> Option<BudgetGuard> {
        let active = self.active.load(Ordering::Relaxed);
        let allowed = (active * percent as usize / 100).max(MIN_RETRY_CONCURRENCY);
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .ok()?;
        Some(BudgetGuard {
            budget: self.clone(),
            counter: Counter::Retry,
        })
    }

    /// Retries in flight now.
    pub fn retries_in_flight(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Counter {
    Active,
    Retry,
}

/// Releases an active-request count or a retry slot when dropped.
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Arc<RetryBudget>,
    counter: Counter,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let counter = match self.counter {
            Counter::Active => &self.budget.active,
            Counter::Retry => &self.budget.retries,
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(methods: RetryMethods) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            on_connect_failure: true,
            on_reset_before_response: true,
            methods,
            budget_percent: 20,
        }
    }

    fn facts(method: &Method, attempts_made: u32) -> AttemptFacts<'_> {
        AttemptFacts {
            method,
            attempts_made,
            body_replayable: true,
        }
    }

    #[test]
    fn connect_failures_retry_for_any_method_within_attempts() {
        let p = policy(RetryMethods::Idempotent);
        assert!(allows_retry(&p, Failure::Connect, facts(&Method::POST, 1)));
        assert!(!allows_retry(&p, Failure::Connect, facts(&Method::GET, 2)));
    }

    #[test]
    fn resets_retry_only_idempotent_replayable_requests() {
        let p = policy(RetryMethods::Idempotent);
        assert!(allows_retry(
            &p,
            Failure::BeforeResponse,
            facts(&Method::GET, 1)
        ));
        assert!(!allows_retry(
            &p,
            Failure::BeforeResponse,
            facts(&Method::POST, 1)
        ));
        let truncated = AttemptFacts {
            body_replayable: false,
            ..facts(&Method::PUT, 1)
        };
        assert!(!allows_retry(&p, Failure::BeforeResponse, truncated));
        let all = policy(RetryMethods::All);
        assert!(allows_retry(
            &all,
            Failure::BeforeResponse,
            facts(&Method::POST, 1)
        ));
        assert!(!allows_retry(
            &all,
            Failure::AfterResponseStarted,
            facts(&Method::GET, 1)
        ));
    }

    #[test]
    fn unsent_requests_retry_for_any_method_once_beyond_attempts() {
        let mut p = policy(RetryMethods::Idempotent);
        p.on_connect_failure = false;
        p.on_reset_before_response = false;
        assert!(allows_retry(
            &p,
            Failure::RequestUnsent,
            facts(&Method::POST, 1)
        ));
        assert!(allows_retry(
            &p,
            Failure::RequestUnsent,
            facts(&Method::POST, 2)
        ));
        assert!(!allows_retry(
            &p,
            Failure::RequestUnsent,
            facts(&Method::POST, 3)
        ));
    }

    #[test]
    fn disabled_conditions_never_retry() {
        let mut p = policy(RetryMethods::All);
        p.on_connect_failure = false;
        p.on_reset_before_response = false;
        assert!(!allows_retry(&p, Failure::Connect, facts(&Method::GET, 1)));
        assert!(!allows_retry(
            &p,
            Failure::BeforeResponse,
            facts(&Method::GET, 1)
        ));
    }

    #[test]
    fn budget_allows_minimum_then_percentage_of_active() {
        let budget = Arc::new(RetryBudget::default());
        let active: Vec<_> = (0..50).map(|_| budget.start_request()).collect();
        // 20% of 50 = 10 retries.
        let retries: Vec<_> = (0..10)
            .map(|_| budget.try_retry(20).expect("within budget"))
            .collect();
        assert!(budget.try_retry(20).is_none());
        drop(retries);
        drop(active);
        let few: Vec<_> = (0..3)
            .map(|_| budget.try_retry(20).expect("minimum 3"))
            .collect();
        assert!(budget.try_retry(20).is_none());
        drop(few);
        assert_eq!(budget.retries_in_flight(), 0);
    }
}
