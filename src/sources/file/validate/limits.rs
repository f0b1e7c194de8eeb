//! The file's rate limits: `routes[].rate_limit` (per replica), `routes[].global_rate_limit`
//! and `redis:` where the global ones are counted (issue #21).

use super::traffic::networks;
use super::Checker;
use crate::compile::values;
use crate::model::*;
use crate::sources::file::schema::*;
use std::time::Duration;

/// `by:` of a rate limit: `route`, `client_ip`, `header:NAME` or a template of request
/// variables (`$remote_addr$uri`, as ingress-nginx's `global-rate-limit-key`).
pub(super) fn limit_key(check: &mut Checker, key_path: &str, by: &str) -> Option<LimitKey> {
    let key = match by {
        "route" => Some(LimitKey::Route),
        "client_ip" => Some(LimitKey::ClientIp),
        template if template.contains('$') => match HashKey::parse(template) {
            Ok(key) => Some(LimitKey::Template(key)),
            Err(why) => {
                check.error(key_path, why);
                return None;
            }
        },
        _ => by
            .strip_prefix("header:")
            .filter(|h| !h.is_empty())
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .map(LimitKey::Header),
    };
    if key.is_none() {
        check.error(
            key_path,
            format!(
                "invalid {by:?}: expected route, client_ip, header:NAME or a template of \
                 variables such as $remote_addr$uri"
            ),
        );
    }
    key
}

/// `routes[i].rate_limit`.
pub(super) fn rate_limit(check: &mut Checker, at: &str, raw: &RawRateLimit) -> Option<RateLimit> {
    let r = format!("{at}.rate_limit");
    check.nonzero(&format!("{r}.requests_per_second"), raw.requests_per_second);
    let by = limit_key(check, &format!("{r}.by"), &raw.by);
    let exempt = networks(check, &r, "exempt", &raw.exempt);
    Some(RateLimit {
        requests_per_second: raw.requests_per_second,
        burst: raw.burst,
        by: by?,
        exempt,
    })
}

/// `routes[i].global_rate_limit`; `redis` says whether `redis:` is set.
pub(super) fn global_rate_limit(
    check: &mut Checker,
    at: &str,
    raw: &RawGlobalRateLimit,
    redis: bool,
) -> Option<GlobalRateLimit> {
    let r = format!("{at}.global_rate_limit");
    if !redis {
        check.error(
            &r,
            "needs `redis:` (where every replica counts the limit); use `rate_limit` for a \
             limit per replica",
        );
    }
    check.nonzero(&format!("{r}.requests"), raw.requests);
    let window = check.duration(&format!("{r}.window"), &raw.window);
    if let Some(message) = window.and_then(values::limit_window) {
        check.error(&format!("{r}.window"), message);
    }
    let by = limit_key(check, &format!("{r}.by"), &raw.by);
    let exempt = networks(check, &r, "exempt", &raw.exempt);
    let on_redis_failure = match (raw.on_redis_failure.as_str(), raw.failure_status) {
        ("allow", _) => Some(RedisFailureMode::Allow),
        ("reject", status @ (429 | 503)) => Some(RedisFailureMode::Reject(status)),
        ("reject", status) => {
            check.error(
                &format!("{r}.failure_status"),
                format!("{status} is not 429 or 503"),
            );
            None
        }
        (other, _) => {
            check.error(
                &format!("{r}.on_redis_failure"),
                format!("invalid {other:?}: expected allow (fail open) or reject (fail closed)"),
            );
            None
        }
    };
    let limit = GlobalRateLimit {
        requests: raw.requests,
        window: window?,
        by: by?,
        exempt,
        on_redis_failure: on_redis_failure?,
    };
    redis.then_some(limit)
}

/// `redis:` checked: one addressing, addresses, the password file, the CA file, durations.
pub(super) fn redis(check: &mut Checker, raw: &RawRedis) -> Option<RedisSettings> {
    let mut address_list = |key: &str, list: &[String]| -> Vec<RedisAddress> {
        if list.is_empty() {
            check.error(key, "must name at least one host:port");
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, text)| redis_address(check, &format!("{key}[{i}]"), text))
            .collect()
    };
    let addressing = match (&raw.address, &raw.sentinel, &raw.cluster) {
        (Some(address), None, None) => {
            redis_address(check, "redis.address", address).map(RedisAddressing::Standalone)
        }
        (None, Some(sentinel), None) => {
            let sentinels = address_list("redis.sentinel.addresses", &sentinel.addresses);
            if sentinel.service.trim().is_empty() {
                check.error(
                    "redis.sentinel.service",
                    "must name the master (e.g. mymaster)",
                );
            }
            Some(RedisAddressing::Sentinel {
                service: sentinel.service.clone(),
                sentinels,
            })
        }
        (None, None, Some(cluster)) => Some(RedisAddressing::Cluster(address_list(
            "redis.cluster.addresses",
            &cluster.addresses,
        ))),
        _ => {
            check.error(
                "redis",
                "set exactly one of address (one server), sentinel or cluster",
            );
            None
        }
    };
    if raw.cluster.is_some() && raw.database != 0 {
        check.error("redis.database", "a Redis Cluster has only database 0");
    }
    let auth = match &raw.password_file {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => Some(RedisAuth {
                username: raw.username.clone(),
                password: text.trim_end_matches(['\r', '\n']).to_string(),
            }),
            Err(e) => {
                check.error("redis.password_file", format!("cannot read {file}: {e}"));
                None
            }
        },
        None => {
            if raw.username.is_some() {
                check.error("redis.username", "needs password_file");
            }
            None
        }
    };
    let tls = raw.tls.as_ref().map(|tls| RedisTls {
        ca_pem: tls.ca_file.as_ref().and_then(|file| {
            // Parsed here so that a bad bundle is a config error, not every call failing.
            let checked = std::fs::read(file)
                .map_err(|e| format!("cannot read {file}: {e}"))
                .and_then(|pem| crate::tls::parse_ca_certificates(&pem, file).map(|_| pem));
            checked
                .map_err(|e| check.error("redis.tls.ca_file", e))
                .ok()
        }),
    });
    if raw.connections == 0 {
        check.error("redis.connections", "must be at least 1");
    }
    let timeout = check.duration("redis.timeout", &raw.timeout);
    if timeout == Some(Duration::ZERO) {
        check.error("redis.timeout", "must be more than 0");
    }
    let open_for = check.duration("redis.breaker.open_for", &raw.breaker.open_for);
    check.nonzero("redis.breaker.failures", raw.breaker.failures);
    let reserve_ahead = check.duration("redis.reserve_ahead", &raw.reserve_ahead);
    if reserve_ahead.is_some_and(|ahead| ahead > Duration::from_secs(1)) {
        check.error(
            "redis.reserve_ahead",
            "must be at most 1s: replicas would hold tokens (and refusals) that long",
        );
    }
    Some(RedisSettings {
        addressing: addressing?,
        database: raw.database,
        auth,
        tls,
        connections: raw.connections,
        timeout: timeout?,
        breaker: BreakerSettings {
            failures: raw.breaker.failures,
            open_for: open_for?,
        },
        reserve_ahead: reserve_ahead?,
        key_prefix: raw.key_prefix.clone(),
    })
}

/// `host:port` (a name or an IP literal, `[v6]:port` for IPv6).
fn redis_address(check: &mut Checker, key_path: &str, text: &str) -> Option<RedisAddress> {
    let parsed = text.rsplit_once(':').and_then(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        (!host.is_empty()).then(|| RedisAddress {
            host: host.to_string(),
            port,
        })
    });
    if parsed.is_none() {
        check.error(
            key_path,
            format!("invalid address {text:?}: expected host:port (e.g. redis:6379)"),
        );
    }
    parsed
}
