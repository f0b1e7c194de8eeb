//! Discovery at scale: 1,000 services × 50 endpoints with 100 EndpointSlice updates per
//! second. A measurement, not a check, so it is ignored by default; bench/README.md shows how
//! to run it against a release build and records the figures.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::fake_kube::{ready, slice, FakeKube};
use support::*;

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 50;
const UPDATES_PER_SECOND: u64 = 100;
/// How long request latency is sampled, without and then with churn.
const PHASE: Duration = Duration::from_secs(5);

fn service_slice(
    namespace: &str,
    service: usize,
    shift: usize,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let ips: Vec<String> = (0..ENDPOINTS)
        .map(|k| {
            format!(
                "10.{}.{}.{}",
                service / 250,
                service % 250,
                1 + (k + shift) % 250
            )
        })
        .collect();
    let endpoints: Vec<_> = ips.iter().map(|ip| ready(ip)).collect();
    slice(
        namespace,
        &format!("svc{service}-1"),
        &format!("svc{service}"),
        ("http", 8080),
        &endpoints,
    )
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of each thread of process `pid`, by thread name.
fn thread_cpu(pid: u32) -> Vec<(String, Duration)> {
    let ticks_per_second = 100;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            let cpu = Duration::from_millis(ticks * 1000 / ticks_per_second);
            Some((
                format!("{} ({})", name.trim(), dir.file_name()?.to_string_lossy()),
                cpu,
            ))
        })
        .collect()
}

/// Pushes `UPDATES_PER_SECOND` slice updates to services of `namespace` until `stop`;
/// returns how many were sent and over how long.
fn churn(
    kube: Arc<FakeKube>,
    namespace: &'static str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Duration)> {
    thread::spawn(move || {
        let mut n = 0usize;
        let tick = Duration::from_micros(1_000_000 / UPDATES_PER_SECOND);
        let begun = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            kube.apply(service_slice(namespace, n % SERVICES, 1 + n / SERVICES));
            n += 1;
            let due = begun + tick * n as u32;
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        (n, begun.elapsed())
    })
}

/// A watch of `namespace` that reads and discards its events, so that the control phase
/// costs the fake API server what sluice's watch costs it.
fn discarding_watch(
    kube: &FakeKube,
    namespace: &str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let mut stream = std::net::TcpStream::connect(kube.address).expect("connect fake API server");
    write!(
        stream,
        "GET /apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?watch=true&resourceVersion=0 HTTP/1.1\r\nhost: fake\r\n\r\n"
    )
    .expect("send watch request");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    thread::spawn(move || {
        let mut buffer = [0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buffer) {
                Ok(0) => return,
                _ => continue,
            }
        }
    })
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

/// Latencies of back-to-back GETs of `/probe` for `period`.
fn request_latencies(web: SocketAddr, period: Duration) -> Vec<Duration> {
    let mut client = Client::connect(web);
    let begun = Instant::now();
    let mut latencies = Vec::new();
    while begun.elapsed() < period {
        let started = Instant::now();
        match client.try_request("GET", "/probe", &[("host", "scale.test")], b"") {
            Some(response) => assert_eq!(response.status, 200),
            // keepalive.max_requests reached: sluice closed the connection.
            None => {
                client = Client::connect(web);
                continue;
            }
        }
        latencies.push(started.elapsed());
    }
    latencies
}

#[test]
#[ignore = "measurement: run explicitly, see bench/README.md"]
fn thousand_services_with_churn() {
    let port = free_port();
    let a = Backend::start_on(
        "a",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 2], port)),
    );
    let b = Backend::start_on(
        "b",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 3], port)),
    );
    let kube = Arc::new(FakeKube::start());
    for s in 0..SERVICES {
        kube.apply(service_slice("scale", s, 0));
    }
    kube.apply(slice(
        "scale",
        "probe-1",
        "probe",
        ("http", port),
        &[ready("127.0.0.2")],
    ));
    let web = listen_address();
    let mut body = format!(
        "kubernetes: {{ api_server: \"{}\" }}\n\
         listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes: [{{ name: probe, listener: web, upstream: probe }}]\n\
         upstreams:\n  - {{ name: probe, kubernetes: {{ namespace: scale, service: probe, port: http }} }}\n",
        kube.url()
    );
    for s in 0..SERVICES {
        body.push_str(&format!(
            "  - {{ name: svc{s}, balance: consistent_hash, hash_key: \"$request_uri\", kubernetes: {{ namespace: scale, service: svc{s}, port: http }} }}\n"
        ));
    }
    let started = Instant::now();
    let sluice = Sluice::start(&body);
    let sync_time = started.elapsed();
    let rss_synced = rss_kb(sluice.pid());

    let mut quiet = request_latencies(web, PHASE);

    // Control: the same churn in a namespace sluice does not watch, read by a discarding
    // watch, so the fake API server and the machine carry the same load without sluice.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = discarding_watch(&kube, "control", stop.clone());
    let control_churn = churn(kube.clone(), "control", stop.clone());
    let mut control = request_latencies(web, PHASE);
    stop.store(true, Ordering::Relaxed);
    control_churn.join().expect("control churn thread");
    reader.join().expect("discarding watch thread");

    let cpu_before = thread_cpu(sluice.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let churn = churn(kube.clone(), "scale", stop.clone());
    let mut busy = request_latencies(web, PHASE);
    let mut to_routing = Vec::new();
    for i in 0..20 {
        let (ip, name) = if i % 2 == 0 {
            ("127.0.0.3", "b")
        } else {
            ("127.0.0.2", "a")
        };
        let mut client = Client::connect(web);
        let changed = Instant::now();
        kube.apply(slice(
            "scale",
            "probe-1",
            "probe",
            ("http", port),
            &[ready(ip)],
        ));
        while client.get("scale.test", "/probe").backend() != name {}
        to_routing.push(changed.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let (updates, churn_time) = churn.join().expect("churn thread");
    let rss_after = rss_kb(sluice.pid());
    let cpu_after = thread_cpu(sluice.pid());
    drop((a, b));

    println!("discovery scale: {SERVICES} services x {ENDPOINTS} endpoints");
    println!(
        "  first sync to ready: {sync_time:?}; RSS after sync {} MB, after churn {} MB",
        rss_synced / 1024,
        rss_after / 1024
    );
    println!(
        "  churn: {updates} slice updates in {churn_time:?} ({:.0}/s)",
        updates as f64 / churn_time.as_secs_f64()
    );
    println!(
        "  watch event -> routing change: median {:?}, max {:?}",
        percentile(&mut to_routing, 0.5),
        percentile(&mut to_routing, 1.0)
    );
    for (label, samples) in [
        ("no churn", &mut quiet),
        ("control churn (unwatched namespace)", &mut control),
        ("churn of watched services", &mut busy),
    ] {
        println!(
            "  request latency, {label}: p50 {:?} p99 {:?} p99.9 {:?} ({} requests)",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            percentile(samples, 0.999),
            samples.len()
        );
    }
    println!("  sluice CPU per thread during churn of watched services:");
    for (thread, after) in &cpu_after {
        let before = cpu_before
            .iter()
            .find(|(name, _)| name == thread)
            .map_or(Duration::ZERO, |(_, cpu)| *cpu);
        let used = after.saturating_sub(before);
        if !used.is_zero() {
            println!(
                "    {thread}: {used:?} ({:?} per update)",
                used / updates.max(1) as u32
            );
        }
    }
}
