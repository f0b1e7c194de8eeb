//! CORS per route: which origins may read responses, and sluice's answer to preflights
//! (the Fetch standard's CORS protocol; ingress-nginx's `enable-cors` and `cors-*`).

use crate::model::{Cors, OriginPattern};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

impl OriginPattern {
    /// Whether `origin` (`https://app.example.com[:port]`) matches.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(exact) => exact.eq_ignore_ascii_case(origin),
            OriginPattern::Wildcard { before, after } => {
                let origin = origin.to_ascii_lowercase();
                origin.len() > before.len() + after.len()
                    && origin.starts_with(before.as_str())
                    && origin.ends_with(after.as_str())
                    && !origin[before.len()..origin.len() - after.len()].contains(['/', ':'])
            }
        }
    }
}

/// The request's `Origin`, if `cors` allows it.
pub fn allowed_origin<'r>(cors: &Cors, request: &'r RequestHeader) -> Option<&'r str> {
    let origin = request.headers.get(http::header::ORIGIN)?.to_str().ok()?;
    cors.allow_origins
        .iter()
        .any(|p| p.matches(origin))
        .then_some(origin)
}

/// Whether `request` is a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), which sluice answers itself.
pub fn is_preflight(request: &RequestHeader) -> bool {
    request.method == http::Method::OPTIONS
        && request.headers.contains_key(http::header::ORIGIN)
        && request
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// `Access-Control-Allow-Origin` for an allowed `origin`: `*` when any origin may read and
/// no credentials are involved, else the origin itself (the standard forbids `*` with
/// credentials).
fn allow_origin_value<'a>(cors: &Cors, origin: &'a str) -> &'a str {
    let any = cors.allow_origins.contains(&OriginPattern::Any);
    if any && !cors.allow_credentials {
        "*"
    } else {
        origin
    }
}

/// Whether `list` is the wildcard `*` alone: any method or header.
fn is_wildcard<T: AsRef<str>>(list: &[T]) -> bool {
    matches!(list, [only] if only.as_ref() == "*")
}

/// The answer to a preflight `request`: 204, with the CORS headers when `origin` is allowed
/// (without them the browser refuses the actual request). A wildcard list of methods or
/// headers answers with what the preflight asks for, which holds with credentials too
/// (where the standard forbids `*`).
pub fn preflight_response(
    cors: &Cors,
    origin: Option<&str>,
    request: &RequestHeader,
) -> Result<ResponseHeader> {
    let mut response = ResponseHeader::build(204, Some(8))?;
    response.insert_header(http::header::VARY, "Origin")?;
    let Some(origin) = origin else {
        return Ok(response);
    };
    use http::header::*;
    response.insert_header(
        ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin_value(cors, origin),
    )?;
    let requested = |name: HeaderName| request.headers.get(name).cloned();
    if is_wildcard(&cors.allow_methods) {
        if let Some(method) = requested(ACCESS_CONTROL_REQUEST_METHOD) {
            response.insert_header(ACCESS_CONTROL_ALLOW_METHODS, method)?;
        }
    } else if !cors.allow_methods.is_empty() {
        response.insert_header(ACCESS_CONTROL_ALLOW_METHODS, join(&cors.allow_methods))?;
    }
    if is_wildcard(&cors.allow_headers) {
        if let Some(headers) = requested(ACCESS_CONTROL_REQUEST_HEADERS) {
            response.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, headers)?;
        }
    } else if !cors.allow_headers.is_empty() {
        response.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, join(&cors.allow_headers))?;
    }
    if exposes(cors) {
        response.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, join(&cors.expose_headers))?;
    }
    if cors.allow_credentials {
        response.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    if let Some(max_age) = cors.max_age {
        response.insert_header(ACCESS_CONTROL_MAX_AGE, max_age.as_secs().to_string())?;
    }
    Ok(response)
}

/// Adds the CORS headers of an actual request from the allowed `origin` to its response.
pub fn add_response_headers(
    cors: &Cors,
    origin: &str,
    response: &mut ResponseHeader,
) -> Result<()> {
    use http::header::*;
    response.insert_header(
        ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin_value(cors, origin),
    )?;
    response.append_header(VARY, "Origin")?;
    if cors.allow_credentials {
        response.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    if exposes(cors) {
        response.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, join(&cors.expose_headers))?;
    }
    Ok(())
}

/// Whether `Access-Control-Expose-Headers` is sent: the list, unless it is `*` with
/// credentials, which the standard reads as a header named `*`.
fn exposes(cors: &Cors) -> bool {
    let named_star = cors.allow_credentials && is_wildcard(&cors.expose_headers);
    !cors.expose_headers.is_empty() && !named_star
}

fn join<T: AsRef<str>>(items: &[T]) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        let wildcard = OriginPattern::Wildcard {
            before: "https://".into(),
            after: ".example.com".into(),
        };
        assert!(wildcard.matches("https://app.example.com"));
        assert!(wildcard.matches("https://a.b.example.com"));
        assert!(!wildcard.matches("https://example.com"));
        assert!(!wildcard.matches("http://app.example.com"));
        assert!(!wildcard.matches("https://evil.com/.example.com"));
        assert!(!wildcard.matches("https://app.example.com:8443"));
        assert!(OriginPattern::Exact("https://a.test".into()).matches("https://A.test"));
    }

    #[test]
    fn wildcard_methods_and_headers_answer_what_the_preflight_asks_for() {
        let cors = Cors {
            allow_origins: vec![OriginPattern::Any],
            allow_methods: vec![http::Method::from_bytes(b"*").expect("a method")],
            allow_headers: vec![http::HeaderName::from_static("*")],
            expose_headers: vec![http::HeaderName::from_static("*")],
            allow_credentials: true,
            max_age: None,
        };
        let mut request = RequestHeader::build("OPTIONS", b"/", None).expect("request");
        for (name, value) in [
            ("origin", "https://a.test"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a, x-b"),
        ] {
            request.insert_header(name, value).expect("header");
        }
        let answer = preflight_response(&cors, Some("https://a.test"), &request).expect("answer");
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            header("access-control-allow-origin").as_deref(),
            Some("https://a.test")
        );
        assert_eq!(
            header("access-control-allow-methods").as_deref(),
            Some("PUT")
        );
        assert_eq!(
            header("access-control-allow-headers").as_deref(),
            Some("x-a, x-b")
        );
        // `*` with credentials names a header `*`: not sent.
        assert_eq!(header("access-control-expose-headers"), None);
    }
}
