//! Prometheus metrics (prefix `sluice_`), registered once in the default registry that
//! `/metrics` serves.

use once_cell::sync::Lazy;
use pingora_prometheus::prometheus::{
    self, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};
use std::sync::OnceLock;

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
    pub config_last_reload_success: IntGauge,
    pub config_rejected_fragments: IntGaugeVec,
    pub discovery_updates: IntCounterVec,
    pub discovery_errors: IntCounterVec,
    pub access_log_dropped: IntCounterVec,
    pub tcp_connections_active: IntGaugeVec,
    pub tcp_connections: IntCounterVec,
    pub tcp_bytes: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub mirror_requests: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub auth_requests: IntCounterVec,
    pub tls_client_certificates: IntCounterVec,
    pub tracing_spans: IntCounterVec,
    pub upstream_response: HistogramVec,
    pub endpoint_requests: IntCounterVec,
    pub http_request_size: HistogramVec,
    pub http_response_size: HistogramVec,
    pub downstream_connections_open: IntGaugeVec,
    pub downstream_connections: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub kubernetes_objects: IntGaugeVec,
    pub kubernetes_rejections: IntCounterVec,
    pub kubernetes_leader: IntGaugeVec,
    pub global_rate_limit: IntCounterVec,
    pub global_rate_limit_waits: IntCounterVec,
    pub redis_calls: IntCounterVec,
    pub redis_call_duration: HistogramVec,
    pub redis_breaker_open: IntGauge,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    register(Box::new(metric.clone()));
    metric
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("metric names and labels are static and valid");
    register(Box::new(metric.clone()));
    metric
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    register(Box::new(metric.clone()));
    metric
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("metric names and labels are static and valid");
    register(Box::new(metric.clone()));
    metric
}

/// Buckets of durations in seconds: 0.5 ms to a minute.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Buckets of body sizes in bytes: 64 B to 64 MiB, by factors of 4.
const SIZE_BUCKETS: [f64; 11] = [
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// The Pingora release sluice is built on (Cargo.toml pins it).
const PINGORA_VERSION: &str = "0.9.1";

/// The last patch of the series applied to Pingora: its number and name.
const PINGORA_PATCHES: &str = "0015-listeners-tell-tls-accept-callbacks-of-failed-handshakes";

fn register(metric: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = prometheus::register(metric) {
        log::error!("cannot register metric: {e}");
    }
}

/// The process's metrics.
pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let http_request_duration = histogram(
        "sluice_http_request_duration_seconds",
        "Time from request start to the end of the response, by route.",
        &["route"],
        DURATION_BUCKETS.to_vec(),
    );
    let upstream_endpoints = gauge_vec(
        "sluice_upstream_endpoints",
        "Endpoints of each upstream, by state.",
        &["upstream", "state"],
    );
    let redis_breaker_open = gauge(
        "sluice_redis_breaker_open",
        "1 while the circuit breaker in front of Redis is open (fleet-wide rate limits are \
         decided by each route's on_redis_failure), else 0.",
    );
    let config_generation = gauge(
        "sluice_config_generation",
        "Generation number of the running config (1 at start, +1 per successful reload).",
    );
    let config_last_reload_success = gauge(
        "sluice_config_last_reload_success_timestamp_seconds",
        "When the config file was last loaded successfully (the start counts), in seconds \
         since the epoch.",
    );
    let config_rejected_fragments = gauge_vec(
        "sluice_config_rejected_fragments",
        "Fragments (objects) the compiler rejects now, by source.",
        &["source"],
    );
    let tcp_connections_active = gauge_vec(
        "sluice_tcp_connections_active",
        "Open tcp-route connections and upgraded (WebSocket) HTTP connections, by route.",
        &["route"],
    );

    let kubernetes_objects = gauge_vec(
        "sluice_kubernetes_objects",
        "Kubernetes objects sluice serves from (served) or refuses (rejected), by kind.",
        &["kind", "state"],
    );
    let kubernetes_leader = gauge_vec(
        "sluice_kubernetes_leader",
        "1 while this replica holds the Lease (and alone writes object status).",
        &["lease"],
    );
    let downstream_connections_open = gauge_vec(
        "sluice_downstream_connections_open",
        "Client connections open, by listener and protocol (http, https, tcp).",
        &["listener", "protocol"],
    );
    let build_info = gauge_vec(
        "sluice_build_info",
        "1, with the version of sluice, of Pingora, and the last patch of the series \
             sluice applies to Pingora (third_party/pingora/PATCHES.md).",
        &["version", "pingora", "pingora_patches"],
    );
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION"), PINGORA_VERSION, PINGORA_PATCHES])
        .set(1);
    register(Box::new(super::process::ProcessCollector::new()));
    Metrics {
        upstream_response: histogram(
            "sluice_upstream_response_seconds",
            "Time of each try of an upstream, by upstream and phase (first_byte: from the \
             try's start to the response head; total: to the end of a try that succeeded).",
            &["upstream", "phase"],
            DURATION_BUCKETS.to_vec(),
        ),
        endpoint_requests: counter(
            "sluice_endpoint_requests_total",
            "Tries of each endpoint, by upstream, endpoint (IP:port, from the config or \
             discovery) and result (the answer's status class, 2xx to 5xx, or how the try \
             failed: connect_refused, connect_timeout, reset, timeout, ...).",
            &["upstream", "endpoint", "result"],
        ),
        http_request_size: histogram(
            "sluice_http_request_size_bytes",
            "Request body bytes received from clients, by route.",
            &["route"],
            SIZE_BUCKETS.to_vec(),
        ),
        http_response_size: histogram(
            "sluice_http_response_size_bytes",
            "Response body bytes sent to clients, by route.",
            &["route"],
            SIZE_BUCKETS.to_vec(),
        ),
        downstream_connections_open,
        downstream_connections: counter(
            "sluice_downstream_connections_total",
            "Client connections accepted, by listener and protocol (http, https, tcp).",
            &["listener", "protocol"],
        ),
        tls_handshakes: counter(
            "sluice_tls_handshakes_total",
            "TLS handshakes with clients, by listener and result (ok, or why it failed: \
             no_client_certificate, bad_client_certificate, unknown_server_name, \
             incompatible: no shared version or cipher, alert_received: the client refused \
             the handshake, often sluice's certificate, not_tls: plain text on a TLS port, \
             protocol_error, closed: the client left mid-handshake, other).",
            &["listener", "result"],
        ),
        kubernetes_objects,
        kubernetes_leader,
        kubernetes_rejections: counter(
            "sluice_kubernetes_rejections_total",
            "Versions of Kubernetes objects rejected, by kind and reason (the Event reason).",
            &["kind", "reason"],
        ),
        http_requests: counter(
            "sluice_http_requests_total",
            "HTTP requests answered, by route, status code and, for requests sluice \
             refused itself, the reason (empty for answers from upstreams).",
            &["route", "code", "reason"],
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
        config_last_reload_success,
        config_rejected_fragments,
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
        mirror_requests: counter(
            "sluice_mirror_requests_total",
            "Mirror copies of requests, by route and result (ok: answered, error, timeout, \
             dropped: max_in_flight reached, no_endpoint, body_not_buffered).",
            &["route", "result"],
        ),
        connections_rejected: counter(
            "sluice_connections_rejected_total",
            "Client connections closed before their first request, by listener and reason \
             (proxy_protocol: no valid header in time, listener_limit: connections.max, \
             client_limit: connections.max_per_client).",
            &["listener", "reason"],
        ),
        auth_requests: counter(
            "sluice_auth_requests_total",
            "Requests checked by a route's auth, by route and result (allowed, denied, \
             signin: redirected to sign in, error: the external service failed and the \
             request was refused, error_allowed: it failed and on_error let the request in).",
            &["route", "result"],
        ),
        tls_client_certificates: counter(
            "sluice_tls_client_certificates_total",
            "Client certificates checked on listeners with tls.client_auth, by listener and \
             result (verified, rejected: the handshake was refused).",
            &["listener", "result"],
        ),
        global_rate_limit: counter(
            "sluice_global_rate_limit_total",
            "Decisions of routes' fleet-wide rate limits, by route and result (admitted, \
             limited: answered 429, redis_unavailable_allowed, redis_unavailable_rejected: \
             Redis could not say and on_redis_failure decided).",
            &["route", "result"],
        ),
        global_rate_limit_waits: counter(
            "sluice_global_rate_limit_waits_total",
            "Requests that waited for a reservation from Redis (the others were decided from \
             tokens this replica held), by route.",
            &["route"],
        ),
        redis_calls: counter(
            "sluice_redis_calls_total",
            "Reservations asked of Redis, by result (ok, error, timeout, breaker_open: not \
             made because the circuit breaker is open).",
            &["result"],
        ),
        redis_call_duration: histogram(
            "sluice_redis_call_seconds",
            "Time of the reservations asked of Redis that it answered.",
            &[],
            DURATION_BUCKETS.to_vec(),
        ),
        redis_breaker_open,
        tracing_spans: counter(
            "sluice_tracing_spans_total",
            "Spans of sampled requests, by result (exported: the collector took them, \
             queue_full: dropped because tracing.queue_spans were waiting, export_failed: \
             dropped because the collector refused them, or did not answer within \
             tracing.export_timeout).",
            &["result"],
        ),
    }
});

/// Creates the process-wide series alerts watch, at 0, so that a rule such as
/// `increase(sluice_config_reloads_total{result="error"}[5m]) > 0` needs no `or vector(0)`.
pub fn init_process_series() {
    for result in ["ok", "error"] {
        METRICS.config_reloads.with_label_values(&[result]);
    }
    METRICS.access_log_dropped.with_label_values(&["full"]);
    config_loaded();
}

/// Records that the config file was just loaded successfully.
pub fn config_loaded() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    METRICS
        .config_last_reload_success
        .set(i64::try_from(now).unwrap_or(i64::MAX));
}

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        log::error!("cannot encode metrics: {e}");
    }
    out
}

/// Statuses whose per-route request counter is kept resolved (others are looked up).
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504,
];

/// A route's metric handles, resolved once instead of per request (a label lookup hashes
/// the label values and takes a lock), at first use: a route without traffic has no series,
/// so 60,000 configured routes cost no 1.4 million histogram series.
pub struct RouteMetrics {
    route: String,
    duration: OnceLock<Histogram>,
    request_size: OnceLock<Histogram>,
    response_size: OnceLock<Histogram>,
    requests: [OnceLock<IntCounter>; COMMON_STATUSES.len()],
}

/// What a finished request measured.
pub struct Measured<'a> {
    pub status: u16,
    pub seconds: f64,
    /// Why sluice refused it, empty when it did not.
    pub reason: &'a str,
    /// Body bytes received and sent.
    pub bytes_in: usize,
    pub bytes_out: usize,
}

impl RouteMetrics {
    /// The handles of route `route`.
    pub fn new(route: &str) -> Self {
        Self {
            route: route.to_string(),
            duration: OnceLock::new(),
            request_size: OnceLock::new(),
            response_size: OnceLock::new(),
            requests: Default::default(),
        }
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Counts a finished request and observes its duration and sizes.
    pub fn record_request(&self, measured: &Measured) {
        let Measured {
            status,
            seconds,
            reason,
            ..
        } = *measured;
        let route = [self.route.as_str()];
        resolved(&self.duration, &METRICS.http_request_duration, &route).observe(seconds);
        resolved(&self.request_size, &METRICS.http_request_size, &route)
            .observe(measured.bytes_in as f64);
        resolved(&self.response_size, &METRICS.http_response_size, &route)
            .observe(measured.bytes_out as f64);
        let common = COMMON_STATUSES.iter().position(|s| *s == status);
        match common.filter(|_| reason.is_empty()) {
            Some(i) => self.requests[i]
                .get_or_init(|| {
                    METRICS.http_requests.with_label_values(&[
                        &self.route,
                        status_label(status),
                        "",
                    ])
                })
                .inc(),
            None => METRICS
                .http_requests
                .with_label_values(&[&self.route, status_label(status), reason])
                .inc(),
        }
    }
}

/// The histogram of `vec` with `labels`, looked up once.
fn resolved<'a>(
    cell: &'a OnceLock<Histogram>,
    vec: &HistogramVec,
    labels: &[&str],
) -> &'a Histogram {
    cell.get_or_init(|| vec.with_label_values(labels))
}

/// An upstream's most used metric handles, resolved at first use.
pub struct UpstreamMetrics {
    first_byte: OnceLock<Histogram>,
    total: OnceLock<Histogram>,
    attempts_ok: OnceLock<IntCounter>,
    connections_new: OnceLock<IntCounter>,
    connections_reused: OnceLock<IntCounter>,
}

impl UpstreamMetrics {
    /// The handles of upstream `upstream`; creates at 0 the series that alerts watch
    /// (ejections, retries, panic routing, and discovery errors of a `discovered` one).
    pub fn new(upstream: &str, discovered: bool) -> Self {
        METRICS.upstream_ejections.with_label_values(&[upstream]);
        METRICS.upstream_retries.with_label_values(&[upstream]);
        METRICS.upstream_panic_routed.with_label_values(&[upstream]);
        if discovered {
            METRICS.discovery_errors.with_label_values(&[upstream]);
        }
        Self {
            first_byte: OnceLock::new(),
            total: OnceLock::new(),
            attempts_ok: OnceLock::new(),
            connections_new: OnceLock::new(),
            connections_reused: OnceLock::new(),
        }
    }

    /// Counts a try of upstream `upstream` that ended as `result`.
    pub fn count_attempt(&self, upstream: &str, result: &str) {
        let lookup = || {
            METRICS
                .upstream_attempts
                .with_label_values(&[upstream, result])
        };
        if result == "ok" {
            self.attempts_ok.get_or_init(lookup).inc();
        } else {
            lookup().inc();
        }
    }

    /// Observes a try of upstream `upstream`: its time to the response head, if one came,
    /// and its whole time, if it succeeded; and counts it against its endpoint.
    pub fn observe_attempt(&self, upstream: &str, attempt: &AttemptTimes<'_>) {
        let phases = [
            (&self.first_byte, "first_byte", attempt.first_byte),
            (&self.total, "total", attempt.total),
        ];
        for (cell, phase, time) in phases {
            if let Some(time) = time {
                resolved(cell, &METRICS.upstream_response, &[upstream, phase])
                    .observe(time.as_secs_f64());
            }
        }
        let result = match attempt.status {
            Some(status) => STATUS_CLASSES[usize::from(status / 100).min(5)],
            None => attempt.result,
        };
        let lookup = || {
            let endpoint = attempt.endpoint.to_string();
            METRICS
                .endpoint_requests
                .with_label_values(&[upstream, &endpoint, result])
        };
        match (result, attempt.answered_2xx) {
            ("2xx", Some(cell)) => cell.get_or_init(lookup).inc(),
            _ => lookup().inc(),
        }
    }

    /// Counts a connection to upstream `upstream`, new or taken from the pool.
    pub fn count_connection(&self, upstream: &str, reused: bool) {
        let (cell, label) = if reused {
            (&self.connections_reused, "true")
        } else {
            (&self.connections_new, "false")
        };
        cell.get_or_init(|| {
            METRICS
                .upstream_connections
                .with_label_values(&[upstream, label])
        })
        .inc();
    }
}

/// What [`UpstreamMetrics::observe_attempt`] needs of a try.
pub struct AttemptTimes<'a> {
    pub endpoint: std::net::SocketAddr,
    /// The endpoint's cached 2xx counter, if it is still the upstream's.
    pub answered_2xx: Option<&'a OnceLock<IntCounter>>,
    pub first_byte: Option<std::time::Duration>,
    /// Set for a try that succeeded.
    pub total: Option<std::time::Duration>,
    pub status: Option<u16>,
    /// How it ended (`ok`, `connect_refused`, ...), for a try without an answer.
    pub result: &'static str,
}

/// Status classes by hundreds (1xx counts with 2xx: an interim answer was followed).
const STATUS_CLASSES: [&str; 6] = ["other", "2xx", "2xx", "3xx", "4xx", "5xx"];

/// The status code as a metric label, without allocating per request.
pub fn status_label(status: u16) -> &'static str {
    static LABELS: Lazy<Vec<String>> = Lazy::new(|| (0..600).map(|c| c.to_string()).collect());
    LABELS
        .get(usize::from(status))
        .map_or("other", String::as_str)
}
