//! Cleartext HTTP/2 downstream (`h2c: true`): prior-knowledge HTTP/2 and HTTP/1.1 on one port.

mod support;

use support::h2_util::{self, read_body};
use support::*;

/// A single-threaded runtime for a test's HTTP/2 client or server.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An HTTP/2 (prior knowledge) client connection to `web`, driven in the background.
async fn h2_client(web: std::net::SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// GETs `paths` over one HTTP/2 connection to `web`; returns each status and body.
fn h2_get(web: std::net::SocketAddr, paths: &[&str]) -> Vec<(u16, Vec<u8>)> {
    runtime().block_on(async {
        let mut client = h2_client(web).await;
        let mut responses = Vec::new();
        for path in paths {
            let request = http::Request::builder()
                .method("GET")
                .uri(format!("http://h2c.test{path}"))
                .body(())
                .expect("request");
            let (response, _) = client.send_request(request, true).expect("send request");
            let response = response.await.expect("response");
            let status = response.status().as_u16();
            responses.push((status, read_body(&mut response.into_body()).await));
        }
        responses
    })
}

#[test]
fn h2c_and_http1_share_one_port() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    );
    let sluice = Sluice::start(&body);

    let responses = h2_get(web, &["/h2/1", "/h2/2", "/nowhere"]);
    for (status, body) in &responses[..2] {
        assert_eq!(*status, 200);
        let echoed: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
        assert_eq!(echoed["backend"], "app");
    }
    assert_eq!(get(web, "/h1").status, 200, "HTTP/1.1 on the same port");
    let log = sluice.wait_access_log(4);
    let h2_lines = log.iter().filter(|r| r["proto"] == "HTTP/2").count();
    assert_eq!(h2_lines, 3, "{log:?}");
    assert!(log
        .iter()
        .any(|r| r["proto"] == "HTTP/1.1" && r["uri"] == "/h1"));
}

/// A cleartext HTTP/2 backend answering like a gRPC server: 200, `content-type:
/// application/grpc`, a body naming the request path, and `grpc-status: 0` in trailers.
/// Returns its address and a counter of accepted connections.
fn start_h2_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind h2 backend");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    h2_util::serve_grpc_like(tcp, |path| format!("reply to {path}")).await;
                });
            }
        });
    });
    (address, accepted)
}

#[test]
fn h2c_upstream_multiplexes_and_keeps_trailers() {
    let (backend, accepted) = start_h2_backend();
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes: [{{ name: grpc, listener: web, upstream: grpc }}]\n\
         upstreams: [{{ name: grpc, protocol: h2c, endpoints: [\"{backend}\"] }}]\n"
    );
    let _sluice = Sluice::start(&body);
    runtime().block_on(async {
        let client = h2_client(web).await;
        // Concurrent first calls each open a connection (Pingora does not wait for one in
        // progress); once one is open, calls share it up to max_streams (racing the pool,
        // a few may still open their own).
        let calls = (0..9).map(|i| {
            let mut client = client.clone();
            async move {
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://grpc.test/pkg.Service/Call{i}"))
                    .header("content-type", "application/grpc")
                    .body(())
                    .expect("request");
                let (response, _) = client.send_request(request, true).expect("send");
                let response = response.await.expect("response");
                assert_eq!(response.status(), 200);
                let mut body = response.into_body();
                let bytes = read_body(&mut body).await;
                let trailers = body
                    .trailers()
                    .await
                    .expect("trailers")
                    .expect("some trailers");
                assert_eq!(
                    String::from_utf8_lossy(&bytes),
                    format!("reply to /pkg.Service/Call{i}")
                );
                assert_eq!(
                    trailers.get("grpc-status").map(|v| v.as_bytes()),
                    Some(&b"0"[..])
                );
            }
        });
        let mut calls: Vec<_> = calls.collect();
        let warm_up = calls.remove(0);
        warm_up.await;
        futures::future::join_all(calls).await;
    });
    let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "h2c upstream: 1 call then 8 concurrent ones used {connections} upstream connection(s)"
    );
    // How many the concurrent calls share depends on how they race Pingora's pool (1-3 seen);
    // fewer connections than calls means streams were shared.
    assert!(
        connections < 9,
        "{connections} connections for 9 calls: no stream shared one"
    );
}

#[test]
fn keepalive_max_requests_ends_http2_connections_too() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true, keepalive: {{ max_requests: 3 }} }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    );
    let _sluice = Sluice::start(&body);
    let served = runtime().block_on(async {
        let mut client = h2_client(web).await;
        let mut served = 0;
        for i in 0..10 {
            let request = http::Request::builder()
                .uri(format!("http://h2c.test/{i}"))
                .body(())
                .expect("request");
            let Ok((response, _)) = client.send_request(request, true) else {
                break;
            };
            match response.await {
                Ok(response) if response.status() == 200 => served += 1,
                _ => break,
            }
        }
        served
    });
    // At the third stream sluice starts HTTP/2's graceful shutdown: GOAWAY, a PING, and
    // on its answer the final GOAWAY. A stream the client opens inside that round trip is
    // still served (RFC 9113 §6.8), so a starved accept loop may let one more through.
    assert!(
        (3..=4).contains(&served),
        "{served} requests on one connection"
    );
}

#[test]
fn http10_clients_of_http2_upstreams_get_close_delimited_answers() {
    let (backend, _accepted) = start_h2_backend();
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: h2 }}]\n\
         upstreams: [{{ name: h2, protocol: h2c, endpoints: [\"{backend}\"] }}]\n"
    );
    let _sluice = Sluice::start(&body);
    // The HTTP/2 upstream answers without a length; the HTTP/1.0 client asked to keep the
    // connection, which sluice must refuse to delimit the body.
    let text = support::raw_backend::exchange(
        web,
        b"GET /one HTTP/1.0\r\nhost: test.local\r\nconnection: keep-alive\r\n\r\n",
    )
    .read_to_close();
    let lower = text.to_ascii_lowercase();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!lower.contains("transfer-encoding"), "{text}");
    assert!(lower.contains("connection: close"), "{text}");
    assert!(text.ends_with("reply to /one"), "{text}");
}

#[test]
fn http2_requests_are_rewritten_with_their_authority() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes:\n  - {{ name: api, listener: web, paths: [{{ segment_prefix: /api }}], upstream: app, \
         upstream_host: internal.svc, rewrite: {{ prefix: /v2 }} }}\n\
         \x20 - {{ name: old, listener: web, paths: [{{ exact: /old }}], redirect: {{ path: /new }} }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    let responses = h2_get(web, &["/api/items?page=2", "/old"]);
    assert_eq!(responses[0].0, 200);
    let seen: serde_json::Value = serde_json::from_slice(&responses[0].1).expect("json");
    assert_eq!(seen["target"], "/v2/items?page=2");
    assert_eq!(seen["headers"]["host"], "internal.svc");
    assert_eq!(responses[1].0, 302, "a redirect answers HTTP/2 clients too");
}

#[test]
fn an_http2_request_is_mirrored_to_an_http1_upstream_as_http1() {
    let (h2_backend, _) = start_h2_backend();
    let shadow = Backend::start("shadow", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes: [{{ name: grpc, listener: web, upstream: grpc, mirror: {{ upstream: shadow }} }}]\n\
         upstreams:\n  - {{ name: grpc, protocol: h2c, endpoints: [\"{h2_backend}\"] }}\n\
         \x20 - {{ name: shadow, endpoints: [\"{}\"] }}\n",
        shadow.address
    ));
    let responses = h2_get(web, &["/pkg.Service/Call"]);
    assert_eq!(responses[0].0, 200);
    wait_until("the copy at the mirror", READY_TIMEOUT, || {
        !shadow.requests().is_empty()
    });
    let copy = &shadow.requests()[0];
    assert_eq!(copy.target, "/pkg.Service/Call");
    assert_eq!(
        copy.header("host"),
        Some("h2c.test"),
        "the authority as Host"
    );
    sluice.wait_metric(
        "sluice_mirror_requests_total{result=\"ok\",route=\"grpc\"}",
        1.0,
    );
}
