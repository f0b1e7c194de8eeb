//! The request path against raw bytes (issue #13): path normalisation, framing, HTTP/1.0,
//! pipelining, absolute-form targets and Host, each compared with what nginx does with the
//! same bytes (README, "Request handling and limits").

mod support;

use support::raw_backend::{exchange, statuses, RawAnswer, RawBackend};
use support::*;

/// sluice with `/public` (prefix) to `public`, `/admin` (exact) to `admin`, and host
/// `a.example` (any path) to `public`.
fn start(
    public: &RawBackend,
    admin: &RawBackend,
    listener_extra: &str,
) -> (Sluice, std::net::SocketAddr) {
    let web = listen_address();
    let config = format!(
        "listeners: [{{ name: web, listen: \"{web}\"{listener_extra} }}]\n\
         routes:\n\
         \x20 - {{ name: public, listener: web, paths: [{{ prefix: /public }}], upstream: public }}\n\
         \x20 - {{ name: admin, listener: web, paths: [{{ exact: /admin }}], upstream: admin }}\n\
         \x20 - {{ name: host-a, listener: web, hosts: [a.example], upstream: public }}\n\
         upstreams:\n\
         \x20 - {{ name: public, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: admin, endpoints: [\"{}\"] }}\n",
        public.address, admin.address
    );
    (Sluice::start(&config), web)
}

fn get(web: std::net::SocketAddr, target: &str, host: &str) -> Response {
    let mut client = Client::connect(web);
    client.request("GET", target, &[("host", host)])
}

#[test]
fn prefix_routes_cannot_be_escaped_and_encoded_names_find_their_route() {
    let public = RawBackend::start(RawAnswer::Length);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&public, &admin, "");
    for escape in [
        "/public/../internal",
        "/public/%2e%2e/internal",
        "/public/%2E%2E/internal",
        "/public/.%2e/internal",
        "/public/./../internal",
    ] {
        let response = get(web, escape, "test.local");
        assert_eq!(
            response.status, 404,
            "{escape} resolves to /internal: no route"
        );
    }
    for escape in [
        "/public/..%2finternal",
        "/public%2f..%2finternal",
        "/public/..\\internal",
        "/public/..%5cinternal",
    ] {
        let response = get(web, escape, "test.local");
        assert_eq!(response.status, 400, "{escape}: encoded slash refused");
    }
    assert!(public.requests().is_empty(), "{:?}", public.requests());
    for name in ["/%61dmin", "//admin", "/./admin", "/admin"] {
        assert_eq!(get(web, name, "test.local").status, 200, "{name}");
    }
    let targets: Vec<String> = admin
        .requests()
        .iter()
        .map(|r| r.target().to_string())
        .collect();
    assert_eq!(
        targets, ["/admin"; 4],
        "the admin route and its upstream see /admin"
    );
    let response = get(web, "/public/a/./b/../c%7e?q=/../x", "test.local");
    assert_eq!(response.status, 200);
    assert_eq!(public.requests()[0].target(), "/public/a/c~?q=/../x");
}

#[test]
fn escaped_slashes_can_be_kept_or_decoded() {
    let public = RawBackend::start(RawAnswer::Length);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_keep, web) = start(&public, &admin, ", requests: { escaped_slashes: keep }");
    assert_eq!(get(web, "/public/a%2fb", "test.local").status, 200);
    assert_eq!(public.requests()[0].target(), "/public/a%2Fb");
    let (_decode, web) = start(&public, &admin, ", requests: { escaped_slashes: decode }");
    assert_eq!(
        get(web, "/public%2f..%2finternal", "test.local").status,
        404
    );
    assert_eq!(get(web, "/public/a%2fb", "test.local").status, 200);
    assert_eq!(public.requests()[1].target(), "/public/a/b");
}

#[test]
fn forwarded_framing_is_unambiguous() {
    let public = RawBackend::start(RawAnswer::Length);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&public, &admin, "");
    let head = "POST /public/f HTTP/1.1\r\nhost: test.local\r\n";

    // A list of equal lengths, and the same length twice, each reach the backend as one.
    for lengths in [
        "content-length: 5, 5\r\n",
        "content-length: 5\r\ncontent-length: 5\r\n",
    ] {
        let request = format!("{head}{lengths}connection: close\r\n\r\nhello");
        let text = exchange(web, request.as_bytes()).read_to_close();
        assert_eq!(statuses(&text), [200], "{lengths:?}: {text}");
    }
    for seen in public.requests() {
        assert_eq!(seen.all("content-length"), ["5"], "{seen:?}");
        assert_eq!(seen.framing_error, None);
        assert_eq!(seen.body, b"hello");
    }

    // Anything else is refused before a byte is forwarded.
    for (framing, status) in [
        ("content-length: 5, 6\r\n", 400),
        ("content-length: 5\r\ncontent-length: 6\r\n", 400),
        ("transfer-encoding: gzip, chunked\r\n", 501),
        ("transfer-encoding: identity, chunked\r\n", 501),
        ("transfer-encoding: chunked, chunked\r\n", 501),
    ] {
        let request = format!("{head}{framing}\r\n5\r\nhello\r\n0\r\n\r\n");
        let text = exchange(web, request.as_bytes()).read_to_close();
        assert_eq!(statuses(&text), [status], "{framing:?}: {text}");
    }
    assert_eq!(
        public.requests().len(),
        2,
        "nothing of a refused request is forwarded"
    );

    // Content-Length with Transfer-Encoding: the coding wins, the length is dropped and the
    // client connection is closed after the answer. The body was buffered, so it is
    // forwarded with its real length, as nginx does.
    let request = format!(
        "{head}content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let text = exchange(web, request.as_bytes()).read_to_close();
    assert_eq!(statuses(&text), [200], "{text}");
    let seen = &public.requests()[2];
    assert_eq!(seen.all("content-length"), ["5"]);
    assert!(seen.all("transfer-encoding").is_empty(), "{seen:?}");
    assert_eq!(seen.framing_error, None, "{seen:?}");
    assert_eq!(seen.body, b"hello");
}

#[test]
fn http10_clients_get_close_delimited_answers() {
    let public = RawBackend::start(RawAnswer::Length);
    let streaming = RawBackend::start(RawAnswer::CloseDelimited);
    let (_sluice, web) = start(&public, &streaming, "");

    let text = exchange(web, b"GET /public/x HTTP/1.0\r\nhost: test.local\r\n\r\n").read_to_close();
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.ends_with("/public/x"), "{text}");

    // A response without length reaches an HTTP/1.0 client as-is, delimited by the close.
    let text = exchange(web, b"GET /admin HTTP/1.0\r\nhost: test.local\r\n\r\n").read_to_close();
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n/admin"), "{text}");

    // With `Connection: keep-alive` the connection is kept: a second request is answered.
    let mut client = Client::connect(web);
    for _ in 0..2 {
        client.send_raw(
            b"GET /public/k HTTP/1.0\r\nhost: test.local\r\nconnection: keep-alive\r\n\r\n",
        );
        let response = client.read_response().expect("kept-alive response");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let public = RawBackend::start(RawAnswer::Length);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&public, &admin, "");
    let pipeline = b"GET /public/1 HTTP/1.1\r\nhost: test.local\r\n\r\n\
        POST /public/2 HTTP/1.1\r\nhost: test.local\r\ncontent-length: 5\r\n\r\nhello\
        GET /public/3 HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n\r\n";
    let text = exchange(web, pipeline).read_to_close();
    assert_eq!(statuses(&text), [200, 200, 200], "{text}");
    let one = text.find("/public/1").expect("first answer");
    let two = text.find("/public/2").expect("second answer");
    let three = text.find("/public/3").expect("third answer");
    assert!(one < two && two < three, "answers in request order: {text}");
    let targets: Vec<String> = public
        .requests()
        .iter()
        .map(|r| r.target().to_string())
        .collect();
    assert_eq!(targets, ["/public/1", "/public/2", "/public/3"]);
    assert_eq!(public.requests()[1].body, b"hello");
}

#[test]
fn absolute_form_targets_route_on_their_path() {
    let public = RawBackend::start(RawAnswer::Length);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&public, &admin, "");
    let text = exchange(
        web,
        b"GET http://test.local/public/abs?x=1 HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [200], "{text}");
    assert_eq!(public.requests()[0].line, "GET /public/abs?x=1 HTTP/1.1");

    let text = exchange(
        web,
        b"GET http://other.example/public/abs HTTP/1.1\r\nhost: test.local\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(
        statuses(&text),
        [400],
        "authority and Host disagree: {text}"
    );

    let text = exchange(
        web,
        b"CONNECT test.local:443 HTTP/1.1\r\nhost: test.local:443\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [405], "{text}");
    assert!(text.contains("request_id"), "sluice's own answer: {text}");

    let text = exchange(
        web,
        b"OPTIONS * HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n\r\n",
    )
    .read_to_close();
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(text.to_ascii_lowercase().contains("allow: "), "{text}");
    assert_eq!(public.requests().len() + admin.requests().len(), 1);
}

#[test]
fn hosts_are_checked_before_forwarding() {
    let public = RawBackend::start(RawAnswer::Length);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&public, &admin, "");
    let text = exchange(web, b"GET /public/x HTTP/1.1\r\n\r\n").read_to_close();
    assert_eq!(statuses(&text), [400], "HTTP/1.1 without Host: {text}");
    for host in [
        &b""[..],
        b"a.example/evil",
        b"a b",
        b"\"a.example\"",
        b"a.example:bad",
        b"\xffa",
    ] {
        let mut request = b"GET /public/x HTTP/1.1\r\nhost: ".to_vec();
        request.extend_from_slice(host);
        request.extend_from_slice(b"\r\n\r\n");
        let text = exchange(web, &request).read_to_close();
        assert_eq!(
            statuses(&text),
            [400],
            "Host {:?}: {text}",
            String::from_utf8_lossy(host)
        );
    }
    assert!(public.requests().is_empty(), "{:?}", public.requests());

    // A trailing dot and upper case name the same host.
    let response = get(web, "/anything", "A.EXAMPLE.");
    assert_eq!(response.status, 200);
    assert_eq!(public.requests()[0].target(), "/anything");
}

#[test]
fn a_request_sent_while_the_previous_one_is_upstream_waits_its_turn() {
    let slow = Backend::start(
        "slow",
        Behavior::Delay(std::time::Duration::from_millis(500)),
    );
    let web = listen_address();
    let _sluice = Sluice::start(&single_upstream_config(web, &addresses(&[&slow]), "", ""));
    let mut client = Client::connect(web);
    client.send_raw(b"GET /first HTTP/1.1\r\nhost: test.local\r\n\r\n");
    wait_until(
        "the first request reaches the backend",
        READY_TIMEOUT,
        || !slow.requests().is_empty(),
    );
    // The backend is still sleeping on the first request: this arrives before its answer.
    client.send_raw(b"GET /second HTTP/1.1\r\nhost: test.local\r\n\r\n");
    for target in ["/first", "/second"] {
        let response = client.read_response().expect("an answer for each request");
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(response.json()["target"], target);
    }
}

#[test]
fn dropped_trailers_are_not_announced() {
    let public = RawBackend::start(RawAnswer::ChunkedWithTrailer);
    let admin = RawBackend::start(RawAnswer::Length);
    let (_sluice, web) = start(&public, &admin, "");
    // An HTTP/1 client gets no trailers from sluice, so no `Trailer` field announcing them.
    let response = get(web, "/public/t", "test.local");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"/public/t");
    assert_eq!(response.header("trailer"), None, "{:?}", response.headers);
}
