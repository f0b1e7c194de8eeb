//! Endpoint selection: one trait, one small implementation per `balance` policy.
//!
//! Round robin and random use pingora-load-balancing's selections. Consistent hashing is
//! sluice's own ring ([`HashRing`]): `weight × hash_points` points per endpoint, placed by a
//! stable hash of the endpoint's address, so every replica and every restart maps a key to
//! the same endpoint. (Pingora's Ketama ring sorted by comparing addresses and cost about
//! 1 ms per rebuild of a 50-endpoint ring; discovery rebuilds rings on every endpoint
//! change.) Least request is power-of-two-choices over in-flight counts divided by weight.

use super::endpoint::Endpoint;
use super::stable_hash::{mix, stable_hash, RING_KEY, RING_POINT};
use crate::model::{BalancePolicy, MAX_RING_POINTS};
use pingora::lb::selection::{BackendIter, BackendSelection, Random, RoundRobin};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::Arc;

/// How many endpoints a selection's own order may propose per endpoint before a scan
/// decides: when few endpoints are usable, the walk must not take millions of steps.
const STEPS_PER_ENDPOINT: usize = 4;

/// The first index from `start` on (wrapping) that is `usable`: a bounded fallback that
/// does not always favour the lowest indexes.
fn scan_from(start: usize, count: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    (start..count).chain(0..start).find(|i| usable(*i))
}

/// Chooses an endpoint for one attempt of a request.
pub trait Balancer: Send + Sync {
    /// Returns the index of the chosen endpoint. `key` is the request's hash key (empty unless
    /// the policy hashes); `usable` rejects endpoints that must not be used for this attempt
    /// (already tried, later: unhealthy). `None` when no endpoint is usable.
    fn pick(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the balancer of `policy` over `endpoints` (whose order gives the indexes).
pub fn build(policy: BalancePolicy, hash_points: u32, endpoints: &[Endpoint]) -> Box<dyn Balancer> {
    if endpoints.is_empty() {
        // A discovered service can have no endpoints; pingora's selections assume some.
        return Box::new(NoEndpoints);
    }
    match policy {
        BalancePolicy::RoundRobin => Box::new(PingoraSelection::<RoundRobin>::new(endpoints, &())),
        BalancePolicy::Random => Box::new(PingoraSelection::<Random>::new(endpoints, &())),
        BalancePolicy::ConsistentHash => Box::new(HashRing::new(endpoints, hash_points)),
        BalancePolicy::LeastRequest => Box::new(LeastRequest {
            endpoints: endpoints.to_vec(),
        }),
    }
}

/// The balancer of an upstream without endpoints.
struct NoEndpoints;

impl Balancer for NoEndpoints {
    fn pick(&self, _key: &[u8], _usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        None
    }
}

/// Which endpoint a pingora [`Backend`] stands for, stored in its `ext`.
#[derive(Clone, Copy)]
struct EndpointIndex(usize);

/// A pingora-load-balancing selection, mapped back to endpoint indexes.
struct PingoraSelection<S> {
    selection: Arc<S>,
    endpoint_count: usize,
    /// Iterator steps before giving up on the selection's own order.
    max_steps: usize,
}

impl<S: BackendSelection> PingoraSelection<S> {
    fn new(endpoints: &[Endpoint], config: &S::Config) -> Self {
        let backends: BTreeSet<Backend> = endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let mut backend = Backend {
                    addr: PingoraAddr::Inet(endpoint.address),
                    weight: endpoint.weight as usize,
                    ext: Default::default(),
                };
                backend.ext.insert(EndpointIndex(i));
                backend
            })
            .collect();
        Self {
            selection: Arc::new(S::build_with_config(&backends, config)),
            endpoint_count: endpoints.len(),
            // The weighted walk draws endpoints pseudo-randomly after the first, so finding the
            // one usable endpoint among many could take many steps; a scan decides instead.
            max_steps: endpoints.len() * STEPS_PER_ENDPOINT,
        }
    }
}

impl<S> Balancer for PingoraSelection<S>
where
    S: BackendSelection + Send + Sync,
    S::Iter: BackendIter,
{
    fn pick(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut iter = self.selection.iter(key);
        for _ in 0..self.max_steps {
            let Some(backend) = iter.next() else { break };
            if let Some(EndpointIndex(i)) = backend.ext.get::<EndpointIndex>().copied() {
                if usable(i) {
                    return Some(i);
                }
            }
        }
        let start = rand::thread_rng().gen_range(0..self.endpoint_count.max(1));
        scan_from(start, self.endpoint_count, usable)
    }
}

/// Power of two choices on `in_flight / weight`.
/// Endpoint index bits of a ring point; the hash keeps the bits above.
const OWNER_BITS: u32 = 24;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;

/// A consistent-hash ring: sorted points, each a hash (high bits) and the index of the
/// endpoint that owns it (low [`OWNER_BITS`] bits), packed in one `u64` so building the ring
/// is a sort of plain integers. A lookup reads the bucket of the key's top bits in `buckets`
/// (where each bucket's points start) and searches only that bucket's few points, instead of
/// binary-searching the whole ring (160,000 points at 1,000 endpoints: ~17 cache misses).
struct HashRing {
    points: Box<[u64]>,
    endpoint_count: usize,
    /// `buckets[b]` is the index of the first point whose top `bucket_bits` bits are ≥ b;
    /// one more entry than there are buckets.
    buckets: Box<[u32]>,
    bucket_bits: u32,
}

impl HashRing {
    /// A ring with `weight × points_per_weight` points for each endpoint, fewer per weight
    /// if that would exceed [`MAX_RING_POINTS`]. Endpoints past the first 2^24 get no points
    /// (an upstream that large does not exist in practice).
    fn new(endpoints: &[Endpoint], points_per_weight: u32) -> Self {
        let total_weight: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
        let points_per_weight = ring_points_per_weight(total_weight, points_per_weight);
        let total: u64 = total_weight * u64::from(points_per_weight);
        let mut points = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (owner, endpoint) in endpoints.iter().enumerate().take(1 << OWNER_BITS) {
            let base = stable_hash(RING_POINT, endpoint.address.to_string().as_bytes());
            let count = u64::from(endpoint.weight) * u64::from(points_per_weight);
            points.extend((0..count).map(|i| {
                let hash = mix(base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                (hash & !OWNER_MASK) | owner as u64
            }));
        }
        points.sort_unstable();
        // About one point per bucket; at most 2^20 buckets (4 MiB of index).
        let bucket_bits = points
            .len()
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .min(20);
        let mut buckets = Vec::with_capacity((1 << bucket_bits) + 1);
        let mut next = 0;
        for bucket in 0..=(1u64 << bucket_bits) {
            while next < points.len() && bucket_of(points[next], bucket_bits) < bucket {
                next += 1;
            }
            buckets.push(u32::try_from(next).unwrap_or(u32::MAX));
        }
        Self {
            points: points.into_boxed_slice(),
            endpoint_count: endpoints.len(),
            buckets: buckets.into_boxed_slice(),
            bucket_bits,
        }
    }

    /// The index of the first point at or after `position` (`points.len()` if none).
    fn first_at_or_after(&self, position: u64) -> usize {
        let bucket = bucket_of(position, self.bucket_bits) as usize;
        let (from, to) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        from + self.points[from..to].partition_point(|&p| p < position)
    }
}

/// Points per weight for a ring of `total_weight`: `configured`, or fewer so that the ring
/// stays within [`MAX_RING_POINTS`] (at least 1).
pub fn ring_points_per_weight(total_weight: u64, configured: u32) -> u32 {
    let fits = MAX_RING_POINTS / total_weight.max(1);
    let points = u64::from(configured).min(fits).max(1);
    if points < u64::from(configured) {
        // Discovery rebuilds a ring on every endpoint change: one line per interval.
        crate::observe::events::warn("ring_points", &total_weight.to_string(), || {
            format!(
                "consistent-hash ring of total weight {total_weight}: {points} points per \
                 weight instead of hash_points {configured}, to stay within {MAX_RING_POINTS} \
                 points"
            )
        });
    }
    u32::try_from(points).unwrap_or(configured)
}

/// The top `bits` bits of `value`.
fn bucket_of(value: u64, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        value >> (64 - bits)
    }
}

impl Balancer for HashRing {
    /// The owner of the first point at or after the key's hash, walking on (wrapping) past
    /// points of endpoints that are not `usable`.
    /// The walk is bounded; past it, a scan of the endpoints from a place the key decides
    /// (so a key still maps to one endpoint while the usable set stays the same).
    fn pick(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let hash = stable_hash(RING_KEY, key);
        let position = hash & !OWNER_MASK;
        let start = self.first_at_or_after(position);
        let (after, before) = (&self.points[start..], &self.points[..start]);
        let walk = self.endpoint_count * STEPS_PER_ENDPOINT * 8;
        after
            .iter()
            .chain(before)
            .take(walk)
            .map(|&p| (p & OWNER_MASK) as usize)
            .find(|&owner| usable(owner))
            .or_else(|| {
                let from = (hash % self.endpoint_count.max(1) as u64) as usize;
                scan_from(from, self.endpoint_count, usable)
            })
    }
}

struct LeastRequest {
    endpoints: Vec<Endpoint>,
}

impl LeastRequest {
    /// `a` is less loaded than `b`, relative to their weights.
    fn lighter(&self, a: usize, b: usize) -> bool {
        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
        (ea.state.in_flight() as u64) * u64::from(eb.weight)
            <= (eb.state.in_flight() as u64) * u64::from(ea.weight)
    }
}

impl Balancer for LeastRequest {
    fn pick(&self, _key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let mut rng = rand::thread_rng();
        // A usable endpoint other than `except`: a few random draws, then a scan.
        let mut draw = |except: Option<usize>| {
            let ok = |i: usize| Some(i) != except && usable(i);
            (0..4)
                .map(|_| rng.gen_range(0..n))
                .find(|i| ok(*i))
                .or_else(|| (0..n).find(|i| ok(*i)))
        };
        let first = draw(None)?;
        Some(match draw(Some(first)) {
            Some(second) if self.lighter(second, first) => second,
            _ => first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::endpoint::EndpointState;
    use std::collections::HashMap;

    fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint {
                address: format!("10.0.0.{}:80", i + 1).parse().expect("addr"),
                weight: *w,
                terminating: false,
                state: Arc::new(EndpointState::default()),
            })
            .collect()
    }

    fn spread(balancer: &dyn Balancer, keys: usize) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for k in 0..keys {
            let i = balancer
                .pick(format!("key-{k}").as_bytes(), &|_| true)
                .expect("pick");
            *counts.entry(i).or_default() += 1;
        }
        counts
    }

    #[test]
    fn consistent_hash_is_stable_and_weighted() {
        let eps = endpoints(&[1, 2, 1]);
        let a = build(BalancePolicy::ConsistentHash, 160, &eps);
        let b = build(BalancePolicy::ConsistentHash, 160, &eps);
        for k in 0..1000 {
            let key = format!("k{k}");
            assert_eq!(
                a.pick(key.as_bytes(), &|_| true),
                b.pick(key.as_bytes(), &|_| true)
            );
        }
        let counts = spread(a.as_ref(), 10_000);
        let middle = counts[&1] as f64 / 10_000.0;
        assert!((0.4..=0.6).contains(&middle), "weight-2 share {middle}");
    }

    #[test]
    fn consistent_hash_moves_only_the_removed_endpoints_keys() {
        let five = endpoints(&[1, 1, 1, 1, 1]);
        let four: Vec<Endpoint> = five.iter().take(4).cloned().collect();
        let (before, after) = (
            build(BalancePolicy::ConsistentHash, 160, &five),
            build(BalancePolicy::ConsistentHash, 160, &four),
        );
        let mut moved = 0;
        for k in 0..2000 {
            let key = format!("/user/{k}");
            let old = before.pick(key.as_bytes(), &|_| true).expect("pick");
            let new = after.pick(key.as_bytes(), &|_| true).expect("pick");
            if old == 4 {
                moved += 1;
            } else {
                assert_eq!(old, new, "key {key} moved off a remaining endpoint");
            }
        }
        let share = f64::from(moved) / 2000.0;
        assert!(
            (0.15..=0.25).contains(&share),
            "removed endpoint owned {share}"
        );
        let counts = spread(before.as_ref(), 10_000);
        for (endpoint, count) in counts {
            let share = count as f64 / 10_000.0;
            assert!(
                (0.16..=0.24).contains(&share),
                "endpoint {endpoint}: {share}"
            );
        }
    }

    #[test]
    fn bucket_index_finds_the_same_point_as_a_full_binary_search() {
        for (count, points) in [(1, 1), (3, 160), (250, 160), (7, 3)] {
            let ring = HashRing::new(&endpoints(&vec![1; count]), points);
            let mut positions: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1];
            positions.extend(ring.points.iter().take(50).copied());
            positions.extend(ring.points.iter().take(50).map(|p| p.wrapping_add(1)));
            positions.extend((0..2000u64).map(|i| mix(i.wrapping_mul(0x9e37_79b9))));
            for position in positions {
                assert_eq!(
                    ring.first_at_or_after(position),
                    ring.points.partition_point(|&p| p < position),
                    "{count} endpoints, position {position:#x}"
                );
            }
        }
    }

    #[test]
    fn consistent_hash_skips_unusable_to_next_distinct_endpoint() {
        let eps = endpoints(&[1, 1, 1, 1]);
        let ring = build(BalancePolicy::ConsistentHash, 160, &eps);
        for k in 0..200 {
            let key = format!("k{k}");
            let first = ring.pick(key.as_bytes(), &|_| true).expect("first");
            let second = ring.pick(key.as_bytes(), &|i| i != first).expect("second");
            assert_ne!(first, second);
            // The fallback is stable too: the same key always falls back to the same endpoint.
            assert_eq!(ring.pick(key.as_bytes(), &|i| i != first), Some(second));
        }
        assert_eq!(ring.pick(b"x", &|_| false), None);
    }

    #[test]
    fn round_robin_and_random_honour_weights_and_exclusions() {
        let eps = endpoints(&[1, 3]);
        for policy in [BalancePolicy::RoundRobin, BalancePolicy::Random] {
            let balancer = build(policy, 160, &eps);
            let counts = spread(balancer.as_ref(), 4000);
            let heavy = counts[&1] as f64 / 4000.0;
            assert!((0.65..=0.85).contains(&heavy), "{policy:?}: {heavy}");
            assert_eq!(balancer.pick(b"", &|i| i == 0), Some(0));
        }
    }

    /// With almost nothing usable (panic threshold 0, slow start, a retry on a small
    /// upstream), a pick costs a small multiple of the endpoint count, not millions of steps.
    #[test]
    fn picks_are_bounded_when_few_endpoints_are_usable() {
        let eps = endpoints(&[1000; 50]);
        for policy in [
            BalancePolicy::RoundRobin,
            BalancePolicy::Random,
            BalancePolicy::ConsistentHash,
        ] {
            let balancer = build(policy, 2, &eps);
            for usable_one in [None, Some(49)] {
                let calls = std::cell::Cell::new(0usize);
                let picked = balancer.pick(b"key", &|i| {
                    calls.set(calls.get() + 1);
                    Some(i) == usable_one
                });
                assert_eq!(picked, usable_one, "{policy:?}");
                assert!(
                    calls.get() <= 50 * STEPS_PER_ENDPOINT * 8 + 50,
                    "{policy:?}: {} steps",
                    calls.get()
                );
            }
        }
    }

    #[test]
    fn rings_stay_within_the_point_limit() {
        assert_eq!(ring_points_per_weight(100, 160), 160);
        let per_weight = ring_points_per_weight(10_000, 10_000);
        assert_eq!(u64::from(per_weight), MAX_RING_POINTS / 10_000);
        assert_eq!(ring_points_per_weight(MAX_RING_POINTS * 2, 160), 1);
    }

    #[test]
    fn no_endpoints_no_pick() {
        for policy in [
            BalancePolicy::RoundRobin,
            BalancePolicy::Random,
            BalancePolicy::LeastRequest,
            BalancePolicy::ConsistentHash,
        ] {
            assert_eq!(build(policy, 160, &[]).pick(b"k", &|_| true), None);
        }
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let eps = endpoints(&[1, 1]);
        let _busy: Vec<_> = (0..10).map(|_| eps[0].state.start_request()).collect();
        let balancer = build(BalancePolicy::LeastRequest, 160, &eps);
        let counts = spread(balancer.as_ref(), 1000);
        assert!(counts.get(&1).copied().unwrap_or(0) > counts.get(&0).copied().unwrap_or(0));
        assert_eq!(balancer.pick(b"", &|i| i == 0), Some(0));
    }
}
