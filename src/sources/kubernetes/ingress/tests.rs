//! The translation of Ingresses, table by table.

use super::annotations::PREFIX;
use super::*;
use k8s_openapi::api::core::v1::{ServicePort as CorePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

fn settings() -> IngressSettings {
    IngressSettings::new("http", Some("https"))
}

fn service(name: &str, ports: &[(Option<&str>, i32)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| CorePort {
                        name: name.map(str::to_string),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

fn backend(service: &str, port: u16) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.into(),
            port: Some(ServiceBackendPort {
                number: Some(i32::from(port)),
                name: None,
            }),
        }),
        resource: None,
    }
}

/// An Ingress of namespace `shop` with one rule of `paths` (path, pathType, service).
fn ingress(name: &str, host: Option<&str>, paths: &[(&str, &str, &str)]) -> Ingress {
    Ingress {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            annotations: Some(Default::default()),
            ..Default::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: Some("sluice".into()),
            rules: Some(vec![IngressRule {
                host: host.map(str::to_string),
                http: Some(HTTPIngressRuleValue {
                    paths: paths
                        .iter()
                        .map(|(path, path_type, service)| HTTPIngressPath {
                            path: Some(path.to_string()),
                            path_type: path_type.to_string(),
                            backend: backend(service, 80),
                        })
                        .collect(),
                }),
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn annotate(mut ingress: Ingress, pairs: &[(&str, &str)]) -> Ingress {
    let annotations = ingress
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (k, v) in pairs {
        annotations.insert(format!("{PREFIX}{k}"), v.to_string());
    }
    ingress
}

fn cluster() -> ObjectSet {
    let mut set = ObjectSet::default();
    for s in [
        service("web", &[(Some("http"), 80)]),
        service("api", &[(None, 80)]),
        service("web-canary", &[(Some("http"), 80)]),
    ] {
        set.services.insert(key_of(&s.metadata), s);
    }
    set
}

fn run(ingress: &Ingress, cluster: &ObjectSet) -> Translation {
    translate(ingress, cluster, &settings(), References::Strict)
}

fn tls_secret(name: &str, host: &str) -> Secret {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
                (
                    "tls.key".to_string(),
                    ByteString(key.serialize_pem().into_bytes()),
                ),
            ]
            .into(),
        ),
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    }
}

#[test]
fn each_path_type_becomes_its_match() {
    let i = ingress(
        "web",
        Some("shop.example.com"),
        &[
            ("/exact", "Exact", "web"),
            ("/prefix/", "Prefix", "web"),
            ("/", "Prefix", "web"),
            ("/impl", "ImplementationSpecific", "web"),
        ],
    );
    let t = run(&i, &cluster());
    assert!(!t.report.rejected(), "{}", t.report);
    let keys: Vec<String> = t.fragment.routes.iter().map(|r| r.paths[0].key()).collect();
    assert_eq!(
        keys,
        [
            "exact:/exact",
            "segment_prefix:/prefix/",
            "prefix:/",
            "prefix:/impl"
        ]
    );
    let route = &t.fragment.routes[0];
    assert_eq!(route.listener, "http");
    assert_eq!(route.hosts, [HostMatch::Exact("shop.example.com".into())]);
    // One upstream for the one Service port, fed by its EndpointSlices' port name.
    assert_eq!(t.fragment.upstreams.len(), 1);
    let upstream = &t.fragment.upstreams[0];
    assert_eq!(upstream.name, "shop/web/web:80");
    assert!(matches!(&upstream.source, EndpointSource::Kubernetes(s)
        if s.service == "web" && s.port == ServicePort::Name("http".into())));
}

#[test]
fn wildcard_hosts_and_unnamed_ports() {
    let i = ingress("api", Some("*.example.com"), &[("/", "Prefix", "api")]);
    let t = run(&i, &cluster());
    assert_eq!(
        t.fragment.routes[0].hosts,
        [HostMatch::Suffix(".example.com".into())]
    );
    assert!(
        matches!(&t.fragment.upstreams[0].source, EndpointSource::Kubernetes(s)
        if s.port == ServicePort::Name(String::new()))
    );
}

#[test]
fn use_regex_and_rewrite_target_make_regex_paths() {
    let i = annotate(
        ingress(
            "web",
            Some("a.example"),
            &[("/something(/|$)(.*)", "ImplementationSpecific", "web")],
        ),
        &[("rewrite-target", "/$2")],
    );
    let t = run(&i, &cluster());
    assert!(!t.report.rejected(), "{}", t.report);
    let route = &t.fragment.routes[0];
    let PathMatch::Regex(regex) = &route.paths[0] else {
        panic!("{:?}", route.paths);
    };
    assert!(regex.is_match("/SOMETHING/else"));
    let Some(PathRewrite::Regex {
        pattern,
        replacement,
    }) = &route.filters.rewrite.path
    else {
        panic!("no regex rewrite");
    };
    // nginx's rewrite: the case-insensitive path regex, unanchored, and the target as
    // written ($N are capture groups).
    assert_eq!(pattern.as_str(), "(?i)/something(/|$)(.*)");
    assert_eq!(replacement, "/$2");
    let bad = annotate(
        ingress("web", None, &[("/(unclosed", "Prefix", "web")]),
        &[("use-regex", "true")],
    );
    let t = run(&bad, &cluster());
    assert_eq!(t.report.reason(), Some(Reason::InvalidSpec), "{}", t.report);
}

#[test]
fn tls_hosts_get_https_routes_a_certificate_and_the_redirect() {
    let mut i = ingress("web", Some("shop.example.com"), &[("/", "Prefix", "web")]);
    i.spec.as_mut().expect("spec").tls = Some(vec![IngressTLS {
        hosts: Some(vec!["shop.example.com".into()]),
        secret_name: Some("shop-tls".into()),
    }]);
    let mut c = cluster();
    let secret = tls_secret("shop-tls", "shop.example.com");
    c.secrets.insert(key_of(&secret.metadata), secret);
    let t = run(&i, &c);
    assert!(!t.report.rejected(), "{}", t.report);
    assert_eq!(t.fragment.certificates.len(), 1);
    assert_eq!(t.fragment.certificates[0].listener, "https");
    let listeners: Vec<(&str, bool)> = t
        .fragment
        .routes
        .iter()
        .map(|r| (r.listener.as_str(), r.filters.https_redirect.is_some()))
        .collect();
    assert_eq!(listeners, [("http", true), ("https", false)]);
    // ssl-redirect: "false" keeps plain http.
    let t = run(&annotate(i.clone(), &[("ssl-redirect", "false")]), &c);
    assert!(t.fragment.routes[0].filters.https_redirect.is_none());
    // A missing Secret serves on, with a warning, the default certificate and no redirect.
    let t = run(&i, &cluster());
    assert!(!t.report.rejected(), "{}", t.report);
    assert!(t.fragment.certificates.is_empty());
    assert!(t.fragment.routes[0].filters.https_redirect.is_none());
    assert!(
        t.report.warnings[0].contains("shop-tls not found"),
        "{}",
        t.report
    );
}

#[test]
fn default_backend_claims_every_host() {
    let mut i = ingress("fallback", None, &[]);
    let spec = i.spec.as_mut().expect("spec");
    spec.rules = None;
    spec.default_backend = Some(backend("web", 80));
    let t = run(&i, &cluster());
    assert!(!t.report.rejected(), "{}", t.report);
    let route = &t.fragment.routes[0];
    assert!(route.hosts.is_empty() && route.paths.is_empty());
    assert_eq!(route.name, "shop/fallback/default");
    assert_eq!(t.fragment.routes.len(), 2, "http and https");
}

#[test]
fn missing_services_and_ports_reject_the_object() {
    let t = run(
        &ingress("web", None, &[("/", "Prefix", "nope")]),
        &cluster(),
    );
    assert_eq!(t.report.reason(), Some(Reason::MissingService));
    assert!(t
        .report
        .error_message()
        .contains("Service shop/nope not found"));
    let mut i = ingress("web", None, &[("/", "Prefix", "web")]);
    i.spec
        .as_mut()
        .expect("spec")
        .rules
        .as_mut()
        .expect("rules")[0]
        .http
        .as_mut()
        .expect("http")
        .paths[0]
        .backend = backend("web", 8080);
    let t = run(&i, &cluster());
    assert!(
        t.report.error_message().contains("has no port 8080"),
        "{}",
        t.report
    );
    // The migration report assumes what a file does not hold.
    let t = translate(
        &ingress("web", None, &[("/", "Prefix", "nope")]),
        &ObjectSet::default(),
        &settings(),
        References::Assumed,
    );
    assert!(!t.report.rejected(), "{}", t.report);
}

#[test]
fn snippets_reject_with_a_reason() {
    let i = annotate(
        ingress("web", None, &[("/", "Prefix", "web")]),
        &[("configuration-snippet", "return 200;")],
    );
    let t = run(&i, &cluster());
    assert_eq!(t.report.reason(), Some(Reason::RefusedAnnotation));
    assert!(t.report.error_message().contains("CVE-2025-1974"));
}

#[test]
fn canary_ingresses_join_the_main_route() {
    let main = ingress("web", Some("a.example"), &[("/", "Prefix", "web")]);
    let canary = annotate(
        ingress(
            "web-canary",
            Some("a.example"),
            &[("/", "Prefix", "web-canary")],
        ),
        &[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes"),
            ("canary-weight", "20"),
        ],
    );
    let mut c = cluster();
    for i in [&main, &canary] {
        c.ingresses.insert(key_of(&i.metadata), i.clone());
    }
    let t = run(&main, &c);
    let route = &t.fragment.routes[0];
    let canary_route = route.canary.as_ref().expect("canary");
    assert_eq!(
        canary_route.upstream,
        "shop/web/canary/web-canary/web-canary:80"
    );
    assert_eq!((canary_route.weight, canary_route.weight_total), (20, 100));
    let header = canary_route.header.as_ref().expect("header");
    assert_eq!(header.name, "x-canary");
    assert!(t
        .fragment
        .upstreams
        .iter()
        .any(|u| u.name == canary_route.upstream));
    // The canary Ingress itself serves nothing of its own.
    let t = run(&canary, &c);
    assert!(
        t.fragment.routes.is_empty() && t.report.warnings.is_empty(),
        "{}",
        t.report
    );
}

#[test]
fn basic_auth_reads_the_secret_and_fails_closed() {
    let i = annotate(
        ingress("web", None, &[("/", "Prefix", "web")]),
        &[
            ("auth-type", "basic"),
            ("auth-secret", "users"),
            ("auth-realm", "Shop"),
        ],
    );
    let t = run(&i, &cluster());
    assert_eq!(
        t.report.reason(),
        Some(Reason::MissingSecret),
        "{}",
        t.report
    );
    let mut c = cluster();
    let hash = bcrypt::hash("secret", 4).expect("hash");
    let users = Secret {
        metadata: ObjectMeta {
            name: Some("users".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "auth".to_string(),
                ByteString(format!("alice:{hash}\n").into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    c.secrets.insert(key_of(&users.metadata), users);
    let t = run(&i, &c);
    assert!(!t.report.rejected(), "{}", t.report);
    let Some(Auth::Basic(basic)) = &t.fragment.routes[0].auth else {
        panic!("no basic auth");
    };
    assert_eq!(basic.realm, "Shop");
    assert!(basic.users.hash_of("alice").is_some());
    let other_namespace = annotate(i, &[("auth-secret", "kube-system/users")]);
    let t = run(&other_namespace, &c);
    assert!(
        t.report.error_message().contains("another namespace"),
        "{}",
        t.report
    );
}

#[test]
fn external_name_and_service_upstream() {
    let mut c = cluster();
    let mut external = service("db", &[(None, 5432)]);
    let spec = external.spec.as_mut().expect("spec");
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some("db.example.net".into());
    c.services.insert(key_of(&external.metadata), external);
    let mut i = ingress("web", None, &[("/", "Prefix", "db")]);
    i.spec
        .as_mut()
        .expect("spec")
        .rules
        .as_mut()
        .expect("rules")[0]
        .http
        .as_mut()
        .expect("http")
        .paths[0]
        .backend = backend("db", 5432);
    let t = run(&i, &c);
    assert!(
        matches!(&t.fragment.upstreams[0].source, EndpointSource::Dns(d)
        if d.name == "db.example.net" && d.port == 5432),
        "{:?}",
        t.fragment.upstreams
    );
    let t = run(
        &annotate(
            ingress("web", None, &[("/", "Prefix", "web")]),
            &[("service-upstream", "true")],
        ),
        &cluster(),
    );
    assert_eq!(t.fragment.upstreams[0].source, EndpointSource::Static);
    assert_eq!(
        t.fragment.upstreams[0].endpoints[0].address,
        "10.96.0.10:80".parse().expect("address")
    );
}

#[test]
fn upstream_annotations_shape_the_upstream() {
    let i = annotate(
        ingress("web", None, &[("/", "Prefix", "web")]),
        &[
            ("upstream-hash-by", "$host$request_uri"),
            ("backend-protocol", "HTTPS"),
            (
                "proxy-next-upstream",
                "error timeout http_502 http_503 non_idempotent",
            ),
            ("proxy-next-upstream-tries", "3"),
        ],
    );
    let t = run(&i, &cluster());
    let u = &t.fragment.upstreams[0];
    assert_eq!(u.balance, BalancePolicy::ConsistentHash);
    assert_eq!(
        u.hash_key.as_ref().map(HashKey::template),
        Some("$host$request_uri")
    );
    assert_eq!(
        u.tls.as_ref().map(|t| (t.sni.as_str(), t.verify)),
        Some(("web.shop.svc", false))
    );
    assert_eq!((u.retry.attempts, u.retry.methods), (3, RetryMethods::All));
    assert_eq!(u.retry.on_status.iter().collect::<Vec<_>>(), [502, 503]);
}

#[test]
fn an_ingress_default_backend_with_rules_is_its_hosts_root() {
    let mut i = ingress("web", Some("a.example"), &[("/api", "Prefix", "api")]);
    i.spec.as_mut().expect("spec").default_backend = Some(backend("web", 80));
    let t = run(&i, &cluster());
    assert!(!t.report.rejected(), "{}", t.report);
    let http: Vec<(Vec<String>, Vec<String>, &str)> = t
        .fragment
        .routes
        .iter()
        .filter(|r| r.listener == "http")
        .map(|r| {
            (
                r.hosts.iter().map(HostMatch::key).collect(),
                r.paths.iter().map(PathMatch::key).collect(),
                r.backends[0].upstream.as_str(),
            )
        })
        .collect();
    assert_eq!(
        http,
        [
            (
                vec!["a.example".to_string()],
                vec!["segment_prefix:/api".to_string()],
                "shop/web/api:80"
            ),
            (
                vec!["a.example".to_string()],
                vec!["prefix:/".to_string()],
                "shop/web/web:80"
            ),
        ],
        "no hostless catch-all from an Ingress with rules"
    );
}

#[test]
fn a_required_client_certificate_refuses_plain_http() {
    let mut c = cluster();
    let ca = Secret {
        metadata: ObjectMeta {
            name: Some("client-ca".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "ca.crt".to_string(),
                ByteString(
                    tls_secret("x", "ca.example").data.expect("data")["tls.crt"]
                        .0
                        .clone(),
                ),
            )]
            .into(),
        ),
        ..Default::default()
    };
    c.secrets.insert(key_of(&ca.metadata), ca);
    let i = annotate(
        ingress("web", Some("a.example"), &[("/", "Prefix", "web")]),
        &[
            ("auth-tls-secret", "client-ca"),
            ("auth-tls-verify-client", "on"),
        ],
    );
    let t = run(&i, &c);
    assert!(!t.report.rejected(), "{}", t.report);
    // No TLS section: the host is plain http only, which cannot carry a certificate.
    let route = &t.fragment.routes[0];
    assert_eq!(route.listener, "http");
    assert!(!route.access.admits(Some([192, 0, 2, 1].into())));
    assert!(!route
        .access
        .admits(Some("2001:db8::1".parse().expect("ip"))));
}

#[test]
fn ssl_passthrough_routes_each_hosts_root_by_server_name() {
    let i = annotate(
        ingress(
            "argocd",
            Some("cd.example.com"),
            &[("/", "Prefix", "web"), ("/api", "Prefix", "api")],
        ),
        &[("ssl-passthrough", "true")],
    );
    let settings = IngressSettings {
        passthrough_listener: Some("tls".into()),
        ..settings()
    };
    let t = translate(&i, &cluster(), &settings, References::Strict);
    assert!(!t.report.rejected(), "{}", t.report);
    let passthrough: Vec<&RouteConfig> = t
        .fragment
        .routes
        .iter()
        .map(|r| r.as_ref())
        .filter(|r| r.listener == "tls")
        .collect();
    assert_eq!(passthrough.len(), 1, "only the / path is passed through");
    assert_eq!(
        passthrough[0].hosts,
        [HostMatch::Exact("cd.example.com".into())]
    );
    assert!(passthrough[0].paths.is_empty());
    let upstream = t
        .fragment
        .upstreams
        .iter()
        .find(|u| u.name == passthrough[0].backends[0].upstream)
        .expect("the passthrough upstream");
    assert_eq!(upstream.protocol, UpstreamProtocol::Tcp);
    // Plain HTTP still serves every path.
    assert_eq!(
        t.fragment
            .routes
            .iter()
            .filter(|r| r.listener == "http")
            .count(),
        2
    );

    // Without a passthrough listener the annotation is reported, not silently dropped.
    let t = run(&i, &cluster());
    let report = t
        .report
        .annotations
        .iter()
        .find(|a| a.name == "ssl-passthrough")
        .expect("reported");
    assert_eq!(report.outcome.label(), "not supported");
    assert!(t.fragment.routes.iter().all(|r| r.listener != "tls"));
}
