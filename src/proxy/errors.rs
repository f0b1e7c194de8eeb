//! Which status a failed request gets, and the small JSON body sluice answers errors with.

use pingora::{Error, ErrorSource, ErrorType};

/// The status logged for a request whose client closed its connection before the response
/// head was sent: nothing can be sent. nginx's 499, which ingress-nginx dashboards expect.
pub const CLIENT_CLOSED: u16 = 499;

/// The status for a request that failed with `e`; [`CLIENT_CLOSED`] when the client is gone
/// and nothing can be sent.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ if is_timeout(e) && e.esource() == &ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    CLIENT_CLOSED
                }
                // The client's body stalled longer than `requests.body_read_timeout`.
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Whether `e` is a connect, read or write timeout.
pub fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout
    )
}

/// Whether `e` is a failure to write the request head upstream (Pingora's context for the
/// write and the flush of the head): no byte of the request reached the upstream
/// application.
pub fn is_request_head_unsent(e: &Error) -> bool {
    e.esource() == &ErrorSource::Upstream
        && e.etype() == &ErrorType::WriteError
        && e.context.as_ref().is_some_and(|c| {
            let c = c.as_str();
            c.starts_with("while writing request headers")
                || c.starts_with("flushing request header")
        })
}

/// What went wrong, in a few words, for an error sluice answers with `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        403 => "forbidden",
        404 => "no route",
        405 => "method not allowed",
        408 => "request timeout",
        413 => "request body too large",
        414 => "request line too long",
        429 => "rate limited",
        499 => "client closed the connection",
        431 => "request header too large",
        501 => "not implemented",
        502 => "bad gateway",
        503 => "no endpoint available",
        504 => "upstream timed out",
        _ => "error",
    }
}

/// Longest part of an error's cause quoted in a log line.
const MAX_CAUSE: usize = 160;

/// `e` in one bounded line for the text log: its kind, then the context of it and of each
/// error it was caused by, then the root cause, cut at [`MAX_CAUSE`] characters each. Never
/// the raw bytes of an invalid response head (Pingora puts the whole head, `Set-Cookie`
/// values included, into an error's context): only the parser's reason.
pub fn summary(e: &Error) -> String {
    let mut line = e.etype().as_str().to_string();
    let mut current = Some(e);
    let mut depth = 0;
    while let Some(error) = current.take() {
        match &error.context {
            Some(context) if context.as_str().starts_with("buf:") => {}
            Some(context) => {
                line.push_str(if depth == 0 { ": " } else { "; " });
                push_bounded(&mut line, context.as_str());
            }
            // A cause without context says what it is by its kind alone.
            None if depth > 0 => {
                line.push_str("; ");
                line.push_str(error.etype().as_str());
            }
            None => {}
        }
        let Some(cause) = &error.cause else { break };
        depth += 1;
        let inner = cause
            .downcast_ref::<Error>()
            .or_else(|| cause.downcast_ref::<Box<Error>>().map(|b| b.as_ref()));
        match inner {
            Some(inner) if depth < 4 => current = Some(inner),
            Some(inner) => {
                line.push_str("; ");
                line.push_str(inner.etype().as_str());
            }
            None => {
                line.push_str("; cause: ");
                push_bounded(&mut line, cause.to_string().trim());
            }
        }
    }
    line
}

/// Appends `text` on one line, cut at [`MAX_CAUSE`] characters.
fn push_bounded(line: &mut String, text: &str) {
    let mut chars = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    line.extend(chars.by_ref().take(MAX_CAUSE));
    if chars.next().is_some() {
        line.push('…');
    }
}

/// The metric reason of a request head Pingora's parser refused with `status`.
pub fn head_rejection_reason(status: u16) -> &'static str {
    match status {
        408 => "header_timeout",
        414 => "request_line_too_long",
        431 => "header_too_large",
        _ => "malformed_head",
    }
}

/// `{"status":502,"error":"bad gateway","request_id":"..."}`
pub fn json_body(status: u16, request_id: &str) -> String {
    serde_json::json!({ "status": status, "error": reason(status), "request_id": request_id })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    #[test]
    fn summaries_are_bounded_and_never_quote_a_raw_head() {
        let cookie = "HTTP/1.1 200 OK\r\nSet-Cookie: session=SECRET\r\nX: ".to_string()
            + &"a".repeat(300_000);
        let invalid = Error::because(
            ErrorType::InvalidHTTPHeader,
            format!("buf: {}", cookie.escape_default()),
            Error::new_str("invalid header name"),
        );
        assert_eq!(summary(&invalid), "InvalidHTTPHeader; invalid header name");
        // As Pingora wraps it: the peer in the outer context, the head in the inner one.
        let wrapped = Error::because(ErrorType::InvalidHTTPHeader, "peer: 10.0.0.1:80", invalid);
        assert_eq!(
            summary(&wrapped),
            "InvalidHTTPHeader: peer: 10.0.0.1:80; invalid header name"
        );
        let long = Error::explain(ErrorType::ConnectRefused, "x\n".repeat(500));
        let line = summary(&long);
        assert!(line.len() < 400 && !line.contains('\n'), "{line}");
        assert!(line.starts_with("ConnectRefused: x x"), "{line}");
    }

    #[test]
    fn upstream_timeouts_are_504_other_upstream_errors_502() {
        assert_eq!(
            status_for(&error(ErrorType::ReadTimedout, ErrorSource::Upstream)),
            504
        );
        assert_eq!(
            status_for(&error(ErrorType::ConnectTimedout, ErrorSource::Upstream)),
            504
        );
        assert_eq!(
            status_for(&error(ErrorType::ConnectRefused, ErrorSource::Upstream)),
            502
        );
        assert_eq!(
            status_for(&error(ErrorType::ConnectionClosed, ErrorSource::Upstream)),
            502
        );
    }

    #[test]
    fn only_a_failed_request_head_write_upstream_is_unsent() {
        let broken = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let head = Error::because(
            ErrorType::WriteError,
            "while writing request headers",
            broken(),
        )
        .into_up();
        assert!(is_request_head_unsent(&head));
        let flush = Error::because(ErrorType::WriteError, "flushing request header", broken());
        assert!(is_request_head_unsent(&flush.into_up()));
        let body = Error::because(ErrorType::WriteError, "while writing body", broken());
        assert!(!is_request_head_unsent(&body.into_up()));
        let downstream = Error::because(
            ErrorType::WriteError,
            "while writing request headers",
            broken(),
        );
        assert!(!is_request_head_unsent(&downstream.into_down()));
    }

    #[test]
    fn explicit_status_downstream_and_internal_errors() {
        assert_eq!(
            status_for(&error(ErrorType::HTTPStatus(503), ErrorSource::Internal)),
            503
        );
        assert_eq!(
            status_for(&error(
                ErrorType::InvalidHTTPHeader,
                ErrorSource::Downstream
            )),
            400
        );
        assert_eq!(
            status_for(&error(ErrorType::ConnectionClosed, ErrorSource::Downstream)),
            CLIENT_CLOSED
        );
        assert_eq!(
            status_for(&error(ErrorType::InternalError, ErrorSource::Internal)),
            500
        );
    }

    #[test]
    fn body_names_the_error_and_request() {
        let body: serde_json::Value =
            serde_json::from_str(&json_body(504, "abc")).expect("json body");
        assert_eq!(body["error"], "upstream timed out");
        assert_eq!(body["request_id"], "abc");
    }
}
