//! What a finished request tells operators: its metrics and its access-log line.

use super::context::{Attempt, AttemptResult, RequestContext};
use super::trace::Finished;
use crate::lifecycle::OpenRequest;
use crate::observe::access_log::{self, AttemptRecord, Record};
use crate::observe::metrics::{status_label, METRICS};
use crate::observe::metrics::{AttemptTimes, Measured};
use crate::observe::spans;
use crate::upstream::Upstream;
use pingora::http::{RequestHeader, Version};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::AtomicU16;
use std::time::{Duration, Instant, SystemTime};

/// Facts about the finished exchange that the context does not hold.
pub struct Exchange<'a> {
    pub listener: &'a str,
    /// `None` when the request head could not be read.
    pub request: Option<&'a RequestHeader>,
    /// Status sent to the client; 499 if the client left before a response head, 0 if
    /// neither.
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// How an upgraded (WebSocket) connection ended; `None` for plain requests.
    pub ended: Option<&'static str>,
    /// `http` or `https`.
    pub scheme: &'a str,
}

/// Records the metrics and the access-log line of a finished request.
pub fn report(ctx: &RequestContext, exchange: &Exchange) {
    let route = ctx
        .routed
        .as_ref()
        .map(|r| r.snapshot.routes[r.route].name.as_str())
        .or_else(|| ctx.answered_by.as_ref().map(|m| m.route()));
    let upstream = ctx.routed.as_ref().map(|r| r.upstream().name());
    let duration = ctx.started.elapsed();
    let measured = Measured {
        status: exchange.status,
        seconds: duration.as_secs_f64(),
        reason: ctx.rejected.unwrap_or_default(),
        bytes_in: exchange.bytes_in,
        bytes_out: exchange.bytes_out,
    };
    match &ctx.routed {
        Some(routed) => {
            let route = &routed.snapshot.routes[routed.route];
            route.metrics.record_request(&measured);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Some((canary, count)) = routed.left_canary {
                let canary = &routed.snapshot.upstreams[canary];
                for attempt in ctx.attempts.iter().take(count) {
                    record_attempt(canary, attempt, now);
                }
            }
            let upstream = routed.upstream();
            for attempt in routed.own_attempts(&ctx.attempts) {
                record_attempt(upstream, attempt, now);
            }
        }
        None if ctx.answered_by.is_some() => {
            if let Some(metrics) = &ctx.answered_by {
                metrics.record_request(&measured);
            }
        }
        None => {
            METRICS
                .http_requests
                .with_label_values(&[
                    "none",
                    status_label(exchange.status),
                    ctx.rejected.unwrap_or_default(),
                ])
                .inc();
            METRICS
                .http_request_duration
                .with_label_values(&["none"])
                .observe(duration.as_secs_f64());
        }
    }
    if let Some(trace) = ctx.trace.as_deref().filter(|t| t.sampled) {
        if spans::is_enabled() {
            let finished = Finished {
                request: exchange.request,
                status: exchange.status,
                listener: exchange.listener,
                route,
                upstream,
                client: ctx.client_ip,
                request_id: &ctx.request_id,
                scheme: exchange.scheme,
            };
            spans::submit(trace.spans(&finished, &ctx.attempts, Instant::now()));
        }
    }
    if !access_log::is_enabled() {
        return;
    }

    let attempts = attempt_records(&ctx.attempts);
    let request = exchange.request;
    let user_agent = request.and_then(|r| header_text(r, "user-agent"));
    let referer = request.and_then(|r| header_text(r, "referer"));
    let forwarded_for = request.and_then(|r| header_text(r, "x-forwarded-for"));
    access_log::write(&Record {
        ts: access_log::Timestamp(SystemTime::now()),
        request_id: &ctx.request_id,
        trace_id: ctx.trace.as_ref().map(|t| t.trace_id),
        listener: exchange.listener,
        route,
        client: ctx.client_ip,
        method: request.map_or("-", |r| r.method.as_str()),
        host: request.map_or("", crate::routing::request_host),
        uri: request.map_or("-", |r| {
            std::str::from_utf8(r.raw_path()).unwrap_or("<non-utf8>")
        }),
        proto: request.map_or("-", |r| version_label(r.version)),
        status: exchange.status,
        bytes_in: exchange.bytes_in,
        bytes_out: exchange.bytes_out,
        duration_ms: millis(duration),
        upstream,
        attempts,
        ended: exchange.ended,
        user_agent: user_agent.as_deref(),
        referer: referer.as_deref(),
        x_forwarded_for: forwarded_for.as_deref(),
    });
}

/// Counts and times a try of `upstream`.
/// `now`: seconds since the epoch, read once per request.
fn record_attempt(upstream: &Upstream, attempt: &Attempt, now: u64) {
    let metrics = &upstream.metrics;
    let result = attempt.result.as_str();
    metrics.count_attempt(upstream.name(), result);
    let ok = attempt.result == AttemptResult::Ok;
    let endpoint = upstream
        .endpoints
        .get(attempt.endpoint)
        .filter(|e| e.address == attempt.address);
    if let Some(endpoint) = endpoint {
        let failed = !ok || attempt.status.is_some_and(|s| s >= 500);
        endpoint.state.tries.count(now, failed);
    }
    let answered_2xx = endpoint.map(|e| &e.state.answered_2xx);
    let times = AttemptTimes {
        endpoint: attempt.address,
        answered_2xx,
        first_byte: attempt.first_byte,
        total: attempt
            .ended
            .filter(|_| ok)
            .map(|ended| ended.saturating_duration_since(attempt.started)),
        status: attempt.status,
        result,
    };
    metrics.observe_attempt(upstream.name(), &times);
}

/// The value of header `name` as text, the lines of a repeated header joined with `, `;
/// `None` when absent or not UTF-8.
fn header_text<'a>(request: &'a RequestHeader, name: &str) -> Option<Cow<'a, str>> {
    let mut values = request.headers.get_all(name).iter();
    let first = std::str::from_utf8(values.next()?.as_bytes()).ok()?;
    let mut joined = Cow::Borrowed(first);
    for value in values {
        let joined = joined.to_mut();
        joined.push_str(", ");
        joined.push_str(std::str::from_utf8(value.as_bytes()).ok()?);
    }
    Some(joined)
}

/// What the access log needs about a routed request should a stop's grace period cut it.
pub fn open_request(
    request: &RequestHeader,
    listener: &str,
    request_id: &str,
    client: Option<IpAddr>,
    route: &str,
    upstream: &str,
    started: Instant,
) -> OpenRequest {
    OpenRequest {
        request_id: request_id.to_string(),
        listener: listener.to_string(),
        route: route.to_string(),
        upstream: upstream.to_string(),
        client,
        method: request.method.as_str().to_string(),
        host: crate::routing::request_host(request).to_string(),
        uri: String::from_utf8_lossy(request.raw_path()).into_owned(),
        proto: version_label(request.version),
        started,
        status: AtomicU16::new(0),
    }
}

/// The access-log form of a request's or connection's tries.
pub fn attempt_records(attempts: &[Attempt]) -> Vec<AttemptRecord> {
    let now = Instant::now();
    attempts
        .iter()
        .map(|a| AttemptRecord {
            endpoint: a.address,
            result: a.result.as_str(),
            status: a.status,
            connect_ms: a.connect_time.map(millis),
            duration_ms: millis(a.ended.unwrap_or(now) - a.started),
            reused: a.reused,
        })
        .collect()
}

/// Milliseconds with microsecond precision.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub(super) fn version_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_units() {
        assert_eq!(status_label(404), "404");
        assert_eq!(status_label(0), "0");
        assert_eq!(status_label(999), "other");
        assert_eq!(millis(Duration::from_micros(1234)), 1.234);
        assert_eq!(version_label(Version::HTTP_11), "HTTP/1.1");
    }

    #[test]
    fn header_text_joins_repeated_lines() {
        let mut request = RequestHeader::build("GET", b"/", None).expect("request");
        request
            .append_header("x-forwarded-for", "1.1.1.1")
            .expect("header");
        request
            .append_header("x-forwarded-for", "2.2.2.2")
            .expect("header");
        request.append_header("user-agent", "curl").expect("header");
        assert_eq!(
            header_text(&request, "x-forwarded-for").as_deref(),
            Some("1.1.1.1, 2.2.2.2")
        );
        assert_eq!(header_text(&request, "user-agent").as_deref(), Some("curl"));
        assert_eq!(header_text(&request, "referer"), None);
    }
}
