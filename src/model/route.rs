//! Routes: which requests a route takes (hosts, paths, methods, headers, query), where it
//! sends them (weighted backends, a canary), and what it changes on the way (filters,
//! cookie affinity). Plain data: `routing` decides with it, `proxy` applies it.

use super::{
    AccessList, Auth, ClientCertificateRequirement, ErrorPages, Origin, PageSource, RetryPolicy,
    DEFAULT_MAX_BODY_SIZE,
};
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;

/// A route: which requests go to which upstreams, and how they are changed on the way.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub origin: Origin,
    pub listener: String,
    /// Empty: every host. Lower-case: sources normalise what they read.
    pub hosts: Vec<HostMatch>,
    /// Empty: every path (a prefix of `/`).
    pub paths: Vec<PathMatch>,
    /// Further conditions every matching request meets, whichever path it matched.
    pub conditions: Conditions,
    /// Where requests go: one upstream, or several sharing requests by weight. Empty only
    /// with a redirect, or when `unresolved` says why.
    pub backends: Vec<Backend>,
    /// Why the route's backends could not be resolved (a Gateway API backendRef to a
    /// missing Service, say): its requests are answered 500, as Gateway API specifies.
    pub unresolved: Option<String>,
    /// The weight of the backends that could not be resolved, beside `backends`: that share
    /// of the requests is answered 500 too (`unresolved` says why).
    pub unresolved_weight: u32,
    /// A canary upstream that takes requests before `backends` when its rules say so.
    pub canary: Option<Canary>,
    pub filters: Filters,
    /// Pins a client to an endpoint with a cookie.
    pub affinity: Option<CookieAffinity>,
    /// Which clients may use the route.
    pub access: AccessList,
    /// Which web origins may read the route's responses.
    pub cors: Option<Cors>,
    /// Who may use the route.
    pub auth: Option<Auth>,
    /// Requests without an accepted client certificate get 400.
    pub require_client_certificate: Option<ClientCertificateRequirement>,
    /// Pages shown instead of error answers.
    pub error_pages: Option<Arc<ErrorPages>>,
    /// Takes only the requests no other route of its listener matches (the listener's
    /// default backend); claims no host or path.
    pub fallback: bool,
    /// Per-route overrides of the upstream's timeouts.
    pub timeouts: TimeoutOverrides,
    /// Replaces the upstream's retry policy for this route's requests (Gateway API's
    /// `rules[].retry`).
    pub retry: Option<RetryPolicy>,
    /// On a `tcp` listener with `tls`: relay this route's connections with their TLS
    /// untouched instead of terminating it (a TLSRoute of a Passthrough Gateway listener on
    /// a port that also terminates).
    pub relay_tls: bool,
    pub rate_limit: Option<RateLimit>,
    /// A limit shared by every replica, counted in Redis (`redis:`).
    pub global_rate_limit: Option<super::GlobalRateLimit>,
    /// At most this many requests in flight per client IP (ingress-nginx's
    /// `limit-connections`); more are answered 503.
    pub max_concurrent_per_client: Option<u32>,
    pub body: BodyPolicy,
    /// Its requests are traced when `tracing:` is set (the default); off, a request's
    /// `traceparent` passes through untouched and no span is made.
    pub tracing: bool,
}

impl RouteConfig {
    /// A route of every host and path of `listener` to `upstream`, with sluice's defaults:
    /// the route a config file gets from a name, a listener and an upstream alone.
    pub fn new(name: &str, origin: Origin, listener: &str, upstream: &str) -> Self {
        Self {
            name: name.to_string(),
            origin,
            listener: listener.to_string(),
            hosts: Vec::new(),
            paths: Vec::new(),
            conditions: Conditions::default(),
            backends: vec![Backend::new(upstream, 1)],
            unresolved: None,
            unresolved_weight: 0,
            canary: None,
            filters: Filters::default(),
            affinity: None,
            access: AccessList::default(),
            cors: None,
            auth: None,
            require_client_certificate: None,
            error_pages: None,
            fallback: false,
            timeouts: TimeoutOverrides::default(),
            retry: None,
            relay_tls: false,
            rate_limit: None,
            global_rate_limit: None,
            max_concurrent_per_client: None,
            body: BodyPolicy {
                buffering: true,
                max_size: Some(DEFAULT_MAX_BODY_SIZE),
            },
            tracing: true,
        }
    }

    /// Every upstream the route sends requests to: backends, canary, mirror.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.backends
            .iter()
            .map(|b| b.upstream.as_str())
            .chain(self.canary.iter().map(|c| c.upstream.as_str()))
            .chain(self.filters.mirrors.iter().map(|m| m.upstream.as_str()))
            .chain(self.auth.iter().filter_map(|auth| match auth {
                Auth::External(external) => Some(external.upstream.as_str()),
                Auth::Basic(_) => None,
            }))
            .chain(self.error_pages.iter().flat_map(|pages| {
                pages.rules.iter().filter_map(|rule| match &rule.source {
                    PageSource::Upstream(name) => Some(name.as_str()),
                    PageSource::File(_) => None,
                })
            }))
    }
}

/// What a route does with request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPolicy {
    /// Read the whole body before choosing an endpoint.
    pub buffering: bool,
    /// Larger bodies are answered 413; `None`: no limit.
    pub max_size: Option<u64>,
}

/// `routes[].rate_limit`: requests per second per key, with a burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// Requests allowed at once above the steady rate.
    pub burst: u32,
    pub by: LimitKey,
    /// Clients in these networks are not limited (ingress-nginx's `limit-whitelist`).
    pub exempt: Vec<super::IpNet>,
}

/// What a rate limit counts separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The whole route shares one limit.
    Route,
    /// Each client IP has its own.
    ClientIp,
    /// Each value of this request header has its own (a missing header is one more value).
    Header(http::HeaderName),
    /// Each value of this template of request variables (`$remote_addr$uri`) has its own.
    Template(super::HashKey),
}

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `shop.example.com`
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (any depth, as nginx).
    Suffix(String),
}

impl HostMatch {
    /// The host as written (lower-case): `shop.example.com`, `*.example.com`.
    pub fn key(&self) -> String {
        match self {
            HostMatch::Exact(name) => name.clone(),
            HostMatch::Suffix(suffix) => format!("*{suffix}"),
        }
    }
}

/// How a route matches the request's path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// A plain string prefix: `/api` matches `/api`, `/api/x` and `/apix`.
    Prefix(String),
    /// A path-segment prefix, without a trailing `/` (`/` itself for the root): `/api`
    /// matches `/api` and `/api/x`, not `/apix` (Ingress `Prefix`, HTTPRoute `PathPrefix`).
    SegmentPrefix(String),
    /// The whole path must match (sources anchor what they read).
    Regex(Regex),
}

impl PathMatch {
    /// A stable text for the path, for claims and display: `prefix:/api`.
    pub fn key(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("exact:{p}"),
            PathMatch::Prefix(p) => format!("prefix:{p}"),
            PathMatch::SegmentPrefix(p) => format!("segment_prefix:{p}"),
            PathMatch::Regex(r) => format!("regex:{}", r.as_str()),
        }
    }
}

/// Conditions on the request besides host and path; all must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Any of these methods; empty: any method.
    pub methods: Vec<http::Method>,
    /// Every one of these headers.
    pub headers: Vec<HeaderMatch>,
    /// Every one of these query parameters.
    pub query: Vec<QueryMatch>,
}

impl Conditions {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.headers.is_empty() && self.query.is_empty()
    }

    /// A stable text of the conditions, for claims: two routes with the same host, path
    /// and conditions conflict; with different conditions they coexist.
    pub fn key(&self) -> String {
        let mut methods: Vec<&str> = self.methods.iter().map(http::Method::as_str).collect();
        methods.sort_unstable();
        let mut headers: Vec<String> = self
            .headers
            .iter()
            .map(|h| format!("{}{}", h.name, h.value.key()))
            .collect();
        headers.sort_unstable();
        let mut query: Vec<String> = self
            .query
            .iter()
            .map(|q| format!("{}{}", q.name, q.value.key()))
            .collect();
        query.sort_unstable();
        format!(
            "methods={} headers={} query={}",
            methods.join(","),
            headers.join(","),
            query.join(",")
        )
    }
}

/// A request header that must be present with a matching value (the first field line of
/// that name is compared).
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: http::HeaderName,
    pub value: ValueMatch,
}

/// A query parameter that must be present with a matching value (the first occurrence;
/// names and values compared as sent, without percent-decoding).
#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// How a header or query value is compared.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    /// The whole value must match (sources anchor what they read).
    Regex(Regex),
}

impl ValueMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(wanted) => wanted == value,
            ValueMatch::Regex(regex) => regex.is_match(value),
        }
    }

    fn key(&self) -> String {
        match self {
            ValueMatch::Exact(v) => format!("={v}"),
            ValueMatch::Regex(r) => format!("~{}", r.as_str()),
        }
    }
}

/// An upstream of a route and its share of the route's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub upstream: String,
    /// Share of requests relative to the other backends' weights; 0 takes none.
    pub weight: u32,
    /// Edits of the requests it takes, after the route's (HTTPRoute backendRef filters).
    pub request_headers: HeaderEdits,
}

impl Backend {
    /// `upstream` with `weight`, its requests as the route sends them.
    pub fn new(upstream: impl Into<String>, weight: u32) -> Self {
        Self {
            upstream: upstream.into(),
            weight,
            request_headers: HeaderEdits::default(),
        }
    }
}

/// A canary upstream beside a route's backends, as ingress-nginx's `canary-*` annotations
/// describe it. Rules are tried in order: header, cookie, weight.
#[derive(Debug, Clone)]
pub struct Canary {
    pub upstream: String,
    pub header: Option<CanaryHeader>,
    /// Cookie `always` sends the request to the canary, `never` to the backends.
    pub cookie: Option<String>,
    /// Share of the remaining requests, out of `weight_total`.
    pub weight: u32,
    pub weight_total: u32,
    /// When the canary has no endpoint to offer, send the request to the backends instead
    /// of answering 503. Off by default: a canary's failure must be seen, not masked.
    pub fallback: bool,
}

/// The canary's header rule.
#[derive(Debug, Clone)]
pub struct CanaryHeader {
    pub name: http::HeaderName,
    /// `None`: value `always` selects the canary and `never` the backends; with a match,
    /// a matching value selects the canary and any other value falls through.
    pub value: Option<ValueMatch>,
}

/// What a route changes on the way, applied in this order: the redirects answer at once
/// (`app_root`, then `https_redirect`, then `redirect`); otherwise request headers, then
/// the rewrite, then the mirror copies are sent, then the request goes upstream; response
/// headers are edited on the way back.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// A request for `/` is redirected (302) here.
    pub app_root: Option<String>,
    pub https_redirect: Option<HttpsRedirect>,
    pub redirect: Option<Redirect>,
    pub request_headers: HeaderEdits,
    pub rewrite: Rewrite,
    /// Each gets its own copy of the requests it samples.
    pub mirrors: Vec<Mirror>,
    pub response_headers: HeaderEdits,
}

impl Filters {
    /// Whether sluice may answer with a redirect itself.
    pub fn redirects(&self) -> bool {
        self.app_root.is_some() || self.https_redirect.is_some() || self.redirect.is_some()
    }

    /// Whether any filter applies to the request on its way upstream.
    pub fn edits_request(&self) -> bool {
        !self.request_headers.is_empty() || !self.rewrite.is_empty()
    }
}

/// Header edits: set (replace every value), add (append a value), remove; in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdits {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A redirect to HTTPS on the same host and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsRedirect {
    /// Omitted from `Location` when it is 443.
    pub port: u16,
    pub status: RedirectStatus,
}

/// A redirect answered by sluice: each part not given is the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    /// `None`: the request's port when neither scheme nor host change, else the scheme's.
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    pub status: RedirectStatus,
}

/// Status of a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectStatus {
    MovedPermanently,
    Found,
    SeeOther,
    TemporaryRedirect,
    PermanentRedirect,
}

impl RedirectStatus {
    /// The status code.
    pub fn code(self) -> u16 {
        match self {
            RedirectStatus::MovedPermanently => 301,
            RedirectStatus::Found => 302,
            RedirectStatus::SeeOther => 303,
            RedirectStatus::TemporaryRedirect => 307,
            RedirectStatus::PermanentRedirect => 308,
        }
    }

    /// The status for `code`, if it is a redirect sluice sends.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            301 => RedirectStatus::MovedPermanently,
            302 => RedirectStatus::Found,
            303 => RedirectStatus::SeeOther,
            307 => RedirectStatus::TemporaryRedirect,
            308 => RedirectStatus::PermanentRedirect,
            _ => return None,
        })
    }
}

/// How a path is replaced (by a redirect or a rewrite); the query string is kept.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// The whole path.
    Full(String),
    /// The part the route's prefix matched (a path matched otherwise is left whole).
    Prefix(String),
    /// `pattern` replaced by `replacement`, with `$1`… for its capture groups (a path the
    /// pattern does not match is left as it is).
    Regex { pattern: Regex, replacement: String },
}

impl PartialEq for PathRewrite {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathRewrite::Full(a), PathRewrite::Full(b)) => a == b,
            (PathRewrite::Prefix(a), PathRewrite::Prefix(b)) => a == b,
            (
                PathRewrite::Regex {
                    pattern: a,
                    replacement: x,
                },
                PathRewrite::Regex {
                    pattern: b,
                    replacement: y,
                },
            ) => a.as_str() == b.as_str() && x == y,
            _ => false,
        }
    }
}

impl Eq for PathRewrite {}

/// What a route changes in the request it forwards.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// The `Host` sent upstream (`upstream_host`, ingress-nginx's `upstream-vhost`).
    pub host: Option<String>,
    pub path: Option<PathRewrite>,
    /// Sent as `X-Forwarded-Prefix` (ingress-nginx's `x-forwarded-prefix`).
    pub forwarded_prefix: Option<String>,
}

impl Rewrite {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.path.is_none() && self.forwarded_prefix.is_none()
    }
}

/// Mirror copies in flight at most, unless a source says otherwise.
pub const DEFAULT_MIRROR_IN_FLIGHT: u32 = 64;

/// A copy of requests sent to another upstream; its answer is discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub upstream: String,
    /// Copies in flight at most; a request beyond it is not mirrored (and counted).
    pub max_in_flight: u32,
    /// How many requests per million are copied, each drawn at random
    /// ([`MIRROR_ALL`]: every one).
    pub per_million: u32,
}

/// [`Mirror::per_million`] of a mirror that copies every request.
pub const MIRROR_ALL: u32 = 1_000_000;

/// Pins each client to an endpoint with a cookie naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAffinity {
    pub name: String,
    pub path: String,
    /// `None`: a session cookie.
    pub max_age: Option<Duration>,
    pub same_site: Option<SameSite>,
    pub secure: bool,
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// `routes[].cors`: the origins that may read responses and what their preflights allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<OriginPattern>,
    pub allow_methods: Vec<http::Method>,
    pub allow_headers: Vec<http::HeaderName>,
    pub expose_headers: Vec<http::HeaderName>,
    pub allow_credentials: bool,
    /// How long a browser may keep a preflight's answer (`None`: not sent).
    pub max_age: Option<Duration>,
}

/// An origin CORS admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`
    Any,
    /// `https://app.example.com` (compared case-insensitively).
    Exact(String),
    /// `https://*.example.com`: one or more host labels in place of `*`, lower-case parts.
    Wildcard { before: String, after: String },
}

impl OriginPattern {
    /// `*`, `http(s)://host[:port]` or `http(s)://*.domain[:port]`; `None` for anything
    /// else.
    pub fn parse(origin: &str) -> Option<Self> {
        let origin = origin.trim().to_ascii_lowercase();
        if origin == "*" {
            return Some(OriginPattern::Any);
        }
        let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
        match origin.split_once('*') {
            None if scheme_ok && !origin.ends_with('/') => Some(OriginPattern::Exact(origin)),
            Some((before, after))
                if scheme_ok
                    && before.ends_with("://")
                    && after.starts_with('.')
                    && !after.contains('*') =>
            {
                Some(OriginPattern::Wildcard {
                    before: before.to_string(),
                    after: after.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Timeouts that a route overrides (unset fields keep the upstream's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
    pub total: Option<Option<Duration>>,
    pub idle: Option<Duration>,
}
