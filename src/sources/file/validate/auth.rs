//! `routes[].auth`: basic authentication from an htpasswd file (read here, so that a missing
//! file or a bad line is an error at the route naming it) or an external service.

use super::traffic::{absolute_path, header_name};
use super::Checker;
use crate::model::*;
use crate::sources::file::schema::*;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) fn auth(check: &mut Checker, at: &str, raw: &RawAuth) -> Option<Auth> {
    let a = format!("{at}.auth");
    match (&raw.basic, &raw.external) {
        (Some(basic), None) => basic_auth(check, &format!("{a}.basic"), basic).map(Auth::Basic),
        (None, Some(external)) => {
            external_auth(check, &format!("{a}.external"), external).map(Auth::External)
        }
        _ => {
            check.error(&a, "needs exactly one of basic and external");
            None
        }
    }
}

fn basic_auth(check: &mut Checker, at: &str, raw: &RawBasicAuth) -> Option<BasicAuth> {
    let realm_ok = raw
        .realm
        .chars()
        .all(|c| c != '"' && c != '\\' && !c.is_control());
    if !realm_ok {
        check.error(
            &format!("{at}.realm"),
            "may not hold quotes, backslashes or control characters",
        );
    }
    let file = PathBuf::from(&raw.htpasswd);
    let key = format!("{at}.htpasswd");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => {
            check.error(&key, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    match Htpasswd::parse(&text) {
        Ok(users) => realm_ok.then(|| BasicAuth {
            realm: raw.realm.clone(),
            file,
            users: Arc::new(users),
        }),
        Err(problems) => {
            for problem in problems {
                check.error(&key, format!("{}: {problem}", file.display()));
            }
            None
        }
    }
}

fn external_auth(check: &mut Checker, at: &str, raw: &RawExternalAuth) -> Option<ExternalAuth> {
    let errors_before = check.errors.len();
    let (path, query) = match raw.path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw.path.as_str(), None),
    };
    absolute_path(check, &format!("{at}.path"), path);
    if query.is_some_and(|q| !q.bytes().all(|b| b.is_ascii_graphic() && b != b'#')) {
        check.error(
            &format!("{at}.path"),
            "the query may hold only printable characters other than #",
        );
    }
    let names = |check: &mut Checker, key: &str, raw: &[String]| {
        raw.iter()
            .enumerate()
            .filter_map(|(i, name)| header_name(check, &format!("{at}.{key}[{i}]"), name))
            .collect::<Vec<_>>()
    };
    let request_headers = raw
        .request_headers
        .as_ref()
        .map(|list| names(check, "request_headers", list));
    let response_headers = names(check, "response_headers", &raw.response_headers);
    if let Some(signin) = &raw.signin {
        let absolute = signin.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        });
        if !absolute {
            check.error(
                &format!("{at}.signin"),
                format!("invalid URL {signin:?}: expected https://host/path"),
            );
        }
    }
    let method = raw.method.as_ref().and_then(|m| {
        let parsed = http::Method::from_bytes(m.as_bytes()).ok();
        if parsed.is_none() {
            check.error(&format!("{at}.method"), format!("invalid method {m:?}"));
        }
        parsed
    });
    let timeout_key = format!("{at}.timeout");
    let timeout = check.duration(&timeout_key, &raw.timeout);
    if timeout.is_some_and(|t| t.is_zero()) {
        check.error(&timeout_key, "must be longer than 0s");
    }
    if check.errors.len() != errors_before {
        return None;
    }
    Some(ExternalAuth {
        upstream: raw.upstream.clone(),
        path: raw.path.clone(),
        method,
        request_headers,
        response_headers,
        signin: raw.signin.clone(),
        timeout: timeout?,
        on_error: match raw.on_error {
            RawAuthFailure::Deny => AuthFailure::Deny,
            RawAuthFailure::Allow => AuthFailure::Allow,
        },
    })
}
