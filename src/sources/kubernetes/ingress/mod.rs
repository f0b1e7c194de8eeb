//! Ingress objects (networking.k8s.io/v1) with ingress-nginx annotations, translated into
//! one [`Fragment`] each.
//!
//! The translation is a pure function of the Ingress, what it references (Services,
//! Secrets, the canary Ingresses of its namespace) and the `ingress:` settings, so the
//! controller, the admission webhook and `sluice ingress check` share it. Each rule path
//! becomes a route on the http listener and, for hosts with a `tls` section, one on the
//! https listener; each Service port a backend becomes an upstream of the Ingress's own.
//! What does not fit is said in the [`Report`]: an error rejects the object, a warning is
//! served through, a difference from ingress-nginx is listed for the migration report.

pub mod annotations;
pub mod class;
mod objects;
mod report;

use crate::model::{
    Auth, AuthFailure, BalancePolicy, BasicAuth, Canary, CanaryHeader,
    ClientCertificateRequirement, EndpointConfig, EndpointSource, ErrorPage, ErrorPages,
    ExternalAuth, Fragment, HashKey, HostMatch, HttpsRedirect, IngressSettings,
    ListenerCertificate, Origin, PageSource, PathMatch, PathRewrite, RateLimit, Redirect,
    RedirectStatus, RetryMethods, RetryPolicy, RouteClientCa, RouteConfig, ServicePort,
    UpstreamConfig, UpstreamTls, ValueMatch,
};
use crate::model::{Htpasswd, LimitKey, UpstreamProtocol};
use crate::sources::kubernetes::secrets::{certificate_of, secret_bytes, secret_keys};
use crate::sources::kubernetes::services::{dns_source, slices_source};
use crate::tls::parse_ca_certificates;
use annotations::{Annotations, AuthSecretType};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressServiceBackend};
pub use objects::{key_of, ObjectKey, ObjectSet};
use regex::Regex;
pub use report::{Reason, Report};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The kind name in origins, Events and reports.
pub const KIND: &str = "Ingress";

/// What a translation may look up besides the Ingress.
pub trait Cluster {
    fn service(&self, namespace: &str, name: &str) -> Option<&Service>;
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret>;
    /// The claimed Ingresses of `namespace` (canaries are found among them).
    fn ingresses(&self, namespace: &str) -> Vec<&Ingress>;
}

/// What to do with a Service or Secret that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum References {
    /// Reject the object (the controller and the webhook).
    Strict,
    /// Assume it exists (the migration report of a file of Ingresses alone).
    Assumed,
}

/// The fragment of one Ingress and what was made of it.
#[derive(Debug, Clone)]
pub struct Translation {
    pub fragment: Fragment,
    pub report: Report,
}

/// Translates `ingress`.
pub fn translate(
    ingress: &Ingress,
    cluster: &dyn Cluster,
    settings: &IngressSettings,
    references: References,
) -> Translation {
    let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
    let name = ingress.metadata.name.clone().unwrap_or_default();
    let origin = Origin::Object {
        kind: KIND.into(),
        namespace: namespace.clone(),
        name: name.clone(),
        generation: ingress.metadata.generation.unwrap_or(1),
    };
    let created = ingress
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    let annotations = annotations::parse(&ingress.metadata.annotations.clone().unwrap_or_default());
    let mut t = Translator {
        namespace,
        name,
        origin: origin.clone(),
        cluster,
        settings,
        references,
        fragment: Fragment::new(origin, created),
        report: Report::new(format!(
            "{KIND} {}/{}",
            ingress.metadata.namespace.as_deref().unwrap_or_default(),
            ingress.metadata.name.as_deref().unwrap_or_default()
        )),
        annotations,
        tls_hosts: Vec::new(),
        aliases_used: BTreeSet::new(),
    };
    if settings.passthrough_listener.is_none() {
        for r in &mut t.annotations.reports {
            if r.name == "ssl-passthrough" && matches!(r.outcome, annotations::Outcome::Mapped(_)) {
                r.outcome = annotations::Outcome::Unsupported(
                    "TLS passthrough is off: name a tcp listener with sni_routing in \
                     ingress.passthrough_listener"
                        .into(),
                );
            }
        }
        t.annotations.ssl_passthrough = false;
    }
    t.report.annotations = t.annotations.reports.clone();
    for r in &t.annotations.reports {
        if r.outcome.rejects() {
            let reason = match r.outcome {
                annotations::Outcome::Refused(_) => Reason::RefusedAnnotation,
                _ => Reason::InvalidAnnotation,
            };
            t.report.error(
                reason,
                format!("annotation {}: {}", r.name, r.outcome.detail()),
            );
        }
    }
    t.run(ingress);
    Translation {
        fragment: t.fragment,
        report: t.report,
    }
}

/// The state of one translation.
struct Translator<'a> {
    namespace: String,
    name: String,
    origin: Origin,
    cluster: &'a dyn Cluster,
    settings: &'a IngressSettings,
    references: References,
    fragment: Fragment,
    report: Report,
    annotations: Annotations,
    /// Hosts with a TLS section whose certificate loaded (or is the listener's default).
    tls_hosts: Vec<HostMatch>,
    /// `server-alias` names given out: (listener, alias, path key).
    aliases_used: BTreeSet<(String, String, String)>,
}

/// A rule path, for routes and canary matching.
struct RulePath<'i> {
    host: Option<&'i str>,
    path: String,
    path_type: String,
    backend: &'i IngressBackend,
}

fn rule_paths(ingress: &Ingress) -> Vec<(usize, usize, RulePath<'_>)> {
    let mut out = Vec::new();
    let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or_default();
        for (j, path) in paths.iter().enumerate() {
            out.push((
                i,
                j,
                RulePath {
                    host: rule.host.as_deref().filter(|h| !h.is_empty()),
                    path: path.path.clone().unwrap_or_else(|| "/".into()),
                    path_type: path.path_type.clone(),
                    backend: &path.backend,
                },
            ));
        }
    }
    out
}

impl Translator<'_> {
    fn run(&mut self, ingress: &Ingress) {
        if self.annotations.canary {
            self.report.serves.push(
                "canary: its backends join the routes of the Ingress of this namespace with \
                 the same host and path"
                    .into(),
            );
            let served = self.canary_has_main(ingress);
            if !served {
                self.report.warn(
                    "no Ingress of this namespace serves the same host and path: the canary \
                     has no effect"
                        .into(),
                );
            }
            return;
        }
        self.load_tls(ingress);
        let spec = ingress.spec.as_ref();
        let rule_paths = rule_paths(ingress);
        let regex_paths = self.annotations.use_regex || self.annotations.rewrite_target.is_some();
        for (i, j, rule_path) in &rule_paths {
            let Some(upstream) = self.backend_upstream(rule_path.backend, &self.name.clone())
            else {
                continue;
            };
            let Some(path) = self.path_match(&rule_path.path, &rule_path.path_type, regex_paths)
            else {
                continue;
            };
            let host = rule_path.host.map(host_match);
            let canary = self.canary_for(rule_path);
            let route_name = format!("{}/{}/{i}/{j}", self.namespace, self.name);
            self.add_routes(
                &route_name,
                host,
                Some(path),
                &rule_path.path,
                &upstream,
                canary,
            );
        }
        // As ingress-nginx: an Ingress without rules makes its default backend the one of
        // hosts no rule names; one with rules, the `/` of its own hosts that have none.
        if let Some(backend) = spec.and_then(|s| s.default_backend.as_ref()) {
            if let Some(upstream) = self.backend_upstream(backend, &self.name.clone()) {
                let has_rules = spec
                    .and_then(|s| s.rules.as_ref())
                    .is_some_and(|r| !r.is_empty());
                if !has_rules {
                    let route_name = format!("{}/{}/default", self.namespace, self.name);
                    self.add_routes(&route_name, None, None, "/", &upstream, None);
                }
                let hosts: BTreeSet<&str> =
                    rule_paths.iter().filter_map(|(_, _, p)| p.host).collect();
                for host in hosts {
                    let has_root = rule_paths.iter().any(|(_, _, p)| {
                        p.host == Some(host) && p.path == "/" && p.path_type != "Exact"
                    });
                    if !has_root {
                        let route_name = format!("{}/{}/default/{host}", self.namespace, self.name);
                        let root = Some(PathMatch::Prefix("/".into()));
                        self.add_routes(
                            &route_name,
                            Some(host_match(host)),
                            root,
                            "/",
                            &upstream,
                            None,
                        );
                    }
                }
            }
        }
        if self.annotations.from_to_www {
            self.www_redirects(&rule_paths);
        }
        // Its backends resolved above: a missing Service is reported once.
        if self.annotations.ssl_passthrough && self.report.errors.is_empty() {
            self.passthrough_routes(&rule_paths);
        }
        if self.fragment.routes.is_empty() && self.report.errors.is_empty() {
            self.report
                .warn("no rules and no defaultBackend: nothing to serve".into());
        }
        self.differences(&rule_paths);
    }

    /// `ssl-passthrough`: a route by server name on the passthrough listener for each host
    /// with a `/` path, to that path's Service as a tcp upstream (ingress-nginx passes
    /// through the root location's backend only, and only for named hosts).
    fn passthrough_routes(&mut self, rule_paths: &[(usize, usize, RulePath)]) {
        let Some(listener) = self.settings.passthrough_listener.clone() else {
            return;
        };
        let mut served = BTreeSet::new();
        for (i, _, rule_path) in rule_paths {
            let Some(host) = rule_path.host else {
                continue;
            };
            let Some(service) = rule_path.backend.service.as_ref() else {
                continue;
            };
            if rule_path.path != "/" || served.contains(host) {
                continue;
            }
            let result = port_ref(service).and_then(|port| {
                let upstream_name = format!(
                    "{}/{}/passthrough/{}:{port}",
                    self.namespace, self.name, service.name
                );
                let exists = self
                    .fragment
                    .upstreams
                    .iter()
                    .any(|u| u.name == upstream_name);
                if !exists {
                    let mut upstream =
                        self.service_upstream(&upstream_name, &service.name, port)?;
                    upstream.protocol = UpstreamProtocol::Tcp;
                    self.fragment.upstreams.push(Arc::new(upstream));
                }
                Ok(upstream_name)
            });
            let upstream = match result {
                Ok(upstream) => upstream,
                Err((reason, message)) => {
                    self.report.error(reason, message);
                    return;
                }
            };
            let route_name = format!("{}/{}/{i}/passthrough", self.namespace, self.name);
            let mut route =
                RouteConfig::new(&route_name, self.origin.clone(), &listener, &upstream);
            route.hosts = vec![host_match(host)];
            self.fragment.routes.push(Arc::new(route));
            self.report
                .serves
                .push(format!("tls://{host} (passthrough) -> {upstream}"));
            served.insert(host);
        }
        let hosts: BTreeSet<&str> = rule_paths.iter().filter_map(|(_, _, p)| p.host).collect();
        for host in hosts.difference(&served) {
            self.report.warn(format!(
                "ssl-passthrough: host {host} has no / path, so its TLS is not passed through \
                 (as in ingress-nginx)"
            ));
        }
        if rule_paths.iter().any(|(_, _, p)| p.host.is_none()) {
            self.report.warn(
                "ssl-passthrough: rules without a host have no server name to route by; they \
                 are served over plain HTTP only"
                    .into(),
            );
        }
    }

    /// Loads the certificates of the `tls` sections.
    fn load_tls(&mut self, ingress: &Ingress) {
        let sections = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
        let mut loaded = BTreeSet::new();
        for section in sections.into_iter().flatten() {
            let hosts: Vec<HostMatch> = section
                .hosts
                .iter()
                .flatten()
                .map(|h| host_match(h))
                .collect();
            let Some(listener) = self.settings.https_listener.clone() else {
                self.report.warn(
                    "a tls section, but no ingress.https_listener: served over http only".into(),
                );
                continue;
            };
            let Some(secret_name) = section.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                self.report.warn(format!(
                    "tls section for {} names no Secret: the https listener's default \
                     certificate is used",
                    host_list(&hosts)
                ));
                self.tls_hosts.extend(hosts);
                continue;
            };
            let certificate = match self.cluster.secret(&self.namespace, secret_name) {
                Some(secret) => certificate_of(secret, &self.namespace, secret_name),
                None if self.references == References::Assumed => {
                    self.report.warn(format!(
                        "Secret {}/{secret_name} is not in the input: assumed to hold a \
                         certificate",
                        self.namespace
                    ));
                    self.tls_hosts.extend(hosts);
                    continue;
                }
                None => Err(format!("Secret {}/{secret_name} not found", self.namespace)),
            };
            match certificate {
                Ok(certificate) => {
                    if loaded.insert(secret_name.to_string()) {
                        self.fragment.certificates.push(ListenerCertificate {
                            listener: listener.clone(),
                            origin: self.origin.clone(),
                            certificate,
                        });
                    }
                    self.tls_hosts.extend(hosts);
                }
                // As ingress-nginx: the hosts stay served (cert-manager's HTTP-01 challenge
                // needs them before the Secret exists), with the default certificate.
                Err(e) => self.report.warn(format!(
                    "{e}: {} served with the https listener's default certificate and \
                     without the https redirect",
                    host_list(&hosts)
                )),
            }
        }
    }

    /// Whether `host` has TLS.
    fn has_tls(&self, host: Option<&HostMatch>) -> bool {
        match host {
            None => false,
            Some(host) => self.tls_hosts.iter().any(|tls| covers(tls, host)),
        }
    }

    /// The routes of one rule path (or the default backend): on the http listener, and on
    /// the https listener when the host has TLS (or, for hostless routes, whenever there is
    /// an https listener).
    fn add_routes(
        &mut self,
        name: &str,
        host: Option<HostMatch>,
        path: Option<PathMatch>,
        written_path: &str,
        upstream: &str,
        canary: Option<Canary>,
    ) {
        let tls = self.has_tls(host.as_ref());
        let https_listener = self.settings.https_listener.clone();
        let on_https = https_listener.filter(|_| tls || host.is_none());
        let mut listeners = vec![(self.settings.http_listener.clone(), false)];
        listeners.extend(on_https.map(|l| (l, true)));
        for (listener, https) in listeners {
            let route_name = if https {
                format!("{name}/tls")
            } else {
                name.to_string()
            };
            let mut route = RouteConfig::new(&route_name, self.origin.clone(), &listener, upstream);
            route.hosts = host.iter().cloned().collect();
            if host.is_some() {
                // Each alias once per listener and path, whichever rule host comes first.
                let path_key = path.as_ref().map(PathMatch::key).unwrap_or_default();
                for alias in &self.annotations.server_aliases {
                    let claim = (listener.clone(), alias.clone(), path_key.clone());
                    if self.aliases_used.insert(claim) {
                        route.hosts.push(host_match(alias));
                    }
                }
            }
            route.paths = path.iter().cloned().collect();
            route.canary = canary.clone();
            let redirect = !https
                && (self.annotations.force_ssl_redirect
                    || (tls && self.annotations.ssl_redirect != Some(false)));
            if redirect {
                route.filters.https_redirect = Some(HttpsRedirect {
                    port: self.settings.https_redirect_port,
                    status: RedirectStatus::PermanentRedirect,
                });
            }
            // A required client certificate exists only over TLS: plain requests that are
            // not redirected there are refused (403), as ingress-nginx does.
            let certificate_required = self
                .annotations
                .client_cert
                .as_ref()
                .is_some_and(|c| c.required);
            if !https && certificate_required && !redirect {
                route.access.deny = vec![
                    "0.0.0.0/0".parse().expect("a literal network"),
                    "::/0".parse().expect("a literal network"),
                ];
            }
            if let Err(e) = self.apply_annotations(&mut route, written_path, https) {
                self.report.error(e.0, e.1);
                return;
            }
            let scheme = if https { "https" } else { "http" };
            let shown_host = host.as_ref().map_or("*".to_string(), HostMatch::key);
            let shown_path = path
                .as_ref()
                .map_or("(default backend)".to_string(), PathMatch::key);
            self.report.serves.push(format!(
                "{scheme}://{shown_host} {shown_path} -> {upstream}{}{}",
                if redirect {
                    " (redirects to https)"
                } else {
                    ""
                },
                route
                    .canary
                    .as_ref()
                    .map(|c| format!(" (canary {})", c.upstream))
                    .unwrap_or_default()
            ));
            self.fragment.routes.push(Arc::new(route));
        }
    }

    /// The route-level annotations.
    fn apply_annotations(
        &mut self,
        route: &mut RouteConfig,
        written_path: &str,
        https: bool,
    ) -> Result<(), (Reason, String)> {
        let a = self.annotations.clone();
        if let Some(target) = &a.rewrite_target {
            let pattern = Regex::new(&format!("(?i){written_path}")).map_err(|e| {
                (
                    Reason::InvalidSpec,
                    format!("path {written_path:?} is not a regex for rewrite-target: {e}"),
                )
            })?;
            route.filters.rewrite.path = Some(PathRewrite::Regex {
                pattern,
                replacement: target.clone(),
            });
        }
        route.filters.app_root = a.app_root.clone();
        if let Some(r) = &a.redirect {
            route.filters.redirect = Some(Redirect {
                scheme: Some(r.scheme.clone()),
                host: Some(r.host.clone()),
                port: r.port,
                path: Some(PathRewrite::Full(r.path.clone())),
                status: r.status,
            });
        }
        if let Some(max) = a.body_max {
            route.body.max_size = max;
        }
        route.timeouts = a.timeouts;
        route.affinity = a.affinity.clone();
        route.access.allow = a.access.allow.clone();
        route.access.deny.extend(a.access.deny.iter().cloned());
        route.cors = a.cors.clone();
        if let (Some(rps), Some(burst)) = (a.limit_rps, a.limit_burst) {
            route.rate_limit = Some(RateLimit {
                requests_per_second: rps,
                burst,
                by: LimitKey::ClientIp,
                exempt: a.limit_exempt.clone(),
            });
        }
        route.global_rate_limit = a.global_rate_limit.clone();
        route.max_concurrent_per_client = a.limit_connections;
        route.filters.rewrite.host = a.upstream_vhost.clone();
        route.filters.rewrite.forwarded_prefix = a.forwarded_prefix.clone();
        if let Some(basic) = &a.basic_auth {
            route.auth = Some(Auth::Basic(self.basic_auth(basic)?));
        }
        if let Some(external) = &a.external_auth {
            route.auth = Some(Auth::External(self.external_auth(external)?));
        }
        if !a.custom_errors.is_empty() {
            match &a.default_backend {
                Some(service) => {
                    let upstream = self.default_backend_upstream(service)?;
                    route.error_pages = Some(Arc::new(ErrorPages {
                        rules: vec![ErrorPage {
                            statuses: a.custom_errors.clone(),
                            source: PageSource::Upstream(upstream),
                        }],
                    }));
                }
                None => self.report.warn(
                    "custom-http-errors without default-backend: sluice has no global default \
                     backend for error pages; its own error pages are served"
                        .into(),
                ),
            }
        }
        if let (Some(spec), true) = (&a.client_cert, https) {
            if spec.required {
                let (namespace, name) = self.same_namespace_secret(&spec.secret)?;
                let secret = self.cluster.secret(&namespace, &name);
                if secret.is_none() && self.references == References::Assumed {
                    self.report.warn(format!(
                        "Secret {namespace}/{name} is not in the input: assumed to hold ca.crt"
                    ));
                    return Ok(());
                }
                let certificates = match secret {
                    Some(secret) => {
                        let ca = secret_bytes(secret, "ca.crt").ok_or_else(|| {
                            (
                                Reason::InvalidSecret,
                                format!("Secret {namespace}/{name} has no ca.crt"),
                            )
                        })?;
                        parse_ca_certificates(&ca, &format!("Secret {namespace}/{name} ca.crt"))
                            .map_err(|e| (Reason::InvalidSecret, e))?
                    }
                    None => return Err(self.missing_secret(&namespace, &name)),
                };
                route.require_client_certificate = Some(ClientCertificateRequirement {
                    ca: Some(RouteClientCa {
                        file: PathBuf::from(format!("secret:{namespace}/{name}")),
                        certificates,
                        verify_depth: spec.verify_depth.max(1),
                    }),
                });
            }
        }
        Ok(())
    }

    /// `name` or `namespace/name` of a Secret, which must be in this Ingress's namespace.
    fn same_namespace_secret(&self, reference: &str) -> Result<(String, String), (Reason, String)> {
        let (namespace, name) = match reference.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (self.namespace.clone(), reference.to_string()),
        };
        if namespace != self.namespace {
            return Err((
                Reason::InvalidAnnotation,
                format!(
                    "Secret {reference:?} is in another namespace; sluice reads only Secrets \
                     of the Ingress's own namespace"
                ),
            ));
        }
        if name.is_empty() {
            return Err((Reason::InvalidAnnotation, "an empty Secret name".into()));
        }
        Ok((namespace, name))
    }

    fn missing_secret(&self, namespace: &str, name: &str) -> (Reason, String) {
        (
            Reason::MissingSecret,
            format!("Secret {namespace}/{name} not found"),
        )
    }

    fn basic_auth(
        &mut self,
        spec: &annotations::BasicAuthSpec,
    ) -> Result<BasicAuth, (Reason, String)> {
        if spec.secret.is_empty() {
            return Err((
                Reason::InvalidAnnotation,
                "auth-type basic needs auth-secret".into(),
            ));
        }
        let (namespace, name) = self.same_namespace_secret(&spec.secret)?;
        let users = match self.cluster.secret(&namespace, &name) {
            Some(secret) => {
                let text = match spec.secret_type {
                    AuthSecretType::AuthFile => {
                        let auth = secret_bytes(secret, "auth").ok_or_else(|| {
                            (
                                Reason::InvalidSecret,
                                format!("Secret {namespace}/{name} has no key auth"),
                            )
                        })?;
                        String::from_utf8_lossy(&auth).into_owned()
                    }
                    AuthSecretType::AuthMap => secret_keys(secret)
                        .into_iter()
                        .map(|(user, hash)| format!("{user}:{}\n", String::from_utf8_lossy(&hash)))
                        .collect(),
                };
                Htpasswd::parse(&text).map_err(|errors| {
                    (
                        Reason::InvalidSecret,
                        format!("Secret {namespace}/{name}: {}", errors.join("; ")),
                    )
                })?
            }
            None if self.references == References::Assumed => {
                self.report.warn(format!(
                    "Secret {namespace}/{name} is not in the input: assumed to hold the users"
                ));
                Htpasswd::default()
            }
            None => return Err(self.missing_secret(&namespace, &name)),
        };
        Ok(BasicAuth {
            realm: spec.realm.clone(),
            file: PathBuf::from(format!("secret:{namespace}/{name}")),
            users: Arc::new(users),
        })
    }

    fn external_auth(
        &mut self,
        spec: &annotations::ExternalAuthSpec,
    ) -> Result<ExternalAuth, (Reason, String)> {
        let upstream_name = format!("{}/{}/auth", self.namespace, self.name);
        if !self
            .fragment
            .upstreams
            .iter()
            .any(|u| u.name == upstream_name)
        {
            let mut upstream = match service_host(&spec.host) {
                Some((service, namespace)) if namespace == self.namespace => {
                    self.service_upstream(&upstream_name, &service, PortRef::Number(spec.port))?
                }
                _ => UpstreamConfig::new(
                    &upstream_name,
                    self.origin.clone(),
                    dns_source(spec.host.clone(), spec.port),
                    Vec::new(),
                ),
            };
            if spec.tls {
                upstream.tls = Some(upstream_tls(spec.host.clone(), true));
            }
            self.fragment.upstreams.push(Arc::new(upstream));
        }
        Ok(ExternalAuth {
            upstream: upstream_name,
            path: spec.path.clone(),
            method: spec.method.clone(),
            request_headers: None,
            response_headers: spec.response_headers.clone(),
            signin: spec.signin.clone(),
            timeout: Duration::from_secs(5),
            on_error: AuthFailure::Deny,
        })
    }

    /// The upstream of the `default-backend` Service (its first port).
    fn default_backend_upstream(&mut self, service: &str) -> Result<String, (Reason, String)> {
        let upstream_name = format!("{}/{}/default-backend", self.namespace, self.name);
        if self
            .fragment
            .upstreams
            .iter()
            .any(|u| u.name == upstream_name)
        {
            return Ok(upstream_name);
        }
        let first_port = self
            .cluster
            .service(&self.namespace, service)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port));
        let port = u16::try_from(first_port.unwrap_or(80)).unwrap_or(80);
        let upstream = self.service_upstream(&upstream_name, service, PortRef::Number(port))?;
        self.fragment.upstreams.push(Arc::new(upstream));
        Ok(upstream_name)
    }

    /// The upstream of a backend, added to the fragment once; `None` after reporting why not.
    fn backend_upstream(&mut self, backend: &IngressBackend, owner: &str) -> Option<String> {
        let Some(service) = &backend.service else {
            self.report.error(
                Reason::InvalidSpec,
                "resource backends are not supported; use a Service backend".into(),
            );
            return None;
        };
        match self.upstream_of(service, owner, &self.annotations.clone()) {
            Ok(name) => Some(name),
            Err((reason, message)) => {
                self.report.error(reason, message);
                None
            }
        }
    }

    /// The upstream for a Service backend of Ingress `owner` with `annotations`.
    fn upstream_of(
        &mut self,
        backend: &IngressServiceBackend,
        owner: &str,
        annotations: &Annotations,
    ) -> Result<String, (Reason, String)> {
        let port_ref = port_ref(backend)?;
        let upstream_name = format!("{}/{owner}/{}:{}", self.namespace, backend.name, port_ref);
        if self
            .fragment
            .upstreams
            .iter()
            .any(|u| u.name == upstream_name)
        {
            return Ok(upstream_name);
        }
        let mut upstream = self.service_upstream(&upstream_name, &backend.name, port_ref)?;
        if let Some((protocol, tls)) = annotations.protocol {
            upstream.protocol = protocol;
            if tls {
                upstream.tls = Some(upstream_tls(
                    format!("{}.{}.svc", backend.name, self.namespace),
                    false,
                ));
            }
        }
        if let Some(spec) = &annotations.upstream_tls {
            let tls = upstream.tls.get_or_insert_with(|| {
                upstream_tls(format!("{}.{}.svc", backend.name, self.namespace), false)
            });
            tls.verify = spec.verify;
            if let Some(name) = &spec.name {
                tls.sni = name.clone();
            }
            if let Some(secret) = &spec.secret {
                let (namespace, name) = self.same_namespace_secret(secret)?;
                match self.cluster.secret(&namespace, &name) {
                    Some(s) => {
                        if let Some(ca) = secret_bytes(s, "ca.crt") {
                            tls.ca_file = Some(PathBuf::from(format!("secret:{namespace}/{name}")));
                            tls.ca_certificates = parse_ca_certificates(
                                &ca,
                                &format!("Secret {namespace}/{name} ca.crt"),
                            )
                            .map_err(|e| (Reason::InvalidSecret, e))?;
                        }
                    }
                    None if self.references == References::Assumed => self.report.warn(format!(
                        "Secret {namespace}/{name} is not in the input: assumed to hold ca.crt"
                    )),
                    None => return Err(self.missing_secret(&namespace, &name)),
                }
            }
        }
        if let Some(policy) = annotations.balance {
            upstream.balance = policy;
        }
        if let Some(key) = &annotations.hash_key {
            upstream.balance = BalancePolicy::ConsistentHash;
            upstream.hash_key = Some(HashKey::clone(key));
        }
        if let Some(next) = &annotations.next_upstream {
            upstream.retry = RetryPolicy {
                attempts: if next.off { 1 } else { upstream.retry.attempts },
                on_connect_failure: next.on_error,
                on_reset_before_response: next.on_error,
                methods: if next.non_idempotent {
                    RetryMethods::All
                } else {
                    RetryMethods::Idempotent
                },
                on_status: next.on_status,
                ..upstream.retry
            };
        }
        if let Some(tries) = annotations.next_upstream_tries {
            if annotations.next_upstream.as_ref().is_none_or(|n| !n.off) {
                upstream.retry.attempts = tries;
            }
        }
        self.fragment.upstreams.push(Arc::new(upstream));
        Ok(upstream_name)
    }

    /// An upstream for `port` of Service `service` of this namespace: its EndpointSlices,
    /// its cluster IP (`service-upstream`), or the DNS name of an ExternalName Service.
    fn service_upstream(
        &mut self,
        upstream_name: &str,
        service: &str,
        port: PortRef,
    ) -> Result<UpstreamConfig, (Reason, String)> {
        let namespace = self.namespace.clone();
        let Some(found) = self.cluster.service(&namespace, service) else {
            if self.references == References::Assumed {
                self.report.warn(format!(
                    "Service {namespace}/{service} is not in the input: assumed to exist"
                ));
                let slice_port = match &port {
                    PortRef::Number(n) => ServicePort::Number(*n),
                    PortRef::Name(n) => ServicePort::Name(n.clone()),
                };
                return Ok(UpstreamConfig::new(
                    upstream_name,
                    self.origin.clone(),
                    slices_source(namespace, service, slice_port),
                    Vec::new(),
                ));
            }
            return Err((
                Reason::MissingService,
                format!("Service {namespace}/{service} not found"),
            ));
        };
        let spec = found.spec.clone().unwrap_or_default();
        let ports = spec.ports.clone().unwrap_or_default();
        let service_port = ports.iter().find(|p| match &port {
            PortRef::Number(n) => p.port == i32::from(*n),
            PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        });
        let external_name = (spec.type_.as_deref() == Some("ExternalName"))
            .then(|| spec.external_name.clone())
            .flatten();
        if let Some(external) = external_name {
            let number = match (&port, service_port) {
                (PortRef::Number(n), _) => *n,
                (PortRef::Name(_), Some(p)) => u16::try_from(p.port).unwrap_or(80),
                (PortRef::Name(name), None) => {
                    return Err((
                        Reason::MissingService,
                        format!("ExternalName Service {namespace}/{service} has no port {name:?}"),
                    ))
                }
            };
            return Ok(UpstreamConfig::new(
                upstream_name,
                self.origin.clone(),
                dns_source(external, number),
                Vec::new(),
            ));
        }
        let Some(service_port) = service_port else {
            return Err((
                Reason::MissingService,
                format!("Service {namespace}/{service} has no port {port}"),
            ));
        };
        let known_ip = spec
            .cluster_ip
            .as_deref()
            .is_some_and(|ip| ip.parse::<IpAddr>().is_ok());
        if self.annotations.service_upstream && !known_ip && self.references == References::Assumed
        {
            self.report.warn(format!(
                "service-upstream: the cluster IP of Service {namespace}/{service} is not in \
                 the input; checked as if it were"
            ));
        } else if self.annotations.service_upstream {
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .ok_or_else(|| {
                    (
                        Reason::InvalidSpec,
                        format!(
                            "service-upstream: Service {namespace}/{service} has no cluster IP \
                             (headless)"
                        ),
                    )
                })?;
            let port = u16::try_from(service_port.port).unwrap_or(80);
            return Ok(UpstreamConfig::new(
                upstream_name,
                self.origin.clone(),
                EndpointSource::Static,
                vec![EndpointConfig {
                    address: SocketAddr::new(cluster_ip, port),
                    weight: 1,
                    terminating: false,
                }],
            ));
        }
        // EndpointSlice ports carry the Service port's name ("" when it has none).
        let slice_port = ServicePort::Name(service_port.name.clone().unwrap_or_default());
        Ok(UpstreamConfig::new(
            upstream_name,
            self.origin.clone(),
            slices_source(namespace, service, slice_port),
            Vec::new(),
        ))
    }

    /// The path match of a rule path.
    fn path_match(&mut self, path: &str, path_type: &str, regex_paths: bool) -> Option<PathMatch> {
        if !path.starts_with('/') {
            self.report.error(
                Reason::InvalidSpec,
                format!("path {path:?} is not absolute"),
            );
            return None;
        }
        let regex = |path: &str| Regex::new(&format!("(?i)^{path}"));
        let matched = match path_type {
            "Exact" => Ok(PathMatch::Exact(path.to_string())),
            _ if regex_paths => regex(path).map(PathMatch::Regex),
            "Prefix" if path == "/" => Ok(PathMatch::Prefix("/".into())),
            "Prefix" => Ok(PathMatch::SegmentPrefix(path.to_string())),
            "ImplementationSpecific" => Ok(PathMatch::Prefix(path.to_string())),
            other => {
                self.report.error(
                    Reason::InvalidSpec,
                    format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific"),
                );
                return None;
            }
        };
        match matched {
            Ok(m) => Some(m),
            Err(e) => {
                self.report.error(
                    Reason::InvalidSpec,
                    format!("path {path:?} is not a regex: {e}"),
                );
                None
            }
        }
    }

    /// The canary of the route of `main`, from a canary Ingress of this namespace with the
    /// same host, path and path type.
    fn canary_for(&mut self, main: &RulePath) -> Option<Canary> {
        let cluster = self.cluster;
        for other in cluster.ingresses(&self.namespace) {
            let other_annotations =
                annotations::parse(&other.metadata.annotations.clone().unwrap_or_default());
            if !other_annotations.canary || other_annotations.rejects() {
                continue;
            }
            let other_name = other.metadata.name.clone().unwrap_or_default();
            for (_, _, candidate) in rule_paths(other) {
                let same = candidate.host == main.host
                    && candidate.path == main.path
                    && candidate.path_type == main.path_type;
                let Some(service) = candidate.backend.service.as_ref().filter(|_| same) else {
                    continue;
                };
                // Named after the main Ingress too: one canary may serve several.
                let owner = format!("{}/canary/{other_name}", self.name);
                let upstream = match self.upstream_of(service, &owner, &other_annotations) {
                    Ok(upstream) => upstream,
                    Err((_, message)) => {
                        self.report.warn(format!(
                            "canary Ingress {}/{other_name} not used: {message}",
                            self.namespace
                        ));
                        continue;
                    }
                };
                let rule = &other_annotations.canary_rule;
                let header = rule.header.as_ref().and_then(|name| {
                    let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                    let value = match (&rule.header_value, &rule.header_pattern) {
                        (Some(v), _) => Some(ValueMatch::Exact(v.clone())),
                        (None, Some(p)) => Regex::new(p).ok().map(ValueMatch::Regex),
                        (None, None) => None,
                    };
                    Some(CanaryHeader { name, value })
                });
                return Some(Canary {
                    upstream,
                    header,
                    cookie: rule.cookie.clone(),
                    weight: rule.weight.min(rule.weight_total),
                    weight_total: rule.weight_total,
                    fallback: false,
                });
            }
        }
        None
    }

    /// Whether a non-canary Ingress of this namespace has a path of this canary.
    fn canary_has_main(&self, canary: &Ingress) -> bool {
        let paths = rule_paths(canary);
        self.cluster.ingresses(&self.namespace).iter().any(|other| {
            let annotations =
                annotations::parse(&other.metadata.annotations.clone().unwrap_or_default());
            !annotations.canary
                && rule_paths(other).iter().any(|(_, _, main)| {
                    paths.iter().any(|(_, _, c)| {
                        c.host == main.host && c.path == main.path && c.path_type == main.path_type
                    })
                })
        })
    }

    /// `from-to-www-redirect`: the other name of each host redirects to it.
    fn www_redirects(&mut self, rule_paths: &[(usize, usize, RulePath)]) {
        let hosts: BTreeSet<&str> = rule_paths.iter().filter_map(|(_, _, p)| p.host).collect();
        for host in &hosts {
            if host.starts_with('*') {
                continue;
            }
            let other = match host.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => format!("www.{host}"),
            };
            // Both names have rules: each serves itself.
            if hosts.contains(other.as_str()) {
                continue;
            }
            let mut route = RouteConfig::new(
                &format!("{}/{}/www/{other}", self.namespace, self.name),
                self.origin.clone(),
                &self.settings.http_listener,
                rule_paths[0]
                    .2
                    .backend
                    .service
                    .as_ref()
                    .map_or("", |s| s.name.as_str()),
            );
            route.hosts = vec![HostMatch::Exact(other.clone())];
            route.paths = vec![PathMatch::Prefix("/".into())];
            route.backends.clear();
            route.filters.redirect = Some(Redirect {
                scheme: None,
                host: Some((*host).to_string()),
                port: None,
                path: None,
                status: RedirectStatus::PermanentRedirect,
            });
            self.report
                .serves
                .push(format!("http://{other} -> redirect (308) to {host}"));
            self.fragment.routes.push(Arc::new(route));
        }
    }

    /// What this object gets that ingress-nginx would do differently.
    fn differences(&mut self, rule_paths: &[(usize, usize, RulePath)]) {
        let a = &self.annotations;
        let mut differences = Vec::new();
        if a.use_regex || a.rewrite_target.is_some() {
            differences.push(
                "regex paths apply to this Ingress only (ingress-nginx makes every path of \
                 the host a regex) and are tried in creation order, not longest first"
                    .to_string(),
            );
        }
        if a.balance == Some(BalancePolicy::LeastRequest) {
            differences.push("load-balance ewma is served as least_request".into());
        }
        if a.default_backend.is_some() && a.custom_errors.is_empty() {
            differences.push(
                "default-backend is used for custom-http-errors only, not when the Service \
                 has no endpoints"
                    .into(),
            );
        }
        let prefix_specific = rule_paths
            .iter()
            .any(|(_, _, p)| p.path_type == "ImplementationSpecific");
        if prefix_specific && !(a.use_regex || a.rewrite_target.is_some()) {
            differences.push(
                "ImplementationSpecific paths are plain prefixes (/foo matches /foobar), as \
                 nginx's location /foo"
                    .into(),
            );
        }
        self.report.differences.extend(differences);
    }
}

/// A Service port named by number or name.
#[derive(Debug, Clone)]
enum PortRef {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// The Service port a backend names.
fn port_ref(backend: &IngressServiceBackend) -> Result<PortRef, (Reason, String)> {
    let no_port = || {
        (
            Reason::InvalidSpec,
            format!("Service {} backend names no port", backend.name),
        )
    };
    let port = backend.port.as_ref().ok_or_else(no_port)?;
    match (port.number, port.name.as_deref()) {
        (Some(n), _) => u16::try_from(n).map(PortRef::Number).map_err(|_| {
            (
                Reason::InvalidSpec,
                format!("port {n} of Service {} is out of range", backend.name),
            )
        }),
        (None, Some(name)) => Ok(PortRef::Name(name.to_string())),
        (None, None) => Err(no_port()),
    }
}

/// TLS towards an upstream, sending `sni`, trusting the system's roots.
fn upstream_tls(sni: String, verify: bool) -> UpstreamTls {
    UpstreamTls {
        subject_alt_names: Vec::new(),
        client_certificate: None,
        sni,
        verify,
        ca_file: None,
        ca_certificates: Vec::new(),
    }
}

/// `*.example.com` → a suffix match, anything else an exact (lower-cased) name.
fn host_match(host: &str) -> HostMatch {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix('*') {
        Some(suffix) => HostMatch::Suffix(suffix.to_string()),
        None => HostMatch::Exact(host),
    }
}

/// Whether the TLS host `tls` covers the rule host `host`.
fn covers(tls: &HostMatch, host: &HostMatch) -> bool {
    match (tls, host) {
        (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
        (HostMatch::Suffix(s), HostMatch::Exact(b)) => b
            .strip_suffix(s.as_str())
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        (HostMatch::Suffix(a), HostMatch::Suffix(b)) => a == b,
        (HostMatch::Exact(_), HostMatch::Suffix(_)) => false,
    }
}

fn host_list(hosts: &[HostMatch]) -> String {
    if hosts.is_empty() {
        return "every host".into();
    }
    hosts
        .iter()
        .map(HostMatch::key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NAME.NAMESPACE.svc[.cluster.local]` → (NAME, NAMESPACE).
fn service_host(host: &str) -> Option<(String, String)> {
    let host = host.strip_suffix(".cluster.local").unwrap_or(host);
    let rest = host.strip_suffix(".svc")?;
    let (name, namespace) = rest.split_once('.')?;
    (!namespace.contains('.')).then(|| (name.to_string(), namespace.to_string()))
}

#[cfg(test)]
mod tests;
