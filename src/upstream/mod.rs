//! Upstreams at run time: endpoints, their balancer, their health, and how to connect.

pub mod affinity;
pub mod balance;
pub(crate) mod connections;
pub mod endpoint;
pub mod hash_key;
pub(crate) mod health;
pub(crate) mod retry_budget;
pub(crate) mod stable_hash;

use crate::model::{EndpointConfig, SubjectAltName, UpstreamConfig};
use crate::model::{Timeouts, UpstreamProtocol};
use crate::observe::metrics::{UpstreamMetrics, METRICS};
use crate::upstream::retry_budget::RetryBudget;
use balance::Balancer;
use endpoint::{Endpoint, EndpointState};
use hash_key::RequestFacts;
use health::{now_ms, EndpointHealth, Transition};
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::{HttpPeer, SubjectAltName as PeerSubjectAltName};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rand::Rng;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An upstream of one config snapshot.
pub struct Upstream {
    /// The upstream as the model has it, with its endpoints (discovered ones included).
    pub config: Arc<UpstreamConfig>,
    /// The upstream as compiled: the same as `config` but for discovered endpoints. A new
    /// model whose upstream is this very one (the usual case: its fragment did not
    /// change) keeps this upstream without comparing them.
    pub compiled: Arc<UpstreamConfig>,
    pub endpoints: Box<[Endpoint]>,
    balancer: Box<dyn Balancer>,
    /// Shared by every snapshot that has an upstream of this name.
    pub retry_budget: Arc<RetryBudget>,
    /// Too few endpoints are healthy: health is ignored (shared like `retry_budget`).
    panic: Arc<AtomicBool>,
    /// The current panic was logged as a warning (so its end is logged too).
    panic_warned: Arc<AtomicBool>,
    /// Resolved metric handles (shared like `retry_budget`).
    pub metrics: Arc<UpstreamMetrics>,
    /// The trust anchors of `tls.ca_file`, in Pingora's form (`None`: the system's store).
    ca: Option<Arc<CaType>>,
    /// `tls.subject_alt_names` as Pingora takes them (`None`: the certificate is checked
    /// against the SNI). Pingora pools connections apart per list.
    subject_alt_names: Option<Arc<[PeerSubjectAltName]>>,
    /// `tls.client_certificate` as Pingora takes it; Pingora pools connections apart per
    /// certificate.
    client_certificate: Option<Arc<CertKey>>,
    /// Pingora pools connections by address, SNI and verify flags, not by trust anchors:
    /// this key (a hash of them and of the client certificate) keeps a connection verified
    /// against one upstream's CAs, or presenting its certificate, from serving another's
    /// with the same address and SNI.
    tls_pool_group: u64,
}

/// Counts of an upstream's endpoints by state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HealthSummary {
    pub healthy: usize,
    pub unhealthy: usize,
    pub unknown: usize,
    pub ejected: usize,
}

impl Upstream {
    /// Builds the upstream of `compiled` with `endpoints` (`None`: its own, for upstreams
    /// that are not discovered), keeping the live state of `previous` (the upstream of the
    /// same name in the running snapshot) for every endpoint address that remains.
    pub fn build(
        compiled: &Arc<UpstreamConfig>,
        endpoints: Option<Vec<EndpointConfig>>,
        previous: Option<&Upstream>,
    ) -> Self {
        let config = match endpoints {
            None => compiled.clone(),
            Some(endpoints) => Arc::new(UpstreamConfig {
                endpoints,
                ..UpstreamConfig::clone(compiled)
            }),
        };
        let previous_states: HashMap<_, _> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .map(|e| (e.address, e.state.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let new_state = || {
            let health = if previous.is_some() {
                EndpointHealth::added_to_running_upstream(
                    config.slow_start.is_some(),
                    config.health.active.is_some(),
                )
            } else {
                EndpointHealth::default()
            };
            Arc::new(EndpointState::with_health(health))
        };
        let endpoints: Box<[Endpoint]> = config
            .endpoints
            .iter()
            .map(|e| Endpoint {
                address: e.address,
                weight: e.weight,
                terminating: e.terminating,
                state: previous_states
                    .get(&e.address)
                    .cloned()
                    .unwrap_or_else(new_state),
            })
            .collect();
        let balancer = balance::build(config.balance, config.hash_points, &endpoints);
        let upstream = Self {
            compiled: compiled.clone(),
            endpoints,
            balancer,
            retry_budget: previous.map(|p| p.retry_budget.clone()).unwrap_or_default(),
            panic: previous.map(|p| p.panic.clone()).unwrap_or_default(),
            panic_warned: previous.map(|p| p.panic_warned.clone()).unwrap_or_default(),
            metrics: previous.map(|p| p.metrics.clone()).unwrap_or_else(|| {
                let discovered = !matches!(config.source, crate::model::EndpointSource::Static);
                Arc::new(UpstreamMetrics::new(&config.name, discovered))
            }),
            ca: config.tls.as_ref().and_then(|tls| {
                (!tls.ca_certificates.is_empty()).then(|| {
                    tls.ca_certificates
                        .iter()
                        .map(|der| WrappedX509::new(der.clone(), parse_x509))
                        .collect::<Vec<_>>()
                        .into()
                })
            }),
            subject_alt_names: config.tls.as_ref().and_then(|tls| {
                (!tls.subject_alt_names.is_empty()).then(|| {
                    tls.subject_alt_names
                        .iter()
                        .map(|name| match name {
                            SubjectAltName::Dns(name) => PeerSubjectAltName::Dns(name.clone()),
                            SubjectAltName::Uri(uri) => PeerSubjectAltName::Uri(uri.clone()),
                        })
                        .collect()
                })
            }),
            client_certificate: config
                .tls
                .as_ref()
                .and_then(|tls| tls.client_certificate.as_ref())
                .map(|c| Arc::new(CertKey::new(c.chain.clone(), c.key.clone()))),
            tls_pool_group: config.tls.as_ref().map_or(0, |tls| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                tls.ca_certificates.hash(&mut hasher);
                // Pingora's own key has the certificates' serial numbers only.
                tls.client_certificate.hash(&mut hasher);
                hasher.finish()
            }),
            config,
        };
        upstream.refresh_health_summary();
        upstream
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether endpoint `i` may get requests at `now`, health and ejection considered.
    pub fn is_available(&self, i: usize, now: u64) -> bool {
        self.endpoints[i]
            .state
            .health
            .is_available(now, self.config.health.active.is_some())
    }

    /// Whether a request could get an endpoint now (health considered, panic included).
    pub fn has_available_endpoint(&self) -> bool {
        let now = now_ms();
        !self.endpoints.is_empty()
            && (self.in_panic() || (0..self.endpoints.len()).any(|i| self.is_available(i, now)))
    }

    /// Whether too few endpoints are healthy, so health is being ignored.
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Chooses an endpoint for a request: an available one not `tried` yet; during slow
    /// start an endpoint is accepted only for its current share of requests (for
    /// consistent hashing, for a stable share of the keys that map to it, so that other
    /// keys never move). Falls back to tried endpoints rather than none.
    pub fn pick(&self, facts: &RequestFacts, tried: &dyn Fn(usize) -> bool) -> Option<usize> {
        let now = now_ms();
        let panic = self.in_panic();
        if panic {
            METRICS
                .upstream_panic_routed
                .with_label_values(&[self.name()])
                .inc();
        }
        let available = |i: usize| panic || self.is_available(i, now);
        let window = self.config.slow_start;
        let choose = |key: &[u8], roll: f64| {
            let accepts = |i: usize| {
                window.is_none()
                    || roll < self.endpoints[i].state.health.slow_start_share(now, window)
            };
            self.balancer
                .pick(key, &|i| !tried(i) && available(i) && accepts(i))
                .or_else(|| self.balancer.pick(key, &|i| !tried(i) && available(i)))
                .or_else(|| self.balancer.pick(key, &available))
        };
        match &self.config.hash_key {
            Some(key) => key.with_key(facts, |key| choose(key, key_fraction(key))),
            None => {
                let roll = if window.is_some() {
                    rand::thread_rng().gen::<f64>()
                } else {
                    0.0
                };
                choose(&[], roll)
            }
        }
    }

    /// Feeds a real request's outcome on endpoint `i` to passive ejection.
    pub fn record_outcome(&self, i: usize, failed: bool) {
        let Some(passive) = &self.config.health.passive else {
            return;
        };
        let endpoint = &self.endpoints[i];
        let may_eject = || {
            let now = now_ms();
            let ejected = self
                .endpoints
                .iter()
                .filter(|e| e.state.health.is_ejected(now))
                .count();
            // Never eject more than max_ejected_percent of the endpoints.
            (ejected + 1) * 100 <= passive.max_ejected_percent as usize * self.endpoints.len()
        };
        let slow_start = self.config.slow_start.is_some();
        if let Some(transition) = endpoint
            .state
            .health
            .record_request(passive, failed, slow_start, may_eject)
        {
            self.log_transition(endpoint, transition);
            METRICS
                .upstream_ejections
                .with_label_values(&[self.name()])
                .inc();
            self.refresh_health_summary();
        }
    }

    /// Logs a health state change of `endpoint`.
    pub fn log_transition(&self, endpoint: &Endpoint, transition: Transition) {
        let (name, address) = (self.name(), endpoint.address);
        match transition {
            Transition::BecameHealthy => {
                log::info!("upstream {name}: endpoint {address} is healthy")
            }
            Transition::BecameUnhealthy => {
                log::warn!("upstream {name}: endpoint {address} is unhealthy")
            }
            Transition::Ejected { for_ms, readmitted } => {
                if readmitted {
                    log::info!("upstream {name}: endpoint {address} readmitted after ejection");
                }
                log::warn!(
                    "upstream {name}: endpoint {address} ejected for {for_ms} ms after consecutive failures"
                )
            }
        }
    }

    /// Counts endpoints by state, updates the panic flag and `sluice_upstream_endpoints`.
    pub fn refresh_health_summary(&self) -> HealthSummary {
        let summary = self.health_summary();
        let total = self.endpoints.len();
        let threshold = self.config.health.panic_threshold_percent as usize;
        let below = |healthy: usize| total > 0 && healthy * 100 < threshold * total;
        let panic = below(summary.healthy);
        // Endpoints not checked yet put a fresh upstream in panic (it routes to all of them
        // until the first checks), which is no news: warn only when endpoints were found
        // unhealthy or ejected.
        let worth_a_warning = below(summary.healthy + summary.unknown);
        self.panic.store(panic, Ordering::Relaxed);
        // Warned once per panic, when it is worth a warning: possibly after it began (a
        // fresh upstream is in panic until its first checks, which may then fail).
        if panic && worth_a_warning && !self.panic_warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "upstream {}: only {} of {total} endpoints healthy, below panic_threshold_percent {threshold}: routing to all endpoints",
                self.name(),
                summary.healthy,
            );
        } else if !panic && self.panic_warned.swap(false, Ordering::Relaxed) {
            log::info!("upstream {}: left panic mode", self.name());
        }
        for (state, count) in [
            ("healthy", summary.healthy),
            ("unhealthy", summary.unhealthy),
            ("unknown", summary.unknown),
            ("ejected", summary.ejected),
        ] {
            METRICS
                .upstream_endpoints
                .with_label_values(&[self.name(), state])
                .set(count as i64);
        }
        summary
    }

    /// Counts endpoints by state; changes nothing.
    pub fn health_summary(&self) -> HealthSummary {
        let now = now_ms();
        let active = self.config.health.active.is_some();
        let mut summary = HealthSummary::default();
        for endpoint in self.endpoints.iter() {
            let health = &endpoint.state.health;
            if health.is_ejected(now) {
                summary.ejected += 1;
            } else if !active {
                summary.healthy += 1;
            } else {
                match health.verdict() {
                    health::ActiveVerdict::Healthy => summary.healthy += 1,
                    health::ActiveVerdict::Unhealthy => summary.unhealthy += 1,
                    health::ActiveVerdict::Unknown => summary.unknown += 1,
                }
            }
        }
        summary
    }

    /// Whether a connection that has carried `uses` requests (this one included) must be
    /// closed after this request rather than pooled.
    pub fn must_close_connection(&self, uses: u32) -> bool {
        let keepalive = &self.config.keepalive;
        keepalive.max_idle == 0 || uses >= keepalive.max_requests
    }

    /// The peer to connect to `endpoint` with `timeouts`.
    pub fn peer(&self, endpoint: usize, timeouts: &Timeouts) -> HttpPeer {
        let address = self.endpoints[endpoint].address;
        let mut peer = match &self.config.tls {
            None => HttpPeer::new(address, false, String::new()),
            Some(tls) => {
                let mut peer = HttpPeer::new(address, true, tls.sni.clone());
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                peer.options.ca = self.ca.clone();
                peer.options.subject_alt_names = self.subject_alt_names.clone();
                peer.client_cert_key = self.client_certificate.clone();
                peer.group_key = self.tls_pool_group;
                peer
            }
        };
        let options = &mut peer.options;
        options.connection_timeout = Some(timeouts.connect);
        options.read_timeout = Some(timeouts.read);
        options.write_timeout = Some(timeouts.write);
        options.idle_timeout = Some(self.config.keepalive.idle_timeout);
        match self.config.protocol {
            UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {}
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                options.set_http_version(2, 2);
                options.max_h2_streams = self.config.max_streams as usize;
            }
        }
        peer
    }

    /// Whether connections to this upstream carry one request at a time (HTTP/1), so a
    /// socket can be counted per request (`keepalive.max_requests`, closing idle sockets of
    /// removed endpoints). HTTP/2 connections multiplex streams.
    pub fn one_request_per_connection(&self) -> bool {
        !matches!(
            self.config.protocol,
            UpstreamProtocol::H2c | UpstreamProtocol::H2
        )
    }
}

/// A stable number in [0, 1) for a hash key, so a key's slow-start admission does not flap
/// between requests: as the share grows, keys move to the new endpoint once.
fn key_fraction(key: &[u8]) -> f64 {
    let hash = stable_hash::stable_hash(stable_hash::ADMISSION, key);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fraction_is_stable_and_spread() {
        assert_eq!(key_fraction(b"abc"), key_fraction(b"abc"));
        let below_half = (0..1000)
            .filter(|i| key_fraction(format!("k{i}").as_bytes()) < 0.5)
            .count();
        assert!((400..600).contains(&below_half), "{below_half}");
        // Evenly spread at the low end too, where slow start begins (share 0.1).
        let below_tenth = (0..1000)
            .filter(|i| key_fraction(format!("/k/{i}").as_bytes()) < 0.1)
            .count();
        assert!((60..140).contains(&below_tenth), "{below_tenth}");
    }

    /// `GET /upstreams` reads the summary: reading must not flip the panic flag.
    #[test]
    fn reading_the_health_summary_changes_nothing() {
        let yaml = "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n\
                    routes: [{ name: all, listener: web, upstream: app }]\n\
                    upstreams:\n  - { name: app, endpoints: [\"127.0.0.1:2\", \"127.0.0.1:3\"], \
                    health: { active: { http_path: /h } } }\n";
        let config = crate::sources::file::parse(std::path::Path::new("t.yaml"), yaml)
            .expect("config")
            .model();
        let upstream = Upstream::build(&config.upstreams[0], None, None);
        // Not checked yet: routing to all endpoints.
        assert!(upstream.in_panic());
        let check = config.upstreams[0].health.active.clone().expect("active");
        for endpoint in upstream.endpoints.iter() {
            endpoint
                .state
                .health
                .record_check(&check, true, "ok", String::new(), false);
        }
        assert_eq!(upstream.health_summary().healthy, 2);
        assert!(upstream.in_panic(), "a read changed the panic flag");
        upstream.refresh_health_summary();
        assert!(!upstream.in_panic());
    }
}
