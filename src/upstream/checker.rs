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

use super::health::{now_ms, Transition};
use super::Upstream;
use crate::config::{ActiveCheck, Probe};
use crate::observe::metrics::METRICS;
use crate::state::State;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How often the supervisor looks for a new snapshot and refreshes summaries.
const TICK: Duration = Duration::from_millis(250);
/// The first check of a new endpoint starts within this delay (not a whole interval).
const FIRST_CHECK_SPREAD: Duration = Duration::from_millis(100);
/// Enough of a response to read its status line.
const STATUS_LINE_BYTES: usize = 256;

/// Runs the active checks of every upstream of the current snapshot.
pub struct HealthChecker {
    state: Arc<State>,
}

impl HealthChecker {
    /// A checker of `state`'s upstreams.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
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
        let mut revision = 0;
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticker.tick() => {}
            }
            let snapshot = self.state.snapshot();
            if snapshot.revision != revision {
                revision = snapshot.revision;
                reconcile(&self.state, &snapshot.upstreams, &mut tasks);
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
    state: &Arc<State>,
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
        let keep = wanted.get(key).is_some_and(|(check, slow_start)| {
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
            state.clone(),
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
    state: Arc<State>,
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
        let outcome = probe(address, &check).await;
        if first {
            first = false;
            tokio::time::sleep(random_fraction_of(check.interval)).await;
        }
        let snapshot = state.snapshot();
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

/// Runs one check of `address` on a fresh connection, bounded by the check's timeout.
pub async fn probe(address: SocketAddr, check: &ActiveCheck) -> Outcome {
    match tokio::time::timeout(check.timeout, probe_inner(address, &check.probe)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::failed(
            "timeout",
            format!("no answer from {address} within {:?}", check.timeout),
        ),
    }
}

async fn probe_inner(address: SocketAddr, probe: &Probe) -> Outcome {
    let mut stream = match TcpStream::connect(address).await {
        Ok(stream) => stream,
        Err(e) => return Outcome::failed("connect_error", format!("connect to {address}: {e}")),
    };
    let Probe::Http { path, host, expect } = probe else {
        return Outcome {
            passed: true,
            result: "ok",
            detail: format!("connected to {address}"),
        };
    };
    let host = host.clone().unwrap_or_else(|| address.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Outcome::failed("error", format!("send check to {address}: {e}"));
    }
    let mut buffer = Vec::with_capacity(STATUS_LINE_BYTES);
    let mut chunk = [0u8; STATUS_LINE_BYTES];
    while !buffer.contains(&b'\n') && buffer.len() < STATUS_LINE_BYTES {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Outcome::failed("error", format!("read check answer from {address}: {e}"))
            }
        }
    }
    match parse_status(&buffer) {
        Some(status) if (expect.0..=expect.1).contains(&status) => Outcome {
            passed: true,
            result: "ok",
            detail: format!("GET {path}: {status}"),
        },
        Some(status) => Outcome::failed(
            "bad_status",
            format!("GET {path}: {status}, expected {}-{}", expect.0, expect.1),
        ),
        None => Outcome::failed(
            "error",
            format!("GET {path}: no HTTP status line from {address}"),
        ),
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\nx: y"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
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
        let outcome = probe(address, &http).await;
        assert_eq!(outcome.result, "bad_status", "{outcome:?}");
        assert!(probe(address, &check(Probe::Tcp)).await.passed);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("address")
        };
        assert_eq!(
            probe(closed, &check(Probe::Tcp)).await.result,
            "connect_error"
        );
    }
}
