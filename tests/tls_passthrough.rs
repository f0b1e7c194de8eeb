//! TLS passthrough through the real binary: a tcp listener with `sni_routing` reads each
//! ClientHello's server name and relays the TLS untouched to that name's upstream, so the
//! client completes its handshake with the backend's own certificate. Names no route
//! claims go to the route without hosts, here sluice's own TLS listener over a PROXY v2
//! header that keeps the client's address (ingress-nginx's `--enable-ssl-passthrough`
//! layout).

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use support::tls::{self, get_over};
use support::*;
use tokio_rustls::rustls;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A TLS connection to `address` from `source_ip`, sending `sni`.
async fn connect_from(
    source_ip: [u8; 4],
    address: SocketAddr,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source_ip, 0)))?;
    let tcp = socket.connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("server name");
    let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

#[test]
fn tls_is_routed_by_server_name_and_relayed_untouched() {
    let certs = ScratchDir::new();
    let db_certificate = tls::self_signed(&certs, "db", &["db.test"]);
    let wild_certificate = tls::self_signed(&certs, "wild", &["*.wild.test"]);
    let edge_certificate = tls::self_signed(&certs, "edge", &["site.test"]);
    let db = tls::HttpsBackend::start("db", &db_certificate);
    let wild = tls::HttpsBackend::start("wild", &wild_certificate);
    let web = Backend::start("web", Behavior::Echo);
    let edge = listen_address();
    let strict = listen_address();
    let https = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: edge, listen: \"{edge}\", protocol: tcp, sni_routing: true }}\n\
         \x20 - {{ name: strict, listen: \"{strict}\", protocol: tcp, sni_routing: true }}\n\
         \x20 - name: https\n\
         \x20   listen: \"{https}\"\n\
         \x20   proxy_protocol: true\n\
         \x20   tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: db, listener: edge, hosts: [db.test], upstream: pass-db }}\n\
         \x20 - {{ name: wild, listener: edge, hosts: [\"*.wild.test\"], upstream: pass-wild }}\n\
         \x20 - {{ name: terminate, listener: edge, upstream: local-https }}\n\
         \x20 - {{ name: strict-db, listener: strict, hosts: [db.test], upstream: pass-db }}\n\
         \x20 - {{ name: site, listener: https, upstream: web }}\n\
         upstreams:\n\
         \x20 - {{ name: pass-db, protocol: tcp, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: pass-wild, protocol: tcp, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: local-https, protocol: tcp, endpoints: [\"{https}\"], proxy_protocol: v2 }}\n\
         \x20 - {{ name: web, endpoints: [\"{}\"] }}\n",
        edge_certificate.cert_path.display(),
        edge_certificate.key_path.display(),
        db.address,
        wild.address,
        web.address,
    ));

    runtime().block_on(async {
        // The backend's own certificate reaches the client: sluice did not terminate.
        assert_eq!(
            tls::served_certificate(edge, "db.test").await,
            db_certificate.der
        );
        assert_eq!(
            tls::served_certificate(edge, "orders.wild.test").await,
            wild_certificate.der
        );
        // Names are matched case-insensitively, as DNS names are.
        let mut stream = connect_from([127, 0, 0, 1], edge, "DB.test")
            .await
            .expect("handshake with the db backend");
        let (status, body) = get_over(&mut stream, "db.test", "/").await;
        assert!(status.contains(" 200 "), "{status}");
        assert_eq!(body, "db sni=db.test");
        let mut stream = connect_from([127, 0, 0, 1], edge, "a.eu.wild.test")
            .await
            .expect("handshake with the wildcard backend");
        let (_, body) = get_over(&mut stream, "a.eu.wild.test", "/").await;
        assert_eq!(body, "wild sni=a.eu.wild.test");

        // Any other name is terminated by sluice's https listener, which learns the
        // client's address (127.0.0.2, not the relay's 127.0.0.1) from the PROXY header.
        assert_eq!(
            tls::served_certificate(edge, "site.test").await,
            edge_certificate.der
        );
        let mut stream = connect_from([127, 0, 0, 2], edge, "site.test")
            .await
            .expect("handshake with sluice's https listener");
        let (status, body) = get_over(&mut stream, "site.test", "/terminated").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.contains("\"backend\":\"web\""), "{body}");

        // Without a route for the name, the connection is closed before any TLS; the
        // listener's one name still passes.
        let refused = tls::connect(
            strict,
            "other.test",
            tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS),
        )
        .await;
        assert!(refused.is_err(), "no route for other.test");
        assert_eq!(
            tls::served_certificate(strict, "db.test").await,
            db_certificate.der
        );
    });
    wait_until("the refused connection's log line", READY_TIMEOUT, || {
        sluice.access_log().iter().any(|line| {
            line["listener"] == "strict"
                && line["host"] == "other.test"
                && line["ended"] == "no_route"
        })
    });
    let seen = web.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.2"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
}

#[test]
fn connections_that_are_not_tls_take_the_route_without_hosts() {
    let echo = TcpEcho::start_on(SocketAddr::from(([127, 0, 0, 1], 0)));
    let edge = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: edge, listen: \"{edge}\", protocol: tcp, sni_routing: true }}]\n\
         routes: [{{ name: plain, listener: edge, upstream: echo }}]\n\
         upstreams: [{{ name: echo, protocol: tcp, endpoints: [\"{}\"], proxy_protocol: v1 }}]\n",
        echo.address
    ));
    let mut stream = std::net::TcpStream::connect(edge).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(b"hello\n").expect("write");
    // The echo server returns the PROXY v1 line sluice sent, then the client's bytes.
    let port = stream.local_addr().expect("local address").port();
    let expected = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {port} {}\r\nhello\n",
        edge.port()
    );
    let mut received = vec![0u8; expected.len()];
    stream.read_exact(&mut received).expect("echo");
    assert_eq!(String::from_utf8_lossy(&received), expected);
}

#[test]
fn a_tcp_listener_with_tls_terminates_it_and_relays_what_it_carries() {
    let certs = ScratchDir::new();
    let db_certificate = tls::self_signed(&certs, "db", &["db.test"]);
    let other_certificate = tls::self_signed(&certs, "other", &["other.test"]);
    let db = TcpEcho::start_on(SocketAddr::from(([127, 0, 0, 1], 0)));
    let edge = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - name: edge\n\
         \x20   listen: \"{edge}\"\n\
         \x20   protocol: tcp\n\
         \x20   tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}, {{ cert: \"{}\", key: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: db, listener: edge, hosts: [db.test], upstream: db }}\n\
         upstreams:\n\
         \x20 - {{ name: db, protocol: tcp, endpoints: [\"{}\"] }}\n",
        other_certificate.cert_path.display(),
        other_certificate.key_path.display(),
        db_certificate.cert_path.display(),
        db_certificate.key_path.display(),
        db.address,
    ));
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // sluice's certificate for the name, not the backend's (which speaks no TLS).
        assert_eq!(
            tls::served_certificate(edge, "db.test").await,
            db_certificate.der
        );
        let mut stream = connect_from([127, 0, 0, 1], edge, "db.test")
            .await
            .expect("handshake with sluice");
        // The backend echoes the cleartext.
        stream.write_all(b"SELECT 1;").await.expect("send");
        let mut echoed = [0u8; 9];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(&echoed, b"SELECT 1;");
        // A name without a route is closed before the handshake.
        let refused = tls::connect(
            edge,
            "other.test",
            tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS),
        )
        .await;
        assert!(refused.is_err(), "no route for other.test");
    });
}
