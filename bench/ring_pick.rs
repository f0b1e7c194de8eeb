//! Consistent-hash selection cost: one pick on a 1,000-endpoint ring, including evaluating
//! the hash key (`$host$request_uri`) from a request header, as the proxy does per request.
//!
//! `cargo bench --bench ring_pick` (issue #7 target: at most 200 ns per pick).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use sluice::model::BalancePolicy;
use sluice::upstream::balance;
use sluice::upstream::endpoint::{Endpoint, EndpointState};
use sluice::upstream::hash_key::{HashKey, RequestFacts};
use std::net::SocketAddr;
use std::sync::Arc;

/// Ring points per endpoint weight unit, as `hash_points` defaults to.
const HASH_POINTS: u32 = 160;

fn endpoints(count: usize) -> Vec<Endpoint> {
    (0..count)
        .map(|i| Endpoint {
            address: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)),
            weight: 1,
            terminating: false,
            state: Arc::new(EndpointState::default()),
        })
        .collect()
}

fn ring_pick(c: &mut Criterion) {
    let endpoints = endpoints(1_000);
    let ring = balance::build(BalancePolicy::ConsistentHash, HASH_POINTS, &endpoints);
    let key = match HashKey::parse("$host$request_uri") {
        Ok(key) => key,
        Err(e) => panic!("hash key: {e}"),
    };
    let requests: Vec<RequestHeader> = (0..1024)
        .map(|i| {
            let path = format!("/catalog/items/{i}?page={}", i % 7);
            let mut header = match RequestHeader::build("GET", path.as_bytes(), None) {
                Ok(header) => header,
                Err(e) => panic!("request: {e}"),
            };
            if let Err(e) = header.insert_header("host", "shop.example.com") {
                panic!("host header: {e}");
            }
            header
        })
        .collect();
    let mut next = 0;
    c.bench_function(
        "pick on a 1,000-endpoint ring, key evaluation included",
        |b| {
            b.iter(|| {
                let header = &requests[next % requests.len()];
                next += 1;
                let facts = RequestFacts {
                    header: Some(header),
                    client_ip: None,
                    scheme: "http",
                };
                black_box(key.with_key(&facts, |key| ring.pick(key, &|_| true)))
            })
        },
    );
}

criterion_group!(benches, ring_pick);
criterion_main!(benches);
