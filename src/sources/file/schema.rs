//! The YAML schema of sluice.yaml, exactly as written by the operator.
//!
//! Values that need checking beyond their YAML type (durations, addresses, templates, regexes)
//! stay strings here so that one bad value does not stop parsing: `validate` turns this raw
//! form into the typed [`super::Config`] and reports every problem at once. Unknown keys are
//! rejected by serde (`deny_unknown_fields`), with the position serde_yaml gives.

use crate::model::{
    BalancePolicy, EscapedSlashes, ListenerProtocol, ProxyProtocolVersion, RetryMethods,
    TerminatingPolicy, UpstreamProtocol,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<RawKubernetes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<RawIngress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<RawGateway>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<RawTracing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
}

/// `server:` process-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Worker threads; `None` means one per CPU.
    pub threads: Option<usize>,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub grace_period: String,
    pub drain_delay: String,
    pub watch_config: bool,
    /// DNS servers for `dns` upstreams (issue #17); absent: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<RawResolver>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            threads: None,
            upgrade_sock: "/run/sluice/upgrade.sock".into(),
            pid_file: "/run/sluice/sluice.pid".into(),
            grace_period: "300s".into(),
            drain_delay: "0s".into(),
            watch_config: true,
            resolver: None,
        }
    }
}

/// `admin:` the loopback admin listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Every admin endpoint, `/config` and `/upstreams` included: loopback by default.
    pub listen: String,
    /// Optional second listener with only `/metrics`, `/healthz` and `/readyz`, for
    /// Prometheus and the kubelet (ingress-nginx's 10254).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// A file holding a bearer token that `/config` and `/upstreams` then require.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Host names the admin listeners accept besides IP literals and `localhost` (the Host
    /// check stops DNS rebinding).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9901".into(),
            metrics_listen: None,
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `access_log:` where the JSON lines go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccessLog {
    /// `stdout`, `off`, or a file path.
    pub path: String,
    pub format: AccessLogFormat,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        Self {
            path: "stdout".into(),
            format: AccessLogFormat::Json,
        }
    }
}

/// `tracing:` spans to an OpenTelemetry collector (issue #20).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The collector's OTLP/HTTP traces URL: `http://HOST:4318/v1/traces` (a URL without a
    /// path gets `/v1/traces`).
    pub otlp_endpoint: String,
    #[serde(default = "default_export_timeout")]
    pub export_timeout: String,
    #[serde(default)]
    pub sampling: RawSampling,
    #[serde(default = "default_queue_spans")]
    pub queue_spans: usize,
    #[serde(default = "default_batch_spans")]
    pub batch_spans: usize,
    #[serde(default = "default_batch_delay")]
    pub batch_delay: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_export_timeout() -> String {
    "10s".into()
}

fn default_queue_spans() -> usize {
    8192
}

fn default_batch_spans() -> usize {
    512
}

fn default_batch_delay() -> String {
    "1s".into()
}

fn default_service_name() -> String {
    "sluice".into()
}

/// `redis:` where fleet-wide rate limits are counted (issue #21). Exactly one of
/// `address`, `sentinel` and `cluster`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `host:port` of one Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RawRedisSentinel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<RawRedisCluster>,
    #[serde(default)]
    pub database: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (its trailing newline is not part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawRedisTls>,
    #[serde(default = "default_redis_connections")]
    pub connections: usize,
    #[serde(default = "default_redis_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub breaker: RawBreaker,
    #[serde(default = "default_reserve_ahead")]
    pub reserve_ahead: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_connections() -> usize {
    2
}

fn default_redis_timeout() -> String {
    "50ms".into()
}

fn default_reserve_ahead() -> String {
    "20ms".into()
}

fn default_key_prefix() -> String {
    "sluice:".into()
}

/// `redis.sentinel:` the master of `service`, as these Sentinels know it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisSentinel {
    pub service: String,
    pub addresses: Vec<String>,
}

/// `redis.cluster:` seed nodes of a Redis Cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisCluster {
    pub addresses: Vec<String>,
}

/// `redis.tls:` present turns TLS on.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedisTls {
    /// PEM file of the CAs that sign Redis's certificate; absent: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// `redis.breaker:` when to stop calling Redis for a while.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    pub failures: u32,
    pub open_for: String,
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self {
            failures: 3,
            open_for: "2s".into(),
        }
    }
}

/// `tracing.sampling:` head sampling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSampling {
    /// Share of traces recorded that no caller decided (0 to 1).
    pub ratio: f64,
    /// A caller's `traceparent` sampled flag decides for its trace.
    pub parent_based: bool,
}

impl Default for RawSampling {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            parent_based: true,
        }
    }
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    Json,
}

/// `kubernetes:` API client settings (issue #4).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    pub api_server: Option<String>,
    pub token_file: Option<String>,
    pub ca_file: Option<String>,
}

/// `ingress:` the Kubernetes Ingress source (issue #18).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngress {
    #[serde(default = "default_controller")]
    pub controller: String,
    #[serde(default = "default_class")]
    pub class: String,
    #[serde(default)]
    pub unclassed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_claim: Vec<String>,
    pub http_listener: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_listener: Option<String>,
    #[serde(default = "default_ingress_https_port")]
    pub https_redirect_port: u16,
    /// The tcp listener (`sni_routing: true`) for `ssl-passthrough` hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough_listener: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<RawPublish>,
    #[serde(default)]
    pub leader_election: RawLeaderElection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RawWebhook>,
}

fn default_controller() -> String {
    crate::model::DEFAULT_CONTROLLER.to_string()
}

fn default_class() -> String {
    "sluice".to_string()
}

fn default_ingress_https_port() -> u16 {
    443
}

/// `ingress.publish`: one of a Service (`namespace/name`) and explicit addresses.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublish {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// `ingress.leader_election`: the Lease that picks the replica writing status.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLeaderElection {
    /// Default: `$POD_NAMESPACE`, else `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Default: `$POD_NAME`, else the host name and process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub duration: String,
}

impl Default for RawLeaderElection {
    fn default() -> Self {
        Self {
            namespace: None,
            name: "sluice-ingress-leader".into(),
            identity: None,
            duration: "15s".into(),
        }
    }
}

/// `gateway:` the Kubernetes Gateway API source (issue #19).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    #[serde(default = "default_gateway_controller")]
    pub controller_name: String,
    /// Gateway listener ports and the sluice listeners that serve them.
    #[serde(default)]
    pub listeners: Vec<RawGatewayListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<RawPublish>,
    /// Gateways served by sluice listeners of their own, apart from all others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedicated: Vec<RawDedicatedGateway>,
    /// The same Lease as `ingress.leader_election` by default: one replica writes both.
    #[serde(default)]
    pub leader_election: RawLeaderElection,
}

/// `gateway.listeners[]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayListener {
    pub port: u16,
    pub listener: String,
}

/// `gateway.dedicated[]`: one Gateway and its own sluice listeners.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedicatedGateway {
    /// `NAMESPACE/NAME`.
    pub gateway: String,
    pub listeners: Vec<RawGatewayListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<RawPublish>,
}

fn default_gateway_controller() -> String {
    crate::model::DEFAULT_GATEWAY_CONTROLLER.to_string()
}

/// `ingress.webhook`: the validating admission webhook's HTTPS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub listen: String,
    pub certificate: String,
    pub key: String,
}

/// `listeners[]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub listen: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[serde(default)]
    pub h2c: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawListenerTls>,
    #[serde(default)]
    pub keepalive: RawDownstreamKeepalive,
    #[serde(default)]
    pub requests: RawRequestLimits,
    /// Redirect every request to HTTPS (issue #16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<RawHttpsRedirect>,
    /// Networks of the proxies whose forwarding headers name the client (issue #17).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Only these client networks may send requests (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These client networks may not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Connections start with a PROXY protocol header (v1 or v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<RawProxyProtocol>,
    /// A tcp listener routes connections by their TLS server name (TLS passthrough).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sni_routing: bool,
    #[serde(default)]
    pub connections: RawConnectionLimits,
    /// Where requests that match no route go, instead of a 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<RawDefaultBackend>,
}

/// `listeners[].default_backend`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaultBackend {
    pub upstream: String,
}

/// `proxy_protocol`: `true`, or the header's read timeout.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawProxyProtocol {
    On(bool),
    Settings(RawProxyProtocolSettings),
}

/// `proxy_protocol: { timeout }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocolSettings {
    #[serde(default = "default_proxy_protocol_timeout")]
    pub timeout: String,
}

/// nginx's `proxy_protocol_timeout`.
pub fn default_proxy_protocol_timeout() -> String {
    "30s".into()
}

/// `listeners[].connections`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnectionLimits {
    pub max: Option<u32>,
    pub max_per_client: Option<u32>,
}

/// `listeners[].requests`: what a request head and body may be, and how long they may take
/// to arrive (issue #13). Sizes are bytes, or a number with `k`, `m` or `g` (1024-based).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRequestLimits {
    pub max_request_line: String,
    pub max_header_line: String,
    pub max_header_bytes: String,
    pub max_headers: u32,
    pub header_timeout: String,
    pub body_read_timeout: String,
    pub body_timeout: String,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for RawRequestLimits {
    fn default() -> Self {
        Self {
            max_request_line: "8k".into(),
            max_header_line: "8k".into(),
            max_header_bytes: "32k".into(),
            max_headers: 100,
            header_timeout: "60s".into(),
            body_read_timeout: "60s".into(),
            body_timeout: "300s".into(),
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// `listeners[].tls` (issue #6).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawCertificate>,
    /// Ask clients for certificates (mTLS, issue #17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<RawClientAuth>,
}

/// `listeners[].tls.client_auth`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// PEM bundle of the CAs that issue client certificates; absent: routes check them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default)]
    pub mode: RawClientAuthMode,
    /// nginx's and ingress-nginx's default.
    #[serde(default = "default_verify_depth")]
    pub verify_depth: u8,
    #[serde(default)]
    pub headers: RawClientCertHeaders,
}

fn default_verify_depth() -> u8 {
    1
}

/// `listeners[].tls.client_auth.mode`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawClientAuthMode {
    #[default]
    Required,
    Optional,
}

/// `listeners[].tls.client_auth.headers`: ingress-nginx's names by default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClientCertHeaders {
    pub verify: String,
    pub subject: String,
    pub issuer: String,
    pub fingerprint: String,
}

impl Default for RawClientCertHeaders {
    fn default() -> Self {
        Self {
            verify: "ssl-client-verify".into(),
            subject: "ssl-client-subject-dn".into(),
            issuer: "ssl-client-issuer-dn".into(),
            fingerprint: "ssl-client-fingerprint".into(),
        }
    }
}

/// One certificate chain and its private key, as file paths.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
}

/// `listeners[].keepalive`: downstream keepalive.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDownstreamKeepalive {
    pub timeout: String,
    pub max_requests: u32,
}

impl Default for RawDownstreamKeepalive {
    fn default() -> Self {
        Self {
            timeout: "75s".into(),
            max_requests: 10_000,
        }
    }
}

/// `routes[]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    pub listener: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<RawPathMatch>,
    /// Any of these methods (issue #16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Every one of these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawValueMatch>,
    /// Every one of these query parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<RawValueMatch>,
    /// The one upstream; or `backends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Upstreams sharing the route's requests by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<RawBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RawCanary>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_rate_limit: Option<RawGlobalRateLimit>,
    /// At most this many requests in flight per client IP; more get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_per_client: Option<u32>,
    /// Trace its requests when `tracing:` is set; `false` makes no span and passes the
    /// caller's `traceparent` through untouched.
    #[serde(default = "default_true")]
    pub tracing: bool,
    /// Read the whole request body before choosing an endpoint (ingress-nginx's
    /// `proxy-request-buffering: on`); `false` streams it (uploads, gRPC).
    #[serde(default = "default_true")]
    pub request_buffering: bool,
    /// Larger request bodies are answered 413; `0` is no limit (nginx's
    /// `client_max_body_size`).
    #[serde(default = "default_max_body_size")]
    pub max_body_size: String,
    /// The `Host` sent upstream (ingress-nginx's `upstream-vhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<RawHeaderEdits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<RawHeaderEdits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RawRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<RawHttpsRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RawRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<RawMirror>,
    /// A request for `/` is redirected here (ingress-nginx's `app-root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<RawAffinity>,
    /// Only these client networks may use the route (issue #17).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<RawCors>,
    /// Basic or external authentication (issue #17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    /// Requests without an accepted client certificate get 400 (issue #17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_certificate: Option<RawRequireClientCertificate>,
    /// Pages shown instead of error answers (issue #17).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_pages: Vec<RawErrorPage>,
    /// These client networks may not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// One of `prefix`, `segment_prefix`, `exact` or `regex`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `routes[].headers[]`, `routes[].query[]`: a name and one of `exact` or `regex`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawValueMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `routes[].backends[]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub upstream: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `routes[].canary`: ingress-nginx's `canary-*` annotations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default)]
    pub weight: u32,
    #[serde(default = "default_weight_total")]
    pub weight_total: u32,
    #[serde(default)]
    pub fallback: bool,
}

fn default_weight_total() -> u32 {
    100
}

/// `request_headers`, `response_headers`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `routes[].redirect`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    302
}

/// `https_redirect`: `true`, or the port and status.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawHttpsRedirect {
    On(bool),
    Settings(RawHttpsRedirectSettings),
}

/// `https_redirect: { port, status }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpsRedirectSettings {
    #[serde(default = "default_https_port")]
    pub port: u16,
    #[serde(default = "default_https_redirect_status")]
    pub status: u16,
}

fn default_https_port() -> u16 {
    443
}

fn default_https_redirect_status() -> u16 {
    308
}

/// `routes[].rewrite`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<RawRegexRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_prefix: Option<String>,
}

/// `routes[].rewrite.regex`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegexRewrite {
    pub pattern: String,
    pub replacement: String,
}

/// `routes[].mirror`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub upstream: String,
    #[serde(default = "default_mirror_in_flight")]
    pub max_in_flight: u32,
    /// The share of requests copied, 0-100.
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
}

fn default_mirror_percent() -> f64 {
    100.0
}

fn default_mirror_in_flight() -> u32 {
    crate::model::DEFAULT_MIRROR_IN_FLIGHT
}

/// `routes[].cors`, with ingress-nginx's `cors-*` defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: String,
}

impl Default for RawCors {
    fn default() -> Self {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Self {
            allow_origins: list(&["*"]),
            allow_methods: list(&["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]),
            allow_headers: list(&[
                "DNT",
                "Keep-Alive",
                "User-Agent",
                "X-Requested-With",
                "If-Modified-Since",
                "Cache-Control",
                "Content-Type",
                "Range",
                "Authorization",
            ]),
            expose_headers: Vec::new(),
            allow_credentials: true,
            max_age: "1728000s".into(),
        }
    }
}

/// `routes[].affinity`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinity {
    pub cookie: RawAffinityCookie,
}

/// `routes[].affinity.cookie`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinityCookie {
    #[serde(default = "default_affinity_cookie")]
    pub name: String,
    #[serde(default = "default_affinity_path")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    #[serde(default)]
    pub secure: bool,
}

fn default_affinity_cookie() -> String {
    "sluice_affinity".into()
}

fn default_affinity_path() -> String {
    "/".into()
}

/// `routes[].rate_limit` (issue #6).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_second: u32,
    #[serde(default)]
    pub burst: u32,
    #[serde(default = "default_rate_limit_by")]
    pub by: String,
    /// Networks whose clients are not limited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<String>,
}

/// `routes[].global_rate_limit` (issue #21): counted in `redis:` for every replica.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobalRateLimit {
    pub requests: u32,
    #[serde(default = "default_global_window")]
    pub window: String,
    #[serde(default = "default_rate_limit_by")]
    pub by: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<String>,
    /// `allow` (fail open) or `reject` (fail closed) while Redis cannot answer.
    #[serde(default = "default_on_redis_failure")]
    pub on_redis_failure: String,
    /// The status of a request rejected because Redis cannot answer: 429 or 503.
    #[serde(default = "default_failure_status")]
    pub failure_status: u16,
}

fn default_global_window() -> String {
    "1s".into()
}

fn default_on_redis_failure() -> String {
    "allow".into()
}

fn default_failure_status() -> u16 {
    503
}

fn default_rate_limit_by() -> String {
    "route".into()
}

/// Timeouts; every field optional so routes can override only some.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

/// `upstreams[]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<RawKubernetesService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<RawEndpoint>>,
    /// Endpoints from a DNS name (issue #17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<RawDnsName>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default)]
    pub balance: BalancePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    #[serde(default = "default_hash_points")]
    pub hash_points: u32,
    #[serde(default)]
    pub keepalive: RawUpstreamKeepalive,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RawHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<TerminatingPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawUpstreamTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    /// Send a PROXY protocol header to the endpoints (tcp upstreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

fn default_hash_points() -> u32 {
    160
}

/// `upstreams[].kubernetes`: EndpointSlice discovery (issue #4).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesService {
    pub namespace: String,
    pub service: String,
    pub port: RawServicePort,
}

/// A service port, by number or by name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawServicePort {
    Number(u16),
    Name(String),
}

/// A static endpoint: `"10.0.0.1:80"` or `{ address: "10.0.0.1:80", weight: 2 }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "an endpoint: \"IP:PORT\" or { address: \"IP:PORT\", weight: N }"
)]
pub enum RawEndpoint {
    Address(String),
    Weighted(RawWeightedEndpoint),
}

/// The long form of a static endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedEndpoint {
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// `upstreams[].keepalive`: the upstream connection pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstreamKeepalive {
    pub max_idle: u32,
    pub idle_timeout: String,
    pub max_requests: u32,
}

impl Default for RawUpstreamKeepalive {
    fn default() -> Self {
        // An idle upstream connection must be closed by sluice before the application
        // server closes it, or a request sent on it just as the server closes it fails
        // ("upstream closed a reused connection"). Application servers keep idle
        // connections for a few seconds (node and uvicorn 5 s, Apache 5 s, gunicorn 2 s),
        // so 4 s stays under most of them.
        Self {
            max_idle: 128,
            idle_timeout: "4s".into(),
            max_requests: 10_000,
        }
    }
}

/// `upstreams[].retry`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub attempts: u32,
    pub on: Vec<RetryCondition>,
    pub methods: RetryMethods,
    /// Response statuses (400–599) that are retried instead of passed on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_status: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    pub budget_percent: u32,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            attempts: 2,
            on: vec![
                RetryCondition::ConnectFailure,
                RetryCondition::ResetBeforeResponse,
            ],
            methods: RetryMethods::Idempotent,
            on_status: Vec::new(),
            backoff: None,
            budget_percent: 20,
        }
    }
}

/// A failure after which a request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCondition {
    /// The connection could not be established (refused, timed out): nothing was sent.
    ConnectFailure,
    /// The connection failed before any response header arrived.
    ResetBeforeResponse,
}

/// `upstreams[].health` (issue #3).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<RawActiveHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<RawPassiveHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percent: Option<u32>,
}

/// Active health checks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawActiveHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// gRPC health checking (`grpc.health.v1.Health/Check`) of this service name (`""`: the
    /// server as a whole); for `protocol: h2c` or `h2` upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_health_interval")]
    pub interval: String,
    #[serde(default = "default_health_timeout")]
    pub timeout: String,
    #[serde(default = "default_health_threshold")]
    pub healthy_after: u32,
    #[serde(default = "default_health_threshold")]
    pub unhealthy_after: u32,
    #[serde(default = "default_expect_status")]
    pub expect_status: String,
}

fn default_health_interval() -> String {
    "2s".into()
}
fn default_health_timeout() -> String {
    "1s".into()
}
fn default_health_threshold() -> u32 {
    2
}
fn default_expect_status() -> String {
    "200-399".into()
}

/// Passive ejection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveHealth {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_eject_for")]
    pub eject_for: String,
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
    #[serde(default)]
    pub on_5xx: bool,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_eject_for() -> String {
    "30s".into()
}
fn default_max_ejected_percent() -> u32 {
    50
}

/// `upstreams[].tls`: TLS towards the upstream (issue #6).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default = "default_true")]
    pub verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<RawSubjectAltName>>,
    /// The certificate presented when the upstream asks for one (nginx's
    /// `proxy_ssl_certificate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<RawCertificate>,
}

/// `upstreams[].tls.subject_alt_names[]`: exactly one of `dns` and `uri`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubjectAltName {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_max_body_size() -> String {
    "1m".into()
}

/// `routes[].auth`: exactly one of `basic` and `external`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<RawBasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<RawExternalAuth>,
}

/// `routes[].auth.basic`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// Path of an htpasswd file.
    pub htpasswd: String,
    #[serde(default = "default_realm")]
    pub realm: String,
}

/// ingress-nginx's default `auth-realm`.
fn default_realm() -> String {
    "Authentication Required".into()
}

/// `routes[].auth.external`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawExternalAuth {
    pub upstream: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<String>,
    #[serde(default = "default_auth_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub on_error: RawAuthFailure,
}

fn default_auth_timeout() -> String {
    "5s".into()
}

/// `routes[].auth.external.on_error`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAuthFailure {
    #[default]
    Deny,
    Allow,
}

/// `routes[].error_pages[]`: statuses and exactly one of `file` and `upstream`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorPage {
    pub status: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// `upstreams[].dns`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsName {
    pub name: String,
    pub port: u16,
    #[serde(default = "default_min_ttl")]
    pub min_ttl: String,
    #[serde(default = "default_max_ttl")]
    pub max_ttl: String,
}

fn default_min_ttl() -> String {
    "5s".into()
}

fn default_max_ttl() -> String {
    "300s".into()
}

/// `server.resolver`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub nameservers: Vec<String>,
    #[serde(default = "default_resolver_timeout")]
    pub timeout: String,
}

fn default_resolver_timeout() -> String {
    "2s".into()
}

/// `routes[].require_client_certificate`: `true` (the listener's CA), or the route's own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawRequireClientCertificate {
    On(bool),
    Ca(RawRouteClientCa),
}

/// `routes[].require_client_certificate: { ca, verify_depth }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteClientCa {
    pub ca: String,
    #[serde(default = "default_verify_depth")]
    pub verify_depth: u8,
}
