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

/// The answer to a preflight: 204, with the CORS headers when `origin` is allowed (without
/// them the browser refuses the actual request).
pub fn preflight_response(cors: &Cors, origin: Option<&str>) -> Result<ResponseHeader> {
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
    response.insert_header(ACCESS_CONTROL_ALLOW_METHODS, join(&cors.allow_methods))?;
    if !cors.allow_headers.is_empty() {
        response.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, join(&cors.allow_headers))?;
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
    if !cors.expose_headers.is_empty() {
        response.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, join(&cors.expose_headers))?;
    }
    Ok(())
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
}
