//! The Gateway API source at scale, through the real binary and the fake API server, as
//! gateway-api-bench measures it: 5,000 HTTPRoutes go live, then one route is changed
//! again and again while a client loads it; every change must reach routing and no request
//! may fail. Times and memory are printed for the record (bench/RESULTS.md), never
//! asserted. `SLUICE_GATEWAY_ROUTES`, `SLUICE_GATEWAY_CHANGES` and `SLUICE_GATEWAY_RPS`
//! (the steady load) scale it; `bench/gateway_propagation.sh` runs 1,000 changes with the
//! release binary.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use sluice::sources::kubernetes::gateway::api::gatewayclasses::GatewayClass;
use sluice::sources::kubernetes::gateway::api::gateways::Gateway;
use sluice::sources::kubernetes::gateway::api::httproutes::HttpRoute;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::fake_kube::{ready, slice, FakeKube};
use support::*;

const NAMESPACES: usize = 50;

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// HTTPRoute `i`: host `h{i}.gw.test`, path `/a` to Service `service` of its namespace.
fn route(i: usize, service: &str) -> HttpRoute {
    object(json!({
        "metadata": {"name": format!("route-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": "infra"}],
            "hostnames": [format!("h{i}.gw.test")],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
                "backendRefs": [{"name": service, "port": 80}],
            }],
        },
    }))
}

#[test]
fn httproutes_at_scale_go_live_and_changes_under_load_fail_no_request() {
    let routes = setting("SLUICE_GATEWAY_ROUTES", 5_000);
    let changes = setting("SLUICE_GATEWAY_CHANGES", 5);
    let kube = FakeKube::start();
    let blue = Backend::start("blue", Behavior::Echo);
    let green = Backend::start("green", Behavior::Echo);
    kube.apply::<GatewayClass>(object(json!({
        "metadata": {"name": "sluice"},
        "spec": {"controllerName": "sluice.dev/gateway-controller"},
    })));
    kube.apply::<Namespace>(object(json!({"metadata": {"name": "infra"}})));
    kube.apply::<Gateway>(object(json!({
        "metadata": {"name": "edge", "namespace": "infra"},
        "spec": {"gatewayClassName": "sluice", "listeners": [{
            "name": "http", "port": 80, "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": "All"}},
        }]},
    })));
    for n in 0..NAMESPACES {
        let namespace = format!("ns-{n}");
        kube.apply::<Namespace>(object(json!({"metadata": {"name": namespace}})));
        for (name, backend) in [("blue", &blue), ("green", &green)] {
            kube.apply::<Service>(object(json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            })));
            kube.apply::<EndpointSlice>(slice(
                &namespace,
                &format!("{name}-1"),
                name,
                ("http", backend.address.port()),
                &[ready(&backend.address.ip().to_string())],
            ));
        }
    }
    for i in 0..routes {
        kube.apply(route(i, "blue"));
    }
    let http = listen_address();
    let config = format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners: [{{ name: http, listen: \"{http}\" }}]\n\
         gateway: {{ listeners: [{{ port: 80, listener: http }}] }}\n\
         routes: []\n",
        kube.url()
    );
    let started = Instant::now();
    // As tests/ingress_scale.rs: a debug build on a busy machine needs more than 30 s.
    let mut sluice = Sluice::start_unready(&config);
    sluice.wait_ready_within(Duration::from_secs(300));
    let live = started.elapsed();
    let (peak, resident) = memory_mib(sluice.pid());
    for i in (0..routes).step_by(10) {
        let response = Client::connect(http).get(&format!("h{i}.gw.test"), "/a/x");
        assert_eq!((response.status, response.backend()), (200, "blue"), "h{i}");
    }

    // The leader writes every route's status after the first sync (one PATCH each, which
    // the API server echoes to every watch): changes are timed once that has settled, as
    // gateway-api-bench times changes on a Gateway at rest.
    let settled = kube.wait_until(Duration::from_secs(300), |kube| {
        kube.list::<HttpRoute>()
            .iter()
            .all(|r| r.status.as_ref().is_some_and(|s| !s.parents.is_empty()))
    });
    assert!(settled, "the routes' status was not written");

    // Steady load, as gateway-api-bench runs it: a fixed request rate on one connection,
    // well below what the machine can serve, so that what is measured is the change.
    let rate = setting("SLUICE_GATEWAY_RPS", 500) as u32;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let load = thread::spawn(move || {
        let mut client = Client::connect(http);
        let mut statuses = Vec::new();
        let interval = Duration::from_secs(1) / rate.max(1);
        let mut next = Instant::now();
        while !flag.load(Ordering::Relaxed) {
            // A new connection well before the listener's keepalive request limit.
            if statuses.len() % 1000 == 999 {
                client = Client::connect(http);
            }
            let response = client.try_request("GET", "/a", &[("host", "h7.gw.test")], b"");
            // 0 stands for a connection closed without an answer.
            let status = response.as_ref().map_or(0, |r| r.status);
            if status != 200 {
                client = Client::connect(http);
            }
            statuses.push(status);
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        statuses
    });
    let mut propagation = Vec::new();
    let mut applying = Vec::new();
    let mut probe = Client::connect(http);
    for round in 0..changes {
        let service = if round % 2 == 0 { "green" } else { "blue" };
        let asked = Instant::now();
        kube.apply(route(7, service));
        // From the change's commit at the API, as the watch sees it: the fake API server's
        // own write (a debug build, one lock over its store) is reported apart.
        let changed = Instant::now();
        applying.push(changed - asked);
        // Polled every millisecond: the figure is not rounded up to a coarse polling
        // interval, and the probe does not itself load the machine (back-to-back requests
        // would take a core from the controller it measures).
        loop {
            match probe.try_request("GET", "/a", &[("host", "h7.gw.test")], b"") {
                Some(r) if r.backend() == service => break,
                Some(_) => {}
                None => probe = Client::connect(http),
            }
            assert!(
                changed.elapsed() < READY_TIMEOUT,
                "change {round} did not reach routing"
            );
            thread::sleep(Duration::from_millis(1));
        }
        propagation.push(changed.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().expect("load thread");
    propagation.sort();
    applying.sort();
    let at = |q: usize| propagation[(propagation.len() * q / 100).min(propagation.len() - 1)];
    let applied_at = |q: usize| applying[(applying.len() * q / 100).min(applying.len() - 1)];
    let (_, resident_after) = memory_mib(sluice.pid());
    println!(
        "gateway scale: {routes} HTTPRoutes live {live:?} after start; memory peak {peak} MiB, \
         resident {resident} MiB ({:.1} KiB per route), {resident_after} MiB after the changes; \
         one route change from its commit at the API to routing: p50 {:?}, p99 {:?}, max {:?} \
         over {} changes (the fake API server's write before it: p50 {:?}, p99 {:?}); {} \
         requests under load ({rate} per second), {} failed",
        resident as f64 * 1024.0 / routes as f64,
        at(50),
        at(99),
        propagation.last().copied().unwrap_or(Duration::ZERO),
        propagation.len(),
        applied_at(50),
        applied_at(99),
        statuses.len(),
        statuses.iter().filter(|s| **s != 200).count()
    );
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests under load: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
}
