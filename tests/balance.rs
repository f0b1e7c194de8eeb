//! Balance policies other than consistent hashing, through the real binary.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use support::*;

fn config(web: SocketAddr, policy: &str, endpoints: &[&Backend]) -> String {
    single_upstream_config(
        web,
        &addresses(endpoints),
        &format!(", balance: {policy}"),
        "",
    )
}

fn served_by(web: SocketAddr, requests: usize) -> HashMap<String, usize> {
    let mut client = Client::connect(web);
    let mut counts = HashMap::new();
    for i in 0..requests {
        *counts
            .entry(
                client
                    .get("lb.test", &format!("/{i}"))
                    .backend()
                    .to_string(),
            )
            .or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_alternates_and_random_spreads() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let _rr = Sluice::start(&config(web, "round_robin", &[&a, &b]));
    let counts = served_by(web, 100);
    assert_eq!(counts.get("a"), Some(&50), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&50), "{counts:?}");

    let web = listen_address();
    let _random = Sluice::start(&config(web, "random", &[&a, &b]));
    let counts = served_by(web, 400);
    for name in ["a", "b"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!((120..=280).contains(&n), "{counts:?}");
    }
}

#[test]
fn least_request_avoids_the_busy_endpoint() {
    let slow = Backend::start(
        "slow",
        Behavior::Delay(std::time::Duration::from_millis(200)),
    );
    let fast = Backend::start("fast", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, "least_request", &[&slow, &fast]));
    // Four clients keep requests in flight; the slow endpoint accumulates them, so new
    // requests should mostly go to the fast one.
    let workers: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || served_by(web, 40)))
        .collect();
    let mut totals: HashMap<String, usize> = HashMap::new();
    for w in workers {
        for (k, v) in w.join().expect("client thread") {
            *totals.entry(k).or_default() += v;
        }
    }
    let slow_n = totals.get("slow").copied().unwrap_or(0);
    let fast_n = totals.get("fast").copied().unwrap_or(0);
    assert_eq!(slow_n + fast_n, 160);
    assert!(fast_n > 4 * slow_n, "least_request sent {totals:?}");
}
