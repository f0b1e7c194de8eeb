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

/// Like [`get`], for `path`.
fn get_path(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &str,
) -> Result<(String, String), String> {
    runtime().block_on(async {
        let mut stream = tls::connect(address, "web.test", config)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: web.test\r\n{headers}connection: close\r\n\r\n");
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
