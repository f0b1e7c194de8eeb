//! Request routing: listener → host → path → route.
//!
//! Precedence, decided once when the table is built:
//! - host: an exact name beats the longest matching `*.suffix` wildcard, which beats routes
//!   without hosts. Only the most specific host group that exists is searched, as nginx
//!   picks one `server` block (a path missing there is a 404, never a fall-through to
//!   another host's routes).
//! - path, within that group: exact, then the longest prefix, then regexes in config order.

pub(crate) mod rate_limit;

use crate::model::{HostMatch, PathMatch, RouteConfig};
use pingora::http::RequestHeader;
use regex::Regex;
use std::collections::HashMap;

/// Index of a route in the snapshot's route list.
pub type RouteId = usize;

/// The routes of one listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    suffix_hosts: Vec<(String, PathTable)>,
    any_host: Option<PathTable>,
}

/// The routes of one host group.
#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<Box<[u8]>, RouteId>,
    /// Longest prefix first.
    prefixes: Vec<(Box<[u8]>, RouteId)>,
    /// In config order.
    regexes: Vec<(Regex, RouteId)>,
}

impl PathTable {
    fn add(&mut self, path: &PathMatch, route: RouteId) {
        match path {
            PathMatch::Exact(p) => {
                self.exact.entry(p.as_bytes().into()).or_insert(route);
            }
            PathMatch::Prefix(p) => self.prefixes.push((p.as_bytes().into(), route)),
            PathMatch::Regex(r) => self.regexes.push((r.clone(), route)),
        }
    }

    fn finish(&mut self) {
        // Stable sort keeps config order among equal lengths.
        self.prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    fn find(&self, path: &[u8]) -> Option<RouteId> {
        if let Some(route) = self.exact.get(path) {
            return Some(*route);
        }
        if let Some((_, route)) = self.prefixes.iter().find(|(p, _)| path.starts_with(p)) {
            return Some(*route);
        }
        let path = std::str::from_utf8(path).ok()?;
        self.regexes
            .iter()
            .find(|(r, _)| r.is_match(path))
            .map(|(_, route)| *route)
    }
}

impl RouteTable {
    /// Builds the table of `listener` from all routes (routes of other listeners are skipped).
    pub fn build(listener: &str, routes: &[RouteConfig]) -> Self {
        let mut table = Self::default();
        let mut suffixes: HashMap<String, PathTable> = HashMap::new();
        for (id, route) in routes.iter().enumerate() {
            if route.listener != listener {
                continue;
            }
            let every_path = [PathMatch::Prefix("/".into())];
            let paths = if route.paths.is_empty() {
                &every_path[..]
            } else {
                &route.paths
            };
            if route.hosts.is_empty() {
                let group = table.any_host.get_or_insert_with(PathTable::default);
                paths.iter().for_each(|p| group.add(p, id));
            }
            for host in &route.hosts {
                let group = match host {
                    HostMatch::Exact(name) => table.exact_hosts.entry(name.clone()).or_default(),
                    HostMatch::Suffix(suffix) => suffixes.entry(suffix.clone()).or_default(),
                };
                paths.iter().for_each(|p| group.add(p, id));
            }
        }
        table.suffix_hosts = suffixes.into_iter().collect();
        table
            .suffix_hosts
            .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        table.exact_hosts.values_mut().for_each(PathTable::finish);
        table.suffix_hosts.iter_mut().for_each(|(_, t)| t.finish());
        if let Some(t) = table.any_host.as_mut() {
            t.finish()
        }
        table
    }

    /// The route for `host` (lower-case, no port) and `path` (without query), if any.
    pub fn find(&self, host: &str, path: &[u8]) -> Option<RouteId> {
        let group = self
            .exact_hosts
            .get(host)
            .or_else(|| {
                self.suffix_hosts
                    .iter()
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .map(|(_, t)| t)
            })
            .or(self.any_host.as_ref())?;
        group.find(path)
    }
}

/// The request's host without port: the URI authority (HTTP/2, absolute-form) or `Host`.
pub fn request_host(header: &RequestHeader) -> &str {
    let authority = header.uri.host().or_else(|| {
        header
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    strip_port(authority.unwrap_or_default())
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or_default();
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimeoutOverrides;

    fn route(name: &str, hosts: &[&str], paths: Vec<PathMatch>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            origin: crate::model::Origin::object("Test", "default", name),
            listener: "web".into(),
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                    None => HostMatch::Exact(h.to_string()),
                })
                .collect(),
            paths,
            upstream: "u".into(),
            timeouts: TimeoutOverrides::default(),
            rate_limit: None,
            body: crate::model::BodyPolicy {
                buffering: false,
                max_size: None,
            },
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    #[test]
    fn path_precedence_exact_then_longest_prefix_then_regex() {
        let routes = vec![
            route(
                "re",
                &[],
                vec![PathMatch::Regex(
                    Regex::new("^/api/v[0-9]+/x$").expect("re"),
                )],
            ),
            route("short", &[], vec![prefix("/api")]),
            route("long", &[], vec![prefix("/api/v1")]),
            route("exact", &[], vec![PathMatch::Exact("/api/v1/x".into())]),
        ];
        let table = RouteTable::build("web", &routes);
        assert_eq!(table.find("a", b"/api/v1/x"), Some(3));
        assert_eq!(table.find("a", b"/api/v1/y"), Some(2));
        assert_eq!(table.find("a", b"/api/v2/x"), Some(1));
        assert_eq!(table.find("a", b"/other"), None);
    }

    #[test]
    fn host_precedence_and_no_fall_through() {
        let routes = vec![
            route("any", &[], vec![prefix("/")]),
            route("wild", &["*.example.com"], vec![prefix("/")]),
            route("deeper", &["*.shop.example.com"], vec![prefix("/")]),
            route("exact", &["shop.example.com"], vec![prefix("/only")]),
        ];
        let table = RouteTable::build("web", &routes);
        assert_eq!(table.find("shop.example.com", b"/only/x"), Some(3));
        assert_eq!(
            table.find("shop.example.com", b"/"),
            None,
            "exact host group has no /"
        );
        assert_eq!(table.find("a.shop.example.com", b"/"), Some(2));
        assert_eq!(table.find("a.b.example.com", b"/"), Some(1));
        assert_eq!(
            table.find("example.com", b"/"),
            Some(0),
            "wildcard needs a label"
        );
        assert_eq!(table.find("other.org", b"/"), Some(0));
    }

    #[test]
    fn other_listeners_routes_are_ignored() {
        let mut other = route("x", &[], vec![prefix("/")]);
        other.listener = "admin".into();
        assert_eq!(RouteTable::build("web", &[other]).find("a", b"/"), None);
    }

    #[test]
    fn host_comes_without_port_and_from_authority() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("req");
        req.insert_header("Host", "Shop.example.com:8080")
            .expect("host");
        assert_eq!(request_host(&req), "Shop.example.com");
        let mut req = RequestHeader::build("GET", b"/x", None).expect("req");
        req.insert_header("Host", "[::1]:80").expect("host");
        assert_eq!(request_host(&req), "::1");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
