//! The Gateway API controller: GatewayClasses, Gateways, HTTPRoutes, GRPCRoutes,
//! TLSRoutes and TCPRoutes (with the ReferenceGrants, Namespaces, Services and Secrets they
//! reference, and the BackendTLSPolicies of those Services with their ConfigMaps) become
//! fragments and status, without reloads.
//!
//! Watches feed one loop through a channel. After every batch of updates the whole set is
//! translated (a pure function, `sources::kubernetes::gateway`, that borrows the watched
//! objects), the fragments that changed go to [`State::set_fragments`] as one batch, and
//! the leader writes the status that differs from what the objects say, from a task of
//! its own ([`status`]). A route the compiler rejects (a conflict with
//! an older claim) is not accepted, with a Warning Event; its previous version keeps
//! serving. The first batch waits for every watch's first list, and `/readyz` waits for
//! it.

use crate::model::{Fragment, GatewaySettings, KubernetesClient, Origin, Rejected};
use crate::observe::metrics::METRICS;
use crate::services::leader::Election;
use crate::services::watch::{client_or_shutdown, spawn_watch, Watched};
use crate::sources::kubernetes::gateway::api::backendtlspolicies::BackendTlsPolicy;
use crate::sources::kubernetes::gateway::api::gatewayclasses::GatewayClass;
use crate::sources::kubernetes::gateway::api::gateways::Gateway;
use crate::sources::kubernetes::gateway::api::grpcroutes::GrpcRoute;
use crate::sources::kubernetes::gateway::api::httproutes::HttpRoute;
use crate::sources::kubernetes::gateway::api::listenersets::ListenerSet;
use crate::sources::kubernetes::gateway::api::referencegrants::ReferenceGrant;
use crate::sources::kubernetes::gateway::api::tcproutes::TcpRoute;
use crate::sources::kubernetes::gateway::api::tlsroutes::TlsRoute;
use crate::sources::kubernetes::gateway::{
    fragment_key, key_of, parse_fragment_key, retranslate_routes, translate_cached, GatewayObjects,
    ObjectKey, RouteCache, RouteId, RouteKind, Translation, CA_KEY,
};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::Event;
use kube::{Api, Resource};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use status::{StatusKind, StatusWriter, UNSTAMPED};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hasher;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::state::State;

mod status;

/// The source name of Gateway API fragments (in `/config`, metrics and logs).
pub const SOURCE: &str = "gateway";

/// The Event reporter name.
const REPORTER: &str = "sluice-gateway-controller";

/// The controller service.
pub struct GatewayController {
    state: Arc<State>,
    client_settings: Option<KubernetesClient>,
    settings: GatewaySettings,
}

impl GatewayController {
    /// A controller feeding `state` per `settings`; readiness waits for its first sync.
    pub fn new(
        state: Arc<State>,
        settings: GatewaySettings,
        client_settings: Option<KubernetesClient>,
    ) -> Self {
        state.source_pending(SOURCE);
        Self {
            state,
            client_settings,
            settings,
        }
    }
}

/// One update from a watch.
enum Update {
    Classes(Box<Event<GatewayClass>>),
    Gateways(Box<Event<Gateway>>),
    ListenerSets(Box<Event<ListenerSet>>),
    HttpRoutes(Box<Event<HttpRoute>>),
    GrpcRoutes(Box<Event<GrpcRoute>>),
    TlsRoutes(Box<Event<TlsRoute>>),
    TcpRoutes(Box<Event<TcpRoute>>),
    Grants(Box<Event<ReferenceGrant>>),
    Namespaces(Box<Event<Namespace>>),
    Services(Box<Event<Service>>),
    Secrets(Box<Event<Secret>>),
    BackendTlsPolicies(Box<Event<BackendTlsPolicy>>),
    ConfigMaps(Box<Event<ConfigMap>>),
}

/// The objects of every watched kind, as the loop last saw them.
struct Stores {
    classes: Watched<GatewayClass>,
    gateways: Watched<Gateway>,
    listener_sets: Watched<ListenerSet>,
    http_routes: Watched<HttpRoute>,
    grpc_routes: Watched<GrpcRoute>,
    tls_routes: Watched<TlsRoute>,
    tcp_routes: Watched<TcpRoute>,
    grants: Watched<ReferenceGrant>,
    namespaces: Watched<Namespace>,
    services: Watched<Service>,
    secrets: Watched<Secret>,
    backend_tls_policies: Watched<BackendTlsPolicy>,
    config_maps: Watched<ConfigMap>,
}

impl Stores {
    fn new() -> Self {
        Self {
            classes: Watched::new(),
            gateways: Watched::new(),
            listener_sets: Watched::new(),
            http_routes: Watched::new(),
            grpc_routes: Watched::new(),
            tls_routes: Watched::new(),
            tcp_routes: Watched::new(),
            grants: Watched::new(),
            namespaces: Watched::new(),
            services: Watched::new(),
            secrets: Watched::new(),
            backend_tls_policies: Watched::new(),
            config_maps: Watched::new(),
        }
    }

    fn synced(&self) -> bool {
        self.classes.synced
            && self.gateways.synced
            && self.listener_sets.synced
            && self.http_routes.synced
            && self.grpc_routes.synced
            && self.tls_routes.synced
            && self.tcp_routes.synced
            && self.grants.synced
            && self.namespaces.synced
            && self.services.synced
            && self.secrets.synced
            && self.backend_tls_policies.synced
            && self.config_maps.synced
    }

    /// What a translation reads, borrowed.
    fn view(&self) -> GatewayObjects<'_> {
        GatewayObjects {
            classes: &self.classes.objects,
            gateways: &self.gateways.objects,
            listener_sets: &self.listener_sets.objects,
            http_routes: &self.http_routes.objects,
            grpc_routes: &self.grpc_routes.objects,
            tls_routes: &self.tls_routes.objects,
            tcp_routes: &self.tcp_routes.objects,
            grants: &self.grants.objects,
            namespaces: &self.namespaces.objects,
            services: &self.services.objects,
            secrets: &self.secrets.objects,
            backend_tls_policies: &self.backend_tls_policies.objects,
            config_maps: &self.config_maps.objects,
        }
    }
}

/// The controller loop's state.
struct Controller {
    state: Arc<State>,
    settings: GatewaySettings,
    recorder: Recorder,
    stores: Stores,
    status: StatusWriter,
    /// Each fragment handed to the state, by key; one the compiler rejected is offered
    /// again with the next batch (a conflict can end without it changing) and removed when
    /// its object goes.
    applied: BTreeMap<String, Applied>,
    /// The routes' translations, reused while neither they nor their context change.
    route_cache: RouteCache,
    /// Changes whenever an object that is not a route changes: the routes' context.
    context: u64,
    /// The routes changed since the last batch, when nothing else did: the next batch
    /// translates only them.
    changed_routes: HashSet<RouteId>,
    /// Something else changed (or a watch listed its kind again): the next batch
    /// translates everything (from the route cache).
    needs_full: bool,
    /// The last translation, with the compiler's rejections folded in.
    last: Translation,
    /// The last Event per route, so that one is sent per change.
    events: HashMap<ObjectKey, String>,
    first_sync_done: bool,
}

#[async_trait]
impl BackgroundService for GatewayController {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::priority::lower_current_thread();
        let client_settings = self.client_settings.as_ref();
        let Some(client) =
            client_or_shutdown(client_settings, &mut shutdown, "gateway controller").await
        else {
            return;
        };
        let (updates, mut received) = mpsc::unbounded_channel();
        let c = &client;
        let tasks = vec![
            spawn_watch(Api::<GatewayClass>::all(c.clone()), updates.clone(), |e| {
                Update::Classes(Box::new(e))
            }),
            spawn_watch(Api::<Gateway>::all(c.clone()), updates.clone(), |e| {
                Update::Gateways(Box::new(e))
            }),
            spawn_watch(Api::<ListenerSet>::all(c.clone()), updates.clone(), |e| {
                Update::ListenerSets(Box::new(e))
            }),
            spawn_watch(Api::<HttpRoute>::all(c.clone()), updates.clone(), |e| {
                Update::HttpRoutes(Box::new(e))
            }),
            spawn_watch(Api::<GrpcRoute>::all(c.clone()), updates.clone(), |e| {
                Update::GrpcRoutes(Box::new(e))
            }),
            spawn_watch(Api::<TlsRoute>::all(c.clone()), updates.clone(), |e| {
                Update::TlsRoutes(Box::new(e))
            }),
            spawn_watch(Api::<TcpRoute>::all(c.clone()), updates.clone(), |e| {
                Update::TcpRoutes(Box::new(e))
            }),
            spawn_watch(
                Api::<ReferenceGrant>::all(c.clone()),
                updates.clone(),
                |e| Update::Grants(Box::new(e)),
            ),
            spawn_watch(Api::<Namespace>::all(c.clone()), updates.clone(), |e| {
                Update::Namespaces(Box::new(e))
            }),
            spawn_watch(Api::<Service>::all(c.clone()), updates.clone(), |e| {
                Update::Services(Box::new(e))
            }),
            spawn_watch(Api::<Secret>::all(c.clone()), updates.clone(), |e| {
                Update::Secrets(Box::new(e))
            }),
            spawn_watch(
                Api::<BackendTlsPolicy>::all(c.clone()),
                updates.clone(),
                |e| Update::BackendTlsPolicies(Box::new(e)),
            ),
            spawn_watch(Api::<ConfigMap>::all(c.clone()), updates.clone(), |e| {
                Update::ConfigMaps(Box::new(e))
            }),
        ];
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: Some(self.settings.lease.identity.clone()),
        };
        let mut election = Election::new(client.clone(), &self.settings.lease);
        let (status, mut outcomes) =
            StatusWriter::new(client.clone(), &self.settings.controller_name);
        let mut controller = Controller {
            state: self.state.clone(),
            settings: self.settings.clone(),
            recorder: Recorder::new(client, reporter),
            stores: Stores::new(),
            status,
            applied: BTreeMap::new(),
            route_cache: RouteCache::default(),
            context: 0,
            changed_routes: HashSet::new(),
            needs_full: true,
            last: Translation::default(),
            events: HashMap::new(),
            first_sync_done: false,
        };
        log::info!(
            "gateway controller: serving GatewayClasses of controller {}",
            self.settings.controller_name
        );
        let mut tick = tokio::time::interval(self.settings.lease.duration / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut changed = false;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let was = election.is_leader();
                    let leads = election.try_lead().await;
                    if leads && !was {
                        controller.status.lead(&controller.stores.view());
                    } else if was && !leads {
                        controller.status.follow();
                    }
                    controller.status.retry_failed();
                }
                outcome = outcomes.recv() => {
                    let Some(outcome) = outcome else { break };
                    controller.status.landed(outcome);
                    while let Ok(outcome) = outcomes.try_recv() {
                        controller.status.landed(outcome);
                    }
                }
                update = received.recv() => {
                    let Some(update) = update else { break };
                    changed = controller.apply(update);
                    // Everything that arrived meanwhile goes into the same batch.
                    while let Ok(update) = received.try_recv() {
                        changed |= controller.apply(update);
                    }
                }
            }
            if changed {
                controller.reconcile().await;
            }
            if election.is_leader() && controller.first_sync_done {
                controller
                    .status
                    .flush(&controller.last, &controller.stores.view());
            }
        }
        for task in tasks {
            task.abort();
        }
        election.release().await;
    }
}

impl Controller {
    /// Applies `update`; returns whether it changes what a translation reads (a status
    /// write, sluice's own most of the time, does not). Any change to an object whose
    /// status sluice writes makes it dirty.
    fn apply(&mut self, update: Update) -> bool {
        let stores = &mut self.stores;
        let status = &mut self.status;
        let mut context_changed = false;
        let route = match &update {
            Update::HttpRoutes(e) => Some((RouteKind::Http, event_key(e))),
            Update::GrpcRoutes(e) => Some((RouteKind::Grpc, event_key(e))),
            Update::TlsRoutes(e) => Some((RouteKind::Tls, event_key(e))),
            Update::TcpRoutes(e) => Some((RouteKind::Tcp, event_key(e))),
            _ => None,
        };
        let changed = match update {
            Update::Classes(e) => {
                context_changed =
                    apply_marked(&mut stores.classes, *e, StatusKind::GatewayClass, status);
                context_changed
            }
            Update::Gateways(e) => {
                context_changed =
                    apply_marked(&mut stores.gateways, *e, StatusKind::Gateway, status);
                context_changed
            }
            Update::ListenerSets(e) => {
                context_changed = apply_marked(
                    &mut stores.listener_sets,
                    *e,
                    StatusKind::ListenerSet,
                    status,
                );
                context_changed
            }
            Update::HttpRoutes(e) => {
                apply_marked(&mut stores.http_routes, *e, StatusKind::HttpRoute, status)
            }
            Update::GrpcRoutes(e) => {
                apply_marked(&mut stores.grpc_routes, *e, StatusKind::GrpcRoute, status)
            }
            Update::TlsRoutes(e) => {
                apply_marked(&mut stores.tls_routes, *e, StatusKind::TlsRoute, status)
            }
            Update::TcpRoutes(e) => {
                apply_marked(&mut stores.tcp_routes, *e, StatusKind::TcpRoute, status)
            }
            Update::Grants(e) => {
                context_changed = apply_spec(&mut stores.grants, *e);
                context_changed
            }
            Update::Namespaces(e) => {
                stores.namespaces.apply(*e, |_| true);
                context_changed = true;
                true
            }
            Update::Services(e) => {
                stores.services.apply(*e, |_| true);
                context_changed = true;
                true
            }
            // Only TLS Secrets can be Gateway certificates: the others (tokens, Helm
            // releases) change nothing, and keep the route cache.
            Update::Secrets(e) => {
                let tls = |s: &Secret| s.type_.as_deref() == Some("kubernetes.io/tls");
                context_changed = apply_kept(&mut stores.secrets, *e, tls);
                context_changed
            }
            Update::BackendTlsPolicies(e) => {
                context_changed = apply_marked(
                    &mut stores.backend_tls_policies,
                    *e,
                    StatusKind::BackendTlsPolicy,
                    status,
                );
                context_changed
            }
            // Only CA bundles are read: a ConfigMap without `ca.crt` is not kept, and a
            // change to one that neither was nor is kept costs no translation.
            Update::ConfigMaps(e) => {
                context_changed = apply_kept(&mut stores.config_maps, *e, has_ca_bundle);
                context_changed
            }
        };
        if context_changed {
            self.context += 1;
            self.needs_full = true;
        }
        match route {
            Some((kind, Some(key))) if changed => {
                self.changed_routes.insert((kind, key));
            }
            // A relist: which routes changed is not known.
            Some((_, None)) if changed => self.needs_full = true,
            _ => {}
        }
        changed
    }

    /// Translates everything and applies the fragments that changed.
    async fn reconcile(&mut self) {
        if !self.stores.synced() {
            return;
        }
        let dirty = std::mem::take(&mut self.changed_routes);
        let mut translation = std::mem::take(&mut self.last);
        // Routes the compiler refused are translated again (their status says Pending) and
        // offered again: the conflict may have ended without them changing.
        let mut retranslated = dirty;
        let mut incremental = !std::mem::replace(&mut self.needs_full, false);
        for (key, entry) in &self.applied {
            if entry.accepted {
                continue;
            }
            match parse_fragment_key(key).and_then(|(kind, o)| Some((RouteKind::named(kind)?, o))) {
                Some(id) => {
                    retranslated.insert(id);
                }
                None => incremental = false,
            }
        }
        let parents_before = Translation {
            classes: translation.classes.clone(),
            gateways: translation.gateways.clone(),
            listener_sets: translation.listener_sets.clone(),
            backend_tls_policies: translation.backend_tls_policies.clone(),
            ..Translation::default()
        };
        let view = self.stores.view();
        incremental = incremental
            && retranslate_routes(
                &view,
                &self.settings,
                &UNSTAMPED,
                self.context,
                &mut self.route_cache,
                &retranslated,
                &mut translation,
            );
        let previous = if incremental {
            None
        } else {
            let cache = &mut self.route_cache;
            let full = translate_cached(&view, &self.settings, &UNSTAMPED, self.context, cache);
            Some(std::mem::replace(&mut translation, full))
        };
        let changes = match previous {
            None => {
                let keys = retranslated.iter().map(|(k, o)| fragment_key(k.name(), o));
                self.offer_changed(&translation, keys)
            }
            Some(_) => self.offer_all(&translation),
        };
        if !changes.is_empty() {
            let state = self.state.clone();
            let batch = changes.len();
            let started = std::time::Instant::now();
            let done =
                tokio::task::spawn_blocking(move || state.set_fragments(SOURCE, changes)).await;
            let Ok((generation, outcomes)) = done else {
                log::error!("gateway controller: applying {batch} changes panicked");
                self.last = translation;
                return;
            };
            log::info!(
                "gateway controller: {batch} changes applied in {:?} (generation {generation})",
                started.elapsed()
            );
            // The changed fragments the compiler refused, and the unchanged ones it refuses
            // now (an older route took their claim in this batch).
            let mut refused: Vec<(String, Rejected)> = outcomes
                .into_iter()
                .filter_map(|o| Some((o.key, o.rejected?)))
                .collect();
            for rejected in self.state.snapshot().rejected.iter() {
                let Origin::Object {
                    kind,
                    namespace,
                    name,
                    ..
                } = &rejected.origin
                else {
                    continue;
                };
                let key = fragment_key(kind, &(namespace.clone(), name.clone()));
                let ours = rejected.source == SOURCE && self.applied.contains_key(&key);
                if ours && !refused.iter().any(|(k, _)| *k == key) {
                    refused.push((key, rejected.clone()));
                }
            }
            for (key, rejected) in refused {
                if let Some(entry) = self.applied.get_mut(&key) {
                    entry.accepted = false;
                }
                let message = rejected
                    .problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.rejected(&key, &message, &mut translation).await;
            }
        }
        match previous {
            Some(previous) => self.status.mark_changed(&previous, &translation),
            None => {
                self.status
                    .mark_changed_parents(&parents_before, &translation);
                for (kind, key) in retranslated {
                    self.status.mark((status_kind(kind), key));
                }
            }
        }
        self.last = translation;
        let routes = self.last.http_routes.len();
        let rejected = self
            .last
            .http_routes
            .values()
            .filter(|s| {
                s.parents.iter().any(|p| {
                    p.conditions
                        .iter()
                        .any(|c| c.type_ == "Accepted" && c.status == "False")
                })
            })
            .count();
        METRICS
            .kubernetes_objects
            .with_label_values(&["HTTPRoute", "served"])
            .set((routes - rejected) as i64);
        METRICS
            .kubernetes_objects
            .with_label_values(&["HTTPRoute", "rejected"])
            .set(rejected as i64);
        if !self.first_sync_done {
            self.first_sync_done = true;
            self.state.source_synced(SOURCE);
            log::info!(
                "gateway controller: first sync applied ({} Gateways, {routes} HTTPRoutes)",
                self.last.gateways.len()
            );
        }
    }

    /// The fragments of `translation` that differ from what was applied (or were refused),
    /// and the applied ones it no longer has; `applied` becomes the translation's.
    fn offer_all(&mut self, translation: &Translation) -> Vec<(String, Option<Arc<Fragment>>)> {
        let mut changes = Vec::new();
        let mut applied = BTreeMap::new();
        for (key, fragment) in &translation.fragments {
            if let Some(change) = self.offer(key, fragment, &mut applied) {
                changes.push(change);
            }
        }
        // Applied before and gone now.
        for key in self.applied.keys() {
            if !translation.fragments.contains_key(key) {
                changes.push((key.clone(), None));
            }
        }
        self.applied = applied;
        changes
    }

    /// [`Self::offer_all`] for the fragments `keys` alone (nothing else changed).
    fn offer_changed(
        &mut self,
        translation: &Translation,
        keys: impl Iterator<Item = String>,
    ) -> Vec<(String, Option<Arc<Fragment>>)> {
        let mut changes = Vec::new();
        let mut applied = std::mem::take(&mut self.applied);
        for key in keys {
            match translation.fragments.get(&key) {
                Some(fragment) => {
                    if let Some(change) = self.offer(&key, fragment, &mut applied) {
                        changes.push(change);
                    }
                }
                None => {
                    if applied.remove(&key).is_some() {
                        changes.push((key, None));
                    }
                }
            }
        }
        self.applied = applied;
        changes
    }

    /// Records `fragment` as applied under `key` in `applied`; returns the change to offer
    /// if it differs from what was applied under `key` (in `self.applied`, or already
    /// moved to `applied`), or was refused.
    fn offer(
        &self,
        key: &str,
        fragment: &Arc<Fragment>,
        applied: &mut BTreeMap<String, Applied>,
    ) -> Option<(String, Option<Arc<Fragment>>)> {
        let before = applied.get(key).or_else(|| self.applied.get(key));
        // The same fragment (a route taken from the cache) needs no fingerprint.
        let fingerprint = match before {
            Some(b) if Arc::ptr_eq(&b.fragment, fragment) => b.fingerprint,
            _ => fingerprint(fragment),
        };
        let change = (!before.is_some_and(|b| b.accepted && b.fingerprint == fingerprint))
            .then(|| (key.to_string(), Some(fragment.clone())));
        let entry = Applied {
            fragment: fragment.clone(),
            fingerprint,
            accepted: true,
        };
        applied.insert(key.to_string(), entry);
        change
    }

    /// A fragment the compiler refused: the route is not accepted (its previous version, if
    /// any, keeps serving), with a Warning Event; a TCPRoute stays accepted, unbound.
    async fn rejected(&mut self, key: &str, message: &str, translation: &mut Translation) {
        let Some((kind, object)) = parse_fragment_key(key) else {
            return;
        };
        log::warn!("gateway controller: {key} rejected: {message}");
        METRICS
            .kubernetes_rejections
            .with_label_values(&[kind, "Conflict"])
            .inc();
        // A TCPRoute the compiler refuses has lost its listener to an older route (a tcp
        // listener relays to one): as the specification orders competing TCPRoutes, it
        // stays accepted, and unbound.
        let (statuses, accepted) = match kind {
            "HTTPRoute" => (&mut translation.http_routes, false),
            "GRPCRoute" => (&mut translation.grpc_routes, false),
            "TLSRoute" => (&mut translation.tls_routes, false),
            "TCPRoute" => (&mut translation.tcp_routes, true),
            _ => return,
        };
        if let Some(route_kind) = RouteKind::named(kind) {
            // Its status changes here, whether or not its translation did.
            self.status.mark((status_kind(route_kind), object.clone()));
        }
        if let Some(status) = statuses.get_mut(&object) {
            // A copy: the route cache keeps the translation's own.
            for parent in &mut Arc::make_mut(status).parents {
                for condition in &mut parent.conditions {
                    if condition.type_ != "Accepted" {
                        continue;
                    }
                    if accepted {
                        condition.message = format!("not bound: {message}");
                    } else {
                        condition.status = "False".into();
                        condition.reason = "Pending".into();
                        condition.message = message.to_string();
                    }
                }
            }
        }
        if self.events.get(&object).map(String::as_str) == Some(message) {
            return;
        }
        self.events.insert(object.clone(), message.to_string());
        let stores = &self.stores;
        let reference = match kind {
            "HTTPRoute" => stores
                .http_routes
                .objects
                .get(&object)
                .map(|r| r.object_ref(&())),
            "GRPCRoute" => stores
                .grpc_routes
                .objects
                .get(&object)
                .map(|r| r.object_ref(&())),
            "TLSRoute" => stores
                .tls_routes
                .objects
                .get(&object)
                .map(|r| r.object_ref(&())),
            _ => stores
                .tcp_routes
                .objects
                .get(&object)
                .map(|r| r.object_ref(&())),
        };
        let Some(reference) = reference else {
            return;
        };
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "Conflict".into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            log::warn!("gateway controller: cannot publish an Event for {key}: {e}");
        }
    }
}

/// A fragment handed to the state.
struct Applied {
    fragment: Arc<crate::model::Fragment>,
    fingerprint: u64,
    /// The compiler accepted it (else it is offered again with the next batch).
    accepted: bool,
}

/// A fragment's fingerprint: the hash of its debug text, written straight into the hasher
/// (thousands of fragments are fingerprinted per batch).
fn fingerprint(fragment: &crate::model::Fragment) -> u64 {
    struct Hashing(DefaultHasher);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0.write(text.as_bytes());
            Ok(())
        }
    }
    let mut hashing = Hashing(DefaultHasher::new());
    // Writing into a hasher cannot fail.
    let _ = std::fmt::Write::write_fmt(&mut hashing, format_args!("{fragment:?}"));
    hashing.0.finish()
}

/// Applies an event of a kind whose status sluice writes (see [`apply_spec`]) and marks
/// dirty what it changes: the event's object, or, when a relist completes, every object
/// (listed objects are not in the store before then).
fn apply_marked<K: Resource + Clone>(
    watched: &mut Watched<K>,
    event: Event<K>,
    kind: StatusKind,
    status: &mut StatusWriter,
) -> bool {
    let relisted = matches!(event, Event::InitDone);
    if let Event::Apply(object) | Event::Delete(object) = &event {
        status.mark((kind, key_of(object.meta())));
    }
    let changed = apply_spec(watched, event);
    if relisted {
        for key in watched.objects.keys() {
            status.mark((kind, key.clone()));
        }
    }
    changed
}

/// Applies a watch event of a kind with a generation; returns whether the spec changed (a
/// new, deleted or relisted object, or a new generation), not only its status.
fn apply_spec<K: Resource + Clone>(watched: &mut Watched<K>, event: Event<K>) -> bool {
    let spec_changed = match &event {
        Event::Apply(object) => watched
            .objects
            .get(&key_of(object.meta()))
            .is_none_or(|old| old.meta().generation != object.meta().generation),
        _ => true,
    };
    watched.apply(event, |_| true);
    spec_changed
}

/// Applies a watch event of a kind of which only the objects `keep` accepts are kept;
/// returns whether it concerns one that is or was kept (a relist always may).
fn apply_kept<K: Resource + Clone>(
    watched: &mut Watched<K>,
    event: Event<K>,
    keep: impl Fn(&K) -> bool,
) -> bool {
    let relevant = match &event {
        Event::Apply(object) | Event::Delete(object) | Event::InitApply(object) => {
            keep(object) || watched.objects.contains_key(&key_of(object.meta()))
        }
        Event::Init | Event::InitDone => true,
    };
    watched.apply(event, keep);
    relevant
}

/// Whether a ConfigMap holds a CA bundle under `ca.crt` (what BackendTLSPolicies read).
fn has_ca_bundle(config_map: &ConfigMap) -> bool {
    config_map
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(CA_KEY))
        || config_map
            .binary_data
            .as_ref()
            .is_some_and(|d| d.contains_key(CA_KEY))
}

/// The key of the object of a watch event (`None` for the markers of a relist).
fn event_key<K: Resource>(event: &Event<K>) -> Option<ObjectKey> {
    match event {
        Event::Apply(object) | Event::Delete(object) => Some(key_of(object.meta())),
        Event::Init | Event::InitApply(_) | Event::InitDone => None,
    }
}

/// The kind whose status a route of `kind` has.
fn status_kind(kind: RouteKind) -> StatusKind {
    match kind {
        RouteKind::Http => StatusKind::HttpRoute,
        RouteKind::Grpc => StatusKind::GrpcRoute,
        RouteKind::Tls => StatusKind::TlsRoute,
        RouteKind::Tcp => StatusKind::TcpRoute,
    }
}
