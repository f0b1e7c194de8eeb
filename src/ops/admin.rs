//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`, `/upstreams`; and the
//! optional metrics listener, with only the first three.
//!
//! `admin.listen` is loopback by default: `/config` and `/upstreams` show the whole routing
//! and every backend address. With `admin.token_file` they need `Authorization: Bearer`.
//! Both listeners answer only requests whose `Host` is an IP literal, `localhost` or one of
//! `admin.allowed_hosts`: a web page cannot reach them through a DNS name rebound to
//! 127.0.0.1 (DNS rebinding), since its requests carry that name.
//!
//! `/readyz` reflects only sluice itself (config loaded, not draining), never the health of
//! backends: an outer load balancer must not eject a sluice node because one app is down.

use crate::model::{HostMatch, PathMatch};
use crate::observe::{metrics, redact};
use crate::ops::status_page;
use crate::state::{Snapshot, State};
use crate::upstream::health::now_ms;
use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminScope {
    /// Every endpoint (`admin.listen`).
    All,
    /// `/metrics`, `/healthz` and `/readyz` (`admin.metrics_listen`).
    MetricsAndProbes,
}

/// Serves the admin endpoints from the process state.
pub struct AdminApp {
    state: Arc<State>,
    scope: AdminScope,
}

impl AdminApp {
    /// An admin app reading `state`, serving `scope`.
    pub fn new(state: Arc<State>, scope: AdminScope) -> Self {
        Self { state, scope }
    }

    fn upstreams(&self) -> serde_json::Value {
        let snapshot = self.state.snapshot();
        json!({ "generation": snapshot.generation, "upstreams": upstreams_view(&snapshot) })
    }
}

/// Every upstream with each endpoint's state, health and tries (`/upstreams`, `/status`).
fn upstreams_view(snapshot: &Snapshot) -> serde_json::Value {
    let now = now_ms();
    let upstreams: Vec<_> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            let checked = u.config.health.active.is_some();
            let endpoints: Vec<_> = u
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let health = &e.state.health;
                    let share = health.slow_start_share(now, u.config.slow_start);
                    let ejected = health.ejected_until(now).is_some();
                    let verdict = health.verdict().as_str();
                    // One word for the status page, the most pressing first.
                    let state = if e.terminating {
                        "terminating"
                    } else if ejected {
                        "ejected"
                    } else if checked && verdict != "healthy" {
                        verdict
                    } else if share < 1.0 {
                        "slow_start"
                    } else {
                        "serving"
                    };
                    let tries = e.state.tries.seen(now / 1000);
                    json!({
                        "state": state,
                        "tries": tries.tries,
                        "failures": tries.failures,
                        "tries_per_second": tries.tries_per_second,
                        "failures_per_second": tries.failures_per_second,
                        "address": e.address.to_string(),
                        "weight": e.weight,
                        "ready": !e.terminating,
                        "terminating": e.terminating,
                        "available": u.is_available(i, now),
                        "health": if checked { health.verdict().as_str() } else { "not_checked" },
                        "last_check": health.last_check().map(|c| json!({
                            "result": c.result,
                            "detail": c.detail,
                            "at": humantime::format_rfc3339_millis(c.at).to_string(),
                        })),
                        "ejected_until": health
                            .ejected_until(now)
                            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                        "slow_start": (share < 1.0).then(|| json!({ "share": share })),
                        "in_flight": e.state.in_flight(),
                    })
                })
                .collect();
            let summary = u.health_summary();
            json!({
                "name": u.name(),
                "balance": u.config.balance,
                "hash_key": u.config.hash_key.as_ref().map(|k| k.template()),
                "panic": u.in_panic(),
                "healthy": summary.healthy,
                "retries_in_flight": u.retry_budget.retries_in_flight(),
                "endpoints": endpoints,
            })
        })
        .collect();
    serde_json::Value::Array(upstreams)
}

impl AdminApp {
    /// What the status page shows, as JSON: listeners, routes with their origin, upstreams
    /// with every endpoint's state and recent tries, the last reloads, rejected objects.
    fn status(&self) -> serde_json::Value {
        let snapshot = self.state.snapshot();
        let model = model_view(&snapshot);
        let reloads: Vec<_> = self
            .state
            .reloads
            .recent()
            .into_iter()
            .map(|r| {
                json!({
                    "at": humantime::format_rfc3339_seconds(r.at).to_string(),
                    "trigger": r.trigger,
                    "generation": r.outcome.as_ref().ok(),
                    "error": r.outcome.as_ref().err(),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "generation": snapshot.generation,
            "listeners": model["listeners"],
            "routes": model["routes"],
            "upstreams": upstreams_view(&snapshot),
            "reloads": reloads,
            "rejected": rejected_view(&snapshot),
        })
    }

    /// The config in effect: the file's last accepted version, except for the settings
    /// that change only at a start or upgrade, which show the values in effect; the file's
    /// values for those are under `restart_pending`. Credentials are redacted.
    fn config(&self) -> serde_json::Value {
        let snapshot = self.state.snapshot();
        let mut config = serde_json::to_value(&*snapshot.file.raw).unwrap_or_default();
        let started = serde_json::to_value(&*self.state.started_file().raw).unwrap_or_default();
        let mut pending = serde_json::Map::new();
        for key in RESTART_ONLY {
            if config[key] != started[key] {
                pending.insert(key.to_string(), config[key].take());
                config[key] = started[key].clone();
            }
        }
        let mut answer = json!({
            "generation": snapshot.generation,
            "file": snapshot.file.path.display().to_string(),
            "config": config,
            "restart_pending": pending,
            "model": model_view(&snapshot),
            "rejected": rejected_view(&snapshot),
        });
        redact::credentials(&mut answer);
        answer
    }
}

/// The fragments the compiler rejects, each with its source, origin and errors.
fn rejected_view(snapshot: &Snapshot) -> serde_json::Value {
    let rejected = snapshot.rejected.iter().map(|r| {
        json!({
            "source": r.source,
            "origin": r.origin.to_string(),
            "errors": r.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        })
    });
    serde_json::Value::Array(rejected.collect())
}

/// The effective model: each listener, route and upstream with where it came from, and
/// the fragments it was compiled from.
fn model_view(snapshot: &Snapshot) -> serde_json::Value {
    let config = &snapshot.config;
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| {
            let certificates: Vec<_> = config
                .tls
                .iter()
                .filter(|t| t.listener == l.name)
                .flat_map(|t| t.certificates.iter())
                .map(|c| json!({ "names": c.names, "not_after": c.not_after }))
                .collect();
            json!({
                "name": l.name,
                "origin": l.origin.to_string(),
                "listen": l.listen.to_string(),
                "protocol": l.protocol,
                "certificates": certificates,
            })
        })
        .collect();
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "origin": r.origin.to_string(),
                "listener": r.listener,
                "hosts": r.hosts.iter().map(HostMatch::key).collect::<Vec<_>>(),
                "paths": r.paths.iter().map(|p| match p {
                    PathMatch::Exact(p) => json!({ "exact": p }),
                    PathMatch::Prefix(p) => json!({ "prefix": p }),
                    PathMatch::SegmentPrefix(p) => json!({ "segment_prefix": p }),
                    PathMatch::Regex(r) => json!({ "regex": r.as_str() }),
                }).collect::<Vec<_>>(),
                "conditions": (!r.conditions.is_empty()).then(|| r.conditions.key()),
                "backends": r.backends.iter().map(|b| json!({
                    "upstream": b.upstream,
                    "weight": b.weight,
                    // The names it edits (values may be secrets).
                    "request_headers": (!b.request_headers.is_empty()).then(|| {
                        let edits = &b.request_headers;
                        edits.set.iter().chain(&edits.add).map(|(n, _)| n.as_str())
                            .chain(edits.remove.iter().map(|n| n.as_str()))
                            .collect::<Vec<_>>()
                    }),
                })).collect::<Vec<_>>(),
                "canary": r.canary.as_ref().map(|c| c.upstream.as_str()),
                "mirrors": r.filters.mirrors.iter().map(|m| json!({
                    "upstream": m.upstream,
                    "percent": f64::from(m.per_million) / 10_000.0,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let upstreams: Vec<_> = config
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "origin": u.origin.to_string(),
                "protocol": u.protocol,
                "balance": u.balance,
            })
        })
        .collect();
    let fragments: Vec<_> = snapshot
        .accepted
        .iter()
        .map(|(source, origin)| json!({ "source": source, "origin": origin.to_string() }))
        .collect();
    json!({
        "listeners": listeners,
        "routes": routes,
        "upstreams": upstreams,
        "fragments": fragments,
    })
}

/// The top-level config keys a reload does not apply (they take effect at the next start
/// or upgrade; listener and admin changes are refused outright).
const RESTART_ONLY: [&str; 2] = ["server", "access_log"];

fn response(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len());
    if status >= 400 {
        builder = builder.header("cache-control", "no-store");
    }
    builder.body(body).unwrap_or_else(|e| {
        log::error!("cannot build admin response: {e}");
        http::Response::new(Vec::new())
    })
}

pub(super) fn json_response(status: u16, value: &serde_json::Value) -> http::Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    response(status, "application/json", body)
}

/// Whether `host` (a `Host` header value, with or without port) names this machine in a
/// way DNS rebinding cannot produce: an IP literal, `localhost`, or an allowed name.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest.split_once(']').is_some_and(|(ip, port)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok()
                    && (port.is_empty()
                        || port
                            .strip_prefix(':')
                            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit())))
            });
        }
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// Whether the request carries `Authorization: Bearer <token>`.
fn bearer_matches(session: &ServerSession, token: &str) -> bool {
    let Some(value) = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
    else {
        return false;
    };
    let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    // Compared in time independent of where they differ.
    given.len() == token.len()
        && given
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let config = self.state.snapshot().config.clone();
        let admin = &config.admin;
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if host.is_some_and(|host| !host_allowed(host, &admin.allowed_hosts)) {
            return json_response(
                403,
                &json!({ "status": 403, "error": "Host not allowed (add it to admin.allowed_hosts)" }),
            );
        }
        let private = matches!(
            path.as_str(),
            "/config" | "/upstreams" | "/status" | "/status.json"
        );
        if private && self.scope == AdminScope::MetricsAndProbes {
            return json_response(404, &json!({ "status": 404, "error": "not found" }));
        }
        if private {
            if let Some(token) = &admin.token {
                if !bearer_matches(session, token) {
                    let mut answer = json_response(
                        401,
                        &json!({ "status": 401, "error": "a bearer token is required" }),
                    );
                    answer.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    );
                    return answer;
                }
            }
        }
        match path.as_str() {
            "/healthz" => response(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                // Reads /proc until the first success: off the async worker thread.
                let state = self.state.clone();
                match tokio::task::spawn_blocking(move || state.readiness()).await {
                    Ok(Ok(())) => response(200, "text/plain", b"ready\n".to_vec()),
                    Ok(Err(not_ready)) => {
                        response(503, "text/plain", format!("{not_ready}\n").into_bytes())
                    }
                    Err(e) => response(500, "text/plain", format!("{e}\n").into_bytes()),
                }
            }
            // Reads /proc (process_* metrics): off the async worker thread.
            "/metrics" => match tokio::task::spawn_blocking(metrics::render).await {
                Ok(text) => response(200, "text/plain; version=0.0.4", text),
                Err(e) => response(500, "text/plain", format!("{e}\n").into_bytes()),
            },
            "/config" => json_response(200, &self.config()),
            "/status.json" => json_response(200, &self.status()),
            "/status" => response(
                200,
                "text/html; charset=utf-8",
                status_page::render(&self.status()).into_bytes(),
            ),
            "/upstreams" => json_response(200, &self.upstreams()),
            _ => json_response(404, &json!({ "status": 404, "error": "not found" })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts_that_dns_rebinding_cannot_produce() {
        let allowed = vec!["sluice-admin.internal".to_string()];
        for host in [
            "127.0.0.1:9901",
            "10.0.0.7",
            "[::1]:9901",
            "localhost:9901",
            "LOCALHOST",
            "sluice-admin.internal:9901",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example:9901",
            "127.0.0.1.nip.io",
            "[::1",
            "localhost.evil",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }
}
