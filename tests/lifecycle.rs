//! Stop and upgrade: graceful binary upgrade by socket handoff (SIGQUIT + `sluice -u`),
//! draining stop (SIGTERM), and the config file watch through a ConfigMap symlink swap.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// How one request of a load client went.
enum Outcome {
    /// A 2xx response; `close` if it carried `Connection: close`.
    Ok {
        close: bool,
    },
    /// A reused keepalive connection was closed by sluice before any byte of the response:
    /// a client retries this (RFC 9112 §9.3.1), it is not a failure.
    ClosedWhileIdle,
    Failed(String),
}

/// Sends one GET on `stream` and reads the response.
fn exchange(stream: &mut BufReader<TcpStream>, reused: bool, path: &str) -> Outcome {
    let request = format!("GET {path} HTTP/1.1\r\nhost: upgrade.test\r\n\r\n");
    if let Err(e) = stream.get_mut().write_all(request.as_bytes()) {
        return Outcome::Failed(format!("write: {e}"));
    }
    let mut status_line = String::new();
    match stream.read_line(&mut status_line) {
        Ok(0) if reused => return Outcome::ClosedWhileIdle,
        Ok(0) => return Outcome::Failed("EOF before a response on a new connection".into()),
        Err(e) if reused && e.kind() == ErrorKind::ConnectionReset => {
            return Outcome::ClosedWhileIdle
        }
        Err(e) => return Outcome::Failed(format!("read: {e}")),
        Ok(_) => {}
    }
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).unwrap_or(0) == 0 {
            return Outcome::Failed("EOF in the response header".into());
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    if let Err(e) = stream.read_exact(&mut body) {
        return Outcome::Failed(format!("body: {e}"));
    }
    if !status_line.starts_with("HTTP/1.1 2") {
        return Outcome::Failed(status_line.trim_end().to_string());
    }
    Outcome::Ok { close }
}

/// Counts of a load run.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    reconnects_after_close: usize,
    closed_while_idle: usize,
    failures: Vec<String>,
}

/// `clients` keepalive clients sending GETs to `web` until `stop`.
fn load(web: SocketAddr, clients: usize, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<Tally>> {
    (0..clients)
        .map(|c| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut tally = Tally::default();
                let mut connection: Option<(BufReader<TcpStream>, bool)> = None;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (stream, reused) = match connection.as_mut() {
                        Some(c) => c,
                        None => match TcpStream::connect(web) {
                            Ok(s) => connection.insert((BufReader::new(s), false)),
                            Err(e) => {
                                tally.failures.push(format!("connect: {e}"));
                                continue;
                            }
                        },
                    };
                    n += 1;
                    match exchange(stream, *reused, &format!("/c{c}/{n}")) {
                        Outcome::Ok { close } => {
                            tally.ok += 1;
                            *reused = true;
                            if close {
                                tally.reconnects_after_close += 1;
                                connection = None;
                            }
                        }
                        Outcome::ClosedWhileIdle => {
                            tally.closed_while_idle += 1;
                            connection = None;
                        }
                        Outcome::Failed(why) => {
                            tally.failures.push(why);
                            connection = None;
                        }
                    }
                }
                tally
            })
        })
        .collect()
}

fn config(web: SocketAddr, backend: &Backend) -> String {
    single_upstream_config(web, &addresses(&[backend]), "", "")
}

#[test]
fn three_graceful_upgrades_under_load_fail_no_request() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let mut current = Sluice::start_with_server(
        &config(web, &backend),
        "watch_config: false, grace_period: 20s",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(web, 20, stop.clone());
    let mut lifetimes = Vec::new();
    for _ in 0..3 {
        let quit_sent = Instant::now();
        let successor = current.upgrade();
        let lived = current
            .wait_exit(Duration::from_secs(30))
            .map(|_| quit_sent.elapsed());
        lifetimes.push(lived);
        assert!(
            lived.is_some(),
            "old process still running:\n{}",
            current.stderr()
        );
        current = successor;
    }
    // Keep the load on the last successor for a moment, then count.
    let requests_before = backend.requests().len();
    wait_until("requests on the last successor", READY_TIMEOUT, || {
        backend.requests().len() > requests_before + 100
    });
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for client in clients {
        let tally = client.join().expect("client thread");
        total.ok += tally.ok;
        total.reconnects_after_close += tally.reconnects_after_close;
        total.closed_while_idle += tally.closed_while_idle;
        total.failures.extend(tally.failures);
    }
    println!(
        "upgrade: 3 upgrades, 20 clients: {} requests ok, {} failed, {} reconnects after \
         Connection: close, {} idle closes; old process lived {lifetimes:?} after SIGQUIT",
        total.ok,
        total.failures.len(),
        total.reconnects_after_close,
        total.closed_while_idle
    );
    assert!(total.failures.is_empty(), "failures: {:?}", total.failures);
    assert!(total.ok > 1000, "only {} requests", total.ok);
    assert!(
        total.reconnects_after_close > 0,
        "keepalive clients were told to reconnect"
    );
}

#[test]
fn slow_response_started_before_sigquit_completes() {
    let backend = Backend::start("app", Behavior::Delay(Duration::from_secs(3)));
    let web = listen_address();
    let mut old = Sluice::start_with_server(
        &config(web, &backend),
        "watch_config: false, grace_period: 20s",
    );
    let slow = thread::spawn(move || Client::connect(web).get("upgrade.test", "/slow"));
    wait_until(
        "the slow request to reach the backend",
        READY_TIMEOUT,
        || !backend.requests().is_empty(),
    );
    let quit_sent = Instant::now();
    let successor = old.upgrade();
    let response = slow.join().expect("client thread");
    assert_eq!(response.status, 200);
    let lived = old
        .wait_exit(Duration::from_secs(30))
        .map(|_| quit_sent.elapsed());
    println!("upgrade: slow response completed; old process lived {lived:?} after SIGQUIT");
    assert!(
        lived.is_some_and(|l| l < Duration::from_secs(20)),
        "{lived:?}"
    );
    assert!(
        old.stderr().contains("nothing left open"),
        "{}",
        old.stderr()
    );
    assert_eq!(get(web, "/after").status, 200);
    drop(successor);
}

#[test]
fn old_process_exits_at_grace_period_when_a_request_stays_open() {
    let backend = Backend::start("app", Behavior::Hang);
    let web = listen_address();
    let mut old = Sluice::start_with_server(
        &single_upstream_config(
            web,
            &addresses(&[&backend]),
            ", timeouts: { read: 60s }",
            "",
        ),
        "watch_config: false, grace_period: 2s",
    );
    let held = thread::spawn(move || {
        let mut client = Client::connect(web);
        client.send_raw(b"GET /hold HTTP/1.1\r\nhost: upgrade.test\r\n\r\n");
        client.read_response()
    });
    wait_until(
        "the held request to reach the backend",
        READY_TIMEOUT,
        || !backend.requests().is_empty(),
    );
    let quit_sent = Instant::now();
    let _successor = old.upgrade();
    let lived = old
        .wait_exit(Duration::from_secs(30))
        .map(|_| quit_sent.elapsed());
    println!("upgrade: with a request held open, the old process lived {lived:?} after SIGQUIT");
    assert!(lived.is_some());
    assert!(
        old.stderr().contains("grace period over; closing 1 open"),
        "{}",
        old.stderr()
    );
    assert!(
        held.join().expect("client thread").is_none(),
        "cut at grace period"
    );
}

#[test]
fn sigquit_without_a_successor_keeps_serving() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let mut sluice = Sluice::start(&config(web, &backend));
    sluice.signal("QUIT");
    wait_until("the refusal to be logged", READY_TIMEOUT, || {
        sluice.stderr().contains("SIGQUIT ignored: no successor")
    });
    assert!(sluice.is_running());
    assert_eq!(get(web, "/still").status, 200);
    assert_eq!(sluice.admin_get("/readyz").map(|r| r.status), Some(200));
}

#[test]
fn sigterm_drains_then_stops_accepting_then_exits() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let mut sluice = Sluice::start_with_server(
        &config(web, &backend),
        "watch_config: false, drain_delay: 2s, grace_period: 5s",
    );
    let mut keepalive = Client::connect(web);
    assert_eq!(keepalive.get("drain.test", "/before").status, 200);
    let term_sent = Instant::now();
    sluice.signal("TERM");
    wait_until("/readyz to turn 503", READY_TIMEOUT, || {
        sluice.admin_get("/readyz").map(|r| r.status) == Some(503)
    });
    let readyz_503_after = term_sent.elapsed();
    // Still accepting during the delay; responses close their connection.
    let during = Client::connect(web).get("drain.test", "/during");
    assert_eq!(during.status, 200);
    assert_eq!(during.header("connection"), Some("close"));
    let accepted_during = term_sent.elapsed();
    assert!(
        accepted_during < Duration::from_secs(2),
        "the check ran after the delay ({accepted_during:?}); the machine is too slow for it"
    );
    let response = keepalive.get("drain.test", "/during-keepalive");
    assert_eq!(response.header("connection"), Some("close"));
    wait_until("the listener to refuse connections", READY_TIMEOUT, || {
        TcpStream::connect(web).is_err()
    });
    let refused_after = term_sent.elapsed();
    let exited = sluice.wait_exit(Duration::from_secs(15));
    println!(
        "drain: /readyz 503 after {readyz_503_after:?}, refused after {refused_after:?}, exit {:?} after SIGTERM",
        exited.map(|_| term_sent.elapsed())
    );
    assert!(refused_after >= Duration::from_secs(2), "{refused_after:?}");
    assert!(exited.is_some());
}

#[test]
fn config_watch_follows_a_configmap_symlink_swap() {
    let (a, b) = (
        Backend::start("a", Behavior::Echo),
        Backend::start("b", Behavior::Echo),
    );
    let web = listen_address();
    let dir = ScratchDir::new();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The layout the kubelet writes for a ConfigMap volume.
    let write_version = |dir: &ScratchDir, name: &str, backend: &Backend| {
        let version = dir.0.join(name);
        std::fs::create_dir_all(&version).expect("version dir");
        let header = Sluice::header(dir, admin, "watch_config: true");
        std::fs::write(
            version.join("sluice.yaml"),
            format!("{header}{}", config(web, backend)),
        )
        .expect("write version");
    };
    write_version(&dir, "..2026_11_22_1", &a);
    std::os::unix::fs::symlink("..2026_11_22_1", dir.0.join("..data")).expect("..data link");
    std::os::unix::fs::symlink("..data/sluice.yaml", dir.0.join("sluice.yaml"))
        .expect("sluice.yaml link");
    let sluice = Sluice::start_in(dir, admin, "sluice.yaml");
    assert_eq!(get(web, "/").backend(), "a");

    write_version(&sluice.dir, "..2026_11_22_2", &b);
    std::os::unix::fs::symlink("..2026_11_22_2", sluice.dir.0.join("..data_tmp"))
        .expect("..data_tmp link");
    std::fs::rename(sluice.dir.0.join("..data_tmp"), sluice.dir.0.join("..data"))
        .expect("swap ..data");
    wait_until("the swapped config to be served", READY_TIMEOUT, || {
        get(web, "/").backend() == "b"
    });
    assert_eq!(sluice.generation(), 2);
}

#[test]
fn takeover_pods_hand_over_through_the_socket_directory_without_signals() {
    let backend = TcpEcho::start();
    let sql = listen_address();
    let body = format!(
        "listeners: [{{ name: sql, listen: \"{sql}\", protocol: tcp }}]\n\
         routes: [{{ name: db, listener: sql, upstream: db }}]\n\
         upstreams: [{{ name: db, protocol: tcp, endpoints: [\"{}\"] }}]\n",
        backend.address
    );
    // Pod A: nothing listens yet, so it starts fresh.
    let mut pod_a = Sluice::start_with_flags(
        &body,
        "watch_config: false, grace_period: 30s",
        &["--takeover"],
    );
    assert!(pod_a
        .stderr()
        .contains("no predecessor listens; starting fresh"));
    let mut session = TcpStream::connect(sql).expect("connect");
    session.write_all(b"hello").expect("send");
    let mut back = [0u8; 5];
    session.read_exact(&mut back).expect("echo");

    // Pod B: same command, same socket directory; nobody signals pod A.
    let pod_b = pod_a.start_next(&["--takeover"]);
    wait_until("pod A to stop accepting", READY_TIMEOUT, || {
        pod_a
            .stderr()
            .contains("listeners stopped; waiting for 1 open")
    });
    assert!(pod_b
        .stderr()
        .contains("is already listening; taking over its sockets"));
    assert!(pod_a
        .stderr()
        .contains("a successor is waiting (--takeover): handing the listening sockets"));
    let mut fresh = TcpStream::connect(sql).expect("pod B accepts");
    fresh.write_all(b"new").expect("send");
    let mut three = [0u8; 3];
    fresh.read_exact(&mut three).expect("echo through pod B");
    session
        .write_all(b"still")
        .expect("send on the old session");
    session
        .read_exact(&mut back)
        .expect("the session still echoes on pod A");
    assert_eq!(&back, b"still");

    // The session ends; pod A waits for its pod's SIGTERM instead of exiting (an exit would
    // restart the container next to pod B).
    drop(session);
    wait_until("pod A to drain", READY_TIMEOUT, || {
        pod_a.stderr().contains("exiting at SIGTERM")
    });
    assert!(pod_a.is_running());
    pod_a.signal("TERM");
    let exited = pod_a.wait_exit(Duration::from_secs(10));
    println!("takeover: pod A exited {exited:?} after SIGTERM");
    assert!(exited.is_some(), "{}", pod_a.stderr());
    let mut after = TcpStream::connect(sql).expect("pod B still accepts");
    after.write_all(b"ok").expect("send");
    let mut two = [0u8; 2];
    after.read_exact(&mut two).expect("echo");
    drop(pod_b);
}

/// Kills a process this test did not spawn (the successor `sluice upgrade` started).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(self.0.to_string())
            .status();
    }
}

#[test]
fn sluice_upgrade_command_replaces_the_process_and_refuses_a_bad_config() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let mut old = Sluice::start(&config(web, &backend));
    // Output goes to a file: the successor inherits it and outlives the command.
    let output = old.dir.0.join("upgrade-output.log");
    let upgrade = |config: &std::path::Path| {
        let log = std::fs::File::create(&output).expect("output file");
        let status = std::process::Command::new(sluice_binary())
            .args(["upgrade", "-c"])
            .arg(config)
            .stdout(log.try_clone().expect("clone file"))
            .stderr(log)
            .status()
            .expect("run sluice upgrade");
        (status, std::fs::read_to_string(&output).unwrap_or_default())
    };

    // A bad config: refused before anything is started or signalled.
    let good = std::fs::read_to_string(&old.config_path).expect("read config");
    let bad = old
        .dir
        .write("bad.yaml", &good.replace("upstreams:", "upstreams: 7\nx:"));
    let (status, text) = upgrade(&bad);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("the running sluice is untouched"), "{text}");
    assert!(old.is_running());

    let quit_sent = Instant::now();
    let (status, text) = upgrade(&old.config_path);
    assert!(status.success(), "{text}");
    let new_pid: u32 = std::fs::read_to_string(old.dir.0.join("sluice.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let _successor = KillOnDrop(new_pid);
    assert_ne!(new_pid, old.pid());
    let lived = old
        .wait_exit(Duration::from_secs(30))
        .map(|_| quit_sent.elapsed());
    println!("upgrade command: old process lived {lived:?}; new pid {new_pid}");
    assert!(lived.is_some());
    assert_eq!(get(web, "/after").status, 200);
}

#[test]
fn daemon_mode_detaches_writes_its_pid_and_keeps_the_access_log() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let dir = ScratchDir::new();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let header = Sluice::header(&dir, admin, "watch_config: false");
    let path = dir.write("sluice.yaml", &format!("{header}{}", config(web, &backend)));
    let status = std::process::Command::new(sluice_binary())
        .args(["-d", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run sluice -d");
    assert!(
        status.success(),
        "the foreground process exits 0 after forking"
    );
    let pid_file = dir.0.join("sluice.pid");
    let mut pid = 0u32;
    wait_until("the daemon's pid file", READY_TIMEOUT, || {
        pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    let _daemon = KillOnDrop(pid);
    wait_until("the daemon to serve", READY_TIMEOUT, || {
        TcpStream::connect(web).is_ok()
    });
    assert_eq!(get(web, "/daemon").status, 200);
    wait_until("the access log line", READY_TIMEOUT, || {
        std::fs::read_to_string(dir.0.join("access.log"))
            .unwrap_or_default()
            .contains("\"/daemon\"")
    });
}

/// Connections waiting in the accept queue of the listener on `address` (the `rx_queue` of
/// its LISTEN line in /proc/net/tcp), or `None` if it does not listen.
fn accept_queue(address: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let SocketAddr::V4(v4) = address else {
        return None;
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| u64::from_str_radix(fields[4].split(':').nth(1)?, 16).ok())?
    })
}

/// A connection accepted just before a stop's listeners close gets its first request
/// answered (with `Connection: close`), not a close without a response: its client connected
/// while the listener accepted. (Pingora dropped every session still reading its first head
/// at shutdown: about 8 failed requests per upgrade under load; patch 0010.)
#[test]
fn a_new_connection_accepted_before_the_stop_is_answered() {
    let echo = Backend::start("echo", Behavior::Echo);
    let hang = Backend::start("hang", Behavior::Hang);
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n  - {{ name: slow, listener: web, paths: [{{ prefix: /hang }}], upstream: hang }}\n\
         \x20 - {{ name: all, listener: web, upstream: echo }}\n\
         upstreams:\n  - {{ name: hang, endpoints: [\"{}\"] }}\n  - {{ name: echo, endpoints: [\"{}\"] }}\n",
        hang.address, echo.address
    );
    let sluice = Sluice::start_with_server(
        &body,
        "watch_config: false, drain_delay: 0s, grace_period: 30s",
    );
    // A request in flight keeps the stopping process alive.
    let mut busy = Client::connect(web);
    busy.send_raw(b"GET /hang HTTP/1.1\r\nhost: a.test\r\n\r\n");
    wait_until(
        "the slow request to reach its backend",
        READY_TIMEOUT,
        || hang.requests().len() == 1,
    );
    // A new connection, accepted by sluice, with half a request head.
    let mut fresh = Client::connect(web);
    fresh.send_raw(b"GET /fresh HTTP/1.1\r\n");
    wait_until("sluice to accept the connection", READY_TIMEOUT, || {
        accept_queue(web) == Some(0)
    });
    sluice.signal("TERM");
    wait_until("the listeners to stop", READY_TIMEOUT, || {
        sluice.stderr().contains("listeners stopped")
    });
    fresh.send_raw(b"host: a.test\r\n\r\n");
    let response = fresh
        .read_response()
        .expect("an answer, not a close without a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
}
