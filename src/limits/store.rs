//! The connection to Redis where fleet-wide limits are counted: addressing (one server,
//! Sentinel, Cluster), TLS and AUTH, a few multiplexed connections, the reservation script,
//! and the circuit breaker that every call passes.
//!
//! Connections are made when first needed and made again after an error that may have
//! broken them (for Sentinel, asking the Sentinels for the master again, so a failover is
//! followed). Every call, connecting included, is bounded by `redis.timeout`.

use super::breaker::{Breaker, Change};
use crate::model::{RedisAddress, RedisAddressing, RedisSettings};
use crate::observe::metrics::METRICS;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo};
use redis::{RedisConnectionInfo, RedisResult, Script, TlsCertificates, TlsMode};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Reserves up to `ARGV[3]` of the `ARGV[1]` requests per `ARGV[2]` ms of the key
/// `KEYS[1]`, counted in a sliding window as ingress-nginx's global rate limit counts
/// (this window's count plus the previous one's, weighted by how much of it the sliding
/// window still covers). Redis's clock, so replicas' clocks need not agree; a window index
/// from the future (the route's window changed, or Redis's clock stepped back) starts the
/// count afresh. Returns the tokens granted and, when none, the milliseconds until one more
/// request fits.
const RESERVE: &str = r#"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local index = math.floor(now / window)
local elapsed = (now - index * window) / window
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(state[1])
local current = tonumber(state[2]) or 0
local previous = tonumber(state[3]) or 0
if w == nil or w < index - 1 or w > index then
  current, previous, w = 0, 0, index
elseif w == index - 1 then
  previous, current, w = current, 0, index
end
local used = previous * (1 - elapsed) + current
local granted = math.max(0, math.min(want, math.floor(limit - used)))
current = current + granted
redis.call('HSET', KEYS[1], 'w', w, 'c', current, 'p', previous)
redis.call('PEXPIRE', KEYS[1], window * 2)
local wait = 0
if granted == 0 then
  local at
  if current + 1 <= limit and previous > 0 then
    at = 1 - (limit - 1 - current) / previous
  else
    at = 1 + math.max(0, 1 - (limit - 1) / current)
  end
  wait = math.max(1, math.ceil((at - elapsed) * window))
end
return {granted, wait}
"#;

/// Why Redis could not answer.
#[derive(Debug)]
pub enum StoreError {
    /// The circuit breaker is open: no call was made.
    BreakerOpen,
    /// No answer within `redis.timeout`.
    Timeout,
    Redis(redis::RedisError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::BreakerOpen => f.write_str("the circuit breaker is open"),
            StoreError::Timeout => f.write_str("no answer in time"),
            StoreError::Redis(e) => write!(f, "{e}"),
        }
    }
}

/// What Redis granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub tokens: u32,
    /// When no token was granted: how long until one more request fits.
    pub wait: Duration,
}

/// A multiplexed connection: clones share it.
#[derive(Clone)]
enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// How connections are made.
enum Connector {
    Single(Client),
    Sentinel(Mutex<SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

/// One Redis, shared by every route's global limit (and kept across reloads that keep
/// `redis:` as it is).
pub struct Store {
    settings: RedisSettings,
    connector: Arc<Result<Connector, String>>,
    slots: Vec<Arc<Mutex<Option<Connection>>>>,
    next: AtomicUsize,
    breaker: Breaker,
    script: Script,
    /// `host:port` for log lines.
    name: String,
}

impl Store {
    /// A store for `settings`; connects on first use.
    pub fn new(settings: &RedisSettings) -> Self {
        let name = match &settings.addressing {
            RedisAddressing::Standalone(address) => address.to_string(),
            RedisAddressing::Sentinel { service, sentinels } => {
                format!("{service} via Sentinel {}", list(sentinels))
            }
            RedisAddressing::Cluster(seeds) => format!("Cluster {}", list(seeds)),
        };
        // A new store (a start, or a reload that changed `redis:`) starts with its breaker
        // closed.
        METRICS.redis_breaker_open.set(0);
        let connector = connector(settings).map_err(|e| {
            log::error!("redis {name}: {e}; fleet-wide rate limits follow on_redis_failure");
            e.to_string()
        });
        Self {
            connector: Arc::new(connector),
            slots: (0..settings.connections)
                .map(|_| Arc::new(Mutex::new(None)))
                .collect(),
            next: AtomicUsize::new(0),
            breaker: Breaker::new(settings.breaker),
            script: Script::new(RESERVE),
            settings: settings.clone(),
            name,
        }
    }

    /// The settings this store was made for.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Whether a call made now would be refused by the circuit breaker.
    pub fn refusing_calls(&self) -> bool {
        self.breaker.refusing(Instant::now())
    }

    /// Reserves up to `want` of the `requests` per `window` of `key`.
    pub async fn reserve(
        &self,
        key: &[u8],
        requests: u32,
        window: Duration,
        want: u32,
    ) -> Result<Grant, StoreError> {
        if !self.breaker.allow(Instant::now()) {
            METRICS
                .redis_calls
                .with_label_values(&["breaker_open"])
                .inc();
            return Err(StoreError::BreakerOpen);
        }
        let started = Instant::now();
        let window_ms = window.as_millis().max(1) as u64;
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let call = self.call(slot, key, requests, window_ms, want);
        let outcome = match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok((tokens, wait_ms))) => Ok(Grant {
                tokens,
                wait: Duration::from_millis(wait_ms),
            }),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => {
                // A silent partition leaves a socket that never answers: the next call makes
                // a new connection (asking Sentinel again) instead of waiting on it. A slot
                // being connected keeps its connect.
                if let Ok(mut held) = slot.try_lock() {
                    *held = None;
                }
                Err(StoreError::Timeout)
            }
        };
        let result = match &outcome {
            Ok(_) => {
                let seconds = started.elapsed().as_secs_f64();
                METRICS
                    .redis_call_duration
                    .with_label_values(&[] as &[&str])
                    .observe(seconds);
                "ok"
            }
            Err(StoreError::Timeout) => "timeout",
            Err(StoreError::Redis(e)) if e.is_timeout() => "timeout",
            Err(_) => "error",
        };
        METRICS.redis_calls.with_label_values(&[result]).inc();
        // An error answer about one key (e.g. WRONGTYPE) is not Redis being unavailable.
        let answered = match &outcome {
            Ok(_) => true,
            Err(StoreError::Redis(e)) => !unavailable(e),
            Err(_) => false,
        };
        match self.breaker.record(answered, Instant::now()) {
            Some(Change::Opened) => {
                METRICS.redis_breaker_open.set(1);
                let error = outcome.as_ref().err().map(|e| e.to_string());
                log::warn!(
                    "redis {}: {} calls in a row failed (last: {}); fleet-wide rate limits \
                     now follow each route's on_redis_failure, and Redis is tried again in {:?}",
                    self.name,
                    self.settings.breaker.failures,
                    error.unwrap_or_default(),
                    self.settings.breaker.open_for,
                );
            }
            Some(Change::Closed) => {
                METRICS.redis_breaker_open.set(0);
                log::warn!(
                    "redis {}: answering again; fleet-wide rate limits are counted again",
                    self.name
                );
            }
            None => {}
        }
        outcome
    }

    async fn call(
        &self,
        slot: &Arc<Mutex<Option<Connection>>>,
        key: &[u8],
        requests: u32,
        window_ms: u64,
        want: u32,
    ) -> RedisResult<(u32, u64)> {
        let mut connection = self.connection(slot).await?;
        let mut invocation = self.script.key(key);
        invocation.arg(requests).arg(window_ms).arg(want);
        let answer = match &mut connection {
            Connection::Single(c) => invocation.invoke_async(c).await,
            Connection::Cluster(c) => invocation.invoke_async(c).await,
        };
        if let Err(e) = &answer {
            // A connection that may be broken, or a master that is now a replica, is
            // replaced on the next call.
            if unavailable(e) || e.is_unrecoverable_error() {
                *slot.lock().await = None;
            }
        }
        answer
    }

    /// The connection of `slot`, made if there is none. Connecting runs in a task of its
    /// own, bounded by [`connect_timeout`] rather than by the calls waiting for it: a TLS
    /// handshake to a distant Redis may take longer than one call may wait, and must still
    /// finish for the calls after it.
    async fn connection(&self, slot: &Arc<Mutex<Option<Connection>>>) -> RedisResult<Connection> {
        let mut held = Arc::clone(slot).lock_owned().await;
        if let Some(connection) = &*held {
            return Ok(connection.clone());
        }
        let connector = Arc::clone(&self.connector);
        let timeout = connect_timeout(&self.settings);
        let connecting = tokio::spawn(async move {
            let connection = connect(&connector, timeout).await?;
            *held = Some(connection.clone());
            Ok(connection)
        });
        connecting
            .await
            .unwrap_or_else(|e| Err(connect_error(e.to_string())))
    }
}

/// How long making a connection (TCP, TLS, AUTH, asking Sentinel) may take.
fn connect_timeout(settings: &RedisSettings) -> Duration {
    settings.timeout.max(Duration::from_secs(2))
}

async fn connect(
    connector: &Result<Connector, String>,
    timeout: Duration,
) -> RedisResult<Connection> {
    let connector = connector.as_ref().map_err(|e| {
        let kind = redis::ErrorKind::InvalidClientConfig;
        redis::RedisError::from((kind, "invalid redis settings", e.clone()))
    })?;
    // Calls are bounded by `redis.timeout` around them, not by the client.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    let connecting = async {
        match connector {
            Connector::Single(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Connection::Single),
            Connector::Sentinel(sentinel) => sentinel
                .lock()
                .await
                .get_async_connection_with_config(&config)
                .await
                .map(Connection::Single),
            Connector::Cluster(client) => {
                client.get_async_connection().await.map(Connection::Cluster)
            }
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or_else(|_| Err(connect_error(format!("timed out after {timeout:?}"))))
}

/// A connection that could not be made (an I/O error: it counts toward the breaker).
fn connect_error(detail: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "connecting to redis", detail))
}

/// Whether `error` says Redis (or this connection to it) cannot serve, rather than that one
/// call was wrong: these count toward the breaker and replace the connection.
fn unavailable(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || [
            "READONLY",
            "LOADING",
            "MASTERDOWN",
            "CLUSTERDOWN",
            "TRYAGAIN",
        ]
        .iter()
        .any(|code| text.contains(code))
}

fn list(addresses: &[RedisAddress]) -> String {
    let names: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    names.join(",")
}

fn address(address: &RedisAddress, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: address.host.clone(),
            port: address.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(address.host.clone(), address.port)
    }
}

fn certificates(settings: &RedisSettings) -> Option<TlsCertificates> {
    let tls = settings.tls.as_ref()?;
    Some(TlsCertificates {
        client_tls: None,
        root_cert: tls.ca_pem.clone(),
    })
}

fn redis_settings(settings: &RedisSettings) -> RedisConnectionInfo {
    let mut info = RedisConnectionInfo::default().set_db(settings.database);
    if let Some(auth) = &settings.auth {
        info = info.set_password(&auth.password);
        if let Some(username) = &auth.username {
            info = info.set_username(username);
        }
    }
    info
}

/// The client for `settings` (nothing is connected yet).
fn connector(settings: &RedisSettings) -> RedisResult<Connector> {
    let tls = settings.tls.is_some();
    let certificates = certificates(settings);
    match &settings.addressing {
        RedisAddressing::Standalone(server) => {
            let info = address(server, tls)
                .into_connection_info()?
                .set_redis_settings(redis_settings(settings));
            let client = match certificates {
                Some(certificates) => Client::build_with_tls(info, certificates)?,
                None => Client::open(info)?,
            };
            Ok(Connector::Single(client))
        }
        RedisAddressing::Sentinel { service, sentinels } => {
            let nodes = sentinels.iter().map(|s| address(s, tls));
            let mut builder =
                SentinelClientBuilder::new(nodes, service, SentinelServerType::Master)?
                    .set_client_to_redis_db(settings.database);
            if let Some(auth) = &settings.auth {
                builder = builder.set_client_to_redis_password(&auth.password);
                if let Some(username) = &auth.username {
                    builder = builder.set_client_to_redis_username(username);
                }
            }
            if let Some(certificates) = certificates {
                builder = builder
                    .set_client_to_redis_tls_mode(TlsMode::Secure)
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                    .set_client_to_sentinel_certificates(certificates);
            }
            Ok(Connector::Sentinel(Mutex::new(builder.build()?)))
        }
        RedisAddressing::Cluster(seeds) => {
            let nodes = seeds.iter().map(|s| address(s, tls));
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(connect_timeout(settings))
                .response_timeout(settings.timeout);
            if let Some(auth) = &settings.auth {
                builder = builder.password(auth.password.clone());
                if let Some(username) = &auth.username {
                    builder = builder.username(username.clone());
                }
            }
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            Ok(Connector::Cluster(builder.build()?))
        }
    }
}
