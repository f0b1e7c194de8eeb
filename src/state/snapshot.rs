//! [`Snapshot`]: everything the request path needs for one version of the model, built
//! off the request path and carrying over the live state (in-flight counts, retry budgets,
//! rate-limit counts, metric handles) of the upstreams and routes that remain.

use crate::compile::Compiled;
use crate::model::{
    Auth, BodyPolicy, Config, CookieAffinity, EndpointConfig, EndpointSource, Htpasswd, Rejected,
    RouteConfig, Timeouts,
};
use crate::observe::metrics::RouteMetrics;
use crate::routing::auth::VerifiedCredentials;
use crate::routing::backends::WeightedSplit;
use crate::routing::concurrency::ClientConcurrency;
use crate::routing::rate_limit::RouteLimiter;
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
    /// The weighted backends, in the model's order (a backend whose upstream is missing is
    /// left out, so the route answers 503 rather than pick another).
    pub backends: Box<[RouteBackend]>,
    /// Picks among `backends` by weight.
    pub split: WeightedSplit,
    pub canary: Option<RouteBackend>,
    pub mirror: Option<RouteMirror>,
    /// `Path`, `Max-Age`, `SameSite` and the flags of the affinity cookie, after its value.
    pub affinity_attributes: Option<String>,
    /// Kept across rebuilds that keep the route's limit, so counts carry on.
    pub limiter: Option<Arc<RouteLimiter>>,
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
#[derive(Debug, Clone, Copy)]
pub struct RouteBackend {
    /// Index into [`Snapshot::upstreams`].
    pub upstream: usize,
    /// The upstream's timeouts with the route's overrides applied.
    pub timeouts: Timeouts,
}

/// Where a route's mirror copies go, and how many are in flight (kept across rebuilds
/// that keep the mirror).
pub struct RouteMirror {
    pub upstream: usize,
    pub max_in_flight: u32,
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
    pub routes: Arc<[Route]>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Indexes of the discovered upstreams, by (namespace, service) of their source, so a
    /// discovery event finds its upstreams without scanning them all.
    discovered_by_service: Arc<HashMap<(String, String), Vec<usize>>>,
    /// Index of each upstream in `upstreams`, by name.
    pub(super) upstream_by_name: Arc<HashMap<String, usize>>,
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
        let previous_upstreams: HashMap<&str, &Arc<Upstream>> = previous
            .map(|p| p.upstreams.iter().map(|u| (u.name(), u)).collect())
            .unwrap_or_default();
        // An upstream whose settings and endpoints did not change is the previous one: a
        // change to one route among thousands does not rebuild thousands of balancers.
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let endpoints = u
                    .source
                    .is_discovered()
                    .then(|| discovered.get(&u.name).cloned().unwrap_or_default());
                let previous = previous_upstreams.get(u.name.as_str());
                if let Some(previous) = previous {
                    let same = Arc::ptr_eq(&previous.compiled, u) || previous.compiled == *u;
                    let same_endpoints = endpoints
                        .as_ref()
                        .is_none_or(|e| *e == previous.config.endpoints);
                    if same && same_endpoints {
                        return Arc::clone(previous);
                    }
                }
                Arc::new(Upstream::build(u, endpoints, previous.map(|p| p.as_ref())))
            })
            .collect();
        // The model lists the upstreams with the endpoints they have.
        for (config, upstream) in config.upstreams.iter_mut().zip(&upstreams) {
            *config = upstream.config.clone();
        }
        let upstream_by_name: HashMap<String, usize> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        let previous_routes: HashMap<&str, &Route> = previous
            .map(|p| p.routes.iter().map(|r| (r.name.as_str(), r)).collect())
            .unwrap_or_default();
        let routes: Arc<[Route]> = config
            .routes
            .iter()
            .map(|r| {
                let old = previous_routes.get(r.name.as_str());
                let metrics = old
                    .map(|old| old.metrics.clone())
                    .unwrap_or_else(|| Arc::new(RouteMetrics::new(&r.name)));
                let limiter = r.rate_limit.as_ref().map(|limit| {
                    old.and_then(|old| old.limiter.clone())
                        .filter(|old| old.config() == limit)
                        .unwrap_or_else(|| Arc::new(RouteLimiter::new(limit)))
                });
                let concurrency = r.max_concurrent_per_client.map(|limit| {
                    old.and_then(|old| old.concurrency.clone())
                        .filter(|old| old.limit() == limit)
                        .unwrap_or_else(|| Arc::new(ClientConcurrency::new(limit)))
                });
                // The compiler guarantees that every upstream named exists.
                let backend = |name: &str| {
                    let upstream = *upstream_by_name.get(name)?;
                    Some(RouteBackend {
                        upstream,
                        timeouts: config.upstreams[upstream]
                            .timeouts
                            .with_overrides(&r.timeouts),
                    })
                };
                let weighted: Vec<(RouteBackend, u32)> = r
                    .backends
                    .iter()
                    .filter_map(|b| Some((backend(&b.upstream)?, b.weight)))
                    .collect();
                let mirror = r.filters.mirror.as_ref().and_then(|m| {
                    let upstream = *upstream_by_name.get(m.upstream.as_str())?;
                    let in_flight = old
                        .and_then(|old| old.mirror.as_ref())
                        .map(|old| old.in_flight.clone())
                        .unwrap_or_default();
                    Some(RouteMirror {
                        upstream,
                        max_in_flight: m.max_in_flight,
                        in_flight,
                    })
                });
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
                Route {
                    name: r.name.clone(),
                    split: WeightedSplit::new(weighted.iter().map(|(_, w)| *w)),
                    backends: weighted.into_iter().map(|(b, _)| b).collect(),
                    canary: r.canary.as_ref().and_then(|c| backend(&c.upstream)),
                    mirror,
                    affinity_attributes: r.affinity.as_ref().map(cookie_attributes),
                    limiter,
                    concurrency,
                    metrics,
                    body: r.body,
                    auth,
                    client_verifier: client_verifier(r, old),
                }
            })
            .collect();
        let route_tables = Arc::new(
            config
                .listeners
                .iter()
                .map(|l| (l.name.clone(), RouteTable::build(&l.name, &config.routes)))
                .collect(),
        );
        let mut discovered_by_service: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, upstream) in config.upstreams.iter().enumerate() {
            if let EndpointSource::Kubernetes(source) = &upstream.source {
                discovered_by_service
                    .entry((source.namespace.clone(), source.service.clone()))
                    .or_default()
                    .push(i);
            }
        }
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
            discovered_by_service: Arc::new(discovered_by_service),
            upstream_by_name: Arc::new(upstream_by_name),
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
        }
    }
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
