//! Property tests of the raw HTTP/1 request path (issue #13): random valid and invalid
//! request heads and bodies (framing, codings, paths, hosts, versions, pipelining) sent to
//! the real binary in front of a byte-exact backend.
//!
//! Invariants, for every case:
//! - each request sluice forwarded reached the backend once, with one unambiguous framing,
//!   the body the client sent, and a normal path (no dot segments, no empty segments, no
//!   encoded unreserved characters);
//! - no byte of a refused request, or of a request after it on the connection, reached the
//!   backend;
//! - requests built valid are all answered 200, in order;
//! - sluice stays up.
//!
//! `make test` runs `SLUICE_FUZZ_CASES` cases (default 48); `make fuzz` runs 2,000.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::raw_backend::{exchange, statuses, RawAnswer, RawBackend, RawRequest};
use support::*;

/// How a request frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length,
    LengthList,
    LengthTwice,
    LengthsDiffer,
    Chunked,
    CodingList,
    LengthAndChunked,
}

/// One generated request.
#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    version: &'static str,
    host: Option<&'static str>,
    framing: Framing,
    body: Vec<u8>,
}

impl Request {
    /// Whether sluice must answer it 200 through the backend.
    fn valid(&self) -> bool {
        let body_ok = match self.framing {
            Framing::None => self.body.is_empty(),
            Framing::Length | Framing::LengthList | Framing::LengthTwice => true,
            Framing::Chunked => self.version == "HTTP/1.1",
            _ => false,
        };
        body_ok
            && is_plain_path(&self.path)
            && matches!(self.host, Some(h) if VALID_HOSTS.contains(&h))
    }

    fn bytes(&self, tag: &str, last: bool) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.path, self.version);
        if let Some(host) = self.host {
            head.push_str(&format!("host: {host}\r\n"));
        }
        head.push_str(&format!("x-case: {tag}\r\n"));
        if last && self.version == "HTTP/1.1" {
            head.push_str("connection: close\r\n");
        }
        if !last && self.version == "HTTP/1.0" {
            head.push_str("connection: keep-alive\r\n");
        }
        let n = self.body.len();
        let mut body = self.body.clone();
        match self.framing {
            Framing::None => {}
            Framing::Length => head.push_str(&format!("content-length: {n}\r\n")),
            Framing::LengthList => head.push_str(&format!("content-length: {n}, {n}\r\n")),
            Framing::LengthTwice => {
                head.push_str(&format!("content-length: {n}\r\ncontent-length: {n}\r\n"))
            }
            Framing::LengthsDiffer => head.push_str(&format!(
                "content-length: {n}\r\ncontent-length: {}\r\n",
                n + 1
            )),
            Framing::Chunked | Framing::CodingList | Framing::LengthAndChunked => {
                head.push_str(match self.framing {
                    Framing::CodingList => "transfer-encoding: gzip, chunked\r\n",
                    Framing::LengthAndChunked => {
                        "content-length: 3\r\ntransfer-encoding: chunked\r\n"
                    }
                    _ => "transfer-encoding: chunked\r\n",
                });
                body = chunked(&self.body);
            }
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

const VALID_HOSTS: &[&str] = &["test.local", "A.Example.", "a.example:8080"];
const BAD_HOSTS: &[&str] = &["", "a b", "a/b", "a..b"];
const PLAIN_SEGMENTS: &[&str] = &["a", "public", "x.y", "~u", "a%20b"];
/// Segments that normalise to others (the first six) or are refused (the rest).
const ODD_SEGMENTS: &[&str] = &[
    "..", ".", "", "%2e%2e", "%41", "%7e", "%2E", "%2f", "%5C", "%zz", "%00",
];

/// A path made only of plain segments: what sluice forwards unchanged.
fn is_plain_path(path: &str) -> bool {
    path.split('/')
        .skip(1)
        .all(|s| matches!(s, "a" | "public" | "x.y" | "~u" | "a%20b"))
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn request() -> impl Strategy<Value = Request> {
    let segment = prop_oneof![
        6 => prop::sample::select(PLAIN_SEGMENTS),
        1 => prop::sample::select(ODD_SEGMENTS),
    ];
    let path = prop::collection::vec(segment, 1..5)
        .prop_map(|segments| format!("/{}", segments.join("/")));
    let framing = prop_oneof![
        3 => Just(Framing::None),
        3 => Just(Framing::Length),
        1 => Just(Framing::LengthList),
        1 => Just(Framing::LengthTwice),
        1 => Just(Framing::LengthsDiffer),
        3 => Just(Framing::Chunked),
        1 => Just(Framing::CodingList),
        1 => Just(Framing::LengthAndChunked),
    ];
    let host = prop_oneof![
        8 => prop::sample::select(VALID_HOSTS).prop_map(Some),
        1 => prop::sample::select(BAD_HOSTS).prop_map(Some),
        1 => Just(None),
    ];
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        path,
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        host,
        framing,
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(method, path, version, host, framing, body)| Request {
            method,
            path,
            version,
            host,
            framing,
            // Without framing there is no body: its bytes would be the next request.
            body: if framing == Framing::None {
                Vec::new()
            } else {
                body
            },
        })
}

/// Whether `path` (no query) is in normal form.
fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && path.split('/').skip(1).enumerate().all(|(i, segment)| {
            let last = i + 1 == path.split('/').count() - 1;
            segment != "." && segment != ".." && (last || !segment.is_empty())
        })
        && !path.to_ascii_lowercase().contains("%2e")
        && !path.to_ascii_lowercase().contains("%41")
        && !path.to_ascii_lowercase().contains("%7e")
}

/// How many requests of all cases were forwarded and refused.
#[derive(Default)]
struct Tally {
    forwarded: AtomicUsize,
    refused: AtomicUsize,
}

fn check_case(
    web: SocketAddr,
    backend: &RawBackend,
    case: usize,
    requests: &[Request],
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        bytes.extend(request.bytes(&format!("{case}-{i}"), i + 1 == requests.len()));
    }
    let text = exchange(web, &bytes).read_to_close();
    let answered = statuses(&text);
    let seen: Vec<RawRequest> = backend.requests();
    let seen_for = |i: usize| -> Vec<&RawRequest> {
        let tag = format!("{case}-{i}");
        seen.iter()
            .filter(|r| r.all("x-case") == [tag.as_str()])
            .collect()
    };
    prop_assert!(answered.len() <= requests.len(), "{text}");
    let mut stopped = false;
    for (i, request) in requests.iter().enumerate() {
        let forwarded = seen_for(i);
        let status = answered.get(i).copied();
        if stopped || status.is_none() {
            prop_assert!(
                forwarded.is_empty(),
                "request {i} after the end was forwarded"
            );
            stopped = true;
            continue;
        }
        if request.valid() {
            prop_assert_eq!(
                status,
                Some(200),
                "valid request {} {:?}: {}",
                i,
                request,
                text
            );
        }
        if status == Some(200) {
            tally.forwarded.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(
                forwarded.len(),
                1,
                "request {} forwarded once: {:?}",
                i,
                request
            );
            let got = forwarded[0];
            prop_assert_eq!(&got.framing_error, &None, "{:?}", got);
            prop_assert_eq!(&got.body, &request.body, "{:?}", request);
            prop_assert!(
                is_normal(got.target()),
                "{} forwarded for {:?}",
                got.target(),
                request
            );
        } else {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                forwarded.is_empty(),
                "refused request {i} was forwarded: {request:?}"
            );
            // A refused request ends the connection.
            stopped = !matches!(status, Some(404));
        }
    }
    Ok(())
}

#[test]
fn random_requests_keep_the_request_path_invariants() {
    let cases: u32 = std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let backend = RawBackend::start(RawAnswer::Length);
    let web = listen_address();
    let config = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n  - {{ name: all, listener: web, upstream: app }}\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\"] }}\n",
        backend.address
    );
    let sluice = Sluice::start(&config);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = AtomicUsize::new(0);
    let tally = Tally::default();
    runner
        .run(&prop::collection::vec(request(), 1..4), |requests| {
            let case = case.fetch_add(1, Ordering::Relaxed);
            check_case(web, &backend, case, &requests, &tally)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (forwarded, refused) = (tally.forwarded.into_inner(), tally.refused.into_inner());
    eprintln!("{cases} cases: {forwarded} requests forwarded, {refused} refused");
    assert!(
        forwarded > 0 && refused > 0,
        "both kinds of request were generated"
    );
    assert!(sluice.admin_get("/readyz").is_some_and(|r| r.status == 200));
}
