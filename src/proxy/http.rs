//! The HTTP proxy: Pingora's `ProxyHttp` hooks, gluing routing, balancing, retries,
//! headers and observability together. Decisions live in their own modules; this file only
//! calls them at the right hook.

use super::context::{Attempt, AttemptResult, RequestContext, Routed};
use super::headers;
use super::retry::{self, AttemptFacts, Failure};
use crate::observe::access_log::{self, AttemptRecord, Record};
use crate::observe::metrics::METRICS;
use crate::state::State;
use crate::upstream::connection_uses::ConnectionUses;
use crate::upstream::hash_key::RequestFacts;
use async_trait::async_trait;
use bytes::Bytes;
use once_cell::sync::Lazy;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Use counts of upstream connections, shared by every listener of the process.
static CONNECTION_USES: Lazy<ConnectionUses> = Lazy::new(ConnectionUses::default);

/// The scheme of plaintext listeners (TLS arrives with issue #6).
const SCHEME: &str = "http";

/// The proxy of one HTTP listener.
pub struct HttpProxy {
    state: Arc<State>,
    listener: String,
    keepalive_timeout: Duration,
}

impl HttpProxy {
    /// A proxy for listener `listener`, routing with the state's current snapshot.
    pub fn new(state: Arc<State>, listener: String, keepalive_timeout: Duration) -> Self {
        Self {
            state,
            listener,
            keepalive_timeout,
        }
    }
}

/// Writes a small JSON response; the downstream connection stays reusable.
async fn respond_json(session: &mut Session, status: u16, body: String) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

fn error_body(status: u16, error: &str, request_id: &str) -> String {
    serde_json::json!({ "status": status, "error": error, "request_id": request_id }).to_string()
}

/// Classifies a connect error for logs and metrics.
fn connect_result(e: &Error) -> AttemptResult {
    match e.etype() {
        ErrorType::ConnectRefused => AttemptResult::ConnectRefused,
        ErrorType::ConnectTimedout => AttemptResult::ConnectTimeout,
        _ => AttemptResult::ConnectError,
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout
    )
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        session.set_keepalive(Some(self.keepalive_timeout.as_secs()));
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.request_id = headers::request_id(session.req_header());
        session
            .req_header_mut()
            .insert_header(headers::REQUEST_ID, ctx.request_id.as_str())?;

        let snapshot = self.state.snapshot();
        let route = snapshot
            .route_tables
            .get(&self.listener)
            .and_then(|table| table.find_for(session.req_header()));
        let Some(route) = route else {
            respond_json(session, 404, error_body(404, "no route", &ctx.request_id)).await?;
            return Ok(true);
        };
        let runtime_route = &snapshot.routes[route];
        let upstream = &snapshot.upstreams[runtime_route.upstream];
        let active = upstream.retry_budget.start_request();
        let deadline = runtime_route.timeouts.total.map(|t| ctx.started + t);
        ctx.routed = Some(Routed {
            snapshot: snapshot.clone(),
            route,
            _active: active,
            deadline,
        });
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let routed = ctx
            .routed
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not routed"))?;
        let upstream = routed.upstream();
        let mut timeouts = routed.snapshot.routes[routed.route].timeouts;
        if let Some(deadline) = routed.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(504),
                    "total timeout of the request reached before a retry",
                ));
            }
            timeouts.connect = timeouts.connect.min(left);
            timeouts.read = timeouts.read.min(left);
            timeouts.write = timeouts.write.min(left);
        }
        let facts = RequestFacts {
            header: session.req_header(),
            client_ip: ctx.client_ip,
            scheme: SCHEME,
        };
        let attempts = &ctx.attempts;
        let tried = |i: usize| attempts.iter().any(|a| a.endpoint == i);
        let endpoint = upstream.pick(&facts, &tried).ok_or_else(|| {
            Error::explain(
                ErrorType::HTTPStatus(503),
                format!("upstream {} has no endpoint", upstream.name()),
            )
        })?;
        if !ctx.attempts.is_empty() {
            METRICS
                .upstream_retries
                .with_label_values(&[upstream.name()])
                .inc();
        }
        let chosen = &upstream.endpoints[endpoint];
        ctx.in_flight = Some(chosen.state.start_request());
        ctx.attempts.push(Attempt {
            endpoint,
            address: chosen.address,
            started: Instant::now(),
            connect_time: None,
            ended: None,
            result: AttemptResult::Ok,
            status: None,
            reused: false,
        });
        ctx.response_started = false;
        ctx.close_upstream_connection = false;
        Ok(Box::new(upstream.peer(endpoint, &timeouts)))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.end_attempt(connect_result(&e));
        let retry = self.retry_allowed(session, ctx, Failure::Connect);
        e.set_retry(retry);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(routed) = ctx.routed.as_ref() else {
            return Ok(());
        };
        let upstream = routed.upstream();
        METRICS
            .upstream_connections
            .with_label_values(&[upstream.name(), if reused { "true" } else { "false" }])
            .inc();
        let uses = CONNECTION_USES.record(fd, reused);
        ctx.close_upstream_connection = upstream.must_close_connection(uses);
        if let Some(attempt) = ctx.current_attempt() {
            attempt.reused = reused;
            attempt.connect_time = Some(attempt.started.elapsed());
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        headers::add_forwarding(upstream_request, ctx.client_ip, SCHEME)?;
        upstream_request.insert_header(headers::ATTEMPT, ctx.attempts.len().to_string())?;
        if ctx.close_upstream_connection {
            upstream_request.insert_header("connection", "close")?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.response_started = true;
        let status = upstream_response.status.as_u16();
        if let Some(attempt) = ctx.current_attempt() {
            attempt.status = Some(status);
        }
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let (failure, result) = if ctx.response_started {
            (Failure::AfterResponseStarted, AttemptResult::Error)
        } else if is_timeout(&e) {
            // A timeout means the upstream may be working on the request: not retried.
            (Failure::AfterResponseStarted, AttemptResult::Timeout)
        } else {
            (Failure::BeforeResponse, AttemptResult::Reset)
        };
        ctx.end_attempt(result);
        let retry = self.retry_allowed(session, ctx, failure);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ if is_timeout(e) && e.esource() == &ErrorSource::Upstream => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let reason = match code {
                502 => "bad gateway",
                503 => "no endpoint available",
                504 => "upstream timed out",
                400 => "bad request",
                _ => "error",
            };
            let body = Bytes::from(error_body(code, reason, &ctx.request_id));
            let written = match ResponseHeader::build(code, Some(2)) {
                Ok(mut header) => {
                    let _ = header.insert_header("content-type", "application/json");
                    let _ = header.insert_header("content-length", body.len().to_string());
                    session
                        .as_downstream_mut()
                        .write_error_response(header, body)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                log::debug!("cannot send error response to the client: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if e.is_none() {
            ctx.end_attempt(AttemptResult::Ok);
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let route = ctx
            .routed
            .as_ref()
            .map(|r| r.snapshot.routes[r.route].name.as_str());
        let upstream = ctx.routed.as_ref().map(|r| r.upstream().name());
        let route_label = route.unwrap_or("none");
        let duration = ctx.started.elapsed();
        METRICS
            .http_requests
            .with_label_values(&[route_label, status_label(status)])
            .inc();
        METRICS
            .http_request_duration
            .with_label_values(&[route_label])
            .observe(duration.as_secs_f64());
        if let Some(upstream) = upstream {
            for attempt in &ctx.attempts {
                METRICS
                    .upstream_attempts
                    .with_label_values(&[upstream, attempt.result.as_str()])
                    .inc();
            }
        }

        let header = session.req_header();
        let now = Instant::now();
        let attempts = ctx
            .attempts
            .iter()
            .map(|a| AttemptRecord {
                endpoint: a.address.to_string(),
                result: a.result.as_str(),
                status: a.status,
                connect_ms: a.connect_time.map(millis),
                duration_ms: millis(a.ended.unwrap_or(now) - a.started),
                reused: a.reused,
            })
            .collect();
        let record = Record {
            ts: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: &ctx.request_id,
            listener: &self.listener,
            route,
            client: ctx.client_ip.map(|ip| ip.to_string()),
            method: header.method.as_str(),
            host: crate::routing::request_host(header),
            uri: std::str::from_utf8(header.raw_path()).unwrap_or("<non-utf8>"),
            proto: version_label(header.version),
            status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration_ms: millis(duration),
            upstream,
            attempts,
        };
        access_log::write(&record);
    }
}

impl HttpProxy {
    /// Whether the failed try may be retried; takes a retry-budget slot when it may.
    fn retry_allowed(&self, session: &Session, ctx: &mut RequestContext, failure: Failure) -> bool {
        let Some(routed) = ctx.routed.as_ref() else {
            return false;
        };
        let upstream = routed.upstream();
        let facts = AttemptFacts {
            method: &session.req_header().method,
            attempts_made: ctx.attempts.len() as u32,
            body_replayable: !session.as_ref().retry_buffer_truncated(),
        };
        if !retry::allows_retry(&upstream.config.retry, failure, facts) {
            return false;
        }
        match upstream
            .retry_budget
            .try_retry(upstream.config.retry.budget_percent)
        {
            Some(slot) => {
                ctx.retry_slots.push(slot);
                true
            }
            None => {
                log::warn!(
                    "retry budget of upstream {} exhausted; not retrying request {}",
                    upstream.name(),
                    ctx.request_id
                );
                false
            }
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The status code as a metric label, without allocating per request.
fn status_label(status: u16) -> &'static str {
    static LABELS: Lazy<Vec<String>> = Lazy::new(|| (0..600).map(|c| c.to_string()).collect());
    LABELS
        .get(usize::from(status))
        .map_or("other", String::as_str)
}

fn version_label(version: pingora::http::Version) -> &'static str {
    match version {
        pingora::http::Version::HTTP_09 => "HTTP/0.9",
        pingora::http::Version::HTTP_10 => "HTTP/1.0",
        pingora::http::Version::HTTP_11 => "HTTP/1.1",
        pingora::http::Version::HTTP_2 => "HTTP/2",
        pingora::http::Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}
