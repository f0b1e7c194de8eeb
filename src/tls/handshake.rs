//! What a TLS handshake tells the proxy about its connection: the server name the client
//! asked for (misdirected requests are told apart by it) and, on listeners that ask for one,
//! the client's certificate. [`HandshakeRecorder`] runs when a handshake completes and keeps
//! a [`Handshake`] in the connection's TLS digest (read back with `SslDigest::extension`).

use super::client_auth::ClientCertificate;
use crate::observe::metrics::METRICS;
use std::any::Any;
use std::sync::Arc;

/// One connection's handshake, as the proxy reads it for each request.
#[derive(Debug)]
pub struct Handshake {
    /// The server name (SNI) the client sent, lower-case.
    pub server_name: Option<String>,
    /// The certificate the client sent, on listeners that ask for one.
    pub client_certificate: Option<ClientCertificate>,
}

/// The listener's handshake callback.
#[derive(Debug)]
pub struct HandshakeRecorder {
    /// The listener's name, for `sluice_tls_handshakes_total`.
    pub listener: String,
    /// The listener asks clients for certificates.
    pub asks_client_certificate: bool,
    /// The listener has a CA bundle, so a certificate that got through is verified.
    pub verified_by_listener: bool,
}

/// Why a handshake failed, as a metric label, from what rustls said (Pingora passes its
/// error on as text). Unknown causes are `other`.
pub fn failure_reason(error: &str) -> &'static str {
    const REASONS: [(&str, &str); 9] = [
        ("peer sent no certificates", "no_client_certificate"),
        ("invalid peer certificate", "bad_client_certificate"),
        (
            "no server certificate chain resolved",
            "unknown_server_name",
        ),
        ("peer is incompatible", "incompatible"),
        ("received fatal alert", "alert_received"),
        ("received corrupt message", "not_tls"),
        ("peer misbehaved", "protocol_error"),
        ("received unexpected message", "protocol_error"),
        ("eof", "closed"),
    ];
    REASONS
        .iter()
        .find(|(text, _)| error.contains(text))
        .map_or("other", |(_, reason)| reason)
}

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for HandshakeRecorder {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let client_certificate = if self.asks_client_certificate {
            tls.peer_cert_chain_der()
                .and_then(|chain| ClientCertificate::from_chain(chain, self.verified_by_listener))
        } else {
            None
        };
        METRICS
            .tls_handshakes
            .with_label_values(&[&self.listener, "ok"])
            .inc();
        Some(Arc::new(Handshake {
            server_name: tls.server_name().map(str::to_ascii_lowercase),
            client_certificate,
        }))
    }

    async fn handshake_failure_callback(&self, error: &pingora::Error) {
        let reason = failure_reason(&error.to_string());
        METRICS
            .tls_handshakes
            .with_label_values(&[&self.listener, reason])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_apart_by_what_rustls_said() {
        let said = |cause: &str| {
            failure_reason(&format!(
                "TLSHandshakeFailure context: TLS accept() failed: tls connect error: {cause}"
            ))
        };
        assert_eq!(said("peer sent no certificates"), "no_client_certificate");
        assert_eq!(
            said("received corrupt message of type InvalidContentType"),
            "not_tls"
        );
        assert_eq!(
            said("peer is incompatible: Tls12NotOffered"),
            "incompatible"
        );
        assert_eq!(said("tls handshake eof"), "closed");
        assert_eq!(said("something new"), "other");
    }
}
