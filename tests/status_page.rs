//! The status page on the admin listener (issue #20), loaded in a real headless browser
//! (Debian's chromium): every endpoint with its state, after one is made unhealthy; the
//! same data as JSON.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::*;

/// Runs headless chromium with `arguments` on `url` and returns what it printed.
fn chromium(arguments: &[&str], url: &str) -> String {
    let output = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .args(arguments)
        .arg(url)
        .output()
        .expect("run chromium (make test installs Debian's chromium)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_status_page_shows_each_endpoint_with_its_state_in_a_browser() {
    let good = Backend::start("good", Behavior::Echo);
    let doomed = Backend::start("doomed", Behavior::Echo);
    let (good_address, doomed_address) = (good.address, doomed.address);
    let web = listen_address();
    let sluice = Sluice::start(&single_upstream_config(
        web,
        &addresses(&[&good, &doomed]),
        ", health: { active: { interval: 100ms, unhealthy_after: 1 } }",
        "",
    ));
    let state_of = |address: std::net::SocketAddr| {
        let status = sluice.admin_get("/status.json").expect("status").json();
        status["upstreams"][0]["endpoints"]
            .as_array()
            .and_then(|endpoints| {
                endpoints
                    .iter()
                    .find(|e| e["address"] == address.to_string())
                    .map(|e| e["state"].as_str().unwrap_or_default().to_string())
            })
            .unwrap_or_default()
    };
    wait_until("both endpoints serve", Duration::from_secs(20), || {
        state_of(good_address) == "serving" && state_of(doomed_address) == "serving"
    });
    for i in 0..6 {
        assert_eq!(get(web, &format!("/{i}")).status, 200);
    }
    // The endpoint stops: its checks fail.
    drop(doomed);
    wait_until(
        "the stopped endpoint is unhealthy",
        Duration::from_secs(20),
        || state_of(doomed_address) == "unhealthy",
    );

    let url = format!("http://{}/status", sluice.admin);
    let dom = chromium(&["--dump-dom"], &url);
    for (address, state) in [(good_address, "serving"), (doomed_address, "unhealthy")] {
        let row = format!("data-address=\"{address}\" data-state=\"{state}\"");
        assert!(dom.contains(&row), "no {row} in the page:\n{dom}");
    }
    assert!(dom.contains("<h3 id=\"upstream-app\">app"), "{dom}");
    // The routes with where they came from, and the listener.
    assert!(dom.contains("<td>all</td><td>web</td>"), "{dom}");
    assert!(
        dom.contains("t.yaml") || dom.contains(".yaml:"),
        "no origin: {dom}"
    );
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");

    // A screenshot, kept as the test's artifact.
    let artifact = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&artifact);
    let screenshot = format!("--screenshot={}", artifact.display());
    chromium(&[&screenshot, "--window-size=1280,1000"], &url);
    let png = std::fs::read(&artifact).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}
