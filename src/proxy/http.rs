//! The HTTP proxy: Pingora's `ProxyHttp` hooks, gluing routing, balancing, retries,
//! headers and observability together. Decisions live in their own modules; this file only
//! calls them at the right hook.

use super::context::{Attempt, AttemptResult, RequestContext, Routed, Tunnel};
use super::error_pages::{self, RoutePages};
use super::report::{self, Exchange};
use super::request_body::{self, BodyMode};
use super::request_head::{self, Inspected, Rejection};
use super::retry::{self, AttemptFacts, Failure};
use super::trace::RequestTrace;
use super::{auth, client_ip, errors, grpc, headers, traffic};
use crate::limits::global::Answer;
use crate::limits::rate_limit;
use crate::model::{
    AccessList, ClientCertHeaders, HttpsRedirect, IpNet, ListenerConfig, RequestLimits,
    UpstreamProtocol,
};
use crate::observe::metrics::METRICS;
use crate::observe::trace_context::SpanId;
use crate::observe::{access_log, events};
use crate::routing::{conditions, cors, filters, misdirected};
use crate::state::{Snapshot, State};
use crate::tls::handshake::Handshake;
use crate::upstream::hash_key::RequestFacts;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::server::Session as HttpSession;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy of one HTTP listener.
pub struct HttpProxy {
    state: Arc<State>,
    listener: String,
    /// The client keepalive timeout in Pingora's whole seconds; `None`: no keepalive.
    keepalive_seconds: Option<u64>,
    /// `https` on TLS listeners, else `http` (X-Forwarded-Proto, `$scheme`).
    scheme: &'static str,
    /// Limits of request heads and bodies, and path normalisation.
    requests: RequestLimits,
    /// Every request is redirected to HTTPS.
    https_redirect: Option<HttpsRedirect>,
    /// Headers that carry the client certificate upstream (listeners with
    /// `tls.client_auth`).
    client_cert_headers: Option<ClientCertHeaders>,
    /// Peers whose forwarding headers name the client.
    trusted_proxies: Vec<IpNet>,
    /// Which clients may send requests.
    access: AccessList,
}

impl HttpProxy {
    /// A proxy for `listener`, routing with the state's current snapshot.
    pub fn new(state: Arc<State>, listener: &ListenerConfig) -> Self {
        Self {
            state,
            listener: listener.name.clone(),
            keepalive_seconds: keepalive_seconds(listener.keepalive_timeout),
            scheme: if listener.tls { "https" } else { "http" },
            requests: listener.requests,
            https_redirect: listener.https_redirect,
            trusted_proxies: listener.trusted_proxies.clone(),
            access: listener.access.clone(),
            client_cert_headers: listener.client_auth.as_ref().map(|a| a.headers.clone()),
        }
    }
}

/// Pingora counts the client keepalive timeout in whole seconds, and reads 0 as "no limit".
/// So a timeout is rounded up to whole seconds (500ms keeps 1 s, never forever), and 0
/// turns keepalive off, as nginx's `keepalive_timeout 0` does.
fn keepalive_seconds(timeout: Duration) -> Option<u64> {
    if timeout.is_zero() {
        return None;
    }
    Some(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0))
}

/// Forwards what inspection decided: the normalised origin-form target and one
/// `Content-Length`.
fn apply_inspected(header: &mut RequestHeader, inspected: &Inspected) -> Result<(), Rejection> {
    if let Some(target) = &inspected.new_target {
        header.set_raw_path(target).map_err(|_| Rejection {
            status: 400,
            reason: "target",
        })?;
    }
    if let Some(length) = inspected.collapsed_length {
        header.remove_header(&http::header::CONTENT_LENGTH);
        header
            .insert_header(http::header::CONTENT_LENGTH, length.to_string())
            .map_err(|_| Rejection {
                status: 400,
                reason: "content_length",
            })?;
    }
    Ok(())
}

/// A response header for a JSON body of `length` bytes.
fn json_header(status: u16, length: usize) -> Result<Box<ResponseHeader>> {
    let mut header = ResponseHeader::build(status, Some(2))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", length.to_string())?;
    Ok(Box::new(header))
}

/// Tells passive health how the current try went.
fn record_outcome(ctx: &RequestContext, failed: bool) {
    if let (Some(routed), Some(attempt)) = (ctx.routed.as_ref(), ctx.attempts.last()) {
        routed.upstream().record_outcome(attempt.endpoint, failed);
    }
}

/// Classifies a connect error for logs and metrics.
fn connect_result(e: &Error) -> AttemptResult {
    match e.etype() {
        ErrorType::ConnectRefused => AttemptResult::ConnectRefused,
        ErrorType::ConnectTimedout => AttemptResult::ConnectTimeout,
        _ => AttemptResult::ConnectError,
    }
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext::new(self.state.lifecycle.track())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let HttpSession::H1(h1) = session.as_downstream_mut() {
            // Pingora decided from the request whether the client keeps its connection
            // (HTTP/1.0 needs `Connection: keep-alive`; `Connection: close`, or a length
            // with a coding, end it); sluice only sets the timeout of a kept one.
            ctx.client_keepalive = h1.will_keepalive();
            // Pipelined requests are answered in order (RFC 9112 §9.3.2), one at a time.
            h1.set_pipelining_enabled(true);
        }
        self.set_keepalive(session, ctx);
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = if self.trusted_proxies.is_empty() {
            ctx.peer_ip
        } else {
            client_ip::client_ip(ctx.peer_ip, &self.trusted_proxies, session.req_header())
        };
        ctx.request_id = headers::request_id(session.req_header());
        ctx.grpc = grpc::is_grpc(session.req_header());
        if !self.access.admits(ctx.client_ip) {
            self.deny(session, ctx).await?;
            return Ok(true);
        }
        session
            .req_header_mut()
            .insert_header(headers::REQUEST_ID, ctx.request_id.as_str())?;
        if let Some(names) = &self.client_cert_headers {
            ctx.client_certificate = handshake(session)
                .and_then(|h| h.client_certificate.clone())
                .map(Box::new);
            // Whatever the client sent under these names is not believed.
            for name in names.names() {
                session.req_header_mut().remove_header(name);
            }
        }

        let inspected = match request_head::inspect(session.req_header(), &self.requests.paths) {
            Ok(inspected) => inspected,
            Err(rejection) => {
                self.reject(session, ctx, rejection).await?;
                return Ok(true);
            }
        };
        if inspected.asterisk {
            self.answer_asterisk(session).await?;
            return Ok(true);
        }
        if let Err(rejection) = apply_inspected(session.req_header_mut(), &inspected) {
            self.reject(session, ctx, rejection).await?;
            return Ok(true);
        }

        if let Some(https) = &self.https_redirect {
            let from = traffic::origin(self.scheme, &inspected, session.req_header());
            if let Some((status, location)) = traffic::listener_redirect(https, &from) {
                if let Some(rejection) = traffic::cannot_redirect(&inspected) {
                    self.reject(session, ctx, rejection).await?;
                    return Ok(true);
                }
                self.answer_redirect(session, ctx, status, &location)
                    .await?;
                return Ok(true);
            }
        }
        let snapshot = self.state.snapshot();
        if let Some(tracing) = &snapshot.config.tracing {
            let trace = RequestTrace::start(session.req_header(), &tracing.sampler, ctx.started);
            ctx.trace = Some(Box::new(trace));
        }
        if self.is_misdirected(session, &snapshot, &inspected.host) {
            ctx.rejected = Some("misdirected");
            self.answer_error(session, ctx, 421, None, false).await?;
            return Ok(true);
        }
        let found = snapshot
            .route_tables
            .get(&self.listener)
            .and_then(|table| table.find(&inspected.host, &inspected.path, session.req_header()));
        let Some(found) = found else {
            ctx.rejected = Some("no_route");
            // A 404 keeps the client connection open.
            self.answer_error(session, ctx, 404, None, false).await?;
            return Ok(true);
        };
        let route = found.route;
        let route_config = &snapshot.config.routes[route];
        if !route_config.tracing {
            ctx.trace = None;
        }
        let client_certificate = self.client_cert_headers.as_ref().map(|names| {
            let certificate = ctx.client_certificate.as_deref();
            let verifier = snapshot.routes[route].client_verifier.as_deref();
            (names, certificate, headers::accepted(certificate, verifier))
        });
        if let Some((names, certificate, accepted)) = client_certificate {
            headers::set_client_certificate(
                session.req_header_mut(),
                names,
                certificate,
                accepted,
            )?;
        }
        let accepted = client_certificate.is_some_and(|(_, _, accepted)| accepted);
        if route_config.require_client_certificate.is_some() && !accepted {
            // nginx's "400 No required SSL certificate was sent" (or "The SSL certificate
            // error" for one its CA did not issue).
            ctx.answered_by = Some(snapshot.routes[route].metrics.clone());
            self.reject(
                session,
                ctx,
                Rejection {
                    status: 400,
                    reason: "client_certificate_required",
                },
            )
            .await?;
            return Ok(true);
        }
        if route_config.error_pages.is_some() {
            ctx.error_pages = Some(Box::new(RoutePages {
                snapshot: snapshot.clone(),
                route,
            }));
        }
        if !route_config.access.admits(ctx.client_ip) {
            ctx.answered_by = Some(snapshot.routes[route].metrics.clone());
            self.deny(session, ctx).await?;
            return Ok(true);
        }
        if let Some(cors) = &route_config.cors {
            let origin = cors::allowed_origin(cors, session.req_header());
            if cors::is_preflight(session.req_header()) {
                ctx.answered_by = Some(snapshot.routes[route].metrics.clone());
                ctx.rejected = Some("cors_preflight");
                let answer = cors::preflight_response(cors, origin, session.req_header())?;
                session
                    .write_response_header(Box::new(answer), true)
                    .await?;
                return Ok(true);
            }
            ctx.cors_origin = origin.map(str::to_string);
        }
        let route_filters = &route_config.filters;
        let redirects = route_filters.redirects();
        if redirects {
            if let Some(rejection) = traffic::cannot_redirect(&inspected) {
                self.reject(session, ctx, rejection).await?;
                return Ok(true);
            }
        }
        let redirect = redirects.then(|| {
            let from = traffic::origin(self.scheme, &inspected, session.req_header());
            traffic::route_redirect(&route_config.filters, &from, found.prefix_len)
        });
        if let Some((status, location)) = redirect.flatten() {
            ctx.answered_by = Some(snapshot.routes[route].metrics.clone());
            self.answer_redirect(session, ctx, status, &location)
                .await?;
            return Ok(true);
        }
        if route_config.backends.is_empty() && route_config.unresolved.is_some() {
            // Gateway API: a rule whose backends are all invalid answers 500.
            ctx.answered_by = Some(snapshot.routes[route].metrics.clone());
            ctx.rejected = Some("backend_unresolved");
            self.answer_error(session, ctx, 500, None, false).await?;
            return Ok(true);
        }
        let runtime_route = &snapshot.routes[route];
        if let Some(concurrency) = &runtime_route.concurrency {
            match concurrency.acquire(ctx.client_ip) {
                Ok(slot) => ctx.concurrency_slot = slot,
                Err(_at_limit) => {
                    ctx.rejected = Some("concurrency_limited");
                    // nginx's limit_conn answers 503, as ingress-nginx configures it.
                    self.answer_error(session, ctx, 503, None, false).await?;
                    return Ok(true);
                }
            }
        }
        let facts = RequestFacts {
            header: Some(session.req_header()),
            client_ip: ctx.client_ip,
            scheme: self.scheme,
        };
        if let Some(limiter) = &runtime_route.limiter {
            if let Err(wait) = limiter.admit(&facts) {
                METRICS
                    .rate_limited
                    .with_label_values(&[&runtime_route.name])
                    .inc();
                ctx.rejected = Some("rate_limited");
                self.answer_rate_limited(session, ctx, wait).await?;
                return Ok(true);
            }
        }
        if let Some(limiter) = &runtime_route.global_limiter {
            let verdict = limiter.admit(&facts).await;
            let (result, answer) = verdict.answer();
            METRICS
                .global_rate_limit
                .with_label_values(&[&runtime_route.name, result])
                .inc();
            match answer {
                Answer::Proceed => {}
                Answer::Limited(wait) => {
                    ctx.rejected = Some("global_rate_limited");
                    self.answer_rate_limited(session, ctx, wait).await?;
                    return Ok(true);
                }
                Answer::Refuse(status) => {
                    ctx.rejected = Some("rate_limit_unavailable");
                    self.answer_error(session, ctx, status, None, false).await?;
                    return Ok(true);
                }
            }
        }
        if runtime_route.auth.is_some() {
            let from = traffic::origin(self.scheme, &inspected, session.req_header());
            let outcome = auth::authenticate(
                runtime_route,
                route_config,
                &snapshot,
                session.req_header(),
                &from,
                ctx.client_ip,
            )
            .await;
            match outcome {
                auth::Outcome::Proceed { remove, set } => {
                    let request = session.req_header_mut();
                    for name in &remove {
                        request.remove_header(name);
                    }
                    for (name, value) in set {
                        request.append_header(name, value)?;
                    }
                }
                auth::Outcome::Refuse {
                    status,
                    reason,
                    header,
                } => {
                    ctx.answered_by = Some(runtime_route.metrics.clone());
                    ctx.rejected = Some(reason);
                    self.answer_error(session, ctx, status, header, false)
                        .await?;
                    return Ok(true);
                }
                auth::Outcome::SignIn(location) => {
                    ctx.answered_by = Some(runtime_route.metrics.clone());
                    self.answer_redirect(session, ctx, 302, &location).await?;
                    return Ok(true);
                }
            }
        }
        ctx.websocket = headers::is_websocket_upgrade(session.req_header());
        if let Err(rejection) = self.receive_body(session, ctx, &runtime_route.body).await? {
            self.reject(session, ctx, rejection).await?;
            return Ok(true);
        }
        let Some(chosen) =
            traffic::choose_backend(runtime_route, route_config, &snapshot, session.req_header())
        else {
            if route_config.unresolved.is_some() {
                // Gateway API: the share of an invalid backend is answered 500.
                ctx.answered_by = Some(runtime_route.metrics.clone());
                ctx.rejected = Some("backend_unresolved");
                self.answer_error(session, ctx, 500, None, false).await?;
                return Ok(true);
            }
            ctx.rejected = Some("no_backend");
            self.answer_error(session, ctx, 503, None, false).await?;
            return Ok(true);
        };
        let backend = chosen.backend;
        let upstream = &snapshot.upstreams[backend.upstream];
        let active = upstream.retry_budget.start_request();
        let route_deadline = backend.timeouts.total.map(|t| ctx.started + t);
        let grpc_deadline = ctx
            .grpc
            .then(|| grpc::timeout(session.req_header()))
            .flatten()
            .map(|t| ctx.started + t);
        let deadline = match (route_deadline, grpc_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if ctx.websocket {
            // An idle WebSocket is normal: only `timeouts.idle` ends it.
            session
                .as_downstream_mut()
                .set_read_timeout(Some(backend.timeouts.idle));
        }
        // The registry exists only for the access-log line of a request the grace period cuts.
        if access_log::is_enabled() {
            ctx.open_request = Some(ctx.open.describe(report::open_request(
                session.req_header(),
                &self.listener,
                &ctx.request_id,
                ctx.client_ip,
                &runtime_route.name,
                upstream.name(),
                ctx.started,
            )));
        }
        ctx.routed = Some(Routed {
            snapshot: snapshot.clone(),
            route,
            backend,
            fallback: chosen.fallback,
            left_canary: None,
            prefix_len: found.prefix_len,
            _active: active,
            deadline,
        });
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let BodyMode::Stream { max } = ctx.body_mode else {
            return Ok(());
        };
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let refused = if max.is_some_and(|max| ctx.body_bytes > max) {
            Some((413, "request body larger than max_body_size"))
        } else if ctx.body_deadline.is_some_and(|d| Instant::now() > d) {
            Some((408, "request body not complete within body_timeout"))
        } else {
            None
        };
        match refused {
            Some((status, why)) => {
                ctx.rejected = Some(if status == 413 {
                    "body_too_large"
                } else {
                    "body_timeout"
                });
                let mut e = Error::explain(ErrorType::HTTPStatus(status), why);
                e.as_down();
                Err(e)
            }
            None => Ok(()),
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let attempts_made = ctx.attempts.len();
        let retry_stays = ctx.retry_stays;
        let routed = ctx
            .routed
            .as_mut()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not routed"))?;
        if attempts_made > 0 && !retry_stays {
            // A retry of a canary with `fallback` goes to the backends, unless the canary
            // never saw the request.
            routed.leave_canary(attempts_made);
            if let Some(backoff) = routed.backend.retry.backoff {
                let left = routed
                    .deadline
                    .map_or(backoff, |d| d.saturating_duration_since(Instant::now()));
                tokio::time::sleep(backoff.min(left)).await;
            }
        }
        let routed = &*routed;
        let upstream = routed.upstream();
        let mut timeouts = routed.backend.timeouts;
        if ctx.websocket {
            // Pingora keeps the upstream read timeout of the connect after the 101, so the
            // handshake is bounded by `idle` too.
            timeouts.read = timeouts.idle;
            timeouts.write = timeouts.idle;
        }
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
            header: Some(session.req_header()),
            client_ip: ctx.client_ip,
            scheme: self.scheme,
        };
        let attempts = routed.own_attempts(&ctx.attempts);
        let tried = |i: usize| attempts.iter().any(|a| a.endpoint == i);
        let route = &routed.snapshot.routes[routed.route];
        let picked = match (&routed.config().affinity, &route.affinity_attributes) {
            (Some(affinity), Some(attributes)) => {
                let cookie = conditions::cookie_value(session.req_header(), &affinity.name);
                upstream.pick_affine(cookie, &facts, &tried).map(|pick| {
                    ctx.affinity_cookie = pick.renew.then(|| {
                        let address = upstream.endpoints[pick.endpoint].address;
                        traffic::affinity_cookie(&affinity.name, attributes, address)
                    });
                    pick.endpoint
                })
            }
            _ => upstream.pick(&facts, &tried),
        };
        let endpoint = picked.ok_or_else(|| {
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
        let mut attempt = Attempt::start(endpoint, chosen.address);
        if ctx.trace.is_some() {
            attempt.span_id = Some(SpanId::random());
        }
        ctx.attempts.push(attempt);
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
        record_outcome(ctx, true);
        let retry = self.retry_allowed(session, ctx, Failure::Connect);
        e.set_retry(retry);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let (Some(routed), Some(attempt)) = (ctx.routed.as_ref(), ctx.attempts.last_mut()) else {
            return Ok(());
        };
        let upstream = routed.upstream();
        upstream.metrics.count_connection(upstream.name(), reused);
        attempt.reused = reused;
        attempt.connect_time = Some(attempt.started.elapsed());
        if !upstream.one_request_per_connection() {
            return Ok(());
        }
        let uses = self
            .state
            .connections
            .start_use(fd, attempt.address, reused, || peer.reuse_hash());
        ctx.close_upstream_connection = upstream.must_close_connection(uses);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        headers::add_forwarding(upstream_request, ctx.peer_ip, self.scheme)?;
        if let Some(routed) = &ctx.routed {
            let route_filters = &routed.config().filters;
            if route_filters.edits_request() {
                filters::apply_request(route_filters, upstream_request, routed.prefix_len)?;
            }
            if let Some(backend) = routed.backend.edits {
                let edits = &routed.config().backends[backend].request_headers;
                filters::edit_request_headers(edits, upstream_request)?;
            }
            let route = &routed.snapshot.routes[routed.route];
            // Once per request, whichever try gets this far; never an upgrade, whose copy
            // would hold a tunnel to the mirror.
            if !route.mirrors.is_empty() && !ctx.mirrored && !ctx.websocket {
                ctx.mirrored = true;
                let (body, complete) = match ctx.body_mode {
                    BodyMode::Empty => (None, true),
                    BodyMode::Buffer { .. } => (session.as_downstream().get_retry_buffer(), true),
                    BodyMode::Stream { .. } => (None, false),
                };
                let request = session.req_header();
                let facts = RequestFacts {
                    header: Some(request),
                    client_ip: ctx.client_ip,
                    scheme: self.scheme,
                };
                let prepare = |copy: &mut RequestHeader| {
                    headers::add_forwarding(copy, ctx.peer_ip, self.scheme)?;
                    filters::apply_request(route_filters, copy, routed.prefix_len)
                };
                traffic::mirror(
                    route,
                    &routed.snapshot,
                    request,
                    prepare,
                    body,
                    complete,
                    &facts,
                );
            }
        }
        upstream_request.insert_header(headers::ATTEMPT, ctx.attempts.len().to_string())?;
        let attempt_span = ctx.attempts.last().and_then(|a| a.span_id);
        if let (Some(trace), Some(span)) = (&ctx.trace, attempt_span) {
            upstream_request.insert_header("traceparent", trace.traceparent(span))?;
        }
        if ctx.close_upstream_connection {
            upstream_request.insert_header("connection", "close")?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // A stop or upgrade may have begun since request_filter.
        self.set_keepalive(session, ctx);
        if let Some(open) = &ctx.open_request {
            open.status
                .store(upstream_response.status.as_u16(), Ordering::Relaxed);
        }
        let status = upstream_response.status.as_u16();
        let http1_upstream = ctx
            .routed
            .as_ref()
            .is_some_and(|r| r.upstream().config.protocol == UpstreamProtocol::Http1);
        let replaceable = status >= 400
            && !ctx.grpc
            && session.req_header().method != http::Method::HEAD
            && error_pages::body_follows(upstream_response, http1_upstream);
        if let (true, Some(pages)) = (replaceable, &ctx.error_pages) {
            if let Some(page) = pages
                .page(status, session.req_header(), &ctx.request_id)
                .await
            {
                error_pages::replace_head(upstream_response, &page)?;
                ctx.page_body = Some(page.body);
            }
        }
        if let Some(routed) = &ctx.routed {
            let edits = &routed.config().filters.response_headers;
            if !edits.is_empty() {
                filters::apply_response(edits, upstream_response)?;
            }
        }
        if let (Some(origin), Some(routed)) = (&ctx.cors_origin, &ctx.routed) {
            if let Some(cors) = &routed.config().cors {
                cors::add_response_headers(cors, origin, upstream_response)?;
            }
        }
        if let Some(cookie) = &ctx.affinity_cookie {
            upstream_response.append_header(http::header::SET_COOKIE, cookie.as_str())?;
        }
        if session.req_header().version < http::Version::HTTP_2 {
            // Pingora writes no trailers to HTTP/1 clients: announcing them would promise
            // fields that never come.
            upstream_response.remove_header(&http::header::TRAILER);
        }
        if session.req_header().version == http::Version::HTTP_10 {
            // An HTTP/1.0 client cannot read chunks: a body without length is delimited by
            // closing the connection, as nginx does (Pingora patch 0009 keeps HTTP/2
            // upstreams' answers unchunked for it).
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            if upstream_response
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_none()
            {
                session.set_keepalive(None);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        // An error page replaces the upstream's body, whose chunks are dropped.
        if ctx.page_body.is_some() {
            *body = if end_of_stream {
                ctx.page_body.take()
            } else {
                None
            };
        }
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.response_started = true;
        let status = upstream_response.status.as_u16();
        if status == 101 {
            if let Some(routed) = &ctx.routed {
                ctx.tunnel = Some(Tunnel::open(&routed.snapshot.routes[routed.route].name));
            }
        }
        if let Some(attempt) = ctx.current_attempt() {
            attempt.status = Some(status);
            attempt.first_byte = Some(attempt.started.elapsed());
        }
        let counts_as_failure = status >= 500
            && ctx.routed.as_ref().is_some_and(|r| {
                let passive = &r.upstream().config.health.passive;
                passive.as_ref().is_some_and(|p| p.on_5xx)
            });
        record_outcome(ctx, counts_as_failure);
        let retried = ctx
            .routed
            .as_ref()
            .is_some_and(|r| r.backend.retry.on_status.contains(status));
        if retried && !ctx.websocket && self.retry_allowed(session, ctx, Failure::Status(status)) {
            // Nothing of the response has reached the client: Pingora's retry loop drops this
            // connection and asks `upstream_peer` again.
            ctx.retried_status = true;
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                format!("upstream answered {status}, a status the retry policy retries"),
            );
            e.as_up();
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        connection_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retried_status) {
            // upstream_response_filter decided this retry (and took its budget).
            ctx.end_attempt(AttemptResult::RetriedStatus);
            return e;
        }
        let unsent = connection_reused && errors::is_request_head_unsent(&e);
        let mut e = e.more_context(format!("peer: {peer}"));
        let (failure, result) = if unsent {
            // The upstream closed this pooled connection; the others it had idle in the
            // pool are likely closed too, so the retry gets a fresh one.
            self.state.connections.evict_idle(peer.reuse_hash());
            (Failure::RequestUnsent, AttemptResult::Unsent)
        } else if e.esource() == &ErrorSource::Downstream {
            (Failure::Downstream, AttemptResult::ClientError)
        } else if ctx.response_started {
            (Failure::AfterResponseStarted, AttemptResult::Error)
        } else if errors::is_timeout(&e) {
            (Failure::Timeout, AttemptResult::Timeout)
        } else {
            (Failure::BeforeResponse, AttemptResult::Reset)
        };
        ctx.end_attempt(result);
        if !matches!(failure, Failure::Downstream | Failure::RequestUnsent) {
            record_outcome(ctx, true);
        }
        let retry = self.retry_allowed(session, ctx, failure);
        e.set_retry(retry);
        e
    }

    /// Pingora's own line per failed request is replaced by the access log (every failure,
    /// with its tries) and a rate-limited operator event per upstream (bounded, one line).
    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        // A backend ending a WebSocket by a reset is the backend's choice, not news.
        if e.esource() != &ErrorSource::Upstream || ctx.tunnel.is_some() {
            return true;
        }
        if let Some(routed) = &ctx.routed {
            let upstream = routed.upstream().name();
            events::warn("upstream_failure", upstream, || {
                let endpoint = ctx
                    .attempts
                    .last()
                    .map_or_else(|| "-".to_string(), |a| a.address.to_string());
                format!(
                    "upstream {upstream}: request {} failed after {} tries, last on {endpoint}: {}",
                    ctx.request_id,
                    ctx.attempts.len(),
                    errors::summary(e)
                )
            });
        }
        true
    }

    /// Retried failures are in the access log's `attempts`.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Self::CTX,
        _e: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        true
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let status = errors::status_for(e);
        if status != errors::CLIENT_CLOSED && session.response_written().is_none() {
            // Closes the client connection after the answer, as Pingora does on errors.
            if let Err(e) = self.answer_error(session, ctx, status, None, true).await {
                log::debug!("cannot send error response to the client: {e}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn invalid_request(&self, session: &mut HttpSession, status: u16, e: &Error) {
        let mut ctx = self.new_ctx();
        ctx.request_id = headers::new_request_id();
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx.peer_ip;
        ctx.rejected = Some(errors::head_rejection_reason(status));
        log::debug!(
            "request head from {:?} refused with {status}: {e}",
            ctx.client_ip
        );
        let body = Bytes::from(errors::json_body(status, &ctx.request_id));
        let written = match json_header(status, body.len()) {
            Ok(header) => session.write_error_response(*header, body).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            log::debug!("cannot answer a refused request head: {e}");
        }
        let exchange = Exchange {
            listener: &self.listener,
            request: None,
            status,
            bytes_in: 0,
            bytes_out: 0,
            ended: None,
            scheme: self.scheme,
        };
        report::report(&ctx, &exchange);
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if e.is_none() {
            ctx.end_attempt(AttemptResult::Ok);
        }
        if let Some(attempt) = ctx.attempts.last() {
            // Pingora has returned the last try's connection to the pool by now.
            self.state.connections.request_ended(attempt.address);
        }
        let exchange = Exchange {
            listener: &self.listener,
            request: Some(session.req_header()),
            status: match session.response_written() {
                Some(response) => response.status.as_u16(),
                None => e.map_or(0, errors::status_for),
            },
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            ended: ctx.tunnel.is_some().then(|| match e {
                None => "closed",
                Some(e) if errors::is_timeout(e) => "idle_timeout",
                Some(_) => "error",
            }),
            scheme: self.scheme,
        };
        report::report(ctx, &exchange);
    }
}

impl HttpProxy {
    /// Answers with an error of sluice's own: a trailers-only `grpc-status` to gRPC calls, a
    /// small JSON body to everything else. `close` ends an HTTP/1 client connection after it.
    /// 429 with `Retry-After` for a client over a rate limit.
    async fn answer_rate_limited(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        wait: std::time::Duration,
    ) -> Result<()> {
        let retry_after = rate_limit::retry_after_seconds(wait);
        let retry_after = (http::header::RETRY_AFTER, retry_after.into());
        self.answer_error(session, ctx, 429, Some(retry_after), false)
            .await
    }

    async fn answer_error(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        status: u16,
        extra: Option<(http::HeaderName, http::HeaderValue)>,
        close: bool,
    ) -> Result<()> {
        if ctx.grpc {
            let mut header = grpc::error_response(status, errors::reason(status))?;
            if let Some((name, value)) = extra {
                header.insert_header(name, value)?;
            }
            // Trailers-only: one HEADERS frame with END_STREAM. Pingora's proxy session
            // drops `end_of_stream` on headers, so HTTP/2 is written through directly.
            return match session.as_downstream_mut() {
                HttpSession::H2(h2) => h2.write_response_header(header, true),
                _ => {
                    session.write_response_header(header, false).await?;
                    session.write_response_body(None, true).await
                }
            };
        }
        let page = match &ctx.error_pages {
            Some(pages) => {
                pages
                    .page(status, session.req_header(), &ctx.request_id)
                    .await
            }
            None => None,
        };
        let (body, mut header) = match page {
            Some(page) => {
                let mut header = ResponseHeader::build(status, Some(3))?;
                error_pages::replace_head(&mut header, &page)?;
                (page.body, Box::new(header))
            }
            None => {
                let body = Bytes::from(errors::json_body(status, &ctx.request_id));
                let header = json_header(status, body.len())?;
                (body, header)
            }
        };
        if let Some((name, value)) = extra {
            header.insert_header(name, value)?;
        }
        if close {
            session
                .as_downstream_mut()
                .write_error_response(*header, body)
                .await
        } else {
            session.write_response_header(header, false).await?;
            session.write_response_body(Some(body), true).await
        }
    }

    /// Refuses a client an access list keeps out: 403, as nginx's `deny`, and the connection
    /// is closed after it (the body, if any, is not read).
    async fn deny(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<()> {
        log::debug!(
            "request {} from {:?} refused by an access list",
            ctx.request_id,
            ctx.client_ip
        );
        ctx.rejected = Some("access_denied");
        self.answer_error(session, ctx, 403, None, true).await
    }

    /// Answers with a redirect to `location`. The request body (if any) is not read, so an
    /// HTTP/1 connection with one is closed after the answer.
    async fn answer_redirect(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        status: u16,
        location: &str,
    ) -> Result<()> {
        ctx.rejected = Some("redirect");
        let mut header = ResponseHeader::build(status, Some(3))?;
        header.insert_header(http::header::LOCATION, location)?;
        header.insert_header(http::header::CONTENT_LENGTH, "0")?;
        if !session.as_downstream_mut().is_body_empty() {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(header), true).await
    }

    /// Applies the route's body policy: refuses a declared length over the limit, sets the
    /// body deadlines, and reads a buffered body whole. The outer error is the client's
    /// failure; the inner one a refusal to answer.
    async fn receive_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        policy: &crate::model::BodyPolicy,
    ) -> Result<Result<(), Rejection>> {
        let has_body = !session.as_downstream_mut().is_body_empty();
        ctx.body_mode = request_body::mode(policy, has_body, ctx.grpc, ctx.websocket);
        if ctx.body_mode == BodyMode::Empty || ctx.grpc || ctx.websocket {
            // gRPC streams and tunnels carry no size or time limit of their own.
            return Ok(Ok(()));
        }
        if request_body::declared_too_large(session.req_header(), policy.max_size) {
            return Ok(Err(Rejection {
                status: 413,
                reason: "body_too_large",
            }));
        }
        ctx.body_deadline = self.requests.body_timeout.map(|t| Instant::now() + t);
        session
            .as_downstream_mut()
            .set_read_timeout(Some(self.requests.body_read_timeout));
        let BodyMode::Buffer { max } = ctx.body_mode else {
            return Ok(Ok(()));
        };
        let capacity = usize::try_from(max).unwrap_or(usize::MAX);
        let downstream = session.as_downstream_mut();
        downstream.enable_retry_buffering_with_capacity(capacity);
        if request_body::take_expect_continue(session.req_header_mut()) {
            session
                .as_downstream_mut()
                .write_continue_response()
                .await?;
        }
        let deadline = ctx.body_deadline;
        let read_all = async {
            let mut length = 0usize;
            while let Some(chunk) = session.read_request_body().await? {
                length += chunk.len();
                if length > capacity {
                    return Ok(Err(Rejection {
                        status: 413,
                        reason: "body_too_large",
                    }));
                }
            }
            Ok(Ok(length))
        };
        let read: Result<Result<usize, Rejection>> = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), read_all).await {
                Ok(read) => read,
                Err(_) => Ok(Err(Rejection {
                    status: 408,
                    reason: "body_timeout",
                })),
            },
            None => read_all.await,
        };
        let length = match read {
            Ok(Ok(length)) => length,
            Ok(Err(rejection)) => return Ok(Err(rejection)),
            Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                return Ok(Err(Rejection {
                    status: 408,
                    reason: "body_timeout",
                }))
            }
            Err(e) => return Err(e),
        };
        ctx.body_bytes = length as u64;
        request_body::set_buffered_length(session.req_header_mut(), length)?;
        Ok(Ok(()))
    }

    /// Refuses a request sluice will not route or forward, and closes the connection after
    /// the answer: its body (if any) was not read.
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        rejection: Rejection,
    ) -> Result<()> {
        log::debug!(
            "request {} refused with {}: {}",
            ctx.request_id,
            rejection.status,
            rejection.reason
        );
        ctx.rejected = Some(rejection.reason);
        self.answer_error(session, ctx, rejection.status, None, true)
            .await
    }

    /// `OPTIONS *` asks about the server: sluice answers what methods it forwards.
    async fn answer_asterisk(&self, session: &mut Session) -> Result<()> {
        let mut header = ResponseHeader::build(200, Some(2))?;
        header.insert_header("allow", "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")?;
        header.insert_header("content-length", "0")?;
        session.write_response_header(Box::new(header), true).await
    }

    /// Keepalive for the client connection: none when the request ruled it out, and none once a
    /// stop or upgrade has begun, so clients reconnect (to the successor) after this
    /// response.
    fn set_keepalive(&self, session: &mut Session, ctx: &RequestContext) {
        if !ctx.client_keepalive || self.state.lifecycle.is_draining() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(self.keepalive_seconds);
        }
    }

    /// Whether the failed try may be retried; takes a retry-budget slot when it may.
    /// Whether `host` belongs to another Gateway listener of this TLS listener than the
    /// connection's server name (see `routing::misdirected`).
    fn is_misdirected(&self, session: &Session, snapshot: &Snapshot, host: &str) -> bool {
        if self.scheme != "https" {
            return false;
        }
        let scopes = snapshot
            .config
            .tls
            .iter()
            .find(|t| t.listener == self.listener)
            .map(|t| t.server_name_scopes.as_slice())
            .unwrap_or_default();
        if scopes.is_empty() {
            return false;
        }
        let server_name = handshake(session).and_then(|h| h.server_name.as_deref());
        misdirected::misdirected(scopes, server_name, host)
    }

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
        let policy = &routed.backend.retry;
        if !retry::allows_retry(policy, failure, facts) {
            return false;
        }
        ctx.retry_stays = failure == Failure::RequestUnsent;
        if failure == Failure::RequestUnsent {
            // The upstream never saw the request: a retry adds no load to it.
            return true;
        }
        match upstream.retry_budget.try_retry(policy.budget_percent) {
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

/// What the connection's TLS handshake recorded (none on plain listeners).
fn handshake(session: &Session) -> Option<&Handshake> {
    session.digest()?.ssl_digest.as_ref()?.extension.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_timeouts_round_up_to_seconds_and_zero_is_off() {
        assert_eq!(keepalive_seconds(Duration::ZERO), None);
        assert_eq!(keepalive_seconds(Duration::from_millis(500)), Some(1));
        assert_eq!(keepalive_seconds(Duration::from_secs(75)), Some(75));
        assert_eq!(keepalive_seconds(Duration::from_millis(1500)), Some(2));
    }
}
