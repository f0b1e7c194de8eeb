//! Upstream HTTP/1 connections: how many requests each has carried (for
//! `keepalive.max_requests`), and closing the pooled idle ones of endpoints that left every
//! upstream.
//!
//! - uses: Pingora hands every request its upstream socket number. A fresh connection
//!   starts at 1, a reused one adds 1; at the limit the request is sent with
//!   `Connection: close`, so the connection is not returned to the pool.
//! - removal: Pingora's pool is keyed by the peer's `reuse_hash()`, so the pool keys seen on
//!   fresh connections are recorded per address. When an address leaves every upstream, its
//!   keys are evicted from the pool of every HTTP listener (patched Pingora's `IdlePool`,
//!   third_party/pingora/patches/0002): a connection taken out of the pool can no longer be
//!   handed to a request, and connections in use are not in the pool, so requests in flight
//!   are never touched. A connection in use when its endpoint was removed, or opened
//!   afterwards by a request routed before, goes back to the pool when its request ends;
//!   [`UpstreamConnections::request_ended`] evicts it then. An address stays removed until
//!   a config or discovery update lists it again.

use pingora::connectors::IdlePool;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a removed address is remembered, so a request that was using a connection to it
/// evicts that connection when it ends. A request longer than this leaves its connection
/// pooled until the keepalive idle timeout (no new request is routed to a removed address).
const REMEMBER_REMOVED: Duration = Duration::from_secs(600);

/// Requests carried by one upstream socket.
#[derive(Debug, Clone, Copy)]
struct Uses {
    peer: SocketAddr,
    count: u32,
}

/// Pool keys by endpoint address.
#[derive(Debug, Default)]
struct PoolKeys {
    /// Addresses sluice has connected to, with the pool keys of those connections.
    by_address: HashMap<SocketAddr, HashSet<u64>>,
    /// Addresses removed from every upstream, with their keys and when they left.
    removed: HashMap<SocketAddr, (HashSet<u64>, Instant)>,
}

/// The process's upstream HTTP/1 connections, across every listener's pool.
#[derive(Default)]
pub struct UpstreamConnections {
    uses: Mutex<HashMap<RawFd, Uses>>,
    keys: Mutex<PoolKeys>,
    pools: Mutex<Vec<IdlePool>>,
    /// Entries of `keys.removed`: while there are none, a request ending costs one atomic
    /// load.
    removed_count: AtomicUsize,
}

/// A lock that a panic elsewhere left poisoned still guards plain records: use it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl UpstreamConnections {
    /// Adds the idle-connection pool of one HTTP listener.
    pub fn add_pool(&self, pool: IdlePool) {
        lock(&self.pools).push(pool);
    }

    /// Records that a request now uses socket `fd`, connected to `peer` (`reused` from the
    /// pool or fresh, then with pool key `pool_key`), and returns how many requests the
    /// connection has carried, this one included.
    pub fn start_use(
        &self,
        fd: RawFd,
        peer: SocketAddr,
        reused: bool,
        pool_key: impl FnOnce() -> u64,
    ) -> u32 {
        if !reused {
            let key = pool_key();
            let mut keys = lock(&self.keys);
            match keys.removed.get_mut(&peer) {
                // Routed before the removal: evicted when its request ends.
                Some((removed_keys, _)) => removed_keys.insert(key),
                None => keys.by_address.entry(peer).or_default().insert(key),
            };
        }
        let mut uses = lock(&self.uses);
        match uses.get_mut(&fd) {
            Some(socket) if reused && socket.peer == peer => {
                socket.count = socket.count.saturating_add(1);
                socket.count
            }
            _ => {
                uses.insert(fd, Uses { peer, count: 1 });
                1
            }
        }
    }

    /// A request that used a connection to `peer` ended (and Pingora returned the
    /// connection to the pool): if `peer` was removed, close the connection.
    pub fn request_ended(&self, peer: SocketAddr) {
        if self.removed_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let keys = match lock(&self.keys).removed.get(&peer) {
            Some((keys, _)) => keys.clone(),
            None => return,
        };
        self.evict(&keys);
    }

    /// `present` are endpoints of some upstream (again): no longer removed.
    pub fn endpoints_present(&self, present: impl IntoIterator<Item = SocketAddr>) {
        if self.removed_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut keys = lock(&self.keys);
        for address in present {
            if let Some((address_keys, _)) = keys.removed.remove(&address) {
                keys.by_address.insert(address, address_keys);
            }
        }
        self.removed_count
            .store(keys.removed.len(), Ordering::Release);
    }

    /// Of `candidates`, the addresses sluice has connected to.
    pub fn connected_to(&self, candidates: &HashSet<SocketAddr>) -> HashSet<SocketAddr> {
        let keys = lock(&self.keys);
        candidates
            .iter()
            .filter(|a| keys.by_address.contains_key(a))
            .copied()
            .collect()
    }

    /// Closes the pooled idle connections to any of `removed`, and remembers them so the
    /// connections in use are closed when their request ends. Returns how many were closed.
    pub fn close_idle_to(&self, removed: &HashSet<SocketAddr>) -> usize {
        let mut to_evict = HashSet::new();
        {
            let mut keys = lock(&self.keys);
            let now = Instant::now();
            keys.removed
                .retain(|_, (_, since)| now.duration_since(*since) < REMEMBER_REMOVED);
            for address in removed {
                if let Some(address_keys) = keys.by_address.remove(address) {
                    to_evict.extend(address_keys.iter().copied());
                    keys.removed.insert(*address, (address_keys, now));
                }
            }
            self.removed_count
                .store(keys.removed.len(), Ordering::Release);
        }
        self.evict(&to_evict)
    }

    /// Closes the idle connections under pool key `key` in every pool; returns how many.
    pub fn evict_idle(&self, key: u64) -> usize {
        self.evict(&HashSet::from([key]))
    }

    /// Evicts the idle connections under `keys` from every pool; returns how many.
    fn evict(&self, keys: &HashSet<u64>) -> usize {
        let pools = lock(&self.pools);
        keys.iter()
            .map(|key| pools.iter().map(|pool| pool.evict(*key)).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn counts_reuse_and_resets_on_fresh_connection() {
        let peer = address(8080);
        let connections = UpstreamConnections::default();
        assert_eq!(connections.start_use(7, peer, false, || 1), 1);
        assert_eq!(connections.start_use(7, peer, true, || 1), 2);
        assert_eq!(connections.start_use(7, peer, true, || 1), 3);
        assert_eq!(connections.start_use(7, peer, false, || 1), 1);
        // The same number reused for a connection to another peer starts over.
        assert_eq!(connections.start_use(7, address(8081), true, || 2), 1);
    }

    #[test]
    fn removed_addresses_are_remembered_until_listed_again() {
        let (gone, kept) = (address(1), address(2));
        let connections = UpstreamConnections::default();
        connections.start_use(3, gone, false, || 11);
        connections.start_use(4, kept, false, || 22);
        let candidates = HashSet::from([gone, address(5)]);
        assert_eq!(connections.connected_to(&candidates), HashSet::from([gone]));

        assert_eq!(connections.close_idle_to(&HashSet::from([gone])), 0);
        assert!(connections.connected_to(&candidates).is_empty());
        // A connection opened afterwards by a request routed before the removal is
        // remembered with the removed address, not as a live one.
        connections.start_use(6, gone, false, || 33);
        assert!(connections.connected_to(&candidates).is_empty());
        let removed_keys = lock(&connections.keys).removed[&gone].0.clone();
        assert_eq!(removed_keys, HashSet::from([11, 33]));

        connections.endpoints_present([kept, gone]);
        assert_eq!(connections.connected_to(&candidates), HashSet::from([gone]));
        assert_eq!(connections.removed_count.load(Ordering::Relaxed), 0);
    }
}
