//! A set of Kubernetes objects by namespace and name: the controller's view of the cluster,
//! or the objects of a file given to `sluice ingress check`.

use super::Cluster;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use std::collections::BTreeMap;

/// `(namespace, name)`.
pub type ObjectKey = (String, String);

/// The key of an object's metadata.
pub fn key_of(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    (
        metadata.namespace.clone().unwrap_or_default(),
        metadata.name.clone().unwrap_or_default(),
    )
}

/// Objects by kind, namespace and name.
#[derive(Debug, Clone, Default)]
pub struct ObjectSet {
    pub classes: BTreeMap<String, IngressClass>,
    /// Only the Ingresses that are sluice's.
    pub ingresses: BTreeMap<ObjectKey, Ingress>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub secrets: BTreeMap<ObjectKey, Secret>,
}

impl Cluster for ObjectSet {
    fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    fn ingresses(&self, namespace: &str) -> Vec<&Ingress> {
        self.ingresses
            .range((namespace.to_string(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, ingress)| ingress)
            .collect()
    }
}
