//! The access log: one JSON object per line per request, written off the request path.
//!
//! Request handlers encode their line into a reused per-thread buffer and append it to a
//! shared queue buffer under a short lock; a dedicated thread wakes on a short timer, swaps
//! the queue for an empty buffer, writes it and flushes. No allocation, wake-up or syscall
//! per line on the request path. If the writer falls behind, lines are dropped and counted
//! rather than slowing requests down.
//!
//! SIGUSR1 asks the writer to reopen a file destination (logrotate's `postrotate`, as with
//! nginx): lines queued before the reopen go to the old file, later ones to the new.

use super::metrics::METRICS;
use super::trace_context::TraceId;
use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

/// Bytes of lines that may wait for the writer.
const QUEUE_BYTES: usize = 16 << 20;
/// How often the writer drains the queue: the most a line waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Lines encoded and not yet written.
static QUEUE: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Set once [`open`] has opened a destination.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Set by [`reopen`]; the writer reopens the file at its next round.
static REOPEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Where a line is encoded before it is queued, reused by every request of the thread.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Drain rounds the writer has completed, for [`flush`].
static ROUNDS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// A wall-clock time, written as RFC 3339 with milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

/// One access-log record, as in DESIGN.md.
#[derive(Debug)]
pub struct Record<'a> {
    pub ts: Timestamp,
    pub request_id: &'a str,
    /// The request's trace (`tracing:` set and its route traced), sampled or not: a line
    /// finds its spans by it.
    pub trace_id: Option<TraceId>,
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
    /// How a tcp or upgraded connection ended (`closed`, `idle_timeout`, ...), or
    /// `grace_period` for a request the end of a stop's grace period cut; omitted for
    /// plain requests.
    pub ended: Option<&'static str>,
    /// The request's `User-Agent`, `Referer` and `X-Forwarded-For` as the client sent them
    /// (ingress-nginx's default log format has them).
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub x_forwarded_for: Option<&'a str>,
}

/// One try of a request against an endpoint.
#[derive(Debug)]
pub struct AttemptRecord {
    pub endpoint: SocketAddr,
    pub result: &'static str,
    pub status: Option<u16>,
    pub connect_ms: Option<f64>,
    pub duration_ms: f64,
    pub reused: bool,
}

/// Where lines go: the file's path, so that it can be reopened, or standard output.
struct Output {
    path: Option<PathBuf>,
    out: Box<dyn Write + Send>,
}

/// The output the writer thread will own, between [`open`] and [`Writer`]'s start.
static PENDING: Mutex<Option<Output>> = Mutex::new(None);

/// Opens `path` for appending, creating it if needed.
fn open_file(path: &Path) -> std::io::Result<Box<dyn Write + Send>> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => Ok(Box::new(file)),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("cannot open access log {}: {e}", path.display()),
        )),
    }
}

/// Opens `target` (so a bad path fails the start) and queues records from now on. The
/// writer thread starts with the [`Writer`] service: after Pingora has daemonized (`-d`
/// forks, and a thread started before the fork would not exist in the child).
pub fn open(target: &AccessLogTarget) -> std::io::Result<()> {
    let output = match target {
        AccessLogTarget::Off => return Ok(()),
        AccessLogTarget::Stdout => Output {
            path: None,
            out: Box::new(std::io::stdout()),
        },
        AccessLogTarget::File(path) => Output {
            path: Some(path.clone()),
            out: open_file(path)?,
        },
    };
    if ENABLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(output);
    Ok(())
}

/// Asks the writer to reopen the access log file (after logrotate moved it away); lines
/// queued until then still go to the old file. No effect for stdout or `off`.
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
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
        let Some(output) = pending else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(output));
        if let Err(e) = spawned {
            log::error!("cannot start the access log writer: {e}; access log lines are dropped");
        }
    }
}

fn write_lines(output: Output) {
    let Output { path, out } = output;
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
        if REOPEN.swap(false, Ordering::Relaxed) {
            if let Some(path) = &path {
                // The old file keeps what was written; a failed open keeps writing to it.
                match open_file(path) {
                    Ok(file) => {
                        out = BufWriter::with_capacity(64 * 1024, file);
                        log::info!("access log {} reopened", path.display());
                    }
                    Err(e) => log::error!("{e}; still writing to the previous file"),
                }
            }
        }
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
        record.encode(&mut line);
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

impl Record<'_> {
    /// Appends the record as one line of JSON. Written by hand rather than with serde_json:
    /// the keys are constants, and most values need no escaping, which this checks in one
    /// pass (serde_json's encoding was the largest part of sluice's own per-request work).
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", humantime::format_rfc3339_millis(self.ts.0));
        out.extend_from_slice(b"\",\"request_id\":");
        json_string(out, self.request_id);
        out.extend_from_slice(b",\"trace_id\":");
        json_option_display(out, self.trace_id, true);
        out.extend_from_slice(b",\"listener\":");
        json_string(out, self.listener);
        out.extend_from_slice(b",\"route\":");
        json_option_string(out, self.route);
        out.extend_from_slice(b",\"client\":");
        json_option_display(out, self.client, true);
        out.extend_from_slice(b",\"method\":");
        json_string(out, self.method);
        out.extend_from_slice(b",\"host\":");
        json_string(out, self.host);
        out.extend_from_slice(b",\"uri\":");
        json_string(out, self.uri);
        out.extend_from_slice(b",\"proto\":");
        json_string(out, self.proto);
        let _ = write!(
            out,
            ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{}",
            self.status, self.bytes_in, self.bytes_out, self.duration_ms
        );
        out.extend_from_slice(b",\"upstream\":");
        json_option_string(out, self.upstream);
        out.extend_from_slice(b",\"attempts\":[");
        for (i, attempt) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(
                out,
                "{{\"endpoint\":\"{}\",\"result\":\"{}\",\"status\":",
                attempt.endpoint, attempt.result
            );
            json_option_display(out, attempt.status, false);
            out.extend_from_slice(b",\"connect_ms\":");
            json_option_display(out, attempt.connect_ms, false);
            let _ = write!(
                out,
                ",\"duration_ms\":{},\"reused\":{}}}",
                attempt.duration_ms, attempt.reused
            );
        }
        out.push(b']');
        out.extend_from_slice(b",\"user_agent\":");
        json_option_string(out, self.user_agent);
        out.extend_from_slice(b",\"referer\":");
        json_option_string(out, self.referer);
        out.extend_from_slice(b",\"x_forwarded_for\":");
        json_option_string(out, self.x_forwarded_for);
        if let Some(ended) = self.ended {
            out.extend_from_slice(b",\"ended\":");
            json_string(out, ended);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped.
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// `value` as a JSON number, or as a string when `quoted` (for values whose text needs no
/// escaping, such as addresses); `null` when absent.
fn json_option_display(out: &mut Vec<u8>, value: Option<impl std::fmt::Display>, quoted: bool) {
    match value {
        Some(value) if quoted => {
            let _ = write!(out, "\"{value}\"");
        }
        Some(value) => {
            let _ = write!(out, "{value}");
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn json_option_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_encode_as_one_json_line() {
        let record = Record {
            ts: Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)),
            request_id: "id-1",
            trace_id: Some(TraceId([0xab; 16])),
            listener: "web",
            route: Some("shop"),
            client: Some("10.0.0.7".parse().expect("ip")),
            method: "GET",
            host: "shop.test",
            uri: "/a\"b\\c\u{1}\n\u{e9}",
            proto: "HTTP/1.1",
            status: 502,
            bytes_in: 3,
            bytes_out: 44,
            duration_ms: 12.5,
            upstream: None,
            attempts: vec![AttemptRecord {
                endpoint: "10.1.0.1:8080".parse().expect("address"),
                result: "connect_refused",
                status: None,
                connect_ms: Some(0.25),
                duration_ms: 1.0,
                reused: false,
            }],
            ended: None,
            user_agent: Some("curl/8.5.0"),
            referer: None,
            x_forwarded_for: Some("1.2.3.4, 10.0.0.1"),
        };
        let mut line = Vec::new();
        record.encode(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let json: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(json["ts"], "1970-01-01T00:00:01.500Z");
        assert_eq!(json["uri"], "/a\"b\\c\u{1}\n\u{e9}");
        assert_eq!(json["client"], "10.0.0.7");
        assert_eq!(json["route"], "shop");
        assert_eq!(json["upstream"], serde_json::Value::Null);
        assert_eq!(json["status"], 502);
        assert_eq!(json["duration_ms"], 12.5);
        assert_eq!(json["attempts"][0]["endpoint"], "10.1.0.1:8080");
        assert_eq!(json["attempts"][0]["status"], serde_json::Value::Null);
        assert_eq!(json["attempts"][0]["connect_ms"], 0.25);
        assert_eq!(json["attempts"][0]["reused"], false);
        assert!(json.get("ended").is_none());
        assert_eq!(json["user_agent"], "curl/8.5.0");
        assert_eq!(json["referer"], serde_json::Value::Null);
        assert_eq!(json["x_forwarded_for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(json["trace_id"], "ab".repeat(16));
    }
}
