//! TLS test support: certificates generated per run with rcgen, TLS clients that report
//! which certificate they were served, and an HTTP/2-over-TLS backend.

use super::ScratchDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// A certificate and key written to files, with the certificate's DER to compare against
/// what a server sends.
pub struct TestCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test CA that signs leaf certificates.
pub struct TestCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test CA");
        let certificate = params.self_signed(&key).expect("CA certificate");
        let pem = certificate.pem();
        Self {
            certificate,
            key,
            pem,
        }
    }

    /// A leaf for `names`, signed by this CA, written as `stem.crt`/`stem.key` in `dir`.
    pub fn issue(&self, dir: &ScratchDir, stem: &str, names: &[&str]) -> TestCertificate {
        self.issue_with_uris(dir, stem, names, &[])
    }

    /// A leaf for DNS (or IP) `names` and URI names `uris` (SPIFFE IDs), signed by this CA,
    /// written as `stem.crt`/`stem.key` in `dir`.
    pub fn issue_with_uris(
        &self,
        dir: &ScratchDir,
        stem: &str,
        names: &[&str],
        uris: &[&str],
    ) -> TestCertificate {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        for uri in uris {
            let uri = rcgen::Ia5String::try_from(*uri).expect("an ASCII URI");
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("sign leaf");
        write(
            dir,
            stem,
            certificate.pem(),
            key.serialize_pem(),
            certificate,
        )
    }
}

/// A self-signed certificate for `names`, written as `stem.crt`/`stem.key` in `dir`.
pub fn self_signed(dir: &ScratchDir, stem: &str, names: &[&str]) -> TestCertificate {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("generate certificate");
    write(
        dir,
        stem,
        generated.cert.pem(),
        generated.key_pair.serialize_pem(),
        generated.cert,
    )
}

fn write(
    dir: &ScratchDir,
    stem: &str,
    cert_pem: String,
    key_pem: String,
    certificate: rcgen::Certificate,
) -> TestCertificate {
    TestCertificate {
        cert_path: dir.write(&format!("{stem}.crt"), &cert_pem),
        key_path: dir.write(&format!("{stem}.key"), &key_pem),
        der: certificate.der().to_vec(),
        cert_pem,
        key_pem,
    }
}

/// Accepts any server certificate: the tests inspect what was served instead.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client config that offers `alpn` and only the given TLS `versions`.
pub fn client_config(
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config (ALPN `http/1.1`) that presents `certificate` when the server asks.
pub fn client_config_with_certificate(certificate: &TestCertificate) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from(certificate.der.clone())];
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(certificate.key_pem.as_bytes())
        .map(|k: PrivateKeyDer<'static>| k)
        .expect("key PEM");
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `address` sending `sni` (an IP literal sends no SNI).
pub async fn connect(
    address: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The leaf certificate (DER) `address` serves to a client sending `sni`.
pub async fn served_certificate(address: SocketAddr, sni: &str) -> Vec<u8> {
    let config = client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let stream = connect(address, sni, config).await.expect("TLS handshake");
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec())
        .expect("a server certificate")
}

/// Sends one HTTP/1.1 GET over `stream` and returns the status line and the body.
pub async fn get_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    request_over(stream, request.as_bytes()).await
}

/// Sends the raw HTTP/1.1 `request` over `stream` and returns the status line and the body
/// (which must have a content-length).
pub async fn request_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> (String, String) {
    stream.write_all(request).await.expect("write request");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.expect("read response");
        assert!(n > 0, "connection closed before a full response");
        received.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&received).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("content-length");
        if received.len() >= end + 4 + length {
            let status = text.lines().next().unwrap_or_default().to_string();
            return (status, text[end + 4..end + 4 + length].to_string());
        }
    }
}

/// A TLS server config for an upstream backend with `certificate`, ALPN `h2`.
pub fn server_config(certificate: &TestCertificate) -> Arc<rustls::ServerConfig> {
    let chain = vec![CertificateDer::from(certificate.der.clone())];
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(certificate.key_pem.as_bytes())
        .map(|k: PrivateKeyDer<'static>| k)
        .expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS backend with its own certificate that answers each HTTP/1.1 request (keeping the
/// connection open) with its name and the server name the client sent, in the body
/// (`NAME sni=SNI`) and in headers (`x-backend`, `x-sni`, and the request's `x-path`).
pub struct HttpsBackend {
    pub address: SocketAddr,
}

impl HttpsBackend {
    /// Starts the backend on its own thread.
    pub fn start(name: &'static str, certificate: &TestCertificate) -> Self {
        let mut config = (*server_config(certificate)).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_with(name, config)
    }

    /// As [`HttpsBackend::start`], refusing clients without a certificate issued by
    /// `client_ca` (PEM); its answers name the certificate in `x-client-cert` (the SHA-256
    /// of its DER, in hex).
    pub fn start_verifying_clients(
        name: &'static str,
        certificate: &TestCertificate,
        client_ca: &str,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for ca in <CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            client_ca.as_bytes(),
        ) {
            roots.add(ca.expect("client CA PEM")).expect("client CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let chain = vec![CertificateDer::from(certificate.der.clone())];
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(certificate.key_pem.as_bytes())
            .map(|k: PrivateKeyDer<'static>| k)
            .expect("key PEM");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_with(name, config)
    }

    fn start_with(name: &'static str, config: rustls::ServerConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TLS backend");
        let address = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("nonblocking");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let sni = stream.get_ref().1.server_name().unwrap_or("").to_string();
                        let client_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map_or_else(|| "none".to_string(), |leaf| sha256_hex(leaf.as_ref()));
                        let mut received = Vec::new();
                        let mut buffer = [0u8; 1024];
                        // Requests one after the other on the connection, until the client
                        // closes it; they carry no body.
                        loop {
                            let end = loop {
                                if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n")
                                {
                                    break i + 4;
                                }
                                match stream.read(&mut buffer).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                                }
                            };
                            let head: Vec<u8> = received.drain(..end).collect();
                            let path = String::from_utf8_lossy(&head)
                                .split_whitespace()
                                .nth(1)
                                .unwrap_or_default()
                                .to_string();
                            let body = format!("{name} sni={sni}");
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {name}\r\n\
                                 x-sni: {sni}\r\nx-path: {path}\r\n\
                                 x-client-cert: {client_cert}\r\n\r\n{body}",
                                body.len()
                            );
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        Self { address }
    }
}

/// An HTTP/2-over-TLS backend answering like a gRPC server: 200, `content-type:
/// application/grpc`, a body naming the request path and SNI, `grpc-status: 0` in trailers.
pub struct H2TlsBackend {
    pub address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl H2TlsBackend {
    /// Starts the backend with `certificate` on its own thread.
    pub fn start(certificate: &TestCertificate) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TLS backend");
        let address = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("nonblocking");
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(certificate));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                        super::h2_util::serve_grpc_like(tls, |path| format!("{path} via {sni}"))
                            .await;
                    });
                }
            });
        });
        Self { address, accepted }
    }

    /// TLS connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
