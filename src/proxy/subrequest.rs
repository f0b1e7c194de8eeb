//! Requests sluice makes on its own behalf (authentication checks, error pages, trace
//! exports), on a
//! connection pool apart from the proxy's, so they never take a connection a proxied
//! request could reuse.

use bytes::{Bytes, BytesMut};
use once_cell::sync::Lazy;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::time::Duration;

static CONNECTOR: Lazy<Connector> = Lazy::new(|| Connector::new(None));

/// An answer to a subrequest.
pub struct Answer {
    pub header: ResponseHeader,
    /// `None` when the body was larger than the caller's limit (the connection is then
    /// dropped, not pooled).
    pub body: Option<Bytes>,
}

/// Sends `request` with `body` (empty: none) to `peer` and reads the answer, keeping at
/// most `body_limit` bytes of its body.
pub async fn exchange(
    peer: &HttpPeer,
    request: RequestHeader,
    body: Bytes,
    body_limit: usize,
) -> Result<Answer> {
    let (mut session, _reused) = CONNECTOR.get_http_session(peer).await?;
    session.write_request_header(Box::new(request)).await?;
    if !body.is_empty() {
        session.write_request_body(body, true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let header = session
        .response_header()
        .cloned()
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no answer head"))?;
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_response_body().await? {
        if body.len() + chunk.len() > body_limit {
            return Ok(Answer { header, body: None });
        }
        body.extend_from_slice(&chunk);
    }
    CONNECTOR
        .release_http_session(session, peer, Some(Duration::from_secs(60)))
        .await;
    Ok(Answer {
        header,
        body: Some(body.freeze()),
    })
}
