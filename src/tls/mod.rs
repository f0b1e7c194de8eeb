//! TLS termination: loading certificate files, choosing a certificate by SNI, and swapping
//! certificates on reload without touching open connections.
//!
//! A listener's certificates are a [`CertificateSet`], loaded (and so checked) during config
//! validation. The listener's rustls config holds an [`SniResolver`] whose set is replaced on
//! reload: rustls asks the resolver once per handshake, so connections already established
//! keep the certificate they were served, and new ones get the new set.

pub mod client_auth;
pub mod client_hello;
pub mod handshake;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One loaded certificate chain with its key and the DNS names it is valid for.
#[derive(Clone)]
pub struct LoadedCertificate {
    /// Lower-case DNS names from the leaf's subjectAltName (or its CN when it has none);
    /// wildcards keep their `*.` prefix.
    pub names: Vec<String>,
    /// When the leaf expires, as text for logs and `/config`.
    pub not_after: String,
    key: Arc<CertifiedKey>,
}

impl LoadedCertificate {
    /// Loads the PEM chain at `cert` and the PEM private key at `key`, checking that the key
    /// belongs to the leaf certificate. Reads files: not on an async worker thread.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let (chain_pem, key_pem, cert_name, key_name) = read_pem_pair(cert, key)?;
        Self::from_pem(&chain_pem, &key_pem, &cert_name, &key_name)
    }

    /// The certificate of a PEM chain and PEM private key held in memory (a Kubernetes
    /// Secret's `tls.crt` and `tls.key`, say); `cert_name` and `key_name` say where they come
    /// from in errors.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{cert_name} is not valid PEM: {e}"))?;
        let Some(leaf) = chain.first() else {
            return Err(format!("{cert_name} holds no CERTIFICATE block"));
        };
        let (names, not_after) =
            names_of(leaf.as_ref()).map_err(|e| format!("{cert_name}: {e}"))?;
        let private_key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("cannot read a private key from {key_name}: {e}"))?;
        let certified = CertifiedKey::from_der(chain, private_key, &crypto_provider())
            .map_err(|e| format!("{key_name} does not go with {cert_name}: {e}"))?;
        Ok(Self {
            names,
            not_after,
            key: Arc::new(certified),
        })
    }
}

/// The PEM files `cert` and `key`, with the names errors give them.
fn read_pem_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>, String, String), String> {
    let chain_pem = std::fs::read(cert)
        .map_err(|e| format!("cannot read certificate file {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let cert_name = format!("certificate file {}", cert.display());
    let key_name = format!("key {}", key.display());
    Ok((chain_pem, key_pem, cert_name, key_name))
}

/// [`chain_and_key_from_pem`] of the PEM files `cert` and `key`. Reads files: not on an
/// async worker thread.
pub fn load_chain_and_key(cert: &Path, key: &Path) -> Result<(Vec<Vec<u8>>, Vec<u8>), String> {
    let (chain_pem, key_pem, cert_name, key_name) = read_pem_pair(cert, key)?;
    chain_and_key_from_pem(&chain_pem, &key_pem, &cert_name, &key_name)
}

/// The DER chain and private key of a PEM chain and key that go together: a certificate
/// sluice presents as a client (to backends that ask for one). `cert_name` and `key_name`
/// say where they come from in errors.
pub fn chain_and_key_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), String> {
    // Checks the chain, the key and that they go together.
    LoadedCertificate::from_pem(chain_pem, key_pem, cert_name, key_name)?;
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_name} is not valid PEM: {e}"))?;
    // Every certificate, not only the leaf: Pingora parses them all when it connects.
    for (i, der) in chain.iter().enumerate() {
        X509Certificate::from_der(der)
            .map_err(|e| format!("{cert_name}: certificate {} cannot be parsed: {e}", i + 1))?;
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("cannot read a private key from {key_name}: {e}"))?;
    Ok((chain, key.secret_der().to_vec()))
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The DER certificates of a PEM CA bundle (`upstreams[].tls.ca_file`).
pub fn load_ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file {} is not valid PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "CA file {} holds no CERTIFICATE block",
            path.display()
        ));
    }
    for (i, der) in certificates.iter().enumerate() {
        X509Certificate::from_der(der).map_err(|e| {
            format!(
                "CA file {}: certificate {} cannot be parsed: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(certificates)
}

/// The DER certificates of a PEM CA bundle held in memory (a Secret's `ca.crt`); `name` says
/// where it comes from in errors.
pub fn parse_ca_certificates(pem: &[u8], name: &str) -> Result<Vec<Vec<u8>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name} is not valid PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{name} holds no CERTIFICATE block"));
    }
    for (i, der) in certificates.iter().enumerate() {
        X509Certificate::from_der(der)
            .map_err(|e| format!("{name}: certificate {} cannot be parsed: {e}", i + 1))?;
    }
    Ok(certificates)
}

/// The crypto provider sluice's TLS uses: ring, as in Pingora's rustls build.
pub fn crypto_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The leaf's DNS names and its expiry.
fn names_of(leaf_der: &[u8]) -> Result<(Vec<String>, String), String> {
    let (_, leaf) =
        X509Certificate::from_der(leaf_der).map_err(|e| format!("cannot parse the leaf: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Certificates without subjectAltName are matched by their common name, as clients did.
        for cn in leaf.subject().iter_common_name() {
            if let Ok(text) = cn.as_str() {
                names.push(text.to_ascii_lowercase());
            }
        }
    }
    Ok((names, leaf.validity().not_after.to_string()))
}

/// The certificates of one listener, indexed by name.
pub struct CertificateSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Served when SNI is missing or matches no name: the first certificate listed.
    default: Arc<CertifiedKey>,
}

impl CertificateSet {
    /// Indexes `certificates` in order: when two claim the same name, the first listed wins.
    /// `None` when there is no certificate.
    pub fn new(certificates: &[LoadedCertificate]) -> Option<Self> {
        let default = certificates.first()?.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for certificate in certificates {
            for name in &certificate.names {
                let (index, name) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                index
                    .entry(name.to_string())
                    .or_insert_with(|| certificate.key.clone());
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for a client that sent `server_name` (SNI): an exact name first,
    /// then a wildcard covering exactly one more label, then the default.
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return key.clone();
            }
        }
        self.default.clone()
    }
}

/// The certificate resolver of one TLS listener; its set is replaced on reload.
pub struct SniResolver {
    certificates: ArcSwap<CertificateSet>,
}

impl SniResolver {
    /// A resolver serving `certificates`.
    pub fn new(certificates: CertificateSet) -> Self {
        Self {
            certificates: ArcSwap::from_pointee(certificates),
        }
    }

    /// Serves `certificates` to handshakes from now on.
    pub fn replace(&self, certificates: CertificateSet) {
        self.certificates.store(Arc::new(certificates));
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificates.load().select(client_hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[&str]) -> LoadedCertificate {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("generate certificate");
        let dir = std::env::temp_dir().join(format!(
            "sluice-tls-unit-{}-{}",
            std::process::id(),
            names.join("_").replace('*', "star")
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).expect("write cert");
        std::fs::write(&key, generated.key_pair.serialize_pem()).expect("write key");
        LoadedCertificate::load(&cert, &key).expect("load")
    }

    fn leaf_names(key: &CertifiedKey) -> Vec<String> {
        names_of(key.cert[0].as_ref()).expect("names").0
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let set = CertificateSet::new(&[
            certificate(&["default.test"]),
            certificate(&["shop.example.com"]),
            certificate(&["*.example.com"]),
        ])
        .expect("set");
        assert_eq!(
            leaf_names(&set.select(Some("shop.example.com"))),
            ["shop.example.com"]
        );
        assert_eq!(
            leaf_names(&set.select(Some("API.Example.com."))),
            ["*.example.com"]
        );
        // A wildcard covers one label only.
        assert_eq!(
            leaf_names(&set.select(Some("a.b.example.com"))),
            ["default.test"]
        );
        assert_eq!(
            leaf_names(&set.select(Some("example.com"))),
            ["default.test"]
        );
        assert_eq!(leaf_names(&set.select(None)), ["default.test"]);
    }

    #[test]
    fn first_listed_certificate_wins_a_shared_name() {
        let set = CertificateSet::new(&[
            certificate(&["first.test", "shared.test"]),
            certificate(&["shared.test", "second.test"]),
        ])
        .expect("set");
        assert_eq!(
            leaf_names(&set.select(Some("shared.test"))),
            ["first.test", "shared.test"]
        );
    }

    #[test]
    fn every_certificate_of_a_client_chain_must_parse() {
        let leaf =
            rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).expect("leaf");
        let cert = leaf.cert.pem();
        let key = leaf.key_pair.serialize_pem();
        let (chain, _) = chain_and_key_from_pem(cert.as_bytes(), key.as_bytes(), "cert", "key")
            .expect("a good chain");
        assert_eq!(chain.len(), 1);
        // A second block that is base64 but no certificate: refused here, not in Pingora.
        let junk = format!("{cert}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let refused = chain_and_key_from_pem(junk.as_bytes(), key.as_bytes(), "cert", "key")
            .expect_err("junk in the chain");
        assert!(refused.contains("certificate 2"), "{refused}");
    }

    #[test]
    fn mismatched_key_and_garbage_are_explained() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).expect("a");
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).expect("b");
        let dir = std::env::temp_dir().join(format!("sluice-tls-unit-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("a.pem");
        let wrong_key = dir.join("b.key");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&cert, a.cert.pem()).expect("write");
        std::fs::write(&wrong_key, b.key_pair.serialize_pem()).expect("write");
        std::fs::write(&garbage, "not a certificate\n").expect("write");

        let mismatch = LoadedCertificate::load(&cert, &wrong_key).expect_err("mismatch");
        assert!(mismatch.contains("does not go with"), "{mismatch}");
        let empty = LoadedCertificate::load(&garbage, &wrong_key).expect_err("garbage");
        assert!(empty.contains("no CERTIFICATE"), "{empty}");
        let missing =
            LoadedCertificate::load(&dir.join("missing.pem"), &wrong_key).expect_err("missing");
        assert!(
            missing.contains("cannot read certificate file"),
            "{missing}"
        );
        assert!(CertificateSet::new(&[]).is_none());
    }
}
