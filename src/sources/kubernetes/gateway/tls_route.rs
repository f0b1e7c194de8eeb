//! TLSRoute → routes by server name on the TLS passthrough listeners (a `tcp` listener with
//! `sni_routing`): the ClientHello's server name picks the route, whose Service gets the
//! TLS stream untouched.

use super::api::tlsroutes::TlsRoute;
use super::attach::{attach, host_match, upstream, Attachment, BackendRef, ParentRef, Verdict};
use super::listeners::{ResolvedListener, RouteKind};
use super::{created, fragment_key, origin, GatewayObjects, ObjectKey, RouteStatus, Translation};
use crate::model::{Fragment, GatewaySettings, RouteConfig, UpstreamProtocol};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Translates one TLSRoute: its fragment (if attached anywhere) and its status.
pub fn translate(
    key: &ObjectKey,
    route: &TlsRoute,
    objects: &GatewayObjects<'_>,
    resolved: &mut [ResolvedListener],
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) {
    let hostnames: Vec<String> = route
        .spec
        .hostnames
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut fragment = Fragment::new(
        origin("TLSRoute", &route.metadata),
        created(&route.metadata),
    );
    let mut verdict = Verdict {
        unsupported: None,
        refs: Ok(()),
    };
    let references: Vec<_> = route
        .spec
        .rules
        .iter()
        .flat_map(|r| r.backend_refs.iter())
        .collect();
    // A relayed connection goes to one Service: weights would need a pick per connection
    // that tcp routes do not make yet.
    if route.spec.rules.len() > 1 || references.len() > 1 {
        verdict.unsupported = Some((
            "UnsupportedValue",
            "sluice relays a TLSRoute to one backendRef".into(),
        ));
    }
    let backend = references.first().and_then(|reference| {
        let reference = BackendRef {
            group: reference.group.as_deref(),
            kind: reference.kind.as_deref(),
            name: &reference.name,
            namespace: reference.namespace.as_deref(),
            port: reference.port,
        };
        match upstream(RouteKind::Tls, key, &reference, objects, &mut fragment) {
            Ok(name) => Some(name),
            Err(refusal) => {
                verdict.refs = Err(refusal);
                None
            }
        }
    });
    for upstream in &mut fragment.upstreams {
        upstream.protocol = UpstreamProtocol::Tcp;
    }
    let parent_refs: Vec<ParentRef> = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(|p| ParentRef {
            group: p.group.clone(),
            kind: p.kind.clone(),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            port: p.port,
            section_name: p.section_name.clone(),
        })
        .collect();
    let Attachment { parents, targets } = attach(
        RouteKind::Tls,
        &key.0,
        route.metadata.generation,
        &parent_refs,
        &hostnames,
        &verdict,
        resolved,
        objects,
        settings,
        now,
    );
    if parents.is_empty() {
        return;
    }
    out.tls_routes.insert(key.clone(), RouteStatus { parents });
    // Without a backend the names are not routed: their connections are closed.
    let Some(backend) = backend else {
        return;
    };
    if targets.is_empty() {
        return;
    }
    for (t, (listener, hosts)) in targets.iter().enumerate() {
        let name = format!("TLSRoute/{}/{}/{t}", key.0, key.1);
        let mut route = RouteConfig::new(&name, fragment.origin.clone(), listener, &backend);
        route.hosts = hosts.iter().map(|h| host_match(h)).collect();
        fragment.routes.push(route);
    }
    out.fragments
        .insert(fragment_key("TLSRoute", key), fragment);
}
