//! Request mirroring: a copy of the request is sent to another upstream from a task of its
//! own, and its answer is read and discarded. The main request never waits for it and
//! never fails because of it; at most `max_in_flight` copies per route are in flight, the
//! rest are dropped, and every outcome is counted in `sluice_mirror_requests_total`.

use crate::observe::metrics::METRICS;
use bytes::Bytes;
use once_cell::sync::Lazy;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The mirror copies' own connection pool, apart from the proxy's.
static CONNECTOR: Lazy<Connector> = Lazy::new(|| Connector::new(None));

/// A copy of a request, ready to send.
pub struct MirrorCopy {
    pub route: String,
    pub request: RequestHeader,
    pub body: Option<Bytes>,
    pub peer: HttpPeer,
    /// The copy is abandoned after this long.
    pub deadline: Duration,
}

/// A slot of a route's mirror concurrency, released on drop.
pub struct Slot(Arc<AtomicU32>);

impl Slot {
    /// A slot if fewer than `max` copies are in flight; counts a drop otherwise.
    pub fn take(in_flight: &Arc<AtomicU32>, max: u32, route: &str) -> Option<Self> {
        let taken = in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            count(route, "dropped");
            return None;
        }
        Some(Self(in_flight.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a mirror outcome of `route`.
pub fn count(route: &str, result: &str) {
    METRICS
        .mirror_requests
        .with_label_values(&[route, result])
        .inc();
}

/// Makes `request` what the mirror's protocol sends: HTTP/2 (`http2`), or HTTP/1.1 in
/// origin form with a `Host` (an HTTP/2 client's authority becomes it). Connection-level
/// headers are the client connection's, not the copy's, and a body is sent whole with its
/// length, so they are removed.
pub fn for_protocol(request: &mut RequestHeader, http2: bool) -> Result<()> {
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::TE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        request.remove_header(&name);
    }
    if http2 {
        request.set_version(http::Version::HTTP_2);
        return Ok(());
    }
    request.set_version(http::Version::HTTP_11);
    if let Some(authority) = request.uri.authority().map(|a| a.as_str().to_string()) {
        if request.headers.get(http::header::HOST).is_none() {
            request.insert_header(http::header::HOST, authority)?;
        }
        let target = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        request.set_uri(target.parse().map_err(|e| {
            pingora::Error::explain(
                pingora::ErrorType::InternalError,
                format!("mirror target {target:?}: {e}"),
            )
        })?);
    }
    Ok(())
}

/// Sends `copy` from a task of its own, holding `slot` until it is done.
pub fn send(copy: MirrorCopy, slot: Slot) {
    tokio::spawn(async move {
        let result = match tokio::time::timeout(copy.deadline, exchange(&copy)).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                log::debug!("mirror copy of route {} failed: {e}", copy.route);
                "error"
            }
            Err(_) => "timeout",
        };
        count(&copy.route, result);
        drop(slot);
    });
}

async fn exchange(copy: &MirrorCopy) -> Result<()> {
    let (mut session, _reused) = CONNECTOR.get_http_session(&copy.peer).await?;
    session
        .write_request_header(Box::new(copy.request.clone()))
        .await?;
    if let Some(body) = copy.body.clone().filter(|b| !b.is_empty()) {
        session.write_request_body(body, true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    while session.read_response_body().await?.is_some() {}
    CONNECTOR
        .release_http_session(session, &copy.peer, Some(Duration::from_secs(4)))
        .await;
    Ok(())
}
