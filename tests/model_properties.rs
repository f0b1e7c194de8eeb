//! Property tests of the model (issue #14): the config loader, hash-key templates and
//! routing, on library code.
//!
//! - A config text, random or built from real keys with random values, either validates or
//!   is refused with errors that each name the file and a line: never a panic.
//! - A hash-key template either compiles or is refused with a message; a compiled one
//!   evaluates any request without panicking, to the same key each time.
//! - The route table picks what a plain restatement of the documented precedence picks
//!   (host: exact, longest `*.suffix`, no host; path: exact, first regex, longest prefix).
//!
//! `make test` runs `SLUICE_FUZZ_CASES` cases of each (default 64); `make fuzz` runs 2,000.

use pingora::http::RequestHeader;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice::model::{HostMatch, Origin, PathMatch, RouteConfig};
use sluice::routing::RouteTable;
use sluice::sources::file as config;
use sluice::upstream::hash_key::{HashKey, RequestFacts};
use std::path::Path;

fn runner() -> TestRunner {
    let cases = std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------------------
// Config loader
// ---------------------------------------------------------------------------------------

/// A value that is sometimes right for a key and often wrong.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("5s".to_string()),
        Just("0s".to_string()),
        Just("-1s".to_string()),
        Just("1m".to_string()),
        Just("64m".to_string()),
        Just("100".to_string()),
        Just("0".to_string()),
        Just("99999999999".to_string()),
        Just("true".to_string()),
        Just("\"127.0.0.1:8080\"".to_string()),
        Just("\"[::1]:9\"".to_string()),
        Just("nowhere".to_string()),
        Just("\"$host$request_uri\"".to_string()),
        Just("\"${bad\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        "[a-z0-9_./:$-]{0,12}",
    ]
}

/// `{ key: value, ... }` with keys a listener, route or upstream may have, and some it may not.
fn mapping(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(keys), value()), 0..6).prop_map(|fields| {
        let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{ {} }}", fields.join(", "))
    })
}

const LISTENER_KEYS: &[&str] = &[
    "name", "listen", "protocol", "h2c", "tls", "requests", "bogus",
];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "listener",
    "hosts",
    "paths",
    "upstream",
    "max_body_size",
    "request_buffering",
    "rate_limit",
    "timeouts",
];
const UPSTREAM_KEYS: &[&str] = &[
    "name",
    "endpoints",
    "balance",
    "hash_key",
    "hash_points",
    "protocol",
    "retry",
    "health",
    "slow_start",
    "keepalive",
    "timeouts",
];

/// A config document built from real sections with random contents, around one valid
/// listener, route and upstream (so that some cases validate).
fn config_text() -> impl Strategy<Value = String> {
    // Often no random section at all, so that some documents validate.
    let extra = |keys| {
        prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec(mapping(keys), 1..3),
        ]
    };
    (
        extra(LISTENER_KEYS),
        extra(ROUTE_KEYS),
        extra(UPSTREAM_KEYS),
        prop_oneof![3 => Just("30s".to_string()), 1 => value()],
        any::<bool>(),
    )
        .prop_map(|(listeners, routes, upstreams, server_value, valid_core)| {
            let mut text = format!("server: {{ grace_period: {server_value} }}\n");
            let core = valid_core
                .then(|| {
                    (
                        "{ name: web, listen: \"127.0.0.1:8080\" }".to_string(),
                        "{ name: all, listener: web, upstream: app }".to_string(),
                        "{ name: app, endpoints: [\"127.0.0.1:9000\"] }".to_string(),
                    )
                })
                .into_iter();
            let (mut l, mut r, mut u) = (Vec::new(), Vec::new(), Vec::new());
            for (listener, route, upstream) in core {
                l.push(listener);
                r.push(route);
                u.push(upstream);
            }
            l.extend(listeners);
            r.extend(routes);
            u.extend(upstreams);
            for (key, items) in [("listeners", l), ("routes", r), ("upstreams", u)] {
                text.push_str(&format!("{key}:\n"));
                for item in items {
                    text.push_str(&format!("  - {item}\n"));
                }
            }
            text
        })
}

/// Parses `text`; a refusal must locate every error.
fn parse_located(text: &str) -> Result<bool, TestCaseError> {
    match config::parse(Path::new("t.yaml"), text) {
        Ok(_) => Ok(true),
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "refused without an error");
            for error in &errors.0 {
                prop_assert_eq!(&error.file, "t.yaml");
                prop_assert!(error.position.line >= 1, "no line: {}", error);
                prop_assert!(!error.message.is_empty());
                prop_assert!(
                    error.to_string().starts_with("t.yaml:"),
                    "unlocated: {}",
                    error
                );
            }
            Ok(false)
        }
    }
}

#[test]
fn configs_validate_or_are_refused_with_located_errors() {
    let valid = std::cell::Cell::new(0);
    let refused = std::cell::Cell::new(0);
    runner()
        .run(&config_text(), |text| {
            let counter = if parse_located(&text)? {
                &valid
            } else {
                &refused
            };
            counter.set(counter.get() + 1);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (valid, refused) = (valid.get(), refused.get());
    eprintln!("{valid} configs valid, {refused} refused");
    assert!(refused > 0, "the generator never produced a bad config");
    // The valid core alone must validate, so that the cases above can.
    let core = "listeners:\n  - { name: web, listen: \"127.0.0.1:8080\" }\n\
                routes:\n  - { name: all, listener: web, upstream: app }\n\
                upstreams:\n  - { name: app, endpoints: [\"127.0.0.1:9000\"] }\n";
    assert!(
        parse_located(core).is_ok_and(|valid| valid),
        "the core config is refused"
    );
}

#[test]
fn arbitrary_text_never_panics_the_loader() {
    runner()
        .run(&"(?s).{0,200}", |text| parse_located(&text).map(|_| ()))
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------
// Hash-key templates
// ---------------------------------------------------------------------------------------

fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("$host".to_string()),
        Just("$request_uri".to_string()),
        Just("$uri".to_string()),
        Just("$remote_addr".to_string()),
        Just("$arg_user".to_string()),
        Just("$http_x_user".to_string()),
        Just("$cookie_session".to_string()),
        Just("${host}".to_string()),
        Just("${".to_string()),
        Just("$".to_string()),
        Just("$nope".to_string()),
        "[a-z/:{}-]{0,4}",
    ];
    prop::collection::vec(piece, 0..5).prop_map(|pieces| pieces.concat())
}

fn request() -> impl Strategy<Value = (String, String, Option<String>)> {
    (
        "[a-z.]{0,10}",
        "/[a-z0-9/?=&%]{0,16}",
        prop::option::of("[ -~]{0,20}"),
    )
}

#[test]
fn hash_key_templates_compile_or_are_refused_and_evaluate_stably() {
    runner()
        .run(
            &(template(), request()),
            |(template, (host, uri, header_value))| {
                let key = match HashKey::parse(&template) {
                    Ok(key) => key,
                    Err(message) => {
                        prop_assert!(!message.is_empty());
                        return Ok(());
                    }
                };
                let mut header = RequestHeader::build("GET", uri.as_bytes(), None)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let _ = header.insert_header("host", host.as_str());
                if let Some(value) = &header_value {
                    let _ = header.insert_header("x-user", value.as_str());
                    let _ = header.insert_header("cookie", format!("session={value}"));
                }
                let facts = RequestFacts {
                    header: Some(&header),
                    client_ip: Some([10, 0, 0, 1].into()),
                    scheme: "http",
                };
                let first = key.with_key(&facts, <[u8]>::to_vec);
                let second = key.with_key(&facts, <[u8]>::to_vec);
                prop_assert_eq!(first, second);
                if !template.contains('$') {
                    key.with_key(&facts, |k| assert_eq!(k, template.as_bytes()));
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

const HOSTS: &[&str] = &["a.test", "b.a.test", "*.a.test", "*.test", "*.b.a.test"];
const PATHS: &[(&str, &str)] = &[
    ("exact", "/x"),
    ("prefix", "/"),
    ("prefix", "/x"),
    ("prefix", "/x/y"),
    ("exact", "/x/y"),
    ("regex", "^/r[0-9]+$"),
    ("regex", "^/x"),
    ("segment", "/x"),
    ("segment", "/"),
];
const QUERY_HOSTS: &[&str] = &[
    "a.test",
    "b.a.test",
    "c.a.test",
    "d.b.a.test",
    "z.test",
    "other",
];
const QUERY_PATHS: &[&str] = &["/", "/x", "/x/", "/x/y", "/x/yz", "/r1", "/q", "/xq"];

fn path_match(kind: &str, text: &str) -> PathMatch {
    match kind {
        "exact" => PathMatch::Exact(text.into()),
        "prefix" => PathMatch::Prefix(text.into()),
        "segment" => PathMatch::SegmentPrefix(text.into()),
        _ => PathMatch::Regex(regex::Regex::new(text).expect("test regex")),
    }
}

fn host_match(host: &str) -> HostMatch {
    match host.strip_prefix('*') {
        Some(suffix) => HostMatch::Suffix(suffix.to_string()),
        None => HostMatch::Exact(host.to_string()),
    }
}

/// Routes as (hosts, paths) index lists.
fn routes() -> impl Strategy<Value = Vec<(Vec<usize>, Vec<usize>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(0..HOSTS.len(), 0..3),
            prop::collection::vec(0..PATHS.len(), 1..3),
        ),
        1..6,
    )
}

fn route_config(i: usize, hosts: &[usize], paths: &[usize]) -> RouteConfig {
    let name = format!("r{i}");
    let mut route = RouteConfig::new(&name, Origin::object("Test", "default", &name), "web", "u");
    route.hosts = hosts.iter().map(|&h| host_match(HOSTS[h])).collect();
    route.paths = paths
        .iter()
        .map(|&p| path_match(PATHS[p].0, PATHS[p].1))
        .collect();
    route
}

/// The documented precedence, restated without indexes or sorting.
fn reference(routes: &[std::sync::Arc<RouteConfig>], host: &str, path: &str) -> Option<usize> {
    let has = |route: &RouteConfig, wanted: &HostMatch| route.hosts.iter().any(|h| h == wanted);
    let exact = HostMatch::Exact(host.to_string());
    let group: Vec<usize> = if routes.iter().any(|r| has(r, &exact)) {
        (0..routes.len())
            .filter(|&i| has(&routes[i], &exact))
            .collect()
    } else {
        let best_suffix = routes
            .iter()
            .flat_map(|r| r.hosts.iter())
            .filter_map(|h| match h {
                HostMatch::Suffix(s) if host.len() > s.len() && host.ends_with(s.as_str()) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .max_by_key(|s| s.len());
        match best_suffix {
            Some(suffix) => {
                let wanted = HostMatch::Suffix(suffix);
                (0..routes.len())
                    .filter(|&i| has(&routes[i], &wanted))
                    .collect()
            }
            None => (0..routes.len())
                .filter(|&i| routes[i].hosts.is_empty())
                .collect(),
        }
    };
    let matches = |pick: &dyn Fn(&PathMatch) -> bool| {
        group
            .iter()
            .flat_map(|&i| routes[i].paths.iter().map(move |p| (i, p)))
            .filter(|(_, p)| pick(p))
            .map(|(i, p)| (i, p.clone()))
            .collect::<Vec<_>>()
    };
    if let Some((i, _)) = matches(&|p| matches!(p, PathMatch::Exact(e) if e == path)).first() {
        return Some(*i);
    }
    if let Some((i, _)) = matches(&|p| matches!(p, PathMatch::Regex(r) if r.is_match(path))).first()
    {
        return Some(*i);
    }
    // A segment prefix matches itself and what continues it after a `/`.
    let segment = |x: &str| {
        x == "/"
            || path == x
            || path
                .strip_prefix(x)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let prefixes = matches(&|p| match p {
        PathMatch::Prefix(x) => path.starts_with(x.as_str()),
        PathMatch::SegmentPrefix(x) => segment(x),
        _ => false,
    });
    let written = |p: &PathMatch| match p {
        PathMatch::Prefix(x) | PathMatch::SegmentPrefix(x) => x.len(),
        _ => 0,
    };
    let length = prefixes.iter().map(|(_, p)| written(p)).max()?;
    prefixes
        .iter()
        .find(|(_, p)| written(p) == length)
        .map(|(i, _)| *i)
}

#[test]
fn routing_matches_the_reference_model() {
    runner()
        .run(&routes(), |spec| {
            let routes: Vec<std::sync::Arc<RouteConfig>> = spec
                .iter()
                .enumerate()
                .map(|(i, (hosts, paths))| std::sync::Arc::new(route_config(i, hosts, paths)))
                .collect();
            let table = RouteTable::build("web", &routes, &[]);
            for host in QUERY_HOSTS {
                for path in QUERY_PATHS {
                    let request =
                        RequestHeader::build("GET", path.as_bytes(), None).expect("test request");
                    prop_assert_eq!(
                        table
                            .find(host, path.as_bytes(), &request)
                            .map(|found| found.route),
                        reference(&routes, host, path),
                        "host {} path {} routes {:?}",
                        host,
                        path,
                        spec
                    );
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
