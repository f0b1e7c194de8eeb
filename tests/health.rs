//! Health-checked backends through the real binary: active checks, passive ejection, panic
//! threshold, slow start, and health state across reloads.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const INTERVAL_MS: u64 = 200;
const UNHEALTHY_AFTER: u64 = 2;

fn config(
    web: SocketAddr,
    endpoints: &[&Backend],
    upstream_extra: &str,
    routes_extra: &str,
) -> String {
    single_upstream_config(web, &addresses(endpoints), upstream_extra, routes_extra)
}

fn active_checks() -> String {
    format!(
        ", health: {{ active: {{ http_path: /healthz, interval: {INTERVAL_MS}ms, timeout: 150ms, \
         healthy_after: 2, unhealthy_after: {UNHEALTHY_AFTER} }} }}"
    )
}

/// The `/upstreams` entry of endpoint `address`.
fn endpoint_view(sluice: &Sluice, address: SocketAddr) -> Value {
    let view = sluice.admin_get("/upstreams").expect("/upstreams").json();
    view["upstreams"][0]["endpoints"]
        .as_array()
        .and_then(|eps| {
            eps.iter()
                .find(|e| e["address"] == address.to_string())
                .cloned()
        })
        .unwrap_or(Value::Null)
}

fn wait_health(sluice: &Sluice, backend: &Backend, health: &str) {
    wait_until(
        &format!("{} to be {health}", backend.name),
        READY_TIMEOUT,
        || endpoint_view(sluice, backend.address)["health"] == health,
    );
}

/// Requests other than health checks that `backend` saw.
fn served(backend: &Backend) -> Vec<SeenRequest> {
    backend
        .requests()
        .into_iter()
        .filter(|r| r.target != "/healthz")
        .collect()
}

/// A client sending GETs back to back until stopped; returns every status.
fn background_load(web: SocketAddr) -> (Arc<AtomicBool>, thread::JoinHandle<Vec<u16>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        let mut client = Client::connect(web);
        let mut statuses = Vec::new();
        let mut i = 0;
        while !flag.load(Ordering::Relaxed) {
            statuses.push(client.get("health.test", &format!("/load/{i}")).status);
            i += 1;
        }
        statuses
    });
    (stop, handle)
}

#[test]
fn failing_health_path_stops_traffic_and_recovery_brings_it_back() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &[&a, &b], &active_checks(), ""));
    wait_health(&sluice, &a, "healthy");
    wait_health(&sluice, &b, "healthy");

    let (stop, load) = background_load(web);
    wait_until("a to serve", READY_TIMEOUT, || served(&a).len() >= 20);
    let turned_bad = Instant::now();
    a.set_health_status(500);
    wait_health(&sluice, &a, "unhealthy");
    let b_before = served(&b).len();
    wait_until("b to take the load", READY_TIMEOUT, || {
        served(&b).len() >= b_before + 100
    });
    let last_on_a = served(&a).last().map(|r| r.at).expect("a served");
    let drain = last_on_a.saturating_duration_since(turned_bad);
    println!("health: last request to the bad endpoint {drain:?} after its health path failed");
    let bound = Duration::from_millis(INTERVAL_MS * (UNHEALTHY_AFTER + 1));
    assert!(
        drain <= bound + Duration::from_millis(INTERVAL_MS),
        "took {drain:?}"
    );
    let a_while_bad = served(&a).len();

    a.set_health_status(200);
    wait_health(&sluice, &a, "healthy");
    wait_until("a to serve again", READY_TIMEOUT, || {
        served(&a).len() > a_while_bad
    });
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().expect("load thread");
    let errors = statuses.iter().filter(|s| **s != 200).count();
    println!(
        "health: {} requests during the bad/recover cycle, {errors} client errors",
        statuses.len()
    );
    assert_eq!(errors, 0);

    let view = endpoint_view(&sluice, a.address);
    assert_eq!(view["last_check"]["result"], "ok");
    assert!(view["last_check"]["at"].as_str().is_some());
    assert!(
        sluice.metric("sluice_health_checks_total{result=\"bad_status\",upstream=\"app\"}") >= 2.0
    );
    assert!(sluice
        .stderr()
        .contains(&format!("endpoint {} is unhealthy", a.address)));
    assert!(sluice
        .stderr()
        .contains(&format!("endpoint {} is healthy", a.address)));
}

#[test]
fn hung_endpoint_is_marked_down_by_the_check_timeout() {
    let hung = Backend::start("hung", Behavior::Hang);
    let good = Backend::start("good", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &[&hung, &good], &active_checks(), ""));
    wait_health(&sluice, &good, "healthy");
    wait_health(&sluice, &hung, "unhealthy");
    assert_eq!(
        endpoint_view(&sluice, hung.address)["last_check"]["result"],
        "timeout"
    );
    let before = served(&hung).len();
    let mut client = Client::connect(web);
    for i in 0..20 {
        let response = client.get("health.test", &format!("/{i}"));
        assert_eq!(response.status, 200);
        assert_eq!(response.backend(), "good");
    }
    assert_eq!(served(&hung).len(), before);
    sluice.wait_metric(
        "sluice_upstream_endpoints{state=\"unhealthy\",upstream=\"app\"}",
        1.0,
    );
}

#[test]
fn resetting_endpoint_is_ejected_then_readmitted_with_doubled_ejection() {
    let closer = Backend::start("closer", Behavior::CloseAfterRequest);
    let good = Backend::start("good", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[&closer, &good],
        ", retry: { attempts: 2 }, health: { passive: { consecutive_failures: 3, eject_for: 1s, max_ejected_percent: 50 } }",
        "",
    ));
    let mut client = Client::connect(web);
    let mut i = 0;
    let mut get = |client: &mut Client| {
        i += 1;
        let status = client.get("health.test", &format!("/{i}")).status;
        assert_eq!(status, 200, "retries hide the resets from clients");
    };
    while sluice.metric("sluice_upstream_ejections_total{upstream=\"app\"}") < 1.0 {
        get(&mut client);
    }
    assert_eq!(
        served(&closer).len(),
        3,
        "ejected after exactly 3 consecutive failures"
    );
    assert!(endpoint_view(&sluice, closer.address)["ejected_until"].is_string());
    for _ in 0..30 {
        get(&mut client);
    }
    assert_eq!(served(&closer).len(), 3, "no requests while ejected");

    wait_until("the ejection to end", READY_TIMEOUT, || {
        endpoint_view(&sluice, closer.address)["available"] == true
    });
    while sluice.metric("sluice_upstream_ejections_total{upstream=\"app\"}") < 2.0 {
        get(&mut client);
    }
    assert_eq!(
        served(&closer).len(),
        6,
        "readmitted, failed 3 more times, ejected again"
    );
    let stderr = sluice.stderr();
    assert!(stderr.contains("ejected for 1000 ms"), "{stderr}");
    assert!(
        stderr.contains("ejected for 2000 ms"),
        "the second ejection doubles"
    );
    assert!(stderr.contains("readmitted after ejection"));
}

#[test]
fn max_ejected_percent_is_respected() {
    let closers: Vec<Backend> = (0..3)
        .map(|i| Backend::start(&format!("closer{i}"), Behavior::CloseAfterRequest))
        .collect();
    let good = Backend::start("good", Behavior::Echo);
    let web = listen_address();
    let mut all: Vec<&Backend> = closers.iter().collect();
    all.push(&good);
    let sluice = Sluice::start(&config(
        web,
        &all,
        ", retry: { attempts: 1 }, health: { passive: { consecutive_failures: 1, eject_for: 60s, max_ejected_percent: 50 } }",
        "",
    ));
    let mut client = Client::connect(web);
    for i in 0..60 {
        let _ = client.try_request("GET", &format!("/{i}"), &[("host", "h")], b"");
        if client.is_closed_by_peer() {
            client = Client::connect(web);
        }
    }
    let view = sluice.admin_get("/upstreams").expect("/upstreams").json();
    let ejected = view["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["ejected_until"].is_string())
        .count();
    assert_eq!(ejected, 2, "half of 4 endpoints at most: {view}");
    assert_eq!(
        sluice.metric("sluice_upstream_ejections_total{upstream=\"app\"}"),
        2.0
    );
}

#[test]
fn panic_threshold_routes_to_all_when_every_check_fails() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    a.set_health_status(500);
    b.set_health_status(500);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &[&a, &b], &active_checks(), ""));
    wait_health(&sluice, &a, "unhealthy");
    wait_health(&sluice, &b, "unhealthy");
    let mut client = Client::connect(web);
    for i in 0..10 {
        assert_eq!(client.get("health.test", &format!("/{i}")).status, 200);
    }
    assert!(sluice.metric("sluice_upstream_panic_routed_total{upstream=\"app\"}") >= 10.0);
    assert_eq!(
        sluice.admin_get("/upstreams").expect("view").json()["upstreams"][0]["panic"],
        true
    );
    assert_eq!(
        sluice.admin_get("/readyz").map(|r| r.status),
        Some(200),
        "readiness ignores backends"
    );
}

#[test]
fn slow_start_ramps_a_new_endpoint_share() {
    let old = Backend::start("old", Behavior::Echo);
    let new = Backend::start("new", Behavior::Echo);
    let web = listen_address();
    const WINDOW: Duration = Duration::from_secs(3);
    let extra = ", balance: round_robin, slow_start: 3s";
    let sluice = Sluice::start(&config(web, &[&old], extra, ""));
    sluice.reload(&config(web, &[&old, &new], extra, ""));
    let added = Instant::now();
    let mut client = Client::connect(web);
    let mut buckets = [(0usize, 0usize); 3];
    while added.elapsed() < WINDOW {
        let third = (added.elapsed().as_secs_f64() / WINDOW.as_secs_f64() * 3.0) as usize;
        let response = client.get("slow.test", "/");
        let bucket = &mut buckets[third.min(2)];
        bucket.0 += 1;
        if response.backend() == "new" {
            bucket.1 += 1;
        }
    }
    let shares: Vec<f64> = buckets
        .iter()
        .map(|(n, new)| *new as f64 / (*n).max(1) as f64)
        .collect();
    println!("slow start: share of the new endpoint per third of the window: {shares:?} (fair share 0.5)");
    assert!(shares[0] < 0.3, "{shares:?}");
    assert!(shares[2] > 0.35, "{shares:?}");
    assert!(shares[0] < shares[2]);
}

#[test]
fn slow_start_with_consistent_hash_never_moves_other_keys() {
    let backends: Vec<Backend> = (0..5)
        .map(|i| Backend::start(&format!("b{i}"), Behavior::Echo))
        .collect();
    let web = listen_address();
    let extra = ", balance: consistent_hash, hash_key: \"$request_uri\", slow_start: 2s";
    let first_four: Vec<&Backend> = backends.iter().take(4).collect();
    let sluice = Sluice::start(&config(web, &first_four, extra, ""));
    let mut client = Client::connect(web);
    let keys = 300;
    let map = |client: &mut Client| -> Vec<String> {
        (0..keys)
            .map(|k| {
                client
                    .get("hash.test", &format!("/k/{k}"))
                    .backend()
                    .to_string()
            })
            .collect()
    };
    let before = map(&mut client);
    let all: Vec<&Backend> = backends.iter().collect();
    sluice.reload(&config(web, &all, extra, ""));
    let added = Instant::now();
    let mut moved_per_pass = Vec::new();
    loop {
        let done = added.elapsed() > Duration::from_millis(2100);
        let now = map(&mut client);
        let mut moved = 0;
        for (k, (was, is)) in before.iter().zip(&now).enumerate() {
            if was != is {
                assert_eq!(
                    is, "b4",
                    "key {k} moved from {was} to {is}, not to the new endpoint"
                );
                moved += 1;
            }
        }
        moved_per_pass.push(moved);
        if done {
            break;
        }
    }
    println!("slow start (consistent hash): keys on the new endpoint per pass: {moved_per_pass:?}");
    let last = *moved_per_pass.last().expect("passes");
    assert!(last > 0, "after the window the new endpoint has its keys");
    assert!(
        moved_per_pass[0] < last,
        "keys move gradually: {moved_per_pass:?}"
    );
}

#[test]
fn health_state_survives_a_reload() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &[&a, &b], &active_checks(), ""));
    wait_health(&sluice, &a, "healthy");
    a.set_health_status(500);
    wait_health(&sluice, &a, "unhealthy");
    let a_served = served(&a).len();
    sluice.reload(&config(
        web,
        &[&a, &b],
        &active_checks(),
        "  - { name: extra, listener: web, paths: [{ prefix: /extra }], upstream: app }\n",
    ));
    assert_eq!(endpoint_view(&sluice, a.address)["health"], "unhealthy");
    let mut client = Client::connect(web);
    for i in 0..20 {
        assert_eq!(client.get("health.test", &format!("/{i}")).backend(), "b");
    }
    assert_eq!(served(&a).len(), a_served);

    // A weight change keeps the state too.
    let weighted = config(web, &[&b], &active_checks(), "").replace(
        &format!("\"{}\"", b.address),
        &format!(
            "\"{}\", {{ address: \"{}\", weight: 3 }}",
            b.address, a.address
        ),
    );
    sluice.reload(&weighted);
    let view = endpoint_view(&sluice, a.address);
    assert_eq!(view["weight"], 3);
    assert_eq!(view["health"], "unhealthy");
    for i in 0..20 {
        assert_eq!(client.get("health.test", &format!("/w{i}")).backend(), "b");
    }
}

#[test]
fn endpoint_added_by_reload_waits_for_its_first_passing_check() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let sick = Backend::start("sick", Behavior::Echo);
    sick.set_health_status(503);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &[&a, &b], &active_checks(), ""));
    wait_health(&sluice, &a, "healthy");
    wait_health(&sluice, &b, "healthy");
    sluice.reload(&config(web, &[&a, &b, &sick], &active_checks(), ""));
    // Right after the reload, before any check of it: not used.
    let mut client = Client::connect(web);
    for i in 0..30 {
        assert_ne!(
            client.get("health.test", &format!("/{i}")).backend(),
            "sick"
        );
    }
    wait_health(&sluice, &sick, "unhealthy");
    sick.set_health_status(200);
    wait_health(&sluice, &sick, "healthy");
    wait_until("the recovered endpoint to serve", READY_TIMEOUT, || {
        client.get("health.test", "/again").backend() == "sick"
    });
}

/// A plaintext HTTP/2 (h2c) backend on its own thread answering every request like a gRPC
/// server, with the body `answer`.
fn h2c_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(support::h2_util::serve_grpc_like(tcp, move |_| answer));
            }
        });
    });
    address
}

/// The health verdict and last check detail of the first endpoint of upstream `name`.
fn verdict(sluice: &Sluice, name: &str) -> (String, String) {
    let view = sluice.admin_get("/upstreams").expect("/upstreams").json();
    let upstream = view["upstreams"]
        .as_array()
        .and_then(|all| all.iter().find(|u| u["name"] == name).cloned())
        .unwrap_or_default();
    let endpoint = &upstream["endpoints"][0];
    (
        endpoint["health"].as_str().unwrap_or_default().to_string(),
        endpoint["last_check"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Checks speak the upstream's protocol: gRPC health checking over h2c, and HTTP over
/// HTTP/2 and TLS with the upstream's SNI and CA. (Plain HTTP/1.1 checks marked all three
/// unhealthy at the first check.)
#[test]
fn checks_speak_the_upstreams_protocol() {
    // HealthCheckResponse { status: SERVING } and { status: NOT_SERVING }, length-prefixed.
    let serving = h2c_backend(&[0, 0, 0, 0, 2, 0x08, 1]);
    let not_serving = h2c_backend(&[0, 0, 0, 0, 2, 0x08, 2]);
    let certs = ScratchDir::new();
    let ca = support::tls::TestCa::new();
    let ca_file = certs.write("ca.pem", &ca.pem);
    let leaf = ca.issue(&certs, "api", &["api.internal"]);
    let tls_backend = support::tls::H2TlsBackend::start(&leaf);
    let web = listen_address();
    let check = "interval: 100ms, timeout: 2s, healthy_after: 1, unhealthy_after: 1";
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - {{ name: a, listener: web, paths: [{{ prefix: /a }}], upstream: grpc-up }}\n\
         \x20 - {{ name: b, listener: web, paths: [{{ prefix: /b }}], upstream: grpc-down }}\n\
         \x20 - {{ name: c, listener: web, upstream: tls }}\n\
         upstreams:\n\
         \x20 - {{ name: grpc-up, protocol: h2c, endpoints: [\"{serving}\"], health: {{ active: {{ grpc_service: shop, {check} }} }} }}\n\
         \x20 - {{ name: grpc-down, protocol: h2c, endpoints: [\"{not_serving}\"], health: {{ active: {{ grpc_service: \"\", {check} }} }} }}\n\
         \x20 - {{ name: tls, protocol: h2, tls: {{ sni: api.internal, ca_file: \"{ca}\" }}, endpoints: [\"{t}\"], health: {{ active: {{ http_path: /healthz, {check} }} }} }}\n",
        ca = ca_file.display(),
        t = tls_backend.address,
    );
    let sluice = Sluice::start(&body);
    wait_until("every endpoint checked", READY_TIMEOUT, || {
        ["grpc-up", "grpc-down", "tls"]
            .iter()
            .all(|name| verdict(&sluice, name).0 != "unknown")
    });
    let (health, detail) = verdict(&sluice, "grpc-up");
    assert_eq!(health, "healthy", "{detail}");
    assert!(detail.contains("SERVING"), "{detail}");
    let (health, detail) = verdict(&sluice, "grpc-down");
    assert_eq!(health, "unhealthy", "{detail}");
    assert!(detail.contains("NOT_SERVING"), "{detail}");
    let (health, detail) = verdict(&sluice, "tls");
    assert_eq!(health, "healthy", "{detail}");
    assert_eq!(detail, "GET /healthz: 200");
}
