//! ListenerSets (GEP-1713): listeners that other objects, often in other namespaces, add to
//! a Gateway that allows them (`spec.allowedListeners`). They join the Gateway's own
//! listeners in precedence order, the Gateway's first, then the sets oldest first (then by
//! namespace and name); a listener that conflicts with an earlier one is not served, and
//! the earlier one keeps serving. Routes attach to a set's listeners only by naming the set.

use super::api::gateways::{
    Gateway, GatewayAllowedListenersNamespacesFrom, GatewayListeners, GatewayListenersTlsMode,
};
use super::api::listenersets::ListenerSetStatusListenersSupportedKinds;
use super::api::listenersets::{ListenerSet, ListenerSetStatus, ListenerSetStatusListeners};
use super::conditions::condition;
use super::listeners::{resolve, Owner, ResolvedListener};
use super::{created, fragment_key, origin, GatewayObjects, ObjectKey, Translation, GROUP};
use crate::model::{Fragment, GatewaySettings};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Adds the listeners of the ListenerSets of sluice's Gateways (whose own listeners are in
/// `resolved` already) to `resolved`. A set its Gateway does not allow, or whose Gateway is
/// not accepted, gets its status in `out` and no listener.
pub fn resolve_listener_sets(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    classes: &BTreeSet<String>,
    resolved: &mut Vec<ResolvedListener>,
    now: &Time,
    out: &mut Translation,
) {
    let mut sets: Vec<(&ObjectKey, &ListenerSet, ObjectKey, &Gateway)> = objects
        .listener_sets
        .iter()
        .filter_map(|(key, set)| {
            let parent = &set.spec.parent_ref;
            let group_ok = parent.group.as_deref().is_none_or(|g| g == GROUP);
            if !group_ok || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway" {
                return None;
            }
            let namespace = parent.namespace.clone().unwrap_or_else(|| key.0.clone());
            let gateway_key = (namespace, parent.name.clone());
            let gateway = objects.gateways.get(&gateway_key)?;
            // Another controller's Gateway: its business.
            classes
                .contains(&gateway.spec.gateway_class_name)
                .then_some((key, set, gateway_key, gateway))
        })
        .collect();
    sets.sort_by_key(|(key, set, _, _)| (created(&set.metadata), *key));
    // By Gateway, what it serves so far: its own listeners, then the earlier sets'
    // served ones.
    let mut taken: BTreeMap<ObjectKey, Vec<Identity>> = BTreeMap::new();
    for (key, set, gateway_key, gateway) in sets {
        let generation = set.metadata.generation;
        let unserved = |reason: &str, message: String| ListenerSetStatus {
            conditions: Some(vec![
                condition("Accepted", false, reason, message.clone(), generation, now),
                condition("Programmed", false, reason, message, generation, now),
            ]),
            listeners: None,
        };
        // One of the Gateway's own listeners, if it is accepted: what they share.
        let of_gateway = resolved
            .iter()
            .find(|l| l.gateway == gateway_key && l.set.is_none());
        let Some(backend_certificate) = of_gateway.map(|l| l.backend_client_certificate.clone())
        else {
            let message = format!(
                "Gateway {}/{} is not accepted",
                gateway_key.0, gateway_key.1
            );
            out.listener_sets
                .insert(key.clone(), unserved("ParentNotAccepted", message));
            continue;
        };
        if !allowed(gateway, &key.0, objects) {
            let message = format!(
                "Gateway {}/{} does not allow ListenerSets from namespace {} \
                 (spec.allowedListeners)",
                gateway_key.0, gateway_key.1, key.0
            );
            out.listener_sets
                .insert(key.clone(), unserved("NotAllowed", message));
            continue;
        }
        let owner = Owner {
            gateway: &gateway_key,
            gateway_object: gateway,
            set: Some(key),
            generation,
        };
        let taken = taken
            .entry(gateway_key.clone())
            .or_insert_with(|| gateway.spec.listeners.iter().map(Identity::of).collect());
        let mut fragment =
            Fragment::new(origin("ListenerSet", &set.metadata), created(&set.metadata));
        for entry in &set.spec.listeners {
            let Some(listener) = as_gateway_listener(entry) else {
                continue;
            };
            let identity = Identity::of(&listener);
            let conflict = taken.iter().find_map(|t| identity.conflict_with(t));
            let mut resolved_listener = match conflict {
                // Resolved apart, so that a listener that is not served installs no
                // certificate.
                Some(reason) => {
                    let mut scratch = fragment.clone();
                    let mut l = resolve(&owner, &listener, objects, settings, &mut scratch, now);
                    let message = "an earlier listener of the Gateway has this port and \
                                   protocol, or hostname";
                    l.lose(reason, message, generation, now);
                    l
                }
                None => {
                    let l = resolve(&owner, &listener, objects, settings, &mut fragment, now);
                    if l.programmed {
                        taken.push(identity);
                    }
                    l
                }
            };
            resolved_listener.backend_client_certificate = backend_certificate.clone();
            resolved.push(resolved_listener);
        }
        if !fragment.is_empty() {
            out.fragments
                .insert(fragment_key("ListenerSet", key), Arc::new(fragment));
        }
    }
}

/// Whether `gateway` takes ListenerSets from `namespace` (none unless it says so).
fn allowed(gateway: &Gateway, namespace: &str, objects: &GatewayObjects<'_>) -> bool {
    let Some(namespaces) = gateway
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    else {
        return false;
    };
    match namespaces.from {
        None | Some(GatewayAllowedListenersNamespacesFrom::None) => false,
        Some(GatewayAllowedListenersNamespacesFrom::All) => true,
        Some(GatewayAllowedListenersNamespacesFrom::Same) => {
            gateway.metadata.namespace.as_deref() == Some(namespace)
        }
        Some(GatewayAllowedListenersNamespacesFrom::Selector) => {
            // The generated selector type has the shape of a LabelSelector.
            let selector: Option<LabelSelector> = namespaces
                .selector
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| serde_json::from_value(v).ok());
            let labels = objects
                .namespaces
                .get(&(String::new(), namespace.to_string()))
                .and_then(|ns| ns.metadata.labels.clone())
                .unwrap_or_default();
            selector.is_some_and(|s| super::selector_matches(&s, &labels))
        }
    }
}

/// A ListenerSet's listener as a Gateway's: the two have the same fields.
fn as_gateway_listener(
    entry: &super::api::listenersets::ListenerSetListeners,
) -> Option<GatewayListeners> {
    let value = serde_json::to_value(entry).ok()?;
    match serde_json::from_value(value) {
        Ok(listener) => Some(listener),
        Err(e) => {
            log::warn!(
                "gateway controller: ListenerSet listener {}: {e}",
                entry.name
            );
            None
        }
    }
}

/// What two listeners of one Gateway must not share.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    port: i32,
    /// HTTP; HTTPS and TLS passed through (both over TLS, told apart by server name); TLS
    /// terminated (by a tcp listener of its own); TCP; UDP; others.
    family: String,
    /// Lower-case; `None`: any host.
    hostname: Option<String>,
}

impl Identity {
    fn of(listener: &GatewayListeners) -> Self {
        let passthrough = listener
            .tls
            .as_ref()
            .and_then(|t| t.mode.as_ref())
            .is_some_and(|m| *m == GatewayListenersTlsMode::Passthrough);
        let family = match listener.protocol.as_str() {
            "HTTPS" => "TLS",
            "TLS" if passthrough => "TLS",
            "TLS" => "TLS terminated",
            other => other,
        };
        Self {
            port: listener.port,
            family: family.to_string(),
            hostname: listener.hostname.as_deref().map(str::to_ascii_lowercase),
        }
    }

    /// The reason a listener like `self` cannot join after `earlier`, if any.
    fn conflict_with(&self, earlier: &Identity) -> Option<&'static str> {
        if self.port != earlier.port {
            None
        } else if self.family != earlier.family {
            Some("ProtocolConflict")
        } else if self.hostname == earlier.hostname {
            Some("HostnameConflict")
        } else {
            None
        }
    }
}

/// The status of each ListenerSet with listeners in `resolved`, and by Gateway how many
/// sets it has accepted (`attachedListenerSets`).
pub fn finish_listener_sets(
    resolved: &[ResolvedListener],
    objects: &GatewayObjects<'_>,
    now: &Time,
    out: &mut Translation,
) -> BTreeMap<ObjectKey, i32> {
    let mut by_set: BTreeMap<&ObjectKey, Vec<&ResolvedListener>> = BTreeMap::new();
    for listener in resolved {
        if let Some(set) = &listener.set {
            by_set.entry(set).or_default().push(listener);
        }
    }
    let mut attached: BTreeMap<ObjectKey, i32> = BTreeMap::new();
    for (key, listeners) in by_set {
        let Some(set) = objects.listener_sets.get(key) else {
            continue;
        };
        let generation = set.metadata.generation;
        let served = listeners.iter().filter(|l| l.programmed).count();
        let conditions = if served > 0 {
            if let Some(first) = listeners.first() {
                *attached.entry(first.gateway.clone()).or_default() += 1;
            }
            vec![
                condition("Accepted", true, "Accepted", "", generation, now),
                condition("Programmed", true, "Programmed", "", generation, now),
            ]
        } else {
            let message = format!("none of its {} listeners is served", listeners.len());
            vec![
                condition(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    message.clone(),
                    generation,
                    now,
                ),
                condition(
                    "Programmed",
                    false,
                    "ListenersNotValid",
                    message,
                    generation,
                    now,
                ),
            ]
        };
        let listener_status = listeners
            .iter()
            .map(|l| ListenerSetStatusListeners {
                attached_routes: l.attached,
                conditions: l.conditions().to_vec(),
                name: l.name.clone(),
                supported_kinds: Some(
                    l.kinds
                        .iter()
                        .map(|k| ListenerSetStatusListenersSupportedKinds {
                            group: Some(GROUP.into()),
                            kind: k.name().into(),
                        })
                        .collect(),
                ),
            })
            .collect();
        out.listener_sets.insert(
            key.clone(),
            ListenerSetStatus {
                conditions: Some(conditions),
                listeners: Some(listener_status),
            },
        );
    }
    attached
}
