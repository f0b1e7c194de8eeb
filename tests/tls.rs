//! TLS termination: certificates by SNI (exact, wildcard, default), TLS 1.2+ only, ALPN h2
//! and http/1.1, and certificate reload without closing open connections.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use support::h2_util::read_body;
use support::tls::{self, get_over, TestCertificate};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A TLS listener `web` on `listen` with `certificates` (first = default), routing
/// everything to `backend`.
fn tls_config(listen: SocketAddr, certificates: &[(&Path, &Path)], backend: SocketAddr) -> String {
    let list: Vec<String> = certificates
        .iter()
        .map(|(cert, key)| {
            format!(
                "{{ cert: \"{}\", key: \"{}\" }}",
                cert.display(),
                key.display()
            )
        })
        .collect();
    format!(
        "listeners: [{{ name: web, listen: \"{listen}\", tls: {{ certificates: [{}] }} }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{backend}\"] }}]\n",
        list.join(", ")
    )
}

fn files(certificate: &TestCertificate) -> (&Path, &Path) {
    (&certificate.cert_path, &certificate.key_path)
}

#[test]
fn certificate_is_chosen_by_sni_with_wildcards_and_a_default() {
    let certs = ScratchDir::new();
    let default = tls::self_signed(&certs, "default", &["default.test"]);
    let shop = tls::self_signed(&certs, "shop", &["shop.example.test"]);
    let wildcard = tls::self_signed(&certs, "wildcard", &["*.api.example.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&tls_config(
        web,
        &[files(&default), files(&shop), files(&wildcard)],
        backend.address,
    ));

    runtime().block_on(async {
        assert_eq!(
            tls::served_certificate(web, "shop.example.test").await,
            shop.der
        );
        assert_eq!(
            tls::served_certificate(web, "orders.api.example.test").await,
            wildcard.der
        );
        // A wildcard covers one label; anything unknown gets the first certificate.
        assert_eq!(
            tls::served_certificate(web, "a.b.api.example.test").await,
            default.der
        );
        assert_eq!(
            tls::served_certificate(web, "unknown.test").await,
            default.der
        );
        // An IP literal sends no SNI at all.
        assert_eq!(tls::served_certificate(web, "127.0.0.1").await, default.der);

        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(web, "shop.example.test", config)
            .await
            .expect("handshake");
        let (status, body) = get_over(&mut stream, "shop.example.test", "/over-tls").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.contains("\"backend\":\"app\""), "{body}");
    });
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
}

/// A keepalive TLS connection idle between requests waits outside Pingora's session
/// (third_party/pingora/patches/0003, rustls readiness): its next request is served.
#[test]
fn idle_tls_keepalive_connection_is_served_on_its_next_request() {
    let certs = ScratchDir::new();
    let certificate = tls::self_signed(&certs, "web", &["web.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&tls_config(web, &[files(&certificate)], backend.address));
    runtime().block_on(async {
        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(web, "web.test", config)
            .await
            .expect("handshake");
        for path in ["/first", "/after-idle", "/again"] {
            if path == "/after-idle" {
                // The scenario, not synchronisation: the client idles inside the keepalive
                // timeout before its next request on the same connection.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            let (status, body) = get_over(&mut stream, "web.test", path).await;
            assert!(status.contains(" 200 "), "{path}: {status}");
            assert!(body.contains(path), "{body}");
        }
    });
    assert_eq!(backend.requests().len(), 3);
}

/// A TLS 1.1 ClientHello (legacy version 0x0302, no supported_versions extension) offering
/// TLS 1.0/1.1 cipher suites and also the TLS 1.2 ECDHE-GCM ones sluice has, so that the
/// version is the only thing to refuse.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc013, 0xc014, 0x002f, 0x0035];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&[0, 0]); // no extensions
    let mut handshake = vec![1]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_1_1_is_refused_and_1_2_accepted() {
    let certs = ScratchDir::new();
    let default = tls::self_signed(&certs, "default", &["default.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&tls_config(web, &[files(&default)], backend.address));

    runtime().block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
        tcp.write_all(&tls11_client_hello())
            .await
            .expect("send hello");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        // Either a fatal alert (content type 21) or nothing: never a ServerHello (22).
        assert_ne!(
            answer.first(),
            Some(&0x16),
            "TLS 1.1 got a handshake: {answer:?}"
        );
        if let Some(&content_type) = answer.first() {
            assert_eq!(content_type, 0x15, "expected an alert: {answer:?}");
            assert_eq!(answer.get(5), Some(&2), "a fatal alert: {answer:?}");
            println!("TLS 1.1 hello answered with alert {:?}", answer.get(6));
        }

        let tls12 = tls::client_config(&[b"http/1.1"], &[&rustls::version::TLS12]);
        let mut stream = tls::connect(web, "default.test", tls12)
            .await
            .expect("TLS 1.2 handshake");
        assert_eq!(
            stream.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let (status, _) = get_over(&mut stream, "default.test", "/tls12").await;
        assert!(status.contains(" 200 "), "{status}");
    });
}

#[test]
fn http2_is_negotiated_by_alpn_and_http1_still_works() {
    let certs = ScratchDir::new();
    let default = tls::self_signed(&certs, "default", &["default.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&tls_config(web, &[files(&default)], backend.address));

    runtime().block_on(async {
        let h2_config = tls::client_config(&[b"h2", b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let stream = tls::connect(web, "default.test", h2_config)
            .await
            .expect("handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut client, connection) = h2::client::handshake(stream).await.expect("h2");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        for i in 0..3 {
            let request = http::Request::builder()
                .uri(format!("https://default.test/h2/{i}"))
                .body(())
                .expect("request");
            let (response, _) = client.send_request(request, true).expect("send");
            let response = response.await.expect("response");
            assert_eq!(response.status(), 200);
            let bytes = read_body(&mut response.into_body()).await;
            assert!(String::from_utf8_lossy(&bytes).contains("\"backend\":\"app\""));
        }

        let h1_config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(web, "default.test", h1_config)
            .await
            .expect("handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (status, _) = get_over(&mut stream, "default.test", "/h1").await;
        assert!(status.contains(" 200 "), "{status}");
    });
    let log = sluice.wait_access_log(4);
    assert_eq!(
        log.iter().filter(|r| r["proto"] == "HTTP/2").count(),
        3,
        "{log:?}"
    );
}

#[test]
fn reload_serves_new_certificate_to_new_connections_and_keeps_old_ones() {
    let certs = ScratchDir::new();
    let old = tls::self_signed(&certs, "site", &["site.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = tls_config(web, &[files(&old)], backend.address);
    let sluice = Sluice::start(&body);

    runtime().block_on(async {
        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut open = tls::connect(web, "site.test", config)
            .await
            .expect("handshake");
        let (status, _) = get_over(&mut open, "site.test", "/before").await;
        assert!(status.contains(" 200 "), "{status}");

        // Renewal writes new files at the same paths (as cert-manager does).
        let renewed = tls::self_signed(&certs, "site", &["site.test"]);
        assert_ne!(renewed.der, old.der);
        sluice.reload(&body);
        assert_eq!(tls::served_certificate(web, "site.test").await, renewed.der);

        // The connection opened before the reload still works, on its original certificate.
        let (status, _) = get_over(&mut open, "site.test", "/after").await;
        assert!(status.contains(" 200 "), "{status}");
        let served = open.get_ref().1.peer_certificates().expect("peer chain")[0].to_vec();
        assert_eq!(served, old.der);
    });
}

#[test]
fn bad_certificate_is_rejected_with_its_position_and_old_one_keeps_serving() {
    let certs = ScratchDir::new();
    let good = tls::self_signed(&certs, "good", &["good.test"]);
    let other = tls::self_signed(&certs, "other", &["other.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&tls_config(web, &[files(&good)], backend.address));
    let generation = sluice.generation();

    // The key of another certificate: a mismatch found while loading.
    sluice.write_config(&tls_config(
        web,
        &[(&good.cert_path, &other.key_path)],
        backend.address,
    ));
    sluice.sighup();
    wait_until("the rejected reload to be logged", READY_TIMEOUT, || {
        sluice.stderr().contains("reload (SIGHUP) rejected")
    });
    let stderr = sluice.stderr();
    let config = sluice.config_path.display().to_string();
    assert!(
        stderr.contains(&format!("{config}:")) && stderr.contains("does not go with"),
        "{stderr}"
    );
    assert!(
        stderr.contains("listeners[0].tls.certificates[0].cert"),
        "{stderr}"
    );
    assert_eq!(sluice.generation(), generation);
    runtime().block_on(async {
        assert_eq!(tls::served_certificate(web, "good.test").await, good.der);
    });

    // `sluice -t` reports a missing file at FILE:LINE:COL.
    let missing = certs.0.join("missing.crt");
    let (output, path, _dir) = check_config(&format!(
        "admin: {{ listen: \"127.0.0.1:{}\" }}\n{}",
        free_port(),
        tls_config(web, &[(&missing, &good.key_path)], backend.address)
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("{}:2:", path.display()))
            && stderr.contains("cannot read certificate file"),
        "{stderr}"
    );
}

#[test]
fn renewed_certificate_files_are_picked_up_by_the_config_watch() {
    let certs = ScratchDir::new();
    let old = tls::self_signed(&certs, "site", &["site.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start_with_server(
        &tls_config(web, &[files(&old)], backend.address),
        "watch_config: true",
    );
    let generation = sluice.generation();

    // Only the certificate and key files change, not the config file.
    let renewed = tls::self_signed(&certs, "site", &["site.test"]);
    wait_until(
        "the renewed certificate to be loaded",
        READY_TIMEOUT,
        || sluice.generation() > generation,
    );
    runtime().block_on(async {
        assert_eq!(tls::served_certificate(web, "site.test").await, renewed.der);
    });
}

/// A PROXY protocol header comes before the TLS handshake; the client it names is the one
/// upstream sees (`listeners[].proxy_protocol`, issue #17).
#[test]
fn proxy_protocol_header_precedes_the_tls_handshake() {
    let certs = ScratchDir::new();
    let certificate = tls::self_signed(&certs, "web", &["web.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\", proxy_protocol: true, tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        certificate.cert_path.display(),
        certificate.key_path.display(),
        backend.address
    ));
    runtime().block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
        tcp.write_all(b"PROXY TCP4 198.51.100.20 127.0.0.1 40000 443\r\n")
            .await
            .expect("send header");
        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let name = rustls::pki_types::ServerName::try_from("web.test").expect("name");
        let mut stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("handshake after the header");
        let (status, _) = get_over(&mut stream, "web.test", "/").await;
        assert!(status.contains(" 200 "), "{status}");
    });
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-forwarded-for"), Some("198.51.100.20"));
}

/// `upstreams[].tls.subject_alt_names` (Pingora patch 0014): the endpoint's certificate is
/// verified against the listed names instead of `sni`, which is still sent; connections are
/// pooled apart per list.
#[test]
fn upstream_certificates_are_verified_against_subject_alt_names() {
    let dir = ScratchDir::new();
    let ca = tls::TestCa::new();
    let ca_file = dir.write("ca.pem", &ca.pem);
    // Identified by a SPIFFE ID only: no DNS name, so it cannot match any SNI.
    let spiffe = ca.issue_with_uris(
        &dir,
        "spiffe",
        &[],
        &["spiffe://cluster.test/ns/apps/sa/web"],
    );
    let spiffe_backend = tls::HttpsBackend::start("spiffe", &spiffe);
    let named = ca.issue(&dir, "named", &["web.apps.svc", "*.wild.test"]);
    let named_backend = tls::HttpsBackend::start("named", &named);
    let web = listen_address();
    let tls = |sni: &str, names: &str| {
        format!(
            "{{ sni: {sni}, ca_file: \"{}\", subject_alt_names: [{names}] }}",
            ca_file.display()
        )
    };
    let route = |name: &str| {
        format!(
            "  - {{ name: {name}, listener: web, paths: [{{ prefix: /{name}/ }}], upstream: {name} }}\n"
        )
    };
    let upstream = |name: &str, tls: String, endpoint: SocketAddr| {
        format!(
            "  - {{ name: {name}, tls: {tls}, endpoints: [\"{endpoint}\"], retry: {{ attempts: 1 }} }}\n"
        )
    };
    let names = ["uri", "other-uri", "either", "wildcard", "hostname"];
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\nroutes:\n{}upstreams:\n{}{}{}{}{}",
        names.iter().map(|n| route(n)).collect::<String>(),
        upstream(
            "uri",
            tls(
                "web.test",
                "{ uri: \"spiffe://cluster.test/ns/apps/sa/web\" }"
            ),
            spiffe_backend.address
        ),
        upstream(
            "other-uri",
            tls(
                "web.test",
                "{ uri: \"spiffe://cluster.test/ns/apps/sa/other\" }"
            ),
            spiffe_backend.address
        ),
        upstream(
            "either",
            tls("web.test", "{ uri: \"spiffe://x\" }, { dns: web.apps.svc }"),
            named_backend.address
        ),
        upstream(
            "wildcard",
            tls("web.test", "{ dns: a.wild.test }"),
            named_backend.address
        ),
        // The SNI is a name of the certificate, but the list is what authenticates.
        upstream(
            "hostname",
            tls("web.apps.svc", "{ dns: other.test }"),
            named_backend.address
        ),
    );
    let _sluice = Sluice::start(&body);

    // The SNI is still sent; the URI name authenticates.
    let ok = get(web, "/uri/a");
    assert_eq!(
        (ok.status, ok.backend(), ok.header("x-sni")),
        (200, "spiffe", Some("web.test"))
    );
    // The same address, SNI and CA as `uri`, whose verified connection is pooled by now,
    // and another SPIFFE ID: that connection is not reused, and the handshake fails.
    assert_eq!(get(web, "/other-uri/a").status, 502);
    assert_eq!(get(web, "/uri/b").status, 200);
    assert_eq!(get(web, "/either/a").status, 200);
    assert_eq!(get(web, "/wildcard/a").status, 200);
    assert_eq!(get(web, "/hostname/a").status, 502);
}

#[test]
fn upstreams_that_ask_for_a_client_certificate_get_the_configured_one() {
    let dir = ScratchDir::new();
    let ca = tls::TestCa::new();
    let ca_file = dir.write("ca.pem", &ca.pem);
    let server = ca.issue(&dir, "server", &["db.test"]);
    let client = ca.issue(&dir, "client", &["sluice.test"]);
    let backend = tls::HttpsBackend::start_verifying_clients("mtls", &server, &ca.pem);
    let web = listen_address();
    let tls = |certificate: &str| {
        format!(
            "{{ sni: db.test, ca_file: \"{}\"{certificate} }}",
            ca_file.display()
        )
    };
    let with_certificate = format!(
        ", client_certificate: {{ cert: \"{}\", key: \"{}\" }}",
        client.cert_path.display(),
        client.key_path.display()
    );
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - {{ name: with, listener: web, paths: [{{ prefix: /with/ }}], upstream: with }}\n\
         \x20 - {{ name: without, listener: web, paths: [{{ prefix: /without/ }}], upstream: without }}\n\
         upstreams:\n\
         \x20 - {{ name: with, tls: {}, endpoints: [\"{}\"], retry: {{ attempts: 1 }} }}\n\
         \x20 - {{ name: without, tls: {}, endpoints: [\"{}\"], retry: {{ attempts: 1 }} }}\n",
        tls(&with_certificate),
        backend.address,
        tls(""),
        backend.address,
    ));
    let response = Client::connect(web).request("GET", "/with/", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("x-client-cert"),
        Some(tls::sha256_hex(&client.der).as_str())
    );
    // Pooled apart: the same address and SNI without the certificate is refused.
    let response = Client::connect(web).request("GET", "/without/", &[]);
    assert_eq!(response.status, 502);
}
