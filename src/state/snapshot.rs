//! [`Snapshot`]: everything the request path needs for one version of the model, built
//! off the request path and carrying over the live state (in-flight counts, retry budgets,
//! rate-limit counts, metric handles) of the upstreams and routes that remain.

use crate::compile::Compiled;
use crate::limits::rate_limit::RouteLimiter;
use crate::limits::{GlobalLimiter, Store};
use crate::model::{
    Auth, BodyPolicy, Config, CookieAffinity, EndpointConfig, EndpointSource, Htpasswd, Rejected,
    RetryPolicy, RouteConfig, Timeouts,
};
use crate::observe::metrics::RouteMetrics;
use crate::routing::auth::VerifiedCredentials;
use crate::routing::backends::WeightedSplit;
use crate::routing::concurrency::ClientConcurrency;
use crate::routing::RouteTable;
use crate::sources::file::FileConfig;
use crate::tls::client_auth::ChainVerifier;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// A route at run time. Its filters, conditions and canary rules are read from the
/// model's route of the same index ([`Snapshot::config`]).
pub struct Route {
    pub name: String,
    /// The model's route it was built from: a new model with the very same one (its
    /// fragment did not change) keeps this route if its upstreams did not move.
    config: Arc<RouteConfig>,
    /// The weighted backends, in the model's order (a backend whose upstream is missing is
    /// left out, so the route answers 503 rather than pick another).
    pub backends: Box<[RouteBackend]>,
    /// Picks among `backends` by weight.
    pub split: WeightedSplit,
    pub canary: Option<RouteBackend>,
    pub mirrors: Vec<RouteMirror>,
    /// `Path`, `Max-Age`, `SameSite` and the flags of the affinity cookie, after its value.
    pub affinity_attributes: Option<String>,
    /// Kept across rebuilds that keep the route's limit, so counts carry on.
    pub limiter: Option<Arc<RouteLimiter>>,
    /// The fleet-wide limit; kept across rebuilds that keep it and `redis:`, so the tokens
    /// this replica holds carry on.
    pub global_limiter: Option<Arc<GlobalLimiter>>,
    /// Requests in flight per client; kept across rebuilds that keep the limit.
    pub concurrency: Option<Arc<ClientConcurrency>>,
    /// Resolved metric handles, kept across rebuilds.
    pub metrics: Arc<RouteMetrics>,
    /// Request body size limit and buffering.
    pub body: BodyPolicy,
    pub auth: Option<RouteAuth>,
    /// Checks client certificates against the route's own CA bundle.
    pub client_verifier: Option<Arc<ChainVerifier>>,
}

/// What a route's authentication needs at run time.
pub enum RouteAuth {
    /// Successful checks are remembered while the users stay the same (kept across
    /// rebuilds that keep them, such as endpoint changes).
    Basic {
        users: Arc<Htpasswd>,
        verified: Arc<VerifiedCredentials>,
    },
    /// Index into [`Snapshot::upstreams`] of the service that answers; `None` (the compiler
    /// prevents it) fails every check rather than open the route.
    External { upstream: Option<usize> },
}

/// The verifier of a route's own client CA: the previous one while the CA stays the same.
/// (Validation built it once already; should rustls refuse it now, the route takes no
/// certificate: it fails closed.)
fn client_verifier(route: &RouteConfig, old: Option<&&Route>) -> Option<Arc<ChainVerifier>> {
    let ca = route.require_client_certificate.as_ref()?.ca.as_ref()?;
    if let Some(previous) = old.and_then(|old| old.client_verifier.clone()) {
        if previous.is_for(&ca.certificates, ca.verify_depth) {
            return Some(previous);
        }
    }
    match ChainVerifier::new(&ca.certificates, ca.verify_depth) {
        Ok(verifier) => Some(Arc::new(verifier)),
        Err(e) => {
            log::error!("route {}: client CA {}: {e}", route.name, ca.file.display());
            Some(Arc::new(ChainVerifier::refusing(
                &ca.certificates,
                ca.verify_depth,
            )))
        }
    }
}

/// An upstream a route sends requests to, with the route's timeouts for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteBackend {
    /// Index into [`Snapshot::upstreams`].
    pub upstream: usize,
    /// The upstream's timeouts with the route's overrides applied.
    pub timeouts: Timeouts,
    /// The route's retry policy, or else the upstream's.
    pub retry: RetryPolicy,
    /// The entry of the route's `backends` whose request header edits its requests get;
    /// `None` when there are none (the canary, a mirror, or a backend without edits).
    pub edits: Option<usize>,
}

/// Where a route's mirror copies go, which share of requests, and how many are in
/// flight (kept across rebuilds that keep the mirror).
pub struct RouteMirror {
    pub upstream: usize,
    pub max_in_flight: u32,
    pub per_million: u32,
    pub in_flight: Arc<AtomicU32>,
}

/// Everything the request path needs, for one version of the model.
pub struct Snapshot {
    /// +1 for every change of the model: a config reload or a change of another source.
    pub generation: u64,
    /// +1 for every swap, model change or discovery update.
    pub revision: u64,
    /// The effective model.
    pub config: Arc<Config>,
    /// The config file's last accepted version.
    pub file: Arc<FileConfig>,
    /// The fragments that were accepted (source, origin), in precedence order.
    pub accepted: Arc<[(String, crate::model::Origin)]>,
    /// The fragments the compiler rejected, with their problems.
    pub rejected: Arc<[Rejected]>,
    /// Route tables by listener name.
    pub route_tables: Arc<HashMap<String, RouteTable>>,
    /// Shared with the next snapshot where unchanged.
    pub routes: Arc<[Arc<Route>]>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Indexes of the discovered upstreams, by (namespace, service) of their source, so a
    /// discovery event finds its upstreams without scanning them all.
    discovered_by_service: Arc<ServiceIndex>,
    /// Index of each upstream in `upstreams`, by name.
    pub(super) upstream_by_name: Arc<HashMap<Arc<str>, usize>>,
    /// Where global rate limits are counted (`redis:`); kept while `redis:` is unchanged.
    pub redis: Option<Arc<Store>>,
}

impl Snapshot {
    /// Builds the snapshot of `compiled`, keeping live state from `previous`; upstreams fed
    /// by discovery take their endpoints from `discovered` (none until their first sync).
    pub(super) fn build(
        compiled: Compiled,
        file: Arc<FileConfig>,
        generation: u64,
        previous: Option<&Snapshot>,
        discovered: &HashMap<String, Vec<EndpointConfig>>,
    ) -> Self {
        let Compiled {
            mut config,
            accepted,
            rejected,
        } = compiled;
        let mut previous_upstreams = Previous::new(
            previous.map_or(&[][..], |p| p.upstreams.as_slice()),
            |u: &Arc<Upstream>| u.name(),
        );
        // An upstream whose settings and endpoints did not change is the previous one: a
        // change to one route among thousands does not rebuild thousands of balancers.
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let endpoints = u
                    .source
                    .is_discovered()
                    .then(|| discovered.get(&u.name).map_or(&[][..], Vec::as_slice));
                let previous = previous_upstreams.find(i, &u.name);
                // The very same upstream: its endpoints are the discovered ones already
                // (discovery updates the running snapshot under the same lock).
                if let Some(previous) = previous.filter(|p| Arc::ptr_eq(&p.compiled, u)) {
                    return Arc::clone(previous);
                }
                if let Some(previous) = previous {
                    let same = previous.compiled == *u;
                    let same_endpoints = endpoints.is_none_or(|e| *e == previous.config.endpoints);
                    if same && same_endpoints {
                        return Arc::clone(previous);
                    }
                }
                let endpoints = endpoints.map(<[EndpointConfig]>::to_vec);
                Arc::new(Upstream::build(u, endpoints, previous.map(|p| p.as_ref())))
            })
            .collect();
        // The model lists the upstreams with the endpoints they have.
        for (config, upstream) in config.upstreams.iter_mut().zip(&upstreams) {
            *config = upstream.config.clone();
        }
        let upstream_by_name = upstream_index(&upstreams, previous);
        let redis = config.redis.as_ref().map(|settings| {
            previous
                .and_then(|p| p.redis.clone())
                .filter(|old| old.settings() == settings)
                .unwrap_or_else(|| Arc::new(Store::new(settings)))
        });
        let same_redis = |limiter: &Arc<GlobalLimiter>| {
            redis
                .as_ref()
                .is_some_and(|store| Arc::ptr_eq(store, limiter.store()))
        };
        let mut previous_routes = Previous::new(
            previous.map_or(&[][..], |p| &p.routes[..]),
            |r: &Arc<Route>| r.name.as_str(),
        );
        // The compiler guarantees that every upstream named exists.
        let backend_of = |r: &RouteConfig, name: &str| {
            let upstream = *upstream_by_name.get(name)?;
            Some(RouteBackend {
                upstream,
                timeouts: config.upstreams[upstream]
                    .timeouts
                    .with_overrides(&r.timeouts),
                retry: r.retry.unwrap_or(config.upstreams[upstream].retry),
                edits: None,
            })
        };
        let routes: Arc<[Arc<Route>]> = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let old = previous_routes.find(i, &r.name);
                let same_place = |index: usize| {
                    let before = previous.and_then(|p| p.upstreams.get(index));
                    before.is_some_and(|b| upstreams.get(index).is_some_and(|u| Arc::ptr_eq(b, u)))
                };
                let unchanged = |old: &&Arc<Route>| {
                    old.unchanged(r, same_place, |n| backend_of(r, n))
                        && old.global_limiter.as_ref().is_none_or(same_redis)
                };
                if let Some(old) = old.filter(unchanged) {
                    return Arc::clone(old);
                }
                let old = old.map(Arc::as_ref);
                let metrics = old
                    .map(|old| old.metrics.clone())
                    .unwrap_or_else(|| Arc::new(RouteMetrics::new(&r.name)));
                let limiter = r.rate_limit.as_ref().map(|limit| {
                    old.and_then(|old| old.limiter.clone())
                        .filter(|old| old.config() == limit)
                        .unwrap_or_else(|| Arc::new(RouteLimiter::new(limit)))
                });
                let global_limiter = r.global_rate_limit.as_ref().and_then(|limit| {
                    let store = redis.as_ref()?;
                    let kept = old
                        .and_then(|old| old.global_limiter.clone())
                        .filter(|old| old.config() == limit && same_redis(old));
                    Some(kept.unwrap_or_else(|| {
                        Arc::new(GlobalLimiter::new(&r.name, limit, Arc::clone(store)))
                    }))
                });
                let concurrency = r.max_concurrent_per_client.map(|limit| {
                    old.and_then(|old| old.concurrency.clone())
                        .filter(|old| old.limit() == limit)
                        .unwrap_or_else(|| Arc::new(ClientConcurrency::new(limit)))
                });
                let backend = |name: &str| backend_of(r, name);
                let weighted: Vec<(RouteBackend, u32)> = r
                    .backends
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| {
                        let edits = (!b.request_headers.is_empty()).then_some(i);
                        Some((
                            RouteBackend {
                                edits,
                                ..backend(&b.upstream)?
                            },
                            b.weight,
                        ))
                    })
                    .collect();
                let mirrors = r
                    .filters
                    .mirrors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        let upstream = *upstream_by_name.get(m.upstream.as_str())?;
                        // The same mirror keeps counting its copies in flight.
                        let in_flight = old
                            .and_then(|old| old.mirrors.get(i))
                            .filter(|old| old.upstream == upstream)
                            .map(|old| old.in_flight.clone())
                            .unwrap_or_default();
                        Some(RouteMirror {
                            upstream,
                            max_in_flight: m.max_in_flight,
                            per_million: m.per_million,
                            in_flight,
                        })
                    })
                    .collect();
                let auth = r.auth.as_ref().map(|auth| match auth {
                    Auth::Basic(basic) => {
                        let verified = old
                            .and_then(|old| match &old.auth {
                                Some(RouteAuth::Basic { users, verified })
                                    if Arc::ptr_eq(users, &basic.users) =>
                                {
                                    Some(verified.clone())
                                }
                                _ => None,
                            })
                            .unwrap_or_default();
                        RouteAuth::Basic {
                            users: basic.users.clone(),
                            verified,
                        }
                    }
                    Auth::External(external) => RouteAuth::External {
                        upstream: upstream_by_name.get(external.upstream.as_str()).copied(),
                    },
                });
                Arc::new(Route {
                    name: r.name.clone(),
                    config: r.clone(),
                    // The unresolved backends' share comes last: a pick past the backends
                    // is answered 500.
                    split: WeightedSplit::new(
                        weighted
                            .iter()
                            .map(|(_, w)| *w)
                            .chain((r.unresolved_weight > 0).then_some(r.unresolved_weight)),
                    ),
                    backends: weighted.into_iter().map(|(b, _)| b).collect(),
                    canary: r.canary.as_ref().and_then(|c| backend(&c.upstream)),
                    mirrors,
                    affinity_attributes: r.affinity.as_ref().map(cookie_attributes),
                    limiter,
                    global_limiter,
                    concurrency,
                    metrics,
                    body: r.body,
                    auth,
                    client_verifier: client_verifier(r, old.as_ref()),
                })
            })
            .collect();
        // Tables hold route indices and what routes match: a change of backends alone
        // (the usual change) keeps them.
        let route_tables = match previous {
            Some(previous) if same_matching(&previous.config, &config) => {
                previous.route_tables.clone()
            }
            _ => Arc::new(
                config
                    .listeners
                    .iter()
                    .map(|l| {
                        let table =
                            RouteTable::build(&l.name, &config.routes, &config.reserved_hosts);
                        (l.name.clone(), table)
                    })
                    .collect(),
            ),
        };
        let discovered_by_service = service_index(&upstreams, previous);
        Self {
            generation,
            revision: previous.map_or(1, |p| p.revision + 1),
            config: Arc::new(config),
            file,
            accepted: accepted.into(),
            rejected: rejected.into(),
            route_tables,
            routes,
            upstreams,
            discovered_by_service,
            upstream_by_name,
            redis,
        }
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstream_by_name.get(name).map(|&i| &self.upstreams[i])
    }

    /// The config of the upstreams discovered from `service` in `namespace`.
    pub fn discovered_upstreams(
        &self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &crate::model::UpstreamConfig> {
        self.discovered_by_service
            .get(&(namespace.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .map(|&i| self.config.upstreams[i].as_ref())
    }

    /// This snapshot with upstream `index` rebuilt on `endpoints`; every other upstream,
    /// route and table is shared, so a discovery update costs one upstream, not all.
    pub(super) fn with_endpoints(&self, index: usize, endpoints: Vec<EndpointConfig>) -> Self {
        let previous = &self.upstreams[index];
        let mut upstreams = self.upstreams.clone();
        let upstream = Upstream::build(&previous.compiled, Some(endpoints), Some(previous));
        upstreams[index] = Arc::new(upstream);
        Self {
            generation: self.generation,
            revision: self.revision + 1,
            config: self.config.clone(),
            file: self.file.clone(),
            accepted: self.accepted.clone(),
            rejected: self.rejected.clone(),
            route_tables: self.route_tables.clone(),
            routes: self.routes.clone(),
            upstreams,
            discovered_by_service: self.discovered_by_service.clone(),
            upstream_by_name: self.upstream_by_name.clone(),
            redis: self.redis.clone(),
        }
    }
}

/// The indexes of the discovered upstreams by (namespace, service) of their source.
type ServiceIndex = HashMap<(String, String), Vec<usize>>;

/// The previous snapshot's items (upstreams, routes) found by name: at the same index first
/// (the model's order is stable, so that is the usual case, and costs no hashing), else
/// through a map of names built on the first miss.
struct Previous<'p, T> {
    items: &'p [T],
    name: fn(&T) -> &str,
    by_name: Option<HashMap<&'p str, &'p T>>,
}

impl<'p, T> Previous<'p, T> {
    fn new(items: &'p [T], name: fn(&T) -> &str) -> Self {
        Self {
            items,
            name,
            by_name: None,
        }
    }

    /// The item named `name`, which is at `index` in the new list.
    fn find(&mut self, index: usize, name: &str) -> Option<&'p T> {
        let (items, name_of) = (self.items, self.name);
        if let Some(item) = items.get(index).filter(|item| name_of(item) == name) {
            return Some(item);
        }
        let by_name = self
            .by_name
            .get_or_insert_with(|| items.iter().map(|item| (name_of(item), item)).collect());
        by_name.get(name).copied()
    }
}

/// The indices of `upstreams` (the new list) whose upstream is not the previous snapshot's
/// at the same index and not `same` as it; `None` if the lists differ in length.
fn moved(
    upstreams: &[Arc<Upstream>],
    previous: &Snapshot,
    same: impl Fn(&Upstream, &Upstream) -> bool,
) -> Option<Vec<usize>> {
    (previous.upstreams.len() == upstreams.len()).then(|| {
        (0..upstreams.len())
            .filter(|&i| {
                let (old, new) = (&previous.upstreams[i], &upstreams[i]);
                !Arc::ptr_eq(old, new) && !same(old, new)
            })
            .collect()
    })
}

/// Above this share of moved upstreams, an index is built afresh rather than patched.
const PATCHED_SHARE: usize = 8;

/// The index of each upstream by name: the previous snapshot's while every upstream keeps its
/// name and place, patched where a few moved (a route's backend changed), else built.
fn upstream_index(
    upstreams: &[Arc<Upstream>],
    previous: Option<&Snapshot>,
) -> Arc<HashMap<Arc<str>, usize>> {
    if let Some(previous) = previous {
        let moved = moved(upstreams, previous, |a, b| a.name() == b.name());
        match moved {
            Some(moved) if moved.is_empty() => return previous.upstream_by_name.clone(),
            Some(moved) if moved.len() * PATCHED_SHARE <= upstreams.len() => {
                let mut index = HashMap::clone(&previous.upstream_by_name);
                for &i in &moved {
                    let old = previous.upstreams[i].name();
                    if index.get(old) == Some(&i) {
                        index.remove(old);
                    }
                }
                for &i in &moved {
                    index.insert(Arc::from(upstreams[i].name()), i);
                }
                return Arc::new(index);
            }
            _ => {}
        }
    }
    let index = upstreams.iter().enumerate();
    Arc::new(index.map(|(i, u)| (Arc::from(u.name()), i)).collect())
}

/// The (namespace, service) a discovered upstream's endpoints come from.
fn service_of(upstream: &Upstream) -> Option<(&str, &str)> {
    match &upstream.config.source {
        EndpointSource::Kubernetes(source) => Some((&source.namespace, &source.service)),
        _ => None,
    }
}

/// The discovered upstreams by service, kept and patched as [`upstream_index`] is.
fn service_index(upstreams: &[Arc<Upstream>], previous: Option<&Snapshot>) -> Arc<ServiceIndex> {
    let key = |service: (&str, &str)| (service.0.to_string(), service.1.to_string());
    if let Some(previous) = previous {
        let moved = moved(upstreams, previous, |a, b| service_of(a) == service_of(b));
        match moved {
            Some(moved) if moved.is_empty() => return previous.discovered_by_service.clone(),
            Some(moved) if moved.len() * PATCHED_SHARE <= upstreams.len() => {
                let mut index = ServiceIndex::clone(&previous.discovered_by_service);
                for &i in &moved {
                    let Some(service) = service_of(&previous.upstreams[i]) else {
                        continue;
                    };
                    let service = key(service);
                    if let Some(list) = index.get_mut(&service) {
                        list.retain(|&j| j != i);
                        if list.is_empty() {
                            index.remove(&service);
                        }
                    }
                }
                for &i in &moved {
                    if let Some(service) = service_of(&upstreams[i]) {
                        let list = index.entry(key(service)).or_default();
                        list.push(i);
                        list.sort_unstable();
                    }
                }
                return Arc::new(index);
            }
            _ => {}
        }
    }
    let mut index = ServiceIndex::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        if let Some(service) = service_of(upstream) {
            index.entry(key(service)).or_default().push(i);
        }
    }
    Arc::new(index)
}

impl Route {
    /// Whether this route is what `config` would build now: the same model route, with
    /// each upstream it names (`backend` finds them) where it was. `same_place` says
    /// whether the upstream at an index is the very one it was, which answers without
    /// looking names up when every upstream the route uses is.
    fn unchanged(
        &self,
        config: &Arc<RouteConfig>,
        same_place: impl Fn(usize) -> bool,
        backend: impl Fn(&str) -> Option<RouteBackend>,
    ) -> bool {
        if !Arc::ptr_eq(&self.config, config) {
            return false;
        }
        let external = match &self.auth {
            Some(RouteAuth::External { upstream }) => Some(*upstream),
            _ => None,
        };
        // Every upstream it names was found (the compiler sees to it).
        let complete = self.backends.len() == config.backends.len()
            && config.canary.is_some() == self.canary.is_some()
            && config.filters.mirrors.len() == self.mirrors.len()
            && external != Some(None);
        let mut used = (self.backends.iter().map(|b| b.upstream))
            .chain(self.canary.map(|c| c.upstream))
            .chain(self.mirrors.iter().map(|m| m.upstream))
            .chain(external.flatten());
        if complete && used.all(same_place) {
            return true;
        }
        let backends = config.backends.iter().filter_map(|b| backend(&b.upstream));

        let external_name = match &config.auth {
            Some(Auth::External(external)) => Some(external.upstream.as_str()),
            _ => None,
        };
        let external_now = external_name.map(|name| backend(name).map(|b| b.upstream));
        // The same config: the same edits.
        let place = |b: RouteBackend| (b.upstream, b.timeouts, b.retry);
        backends
            .map(place)
            .eq(self.backends.iter().copied().map(place))
            && config.canary.as_ref().and_then(|c| backend(&c.upstream)) == self.canary
            && config
                .filters
                .mirrors
                .iter()
                .map(|m| backend(&m.upstream).map(|b| b.upstream))
                .eq(self.mirrors.iter().map(|m| Some(m.upstream)))
            && external_now == external
    }
}

/// Whether two models have the same listeners and routes that match the same requests at
/// the same indices (what route tables are made of).
fn same_matching(before: &Config, after: &Config) -> bool {
    let same_route = |a: &Arc<RouteConfig>, b: &Arc<RouteConfig>| {
        Arc::ptr_eq(a, b)
            || (a.name == b.name
                && a.listener == b.listener
                && a.fallback == b.fallback
                && a.hosts == b.hosts
                // Patterns have no equality of their own: their text is compared (few
                // routes are not the very same one).
                && format!("{:?}{:?}", a.paths, a.conditions)
                    == format!("{:?}{:?}", b.paths, b.conditions))
    };
    before.listeners.len() == after.listeners.len()
        && before
            .listeners
            .iter()
            .zip(&after.listeners)
            .all(|(a, b)| a.name == b.name)
        && before.routes.len() == after.routes.len()
        && before
            .routes
            .iter()
            .zip(&after.routes)
            .all(|(a, b)| same_route(a, b))
}

/// The attributes after an affinity cookie's value: always `HttpOnly` (scripts have no use
/// for it), as ingress-nginx sets them.
fn cookie_attributes(affinity: &CookieAffinity) -> String {
    let mut attributes = format!("; Path={}", affinity.path);
    if let Some(max_age) = affinity.max_age {
        attributes.push_str(&format!("; Max-Age={}", max_age.as_secs()));
    }
    if let Some(same_site) = affinity.same_site {
        attributes.push_str("; SameSite=");
        attributes.push_str(same_site.as_str());
    }
    if affinity.secure {
        attributes.push_str("; Secure");
    }
    attributes.push_str("; HttpOnly");
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot of config file `yaml`, built on `previous`.
    fn build(yaml: &str, previous: Option<&Snapshot>) -> Snapshot {
        let file = crate::sources::file::parse(std::path::Path::new("t.yaml"), yaml)
            .expect("a valid config");
        let offered = crate::compile::Offered {
            source: "file".into(),
            fragment: file.fragment.clone(),
        };
        let compiled = crate::compile::compile(&file.settings, &[offered]);
        Snapshot::build(compiled, Arc::new(file), 1, previous, &HashMap::new())
    }

    const TWO: &str = "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n\
        routes:\n  - { name: a, listener: web, paths: [{ prefix: /a }], upstream: ua }\n  \
        - { name: b, listener: web, paths: [{ prefix: /b }], upstream: ub }\n\
        upstreams:\n  - { name: ua, endpoints: [\"127.0.0.1:2\"] }\n  \
        - { name: ub, endpoints: [\"127.0.0.1:3\"] }\n";

    #[test]
    fn unchanged_routes_upstreams_and_tables_are_kept() {
        let first = build(TWO, None);
        // The same model routes and upstreams (a new compile of the same fragment).
        let mut again = build(TWO, None);
        let compiled = Compiled {
            config: (*first.config).clone(),
            accepted: Vec::new(),
            rejected: Vec::new(),
        };
        again = Snapshot::build(
            compiled,
            again.file.clone(),
            2,
            Some(&first),
            &HashMap::new(),
        );
        for (a, b) in first.routes.iter().zip(again.routes.iter()) {
            assert!(Arc::ptr_eq(a, b), "route {} rebuilt", a.name);
        }
        for (a, b) in first.upstreams.iter().zip(&again.upstreams) {
            assert!(Arc::ptr_eq(a, b), "upstream {} rebuilt", a.name());
        }
        assert!(Arc::ptr_eq(&first.route_tables, &again.route_tables));
    }

    /// A config with upstreams `names` (a route each).
    fn many(names: &[&str]) -> String {
        let mut yaml = "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\nroutes:\n".to_string();
        for (i, name) in names.iter().enumerate() {
            yaml.push_str(&format!(
                "  - {{ name: r{i}, listener: web, paths: [{{ prefix: /{i} }}], upstream: {name} }}\n"
            ));
        }
        yaml.push_str("upstreams:\n");
        for name in names {
            yaml.push_str(&format!(
                "  - {{ name: {name}, endpoints: [\"127.0.0.1:2\"] }}\n"
            ));
        }
        yaml
    }

    #[test]
    fn the_upstream_index_is_patched_where_a_few_upstreams_moved() {
        let names: Vec<String> = (0..16).map(|i| format!("u{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let first = build(&many(&names), None);
        let mut renamed = names.clone();
        renamed[3] = "v3";
        let next = build(&many(&renamed), Some(&first));
        let fresh = build(&many(&renamed), None);
        assert_eq!(*next.upstream_by_name, *fresh.upstream_by_name);
        assert_eq!(next.upstream("v3").map(|u| u.name()), Some("v3"));
        assert!(next.upstream("u3").is_none());
    }

    #[test]
    fn a_route_whose_upstream_moved_is_rebuilt_and_tables_follow_paths() {
        let first = build(TWO, None);
        // The very same model routes, with the upstreams in the other order: the routes'
        // backend indices move, so the routes are rebuilt.
        let mut config = (*first.config).clone();
        config.upstreams.reverse();
        let compiled = Compiled {
            config,
            accepted: Vec::new(),
            rejected: Vec::new(),
        };
        let next = Snapshot::build(
            compiled,
            first.file.clone(),
            2,
            Some(&first),
            &HashMap::new(),
        );
        for route in next.routes.iter() {
            let backend = route.backends[0].upstream;
            let expected = if route.name == "a" { "ua" } else { "ub" };
            assert_eq!(
                next.upstreams[backend].name(),
                expected,
                "route {}",
                route.name
            );
        }
        // Same paths at the same indices: the tables are kept; other paths are not.
        assert!(Arc::ptr_eq(&first.route_tables, &next.route_tables));
        let moved = build(
            &TWO.replace("paths: [{ prefix: /b }]", "paths: [{ prefix: /c }]"),
            Some(&next),
        );
        assert!(!Arc::ptr_eq(&next.route_tables, &moved.route_tables));
        let request = pingora::http::RequestHeader::build("GET", b"/c", None).expect("request");
        let found = moved.route_tables["web"].find("x", b"/c", &request);
        assert_eq!(found.map(|f| f.route), Some(1));
    }
}
