//! Kubernetes objects for the Ingress tests: IngressClasses, Services with their
//! EndpointSlices, and Ingresses, written as the JSON a client would send.

use super::fake_kube::{ready, slice, FakeKube};
use super::Backend;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{json, Value};

/// The namespace of the test objects.
pub const NS: &str = "shop";
/// sluice's default controller name.
pub const CONTROLLER: &str = "sluice.dev/ingress-controller";

pub fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

pub fn ingress_class(name: &str, controller: &str) -> IngressClass {
    object(json!({"metadata": {"name": name}, "spec": {"controller": controller}}))
}

/// A Service `name` with port 80 named `http`, and an EndpointSlice pointing it at `backend`.
pub fn service(kube: &FakeKube, name: &str, backend: &Backend) {
    service_at(kube, name, backend.address);
}

/// A Service `name` with port 80 named `http`, and an EndpointSlice pointing it at `address`.
pub fn service_at(kube: &FakeKube, name: &str, address: std::net::SocketAddr) {
    kube.apply::<Service>(object(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    })));
    kube.apply::<EndpointSlice>(slice(
        NS,
        &format!("{name}-1"),
        name,
        ("http", address.port()),
        &[ready(&address.ip().to_string())],
    ));
}

/// A rule: host, and its paths as (path, pathType, service).
pub type Rule<'a> = (&'a str, &'a [(&'a str, &'a str, &'a str)]);

/// An Ingress of class `class` with `rules`.
pub fn ingress(name: &str, class: &str, rules: &[Rule]) -> Ingress {
    let rules: Vec<Value> = rules
        .iter()
        .map(|(host, paths)| {
            let paths: Vec<Value> = paths
                .iter()
                .map(|(path, path_type, service)| {
                    json!({"path": path, "pathType": path_type, "backend": {
                        "service": {"name": service, "port": {"number": 80}}}})
                })
                .collect();
            json!({"host": host, "http": {"paths": paths}})
        })
        .collect();
    object(json!({
        "metadata": {"name": name, "namespace": NS, "annotations": {}},
        "spec": {"ingressClassName": class, "rules": rules},
    }))
}

pub fn annotated(mut ingress: Ingress, pairs: &[(&str, &str)]) -> Ingress {
    let annotations = ingress
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (k, v) in pairs {
        annotations.insert(format!("nginx.ingress.kubernetes.io/{k}"), v.to_string());
    }
    ingress
}
