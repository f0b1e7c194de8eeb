//! The Ingress controller at scale, through the real binary and the fake API server:
//! 5,000 Ingresses with 10,000 paths go live, and one Ingress changed under load reaches
//! routing with no failed request. Times and memory are printed for the record
//! (bench/README.md), never asserted.

mod support;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::fake_kube::{ready, slice, FakeKube};
use support::*;

const NAMESPACES: usize = 50;
const INGRESSES: usize = 5_000;

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// Ingress `i`: host `h{i}.scale.test`, paths `/a` and `/b` to Service `service`.
fn ingress(i: usize, service: &str) -> Ingress {
    let path = |p: &str| {
        json!({"path": p, "pathType": "Prefix", "backend": {
            "service": {"name": service, "port": {"number": 80}}}})
    };
    object(json!({
        "metadata": {"name": format!("ing-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
        "spec": {"ingressClassName": "sluice", "rules": [{
            "host": format!("h{i}.scale.test"),
            "http": {"paths": [path("/a"), path("/b")]},
        }]},
    }))
}

#[test]
fn five_thousand_ingresses_go_live_and_a_change_under_load_fails_no_request() {
    let kube = FakeKube::start();
    let blue = Backend::start("blue", Behavior::Echo);
    let green = Backend::start("green", Behavior::Echo);
    kube.apply::<IngressClass>(object(json!({
        "metadata": {"name": "sluice"},
        "spec": {"controller": "sluice.dev/ingress-controller"},
    })));
    for n in 0..NAMESPACES {
        let namespace = format!("ns-{n}");
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
    for i in 0..INGRESSES {
        kube.apply(ingress(i, "blue"));
    }
    let http = listen_address();
    let config = format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners: [{{ name: http, listen: \"{http}\" }}]\n\
         ingress: {{ http_listener: http }}\n\
         routes: []\n",
        kube.url()
    );
    let started = Instant::now();
    // A debug build takes ~20 s to list, translate and compile 5,000 Ingresses on two idle
    // cores: the usual 30 s readiness bound is too tight for a busy machine.
    let mut sluice = Sluice::start_unready(&config);
    sluice.wait_ready_within(Duration::from_secs(300));
    let live = started.elapsed();
    let (peak, resident) = memory_mib(sluice.pid());
    // Ready means live: every tenth Ingress answers on both paths, from its Service.
    for i in (0..INGRESSES).step_by(10) {
        for path in ["/a", "/b/x"] {
            let response = Client::connect(http).get(&format!("h{i}.scale.test"), path);
            assert_eq!(
                (response.status, response.backend()),
                (200, "blue"),
                "h{i}{path}"
            );
        }
    }
    let routes = sluice.admin_get("/config").expect("/config").json()["model"]["routes"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(routes, 2 * INGRESSES, "one route per path");

    // Load on one Ingress while another is switched back and forth between Services.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let load = thread::spawn(move || {
        let mut client = Client::connect(http);
        let mut statuses = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            // A new connection well before the listener's keepalive request limit.
            if statuses.len() % 1000 == 999 {
                client = Client::connect(http);
            }
            let response = client.try_request("GET", "/a", &[("host", "h7.scale.test")], b"");
            // 0 stands for a connection closed without an answer.
            let status = response.as_ref().map_or(0, |r| r.status);
            if status != 200 {
                client = Client::connect(http);
            }
            statuses.push(status);
        }
        statuses
    });
    let mut propagation = Vec::new();
    for round in 0..20 {
        let (service, backend) = if round % 2 == 0 {
            ("green", "green")
        } else {
            ("blue", "blue")
        };
        let changed = Instant::now();
        kube.apply(ingress(7, service));
        wait_until("the changed Ingress to route", READY_TIMEOUT, || {
            Client::connect(http).get("h7.scale.test", "/a").backend() == backend
        });
        propagation.push(changed.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().expect("load thread");
    propagation.sort();
    let p50 = propagation[propagation.len() / 2];
    let p99 = propagation[propagation.len() * 99 / 100];
    println!(
        "ingress scale: {INGRESSES} Ingresses, {routes} routes live {live:?} after start; \
         memory peak {peak} MiB, resident {resident} MiB; one Ingress change to routing: \
         p50 {p50:?}, p99 {p99:?}, max {:?} over {} changes; {} requests under load",
        propagation.last().copied().unwrap_or(Duration::ZERO),
        propagation.len(),
        statuses.len()
    );
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests under load: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
}
