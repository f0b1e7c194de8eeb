//! The running configuration as one immutable snapshot, swapped atomically on reload.
//!
//! The request path loads the current [`Snapshot`] once per request and keeps that `Arc`
//! to the end, so a request finishes on the snapshot it started with. Reload builds a whole
//! new snapshot off the request path, carrying over the live state (in-flight counts, retry
//! budgets) of upstreams and endpoints that remain, then swaps it in.

use crate::config::{
    self, BodyPolicy, Config, ConfigErrors, EndpointConfig, EndpointSource, Timeouts,
};
use crate::lifecycle::Lifecycle;
use crate::observe::metrics::RouteMetrics;
use crate::proxy::rate_limit::RouteLimiter;
use crate::routing::RouteTable;
use crate::sockets;
use crate::tls::{CertificateSet, SniResolver};
use crate::upstream::connections::UpstreamConnections;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A route at run time.
pub struct Route {
    pub name: String,
    /// Index into [`Snapshot::upstreams`].
    pub upstream: usize,
    /// The upstream's timeouts with the route's overrides applied.
    pub timeouts: Timeouts,
    /// Kept across reloads that keep the route's limit, so counts carry on.
    pub limiter: Option<Arc<RouteLimiter>>,
    /// Resolved metric handles, kept across rebuilds.
    pub metrics: Arc<RouteMetrics>,
    /// Request body size limit and buffering.
    pub body: BodyPolicy,
}

/// Everything the request path needs, for one config generation.
pub struct Snapshot {
    /// The config generation (1 at start, +1 per successful reload).
    pub generation: u64,
    /// +1 for every swap, config reload or discovery update.
    pub revision: u64,
    pub config: Arc<Config>,
    /// Route tables by listener name.
    pub route_tables: Arc<HashMap<String, RouteTable>>,
    pub routes: Arc<[Route]>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Indexes of the discovered upstreams, by (namespace, service) of their source, so a
    /// discovery event finds its upstreams without scanning them all.
    discovered_by_service: Arc<HashMap<(String, String), Vec<usize>>>,
    /// Index of each upstream in `upstreams`, by name.
    upstream_by_name: Arc<HashMap<String, usize>>,
}

impl Snapshot {
    /// Builds the snapshot of `config`, keeping live state from `previous`; upstreams fed by
    /// discovery take their endpoints from `discovered` (none until their first sync).
    fn build(
        mut config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        discovered: &HashMap<String, Vec<EndpointConfig>>,
    ) -> Self {
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
        let upstream_index: HashMap<&str, usize> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        let routes: Arc<[Route]> = config
            .routes
            .iter()
            .filter_map(|r| {
                // Validation guarantees the upstream exists.
                let upstream = *upstream_index.get(r.upstream.as_str())?;
                let old = previous.and_then(|p| p.routes.iter().find(|old| old.name == r.name));
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
        let upstream_by_name = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        Self {
            generation,
            revision: previous.map_or(1, |p| p.revision + 1),
            config: Arc::new(config),
            route_tables,
            routes,
            upstreams,
            discovered_by_service: Arc::new(discovered_by_service),
            upstream_by_name: Arc::new(upstream_by_name),
        }
    }
}

impl Snapshot {
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
    ) -> impl Iterator<Item = &config::UpstreamConfig> {
        self.discovered_by_service
            .get(&(namespace.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .map(|&i| &self.config.upstreams[i])
    }

    /// This snapshot with upstream `index` rebuilt on `endpoints`; every other upstream,
    /// route and table is shared, so a discovery update costs one upstream, not all.
    fn with_endpoints(&self, index: usize, endpoints: Vec<EndpointConfig>) -> Self {
        let previous = &self.upstreams[index];
        let mut config = previous.config.clone();
        config.endpoints = endpoints;
        let mut upstreams = self.upstreams.clone();
        upstreams[index] = Arc::new(Upstream::build(&config, Some(previous)));
        Self {
            generation: self.generation,
            revision: self.revision + 1,
            config: self.config.clone(),
            route_tables: self.route_tables.clone(),
            routes: self.routes.clone(),
            upstreams,
            discovered_by_service: self.discovered_by_service.clone(),
            upstream_by_name: self.upstream_by_name.clone(),
        }
    }
}

/// Why a reload did not take effect.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is invalid; every problem is listed.
    Invalid(ConfigErrors),
    /// The file changes something only a restart or graceful upgrade can change.
    NeedsUpgrade(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(errors) => write!(f, "{errors}"),
            ReloadError::NeedsUpgrade(what) => write!(
                f,
                "{what}; listeners change only through a graceful upgrade (sluice -u); \
                 the running config is kept"
            ),
        }
    }
}

/// Why `/readyz` is not 200.
#[derive(Debug, PartialEq)]
pub enum NotReady {
    /// A stop or upgrade has begun.
    Draining,
    /// The process's background services are still starting.
    Starting,
    /// These discovered upstreams wait for their first Kubernetes sync.
    DiscoveryUnsynced(Vec<String>),
    /// These listeners are not bound yet.
    ListenersNotAccepting(Vec<String>),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Draining => write!(f, "draining"),
            NotReady::Starting => write!(f, "starting"),
            NotReady::DiscoveryUnsynced(upstreams) => write!(
                f,
                "waiting for the first Kubernetes sync of upstreams: {}",
                upstreams.join(", ")
            ),
            NotReady::ListenersNotAccepting(listeners) => {
                write!(f, "listeners not accepting yet: {}", listeners.join(", "))
            }
        }
    }
}

/// Endpoints found by discovery, by upstream name.
#[derive(Default)]
struct Discovered {
    endpoints: HashMap<String, Vec<EndpointConfig>>,
    /// Upstreams whose source has completed a first sync.
    synced: HashSet<String>,
}

/// The process's current snapshot and readiness.
pub struct State {
    path: PathBuf,
    current: ArcSwap<Snapshot>,
    /// Serialises snapshot rebuilds (reload and discovery), so neither loses the other's change.
    rebuild: Mutex<Discovered>,
    next_generation: AtomicU64,
    /// Set once SIGHUP is handled: before that a SIGHUP would kill the process.
    reload_armed: AtomicBool,
    /// The process has been ready once.
    ready_once: AtomicBool,
    /// Upstream HTTP/1 connections: uses per socket, and closing the idle ones of removed
    /// endpoints through every listener's pool.
    pub connections: UpstreamConnections,
    /// Draining and open work, for stop and upgrade.
    pub lifecycle: Arc<Lifecycle>,
    /// The certificate resolver of each TLS listener, by listener name.
    tls_resolvers: HashMap<String, Arc<SniResolver>>,
    /// The config the process started with: its `server` and `access_log` settings stay in
    /// effect until the next start or upgrade, whatever later reloads say.
    started: Arc<Config>,
}

impl State {
    /// Starts with the already validated `config`, read from `path`.
    pub fn new(path: &Path, config: Config) -> Self {
        let discovered = Discovered::default();
        let tls_resolvers = config
            .tls
            .iter()
            .filter_map(|listener| {
                let set = CertificateSet::new(&listener.certificates)?;
                Some((listener.listener.clone(), Arc::new(SniResolver::new(set))))
            })
            .collect();
        let snapshot = Snapshot::build(config, 1, None, &discovered.endpoints);
        Self {
            started: snapshot.config.clone(),
            tls_resolvers,
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(snapshot),
            rebuild: Mutex::new(discovered),
            next_generation: AtomicU64::new(2),
            reload_armed: AtomicBool::new(false),
            ready_once: AtomicBool::new(false),
            connections: UpstreamConnections::default(),
            lifecycle: Arc::default(),
        }
    }

    /// The certificate resolver of TLS listener `listener`.
    pub fn tls_resolver(&self, listener: &str) -> Option<Arc<SniResolver>> {
        self.tls_resolvers.get(listener).cloned()
    }

    /// The config the process started with (see [`Self::started`]'s field doc).
    pub fn started_config(&self) -> &Config {
        &self.started
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the config file and swaps it in; on any error the running snapshot stays.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let config = config::load(&self.path).map_err(ReloadError::Invalid)?;
        let mut discovered = self.lock_rebuild();
        let previous = self.current.load();
        let running = &previous.config;
        if config.listeners != running.listeners {
            return Err(ReloadError::NeedsUpgrade("the listeners changed".into()));
        }
        if config.admin.listen != running.admin.listen
            || config.admin.metrics_listen != running.admin.metrics_listen
        {
            return Err(ReloadError::NeedsUpgrade(
                "admin.listen or admin.metrics_listen changed".into(),
            ));
        }
        if config.access_log != running.access_log
            || config.server.threads != running.server.threads
        {
            log::warn!(
                "access_log and server.threads changes take effect at the next start or upgrade"
            );
        }
        // Certificates are swapped for new handshakes; open connections keep theirs.
        for listener in &config.tls {
            let set = CertificateSet::new(&listener.certificates);
            if let (Some(resolver), Some(set)) = (self.tls_resolvers.get(&listener.listener), set) {
                resolver.replace(set);
            }
        }
        // Forget what was discovered for upstreams that are gone or no longer discovered, so
        // one re-added later starts from its own first sync, not from stale endpoints.
        let discovered_upstreams: HashSet<&str> = config
            .upstreams
            .iter()
            .filter(|u| matches!(u.source, EndpointSource::Kubernetes(_)))
            .map(|u| u.name.as_str())
            .collect();
        discovered
            .endpoints
            .retain(|name, _| discovered_upstreams.contains(name.as_str()));
        discovered
            .synced
            .retain(|name| discovered_upstreams.contains(name.as_str()));
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let snapshot = Snapshot::build(config, generation, Some(&previous), &discovered.endpoints);
        let before: HashSet<SocketAddr> = previous
            .upstreams
            .iter()
            .flat_map(|u| u.endpoints.iter().map(|e| e.address))
            .collect();
        let snapshot = Arc::new(snapshot);
        self.current.store(snapshot.clone());
        drop(discovered);
        self.connections.endpoints_present(
            snapshot
                .upstreams
                .iter()
                .flat_map(|u| u.endpoints.iter().map(|e| e.address)),
        );
        self.close_connections_of_removed(before, &snapshot);
        Ok(generation)
    }

    /// Replaces the discovered endpoints of `upstream` and swaps in a snapshot using them.
    pub fn set_discovered(&self, upstream: &str, endpoints: Vec<EndpointConfig>) {
        let mut discovered = self.lock_rebuild();
        discovered.synced.insert(upstream.to_string());
        if discovered.endpoints.get(upstream) == Some(&endpoints) {
            return;
        }
        discovered
            .endpoints
            .insert(upstream.to_string(), endpoints.clone());
        let previous = self.current.load();
        if let Some(&index) = previous.upstream_by_name.get(upstream) {
            let before: HashSet<SocketAddr> = previous.upstreams[index]
                .endpoints
                .iter()
                .map(|e| e.address)
                .filter(|address| !endpoints.iter().any(|e| e.address == *address))
                .collect();
            let snapshot = Arc::new(previous.with_endpoints(index, endpoints));
            self.current.store(snapshot.clone());
            // Routing has changed; closing connections may scan every upstream, so it
            // happens after the swap and outside the rebuild lock.
            drop(discovered);
            self.connections.endpoints_present(
                snapshot.upstreams[index]
                    .endpoints
                    .iter()
                    .map(|e| e.address),
            );
            self.close_connections_of_removed(before, &snapshot);
        }
    }

    /// Closes the pooled idle connections to those of `candidates` that no upstream of
    /// `next` has (connections in use close when their request ends).
    fn close_connections_of_removed(&self, candidates: HashSet<SocketAddr>, next: &Snapshot) {
        if candidates.is_empty() {
            return;
        }
        let mut removed = self.connections.connected_to(&candidates);
        if removed.is_empty() {
            return;
        }
        for upstream in &next.upstreams {
            for endpoint in upstream.endpoints.iter() {
                removed.remove(&endpoint.address);
            }
        }
        if removed.is_empty() {
            return;
        }
        let closed = self.connections.close_idle_to(&removed);
        log::info!(
            "endpoints removed: {}; closed {closed} idle upstream connections to them",
            removed
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// The discovered upstreams of the current snapshot that have not synced once yet.
    pub fn discovery_unsynced(&self) -> Vec<String> {
        let discovered = self.lock_rebuild();
        self.current
            .load()
            .config
            .upstreams
            .iter()
            .filter(|u| {
                !matches!(u.source, EndpointSource::Static) && !discovered.synced.contains(&u.name)
            })
            .map(|u| u.name.clone())
            .collect()
    }

    /// The listeners that are not bound and listening yet: Pingora binds each service's
    /// listeners when that service starts, which can be after the admin listener answers.
    /// Read from the kernel's socket table rather than by connecting, which on a tcp
    /// listener would open a connection to a backend. Reads /proc: call it off the async
    /// worker threads.
    fn listeners_not_accepting(&self) -> Vec<String> {
        let listening = sockets::listening_tcp();
        self.current
            .load()
            .config
            .listeners
            .iter()
            .filter(|listener| !listening.contains(&listener.listen))
            .map(|listener| format!("{} ({})", listener.name, listener.listen))
            .collect()
    }

    fn lock_rebuild(&self) -> MutexGuard<'_, Discovered> {
        // The map stays consistent even if a holder panicked.
        self.rebuild.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `/readyz` should answer 200, and if not, why: the config is loaded, every
    /// listener accepts, reloads are handled, every discovery source has synced once, and
    /// no stop or upgrade has begun. Once ready, a reload that adds a discovered upstream
    /// does not make the node unready again (the API may be down just then; the other
    /// upstreams serve meanwhile). Backend health plays no part. May read /proc: call it
    /// off the async worker threads.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.lifecycle.is_draining() {
            return Err(NotReady::Draining);
        }
        if self.ready_once.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.reload_armed.load(Ordering::Relaxed) || !self.lifecycle.signals_armed() {
            return Err(NotReady::Starting);
        }
        let unsynced = self.discovery_unsynced();
        if !unsynced.is_empty() {
            return Err(NotReady::DiscoveryUnsynced(unsynced));
        }
        let not_accepting = self.listeners_not_accepting();
        if !not_accepting.is_empty() {
            return Err(NotReady::ListenersNotAccepting(not_accepting));
        }
        self.ready_once.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Records that SIGHUP now triggers a reload.
    pub fn set_reload_armed(&self) {
        self.reload_armed.store(true, Ordering::Relaxed);
    }
}
