//! Evaluating consistent-hash keys ([`HashKey`], compiled by the model) against a request.
//!
//! Evaluation appends bytes to a caller-provided buffer, so the request path does not
//! allocate beyond that buffer's first growth.

use crate::model::hash_key::{Segment, Variable};
pub use crate::model::HashKey;
use pingora::http::RequestHeader;
use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;

/// What a key is evaluated against.
pub struct RequestFacts<'a> {
    /// The downstream request header; `None` for tcp connections.
    pub header: Option<&'a RequestHeader>,
    /// The client's address, when known.
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl HashKey {
    /// Appends the key for `facts` to `out`.
    pub fn evaluate_into(&self, facts: &RequestFacts, out: &mut Vec<u8>) {
        for segment in self.segments() {
            match segment {
                Segment::Literal(bytes) => out.extend_from_slice(bytes),
                Segment::Variable(variable) => append_variable(variable, facts, out),
            }
        }
    }

    /// Evaluates the key into a per-thread buffer and passes it to `use_key`.
    pub fn with_key<R>(&self, facts: &RequestFacts, use_key: impl FnOnce(&[u8]) -> R) -> R {
        thread_local! {
            static KEY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        KEY_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            self.evaluate_into(facts, &mut buffer);
            use_key(&buffer)
        })
    }
}

/// The request target split at the first `?`.
fn split_target(header: &RequestHeader) -> (&[u8], &[u8]) {
    let raw = header.raw_path();
    match raw.iter().position(|b| *b == b'?') {
        Some(q) => (&raw[..q], &raw[q + 1..]),
        None => (raw, &[]),
    }
}

fn append_variable(variable: &Variable, facts: &RequestFacts, out: &mut Vec<u8>) {
    match variable {
        Variable::RemoteAddr => {
            if let Some(ip) = facts.client_ip {
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{ip}");
            }
            return;
        }
        Variable::Scheme => {
            out.extend_from_slice(facts.scheme.as_bytes());
            return;
        }
        _ => {}
    }
    let Some(header) = facts.header else {
        return;
    };
    match variable {
        Variable::Host => {
            let host = crate::routing::request_host(header);
            out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
        }
        Variable::Uri => out.extend_from_slice(split_target(header).0),
        Variable::RequestUri => out.extend_from_slice(header.raw_path()),
        Variable::Args => out.extend_from_slice(split_target(header).1),
        Variable::Arg(name) => {
            let args = split_target(header).1;
            let value = args.split(|b| *b == b'&').find_map(|pair| {
                let (key, value) = match pair.iter().position(|b| *b == b'=') {
                    Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                    None => (pair, &[][..]),
                };
                key.eq_ignore_ascii_case(name.as_bytes()).then_some(value)
            });
            out.extend_from_slice(value.unwrap_or_default());
        }
        Variable::Header(name) => {
            for (i, value) in header.headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(value.as_bytes());
            }
        }
        Variable::Cookie(name) => {
            let value = crate::routing::conditions::cookie_bytes(header, name);
            out.extend_from_slice(value.unwrap_or_default());
        }
        Variable::RequestMethod => out.extend_from_slice(header.method.as_str().as_bytes()),
        Variable::RemoteAddr | Variable::Scheme => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut header =
            RequestHeader::build("GET", target.as_bytes(), None).expect("valid request line");
        for (name, value) in headers {
            header
                .append_header(name.to_string(), *value)
                .expect("valid header");
        }
        header
    }

    fn evaluate(template: &str, header: &RequestHeader) -> String {
        let key = HashKey::parse(template).expect("template compiles");
        let facts = RequestFacts {
            header: Some(header),
            client_ip: Some("10.1.2.3".parse().expect("ip")),
            scheme: "http",
        };
        let mut out = Vec::new();
        key.evaluate_into(&facts, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn host_and_request_uri_both_count() {
        let req = request("/a/b?x=1&Y=2", &[("Host", "Shop.Example.com:8080")]);
        assert_eq!(
            evaluate("$host$request_uri", &req),
            "shop.example.com/a/b?x=1&Y=2"
        );
        assert_eq!(
            evaluate("${host}|$uri|$args", &req),
            "shop.example.com|/a/b|x=1&Y=2"
        );
    }

    #[test]
    fn args_headers_cookies_and_connection_facts() {
        let req = request(
            "/p?user=7&y=2",
            &[
                ("X-User", "alice"),
                ("Cookie", "a=1; session=abc"),
                ("Cookie", "z=9"),
            ],
        );
        assert_eq!(evaluate("$arg_user/$arg_Y/$arg_missing", &req), "7/2/");
        assert_eq!(evaluate("${http_x_user}:v1", &req), "alice:v1");
        assert_eq!(evaluate("$cookie_session-$cookie_z", &req), "abc-9");
        assert_eq!(
            evaluate("$remote_addr $scheme $request_method", &req),
            "10.1.2.3 http GET"
        );
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_errors() {
        assert!(HashKey::parse("$host$nope")
            .unwrap_err()
            .contains("unknown variable $nope"));
        assert!(HashKey::parse("${host").unwrap_err().contains("unclosed"));
        assert!(HashKey::parse("a$")
            .unwrap_err()
            .contains("without a variable name"));
        assert!(HashKey::parse("constant")
            .unwrap_err()
            .contains("no variable"));
        assert!(HashKey::parse("$http_")
            .unwrap_err()
            .contains("unknown variable"));
    }
}
