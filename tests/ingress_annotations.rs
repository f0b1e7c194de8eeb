//! ingress-nginx annotations through the real binary and the fake API server, one table
//! row per mapped annotation: each row is an Ingress of its own host carrying the
//! annotation, and a request whose answer shows the annotation's effect (as ingress-nginx
//! documents it). Annotations whose effect needs more than one request (cookie affinity,
//! hashing, rate limits) have rows that say so.

mod support;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;
use support::fake_kube::FakeKube;
use support::ingress_objects::*;
use support::*;

/// What a row expects of its request.
enum Expect {
    /// Status, and the backend that answered ("" for sluice's own answer).
    Answer(u16, &'static str),
    /// A redirect: status and Location.
    Redirect(u16, &'static str),
    /// The backend saw this target.
    Target(&'static str),
    /// The backend saw this request header with this value.
    UpstreamHeader(&'static str, &'static str),
    /// The response carries this header with a value starting so.
    ResponseHeader(&'static str, &'static str),
    /// Anything else, checked by a function of the listener address.
    Check(fn(SocketAddr, &Backends)),
}

/// The backends the checks look at.
struct Backends {
    errors: Backend,
    slow: Backend,
}

/// One row: the annotations, path and pathType of an Ingress of host `{name}.test` routing
/// to `web`, then a request (method, path, headers, body) and what it must get.
struct Row {
    name: &'static str,
    annotations: &'static [(&'static str, &'static str)],
    path: (&'static str, &'static str),
    request: (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        usize,
    ),
    expect: Expect,
}

fn rows() -> Vec<Row> {
    let get = |path| ("GET", path, &[][..], 0);
    vec![
        Row {
            name: "rewrite-target",
            annotations: &[("rewrite-target", "/$2")],
            path: ("/something(/|$)(.*)", "ImplementationSpecific"),
            request: get("/something/new?q=1"),
            expect: Expect::Target("/new?q=1"),
        },
        Row {
            name: "use-regex",
            annotations: &[("use-regex", "true")],
            path: ("/v[0-9]+/items", "ImplementationSpecific"),
            request: get("/V2/items"),
            expect: Expect::Answer(200, "web"),
        },
        Row {
            name: "force-ssl-redirect",
            annotations: &[("force-ssl-redirect", "true")],
            path: ("/", "Prefix"),
            request: get("/a?b=1"),
            expect: Expect::Redirect(308, "https://force-ssl-redirect.test/a?b=1"),
        },
        Row {
            name: "ssl-redirect",
            annotations: &[("ssl-redirect", "false")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Answer(200, "web"),
        },
        Row {
            name: "permanent-redirect",
            annotations: &[("permanent-redirect", "https://new.example.com/moved")],
            path: ("/", "Prefix"),
            request: get("/old"),
            expect: Expect::Redirect(301, "https://new.example.com/moved"),
        },
        Row {
            name: "permanent-redirect-code",
            annotations: &[
                ("permanent-redirect", "https://new.example.com/moved"),
                ("permanent-redirect-code", "308"),
            ],
            path: ("/", "Prefix"),
            request: get("/old"),
            expect: Expect::Redirect(308, "https://new.example.com/moved"),
        },
        Row {
            name: "temporal-redirect",
            annotations: &[("temporal-redirect", "https://maintenance.example.com/")],
            path: ("/", "Prefix"),
            request: get("/x"),
            expect: Expect::Redirect(302, "https://maintenance.example.com/"),
        },
        Row {
            name: "app-root",
            annotations: &[("app-root", "/app")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Redirect(302, "/app"),
        },
        Row {
            name: "proxy-body-size",
            annotations: &[("proxy-body-size", "1k")],
            path: ("/", "Prefix"),
            request: ("POST", "/upload", &[], 2048),
            expect: Expect::Answer(413, ""),
        },
        Row {
            name: "proxy-read-timeout",
            annotations: &[("proxy-read-timeout", "1")],
            path: ("/", "Prefix"),
            request: get("/slow"),
            expect: Expect::Check(|http, _| {
                // The backend's /slow takes 3 s (see `main`); the read timeout answers 504.
                let response = Client::connect(http).get("proxy-read-timeout.test", "/slow");
                assert_eq!(response.status, 504);
            }),
        },
        Row {
            name: "upstream-hash-by",
            annotations: &[("upstream-hash-by", "$request_uri")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                // Each URI sticks to one endpoint; different URIs use both. The ring places
                // the endpoints by their (random) ports: with 8 URIs, all of them landed on
                // one endpoint once in 128 runs; with 32, once in 2^31.
                let mut all = HashSet::new();
                for i in 0..32 {
                    let uri = format!("/u{i}");
                    let seen: HashSet<String> = (0..3)
                        .map(|_| {
                            let r = Client::connect(http).get("upstream-hash-by.test", &uri);
                            r.backend().to_string()
                        })
                        .collect();
                    assert_eq!(seen.len(), 1, "{uri} went to {seen:?}");
                    all.extend(seen);
                }
                assert_eq!(all.len(), 2, "32 URIs all hashed to {all:?}");
            }),
        },
        Row {
            name: "affinity",
            annotations: &[
                ("affinity", "cookie"),
                ("session-cookie-name", "route"),
                ("session-cookie-max-age", "3600"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::ResponseHeader("set-cookie", "route="),
        },
        Row {
            name: "whitelist-source-range",
            annotations: &[("whitelist-source-range", "10.0.0.0/8")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Answer(403, ""),
        },
        Row {
            name: "denylist-source-range",
            annotations: &[("denylist-source-range", "127.0.0.0/8")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Answer(403, ""),
        },
        Row {
            name: "auth-type",
            annotations: &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-realm", "Shop staff"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                let response = Client::connect(http).get("auth-type.test", "/");
                assert_eq!(response.status, 401);
                assert_eq!(
                    response.header("www-authenticate"),
                    Some("Basic realm=\"Shop staff\"")
                );
                // alice:password
                let authorized = Client::connect(http).request(
                    "GET",
                    "/",
                    &[
                        ("host", "auth-type.test"),
                        ("authorization", "Basic YWxpY2U6cGFzc3dvcmQ="),
                    ],
                );
                assert_eq!(authorized.status, 200);
            }),
        },
        Row {
            name: "enable-cors",
            annotations: &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.example.com"),
            ],
            path: ("/", "Prefix"),
            request: (
                "OPTIONS",
                "/",
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "PUT"),
                ],
                0,
            ),
            expect: Expect::ResponseHeader(
                "access-control-allow-origin",
                "https://app.example.com",
            ),
        },
        Row {
            name: "limit-rps",
            annotations: &[("limit-rps", "1"), ("limit-burst-multiplier", "1")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                let statuses: Vec<u16> = (0..10)
                    .map(|_| Client::connect(http).get("limit-rps.test", "/").status)
                    .collect();
                assert!(statuses.contains(&429), "{statuses:?}");
            }),
        },
        Row {
            name: "limit-whitelist",
            annotations: &[
                ("limit-rps", "1"),
                ("limit-burst-multiplier", "1"),
                ("limit-whitelist", "127.0.0.0/8"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                for _ in 0..10 {
                    assert_eq!(
                        Client::connect(http)
                            .get("limit-whitelist.test", "/")
                            .status,
                        200
                    );
                }
            }),
        },
        Row {
            name: "limit-connections",
            annotations: &[("limit-connections", "1")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, backends| {
                // One request in flight (the backend takes 3 s); a second one at the same
                // time is refused with nginx's limit_conn status.
                let first = std::thread::spawn(move || {
                    Client::connect(http)
                        .get("limit-connections.test", "/first")
                        .status
                });
                wait_until(
                    "the first request to reach the backend",
                    READY_TIMEOUT,
                    || {
                        backends
                            .slow
                            .requests()
                            .iter()
                            .any(|r| r.target == "/first")
                    },
                );
                let second = Client::connect(http).get("limit-connections.test", "/second");
                assert_eq!(second.status, 503);
                assert_eq!(first.join().expect("first request"), 200);
            }),
        },
        Row {
            name: "server-alias",
            annotations: &[("server-alias", "alias.test, other-alias.test")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                for host in ["server-alias.test", "alias.test", "other-alias.test"] {
                    let response = Client::connect(http).get(host, "/");
                    assert_eq!(
                        (response.status, response.backend()),
                        (200, "web"),
                        "{host}"
                    );
                }
            }),
        },
        Row {
            name: "upstream-vhost",
            annotations: &[("upstream-vhost", "internal.example")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::UpstreamHeader("host", "internal.example"),
        },
        Row {
            name: "x-forwarded-prefix",
            annotations: &[("x-forwarded-prefix", "/shop")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::UpstreamHeader("x-forwarded-prefix", "/shop"),
        },
        Row {
            name: "custom-http-errors",
            annotations: &[
                ("custom-http-errors", "404,503"),
                ("default-backend", "errors"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, backends| {
                // The Service `empty` has no endpoints: sluice's own 503 gets the page of
                // `errors`, asked as ingress-nginx asks a custom default backend.
                let response = Client::connect(http).get("custom-http-errors.test", "/x?y=1");
                assert_eq!(response.status, 503);
                assert_eq!(response.json()["backend"], "errors", "the page is the body");
                let asked = backends.errors.requests();
                let page = asked.last().expect("the error backend was asked");
                assert_eq!(page.header("x-code"), Some("503"));
                assert_eq!(page.header("x-original-uri"), Some("/x?y=1"));
            }),
        },
        Row {
            name: "service-upstream",
            annotations: &[("service-upstream", "true")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                // The Service `direct` has the cluster IP 127.0.0.1 and the port of `web`.
                let response = Client::connect(http).get("service-upstream.test", "/");
                assert_eq!((response.status, response.backend()), (200, "web"));
            }),
        },
        Row {
            name: "canary",
            annotations: &[],
            path: ("/", "Prefix"),
            request: ("GET", "/", &[("x-canary", "always")], 0),
            expect: Expect::Answer(200, "canary"),
        },
        Row {
            name: "canary-weight",
            annotations: &[],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Answer(200, "canary"),
        },
        Row {
            name: "canary-by-cookie",
            annotations: &[],
            path: ("/", "Prefix"),
            request: ("GET", "/", &[("cookie", "beta=always")], 0),
            expect: Expect::Answer(200, "canary"),
        },
        Row {
            name: "from-to-www-redirect",
            annotations: &[("from-to-www-redirect", "true")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                // The rule's host is from-to-www-redirect.test; its www. name redirects to it.
                let response = Client::connect(http).get("www.from-to-www-redirect.test", "/a");
                assert_eq!(response.status, 308);
                let location = response.header("location").unwrap_or_default();
                assert!(
                    location.starts_with("http://from-to-www-redirect.test"),
                    "{location}"
                );
            }),
        },
        Row {
            name: "limit-rpm",
            annotations: &[("limit-rpm", "60"), ("limit-burst-multiplier", "1")],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                let statuses: Vec<u16> = (0..10)
                    .map(|_| Client::connect(http).get("limit-rpm.test", "/").status)
                    .collect();
                assert!(statuses.contains(&429), "{statuses:?}");
            }),
        },
        Row {
            name: "auth-url",
            annotations: &[
                (
                    "auth-url",
                    "http://errors.shop.svc.cluster.local:80/check?x=1",
                ),
                ("auth-method", "POST"),
                ("auth-response-headers", "x-backend"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, backends| {
                // The `errors` backend answers every check 200 (and names itself in
                // X-Backend, which goes upstream as the user would).
                let response = Client::connect(http).get("auth-url.test", "/private");
                assert_eq!((response.status, response.backend()), (200, "web"));
                assert_eq!(response.json()["headers"]["x-backend"], "errors");
                let checks = backends.errors.requests();
                let check = checks
                    .iter()
                    .find(|r| r.target == "/check?x=1")
                    .expect("a check");
                assert_eq!(check.method, "POST");
                assert_eq!(check.header("x-original-uri"), Some("/private"));
            }),
        },
        Row {
            name: "session-cookie-samesite",
            annotations: &[
                ("affinity", "cookie"),
                ("session-cookie-samesite", "Strict"),
                ("session-cookie-secure", "true"),
                ("session-cookie-path", "/app"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Check(|http, _| {
                let response = Client::connect(http).get("session-cookie-samesite.test", "/");
                let cookie = response.header("set-cookie").unwrap_or_default();
                for part in ["INGRESSCOOKIE=", "Path=/app", "SameSite=Strict", "Secure"] {
                    assert!(cookie.contains(part), "{cookie}");
                }
            }),
        },
        Row {
            name: "enable-websockets",
            annotations: &[
                ("enable-websockets", "true"),
                ("client-body-buffer-size", "16k"),
            ],
            path: ("/", "Prefix"),
            request: get("/"),
            expect: Expect::Answer(200, "web"),
        },
    ]
}

#[test]
fn each_mapped_annotation_has_its_effect() {
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    let _web2 = Backend::start_on(
        "web2",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 2], web.address.port())),
    );
    let slow = Backend::start("web", Behavior::Delay(std::time::Duration::from_secs(3)));
    let canary = Backend::start("canary", Behavior::Echo);
    let errors = Backend::start("errors", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    // `pair`: web and web2, on the same port (as pods are), for the hashing row.
    service(&kube, "pair", &web);
    kube.apply(support::fake_kube::slice(
        NS,
        "pair-2",
        "pair",
        ("http", web.address.port()),
        &[support::fake_kube::ready("127.0.0.2")],
    ));
    service(&kube, "slow", &slow);
    service(&kube, "canary", &canary);
    service(&kube, "errors", &errors);
    kube.apply::<Service>(object(json!({
        "metadata": {"name": "direct", "namespace": NS},
        "spec": {"clusterIP": "127.0.0.1", "ports": [{"name": "http", "port": web.address.port()}]},
    })));
    kube.apply::<Service>(object(json!({
        "metadata": {"name": "empty", "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    })));
    kube.apply::<Secret>(object(json!({
        "metadata": {"name": "users", "namespace": NS},
        "stringData": {"auth": "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"},
    })));
    let rows = rows();
    for row in &rows {
        let host = format!("{}.test", row.name);
        let target = match row.name {
            "proxy-read-timeout" | "limit-connections" => "slow",
            "upstream-hash-by" => "pair",
            "service-upstream" => "direct",
            "custom-http-errors" => "empty",
            _ => "web",
        };
        let mut ingress: Ingress = ingress(
            row.name,
            "sluice",
            &[(&host, &[(row.path.0, row.path.1, target)])],
        );
        if target == "direct" {
            let rules = ingress.spec.as_mut().and_then(|s| s.rules.as_mut());
            let path = &mut rules.expect("rules")[0].http.as_mut().expect("http").paths[0];
            path.backend = object(
                json!({"service": {"name": "direct", "port": {"number": web.address.port()}}}),
            );
        }
        kube.apply(annotated(ingress, row.annotations));
    }
    kube.apply(annotated(
        ingress(
            "canary-of-canary",
            "sluice",
            &[("canary.test", &[("/", "Prefix", "canary")])],
        ),
        &[("canary", "true"), ("canary-by-header", "x-canary")],
    ));
    kube.apply(annotated(
        ingress(
            "canary-weight-canary",
            "sluice",
            &[("canary-weight.test", &[("/", "Prefix", "canary")])],
        ),
        &[("canary", "true"), ("canary-weight", "100")],
    ));
    kube.apply(annotated(
        ingress(
            "canary-by-cookie-canary",
            "sluice",
            &[("canary-by-cookie.test", &[("/", "Prefix", "canary")])],
        ),
        &[("canary", "true"), ("canary-by-cookie", "beta")],
    ));
    let http = listen_address();
    let config = format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners: [{{ name: http, listen: \"{http}\" }}]\n\
         ingress: {{ http_listener: http, https_redirect_port: 443 }}\n\
         routes: []\n",
        kube.url()
    );
    let sluice = Sluice::start(&config);
    let rejected = sluice.admin_get("/config").expect("/config").json()["rejected"].clone();
    assert_eq!(rejected, json!([]), "every row's Ingress is valid");
    let backends = Backends { errors, slow };
    for row in &rows {
        let host = format!("{}.test", row.name);
        let (method, path, headers, body) = row.request;
        let mut all_headers = vec![("host", host.as_str())];
        all_headers.extend_from_slice(headers);
        let body = vec![b'x'; body];
        let send = || {
            Client::connect(http)
                .try_request(method, path, &all_headers, &body)
                .unwrap_or_else(|| panic!("{}: no answer", row.name))
        };
        match &row.expect {
            Expect::Answer(status, backend) => {
                let response = send();
                let got = (
                    response.status,
                    response.header("x-backend").unwrap_or_default(),
                );
                assert_eq!(got, (*status, *backend), "{}", row.name);
            }
            Expect::Redirect(status, location) => {
                let response = send();
                assert_eq!(response.status, *status, "{}", row.name);
                assert_eq!(response.header("location"), Some(*location), "{}", row.name);
            }
            Expect::Target(target) => {
                let response = send();
                assert_eq!(response.status, 200, "{}", row.name);
                assert_eq!(response.json()["target"], json!(target), "{}", row.name);
            }
            Expect::UpstreamHeader(name, value) => {
                let response = send();
                assert_eq!(response.status, 200, "{}", row.name);
                let seen = response.json()["headers"][*name].clone();
                assert_eq!(seen, json!(value), "{}", row.name);
            }
            Expect::ResponseHeader(name, prefix) => {
                let response = send();
                let value = response.header(name).unwrap_or_default();
                assert!(value.starts_with(prefix), "{}: {name}: {value:?}", row.name);
            }
            Expect::Check(check) => check(http, &backends),
        }
    }
}
