//! Live reload: SIGHUP and file-content changes swap the config without closing client
//! connections or pooled upstream connections; a bad file is rejected and the old config
//! keeps serving.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
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

/// Keepalive clients sending POSTs, each with a unique target, until stopped.
struct PostLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<Vec<(String, u16)>>>,
}

impl PostLoad {
    fn start(web: SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let workers = (0..clients)
            .map(|c| {
                let (stop, answered) = (stop.clone(), answered.clone());
                thread::spawn(move || {
                    let mut client = Client::connect(web);
                    let mut outcomes = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let target = format!("/post/{c}/{i}");
                        i += 1;
                        let response = client.try_request(
                            "POST",
                            &target,
                            &[("host", "pool.test")],
                            b"one order",
                        );
                        // 0: the connection closed without an answer.
                        let status = response.as_ref().map_or(0, |r| r.status);
                        if status != 200
                            || response.is_some_and(|r| r.header("connection") == Some("close"))
                        {
                            client = Client::connect(web);
                        }
                        outcomes.push((target, status));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes
                })
            })
            .collect();
        Self {
            stop,
            answered,
            workers,
        }
    }

    /// Waits until `count` more requests were answered, so each config is used under load.
    fn wait_for_more(&self, count: usize) {
        let start = self.answered.load(Ordering::Relaxed);
        wait_until("requests to flow", READY_TIMEOUT, || {
            self.answered.load(Ordering::Relaxed) >= start + count
        });
    }

    /// Stops the clients and checks that every POST got a 200 and reached exactly one
    /// backend exactly once.
    fn finish(self, backends: &[&Backend]) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<(String, u16)> = self
            .workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect();
        let failed: Vec<_> = outcomes.iter().filter(|(_, s)| *s != 200).collect();
        assert!(
            failed.is_empty(),
            "{} of {} POSTs failed: {failed:?}",
            failed.len(),
            outcomes.len()
        );
        let mut seen: HashMap<String, usize> = HashMap::new();
        for backend in backends {
            for request in backend.requests() {
                *seen.entry(request.target).or_default() += 1;
            }
        }
        let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicated.is_empty(),
            "POSTs reached the backends more than once: {duplicated:?}"
        );
        assert_eq!(
            seen.len(),
            outcomes.len(),
            "every answered POST reached a backend"
        );
        outcomes.len()
    }
}

/// Reloads that swap the whole endpoint set close the pooled connections of the endpoints
/// that left while POSTs keep flowing: none may fail or reach a backend twice.
#[test]
fn reloads_alternating_endpoint_sets_under_post_load_lose_nothing() {
    let sets = [
        [
            Backend::start("a1", Behavior::Echo),
            Backend::start("a2", Behavior::Echo),
        ],
        [
            Backend::start("b1", Behavior::Echo),
            Backend::start("b2", Behavior::Echo),
        ],
    ];
    let web = listen_address();
    let config_of =
        |set: &[Backend; 2]| single_upstream_config(web, &addresses(&[&set[0], &set[1]]), "", "");
    let sluice = Sluice::start(&config_of(&sets[0]));
    let load = PostLoad::start(web, 10);
    load.wait_for_more(100);
    for reload in 1..=20 {
        sluice.reload(&config_of(&sets[reload % 2]));
        load.wait_for_more(100);
    }
    let all: Vec<&Backend> = sets.iter().flatten().collect();
    let total = load.finish(&all);
    println!("20 reloads under POST load: {total} POSTs, all 200, none duplicated");
    // The last reload removed set b: its pooled connections were closed.
    wait_until("set b's connections to close", READY_TIMEOUT, || {
        sets[1].iter().all(|b| b.open_connections() == 0)
    });
}

/// Removing one endpoint of two and adding it back, ten times, under POST load.
#[test]
fn endpoint_removals_under_post_load_lose_nothing() {
    let (kept, leaving) = (
        Backend::start("kept", Behavior::Echo),
        Backend::start("leaving", Behavior::Echo),
    );
    let web = listen_address();
    let both = single_upstream_config(web, &addresses(&[&kept, &leaving]), "", "");
    let one = single_upstream_config(web, &addresses(&[&kept]), "", "");
    let sluice = Sluice::start(&both);
    let load = PostLoad::start(web, 10);
    load.wait_for_more(100);
    for _ in 0..10 {
        sluice.reload(&one);
        load.wait_for_more(100);
        sluice.reload(&both);
        load.wait_for_more(100);
    }
    let total = load.finish(&[&kept, &leaving]);
    println!("10 endpoint removals under POST load: {total} POSTs, all 200, none duplicated");
}

/// `sluice_config_last_reload_success_timestamp_seconds` is set at start and moves with an
/// accepted reload, not with a rejected one.
#[test]
fn the_last_successful_load_is_exported() {
    let backend = Backend::start("a", Behavior::Echo);
    let web = listen_address();
    let body = single_upstream_config(web, &addresses(&[&backend]), "", "");
    // Reloads by SIGHUP only, so each one is counted once.
    let sluice = Sluice::start_with_server(&body, "watch_config: false");
    let series = "sluice_config_last_reload_success_timestamp_seconds";
    let at_start = sluice.metric(series);
    assert!(at_start > 1.7e9, "{series} at start: {at_start}");

    sluice.write_config(&body.replace("upstream: app", "upstream: nowhere"));
    sluice.sighup();
    sluice.wait_metric("sluice_config_reloads_total{result=\"error\"}", 1.0);
    assert_eq!(
        sluice.metric(series),
        at_start,
        "a rejected reload moved it"
    );

    sluice.write_config(&body);
    sluice.sighup();
    // The timestamp is set before the count moves.
    sluice.wait_metric("sluice_config_reloads_total{result=\"ok\"}", 1.0);
    assert!(sluice.metric(series) >= at_start);
}
