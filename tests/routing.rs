//! Host and path routing through the real binary: precedence, 404 without a default
//! upstream, and malformed requests answered with 4xx without harming the process.

mod support;

use support::*;

fn upstream(name: &str, backend: &Backend) -> String {
    format!(
        "  - {{ name: {name}, endpoints: [\"{}\"] }}\n",
        backend.address
    )
}

#[test]
fn host_then_path_precedence_and_404() {
    let backends: Vec<Backend> = [
        "any",
        "wild",
        "exact",
        "prefix",
        "longer",
        "regex",
        "exactpath",
    ]
    .iter()
    .map(|n| Backend::start(n, Behavior::Echo))
    .collect();
    let web = listen_address();
    let mut body = format!(
        r#"listeners: [{{ name: web, listen: "{web}" }}]
routes:
  - {{ name: any, listener: web, paths: [{{ prefix: / }}], upstream: any }}
  - {{ name: wild, listener: web, hosts: ["*.example.com"], paths: [{{ prefix: / }}], upstream: wild }}
  - {{ name: exact, listener: web, hosts: ["shop.example.com"], paths: [{{ prefix: /shop }}], upstream: exact }}
  - name: api
    listener: web
    hosts: ["api.test"]
    paths: [{{ regex: "^/api/v[0-9]+/items$" }}, {{ prefix: /api }}]
    upstream: prefix
  - {{ name: longer, listener: web, hosts: ["api.test"], paths: [{{ prefix: /api/v1 }}], upstream: longer }}
  - {{ name: regex, listener: web, hosts: ["api.test"], paths: [{{ regex: ".*\\.png" }}], upstream: regex }}
  - {{ name: exactpath, listener: web, hosts: ["api.test"], paths: [{{ exact: /api/v1/items }}], upstream: exactpath }}
upstreams:
"#
    );
    for b in &backends {
        body.push_str(&upstream(&b.name, b));
    }
    let sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    let cases = [
        ("unknown.org", "/anything", "any"),
        ("a.example.com", "/x", "wild"),
        ("deep.a.example.com", "/x", "wild"),
        ("SHOP.example.com:8080", "/shop/cart", "exact"),
        // exact path > longest prefix > regex, within the host
        ("api.test", "/api/v1/items", "exactpath"),
        ("api.test", "/api/v1/other", "longer"),
        ("api.test", "/api/v2/items", "prefix"),
        ("api.test", "/img/logo.png", "regex"),
        ("api.test", "/api/v2/items?page=2", "prefix"),
    ];
    for (host, path, expected) in cases {
        let response = client.get(host, path);
        assert_eq!(response.status, 200, "{host}{path}");
        assert_eq!(response.backend(), expected, "{host}{path}");
    }

    // The exact host group has no route for `/`: 404, never another host's route.
    let response = client.get("shop.example.com", "/");
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["error"], "no route");
    assert!(response.json()["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    // A 404 keeps the client connection usable.
    assert_eq!(client.get("api.test", "/nothing-here").status, 404);
    assert_eq!(client.get("a.example.com", "/").backend(), "wild");
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"404\",reason=\"no_route\",route=\"none\"}",
        2.0,
    );
}

#[test]
fn malformed_requests_get_4xx_and_sluice_keeps_serving() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let mut sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    ));
    let garbage: [&[u8]; 3] = [
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    ];
    for bytes in garbage {
        let mut client = Client::connect(web);
        client.send_raw(bytes);
        if let Some(response) = client.read_response() {
            assert!(
                (400..500).contains(&response.status),
                "{:?} -> {}",
                String::from_utf8_lossy(bytes),
                response.status
            );
        }
    }
    assert!(sluice.is_running());
    assert_eq!(get(web, "/fine").status, 200);
    assert_eq!(
        backend.requests().len(),
        1,
        "no malformed request reached the backend"
    );
}

#[test]
fn rate_limits_answer_429_with_retry_after_and_keep_keys_apart() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let routes =
        "  - { name: limited, listener: web, paths: [{ prefix: /limited }], upstream: app, \
                  rate_limit: { requests_per_second: 5, burst: 10 } }\n  \
                  - { name: keyed, listener: web, paths: [{ prefix: /keyed }], upstream: app, \
                  rate_limit: { requests_per_second: 1, burst: 2, by: \"header:X-Api-Key\" } }\n";
    let sluice = Sluice::start(&single_upstream_config(
        web,
        &addresses(&[&backend]),
        "",
        routes,
    ));
    // A burst of 40 on one keepalive connection: burst + 1 pass, the rest get 429.
    let mut client = Client::connect(web);
    let statuses: Vec<u16> = (0..40)
        .map(|i| client.get("limit.test", &format!("/limited/{i}")).status)
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    println!("rate limit: burst of 40 at 5/s burst 10: {admitted} admitted, {limited} limited");
    assert_eq!(admitted + limited, 40, "{statuses:?}");
    assert!((11..=13).contains(&admitted), "{statuses:?}");
    let response = client.get("limit.test", "/limited/again");
    assert_eq!(response.status, 429);
    let retry_after: u64 = response
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_eq!(response.json()["error"], "rate limited");
    assert_eq!(
        sluice.metric("sluice_rate_limited_total{route=\"limited\"}") as usize,
        limited + 1
    );
    // Other routes are not limited.
    assert_eq!(client.get("limit.test", "/other").status, 200);

    // by: header: each key has its own allowance (burst 2 + 1).
    let mut keyed = |key: &str| {
        (0..6)
            .filter(|_| {
                client
                    .request(
                        "GET",
                        "/keyed",
                        &[("host", "limit.test"), ("x-api-key", key)],
                    )
                    .status
                    == 200
            })
            .count()
    };
    assert_eq!(keyed("alice"), 3);
    assert_eq!(keyed("bob"), 3, "bob is not limited by alice's requests");
}
