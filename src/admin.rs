//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`, `/upstreams`.
//!
//! `/readyz` reflects only sluice itself (config loaded, not draining), never the health of
//! backends: an outer load balancer must not eject a sluice node because one app is down.

use crate::observe::{metrics, redact};
use crate::state::State;
use crate::upstream::health::now_ms;
use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

/// Serves the admin endpoints from the process state.
pub struct AdminApp {
    state: Arc<State>,
}

impl AdminApp {
    /// An admin app reading `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    fn upstreams(&self) -> serde_json::Value {
        let snapshot = self.state.snapshot();
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
                        json!({
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
        json!({ "generation": snapshot.generation, "upstreams": upstreams })
    }
}

impl AdminApp {
    /// The config in effect: the file's last accepted version, except for the settings
    /// that change only at a start or upgrade, which show the values in effect; the file's
    /// values for those are under `restart_pending`. Credentials are redacted.
    fn config(&self) -> serde_json::Value {
        let snapshot = self.state.snapshot();
        let mut config = serde_json::to_value(&*snapshot.config.raw).unwrap_or_default();
        let started = serde_json::to_value(&*self.state.started_config().raw).unwrap_or_default();
        let mut pending = serde_json::Map::new();
        for key in RESTART_ONLY {
            if config[key] != started[key] {
                pending.insert(key.to_string(), config[key].take());
                config[key] = started[key].clone();
            }
        }
        let mut answer = json!({
            "generation": snapshot.generation,
            "file": snapshot.config.path.display().to_string(),
            "config": config,
            "restart_pending": pending,
        });
        redact::credentials(&mut answer);
        answer
    }
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

fn json_response(status: u16, value: &serde_json::Value) -> http::Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    response(status, "application/json", body)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
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
            "/metrics" => response(200, "text/plain; version=0.0.4", metrics::render()),
            "/config" => json_response(200, &self.config()),
            "/upstreams" => json_response(200, &self.upstreams()),
            _ => json_response(404, &json!({ "status": 404, "error": "not found" })),
        }
    }
}
