//! What happens to a connection before its first request, through the real binary (issue
//! #17): the PROXY protocol (v1 and v2, on HTTP and TCP listeners; connections without a
//! header closed and counted) and connection limits per listener and per client.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use support::*;

/// A v1 header for a TCP4 or TCP6 client `source` connecting to `destination`.
fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 header: `command` 1 (PROXY) with an IPv6 `source`, or 0 (LOCAL) with no address.
fn v2(command: u8, source: Option<(Ipv6Addr, u16)>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some((ip, port)) = source {
        body.extend_from_slice(&ip.octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&port.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
    }
    let family = if source.is_some() { 0x21 } else { 0x00 };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    header.extend_from_slice(&body);
    header
}

/// A connection to `listener` that first sends `header`.
fn client_behind(listener: SocketAddr, header: &[u8]) -> Client {
    let mut client = Client::connect(listener);
    client.send_raw(header);
    client
}

/// The `client` field of the access-log record of request `id`.
fn logged_client(sluice: &Sluice, id: &str) -> String {
    let mut client = String::new();
    wait_until("the request's access-log line", READY_TIMEOUT, || {
        if let Some(record) = sluice
            .access_log()
            .into_iter()
            .find(|r| r["request_id"] == id)
        {
            client = record["client"].as_str().unwrap_or_default().to_string();
        }
        !client.is_empty()
    });
    client
}

fn rejected(sluice: &Sluice, listener: &str, reason: &str) -> f64 {
    sluice.metric(&format!(
        "sluice_connections_rejected_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    ))
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_client_everywhere() {
    let backend = Backend::start("app", Behavior::Echo);
    let listen = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: lb, listen: \"{listen}\", proxy_protocol: true }}]\n\
         routes: [{{ name: all, listener: lb, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    let v1_client: SocketAddr = "203.0.113.9:5555".parse().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("v1", v1(v1_client, listen), "203.0.113.9"),
        (
            "v2",
            v2(1, Some(("2001:db8::7".parse().unwrap(), 4711))),
            "2001:db8::7",
        ),
        // LOCAL: the balancer's own connection (a health check) is the TCP peer's.
        ("v2-local", v2(0, None), "127.0.0.1"),
    ];
    for (id, header, expected) in &cases {
        let mut client = client_behind(listen, header);
        for round in 0..2 {
            let request_id = format!("{id}-{round}");
            let response = client.request("GET", "/", &[("x-request-id", &request_id)]);
            assert_eq!(response.status, 200, "{id}");
            assert_eq!(logged_client(&sluice, &request_id), *expected, "{id}");
        }
        let seen = backend.requests();
        let last = seen.last().expect("a request");
        assert_eq!(last.header("x-forwarded-for"), Some(*expected), "{id}");
    }

    // The header and the first request in one write: nothing of the request is lost.
    let mut stream = TcpStream::connect(listen).expect("connect");
    let mut bytes = v1(v1_client, listen);
    bytes.extend_from_slice(b"GET /one-write HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
    stream.write_all(&bytes).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(rejected(&sluice, "lb", "proxy_protocol"), 0.0);
}

#[test]
fn connections_without_a_valid_header_are_closed_and_counted() {
    let backend = Backend::start("app", Behavior::Echo);
    let listen = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: lb, listen: \"{listen}\", proxy_protocol: {{ timeout: 300ms }} }}]\n\
         routes: [{{ name: all, listener: lb, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    // A plain request: its first bytes are no header.
    let mut plain = Client::connect(listen);
    assert!(plain.try_request("GET", "/", &[], b"").is_none());
    sluice.wait_metric(
        "sluice_connections_rejected_total{listener=\"lb\",reason=\"proxy_protocol\"}",
        1.0,
    );
    // A malformed v1 line.
    let mut bad = client_behind(listen, b"PROXY TCP4 203.0.113.9 nowhere 1 2\r\n");
    assert!(bad.try_request("GET", "/", &[], b"").is_none());
    sluice.wait_metric(
        "sluice_connections_rejected_total{listener=\"lb\",reason=\"proxy_protocol\"}",
        2.0,
    );
    // Silence: closed at the timeout, not at the keepalive timeout.
    let mut silent = TcpStream::connect(listen).expect("connect");
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).map_err(|e| e.kind()).ok(), Some(0));
    sluice.wait_metric(
        "sluice_connections_rejected_total{listener=\"lb\",reason=\"proxy_protocol\"}",
        3.0,
    );
    assert!(backend.requests().is_empty());
    // Pingora logs the refusal as the connection closes: the client may see the close first.
    wait_until("the refusal logged with its reason", READY_TIMEOUT, || {
        sluice.stderr().contains("no PROXY protocol header")
    });
}

#[test]
fn proxy_protocol_on_a_tcp_listener_is_not_relayed() {
    let echo = TcpEcho::start();
    let listen = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: db, listen: \"{listen}\", protocol: tcp, proxy_protocol: true }}]\n\
         routes: [{{ name: db, listener: db, upstream: db }}]\n\
         upstreams: [{{ name: db, protocol: tcp, endpoints: [\"{}\"] }}]\n",
        echo.address
    ));
    let mut stream = TcpStream::connect(listen).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut bytes = v1("198.51.100.3:1000".parse().unwrap(), listen);
    bytes.extend_from_slice(b"ping");
    stream.write_all(&bytes).expect("write");
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).expect("echo");
    assert_eq!(&echoed, b"ping", "the upstream sees the payload only");
}

#[test]
fn connection_limits_per_listener_and_per_client() {
    let backend = Backend::start("app", Behavior::Echo);
    let (capped, per_client) = (listen_address(), listen_address());
    let sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: capped, listen: \"{capped}\", connections: {{ max: 2 }} }}\n\
         \x20 - {{ name: lb, listen: \"{per_client}\", proxy_protocol: true, connections: {{ max: 10, max_per_client: 2 }} }}\n\
         routes:\n\
         \x20 - {{ name: capped, listener: capped, upstream: app }}\n\
         \x20 - {{ name: lb, listener: lb, upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));

    // Two connections are served and held; a third is closed before its request.
    let mut held: Vec<Client> = (0..2).map(|_| Client::connect(capped)).collect();
    for client in &mut held {
        assert_eq!(client.request("GET", "/", &[]).status, 200);
    }
    assert!(Client::connect(capped)
        .try_request("GET", "/", &[], b"")
        .is_none());
    assert_eq!(rejected(&sluice, "capped", "listener_limit"), 1.0);
    // Held connections keep being served; once one closes, a new one gets its place.
    assert_eq!(held[0].request("GET", "/", &[]).status, 200);
    drop(held.remove(1));
    wait_until("a freed place", READY_TIMEOUT, || {
        Client::connect(capped)
            .try_request("GET", "/", &[], b"")
            .is_some()
    });

    // Per client, as the PROXY protocol names them.
    let client_a: SocketAddr = "203.0.113.1:1".parse().unwrap();
    let client_b: SocketAddr = "203.0.113.2:1".parse().unwrap();
    let mut of_a: Vec<Client> = (0..2)
        .map(|_| client_behind(per_client, &v1(client_a, per_client)))
        .collect();
    for client in &mut of_a {
        assert_eq!(client.request("GET", "/", &[]).status, 200);
    }
    assert!(client_behind(per_client, &v1(client_a, per_client))
        .try_request("GET", "/", &[], b"")
        .is_none());
    assert_eq!(rejected(&sluice, "lb", "client_limit"), 1.0);
    assert_eq!(
        client_behind(per_client, &v1(client_b, per_client))
            .request("GET", "/", &[])
            .status,
        200,
        "another client is not held back"
    );
    wait_until("the refusal logged", READY_TIMEOUT, || {
        sluice
            .stderr()
            .contains("client 203.0.113.1 has 2 connections open")
    });
}
