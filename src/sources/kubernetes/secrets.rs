//! Values read from Kubernetes Secrets, for every source: keys as bytes, TLS key pairs.

use crate::tls::LoadedCertificate;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

/// The bytes of `key` of a Secret (`data`, or `stringData` as written).
pub fn secret_bytes(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes().to_vec())
}

/// Every key of a Secret and its bytes.
pub fn secret_keys(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut keys: BTreeMap<String, Vec<u8>> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    keys.extend(
        secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    keys
}

/// The certificate of a `kubernetes.io/tls` Secret.
/// The DER chain and key of TLS Secret `namespace/name`, to present as a client.
pub fn client_certificate_of(
    secret: &Secret,
    namespace: &str,
    name: &str,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), String> {
    let cert_name = format!("Secret {namespace}/{name} tls.crt");
    let key_name = format!("Secret {namespace}/{name} tls.key");
    let chain = secret_bytes(secret, "tls.crt").ok_or_else(|| format!("{cert_name} is missing"))?;
    let key = secret_bytes(secret, "tls.key").ok_or_else(|| format!("{key_name} is missing"))?;
    crate::tls::chain_and_key_from_pem(&chain, &key, &cert_name, &key_name)
}

pub fn certificate_of(
    secret: &Secret,
    namespace: &str,
    name: &str,
) -> Result<LoadedCertificate, String> {
    let cert_name = format!("Secret {namespace}/{name} tls.crt");
    let key_name = format!("Secret {namespace}/{name} tls.key");
    let chain = secret_bytes(secret, "tls.crt").ok_or_else(|| format!("{cert_name} is missing"))?;
    let key = secret_bytes(secret, "tls.key").ok_or_else(|| format!("{key_name} is missing"))?;
    LoadedCertificate::from_pem(&chain, &key, &cert_name, &key_name)
}
