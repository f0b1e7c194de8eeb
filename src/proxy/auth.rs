//! External authentication (`routes[].auth.external`, ingress-nginx's `auth-url`): before a
//! request goes upstream, its method, target and chosen headers (never its body) are sent
//! to an authentication service such as oauth2-proxy or Authelia. A 2xx answer lets it
//! through with the service's chosen headers; 401 and 403 go back to the client (401 as a
//! redirect to `signin` when set); anything else, or no answer within `timeout`, is a
//! failure that `on_error` decides. Answers are never cached: every request is asked.

use super::subrequest;
use crate::model::{Auth, AuthFailure, ExternalAuth, RouteConfig};
use crate::observe::metrics::METRICS;
use crate::routing::auth as basic;
use crate::routing::filters::{self, Origin};
use crate::state::{Route, RouteAuth, Snapshot};
use crate::upstream::hash_key::RequestFacts;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;
use std::net::IpAddr;

/// An answer body larger than this is not read: the connection is dropped instead of
/// pooled.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// What the service said of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Proxy it, with these headers of the answer set on the request upstream.
    Allow(Vec<(http::HeaderName, http::HeaderValue)>),
    /// Answer the client `status` (401 or 403), with the service's `WWW-Authenticate`.
    Deny {
        status: u16,
        challenge: Option<http::HeaderValue>,
    },
    /// Redirect the client (302) to sign in.
    SignIn(String),
    /// No usable answer; the text says why (for the log).
    Failed(String),
}

/// What authentication decided for a request.
#[derive(Debug)]
pub enum Outcome {
    /// Proxy it, after removing the client's own values of `remove` and setting `set`.
    Proceed {
        remove: Vec<http::HeaderName>,
        set: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// Answer `status` (counted with `reason`), with one more header if given.
    Refuse {
        status: u16,
        reason: &'static str,
        header: Option<(http::HeaderName, http::HeaderValue)>,
    },
    /// Redirect the client (302) to sign in.
    SignIn(String),
}

impl Outcome {
    fn proceed() -> Self {
        Self::Proceed {
            remove: Vec::new(),
            set: Vec::new(),
        }
    }
}

fn count(route: &str, result: &str) {
    METRICS
        .auth_requests
        .with_label_values(&[route, result])
        .inc();
}

/// Authenticates `request` on `route` (whose model is `config`), a request from
/// `client_ip` for `from`.
pub async fn authenticate(
    route: &Route,
    config: &RouteConfig,
    snapshot: &Snapshot,
    request: &RequestHeader,
    from: &Origin<'_>,
    client_ip: Option<IpAddr>,
) -> Outcome {
    match (route.auth.as_ref(), config.auth.as_ref()) {
        (Some(RouteAuth::Basic { verified, .. }), Some(Auth::Basic(users))) => {
            let valid = match basic::credentials(request) {
                Some(credentials) => basic::verify(users, verified, credentials).await,
                None => false,
            };
            if valid {
                count(&route.name, "allowed");
                return Outcome::proceed();
            }
            count(&route.name, "denied");
            let challenge = format!("Basic realm=\"{}\"", users.realm);
            Outcome::Refuse {
                status: 401,
                reason: "unauthorized",
                header: http::HeaderValue::from_str(&challenge)
                    .ok()
                    .map(|v| (http::header::WWW_AUTHENTICATE, v)),
            }
        }
        (Some(RouteAuth::External { upstream }), Some(Auth::External(external))) => {
            let url = original_url(from);
            let Some(upstream) = upstream.map(|i| &snapshot.upstreams[i]) else {
                let why = format!("upstream {:?} does not exist", external.upstream);
                return decide(&route.name, external, Verdict::Failed(why), &url);
            };
            let facts = RequestFacts {
                header: Some(request),
                client_ip,
                scheme: from.scheme,
            };
            let verdict = match (
                upstream.pick(&facts, &|_| false),
                check_request(external, request, from, client_ip),
            ) {
                (None, _) => {
                    Verdict::Failed(format!("upstream {} has no endpoint", upstream.name()))
                }
                (_, Err(e)) => Verdict::Failed(format!("building the check: {e}")),
                (Some(endpoint), Ok(check)) => {
                    let peer = upstream.peer(endpoint, &upstream.config.timeouts);
                    ask(external, &peer, check, &url).await
                }
            };
            decide(&route.name, external, verdict, &url)
        }
        _ => Outcome::proceed(),
    }
}

/// The outcome of `verdict` on a route with `external`.
fn decide(route: &str, external: &ExternalAuth, verdict: Verdict, url: &str) -> Outcome {
    match verdict {
        Verdict::Allow(set) => {
            count(route, "allowed");
            Outcome::Proceed {
                remove: external.response_headers.clone(),
                set,
            }
        }
        Verdict::Deny { status, challenge } => {
            count(route, "denied");
            Outcome::Refuse {
                status,
                reason: if status == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                },
                header: challenge.map(|c| (http::header::WWW_AUTHENTICATE, c)),
            }
        }
        Verdict::SignIn(location) => {
            count(route, "signin");
            Outcome::SignIn(location)
        }
        Verdict::Failed(why) => {
            log::warn!("route {route}: external authentication of {url} failed: {why}");
            match external.on_error {
                AuthFailure::Deny => {
                    count(route, "error");
                    Outcome::Refuse {
                        status: 500,
                        reason: "auth_error",
                        header: None,
                    }
                }
                AuthFailure::Allow => {
                    count(route, "error_allowed");
                    Outcome::Proceed {
                        remove: external.response_headers.clone(),
                        set: Vec::new(),
                    }
                }
            }
        }
    }
}

/// The URL the client asked for, as `X-Original-URL` and the sign-in `rd` carry it.
pub fn original_url(from: &Origin) -> String {
    filters::location(from.scheme, from.host, from.port, from.path, from.query)
}

fn original_uri(from: &Origin) -> String {
    match from.query {
        Some(query) => format!("{}?{query}", from.path),
        None => from.path.to_string(),
    }
}

/// Headers that describe the client's connection or body, never sent with a check.
fn is_connection_or_body_header(name: &http::HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        UPGRADE,
        TE,
        TRAILER,
        EXPECT,
        HOST,
    ]
    .contains(name)
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// The check request for `request`: its method, the service's path, the client's headers
/// (all but connection and body ones, or those listed) and the `X-Original-*` and
/// `X-Forwarded-*` headers that oauth2-proxy, Authelia and ingress-nginx's users expect.
pub fn check_request(
    external: &ExternalAuth,
    request: &RequestHeader,
    from: &Origin,
    client_ip: Option<IpAddr>,
) -> Result<RequestHeader> {
    let method = external.method.as_ref().unwrap_or(&request.method).clone();
    let mut check = RequestHeader::build(method, external.path.as_bytes(), None)?;
    for (name, value) in &request.headers {
        let chosen = match &external.request_headers {
            Some(list) => list.contains(name),
            None => true,
        };
        if chosen && !is_connection_or_body_header(name) {
            check.append_header(name.clone(), value.clone())?;
        }
    }
    let uri = original_uri(from);
    let host = match from.port {
        Some(port) => format!("{}:{port}", from.host),
        None => from.host.to_string(),
    };
    let method = request.method.as_str();
    check.insert_header(http::header::HOST, host.as_str())?;
    check.insert_header("x-original-uri", uri.as_str())?;
    check.insert_header("x-original-url", original_url(from))?;
    check.insert_header("x-original-method", method)?;
    check.insert_header("x-forwarded-method", method)?;
    check.insert_header("x-forwarded-proto", from.scheme)?;
    check.insert_header("x-forwarded-host", host.as_str())?;
    check.insert_header("x-forwarded-uri", uri.as_str())?;
    check.insert_header("x-auth-request-redirect", uri.as_str())?;
    if let Some(ip) = client_ip {
        check.insert_header("x-forwarded-for", ip.to_string())?;
        check.insert_header("x-real-ip", ip.to_string())?;
    }
    Ok(check)
}

/// The verdict of an answer with `status` and `headers`, for a client that asked for
/// `original_url`.
pub fn verdict(external: &ExternalAuth, answer: &ResponseHeader, original_url: &str) -> Verdict {
    match answer.status.as_u16() {
        200..=299 => Verdict::Allow(
            external
                .response_headers
                .iter()
                .flat_map(|name| {
                    answer
                        .headers
                        .get_all(name)
                        .iter()
                        .map(|value| (name.clone(), value.clone()))
                })
                .collect(),
        ),
        401 if external.signin.is_some() => {
            let signin = external.signin.as_deref().unwrap_or_default();
            Verdict::SignIn(signin_location(signin, original_url))
        }
        status @ (401 | 403) => Verdict::Deny {
            status,
            challenge: answer.headers.get(http::header::WWW_AUTHENTICATE).cloned(),
        },
        status => Verdict::Failed(format!("the service answered {status}")),
    }
}

/// `signin` with `rd=<the original URL>` added unless it already has an `rd`, as
/// ingress-nginx's `auth-signin` does.
pub fn signin_location(signin: &str, original_url: &str) -> String {
    let has_rd = signin
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("rd=")));
    if has_rd {
        return signin.to_string();
    }
    let separator = if signin.contains('?') { '&' } else { '?' };
    format!("{signin}{separator}rd={}", percent_encode(original_url))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends `check` to `peer` and reads the verdict, all within `external.timeout`.
pub async fn ask(
    external: &ExternalAuth,
    peer: &HttpPeer,
    check: RequestHeader,
    original_url: &str,
) -> Verdict {
    let exchange = subrequest::exchange(peer, check, Bytes::new(), MAX_DRAINED_BODY);
    match tokio::time::timeout(external.timeout, exchange).await {
        Ok(Ok(answer)) => verdict(external, &answer.header, original_url),
        Ok(Err(e)) => Verdict::Failed(format!("asking {peer}: {e}")),
        Err(_) => Verdict::Failed(format!(
            "{peer} did not answer within {:?}",
            external.timeout
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AuthFailure;
    use std::time::Duration;

    fn external(signin: Option<&str>) -> ExternalAuth {
        ExternalAuth {
            upstream: "auth".into(),
            path: "/oauth2/auth?allowed_groups=ops".into(),
            method: None,
            request_headers: None,
            response_headers: vec![http::HeaderName::from_static("x-auth-request-user")],
            signin: signin.map(str::to_string),
            timeout: Duration::from_secs(1),
            on_error: AuthFailure::Deny,
        }
    }

    const FROM: Origin<'static> = Origin {
        scheme: "https",
        host: "app.example.com",
        port: None,
        path: "/orders/7",
        query: Some("x=1"),
    };

    #[test]
    fn check_carries_the_original_request_but_no_body_headers() {
        let mut request = RequestHeader::build("POST", b"/orders/7?x=1", None).unwrap();
        for (name, value) in [
            ("host", "app.example.com"),
            ("cookie", "_oauth2_proxy=abc"),
            ("content-length", "12"),
            ("connection", "keep-alive"),
        ] {
            request.insert_header(name, value).unwrap();
        }
        let client = Some("203.0.113.5".parse().unwrap());
        let check = check_request(&external(None), &request, &FROM, client).unwrap();
        assert_eq!(check.method, "POST");
        assert_eq!(check.uri, "/oauth2/auth?allowed_groups=ops");
        let header = |name: &str| check.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("cookie"), Some("_oauth2_proxy=abc"));
        assert_eq!(header("content-length"), None);
        assert_eq!(header("connection"), None);
        assert_eq!(header("host"), Some("app.example.com"));
        assert_eq!(header("x-original-uri"), Some("/orders/7?x=1"));
        assert_eq!(
            header("x-original-url"),
            Some("https://app.example.com/orders/7?x=1")
        );
        assert_eq!(header("x-forwarded-method"), Some("POST"));
        assert_eq!(header("x-forwarded-for"), Some("203.0.113.5"));

        let mut only_cookie = external(None);
        only_cookie.request_headers = Some(vec![http::header::COOKIE]);
        request.insert_header("authorization", "Bearer t").unwrap();
        let check = check_request(&only_cookie, &request, &FROM, None).unwrap();
        assert!(check.headers.get("authorization").is_none());
        assert!(check.headers.get("cookie").is_some());
    }

    #[test]
    fn answers_become_verdicts() {
        let answer = |status: u16, headers: &[(&str, &str)]| {
            let mut answer = ResponseHeader::build(status, None).unwrap();
            for (name, value) in headers {
                answer.append_header(name.to_string(), *value).unwrap();
            }
            answer
        };
        let url = "https://app.example.com/orders/7?x=1";
        assert_eq!(
            verdict(
                &external(None),
                &answer(202, &[("x-auth-request-user", "ann"), ("x-other", "no")]),
                url
            ),
            Verdict::Allow(vec![(
                http::HeaderName::from_static("x-auth-request-user"),
                http::HeaderValue::from_static("ann")
            )])
        );
        assert_eq!(
            verdict(
                &external(None),
                &answer(401, &[("www-authenticate", "Bearer")]),
                url
            ),
            Verdict::Deny {
                status: 401,
                challenge: Some(http::HeaderValue::from_static("Bearer"))
            }
        );
        assert_eq!(
            verdict(&external(Some("https://sso.example.com/start")), &answer(401, &[]), url),
            Verdict::SignIn(
                "https://sso.example.com/start?rd=https%3A%2F%2Fapp.example.com%2Forders%2F7%3Fx%3D1"
                    .into()
            )
        );
        assert!(matches!(
            verdict(&external(Some("https://sso")), &answer(403, &[]), url),
            Verdict::Deny { status: 403, .. }
        ));
        assert!(matches!(
            verdict(&external(None), &answer(302, &[]), url),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn signin_keeps_an_rd_it_already_has() {
        assert_eq!(
            signin_location("https://sso/start?rd=https://x", "https://y/"),
            "https://sso/start?rd=https://x"
        );
        assert_eq!(
            signin_location("https://sso/start?a=1", "http://y/"),
            "https://sso/start?a=1&rd=http%3A%2F%2Fy%2F"
        );
    }
}
