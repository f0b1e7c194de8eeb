//! Who the client is: the peer of the connection, or, when that peer is a trusted proxy
//! (a cloud load balancer), the address the forwarding headers name, as nginx's realip
//! module finds it with `real_ip_recursive on`.

use crate::model::IpNet;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// The client's address. From a peer in `trusted`, the forwarding chain (`X-Forwarded-For`,
/// else `Forwarded: for=`, else `X-Real-IP`) is read right to left, skipping trusted
/// proxies: the first address that is not one is the client (one a client wrote itself
/// further left is ignored). A chain of trusted proxies only gives its left-most address;
/// an entry that is not an address stops the walk at the hop that sent it.
pub fn client_ip(
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    request: &RequestHeader,
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let chain = forwarding_chain(request);
    let mut client = peer;
    for entry in chain.iter().rev() {
        let Some(ip) = parse_hop(entry) else {
            return Some(client);
        };
        client = ip;
        if !is_trusted(ip) {
            return Some(ip);
        }
    }
    Some(client)
}

/// The addresses of the forwarding headers, left (the first hop) to right.
fn forwarding_chain(request: &RequestHeader) -> Vec<&str> {
    let values = |name: &str| -> Vec<&str> {
        request
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    };
    let forwarded_for = values("x-forwarded-for");
    if !forwarded_for.is_empty() {
        return forwarded_for;
    }
    let forwarded: Vec<&str> = values("forwarded")
        .into_iter()
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.eq_ignore_ascii_case("for").then_some(value)
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-real-ip")
}

/// An address of a chain entry: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`,
/// `"[2001:db8::1]:4711"` (`Forwarded` quotes); `None` for `unknown` or garbage.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches('"');
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        crate::routing::test_request("GET", "/", headers)
    }

    fn client(peer: &str, trusted: &[&str], headers: &[(&str, &str)]) -> Option<IpAddr> {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().expect("net")).collect();
        client_ip(
            Some(peer.parse().expect("peer")),
            &trusted,
            &request(headers),
        )
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("ip"))
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let xff = [("x-forwarded-for", "203.0.113.7")];
        assert_eq!(client("10.0.0.1", &["10.0.0.0/8"], &xff), ip("203.0.113.7"));
        assert_eq!(client("192.0.2.1", &["10.0.0.0/8"], &xff), ip("192.0.2.1"));
        assert_eq!(client("10.0.0.1", &[], &xff), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        let spoofed = [("x-forwarded-for", "1.1.1.1, 203.0.113.7")];
        assert_eq!(client("10.0.0.1", &trusted, &spoofed), ip("203.0.113.7"));
        let hops = [
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
        ];
        assert_eq!(client("10.0.0.1", &trusted, &hops), ip("203.0.113.7"));
        let all_trusted = [("x-forwarded-for", "10.9.9.9, 10.1.1.1")];
        assert_eq!(client("10.0.0.1", &trusted, &all_trusted), ip("10.9.9.9"));
        let garbage = [("x-forwarded-for", "203.0.113.7, nonsense, 10.1.1.1")];
        assert_eq!(client("10.0.0.1", &trusted, &garbage), ip("10.1.1.1"));
    }

    #[test]
    fn forwarded_and_x_real_ip_are_read_when_there_is_no_x_forwarded_for() {
        let trusted = ["10.0.0.0/8"];
        let forwarded = [(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"",
        )];
        assert_eq!(client("10.0.0.1", &trusted, &forwarded), ip("2001:db8::1"));
        let real = [("x-real-ip", "198.51.100.4")];
        assert_eq!(client("10.0.0.1", &trusted, &real), ip("198.51.100.4"));
        let with_port = [("x-forwarded-for", "198.51.100.4:5555")];
        assert_eq!(client("10.0.0.1", &trusted, &with_port), ip("198.51.100.4"));
    }
}
