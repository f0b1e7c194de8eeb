//! Serving a route's error pages: for an upstream's error answer (its body is replaced,
//! its status kept) and for sluice's own refusals of the route's requests. A page that
//! cannot be had (its upstream fails) leaves the answer as it was.

use super::subrequest;
use crate::model::PageSource;
use crate::state::Snapshot;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use std::sync::Arc;

/// Largest page taken from an upstream.
const MAX_PAGE: usize = 1024 * 1024;

/// The pages of a routed request's route: the snapshot it was routed in and the route's
/// index there (whose `error_pages` are set).
pub struct RoutePages {
    pub snapshot: Arc<Snapshot>,
    pub route: usize,
}

/// A page ready to send.
pub struct Page {
    pub content_type: http::HeaderValue,
    pub body: Bytes,
}

impl RoutePages {
    /// The page for an answer with `status` to `request`, if the route has one and it can
    /// be had.
    pub async fn page(
        &self,
        status: u16,
        request: &RequestHeader,
        request_id: &str,
    ) -> Option<Page> {
        let pages = self.snapshot.config.routes[self.route]
            .error_pages
            .as_ref()?;
        match pages.for_status(status)? {
            PageSource::File(file) => Some(Page {
                content_type: http::HeaderValue::from_static(file.content_type),
                body: file.body.clone(),
            }),
            PageSource::Upstream(name) => {
                let fetched = self.fetch(name, status, request, request_id).await;
                match fetched {
                    Ok(page) => page,
                    Err(e) => {
                        log::warn!("error page {status} from upstream {name}: {e}");
                        None
                    }
                }
            }
        }
    }

    /// Asks upstream `name` for the page, as ingress-nginx asks a custom default backend:
    /// `GET /` with the status and the original request in headers.
    async fn fetch(
        &self,
        name: &str,
        status: u16,
        request: &RequestHeader,
        request_id: &str,
    ) -> Result<Option<Page>> {
        let Some(upstream) = self.snapshot.upstream(name) else {
            return Ok(None);
        };
        let facts = crate::upstream::hash_key::RequestFacts {
            header: Some(request),
            client_ip: None,
            scheme: "http",
        };
        let Some(endpoint) = upstream.pick(&facts, &|_| false) else {
            log::warn!("error page {status}: upstream {name} has no endpoint");
            return Ok(None);
        };
        let timeouts = upstream.config.timeouts;
        let peer = upstream.peer(endpoint, &timeouts);
        // The route's upstream, as `X-Service-Name` tells the page upstream.
        let service = self.snapshot.config.routes[self.route]
            .backends
            .first()
            .map_or("", |b| b.upstream.as_str());
        let ask = page_request(status, request, request_id, service)?;
        let deadline = timeouts.connect + timeouts.read;
        let answer = match tokio::time::timeout(
            deadline,
            subrequest::exchange(&peer, ask, Bytes::new(), MAX_PAGE),
        )
        .await
        {
            Ok(answer) => answer?,
            Err(_) => {
                log::warn!(
                    "error page {status}: upstream {name} did not answer within {deadline:?}"
                );
                return Ok(None);
            }
        };
        let answered = answer.header.status.as_u16();
        // A page server answers 200, or the status it was asked for (ingress-nginx's
        // custom-error-pages does the latter).
        if answered != status && !(200..300).contains(&answered) {
            log::warn!("error page {status}: upstream {name} answered {answered}");
            return Ok(None);
        }
        let content_type = answer
            .header
            .headers
            .get(http::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("text/html; charset=utf-8"));
        Ok(answer.body.map(|body| Page { content_type, body }))
    }
}

/// The request for a page: `GET /` with `X-Code`, `X-Format` (the client's `Accept`),
/// `X-Original-URI`, `X-Request-ID` and `X-Service-Name`.
pub fn page_request(
    status: u16,
    request: &RequestHeader,
    request_id: &str,
    service: &str,
) -> Result<RequestHeader> {
    let mut ask = RequestHeader::build("GET", b"/", None)?;
    if let Some(host) = request.headers.get(http::header::HOST) {
        ask.insert_header(http::header::HOST, host.clone())?;
    }
    ask.insert_header("x-code", status.to_string())?;
    let format = request
        .headers
        .get(http::header::ACCEPT)
        .cloned()
        .unwrap_or(http::HeaderValue::from_static("text/html"));
    ask.insert_header("x-format", format)?;
    ask.insert_header("x-original-uri", request.uri.to_string())?;
    ask.insert_header("x-request-id", request_id)?;
    ask.insert_header("x-service-name", service)?;
    Ok(ask)
}

/// Whether a body follows `response`, so that the page can replace it: the page goes out
/// when the body ends, and a response that ends with its head (`Content-Length: 0`, or
/// HTTP/2 HEADERS that end the stream) gives no such moment. So: a declared non-zero
/// length, or chunks from an HTTP/1 upstream.
pub fn body_follows(response: &ResponseHeader, http1_upstream: bool) -> bool {
    let length = response
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = response
        .headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    length.is_some_and(|n| n > 0) || (length.is_none() && chunked && http1_upstream)
}

/// Makes `response` the head of `page`: same status, the page's type and length, and none
/// of the headers that described the replaced body.
pub fn replace_head(response: &mut ResponseHeader, page: &Page) -> Result<()> {
    for name in [
        http::header::TRANSFER_ENCODING,
        http::header::CONTENT_ENCODING,
        http::header::CONTENT_RANGE,
        http::header::ETAG,
        http::header::LAST_MODIFIED,
        http::header::ACCEPT_RANGES,
        http::header::TRAILER,
    ] {
        response.remove_header(&name);
    }
    response.insert_header(http::header::CONTENT_TYPE, page.content_type.clone())?;
    response.insert_header(http::header::CONTENT_LENGTH, page.body.len().to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_request_carries_the_status_and_the_original_request() {
        let mut request = RequestHeader::build("POST", b"/cart?id=3", None).unwrap();
        request.insert_header("host", "shop.test").unwrap();
        request.insert_header("accept", "application/json").unwrap();
        let ask = page_request(503, &request, "req-1", "cart").unwrap();
        assert_eq!(ask.method, "GET");
        assert_eq!(ask.uri, "/");
        let header = |name: &str| ask.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("x-code"), Some("503"));
        assert_eq!(header("x-format"), Some("application/json"));
        assert_eq!(header("x-original-uri"), Some("/cart?id=3"));
        assert_eq!(header("x-service-name"), Some("cart"));
        assert_eq!(header("host"), Some("shop.test"));
    }

    #[test]
    fn replaced_head_describes_the_page() {
        let mut response = ResponseHeader::build(502, None).unwrap();
        for (name, value) in [
            ("transfer-encoding", "chunked"),
            ("content-encoding", "gzip"),
            ("etag", "\"x\""),
            ("x-upstream", "kept"),
        ] {
            response.insert_header(name, value).unwrap();
        }
        let page = Page {
            content_type: http::HeaderValue::from_static("text/html"),
            body: Bytes::from_static(b"<h1>down</h1>"),
        };
        replace_head(&mut response, &page).unwrap();
        assert_eq!(response.status, 502);
        assert!(response.headers.get("transfer-encoding").is_none());
        assert!(response.headers.get("content-encoding").is_none());
        assert!(response.headers.get("etag").is_none());
        assert_eq!(response.headers.get("content-length").unwrap(), "13");
        assert_eq!(response.headers.get("x-upstream").unwrap(), "kept");
    }
}
