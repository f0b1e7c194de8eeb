//! BackendTLSPolicy (GEP-1897, Gateway API v1.6.1 standard): which Service ports sluice
//! reaches over TLS, with which server name and trust anchors, and each policy's status per
//! Gateway.
//!
//! A policy targets Services of its own namespace, whole or one port by name
//! (`sectionName`). [`resolve`] judges every policy once per translation (CA certificates
//! come from ConfigMaps, key `ca.crt`, or from the system's trust store with
//! `wellKnownCACertificates: System`) and settles which policy applies to each target: the
//! oldest, then the first by name; the others are `Conflicted` there. A port's own policy
//! takes precedence over its Service's, without conflict. Routes ask
//! [`BackendTls::backend`] what each Service backend they resolve gets; the lookup records
//! the use, from which [`statuses`] lists each policy's ancestors: the Gateways of sluice's
//! that accept a route using a targeted port.
//!
//! sluice sends `validation.hostname` as SNI and verifies the backend's certificate chain
//! against the policy's CAs, and its names against that hostname or, if the policy lists
//! `subjectAltNames`, against those instead (a DNS name matching a Hostname entry, a URI
//! equal to a URI entry). A policy that cannot be met never falls back to plaintext: its
//! backends are invalid references of their routes (requests that would reach them are
//! answered 500), as the HTTPRoute specification orders for a backend whose
//! BackendTLSPolicy the implementation cannot meet.
//!
//! TLSRoute backends are left alone: their connections carry the client's own TLS
//! (passthrough). TCPRoute backends of a policy are refused: sluice relays TCP
//! connections as they are and cannot originate TLS on them.

use super::api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyStatus, BackendTlsPolicyStatusAncestors,
    BackendTlsPolicyStatusAncestorsAncestorRef, BackendTlsPolicyValidation,
    BackendTlsPolicyValidationSubjectAltNamesType,
};
use super::attach::Refusal;
use super::conditions::{condition, outcome};
use super::listeners::RouteKind;
use super::{created, GatewayObjects, ObjectKey, Translation, GROUP};
use crate::model::{GatewaySettings, SubjectAltName, UpstreamTls};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The ConfigMap key holding a PEM CA bundle.
pub const CA_KEY: &str = "ca.crt";

/// The only well-known CA set sluice knows: the system's trust store.
const SYSTEM_CAS: &str = "System";

/// Most ancestors a policy's status lists (the CRD's `maxItems`).
pub const MAX_ANCESTORS: usize = 16;

/// The ResolvedRefs reason of a route whose backend's BackendTLSPolicy cannot be met (the
/// specification names none; the message says which policy and why).
pub const INVALID_POLICY: &str = "InvalidBackendTLSPolicy";

/// A Service, or one of its ports by name, that policies target. Policies target Services
/// of their own namespace, so a target's namespace is its policies' too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub namespace: String,
    pub service: String,
    /// The Service port's name (`sectionName`); `None`: every port.
    pub section: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.section {
            Some(port) => write!(
                f,
                "port {port} of Service {}/{}",
                self.namespace, self.service
            ),
            None => write!(f, "Service {}/{}", self.namespace, self.service),
        }
    }
}

/// What the backends of a target get from the policy that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// TLS as the policy says.
    Tls(UpstreamTls),
    /// The policy cannot be met (why, naming it): connections must fail rather than go
    /// in plaintext.
    Refused(String),
}

/// What [`resolve`] found out about one policy: the same on every ancestor, except how its
/// targets stand there ([`statuses`]).
#[derive(Debug, Clone)]
struct Judgement {
    generation: Option<i64>,
    /// `Err`: not accepted anywhere (`Invalid`, `NoValidCACertificate`).
    valid: Result<(), Refusal>,
    /// `Err`: some caCertificateRef cannot be used (`InvalidKind`, `InvalidCACertificateRef`).
    refs: Result<(), Refusal>,
    /// Targets whose Service has no port named by their `sectionName`.
    missing: BTreeSet<Target>,
    /// Said in the Accepted condition of an accepted policy (what sluice ignores).
    note: String,
}

/// A Service backend a route resolved, recorded by [`BackendTls::backend`]; the route
/// cache keeps a route's uses with its translation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    kind: RouteKind,
    route: ObjectKey,
    namespace: String,
    service: String,
    /// The name of the Service port the backend uses ("" for an unnamed port).
    port_name: String,
}

/// The policies of a translation, judged, and what each target's backends get.
#[derive(Debug, Default)]
pub struct BackendTls {
    /// Per target, the policies claiming it: the one that applies first.
    claims: BTreeMap<Target, Vec<ObjectKey>>,
    /// What the backends of each policy's targets get.
    applied: BTreeMap<ObjectKey, Applied>,
    judgements: BTreeMap<ObjectKey, Judgement>,
    /// By Service (`namespace`, `name`): the targets naming no port of it, with their
    /// policy.
    missing: BTreeMap<ObjectKey, Vec<(ObjectKey, Target)>>,
    /// The Services some policy targets: only their backends are recorded.
    targeted: BTreeSet<ObjectKey>,
    /// The backends routes resolved on targeted Services since the last
    /// [`BackendTls::take_uses`]. Routes borrow the lookup from several places while they
    /// are translated; what they record is the translation's own bookkeeping.
    uses: RefCell<Vec<Use>>,
}

impl BackendTls {
    /// The uses recorded since the last call: those of the route just translated.
    pub fn take_uses(&self) -> Vec<Use> {
        self.uses.take()
    }

    /// What a backend on port `port` of Service `service` (`namespace`/`name`) gets in
    /// route `route` of `kind`: `None` for plain connections. HTTPRoute and GRPCRoute uses
    /// are recorded for the policies' status. TLSRoute backends get nothing (their
    /// connections carry the client's TLS); TCPRoute backends are answered but not
    /// recorded: the route refuses them, sluice cannot originate TLS on a TCP relay.
    pub fn backend(
        &self,
        kind: RouteKind,
        route: &ObjectKey,
        namespace: &str,
        name: &str,
        service: &Service,
        port: u16,
    ) -> Option<&Applied> {
        if kind == RouteKind::Tls
            || !self
                .targeted
                .contains(&(namespace.to_string(), name.to_string()))
        {
            return None;
        }
        let port_name = port_name(service, port);
        let target = self.target_of(namespace, name, &port_name);
        if kind != RouteKind::Tcp {
            self.uses.borrow_mut().push(Use {
                kind,
                route: route.clone(),
                namespace: namespace.to_string(),
                service: name.to_string(),
                port_name,
            });
        }
        let winner = self.claims.get(&target?)?.first()?;
        self.applied.get(winner)
    }

    /// The target whose policies decide for the port named `port_name` of Service
    /// `namespace/service`: the port's own if a policy claims it, else the Service's.
    fn target_of(&self, namespace: &str, service: &str, port_name: &str) -> Option<Target> {
        let port = Target {
            namespace: namespace.to_string(),
            service: service.to_string(),
            section: Some(port_name.to_string()),
        };
        if !port_name.is_empty() && self.claims.contains_key(&port) {
            return Some(port);
        }
        let whole = Target {
            section: None,
            ..port
        };
        self.claims.contains_key(&whole).then_some(whole)
    }
}

/// Judges every BackendTLSPolicy of `objects` and settles which applies to each target;
/// run before the routes, which ask the result what their backends get.
pub fn resolve(objects: &GatewayObjects<'_>) -> BackendTls {
    resolve_policies(
        objects.backend_tls_policies,
        objects.config_maps,
        objects.services,
    )
}

/// Judges every policy of `policies` (CA bundles from `config_maps`) and settles which
/// applies to each target; targets are looked up in `services`.
fn resolve_policies(
    policies: &BTreeMap<ObjectKey, BackendTlsPolicy>,
    config_maps: &BTreeMap<ObjectKey, ConfigMap>,
    services: &BTreeMap<ObjectKey, Service>,
) -> BackendTls {
    let mut tls = BackendTls::default();
    let mut claimants: BTreeMap<Target, Vec<(i64, ObjectKey)>> = BTreeMap::new();
    for (key, policy) in policies {
        let (mut judgement, applied) = judge(key, policy, config_maps);
        // No creation time (never from an API server): after every policy that has one.
        let since = created(&policy.metadata).unwrap_or(i64::MAX);
        for target in targets(key, policy) {
            let service_key = (target.namespace.clone(), target.service.clone());
            // A missing Service is `TargetNotFound`, with no ancestor to say it on: no
            // route can use a Service that does not exist.
            let Some(service) = services.get(&service_key) else {
                continue;
            };
            tls.targeted.insert(service_key.clone());
            let found = target
                .section
                .as_deref()
                .is_none_or(|section| has_port_named(service, section));
            if !found {
                tls.missing
                    .entry(service_key)
                    .or_default()
                    .push((key.clone(), target.clone()));
                judgement.missing.insert(target);
                continue;
            }
            claimants
                .entry(target)
                .or_default()
                .push((since, key.clone()));
        }
        tls.applied.insert(key.clone(), applied);
        tls.judgements.insert(key.clone(), judgement);
    }
    for (target, mut list) in claimants {
        // The oldest first, then by name: the claimants share the target's namespace, so
        // their names order them as `{namespace}/{name}` does.
        list.sort();
        list.dedup();
        tls.claims
            .insert(target, list.into_iter().map(|(_, key)| key).collect());
    }
    tls
}

/// The Services (or Service ports) a policy targets. Targets of other kinds are not
/// sluice's to serve (implementation-specific in the specification) and are skipped.
fn targets(key: &ObjectKey, policy: &BackendTlsPolicy) -> Vec<Target> {
    policy
        .spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .map(|t| Target {
            namespace: key.0.clone(),
            service: t.name.clone(),
            section: t.section_name.clone().filter(|s| !s.is_empty()),
        })
        .collect()
}

/// A policy's verdict, and what its targets' backends get.
fn judge(
    key: &ObjectKey,
    policy: &BackendTlsPolicy,
    config_maps: &BTreeMap<ObjectKey, ConfigMap>,
) -> (Judgement, Applied) {
    let (namespace, name) = key;
    let validation = &policy.spec.validation;
    let hostname = validation
        .hostname
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let well_known = validation
        .well_known_ca_certificates
        .as_deref()
        .filter(|w| !w.is_empty());
    let mut anchors = Vec::new();
    let mut loaded = Vec::new();
    let mut problems: Vec<Refusal> = Vec::new();
    for reference in refs {
        if !reference.group.is_empty() || reference.kind != "ConfigMap" {
            let kind = if reference.group.is_empty() {
                reference.kind.clone()
            } else {
                format!("{}/{}", reference.group, reference.kind)
            };
            problems.push((
                "InvalidKind",
                format!(
                    "caCertificateRef {} is a {kind}: sluice reads CA certificates from \
                     ConfigMaps (group \"\") only",
                    reference.name
                ),
            ));
            continue;
        }
        match ca_certificates(config_maps, namespace, &reference.name) {
            Ok(certificates) => {
                anchors.extend(certificates);
                loaded.push(reference.name.as_str());
            }
            Err(e) => problems.push(("InvalidCACertificateRef", e)),
        }
    }
    let all_problems = problems
        .iter()
        .map(|(_, message)| message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    // The first problem's reason; the message lists them all.
    let refs_verdict = match problems.first() {
        None => Ok(()),
        Some((reason, _)) => Err((*reason, all_problems.clone())),
    };
    let verdict = validity(
        &hostname,
        validation,
        well_known,
        refs.is_empty(),
        loaded.is_empty(),
        &all_problems,
    );
    let (valid, subject_alt_names) = match verdict {
        Ok(names) => (Ok(()), names),
        Err(refusal) => (Err(refusal), Vec::new()),
    };
    let options: Vec<&str> = policy
        .spec
        .options
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let note = if options.is_empty() {
        String::new()
    } else {
        format!("options are ignored: {}", options.join(", "))
    };
    let applied = match &valid {
        Ok(()) => Applied::Tls(UpstreamTls {
            sni: hostname,
            verify: true,
            // Where the anchors come from, for /config and logs; the certificates
            // themselves are below (empty: the system's trust store).
            ca_file: (!loaded.is_empty())
                .then(|| PathBuf::from(format!("configmap:{namespace}/{}", loaded.join(",")))),
            ca_certificates: anchors,
            subject_alt_names,
            // The Gateway's (`spec.tls.backend`), once the route is attached.
            client_certificate: None,
        }),
        Err((_, message)) => Applied::Refused(format!(
            "BackendTLSPolicy {namespace}/{name} is not accepted: {message}"
        )),
    };
    let judgement = Judgement {
        generation: policy.metadata.generation,
        valid,
        refs: refs_verdict,
        missing: BTreeSet::new(),
        note,
    };
    (judgement, applied)
}

/// Whether the policy can be met at all: a hostname, one source of trust anchors that
/// sluice knows, at least one usable CA certificate, and well-formed subject alternative
/// names (returned). `problems` describes the unusable caCertificateRefs.
fn validity(
    hostname: &str,
    validation: &BackendTlsPolicyValidation,
    well_known: Option<&str>,
    no_refs: bool,
    none_loaded: bool,
    problems: &str,
) -> Result<Vec<SubjectAltName>, Refusal> {
    let invalid = |message: String| Err(("Invalid", message));
    if hostname.is_empty() {
        return invalid("validation.hostname is empty".into());
    }
    match (no_refs, well_known) {
        (false, Some(_)) => {
            return invalid(
                "caCertificateRefs and wellKnownCACertificates exclude each other".into(),
            )
        }
        (true, None) => return invalid("set caCertificateRefs or wellKnownCACertificates".into()),
        (true, Some(SYSTEM_CAS)) => {}
        (true, Some(other)) => {
            return invalid(format!(
                "wellKnownCACertificates {other:?} is not supported: sluice knows System \
                 (its trust store)"
            ))
        }
        (false, None) if none_loaded => {
            return Err((
                "NoValidCACertificate",
                format!("no caCertificateRef can be used: {problems}"),
            ))
        }
        (false, None) => {}
    }
    subject_alt_names(validation)
}

/// The policy's subjectAltNames, which the backend's certificate is verified against
/// instead of the hostname (still sent as SNI): the hostname "MUST NOT be used for
/// authentication" when they are set. An entry without its name (the CRD's rules forbid
/// it; an object that skipped them) is refused rather than dropped, which would leave the
/// hostname to authenticate.
fn subject_alt_names(
    validation: &BackendTlsPolicyValidation,
) -> Result<Vec<SubjectAltName>, Refusal> {
    validation
        .subject_alt_names
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, san)| {
            let missing = |what: &str| ("Invalid", format!("subjectAltNames[{i}] has no {what}"));
            match san.r#type {
                BackendTlsPolicyValidationSubjectAltNamesType::Hostname => san
                    .hostname
                    .as_deref()
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| SubjectAltName::Dns(h.trim_end_matches('.').to_ascii_lowercase()))
                    .ok_or_else(|| missing("hostname")),
                BackendTlsPolicyValidationSubjectAltNamesType::Uri => san
                    .uri
                    .as_deref()
                    .filter(|u| !u.is_empty())
                    .map(|u| SubjectAltName::Uri(u.to_string()))
                    .ok_or_else(|| missing("uri")),
            }
        })
        .collect()
}

/// The DER certificates of the `ca.crt` of ConfigMap `namespace/name`.
pub(super) fn ca_certificates(
    config_maps: &BTreeMap<ObjectKey, ConfigMap>,
    namespace: &str,
    name: &str,
) -> Result<Vec<Vec<u8>>, String> {
    let what = format!("ConfigMap {namespace}/{name}");
    // The controller keeps only ConfigMaps with a `ca.crt`: one without is not found.
    let config_map = config_maps
        .get(&(namespace.to_string(), name.to_string()))
        .ok_or_else(|| format!("{what} not found (or it has no {CA_KEY})"))?;
    let pem = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CA_KEY))
        .map(|text| text.as_bytes().to_vec())
        .or_else(|| {
            config_map
                .binary_data
                .as_ref()
                .and_then(|data| data.get(CA_KEY))
                .map(|bytes| bytes.0.clone())
        })
        .ok_or_else(|| format!("{what} has no {CA_KEY}"))?;
    crate::tls::parse_ca_certificates(&pem, &format!("{what} {CA_KEY}"))
}

/// The name of port number `port` of `service` ("" if it has none, or no such port).
fn port_name(service: &Service, port: u16) -> String {
    service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == i32::from(port))
        .and_then(|p| p.name.clone())
        .unwrap_or_default()
}

/// Whether `service` has a port named `name`.
fn has_port_named(service: &Service, name: &str) -> bool {
    service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .any(|p| p.name.as_deref() == Some(name))
}

/// The status of each policy with an ancestor: a Gateway of sluice's that accepts a route
/// (HTTPRoute, GRPCRoute) using a port the policy targets (`uses`), read from the routes'
/// statuses in `out`. Policies without one get none (the writer removes sluice's old
/// entries).
pub fn statuses<'u>(
    tls: &BackendTls,
    uses: impl IntoIterator<Item = &'u Use>,
    out: &Translation,
    settings: &GatewaySettings,
    now: &Time,
) -> BTreeMap<ObjectKey, BackendTlsPolicyStatus> {
    // Policy → Gateway → the policy's targets through which routes of the Gateway use it.
    let mut reached: BTreeMap<ObjectKey, BTreeMap<ObjectKey, BTreeSet<Target>>> = BTreeMap::new();
    if tls.claims.is_empty() && tls.missing.is_empty() {
        // No policy applies anywhere: no route's uses need reading.
        return BTreeMap::new();
    }
    for used in uses {
        let gateways = accepting_gateways(out, used.kind, &used.route);
        if gateways.is_empty() {
            continue;
        }
        let mut contenders: Vec<(ObjectKey, Target)> = Vec::new();
        if let Some(target) = tls.target_of(&used.namespace, &used.service, &used.port_name) {
            for policy in tls.claims.get(&target).into_iter().flatten() {
                contenders.push((policy.clone(), target.clone()));
            }
        }
        // A policy naming no port of the Service is reported where the Service is used.
        let service = (used.namespace.clone(), used.service.clone());
        contenders.extend(tls.missing.get(&service).into_iter().flatten().cloned());
        for (policy, target) in contenders {
            let by_gateway = reached.entry(policy).or_default();
            for gateway in &gateways {
                by_gateway
                    .entry(gateway.clone())
                    .or_default()
                    .insert(target.clone());
            }
        }
    }
    let mut statuses = BTreeMap::new();
    for (policy, gateways) in reached {
        let Some(judgement) = tls.judgements.get(&policy) else {
            continue;
        };
        let generation = judgement.generation;
        let ancestors = gateways
            .into_iter()
            .take(MAX_ANCESTORS)
            .map(|((namespace, name), targets)| {
                let accepted = match standing(tls, &policy, judgement, &targets) {
                    Ok(()) => condition(
                        "Accepted",
                        true,
                        "Accepted",
                        judgement.note.clone(),
                        generation,
                        now,
                    ),
                    Err((reason, message)) => {
                        condition("Accepted", false, reason, message, generation, now)
                    }
                };
                let resolved = outcome(
                    "ResolvedRefs",
                    &judgement.refs,
                    "ResolvedRefs",
                    generation,
                    now,
                );
                BackendTlsPolicyStatusAncestors {
                    ancestor_ref: BackendTlsPolicyStatusAncestorsAncestorRef {
                        group: Some(GROUP.into()),
                        kind: Some("Gateway".into()),
                        name,
                        namespace: Some(namespace),
                        port: None,
                        section_name: None,
                    },
                    conditions: vec![accepted, resolved],
                    controller_name: settings.controller_name.clone(),
                }
            })
            .collect();
        statuses.insert(policy, BackendTlsPolicyStatus { ancestors });
    }
    statuses
}

/// A policy's Accepted verdict on one ancestor, reached through `targets`: invalid
/// everywhere, a target naming no port, a target another policy takes, or accepted.
fn standing(
    tls: &BackendTls,
    policy: &ObjectKey,
    judgement: &Judgement,
    targets: &BTreeSet<Target>,
) -> Result<(), Refusal> {
    judgement.valid.clone()?;
    if let Some(target) = targets.iter().find(|t| judgement.missing.contains(*t)) {
        return Err((
            "TargetNotFound",
            format!(
                "Service {}/{} has no port named {}",
                target.namespace,
                target.service,
                target.section.as_deref().unwrap_or_default()
            ),
        ));
    }
    for target in targets {
        let Some(winner) = tls.claims.get(target).and_then(|c| c.first()) else {
            continue;
        };
        if winner != policy {
            return Err((
                "Conflicted",
                format!(
                    "BackendTLSPolicy {}/{} applies to {target}: it is older (or, created \
                     at the same time, first by name)",
                    winner.0, winner.1
                ),
            ));
        }
    }
    Ok(())
}

/// The Gateways (sluice's) that accept route `route` of `kind`, from its status in `out`.
fn accepting_gateways(
    out: &Translation,
    kind: RouteKind,
    route: &ObjectKey,
) -> BTreeSet<ObjectKey> {
    let statuses = match kind {
        RouteKind::Http => &out.http_routes,
        RouteKind::Grpc => &out.grpc_routes,
        RouteKind::Tls => &out.tls_routes,
        RouteKind::Tcp => &out.tcp_routes,
    };
    statuses
        .get(route)
        .into_iter()
        .flat_map(|status| status.parents.iter())
        .filter(|parent| {
            parent
                .conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True")
        })
        .map(|parent| {
            let namespace = parent
                .parent_ref
                .namespace
                .clone()
                .unwrap_or_else(|| route.0.clone());
            (namespace, parent.parent_ref.name.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::kubernetes::gateway::tests::{now, object, settings};
    use serde_json::json;
    use std::sync::Arc;

    /// A fresh CA's certificate, PEM.
    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("CA certificate").pem()
    }

    /// Owned objects for [`resolve`]: Service `web` in `apps` (ports `https` 8443 and
    /// `http` 8080) and ConfigMap `ca` holding a CA.
    struct Objects {
        policies: BTreeMap<ObjectKey, BackendTlsPolicy>,
        config_maps: BTreeMap<ObjectKey, ConfigMap>,
        services: BTreeMap<ObjectKey, Service>,
    }

    impl Objects {
        fn new() -> Self {
            let mut o = Self {
                policies: BTreeMap::new(),
                config_maps: BTreeMap::new(),
                services: BTreeMap::new(),
            };
            o.services.insert(
                ("apps".into(), "web".into()),
                object(json!({"metadata": {"name": "web", "namespace": "apps"},
                    "spec": {"ports": [{"name": "https", "port": 8443}, {"name": "http", "port": 8080}]}})),
            );
            o.config_map("ca", json!({"ca.crt": ca_pem()}));
            o
        }

        fn config_map(&mut self, name: &str, data: serde_json::Value) {
            self.config_maps.insert(
                ("apps".into(), name.into()),
                object(json!({"metadata": {"name": name, "namespace": "apps"}, "data": data})),
            );
        }

        /// Policy `name`, created at `second`, targeting `target` (a targetRef), with
        /// `validation`.
        fn policy(
            &mut self,
            name: &str,
            second: u32,
            target: serde_json::Value,
            validation: serde_json::Value,
        ) {
            self.policies.insert(
                ("apps".into(), name.into()),
                object(json!({
                    "metadata": {"name": name, "namespace": "apps", "generation": 4,
                                 "creationTimestamp": format!("2026-01-01T00:00:{second:02}Z")},
                    "spec": {"targetRefs": [target], "validation": validation},
                })),
            );
        }

        fn resolve(&self) -> BackendTls {
            resolve_policies(&self.policies, &self.config_maps, &self.services)
        }

        fn service(&self) -> &Service {
            &self.services[&("apps".to_string(), "web".to_string())]
        }
    }

    fn web(section: Option<&str>) -> serde_json::Value {
        match section {
            Some(s) => json!({"group": "", "kind": "Service", "name": "web", "sectionName": s}),
            None => json!({"group": "", "kind": "Service", "name": "web"}),
        }
    }

    fn with_ca(hostname: &str) -> serde_json::Value {
        json!({"hostname": hostname,
               "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]})
    }

    fn route() -> ObjectKey {
        ("apps".into(), "r".into())
    }

    /// What an HTTPRoute backend on `port` of `web` gets.
    fn applied(tls: &BackendTls, o: &Objects, port: u16) -> Option<Applied> {
        tls.backend(RouteKind::Http, &route(), "apps", "web", o.service(), port)
            .cloned()
    }

    /// Route `apps/r` accepted by Gateway `infra/gw`.
    fn translation() -> Translation {
        let mut out = Translation::default();
        out.http_routes.insert(
            route(),
            Arc::new(object(json!({"parents": [{
                "controllerName": crate::model::DEFAULT_GATEWAY_CONTROLLER,
                "parentRef": {"name": "gw", "namespace": "infra"},
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                "message": "", "lastTransitionTime": "1970-01-01T00:00:00Z"}],
            }]}))),
        );
        out
    }

    /// (status, reason) of condition `type_` of policy `name`'s ancestor `infra/gw`.
    fn on_gateway(
        statuses: &BTreeMap<ObjectKey, BackendTlsPolicyStatus>,
        name: &str,
        type_: &str,
    ) -> (String, String) {
        let status = statuses
            .get(&("apps".to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no status for {name}: {statuses:?}"));
        let ancestor = &status.ancestors[0];
        assert_eq!(ancestor.ancestor_ref.name, "gw");
        assert_eq!(ancestor.ancestor_ref.namespace.as_deref(), Some("infra"));
        assert_eq!(ancestor.ancestor_ref.kind.as_deref(), Some("Gateway"));
        assert_eq!(ancestor.ancestor_ref.section_name, None);
        let c = ancestor
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {:?}", ancestor.conditions));
        assert_eq!(c.observed_generation, Some(4));
        (c.status.clone(), c.reason.clone())
    }

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_string(), reason.to_string())
    }

    #[test]
    fn a_port_policy_sends_the_hostname_and_trusts_its_configmap() {
        let mut o = Objects::new();
        o.policy("p", 1, web(Some("https")), with_ca("Abc.Example.com"));
        let tls = o.resolve();
        let Some(Applied::Tls(upstream)) = applied(&tls, &o, 8443) else {
            panic!("port 8443 gets no TLS");
        };
        assert_eq!(upstream.sni, "abc.example.com");
        assert!(upstream.verify);
        assert_eq!(upstream.ca_certificates.len(), 1);
        assert_eq!(
            upstream.ca_file.as_deref(),
            Some(std::path::Path::new("configmap:apps/ca"))
        );
        // The other port is not targeted.
        assert_eq!(applied(&tls, &o, 8080), None);
        let statuses = statuses(&tls, &tls.take_uses(), &translation(), &settings(), &now());
        assert_eq!(
            on_gateway(&statuses, "p", "Accepted"),
            pair("True", "Accepted")
        );
        assert_eq!(
            on_gateway(&statuses, "p", "ResolvedRefs"),
            pair("True", "ResolvedRefs")
        );
    }

    #[test]
    fn the_system_trust_store_is_the_well_known_set() {
        let mut o = Objects::new();
        o.policy(
            "p",
            1,
            web(None),
            json!({"hostname": "abc.example.com", "wellKnownCACertificates": "System"}),
        );
        let tls = o.resolve();
        let Some(Applied::Tls(upstream)) = applied(&tls, &o, 8080) else {
            panic!("no TLS");
        };
        assert!(
            upstream.ca_certificates.is_empty(),
            "empty: the system's store"
        );
        assert_eq!(upstream.ca_file, None);
    }

    #[test]
    fn the_oldest_policy_wins_and_a_port_policy_wins_over_its_service() {
        let mut o = Objects::new();
        // Created in the same second: the first by name wins.
        o.policy("b-newer", 5, web(None), with_ca("b.example.com"));
        o.policy("a-older", 5, web(None), with_ca("a.example.com"));
        o.policy("c-old", 1, web(None), with_ca("c.example.com"));
        o.policy("port", 9, web(Some("https")), with_ca("port.example.com"));
        let tls = o.resolve();
        let sni = |port| match applied(&tls, &o, port) {
            Some(Applied::Tls(t)) => t.sni,
            other => panic!("{other:?}"),
        };
        assert_eq!(sni(8443), "port.example.com");
        assert_eq!(sni(8080), "c.example.com");
        let statuses = statuses(&tls, &tls.take_uses(), &translation(), &settings(), &now());
        assert_eq!(
            on_gateway(&statuses, "c-old", "Accepted"),
            pair("True", "Accepted")
        );
        assert_eq!(
            on_gateway(&statuses, "port", "Accepted"),
            pair("True", "Accepted")
        );
        for loser in ["a-older", "b-newer"] {
            assert_eq!(
                on_gateway(&statuses, loser, "Accepted"),
                pair("False", "Conflicted"),
                "{loser}"
            );
        }
    }

    #[test]
    fn a_tie_in_time_goes_to_the_first_name() {
        let mut o = Objects::new();
        o.policy(
            "conflicted-2",
            3,
            web(Some("https")),
            with_ca("abc.example.com"),
        );
        o.policy(
            "conflicted-1",
            3,
            web(Some("https")),
            with_ca("other.example.com"),
        );
        let tls = o.resolve();
        assert!(matches!(
            applied(&tls, &o, 8443),
            Some(Applied::Tls(t)) if t.sni == "other.example.com"
        ));
    }

    #[test]
    fn refusals_carry_the_specified_reasons() {
        let valid_ref = json!({"group": "", "kind": "ConfigMap", "name": "ca"});
        let cases = [
            // A ConfigMap that does not exist.
            (
                json!({"hostname": "abc.example.com",
                       "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "nope"}]}),
                ("False", "NoValidCACertificate"),
                ("False", "InvalidCACertificateRef"),
            ),
            // A ConfigMap without ca.crt, and one whose ca.crt is empty.
            (
                json!({"hostname": "abc.example.com",
                       "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "empty"}]}),
                ("False", "NoValidCACertificate"),
                ("False", "InvalidCACertificateRef"),
            ),
            (
                json!({"hostname": "abc.example.com",
                       "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "blank"}]}),
                ("False", "NoValidCACertificate"),
                ("False", "InvalidCACertificateRef"),
            ),
            // Not a ConfigMap.
            (
                json!({"hostname": "abc.example.com",
                       "caCertificateRefs": [{"group": "invalid.io", "kind": "InvalidKind", "name": "x"}]}),
                ("False", "NoValidCACertificate"),
                ("False", "InvalidKind"),
            ),
            // One usable reference is enough to be accepted.
            (
                json!({"hostname": "abc.example.com",
                       "caCertificateRefs": [valid_ref, {"group": "", "kind": "ConfigMap", "name": "nope"}]}),
                ("True", "Accepted"),
                ("False", "InvalidCACertificateRef"),
            ),
            // A well-known set sluice does not know.
            (
                json!({"hostname": "abc.example.com", "wellKnownCACertificates": "example.com/cas"}),
                ("False", "Invalid"),
                ("True", "ResolvedRefs"),
            ),
            // Subject alternative names, checked instead of the hostname.
            (
                json!({"hostname": "abc.example.com", "caCertificateRefs": [valid_ref],
                       "subjectAltNames": [{"type": "URI", "uri": "spiffe://abc.example.com/test-identity"}]}),
                ("True", "Accepted"),
                ("True", "ResolvedRefs"),
            ),
            // An entry without its name is refused, not dropped.
            (
                json!({"hostname": "abc.example.com", "caCertificateRefs": [valid_ref],
                       "subjectAltNames": [{"type": "Hostname"}]}),
                ("False", "Invalid"),
                ("True", "ResolvedRefs"),
            ),
        ];
        for (validation, accepted, resolved) in cases {
            let mut o = Objects::new();
            o.config_map("empty", json!({}));
            o.config_map("blank", json!({"ca.crt": ""}));
            o.policy("p", 1, web(None), validation.clone());
            let tls = o.resolve();
            let served = applied(&tls, &o, 8443);
            let statuses = statuses(&tls, &tls.take_uses(), &translation(), &settings(), &now());
            assert_eq!(
                on_gateway(&statuses, "p", "Accepted"),
                pair(accepted.0, accepted.1),
                "{validation}"
            );
            assert_eq!(
                on_gateway(&statuses, "p", "ResolvedRefs"),
                pair(resolved.0, resolved.1),
                "{validation}"
            );
            // A policy that is not accepted is never met in plaintext.
            match accepted.0 {
                "True" => assert!(matches!(served, Some(Applied::Tls(_))), "{validation}"),
                _ => assert!(matches!(served, Some(Applied::Refused(_))), "{validation}"),
            }
        }
    }

    #[test]
    fn subject_alt_names_replace_the_hostname_in_verification() {
        let mut o = Objects::new();
        let mut validation = with_ca("abc.example.com");
        validation["subjectAltNames"] = json!([
            {"type": "URI", "uri": "spiffe://abc.example.com/test-identity"},
            {"type": "Hostname", "hostname": "Other.Example.com."},
        ]);
        o.policy("p", 1, web(None), validation);
        let tls = o.resolve();
        let Some(Applied::Tls(upstream)) = applied(&tls, &o, 8443) else {
            panic!("no TLS");
        };
        assert_eq!(upstream.sni, "abc.example.com");
        assert_eq!(
            upstream.subject_alt_names,
            [
                SubjectAltName::Uri("spiffe://abc.example.com/test-identity".into()),
                SubjectAltName::Dns("other.example.com".into()),
            ]
        );
        // Without the field, the hostname is what is checked.
        let mut o = Objects::new();
        o.policy("p", 1, web(None), with_ca("abc.example.com"));
        let tls = o.resolve();
        let Some(Applied::Tls(upstream)) = applied(&tls, &o, 8443) else {
            panic!("no TLS");
        };
        assert!(upstream.subject_alt_names.is_empty());
    }

    #[test]
    fn a_section_naming_no_port_is_target_not_found_where_the_service_is_used() {
        let mut o = Objects::new();
        o.policy("p", 1, web(Some("grpc")), with_ca("abc.example.com"));
        let tls = o.resolve();
        assert_eq!(applied(&tls, &o, 8443), None);
        let statuses = statuses(&tls, &tls.take_uses(), &translation(), &settings(), &now());
        assert_eq!(
            on_gateway(&statuses, "p", "Accepted"),
            pair("False", "TargetNotFound")
        );
    }

    #[test]
    fn passthrough_backends_are_left_alone_and_only_accepting_gateways_are_ancestors() {
        let mut o = Objects::new();
        o.policy("p", 1, web(None), with_ca("abc.example.com"));
        let tls = o.resolve();
        assert_eq!(
            tls.backend(RouteKind::Tls, &route(), "apps", "web", o.service(), 8443),
            None
        );
        // Recorded for a route no Gateway accepts: no ancestor, no status.
        assert!(applied(&tls, &o, 8443).is_some());
        let mut out = translation();
        let status = out.http_routes.get_mut(&route()).expect("route");
        for parent in &mut Arc::make_mut(status).parents {
            for c in &mut parent.conditions {
                c.status = "False".into();
            }
        }
        assert!(statuses(&tls, &tls.take_uses(), &out, &settings(), &now()).is_empty());
    }

    #[test]
    fn untargeted_services_are_not_recorded() {
        let mut o = Objects::new();
        o.services.insert(
            ("apps".into(), "other".into()),
            object(json!({"metadata": {"name": "other", "namespace": "apps"},
                "spec": {"ports": [{"name": "https", "port": 443}]}})),
        );
        o.policy("p", 1, web(None), with_ca("abc.example.com"));
        let tls = o.resolve();
        let other = &o.services[&("apps".to_string(), "other".to_string())];
        assert_eq!(
            tls.backend(RouteKind::Http, &route(), "apps", "other", other, 443),
            None
        );
        assert!(tls.take_uses().is_empty());
    }
}
