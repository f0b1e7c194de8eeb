//! Live reload: SIGHUP and file-content changes swap the config without closing client
//! connections or pooled upstream connections; a bad file is rejected and the old config
//! keeps serving.

mod support;

use std::net::SocketAddr;
use support::*;

fn config(web: SocketAddr, route_to: &str, a: &Backend, b: &Backend) -> String {
    format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - {{ name: moving, listener: web, paths: [{{ prefix: /moving }}], upstream: {route_to} }}\n\
         \x20 - {{ name: fixed, listener: web, paths: [{{ prefix: /fixed }}], upstream: a }}\n\
         upstreams:\n\
         \x20 - {{ name: a, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: b, endpoints: [\"{}\"] }}\n",
        a.address, b.address
    )
}

#[test]
fn sighup_swaps_routes_without_closing_connections() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, "a", &a, &b));
    let mut client = Client::connect(web);
    let client_port = client.local_address();
    assert_eq!(client.get("t", "/moving").backend(), "a");
    assert_eq!(client.get("t", "/fixed").backend(), "a");
    let a_connections = a.accepts();

    sluice.reload(&config(web, "b", &a, &b));
    assert_eq!(sluice.generation(), 2);
    assert!(
        !client.is_closed_by_peer(),
        "the idle client connection survived the reload"
    );
    assert_eq!(client.local_address(), client_port);
    assert_eq!(
        client.get("t", "/moving").backend(),
        "b",
        "the changed route took effect"
    );
    assert_eq!(client.get("t", "/fixed").backend(), "a");
    assert_eq!(
        a.accepts(),
        a_connections,
        "the pooled connection to an endpoint that remains was reused"
    );
    sluice.wait_metric("sluice_config_reloads_total{result=\"ok\"}", 1.0);
    sluice.wait_metric("sluice_config_generation", 2.0);
}

#[test]
fn bad_file_is_rejected_and_old_routes_keep_answering() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let mut sluice = Sluice::start(&config(web, "a", &a, &b));
    let mut client = Client::connect(web);
    assert_eq!(client.get("t", "/moving").backend(), "a");

    // Semantically bad: routes to an upstream that does not exist.
    sluice.write_config(&config(web, "nowhere", &a, &b));
    sluice.sighup();
    wait_until("the rejected reload to be counted", READY_TIMEOUT, || {
        sluice.metric("sluice_config_reloads_total{result=\"error\"}") == 1.0
    });
    // Syntactically bad.
    sluice.write_raw_config("listeners: [ { name: web\n");
    sluice.sighup();
    wait_until("the second rejected reload", READY_TIMEOUT, || {
        sluice.metric("sluice_config_reloads_total{result=\"error\"}") == 2.0
    });
    assert!(sluice.is_running());
    assert_eq!(sluice.generation(), 1);
    assert_eq!(client.get("t", "/moving").backend(), "a");
    assert_eq!(get(web, "/fixed").backend(), "a");
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("undefined upstream \"nowhere\"") && stderr.contains("sluice.yaml:"),
        "the rejection is logged with its location:\n{stderr}"
    );
}

#[test]
fn changing_listeners_by_reload_is_refused() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, "a", &a, &b));
    let other = listen_address();
    sluice.write_config(&config(other, "b", &a, &b));
    sluice.sighup();
    wait_until("the refused reload", READY_TIMEOUT, || {
        sluice.metric("sluice_config_reloads_total{result=\"error\"}") == 1.0
    });
    assert!(sluice.stderr().contains("the listeners changed"));
    assert_eq!(get(web, "/moving").backend(), "a");
}

#[test]
fn watch_config_reloads_when_the_file_content_changes() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start_with_server(&config(web, "a", &a, &b), "watch_config: true");
    assert_eq!(get(web, "/moving").backend(), "a");
    sluice.write_config(&config(web, "b", &a, &b));
    wait_until("the file change to be noticed", READY_TIMEOUT, || {
        sluice.generation() == 2
    });
    assert_eq!(get(web, "/moving").backend(), "b");
}

#[test]
fn requests_in_flight_finish_on_the_config_they_started_with() {
    let slow = Backend::start(
        "slow",
        Behavior::Delay(std::time::Duration::from_millis(500)),
    );
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(web, "a", &slow, &b));
    let in_flight = std::thread::spawn(move || Client::connect(web).get("t", "/moving"));
    wait_until(
        "the request to reach the slow backend",
        READY_TIMEOUT,
        || slow.requests().len() == 1,
    );
    // The new config no longer routes /moving to the slow backend's upstream.
    sluice.reload(&config(web, "b", &slow, &b));
    let response = in_flight.join().expect("client thread");
    assert_eq!(response.status, 200);
    assert_eq!(response.backend(), "slow");
    assert_eq!(get(web, "/moving").backend(), "b");
}
