//! Request routing: listener → host → path and conditions → route.
//!
//! Precedence, decided once when the table is built:
//! - host: an exact name beats the longest matching `*.suffix` wildcard, which beats routes
//!   without hosts. Only the most specific host group that exists is searched, as nginx
//!   picks one `server` block (a path missing there is a 404, never a fall-through to
//!   another host's routes).
//! - path, within that group: an exact path, then regexes in the model's order (nginx
//!   checks regex locations before prefixes too, so a catch-all `/` does not hide them),
//!   then the longest prefix (plain or segment), as Gateway API orders HTTPRoute matches
//!   (which leaves regexes to the implementation; Envoy Gateway also puts them between
//!   exact paths and prefixes). Among routes of
//!   the same path, one with methods beats one without, then more header conditions win,
//!   then more query conditions, then the order of the model (the file first, then the
//!   oldest object). A request whose conditions fail on one path falls through to the
//!   next: a header-matched exact route does not hide the prefix route below it.

pub mod auth;
pub mod backends;
pub mod concurrency;
pub mod conditions;
pub mod cors;
pub mod filters;
pub mod misdirected;

use crate::model::{Conditions, HostMatch, PathMatch, ReservedHost, RouteConfig};
use pingora::http::RequestHeader;
use regex::Regex;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a route in the snapshot's route list.
pub type RouteId = usize;

/// The route a request matched, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub route: RouteId,
    /// Bytes of the path the route's prefix matched (for prefix rewrites); `None` when an
    /// exact path or a regex matched.
    pub prefix_len: Option<usize>,
}

/// The routes of one listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    suffix_hosts: Vec<(String, PathTable)>,
    any_host: Option<PathTable>,
    /// The listener's default backend, for requests no other route takes.
    fallback: Option<RouteId>,
}

/// A route with its conditions, in the order candidates of one path are tried.
#[derive(Debug, Clone)]
struct Candidate {
    route: RouteId,
    conditions: Conditions,
}

impl Candidate {
    /// Gateway API's order among matches of the same path: methods, more headers, more
    /// query parameters, then the model's order (the sort is stable).
    fn rank(&self) -> (bool, Reverse<usize>, Reverse<usize>) {
        let c = &self.conditions;
        (
            c.methods.is_empty(),
            Reverse(c.headers.len()),
            Reverse(c.query.len()),
        )
    }

    fn admits(&self, request: &RequestHeader) -> bool {
        self.conditions.is_empty() || conditions::admits(&self.conditions, request)
    }
}

/// How a prefix matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrefixKind {
    Plain,
    Segment,
}

/// A prefix path of a route.
#[derive(Debug)]
struct Prefix {
    /// What the path must start with (a segment prefix without its trailing `/`).
    bytes: Box<[u8]>,
    kind: PrefixKind,
    /// Its length as written, which orders prefixes: `segment_prefix: /` is as long as
    /// `prefix: /`.
    written_len: usize,
    candidate: Candidate,
}

/// The routes of one host group.
#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<Box<[u8]>, Vec<Candidate>>,
    /// Longest prefix (as written) first, then by rank.
    prefixes: Vec<Prefix>,
    /// In the model's order (routes of one regex ranked among themselves).
    regexes: Vec<(Regex, Candidate)>,
}

impl PathTable {
    fn add(&mut self, path: &PathMatch, candidate: Candidate) {
        match path {
            PathMatch::Exact(p) => self
                .exact
                .entry(p.as_bytes().into())
                .or_default()
                .push(candidate),
            PathMatch::Prefix(p) => self.prefixes.push(Prefix {
                bytes: p.as_bytes().into(),
                kind: PrefixKind::Plain,
                written_len: p.len(),
                candidate,
            }),
            PathMatch::SegmentPrefix(p) => self.prefixes.push(Prefix {
                bytes: p.trim_end_matches('/').as_bytes().into(),
                kind: PrefixKind::Segment,
                written_len: p.len(),
                candidate,
            }),
            PathMatch::Regex(r) => self.regexes.push((r.clone(), candidate)),
        }
    }

    fn finish(&mut self) {
        // Stable sorts keep the model's order among equals.
        self.exact
            .values_mut()
            .for_each(|candidates| candidates.sort_by_key(Candidate::rank));
        self.prefixes
            .sort_by_key(|p| (Reverse(p.written_len), p.candidate.rank()));
        // Routes of the same regex are ranked among themselves, at the first one's place.
        let mut first_of: HashMap<String, usize> = HashMap::new();
        let groups: Vec<usize> = self
            .regexes
            .iter()
            .enumerate()
            .map(|(i, (r, _))| *first_of.entry(r.as_str().to_string()).or_insert(i))
            .collect();
        let mut ranked: Vec<_> = std::mem::take(&mut self.regexes)
            .into_iter()
            .zip(groups)
            .collect();
        ranked.sort_by_key(|((_, c), group)| (*group, c.rank()));
        self.regexes = ranked.into_iter().map(|(regex, _)| regex).collect();
    }

    fn find(&self, path: &[u8], request: &RequestHeader) -> Option<Found> {
        if let Some(candidates) = self.exact.get(path) {
            if let Some(c) = candidates.iter().find(|c| c.admits(request)) {
                return Some(Found {
                    route: c.route,
                    prefix_len: None,
                });
            }
        }
        // Regexes need the path as text: checked only when there are any.
        let text = (!self.regexes.is_empty())
            .then(|| std::str::from_utf8(path).ok())
            .flatten();
        if let Some(text) = text {
            let regex = self
                .regexes
                .iter()
                .find(|(r, c)| r.is_match(text) && c.admits(request));
            if let Some((_, c)) = regex {
                return Some(Found {
                    route: c.route,
                    prefix_len: None,
                });
            }
        }
        let found = self.prefixes.iter().find(|prefix| {
            let p = &prefix.bytes;
            let matched = match prefix.kind {
                PrefixKind::Plain => path.starts_with(p),
                // `/api` takes `/api` and `/api/...`; the root (empty here) takes all.
                PrefixKind::Segment => {
                    path.starts_with(p) && matches!(path.get(p.len()), None | Some(b'/'))
                }
            };
            matched && prefix.candidate.admits(request)
        })?;
        // A prefix's trailing `/` stays with the rest of the path, so replacing `/api/`
        // (or `/`) by `/v2` keeps the separator: `/api/x` becomes `/v2/x`.
        let p = &found.bytes;
        let trailing_slash = usize::from(p.last() == Some(&b'/'));
        Some(Found {
            route: found.candidate.route,
            prefix_len: Some(p.len() - trailing_slash),
        })
    }
}

impl RouteTable {
    /// Builds the table of `listener` from all routes (routes of other listeners are
    /// skipped), with a group for each host `reserved` on it even if no route names it.
    pub fn build(listener: &str, routes: &[Arc<RouteConfig>], reserved: &[ReservedHost]) -> Self {
        let mut table = Self::default();
        let mut suffixes: HashMap<String, PathTable> = HashMap::new();
        for reserved in reserved.iter().filter(|r| r.listener == listener) {
            match &reserved.host {
                HostMatch::Exact(name) => table.exact_hosts.entry(name.clone()).or_default(),
                HostMatch::Suffix(suffix) => suffixes.entry(suffix.clone()).or_default(),
            };
        }
        for (id, route) in routes.iter().enumerate() {
            if route.listener != listener {
                continue;
            }
            if route.fallback {
                table.fallback = Some(id);
                continue;
            }
            let every_path = [PathMatch::Prefix("/".into())];
            let paths = if route.paths.is_empty() {
                &every_path[..]
            } else {
                &route.paths
            };
            let candidate = Candidate {
                route: id,
                conditions: route.conditions.clone(),
            };
            let add_all = |group: &mut PathTable| {
                paths.iter().for_each(|p| group.add(p, candidate.clone()));
            };
            if route.hosts.is_empty() {
                add_all(table.any_host.get_or_insert_with(PathTable::default));
            }
            for host in &route.hosts {
                add_all(match host {
                    HostMatch::Exact(name) => table.exact_hosts.entry(name.clone()).or_default(),
                    HostMatch::Suffix(suffix) => suffixes.entry(suffix.clone()).or_default(),
                });
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

    /// The route for `host` (lower-case, no port), `path` (normalised, without query) and
    /// the rest of `request` (method, headers, query), if any.
    pub fn find(&self, host: &str, path: &[u8], request: &RequestHeader) -> Option<Found> {
        self.find_route(host, path, request)
            .or(self.fallback.map(|route| Found {
                route,
                prefix_len: None,
            }))
    }

    fn find_route(&self, host: &str, path: &[u8], request: &RequestHeader) -> Option<Found> {
        self.host_group(host)?.find(path, request)
    }

    /// The route of a connection to a tcp listener that routes by TLS server name: the
    /// route of `server_name` by the same host precedence as requests (exact, longest
    /// wildcard, then the route without hosts, which also takes connections that send no
    /// name). On a listener without server names, its one route.
    pub fn find_server_name(&self, server_name: Option<&str>) -> Option<RouteId> {
        let group = match server_name {
            Some(name) => self.host_group(name),
            None => self.any_host.as_ref(),
        }?;
        // Routes of a tcp listener have no paths or conditions: one candidate at `/`.
        group.prefixes.first().map(|p| p.candidate.route)
    }

    /// The most specific host group that takes `host`.
    fn host_group(&self, host: &str) -> Option<&PathTable> {
        self.exact_hosts
            .get(host)
            .or_else(|| {
                self.suffix_hosts
                    .iter()
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .map(|(_, t)| t)
            })
            .or(self.any_host.as_ref())
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

/// A request for unit tests: `method target` with `headers`, in order.
#[cfg(test)]
pub(crate) fn test_request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut request = RequestHeader::build(method, target.as_bytes(), None).expect("request");
    for (name, value) in headers {
        request
            .append_header(name.to_string(), *value)
            .expect("header");
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeaderMatch, QueryMatch, ValueMatch};

    fn route(name: &str, hosts: &[&str], paths: Vec<PathMatch>) -> RouteConfig {
        let origin = crate::model::Origin::object("Test", "default", name);
        let mut route = RouteConfig::new(name, origin, "web", "u");
        route.hosts = hosts
            .iter()
            .map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                None => HostMatch::Exact(h.to_string()),
            })
            .collect();
        route.paths = paths;
        route
    }

    /// The routes as the model shares them.
    fn shared(routes: &[RouteConfig]) -> Vec<Arc<RouteConfig>> {
        routes.iter().cloned().map(Arc::new).collect()
    }

    impl RouteTable {
        /// The route of a plain `GET path` to `host`.
        fn route_of(&self, host: &str, path: &[u8]) -> Option<RouteId> {
            let request = RequestHeader::build("GET", path, None).expect("request");
            self.find(host, path, &request).map(|found| found.route)
        }
    }

    use super::test_request as request;

    #[test]
    fn server_names_take_the_most_specific_route() {
        let routes = vec![
            route("exact", &["db.example.com"], vec![]),
            route("wild", &["*.example.com"], vec![]),
            route("deeper", &["*.eu.example.com"], vec![]),
            route("other", &[], vec![]),
        ];
        let table = RouteTable::build("web", &shared(&routes), &[]);
        let name = |n: Option<&str>| table.find_server_name(n).map(|id| routes[id].name.clone());
        assert_eq!(name(Some("db.example.com")).as_deref(), Some("exact"));
        assert_eq!(name(Some("shop.example.com")).as_deref(), Some("wild"));
        assert_eq!(name(Some("a.eu.example.com")).as_deref(), Some("deeper"));
        assert_eq!(name(Some("example.com")).as_deref(), Some("other"));
        assert_eq!(name(None).as_deref(), Some("other"));
        let without_default = RouteTable::build("web", &shared(&routes[..3]), &[]);
        assert_eq!(without_default.find_server_name(Some("example.com")), None);
        assert_eq!(without_default.find_server_name(None), None);
    }

    fn header(name: &str, value: &str) -> HeaderMatch {
        HeaderMatch {
            name: http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value: ValueMatch::Exact(value.into()),
        }
    }

    fn query(name: &str, value: &str) -> QueryMatch {
        QueryMatch {
            name: name.into(),
            value: ValueMatch::Exact(value.into()),
        }
    }

    #[test]
    fn segment_prefixes_match_whole_segments() {
        let routes = vec![
            route("api", &[], vec![PathMatch::SegmentPrefix("/api/".into())]),
            route("root", &[], vec![PathMatch::SegmentPrefix("/".into())]),
        ];
        let table = RouteTable::build("web", &shared(&routes), &[]);
        assert_eq!(table.route_of("a", b"/api"), Some(0));
        assert_eq!(table.route_of("a", b"/api/x"), Some(0));
        assert_eq!(table.route_of("a", b"/apix"), Some(1));
        let found = table.find("a", b"/api/x", &request("GET", "/api/x", &[]));
        assert_eq!(found.and_then(|f| f.prefix_len), Some(4));
    }

    #[test]
    fn among_routes_of_one_path_methods_then_headers_then_query_then_order_win() {
        let mut plain = route("plain", &[], vec![prefix("/p")]);
        let mut one_query = route("one_query", &[], vec![prefix("/p")]);
        one_query.conditions.query = vec![query("q", "1")];
        let mut one_header = route("one_header", &[], vec![prefix("/p")]);
        one_header.conditions.headers = vec![header("x-a", "1")];
        let mut two_headers = route("two_headers", &[], vec![prefix("/p")]);
        two_headers.conditions.headers = vec![header("x-a", "1"), header("x-b", "1")];
        let mut method = route("method", &[], vec![prefix("/p")]);
        method.conditions.methods = vec![http::Method::POST];
        plain.conditions = Default::default();
        let routes = vec![plain, one_query, one_header, two_headers, method];
        let table = RouteTable::build("web", &shared(&routes), &[]);
        let pick = |r: &RequestHeader| table.find("h", b"/p", r).map(|f| f.route);
        let all = [("x-a", "1"), ("x-b", "1")];
        assert_eq!(
            pick(&request("POST", "/p?q=1", &all)),
            Some(4),
            "method first"
        );
        assert_eq!(
            pick(&request("GET", "/p?q=1", &all)),
            Some(3),
            "more headers"
        );
        assert_eq!(
            pick(&request("GET", "/p?q=1", &all[..1])),
            Some(2),
            "headers over query"
        );
        assert_eq!(pick(&request("GET", "/p?q=1", &[])), Some(1), "query");
        assert_eq!(pick(&request("GET", "/p?q=2", &[])), Some(0), "none");
    }

    #[test]
    fn routes_of_one_regex_are_ranked_by_their_conditions() {
        let regex = || PathMatch::Regex(Regex::new("^/x$").expect("regex"));
        let plain = route("plain", &[], vec![regex()]);
        let other = route(
            "other",
            &[],
            vec![PathMatch::Regex(Regex::new("^/y$").expect("re"))],
        );
        let mut posts = route("posts", &[], vec![regex()]);
        posts.conditions.methods = vec![http::Method::POST];
        let table = RouteTable::build("web", &shared(&[plain, other, posts]), &[]);
        let pick = |r: &RequestHeader| table.find("h", b"/x", r).map(|f| f.route);
        assert_eq!(pick(&request("POST", "/x", &[])), Some(2));
        assert_eq!(pick(&request("GET", "/x", &[])), Some(0));
    }

    #[test]
    fn a_route_whose_conditions_fail_falls_through_to_a_shorter_path() {
        let mut exact = route("exact", &[], vec![PathMatch::Exact("/a/b".into())]);
        exact.conditions.headers = vec![header("x-a", "1")];
        let routes = vec![exact, route("prefix", &[], vec![prefix("/a")])];
        let table = RouteTable::build("web", &shared(&routes), &[]);
        let pick = |r: &RequestHeader| table.find("h", b"/a/b", r).map(|f| f.route);
        assert_eq!(pick(&request("GET", "/a/b", &[("x-a", "1")])), Some(0));
        assert_eq!(pick(&request("GET", "/a/b", &[("x-a", "2")])), Some(1));
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    #[test]
    fn path_precedence_exact_then_regex_then_longest_prefix() {
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
        let table = RouteTable::build("web", &shared(&routes), &[]);
        assert_eq!(table.route_of("a", b"/api/v1/x"), Some(3));
        assert_eq!(table.route_of("a", b"/api/v1/y"), Some(2));
        assert_eq!(table.route_of("a", b"/api/v2/x"), Some(0));
        assert_eq!(table.route_of("a", b"/api/v2/y"), Some(1));
        assert_eq!(table.route_of("a", b"/other"), None);
    }

    #[test]
    fn host_precedence_and_no_fall_through() {
        let routes = vec![
            route("any", &[], vec![prefix("/")]),
            route("wild", &["*.example.com"], vec![prefix("/")]),
            route("deeper", &["*.shop.example.com"], vec![prefix("/")]),
            route("exact", &["shop.example.com"], vec![prefix("/only")]),
        ];
        let table = RouteTable::build("web", &shared(&routes), &[]);
        assert_eq!(table.route_of("shop.example.com", b"/only/x"), Some(3));
        assert_eq!(
            table.route_of("shop.example.com", b"/"),
            None,
            "exact host group has no /"
        );
        assert_eq!(table.route_of("a.shop.example.com", b"/"), Some(2));
        assert_eq!(table.route_of("a.b.example.com", b"/"), Some(1));
        assert_eq!(
            table.route_of("example.com", b"/"),
            Some(0),
            "wildcard needs a label"
        );
        assert_eq!(table.route_of("other.org", b"/"), Some(0));
    }

    #[test]
    fn a_reserved_host_without_routes_is_a_404_not_a_broader_groups() {
        let routes = vec![
            route("any", &[], vec![prefix("/")]),
            route("wild", &["*.example.com"], vec![prefix("/")]),
        ];
        let reserve = |host: HostMatch| ReservedHost {
            listener: "web".into(),
            host,
        };
        let reserved = [
            reserve(HostMatch::Exact("admin.example.com".into())),
            reserve(HostMatch::Suffix(".eu.example.com".into())),
            reserve(HostMatch::Exact("elsewhere.org".into())),
        ];
        let table = RouteTable::build("web", &shared(&routes), &reserved);
        assert_eq!(table.route_of("admin.example.com", b"/"), None);
        assert_eq!(table.route_of("db.eu.example.com", b"/"), None);
        assert_eq!(table.route_of("elsewhere.org", b"/"), None);
        assert_eq!(table.route_of("www.example.com", b"/"), Some(1));
        assert_eq!(table.route_of("other.org", b"/"), Some(0));
        // Reserved on another listener: no effect here.
        let mut elsewhere = reserved[0].clone();
        elsewhere.listener = "admin".into();
        let table = RouteTable::build("web", &shared(&routes), &[elsewhere]);
        assert_eq!(table.route_of("admin.example.com", b"/"), Some(1));
    }

    #[test]
    fn other_listeners_routes_are_ignored() {
        let mut other = route("x", &[], vec![prefix("/")]);
        other.listener = "admin".into();
        assert_eq!(
            RouteTable::build("web", &shared(&[other]), &[]).route_of("a", b"/"),
            None
        );
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
