//! Authentication through the real binary (issue #17): basic auth from an htpasswd file
//! (bcrypt, SHA-crypt, {SHA}; good, bad and missing credentials) and external auth against
//! an authentication server started by the test (allow with its headers, deny, sign-in
//! redirect, timeout and failures, `on_error`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use support::*;

/// "user:password" in base64, as `Authorization: Basic` carries it.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn basic_auth_admits_good_credentials_only() {
    let backend = Backend::start("app", Behavior::Echo);
    let dir = ScratchDir::new();
    let bcrypt_hash = bcrypt::hash("b-secret", 4).expect("bcrypt");
    // `openssl passwd -6 -salt saltsalt s-secret` and `htpasswd -nbs carol c-secret`.
    let htpasswd = dir.write(
        "htpasswd",
        &format!(
            "# ops\nalice:{bcrypt_hash}\n\
             bob:$6$saltsalt$CNPAfHhWVkpnMGH9qwAEQXUzLNXQG0m.y0H.5fPkw9hiNI3uNZIVHZYbZIa3TW2.0ohDKZmhen15o86GmuiI20\n\
             carol:{{SHA}}FZnlXWOVO9N/p/1CgTiwAD+nhRc=\n"
        ),
    );
    let listen = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{listen}\" }}]\n\
         routes:\n\
         \x20 - {{ name: admin, listener: web, paths: [{{ prefix: /admin }}], upstream: app, auth: {{ basic: {{ htpasswd: \"{}\", realm: Ops only }} }} }}\n\
         \x20 - {{ name: open, listener: web, upstream: app }}\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        htpasswd.display(),
        backend.address
    ));
    let mut client = Client::connect(listen);
    let missing = client.request("GET", "/admin", &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Basic realm=\"Ops only\"")
    );
    // The connection stays open for the browser's second try, with credentials.
    for (user, password) in [
        ("alice", "b-secret"),
        ("bob", "s-secret"),
        ("carol", "c-secret"),
        ("alice", "b-secret"),
    ] {
        let response = client.request(
            "GET",
            "/admin",
            &[("authorization", &basic(user, password))],
        );
        assert_eq!(response.status, 200, "{user}");
    }
    for (user, password) in [("alice", "wrong"), ("mallory", "b-secret"), ("bob", "")] {
        let response = client.request(
            "GET",
            "/admin",
            &[("authorization", &basic(user, password))],
        );
        assert_eq!(response.status, 401, "{user}");
    }
    let garbled = client.request("GET", "/admin", &[("authorization", "Basic %%%")]);
    assert_eq!(garbled.status, 401);
    assert_eq!(client.request("GET", "/public", &[]).status, 200);

    assert_eq!(
        backend.requests().len(),
        5,
        "refused requests never reach the backend"
    );
    let series = |result: &str| {
        sluice.metric(&format!(
            "sluice_auth_requests_total{{result=\"{result}\",route=\"admin\"}}"
        ))
    };
    assert_eq!(series("allowed"), 4.0);
    assert_eq!(series("denied"), 5.0);
    sluice.wait_metric(
        "sluice_http_requests_total{code=\"401\",reason=\"unauthorized\",route=\"admin\"}",
        5.0,
    );

    // A changed htpasswd file is read again on reload; checks remembered for the old
    // users are forgotten with them.
    let generation = sluice.generation();
    let renamed = dir.write("htpasswd.new", "dave:{SHA}FZnlXWOVO9N/p/1CgTiwAD+nhRc=\n");
    std::fs::rename(renamed, &htpasswd).expect("replace htpasswd");
    sluice.sighup();
    wait_until("the reload", READY_TIMEOUT, || {
        sluice.generation() > generation
    });
    let mut client = Client::connect(listen);
    let dave = client.request(
        "GET",
        "/admin",
        &[("authorization", &basic("dave", "c-secret"))],
    );
    assert_eq!(dave.status, 200);
    let alice = client.request(
        "GET",
        "/admin",
        &[("authorization", &basic("alice", "b-secret"))],
    );
    assert_eq!(alice.status, 401);
}

/// What the authentication server does with a check, by the `session` cookie it carries.
fn auth_answer(cookie: &str) -> Option<String> {
    let session = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("session="))
        .unwrap_or_default();
    let answer = match session {
        "ann" => "HTTP/1.1 202 Accepted\r\nx-auth-request-user: ann\r\nx-auth-request-email: ann@example.com\r\nx-internal: no\r\ncontent-length: 0\r\n\r\n",
        "forbidden" => "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
        "broken" => "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        "hang" => return None,
        _ => "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"sso\"\r\ncontent-length: 0\r\n\r\n",
    };
    Some(answer.to_string())
}

/// A request head as the authentication server saw it: the request line under `:line`, then
/// the headers, names lower-cased.
type Head = Vec<(String, String)>;

/// An authentication server: answers each check by its cookie (see [`auth_answer`]) and
/// records the checks' heads (lower-case names).
struct AuthServer {
    address: SocketAddr,
    checks: Arc<Mutex<Vec<Head>>>,
}

impl AuthServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind auth server");
        let address = listener.local_addr().expect("address");
        let checks = Arc::new(Mutex::new(Vec::new()));
        let seen = checks.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut head = Vec::new();
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end().to_string();
                            if line.is_empty() {
                                break;
                            }
                            match line.split_once(':') {
                                Some((k, v)) if !head.is_empty() => {
                                    head.push((k.trim().to_ascii_lowercase(), v.trim().to_string()))
                                }
                                _ => head.push((":line".to_string(), line)),
                            }
                        }
                        let cookie = head
                            .iter()
                            .find(|(k, _)| k == "cookie")
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        seen.lock().unwrap().push(head);
                        match auth_answer(&cookie) {
                            Some(answer) => {
                                if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                                    return;
                                }
                            }
                            // Hung: wait until sluice gives up and closes.
                            None => {
                                let mut rest = String::new();
                                let _ = reader.read_line(&mut rest);
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { address, checks }
    }

    fn checks(&self) -> Vec<Head> {
        self.checks.lock().unwrap().clone()
    }
}

fn header<'a>(head: &'a [(String, String)], name: &str) -> Option<&'a str> {
    head.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn external_auth_allows_denies_and_sends_browsers_to_sign_in() {
    let backend = Backend::start("app", Behavior::Echo);
    let auth = AuthServer::start();
    let listen = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{listen}\" }}]\n\
         routes:\n\
         \x20 - name: api\n\
         \x20   listener: web\n\
         \x20   paths: [{{ prefix: /api }}]\n\
         \x20   upstream: app\n\
         \x20   auth: {{ external: {{ upstream: sso, path: \"/oauth2/auth?group=ops\", response_headers: [x-auth-request-user, x-auth-request-email] }} }}\n\
         \x20 - name: pages\n\
         \x20   listener: web\n\
         \x20   upstream: app\n\
         \x20   auth: {{ external: {{ upstream: sso, path: /oauth2/auth, signin: \"https://sso.example.com/start\" }} }}\n\
         upstreams:\n\
         \x20 - {{ name: app, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: sso, endpoints: [\"{}\"] }}\n",
        backend.address, auth.address
    ));
    let mut client = Client::connect(listen);
    // Allowed: the service's chosen headers replace whatever the client sent.
    let response = client
        .try_request(
            "POST",
            "/api/orders?x=1",
            &[
                ("host", "app.test"),
                ("cookie", "session=ann"),
                ("x-auth-request-user", "mallory"),
            ],
            b"{\"n\":1}",
        )
        .expect("a response");
    assert_eq!(response.status, 200);
    let upstream = backend.requests().pop().expect("proxied");
    assert_eq!(upstream.header("x-auth-request-user"), Some("ann"));
    assert_eq!(
        upstream.header("x-auth-request-email"),
        Some("ann@example.com")
    );
    assert!(
        upstream.header("x-internal").is_none(),
        "only the chosen headers"
    );
    assert_eq!(
        upstream
            .headers
            .iter()
            .filter(|(k, _)| k == "x-auth-request-user")
            .count(),
        1
    );
    let check = auth.checks().pop().expect("a check");
    assert_eq!(
        header(&check, ":line"),
        Some("POST /oauth2/auth?group=ops HTTP/1.1")
    );
    assert_eq!(
        header(&check, "x-original-url"),
        Some("http://app.test/api/orders?x=1")
    );
    assert_eq!(header(&check, "x-original-method"), Some("POST"));
    assert_eq!(header(&check, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        header(&check, "content-length"),
        None,
        "the body is not sent"
    );

    // Denied: the service's status and challenge reach the client; the backend sees nothing.
    let before = backend.requests().len();
    let denied = client.request("GET", "/api/orders", &[("host", "app.test")]);
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Bearer realm=\"sso\"")
    );
    let forbidden = client.request(
        "GET",
        "/api/orders",
        &[("host", "app.test"), ("cookie", "session=forbidden")],
    );
    assert_eq!(forbidden.status, 403);
    // A browser without a session is sent to sign in, with the way back.
    let signin = client.request("GET", "/page?q=1", &[("host", "app.test")]);
    assert_eq!(signin.status, 302);
    assert_eq!(
        signin.header("location"),
        Some("https://sso.example.com/start?rd=http%3A%2F%2Fapp.test%2Fpage%3Fq%3D1")
    );
    assert_eq!(backend.requests().len(), before);
    let series = |route: &str, result: &str| {
        sluice.metric(&format!(
            "sluice_auth_requests_total{{result=\"{result}\",route=\"{route}\"}}"
        ))
    };
    assert_eq!(series("api", "allowed"), 1.0);
    assert_eq!(series("api", "denied"), 2.0);
    assert_eq!(series("pages", "signin"), 1.0);
}

#[test]
fn external_auth_failures_deny_unless_allowed() {
    let backend = Backend::start("app", Behavior::Echo);
    let auth = AuthServer::start();
    let listen = listen_address();
    let sluice = Sluice::start(&format!(
        "listeners: [{{ name: web, listen: \"{listen}\" }}]\n\
         routes:\n\
         \x20 - {{ name: strict, listener: web, paths: [{{ prefix: /strict }}], upstream: app, auth: {{ external: {{ upstream: sso, path: /check, timeout: 300ms, response_headers: [x-auth-request-user] }} }} }}\n\
         \x20 - {{ name: gone, listener: web, paths: [{{ prefix: /gone }}], upstream: app, auth: {{ external: {{ upstream: nowhere, path: /check }} }} }}\n\
         \x20 - {{ name: lenient, listener: web, upstream: app, auth: {{ external: {{ upstream: sso, path: /check, timeout: 300ms, on_error: allow, response_headers: [x-auth-request-user] }} }} }}\n\
         upstreams:\n\
         \x20 - {{ name: app, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: sso, endpoints: [\"{}\"] }}\n\
         \x20 - {{ name: nowhere, endpoints: [\"{}\"] }}\n",
        backend.address,
        auth.address,
        refused_address()
    ));
    let status = |path: &str, session: &str| {
        Client::connect(listen)
            .request(
                "GET",
                path,
                &[
                    ("cookie", &format!("session={session}")),
                    ("x-auth-request-user", "mallory"),
                ],
            )
            .status
    };
    assert_eq!(status("/strict", "hang"), 500, "no answer in time");
    assert_eq!(
        status("/strict", "broken"),
        500,
        "an answer that is no verdict"
    );
    assert_eq!(status("/gone", "ann"), 500, "the service is unreachable");
    assert!(backend.requests().is_empty());
    assert_eq!(status("/lenient", "hang"), 200);
    let upstream = backend.requests().pop().expect("let through");
    assert_eq!(
        upstream.header("x-auth-request-user"),
        None,
        "a client cannot pose as an authenticated user"
    );
    assert_eq!(
        sluice.metric("sluice_auth_requests_total{result=\"error\",route=\"strict\"}"),
        2.0
    );
    assert_eq!(
        sluice.metric("sluice_auth_requests_total{result=\"error_allowed\",route=\"lenient\"}"),
        1.0
    );
    assert!(sluice.stderr().contains("external authentication of"));
}
