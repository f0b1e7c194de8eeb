//! Kubernetes EndpointSlice discovery: one watch per namespace, feeding upstreams live.
//!
//! A background service watches the EndpointSlices of every namespace that kubernetes
//! upstreams name, through kube-runtime's watcher (list, then watch from the list's
//! resourceVersion; on 410 Gone it relists; on errors it retries with capped exponential
//! backoff), and keeps them in a cache shared with [`crate::state::State`]. Every change
//! recomputes the endpoint set of the upstreams of that service and swaps in a new
//! snapshot, off the request path. Errors never empty a pool: the last known endpoints
//! stay until the API answers again.
//!
//! The cache holds every slice of a watched namespace, not only those of today's
//! upstreams: an upstream added later for another Service of the namespace (an Ingress
//! switched to a new Service, say) gets its endpoints from the cache in the very snapshot
//! that adds it, so its first requests never meet an empty pool. A change of the upstreams
//! of a namespace (their services, ports or terminating policy) recomputes them from the
//! cache; the watch keeps running.

use crate::model::{EndpointConfig, EndpointSource, KubernetesClient, ServiceRef, UpstreamConfig};
use crate::observe::metrics::METRICS;
use crate::sources::kubernetes::endpoint_slices::{endpoints_of, service_of};
use crate::state::{EndpointSeed, EndpointsPublisher};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// First wait after a failure to set up the API client; doubled per failure up to
/// [`CLIENT_RETRY_MAX`], each with up to ±20% jitter so that a fleet does not retry in step.
const CLIENT_RETRY_FIRST: Duration = Duration::from_secs(1);
const CLIENT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter for setting up the API client. (Watches use kube's own
/// `default_backoff`: 0.8 s doubling to 30 s, jittered, reset after 2 minutes of health.)
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    next_try: Option<tokio::time::Instant>,
}

impl Backoff {
    /// Whether a try is due now.
    fn due(&self) -> bool {
        self.next_try
            .is_none_or(|at| tokio::time::Instant::now() >= at)
    }

    /// Records a failure and schedules the next try; returns the wait.
    fn failed(&mut self) -> Duration {
        let doubled = CLIENT_RETRY_FIRST.saturating_mul(1 << self.failures.min(8));
        let wait = doubled
            .min(CLIENT_RETRY_MAX)
            .mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        self.failures += 1;
        self.next_try = Some(tokio::time::Instant::now() + wait);
        wait
    }

    /// Records a success; returns how many failures came before it.
    fn succeeded(&mut self) -> u32 {
        self.next_try = None;
        std::mem::take(&mut self.failures)
    }
}

/// Watches EndpointSlices for every kubernetes upstream of the running config.
pub struct KubernetesDiscovery {
    state: EndpointsPublisher,
    slices: SliceCache,
}

impl KubernetesDiscovery {
    /// Discovery feeding the endpoints of `state`'s discovered upstreams; new upstreams of
    /// watched namespaces are seeded from its cache.
    pub fn new(state: EndpointsPublisher) -> Self {
        let slices = SliceCache::default();
        let cache = slices.clone();
        let seed: EndpointSeed = Arc::new(move |service: &ServiceRef| cache.endpoints(service));
        state.set_endpoint_seed(seed);
        Self { state, slices }
    }
}

/// The slices of one watched namespace.
#[derive(Default)]
struct NamespaceSlices {
    /// The first list has arrived.
    synced: bool,
    index: SliceIndex,
}

/// The slices of every watched namespace, shared by the watches and the snapshot builder.
#[derive(Clone, Default)]
struct SliceCache(Arc<Mutex<HashMap<String, NamespaceSlices>>>);

impl SliceCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NamespaceSlices>> {
        // The map stays consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoints of `service`, if its namespace has been listed.
    fn endpoints(&self, service: &ServiceRef) -> Option<Vec<EndpointConfig>> {
        let namespaces = self.lock();
        let slices = namespaces.get(&service.namespace).filter(|n| n.synced)?;
        Some(endpoints_of(
            slices.index.of(&service.service),
            &service.port,
            service.terminating,
        ))
    }
}

/// A running namespace watch.
struct NamespaceWatch {
    /// The upstreams it feeds, with their service, port and terminating policy: a change
    /// recomputes them from the cache.
    feeds: BTreeSet<String>,
    handle: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for KubernetesDiscovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The service has one thread of its own (see server.rs); every watch runs on it.
        crate::priority::lower_current_thread();
        let mut watches: HashMap<String, NamespaceWatch> = HashMap::new();
        let mut client: Option<(Option<KubernetesClient>, Client)> = None;
        let mut applied_generation = 0;
        let mut client_backoff = Backoff::default();
        let mut snapshots = self.state.subscribe();
        // The last pass did not apply its snapshot (no API client yet): retry on backoff.
        let mut pending = false;
        let mut first = true;
        // What each namespace feeds (its upstreams, as text), as of the snapshot `fed`.
        let mut feeds: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut fed: Option<Arc<crate::state::Snapshot>> = None;
        loop {
            if !first {
                let retry_at = client_backoff.next_try.filter(|_| pending);
                tokio::select! {
                    _ = shutdown.changed() => break,
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    _ = sleep_until(retry_at), if retry_at.is_some() => {}
                }
            }
            first = false;
            let snapshot = snapshots.borrow_and_update().clone();
            if snapshot.generation == applied_generation {
                continue;
            }
            pending = true;
            update_feeds(&mut feeds, fed.as_deref(), &snapshot);
            fed = Some(snapshot.clone());
            watches.retain(|namespace, watch| {
                let keep = feeds.contains_key(namespace);
                if !keep {
                    watch.handle.abort();
                    self.slices.lock().remove(namespace);
                }
                keep
            });
            for (namespace, watch) in watches.iter_mut() {
                let Some(now) = feeds.get(namespace) else {
                    continue;
                };
                if *now != watch.feeds {
                    watch.feeds = now.clone();
                    publish(&self.state, &self.slices, namespace, None);
                }
            }
            if feeds.is_empty() {
                applied_generation = snapshot.generation;
                pending = false;
                continue;
            }
            let settings = snapshot.config.kubernetes.clone();
            if client.as_ref().is_none_or(|(s, _)| *s != settings) {
                if !client_backoff.due() {
                    continue;
                }
                match make_client(settings.as_ref()).await {
                    Ok(c) => {
                        client = Some((settings, c));
                        let failures = client_backoff.succeeded();
                        if failures > 0 {
                            log::info!(
                                "kubernetes discovery: API client set up after {failures} failed tries"
                            );
                        }
                    }
                    Err(e) => {
                        count_errors(&self.state, None);
                        let first = client_backoff.failures == 0;
                        let wait = client_backoff.failed();
                        // The state change is logged, not every try (they are counted in
                        // sluice_discovery_errors_total).
                        if first {
                            log::error!(
                                "kubernetes discovery: cannot set up the API client: {e}; \
                                 retrying with backoff (next in {wait:?}, at most every \
                                 {CLIENT_RETRY_MAX:?})"
                            );
                        } else {
                            log::debug!("kubernetes discovery: API client still failing: {e}");
                        }
                        continue;
                    }
                }
            }
            let Some((_, client)) = client.as_ref() else {
                continue;
            };
            for (namespace, feeds) in &feeds {
                if watches.contains_key(namespace) {
                    continue;
                }
                self.slices
                    .lock()
                    .insert(namespace.clone(), NamespaceSlices::default());
                let handle = tokio::spawn(watch_namespace(
                    self.state.clone(),
                    self.slices.clone(),
                    client.clone(),
                    namespace.clone(),
                ));
                let feeds = feeds.clone();
                watches.insert(namespace.clone(), NamespaceWatch { feeds, handle });
            }
            applied_generation = snapshot.generation;
            pending = false;
        }
        for (_, watch) in watches {
            watch.handle.abort();
        }
    }
}

/// The namespace an upstream is fed from, and what it is fed (its name, Service, port and
/// terminating policy, as text); `None` for upstreams not discovered from Kubernetes.
fn feed_of(upstream: &UpstreamConfig) -> Option<(&str, String)> {
    let EndpointSource::Kubernetes(service) = &upstream.source else {
        return None;
    };
    let feed = format!(
        "{} {} {:?} {:?}",
        upstream.name, service.service, service.port, service.terminating
    );
    Some((&service.namespace, feed))
}

/// Brings `feeds` from the upstreams of `before` to those of `after`, looking only at the
/// upstreams that are not the very same at the same place (one route's change among
/// thousands costs one upstream, not all).
fn update_feeds(
    feeds: &mut HashMap<String, BTreeSet<String>>,
    before: Option<&crate::state::Snapshot>,
    after: &crate::state::Snapshot,
) {
    let new = &after.config.upstreams;
    let old = match before {
        Some(before) if before.config.upstreams.len() == new.len() => &before.config.upstreams,
        _ => {
            feeds.clear();
            for (namespace, feed) in new.iter().filter_map(|u| feed_of(u)) {
                feeds.entry(namespace.to_string()).or_default().insert(feed);
            }
            return;
        }
    };
    let changed: Vec<usize> = (0..new.len())
        .filter(|&i| !Arc::ptr_eq(&old[i], &new[i]))
        .collect();
    for (namespace, feed) in changed.iter().filter_map(|&i| feed_of(&old[i])) {
        if let Some(set) = feeds.get_mut(namespace) {
            set.remove(&feed);
            if set.is_empty() {
                feeds.remove(namespace);
            }
        }
    }
    for (namespace, feed) in changed.iter().filter_map(|&i| feed_of(&new[i])) {
        feeds.entry(namespace.to_string()).or_default().insert(feed);
    }
}

/// Sleeps until `at` (forever without one: the caller disables the branch then).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The API client: from `kubernetes.api_server` (+ token and CA files) when set, else the
/// in-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
pub(crate) async fn make_client(settings: Option<&KubernetesClient>) -> Result<Client, String> {
    let config = match settings.and_then(|s| s.api_server.as_ref().map(|url| (s, url))) {
        Some((settings, url)) => {
            let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
            let kubeconfig: Kubeconfig = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{ "name": "sluice", "cluster": {
                    "server": url,
                    "certificate-authority": path(&settings.ca_file),
                }}],
                "users": [{ "name": "sluice", "user": { "tokenFile": path(&settings.token_file) } }],
                "contexts": [{ "name": "sluice", "context": { "cluster": "sluice", "user": "sluice" } }],
                "current-context": "sluice",
            }))
            .map_err(|e| format!("building client settings for {url}: {e}"))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("client settings for {url}: {e}"))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no in-cluster service account and no kubeconfig: {e}"))?,
    };
    let server = config.cluster_url.to_string();
    Client::try_from(config).map_err(|e| format!("client for {server}: {e}"))
}

/// Watches the slices of `namespace` into `cache` until aborted.
async fn watch_namespace(
    state: EndpointsPublisher,
    cache: SliceCache,
    client: Client,
    namespace: String,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    log::info!("kubernetes discovery: watching EndpointSlices in {namespace}");
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<SliceIndex> = None;
    // Errors since the watch last worked: the first is logged, the rest counted.
    let mut failing = 0u64;
    while let Some(event) = events.next().await {
        // `Init` starts every relist, failed ones too: only data shows the watch works.
        let data = matches!(
            event,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))
        );
        if data && failing > 0 {
            log::info!(
                "kubernetes discovery: watch of {namespace} works again after {failing} errors"
            );
            failing = 0;
        }
        let changed = {
            let mut namespaces = cache.lock();
            let Some(slices) = namespaces.get_mut(&namespace) else {
                return;
            };
            match event {
                Ok(Event::Init) => {
                    relist = Some(SliceIndex::default());
                    continue;
                }
                Ok(Event::InitApply(slice)) => {
                    relist.get_or_insert_with(SliceIndex::default).apply(slice);
                    continue;
                }
                Ok(Event::InitDone) => {
                    slices.index = relist.take().unwrap_or_default();
                    slices.synced = true;
                    None
                }
                Ok(Event::Apply(slice)) => Some(slices.index.apply(slice)),
                Ok(Event::Delete(slice)) => Some(slices.index.delete(&slice)),
                Err(e) => {
                    drop(namespaces);
                    if failing == 0 {
                        log::warn!(
                            "kubernetes discovery: watch of {namespace} failed, keeping the last \
                             known endpoints and retrying with backoff (errors are counted in \
                             sluice_discovery_errors_total; the recovery is logged): {e}"
                        );
                    } else {
                        log::debug!(
                            "kubernetes discovery: watch of {namespace} still failing: {e}"
                        );
                    }
                    failing += 1;
                    count_errors(&state, Some(&namespace));
                    continue;
                }
            }
        };
        publish(&state, &cache, &namespace, changed.as_deref());
    }
}

/// The slices of one namespace, by service and slice name, so that an event recomputes
/// one service from its own slices rather than scanning the namespace.
#[derive(Default)]
struct SliceIndex {
    by_service: HashMap<String, HashMap<String, EndpointSlice>>,
    /// The service each slice was filed under (a slice's label could change).
    service_of_slice: HashMap<String, String>,
}

impl SliceIndex {
    /// Files `slice`; returns its service.
    fn apply(&mut self, slice: EndpointSlice) -> String {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let service = service_of(&slice).unwrap_or_default().to_string();
        if let Some(old) = self.service_of_slice.insert(name.clone(), service.clone()) {
            if old != service {
                if let Some(slices) = self.by_service.get_mut(&old) {
                    slices.remove(&name);
                }
            }
        }
        self.by_service
            .entry(service.clone())
            .or_default()
            .insert(name, slice);
        service
    }

    /// Removes `slice`; returns the service it belonged to.
    fn delete(&mut self, slice: &EndpointSlice) -> String {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let service = self
            .service_of_slice
            .remove(&name)
            .unwrap_or_else(|| service_of(slice).unwrap_or_default().to_string());
        if let Some(slices) = self.by_service.get_mut(&service) {
            slices.remove(&name);
        }
        service
    }

    /// The slices of `service`.
    fn of(&self, service: &str) -> impl Iterator<Item = &EndpointSlice> {
        self.by_service
            .get(service)
            .into_iter()
            .flat_map(|s| s.values())
    }
}

/// Recomputes the endpoints of the upstreams of `service` (all services when `None`) in
/// `namespace` from the cache and swaps them in. The cache lock is not held while the
/// snapshot is rebuilt (the rebuild reads the cache to seed new upstreams).
fn publish(state: &EndpointsPublisher, cache: &SliceCache, namespace: &str, service: Option<&str>) {
    let snapshot = state.snapshot();
    let upstreams: Vec<&UpstreamConfig> = match service {
        Some(service) => snapshot.discovered_upstreams(namespace, service).collect(),
        None => snapshot
            .config
            .upstreams
            .iter()
            .filter(
                |u| matches!(&u.source, EndpointSource::Kubernetes(s) if s.namespace == namespace),
            )
            .map(|u| u.as_ref())
            .collect(),
    };
    let updates: Vec<(&UpstreamConfig, Vec<EndpointConfig>)> = {
        let namespaces = cache.lock();
        let Some(slices) = namespaces.get(namespace).filter(|n| n.synced) else {
            return;
        };
        upstreams
            .into_iter()
            .filter_map(|upstream| {
                let EndpointSource::Kubernetes(source) = &upstream.source else {
                    return None;
                };
                let endpoints = endpoints_of(
                    slices.index.of(&source.service),
                    &source.port,
                    source.terminating,
                );
                Some((upstream, endpoints))
            })
            .collect()
    };
    for (upstream, endpoints) in updates {
        if endpoints.is_empty() {
            if let EndpointSource::Kubernetes(source) = &upstream.source {
                log::warn!(
                    "upstream {}: service {namespace}/{} has no usable endpoints; requests get 503",
                    upstream.name,
                    source.service
                );
            }
        }
        METRICS
            .discovery_updates
            .with_label_values(&[&upstream.name])
            .inc();
        state.set_discovered(&upstream.name, endpoints);
    }
}

/// Counts a discovery error for the kubernetes upstreams of `namespace` (all when `None`).
fn count_errors(state: &EndpointsPublisher, namespace: Option<&str>) {
    for upstream in &state.snapshot().config.upstreams {
        if let EndpointSource::Kubernetes(source) = &upstream.source {
            if namespace.is_none_or(|n| n == source.namespace) {
                METRICS
                    .discovery_errors
                    .with_label_values(&[&upstream.name])
                    .inc();
            }
        }
    }
}
