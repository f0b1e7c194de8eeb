//! Every metric the Grafana dashboard (k8s/grafana-dashboard.json) queries exists on
//! `/metrics` once sluice has seen some traffic of each kind.

mod support;

use std::net::{SocketAddr, TcpStream};
use support::fake_kube::{ready, slice, FakeKube};
use support::otlp::Collector;
use support::tls;
use support::*;

/// The `sluice_*` metric names in the dashboard's queries.
fn dashboard_metrics() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/grafana-dashboard.json"
    ))
    .expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut names: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("sluice_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_dashboard_metric_is_exported() {
    let names = dashboard_metrics();
    assert!(names.len() >= 12, "{names:?}");

    let port = free_port();
    let pod = Backend::start_on(
        "pod",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 2], port)),
    );
    let good = Backend::start("good", Behavior::Echo);
    let echo_backend = TcpEcho::start();
    let kube = FakeKube::start();
    kube.apply(slice(
        "web",
        "app-1",
        "app",
        ("http", port),
        &[ready("127.0.0.2")],
    ));
    let (web, sql, secure) = (listen_address(), listen_address(), listen_address());
    let certs = ScratchDir::new();
    let certificate = tls::self_signed(&certs, "secure", &["secure.test"]);
    let collector = Collector::start();
    let body = format!(
        "kubernetes: {{ api_server: \"{kube}\" }}\n\
         tracing: {{ otlp_endpoint: \"{collector}\", batch_delay: 10ms }}\n\
         listeners:\n  - {{ name: web, listen: \"{web}\" }}\n  - {{ name: sql, listen: \"{sql}\", protocol: tcp }}\n\
         \x20 - {{ name: secure, listen: \"{secure}\", tls: {{ certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}] }} }}\n\
         routes:\n  - {{ name: app, listener: web, paths: [{{ prefix: / }}], upstream: app }}\n\
         \x20 - {{ name: flaky, listener: web, paths: [{{ prefix: /flaky }}], upstream: flaky }}\n\
         \x20 - {{ name: db, listener: sql, upstream: db }}\n\
         upstreams:\n  - {{ name: app, kubernetes: {{ namespace: web, service: app, port: http }} }}\n\
         \x20 - {{ name: flaky, endpoints: [\"{refused}\", \"{good}\"], health: {{ passive: {{ consecutive_failures: 1 }} }} }}\n\
         \x20 - {{ name: db, protocol: tcp, endpoints: [\"{tcp}\"] }}\n",
        kube = kube.url(),
        collector = collector.endpoint(),
        cert = certificate.cert_path.display(),
        key = certificate.key_path.display(),
        refused = refused_address(),
        good = good.address,
        tcp = echo_backend.address,
    );
    let sluice = Sluice::start(&body);
    assert_eq!(get(web, "/").backend(), "pod");
    // One TLS handshake, and the request's spans exported.
    let handshake = TcpStream::connect(secure).expect("connect");
    drop(handshake);
    sluice.wait_metric(
        "sluice_tls_handshakes_total{listener=\"secure\",result=\"closed\"}",
        1.0,
    );
    wait_until("spans exported", READY_TIMEOUT, || {
        sluice.metric("sluice_tracing_spans_total{result=\"exported\"}") > 0.0
    });
    for i in 0..4 {
        assert_eq!(get(web, &format!("/flaky/{i}")).status, 200);
    }
    let mut stream = TcpStream::connect(sql).expect("connect");
    echo(&mut stream, b"tcp traffic");
    drop(stream);
    sluice.reload(&body);
    kube.set_down(true);
    wait_until("a discovery error", READY_TIMEOUT, || {
        sluice.metric("sluice_discovery_errors_total{upstream=\"app\"}") > 0.0
    });
    kube.set_down(false);
    sluice.wait_metric("sluice_tcp_connections_active{route=\"db\"}", 0.0);

    let metrics = sluice.admin_get("/metrics").expect("metrics").body;
    let exported = String::from_utf8_lossy(&metrics);
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            !exported
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not on /metrics: {missing:?}\n{exported}"
    );
    drop((pod, good));
}
