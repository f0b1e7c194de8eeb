//! Operating sluice (issue #14): signals an operator or a tool sends, logs and state an
//! operator reads, and refusing to start in a state that only looks like running.

mod support;

use std::time::Duration;
use support::*;

/// A config with listener `web` on a fresh port in front of `backend`.
fn config_for(backend: &Backend) -> (std::net::SocketAddr, String) {
    let web = listen_address();
    let body = single_upstream_config(web, &addresses(&[backend]), "", "");
    (web, body)
}

/// logrotate's `postrotate kill -USR1` must reopen the access log, not kill the edge; a
/// stray USR2 (nginx's upgrade signal), ALRM or real-time signal is logged and ignored.
#[test]
fn usr1_reopens_the_access_log_and_other_signals_are_ignored() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let mut sluice = Sluice::start(&body);
    assert_eq!(get(web, "/before").status, 200);
    sluice.wait_access_log(1);

    let log = sluice.dir.0.join("access.log");
    let rotated = sluice.dir.0.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the access log");
    sluice.signal("USR1");
    wait_until("the reopen", READY_TIMEOUT, || {
        sluice.stderr().contains("reopened")
    });
    for name in ["USR2", "ALRM", "VTALRM", "PROF", "IO", "PWR", "RTMIN+3"] {
        sluice.signal(name);
    }
    wait_until("the ignored signals' log lines", READY_TIMEOUT, || {
        sluice.stderr().matches(" ignored: sluice stops on").count() == 7
    });
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert_eq!(get(web, "/after").status, 200);

    let records = sluice.wait_access_log(1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["uri"], "/after");
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("/before"), "{old}");
    assert!(sluice.stderr().contains("SIGUSR2 ignored"));
}

/// SIGINT stops at once, also while a SIGTERM waits out its drain delay.
#[test]
fn sigint_during_the_drain_delay_stops_at_once() {
    let backend = Backend::start("a", Behavior::Echo);
    let (_, body) = config_for(&backend);
    let mut sluice = Sluice::start_with_server(&body, "watch_config: false, drain_delay: 300s");
    sluice.signal("TERM");
    wait_until("draining", READY_TIMEOUT, || {
        sluice.admin_get("/readyz").is_some_and(|r| r.status == 503)
    });
    sluice.signal("INT");
    // Well under the 300 s drain delay even on a loaded machine.
    let took = sluice.wait_exit(Duration::from_secs(60));
    assert!(took.is_some(), "still running:\n{}", sluice.stderr());
}

/// A client that leaves before the answer is logged and counted as 499 (nginx's code, which
/// ingress-nginx dashboards expect), not 0.
#[test]
fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    let backend = Backend::start("a", Behavior::Hang);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    client.send_raw(b"GET /slow HTTP/1.1\r\nhost: a.test\r\n\r\n");
    wait_until("the backend to get the request", READY_TIMEOUT, || {
        backend.requests().len() == 1
    });
    drop(client);
    let records = sluice.wait_access_log(1);
    assert_eq!(records[0]["status"], 499, "{records:?}");
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"499\",reason=\"\",route=\"all\"}",
        1.0,
    );
}

/// The access log has the fields of ingress-nginx's default format that sluice lacked.
#[test]
fn access_log_has_user_agent_referer_and_forwarded_for() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    let response = client.request(
        "GET",
        "/page",
        &[
            ("host", "a.test"),
            ("user-agent", "Mozilla/5.0 \"quoted\""),
            ("referer", "https://a.test/start"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    );
    assert_eq!(response.status, 200);
    assert_eq!(get(web, "/bare").status, 200);
    let records = sluice.wait_access_log(2);
    assert_eq!(records[0]["user_agent"], "Mozilla/5.0 \"quoted\"");
    assert_eq!(records[0]["referer"], "https://a.test/start");
    assert_eq!(records[0]["x_forwarded_for"], "203.0.113.7, 10.0.0.1");
    assert_eq!(records[1]["referer"], serde_json::Value::Null);
    assert_eq!(records[1]["x_forwarded_for"], serde_json::Value::Null);
}

/// A request still open when a stop's grace period ends gets its line, marked as cut.
#[test]
fn a_request_cut_by_the_grace_period_is_logged() {
    let backend = Backend::start("a", Behavior::Hang);
    let (web, body) = config_for(&backend);
    let mut sluice = Sluice::start_with_server(
        &body,
        "watch_config: false, drain_delay: 0s, grace_period: 1s",
    );
    let mut client = Client::connect(web);
    client.send_raw(b"GET /cut-me HTTP/1.1\r\nhost: a.test\r\n\r\n");
    wait_until("the backend to get the request", READY_TIMEOUT, || {
        backend.requests().len() == 1
    });
    sluice.signal("TERM");
    assert!(
        sluice.wait_exit(READY_TIMEOUT).is_some(),
        "{}",
        sluice.stderr()
    );
    let records = sluice.access_log();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["uri"], "/cut-me");
    assert_eq!(records[0]["ended"], "grace_period");
    assert_eq!(records[0]["status"], 503);
    assert_eq!(records[0]["route"], "all");
}
