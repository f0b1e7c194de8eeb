//! Test support: real backend servers, a small HTTP/1.1 client, and a harness that runs the
//! real `sluice` binary with a generated config, all over 127.0.0.1.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod fake_kube;
pub mod grpc;
pub mod h2_util;
pub mod ingress_objects;
pub mod otlp;
pub mod raw_backend;
pub mod redis;
pub mod tls;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a readiness poll may take before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 for sluice to listen on (checked by binding it once).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 by default): a backend or client that
    // binds port 0 can never be handed a port this returned to another test in the meantime.
    const FIRST: u16 = 20000;
    const COUNT: u16 = 10000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = (std::process::id() as usize * 97) % usize::from(COUNT);
    for _ in 0..COUNT {
        let offset = (start + NEXT.fetch_add(1, Ordering::SeqCst)) % usize::from(COUNT);
        let port = FIRST + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// An address where nothing listens: connections are refused. The port stays bound (a
/// socket that never listens, kept for the life of the test process), so a parallel test
/// cannot get it from `free_port` and start listening there.
pub fn refused_address() -> SocketAddr {
    // SAFETY: plain socket/bind/getsockname calls on a descriptor this function owns; the
    // descriptor is deliberately never closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const address).cast(), length);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut length = length;
        let named = libc::getsockname(fd, (&raw mut address).cast(), &mut length);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        SocketAddr::from(([127, 0, 0, 1], u16::from_be(address.sin_port)))
    }
}

/// Polls `condition` every 20 ms until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// What a test backend does with each request.
#[derive(Clone, Copy, Debug)]
pub enum Behavior {
    /// Answer 200 with a JSON body describing the request.
    Echo,
    /// Read the whole request, then close the connection without answering.
    CloseAfterRequest,
    /// Wait this long, then answer like `Echo`.
    Delay(Duration),
    /// Read the request and never answer (a hung process).
    Hang,
}

/// A request as a backend saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Which accepted connection (1-based) carried it.
    pub connection: usize,
    /// When it arrived.
    pub at: Instant,
}

impl SeenRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that records what it sees.
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// Connections accepted and not yet closed by the peer.
    open: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    /// Status of `GET /healthz` (answered apart from `behavior`, and not recorded).
    health_status: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// Failed tries so far per `uuid` of the suite's retry simulation (`/retry/` paths).
type RetryAttempts = Mutex<HashMap<String, u32>>;

impl Backend {
    /// Starts a backend named `name` on a free port of 127.0.0.1.
    pub fn start(name: &str, behavior: Behavior) -> Self {
        Self::start_on(name, behavior, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a backend on `address` (e.g. `127.0.0.3:PORT`: all of 127/8 is loopback, so
    /// several backends can share a port, as the pods of one EndpointSlice do).
    pub fn start_on(name: &str, behavior: Behavior, address: SocketAddr) -> Self {
        let listener = TcpListener::bind(address)
            .unwrap_or_else(|e| panic!("bind backend {name} on {address}: {e}"));
        let address = listener.local_addr().expect("backend address");
        let accepts = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let health_status = Arc::new(AtomicUsize::new(200));
        let (a, r, s, n) = (
            accepts.clone(),
            requests.clone(),
            stop.clone(),
            name.to_string(),
        );
        let h = health_status.clone();
        let o = open.clone();
        let t: Arc<RetryAttempts> = Arc::default();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let connection = a.fetch_add(1, Ordering::SeqCst) + 1;
                let (r, n, h, o, t) = (r.clone(), n.clone(), h.clone(), o.clone(), t.clone());
                o.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    serve_connection(stream, connection, behavior, &n, &r, &h, &t);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            name: name.to_string(),
            address,
            accepts,
            open,
            requests,
            health_status,
            stop,
        }
    }

    /// Makes `GET /healthz` answer `status` from now on.
    pub fn set_health_status(&self, status: u16) {
        self.health_status
            .store(usize::from(status), Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Connections accepted and still open (the backend closes its side when it reads EOF).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.address);
    }
}

fn serve_connection(
    stream: TcpStream,
    connection: usize,
    behavior: Behavior,
    name: &str,
    requests: &Mutex<Vec<SeenRequest>>,
    health_status: &AtomicUsize,
    retry_attempts: &RetryAttempts,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some((request, _body)) = read_request(&mut reader, connection) else {
            return;
        };
        if request.target == "/healthz" && !matches!(behavior, Behavior::Hang) {
            let status = health_status.load(Ordering::SeqCst);
            let response = format!("HTTP/1.1 {status} Health\r\ncontent-length: 0\r\n\r\n");
            if reader.get_mut().write_all(response.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        let delay = match behavior {
            Behavior::CloseAfterRequest => {
                let _ = reader.get_ref().shutdown(Shutdown::Both);
                return;
            }
            Behavior::Hang => {
                // Hold the connection open without answering until the peer gives up.
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Behavior::Delay(d) => d,
            Behavior::Echo if request.target.starts_with("/retry/") => {
                match simulate_retry(&request.target, retry_attempts) {
                    RetrySimulation::Echo => Duration::ZERO,
                    RetrySimulation::Status(status) => {
                        let response =
                            format!("HTTP/1.1 {status} Simulated\r\ncontent-length: 0\r\n\r\n");
                        if reader.get_mut().write_all(response.as_bytes()).is_err() {
                            return;
                        }
                        continue;
                    }
                    RetrySimulation::Reset => {
                        reset_on_close(reader.get_ref());
                        return;
                    }
                }
            }
            // The suite's echo server waits `?delay=DURATION` before answering.
            Behavior::Echo => query_delay(&request.target),
        };
        thread::sleep(delay);
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let body = serde_json::json!({
            "backend": name,
            "method": request.method,
            "target": request.target,
            "connection": connection,
            "headers": headers,
        })
        .to_string();
        let echo_set = echo_set_headers(&request);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-backend: {name}\r\n\
             x-connection: {connection}\r\n{echo_set}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            return;
        }
    }
}

/// Makes closing `stream` send a TCP reset instead of a FIN (`SO_LINGER` 0).
pub fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor `stream` owns, with a value of the size given.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// What the suite's echo server does with a `/retry/` request.
enum RetrySimulation {
    /// `succeedAfter` tries of this `uuid` have failed: answer as usual.
    Echo,
    /// Fail this try with `responseCode`.
    Status(u16),
    /// Fail this try with a TCP reset (no `responseCode`).
    Reset,
}

/// Counts a try of the request's `uuid` and says how it ends, as the suite's echo server
/// does: the first `succeedAfter` tries of a `uuid` fail. A request without both answers
/// like any other (the suite's server would answer 400; no test sends one).
fn simulate_retry(target: &str, attempts: &RetryAttempts) -> RetrySimulation {
    let (Some(uuid), Some(succeed_after)) = (
        query_param(target, "uuid"),
        query_param(target, "succeedAfter").and_then(|v| v.parse::<u32>().ok()),
    ) else {
        return RetrySimulation::Echo;
    };
    let mut attempts = attempts.lock().expect("retry attempts lock");
    let failed = attempts.entry(uuid.to_string()).or_default();
    if *failed >= succeed_after {
        return RetrySimulation::Echo;
    }
    *failed += 1;
    match query_param(target, "responseCode").and_then(|v| v.parse().ok()) {
        Some(status) => RetrySimulation::Status(status),
        None => RetrySimulation::Reset,
    }
}

/// The value of query parameter `name` in `target`, undecoded.
fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

/// The `delay` query parameter of `target` (`1s`, `500ms`, as the suite's echo server
/// reads it); zero when absent or unreadable.
fn query_delay(target: &str) -> Duration {
    query_param(target, "delay")
        .and_then(|value| {
            if let Some(ms) = value.strip_suffix("ms") {
                ms.parse::<u64>().ok().map(Duration::from_millis)
            } else {
                value
                    .strip_suffix('s')?
                    .parse::<f64>()
                    .ok()
                    .map(Duration::from_secs_f64)
            }
        })
        .unwrap_or(Duration::ZERO)
}

/// Header lines (`name: value\r\n`) for the request's `X-Echo-Set-Header`
/// (`Name:value,Name:value`): the suite's echo server sets them on its response, names as
/// given.
fn echo_set_headers(request: &SeenRequest) -> String {
    request
        .header("x-echo-set-header")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once(':')?;
            let name = name.trim();
            (!name.is_empty()).then(|| format!("{name}: {}\r\n", value.trim()))
        })
        .collect()
}

/// Reads one request (header and content-length body); `None` at EOF or on garbage.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    connection: usize,
) -> Option<(SeenRequest, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((
        SeenRequest {
            method,
            target,
            headers,
            connection,
            at: Instant::now(),
        },
        body,
    ))
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Which test backend answered (its `x-backend` header).
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
}

/// An HTTP/1.1 keepalive client connection.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects to `address`.
    pub fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).expect("connect to sluice");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// The local address of this connection (to tell connections apart).
    pub fn local_address(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().expect("local address")
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("send request");
    }

    /// Sends a request and reads its response; `None` if the connection was closed.
    pub fn try_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Response> {
        let mut request = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str("host: test.local\r\n");
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            request.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.reader.get_mut().write_all(&bytes).ok()?;
        self.read_response()
    }

    /// Like [`Self::try_request`], failing the test if the connection was closed.
    pub fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
        self.try_request(method, target, headers, b"")
            .unwrap_or_else(|| panic!("connection closed before a response to {method} {target}"))
    }

    /// `GET target` with a `Host` header.
    pub fn get(&mut self, host: &str, target: &str) -> Response {
        self.request("GET", target, &[("host", host)])
    }

    /// Reads one response; `None` at EOF.
    pub fn read_response(&mut self) -> Option<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let mut body = Vec::new();
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).ok()?;
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).ok()?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = headers.get("content-length") {
            body = vec![0; length.parse().ok()?];
            self.reader.read_exact(&mut body).ok()?;
        }
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// Whether the server has closed this connection (reads EOF without blocking long).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set read timeout");
        let mut byte = [0u8; 1];
        let closed = matches!(stream.peek(&mut byte), Ok(0));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        closed
    }
}

/// One `GET` on a fresh connection.
pub fn get(address: SocketAddr, target: &str) -> Response {
    Client::connect(address).get("test.local", target)
}

// ---------------------------------------------------------------------------------------
// sluice
// ---------------------------------------------------------------------------------------

/// `GET path` from the admin listener at `admin`; `None` if it does not answer (yet).
pub fn admin_get(admin: SocketAddr, path: &str) -> Option<Response> {
    let stream = TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut client = Client {
        reader: BufReader::new(stream),
    };
    let host = admin.to_string();
    client.try_request("GET", path, &[("host", &host)], b"")
}

/// The sluice binary: `SLUICE_BIN` if set (benchmarks point it at a release build), else
/// the one cargo built for these tests.
pub fn sluice_binary() -> String {
    std::env::var("SLUICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string())
}

/// A scratch directory for one test, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// Creates a fresh directory.
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "sluice-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self(path)
    }

    /// Writes `content` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write scratch file");
        path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `sluice -t -c` on `yaml` and returns the process output.
pub fn check_config(yaml: &str) -> (Output, PathBuf, ScratchDir) {
    let dir = ScratchDir::new();
    let path = dir.write("sluice.yaml", yaml);
    let output = Command::new(sluice_binary())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run sluice -t");
    (output, path, dir)
}

/// A running sluice process, killed on drop.
pub struct Sluice {
    child: Child,
    /// Shared with successors started by [`Sluice::start_successor`].
    pub dir: Arc<ScratchDir>,
    pub config_path: PathBuf,
    pub admin: SocketAddr,
    header: String,
    stderr_path: PathBuf,
}

impl Sluice {
    /// Starts sluice with `body` (listeners, routes, upstreams) under a generated
    /// `server`/`admin`/`access_log` header, and waits until `/readyz` answers 200.
    pub fn start(body: &str) -> Self {
        Self::start_with_server(body, "watch_config: false")
    }

    /// Starts sluice without waiting for `/readyz` (e.g. to watch readiness change).
    pub fn start_unready(body: &str) -> Self {
        Self::spawn(body, "watch_config: false")
    }

    /// Like [`Self::start`], with extra `server:` settings (one flow-mapping entry list).
    pub fn start_with_server(body: &str, server_settings: &str) -> Self {
        let mut sluice = Self::spawn(body, server_settings);
        sluice.wait_ready();
        sluice
    }

    fn spawn(body: &str, server_settings: &str) -> Self {
        Self::spawn_with_flags(body, server_settings, &[])
    }

    fn spawn_with_flags(body: &str, server_settings: &str, flags: &[&str]) -> Self {
        let dir = ScratchDir::new();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let header = Self::header(&dir, admin, server_settings);
        let config_path = dir.write("sluice.yaml", &format!("{header}{body}"));
        Self::launch(Arc::new(dir), config_path, admin, header, flags)
    }

    /// Like [`Self::start_with_server`], with extra command-line flags (e.g. `--takeover`).
    pub fn start_with_flags(body: &str, server_settings: &str, flags: &[&str]) -> Self {
        let mut sluice = Self::spawn_with_flags(body, server_settings, flags);
        sluice.wait_ready();
        sluice
    }

    /// The generated `server`/`admin`/`access_log` part of a config in `dir`.
    /// `server_settings` may override the default `grace_period: 1s`.
    pub fn header(dir: &ScratchDir, admin: SocketAddr, server_settings: &str) -> String {
        let grace = if server_settings.contains("grace_period") {
            ""
        } else {
            "grace_period: 1s, "
        };
        format!(
            "server: {{ threads: 2, {grace}upgrade_sock: {up}, pid_file: {pid}, {server_settings} }}\n\
             admin: {{ listen: \"{admin}\" }}\n\
             access_log: {{ path: {log} }}\n",
            up = dir.0.join("upgrade.sock").display(),
            pid = dir.0.join("sluice.pid").display(),
            log = dir.0.join("access.log").display(),
        )
    }

    /// Starts sluice on the config file `name` already written in `dir` (with a
    /// [`Self::header`] for `admin`) and waits until it is ready.
    pub fn start_in(dir: ScratchDir, admin: SocketAddr, name: &str) -> Self {
        let config_path = dir.0.join(name);
        let mut sluice = Self::launch(Arc::new(dir), config_path, admin, String::new(), &[]);
        sluice.wait_ready();
        sluice
    }

    fn launch(
        dir: Arc<ScratchDir>,
        config_path: PathBuf,
        admin: SocketAddr,
        header: String,
        flags: &[&str],
    ) -> Self {
        static LAUNCHES: AtomicUsize = AtomicUsize::new(0);
        let stderr_path = dir.0.join(format!(
            "stderr-{}.log",
            LAUNCHES.fetch_add(1, Ordering::SeqCst)
        ));
        let child = Command::new(sluice_binary())
            .args(flags)
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn sluice");
        Self {
            child,
            dir,
            config_path,
            admin,
            header,
            stderr_path,
        }
    }

    /// Starts `sluice -u` on the same config and directory: the successor that takes the
    /// listening sockets when this process gets SIGQUIT.
    pub fn start_successor(&self) -> Sluice {
        self.start_next(&["-u"])
    }

    /// Starts another sluice with `flags` on the same config and directory.
    pub fn start_next(&self, flags: &[&str]) -> Sluice {
        Self::launch(
            self.dir.clone(),
            self.config_path.clone(),
            self.admin,
            self.header.clone(),
            flags,
        )
    }

    /// Graceful upgrade: starts a successor, sends this process SIGQUIT, and returns the
    /// successor once it serves `/readyz` on its own (this process has stopped accepting).
    pub fn upgrade(&self) -> Sluice {
        let successor = self.start_successor();
        self.signal("QUIT");
        wait_until("the successor to take the sockets", READY_TIMEOUT, || {
            successor.stderr().contains("Bootstrap done")
        });
        successor
    }

    /// Sends signal `name` (`QUIT`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; returns how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn wait_ready(&mut self) {
        self.wait_ready_within(READY_TIMEOUT);
    }

    /// Waits until `/readyz` answers 200, failing after `timeout` (for starts that load a
    /// lot, such as thousands of Kubernetes objects in a debug build on a busy machine).
    pub fn wait_ready_within(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sluice exited early ({status}):\n{}", self.stderr());
            }
            if self.admin_get("/readyz").is_some_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sluice not ready:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What sluice wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `GET path` on the admin listener; `None` if it does not answer.
    pub fn admin_get(&self, path: &str) -> Option<Response> {
        admin_get(self.admin, path)
    }

    /// The running config generation, from `/config`.
    pub fn generation(&self) -> u64 {
        self.admin_get("/config")
            .map(|r| r.json()["generation"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The whole `/metrics` text (empty if the admin listener does not answer).
    pub fn metrics_text(&self) -> String {
        self.admin_get("/metrics")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .unwrap_or_default()
    }

    /// The value of a metric line starting with `series` (e.g. `sluice_x{a="b"}`), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        let Some(response) = self.admin_get("/metrics") else {
            return 0.0;
        };
        String::from_utf8_lossy(&response.body)
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Waits until metric `series` equals `value`: request metrics are recorded just after
    /// the response is sent, so a client can see the response before the count, and a
    /// connection gauge drops only once sluice has seen the close. (Waiting for `>= value`
    /// passed at once for a gauge expected to drop to 0, which made tests flaky.)
    pub fn wait_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let seen = self.metric(series);
            if seen == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {series} to be {value}; it is {seen}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config body (keeping the generated header) without signalling.
    pub fn write_config(&self, body: &str) {
        // Write then rename, as a ConfigMap update would, so sluice never reads half a file.
        let temp = self.dir.0.join("sluice.yaml.new");
        std::fs::write(&temp, format!("{}{body}", self.header)).expect("write config");
        std::fs::rename(&temp, &self.config_path).expect("replace config");
    }

    /// Writes raw text as the whole config file.
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Writes `body`, sends SIGHUP and waits until the generation advances.
    pub fn reload(&self, body: &str) {
        let before = self.generation();
        self.write_config(body);
        self.sighup();
        wait_until("the reload to take effect", READY_TIMEOUT, || {
            self.generation() > before
        });
    }

    /// Access-log records written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.0.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access log line is JSON"))
            .collect()
    }

    /// Waits until the access log holds at least `n` records and returns them.
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        wait_until("access log records", READY_TIMEOUT, || {
            records = self.access_log();
            records.len() >= n
        });
        records
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config body with listener `web` on `web`, a catch-all route `all` (then `routes_extra`,
/// whole `  - {...}` lines) and upstream `app` over `endpoints` (then `upstream_extra`, e.g.
/// `, balance: random`).
pub fn single_upstream_config(
    web: SocketAddr,
    endpoints: &[String],
    upstream_extra: &str,
    routes_extra: &str,
) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n  - {{ name: all, listener: web, upstream: app }}\n{routes_extra}\
         upstreams:\n  - {{ name: app, endpoints: [{}]{upstream_extra} }}\n",
        list.join(", ")
    )
}

/// The addresses of `backends`, as endpoint strings.
pub fn addresses(backends: &[&Backend]) -> Vec<String> {
    backends.iter().map(|b| b.address.to_string()).collect()
}

/// `127.0.0.1:PORT` for a fresh port, as a listener address.
pub fn listen_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------------
// TCP backend
// ---------------------------------------------------------------------------------------

/// What [`TcpEcho`] sends after the client's FIN, before closing its side.
pub const TCP_EOF_REPLY: &[u8] = b"<eof seen>";

/// A TCP backend that echoes every byte, and after the client's FIN (half-close) sends
/// [`TCP_EOF_REPLY`] and closes.
pub struct TcpEcho {
    pub address: SocketAddr,
    accepts: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TcpEcho {
    /// Starts on `address` (port 0: any free port).
    pub fn start_on(address: SocketAddr) -> Self {
        let listener = TcpListener::bind(address).expect("bind tcp echo");
        let address = listener.local_addr().expect("tcp echo address");
        let accepts = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, o, s) = (accepts.clone(), open.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                thread::spawn(move || {
                    let mut buffer = [0u8; 64 * 1024];
                    loop {
                        match stream.read(&mut buffer) {
                            Ok(0) => {
                                let _ = stream.write_all(TCP_EOF_REPLY);
                                let _ = stream.shutdown(Shutdown::Write);
                                break;
                            }
                            Ok(n) => {
                                if stream.write_all(&buffer[..n]).is_err() {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            address,
            accepts,
            open,
            stop,
        }
    }

    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Connections not yet closed by the client.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.address);
    }
}

/// A WebSocket backend: answers an upgrade request with 101, then echoes every byte (the
/// frames are opaque to a proxy, so raw bytes stand in for them).
pub struct WsEcho {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl WsEcho {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind websocket echo");
        let address = listener.local_addr().expect("websocket echo address");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    let stream = reader.get_mut();
                    let answer = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                                  connection: Upgrade\r\nsec-websocket-accept: test\r\n\r\n";
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    let mut buffer = [0u8; 16 * 1024];
                    loop {
                        match reader.read(&mut buffer) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if reader.get_mut().write_all(&buffer[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { address, stop }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.address);
    }
}

/// Opens a WebSocket through `web`: sends the upgrade request and reads the 101.
pub fn websocket_connect(web: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(web).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nhost: ws.test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        )
        .expect("send upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("read 101"),
            1,
            "closed before 101"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Sends `payload` on `stream` and reads the same bytes back (through an echo backend).
pub fn echo(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).expect("send");
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).expect("echo back");
    assert_eq!(back, payload);
}

/// `VmHWM` and `VmRSS` of `pid`, in MiB.
pub fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
