//! gRPC end to end: a tonic client through sluice (h2c listener) to a tonic service on an
//! h2c upstream, an HTTP/2-over-TLS (`protocol: h2`) upstream, deadlines, and gRPC-aware
//! errors.

mod support;

use std::time::{Duration, Instant};
use support::grpc::{self, GrpcBackend};
use support::h2_util::read_body;
use support::tls::{H2TlsBackend, TestCa};
use support::*;
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An h2c listener routing everything to upstream `grpc` (given as YAML flow-mapping fields).
fn grpc_config(web: std::net::SocketAddr, upstream: &str) -> String {
    format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes: [{{ name: grpc, listener: web, upstream: grpc }}]\n\
         upstreams: [{{ name: grpc, {upstream} }}]\n"
    )
}

/// A gRPC call as it appeared on the wire, made with a raw HTTP/2 client (tonic's client would
/// hide the framing, and gives up at a deadline by itself).
struct RawCall {
    http_status: u16,
    headers: http::HeaderMap,
    /// The response ended with its HEADERS frame (a trailers-only gRPC response).
    trailers_only: bool,
    body: String,
    /// `grpc-status` from the trailers, or from the headers of a trailers-only response.
    grpc_status: String,
}

/// POSTs an empty gRPC call to `path` through `web` with `headers` added.
async fn raw_call(web: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawCall {
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, _) = h2
        .send_request(request.body(()).expect("request"), true)
        .expect("send");
    let response = response.await.expect("response");
    let http_status = response.status().as_u16();
    let headers = response.headers().clone();
    let trailers_only = response.body().is_end_stream();
    let mut body = response.into_body();
    let bytes = read_body(&mut body).await;
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let grpc_status = trailers
        .get("grpc-status")
        .or(headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    RawCall {
        http_status,
        headers,
        trailers_only,
        body: String::from_utf8_lossy(&bytes).to_string(),
        grpc_status,
    }
}

#[test]
fn unary_and_server_streaming_calls_pass_with_trailers_and_deadline() {
    let backend = GrpcBackend::start();
    let web = listen_address();
    let _sluice = Sluice::start(&grpc_config(
        web,
        &format!("protocol: h2c, endpoints: [\"{}\"]", backend.address),
    ));
    runtime().block_on(async {
        let mut client = grpc::client(web).await;
        let reply = grpc::unary(&mut client, "hello", Some(Duration::from_secs(5)))
            .await
            .expect("unary call");
        // The deadline reaches the service (tonic encodes 5 s in its own unit).
        assert!(reply.starts_with("echo: hello (grpc-timeout: "), "{reply}");
        assert!(!reply.contains("grpc-timeout: none"), "{reply}");

        let (items, trailers) = grpc::count(&mut client, 5).await.expect("streaming call");
        assert_eq!(items, ["item 1", "item 2", "item 3", "item 4", "item 5"]);
        assert_eq!(
            trailers
                .get("grpc-status")
                .map(|v| v.to_str().unwrap_or("")),
            Some("0")
        );

        // A status the service returns reaches the client as is.
        let (items, _) = grpc::count(&mut client, 0).await.expect("empty stream");
        assert!(items.is_empty());
        let mut raw = grpc::client(web).await;
        raw.ready().await.expect("ready");
        let invalid = raw
            .server_streaming(
                tonic::Request::new(b"not a number".to_vec()),
                http::uri::PathAndQuery::from_static(grpc::COUNT),
                grpc::BytesCodec,
            )
            .await
            .expect_err("invalid argument");
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "send a number");
    });
}

/// Concurrent calls all succeed over pooled HTTP/2 connections, and once the burst is over,
/// later calls ride the pooled connections instead of opening new ones.
///
/// How many connections the burst opens is not asserted: Pingora takes an HTTP/2
/// connection out of its pool while it opens a stream on it, and a call arriving in that
/// moment opens a connection of its own (a false negative its connector documents and
/// accepts). How many do depends on scheduling: 2 to 25 for 200 calls on 2 busy cores.
#[test]
fn concurrent_calls_share_pooled_upstream_connections() {
    let backend = GrpcBackend::start();
    let web = listen_address();
    let _sluice = Sluice::start(&grpc_config(
        web,
        &format!(
            "protocol: h2c, max_streams: 100, endpoints: [\"{}\"]",
            backend.address
        ),
    ));
    const CALLS: usize = 200;
    let after_burst = runtime().block_on(async {
        let client = grpc::client(web).await;
        let mut warm = client.clone();
        grpc::unary(&mut warm, "warm-up", None)
            .await
            .expect("first call");
        let calls = (0..CALLS).map(|i| {
            let mut client = client.clone();
            async move {
                let reply = grpc::unary(&mut client, &format!("call {i}"), None).await;
                assert_eq!(
                    reply.expect("call"),
                    format!("echo: call {i} (grpc-timeout: none)")
                );
            }
        });
        futures::future::join_all(calls).await;
        let after_burst = backend.accepts();
        for i in 0..CALLS {
            let reply = grpc::unary(&mut warm, &format!("later {i}"), None).await;
            assert_eq!(
                reply.expect("call"),
                format!("echo: later {i} (grpc-timeout: none)")
            );
        }
        after_burst
    });
    println!("{CALLS} concurrent gRPC calls used {after_burst} upstream connection(s)");
    assert_eq!(
        backend.accepts(),
        after_burst,
        "calls after the burst opened upstream connections instead of using the pooled ones"
    );
}

#[test]
fn unavailable_upstream_is_grpc_status_14_not_an_http_error() {
    let web = listen_address();
    let _sluice = Sluice::start(&grpc_config(
        web,
        &format!(
            "protocol: h2c, endpoints: [\"{}\"], retry: {{ attempts: 1 }}",
            refused_address()
        ),
    ));
    runtime().block_on(async {
        let mut client = grpc::client(web).await;
        let status = grpc::unary(&mut client, "anyone?", None)
            .await
            .expect_err("no upstream");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");

        // On the wire: HTTP 200, trailers-only, grpc-status 14.
        let call = raw_call(web, grpc::UNARY, &[]).await;
        assert_eq!(call.http_status, 200);
        assert_eq!(call.grpc_status, "14");
        assert_eq!(call.headers["content-type"], "application/grpc");
        assert!(call.trailers_only, "a trailers-only response");
    });
}

#[test]
fn grpc_timeout_bounds_the_wait_for_a_stuck_upstream() {
    // The upstream accepts the call and never answers.
    let backend = Backend::start("stuck", Behavior::Hang);
    let web = listen_address();
    let _sluice = Sluice::start(&grpc_config(
        web,
        &format!(
            "endpoints: [\"{}\"], timeouts: {{ read: 60s }}, retry: {{ attempts: 1 }}",
            backend.address
        ),
    ));
    runtime().block_on(async {
        let started = Instant::now();
        let call = raw_call(web, grpc::UNARY, &[("grpc-timeout", "300m")]).await;
        let waited = started.elapsed();
        assert_eq!(call.http_status, 200);
        assert_eq!(call.grpc_status, "4", "DEADLINE_EXCEEDED");
        // Bounded by the call's deadline, not the route's 60 s read timeout.
        assert!(waited < Duration::from_secs(30), "waited {waited:?}");
        println!("a 300 ms deadline was answered after {waited:?}");
    });
}

#[test]
fn h2_upstream_over_tls_is_verified_against_sni_and_ca() {
    let certs = ScratchDir::new();
    let ca = TestCa::new();
    let ca_file = certs.write("ca.pem", &ca.pem);
    // A CA that issued nothing the backend serves.
    let other_ca = certs.write("other-ca.pem", &TestCa::new().pem);
    let leaf = ca.issue(&certs, "grpc", &["grpc.internal"]);
    let backend = H2TlsBackend::start(&leaf);
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes:\n\
         \x20 - {{ name: good, listener: web, paths: [{{ prefix: /good }}], upstream: good }}\n\
         \x20 - {{ name: wrong, listener: web, paths: [{{ prefix: /wrong }}], upstream: wrong }}\n\
         \x20 - {{ name: unverified, listener: web, paths: [{{ prefix: /unverified }}], upstream: unverified }}\n\
         \x20 - {{ name: mistrusted, listener: web, paths: [{{ prefix: /mistrusted }}], upstream: mistrusted }}\n\
         upstreams:\n\
         \x20 - {{ name: good, protocol: h2, tls: {{ sni: grpc.internal, ca_file: \"{ca}\" }}, endpoints: [\"{b}\"] }}\n\
         \x20 - {{ name: wrong, protocol: h2, tls: {{ sni: other.internal, ca_file: \"{ca}\" }}, endpoints: [\"{b}\"], retry: {{ attempts: 1 }} }}\n\
         \x20 - {{ name: unverified, protocol: h2, tls: {{ sni: grpc.internal, verify: false }}, endpoints: [\"{b}\"] }}\n\
         \x20 - {{ name: mistrusted, protocol: h2, tls: {{ sni: grpc.internal, ca_file: \"{other}\" }}, endpoints: [\"{b}\"], retry: {{ attempts: 1 }} }}\n",
        ca = ca_file.display(),
        other = other_ca.display(),
        b = backend.address
    );
    let _sluice = Sluice::start(&body);

    let call = |path: &'static str| {
        let call = runtime().block_on(raw_call(web, path, &[]));
        (call.body, call.grpc_status)
    };

    assert_eq!(
        call("/good/pkg.Svc/Call"),
        (
            "/good/pkg.Svc/Call via grpc.internal".to_string(),
            "0".to_string()
        )
    );
    // The certificate is not valid for other.internal: the call fails as UNAVAILABLE.
    assert_eq!(
        call("/wrong/pkg.Svc/Call"),
        (String::new(), "14".to_string())
    );
    // Same address and SNI as `good`, whose verified connection is pooled by now, but
    // another CA: that connection must not be reused, and the handshake fails.
    assert_eq!(
        call("/mistrusted/pkg.Svc/Call"),
        (String::new(), "14".to_string())
    );
    assert_eq!(
        call("/unverified/pkg.Svc/Call"),
        (
            "/unverified/pkg.Svc/Call via grpc.internal".to_string(),
            "0".to_string()
        )
    );
    assert!(backend.accepts() >= 2);
}

#[test]
fn tls_upstream_settings_are_validated() {
    let (output, path, _dir) = check_config(&format!(
        "admin: {{ listen: \"127.0.0.1:{}\" }}\n\
         listeners: [{{ name: web, listen: \"127.0.0.1:{}\" }}]\n\
         routes: [{{ name: r, listener: web, upstream: a }}]\n\
         upstreams:\n\
         \x20 - {{ name: a, protocol: h2, endpoints: [\"127.0.0.1:1\"] }}\n\
         \x20 - {{ name: b, protocol: h2c, tls: {{ sni: x.test }}, endpoints: [\"127.0.0.1:1\"] }}\n\
         \x20 - {{ name: c, protocol: h2, tls: {{ sni: x.test, ca_file: /nonexistent/ca.pem }}, endpoints: [\"127.0.0.1:1\"] }}\n",
        free_port(),
        free_port()
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let file = path.display();
    assert!(
        stderr.contains(&format!("{file}:5:")) && stderr.contains("set tls.sni"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:6:")) && stderr.contains("cleartext"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:")) && stderr.contains("cannot read CA file"),
        "{stderr}"
    );
}
