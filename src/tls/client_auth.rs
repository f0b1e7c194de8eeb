//! Client certificates on a TLS listener (mTLS, ingress-nginx's `auth-tls-*`): which
//! certificates are accepted, and what the proxy learns of the one a client sent.
//!
//! [`ClientVerifier`] wraps rustls's WebPKI verifier with nginx's `ssl_verify_depth` and a
//! log line and a count for every refusal (a refused handshake ends with a TLS alert, so
//! the client gets no HTTP answer: the log says why). [`ClientCertificateRecorder`] runs
//! when a handshake completes and keeps the verified certificate's subject, issuer and
//! fingerprint in the connection's TLS digest, for the proxy to pass upstream.

use crate::observe::metrics::METRICS;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::any::Any;
use std::fmt::Write as _;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// What a client certificate must be on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A client without a valid certificate is refused in the handshake.
    Required,
    /// A client may send none; one it sends must be valid.
    Optional,
}

/// Verifies client certificates against a CA bundle, at most `verify_depth` certificates
/// above the client's.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    listener: String,
    verify_depth: u8,
}

impl ClientVerifier {
    /// A verifier of certificates issued (through at most `verify_depth - 1`
    /// intermediates) by one of `ca_certificates` (DER).
    pub fn new(
        listener: &str,
        ca_certificates: &[Vec<u8>],
        mode: ClientAuthMode,
        verify_depth: u8,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for der in ca_certificates {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("listener {listener}: client CA certificate: {e}"))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(super::crypto_provider()),
        );
        let builder = match mode {
            ClientAuthMode::Required => builder,
            ClientAuthMode::Optional => builder.allow_unauthenticated(),
        };
        let inner = builder
            .build()
            .map_err(|e| format!("listener {listener}: client certificate verifier: {e}"))?;
        Ok(Self {
            inner,
            listener: listener.to_string(),
            verify_depth,
        })
    }

    fn count(&self, result: &str) {
        METRICS
            .tls_client_certificates
            .with_label_values(&[&self.listener, result])
            .inc();
    }

    fn refuse(&self, why: String) -> rustls::Error {
        self.count("rejected");
        log::warn!(
            "listener {}: client certificate refused: {why}",
            self.listener
        );
        rustls::Error::General(why)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // nginx's depth counts the certificates above the client's, the CA's included.
        if intermediates.len() >= usize::from(self.verify_depth) {
            return Err(self.refuse(format!(
                "chain of {} intermediate certificate(s) is deeper than verify_depth {}",
                intermediates.len(),
                self.verify_depth
            )));
        }
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => {
                self.count("verified");
                Ok(verified)
            }
            Err(e) => Err(self.refuse(format!("{} ({e})", subject_of(end_entity)))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn subject_of(der: &[u8]) -> String {
    match X509Certificate::from_der(der) {
        Ok((_, certificate)) => format!("subject {:?}", rfc2253(certificate.subject())),
        Err(_) => "an unparsable certificate".into(),
    }
}

/// What the proxy knows of a connection's verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// RFC 2253, as nginx's `$ssl_client_s_dn`: `CN=client,O=Example`.
    pub subject: String,
    pub issuer: String,
    /// SHA-1 of the DER, lower-case hex, as nginx's `$ssl_client_fingerprint`.
    pub fingerprint: String,
}

impl ClientCertificate {
    /// Reads a certificate (DER); `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let mut fingerprint = String::with_capacity(40);
        for byte in digest.as_ref() {
            let _ = write!(fingerprint, "{byte:02x}");
        }
        Some(Self {
            subject: rfc2253(certificate.subject()),
            issuer: rfc2253(certificate.issuer()),
            fingerprint,
        })
    }
}

/// A name as RFC 2253 writes it: the last RDN first, `,` between RDNs, `+` inside one,
/// `,`, `+`, `"`, `\`, `<`, `>`, `;` escaped.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let key = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = attribute.as_str().unwrap_or_default();
                    let mut escaped = String::with_capacity(value.len());
                    for c in value.chars() {
                        if ",+\"\\<>;".contains(c) {
                            escaped.push('\\');
                        }
                        escaped.push(c);
                    }
                    format!("{key}={escaped}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// Records the verified client certificate of each handshake in the connection's TLS
/// digest (read back with `SslDigest::extension`).
#[derive(Debug, Default)]
pub struct ClientCertificateRecorder;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for ClientCertificateRecorder {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let certificate = ClientCertificate::from_der(tls.peer_certificate_der()?)?;
        Some(Arc::new(certificate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_and_fingerprint_are_written_as_nginx_does() {
        let der = certificate(&[
            (rcgen::DnType::OrganizationName, "Example, Inc."),
            (rcgen::DnType::CommonName, "client-1"),
        ]);
        let recorded = ClientCertificate::from_der(&der).unwrap();
        assert_eq!(recorded.subject, "CN=client-1,O=Example\\, Inc.");
        assert_eq!(recorded.issuer, recorded.subject, "self-signed");
        assert_eq!(recorded.fingerprint.len(), 40);
        assert!(recorded.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ClientCertificate::from_der(b"garbage").is_none());
    }

    #[test]
    fn chains_deeper_than_verify_depth_are_refused_before_verification() {
        let ca = certificate(&[(rcgen::DnType::CommonName, "ca")]);
        let leaf = CertificateDer::from(certificate(&[(rcgen::DnType::CommonName, "leaf")]));
        let intermediate = CertificateDer::from(certificate(&[(rcgen::DnType::CommonName, "i")]));
        let verifier = ClientVerifier::new("web", &[ca], ClientAuthMode::Required, 1).unwrap();
        let refused = verifier
            .verify_client_cert(&leaf, &[intermediate], UnixTime::now())
            .unwrap_err();
        assert!(refused.to_string().contains("deeper than verify_depth 1"));
        // Within the depth, the CA decides (this leaf is self-signed, so it is refused).
        let refused = verifier
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .unwrap_err();
        assert!(refused.to_string().contains("CN=leaf"), "{refused}");
    }
}
