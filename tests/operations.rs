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
