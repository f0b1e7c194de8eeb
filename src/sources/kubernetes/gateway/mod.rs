//! Gateway API objects → fragments and status: a pure translation of the GatewayClasses,
//! Gateways, routes and the objects they reference into the routes, upstreams and
//! certificates sluice serves, and the status conditions the specification defines.
//!
//! Gateway listeners do not open ports: each is served by the sluice listener that
//! `gateway.listeners` names for its port and protocol (sluice's listeners are bound at
//! start). Routes attached to listeners of several Gateways on one sluice listener share
//! it, told apart by their hostnames. Each route (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) is one fragment, so a bad route is
//! rejected alone; each Gateway is one fragment holding its listeners' certificates.

pub mod api;
mod attach;
mod backend_tls;
mod conditions;
mod grpc_route;
mod http_route;
mod listener_sets;
mod listeners;
mod stream_route;

use crate::model::{Fragment, GatewaySettings, Origin};
use api::backendtlspolicies::{BackendTlsPolicy, BackendTlsPolicyStatus};
use api::gatewayclasses::{GatewayClass, GatewayClassStatus};
use api::gateways::{Gateway, GatewayStatus};
use api::grpcroutes::GrpcRoute;
use api::httproutes::HttpRoute;
use api::listenersets::{ListenerSet, ListenerSetStatus};
use api::referencegrants::ReferenceGrant;
use api::tcproutes::TcpRoute;
use api::tlsroutes::TlsRoute;
pub use attach::RouteStatus;
pub use backend_tls::CA_KEY;
use backend_tls::{BackendTls, Use};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub use super::ingress::{key_of, ObjectKey};
pub use listeners::{ResolvedListener, RouteKind};

/// The Gateway API group.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The objects a translation reads, borrowed from the controller's stores (a batch of
/// changes costs no copy of thousands of objects). Cluster-scoped kinds are keyed by
/// `("", name)`.
#[derive(Debug, Clone, Copy)]
pub struct GatewayObjects<'a> {
    pub classes: &'a BTreeMap<ObjectKey, GatewayClass>,
    pub gateways: &'a BTreeMap<ObjectKey, Gateway>,
    pub listener_sets: &'a BTreeMap<ObjectKey, ListenerSet>,
    pub http_routes: &'a BTreeMap<ObjectKey, HttpRoute>,
    pub grpc_routes: &'a BTreeMap<ObjectKey, GrpcRoute>,
    pub tls_routes: &'a BTreeMap<ObjectKey, TlsRoute>,
    pub tcp_routes: &'a BTreeMap<ObjectKey, TcpRoute>,
    pub grants: &'a BTreeMap<ObjectKey, ReferenceGrant>,
    pub namespaces: &'a BTreeMap<ObjectKey, Namespace>,
    pub services: &'a BTreeMap<ObjectKey, Service>,
    pub secrets: &'a BTreeMap<ObjectKey, Secret>,
    pub backend_tls_policies: &'a BTreeMap<ObjectKey, BackendTlsPolicy>,
    /// ConfigMaps holding a CA bundle (`ca.crt`): the controller keeps no others.
    pub config_maps: &'a BTreeMap<ObjectKey, ConfigMap>,
}

/// What a route's translation reads besides the route: the objects, and what the
/// BackendTLSPolicies among them make of the Service backends.
#[derive(Clone, Copy)]
pub struct RouteInputs<'a> {
    pub objects: &'a GatewayObjects<'a>,
    pub backend_tls: &'a BackendTls,
}

/// What the objects become. Fragments and route statuses are shared (`Arc`): a route that
/// did not change between two translations hands over the same ones.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// By fragment key: `Gateway/NS/NAME`, `HTTPRoute/NS/NAME`.
    pub fragments: BTreeMap<String, Arc<Fragment>>,
    /// The status of each GatewayClass of sluice's controller.
    pub classes: BTreeMap<String, GatewayClassStatus>,
    /// The status of each Gateway of those classes.
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// The status of each ListenerSet whose parent is one of those Gateways.
    pub listener_sets: BTreeMap<ObjectKey, ListenerSetStatus>,
    /// The status of each HTTPRoute with a parent among those Gateways (only those
    /// parents' entries).
    pub http_routes: BTreeMap<ObjectKey, Arc<RouteStatus>>,
    /// The same for each GRPCRoute.
    pub grpc_routes: BTreeMap<ObjectKey, Arc<RouteStatus>>,
    /// The same for each TLSRoute.
    pub tls_routes: BTreeMap<ObjectKey, Arc<RouteStatus>>,
    /// The same for each TCPRoute.
    pub tcp_routes: BTreeMap<ObjectKey, Arc<RouteStatus>>,
    /// The status of each BackendTLSPolicy that a route accepted by those Gateways uses
    /// (only sluice's ancestors' entries).
    pub backend_tls_policies: BTreeMap<ObjectKey, BackendTlsPolicyStatus>,
}

/// The translations of routes, kept from one batch to the next: a route is translated
/// again only when it changed (a new generation, or deleted and created again) or when its
/// context did (any object that is not a route, or the settings), so a change to one
/// route among thousands costs one route's translation.
#[derive(Debug, Default)]
pub struct RouteCache {
    /// The context the entries were made in.
    context: Option<u64>,
    entries: HashMap<RouteId, CachedRoute>,
    /// The Gateways' listeners of the context with the routes of `entries` attached: where
    /// a change of routes alone ([`retranslate_routes`]) starts from.
    resolved: Option<Vec<ResolvedListener>>,
}

/// A route, by kind and key.
pub type RouteId = (RouteKind, ObjectKey);

/// One route's translation.
#[derive(Debug)]
struct CachedRoute {
    /// The route's uid, creation time and generation when it was translated.
    version: (Option<String>, Option<i64>, Option<i64>),
    fragment: Option<Arc<Fragment>>,
    status: Option<Arc<RouteStatus>>,
    /// The listeners (indices into the resolved listeners) it attached to, with counts.
    attached: Vec<(usize, i32)>,
    /// Its backends on Services that BackendTLSPolicies target.
    uses: Vec<Use>,
}

/// The fragment key of an object of `kind`.
pub fn fragment_key(kind: &str, (namespace, name): &ObjectKey) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The object a fragment key names.
pub fn parse_fragment_key(key: &str) -> Option<(&str, ObjectKey)> {
    let mut parts = key.splitn(3, '/');
    let kind = parts.next()?;
    let namespace = parts.next()?;
    let name = parts.next()?;
    Some((kind, (namespace.to_string(), name.to_string())))
}

/// Translates `objects` per `settings`; `now` stamps changed conditions.
pub fn translate(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    now: &Time,
) -> Translation {
    translate_cached(objects, settings, now, 0, &mut RouteCache::default())
}

/// [`translate`], taking from `cache` the routes translated in the same `context` (a number
/// the caller changes whenever anything but a route changes, settings and `now` included)
/// and keeping the new translations there.
pub fn translate_cached(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    now: &Time,
    context: u64,
    cache: &mut RouteCache,
) -> Translation {
    let mut out = Translation::default();
    let accepted_classes = listeners::classes(objects, settings, now, &mut out);
    let mut resolved =
        listeners::resolve_gateways(objects, settings, &accepted_classes, now, &mut out);
    if cache.context != Some(context) {
        cache.entries.clear();
        cache.context = Some(context);
    }
    // Before the routes, which ask what their Service backends get.
    let tls = backend_tls::resolve(objects);
    let mut seen = HashSet::new();
    let mut routes = Routes {
        cache,
        resolved: &mut resolved,
        out: &mut out,
        tls: &tls,
    };
    let ids = (objects.http_routes.keys().map(|k| (RouteKind::Http, k)))
        .chain(objects.grpc_routes.keys().map(|k| (RouteKind::Grpc, k)))
        .chain(objects.tls_routes.keys().map(|k| (RouteKind::Tls, k)))
        .chain(objects.tcp_routes.keys().map(|k| (RouteKind::Tcp, k)));
    for (kind, key) in ids {
        routes.translate(objects, settings, now, kind, key);
        seen.insert((kind, key.clone()));
    }
    cache.entries.retain(|id, _| seen.contains(id));
    finish(objects, settings, now, cache, &tls, resolved, &mut out);
    out
}

/// Brings `out`, the last translation made with `cache` (by [`translate_cached`] or this
/// function), up to date after changes of the routes `changed` alone (created, changed or
/// deleted; nothing else changed, so `context` is the same), translating only them: a
/// change of one route among thousands costs one route's translation. Returns false,
/// leaving `out` alone, when `cache` holds no translation made in `context`.
pub fn retranslate_routes(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    now: &Time,
    context: u64,
    cache: &mut RouteCache,
    changed: &HashSet<RouteId>,
    out: &mut Translation,
) -> bool {
    if cache.context != Some(context) {
        return false;
    }
    let Some(mut resolved) = cache.resolved.take() else {
        return false;
    };
    for (kind, key) in changed {
        let Some(old) = cache.entries.remove(&(*kind, key.clone())) else {
            continue;
        };
        for &(i, added) in &old.attached {
            resolved[i].attached -= added;
        }
        out.fragments.remove(&fragment_key(kind.name(), key));
        statuses(*kind, out).remove(key);
    }
    let tls = backend_tls::resolve(objects);
    let mut routes = Routes {
        cache,
        resolved: &mut resolved,
        out,
        tls: &tls,
    };
    for (kind, key) in changed {
        routes.translate(objects, settings, now, *kind, key);
    }
    finish(objects, settings, now, cache, &tls, resolved, out);
    true
}

/// The part of a translation after the routes: the Gateways' status (with their attached
/// routes) and the BackendTLSPolicies' (whose ancestors are the Gateways accepting routes
/// that use them); `resolved` is kept for the next change of routes.
fn finish(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    now: &Time,
    cache: &mut RouteCache,
    tls: &BackendTls,
    resolved: Vec<ResolvedListener>,
    out: &mut Translation,
) {
    listeners::finish_gateways(objects, settings, &resolved, now, out);
    let uses = cache.entries.values().flat_map(|entry| &entry.uses);
    out.backend_tls_policies = backend_tls::statuses(tls, uses, out, settings, now);
    cache.resolved = Some(resolved);
}

/// The routes' part of a translation under way.
struct Routes<'t> {
    cache: &'t mut RouteCache,
    resolved: &'t mut [ResolvedListener],
    out: &'t mut Translation,
    /// What BackendTLSPolicies apply.
    tls: &'t BackendTls,
}

impl Routes<'_> {
    /// Adds route `key` of `kind` of `objects` to the output, if it exists.
    fn translate(
        &mut self,
        objects: &GatewayObjects<'_>,
        settings: &GatewaySettings,
        now: &Time,
        kind: RouteKind,
        key: &ObjectKey,
    ) {
        let inputs = RouteInputs {
            objects,
            backend_tls: self.tls,
        };
        let inputs = &inputs;
        match kind {
            RouteKind::Http => {
                let Some(route) = objects.http_routes.get(key) else {
                    return;
                };
                self.translate_with(kind, key, &route.metadata, |resolved, part| {
                    http_route::translate(key, route, inputs, resolved, settings, now, part)
                });
            }
            RouteKind::Grpc => {
                let Some(route) = objects.grpc_routes.get(key) else {
                    return;
                };
                self.translate_with(kind, key, &route.metadata, |resolved, part| {
                    grpc_route::translate(key, route, inputs, resolved, settings, now, part)
                });
            }
            RouteKind::Tls => {
                let Some(route) = objects.tls_routes.get(key) else {
                    return;
                };
                self.translate_with(kind, key, &route.metadata, |resolved, part| {
                    stream_route::translate_tls(key, route, inputs, resolved, settings, now, part)
                });
            }
            RouteKind::Tcp => {
                let Some(route) = objects.tcp_routes.get(key) else {
                    return;
                };
                self.translate_with(kind, key, &route.metadata, |resolved, part| {
                    stream_route::translate_tcp(key, route, inputs, resolved, settings, now, part)
                });
            }
        }
    }

    /// Adds route `key` of `kind` to the output: from the cache if it was translated in
    /// this context at this version, else by `translate` (into a translation of its own,
    /// whose fragment, status and attachments are then kept).
    fn translate_with(
        &mut self,
        kind: RouteKind,
        key: &ObjectKey,
        metadata: &ObjectMeta,
        translate: impl FnOnce(&mut [ResolvedListener], &mut Translation),
    ) {
        let id = (kind, key.clone());
        let version = (metadata.uid.clone(), created(metadata), metadata.generation);
        let fragment_key = fragment_key(kind.name(), key);
        let current = self
            .cache
            .entries
            .get(&id)
            .is_some_and(|entry| entry.version == version);
        if !current {
            let before: Vec<i32> = self.resolved.iter().map(|l| l.attached).collect();
            let mut part = Translation::default();
            translate(self.resolved, &mut part);
            let mut attached = Vec::new();
            for (i, listener) in self.resolved.iter_mut().enumerate() {
                let added = listener.attached - before[i];
                if added > 0 {
                    // Counted again below, as for a route taken from the cache.
                    listener.attached -= added;
                    attached.push((i, added));
                }
            }
            let entry = CachedRoute {
                version,
                fragment: part.fragments.remove(&fragment_key),
                status: statuses(kind, &mut part).remove(key),
                attached,
                uses: self.tls.take_uses(),
            };
            self.cache.entries.insert(id.clone(), entry);
        }
        let Some(entry) = self.cache.entries.get(&id) else {
            return;
        };
        for &(i, added) in &entry.attached {
            self.resolved[i].attached += added;
        }
        if let Some(fragment) = &entry.fragment {
            self.out.fragments.insert(fragment_key, fragment.clone());
        }
        if let Some(status) = &entry.status {
            statuses(kind, self.out).insert(key.clone(), status.clone());
        }
    }
}

/// The statuses of the routes of `kind` in `translation`.
pub fn statuses(
    kind: RouteKind,
    translation: &mut Translation,
) -> &mut BTreeMap<ObjectKey, Arc<RouteStatus>> {
    match kind {
        RouteKind::Http => &mut translation.http_routes,
        RouteKind::Grpc => &mut translation.grpc_routes,
        RouteKind::Tls => &mut translation.tls_routes,
        RouteKind::Tcp => &mut translation.tcp_routes,
    }
}

/// The origin of an object of `kind`.
fn origin(kind: &str, metadata: &ObjectMeta) -> Origin {
    Origin::Object {
        kind: kind.into(),
        namespace: metadata.namespace.clone().unwrap_or_default(),
        name: metadata.name.clone().unwrap_or_default(),
        generation: metadata.generation.unwrap_or(1),
    }
}

/// When an object was created, for the compiler's oldest-wins rule.
fn created(metadata: &ObjectMeta) -> Option<i64> {
    metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions, as the API
/// server evaluates them).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// Whether a ReferenceGrant in `to_namespace` lets a `from_kind` of `from_namespace` refer
/// to the `to_kind` (core group) named `to_name`.
fn granted(
    objects: &GatewayObjects<'_>,
    from_kind: &str,
    from_namespace: &str,
    to_namespace: &str,
    to_kind: &str,
    to_name: &str,
) -> bool {
    if from_namespace == to_namespace {
        return true;
    }
    objects
        .grants
        .range((to_namespace.to_string(), String::new())..)
        .take_while(|((ns, _), _)| ns == to_namespace)
        .any(|(_, grant)| {
            let from =
                grant.spec.from.iter().any(|f| {
                    f.group == GROUP && f.kind == from_kind && f.namespace == from_namespace
                });
            let to = grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            });
            from && to
        })
}

#[cfg(test)]
mod tests;
