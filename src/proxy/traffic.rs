//! The route's traffic decisions at request time: answering with a redirect, choosing the
//! backend (canary or weighted), building the affinity cookie and the mirror copy. The
//! rules are in `routing`; this module reads the request for them.

use super::mirror::{self, MirrorCopy, Slot};
use crate::model::{Filters, HttpsRedirect, RouteConfig};
use crate::routing::{backends, filters};
use crate::state::{Route, RouteBackend, Snapshot};
use crate::upstream::hash_key::RequestFacts;
use bytes::Bytes;
use pingora::http::RequestHeader;
use rand::Rng;

/// The request as the client addressed it, for redirect targets.
pub fn origin<'r>(
    scheme: &'static str,
    host: &'r str,
    request: &'r RequestHeader,
) -> filters::Origin<'r> {
    filters::Origin {
        scheme,
        host,
        port: request_port(request),
        path: request.uri.path(),
        query: request.uri.query(),
    }
}

/// The port the client named in its authority or `Host` header.
fn request_port(request: &RequestHeader) -> Option<u16> {
    request.uri.port_u16().or_else(|| {
        let host = request.headers.get(http::header::HOST)?.to_str().ok()?;
        let (_, port) = host.rsplit_once(':')?;
        // `[::1]` has colons but no port after its bracket.
        port.parse().ok().filter(|_| !host.ends_with(']'))
    })
}

/// A redirect of a whole listener (ACME challenges excepted): (status, location).
pub fn listener_redirect(https: &HttpsRedirect, from: &filters::Origin) -> Option<(u16, String)> {
    if filters::is_acme_challenge(from.path) {
        return None;
    }
    Some((https.status.code(), filters::https_location(https, from)))
}

/// The redirect a route answers with, if any, in the documented order: `app_root` (for
/// `/` only), then `https_redirect` (not on a request that came over HTTPS), then
/// `redirect`.
pub fn route_redirect(
    filters: &Filters,
    from: &filters::Origin,
    prefix_len: Option<usize>,
) -> Option<(u16, String)> {
    if let Some(root) = filters.app_root.as_ref().filter(|_| from.path == "/") {
        return Some((302, root.clone()));
    }
    if let Some(https) = filters
        .https_redirect
        .as_ref()
        .filter(|_| from.scheme != "https")
    {
        return Some((https.status.code(), filters::https_location(https, from)));
    }
    let redirect = filters.redirect.as_ref()?;
    Some((
        redirect.status.code(),
        filters::redirect_location(redirect, from, prefix_len),
    ))
}

/// The upstream chosen for a request, and where its retries go if it is a canary with
/// `fallback`.
#[derive(Debug, Clone, Copy)]
pub struct Chosen {
    pub backend: RouteBackend,
    pub fallback: Option<RouteBackend>,
}

/// Which upstream takes the request: the canary when its rules say so, else a weighted
/// backend. With `canary.fallback`, a canary without an available endpoint is skipped and
/// the canary's failed tries are retried on a backend. `None`: no backend can take it
/// (every weight 0).
pub fn choose_backend(
    route: &Route,
    config: &RouteConfig,
    snapshot: &Snapshot,
    request: &RequestHeader,
) -> Option<Chosen> {
    let weighted = || match route.backends.as_ref() {
        [only] => Some(*only),
        _ => {
            let roll = rand::thread_rng().gen::<u64>();
            route.split.pick(roll).map(|i| route.backends[i])
        }
    };
    if let (Some(canary), Some(backend)) = (&config.canary, route.canary) {
        let roll = || rand::thread_rng().gen_range(0..canary.weight_total.max(1));
        if backends::canary_takes(canary, request, roll) {
            if !canary.fallback {
                return Some(Chosen {
                    backend,
                    fallback: None,
                });
            }
            if snapshot.upstreams[backend.upstream].has_available_endpoint() {
                return Some(Chosen {
                    backend,
                    fallback: weighted(),
                });
            }
        }
    }
    weighted().map(|backend| Chosen {
        backend,
        fallback: None,
    })
}

/// The `Set-Cookie` value pinning the client to the endpoint at `address`.
pub fn affinity_cookie(name: &str, attributes: &str, address: std::net::SocketAddr) -> String {
    format!(
        "{name}={}{attributes}",
        crate::upstream::affinity::token(address)
    )
}

/// Sends a copy of `request` (as it goes upstream: `upstream_request`) to the route's
/// mirror, if it has one and a slot is free. A streamed body is not buffered for it: such a
/// request is not mirrored (counted as `body_not_buffered`).
pub fn mirror(
    route: &Route,
    snapshot: &Snapshot,
    upstream_request: &RequestHeader,
    body: Option<Bytes>,
    body_complete: bool,
    facts: &RequestFacts,
) {
    let Some(target) = &route.mirror else {
        return;
    };
    if !body_complete {
        mirror::count(&route.name, "body_not_buffered");
        return;
    }
    let Some(slot) = Slot::take(&target.in_flight, target.max_in_flight, &route.name) else {
        return;
    };
    let upstream = &snapshot.upstreams[target.upstream];
    let Some(endpoint) = upstream.pick(facts, &|_| false) else {
        mirror::count(&route.name, "no_endpoint");
        return;
    };
    let timeouts = upstream.config.timeouts;
    let deadline = timeouts
        .total
        .unwrap_or(timeouts.connect + timeouts.read + timeouts.write);
    let mut request = upstream_request.clone();
    if let Some(body) = &body {
        // The copy carries the whole body with its length, whatever the client sent.
        request.remove_header(&http::header::TRANSFER_ENCODING);
        if request
            .insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
            .is_err()
        {
            return;
        }
    }
    mirror::send(
        MirrorCopy {
            route: route.name.clone(),
            request,
            body,
            peer: upstream.peer(endpoint, &timeouts),
            deadline,
        },
        slot,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_the_host_header() {
        let mut request = RequestHeader::build("GET", b"/", None).expect("request");
        request
            .insert_header("host", "a.example:8080")
            .expect("host");
        assert_eq!(request_port(&request), Some(8080));
        request.insert_header("host", "[::1]").expect("host");
        assert_eq!(request_port(&request), None);
        request.insert_header("host", "[::1]:81").expect("host");
        assert_eq!(request_port(&request), Some(81));
    }
}
