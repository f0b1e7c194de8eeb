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
mod conditions;
mod grpc_route;
mod http_route;
mod listeners;
mod stream_route;

use crate::model::{Fragment, GatewaySettings, Origin};
use api::gatewayclasses::{GatewayClass, GatewayClassStatus};
use api::gateways::{Gateway, GatewayStatus};
use api::grpcroutes::GrpcRoute;
use api::httproutes::HttpRoute;
use api::referencegrants::ReferenceGrant;
use api::tcproutes::TcpRoute;
use api::tlsroutes::TlsRoute;
pub use attach::RouteStatus;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use std::collections::BTreeMap;

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
    pub http_routes: &'a BTreeMap<ObjectKey, HttpRoute>,
    pub grpc_routes: &'a BTreeMap<ObjectKey, GrpcRoute>,
    pub tls_routes: &'a BTreeMap<ObjectKey, TlsRoute>,
    pub tcp_routes: &'a BTreeMap<ObjectKey, TcpRoute>,
    pub grants: &'a BTreeMap<ObjectKey, ReferenceGrant>,
    pub namespaces: &'a BTreeMap<ObjectKey, Namespace>,
    pub services: &'a BTreeMap<ObjectKey, Service>,
    pub secrets: &'a BTreeMap<ObjectKey, Secret>,
}

/// What the objects become.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// By fragment key: `Gateway/NS/NAME`, `HTTPRoute/NS/NAME`.
    pub fragments: BTreeMap<String, Fragment>,
    /// The status of each GatewayClass of sluice's controller.
    pub classes: BTreeMap<String, GatewayClassStatus>,
    /// The status of each Gateway of those classes.
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// The status of each HTTPRoute with a parent among those Gateways (only those
    /// parents' entries).
    pub http_routes: BTreeMap<ObjectKey, RouteStatus>,
    /// The same for each GRPCRoute.
    pub grpc_routes: BTreeMap<ObjectKey, RouteStatus>,
    /// The same for each TLSRoute.
    pub tls_routes: BTreeMap<ObjectKey, RouteStatus>,
    /// The same for each TCPRoute.
    pub tcp_routes: BTreeMap<ObjectKey, RouteStatus>,
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
    let mut out = Translation::default();
    let accepted_classes = listeners::classes(objects, settings, now, &mut out);
    let mut resolved =
        listeners::resolve_gateways(objects, settings, &accepted_classes, now, &mut out);
    for (key, route) in objects.http_routes {
        http_route::translate(key, route, objects, &mut resolved, settings, now, &mut out);
    }
    for (key, route) in objects.grpc_routes {
        grpc_route::translate(key, route, objects, &mut resolved, settings, now, &mut out);
    }
    for (key, route) in objects.tls_routes {
        stream_route::translate_tls(key, route, objects, &mut resolved, settings, now, &mut out);
    }
    for (key, route) in objects.tcp_routes {
        stream_route::translate_tcp(key, route, objects, &mut resolved, settings, now, &mut out);
    }
    listeners::finish_gateways(objects, settings, &resolved, now, &mut out);
    out
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
