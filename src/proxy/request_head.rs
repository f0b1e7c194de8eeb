//! What sluice accepts of a request head, checked once before routing: its framing, its
//! host, its target form and its path. Everything routed and forwarded afterwards uses the
//! [`Inspected`] result, so the route that matched is the route the upstream's path means.
//!
//! Pingora's parser has already refused what it cannot frame (differing `Content-Length`s,
//! a final coding other than `chunked`, `Transfer-Encoding` on HTTP/1.0, duplicate `Host`,
//! userinfo, an absolute-form authority differing from `Host`), and it drops
//! `Content-Length` when `Transfer-Encoding` is present and closes the connection after.

use super::path::{self, PathOptions};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Version};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

/// A request sluice answers itself with `status`, for `reason` (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad_request(reason: &'static str) -> Rejection {
    Rejection {
        status: 400,
        reason,
    }
}

/// The routing-relevant parts of an accepted request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Inspected {
    /// Lower-case, without port or trailing dot; empty for an HTTP/1.0 request without one.
    pub host: String,
    /// The port the client named with the host, if any (for redirects that keep it).
    pub port: Option<u16>,
    /// The normalised path, without query.
    pub path: Vec<u8>,
    /// The origin-form target to forward when it differs from the request's (a normalised
    /// path, or an absolute-form target), query included.
    pub new_target: Option<Vec<u8>>,
    /// The one `Content-Length` to forward when the request had a list or repeated lines.
    pub collapsed_length: Option<u64>,
    /// `OPTIONS *`: about the server, not a resource; no route applies.
    pub asterisk: bool,
}

/// Checks `header` and extracts what routing needs.
pub fn inspect(header: &RequestHeader, paths: &PathOptions) -> Result<Inspected, Rejection> {
    if header.method == Method::CONNECT {
        // sluice is not a forward proxy.
        return Err(Rejection {
            status: 405,
            reason: "connect",
        });
    }
    let collapsed_length = check_framing(header)?;
    let raw_target = header.raw_path();
    if raw_target == b"*" {
        if header.method != Method::OPTIONS {
            return Err(bad_request("asterisk_target"));
        }
        let (host, port) = host_of(header, None)?;
        return Ok(Inspected {
            host,
            port,
            path: b"*".to_vec(),
            new_target: None,
            collapsed_length,
            asterisk: true,
        });
    }
    let (authority, target, absolute) = match raw_target_authority(raw_target) {
        RawTargetAuthority::None => (None, raw_target, false),
        RawTargetAuthority::AmbiguousAuthority => return Err(bad_request("ambiguous_target")),
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => {
            if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
                return Err(bad_request("target_scheme"));
            }
            (Some(authority), path_and_query, true)
        }
    };
    let (host, port) = host_of(header, authority)?;
    let (raw_path, query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], Some(&target[q..])),
        None => (target, None),
    };
    let raw_path: &[u8] = if absolute && raw_path.is_empty() {
        b"/"
    } else {
        raw_path
    };
    let normal = path::normalize(raw_path, paths).map_err(|e| bad_request(e.as_str()))?;
    let new_target = (absolute || normal.as_ref() != raw_path).then(|| {
        let mut target = normal.to_vec();
        target.extend_from_slice(query.unwrap_or_default());
        target
    });
    Ok(Inspected {
        host,
        port,
        path: normal.into_owned(),
        new_target,
        collapsed_length,
        asterisk: false,
    })
}

/// Rule: what reaches an upstream has one framing. A list of equal lengths (`38, 38`, or
/// the same line twice) becomes one; any coding but a lone `chunked` is 501, as in nginx.
fn check_framing(header: &RequestHeader) -> Result<Option<u64>, Rejection> {
    let mut codings = header
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| c.trim_ascii());
    if let Some(first) = codings.next() {
        if !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some() {
            return Err(Rejection {
                status: 501,
                reason: "transfer_coding",
            });
        }
    }
    let mut lengths = 0usize;
    let mut value = None;
    for item in header
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
    {
        let item = item.trim_ascii();
        // At most 18 digits: the value cannot overflow a u64.
        let parsed = (!item.is_empty() && item.len() <= 18 && item.iter().all(u8::is_ascii_digit))
            .then(|| item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
            .ok_or(bad_request("content_length"))?;
        if value.is_some_and(|v| v != parsed) {
            return Err(bad_request("content_length"));
        }
        value = Some(parsed);
        lengths += 1;
    }
    Ok(value.filter(|_| lengths > 1))
}

/// The request's host: the absolute-form authority if any, else the HTTP/2 `:authority`,
/// else `Host` (required on HTTP/1.1, RFC 9112 §3.2).
fn host_of(
    header: &RequestHeader,
    authority: Option<&[u8]>,
) -> Result<(String, Option<u16>), Rejection> {
    let value = match authority {
        Some(authority) => Some(authority),
        None => header
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| header.headers.get(HOST).map(|v| v.as_bytes())),
    };
    match value {
        Some(value) => host_name(value).ok_or(bad_request("host")),
        None if header.version == Version::HTTP_10 => Ok((String::new(), None)),
        None => Err(bad_request("missing_host")),
    }
}

/// `value` as a lower-case host name without port and trailing dot, and its port, if it is
/// a valid `uri-host [":" port]` (RFC 9110 §7.2): a bracketed IP literal or a name of
/// letters, digits, `-`, `_`, `.` and `~`, without empty labels.
fn host_name(value: &[u8]) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let end = rest.iter().position(|b| *b == b']')?;
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return None;
        }
        (literal, &rest[end + 1..])
    } else {
        let colon = value.iter().position(|b| *b == b':').unwrap_or(value.len());
        let mut name = &value[..colon];
        if let Some(without_dot) = name.strip_suffix(b".") {
            name = without_dot;
        }
        let valid = !name.is_empty()
            && name.split(|b| *b == b'.').all(|label| !label.is_empty())
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
        if !valid {
            return None;
        }
        (name, &value[colon..])
    };
    let port = match port {
        [] => None,
        [b':', digits @ ..] if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
        }
        _ => return None,
    };
    Some((String::from_utf8_lossy(host).to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &[u8])]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        for (name, value) in headers {
            req.append_header(
                name.to_string(),
                http::HeaderValue::from_bytes(value).expect("value"),
            )
            .expect("header");
        }
        req
    }

    fn inspect_default(req: &RequestHeader) -> Result<Inspected, Rejection> {
        inspect(req, &PathOptions::default())
    }

    #[test]
    fn content_length_lists_collapse_and_disagreements_are_refused() {
        let req = request("/", &[("host", b"a"), ("content-length", b"38, 38")]);
        assert_eq!(
            inspect_default(&req).expect("ok").collapsed_length,
            Some(38)
        );
        let req = request(
            "/",
            &[
                ("host", b"a"),
                ("content-length", b"5"),
                ("content-length", b"5"),
            ],
        );
        assert_eq!(inspect_default(&req).expect("ok").collapsed_length, Some(5));
        let req = request("/", &[("host", b"a"), ("content-length", b"5")]);
        assert_eq!(inspect_default(&req).expect("ok").collapsed_length, None);
        for bad in [
            &b"5, 6"[..],
            b"-1",
            b"5,",
            b"0x5",
            b"+5",
            b"99999999999999999999",
        ] {
            let req = request("/", &[("host", b"a"), ("content-length", bad)]);
            assert_eq!(
                inspect_default(&req),
                Err(bad_request("content_length")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_a_lone_chunked_coding_is_accepted() {
        let req = request("/", &[("host", b"a"), ("transfer-encoding", b"Chunked")]);
        assert!(inspect_default(&req).is_ok());
        for coding in [
            &b"gzip, chunked"[..],
            b"identity, chunked",
            b"chunked, chunked",
        ] {
            let req = request("/", &[("host", b"a"), ("transfer-encoding", coding)]);
            assert_eq!(inspect_default(&req).map(|_| ()).unwrap_err().status, 501);
        }
    }

    #[test]
    fn hosts_are_validated_and_normalised() {
        let host =
            |value: &[u8]| inspect_default(&request("/", &[("host", value)])).map(|i| i.host);
        assert_eq!(host(b"A.Example.").as_deref(), Ok("a.example"));
        assert_eq!(host(b"a.example:8080").as_deref(), Ok("a.example"));
        assert_eq!(host(b"[::1]:80").as_deref(), Ok("::1"));
        let port =
            |value: &[u8]| inspect_default(&request("/", &[("host", value)])).map(|i| i.port);
        assert_eq!(port(b"a.example:8080"), Ok(Some(8080)));
        assert_eq!(port(b"[::1]:81"), Ok(Some(81)));
        assert_eq!(port(b"a.example"), Ok(None));
        for bad in [
            &b""[..],
            b"a.example/evil",
            b"a b",
            b"\"a\"",
            b"a.example:bad",
            b"a..example",
            b".",
            b"\xffa",
            b"[zz]",
        ] {
            assert_eq!(host(bad), Err(bad_request("host")), "{bad:?}");
        }
        let no_host = request("/", &[]);
        assert_eq!(inspect_default(&no_host), Err(bad_request("missing_host")));
        let mut http10 = request("/", &[]);
        http10.set_version(Version::HTTP_10);
        assert_eq!(inspect_default(&http10).expect("1.0").host, "");
    }

    #[test]
    fn absolute_form_routes_on_its_path_and_authority() {
        let req = request("http://A.example/p/../q?x=1", &[("host", b"A.example")]);
        let inspected = inspect_default(&req).expect("ok");
        assert_eq!(inspected.host, "a.example");
        assert_eq!(inspected.path, b"/q");
        assert_eq!(inspected.new_target.as_deref(), Some(&b"/q?x=1"[..]));
        let req = request("http://a.example", &[("host", b"a.example")]);
        assert_eq!(
            inspect_default(&req).expect("ok").new_target.as_deref(),
            Some(&b"/"[..])
        );
        let req = request("ftp://a.example/x", &[("host", b"a.example")]);
        assert_eq!(inspect_default(&req), Err(bad_request("target_scheme")));
    }

    #[test]
    fn paths_are_normalised_and_only_rewritten_when_changed() {
        let req = request("/public/%2e%2e/internal?a=/../b", &[("host", b"a")]);
        let inspected = inspect_default(&req).expect("ok");
        assert_eq!(inspected.path, b"/internal");
        assert_eq!(
            inspected.new_target.as_deref(),
            Some(&b"/internal?a=/../b"[..])
        );
        let req = request("/public/x?q", &[("host", b"a")]);
        assert_eq!(inspect_default(&req).expect("ok").new_target, None);
        let req = request("/a%2fb", &[("host", b"a")]);
        assert_eq!(
            inspect_default(&req),
            Err(bad_request("path_escaped_slash"))
        );
    }

    #[test]
    fn connect_is_not_allowed() {
        let mut req = request("a.example:443", &[("host", b"a.example:443")]);
        req.set_method(Method::CONNECT);
        assert_eq!(inspect_default(&req).unwrap_err().status, 405);
    }

    #[test]
    fn asterisk_is_for_options_only() {
        let mut req = request("*", &[("host", b"a")]);
        req.set_method(Method::OPTIONS);
        assert!(inspect_default(&req).expect("ok").asterisk);
        let req = request("*", &[("host", b"a")]);
        assert_eq!(inspect_default(&req), Err(bad_request("asterisk_target")));
    }
}
