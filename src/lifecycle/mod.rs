//! How the process ends: draining stop (SIGTERM), graceful upgrade (SIGQUIT), fast stop
//! (SIGINT), and exiting as soon as no work is left open.
//!
//! Pingora drives the shutdown once told which kind it is; sluice decides when to tell it:
//! - SIGTERM: `/readyz` turns 503 and responses carry `Connection: close` at once; the
//!   listeners keep accepting for `server.drain_delay`, then Pingora stops them.
//! - SIGQUIT: only when a successor (`sluice -u`) is waiting on `server.upgrade_sock`.
//!   Without one, handing the sockets over would end in an outage, so sluice logs an error
//!   and keeps serving.
//! - SIGINT: stops at once, also during a SIGTERM's drain delay.
//! - SIGUSR1 reopens the access log file (logrotate). Every other signal whose default
//!   action would end the process is logged and ignored: a stray `kill -USR2` must not take
//!   an edge down without a drain. (SIGHUP is the reloader's.)
//!
//! After the listeners stop, Pingora sleeps the whole grace period whatever is left.
//! [`ExitMonitor`] ends the process as soon as no request or connection is open, or
//! when `server.grace_period` is over. Requests still open then get their access-log line
//! from the registry of [`OpenRequest`]s (`"ended":"grace_period"`), since their own tasks
//! never finish.

pub mod upgrade;

use crate::observe::access_log::{self, Record, Timestamp};
use crate::sockets;
use async_trait::async_trait;
use futures::stream::{SelectAll, StreamExt};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};

/// How long nothing must be open before the process exits: a connection accepted just
/// before the listeners stopped counts as open work only once its request head has arrived
/// (Pingora patch 0010 reads it rather than dropping the connection).
const QUIET_BEFORE_EXIT: Duration = Duration::from_millis(250);
/// How often the exit monitor looks at the open work.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// How long SIGQUIT waits for a successor to appear on the upgrade socket.
const SUCCESSOR_WAIT: Duration = Duration::from_secs(3);
/// How often `--takeover` looks for a successor on the upgrade socket.
const SUCCESSOR_POLL: Duration = Duration::from_millis(200);

/// Shards of the registry of open requests.
const REGISTRY_SHARDS: usize = 16;

/// The status logged for a request cut at the end of the grace period before any response
/// head went out: sluice failed it, so it counts as a server error.
const CUT_STATUS: u16 = 503;

/// The process's shutdown state and its open work.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    /// The shutdown and logged signals are handled (see [`Self::arm_signals`]).
    signals_armed: AtomicBool,
    /// The listening sockets went to a successor.
    handed_over: AtomicBool,
    open: AtomicUsize,
    /// Routed HTTP requests in progress, for the lines of those the grace period cuts;
    /// sharded by key so that worker threads rarely wait for one another.
    requests: [Mutex<HashMap<u64, Arc<OpenRequest>>>; REGISTRY_SHARDS],
    next_request: AtomicU64,
}

/// What the access log needs about a request in progress, should the grace period cut it.
#[derive(Debug)]
pub struct OpenRequest {
    pub request_id: String,
    pub listener: String,
    pub route: String,
    pub upstream: String,
    pub client: Option<IpAddr>,
    pub method: String,
    pub host: String,
    pub uri: String,
    pub proto: &'static str,
    pub started: Instant,
    /// The status sent to the client, once the response head is out; 0 before.
    pub status: AtomicU16,
}

impl Lifecycle {
    /// Whether a stop or upgrade has begun: not ready, and no more keepalive.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Records that the signal handlers are installed: before that, SIGTERM or SIGUSR1
    /// would end the process without a drain, so the process is not ready.
    pub fn arm_signals(&self) {
        self.signals_armed.store(true, Ordering::Relaxed);
    }

    /// Whether the signal handlers are installed.
    pub fn signals_armed(&self) -> bool {
        self.signals_armed.load(Ordering::Relaxed)
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Requests and connections in progress.
    pub fn open_work(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts one request or connection as open until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> OpenWork {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenWork {
            lifecycle: self.clone(),
            registered: None,
        }
    }

    /// The registry shard of request `key`, locked.
    fn lock_requests(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OpenRequest>>> {
        self.requests[key as usize % REGISTRY_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the access-log line of every request still open (the grace period is over
    /// and the process exits now); returns how many.
    pub fn log_cut_requests(&self) -> usize {
        let now = SystemTime::now();
        let mut count = 0;
        for shard in 0..REGISTRY_SHARDS as u64 {
            let requests = self.lock_requests(shard);
            count += requests.len();
            requests.values().for_each(|request| log_cut(request, now));
        }
        count
    }
}

/// Writes the access-log line of `request`, cut at `now`.
fn log_cut(request: &OpenRequest, now: SystemTime) {
    let status = match request.status.load(Ordering::Relaxed) {
        0 => CUT_STATUS,
        sent => sent,
    };
    access_log::write(&Record {
        ts: Timestamp(now),
        request_id: &request.request_id,
        trace_id: None,
        listener: &request.listener,
        route: Some(&request.route),
        client: request.client,
        method: &request.method,
        host: &request.host,
        uri: &request.uri,
        proto: request.proto,
        status,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: request.started.elapsed().as_secs_f64() * 1000.0,
        upstream: Some(&request.upstream),
        attempts: Vec::new(),
        ended: Some("grace_period"),
        user_agent: None,
        referer: None,
        x_forwarded_for: None,
    });
}

/// One open request or connection; the process waits for it before exiting.
#[derive(Debug)]
pub struct OpenWork {
    lifecycle: Arc<Lifecycle>,
    /// The key of the request in [`Lifecycle`]'s registry, once described.
    registered: Option<u64>,
}

impl OpenWork {
    /// Registers what the access log needs should the grace period cut this request; the
    /// returned handle takes the response status.
    pub fn describe(&mut self, request: OpenRequest) -> Arc<OpenRequest> {
        let request = Arc::new(request);
        let key = match self.registered {
            Some(key) => key,
            None => self.lifecycle.next_request.fetch_add(1, Ordering::Relaxed),
        };
        self.registered = Some(key);
        self.lifecycle
            .lock_requests(key)
            .insert(key, request.clone());
        request
    }
}

impl Drop for OpenWork {
    fn drop(&mut self) {
        if let Some(key) = self.registered {
            self.lifecycle.lock_requests(key).remove(&key);
        }
        self.lifecycle.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// sluice's answer to Pingora's "how should we shut down?".
pub struct Signals {
    pub lifecycle: Arc<Lifecycle>,
    pub drain_delay: Duration,
    pub upgrade_sock: PathBuf,
    /// `--takeover`: hand over as soon as a successor waits on the upgrade socket, without
    /// a signal (the successor is another pod that cannot signal this process).
    pub takeover: bool,
}

impl Signals {
    fn hand_over(&self, why: &str) -> ShutdownSignal {
        self.lifecycle.start_draining();
        self.lifecycle.handed_over.store(true, Ordering::Relaxed);
        log::info!(
            "{why}: handing the listening sockets to the successor on {}",
            self.upgrade_sock.display()
        );
        ShutdownSignal::GracefulUpgrade
    }
}

/// Signals that would end the process by default and that sluice does not stop on, with
/// their names for the log. Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP,
/// SIGSYS) keep their default: they mean a bug, and a core dump is what helps then.
const LOGGED_SIGNALS: [(libc::c_int, &str); 10] = [
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
];

/// One stream of every signal in [`LOGGED_SIGNALS`] and of the real-time signals, each
/// item the signal's number.
#[allow(unsafe_code)] // signal(2) for one signal tokio cannot watch.
fn logged_signals() -> SelectAll<futures::stream::BoxStream<'static, libc::c_int>> {
    // tokio cannot watch SIGRTMAX itself (its table ends below it): ignore that one quietly.
    // SAFETY: installing SIG_IGN for a signal no one else handles has no memory effects.
    if unsafe { libc::signal(libc::SIGRTMAX(), libc::SIG_IGN) } == libc::SIG_ERR {
        log::warn!(
            "cannot ignore signal {}; it ends the process",
            libc::SIGRTMAX()
        );
    }
    let realtime = (libc::SIGRTMIN()..libc::SIGRTMAX()).map(|n| (n, "a real-time signal"));
    let mut all = SelectAll::new();
    for (number, name) in LOGGED_SIGNALS.into_iter().chain(realtime) {
        match signal(SignalKind::from_raw(number)) {
            Ok(stream) => all.push(
                futures::stream::unfold(stream, move |mut stream| async move {
                    stream.recv().await.map(|()| (number, stream))
                })
                .boxed(),
            ),
            Err(e) => log::warn!("cannot handle {name} ({number}): {e}; it ends the process"),
        }
    }
    all
}

/// What sluice does on a signal of [`logged_signals`].
fn on_logged_signal(number: libc::c_int) {
    if number == libc::SIGUSR1 {
        log::info!("SIGUSR1: reopening the access log");
        access_log::reopen();
        return;
    }
    let name = LOGGED_SIGNALS
        .iter()
        .find(|(n, _)| *n == number)
        .map_or_else(|| format!("signal {number}"), |(_, name)| name.to_string());
    log::warn!(
        "{name} ignored: sluice stops on SIGTERM (draining), SIGINT (at once) and SIGQUIT \
         (upgrade), reloads on SIGHUP and reopens the access log on SIGUSR1"
    );
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut quit, mut terminate, mut interrupt) = match (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(q), Ok(t), Ok(i)) => (q, t, i),
            _ => {
                log::error!("cannot install signal handlers; stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        let mut others = logged_signals();
        self.lifecycle.arm_signals();
        let mut successor_poll = tokio::time::interval(SUCCESSOR_POLL);
        // Set by SIGTERM: when the drain delay ends and the listeners stop.
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            let drain_over = async {
                match drain_until {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = successor_poll.tick(), if self.takeover => {
                    if socket_listening(&self.upgrade_sock).await {
                        return self.hand_over("a successor is waiting (--takeover)");
                    }
                }
                Some(number) = others.next() => on_logged_signal(number),
                _ = interrupt.recv() => {
                    // Not Pingora's fast shutdown: it drops the runtimes without stopping
                    // the accept loops first, and an accept loop whose runtime is going away
                    // can spin on "Accept() failed" (gigabytes of log in seconds).
                    log::info!("SIGINT: stopping now");
                    access_log::flush();
                    std::process::exit(0);
                }
                _ = drain_over => {
                    log::info!("drain delay over: listeners stop, open work finishes");
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = terminate.recv() => {
                    if drain_until.is_some() {
                        log::info!("SIGTERM: already draining (SIGINT stops at once)");
                        continue;
                    }
                    self.lifecycle.start_draining();
                    log::info!(
                        "SIGTERM: draining; /readyz is 503, listeners stop in {:?}",
                        self.drain_delay
                    );
                    drain_until = Some(tokio::time::Instant::now() + self.drain_delay);
                }
                _ = quit.recv() => {
                    if successor_waiting(&self.upgrade_sock, SUCCESSOR_WAIT).await {
                        return self.hand_over("SIGQUIT");
                    }
                    log::error!(
                        "SIGQUIT ignored: no successor is waiting on {}; start `sluice -u -c FILE` \
                         first, then send SIGQUIT. Still serving.",
                        self.upgrade_sock.display()
                    );
                }
            }
        }
    }
}

/// [`sockets::unix_socket_listening`] on a blocking thread (it reads /proc/net/unix, which
/// can be large on a busy node).
async fn socket_listening(path: &Path) -> bool {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sockets::unix_socket_listening(&path))
        .await
        .unwrap_or(false)
}

/// Resolves at the next SIGINT (never without a handler).
async fn interrupted(interrupt: &mut Option<tokio::signal::unix::Signal>) {
    match interrupt {
        Some(interrupt) => {
            interrupt.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether a process listens on the unix socket `path` (a successor waiting for the
/// sockets), polling for up to `wait`. Read from /proc/net/unix rather than by connecting,
/// which would take the successor's one handoff connection.
async fn successor_waiting(path: &Path, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if socket_listening(path).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The background service that ends the process once Pingora has stopped the listeners:
/// as soon as no request or connection is open, or when `grace_period` is over. (A service
/// rather than a thread, so it also runs in a daemonized child.)
pub struct ExitMonitor {
    pub lifecycle: Arc<Lifecycle>,
    pub grace_period: Duration,
    /// `--takeover`: after handing over and draining, wait for SIGTERM before exiting, so
    /// a container exits only when Kubernetes stops its pod (an exit before that would
    /// restart the container next to its successor).
    pub hold_after_handover: bool,
}

#[async_trait]
impl BackgroundService for ExitMonitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Registered now, so a SIGTERM that arrives while draining is not missed.
        let mut stop_signal = if self.hold_after_handover {
            match signal(SignalKind::terminate()) {
                Ok(stream) => Some(stream),
                Err(e) => {
                    log::error!("cannot watch SIGTERM: {e}");
                    None
                }
            }
        } else {
            None
        };
        // Signals::recv has returned once the listeners stop: SIGINT is watched here from
        // then on, so it still stops the process at once during the grace period.
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| log::error!("cannot watch SIGINT while draining: {e}"))
            .ok();
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let started = Instant::now();
        log::info!(
            "listeners stopped; waiting for {} open requests/connections (grace period {:?})",
            self.lifecycle.open_work(),
            self.grace_period
        );
        // When open work was last seen.
        let mut last_open = started;
        loop {
            let open = self.lifecycle.open_work();
            if open > 0 {
                last_open = Instant::now();
            } else if last_open.elapsed() >= QUIET_BEFORE_EXIT {
                log::info!("nothing left open after {:?}; exiting", started.elapsed());
                break;
            }
            if started.elapsed() >= self.grace_period {
                let cut = self.lifecycle.log_cut_requests();
                log::warn!(
                    "grace period over; closing {open} open requests/connections \
                     ({cut} HTTP requests logged with \"ended\":\"grace_period\")"
                );
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(EXIT_POLL) => {}
                _ = interrupted(&mut interrupt) => {
                    log::info!("SIGINT: stopping now, {open} requests/connections still open");
                    break;
                }
            }
        }
        if let Some(stop) = stop_signal.as_mut() {
            if self.lifecycle.handed_over.load(Ordering::Relaxed) {
                log::info!("handed over and drained; exiting at SIGTERM (the pod's stop)");
                tokio::select! {
                    _ = stop.recv() => {}
                    _ = interrupted(&mut interrupt) => log::info!("SIGINT: stopping now"),
                }
            }
        }
        access_log::flush();
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_work_is_counted_until_dropped() {
        let lifecycle = Arc::new(Lifecycle::default());
        let first = lifecycle.track();
        let second = lifecycle.track();
        assert_eq!(lifecycle.open_work(), 2);
        drop(first);
        assert_eq!(lifecycle.open_work(), 1);
        drop(second);
        assert_eq!(lifecycle.open_work(), 0);
    }

    fn request(uri: &str) -> OpenRequest {
        OpenRequest {
            request_id: "id".into(),
            listener: "web".into(),
            route: "r".into(),
            upstream: "u".into(),
            client: None,
            method: "GET".into(),
            host: "h".into(),
            uri: uri.into(),
            proto: "HTTP/1.1",
            started: Instant::now(),
            status: AtomicU16::new(0),
        }
    }

    #[test]
    fn described_requests_are_registered_until_dropped() {
        let lifecycle = Arc::new(Lifecycle::default());
        let mut first = lifecycle.track();
        let mut second = lifecycle.track();
        first.describe(request("/a"));
        // Describing again replaces the entry, it does not add one.
        first.describe(request("/a2"));
        second.describe(request("/b"));
        assert_eq!(lifecycle.log_cut_requests(), 2);
        drop(first);
        assert_eq!(lifecycle.log_cut_requests(), 1);
        drop(second);
        assert_eq!(lifecycle.log_cut_requests(), 0);
    }
}
