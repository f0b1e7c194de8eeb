//! Many sources, one model: the config file and a test source (fragments set through
//! `State::set_fragment`, as the Kubernetes sources will) compile into one routing table;
//! a bad fragment is rejected alone, with its origin; conflicts follow the documented rule;
//! a change reaches routing without polling. Runs sluice in this process
//! (`server::InProcess`), with real listeners, real backends and real HTTP.

mod support;

use sluice::model::{ActiveCheck, ListenerCertificate, Probe, UpstreamConfig};
use sluice::model::{EndpointConfig, EndpointSource, Fragment, Origin, PathMatch, RouteConfig};
use sluice::model::{ServicePort, ServiceRef, TerminatingPolicy};
use sluice::server::InProcess;
use sluice::sources::file;
use sluice::tls::LoadedCertificate;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fake_kube::{ready, slice, FakeKube};
use support::tls;
use support::*;

/// sluice in this process, with its web and admin addresses.
struct Running {
    sluice: InProcess,
    web: SocketAddr,
    admin: SocketAddr,
    /// Holds the config file.
    dir: ScratchDir,
}

impl Running {
    /// Starts on a config file of a listener `web`, the admin listener and `body`
    /// (routes and upstreams), and waits until it is ready.
    fn start(body: &str) -> Self {
        Self::start_with_listeners(ScratchDir::new(), "", body)
    }

    /// Starts with `extra_listeners` (flow-style list items, each after a comma) besides
    /// `web`, in `dir`.
    fn start_with_listeners(dir: ScratchDir, extra_listeners: &str, body: &str) -> Self {
        let (web, admin) = (listen_address(), listen_address());
        let text = Self::file_text(web, admin, extra_listeners, body);
        let path = dir.write("sluice.yaml", &text);
        let loaded = file::load(&path).unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
        let running = Self {
            sluice: InProcess::start(loaded).expect("starts"),
            web,
            admin,
            dir,
        };
        wait_until("readiness", READY_TIMEOUT, || {
            running
                .admin_get("/readyz")
                .is_some_and(|r| r.status == 200)
        });
        running
    }

    fn file_text(web: SocketAddr, admin: SocketAddr, extra_listeners: &str, body: &str) -> String {
        format!(
            "admin: {{ listen: \"{admin}\" }}\naccess_log: {{ path: off }}\n\
             listeners: [{{ name: web, listen: \"{web}\" }}{extra_listeners}]\n{body}"
        )
    }

    /// Rewrites the config file with `body` (same listeners) and reloads it, as SIGHUP does.
    fn reload(&self, body: &str) -> Result<u64, String> {
        self.dir.write(
            "sluice.yaml",
            &Self::file_text(self.web, self.admin, "", body),
        );
        self.sluice.state.reload().map_err(|e| e.to_string())
    }

    fn admin_get(&self, path: &str) -> Option<Response> {
        admin_get(self.admin, path)
    }

    fn metrics(&self) -> String {
        String::from_utf8(self.admin_get("/metrics").expect("metrics").body).expect("text")
    }

    /// Which backend answers `GET path` (empty for none), and the status.
    fn route(&self, path: &str) -> (u16, String) {
        let response = get(self.web, path);
        (response.status, response.backend().to_string())
    }

    /// Sets (or with `None` removes) fragment `name` of `source`; returns its problems.
    fn set(&self, source: &str, name: &str, fragment: Option<Fragment>) -> Vec<String> {
        let (_, rejected) = self.sluice.state.set_fragment(source, name, fragment);
        rejected
            .map(|r| r.problems.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }
}

/// A fragment of object `namespace/name`, created at `created`, routing `path_prefix` to
/// an upstream of its own named `upstream` with `backend` as its endpoint.
fn fragment(
    namespace: &str,
    name: &str,
    created: i64,
    path_prefix: &str,
    upstream: &str,
    backend: SocketAddr,
) -> Fragment {
    let origin = Origin::object("TestRoute", namespace, name);
    let mut fragment = Fragment::new(origin.clone(), Some(created));
    let mut route = RouteConfig::new(
        &format!("{namespace}/{name}"),
        origin.clone(),
        "web",
        upstream,
    );
    route.paths = vec![PathMatch::Prefix(path_prefix.into())];
    fragment.routes.push(Arc::new(route));
    fragment.upstreams.push(Arc::new(UpstreamConfig::new(
        upstream,
        origin,
        EndpointSource::Static,
        vec![EndpointConfig {
            address: backend,
            weight: 1,
            terminating: false,
        }],
    )));
    fragment
}

fn file_body(backend: &Backend) -> String {
    format!(
        "routes: [{{ name: from-file, listener: web, upstream: a, paths: [{{ prefix: /file }}, {{ prefix: /shared }}] }}]\n\
         upstreams: [{{ name: a, endpoints: [\"{}\"] }}]\n",
        backend.address
    )
}

#[test]
fn the_file_and_a_test_source_compile_into_one_routing_table() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let sluice = Running::start(&file_body(&a));
    assert_eq!(sluice.route("/t/x"), (404, String::new()));

    let problems = sluice.set(
        "two-sources",
        "shop",
        Some(fragment("default", "shop", 100, "/t", "shop-b", b.address)),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(sluice.route("/t/x"), (200, "b".into()));
    assert_eq!(sluice.route("/file"), (200, "a".into()));

    // /config shows both, each with where it came from.
    let config = sluice.admin_get("/config").expect("/config").json();
    let routes = config["model"]["routes"]
        .as_array()
        .expect("routes")
        .clone();
    let origin_of = |name: &str| {
        routes
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["origin"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert!(
        origin_of("from-file").contains("sluice.yaml:4:"),
        "{routes:?}"
    );
    assert_eq!(
        origin_of("default/shop"),
        "TestRoute default/shop (generation 1)"
    );

    // Removing the fragment removes its routes only.
    sluice.set("two-sources", "shop", None);
    assert_eq!(sluice.route("/t/x"), (404, String::new()));
    assert_eq!(sluice.route("/file"), (200, "a".into()));
    let config = sluice.admin_get("/config").expect("/config").json();
    assert_eq!(config["model"]["routes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_bad_fragment_is_rejected_alone_with_its_origin() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let c = Backend::start("c", Behavior::Echo);
    let sluice = Running::start(&file_body(&a));

    let mut bad = fragment("team-x", "bad", 100, "/bad", "bad-up", c.address);
    Arc::make_mut(&mut bad.routes[0]).backends[0].upstream = "nope".into();
    let problems = sluice.set("bad-fragment", "bad", Some(bad));
    assert_eq!(
        problems,
        ["TestRoute team-x/bad (generation 1): upstream: undefined upstream \"nope\""]
    );
    // Another team's change after it goes live.
    let problems = sluice.set(
        "bad-fragment",
        "good",
        Some(fragment(
            "team-y", "good", 100, "/good", "good-up", b.address,
        )),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(sluice.route("/good"), (200, "b".into()));
    assert_eq!(sluice.route("/bad"), (404, String::new()));
    assert_eq!(sluice.route("/file"), (200, "a".into()));

    let config = sluice.admin_get("/config").expect("/config").json();
    let rejected = config["rejected"].as_array().expect("rejected").clone();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["source"], "bad-fragment");
    assert_eq!(rejected[0]["origin"], "TestRoute team-x/bad (generation 1)");
    assert!(
        rejected[0]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("undefined upstream \"nope\"")),
        "{rejected:?}"
    );
    let metrics = sluice.metrics();
    assert!(
        metrics.contains("sluice_config_rejected_fragments{source=\"bad-fragment\"} 1"),
        "{metrics}"
    );

    // Fixed, it goes live and the count drops.
    let problems = sluice.set(
        "bad-fragment",
        "bad",
        Some(fragment("team-x", "bad", 100, "/bad", "bad-up", c.address)),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(sluice.route("/bad"), (200, "c".into()));
    assert!(sluice
        .metrics()
        .contains("sluice_config_rejected_fragments{source=\"bad-fragment\"} 0"));

    // A route may use the config file's upstreams, never another object's (whether that
    // was accepted would depend on which object is older).
    let mut borrower = fragment("team-z", "borrower", 1, "/borrow", "own-up", c.address);
    Arc::make_mut(&mut borrower.routes[0]).backends[0].upstream = "good-up".into();
    let problems = sluice.set("bad-fragment", "borrower", Some(borrower.clone()));
    assert_eq!(
        problems,
        ["TestRoute team-z/borrower (generation 1): upstream: undefined upstream \"good-up\""]
    );
    Arc::make_mut(&mut borrower.routes[0]).backends[0].upstream = "a".into();
    assert!(sluice
        .set("bad-fragment", "borrower", Some(borrower))
        .is_empty());
    assert_eq!(sluice.route("/borrow"), (200, "a".into()));
}

#[test]
fn conflicts_are_won_by_the_file_then_the_oldest_object() {
    let a = Backend::start("a", Behavior::Echo);
    let old = Backend::start("old", Behavior::Echo);
    let new = Backend::start("new", Behavior::Echo);
    let sluice = Running::start(&file_body(&a));

    // The file wins over any object, however old.
    let problems = sluice.set(
        "conflicts",
        "early",
        Some(fragment(
            "default",
            "early",
            1,
            "/shared",
            "early-up",
            old.address,
        )),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("TestRoute default/early (generation 1): paths[0]: host \"*\" and this path are already routed by route \"from-file\" by ")
            && problems[0].contains("sluice.yaml:4:"),
        "{problems:?}"
    );
    assert_eq!(sluice.route("/shared"), (200, "a".into()));

    // Among objects the older creation wins, whichever came first; the loser is reported.
    let problems = sluice.set(
        "conflicts",
        "newer",
        Some(fragment(
            "default",
            "newer",
            200,
            "/both",
            "newer-up",
            new.address,
        )),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(sluice.route("/both"), (200, "new".into()));
    let problems = sluice.set(
        "conflicts",
        "older",
        Some(fragment(
            "default",
            "older",
            100,
            "/both",
            "older-up",
            old.address,
        )),
    );
    assert!(problems.is_empty(), "the older object wins: {problems:?}");
    assert_eq!(sluice.route("/both"), (200, "old".into()));
    let config = sluice.admin_get("/config").expect("/config").json();
    let rejected = config["rejected"].to_string();
    assert!(
        rejected.contains("TestRoute default/newer")
            && rejected.contains(
                "already routed by route \\\"default/older\\\" by TestRoute default/older"
            ),
        "{rejected}"
    );

    // Same creation time: namespace/name decides.
    sluice.set(
        "conflicts",
        "b",
        Some(fragment("b", "same", 300, "/tie", "tie-b", new.address)),
    );
    sluice.set(
        "conflicts",
        "a",
        Some(fragment("a", "same", 300, "/tie", "tie-a", old.address)),
    );
    assert_eq!(sluice.route("/tie"), (200, "old".into()));
}

#[test]
fn a_change_reaches_routing_without_polling() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let sluice = Running::start(&file_body(&a));
    let mut followers = sluice.sluice.state.subscribe();

    // The snapshot is published before set_fragment returns, and the very next request is
    // routed by it: there is no interval to wait for.
    let mut samples = Vec::new();
    for i in 0..20 {
        let prefix = format!("/p{i}");
        let started = Instant::now();
        sluice.set(
            "propagation",
            "moving",
            Some(fragment(
                "default",
                "moving",
                1,
                &prefix,
                "moving-up",
                b.address,
            )),
        );
        let published = started.elapsed();
        assert!(followers.has_changed().unwrap_or(false));
        let snapshot = followers.borrow_and_update().clone();
        assert!(snapshot
            .config
            .routes
            .iter()
            .any(|r| r.name == "default/moving"));
        assert_eq!(sluice.route(&prefix), (200, "b".into()));
        samples.push((published, started.elapsed()));
    }
    samples.sort();
    let (published, routed) = samples[samples.len() / 2];
    eprintln!(
        "propagation (test source, median of 20): published {published:?} after the change, \
         first request routed by it answered {routed:?} after the change"
    );

    // The config file: rewritten and reloaded (what SIGHUP does).
    let started = Instant::now();
    let body = file_body(&a).replace("/file", "/renamed");
    sluice.reload(&body).expect("reloads");
    let published = started.elapsed();
    assert!(followers.has_changed().unwrap_or(false));
    assert_eq!(sluice.route("/renamed"), (200, "a".into()));
    eprintln!(
        "propagation (config file reload): published {published:?}, routed {:?}",
        started.elapsed()
    );
}

#[test]
fn health_checks_follow_a_new_fragment_at_once() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let sluice = Running::start(&file_body(&a));
    let mut checked = fragment("default", "checked", 1, "/checked", "checked-up", b.address);
    Arc::make_mut(&mut checked.upstreams[0]).health.active = Some(ActiveCheck {
        probe: Probe::Http {
            path: "/probe".into(),
            host: None,
            expect: (200, 399),
        },
        interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        healthy_after: 1,
        unhealthy_after: 1,
    });
    sluice.set("health", "checked", Some(checked));
    // The first check of a new endpoint starts within 100 ms; with an hour's interval only
    // the checker's reaction to the new snapshot can bring it.
    wait_until("the first health check", READY_TIMEOUT, || {
        b.requests().iter().any(|r| r.target == "/probe")
    });
}

#[test]
fn a_reload_that_drops_every_route_needs_an_explicit_empty_list() {
    let a = Backend::start("a", Behavior::Echo);
    let sluice = Running::start(&file_body(&a));
    let upstreams_only = format!(
        "upstreams: [{{ name: a, endpoints: [\"{}\"] }}]\n",
        a.address
    );
    let error = sluice.reload(&upstreams_only).expect_err("refused");
    assert!(
        error.contains("would remove all 1 running routes") && error.contains("routes: []"),
        "{error}"
    );
    assert_eq!(sluice.route("/file"), (200, "a".into()));

    sluice
        .reload(&format!("routes: []\n{upstreams_only}"))
        .expect("an explicit empty list is accepted");
    assert_eq!(sluice.route("/file"), (404, String::new()));
}

#[test]
fn a_fragment_brings_a_certificate_from_memory() {
    let a = Backend::start("a", Behavior::Echo);
    let dir = ScratchDir::new();
    let ca = tls::TestCa::new();
    let from_file = ca.issue(&dir, "file", &["file.example.test"]);
    let from_memory = ca.issue(&dir, "memory", &["memory.example.test"]);
    let secure = listen_address();
    let sluice = Running::start_with_listeners(
        dir,
        &format!(
            ", {{ name: secure, listen: \"{secure}\", tls: {{ certificates: [{{ cert: {}, key: {} }}] }} }}",
            from_file.cert_path.display(),
            from_file.key_path.display()
        ),
        &file_body(&a),
    );
    let served = |sni: &str| {
        let sni = sni.to_string();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move { tls::served_certificate(secure, &sni).await })
    };
    assert_eq!(
        served("memory.example.test"),
        from_file.der,
        "the file's is the default"
    );

    let origin = Origin::object("TestSecret", "default", "memory-tls");
    let certificate = LoadedCertificate::from_pem(
        from_memory.cert_pem.as_bytes(),
        from_memory.key_pem.as_bytes(),
        "tls.crt",
        "tls.key",
    )
    .expect("a valid pair");
    let mut fragment = Fragment::new(origin.clone(), Some(1));
    fragment.certificates.push(ListenerCertificate {
        listener: "secure".into(),
        origin: origin.clone(),
        certificate: certificate.clone(),
    });
    assert!(sluice
        .set("secrets", "memory-tls", Some(fragment))
        .is_empty());
    assert_eq!(served("memory.example.test"), from_memory.der);
    assert_eq!(served("file.example.test"), from_file.der);

    // A certificate for a listener that does not terminate TLS is that fragment's error.
    let mut wrong = Fragment::new(Origin::object("TestSecret", "default", "wrong"), Some(1));
    wrong.certificates.push(ListenerCertificate {
        listener: "web".into(),
        origin: Origin::object("TestSecret", "default", "wrong"),
        certificate,
    });
    assert_eq!(
        sluice.set("secrets", "wrong", Some(wrong)),
        ["TestSecret default/wrong (generation 1): listener: \"web\" is not a TLS listener"]
    );

    // Removed, it is no longer served.
    sluice.set("secrets", "memory-tls", None);
    assert_eq!(served("memory.example.test"), from_file.der);
}

#[test]
fn discovery_follows_a_fragment_on_a_service_already_watched() {
    let kube = FakeKube::start();
    let port = free_port();
    let _pod = Backend::start_on(
        "pod",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 2], port)),
    );
    kube.apply(slice(
        "shop",
        "app-1",
        "app",
        ("http", port),
        &[ready("127.0.0.2")],
    ));
    let sluice = Running::start(&format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         routes: [{{ name: from-file, listener: web, upstream: app, paths: [{{ prefix: /file }}] }}]\n\
         upstreams:\n  - {{ name: app, kubernetes: {{ namespace: shop, service: app, port: http }} }}\n",
        kube.url()
    ));
    assert_eq!(sluice.route("/file"), (200, "pod".into()));

    // An object's own upstream on the service the file's upstream already watches: the
    // namespace's watch is restarted, and its first list feeds the new upstream too.
    let origin = Origin::object("TestRoute", "shop", "web");
    let mut web = Fragment::new(origin.clone(), Some(1));
    let mut route = RouteConfig::new("shop/web", origin.clone(), "web", "shop-web");
    route.paths = vec![PathMatch::Prefix("/frag".into())];
    web.routes.push(Arc::new(route));
    web.upstreams.push(Arc::new(UpstreamConfig::new(
        "shop-web",
        origin,
        EndpointSource::Kubernetes(ServiceRef {
            namespace: "shop".into(),
            service: "app".into(),
            port: ServicePort::Name("http".into()),
            terminating: TerminatingPolicy::Drain,
        }),
        Vec::new(),
    )));
    assert!(sluice.set("discovery", "web", Some(web)).is_empty());
    wait_until("the object's upstream is discovered", READY_TIMEOUT, || {
        sluice.route("/frag") == (200, "pod".into())
    });
    assert_eq!(sluice.route("/file"), (200, "pod".into()));
}
