//! Routing and traffic features through the real binary (issue #16): each match kind, each
//! precedence rule, weighted backends, canaries, every filter, mirroring and cookie
//! affinity, against real backends on loopback.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use support::*;

/// Upstream lines for `backends`, each named after its backend.
fn upstreams(backends: &[&Backend]) -> String {
    backends
        .iter()
        .map(|b| {
            format!(
                "  - {{ name: {}, endpoints: [\"{}\"] }}\n",
                b.name, b.address
            )
        })
        .collect()
}

/// Starts sluice with listener `web`, `routes` (whole `  - ...` lines) and one upstream per
/// backend, named after it (then `extra_upstreams` lines).
fn serve(routes: &str, backends: &[&Backend], extra_upstreams: &str) -> (Sluice, SocketAddr) {
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\nroutes:\n{routes}upstreams:\n{}{extra_upstreams}",
        upstreams(backends)
    );
    (Sluice::start(&body), web)
}

/// Echo backends named `names`.
fn backends(names: &[&str]) -> Vec<Backend> {
    names
        .iter()
        .map(|n| Backend::start(n, Behavior::Echo))
        .collect()
}

fn refs(backends: &[Backend]) -> Vec<&Backend> {
    backends.iter().collect()
}

/// Which backend answers `method target` with `headers` (status 200 required).
fn answered_by(
    client: &mut Client,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> String {
    let response = client.request(method, target, headers);
    assert_eq!(response.status, 200, "{method} {target} {headers:?}");
    response.backend().to_string()
}

// ---------------------------------------------------------------------------------------
// Match kinds
// ---------------------------------------------------------------------------------------

#[test]
fn match_exact_path() {
    let b = backends(&["exact", "other"]);
    let (_sluice, web) = serve(
        "  - { name: exact, listener: web, paths: [{ exact: /login }], upstream: exact }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(answered_by(&mut client, "GET", "/login", &[]), "exact");
    assert_eq!(
        answered_by(&mut client, "GET", "/login?next=/", &[]),
        "exact"
    );
    assert_eq!(answered_by(&mut client, "GET", "/login/", &[]), "other");
    assert_eq!(answered_by(&mut client, "GET", "/loginx", &[]), "other");
}

#[test]
fn match_plain_prefix() {
    let b = backends(&["prefix", "other"]);
    let (_sluice, web) = serve(
        "  - { name: prefix, listener: web, paths: [{ prefix: /api }], upstream: prefix }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    for path in ["/api", "/api/x", "/apix"] {
        assert_eq!(
            answered_by(&mut client, "GET", path, &[]),
            "prefix",
            "{path}"
        );
    }
    assert_eq!(answered_by(&mut client, "GET", "/ap", &[]), "other");
}

#[test]
fn match_segment_prefix() {
    let b = backends(&["segment", "other"]);
    let (_sluice, web) = serve(
        "  - { name: segment, listener: web, paths: [{ segment_prefix: /api/ }], upstream: segment }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    for path in ["/api", "/api/", "/api/x/y"] {
        assert_eq!(
            answered_by(&mut client, "GET", path, &[]),
            "segment",
            "{path}"
        );
    }
    assert_eq!(answered_by(&mut client, "GET", "/apix", &[]), "other");
}

#[test]
fn match_regex_on_the_whole_path() {
    let b = backends(&["regex", "other"]);
    let (_sluice, web) = serve(
        "  - { name: regex, listener: web, paths: [{ regex: \"/items/[0-9]+\" }], upstream: regex }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(answered_by(&mut client, "GET", "/items/42", &[]), "regex");
    assert_eq!(
        answered_by(&mut client, "GET", "/items/42?x=1", &[]),
        "regex"
    );
    // Anchored: a match inside the path is not enough.
    assert_eq!(
        answered_by(&mut client, "GET", "/v1/items/42", &[]),
        "other"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/items/42/edit", &[]),
        "other"
    );
}

#[test]
fn match_method() {
    let b = backends(&["writes", "other"]);
    let (_sluice, web) = serve(
        "  - { name: writes, listener: web, methods: [post, PUT], upstream: writes }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(answered_by(&mut client, "POST", "/x", &[]), "writes");
    assert_eq!(answered_by(&mut client, "PUT", "/x", &[]), "writes");
    assert_eq!(answered_by(&mut client, "GET", "/x", &[]), "other");
}

#[test]
fn match_headers_exact_and_regex() {
    let b = backends(&["tenant", "other"]);
    let (_sluice, web) = serve(
        "  - name: tenant\n    listener: web\n    upstream: tenant\n    headers:\n\
         \x20     - { name: X-Tenant, exact: blue }\n\
         \x20     - { name: x-version, regex: \"v[0-9]+\" }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let both = [("x-tenant", "blue"), ("X-Version", "v12")];
    assert_eq!(answered_by(&mut client, "GET", "/", &both), "tenant");
    let cases: [&[(&str, &str)]; 4] = [
        &[("x-tenant", "blue")],
        &[("x-tenant", "Blue"), ("x-version", "v1")],
        &[("x-tenant", "blue"), ("x-version", "v1-beta")],
        &[],
    ];
    for headers in cases {
        assert_eq!(
            answered_by(&mut client, "GET", "/", headers),
            "other",
            "{headers:?}"
        );
    }
}

#[test]
fn match_query_exact_and_regex() {
    let b = backends(&["query", "other"]);
    let (_sluice, web) = serve(
        "  - name: query\n    listener: web\n    upstream: query\n    query:\n\
         \x20     - { name: debug, exact: \"1\" }\n\
         \x20     - { name: id, regex: \"[0-9]+\" }\n\
         \x20 - { name: other, listener: web, upstream: other }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/?id=7&debug=1", &[]),
        "query"
    );
    for target in ["/?debug=1", "/?debug=1&id=x7", "/?debug=0&id=7", "/"] {
        assert_eq!(
            answered_by(&mut client, "GET", target, &[]),
            "other",
            "{target}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Precedence (Gateway API's order)
// ---------------------------------------------------------------------------------------

#[test]
fn precedence_an_exact_path_beats_any_prefix() {
    let b = backends(&["exact", "prefix"]);
    let (_sluice, web) = serve(
        "  - { name: prefix, listener: web, paths: [{ prefix: /a }], headers: [{ name: x-a, exact: \"1\" }], upstream: prefix }\n\
         \x20 - { name: exact, listener: web, paths: [{ exact: /a/b }], upstream: exact }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    // Even a prefix route with more conditions loses to the exact path.
    assert_eq!(
        answered_by(&mut client, "GET", "/a/b", &[("x-a", "1")]),
        "exact"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/a/c", &[("x-a", "1")]),
        "prefix"
    );
}

#[test]
fn precedence_the_longest_prefix_wins() {
    let b = backends(&["short", "long"]);
    let (_sluice, web) = serve(
        "  - { name: short, listener: web, paths: [{ segment_prefix: /a }], methods: [GET], upstream: short }\n\
         \x20 - { name: long, listener: web, paths: [{ segment_prefix: /a/b }], upstream: long }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(answered_by(&mut client, "GET", "/a/b/c", &[]), "long");
    assert_eq!(answered_by(&mut client, "GET", "/a/c", &[]), "short");
}

#[test]
fn precedence_a_method_beats_headers() {
    let b = backends(&["method", "headers"]);
    let (_sluice, web) = serve(
        "  - { name: headers, listener: web, headers: [{ name: x-a, exact: \"1\" }, { name: x-b, exact: \"1\" }], upstream: headers }\n\
         \x20 - { name: method, listener: web, methods: [GET], upstream: method }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let both = [("x-a", "1"), ("x-b", "1")];
    assert_eq!(answered_by(&mut client, "GET", "/", &both), "method");
    assert_eq!(answered_by(&mut client, "POST", "/", &both), "headers");
}

#[test]
fn precedence_more_headers_win() {
    let b = backends(&["one", "two"]);
    let (_sluice, web) = serve(
        "  - { name: one, listener: web, headers: [{ name: x-a, exact: \"1\" }], upstream: one }\n\
         \x20 - { name: two, listener: web, headers: [{ name: x-a, exact: \"1\" }, { name: x-b, regex: \".*\" }], upstream: two }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/", &[("x-a", "1"), ("x-b", "z")]),
        "two"
    );
    assert_eq!(answered_by(&mut client, "GET", "/", &[("x-a", "1")]), "one");
}

#[test]
fn precedence_headers_beat_query_parameters() {
    let b = backends(&["header", "query"]);
    let (_sluice, web) = serve(
        "  - { name: query, listener: web, query: [{ name: a, exact: \"1\" }, { name: b, exact: \"1\" }], upstream: query }\n\
         \x20 - { name: header, listener: web, headers: [{ name: x-a, exact: \"1\" }], upstream: header }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/?a=1&b=1", &[("x-a", "1")]),
        "header"
    );
    assert_eq!(answered_by(&mut client, "GET", "/?a=1&b=1", &[]), "query");
}

#[test]
fn precedence_more_query_parameters_win() {
    let b = backends(&["one", "two"]);
    let (_sluice, web) = serve(
        "  - { name: one, listener: web, query: [{ name: a, exact: \"1\" }], upstream: one }\n\
         \x20 - { name: two, listener: web, query: [{ name: a, exact: \"1\" }, { name: b, exact: \"1\" }], upstream: two }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(answered_by(&mut client, "GET", "/?b=1&a=1", &[]), "two");
    assert_eq!(answered_by(&mut client, "GET", "/?a=1", &[]), "one");
}

#[test]
fn precedence_on_a_tie_the_earlier_route_wins() {
    let b = backends(&["first", "second"]);
    let (_sluice, web) = serve(
        "  - { name: first, listener: web, headers: [{ name: x-a, exact: \"1\" }], upstream: first }\n\
         \x20 - { name: second, listener: web, headers: [{ name: x-b, exact: \"1\" }], upstream: second }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/", &[("x-b", "1"), ("x-a", "1")]),
        "first"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/", &[("x-b", "1")]),
        "second"
    );
}

#[test]
fn conditions_that_fail_fall_through_to_the_next_path() {
    let b = backends(&["exact", "prefix"]);
    let (sluice, web) = serve(
        "  - { name: exact, listener: web, paths: [{ exact: /a }], methods: [POST], upstream: exact }\n\
         \x20 - { name: prefix, listener: web, paths: [{ prefix: / }], upstream: prefix }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(answered_by(&mut client, "POST", "/a", &[]), "exact");
    assert_eq!(answered_by(&mut client, "GET", "/a", &[]), "prefix");
    // Same host, path and conditions twice is a conflict the file reports.
    let (output, _, _dir) = check_config(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\nroutes:\n\
         \x20 - {{ name: a, listener: web, methods: [GET], upstream: exact }}\n\
         \x20 - {{ name: b, listener: web, methods: [GET], upstream: exact }}\n\
         upstreams:\n{}",
        upstreams(&refs(&b))
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "routes[1].paths: host \"*\" and this path are already routed by route \"a\""
        ),
        "{stderr}"
    );
    drop(sluice);
}

// ---------------------------------------------------------------------------------------
// Weighted backends and canaries
// ---------------------------------------------------------------------------------------

/// Sends `n` requests over a few connections; counts answers by backend.
fn spread(web: SocketAddr, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let threads = 4;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            std::thread::spawn(move || {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut client = Client::connect(web);
                let mut counts: HashMap<String, usize> = HashMap::new();
                for _ in 0..n / threads {
                    let backend = answered_by(&mut client, "GET", "/", &headers);
                    *counts.entry(backend).or_default() += 1;
                }
                counts
            })
        })
        .collect();
    let mut total: HashMap<String, usize> = HashMap::new();
    for handle in handles {
        for (backend, count) in handle.join().expect("client thread") {
            *total.entry(backend).or_default() += count;
        }
    }
    total
}

fn share(counts: &HashMap<String, usize>, backend: &str) -> f64 {
    let total: usize = counts.values().sum();
    100.0 * *counts.get(backend).unwrap_or(&0) as f64 / total as f64
}

#[test]
fn a_weighted_split_of_10000_requests_is_within_2_points() {
    let b = backends(&["a", "b", "c"]);
    let (_sluice, web) = serve(
        "  - name: split\n    listener: web\n    backends:\n\
         \x20     - { upstream: a, weight: 70 }\n\
         \x20     - { upstream: b, weight: 20 }\n\
         \x20     - { upstream: c, weight: 10 }\n",
        &refs(&b),
        "",
    );
    let counts = spread(web, 10_000, &[]);
    println!("weighted split 70/20/10 of 10000: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 10_000);
    for (backend, weight) in [("a", 70.0), ("b", 20.0), ("c", 10.0)] {
        let got = share(&counts, backend);
        assert!(
            (got - weight).abs() <= 2.0,
            "{backend}: {got:.2}% for weight {weight}"
        );
    }
}

#[test]
fn canary_by_header_value_pattern_and_always_never() {
    let b = backends(&["main", "canary", "main2", "canary2"]);
    let (_sluice, web) = serve(
        "  - { name: app, listener: web, paths: [{ prefix: /app }], upstream: main, canary: { upstream: canary, header: x-canary } }\n\
         \x20 - { name: valued, listener: web, paths: [{ prefix: /v }], upstream: main2, canary: { upstream: canary2, header: x-canary, header_pattern: \"blue|green\" } }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/app", &[("x-canary", "always")]),
        "canary"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/app", &[("x-canary", "never")]),
        "main"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/app", &[("x-canary", "maybe")]),
        "main"
    );
    assert_eq!(answered_by(&mut client, "GET", "/app", &[]), "main");
    assert_eq!(
        answered_by(&mut client, "GET", "/v", &[("x-canary", "green")]),
        "canary2"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/v", &[("x-canary", "always")]),
        "main2"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/v", &[("x-canary", "greenish")]),
        "main2"
    );
}

#[test]
fn canary_by_cookie_after_the_header() {
    let b = backends(&["main", "canary"]);
    let (_sluice, web) = serve(
        "  - { name: app, listener: web, upstream: main, canary: { upstream: canary, header: x-canary, cookie: canary } }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let cookie = |v: &'static str| ("cookie", v);
    assert_eq!(
        answered_by(&mut client, "GET", "/", &[cookie("a=1; canary=always")]),
        "canary"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/", &[cookie("canary=never")]),
        "main"
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/", &[cookie("canary=other")]),
        "main"
    );
    // The header rule comes first.
    assert_eq!(
        answered_by(
            &mut client,
            "GET",
            "/",
            &[("x-canary", "never"), cookie("canary=always")]
        ),
        "main"
    );
}

#[test]
fn canary_by_weight_takes_its_share_of_10000_requests() {
    let b = backends(&["main", "canary"]);
    let (_sluice, web) = serve(
        "  - { name: app, listener: web, upstream: main, canary: { upstream: canary, weight: 25, cookie: canary } }\n",
        &refs(&b),
        "",
    );
    let counts = spread(web, 10_000, &[]);
    println!("canary weight 25 of 10000: {counts:?}");
    let got = share(&counts, "canary");
    assert!((got - 25.0).abs() <= 2.0, "canary took {got:.2}%");
    // A cookie pins a user whatever the weight.
    let pinned = spread(web, 400, &[("cookie", "canary=never")]);
    assert_eq!(pinned.get("main"), Some(&400), "{pinned:?}");
}

#[test]
fn a_canary_without_endpoints_fails_unless_fallback_is_set() {
    let b = backends(&["main"]);
    // The canary's only endpoint fails its active check; with no panic threshold it has no
    // endpoint to offer.
    let canary_upstreams = format!(
        "  - name: canary\n    endpoints: [\"{}\"]\n    health:\n      panic_threshold_percent: 0\n      \
         active: {{ interval: 100ms, timeout: 100ms, unhealthy_after: 1 }}\n",
        refused_address()
    );
    let (sluice, web) = serve(
        "  - { name: strict, listener: web, paths: [{ prefix: /strict }], upstream: main, canary: { upstream: canary, header: x-canary } }\n\
         \x20 - { name: lenient, listener: web, paths: [{ prefix: /lenient }], upstream: main, canary: { upstream: canary, header: x-canary, fallback: true } }\n",
        &refs(&b),
        &canary_upstreams,
    );
    wait_until("the canary endpoint to be unhealthy", READY_TIMEOUT, || {
        sluice.admin_get("/upstreams").is_some_and(|r| {
            let view = r.json();
            view["upstreams"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|u| u["name"] == "canary" && u["endpoints"][0]["available"] == false)
        })
    });
    let mut client = Client::connect(web);
    let strict = client.request("GET", "/strict", &[("x-canary", "always")]);
    assert_eq!(strict.status, 503, "never falls back silently");
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/lenient", &[("x-canary", "always")]),
        "main"
    );
}

#[test]
fn a_failing_canary_is_retried_on_the_backends_only_with_fallback() {
    let b = backends(&["main"]);
    let canary = format!(
        "  - {{ name: canary, endpoints: [\"{}\"] }}\n",
        refused_address()
    );
    let (sluice, web) = serve(
        "  - { name: strict, listener: web, paths: [{ prefix: /strict }], upstream: main, canary: { upstream: canary, header: x-canary } }\n\
         \x20 - { name: lenient, listener: web, paths: [{ prefix: /lenient }], upstream: main, canary: { upstream: canary, header: x-canary, fallback: true } }\n",
        &refs(&b),
        &canary,
    );
    let mut client = Client::connect(web);
    let strict = client.request("GET", "/strict", &[("x-canary", "always")]);
    assert_eq!(strict.status, 502, "the canary's failure is the answer");
    assert!(b[0].requests().is_empty());
    let mut client = Client::connect(web);
    assert_eq!(
        answered_by(&mut client, "GET", "/lenient", &[("x-canary", "always")]),
        "main"
    );
    let records = sluice.wait_access_log(2);
    let lenient = records
        .iter()
        .find(|r| r["route"] == "lenient")
        .expect("lenient record");
    assert_eq!(lenient["upstream"], "main");
    assert_eq!(
        lenient["attempts"].as_array().map(Vec::len),
        Some(2),
        "{lenient}"
    );
    // Two tries of the strict route, both on the canary; one of the lenient route.
    sluice.wait_metric(
        "sluice_upstream_attempts_total{result=\"connect_refused\",upstream=\"canary\"}",
        3.0,
    );
    assert_eq!(
        sluice.metric("sluice_upstream_attempts_total{result=\"ok\",upstream=\"main\"}"),
        1.0
    );
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

#[test]
fn request_and_response_header_edits() {
    let b = backends(&["app"]);
    let (_sluice, web) = serve(
        "  - name: app\n    listener: web\n    upstream: app\n\
         \x20   request_headers: { set: { x-env: prod }, add: { x-tag: added }, remove: [x-secret] }\n\
         \x20   response_headers: { set: { x-backend: hidden }, add: { x-served-by: sluice }, remove: [x-connection] }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let response = client.request(
        "GET",
        "/",
        &[("x-env", "dev"), ("x-tag", "mine"), ("x-secret", "s3cret")],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-backend"), Some("hidden"));
    assert_eq!(response.header("x-served-by"), Some("sluice"));
    assert_eq!(response.header("x-connection"), None);
    let seen = &b[0].requests()[0];
    let values = |name: &str| -> Vec<&str> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-env"), ["prod"]);
    assert_eq!(values("x-tag"), ["mine", "added"]);
    assert!(values("x-secret").is_empty());
}

#[test]
fn redirects_by_path_prefix_scheme_host_port_and_status() {
    let b = backends(&["app"]);
    let (_sluice, web) = serve(
        "  - { name: moved, listener: web, paths: [{ exact: /old }], redirect: { path: /new, status: 301 } }\n\
         \x20 - { name: docs, listener: web, paths: [{ segment_prefix: /docs }], redirect: { prefix: /manual, status: 308 } }\n\
         \x20 - { name: away, listener: web, paths: [{ prefix: /away }], redirect: { scheme: https, host: other.example, port: 8443 } }\n\
         \x20 - { name: app, listener: web, upstream: app }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let host = [("host", "shop.example:8080")];
    let moved = client.request("GET", "/old?a=1", &host);
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        Some("http://shop.example:8080/new?a=1")
    );
    let docs = client.request("GET", "/docs/intro", &host);
    assert_eq!(docs.status, 308);
    assert_eq!(
        docs.header("location"),
        Some("http://shop.example:8080/manual/intro")
    );
    let away = client.request("GET", "/away/x", &host);
    assert_eq!(away.status, 302, "Gateway API's default");
    assert_eq!(
        away.header("location"),
        Some("https://other.example:8443/away/x")
    );
    assert!(
        b[0].requests().is_empty(),
        "redirects never reach the backend"
    );
}

#[test]
fn a_redirect_chain_is_followed_to_the_backend() {
    let b = backends(&["app"]);
    let (sluice, web) = serve(
        "  - { name: first, listener: web, paths: [{ exact: /v1/page }], redirect: { path: /v2/page, status: 301 } }\n\
         \x20 - { name: second, listener: web, paths: [{ segment_prefix: /v2 }], redirect: { prefix: /v3, status: 307 } }\n\
         \x20 - { name: app, listener: web, paths: [{ segment_prefix: /v3 }], upstream: app }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let mut target = "/v1/page?q=1".to_string();
    let mut hops = Vec::new();
    let response = loop {
        let response = client.get("site.test", &target);
        if !(300..400).contains(&response.status) {
            break response;
        }
        let location = response.header("location").expect("location").to_string();
        hops.push((response.status, location.clone()));
        target = location
            .strip_prefix("http://site.test")
            .expect("same origin")
            .to_string();
    };
    assert_eq!(
        hops,
        [
            (301, "http://site.test/v2/page?q=1".to_string()),
            (307, "http://site.test/v3/page?q=1".to_string())
        ]
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/v3/page?q=1");
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"301\",reason=\"redirect\",route=\"first\"}",
        1.0,
    );
}

#[test]
fn https_redirect_per_route_and_per_listener_sparing_acme_challenges() {
    let b = backends(&["app"]);
    let web = listen_address();
    let plain = listen_address();
    let body = format!(
        "listeners:\n  - {{ name: web, listen: \"{web}\" }}\n  - {{ name: plain, listen: \"{plain}\", https_redirect: true }}\n\
         routes:\n\
         \x20 - {{ name: secure, listener: web, paths: [{{ prefix: /account }}], upstream: app, https_redirect: {{ port: 8443, status: 301 }} }}\n\
         \x20 - {{ name: app, listener: web, upstream: app }}\n\
         \x20 - {{ name: acme, listener: plain, upstream: app }}\n\
         upstreams:\n{}",
        upstreams(&refs(&b))
    );
    let _sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    let secure = client.get("shop.example", "/account/orders?id=1");
    assert_eq!(secure.status, 301);
    assert_eq!(
        secure.header("location"),
        Some("https://shop.example:8443/account/orders?id=1")
    );
    assert_eq!(
        answered_by(&mut client, "GET", "/home", &[("host", "shop.example")]),
        "app"
    );

    let mut client = Client::connect(plain);
    let redirected = client.get("shop.example:80", "/any/path?x=1");
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.header("location"),
        Some("https://shop.example/any/path?x=1")
    );
    let challenge = client.get("shop.example", "/.well-known/acme-challenge/token123");
    assert_eq!(challenge.status, 200, "ACME HTTP-01 stays on plain HTTP");
}

#[test]
fn app_root_redirects_only_the_root() {
    let b = backends(&["app"]);
    let (_sluice, web) = serve(
        "  - { name: app, listener: web, upstream: app, app_root: /dashboard }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let root = client.get("site.test", "/");
    assert_eq!(root.status, 302);
    assert_eq!(root.header("location"), Some("/dashboard"));
    assert_eq!(answered_by(&mut client, "GET", "/dashboard", &[]), "app");
}

#[test]
fn rewrites_full_prefix_and_regex_with_capture_groups() {
    let b = backends(&["app"]);
    let (_sluice, web) = serve(
        "  - { name: full, listener: web, paths: [{ exact: /health }], upstream: app, rewrite: { path: /internal/healthz } }\n\
         \x20 - { name: prefix, listener: web, paths: [{ segment_prefix: /api }], upstream: app, rewrite: { prefix: /v2, forwarded_prefix: /api } }\n\
         \x20 - name: regex\n    listener: web\n    upstream: app\n    paths: [{ regex: \"/something(/|$)(.*)\" }]\n\
         \x20   rewrite: { regex: { pattern: \"/something(/|$)(.*)\", replacement: \"/$2\" } }\n\
         \x20 - name: swap\n    listener: web\n    upstream: app\n    paths: [{ regex: \"/users/([0-9]+)/posts/([0-9]+)\" }]\n\
         \x20   rewrite: { regex: { pattern: \"/users/([0-9]+)/posts/([0-9]+)\", replacement: \"/posts/$2?author=$1\" } }\n\
         \x20   upstream_host: posts.internal\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    let target = |client: &mut Client, path: &str| -> serde_json::Value {
        let response = client.get("site.test", path);
        assert_eq!(response.status, 200, "{path}");
        response.json()
    };
    assert_eq!(
        target(&mut client, "/health?v=1")["target"],
        "/internal/healthz?v=1"
    );
    let api = target(&mut client, "/api/items?page=2");
    assert_eq!(api["target"], "/v2/items?page=2");
    assert_eq!(api["headers"]["x-forwarded-prefix"], "/api");
    assert_eq!(target(&mut client, "/api")["target"], "/v2");
    assert_eq!(target(&mut client, "/something/new/x")["target"], "/new/x");
    assert_eq!(target(&mut client, "/something")["target"], "/");
    let swapped = target(&mut client, "/users/7/posts/42?lang=en");
    assert_eq!(swapped["target"], "/posts/42?author=7&lang=en");
    assert_eq!(swapped["headers"]["host"], "posts.internal");
    assert_eq!(
        swapped["headers"]["x-forwarded-host"], "site.test",
        "the client's host"
    );
}

#[test]
fn mirror_copies_never_delay_the_main_request_and_are_bounded() {
    let main = Backend::start("main", Behavior::Echo);
    // The mirror reads each copy and never answers: a main request waiting for it would
    // never complete.
    let shadow = Backend::start("shadow", Behavior::Hang);
    let (sluice, web) = serve(
        "  - { name: app, listener: web, upstream: main, rewrite: { prefix: /v2 }, mirror: { upstream: shadow, max_in_flight: 2 } }\n",
        &[&main, &shadow],
        "",
    );
    let mut client = Client::connect(web);
    for i in 0..6 {
        let response = client
            .try_request("POST", &format!("/orders/{i}"), &[], b"{\"n\":1}")
            .expect("response");
        assert_eq!(response.status, 200);
        assert_eq!(response.backend(), "main");
    }
    wait_until("two copies at the mirror", READY_TIMEOUT, || {
        shadow.requests().len() == 2
    });
    let copy = &shadow.requests()[0];
    assert_eq!(copy.method, "POST");
    assert!(
        copy.target.starts_with("/v2/orders/"),
        "the copy is rewritten too: {}",
        copy.target
    );
    assert_eq!(copy.header("content-length"), Some("7"));
    sluice.wait_metric(
        "sluice_mirror_requests_total{result=\"dropped\",route=\"app\"}",
        4.0,
    );
    assert_eq!(main.requests().len(), 6);
}

#[test]
fn websocket_upgrades_are_not_mirrored() {
    let ws = WsEcho::start();
    let shadow = Backend::start("shadow", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: ws, listener: web, upstream: ws, mirror: {{ upstream: shadow }} }}]\n\
         upstreams:\n  - {{ name: ws, endpoints: [\"{}\"] }}\n  - {{ name: shadow, endpoints: [\"{}\"] }}\n",
        ws.address, shadow.address
    ));
    let mut stream = websocket_connect(web);
    echo(&mut stream, b"frame");
    drop(stream);
    // A plain request on the same route is mirrored: once its copy is counted, the upgrade
    // before it would have been too.
    assert_eq!(get(web, "/plain").status, 101);
    sluice.wait_metric(
        "sluice_mirror_requests_total{result=\"ok\",route=\"ws\"}",
        1.0,
    );
    let copies: Vec<String> = shadow.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(copies, ["/plain"]);
}

#[test]
fn a_mirror_that_is_down_costs_the_main_request_nothing() {
    let main = Backend::start("main", Behavior::Echo);
    let (sluice, web) = serve(
        "  - { name: app, listener: web, upstream: main, mirror: { upstream: shadow } }\n",
        &[&main],
        &format!(
            "  - {{ name: shadow, endpoints: [\"{}\"] }}\n",
            refused_address()
        ),
    );
    let mut client = Client::connect(web);
    for _ in 0..5 {
        assert_eq!(answered_by(&mut client, "GET", "/", &[]), "main");
    }
    sluice.wait_metric(
        "sluice_mirror_requests_total{result=\"error\",route=\"app\"}",
        5.0,
    );
}

// ---------------------------------------------------------------------------------------
// Cookie affinity
// ---------------------------------------------------------------------------------------

const AFFINITY_ROUTE: &str = "  - name: app\n    listener: web\n    upstream: app\n    \
    affinity: { cookie: { name: route, max_age: 1h, same_site: lax } }\n";

fn affinity_config(web: SocketAddr, backends: &[&Backend]) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.address))
        .collect();
    format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\nroutes:\n{AFFINITY_ROUTE}\
         upstreams:\n  - {{ name: app, endpoints: [{}] }}\n",
        endpoints.join(", ")
    )
}

/// The `name=value` of a `Set-Cookie` header.
fn cookie_pair(response: &Response) -> String {
    let set_cookie = response.header("set-cookie").expect("set-cookie");
    set_cookie.split(';').next().expect("pair").to_string()
}

#[test]
fn affinity_pins_a_client_for_1000_requests_and_moves_it_when_its_endpoint_leaves() {
    let b = backends(&["a", "b", "c"]);
    let web = listen_address();
    let sluice = Sluice::start(&affinity_config(web, &refs(&b)));
    let mut client = Client::connect(web);
    let first = client.get("site.test", "/");
    assert_eq!(first.status, 200);
    let set_cookie = first
        .header("set-cookie")
        .expect("a new client gets a cookie");
    assert!(set_cookie.starts_with("route="), "{set_cookie}");
    for attribute in ["Path=/", "Max-Age=3600", "SameSite=Lax", "HttpOnly"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let pinned = first.backend().to_string();
    let cookie = cookie_pair(&first);
    for _ in 0..1000 {
        let response = client.request("GET", "/", &[("cookie", &cookie)]);
        assert_eq!(response.backend(), pinned);
        assert_eq!(
            response.header("set-cookie"),
            None,
            "a valid cookie is kept"
        );
    }

    // The pinned endpoint leaves: the client moves and gets a new cookie, then stays.
    let remaining: Vec<&Backend> = b.iter().filter(|x| x.name != pinned).collect();
    sluice.reload(&affinity_config(web, &remaining));
    let moved = client.request("GET", "/", &[("cookie", &cookie)]);
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), pinned);
    let new_cookie = cookie_pair(&moved);
    assert_ne!(new_cookie, cookie);
    for _ in 0..50 {
        let response = client.request("GET", "/", &[("cookie", &new_cookie)]);
        assert_eq!(response.backend(), moved.backend());
    }
}

#[test]
fn affinity_keeps_a_session_on_its_upstream_across_a_weighted_split() {
    let b = backends(&["v1", "v2"]);
    let (_sluice, web) = serve(
        "  - name: app\n    listener: web\n    backends: [{ upstream: v1, weight: 50 }, { upstream: v2, weight: 50 }]\n    \
         affinity: { cookie: { name: route } }\n",
        &refs(&b),
        "",
    );
    let mut client = Client::connect(web);
    for _ in 0..10 {
        let first = client.get("site.test", "/");
        let cookie = cookie_pair(&first);
        for _ in 0..20 {
            let response = client.request("GET", "/", &[("cookie", &cookie)]);
            assert_eq!(response.backend(), first.backend(), "{cookie}");
            assert_eq!(response.header("set-cookie"), None);
        }
    }
}

#[test]
fn targets_that_cannot_be_rebuilt_are_refused_not_mangled() {
    let b = backends(&["app"]);
    let (_sluice, web) = serve(
        "  - { name: rewritten, listener: web, paths: [{ segment_prefix: /api }], upstream: app, rewrite: { prefix: /v2 } }\n\
         \x20 - { name: moved, listener: web, paths: [{ exact: /old }], redirect: { path: /new } }\n",
        &refs(&b),
        "",
    );
    // Rewrites and redirects build text: a target that is not UTF-8 is refused before them.
    let mut client = Client::connect(web);
    client.send_raw(b"GET /api/\xff HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response().expect("response").status, 400);
    // A redirect to the request's own host needs one: HTTP/1.0 may come without.
    let mut client = Client::connect(web);
    client.send_raw(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_response().expect("response").status, 400);
    let mut client = Client::connect(web);
    client.send_raw(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n");
    let moved = client.read_response().expect("response");
    assert_eq!(moved.header("location"), Some("http://a/new"));
    assert!(b[0].requests().is_empty());
}

#[test]
fn two_processes_with_the_same_config_agree_on_affinity() {
    let b = backends(&["a", "b", "c", "d"]);
    let (web1, web2) = (listen_address(), listen_address());
    let one = Sluice::start(&affinity_config(web1, &refs(&b)));
    let two = Sluice::start(&affinity_config(web2, &refs(&b)));
    let mut client1 = Client::connect(web1);
    let mut client2 = Client::connect(web2);
    for i in 0..20 {
        // New clients, each pinned by process one, land on the same endpoint at process two.
        let first = client1.get("site.test", &format!("/{i}"));
        let cookie = cookie_pair(&first);
        let elsewhere = client2.request("GET", "/", &[("cookie", &cookie)]);
        assert_eq!(elsewhere.backend(), first.backend(), "{cookie}");
        assert_eq!(elsewhere.header("set-cookie"), None);
    }
    // An endpoint leaves both: every client of it moves to the same endpoint in both.
    let cookies: Vec<(String, String)> = (0..40)
        .map(|i| {
            let r = client1.get("site.test", &format!("/c{i}"));
            (cookie_pair(&r), r.backend().to_string())
        })
        .collect();
    let gone = "a";
    let remaining: Vec<&Backend> = b.iter().filter(|x| x.name != gone).collect();
    one.reload(&affinity_config(web1, &remaining));
    two.reload(&affinity_config(web2, &remaining));
    let mut moved = 0;
    for (cookie, backend) in &cookies {
        let at_one = client1.request("GET", "/", &[("cookie", cookie)]);
        let at_two = client2.request("GET", "/", &[("cookie", cookie)]);
        assert_eq!(at_one.backend(), at_two.backend(), "{cookie}");
        assert_eq!(at_one.header("set-cookie"), at_two.header("set-cookie"));
        if backend == gone {
            moved += 1;
        } else {
            assert_eq!(at_one.backend(), backend, "clients of other endpoints stay");
        }
    }
    assert!(
        moved > 0,
        "some client was on the endpoint that left: {cookies:?}"
    );
}
