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

/// `Host`-addressed variant of [`Conformance::expect`] for GET requests.
fn expect_host(c: &Conformance, host: &str, path: &str, status: u16, backend: &str) {
    c.expect("GET", path, &[("host", host)], status, backend);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteHostnameIntersection() {
    let c = Conformance::start(&["httproute-hostname-intersection.yaml"]);
    for route in [
        "specific-host-matches-listener-specific-host",
        "specific-host-matches-listener-wildcard-host",
        "wildcard-host-matches-listener-specific-host",
        "wildcard-host-matches-listener-wildcard-host",
    ] {
        c.accepted(INFRA, route);
    }
    for (host, path, n) in [
        ("very.specific.com", "/s1", 1),
        ("very.specific.com:1234", "/s1", 1),
        ("foo.wildcard.io", "/s2", 2),
        ("bar.wildcard.io", "/s2", 2),
        ("foo.bar.wildcard.io", "/s2", 2),
        ("very.specific.com", "/s3", 3),
        ("foo.anotherwildcard.io", "/s4", 1),
        ("bar.anotherwildcard.io", "/s4", 1),
        ("foo.bar.anotherwildcard.io", "/s4", 1),
    ] {
        expect_host(&c, host, path, 200, &v(n));
    }
    for (host, path) in [
        ("non.matching.com", "/s1"),
        ("foo.nonmatchingwildcard.io", "/s1"),
        ("foo.wildcard.io", "/s1"),
        ("very.specific.com", "/non-matching-prefix"),
        ("non.matching.com", "/s2"),
        ("wildcard.io", "/s2"),
        ("very.specific.com", "/s2"),
        ("foo.wildcard.io", "/non-matching-prefix"),
        ("non.matching.com", "/s3"),
        ("foo.specific.com", "/s3"),
        ("foo.wildcard.io", "/s3"),
        ("anotherwildcard.io", "/s4"),
        ("foo.wildcard.io", "/s4"),
        ("very.specific.com", "/s4"),
        ("foo.anotherwildcard.io", "/non-matching-prefix"),
    ] {
        expect_host(&c, host, path, 404, "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteListenerHostnameMatching() {
    let c = Conformance::start(&["httproute-listener-hostname-matching.yaml"]);
    for route in ["backend-v1", "backend-v2", "backend-v3"] {
        c.accepted(INFRA, route);
    }
    for (host, n) in [
        ("bar.com", 1),
        ("foo.bar.com", 2),
        ("baz.bar.com", 3),
        ("boo.bar.com", 3),
        ("multiple.prefixes.bar.com", 3),
        ("multiple.prefixes.foo.com", 3),
    ] {
        expect_host(&c, host, "/", 200, &v(n));
    }
    for host in ["foo.com", "no.matching.host"] {
        expect_host(&c, host, "/", 404, "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteMatchingAcrossRoutes() {
    let c = Conformance::start(&["httproute-matching-across-routes.yaml"]);
    c.accepted(INFRA, "matching-part1");
    c.accepted(INFRA, "matching-part2");
    for (host, path, headers, n) in [
        ("example.com", "/", &[][..], 1),
        ("example.com", "/example", &[], 1),
        ("example.net", "/example", &[], 1),
        ("example.com", "/example", &[("Version", "one")], 1),
        ("example.com", "/v2", &[], 2),
        ("example.net", "/v2", &[], 1),
        ("example.com", "/v2/example", &[], 2),
        ("example.com", "/", &[("Version", "two")], 2),
    ] {
        let mut all = vec![("host", host)];
        all.extend_from_slice(headers);
        c.expect("GET", path, &all, 200, &v(n));
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteDisallowedKind() {
    let c = Conformance::start(&["httproute-disallowed-kind.yaml"]);
    c.route_condition(
        INFRA,
        "disallowed-kind",
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
    c.route_condition(
        INFRA,
        "disallowed-kind",
        "Accepted",
        "False",
        "NotAllowedByListeners",
    );
    let attached = c.kube.wait_until(READY_TIMEOUT, |kube| {
        kube.get::<Gateway>(INFRA, "tlsroutes-only")
            .and_then(|g| g.status)
            .and_then(|s| s.listeners)
            .is_some_and(|l| l.iter().all(|l| l.attached_routes == 0))
    });
    assert!(attached, "the Gateway's listeners report zero routes");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidCrossNamespaceBackendRef() {
    let c = Conformance::start(&["httproute-invalid-cross-namespace-backend-ref.yaml"]);
    let route = "invalid-cross-namespace-backend-ref";
    c.route_condition(INFRA, route, "Accepted", "True", "Accepted");
    c.route_condition(INFRA, route, "ResolvedRefs", "False", "RefNotPermitted");
    c.expect("GET", "/", &[], 500, "");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidReferenceGrant() {
    let c = Conformance::start(&["httproute-invalid-reference-grant.yaml"]);
    c.route_condition(INFRA, "reference-grant", "Accepted", "True", "Accepted");
    c.route_condition(
        INFRA,
        "reference-grant",
        "ResolvedRefs",
        "False",
        "RefNotPermitted",
    );
    c.expect("GET", "/", &[], 500, "");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteReferenceGrantDeleted() {
    // The second half of the upstream HTTPRouteReferenceGrant: without the grant, 500.
    let c = Conformance::start(&["httproute-reference-grant.yaml"]);
    c.accepted(INFRA, "reference-grant");
    c.kube
        .delete_object::<ReferenceGrant>("gateway-conformance-web-backend", "reference-grant");
    c.route_condition(
        INFRA,
        "reference-grant",
        "ResolvedRefs",
        "False",
        "RefNotPermitted",
    );
    c.expect("GET", "/", &[], 500, "");
}

/// The path and host of a redirect's `Location`.
fn location(c: &Conformance, path: &str) -> (u16, String, String) {
    let response = Client::connect(c.http).request("GET", path, &[]);
    let location = response.header("location").unwrap_or_default().to_string();
    let rest = location.split_once("://").map_or("", |(_, r)| r);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.split(':').next().unwrap_or_default().to_string();
    (response.status, host, path.to_string())
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRedirectPath() {
    let c = Conformance::start(&["httproute-redirect-path.yaml"]);
    c.accepted(INFRA, "redirect-path");
    for (path, status, host, wanted) in [
        (
            "/original-prefix/lemon",
            302,
            "test.local",
            "/replacement-prefix/lemon",
        ),
        (
            "/full/path/original",
            302,
            "test.local",
            "/full-path-replacement",
        ),
        ("/path-and-host", 302, "example.org", "/replacement-prefix"),
        ("/path-and-status", 301, "test.local", "/replacement-prefix"),
        (
            "/full-path-and-host",
            302,
            "example.org",
            "/replacement-full",
        ),
        (
            "/full-path-and-status",
            301,
            "test.local",
            "/replacement-full",
        ),
    ] {
        let wanted = (status, host.to_string(), wanted.to_string());
        wait_until(
            &format!("{path} to redirect to {wanted:?}"),
            READY_TIMEOUT,
            || location(&c, path) == wanted,
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRewritePath() {
    let c = Conformance::start(&["httproute-rewrite-path.yaml"]);
    c.accepted(INFRA, "rewrite-path");
    let headers = [
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Set", "set-val"),
    ];
    for (path, sent_headers, upstream_path) in [
        ("/prefix/one/two", &[][..], "/one/two"),
        ("/strip-prefix/three", &[], "/three"),
        ("/strip-prefix", &[], "/"),
        ("/full/one/two", &[], "/one"),
        (
            "/full/rewrite-path-and-modify-headers/test",
            &headers[..],
            "/test",
        ),
        (
            "/prefix/rewrite-path-and-modify-headers/one",
            &headers[..],
            "/prefix/one",
        ),
    ] {
        c.expect("GET", path, sent_headers, 200, &v(1));
        let seen = c.requests_of(&v(1));
        let last = seen.last().expect("a request");
        assert_eq!(last.target, upstream_path, "{path}");
        if !sent_headers.is_empty() {
            assert_eq!(last.header("x-header-add"), Some("header-val-1"));
            let appended: Vec<&str> = last
                .headers
                .iter()
                .filter(|(k, _)| k == "x-header-add-append")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(appended, ["append-val-1", "header-val-2"]);
            assert_eq!(last.header("x-header-set"), Some("set-overwrites-values"));
            assert_eq!(last.header("x-header-remove"), None);
        }
    }
}
