//! Active health checks, in the background, never on the request path.
//!
//! pingora-load-balancing has health checks, but they do not fit here: its loop checks every
//! backend of a load balancer one after another at one frequency (no per-endpoint schedule,
//! no jitter), new backends start out healthy before any check, and health state is reset
//! when a backend's weight changes. sluice needs the opposite on all three counts, so it
//! runs one small task per (upstream, endpoint) with its own schedule and its own
//! connections, and keeps the verdict in the endpoint's state, which outlives reloads.
//!
//! A supervisor reconciles the tasks with the running snapshot after every reload, and once
//! per tick refreshes the per-upstream summaries (panic flag, gauges) and logs ejections
//! that ended.
//!
//! HTTP and gRPC checks speak the upstream's protocol: they connect with the same peer as
//! requests (TLS with the upstream's SNI and CA, HTTP/2 for `h2` and `h2c` upstreams)
//! through Pingora's connector, on a fresh connection each time (sessions are never returned
//! to the connector's pool). gRPC checks call `grpc.health.v1.Health/Check`.

use crate::model::{ActiveCheck, Probe, Timeouts};
use crate::observe::metrics::METRICS;
use crate::state::Snapshots;
use crate::upstream::health::{now_ms, Transition};
use crate::upstream::Upstream;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How often ejections that have run their time are ended and health summaries refreshed
/// (new snapshots are not polled: they arrive on the state's channel).
const TICK: Duration = Duration::from_millis(250);
/// The first check of a new endpoint starts within this delay (not a whole interval).
const FIRST_CHECK_SPREAD: Duration = Duration::from_millis(100);
/// The gRPC health service's method (grpc.health.v1).
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// The largest gRPC health answer read (a status enum: a few bytes).
const MAX_GRPC_ANSWER: usize = 1024;

/// Runs the active checks of every upstream of the current snapshot.
pub struct HealthChecker {
    /// The published snapshots: all the checker reads.
    snapshots: Snapshots,
}

impl HealthChecker {
    /// A checker of the upstreams of the `snapshots` published.
    pub fn new(snapshots: Snapshots) -> Self {
        Self { snapshots }
    }
}

/// A connector for checks: Pingora's, so TLS and HTTP/2 are those of requests.
pub fn check_connector() -> Arc<Connector> {
    Arc::new(Connector::new(None))
}

/// A running check task and the settings it runs with.
struct CheckTask {
    check: ActiveCheck,
    slow_start: bool,
    handle: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The service has one thread of its own (see server.rs); every check runs on it.
        crate::priority::lower_current_thread();
        let mut tasks: HashMap<(String, SocketAddr), CheckTask> = HashMap::new();
        let connector = check_connector();
        let mut snapshots = self.snapshots.clone();
        let mut snapshot = snapshots.borrow_and_update().clone();
        reconcile(&snapshots, &connector, &snapshot.upstreams, &mut tasks);
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    snapshot = snapshots.borrow_and_update().clone();
                    reconcile(&snapshots, &connector, &snapshot.upstreams, &mut tasks);
                    continue;
                }
                _ = ticker.tick() => {}
            }
            let now = now_ms();
            // Without health settings an upstream's counts change only when it is rebuilt,
            // and `Upstream::build` refreshes them then.
            let watched = snapshot
                .upstreams
                .iter()
                .filter(|u| u.config.health.active.is_some() || u.config.health.passive.is_some());
            for upstream in watched {
                for endpoint in upstream.endpoints.iter() {
                    if endpoint.state.health.take_ejection_end(now) {
                        log::info!(
                            "upstream {}: endpoint {} readmitted after ejection",
                            upstream.name(),
                            endpoint.address
                        );
                    }
                }
                upstream.refresh_health_summary();
            }
        }
        for (_, task) in tasks {
            task.handle.abort();
        }
    }
}

/// Starts, keeps or stops check tasks so that exactly the snapshot's endpoints with active
/// checks have one, with the current settings.
fn reconcile(
    snapshots: &Snapshots,
    connector: &Arc<Connector>,
    upstreams: &[Arc<Upstream>],
    tasks: &mut HashMap<(String, SocketAddr), CheckTask>,
) {
    let mut wanted = HashMap::new();
    for upstream in upstreams {
        let Some(check) = &upstream.config.health.active else {
            continue;
        };
        for endpoint in upstream.endpoints.iter() {
            wanted.insert(
                (upstream.name().to_string(), endpoint.address),
                (check.clone(), upstream.config.slow_start.is_some()),
            );
        }
    }
    tasks.retain(|key, task| {
        // A task ends by itself when its endpoint left the snapshot; one that came back
        // within a tick needs a new task.
        let keep = !task.handle.is_finished()
            && wanted.get(key).is_some_and(|(check, slow_start)| {
                *check == task.check && *slow_start == task.slow_start
            });
        if !keep {
            task.handle.abort();
        }
        keep
    });
    for (key, (check, slow_start)) in wanted {
        if tasks.contains_key(&key) {
            continue;
        }
        let handle = tokio::spawn(run_checks(
            snapshots.clone(),
            connector.clone(),
            key.0.clone(),
            key.1,
            check.clone(),
            slow_start,
        ));
        tasks.insert(
            key,
            CheckTask {
                check,
                slow_start,
                handle,
            },
        );
    }
}

/// Checks one endpoint forever (until aborted).
async fn run_checks(
    snapshots: Snapshots,
    connector: Arc<Connector>,
    upstream: String,
    address: SocketAddr,
    check: ActiveCheck,
    slow_start: bool,
) {
    let mut first = true;
    loop {
        // Spread checks: a new endpoint is checked soon, then at a random phase of the
        // interval, so 1,000 endpoints do not fire at once.
        let delay = if first {
            random_fraction_of(FIRST_CHECK_SPREAD.min(check.interval))
        } else {
            check.interval
        };
        tokio::time::sleep(delay).await;
        let peer = {
            let snapshot = snapshots.borrow().clone();
            let Some(current) = snapshot.upstreams.iter().find(|u| u.name() == upstream) else {
                return;
            };
            let Some(index) = current.endpoints.iter().position(|e| e.address == address) else {
                return;
            };
            let mut peer = current.peer(index, &check_timeouts(&check));
            // One stream per connection: Pingora pools an HTTP/2 connection that may carry
            // more, and the next check would ride it instead of connecting afresh.
            peer.options.max_h2_streams = 1;
            peer
        };
        let outcome = probe(&connector, &peer, address, &check).await;
        if first {
            first = false;
            tokio::time::sleep(random_fraction_of(check.interval)).await;
        }
        let snapshot = snapshots.borrow().clone();
        let Some(current) = snapshot.upstreams.iter().find(|u| u.name() == upstream) else {
            return;
        };
        let Some(endpoint) = current.endpoints.iter().find(|e| e.address == address) else {
            return;
        };
        METRICS
            .health_checks
            .with_label_values(&[&upstream, outcome.result])
            .inc();
        let transition = endpoint.state.health.record_check(
            &check,
            outcome.passed,
            outcome.result,
            outcome.detail,
            slow_start,
        );
        if let Some(transition) = transition {
            current.log_transition(endpoint, transition);
            if transition == Transition::BecameUnhealthy {
                log::warn!(
                    "upstream {upstream}: last check of {address}: {}",
                    endpoint
                        .state
                        .health
                        .last_check()
                        .map(|c| c.detail)
                        .unwrap_or_default()
                );
            }
            current.refresh_health_summary();
        }
    }
}

fn random_fraction_of(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen::<f64>())
}

/// The result of one check.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// `ok`, `bad_status`, `timeout`, `connect_error` or `error`.
    pub result: &'static str,
    pub detail: String,
}

impl Outcome {
    fn failed(result: &'static str, detail: String) -> Self {
        Self {
            passed: false,
            result,
            detail,
        }
    }
}

/// Connect, read and write timeouts of a check: each its whole timeout (the check as a
/// whole is bounded by it too).
fn check_timeouts(check: &ActiveCheck) -> Timeouts {
    Timeouts {
        connect: check.timeout,
        read: check.timeout,
        write: check.timeout,
        total: None,
        idle: check.timeout,
    }
}

/// Runs one check of `address` (reached as `peer`) on a fresh connection, bounded by the
/// check's timeout.
pub async fn probe(
    connector: &Connector,
    peer: &HttpPeer,
    address: SocketAddr,
    check: &ActiveCheck,
) -> Outcome {
    let run = async {
        match &check.probe {
            Probe::Tcp => match TcpStream::connect(address).await {
                Ok(_) => Outcome {
                    passed: true,
                    result: "ok",
                    detail: format!("connected to {address}"),
                },
                Err(e) => Outcome::failed("connect_error", format!("connect to {address}: {e}")),
            },
            Probe::Http { path, host, expect } => {
                probe_http(connector, peer, address, path, host.as_deref(), *expect).await
            }
            Probe::Grpc { service } => probe_grpc(connector, peer, address, service).await,
        }
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::failed(
            "timeout",
            format!("no answer from {address} within {:?}", check.timeout),
        ),
    }
}

/// A fresh session to `peer`, or the failed outcome.
async fn connect(
    connector: &Connector,
    peer: &HttpPeer,
    address: SocketAddr,
) -> Result<HttpSession, Outcome> {
    // Never released to the connector's pool: the next check connects again.
    match connector.get_http_session(peer).await {
        Ok((session, _)) => Ok(session),
        Err(e) => Err(Outcome::failed(
            "connect_error",
            format!(
                "connect to {address}: {}",
                crate::proxy::errors::summary(&e)
            ),
        )),
    }
}

/// `GET path` with `Host: host` (the endpoint's address by default); passes on a status in
/// `expect`.
async fn probe_http(
    connector: &Connector,
    peer: &HttpPeer,
    address: SocketAddr,
    path: &str,
    host: Option<&str>,
    expect: (u16, u16),
) -> Outcome {
    let mut session = match connect(connector, peer, address).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    let host = host.map_or_else(|| address.to_string(), str::to_string);
    let mut request = match RequestHeader::build("GET", path.as_bytes(), None) {
        Ok(request) => request,
        Err(e) => return Outcome::failed("error", format!("GET {path}: {e}")),
    };
    let headers = [
        ("host", host.as_str()),
        ("user-agent", "sluice-health-check"),
    ];
    for (name, value) in headers {
        if let Err(e) = request.insert_header(name, value) {
            return Outcome::failed("error", format!("GET {path}: header {name}: {e}"));
        }
    }
    if matches!(session, HttpSession::H1(_)) {
        // One check per connection.
        let _ = request.insert_header("connection", "close");
    }
    let sent = async {
        session.write_request_header(Box::new(request)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await
    };
    if let Err(e) = sent.await {
        return Outcome::failed(
            "error",
            format!(
                "GET {path} on {address}: {}",
                crate::proxy::errors::summary(&e)
            ),
        );
    }
    let status = session.response_header().map(|h| h.status.as_u16());
    session.shutdown().await;
    match status {
        Some(status) if (expect.0..=expect.1).contains(&status) => Outcome {
            passed: true,
            result: "ok",
            detail: format!("GET {path}: {status}"),
        },
        Some(status) => Outcome::failed(
            "bad_status",
            format!("GET {path}: {status}, expected {}-{}", expect.0, expect.1),
        ),
        None => Outcome::failed("error", format!("GET {path}: no response from {address}")),
    }
}

/// `grpc.health.v1.Health/Check` of `service`; passes on `SERVING`.
async fn probe_grpc(
    connector: &Connector,
    peer: &HttpPeer,
    address: SocketAddr,
    service: &str,
) -> Outcome {
    let mut session = match connect(connector, peer, address).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    let HttpSession::H2(h2) = &mut session else {
        return Outcome::failed(
            "error",
            format!("{address} did not speak HTTP/2, which gRPC needs"),
        );
    };
    let mut request = match RequestHeader::build("POST", GRPC_HEALTH_CHECK.as_bytes(), None) {
        Ok(request) => request,
        Err(e) => return Outcome::failed("error", format!("gRPC health check: {e}")),
    };
    let authority = address.to_string();
    let headers = [
        ("host", authority.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "sluice-health-check"),
    ];
    for (name, value) in headers {
        if let Err(e) = request.insert_header(name, value) {
            return Outcome::failed("error", format!("gRPC health check: header {name}: {e}"));
        }
    }
    let exchange = async {
        h2.write_request_header(Box::new(request), false)?;
        h2.write_request_body(grpc_health_request(service), true)
            .await?;
        h2.read_response_header().await?;
        let mut answer = Vec::new();
        while let Some(chunk) = h2.read_response_body().await? {
            if answer.len() + chunk.len() > MAX_GRPC_ANSWER {
                break;
            }
            answer.extend_from_slice(&chunk);
        }
        let trailers = h2.read_trailers().await?;
        Ok::<_, Box<pingora::Error>>((answer, trailers))
    };
    let (answer, trailers) = match exchange.await {
        Ok(exchange) => exchange,
        Err(e) => {
            return Outcome::failed(
                "error",
                format!(
                    "gRPC health check of {address}: {}",
                    crate::proxy::errors::summary(&e)
                ),
            )
        }
    };
    // grpc-status in the trailers, or in the headers of a trailers-only answer.
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| {
            h2.response_header()
                .and_then(|h| h.headers.get("grpc-status"))
        })
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if grpc_status != "0" {
        return Outcome::failed(
            "bad_status",
            format!("gRPC health check of {service:?}: grpc-status {grpc_status:?}"),
        );
    }
    match grpc_serving_status(&answer) {
        Some(1) => Outcome {
            passed: true,
            result: "ok",
            detail: format!("gRPC health of {service:?}: SERVING"),
        },
        Some(status) => Outcome::failed(
            "bad_status",
            format!("gRPC health of {service:?}: {}", grpc_status_name(status)),
        ),
        None => Outcome::failed(
            "error",
            format!("gRPC health of {service:?}: unreadable answer"),
        ),
    }
}

/// A length-prefixed gRPC message of `HealthCheckRequest { service }` (protobuf field 1, a
/// string).
fn grpc_health_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The `status` (protobuf field 1, an enum) of a length-prefixed `HealthCheckResponse`;
/// absent means 0 (UNKNOWN). `None` when the bytes are not such a message.
fn grpc_serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let length = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut message = rest.get(4..4 + length)?;
    let mut status = 0;
    while let Some((&tag, rest)) = message.split_first() {
        let (value, rest) = read_varint(rest)?;
        match tag {
            0x08 => status = value,
            // Other varint fields are skipped; anything else is not this message.
            t if t & 0x07 == 0 => {}
            _ => return None,
        }
        message = rest;
    }
    Some(status)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn grpc_status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn grpc_health_messages() {
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_health_request("shop")[..],
            &[0, 0, 0, 0, 6, 0x0a, 4, b's', b'h', b'o', b'p']
        );
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        // An empty message is the default status, UNKNOWN.
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(grpc_serving_status(&[1, 0, 0, 0, 0]), None);
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 9, 0x08]), None);
    }

    #[tokio::test]
    async fn probes_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let check = |probe| ActiveCheck {
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_after: 1,
            unhealthy_after: 1,
        };
        let http = check(Probe::Http {
            path: "/healthz".into(),
            host: None,
            expect: (200, 399),
        });
        let connector = check_connector();
        let peer = |address| HttpPeer::new(address, false, String::new());
        let outcome = probe(&connector, &peer(address), address, &http).await;
        assert_eq!(outcome.result, "bad_status", "{outcome:?}");
        let tcp = check(Probe::Tcp);
        assert!(
            probe(&connector, &peer(address), address, &tcp)
                .await
                .passed
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("address")
        };
        assert_eq!(
            probe(&connector, &peer(closed), closed, &tcp).await.result,
            "connect_error"
        );
        assert_eq!(
            probe(&connector, &peer(closed), closed, &http).await.result,
            "connect_error"
        );
    }
}
