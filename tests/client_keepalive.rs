//! Client keepalive: a connection waiting for its next request is served when the request
//! comes, and closed at the listener's keepalive timeout when it does not. Sluice waits for the next request outside Pingora's
//! session (third_party/pingora/patches/0003), so these cover that wait.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn config(web: SocketAddr, backend: &Backend, timeout: &str) -> String {
    format!(
        "listeners: [{{ name: web, listen: \"{web}\", keepalive: {{ timeout: {timeout} }} }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    )
}

#[test]
fn idle_connection_is_served_when_its_next_request_comes() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, &backend, "5s"));
    let mut client = Client::connect(web);
    assert_eq!(client.get("idle.test", "/first").status, 200);
    // The scenario, not synchronisation: the client idles well inside the keepalive
    // timeout, then asks again on the same connection (a dropped connection fails `get`).
    std::thread::sleep(Duration::from_millis(300));
    let second = client.get("idle.test", "/second");
    assert_eq!(second.status, 200);
    let third = client.get("idle.test", "/third");
    assert_eq!(third.status, 200);
    assert_eq!(backend.requests().len(), 3);
    assert!(!client.is_closed_by_peer(), "the connection stays open");
}

#[test]
fn idle_connection_is_closed_at_the_keepalive_timeout() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, &backend, "1s"));
    let mut stream = std::net::TcpStream::connect(web).expect("connect");
    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(b"GET /once HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .expect("send");
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut answered = None;
    // Read the response, then on until sluice closes the idle connection.
    loop {
        let n = stream.read(&mut buffer).expect("read until sluice closes");
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..n]);
        if answered.is_none() && response.windows(4).any(|w| w == b"\r\n\r\n") {
            answered = Some(Instant::now());
        }
    }
    let answered = answered.expect("a response before the close");
    let idle = answered.elapsed();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(10),
        "closed after {idle:?} idle; the keepalive timeout is 1s"
    );
}
