//! Errors people can read, through the real binary (issue #17): a listener's default
//! backend for requests no route takes, and a route's error pages from a file or an
//! upstream, for upstream answers and for sluice's own.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use support::*;

/// A backend that answers `GET /status/NNN` with status NNN and a chunked body naming it
/// (`?empty`: with `content-length: 0`).
fn start_status_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let head_only = line.starts_with("HEAD ");
                    let empty = line.contains("?empty");
                    let status: u16 = line
                        .split(' ')
                        .nth(1)
                        .and_then(|t| t.split('?').next())
                        .and_then(|t| t.rsplit_once("/status/"))
                        .and_then(|(_, s)| s.parse().ok())
                        .unwrap_or(200);
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim().is_empty() {
                            break;
                        }
                    }
                    if empty {
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                        continue;
                    }
                    let text = format!("from upstream {status}");
                    let mut answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\netag: \"v1\"\r\n\
                         transfer-encoding: chunked\r\n\r\n"
                    );
                    if !head_only {
                        answer.push_str(&format!("{:x}\r\n{text}\r\n0\r\n\r\n", text.len()));
                    }
                    if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[test]
fn default_backend_takes_what_no_route_matches() {
    let app = Backend::start("app", Behavior::Echo);
    let fallback = Backend::start("fallback", Behavior::Echo);
    let (with_default, without) = (listen_address(), listen_address());
    let sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: web, listen: \"{with_default}\", default_backend: {{ upstream: fallback }} }}\n\
         \x20 - {{ name: plain, listen: \"{without}\" }}\n\
         routes:\n\
         \x20 - {{ name: shop, listener: web, hosts: [shop.test], paths: [{{ prefix: /api }}], upstream: app }}\n\
         \x20 - {{ name: plain, listener: plain, hosts: [shop.test], upstream: app }}\n\
         upstreams:\n\
         \x20 - {{ name: app, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: fallback, endpoints: [\"{}\"] }}\n",
        app.address, fallback.address
    ));
    let mut client = Client::connect(with_default);
    assert_eq!(client.get("shop.test", "/api/x").backend(), "app");
    // An unknown host, and a known host's unrouted path.
    for (host, path) in [("other.test", "/"), ("shop.test", "/elsewhere")] {
        let response = client.get(host, path);
        assert_eq!(response.status, 200, "{host}{path}");
        assert_eq!(response.backend(), "fallback", "{host}{path}");
    }
    let seen = fallback.requests();
    assert_eq!(seen[0].header("host"), Some("other.test"));
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"200\",reason=\"\",route=\"web/default_backend\"}",
        2.0,
    );
    // Without one, sluice answers 404 itself.
    assert_eq!(Client::connect(without).get("other.test", "/").status, 404);
}

#[test]
fn error_pages_replace_upstream_and_sluice_answers() {
    let status_server = start_status_server();
    let pages = Backend::start("pages", Behavior::Echo);
    let dir = ScratchDir::new();
    let html = "<html><body>We are fixing it.</body></html>\n";
    let page = dir.write("5xx.html", html);
    let listen = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{listen}\" }}]\n\
         routes:\n\
         \x20 - name: shop\n\
         \x20   listener: web\n\
         \x20   paths: [{{ prefix: /status }}]\n\
         \x20   upstream: app\n\
         \x20   error_pages:\n\
         \x20     - {{ status: [502, 503], file: \"{}\" }}\n\
         \x20     - {{ status: [404], upstream: pages }}\n\
         \x20 - {{ name: down, listener: web, paths: [{{ prefix: /down }}], upstream: gone, error_pages: [{{ status: [502], file: \"{}\" }}] }}\n\
         \x20 - {{ name: broken-pages, listener: web, paths: [{{ prefix: /broken }}], upstream: app, error_pages: [{{ status: [503], upstream: gone }}] }}\n\
         upstreams:\n\
         \x20 - {{ name: app, endpoints: [\"{status_server}\"] }}\n\
         \x20 - {{ name: pages, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: gone, endpoints: [\"{}\"] }}\n",
        page.display(),
        page.display(),
        pages.address,
        refused_address()
    ));
    let mut client = Client::connect(listen);
    // An upstream 503: the file's page, the status kept, the old body's headers gone.
    let unavailable = client.get("shop.test", "/status/503");
    assert_eq!(unavailable.status, 503);
    assert_eq!(String::from_utf8_lossy(&unavailable.body), html);
    assert_eq!(
        unavailable.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(unavailable.header("etag").is_none());
    // The connection is still good for the next request.
    let not_found = client.request(
        "GET",
        "/status/404?q=1",
        &[("host", "shop.test"), ("accept", "application/json")],
    );
    assert_eq!(not_found.status, 404);
    let asked = not_found.json();
    assert_eq!(asked["backend"], "pages");
    assert_eq!(asked["target"], "/");
    assert_eq!(asked["headers"]["x-code"], "404");
    assert_eq!(asked["headers"]["x-format"], "application/json");
    assert_eq!(asked["headers"]["x-original-uri"], "/status/404?q=1");
    assert_eq!(asked["headers"]["x-service-name"], "app");
    // An answer without a body has no moment for a page: it is left as it is, and the
    // connection stays good.
    let empty = client.get("shop.test", "/status/404?empty");
    assert_eq!(empty.status, 404);
    assert!(empty.body.is_empty());
    // Statuses without a page are left alone.
    let other = client.get("shop.test", "/status/500");
    assert_eq!(String::from_utf8_lossy(&other.body), "from upstream 500");
    let ok = client.get("shop.test", "/status/200");
    assert_eq!(String::from_utf8_lossy(&ok.body), "from upstream 200");

    // sluice's own 502 for an unreachable upstream gets the page too.
    let down = client.get("shop.test", "/down");
    assert_eq!(down.status, 502);
    assert_eq!(String::from_utf8_lossy(&down.body), html);
    // A page upstream that fails leaves the answer as it was.
    let mut client = Client::connect(listen);
    let kept = client.get("shop.test", "/broken/status/503");
    assert_eq!(kept.status, 503);
    assert_eq!(String::from_utf8_lossy(&kept.body), "from upstream 503");
    assert!(sluice
        .stderr()
        .contains("error page 503 from upstream gone"));
}
