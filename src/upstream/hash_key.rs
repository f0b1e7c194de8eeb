//! Consistent-hash key templates: `$host$request_uri`, `${http_x_user}:v1`, ...
//!
//! A template is compiled once, at config load, into literal and variable segments; an
//! unknown variable is a config error (ingress-nginx silently hashed an empty string).
//! Evaluation appends bytes to a caller-provided buffer, so the request path does not
//! allocate beyond that buffer's first growth.

use pingora::http::RequestHeader;
use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;

/// A request variable, spelled as in nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// `$host`: the Host (or :authority), lower-cased, without port.
    Host,
    /// `$uri`: the path as received, without the query string.
    Uri,
    /// `$request_uri`: path and query as received.
    RequestUri,
    /// `$args`: the query string without `?`.
    Args,
    /// `$arg_NAME`: one query argument's value (name compared case-insensitively, as nginx).
    Arg(String),
    /// `$http_NAME`: a request header (`_` in NAME stands for `-`); repeated headers are joined by `, `.
    Header(http::HeaderName),
    /// `$cookie_NAME`: one cookie's value.
    Cookie(String),
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$request_method`: `GET`, `POST`, ...
    RequestMethod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<[u8]>),
    Variable(Variable),
}

/// A compiled hash-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashKey {
    template: String,
    segments: Box<[Segment]>,
}

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
    /// Compiles `template`; the error names the offending variable or syntax.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = Vec::new();
        let bytes = template.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                literal.push(bytes[i]);
                i += 1;
                continue;
            }
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let close = template[i + 2..].find('}').ok_or_else(|| {
                    format!("unclosed `${{` at byte {i} in hash key {template:?}")
                })?;
                (&template[i + 2..i + 2 + close], i + 3 + close)
            } else {
                let len = template[i + 1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (&template[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                return Err(format!(
                    "`$` without a variable name at byte {i} in hash key {template:?}"
                ));
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal).into()));
            }
            segments.push(Segment::Variable(parse_variable(name)?));
            i = next;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal.into()));
        }
        if !segments.iter().any(|s| matches!(s, Segment::Variable(_))) {
            return Err(format!(
                "hash key {template:?} has no variable, so every request would map to the same endpoint"
            ));
        }
        Ok(Self {
            template: template.to_string(),
            segments: segments.into(),
        })
    }

    /// Whether the key reads the HTTP request (anything but `$remote_addr`).
    pub fn needs_request(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Variable(v) if *v != Variable::RemoteAddr))
    }

    /// The template as written.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Appends the key for `facts` to `out`.
    pub fn evaluate_into(&self, facts: &RequestFacts, out: &mut Vec<u8>) {
        for segment in self.segments.iter() {
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

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

fn parse_variable(name: &str) -> Result<Variable, String> {
    let variable = match name {
        "host" => Variable::Host,
        "uri" => Variable::Uri,
        "request_uri" => Variable::RequestUri,
        "args" | "query_string" => Variable::Args,
        "remote_addr" => Variable::RemoteAddr,
        "scheme" => Variable::Scheme,
        "request_method" => Variable::RequestMethod,
        _ => {
            if let Some(arg) = name.strip_prefix("arg_").filter(|s| !s.is_empty()) {
                Variable::Arg(arg.to_string())
            } else if let Some(header) = name.strip_prefix("http_").filter(|s| !s.is_empty()) {
                let header = header.replace('_', "-").to_ascii_lowercase();
                let header = http::HeaderName::from_bytes(header.as_bytes())
                    .map_err(|e| format!("${name}: invalid header name {header:?}: {e}"))?;
                Variable::Header(header)
            } else if let Some(cookie) = name.strip_prefix("cookie_").filter(|s| !s.is_empty()) {
                Variable::Cookie(cookie.to_string())
            } else {
                return Err(format!(
                    "unknown variable ${name}; known: $host $uri $request_uri $args $arg_NAME \
                     $http_NAME $cookie_NAME $remote_addr $scheme $request_method"
                ));
            }
        }
    };
    Ok(variable)
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
            let value = header
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let eq = pair.iter().position(|b| *b == b'=')?;
                    (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
                });
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
