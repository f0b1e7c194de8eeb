//! Per-request state carried through Pingora's hooks.

use super::error_pages::RoutePages;
use super::trace::RequestTrace;
use crate::lifecycle::{OpenRequest, OpenWork};
use crate::observe::metrics::{RouteMetrics, METRICS};
use crate::observe::trace_context::SpanId;
use crate::proxy::request_body::BodyMode;
use crate::routing::concurrency::ConcurrencySlot;
use crate::state::{RouteBackend, Snapshot};
use crate::tls::client_auth::ClientCertificate;
use crate::upstream::endpoint::InFlightGuard;
use crate::upstream::retry_budget::BudgetGuard;
use bytes::Bytes;
use pingora_prometheus::prometheus::IntGauge;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// Still running, or ended without error.
    Ok,
    ConnectRefused,
    ConnectTimeout,
    ConnectError,
    /// The pooled connection was closed by the upstream before the request head was
    /// written: the upstream never saw the request.
    Unsent,
    /// The connection broke before a response header arrived.
    Reset,
    /// A read or write timed out.
    Timeout,
    /// The response had a status the retry policy retries; it was not passed on.
    RetriedStatus,
    /// The client closed the connection or failed mid-request.
    ClientError,
    /// Any other failure (including a break after the response started).
    Error,
}

impl AttemptResult {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Ok => "ok",
            AttemptResult::ConnectRefused => "connect_refused",
            AttemptResult::ConnectTimeout => "connect_timeout",
            AttemptResult::ConnectError => "connect_error",
            AttemptResult::Unsent => "unsent",
            AttemptResult::Reset => "reset",
            AttemptResult::Timeout => "timeout",
            AttemptResult::RetriedStatus => "retried_status",
            AttemptResult::ClientError => "client_error",
            AttemptResult::Error => "error",
        }
    }
}

/// One try of the request against an endpoint.
#[derive(Debug)]
pub struct Attempt {
    /// Index into the snapshot upstream's endpoints.
    pub endpoint: usize,
    pub address: SocketAddr,
    pub started: Instant,
    pub connect_time: Option<Duration>,
    pub ended: Option<Instant>,
    pub result: AttemptResult,
    pub status: Option<u16>,
    pub reused: bool,
    /// From the try's start to its response head.
    pub first_byte: Option<Duration>,
    /// The try's span, when the request is traced.
    pub span_id: Option<SpanId>,
}

impl Attempt {
    /// A try of `endpoint` (at `address`) starting now.
    pub fn start(endpoint: usize, address: SocketAddr) -> Self {
        Self {
            endpoint,
            address,
            started: Instant::now(),
            connect_time: None,
            ended: None,
            result: AttemptResult::Ok,
            status: None,
            reused: false,
            first_byte: None,
            span_id: None,
        }
    }
}

/// The route a request matched and the upstream it goes to.
pub struct Routed {
    pub snapshot: Arc<Snapshot>,
    pub route: usize,
    /// The backend (or canary) chosen for the request, with its timeouts.
    pub backend: RouteBackend,
    /// Where retries go after the canary failed (`canary.fallback`), until used.
    pub fallback: Option<RouteBackend>,
    /// Once retries moved from the canary to `fallback`: the canary's upstream and how many
    /// of `attempts` were its.
    pub left_canary: Option<(usize, usize)>,
    /// How much of the path the route's prefix matched (for prefix rewrites).
    pub prefix_len: Option<usize>,
    /// Counts the request as active in the upstream's retry budget.
    pub _active: BudgetGuard,
    /// Absolute deadline from `timeouts.total`.
    pub deadline: Option<Instant>,
}

impl Routed {
    /// The chosen upstream.
    pub fn upstream(&self) -> &crate::upstream::Upstream {
        &self.snapshot.upstreams[self.backend.upstream]
    }

    /// The attempts made on the current upstream (all of them unless retries left the
    /// canary).
    pub fn own_attempts<'a>(&self, attempts: &'a [Attempt]) -> &'a [Attempt] {
        let before = self.left_canary.map_or(0, |(_, n)| n);
        attempts.get(before..).unwrap_or_default()
    }

    /// Sends the next try to the fallback backend, if the canary has one left.
    pub fn leave_canary(&mut self, attempts_made: usize) {
        if let Some(fallback) = self.fallback.take() {
            self.left_canary = Some((self.backend.upstream, attempts_made));
            self.backend = fallback;
        }
    }

    /// The model's route (filters, affinity).
    pub fn config(&self) -> &crate::model::RouteConfig {
        &self.snapshot.config.routes[self.route]
    }
}

/// State of one request.
pub struct RequestContext {
    pub started: Instant,
    pub request_id: String,
    /// The client: the peer, or the address a trusted proxy's headers name.
    pub client_ip: Option<IpAddr>,
    /// The connection's peer (appended to `X-Forwarded-For`).
    pub peer_ip: Option<IpAddr>,
    /// Set once the request matched a route.
    pub routed: Option<Routed>,
    pub attempts: Vec<Attempt>,
    /// Retry slots held until the request ends.
    pub retry_slots: Vec<BudgetGuard>,
    /// Counts the request against the current endpoint (least_request).
    pub in_flight: Option<InFlightGuard>,
    /// A response header from the upstream was received.
    pub response_started: bool,
    /// The try's response status is being retried (set by `upstream_response_filter`, taken
    /// by `error_while_proxy`).
    pub retried_status: bool,
    /// Send `Connection: close` upstream: the connection reached `keepalive.max_requests`.
    pub close_upstream_connection: bool,
    /// The client asked for a WebSocket upgrade: timeouts are `timeouts.idle`.
    pub websocket: bool,
    /// A gRPC call: errors are answered with `grpc-status`, `grpc-timeout` is a deadline.
    pub grpc: bool,
    /// Set once the upstream answered 101: the connection is a tunnel, counted as one.
    pub tunnel: Option<Tunnel>,
    /// The client connection may be kept after this request (HTTP/1.1 without
    /// `Connection: close`, HTTP/1.0 with `Connection: keep-alive`, unambiguous framing).
    pub client_keepalive: bool,
    /// The request's `Origin`, which the route's CORS allows: its response says so.
    pub cors_origin: Option<String>,
    /// The route that answered the request itself (a redirect), for its metrics and log.
    pub answered_by: Option<Arc<RouteMetrics>>,
    /// A copy of the request went to the route's mirror (once per request, not per try).
    pub mirrored: bool,
    /// The last failed try never reached the upstream (a stale pooled connection): its
    /// retry stays on the same upstream, even a canary's with `fallback`.
    pub retry_stays: bool,
    /// The `Set-Cookie` value that pins the client to the endpoint of the last try.
    pub affinity_cookie: Option<String>,
    /// The certificate the client presented (listeners with `tls.client_auth`). Boxed,
    /// as `error_pages`: most requests have neither, and the context is moved per request.
    pub client_certificate: Option<Box<ClientCertificate>>,
    /// The route's error pages, once routed to a route that has some.
    pub error_pages: Option<Box<RoutePages>>,
    /// The request's slot in its route's per-client concurrency limit, freed at its end.
    pub concurrency_slot: Option<ConcurrencySlot>,
    /// The page that replaces the upstream's answer body, until it is sent.
    pub page_body: Option<Bytes>,
    /// Why sluice refused the request itself (a metric label), if it did.
    pub rejected: Option<&'static str>,
    /// How the request body is passed on.
    pub body_mode: BodyMode,
    /// Request body bytes received so far.
    pub body_bytes: u64,
    /// When the whole request body must have arrived (`requests.body_timeout`).
    pub body_deadline: Option<Instant>,
    /// Keeps the process from exiting during a stop or upgrade until the request ends.
    pub open: OpenWork,
    /// The request as registered for its access-log line should a stop's grace period cut
    /// it; takes the response status.
    pub open_request: Option<Arc<OpenRequest>>,
    /// The request's trace, when `tracing:` is set and its route traces. Boxed: the
    /// context is moved per request.
    pub trace: Option<Box<RequestTrace>>,
}

/// An upgraded (WebSocket) connection, counted in `sluice_tcp_connections_active` until
/// dropped.
pub struct Tunnel(IntGauge);

impl Tunnel {
    /// Counts a new tunnel on route `route`.
    pub fn open(route: &str) -> Self {
        METRICS.tcp_connections.with_label_values(&[route]).inc();
        let active = METRICS.tcp_connections_active.with_label_values(&[route]);
        active.inc();
        Self(active)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestContext {
    /// A context for a request that starts now, counted as `open` work.
    pub fn new(open: OpenWork) -> Self {
        Self {
            started: Instant::now(),
            request_id: String::new(),
            client_ip: None,
            peer_ip: None,
            routed: None,
            attempts: Vec::new(),
            retry_slots: Vec::new(),
            in_flight: None,
            response_started: false,
            retried_status: false,
            close_upstream_connection: false,
            websocket: false,
            grpc: false,
            tunnel: None,
            client_keepalive: true,
            cors_origin: None,
            answered_by: None,
            retry_stays: false,
            mirrored: false,
            affinity_cookie: None,
            client_certificate: None,
            error_pages: None,
            concurrency_slot: None,
            page_body: None,
            rejected: None,
            body_mode: BodyMode::Empty,
            body_bytes: 0,
            body_deadline: None,
            open,
            open_request: None,
            trace: None,
        }
    }

    /// The try in progress.
    pub fn current_attempt(&mut self) -> Option<&mut Attempt> {
        self.attempts.last_mut()
    }

    /// Ends the try in progress with `result`.
    pub fn end_attempt(&mut self, result: AttemptResult) {
        if let Some(attempt) = self.attempts.last_mut() {
            attempt.result = result;
            attempt.ended.get_or_insert_with(Instant::now);
        }
    }
}
