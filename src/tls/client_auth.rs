//! Client certificates on a TLS listener (mTLS, ingress-nginx's `auth-tls-*`): which
//! certificates are accepted, and what the proxy learns of the one a client sent.
//!
//! [`ClientVerifier`] is the listener's: with a CA bundle it wraps rustls's WebPKI verifier
//! with nginx's `ssl_verify_depth`, and logs and counts every refusal (a refused handshake
//! ends with a TLS alert, so the client gets no HTTP answer: the log says why). Without one
//! (nginx's `optional_no_ca`) it asks for a certificate, checks only that the client holds
//! its key, and leaves the issuer to the routes, each of which may name its own CA bundle
//! ([`ChainVerifier`]): one listener serves hosts with different client CAs.
//! [`ClientCertificate`] is what the proxy learns of the one a client sent (recorded by
//! `super::handshake::HandshakeRecorder`): its chain, subject, issuer and fingerprint.

use crate::observe::metrics::METRICS;
use arc_swap::ArcSwapOption;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
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

/// Verifies client certificates: against a CA bundle, at most `verify_depth` certificates
/// above the client's; or, without one, only the client's possession of its key.
#[derive(Debug)]
pub struct ClientVerifier {
    /// `None`: any issuer (the routes check it).
    roots: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    mode: ClientAuthMode,
    listener: String,
    verify_depth: u8,
}

/// A WebPKI verifier of chains ending at one of `ca_certificates` (DER).
fn webpki_verifier(
    ca_certificates: &[Vec<u8>],
    provider: &Arc<CryptoProvider>,
    mode: ClientAuthMode,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for der in ca_certificates {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| format!("client CA certificate: {e}"))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("client certificate verifier: {e}"))
}

impl ClientVerifier {
    /// A verifier of certificates issued (through at most `verify_depth - 1`
    /// intermediates) by one of `ca_certificates` (DER); with none, of any certificate
    /// whose key the client holds (`mode` must then be optional).
    pub fn new(
        listener: &str,
        ca_certificates: &[Vec<u8>],
        mode: ClientAuthMode,
        verify_depth: u8,
    ) -> Result<Self, String> {
        let provider = Arc::new(super::crypto_provider());
        let roots = if ca_certificates.is_empty() {
            None
        } else {
            Some(
                webpki_verifier(ca_certificates, &provider, mode)
                    .map_err(|e| format!("listener {listener}: {e}"))?,
            )
        };
        Ok(Self {
            roots,
            provider,
            mode,
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
        self.mode == ClientAuthMode::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.roots
            .as_ref()
            .map_or(&[], |roots| roots.root_hint_subjects())
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
        let Some(roots) = &self.roots else {
            // No CA here: the routes check the issuer; the handshake's signature checks
            // prove the client holds the key.
            return Ok(ClientCertVerified::assertion());
        };
        match roots.verify_client_cert(end_entity, intermediates, now) {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How a TLS listener checks client certificates for a Gateway (`spec.tls.frontend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientValidation {
    /// The CAs (DER) a client certificate must chain to.
    pub ca_certificates: Vec<Vec<u8>>,
    /// `AllowInsecureFallback`: ask for a certificate, but admit a client without a valid one.
    pub insecure_fallback: bool,
}

impl ClientValidation {
    /// Validation that no client passes: a listener whose Gateway asks for client
    /// certificates it cannot check fails closed.
    pub fn refusing_all() -> Self {
        Self {
            ca_certificates: Vec::new(),
            insecure_fallback: false,
        }
    }
}

/// The client certificate checks a Gateway asks of a listener without `tls.client_auth`
/// (`spec.tls.frontend`), changed at run time: none (no certificate is asked for, as on
/// any TLS listener), a CA bundle that every client's certificate must chain to, or one
/// that is asked for but not required (`AllowInsecureFallback`). rustls asks the verifier
/// at each handshake, so a change applies to the next handshake; open connections keep
/// what they were admitted with.
#[derive(Debug)]
pub struct GatewayClientVerifier {
    listener: String,
    provider: Arc<CryptoProvider>,
    current: ArcSwapOption<ActiveValidation>,
}

/// A validation in force, with its verifier built once.
#[derive(Debug)]
struct ActiveValidation {
    model: Arc<ClientValidation>,
    /// `None`: the CA bundle could not be used, so no certificate is valid.
    roots: Option<Arc<dyn ClientCertVerifier>>,
}

impl GatewayClientVerifier {
    /// A verifier for `listener` that asks for no certificate until [`Self::replace`].
    pub fn new(listener: &str) -> Self {
        Self {
            listener: listener.to_string(),
            provider: Arc::new(super::crypto_provider()),
            current: ArcSwapOption::empty(),
        }
    }

    /// Checks `validation` from the next handshake on; builds a verifier only when it
    /// differs from the one in force.
    pub fn replace(&self, validation: Option<&Arc<ClientValidation>>) {
        let same = match (self.current.load().as_deref(), validation) {
            (None, None) => true,
            (Some(active), Some(wanted)) => active.model == *wanted,
            _ => false,
        };
        if same {
            return;
        }
        let next = validation.map(|wanted| {
            // No CA (a Gateway whose CA references cannot be resolved): no certificate is
            // valid, so the listener fails closed.
            let usable = !wanted.ca_certificates.is_empty();
            let roots = usable
                .then(|| {
                    webpki_verifier(
                        &wanted.ca_certificates,
                        &self.provider,
                        ClientAuthMode::Required,
                    )
                    .inspect_err(|e| {
                        log::error!(
                    "listener {}: the Gateway's client CA bundle cannot be used, so no client \
                     certificate is valid: {e}",
                    self.listener
                );
                    })
                    .ok()
                })
                .flatten();
            Arc::new(ActiveValidation {
                model: Arc::clone(wanted),
                roots,
            })
        });
        self.current.store(next);
    }

    fn count(&self, result: &str) {
        METRICS
            .tls_client_certificates
            .with_label_values(&[&self.listener, result])
            .inc();
    }
}

impl ClientCertVerifier for GatewayClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|active| !active.model.insecure_fallback)
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA names change at run time and cannot be lent from here; without hints a
        // client offers the certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let current = self.current.load();
        let Some(active) = current.as_ref() else {
            return Err(rustls::Error::General(
                "no client certificate is asked for".into(),
            ));
        };
        let verified = match &active.roots {
            Some(roots) => roots
                .verify_client_cert(end_entity, intermediates, now)
                .map_err(|e| format!("{} ({e})", subject_of(end_entity))),
            None => Err("the Gateway's client CA bundle cannot be used".into()),
        };
        match verified {
            Ok(verified) => {
                self.count("verified");
                Ok(verified)
            }
            Err(why) if active.model.insecure_fallback => {
                self.count("unverified");
                log::debug!(
                    "listener {}: client certificate not verified, admitted \
                     (AllowInsecureFallback): {why}",
                    self.listener
                );
                Ok(ClientCertVerified::assertion())
            }
            Err(why) => {
                self.count("rejected");
                log::warn!(
                    "listener {}: client certificate refused: {why}",
                    self.listener
                );
                Err(rustls::Error::General(why))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A route's own check of a client certificate's issuer (`require_client_certificate.ca`).
#[derive(Debug)]
pub struct ChainVerifier {
    /// `None`: refuses every certificate (its CA bundle could not be used).
    roots: Option<Arc<dyn ClientCertVerifier>>,
    ca_certificates: Vec<Vec<u8>>,
    verify_depth: u8,
}

impl ChainVerifier {
    pub fn new(ca_certificates: &[Vec<u8>], verify_depth: u8) -> Result<Self, String> {
        let provider = Arc::new(super::crypto_provider());
        Ok(Self {
            roots: Some(webpki_verifier(
                ca_certificates,
                &provider,
                ClientAuthMode::Required,
            )?),
            ca_certificates: ca_certificates.to_vec(),
            verify_depth,
        })
    }

    /// A verifier that accepts no certificate: a route whose CA bundle rustls refused
    /// fails closed.
    pub fn refusing(ca_certificates: &[Vec<u8>], verify_depth: u8) -> Self {
        Self {
            roots: None,
            ca_certificates: ca_certificates.to_vec(),
            verify_depth,
        }
    }

    /// Whether this verifier checks against `ca_certificates` at `verify_depth`.
    pub fn is_for(&self, ca_certificates: &[Vec<u8>], verify_depth: u8) -> bool {
        self.ca_certificates == ca_certificates && self.verify_depth == verify_depth
    }

    /// Whether `certificate`'s chain ends at one of this verifier's CAs within its depth.
    pub fn verifies(&self, certificate: &ClientCertificate) -> bool {
        let (Some(roots), Some((leaf, intermediates))) =
            (&self.roots, certificate.chain.split_first())
        else {
            return false;
        };
        intermediates.len() < usize::from(self.verify_depth)
            && roots
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .is_ok()
    }
}

fn subject_of(der: &[u8]) -> String {
    match X509Certificate::from_der(der) {
        Ok((_, certificate)) => format!("subject {:?}", rfc2253(certificate.subject())),
        Err(_) => "an unparsable certificate".into(),
    }
}

/// What the proxy knows of a connection's client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The listener's CA verified it (else only the routes' may).
    pub verified: bool,
    /// As the client sent it: its certificate first, then intermediates.
    pub chain: Arc<[CertificateDer<'static>]>,
    /// RFC 2253, as nginx's `$ssl_client_s_dn`: `CN=client,O=Example`.
    pub subject: String,
    pub issuer: String,
    /// SHA-1 of the DER, lower-case hex, as nginx's `$ssl_client_fingerprint`.
    pub fingerprint: String,
}

impl ClientCertificate {
    /// Reads a client's `chain` (DER, its certificate first); `None` if that does not parse.
    pub fn from_chain(chain: &[CertificateDer<'static>], verified: bool) -> Option<Self> {
        let der = chain.first()?.as_ref();
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let mut fingerprint = String::with_capacity(40);
        for byte in digest.as_ref() {
            let _ = write!(fingerprint, "{byte:02x}");
        }
        Some(Self {
            verified,
            chain: chain.into(),
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
        let recorded = ClientCertificate::from_chain(&[CertificateDer::from(der)], true).unwrap();
        assert_eq!(recorded.subject, "CN=client-1,O=Example\\, Inc.");
        assert_eq!(recorded.issuer, recorded.subject, "self-signed");
        assert_eq!(recorded.fingerprint.len(), 40);
        assert!(recorded.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        let garbage = CertificateDer::from(b"garbage".to_vec());
        assert!(ClientCertificate::from_chain(&[garbage], true).is_none());
        assert!(ClientCertificate::from_chain(&[], true).is_none());
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

    fn ca_and_leaf() -> (Vec<u8>, ClientCertificate) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["client.test".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let chain = [CertificateDer::from(leaf.der().to_vec())];
        (
            ca.der().to_vec(),
            ClientCertificate::from_chain(&chain, false).unwrap(),
        )
    }

    #[test]
    fn a_route_takes_certificates_of_its_own_ca_only() {
        let (ca, leaf) = ca_and_leaf();
        let (other_ca, other_leaf) = ca_and_leaf();
        let verifier = ChainVerifier::new(std::slice::from_ref(&ca), 1).unwrap();
        assert!(verifier.verifies(&leaf));
        assert!(!verifier.verifies(&other_leaf));
        assert!(verifier.is_for(std::slice::from_ref(&ca), 1));
        assert!(!verifier.is_for(&[other_ca], 1));
        assert!(!ChainVerifier::refusing(std::slice::from_ref(&ca), 1).verifies(&leaf));
        let mut padded = leaf.clone();
        padded.chain = [leaf.chain[0].clone(), CertificateDer::from(ca)].into();
        assert!(!verifier.verifies(&padded), "deeper than verify_depth 1");
    }
}
