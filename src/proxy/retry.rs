//! When a failed upstream attempt may be tried again, and how many retries an upstream may
//! carry at once.
//!
//! Retries are safe only when the upstream cannot have acted on the request: the connection
//! failed or the request head could not be written to a reused connection (nothing was
//! sent), or it broke before any response header arrived and the method is idempotent (or
//! the operator allowed all methods) and the whole body can be replayed. A response whose
//! status the policy names (`on_status`) is retried on the same terms as a reset, before any
//! of it reaches the client; the last try's response is passed on whatever its status. How
//! many retries an upstream carries at once is bounded by its `crate::upstream::retry_budget`.

use crate::model::{RetryMethods, RetryPolicy};
use pingora::http::Method;

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
    /// The response header has a status the policy retries; nothing of it was passed on.
    Status(u16),
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
        Failure::BeforeResponse => policy.on_reset_before_response && replayable(policy, facts),
        Failure::Status(status) => policy.on_status.contains(status) && replayable(policy, facts),
        Failure::RequestUnsent => true,
        Failure::Timeout | Failure::AfterResponseStarted | Failure::Downstream => false,
    }
}

/// Whether the upstream may have acted on the request and it can still be sent again.
fn replayable(policy: &RetryPolicy, facts: AttemptFacts) -> bool {
    facts.body_replayable && (policy.methods == RetryMethods::All || is_idempotent(facts.method))
}

/// RFC 9110 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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
            ..RetryPolicy::DEFAULT
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
    fn statuses_retry_only_when_named_and_replayable_within_attempts() {
        let mut p = policy(RetryMethods::Idempotent);
        p.attempts = 3;
        assert!(p.on_status.insert(500));
        assert!(!p.on_status.insert(600));
        assert!(allows_retry(
            &p,
            Failure::Status(500),
            facts(&Method::GET, 2)
        ));
        assert!(!allows_retry(
            &p,
            Failure::Status(500),
            facts(&Method::GET, 3)
        ));
        assert!(!allows_retry(
            &p,
            Failure::Status(503),
            facts(&Method::GET, 1)
        ));
        assert!(!allows_retry(
            &p,
            Failure::Status(500),
            facts(&Method::POST, 1)
        ));
        let truncated = AttemptFacts {
            body_replayable: false,
            ..facts(&Method::GET, 1)
        };
        assert!(!allows_retry(&p, Failure::Status(500), truncated));
        p.methods = RetryMethods::All;
        assert!(allows_retry(
            &p,
            Failure::Status(500),
            facts(&Method::POST, 1)
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
}
