//! The running configuration as one immutable snapshot, swapped atomically and published
//! on every change.
//!
//! The request path loads the current [`Snapshot`] once per request and keeps that `Arc`
//! to the end, so a request finishes on the snapshot it started with. [`State`] is the one
//! place where configuration changes are applied: a config file reload, a fragment set by
//! another source, or endpoints found by discovery. Each builds a new snapshot off the
//! request path, swaps it in, and publishes it on a `watch` channel, which background
//! services follow instead of polling.

mod reload_log;
mod snapshot;

pub use reload_log::{ReloadLog, ReloadRecord};

use crate::compile::incremental::Compilation;
use crate::compile::Compiled;
use crate::lifecycle::Lifecycle;
use crate::model::{
    EndpointConfig, EndpointSource, Fragment, ListenerConfig, ListenerProtocol, Origin, Rejected,
    ServiceRef,
};
use crate::observe::metrics::METRICS;
use crate::sockets;
use crate::sources::file::{self, ConfigErrors, FileConfig};
use crate::sources::FILE_SOURCE;
use crate::tls::client_auth::GatewayClientVerifier;
use crate::tls::{CertificateSet, SniResolver};
use crate::upstream::connections::UpstreamConnections;
use arc_swap::ArcSwap;
pub use snapshot::{Route, RouteAuth, RouteBackend, RouteMirror, Snapshot};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::watch;

/// Why a reload did not take effect.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is invalid; every problem is listed.
    Invalid(ConfigErrors),
    /// The file changes something only a restart or graceful upgrade can change.
    NeedsUpgrade(String),
    /// The file would remove every route without saying so (`routes: []`).
    RemovesEveryRoute(usize),
}

impl std::error::Error for ReloadError {}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(errors) => write!(f, "{errors}"),
            ReloadError::NeedsUpgrade(what) => write!(
                f,
                "{what}; listeners change only through a graceful upgrade (sluice -u); \
                 the running config is kept"
            ),
            ReloadError::RemovesEveryRoute(running) => write!(
                f,
                "the file has no routes key, so this reload would remove all {running} \
                 running routes; write `routes: []` to mean it (a truncated or half-written \
                 file looks like this); the running config is kept"
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
    /// These sources (the Ingress controller, say) have not applied their first sync.
    SourcesUnsynced(Vec<String>),
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
            NotReady::SourcesUnsynced(sources) => write!(
                f,
                "waiting for the first sync of sources: {}",
                sources.join(", ")
            ),
            NotReady::ListenersNotAccepting(listeners) => {
                write!(f, "listeners not accepting yet: {}", listeners.join(", "))
            }
        }
    }
}

/// What snapshots are built from, changed under [`State`]'s rebuild lock.
struct Inputs {
    /// The config file's last accepted version.
    file: Arc<FileConfig>,
    /// The fragments of the other sources: source → key → fragment.
    fragments: BTreeMap<String, BTreeMap<String, Arc<Fragment>>>,
    /// Endpoints found by discovery, by upstream name.
    discovered: HashMap<String, Vec<EndpointConfig>>,
    /// Upstreams whose source has completed a first sync.
    synced: HashSet<String>,
    /// The compiler's result for the file and the fragments above, kept so that a change
    /// re-admits the changed fragments only.
    compilation: Compilation,
}

impl Inputs {
    /// Every fragment on offer as (source, key, fragment): the file's and every source's.
    fn offered(&self) -> Vec<(String, String, Arc<Fragment>)> {
        let file = (
            FILE_SOURCE.to_string(),
            String::new(),
            self.file.fragment.clone(),
        );
        let fragments = self.fragments.iter().flat_map(|(source, fragments)| {
            fragments
                .iter()
                .map(move |(key, fragment)| (source.clone(), key.clone(), fragment.clone()))
        });
        std::iter::once(file).chain(fragments).collect()
    }

    /// Compiles the file and every fragment from scratch.
    fn compile_all(&mut self) {
        self.compilation = Compilation::full(&self.file.settings, self.offered());
    }

    /// Applies changes of `source`'s fragments (already made to `fragments`) to the
    /// compilation: incrementally when precedence has nothing to decide, else in full.
    fn compile_changes(&mut self, source: &str, changes: &[(String, Option<Arc<Fragment>>)]) {
        if self.compilation.change(source, changes).is_err() {
            self.compile_all();
        }
    }
}

/// What became of one fragment of [`State::set_fragments`].
#[derive(Debug, Clone)]
pub struct FragmentOutcome {
    pub key: String,
    /// The problems of the fragment set, if the compiler rejected it.
    pub rejected: Option<Rejected>,
    /// It was rejected and the key's previous, accepted fragment keeps serving.
    pub kept_previous: bool,
}

/// A follower of the published snapshots: `borrow()` is the current one, `changed()` waits
/// for the next. The handle the health checker gets.
pub type Snapshots = watch::Receiver<Arc<Snapshot>>;

/// The handle discovery gets: it follows the snapshots and sets the endpoints of discovered
/// upstreams, and can do nothing else to the process.
#[derive(Clone)]
pub struct EndpointsPublisher {
    state: Arc<State>,
}

impl EndpointsPublisher {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }

    /// A follower of the snapshots published from now on.
    pub fn subscribe(&self) -> Snapshots {
        self.state.subscribe()
    }

    /// See [`State::set_discovered`].
    pub fn set_discovered(&self, upstream: &str, endpoints: Vec<EndpointConfig>) {
        self.state.set_discovered(upstream, endpoints);
    }

    /// Gives the snapshot builder `seed`, the endpoints discovery already knows for a
    /// service, for upstreams that appear after their namespace was listed. Set once.
    pub fn set_endpoint_seed(&self, seed: EndpointSeed) {
        if self.state.endpoint_seed.set(seed).is_err() {
            log::warn!("an endpoint seed was already set; the first one stays");
        }
    }
}

/// The endpoints discovery knows for a service, or `None` before its namespace is listed.
pub type EndpointSeed = Arc<dyn Fn(&ServiceRef) -> Option<Vec<EndpointConfig>> + Send + Sync>;

/// The process's current snapshot and readiness.
pub struct State {
    current: ArcSwap<Snapshot>,
    /// Every new snapshot, for the services that follow changes.
    published: watch::Sender<Arc<Snapshot>>,
    /// Serialises snapshot rebuilds (reload, sources, discovery), so none loses another's
    /// change.
    rebuild: Mutex<Inputs>,
    next_generation: AtomicU64,
    /// Set once SIGHUP is handled: before that a SIGHUP would kill the process.
    reload_armed: AtomicBool,
    /// The process has been ready once.
    ready_once: AtomicBool,
    /// Sources that have not applied their first sync yet.
    sources_unsynced: Mutex<BTreeSet<String>>,
    /// What discovery knows, for upstreams added after their namespace was listed.
    endpoint_seed: OnceLock<EndpointSeed>,
    /// Upstream HTTP/1 connections: uses per socket, and closing the idle ones of removed
    /// endpoints through every listener's pool.
    pub connections: UpstreamConnections,
    /// Draining and open work, for stop and upgrade.
    pub lifecycle: Arc<Lifecycle>,
    /// The certificate resolver of each TLS listener, by listener name.
    tls_resolvers: HashMap<String, Arc<SniResolver>>,
    /// Of the TLS http listeners without `tls.client_auth`: the client certificate checks
    /// Gateways ask of them, swapped like the certificates.
    client_verifiers: HashMap<String, Arc<GatewayClientVerifier>>,
    /// The config file the process started with: its `server` and `access_log` settings
    /// stay in effect until the next start or upgrade, whatever later reloads say.
    started: Arc<FileConfig>,
    /// The last reloads of the config file.
    pub reloads: ReloadLog,
}

impl State {
    /// Starts with the already checked config file `file`.
    pub fn new(file: FileConfig) -> Self {
        let file = Arc::new(file);
        let mut inputs = Inputs {
            file: file.clone(),
            fragments: BTreeMap::new(),
            discovered: HashMap::new(),
            synced: HashSet::new(),
            compilation: Compilation::full(&file.settings, Vec::new()),
        };
        inputs.compile_all();
        let compiled = inputs.compilation.compiled();
        let snapshot = Snapshot::build(compiled, file.clone(), 1, None, &inputs.discovered);
        let tls_resolvers = snapshot
            .config
            .tls
            .iter()
            .filter_map(|listener| {
                let set = CertificateSet::new(&listener.certificates)?;
                Some((listener.listener.clone(), Arc::new(SniResolver::new(set))))
            })
            .collect();
        let client_verifiers = snapshot
            .config
            .listeners
            .iter()
            .filter(|l| l.tls && l.protocol == ListenerProtocol::Http && l.client_auth.is_none())
            .map(|l| {
                (
                    l.name.clone(),
                    Arc::new(GatewayClientVerifier::new(&l.name)),
                )
            })
            .collect();
        let snapshot = Arc::new(snapshot);
        let state = Self {
            reloads: ReloadLog::default(),
            started: file,
            tls_resolvers,
            client_verifiers,
            current: ArcSwap::new(snapshot.clone()),
            published: watch::Sender::new(snapshot),
            rebuild: Mutex::new(inputs),
            next_generation: AtomicU64::new(2),
            reload_armed: AtomicBool::new(false),
            ready_once: AtomicBool::new(false),
            sources_unsynced: Mutex::default(),
            endpoint_seed: OnceLock::new(),
            connections: UpstreamConnections::default(),
            lifecycle: Arc::default(),
        };
        state.swap_client_validations(&state.snapshot());
        state
    }

    /// The Gateways' client certificate checks of TLS listener `listener`, if it has no
    /// `tls.client_auth` of its own.
    pub fn client_verifier(&self, listener: &str) -> Option<Arc<GatewayClientVerifier>> {
        self.client_verifiers.get(listener).cloned()
    }

    /// Makes the next handshakes check what `snapshot` asks of the listeners' clients.
    fn swap_client_validations(&self, snapshot: &Snapshot) {
        for listener in &snapshot.config.tls {
            if let Some(verifier) = self.client_verifiers.get(&listener.listener) {
                verifier.replace(listener.client_validation.as_ref());
            }
        }
    }

    /// The certificate resolver of TLS listener `listener`.
    pub fn tls_resolver(&self, listener: &str) -> Option<Arc<SniResolver>> {
        self.tls_resolvers.get(listener).cloned()
    }

    /// The config file the process started with (see [`Self::started`]'s field doc).
    pub fn started_file(&self) -> &FileConfig {
        &self.started
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A receiver of every new snapshot (its first `changed()` waits for the next one).
    pub fn subscribe(&self) -> Snapshots {
        self.published.subscribe()
    }

    /// The narrow handle discovery needs.
    pub fn endpoints_publisher(self: &Arc<Self>) -> EndpointsPublisher {
        EndpointsPublisher {
            state: self.clone(),
        }
    }

    /// Re-reads the config file and swaps it in; on any error the running snapshot stays.
    /// Reads files: call it off the async worker threads.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let path = self.snapshot().file.path.clone();
        let loaded = file::load(&path).map_err(ReloadError::Invalid)?;
        let mut inputs = self.lock_rebuild();
        let previous = self.current.load_full();
        let running = &previous.file.settings;
        let settings = &loaded.settings;
        if !same_listeners(&settings.listeners, &running.listeners) {
            return Err(ReloadError::NeedsUpgrade("the listeners changed".into()));
        }
        if settings.admin.listen != running.admin.listen
            || settings.admin.metrics_listen != running.admin.metrics_listen
        {
            return Err(ReloadError::NeedsUpgrade(
                "admin.listen or admin.metrics_listen changed".into(),
            ));
        }
        let running_routes = previous.file.fragment.routes.len();
        if loaded.fragment.routes.is_empty() && running_routes > 0 {
            if !loaded.routes_declared {
                return Err(ReloadError::RemovesEveryRoute(running_routes));
            }
            log::warn!(
                "config reload removes all {running_routes} routes of {} (routes: [])",
                path.display()
            );
        }
        if settings.access_log != running.access_log
            || settings.server.threads != running.server.threads
        {
            log::warn!(
                "access_log and server.threads changes take effect at the next start or upgrade"
            );
        }
        let old_file = std::mem::replace(&mut inputs.file, Arc::new(loaded));
        inputs.compile_all();
        let compiled = inputs.compilation.compiled();
        if let Some(rejected) = compiled.rejected.iter().find(|r| r.source == FILE_SOURCE) {
            // The file was checked alone when loaded and goes first, so this cannot
            // happen; if it did, the file must not go live in part.
            let errors = rejected
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>();
            inputs.file = old_file;
            inputs.compile_all();
            return Err(ReloadError::NeedsUpgrade(format!(
                "the file was rejected by the compiler: {}",
                errors.join("; ")
            )));
        }
        Ok(self.apply(inputs, compiled, &previous))
    }

    /// Sets (`Some`) or removes (`None`) the fragment `key` of `source` and applies the
    /// result; see [`Self::set_fragments`]. Returns the new generation and the fragment's
    /// problems, if rejected.
    pub fn set_fragment(
        &self,
        source: &str,
        key: &str,
        fragment: Option<Fragment>,
    ) -> (u64, Option<Rejected>) {
        let (generation, mut outcomes) =
            self.set_fragments(source, vec![(key.to_string(), fragment.map(Arc::new))]);
        (generation, outcomes.pop().and_then(|o| o.rejected))
    }

    /// Sets or removes several fragments of `source` and applies them as one change (one
    /// compile, one snapshot). A fragment the compiler rejects does not go live; if the
    /// source had an accepted fragment under that key, that previous version keeps serving.
    /// Returns the new generation and the outcome of each change, in order.
    pub fn set_fragments(
        &self,
        source: &str,
        changes: Vec<(String, Option<Arc<Fragment>>)>,
    ) -> (u64, Vec<FragmentOutcome>) {
        let mut inputs = self.lock_rebuild();
        let previous = self.current.load_full();
        let fragments = inputs.fragments.entry(source.to_string()).or_default();
        let mut replaced = Vec::with_capacity(changes.len());
        let changed = changes.clone();
        for (key, fragment) in changes {
            let origin = fragment.as_ref().map(|f| f.origin.clone());
            let before = match fragment {
                Some(fragment) => fragments.insert(key.clone(), fragment),
                None => fragments.remove(&key),
            };
            replaced.push((key, origin, before));
        }
        inputs.compile_changes(source, &changed);
        let mut compiled = inputs.compilation.compiled();
        let rejected_now = |compiled: &Compiled, origin: &Option<Origin>| {
            compiled
                .rejected
                .iter()
                .find(|r| r.source == source && Some(&r.origin) == origin.as_ref())
                .cloned()
        };
        let mut outcomes = Vec::with_capacity(replaced.len());
        let mut restored = Vec::new();
        for (key, origin, before) in replaced {
            let rejected = rejected_now(&compiled, &origin);
            let accepted_before = before.as_ref().is_some_and(|b| {
                !previous
                    .rejected
                    .iter()
                    .any(|r| r.source == source && r.origin == b.origin)
            });
            let kept_previous = rejected.is_some() && accepted_before;
            if kept_previous {
                if let Some(before) = before {
                    let fragments = inputs.fragments.entry(source.to_string()).or_default();
                    fragments.insert(key.clone(), before.clone());
                    restored.push((key.clone(), Some(before)));
                }
            }
            outcomes.push(FragmentOutcome {
                key,
                rejected,
                kept_previous,
            });
        }
        if !restored.is_empty() {
            inputs.compile_changes(source, &restored);
            compiled = inputs.compilation.compiled();
        }
        (self.apply(inputs, compiled, &previous), outcomes)
    }

    /// What the compiler would say of fragment `key` of `source` if it were set now, with
    /// no effect on the running config (the admission webhook's dry run).
    pub fn check_fragment(&self, source: &str, key: &str, fragment: Fragment) -> Option<Rejected> {
        let (settings, mut offered) = {
            let inputs = self.lock_rebuild();
            let mut offered = inputs.offered();
            offered.retain(|(s, k, _)| !(s == source && k == key));
            (inputs.file.clone(), offered)
        };
        // Compiled without the rebuild lock: a dry run must not hold up real changes.
        let origin = fragment.origin.clone();
        offered.push((source.to_string(), key.to_string(), Arc::new(fragment)));
        Compilation::full(&settings.settings, offered)
            .compiled()
            .rejected
            .into_iter()
            .find(|r| r.source == source && r.origin == origin)
    }

    /// Builds the snapshot of `compiled`, swaps and publishes it, and updates what follows
    /// from it (certificates, pooled connections to removed endpoints).
    fn apply(
        &self,
        mut inputs: MutexGuard<'_, Inputs>,
        compiled: Compiled,
        previous: &Snapshot,
    ) -> u64 {
        // The upstreams not at their place in the previous snapshot (all if their number
        // changed): only they can be gone, new or changed.
        let upstreams = &compiled.config.upstreams;
        let changed: Vec<usize> = if previous.upstreams.len() == upstreams.len() {
            (0..upstreams.len())
                .filter(|&i| !Arc::ptr_eq(&previous.upstreams[i].compiled, &upstreams[i]))
                .collect()
        } else {
            (0..upstreams.len().max(previous.upstreams.len())).collect()
        };
        // Forget what was discovered for upstreams that are gone or no longer discovered, so
        // one re-added later starts from its own first sync, not from stale endpoints.
        let discovered_now: HashSet<&str> = changed
            .iter()
            .filter_map(|&i| upstreams.get(i))
            .filter(|u| u.source.is_discovered())
            .map(|u| u.name.as_str())
            .collect();
        for &i in &changed {
            let Some(old) = previous.upstreams.get(i) else {
                continue;
            };
            // An unchanged place keeps its name; a changed place's old name may have moved
            // to another changed place (every place is, when their number changed).
            if !discovered_now.contains(old.name()) {
                inputs.discovered.remove(old.name());
                inputs.synced.remove(old.name());
            }
        }
        // A new upstream of a Service discovery already watches starts with its endpoints,
        // not with an empty pool until the next discovery event.
        if let Some(seed) = self.endpoint_seed.get() {
            for upstream in changed.iter().filter_map(|&i| upstreams.get(i)) {
                let EndpointSource::Kubernetes(service) = &upstream.source else {
                    continue;
                };
                if inputs.discovered.contains_key(&upstream.name) {
                    continue;
                }
                if let Some(endpoints) = seed(service) {
                    inputs.synced.insert(upstream.name.clone());
                    inputs.discovered.insert(upstream.name.clone(), endpoints);
                }
            }
        }
        log_rejections(&previous.rejected, &compiled.rejected);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let snapshot = Snapshot::build(
            compiled,
            inputs.file.clone(),
            generation,
            Some(previous),
            &inputs.discovered,
        );
        // Certificates are swapped for new handshakes; open connections keep theirs.
        for listener in &snapshot.config.tls {
            let set = CertificateSet::new(&listener.certificates);
            if let (Some(resolver), Some(set)) = (self.tls_resolvers.get(&listener.listener), set) {
                resolver.replace(set);
            }
        }
        self.swap_client_validations(&snapshot);
        let sources =
            std::iter::once(FILE_SOURCE).chain(inputs.fragments.keys().map(String::as_str));
        count_rejections(&snapshot, sources);
        METRICS.config_generation.set(generation as i64);
        // Endpoints can only have gone with the upstreams that changed.
        let before: HashSet<SocketAddr> = changed
            .iter()
            .filter_map(|&i| previous.upstreams.get(i))
            .flat_map(|u| u.endpoints.iter().map(|e| e.address))
            .collect();
        let snapshot = Arc::new(snapshot);
        self.publish(snapshot.clone());
        drop(inputs);
        self.connections.endpoints_present(
            snapshot
                .upstreams
                .iter()
                .flat_map(|u| u.endpoints.iter().map(|e| e.address)),
        );
        self.close_connections_of_removed(before, &snapshot);
        generation
    }

    /// Makes `snapshot` the current one and tells the followers.
    fn publish(&self, snapshot: Arc<Snapshot>) {
        self.current.store(snapshot.clone());
        self.published.send_replace(snapshot);
    }

    /// Replaces the discovered endpoints of `upstream` and swaps in a snapshot using them.
    pub fn set_discovered(&self, upstream: &str, endpoints: Vec<EndpointConfig>) {
        let mut inputs = self.lock_rebuild();
        // Discovery read an older snapshot: an upstream removed since then is not fed (if it
        // comes back, it is seeded afresh).
        if !self.current.load().upstream_by_name.contains_key(upstream) {
            return;
        }
        inputs.synced.insert(upstream.to_string());
        if inputs.discovered.get(upstream) == Some(&endpoints) {
            return;
        }
        inputs
            .discovered
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
            self.publish(snapshot.clone());
            // Routing has changed; closing connections may scan every upstream, so it
            // happens after the swap and outside the rebuild lock.
            drop(inputs);
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
        let inputs = self.lock_rebuild();
        self.current
            .load()
            .config
            .upstreams
            .iter()
            .filter(|u| {
                !matches!(u.source, EndpointSource::Static) && !inputs.synced.contains(&u.name)
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

    /// Records that `source` will offer fragments and that readiness waits for its first
    /// sync.
    pub fn source_pending(&self, source: &str) {
        self.lock_sources().insert(source.to_string());
    }

    /// Records that `source` has applied its first sync.
    pub fn source_synced(&self, source: &str) {
        self.lock_sources().remove(source);
    }

    fn lock_sources(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.sources_unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock_rebuild(&self) -> MutexGuard<'_, Inputs> {
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
        let sources: Vec<String> = self.lock_sources().iter().cloned().collect();
        if !sources.is_empty() {
            return Err(NotReady::SourcesUnsynced(sources));
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

/// Whether two listener lists bind the same sockets the same way (origins aside: moving a
/// listener within the file changes nothing).
fn same_listeners(a: &[ListenerConfig], b: &[ListenerConfig]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            let a = ListenerConfig {
                origin: b.origin.clone(),
                ..a.clone()
            };
            a == *b
        })
}

/// Logs the fragments that are rejected now and were not before (a fragment set, or one an
/// older claim or a reload displaced), and those accepted again.
fn log_rejections(before: &[Rejected], now: &[Rejected]) {
    let key = |r: &Rejected| (r.source.clone(), r.origin.clone());
    let was: HashSet<_> = before.iter().map(key).collect();
    let is: HashSet<_> = now.iter().map(key).collect();
    for rejected in now.iter().filter(|r| !was.contains(&key(r))) {
        for problem in &rejected.problems {
            log::warn!("{} fragment rejected: {problem}", rejected.source);
        }
    }
    for accepted in before.iter().filter(|r| !is.contains(&key(r))) {
        log::info!(
            "{} fragment {} no longer rejected",
            accepted.source,
            accepted.origin
        );
    }
}

/// Sets `sluice_config_rejected_fragments{source}` from the rejections of `snapshot`.
fn count_rejections<'a>(snapshot: &'a Snapshot, sources: impl Iterator<Item = &'a str>) {
    let mut counts: BTreeMap<&str, i64> = sources.map(|source| (source, 0)).collect();
    for rejected in snapshot.rejected.iter() {
        *counts.entry(&rejected.source).or_default() += 1;
    }
    for (source, count) in counts {
        METRICS
            .config_rejected_fragments
            .with_label_values(&[source])
            .set(count);
    }
}
