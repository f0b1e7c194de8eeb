//! The translation of Gateway API objects, case by case.

use super::*;
use crate::model::{GatewayListenerKind, GatewayPort, LeaseSettings, PathMatch};
use serde_json::json;

pub(super) fn settings() -> GatewaySettings {
    GatewaySettings {
        controller_name: crate::model::DEFAULT_GATEWAY_CONTROLLER.into(),
        ports: vec![
            GatewayPort {
                port: 80,
                listener: "http".into(),
                kind: GatewayListenerKind::Http,
            },
            GatewayPort {
                port: 443,
                listener: "https".into(),
                kind: GatewayListenerKind::Https,
            },
        ],
        publish: None,
        dedicated: Vec::new(),
        lease: LeaseSettings {
            namespace: "default".into(),
            name: "lease".into(),
            identity: "me".into(),
            duration: std::time::Duration::from_secs(15),
        },
    }
}

pub(super) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

pub(super) fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// Owned objects for [`translate`], which borrows them.
#[derive(Default)]
struct Objects {
    classes: BTreeMap<ObjectKey, GatewayClass>,
    gateways: BTreeMap<ObjectKey, Gateway>,
    listener_sets: BTreeMap<ObjectKey, api::listenersets::ListenerSet>,
    http_routes: BTreeMap<ObjectKey, HttpRoute>,
    tls_routes: BTreeMap<ObjectKey, TlsRoute>,
    tcp_routes: BTreeMap<ObjectKey, TcpRoute>,
    grpc_routes: BTreeMap<ObjectKey, GrpcRoute>,
    grants: BTreeMap<ObjectKey, ReferenceGrant>,
    namespaces: BTreeMap<ObjectKey, Namespace>,
    services: BTreeMap<ObjectKey, Service>,
    secrets: BTreeMap<ObjectKey, Secret>,
    backend_tls_policies: BTreeMap<ObjectKey, BackendTlsPolicy>,
    config_maps: BTreeMap<ObjectKey, ConfigMap>,
}

impl Objects {
    fn translate(&self) -> Translation {
        translate(&self.view(), &settings(), &now())
    }

    fn translate_with(&self, settings: &GatewaySettings) -> Translation {
        translate(&self.view(), settings, &now())
    }

    fn view(&self) -> GatewayObjects<'_> {
        GatewayObjects {
            classes: &self.classes,
            gateways: &self.gateways,
            listener_sets: &self.listener_sets,
            http_routes: &self.http_routes,
            tls_routes: &self.tls_routes,
            tcp_routes: &self.tcp_routes,
            grpc_routes: &self.grpc_routes,
            grants: &self.grants,
            namespaces: &self.namespaces,
            services: &self.services,
            secrets: &self.secrets,
            backend_tls_policies: &self.backend_tls_policies,
            config_maps: &self.config_maps,
        }
    }
}

/// A class of sluice's, a Gateway `gw` in `infra` with one HTTP listener on 80 (routes from
/// all namespaces), and Service `web` in `apps`.
fn objects() -> Objects {
    let mut o = Objects::default();
    o.classes.insert(
        (String::new(), "sluice".into()),
        object(json!({"metadata": {"name": "sluice", "generation": 1},
            "spec": {"controllerName": crate::model::DEFAULT_GATEWAY_CONTROLLER}})),
    );
    o.classes.insert(
        (String::new(), "other".into()),
        object(json!({"metadata": {"name": "other"}, "spec": {"controllerName": "x.io/y"}})),
    );
    o.gateways.insert(
        ("infra".into(), "gw".into()),
        object(json!({"metadata": {"name": "gw", "namespace": "infra", "generation": 2},
            "spec": {"gatewayClassName": "sluice", "listeners": [
                {"name": "web", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "only-infra", "port": 80, "protocol": "HTTP", "hostname": "infra.example.com"},
            ]}})),
    );
    o.services.insert(
        ("apps".into(), "web".into()),
        object(json!({"metadata": {"name": "web", "namespace": "apps"},
            "spec": {"ports": [{"name": "http", "port": 8080}]}})),
    );
    o
}

fn route(spec: serde_json::Value) -> HttpRoute {
    object(json!({"metadata": {"name": "r", "namespace": "apps", "generation": 3}, "spec": spec}))
}

fn condition_of<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> (&'a str, &'a str) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn classes_of_other_controllers_are_left_alone() {
    let t = objects().translate();
    assert_eq!(t.classes.keys().collect::<Vec<_>>(), ["sluice"]);
    let conditions = t.classes["sluice"].conditions.clone().unwrap_or_default();
    assert_eq!(condition_of(&conditions, "Accepted"), ("True", "Accepted"));
    assert_eq!(conditions[0].observed_generation, Some(1));
}

#[test]
fn an_http_route_attaches_with_its_matches_and_hostnames() {
    let mut o = objects();
    o.http_routes.insert(
        ("apps".into(), "r".into()),
        route(json!({
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
            "hostnames": ["shop.example.com"],
            "rules": [{
                "matches": [{"path": {"type": "Exact", "value": "/cart"},
                             "headers": [{"name": "X-Version", "value": "2"}],
                             "method": "POST"}],
                "backendRefs": [{"name": "web", "port": 8080}],
            }],
        })),
    );
    let t = o.translate();
    let status = &t.http_routes[&("apps".into(), "r".into())];
    let parent = &status.parents[0];
    assert_eq!(
        condition_of(&parent.conditions, "Accepted"),
        ("True", "Accepted")
    );
    assert_eq!(
        condition_of(&parent.conditions, "ResolvedRefs"),
        ("True", "ResolvedRefs")
    );
    assert_eq!(parent.conditions[0].observed_generation, Some(3));
    let fragment = &t.fragments["HTTPRoute/apps/r"];
    assert_eq!(fragment.routes.len(), 1);
    let r = &fragment.routes[0];
    assert_eq!(r.listener, "http");
    assert_eq!(
        r.hosts,
        [crate::model::HostMatch::Exact("shop.example.com".into())]
    );
    assert!(matches!(&r.paths[0], PathMatch::Exact(p) if p == "/cart"));
    assert_eq!(r.conditions.methods, [http::Method::POST]);
    assert_eq!(r.conditions.headers[0].name, "x-version");
    // The listener counts the route.
    let gateway = &t.gateways[&("infra".into(), "gw".into())];
    let listeners = gateway.listeners.clone().unwrap_or_default();
    assert_eq!(listeners[0].attached_routes, 1);
    assert_eq!(listeners[1].attached_routes, 0);
}

#[test]
fn a_dedicated_gateway_is_served_by_its_own_listeners_only() {
    let mut settings = settings();
    settings.dedicated.push(crate::model::DedicatedGateway {
        namespace: "infra".into(),
        name: "own".into(),
        ports: vec![GatewayPort {
            port: 80,
            listener: "http-own".into(),
            kind: GatewayListenerKind::Http,
        }],
        publish: Some(crate::model::PublishAddress::Addresses(vec![
            "10.0.0.2".into()
        ])),
    });
    let mut o = objects();
    o.gateways.insert(
        ("infra".into(), "own".into()),
        object(
            json!({"metadata": {"name": "own", "namespace": "infra", "generation": 1},
            "spec": {"gatewayClassName": "sluice", "listeners": [
                {"name": "web", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "secure", "port": 443, "protocol": "HTTPS"},
            ]}}),
        ),
    );
    o.http_routes.insert(
        ("apps".into(), "r".into()),
        route(json!({
            "parentRefs": [
                {"name": "gw", "namespace": "infra", "sectionName": "web"},
                {"name": "own", "namespace": "infra", "sectionName": "web"},
            ],
            "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}],
        })),
    );
    let t = o.translate_with(&settings);
    let listeners: std::collections::BTreeSet<&str> = t.fragments["HTTPRoute/apps/r"]
        .routes
        .iter()
        .map(|r| r.listener.as_str())
        .collect();
    assert_eq!(
        listeners,
        std::collections::BTreeSet::from(["http", "http-own"])
    );
    let own = &t.gateways[&("infra".into(), "own".into())];
    let addresses: Vec<&str> = own
        .addresses
        .iter()
        .flatten()
        .map(|a| a.value.as_str())
        .collect();
    assert_eq!(addresses, ["10.0.0.2"]);
    // The shared port 443 is not the dedicated Gateway's.
    let secure = own
        .listeners
        .iter()
        .flatten()
        .find(|l| l.name == "secure")
        .expect("listener secure");
    assert_eq!(
        condition_of(&secure.conditions, "Accepted"),
        ("False", "PortUnavailable")
    );
    let shared = &t.gateways[&("infra".into(), "gw".into())];
    assert_eq!(shared.addresses, None);
}

#[test]
fn a_gateway_gets_only_addresses_sluice_is_reached_on() {
    let mut settings = settings();
    settings.publish = Some(crate::model::PublishAddress::Addresses(vec![
        "10.0.0.1".into(),
        "lb.example.com".into(),
    ]));
    let status_with = |addresses: serde_json::Value| {
        let mut o = objects();
        o.gateways.insert(
            ("infra".into(), "gw".into()),
            object(
                json!({"metadata": {"name": "gw", "namespace": "infra", "generation": 1},
                "spec": {"gatewayClassName": "sluice", "addresses": addresses,
                    "listeners": [{"name": "web", "port": 80, "protocol": "HTTP"}]}}),
            ),
        );
        let t = o.translate_with(&settings);
        t.gateways[&("infra".into(), "gw".into())].clone()
    };
    let values = |status: &GatewayStatus| -> Vec<String> {
        status
            .addresses
            .iter()
            .flatten()
            .map(|a| format!("{}={}", a.r#type.clone().unwrap_or_default(), a.value))
            .collect()
    };
    let conditions = |status: &GatewayStatus, type_: &str| -> (String, String) {
        let (s, r) = condition_of(status.conditions.as_deref().unwrap_or_default(), type_);
        (s.to_string(), r.to_string())
    };
    let pair = |s: &str, r: &str| (s.to_string(), r.to_string());
    // None asked for, or one without a value: all published.
    for asked in [json!(null), json!([{"type": "IPAddress"}])] {
        let status = status_with(asked);
        assert_eq!(
            values(&status),
            ["IPAddress=10.0.0.1", "Hostname=lb.example.com"]
        );
        assert_eq!(
            conditions(&status, "Programmed"),
            pair("True", "Programmed")
        );
    }
    // A published one: only it.
    let status = status_with(json!([{"type": "Hostname", "value": "lb.example.com"}]));
    assert_eq!(values(&status), ["Hostname=lb.example.com"]);
    // One sluice is not reached on: accepted, not programmed.
    let status = status_with(json!([{"value": "192.0.2.1"}, {"value": "10.0.0.1"}]));
    assert_eq!(conditions(&status, "Accepted"), pair("True", "Accepted"));
    assert_eq!(
        conditions(&status, "Programmed"),
        pair("False", "AddressNotUsable")
    );
    assert_eq!(values(&status), ["IPAddress=10.0.0.1"]);
    // A type sluice does not know: not accepted.
    let status = status_with(json!([{"type": "example.com/named", "value": "x"}]));
    assert_eq!(
        conditions(&status, "Accepted"),
        pair("False", "UnsupportedAddress")
    );
}

#[test]
fn listener_sets_join_after_the_gateway_and_lose_conflicts_to_earlier_listeners() {
    let mut o = objects();
    o.gateways.insert(
        ("infra".into(), "gw".into()),
        object(json!({"metadata": {"name": "gw", "namespace": "infra", "generation": 1},
            "spec": {"gatewayClassName": "sluice",
                "allowedListeners": {"namespaces": {"from": "Same"}},
                "listeners": [{"name": "a", "port": 80, "protocol": "HTTP", "hostname": "a.com"}]}})),
    );
    let set = |namespace: &str, name: &str, created: &str, listeners: serde_json::Value| {
        object::<api::listenersets::ListenerSet>(json!({
            "metadata": {"name": name, "namespace": namespace, "generation": 1,
                "creationTimestamp": created},
            "spec": {"parentRef": {"name": "gw", "namespace": "infra"}, "listeners": listeners},
        }))
    };
    let http = |name: &str, host: &str| json!({"name": name, "port": 80, "protocol": "HTTP", "hostname": host});
    // Younger but first by name: precedence is by age.
    o.listener_sets.insert(
        ("infra".into(), "a-young".into()),
        set(
            "infra",
            "a-young",
            "2026-01-02T00:00:00Z",
            json!([http("b", "b.com")]),
        ),
    );
    o.listener_sets.insert(
        ("infra".into(), "z-old".into()),
        set(
            "infra",
            "z-old",
            "2026-01-01T00:00:00Z",
            json!([
                http("a", "a.com"),
                http("b", "B.com"),
                {"name": "tcp", "port": 80, "protocol": "TCP"},
            ]),
        ),
    );
    o.listener_sets.insert(
        ("apps".into(), "elsewhere".into()),
        set(
            "apps",
            "elsewhere",
            "2026-01-01T00:00:00Z",
            json!([http("c", "c.com")]),
        ),
    );
    let t = o.translate();
    let listener = |set: &str, name: &str, type_: &str| -> (String, String) {
        let status = &t.listener_sets[&("infra".to_string(), set.to_string())];
        let l = status
            .listeners
            .iter()
            .flatten()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("listener {set}/{name}"));
        let (s, r) = condition_of(&l.conditions, type_);
        (s.to_string(), r.to_string())
    };
    let pair = |s: &str, r: &str| (s.to_string(), r.to_string());
    assert_eq!(
        listener("z-old", "a", "Conflicted"),
        pair("True", "HostnameConflict")
    );
    assert_eq!(
        listener("z-old", "b", "Programmed"),
        pair("True", "Programmed")
    );
    assert_eq!(
        listener("z-old", "tcp", "Accepted"),
        pair("False", "ProtocolConflict")
    );
    assert_eq!(
        listener("a-young", "b", "Accepted"),
        pair("False", "HostnameConflict")
    );
    let set_condition = |namespace: &str, name: &str, type_: &str| -> (String, String) {
        let status = &t.listener_sets[&(namespace.to_string(), name.to_string())];
        let (s, r) = condition_of(status.conditions.as_deref().unwrap_or_default(), type_);
        (s.to_string(), r.to_string())
    };
    assert_eq!(
        set_condition("infra", "z-old", "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        set_condition("infra", "a-young", "Programmed"),
        pair("False", "ListenersNotValid")
    );
    assert_eq!(
        set_condition("apps", "elsewhere", "Accepted"),
        pair("False", "NotAllowed")
    );
    // The Gateway keeps its own listeners only, and counts the set it serves.
    let gateway = &t.gateways[&("infra".into(), "gw".into())];
    assert_eq!(gateway.listeners.as_ref().map(Vec::len), Some(1));
    assert_eq!(gateway.attached_listener_sets, Some(1));
}

/// The listeners' attached route counts of Gateway `infra/gw`.
fn attached(t: &Translation) -> Vec<i32> {
    let gateway = &t.gateways[&("infra".into(), "gw".into())];
    let listeners = gateway.listeners.clone().unwrap_or_default();
    listeners.iter().map(|l| l.attached_routes).collect()
}

#[test]
fn cached_routes_are_reused_until_they_or_their_context_change() {
    let mut o = objects();
    for name in ["a", "b"] {
        let mut r = route(json!({
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}],
        }));
        r.metadata.name = Some(name.into());
        o.http_routes.insert(("apps".into(), name.into()), r);
    }
    let mut cache = RouteCache::default();
    let first = translate_cached(&o.view(), &settings(), &now(), 1, &mut cache);
    let again = translate_cached(&o.view(), &settings(), &now(), 1, &mut cache);
    let same = |t: &Translation, u: &Translation, key: &str| {
        Arc::ptr_eq(&t.fragments[key], &u.fragments[key])
    };
    assert!(same(&first, &again, "HTTPRoute/apps/a"));
    assert!(same(&first, &again, "HTTPRoute/apps/b"));
    // Attachments taken from the cache are counted as when translated.
    assert_eq!(attached(&first), [2, 0]);
    assert_eq!(attached(&again), [2, 0]);
    assert_eq!(again.http_routes, o.translate().http_routes);

    // A new generation of one route: only it is translated again.
    let key = ("apps".to_string(), "b".to_string());
    if let Some(r) = o.http_routes.get_mut(&key) {
        r.metadata.generation = Some(4);
    }
    let changed = translate_cached(&o.view(), &settings(), &now(), 1, &mut cache);
    assert!(same(&again, &changed, "HTTPRoute/apps/a"));
    assert!(!same(&again, &changed, "HTTPRoute/apps/b"));
    assert_eq!(attached(&changed), [2, 0]);

    // Another context (say a Service changed): everything is translated again.
    let context = translate_cached(&o.view(), &settings(), &now(), 2, &mut cache);
    assert!(!same(&changed, &context, "HTTPRoute/apps/a"));

    // A deleted route leaves the output and the cache.
    o.http_routes.remove(&key);
    let deleted = translate_cached(&o.view(), &settings(), &now(), 2, &mut cache);
    assert!(!deleted.fragments.contains_key("HTTPRoute/apps/b"));
    assert_eq!(attached(&deleted), [1, 0]);
}

#[test]
fn refusals_carry_the_specified_reasons() {
    let cases = [
        (
            json!({"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "only-infra"}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}),
            ("Accepted", "False", "NotAllowedByListeners"),
        ),
        (
            json!({"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "nope"}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}),
            ("Accepted", "False", "NoMatchingParent"),
        ),
        (
            json!({"parentRefs": [{"name": "gw", "namespace": "infra", "port": 81}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}),
            ("Accepted", "False", "NoMatchingParent"),
        ),
        (
            json!({"parentRefs": [{"name": "gw", "namespace": "infra"}],
                   "rules": [{"backendRefs": [{"name": "missing", "port": 8080}]}]}),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ),
        (
            json!({"parentRefs": [{"name": "gw", "namespace": "infra"}],
                   "rules": [{"backendRefs": [{"name": "web", "kind": "Bucket", "group": "x.io", "port": 8080}]}]}),
            ("ResolvedRefs", "False", "InvalidKind"),
        ),
        (
            json!({"parentRefs": [{"name": "gw", "namespace": "infra"}],
                   "rules": [{"backendRefs": [{"name": "web", "namespace": "other", "port": 8080}]}]}),
            ("ResolvedRefs", "False", "RefNotPermitted"),
        ),
    ];
    for (spec, (type_, status, reason)) in cases {
        let mut o = objects();
        o.http_routes
            .insert(("apps".into(), "r".into()), route(spec.clone()));
        let t = o.translate();
        let parent = &t.http_routes[&("apps".into(), "r".into())].parents[0];
        assert_eq!(
            condition_of(&parent.conditions, type_),
            (status, reason),
            "{spec}"
        );
    }
}

#[test]
fn hostnames_intersect_with_the_listeners() {
    use super::attach::intersect;
    assert_eq!(intersect(None, &[]), Some(vec![]));
    assert_eq!(
        intersect(Some("*.example.com"), &[]),
        Some(vec!["*.example.com".into()])
    );
    assert_eq!(
        intersect(
            Some("*.example.com"),
            &[
                "a.example.com".into(),
                "other.org".into(),
                "*.b.example.com".into()
            ]
        ),
        Some(vec!["a.example.com".into(), "*.b.example.com".into()])
    );
    // A route wildcard wider than the listener's name narrows to it.
    assert_eq!(
        intersect(Some("a.example.com"), &["*.example.com".into()]),
        Some(vec!["a.example.com".into()])
    );
    assert_eq!(
        intersect(Some("a.example.com"), &["b.example.com".into()]),
        None
    );
}

/// `objects()` with Service `secure` in `apps` (port `https` 8443), a CA in ConfigMap
/// `apps/ca`, and BackendTLSPolicy `apps/tls` (generation 5) targeting port `https` of
/// `secure` with `validation`.
fn with_policy(validation: serde_json::Value) -> Objects {
    let mut o = objects();
    o.services.insert(
        ("apps".into(), "secure".into()),
        object(json!({"metadata": {"name": "secure", "namespace": "apps"},
            "spec": {"ports": [{"name": "https", "port": 8443}]}})),
    );
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).expect("CA certificate").pem();
    o.config_maps.insert(
        ("apps".into(), "ca".into()),
        object(json!({"metadata": {"name": "ca", "namespace": "apps"}, "data": {"ca.crt": ca}})),
    );
    o.backend_tls_policies.insert(
        ("apps".into(), "tls".into()),
        object(json!({
            "metadata": {"name": "tls", "namespace": "apps", "generation": 5,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "targetRefs": [{"group": "", "kind": "Service", "name": "secure", "sectionName": "https"}],
                "validation": validation,
            },
        })),
    );
    o
}

/// The CA of `with_policy`, by reference.
fn ca_ref() -> serde_json::Value {
    json!({"hostname": "secure.example.com",
           "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]})
}

/// (status, reason) of condition `type_` of policy `apps/tls` on its ancestor Gateway
/// `infra/gw`, checked at the policy's generation.
fn policy_condition(t: &Translation, type_: &str) -> (String, String) {
    let status = t
        .backend_tls_policies
        .get(&("apps".to_string(), "tls".to_string()))
        .unwrap_or_else(|| panic!("no policy status in {:?}", t.backend_tls_policies));
    assert_eq!(status.ancestors.len(), 1, "{status:?}");
    let ancestor = &status.ancestors[0];
    assert_eq!(ancestor.ancestor_ref.name, "gw");
    assert_eq!(ancestor.ancestor_ref.namespace.as_deref(), Some("infra"));
    assert_eq!(
        ancestor.controller_name,
        crate::model::DEFAULT_GATEWAY_CONTROLLER
    );
    let (status, reason) = condition_of(&ancestor.conditions, type_);
    let generation = ancestor
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| c.observed_generation);
    assert_eq!(generation, Some(5));
    (status.to_string(), reason.to_string())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

#[test]
fn a_backend_tls_policy_gives_the_upstream_tls_and_lists_the_gateway() {
    let mut o = with_policy(ca_ref());
    o.http_routes.insert(
        ("apps".into(), "r".into()),
        route(json!({
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
            "rules": [{"backendRefs": [{"name": "secure", "port": 8443}, {"name": "web", "port": 8080}]}],
        })),
    );
    let t = o.translate();
    let parent = &t.http_routes[&("apps".into(), "r".into())].parents[0];
    assert_eq!(
        condition_of(&parent.conditions, "ResolvedRefs"),
        ("True", "ResolvedRefs")
    );
    let upstreams = &t.fragments["HTTPRoute/apps/r"].upstreams;
    let secure = upstreams
        .iter()
        .find(|u| u.name.ends_with("apps/secure:8443"))
        .expect("the secure upstream");
    let tls = secure.tls.as_ref().expect("TLS towards secure");
    assert_eq!(tls.sni, "secure.example.com");
    assert!(tls.verify);
    assert_eq!(tls.ca_certificates.len(), 1);
    assert_eq!(secure.protocol, crate::model::UpstreamProtocol::Http1);
    // A Service no policy targets stays in plaintext.
    let web = upstreams
        .iter()
        .find(|u| u.name.ends_with("apps/web:8080"))
        .expect("the web upstream");
    assert_eq!(web.tls, None);
    assert_eq!(policy_condition(&t, "Accepted"), pair("True", "Accepted"));
    assert_eq!(
        policy_condition(&t, "ResolvedRefs"),
        pair("True", "ResolvedRefs")
    );
}

#[test]
fn grpc_backends_of_a_policy_speak_http2_over_tls() {
    let mut o = with_policy(ca_ref());
    o.grpc_routes.insert(
        ("apps".into(), "g".into()),
        object(json!({
            "metadata": {"name": "g", "namespace": "apps", "generation": 1},
            "spec": {
                "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
                "rules": [{"backendRefs": [{"name": "secure", "port": 8443}]}],
            },
        })),
    );
    let t = o.translate();
    let upstream = &t.fragments["GRPCRoute/apps/g"].upstreams[0];
    assert_eq!(upstream.protocol, crate::model::UpstreamProtocol::H2);
    assert!(upstream.tls.is_some());
    assert_eq!(policy_condition(&t, "Accepted"), pair("True", "Accepted"));
}

#[test]
fn a_backend_whose_policy_cannot_be_met_is_an_invalid_reference_answered_500() {
    let mut o = with_policy(json!({
        "hostname": "secure.example.com",
        "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "missing"}],
    }));
    o.http_routes.insert(
        ("apps".into(), "r".into()),
        route(json!({
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
            "rules": [{"backendRefs": [{"name": "secure", "port": 8443}]}],
        })),
    );
    let t = o.translate();
    // The route is served (Accepted), its backend is not: no plaintext fallback.
    let parent = &t.http_routes[&("apps".into(), "r".into())].parents[0];
    assert_eq!(
        condition_of(&parent.conditions, "Accepted"),
        ("True", "Accepted")
    );
    assert_eq!(
        condition_of(&parent.conditions, "ResolvedRefs"),
        ("False", super::backend_tls::INVALID_POLICY)
    );
    let fragment = &t.fragments["HTTPRoute/apps/r"];
    assert!(fragment.upstreams.is_empty(), "{:?}", fragment.upstreams);
    let unresolved = fragment.routes[0].unresolved.as_deref().unwrap_or_default();
    assert!(
        unresolved.contains("BackendTLSPolicy apps/tls"),
        "{unresolved}"
    );
    assert_eq!(
        policy_condition(&t, "Accepted"),
        pair("False", "NoValidCACertificate")
    );
    assert_eq!(
        policy_condition(&t, "ResolvedRefs"),
        pair("False", "InvalidCACertificateRef")
    );
}

#[test]
fn a_policy_no_accepted_route_uses_has_no_status() {
    let mut o = with_policy(ca_ref());
    // Not attached: the only listener of `only-infra` takes routes of `infra` alone.
    o.http_routes.insert(
        ("apps".into(), "r".into()),
        route(json!({
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "only-infra"}],
            "rules": [{"backendRefs": [{"name": "secure", "port": 8443}]}],
        })),
    );
    let t = o.translate();
    assert!(
        t.backend_tls_policies.is_empty(),
        "{:?}",
        t.backend_tls_policies
    );
}

#[test]
fn a_policy_keeps_its_ancestors_when_its_routes_come_from_the_cache() {
    let mut o = with_policy(ca_ref());
    o.http_routes.insert(
        ("apps".into(), "r".into()),
        route(json!({
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
            "rules": [{"backendRefs": [{"name": "secure", "port": 8443}]}],
        })),
    );
    let mut cache = RouteCache::default();
    let first = translate_cached(&o.view(), &settings(), &now(), 7, &mut cache);
    assert_eq!(
        policy_condition(&first, "Accepted"),
        ("True".to_string(), "Accepted".to_string())
    );
    // The same context: the route is taken from the cache, its use of the policy too.
    let second = translate_cached(&o.view(), &settings(), &now(), 7, &mut cache);
    assert!(Arc::ptr_eq(
        &first.fragments["HTTPRoute/apps/r"],
        &second.fragments["HTTPRoute/apps/r"]
    ));
    assert_eq!(first.backend_tls_policies, second.backend_tls_policies);
}

/// What a translation says, comparable: fragments by their debug text, statuses as they are.
fn comparable(t: &Translation) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        t.fragments, t.classes, t.gateways, t.http_routes, t.grpc_routes, t.backend_tls_policies
    )
}

#[test]
fn retranslating_changed_routes_gives_what_a_full_translation_gives() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let mut o = with_policy(ca_ref());
    o.services.insert(
        ("apps".into(), "other".into()),
        object(json!({"metadata": {"name": "other", "namespace": "apps"},
            "spec": {"ports": [{"name": "http", "port": 8080}]}})),
    );
    let mut cache = RouteCache::default();
    let context = 1;
    let mut current = translate_cached(&o.view(), &settings(), &now(), context, &mut cache);
    for round in 0..500 {
        // A few routes created, changed or deleted; their hosts, listener sections and
        // backends vary, so attachments, refusals and policy uses change too.
        let mut changed = HashSet::new();
        for _ in 0..rng.gen_range(1..4) {
            let name = format!("r{}", rng.gen_range(0..12));
            let key: ObjectKey = ("apps".into(), name.clone());
            if rng.gen_bool(0.2) {
                o.http_routes.remove(&key);
            } else {
                let section = ["web", "only-infra", "nope"][rng.gen_range(0..3)];
                let host = ["a.example.com", "infra.example.com", "b.test"][rng.gen_range(0..3)];
                let backend = ["web", "secure", "other", "missing"][rng.gen_range(0..4)];
                let port = if backend == "secure" { 8443 } else { 8080 };
                let generation = round + 1;
                o.http_routes.insert(
                    key.clone(),
                    object(json!({
                        "metadata": {"name": name, "namespace": "apps", "generation": generation,
                                     "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "spec": {
                            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": section}],
                            "hostnames": [host],
                            "rules": [{"backendRefs": [{"name": backend, "port": port}]}],
                        },
                    })),
                );
            }
            changed.insert((RouteKind::Http, key));
        }
        let view = o.view();
        assert!(retranslate_routes(
            &view,
            &settings(),
            &now(),
            context,
            &mut cache,
            &changed,
            &mut current
        ));
        let full = translate(&view, &settings(), &now());
        assert_eq!(comparable(&current), comparable(&full), "round {round}");
    }
    // Another context: a full translation is needed.
    let view = o.view();
    let changed = HashSet::new();
    assert!(!retranslate_routes(
        &view,
        &settings(),
        &now(),
        context + 1,
        &mut cache,
        &changed,
        &mut current
    ));
}
