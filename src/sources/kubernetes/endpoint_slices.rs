//! From EndpointSlices to an upstream's endpoint set.
//!
//! All slices of a service are merged; the port is resolved per slice (slices of one
//! service may differ); an address in two slices counts once. Conditions: `ready` endpoints
//! are used; `serving && terminating` ones only when no ready one is left (`terminating:
//! drain`) or never (`drop`); endpoints that are not serving are left out. Unset conditions
//! mean what the API documents: `ready` and `serving` unset count as true, `terminating`
//! unset as false.

use crate::model::{EndpointConfig, ServicePort, TerminatingPolicy};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// Label that ties a slice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The service a slice belongs to, from its label.
pub fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// The endpoints to use for `port` of the service whose `slices` are given.
pub fn endpoints_of<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    port: &ServicePort,
    terminating_policy: TerminatingPolicy,
) -> Vec<EndpointConfig> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = resolve_port(slice, port) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let address = SocketAddr::new(ip, port);
                if is_ready && !is_terminating {
                    ready.insert(address);
                } else if is_serving && is_terminating {
                    terminating.insert(address);
                }
            }
        }
    }
    let (chosen, is_terminating) = match (ready.is_empty(), terminating_policy) {
        (false, _) => (ready, false),
        (true, TerminatingPolicy::Drain) => (terminating, true),
        (true, TerminatingPolicy::Drop) => (BTreeSet::new(), false),
    };
    chosen
        .into_iter()
        .map(|address| EndpointConfig {
            address,
            weight: 1,
            terminating: is_terminating,
        })
        .collect()
}

/// The slice's port for `wanted`: by name among the slice's ports, or the number itself
/// when the slice lists it (or lists no ports at all).
fn resolve_port(slice: &EndpointSlice, wanted: &ServicePort) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    match wanted {
        ServicePort::Name(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok()),
        ServicePort::Number(number) => {
            let listed =
                ports.is_empty() || ports.iter().any(|p| p.port == Some(i32::from(*number)));
            listed.then_some(*number)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(
        name: &str,
        port: (&str, i32),
        endpoints: &[(&str, bool, bool, bool)],
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: if endpoints.iter().any(|e| e.0.contains(':')) {
                "IPv6"
            } else {
                "IPv4"
            }
            .into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "svc".to_string())].into()),
                ..Default::default()
            },
            ports: Some(vec![EndpointPort {
                name: Some(port.0.into()),
                port: Some(port.1),
                ..Default::default()
            }]),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(ip, ready, serving, terminating)| Endpoint {
                        addresses: vec![ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(*ready),
                            serving: Some(*serving),
                            terminating: Some(*terminating),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn addresses(endpoints: &[EndpointConfig]) -> Vec<String> {
        endpoints.iter().map(|e| e.address.to_string()).collect()
    }

    #[test]
    fn merges_slices_resolves_named_ports_per_slice_and_dedupes() {
        let a = slice(
            "a",
            ("http", 8080),
            &[
                ("10.0.0.1", true, true, false),
                ("10.0.0.2", true, true, false),
            ],
        );
        let b = slice("b", ("http", 9090), &[("10.0.0.3", true, true, false)]);
        let v6 = slice("c", ("http", 8080), &[("fd00::1", true, true, false)]);
        let dup = slice("d", ("http", 8080), &[("10.0.0.1", true, true, false)]);
        let found = endpoints_of(
            [&a, &b, &v6, &dup].into_iter(),
            &ServicePort::Name("http".into()),
            TerminatingPolicy::Drain,
        );
        assert_eq!(
            addresses(&found),
            [
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.3:9090",
                "[fd00::1]:8080"
            ]
        );
        let by_number = endpoints_of(
            [&a, &b].into_iter(),
            &ServicePort::Number(9090),
            TerminatingPolicy::Drain,
        );
        assert_eq!(addresses(&by_number), ["10.0.0.3:9090"]);
        let unknown = endpoints_of(
            [&a].into_iter(),
            &ServicePort::Name("grpc".into()),
            TerminatingPolicy::Drain,
        );
        assert!(unknown.is_empty());
    }

    #[test]
    fn terminating_endpoints_are_a_last_resort_or_dropped() {
        let mixed = slice(
            "a",
            ("http", 80),
            &[
                ("10.0.0.1", true, true, false),
                ("10.0.0.2", false, true, true),
                ("10.0.0.3", false, false, false),
            ],
        );
        let found = endpoints_of(
            [&mixed].into_iter(),
            &ServicePort::Number(80),
            TerminatingPolicy::Drain,
        );
        assert_eq!(addresses(&found), ["10.0.0.1:80"]);
        let draining = slice(
            "b",
            ("http", 80),
            &[
                ("10.0.0.2", false, true, true),
                ("10.0.0.3", false, false, true),
            ],
        );
        let found = endpoints_of(
            [&draining].into_iter(),
            &ServicePort::Number(80),
            TerminatingPolicy::Drain,
        );
        assert_eq!(addresses(&found), ["10.0.0.2:80"]);
        assert!(found[0].terminating);
        let dropped = endpoints_of(
            [&draining].into_iter(),
            &ServicePort::Number(80),
            TerminatingPolicy::Drop,
        );
        assert!(dropped.is_empty());
    }
}
