//! Kubernetes discovery through the real binary and a fake API server on loopback.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::fake_kube::{ready, slice, terminating, FakeKube};
use support::*;

const NS: &str = "web";

/// Backends named `pod1..=podN` on 127.0.0.(1+i):port, all on one port like a slice's pods.
fn pods(n: usize, port: u16, behavior: Behavior) -> Vec<Backend> {
    (1..=n)
        .map(|i| {
            let address = SocketAddr::from(([127, 0, 0, 1 + i as u8], port));
            Backend::start_on(&format!("pod{i}"), behavior, address)
        })
        .collect()
}

fn ips(backends: &[Backend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| b.address.ip().to_string())
        .collect()
}

fn config(web: SocketAddr, kube: &FakeKube, upstream_extra: &str) -> String {
    format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams:\n  - {{ name: app, kubernetes: {{ namespace: {NS}, service: app, port: http }}{upstream_extra} }}\n",
        kube.url()
    )
}

fn publish(kube: &FakeKube, name: &str, port: u16, ips: &[String]) {
    let endpoints: Vec<_> = ips.iter().map(|ip| ready(ip)).collect();
    kube.apply(slice(NS, name, "app", ("http", port), &endpoints));
}

/// Backends that answered `n` requests on one keepalive connection.
fn served_by(web: SocketAddr, n: usize) -> HashSet<String> {
    let mut client = Client::connect(web);
    (0..n)
        .map(|i| {
            client
                .get("k8s.test", &format!("/{i}"))
                .backend()
                .to_string()
        })
        .collect()
}

fn names(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until the upstream lists exactly `count` endpoints.
fn wait_endpoints(sluice: &Sluice, count: usize) {
    wait_until(
        &format!("{count} discovered endpoints"),
        READY_TIMEOUT,
        || {
            sluice.admin_get("/upstreams").map(|r| {
                r.json()["upstreams"][0]["endpoints"]
                    .as_array()
                    .map_or(0, Vec::len)
            }) == Some(count)
        },
    );
}

#[test]
fn scaling_changes_routing_quickly_without_failed_requests() {
    let port = free_port();
    let backends = pods(5, port, Behavior::Echo);
    let all = ips(&backends);
    let kube = FakeKube::start();
    publish(&kube, "app-1", port, &all[..3]);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &kube, ""));
    assert_eq!(served_by(web, 30), names(&["pod1", "pod2", "pod3"]));

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let load = thread::spawn(move || {
        let mut client = Client::connect(web);
        let mut statuses = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            // A new connection well before the listener's keepalive request limit (10,000),
            // which a slow run reaches: the limit closes the connection, as it should.
            if statuses.len() % 1000 == 999 {
                client = Client::connect(web);
            }
            statuses.push(client.get("k8s.test", "/load").status);
        }
        statuses
    });

    let mut latencies = Vec::new();
    for (count, expected) in [
        (5, vec!["pod1", "pod2", "pod3", "pod4", "pod5"]),
        (2, vec!["pod1", "pod2"]),
    ] {
        let changed = Instant::now();
        publish(&kube, "app-1", port, &all[..count]);
        wait_endpoints(&sluice, count);
        latencies.push(changed.elapsed());
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "routing changed after {:?}",
            changed.elapsed()
        );
        assert_eq!(served_by(web, 40), names(&expected));
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().expect("load thread");
    println!(
        "discovery: watch event to routing change: {latencies:?}; {} requests under load",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests during scaling"
    );
    assert!(sluice.metric("sluice_discovery_updates_total{upstream=\"app\"}") >= 3.0);
}

#[test]
fn terminating_endpoints_drain_and_in_flight_requests_complete() {
    let port = free_port();
    let backends = pods(2, port, Behavior::Delay(Duration::from_millis(300)));
    let all = ips(&backends);
    let kube = FakeKube::start();
    publish(&kube, "app-1", port, &all);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &kube, ""));
    wait_endpoints(&sluice, 2);

    // pod1 terminating, pod2 ready: only pod2 gets new requests.
    kube.apply(slice(
        NS,
        "app-1",
        "app",
        ("http", port),
        &[terminating(&all[0]), ready(&all[1])],
    ));
    wait_endpoints(&sluice, 1);
    assert_eq!(served_by(web, 6), names(&["pod2"]));

    // An in-flight request to pod2 survives pod2 disappearing.
    let in_flight = thread::spawn(move || Client::connect(web).get("k8s.test", "/slow"));
    wait_until("the slow request to reach pod2", READY_TIMEOUT, || {
        backends[1].requests().iter().any(|r| r.target == "/slow")
    });
    // pod2 gone; pod1 is the last, terminating but serving: drain mode uses it.
    kube.apply(slice(
        NS,
        "app-1",
        "app",
        ("http", port),
        &[terminating(&all[0])],
    ));
    let response = in_flight.join().expect("client thread");
    assert_eq!(response.status, 200);
    assert_eq!(response.backend(), "pod2");
    wait_until(
        "the terminating endpoint to take traffic",
        READY_TIMEOUT,
        || served_by(web, 2) == names(&["pod1"]),
    );
    let view = sluice.admin_get("/upstreams").expect("view").json();
    assert_eq!(view["upstreams"][0]["endpoints"][0]["terminating"], true);
}

#[test]
fn removed_endpoints_lose_their_pooled_connections_once_idle() {
    let port = free_port();
    let slow = Behavior::Delay(Duration::from_millis(300));
    let backends = [
        Backend::start_on(
            "pod1",
            Behavior::Echo,
            SocketAddr::from(([127, 0, 0, 2], port)),
        ),
        Backend::start_on("pod2", slow, SocketAddr::from(([127, 0, 0, 3], port))),
        Backend::start_on("pod3", slow, SocketAddr::from(([127, 0, 0, 4], port))),
    ];
    let all = ips(&backends);
    let kube = FakeKube::start();
    publish(&kube, "app-1", port, &all);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &kube, ""));
    wait_endpoints(&sluice, 3);
    // One keepalive client: round robin gives each pod one pooled upstream connection.
    assert_eq!(served_by(web, 6), names(&["pod1", "pod2", "pod3"]));
    assert!(backends.iter().all(|b| b.open_connections() == 1));

    // pod1 leaves the service: its idle pooled connection is closed.
    let removed = Instant::now();
    publish(&kube, "app-1", port, &all[1..]);
    wait_until("pod1's pooled connection to close", READY_TIMEOUT, || {
        backends[0].open_connections() == 0
    });
    println!(
        "discovery: idle connection of a removed endpoint closed after {:?}",
        removed.elapsed()
    );

    // A request in flight to the pod that leaves next finishes on its connection, which
    // is closed once the request ends.
    let in_flight = thread::spawn(move || Client::connect(web).get("k8s.test", "/slow"));
    let mut busy = 0;
    wait_until("the slow request to reach a pod", READY_TIMEOUT, || {
        busy = (1..3)
            .find(|&i| backends[i].requests().iter().any(|r| r.target == "/slow"))
            .unwrap_or(0);
        busy != 0
    });
    let other = if busy == 1 { 2 } else { 1 };
    publish(&kube, "app-1", port, &all[other..=other]);
    wait_endpoints(&sluice, 1);
    let response = in_flight.join().expect("client thread");
    assert_eq!(response.status, 200);
    assert_eq!(response.backend(), backends[busy].name);
    wait_until(
        "the in-flight request's connection to close",
        READY_TIMEOUT,
        || backends[busy].open_connections() == 0,
    );
    assert_eq!(
        backends[other].open_connections(),
        1,
        "the remaining pod keeps its connection"
    );
}

#[test]
fn named_ports_resolve_per_slice_and_slices_merge() {
    let port_a = free_port();
    let port_b = free_port();
    let a = Backend::start_on(
        "a",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 2], port_a)),
    );
    let b = Backend::start_on(
        "b",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 3], port_b)),
    );
    let kube = FakeKube::start();
    kube.apply(slice(
        NS,
        "app-a",
        "app",
        ("http", port_a),
        &[ready("127.0.0.2")],
    ));
    kube.apply(slice(
        NS,
        "app-b",
        "app",
        ("http", port_b),
        &[ready("127.0.0.3")],
    ));
    // Another service's slice in the same namespace is not selected.
    kube.apply(slice(
        NS,
        "other-1",
        "other",
        ("http", port_a),
        &[ready("127.0.0.9")],
    ));
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, &kube, ""));
    assert_eq!(served_by(web, 20), names(&["a", "b"]));
    drop((a, b));
}

#[test]
fn watch_drops_410_and_api_outage_keep_serving_and_resume() {
    let port = free_port();
    let backends = pods(4, port, Behavior::Echo);
    let all = ips(&backends);
    let kube = FakeKube::start();
    publish(&kube, "app-1", port, &all[..1]);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &kube, ""));
    wait_endpoints(&sluice, 1);

    // Dropped mid-stream: the watch resumes from its resourceVersion, no event lost.
    let watches = kube.watch_requests();
    kube.drop_watches();
    publish(&kube, "app-1", port, &all[..2]);
    wait_endpoints(&sluice, 2);
    assert!(kube.watch_requests() > watches);

    // 410 Gone: a change the client missed, then history compacted: it relists.
    kube.set_down(true);
    publish(&kube, "app-1", port, &all[..3]);
    kube.compact();
    kube.set_down(false);
    wait_endpoints(&sluice, 3);

    // API down: traffic continues to the last known endpoints, then updates after.
    kube.set_down(true);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        assert_eq!(get(web, "/during-outage").status, 200);
    }
    assert!(sluice.metric("sluice_discovery_errors_total{upstream=\"app\"}") >= 1.0);
    assert_eq!(served_by(web, 30).len(), 3);
    publish(&kube, "app-1", port, &all[..4]);
    kube.set_down(false);
    wait_endpoints(&sluice, 4);
    assert_eq!(served_by(web, 40).len(), 4);
}

#[test]
fn readyz_waits_for_the_first_sync() {
    let kube = FakeKube::start();
    kube.set_down(true);
    let port = free_port();
    let backends = pods(1, port, Behavior::Echo);
    publish(&kube, "app-1", port, &ips(&backends));
    let web = listen_address();
    let sluice = Sluice::start_unready(&config(web, &kube, ""));
    wait_until("the admin listener", READY_TIMEOUT, || {
        sluice.admin_get("/healthz").is_some()
    });
    assert_eq!(sluice.admin_get("/readyz").map(|r| r.status), Some(503));
    kube.set_down(false);
    wait_until("readiness after the first sync", READY_TIMEOUT, || {
        sluice.admin_get("/readyz").map(|r| r.status) == Some(200)
    });
    assert_eq!(get(web, "/").backend(), "pod1");
}

#[test]
fn consistent_hashing_over_discovered_endpoints_agrees_across_processes() {
    let port = free_port();
    let backends = pods(4, port, Behavior::Echo);
    let kube = FakeKube::start();
    publish(&kube, "app-1", port, &ips(&backends));
    let extra = ", balance: consistent_hash, hash_key: \"$request_uri\"";
    let web1 = listen_address();
    let _one = Sluice::start(&config(web1, &kube, extra));
    let web2 = listen_address();
    let _two = Sluice::start(&config(web2, &kube, extra));
    let map = |web| {
        let mut client = Client::connect(web);
        (0..200)
            .map(|k| {
                client
                    .get("k8s.test", &format!("/k/{k}"))
                    .backend()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let first = map(web1);
    assert_eq!(first, map(web2));
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 4);
}

#[test]
fn service_without_endpoints_answers_503() {
    let kube = FakeKube::start();
    kube.apply(slice(NS, "app-1", "app", ("http", 80), &[]));
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &kube, ""));
    let response = get(web, "/");
    assert_eq!(response.status, 503);
    assert!(sluice.stderr().contains("has no usable endpoints"));
}

#[test]
fn reload_starts_and_stops_watches_and_keeps_unchanged_ones() {
    let port = free_port();
    let backends = pods(2, port, Behavior::Echo);
    let all = ips(&backends);
    let kube = FakeKube::start();
    publish(&kube, "app-1", port, &all[..1]);
    kube.apply(slice(
        "shop",
        "cart-1",
        "cart",
        ("http", port),
        &[ready(&all[1])],
    ));
    let web = listen_address();
    let base = config(web, &kube, "");
    let sluice = Sluice::start(&base);
    assert_eq!(served_by(web, 4), names(&["pod1"]));
    // Ready comes with the first list; the watch request follows it.
    wait_until("the first namespace's watch", READY_TIMEOUT, || {
        kube.watch_requests() >= 1
    });
    let watches = kube.watch_requests();

    // Add an upstream in another namespace: its watch starts; the first one keeps running.
    let with_cart = base.replace(
        "routes: [{ name: all, listener: web, upstream: app }]",
        "routes: [{ name: all, listener: web, upstream: app }, { name: cart, listener: web, paths: [{ prefix: /cart }], upstream: cart }]",
    ) + "  - { name: cart, kubernetes: { namespace: shop, service: cart, port: http } }\n";
    sluice.reload(&with_cart);
    wait_until("the cart upstream to be discovered", READY_TIMEOUT, || {
        get(web, "/cart").backend() == "pod2"
    });
    // Its endpoints come with the list; its watch request follows (a clean run saw the list
    // served before the watch was asked for).
    wait_until("the cart namespace's watch", READY_TIMEOUT, || {
        kube.watch_requests() > watches
    });
    assert_eq!(
        kube.watch_requests(),
        watches + 1,
        "only the new namespace started a watch"
    );
    assert_eq!(get(web, "/").backend(), "pod1");

    // Remove it again: /cart falls back to the default route; app keeps its endpoints.
    sluice.reload(&base);
    kube.set_down(true);
    assert_eq!(get(web, "/cart").backend(), "pod1");
    assert_eq!(sluice.admin_get("/readyz").map(|r| r.status), Some(200));
}
