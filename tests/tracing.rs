//! OpenTelemetry traces (issue #20): W3C `traceparent` to upstreams, a server span per
//! request with a client span per try, exported to a collector over OTLP/HTTP protobuf,
//! head sampling, and a collector that is down costing no request anything.

mod support;

use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::time::Duration;
use support::otlp::{attribute, hex, Collector};
use support::*;

/// A caller's context, sampled.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(sampled: bool) -> String {
    format!(
        "00-{CALLER_TRACE}-{CALLER_SPAN}-{}",
        if sampled { "01" } else { "00" }
    )
}

/// Listener `web`, route `all` to upstream `app` of `endpoints` (round robin, two tries),
/// route `quiet` (`/quiet`) with tracing off, and `tracing:` to `collector`.
fn config(web: SocketAddr, endpoints: &[String], tracing: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "tracing: {{ {tracing} }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - {{ name: quiet, listener: web, paths: [{{ prefix: /quiet }}], upstream: app, tracing: false }}\n\
         \x20 - {{ name: all, listener: web, upstream: app }}\n\
         upstreams:\n\
         \x20 - {{ name: app, endpoints: [{}], balance: round_robin, retry: {{ attempts: 2 }} }}\n",
        list.join(", ")
    )
}

/// `(trace id, parent span id, sampled)` of a `traceparent` a backend saw.
fn parts(traceparent: &str) -> (String, String, bool) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    (
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3] == "01",
    )
}

#[test]
fn a_retried_request_gives_a_server_span_and_a_client_span_per_try() {
    let collector = Collector::start();
    let good = Backend::start("good", Behavior::Echo);
    let refused = refused_address();
    let web = listen_address();
    let tracing = format!(
        "otlp_endpoint: \"{}\", batch_delay: 10ms, service_name: edge-eu",
        collector.endpoint()
    );
    let sluice = Sluice::start(&config(
        web,
        &[refused.to_string(), good.address.to_string()],
        &tracing,
    ));
    // Round robin sends one of two requests to the refused endpoint first.
    let mut client = Client::connect(web);
    for i in 0..2 {
        let caller = traceparent(true);
        let response = client.request(
            "GET",
            &format!("/orders/{i}"),
            &[("host", "shop.test"), ("traceparent", &caller)],
        );
        assert_eq!(response.status, 200);
    }
    let log = sluice.wait_access_log(2);
    let retried = log
        .iter()
        .find(|r| r["attempts"].as_array().is_some_and(|a| a.len() == 2))
        .expect("one request was tried twice");
    // The caller's trace goes on, and every access-log line names it.
    assert!(log.iter().all(|r| r["trace_id"] == CALLER_TRACE), "{log:?}");
    let request_id = retried["request_id"].as_str().expect("a request id");
    // The request's spans may come in more than one export: wait for all three.
    let server_of = |spans: &[Span]| {
        spans
            .iter()
            .find(|s| attribute(s, "sluice.request_id").as_deref() == Some(request_id))
            .cloned()
    };
    let mut spans = Vec::new();
    wait_until(
        "the retried request's server span and its two tries",
        Duration::from_secs(20),
        || {
            spans = collector.spans();
            server_of(&spans).is_some_and(|server| {
                spans
                    .iter()
                    .filter(|s| s.parent_span_id == server.span_id)
                    .count()
                    == 2
            })
        },
    );
    let server = &server_of(&spans).expect("the retried request's server span");
    assert_eq!(hex(&server.trace_id), CALLER_TRACE);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(server.name, "GET all");
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(server, "url.path").as_deref(),
        retried["uri"].as_str()
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(server, "sluice.route").as_deref(), Some("all"));
    assert_eq!(attribute(server, "sluice.upstream").as_deref(), Some("app"));
    let mut tries: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .collect();
    tries.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(tries.len(), 2, "{tries:?}");
    for span in &tries {
        assert_eq!(span.kind, 3, "SPAN_KIND_CLIENT");
        assert!(span.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= server.end_time_unix_nano);
    }
    let (first, second) = (tries[0], tries[1]);
    assert_eq!(
        attribute(first, "server.port").as_deref(),
        Some(refused.port().to_string().as_str())
    );
    assert_eq!(
        attribute(first, "sluice.attempt.result").as_deref(),
        Some("connect_refused")
    );
    assert_eq!(first.status.as_ref().map(|s| s.code), Some(2), "ERROR");
    assert_eq!(
        attribute(second, "server.port").as_deref(),
        Some(good.address.port().to_string().as_str())
    );
    assert_eq!(
        attribute(second, "sluice.attempt.result").as_deref(),
        Some("ok")
    );
    assert_eq!(
        attribute(second, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(second, "http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(second, "sluice.retry.reason").as_deref(),
        Some("connect_refused")
    );
    assert!(attribute(second, "sluice.response.first_byte_ms").is_some());
    // The backend saw the second try's span as its parent, in the caller's trace.
    let seen = good
        .requests()
        .into_iter()
        .find(|r| r.header("x-request-id") == Some(request_id))
        .expect("the backend saw the retried request");
    let (trace, parent, sampled) = parts(seen.header("traceparent").expect("traceparent"));
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(parent, hex(&second.span_id));
    assert!(sampled);
    assert!(collector.service_names().iter().all(|n| n == "edge-eu"));
}

#[test]
fn ratio_zero_exports_nothing_and_still_propagates() {
    let collector = Collector::start();
    let backend = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let tracing = format!(
        "otlp_endpoint: \"{}\", batch_delay: 10ms, sampling: {{ ratio: 0 }}",
        collector.endpoint()
    );
    let sluice = Sluice::start(&config(web, &[backend.address.to_string()], &tracing));
    let mut client = Client::connect(web);
    // No caller: a trace starts, unsampled, and the backend is told so.
    assert_eq!(client.get("shop.test", "/first").status, 200);
    // A route with tracing off passes the caller's context through untouched.
    let caller = traceparent(false);
    let quiet = client.request(
        "GET",
        "/quiet",
        &[("host", "shop.test"), ("traceparent", &caller)],
    );
    assert_eq!(quiet.status, 200);
    // A sampled caller decides for its trace (parent-based).
    let sampled = traceparent(true);
    let response = client.request(
        "GET",
        "/last",
        &[("host", "shop.test"), ("traceparent", &sampled)],
    );
    assert_eq!(response.status, 200);
    let log = sluice.wait_access_log(3);
    let seen = backend.requests();
    let header = |target: &str| {
        seen.iter()
            .find(|r| r.target == target)
            .and_then(|r| r.header("traceparent"))
            .unwrap_or_else(|| panic!("{target} without traceparent"))
            .to_string()
    };
    let (first_trace, _, first_sampled) = parts(&header("/first"));
    assert!(!first_sampled);
    assert_ne!(first_trace, "0".repeat(32));
    let first_line = log.iter().find(|r| r["uri"] == "/first").expect("its line");
    assert_eq!(first_line["trace_id"], first_trace.as_str());
    assert_eq!(header("/quiet"), caller);
    let quiet_line = log.iter().find(|r| r["uri"] == "/quiet").expect("its line");
    assert!(quiet_line["trace_id"].is_null(), "{quiet_line}");
    let (last_trace, last_parent, last_sampled) = parts(&header("/last"));
    assert_eq!(last_trace, CALLER_TRACE);
    assert_ne!(last_parent, CALLER_SPAN);
    assert!(last_sampled);
    // The sampled request's spans arrive; the exporter sends in order, so nothing of the
    // earlier requests came (or will come) before them.
    collector.wait_trace(CALLER_TRACE, 2);
    let traces: Vec<String> = collector.spans().iter().map(|s| hex(&s.trace_id)).collect();
    assert!(traces.iter().all(|t| t == CALLER_TRACE), "{traces:?}");
}

#[test]
fn a_collector_that_never_answers_delays_no_request() {
    let collector = Collector::hanging();
    let backend = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    // Each export waits an hour for an answer: a request that waited on it would hang.
    let tracing = format!(
        "otlp_endpoint: \"{}\", export_timeout: 1h, batch_spans: 2, queue_spans: 4, batch_delay: 1ms",
        collector.endpoint()
    );
    let sluice = Sluice::start(&config(web, &[backend.address.to_string()], &tracing));
    let mut client = Client::connect(web);
    const REQUESTS: usize = 30;
    for i in 0..REQUESTS {
        assert_eq!(
            client.get("shop.test", &format!("/{i}")).status,
            200,
            "request {i}"
        );
    }
    wait_until("one export sent", Duration::from_secs(20), || {
        collector.exports() == 1
    });
    // One export is stuck (at most 2 spans) and 4 spans wait: the rest are dropped, and
    // counted (just after each response, so the count may trail the last answers).
    let dropped = || sluice.metric("sluice_tracing_spans_total{result=\"queue_full\"}");
    wait_until(
        "the spans without room counted",
        Duration::from_secs(20),
        || dropped() >= (2 * REQUESTS - 2 - 4) as f64,
    );
    assert_eq!(collector.exports(), 1);
    assert_eq!(
        sluice.metric("sluice_tracing_spans_total{result=\"exported\"}"),
        0.0
    );
}
