//! Settings of the Kubernetes Ingress source (`ingress:` in the config file): which
//! Ingresses are sluice's, where their routes go, and who reports their status.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The `spec.controller` of the IngressClasses sluice serves, unless configured otherwise.
pub const DEFAULT_CONTROLLER: &str = "sluice.dev/ingress-controller";

/// ingress-nginx's controller name, which the migration option claims too.
pub const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";

/// `ingress:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// IngressClasses with this `spec.controller` are sluice's.
    pub controller: String,
    /// The class name the legacy `kubernetes.io/ingress.class` annotation names.
    pub class: String,
    /// Take Ingresses that name no class even when no class of sluice's is the default.
    pub unclassed: bool,
    /// Migration: also take the Ingresses of these class names (ingress-nginx's `nginx`),
    /// so both controllers serve them side by side during the switch.
    pub also_claim: Vec<String>,
    /// The listener that serves the rules over plain HTTP.
    pub http_listener: String,
    /// The TLS listener that serves hosts with a `tls` section (certificates from Secrets).
    pub https_listener: Option<String>,
    /// The port that `ssl-redirect` sends clients to (the public HTTPS port).
    pub https_redirect_port: u16,
    /// The tcp listener with `sni_routing` that serves `ssl-passthrough` hosts; `None`:
    /// the annotation is not supported (ingress-nginx's `--enable-ssl-passthrough` off).
    pub passthrough_listener: Option<String>,
    /// What `status.loadBalancer` says, if anything.
    pub publish: Option<PublishAddress>,
    /// The Lease whose holder alone writes status.
    pub lease: LeaseSettings,
    /// The validating admission webhook, if served.
    pub webhook: Option<WebhookSettings>,
}

impl IngressSettings {
    /// sluice's defaults, serving on `http_listener` (and `https_listener`): the default
    /// controller and class, no migration claim, no status, the default Lease.
    pub fn new(http_listener: &str, https_listener: Option<&str>) -> Self {
        Self {
            controller: DEFAULT_CONTROLLER.into(),
            class: "sluice".into(),
            unclassed: false,
            also_claim: Vec::new(),
            http_listener: http_listener.into(),
            https_listener: https_listener.map(str::to_string),
            https_redirect_port: 443,
            passthrough_listener: None,
            publish: None,
            lease: LeaseSettings {
                namespace: "default".into(),
                name: "sluice-ingress-leader".into(),
                identity: "sluice".into(),
                duration: std::time::Duration::from_secs(15),
            },
            webhook: None,
        }
    }
}

/// Where the address written to `status.loadBalancer` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishAddress {
    /// The load balancer address of this Service (`namespace/name`).
    Service { namespace: String, name: String },
    /// These IPs or host names.
    Addresses(Vec<String>),
}

/// The leader-election Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub duration: std::time::Duration,
}

/// `ingress.webhook`: the HTTPS listener of the validating admission webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
}
