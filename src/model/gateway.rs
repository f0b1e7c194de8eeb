//! Settings of the Kubernetes Gateway API source (`gateway:` in the config file): which
//! GatewayClasses are sluice's, which sluice listener serves each Gateway listener port,
//! and who reports status.

use super::{LeaseSettings, PublishAddress};

/// The `spec.controllerName` of the GatewayClasses sluice serves, unless configured
/// otherwise.
pub const DEFAULT_GATEWAY_CONTROLLER: &str = "sluice.dev/gateway-controller";

/// `gateway:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// GatewayClasses with this `spec.controllerName` are sluice's.
    pub controller_name: String,
    /// The sluice listeners that serve the Gateway listeners of every Gateway not in
    /// `dedicated`, by port and kind.
    pub ports: Vec<GatewayPort>,
    /// What `status.addresses` of those Gateways says, if anything.
    pub publish: Option<PublishAddress>,
    /// Gateways served by sluice listeners of their own.
    pub dedicated: Vec<DedicatedGateway>,
    /// The Lease whose holder alone writes status.
    pub lease: LeaseSettings,
}

impl GatewaySettings {
    /// The sluice listeners serving Gateway `namespace/name`: its own if it has some,
    /// else the shared ones.
    pub fn ports_of(&self, namespace: &str, name: &str) -> &[GatewayPort] {
        match self.dedicated_to(namespace, name) {
            Some(dedicated) => &dedicated.ports,
            None => &self.ports,
        }
    }

    /// What `status.addresses` of Gateway `namespace/name` says.
    pub fn publish_of(&self, namespace: &str, name: &str) -> Option<&PublishAddress> {
        match self.dedicated_to(namespace, name) {
            Some(dedicated) => dedicated.publish.as_ref(),
            None => self.publish.as_ref(),
        }
    }

    /// Whether Gateway `namespace/name` has sluice listeners of its own.
    pub fn is_dedicated(&self, namespace: &str, name: &str) -> bool {
        self.dedicated_to(namespace, name).is_some()
    }

    fn dedicated_to(&self, namespace: &str, name: &str) -> Option<&DedicatedGateway> {
        self.dedicated
            .iter()
            .find(|d| d.namespace == namespace && d.name == name)
    }
}

/// `gateway.dedicated[]`: a Gateway isolated from the others. Its routes are served only
/// by its own sluice listeners (bound apart, e.g. behind a load balancer of its own), so
/// they neither answer on other Gateways' listeners nor conflict with their routes, as a
/// Gateway with an address of its own behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedicatedGateway {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<GatewayPort>,
    pub publish: Option<PublishAddress>,
}

/// `gateway.listeners[]`: the sluice listener that serves Gateway listeners on `port`
/// whose protocol is of its kind. Sluice's listeners are bound at start; a Gateway cannot
/// open a port of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPort {
    /// The Gateway listener port (the port clients use, often the Service's).
    pub port: u16,
    pub listener: String,
    pub kind: GatewayListenerKind,
}

/// Which Gateway listener protocols a sluice listener can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GatewayListenerKind {
    /// An `http` listener without TLS: protocol `HTTP`.
    Http,
    /// An `http` listener with TLS: protocol `HTTPS` (TLS mode `Terminate`).
    Https,
    /// A `tcp` listener with `sni_routing`: protocol `TLS` in mode `Passthrough`.
    TlsPassthrough,
    /// A `tcp` listener with `tls`: protocol `TLS` in mode `Terminate`.
    TlsTerminate,
    /// A `tcp` listener without: protocol `TCP`.
    Tcp,
}

impl GatewayListenerKind {
    /// The Gateway API protocol name.
    pub fn protocol(self) -> &'static str {
        match self {
            GatewayListenerKind::Http => "HTTP",
            GatewayListenerKind::Https => "HTTPS",
            GatewayListenerKind::TlsPassthrough | GatewayListenerKind::TlsTerminate => "TLS",
            GatewayListenerKind::Tcp => "TCP",
        }
    }
}
