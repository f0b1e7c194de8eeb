//! The Ingress controller: Kubernetes Ingress objects become fragments, one per object,
//! without reloads.
//!
//! Watches (kube-runtime's watcher: list, then watch; relist on 410 Gone; capped backoff on
//! errors) feed one loop through a channel: IngressClasses, Ingresses and Services in every
//! namespace, and Secrets only in the namespaces where a claimed Ingress references one,
//! keeping only the referenced ones. The loop applies every update that has arrived, then
//! translates the Ingresses whose inputs changed (the object, or a Service, Secret or
//! canary Ingress of its namespace) and hands the changes to [`State::set_fragments`] as
//! one batch. A rejected object gets a Warning Event and a metric; its previous accepted
//! version keeps serving. The first batch waits for every watch's first list, and
//! `/readyz` waits for it.

mod status;

use crate::model::{IngressSettings, KubernetesClient};
use crate::observe::metrics::METRICS;
use crate::services::watch::{client_or_shutdown, spawn_watch, Watched};
use crate::sources::kubernetes::ingress::annotations::{self, PREFIX};
use crate::sources::kubernetes::ingress::{
    class, translate, ObjectKey, ObjectSet, Reason, References, Report, KIND,
};
use crate::state::State;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource, ResourceExt};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The source name of Ingress fragments (in `/config`, metrics and logs).
pub const SOURCE: &str = "ingress";

/// The Event reporter name.
const REPORTER: &str = "sluice-ingress-controller";

/// What the controller knows, shared with the admission webhook.
pub struct IngressView {
    pub settings: IngressSettings,
    /// The objects as last seen (only claimed Ingresses).
    pub objects: ArcSwap<ObjectSet>,
    /// The first sync has been applied.
    synced: std::sync::atomic::AtomicBool,
}

impl IngressView {
    /// Whether the objects are complete (the first sync has been applied).
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The controller service.
pub struct IngressController {
    state: Arc<State>,
    client_settings: Option<KubernetesClient>,
    view: Arc<IngressView>,
}

impl IngressController {
    /// A controller feeding `state` per `settings`; readiness waits for its first sync.
    pub fn new(
        state: Arc<State>,
        settings: IngressSettings,
        client_settings: Option<KubernetesClient>,
    ) -> Self {
        state.source_pending(SOURCE);
        Self {
            state,
            client_settings,
            view: Arc::new(IngressView {
                settings,
                objects: ArcSwap::default(),
                synced: Default::default(),
            }),
        }
    }

    /// The view the admission webhook reads.
    pub fn view(&self) -> Arc<IngressView> {
        self.view.clone()
    }
}

/// One update from a watch.
enum Update {
    Classes(Box<Event<IngressClass>>),
    Ingresses(Box<Event<Ingress>>),
    Services(Box<Event<Service>>),
    /// From the Secret watch of a namespace, tagged with its start number.
    Secrets(String, u64, Box<Event<Secret>>),
}

/// A running Secret watch of one namespace.
struct SecretWatch {
    names: BTreeSet<String>,
    /// Which start of the watch this is: updates of an aborted one are ignored.
    start: u64,
    handle: JoinHandle<()>,
}

/// What the controller remembers of one claimed Ingress.
#[derive(Default)]
struct Tracked {
    /// The inputs it was last translated from.
    fingerprint: u64,
    /// Whether a version of it is live.
    served: bool,
    /// The last Event sent about it, so that one is sent per change.
    last_event: Option<String>,
}

/// The controller loop's state.
struct Controller {
    state: Arc<State>,
    view: Arc<IngressView>,
    client: Client,
    updates: mpsc::UnboundedSender<Update>,
    recorder: Recorder,
    classes: Watched<IngressClass>,
    ingresses: Watched<Ingress>,
    services: Watched<Service>,
    secrets: BTreeMap<String, Watched<Secret>>,
    secret_watches: HashMap<String, SecretWatch>,
    secret_starts: u64,
    tracked: BTreeMap<ObjectKey, Tracked>,
    first_sync_done: bool,
    /// The served Ingresses, for the status writer.
    served: watch::Sender<Arc<BTreeSet<ObjectKey>>>,
}

#[async_trait]
impl BackgroundService for IngressController {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::priority::lower_current_thread();
        let settings = &self.view.settings;
        let client_settings = self.client_settings.as_ref();
        let Some(client) =
            client_or_shutdown(client_settings, &mut shutdown, "ingress controller").await
        else {
            return;
        };
        let (updates, mut received) = mpsc::unbounded_channel();
        let tasks = vec![
            spawn_watch(
                Api::<IngressClass>::all(client.clone()),
                updates.clone(),
                |e| Update::Classes(Box::new(e)),
            ),
            spawn_watch(Api::<Ingress>::all(client.clone()), updates.clone(), |e| {
                Update::Ingresses(Box::new(e))
            }),
            spawn_watch(Api::<Service>::all(client.clone()), updates.clone(), |e| {
                Update::Services(Box::new(e))
            }),
        ];
        let (served, served_changes) = watch::channel(Arc::new(BTreeSet::new()));
        let status_task = tokio::spawn(status::run(
            client.clone(),
            self.view.clone(),
            served_changes,
            shutdown.clone(),
        ));
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: Some(settings.lease.identity.clone()),
        };
        let mut controller = Controller {
            state: self.state.clone(),
            view: self.view.clone(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            updates,
            classes: Watched::new(),
            ingresses: Watched::new(),
            services: Watched::new(),
            secrets: BTreeMap::new(),
            secret_watches: HashMap::new(),
            secret_starts: 0,
            tracked: BTreeMap::new(),
            first_sync_done: false,
            served,
        };
        log::info!(
            "ingress controller: serving IngressClasses of controller {} (class {})",
            settings.controller,
            settings.class
        );
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                update = received.recv() => {
                    let Some(update) = update else { break };
                    controller.apply(update);
                }
            }
            // Everything that arrived meanwhile goes into the same batch.
            while let Ok(update) = received.try_recv() {
                controller.apply(update);
            }
            controller.reconcile().await;
        }
        for task in tasks {
            task.abort();
        }
        // The status task releases the Lease when it sees the shutdown, so that another
        // replica takes over at once; give it a moment to.
        if tokio::time::timeout(Duration::from_secs(2), status_task)
            .await
            .is_err()
        {
            log::warn!("ingress controller: the Lease was not released within 2s");
        }
        for watch in controller.secret_watches.values() {
            watch.handle.abort();
        }
    }
}

impl Controller {
    fn apply(&mut self, update: Update) {
        match update {
            Update::Classes(event) => self.classes.apply(*event, |_| true),
            Update::Ingresses(event) => self.ingresses.apply(*event, |_| true),
            Update::Services(event) => self.services.apply(*event, |_| true),
            Update::Secrets(namespace, start, event) => {
                let Some(watch) = self.secret_watches.get(&namespace) else {
                    return;
                };
                if watch.start != start {
                    return;
                }
                let names = watch.names.clone();
                self.secrets
                    .entry(namespace)
                    .or_insert_with(Watched::new)
                    .apply(*event, |s| names.contains(&s.name_any()));
            }
        }
    }

    /// The Ingresses that are sluice's.
    fn claimed(&self) -> BTreeMap<ObjectKey, Ingress> {
        let classes: Vec<IngressClass> = self.classes.objects.values().cloned().collect();
        self.ingresses
            .objects
            .iter()
            .filter(|(_, ingress)| {
                class::claimed_by(ingress, &classes, &self.view.settings).is_some()
            })
            .map(|(key, ingress)| (key.clone(), ingress.clone()))
            .collect()
    }

    /// Starts, restarts or stops Secret watches for the Secrets `claimed` references;
    /// returns whether every needed watch has synced.
    fn watch_secrets(&mut self, claimed: &BTreeMap<ObjectKey, Ingress>) -> bool {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((namespace, _), ingress) in claimed {
            for name in referenced_secrets(ingress) {
                wanted.entry(namespace.clone()).or_default().insert(name);
            }
        }
        self.secret_watches.retain(|namespace, watch| {
            let keep = wanted
                .get(namespace)
                .is_some_and(|names| names.is_subset(&watch.names));
            if !keep {
                watch.handle.abort();
            }
            keep
        });
        self.secrets
            .retain(|namespace, _| self.secret_watches.contains_key(namespace));
        for (namespace, names) in &wanted {
            if let Some(watch) = self.secret_watches.get_mut(namespace) {
                // Fewer names: forget the others; the watch keeps running.
                if *names != watch.names {
                    watch.names = names.clone();
                    if let Some(secrets) = self.secrets.get_mut(namespace) {
                        secrets.objects.retain(|(_, name), _| names.contains(name));
                    }
                }
                continue;
            }
            self.secret_starts += 1;
            let start = self.secret_starts;
            let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
            let tag = namespace.clone();
            let handle = spawn_watch(api, self.updates.clone(), move |event| {
                Update::Secrets(tag.clone(), start, Box::new(event))
            });
            self.secrets.insert(namespace.clone(), Watched::new());
            self.secret_watches.insert(
                namespace.clone(),
                SecretWatch {
                    names: names.clone(),
                    start,
                    handle,
                },
            );
        }
        self.secrets.values().all(|s| s.synced)
    }

    /// Translates what changed and applies it as one batch.
    async fn reconcile(&mut self) {
        if !(self.classes.synced && self.ingresses.synced && self.services.synced) {
            return;
        }
        let claimed = self.claimed();
        if !self.watch_secrets(&claimed) {
            return;
        }
        let mut objects = ObjectSet {
            classes: self
                .classes
                .objects
                .iter()
                .map(|((_, name), class)| (name.clone(), class.clone()))
                .collect(),
            ingresses: claimed,
            services: self.services.objects.clone(),
            secrets: BTreeMap::new(),
        };
        for secrets in self.secrets.values() {
            objects
                .secrets
                .extend(secrets.objects.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let objects = Arc::new(objects);
        self.view.objects.store(objects.clone());
        let namespaces = namespace_fingerprints(&objects);
        let settings = &self.view.settings;
        let mut changes = Vec::new();
        let mut reports: BTreeMap<ObjectKey, (Ingress, Report)> = BTreeMap::new();
        for (key, ingress) in &objects.ingresses {
            let fingerprint = fingerprint(ingress, namespaces.get(&key.0).copied());
            let tracked = self.tracked.entry(key.clone()).or_default();
            if tracked.fingerprint == fingerprint {
                continue;
            }
            tracked.fingerprint = fingerprint;
            let translation = translate(ingress, objects.as_ref(), settings, References::Strict);
            if !translation.report.rejected() {
                changes.push((fragment_key(key), Some(Arc::new(translation.fragment))));
            }
            reports.insert(key.clone(), (ingress.clone(), translation.report));
        }
        let gone: Vec<ObjectKey> = self
            .tracked
            .keys()
            .filter(|key| !objects.ingresses.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.tracked.remove(&key);
            changes.push((fragment_key(&key), None));
        }
        if !changes.is_empty() {
            let state = self.state.clone();
            let batch = changes.len();
            let started = std::time::Instant::now();
            // Compiling thousands of routes is CPU work: off the async thread.
            let applied =
                tokio::task::spawn_blocking(move || state.set_fragments(SOURCE, changes)).await;
            let Ok((generation, outcomes)) = applied else {
                log::error!("ingress controller: applying {batch} changes panicked");
                return;
            };
            log::info!(
                "ingress controller: {batch} Ingress changes applied in {:?} (generation {generation})",
                started.elapsed()
            );
            for outcome in outcomes {
                let Some(key) = parse_fragment_key(&outcome.key) else {
                    continue;
                };
                let Some((_, report)) = reports.get_mut(&key) else {
                    continue;
                };
                if let Some(rejected) = outcome.rejected {
                    for problem in rejected.problems {
                        let message = match problem.key_path().as_str() {
                            "" => problem.message,
                            field => format!("{field}: {}", problem.message),
                        };
                        report.error(Reason::Conflict, message);
                    }
                }
                if let Some(tracked) = self.tracked.get_mut(&key) {
                    tracked.served = !report.rejected() || outcome.kept_previous;
                    // A conflict can end without this object changing (the owner goes):
                    // it is offered again with the next batch.
                    if report.reason() == Some(Reason::Conflict) {
                        tracked.fingerprint = 0;
                    }
                }
            }
        }
        for (key, (ingress, report)) in reports {
            if report.rejected() {
                let reason = report.reason().map_or("Rejected", Reason::as_str);
                let kept = self.tracked.get(&key).is_some_and(|t| t.served);
                let mut message = report.error_message();
                if kept {
                    message.push_str("; the previous version keeps serving");
                }
                // Counted, logged and sent once per distinct rejection (a conflicted object
                // is offered again with every batch).
                if self.event(&key, &ingress, reason, message.clone()).await {
                    METRICS
                        .kubernetes_rejections
                        .with_label_values(&[KIND, reason])
                        .inc();
                    log::warn!("ingress controller: {} rejected: {message}", report.object);
                }
            } else if !report.warnings.is_empty() || !report.unsupported().is_empty() {
                let mut notes = report.warnings.clone();
                let unsupported = report.unsupported();
                if !unsupported.is_empty() {
                    notes.push(format!(
                        "annotations not supported, served without them: {}",
                        unsupported
                            .iter()
                            .map(|a| format!("{PREFIX}{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                let reason = if unsupported.is_empty() {
                    "ServedWithWarnings"
                } else {
                    "UnsupportedAnnotation"
                };
                self.event(&key, &ingress, reason, notes.join("; ")).await;
            } else if let Some(tracked) = self.tracked.get_mut(&key) {
                tracked.last_event = None;
            }
        }
        let served: BTreeSet<ObjectKey> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.served)
            .map(|(k, _)| k.clone())
            .collect();
        let rejected = self.tracked.len() - served.len();
        METRICS
            .kubernetes_objects
            .with_label_values(&[KIND, "served"])
            .set(served.len() as i64);
        METRICS
            .kubernetes_objects
            .with_label_values(&[KIND, "rejected"])
            .set(rejected as i64);
        self.served.send_if_modified(|current| {
            let changed = **current != served;
            if changed {
                *current = Arc::new(served);
            }
            changed
        });
        if !self.first_sync_done {
            self.first_sync_done = true;
            self.state.source_synced(SOURCE);
            self.view
                .synced
                .store(true, std::sync::atomic::Ordering::Release);
            log::info!(
                "ingress controller: first sync applied ({} Ingresses claimed)",
                self.tracked.len()
            );
        }
    }

    /// Sends a Warning Event about `ingress`, once per distinct message; returns whether
    /// this one was new.
    async fn event(
        &mut self,
        key: &ObjectKey,
        ingress: &Ingress,
        reason: &str,
        note: String,
    ) -> bool {
        let Some(tracked) = self.tracked.get_mut(key) else {
            return false;
        };
        let generation = ingress.metadata.generation.unwrap_or_default();
        let signature = format!("{generation} {reason} {note}");
        if tracked.last_event.as_deref() == Some(signature.as_str()) {
            return false;
        }
        tracked.last_event = Some(signature);
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &ingress.object_ref(&()))
            .await
        {
            log::warn!(
                "ingress controller: cannot publish an Event for {}/{}: {e}",
                key.0,
                key.1
            );
        }
        true
    }
}

/// The Secrets an Ingress references in its own namespace (TLS and annotations).
pub fn referenced_secrets(ingress: &Ingress) -> BTreeSet<String> {
    let namespace = ingress.metadata.namespace.as_deref().unwrap_or_default();
    let mut names = BTreeSet::new();
    let tls = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
    for section in tls.into_iter().flatten() {
        names.extend(section.secret_name.clone().filter(|s| !s.is_empty()));
    }
    let annotations = ingress.metadata.annotations.as_ref();
    for name in ["auth-secret", "auth-tls-secret", "proxy-ssl-secret"] {
        let value = annotations.and_then(|a| a.get(&format!("{}{name}", annotations::PREFIX)));
        let Some(value) = value else { continue };
        let name = match value.trim().split_once('/') {
            Some((ns, name)) if ns == namespace => name,
            Some(_) => continue,
            None => value.trim(),
        };
        names.insert(name.to_string());
    }
    names
}

/// A hash of what the Ingresses of each namespace may read besides themselves: its
/// Services, Secrets and canary Ingresses.
fn namespace_fingerprints(objects: &ObjectSet) -> HashMap<String, u64> {
    let mut hashers: HashMap<String, std::collections::hash_map::DefaultHasher> = HashMap::new();
    let mut add = |namespace: &str, kind: &str, meta: &kube::api::ObjectMeta| {
        let hasher = hashers.entry(namespace.to_string()).or_default();
        (kind, &meta.name, &meta.resource_version).hash(hasher);
    };
    for ((ns, _), s) in &objects.services {
        add(ns, "Service", &s.metadata);
    }
    for ((ns, _), s) in &objects.secrets {
        add(ns, "Secret", &s.metadata);
    }
    for ((ns, _), i) in &objects.ingresses {
        let canary = i
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("{PREFIX}canary")))
            .is_some();
        if canary {
            add(ns, "Ingress", &i.metadata);
        }
    }
    hashers
        .into_iter()
        .map(|(ns, h)| (ns, h.finish()))
        .collect()
}

/// A hash of an Ingress's inputs: its spec (by generation), annotations and class, and its
/// namespace's fingerprint. Not its resourceVersion, which a status write changes too.
fn fingerprint(ingress: &Ingress, namespace: Option<u64>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &ingress.metadata.uid,
        &ingress.metadata.generation,
        &ingress.metadata.annotations,
        namespace,
    )
        .hash(&mut hasher);
    // 0 means "never translated".
    hasher.finish().max(1)
}

fn fragment_key((namespace, name): &ObjectKey) -> String {
    format!("{namespace}/{name}")
}

fn parse_fragment_key(key: &str) -> Option<ObjectKey> {
    let (namespace, name) = key.split_once('/')?;
    Some((namespace.to_string(), name.to_string()))
}

/// `text` cut to at most `max` bytes on a character boundary (Event notes are limited).
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
