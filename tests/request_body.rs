//! Request bodies (issue #13): buffered before an endpoint is chosen, so slow clients hold
//! sluice's connections and not a backend's workers; `Expect: 100-continue` answered by
//! sluice; size limits (413) and body deadlines (408), as nginx has them.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::raw_backend::{exchange, statuses, trickle_until_closed, RawAnswer, RawBackend};
use support::*;

fn start(backend: &RawBackend, listener_extra: &str, route_extra: &str) -> (Sluice, SocketAddr) {
    let web = listen_address();
    let config = format!(
        "listeners: [{{ name: web, listen: \"{web}\"{listener_extra} }}]\n\
         routes:\n  - {{ name: all, listener: web, upstream: app{route_extra} }}\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\"] }}\n",
        backend.address
    );
    (Sluice::start(&config), web)
}

fn connect(web: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(web).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream
}

/// Reads one status line and the rest of its head.
fn read_head(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("response head");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            return head;
        }
    }
}

#[test]
fn slow_uploads_wait_at_sluice_not_in_the_backends_workers() {
    // Two sync workers, as a small gunicorn or php-fpm pool.
    let backend = RawBackend::start_workers(2);
    let (_sluice, web) = start(&backend, "", "");

    // Three uploads, more than the workers, each stalled halfway through its body. The
    // `100 Continue` comes from sluice: it is reading the body itself.
    let mut uploads = Vec::new();
    for i in 0..3 {
        let mut stream = connect(web);
        stream
            .write_all(
                format!(
                    "POST /upload/{i} HTTP/1.1\r\nhost: test.local\r\ncontent-length: 10\r\n\
                     expect: 100-continue\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("upload head");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let head = read_head(&mut reader);
        assert!(head.starts_with("HTTP/1.1 100"), "{head}");
        stream.write_all(b"hello").expect("half a body");
        uploads.push((stream, reader));
    }

    // Normal requests are served meanwhile: the workers are free.
    for _ in 0..4 {
        let mut client = Client::connect(web);
        assert_eq!(client.get("test.local", "/normal").status, 200);
    }
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target().to_string())
        .collect();
    assert_eq!(targets, ["/normal"; 4]);

    // The uploads finish and reach the backend whole, without `Expect`.
    for (stream, reader) in &mut uploads {
        stream.write_all(b"world").expect("rest of the body");
        assert!(read_head(reader).starts_with("HTTP/1.1 200"));
    }
    let uploads: Vec<_> = backend
        .requests()
        .into_iter()
        .filter(|r| r.target().starts_with("/upload"))
        .collect();
    assert_eq!(uploads.len(), 3);
    for upload in uploads {
        assert_eq!(upload.body, b"helloworld");
        assert_eq!(upload.all("content-length"), ["10"]);
        assert!(upload.all("expect").is_empty(), "{upload:?}");
    }
}

#[test]
fn chunked_bodies_are_buffered_and_forwarded_with_a_length() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&backend, "", "");
    let request = b"POST /c HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\
        connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let text = exchange(web, request).read_to_close();
    assert_eq!(statuses(&text), [200], "{text}");
    let seen = &backend.requests()[0];
    assert_eq!(seen.body, b"hello world");
    assert_eq!(seen.all("content-length"), ["11"]);
    assert!(seen.all("transfer-encoding").is_empty());
}

#[test]
fn bodies_over_max_body_size_are_refused_with_413() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (_buffered, web) = start(&backend, "", ", max_body_size: 16");
    // A declared length over the limit: 413 at once, without 100 Continue.
    let text = exchange(
        web,
        b"POST /big HTTP/1.1\r\nhost: test.local\r\ncontent-length: 17\r\nexpect: 100-continue\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [413], "{text}");
    // A chunked body that grows past it.
    let text = exchange(
        web,
        b"POST /big HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\r\n\
          10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [413], "{text}");
    // Streaming routes check declared lengths too.
    let (_streaming, web) = start(
        &backend,
        "",
        ", max_body_size: 16, request_buffering: false",
    );
    let text = exchange(
        web,
        b"POST /big HTTP/1.1\r\nhost: test.local\r\ncontent-length: 17\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [413], "{text}");
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
}

#[test]
fn a_trickled_body_is_cut_at_the_body_deadline() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&backend, ", requests: { body_timeout: 1s }", "");
    // Each byte comes well within body_read_timeout; only the total deadline ends it.
    let (answer, closed) = trickle_until_closed(
        web,
        b"POST /t HTTP/1.1\r\nhost: test.local\r\ncontent-length: 1000\r\n\r\n",
    );
    assert_eq!(statuses(&answer), [408], "{answer}");
    assert!(closed, "sluice closed the connection");
    assert!(backend.requests().is_empty());
}

#[test]
fn a_stalled_body_is_cut_at_the_read_timeout() {
    let backend = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&backend, ", requests: { body_read_timeout: 1s }", "");
    let text = exchange(
        web,
        b"POST /s HTTP/1.1\r\nhost: test.local\r\ncontent-length: 10\r\n\r\nhello",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [408], "{text}");
    assert!(backend.requests().is_empty());
}
