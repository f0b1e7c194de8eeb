//! What a TLS handshake tells the proxy about its connection: the server name the client
//! asked for (misdirected requests are told apart by it) and, on listeners that ask for one,
//! the client's certificate. [`HandshakeRecorder`] runs when a handshake completes and keeps
//! a [`Handshake`] in the connection's TLS digest (read back with `SslDigest::extension`).

use super::client_auth::ClientCertificate;
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
    /// The listener asks clients for certificates.
    pub asks_client_certificate: bool,
    /// The listener has a CA bundle, so a certificate that got through is verified.
    pub verified_by_listener: bool,
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
        Some(Arc::new(Handshake {
            server_name: tls.server_name().map(str::to_ascii_lowercase),
            client_certificate,
        }))
    }
}
