//! What every route kind shares: attachment to Gateway listeners (parentRefs with
//! sectionName and port, allowedRoutes, hostname intersection), the status of each parent,
//! and backend references to Services.

use super::api::httproutes::{HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use super::backend_tls::{Applied, INVALID_POLICY};
use super::conditions::outcome;
use super::listeners::{ResolvedListener, RouteKind};
use super::{granted, GatewayObjects, ObjectKey, RouteInputs, GROUP};
use crate::model::{
    ClientCertificate, Fragment, GatewayListenerKind, GatewaySettings, HostMatch, RouteConfig,
    UpstreamConfig, UpstreamProtocol, MIRROR_ALL,
};
use crate::sources::kubernetes::services::port_source;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Why a route or one of its parts cannot be served: the condition reason and message.
pub type Refusal = (&'static str, String);

/// The status of a route: every route kind's has this shape.
pub type RouteStatus = super::api::httproutes::HttpRouteStatus;

/// A route's reference to a parent, of whichever route kind.
#[derive(Debug, Clone)]
pub struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    pub section_name: Option<String>,
}

/// The [`ParentRef`]s of a route's `parentRefs` (an `Option<Vec<_>>`): every route kind has
/// its own generated type for them, with the same fields.
macro_rules! parent_refs {
    ($refs:expr) => {
        $refs
            .iter()
            .flatten()
            .map(
                |p| $crate::sources::kubernetes::gateway::attach::ParentRef {
                    group: p.group.clone(),
                    kind: p.kind.clone(),
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    port: p.port,
                    section_name: p.section_name.clone(),
                },
            )
            .collect::<Vec<_>>()
    };
}
pub(super) use parent_refs;

/// The [`BackendRef`] of a route's backend reference (a backendRef or a mirror's), of
/// whichever generated type.
macro_rules! backend_ref {
    ($reference:expr) => {
        $crate::sources::kubernetes::gateway::attach::BackendRef {
            group: $reference.group.as_deref(),
            kind: $reference.kind.as_deref(),
            name: &$reference.name,
            namespace: $reference.namespace.as_deref(),
            port: $reference.port,
        }
    };
}
pub(super) use backend_ref;

/// What the route itself says about being served, before attachment.
pub struct Verdict {
    /// A value sluice cannot serve: the route is not accepted.
    pub unsupported: Option<Refusal>,
    /// The backend references' verdict.
    pub refs: Result<(), Refusal>,
}

/// Where a route is served, and its status per parent of sluice's.
pub struct Attachment {
    pub parents: Vec<HttpRouteStatusParents>,
    /// (sluice listener, hostnames; empty: any) pairs the route is served on, with the
    /// Gateway listener port clients reach it on (the first, should a sluice listener
    /// serve several ports).
    pub targets: BTreeMap<(String, Vec<String>), u16>,
    /// The certificates the Gateways serving it present to TLS backends (`None` for a
    /// Gateway that presents none), each once.
    pub client_certificates: Vec<Option<Arc<ClientCertificate>>>,
    /// The sluice listeners of `targets` it reaches through a TLS listener in mode
    /// Passthrough: on one that also terminates (a mixed port), its TLS is relayed untouched.
    pub relayed: BTreeSet<String>,
}

impl Attachment {
    /// Gives the TLS upstreams of `fragment` the certificate the route's Gateways present
    /// to backends. A route served by Gateways that present different ones presents none
    /// (a backend that asks for one refuses the handshake: 502).
    pub fn present_client_certificate(&self, fragment: &mut Fragment) {
        let certificate = match self.client_certificates.as_slice() {
            [Some(only)] => only.clone(),
            _ => return,
        };
        for upstream in &mut fragment.upstreams {
            if upstream.tls.is_some() {
                if let Some(tls) = &mut Arc::make_mut(upstream).tls {
                    tls.client_certificate = Some(certificate.clone());
                }
            }
        }
    }
}

/// Attaches a route of `kind` in `namespace` to the listeners its `parent_refs` name.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    kind: RouteKind,
    namespace: &str,
    generation: Option<i64>,
    parent_refs: &[ParentRef],
    hostnames: &[String],
    verdict: &Verdict,
    resolved: &mut [ResolvedListener],
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    now: &Time,
) -> Attachment {
    let mut targets = BTreeMap::new();
    let mut relayed = BTreeSet::new();
    let mut client_certificates: Vec<Option<Arc<ClientCertificate>>> = Vec::new();
    let mut parents = Vec::new();
    let mut counted = BTreeSet::new();
    for parent in parent_refs {
        let group = parent.group.as_deref().unwrap_or(GROUP);
        let parent_kind = parent.kind.as_deref().unwrap_or("Gateway");
        let parent_key = (
            parent
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
            parent.name.clone(),
        );
        // A Gateway's routes take its own listeners, a ListenerSet's its own: never the
        // other's (GEP-1713).
        let of_parent: Vec<usize> = match (group, parent_kind) {
            (GROUP, "Gateway") => (0..resolved.len())
                .filter(|&i| resolved[i].gateway == parent_key && resolved[i].set.is_none())
                .collect(),
            (GROUP, "ListenerSet") => (0..resolved.len())
                .filter(|&i| resolved[i].set.as_ref() == Some(&parent_key))
                .collect(),
            _ => continue,
        };
        if of_parent.is_empty() {
            // Not a Gateway of sluice's, or a ListenerSet sluice does not serve (or not
            // there): another controller's business.
            continue;
        }
        // A port no listener can have matches none.
        let port = parent.port.map(|p| u16::try_from(p).unwrap_or(0));
        let candidates: Vec<usize> = of_parent
            .into_iter()
            .filter(|&i| {
                parent
                    .section_name
                    .as_ref()
                    .is_none_or(|s| *s == resolved[i].name)
            })
            .filter(|&i| port.is_none_or(|p| p == resolved[i].port))
            .collect();
        let allowed: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| resolved[i].admits(kind, namespace, objects))
            .collect();
        // A route attaches to accepted listeners; only programmed ones serve it.
        let mut attached = Vec::new();
        for &i in &allowed {
            let Some(sluice) = resolved[i].sluice_listener.clone() else {
                continue;
            };
            if let Some(hosts) = intersect(resolved[i].hostname.as_deref(), hostnames) {
                attached.push((i, sluice, isolated(resolved, i, hosts)));
            }
        }
        let accepted: Result<(), Refusal> = if let Some(problem) = &verdict.unsupported {
            Err(problem.clone())
        } else if candidates.is_empty() {
            Err((
                "NoMatchingParent",
                "no listener of the Gateway has this sectionName and port".into(),
            ))
        } else if allowed.is_empty() {
            Err((
                "NotAllowedByListeners",
                format!(
                    "no listener of the parent takes {}s from this namespace",
                    kind.name()
                ),
            ))
        } else if attached.is_empty() {
            Err((
                "NoMatchingListenerHostname",
                "no hostname of the route matches a listener's hostname".into(),
            ))
        } else {
            Ok(())
        };
        if accepted.is_ok() {
            for (i, sluice, hosts) in attached {
                // Two parentRefs reaching one listener attach once.
                if counted.insert(i) {
                    resolved[i].attached += 1;
                }
                // A route whose names all belong to narrower listeners serves none here.
                if let (true, Some(hosts)) = (resolved[i].programmed, hosts) {
                    if resolved[i].kind == Some(GatewayListenerKind::TlsPassthrough) {
                        relayed.insert(sluice.clone());
                    }
                    targets.entry((sluice, hosts)).or_insert(resolved[i].port);
                    let certificate = resolved[i].backend_client_certificate.clone();
                    let certificate = certificate.ok().flatten();
                    if !client_certificates.contains(&certificate) {
                        client_certificates.push(certificate);
                    }
                }
            }
        }
        parents.push(HttpRouteStatusParents {
            conditions: vec![
                outcome("Accepted", &accepted, "Accepted", generation, now),
                outcome(
                    "ResolvedRefs",
                    &verdict.refs,
                    "ResolvedRefs",
                    generation,
                    now,
                ),
            ],
            controller_name: settings.controller_name.clone(),
            parent_ref: HttpRouteStatusParentsParentRef {
                group: parent.group.clone(),
                kind: parent.kind.clone(),
                name: parent.name.clone(),
                namespace: parent.namespace.clone(),
                port: parent.port,
                section_name: parent.section_name.clone(),
            },
        });
    }
    Attachment {
        parents,
        targets,
        client_certificates,
        relayed,
    }
}

/// The hostnames a route serves on a listener: `None` when none of the route's hostnames
/// meets the listener's; an empty list for any host.
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(listener) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![listener.to_string()]);
    }
    let mut hosts: Vec<String> = Vec::new();
    for h in route {
        let host = if covers(listener, h) {
            h.clone()
        } else if covers(h, listener) {
            listener.to_string()
        } else {
            continue;
        };
        // `*.example.com` and `*.foo.example.com` on `*.foo.example.com` are one name.
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    (!hosts.is_empty()).then_some(hosts)
}

/// `hosts` (of a route on listener `i`; empty: any) without the names a more specific
/// listener of the same Gateway and port takes: a request goes to the most specific
/// listener its host matches, and only that listener's routes serve it (listener
/// isolation). `None` when nothing is left.
fn isolated(resolved: &[ResolvedListener], i: usize, hosts: Vec<String>) -> Option<Vec<String>> {
    // Any host: the narrower listeners' names are served before it anyway, as more
    // specific host groups come first in routing.
    if hosts.is_empty() {
        return Some(hosts);
    }
    let own = &resolved[i];
    let narrower: Vec<&str> = resolved
        .iter()
        .filter(|l| l.programmed && is_narrower(l, own))
        .filter_map(|l| l.hostname.as_deref())
        .collect();
    let kept: Vec<String> = hosts
        .into_iter()
        .filter(|h| !narrower.iter().any(|n| covers(n, h)))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Whether `narrow` takes names of its own within `broad`'s: a listener of the same
/// Gateway and port whose hostname `broad`'s covers (or `broad` has none) and differs.
pub(super) fn is_narrower(narrow: &ResolvedListener, broad: &ResolvedListener) -> bool {
    let Some(hostname) = narrow.hostname.as_deref() else {
        return false;
    };
    narrow.gateway == broad.gateway
        && narrow.port == broad.port
        && broad.hostname.as_deref() != Some(hostname)
        && broad
            .hostname
            .as_deref()
            .is_none_or(|b| covers(b, hostname))
}

/// Whether hostname pattern `pattern` takes every name `name` takes.
fn covers(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match pattern.strip_prefix('*') {
        // `*.example.com` takes `a.example.com`, `a.b.example.com` and `*.a.example.com`.
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => false,
    }
}

pub fn host_match(host: &str) -> HostMatch {
    match host.strip_prefix('*') {
        Some(suffix) => HostMatch::Suffix(suffix.to_string()),
        None => HostMatch::Exact(host.to_string()),
    }
}

/// A RequestMirror's share of requests in copies per million: `percent` (0-100), or
/// `fraction` (numerator, denominator: 100 if absent); every request when neither is given.
pub fn mirror_share(
    percent: Option<i32>,
    fraction: Option<(i32, Option<i32>)>,
) -> Result<u32, String> {
    let (numerator, denominator) = match (percent, fraction) {
        (Some(_), Some(_)) => return Err("a RequestMirror with both percent and fraction".into()),
        (Some(percent), None) => (i64::from(percent), 100),
        (None, Some((numerator, denominator))) => {
            (i64::from(numerator), i64::from(denominator.unwrap_or(100)))
        }
        (None, None) => return Ok(MIRROR_ALL),
    };
    if denominator <= 0 || numerator < 0 || numerator > denominator {
        return Err(format!(
            "RequestMirror share {numerator}/{denominator} is not a share of requests"
        ));
    }
    // At most a million (numerator <= denominator).
    Ok((numerator * i64::from(MIRROR_ALL) / denominator) as u32)
}

/// A backend reference of a rule or a mirror.
pub struct BackendRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// The upstream of a Service backend, added to `fragment` once, with the TLS that a
/// BackendTLSPolicy of its Service port asks for.
pub fn upstream(
    route_kind: RouteKind,
    key: &ObjectKey,
    reference: &BackendRef,
    inputs: &RouteInputs<'_>,
    fragment: &mut Fragment,
) -> Result<String, Refusal> {
    let group = reference.group.unwrap_or_default();
    let kind = reference.kind.unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("backend {group}/{kind} {} is not a Service", reference.name),
        ));
    }
    let namespace = reference.namespace.unwrap_or(&key.0);
    if !granted(
        inputs.objects,
        route_kind.name(),
        &key.0,
        namespace,
        "Service",
        reference.name,
    ) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {namespace} lets this route use Service {}",
                reference.name
            ),
        ));
    }
    let Some(port) = reference.port.and_then(|p| u16::try_from(p).ok()) else {
        return Err((
            "UnsupportedValue",
            format!("backend Service {} needs a port", reference.name),
        ));
    };
    let Some(service) = inputs
        .objects
        .services
        .get(&(namespace.to_string(), reference.name.to_string()))
    else {
        return Err((
            "BackendNotFound",
            format!("Service {namespace}/{} not found", reference.name),
        ));
    };
    let name = format!(
        "{}/{}/{}/{namespace}/{}:{port}",
        route_kind.name(),
        key.0,
        key.1,
        reference.name
    );
    if fragment.upstreams.iter().any(|u| u.name == name) {
        return Ok(name);
    }
    let source = port_source(service, namespace, reference.name, port)
        .map_err(|e| ("BackendNotFound", e))?;
    let tls =
        match inputs
            .backend_tls
            .backend(route_kind, key, namespace, reference.name, service, port)
        {
            None => None,
            // Never plaintext instead: the backend is an invalid reference (requests get 500).
            Some(Applied::Refused(why)) => {
                return Err((
                    INVALID_POLICY,
                    format!(
                        "backend Service {namespace}/{} port {port}: {why}",
                        reference.name
                    ),
                ))
            }
            Some(Applied::Tls(_)) if route_kind == RouteKind::Tcp => {
                return Err((
                    "UnsupportedProtocol",
                    format!(
                        "Service {namespace}/{} port {port} takes TLS (BackendTLSPolicy), which \
                     sluice does not originate on TCPRoute connections",
                        reference.name
                    ),
                ))
            }
            Some(Applied::Tls(tls)) => Some(tls.clone()),
        };
    let mut config = UpstreamConfig::new(&name, fragment.origin.clone(), source, Vec::new());
    config.protocol = protocol(route_kind, service, port);
    if let Some(tls) = tls {
        // TLS carries what the route speaks: HTTP/1.1, or HTTP/2 (ALPN h2) for h2c.
        if config.protocol == UpstreamProtocol::H2c {
            config.protocol = UpstreamProtocol::H2;
        }
        config.tls = Some(tls);
    }
    fragment.upstreams.push(Arc::new(config));
    Ok(name)
}

/// What sluice speaks to a Service's port for routes of `kind`: TCP for TLS and TCP
/// routes, HTTP/2 for gRPC, and otherwise what the port's `appProtocol` says (GEP-1911:
/// `kubernetes.io/h2c`), HTTP/1.1 by default.
fn protocol(kind: RouteKind, service: &Service, port: u16) -> UpstreamProtocol {
    let app_protocol = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == i32::from(port))
        .and_then(|p| p.app_protocol.as_deref());
    match (kind, app_protocol) {
        (RouteKind::Tls | RouteKind::Tcp, _) => UpstreamProtocol::Tcp,
        (RouteKind::Grpc, _) | (_, Some("kubernetes.io/h2c")) => UpstreamProtocol::H2c,
        _ => UpstreamProtocol::Http1,
    }
}

/// Adds `templates` (routes without listener and hosts) to `fragment` once per target:
/// on its sluice listener, with its hostnames, named after the template and the target.
/// A redirect that keeps the scheme and names no port goes to the Gateway listener's port,
/// as the specification says (a changed scheme takes its own well-known port).
pub fn place(
    templates: &[RouteConfig],
    targets: &BTreeMap<(String, Vec<String>), u16>,
    fragment: &mut Fragment,
) {
    for (t, ((listener, hosts), port)) in targets.iter().enumerate() {
        for template in templates {
            let mut route = template.clone();
            route.name = format!("{}/{t}", template.name);
            route.listener = listener.clone();
            route.hosts = hosts.iter().map(|h| host_match(h)).collect();
            if let Some(redirect) = &mut route.filters.redirect {
                if redirect.scheme.is_none() && redirect.port.is_none() {
                    redirect.port = Some(*port);
                }
            }
            fragment.routes.push(Arc::new(route));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_shares_are_per_million() {
        assert_eq!(mirror_share(None, None), Ok(MIRROR_ALL));
        assert_eq!(mirror_share(Some(20), None), Ok(200_000));
        assert_eq!(mirror_share(None, Some((25, Some(50)))), Ok(500_000));
        assert_eq!(mirror_share(None, Some((1, None))), Ok(10_000));
        assert_eq!(mirror_share(Some(0), None), Ok(0));
        assert!(mirror_share(None, Some((3, Some(2)))).is_err());
        assert!(mirror_share(None, Some((1, Some(0)))).is_err());
        assert!(mirror_share(Some(10), Some((1, None))).is_err());
    }
}
