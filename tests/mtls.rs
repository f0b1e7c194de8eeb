//! Client certificates (mTLS) through the real binary (issue #17): `required` and
//! `optional` listeners, certificates from the configured CA and from another one, and the
//! headers that tell the upstream who the client is.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use support::tls::{self, TestCa, TestCertificate};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One `GET /` over TLS with `config`: the status line and the body, or the error that
/// ended the exchange (a refused handshake).
fn get(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    headers: &str,
) -> Result<(String, String), String> {
    get_path(address, config, "/", headers)
}

/// `GET path` on `host` over TLS with `config`; the body parsed as the echo backend's JSON.
fn echo(
    address: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    host: &str,
) -> Result<(String, serde_json::Value), String> {
    let (status, body) = get_path(address, config.clone(), "/", &format!("host: {host}\r\n"))?;
    Ok((status, serde_json::from_str(&body).unwrap_or_default()))
}

/// Like [`get`], for `path`.
fn get_path(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &str,
) -> Result<(String, String), String> {
    runtime().block_on(async {
        // The name asked for in TLS is the one of the request, as a browser sends it.
        let sni = headers
            .strip_prefix("host: ")
            .and_then(|h| h.split("\r\n").next())
            .unwrap_or("web.test");
        let mut stream = tls::connect(address, sni, config)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let host = if headers.starts_with("host:") {
            ""
        } else {
            "host: web.test\r\n"
        };
        let request = format!("GET {path} HTTP/1.1\r\n{host}{headers}connection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or(format!("no answer: {text:?}"))?;
        Ok((
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        ))
    })
}

fn listener(
    name: &str,
    listen: SocketAddr,
    server: &TestCertificate,
    ca: &std::path::Path,
    mode: &str,
) -> String {
    format!(
        "  - {{ name: {name}, listen: \"{listen}\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}], client_auth: {{ ca: \"{}\", mode: {mode} }} }} }}\n",
        server.cert_path.display(),
        server.key_path.display(),
        ca.display()
    )
}

fn sha1_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn required_and_optional_client_certificates() {
    let dir = ScratchDir::new();
    let ca = TestCa::new();
    let ca_file = dir.write("clients-ca.pem", &ca.pem);
    let server = tls::self_signed(&dir, "server", &["web.test"]);
    let client = ca.issue(&dir, "client", &["client.test"]);
    let stranger = TestCa::new().issue(&dir, "stranger", &["stranger.test"]);
    let backend = Backend::start("app", Behavior::Echo);
    let (required, optional) = (listen_address(), listen_address());
    let sluice = Sluice::start(&format!(
        "listeners:\n{}{}\
         routes:\n\
         \x20 - {{ name: required, listener: required, upstream: app }}\n\
         \x20 - {{ name: optional, listener: optional, upstream: app }}\n\
         \x20 - {{ name: partners, listener: optional, paths: [{{ prefix: /partners }}], upstream: app, require_client_certificate: true }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        listener("required", required, &server, &ca_file, "required"),
        listener("optional", optional, &server, &ca_file, "optional"),
        backend.address
    ));
    let anonymous = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let with_client = tls::client_config_with_certificate(&client);
    let with_stranger = tls::client_config_with_certificate(&stranger);
    let spoof = "ssl-client-subject-dn: CN=admin\r\nssl-client-verify: SUCCESS\r\n";

    // Required: the CA's client is served, and the upstream learns who it is.
    let (status, body) = get(required, with_client.clone(), spoof).expect("served");
    assert!(status.contains(" 200 "), "{status}");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("echo");
    let headers = &seen["headers"];
    assert_eq!(headers["ssl-client-verify"], "SUCCESS");
    let subject = headers["ssl-client-subject-dn"]
        .as_str()
        .unwrap_or_default();
    assert!(
        subject.starts_with("CN=") && subject != "CN=admin",
        "{subject}"
    );
    assert_eq!(headers["ssl-client-issuer-dn"], "CN=sluice test CA");
    assert_eq!(headers["ssl-client-fingerprint"], sha1_hex(&client.der));
    // No certificate, or one from another CA: refused in the handshake, never proxied.
    let before = backend.requests().len();
    assert!(get(required, anonymous.clone(), "").is_err());
    assert!(get(required, with_stranger.clone(), "").is_err());
    assert_eq!(backend.requests().len(), before);
    assert!(
        sluice
            .stderr()
            .contains("listener required: client certificate refused"),
        "the refusal is logged with the listener"
    );
    assert_eq!(
        sluice.metric(
            "sluice_tls_client_certificates_total{listener=\"required\",result=\"rejected\"}"
        ),
        1.0
    );

    // Optional: a client without a certificate is served as NONE, and cannot pose as one.
    let (status, body) = get(optional, anonymous, spoof).expect("served");
    assert!(status.contains(" 200 "), "{status}");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("echo");
    assert_eq!(seen["headers"]["ssl-client-verify"], "NONE");
    assert!(seen["headers"].get("ssl-client-subject-dn").is_none());
    let (_, body) = get(optional, with_client, "").expect("served");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("echo");
    assert_eq!(seen["headers"]["ssl-client-verify"], "SUCCESS");
    // A route may require one on an optional listener: 400, as nginx answers.
    let anonymous = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let (status, body) = get_path(optional, anonymous, "/partners/x", "").expect("answered");
    assert!(status.contains(" 400 "), "{status}");
    assert!(body.contains("400"), "{body}");
    let with_client = tls::client_config_with_certificate(&client);
    let (status, _) = get_path(optional, with_client, "/partners/x", "").expect("served");
    assert!(status.contains(" 200 "), "{status}");
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"400\",reason=\"client_certificate_required\",route=\"partners\"}",
        1.0,
    );
    // A certificate it sends must still be valid.
    assert!(get(optional, with_stranger, "").is_err());
}

#[test]
fn routes_check_certificates_against_their_own_cas() {
    let dir = ScratchDir::new();
    let (partners_ca, suppliers_ca) = (TestCa::new(), TestCa::new());
    let partners_file = dir.write("partners-ca.pem", &partners_ca.pem);
    let suppliers_file = dir.write("suppliers-ca.pem", &suppliers_ca.pem);
    let server = tls::self_signed(&dir, "server", &["web.test"]);
    let partner = tls::client_config_with_certificate(&partners_ca.issue(&dir, "p", &["p.test"]));
    let supplier = tls::client_config_with_certificate(&suppliers_ca.issue(&dir, "s", &["s.test"]));
    let anonymous = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let backend = Backend::start("app", Behavior::Echo);
    let listen = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: web, listen: \"{listen}\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}], client_auth: {{ mode: optional }} }} }}\n\
         routes:\n\
         \x20 - {{ name: partners, listener: web, hosts: [partners.test], upstream: app, require_client_certificate: {{ ca: \"{}\" }} }}\n\
         \x20 - {{ name: suppliers, listener: web, hosts: [suppliers.test], upstream: app, require_client_certificate: {{ ca: \"{}\" }} }}\n\
         \x20 - {{ name: open, listener: web, upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        server.cert_path.display(),
        server.key_path.display(),
        partners_file.display(),
        suppliers_file.display(),
        backend.address
    ));
    let status = |config: &Arc<rustls::ClientConfig>, host: &str| {
        echo(listen, config, host)
            .map(|(status, _)| status)
            .unwrap_or_else(|e| e)
    };
    // Each host takes certificates of its own CA only.
    assert!(status(&partner, "partners.test").contains(" 200 "));
    assert!(status(&supplier, "suppliers.test").contains(" 200 "));
    assert!(status(&supplier, "partners.test").contains(" 400 "));
    assert!(status(&partner, "suppliers.test").contains(" 400 "));
    assert!(status(&anonymous, "partners.test").contains(" 400 "));
    let (_, seen) = echo(listen, &partner, "partners.test").expect("served");
    assert_eq!(seen["headers"]["ssl-client-verify"], "SUCCESS");
    assert!(seen["headers"]["ssl-client-subject-dn"].is_string());
    // Elsewhere a certificate no CA of the listener checked is not vouched for.
    let (status, seen) = echo(listen, &partner, "other.test").expect("served");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(seen["headers"]["ssl-client-verify"], "FAILED");
    assert!(seen["headers"].get("ssl-client-subject-dn").is_none());
    let (_, seen) = echo(listen, &anonymous, "other.test").expect("served");
    assert_eq!(seen["headers"]["ssl-client-verify"], "NONE");
}
