//! The Gateway API controller: GatewayClasses, Gateways, HTTPRoutes and TLSRoutes (with the
//! ReferenceGrants, Namespaces, Services and Secrets they reference) become fragments and
//! status, without reloads.
//!
//! Watches feed one loop through a channel. After every batch of updates the whole set is
//! translated (a pure function, `sources::kubernetes::gateway`), the fragments that
//! changed go to [`State::set_fragments`] as one batch, and the leader writes the status
//! that differs from what the objects say. A route the compiler rejects (a conflict with
//! an older claim) is not accepted, with a Warning Event; its previous version keeps
//! serving. The first batch waits for every watch's first list, and `/readyz` waits for
//! it.

use crate::model::{GatewaySettings, KubernetesClient};
use crate::observe::metrics::METRICS;
use crate::services::leader::Election;
use crate::services::watch::{client_or_shutdown, spawn_watch, Watched};
use crate::sources::kubernetes::gateway::api::gatewayclasses::GatewayClass;
use crate::sources::kubernetes::gateway::api::gateways::Gateway;
use crate::sources::kubernetes::gateway::api::httproutes::HttpRoute;
use crate::sources::kubernetes::gateway::api::referencegrants::ReferenceGrant;
use crate::sources::kubernetes::gateway::api::tlsroutes::TlsRoute;
use crate::sources::kubernetes::gateway::{
    key_of, parse_fragment_key, translate, GatewayObjects, ObjectKey, RouteStatus, Translation,
};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::state::State;

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
    HttpRoutes(Box<Event<HttpRoute>>),
    TlsRoutes(Box<Event<TlsRoute>>),
    Grants(Box<Event<ReferenceGrant>>),
    Namespaces(Box<Event<Namespace>>),
    Services(Box<Event<Service>>),
    Secrets(Box<Event<Secret>>),
}

/// The controller loop's state.
struct Controller {
    state: Arc<State>,
    settings: GatewaySettings,
    client: Client,
    recorder: Recorder,
    classes: Watched<GatewayClass>,
    gateways: Watched<Gateway>,
    http_routes: Watched<HttpRoute>,
    tls_routes: Watched<TlsRoute>,
    grants: Watched<ReferenceGrant>,
    namespaces: Watched<Namespace>,
    services: Watched<Service>,
    secrets: Watched<Secret>,
    /// The fingerprint of each fragment handed to the state; `None` for one the compiler
    /// rejected, which is offered again with the next batch (a conflict can end without
    /// it changing) and removed when its object goes.
    applied: BTreeMap<String, Option<u64>>,
    /// The last translation, with the compiler's rejections folded in.
    last: Translation,
    /// Status written: per object, the resourceVersion it had then, so that a view that
    /// has not seen the write yet does not cause a second one.
    written: HashMap<(&'static str, ObjectKey), Option<String>>,
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
            spawn_watch(Api::<HttpRoute>::all(c.clone()), updates.clone(), |e| {
                Update::HttpRoutes(Box::new(e))
            }),
            spawn_watch(Api::<TlsRoute>::all(c.clone()), updates.clone(), |e| {
                Update::TlsRoutes(Box::new(e))
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
        ];
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: Some(self.settings.lease.identity.clone()),
        };
        let mut election = Election::new(client.clone(), &self.settings.lease);
        let mut controller = Controller {
            state: self.state.clone(),
            settings: self.settings.clone(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            classes: Watched::new(),
            gateways: Watched::new(),
            http_routes: Watched::new(),
            tls_routes: Watched::new(),
            grants: Watched::new(),
            namespaces: Watched::new(),
            services: Watched::new(),
            secrets: Watched::new(),
            applied: BTreeMap::new(),
            last: Translation::default(),
            written: HashMap::new(),
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
            let mut received_any = false;
            let mut changed = false;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let was = election.is_leader();
                    if election.try_lead().await {
                        if !was {
                            controller.written.clear();
                        }
                        // Also retries writes that failed.
                        controller.write_status().await;
                    }
                }
                update = received.recv() => {
                    let Some(update) = update else { break };
                    received_any = true;
                    changed = controller.apply(update);
                }
            }
            // Everything that arrived meanwhile goes into the same batch.
            if received_any {
                while let Ok(update) = received.try_recv() {
                    changed |= controller.apply(update);
                }
            }
            if !changed {
                continue;
            }
            if controller.reconcile().await && election.is_leader() {
                controller.write_status().await;
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
    /// write, sluice's own most of the time, does not).
    fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Classes(e) => apply_spec(&mut self.classes, *e),
            Update::Gateways(e) => apply_spec(&mut self.gateways, *e),
            Update::HttpRoutes(e) => apply_spec(&mut self.http_routes, *e),
            Update::TlsRoutes(e) => apply_spec(&mut self.tls_routes, *e),
            Update::Grants(e) => apply_spec(&mut self.grants, *e),
            Update::Namespaces(e) => {
                self.namespaces.apply(*e, |_| true);
                true
            }
            Update::Services(e) => {
                self.services.apply(*e, |_| true);
                true
            }
            // Only TLS Secrets can be Gateway certificates.
            Update::Secrets(e) => {
                self.secrets
                    .apply(*e, |s| s.type_.as_deref() == Some("kubernetes.io/tls"));
                true
            }
        }
    }

    fn synced(&self) -> bool {
        self.classes.synced
            && self.gateways.synced
            && self.http_routes.synced
            && self.tls_routes.synced
            && self.grants.synced
            && self.namespaces.synced
            && self.services.synced
            && self.secrets.synced
    }

    /// Translates everything and applies the fragments that changed; returns whether a
    /// translation was made.
    async fn reconcile(&mut self) -> bool {
        if !self.synced() {
            return false;
        }
        let objects = GatewayObjects {
            classes: self
                .classes
                .objects
                .iter()
                .map(|((_, name), class)| (name.clone(), class.clone()))
                .collect(),
            gateways: self.gateways.objects.clone(),
            http_routes: self.http_routes.objects.clone(),
            tls_routes: self.tls_routes.objects.clone(),
            grants: self.grants.objects.clone(),
            namespaces: self
                .namespaces
                .objects
                .iter()
                .map(|((_, name), ns)| (name.clone(), ns.clone()))
                .collect(),
            services: self.services.objects.clone(),
            secrets: self.secrets.objects.clone(),
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut translation = translate(&objects, &self.settings, &now);
        let mut changes = Vec::new();
        let mut fingerprints = BTreeMap::new();
        for (key, fragment) in &translation.fragments {
            let mut hasher = DefaultHasher::new();
            format!("{fragment:?}").hash(&mut hasher);
            let fingerprint = Some(hasher.finish());
            fingerprints.insert(key.clone(), fingerprint);
            if self.applied.get(key) != Some(&fingerprint) {
                changes.push((key.clone(), Some(fragment.clone())));
            }
        }
        for key in self.applied.keys() {
            if !fingerprints.contains_key(key) {
                changes.push((key.clone(), None));
            }
        }
        if !changes.is_empty() {
            let state = self.state.clone();
            let batch = changes.len();
            let started = std::time::Instant::now();
            let applied =
                tokio::task::spawn_blocking(move || state.set_fragments(SOURCE, changes)).await;
            let Ok((generation, outcomes)) = applied else {
                log::error!("gateway controller: applying {batch} changes panicked");
                return false;
            };
            log::info!(
                "gateway controller: {batch} changes applied in {:?} (generation {generation})",
                started.elapsed()
            );
            for outcome in outcomes {
                let Some(rejected) = outcome.rejected else {
                    continue;
                };
                fingerprints.insert(outcome.key.clone(), None);
                let message = rejected
                    .problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.rejected(&outcome.key, &message, &mut translation)
                    .await;
            }
        }
        self.applied = fingerprints;
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
        true
    }

    /// A fragment the compiler refused: the route is not accepted (its previous version, if
    /// any, keeps serving), with a Warning Event.
    async fn rejected(&mut self, key: &str, message: &str, translation: &mut Translation) {
        let Some((kind, object)) = parse_fragment_key(key) else {
            return;
        };
        log::warn!("gateway controller: {key} rejected: {message}");
        METRICS
            .kubernetes_rejections
            .with_label_values(&[kind, "Conflict"])
            .inc();
        let statuses = match kind {
            "HTTPRoute" => &mut translation.http_routes,
            "TLSRoute" => &mut translation.tls_routes,
            _ => return,
        };
        if let Some(status) = statuses.get_mut(&object) {
            for parent in &mut status.parents {
                for condition in &mut parent.conditions {
                    if condition.type_ == "Accepted" {
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
        let reference = match kind {
            "HTTPRoute" => self
                .http_routes
                .objects
                .get(&object)
                .map(|r| r.object_ref(&())),
            _ => self
                .tls_routes
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

    /// Writes the status of the last translation where the objects say otherwise.
    async fn write_status(&mut self) {
        let last = std::mem::take(&mut self.last);
        let mut pending = Vec::new();
        for (name, status) in &last.classes {
            let Some(class) = self
                .classes
                .objects
                .get(&(String::new(), name.clone()))
                .cloned()
            else {
                continue;
            };
            let Some(wanted) = to_json(status) else {
                continue;
            };
            let api: Api<GatewayClass> = Api::all(self.client.clone());
            self.patch(api, "GatewayClass", &class, wanted, &mut pending);
        }
        for (key, status) in &last.gateways {
            let Some(gateway) = self.gateways.objects.get(key).cloned() else {
                continue;
            };
            let Some(wanted) = to_json(status) else {
                continue;
            };
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), &key.0);
            self.patch(api, "Gateway", &gateway, wanted, &mut pending);
        }
        self.route_status(
            "HTTPRoute",
            &self.http_routes.objects,
            &last.http_routes,
            &mut pending,
        );
        self.route_status(
            "TLSRoute",
            &self.tls_routes.objects,
            &last.tls_routes,
            &mut pending,
        );
        self.send(pending).await;
        self.last = last;
    }

    /// Writes the status of the routes of `kind`: sluice's parents as `statuses` says,
    /// other controllers' as they are; a route no longer attached to a Gateway of sluice's
    /// loses sluice's entries.
    fn route_status<K>(
        &self,
        kind: &'static str,
        routes: &BTreeMap<ObjectKey, K>,
        statuses: &BTreeMap<ObjectKey, RouteStatus>,
        pending: &mut Vec<PendingWrite>,
    ) where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        for (key, route) in routes {
            let current = to_json(route)
                .and_then(|v| v.pointer("/status/parents").cloned())
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let ours = |p: &Value| p["controllerName"] == self.settings.controller_name.as_str();
            let had_ours = current.iter().any(ours);
            let status = statuses.get(key);
            if status.is_none() && !had_ours {
                continue;
            }
            let mut parents: Vec<Value> = current.into_iter().filter(|p| !ours(p)).collect();
            parents.extend(
                status
                    .iter()
                    .flat_map(|s| s.parents.iter())
                    .filter_map(to_json),
            );
            let api: Api<K> = Api::namespaced(self.client.clone(), &key.0);
            self.patch(api, kind, route, json!({ "parents": parents }), pending);
        }
    }

    /// Patches `object`'s status to `wanted` unless it says that already (transition times
    /// aside, which are kept where a condition did not change).
    fn patch<K>(
        &self,
        api: Api<K>,
        kind: &'static str,
        object: &K,
        mut wanted: Value,
        pending: &mut Vec<PendingWrite>,
    ) where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let current = serde_json::to_value(object)
            .ok()
            .and_then(|v| v.get("status").cloned())
            .unwrap_or(Value::Null);
        keep_transition_times(&mut wanted, &current);
        if without_times(&wanted) == without_times(&current) {
            return;
        }
        let meta = object.meta();
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let version = meta.resource_version.clone();
        if self.written.get(&(kind, key.clone())) == Some(&version) {
            return;
        }
        let patch = json!({ "status": wanted });
        pending.push(Box::pin(async move {
            let result = api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop);
            ((kind, key), version, result)
        }));
    }

    /// Sends `pending` status writes, a few at a time, and remembers the ones that landed.
    async fn send(&mut self, pending: Vec<PendingWrite>) {
        let outcomes: Vec<_> = futures::stream::iter(pending)
            .buffer_unordered(STATUS_WRITES_IN_FLIGHT)
            .collect()
            .await;
        for ((kind, key), version, result) in outcomes {
            match result {
                Ok(()) => {
                    self.written.insert((kind, key), version);
                }
                Err(e) => log::warn!(
                    "gateway controller: cannot update the status of {kind} {}/{}: {e}",
                    key.0,
                    key.1
                ),
            }
        }
    }
}

/// A status write under way: the object, the version it had, and how it went.
type PendingWrite = futures::future::BoxFuture<
    'static,
    (
        (&'static str, ObjectKey),
        Option<String>,
        Result<(), kube::Error>,
    ),
>;

/// Status writes sent at once: thousands of routes are written in a few round trips'
/// time, without flooding the API server.
const STATUS_WRITES_IN_FLIGHT: usize = 16;

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

/// A status as JSON; `None` (logged) if it cannot be, so that nothing is patched.
fn to_json(status: &impl serde::Serialize) -> Option<Value> {
    serde_json::to_value(status)
        .map_err(|e| log::error!("gateway controller: cannot encode a status: {e}"))
        .ok()
}

/// `value` without any `lastTransitionTime`.
fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// Gives each condition of `wanted` the transition time of the same condition (type and
/// status) in `current`, at the same place in the document.
fn keep_transition_times(wanted: &mut Value, current: &Value) {
    match (wanted, current) {
        (Value::Object(w), Value::Object(c)) => {
            if let (Some(Value::Array(wc)), Some(Value::Array(cc))) =
                (w.get_mut("conditions"), c.get("conditions"))
            {
                for condition in wc.iter_mut() {
                    let old = cc.iter().find(|o| {
                        o.get("type") == condition.get("type")
                            && o.get("status") == condition.get("status")
                    });
                    if let (Some(old), Some(slot)) = (
                        old.and_then(|o| o.get("lastTransitionTime")),
                        condition.get_mut("lastTransitionTime"),
                    ) {
                        *slot = old.clone();
                    }
                }
            }
            for (k, v) in w.iter_mut() {
                if k == "conditions" {
                    continue;
                }
                if let Some(cv) = c.get(k) {
                    keep_transition_times(v, cv);
                }
            }
        }
        (Value::Array(w), Value::Array(c)) => {
            for (wv, cv) in w.iter_mut().zip(c) {
                keep_transition_times(wv, cv);
            }
        }
        _ => {}
    }
}
