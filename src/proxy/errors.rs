//! Which status a failed request gets, and the small JSON body sluice answers errors with.

use pingora::{Error, ErrorSource, ErrorType};

/// The status for a request that failed with `e`; 0 when the client is gone and nothing can
/// be sent.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ if is_timeout(e) && e.esource() == &ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
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

/// What went wrong, in a few words, for an error sluice answers with `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        404 => "no route",
        429 => "rate limited",
        502 => "bad gateway",
        503 => "no endpoint available",
        504 => "upstream timed out",
        _ => "error",
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
            0
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
