//! ingress-nginx's `nginx.ingress.kubernetes.io/*` annotations, parsed into typed values.
//!
//! Every annotation with the prefix gets an outcome: mapped (with what it became), accepted
//! (nothing to do in sluice), not supported (served without it, and said so), refused
//! (snippets: raw nginx configuration, the injection class of CVE-2025-1974), or invalid
//! (a bad value). A value is parsed here, never pasted into anything.

use crate::model::{
    AccessList, BalancePolicy, CookieAffinity, Cors, GlobalRateLimit, HashKey, IpNet, LimitKey,
    OriginPattern, RedirectStatus, RedisFailureMode, RetryStatuses, SameSite, TimeoutOverrides,
    UpstreamProtocol,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The annotation prefix of ingress-nginx.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// What became of one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Mapped onto sluice's model; the text says onto what.
    Mapped(String),
    /// Nothing to do: sluice behaves so always.
    Accepted(String),
    /// Not supported: the object is served without it.
    Unsupported(String),
    /// Refused: the object is rejected.
    Refused(String),
    /// A value sluice cannot read: the object is rejected.
    Invalid(String),
}

impl Outcome {
    /// Whether the object must be rejected for it.
    pub fn rejects(&self) -> bool {
        matches!(self, Outcome::Refused(_) | Outcome::Invalid(_))
    }

    /// `mapped`, `accepted`, `not supported`, `refused`, `invalid`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Mapped(_) => "mapped",
            Outcome::Accepted(_) => "accepted",
            Outcome::Unsupported(_) => "not supported",
            Outcome::Refused(_) => "refused",
            Outcome::Invalid(_) => "invalid",
        }
    }

    /// The explanation.
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Mapped(s)
            | Outcome::Accepted(s)
            | Outcome::Unsupported(s)
            | Outcome::Refused(s)
            | Outcome::Invalid(s) => s,
        }
    }
}

/// One annotation of an object and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationReport {
    /// The name without the prefix, e.g. `rewrite-target`.
    pub name: String,
    pub value: String,
    pub outcome: Outcome,
}

/// The redirect of `permanent-redirect` or `temporal-redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    /// Path and query, taken as written.
    pub path: String,
    pub status: RedirectStatus,
}

/// `auth-url` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuthSpec {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query of the check.
    pub path: String,
    pub signin: Option<String>,
    pub response_headers: Vec<http::HeaderName>,
    /// `auth-method`; `None`: the request's own.
    pub method: Option<http::Method>,
}

/// How `auth-secret` holds the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSecretType {
    /// Key `auth`: an htpasswd file.
    AuthFile,
    /// Each key a user, each value the password hash.
    AuthMap,
}

/// `auth-type: basic` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthSpec {
    /// The Secret, `name` or `namespace/name`.
    pub secret: String,
    pub secret_type: AuthSecretType,
    pub realm: String,
}

/// The canary rule of a canary Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CanarySpec {
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub header_pattern: Option<String>,
    pub cookie: Option<String>,
    pub weight: u32,
    pub weight_total: u32,
}

/// `auth-tls-*`: client certificates checked against a CA from a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSpec {
    /// The Secret with `ca.crt`, `name` or `namespace/name`.
    pub secret: String,
    /// `on`: a certificate is required; otherwise it is optional.
    pub required: bool,
    pub verify_depth: u8,
}

/// `proxy-ssl-*`: how upstream TLS is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTlsSpec {
    /// The Secret with `ca.crt` to verify with.
    pub secret: Option<String>,
    pub verify: bool,
    /// The name to verify and send as SNI.
    pub name: Option<String>,
}

/// ingress-nginx's `next_upstream` conditions, as far as sluice has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextUpstream {
    /// `off`: never retry.
    pub off: bool,
    /// `error` or `timeout`: retry on connection failures and resets.
    pub on_error: bool,
    /// `non_idempotent`: POST and PATCH too.
    pub non_idempotent: bool,
    /// `http_500`, `http_502`, ...: responses with these statuses are retried.
    pub on_status: RetryStatuses,
}

/// The typed annotations of one Ingress.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    pub redirect: Option<RedirectTarget>,
    pub app_root: Option<String>,
    pub from_to_www: bool,
    /// `Some(None)`: no limit.
    pub body_max: Option<Option<u64>>,
    pub timeouts: TimeoutOverrides,
    pub next_upstream: Option<NextUpstream>,
    pub next_upstream_tries: Option<u32>,
    /// Protocol and whether it runs over TLS.
    pub protocol: Option<(UpstreamProtocol, bool)>,
    pub hash_key: Option<HashKey>,
    pub balance: Option<BalancePolicy>,
    pub affinity: Option<CookieAffinity>,
    pub canary: bool,
    pub canary_rule: CanarySpec,
    pub access: AccessList,
    pub basic_auth: Option<BasicAuthSpec>,
    pub external_auth: Option<ExternalAuthSpec>,
    pub cors: Option<Cors>,
    pub limit_rps: Option<u32>,
    pub limit_burst: Option<u32>,
    pub limit_exempt: Vec<IpNet>,
    pub limit_connections: Option<u32>,
    /// `global-rate-limit` and its `-window`, `-key` and `-ignored-cidrs`.
    pub global_rate_limit: Option<GlobalRateLimit>,
    pub upstream_vhost: Option<String>,
    /// `server-alias`: more names for the hosts of the object's rules.
    pub server_aliases: Vec<String>,
    pub forwarded_prefix: Option<String>,
    pub custom_errors: Vec<u16>,
    pub default_backend: Option<String>,
    pub service_upstream: bool,
    pub upstream_tls: Option<UpstreamTlsSpec>,
    pub client_cert: Option<ClientCertSpec>,
    /// `ssl-passthrough`: the hosts' TLS goes untouched to the backend of their `/` path.
    pub ssl_passthrough: bool,
    /// What happened to each annotation, by name.
    pub reports: Vec<AnnotationReport>,
}

impl Annotations {
    /// Whether any annotation makes the object invalid.
    pub fn rejects(&self) -> bool {
        self.reports.iter().any(|r| r.outcome.rejects())
    }
}

/// A parse result: the value or why not.
type Parsed<T> = Result<T, String>;

fn boolean(value: &str) -> Parsed<bool> {
    // Go's strconv.ParseBool, which ingress-nginx uses.
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

fn number<T: std::str::FromStr>(value: &str) -> Parsed<T> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

/// nginx sizes: `8m`, `512k`, `1g`, `1024`; `0` means no limit.
fn size(value: &str) -> Parsed<Option<u64>> {
    let value = value.trim();
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], Some(c)),
        _ => (value, None),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a size (e.g. 8m, 512k, 1g, 0 for no limit)"))?;
    let factor: u64 = match unit.map(|u| u.to_ascii_lowercase()) {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(other) => return Err(format!("unknown size unit {other:?} in {value:?}")),
    };
    Ok((n != 0).then(|| n.saturating_mul(factor)))
}

/// Seconds as ingress-nginx writes them (`60`), or with a unit (`60s`, `500ms`).
fn seconds(value: &str) -> Parsed<Duration> {
    let value = value.trim();
    if let Ok(n) = value.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(value).map_err(|_| format!("{value:?} is not a number of seconds"))
}

/// `global-rate-limit-key`: nginx variables, `$remote_addr` when absent.
fn global_limit_key(value: Option<&str>) -> Parsed<LimitKey> {
    match value.map(str::trim) {
        None | Some("$remote_addr") => Ok(LimitKey::ClientIp),
        Some(template) => Ok(LimitKey::Template(HashKey::parse(template)?)),
    }
}

fn networks(value: &str) -> Parsed<Vec<IpNet>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<IpNet>())
        .collect()
}

fn header_names(value: &str) -> Parsed<Vec<http::HeaderName>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            http::HeaderName::from_bytes(v.as_bytes())
                .map_err(|_| format!("{v:?} is not a header name"))
        })
        .collect()
}

/// An absolute path without control characters or spaces.
fn path(value: &str) -> Parsed<String> {
    let value = value.trim();
    if !value.starts_with('/') || value.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("{value:?} is not an absolute path"));
    }
    Ok(value.to_string())
}

/// `scheme://host[:port][/path]`.
fn url(value: &str) -> Parsed<(String, String, Option<u16>, String)> {
    let uri: http::Uri = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a URL"))?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))
        .ok_or_else(|| format!("{value:?} is not an http or https URL"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{value:?} has no host"))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok((scheme.into(), host.into(), uri.port_u16(), path))
}

fn origins(value: &str) -> Parsed<Vec<OriginPattern>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|origin| {
            if origin == "*" {
                return Ok(OriginPattern::Any);
            }
            if origin.chars().any(|c| c.is_control() || c == ' ') || !origin.contains("://") {
                return Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port])"
                ));
            }
            Ok(match origin.split_once('*') {
                Some((before, after)) => OriginPattern::Wildcard {
                    before: before.into(),
                    after: after.into(),
                },
                None => OriginPattern::Exact(origin.into()),
            })
        })
        .collect()
}

fn methods(value: &str) -> Parsed<Vec<http::Method>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|m| {
            http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{m:?} is not a method"))
        })
        .collect()
}

/// The annotations that are raw nginx configuration.
fn is_snippet(name: &str) -> bool {
    name.ends_with("snippet") || name == "modsecurity-transaction-id"
}

/// Parses the annotations of one object.
pub fn parse(annotations: &BTreeMap<String, String>) -> Annotations {
    let get = |name: &str| {
        annotations
            .get(&format!("{PREFIX}{name}"))
            .map(String::as_str)
    };
    let mut out = Annotations::default();
    let mut cors = Cors {
        allow_origins: vec![OriginPattern::Any],
        allow_methods: methods("GET, PUT, POST, DELETE, PATCH, OPTIONS").unwrap_or_default(),
        allow_headers: header_names(
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,\
             Content-Type,Range,Authorization",
        )
        .unwrap_or_default(),
        expose_headers: Vec::new(),
        allow_credentials: true,
        max_age: Some(Duration::from_secs(1_728_000)),
    };
    let mut affinity = CookieAffinity {
        name: "INGRESSCOOKIE".into(),
        path: "/".into(),
        max_age: None,
        same_site: None,
        secure: false,
    };
    let mut limit_burst_multiplier = 5u32;
    let mut external: Option<ExternalAuthSpec> = None;
    let mut redirect_code = RedirectStatus::MovedPermanently;
    let mut basic = BasicAuthSpec {
        secret: String::new(),
        secret_type: AuthSecretType::AuthFile,
        realm: "Authentication Required".into(),
    };
    let mut basic_wanted = false;
    let mut client_cert = ClientCertSpec {
        secret: String::new(),
        required: true,
        verify_depth: 1,
    };
    let mut upstream_tls = UpstreamTlsSpec::default();
    let mut upstream_tls_wanted = false;
    let mut canary_weight_total = 100;
    for (full, value) in annotations {
        let Some(name) = full.strip_prefix(PREFIX) else {
            continue;
        };
        let outcome = one(
            name,
            value,
            get,
            &mut out,
            &mut Staging {
                cors: &mut cors,
                affinity: &mut affinity,
                limit_burst_multiplier: &mut limit_burst_multiplier,
                external: &mut external,
                redirect_code: &mut redirect_code,
                basic: &mut basic,
                basic_wanted: &mut basic_wanted,
                client_cert: &mut client_cert,
                upstream_tls: &mut upstream_tls,
                upstream_tls_wanted: &mut upstream_tls_wanted,
                canary_weight_total: &mut canary_weight_total,
            },
        );
        out.reports.push(AnnotationReport {
            name: name.to_string(),
            value: value.clone(),
            outcome,
        });
    }
    if let Some(redirect) = &mut out.redirect {
        if redirect.status == RedirectStatus::MovedPermanently {
            redirect.status = redirect_code;
        }
    }
    if get("enable-cors").is_some_and(|v| boolean(v) == Ok(true)) {
        out.cors = Some(cors);
    }
    if get("affinity").map(str::trim) == Some("cookie") {
        out.affinity = Some(affinity);
    }
    if let Some(rps) = out.limit_rps {
        out.limit_burst = Some(rps.saturating_mul(limit_burst_multiplier));
    }
    if let Some(mut spec) = external {
        spec.signin = get("auth-signin").map(str::to_string);
        out.external_auth = Some(spec);
    }
    if basic_wanted {
        out.basic_auth = Some(basic);
    }
    if !client_cert.secret.is_empty() {
        out.client_cert = Some(client_cert);
    }
    if upstream_tls_wanted {
        out.upstream_tls = Some(upstream_tls);
    }
    out.canary_rule.weight_total = canary_weight_total;
    out
}

/// Values gathered across several annotations before they become one setting.
struct Staging<'a> {
    cors: &'a mut Cors,
    affinity: &'a mut CookieAffinity,
    limit_burst_multiplier: &'a mut u32,
    external: &'a mut Option<ExternalAuthSpec>,
    redirect_code: &'a mut RedirectStatus,
    basic: &'a mut BasicAuthSpec,
    basic_wanted: &'a mut bool,
    client_cert: &'a mut ClientCertSpec,
    upstream_tls: &'a mut UpstreamTlsSpec,
    upstream_tls_wanted: &'a mut bool,
    canary_weight_total: &'a mut u32,
}

/// The outcome of annotation `name` (without prefix) = `value`, recording its effect.
fn one<'v>(
    name: &str,
    value: &str,
    get: impl Fn(&str) -> Option<&'v str>,
    out: &mut Annotations,
    staging: &mut Staging,
) -> Outcome {
    let result: Parsed<Outcome> = (|| {
        let mapped = |what: String| Ok(Outcome::Mapped(what));
        Ok(match name {
            _ if is_snippet(name) => Outcome::Refused(
                "raw nginx configuration is never run by sluice (the snippet injection \
                 class of CVE-2025-1974); express it with annotations or sluice routes"
                    .into(),
            ),
            "rewrite-target" => {
                out.rewrite_target = Some(value.trim().to_string());
                return mapped(format!(
                    "path rewritten to {value:?} (paths become case-insensitive regexes, $N capture groups)"
                ));
            }
            "use-regex" => {
                out.use_regex = boolean(value)?;
                return mapped("paths are case-insensitive regexes anchored at the start".into());
            }
            "ssl-redirect" => {
                out.ssl_redirect = Some(boolean(value)?);
                return mapped("https_redirect on the http listener for TLS hosts".into());
            }
            "force-ssl-redirect" => {
                out.force_ssl_redirect = boolean(value)?;
                return mapped("https_redirect on the http listener".into());
            }
            "permanent-redirect" | "temporal-redirect" => {
                let (scheme, host, port, path) = url(value)?;
                let status = if name == "permanent-redirect" {
                    RedirectStatus::MovedPermanently
                } else {
                    RedirectStatus::Found
                };
                let temporal = get("temporal-redirect").is_some();
                if name == "permanent-redirect" && temporal {
                    return Ok(Outcome::Unsupported(
                        "temporal-redirect is set too and wins, as in ingress-nginx".into(),
                    ));
                }
                out.redirect = Some(RedirectTarget {
                    scheme,
                    host,
                    port,
                    path,
                    status,
                });
                return mapped(format!("redirect to {value}"));
            }
            "permanent-redirect-code" => {
                let code: u16 = number(value)?;
                *staging.redirect_code = RedirectStatus::from_code(code).ok_or_else(|| {
                    format!("{code} is not a redirect status (301, 302, 303, 307, 308)")
                })?;
                return mapped(format!("redirect status {code}"));
            }
            "app-root" => {
                out.app_root = Some(path(value)?);
                return mapped("app_root redirect of /".into());
            }
            "from-to-www-redirect" => {
                out.from_to_www = boolean(value)?;
                return mapped("a route for the other name redirecting (308)".into());
            }
            "proxy-body-size" => {
                let limit = size(value)?;
                out.body_max = Some(limit);
                return mapped(match limit {
                    Some(bytes) => format!("body.max_size {bytes} bytes"),
                    None => "no body size limit".into(),
                });
            }
            "client-body-buffer-size" => {
                size(value)?;
                Outcome::Accepted("sluice streams request bodies; nothing to size".into())
            }
            "proxy-connect-timeout" => {
                out.timeouts.connect = Some(seconds(value)?);
                return mapped("timeouts.connect".into());
            }
            "proxy-send-timeout" => {
                out.timeouts.write = Some(seconds(value)?);
                return mapped("timeouts.write".into());
            }
            "proxy-read-timeout" => {
                out.timeouts.read = Some(seconds(value)?);
                return mapped("timeouts.read".into());
            }
            "proxy-next-upstream" => {
                let mut next = NextUpstream {
                    off: false,
                    on_error: false,
                    non_idempotent: false,
                    on_status: RetryStatuses::NONE,
                };
                let mut ignored = Vec::new();
                for token in value.split_whitespace() {
                    match token {
                        "off" => next.off = true,
                        "error" | "timeout" => next.on_error = true,
                        "non_idempotent" => next.non_idempotent = true,
                        "http_500" | "http_502" | "http_503" | "http_504" | "http_403"
                        | "http_404" | "http_429" => {
                            let status = token["http_".len()..]
                                .parse()
                                .map_err(|_| format!("condition {token:?}"))?;
                            next.on_status.insert(status);
                        }
                        "invalid_header" => ignored.push(token),
                        other => return Err(format!("unknown condition {other:?}")),
                    }
                }
                let mut on = Vec::new();
                if next.on_error {
                    on.push("connection errors".to_string());
                }
                if !next.on_status.is_empty() {
                    let statuses: Vec<String> =
                        next.on_status.iter().map(|s| s.to_string()).collect();
                    on.push(format!("status {}", statuses.join(" ")));
                }
                let mut summary = if next.off || on.is_empty() {
                    "no retry".to_string()
                } else {
                    format!("retry on {}", on.join(" and "))
                };
                if next.non_idempotent {
                    summary.push_str(", every method");
                }
                if !ignored.is_empty() {
                    summary.push_str(&format!(
                        "; not on {} (an upstream's malformed response is answered 502, not \
                         retried)",
                        ignored.join(" ")
                    ));
                }
                out.next_upstream = Some(next);
                return mapped(summary);
            }
            "proxy-next-upstream-tries" => {
                let tries: u32 = number(value)?;
                out.next_upstream_tries = Some(tries.max(1));
                return mapped(format!("retry.attempts {}", tries.max(1)));
            }
            "proxy-next-upstream-timeout" => {
                seconds(value)?;
                Outcome::Accepted(
                    "retries are bounded by the retry budget and timeouts.total".into(),
                )
            }
            "backend-protocol" => {
                let protocol = match value.trim().to_ascii_uppercase().as_str() {
                    "HTTP" => (UpstreamProtocol::Http1, false),
                    "HTTPS" => (UpstreamProtocol::Http1, true),
                    "GRPC" | "H2C" => (UpstreamProtocol::H2c, false),
                    "GRPCS" => (UpstreamProtocol::H2, true),
                    other => return Err(format!(
                        "backend protocol {other:?} is not supported (HTTP, HTTPS, GRPC, GRPCS, H2C)"
                    )),
                };
                out.protocol = Some(protocol);
                return mapped(format!(
                    "upstream protocol {:?}{}",
                    protocol.0,
                    if protocol.1 { " over TLS" } else { "" }
                ));
            }
            "upstream-hash-by" => {
                out.hash_key = Some(HashKey::parse(value.trim())?);
                return mapped(format!("consistent_hash on {value:?}"));
            }
            "load-balance" => {
                let policy = match value.trim() {
                    "round_robin" => BalancePolicy::RoundRobin,
                    "ewma" | "least_conn" => BalancePolicy::LeastRequest,
                    other => {
                        return Err(format!("unknown balancing {other:?} (round_robin, ewma)"))
                    }
                };
                out.balance = Some(policy);
                return mapped(format!("balance {policy:?}"));
            }
            "affinity" => {
                if value.trim() != "cookie" {
                    return Err(format!("affinity {value:?} is not supported (cookie)"));
                }
                return mapped("cookie affinity".into());
            }
            "affinity-mode" => match value.trim() {
                "balanced" => Outcome::Accepted("sluice's cookie affinity is balanced".into()),
                _ => Outcome::Unsupported("only balanced affinity".into()),
            },
            "session-cookie-name" => {
                let v = value.trim();
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(format!("{v:?} is not a cookie name"));
                }
                staging.affinity.name = v.into();
                return mapped("affinity cookie name".into());
            }
            "session-cookie-path" => {
                staging.affinity.path = path(value)?;
                return mapped("affinity cookie path".into());
            }
            "session-cookie-max-age" | "session-cookie-expires" => {
                staging.affinity.max_age = Some(seconds(value)?);
                return mapped("affinity cookie Max-Age".into());
            }
            "session-cookie-samesite" => {
                staging.affinity.same_site = Some(match value.trim() {
                    "Strict" => SameSite::Strict,
                    "Lax" => SameSite::Lax,
                    "None" => SameSite::None,
                    other => return Err(format!("SameSite {other:?} is not Strict, Lax or None")),
                });
                return mapped("affinity cookie SameSite".into());
            }
            "session-cookie-secure" => {
                staging.affinity.secure = boolean(value)?;
                return mapped("affinity cookie Secure".into());
            }
            "session-cookie-change-on-failure" => {
                boolean(value)?;
                Outcome::Accepted("an affinity cookie naming a failed endpoint is re-picked".into())
            }
            "canary" => {
                out.canary = boolean(value)?;
                return mapped("canary backends of the Ingress with the same host and path".into());
            }
            "canary-by-header" => {
                http::HeaderName::from_bytes(value.trim().as_bytes())
                    .map_err(|_| format!("{value:?} is not a header name"))?;
                out.canary_rule.header = Some(value.trim().into());
                return mapped("canary header rule".into());
            }
            "canary-by-header-value" => {
                out.canary_rule.header_value = Some(value.into());
                return mapped("canary header value".into());
            }
            "canary-by-header-pattern" => {
                regex::Regex::new(value).map_err(|e| format!("invalid regex: {e}"))?;
                out.canary_rule.header_pattern = Some(value.into());
                return mapped("canary header pattern".into());
            }
            "canary-by-cookie" => {
                out.canary_rule.cookie = Some(value.trim().into());
                return mapped("canary cookie rule".into());
            }
            "canary-weight" => {
                out.canary_rule.weight = number(value)?;
                return mapped("canary weight".into());
            }
            "canary-weight-total" => {
                let total: u32 = number(value)?;
                if total == 0 {
                    return Err("must be at least 1".into());
                }
                *staging.canary_weight_total = total;
                return mapped("canary weight total".into());
            }
            "whitelist-source-range" | "allowlist-source-range" => {
                out.access.allow.extend(networks(value)?);
                return mapped("access.allow".into());
            }
            "denylist-source-range" => {
                out.access.deny.extend(networks(value)?);
                return mapped("access.deny".into());
            }
            "auth-type" => match value.trim() {
                "basic" => {
                    *staging.basic_wanted = true;
                    return mapped("basic authentication".into());
                }
                other => return Err(format!("auth-type {other:?} is not supported (basic)")),
            },
            "auth-secret" => {
                staging.basic.secret = value.trim().into();
                return mapped("basic authentication users".into());
            }
            "auth-secret-type" => {
                staging.basic.secret_type = match value.trim() {
                    "auth-file" => AuthSecretType::AuthFile,
                    "auth-map" => AuthSecretType::AuthMap,
                    other => return Err(format!("{other:?} is not auth-file or auth-map")),
                };
                return mapped("basic authentication secret layout".into());
            }
            "auth-realm" => {
                if value
                    .chars()
                    .any(|c| c == '"' || c == '\\' || c.is_control())
                {
                    return Err(
                        "the realm may not hold quotes, backslashes or control characters".into(),
                    );
                }
                staging.basic.realm = value.into();
                return mapped("basic authentication realm".into());
            }
            "auth-url" => {
                let (scheme, host, port, path) = url(value)?;
                let tls = scheme == "https";
                *staging.external = Some(ExternalAuthSpec {
                    tls,
                    host,
                    port: port.unwrap_or(if tls { 443 } else { 80 }),
                    path,
                    signin: None,
                    response_headers: match get("auth-response-headers") {
                        Some(v) => header_names(v)?,
                        None => Vec::new(),
                    },
                    method: match get("auth-method") {
                        Some(m) => Some(methods(m)?.pop().ok_or("auth-method is empty")?),
                        None => None,
                    },
                });
                return mapped("external authentication".into());
            }
            "auth-signin" => {
                if value.chars().any(|c| c.is_control()) {
                    return Err("control characters in the sign-in URL".into());
                }
                return mapped("external authentication sign-in redirect".into());
            }
            "auth-response-headers" => {
                header_names(value)?;
                return mapped("headers copied from the authentication answer".into());
            }
            "auth-method" => {
                methods(value)?;
                return mapped("the method of the authentication check".into());
            }
            "enable-cors" => {
                boolean(value)?;
                return mapped("cors".into());
            }
            "cors-allow-origin" => {
                staging.cors.allow_origins = origins(value)?;
                return mapped("cors.allow_origins".into());
            }
            "cors-allow-methods" => {
                staging.cors.allow_methods = methods(value)?;
                return mapped("cors.allow_methods".into());
            }
            "cors-allow-headers" => {
                staging.cors.allow_headers = header_names(value)?;
                return mapped("cors.allow_headers".into());
            }
            "cors-expose-headers" => {
                staging.cors.expose_headers = header_names(value)?;
                return mapped("cors.expose_headers".into());
            }
            "cors-allow-credentials" => {
                staging.cors.allow_credentials = boolean(value)?;
                return mapped("cors.allow_credentials".into());
            }
            "cors-max-age" => {
                staging.cors.max_age = Some(seconds(value)?);
                return mapped("cors.max_age".into());
            }
            "limit-rps" => {
                let rps: u32 = number(value)?;
                if rps > 0 {
                    out.limit_rps = Some(out.limit_rps.map_or(rps, |r| r.min(rps)));
                }
                return mapped(format!("rate_limit {rps}/s per client IP"));
            }
            "limit-rpm" => {
                let rpm: u32 = number(value)?;
                if rpm > 0 {
                    let rps = rpm.div_ceil(60);
                    out.limit_rps = Some(out.limit_rps.map_or(rps, |r| r.min(rps)));
                    return mapped(format!(
                        "rate_limit {rps}/s per client IP (sluice counts per second: {rpm}/min rounds up)"
                    ));
                }
                return mapped("no limit".into());
            }
            "limit-connections" => {
                let n: u32 = number(value)?;
                out.limit_connections = (n > 0).then_some(n);
                return mapped(format!("max_concurrent_per_client {n} (503 above)"));
            }
            "limit-burst-multiplier" => {
                *staging.limit_burst_multiplier = number(value)?;
                return mapped("rate_limit.burst".into());
            }
            "limit-whitelist" | "limit-allowlist" => {
                out.limit_exempt = networks(value)?;
                return mapped("rate_limit.exempt".into());
            }
            "global-rate-limit" => {
                let requests: u32 = number(value)?;
                if requests == 0 {
                    return mapped("no limit".into());
                }
                let window = match get("global-rate-limit-window") {
                    Some(window) => seconds(window)?,
                    None => {
                        return Err("needs global-rate-limit-window (ingress-nginx silently \
                                    limits nothing without it)"
                            .into())
                    }
                };
                if let Some(message) = crate::compile::values::limit_window(window) {
                    return Err(format!("global-rate-limit-window {message}"));
                }
                let by = global_limit_key(get("global-rate-limit-key"))?;
                let exempt = match get("global-rate-limit-ignored-cidrs") {
                    Some(cidrs) => networks(cidrs)?,
                    None => Vec::new(),
                };
                let report = format!("global_rate_limit {requests} per {window:?} per {by:?}");
                out.global_rate_limit = Some(GlobalRateLimit {
                    requests,
                    window,
                    by,
                    exempt,
                    // As ingress-nginx, whose limit lets requests through when memcached
                    // cannot be reached.
                    on_redis_failure: RedisFailureMode::Allow,
                });
                return mapped(report);
            }
            "global-rate-limit-window" => {
                seconds(value)?;
                return mapped("global_rate_limit.window".into());
            }
            "global-rate-limit-key" => {
                global_limit_key(Some(value))?;
                return mapped("global_rate_limit.by".into());
            }
            "global-rate-limit-ignored-cidrs" => {
                networks(value)?;
                return mapped("global_rate_limit.exempt".into());
            }
            "upstream-vhost" => {
                let host = value.trim();
                if host.is_empty() || host.chars().any(|c| c.is_control() || c == ' ' || c == '/') {
                    return Err(format!("{host:?} is not a host name"));
                }
                out.upstream_vhost = Some(host.into());
                return mapped("rewrite.host".into());
            }
            "server-alias" => {
                let aliases: Vec<String> = value
                    .split(',')
                    .map(|a| a.trim().to_ascii_lowercase())
                    .filter(|a| !a.is_empty())
                    .collect();
                if let Some(bad) = aliases.iter().find(|a| {
                    !a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
                }) {
                    return Err(format!("{bad:?} is not a host name"));
                }
                out.server_aliases = aliases;
                return mapped("more host names for the rules' routes".into());
            }
            "x-forwarded-prefix" => {
                out.forwarded_prefix = Some(path(value)?);
                return mapped("rewrite.forwarded_prefix".into());
            }
            "custom-http-errors" => {
                out.custom_errors = value
                    .split(',')
                    .map(|code| {
                        number::<u16>(code)
                            .ok()
                            .filter(|c| (400..=599).contains(c))
                            .ok_or_else(|| format!("{code:?} is not an error status (400-599)"))
                    })
                    .collect::<Result<_, _>>()?;
                return mapped("error_pages from the default-backend Service".into());
            }
            "default-backend" => {
                out.default_backend = Some(value.trim().into());
                return mapped("error pages come from this Service".into());
            }
            "service-upstream" => {
                out.service_upstream = boolean(value)?;
                return mapped("the Service's cluster IP is the one endpoint".into());
            }
            "ssl-passthrough" => {
                out.ssl_passthrough = boolean(value)?;
                return mapped(
                    "each host's TLS is relayed untouched, by SNI, to the Service of its / path \
                     (ingress.passthrough_listener); plain HTTP keeps the other annotations"
                        .into(),
                );
            }
            "enable-websockets" | "websocket-services" => {
                Outcome::Accepted("WebSocket upgrades are always proxied".into())
            }
            "proxy-ssl-secret" => {
                *staging.upstream_tls_wanted = true;
                staging.upstream_tls.secret = Some(value.trim().into());
                return mapped(
                    "upstream tls CA from the Secret's ca.crt (its client certificate is not sent)"
                        .into(),
                );
            }
            "proxy-ssl-verify" => {
                *staging.upstream_tls_wanted = true;
                staging.upstream_tls.verify = match value.trim() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("{other:?} is not on or off")),
                };
                return mapped("upstream tls.verify".into());
            }
            "proxy-ssl-name" => {
                *staging.upstream_tls_wanted = true;
                staging.upstream_tls.name = Some(value.trim().into());
                return mapped("upstream tls.sni".into());
            }
            "proxy-ssl-server-name" => {
                Outcome::Accepted("sluice always sends SNI to TLS upstreams".into())
            }
            "proxy-ssl-verify-depth" | "proxy-ssl-protocols" | "proxy-ssl-ciphers" => {
                Outcome::Accepted(
                    "rustls' verification, protocols (TLS 1.2, 1.3) and ciphers".into(),
                )
            }
            "auth-tls-secret" => {
                staging.client_cert.secret = value.trim().into();
                return mapped("require_client_certificate with the Secret's ca.crt".into());
            }
            "auth-tls-verify-client" => {
                staging.client_cert.required = match value.trim() {
                    "on" => true,
                    "optional" | "optional_no_ca" | "off" => false,
                    other => {
                        return Err(format!(
                            "{other:?} is not on, optional, optional_no_ca or off"
                        ))
                    }
                };
                return mapped("client certificate requirement".into());
            }
            "auth-tls-verify-depth" => {
                staging.client_cert.verify_depth = number(value)?;
                return mapped("client certificate verify depth".into());
            }
            "auth-tls-pass-certificate-to-upstream" => {
                boolean(value)?;
                Outcome::Accepted("the verification result, subject, issuer and fingerprint go upstream as headers".into())
            }
            _ => Outcome::Unsupported("sluice does not implement this annotation".into()),
        })
    })();
    result.unwrap_or_else(Outcome::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(pairs: &[(&str, &str)]) -> Annotations {
        parse(
            &pairs
                .iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
                .collect(),
        )
    }

    fn outcome(name: &str, value: &str) -> Outcome {
        parsed(&[(name, value)]).reports[0].outcome.clone()
    }

    #[test]
    fn sizes_read_as_nginx_does() {
        assert_eq!(size("8m"), Ok(Some(8 << 20)));
        assert_eq!(size("512K"), Ok(Some(512 << 10)));
        assert_eq!(size("1g"), Ok(Some(1 << 30)));
        assert_eq!(size("100"), Ok(Some(100)));
        assert_eq!(size("0"), Ok(None));
        assert!(size("8mb").is_err());
        assert!(size("lots").is_err());
    }

    #[test]
    fn global_rate_limits_map_with_their_window_key_and_cidrs() {
        let a = parsed(&[
            ("global-rate-limit", "100"),
            ("global-rate-limit-window", "1m"),
            ("global-rate-limit-key", "$http_x_api_client"),
            ("global-rate-limit-ignored-cidrs", "10.0.0.0/8,192.168.1.1"),
        ]);
        assert!(!a.rejects(), "{:?}", a.reports);
        let limit = a.global_rate_limit.expect("mapped");
        assert_eq!(
            (limit.requests, limit.window),
            (100, Duration::from_secs(60))
        );
        assert!(matches!(&limit.by, LimitKey::Template(t) if t.template() == "$http_x_api_client"));
        assert_eq!(limit.exempt.len(), 2);
        assert_eq!(limit.on_redis_failure, RedisFailureMode::Allow);
        let by_ip = parsed(&[
            ("global-rate-limit", "5"),
            ("global-rate-limit-window", "10s"),
        ]);
        let limit = by_ip.global_rate_limit.expect("mapped");
        assert_eq!(
            limit.by,
            LimitKey::ClientIp,
            "the default key is $remote_addr"
        );
    }

    #[test]
    fn a_global_rate_limit_without_window_or_with_a_bad_key_is_invalid() {
        let no_window = parsed(&[("global-rate-limit", "100")]);
        assert!(no_window.rejects());
        assert!(no_window.global_rate_limit.is_none());
        let bad_key = parsed(&[
            ("global-rate-limit", "100"),
            ("global-rate-limit-window", "1s"),
            ("global-rate-limit-key", "$no_such_variable"),
        ]);
        assert!(bad_key.rejects());
        let off = parsed(&[("global-rate-limit", "0")]);
        assert!(!off.rejects() && off.global_rate_limit.is_none());
    }

    #[test]
    fn snippets_are_refused() {
        for name in [
            "configuration-snippet",
            "server-snippet",
            "auth-snippet",
            "stream-snippet",
            "modsecurity-snippet",
        ] {
            let outcome = outcome(name, "more_set_headers \"X: y\";");
            assert!(
                matches!(outcome, Outcome::Refused(_)),
                "{name}: {outcome:?}"
            );
            assert!(outcome.rejects());
        }
    }

    #[test]
    fn unknown_annotations_are_reported_not_ignored() {
        let outcome = outcome("proxy-buffering", "on");
        assert!(matches!(outcome, Outcome::Unsupported(_)));
        assert!(!outcome.rejects());
    }

    #[test]
    fn bad_values_are_invalid() {
        for (name, value) in [
            ("proxy-body-size", "big"),
            ("ssl-redirect", "yes please"),
            ("upstream-hash-by", "$no_such_variable"),
            ("whitelist-source-range", "10.0.0.0/33"),
            ("backend-protocol", "FCGI"),
            ("permanent-redirect", "not a url"),
            ("permanent-redirect-code", "200"),
            ("custom-http-errors", "404,200"),
            ("auth-realm", "a\"b"),
            ("limit-rps", "-1"),
            ("proxy-next-upstream", "error sometimes"),
        ] {
            let outcome = outcome(name, value);
            assert!(
                matches!(outcome, Outcome::Invalid(_)),
                "{name}={value}: {outcome:?}"
            );
        }
    }

    #[test]
    fn values_become_typed_settings() {
        let a = parsed(&[
            ("proxy-body-size", "8m"),
            ("proxy-read-timeout", "120"),
            ("proxy-connect-timeout", "3s"),
            ("upstream-hash-by", "$host$request_uri"),
            ("limit-rps", "10"),
            ("limit-burst-multiplier", "3"),
            ("limit-whitelist", "10.0.0.0/8, 192.168.0.1"),
            ("whitelist-source-range", "10.0.0.0/8"),
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-max-age", "3600"),
            ("backend-protocol", "GRPCS"),
            ("permanent-redirect", "https://example.com/new?x=1"),
            ("permanent-redirect-code", "308"),
        ]);
        assert!(!a.rejects(), "{:?}", a.reports);
        assert_eq!(a.body_max, Some(Some(8 << 20)));
        assert_eq!(a.timeouts.read, Some(Duration::from_secs(120)));
        assert_eq!(a.timeouts.connect, Some(Duration::from_secs(3)));
        assert_eq!(
            a.hash_key.as_ref().map(HashKey::template),
            Some("$host$request_uri")
        );
        assert_eq!((a.limit_rps, a.limit_burst), (Some(10), Some(30)));
        assert_eq!(a.limit_exempt.len(), 2);
        assert_eq!(a.access.allow.len(), 1);
        let affinity = a.affinity.expect("affinity");
        assert_eq!(affinity.name, "route");
        assert_eq!(affinity.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(a.protocol, Some((UpstreamProtocol::H2, true)));
        let redirect = a.redirect.expect("redirect");
        assert_eq!(
            (
                redirect.host.as_str(),
                redirect.path.as_str(),
                redirect.status
            ),
            ("example.com", "/new?x=1", RedirectStatus::PermanentRedirect)
        );
    }

    #[test]
    fn cors_defaults_are_ingress_nginx_defaults() {
        let a = parsed(&[("enable-cors", "true")]);
        let cors = a.cors.expect("cors");
        assert_eq!(cors.allow_origins, vec![OriginPattern::Any]);
        assert!(cors.allow_credentials);
        assert_eq!(cors.max_age, Some(Duration::from_secs(1_728_000)));
        assert_eq!(cors.allow_methods.len(), 6);
        let a = parsed(&[
            ("enable-cors", "true"),
            (
                "cors-allow-origin",
                "https://a.example, https://*.b.example",
            ),
        ]);
        let origins = a.cors.expect("cors").allow_origins;
        assert_eq!(origins.len(), 2);
        assert!(
            matches!(&origins[1], OriginPattern::Wildcard { before, after }
            if before == "https://" && after == ".b.example")
        );
        assert!(parsed(&[("cors-allow-origin", "*")]).cors.is_none());
    }

    #[test]
    fn rpm_rounds_up_to_a_per_second_rate() {
        let a = parsed(&[("limit-rpm", "90")]);
        assert_eq!((a.limit_rps, a.limit_burst), (Some(2), Some(10)));
        let a = parsed(&[("limit-rpm", "600"), ("limit-rps", "5")]);
        assert_eq!(a.limit_rps, Some(5));
    }
}
