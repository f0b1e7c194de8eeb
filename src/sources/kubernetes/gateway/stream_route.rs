//! TLSRoute and TCPRoute → routes on `tcp` listeners, whose connections are relayed
//! untouched. A TLSRoute is served on the TLS passthrough listeners (`sni_routing`): the
//! ClientHello's server name picks the route. A TCPRoute takes a whole TCP listener. Each
//! connection goes to one of the route's Services by weight.

use super::api::tcproutes::TcpRoute;
use super::api::tlsroutes::TlsRoute;
use super::attach::{
    attach, backend_ref, host_match, parent_refs, upstream, Attachment, BackendRef, ParentRef,
    Verdict,
};
use super::listeners::{ResolvedListener, RouteKind};
use super::{created, fragment_key, origin, ObjectKey, RouteInputs, RouteStatus, Translation};
use crate::model::{Backend, Fragment, GatewaySettings, RouteConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::sync::Arc;

/// The backendRefs of each rule of a stream route, with their weights.
macro_rules! rules {
    ($rules:expr) => {
        $rules
            .iter()
            .map(|rule| {
                rule.backend_refs
                    .iter()
                    .map(|b| (backend_ref!(b), b.weight))
                    .collect()
            })
            .collect()
    };
}

/// What a TLSRoute or TCPRoute says, in the terms both share.
struct StreamRoute<'r> {
    kind: RouteKind,
    metadata: &'r ObjectMeta,
    /// TLS server names (a TLSRoute's); empty for a TCPRoute.
    hostnames: Vec<String>,
    parent_refs: Vec<ParentRef>,
    /// The backendRefs of each rule.
    rules: Vec<Vec<(BackendRef<'r>, Option<i32>)>>,
}

/// Translates one TLSRoute: its fragment (if attached anywhere) and its status.
pub fn translate_tls(
    key: &ObjectKey,
    route: &TlsRoute,
    inputs: &RouteInputs<'_>,
    resolved: &mut [ResolvedListener],
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) {
    let spec = &route.spec;
    let stream = StreamRoute {
        kind: RouteKind::Tls,
        metadata: &route.metadata,
        hostnames: spec
            .hostnames
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        parent_refs: parent_refs!(spec.parent_refs),
        rules: rules!(spec.rules),
    };
    if let Some(status) = translate(key, &stream, inputs, resolved, settings, now, out) {
        out.tls_routes.insert(key.clone(), Arc::new(status));
    }
}

/// Translates one TCPRoute: its fragment (if attached anywhere) and its status.
pub fn translate_tcp(
    key: &ObjectKey,
    route: &TcpRoute,
    inputs: &RouteInputs<'_>,
    resolved: &mut [ResolvedListener],
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) {
    let spec = &route.spec;
    let stream = StreamRoute {
        kind: RouteKind::Tcp,
        metadata: &route.metadata,
        hostnames: Vec::new(),
        parent_refs: parent_refs!(spec.parent_refs),
        rules: rules!(spec.rules),
    };
    if let Some(status) = translate(key, &stream, inputs, resolved, settings, now, out) {
        out.tcp_routes.insert(key.clone(), Arc::new(status));
    }
}

/// The fragment of a stream route (into `out`) and its status, if it names a parent of
/// sluice's.
fn translate(
    key: &ObjectKey,
    route: &StreamRoute<'_>,
    inputs: &RouteInputs<'_>,
    resolved: &mut [ResolvedListener],
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) -> Option<RouteStatus> {
    let kind = route.kind.name();
    let mut fragment = Fragment::new(origin(kind, route.metadata), created(route.metadata));
    let mut verdict = Verdict {
        unsupported: None,
        refs: Ok(()),
    };
    // A connection is relayed to one Service: the rules of a stream route have no matches
    // to tell them apart, so one rule is served.
    if route.rules.len() > 1 {
        verdict.unsupported = Some((
            "UnsupportedValue",
            format!("sluice serves one rule of a {kind}"),
        ));
    }
    let mut backends = Vec::new();
    for (reference, weight) in route.rules.iter().flatten() {
        match upstream(route.kind, key, reference, inputs, &mut fragment) {
            Ok(upstream) => {
                backends.push(Backend::new(upstream, weight.unwrap_or(1).max(0) as u32))
            }
            Err(refusal) => {
                if verdict.refs.is_ok() {
                    verdict.refs = Err(refusal);
                }
            }
        }
    }
    let Attachment {
        parents,
        targets,
        relayed,
        ..
    } = attach(
        route.kind,
        &key.0,
        route.metadata.generation,
        &route.parent_refs,
        &route.hostnames,
        &verdict,
        resolved,
        inputs.objects,
        settings,
        now,
    );
    if parents.is_empty() {
        return None;
    }
    if targets.is_empty() {
        return Some(RouteStatus { parents });
    }
    // Without a valid backend (or with every weight 0) the route still claims its names,
    // and closes their connections: the relay's equivalent of an HTTP 500.
    let unresolved = backends
        .iter()
        .all(|b| b.weight == 0)
        .then(|| match &verdict.refs {
            Err((_, message)) => message.clone(),
            Ok(()) => "no backendRef with a weight".into(),
        });
    if unresolved.is_some() {
        backends.clear();
    }
    for (t, (listener, hosts)) in targets.keys().enumerate() {
        let name = format!("{kind}/{}/{}/{t}", key.0, key.1);
        let mut route = RouteConfig::new(&name, fragment.origin.clone(), listener, "");
        route.backends = backends.clone();
        route.unresolved = unresolved.clone();
        route.hosts = hosts.iter().map(|h| host_match(h)).collect();
        route.relay_tls = relayed.contains(listener);
        fragment.routes.push(Arc::new(route));
    }
    out.fragments
        .insert(fragment_key(kind, key), Arc::new(fragment));
    Some(RouteStatus { parents })
}
