//! L4 TCP routes through the real binary: relaying, weighted backends, half-close, idle
//! timeout, connect
//! retries, and sessions that outlive reloads, route removal, endpoint changes and a
//! graceful upgrade.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

fn config(sql: SocketAddr, endpoints: &[String], with_route: bool, extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let routes = if with_route {
        "routes: [{ name: db, listener: sql, upstream: db }]\n"
    } else {
        "routes: []\n"
    };
    format!(
        "listeners: [{{ name: sql, listen: \"{sql}\", protocol: tcp }}]\n{routes}\
         upstreams:\n  - {{ name: db, protocol: tcp, endpoints: [{}]{extra} }}\n",
        list.join(", ")
    )
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect to the tcp listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// FNV-1a, to compare megabytes without keeping two copies around.
fn checksum(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Deterministic pseudo-random bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Sends `len` bytes while reading the echo concurrently; checks both checksums.
fn transfer_both_ways(stream: &TcpStream, len: usize) {
    let data = payload(len);
    let sent = checksum(&data, 0xcbf2_9ce4_8422_2325);
    let mut writer = stream.try_clone().expect("clone stream");
    let sender = thread::spawn(move || writer.write_all(&data).expect("send megabytes"));
    let mut reader = stream.try_clone().expect("clone stream");
    let (mut received, mut hash) = (0, 0xcbf2_9ce4_8422_2325u64);
    let mut buffer = vec![0; 64 * 1024];
    while received < len {
        let n = reader
            .read(&mut buffer[..(len - received).min(64 * 1024)])
            .expect("read echo");
        assert!(n > 0, "connection closed after {received} of {len} bytes");
        hash = checksum(&buffer[..n], hash);
        received += n;
    }
    sender.join().expect("sender thread");
    assert_eq!(hash, sent, "the echoed bytes differ from the sent ones");
}

/// Whether sluice closes a new connection at once (no route).
fn closed_at_once(address: SocketAddr) -> bool {
    let mut stream = connect(address);
    let _ = stream.write_all(b"anyone?");
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn session_survives_reloads_route_removal_endpoint_change_and_upgrade() {
    let (a, b) = (TcpEcho::start(), TcpEcho::start());
    let (a_addr, b_addr) = (a.address.to_string(), b.address.to_string());
    let sql = listen_address();
    let mut old = Sluice::start_with_server(
        &config(sql, std::slice::from_ref(&a_addr), true, ""),
        "watch_config: false, grace_period: 30s",
    );
    let mut session = connect(sql);
    echo(&mut session, b"hello");
    assert_eq!(a.accepts(), 1);

    // 20 reloads with changed endpoints; every other one removes the session's endpoint.
    for i in 0..20 {
        let endpoints = if i % 2 == 0 {
            vec![a_addr.clone(), b_addr.clone()]
        } else {
            vec![b_addr.clone()]
        };
        old.reload(&config(sql, &endpoints, true, ""));
        echo(&mut session, format!("after reload {i}").as_bytes());
    }
    // The route goes away: new connections are closed, the session keeps going.
    old.reload(&config(sql, std::slice::from_ref(&b_addr), false, ""));
    assert!(
        closed_at_once(sql),
        "a connection without a route is closed"
    );
    echo(&mut session, b"after the route was removed");

    // Route back (the successor reads this file), then a graceful upgrade.
    old.reload(&config(sql, std::slice::from_ref(&b_addr), true, ""));
    let quit_sent = Instant::now();
    let successor = old.upgrade();
    // New connections are served (by either process while both hold the sockets).
    let mut fresh = connect(sql);
    echo(&mut fresh, b"a new connection");
    drop(fresh);
    echo(&mut session, b"still on the old process");
    wait_until("the old process to stop accepting", READY_TIMEOUT, || {
        old.stderr()
            .contains("listeners stopped; waiting for 1 open")
    });
    transfer_both_ways(&session, 4 << 20);
    echo(&mut session, b"after four megabytes");

    // The client closes: the backend's reply after EOF arrives, then EOF.
    session.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    session.read_to_end(&mut rest).expect("read to EOF");
    assert_eq!(rest, TCP_EOF_REPLY);
    let lived = old
        .wait_exit(Duration::from_secs(30))
        .map(|_| quit_sent.elapsed());
    println!("tcp: session closed by the client; the old process lived {lived:?} after SIGQUIT");
    assert!(lived.is_some(), "{}", old.stderr());
    assert!(
        old.stderr().contains("nothing left open"),
        "{}",
        old.stderr()
    );
    let records = old.access_log();
    let record = records
        .iter()
        .find(|r| {
            r["proto"] == "tcp" && r["ended"] == "closed" && r["bytes_in"].as_u64() > Some(4 << 20)
        })
        .unwrap_or_else(|| panic!("no access-log line for the session: {records:?}"));
    assert_eq!(record["route"], "db");
    assert_eq!(record["attempts"][0]["endpoint"], a_addr.as_str());
    drop(successor);
}

#[test]
fn half_close_reaches_the_backend_and_its_reply_still_flows_back() {
    let backend = TcpEcho::start();
    let sql = listen_address();
    let sluice = Sluice::start(&config(sql, &[backend.address.to_string()], true, ""));
    let mut stream = connect(sql);
    stream.write_all(b"ping").expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut received = Vec::new();
    stream.read_to_end(&mut received).expect("read to EOF");
    assert_eq!(received, [&b"ping"[..], TCP_EOF_REPLY].concat());
    wait_until("the backend side to close", READY_TIMEOUT, || {
        backend.open_connections() == 0
    });
    sluice.wait_metric("sluice_tcp_connections_active{route=\"db\"}", 0.0);
    assert_eq!(
        sluice.metric("sluice_tcp_connections_total{route=\"db\"}"),
        1.0
    );
    assert_eq!(
        sluice.metric("sluice_tcp_bytes_total{direction=\"out\",route=\"db\"}"),
        (4 + TCP_EOF_REPLY.len()) as f64
    );
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let backend = TcpEcho::start();
    let sql = listen_address();
    let sluice = Sluice::start(&config(
        sql,
        &[backend.address.to_string()],
        true,
        ", timeouts: { idle: 300ms }",
    ));
    let mut stream = connect(sql);
    echo(&mut stream, b"then silence");
    let quiet_since = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(stream.read(&mut byte).expect("EOF"), 0);
    let closed_after = quiet_since.elapsed();
    println!("tcp: idle connection closed after {closed_after:?} (idle: 300ms)");
    // sluice's idle clock starts when it relays the last byte, a little before this client
    // has read it (a run measured 299.9 ms): allow that much, not a whole early close.
    assert!(
        closed_after >= Duration::from_millis(280),
        "{closed_after:?}"
    );
    let records = sluice.wait_access_log(1);
    assert_eq!(records[0]["ended"], "idle_timeout");
}

#[test]
fn connect_failures_try_another_endpoint() {
    let backend = TcpEcho::start();
    let sql = listen_address();
    let sluice = Sluice::start(&config(
        sql,
        &[refused_address().to_string(), backend.address.to_string()],
        true,
        "",
    ));
    for i in 0..6 {
        let mut stream = connect(sql);
        echo(&mut stream, format!("connection {i}").as_bytes());
    }
    let records = sluice.wait_access_log(6);
    let retried = records
        .iter()
        .filter(|r| r["attempts"].as_array().map_or(0, Vec::len) == 2)
        .count();
    assert!(retried > 0, "no connection was retried: {records:?}");
    for record in &records {
        let attempts = record["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.last().expect("an attempt")["result"], "ok");
        if attempts.len() == 2 {
            assert_eq!(attempts[0]["result"], "connect_refused");
        }
    }
}

#[test]
fn a_tcp_route_with_weighted_backends_sends_each_connection_to_one_by_weight() {
    let (heavy, light, idle) = (TcpEcho::start(), TcpEcho::start(), TcpEcho::start());
    let sql = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: sql, listen: \"{sql}\", protocol: tcp }}]\n\
         routes:\n\
         \x20 - name: db\n\
         \x20   listener: sql\n\
         \x20   backends: [{{ upstream: heavy, weight: 3 }}, {{ upstream: light, weight: 1 }}, \
         {{ upstream: idle, weight: 0 }}]\n\
         upstreams:\n\
         \x20 - {{ name: heavy, protocol: tcp, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: light, protocol: tcp, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: idle, protocol: tcp, endpoints: [\"{}\"] }}\n",
        heavy.address, light.address, idle.address
    ));
    let total = 400;
    for i in 0..total {
        let mut stream = connect(sql);
        echo(&mut stream, format!("connection {i}").as_bytes());
    }
    // A 3:1 split of 400 connections: 300 expected on `heavy`; 60 either way is more than
    // six standard deviations (8.7).
    let (h, l) = (heavy.accepts(), light.accepts());
    assert_eq!(h + l, total, "every connection reached one backend");
    assert!(
        (240..=360).contains(&h),
        "heavy took {h} of {total}, light {l}"
    );
    assert_eq!(
        idle.accepts(),
        0,
        "a backend of weight 0 takes no connection"
    );
}
