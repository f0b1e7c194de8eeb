//! Request hygiene: forwarded headers, request ids, hop-by-hop headers, original Host.

mod support;

use support::*;

fn start(backend: &Backend) -> (Sluice, std::net::SocketAddr) {
    let web = listen_address();
    let sluice = Sluice::start(&single_upstream_config(web, &addresses(&[backend]), "", ""));
    (sluice, web)
}

#[test]
fn forwarded_headers_host_and_hop_by_hop() {
    let backend = Backend::start("app", Behavior::Echo);
    let (_sluice, web) = start(&backend);
    let mut client = Client::connect(web);
    let response = client.request(
        "GET",
        "/path?q=1",
        &[
            ("host", "shop.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "must not pass"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("upgrade", "h2c"),
            ("x-custom", "kept"),
        ],
    );
    assert_eq!(response.status, 200);
    let seen = &backend.requests()[0];
    assert_eq!(seen.target, "/path?q=1");
    assert_eq!(seen.header("host"), Some("shop.example.com"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("x-sluice-attempt"), Some("1"));
    for hop in [
        "x-secret-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert_eq!(
            seen.header(hop),
            None,
            "{hop} must be stripped: {:?}",
            seen.headers
        );
    }
}

#[test]
fn request_id_is_kept_or_created_and_logged() {
    let backend = Backend::start("app", Behavior::Echo);
    let (sluice, web) = start(&backend);
    let mut client = Client::connect(web);
    client.request("GET", "/a", &[("x-request-id", "client-chosen-id-42")]);
    client.request("GET", "/b", &[]);
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-request-id"), Some("client-chosen-id-42"));
    let created = seen[1].header("x-request-id").expect("created request id");
    assert_eq!(created.len(), 32);
    assert!(created.bytes().all(|b| b.is_ascii_hexdigit()));

    let log = sluice.wait_access_log(2);
    assert_eq!(log[0]["request_id"], "client-chosen-id-42");
    assert_eq!(log[1]["request_id"], created);
    let record = &log[0];
    for field in [
        "ts",
        "listener",
        "route",
        "client",
        "method",
        "host",
        "uri",
        "proto",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream",
        "attempts",
    ] {
        assert!(
            record.get(field).is_some(),
            "access log lacks {field}: {record}"
        );
    }
    assert_eq!(record["route"], "all");
    assert_eq!(record["upstream"], "app");
    assert_eq!(record["status"], 200);
    assert_eq!(record["uri"], "/a");
    assert_eq!(
        record["attempts"][0]["endpoint"],
        backend.address.to_string()
    );
    assert_eq!(record["attempts"][0]["result"], "ok");
    assert_eq!(record["attempts"][0]["status"], 200);
}
