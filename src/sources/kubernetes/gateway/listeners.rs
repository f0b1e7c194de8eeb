//! GatewayClasses and Gateways: which are sluice's, which sluice listener serves each
//! Gateway listener, which routes each may take, the certificates of HTTPS listeners, and
//! their status conditions.

use super::attach::{host_match, is_narrower};
use super::conditions::{condition, outcome};
use super::{created, fragment_key, granted, origin, GatewayObjects, ObjectKey, Translation};
use crate::model::{
    ClientCertificate, ClientValidation, Fragment, GatewayListenerKind, GatewaySettings,
    ListenerCertificate, ListenerClientValidation, PublishAddress, ReservedHost, ServerNameScope,
};
use crate::sources::kubernetes::secrets::{certificate_of, client_certificate_of};
use crate::sources::kubernetes::services::published_addresses;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::api::gatewayclasses::GatewayClassStatus;
use super::api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersTlsMode, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds, GatewayTlsFrontendDefaultValidationMode,
    GatewayTlsFrontendPerPortTlsValidationMode,
};

/// The route kinds sluice serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
}

impl RouteKind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
        }
    }

    /// The kind named `kind`.
    pub fn named(kind: &str) -> Option<Self> {
        [
            RouteKind::Http,
            RouteKind::Grpc,
            RouteKind::Tls,
            RouteKind::Tcp,
        ]
        .into_iter()
        .find(|k| k.name() == kind)
    }
}

/// Which namespaces' routes a listener takes.
#[derive(Debug, Clone)]
enum AllowedNamespaces {
    Same,
    All,
    Selector(LabelSelector),
}

/// A listener of an accepted Gateway, resolved to the sluice listener that serves it.
#[derive(Debug, Clone)]
pub struct ResolvedListener {
    /// The Gateway it serves (its own listener, or one of its ListenerSets').
    pub gateway: ObjectKey,
    /// The ListenerSet it belongs to; `None`: the Gateway's own.
    pub set: Option<ObjectKey>,
    pub name: String,
    pub port: u16,
    /// Lower-case; `None`: any host.
    pub hostname: Option<String>,
    /// The sluice listener serving it; `None`: the listener is not accepted (no routes
    /// attach).
    pub sluice_listener: Option<String>,
    /// Accepted with its references resolved and no conflict: its routes are served.
    pub programmed: bool,
    pub kind: Option<GatewayListenerKind>,
    pub kinds: Vec<RouteKind>,
    namespaces: AllowedNamespaces,
    /// Routes attached so far.
    pub attached: i32,
    /// The certificate its Gateway presents to backends that ask (`spec.tls.backend`),
    /// resolved once per Gateway; `Err` is the Gateway's `ResolvedRefs` refusal.
    pub backend_client_certificate: BackendCertificate,
    conditions: Vec<Condition>,
}

impl ResolvedListener {
    /// Its conditions.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Not served: it conflicts with another listener of its Gateway for `reason`
    /// (`HostnameConflict`, `ProtocolConflict`), as `message` says.
    pub fn lose(&mut self, reason: &str, message: &str, generation: Option<i64>, now: &Time) {
        self.programmed = false;
        self.sluice_listener = None;
        self.conditions
            .retain(|c| !matches!(c.type_.as_str(), "Accepted" | "Programmed" | "Conflicted"));
        for (type_, status) in [
            ("Accepted", false),
            ("Programmed", false),
            ("Conflicted", true),
        ] {
            self.conditions
                .push(condition(type_, status, reason, message, generation, now));
        }
    }

    /// The object that declares it: its ListenerSet, else its Gateway.
    pub fn owner(&self) -> &ObjectKey {
        self.set.as_ref().unwrap_or(&self.gateway)
    }

    /// Whether a route of `kind` in `namespace` may attach (its namespace's labels are in
    /// `objects`).
    pub fn admits(&self, kind: RouteKind, namespace: &str, objects: &GatewayObjects<'_>) -> bool {
        if !self.kinds.contains(&kind) {
            return false;
        }
        match &self.namespaces {
            AllowedNamespaces::Same => self.owner().0 == namespace,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(selector) => objects
                .namespaces
                .get(&(String::new(), namespace.to_string()))
                .is_some_and(|ns| {
                    let labels = ns.metadata.labels.clone().unwrap_or_default();
                    super::selector_matches(selector, &labels)
                }),
        }
    }
}

/// The GatewayClasses of sluice's controller: their status (Accepted) goes into `out`;
/// returns their names.
pub fn classes(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for ((_, name), class) in objects.classes {
        if class.spec.controller_name != settings.controller_name {
            continue;
        }
        let generation = class.metadata.generation;
        let conditions = vec![
            condition("Accepted", true, "Accepted", "", generation, now),
            condition(
                "SupportedVersion",
                true,
                "SupportedVersion",
                "Gateway API v1.6",
                generation,
                now,
            ),
        ];
        out.classes.insert(
            name.clone(),
            GatewayClassStatus {
                conditions: Some(conditions),
                supported_features: None,
            },
        );
        accepted.insert(name.clone());
    }
    accepted
}

/// The listeners of the Gateways of `classes`; the Gateways' certificates become
/// fragments in `out`.
pub fn resolve_gateways(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    classes: &BTreeSet<String>,
    now: &Time,
    out: &mut Translation,
) -> Vec<ResolvedListener> {
    let mut resolved = Vec::new();
    for (key, gateway) in objects.gateways {
        if !classes.contains(&gateway.spec.gateway_class_name) {
            continue;
        }
        let parameters = gateway
            .spec
            .infrastructure
            .as_ref()
            .and_then(|i| i.parameters_ref.as_ref());
        let generation = gateway.metadata.generation;
        if let Some(parameters) = parameters {
            // sluice reads no parameters object: the Gateway is not served at all.
            let message = format!(
                "sluice takes no infrastructure parameters ({}/{} {})",
                parameters.group, parameters.kind, parameters.name
            );
            not_accepted(key, "InvalidParameters", message, generation, now, out);
            continue;
        }
        let unsupported: Vec<&str> = gateway
            .spec
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| a.r#type.as_deref())
            .filter(|t| !matches!(*t, "IPAddress" | "Hostname"))
            .collect();
        if !unsupported.is_empty() {
            let message = format!(
                "address types {unsupported:?} are not supported (IPAddress, Hostname are)"
            );
            not_accepted(key, "UnsupportedAddress", message, generation, now, out);
            continue;
        }
        let mut fragment = Fragment::new(
            origin("Gateway", &gateway.metadata),
            created(&gateway.metadata),
        );
        let mut mine: Vec<ResolvedListener> = gateway
            .spec
            .listeners
            .iter()
            .map(|l| {
                let owner = Owner {
                    gateway: key,
                    gateway_object: gateway,
                    set: None,
                    generation,
                };
                resolve(&owner, l, objects, settings, &mut fragment, now)
            })
            .collect();
        let identity = |l: &ResolvedListener, spec: &GatewayListeners| {
            (
                l.port,
                spec.protocol.clone(),
                l.hostname.clone().unwrap_or_default(),
            )
        };
        let mut counts: BTreeMap<(u16, String, String), usize> = BTreeMap::new();
        for (l, spec) in mine.iter().zip(&gateway.spec.listeners) {
            *counts.entry(identity(l, spec)).or_default() += 1;
        }
        for (l, spec) in mine.iter_mut().zip(&gateway.spec.listeners) {
            // Every listener of a conflict is left unserved.
            if counts.get(&identity(l, spec)).is_some_and(|n| *n > 1) {
                conflict(l, generation, now);
            }
        }
        // TLS terminated and passed through on one port: served only by a sluice listener
        // that does both (a `tcp` listener with `tls` and `sni_routing: true`), which
        // then takes every TLS listener of the port.
        let tls_on = |port: u16, kind: GatewayListenerKind| {
            mine.iter()
                .filter(move |l| l.port == port && l.kind == Some(kind))
                .map(|l| l.sluice_listener.as_deref())
        };
        let mixed: BTreeSet<u16> = mine
            .iter()
            .filter(|l| l.kind == Some(GatewayListenerKind::TlsTerminate))
            .map(|l| l.port)
            .filter(|port| {
                tls_on(*port, GatewayListenerKind::TlsPassthrough)
                    .next()
                    .is_some()
            })
            .filter(|port| {
                let mut served = tls_on(*port, GatewayListenerKind::TlsTerminate)
                    .chain(tls_on(*port, GatewayListenerKind::TlsPassthrough));
                let first = served.next().flatten();
                first.is_none() || served.any(|s| s != first)
            })
            .collect();
        for l in mine.iter_mut().filter(|l| {
            mixed.contains(&l.port)
                && matches!(
                    l.kind,
                    Some(GatewayListenerKind::TlsTerminate | GatewayListenerKind::TlsPassthrough)
                )
        }) {
            let message = "TLS is terminated and passed through on this port, and its sluice \
                           listener does not do both (a tcp listener with tls and sni_routing)";
            l.lose("ProtocolConflict", message, generation, now);
        }
        let certificate = backend_client_certificate(key, gateway, objects);
        for l in &mut mine {
            l.backend_client_certificate = certificate.clone();
        }
        resolved.extend(mine);
        if !fragment.is_empty() {
            out.fragments
                .insert(fragment_key("Gateway", key), Arc::new(fragment));
        }
    }
    super::listener_sets::resolve_listener_sets(
        objects,
        settings,
        classes,
        &mut resolved,
        now,
        out,
    );
    reserve_narrower_hostnames(objects, &resolved, out);
    resolved
}

/// Reserves, on its sluice listener, the hostname of each served HTTP or HTTPS listener
/// that a broader listener of its Gateway and port also takes (its ListenerSets'
/// included): a request for it is answered by its own routes only, 404 when it has none,
/// never by the broader listener's routes (listener isolation). The reservations go in
/// the Gateway's fragment.
fn reserve_narrower_hostnames(
    objects: &GatewayObjects<'_>,
    resolved: &[ResolvedListener],
    out: &mut Translation,
) {
    let serves_http = |l: &&ResolvedListener| {
        l.programmed
            && matches!(
                l.kind,
                Some(GatewayListenerKind::Http | GatewayListenerKind::Https)
            )
    };
    let mut reserved: BTreeMap<&ObjectKey, Vec<ReservedHost>> = BTreeMap::new();
    for narrow in resolved.iter().filter(serves_http) {
        let (Some(hostname), Some(listener)) = (&narrow.hostname, &narrow.sluice_listener) else {
            continue;
        };
        let broader = resolved
            .iter()
            .filter(serves_http)
            .any(|broad| is_narrower(narrow, broad));
        let host = ReservedHost {
            listener: listener.clone(),
            host: host_match(hostname),
        };
        let hosts = reserved.entry(&narrow.gateway).or_default();
        if broader && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    for (key, hosts) in reserved.into_iter().filter(|(_, h)| !h.is_empty()) {
        let Some(gateway) = objects.gateways.get(key) else {
            continue;
        };
        let fragment = out
            .fragments
            .entry(fragment_key("Gateway", key))
            .or_insert_with(|| {
                Arc::new(Fragment::new(
                    origin("Gateway", &gateway.metadata),
                    created(&gateway.metadata),
                ))
            });
        Arc::make_mut(fragment).reserved_hosts = hosts;
    }
}

/// What a Gateway presents to backends: `Ok(None)` when it names no certificate; `Err` is
/// its `ResolvedRefs` reason and message.
pub type BackendCertificate = Result<Option<Arc<ClientCertificate>>, (&'static str, String)>;

/// The certificate Gateway `key` presents to backends (`spec.tls.backend
/// .clientCertificateRef`, a TLS Secret, across namespaces with a ReferenceGrant).
fn backend_client_certificate(
    key: &ObjectKey,
    gateway: &Gateway,
    objects: &GatewayObjects<'_>,
) -> BackendCertificate {
    let Some(reference) = gateway
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
    else {
        return Ok(None);
    };
    let invalid = |message: String| ("InvalidClientCertificateRef", message);
    let group = reference.group.as_deref().unwrap_or_default();
    let kind = reference.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err(invalid(format!(
            "clientCertificateRef {group}/{kind} {} is not a Secret",
            reference.name
        )));
    }
    let namespace = reference.namespace.clone().unwrap_or_else(|| key.0.clone());
    if !granted(
        objects,
        "Gateway",
        &key.0,
        &namespace,
        "Secret",
        &reference.name,
    ) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {namespace} lets this Gateway use Secret {}",
                reference.name
            ),
        ));
    }
    let secret = objects
        .secrets
        .get(&(namespace.clone(), reference.name.clone()))
        .ok_or_else(|| {
            invalid(format!(
                "Secret {namespace}/{} not found (or not of type kubernetes.io/tls)",
                reference.name
            ))
        })?;
    let (chain, key) =
        client_certificate_of(secret, &namespace, &reference.name).map_err(invalid)?;
    Ok(Some(Arc::new(ClientCertificate { chain, key })))
}

/// The status of a Gateway that is not served at all: `Accepted=False` with `reason`.
fn not_accepted(
    key: &ObjectKey,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
    out: &mut Translation,
) {
    out.gateways.insert(
        key.clone(),
        GatewayStatus {
            addresses: None,
            attached_listener_sets: None,
            conditions: Some(vec![
                condition("Accepted", false, reason, message, generation, now),
                condition(
                    "Programmed",
                    false,
                    "Invalid",
                    "not accepted",
                    generation,
                    now,
                ),
            ]),
            listeners: None,
        },
    );
}

/// Marks `listener` as in conflict with another of its Gateway.
fn conflict(listener: &mut ResolvedListener, generation: Option<i64>, now: &Time) {
    listener.programmed = false;
    listener
        .conditions
        .retain(|c| c.type_ != "Conflicted" && c.type_ != "Programmed");
    listener.conditions.push(condition(
        "Conflicted",
        true,
        "HostnameConflict",
        "another listener of this Gateway has the same port, protocol and hostname",
        generation,
        now,
    ));
    listener.conditions.push(condition(
        "Programmed",
        false,
        "Invalid",
        "in conflict",
        generation,
        now,
    ));
}

/// The object that declares a listener: a Gateway, or a ListenerSet of one.
pub(super) struct Owner<'a> {
    /// The Gateway whose ports serve the listener.
    pub gateway: &'a ObjectKey,
    pub gateway_object: &'a Gateway,
    /// `None`: the Gateway's own listener.
    pub set: Option<&'a ObjectKey>,
    pub generation: Option<i64>,
}

impl Owner<'_> {
    fn key(&self) -> &ObjectKey {
        self.set.unwrap_or(self.gateway)
    }

    /// The kind a ReferenceGrant must let use the listener's certificates.
    fn kind(&self) -> &'static str {
        if self.set.is_some() {
            "ListenerSet"
        } else {
            "Gateway"
        }
    }
}

/// One listener: its sluice listener, route kinds, namespaces, certificates, conditions.
pub(super) fn resolve(
    owner: &Owner<'_>,
    listener: &GatewayListeners,
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    fragment: &mut Fragment,
    now: &Time,
) -> ResolvedListener {
    let generation = owner.generation;
    let gateway = owner.gateway_object;
    let key = owner.key();
    let port = u16::try_from(listener.port).unwrap_or(0);
    let mode = listener
        .tls
        .as_ref()
        .and_then(|t| t.mode.clone())
        .unwrap_or(GatewayListenersTlsMode::Terminate);
    let kind = match (listener.protocol.as_str(), mode.clone()) {
        ("HTTP", _) => Some(GatewayListenerKind::Http),
        ("HTTPS", GatewayListenersTlsMode::Terminate) => Some(GatewayListenerKind::Https),
        ("TLS", GatewayListenersTlsMode::Passthrough) => Some(GatewayListenerKind::TlsPassthrough),
        ("TLS", GatewayListenersTlsMode::Terminate) => Some(GatewayListenerKind::TlsTerminate),
        ("TCP", _) => Some(GatewayListenerKind::Tcp),
        _ => None,
    };
    let mut accepted: Result<(), (&str, String)> = Ok(());
    let mut resolved_refs: Result<(), (&str, String)> = Ok(());
    let sluice = match kind {
        None if accepted.is_err() => None,
        None => {
            accepted = Err((
                "UnsupportedProtocol",
                format!(
                    "protocol {} (TLS mode {mode:?}) is not supported",
                    listener.protocol
                ),
            ));
            None
        }
        Some(kind) => {
            let found = settings
                .ports_of(&owner.gateway.0, &owner.gateway.1)
                .iter()
                .find(|p| p.port == port && p.kind == kind);
            if found.is_none() {
                accepted = Err((
                    "PortUnavailable",
                    format!(
                        "no sluice listener serves port {port} for {} (gateway.listeners)",
                        kind.protocol()
                    ),
                ));
            }
            found.map(|p| p.listener.clone())
        }
    };
    let defaults: &[RouteKind] = match kind {
        Some(GatewayListenerKind::Http | GatewayListenerKind::Https) => {
            &[RouteKind::Http, RouteKind::Grpc]
        }
        Some(GatewayListenerKind::TlsPassthrough | GatewayListenerKind::TlsTerminate) => {
            &[RouteKind::Tls]
        }
        Some(GatewayListenerKind::Tcp) => &[RouteKind::Tcp],
        None => &[],
    };
    let allowed = listener.allowed_routes.as_ref();
    let kinds: Vec<RouteKind> = match allowed.and_then(|a| a.kinds.as_ref()) {
        None => defaults.to_vec(),
        Some(wanted) => {
            let mut kinds = Vec::new();
            for k in wanted {
                let group_ok = k.group.as_deref().is_none_or(|g| g == super::GROUP);
                match RouteKind::named(&k.kind).filter(|k| group_ok && defaults.contains(k)) {
                    Some(kind) => kinds.push(kind),
                    None => {
                        resolved_refs = Err((
                            "InvalidRouteKinds",
                            format!("route kind {} is not served on this listener", k.kind),
                        ))
                    }
                }
            }
            kinds
        }
    };
    let namespaces = allowed
        .and_then(|a| a.namespaces.as_ref())
        .map_or(AllowedNamespaces::Same, |n| match &n.from {
            Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => AllowedNamespaces::All,
            Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => {
                let selector = n.selector.as_ref().map(|s| LabelSelector {
                    match_labels: s.match_labels.clone(),
                    match_expressions: s.match_expressions.as_ref().map(|list| {
                        list.iter()
                            .map(|e| {
                                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                                    key: e.key.clone(),
                                    operator: e.operator.clone(),
                                    values: e.values.clone(),
                                }
                            })
                            .collect()
                    }),
                });
                AllowedNamespaces::Selector(selector.unwrap_or_default())
            }
            _ => AllowedNamespaces::Same,
        });
    let terminates = matches!(
        kind,
        Some(GatewayListenerKind::Https | GatewayListenerKind::TlsTerminate)
    );
    let mut client_validation = None;
    if terminates {
        // Serving without the client certificate checks the Gateway asks for would open
        // what it means to close: a listener that cannot have them is not accepted.
        let validation = frontend_validation(gateway, owner.gateway, port, objects);
        match validation {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) if kind == Some(GatewayListenerKind::TlsTerminate) => {
                if accepted.is_ok() {
                    accepted = Err((
                        "UnsupportedValue",
                        "spec.tls.frontend is not supported on TLS listeners".into(),
                    ));
                }
            }
            Ok(Some(_)) | Err(_) if !settings.is_dedicated(&owner.gateway.0, &owner.gateway.1) => {
                if accepted.is_ok() {
                    accepted = Err((
                        "UnsupportedValue",
                        "spec.tls.frontend needs sluice listeners of the Gateway's own \
                         (gateway.dedicated): a listener checks the client certificates of \
                         every name it serves"
                            .into(),
                    ));
                }
            }
            Ok(Some(validation)) => client_validation = Some(Arc::new(validation)),
            Err((reason, message)) => {
                resolved_refs = Err((reason, message.clone()));
                if accepted.is_ok() {
                    accepted = Err(("NoValidCACertificate", message));
                }
                // Fail closed: the port's clients get no handshake rather than no check.
                client_validation = Some(Arc::new(ClientValidation::refusing_all()));
            }
        }
    }
    if terminates {
        let refs = listener
            .tls
            .as_ref()
            .and_then(|t| t.certificate_refs.clone())
            .unwrap_or_default();
        let mut loaded = 0;
        for reference in &refs {
            let kind_ok = reference.group.as_deref().unwrap_or_default().is_empty()
                && reference.kind.as_deref().unwrap_or("Secret") == "Secret";
            let namespace = reference.namespace.clone().unwrap_or_else(|| key.0.clone());
            if !kind_ok {
                resolved_refs = Err((
                    "InvalidCertificateRef",
                    format!("certificateRef {} is not a Secret", reference.name),
                ));
                continue;
            }
            if !granted(
                objects,
                owner.kind(),
                &key.0,
                &namespace,
                "Secret",
                &reference.name,
            ) {
                resolved_refs = Err((
                    "RefNotPermitted",
                    format!(
                        "no ReferenceGrant in {namespace} lets this {} use Secret {}",
                        owner.kind(),
                        reference.name
                    ),
                ));
                continue;
            }
            let secret = objects
                .secrets
                .get(&(namespace.clone(), reference.name.clone()));
            let certificate = secret
                .ok_or_else(|| {
                    format!(
                        "Secret {namespace}/{} not found (or not of type kubernetes.io/tls)",
                        reference.name
                    )
                })
                .and_then(|s| certificate_of(s, &namespace, &reference.name));
            match (certificate, &sluice) {
                (Ok(certificate), Some(sluice_listener)) => {
                    fragment.certificates.push(ListenerCertificate {
                        listener: sluice_listener.clone(),
                        origin: fragment.origin.clone(),
                        certificate,
                    });
                    loaded += 1;
                }
                (Ok(_), None) => {}
                (Err(e), _) => resolved_refs = Err(("InvalidCertificateRef", e)),
            }
        }
        if refs.is_empty() {
            resolved_refs = Err((
                "InvalidCertificateRef",
                "an HTTPS listener needs certificateRefs".into(),
            ));
        } else if loaded == 0 && resolved_refs.is_ok() && sluice.is_some() {
            resolved_refs = Err(("InvalidCertificateRef", "no certificate loaded".into()));
        }
    }
    if let (Some(validation), Some(sluice_listener)) = (&client_validation, &sluice) {
        let other = fragment
            .client_validations
            .iter()
            .find(|v| v.listener == *sluice_listener && v.validation != *validation);
        if other.is_some() {
            accepted = Err((
                "UnsupportedValue",
                format!(
                    "another port of the Gateway served by sluice listener {sluice_listener} \
                     validates client certificates differently"
                ),
            ));
        } else {
            fragment.client_validations.push(ListenerClientValidation {
                listener: sluice_listener.clone(),
                origin: fragment.origin.clone(),
                validation: Arc::clone(validation),
            });
        }
    }
    let programmed = accepted.is_ok() && (resolved_refs.is_ok() || !terminates);
    if let (Some(GatewayListenerKind::Https), Some(sluice_listener), true) =
        (kind, &sluice, accepted.is_ok())
    {
        fragment.server_name_scopes.push(ServerNameScope {
            listener: sluice_listener.clone(),
            hostname: listener
                .hostname
                .as_deref()
                .map(|h| super::attach::host_match(&h.to_ascii_lowercase())),
        });
    }
    let mut conditions = vec![
        outcome("Accepted", &accepted, "Accepted", generation, now),
        outcome(
            "ResolvedRefs",
            &resolved_refs,
            "ResolvedRefs",
            generation,
            now,
        ),
        condition("Conflicted", false, "NoConflicts", "", generation, now),
    ];
    conditions.push(if programmed {
        condition("Programmed", true, "Programmed", "", generation, now)
    } else {
        condition(
            "Programmed",
            false,
            "Invalid",
            "not served",
            generation,
            now,
        )
    });
    ResolvedListener {
        backend_client_certificate: Ok(None),
        gateway: owner.gateway.clone(),
        set: owner.set.cloned(),
        name: listener.name.clone(),
        port,
        hostname: listener.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        sluice_listener: sluice.filter(|_| accepted.is_ok()),
        programmed,
        kind,
        kinds,
        namespaces,
        attached: 0,
        conditions,
    }
}

/// The client certificate checks `gateway` (`key`) asks of its listeners on `port`
/// (`spec.tls.frontend`: the port's own, else the default); `Ok(None)` when none. An
/// unusable CA reference is `Err` with the listener's `ResolvedRefs` reason.
fn frontend_validation(
    gateway: &Gateway,
    key: &ObjectKey,
    port: u16,
    objects: &GatewayObjects<'_>,
) -> Result<Option<ClientValidation>, (&'static str, String)> {
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return Ok(None);
    };
    // (group, kind, name, namespace) of each reference, and the mode.
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port));
    let (refs, insecure_fallback): (Vec<_>, bool) = match per_port {
        Some(per_port) => match &per_port.tls.validation {
            None => return Ok(None),
            Some(v) => (
                v.ca_certificate_refs
                    .iter()
                    .map(|r| (&r.group, &r.kind, &r.name, &r.namespace))
                    .collect(),
                v.mode == Some(GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback),
            ),
        },
        None => match &frontend.default.validation {
            None => return Ok(None),
            Some(v) => (
                v.ca_certificate_refs
                    .iter()
                    .map(|r| (&r.group, &r.kind, &r.name, &r.namespace))
                    .collect(),
                v.mode == Some(GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback),
            ),
        },
    };
    let mut ca_certificates = Vec::new();
    for (group, kind, name, namespace) in refs {
        if !group.is_empty() || kind != "ConfigMap" {
            return Err((
                "InvalidCACertificateKind",
                format!("caCertificateRef {kind} {name} is not a ConfigMap"),
            ));
        }
        let namespace = namespace.as_deref().unwrap_or(&key.0);
        if !granted(objects, "Gateway", &key.0, namespace, "ConfigMap", name) {
            return Err((
                "RefNotPermitted",
                format!("no ReferenceGrant in {namespace} lets this Gateway use ConfigMap {name}"),
            ));
        }
        let found = super::backend_tls::ca_certificates(objects.config_maps, namespace, name)
            .map_err(|e| ("InvalidCACertificateRef", e))?;
        ca_certificates.extend(found);
    }
    if ca_certificates.is_empty() {
        return Err((
            "InvalidCACertificateRef",
            "spec.tls.frontend names no CA certificate".into(),
        ));
    }
    Ok(Some(ClientValidation {
        ca_certificates,
        insecure_fallback,
    }))
}

/// Whether any client certificate check of `gateway` is `AllowInsecureFallback`.
fn insecure_fallback(gateway: &Gateway) -> bool {
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let default = frontend
        .default
        .validation
        .as_ref()
        .and_then(|v| v.mode.as_ref());
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .filter_map(|p| p.tls.validation.as_ref()?.mode.as_ref());
    default == Some(&GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback)
        || per_port
            .into_iter()
            .any(|m| *m == GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback)
}

/// The Gateways' status, with the routes attached to each listener.
pub fn finish_gateways(
    objects: &GatewayObjects<'_>,
    settings: &GatewaySettings,
    resolved: &[ResolvedListener],
    now: &Time,
    out: &mut Translation,
) {
    let attached_sets = super::listener_sets::finish_listener_sets(resolved, objects, now, out);
    let mut by_gateway: BTreeMap<&ObjectKey, Vec<&ResolvedListener>> = BTreeMap::new();
    for listener in resolved.iter().filter(|l| l.set.is_none()) {
        by_gateway
            .entry(&listener.gateway)
            .or_default()
            .push(listener);
    }
    for (key, listeners) in by_gateway {
        let Some(gateway) = objects.gateways.get(key) else {
            continue;
        };
        let generation = gateway.metadata.generation;
        let (addresses, unusable) =
            gateway_addresses(gateway, objects, settings.publish_of(&key.0, &key.1));
        let programmed = listeners.iter().filter(|l| l.programmed).count();
        let accepted = listeners
            .iter()
            .filter(|l| l.sluice_listener.is_some())
            .count();
        // Accepted while any listener is; `ListenersNotValid` says some are not.
        // Resolved with the listeners: the same for each of them.
        let Some(client_certificate) = listeners.first().map(|l| &l.backend_client_certificate)
        else {
            continue;
        };
        let mut conditions = vec![if programmed == listeners.len() {
            condition("Accepted", true, "Accepted", "", generation, now)
        } else {
            condition(
                "Accepted",
                accepted > 0,
                "ListenersNotValid",
                format!(
                    "{} of {} listeners are not served",
                    listeners.len() - programmed,
                    listeners.len()
                ),
                generation,
                now,
            )
        }];
        // Only a Gateway that names references of its own has the condition.
        if !matches!(client_certificate, Ok(None)) {
            let resolved = client_certificate
                .as_ref()
                .map(|_| ())
                .map_err(Clone::clone);
            conditions.push(outcome(
                "ResolvedRefs",
                &resolved,
                "ResolvedRefs",
                generation,
                now,
            ));
        }
        if insecure_fallback(gateway) {
            conditions.push(condition(
                "InsecureFrontendValidationMode",
                true,
                "ConfigurationChanged",
                "spec.tls.frontend admits clients without a valid certificate \
                 (AllowInsecureFallback)",
                generation,
                now,
            ));
        }
        conditions.push(if !unusable.is_empty() {
            condition(
                "Programmed",
                false,
                "AddressNotUsable",
                format!(
                    "{unusable:?} {} not among the addresses sluice is reached on (gateway.publish)",
                    if unusable.len() == 1 { "is" } else { "are" }
                ),
                generation,
                now,
            )
        } else if programmed > 0 {
            condition("Programmed", true, "Programmed", "", generation, now)
        } else {
            condition(
                "Programmed",
                false,
                "Invalid",
                "no listener is served",
                generation,
                now,
            )
        });
        let listener_status = listeners
            .iter()
            .map(|l| GatewayStatusListeners {
                attached_routes: l.attached,
                conditions: l.conditions.clone(),
                name: l.name.clone(),
                supported_kinds: Some(
                    l.kinds
                        .iter()
                        .map(|k| GatewayStatusListenersSupportedKinds {
                            group: Some(super::GROUP.into()),
                            kind: k.name().into(),
                        })
                        .collect(),
                ),
            })
            .collect();
        out.gateways.insert(
            key.clone(),
            GatewayStatus {
                addresses,
                attached_listener_sets: attached_sets.get(key).copied(),
                conditions: Some(conditions),
                listeners: Some(listener_status),
            },
        );
    }
}

/// The Gateway's `status.addresses` and the addresses it asks for that sluice is not
/// reached on. sluice cannot take an address a Gateway asks for: those of `publish`
/// (`gateway.publish`, or the Gateway's own in `gateway.dedicated`) are usable, and a
/// request without a value takes them all.
fn gateway_addresses(
    gateway: &Gateway,
    objects: &GatewayObjects<'_>,
    publish: Option<&PublishAddress>,
) -> (Option<Vec<GatewayStatusAddresses>>, Vec<String>) {
    let published = publish
        .and_then(|publish| {
            published_addresses(publish, |namespace, name| {
                objects
                    .services
                    .get(&(namespace.to_string(), name.to_string()))
            })
        })
        .unwrap_or_default();
    let entry = |address: &str, r#type: Option<&str>| GatewayStatusAddresses {
        r#type: Some(
            r#type
                .unwrap_or(if address.parse::<std::net::IpAddr>().is_ok() {
                    "IPAddress"
                } else {
                    "Hostname"
                })
                .into(),
        ),
        value: address.to_string(),
    };
    let requested: Vec<(&str, Option<&str>)> = gateway
        .spec
        .addresses
        .iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a.value.as_deref().filter(|v| !v.is_empty())?,
                a.r#type.as_deref(),
            ))
        })
        .collect();
    if requested.is_empty() {
        let all: Vec<GatewayStatusAddresses> = published.iter().map(|a| entry(a, None)).collect();
        return ((!all.is_empty()).then_some(all), Vec::new());
    }
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for (value, r#type) in requested {
        if published.iter().any(|p| p.eq_ignore_ascii_case(value)) {
            usable.push(entry(value, r#type));
        } else {
            unusable.push(value.to_string());
        }
    }
    ((!usable.is_empty()).then_some(usable), unusable)
}
