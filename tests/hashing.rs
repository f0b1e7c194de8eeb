//! Consistent hashing through the real binary: stable mapping, identical across processes,
//! minimal movement on removal, weights, and multi-variable keys.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use support::*;

const KEYS: usize = 1000;

fn config(web: SocketAddr, endpoints: &[(&Backend, u32)], hash_key: &str) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|(b, w)| format!("{{ address: \"{}\", weight: {w} }}", b.address))
        .collect();
    format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams:\n  - {{ name: app, balance: consistent_hash, hash_key: \"{hash_key}\", \
         endpoints: [{}] }}\n",
        list.join(", ")
    )
}

/// Which backend serves each of the keys `/k/0` .. `/k/999`.
fn mapping(web: SocketAddr) -> Vec<String> {
    let mut client = Client::connect(web);
    (0..KEYS)
        .map(|k| {
            let response = client.get("hash.test", &format!("/k/{k}"));
            assert_eq!(response.status, 200);
            response.backend().to_string()
        })
        .collect()
}

fn shares(mapping: &[String]) -> HashMap<String, f64> {
    let mut counts: HashMap<String, f64> = HashMap::new();
    for backend in mapping {
        *counts.entry(backend.clone()).or_default() += 1.0 / mapping.len() as f64;
    }
    counts
}

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::start(&format!("b{i}"), Behavior::Echo))
        .collect()
}

#[test]
fn keys_are_stable_identical_across_processes_and_move_minimally() {
    let backends = backends(5);
    let weighted: Vec<(&Backend, u32)> = backends.iter().map(|b| (b, 1)).collect();

    let web1 = listen_address();
    let first = Sluice::start(&config(web1, &weighted, "$request_uri"));
    let web2 = listen_address();
    let _second = Sluice::start(&config(web2, &weighted, "$request_uri"));

    let mapping1 = mapping(web1);
    assert_eq!(
        mapping(web1),
        mapping1,
        "every key always lands on the same backend"
    );
    assert_eq!(
        mapping(web2),
        mapping1,
        "two processes map all keys identically"
    );
    let spread = shares(&mapping1);
    assert_eq!(spread.len(), 5, "every endpoint gets keys: {spread:?}");
    println!("hashing: share of {KEYS} keys over 5 equal endpoints: {spread:?}");

    // Remove b2 by SIGHUP: only its keys move, to the others.
    let without: Vec<(&Backend, u32)> = weighted
        .iter()
        .filter(|(b, _)| b.name != "b2")
        .copied()
        .collect();
    first.reload(&config(web1, &without, "$request_uri"));
    let after = mapping(web1);
    let mut moved = 0;
    for (before, now) in mapping1.iter().zip(&after) {
        if before != now {
            moved += 1;
            assert_eq!(before, "b2", "a key of {before} moved to {now}");
        }
        assert_ne!(now, "b2");
    }
    let moved_share = moved as f64 / KEYS as f64;
    println!("hashing: removing 1 of 5 endpoints moved {moved_share:.3} of keys");
    // Only b2's keys moved (checked above); its share is 1/5 give or take the ring's spread
    // (160 points per endpoint: up to ~25% of the ring over random ports) and sampling.
    assert!(moved_share <= 0.30, "moved {moved_share}");
    assert!(moved > 0);
}

#[test]
fn weights_give_proportional_shares() {
    let backends = backends(3);
    let web = listen_address();
    let _sluice = Sluice::start(&config(
        web,
        &[(&backends[0], 1), (&backends[1], 2), (&backends[2], 1)],
        "$request_uri",
    ));
    let spread = shares(&mapping(web));
    println!("hashing: weights 1:2:1 gave {spread:?}");
    let middle = spread.get("b1").copied().unwrap_or(0.0);
    assert!(
        (0.40..=0.60).contains(&middle),
        "weight-2 endpoint share {middle}"
    );
}

#[test]
fn host_and_query_string_both_change_the_key() {
    let backends = backends(8);
    let weighted: Vec<(&Backend, u32)> = backends.iter().map(|b| (b, 1)).collect();
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, &weighted, "$host$request_uri"));
    let mut client = Client::connect(web);
    let mut by_host: HashMap<String, usize> = HashMap::new();
    let mut by_query: HashMap<String, usize> = HashMap::new();
    for i in 0..64 {
        // Same path, hosts differ.
        let r = client.get(&format!("tenant{i}.example.com"), "/same");
        *by_host.entry(r.backend().to_string()).or_default() += 1;
        // Same host and path, query strings differ.
        let r = client.get("one.example.com", &format!("/same?v={i}"));
        *by_query.entry(r.backend().to_string()).or_default() += 1;
    }
    assert!(by_host.len() >= 4, "host changes the key: {by_host:?}");
    assert!(
        by_query.len() >= 4,
        "query string changes the key: {by_query:?}"
    );
    // And the same host + URI is stable.
    let first = client
        .get("one.example.com", "/same?v=1")
        .backend()
        .to_string();
    for _ in 0..10 {
        assert_eq!(client.get("one.example.com", "/same?v=1").backend(), first);
    }
}
