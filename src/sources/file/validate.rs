//! The file's own checks: turns a [`RawConfig`] into typed model values, reporting every
//! value the schema cannot express (durations, addresses, ranges, templates). Checks across
//! items (names, references, overlapping routes) are the compiler's, the same for every
//! source; [`super::parse`] runs both and reports their problems together.

use super::location::PositionIndex;
use super::schema::*;
use super::*;
use crate::compile::values;
use crate::model::*;
use crate::tls::LoadedCertificate;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod auth;
mod gateway;
mod ingress;
mod limits;
mod traffic;

/// Collects errors with their positions while checking.
pub(super) struct Checker<'a> {
    path: Arc<PathBuf>,
    file: String,
    positions: &'a PositionIndex,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// The origin of the item at `key_path`.
    fn origin(&self, key_path: &str) -> Origin {
        let position = self.positions.find(key_path);
        Origin::File {
            path: self.path.clone(),
            line: position.line,
            column: position.column,
            key_path: key_path.to_string(),
        }
    }

    pub(super) fn error(&mut self, key_path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            position: self.positions.find(key_path),
            key_path: key_path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, key_path: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(duration) => Some(duration),
            Err(e) => {
                self.error(
                    key_path,
                    format!("invalid duration {text:?} ({e}); write e.g. 250ms, 3s, 1h"),
                );
                None
            }
        }
    }

    pub(super) fn socket_addr(&mut self, key_path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.error(
                    key_path,
                    format!(
                        "invalid address {text:?}: expected IP:PORT (e.g. 10.0.0.1:80 or [::1]:80); \
                         host names are not resolved"
                    ),
                );
                None
            }
        }
    }

    /// A size in bytes: a number, optionally with `k`, `m` or `g` (1024-based, as nginx).
    fn size(&mut self, key_path: &str, text: &str) -> Option<u64> {
        let text = text.trim();
        let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => text.split_at(i),
            None => (text, ""),
        };
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => 0,
        };
        match digits
            .parse::<u64>()
            .ok()
            .zip((multiplier > 0).then_some(multiplier))
        {
            Some((n, m)) if n.checked_mul(m).is_some() => Some(n * m),
            _ => {
                self.error(
                    key_path,
                    format!("invalid size {text:?}; write bytes or e.g. 8k, 1m, 1g"),
                );
                None
            }
        }
    }

    /// A size that must be at least 1 byte and fit in memory.
    fn positive_size(&mut self, key_path: &str, text: &str) -> Option<usize> {
        let size = self.size(key_path, text)?;
        if size == 0 {
            self.error(key_path, "must be at least 1 byte");
            return None;
        }
        match usize::try_from(size) {
            Ok(size) => Some(size),
            Err(_) => {
                self.error(key_path, "is too large");
                None
            }
        }
    }

    /// Reports `{at}.name` if `name` is empty or already in `names`.
    fn unique_name<'n>(
        &mut self,
        names: &mut HashSet<&'n str>,
        at: &str,
        kind: &str,
        name: &'n str,
    ) {
        if name.is_empty() {
            self.error(&format!("{at}.name"), "must not be empty");
        } else if !names.insert(name) {
            self.error(
                &format!("{at}.name"),
                format!("duplicate {kind} name {name:?}"),
            );
        }
    }

    pub(super) fn nonzero(&mut self, key_path: &str, value: u32) {
        if value == 0 {
            self.error(key_path, "must be at least 1");
        }
    }
}

/// Checks `raw`, read from `path`, and compiles its routes and upstreams alone (so that
/// every problem of the file is reported in one run, in file order).
pub(super) fn validate(
    path: &Path,
    raw: RawConfig,
    positions: &PositionIndex,
    routes_declared: bool,
) -> Result<FileConfig, ConfigErrors> {
    let path = Arc::new(path.to_path_buf());
    let mut check = Checker {
        file: path.display().to_string(),
        path: path.clone(),
        positions,
        errors: Vec::new(),
    };

    let server = check_server(&mut check, &raw.server);
    let admin = check_admin(&mut check, &raw.admin);
    let access_log = match raw.access_log.path.as_str() {
        "" => {
            check.error(
                "access_log.path",
                "must not be empty (use stdout, off, or a file path)",
            );
            AccessLogTarget::Off
        }
        "stdout" => AccessLogTarget::Stdout,
        "off" => AccessLogTarget::Off,
        file => AccessLogTarget::File(PathBuf::from(file)),
    };
    let tracing = raw
        .tracing
        .as_ref()
        .and_then(|t| check_tracing(&mut check, t));
    let redis = raw
        .redis
        .as_ref()
        .and_then(|r| limits::redis(&mut check, r));
    let kubernetes = raw.kubernetes.as_ref().map(|k| {
        if let Some(server) = &k.api_server {
            let valid = server.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !valid {
                check.error(
                    "kubernetes.api_server",
                    format!("invalid URL {server:?}: expected https://HOST:PORT"),
                );
            }
        }
        KubernetesClient {
            api_server: k.api_server.clone(),
            token_file: k.token_file.as_ref().map(PathBuf::from),
            ca_file: k.ca_file.as_ref().map(PathBuf::from),
        }
    });

    if raw.listeners.is_empty() {
        check.error(
            "listeners",
            "no listeners: sluice would accept no traffic (declare at least one)",
        );
    }
    let listeners = check_listeners(&mut check, &raw.listeners);
    let tls = check_certificates(&mut check, &raw.listeners);
    let upstreams = check_upstreams(&mut check, &raw.upstreams);
    let routes = check_routes(&mut check, &raw);

    let listeners: Vec<ListenerConfig> = listeners.into_iter().flatten().collect();
    let ingress = raw
        .ingress
        .as_ref()
        .and_then(|raw_ingress| ingress::ingress(&mut check, raw_ingress, &raw.listeners));
    let gateway = raw
        .gateway
        .as_ref()
        .and_then(|raw_gateway| gateway::gateway(&mut check, raw_gateway, &raw.listeners));
    let typed_upstreams: Vec<UpstreamConfig> = upstreams.into_iter().flatten().collect();
    let mut fragment = Fragment::new(check.origin(""), None);
    // A route with an invalid host or path was built without it, so it would claim every
    // host or path in its place: its claims are not reported (its own errors are).
    let unmatchable: Vec<Origin> = routes
        .iter()
        .filter(|(_, matchable)| !matchable)
        .map(|(route, _)| route.origin.clone())
        .collect();
    fragment.routes = routes
        .into_iter()
        .map(|(route, _)| Arc::new(route))
        .collect();
    fragment.upstreams = typed_upstreams.into_iter().map(Arc::new).collect();
    // Upstreams with errors of their own are still known by name and protocol, so routes
    // naming them do not get a second, misleading error.
    let broken_upstreams: Vec<(&str, UpstreamProtocol)> = raw
        .upstreams
        .iter()
        .filter(|u| !fragment.upstreams.iter().any(|typed| typed.name == u.name))
        .map(|u| (u.name.as_str(), u.protocol))
        .collect();
    let mut compiler = Compiler::new(&listeners).with_redis(raw.redis.is_some());
    for listener in &raw.listeners {
        if !listeners.iter().any(|typed| typed.name == listener.name) {
            compiler.declare_listener(&listener.name, listener.protocol);
        }
    }
    for (name, protocol) in broken_upstreams {
        compiler.declare_upstream(name, protocol);
    }
    if let Err(problems) = compiler.admit(&fragment) {
        for problem in problems {
            let a_claim = problem.field.starts_with("paths");
            if a_claim && unmatchable.contains(&problem.origin) {
                continue;
            }
            let key_path = problem.key_path();
            // The file's own check of a value said it first, and more precisely.
            let known = check.errors.iter().any(|e| e.key_path == key_path);
            if !known {
                check.error(&key_path, problem.message);
            }
        }
    }
    if check.errors.is_empty() {
        if let (Some(server), Some(admin)) = (server, admin) {
            let files = std::iter::once(path.to_path_buf())
                .chain(
                    tls.iter()
                        .flat_map(|l| l.files.iter())
                        .flat_map(|(cert, key)| [cert.clone(), key.clone()]),
                )
                .chain(fragment.routes.iter().filter_map(|r| match &r.auth {
                    Some(Auth::Basic(basic)) => Some(basic.file.clone()),
                    _ => None,
                }))
                .chain(fragment.routes.iter().filter_map(|r| {
                    let requirement = r.require_client_certificate.as_ref()?;
                    requirement.ca.as_ref().map(|ca| ca.file.clone())
                }))
                .chain(fragment.routes.iter().flat_map(|r| {
                    r.error_pages.iter().flat_map(|pages| {
                        pages.rules.iter().filter_map(|rule| match &rule.source {
                            PageSource::File(file) => Some(file.path.clone()),
                            PageSource::Upstream(_) => None,
                        })
                    })
                }))
                .collect();
            return Ok(FileConfig {
                path,
                files,
                routes_declared,
                raw: Arc::new(raw),
                settings: Config {
                    server,
                    admin,
                    access_log,
                    kubernetes,
                    ingress,
                    gateway,
                    tracing,
                    redis,
                    listeners,
                    tls,
                    routes: Vec::new(),
                    upstreams: Vec::new(),
                    reserved_hosts: Vec::new(),
                },
                fragment: Arc::new(fragment),
            });
        }
    }
    let mut errors = check.errors;
    errors.sort_by_key(|e| (e.position.line, e.position.column));
    Err(ConfigErrors(errors))
}

fn check_admin(check: &mut Checker, raw: &RawAdmin) -> Option<AdminSettings> {
    let listen = check.socket_addr("admin.listen", &raw.listen);
    let metrics_listen = raw
        .metrics_listen
        .as_ref()
        .map(|address| check.socket_addr("admin.metrics_listen", address));
    if let (Some(listen), Some(Some(metrics))) = (listen, metrics_listen) {
        if listen == metrics {
            check.error(
                "admin.metrics_listen",
                format!("{metrics} is admin.listen too"),
            );
        }
    }
    let token = match &raw.token_file {
        None => Some(None),
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) if !text.trim().is_empty() => Some(Some(text.trim().to_string())),
            Ok(_) => {
                check.error("admin.token_file", format!("{file} is empty"));
                None
            }
            Err(e) => {
                check.error("admin.token_file", format!("cannot read {file}: {e}"));
                None
            }
        },
    };
    Some(AdminSettings {
        listen: listen?,
        metrics_listen: metrics_listen.flatten(),
        token: token?,
        allowed_hosts: raw
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    })
}

fn check_server(check: &mut Checker, raw: &RawServer) -> Option<ServerSettings> {
    let threads = match raw.threads {
        Some(0) => {
            check.error("server.threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let grace_period = check.duration("server.grace_period", &raw.grace_period);
    let drain_delay = check.duration("server.drain_delay", &raw.drain_delay);
    let resolver = match &raw.resolver {
        None => Some(None),
        Some(resolver) => {
            let nameservers: Vec<Option<SocketAddr>> = resolver
                .nameservers
                .iter()
                .enumerate()
                .map(|(i, address)| {
                    check.socket_addr(&format!("server.resolver.nameservers[{i}]"), address)
                })
                .collect();
            if nameservers.is_empty() {
                check.error(
                    "server.resolver.nameservers",
                    "needs at least one server (leave resolver out to use /etc/resolv.conf)",
                );
            }
            let timeout = check.duration("server.resolver.timeout", &resolver.timeout);
            match (nameservers.into_iter().collect::<Option<Vec<_>>>(), timeout) {
                (Some(nameservers), Some(timeout)) if !timeout.is_zero() => {
                    Some(Some(ResolverSettings {
                        nameservers,
                        timeout,
                    }))
                }
                (_, Some(timeout)) if timeout.is_zero() => {
                    check.error("server.resolver.timeout", "must be longer than 0s");
                    None
                }
                _ => None,
            }
        }
    };
    Some(ServerSettings {
        resolver: resolver?,
        drain_delay: drain_delay?,
        threads,
        upgrade_sock: raw.upgrade_sock.clone(),
        pid_file: raw.pid_file.clone(),
        grace_period: grace_period?,
        watch_config: raw.watch_config,
    })
}

fn check_listeners(check: &mut Checker, raw: &[RawListener]) -> Vec<Option<ListenerConfig>> {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, listener)| {
            let at = format!("listeners[{i}]");
            check.unique_name(&mut names, &at, "listener", &listener.name);
            let listen = check.socket_addr(&format!("{at}.listen"), &listener.listen);
            if let Some(address) = listen {
                if !addresses.insert(address) {
                    check.error(
                        &format!("{at}.listen"),
                        format!("address {address} is used by another listener"),
                    );
                }
            }
            if listener.h2c && listener.protocol == ListenerProtocol::Tcp {
                check.error(&format!("{at}.h2c"), "applies to http listeners only");
            }
            if listener.sni_routing && listener.protocol != ListenerProtocol::Tcp {
                check.error(
                    &format!("{at}.sni_routing"),
                    "applies to tcp listeners only (an http listener with tls: chooses \
                     certificates by SNI already)",
                );
            }
            if let Some(tls) = &listener.tls {
                if tls.certificates.is_empty() {
                    check.error(
                        &format!("{at}.tls.certificates"),
                        "needs at least one certificate",
                    );
                }
                if listener.protocol == ListenerProtocol::Tcp && tls.client_auth.is_some() {
                    check.error(
                        &format!("{at}.tls.client_auth"),
                        "client certificates are asked for on http listeners only",
                    );
                }
                if listener.h2c {
                    check.error(
                        &format!("{at}.h2c"),
                        "a TLS listener negotiates HTTP/2 by ALPN; h2c is for cleartext ports",
                    );
                }
            }
            let keepalive_timeout = check.duration(
                &format!("{at}.keepalive.timeout"),
                &listener.keepalive.timeout,
            );
            check.nonzero(
                &format!("{at}.keepalive.max_requests"),
                listener.keepalive.max_requests,
            );
            let requests =
                check_request_limits(check, &format!("{at}.requests"), &listener.requests);
            let https_redirect = traffic::https_redirect(
                check,
                &format!("{at}.https_redirect"),
                &listener.https_redirect,
            );
            if https_redirect.is_some() && listener.protocol == ListenerProtocol::Tcp {
                check.error(
                    &format!("{at}.https_redirect"),
                    "applies to http listeners only",
                );
            }
            if https_redirect.is_some() && listener.tls.is_some() {
                check.error(
                    &format!("{at}.https_redirect"),
                    "a TLS listener already serves HTTPS: its requests would be redirected to \
                     themselves",
                );
            }
            let trusted_proxies =
                traffic::networks(check, &at, "trusted_proxies", &listener.trusted_proxies);
            let access = traffic::access(check, &at, &listener.allow, &listener.deny);
            let identity = !trusted_proxies.is_empty() || !access.is_empty();
            if identity && listener.protocol == ListenerProtocol::Tcp {
                check.error(
                    &at,
                    "trusted_proxies, allow and deny apply to http listeners only",
                );
            }
            let proxy_protocol = check_proxy_protocol(check, &at, &listener.proxy_protocol);
            let client_auth = listener
                .tls
                .as_ref()
                .and_then(|tls| tls.client_auth.as_ref())
                .and_then(|raw| check_client_auth(check, &format!("{at}.tls.client_auth"), raw));
            let connections = ConnectionLimits {
                max: listener.connections.max,
                max_per_client: listener.connections.max_per_client,
            };
            for (key, value) in [
                ("max", connections.max),
                ("max_per_client", connections.max_per_client),
            ] {
                if value == Some(0) {
                    check.error(
                        &format!("{at}.connections.{key}"),
                        "must be at least 1 (leave it out for no limit)",
                    );
                }
            }
            Some(ListenerConfig {
                name: listener.name.clone(),
                origin: check.origin(&at),
                listen: listen?,
                protocol: listener.protocol,
                keepalive_timeout: keepalive_timeout?,
                keepalive_max_requests: listener.keepalive.max_requests,
                h2c: listener.h2c,
                tls: listener.tls.is_some(),
                requests: requests?,
                https_redirect,
                trusted_proxies,
                access,
                proxy_protocol: proxy_protocol?,
                // A tcp listener that terminates TLS routes by the server name it is sent.
                sni_routing: listener.sni_routing
                    || (listener.protocol == ListenerProtocol::Tcp && listener.tls.is_some()),
                connections,
                client_auth,
            })
        })
        .collect()
}

/// `listeners[].tls.client_auth`: the CA bundle is read here.
fn check_client_auth(check: &mut Checker, at: &str, raw: &RawClientAuth) -> Option<ClientAuth> {
    let errors_before = check.errors.len();
    let ca_file = raw.ca.as_ref().map(PathBuf::from);
    let ca_certificates = match &ca_file {
        Some(file) => crate::tls::load_ca_certificates(file)
            .map_err(|e| check.error(&format!("{at}.ca"), e))
            .ok(),
        None if matches!(raw.mode, RawClientAuthMode::Required) => {
            check.error(
                &format!("{at}.ca"),
                "mode: required needs a CA bundle (without one, use mode: optional and name \
                 the CAs in routes' require_client_certificate)",
            );
            None
        }
        None => Some(Vec::new()),
    };
    if raw.verify_depth == 0 {
        check.error(
            &format!("{at}.verify_depth"),
            "must be at least 1 (the CA that issued the client's certificate)",
        );
    }
    let h = &raw.headers;
    let mut header =
        |key: &str, name: &str| traffic::header_name(check, &format!("{at}.headers.{key}"), name);
    let headers = (
        header("verify", &h.verify),
        header("subject", &h.subject),
        header("issuer", &h.issuer),
        header("fingerprint", &h.fingerprint),
    );
    if check.errors.len() != errors_before {
        return None;
    }
    let (Some(verify), Some(subject), Some(issuer), Some(fingerprint)) = headers else {
        return None;
    };
    Some(ClientAuth {
        ca_file,
        ca_certificates: ca_certificates?,
        mode: match raw.mode {
            RawClientAuthMode::Required => ClientAuthMode::Required,
            RawClientAuthMode::Optional => ClientAuthMode::Optional,
        },
        verify_depth: raw.verify_depth,
        headers: ClientCertHeaders {
            verify,
            subject,
            issuer,
            fingerprint,
        },
    })
}

/// `routes[].require_client_certificate`: `None` when off or invalid (reported).
fn client_certificate_requirement(
    check: &mut Checker,
    at: &str,
    raw: &RawRequireClientCertificate,
) -> Option<ClientCertificateRequirement> {
    let raw = match raw {
        RawRequireClientCertificate::On(false) => return None,
        RawRequireClientCertificate::On(true) => {
            return Some(ClientCertificateRequirement { ca: None })
        }
        RawRequireClientCertificate::Ca(raw) => raw,
    };
    let key = format!("{at}.require_client_certificate");
    let file = PathBuf::from(&raw.ca);
    let certificates = crate::tls::load_ca_certificates(&file)
        .map_err(|e| check.error(&format!("{key}.ca"), e))
        .ok()?;
    if raw.verify_depth == 0 {
        check.error(&format!("{key}.verify_depth"), "must be at least 1");
        return None;
    }
    // Built here once so that a bundle rustls refuses is an error at this key.
    if let Err(e) = crate::tls::client_auth::ChainVerifier::new(&certificates, raw.verify_depth) {
        check.error(&format!("{key}.ca"), e);
        return None;
    }
    Some(ClientCertificateRequirement {
        ca: Some(RouteClientCa {
            file,
            certificates,
            verify_depth: raw.verify_depth,
        }),
    })
}

/// `listeners[].proxy_protocol`: `Some(None)` when off.
fn check_proxy_protocol(
    check: &mut Checker,
    at: &str,
    raw: &Option<RawProxyProtocol>,
) -> Option<Option<ProxyProtocol>> {
    let timeout = match raw {
        None | Some(RawProxyProtocol::On(false)) => return Some(None),
        Some(RawProxyProtocol::On(true)) => default_proxy_protocol_timeout(),
        Some(RawProxyProtocol::Settings(settings)) => settings.timeout.clone(),
    };
    let key = format!("{at}.proxy_protocol.timeout");
    let timeout = check.duration(&key, &timeout)?;
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        check.error(
            &key,
            "must be longer than 0s and at most 60s (Pingora ends a connection's handshake \
             at 60s)",
        );
        return None;
    }
    Some(Some(ProxyProtocol { timeout }))
}

/// `listeners[].requests`.
fn check_request_limits(
    check: &mut Checker,
    at: &str,
    raw: &RawRequestLimits,
) -> Option<RequestLimits> {
    let max_request_line =
        check.positive_size(&format!("{at}.max_request_line"), &raw.max_request_line);
    let max_header_line =
        check.positive_size(&format!("{at}.max_header_line"), &raw.max_header_line);
    let max_header_bytes =
        check.positive_size(&format!("{at}.max_header_bytes"), &raw.max_header_bytes);
    check.nonzero(&format!("{at}.max_headers"), raw.max_headers);
    let mut positive = |key: &str, text: &str| {
        let key = format!("{at}.{key}");
        let duration = check.duration(&key, text)?;
        if duration.is_zero() {
            check.error(&key, "must be more than 0s");
            return None;
        }
        Some(duration)
    };
    let header_timeout = positive("header_timeout", &raw.header_timeout);
    let body_read_timeout = positive("body_read_timeout", &raw.body_read_timeout);
    let body_timeout = check.duration(&format!("{at}.body_timeout"), &raw.body_timeout);
    Some(RequestLimits {
        max_request_line: max_request_line?,
        max_header_line: max_header_line?,
        max_header_bytes: max_header_bytes?,
        max_headers: raw.max_headers as usize,
        header_timeout: header_timeout?,
        body_read_timeout: body_read_timeout?,
        body_timeout: body_timeout.filter(|d| !d.is_zero()),
        paths: PathOptions {
            merge_slashes: raw.merge_slashes,
            escaped_slashes: raw.escaped_slashes,
        },
    })
}

/// Loads every TLS listener's certificates, so a missing file, a bad PEM or a key that does
/// not match is a validation error at the config entry naming it.
fn check_certificates(check: &mut Checker, raw: &[RawListener]) -> Vec<ListenerTls> {
    let mut loaded = Vec::new();
    for (i, listener) in raw.iter().enumerate() {
        let Some(tls) = &listener.tls else { continue };
        let mut files = Vec::new();
        let mut certificates = Vec::new();
        for (j, entry) in tls.certificates.iter().enumerate() {
            let at = format!("listeners[{i}].tls.certificates[{j}]");
            let cert = PathBuf::from(&entry.cert);
            let key = PathBuf::from(&entry.key);
            match LoadedCertificate::load(&cert, &key) {
                Ok(certificate) => certificates.push(certificate),
                Err(e) => check.error(&format!("{at}.cert"), e),
            }
            files.push((cert, key));
        }
        loaded.push(ListenerTls {
            listener: listener.name.clone(),
            files,
            certificates: certificates.into(),
            server_name_scopes: Vec::new(),
            client_validation: None,
        });
    }
    loaded
}

/// TLS towards an upstream: always for `protocol: h2`, and for `http1` with a `tls:` section.
fn check_upstream_tls(check: &mut Checker, at: &str, raw: &RawUpstream) -> Option<UpstreamTls> {
    let wanted = match (raw.protocol, &raw.tls) {
        (UpstreamProtocol::H2, tls) => tls.clone().unwrap_or(RawUpstreamTls {
            sni: None,
            verify: true,
            ca_file: None,
            subject_alt_names: None,
            client_certificate: None,
        }),
        (UpstreamProtocol::Http1, Some(tls)) => tls.clone(),
        (UpstreamProtocol::Http1, None) => return None,
        (UpstreamProtocol::H2c | UpstreamProtocol::Tcp, tls) => {
            if tls.is_some() {
                check.error(
                    &format!("{at}.tls"),
                    "h2c and tcp upstreams are cleartext; use protocol: h2 (or http1) for TLS",
                );
            }
            return None;
        }
    };
    // Kubernetes upstreams are checked against the service's cluster DNS name by default.
    let sni = wanted.sni.clone().or_else(|| {
        raw.kubernetes
            .as_ref()
            .map(|k| format!("{}.{}.svc", k.service, k.namespace))
            .or_else(|| {
                raw.dns
                    .as_ref()
                    .map(|d| d.name.trim_end_matches('.').to_string())
            })
    });
    let sni = match sni {
        Some(sni) if !sni.is_empty() => sni,
        _ if wanted.verify => {
            check.error(
                &format!("{at}.tls"),
                "set tls.sni: the name the upstream's certificate is verified against \
                 (or verify: false to skip verification)",
            );
            String::new()
        }
        _ => String::new(),
    };
    let ca_certificates = match &wanted.ca_file {
        None => Vec::new(),
        Some(path) => match crate::tls::load_ca_certificates(Path::new(path)) {
            Ok(certificates) => certificates,
            Err(e) => {
                check.error(&format!("{at}.tls.ca_file"), e);
                Vec::new()
            }
        },
    };
    let subject_alt_names = match &wanted.subject_alt_names {
        None => Vec::new(),
        Some(list) => check_subject_alt_names(check, &format!("{at}.tls"), wanted.verify, list),
    };
    let client_certificate = wanted.client_certificate.as_ref().and_then(|raw| {
        match crate::tls::load_chain_and_key(Path::new(&raw.cert), Path::new(&raw.key)) {
            Ok((chain, key)) => Some(Arc::new(ClientCertificate { chain, key })),
            Err(e) => {
                check.error(&format!("{at}.tls.client_certificate"), e);
                None
            }
        }
    });
    Some(UpstreamTls {
        sni,
        verify: wanted.verify,
        ca_file: wanted.ca_file.map(PathBuf::from),
        ca_certificates,
        subject_alt_names,
        client_certificate,
    })
}

/// `tls.subject_alt_names` at `at` (`tls`): at least one name, each exactly one of a DNS
/// name and a URI with a scheme, and `verify` on (nothing is checked without it).
fn check_subject_alt_names(
    check: &mut Checker,
    at: &str,
    verify: bool,
    list: &[RawSubjectAltName],
) -> Vec<SubjectAltName> {
    let at = format!("{at}.subject_alt_names");
    if list.is_empty() {
        check.error(
            &at,
            "list at least one name, or leave it out to verify against tls.sni",
        );
    }
    if !verify {
        check.error(&at, "needs verify: true (nothing is verified without it)");
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, raw)| match (&raw.dns, &raw.uri) {
            (Some(dns), None) if !dns.trim().is_empty() => Some(SubjectAltName::Dns(
                dns.trim().trim_end_matches('.').to_ascii_lowercase(),
            )),
            (None, Some(uri)) if uri.contains(':') => Some(SubjectAltName::Uri(uri.clone())),
            (None, Some(uri)) => {
                check.error(
                    &format!("{at}[{i}].uri"),
                    format!("{uri:?} is not a URI with a scheme (such as spiffe://...)"),
                );
                None
            }
            _ => {
                check.error(&format!("{at}[{i}]"), "set exactly one of dns and uri");
                None
            }
        })
        .collect()
}

fn check_timeouts(check: &mut Checker, at: &str, raw: &RawTimeouts) -> TimeoutOverrides {
    let mut one = |field: &str, value: &Option<String>| {
        value
            .as_deref()
            .and_then(|text| check.duration(&format!("{at}.{field}"), text))
    };
    let connect = one("connect", &raw.connect);
    let read = one("read", &raw.read);
    let write = one("write", &raw.write);
    let total = one("total", &raw.total).map(|d| (!d.is_zero()).then_some(d));
    let idle = one("idle", &raw.idle);
    if connect.is_some_and(|d| d.is_zero()) {
        check.error(&format!("{at}.connect"), "must be more than 0s");
    }
    for (field, value) in [("read", read), ("write", write), ("idle", idle)] {
        if value.is_some_and(|d| d.is_zero()) {
            check.error(&format!("{at}.{field}"), "must be more than 0s");
        }
    }
    TimeoutOverrides {
        connect,
        read,
        write,
        total,
        idle,
    }
}

fn check_upstreams(check: &mut Checker, raw: &[RawUpstream]) -> Vec<Option<UpstreamConfig>> {
    // The compiler sees only the upstreams that could be built; a name repeated by one
    // that could not is caught here.
    let mut names = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, upstream)| {
            let at = format!("upstreams[{i}]");
            check.unique_name(&mut names, &at, "upstream", &upstream.name);
            let endpoints = check_endpoints(check, &at, upstream);

            let hash_key = match (upstream.balance, &upstream.hash_key) {
                (BalancePolicy::ConsistentHash, None) => {
                    check.error(
                        &format!("{at}.balance"),
                        "consistent_hash needs a hash_key (e.g. hash_key: \"$host$request_uri\")",
                    );
                    None
                }
                (BalancePolicy::ConsistentHash, Some(template)) => match HashKey::parse(template) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        check.error(&format!("{at}.hash_key"), e);
                        None
                    }
                },
                (_, Some(_)) => {
                    check.error(
                        &format!("{at}.hash_key"),
                        "hash_key is only used with balance: consistent_hash",
                    );
                    None
                }
                (_, None) => None,
            };
            if let Some(message) = values::hash_points(upstream.hash_points) {
                check.error(&format!("{at}.hash_points"), message);
            } else if upstream.balance == BalancePolicy::ConsistentHash {
                let total_weight: u64 = endpoints
                    .iter()
                    .flat_map(|(_, list)| list.iter())
                    .map(|e| u64::from(e.weight))
                    .sum();
                if let Some(message) = values::ring_size(total_weight, upstream.hash_points) {
                    check.error(&format!("{at}.hash_points"), message);
                }
            }

            match upstream.protocol {
                UpstreamProtocol::Http1 => {}
                UpstreamProtocol::Tcp => {
                    if hash_key.as_ref().is_some_and(|k| k.needs_request()) {
                        check.error(
                            &format!("{at}.hash_key"),
                            "a tcp upstream has no HTTP request to hash: only $remote_addr is available",
                        );
                    }
                }
                UpstreamProtocol::H2c | UpstreamProtocol::H2 => {}
            }
            if upstream.proxy_protocol.is_some() && upstream.protocol != UpstreamProtocol::Tcp {
                check.error(
                    &format!("{at}.proxy_protocol"),
                    "applies to tcp upstreams only (an HTTP upstream's pooled connections \
                     carry many clients' requests)",
                );
            }
            let tls = check_upstream_tls(check, &at, upstream);
            let is_h2 = matches!(upstream.protocol, UpstreamProtocol::H2c | UpstreamProtocol::H2);
            if let Some(message) = upstream.max_streams.and_then(values::at_least_one) {
                check.error(&format!("{at}.max_streams"), message);
            } else if upstream.max_streams.is_some() && !is_h2 {
                check.error(
                    &format!("{at}.max_streams"),
                    "applies to HTTP/2 upstreams only (protocol: h2c or h2)",
                );
            }
            let health = check_health(check, &at, upstream);
            if upstream.terminating.is_some() && upstream.kubernetes.is_none() {
                check.error(
                    &format!("{at}.terminating"),
                    "only applies to kubernetes upstreams",
                );
            }

            let idle_timeout = check.duration(
                &format!("{at}.keepalive.idle_timeout"),
                &upstream.keepalive.idle_timeout,
            );
            check.nonzero(
                &format!("{at}.keepalive.max_requests"),
                upstream.keepalive.max_requests,
            );

            let overrides = check_timeouts(check, &format!("{at}.timeouts"), &upstream.timeouts);
            let timeouts = Timeouts::DEFAULT.with_overrides(&overrides);

            let retry = &upstream.retry;
            if let Some(message) = values::attempts(retry.attempts) {
                check.error(&format!("{at}.retry.attempts"), message);
            }
            if let Some(message) = values::percent(retry.budget_percent) {
                check.error(&format!("{at}.retry.budget_percent"), message);
            }
            let mut on_status = RetryStatuses::NONE;
            for (i, status) in retry.on_status.iter().enumerate() {
                if !on_status.insert(*status) {
                    check.error(
                        &format!("{at}.retry.on_status[{i}]"),
                        format!("status {status} cannot be retried; write one from 400 to 599"),
                    );
                }
            }
            let backoff = retry
                .backoff
                .as_ref()
                .map(|text| check.duration(&format!("{at}.retry.backoff"), text));
            Some(UpstreamConfig {
                name: upstream.name.clone(),
                origin: check.origin(&at),
                source: endpoints.as_ref()?.0.clone(),
                endpoints: endpoints?.1,
                protocol: upstream.protocol,
                tls,
                max_streams: upstream.max_streams.unwrap_or(crate::model::DEFAULT_MAX_STREAMS),
                balance: upstream.balance,
                hash_key: if upstream.balance == BalancePolicy::ConsistentHash {
                    Some(hash_key?)
                } else {
                    None
                },
                hash_points: upstream.hash_points,
                health: health.as_ref()?.0.clone(),
                slow_start: health?.1,
                keepalive: UpstreamKeepalive {
                    max_idle: upstream.keepalive.max_idle,
                    idle_timeout: idle_timeout?,
                    max_requests: upstream.keepalive.max_requests,
                },
                timeouts,
                retry: RetryPolicy {
                    attempts: retry.attempts,
                    on_connect_failure: retry.on.contains(&RetryCondition::ConnectFailure),
                    on_reset_before_response: retry
                        .on
                        .contains(&RetryCondition::ResetBeforeResponse),
                    methods: retry.methods,
                    on_status,
                    backoff: match backoff {
                        Some(parsed) => Some(parsed?),
                        None => None,
                    },
                    budget_percent: retry.budget_percent,
                },
                proxy_protocol: upstream.proxy_protocol,
            })
        })
        .collect()
}

fn check_endpoints(
    check: &mut Checker,
    at: &str,
    upstream: &RawUpstream,
) -> Option<(EndpointSource, Vec<EndpointConfig>)> {
    if let Some(dns) = &upstream.dns {
        if upstream.kubernetes.is_some() || upstream.endpoints.is_some() {
            check.error(
                &format!("{at}.dns"),
                "set one of endpoints, kubernetes and dns",
            );
            return None;
        }
        return check_dns_name(check, &format!("{at}.dns"), dns)
            .map(|name| (EndpointSource::Dns(name), Vec::new()));
    }
    match (&upstream.kubernetes, &upstream.endpoints) {
        (Some(_), Some(_)) => {
            check.error(
                &format!("{at}.kubernetes"),
                "set either kubernetes or endpoints, not both",
            );
            None
        }
        (None, None) => {
            check.error(
                at,
                "needs endpoints (a static list), kubernetes (discovery) or dns (a name)",
            );
            None
        }
        (Some(service), None) => {
            let is_name = |s: &str| {
                !s.is_empty()
                    && s.len() <= 253
                    && s.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    })
            };
            let mut valid = true;
            for (field, value) in [
                ("namespace", &service.namespace),
                ("service", &service.service),
            ] {
                if !is_name(value) {
                    check.error(
                        &format!("{at}.kubernetes.{field}"),
                        format!("invalid Kubernetes name {value:?}"),
                    );
                    valid = false;
                }
            }
            let port = match &service.port {
                RawServicePort::Number(0) => {
                    check.error(
                        &format!("{at}.kubernetes.port"),
                        "must be 1-65535 or a port name",
                    );
                    valid = false;
                    ServicePort::Number(0)
                }
                RawServicePort::Number(n) => ServicePort::Number(*n),
                RawServicePort::Name(name) => ServicePort::Name(name.clone()),
            };
            valid.then(|| {
                let source = EndpointSource::Kubernetes(ServiceRef {
                    namespace: service.namespace.clone(),
                    service: service.service.clone(),
                    port,
                    terminating: upstream.terminating.unwrap_or(TerminatingPolicy::Drain),
                });
                (source, Vec::new())
            })
        }
        (None, Some(list)) => {
            if list.is_empty() {
                check.error(&format!("{at}.endpoints"), "needs at least one endpoint");
            }
            let mut seen = HashSet::new();
            let mut endpoints = Vec::with_capacity(list.len());
            for (j, endpoint) in list.iter().enumerate() {
                let (address_path, address, weight) = match endpoint {
                    RawEndpoint::Address(address) => (format!("{at}.endpoints[{j}]"), address, 1),
                    RawEndpoint::Weighted(w) => {
                        (format!("{at}.endpoints[{j}].address"), &w.address, w.weight)
                    }
                };
                if let Some(message) = values::weight(weight) {
                    check.error(&format!("{at}.endpoints[{j}].weight"), message);
                } else if weight > 1000 {
                    check.error(
                        &format!("{at}.endpoints[{j}].weight"),
                        "weight must be at most 1000",
                    );
                }
                if let Some(address) = check.socket_addr(&address_path, address) {
                    if !seen.insert(address) {
                        check.error(&address_path, format!("duplicate endpoint {address}"));
                    }
                    endpoints.push(EndpointConfig {
                        address,
                        weight,
                        terminating: false,
                    });
                }
            }
            (endpoints.len() == list.len()).then_some((EndpointSource::Static, endpoints))
        }
    }
}

/// `upstreams[].dns`: a host name (an IP address belongs in `endpoints`), a port and TTL
/// bounds.
fn check_dns_name(check: &mut Checker, at: &str, raw: &RawDnsName) -> Option<DnsName> {
    let errors_before = check.errors.len();
    let name = raw.name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        check.error(
            &format!("{at}.name"),
            format!(
                "invalid DNS name {:?}: expected a host name like api.example.com (an IP \
                 address goes in endpoints)",
                raw.name
            ),
        );
    }
    if raw.port == 0 {
        check.error(&format!("{at}.port"), "must be 1-65535");
    }
    let min_ttl = check.duration(&format!("{at}.min_ttl"), &raw.min_ttl);
    let max_ttl = check.duration(&format!("{at}.max_ttl"), &raw.max_ttl);
    if let (Some(min), Some(max)) = (min_ttl, max_ttl) {
        if min.is_zero() {
            check.error(&format!("{at}.min_ttl"), "must be longer than 0s");
        } else if max < min {
            check.error(&format!("{at}.max_ttl"), "must not be shorter than min_ttl");
        }
    }
    if check.errors.len() != errors_before {
        return None;
    }
    Some(DnsName {
        name,
        port: raw.port,
        min_ttl: min_ttl?,
        max_ttl: max_ttl?,
    })
}

/// Checks `health` and `slow_start`; `None` if something is invalid (already reported).
fn check_health(
    check: &mut Checker,
    at: &str,
    upstream: &RawUpstream,
) -> Option<(HealthConfig, Option<Duration>)> {
    let mut valid = true;
    let slow_start = match &upstream.slow_start {
        Some(text) => match check.duration(&format!("{at}.slow_start"), text) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                valid = false;
                None
            }
        },
        None => None,
    };
    let Some(health) = &upstream.health else {
        return valid.then_some((HealthConfig::default(), slow_start));
    };
    let active = health.active.as_ref().and_then(|active| {
        let a = format!("{at}.health.active");
        let interval = check.duration(&format!("{a}.interval"), &active.interval);
        let timeout = check.duration(&format!("{a}.timeout"), &active.timeout);
        if interval.is_some_and(|d| d.is_zero()) {
            check.error(&format!("{a}.interval"), "must be more than 0s");
        }
        if timeout.is_some_and(|d| d.is_zero()) {
            check.error(&format!("{a}.timeout"), "must be more than 0s");
        }
        check.nonzero(&format!("{a}.healthy_after"), active.healthy_after);
        check.nonzero(&format!("{a}.unhealthy_after"), active.unhealthy_after);
        let expect = parse_status_range(&active.expect_status);
        if expect.is_none() {
            check.error(
                &format!("{a}.expect_status"),
                format!(
                    "invalid status range {:?}: write e.g. 200 or 200-399",
                    active.expect_status
                ),
            );
        }
        let grpc_upstream = matches!(
            upstream.protocol,
            UpstreamProtocol::H2c | UpstreamProtocol::H2
        );
        let probe = match (&active.http_path, &active.grpc_service) {
            (Some(_), Some(_)) => {
                check.error(
                    &format!("{a}.grpc_service"),
                    "is an alternative to http_path: set one of them",
                );
                None
            }
            (None, Some(_)) if !grpc_upstream => {
                check.error(
                    &format!("{a}.grpc_service"),
                    "gRPC health checking needs protocol: h2c or h2",
                );
                None
            }
            (None, Some(_)) if active.host.is_some() => {
                check.error(&format!("{a}.host"), "is only used with http_path");
                None
            }
            (None, Some(service)) => Some(Probe::Grpc {
                service: service.clone(),
            }),
            (path, None) => match path {
                Some(path)
                    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace()) =>
                {
                    check.error(
                        &format!("{a}.http_path"),
                        "must start with / and hold no spaces",
                    );
                    None
                }
                Some(path) => Some(Probe::Http {
                    path: path.clone(),
                    host: active.host.clone(),
                    expect: expect?,
                }),
                None if active.host.is_some() => {
                    check.error(&format!("{a}.host"), "is only used with http_path");
                    None
                }
                None => Some(Probe::Tcp),
            },
        };
        Some(ActiveCheck {
            probe: probe?,
            interval: interval.filter(|d| !d.is_zero())?,
            timeout: timeout.filter(|d| !d.is_zero())?,
            healthy_after: active.healthy_after.max(1),
            unhealthy_after: active.unhealthy_after.max(1),
        })
    });
    if health.active.is_some() && active.is_none() {
        valid = false;
    }
    let passive = health.passive.as_ref().and_then(|passive| {
        let p = format!("{at}.health.passive");
        check.nonzero(
            &format!("{p}.consecutive_failures"),
            passive.consecutive_failures,
        );
        let eject_for = check.duration(&format!("{p}.eject_for"), &passive.eject_for);
        if eject_for.is_some_and(|d| d.is_zero()) {
            check.error(&format!("{p}.eject_for"), "must be more than 0s");
        }
        if passive.max_ejected_percent > 100 {
            check.error(
                &format!("{p}.max_ejected_percent"),
                "must be between 0 and 100",
            );
        }
        Some(PassiveEjection {
            consecutive_failures: passive.consecutive_failures.max(1),
            eject_for: eject_for.filter(|d| !d.is_zero())?,
            max_ejected_percent: passive.max_ejected_percent.min(100),
            on_5xx: passive.on_5xx,
        })
    });
    if health.passive.is_some() && passive.is_none() {
        valid = false;
    }
    let panic_threshold_percent = health.panic_threshold_percent.unwrap_or(50);
    if let Some(message) = values::percent(panic_threshold_percent) {
        check.error(&format!("{at}.health.panic_threshold_percent"), message);
        valid = false;
    }
    valid.then_some((
        HealthConfig {
            active,
            passive,
            panic_threshold_percent,
        },
        slow_start,
    ))
}

/// Parses `200` or `200-399`.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then_some((low, high))
}

/// The routes of the file, each with whether its hosts and paths are all valid (a route
/// with an invalid one must not claim "every host" or "every path" in their place).
fn check_routes(check: &mut Checker, raw: &RawConfig) -> Vec<(RouteConfig, bool)> {
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, route) in raw.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if route.name.is_empty() {
            check.error(&format!("{at}.name"), "must not be empty");
        }
        let rate_limit =
            (route.rate_limit.as_ref()).and_then(|limit| limits::rate_limit(check, &at, limit));
        let global_rate_limit = route
            .global_rate_limit
            .as_ref()
            .and_then(|limit| limits::global_rate_limit(check, &at, limit, raw.redis.is_some()));

        let errors_before = check.errors.len();
        let hosts = check_hosts(check, &at, &route.hosts);
        let paths = check_paths(check, &at, &route.paths);
        let conditions = traffic::conditions(check, &at, route);
        let matchable = check.errors.len() == errors_before;
        let backends = traffic::backends(check, &at, route);
        let canary = route
            .canary
            .as_ref()
            .and_then(|c| traffic::canary(check, &format!("{at}.canary"), c));
        let filters = traffic::filters(check, &at, route);
        let affinity = route
            .affinity
            .as_ref()
            .and_then(|a| traffic::affinity(check, &at, a));
        let timeouts = check_timeouts(check, &format!("{at}.timeouts"), &route.timeouts);
        let max_body_size = check
            .size(&format!("{at}.max_body_size"), &route.max_body_size)
            .unwrap_or_default();
        if route.request_buffering && !(1..=values::MAX_BUFFERED_BODY).contains(&max_body_size) {
            check.error(
                &format!("{at}.max_body_size"),
                format!(
                    "request buffering holds bodies in memory, so it needs a limit of at most \
                     64m (got {:?}); set request_buffering: false to stream larger bodies",
                    route.max_body_size
                ),
            );
        }
        routes.push((
            RouteConfig {
                name: route.name.clone(),
                origin: check.origin(&at),
                listener: route.listener.clone(),
                hosts,
                paths,
                conditions,
                backends,
                unresolved: None,
                unresolved_weight: 0,
                canary,
                filters,
                affinity,
                access: traffic::access(check, &at, &route.allow, &route.deny),
                cors: route.cors.as_ref().map(|c| traffic::cors(check, &at, c)),
                auth: route.auth.as_ref().and_then(|a| auth::auth(check, &at, a)),
                require_client_certificate: route
                    .require_client_certificate
                    .as_ref()
                    .and_then(|raw| client_certificate_requirement(check, &at, raw)),
                error_pages: error_pages(check, &at, &route.error_pages),
                fallback: false,
                timeouts,
                retry: None,
                relay_tls: false,
                rate_limit,
                global_rate_limit,
                max_concurrent_per_client: route.max_concurrent_per_client.inspect(|n| {
                    if *n == 0 {
                        check.error(
                            &format!("{at}.max_concurrent_per_client"),
                            "must be at least 1",
                        );
                    }
                }),
                body: BodyPolicy {
                    buffering: route.request_buffering,
                    max_size: (max_body_size > 0).then_some(max_body_size),
                },
                tracing: route.tracing,
            },
            matchable,
        ));
    }
    for (i, listener) in raw.listeners.iter().enumerate() {
        let Some(default_backend) = &listener.default_backend else {
            continue;
        };
        let at = format!("listeners[{i}].default_backend");
        if listener.protocol == ListenerProtocol::Tcp {
            check.error(&at, "applies to http listeners only");
            continue;
        }
        let mut route = RouteConfig::new(
            &format!("{}/default_backend", listener.name),
            check.origin(&at),
            &listener.name,
            &default_backend.upstream,
        );
        route.fallback = true;
        routes.push((route, true));
    }
    routes
}

fn check_hosts(check: &mut Checker, at: &str, raw: &[String]) -> Vec<HostMatch> {
    let mut hosts = Vec::with_capacity(raw.len());
    for (j, host) in raw.iter().enumerate() {
        let host = host.to_ascii_lowercase();
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            check.error(
                &format!("{at}.hosts[{j}]"),
                format!("invalid host {host:?}: expected a name like shop.example.com or *.example.com (no port)"),
            );
            continue;
        }
        hosts.push(if wildcard {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        });
    }
    hosts
}

fn check_paths(check: &mut Checker, at: &str, raw: &[RawPathMatch]) -> Vec<PathMatch> {
    let mut paths = Vec::with_capacity(raw.len());
    for (j, path) in raw.iter().enumerate() {
        let p = format!("{at}.paths[{j}]");
        let given = [
            ("prefix", &path.prefix),
            ("segment_prefix", &path.segment_prefix),
            ("exact", &path.exact),
            ("regex", &path.regex),
        ];
        let mut set = given
            .iter()
            .filter_map(|(kind, value)| Some((*kind, (*value).as_ref()?)));
        let (Some((kind, text)), None) = (set.next(), set.next()) else {
            check.error(
                &p,
                "needs exactly one of prefix, segment_prefix, exact or regex",
            );
            continue;
        };
        if kind == "regex" {
            if let Some(regex) = traffic::anchored_regex(check, &format!("{p}.regex"), text) {
                paths.push(PathMatch::Regex(regex));
            }
            continue;
        }
        if !text.starts_with('/') {
            check.error(&format!("{p}.{kind}"), "must start with /");
            continue;
        }
        paths.push(match kind {
            "prefix" => PathMatch::Prefix(text.clone()),
            "exact" => PathMatch::Exact(text.clone()),
            _ => {
                let trimmed = text.trim_end_matches('/');
                PathMatch::SegmentPrefix(if trimmed.is_empty() {
                    "/".into()
                } else {
                    trimmed.into()
                })
            }
        });
    }
    paths
}

/// `routes[].error_pages`; page files are read here, so a missing one is an error at the
/// rule naming it.
/// `tracing:` checked: the collector's URL, durations, sizes and the sampling ratio.
fn check_tracing(check: &mut Checker, raw: &RawTracing) -> Option<TracingSettings> {
    let collector = otlp_endpoint(&raw.otlp_endpoint).map_err(|why| {
        check.error(
            "tracing.otlp_endpoint",
            format!(
                "invalid URL {:?}: {why}; write e.g. http://otel-collector:4318/v1/traces",
                raw.otlp_endpoint
            ),
        )
    });
    let export_timeout = check.duration("tracing.export_timeout", &raw.export_timeout);
    let batch_delay = check.duration("tracing.batch_delay", &raw.batch_delay);
    let ratio = raw.sampling.ratio;
    if !(0.0..=1.0).contains(&ratio) {
        check.error(
            "tracing.sampling.ratio",
            format!("{ratio} is not a share: write 0 to 1 (0.05 traces 5% of requests)"),
        );
    }
    if raw.batch_spans == 0 {
        check.error("tracing.batch_spans", "must be at least 1");
    }
    if raw.queue_spans < raw.batch_spans {
        check.error(
            "tracing.queue_spans",
            format!("must be at least batch_spans ({})", raw.batch_spans),
        );
    }
    if raw.service_name.trim().is_empty() {
        check.error("tracing.service_name", "must not be empty");
    }
    Some(TracingSettings {
        collector: collector.ok()?,
        export_timeout: export_timeout?,
        sampler: Sampler {
            ratio,
            parent_based: raw.sampling.parent_based,
        },
        queue_spans: raw.queue_spans,
        batch_spans: raw.batch_spans,
        batch_delay: batch_delay?,
        service_name: raw.service_name.clone(),
    })
}

/// An OTLP/HTTP URL as its parts; a URL without a path gets OTLP's `/v1/traces`.
fn otlp_endpoint(text: &str) -> Result<OtlpEndpoint, String> {
    let uri = text
        .parse::<http::Uri>()
        .map_err(|e| format!("not a URL ({e})"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the scheme must be http or https".into()),
    };
    let host = uri.host().ok_or("no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/v1/traces".to_string(),
        Some(path) => path.to_string(),
    };
    Ok(OtlpEndpoint {
        tls,
        host,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 4318 }),
        path,
    })
}

fn error_pages(check: &mut Checker, at: &str, raw: &[RawErrorPage]) -> Option<Arc<ErrorPages>> {
    if raw.is_empty() {
        return None;
    }
    let mut rules = Vec::with_capacity(raw.len());
    for (i, page) in raw.iter().enumerate() {
        let at = format!("{at}.error_pages[{i}]");
        if page.status.is_empty() {
            check.error(&format!("{at}.status"), "needs at least one status");
        }
        for status in &page.status {
            if !(400..=599).contains(status) {
                check.error(
                    &format!("{at}.status"),
                    format!("{status} is not an error status (400-599)"),
                );
            }
        }
        let source = match (&page.file, &page.upstream) {
            (Some(file), None) => {
                let path = PathBuf::from(file);
                match std::fs::read(&path) {
                    Ok(body) => Some(PageSource::File(PageFile {
                        content_type: PageFile::content_type_of(&path),
                        path,
                        body: body.into(),
                    })),
                    Err(e) => {
                        check.error(
                            &format!("{at}.file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            (None, Some(upstream)) => Some(PageSource::Upstream(upstream.clone())),
            _ => {
                check.error(&at, "needs exactly one of file and upstream");
                None
            }
        };
        if let Some(source) = source {
            rules.push(ErrorPage {
                statuses: page.status.clone(),
                source,
            });
        }
    }
    Some(Arc::new(ErrorPages { rules }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(yaml: &str) -> Vec<String> {
        match super::super::parse(Path::new("t.yaml"), yaml) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn subject_alt_names_need_verify_and_one_name_each() {
        let with = |tls: &str| {
            errors_of(&format!(
                "listeners: [{{ name: web, listen: \"127.0.0.1:1\" }}]\n\
                 routes: [{{ name: r, listener: web, upstream: u }}]\n\
                 upstreams: [{{ name: u, endpoints: [\"127.0.0.1:2\"], tls: {tls} }}]\n"
            ))
        };
        assert!(with(
            "{ sni: a.test, subject_alt_names: [{ dns: A.test. }, { uri: \"spiffe://x/y\" }] }"
        )
        .is_empty());
        let cases = [
            (
                "{ sni: a.test, verify: false, subject_alt_names: [{ dns: a.test }] }",
                "needs verify: true",
            ),
            (
                "{ sni: a.test, subject_alt_names: [] }",
                "list at least one name",
            ),
            (
                "{ sni: a.test, subject_alt_names: [{ dns: a.test, uri: \"spiffe://a\" }] }",
                "exactly one of dns and uri",
            ),
            (
                "{ sni: a.test, subject_alt_names: [{}] }",
                "exactly one of dns and uri",
            ),
            (
                "{ sni: a.test, subject_alt_names: [{ uri: no-scheme }] }",
                "not a URI with a scheme",
            ),
            (
                "{ sni: a.test, subject_alt_names: [{ ip: 10.0.0.1 }] }",
                "ip",
            ),
        ];
        for (tls, wanted) in cases {
            let errors = with(tls);
            assert!(
                errors.iter().any(|e| e.contains(wanted)),
                "{tls}: {errors:?}"
            );
        }
    }

    #[test]
    fn a_ring_over_the_point_limit_is_an_error() {
        let yaml = "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n\
                    routes: [{ name: all, listener: web, upstream: app }]\n\
                    upstreams:\n  - { name: app, balance: consistent_hash, hash_key: $host, \
                    hash_points: 10000, endpoints: [{ address: \"127.0.0.1:2\", weight: 1000 }] }\n";
        let Err(errors) = super::super::parse(Path::new("t.yaml"), yaml) else {
            panic!("a ring over the limit was accepted");
        };
        let errors = errors.to_string();
        assert!(
            errors.contains("upstreams[0].hash_points")
                && errors.contains("10000000 points")
                && errors.contains("t.yaml:4:"),
            "{errors}"
        );
    }

    /// A source building model values with the model's constructors gets what the file
    /// gives for the same items written with only their required keys.
    #[test]
    fn the_file_defaults_are_the_model_defaults() {
        let yaml = "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n\
                    routes: [{ name: all, listener: web, upstream: app }]\n\
                    upstreams: [{ name: app, endpoints: [\"127.0.0.1:2\"] }]\n";
        let file = super::super::parse(Path::new("t.yaml"), yaml).expect("valid");
        let upstream = &file.fragment.upstreams[0];
        let built = UpstreamConfig::new(
            "app",
            upstream.origin.clone(),
            EndpointSource::Static,
            upstream.endpoints.clone(),
        );
        assert_eq!(**upstream, built);
        let route = &file.fragment.routes[0];
        let built = RouteConfig::new("all", route.origin.clone(), "web", "app");
        assert!(route.hosts.is_empty() && route.paths.is_empty());
        assert_eq!(route.body, built.body);
        assert_eq!(route.timeouts, built.timeouts);
        assert!(route.rate_limit.is_none() && built.rate_limit.is_none());
    }

    #[test]
    fn an_invalid_path_claims_nothing_in_its_place() {
        let errors = errors_of(
            "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n\
             routes:\n  - { name: all, listener: web, upstream: app }\n\
             \x20 - { name: api, listener: web, upstream: app, paths: [{ prefix: api }] }\n\
             upstreams: [{ name: app, endpoints: [\"127.0.0.1:2\"] }]\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("routes[1].paths[0].prefix: must start with /"));
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range("204"), Some((204, 204)));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("abc"), None);
    }

    #[test]
    fn reports_all_errors_in_file_order() {
        let yaml = "\
listeners:
  - { name: web, listen: \"nope\" }
routes:
  - { name: r, listener: web, upstream: missing, timeouts: { read: 3 parsecs } }
upstreams:
  - name: u
    endpoints: [\"127.0.0.1:1\", { address: \"127.0.0.1:2\", weight: 0 }]
    balance: consistent_hash
";
        let errors = errors_of(yaml);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors[0].starts_with("t.yaml:2:26: listeners[0].listen: invalid address"));
        assert!(errors[1].starts_with("t.yaml:4:41: routes[0].upstream: undefined upstream"));
        assert!(errors[2].starts_with("t.yaml:4:68: routes[0].timeouts.read: invalid duration"));
        assert!(errors[3].contains("t.yaml:7:") && errors[3].contains("weight 0"));
        assert!(errors[4]
            .starts_with("t.yaml:8:14: upstreams[0].balance: consistent_hash needs a hash_key"));
    }
}
