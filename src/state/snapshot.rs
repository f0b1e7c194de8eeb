//! [`Snapshot`]: everything the request path needs for one version of the model, built
//! off the request path and carrying over the live state (in-flight counts, retry budgets,
//! rate-limit counts, metric handles) of the upstreams and routes that remain.

use crate::compile::Compiled;
use crate::model::{BodyPolicy, Config, EndpointConfig, EndpointSource, Rejected, Timeouts};
use crate::observe::metrics::RouteMetrics;
use crate::routing::rate_limit::RouteLimiter;
use crate::routing::RouteTable;
use crate::sources::file::FileConfig;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::sync::Arc;

/// A route at run time.
pub struct Route {
    pub name: String,
    /// Index into [`Snapshot::upstreams`].
    pub upstream: usize,
    /// The upstream's timeouts with the route's overrides applied.
    pub timeouts: Timeouts,
    /// Kept across rebuilds that keep the route's limit, so counts carry on.
    pub limiter: Option<Arc<RouteLimiter>>,
    /// Resolved metric handles, kept across rebuilds.
    pub metrics: Arc<RouteMetrics>,
    /// Request body size limit and buffering.
    pub body: BodyPolicy,
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
        for upstream in &mut config.upstreams {
            if let EndpointSource::Kubernetes(_) = upstream.source {
                upstream.endpoints = discovered.get(&upstream.name).cloned().unwrap_or_default();
            }
        }
        let previous_upstreams: HashMap<&str, &Upstream> = previous
            .map(|p| p.upstreams.iter().map(|u| (u.name(), u.as_ref())).collect())
            .unwrap_or_default();
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let previous = previous_upstreams.get(u.name.as_str()).copied();
                Arc::new(Upstream::build(u, previous))
            })
            .collect();
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
            .filter_map(|r| {
                // The compiler guarantees the upstream exists.
                let upstream = *upstream_by_name.get(r.upstream.as_str())?;
                let old = previous_routes.get(r.name.as_str());
                let metrics = old
                    .map(|old| old.metrics.clone())
                    .unwrap_or_else(|| Arc::new(RouteMetrics::new(&r.name)));
                let limiter = r.rate_limit.as_ref().map(|limit| {
                    old.and_then(|old| old.limiter.clone())
                        .filter(|old| old.config() == limit)
                        .unwrap_or_else(|| Arc::new(RouteLimiter::new(limit)))
                });
                Some(Route {
                    name: r.name.clone(),
                    upstream,
                    limiter,
                    metrics,
                    body: r.body,
                    timeouts: config.upstreams[upstream]
                        .timeouts
                        .with_overrides(&r.timeouts),
                })
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

    /// The route of tcp listener `listener`, as an index into [`Self::routes`].
    pub fn route_on_listener(&self, listener: &str) -> Option<usize> {
        let route = self.config.routes.iter().find(|r| r.listener == listener)?;
        self.routes.iter().position(|r| r.name == route.name)
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
            .map(|&i| &self.config.upstreams[i])
    }

    /// This snapshot with upstream `index` rebuilt on `endpoints`; every other upstream,
    /// route and table is shared, so a discovery update costs one upstream, not all.
    pub(super) fn with_endpoints(&self, index: usize, endpoints: Vec<EndpointConfig>) -> Self {
        let previous = &self.upstreams[index];
        let mut config = previous.config.clone();
        config.endpoints = endpoints;
        let mut upstreams = self.upstreams.clone();
        upstreams[index] = Arc::new(Upstream::build(&config, Some(previous)));
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
