//! Cookie session affinity: the cookie names an endpoint by a hash of its address, so every
//! replica reads the same cookie the same way without shared state. A client whose
//! endpoint left or is unavailable is moved by rendezvous hashing of its old cookie, so
//! every replica moves it to the same new endpoint.

use super::hash_key::RequestFacts;
use super::health::now_ms;
use super::stable_hash::{mix, stable_hash};
use super::Upstream;
use std::net::SocketAddr;

/// Seed of an endpoint's affinity token.
const AFFINITY: u64 = 0x5eed_0000_0000_0003;

/// The endpoint chosen for a client with affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinePick {
    pub endpoint: usize,
    /// The client's cookie does not name `endpoint`: send it a new one.
    pub renew: bool,
}

/// The cookie value that names the endpoint at `address` (16 hex digits).
pub fn token(address: SocketAddr) -> String {
    format!("{:016x}", address_key(address))
}

fn address_key(address: SocketAddr) -> u64 {
    let mut bytes = [0u8; 18];
    let length = match address.ip() {
        std::net::IpAddr::V4(ip) => {
            bytes[..4].copy_from_slice(&ip.octets());
            4
        }
        std::net::IpAddr::V6(ip) => {
            bytes[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    bytes[length..length + 2].copy_from_slice(&address.port().to_be_bytes());
    stable_hash(AFFINITY, &bytes[..length + 2])
}

impl Upstream {
    /// Whether `cookie` names an endpoint of this upstream that is available now: the
    /// client's session lives here (a route with several upstreams keeps it on this one).
    pub fn holds_affinity(&self, cookie: &str) -> bool {
        let now = now_ms();
        self.named_endpoint(cookie)
            .is_some_and(|i| self.in_panic() || self.is_available(i, now))
    }

    /// The endpoint whose token `cookie` is, if it is one of this upstream's.
    fn named_endpoint(&self, cookie: &str) -> Option<usize> {
        let named = u64::from_str_radix(cookie, 16).ok()?;
        self.endpoints
            .iter()
            .position(|e| address_key(e.address) == named)
    }

    /// The endpoint for a client that sent affinity cookie `cookie` (if any): the one it
    /// names while that one is available and not `tried`; else, for a cookie, the
    /// rendezvous-hash choice among available endpoints; else the balancer's choice.
    pub fn pick_affine(
        &self,
        cookie: Option<&str>,
        facts: &RequestFacts,
        tried: &dyn Fn(usize) -> bool,
    ) -> Option<AffinePick> {
        let Some(cookie) = cookie.filter(|c| !c.is_empty()) else {
            let endpoint = self.pick(facts, tried)?;
            return Some(AffinePick {
                endpoint,
                renew: true,
            });
        };
        let now = now_ms();
        let panic = self.in_panic();
        let usable = |i: usize| !tried(i) && (panic || self.is_available(i, now));
        if let Some(i) = self.named_endpoint(cookie) {
            if usable(i) {
                return Some(AffinePick {
                    endpoint: i,
                    renew: false,
                });
            }
        }
        let seed = u64::from_str_radix(cookie, 16)
            .unwrap_or_else(|_| stable_hash(AFFINITY, cookie.as_bytes()));
        let moved = self
            .endpoints
            .iter()
            .map(|e| address_key(e.address))
            .enumerate()
            .filter(|&(i, _)| usable(i))
            .max_by_key(|&(_, key)| mix(key ^ seed))
            .map(|(i, _)| i);
        let endpoint = match moved {
            Some(i) => i,
            None => self.pick(facts, tried)?,
        };
        Some(AffinePick {
            endpoint,
            renew: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointConfig, EndpointSource, Origin, UpstreamConfig};
    use std::sync::Arc;

    fn upstream(ports: &[u16]) -> Upstream {
        let endpoints = ports
            .iter()
            .map(|&port| EndpointConfig {
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                weight: 1,
                terminating: false,
            })
            .collect();
        let config = UpstreamConfig::new(
            "u",
            Origin::object("Test", "default", "u"),
            EndpointSource::Static,
            endpoints,
        );
        Upstream::build(&Arc::new(config), None, None)
    }

    fn facts() -> RequestFacts<'static> {
        RequestFacts {
            header: None,
            client_ip: None,
            scheme: "http",
        }
    }

    #[test]
    fn a_cookie_keeps_its_endpoint_and_moves_the_same_way_everywhere() {
        let all = upstream(&[1001, 1002, 1003, 1004]);
        let none = |_: usize| false;
        let cookie = token(all.endpoints[2].address);
        let pick = all.pick_affine(Some(&cookie), &facts(), &none);
        assert_eq!(
            pick,
            Some(AffinePick {
                endpoint: 2,
                renew: false
            })
        );
        // Endpoint 1003 removed: two replicas with the same endpoints agree on the move.
        let rest = [upstream(&[1001, 1002, 1004]), upstream(&[1004, 1002, 1001])];
        let moved: Vec<SocketAddr> = rest
            .iter()
            .map(|u| {
                let pick = u.pick_affine(Some(&cookie), &facts(), &none).expect("pick");
                assert!(pick.renew);
                u.endpoints[pick.endpoint].address
            })
            .collect();
        assert_eq!(moved[0], moved[1]);
        let tried_named = |i: usize| i == 2;
        let retry = all.pick_affine(Some(&cookie), &facts(), &tried_named);
        assert_ne!(
            retry.map(|p| p.endpoint),
            Some(2),
            "a retry leaves the endpoint"
        );
    }

    #[test]
    fn no_cookie_is_a_balanced_pick_with_a_new_cookie() {
        let u = upstream(&[1001, 1002]);
        let pick = u.pick_affine(None, &facts(), &|_| false).expect("pick");
        assert!(pick.renew);
    }
}
