//! Route conditions on method, headers and query parameters ([`Conditions`]).

use crate::model::Conditions;
use pingora::http::RequestHeader;

/// Whether `request` meets every condition.
pub fn admits(conditions: &Conditions, request: &RequestHeader) -> bool {
    if !conditions.methods.is_empty() && !conditions.methods.contains(&request.method) {
        return false;
    }
    let headers_hold = conditions.headers.iter().all(|wanted| {
        request
            .headers
            .get(&wanted.name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| wanted.value.matches(v))
    });
    if !headers_hold {
        return false;
    }
    conditions.query.iter().all(|wanted| {
        query_value(request.uri.query(), &wanted.name).is_some_and(|v| wanted.value.matches(v))
    })
}

/// The value of the first parameter `name` in `query` (`a=1&b`: `b` has the value "").
pub fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The raw value of cookie `name` in the request's `Cookie` headers, if sent (nginx's
/// `$cookie_NAME`).
pub fn cookie_bytes<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// The value of cookie `name` as text, without the quotes a value may be sent in.
pub fn cookie_value<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r str> {
    let value = std::str::from_utf8(cookie_bytes(request, name)?).ok()?;
    Some(value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeaderMatch, QueryMatch, ValueMatch};
    use regex::Regex;

    use crate::routing::test_request as request;

    #[test]
    fn every_condition_must_hold() {
        let conditions = Conditions {
            methods: vec![http::Method::GET, http::Method::HEAD],
            headers: vec![HeaderMatch {
                name: http::HeaderName::from_static("x-version"),
                value: ValueMatch::Regex(Regex::new("^(?:v[0-9]+)$").expect("regex")),
            }],
            query: vec![QueryMatch {
                name: "debug".into(),
                value: ValueMatch::Exact("1".into()),
            }],
        };
        let v2 = [("X-Version", "v2")];
        assert!(admits(&conditions, &request("GET", "/?a&debug=1", &v2)));
        assert!(admits(&conditions, &request("HEAD", "/?debug=1", &v2)));
        assert!(!admits(&conditions, &request("POST", "/?debug=1", &v2)));
        assert!(!admits(&conditions, &request("GET", "/?debug=2", &v2)));
        assert!(!admits(&conditions, &request("GET", "/?debug=1", &[])));
        assert!(!admits(
            &conditions,
            &request("GET", "/?debug=1", &[("x-version", "v2x")])
        ));
    }

    #[test]
    fn cookies_are_found_in_every_cookie_header() {
        let r = request("GET", "/", &[("cookie", "a=1; b=\"2\""), ("cookie", "c=3")]);
        assert_eq!(cookie_value(&r, "b"), Some("2"));
        assert_eq!(cookie_value(&r, "c"), Some("3"));
        assert_eq!(cookie_value(&r, "d"), None);
    }

    #[test]
    fn query_values_are_the_first_occurrence() {
        assert_eq!(query_value(Some("a=1&a=2"), "a"), Some("1"));
        assert_eq!(query_value(Some("a&b=2"), "a"), Some(""));
        assert_eq!(query_value(Some("ab=1"), "a"), None);
        assert_eq!(query_value(None, "a"), None);
    }
}
