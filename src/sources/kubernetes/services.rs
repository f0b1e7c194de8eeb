//! Endpoint sources for Kubernetes Services, for every source: the EndpointSlices of a
//! Service port, or the DNS name of an ExternalName Service.

use crate::model::{
    DnsName, EndpointSource, PublishAddress, ServicePort, ServiceRef, TerminatingPolicy,
};
use k8s_openapi::api::core::v1::Service;
use std::time::Duration;

/// Endpoints from the EndpointSlices of `service`'s port `port` (the Service port's name).
pub fn slices_source(namespace: String, service: &str, port: ServicePort) -> EndpointSource {
    EndpointSource::Kubernetes(ServiceRef {
        namespace,
        service: service.to_string(),
        port,
        terminating: TerminatingPolicy::Drain,
    })
}

/// Endpoints from the addresses of DNS name `name`, with the file's default TTL bounds.
pub fn dns_source(name: String, port: u16) -> EndpointSource {
    EndpointSource::Dns(DnsName {
        name,
        port,
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(300),
    })
}

/// Where the endpoints of port number `port` of `service` (`namespace/name`) come from:
/// its EndpointSlices (which name the port as the Service does), or the DNS name of an
/// ExternalName Service.
pub fn port_source(
    service: &Service,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<EndpointSource, String> {
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return match spec.external_name {
            Some(external) => Ok(dns_source(external, port)),
            None => Err(format!(
                "ExternalName Service {namespace}/{name} names no host"
            )),
        };
    }
    let found = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port))
        .ok_or_else(|| format!("Service {namespace}/{name} has no port {port}"))?;
    Ok(slices_source(
        namespace.to_string(),
        name,
        ServicePort::Name(found.name.clone().unwrap_or_default()),
    ))
}

/// The addresses `publish` names: its own list, or the load balancer addresses (IP, else
/// host name) of its Service as `service` finds it; `None` while they are not known.
pub fn published_addresses<'a>(
    publish: &PublishAddress,
    service: impl FnOnce(&str, &str) -> Option<&'a Service>,
) -> Option<Vec<String>> {
    match publish {
        PublishAddress::Addresses(list) => Some(list.clone()),
        PublishAddress::Service { namespace, name } => {
            let ingress = service(namespace, name)?
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?;
            Some(
                ingress
                    .iter()
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .collect(),
            )
        }
    }
}
