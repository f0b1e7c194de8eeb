//! gRPC awareness: recognising gRPC calls, honouring their `grpc-timeout` deadline, and
//! answering proxy errors the way gRPC clients understand (HTTP 200 with `grpc-status`)
//! instead of an HTTP error page they would report as a protocol error.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use std::time::Duration;

/// Whether the request is a gRPC call (`content-type: application/grpc[+proto|+json|...]`).
pub fn is_grpc(request: &RequestHeader) -> bool {
    request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

/// The call's deadline from `grpc-timeout` (e.g. `250m`, `5S`): at most 8 digits and one
/// unit of H, M, S, m, u or n. `None` when absent or malformed (a malformed deadline is
/// ignored, as gRPC servers do, rather than failing the call).
pub fn timeout(request: &RequestHeader) -> Option<Duration> {
    let text = request.headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// gRPC status codes sluice answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The gRPC status for a call sluice itself fails with HTTP `status`, following gRPC's
/// HTTP-to-gRPC mapping, except: an upstream timeout is the call's deadline
/// (`DEADLINE_EXCEEDED`), and a rate limit is `RESOURCE_EXHAUSTED`, which gRPC clients do
/// not retry by default (`UNAVAILABLE` would invite the retry storm the limit prevents).
pub fn code_for_status(status: u16) -> GrpcCode {
    match status {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        429 => GrpcCode::ResourceExhausted,
        502 | 503 => GrpcCode::Unavailable,
        504 => GrpcCode::DeadlineExceeded,
        _ => GrpcCode::Unknown,
    }
}

/// A trailers-only gRPC response for a call that failed in sluice with HTTP `status`:
/// HTTP 200, `grpc-status`, and a `grpc-message` naming the cause (`message` must be
/// printable ASCII, as grpc-message is percent-encoded).
pub fn error_response(status: u16, message: &str) -> Result<Box<ResponseHeader>> {
    let mut header = ResponseHeader::build(200, Some(4))?;
    header.insert_header("content-type", "application/grpc")?;
    header.insert_header("grpc-status", (code_for_status(status) as u32).to_string())?;
    header.insert_header("grpc-message", percent_encode(message))?;
    header.insert_header("content-length", "0")?;
    Ok(Box::new(header))
}

/// grpc-message encoding: bytes outside printable ASCII, and `%`, as %XX.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("POST", b"/pkg.Svc/Call", None).expect("request");
        for (name, value) in headers {
            request
                .insert_header(name.to_string(), *value)
                .expect("header");
        }
        request
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        assert!(is_grpc(&request(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&request(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&request(&[(
            "content-type",
            "application/grpc-web"
        )])));
        assert!(!is_grpc(&request(&[("content-type", "application/json")])));
        assert!(!is_grpc(&request(&[])));
    }

    #[test]
    fn grpc_timeout_units_and_malformed_values() {
        let of = |v: &str| timeout(&request(&[("grpc-timeout", v)]));
        assert_eq!(of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(of("2M"), Some(Duration::from_secs(120)));
        assert_eq!(of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(of("100u"), Some(Duration::from_micros(100)));
        assert_eq!(of("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(of("123456789m"), None, "more than 8 digits");
        assert_eq!(of("m"), None);
        assert_eq!(of("10x"), None);
        assert_eq!(of("-1S"), None);
        assert_eq!(timeout(&request(&[])), None);
    }

    #[test]
    fn proxy_failures_map_to_grpc_codes() {
        assert_eq!(code_for_status(503), GrpcCode::Unavailable);
        assert_eq!(code_for_status(502), GrpcCode::Unavailable);
        assert_eq!(code_for_status(504), GrpcCode::DeadlineExceeded);
        assert_eq!(code_for_status(429), GrpcCode::ResourceExhausted);
        assert_eq!(code_for_status(404), GrpcCode::Unimplemented);
        assert_eq!(code_for_status(500), GrpcCode::Unknown);
    }

    #[test]
    fn error_response_is_trailers_only_200() {
        let header = error_response(503, "no endpoint 100%").expect("header");
        assert_eq!(header.status.as_u16(), 200);
        assert_eq!(header.headers["grpc-status"], "14");
        assert_eq!(header.headers["grpc-message"], "no endpoint 100%25");
        assert_eq!(header.headers["content-type"], "application/grpc");
    }
}
