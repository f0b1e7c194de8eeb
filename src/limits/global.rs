//! A route's fleet-wide rate limit: the key of each request, the pools of tokens this
//! replica holds per key, and what a request gets when Redis cannot say.

use super::rate_limit::{self, RequestFacts};
use super::reservation::{Pool, Sizing, Take};
use super::store::Store;
use crate::model::{GlobalRateLimit, RedisFailureMode};
use crate::observe::metrics::METRICS;
use pingora_prometheus::prometheus;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Keys longer than this are hashed (SHA-256) to name their counter.
const MAX_RAW_KEY: usize = 128;

/// The most keys one route's limiter holds pools for.
const MAX_KEYS: usize = 100_000;

/// The decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// Over the limit: the client may retry after `wait`.
    Limited {
        wait: Duration,
    },
    /// Redis could not say (unreachable, slower than `redis.timeout`, or the breaker open):
    /// the route's `on_redis_failure` decides.
    Unavailable(RedisFailureMode),
}

/// What the request path does with a [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Proceed,
    /// 429 with `Retry-After`.
    Limited(Duration),
    /// This status (fail closed).
    Refuse(u16),
}

impl Verdict {
    /// The answer, and the `result` label of `sluice_global_rate_limit_total`.
    pub fn answer(self) -> (&'static str, Answer) {
        match self {
            Verdict::Admitted => ("admitted", Answer::Proceed),
            Verdict::Limited { wait } => ("limited", Answer::Limited(wait)),
            Verdict::Unavailable(RedisFailureMode::Allow) => {
                ("redis_unavailable_allowed", Answer::Proceed)
            }
            Verdict::Unavailable(RedisFailureMode::Reject(status)) => {
                ("redis_unavailable_rejected", Answer::Refuse(status))
            }
        }
    }
}

/// How the last reservation of a key ended, for the requests that waited for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserved {
    Answered,
    Failed,
}

/// One key's pool and the signal of its reservations.
struct Entry {
    /// The limit key (hashed when long), as the pools map and the Redis counter name it.
    key: Box<[u8]>,
    pool: Mutex<Pool>,
    done: watch::Sender<Reserved>,
}

impl Entry {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request waiting for a reservation of an [`Entry`]; counted until dropped, so that a
/// request cancelled while it waits (its client gone) stops counting too.
struct Waiting<'a>(&'a Entry);

impl<'a> Waiting<'a> {
    fn begin(entry: &'a Entry) -> Self {
        entry.pool().wait_begins();
        Self(entry)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.pool().wait_ends();
    }
}

/// The global rate limit of one route.
pub struct GlobalLimiter {
    config: GlobalRateLimit,
    store: Arc<Store>,
    sizing: Sizing,
    /// `redis.key_prefix` + the route's name + `:`.
    prefix: Vec<u8>,
    pools: Mutex<Pools>,
    /// `sluice_global_rate_limit_waits_total` of the route.
    waits: prometheus::IntCounter,
}

struct Pools {
    entries: HashMap<Box<[u8]>, Arc<Entry>>,
    /// Idle pools are forgotten when there are this many.
    sweep_at: usize,
}

impl GlobalLimiter {
    /// The limit `config` of the route `route`, counted in `store`.
    pub fn new(route: &str, config: &GlobalRateLimit, store: Arc<Store>) -> Self {
        let settings = store.settings();
        let sizing = Sizing::new(config.requests, config.window, settings.reserve_ahead);
        let prefix = format!("{}{route}:", settings.key_prefix).into_bytes();
        Self {
            config: config.clone(),
            sizing,
            prefix,
            store,
            pools: Mutex::new(Pools {
                entries: HashMap::new(),
                sweep_at: 1024,
            }),
            waits: METRICS.global_rate_limit_waits.with_label_values(&[route]),
        }
    }

    /// The config this limiter enforces (to keep its pools across reloads that keep it).
    pub fn config(&self) -> &GlobalRateLimit {
        &self.config
    }

    /// The store it counts in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Decides on a request. Waits for Redis only when this replica holds no token for the
    /// request's key, and then at most `redis.timeout`.
    pub async fn admit(self: &Arc<Self>, facts: &RequestFacts<'_>) -> Verdict {
        if rate_limit::exempt(&self.config.exempt, facts.client_ip) {
            return Verdict::Admitted;
        }
        let entry = rate_limit::with_key(&self.config.by, facts, |key| self.entry(key));
        let deadline = tokio::time::Instant::now() + self.store.settings().timeout;
        let unavailable = Verdict::Unavailable(self.config.on_redis_failure);
        let mut waited = false;
        loop {
            let (take, mut reserved) = {
                let mut pool = entry.pool();
                let take = pool.take(Instant::now(), &self.sizing);
                (take, entry.done.subscribe())
            };
            match take {
                Take::Admitted { reserve } => {
                    if let Some(want) = reserve {
                        self.reserve_in_background(&entry, want);
                    }
                    return Verdict::Admitted;
                }
                Take::Limited { wait } => return Verdict::Limited { wait },
                Take::Empty { reserve: Some(_) } if self.store.refusing_calls() => {
                    entry.pool().failed();
                    return unavailable;
                }
                Take::Empty { reserve } => {
                    if let Some(want) = reserve {
                        self.reserve_in_background(&entry, want);
                    }
                }
            }
            if !waited {
                waited = true;
                self.waits.inc();
            }
            let woke = {
                let _waiting = Waiting::begin(&entry);
                tokio::time::timeout_at(deadline, reserved.changed()).await
            };
            match woke {
                Ok(Ok(())) if *reserved.borrow() == Reserved::Answered => continue,
                _ => return unavailable,
            }
        }
    }

    /// Asks Redis for `want` tokens of `entry`'s key in a task of its own, so that a request
    /// that gives up waiting does not cancel what other requests wait for.
    fn reserve_in_background(self: &Arc<Self>, entry: &Arc<Entry>, want: u32) {
        let limiter = Arc::clone(self);
        let entry = Arc::clone(entry);
        tokio::spawn(async move {
            // The Redis key: `redis.key_prefix` + the route's name + `:` + the limit key.
            let counter = [&limiter.prefix[..], &entry.key[..]].concat();
            let (requests, window) = (limiter.config.requests, limiter.config.window);
            let grant = limiter
                .store
                .reserve(&counter, requests, window, want)
                .await;
            let now = Instant::now();
            let reserved = match grant {
                Ok(grant) => {
                    entry
                        .pool()
                        .granted(now, grant.tokens, grant.wait, &limiter.sizing);
                    Reserved::Answered
                }
                Err(e) => {
                    log::debug!("reserving {want} tokens of the global rate limit: {e}");
                    entry.pool().failed();
                    Reserved::Failed
                }
            };
            entry.done.send_replace(reserved);
        });
    }

    /// The pool of the limit key `key`, made if new; idle pools are forgotten now and then.
    fn entry(&self, key: &[u8]) -> Arc<Entry> {
        let key = short_key(key);
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = pools.entries.get(&key[..]) {
            return Arc::clone(entry);
        }
        let now = Instant::now();
        if pools.entries.len() >= pools.sweep_at {
            pools.entries.retain(|_, entry| !entry.pool().idle(now));
            if pools.entries.len() >= MAX_KEYS {
                // Keys sprayed faster than their tokens lapse: forget them all. The tokens
                // they held are lost to the fleet (it admits less, never more).
                log::warn!(
                    "global rate limit {:?}: over {MAX_KEYS} keys held at once; dropping them",
                    String::from_utf8_lossy(&self.prefix)
                );
                pools.entries.clear();
            }
            pools.sweep_at = (pools.entries.len() * 2).max(1024);
        }
        let key: Box<[u8]> = key.into();
        let entry = Arc::new(Entry {
            key: key.clone(),
            pool: Mutex::new(Pool::new(now)),
            done: watch::Sender::new(Reserved::Answered),
        });
        pools.entries.insert(key, Arc::clone(&entry));
        entry
    }
}

/// `key`, or its SHA-256 in hex when longer than [`MAX_RAW_KEY`] (a header value may be
/// long; the pools map and Redis then hold 64 bytes for it).
fn short_key(key: &[u8]) -> Cow<'_, [u8]> {
    if key.len() <= MAX_RAW_KEY {
        return Cow::Borrowed(key);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        // Infallible: writing to a String.
        let _ = write!(hex, "{byte:02x}");
    }
    Cow::Owned(hex.into_bytes())
}
