//! `sluice -t -c FILE`: every error class is reported as FILE:LINE:COL with its key path,
//! all at once, with exit code 1; a valid file exits 0. Starting with a bad file fails too.

mod support;

use std::process::Command;
use support::*;

/// Runs `-t` on `yaml` and returns (exit code, stdout + stderr, config path).
fn check(yaml: &str) -> (i32, String, String) {
    let (output, path, _dir) = check_config(yaml);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.code().unwrap_or(-1),
        text,
        path.display().to_string(),
    )
}

/// Asserts the output holds `FILE:line:col: key_path: ...message...`.
fn assert_error(text: &str, file: &str, line: usize, key_path: &str, message: &str) {
    let prefix = format!("{file}:{line}:");
    let found = text.lines().any(|l| {
        l.starts_with(&prefix) && l.contains(&format!(" {key_path}: ")) && l.contains(message)
    });
    assert!(
        found,
        "expected `{prefix}COL: {key_path}: ...{message}...` in:\n{text}"
    );
}

const VALID: &str = r#"
listeners:
  - name: web
    listen: 127.0.0.1:8080
routes:
  - name: all
    listener: web
    hosts: ["shop.example.com", "*.shop.example.com"]
    paths: [{ prefix: / }, { exact: /x }, { regex: "^/v[0-9]+/" }]
    upstream: app
    timeouts: { read: 30s }
upstreams:
  - name: app
    endpoints: ["127.0.0.1:1", { address: "127.0.0.1:2", weight: 2 }]
    balance: consistent_hash
    hash_key: "$host$request_uri${http_x_user}$arg_id$cookie_s$remote_addr$scheme$request_method$uri$args"
    keepalive: { max_idle: 16, idle_timeout: 30s, max_requests: 100 }
    timeouts: { connect: 250ms, read: 5s, write: 5s, total: 10s }
    retry: { attempts: 3, on: [connect_failure], methods: all, budget_percent: 50 }
"#;

#[test]
fn valid_config_passes_with_exit_0() {
    let (code, text, _) = check(VALID);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("configuration OK"), "{text}");
}

#[test]
fn every_semantic_error_is_reported_at_once_with_line_and_key_path() {
    let yaml = r#"server:
  grace_period: soon
admin:
  listen: "localhost"
listeners:
  - name: web
    listen: 127.0.0.1:8080
  - name: web
    listen: "not-an-address"
routes:
  - name: r1
    listener: nowhere
    upstream: missing
    hosts: ["bad host!"]
    paths: [{ regex: "([unclosed" }, { prefix: "no-slash" }, { prefix: /a, exact: /b }]
  - name: r1
    listener: web
    upstream: u1
upstreams:
  - name: u1
    endpoints: ["127.0.0.1:80", { address: "127.0.0.1:81", weight: 0 }, "example.com:80"]
    balance: consistent_hash
    hash_key: "$host$bogus_var"
    timeouts: { connect: 1 fortnight }
  - name: u1
    endpoints: ["127.0.0.1:80"]
    balance: consistent_hash
  - name: u3
    endpoints: ["127.0.0.1:80"]
    hash_key: "$host"
    retry: { attempts: 0 }
    keepalive: { idle_timeout: "-1s" }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (2, "server.grace_period", "invalid duration"),
        (4, "admin.listen", "invalid address"),
        (8, "listeners[1].name", "duplicate listener name"),
        (9, "listeners[1].listen", "invalid address"),
        (12, "routes[0].listener", "undefined listener \"nowhere\""),
        (13, "routes[0].upstream", "undefined upstream \"missing\""),
        (14, "routes[0].hosts[0]", "invalid host"),
        (15, "routes[0].paths[0].regex", "does not compile"),
        (15, "routes[0].paths[1].prefix", "must start with /"),
        (
            15,
            "routes[0].paths[2]",
            "exactly one of prefix, segment_prefix, exact or regex",
        ),
        (16, "routes[1].name", "duplicate route name"),
        (21, "upstreams[0].endpoints[1].weight", "weight 0"),
        (
            21,
            "upstreams[0].endpoints[2]",
            "host names are not resolved",
        ),
        (23, "upstreams[0].hash_key", "unknown variable $bogus_var"),
        (24, "upstreams[0].timeouts.connect", "invalid duration"),
        (25, "upstreams[1].name", "duplicate upstream name"),
        (
            27,
            "upstreams[1].balance",
            "consistent_hash needs a hash_key",
        ),
        (
            30,
            "upstreams[2].hash_key",
            "only used with balance: consistent_hash",
        ),
        (31, "upstreams[2].retry.attempts", "between 1 and 10"),
        (
            32,
            "upstreams[2].keepalive.idle_timeout",
            "invalid duration",
        ),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
    assert!(
        text.contains(&format!("{} error(s)", expected.len())),
        "every error, and only those, is reported:\n{text}"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_rejected_with_position() {
    let (code, text, file) =
        check("listeners:\n  - name: web\n    listen: 127.0.0.1:8080\n    lisen: oops\n");
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with(&format!("{file}:4:")), "{text}");
    assert!(text.contains("unknown field `lisen`"), "{text}");

    let (code, text, file) =
        check("upstreams:\n  - name: u\n    endpoints: [\"127.0.0.1:1\"]\n    balance: fastest\n");
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with(&format!("{file}:4:")), "{text}");
    assert!(text.contains("unknown variant `fastest`"), "{text}");
}

#[test]
fn every_design_section_is_accepted_and_its_files_are_checked() {
    let yaml = r#"
kubernetes: { api_server: "https://10.0.0.1:6443" }
listeners:
  - { name: web, listen: 127.0.0.1:8080, tls: { certificates: [{ cert: a.crt, key: a.key }] } }
  - { name: sql, listen: 127.0.0.1:10000, protocol: tcp }
routes:
  - { name: r, listener: web, upstream: u, rate_limit: { requests_per_second: 5, by: "header:x-user" } }
upstreams:
  - name: u
    kubernetes: { namespace: web, service: app, port: http }
    health: { active: { http_path: /healthz, interval: 2s } }
    slow_start: 30s
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    // The only error: the certificate files do not exist.
    assert_error(
        &text,
        &file,
        4,
        "listeners[0].tls.certificates[0].cert",
        "cannot read certificate file a.crt",
    );
    assert!(
        text.contains("1 error(s)") && !text.contains("not implemented"),
        "every section is implemented:\n{text}"
    );

    let (code, text, file) = check(
        "upstreams:\n  - name: u\n    endpoints: [\"127.0.0.1:1\"]\n    health: { active: { expect_status: \"600-100\" } }\n",
    );
    assert_eq!(code, 1);
    assert_error(
        &text,
        &file,
        4,
        "upstreams[0].health.active.expect_status",
        "invalid status range",
    );
}

#[test]
fn starting_with_a_bad_config_fails_without_serving() {
    let dir = ScratchDir::new();
    let path = dir.write(
        "bad.yaml",
        "listeners:\n  - { name: web, listen: nowhere }\n",
    );
    let output = Command::new(sluice_binary())
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run sluice");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", path.display()))
            && stderr.contains("listeners[0].listen"),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let output = Command::new(sluice_binary())
        .args(["-t", "-c", "/nonexistent/sluice.yaml"])
        .output()
        .expect("run sluice");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}

#[test]
fn health_settings_are_validated() {
    let yaml = r#"upstreams:
  - name: u
    endpoints: ["127.0.0.1:1"]
    slow_start: soonish
    health:
      active: { expect_status: "600-100", interval: 0s, host: example.com, healthy_after: 0 }
      passive: { eject_for: forever, max_ejected_percent: 150 }
      panic_threshold_percent: 101
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(
        &text,
        &file,
        4,
        "upstreams[0].slow_start",
        "invalid duration",
    );
    assert_error(
        &text,
        &file,
        6,
        "upstreams[0].health.active.expect_status",
        "invalid status range",
    );
    assert_error(
        &text,
        &file,
        6,
        "upstreams[0].health.active.interval",
        "more than 0s",
    );
    assert_error(
        &text,
        &file,
        6,
        "upstreams[0].health.active.host",
        "only used with http_path",
    );
    assert_error(
        &text,
        &file,
        6,
        "upstreams[0].health.active.healthy_after",
        "at least 1",
    );
    assert_error(
        &text,
        &file,
        7,
        "upstreams[0].health.passive.eject_for",
        "invalid duration",
    );
    assert_error(
        &text,
        &file,
        7,
        "upstreams[0].health.passive.max_ejected_percent",
        "between 0 and 100",
    );
    assert_error(
        &text,
        &file,
        8,
        "upstreams[0].health.panic_threshold_percent",
        "between 0 and 100",
    );
}

#[test]
fn kubernetes_settings_are_validated() {
    let yaml = r#"kubernetes: { api_server: "not a url" }
upstreams:
  - name: a
    kubernetes: { namespace: Web_NS, service: app, port: 0 }
  - name: b
    endpoints: ["127.0.0.1:1"]
    terminating: drop
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(&text, &file, 1, "kubernetes.api_server", "invalid URL");
    assert_error(
        &text,
        &file,
        4,
        "upstreams[0].kubernetes.namespace",
        "invalid Kubernetes name",
    );
    assert_error(&text, &file, 4, "upstreams[0].kubernetes.port", "1-65535");
    assert_error(
        &text,
        &file,
        7,
        "upstreams[1].terminating",
        "only applies to kubernetes upstreams",
    );
}

#[test]
fn tcp_routes_need_tcp_upstreams_and_hash_only_the_client_address() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080 }
  - { name: sql, listen: 127.0.0.1:10000, protocol: tcp }
routes:
  - { name: s1, listener: sql, upstream: web-app }
  - { name: s2, listener: sql, upstream: db }
  - { name: w, listener: web, upstream: db }
upstreams:
  - { name: web-app, endpoints: ["127.0.0.1:1"] }
  - name: db
    protocol: tcp
    endpoints: ["127.0.0.1:2"]
    balance: consistent_hash
    hash_key: "$remote_addr$host"
    timeouts: { idle: 0s }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(
        &text,
        &file,
        6,
        "routes[0].upstream",
        "is not protocol: tcp",
    );
    assert_error(&text, &file, 7, "routes[1].listener", "at most one route");
    assert_error(
        &text,
        &file,
        8,
        "routes[2].upstream",
        "only a route on a tcp listener",
    );
    assert_error(
        &text,
        &file,
        15,
        "upstreams[1].hash_key",
        "only $remote_addr",
    );
    assert_error(
        &text,
        &file,
        16,
        "upstreams[1].timeouts.idle",
        "must be more than 0s",
    );
}

#[test]
fn sni_routing_errors_are_named() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080, sni_routing: true }
  - { name: sql, listen: 127.0.0.1:10000, protocol: tcp }
  - { name: edge, listen: 127.0.0.1:10001, protocol: tcp, sni_routing: true }
routes:
  - { name: s, listener: sql, hosts: [db.test], upstream: db }
  - { name: e1, listener: edge, hosts: [db.test], upstream: db }
  - { name: e2, listener: edge, hosts: [DB.test], upstream: db }
  - { name: e3, listener: edge, paths: [{ prefix: / }], upstream: db }
upstreams:
  - { name: db, protocol: tcp, endpoints: ["127.0.0.1:2"] }
  - { name: app, endpoints: ["127.0.0.1:1"], proxy_protocol: v2 }
ingress: { http_listener: web, passthrough_listener: sql }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(
        &text,
        &file,
        3,
        "listeners[0].sni_routing",
        "tcp listeners only",
    );
    assert_error(&text, &file, 7, "routes[0].hosts", "sni_routing: true");
    assert_error(
        &text,
        &file,
        9,
        "routes[2].hosts[0]",
        "server name \"db.test\" is already routed by route \"e1\"",
    );
    assert_error(&text, &file, 10, "routes[3].paths", "has no paths");
    assert_error(
        &text,
        &file,
        13,
        "upstreams[1].proxy_protocol",
        "tcp upstreams only",
    );
    assert_error(
        &text,
        &file,
        14,
        "ingress.passthrough_listener",
        "not a tcp listener with sni_routing",
    );
}

#[test]
fn gateway_settings_are_validated() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080 }
  - { name: web2, listen: 127.0.0.1:8081 }
gateway:
  controller_name: nodomain
  listeners:
    - { port: 80, listener: web }
    - { port: 80, listener: web2 }
    - { port: 443, listener: nope }
  leader_election: { duration: 1s }
  dedicated:
    - { gateway: infra, listeners: [{ port: 80, listener: web }] }
    - { gateway: infra/own, listeners: [{ port: 80, listener: web2 }] }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(&text, &file, 6, "gateway.controller_name", "DOMAIN/PATH");
    assert_error(
        &text,
        &file,
        9,
        "gateway.listeners[1]",
        "already has a HTTP listener",
    );
    assert_error(
        &text,
        &file,
        10,
        "gateway.listeners[2].listener",
        "no listener named \"nope\"",
    );
    assert_error(
        &text,
        &file,
        11,
        "gateway.leader_election.duration",
        "at least 2s",
    );
    assert_error(
        &text,
        &file,
        13,
        "gateway.dedicated[0].gateway",
        "write NAMESPACE/NAME",
    );
    // A dedicated Gateway's listener serves it alone.
    assert_error(
        &text,
        &file,
        14,
        "gateway.dedicated[1].listeners[0].listener",
        "already serves the shared gateway.listeners",
    );
}

#[test]
fn rate_limit_keys_are_validated() {
    let yaml = r#"
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes:
  - { name: r, listener: web, upstream: u, rate_limit: { requests_per_second: 0, by: "cookie:x" } }
upstreams: [{ name: u, endpoints: ["127.0.0.1:1"] }]
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(
        &text,
        &file,
        4,
        "routes[0].rate_limit.requests_per_second",
        "",
    );
    assert_error(
        &text,
        &file,
        4,
        "routes[0].rate_limit.by",
        "expected route, client_ip, header:NAME or a template",
    );
}

#[test]
fn four_typos_are_reported_in_one_run() {
    let (code, text, file) = check(
        "listeners:\n  - name: web\n    lisen: 127.0.0.1:8080\n\
         routes:\n  - { name: all, listener: web, upstream: app, timeout: { read: 1s } }\n\
         upstreams:\n  - name: app\n    endpoints: [\"127.0.0.1:1\"]\n    balanse: random\n\
         \x20   keepalive: { max_idle: lots }\n",
    );
    assert_eq!(code, 1, "{text}");
    assert_error(
        &text,
        &file,
        3,
        "listeners[0].lisen",
        "unknown field `lisen`",
    );
    assert_error(
        &text,
        &file,
        5,
        "routes[0].timeout",
        "unknown field `timeout`",
    );
    assert_error(
        &text,
        &file,
        9,
        "upstreams[0].balanse",
        "unknown field `balanse`",
    );
    assert_error(
        &text,
        &file,
        10,
        "upstreams[0].keepalive.max_idle",
        "invalid type",
    );
    // `listen` is missing too (it is spelt `lisen`): said once, at its listener.
    assert!(
        text.contains("listeners[0]: missing field `listen`"),
        "{text}"
    );
    assert!(
        text.contains(": 5 error(s); configuration rejected"),
        "{text}"
    );
}

#[test]
fn a_file_without_listeners_is_an_error() {
    let (code, text, file) = check("upstreams:\n  - name: app\n    endpoints: [\"127.0.0.1:1\"]\n");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("{file}:1:")) && text.contains(": listeners: no listeners"),
        "{text}"
    );
}

#[test]
fn every_traffic_key_is_checked_with_its_position() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080, https_redirect: { status: 200 } }
routes:
  - name: a
    listener: web
    methods: ["GE T"]
    headers: [{ name: "bad name", exact: x }, { name: x-a, exact: x, regex: y }]
    query: [{ name: q, regex: "(" }]
    backends: [{ upstream: app, weight: 0 }]
    canary: { upstream: nope, header_value: x, weight: 120 }
    request_headers: { set: { "x-a": "bad\u0001value" } }
    redirect: { scheme: ftp, status: 200 }
    rewrite: { prefix: /v2, regex: { pattern: "x", replacement: "/" } }
    mirror: { upstream: app, max_in_flight: 0, percent: 120 }
    affinity: { cookie: { name: "a b", same_site: none } }
  - { name: b, listener: web, paths: [{ exact: /x }], rewrite: { prefix: /y } }
upstreams:
  - { name: app, endpoints: ["127.0.0.1:1"] }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (
            3,
            "listeners[0].https_redirect.status",
            "not a redirect status",
        ),
        (7, "routes[0].methods[0]", "invalid method"),
        (8, "routes[0].headers[0].name", "invalid header name"),
        (8, "routes[0].headers[1]", "exactly one of exact or regex"),
        (9, "routes[0].query[0].regex", "does not compile"),
        (10, "routes[0].backends", "every weight is 0"),
        (11, "routes[0].canary.header", "need header: NAME"),
        (11, "routes[0].canary.weight", "above weight_total"),
        (
            11,
            "routes[0].canary.upstream",
            "undefined upstream \"nope\"",
        ),
        (
            12,
            "routes[0].request_headers.set.x-a",
            "invalid header value",
        ),
        (13, "routes[0].redirect.scheme", "use http or https"),
        (13, "routes[0].redirect.status", "not a redirect status"),
        (
            14,
            "routes[0].rewrite.regex",
            "give one of path, prefix or regex",
        ),
        (15, "routes[0].mirror.max_in_flight", "at least 1"),
        (15, "routes[0].mirror.percent", "not a share of requests"),
        (16, "routes[0].affinity.cookie.name", "invalid cookie name"),
        (16, "routes[0].affinity.cookie.same_site", "without Secure"),
        (17, "routes[1].rewrite.prefix", "no prefix path"),
        (17, "routes[1]", "needs an upstream"),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/sluice.yaml");
    let output = Command::new(sluice_binary())
        .args(["-t", "-c", example])
        .output()
        .expect("run sluice -t");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn traffic_values_that_would_misbehave_are_refused() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080 }
  - { name: secure, listen: 127.0.0.1:8443, https_redirect: true, tls: { certificates: [] } }
routes:
  - name: a
    listener: web
    upstream: app
    app_root: //evil.example
    upstream_host: "a b"
    request_headers: { set: { content-length: "0" }, remove: [host] }
    rewrite: { regex: { pattern: "/(.*)", replacement: "v2/$1" } }
    affinity: { cookie: { path: "/;domain=x", max_age: 500ms } }
  - name: b
    listener: web
    paths: [{ prefix: /b }]
    query: [{ name: "a&b", exact: "1" }]
    redirect: { host: "example.com:8443", port: 0 }
upstreams:
  - { name: app, endpoints: ["127.0.0.1:1"] }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (4, "listeners[1].https_redirect", "redirected to themselves"),
        (9, "routes[0].app_root", "single /"),
        (10, "routes[0].upstream_host", "invalid host"),
        (
            11,
            "routes[0].request_headers.set.content-length",
            "cannot be edited",
        ),
        (11, "routes[0].request_headers.remove[0]", "upstream_host"),
        (12, "routes[0].rewrite.regex.replacement", "single /"),
        (13, "routes[0].affinity.cookie.path", "cannot hold ;"),
        (13, "routes[0].affinity.cookie.max_age", "at least 1s"),
        (17, "routes[1].query[0].name", "invalid parameter name"),
        (18, "routes[1].redirect.host", "port is a key of its own"),
        (18, "routes[1].redirect.port", "from 1 to 65535"),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
}

#[test]
fn connection_admission_values_that_would_misbehave_are_refused() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080, proxy_protocol: { timeout: 0s } }
  - name: db
    listen: 127.0.0.1:8081
    proxy_protocol: { timeout: soon }
    connections: { max: 0, max_per_client: 0 }
routes:
  - { name: a, listener: web, upstream: app }
upstreams:
  - { name: app, endpoints: ["127.0.0.1:1"] }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (3, "listeners[0].proxy_protocol.timeout", "at most 60s"),
        (6, "listeners[1].proxy_protocol.timeout", "soon"),
        (7, "listeners[1].connections.max", "at least 1"),
        (7, "listeners[1].connections.max_per_client", "at least 1"),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
}

#[test]
fn auth_errors_name_the_route_and_never_a_hash() {
    let dir = ScratchDir::new();
    let htpasswd = dir.write(
        "htpasswd",
        "ok:{SHA}FZnlXWOVO9N/p/1CgTiwAD+nhRc=\nplain:hunter2\nold:$apr1$abc$def\n",
    );
    let yaml = format!(
        r#"
listeners:
  - {{ name: web, listen: 127.0.0.1:8080 }}
  - {{ name: db, listen: 127.0.0.1:8081, protocol: tcp }}
routes:
  - {{ name: a, listener: web, upstream: app, auth: {{ basic: {{ htpasswd: "{}" }} }} }}
  - {{ name: b, listener: web, paths: [{{ prefix: /b }}], upstream: app, auth: {{ basic: {{ htpasswd: /nonexistent/htpasswd }} }} }}
  - {{ name: c, listener: web, paths: [{{ prefix: /c }}], upstream: app, auth: {{}} }}
  - name: d
    listener: web
    paths: [{{ prefix: /d }}]
    upstream: app
    auth: {{ external: {{ upstream: missing, path: "oauth2", signin: "/start", timeout: 0s }} }}
  - {{ name: e, listener: db, upstream: tcp, auth: {{ external: {{ upstream: app, path: /x }} }} }}
upstreams:
  - {{ name: app, endpoints: ["127.0.0.1:1"] }}
  - {{ name: tcp, protocol: tcp, endpoints: ["127.0.0.1:2"] }}
"#,
        htpasswd.display()
    );
    let (code, text, file) = check(&yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (
            6,
            "routes[0].auth.basic.htpasswd",
            "line 2 (user \"plain\")",
        ),
        (6, "routes[0].auth.basic.htpasswd", "htpasswd -B"),
        (
            7,
            "routes[1].auth.basic.htpasswd",
            "cannot read /nonexistent/htpasswd",
        ),
        (8, "routes[2].auth", "exactly one of basic and external"),
        (13, "routes[3].auth.external.path", "single /"),
        (13, "routes[3].auth.external.signin", "invalid URL"),
        (13, "routes[3].auth.external.timeout", "longer than 0s"),
        (14, "routes[4]", "auth"),
    ];
    let yaml_undefined = r#"
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes:
  - { name: a, listener: web, upstream: app, auth: { external: { upstream: missing, path: /x } } }
upstreams: [{ name: app, endpoints: ["127.0.0.1:1"] }]
"#;
    let (code, undefined, undefined_file) = check(yaml_undefined);
    assert_eq!(code, 1, "{undefined}");
    assert_error(
        &undefined,
        &undefined_file,
        4,
        "routes[0].auth.external.upstream",
        "undefined upstream \"missing\"",
    );
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
    assert!(
        !text.contains("hunter2") && !text.contains("$def"),
        "{text}"
    );
}

#[test]
fn error_page_and_default_backend_errors_are_named() {
    let yaml = r#"
listeners:
  - { name: web, listen: 127.0.0.1:8080, default_backend: { upstream: nowhere } }
  - { name: db, listen: 127.0.0.1:8081, protocol: tcp, default_backend: { upstream: app } }
routes:
  - name: a
    listener: web
    upstream: app
    error_pages:
      - { status: [302, 503], file: /nonexistent/page.html }
      - { status: [], upstream: pages }
      - { status: [404], file: /x, upstream: app }
upstreams:
  - { name: app, endpoints: ["127.0.0.1:1"] }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (
            3,
            "listeners[0].default_backend.upstream",
            "undefined upstream \"nowhere\"",
        ),
        (4, "listeners[1].default_backend", "http listeners only"),
        (
            10,
            "routes[0].error_pages[0].status",
            "302 is not an error status",
        ),
        (
            10,
            "routes[0].error_pages[0].file",
            "cannot read /nonexistent/page.html",
        ),
        (11, "routes[0].error_pages[1].status", "at least one status"),
        (
            12,
            "routes[0].error_pages[2]",
            "exactly one of file and upstream",
        ),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
}

#[test]
fn client_auth_errors_are_named() {
    let dir = ScratchDir::new();
    let certificate = support::tls::self_signed(&dir, "web", &["web.test"]);
    let yaml = format!(
        r#"
listeners:
  - name: web
    listen: 127.0.0.1:8443
    tls:
      certificates: [{{ cert: "{}", key: "{}" }}]
      client_auth: {{ ca: /nonexistent/ca.pem, verify_depth: 0, headers: {{ subject: "bad name" }} }}
  - name: no-ca
    listen: 127.0.0.1:8444
    tls:
      certificates: [{{ cert: "{0}", key: "{1}" }}]
      client_auth: {{ mode: required }}
  - name: any-issuer
    listen: 127.0.0.1:8445
    tls:
      certificates: [{{ cert: "{0}", key: "{1}" }}]
      client_auth: {{ mode: optional }}
routes:
  - {{ name: a, listener: web, upstream: app }}
  - {{ name: b, listener: any-issuer, upstream: app, require_client_certificate: true }}
  - {{ name: c, listener: any-issuer, hosts: [c.test], upstream: app, require_client_certificate: {{ ca: /nonexistent/c.pem }} }}
upstreams:
  - {{ name: app, endpoints: ["127.0.0.1:1"] }}
"#,
        certificate.cert_path.display(),
        certificate.key_path.display()
    );
    let (code, text, file) = check(&yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (
            7,
            "listeners[0].tls.client_auth.ca",
            "cannot read CA file /nonexistent/ca.pem",
        ),
        (7, "listeners[0].tls.client_auth.verify_depth", "at least 1"),
        (
            7,
            "listeners[0].tls.client_auth.headers.subject",
            "invalid header name",
        ),
        (
            12,
            "listeners[1].tls.client_auth.ca",
            "mode: required needs a CA",
        ),
        (
            20,
            "routes[1].require_client_certificate",
            "checked by a CA of its own",
        ),
        (
            21,
            "routes[2].require_client_certificate.ca",
            "cannot read CA file /nonexistent/c.pem",
        ),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
}

#[test]
fn dns_upstream_errors_are_named() {
    let yaml = r#"
server: { resolver: { nameservers: ["dns.local"], timeout: 0s } }
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes:
  - { name: a, listener: web, upstream: ip }
upstreams:
  - { name: ip, dns: { name: 10.0.0.1, port: 0 } }
  - { name: ttl, dns: { name: api.example.com, port: 443, min_ttl: 10s, max_ttl: 1s } }
  - { name: both, endpoints: ["127.0.0.1:1"], dns: { name: api.example.com, port: 443 } }
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    let expected = [
        (2, "server.resolver.nameservers[0]", "dns.local"),
        (2, "server.resolver.timeout", "longer than 0s"),
        (
            7,
            "upstreams[0].dns.name",
            "an IP address goes in endpoints",
        ),
        (7, "upstreams[0].dns.port", "1-65535"),
        (8, "upstreams[1].dns.max_ttl", "not be shorter than min_ttl"),
        (
            9,
            "upstreams[2].dns",
            "one of endpoints, kubernetes and dns",
        ),
    ];
    for (line, key_path, message) in expected {
        assert_error(&text, &file, line, key_path, message);
    }
}

#[test]
fn requiring_client_certificates_needs_a_listener_that_asks_for_them() {
    let yaml = r#"
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes:
  - { name: a, listener: web, upstream: app, require_client_certificate: true }
upstreams: [{ name: app, endpoints: ["127.0.0.1:1"] }]
"#;
    let (code, text, file) = check(yaml);
    assert_eq!(code, 1, "{text}");
    assert_error(
        &text,
        &file,
        4,
        "routes[0].require_client_certificate",
        "does not ask clients for certificates",
    );
}
