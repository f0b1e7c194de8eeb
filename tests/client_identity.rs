//! Client identity, access control and CORS through the real binary (issue #17, first
//! part): `trusted_proxies` and the forwarding chain, `allow`/`deny` lists per listener and
//! per route, and CORS preflights and responses.

mod support;

use support::*;

/// The `client` of the access-log record of request `id` (sent as `X-Request-Id`).
fn logged_client(sluice: &Sluice, id: &str) -> String {
    let mut client = String::new();
    wait_until("the request's access-log line", READY_TIMEOUT, || {
        let record = sluice
            .access_log()
            .into_iter()
            .find(|r| r["request_id"] == id);
        if let Some(record) = record {
            client = record["client"].as_str().unwrap_or_default().to_string();
        }
        !client.is_empty()
    });
    client
}

/// A request to a listener with some headers, and the client sluice must see.
type Case<'a> = (std::net::SocketAddr, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let backend = Backend::start("app", Behavior::Echo);
    let (trusting, plain) = (listen_address(), listen_address());
    let sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: lb, listen: \"{trusting}\", trusted_proxies: [127.0.0.0/8, 10.0.0.0/8] }}\n\
         \x20 - {{ name: direct, listen: \"{plain}\" }}\n\
         routes:\n\
         \x20 - {{ name: lb, listener: lb, upstream: app }}\n\
         \x20 - {{ name: direct, listener: direct, upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    // (listener, headers, the client sluice must see)
    let cases: [Case; 7] = [
        (trusting, &[], "127.0.0.1"),
        (
            trusting,
            &[("x-forwarded-for", "203.0.113.7")],
            "203.0.113.7",
        ),
        // A client's own X-Forwarded-For is left of what the load balancer appended.
        (
            trusting,
            &[("x-forwarded-for", "1.1.1.1, 203.0.113.7")],
            "203.0.113.7",
        ),
        // Several trusted hops.
        (
            trusting,
            &[("x-forwarded-for", "198.51.100.2, 10.1.1.1, 10.2.2.2")],
            "198.51.100.2",
        ),
        (
            trusting,
            &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
            "2001:db8::7",
        ),
        (trusting, &[("x-real-ip", "192.0.2.44")], "192.0.2.44"),
        // An untrusted peer's headers are ignored.
        (plain, &[("x-forwarded-for", "203.0.113.7")], "127.0.0.1"),
    ];
    for (i, (listener, headers, expected)) in cases.iter().enumerate() {
        let id = format!("identity-{i}");
        let mut all = headers.to_vec();
        all.push(("x-request-id", &id));
        let response = Client::connect(*listener).request("GET", "/", &all);
        assert_eq!(response.status, 200);
        assert_eq!(logged_client(&sluice, &id), *expected, "{headers:?}");
    }
    // Upstream, the chain gets the peer appended (the hop sluice saw), not the client.
    let seen = backend.requests();
    let last = seen.last().expect("a request");
    assert_eq!(
        last.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[test]
fn allow_and_deny_lists_per_listener_and_route() {
    let backend = Backend::start("app", Behavior::Echo);
    let (web, guarded) = (listen_address(), listen_address());
    let sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: web, listen: \"{web}\", trusted_proxies: [127.0.0.1] }}\n\
         \x20 - {{ name: guarded, listen: \"{guarded}\", trusted_proxies: [127.0.0.1], deny: [203.0.113.0/24] }}\n\
         routes:\n\
         \x20 - {{ name: admin, listener: web, paths: [{{ prefix: /admin }}], upstream: app, allow: [10.0.0.0/8, 192.0.2.7], deny: [10.6.6.6] }}\n\
         \x20 - {{ name: open, listener: web, upstream: app }}\n\
         \x20 - {{ name: guarded, listener: guarded, upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    let status = |listener, path: &str, client: &str| {
        Client::connect(listener)
            .request("GET", path, &[("x-forwarded-for", client)])
            .status
    };
    assert_eq!(status(web, "/admin", "10.1.2.3"), 200);
    assert_eq!(status(web, "/admin", "192.0.2.7"), 200);
    assert_eq!(
        status(web, "/admin", "10.6.6.6"),
        403,
        "deny wins inside allow"
    );
    assert_eq!(status(web, "/admin", "198.51.100.1"), 403, "outside allow");
    assert_eq!(
        status(web, "/public", "198.51.100.1"),
        200,
        "other routes are open"
    );
    assert_eq!(status(guarded, "/", "203.0.113.9"), 403);
    assert_eq!(status(guarded, "/", "198.51.100.1"), 200);
    let refused = Client::connect(web).request("GET", "/admin", &[("x-forwarded-for", "8.8.8.8")]);
    assert_eq!(refused.json()["error"], "forbidden");
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"403\",reason=\"access_denied\",route=\"admin\"}",
        3.0,
    );
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"403\",reason=\"access_denied\",route=\"none\"}",
        1.0,
    );
    assert!(
        backend
            .requests()
            .iter()
            .all(|r| r.header("x-forwarded-for") != Some("10.6.6.6, 127.0.0.1")),
        "a refused request never reaches the backend"
    );
}

#[test]
fn bad_networks_are_reported_with_their_position() {
    let (output, path, _dir) = check_config(
        "listeners: [{ name: web, listen: \"127.0.0.1:1\", trusted_proxies: [10.0.0.0/33], allow: [example.com] }]\n\
         routes: [{ name: r, listener: web, upstream: app, deny: [\"::1/129\"] }]\n\
         upstreams: [{ name: app, endpoints: [\"127.0.0.1:2\"] }]\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let file = path.display().to_string();
    for (line, key) in [
        (1, "listeners[0].trusted_proxies[0]"),
        (1, "listeners[0].allow[0]"),
        (2, "routes[0].deny[0]"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:")) && l.contains(key)),
            "{key} in:\n{stderr}"
        );
    }
}

#[test]
fn cors_preflights_are_answered_and_responses_name_the_origin() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - name: api\n    listener: web\n    upstream: app\n    paths: [{{ prefix: /api }}]\n\
         \x20   cors: {{ allow_origins: [\"https://app.example.com\", \"https://*.shop.test\"], allow_methods: [GET, POST], \
         allow_headers: [Content-Type, X-Token], expose_headers: [X-Backend], max_age: 10m }}\n\
         \x20 - name: public\n    listener: web\n    upstream: app\n    cors: {{ allow_credentials: false }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    let mut client = Client::connect(web);
    let preflight = client.request(
        "OPTIONS",
        "/api/orders",
        &[
            ("origin", "https://a.shop.test"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-token"),
        ],
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://a.shop.test")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type, x-token")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert_eq!(preflight.header("vary"), Some("Origin"));

    // A preflight from an origin not allowed gets no CORS headers: the browser stops there.
    let refused = client.request(
        "OPTIONS",
        "/api/orders",
        &[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "POST"),
        ],
    );
    assert_eq!(refused.status, 204);
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let actual = client.request(
        "GET",
        "/api/orders",
        &[("origin", "https://app.example.com")],
    );
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        actual.header("access-control-expose-headers"),
        Some("x-backend")
    );
    let foreign = client.request("GET", "/api/orders", &[("origin", "https://evil.test")]);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    // Any origin without credentials: `*`.
    let public = client.request("GET", "/x", &[("origin", "https://anyone.test")]);
    assert_eq!(public.header("access-control-allow-origin"), Some("*"));
    assert_eq!(public.header("access-control-allow-credentials"), None);
    assert!(
        backend.requests().iter().all(|r| r.method != "OPTIONS"),
        "preflights never reach the backend"
    );
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"204\",reason=\"cors_preflight\",route=\"api\"}",
        2.0,
    );
}
