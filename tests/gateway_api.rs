//! Gateway API conformance, reproduced: each test is one upstream conformance test (Gateway
//! API v1.6.1, `conformance/tests/`), named after it, applying the same manifests
//! (`tests/data/gateway-conformance/`, copied unchanged) to the fake API server and
//! asserting what the upstream test asserts: the status conditions the controller writes
//! and the responses of the real binary. The upstream suite's base manifests give every
//! Service of the conformance namespaces a backend here, named `NAMESPACE/SERVICE` (the
//! echo server of the suite reports its pod's namespace and name the same way). The tests
//! named in snake_case are sluice's own, on the same harness.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use serde_json::Value;
use sluice::sources::kubernetes::gateway::api::backendtlspolicies::BackendTlsPolicy;
use sluice::sources::kubernetes::gateway::api::gatewayclasses::GatewayClass;
use sluice::sources::kubernetes::gateway::api::gateways::Gateway;
use sluice::sources::kubernetes::gateway::api::grpcroutes::GrpcRoute;
use sluice::sources::kubernetes::gateway::api::httproutes::HttpRoute;
use sluice::sources::kubernetes::gateway::api::listenersets::ListenerSet;
use sluice::sources::kubernetes::gateway::api::referencegrants::ReferenceGrant;
use sluice::sources::kubernetes::gateway::api::tcproutes::TcpRoute;
use sluice::sources::kubernetes::gateway::api::tlsroutes::TlsRoute;
use std::net::SocketAddr;
use support::fake_kube::{ready, slice, FakeKube};
use support::tls::{self, TestCertificate};
use support::*;

const CONTROLLER: &str = "sluice.dev/gateway-controller";
const INFRA: &str = "gateway-conformance-infra";
const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/gateway-conformance"
);

/// The address the harness publishes for the Gateways (`gateway.publish`): the one its
/// clients reach sluice on. The suite's usable static address.
const PUBLISHED: &str = "127.0.0.1";

/// An address sluice is not reached on: the suite's unusable static address.
const UNUSABLE: &str = "192.0.2.1";

/// The objects of a manifest file, with the suite's placeholders filled in: the class
/// name, and a Gateway's usable and unusable static addresses, as the suite overlays them
/// (its own invalid-type entries first, then the unusable, then the usable ones).
fn manifest(name: &str) -> Vec<Value> {
    let path = format!("{DATA}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let text = text
        .replace("{GATEWAY_CLASS_NAME}", "sluice")
        .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|doc: &Value| !doc.is_null())
        .map(|mut doc: Value| {
            let addresses = doc["spec"]["addresses"].as_array().cloned();
            let placeholder = |value: &str| addresses.iter().flatten().any(|a| a["value"] == value);
            if doc["kind"] == "Gateway"
                && (placeholder("PLACEHOLDER_USABLE_ADDRS")
                    || placeholder("PLACEHOLDER_UNUSABLE_ADDRS"))
            {
                let mut overlay: Vec<Value> = addresses
                    .iter()
                    .flatten()
                    .filter(|a| a["type"] == "test/fake-invalid-type")
                    .cloned()
                    .collect();
                if placeholder("PLACEHOLDER_UNUSABLE_ADDRS") {
                    overlay.push(serde_json::json!({"type": "IPAddress", "value": UNUSABLE}));
                }
                if placeholder("PLACEHOLDER_USABLE_ADDRS") {
                    overlay.push(serde_json::json!({"type": "IPAddress", "value": PUBLISHED}));
                }
                doc["spec"]["addresses"] = Value::Array(overlay);
            }
            doc
        })
        .collect()
}

fn typed<K: serde::de::DeserializeOwned>(value: &Value) -> K {
    serde_json::from_value(value.clone()).expect("an object of its kind")
}

/// A conformance environment: the fake API server with the base manifests and a test's
/// own, a backend per Service, and sluice serving the Gateways' ports 80 and 443 and each
/// port of the manifests' TCP listeners.
struct Conformance {
    kube: FakeKube,
    /// The suite's `tls-validity-checks-certificate` (names `*`, `*.org`, `*.wildcard.org`).
    validity_certificate: TestCertificate,
    /// The suite's `tls-checks-certificate` (names `abc.example.com`, `other.example.com`,
    /// URI `spiffe://abc.example.com/test-identity`), issued by the CA of ConfigMap
    /// `tls-checks-ca-certificate`, served by the pods `app: tls-backend` and
    /// `app: tls-backend-2` of the conformance namespace.
    tls_checks_certificate: TestCertificate,
    backends: Vec<Backend>,
    /// The TLS backends of `tcp-backend` (port 8443), with the certificate they serve for
    /// `abc.example.com`.
    tls_backends: Vec<tls::HttpsBackend>,
    tls_certificate: TestCertificate,
    /// Kept for its lifetime: dropping it stops the process.
    _sluice: Sluice,
    http: SocketAddr,
    https: SocketAddr,
    /// The TLS passthrough listener (Gateway listeners `TLS` in mode `Passthrough` on 443).
    passthrough: SocketAddr,
    /// By Gateway port: the sluice tcp listener serving the Gateway listeners of protocol
    /// TCP on that port (one per port the manifests' Gateways use).
    tcp_listeners: std::collections::BTreeMap<u16, SocketAddr>,
    /// By Gateway port: the sluice http listener serving the Gateway listeners of protocol
    /// HTTP on that port, for the ports other than 80.
    http_listeners: std::collections::BTreeMap<u16, SocketAddr>,
    /// By Gateway port: the sluice tcp listener with `tls` serving the Gateway listeners of
    /// protocol TLS in mode Terminate on that port.
    terminate_listeners: std::collections::BTreeMap<u16, SocketAddr>,
    /// The suite's `tls-terminate-checks-certificate` (name `tls.example.com`), issued by
    /// the CA of ConfigMap `tls-checks-ca-certificate`.
    tls_terminate_certificate: TestCertificate,
    /// The suite's `tls-checks-client-certificate`, issued by the same CA.
    tls_checks_client_certificate: TestCertificate,
    /// Client certificates issued by the CAs of ConfigMaps tls-validity-checks-ca-certificate
    /// and tls-validity-checks-per-port-ca-certificate (the suite's Secrets of the same names).
    validity_client_certificate: TestCertificate,
    per_port_client_certificate: TestCertificate,
    /// By name (in the conformance namespace): the Gateways served apart
    /// (`gateway.dedicated`), each on listeners of its own, as the suite gives each
    /// Gateway an address.
    dedicated: std::collections::BTreeMap<String, Dedicated>,
}

/// The sluice listeners of a dedicated Gateway: HTTP on 80, TLS passthrough on 443.
struct Dedicated {
    http: SocketAddr,
    passthrough: SocketAddr,
    /// By Gateway port: a sluice HTTPS listener for each HTTPS port of the Gateway.
    https: std::collections::BTreeMap<u16, SocketAddr>,
}

impl Conformance {
    fn start(manifests: &[&str]) -> Self {
        Self::start_dedicated(manifests, &[])
    }

    /// As [`Conformance::start`], with Gateways `dedicated` (of the conformance namespace)
    /// served apart from the others.
    fn start_dedicated(manifests: &[&str], dedicated: &[&str]) -> Self {
        Self::start_with(manifests, dedicated, |_| {})
    }

    /// As [`Conformance::start_dedicated`], with `prepare` run on the API server before
    /// anything else.
    fn start_with(manifests: &[&str], dedicated: &[&str], prepare: impl FnOnce(&FakeKube)) -> Self {
        Self::start_full(manifests, dedicated, prepare, false)
    }

    /// As [`Conformance::start`], with the sluice listeners of TLS ports in mode Terminate
    /// relaying the names of Passthrough listeners too (`sni_routing: true`: mixed ports).
    fn start_mixed(manifests: &[&str]) -> Self {
        Self::start_full(manifests, &[], |_| {}, true)
    }

    fn start_full(
        manifests: &[&str],
        dedicated: &[&str],
        prepare: impl FnOnce(&FakeKube),
        mixed: bool,
    ) -> Self {
        let kube = FakeKube::start();
        prepare(&kube);
        kube.apply(typed::<GatewayClass>(&serde_json::json!({
            "metadata": {"name": "sluice"},
            "spec": {"controllerName": CONTROLLER},
        })));
        // The certificates the upstream suite creates before its tests.
        let dir = ScratchDir::new();
        let web_certificate = tls::self_signed(&dir, "certificate", &["*"]);
        let validity_certificate = tls::self_signed(
            &dir,
            "tls-validity-checks-certificate",
            &["*", "*.org", "*.wildcard.org"],
        );
        // As the suite: issued by the CA of ConfigMap tls-checks-ca-certificate, for these
        // names and a SPIFFE URI. mismatch-ca-certificate holds a CA that issued nothing
        // (BackendTLSPolicy's cert-mismatch case).
        let tls_checks_ca = tls::TestCa::new();
        let tls_checks_certificate = tls_checks_ca.issue_with_uris(
            &dir,
            "tls-checks-certificate",
            &["abc.example.com", "other.example.com"],
            &["spiffe://abc.example.com/test-identity"],
        );
        // The suite's certificate of the TLS listeners in mode Terminate.
        let tls_terminate_certificate = tls_checks_ca.issue(
            &dir,
            "tls-terminate-checks-certificate",
            &["tls.example.com"],
        );
        // The suite's CAs of client certificates to Gateways, each with a certificate it issued
        // (GatewayFrontendClientCertificateValidation).
        let validity_ca = tls::TestCa::new();
        let per_port_ca = tls::TestCa::new();
        let validity_client_certificate = validity_ca.issue(
            &dir,
            "tls-validity-checks-client-certificate",
            &["client.test"],
        );
        let per_port_client_certificate = per_port_ca.issue(
            &dir,
            "tls-validity-checks-per-port-client-certificate",
            &["client.test"],
        );
        for (name, ca) in [
            ("tls-checks-ca-certificate", tls_checks_ca.pem.clone()),
            ("mismatch-ca-certificate", tls::TestCa::new().pem),
            (
                "tls-validity-checks-ca-certificate",
                validity_ca.pem.clone(),
            ),
            (
                "tls-validity-checks-per-port-ca-certificate",
                per_port_ca.pem.clone(),
            ),
        ] {
            kube.apply(typed::<ConfigMap>(&serde_json::json!({
                "metadata": {"name": name, "namespace": INFRA},
                "data": {"ca.crt": ca},
            })));
        }
        // The pods of the conformance namespace serving tls-checks-certificate, by their
        // `app` label: every Service selecting one reaches the same backend, as Services
        // reach the same pods in the suite (so connections sluice pools for one Service
        // are candidates for the others). They live as long as the test process.
        let mut tls_pods: std::collections::BTreeMap<String, SocketAddr> =
            ["tls-backend", "tls-backend-2"]
                .into_iter()
                .map(|app| {
                    let name = Box::leak(format!("{INFRA}/{app}").into_boxed_str());
                    let backend = tls::HttpsBackend::start(name, &tls_checks_certificate);
                    (app.to_string(), backend.address)
                })
                .collect();
        // The suite's client certificate issued by the same CA, and the pod that asks
        // clients for one of that CA (GatewayTLSBackendClientCertificate).
        let tls_checks_client_certificate =
            tls_checks_ca.issue(&dir, "tls-checks-client-certificate", &["client.test"]);
        let app = "tls-backend-with-client-cert-validation";
        let verifying = tls::HttpsBackend::start_verifying_clients(
            Box::leak(format!("{INFRA}/{app}").into_boxed_str()),
            &tls_checks_certificate,
            &tls_checks_ca.pem,
        );
        tls_pods.insert(app.to_string(), verifying.address);
        for (namespace, name, certificate) in [
            (
                "gateway-conformance-web-backend",
                "certificate",
                &web_certificate,
            ),
            (
                INFRA,
                "tls-validity-checks-certificate",
                &validity_certificate,
            ),
            (INFRA, "tls-checks-certificate", &tls_checks_certificate),
            (
                INFRA,
                "tls-checks-client-certificate",
                &tls_checks_client_certificate,
            ),
            (
                INFRA,
                "tls-terminate-checks-certificate",
                &tls_terminate_certificate,
            ),
            (
                INFRA,
                "tls-validity-checks-client-certificate",
                &validity_client_certificate,
            ),
            (
                INFRA,
                "tls-validity-checks-per-port-client-certificate",
                &per_port_client_certificate,
            ),
        ] {
            kube.apply(typed::<Secret>(&serde_json::json!({
                "metadata": {"name": name, "namespace": namespace},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": certificate.cert_pem, "tls.key": certificate.key_pem},
            })));
        }
        let default_certificate = tls::self_signed(&dir, "default", &["default.test"]);
        let tls_certificate = tls::self_signed(&dir, "tls-backend", &["abc.example.com"]);
        let mut backends = Vec::new();
        let mut tls_backends = Vec::new();
        // The Gateway ports of TCP listeners: each gets a sluice tcp listener.
        let mut tcp_ports = std::collections::BTreeSet::new();
        // The Gateway ports of HTTP listeners other than 80: each gets a sluice http
        // listener, as the suite's Gateways get their ports (GatewayPort8080).
        let mut http_ports = std::collections::BTreeSet::new();
        // The Gateway ports of TLS listeners in mode Terminate: each gets a sluice tcp
        // listener with `tls`.
        let mut terminate_ports = std::collections::BTreeSet::new();
        // The HTTPS ports of each Gateway, for those in `dedicated`.
        let mut https_ports: std::collections::BTreeMap<String, Vec<u16>> = Default::default();
        for name in std::iter::once("base.yaml").chain(manifests.iter().copied()) {
            for object in manifest(name) {
                if let Some(gateway) = object["metadata"]["name"].as_str() {
                    let ports = listener_ports(&object, "HTTPS");
                    if !ports.is_empty() {
                        https_ports.insert(gateway.to_string(), ports);
                    }
                }
                tcp_ports.extend(listener_ports(&object, "TCP"));
                terminate_ports.extend(terminating_ports(&object));
                http_ports.extend(
                    listener_ports(&object, "HTTP")
                        .into_iter()
                        .filter(|p| *p != 80),
                );
                let stand = apply(&kube, &object, &tls_certificate, &tls_pods, &backends);
                match stand {
                    Some(Stand::Http(backend)) => backends.push(backend),
                    Some(Stand::Tls(backend)) => tls_backends.push(backend),
                    Some(Stand::Grpc | Stand::PodsOf | Stand::TcpEcho | Stand::TlsChecks)
                    | None => {}
                }
            }
        }
        let http = listen_address();
        let https = listen_address();
        let passthrough = listen_address();
        // A sluice tcp listener (no sni_routing: Gateway protocol TCP) per TCP port, named
        // `tcpPORT`; a tcp listener serves one route, so Gateway listeners share one per port.
        let tcp_listeners: std::collections::BTreeMap<u16, SocketAddr> = tcp_ports
            .into_iter()
            .map(|port| (port, listen_address()))
            .collect();
        let http_listeners: std::collections::BTreeMap<u16, SocketAddr> = http_ports
            .into_iter()
            .map(|port| (port, listen_address()))
            .collect();
        let terminate_listeners: std::collections::BTreeMap<u16, SocketAddr> = terminate_ports
            .into_iter()
            .map(|port| (port, listen_address()))
            .collect();
        let port_config: String = tcp_listeners
            .iter()
            .map(|(port, address)| {
                format!("- {{ name: tcp{port}, listen: \"{address}\", protocol: tcp }}\n")
            })
            .chain(terminate_listeners.iter().map(|(port, address)| {
                format!(
                    "- {{ name: terminate{port}, listen: \"{address}\", protocol: tcp, \
                     sni_routing: {mixed}, \
                     tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n",
                    default_certificate.cert_path.display(),
                    default_certificate.key_path.display(),
                )
            }))
            .chain(http_listeners.iter().map(|(port, address)| {
                format!("- {{ name: http{port}, listen: \"{address}\", h2c: true }}\n")
            }))
            .collect();
        let port_entries: String = tcp_listeners
            .keys()
            .map(|port| format!(", {{ port: {port}, listener: tcp{port} }}"))
            .chain(
                http_listeners
                    .keys()
                    .map(|port| format!(", {{ port: {port}, listener: http{port} }}")),
            )
            .chain(
                terminate_listeners
                    .keys()
                    .map(|port| format!(", {{ port: {port}, listener: terminate{port} }}")),
            )
            .collect();
        let dedicated: std::collections::BTreeMap<String, Dedicated> = dedicated
            .iter()
            .map(|name| {
                let listeners = Dedicated {
                    http: listen_address(),
                    passthrough: listen_address(),
                    https: https_ports
                        .get(*name)
                        .into_iter()
                        .flatten()
                        .map(|port| (*port, listen_address()))
                        .collect(),
                };
                (name.to_string(), listeners)
            })
            .collect();
        let mut dedicated_config = String::new();
        let mut dedicated_entries = String::new();
        for (i, (name, listeners)) in dedicated.iter().enumerate() {
            dedicated_config.push_str(&format!(
                "- {{ name: http-own{i}, listen: \"{}\", h2c: true }}\n\
                 - {{ name: passthrough-own{i}, listen: \"{}\", protocol: tcp, sni_routing: true }}\n",
                listeners.http, listeners.passthrough
            ));
            let mut https_entries = String::new();
            for (port, address) in &listeners.https {
                dedicated_config.push_str(&format!(
                    "- {{ name: https{port}-own{i}, listen: \"{address}\", tls: {{ certificates: \
                     [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n",
                    default_certificate.cert_path.display(),
                    default_certificate.key_path.display(),
                ));
                https_entries.push_str(&format!(
                    ", {{ port: {port}, listener: https{port}-own{i} }}"
                ));
            }
            dedicated_entries.push_str(&format!(
                "{{ gateway: {INFRA}/{name}, listeners: [{{ port: 80, listener: http-own{i} }}, \
                 {{ port: 443, listener: passthrough-own{i} }}{https_entries}] }}, "
            ));
        }
        let sluice = Sluice::start(&format!(
            "kubernetes: {{ api_server: \"{}\" }}\n\
             listeners:\n\
             - {{ name: http, listen: \"{http}\", h2c: true }}\n\
             - {{ name: https, listen: \"{https}\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n\
             - {{ name: passthrough, listen: \"{passthrough}\", protocol: tcp, sni_routing: true }}\n\
             {port_config}\
             {dedicated_config}\
             gateway: {{ listeners: [{{ port: 80, listener: http }}, {{ port: 443, listener: https }}, \
             {{ port: 443, listener: passthrough }}{port_entries}], dedicated: [{dedicated_entries}], \
             publish: {{ addresses: [\"{PUBLISHED}\"] }} }}\n\
             routes: []\n",
            kube.url(),
            default_certificate.cert_path.display(),
            default_certificate.key_path.display(),
        ));
        Self {
            kube,
            validity_certificate,
            tls_checks_certificate,
            tls_backends,
            tls_certificate,
            backends,
            _sluice: sluice,
            http,
            https,
            passthrough,
            tcp_listeners,
            http_listeners,
            terminate_listeners,
            tls_terminate_certificate,
            tls_checks_client_certificate,
            validity_client_certificate,
            per_port_client_certificate,
            dedicated,
        }
    }

    /// The HTTP listener on port 80 of Gateway `name`.
    fn http_of(&self, name: &str) -> SocketAddr {
        self.dedicated.get(name).map_or(self.http, |d| d.http)
    }

    /// The HTTP listener serving Gateway port `port` (not 80).
    fn http_port(&self, port: u16) -> SocketAddr {
        match self.http_listeners.get(&port) {
            Some(address) => *address,
            None => panic!("no Gateway listens for HTTP on port {port}"),
        }
    }

    /// The HTTPS listener on port `port` of dedicated Gateway `name`.
    fn https_of(&self, name: &str, port: u16) -> SocketAddr {
        match self.dedicated.get(name).and_then(|d| d.https.get(&port)) {
            Some(address) => *address,
            None => panic!("Gateway {name} has no HTTPS listener of its own on port {port}"),
        }
    }

    /// The TLS passthrough listener on port 443 of Gateway `name`.
    fn passthrough_of(&self, name: &str) -> SocketAddr {
        self.dedicated
            .get(name)
            .map_or(self.passthrough, |d| d.passthrough)
    }

    /// Waits until listener `listener` of Gateway `name` has `attached` routes and each of
    /// `conditions` (type, status, reason; "" for any reason) at the Gateway's generation.
    fn listener_status(
        &self,
        name: &str,
        listener: &str,
        attached: i32,
        conditions: &[(&str, &str, &str)],
    ) {
        let matches = |kube: &FakeKube| {
            let Some(gateway) = kube.get::<Gateway>(INFRA, name) else {
                return false;
            };
            let generation = gateway.metadata.generation;
            let listeners = gateway.status.and_then(|s| s.listeners).unwrap_or_default();
            listeners.iter().any(|l| {
                l.name == listener
                    && l.attached_routes == attached
                    && conditions.iter().all(|(type_, status, reason)| {
                        l.conditions.iter().any(|c| {
                            c.type_ == *type_
                                && c.status == *status
                                && (reason.is_empty() || c.reason == *reason)
                                && c.observed_generation == generation
                        })
                    })
            })
        };
        assert!(
            self.kube.wait_until(READY_TIMEOUT, matches),
            "Gateway {name} listener {listener}: want {attached} routes and {conditions:?}; status {:?}",
            self.kube.get::<Gateway>(INFRA, name).and_then(|g| g.status)
        );
    }

    /// GatewayMustHaveZeroRoutes: every listener of Gateway `name` has no routes.
    fn listener_status_all_zero(&self, name: &str) {
        let zero = self.kube.wait_until(READY_TIMEOUT, |kube| {
            kube.get::<Gateway>(INFRA, name)
                .and_then(|g| g.status?.listeners)
                .is_some_and(|l| !l.is_empty() && l.iter().all(|l| l.attached_routes == 0))
        });
        assert!(zero, "Gateway {name}: listeners with routes attached");
    }

    /// The supported kinds listener `listener` of Gateway `name` reports.
    fn supported_kinds(&self, name: &str, listener: &str) -> Vec<String> {
        self.kube
            .get::<Gateway>(INFRA, name)
            .and_then(|g| g.status)
            .and_then(|s| s.listeners)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.name == listener)
            .flat_map(|l| l.supported_kinds.unwrap_or_default())
            .map(|k| k.kind)
            .collect()
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
        self.condition_of::<HttpRoute>(namespace, name, type_, status, reason);
    }

    /// [`Self::route_condition`] for a route of kind `K`.
    fn condition_of<K>(&self, namespace: &str, name: &str, type_: &str, status: &str, reason: &str)
    where
        K: support::fake_kube::Kind + serde::de::DeserializeOwned + serde::Serialize,
    {
        let status_of = |kube: &FakeKube| {
            kube.get::<K>(namespace, name)
                .and_then(|route| serde_json::to_value(route).ok())
        };
        let found = self.kube.wait_until(READY_TIMEOUT, |kube| {
            let Some(route) = status_of(kube) else {
                return false;
            };
            let generation = &route["metadata"]["generation"];
            let parents = route["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            !parents.is_empty()
                && parents.iter().all(|p| {
                    p["controllerName"] == CONTROLLER
                        && p["conditions"].as_array().into_iter().flatten().any(|c| {
                            c["type"] == type_
                                && c["status"] == status
                                && c["reason"] == reason
                                && &c["observedGeneration"] == generation
                        })
                })
        });
        assert!(
            found,
            "{} {namespace}/{name}: no {type_}={status} ({reason}) in {:?}",
            K::kind(&()),
            status_of(&self.kube).map(|r| r["status"].clone())
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
        self.expect_at(self.http, method, path, headers, status, backend);
    }

    /// [`Conformance::expect`] on the listener at `gateway`.
    fn expect_at(
        &self,
        gateway: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
        backend: &str,
    ) {
        let answer = || {
            let response = Client::connect(gateway).request(method, path, headers);
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

    /// Waits until `method path` answers `status`, whichever backend.
    fn expect_status(&self, method: &str, path: &str, status: u16) {
        wait_until(
            &format!("{method} {path} to answer {status}"),
            READY_TIMEOUT,
            || Client::connect(self.http).request(method, path, &[]).status == status,
        );
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

/// What stands in for a Service's pods.
enum Stand {
    Http(Backend),
    Tls(tls::HttpsBackend),
    /// A gRPC server (h2c) answering every method with its name; it lives as long as the
    /// test process.
    Grpc,
    /// Another Service's stand-in: the Service selects its pods.
    PodsOf,
    /// The suite's TCP echo server (`tcp_echo_backend`); it lives as long as the test
    /// process.
    TcpEcho,
    /// The TLS backend serving `tls-checks-certificate` that stands in for the pods a
    /// Service of the conformance namespace selects (`app: tls-backend` or
    /// `app: tls-backend-2`); it lives as long as the test process. It is not counted in
    /// `tls_backends`.
    TlsChecks,
}

/// Applies one manifest object; a Service gets a backend and an EndpointSlice for each of
/// its ports (`tcp-backend`, the suite's TLS echo server, a TLS backend serving
/// `tls_certificate`; the other `tcp-*` Services, the suite's TCP echo servers, a TCP echo
/// stand-in; a Service of the conformance namespace selecting an `app` of `tls_pods` that
/// app's TLS backend, serving `tls-checks-certificate`).
fn apply(
    kube: &FakeKube,
    object: &Value,
    tls_certificate: &TestCertificate,
    tls_pods: &std::collections::BTreeMap<String, SocketAddr>,
    backends: &[Backend],
) -> Option<Stand> {
    match object["kind"].as_str().unwrap_or_default() {
        "Namespace" => {
            kube.apply(typed::<Namespace>(object));
        }
        "GatewayClass" => {
            kube.apply(typed::<GatewayClass>(object));
        }
        "Gateway" => {
            kube.apply(typed::<Gateway>(object));
        }
        "HTTPRoute" => {
            kube.apply(typed::<HttpRoute>(object));
        }
        "ListenerSet" => {
            kube.apply(typed::<ListenerSet>(object));
        }
        "TLSRoute" => {
            kube.apply(typed::<TlsRoute>(object));
        }
        "TCPRoute" => {
            kube.apply(typed::<TcpRoute>(object));
        }
        "GRPCRoute" => {
            kube.apply(typed::<GrpcRoute>(object));
        }
        "ReferenceGrant" => {
            kube.apply(typed::<ReferenceGrant>(object));
        }
        "Secret" => {
            kube.apply(typed::<Secret>(object));
        }
        "ConfigMap" => {
            kube.apply(typed::<ConfigMap>(object));
        }
        "BackendTLSPolicy" => {
            kube.apply(typed::<BackendTlsPolicy>(object));
        }
        "Service" => {
            let service: Service = typed(object);
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let name = service.metadata.name.clone().unwrap_or_default();
            let full_name = format!("{namespace}/{name}");
            let app = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| s.get("app"))
                .cloned();
            // A Service of another one's pods (`headless` of `infra-backend-v1`'s) reaches
            // that backend.
            let pods_of = app.as_ref().filter(|app| **app != name).and_then(|app| {
                backends
                    .iter()
                    .find(|b| b.name == format!("{namespace}/{app}"))
            });
            let (stand, address) = if app.is_none() {
                // No selector: its EndpointSlices are the test's to write, as upstream's.
                kube.apply(service);
                return None;
            } else if let Some(backend) = pods_of {
                (Stand::PodsOf, backend.address)
            } else if let Some(address) = app
                .as_ref()
                .and_then(|app| tls_pods.get(app))
                .filter(|_| namespace == INFRA)
            {
                // echo-basic serving HTTPS with tls-checks-certificate in the suite: the
                // Services tls-backend and tls-backend-2, and the BackendTLSPolicy tests'.
                (Stand::TlsChecks, *address)
            } else if name.starts_with("grpc-") {
                (Stand::Grpc, grpc_backend(full_name.clone()))
            } else if name == "tcp-backend" {
                let backend = tls::HttpsBackend::start(
                    Box::leak(full_name.clone().into_boxed_str()),
                    tls_certificate,
                );
                let address = backend.address;
                (Stand::Tls(backend), address)
            } else if name.starts_with("tcp-") {
                // The TCPRoute tests' Services (tcp-echo-*, tcp-backend-v*, tcp-attach-backend-*,
                // tcp-reference-grant-backend, tcp-invalid-xns-backend): echo-basic with
                // TCP_ECHO_SERVER in the suite.
                (Stand::TcpEcho, tcp_echo_backend(&namespace, &name))
            } else {
                let backend = Backend::start(&full_name, Behavior::Echo);
                let address = backend.address;
                (Stand::Http(backend), address)
            };
            let ports = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.clone())
                .unwrap_or_default();
            kube.apply(service);
            for (i, port) in ports.iter().enumerate() {
                let port_name = port.name.clone().unwrap_or_default();
                // A port of `appProtocol: kubernetes.io/h2c` (infra-backend-v1's 8081) is
                // served by an h2c stand-in of the same name.
                let address = match port.app_protocol.as_deref() {
                    Some("kubernetes.io/h2c") if matches!(stand, Stand::Http(_)) => {
                        grpc_backend(full_name.clone())
                    }
                    // And one of `kubernetes.io/ws` (its 8082) by a WebSocket echo, which
                    // lives as long as the test process, as the gRPC stand-ins do.
                    Some("kubernetes.io/ws") if matches!(stand, Stand::Http(_)) => {
                        Box::leak(Box::new(support::WsEcho::start())).address
                    }
                    // tcp-backend's plain port (3000) is echo-basic's TCP echo server, its
                    // 8443 the TLS one.
                    _ if name == "tcp-backend" && port.port == 3000 => {
                        tcp_echo_backend(&namespace, &name)
                    }
                    _ => address,
                };
                kube.apply(slice(
                    &namespace,
                    &format!("{name}-{i}"),
                    &name,
                    (&port_name, address.port()),
                    &[ready(&address.ip().to_string())],
                ));
            }
            return Some(stand);
        }
        // Deployments: the backends above stand in for them.
        _ => {}
    }
    None
}

/// Starts a gRPC-like h2c server that answers every call with `name` (the suite's gRPC
/// echo server reports its pod the same way).
fn grpc_backend(name: String) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind gRPC backend");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    h2_util::serve_grpc_like(tcp, move |_| name.clone()).await;
                });
            }
        });
    });
    address
}

/// The suite's gRPC echo service.
const GRPC_ECHO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// A gRPC call's outcome: the backend that answered, or the gRPC status code of the
/// failure (an HTTP 404 is UNIMPLEMENTED, 12, as gRPC clients read it).
type GrpcOutcome = Result<String, u32>;

/// `count` gRPC calls of `path` for `authority` with `metadata`, one after the other on one
/// h2c connection to `gateway`.
fn grpc_calls(
    gateway: SocketAddr,
    authority: &str,
    path: &str,
    metadata: &[(&str, &str)],
    count: usize,
) -> Vec<GrpcOutcome> {
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(gateway)
            .await
            .expect("connect");
        let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut outcomes = Vec::with_capacity(count);
        for _ in 0..count {
            let mut request = http::Request::builder()
                .method("POST")
                .uri(format!("http://{authority}{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            for (name, value) in metadata {
                request = request.header(*name, *value);
            }
            let request = request.body(()).expect("request");
            client = client.ready().await.expect("h2 connection ready");
            let (response, mut body) = client.send_request(request, false).expect("send");
            // An empty message: no compression, length 0.
            body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
                .expect("send message");
            let response = response.await.expect("response");
            let (head, mut body) = response.into_parts();
            let code_in = |headers: &http::HeaderMap| {
                headers
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
            };
            let answer = h2_util::read_body(&mut body).await;
            let trailers = body.trailers().await.ok().flatten().unwrap_or_default();
            outcomes.push(match code_in(&head.headers).or(code_in(&trailers)) {
                _ if head.status == 404 => Err(12),
                Some(0) => Ok(String::from_utf8_lossy(&answer).to_string()),
                Some(code) => Err(code),
                None => Err(2),
            });
        }
        outcomes
    })
}

impl Conformance {
    /// MakeRequestAndExpectEventuallyConsistentResponse for gRPC: the call answers from
    /// `backend` (`NAMESPACE/SERVICE`), or fails with gRPC status `code` when it is "".
    fn expect_grpc(&self, method: &str, metadata: &[(&str, &str)], backend: &str, code: u32) {
        self.expect_grpc_at("grpc.test", method, metadata, backend, code);
    }

    /// [`Self::expect_grpc`] with `authority` as the call's host.
    fn expect_grpc_at(
        &self,
        authority: &str,
        method: &str,
        metadata: &[(&str, &str)],
        backend: &str,
        code: u32,
    ) {
        let path = format!("{GRPC_ECHO}/{method}");
        let wanted = if backend.is_empty() {
            Err(code)
        } else {
            Ok(backend.to_string())
        };
        wait_until(
            &format!("{path} {metadata:?} to answer {wanted:?}"),
            READY_TIMEOUT,
            || grpc_calls(self.http, authority, &path, metadata, 1) == [wanted.clone()],
        );
        let again = grpc_calls(self.http, authority, &path, metadata, 3);
        assert!(
            again.iter().all(|o| *o == wanted),
            "{path} {metadata:?}: {again:?}"
        );
    }

    /// GatewayAndRoutesMustBeAccepted for a GRPCRoute.
    fn grpc_accepted(&self, namespace: &str, name: &str) {
        self.condition_of::<GrpcRoute>(namespace, name, "Accepted", "True", "Accepted");
        self.condition_of::<GrpcRoute>(namespace, name, "ResolvedRefs", "True", "ResolvedRefs");
    }
}

fn grpc(n: u8) -> String {
    format!("{INFRA}/grpc-infra-backend-v{n}")
}

#[test]
#[allow(non_snake_case)]
fn GRPCExactMethodMatching() {
    let c = Conformance::start(&["grpcroute-exact-method-matching.yaml"]);
    c.grpc_accepted(INFRA, "exact-matching");
    c.expect_grpc("Echo", &[], &grpc(1), 0);
    c.expect_grpc("EchoTwo", &[], &grpc(2), 0);
    c.expect_grpc("EchoThree", &[], "", 12);
}

#[test]
#[allow(non_snake_case)]
fn GRPCRouteHeaderMatching() {
    let c = Conformance::start(&["grpcroute-header-matching.yaml"]);
    c.grpc_accepted(INFRA, "grpc-header-matching");
    for (metadata, n) in [
        (&[("version", "one")][..], 1),
        (&[("version", "two")], 2),
        (&[("version", "two"), ("color", "orange")], 1),
        (&[("version", "two"), ("color", "blue")], 2),
        (&[("color", "orange")], 0),
        (&[("some-other-header", "one")], 0),
        (&[("color", "blue")], 1),
        (&[("color", "green")], 1),
        (&[("color", "red")], 2),
        (&[("color", "yellow")], 2),
        (&[("color", "purple")], 0),
    ] {
        if n == 0 {
            c.expect_grpc("Echo", metadata, "", 12);
        } else {
            c.expect_grpc("Echo", metadata, &grpc(n), 0);
        }
    }
}

#[test]
#[allow(non_snake_case)]
fn GRPCRouteListenerHostnameMatching() {
    let c = Conformance::start(&["grpcroute-listener-hostname-matching.yaml"]);
    for route in ["backend-v1", "backend-v2", "backend-v3"] {
        c.grpc_accepted(INFRA, route);
    }
    for (host, n) in [
        ("bar.com", 1),
        ("foo.bar.com", 2),
        ("baz.bar.com", 3),
        ("boo.bar.com", 3),
        ("multiple.prefixes.bar.com", 3),
        ("multiple.prefixes.foo.com", 3),
    ] {
        c.expect_grpc_at(host, "Echo", &[], &grpc(n), 0);
    }
    for host in ["foo.com", "no.matching.host"] {
        c.expect_grpc_at(host, "Echo", &[], "", 12);
    }
}

#[test]
#[allow(non_snake_case)]
fn GRPCRouteWeight() {
    let c = Conformance::start(&["grpcroute-weight.yaml"]);
    c.grpc_accepted(INFRA, "weighted-backends");
    let path = format!("{GRPC_ECHO}/Echo");
    wait_until("a gRPC call to succeed", READY_TIMEOUT, || {
        grpc_calls(c.http, "grpc.test", &path, &[], 1)[0].is_ok()
    });
    // As HTTPRouteWeight: 4,000 calls, so that 5 points either way is a wide bound.
    let total = 4_000;
    let mut seen: std::collections::BTreeMap<String, u32> = Default::default();
    for outcome in grpc_calls(c.http, "grpc.test", &path, &[], total) {
        let backend = outcome.expect("a weighted call succeeds");
        *seen.entry(backend).or_default() += 1;
    }
    for (n, share) in [(1, 0.7), (2, 0.3), (3, 0.0)] {
        let got = f64::from(seen.get(&grpc(n)).copied().unwrap_or(0)) / total as f64;
        assert!(
            (got - share).abs() <= 0.05,
            "{}: {got} of calls, want {share}",
            grpc(n)
        );
    }
}

fn v(n: u8) -> String {
    format!("{INFRA}/infra-backend-v{n}")
}

#[test]
fn status_overwritten_by_another_writer_is_written_again() {
    let c = Conformance::start(&["httproute-simple-same-namespace.yaml"]);
    let route = "gateway-conformance-infra-test";
    c.accepted(INFRA, route);
    c.listener_status(
        "same-namespace",
        "http",
        1,
        &[("Accepted", "True", "Accepted")],
    );
    // Another writer empties the route's status and gives the Gateway an address sluice
    // does not publish.
    let mut overwritten = c.kube.get::<HttpRoute>(INFRA, route).expect("the route");
    overwritten.status = None;
    c.kube.apply(overwritten);
    let mut gateway = c
        .kube
        .get::<Gateway>(INFRA, "same-namespace")
        .expect("the Gateway");
    let mut status = serde_json::to_value(&gateway.status).expect("status JSON");
    status["addresses"] = serde_json::json!([{"type": "IPAddress", "value": UNUSABLE}]);
    gateway.status = serde_json::from_value(status).expect("a Gateway status");
    c.kube.apply(gateway);
    // sluice writes its parent entry back, and its own address over the foreign one.
    c.accepted(INFRA, route);
    let address_removed = c.kube.wait_until(READY_TIMEOUT, |kube| {
        kube.get::<Gateway>(INFRA, "same-namespace")
            .and_then(|g| g.status?.addresses)
            .is_some_and(|a| a.len() == 1 && a[0].value == PUBLISHED)
    });
    assert!(
        address_removed,
        "the foreign address stays in the Gateway's status"
    );
    c.listener_status(
        "same-namespace",
        "http",
        1,
        &[("Accepted", "True", "Accepted")],
    );
}

#[test]
fn a_match_two_routes_share_is_the_older_ones_and_both_serve_the_rest() {
    let c = Conformance::start(&[]);
    let route = |name: &str, parent: &str, rules: serde_json::Value| {
        typed::<HttpRoute>(&serde_json::json!({
            "metadata": {"name": name, "namespace": INFRA},
            "spec": {
                "parentRefs": [{"name": parent}],
                "hostnames": ["claim.example.com"],
                "rules": rules,
            },
        }))
    };
    let rule = |path: &str, backend: &str| {
        serde_json::json!({
            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": backend, "port": 8080}],
        })
    };
    // The older route is created first, attached to no Gateway of sluice's: the younger
    // one serves the shared path. Within the younger route, the first of two rules with
    // one match is the one served.
    c.kube.apply(route(
        "older",
        "no-such-gateway",
        serde_json::json!([rule("/x", "infra-backend-v1")]),
    ));
    let younger = route(
        "younger",
        "same-namespace",
        serde_json::json!([
            rule("/x", "infra-backend-v2"),
            rule("/y", "infra-backend-v2"),
            rule("/y", "infra-backend-v3"),
        ]),
    );
    c.kube.apply(younger);
    c.accepted(INFRA, "younger");
    expect_host(&c, "claim.example.com", "/x", 200, &v(2));
    expect_host(&c, "claim.example.com", "/y", 200, &v(2));
    // Attached now, the older route takes the shared path (the oldest route wins a tie),
    // and the younger one, which did not change, stays accepted and keeps serving the
    // rest.
    c.kube.apply(route(
        "older",
        "same-namespace",
        serde_json::json!([rule("/x", "infra-backend-v1")]),
    ));
    c.accepted(INFRA, "older");
    expect_host(&c, "claim.example.com", "/x", 200, &v(1));
    expect_host(&c, "claim.example.com", "/y", 200, &v(2));
    c.route_condition(INFRA, "younger", "Accepted", "True", "Accepted");
    // Once the older route is gone, the younger one serves the path again.
    c.kube.delete_object::<HttpRoute>(INFRA, "older");
    expect_host(&c, "claim.example.com", "/x", 200, &v(2));
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteMultipleGateways() {
    // The suite gives each Gateway an address; sluice serves each on listeners of its own
    // (`gateway.dedicated`), so the two dedicated routes' equal `/` do not conflict.
    let gateways = ["same-namespace", "all-namespaces"];
    let c = Conformance::start_dedicated(&["httproute-multiple-gateways.yaml"], &gateways);
    for (gateway, dedicated_route, dedicated_backend) in [
        (
            "same-namespace",
            "same-namespace-dedicated-route",
            "infra-backend-v2",
        ),
        (
            "all-namespaces",
            "all-namespaces-dedicated-route",
            "infra-backend-v3",
        ),
    ] {
        listeners_ready(&c, gateway);
        for route in ["multiple-gateways-shared-route", dedicated_route] {
            c.accepted(INFRA, route);
            route_has_parent::<HttpRoute>(&c, route, gateway);
        }
        let at = c.http_of(gateway);
        c.expect_at(at, "GET", "/shared", &[], 200, &v(1));
        c.expect_at(
            at,
            "GET",
            "/",
            &[],
            200,
            &format!("{INFRA}/{dedicated_backend}"),
        );
    }
    // Neither Gateway's routes answer on the listeners the other Gateways share.
    c.expect("GET", "/shared", &[], 404, "");
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
    request_header_modifier("httproute-request-header-modifier.yaml");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteBackendRequestHeaderModifier() {
    // The same test, with the filters on the backendRefs.
    request_header_modifier("httproute-request-header-modifier-backend.yaml");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRequestHeaderModifierBackendWeights() {
    let c = Conformance::start(&["httproute-request-header-modifier-backend-weights.yaml"]);
    c.accepted(INFRA, "request-header-modifier-backend-weights");
    c.expect_status("GET", "/", 200);
    // Each request carries the header of the backend that took it, set once.
    let mut client = Client::connect(c.http);
    for _ in 0..100 {
        let response = client.request("GET", "/", &[]);
        assert_eq!(response.status, 200);
        let backend = response.backend().to_string();
        let seen = c.requests_of(&backend);
        let last = seen.last().expect("the backend saw the request");
        let values: Vec<&str> = last
            .headers
            .iter()
            .filter(|(k, _)| k == "backend")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values.len(), 1, "{backend}: Backend headers {values:?}");
        assert!(
            backend.ends_with(values[0]),
            "{backend} got Backend: {}",
            values[0]
        );
    }
}

/// HTTPRouteRequestHeaderModifier's checks, on the route of `manifest`.
fn request_header_modifier(manifest: &str) {
    let c = Conformance::start(&[manifest]);
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

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidParentRefSectionNameNotMatchingPort() {
    let c =
        Conformance::start(&["httproute-invalid-parentref-section-name-not-matching-port.yaml"]);
    no_matching_parent(
        &c,
        "httproute-listener-section-name-not-matching-port",
        "gateway-with-one-not-matching-port-and-section-name-route",
    );
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidParentRefNotMatchingListenerPort() {
    let c = Conformance::start(&["httproute-invalid-parentref-not-matching-listener-port.yaml"]);
    no_matching_parent(
        &c,
        "httproute-listener-not-matching-route-port",
        "same-namespace",
    );
}

/// HTTPRoute `route` is `Accepted=False NoMatchingParent` with no accepted parent, and
/// Gateway `gateway` counts no route.
fn no_matching_parent(c: &Conformance, route: &str, gateway: &str) {
    c.route_condition(INFRA, route, "Accepted", "False", "NoMatchingParent");
    c.route_condition(INFRA, route, "ResolvedRefs", "True", "ResolvedRefs");
    c.listener_status_all_zero(gateway);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteListenerPortMatching() {
    let c = Conformance::start(&["httproute-listener-port-matching.yaml"]);
    for route in ["backend-v1", "backend-v2", "backend-v3"] {
        c.accepted(INFRA, route);
    }
    let at_80 = c.http;
    let at_8080 = c.http_port(8080);
    let at_8090 = c.http_port(8090);
    for (at, host, status, backend) in [
        (at_80, "foo.com", 200, v(1)),
        (at_8080, "foo.com:8080", 200, v(2)),
        (at_8080, "bar.com:8080", 200, v(2)),
        (at_8090, "foo.com:8090", 200, v(3)),
        (at_8090, "bar.com:8090", 404, String::new()),
    ] {
        c.expect_at(at, "GET", "/", &[("host", host)], status, &backend);
    }
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

/// Waits until an object's conditions of its kind are at its generation, and returns that.
fn latest<K: support::fake_kube::Kind + serde::de::DeserializeOwned>(
    c: &Conformance,
    namespace: &str,
    name: &str,
    conditions: impl Fn(&K) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> i64 {
    let mut generation = 0;
    let current = c.kube.wait_until(READY_TIMEOUT, |kube| {
        let Some(object) = kube.get::<K>(namespace, name) else {
            return false;
        };
        generation = object.meta().generation.unwrap_or_default();
        let list = conditions(&object);
        !list.is_empty()
            && list
                .iter()
                .all(|c| c.observed_generation == Some(generation))
    });
    assert!(current, "{name}: conditions not at generation {generation}");
    generation
}

#[test]
#[allow(non_snake_case)]
fn GatewayClassObservedGenerationBump() {
    let c = Conformance::start(&["gatewayclass-observed-generation-bump.yaml"]);
    let name = "gatewayclass-observed-generation-bump";
    let conditions = |class: &GatewayClass| {
        class
            .status
            .clone()
            .and_then(|s| s.conditions)
            .unwrap_or_default()
    };
    let before = latest::<GatewayClass>(&c, "", name, conditions);
    let mut class: GatewayClass = c.kube.get("", name).expect("the class");
    class.spec.description = Some("new".into());
    c.kube.apply(class);
    let after = latest::<GatewayClass>(&c, "", name, conditions);
    assert_ne!(before, after, "generation should change after an update");
}

#[test]
#[allow(non_snake_case)]
fn GatewayObservedGenerationBump() {
    let c = Conformance::start(&["gateway-observed-generation-bump.yaml"]);
    let name = "gateway-observed-generation-bump";
    let conditions = |gateway: &Gateway| {
        let Some(status) = gateway.status.clone() else {
            return Vec::new();
        };
        let mut all = status.conditions.unwrap_or_default();
        for listener in status.listeners.unwrap_or_default() {
            all.extend(listener.conditions);
        }
        all
    };
    let before = latest::<Gateway>(&c, INFRA, name, conditions);
    let mut gateway: Gateway = c.kube.get(INFRA, name).expect("the Gateway");
    gateway.spec.listeners.push(typed(&serde_json::json!({
        "name": "alternate", "hostname": "foo.com", "port": 80, "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": "All"}},
    })));
    c.kube.apply(gateway);
    let after = latest::<Gateway>(&c, INFRA, name, conditions);
    assert_ne!(before, after, "generation should change after an update");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteObservedGenerationBump() {
    let c = Conformance::start(&["httproute-observed-generation-bump.yaml"]);
    let name = "observed-generation-bump";
    let conditions = |route: &HttpRoute| {
        route
            .status
            .clone()
            .map(|s| s.parents.into_iter().flat_map(|p| p.conditions).collect())
            .unwrap_or_default()
    };
    let before = latest::<HttpRoute>(&c, INFRA, name, conditions);
    let mut route: HttpRoute = c.kube.get(INFRA, name).expect("the route");
    if let Some(rules) = route.spec.rules.as_mut() {
        if let Some(backend) = rules[0].backend_refs.as_mut().and_then(|b| b.first_mut()) {
            backend.name = "infra-backend-v2".into();
        }
    }
    c.kube.apply(route);
    let after = latest::<HttpRoute>(&c, INFRA, name, conditions);
    assert_ne!(before, after, "generation should change after an update");
    c.accepted(INFRA, name);
}

#[test]
#[allow(non_snake_case)]
fn GatewayInvalidRouteKind() {
    let c = Conformance::start(&["gateway-invalid-route-kind.yaml"]);
    let invalid = [("ResolvedRefs", "False", "InvalidRouteKinds")];
    c.listener_status("gateway-only-invalid-route-kind", "http", 0, &invalid);
    assert!(c
        .supported_kinds("gateway-only-invalid-route-kind", "http")
        .is_empty());
    c.listener_status(
        "gateway-supported-and-invalid-route-kind",
        "http",
        0,
        &invalid,
    );
    assert_eq!(
        c.supported_kinds("gateway-supported-and-invalid-route-kind", "http"),
        ["HTTPRoute"]
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayWithAttachedRoutes() {
    let c = Conformance::start(&["gateway-with-attached-routes.yaml"]);
    let valid = [("Accepted", "True", ""), ("ResolvedRefs", "True", "")];
    c.listener_status("gateway-with-one-attached-route", "http", 1, &valid);
    c.listener_status("gateway-with-two-attached-routes", "http", 2, &valid);
    c.route_condition(
        INFRA,
        "http-route-not-accepted",
        "Accepted",
        "False",
        "NoMatchingListenerHostname",
    );
    c.listener_status(
        "unresolved-gateway-with-one-attached-unresolved-route",
        "tls",
        1,
        &[("Programmed", "False", ""), ("ResolvedRefs", "False", "")],
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayWithAttachedRoutesWithPort8080() {
    let c = Conformance::start(&["gateway-with-attached-routes-with-port-8080.yaml"]);
    let valid = [("Accepted", "True", ""), ("ResolvedRefs", "True", "")];
    let gateway = "gateway-with-two-listeners-and-one-attached-route";
    c.listener_status(gateway, "http-unattached", 0, &valid);
    c.listener_status(gateway, "http", 1, &valid);
    for listener in ["http-unattached", "http"] {
        assert_eq!(c.supported_kinds(gateway, listener), ["HTTPRoute"]);
    }
}

#[test]
#[allow(non_snake_case)]
fn GatewaySecretMissingReferenceGrant() {
    let c = Conformance::start(&["gateway-secret-missing-reference-grant.yaml"]);
    c.listener_status(
        "gateway-secret-missing-reference-grant",
        "https",
        0,
        &[("ResolvedRefs", "False", "RefNotPermitted")],
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewaySecretInvalidReferenceGrant() {
    let c = Conformance::start(&["gateway-secret-invalid-reference-grant.yaml"]);
    c.listener_status(
        "gateway-secret-invalid-reference-grant",
        "https",
        0,
        &[("ResolvedRefs", "False", "RefNotPermitted")],
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewaySecretReferenceGrantSpecific() {
    let c = Conformance::start(&["gateway-secret-reference-grant-specific.yaml"]);
    c.listener_status(
        "gateway-secret-reference-grant-specific",
        "https",
        0,
        &[
            ("Programmed", "True", "Programmed"),
            ("ResolvedRefs", "True", ""),
        ],
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewaySecretReferenceGrantAllInNamespace() {
    let c = Conformance::start(&["gateway-secret-reference-grant-all-in-namespace.yaml"]);
    c.listener_status(
        "gateway-secret-reference-grant-all-in-namespace",
        "https",
        0,
        &[
            ("Programmed", "True", "Programmed"),
            ("ResolvedRefs", "True", ""),
        ],
    );
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteHTTPSListener() {
    let c = Conformance::start(&["httproute-https-listener.yaml"]);
    c.accepted(INFRA, "httproute-https-test");
    c.accepted(INFRA, "httproute-https-test-no-hostname");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for (host, status, backend) in [
            ("example.org", 200, v(1)),
            ("unknown-example.org", 404, String::new()),
            ("second-example.org", 200, v(2)),
        ] {
            // The Gateway's certificate is served for the name.
            assert_eq!(
                tls::served_certificate(c.https, host).await,
                c.validity_certificate.der
            );
            let config = tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
            let mut stream = tls::connect(c.https, host, config)
                .await
                .expect("handshake");
            let (status_line, body) = tls::get_over(&mut stream, host, "/").await;
            assert!(
                status_line.contains(&format!(" {status} ")),
                "{host}: {status_line}"
            );
            if !backend.is_empty() {
                assert!(
                    body.contains(&format!("\"backend\":\"{backend}\"")),
                    "{host}: {body}"
                );
            }
        }
    });
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteHTTPSListenerDetectMisdirectedRequests() {
    let c = Conformance::start(&["httproute-https-listener-detect-misdirected-requests.yaml"]);
    for n in 1..=4 {
        c.accepted(
            INFRA,
            &format!("https-listener-detect-misdirected-requests-test-{n}"),
        );
    }
    // Upstream's cases, by server name; each group's hosts go over one HTTP/2 connection,
    // as a browser coalescing them would send them. (host, status, backend)
    type Answers<'a> = &'a [(&'a str, u16, String)];
    let cases: [(&str, Answers); 5] = [
        (
            "example.org",
            &[
                ("example.org", 200, v(1)),
                ("second-example.org", 421, String::new()),
                ("unknown-example.org", 404, String::new()),
            ],
        ),
        (
            "second-example.org",
            &[
                ("second-example.org", 200, v(2)),
                ("example.org", 421, String::new()),
                ("unknown-example.org", 421, String::new()),
            ],
        ),
        (
            "third-example.wildcard.org",
            &[
                ("third-example.wildcard.org", 200, v(3)),
                ("fith-example.wildcard.org", 200, v(3)),
                ("fourth-example.wildcard.org", 421, String::new()),
                ("second-example.org", 421, String::new()),
                ("unknown-example.org", 421, String::new()),
            ],
        ),
        (
            "fourth-example.wildcard.org",
            &[
                ("fourth-example.wildcard.org", 200, v(1)),
                ("fith-example.wildcard.org", 421, String::new()),
            ],
        ),
        (
            "unknown-example.org",
            &[
                ("example.org", 200, v(1)),
                ("unknown-example.org", 404, String::new()),
            ],
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answers = |server_name: &str, hosts: Answers| {
        runtime.block_on(async {
            let config = tls::client_config(&[b"h2"], tokio_rustls::rustls::DEFAULT_VERSIONS);
            let stream = tls::connect(c.https, server_name, config)
                .await
                .expect("handshake");
            let (mut client, connection) = h2::client::handshake(stream).await.expect("h2");
            tokio::spawn(connection);
            let mut answers = Vec::new();
            for (host, _, _) in hosts {
                let request = http::Request::builder()
                    .uri(format!("https://{host}/detect-misdirected-requests"))
                    .body(())
                    .expect("request");
                let (response, _) = client.send_request(request, true).expect("send");
                let response = response.await.expect("response");
                let status = response.status().as_u16();
                let body = h2_util::read_body(&mut response.into_body()).await;
                let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                let backend = body["backend"].as_str().unwrap_or_default().to_string();
                let backend = if status == 200 {
                    backend
                } else {
                    String::new()
                };
                answers.push((host.to_string(), status, backend));
            }
            answers
        })
    };
    for (server_name, hosts) in cases {
        let wanted: Vec<_> = hosts
            .iter()
            .map(|(h, s, b)| (h.to_string(), *s, b.clone()))
            .collect();
        wait_until(
            &format!("the answers on a connection to {server_name}: {wanted:?}"),
            READY_TIMEOUT,
            || answers(server_name, hosts) == wanted,
        );
    }
}

/// One GET of `host` over TLS to `address` with server name `sni`, presenting
/// `certificate` when asked: the status and the body, or `None` when the handshake or the
/// request fails (a refused client certificate ends the connection with an alert).
fn tls_get(
    address: SocketAddr,
    sni: &str,
    host: &str,
    certificate: Option<&TestCertificate>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config = match certificate {
            Some(certificate) => tls::client_config_with_certificate(certificate),
            None => tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS),
        };
        let mut stream = tls::connect(address, sni, config).await.ok()?;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                return None;
            }
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received).to_string();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })?;
            if body.len() >= length {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, body[..length].to_string()));
            }
        }
    })
}

/// [`tls_get`] answers 200 from `backend`, once the Gateway's routes are served.
fn expect_tls_backend(
    address: SocketAddr,
    host: &str,
    certificate: Option<&TestCertificate>,
    backend: &str,
) {
    wait_until(
        &format!("{host} on {address} to be answered by {backend}"),
        READY_TIMEOUT,
        || {
            tls_get(address, host, host, certificate).is_some_and(|(status, body)| {
                status == 200 && body.contains(&format!("\"backend\":\"{backend}\""))
            })
        },
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayFrontendClientCertificateValidation() {
    let gateway = "client-validation-default";
    let c = Conformance::start_dedicated(
        &["gateway-with-clientcertificate-validation.yaml"],
        &[gateway],
    );
    c.accepted(INFRA, "client-certificate-validation-https-test");
    c.accepted(
        INFRA,
        "client-certificate-validation-https-test-no-hostname",
    );
    let (default, per_port) = (c.https_of(gateway, 443), c.https_of(gateway, 8443));
    let (default_certificate, per_port_certificate) = (
        &c.validity_client_certificate,
        &c.per_port_client_certificate,
    );
    // Port 443 takes the default CA's certificates; 8443 its own CA's.
    expect_tls_backend(default, "example.org", Some(default_certificate), &v(1));
    assert_eq!(
        tls_get(
            default,
            "example.org",
            "example.org",
            Some(per_port_certificate)
        ),
        None
    );
    expect_tls_backend(
        per_port,
        "second-example.org",
        Some(per_port_certificate),
        &v(2),
    );
    assert_eq!(
        tls_get(
            per_port,
            "second-example.org",
            "second-example.org",
            Some(default_certificate)
        ),
        None
    );
    // sluice's own: a certificate is required, not only checked when sent.
    assert_eq!(tls_get(default, "example.org", "example.org", None), None);
}

#[test]
#[allow(non_snake_case)]
fn GatewayFrontendClientCertificateValidationInsecureFallback() {
    let gateway = "client-validation-insecure-fallback";
    let c = Conformance::start_dedicated(
        &["gateway-with-clientcertificate-validation-insecure-fallback.yaml"],
        &[gateway],
    );
    c.accepted(INFRA, "client-cert-validation-insecure-fallback-test");
    c.accepted(
        INFRA,
        "client-cert-validation-insecure-fallback-test-no-hostname",
    );
    gateway_condition(
        &c,
        gateway,
        "InsecureFrontendValidationMode",
        "True",
        "ConfigurationChanged",
    );
    for (port, host, backend) in [
        (443, "example.org", v(1)),
        (8443, "second-example.org", v(2)),
    ] {
        let address = c.https_of(gateway, port);
        for certificate in [
            Some(&c.validity_client_certificate),
            Some(&c.per_port_client_certificate),
            None,
        ] {
            expect_tls_backend(address, host, certificate, &backend);
        }
    }
}

#[test]
#[allow(non_snake_case)]
fn GatewayInvalidFrontendClientCertificateValidation() {
    let gateway = "gateway-with-invalid-client-cert-validation";
    let c = Conformance::start_dedicated(
        &["gateway-with-invalid-clientcertificate-validation.yaml"],
        &[gateway],
    );
    c.listener_status(
        gateway,
        "https",
        0,
        &[
            ("ResolvedRefs", "True", ""),
            ("Accepted", "True", ""),
            ("Programmed", "True", ""),
        ],
    );
    for (listener, reason) in [
        ("https-unresolved", "InvalidCACertificateRef"),
        ("https-invalid-kind", "InvalidCACertificateKind"),
        ("https-grant-missing", "RefNotPermitted"),
    ] {
        c.listener_status(
            gateway,
            listener,
            0,
            &[
                ("ResolvedRefs", "False", reason),
                ("Accepted", "False", "NoValidCACertificate"),
                ("Programmed", "False", ""),
            ],
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn GatewayFrontendInvalidDefaultClientCertificateValidation() {
    let gateway = "invalid-default-client-validation-config";
    let c = Conformance::start_dedicated(
        &["gateway-invalid-default-frontend-client-certificate-validation.yaml"],
        &[gateway],
    );
    c.listener_status(
        gateway,
        "http",
        1,
        &[
            ("ResolvedRefs", "True", ""),
            ("Accepted", "True", ""),
            ("Programmed", "True", ""),
        ],
    );
    c.expect_at(
        c.http_of(gateway),
        "GET",
        "/",
        &[("host", "example.org")],
        200,
        &v(1),
    );
    c.listener_status(
        gateway,
        "https",
        0,
        &[
            ("ResolvedRefs", "False", "InvalidCACertificateRef"),
            ("Accepted", "False", "NoValidCACertificate"),
            ("Programmed", "False", ""),
        ],
    );
    // The port fails closed: no client passes the check its Gateway asked for (until the
    // Gateway is served, its listener answers 404 without asking for a certificate).
    let https = c.https_of(gateway, 443);
    for certificate in [None, Some(&c.validity_client_certificate)] {
        wait_until("the handshake to fail", READY_TIMEOUT, || {
            tls_get(https, "example.org", "example.org", certificate).is_none()
        });
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidBackendRefUnknownKind() {
    let c = Conformance::start(&["httproute-invalid-backendref-unknown-kind.yaml"]);
    let route = "invalid-backend-ref-unknown-kind";
    c.route_condition(INFRA, route, "Accepted", "True", "Accepted");
    c.route_condition(INFRA, route, "ResolvedRefs", "False", "InvalidKind");
    c.expect("GET", "/v2", &[], 500, "");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidNonExistentBackendRef() {
    let c = Conformance::start(&["httproute-invalid-nonexistent-backendref.yaml"]);
    let route = "invalid-nonexistent-backend-ref";
    c.route_condition(INFRA, route, "Accepted", "True", "Accepted");
    c.route_condition(INFRA, route, "ResolvedRefs", "False", "BackendNotFound");
    c.expect("GET", "/", &[], 500, "");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteInvalidCrossNamespaceParentRef() {
    let c = Conformance::start(&["httproute-invalid-cross-namespace-parent-ref.yaml"]);
    let namespace = "gateway-conformance-web-backend";
    let route = "invalid-cross-namespace-parent-ref";
    c.route_condition(namespace, route, "ResolvedRefs", "True", "ResolvedRefs");
    c.route_condition(
        namespace,
        route,
        "Accepted",
        "False",
        "NotAllowedByListeners",
    );
    c.listener_status("same-namespace", "http", 0, &[]);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRedirectHostAndStatus() {
    let c = Conformance::start(&["httproute-redirect-host-and-status.yaml"]);
    c.accepted(INFRA, "redirect-host-and-status");
    for (path, status) in [("/hostname-redirect", 302), ("/host-and-status", 301)] {
        let wanted = (status, "example.org".to_string());
        wait_until(&format!("{path} to redirect"), READY_TIMEOUT, || {
            let (status, host, _) = location(&c, path);
            (status, host) == wanted
        });
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRoutePathMatchOrder() {
    let c = Conformance::start(&["httproute-path-match-order.yaml"]);
    c.accepted(INFRA, "path-matching-order");
    for (path, n) in [
        ("/match/exact/one", 3),
        ("/match/exact", 2),
        ("/match", 1),
        ("/match/prefix/one/any", 2),
        ("/match/prefix/any", 1),
        ("/match/any", 3),
    ] {
        c.expect("GET", path, &[], 200, &v(n));
    }
}

#[test]
#[allow(non_snake_case)]
fn GatewayInvalidTLSConfiguration() {
    let c = Conformance::start(&["gateway-invalid-tls-configuration.yaml"]);
    for gateway in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-group",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        c.listener_status(
            gateway,
            "https",
            0,
            &[("ResolvedRefs", "False", "InvalidCertificateRef")],
        );
    }
}

/// Waits until Gateway `name` says `Accepted` is `status` with `reason`.
fn gateway_accepted(c: &Conformance, name: &str, status: &str, reason: &str) {
    gateway_condition(c, name, "Accepted", status, reason);
}

/// GatewayMustHaveCondition: Gateway `name` has condition `type_` with `status` and
/// `reason` at its generation.
fn gateway_condition(c: &Conformance, name: &str, type_: &str, status: &str, reason: &str) {
    let found = c.kube.wait_until(READY_TIMEOUT, |kube| {
        kube.get::<Gateway>(INFRA, name)
            .and_then(|g| {
                let generation = g.metadata.generation;
                g.status?.conditions.map(|list| (list, generation))
            })
            .is_some_and(|(list, generation)| {
                list.iter().any(|c| {
                    c.type_ == type_
                        && c.status == status
                        && c.reason == reason
                        && c.observed_generation == generation
                })
            })
    });
    assert!(
        found,
        "Gateway {name}: no {type_}={status} ({reason}); status {:?}",
        c.kube.get::<Gateway>(INFRA, name).and_then(|g| g.status)
    );
}

/// The `status.addresses` (type, value) of Gateway `name`.
fn gateway_addresses(c: &Conformance, name: &str) -> Vec<(String, String)> {
    c.kube
        .get::<Gateway>(INFRA, name)
        .and_then(|g| g.status?.addresses)
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.r#type.unwrap_or_default(), a.value))
        .collect()
}

#[test]
#[allow(non_snake_case)]
fn GatewayTLSBackendClientCertificate() {
    let c = Conformance::start(&["gateway-tls-backend-client-certificate.yaml"]);
    let name = "gateway-tls-backend-client-certificate";
    c.accepted(INFRA, name);
    policy_accepted(&c, "gateway-tls-backend-client-certificate-test", name);
    gateway_condition(&c, name, "ResolvedRefs", "True", "ResolvedRefs");
    // The backend asks for a certificate of the suite's CA and gets the Gateway's.
    let presented = tls::sha256_hex(&c.tls_checks_client_certificate.der);
    let answer = || {
        let response = Client::connect(c.http).request("GET", "/", &[("host", "abc.example.com")]);
        (
            response.status,
            response.header("x-client-cert").unwrap_or("").to_string(),
        )
    };
    wait_until(
        "a request to reach the backend with the Gateway's client certificate",
        READY_TIMEOUT,
        || answer() == (200, presented.clone()),
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayInvalidTLSBackendConfiguration() {
    let c = Conformance::start(&["gateway-invalid-tls-backend-configuration.yaml"]);
    for (name, reason) in [
        (
            "gateway-client-certificate-nonexistent-secret",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-unsupported-group",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-unsupported-kind",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-malformed-secret",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-missing-reference-grant",
            "RefNotPermitted",
        ),
    ] {
        gateway_condition(&c, name, "ResolvedRefs", "False", reason);
        gateway_condition(&c, name, "Accepted", "True", "Accepted");
    }
}

#[test]
#[allow(non_snake_case)]
fn GatewayStaticAddresses() {
    let c = Conformance::start(&["gateway-static-addresses.yaml"]);
    let name = "gateway-static-addresses";
    gateway_condition(&c, name, "Accepted", "False", "UnsupportedAddress");
    // The suite removes the addresses one at a time, by value.
    let without = |value: &str| {
        let mut gateway: Gateway = c.kube.get(INFRA, name).expect("the Gateway");
        let addresses = gateway.spec.addresses.get_or_insert_with(Vec::new);
        addresses.retain(|a| a.value.as_deref() != Some(value));
        c.kube.apply(gateway);
    };
    without("fake address teehee!");
    gateway_condition(&c, name, "Accepted", "True", "Accepted");
    gateway_condition(&c, name, "Programmed", "False", "AddressNotUsable");
    without(UNUSABLE);
    gateway_condition(&c, name, "Accepted", "True", "Accepted");
    gateway_condition(&c, name, "Programmed", "True", "Programmed");
    let valid = [("Accepted", "True", ""), ("ResolvedRefs", "True", "")];
    c.listener_status(name, "http", 0, &valid);
    assert!(c
        .supported_kinds(name, "http")
        .contains(&"HTTPRoute".to_string()));
    let wanted = vec![("IPAddress".to_string(), PUBLISHED.to_string())];
    let assigned = c
        .kube
        .wait_until(READY_TIMEOUT, |_| gateway_addresses(&c, name) == wanted);
    assert!(
        assigned,
        "Gateway {name}: addresses {:?}, want {wanted:?}",
        gateway_addresses(&c, name)
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayOptionalAddressValue() {
    let c = Conformance::start(&["gateway-optional-address-value.yaml"]);
    let name = "gateway-without-address-value";
    gateway_condition(&c, name, "Accepted", "True", "Accepted");
    // WaitForGatewayAddress: an address is assigned.
    let assigned = c
        .kube
        .wait_until(READY_TIMEOUT, |_| !gateway_addresses(&c, name).is_empty());
    assert!(assigned, "Gateway {name}: no address assigned");
}

#[test]
#[allow(non_snake_case)]
fn GatewayListenerUnsupportedProtocol() {
    let c = Conformance::start(&["gateway-invalid-listeners-unsupported-protocol.yaml"]);
    let unsupported = [("Accepted", "False", "UnsupportedProtocol")];
    gateway_accepted(
        &c,
        "gateway-only-unsupported-protocols",
        "False",
        "ListenersNotValid",
    );
    c.listener_status(
        "gateway-only-unsupported-protocols",
        "invalid",
        0,
        &unsupported,
    );
    assert!(c
        .supported_kinds("gateway-only-unsupported-protocols", "invalid")
        .is_empty());
    gateway_accepted(
        &c,
        "gateway-supported-and-unsupported-protocols",
        "True",
        "ListenersNotValid",
    );
    c.listener_status(
        "gateway-supported-and-unsupported-protocols",
        "http",
        0,
        &[("Accepted", "True", "Accepted")],
    );
    c.listener_status(
        "gateway-supported-and-unsupported-protocols",
        "invalid",
        0,
        &unsupported,
    );
}

#[test]
#[allow(non_snake_case)]
fn HTTPRoutePartiallyInvalidViaInvalidReferenceGrant() {
    let c = Conformance::start(&["httproute-partially-invalid-via-invalid-reference-grant.yaml"]);
    c.route_condition(
        INFRA,
        "invalid-reference-grant",
        "ResolvedRefs",
        "False",
        "RefNotPermitted",
    );
    c.expect("GET", "/v2", &[], 500, "");
    c.expect(
        "GET",
        "/",
        &[],
        200,
        "gateway-conformance-app-backend/app-backend-v1",
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayInvalidParametersRef() {
    let c = Conformance::start(&["gateway-invalid-parameters-ref.yaml"]);
    gateway_accepted(
        &c,
        "gateway-invalid-parameters-ref",
        "False",
        "InvalidParameters",
    );
}

#[test]
#[allow(non_snake_case)]
fn GatewayModifyListeners() {
    let c = Conformance::start(&["gateway-modify-listeners.yaml"]);
    let valid = [("Accepted", "True", ""), ("ResolvedRefs", "True", "")];
    // A listener added serves its routes too.
    c.listener_status("gateway-add-listener", "https", 1, &valid);
    let mut gateway: Gateway = c
        .kube
        .get(INFRA, "gateway-add-listener")
        .expect("the Gateway");
    gateway.spec.listeners.push(typed(&serde_json::json!({
        "name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com",
        "allowedRoutes": {"namespaces": {"from": "All"}},
    })));
    c.kube.apply(gateway);
    c.listener_status("gateway-add-listener", "https", 1, &valid);
    c.listener_status("gateway-add-listener", "http", 1, &valid);
    expect_host(&c, "data.test.com", "/", 200, &v(1));
    // A listener removed leaves the status and stops routing its traffic.
    c.listener_status("gateway-remove-listener", "http", 1, &valid);
    let mut gateway: Gateway = c
        .kube
        .get(INFRA, "gateway-remove-listener")
        .expect("the Gateway");
    gateway.spec.listeners.retain(|l| l.name == "http");
    c.kube.apply(gateway);
    let gone = c.kube.wait_until(READY_TIMEOUT, |kube| {
        kube.get::<Gateway>(INFRA, "gateway-remove-listener")
            .and_then(|g| g.status?.listeners)
            .is_some_and(|l| l.len() == 1 && l[0].name == "http")
    });
    assert!(gone, "the removed listener's status is gone");
    c.listener_status("gateway-remove-listener", "http", 1, &valid);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteServiceTypes() {
    let c = Conformance::start(&["httproute-service-types.yaml"]);
    c.accepted(INFRA, "service-types");
    // setupEndpointSlices: the Services without a selector get EndpointSlices naming the
    // pods of infra-backend-v1 (here its one backend), IPv4 only as the pods have.
    let pods = c
        .backends
        .iter()
        .find(|b| b.name == v(1))
        .map(|b| b.address)
        .expect("the infra-backend-v1 backend");
    for service in ["manual-endpointslices", "headless-manual-endpointslices"] {
        c.kube.apply(slice(
            INFRA,
            &format!("{service}-ip4"),
            service,
            ("first-port", pods.port()),
            &[ready(&pods.ip().to_string())],
        ));
    }
    for path in [
        "/manual-endpointslices",
        "/headless-manual-endpointslices",
        "/headless",
    ] {
        c.expect("GET", path, &[], 200, &v(1));
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteBackendProtocolH2C() {
    let c = Conformance::start(&["httproute-backend-protocol-h2c.yaml"]);
    c.accepted(INFRA, "backend-protocol-h2c");
    // An HTTP/2 prior-knowledge request reaches the backend, spoken to in h2c (its stand-in
    // speaks nothing else and answers with its name).
    let get = || {
        runtime().block_on(async {
            let tcp = tokio::net::TcpStream::connect(c.http).await.ok()?;
            let (client, connection) = h2::client::handshake(tcp).await.ok()?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let request = http::Request::get("http://h2c.test/").body(()).ok()?;
            let mut client = client.ready().await.ok()?;
            let (response, _) = client.send_request(request, true).ok()?;
            let response = response.await.ok()?;
            let status = response.status().as_u16();
            let body = h2_util::read_body(&mut response.into_body()).await;
            Some((status, String::from_utf8_lossy(&body).to_string()))
        })
    };
    let wanted = Some((200, v(1)));
    wait_until(
        "an h2c request to reach infra-backend-v1",
        READY_TIMEOUT,
        || get() == wanted,
    );
    for _ in 0..3 {
        assert_eq!(get(), wanted);
    }
}

#[test]
#[allow(non_snake_case)]
fn GatewayHTTPListenerIsolation() {
    // Two Gateways with the same listeners: the suite gives each an address.
    let gateways = [
        "http-listener-isolation",
        "http-listener-isolation-with-hostname-intersection",
    ];
    let c = Conformance::start_dedicated(
        &[
            "gateway-http-listener-isolation.yaml",
            "gateway-http-listener-isolation-with-hostname-intersection.yaml",
        ],
        &gateways,
    );
    for route in [
        "attaches-to-empty-hostname",
        "attaches-to-wildcard-example-com",
        "attaches-to-wildcard-foo-example-com",
        "attaches-to-abc-foo-example-com",
    ] {
        c.accepted(INFRA, route);
        c.accepted(INFRA, &format!("{route}-with-hostname-intersection"));
    }
    let paths = [
        "/empty-hostname",
        "/wildcard-example-com",
        "/wildcard-foo-example-com",
        "/abc-foo-example-com",
    ];
    // A request takes the routes of the most specific listener its host matches, only.
    let hosts = [
        ("bar.com", "/empty-hostname"),
        ("bar.example.com", "/wildcard-example-com"),
        ("bar.foo.example.com", "/wildcard-foo-example-com"),
        ("abc.foo.example.com", "/abc-foo-example-com"),
    ];
    for gateway in gateways {
        let at = c.http_of(gateway);
        for (host, served) in hosts {
            for path in paths {
                if path == served {
                    c.expect_at(at, "GET", path, &[("host", host)], 200, &v(1));
                } else {
                    c.expect_at(at, "GET", path, &[("host", host)], 404, "");
                }
            }
        }
    }
}

#[test]
fn a_narrower_listener_without_routes_keeps_its_names_from_the_broader_ones() {
    let gateway = "http-listener-isolation";
    let c = Conformance::start_dedicated(&["gateway-http-listener-isolation.yaml"], &[gateway]);
    c.accepted(INFRA, "attaches-to-abc-foo-example-com");
    let at = c.http_of(gateway);
    let abc = [("host", "abc.foo.example.com")];
    c.expect_at(at, "GET", "/abc-foo-example-com", &abc, 200, &v(1));
    // The listener for abc.foo.example.com has no route now: its names are still its own,
    // and the broader listeners' routes do not answer for them.
    c.kube
        .delete_object::<HttpRoute>(INFRA, "attaches-to-abc-foo-example-com");
    c.expect_at(at, "GET", "/abc-foo-example-com", &abc, 404, "");
    for path in [
        "/wildcard-foo-example-com",
        "/wildcard-example-com",
        "/empty-hostname",
    ] {
        c.expect_at(at, "GET", path, &abc, 404, "");
    }
    // Other names of the broader listeners are served as before.
    let bar = [("host", "bar.foo.example.com")];
    c.expect_at(at, "GET", "/wildcard-foo-example-com", &bar, 200, &v(1));
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteBackendProtocolWebSocket() {
    let c = Conformance::start(&["httproute-backend-protocol-websocket.yaml"]);
    c.accepted(INFRA, "backend-protocol-ws");
    // The Service port of `appProtocol: kubernetes.io/ws` takes the upgrade, and the
    // tunnel carries text and binary frames both ways.
    let mut ws = support::websocket_connect(c.http);
    support::echo(&mut ws, b"\x81\x12Websocket Support!");
    support::echo(&mut ws, &[0x82, 7, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteWeight() {
    let c = Conformance::start(&["httproute-weight.yaml"]);
    c.accepted(INFRA, "weighted-backends");
    c.expect_status("GET", "/", 200);
    // The upstream test sends 500 requests and allows 5 points either way; with a random
    // pick that fails about once in 60 runs, so this sends 4,000 (the same bound is then
    // about 7 standard deviations wide).
    let mut client = Client::connect(c.http);
    let mut seen: std::collections::BTreeMap<String, u32> = Default::default();
    let total = 4_000;
    for _ in 0..total {
        let response = client.request("GET", "/", &[]);
        assert_eq!(response.status, 200);
        *seen.entry(response.backend().to_string()).or_default() += 1;
    }
    for (n, share) in [(1, 0.7), (2, 0.3), (3, 0.0)] {
        let got = f64::from(seen.get(&v(n)).copied().unwrap_or(0)) / f64::from(total);
        assert!(
            (got - share).abs() <= 0.05,
            "{}: {got} of requests, want {share}",
            v(n)
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteNoBackendRefs() {
    let c = Conformance::start(&["httproute-omitted-backendrefs.yaml"]);
    c.accepted(INFRA, "omitted-backendrefs");
    c.expect("GET", "/forward", &[], 200, &v(1));
    for path in ["/omitted-no-forward", "/empty-no-forward"] {
        c.expect("GET", path, &[], 500, "");
    }
}

fn tls_condition(c: &Conformance, name: &str, type_: &str, status: &str, reason: &str) {
    c.condition_of::<TlsRoute>(INFRA, name, type_, status, reason);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// MakeTLSConnectionAndExpectEventuallyConnectionRejection: no TLS session comes up for
/// `server_name`.
fn rejected_connection(c: &Conformance, server_name: &str) {
    runtime().block_on(async {
        let config = tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
        let outcome = tls::connect(c.passthrough, server_name, config).await;
        assert!(outcome.is_err(), "a TLS session came up for {server_name}");
    });
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteSimpleSameNamespace() {
    let c = Conformance::start(&["tlsroute-simple-same-namespace.yaml"]);
    let route = "gateway-conformance-infra-test";
    tls_condition(&c, route, "Accepted", "True", "Accepted");
    tls_condition(&c, route, "ResolvedRefs", "True", "ResolvedRefs");
    assert_eq!(c.tls_backends.len(), 1);
    expect_relayed_to_tcp_backend(&c, c.passthrough);
}

/// A TLS connection to `at` for abc.example.com reaches tcp-backend's TLS port untouched: the
/// backend's own certificate, and it sees the client's server name.
fn expect_relayed_to_tcp_backend(c: &Conformance, at: SocketAddr) {
    runtime().block_on(async {
        assert_eq!(
            tls::served_certificate(at, "abc.example.com").await,
            c.tls_certificate.der
        );
        let config = tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(at, "abc.example.com", config)
            .await
            .expect("handshake with the backend");
        let (_, body) = tls::get_over(&mut stream, "abc.example.com", "/").await;
        assert_eq!(body, format!("{INFRA}/tcp-backend sni=abc.example.com"));
    });
}

/// A TLS connection to `at` for tls.example.com is terminated with the Gateway's certificate
/// and reaches tcp-backend's plain port in the clear (its IS_TLS says false).
fn expect_terminated_to_tcp_backend(c: &Conformance, at: SocketAddr) {
    let backend = format!("{INFRA}/tcp-backend");
    wait_until(
        &format!("a TLS connection for tls.example.com to reach {backend} in the clear"),
        READY_TIMEOUT,
        || {
            tls_tcp_echo(at, "tls.example.com", &c.tls_terminate_certificate).as_deref()
                == Ok(&backend)
        },
    );
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteListenerTerminateNotSupported() {
    // Upstream checks this only of implementations without TLSRouteModeTerminate, which
    // sluice has: the listener is accepted, for TLSRoutes.
    let c = Conformance::start(&["tlsroute-listener-terminate-not-supported.yaml"]);
    let gateway = "gateway-tlsroute-terminate-unsupported";
    c.listener_status(
        gateway,
        "tls-terminate",
        0,
        &[("Accepted", "True", "Accepted")],
    );
    assert_eq!(c.supported_kinds(gateway, "tls-terminate"), ["TLSRoute"]);
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteListenerPassthroughSupportedKinds() {
    let c = Conformance::start(&["tlsroute-listener-passthrough-supported-kinds.yaml"]);
    let gateway = "gateway-tlsroute-passthrough-supported-kind";
    c.listener_status(
        gateway,
        "tls-passthrough",
        0,
        &[("ResolvedRefs", "False", "InvalidRouteKinds")],
    );
    assert_eq!(c.supported_kinds(gateway, "tls-passthrough"), ["TLSRoute"]);
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteInvalidReferenceGrant() {
    let c = Conformance::start(&["tlsroute-invalid-reference-grant.yaml"]);
    let route = "gateway-conformance-infra-test";
    tls_condition(&c, route, "Accepted", "True", "Accepted");
    tls_condition(&c, route, "ResolvedRefs", "False", "RefNotPermitted");
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteInvalidBackendRefNonexistent() {
    let c = Conformance::start(&["tlsroute-invalid-backendref-nonexistent.yaml"]);
    let route = "invalid-backend-ref-nonexistent";
    tls_condition(&c, route, "Accepted", "True", "Accepted");
    tls_condition(&c, route, "ResolvedRefs", "False", "BackendNotFound");
    rejected_connection(&c, "abc.example.com");
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteInvalidBackendRefUnknownKind() {
    let c = Conformance::start(&["tlsroute-invalid-backendref-unknown-kind.yaml"]);
    let route = "invalid-backend-ref-unknown-kind";
    tls_condition(&c, route, "Accepted", "True", "Accepted");
    tls_condition(&c, route, "ResolvedRefs", "False", "InvalidKind");
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteInvalidNoMatchingListenerHostname() {
    let c = Conformance::start(&["tlsroute-invalid-no-matching-listener-hostname.yaml"]);
    for route in [
        "tlsroute-hostname-mismatch-1",
        "tlsroute-hostname-mismatch-2",
    ] {
        tls_condition(&c, route, "Accepted", "False", "NoMatchingListenerHostname");
    }
    for gateway in [
        "gateway-tls-exact-hostname",
        "gateway-tls-wildcard-hostname",
    ] {
        c.listener_status_all_zero(gateway);
    }
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteInvalidNoMatchingListener() {
    let c = Conformance::start(&["tlsroute-invalid-no-matching-listener.yaml"]);
    for route in [
        "tlsroute-not-allowed-protocol-http",
        "tlsroute-not-allowed-protocol-https",
    ] {
        tls_condition(&c, route, "Accepted", "False", "NotAllowedByListeners");
    }
    tls_condition(
        &c,
        "tlsroute-no-matching-section-name",
        "Accepted",
        "False",
        "NoMatchingParent",
    );
    for gateway in ["gateway-tlsroute-http-only", "gateway-tlsroute-https-only"] {
        c.listener_status_all_zero(gateway);
    }
}

// ---------------------------------------------------------------------------------------
// TCPRoute: the suite's TCP echo server and its exchange
// ---------------------------------------------------------------------------------------

/// The Gateway ports of a manifest object's TLS listeners in mode Terminate (none unless
/// it is a Gateway).
fn terminating_ports(object: &Value) -> Vec<u16> {
    if object["kind"] != "Gateway" {
        return Vec::new();
    }
    object["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["protocol"] == "TLS" && l["tls"]["mode"] != "Passthrough")
        .filter_map(|l| u16::try_from(l["port"].as_u64()?).ok())
        .collect()
}

/// The Gateway ports of a manifest object's listeners of `protocol` (none unless it is a
/// Gateway).
fn listener_ports(object: &Value, protocol: &str) -> Vec<u16> {
    if object["kind"] != "Gateway" {
        return Vec::new();
    }
    object["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["protocol"] == protocol)
        .filter_map(|l| u16::try_from(l["port"].as_u64()?).ok())
        .collect()
}

/// What the suite's TCP echo server (echo-basic with `TCP_ECHO_SERVER`) sends first.
const TCP_WELCOME: &str = "Gateway API Test TCP Server\n";

/// Starts a stand-in for the suite's TCP echo server behind Service `service` of
/// `namespace`: it sends [`TCP_WELCOME`], then answers `PING` with `PONG`, `IS_TLS` with
/// `false` and `TEST` with the JSON the suite's server sends (its namespace, Service and
/// pod, the pod named as a Deployment's are: `SERVICE-HASH-HASH`). It lives as long as the
/// test process.
fn tcp_echo_backend(namespace: &str, service: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TCP echo backend");
    let address = listener.local_addr().expect("address");
    let test = serde_json::json!({
        "namespace": namespace,
        "ingress": "",
        "service": service,
        "pod": format!("{service}-0-0"),
        "tcpport": "3000",
        "isTLS": false,
    })
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let test = test.clone();
            std::thread::spawn(move || serve_tcp_echo(stream, &test));
        }
    });
    address
}

/// One connection of [`tcp_echo_backend`].
fn serve_tcp_echo(stream: std::net::TcpStream, test: &str) {
    use std::io::{BufRead, Write};
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if writer.write_all(TCP_WELCOME.as_bytes()).is_err() {
        return;
    }
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let answer = match line.as_str() {
            "TEST" => format!("{test}\n"),
            "IS_TLS" => "false\n".to_string(),
            "PING" => "PONG\n".to_string(),
            _ => continue,
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The suite's TCP exchange over one new connection to `gateway`: the welcome line, `PING`
/// → `PONG`, `IS_TLS` → `false` (MakeTCPRequestAndExpectEventuallyValidResponse), then
/// `TEST` (also all of tcp.EchoSendOnce). Returns the backend that answered, as
/// `NAMESPACE/SERVICE` (the pod's name without its two hash suffixes, as
/// weight.extractBackendName reads it), or what went wrong.
fn tcp_echo(gateway: SocketAddr) -> Result<String, String> {
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&gateway, timeout)
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp_echo_over(&mut stream)
}

/// [`tcp_echo`] over TLS for `server_name`, which must be served `certificate`.
fn tls_tcp_echo(
    gateway: SocketAddr,
    server_name: &str,
    certificate: &TestCertificate,
) -> Result<String, String> {
    let timeout = std::time::Duration::from_secs(5);
    let socket = std::net::TcpStream::connect_timeout(&gateway, timeout)
        .map_err(|e| format!("connect: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let config = tls::client_config(&[], tokio_rustls::rustls::DEFAULT_VERSIONS);
    let connection =
        rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS client: {e}"))?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let echoed = tcp_echo_over(&mut stream)?;
    let leaf = stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec());
    if leaf.as_deref() != Some(certificate.der.as_slice()) {
        return Err(format!(
            "{server_name}: not served the Gateway's certificate"
        ));
    }
    Ok(echoed)
}

/// The suite's TCP echo exchange over `stream`: the backend it reached.
fn tcp_echo_over<S: std::io::Read + std::io::Write>(stream: &mut S) -> Result<String, String> {
    // Sends `send` (nothing when empty) and reads one line back.
    let mut exchange = |send: &str| -> Result<String, String> {
        if !send.is_empty() {
            stream
                .write_all(send.as_bytes())
                .and_then(|()| stream.flush())
                .map_err(|e| format!("send {send:?}: {e}"))?;
        }
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            match stream.read(&mut byte) {
                Ok(0) => return Err(format!("closed before an answer to {send:?}")),
                Ok(_) => line.push(byte[0]),
                Err(e) => return Err(format!("read the answer to {send:?}: {e}")),
            }
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    };
    let welcome = exchange("")?;
    if welcome != TCP_WELCOME {
        return Err(format!("unexpected welcome message {welcome:?}"));
    }
    for (send, wanted) in [("PING\n", "PONG\n"), ("IS_TLS\n", "false\n")] {
        let answer = exchange(send)?;
        if answer != wanted {
            return Err(format!("{send:?} answered {answer:?}, not {wanted:?}"));
        }
    }
    let answer = exchange("TEST\n")?;
    let payload: Value =
        serde_json::from_str(&answer).map_err(|e| format!("TEST answered {answer:?}: {e}"))?;
    let namespace = payload["namespace"].as_str().unwrap_or_default();
    let pod = payload["pod"].as_str().unwrap_or_default();
    if pod.is_empty() {
        return Err(format!("TEST answer without a pod: {answer:?}"));
    }
    let parts: Vec<&str> = pod.split('-').collect();
    let backend = if parts.len() < 3 {
        pod.to_string()
    } else {
        parts[..parts.len() - 2].join("-")
    };
    Ok(format!("{namespace}/{backend}"))
}

/// MakeTCPRequestAndExpectEventuallyValidResponse: a connection to `gateway` eventually
/// reaches `backend` (`NAMESPACE/SERVICE`).
fn expect_tcp(gateway: SocketAddr, backend: &str) {
    wait_until(
        &format!("a TCP connection to {gateway} to reach {backend}"),
        READY_TIMEOUT,
        || tcp_echo(gateway).as_deref() == Ok(backend),
    );
}

impl Conformance {
    /// WaitForGatewayAddress for a TCP listener: the address of the sluice tcp listener
    /// that serves listener `listener` of Gateway `gateway` (the one of its port).
    fn tcp_address(&self, gateway: &str, listener: &str) -> SocketAddr {
        let object: Gateway = self
            .kube
            .get(INFRA, gateway)
            .unwrap_or_else(|| panic!("no Gateway {gateway}"));
        let port = object
            .spec
            .listeners
            .iter()
            .find(|l| l.name == listener)
            .map(|l| l.port)
            .unwrap_or_else(|| panic!("Gateway {gateway} has no listener {listener}"));
        let port = u16::try_from(port).expect("a port");
        *self
            .tcp_listeners
            .get(&port)
            .unwrap_or_else(|| panic!("no sluice tcp listener for port {port}"))
    }
}

/// The listener half of GatewayAndRoutesMustBeAccepted (RoutesAndParentMustBeAccepted):
/// every listener of Gateway `name` is Accepted, ResolvedRefs and Programmed.
fn listeners_ready(c: &Conformance, name: &str) {
    let ready = c.kube.wait_until(READY_TIMEOUT, |kube| {
        let Some(gateway) = kube.get::<Gateway>(INFRA, name) else {
            return false;
        };
        let generation = gateway.metadata.generation;
        let listeners = gateway.status.and_then(|s| s.listeners).unwrap_or_default();
        !listeners.is_empty()
            && listeners.iter().all(|l| {
                ["Accepted", "ResolvedRefs", "Programmed"]
                    .iter()
                    .all(|type_| {
                        l.conditions.iter().any(|cond| {
                            cond.type_ == *type_
                                && cond.status == "True"
                                && cond.observed_generation == generation
                        })
                    })
            })
    });
    assert!(
        ready,
        "Gateway {name}: not every listener is Accepted, ResolvedRefs and Programmed; status {:?}",
        c.kube.get::<Gateway>(INFRA, name).and_then(|g| g.status)
    );
}

/// RouteMustHaveParents (TCPRouteMustHaveParents, TLSRouteMustHaveParents) with one
/// expected parent: Gateway `gateway` of the conformance namespace, sluice's controller,
/// Accepted=True (Accepted) at the route's generation. The parentRef's group, kind and
/// namespace must be the Gateway's or absent: a real API server defaults group and kind
/// into the route's spec, which sluice copies, and the fake one does not.
fn route_has_parent<K>(c: &Conformance, route: &str, gateway: &str)
where
    K: support::fake_kube::Kind + serde::de::DeserializeOwned + serde::Serialize,
{
    let status_of = |kube: &FakeKube| {
        kube.get::<K>(INFRA, route)
            .and_then(|r| serde_json::to_value(r).ok())
    };
    let found = c.kube.wait_until(READY_TIMEOUT, |kube| {
        let Some(object) = status_of(kube) else {
            return false;
        };
        let generation = &object["metadata"]["generation"];
        object["status"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| {
                let parent = &p["parentRef"];
                let absent_or =
                    |field: &str, value: &str| parent[field].is_null() || parent[field] == value;
                p["controllerName"] == CONTROLLER
                    && parent["name"] == gateway
                    && absent_or("group", "gateway.networking.k8s.io")
                    && absent_or("kind", "Gateway")
                    && absent_or("namespace", INFRA)
                    && p["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|cond| {
                            cond["type"] == "Accepted"
                                && cond["status"] == "True"
                                && cond["reason"] == "Accepted"
                                && &cond["observedGeneration"] == generation
                        })
            })
    });
    assert!(
        found,
        "{} {route}: no parent {gateway} with Accepted=True in {:?}",
        K::kind(&()),
        status_of(&c.kube).map(|r| r["status"].clone())
    );
}

fn tcp_condition(c: &Conformance, name: &str, type_: &str, status: &str, reason: &str) {
    c.condition_of::<TcpRoute>(INFRA, name, type_, status, reason);
}

/// GatewayAndTCPRoutesMustBeAccepted: `route` is accepted by Gateway `gateway`, whose
/// listeners are all accepted, resolved and programmed.
fn tcp_accepted(c: &Conformance, gateway: &str, route: &str) {
    route_has_parent::<TcpRoute>(c, route, gateway);
    listeners_ready(c, gateway);
}

fn tcp_v(n: u8) -> String {
    format!("{INFRA}/tcp-backend-v{n}")
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteInvalidBackendRefNonexistent() {
    let c = Conformance::start(&["tcproute-invalid-backendref-nonexistent.yaml"]);
    tcp_condition(
        &c,
        "tcp-route-invalid-backend-ref-nonexistent",
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    );
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteInvalidCrossNamespaceBackendRef() {
    let c = Conformance::start(&["tcproute-invalid-cross-namespace-backend-ref.yaml"]);
    let route = "tcp-invalid-cross-namespace-backend-ref";
    // Accepted on its parent: only the backend's resolution is denied.
    tcp_accepted(&c, "tcp-invalid-cross-namespace-backend-ref-gateway", route);
    tcp_condition(&c, route, "ResolvedRefs", "False", "RefNotPermitted");
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteInvalidNonTCPListener() {
    let c = Conformance::start(&["tcproute-invalid-non-tcp-listener.yaml"]);
    tcp_condition(
        &c,
        "tcp-route",
        "Accepted",
        "False",
        "NotAllowedByListeners",
    );
    c.listener_status_all_zero("tcp-mixed-protocol-gateway");
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteMultipleRoutesAttachment() {
    let c = Conformance::start(&["tcproute-multiple-routes-attachment.yaml"]);
    let gateway = "tcp-multi-route-attach-gateway";
    let (older, newer) = ("tcproute-attach-older", "tcproute-attach-newer");
    tcp_accepted(&c, gateway, older);
    // Upstream sleeps a second so that the newer route's creationTimestamp is later: the
    // fake API server stamps each object it creates a second after the one before.
    c.kube.apply(typed::<TcpRoute>(&serde_json::json!({
        "metadata": {"name": newer, "namespace": INFRA},
        "spec": {
            "parentRefs": [{"name": gateway, "sectionName": "tcp"}],
            "rules": [{"backendRefs": [{"name": "tcp-attach-backend-2", "port": 3000}]}],
        },
    })));
    // Both accepted: the newer one is refused at the listener, not by its condition.
    for route in [older, newer] {
        tcp_condition(&c, route, "Accepted", "True", "Accepted");
    }
    c.listener_status(gateway, "tcp", 2, &[("Accepted", "True", "Accepted")]);
    assert!(
        c.supported_kinds(gateway, "tcp")
            .iter()
            .any(|k| k == "TCPRoute"),
        "listener tcp supports TCPRoute"
    );
    // Only the oldest route is bound: its backend answers every connection.
    let address = c.tcp_address(gateway, "tcp");
    let oldest = format!("{INFRA}/tcp-attach-backend-1");
    expect_tcp(address, &oldest);
    for i in 1..=100 {
        assert_eq!(tcp_echo(address), Ok(oldest.clone()), "connection {i}/100");
    }
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteParentRefAttachAll() {
    let c = Conformance::start(&["tcproute-parentref-attach-all.yaml"]);
    let gateway = "tcp-attach-all-gateway";
    route_has_parent::<TcpRoute>(&c, "tcp-route-attach-all", gateway);
    // Neither sectionName nor port: the route is on every TCP listener of the Gateway.
    for listener in ["one", "two", "three", "four"] {
        expect_tcp(
            c.tcp_address(gateway, listener),
            &format!("{INFRA}/tcp-echo-attach-all"),
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteParentRefPortAndSectionName() {
    let c = Conformance::start(&["tcproute-parentref-port-and-section-name.yaml"]);
    let gateway = "tcp-multi-listener-gateway";
    for (route, listener, backend) in [
        // By port (9300) only.
        ("tcp-route-by-port", "one", "tcp-echo-one"),
        // By sectionName only.
        ("tcp-route-by-section", "two", "tcp-echo-two"),
        // By both.
        ("tcp-route-by-section-and-port", "three", "tcp-echo-three"),
    ] {
        route_has_parent::<TcpRoute>(&c, route, gateway);
        expect_tcp(
            c.tcp_address(gateway, listener),
            &format!("{INFRA}/{backend}"),
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteReferenceGrant() {
    let c = Conformance::start(&["tcproute-reference-grant.yaml"]);
    let gateway = "tcp-reference-grant-gateway";
    let route = "tcp-reference-grant";
    tcp_accepted(&c, gateway, route);
    expect_tcp(
        c.tcp_address(gateway, "tcp"),
        "gateway-conformance-web-backend/tcp-reference-grant-backend",
    );
    // Without the grant the reference is no longer permitted.
    c.kube
        .delete_object::<ReferenceGrant>("gateway-conformance-web-backend", "tcp-reference-grant");
    tcp_condition(&c, route, "ResolvedRefs", "False", "RefNotPermitted");
}

/// weight.TestWeightedDistribution over TCP: 500 connections to `gateway`, 10 at a time,
/// each answered by one backend; every backend's share within 5 points of its weight, and
/// exactly the backends with a weight answer.
fn tcp_weighted_distribution(gateway: SocketAddr, wanted: &[(String, f64)]) -> Result<(), String> {
    const TOTAL: usize = 500;
    const CONCURRENT: usize = 10;
    const TOLERANCE: f64 = 0.05;
    let answers: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..CONCURRENT)
            .map(|_| {
                scope.spawn(move || {
                    (0..TOTAL / CONCURRENT)
                        .map(|_| tcp_echo(gateway))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|s| s.join().expect("sender thread"))
            .collect()
    });
    let mut seen: std::collections::BTreeMap<String, u32> = Default::default();
    for answer in answers {
        let backend = answer.map_err(|e| format!("error while sending requests: {e}"))?;
        if !wanted.iter().any(|(b, _)| *b == backend) {
            return Err(format!(
                "a connection was handled by an unexpected backend {backend:?}"
            ));
        }
        *seen.entry(backend).or_default() += 1;
    }
    let mut errors = Vec::new();
    let active = wanted.iter().filter(|(_, share)| *share > 0.0).count();
    if seen.len() != active {
        errors.push(format!(
            "expected {active} backends to receive traffic, but got {}",
            seen.len()
        ));
    }
    for (backend, share) in wanted {
        let got = f64::from(seen.get(backend).copied().unwrap_or(0)) / TOTAL as f64;
        if (got - share).abs() > TOLERANCE {
            errors.push(format!(
                "backend {backend:?} weighted traffic of {got} not within tolerance {share} (+/-{TOLERANCE})"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
#[allow(non_snake_case)]
fn TCPRouteWeightedRouting() {
    let c = Conformance::start(&["tcproute-weighted-routing.yaml"]);
    let gateway = "tcp-weighted-gateway";
    tcp_accepted(&c, gateway, "tcp-weighted-route");
    let address = c.tcp_address(gateway, "tcp");
    // ExpectAddressBeAvailable.
    wait_until("the TCP listener to accept", READY_TIMEOUT, || {
        std::net::TcpStream::connect(address).is_ok()
    });
    let wanted = [(tcp_v(1), 0.7), (tcp_v(2), 0.3), (tcp_v(3), 0.0)];
    // As upstream: up to weight.MaxTestRetries (10) samples of 500; a 70/30 sample misses
    // the 5-point bound about once in 70, so ten in a row practically never.
    let mut failures = Vec::new();
    for _ in 0..10 {
        match tcp_weighted_distribution(address, &wanted) {
            Ok(()) => return,
            Err(e) => failures.push(e),
        }
    }
    panic!("TCP weighted distribution did not converge within tolerance: {failures:#?}");
}

/// MakeTLSRequestAndExpectEventuallyConsistentResponse through the passthrough listener at
/// `gateway`: a TLS session for `server_name` is served the suite's `tls-checks-certificate`
/// (by the backend itself) and `GET /` answers 200 from `backend` (`NAMESPACE/SERVICE`),
/// then three times more in a row.
fn expect_passthrough(c: &Conformance, gateway: SocketAddr, server_name: &str, backend: &str) {
    let wanted = format!("{backend} sni={server_name}");
    let served = || {
        runtime().block_on(async {
            let config = tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
            let Ok(mut stream) = tls::connect(gateway, server_name, config).await else {
                return false;
            };
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.as_ref().to_vec());
            if leaf.as_deref() != Some(c.tls_checks_certificate.der.as_slice()) {
                return false;
            }
            let (status, body) = tls::get_over(&mut stream, server_name, "/").await;
            status.contains(" 200 ") && body == wanted
        })
    };
    wait_until(
        &format!("a TLS session for {server_name} to reach {backend}"),
        READY_TIMEOUT,
        &served,
    );
    for _ in 0..3 {
        assert!(served(), "{server_name}: not consistently {backend}");
    }
}

/// MakeTLSConnectionAndExpectEventuallyConnectionRejection through the passthrough listener at
/// `gateway`.
fn eventually_rejected(gateway: SocketAddr, server_name: &str) {
    wait_until(
        &format!("a TLS connection for {server_name} to be rejected"),
        READY_TIMEOUT,
        || {
            runtime().block_on(async {
                let config =
                    tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
                tls::connect(gateway, server_name, config).await.is_err()
            })
        },
    );
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteHostnameIntersection() {
    // The suite gives each Gateway an address; sluice serves each on listeners of its own.
    let gateways = [
        "gw-tlsroute-exact-hostname-x-1",
        "gw-tlsroute-more-specific-wc-hostname-x-2",
        "gw-tlsroute-less-specific-wc-hostname-x-3",
        "gw-tlsroute-empty-hostname-x-4",
    ];
    let c = Conformance::start_dedicated(&["tlsroute-hostname-intersection.yaml"], &gateways);
    let abc = ("abc.example.com", "tls-backend");
    let other = ("other.example.com", "tls-backend-2");
    for (gateway, routes, reached, rejected) in [
        // Exact listener hostname.
        (
            "gw-tlsroute-exact-hostname-x-1",
            &["tlsroute-more-specific-wc-hostname-x-1"][..],
            &[abc][..],
            "non.matching.com",
        ),
        // More specific wildcard listener hostname.
        (
            "gw-tlsroute-more-specific-wc-hostname-x-2",
            &[
                "tlsroute-exact-hostname-x-2",
                "tlsroute-less-specific-wc-hostname-x-2",
            ],
            &[abc, other],
            "non.matching.com",
        ),
        // Less specific wildcard listener hostname.
        (
            "gw-tlsroute-less-specific-wc-hostname-x-3",
            &[
                "tlsroute-exact-hostname-x-3",
                "tlsroute-more-specific-wc-hostname-x-3",
            ],
            &[abc, other],
            "non.matching.com",
        ),
        // No listener hostname.
        (
            "gw-tlsroute-empty-hostname-x-4",
            &[
                "tlsroute-exact-hostname-x-4",
                "tlsroute-less-specific-wc-hostname-x-4",
            ],
            &[abc, other],
            "non.matching.org",
        ),
    ] {
        for route in routes {
            route_has_parent::<TlsRoute>(&c, route, gateway);
            tls_condition(&c, route, "ResolvedRefs", "True", "ResolvedRefs");
        }
        let at = c.passthrough_of(gateway);
        for (server_name, backend) in reached {
            expect_passthrough(&c, at, server_name, &format!("{INFRA}/{backend}"));
        }
        eventually_rejected(at, rejected);
    }
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteTerminateSimpleSameNamespace() {
    let c = Conformance::start(&["tlsroute-terminate-simple-same-namespace.yaml"]);
    route_has_parent::<TlsRoute>(&c, "tlsroute-terminated-test", "gateway-tlsroute-terminate");
    tls_condition(
        &c,
        "tlsroute-terminated-test",
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
    expect_terminated_to_tcp_backend(&c, c.terminate_listeners[&8443]);
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteListenerTerminateSupportedKinds() {
    let c = Conformance::start(&["tlsroute-listener-terminate-supported-kinds.yaml"]);
    let gateway = "gateway-tlsroute-terminate-supported";
    c.listener_status(
        gateway,
        "tls-terminate",
        0,
        &[("Accepted", "True", "Accepted")],
    );
    assert_eq!(c.supported_kinds(gateway, "tls-terminate"), ["TLSRoute"]);
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteMixedTerminationSameNamespace() {
    let c = Conformance::start_mixed(&["tlsroute-mixed-termination-same-namespace.yaml"]);
    let gateway = "gateway-tlsroute-mixed-termination";
    for listener in ["tls-terminate", "tls-passthrough"] {
        c.listener_status(gateway, listener, 1, &[("Accepted", "True", "Accepted")]);
    }
    for route in [
        "gateway-conformance-mixed-passthroughroute",
        "gateway-conformance-mixed-terminateroute",
    ] {
        tls_condition(&c, route, "Accepted", "True", "Accepted");
    }
    // One port: tls.example.com terminated, abc.example.com relayed untouched.
    let at = c.terminate_listeners[&8883];
    expect_terminated_to_tcp_backend(&c, at);
    expect_relayed_to_tcp_backend(&c, at);
}

#[test]
#[allow(non_snake_case)]
fn TLSRouteListenerMixedTerminationNotSupported() {
    let c = Conformance::start(&["tlsroute-listener-mixed-termination-not-supported.yaml"]);
    let gateway = "gateway-tlsroute-mixed-termination-not-supported";
    for listener in ["tls-terminate", "tls-passthrough"] {
        c.listener_status(
            gateway,
            listener,
            0,
            &[("Accepted", "False", "ProtocolConflict")],
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn GRPCRouteNamedRule() {
    let c = Conformance::start(&["grpcroute-named-rule.yaml"]);
    c.grpc_accepted(INFRA, "grpc-named-rules");
    listeners_ready(&c, "same-namespace");
    c.expect_grpc("Echo", &[], &grpc(1), 0);
    c.expect_grpc("EchoTwo", &[], &grpc(2), 0);
}

// ---------------------------------------------------------------------------------------
// GATEWAY-HTTP Extended: redirects, rewrites, mirrors, timeouts, response headers. The echo
// backend does what the suite's does: `?delay=DURATION` waits, and `X-Echo-Set-Header`
// sets response headers (tests/support).
// ---------------------------------------------------------------------------------------

/// A redirect as the suite's roundtripper captures it (`UnfollowRedirect: true`): the
/// status and the `Location` split into scheme, host, port ("" when absent) and path.
#[derive(Debug, Clone, PartialEq)]
struct Redirected {
    status: u16,
    scheme: String,
    host: String,
    port: String,
    path: String,
}

/// Sends `method path` (with `headers`) over plain HTTP and splits the answer's `Location`.
fn redirected(c: &Conformance, method: &str, path: &str, headers: &[(&str, &str)]) -> Redirected {
    redirected_at(c.http, method, path, headers)
}

/// [`redirected`] on the listener at `gateway`.
fn redirected_at(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Redirected {
    let response = Client::connect(gateway).request(method, path, headers);
    split_redirect(
        response.status,
        response.header("location").unwrap_or_default(),
    )
}

/// `GET path` with `Host: host` over TLS (server name `host`) to the listener at `gateway`,
/// as a redirect.
fn redirected_over_tls(gateway: SocketAddr, host: &str, path: &str) -> Redirected {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    runtime().block_on(async {
        let config = tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(gateway, host, config)
            .await
            .expect("TLS handshake with the HTTPS listener");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let head = loop {
            let text = String::from_utf8_lossy(&received).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                break text[..end].to_string();
            }
            let n = stream.read(&mut buffer).await.expect("read response");
            assert!(n > 0, "connection closed before a response head: {text:?}");
            received.extend_from_slice(&buffer[..n]);
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let location = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        split_redirect(status, &location)
    })
}

/// A redirect's status and `Location`, as the suite's roundtripper splits them.
fn split_redirect(status: u16, location: &str) -> Redirected {
    let (scheme, rest) = location.split_once("://").unwrap_or(("", ""));
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
    let path = path.split('?').next().unwrap_or_default();
    Redirected {
        status,
        scheme: scheme.to_string(),
        host: host.to_string(),
        port: port.to_string(),
        path: path.to_string(),
    }
}

/// CompareRoundTrip for a redirect: `host` "" accepts any host; `scheme` "" means the
/// request's (`http`); `port` "" accepts no port or the scheme's well-known one; `path` ""
/// means the request's path.
fn redirect_matches(
    got: &Redirected,
    request_path: &str,
    status: u16,
    scheme: &str,
    host: &str,
    port: &str,
    path: &str,
) -> bool {
    let scheme = if scheme.is_empty() { "http" } else { scheme };
    let path = if path.is_empty() {
        request_path.split('?').next().unwrap_or_default()
    } else {
        path
    };
    let port_ok = if port.is_empty() {
        got.port.is_empty()
            || (got.scheme.eq_ignore_ascii_case("http") && got.port == "80")
            || (got.scheme.eq_ignore_ascii_case("https") && got.port == "443")
    } else {
        got.port == port
    };
    got.status == status
        && (host.is_empty() || got.host == host)
        && port_ok
        && got.scheme == scheme
        && got.path == path
}

/// MakeRequestAndExpectEventuallyConsistentResponse for a redirect (see
/// [`redirect_matches`]): waits until `method path` redirects as wanted, then checks that
/// it keeps doing so.
#[allow(clippy::too_many_arguments)]
fn expect_redirect(
    c: &Conformance,
    method: &str,
    path: &str,
    status: u16,
    scheme: &str,
    host: &str,
    port: &str,
    wanted_path: &str,
) {
    expect_redirect_by(
        || redirected(c, method, path, &[]),
        &format!("{method} {path}"),
        path,
        status,
        scheme,
        host,
        port,
        wanted_path,
    );
}

/// [`expect_redirect`] of the redirects `fetch` gets (for request `what` of `path`).
#[allow(clippy::too_many_arguments)]
fn expect_redirect_by(
    fetch: impl Fn() -> Redirected,
    what: &str,
    path: &str,
    status: u16,
    scheme: &str,
    host: &str,
    port: &str,
    wanted_path: &str,
) {
    let check = || {
        let got = fetch();
        (
            redirect_matches(&got, path, status, scheme, host, port, wanted_path),
            got,
        )
    };
    let what = format!(
        "{what} to redirect with {status} to scheme {scheme:?} host {host:?} port {port:?} path {wanted_path:?}"
    );
    wait_until(&what, READY_TIMEOUT, || check().0);
    for _ in 0..3 {
        let (ok, got) = check();
        assert!(ok, "{what}: got {got:?}");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRedirectScheme() {
    let c = Conformance::start(&["httproute-redirect-scheme.yaml"]);
    c.accepted(INFRA, "redirect-scheme");
    for (path, status, host) in [
        ("/scheme", 302, ""),
        ("/scheme-and-host", 302, "example.org"),
        ("/scheme-and-status", 301, ""),
        ("/scheme-and-host-and-status", 302, "example.org"),
    ] {
        expect_redirect(&c, "GET", path, status, "https", host, "", "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRedirectPort() {
    let c = Conformance::start(&["httproute-redirect-port.yaml"]);
    c.accepted(INFRA, "redirect-port");
    for (path, status, host) in [
        ("/port", 302, ""),
        ("/port-and-host", 302, "example.org"),
        ("/port-and-status", 301, ""),
        ("/port-and-host-and-status", 302, "example.org"),
    ] {
        expect_redirect(&c, "GET", path, status, "", host, "8083", "");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRedirectPortAndScheme() {
    let c = Conformance::start(&["httproute-redirect-port-and-scheme.yaml"]);
    for route in [
        "http-route-for-listener-on-port-80",
        "http-route-for-listener-on-port-8080",
        "http-route-for-listener-on-port-443",
    ] {
        c.accepted(INFRA, route);
    }
    // (path, scheme, port) of the Location; port "" is none or the scheme's own.
    let on_80 = [
        ("/scheme-nil-and-port-nil", "http", ""),
        ("/scheme-nil-and-port-80", "http", ""),
        ("/scheme-nil-and-port-8080", "http", "8080"),
        ("/scheme-https-and-port-nil", "https", ""),
        ("/scheme-https-and-port-443", "https", ""),
        ("/scheme-https-and-port-8443", "https", "8443"),
    ];
    let on_8080 = [
        ("/scheme-nil-and-port-nil", "http", "8080"),
        ("/scheme-nil-and-port-80", "http", ""),
        ("/scheme-https-and-port-nil", "https", ""),
    ];
    for (at, cases) in [(c.http, &on_80[..]), (c.http_port(8080), &on_8080[..])] {
        for (path, scheme, port) in cases {
            expect_redirect_by(
                || redirected_at(at, "GET", path, &[]),
                &format!("GET {path} on {at}"),
                path,
                302,
                scheme,
                "example.org",
                port,
                "",
            );
        }
    }
    let on_443 = [
        ("/scheme-nil-and-port-nil", "https", ""),
        ("/scheme-nil-and-port-443", "https", ""),
        ("/scheme-nil-and-port-8443", "https", "8443"),
        ("/scheme-http-and-port-nil", "http", ""),
        ("/scheme-http-and-port-80", "http", ""),
        ("/scheme-http-and-port-8080", "http", "8080"),
    ];
    for (path, scheme, port) in on_443 {
        expect_redirect_by(
            || redirected_over_tls(c.https, "example.org", path),
            &format!("GET {path} over TLS"),
            path,
            302,
            scheme,
            "example.org",
            port,
            "",
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRoute303Redirect() {
    let c = Conformance::start(&["httproute-303-redirect.yaml"]);
    c.accepted(INFRA, "303-redirect");
    expect_redirect(&c, "POST", "/see-other", 303, "", "", "", "/see-other");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRoute307Redirect() {
    let c = Conformance::start(&["httproute-307-redirect.yaml"]);
    c.accepted(INFRA, "307-redirect");
    expect_redirect(&c, "GET", "/temporary", 307, "", "", "", "/temporary");
}

#[test]
#[allow(non_snake_case)]
fn HTTPRoute308Redirect() {
    let c = Conformance::start(&["httproute-308-redirect.yaml"]);
    c.accepted(INFRA, "308-redirect");
    expect_redirect(&c, "GET", "/permanent", 308, "", "", "", "/permanent");
}

/// The values of header `name` (lower-case) of a request a backend saw, joined with ","
/// as the suite's echo server reports repeated headers.
fn joined(request: &SeenRequest, name: &str) -> Option<String> {
    let values: Vec<&str> = request
        .headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The last request backend `backend` saw for `target`.
fn last_request(c: &Conformance, backend: &str, target: &str) -> SeenRequest {
    c.requests_of(backend)
        .into_iter()
        .rev()
        .find(|r| r.target == target)
        .unwrap_or_else(|| panic!("{backend} saw no request for {target}"))
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRewriteHost() {
    let c = Conformance::start(&["httproute-rewrite-host.yaml"]);
    c.accepted(INFRA, "rewrite-host");
    let modify = [
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
    ];
    for (path, sent, n, upstream_host) in [
        ("/one", &[][..], 1, "one.example.org"),
        ("/two", &[], 2, "example.org"),
        (
            "/rewrite-host-and-modify-headers",
            &modify[..],
            2,
            "test.example.org",
        ),
    ] {
        let mut headers = vec![("host", "rewrite.example")];
        headers.extend_from_slice(sent);
        c.expect("GET", path, &headers, 200, &v(n));
        let seen = last_request(&c, &v(n), path);
        assert_eq!(seen.header("host"), Some(upstream_host), "{path}");
        if !sent.is_empty() {
            assert_eq!(seen.header("x-header-add"), Some("header-val-1"));
            assert_eq!(
                joined(&seen, "x-header-add-append").as_deref(),
                Some("append-val-1,header-val-2")
            );
            assert_eq!(seen.header("x-header-set"), Some("set-overwrites-values"));
            assert_eq!(seen.header("x-header-remove"), None);
        }
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRequestMirror() {
    let c = Conformance::start(&["httproute-request-mirror.yaml"]);
    // Upstream checks only GatewayAndHTTPRoutesMustBeAccepted here.
    c.route_condition(INFRA, "request-mirror", "Accepted", "True", "Accepted");
    let modify = [
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
    ];
    for (i, (path, sent)) in [
        ("/mirror", &[][..]),
        ("/mirror-and-modify-headers", &modify[..]),
    ]
    .into_iter()
    .enumerate()
    {
        // AddRequestIDQueryParam: a query that tells this test's requests apart.
        let target = format!("{path}?gateway-api-conformance-request-id=request-{i}");
        c.expect("GET", &target, sent, 200, &v(1));
        let seen = last_request(&c, &v(1), &target);
        if !sent.is_empty() {
            assert_eq!(seen.header("x-header-add"), Some("header-val-1"));
            assert_eq!(
                joined(&seen, "x-header-add-append").as_deref(),
                Some("append-val-1,header-val-2")
            );
            assert_eq!(seen.header("x-header-set"), Some("set-overwrites-values"));
            assert_eq!(seen.header("x-header-remove"), None);
        }
        // ExpectMirroredRequest: the mirror backend logs the request's path.
        wait_until(
            &format!("{} to see the mirrored {target}", v(2)),
            READY_TIMEOUT,
            || c.requests_of(&v(2)).iter().any(|r| r.target == target),
        );
    }
}

/// The headers the suite's modify-headers cases send, and what the backend (and the
/// mirrors) must see.
const MODIFY: [(&str, &str); 2] = [
    ("X-Header-Remove", "remove-val"),
    ("X-Header-Add-Append", "append-val-1"),
];

/// `seen` carries the edits of the suite's RequestHeaderModifier.
fn assert_modified(seen: &SeenRequest) {
    assert_eq!(seen.header("x-header-add"), Some("header-val-1"));
    assert_eq!(
        joined(seen, "x-header-add-append").as_deref(),
        Some("append-val-1,header-val-2")
    );
    assert_eq!(seen.header("x-header-set"), Some("set-overwrites-values"));
    assert_eq!(seen.header("x-header-remove"), None);
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRequestMultipleMirrors() {
    let c = Conformance::start(&["httproute-request-multiple-mirrors.yaml"]);
    c.accepted(INFRA, "request-multiple-mirrors");
    for (i, (path, sent)) in [
        ("/multi-mirror", &[][..]),
        ("/multi-mirror-and-modify-request-headers", &MODIFY[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let target = format!("{path}?gateway-api-conformance-request-id=request-{i}");
        c.expect("GET", &target, sent, 200, &v(1));
        let seen = last_request(&c, &v(1), &target);
        if !sent.is_empty() {
            assert_modified(&seen);
        }
        // Each mirror gets its copy, edited as the request.
        for mirror in [v(2), v(3)] {
            wait_until(
                &format!("{mirror} to see the mirrored {target}"),
                READY_TIMEOUT,
                || c.requests_of(&mirror).iter().any(|r| r.target == target),
            );
            if !sent.is_empty() {
                assert_modified(&last_request(&c, &mirror, &target));
            }
        }
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRequestPercentageMirror() {
    let c = Conformance::start(&["httproute-request-percentage-mirror.yaml"]);
    c.accepted(INFRA, "request-percentage-mirror");
    // Each request is copied with probability p: over N requests the copies are
    // Binomial(N, p), within 5 standard deviations of N·p but for one run in 1.7 million.
    const REQUESTS: usize = 1_000;
    for (i, (path, sent, percent)) in [
        ("/percent-mirror", &[][..], 20.0),
        ("/percent-mirror-fraction", &[][..], 50.0),
        ("/percent-mirror-and-modify-headers", &MODIFY[..], 35.0),
    ]
    .into_iter()
    .enumerate()
    {
        let first = format!("{path}?gateway-api-conformance-request-id=ready-{i}");
        c.expect("GET", &first, sent, 200, &v(1));
        let target = format!("{path}?gateway-api-conformance-request-id=batch-{i}");
        let mut client = Client::connect(c.http);
        for _ in 0..REQUESTS {
            let response = client.request("GET", &target, sent);
            assert_eq!(response.status, 200, "GET {target}");
        }
        let p: f64 = percent / 100.0;
        let n = REQUESTS as f64;
        let margin = 5.0 * (n * p * (1.0 - p)).sqrt();
        let (low, high) = ((n * p - margin) as usize, (n * p + margin) as usize);
        let copies = || {
            c.requests_of(&v(2))
                .iter()
                .filter(|r| r.target == target)
                .count()
        };
        // Copies land after their requests were answered: the count is waited for up to
        // the lower bound; it only grows, so a share above the upper bound shows then or
        // is missed, never reported wrongly.
        wait_until(
            &format!("{low} copies of {REQUESTS} requests for {path} ({percent}%)"),
            READY_TIMEOUT,
            || copies() >= low,
        );
        assert!(
            copies() <= high,
            "{path}: {} copies of {REQUESTS} requests, want {percent}% ({low}-{high})",
            copies()
        );
        if !sent.is_empty() {
            assert_modified(&last_request(&c, &v(2), &target));
        }
    }
}

/// One HTTPRouteCORS case: the request, whether the backend answers it (a preflight is
/// answered by sluice), the response headers it must have (any of the values, spaces
/// ignored) and those it must not.
struct CorsCase {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    proxied: bool,
    wanted: Vec<(&'static str, Vec<&'static str>)>,
    absent: Vec<&'static str>,
}

const ACAO: &str = "access-control-allow-origin";
const ACAM: &str = "access-control-allow-methods";
const ACAH: &str = "access-control-allow-headers";
const ACEH: &str = "access-control-expose-headers";
const ACMA: &str = "access-control-max-age";
const ACAC: &str = "access-control-allow-credentials";

/// A request from `origin` asking for `method` and the headers `x-header-1, x-header-2`.
fn asking(origin: &'static str, method: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
        ("Access-Control-Request-Headers", "x-header-1, x-header-2"),
    ]
}

impl CorsCase {
    fn preflight(path: &'static str, headers: Vec<(&'static str, &'static str)>) -> Self {
        Self {
            method: "OPTIONS",
            path,
            headers,
            proxied: false,
            wanted: Vec::new(),
            absent: Vec::new(),
        }
    }

    fn request(
        method: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, &'static str)>,
    ) -> Self {
        Self {
            proxied: true,
            method,
            ..Self::preflight(path, headers)
        }
    }

    fn wants(mut self, name: &'static str, values: &[&'static str]) -> Self {
        self.wanted.push((name, values.to_vec()));
        self
    }

    fn lacks(mut self, name: &'static str) -> Self {
        self.absent.push(name);
        self
    }

    /// The answer to a preflight of `/cors-1` from an origin it lists.
    fn cors_1(origin: &'static str) -> Self {
        Self::preflight("/cors-1", asking(origin, "GET"))
            .wants(ACAO, &[origin])
            .wants(ACAM, &["GET,OPTIONS", "OPTIONS,GET"])
            .wants(ACAH, &["x-header-1,x-header-2", "x-header-2,x-header-1"])
            .wants(ACEH, &["x-header-3,x-header-4", "x-header-4,x-header-3"])
            .wants(ACMA, &["3600"])
            .wants(ACAC, &["true"])
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteCORS() {
    let c = Conformance::start(&["httproute-cors.yaml"]);
    for route in [
        "cors-multiple-origins-methods-headers",
        "cors-wildcard-methods",
        "cors-wildcard-origin",
        "cors-wildcard-methods-headers",
    ] {
        c.accepted(INFRA, route);
    }
    let foobar = || {
        vec![
            ("Origin", "https://foobar.com"),
            ("Access-Control-Request-Method", "GET"),
        ]
    };
    let other = "https://other.foo.com";
    let cases = [
        // /cors-1: listed origins (one a wildcard), methods, headers, credentials.
        CorsCase::cors_1("https://www.foo.com"),
        CorsCase::cors_1("https://www.bar.com"),
        CorsCase::cors_1("https://xpto.www.bar.com"),
        CorsCase::preflight("/cors-1", foobar()).lacks(ACAO),
        CorsCase::request("GET", "/cors-1", asking("https://www.foo.com", "GET"))
            .wants(ACAO, &["https://www.foo.com"]),
        CorsCase::request("GET", "/cors-1", asking("https://www.bar.com", "GET"))
            .wants(ACAO, &["https://www.bar.com"]),
        CorsCase::request("GET", "/cors-1", foobar()).lacks(ACAO),
        // /cors-2: any method, no credentials.
        CorsCase::preflight(
            "/cors-2",
            vec![
                ("Origin", "https://www.foo.com"),
                ("Access-Control-Request-Method", "POST"),
            ],
        )
        .wants(ACAM, &["POST", "*"])
        .wants(ACAO, &["https://www.foo.com"])
        .lacks(ACAC),
        // Any origin, one method.
        CorsCase::preflight(
            "/cors-wildcard-origin",
            vec![
                ("Origin", "https://foobar.com"),
                ("Access-Control-Request-Method", "PUT"),
            ],
        )
        .wants(ACAO, &["https://foobar.com", "*"])
        .wants(ACAM, &["PUT"])
        .lacks(ACAC),
        CorsCase::preflight(
            "/cors-wildcard-origin",
            vec![
                ("Origin", "https://foobar.com:12345"),
                ("Access-Control-Request-Method", "PUT"),
            ],
        )
        .wants(ACAO, &["https://foobar.com:12345", "*"])
        .wants(ACAM, &["PUT"])
        .lacks(ACAC),
        CorsCase::request(
            "PUT",
            "/cors-wildcard-origin",
            vec![("Origin", "https://foobar.com:12345")],
        )
        .wants(ACAO, &["https://foobar.com:12345", "*"]),
        CorsCase::request(
            "PUT",
            "/cors-wildcard-origin",
            vec![("Origin", "https://foobar.com")],
        )
        .wants(ACAO, &["https://foobar.com", "*"])
        .lacks(ACAC),
        // Any origin, method and header: with credentials, named rather than `*`.
        CorsCase::preflight("/cors-wildcard-methods-headers", asking(other, "PUT"))
            .wants(ACAO, &[other])
            .wants(ACAM, &["PUT"])
            .wants(ACAH, &["x-header-1,x-header-2", "x-header-2,x-header-1"])
            .wants(ACAC, &["true"]),
        CorsCase::preflight(
            "/cors-wildcard-methods-headers-unauth",
            asking(other, "PUT"),
        )
        .wants(ACAO, &[other, "*"])
        .wants(ACAM, &["PUT", "*"])
        .wants(
            ACAH,
            &["x-header-1,x-header-2", "x-header-2,x-header-1", "*"],
        )
        .lacks(ACAC),
        CorsCase::request(
            "GET",
            "/cors-wildcard-methods-headers",
            vec![("Origin", other)],
        )
        .wants(ACAO, &[other])
        .wants(ACAC, &["true"]),
        CorsCase::request(
            "GET",
            "/cors-wildcard-methods-headers-unauth",
            vec![("Origin", other)],
        )
        .wants(ACAO, &[other, "*"])
        .lacks(ACAC),
    ];
    for case in &cases {
        let what = format!("{} {} {:?}", case.method, case.path, case.headers);
        let response = Client::connect(c.http).request(case.method, case.path, &case.headers);
        if case.proxied {
            assert_eq!(response.status, 200, "{what}");
            assert_eq!(response.backend(), v(1), "{what}");
            // The request reaches the backend as sent.
            let seen = last_request(&c, &v(1), case.path);
            for (name, value) in &case.headers {
                let name = name.to_ascii_lowercase();
                assert_eq!(seen.header(&name), Some(*value), "{what}: {name} upstream");
            }
        } else {
            assert!(
                matches!(response.status, 200 | 204),
                "{what}: {}",
                response.status
            );
            assert_eq!(
                response.backend(),
                "",
                "{what}: a preflight reached the backend"
            );
        }
        for (name, values) in &case.wanted {
            let got = response.header(name).map(|v| v.replace(' ', ""));
            assert!(
                got.as_deref().is_some_and(|g| values.contains(&g)),
                "{what}: {name} is {got:?}, want one of {values:?}"
            );
        }
        for name in &case.absent {
            assert_eq!(response.header(name), None, "{what}: {name}");
        }
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteNamedRule() {
    let c = Conformance::start(&["httproute-named-rule.yaml"]);
    c.accepted(INFRA, "http-named-rules");
    // Upstream asserts the status only; the manifest sends them to v1 and v2.
    c.expect_status("GET", "/named", 200);
    c.expect_status("GET", "/unnamed", 200);
    c.expect("GET", "/named", &[], 200, &v(1));
    c.expect("GET", "/unnamed", &[], 200, &v(2));
}

#[test]
fn an_invalid_weighted_backend_takes_its_share_of_requests_as_500() {
    let c = Conformance::start(&["httproute-simple-same-namespace.yaml"]);
    c.kube.apply(typed::<HttpRoute>(&serde_json::json!({
        "metadata": {"name": "half-invalid", "namespace": INFRA},
        "spec": {
            "parentRefs": [{"name": "same-namespace"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/half"}}],
                "backendRefs": [
                    {"name": "infra-backend-v1", "port": 8080, "weight": 1},
                    {"name": "no-such-service", "port": 8080, "weight": 1},
                ],
            }],
        },
    })));
    c.route_condition(
        INFRA,
        "half-invalid",
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    );
    // Gateway API: "the proportion of requests that would otherwise have been routed to an
    // invalid backend MUST receive a 500".
    c.expect_status("GET", "/half", 500);
    let mut client = Client::connect(c.http);
    const REQUESTS: usize = 400;
    let served = (0..REQUESTS)
        .filter(|_| {
            let response = client.request("GET", "/half", &[]);
            assert!(matches!(response.status, 200 | 500), "{}", response.status);
            response.status == 200
        })
        .count();
    // Half each, within 5 standard deviations (10 requests) of 200.
    assert!(
        (150..=250).contains(&served),
        "{served} of {REQUESTS} served"
    );
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteTimeoutRequest() {
    let c = Conformance::start(&["httproute-timeout-request.yaml"]);
    c.accepted(INFRA, "request-timeout");
    // `?delay=1s`: the echo backend waits that long.
    c.expect_status("GET", "/request-timeout", 200);
    c.expect_status("GET", "/request-timeout?delay=1s", 504);
    c.expect_status("GET", "/disable-request-timeout?delay=1s", 200);
    for (path, status) in [
        ("/request-timeout", 200),
        ("/request-timeout?delay=1s", 504),
        ("/disable-request-timeout?delay=1s", 200),
    ] {
        let got = Client::connect(c.http).request("GET", path, &[]).status;
        assert_eq!(got, status, "{path}");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteRetry() {
    let c = Conformance::start(&["httproute-retry.yaml"]);
    c.accepted(INFRA, "retries");
    // A `/retry/` request without uuid is answered as any other: the route is programmed.
    c.expect("GET", "/retry/code-all-attempts-2", &[], 200, &v(3));
    let mut uuid = 0;
    // (path, simulated failure, failed tries before success, method, status, tries seen)
    let cases = [
        // Upstream's cases: `attempts` counts retries, so 3 allows 4 tries.
        ("/retry/code-500-attempts-3", "500", 2, "GET", 200, 3),
        ("/retry/code-500-attempts-3", "500", 4, "GET", 500, 4),
        ("/retry/code-500-attempts-3", "503", 2, "GET", 503, 1),
        ("/retry/code-all-attempts-2", "500", 1, "GET", 200, 2),
        ("/retry/code-all-attempts-2", "500", 3, "GET", 500, 3),
        ("/retry/code-all-attempts-2", "502", 1, "GET", 200, 2),
        ("/retry/code-all-attempts-2", "502", 3, "GET", 502, 3),
        ("/retry/code-all-attempts-2", "503", 1, "GET", 200, 2),
        ("/retry/code-all-attempts-2", "503", 3, "GET", 503, 3),
        ("/retry/code-all-attempts-2", "504", 1, "GET", 200, 2),
        ("/retry/code-all-attempts-2", "504", 3, "GET", 504, 3),
        // sluice's own: a reset before the response is retried too (the suite's
        // HTTPRouteRetryConnectionError), and a POST is never sent twice.
        ("/retry/code-all-attempts-2", "", 1, "GET", 200, 2),
        ("/retry/code-all-attempts-2", "503", 1, "POST", 503, 1),
    ];
    for (path, failure, succeed_after, method, status, tries) in cases {
        uuid += 1;
        let code = if failure.is_empty() {
            String::new()
        } else {
            format!("&responseCode={failure}")
        };
        let target = format!("{path}?succeedAfter={succeed_after}&uuid={uuid}{code}");
        let got = Client::connect(c.http).request(method, &target, &[]).status;
        let seen = c
            .requests_of(&v(3))
            .iter()
            .filter(|r| r.target == target)
            .count();
        assert_eq!((got, seen), (status, tries), "{method} {target}");
    }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteTimeoutBackendRequest() {
    let c = Conformance::start(&["httproute-timeout-backend-request.yaml"]);
    c.accepted(INFRA, "backend-request-timeout");
    c.expect_status("GET", "/backend-timeout", 200);
    c.expect_status("GET", "/backend-timeout?delay=1s", 504);
    c.expect_status("GET", "/disable-backend-timeout?delay=1s", 200);
    for (path, status) in [
        ("/backend-timeout", 200),
        ("/backend-timeout?delay=1s", 504),
        ("/disable-backend-timeout?delay=1s", 200),
    ] {
        let got = Client::connect(c.http).request("GET", path, &[]).status;
        assert_eq!(got, status, "{path}");
    }
}

/// A response with every header line kept (names lower-case, in order), where
/// [`Client`] keeps one value per name.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
}

impl RawResponse {
    /// The values of `name` (lower-case) joined with ",", as Go's client reports them.
    fn joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// `GET path` with `headers` on a fresh connection that the server closes after answering.
fn raw_get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("read timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    RawResponse { status, headers }
}

#[test]
#[allow(non_snake_case)]
fn HTTPRouteResponseHeaderModifier() {
    let c = Conformance::start(&["httproute-response-header-modifier.yaml"]);
    c.accepted(INFRA, "response-header-modifier");
    struct Case {
        path: &'static str,
        request: &'static [(&'static str, &'static str)],
        /// BackendSetResponseHeaders, sent as `X-Echo-Set-Header`.
        backend_sets: &'static [(&'static str, &'static str)],
        response: &'static [(&'static str, &'static str)],
        absent: &'static [&'static str],
        /// ExpectedRequest headers, and headers the backend must not see.
        upstream: &'static [(&'static str, &'static str)],
        upstream_absent: &'static [&'static str],
    }
    let cases = [
        Case {
            path: "/set",
            request: &[],
            backend_sets: &[("Some-Other-Header", "val")],
            response: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "set-overwrites-values"),
            ],
            absent: &[],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/set",
            request: &[],
            backend_sets: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            response: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "set-overwrites-values"),
            ],
            absent: &[],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/add",
            request: &[],
            backend_sets: &[("Some-Other-Header", "val")],
            response: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "add-appends-values"),
            ],
            absent: &[],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/add",
            request: &[],
            backend_sets: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            response: &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value,add-appends-values"),
            ],
            absent: &[],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/remove",
            request: &[],
            backend_sets: &[("X-Header-Remove", "val")],
            response: &[],
            absent: &["X-Header-Remove"],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/multiple",
            request: &[],
            backend_sets: &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
                ("X-Header-Remove-1", "val"),
            ],
            response: &[
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "add-val-2,header-add-2"),
                ("X-Header-Add-3", "header-add-3"),
                ("Another-Header", "another-header-val"),
            ],
            absent: &["X-Header-Remove-1", "X-Header-Remove-2"],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/case-insensitivity",
            request: &[],
            backend_sets: &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            response: &[
                ("X-Header-Set", "header-set"),
                ("X-Header-Add", "original-val-add,header-add"),
                ("X-Lowercase-Add", "lowercase-add"),
                ("X-Mixedcase-Add-1", "mixedcase-add-1"),
                ("X-Mixedcase-Add-2", "mixedcase-add-2"),
                ("X-Uppercase-Add", "uppercase-add"),
                ("Another-Header", "another-header-val"),
            ],
            absent: &["x-header-remove", "X-Header-Remove"],
            upstream: &[],
            upstream_absent: &[],
        },
        Case {
            path: "/response-and-request-header-modifiers",
            request: &[
                ("X-Header-Remove", "remove-val"),
                ("X-Header-Add-Append", "append-val-1"),
                ("X-Header-Echo", "echo"),
            ],
            backend_sets: &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
                ("X-Header-Remove-1", "remove-val-1"),
                ("X-Header-Echo", "echo"),
            ],
            response: &[
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "add-val-2,header-add-2"),
                ("Another-Header", "another-header-val"),
                ("X-Header-Echo", "echo"),
            ],
            absent: &["X-Header-Remove-1", "X-Header-Remove-2"],
            upstream: &[
                ("X-Header-Add", "header-val-1"),
                ("X-Header-Set", "set-overwrites-values"),
                ("X-Header-Add-Append", "append-val-1,header-val-2"),
                ("X-Header-Echo", "echo"),
            ],
            upstream_absent: &["X-Header-Remove"],
        },
    ];
    for case in cases {
        let set: Vec<String> = case
            .backend_sets
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let set = set.join(",");
        let mut headers: Vec<(&str, &str)> = case.request.to_vec();
        headers.push(("X-Echo-Set-Header", set.as_str()));
        let lower = |s: &str| s.to_ascii_lowercase();
        let check = |response: &RawResponse| -> Result<(), String> {
            if response.status != 200 {
                return Err(format!("status {}", response.status));
            }
            let backend = response.joined("x-backend").unwrap_or_default();
            if backend != v(1) {
                return Err(format!("answered by {backend:?}"));
            }
            for (name, value) in case.response {
                let got = response.joined(&lower(name));
                if got.as_deref() != Some(*value) {
                    return Err(format!("{name}: want {value:?}, got {got:?}"));
                }
            }
            for name in case.absent {
                if let Some(got) = response.joined(&lower(name)) {
                    return Err(format!("{name} should be absent, got {got:?}"));
                }
            }
            Ok(())
        };
        wait_until(
            &format!("{}: the response headers", case.path),
            READY_TIMEOUT,
            || check(&raw_get(c.http, case.path, &headers)).is_ok(),
        );
        for _ in 0..3 {
            let result = check(&raw_get(c.http, case.path, &headers));
            assert!(result.is_ok(), "{}: {result:?}", case.path);
        }
        if !case.upstream.is_empty() || !case.upstream_absent.is_empty() {
            let seen = last_request(&c, &v(1), case.path);
            for (name, value) in case.upstream {
                assert_eq!(
                    joined(&seen, &lower(name)).as_deref(),
                    Some(*value),
                    "{}: request header {name}",
                    case.path
                );
            }
            for name in case.upstream_absent {
                assert_eq!(seen.header(&lower(name)), None, "{}: {name}", case.path);
            }
        }
    }
}

/// BackendTLSPolicyMustHaveCondition: waits until policy `name` (of the conformance
/// namespace) has, on its ancestor Gateway `gateway` (namespace the conformance namespace
/// or absent), `type_`=`status` with `reason` ("" for any). As the upstream helper reads
/// the ancestors in order, an ancestor met before that one with a condition not at the
/// policy's generation makes it wait.
fn policy_condition(
    c: &Conformance,
    name: &str,
    gateway: &str,
    type_: &str,
    status: &str,
    reason: &str,
) {
    let status_of = |kube: &FakeKube| {
        kube.get::<BackendTlsPolicy>(INFRA, name)
            .and_then(|p| serde_json::to_value(p).ok())
    };
    let found = c.kube.wait_until(READY_TIMEOUT, |kube| {
        let Some(policy) = status_of(kube) else {
            return false;
        };
        let generation = &policy["metadata"]["generation"];
        let ancestors = policy["status"]["ancestors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for ancestor in &ancestors {
            let conditions = ancestor["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| &c["observedGeneration"] != generation)
            {
                return false;
            }
            let reference = &ancestor["ancestorRef"];
            let this_gateway = reference["name"] == gateway
                && (reference["namespace"].is_null() || reference["namespace"] == INFRA);
            let has = conditions.iter().any(|c| {
                c["type"] == type_
                    && c["status"] == status
                    && (reason.is_empty() || c["reason"] == reason)
            });
            if this_gateway && has {
                return true;
            }
        }
        false
    });
    assert!(
        found,
        "BackendTLSPolicy {name}: no {type_}={status} ({reason}) on Gateway {gateway} in {:?}",
        status_of(&c.kube).map(|p| p["status"].clone())
    );
}

/// The policy's Accepted=True (Accepted) and ResolvedRefs=True (ResolvedRefs) on
/// `gateway`.
fn policy_accepted(c: &Conformance, name: &str, gateway: &str) {
    policy_condition(c, name, gateway, "Accepted", "True", "Accepted");
    policy_condition(c, name, gateway, "ResolvedRefs", "True", "ResolvedRefs");
}

/// The policy's Accepted=False (`accepted`) and ResolvedRefs=False (`resolved`) on
/// `gateway`.
fn policy_refused(c: &Conformance, name: &str, gateway: &str, accepted: &str, resolved: &str) {
    policy_condition(c, name, gateway, "Accepted", "False", accepted);
    policy_condition(c, name, gateway, "ResolvedRefs", "False", resolved);
}

/// The pods the BackendTLSPolicy tests' Services select (`app: tls-backend`), as the
/// stand-in TLS backend names itself.
fn tls_pods() -> String {
    format!("{INFRA}/tls-backend")
}

/// One `GET path` for `host` through the HTTP listener: the status, the backend that
/// answered, and what that TLS backend saw (its server name and path; "" when none did).
fn tls_answer(c: &Conformance, host: &str, path: &str) -> (u16, String, String, String) {
    let response = Client::connect(c.http).request("GET", path, &[("host", host)]);
    let header = |name: &str| response.header(name).unwrap_or_default().to_string();
    (
        response.status,
        response.backend().to_string(),
        header("x-sni"),
        header("x-path"),
    )
}

/// MakeRequestAndExpectEventuallyConsistentResponse to a Service of the `tls-backend`
/// pods: `GET path` for `host` answers 200 from them, and they saw the path and the TLS
/// server name `sni` (ExpectedRequest.SNI: the suite's echo server reports it so).
fn expect_tls(c: &Conformance, host: &str, path: &str, sni: &str) {
    let wanted = (200, tls_pods(), sni.to_string(), path.to_string());
    wait_until(
        &format!("GET {host}{path} to reach the TLS backend with server name {sni}"),
        READY_TIMEOUT,
        || tls_answer(c, host, path) == wanted,
    );
    for _ in 0..3 {
        assert_eq!(tls_answer(c, host, path), wanted, "GET {host}{path}");
    }
}

/// MakeRequestAndExpectFailure (WaitForConsistentFailureResponse): `GET path` for `host`
/// does not answer 200, five times in a row.
fn expect_failure(c: &Conformance, host: &str, path: &str) {
    let status = || tls_answer(c, host, path).0;
    wait_until(&format!("GET {host}{path} to fail"), READY_TIMEOUT, || {
        status() != 200
    });
    for _ in 0..5 {
        assert_ne!(status(), 200, "GET {host}{path} succeeded");
    }
}

/// MakeRequestAndExpectEventuallyConsistentResponse with StatusCodes 500, 502, 503.
fn expect_5xx(c: &Conformance, host: &str, path: &str) {
    let failed = || matches!(tls_answer(c, host, path).0, 500 | 502 | 503);
    wait_until(
        &format!("GET {host}{path} to answer 500, 502 or 503"),
        READY_TIMEOUT,
        &failed,
    );
    for _ in 0..3 {
        assert!(
            failed(),
            "GET {host}{path}: {:?}",
            tls_answer(c, host, path)
        );
    }
}

/// A ConfigMap of the conformance namespace holding `ca` as `ca.crt`.
fn ca_config_map(name: &str, ca: &str) -> ConfigMap {
    typed(&serde_json::json!({
        "metadata": {"name": name, "namespace": INFRA},
        "data": {"ca.crt": ca},
    }))
}

/// MakeTLSRequestAndExpectEventuallyConsistentResponse through the HTTPS listener: a TLS
/// session for `host` is served the Gateway's certificate (`tls-validity-checks-certificate`,
/// which the suite's client trusts alone) and `GET path` answers 200 with `body`, then
/// three times more in a row.
fn expect_reencrypted(c: &Conformance, host: &str, path: &str, body: &str) {
    let served = || {
        runtime().block_on(async {
            let config = tls::client_config(&[b"http/1.1"], tokio_rustls::rustls::DEFAULT_VERSIONS);
            let Ok(mut stream) = tls::connect(c.https, host, config).await else {
                return false;
            };
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.as_ref().to_vec());
            if leaf.as_deref() != Some(c.validity_certificate.der.as_slice()) {
                return false;
            }
            let (status, got) = tls::get_over(&mut stream, host, path).await;
            status.contains(" 200 ") && got == body
        })
    };
    wait_until(
        &format!("GET https://{host}{path} to answer {body:?}"),
        READY_TIMEOUT,
        &served,
    );
    for _ in 0..3 {
        assert!(
            served(),
            "GET https://{host}{path}: not consistently {body:?}"
        );
    }
}

#[test]
#[allow(non_snake_case)]
fn BackendTLSPolicy() {
    let c = Conformance::start(&["backendtlspolicy.yaml"]);

    // Re-encrypt: the HTTPS listener terminates the client's TLS, sluice opens its own
    // to the backend with the policy's hostname.
    let https_gateway = "same-namespace-with-https-listener";
    c.accepted(INFRA, "backendtlspolicy-reencrypt");
    listeners_ready(&c, https_gateway);
    policy_accepted(&c, "normative-test", https_gateway);
    expect_reencrypted(
        &c,
        "https-listener.org",
        "/backendtlspolicy",
        &format!("{} sni=abc.example.com", tls_pods()),
    );

    let gateway = "same-namespace";
    c.accepted(INFRA, "backendtlspolicy");
    listeners_ready(&c, gateway);

    // A valid policy: TLS with the policy's hostname as SNI.
    policy_accepted(&c, "normative-test", gateway);
    expect_tls(
        &c,
        "abc.example.com",
        "/backendtlspolicy",
        "abc.example.com",
    );

    // The certificate has no name mismatch.example.com. The upstream test asks with host
    // abc.example.org, which no route serves (404 would do); sluice's own check asks with
    // the route's host: the handshake fails, 502.
    policy_accepted(&c, "host-mismatch", gateway);
    expect_failure(&c, "abc.example.org", "/backendtlspolicy-host-mismatch");
    expect_5xx(&c, "abc.example.com", "/backendtlspolicy-host-mismatch");

    // A CA that did not issue the certificate. The Service reaches the same pods, with the
    // same server name, as normative-test's, whose connections are pooled by now: they
    // must not be reused for it (sluice's own check that it fails with 502).
    policy_accepted(&c, "cert-mismatch", gateway);
    expect_failure(&c, "abc.example.com", "/backendtlspolicy-cert-mismatch");
    expect_5xx(&c, "abc.example.com", "/backendtlspolicy-cert-mismatch");

    // A ConfigMap's content is followed.
    let name = "reconcile-test";
    let path = "/backendtlspolicy-reconcile-test";
    policy_accepted(&c, name, gateway);
    let shared: ConfigMap = c
        .kube
        .get(INFRA, "tls-checks-ca-certificate")
        .expect("the suite's CA ConfigMap");
    let ca = shared
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .cloned()
        .expect("ca.crt");
    let copy = "tls-checks-ca-certificate-reconcile-test";
    let mut policy: BackendTlsPolicy = c.kube.get(INFRA, name).expect("the policy");
    let original_refs = policy.spec.validation.ca_certificate_refs.clone();
    policy.spec.validation.ca_certificate_refs = Some(vec![typed(&serde_json::json!(
        {"group": "", "kind": "ConfigMap", "name": copy}
    ))]);
    c.kube.apply(policy);
    policy_refused(
        &c,
        name,
        gateway,
        "NoValidCACertificate",
        "InvalidCACertificateRef",
    );
    // sluice's own check: no plaintext fallback, the rule answers 500.
    expect_5xx(&c, "abc.example.com", path);
    c.kube.apply(ca_config_map(copy, &ca));
    policy_accepted(&c, name, gateway);
    expect_tls(&c, "abc.example.com", path, "abc.example.com");
    c.kube.apply(ca_config_map(copy, ""));
    policy_refused(
        &c,
        name,
        gateway,
        "NoValidCACertificate",
        "InvalidCACertificateRef",
    );
    expect_5xx(&c, "abc.example.com", path);
    c.kube.apply(ca_config_map(copy, &ca));
    policy_accepted(&c, name, gateway);
    expect_tls(&c, "abc.example.com", path, "abc.example.com");
    let mut policy: BackendTlsPolicy = c.kube.get(INFRA, name).expect("the policy");
    policy.spec.validation.ca_certificate_refs = original_refs;
    c.kube.apply(policy);
    policy_accepted(&c, name, gateway);
}

#[test]
#[allow(non_snake_case)]
fn BackendTLSPolicyConflictResolution() {
    let c = Conformance::start(&["backendtlspolicy-conflict-resolution.yaml"]);
    let gateway = "same-namespace";
    c.accepted(INFRA, "backendtlspolicy-conflict-resolution");
    listeners_ready(&c, gateway);
    // Created in this order (the fake API server's creation times increase): the first of
    // each pair is older, and would win a tie by name too.
    for (first, second, path) in [
        (
            "conflicted-without-section-name-1",
            "conflicted-without-section-name-2",
            "/backendtlspolicy-conflicted-without-section-name",
        ),
        (
            "conflicted-with-section-name-1",
            "conflicted-with-section-name-2",
            "/backendtlspolicy-conflicted-with-section-name",
        ),
    ] {
        policy_condition(&c, first, gateway, "Accepted", "True", "Accepted");
        policy_condition(&c, second, gateway, "Accepted", "False", "Conflicted");
        // The first's hostname, other.example.com, is the server name.
        expect_tls(&c, "abc.example.com", path, "other.example.com");
    }
    // A port's own policy and its Service's do not conflict: the port's applies to it, the
    // Service's to the other port.
    policy_condition(
        &c,
        "not-conflicted-with-section-name",
        gateway,
        "Accepted",
        "True",
        "Accepted",
    );
    policy_condition(
        &c,
        "not-conflicted-without-section-name",
        gateway,
        "Accepted",
        "True",
        "Accepted",
    );
    expect_tls(
        &c,
        "abc.example.com",
        "/backendtlspolicy-not-conflicted-with-section-name",
        "other.example.com",
    );
    expect_tls(
        &c,
        "abc.example.com",
        "/backendtlspolicy-not-conflicted-without-section-name",
        "abc.example.com",
    );
}

#[test]
#[allow(non_snake_case)]
fn BackendTLSPolicyInvalidCACertificateRef() {
    let c = Conformance::start(&["backendtlspolicy-invalid-ca-certificate-ref.yaml"]);
    let gateway = "same-namespace";
    c.route_condition(
        INFRA,
        "backendtlspolicy-invalid-ca-certificate-ref",
        "Accepted",
        "True",
        "Accepted",
    );
    listeners_ready(&c, gateway);
    for name in [
        "nonexistent-ca-certificate-ref",
        "malformed-ca-certificate-ref",
    ] {
        policy_refused(
            &c,
            name,
            gateway,
            "NoValidCACertificate",
            "InvalidCACertificateRef",
        );
        expect_5xx(&c, "abc.example.com", &format!("/backendtlspolicy-{name}"));
    }
}

#[test]
#[allow(non_snake_case)]
fn BackendTLSPolicyInvalidKind() {
    let c = Conformance::start(&["backendtlspolicy-invalid-kind.yaml"]);
    let gateway = "same-namespace";
    c.route_condition(
        INFRA,
        "backendtlspolicy-invalid-kind-test",
        "Accepted",
        "True",
        "Accepted",
    );
    listeners_ready(&c, gateway);
    policy_refused(
        &c,
        "invalid-kind",
        gateway,
        "NoValidCACertificate",
        "InvalidKind",
    );
    expect_5xx(&c, "abc.example.com", "/backendtlspolicy-invalid-kind");
}

#[test]
#[allow(non_snake_case)]
fn BackendTLSPolicyObservedGenerationBump() {
    let c = Conformance::start(&["backendtlspolicy-observed-generation-bump.yaml"]);
    let name = "observed-generation-bump";
    let conditions = |policy: &BackendTlsPolicy| {
        policy
            .status
            .clone()
            .map(|s| s.ancestors.into_iter().flat_map(|a| a.conditions).collect())
            .unwrap_or_default()
    };
    // The upstream sanity check passes on a policy without status yet; this one waits for
    // it (stricter).
    let before = latest::<BackendTlsPolicy>(&c, INFRA, name, conditions);
    let mut policy: BackendTlsPolicy = c.kube.get(INFRA, name).expect("the policy");
    policy.spec.validation.hostname = "foo.example.com".into();
    c.kube.apply(policy);
    policy_condition(&c, name, "same-namespace", "Accepted", "True", "");
    let after = latest::<BackendTlsPolicy>(&c, INFRA, name, conditions);
    assert_ne!(before, after, "generation should change after an update");
}

/// BackendTLSPolicySANValidation: every policy is accepted; the backend's certificate is
/// verified against the subjectAltNames, not the hostname (still the SNI). The matches go
/// first, so verified connections to the same pods (same address, SNI and CA) are pooled
/// when the mismatches are tried: they must not be reused.
#[test]
#[allow(non_snake_case)]
fn BackendTLSPolicySANValidation() {
    let c = Conformance::start(&["backendtlspolicy-san.yaml"]);
    let gateway = "same-namespace";
    let route = "backendtlspolicy-san-test";
    c.accepted(INFRA, route);
    listeners_ready(&c, gateway);
    let host = "abc.example.com";
    for policy in [
        "san-dns",
        "san-dns-mismatch",
        "san-uri",
        "san-uri-mismatch",
        "multiple-sans",
        "multiple-mismatch-sans",
    ] {
        policy_condition(&c, policy, gateway, "Accepted", "True", "Accepted");
    }
    for policy in ["san-dns", "san-uri", "multiple-sans"] {
        expect_tls(&c, host, &format!("/backendtlspolicy-{policy}"), host);
    }
    // san-dns-mismatch proves the hostname no longer authenticates: the SNI is a name of
    // the certificate, but the list names only dce.example.com.
    for policy in [
        "san-dns-mismatch",
        "san-uri-mismatch",
        "multiple-mismatch-sans",
    ] {
        expect_failure(&c, host, &format!("/backendtlspolicy-{policy}"));
    }
}

// ---------------------------------------------------------------------------------------
// ListenerSet (GATEWAY-* Extended): listeners other objects add to a Gateway that allows
// them, in precedence order after the Gateway's own; routes attach by naming the set.
// ---------------------------------------------------------------------------------------

/// ListenerSetMustHaveCondition: ListenerSet `namespace/name` has condition `type_` with
/// `status` and `reason` ("" for any), and all its conditions are at its generation.
fn set_condition(
    c: &Conformance,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) {
    let found = c.kube.wait_until(READY_TIMEOUT, |kube| {
        let Some(set) = kube.get::<ListenerSet>(namespace, name) else {
            return false;
        };
        let generation = set.metadata.generation;
        let conditions = set.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions
            .iter()
            .all(|c| c.observed_generation == generation)
            && conditions.iter().any(|c| {
                c.type_ == type_ && c.status == status && (reason.is_empty() || c.reason == reason)
            })
    });
    assert!(
        found,
        "ListenerSet {namespace}/{name}: no {type_}={status} ({reason}); status {:?}",
        c.kube
            .get::<ListenerSet>(namespace, name)
            .and_then(|s| s.status)
    );
}

/// Both `Accepted` and `Programmed` of ListenerSet `namespace/name` are `status` with
/// `reason` ("" for any).
fn set_state(
    c: &Conformance,
    namespace: &str,
    name: &str,
    status: &str,
    accepted: &str,
    programmed: &str,
) {
    set_condition(c, namespace, name, "Accepted", status, accepted);
    set_condition(c, namespace, name, "Programmed", status, programmed);
}

/// The listener conditions the suite's generateAcceptedListenerConditions lists.
const SERVED: [(&str, &str, &str); 3] = [
    ("Accepted", "True", ""),
    ("ResolvedRefs", "True", ""),
    ("Programmed", "True", ""),
];

/// ListenerSetListenersMustHaveConditions for one listener.
fn set_listener(
    c: &Conformance,
    namespace: &str,
    name: &str,
    listener: &str,
    conditions: &[(&str, &str, &str)],
) {
    let matches = |kube: &FakeKube| {
        kube.get::<ListenerSet>(namespace, name)
            .and_then(|s| s.status?.listeners)
            .is_some_and(|listeners| {
                listeners.iter().any(|l| {
                    l.name == listener
                        && conditions.iter().all(|(type_, status, reason)| {
                            l.conditions.iter().any(|c| {
                                c.type_ == *type_
                                    && c.status == *status
                                    && (reason.is_empty() || c.reason == *reason)
                            })
                        })
                })
            })
    };
    assert!(
        c.kube.wait_until(READY_TIMEOUT, matches),
        "ListenerSet {namespace}/{name} listener {listener}: want {conditions:?}; status {:?}",
        c.kube
            .get::<ListenerSet>(namespace, name)
            .and_then(|s| s.status)
    );
}

/// ListenerSetStatusMustHaveListeners: exactly these listeners (name, attached routes),
/// each served and supporting HTTPRoute.
fn set_listeners(c: &Conformance, namespace: &str, name: &str, wanted: &[(&str, i32)]) {
    let matches = |kube: &FakeKube| {
        let Some(set) = kube.get::<ListenerSet>(namespace, name) else {
            return false;
        };
        let generation = set.metadata.generation;
        let Some(status) = set.status else {
            return false;
        };
        let listeners = status.listeners.unwrap_or_default();
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .all(|c| c.observed_generation == generation)
            && listeners.len() == wanted.len()
            && wanted.iter().all(|(listener, attached)| {
                listeners.iter().any(|l| {
                    l.name == *listener
                        && l.attached_routes == *attached
                        && l.supported_kinds
                            .iter()
                            .flatten()
                            .any(|k| k.kind == "HTTPRoute")
                        && SERVED.iter().all(|(type_, status, _)| {
                            l.conditions
                                .iter()
                                .any(|c| c.type_ == *type_ && c.status == *status)
                        })
                })
            })
    };
    assert!(
        c.kube.wait_until(READY_TIMEOUT, matches),
        "ListenerSet {namespace}/{name}: want listeners {wanted:?}; status {:?}",
        c.kube
            .get::<ListenerSet>(namespace, name)
            .and_then(|s| s.status)
    );
}

/// GatewayMustHaveAttachedListeners: Gateway `name` counts `sets` ListenerSets.
fn attached_sets(c: &Conformance, name: &str, sets: i32) {
    gateway_accepted(c, name, "True", "Accepted");
    let counted = c.kube.wait_until(READY_TIMEOUT, |kube| {
        kube.get::<Gateway>(INFRA, name)
            .and_then(|g| g.status)
            .is_some_and(|s| s.attached_listener_sets.unwrap_or(0) == sets)
    });
    assert!(
        counted,
        "Gateway {name}: want {sets} attached ListenerSets; status {:?}",
        c.kube.get::<Gateway>(INFRA, name).and_then(|g| g.status)
    );
}

/// HTTPRoute `route` (conformance namespace) has a parent entry of sluice's for `kind`
/// `namespace/name` with condition `type_` `status` (`reason`) at its generation.
#[allow(clippy::too_many_arguments)]
fn parent_condition(
    c: &Conformance,
    route: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) {
    let status_of = |kube: &FakeKube| {
        kube.get::<HttpRoute>(INFRA, route)
            .and_then(|r| serde_json::to_value(r).ok())
    };
    let found = c.kube.wait_until(READY_TIMEOUT, |kube| {
        let Some(object) = status_of(kube) else {
            return false;
        };
        let generation = &object["metadata"]["generation"];
        object["status"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| {
                let parent = &p["parentRef"];
                let kind_ok =
                    parent["kind"] == kind || (parent["kind"].is_null() && kind == "Gateway");
                p["controllerName"] == CONTROLLER
                    && parent["name"] == name
                    && kind_ok
                    && (parent["namespace"].is_null() || parent["namespace"] == namespace)
                    && p["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|cond| {
                            cond["type"] == type_
                                && cond["status"] == status
                                && cond["reason"] == reason
                                && &cond["observedGeneration"] == generation
                        })
            })
    });
    assert!(
        found,
        "HTTPRoute {route}: no parent {kind} {namespace}/{name} with {type_}={status} ({reason}) in {:?}",
        status_of(&c.kube).map(|r| r["status"].clone())
    );
}

/// RoutesAndParentMustBeAccepted for ListenerSet `name` of the conformance namespace.
fn accepted_by_set(c: &Conformance, name: &str, routes: &[&str]) {
    for route in routes {
        parent_condition(
            c,
            route,
            "ListenerSet",
            INFRA,
            name,
            "Accepted",
            "True",
            "Accepted",
        );
    }
}

#[test]
fn a_kind_whose_crd_is_missing_counts_as_none_until_it_is_installed() {
    // A cluster on an older Gateway API release has no ListenerSet CRD: the rest is served.
    let c = Conformance::start_with(&["listenerset-http-routing.yaml"], &[], |kube| {
        kube.uninstall::<ListenerSet>()
    });
    let gateway = "gateway-with-listener-sets-http-routing";
    parent_condition(
        &c,
        "gateway-route",
        "Gateway",
        INFRA,
        gateway,
        "Accepted",
        "True",
        "Accepted",
    );
    expect_host(&c, "gateway-listener-1.com", "/gateway-route", 200, &v(2));
    expect_host(
        &c,
        "listener-set-http-routing-1-listener-1.com",
        "/route",
        404,
        "",
    );
    // The CRD comes: the watch, still trying, lists the sets already there.
    c.kube.install::<ListenerSet>();
    attached_sets(&c, gateway, 2);
    expect_host(
        &c,
        "listener-set-http-routing-1-listener-1.com",
        "/route",
        200,
        &v(1),
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetAllowedNamespaceNone() {
    let c = Conformance::start(&["listenerset-allowed-namespace-none.yaml"]);
    attached_sets(&c, "gateway-does-not-allow-listenerset", 0);
    set_state(
        &c,
        INFRA,
        "listenerset-not-allowed",
        "False",
        "NotAllowed",
        "NotAllowed",
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetDefaultNotAllowed() {
    let c = Conformance::start(&["listenerset-default-not-allowed.yaml"]);
    attached_sets(&c, "gateway-default-does-not-allow-listenerset", 0);
    set_state(
        &c,
        INFRA,
        "listenerset-default-not-allowed",
        "False",
        "NotAllowed",
        "NotAllowed",
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetAllowedNamespaceSame() {
    let c = Conformance::start(&["listenerset-allowed-namespace-same.yaml"]);
    attached_sets(&c, "gateway-allows-listenerset-in-same-namespace", 1);
    let same = "listenerset-in-same-namespace";
    set_state(&c, INFRA, same, "True", "Accepted", "Programmed");
    set_listener(
        &c,
        INFRA,
        same,
        "listenerset-in-same-namespace-listener",
        &SERVED,
    );
    set_state(
        &c,
        "gateway-api-listenerset-not-allowed-ns",
        "listenerset-in-different-namespace",
        "False",
        "NotAllowed",
        "NotAllowed",
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetAllowedNamespaceSelector() {
    let c = Conformance::start(&["listenerset-allowed-namespace-selector.yaml"]);
    attached_sets(&c, "gateway-allows-listenerset-in-selected-namespace", 1);
    let selected = (
        "gateway-api-listenerset-selector-allowed-ns",
        "listenerset-in-selected-namespace",
    );
    set_state(&c, selected.0, selected.1, "True", "Accepted", "Programmed");
    set_listener(
        &c,
        selected.0,
        selected.1,
        "listenerset-in-selected-namespace-listener",
        &SERVED,
    );
    set_state(
        &c,
        "gateway-api-listenerset-selector-not-allowed-ns",
        "listenerset-not-in-selected-namespace",
        "False",
        "NotAllowed",
        "NotAllowed",
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetAllowedRoutesNamespaces() {
    let c = Conformance::start(&["listenerset-allowed-routes-namespaces.yaml"]);
    attached_sets(&c, "gateway-with-listener-sets-test-allowed-routes", 2);
    // Same-namespace ListenerSet.
    let set = "listenerset-test-allowed-routes-namespaces";
    for (namespace, route) in [
        (INFRA, "route-in-same-namespace"),
        (
            "gateway-api-routes-allowed-ns",
            "route-in-selected-namespace",
        ),
        (
            "gateway-api-routes-not-allowed-ns",
            "route-not-in-selected-namespace",
        ),
    ] {
        c.condition_of::<HttpRoute>(namespace, route, "Accepted", "True", "Accepted");
    }
    set_listeners(
        &c,
        INFRA,
        set,
        &[
            ("listener-set-listener-allowed-routes-all", 3),
            ("listener-set-listener-allowed-routes-same", 1),
            ("listener-set-listener-allowed-routes-selector", 1),
        ],
    );
    let paths = [
        "/route-in-same-namespace",
        "/route-in-selected-namespace",
        "/route-not-in-selected-namespace",
    ];
    for (host, served) in [
        (
            "listener-set-listener-allowed-routes-all.com",
            [Some(1), Some(2), Some(3)],
        ),
        (
            "listener-set-listener-allowed-routes-same.com",
            [Some(1), None, None],
        ),
        (
            "listener-set-listener-allowed-routes-selector.com",
            [None, Some(2), None],
        ),
    ] {
        for (path, backend) in paths.iter().zip(served) {
            match backend {
                Some(n) => expect_host(&c, host, path, 200, &v(n)),
                None => expect_host(&c, host, path, 404, ""),
            }
        }
    }
    // Cross-namespace ListenerSet: its listener's `Same` is the set's namespace.
    let cross = (
        "gateway-api-ls-cross-ns",
        "listenerset-test-allowed-routes-cross-ns",
    );
    c.condition_of::<HttpRoute>(
        cross.0,
        "route-in-listenerset-namespace",
        "Accepted",
        "True",
        "Accepted",
    );
    c.condition_of::<HttpRoute>(
        INFRA,
        "route-in-gateway-namespace",
        "Accepted",
        "False",
        "NotAllowedByListeners",
    );
    set_listeners(
        &c,
        cross.0,
        cross.1,
        &[("listener-set-listener-allowed-routes-cross-ns-same", 1)],
    );
    let host = "listener-set-listener-allowed-routes-cross-ns-same.com";
    expect_host(&c, host, "/route-in-listenerset-namespace", 200, &v(1));
    expect_host(&c, host, "/route-in-gateway-namespace", 404, "");
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetAllowedRoutesSupportedKinds() {
    let c = Conformance::start(&["listenerset-allowed-routes-supported-kinds.yaml"]);
    gateway_accepted(
        &c,
        "gateway-with-listener-sets-test-supported-route-kinds",
        "True",
        "Accepted",
    );
    set_listener(
        &c,
        INFRA,
        "listenerset-test-allowed-routes-supported-kinds",
        "listener-set-listener-allowed-routes-tls-only",
        &[("ResolvedRefs", "False", "InvalidRouteKinds")],
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetDualParentRefIndependence() {
    let c = Conformance::start(&["listenerset-dual-parentref-independence.yaml"]);
    let gateway = "gateway-dual-parentref";
    let set = "ls-dual-parentref";
    attached_sets(&c, gateway, 1);
    set_listeners(&c, INFRA, set, &[("ls-dual-parentref-listener", 2)]);
    let both = "route-dual-parentref-both";
    parent_condition(
        &c, both, "Gateway", INFRA, gateway, "Accepted", "True", "Accepted",
    );
    accepted_by_set(&c, set, &[both]);
    expect_host(&c, "gw-dual.com", "/dualboth", 200, &v(1));
    expect_host(&c, "ls-dual.com", "/dualboth", 200, &v(1));
    // A Gateway parentRef naming the set's listener matches none of the Gateway's.
    let one = "route-dual-parentref-one";
    parent_condition(
        &c,
        one,
        "Gateway",
        INFRA,
        gateway,
        "Accepted",
        "False",
        "NoMatchingParent",
    );
    accepted_by_set(&c, set, &[one]);
    expect_host(&c, "ls-dual.com", "/dualone", 200, &v(2));
    expect_host(&c, "gw-dual.com", "/dualone", 404, "");
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetGatewayParentSectionNameNotFound() {
    let c = Conformance::start(&["listenerset-gateway-parent-section-name-not-found.yaml"]);
    let gateway = "gateway-section-name";
    attached_sets(&c, gateway, 1);
    accepted_by_set(&c, "listenerset-section-name", &["route-via-listenerset"]);
    parent_condition(
        &c,
        "route-via-gateway",
        "Gateway",
        INFRA,
        gateway,
        "Accepted",
        "False",
        "NoMatchingParent",
    );
    expect_host(&c, "ls-section-name.com", "/goodsection", 200, &v(1));
    expect_host(&c, "gw-section.com", "/badsection", 404, "");
}

/// ListenerSetHostnameConflict and ListenerSetProtocolConflict: the same sets, conflicting
/// for `reason` (`what` in their names).
fn listener_set_conflicts(manifest: &str, what: &str, reason: &str) {
    let c = Conformance::start(&[manifest]);
    let gateway = format!("gateway-with-listenerset-{what}-conflict");
    let loser = [
        ("Accepted", "False", reason),
        ("Programmed", "False", reason),
        ("Conflicted", "True", reason),
    ];
    let with_gateway = format!("{what}-conflict-with-gateway-listener");
    let with_set = format!("{what}-conflict-with-listener-set-listener");
    // The Gateway's listeners win.
    c.listener_status(&gateway, "gateway-listener", 0, &SERVED);
    c.listener_status(&gateway, &with_gateway, 0, &SERVED);
    attached_sets(&c, &gateway, 2);
    let set = |n: &str| format!("listenerset-with-{what}-conflict-with-{n}");
    set_condition(&c, INFRA, &set("gateway-1"), "Accepted", "True", "");
    set_condition(
        &c,
        INFRA,
        &set("gateway-1"),
        "Programmed",
        "True",
        "Programmed",
    );
    set_listener(
        &c,
        INFRA,
        &set("gateway-1"),
        "listener-set-1-listener",
        &SERVED,
    );
    set_listener(&c, INFRA, &set("gateway-1"), &with_gateway, &loser);
    set_listener(&c, INFRA, &set("gateway-1"), &with_set, &SERVED);
    set_state(
        &c,
        INFRA,
        &set("gateway-2"),
        "False",
        "ListenersNotValid",
        "ListenersNotValid",
    );
    set_listener(&c, INFRA, &set("gateway-2"), &with_gateway, &loser);
    set_condition(&c, INFRA, &set("listener-set-1"), "Accepted", "True", "");
    set_condition(
        &c,
        INFRA,
        &set("listener-set-1"),
        "Programmed",
        "True",
        "Programmed",
    );
    set_listener(
        &c,
        INFRA,
        &set("listener-set-1"),
        "listener-set-2-listener",
        &SERVED,
    );
    set_listener(&c, INFRA, &set("listener-set-1"), &with_set, &loser);
    set_state(
        &c,
        INFRA,
        &set("listener-set-2"),
        "False",
        "ListenersNotValid",
        "ListenersNotValid",
    );
    set_listener(&c, INFRA, &set("listener-set-2"), &with_set, &loser);
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetHostnameConflict() {
    listener_set_conflicts(
        "listenerset-hostname-conflict.yaml",
        "hostname",
        "HostnameConflict",
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetProtocolConflict() {
    listener_set_conflicts(
        "listenerset-protocol-conflict.yaml",
        "protocol",
        "ProtocolConflict",
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetHTTPRouting() {
    let c = Conformance::start(&["listenerset-http-routing.yaml"]);
    let gateway = "gateway-with-listener-sets-http-routing";
    for route in [
        "attaches-to-all-listeners",
        "gateway-route",
        "gateway-section-route",
    ] {
        parent_condition(
            &c, route, "Gateway", INFRA, gateway, "Accepted", "True", "Accepted",
        );
    }
    listeners_ready(&c, gateway);
    attached_sets(&c, gateway, 2);
    let (one, two) = ("listener-set-http-routing-1", "listener-set-http-routing-2");
    accepted_by_set(
        &c,
        one,
        &[
            "attaches-to-all-listeners",
            "listener-set-http-routing-1-route",
            "listener-set-http-routing-1-section-route",
        ],
    );
    set_listeners(
        &c,
        INFRA,
        one,
        &[
            ("listener-set-http-routing-1-listener-1", 3),
            ("listener-set-http-routing-1-listener-2", 2),
        ],
    );
    accepted_by_set(
        &c,
        two,
        &[
            "attaches-to-all-listeners",
            "listener-set-http-routing-2-route",
        ],
    );
    set_listeners(
        &c,
        INFRA,
        two,
        &[
            ("listener-set-http-routing-2-listener-1", 2),
            ("listener-set-http-routing-2-listener-2", 2),
        ],
    );
    let hosts = [
        "gateway-listener-1.com",
        "gateway-listener-2.com",
        "listener-set-http-routing-1-listener-1.com",
        "listener-set-http-routing-1-listener-2.com",
        "listener-set-http-routing-2-listener-1.com",
        "listener-set-http-routing-2-listener-2.com",
    ];
    // By path: the backend, and on which of `hosts` it answers.
    let cases: [(&str, u8, [bool; 6]); 6] = [
        ("/route", 1, [true; 6]),
        (
            "/gateway-route",
            2,
            [true, true, false, false, false, false],
        ),
        (
            "/gateway-section-route",
            3,
            [true, false, false, false, false, false],
        ),
        (
            "/listener-set-http-routing-1-route",
            2,
            [false, false, true, true, false, false],
        ),
        (
            "/listener-set-http-routing-1-section-route",
            3,
            [false, false, true, false, false, false],
        ),
        (
            "/listener-set-http-routing-2-route",
            2,
            [false, false, false, false, true, true],
        ),
    ];
    for (path, backend, served) in cases {
        for (host, served) in hosts.iter().zip(served) {
            if served {
                expect_host(&c, host, path, 200, &v(backend));
            } else {
                expect_host(&c, host, path, 404, "");
            }
        }
    }
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetReferenceGrant() {
    let c = Conformance::start(&["listenerset-reference-grant.yaml"]);
    gateway_accepted(
        &c,
        "gateway-with-listener-sets-test-reference-grant",
        "True",
        "Accepted",
    );
    let granted = "listenerset-with-reference-grant";
    set_state(&c, INFRA, granted, "True", "", "");
    set_listener(
        &c,
        INFRA,
        granted,
        "listenerset-with-reference-grant-listener",
        &[("ResolvedRefs", "True", "")],
    );
    let other = (
        "gateway-api-listener-sets-test-reference-grant-ns",
        "listenerset-without-reference-grant",
    );
    set_state(
        &c,
        other.0,
        other.1,
        "False",
        "ListenersNotValid",
        "ListenersNotValid",
    );
    set_listener(
        &c,
        other.0,
        other.1,
        "listenerset-without-reference-grant-listener",
        &[("ResolvedRefs", "False", "RefNotPermitted")],
    );
}

#[test]
#[allow(non_snake_case)]
fn ListenerSetRouteStatusScopedToParentRef() {
    let c = Conformance::start(&["listenerset-route-status-scoped-to-parentref.yaml"]);
    let gateway = "gateway-parentref";
    attached_sets(&c, gateway, 1);
    // The Gateway's route is not counted on the set's listener.
    set_listeners(
        &c,
        INFRA,
        "listenerset-parentref",
        &[("listenerset-parentref-listener", 1)],
    );
    parent_condition(
        &c,
        "route-parentref-gwonly",
        "Gateway",
        INFRA,
        gateway,
        "Accepted",
        "True",
        "Accepted",
    );
    accepted_by_set(&c, "listenerset-parentref", &["route-parentref-lsonly"]);
    // One parent entry per parentRef: neither route gets the other's parent.
    let parents = |route: &str| -> Vec<String> {
        c.kube
            .get::<HttpRoute>(INFRA, route)
            .and_then(|r| serde_json::to_value(r.status).ok())
            .and_then(|s| s["parents"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                p["parentRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(parents("route-parentref-gwonly"), [gateway]);
    assert_eq!(parents("route-parentref-lsonly"), ["listenerset-parentref"]);
}
