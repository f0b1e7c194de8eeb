//! Limits of single values that hold whatever source produced them: the compiler checks
//! every fragment's routes and upstreams against them, and the config file's own checks
//! use the same functions, so each rule is written once.

use crate::model::{
    BalancePolicy, EndpointSource, RouteConfig, UpstreamConfig, UpstreamProtocol, MAX_RING_POINTS,
};

/// Most tries of one request, the first included.
pub const MAX_ATTEMPTS: u32 = 10;
/// Most ring points per unit of weight.
pub const MAX_HASH_POINTS: u32 = 10_000;
/// The largest body a route may buffer in memory.
pub const MAX_BUFFERED_BODY: u64 = 64 << 20;

/// `retry.attempts`.
pub fn attempts(attempts: u32) -> Option<String> {
    (attempts == 0 || attempts > MAX_ATTEMPTS)
        .then(|| format!("must be between 1 and {MAX_ATTEMPTS}"))
}

/// A share in percent.
pub fn percent(value: u32) -> Option<String> {
    (value > 100).then(|| "must be between 0 and 100".to_string())
}

/// The shortest `global_rate_limit.window`: shorter ones count too few requests to mean
/// a rate, and Redis's clock is read in milliseconds.
pub fn limit_window(window: std::time::Duration) -> Option<String> {
    (window < std::time::Duration::from_millis(100)).then(|| "must be at least 100ms".to_string())
}

/// A count that must not be zero.
pub fn at_least_one(value: u32) -> Option<String> {
    (value == 0).then(|| "must be at least 1".to_string())
}

/// `hash_points`.
pub fn hash_points(points: u32) -> Option<String> {
    (points == 0 || points > MAX_HASH_POINTS)
        .then(|| format!("must be between 1 and {MAX_HASH_POINTS}"))
}

/// The size of a consistent-hash ring of `total_weight` × `hash_points` points.
pub fn ring_size(total_weight: u64, hash_points: u32) -> Option<String> {
    let points = total_weight * u64::from(hash_points);
    (points > MAX_RING_POINTS).then(|| {
        format!(
            "the consistent-hash ring would have {points} points (total weight {total_weight} \
             × hash_points {hash_points}), over the limit of {MAX_RING_POINTS} (32 MiB): lower \
             hash_points or the weights"
        )
    })
}

/// An endpoint's weight.
pub fn weight(weight: u32) -> Option<String> {
    (weight == 0).then(|| "weight 0 is not allowed; remove the endpoint instead".to_string())
}

/// The problems of `upstream`'s values, as (field, message).
pub fn upstream(upstream: &UpstreamConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut check = |field: &str, problem: Option<String>| {
        if let Some(message) = problem {
            problems.push((field.to_string(), message));
        }
    };
    check("retry.attempts", attempts(upstream.retry.attempts));
    check(
        "retry.budget_percent",
        percent(upstream.retry.budget_percent),
    );
    check("max_streams", at_least_one(upstream.max_streams));
    check(
        "keepalive.max_requests",
        at_least_one(upstream.keepalive.max_requests),
    );
    check(
        "health.panic_threshold_percent",
        percent(upstream.health.panic_threshold_percent),
    );
    check("hash_points", hash_points(upstream.hash_points));
    match (upstream.balance, &upstream.hash_key) {
        (BalancePolicy::ConsistentHash, None) => check(
            "balance",
            Some("consistent_hash needs a hash_key (e.g. hash_key: \"$host$request_uri\")".into()),
        ),
        (BalancePolicy::ConsistentHash, Some(key)) => {
            if upstream.protocol == UpstreamProtocol::Tcp && key.needs_request() {
                check(
                    "hash_key",
                    Some(
                        "a tcp upstream has no HTTP request to hash: only $remote_addr is \
                         available"
                            .into(),
                    ),
                );
            }
            let total_weight = upstream.endpoints.iter().map(|e| u64::from(e.weight)).sum();
            check("hash_points", ring_size(total_weight, upstream.hash_points));
        }
        (_, Some(_)) => check(
            "hash_key",
            Some("hash_key is only used with balance: consistent_hash".into()),
        ),
        (_, None) => {}
    }
    if upstream.source == EndpointSource::Static {
        if upstream.endpoints.is_empty() {
            check("endpoints", Some("needs at least one endpoint".into()));
        }
        for (j, endpoint) in upstream.endpoints.iter().enumerate() {
            check(&format!("endpoints[{j}].weight"), weight(endpoint.weight));
        }
    }
    problems
}

/// The problems of `route`'s values, as (field, message).
pub fn route(route: &RouteConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if route.body.buffering
        && !route
            .body
            .max_size
            .is_some_and(|size| (1..=MAX_BUFFERED_BODY).contains(&size))
    {
        problems.push((
            "max_body_size".to_string(),
            "request buffering holds bodies in memory, so it needs a limit of at most 64m"
                .to_string(),
        ));
    }
    if let Some(limit) = &route.rate_limit {
        if let Some(message) = at_least_one(limit.requests_per_second) {
            problems.push(("rate_limit.requests_per_second".into(), message));
        }
    }
    if let Some(limit) = &route.global_rate_limit {
        if let Some(message) = at_least_one(limit.requests) {
            problems.push(("global_rate_limit.requests".into(), message));
        }
        if let Some(message) = limit_window(limit.window) {
            problems.push(("global_rate_limit.window".into(), message));
        }
    }
    problems
}
