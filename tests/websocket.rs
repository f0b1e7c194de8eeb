//! WebSocket through the real binary: the upgraded connection uses `timeouts.idle` instead
//! of the read timeout, is counted like a tcp connection, and outlives reloads and a
//! graceful upgrade.

mod support;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn websocket_survives_reloads_and_a_graceful_upgrade() {
    let (ws, other) = (WsEcho::start(), Backend::start("other", Behavior::Echo));
    let web = listen_address();
    let config = |extra: &str| single_upstream_config(web, &[ws.address.to_string()], extra, "");
    let mut old = Sluice::start_with_server(&config(""), "watch_config: false, grace_period: 30s");
    let mut socket = websocket_connect(web);
    echo(&mut socket, b"hello");
    for i in 0..5 {
        // Changed config each time: the upstream's endpoints change, the socket stays.
        let extra = if i % 2 == 0 {
            format!(", retry: {{ attempts: {} }}", i + 2)
        } else {
            String::new()
        };
        old.reload(&config(&extra));
        echo(&mut socket, format!("after reload {i}").as_bytes());
    }
    old.reload(&single_upstream_config(
        web,
        &[other.address.to_string()],
        "",
        "",
    ));
    echo(&mut socket, b"after its endpoint left the config");
    old.reload(&config(""));

    let quit_sent = Instant::now();
    let _successor = old.upgrade();
    wait_until("the old process to stop accepting", READY_TIMEOUT, || {
        old.stderr()
            .contains("listeners stopped; waiting for 1 open")
    });
    echo(&mut socket, b"still on the old process");
    let mut fresh = websocket_connect(web);
    echo(&mut fresh, b"a new websocket, on the successor");
    drop(fresh);
    drop(socket);
    let lived = old
        .wait_exit(Duration::from_secs(30))
        .map(|_| quit_sent.elapsed());
    println!("websocket: closed by the client; the old process lived {lived:?} after SIGQUIT");
    assert!(lived.is_some(), "{}", old.stderr());
    let records = old.access_log();
    let record = records
        .iter()
        .find(|r| r["status"] == 101)
        .unwrap_or_else(|| panic!("no access-log line for the websocket: {records:?}"));
    assert_eq!(record["ended"], "closed");
}

#[test]
fn upgraded_connection_uses_the_idle_timeout_not_the_read_timeout() {
    let ws = WsEcho::start();
    let web = listen_address();
    let sluice = Sluice::start(&single_upstream_config(
        web,
        &[ws.address.to_string()],
        ", timeouts: { read: 200ms, idle: 1500ms }",
        "",
    ));
    let mut socket = websocket_connect(web);
    sluice.wait_metric("sluice_tcp_connections_active{route=\"all\"}", 1.0);
    // Quiet for longer than the read timeout: the tunnel stays up.
    thread::sleep(Duration::from_millis(600));
    echo(&mut socket, b"after a pause longer than timeouts.read");
    let quiet_since = Instant::now();
    let mut byte = [0u8; 1];
    assert!(matches!(socket.read(&mut byte), Ok(0) | Err(_)));
    let closed_after = quiet_since.elapsed();
    println!("websocket: idle tunnel closed after {closed_after:?} (idle 1500ms, read 200ms)");
    assert!(
        closed_after >= Duration::from_millis(1400),
        "{closed_after:?}"
    );
    sluice.wait_metric("sluice_tcp_connections_active{route=\"all\"}", 0.0);
    assert_eq!(
        sluice.metric("sluice_tcp_connections_total{route=\"all\"}"),
        1.0
    );
    let records = sluice.wait_access_log(1);
    assert_eq!(records[0]["status"], 101);
    assert_eq!(records[0]["ended"], "idle_timeout");
}
