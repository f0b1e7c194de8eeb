//! Operating sluice (issue #14): signals an operator or a tool sends, logs and state an
//! operator reads, and refusing to start in a state that only looks like running.

mod support;

use std::time::Duration;
use support::*;

/// A config with listener `web` on a fresh port in front of `backend`.
fn config_for(backend: &Backend) -> (std::net::SocketAddr, String) {
    let web = listen_address();
    let body = single_upstream_config(web, &addresses(&[backend]), "", "");
    (web, body)
}

/// Sluice with `server_settings` in front of a hanging backend, and a client whose request
/// to `path` the backend holds (it has arrived there).
fn with_a_held_request(server_settings: &str, path: &str) -> (Sluice, Backend, Client) {
    let backend = Backend::start("a", Behavior::Hang);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start_with_server(&body, server_settings);
    let mut client = Client::connect(web);
    client.send_raw(format!("GET {path} HTTP/1.1\r\nhost: a.test\r\n\r\n").as_bytes());
    wait_until("the backend to get the request", READY_TIMEOUT, || {
        backend.requests().len() == 1
    });
    (sluice, backend, client)
}

/// logrotate's `postrotate kill -USR1` must reopen the access log, not kill the edge; a
/// stray USR2 (nginx's upgrade signal), ALRM or real-time signal is logged and ignored.
#[test]
fn usr1_reopens_the_access_log_and_other_signals_are_ignored() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let mut sluice = Sluice::start(&body);
    assert_eq!(get(web, "/before").status, 200);
    sluice.wait_access_log(1);

    let log = sluice.dir.0.join("access.log");
    let rotated = sluice.dir.0.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the access log");
    sluice.signal("USR1");
    wait_until("the reopen", READY_TIMEOUT, || {
        sluice.stderr().contains("reopened")
    });
    for name in ["USR2", "ALRM", "VTALRM", "PROF", "IO", "PWR", "RTMIN+3"] {
        sluice.signal(name);
    }
    wait_until("the ignored signals' log lines", READY_TIMEOUT, || {
        sluice.stderr().matches(" ignored: sluice stops on").count() == 7
    });
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert_eq!(get(web, "/after").status, 200);

    let records = sluice.wait_access_log(1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["uri"], "/after");
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("/before"), "{old}");
    assert!(sluice.stderr().contains("SIGUSR2 ignored"));
}

/// SIGINT ends the process at once, every time: Pingora's own fast shutdown dropped the
/// runtimes under running accept loops, and about one stop in ten hung with an accept loop
/// spinning on "Accept() failed" (gigabytes of log in seconds).
#[test]
fn sigint_always_ends_the_process() {
    let backend = Backend::start("a", Behavior::Echo);
    for _ in 0..8 {
        let (web, body) = config_for(&backend);
        let mut sluice = Sluice::start(&body);
        let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(web)).collect();
        for client in &mut clients {
            assert_eq!(client.get("a.test", "/").status, 200);
        }
        sluice.signal("INT");
        let exited = sluice.wait_exit(READY_TIMEOUT);
        let log = sluice.stderr();
        assert!(exited.is_some(), "still running after SIGINT:\n{log}");
        assert!(!log.contains("Accept() failed"), "{log}");
    }
}

/// SIGINT stops at once, also while a SIGTERM waits out its drain delay.
#[test]
fn sigint_during_the_drain_delay_stops_at_once() {
    let backend = Backend::start("a", Behavior::Echo);
    let (_, body) = config_for(&backend);
    let mut sluice = Sluice::start_with_server(&body, "watch_config: false, drain_delay: 300s");
    sluice.signal("TERM");
    wait_until("draining", READY_TIMEOUT, || {
        sluice.admin_get("/readyz").is_some_and(|r| r.status == 503)
    });
    sluice.signal("INT");
    // Well under the 300 s drain delay even on a loaded machine.
    let took = sluice.wait_exit(Duration::from_secs(60));
    assert!(took.is_some(), "still running:\n{}", sluice.stderr());
}

/// A client that leaves before the answer is logged and counted as 499 (nginx's code, which
/// ingress-nginx dashboards expect), not 0.
#[test]
fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    let (sluice, _backend, client) = with_a_held_request("watch_config: false", "/slow");
    drop(client);
    let records = sluice.wait_access_log(1);
    assert_eq!(records[0]["status"], 499, "{records:?}");
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"499\",reason=\"\",route=\"all\"}",
        1.0,
    );
}

/// The access log has the fields of ingress-nginx's default format that sluice lacked.
#[test]
fn access_log_has_user_agent_referer_and_forwarded_for() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    let response = client.request(
        "GET",
        "/page",
        &[
            ("host", "a.test"),
            ("user-agent", "Mozilla/5.0 \"quoted\""),
            ("referer", "https://a.test/start"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    );
    assert_eq!(response.status, 200);
    assert_eq!(get(web, "/bare").status, 200);
    let records = sluice.wait_access_log(2);
    assert_eq!(records[0]["user_agent"], "Mozilla/5.0 \"quoted\"");
    assert_eq!(records[0]["referer"], "https://a.test/start");
    assert_eq!(records[0]["x_forwarded_for"], "203.0.113.7, 10.0.0.1");
    assert_eq!(records[1]["referer"], serde_json::Value::Null);
    assert_eq!(records[1]["x_forwarded_for"], serde_json::Value::Null);
}

/// A request still open when a stop's grace period ends gets its line, marked as cut.
#[test]
fn a_request_cut_by_the_grace_period_is_logged() {
    let (mut sluice, _backend, _client) = with_a_held_request(
        "watch_config: false, drain_delay: 0s, grace_period: 1s",
        "/cut-me",
    );
    sluice.signal("TERM");
    assert!(
        sluice.wait_exit(READY_TIMEOUT).is_some(),
        "{}",
        sluice.stderr()
    );
    let records = sluice.access_log();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["uri"], "/cut-me");
    assert_eq!(records[0]["ended"], "grace_period");
    assert_eq!(records[0]["status"], 503);
    assert_eq!(records[0]["route"], "all");
}

/// `/readyz` says why it is not ready: waiting for a first Kubernetes sync is not
/// "draining".
#[test]
fn readyz_says_it_waits_for_the_first_kubernetes_sync() {
    let web = listen_address();
    let body = format!(
        "kubernetes: {{ api_server: \"http://{}\" }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams:\n  - {{ name: app, kubernetes: {{ namespace: shop, service: app, port: http }} }}\n",
        refused_address()
    );
    let sluice = Sluice::start_unready(&body);
    let mut answer = String::new();
    wait_until("a readiness answer", READY_TIMEOUT, || {
        answer = sluice
            .admin_get("/readyz")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .unwrap_or_default();
        answer.contains("Kubernetes")
    });
    assert_eq!(
        answer,
        "waiting for the first Kubernetes sync of upstreams: app\n"
    );
}

/// A config file truncated to 0 bytes (an editor or a copy in progress) is refused as
/// empty, not as "the listeners changed".
#[test]
fn an_empty_config_file_is_refused_as_empty() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    sluice.write_raw_config("");
    sluice.sighup();
    wait_until("the reload to be refused", READY_TIMEOUT, || {
        sluice.metric("sluice_config_reloads_total{result=\"error\"}") == 1.0
    });
    let log = sluice.stderr();
    assert!(log.contains("the file is empty"), "{log}");
    assert!(!log.contains("listeners changed"), "{log}");
    assert_eq!(sluice.generation(), 1);
    assert_eq!(get(web, "/").status, 200);
}

/// A clean start with active health checks does not warn that endpoints are unhealthy
/// before the first check ran.
#[test]
fn a_clean_start_does_not_warn_before_the_first_health_check() {
    let a = Backend::start("a", Behavior::Echo);
    let b = Backend::start("b", Behavior::Echo);
    let web = listen_address();
    let body = single_upstream_config(
        web,
        &addresses(&[&a, &b]),
        ", health: { active: { http_path: /healthz, interval: 100ms } }",
        "",
    );
    let sluice = Sluice::start(&body);
    wait_until("both endpoints checked healthy", READY_TIMEOUT, || {
        sluice.stderr().matches("is healthy").count() == 2
    });
    let log = sluice.stderr();
    assert!(!log.contains("endpoints healthy"), "{log}");
    assert!(!log.contains("panic mode"), "{log}");
}

/// `/config` shows what is in effect: a reload's `access_log` change waits for a restart and
/// is listed as pending; credentials in URLs and query strings are redacted.
#[test]
fn config_shows_what_is_in_effect_and_hides_credentials() {
    let backend = Backend::start("a", Behavior::Echo);
    let web = listen_address();
    let body = single_upstream_config(
        web,
        &addresses(&[&backend]),
        ", health: { active: { http_path: \"/healthz?token=s3cret\" } }",
        "",
    );
    let sluice = Sluice::start(&body);
    let config_text = std::fs::read_to_string(&sluice.config_path).expect("config");
    let without_log = config_text
        .lines()
        .map(|line| {
            if line.starts_with("access_log:") {
                "access_log: { path: off }"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    sluice.write_raw_config(&without_log);
    sluice.sighup();
    wait_until("the reload", READY_TIMEOUT, || sluice.generation() == 2);

    let config = sluice.admin_get("/config").expect("/config").json();
    let log_path = sluice.dir.0.join("access.log").display().to_string();
    assert_eq!(config["config"]["access_log"]["path"], log_path.as_str());
    assert_eq!(config["restart_pending"]["access_log"]["path"], "off");
    let text = config.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("/healthz?token=REDACTED"), "{text}");
    // And lines are indeed still written.
    assert_eq!(get(web, "/").status, 200);
    sluice.wait_access_log(1);
}

/// The counters alerts watch exist at 0 from the start; per-route latency histograms appear
/// with a route's first request, not for every configured route.
#[test]
fn alert_counters_exist_from_the_start_and_histograms_with_traffic() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    let metrics =
        String::from_utf8(sluice.admin_get("/metrics").expect("metrics").body).expect("text");
    for series in [
        "sluice_config_reloads_total{result=\"error\"} 0",
        "sluice_config_reloads_total{result=\"ok\"} 0",
        "sluice_access_log_dropped_total{reason=\"full\"} 0",
        "sluice_upstream_ejections_total{upstream=\"app\"} 0",
        "sluice_upstream_retries_total{upstream=\"app\"} 0",
        "sluice_upstream_panic_routed_total{upstream=\"app\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(!metrics.contains("sluice_http_request_duration_seconds"));
    assert_eq!(get(web, "/").status, 200);
    sluice.wait_metric(
        "sluice_http_request_duration_seconds_count{route=\"all\"}",
        1.0,
    );
}

/// A listen address taken by another process fails the start with a clear error instead of
/// Pingora's endless "will try again".
#[test]
fn a_taken_listen_address_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address");
    let dir = ScratchDir::new();
    let admin = listen_address();
    let config = dir.write(
        "sluice.yaml",
        &format!(
            "{}listeners: [{{ name: web, listen: \"{address}\" }}]\n\
             routes: [{{ name: all, listener: web, upstream: app }}]\n\
             upstreams: [{{ name: app, endpoints: [\"127.0.0.1:9\"] }}]\n",
            Sluice::header(&dir, admin, "watch_config: false")
        ),
    );
    let stderr_path = dir.0.join("stderr.log");
    let mut child = std::process::Command::new(sluice_binary())
        .arg("-c")
        .arg(&config)
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("run sluice");
    // A regression keeps sluice running ("will try again"): fail instead of hanging.
    let mut status = None;
    wait_until("sluice to exit", READY_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let _ = child.kill();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listener web: cannot listen on {address}")),
        "{stderr}"
    );
}

/// Missing directories of the pid file and upgrade socket are created, so that
/// `kill -HUP $(cat pid_file)` and `sluice upgrade` work.
#[test]
fn missing_runtime_directories_are_created() {
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let dir = ScratchDir::new();
    let run = dir.0.join("run/sluice");
    let admin = listen_address();
    dir.write(
        "sluice.yaml",
        &format!(
            "server: {{ threads: 1, grace_period: 1s, watch_config: false, pid_file: {pid}, upgrade_sock: {sock} }}\n\
             admin: {{ listen: \"{admin}\" }}\n\
             access_log: {{ path: off }}\n{body}",
            pid = run.join("sluice.pid").display(),
            sock = run.join("upgrade.sock").display(),
        ),
    );
    let sluice = Sluice::start_in(dir, admin, "sluice.yaml");
    let pid = std::fs::read_to_string(run.join("sluice.pid")).expect("pid file");
    assert_eq!(pid.trim(), sluice.pid().to_string());
    assert_eq!(get(web, "/").status, 200);
}

/// A backend on `127.0.0.1` that reads each request head, writes `response` and closes the
/// connection, with a reset (SO_LINGER 0) when `reset`.
fn scripted_backend(response: Vec<u8>, reset: bool) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let response = response.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(&response);
                if reset {
                    reset_on_close(&stream);
                }
            });
        }
    });
    address
}

/// The lines of `log` at ERROR level.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" ERROR ")).collect()
}

/// An upstream answering an invalid head (300 header lines, a `Set-Cookie` among them) gets
/// one bounded warning per upstream and interval, never the raw head.
#[test]
fn an_invalid_upstream_head_is_logged_once_bounded_and_without_header_values() {
    let mut response = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=SECRET-COOKIE\r\n".to_vec();
    for i in 0..300 {
        response.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(100)).as_bytes());
    }
    response.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let backend = scripted_backend(response, false);
    let web = listen_address();
    let body = single_upstream_config(web, &[backend.to_string()], ", retry: { attempts: 3 }", "");
    let sluice = Sluice::start(&body);
    for _ in 0..3 {
        assert_eq!(get(web, "/").status, 502);
    }
    sluice.wait_access_log(3);
    let log = sluice.stderr();
    assert!(!log.contains("SECRET-COOKIE"), "{log}");
    assert!(
        log.lines().all(|l| l.len() < 1000),
        "a long line in:\n{log}"
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("upstream app:"))
        .collect();
    // Three failed requests within one 10 s interval: one line (two if the machine is so
    // slow that the interval ends between them), never one per failure or try.
    assert!((1..3).contains(&warnings.len()), "{log}");
    assert!(warnings[0].contains("InvalidHTTPHeader"), "{log}");
    assert!(error_lines(&log).is_empty(), "{log}");
}

/// A backend that ends a WebSocket with a reset is not an error of sluice's: the access log
/// says how the tunnel ended; the text log has no ERROR line.
#[test]
fn a_websocket_the_backend_resets_is_no_error_line() {
    let backend = scripted_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec(),
        true,
    );
    let web = listen_address();
    let body = single_upstream_config(web, &[backend.to_string()], "", "");
    let sluice = Sluice::start(&body);
    let mut client = Client::connect(web);
    client.send_raw(
        b"GET /ws HTTP/1.1\r\nhost: a.test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
    );
    let records = sluice.wait_access_log(1);
    assert_eq!(records[0]["status"], 101, "{records:?}");
    let log = sluice.stderr();
    assert!(error_lines(&log).is_empty(), "{log}");
}

/// With the Kubernetes API unreachable, the failure is logged once (and counted each time),
/// not per retry.
#[test]
fn an_unreachable_kubernetes_api_is_logged_as_a_state_change() {
    let web = listen_address();
    let body = format!(
        "kubernetes: {{ api_server: \"http://{}\" }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams:\n  - {{ name: app, kubernetes: {{ namespace: shop, service: app, port: http }} }}\n",
        refused_address()
    );
    let sluice = Sluice::start_unready(&body);
    wait_until("three failed watch tries", READY_TIMEOUT, || {
        sluice.metric("sluice_discovery_errors_total{upstream=\"app\"}") >= 3.0
    });
    let log = sluice.stderr();
    assert_eq!(log.matches("watch of shop failed").count(), 1, "{log}");
}

/// A rejected reload lists every error on one log line.
#[test]
fn log_lines_are_single_lines() {
    let backend = Backend::start("a", Behavior::Echo);
    let (_, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    sluice.write_config(&body.replace("upstream: app", "upstream: nowhere"));
    sluice.sighup();
    wait_until("the reload to be refused", READY_TIMEOUT, || {
        sluice.metric("sluice_config_reloads_total{result=\"error\"}") == 1.0
    });
    let log = sluice.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("rejected"))
        .expect("a rejection line");
    assert!(line.contains("undefined upstream \"nowhere\""), "{log}");
    assert!(log.lines().all(|l| l.starts_with('[')), "{log}");
}

/// The metrics listener serves Prometheus and the kubelet and nothing else; the admin
/// listener refuses Host names a DNS rebinding would carry, and with a token file `/config`
/// and `/upstreams` need the token.
#[test]
fn admin_stays_private() {
    use std::net::SocketAddr;
    let backend = Backend::start("a", Behavior::Echo);
    let (_, body) = config_for(&backend);
    let dir = ScratchDir::new();
    let admin = listen_address();
    let metrics = listen_address();
    let token = dir.write("admin-token", "s3cret-token\n");
    let header = Sluice::header(&dir, admin, "watch_config: false").replace(
        &format!("admin: {{ listen: \"{admin}\" }}"),
        &format!(
            "admin: {{ listen: \"{admin}\", metrics_listen: \"{metrics}\", token_file: {} }}",
            token.display()
        ),
    );
    dir.write("sluice.yaml", &format!("{header}{body}"));
    let sluice = Sluice::start_in(dir, admin, "sluice.yaml");

    let ask = |address: SocketAddr, path: &str, headers: &[(&str, &str)]| -> u16 {
        let mut client = Client::connect(address);
        client.request("GET", path, headers).status
    };
    let on_metrics = metrics.to_string();
    let on_admin = admin.to_string();
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(ask(metrics, path, &[("host", &on_metrics)]), 200, "{path}");
    }
    for path in ["/config", "/upstreams"] {
        assert_eq!(ask(metrics, path, &[("host", &on_metrics)]), 404, "{path}");
        assert_eq!(ask(admin, path, &[("host", &on_admin)]), 401, "{path}");
        let authorized = [
            ("host", on_admin.as_str()),
            ("authorization", "Bearer s3cret-token"),
        ];
        assert_eq!(ask(admin, path, &authorized), 200, "{path}");
        let wrong = [
            ("host", on_admin.as_str()),
            ("authorization", "Bearer s3cret-tokem"),
        ];
        assert_eq!(ask(admin, path, &wrong), 401, "{path}");
    }
    // A page on attacker.example whose name was rebound to 127.0.0.1.
    let rebound = format!("attacker.example:{}", admin.port());
    assert_eq!(ask(admin, "/metrics", &[("host", &rebound)]), 403);
    assert_eq!(
        ask(metrics, "/metrics", &[("host", "attacker.example")]),
        403
    );
    assert_eq!(ask(admin, "/metrics", &[("host", "localhost")]), 200);
    drop(sluice);
}

/// `sluice -t` warns when the admin listener is reachable from other machines without a
/// token.
#[test]
fn check_warns_about_a_public_admin_listener() {
    let body = "admin: { listen: \"0.0.0.0:9901\" }\n\
                listeners: [{ name: web, listen: \"127.0.0.1:8080\" }]\n\
                routes: [{ name: all, listener: web, upstream: app }]\n\
                upstreams: [{ name: app, endpoints: [\"127.0.0.1:9\"] }]\n";
    let (output, _, _dir) = check_config(body);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: admin.listen is 0.0.0.0:9901"),
        "{stdout}"
    );
    let (output, _, _dir) = check_config(&body.replace("0.0.0.0:9901", "127.0.0.1:9901"));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("warning"));
}

/// A client that closes or resets its connection in the middle of a request head is no
/// ERROR line (Pingora logged one per connection; nginx logs it at info level).
#[test]
fn a_client_leaving_in_the_middle_of_a_head_is_no_error_line() {
    use std::io::Write;
    let backend = Backend::start("a", Behavior::Echo);
    let (web, body) = config_for(&backend);
    let sluice = Sluice::start(&body);
    for reset in [false, true] {
        let mut stream = std::net::TcpStream::connect(web).expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n")
            .expect("half a head");
        if reset {
            reset_on_close(&stream);
        }
        drop(stream);
    }
    // Requests after the two closes, through the same two worker threads.
    for _ in 0..20 {
        assert_eq!(get(web, "/").status, 200);
    }
    sluice.wait_access_log(20);
    let log = sluice.stderr();
    assert!(error_lines(&log).is_empty(), "{log}");
}

/// An upstream whose endpoints fail their first checks is warned about once: its panic
/// began before any check (routing to all), and the warning comes when the checks fail.
#[test]
fn an_upstream_down_from_the_start_is_warned_about_once() {
    let web = listen_address();
    let down = [refused_address().to_string(), refused_address().to_string()];
    let body = single_upstream_config(
        web,
        &down,
        ", health: { active: { interval: 100ms, unhealthy_after: 1 } }",
        "",
    );
    let sluice = Sluice::start(&body);
    wait_until("the panic warning", READY_TIMEOUT, || {
        sluice.stderr().contains("only 0 of 2 endpoints healthy")
    });
    wait_until("both endpoints checked unhealthy", READY_TIMEOUT, || {
        sluice.stderr().matches("is unhealthy").count() == 2
    });
    assert_eq!(sluice.stderr().matches("endpoints healthy").count(), 1);
}

/// SIGINT stops at once during the grace period too, when the listeners have stopped and
/// open requests hold the process.
#[test]
fn sigint_during_the_grace_period_stops_at_once() {
    let (mut sluice, _backend, _client) = with_a_held_request(
        "watch_config: false, drain_delay: 0s, grace_period: 300s",
        "/held",
    );
    sluice.signal("TERM");
    wait_until("the listeners to stop", READY_TIMEOUT, || {
        sluice.stderr().contains("listeners stopped")
    });
    sluice.signal("INT");
    let took = sluice.wait_exit(Duration::from_secs(60));
    assert!(took.is_some(), "still running:\n{}", sluice.stderr());
}
