//! Misdirected requests (RFC 9110 §15.5.20, Gateway API's
//! `GatewayHTTPSListenerDetectMisdirectedRequests`).
//!
//! One TLS listener may serve several Gateway listeners, each taking the names of its
//! `hostname` (or every name). The connection's server name (SNI) chose among them when the
//! handshake picked a certificate; a client that reuses the connection for a host another of
//! them takes (HTTP/2 connection coalescing, a certificate covering both) would be served
//! under the wrong listener's certificate and policy. Such a request is answered 421, which
//! tells the client to open a connection of its own for that host.

use crate::model::HostMatch;

/// Whether a request for `host` on a connection whose server name is `server_name` belongs
/// to another of `scopes` (the Gateway listeners' hostnames; `None` takes any name) than the
/// one the server name chose. A connection without server name, or whose name no scope
/// takes, chose none, so nothing it carries is misdirected. Both names are lower-case.
pub fn misdirected(scopes: &[Option<HostMatch>], server_name: Option<&str>, host: &str) -> bool {
    let Some(chosen) = server_name.and_then(|name| most_specific(scopes, name)) else {
        return false;
    };
    most_specific(scopes, host) != Some(chosen)
}

/// The scope that takes `name`: the exact name, else the longest wildcard suffix, else the
/// one taking any name.
fn most_specific<'a>(scopes: &'a [Option<HostMatch>], name: &str) -> Option<&'a Option<HostMatch>> {
    let mut best: Option<(usize, &Option<HostMatch>)> = None;
    for scope in scopes {
        let rank = match scope {
            Some(HostMatch::Exact(exact)) if exact == name => usize::MAX,
            Some(HostMatch::Suffix(suffix))
                if name.len() > suffix.len() && name.ends_with(suffix.as_str()) =>
            {
                suffix.len()
            }
            None => 0,
            Some(_) => continue,
        };
        if best.is_none_or(|(r, _)| rank > r) {
            best = Some((rank, scope));
        }
    }
    best.map(|(_, scope)| scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Gateway of the conformance test: a listener for any name, one for
    /// second-example.org, one for *.wildcard.org and one for fourth-example.wildcard.org.
    fn scopes() -> Vec<Option<HostMatch>> {
        vec![
            None,
            Some(HostMatch::Exact("second-example.org".into())),
            Some(HostMatch::Suffix(".wildcard.org".into())),
            Some(HostMatch::Exact("fourth-example.wildcard.org".into())),
        ]
    }

    #[test]
    fn a_host_of_another_listener_than_the_server_name_is_misdirected() {
        let scopes = scopes();
        // (server name, host, misdirected), as HTTPRouteHTTPSListenerDetectMisdirectedRequests.
        let cases = [
            ("example.org", "example.org", false),
            ("example.org", "second-example.org", true),
            ("example.org", "unknown-example.org", false),
            ("second-example.org", "second-example.org", false),
            ("second-example.org", "example.org", true),
            ("second-example.org", "unknown-example.org", true),
            (
                "third-example.wildcard.org",
                "third-example.wildcard.org",
                false,
            ),
            (
                "third-example.wildcard.org",
                "fith-example.wildcard.org",
                false,
            ),
            (
                "third-example.wildcard.org",
                "fourth-example.wildcard.org",
                true,
            ),
            ("third-example.wildcard.org", "second-example.org", true),
            (
                "fourth-example.wildcard.org",
                "fourth-example.wildcard.org",
                false,
            ),
            (
                "fourth-example.wildcard.org",
                "fith-example.wildcard.org",
                true,
            ),
            ("unknown-example.org", "example.org", false),
        ];
        for (server_name, host, expected) in cases {
            assert_eq!(
                misdirected(&scopes, Some(server_name), host),
                expected,
                "SNI {server_name}, Host {host}"
            );
        }
    }

    #[test]
    fn without_server_name_or_a_scope_for_it_nothing_is_misdirected() {
        let scopes = scopes();
        assert!(!misdirected(&scopes, None, "second-example.org"));
        let narrow = &scopes[1..];
        assert!(!misdirected(
            narrow,
            Some("other.org"),
            "second-example.org"
        ));
        assert!(misdirected(narrow, Some("second-example.org"), "other.org"));
        // A wildcard does not take its own suffix's name.
        assert!(misdirected(narrow, Some("a.wildcard.org"), "wildcard.org"));
    }
}
