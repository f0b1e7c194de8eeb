//! The access log: one JSON object per line per request, written off the request path.
//!
//! Request handlers encode their line into a reused per-thread buffer and append it to a
//! shared queue buffer under a short lock; a dedicated thread wakes on a short timer, swaps
//! the queue for an empty buffer, writes it and flushes. No allocation, wake-up or syscall
//! per line on the request path. If the writer falls behind, lines are dropped and counted
//! rather than slowing requests down.

use super::metrics::METRICS;
use crate::config::AccessLogTarget;
use serde::{Serialize, Serializer};
use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// Bytes of lines that may wait for the writer.
const QUEUE_BYTES: usize = 16 << 20;
/// How often the writer drains the queue: the most a line waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Lines encoded and not yet written.
static QUEUE: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Set once [`open`] has opened a destination.
static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Where a line is encoded before it is queued, reused by every request of the thread.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Drain rounds the writer has completed, for [`flush`].
static ROUNDS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// A wall-clock time, written as RFC 3339 with milliseconds (no intermediate string).
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// One access-log record, as in DESIGN.md.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: Timestamp,
    pub request_id: &'a str,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub uri: &'a str,
    pub proto: &'a str,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub attempts: Vec<AttemptRecord>,
    /// How a tcp or upgraded connection ended (`closed`, `idle_timeout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<&'static str>,
}

/// One try of a request against an endpoint.
#[derive(Debug, Serialize)]
pub struct AttemptRecord {
    pub endpoint: SocketAddr,
    pub result: &'static str,
    pub status: Option<u16>,
    pub connect_ms: Option<f64>,
    pub duration_ms: f64,
    pub reused: bool,
}

/// The output the writer thread will own, between [`open`] and [`Writer`]'s start.
static PENDING: Mutex<Option<Box<dyn Write + Send>>> = Mutex::new(None);

/// Opens `target` (so a bad path fails the start) and queues records from now on. The
/// writer thread starts with the [`Writer`] service: after Pingora has daemonized (`-d`
/// forks, and a thread started before the fork would not exist in the child).
pub fn open(target: &AccessLogTarget) -> std::io::Result<()> {
    let out: Box<dyn Write + Send> = match target {
        AccessLogTarget::Off => return Ok(()),
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot open access log {}: {e}", path.display()),
                    )
                })?,
        ),
    };
    if ENABLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
    Ok(())
}

/// Whether lines are being logged (to skip building records when not).
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The background service that starts the access-log writer thread.
pub struct Writer;

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Writer {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let pending = PENDING.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut out) = pending else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&mut out));
        if let Err(e) = spawned {
            log::error!("cannot start the access log writer: {e}; access log lines are dropped");
        }
    }
}

fn write_lines(out: &mut Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut batch = Vec::new();
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        // Swap buffers so that the lock is held for a pointer swap, not for the write.
        std::mem::swap(
            &mut batch,
            &mut *QUEUE.lock().unwrap_or_else(|p| p.into_inner()),
        );
        if let Err(e) = out.write_all(&batch).and_then(|_| out.flush()) {
            log::error!("cannot write access log: {e}");
        }
        batch.clear();
        let (rounds, done) = &ROUNDS;
        *rounds.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        done.notify_all();
    }
}

/// Waits (at most a second) until every line queued before the call is written, before
/// the process exits.
pub fn flush() {
    if !is_enabled() {
        return;
    }
    let (rounds, done) = &ROUNDS;
    let guard = rounds.lock().unwrap_or_else(|p| p.into_inner());
    // The round in progress may have drained the queue before our last line arrived; the
    // round after it has not.
    let target = *guard + 2;
    let waited = done.wait_timeout_while(guard, Duration::from_secs(1), |r| *r < target);
    if waited.is_ok_and(|(_, timeout)| timeout.timed_out()) {
        log::warn!("access log writer did not flush within 1 s");
    }
}

/// Queues `record` for writing.
pub fn write(record: &Record) {
    if !is_enabled() {
        return;
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        if let Err(e) = serde_json::to_writer(&mut *line, record) {
            log::error!("cannot encode access log record: {e}");
            return;
        }
        line.push(b'\n');
        let mut queue = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() + line.len() > QUEUE_BYTES {
            drop(queue);
            METRICS
                .access_log_dropped
                .with_label_values(&["full"])
                .inc();
            return;
        }
        queue.extend_from_slice(&line);
    });
}
