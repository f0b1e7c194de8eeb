//! Request path normalisation: the one form of a path that routes match and upstreams receive.
//!
//! A backend that normalises a path sluice forwarded raw would serve `/internal` for
//! `/public/%2e%2e/internal` while sluice matched it as `/public`. So sluice normalises
//! first, routes on the result and forwards the result (the query is kept as sent):
//!
//! 1. Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!    encoding keeps its bytes with upper-case hex digits (RFC 3986 §6.2.2).
//! 2. `%2F` and `%5C` (an encoded `/` or `\`), and a raw `\`, mean different paths to
//!    different backends; [`EscapedSlashes`] says what happens to them (rejected by default,
//!    as Envoy's `path_with_escaped_slashes_action` can).
//! 3. `%00` and malformed encodings (`%zz`, a `%` without two hex digits) are rejected.
//! 4. Runs of `/` are merged when `merge_slashes` is on (nginx's `merge_slashes on`).
//! 5. Dot segments are removed (RFC 3986 §5.2.4); a `..` above the root is rejected, as
//!    nginx does.

pub use crate::model::{EscapedSlashes, PathOptions};
use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (does not start with `/`).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%00`.
    EncodedNul,
    /// `%2F` or `%5C` under [`EscapedSlashes::Reject`].
    EscapedSlash,
    /// A `..` segment that would climb above `/`.
    AboveRoot,
    /// A raw `\` under [`EscapedSlashes::Reject`].
    Backslash,
}

impl PathError {
    /// A short reason for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::BadEscape => "path_bad_escape",
            PathError::EncodedNul => "path_encoded_nul",
            PathError::EscapedSlash => "path_escaped_slash",
            PathError::AboveRoot => "path_above_root",
            PathError::Backslash => "path_backslash",
        }
    }
}

/// The normal form of `path` (no query), borrowed when it is already normal.
pub fn normalize<'a>(path: &'a [u8], options: &PathOptions) -> Result<Cow<'a, [u8]>, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path, options.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, options.escaped_slashes)?;
    let normal = remove_dot_segments(&decoded, options.merge_slashes)?;
    if normal == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(normal))
}

/// The common case, checked without allocating: no `%`, no dot segment, no empty segment.
fn is_normal(path: &[u8], merge_slashes: bool) -> bool {
    if path.contains(&b'%') || path.contains(&b'\\') {
        return false;
    }
    let mut segments = path[1..].split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == b"." || segment == b".." || (merge_slashes && segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Rules 1–3: decodes what is safe to decode and checks the rest.
fn decode(path: &[u8], escaped_slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        if byte == b'\\' && escaped_slashes == EscapedSlashes::Reject {
            // Some backends (IIS, ASP.NET) read `\` as `/`: `/public/..\admin` would
            // escape its prefix there.
            return Err(PathError::Backslash);
        }
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = high << 4 | low;
        i += 3;
        match value {
            0 => return Err(PathError::EncodedNul),
            b'/' | b'\\' => match escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => {
                    out.push(value);
                    continue;
                }
                EscapedSlashes::Keep => {}
            },
            v if is_unreserved(v) => {
                out.push(v);
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&[b'%', HEX[usize::from(high)], HEX[usize::from(low)]]);
    }
    Ok(out)
}

/// Rules 4–5 on a decoded path that starts with `/`.
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> Result<Vec<u8>, PathError> {
    let segments: Vec<&[u8]> = path[1..].split(|b| *b == b'/').collect();
    let count = segments.len();
    let mut kept: Vec<&[u8]> = Vec::with_capacity(count);
    for (i, segment) in segments.into_iter().enumerate() {
        let last = i + 1 == count;
        match segment {
            b"." => {
                if last {
                    // `/a/.` is the directory `/a/`.
                    kept.push(b"");
                }
            }
            b".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                if last {
                    kept.push(b"");
                }
            }
            b"" if merge_slashes && !last => {}
            _ => kept.push(segment),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> Result<String, PathError> {
        normalize(path.as_bytes(), &PathOptions::default())
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    fn with(path: &str, merge_slashes: bool, escaped_slashes: EscapedSlashes) -> String {
        let options = PathOptions {
            merge_slashes,
            escaped_slashes,
        };
        let p = normalize(path.as_bytes(), &options).expect("normal");
        String::from_utf8_lossy(&p).into_owned()
    }

    #[test]
    fn prefix_escapes_from_the_issue_are_resolved_before_routing() {
        for escape in [
            "/public/../internal",
            "/public/%2e%2e/internal",
            "/public/%2E%2E/internal",
            "/public/.%2e/internal",
            "/public/./../internal",
        ] {
            assert_eq!(normal(escape).as_deref(), Ok("/internal"), "{escape}");
        }
        for escape in ["/public/..%2finternal", "/public%2f..%2finternal"] {
            assert_eq!(normal(escape), Err(PathError::EscapedSlash), "{escape}");
        }
        for admin in ["/%61dmin", "//admin", "/./admin", "/admin", "///admin"] {
            assert_eq!(normal(admin).as_deref(), Ok("/admin"), "{admin}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/a", "/a/", "/a/b.c/d", "/.well-known/x", "/a..b/"] {
            let options = PathOptions::default();
            let result = normalize(path.as_bytes(), &options).expect("normal");
            assert!(matches!(result, Cow::Borrowed(_)), "{path}");
        }
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        assert_eq!(normal("/a/b/c/./../../g").as_deref(), Ok("/a/g"));
        assert_eq!(normal("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(normal("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normal("/.").as_deref(), Ok("/"));
        assert_eq!(normal("/a/..").as_deref(), Ok("/"));
        assert_eq!(normal("/.."), Err(PathError::AboveRoot));
        assert_eq!(normal("/a/../../x"), Err(PathError::AboveRoot));
        assert_eq!(normal("/..a/b..").as_deref(), Ok("/..a/b.."));
    }

    #[test]
    fn encodings_are_decoded_only_when_unreserved() {
        assert_eq!(normal("/%41%7e%2D").as_deref(), Ok("/A~-"));
        assert_eq!(normal("/a%20b%3f").as_deref(), Ok("/a%20b%3F"));
        assert_eq!(normal("/%e2%82%ac").as_deref(), Ok("/%E2%82%AC"));
        assert_eq!(normal("/%zz"), Err(PathError::BadEscape));
        assert_eq!(normal("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normal("/a%"), Err(PathError::BadEscape));
        assert_eq!(normal("/a%00b"), Err(PathError::EncodedNul));
        assert_eq!(normal("/a%5cb"), Err(PathError::EscapedSlash));
        assert_eq!(normal("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normal("/public/..\\admin"), Err(PathError::Backslash));
        assert_eq!(with("/a\\b", true, EscapedSlashes::Keep), "/a\\b");
    }

    #[test]
    fn escaped_slash_actions() {
        assert_eq!(
            with("/a%2f..%2fb", true, EscapedSlashes::Keep),
            "/a%2F..%2Fb"
        );
        assert_eq!(with("/a/b%2f..%2fc", true, EscapedSlashes::Decode), "/a/c");
        assert_eq!(
            with("/public%2f..%2finternal", true, EscapedSlashes::Decode),
            "/internal"
        );
    }

    #[test]
    fn slashes_are_merged_unless_turned_off() {
        assert_eq!(normal("//a//b//").as_deref(), Ok("/a/b/"));
        assert_eq!(with("//a//b", false, EscapedSlashes::Reject), "//a//b");
        assert_eq!(with("/a//../b", false, EscapedSlashes::Reject), "/a/b");
    }
}
