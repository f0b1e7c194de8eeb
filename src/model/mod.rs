//! The model: what sluice serves, as typed values with no YAML and no I/O in them.
//!
//! Sources (the config file, Kubernetes objects, a program in a test) produce the same
//! values, each item carrying its [`Origin`]; [`crate::compile`] joins the sources'
//! [`Fragment`]s into one [`Config`], the effective model that snapshots are built from.

mod auth;
mod error_pages;
mod fragment;
mod gateway;
pub mod hash_key;
mod ingress;
mod net;
mod origin;
mod redis;
mod route;
mod tracing;

pub use self::tracing::{OtlpEndpoint, Sampler, TracingSettings};
pub use crate::observe::access_log::AccessLogTarget;
pub use crate::tls::client_auth::{ClientAuthMode, ClientValidation};
use crate::tls::LoadedCertificate;
pub use auth::{Auth, AuthFailure, BasicAuth, ExternalAuth, Htpasswd, PasswordHash};
pub use error_pages::{ErrorPage, ErrorPages, PageFile, PageSource};
pub use fragment::{
    Fragment, ListenerCertificate, ListenerClientValidation, Overlap, Problem, Rejected,
    ReservedHost, ServerNameScope,
};
pub use gateway::{
    DedicatedGateway, GatewayListenerKind, GatewayPort, GatewaySettings, DEFAULT_GATEWAY_CONTROLLER,
};
pub use hash_key::HashKey;
pub use ingress::{
    IngressSettings, LeaseSettings, PublishAddress, WebhookSettings, DEFAULT_CONTROLLER,
    NGINX_CONTROLLER,
};
pub use net::{AccessList, IpNet};
pub use origin::Origin;
pub use redis::{
    BreakerSettings, GlobalRateLimit, RedisAddress, RedisAddressing, RedisAuth, RedisFailureMode,
    RedisSettings, RedisTls,
};
pub use route::{
    Backend, BodyPolicy, Canary, CanaryHeader, Conditions, CookieAffinity, Cors, Filters,
    HeaderEdits, HeaderMatch, HostMatch, HttpsRedirect, LimitKey, Mirror, OriginPattern, PathMatch,
    PathRewrite, QueryMatch, RateLimit, Redirect, RedirectStatus, Rewrite, RouteConfig, SameSite,
    TimeoutOverrides, ValueMatch, DEFAULT_MIRROR_IN_FLIGHT, MIRROR_ALL,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The effective model: process settings and listeners from the config file, routes,
/// upstreams and certificates from every source whose fragments were accepted.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    /// The admin listeners and who may use them.
    pub admin: AdminSettings,
    pub access_log: AccessLogTarget,
    /// How to reach the Kubernetes API (`None`: in-cluster or kubeconfig).
    pub kubernetes: Option<KubernetesClient>,
    /// The Kubernetes Ingress source, if enabled (issue #18).
    pub ingress: Option<IngressSettings>,
    /// The Kubernetes Gateway API source, if enabled (issue #19).
    pub gateway: Option<GatewaySettings>,
    /// Spans to an OpenTelemetry collector, if enabled (issue #20).
    pub tracing: Option<TracingSettings>,
    /// Where fleet-wide rate limits are counted, if anywhere (issue #21).
    pub redis: Option<RedisSettings>,
    pub listeners: Vec<ListenerConfig>,
    /// The certificates of each TLS listener.
    pub tls: Vec<ListenerTls>,
    /// Shared with the fragments they come from: a change of one fragment among thousands
    /// assembles a new model without copying the others' routes and upstreams.
    pub routes: Vec<Arc<RouteConfig>>,
    pub upstreams: Vec<Arc<UpstreamConfig>>,
    /// Host groups that exist on a listener even without routes of their own.
    pub reserved_hosts: Vec<ReservedHost>,
}

impl Config {
    /// What is valid but probably not meant: printed by `sluice -t` and logged at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.admin.listen.ip().is_loopback() && self.admin.token.is_none() {
            warnings.push(format!(
                "admin.listen is {}: /config and /upstreams are served to anyone who can \
                 reach it (NetworkPolicy does not cover hostNetwork pods). Bind it to \
                 127.0.0.1 and serve probes and metrics on admin.metrics_listen, or set \
                 admin.token_file.",
                self.admin.listen
            ));
        }
        warnings
    }
}

/// The certificates of one TLS listener, loaded and checked during validation.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub listener: String,
    /// (certificate chain, private key) paths, in config order.
    pub files: Vec<(PathBuf, PathBuf)>,
    pub certificates: Arc<[LoadedCertificate]>,
    /// The names of the Gateway listeners it serves (`None`: any name): a request for a
    /// host another of them takes than the connection's server name is answered 421.
    pub server_name_scopes: Vec<Option<HostMatch>>,
    /// Client certificates a Gateway asks of this listener's clients (`spec.tls.frontend`);
    /// a listener with `client_auth` of its own never has one.
    pub client_validation: Option<Arc<ClientValidation>>,
}

/// `server:` settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub upgrade_sock: String,
    pub pid_file: String,
    /// How long open requests and connections may run on after the listeners stop.
    pub grace_period: Duration,
    /// SIGTERM: how long listeners keep accepting while `/readyz` is already 503.
    pub drain_delay: Duration,
    pub watch_config: bool,
    /// The DNS servers of `dns` upstreams; `None`: the system's (`/etc/resolv.conf`).
    pub resolver: Option<ResolverSettings>,
}

/// `server.resolver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    pub nameservers: Vec<SocketAddr>,
    /// Per query and server.
    pub timeout: Duration,
}

/// Most points a consistent-hash ring may have (Σ weight × `hash_points`): 32 MiB of
/// points plus its index. Validation refuses static upstreams above it; a discovered one
/// gets fewer points per weight.
pub const MAX_RING_POINTS: u64 = 1 << 22;

/// `admin:` the admin listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Every admin endpoint.
    pub listen: SocketAddr,
    /// Only `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token `/config` and `/upstreams` require, read from `token_file`.
    pub token: Option<String>,
    /// Host names accepted besides IP literals and `localhost`, lower-case.
    pub allowed_hosts: Vec<String>,
}

impl AdminSettings {
    /// The addresses sluice listens on for admin requests.
    pub fn addresses(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [("admin.listen", Some(self.listen))]
            .into_iter()
            .chain([("admin.metrics_listen", self.metrics_listen)])
            .filter_map(|(key, address)| Some((key, address?)))
    }
}

/// `kubernetes:` overrides of the API client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesClient {
    pub api_server: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub origin: Origin,
    pub listen: SocketAddr,
    pub protocol: ListenerProtocol,
    /// How long an idle downstream keepalive connection is kept.
    pub keepalive_timeout: Duration,
    /// Requests served on one downstream connection before it is closed.
    pub keepalive_max_requests: u32,
    /// Also accept cleartext HTTP/2 with prior knowledge on this port.
    pub h2c: bool,
    /// Terminates TLS (its certificates are in [`Config::tls`], so that they can change on
    /// reload while the listener stays).
    pub tls: bool,
    pub requests: RequestLimits,
    /// Answer every request with a redirect to HTTPS (ACME HTTP-01 challenges excepted).
    pub https_redirect: Option<HttpsRedirect>,
    /// Peers whose `X-Forwarded-For`, `Forwarded` or `X-Real-IP` name the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Which clients may send requests on this listener.
    pub access: AccessList,
    /// Every connection starts with a PROXY protocol header naming the client.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// A tcp listener that reads each connection's TLS ClientHello and routes it by the
    /// server name (SNI) it sends: it relays the TLS untouched (TLS passthrough), or, with
    /// `tls`, terminates it and relays what it carries.
    pub sni_routing: bool,
    pub connections: ConnectionLimits,
    /// Client certificates a TLS listener asks for (mTLS).
    pub client_auth: Option<ClientAuth>,
}

/// `listeners[].tls.client_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// `None`: any issuer; routes check it (`require_client_certificate.ca`).
    pub ca_file: Option<PathBuf>,
    /// The CA bundle's certificates (DER), read when the config is loaded; empty without
    /// `ca_file`.
    pub ca_certificates: Vec<Vec<u8>>,
    pub mode: ClientAuthMode,
    /// Most certificates above the client's (nginx's `ssl_verify_depth`).
    pub verify_depth: u8,
    /// Headers that tell the upstream about the client's certificate.
    pub headers: ClientCertHeaders,
}

/// `routes[].require_client_certificate`: requests without an accepted client certificate
/// get 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificateRequirement {
    /// The route's own CA bundle; `None`: the listener's CA must have verified it.
    pub ca: Option<RouteClientCa>,
}

/// `routes[].require_client_certificate.ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteClientCa {
    pub file: PathBuf,
    pub certificates: Vec<Vec<u8>>,
    pub verify_depth: u8,
}

/// `listeners[].tls.client_auth.headers`: names of the headers sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertHeaders {
    /// `SUCCESS` or `NONE`.
    pub verify: http::HeaderName,
    pub subject: http::HeaderName,
    pub issuer: http::HeaderName,
    pub fingerprint: http::HeaderName,
}

impl ClientCertHeaders {
    pub fn names(&self) -> [&http::HeaderName; 4] {
        [&self.verify, &self.subject, &self.issuer, &self.fingerprint]
    }
}

/// `listeners[].proxy_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// A connection whose header has not arrived by then is closed.
    pub timeout: Duration,
}

/// `listeners[].connections`: how many client connections may be open at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// On the listener; `None`: no limit.
    pub max: Option<u32>,
    /// From one client address (the TCP peer, or the PROXY protocol's source).
    pub max_per_client: Option<u32>,
}

impl ConnectionLimits {
    pub fn is_unlimited(&self) -> bool {
        self.max.is_none() && self.max_per_client.is_none()
    }
}

/// `listeners[].requests`: limits of request heads and bodies, and path normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request line (414 beyond).
    pub max_request_line: usize,
    /// Longest header line (431 beyond).
    pub max_header_line: usize,
    /// Largest request head, request line included (431 beyond).
    pub max_header_bytes: usize,
    /// Most header lines (431 beyond).
    pub max_headers: usize,
    /// Time from a request's first byte to the end of its head (408 after).
    pub header_timeout: Duration,
    /// Longest wait between two reads of a request body (408 after).
    pub body_read_timeout: Duration,
    /// Time for a whole request body; `None`: no limit.
    pub body_timeout: Option<Duration>,
    pub paths: PathOptions,
}

/// How request paths are normalised before routing (see `proxy::path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Merge runs of `/` (nginx's `merge_slashes on`).
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// An upstream: a set of endpoints and how to talk to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub origin: Origin,
    /// Where the endpoints come from.
    pub source: EndpointSource,
    /// The endpoints: the static list, or the latest discovered set.
    pub endpoints: Vec<EndpointConfig>,
    pub protocol: UpstreamProtocol,
    /// TLS towards the endpoints (`protocol: h2`, or `http1` with `tls:`).
    pub tls: Option<UpstreamTls>,
    /// Concurrent streams per HTTP/2 upstream connection (h2c, h2).
    pub max_streams: u32,
    pub balance: BalancePolicy,
    /// Present exactly when `balance` is `consistent_hash`.
    pub hash_key: Option<HashKey>,
    pub hash_points: u32,
    pub health: HealthConfig,
    /// A new or recovered endpoint's share ramps from 10% to 100% over this window.
    pub slow_start: Option<Duration>,
    pub keepalive: UpstreamKeepalive,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// A tcp upstream's connections start with a PROXY protocol header naming the client.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// `upstreams[].proxy_protocol`: the PROXY protocol version sent to the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocolVersion {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// TLS towards an upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Sent as SNI and, with `verify`, checked against the certificate.
    pub sni: String,
    /// Verify the chain (and the name) of the endpoint's certificate.
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
    /// DER certificates of `ca_file`; empty means the system's trust store.
    pub ca_certificates: Vec<Vec<u8>>,
    /// With `verify`, the certificate must carry one of these names, and `sni` (still
    /// sent) is not checked against it; empty: it is checked against `sni`.
    pub subject_alt_names: Vec<SubjectAltName>,
    /// The certificate sluice presents when the endpoint asks for one (mTLS to backends).
    pub client_certificate: Option<Arc<ClientCertificate>>,
}

/// A certificate chain and its private key that sluice presents as a TLS client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientCertificate {
    /// DER, the leaf first.
    pub chain: Vec<Vec<u8>>,
    /// DER (PKCS#8, PKCS#1 or SEC1).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientCertificate")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A name an upstream's certificate is verified against (`upstreams[].tls.subject_alt_names`,
/// BackendTLSPolicy `subjectAltNames`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name (lower case, no trailing dot); a certificate's wildcard name covers its
    /// leftmost label.
    Dns(String),
    /// A URI such as a SPIFFE ID, compared exactly.
    Uri(String),
}

/// `upstreams[].health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub active: Option<ActiveCheck>,
    pub passive: Option<PassiveEjection>,
    /// Below this share of healthy endpoints, health is ignored and all endpoints are used.
    pub panic_threshold_percent: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            active: None,
            passive: None,
            panic_threshold_percent: 50,
        }
    }
}

/// Active checks of every endpoint of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

/// What an active check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET path` (with `Host: host` when set); healthy if the status is in `expect`.
    Http {
        path: String,
        host: Option<String>,
        expect: (u16, u16),
    },
    /// `grpc.health.v1.Health/Check` of `service`; healthy if it answers `SERVING`.
    Grpc { service: String },
    /// A TCP connect.
    Tcp,
}

/// Passive ejection of endpoints that fail real requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveEjection {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
    pub max_ejected_percent: u32,
    pub on_5xx: bool,
}

/// Where an upstream's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// `endpoints:` in the file.
    Static,
    /// EndpointSlices of a Kubernetes service.
    Kubernetes(ServiceRef),
    /// The addresses a DNS name resolves to.
    Dns(DnsName),
}

impl EndpointSource {
    /// Whether the endpoints are found at run time (and so sync after the start).
    pub fn is_discovered(&self) -> bool {
        !matches!(self, Self::Static)
    }
}

/// `upstreams[].dns`: every address of `name` is an endpoint on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    pub name: String,
    pub port: u16,
    /// The records' TTL, clamped to `min_ttl..=max_ttl`, sets when the name is resolved
    /// again.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

/// `upstreams[].kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
    pub terminating: TerminatingPolicy,
}

/// The port of a service's endpoints: by number (the endpoint's port), or by the name of
/// the service port (resolved per EndpointSlice, since slices may differ).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

/// An endpoint: static, or discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointConfig {
    pub address: SocketAddr,
    pub weight: u32,
    /// Discovered as terminating but still serving (used only when no ready one is left).
    pub terminating: bool,
}

/// The upstream connection pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamKeepalive {
    pub max_idle: u32,
    pub idle_timeout: Duration,
    pub max_requests: u32,
}

impl UpstreamKeepalive {
    /// An idle upstream connection must be closed by sluice before the application server
    /// closes it, or a request sent on it just as the server closes it fails. Application
    /// servers keep idle connections for a few seconds (node and uvicorn 5 s, Apache 5 s,
    /// gunicorn 2 s), so 4 s stays under most of them.
    pub const DEFAULT: Self = Self {
        max_idle: 128,
        idle_timeout: Duration::from_secs(4),
        max_requests: 10_000,
    };
}

/// Effective timeouts of a request to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// Deadline for the whole request including retries; `None` means none.
    pub total: Option<Duration>,
    /// A tcp or upgraded (WebSocket) connection with no bytes either way this long is closed.
    pub idle: Duration,
}

impl Timeouts {
    /// sluice's defaults. Connect 5 s: Linux retransmits an unanswered SYN after 1 s, then
    /// after 2 s more; a 1 s timeout failed every connect whose first SYN was dropped (a
    /// burst of new connections overflowing a backend's accept queue did that, 6 × 504 in
    /// 500). 5 s (Envoy's default) lets two retransmissions through; a refused connect
    /// fails at once anyway. Read and write 60 s (nginx's), no deadline for the whole
    /// request, idle tcp and WebSocket connections closed after 1 h.
    pub const DEFAULT: Self = Self {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(60),
        write: Duration::from_secs(60),
        total: None,
        idle: Duration::from_secs(3600),
    };

    /// These timeouts with a route's overrides applied.
    pub fn with_overrides(self, overrides: &TimeoutOverrides) -> Self {
        Self {
            connect: overrides.connect.unwrap_or(self.connect),
            read: overrides.read.unwrap_or(self.read),
            write: overrides.write.unwrap_or(self.write),
            total: overrides.total.unwrap_or(self.total),
            idle: overrides.idle.unwrap_or(self.idle),
        }
    }
}

/// HTTP/2 streams per upstream connection unless set (gRPC backends typically allow 100
/// or more; Pingora's default of 1 would open a connection per call).
pub const DEFAULT_MAX_STREAMS: u32 = 100;
/// Ring points per unit of weight of a consistent-hash upstream unless set.
pub const DEFAULT_HASH_POINTS: u32 = 160;
/// Request bodies above this are answered 413 unless a route sets its own limit
/// (nginx's `client_max_body_size` default).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1 << 20;

impl UpstreamConfig {
    /// An HTTP/1 round-robin upstream with every other setting at sluice's default: the
    /// upstream a config file gets from a name and endpoints alone.
    pub fn new(
        name: &str,
        origin: Origin,
        source: EndpointSource,
        endpoints: Vec<EndpointConfig>,
    ) -> Self {
        Self {
            name: name.to_string(),
            origin,
            source,
            endpoints,
            protocol: UpstreamProtocol::default(),
            tls: None,
            max_streams: DEFAULT_MAX_STREAMS,
            balance: BalancePolicy::default(),
            hash_key: None,
            hash_points: DEFAULT_HASH_POINTS,
            health: HealthConfig::default(),
            slow_start: None,
            keepalive: UpstreamKeepalive::DEFAULT,
            timeouts: Timeouts::DEFAULT,
            retry: RetryPolicy::DEFAULT,
            proxy_protocol: None,
        }
    }
}

/// When a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, the first included.
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_reset_before_response: bool,
    pub methods: RetryMethods,
    /// Responses with these statuses are not passed on but retried (nginx's
    /// `proxy_next_upstream http_502`, Gateway API's `retry.codes`).
    pub on_status: RetryStatuses,
    /// Time between a failed try and the next (none for a request that was never sent).
    pub backoff: Option<Duration>,
    /// Retries in flight may not exceed this share of the upstream's active requests.
    pub budget_percent: u32,
}

impl RetryPolicy {
    /// Two tries, after a failed connect or a reset before any response, of idempotent
    /// requests; retries in flight at most 20% of active requests (Envoy's budget).
    pub const DEFAULT: Self = Self {
        attempts: 2,
        on_connect_failure: true,
        on_reset_before_response: true,
        methods: RetryMethods::Idempotent,
        on_status: RetryStatuses::NONE,
        backoff: None,
        budget_percent: 20,
    };
}

/// A set of response statuses from 400 to 599: the ones worth retrying on another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryStatuses([u64; 4]);

impl RetryStatuses {
    pub const NONE: Self = Self([0; 4]);
    const FIRST: u16 = 400;
    const LAST: u16 = 599;

    /// Adds `status`; false (and nothing added) when it is outside 400–599.
    pub fn insert(&mut self, status: u16) -> bool {
        if !(Self::FIRST..=Self::LAST).contains(&status) {
            return false;
        }
        let bit = usize::from(status - Self::FIRST);
        self.0[bit / 64] |= 1 << (bit % 64);
        true
    }

    pub fn contains(&self, status: u16) -> bool {
        if !(Self::FIRST..=Self::LAST).contains(&status) {
            return false;
        }
        let bit = usize::from(status - Self::FIRST);
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::NONE
    }

    /// The statuses, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (Self::FIRST..=Self::LAST).filter(|s| self.contains(*s))
    }
}

/// What happens to a request path with `%2F` or `%5C` (an encoded `/` or `\`) in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Answer 400 (the default).
    #[default]
    Reject,
    /// Forward unchanged; the encoding is not a separator for routing (Envoy's
    /// `KEEP_UNCHANGED`).
    Keep,
    /// Decode to `/` or `\` before routing and forward the decoded path (Envoy's
    /// `UNESCAPE_AND_FORWARD`).
    Decode,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
}

/// What sluice speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
    H2,
    Tcp,
}

/// How an endpoint is chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    #[default]
    RoundRobin,
    Random,
    LeastRequest,
    ConsistentHash,
}

/// What to do with endpoints that are terminating but still serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminatingPolicy {
    Drain,
    Drop,
}

/// Which request methods may be retried after `reset_before_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMethods {
    Idempotent,
    All,
}
