//! Bounded, safe retries: connect failures go to another endpoint, non-idempotent requests
//! are never replayed after they reached a backend, and the number of tries is capped.

mod support;

use std::net::SocketAddr;
use support::*;

fn config(web: SocketAddr, endpoints: &[String], upstream_extra: &str) -> String {
    single_upstream_config(web, endpoints, upstream_extra, "")
}

#[test]
fn refused_endpoint_is_retried_on_another_endpoint() {
    let good = Backend::start("good", Behavior::Echo);
    let refused = refused_address();
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[refused.to_string(), good.address.to_string()],
        ", balance: round_robin, retry: { attempts: 2 }",
    ));
    let mut client = Client::connect(web);
    const REQUESTS: usize = 10;
    for i in 0..REQUESTS {
        let response = client.get("retry.test", &format!("/{i}"));
        assert_eq!(response.status, 200, "request {i}");
        assert_eq!(response.backend(), "good");
    }
    let log = sluice.wait_access_log(REQUESTS);
    let retried: Vec<_> = log
        .iter()
        .filter(|r| r["attempts"].as_array().is_some_and(|a| a.len() == 2))
        .collect();
    assert!(
        !retried.is_empty(),
        "round robin sent some requests to the refused endpoint first"
    );
    for record in &retried {
        let attempts = &record["attempts"];
        assert_eq!(attempts[0]["endpoint"], refused.to_string());
        assert_eq!(attempts[0]["result"], "connect_refused");
        assert_eq!(attempts[1]["endpoint"], good.address.to_string());
        assert_eq!(attempts[1]["result"], "ok");
        assert_eq!(record["status"], 200);
    }
    // The backend sees which try it is serving.
    let second_tries = good
        .requests()
        .iter()
        .filter(|r| r.header("x-sluice-attempt") == Some("2"))
        .count();
    assert_eq!(second_tries, retried.len());
    assert_eq!(
        sluice.metric("sluice_upstream_retries_total{upstream=\"app\"}") as usize,
        retried.len()
    );
}

#[test]
fn post_is_not_replayed_after_a_reset_but_get_is() {
    let closer_a = Backend::start("closer-a", Behavior::CloseAfterRequest);
    let closer_b = Backend::start("closer-b", Behavior::CloseAfterRequest);
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[closer_a.address.to_string(), closer_b.address.to_string()],
        ", retry: { attempts: 3 }",
    ));
    let mut client = Client::connect(web);
    let response = client
        .try_request(
            "POST",
            "/orders",
            &[("host", "retry.test")],
            b"{\"buy\": 1}",
        )
        .expect("a response");
    assert_eq!(response.status, 502);
    let seen = closer_a.requests().len() + closer_b.requests().len();
    assert_eq!(seen, 1, "the POST reached a backend exactly once");
    let log = sluice.wait_access_log(1);
    assert_eq!(log[0]["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(log[0]["attempts"][0]["result"], "reset");
    assert_eq!(log[0]["status"], 502);

    // An idempotent request broken before any response is retried, on another endpoint.
    let response = Client::connect(web).get("retry.test", "/idempotent");
    assert_eq!(response.status, 502);
    let log = sluice.wait_access_log(2);
    let attempts = log[1]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "GET tried `attempts` times: {}", log[1]);
    assert_ne!(attempts[0]["endpoint"], attempts[1]["endpoint"]);
}

#[test]
fn reset_get_succeeds_on_the_next_endpoint() {
    let closer = Backend::start("closer", Behavior::CloseAfterRequest);
    let good = Backend::start("good", Behavior::Echo);
    let web = listen_address();
    let _sluice = Sluice::start(&config(
        web,
        &[closer.address.to_string(), good.address.to_string()],
        ", retry: { attempts: 2 }",
    ));
    let mut client = Client::connect(web);
    for i in 0..6 {
        assert_eq!(client.get("retry.test", &format!("/{i}")).status, 200);
    }
    assert!(
        !closer.requests().is_empty(),
        "round robin reached the closing endpoint"
    );
}

#[test]
fn all_endpoints_refusing_gives_502_after_exactly_attempts_tries() {
    let refused: Vec<String> = (0..4).map(|_| refused_address().to_string()).collect();
    let web = listen_address();
    let sluice = Sluice::start(&config(web, &refused, ", retry: { attempts: 3 }"));
    let response = Client::connect(web).get("retry.test", "/");
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"], "bad gateway");
    let log = sluice.wait_access_log(1);
    let attempts = log[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{}", log[0]);
    let distinct: std::collections::HashSet<_> =
        attempts.iter().map(|a| a["endpoint"].to_string()).collect();
    assert_eq!(distinct.len(), 3, "each try went to a different endpoint");
    assert!(attempts.iter().all(|a| a["result"] == "connect_refused"));
}

#[test]
fn read_timeout_gives_504_without_retry() {
    let slow = Backend::start("slow", Behavior::Delay(std::time::Duration::from_secs(3)));
    let other = Backend::start("other", Behavior::Delay(std::time::Duration::from_secs(3)));
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[slow.address.to_string(), other.address.to_string()],
        ", timeouts: { read: 300ms }",
    ));
    let response = Client::connect(web).get("retry.test", "/slow");
    assert_eq!(response.status, 504);
    let log = sluice.wait_access_log(1);
    assert_eq!(log[0]["status"], 504);
    assert_eq!(log[0]["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(log[0]["attempts"][0]["result"], "timeout");
    assert_eq!(slow.requests().len() + other.requests().len(), 1);
}

#[test]
fn route_timeout_overrides_the_upstream() {
    let slow = Backend::start(
        "slow",
        Behavior::Delay(std::time::Duration::from_millis(600)),
    );
    let web = listen_address();
    let _sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{web}\" }}]\n\
         routes:\n\
         \x20 - {{ name: patient, listener: web, paths: [{{ prefix: /patient }}], upstream: app, timeouts: {{ read: 5s }} }}\n\
         \x20 - {{ name: hasty, listener: web, paths: [{{ prefix: / }}], upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"], timeouts: {{ read: 200ms }} }}]\n",
        slow.address
    ));
    assert_eq!(Client::connect(web).get("t", "/hasty").status, 504);
    assert_eq!(Client::connect(web).get("t", "/patient").status, 200);
}

#[test]
fn total_timeout_bounds_the_request() {
    let slow = Backend::start("slow", Behavior::Delay(std::time::Duration::from_secs(3)));
    let web = listen_address();
    let _sluice = Sluice::start(&config(
        web,
        &[slow.address.to_string()],
        ", timeouts: { read: 10s, total: 300ms }",
    ));
    // The backend would answer 200 after 3 s, within the 10 s read timeout: only the
    // 300 ms total deadline can produce this 504.
    let response = Client::connect(web).get("retry.test", "/");
    assert_eq!(response.status, 504);
}

#[test]
fn retry_budget_caps_retries_in_flight() {
    // Every request that starts on the refused endpoint needs a retry, and each retry then
    // holds its budget slot for a second on the slow endpoint. With budget_percent 0 only the
    // minimum of 3 retries may be in flight at once.
    let slow = Backend::start("slow", Behavior::Delay(std::time::Duration::from_secs(1)));
    let refused = refused_address();
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[refused.to_string(), slow.address.to_string()],
        ", balance: round_robin, retry: { attempts: 2, budget_percent: 0 }",
    ));
    const CLIENTS: usize = 20;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(web);
                barrier.wait();
                client.get("budget.test", &format!("/{i}")).status
            })
        })
        .collect();
    let statuses: Vec<u16> = workers
        .into_iter()
        .map(|w| w.join().expect("client thread"))
        .collect();
    let rejected = statuses.iter().filter(|s| **s == 502).count();
    let retries = sluice.metric("sluice_upstream_retries_total{upstream=\"app\"}");
    assert!(retries <= 3.0, "{retries} retries in flight at once");
    assert!(
        rejected >= 1,
        "requests beyond the budget fail instead of retrying: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count() + rejected,
        CLIENTS
    );
    assert!(sluice
        .stderr()
        .contains("retry budget of upstream app exhausted"));
}

#[test]
fn client_going_away_is_not_retried() {
    let slow_a = Backend::start(
        "slow-a",
        Behavior::Delay(std::time::Duration::from_millis(500)),
    );
    let slow_b = Backend::start(
        "slow-b",
        Behavior::Delay(std::time::Duration::from_millis(500)),
    );
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[slow_a.address.to_string(), slow_b.address.to_string()],
        ", retry: { attempts: 3 }",
    ));
    let mut client = Client::connect(web);
    client.send_raw(b"GET /leaving HTTP/1.1\r\nhost: retry.test\r\n\r\n");
    wait_until("the request to reach a backend", READY_TIMEOUT, || {
        slow_a.requests().len() + slow_b.requests().len() == 1
    });
    drop(client);
    let log = sluice.wait_access_log(1);
    let attempts = log[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{}", log[0]);
    assert_eq!(attempts[0]["result"], "client_error");
    assert_eq!(slow_a.requests().len() + slow_b.requests().len(), 1);
}

#[test]
fn statuses_in_on_status_are_retried_with_the_body_and_the_last_answer_is_passed_on() {
    // The backend fails the first `succeedAfter` tries of a uuid with `responseCode` (the
    // Gateway API suite's retry simulation).
    let flaky = Backend::start("flaky", Behavior::Echo);
    let web = listen_address();
    let sluice = Sluice::start(&config(
        web,
        &[flaky.address.to_string()],
        ", retry: { attempts: 3, on_status: [502, 503], methods: all }",
    ));
    let tries_of = |target: &str| {
        flaky
            .requests()
            .iter()
            .filter(|r| r.target == target)
            .count()
    };
    let mut client = Client::connect(web);
    let body = b"{\"put\": 1}";
    let headers = [("host", "retry.test")];

    // A PUT with a body, answered 503 twice: the third try gets the body again and succeeds.
    let target = "/retry/a?uuid=1&succeedAfter=2&responseCode=503";
    let response = client
        .try_request("PUT", target, &headers, body)
        .expect("a response");
    assert_eq!((response.status, tries_of(target)), (200, 3));

    // Failing every try: the client gets the last 502 itself, after exactly `attempts`.
    let target = "/retry/a?uuid=2&succeedAfter=9&responseCode=502";
    let response = client
        .try_request("GET", target, &headers, b"")
        .expect("a response");
    assert_eq!((response.status, tries_of(target)), (502, 3));

    // A status not in the list is passed on at once.
    let target = "/retry/a?uuid=3&succeedAfter=9&responseCode=500";
    let response = client
        .try_request("GET", target, &headers, b"")
        .expect("a response");
    assert_eq!((response.status, tries_of(target)), (500, 1));

    let log = sluice.wait_access_log(3);
    let first = &log[0];
    assert_eq!(first["status"], 200, "{first}");
    let results: Vec<_> = first["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| (a["result"].clone(), a["status"].clone()))
        .collect();
    assert_eq!(
        results,
        [
            ("retried_status".into(), 503.into()),
            ("retried_status".into(), 503.into()),
            ("ok".into(), 200.into()),
        ],
        "{first}"
    );
}
