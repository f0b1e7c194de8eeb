//! Upstream connection pooling: reuse under load, and `keepalive.max_requests`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use support::*;

fn config(web: SocketAddr, backend: &Backend, keepalive: &str) -> String {
    single_upstream_config(
        web,
        &addresses(&[backend]),
        &format!(", keepalive: {keepalive}"),
        "",
    )
}

/// Sends 2,000 requests from `clients` keepalive clients at once and returns how many
/// upstream connections sluice opened, after checking every request arrived and the
/// connection metric agrees.
fn upstream_connections_opened(clients: usize) -> usize {
    const TOTAL: usize = 2000;
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &backend,
        "{ max_idle: 32, idle_timeout: 60s }",
    ));
    let per_client = TOTAL / clients;
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let mut client = Client::connect(web);
                for i in 0..per_client {
                    let r = client.get("pool.test", &format!("/c{c}/{i}"));
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let total = clients * per_client;
    let accepts = backend.accepts();
    assert_eq!(backend.requests().len(), total);
    println!("keepalive: {total} requests at concurrency {clients} opened {accepts} upstream connections");
    let reused =
        sluice.metric("sluice_upstream_connections_total{reused=\"true\",upstream=\"app\"}");
    assert_eq!(reused as usize, total - accepts);
    // Pingora 0.9.1 dropped pooled connections in a race with their idle poll and logged
    // this (third_party/pingora/patches/0001).
    let log = sluice.stderr();
    assert!(
        !log.contains("failed to acquire reusable stream"),
        "pooled connections were dropped:\n{log}"
    );
    accepts
}

/// Each client has at most one request in flight, so `clients` connections carry all of
/// them; one more is allowed for a request that arrives while a finished one is being
/// returned to the pool.
#[test]
fn sequential_client_reuses_one_upstream_connection() {
    let opened = upstream_connections_opened(1);
    assert!(opened <= 2, "{opened} upstream connections for 1 client");
}

#[test]
fn two_clients_reuse_their_upstream_connections() {
    let opened = upstream_connections_opened(2);
    assert!(opened <= 3, "{opened} upstream connections for 2 clients");
}

#[test]
fn ten_clients_reuse_their_upstream_connections() {
    let opened = upstream_connections_opened(10);
    assert!(opened <= 11, "{opened} upstream connections for 10 clients");
}

#[test]
fn max_requests_closes_upstream_connections_after_n_uses() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, &backend, "{ max_requests: 5 }"));
    let mut client = Client::connect(web);
    for i in 0..50 {
        assert_eq!(client.get("pool.test", &format!("/{i}")).status, 200);
    }
    let mut per_connection: HashMap<usize, usize> = HashMap::new();
    for request in backend.requests() {
        *per_connection.entry(request.connection).or_default() += 1;
    }
    assert!(
        per_connection.values().all(|n| *n <= 5),
        "a connection carried more than 5 requests: {per_connection:?}"
    );
    assert!(
        backend.accepts() >= 10,
        "50 requests need at least 10 connections"
    );
    // The fifth request on each connection asked the backend to close it.
    let closes = backend
        .requests()
        .iter()
        .filter(|r| r.header("connection") == Some("close"))
        .count();
    assert!(closes >= 9, "{closes} requests carried Connection: close");
}

#[test]
fn max_idle_zero_disables_pooling() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&config(web, &backend, "{ max_idle: 0 }"));
    let mut client = Client::connect(web);
    for i in 0..10 {
        assert_eq!(client.get("pool.test", &format!("/{i}")).status, 200);
    }
    assert_eq!(backend.accepts(), 10);
}

#[test]
fn endpoint_removed_by_reload_loses_its_pooled_connection() {
    let (gone, kept) = (
        Backend::start("gone", Behavior::Echo),
        Backend::start("kept", Behavior::Echo),
    );
    let web = listen_address();
    let sluice = Sluice::start(&single_upstream_config(
        web,
        &addresses(&[&gone, &kept]),
        "",
        "",
    ));
    let mut client = Client::connect(web);
    for i in 0..4 {
        assert_eq!(client.get("pool.test", &format!("/{i}")).status, 200);
    }
    assert_eq!((gone.open_connections(), kept.open_connections()), (1, 1));

    sluice.reload(&single_upstream_config(web, &addresses(&[&kept]), "", ""));
    wait_until(
        "the removed endpoint's connection to close",
        READY_TIMEOUT,
        || gone.open_connections() == 0,
    );
    assert_eq!(client.get("pool.test", "/after").backend(), "kept");
    assert_eq!(
        kept.open_connections(),
        1,
        "the kept endpoint's connection stays pooled"
    );
}
