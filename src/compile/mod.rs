//! The compiler: joins the fragments of every source into one [`Config`].
//!
//! Fragments are taken one at a time in precedence order (the config file first, then
//! objects by creation time, then namespace/name; see [`Fragment::precedence`]). Each is
//! checked against the listeners and against what the fragments before it claimed: route
//! and upstream names, references to listeners and upstreams (a route uses an upstream of
//! its own fragment or of the config file), and (listener, host, path) triples. A fragment with any problem is rejected as a whole, with every problem, and
//! the others go live: one team's bad object never blocks another team's change. So a
//! conflict is always lost by the later claim, and reported on it; except that a fragment
//! of Gateway API routes leaves a match held before it to its holder and keeps the rest
//! ([`Overlap::Yielded`]).
//!
//! Limits of single values (ranges, counts, the ring size) are checked here for every
//! fragment, with the rules in [`values`] that the config file's own checks use too; parsing
//! (durations, addresses, templates) is each source's. Checks across items live here, once,
//! for every source.

pub mod incremental;
pub mod values;

use crate::model::{
    Auth, Config, Fragment, HostMatch, ListenerConfig, ListenerProtocol, Origin, Overlap,
    PageSource, Problem, Rejected, UpstreamProtocol,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A fragment as offered by a source.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The source's name (`file`, `test`, ...).
    pub source: String,
    pub fragment: Arc<Fragment>,
}

/// The effective model and what did not make it in.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub config: Config,
    /// The origins of the accepted fragments, in precedence order.
    pub accepted: Vec<(String, Origin)>,
    pub rejected: Vec<Rejected>,
}

/// Joins `fragments` onto `settings` (process settings, listeners and the config file's
/// certificates).
pub fn compile(settings: &Config, fragments: &[Offered]) -> Compiled {
    // Ties of precedence go by source, then by offered order (keys of equal width).
    let keyed = fragments.iter().enumerate().map(|(i, offered)| {
        let key = format!("{i:020}");
        (offered.source.clone(), key, offered.fragment.clone())
    });
    incremental::Compilation::full(settings, keyed).compiled()
}

/// What the fragments admitted so far claim.
pub struct Compiler {
    /// Listener names and what routes on them may ask of them.
    listeners: HashMap<String, ListenerFacts>,
    /// Upstream names: protocol and the claiming item.
    upstreams: HashMap<String, (UpstreamProtocol, Option<Origin>)>,
    /// Route names and the claiming item.
    routes: HashMap<String, Origin>,
    /// The route of each tcp listener.
    tcp_routes: HashMap<String, String>,
    /// (listener, host, path) → the route that has it.
    paths: HashMap<(String, String, String), (String, Origin)>,
    /// `redis:` is set, so routes may have a `global_rate_limit`.
    redis: bool,
}

/// What the compiler knows of a listener.
#[derive(Debug, Clone, Copy)]
struct ListenerFacts {
    protocol: ListenerProtocol,
    /// It terminates TLS.
    tls: bool,
    /// It asks clients for certificates (`tls.client_auth`).
    client_certificates: bool,
    /// And checks their issuer against a CA bundle of its own.
    client_ca: bool,
    /// A tcp listener that routes by TLS server name.
    sni_routing: bool,
}

/// What one fragment would add to a [`Compiler`].
#[derive(Default)]
struct Claims<'f> {
    upstreams: HashMap<&'f str, (UpstreamProtocol, &'f Origin)>,
    routes: HashMap<&'f str, &'f Origin>,
    tcp_routes: HashMap<&'f str, &'f str>,
    paths: HashMap<(String, String, String), (&'f str, &'f Origin)>,
    /// A hash of every key the fragment tried to claim, taken or not.
    footprint: Vec<u64>,
    /// A claim was refused because another fragment holds it (not a problem of the
    /// fragment alone).
    conflicted: bool,
    /// A match another fragment holds was left to it ([`Overlap::Yielded`]).
    yielded: bool,
}

impl Claims<'_> {
    fn touch(&mut self, kind: ClaimKind, key: &[&str]) {
        self.footprint.push(claim_hash(kind, key));
    }
}

/// The kinds of keys fragments claim, for [`claim_hash`].
#[derive(Clone, Copy, Hash)]
enum ClaimKind {
    Upstream,
    Route,
    TcpListener,
    Path,
}

/// A key's hash in a fragment's footprint: equal keys hash equal; a collision only makes
/// an incremental compile fall back to a full one.
fn claim_hash(kind: ClaimKind, key: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    kind.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

/// The keys an admitted fragment holds in a [`Compiler`], to release them again.
#[derive(Debug, Clone, Default)]
pub struct OwnedClaims {
    upstreams: Vec<String>,
    routes: Vec<String>,
    tcp_listeners: Vec<String>,
    paths: Vec<(String, String, String)>,
}

/// What [`Compiler::admit_tracked`] found.
pub struct Admission {
    /// The claims now held, or every problem.
    pub result: Result<OwnedClaims, Vec<Problem>>,
    /// Hashes of every key the fragment tried to claim, sorted.
    pub footprint: Vec<u64>,
    /// A claim another fragment holds was refused or yielded: precedence decided it.
    pub conflicted: bool,
    /// The fragment left a match another fragment holds to it: it takes the match if the
    /// holder lets go.
    pub yielded: bool,
}

impl Compiler {
    /// A compiler for fragments served on `listeners`.
    pub fn new(listeners: &[ListenerConfig]) -> Self {
        Self {
            listeners: listeners
                .iter()
                .map(|l| {
                    let facts = ListenerFacts {
                        protocol: l.protocol,
                        tls: l.tls,
                        client_certificates: l.client_auth.is_some(),
                        client_ca: l
                            .client_auth
                            .as_ref()
                            .is_some_and(|a| !a.ca_certificates.is_empty()),
                        sni_routing: l.sni_routing,
                    };
                    (l.name.clone(), facts)
                })
                .collect(),
            upstreams: HashMap::new(),
            routes: HashMap::new(),
            tcp_routes: HashMap::new(),
            paths: HashMap::new(),
            redis: false,
        }
    }

    /// Whether `redis:` is set: without it a route's `global_rate_limit` is refused.
    pub fn with_redis(mut self, configured: bool) -> Self {
        self.redis = configured;
        self
    }

    /// Records that a listener named `name` exists though it could not be built, so that
    /// routes naming it are not also reported.
    pub fn declare_listener(&mut self, name: &str, protocol: ListenerProtocol) {
        let facts = ListenerFacts {
            protocol,
            tls: false,
            client_certificates: false,
            client_ca: false,
            // Lenient: the listener's own errors are reported; its routes' hosts are not.
            sni_routing: true,
        };
        self.listeners.insert(name.to_string(), facts);
    }

    /// Records that an upstream named `name` exists though no fragment carries it (one
    /// that a source could not build), so that routes naming it are not also reported.
    pub fn declare_upstream(&mut self, name: &str, protocol: UpstreamProtocol) {
        self.upstreams.insert(name.to_string(), (protocol, None));
    }

    /// Checks `fragment` against what is already admitted; admits it if it has no
    /// problem, or returns all of them.
    pub fn admit(&mut self, fragment: &Fragment) -> Result<(), Vec<Problem>> {
        self.admit_tracked(fragment).result.map(|_| ())
    }

    /// Releases the claims of a fragment admitted before, as if it had never been.
    pub fn release(&mut self, owned: &OwnedClaims) {
        for name in &owned.upstreams {
            self.upstreams.remove(name);
        }
        for name in &owned.routes {
            self.routes.remove(name);
        }
        for listener in &owned.tcp_listeners {
            self.tcp_routes.remove(listener);
        }
        for key in &owned.paths {
            self.paths.remove(key);
        }
    }

    /// [`Self::admit`], telling also what the fragment claims and whether another
    /// fragment's claim stood in its way.
    pub fn admit_tracked(&mut self, fragment: &Fragment) -> Admission {
        let mut problems = Vec::new();
        let mut claims = Claims::default();
        for upstream in &fragment.upstreams {
            problems.extend(value_problems(&upstream.origin, values::upstream(upstream)));
            if upstream.name.is_empty() {
                continue;
            }
            let problem = |message: String| Problem {
                origin: upstream.origin.clone(),
                field: "name".into(),
                message,
            };
            claims.touch(ClaimKind::Upstream, &[&upstream.name]);
            if claims.upstreams.contains_key(upstream.name.as_str()) {
                problems.push(problem(format!(
                    "duplicate upstream name {:?}",
                    upstream.name
                )));
            } else if let Some((_, owner)) = self.upstreams.get(&upstream.name) {
                claims.conflicted = true;
                problems.push(problem(format!(
                    "upstream name {:?} is already defined{}",
                    upstream.name,
                    by(owner.as_ref())
                )));
            } else {
                claims
                    .upstreams
                    .insert(&upstream.name, (upstream.protocol, &upstream.origin));
            }
        }
        for route in &fragment.routes {
            problems.extend(value_problems(&route.origin, values::route(route)));
            self.check_route(route, fragment.overlap, &mut claims, &mut problems);
        }
        for certificate in &fragment.certificates {
            if !self
                .listeners
                .get(certificate.listener.as_str())
                .is_some_and(|facts| facts.tls)
            {
                problems.push(Problem {
                    origin: certificate.origin.clone(),
                    field: "listener".into(),
                    message: format!("{:?} is not a TLS listener", certificate.listener),
                });
            }
        }
        for asked in &fragment.client_validations {
            let facts = self.listeners.get(asked.listener.as_str());
            let message = match facts {
                Some(f) if !f.tls || f.protocol != ListenerProtocol::Http => {
                    format!("{:?} is not an http listener with TLS", asked.listener)
                }
                Some(f) if f.client_certificates => format!(
                    "{:?} checks client certificates itself (tls.client_auth)",
                    asked.listener
                ),
                Some(_) => continue,
                None => format!("no listener {:?}", asked.listener),
            };
            problems.push(Problem {
                origin: asked.origin.clone(),
                field: "spec.tls.frontend".into(),
                message,
            });
        }
        let mut footprint = std::mem::take(&mut claims.footprint);
        footprint.sort_unstable();
        footprint.dedup();
        let (conflicted, yielded) = (claims.conflicted, claims.yielded);
        if !problems.is_empty() {
            return Admission {
                result: Err(problems),
                footprint,
                conflicted,
                yielded,
            };
        }
        let mut owned = OwnedClaims::default();
        for (name, (protocol, origin)) in claims.upstreams {
            owned.upstreams.push(name.to_string());
            self.upstreams
                .insert(name.to_string(), (protocol, Some(origin.clone())));
        }
        for (name, origin) in claims.routes {
            owned.routes.push(name.to_string());
            self.routes.insert(name.to_string(), origin.clone());
        }
        for (listener, route) in claims.tcp_routes {
            owned.tcp_listeners.push(listener.to_string());
            self.tcp_routes
                .insert(listener.to_string(), route.to_string());
        }
        for (key, (route, origin)) in claims.paths {
            owned.paths.push(key.clone());
            self.paths.insert(key, (route.to_string(), origin.clone()));
        }
        Admission {
            result: Ok(owned),
            footprint,
            conflicted,
            yielded,
        }
    }

    fn check_route<'f>(
        &self,
        route: &'f crate::model::RouteConfig,
        overlap: Overlap,
        claims: &mut Claims<'f>,
        problems: &mut Vec<Problem>,
    ) {
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                origin: route.origin.clone(),
                field: field.to_string(),
                message,
            })
        };
        if route.global_rate_limit.is_some() && !self.redis {
            problem(
                "global_rate_limit",
                "needs `redis:` in sluice's config file, where every replica counts the limit"
                    .into(),
            );
        }
        if !route.name.is_empty() {
            claims.touch(ClaimKind::Route, &[&route.name]);
            if claims.routes.contains_key(route.name.as_str()) {
                problem("name", format!("duplicate route name {:?}", route.name));
            } else if let Some(owner) = self.routes.get(&route.name) {
                claims.conflicted = true;
                problem(
                    "name",
                    format!(
                        "route name {:?} is already used{}",
                        route.name,
                        by(Some(owner))
                    ),
                );
            } else {
                claims.routes.insert(&route.name, &route.origin);
            }
        }
        // A route uses upstreams of its own fragment or of the config file: never one of
        // another object, which would make acceptance depend on the objects' ages.
        let protocol_of = |name: &str| {
            claims
                .upstreams
                .get(name)
                .map(|(protocol, _)| *protocol)
                .or_else(|| {
                    self.upstreams
                        .get(name)
                        .filter(|(_, owner)| owner.as_ref().is_none_or(Origin::is_file))
                        .map(|(protocol, _)| *protocol)
                })
        };
        let single = route.backends.len() == 1;
        let referenced: Vec<(String, &str, Option<UpstreamProtocol>)> = route
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let field = if single {
                    "upstream".to_string()
                } else {
                    format!("backends[{i}].upstream")
                };
                (field, b.upstream.as_str())
            })
            .chain(
                route
                    .canary
                    .iter()
                    .map(|c| ("canary.upstream".to_string(), c.upstream.as_str())),
            )
            .chain(
                route
                    .filters
                    .mirrors
                    .iter()
                    .map(|m| ("mirror.upstream".to_string(), m.upstream.as_str())),
            )
            .chain(route.error_pages.iter().flat_map(|pages| {
                pages
                    .rules
                    .iter()
                    .enumerate()
                    .filter_map(|(i, rule)| match &rule.source {
                        PageSource::Upstream(name) => {
                            Some((format!("error_pages[{i}].upstream"), name.as_str()))
                        }
                        PageSource::File(_) => None,
                    })
            }))
            .chain(route.auth.iter().filter_map(|auth| match auth {
                Auth::External(external) => Some((
                    "auth.external.upstream".to_string(),
                    external.upstream.as_str(),
                )),
                Auth::Basic(_) => None,
            }))
            .map(|(field, name)| (field, name, protocol_of(name)))
            .collect();
        let facts = self.listeners.get(route.listener.as_str());
        if let Some(requirement) = &route.require_client_certificate {
            let needed = if requirement.ca.is_some() {
                facts.is_some_and(|f| f.client_certificates)
            } else {
                facts.is_some_and(|f| f.client_ca)
            };
            if !needed {
                problem(
                    "require_client_certificate",
                    format!(
                        "listener {:?} does not ask clients for certificates{} (set its \
                         tls.client_auth; mode: optional requires them on some routes only)",
                        route.listener,
                        if requirement.ca.is_some() {
                            ""
                        } else {
                            " checked by a CA of its own: name the route's ca"
                        }
                    ),
                );
            }
        }
        let listener = facts.map(|f| f.protocol);
        match listener {
            None => problem(
                "listener",
                format!("undefined listener {:?}", route.listener),
            ),
            Some(ListenerProtocol::Tcp) => {
                let sni_routing = facts.is_some_and(|f| f.sni_routing);
                if !route.paths.is_empty() {
                    problem("paths", "a route on a tcp listener has no paths".into());
                }
                if !route.hosts.is_empty() && !sni_routing {
                    problem(
                        "hosts",
                        format!(
                            "tcp listener {:?} does not route by TLS server name (set its \
                             sni_routing: true)",
                            route.listener
                        ),
                    );
                }
                let http_only = !route.conditions.is_empty()
                    || (route.backends.is_empty() && route.unresolved.is_none())
                    || route.canary.is_some()
                    || route.affinity.is_some()
                    || !route.access.is_empty()
                    || route.cors.is_some()
                    || route.auth.is_some()
                    || route.error_pages.is_some()
                    || route.filters.redirect.is_some()
                    || route.filters.https_redirect.is_some()
                    || route.filters.app_root.is_some()
                    || !route.filters.mirrors.is_empty()
                    || route.filters.edits_request()
                    || !route.filters.response_headers.is_empty();
                if http_only {
                    problem(
                        "",
                        "a route on a tcp listener has an upstream (or weighted backends) and no \
                         methods, headers, query, canary, affinity, allow, deny, cors, auth, \
                         error_pages or filters"
                            .into(),
                    );
                }
                if !sni_routing {
                    claims.touch(ClaimKind::TcpListener, &[&route.listener]);
                }
                let held = self.tcp_routes.get(&route.listener);
                if held.is_some() && !sni_routing {
                    claims.conflicted = true;
                }
                let first = claims
                    .tcp_routes
                    .get(route.listener.as_str())
                    .map(|r| r.to_string())
                    .or_else(|| held.cloned());
                match first {
                    // An SNI-routing listener's routes claim their server names below.
                    _ if sni_routing => {}
                    Some(first) => problem(
                        "listener",
                        format!(
                            "tcp listener {:?} already has route {first:?}; a tcp listener has at most one route",
                            route.listener
                        ),
                    ),
                    None => {
                        claims.tcp_routes.insert(&route.listener, &route.name);
                    }
                }
                for (field, name, protocol) in &referenced {
                    if protocol.is_some_and(|p| p != UpstreamProtocol::Tcp) {
                        problem(
                            field,
                            format!(
                                "upstream {name:?} is not protocol: tcp; a route on a tcp listener needs one"
                            ),
                        );
                    }
                }
                if route.rate_limit.is_some() {
                    problem("rate_limit", "rate limits apply to HTTP routes only".into());
                }
                if route.global_rate_limit.is_some() {
                    let message = "rate limits apply to HTTP routes only".into();
                    problem("global_rate_limit", message);
                }
            }
            Some(ListenerProtocol::Http) => {
                for (field, name, protocol) in &referenced {
                    if *protocol == Some(UpstreamProtocol::Tcp) {
                        problem(
                            field,
                            format!(
                                "upstream {name:?} is protocol: tcp; only a route on a tcp listener can use it"
                            ),
                        );
                    }
                }
            }
        }
        for (field, name, protocol) in &referenced {
            if protocol.is_none() {
                problem(field, format!("undefined upstream {name:?}"));
            }
        }
        if route.backends.is_empty()
            && route.filters.redirect.is_none()
            && route.unresolved.is_none()
        {
            problem(
                "upstream",
                "needs an upstream (or backends) unless it has a redirect".into(),
            );
        }
        // A tcp listener's route has no hosts or paths to claim, unless the listener routes
        // by server name: then each name (or no name) has one route.
        let plain_tcp =
            listener == Some(ListenerProtocol::Tcp) && !facts.is_some_and(|f| f.sni_routing);
        // (key, field, what the key means in a conflict)
        let host_keys: Vec<(String, String, String)> = if plain_tcp || route.fallback {
            Vec::new()
        } else if listener == Some(ListenerProtocol::Tcp) {
            if route.hosts.is_empty() {
                let what = "connections without a matching server name are".to_string();
                vec![("*".into(), "hosts".into(), what)]
            } else {
                let what = |h: &HostMatch| format!("server name {:?} is", h.key());
                let field = |j: usize| format!("hosts[{j}]");
                route
                    .hosts
                    .iter()
                    .enumerate()
                    .map(|(j, h)| (h.key(), field(j), what(h)))
                    .collect()
            }
        } else if route.hosts.is_empty() {
            vec![(
                "*".into(),
                String::new(),
                "host \"*\" and this path are".into(),
            )]
        } else {
            let what = |h: &HostMatch| format!("host {:?} and this path are", h.key());
            route
                .hosts
                .iter()
                .map(|h| (h.key(), String::new(), what(h)))
                .collect()
        };
        // No paths: every path, as a prefix of `/`.
        let path_keys: Vec<(String, String)> = if route.paths.is_empty() {
            vec![("paths".into(), "prefix:/".into())]
        } else {
            route
                .paths
                .iter()
                .enumerate()
                .map(|(j, path)| (format!("paths[{j}]"), path.key()))
                .collect()
        };
        for (host, host_field, claimed) in &host_keys {
            for (path_field, path_key) in &path_keys {
                let field = if host_field.is_empty() {
                    path_field
                } else {
                    host_field
                };
                // Routes of one host and path with different conditions coexist; the router
                // orders them.
                let path_key = if route.conditions.is_empty() {
                    path_key.clone()
                } else {
                    format!("{path_key} {}", route.conditions.key())
                };
                claims.touch(ClaimKind::Path, &[&route.listener, host, &path_key]);
                let key = (route.listener.clone(), host.clone(), path_key);
                let yields = overlap == Overlap::Yielded;
                if let Some((other, _)) = claims.paths.get(&key) {
                    // The fragment's earlier route keeps it.
                    if yields {
                        continue;
                    }
                    problem(
                        field,
                        format!("{claimed} already routed by route {other:?}"),
                    );
                } else if let Some((other, origin)) = self.paths.get(&key) {
                    claims.conflicted = true;
                    if yields {
                        claims.yielded = true;
                        continue;
                    }
                    problem(
                        field,
                        format!(
                            "{claimed} already routed by route {other:?}{}",
                            by(Some(origin))
                        ),
                    );
                } else {
                    claims.paths.insert(key, (&route.name, &route.origin));
                }
            }
        }
    }
}

/// The (field, message) pairs of [`values`] as problems of the item at `origin`.
fn value_problems<'a>(
    origin: &'a Origin,
    found: Vec<(String, String)>,
) -> impl Iterator<Item = Problem> + 'a {
    found.into_iter().map(|(field, message)| Problem {
        origin: origin.clone(),
        field,
        message,
    })
}

/// ` by ORIGIN` when the claim has one.
fn by(origin: Option<&Origin>) -> String {
    origin.map(|o| format!(" by {o}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointConfig, EndpointSource, PathMatch, RouteConfig, UpstreamConfig};
    use std::net::SocketAddr;

    /// The settings of a file with one listener, `web`.
    fn settings() -> Config {
        let text = "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n";
        crate::sources::file::parse(std::path::Path::new("t.yaml"), text)
            .map(|file| file.settings)
            .expect("valid settings")
    }

    fn listener() -> ListenerConfig {
        settings().listeners[0].clone()
    }

    fn object(name: &str, created: i64, upstream: UpstreamConfig) -> Fragment {
        let origin = Origin::object("Test", "default", name);
        let mut fragment = Fragment::new(origin.clone(), Some(created));
        let mut route = RouteConfig::new(name, origin, "web", &upstream.name);
        route.paths = vec![PathMatch::Prefix(format!("/{name}"))];
        fragment.routes.push(Arc::new(route));
        fragment.upstreams.push(Arc::new(upstream));
        fragment
    }

    fn upstream(name: &str) -> UpstreamConfig {
        let address: SocketAddr = ([127, 0, 0, 1], 2).into();
        UpstreamConfig::new(
            name,
            Origin::object("Test", "default", name),
            EndpointSource::Static,
            vec![EndpointConfig {
                address,
                weight: 1,
                terminating: false,
            }],
        )
    }

    #[test]
    fn value_limits_hold_for_every_source() {
        let listeners = [listener()];
        let mut compiler = Compiler::new(&listeners);
        let mut bad = upstream("bad");
        bad.retry.attempts = 50;
        bad.hash_points = 0;
        let problems = compiler
            .admit(&object("bad", 1, bad))
            .expect_err("out of range");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["retry.attempts", "hash_points"], "{problems:?}");
        assert!(compiler.admit(&object("good", 1, upstream("good"))).is_ok());
    }

    #[test]
    fn precedence_not_arrival_decides_a_conflict() {
        let settings = settings();
        let mut newer = object("newer", 200, upstream("u-newer"));
        let mut older = object("older", 100, upstream("u-older"));
        Arc::make_mut(&mut newer.routes[0]).paths = vec![PathMatch::Prefix("/same".into())];
        Arc::make_mut(&mut older.routes[0]).paths = vec![PathMatch::Prefix("/same".into())];
        for order in [[&newer, &older], [&older, &newer]] {
            let offered: Vec<Offered> = order
                .iter()
                .map(|f| Offered {
                    source: "test".into(),
                    fragment: Arc::new((*f).clone()),
                })
                .collect();
            let compiled = compile(&settings, &offered);
            assert_eq!(compiled.rejected.len(), 1);
            assert_eq!(compiled.rejected[0].origin.name(), "default/newer");
            assert_eq!(compiled.config.routes.len(), 1);
            assert_eq!(compiled.config.routes[0].name, "older");
        }
    }

    #[test]
    fn a_yielding_fragment_leaves_a_held_match_to_its_holder_and_keeps_the_rest() {
        let settings = settings();
        let same = |name: &str, created: i64, overlap: Overlap| {
            let mut fragment = object(name, created, upstream(&format!("u-{name}")));
            fragment.overlap = overlap;
            let mut shared = (*fragment.routes[0]).clone();
            shared.name = format!("{name}-same");
            shared.paths = vec![PathMatch::Prefix("/same".into())];
            // Twice: within a fragment, the first of equal matches is the one served.
            let mut again = shared.clone();
            again.name = format!("{name}-again");
            fragment.routes.push(Arc::new(shared));
            fragment.routes.push(Arc::new(again));
            fragment
        };
        let compiled_of = |fragments: &[&Fragment]| {
            let offered: Vec<Offered> = fragments
                .iter()
                .map(|f| Offered {
                    source: "test".into(),
                    fragment: Arc::new((*f).clone()),
                })
                .collect();
            compile(&settings, &offered)
        };
        let served = |compiled: &Compiled, path: &str| {
            let table = crate::routing::RouteTable::build("web", &compiled.config.routes, &[]);
            let request =
                pingora::http::RequestHeader::build("GET", path.as_bytes(), None).expect("request");
            let found = table.find("h", path.as_bytes(), &request).expect("routed");
            compiled.config.routes[found.route].name.clone()
        };
        let older = same("older", 100, Overlap::Yielded);
        let newer = same("newer", 200, Overlap::Yielded);
        // Offered in either order, both are admitted; the older serves the shared match.
        for order in [[&newer, &older], [&older, &newer]] {
            let compiled = compiled_of(&order);
            assert!(compiled.rejected.is_empty(), "{:?}", compiled.rejected);
            assert_eq!(served(&compiled, "/same"), "older-same");
            assert_eq!(served(&compiled, "/older"), "older");
            assert_eq!(served(&compiled, "/newer"), "newer");
        }
        // Without the older one, the newer serves the match.
        assert_eq!(served(&compiled_of(&[&newer]), "/same"), "newer-same");
        // A fragment that refuses overlaps still loses to the older claim, as a whole.
        let refusing = same("refusing", 300, Overlap::Refused);
        let compiled = compiled_of(&[&older, &refusing]);
        assert_eq!(compiled.rejected.len(), 1);
        assert_eq!(compiled.rejected[0].origin.name(), "default/refusing");
    }
}
