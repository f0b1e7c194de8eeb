//! A byte-exact HTTP/1.1 backend: it records each request as it arrived on the wire (head
//! bytes, framing, body) and checks that its framing is unambiguous, so tests can assert what
//! sluice forwards, not what a lenient parser makes of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// How the backend answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawAnswer {
    /// `200` with a `content-length` body: the request target.
    Length,
    /// `200` without length: the body (the request target) ends when the backend closes.
    CloseDelimited,
    /// `200` with a chunked body, announcing and sending a trailer field `x-checksum`.
    ChunkedWithTrailer,
    /// `200` with a length and `connection: close`, then close: one request per connection,
    /// as a pre-forked sync worker (gunicorn, php-fpm) serves.
    LengthThenClose,
}

/// One request as it reached the backend.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// The request line, e.g. `GET /a HTTP/1.1`.
    pub line: String,
    /// Header lines in arrival order, names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted connection (1-based) carried it.
    pub connection: usize,
    /// Why the framing was ambiguous (several lengths, lengths and codings, other codings).
    pub framing_error: Option<String>,
}

impl RawRequest {
    /// The request target of the request line.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of header `name` (lower-case).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The backend; stops accepting when dropped.
pub struct RawBackend {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<RawRequest>>>,
    accepts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawBackend {
    pub fn start(answer: RawAnswer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw backend");
        let address = listener.local_addr().expect("raw backend address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, a, st) = (seen.clone(), accepts.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let connection = a.fetch_add(1, Ordering::SeqCst) + 1;
                let s = s.clone();
                thread::spawn(move || serve(stream, connection, answer, &s));
            }
        });
        Self {
            address,
            seen,
            accepts,
            stop,
        }
    }

    /// A backend of `workers` sync workers: each accepts one connection, serves its one
    /// request (reading the whole body first) and closes it before accepting the next.
    pub fn start_workers(workers: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind worker backend");
        let address = listener.local_addr().expect("worker backend address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..workers {
            let listener = listener.try_clone().expect("clone listener");
            let (s, a, st) = (seen.clone(), accepts.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if st.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let connection = a.fetch_add(1, Ordering::SeqCst) + 1;
                    serve(stream, connection, RawAnswer::LengthThenClose, &s);
                }
            });
        }
        Self {
            address,
            seen,
            accepts,
            stop,
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.seen.lock().expect("raw backend lock").clone()
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.address);
    }
}

fn serve(stream: TcpStream, connection: usize, answer: RawAnswer, seen: &Mutex<Vec<RawRequest>>) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader, connection) {
        let target = request.target().to_string();
        let close = request
            .all("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"))
            || request.framing_error.is_some();
        seen.lock().expect("raw backend lock").push(request);
        let response = match answer {
            RawAnswer::Length => format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}",
                target.len()
            ),
            RawAnswer::ChunkedWithTrailer => format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
                 {:x}\r\n{target}\r\n0\r\nx-checksum: 1234\r\n\r\n",
                target.len()
            ),
            RawAnswer::LengthThenClose => format!(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{target}",
                target.len()
            ),
            RawAnswer::CloseDelimited => {
                format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{target}")
            }
        };
        if reader.get_mut().write_all(response.as_bytes()).is_err()
            || close
            || matches!(
                answer,
                RawAnswer::CloseDelimited | RawAnswer::LengthThenClose
            )
        {
            return;
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    Some(
        String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string(),
    )
}

fn read_request(reader: &mut BufReader<TcpStream>, connection: usize) -> Option<RawRequest> {
    let line = read_line(reader)?;
    let mut headers = Vec::new();
    loop {
        let header = read_line(reader)?;
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = RawRequest {
        line,
        headers,
        body: Vec::new(),
        connection,
        framing_error: None,
    };
    let lengths = request.all("content-length");
    let codings = request.all("transfer-encoding");
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => {}
        ([length], []) => match length.parse::<usize>() {
            Ok(n) => {
                let mut body = vec![0; n];
                reader.read_exact(&mut body).ok()?;
                request.body = body;
            }
            Err(_) => request.framing_error = Some(format!("content-length {length:?}")),
        },
        ([], ["chunked"]) => request.body = read_chunked(reader)?,
        _ => {
            request.framing_error = Some(format!("lengths {lengths:?}, codings {codings:?}"));
        }
    }
    Some(request)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            // Trailers up to the blank line.
            while !read_line(reader)?.is_empty() {}
            return Some(body);
        }
        let mut chunk = vec![0; size];
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk);
        read_line(reader)?;
    }
}

/// Sends `bytes` on a new connection to `address`.
pub fn exchange(address: SocketAddr, bytes: &[u8]) -> RawExchange {
    let mut stream = TcpStream::connect(address).expect("connect to sluice");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("read timeout");
    stream.write_all(bytes).expect("send raw request");
    RawExchange { stream }
}

/// A client connection holding raw request bytes already sent.
pub struct RawExchange {
    pub stream: TcpStream,
}

impl RawExchange {
    /// Reads everything until the server closes the connection (fails the test after 20 s).
    pub fn read_to_close(mut self) -> String {
        let mut out = Vec::new();
        self.stream
            .read_to_end(&mut out)
            .expect("server closes the connection");
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The status codes of the responses in `text`, in order (the raw backend's bodies are
/// request targets, which never hold a status line).
pub fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text[i..].split(' ').nth(1)?.parse().ok())
        .collect()
}

/// Sends `head` on a new connection to `address`, then one byte every 100 ms (well inside any
/// per-read timeout) until the server closes the connection, for at most 30 s. Returns what
/// the server answered and whether it closed the connection on the trickle.
pub fn trickle_until_closed(address: SocketAddr, head: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("read timeout");
    stream.write_all(head).expect("head");
    let mut writer = stream.try_clone().expect("clone");
    let trickle = thread::spawn(move || {
        for _ in 0..300 {
            if writer.write_all(b"a").is_err() {
                return true;
            }
            thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let closed = trickle.join().expect("trickle thread");
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}
