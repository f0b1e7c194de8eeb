//! Upstreams at run time: endpoints, their balancer, and how to connect to them.

pub mod balance;
pub mod connection_uses;
pub mod endpoint;
pub mod hash_key;

use crate::config::UpstreamConfig;
use crate::config::{Timeouts, UpstreamProtocol};
use crate::proxy::retry::RetryBudget;
use balance::Balancer;
use endpoint::{Endpoint, EndpointState};
use hash_key::RequestFacts;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::sync::Arc;

/// An upstream of one config snapshot.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub endpoints: Box<[Endpoint]>,
    balancer: Box<dyn Balancer>,
    /// Shared by every snapshot that has an upstream of this name.
    pub retry_budget: Arc<RetryBudget>,
}

impl Upstream {
    /// Builds the upstream of `config`, keeping the live state of `previous` (the upstream of
    /// the same name in the running snapshot) for every endpoint address that remains.
    pub fn build(config: &UpstreamConfig, previous: Option<&Upstream>) -> Self {
        let previous_states: HashMap<_, _> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .map(|e| (e.address, e.state.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let endpoints: Box<[Endpoint]> = config
            .endpoints
            .iter()
            .map(|e| Endpoint {
                address: e.address,
                weight: e.weight,
                state: previous_states
                    .get(&e.address)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::default())),
            })
            .collect();
        let balancer = balance::build(config.balance, config.hash_points, &endpoints);
        Self {
            config: config.clone(),
            endpoints,
            balancer,
            retry_budget: previous.map(|p| p.retry_budget.clone()).unwrap_or_default(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Chooses an endpoint for a request, avoiding those `tried` says were tried while
    /// another exists.
    pub fn pick(&self, facts: &RequestFacts, tried: &dyn Fn(usize) -> bool) -> Option<usize> {
        let usable = |i: usize| !tried(i);
        let fresh = match &self.config.hash_key {
            Some(key) => key.with_key(facts, |key| self.balancer.pick(key, &usable)),
            None => self.balancer.pick(&[], &usable),
        };
        fresh.or_else(|| {
            // Every endpoint was tried: a retry goes to the same one again rather than nowhere.
            match &self.config.hash_key {
                Some(key) => key.with_key(facts, |key| self.balancer.pick(key, &|_| true)),
                None => self.balancer.pick(&[], &|_| true),
            }
        })
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
        let mut peer = HttpPeer::new(address, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(timeouts.connect);
        options.read_timeout = Some(timeouts.read);
        options.write_timeout = Some(timeouts.write);
        options.idle_timeout = Some(self.config.keepalive.idle_timeout);
        match self.config.protocol {
            UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {}
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => options.set_http_version(2, 2),
        }
        peer
    }
}
