//! Gateway API conformance, reproduced: each test is one upstream conformance test (Gateway
//! API v1.6.1, `conformance/tests/`), named after it, applying the same manifests
//! (`tests/data/gateway-conformance/`, copied unchanged) to the fake API server and
//! asserting what the upstream test asserts: the status conditions the controller writes
//! and the responses of the real binary. The upstream suite's base manifests give every
//! Service of the conformance namespaces a backend here, named `NAMESPACE/SERVICE` (the
//! echo server of the suite reports its pod's namespace and name the same way).

mod support;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use serde_json::Value;
use sluice::sources::kubernetes::gateway::api::gatewayclasses::GatewayClass;
use sluice::sources::kubernetes::gateway::api::gateways::Gateway;
use sluice::sources::kubernetes::gateway::api::httproutes::HttpRoute;
use sluice::sources::kubernetes::gateway::api::referencegrants::ReferenceGrant;
use std::net::SocketAddr;
use support::fake_kube::{ready, slice, FakeKube};
use support::*;

const CONTROLLER: &str = "sluice.dev/gateway-controller";
const INFRA: &str = "gateway-conformance-infra";
const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/gateway-conformance"
);

/// The objects of a manifest file, with the suite's class name placeholder filled in.
fn manifest(name: &str) -> Vec<Value> {
    let path = format!("{DATA}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let text = text.replace("{GATEWAY_CLASS_NAME}", "sluice");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn typed<K: serde::de::DeserializeOwned>(value: &Value) -> K {
    serde_json::from_value(value.clone()).expect("an object of its kind")
}

/// A conformance environment: the fake API server with the base manifests and a test's
/// own, a backend per Service, and sluice serving the Gateways' port 80.
struct Conformance {
    kube: FakeKube,
    backends: Vec<Backend>,
    /// Kept for its lifetime: dropping it stops the process.
    _sluice: Sluice,
    http: SocketAddr,
}

impl Conformance {
    fn start(manifests: &[&str]) -> Self {
        let kube = FakeKube::start();
        kube.apply(typed::<GatewayClass>(&serde_json::json!({
            "metadata": {"name": "sluice"},
            "spec": {"controllerName": CONTROLLER},
        })));
        let mut backends = Vec::new();
        for name in std::iter::once("base.yaml").chain(manifests.iter().copied()) {
            for object in manifest(name) {
                if let Some(backend) = apply(&kube, &object) {
                    backends.push(backend);
                }
            }
        }
        let http = listen_address();
        let sluice = Sluice::start(&format!(
            "kubernetes: {{ api_server: \"{}\" }}\n\
             listeners: [{{ name: http, listen: \"{http}\" }}]\n\
             gateway: {{ listeners: [{{ port: 80, listener: http }}] }}\n\
             routes: []\n",
            kube.url()
        ));
        Self {
            kube,
            backends,
            _sluice: sluice,
            http,
        }
    }

    /// Waits until every parent of sluice's in the route's status says `type_` is
    /// `status` with `reason` for the route's current generation.
    fn route_condition(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) {
        let found = self.kube.wait_until(READY_TIMEOUT, |kube| {
            let Some(route) = kube.get::<HttpRoute>(namespace, name) else {
                return false;
            };
            let generation = route.metadata.generation;
            let parents = route.status.map(|s| s.parents).unwrap_or_default();
            !parents.is_empty()
                && parents.iter().all(|p| {
                    p.controller_name == CONTROLLER
                        && p.conditions.iter().any(|c| {
                            c.type_ == type_
                                && c.status == status
                                && c.reason == reason
                                && c.observed_generation == generation
                        })
                })
        });
        assert!(
            found,
            "HTTPRoute {namespace}/{name}: no {type_}={status} ({reason}) in {:?}",
            self.kube
                .get::<HttpRoute>(namespace, name)
                .and_then(|r| r.status)
        );
    }

    /// GatewayAndHTTPRoutesMustBeAccepted and HTTPRouteMustHaveResolvedRefsConditionsTrue.
    fn accepted(&self, namespace: &str, name: &str) {
        self.route_condition(namespace, name, "Accepted", "True", "Accepted");
        self.route_condition(namespace, name, "ResolvedRefs", "True", "ResolvedRefs");
    }

    /// MakeRequestAndExpectEventuallyConsistentResponse: `method path` with `headers`
    /// answers from `backend` (`NAMESPACE/SERVICE`), or with `status` when `backend` is "".
    fn expect(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
        backend: &str,
    ) {
        let answer = || {
            let response = Client::connect(self.http).request(method, path, headers);
            (response.status, response.backend().to_string())
        };
        let wanted = (status, backend.to_string());
        wait_until(
            &format!("{method} {path} {headers:?} to answer {status} from {backend:?}"),
            READY_TIMEOUT,
            || answer() == wanted,
        );
        // And consistently so.
        for _ in 0..3 {
            assert_eq!(answer(), wanted, "{method} {path} {headers:?}");
        }
    }

    /// The requests backend `name` (`NAMESPACE/SERVICE`) has seen.
    fn requests_of(&self, name: &str) -> Vec<SeenRequest> {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.requests())
            .unwrap_or_default()
    }
}

/// Applies one manifest object; a Service gets a backend and an EndpointSlice for each of
/// its ports.
fn apply(kube: &FakeKube, object: &Value) -> Option<Backend> {
    match object["kind"].as_str().unwrap_or_default() {
        "Namespace" => {
            kube.apply(typed::<Namespace>(object));
        }
        "Gateway" => {
            kube.apply(typed::<Gateway>(object));
        }
        "HTTPRoute" => {
            kube.apply(typed::<HttpRoute>(object));
        }
        "ReferenceGrant" => {
            kube.apply(typed::<ReferenceGrant>(object));
        }
        "Secret" => {
            kube.apply(typed::<Secret>(object));
        }
        "Service" => {
            let service: Service = typed(object);
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let name = service.metadata.name.clone().unwrap_or_default();
            let backend = Backend::start(&format!("{namespace}/{name}"), Behavior::Echo);
            let ports = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.clone())
                .unwrap_or_default();
            kube.apply(service);
            for (i, port) in ports.iter().enumerate() {
                let port_name = port.name.clone().unwrap_or_default();
                kube.apply(slice(
                    &namespace,
                    &format!("{name}-{i}"),
                    &name,
                    (&port_name, backend.address.port()),
                    &[ready(&backend.address.ip().to_string())],
                ));
            }
            return Some(backend);
        }
        // Deployments, ConfigMaps: the backends above stand in for them.
        _ => {}
    }
    None
}

fn v(n: u8) -> String {
    format!("{INFRA}/infra-backend-v{n}")
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteSimpleSameNamespace() {
    let c = Conformance::start(&["httproute-simple-same-namespace.yaml"]);
    c.accepted(INFRA, "gateway-conformance-infra-test");
    c.expect("GET", "/", &[], 200, &v(1));
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteExactPathMatching() {
    let c = Conformance::start(&["httproute-exact-path-matching.yaml"]);
    c.accepted(INFRA, "exact-matching");
    c.expect("GET", "/one", &[], 200, &v(1));
    c.expect("GET", "/two", &[], 200, &v(2));
    for path in ["/", "/one/example", "/two/", "/Two"] {
        c.expect("GET", path, &[], 404, "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteMatching() {
    let c = Conformance::start(&["httproute-matching.yaml"]);
    c.accepted(INFRA, "matching");
    for (path, headers, n) in [
        ("/", &[][..], 1),
        ("/example", &[], 1),
        ("/", &[("Version", "one")], 1),
        ("/v2", &[], 2),
        ("/v2/example", &[], 2),
        ("/", &[("Version", "two")], 2),
        ("/v2/", &[], 2),
        ("/v2example", &[], 1),
        ("/foo/v2/example", &[], 1),
    ] {
        c.expect("GET", path, headers, 200, &v(n));
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteHeaderMatching() {
    let c = Conformance::start(&["httproute-header-matching.yaml"]);
    c.accepted(INFRA, "header-matching");
    for (headers, n) in [
        (&[("Version", "one")][..], 1),
        (&[("Version", "two")], 2),
        (&[("Version", "two"), ("Color", "orange")], 1),
        (&[("Version", "two"), ("Color", "blue")], 2),
        (&[("Color", "blue")], 1),
        (&[("Color", "green")], 1),
        (&[("Color", "red")], 2),
        (&[("Color", "yellow")], 2),
    ] {
        c.expect("GET", "/", headers, 200, &v(n));
    }
    for headers in [
        &[("Color", "orange")][..],
        &[("Some-Other-Header", "one")],
        &[("Color", "purple")],
    ] {
        c.expect("GET", "/", headers, 404, "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteQueryParamMatching() {
    let c = Conformance::start(&["httproute-query-param-matching.yaml"]);
    c.accepted(INFRA, "query-param-matching");
    for (path, headers, n) in [
        ("/?animal=whale", &[][..], 1),
        ("/?animal=dolphin", &[], 2),
        ("/?animal=dolphin&color=blue", &[], 3),
        ("/?ANIMAL=Whale", &[], 3),
        ("/?animal=whale&otherparam=irrelevant", &[], 1),
        ("/?animal=dolphin&color=yellow", &[], 2),
        ("/path1?animal=whale", &[], 1),
        ("/?animal=whale", &[("version", "one")], 2),
        ("/path2?animal=whale", &[("version", "two")], 3),
    ] {
        c.expect("GET", path, headers, 200, &v(n));
    }
    for path in ["/?color=blue", "/?animal=dog", "/?animal=whaledolphin", "/"] {
        c.expect("GET", path, &[], 404, "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteMethodMatching() {
    let c = Conformance::start(&["httproute-method-matching.yaml"]);
    c.accepted(INFRA, "method-matching");
    c.expect("POST", "/", &[], 200, &v(1));
    c.expect("GET", "/", &[], 200, &v(2));
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteCrossNamespace() {
    let c = Conformance::start(&["httproute-cross-namespace.yaml"]);
    c.accepted("gateway-conformance-web-backend", "cross-namespace");
    c.expect(
        "GET",
        "/",
        &[],
        200,
        "gateway-conformance-web-backend/web-backend",
    );
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteReferenceGrant() {
    let c = Conformance::start(&["httproute-reference-grant.yaml"]);
    c.accepted(INFRA, "reference-grant");
    c.expect(
        "GET",
        "/",
        &[],
        200,
        "gateway-conformance-web-backend/web-backend",
    );
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRequestHeaderModifier() {
    let c = Conformance::start(&["httproute-request-header-modifier.yaml"]);
    c.accepted(INFRA, "request-header-modifier");
    c.expect(
        "GET",
        "/set",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "some-other-value"),
        ],
        200,
        &v(1),
    );
    c.expect(
        "GET",
        "/add",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value"),
        ],
        200,
        &v(1),
    );
    c.expect("GET", "/remove", &[("X-Header-Remove", "val")], 200, &v(1));
    let seen = c.requests_of(&v(1));
    let last = |path: &str| {
        seen.iter()
            .rev()
            .find(|r| r.target == path)
            .cloned()
            .unwrap_or_else(|| panic!("no request for {path}"))
    };
    let set = last("/set");
    assert_eq!(set.header("x-header-set"), Some("set-overwrites-values"));
    assert_eq!(set.header("some-other-header"), Some("val"));
    let add_request = last("/add");
    let add: Vec<&str> = add_request
        .headers
        .iter()
        .filter(|(k, _)| k == "x-header-add")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(add, ["some-other-value", "add-appends-values"]);
    assert_eq!(last("/remove").header("x-header-remove"), None);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidParentRefNotMatchingSectionName() {
    let c = Conformance::start(&["httproute-invalid-parentref-not-matching-section-name.yaml"]);
    c.route_condition(
        INFRA,
        "httproute-listener-not-matching-section-name",
        "Accepted",
        "False",
        "NoMatchingParent",
    );
}
