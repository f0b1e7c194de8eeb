//! Fleet-wide rate limits (issue #21) through the real binary: several sluice processes
//! sharing one real `redis-server` on loopback enforce one limit; Redis stopped, slowed or
//! back again; TLS and AUTH; Sentinel addressing.

mod support;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};
use support::redis::RedisServer;
use support::*;

/// A config body: listener `web`, route `all` to one backend with `limit` (the inside of a
/// `global_rate_limit` flow mapping), and `redis` (the inside of a `redis:` flow mapping).
fn config(web: SocketAddr, backend: &Backend, limit: &str, redis: &str) -> String {
    format!(
        "redis: {{ {redis} }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n  - {{ name: all, listener: web, upstream: app, global_rate_limit: {{ {limit} }} }}\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\"] }}\n",
        backend.address
    )
}

/// Settings of a standalone Redis with a short breaker, for tests that stop it. The
/// timeout is long: a loaded machine must not turn a slow answer into a failure here (a
/// stopped Redis refuses connections at once).
fn standalone(redis: &RedisServer) -> String {
    standalone_with_timeout(redis, "2s")
}

fn standalone_with_timeout(redis: &RedisServer, timeout: &str) -> String {
    format!(
        "address: \"{}\", timeout: {timeout}, breaker: {{ failures: 3, open_for: 200ms }}",
        redis.address()
    )
}

/// One sluice in front of one backend, limited by `limit` in its own Redis.
struct Served {
    redis: RedisServer,
    _backend: Backend,
    web: SocketAddr,
    sluice: Sluice,
}

/// Starts a Redis and one sluice with `limit` (see [`config`]) and Redis `timeout`.
fn serve(limit: &str, timeout: &str) -> Served {
    let redis = RedisServer::start();
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = config(
        web,
        &backend,
        limit,
        &standalone_with_timeout(&redis, timeout),
    );
    Served {
        sluice: Sluice::start(&body),
        redis,
        _backend: backend,
        web,
    }
}

/// Statuses of `count` requests as `user` (the `x-user` header) on one connection.
fn statuses(web: SocketAddr, user: &str, count: usize) -> Vec<u16> {
    let mut client = Client::connect(web);
    (0..count)
        .map(|_| client.request("GET", "/", &[("x-user", user)]).status)
        .collect()
}

/// What Redis counted for `key`: this window's grants plus the previous window's (a run
/// that crosses a window boundary splits them).
fn counted(redis: &RedisServer, key: &str) -> u64 {
    redis
        .command(&["HMGET", key, "c", "p"])
        .split(' ')
        .map(|n| n.parse::<u64>().unwrap_or(0))
        .sum()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn three_replicas_sharing_one_redis_admit_one_limit() {
    let redis = RedisServer::start();
    let backend = Backend::start("app", Behavior::Echo);
    // 30 requests a minute for the whole route, whichever replica takes them.
    let replicas: Vec<(Sluice, SocketAddr)> = (0..3)
        .map(|_| {
            let web = listen_address();
            let body = config(
                web,
                &backend,
                "requests: 30, window: 60s",
                &standalone(&redis),
            );
            (Sluice::start(&body), web)
        })
        .collect();
    // Three clients at once, one per replica, 40 requests each: 120 for a limit of 30.
    let results: Vec<Vec<u16>> = thread::scope(|scope| {
        let clients: Vec<_> = replicas
            .iter()
            .map(|(_, web)| scope.spawn(move || statuses(*web, "anyone", 40)))
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect()
    });
    let all: Vec<u16> = results.concat();
    let admitted = count(&all, 200);
    // Exactly 30 unless the run straddles a minute boundary, where the sliding window lets
    // the new minute in gradually (one more request per 2 s of it).
    assert!(
        (30..=32).contains(&admitted),
        "admitted {admitted} of 120 for a limit of 30: {results:?}"
    );
    assert_eq!(count(&all, 429), 120 - admitted, "{results:?}");
    for (replica, _) in &replicas {
        assert!(
            replica.metric(r#"sluice_global_rate_limit_total{result="limited",route="all"}"#) > 0.0,
            "every replica refused some: {results:?}"
        );
    }
    // Refusals say when to come back.
    let (_, web) = &replicas[0];
    let refused = Client::connect(*web).request("GET", "/", &[]);
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=120).contains(&retry_after), "{retry_after}");
}

#[test]
fn keys_are_counted_apart_and_most_requests_make_no_round_trip() {
    let Served {
        redis,
        web,
        sluice,
        _backend,
    } = serve("requests: 1000, window: 60s, by: \"$http_x_user\"", "2s");
    let a = statuses(web, "a", 300);
    assert_eq!(count(&a, 200), 300);
    let b = statuses(web, "b", 10);
    assert_eq!(count(&b, 200), 10);
    // Each user's counter is its own key in Redis.
    let keys = redis.command(&["KEYS", "sluice:all:*"]);
    let mut keys: Vec<&str> = keys.split(' ').collect();
    keys.sort();
    assert_eq!(keys, ["sluice:all:a", "sluice:all:b"]);
    // Sequential requests from one client: reservations grow with the rate, so only a few
    // requests waited for Redis.
    sluice.wait_metric(
        r#"sluice_global_rate_limit_total{result="admitted",route="all"}"#,
        310.0,
    );
    let waits = sluice.metric(r#"sluice_global_rate_limit_waits_total{route="all"}"#);
    assert!(
        waits < 310.0 * 0.8,
        "{waits} of 310 requests waited for Redis"
    );
}

#[test]
fn with_redis_stopped_fail_open_serves_and_the_limit_returns_with_redis() {
    let Served {
        mut redis,
        web,
        sluice,
        _backend,
    } = serve("requests: 5, window: 60s, by: \"header:x-user\"", "2s");
    let before = statuses(web, "a", 8);
    assert_eq!(
        (count(&before, 200), count(&before, 429)),
        (5, 3),
        "{before:?}"
    );

    redis.stop();
    // New users need Redis; it is gone, so on_redis_failure (allow, the default) decides.
    for user in ["b", "c", "d"] {
        let during = statuses(web, user, 10);
        assert_eq!(count(&during, 200), 10, "{user}: {during:?}");
    }
    assert_eq!(sluice.metric("sluice_redis_breaker_open"), 1.0);
    assert!(
        sluice.metric(
            r#"sluice_global_rate_limit_total{result="redis_unavailable_allowed",route="all"}"#
        ) > 0.0
    );
    let opened = "3 calls in a row failed";
    assert_eq!(
        sluice.stderr().matches(opened).count(),
        1,
        "{}",
        sluice.stderr()
    );

    redis.restart();
    // The breaker lets a probe through after open_for; then users are limited again.
    wait_until("the limit to hold again", READY_TIMEOUT, || {
        count(&statuses(web, "e", 6), 429) > 0
    });
    let after = statuses(web, "f", 8);
    assert_eq!(
        (count(&after, 200), count(&after, 429)),
        (5, 3),
        "{after:?}"
    );
    assert_eq!(sluice.metric("sluice_redis_breaker_open"), 0.0);
    let stderr = sluice.stderr();
    assert_eq!(
        stderr.matches(opened).count(),
        1,
        "one line per change: {stderr}"
    );
    assert_eq!(stderr.matches("answering again").count(), 1, "{stderr}");
}

#[test]
fn with_redis_stopped_fail_closed_answers_the_configured_status() {
    let mut redis = RedisServer::start();
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = format!(
        "redis: {{ {} }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - {{ name: closed-503, listener: web, paths: [{{ prefix: /a }}], upstream: app, global_rate_limit: {{ requests: 100, on_redis_failure: reject }} }}\n\
         \x20 - {{ name: closed-429, listener: web, paths: [{{ prefix: /b }}], upstream: app, global_rate_limit: {{ requests: 100, on_redis_failure: reject, failure_status: 429 }} }}\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\"] }}\n",
        standalone(&redis),
        backend.address
    );
    let sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    assert_eq!(client.request("GET", "/a", &[]).status, 200);
    assert_eq!(client.request("GET", "/b", &[]).status, 200);
    redis.stop();
    // Tokens already reserved are spent first (at most a tenth of the limit each).
    let a: Vec<u16> = (0..20)
        .map(|_| client.request("GET", "/a", &[]).status)
        .collect();
    let b: Vec<u16> = (0..20)
        .map(|_| client.request("GET", "/b", &[]).status)
        .collect();
    assert!(
        count(&a, 503) >= 10 && count(&a, 200) + count(&a, 503) == 20,
        "{a:?}"
    );
    assert!(
        count(&b, 429) >= 10 && count(&b, 200) + count(&b, 429) == 20,
        "{b:?}"
    );
    assert!(
        sluice.metric(r#"sluice_global_rate_limit_total{result="redis_unavailable_rejected",route="closed-503"}"#)
            >= 10.0
    );
    redis.restart();
    wait_until("requests to be admitted again", READY_TIMEOUT, || {
        client.request("GET", "/a", &[]).status == 200
    });
}

#[test]
fn a_slow_redis_delays_requests_by_the_timeout_at_most() {
    let Served {
        redis,
        web,
        sluice,
        _backend,
    } = serve("requests: 100, window: 60s, by: \"header:x-user\"", "100ms");
    assert_eq!(statuses(web, "warm", 1), [200]);
    // Redis blocked for 10 s; a PING that gets no answer shows the sleep has begun.
    let _sleeping = redis.send(&["DEBUG", "SLEEP", "10"]);
    let mut ping = redis.send(&["PING"]);
    ping.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let mut reply = [0u8; 16];
    assert!(
        std::io::Read::read(&mut ping, &mut reply).is_err(),
        "redis answered during DEBUG SLEEP"
    );
    // Each new user needs Redis: the request waits redis.timeout (100 ms), then the route's
    // on_redis_failure (allow) decides. Without the bound each would wait out the sleep.
    // Calls time out until the breaker's three failures open it; then the others are
    // decided at once. Waiting for connects (2 s) or the sleep instead would take 6 s or more.
    let started = Instant::now();
    for user in ["a", "b", "c", "d", "e", "f"] {
        let asked = Instant::now();
        assert_eq!(statuses(web, user, 1), [200]);
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "user {user} waited {took:?} behind a Redis sleeping 10 s"
        );
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "six requests took {took:?}");
    // At least the breaker's three (a fourth may start before the third is recorded).
    assert!(sluice.metric(r#"sluice_redis_calls_total{result="timeout"}"#) >= 3.0);
    assert_eq!(sluice.metric("sluice_redis_breaker_open"), 1.0);
}

#[test]
fn tls_and_auth() {
    let dir = ScratchDir::new();
    let ca = support::tls::TestCa::new();
    let certificate = ca.issue(&dir, "redis", &["127.0.0.1"]);
    let redis = RedisServer::start_tls(
        &certificate.cert_path,
        &certificate.key_path,
        &["--requirepass", "s3cret"],
    );
    let ca_file = dir.write("ca.pem", &ca.pem);
    let password_file = dir.write("password", "s3cret\n");
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let settings = format!(
        "address: \"{}\", username: default, password_file: \"{}\", tls: {{ ca_file: \"{}\" }}, timeout: 2s",
        redis.address(),
        password_file.display(),
        ca_file.display()
    );
    let body = config(web, &backend, "requests: 3, window: 60s", &settings);
    let sluice = Sluice::start(&body);
    let seen = statuses(web, "a", 5);
    assert_eq!(seen, [200, 200, 200, 429, 429], "{}", sluice.stderr());
    assert_eq!(counted(&redis, "sluice:all:"), 3);

    // A CA that did not sign Redis's certificate: no connection, so fail closed answers 503.
    let other_ca = dir.write("other-ca.pem", &support::tls::TestCa::new().pem);
    let web = listen_address();
    let settings = settings.replace(
        &ca_file.display().to_string(),
        &other_ca.display().to_string(),
    );
    let limit = "requests: 3, window: 60s, on_redis_failure: reject";
    let _untrusting = Sluice::start(&config(web, &backend, limit, &settings));
    assert_eq!(statuses(web, "a", 2), [503, 503]);
    assert_eq!(counted(&redis, "sluice:all:"), 3);
}

#[test]
fn sentinel_addressing_finds_the_master() {
    let master = RedisServer::start();
    let sentinel_port = free_port();
    let dir = ScratchDir::new();
    let conf = dir.write(
        "sentinel.conf",
        &format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n",
            master.port
        ),
    );
    let _sentinel = KillOnDrop(
        std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis sentinel"),
    );
    let sentinel_address = SocketAddr::from(([127, 0, 0, 1], sentinel_port));
    wait_until("the sentinel to know the master", READY_TIMEOUT, || {
        std::net::TcpStream::connect(sentinel_address).is_ok()
    });
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let settings = format!(
        "sentinel: {{ service: mymaster, addresses: [\"{sentinel_address}\"] }}, timeout: 1s"
    );
    let body = config(web, &backend, "requests: 2, window: 60s", &settings);
    let sluice = Sluice::start(&body);
    let seen = statuses(web, "a", 4);
    assert_eq!(seen, [200, 200, 429, 429], "{}", sluice.stderr());
    assert_eq!(counted(&master, "sluice:all:"), 2);
}

/// A child process killed when the test ends, failing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_global_limit_without_redis_is_a_config_error() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n  - {{ name: all, listener: web, upstream: app, global_rate_limit: {{ requests: 3, on_redis_failure: maybe }} }}\n\
         upstreams:\n  - {{ name: app, endpoints: [\"{}\"] }}\n",
        backend.address
    );
    let (output, _, _dir) = check_config(&body);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("routes[0].global_rate_limit: needs `redis:`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[0].global_rate_limit.on_redis_failure: invalid \"maybe\""),
        "{stderr}"
    );
}

#[test]
fn ingress_nginx_global_rate_limit_annotations_map_onto_it() {
    use support::fake_kube::FakeKube;
    use support::ingress_objects::*;
    let redis = RedisServer::start();
    let kube = FakeKube::start();
    let web = Backend::start("web", Behavior::Echo);
    kube.apply(ingress_class("sluice", CONTROLLER));
    service(&kube, "web", &web);
    let limited = [
        ("global-rate-limit", "2"),
        ("global-rate-limit-window", "1m"),
        ("global-rate-limit-key", "$http_x_user"),
    ];
    kube.apply(annotated(
        ingress(
            "limited",
            "sluice",
            &[("limited.test", &[("/", "Prefix", "web")])],
        ),
        &limited,
    ));
    let mut ignored = limited.to_vec();
    ignored.push((
        "global-rate-limit-ignored-cidrs",
        "10.0.0.0/8, 127.0.0.1/32",
    ));
    kube.apply(annotated(
        ingress(
            "ignored",
            "sluice",
            &[("ignored.test", &[("/", "Prefix", "web")])],
        ),
        &ignored,
    ));
    let sources = |http: SocketAddr| {
        format!(
            "kubernetes: {{ api_server: \"{}\" }}\n\
             listeners: [{{ name: http, listen: \"{http}\" }}]\n\
             ingress: {{ http_listener: http }}\n\
             routes: []\n",
            kube.url()
        )
    };
    let http = listen_address();
    let redis_settings = standalone(&redis);
    let sluice = Sluice::start(&format!("redis: {{ {redis_settings} }}\n{}", sources(http)));
    let rejected = sluice.admin_get("/config").expect("/config").json()["rejected"].clone();
    assert_eq!(rejected, serde_json::json!([]));
    let mut client = Client::connect(http);
    let mut get = |host: &str, user: &str| {
        client
            .request("GET", "/", &[("host", host), ("x-user", user)])
            .status
    };
    let a: Vec<u16> = (0..4).map(|_| get("limited.test", "a")).collect();
    assert_eq!(a, [200, 200, 429, 429]);
    assert_eq!(get("limited.test", "b"), 200, "the key is $http_x_user");
    let exempt: Vec<u16> = (0..4).map(|_| get("ignored.test", "a")).collect();
    assert_eq!(
        exempt, [200; 4],
        "127.0.0.1 is in global-rate-limit-ignored-cidrs"
    );

    // Without `redis:` the annotated Ingresses are refused, each with the reason.
    let without = Sluice::start(&sources(listen_address()));
    let rejected = without.admin_get("/config").expect("/config").json()["rejected"].to_string();
    assert!(rejected.contains("needs `redis:`"), "{rejected}");
    assert!(
        rejected.contains("limited") && rejected.contains("ignored"),
        "{rejected}"
    );
}

#[test]
fn cluster_addressing_follows_keys_to_their_nodes() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
    let addresses: Vec<String> = nodes.iter().map(RedisServer::address).collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    wait_until("the cluster to agree", READY_TIMEOUT, || {
        nodes.iter().all(|node| {
            node.command(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        })
    });
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    let settings = format!(
        "cluster: {{ addresses: [{}] }}, timeout: 2s",
        list.join(", ")
    );
    let limit = "requests: 2, window: 60s, by: \"header:x-user\"";
    let sluice = Sluice::start(&config(web, &backend, limit, &settings));
    let users: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    for user in &users {
        assert_eq!(
            statuses(web, user, 3),
            [200, 200, 429],
            "{}",
            sluice.stderr()
        );
    }
    // Each user's counter lives on the node of its key's slot.
    let held: Vec<usize> = nodes
        .iter()
        .map(|node| {
            let keys = node.command(&["KEYS", "sluice:all:*"]);
            keys.split(' ').filter(|k| !k.is_empty()).count()
        })
        .collect();
    assert_eq!(held.iter().sum::<usize>(), users.len(), "{held:?}");
    assert!(held.iter().filter(|n| **n > 0).count() > 1, "{held:?}");
}
