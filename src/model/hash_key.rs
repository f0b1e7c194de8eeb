//! Consistent-hash key templates: `$host$request_uri`, `${http_x_user}:v1`, ...
//!
//! A template is compiled once, when a source produces it, into literal and variable
//! segments; an unknown variable is an error of that source (ingress-nginx silently hashed
//! an empty string). Evaluation against a request is `crate::upstream::hash_key`'s.

use std::fmt;

/// A request variable, spelled as in nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// `$host`: the Host (or :authority), lower-cased, without port.
    Host,
    /// `$uri`: the path as forwarded (after normalisation), without the query string.
    Uri,
    /// `$request_uri`: that path and the query as received.
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
pub(crate) enum Segment {
    Literal(Box<[u8]>),
    Variable(Variable),
}

/// A compiled hash-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashKey {
    template: String,
    segments: Box<[Segment]>,
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

    /// The literal and variable segments, in order.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
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
