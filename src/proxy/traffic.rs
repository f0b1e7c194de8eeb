//! The route's traffic decisions at request time: answering with a redirect, choosing the
//! backend (canary or weighted), building the affinity cookie and the mirror copy. The
//! rules are in `routing`; this module reads the request for them.

use super::mirror::{self, MirrorCopy, Slot};
use super::request_head::{Inspected, Rejection};
use crate::model::{Filters, HttpsRedirect, RouteConfig, UpstreamProtocol, MIRROR_ALL};
use crate::routing::{backends, conditions, filters};
use crate::state::{Route, RouteBackend, RouteMirror, Snapshot};
use crate::upstream::hash_key::RequestFacts;
use bytes::Bytes;
use pingora::http::RequestHeader;
use rand::Rng;

/// The request as the client addressed it, for redirect targets: its scheme, the host and
/// port that inspection found, and its (normalised) path and query.
pub fn origin<'r>(
    scheme: &'static str,
    inspected: &'r Inspected,
    request: &'r RequestHeader,
) -> filters::Origin<'r> {
    filters::Origin {
        scheme,
        host: &inspected.host,
        port: inspected.port,
        path: request.uri.path(),
        query: request.uri.query(),
    }
}

/// Why a request cannot be redirected, if it cannot: a redirect to the request's own host
/// needs one, and HTTP/1.0 may omit it. (A target that is not UTF-8, which a `Location` or a
/// rewritten path could not hold, never gets this far: inspection refuses it with 400.)
pub fn cannot_redirect(inspected: &Inspected) -> Option<Rejection> {
    inspected.host.is_empty().then_some(Rejection {
        status: 400,
        reason: "missing_host",
    })
}

/// A redirect of a whole listener (ACME challenges excepted): (status, location).
pub fn listener_redirect(https: &HttpsRedirect, from: &filters::Origin) -> Option<(u16, String)> {
    if filters::is_acme_challenge(from.path) || from.scheme == "https" {
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
    if let Some(pinned) = affine_backend(route, config, snapshot, request) {
        return Some(pinned);
    }
    let weighted = || weighted_backend(route);
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

/// One of the route's backends by weight (no roll for a single one); `None` when every
/// weight is 0, or when the roll falls on the share of backends that could not be resolved
/// (`unresolved_weight`). A tcp route's connection takes one too.
pub fn weighted_backend(route: &Route) -> Option<RouteBackend> {
    match route.backends.as_ref() {
        [only] if route.split.shares() == 1 => Some(*only),
        _ => {
            let roll = rand::thread_rng().gen::<u64>();
            route
                .split
                .pick(roll)
                .and_then(|i| route.backends.get(i).copied())
        }
    }
}

/// With cookie affinity, the upstream of the route (canary or backend) that holds the
/// endpoint the client's cookie names, so that a session survives the weighted or canary
/// roll (ingress-nginx's `affinity-canary-behavior: sticky`).
fn affine_backend(
    route: &Route,
    config: &RouteConfig,
    snapshot: &Snapshot,
    request: &RequestHeader,
) -> Option<Chosen> {
    let affinity = config.affinity.as_ref()?;
    let several = route.backends.len() > 1 || route.canary.is_some();
    if !several {
        return None;
    }
    let cookie = conditions::cookie_value(request, &affinity.name)?;
    let holds = |b: &RouteBackend| snapshot.upstreams[b.upstream].holds_affinity(cookie);
    if let Some(canary) = route.canary.filter(holds) {
        let fallback = config
            .canary
            .as_ref()
            .filter(|c| c.fallback)
            .and_then(|_| weighted_backend(route));
        return Some(Chosen {
            backend: canary,
            fallback,
        });
    }
    let backend = route.backends.iter().copied().find(holds)?;
    Some(Chosen {
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

/// Sends a copy of the client's `request`, with the forwarding headers and the route's
/// filters applied as for the upstream, to each mirror of the route that samples it and
/// has a slot free. A streamed body is not buffered for them: such a request is not
/// mirrored (counted as `body_not_buffered`).
pub fn mirror(
    route: &Route,
    snapshot: &Snapshot,
    request: &RequestHeader,
    prepare: impl Fn(&mut RequestHeader) -> pingora::Result<()>,
    body: Option<Bytes>,
    body_complete: bool,
    facts: &RequestFacts,
) {
    for target in &route.mirrors {
        let sampled = target.per_million >= MIRROR_ALL
            || rand::thread_rng().gen_range(0..MIRROR_ALL) < target.per_million;
        if !sampled {
            continue;
        }
        if !body_complete {
            mirror::count(&route.name, "body_not_buffered");
            continue;
        }
        mirror_to(
            target,
            route,
            snapshot,
            request,
            &prepare,
            body.clone(),
            facts,
        );
    }
}

/// Sends a copy of `request` to `target`, a mirror of `route`.
fn mirror_to(
    target: &RouteMirror,
    route: &Route,
    snapshot: &Snapshot,
    request: &RequestHeader,
    prepare: &impl Fn(&mut RequestHeader) -> pingora::Result<()>,
    body: Option<Bytes>,
    facts: &RequestFacts,
) {
    let upstream = &snapshot.upstreams[target.upstream];
    let mut copy = request.clone();
    let http2 = matches!(
        upstream.config.protocol,
        UpstreamProtocol::H2 | UpstreamProtocol::H2c
    );
    if let Err(e) = prepare(&mut copy).and_then(|()| mirror::for_protocol(&mut copy, http2)) {
        log::debug!("mirror copy of route {} not built: {e}", route.name);
        mirror::count(&route.name, "error");
        return;
    }
    if let Some(body) = &body {
        if copy
            .insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
            .is_err()
        {
            return;
        }
    }
    let Some(slot) = Slot::take(&target.in_flight, target.max_in_flight, &route.name) else {
        return;
    };
    let Some(endpoint) = upstream.pick(facts, &|_| false) else {
        mirror::count(&route.name, "no_endpoint");
        return;
    };
    let timeouts = upstream.config.timeouts;
    let deadline = timeouts
        .total
        .unwrap_or(timeouts.connect + timeouts.read + timeouts.write);
    mirror::send(
        MirrorCopy {
            route: route.name.clone(),
            request: copy,
            body,
            peer: upstream.peer(endpoint, &timeouts),
            deadline,
        },
        slot,
    );
}
