//! The file's routing and traffic keys (issue #16): conditions, backends, canary, filters
//! and affinity, turned into model values with every problem reported.

use super::Checker;
use crate::model::*;
use crate::sources::file::schema::*;
use regex::Regex;

/// A regex that must match the whole text: `^(?:pattern)$`.
pub(super) fn anchored_regex(check: &mut Checker, key_path: &str, pattern: &str) -> Option<Regex> {
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(regex) => Some(regex),
        Err(e) => {
            check.error(
                key_path,
                format!(
                    "regex {pattern:?} does not compile: {}",
                    e.to_string().replace('\n', " ")
                ),
            );
            None
        }
    }
}

/// Reports `name` unless it is a valid cookie name (an RFC 6265 token).
fn cookie_name(check: &mut Checker, key_path: &str, name: &str) {
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token_char) {
        check.error(key_path, format!("invalid cookie name {name:?}"));
    }
}

pub(super) fn header_name(
    check: &mut Checker,
    key_path: &str,
    name: &str,
) -> Option<http::HeaderName> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            check.error(key_path, format!("invalid header name {name:?}"));
            None
        }
    }
}

fn value_match(check: &mut Checker, at: &str, raw: &RawValueMatch) -> Option<ValueMatch> {
    match (&raw.exact, &raw.regex) {
        (Some(exact), None) => Some(ValueMatch::Exact(exact.clone())),
        (None, Some(pattern)) => {
            anchored_regex(check, &format!("{at}.regex"), pattern).map(ValueMatch::Regex)
        }
        _ => {
            check.error(at, "needs exactly one of exact or regex");
            None
        }
    }
}

/// `methods`, `headers` and `query`.
pub(super) fn conditions(check: &mut Checker, at: &str, raw: &RawRoute) -> Conditions {
    let mut conditions = Conditions::default();
    for (i, method) in raw.methods.iter().enumerate() {
        let upper = method.to_ascii_uppercase();
        match http::Method::from_bytes(upper.as_bytes()) {
            Ok(method) if !upper.is_empty() => conditions.methods.push(method),
            _ => check.error(
                &format!("{at}.methods[{i}]"),
                format!("invalid method {method:?}"),
            ),
        }
    }
    for (i, header) in raw.headers.iter().enumerate() {
        let h = format!("{at}.headers[{i}]");
        let name = header_name(check, &format!("{h}.name"), &header.name);
        let value = value_match(check, &h, header);
        if let (Some(name), Some(value)) = (name, value) {
            conditions.headers.push(HeaderMatch { name, value });
        }
    }
    for (i, query) in raw.query.iter().enumerate() {
        let q = format!("{at}.query[{i}]");
        if query.name.is_empty() || query.name.contains(['&', '=', '#']) {
            check.error(
                &format!("{q}.name"),
                format!("invalid parameter name {:?}", query.name),
            );
        }
        if let Some(value) = value_match(check, &q, query) {
            conditions.query.push(QueryMatch {
                name: query.name.clone(),
                value,
            });
        }
    }
    conditions
}

/// `upstream` or `backends`; neither is allowed only for a route that redirects.
pub(super) fn backends(check: &mut Checker, at: &str, raw: &RawRoute) -> Vec<Backend> {
    // An HTTPS redirect still needs backends for the requests that come over HTTPS.
    let redirects = raw.redirect.is_some();
    match (&raw.upstream, raw.backends.is_empty()) {
        (Some(upstream), true) => vec![Backend::new(upstream, 1)],
        (None, false) => {
            if raw.backends.iter().all(|b| b.weight == 0) {
                check.error(
                    &format!("{at}.backends"),
                    "every weight is 0: the route would answer 500 to every request",
                );
            }
            raw.backends
                .iter()
                .map(|b| Backend::new(&b.upstream, b.weight))
                .collect()
        }
        (None, true) if redirects => Vec::new(),
        (None, true) => {
            check.error(
                at,
                "needs an upstream (upstream: NAME, or backends: [...]) unless it has a redirect",
            );
            Vec::new()
        }
        (Some(_), false) => {
            check.error(
                &format!("{at}.backends"),
                "give either upstream or backends, not both",
            );
            Vec::new()
        }
    }
}

/// `canary`.
pub(super) fn canary(check: &mut Checker, at: &str, raw: &RawCanary) -> Option<Canary> {
    let header = match (&raw.header, &raw.header_value, &raw.header_pattern) {
        (None, None, None) => None,
        (Some(name), value, pattern) => {
            let name = header_name(check, &format!("{at}.header"), name);
            let value = match (value, pattern) {
                (Some(_), Some(_)) => {
                    check.error(
                        &format!("{at}.header_pattern"),
                        "give header_value or header_pattern, not both",
                    );
                    None
                }
                (Some(value), None) => Some(ValueMatch::Exact(value.clone())),
                (None, Some(pattern)) => {
                    anchored_regex(check, &format!("{at}.header_pattern"), pattern)
                        .map(ValueMatch::Regex)
                }
                (None, None) => None,
            };
            name.map(|name| CanaryHeader { name, value })
        }
        (None, _, _) => {
            check.error(
                &format!("{at}.header"),
                "header_value and header_pattern need header: NAME",
            );
            None
        }
    };
    if raw.weight_total == 0 {
        check.error(&format!("{at}.weight_total"), "must be at least 1");
    } else if raw.weight > raw.weight_total {
        check.error(
            &format!("{at}.weight"),
            format!(
                "{} is above weight_total ({})",
                raw.weight, raw.weight_total
            ),
        );
    }
    if let Some(cookie) = &raw.cookie {
        cookie_name(check, &format!("{at}.cookie"), cookie);
    }
    Some(Canary {
        upstream: raw.upstream.clone(),
        header,
        cookie: raw.cookie.clone(),
        weight: raw.weight,
        weight_total: raw.weight_total,
        fallback: raw.fallback,
    })
}

fn redirect_status(check: &mut Checker, key_path: &str, code: u16) -> RedirectStatus {
    RedirectStatus::from_code(code).unwrap_or_else(|| {
        check.error(
            key_path,
            format!("{code} is not a redirect status: use 301, 302, 303, 307 or 308"),
        );
        RedirectStatus::Found
    })
}

/// `https_redirect` of a listener or a route.
pub(super) fn https_redirect(
    check: &mut Checker,
    at: &str,
    raw: &Option<RawHttpsRedirect>,
) -> Option<HttpsRedirect> {
    match raw.as_ref()? {
        RawHttpsRedirect::On(false) => None,
        RawHttpsRedirect::On(true) => Some(HttpsRedirect {
            port: 443,
            status: RedirectStatus::PermanentRedirect,
        }),
        RawHttpsRedirect::Settings(settings) => Some(HttpsRedirect {
            port: port(check, &format!("{at}.port"), settings.port),
            status: redirect_status(check, &format!("{at}.status"), settings.status),
        }),
    }
}

/// Whether `b` may appear in a URI path as written (RFC 3986 `pchar` and `/`, `%` for
/// escapes).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b)
}

/// A path sluice sends or redirects to: starts with one `/` (`//host` would be another
/// host to a browser) and has only path characters.
pub(super) fn absolute_path(check: &mut Checker, key_path: &str, path: &str) -> Option<String> {
    let valid = path.starts_with('/') && !path.starts_with("//") && path.bytes().all(is_path_byte);
    if valid {
        Some(path.to_string())
    } else {
        check.error(
            key_path,
            format!(
                "invalid path {path:?}: must start with a single / and hold only URI path \
                 characters (escape others as %XX)"
            ),
        );
        None
    }
}

/// A regex rewrite's replacement: a path (with `$n` groups) and optionally a query.
fn replacement(check: &mut Checker, key_path: &str, text: &str) -> bool {
    let valid = text.starts_with('/')
        && !text.starts_with("//")
        && text.bytes().all(|b| is_path_byte(b) || b == b'?');
    if !valid {
        check.error(
            key_path,
            format!(
                "invalid replacement {text:?}: must start with a single / and hold only URI \
                 path characters, $1…$9 and an optional ?query"
            ),
        );
    }
    valid
}

/// A host name or IP literal (IPv6 in brackets), with a `:port` when `with_port` allows.
fn host_name(check: &mut Checker, key_path: &str, host: &str, with_port: bool) -> Option<String> {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, port)) if literal.parse::<std::net::Ipv6Addr>().is_ok() => (None, port),
            _ => (Some(""), ""),
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), port),
            None => (Some(host), ""),
        },
    };
    let name_valid = name.is_none_or(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    });
    let port_valid = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => with_port && digits.parse::<u16>().is_ok_and(|p| p > 0),
    };
    if name_valid && port_valid {
        Some(host.to_ascii_lowercase())
    } else {
        let expected = if with_port {
            "a host name or [IPv6] literal, optionally with :PORT"
        } else {
            "a host name or [IPv6] literal (the port is a key of its own)"
        };
        check.error(
            key_path,
            format!("invalid host {host:?}: expected {expected}"),
        );
        None
    }
}

fn port(check: &mut Checker, key_path: &str, port: u16) -> u16 {
    if port == 0 {
        check.error(key_path, "must be a port from 1 to 65535");
    }
    port
}

/// `path` or `prefix` (of a redirect or a rewrite); `prefix` needs a prefix path match.
fn path_rewrite(
    check: &mut Checker,
    at: &str,
    path: &Option<String>,
    prefix: &Option<String>,
    route: &RawRoute,
) -> Option<PathRewrite> {
    match (path, prefix) {
        (Some(_), Some(_)) => {
            check.error(&format!("{at}.prefix"), "give path or prefix, not both");
            None
        }
        (Some(path), None) => {
            absolute_path(check, &format!("{at}.path"), path).map(PathRewrite::Full)
        }
        (None, Some(prefix)) => {
            let by_prefix = route.paths.is_empty()
                || route
                    .paths
                    .iter()
                    .any(|p| p.prefix.is_some() || p.segment_prefix.is_some());
            if !by_prefix {
                check.error(
                    &format!("{at}.prefix"),
                    "replaces the matched prefix, but the route has no prefix path",
                );
            }
            absolute_path(check, &format!("{at}.prefix"), prefix).map(PathRewrite::Prefix)
        }
        (None, None) => None,
    }
}

/// Whether a header may be edited: framing and connection headers belong to each hop, and
/// `Host` is `upstream_host`'s.
fn editable(check: &mut Checker, key_path: &str, name: &http::HeaderName) -> bool {
    use http::header::*;
    let hop = [
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    if hop.contains(name) {
        check.error(
            key_path,
            format!("{name} belongs to each connection's framing and cannot be edited"),
        );
        return false;
    }
    if name == HOST {
        check.error(key_path, "set the Host sent upstream with upstream_host");
        return false;
    }
    true
}

fn header_edits(check: &mut Checker, at: &str, raw: &Option<RawHeaderEdits>) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    let Some(raw) = raw else {
        return edits;
    };
    let pairs =
        |check: &mut Checker, kind: &str, map: &std::collections::BTreeMap<String, String>| {
            let mut out = Vec::new();
            for (name, value) in map {
                let key_path = format!("{at}.{kind}.{name}");
                let name =
                    header_name(check, &key_path, name).filter(|n| editable(check, &key_path, n));
                let value = match http::HeaderValue::from_str(value) {
                    Ok(value) => Some(value),
                    Err(_) => {
                        check.error(&key_path, format!("invalid header value {value:?}"));
                        None
                    }
                };
                if let (Some(name), Some(value)) = (name, value) {
                    out.push((name, value));
                }
            }
            out
        };
    edits.set = pairs(check, "set", &raw.set);
    edits.add = pairs(check, "add", &raw.add);
    for (i, name) in raw.remove.iter().enumerate() {
        let key_path = format!("{at}.remove[{i}]");
        let name = header_name(check, &key_path, name).filter(|n| editable(check, &key_path, n));
        edits.remove.extend(name);
    }
    edits
}

/// Every filter of the route.
pub(super) fn filters(check: &mut Checker, at: &str, raw: &RawRoute) -> Filters {
    let mut filters = Filters {
        app_root: raw
            .app_root
            .as_ref()
            .and_then(|p| absolute_path(check, &format!("{at}.app_root"), p)),
        https_redirect: https_redirect(check, &format!("{at}.https_redirect"), &raw.https_redirect),
        request_headers: header_edits(
            check,
            &format!("{at}.request_headers"),
            &raw.request_headers,
        ),
        response_headers: header_edits(
            check,
            &format!("{at}.response_headers"),
            &raw.response_headers,
        ),
        ..Filters::default()
    };
    if let Some(redirect) = &raw.redirect {
        let r = format!("{at}.redirect");
        let scheme = redirect.scheme.as_ref().and_then(|s| match s.as_str() {
            "http" | "https" => Some(s.clone()),
            _ => {
                check.error(&format!("{r}.scheme"), format!("{s:?}: use http or https"));
                None
            }
        });
        let host = redirect
            .host
            .as_ref()
            .and_then(|h| host_name(check, &format!("{r}.host"), h, false));
        filters.redirect = Some(Redirect {
            scheme,
            host,
            port: redirect.port.map(|p| port(check, &format!("{r}.port"), p)),
            path: path_rewrite(check, &r, &redirect.path, &redirect.prefix, raw),
            status: redirect_status(check, &format!("{r}.status"), redirect.status),
        });
    }
    let rewrite = raw.rewrite.clone().unwrap_or_default();
    let w = format!("{at}.rewrite");
    let host = match (&raw.upstream_host, &rewrite.host) {
        (Some(_), Some(_)) => {
            check.error(
                &format!("{w}.host"),
                "give upstream_host or rewrite.host, not both",
            );
            None
        }
        (Some(host), None) => host_name(check, &format!("{at}.upstream_host"), host, true),
        (None, Some(host)) => host_name(check, &format!("{w}.host"), host, true),
        (None, None) => None,
    };
    let path = match (
        &rewrite.regex,
        rewrite.path.is_some() || rewrite.prefix.is_some(),
    ) {
        (Some(_), true) => {
            check.error(&format!("{w}.regex"), "give one of path, prefix or regex");
            None
        }
        (Some(regex), false) => {
            let pattern = anchored_regex(check, &format!("{w}.regex.pattern"), &regex.pattern);
            let valid = replacement(check, &format!("{w}.regex.replacement"), &regex.replacement);
            pattern.filter(|_| valid).map(|pattern| PathRewrite::Regex {
                pattern,
                replacement: regex.replacement.clone(),
            })
        }
        (None, _) => path_rewrite(check, &w, &rewrite.path, &rewrite.prefix, raw),
    };
    let forwarded_prefix = rewrite
        .forwarded_prefix
        .as_ref()
        .and_then(|p| absolute_path(check, &format!("{w}.forwarded_prefix"), p));
    filters.rewrite = Rewrite {
        host,
        path,
        forwarded_prefix,
    };
    if let Some(mirror) = &raw.mirror {
        check.nonzero(&format!("{at}.mirror.max_in_flight"), mirror.max_in_flight);
        if !(0.0..=100.0).contains(&mirror.percent) {
            check.error(
                &format!("{at}.mirror.percent"),
                format!("{} is not a share of requests (0-100)", mirror.percent),
            );
        }
        filters.mirrors.push(Mirror {
            upstream: mirror.upstream.clone(),
            max_in_flight: mirror.max_in_flight,
            // Within 0-100 (checked above): at most a million.
            per_million: (mirror.percent.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        });
    }
    filters
}

/// `affinity`.
pub(super) fn affinity(check: &mut Checker, at: &str, raw: &RawAffinity) -> Option<CookieAffinity> {
    let c = format!("{at}.affinity.cookie");
    let cookie = &raw.cookie;
    cookie_name(check, &format!("{c}.name"), &cookie.name);
    let path = absolute_path(check, &format!("{c}.path"), &cookie.path);
    if cookie.path.contains(';') {
        check.error(&format!("{c}.path"), "a cookie path cannot hold ;");
    }
    let max_age = cookie
        .max_age
        .as_ref()
        .and_then(|t| check.duration(&format!("{c}.max_age"), t));
    if max_age.is_some_and(|age| age < std::time::Duration::from_secs(1)) {
        // Max-Age counts whole seconds: 0 tells the browser to drop the cookie at once.
        check.error(&format!("{c}.max_age"), "must be at least 1s");
    }
    let same_site = cookie
        .same_site
        .as_ref()
        .and_then(|s| match s.to_ascii_lowercase().as_str() {
            "strict" => Some(SameSite::Strict),
            "lax" => Some(SameSite::Lax),
            "none" => Some(SameSite::None),
            _ => {
                check.error(
                    &format!("{c}.same_site"),
                    format!("{s:?}: use strict, lax or none"),
                );
                None
            }
        });
    if same_site == Some(SameSite::None) && !cookie.secure {
        check.error(
            &format!("{c}.same_site"),
            "browsers drop SameSite=None cookies without Secure: set secure: true",
        );
    }
    Some(CookieAffinity {
        name: cookie.name.clone(),
        path: path?,
        max_age,
        same_site,
        secure: cookie.secure,
    })
}

/// A list of networks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`) at `{at}.{key}`.
pub(super) fn networks(check: &mut Checker, at: &str, key: &str, raw: &[String]) -> Vec<IpNet> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, text)| match text.trim().parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(e) => {
                check.error(&format!("{at}.{key}[{i}]"), e);
                None
            }
        })
        .collect()
}

/// `allow` and `deny`.
pub(super) fn access(
    check: &mut Checker,
    at: &str,
    allow: &[String],
    deny: &[String],
) -> AccessList {
    AccessList {
        allow: networks(check, at, "allow", allow),
        deny: networks(check, at, "deny", deny),
    }
}

/// `cors`.
pub(super) fn cors(check: &mut Checker, at: &str, raw: &RawCors) -> Cors {
    let c = format!("{at}.cors");
    let mut allow_origins = Vec::new();
    for (i, origin) in raw.allow_origins.iter().enumerate() {
        match OriginPattern::parse(origin) {
            Some(pattern) => allow_origins.push(pattern),
            None => check.error(
                &format!("{c}.allow_origins[{i}]"),
                format!(
                    "invalid origin {origin:?}: expected *, https://app.example.com[:port] or \
                     https://*.example.com"
                ),
            ),
        }
    }
    let mut allow_methods = Vec::new();
    for (i, method) in raw.allow_methods.iter().enumerate() {
        match http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(method) => allow_methods.push(method),
            Err(_) => check.error(
                &format!("{c}.allow_methods[{i}]"),
                format!("invalid method {method:?}"),
            ),
        }
    }
    let names = |check: &mut Checker, key: &str, raw: &[String]| {
        raw.iter()
            .enumerate()
            .filter_map(|(i, name)| header_name(check, &format!("{c}.{key}[{i}]"), name))
            .collect::<Vec<_>>()
    };
    let allow_headers = names(check, "allow_headers", &raw.allow_headers);
    let expose_headers = names(check, "expose_headers", &raw.expose_headers);
    let max_age = check.duration(&format!("{c}.max_age"), &raw.max_age);
    Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials: raw.allow_credentials,
        max_age: max_age.filter(|age| !age.is_zero()),
    }
}
