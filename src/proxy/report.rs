//! What a finished request tells operators: its metrics and its access-log line.

use super::context::{Attempt, RequestContext};
use crate::observe::access_log::{self, AttemptRecord, Record};
use crate::observe::metrics::{status_label, METRICS};
use pingora::http::{RequestHeader, Version};
use std::time::{Duration, Instant, SystemTime};

/// Facts about the finished exchange that the context does not hold.
pub struct Exchange<'a> {
    pub listener: &'a str,
    /// `None` when the request head could not be read.
    pub request: Option<&'a RequestHeader>,
    /// Status sent to the client, 0 if none.
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// How an upgraded (WebSocket) connection ended; `None` for plain requests.
    pub ended: Option<&'static str>,
}

/// Records the metrics and the access-log line of a finished request.
pub fn report(ctx: &RequestContext, exchange: &Exchange) {
    let route = ctx
        .routed
        .as_ref()
        .map(|r| r.snapshot.routes[r.route].name.as_str());
    let upstream = ctx.routed.as_ref().map(|r| r.upstream().name());
    let duration = ctx.started.elapsed();
    match &ctx.routed {
        Some(routed) => {
            let route = &routed.snapshot.routes[routed.route];
            route.metrics.record_request(
                exchange.status,
                duration.as_secs_f64(),
                ctx.rejected.unwrap_or_default(),
            );
            let upstream = routed.upstream();
            for attempt in &ctx.attempts {
                upstream
                    .metrics
                    .count_attempt(upstream.name(), attempt.result.as_str());
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
    if !access_log::is_enabled() {
        return;
    }

    let attempts = attempt_records(&ctx.attempts);
    let request = exchange.request;
    access_log::write(&Record {
        ts: access_log::Timestamp(SystemTime::now()),
        request_id: &ctx.request_id,
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
    });
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

fn version_label(version: Version) -> &'static str {
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
}
