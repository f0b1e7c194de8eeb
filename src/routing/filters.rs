//! Route filters as pure functions of the request: redirect targets, path rewrites and
//! header edits. The proxy calls them at its hooks, in the order [`Filters`] documents.

use crate::model::{Filters, HeaderEdits, HttpsRedirect, PathRewrite, Redirect};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// What the request looked like to the client, for building a redirect target.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'r> {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The host, lower-case and without port.
    pub host: &'r str,
    /// The port the client named in `Host`, if any.
    pub port: Option<u16>,
    pub path: &'r str,
    pub query: Option<&'r str>,
}

/// The `Location` of `redirect` for a request that matched a prefix of `prefix_len` bytes.
pub fn redirect_location(redirect: &Redirect, from: &Origin, prefix_len: Option<usize>) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(from.scheme);
    let host = redirect.host.as_deref().unwrap_or(from.host);
    let keeps_authority = redirect.scheme.is_none() && redirect.host.is_none();
    let port = redirect
        .port
        .or_else(|| keeps_authority.then_some(from.port).flatten());
    let path = match &redirect.path {
        Some(rewrite) => rewrite_path(rewrite, from.path, prefix_len),
        None => from.path.to_string(),
    };
    location(scheme, host, port, &path, from.query)
}

/// The `Location` of an HTTPS redirect: the same host, path and query over HTTPS.
pub fn https_location(https: &HttpsRedirect, from: &Origin) -> String {
    location("https", from.host, Some(https.port), from.path, from.query)
}

/// Whether an HTTPS redirect of a whole listener leaves this path alone: ACME HTTP-01
/// challenges must be answered over plain HTTP (ingress-nginx exempts them too).
pub fn is_acme_challenge(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}

/// `scheme://host[:port]path[?query]`, the port left out when it is the scheme's default.
pub fn location(
    scheme: &str,
    host: &str,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
) -> String {
    let default_port = match scheme {
        "https" => 443,
        _ => 80,
    };
    let mut out = format!("{scheme}://");
    // Inspection strips an IPv6 literal's brackets; a `Location` needs them back.
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
    if let Some(port) = port.filter(|&p| p != default_port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    push_path_and_query(&mut out, path, query);
    out
}

/// Appends `path` and the original `query` (after any query `path` brought itself).
fn push_path_and_query(out: &mut String, path: &str, query: Option<&str>) {
    out.push_str(path);
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push(if path.contains('?') { '&' } else { '?' });
        out.push_str(query);
    }
}

/// `path` rewritten by `rewrite`; `prefix_len` is how much of it the route's prefix matched.
pub fn rewrite_path(rewrite: &PathRewrite, path: &str, prefix_len: Option<usize>) -> String {
    match rewrite {
        PathRewrite::Full(full) => full.clone(),
        PathRewrite::Prefix(replacement) => {
            let Some(rest) = prefix_len.and_then(|len| path.get(len..)) else {
                return path.to_string();
            };
            // `/` never doubles at the join: `/v2/` + `/x` is `/v2/x`, `/` + `` is `/`.
            let joined = match (replacement.ends_with('/'), rest.strip_prefix('/')) {
                (true, Some(rest)) => format!("{replacement}{rest}"),
                _ => format!("{replacement}{rest}"),
            };
            if joined.is_empty() {
                "/".into()
            } else {
                joined
            }
        }
        PathRewrite::Regex {
            pattern,
            replacement,
        } => match pattern.captures(path) {
            Some(captures) => expand(&captures, replacement),
            None => path.to_string(),
        },
    }
}

/// `replacement` with `$1`…`$9` replaced by the capture groups (an unmatched group is
/// empty) and `$$` by `$`, as nginx's `rewrite` reads them.
fn expand(captures: &regex::Captures, replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len() + 16);
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(d @ '0'..='9') => {
                chars.next();
                let group = d as usize - '0' as usize;
                out.push_str(captures.get(group).map_or("", |m| m.as_str()));
            }
            Some('$') => {
                chars.next();
                out.push('$');
            }
            _ => out.push('$'),
        }
    }
    out
}

/// Applies the request header edits and the rewrite to the request sent upstream.
pub fn apply_request(
    filters: &Filters,
    request: &mut RequestHeader,
    prefix_len: Option<usize>,
) -> Result<()> {
    edit_request_headers(&filters.request_headers, request)?;
    let rewrite = &filters.rewrite;
    let new_target = rewrite.path.as_ref().map(|path| {
        let new_path = rewrite_path(path, request.uri.path(), prefix_len);
        let mut target = String::with_capacity(new_path.len() + 32);
        push_path_and_query(&mut target, &new_path, request.uri.query());
        target
    });
    // An HTTP/2 request carries its authority in the URI: it changes with `Host`.
    let new_authority = rewrite
        .host
        .as_ref()
        .filter(|_| request.uri.authority().is_some());
    if new_target.is_some() || new_authority.is_some() {
        let mut parts = request.uri.clone().into_parts();
        if let Some(target) = &new_target {
            parts.path_and_query = Some(
                target
                    .parse()
                    .map_err(|e| invalid(format!("rewritten target {target:?}: {e}")))?,
            );
        }
        if let Some(host) = new_authority {
            parts.authority = Some(
                host.parse()
                    .map_err(|e| invalid(format!("rewritten authority {host:?}: {e}")))?,
            );
        }
        let uri = http::Uri::from_parts(parts)
            .map_err(|e| invalid(format!("rewritten request URI: {e}")))?;
        request.set_uri(uri);
    }
    if let Some(host) = &rewrite.host {
        request.insert_header(http::header::HOST, host.as_str())?;
    }
    if let Some(prefix) = &rewrite.forwarded_prefix {
        request.insert_header("x-forwarded-prefix", prefix.as_str())?;
    }
    Ok(())
}

fn invalid(message: String) -> Box<pingora::Error> {
    pingora::Error::explain(pingora::ErrorType::HTTPStatus(500), message)
}

/// Applies request header edits (a route's, or one backend's after them).
pub fn edit_request_headers(edits: &HeaderEdits, request: &mut RequestHeader) -> Result<()> {
    for (name, value) in &edits.set {
        request.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &edits.add {
        request.append_header(name.clone(), value.clone())?;
    }
    for name in &edits.remove {
        request.remove_header(name);
    }
    Ok(())
}

/// Applies response header edits.
pub fn apply_response(edits: &HeaderEdits, response: &mut ResponseHeader) -> Result<()> {
    for (name, value) in &edits.set {
        response.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &edits.add {
        response.append_header(name.clone(), value.clone())?;
    }
    for name in &edits.remove {
        response.remove_header(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RedirectStatus, Rewrite};
    use regex::Regex;

    fn from<'a>(path: &'a str, query: Option<&'a str>) -> Origin<'a> {
        Origin {
            scheme: "http",
            host: "shop.example.com",
            port: Some(8080),
            path,
            query,
        }
    }

    fn redirect() -> Redirect {
        Redirect {
            scheme: None,
            host: None,
            port: None,
            path: None,
            status: RedirectStatus::Found,
        }
    }

    #[test]
    fn redirects_keep_what_they_do_not_change() {
        let mut r = redirect();
        r.path = Some(PathRewrite::Full("/new".into()));
        assert_eq!(
            redirect_location(&r, &from("/old", Some("a=1")), None),
            "http://shop.example.com:8080/new?a=1"
        );
        r.scheme = Some("https".into());
        assert_eq!(
            redirect_location(&r, &from("/old", None), None),
            "https://shop.example.com/new",
            "a new scheme drops the request's port"
        );
        r.port = Some(8443);
        r.host = Some("other.example.com".into());
        assert_eq!(
            redirect_location(&r, &from("/old", None), None),
            "https://other.example.com:8443/new"
        );
        let https = HttpsRedirect {
            port: 443,
            status: RedirectStatus::PermanentRedirect,
        };
        assert_eq!(
            https_location(&https, &from("/a", Some("b"))),
            "https://shop.example.com/a?b"
        );
        let v6 = Origin {
            host: "::1",
            ..from("/a", None)
        };
        assert_eq!(https_location(&https, &v6), "https://[::1]/a");
    }

    #[test]
    fn prefix_replacement_joins_with_one_slash() {
        let replace = |with: &str, path: &str, len: usize| {
            rewrite_path(&PathRewrite::Prefix(with.into()), path, Some(len))
        };
        assert_eq!(replace("/xyz", "/foo/bar", 4), "/xyz/bar");
        assert_eq!(replace("/xyz/", "/foo/bar", 4), "/xyz/bar");
        assert_eq!(replace("/", "/foo/bar", 4), "/bar");
        assert_eq!(replace("/", "/foo", 4), "/");
        assert_eq!(replace("/x", "/foo", 0), "/x/foo", "the root prefix");
        assert_eq!(
            rewrite_path(&PathRewrite::Prefix("/x".into()), "/exact", None),
            "/exact",
            "a path matched otherwise is left whole"
        );
    }

    #[test]
    fn regex_rewrites_use_capture_groups() {
        let rewrite = PathRewrite::Regex {
            pattern: Regex::new("^(?:/something(/|$)(.*))$").expect("regex"),
            replacement: "/$2".into(),
        };
        assert_eq!(rewrite_path(&rewrite, "/something/new", None), "/new");
        assert_eq!(rewrite_path(&rewrite, "/something", None), "/");
        assert_eq!(rewrite_path(&rewrite, "/else", None), "/else");
        let rewrite = PathRewrite::Regex {
            pattern: Regex::new("^/a/([0-9]+)$").expect("regex"),
            replacement: "/b/$1x/$$1".into(),
        };
        assert_eq!(rewrite_path(&rewrite, "/a/42", None), "/b/42x/$1");
    }

    #[test]
    fn request_edits_and_rewrite_apply_in_order() {
        let mut filters = Filters::default();
        filters.request_headers.set = vec![(
            http::HeaderName::from_static("x-set"),
            http::HeaderValue::from_static("1"),
        )];
        filters.request_headers.add = vec![(
            http::HeaderName::from_static("x-add"),
            http::HeaderValue::from_static("2"),
        )];
        filters.request_headers.remove = vec![http::HeaderName::from_static("x-drop")];
        filters.rewrite = Rewrite {
            host: Some("internal".into()),
            path: Some(PathRewrite::Prefix("/v2".into())),
            forwarded_prefix: Some("/api".into()),
        };
        let mut request = RequestHeader::build("GET", b"/api/x?q=1", None).expect("request");
        for (name, value) in [
            ("x-set", "0"),
            ("x-add", "1"),
            ("x-drop", "1"),
            ("host", "a"),
        ] {
            request.append_header(name, value).expect("header");
        }
        apply_request(&filters, &mut request, Some(4)).expect("apply");
        assert_eq!(request.uri.to_string(), "/v2/x?q=1");
        let mut h2 = RequestHeader::build("GET", b"/", None).expect("h2");
        h2.set_uri("https://a.example/api/x".parse().expect("uri"));
        apply_request(&filters, &mut h2, Some(4)).expect("apply");
        assert_eq!(
            h2.uri.to_string(),
            "https://internal/v2/x",
            "the authority follows"
        );
        let values = |name: &str| -> Vec<&str> {
            request
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect()
        };
        assert_eq!(values("x-set"), ["1"]);
        assert_eq!(values("x-add"), ["1", "2"]);
        assert!(values("x-drop").is_empty());
        assert_eq!(values("host"), ["internal"]);
        assert_eq!(values("x-forwarded-prefix"), ["/api"]);
    }
}
