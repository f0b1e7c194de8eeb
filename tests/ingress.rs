//! The Ingress controller through the real binary and the fake API server: class
//! selection, path types, default backends, TLS from Secrets and their rotation, bad
//! objects rejected alone with an Event, and leader election writing status.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::fake_kube::FakeKube;
use support::ingress_objects::*;
use support::tls::{self, get_over, TestCertificate};
use support::*;
use tokio_rustls::rustls;

fn tls_secret(name: &str, certificate: &TestCertificate) -> Secret {
    object(json!({
        "metadata": {"name": name, "namespace": NS},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certificate.cert_pem, "tls.key": certificate.key_pem},
    }))
}

/// A config with an http listener, and with `ingress:` settings `extra`.
fn config(kube: &FakeKube, http: SocketAddr, extra: &str) -> String {
    format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners: [{{ name: http, listen: \"{http}\" }}]\n\
         ingress: {{ http_listener: http{extra} }}\n\
         routes: []\n",
        kube.url()
    )
}

fn status_of(sluice_http: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let response = Client::connect(sluice_http).get(host, path);
    let backend = response.header("x-backend").unwrap_or_default().to_string();
    (response.status, backend)
}

/// Waits until `host` `path` answers `status` from `backend` ("" for sluice's own answer).
fn wait_served(http: SocketAddr, host: &str, path: &str, status: u16, backend: &str) {
    wait_until(
        &format!("{host}{path} to answer {status} from {backend:?}"),
        READY_TIMEOUT,
        || status_of(http, host, path) == (status, backend.to_string()),
    );
}

fn events_for(kube: &FakeKube, name: &str) -> Vec<Value> {
    kube.events()
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .collect()
}

#[test]
fn claimed_ingresses_go_live_and_change_without_reloads() {
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    let api = Backend::start("api", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    kube.apply(ingress_class("nginx", "k8s.io/ingress-nginx"));
    service(&kube, "web", &web);
    service(&kube, "api", &api);
    kube.apply(ingress(
        "shop",
        "sluice",
        &[(
            "shop.test",
            &[
                ("/", "Prefix", "web"),
                ("/api", "Prefix", "api"),
                ("/exact", "Exact", "api"),
                ("/impl", "ImplementationSpecific", "api"),
            ],
        )],
    ));
    kube.apply(ingress(
        "theirs",
        "nginx",
        &[("nginx.test", &[("/", "Prefix", "web")])],
    ));
    let mut legacy = ingress("legacy", "", &[("legacy.test", &[("/", "Prefix", "web")])]);
    legacy.spec.as_mut().expect("spec").ingress_class_name = None;
    let legacy = kube.apply(annotated(legacy, &[]));
    let mut legacy_annotated = legacy.clone();
    legacy_annotated
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/ingress.class".into(), "sluice".into());
    let http = listen_address();
    let sluice = Sluice::start(&config(&kube, http, ""));

    // Ready means the first sync is live.
    assert_eq!(status_of(http, "shop.test", "/"), (200, "web".into()));
    assert_eq!(status_of(http, "shop.test", "/api/v1"), (200, "api".into()));
    // Prefix matches whole segments only; ImplementationSpecific is nginx's plain prefix.
    assert_eq!(status_of(http, "shop.test", "/apix"), (200, "web".into()));
    assert_eq!(status_of(http, "shop.test", "/implx"), (200, "api".into()));
    assert_eq!(status_of(http, "shop.test", "/exact"), (200, "api".into()));
    assert_eq!(
        status_of(http, "shop.test", "/exact/more"),
        (200, "web".into())
    );
    // Another controller's class, and no class at all, are not ours.
    assert_eq!(status_of(http, "nginx.test", "/").0, 404);
    assert_eq!(status_of(http, "legacy.test", "/").0, 404);

    // The legacy annotation claims an Ingress; a change goes live without a reload.
    kube.apply(legacy_annotated);
    wait_served(http, "legacy.test", "/", 200, "web");
    kube.apply(ingress(
        "shop",
        "sluice",
        &[("shop.test", &[("/", "Prefix", "api")])],
    ));
    wait_served(http, "shop.test", "/", 200, "api");
    // Deleting an Ingress removes its routes.
    kube.delete_object::<Ingress>(NS, "shop");
    wait_served(http, "shop.test", "/", 404, "");
    assert_eq!(
        sluice.metric("sluice_config_reloads_total{result=\"success\"}"),
        0.0
    );
    // The gauge is set after the batch's snapshot is published, so routing can show the
    // change first: wait for it.
    sluice.wait_metric(
        "sluice_kubernetes_objects{kind=\"Ingress\",state=\"served\"}",
        1.0,
    );
}

#[test]
fn default_backends_and_the_migration_class_claim() {
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    let fallback = Backend::start("fallback", Behavior::Echo);
    kube.apply(ingress_class("nginx", "k8s.io/ingress-nginx"));
    service(&kube, "web", &web);
    service(&kube, "fallback", &fallback);
    kube.apply(ingress(
        "shop",
        "nginx",
        &[("shop.test", &[("/app", "Prefix", "web")])],
    ));
    let mut default: Ingress = ingress("default", "nginx", &[]);
    let spec = default.spec.as_mut().expect("spec");
    spec.rules = None;
    spec.default_backend = Some(object(
        json!({"service": {"name": "fallback", "port": {"number": 80}}}),
    ));
    kube.apply(default);
    let http = listen_address();
    let _sluice = Sluice::start(&config(&kube, http, ", also_claim: [nginx]"));
    assert_eq!(status_of(http, "shop.test", "/app"), (200, "web".into()));
    assert_eq!(
        status_of(http, "other.test", "/x"),
        (200, "fallback".into())
    );
    // As ingress-nginx: a host with rules answers its unmatched paths itself (404); the
    // default backend takes the hosts no rule names.
    assert_eq!(status_of(http, "shop.test", "/else").0, 404);
}

#[test]
fn a_bad_ingress_is_rejected_alone_with_an_event_and_its_last_good_version_serves() {
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    let api = Backend::start("api", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    service(&kube, "api", &api);
    kube.apply(ingress(
        "good",
        "sluice",
        &[("good.test", &[("/", "Prefix", "web")])],
    ));
    kube.apply(ingress(
        "team-b",
        "sluice",
        &[("b.test", &[("/", "Prefix", "web")])],
    ));
    // Never valid: refused alone from the start.
    kube.apply(annotated(
        ingress(
            "snippet",
            "sluice",
            &[("snippet.test", &[("/", "Prefix", "web")])],
        ),
        &[("configuration-snippet", "return 200 'owned';")],
    ));
    let http = listen_address();
    let sluice = Sluice::start(&config(&kube, http, ""));
    assert_eq!(status_of(http, "good.test", "/"), (200, "web".into()));
    assert_eq!(status_of(http, "snippet.test", "/").0, 404);
    assert!(kube.wait_until(READY_TIMEOUT, |k| !events_for(k, "snippet").is_empty()));
    let event = &events_for(&kube, "snippet")[0];
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "RefusedAnnotation");
    assert!(event["note"]
        .as_str()
        .unwrap_or_default()
        .contains("CVE-2025-1974"));

    // team-b breaks its Ingress: an Event, and its previous version keeps serving...
    kube.apply(annotated(
        ingress("team-b", "sluice", &[("b.test", &[("/", "Prefix", "api")])]),
        &[("proxy-body-size", "huge")],
    ));
    assert!(kube.wait_until(READY_TIMEOUT, |k| !events_for(k, "team-b").is_empty()));
    let event = &events_for(&kube, "team-b")[0];
    assert_eq!(event["reason"], "InvalidAnnotation");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("proxy-body-size") && note.contains("previous version keeps serving"),
        "{note}"
    );
    assert_eq!(status_of(http, "b.test", "/"), (200, "web".into()));
    // ...while another team's change goes live.
    kube.apply(ingress(
        "good",
        "sluice",
        &[("good.test", &[("/", "Prefix", "api")])],
    ));
    wait_served(http, "good.test", "/", 200, "api");
    // A conflict is lost by the younger object, with the reason.
    kube.apply(ingress(
        "copycat",
        "sluice",
        &[("good.test", &[("/", "Prefix", "web")])],
    ));
    assert!(kube.wait_until(READY_TIMEOUT, |k| !events_for(k, "copycat").is_empty()));
    assert_eq!(events_for(&kube, "copycat")[0]["reason"], "Conflict");
    assert_eq!(status_of(http, "good.test", "/"), (200, "api".into()));
    // When the owner goes, the younger claim is offered again and serves.
    kube.delete_object::<Ingress>(NS, "good");
    wait_served(http, "good.test", "/", 200, "web");
    // A missing Service is its own reason.
    kube.apply(ingress(
        "lost",
        "sluice",
        &[("lost.test", &[("/", "Prefix", "nope")])],
    ));
    assert!(kube.wait_until(READY_TIMEOUT, |k| !events_for(k, "lost").is_empty()));
    assert_eq!(events_for(&kube, "lost")[0]["reason"], "MissingService");
    sluice.wait_metric(
        "sluice_kubernetes_rejections_total{kind=\"Ingress\",reason=\"MissingService\"}",
        1.0,
    );
    sluice.wait_metric(
        "sluice_kubernetes_rejections_total{kind=\"Ingress\",reason=\"RefusedAnnotation\"}",
        1.0,
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn tls_certificates_come_from_secrets_and_rotate_without_dropping_connections() {
    let dir = ScratchDir::new();
    let default_cert = tls::self_signed(&dir, "default", &["default.test"]);
    let first = tls::self_signed(&dir, "first", &["shop.test"]);
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    kube.apply(tls_secret("shop-tls", &first));
    let mut shop = ingress(
        "shop",
        "sluice",
        &[("shop.test", &[("/", "Prefix", "web")])],
    );
    shop.spec.as_mut().expect("spec").tls = Some(vec![object(
        json!({"hosts": ["shop.test"], "secretName": "shop-tls"}),
    )]);
    kube.apply(shop);
    let http = listen_address();
    let https = listen_address();
    let body = format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners:\n\
         - {{ name: http, listen: \"{http}\" }}\n\
         - {{ name: https, listen: \"{https}\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n\
         ingress: {{ http_listener: http, https_listener: https, https_redirect_port: {} }}\n\
         routes: []\n",
        kube.url(),
        default_cert.cert_path.display(),
        default_cert.key_path.display(),
        https.port()
    );
    let _sluice = Sluice::start(&body);
    // Plain http redirects to https (ssl-redirect is on by default for TLS hosts).
    let response = Client::connect(http).get("shop.test", "/a?b=1");
    assert_eq!(response.status, 308);
    let location = format!("https://shop.test:{}/a?b=1", https.port());
    assert_eq!(response.header("location"), Some(location.as_str()));
    runtime().block_on(async {
        assert_eq!(tls::served_certificate(https, "shop.test").await, first.der);
        assert_eq!(
            tls::served_certificate(https, "other.test").await,
            default_cert.der
        );
        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut open = tls::connect(https, "shop.test", config)
            .await
            .expect("handshake");
        let (status, _) = get_over(&mut open, "shop.test", "/before").await;
        assert!(status.contains(" 200 "), "{status}");

        // cert-manager renews the Secret: new handshakes get the new certificate...
        let renewed = tls::self_signed(&dir, "renewed", &["shop.test"]);
        kube.apply(tls_secret("shop-tls", &renewed));
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while tls::served_certificate(https, "shop.test").await != renewed.der {
            assert!(
                std::time::Instant::now() < deadline,
                "the renewed certificate is not served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...and the connection opened before keeps working on its own.
        let (status, _) = get_over(&mut open, "shop.test", "/after").await;
        assert!(status.contains(" 200 "), "{status}");
    });
}

/// ingress-nginx's `--enable-ssl-passthrough` layout: a tcp listener routing by SNI
/// relays `ssl-passthrough` hosts to their Service untouched, and every other name to the
/// https listener, which terminates TLS with the Ingresses' certificates.
#[test]
fn ssl_passthrough_hosts_reach_their_service_with_its_own_certificate() {
    let dir = ScratchDir::new();
    let default_cert = tls::self_signed(&dir, "default", &["default.test"]);
    let shop_cert = tls::self_signed(&dir, "shop", &["shop.test"]);
    let cd_cert = tls::self_signed(&dir, "cd", &["cd.test"]);
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    let cd = tls::HttpsBackend::start("argocd", &cd_cert);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    service_at(&kube, "argocd", cd.address);
    kube.apply(tls_secret("shop-tls", &shop_cert));
    let mut shop = ingress(
        "shop",
        "sluice",
        &[("shop.test", &[("/", "Prefix", "web")])],
    );
    shop.spec.as_mut().expect("spec").tls = Some(vec![object(
        json!({"hosts": ["shop.test"], "secretName": "shop-tls"}),
    )]);
    kube.apply(shop);
    kube.apply(annotated(
        ingress(
            "argocd",
            "sluice",
            &[("cd.test", &[("/", "Prefix", "argocd")])],
        ),
        &[("ssl-passthrough", "true")],
    ));
    let http = listen_address();
    let edge = listen_address();
    let https = listen_address();
    let body = format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners:\n\
         - {{ name: http, listen: \"{http}\" }}\n\
         - {{ name: edge, listen: \"{edge}\", protocol: tcp, sni_routing: true }}\n\
         - {{ name: https, listen: \"{https}\", proxy_protocol: true, tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n\
         ingress: {{ http_listener: http, https_listener: https, passthrough_listener: edge }}\n\
         routes: [{{ name: terminate, listener: edge, upstream: local-https }}]\n\
         upstreams: [{{ name: local-https, protocol: tcp, endpoints: [\"{https}\"], proxy_protocol: v2 }}]\n",
        kube.url(),
        default_cert.cert_path.display(),
        default_cert.key_path.display(),
    );
    let _sluice = Sluice::start(&body);
    runtime().block_on(async {
        assert_eq!(tls::served_certificate(edge, "cd.test").await, cd_cert.der);
        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(edge, "cd.test", config.clone())
            .await
            .expect("handshake with the passthrough Service");
        let (_, body) = get_over(&mut stream, "cd.test", "/").await;
        assert_eq!(body, "argocd sni=cd.test");
        // Other names are terminated with the Ingresses' certificates.
        assert_eq!(
            tls::served_certificate(edge, "shop.test").await,
            shop_cert.der
        );
        let mut stream = tls::connect(edge, "shop.test", config)
            .await
            .expect("handshake with the https listener");
        let (status, body) = get_over(&mut stream, "shop.test", "/").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.contains("\"backend\":\"web\""), "{body}");
    });
}

#[test]
fn one_leader_writes_status_and_another_takes_over_when_it_stops() {
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    kube.apply(ingress(
        "shop",
        "sluice",
        &[("shop.test", &[("/", "Prefix", "web")])],
    ));
    let settings = |identity: &str| {
        format!(
            ", publish: {{ addresses: [203.0.113.7, lb.example.net] }}, \
             leader_election: {{ duration: 2s, identity: {identity} }}"
        )
    };
    let mut replicas = vec![
        (
            "first",
            Sluice::start(&config(&kube, listen_address(), &settings("first"))),
        ),
        (
            "second",
            Sluice::start(&config(&kube, listen_address(), &settings("second"))),
        ),
    ];
    let published = json!([{"ip": "203.0.113.7"}, {"hostname": "lb.example.net"}]);
    let load_balancer = |kube: &FakeKube| -> Value {
        let ingress: Ingress = kube.get(NS, "shop").expect("ingress");
        serde_json::to_value(ingress.status).expect("status JSON")["loadBalancer"]["ingress"]
            .clone()
    };
    assert!(kube.wait_until(READY_TIMEOUT, |k| load_balancer(k) == published));
    let holder = |kube: &FakeKube| -> String {
        let lease: Lease = kube.get("default", "sluice-ingress-leader").expect("lease");
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let status_writes = |kube: &FakeKube| {
        kube.requests()
            .iter()
            .filter(|r| r.starts_with("PATCH") && r.ends_with("/shop/status"))
            .count()
    };
    // Both replicas serve; only the leader writes, and only what changed.
    assert_eq!(status_writes(&kube), 1);
    let leader = holder(&kube);
    let index = replicas
        .iter()
        .position(|(name, _)| *name == leader)
        .expect("the holder is one of the replicas");
    let (_, mut stopped) = replicas.remove(index);
    let (survivor, _running) = &replicas[0];
    stopped.signal("TERM");
    stopped.wait_exit(READY_TIMEOUT);
    assert!(kube.wait_until(READY_TIMEOUT, |k| holder(k) == *survivor));
    // The new leader keeps the status current: someone clears it, it is written again.
    let mut ingress: Ingress = kube.get(NS, "shop").expect("ingress");
    ingress.status = Some(object(json!({"loadBalancer": {}})));
    kube.apply(ingress);
    assert!(kube.wait_until(READY_TIMEOUT, |k| load_balancer(k) == published));
    assert_eq!(status_writes(&kube), 2);
}

/// POSTs `review` to the webhook at `address` over TLS and returns the answer's `response`.
async fn admission(address: SocketAddr, review: &Value) -> Value {
    let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut stream = tls::connect(address, "sluice-webhook.test", config)
        .await
        .expect("handshake");
    let body = review.to_string();
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: webhook\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = tls::request_over(&mut stream, request.as_bytes()).await;
    assert!(status.contains(" 200 "), "{status}: {body}");
    let answer: Value = serde_json::from_str(&body).expect("an AdmissionReview");
    assert_eq!(answer["kind"], "AdmissionReview");
    answer["response"].clone()
}

fn review_of(ingress: &Ingress) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "operation": "CREATE",
            "object": ingress,
        },
    })
}

#[test]
fn the_admission_webhook_denies_what_the_controller_would_reject() {
    let dir = ScratchDir::new();
    let certificate = tls::self_signed(&dir, "webhook", &["sluice-webhook.test"]);
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    kube.apply(ingress(
        "shop",
        "sluice",
        &[("shop.test", &[("/", "Prefix", "web")])],
    ));
    let http = listen_address();
    let webhook = listen_address();
    let extra = format!(
        ", webhook: {{ listen: \"{webhook}\", certificate: \"{}\", key: \"{}\" }}",
        certificate.cert_path.display(),
        certificate.key_path.display()
    );
    let sluice = Sluice::start(&config(&kube, http, &extra));
    let generation = sluice.generation();
    runtime().block_on(async {
        let fine = ingress("new", "sluice", &[("new.test", &[("/", "Prefix", "web")])]);
        let answer = admission(webhook, &review_of(&fine)).await;
        assert_eq!(answer["allowed"], true, "{answer}");
        assert_eq!(answer["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");

        let snippet = annotated(fine.clone(), &[("server-snippet", "location /x {}")]);
        let answer = admission(webhook, &review_of(&snippet)).await;
        assert_eq!(answer["allowed"], false);
        let message = answer["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("server-snippet") && message.contains("CVE-2025-1974"),
            "{message}"
        );

        // A Service may be created with its Ingress: allowed, with a warning.
        let missing = ingress("new", "sluice", &[("new.test", &[("/", "Prefix", "nope")])]);
        let answer = admission(webhook, &review_of(&missing)).await;
        assert_eq!(answer["allowed"], true);
        let warning = answer["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("Service shop/nope not found"), "{answer}");
        // A bad value is not.
        let bad = annotated(fine.clone(), &[("proxy-body-size", "lots")]);
        let answer = admission(webhook, &review_of(&bad)).await;
        assert_eq!(answer["allowed"], false);
        let message = answer["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("proxy-body-size"), "{answer}");

        // A conflict with the running config, found by the compiler's dry run.
        let copycat = ingress(
            "copycat",
            "sluice",
            &[("shop.test", &[("/", "Prefix", "web")])],
        );
        let answer = admission(webhook, &review_of(&copycat)).await;
        assert_eq!(answer["allowed"], false, "{answer}");
        assert!(
            answer["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("shop.test"),
            "{answer}"
        );

        // Served without what sluice does not do, and said so.
        let buffered = annotated(fine.clone(), &[("proxy-buffering", "on")]);
        let answer = admission(webhook, &review_of(&buffered)).await;
        assert_eq!(answer["allowed"], true);
        assert!(answer["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("proxy-buffering"));

        // Another controller's Ingress is not sluice's to judge.
        let theirs = annotated(
            ingress("theirs", "nginx", &[("x.test", &[("/", "Prefix", "nope")])]),
            &[("configuration-snippet", "return 200;")],
        );
        assert_eq!(
            admission(webhook, &review_of(&theirs)).await["allowed"],
            true
        );
    });
    // The reviews changed nothing.
    assert_eq!(sluice.generation(), generation);
    assert!(kube.events().is_empty());
}
