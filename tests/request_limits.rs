//! Request head limits and deadlines (issue #13): line, size and count limits answered 414
//! and 431 as nginx does, a deadline for the whole head (408), and every refusal of the
//! parser answered by sluice, logged and counted.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;
use support::raw_backend::{exchange, statuses, trickle_until_closed, RawAnswer, RawBackend};
use support::*;

fn start(backend: &RawBackend, listener_extra: &str) -> (Sluice, SocketAddr) {
    let web = listen_address();
    let config = format!(
        "listeners: [{{ name: web, listen: \"{web}\"{listener_extra} }}]\n\
         routes:\n  - {{ name: all, listener: web, upstream: app }}\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\"] }}\n",
        backend.address
    );
    (Sluice::start(&config), web)
}

fn head_with(request_line_target: &str, headers: &[String]) -> Vec<u8> {
    let mut head = format!("GET {request_line_target} HTTP/1.1\r\nhost: test.local\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[test]
fn heads_beyond_the_default_limits_are_refused_like_nginx() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (sluice, web) = start(&backend, "");
    let long_target = format!("/{}", "a".repeat(9000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "request line of 9000 bytes",
            head_with(&long_target, &[]),
            414,
        ),
        (
            "header line of 9000 bytes",
            head_with("/", &[format!("x-long: {}", "b".repeat(9000))]),
            431,
        ),
        (
            "101 header fields",
            head_with(
                "/",
                &(0..100).map(|i| format!("x-h{i}: v")).collect::<Vec<_>>(),
            ),
            431,
        ),
        (
            "five header lines of 8000 bytes (40 KB)",
            head_with(
                "/",
                &(0..5)
                    .map(|i| format!("x-big{i}: {}", "c".repeat(8000)))
                    .collect::<Vec<_>>(),
            ),
            431,
        ),
        (
            "a header line without a colon",
            head_with("/", &["no colon".into()]),
            400,
        ),
    ];
    for (what, bytes, status) in &cases {
        let text = exchange(web, bytes).read_to_close();
        assert_eq!(statuses(&text), [*status], "{what}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(!lower.contains("server: pingora"), "{what}: {text}");
        assert!(
            lower.contains("\"request_id\""),
            "{what}: sluice's own body: {text}"
        );
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());

    // Within the limits: an 8192-byte header line and 99 fields are forwarded.
    let within = head_with("/", &[format!("x-long: {}", "d".repeat(8184))]);
    let mut client = Client::connect(web);
    client.send_raw(&within);
    assert_eq!(client.read_response().expect("answer").status, 200);
    let fields: Vec<String> = (0..98).map(|i| format!("x-h{i}: v")).collect();
    client.send_raw(&head_with("/", &fields));
    assert_eq!(client.read_response().expect("answer").status, 200);

    // Every refusal is in the access log and the metrics.
    let log = sluice.wait_access_log(cases.len() + 2);
    let logged: Vec<u64> = log.iter().filter_map(|r| r["status"].as_u64()).collect();
    for (what, _, status) in &cases {
        assert!(logged.contains(&u64::from(*status)), "{what}: {logged:?}");
    }
    for (reason, status, count) in [
        ("request_line_too_long", 414, 1.0),
        ("header_too_large", 431, 3.0),
        ("malformed_head", 400, 1.0),
    ] {
        sluice.wait_metric(
            &format!(
                "sluice_http_requests_total{{code=\"{status}\",reason=\"{reason}\",route=\"none\"}}"
            ),
            count,
        );
    }
}

#[test]
fn limits_are_configurable_per_listener() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(
        &backend,
        ", requests: { max_request_line: 100, max_header_line: 64, max_headers: 3, max_header_bytes: 300 }",
    );
    let cases = [
        (head_with(&format!("/{}", "a".repeat(100)), &[]), 414),
        (head_with("/", &[format!("x: {}", "b".repeat(70))]), 431),
        (
            head_with("/", &["a: 1".into(), "b: 2".into(), "c: 3".into()]),
            431,
        ),
        (head_with("/", &[format!("x0: {}", "c".repeat(60))]), 200),
    ];
    for (bytes, status) in cases {
        let mut bytes = bytes;
        if status == 200 {
            bytes = String::from_utf8(bytes)
                .expect("ascii")
                .replace(
                    "host: test.local\r\n",
                    "host: test.local\r\nconnection: close\r\n",
                )
                .into_bytes();
        }
        let text = exchange(web, &bytes).read_to_close();
        assert_eq!(statuses(&text), [status], "{text}");
    }
}

#[test]
fn a_trickled_head_is_cut_at_the_header_deadline() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (sluice, web) = start(&backend, ", requests: { header_timeout: 1s }");
    // Every single read is quick; only a deadline for the whole head ends it.
    let (answer, closed) =
        trickle_until_closed(web, b"GET / HTTP/1.1\r\nhost: test.local\r\nx-slow: ");
    assert_eq!(statuses(&answer), [408], "{answer}");
    assert!(closed, "sluice closed the connection");
    assert!(backend.requests().is_empty());
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"408\",reason=\"header_timeout\",route=\"none\"}",
        1.0,
    );
}

#[test]
fn a_line_of_exactly_the_limit_passes_when_a_read_ends_between_cr_and_lf() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&backend, "");
    let mut stream = TcpStream::connect(web).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let line = format!("x-long: {}", "d".repeat(8184));
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n{line}\r")
                .as_bytes(),
        )
        .expect("head up to the CR");
    // Shapes the reads (the line ends in sluice's buffer with its CR but without its LF); the
    // outcome must be the same whether or not sluice read in between.
    thread::sleep(Duration::from_millis(200));
    stream.write_all(b"\n\r\n").expect("rest of the head");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer and close");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(statuses(&answer), [200], "{answer}");
}
