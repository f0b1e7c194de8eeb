//! An endpoint of an upstream and the state that outlives config reloads.

use super::health::EndpointHealth;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use pingora_prometheus::prometheus::IntCounter;
use std::sync::{Arc, OnceLock};

/// One address of an upstream, as the current snapshot sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    /// Discovered as terminating but still serving (used because no ready one is left).
    pub terminating: bool,
    /// Shared with the previous snapshot when the address was already there.
    pub state: Arc<EndpointState>,
}

/// Live state of an endpoint, kept across reloads and weight changes.
#[derive(Debug, Default)]
pub struct EndpointState {
    in_flight: AtomicUsize,
    pub health: EndpointHealth,
    /// Its `sluice_endpoint_requests_total{result="2xx"}`, looked up at its first answer.
    pub answered_2xx: OnceLock<IntCounter>,
}

impl EndpointState {
    /// State of an endpoint with the given health.
    pub fn with_health(health: EndpointHealth) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            health,
            answered_2xx: OnceLock::new(),
        }
    }

    /// Requests currently sent to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }
}

/// Decrements the endpoint's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<EndpointState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
