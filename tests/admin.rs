//! The admin listener: health, readiness, metrics, running config and upstreams.

mod support;

use support::*;

#[test]
fn admin_endpoints_describe_the_running_process() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\", {{ address: \"{}\", weight: 3 }}], \
         balance: consistent_hash, hash_key: \"$uri\" }}\n",
        a.address, b.address
    ));
    assert_eq!(sluice.admin_get("/healthz").map(|r| r.status), Some(200));
    assert_eq!(sluice.admin_get("/readyz").map(|r| r.status), Some(200));
    assert_eq!(sluice.admin_get("/nope").map(|r| r.status), Some(404));

    let config = sluice.admin_get("/config").expect("config").json();
    assert_eq!(config["generation"], 1);
    assert_eq!(config["config"]["upstreams"][0]["hash_key"], "$uri");
    assert_eq!(config["config"]["upstreams"][0]["hash_points"], 160);

    let upstreams = sluice.admin_get("/upstreams").expect("upstreams").json();
    let app = &upstreams["upstreams"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["balance"], "consistent_hash");
    assert_eq!(app["endpoints"][1]["address"], b.address.to_string());
    assert_eq!(app["endpoints"][1]["weight"], 3);

    for _ in 0..5 {
        assert_eq!(get(web, "/x").status, 200);
    }
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"200\",reason=\"\",route=\"all\"}",
        5.0,
    );
    sluice.wait_metric(
        "sluice_upstream_attempts_total{result=\"ok\",upstream=\"app\"}",
        5.0,
    );
    assert_eq!(
        sluice.metric("sluice_upstream_endpoints{state=\"healthy\",upstream=\"app\"}"),
        2.0
    );
    assert_eq!(sluice.metric("sluice_config_generation"), 1.0);
    sluice.wait_metric(
        "sluice_http_request_duration_seconds_count{route=\"all\"}",
        5.0,
    );
    let new = sluice.metric("sluice_upstream_connections_total{reused=\"false\",upstream=\"app\"}");
    let reused =
        sluice.metric("sluice_upstream_connections_total{reused=\"true\",upstream=\"app\"}");
    assert_eq!(new + reused, 5.0);
}
