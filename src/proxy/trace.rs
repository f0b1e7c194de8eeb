//! A request's trace: the context it continues (the caller's `traceparent`) or starts,
//! the server span sluice makes for it and the client span of each try, written as OTLP
//! spans once the request is reported.
//!
//! Span ids are chosen when the spans start (a try's id is the parent the upstream sees in
//! its `traceparent`); the spans themselves are built only at the end, from what the
//! request recorded, and only for a sampled trace.

use super::context::Attempt;
use crate::observe::spans::{attribute, Value};
use crate::observe::trace_context::{self, Sampler, SpanId, TraceId};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use pingora::http::RequestHeader;
use std::time::{Duration, Instant, SystemTime};

/// The trace of one request.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The server span: sluice's handling of the request.
    pub span_id: SpanId,
    /// The caller's span, if the request carried a valid `traceparent`.
    pub parent: Option<SpanId>,
    pub sampled: bool,
    /// The caller's `tracestate`, kept on the server span (the header itself passes on
    /// untouched).
    trace_state: String,
    /// When the request started, on the wall clock spans are stamped with.
    started_at: SystemTime,
    started: Instant,
}

/// What the server span says about the finished exchange.
pub struct Finished<'a> {
    pub request: Option<&'a RequestHeader>,
    pub status: u16,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub client: Option<std::net::IpAddr>,
    pub request_id: &'a str,
    pub scheme: &'a str,
}

impl RequestTrace {
    /// The trace of `request`, which started at `started`, as `sampler` decides it.
    pub fn start(request: &RequestHeader, sampler: &Sampler, started: Instant) -> Self {
        let parent = request
            .headers
            .get("traceparent")
            .and_then(|value| trace_context::parse_traceparent(value.as_bytes()));
        let trace_id = parent.map_or_else(TraceId::random, |p| p.trace_id);
        let trace_state = match (&parent, request.headers.get("tracestate")) {
            (Some(_), Some(state)) => String::from_utf8_lossy(state.as_bytes()).into_owned(),
            _ => String::new(),
        };
        let elapsed = started.elapsed();
        Self {
            trace_id,
            span_id: SpanId::random(),
            parent: parent.map(|p| p.span_id),
            sampled: sampler.samples(trace_id, parent.as_ref()),
            trace_state,
            started_at: SystemTime::now() - elapsed,
            started,
        }
    }

    /// The `traceparent` an upstream gets for the try whose span is `attempt`.
    pub fn traceparent(&self, attempt: SpanId) -> String {
        trace_context::traceparent(self.trace_id, attempt, self.sampled)
    }

    /// The wall-clock time of `at`, in nanoseconds since the epoch.
    fn nanos(&self, at: Instant) -> u64 {
        let time = self.started_at + at.saturating_duration_since(self.started);
        time.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The server span and one client span per try in `attempts`, ended `now`.
    pub fn spans(&self, finished: &Finished, attempts: &[Attempt], now: Instant) -> Vec<Span> {
        let mut spans = Vec::with_capacity(1 + attempts.len());
        spans.push(self.server_span(finished, now));
        let method = finished.request.map_or("-", |r| r.method.as_str());
        for (i, attempt) in attempts.iter().enumerate() {
            let Some(span_id) = attempt.span_id else {
                continue;
            };
            let retry_of = i.checked_sub(1).and_then(|j| attempts.get(j));
            spans.push(self.attempt_span(span_id, attempt, i, retry_of, method, now));
        }
        spans
    }

    fn server_span(&self, finished: &Finished, now: Instant) -> Span {
        let method = finished.request.map_or("-", |r| r.method.as_str());
        let mut attributes = vec![
            attribute("http.request.method", Value::Text(method)),
            attribute("url.scheme", Value::Text(finished.scheme)),
            attribute("http.response.status_code", status_value(finished.status)),
            attribute("sluice.listener", Value::Text(finished.listener)),
            attribute("sluice.request_id", Value::Text(finished.request_id)),
        ];
        if let Some(request) = finished.request {
            let path = std::str::from_utf8(request.uri.path().as_bytes()).unwrap_or("-");
            attributes.push(attribute("url.path", Value::Text(path)));
            let host = crate::routing::request_host(request);
            if !host.is_empty() {
                attributes.push(attribute("server.address", Value::Text(host)));
            }
            let version = super::report::version_label(request.version);
            attributes.push(attribute("network.protocol.version", Value::Text(version)));
        }
        if let Some(client) = finished.client {
            let client = client.to_string();
            attributes.push(attribute("client.address", Value::Text(&client)));
        }
        if let Some(route) = finished.route {
            attributes.push(attribute("sluice.route", Value::Text(route)));
        }
        if let Some(upstream) = finished.upstream {
            attributes.push(attribute("sluice.upstream", Value::Text(upstream)));
        }
        // A server span is in error for a 5xx only: a 4xx is the client's.
        let status = (finished.status >= 500).then(|| Status {
            code: StatusCode::Error as i32,
            message: format!("answered {}", finished.status),
        });
        Span {
            trace_id: self.trace_id.0.to_vec(),
            span_id: self.span_id.0.to_vec(),
            trace_state: self.trace_state.clone(),
            parent_span_id: self.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
            flags: 0x100 | u32::from(self.sampled) | if self.parent.is_some() { 0x200 } else { 0 },
            name: match finished.route {
                Some(route) => format!("{method} {route}"),
                None => method.to_string(),
            },
            kind: SpanKind::Server as i32,
            start_time_unix_nano: self.nanos(self.started),
            end_time_unix_nano: self.nanos(now),
            attributes,
            status,
            ..Span::default()
        }
    }

    fn attempt_span(
        &self,
        span_id: SpanId,
        attempt: &Attempt,
        index: usize,
        retry_of: Option<&Attempt>,
        method: &str,
        now: Instant,
    ) -> Span {
        let address = attempt.address.ip().to_string();
        let result = attempt.result.as_str();
        let mut attributes = vec![
            attribute("server.address", Value::Text(&address)),
            attribute("server.port", Value::Int(attempt.address.port().into())),
            attribute("sluice.attempt.result", Value::Text(result)),
            attribute("sluice.connection.reused", Value::Bool(attempt.reused)),
        ];
        if let Some(status) = attempt.status {
            attributes.push(attribute("http.response.status_code", status_value(status)));
        }
        if let Some(connect) = attempt.connect_time {
            attributes.push(attribute("sluice.connect.duration_ms", millis(connect)));
        }
        if let Some(first_byte) = attempt.first_byte {
            attributes.push(attribute(
                "sluice.response.first_byte_ms",
                millis(first_byte),
            ));
        }
        if index > 0 {
            let resends = i64::try_from(index).unwrap_or(i64::MAX);
            attributes.push(attribute("http.request.resend_count", Value::Int(resends)));
        }
        if let Some(previous) = retry_of {
            let reason = previous.result.as_str();
            attributes.push(attribute("sluice.retry.reason", Value::Text(reason)));
        }
        let failed = attempt.result.as_str() != "ok" || attempt.status.is_some_and(|s| s >= 500);
        let status = failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: match attempt.status {
                Some(status) => format!("{result}: answered {status}"),
                None => result.to_string(),
            },
        });
        Span {
            trace_id: self.trace_id.0.to_vec(),
            span_id: span_id.0.to_vec(),
            parent_span_id: self.span_id.0.to_vec(),
            flags: 0x100 | u32::from(self.sampled),
            name: method.to_string(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: self.nanos(attempt.started),
            end_time_unix_nano: self.nanos(attempt.ended.unwrap_or(now)),
            attributes,
            status,
            ..Span::default()
        }
    }
}

fn status_value(status: u16) -> Value<'static> {
    Value::Int(status.into())
}

fn millis(duration: Duration) -> Value<'static> {
    Value::Float(duration.as_secs_f64() * 1000.0)
}
