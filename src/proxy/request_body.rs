//! Request bodies: what a route accepts (size), how long a client may take to send one, and
//! whether sluice reads it whole before choosing an endpoint (request buffering).
//!
//! Buffering is ingress-nginx's default (`proxy-request-buffering: on`): a client that
//! trickles its body holds a connection of sluice's, not a worker of the backend's. The
//! buffered body is handed to Pingora as its retry buffer (patch 0006), so it is sent, and
//! resent on a retry, without another copy. gRPC calls and upgrades always stream.

use crate::model::BodyPolicy;
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::Version;
use pingora::http::RequestHeader;

/// How sluice passes one request's body on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// No body to read.
    Empty,
    /// Read it whole (at most `max` bytes) before connecting upstream.
    Buffer { max: u64 },
    /// Forward it as it arrives, counting it against `max` if set.
    Stream { max: Option<u64> },
}

/// How the body of `header` is handled on a route with `policy`. `has_body` is false when
/// the framing says there is none (no length and no coding, or length 0).
pub fn mode(policy: &BodyPolicy, has_body: bool, grpc: bool, upgrade: bool) -> BodyMode {
    if !has_body {
        return BodyMode::Empty;
    }
    if grpc || upgrade {
        // Streaming calls and tunnels last as long as they need: no size or time limit.
        return BodyMode::Stream { max: None };
    }
    match policy.max_size {
        Some(max) if policy.buffering => BodyMode::Buffer { max },
        max => BodyMode::Stream { max },
    }
}

/// Whether the declared `Content-Length` already exceeds `max` (413 before any byte is read,
/// and before any `100 Continue`, as nginx does).
pub fn declared_too_large(header: &RequestHeader, max: Option<u64>) -> bool {
    let Some(max) = max else { return false };
    header
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > max)
}

/// Takes `Expect: 100-continue` off a request whose body sluice reads itself; returns
/// whether the client waits for a `100 Continue` (HTTP/1.1 only, RFC 9110 §10.1.1).
pub fn take_expect_continue(header: &mut RequestHeader) -> bool {
    let continues = header
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    header.remove_header(&EXPECT);
    continues && header.version == Version::HTTP_11
}

/// After buffering `length` bytes: the upstream gets one `Content-Length` and no coding.
pub fn set_buffered_length(header: &mut RequestHeader, length: usize) -> pingora::Result<()> {
    header.remove_header(&TRANSFER_ENCODING);
    header.insert_header(CONTENT_LENGTH, length.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFFERED: BodyPolicy = BodyPolicy {
        buffering: true,
        max_size: Some(1024),
    };

    #[test]
    fn buffering_is_the_default_except_for_grpc_and_upgrades() {
        assert_eq!(
            mode(&BUFFERED, true, false, false),
            BodyMode::Buffer { max: 1024 }
        );
        assert_eq!(mode(&BUFFERED, false, false, false), BodyMode::Empty);
        assert_eq!(
            mode(&BUFFERED, true, true, false),
            BodyMode::Stream { max: None }
        );
        assert_eq!(
            mode(&BUFFERED, true, false, true),
            BodyMode::Stream { max: None }
        );
        let streaming = BodyPolicy {
            buffering: false,
            max_size: None,
        };
        assert_eq!(
            mode(&streaming, true, false, false),
            BodyMode::Stream { max: None }
        );
    }

    #[test]
    fn declared_lengths_and_expect() {
        let mut header = RequestHeader::build("POST", b"/", None).expect("header");
        header
            .insert_header("content-length", "2048")
            .expect("length");
        assert!(declared_too_large(&header, Some(1024)));
        assert!(!declared_too_large(&header, Some(4096)));
        assert!(!declared_too_large(&header, None));
        header
            .insert_header("expect", "100-Continue")
            .expect("expect");
        assert!(take_expect_continue(&mut header));
        assert!(header.headers.get("expect").is_none());
        header.set_version(Version::HTTP_10);
        header
            .insert_header("expect", "100-continue")
            .expect("expect");
        assert!(
            !take_expect_continue(&mut header),
            "no 100 for HTTP/1.0, as nginx"
        );
    }
}
