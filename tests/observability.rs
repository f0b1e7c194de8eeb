//! The metrics an SRE reaches for during an incident (issue #20): upstream response times,
//! per-endpoint counts, body sizes, client connections, TLS handshakes by result, build
//! information and the process's own figures, moved by a scripted load with one slow
//! endpoint.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::tls::{self, get_over};
use support::*;
use tokio_rustls::rustls;

/// How long the slow endpoint takes to answer: a floor, whatever the machine's load.
const SLOW: Duration = Duration::from_millis(300);

#[test]
fn the_new_metrics_move_under_a_load_with_one_slow_endpoint() {
    let certs = ScratchDir::new();
    let certificate = tls::self_signed(&certs, "secure", &["secure.test"]);
    let fast = Backend::start("fast", Behavior::Echo);
    let slow = Backend::start("slow", Behavior::Delay(SLOW));
    let (web, secure) = (listen_address(), listen_address());
    let sluice = Sluice::start(&format!(
        "listeners:\n\
         \x20 - {{ name: web, listen: \"{web}\" }}\n\
         \x20 - {{ name: secure, listen: \"{secure}\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n\
         routes:\n\
         \x20 - {{ name: all, listener: web, upstream: app }}\n\
         \x20 - {{ name: tls, listener: secure, upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\", \"{}\"], balance: round_robin }}]\n",
        certificate.cert_path.display(),
        certificate.key_path.display(),
        fast.address,
        slow.address,
    ));
    const REQUESTS: usize = 20;
    const BODY: usize = 1000;
    let body = vec![b'x'; BODY];
    let mut client = Client::connect(web);
    for i in 0..REQUESTS {
        let response = client
            .try_request("POST", &format!("/{i}"), &[("host", "shop.test")], &body)
            .expect("an answer");
        assert_eq!(response.status, 200, "request {i}");
    }
    let series = |name: &str, labels: &str| format!("{name}{{{labels}}}");
    let upstream = |phase: &str, what: &str| {
        sluice.metric(&series(
            &format!("sluice_upstream_response_seconds_{what}"),
            &format!("phase=\"{phase}\",upstream=\"app\""),
        ))
    };
    sluice.wait_metric(
        &series("sluice_http_request_size_bytes_count", "route=\"all\""),
        REQUESTS as f64,
    );
    // Every try timed, to its first byte and to its end; the slow endpoint's half took at
    // least its delay.
    for phase in ["first_byte", "total"] {
        // Recorded just after each response, as the counts below: waited for, not read.
        sluice.wait_metric(
            &series(
                "sluice_upstream_response_seconds_count",
                &format!("phase=\"{phase}\",upstream=\"app\""),
            ),
            REQUESTS as f64,
        );
        let under_slow = sluice.metric(&series(
            "sluice_upstream_response_seconds_bucket",
            &format!("phase=\"{phase}\",upstream=\"app\",le=\"0.25\""),
        ));
        assert!(
            REQUESTS as f64 - under_slow >= (REQUESTS / 2) as f64,
            "{phase}: {under_slow} of {REQUESTS} tries under 250 ms"
        );
        assert!(upstream(phase, "sum") >= (REQUESTS / 2) as f64 * SLOW.as_secs_f64());
    }
    // Each endpoint's tries, by status class.
    for endpoint in [fast.address, slow.address] {
        sluice.wait_metric(
            &series(
                "sluice_endpoint_requests_total",
                &format!("endpoint=\"{endpoint}\",result=\"2xx\",upstream=\"app\""),
            ),
            (REQUESTS / 2) as f64,
        );
    }
    // Body sizes, per route.
    assert_eq!(
        sluice.metric(&series(
            "sluice_http_request_size_bytes_sum",
            "route=\"all\""
        )),
        (REQUESTS * BODY) as f64
    );
    assert_eq!(
        sluice.metric(&series(
            "sluice_http_response_size_bytes_count",
            "route=\"all\""
        )),
        REQUESTS as f64
    );
    assert!(
        sluice.metric(&series(
            "sluice_http_response_size_bytes_sum",
            "route=\"all\""
        )) > 0.0
    );
    // Client connections: one accepted and open, then closed.
    let web_connections = "listener=\"web\",protocol=\"http\"";
    assert_eq!(
        sluice.metric(&series(
            "sluice_downstream_connections_total",
            web_connections
        )),
        1.0
    );
    assert_eq!(
        sluice.metric(&series(
            "sluice_downstream_connections_open",
            web_connections
        )),
        1.0
    );
    drop(client);
    sluice.wait_metric(
        &series("sluice_downstream_connections_open", web_connections),
        0.0,
    );
    // TLS: a handshake that completes, and a plain-text request on the TLS port.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config = tls::client_config(&[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut stream = tls::connect(secure, "secure.test", config)
            .await
            .expect("handshake");
        let (status, _) = get_over(&mut stream, "secure.test", "/").await;
        assert!(status.contains(" 200 "), "{status}");
    });
    let mut plain = TcpStream::connect(secure).expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: secure.test\r\n\r\n")
        .expect("write");
    // sluice closes the connection: the read ends.
    let _ = plain.read_to_end(&mut Vec::new());
    sluice.wait_metric(
        &series(
            "sluice_tls_handshakes_total",
            "listener=\"secure\",result=\"not_tls\"",
        ),
        1.0,
    );
    assert_eq!(
        sluice.metric(&series(
            "sluice_tls_handshakes_total",
            "listener=\"secure\",result=\"ok\""
        )),
        1.0
    );
    assert_eq!(
        sluice.metric(&series(
            "sluice_downstream_connections_total",
            "listener=\"secure\",protocol=\"https\""
        )),
        2.0
    );
    // Build information and the process's own figures.
    let metrics = sluice.metrics_text();
    let build = metrics
        .lines()
        .find(|l| l.starts_with("sluice_build_info{"))
        .expect("sluice_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("pingora=\"0.9.1\""), "{build}");
    assert!(build.ends_with(" 1"), "{build}");
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(sluice.metric(name) > 0.0, "{name}");
    }
}

#[test]
fn the_build_info_names_the_last_pingora_patch() {
    let patches = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/third_party/pingora/patches"
    ))
    .expect("the patch series");
    let last = patches
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".patch").map(str::to_string))
        .max()
        .expect("a patch");
    let sluice = Sluice::start(&single_upstream_config(
        listen_address(),
        &[refused_address().to_string()],
        "",
        "",
    ));
    let metrics = sluice.metrics_text();
    assert!(
        metrics.contains(&format!("pingora_patches=\"{last}\"")),
        "sluice_build_info does not name {last}"
    );
}
