//! Request hygiene: request ids and `X-Forwarded-*` headers.
//!
//! Hop-by-hop headers (Connection and the fields it nominates, Keep-Alive, TE, Trailer,
//! Transfer-Encoding, Upgrade, Proxy-*) are stripped by Pingora's standard upstream request
//! policy before sluice's filter runs; the original `Host` is forwarded unchanged.

use crate::model::ClientCertHeaders;
use crate::tls::client_auth::{ChainVerifier, ClientCertificate};
use pingora::http::RequestHeader;
use pingora::Result;
use rand::Rng;
use std::net::IpAddr;

/// Header carrying the request id, kept from the client or created.
pub const REQUEST_ID: &str = "x-request-id";
/// Header telling the upstream which try of the request this is (1 = first).
pub const ATTEMPT: &str = "x-sluice-attempt";

/// The client's request id if it sent a usable one, else a new random one.
pub fn request_id(header: &RequestHeader) -> String {
    header
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// Whether `header` asks for a WebSocket upgrade (HTTP/1.1 `Upgrade: websocket`).
pub fn is_websocket_upgrade(header: &RequestHeader) -> bool {
    header.version == http::Version::HTTP_11
        && header
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A new random request id (also named the connection of a tcp route in the access log).
pub fn new_request_id() -> String {
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// Adds the forwarding headers to an upstream request: appends the client to
/// `X-Forwarded-For`, and sets `X-Forwarded-Proto` and `X-Forwarded-Host` (a client's own
/// values for those two are replaced: they describe sluice's listener, which only sluice knows).
pub fn add_forwarding(
    upstream: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    scheme: &'static str,
) -> Result<()> {
    if let Some(ip) = client_ip {
        let forwarded_for = match upstream
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
        {
            previous if previous.is_empty() => ip.to_string(),
            previous => format!("{}, {ip}", previous.join(", ")),
        };
        upstream.insert_header("x-forwarded-for", forwarded_for)?;
    }
    upstream.insert_header("x-forwarded-proto", scheme)?;
    if let Some(host) = upstream.headers.get(http::header::HOST).cloned() {
        upstream.insert_header("x-forwarded-host", host)?;
    }
    Ok(())
}

/// Whether a route takes `certificate`: its own CA (`verifier`) verifies it, or, without
/// one, the listener's did.
pub fn accepted(certificate: Option<&ClientCertificate>, verifier: Option<&ChainVerifier>) -> bool {
    match (certificate, verifier) {
        (None, _) => false,
        (Some(certificate), Some(verifier)) => verifier.verifies(certificate),
        (Some(certificate), None) => certificate.verified,
    }
}

/// Tells the upstream about the client's certificate on a listener with
/// `tls.client_auth` (the client's own values of these headers are already removed):
/// `NONE`; `FAILED` for one no applicable CA issued; or `SUCCESS` and the certificate's
/// subject, issuer and fingerprint, which are never sent for an unverified certificate.
pub fn set_client_certificate(
    request: &mut RequestHeader,
    headers: &ClientCertHeaders,
    certificate: Option<&ClientCertificate>,
    accepted: bool,
) -> Result<()> {
    let Some(certificate) = certificate else {
        return request.insert_header(headers.verify.clone(), "NONE");
    };
    if !accepted {
        return request.insert_header(headers.verify.clone(), "FAILED");
    }
    request.insert_header(headers.verify.clone(), "SUCCESS")?;
    request.insert_header(headers.subject.clone(), certificate.subject.as_str())?;
    request.insert_header(headers.issuer.clone(), certificate.issuer.as_str())?;
    request.insert_header(
        headers.fingerprint.clone(),
        certificate.fingerprint.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_client_request_id_and_creates_missing_ones() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("req");
        let created = request_id(&req);
        assert_eq!(created.len(), 32);
        assert_ne!(created, request_id(&req));
        req.insert_header(REQUEST_ID, "abc-123").expect("header");
        assert_eq!(request_id(&req), "abc-123");
        req.insert_header(REQUEST_ID, "has space").expect("header");
        assert_ne!(request_id(&req), "has space");
    }

    #[test]
    fn forwarding_headers_append_and_replace() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("req");
        req.insert_header("Host", "shop.example.com").expect("host");
        req.append_header("X-Forwarded-For", "1.1.1.1")
            .expect("xff");
        req.append_header("X-Forwarded-For", "2.2.2.2")
            .expect("xff");
        req.insert_header("X-Forwarded-Proto", "https")
            .expect("xfp");
        add_forwarding(&mut req, Some("10.0.0.9".parse().expect("ip")), "http").expect("add");
        assert_eq!(req.headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(req.headers["x-forwarded-proto"], "http");
        assert_eq!(req.headers["x-forwarded-host"], "shop.example.com");
    }
}
