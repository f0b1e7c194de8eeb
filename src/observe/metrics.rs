//! Prometheus metrics (prefix `sluice_`), registered once in the default registry that
//! `/metrics` serves.

use once_cell::sync::Lazy;
use pingora_prometheus::prometheus::{
    self, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// Every metric sluice exports.
pub struct Metrics {
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub upstream_attempts: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_connections: IntCounterVec,
    pub upstream_endpoints: IntGaugeVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_panic_routed: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub discovery_updates: IntCounterVec,
    pub discovery_errors: IntCounterVec,
    pub access_log_dropped: IntCounterVec,
    pub tcp_connections_active: IntGaugeVec,
    pub tcp_connections: IntCounterVec,
    pub tcp_bytes: IntCounterVec,
    pub rate_limited: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    register(Box::new(metric.clone()));
    metric
}

fn register(metric: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = prometheus::register(metric) {
        log::error!("cannot register metric: {e}");
    }
}

/// The process's metrics.
pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let http_request_duration = HistogramVec::new(
        HistogramOpts::new(
            "sluice_http_request_duration_seconds",
            "Time from request start to the end of the response, by route.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ]),
        &["route"],
    )
    .expect("metric names and labels are static and valid");
    register(Box::new(http_request_duration.clone()));
    let upstream_endpoints = IntGaugeVec::new(
        Opts::new(
            "sluice_upstream_endpoints",
            "Endpoints of each upstream, by state.",
        ),
        &["upstream", "state"],
    )
    .expect("metric names and labels are static and valid");
    register(Box::new(upstream_endpoints.clone()));
    let config_generation = IntGauge::new(
        "sluice_config_generation",
        "Generation number of the running config (1 at start, +1 per successful reload).",
    )
    .expect("metric names and labels are static and valid");
    register(Box::new(config_generation.clone()));
    let tcp_connections_active = IntGaugeVec::new(
        Opts::new(
            "sluice_tcp_connections_active",
            "Open tcp-route connections and upgraded (WebSocket) HTTP connections, by route.",
        ),
        &["route"],
    )
    .expect("metric names and labels are static and valid");
    register(Box::new(tcp_connections_active.clone()));

    Metrics {
        http_requests: counter(
            "sluice_http_requests_total",
            "HTTP requests answered, by route and status code.",
            &["route", "code"],
        ),
        http_request_duration,
        upstream_attempts: counter(
            "sluice_upstream_attempts_total",
            "Tries of requests to upstream endpoints, by result.",
            &["upstream", "result"],
        ),
        upstream_retries: counter(
            "sluice_upstream_retries_total",
            "Retries sent to each upstream (tries after the first).",
            &["upstream"],
        ),
        upstream_connections: counter(
            "sluice_upstream_connections_total",
            "Upstream connections used by requests, new (reused=false) or from the pool.",
            &["upstream", "reused"],
        ),
        upstream_endpoints,
        upstream_ejections: counter(
            "sluice_upstream_ejections_total",
            "Endpoints ejected by passive health (consecutive failures on real requests).",
            &["upstream"],
        ),
        upstream_panic_routed: counter(
            "sluice_upstream_panic_routed_total",
            "Requests routed while too few endpoints were healthy (health ignored).",
            &["upstream"],
        ),
        health_checks: counter(
            "sluice_health_checks_total",
            "Active health checks, by result (ok, bad_status, timeout, connect_error, error).",
            &["upstream", "result"],
        ),
        config_reloads: counter(
            "sluice_config_reloads_total",
            "Config reloads, by result (ok or error).",
            &["result"],
        ),
        config_generation,
        discovery_updates: counter(
            "sluice_discovery_updates_total",
            "Endpoint set updates from discovery, by upstream.",
            &["upstream"],
        ),
        discovery_errors: counter(
            "sluice_discovery_errors_total",
            "Discovery errors (API unreachable, watch failures), by upstream.",
            &["upstream"],
        ),
        access_log_dropped: counter(
            "sluice_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind.",
            &["reason"],
        ),
        tcp_connections_active,
        tcp_connections: counter(
            "sluice_tcp_connections_total",
            "Accepted tcp-route connections and upgraded (WebSocket) HTTP connections, by route.",
            &["route"],
        ),
        tcp_bytes: counter(
            "sluice_tcp_bytes_total",
            "Bytes relayed on tcp routes, by route and direction (in: from clients, out: to clients).",
            &["route", "direction"],
        ),
        rate_limited: counter(
            "sluice_rate_limited_total",
            "Requests answered 429 by a route's rate limit.",
            &["route"],
        ),
    }
});

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        log::error!("cannot encode metrics: {e}");
    }
    out
}
