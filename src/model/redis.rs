//! Redis, where fleet-wide rate limits are counted (issue #21): how to reach it, and how
//! replicas reserve their share of each limit.

use std::fmt;
use std::time::Duration;

/// `redis:` of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub addressing: RedisAddressing,
    /// The logical database (standalone and Sentinel; Cluster has only 0).
    pub database: i64,
    pub auth: Option<RedisAuth>,
    /// TLS to Redis (and to the Sentinels); `None`: plain TCP.
    pub tls: Option<RedisTls>,
    /// Multiplexed connections each replica keeps (requests are pipelined on each).
    pub connections: usize,
    /// The most one Redis call may take before the request's limit is decided by
    /// `on_redis_failure`.
    pub timeout: Duration,
    pub breaker: BreakerSettings,
    /// How far ahead a replica reserves its share of a busy limit: each reservation asks
    /// for what the replica admitted for that key in about this long.
    pub reserve_ahead: Duration,
    /// Prefix of every key sluice writes.
    pub key_prefix: String,
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddressing {
    /// One server (or a proxy in front of several).
    Standalone(RedisAddress),
    /// The current master of `service`, asked of these Sentinels.
    Sentinel {
        service: String,
        sentinels: Vec<RedisAddress>,
    },
    /// A Redis Cluster, discovered from these seed nodes.
    Cluster(Vec<RedisAddress>),
}

/// `host:port`: a name (resolved when connecting) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddress {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Redis AUTH: a password, with a username for Redis 6 ACLs.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: String,
}

impl fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM certificates that sign Redis's certificate; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// When to stop calling Redis for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failed calls (errors or timeouts) that open the breaker.
    pub failures: u32,
    /// How long an open breaker makes no call; then one call probes Redis.
    pub open_for: Duration,
}

/// `routes[].global_rate_limit`: `requests` per `window` per key, counted in Redis for
/// every replica at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRateLimit {
    pub requests: u32,
    pub window: Duration,
    pub by: super::LimitKey,
    /// Clients in these networks are not limited (`global-rate-limit-ignored-cidrs`).
    pub exempt: Vec<super::IpNet>,
    pub on_redis_failure: RedisFailureMode,
}

/// What a request gets when Redis cannot say (unreachable, slow, breaker open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailureMode {
    /// Admit it (fail open): the limit stops, the service does not.
    Allow,
    /// Answer it with this status (429 or 503): fail closed.
    Reject(u16),
}
