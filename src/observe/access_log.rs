//! The access log: one JSON object per line per request, written off the request path.
//!
//! Request handlers hand a finished line to a bounded channel; a dedicated thread wakes on a
//! short timer, writes every queued line and flushes. Waking the writer per line would cost
//! a futex wake-up and a write syscall per request. If the writer falls behind, lines are
//! dropped and counted rather than slowing requests down.

use super::metrics::METRICS;
use crate::config::AccessLogTarget;
use once_cell::sync::OnceCell;
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Lines that may wait for the writer.
const QUEUE_LINES: usize = 64 * 1024;
/// How often the writer drains the queue: the most a line waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

static SENDER: OnceCell<SyncSender<Vec<u8>>> = OnceCell::new();

/// Drain rounds the writer has completed, for [`flush`].
static ROUNDS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// One access-log record, as in DESIGN.md.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub client: Option<String>,
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
    pub endpoint: String,
    pub result: &'static str,
    pub status: Option<u16>,
    pub connect_ms: Option<f64>,
    pub duration_ms: f64,
    pub reused: bool,
}

/// The output and queue end the writer thread will own, between [`open`] and [`Writer`]'s
/// start.
type Pending = (Receiver<Vec<u8>>, Box<dyn Write + Send>);
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

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
    let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
    if SENDER.set(sender).is_err() {
        return Ok(());
    }
    *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some((receiver, out));
    Ok(())
}

/// The background service that starts the access-log writer thread.
pub struct Writer;

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Writer {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let pending = PENDING.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((receiver, mut out)) = pending else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, &mut out));
        if let Err(e) = spawned {
            log::error!("cannot start the access log writer: {e}; access log lines are dropped");
        }
    }
}

fn write_lines(receiver: Receiver<Vec<u8>>, out: &mut Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        let mut result = Ok(());
        loop {
            match receiver.try_recv() {
                Ok(line) => result = result.and_then(|_| out.write_all(&line)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Err(e) = result.and_then(|_| out.flush()) {
            log::error!("cannot write access log: {e}");
        }
        let (rounds, done) = &ROUNDS;
        *rounds.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        done.notify_all();
    }
}

/// Waits (at most a second) until every line queued before the call is written, before
/// the process exits.
pub fn flush() {
    if SENDER.get().is_none() {
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
    let Some(sender) = SENDER.get() else { return };
    let mut line = match serde_json::to_vec(record) {
        Ok(line) => line,
        Err(e) => {
            log::error!("cannot encode access log record: {e}");
            return;
        }
    };
    line.push(b'\n');
    match sender.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => METRICS
            .access_log_dropped
            .with_label_values(&["full"])
            .inc(),
        Err(TrySendError::Disconnected(_)) => METRICS
            .access_log_dropped
            .with_label_values(&["writer_gone"])
            .inc(),
    }
}
