//! The leader's status writes for the Gateway controller.
//!
//! The controller marks *dirty* the objects whose status may be stale: those whose wanted
//! status changed in a translation, and those whose object changed (a status-only change
//! too: another writer may have overwritten sluice's entries). Only dirty objects are
//! compared and written, so a change to one route among thousands costs one comparison.
//! Writes run in a task of their own, a few at a time, and report back; the controller
//! loop never waits for the API server, so routing changes do not queue behind status.
//!
//! The translation stamps every condition with [`UNSTAMPED`] so that it is deterministic
//! and comparable; a write keeps the transition time a condition already has (same type
//! and status) and stamps the others with the time of the write.

use crate::sources::kubernetes::gateway::api::backendtlspolicies::BackendTlsPolicy;
use crate::sources::kubernetes::gateway::api::gatewayclasses::GatewayClass;
use crate::sources::kubernetes::gateway::api::gateways::Gateway;
use crate::sources::kubernetes::gateway::api::grpcroutes::GrpcRoute;
use crate::sources::kubernetes::gateway::api::httproutes::HttpRoute;
use crate::sources::kubernetes::gateway::api::listenersets::ListenerSet;
use crate::sources::kubernetes::gateway::api::tcproutes::TcpRoute;
use crate::sources::kubernetes::gateway::api::tlsroutes::TlsRoute;
use crate::sources::kubernetes::gateway::{GatewayObjects, ObjectKey, RouteStatus, Translation};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::{Api, Client, Resource};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The transition time of every condition a translation makes; replaced when written.
pub const UNSTAMPED: Time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);

/// Status writes sent at once: thousands of routes are written in a few round trips'
/// time, without flooding the API server.
const WRITES_IN_FLIGHT: usize = 16;

/// Most parents a route's status lists, others' included (the CRDs' `maxItems`).
const MAX_PARENTS: usize = 32;

/// Most ancestors a policy's status lists, others' included (PolicyStatus's `maxItems`).
const MAX_ANCESTORS: usize = 16;

/// The kinds whose status sluice writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusKind {
    GatewayClass,
    Gateway,
    ListenerSet,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    BackendTlsPolicy,
}

impl StatusKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::GatewayClass => "GatewayClass",
            Self::Gateway => "Gateway",
            Self::ListenerSet => "ListenerSet",
            Self::HttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
            Self::TlsRoute => "TLSRoute",
            Self::TcpRoute => "TCPRoute",
            Self::BackendTlsPolicy => "BackendTLSPolicy",
        }
    }
}

/// An object whose status sluice writes (GatewayClasses under namespace `""`).
pub type StatusKey = (StatusKind, ObjectKey);

/// How one write went: the object, the resourceVersion it had when the write was sent,
/// and the hash of what was written.
pub struct Outcome {
    key: StatusKey,
    written: Written,
    result: Sent,
}

/// What became of one write.
enum Sent {
    Written,
    Failed(kube::Error),
    /// Not sent: this replica stopped leading while it waited for a slot.
    Dropped,
}

/// An object's resourceVersion when its status was written, and the hash of the status
/// written (transition times aside).
type Written = (Option<String>, u64);

/// A write waiting for a slot in the writer task; `send` does nothing until polled.
struct PendingWrite {
    key: StatusKey,
    written: Written,
    send: futures::future::BoxFuture<'static, Result<(), kube::Error>>,
}

impl PendingWrite {
    /// Sends it, or reports it dropped when this replica no longer leads.
    async fn run(self, leading: Arc<AtomicBool>) -> Outcome {
        let result = if leading.load(Ordering::Acquire) {
            match self.send.await {
                Ok(()) => Sent::Written,
                Err(e) => Sent::Failed(e),
            }
        } else {
            Sent::Dropped
        };
        Outcome {
            key: self.key,
            written: self.written,
            result,
        }
    }
}

/// The status-writing state of the controller.
pub struct StatusWriter {
    client: Client,
    controller_name: String,
    /// Objects to compare and, where they differ, write.
    dirty: BTreeSet<StatusKey>,
    /// Objects whose last write failed: dirty again at the next retry.
    failed: BTreeSet<StatusKey>,
    /// Objects with a write under way: compared again when it lands.
    in_flight: BTreeSet<StatusKey>,
    /// Per object, what was last written, so that a view that has not seen the write yet
    /// does not cause a second one of the same status.
    written: HashMap<StatusKey, Written>,
    writes: mpsc::UnboundedSender<Vec<PendingWrite>>,
    /// Whether this replica leads, as the writer task sees it: a write still queued when
    /// the Lease is lost is dropped, so it cannot overwrite the new leader's.
    leading: Arc<AtomicBool>,
}

impl StatusWriter {
    /// A writer for `controller_name`'s entries, and the channel its outcomes come back on.
    pub fn new(client: Client, controller_name: &str) -> (Self, mpsc::UnboundedReceiver<Outcome>) {
        let (writes, batches) = mpsc::unbounded_channel();
        let (outcomes, received) = mpsc::unbounded_channel();
        let leading = Arc::new(AtomicBool::new(false));
        tokio::spawn(send_writes(batches, outcomes, leading.clone()));
        let writer = Self {
            client,
            controller_name: controller_name.to_string(),
            dirty: BTreeSet::new(),
            failed: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            written: HashMap::new(),
            writes,
            leading,
        };
        (writer, received)
    }

    /// `key`'s object changed: its status is compared at the next flush.
    pub fn mark(&mut self, key: StatusKey) {
        self.dirty.insert(key);
    }

    /// Marks the objects whose wanted status differs between `before` and `after`.
    pub fn mark_changed(&mut self, before: &Translation, after: &Translation) {
        self.mark_changed_parents(before, after);
        diff(&before.http_routes, &after.http_routes, same_status, |k| {
            self.dirty.insert((StatusKind::HttpRoute, k.clone()));
        });
        diff(&before.grpc_routes, &after.grpc_routes, same_status, |k| {
            self.dirty.insert((StatusKind::GrpcRoute, k.clone()));
        });
        diff(&before.tls_routes, &after.tls_routes, same_status, |k| {
            self.dirty.insert((StatusKind::TlsRoute, k.clone()));
        });
        diff(&before.tcp_routes, &after.tcp_routes, same_status, |k| {
            self.dirty.insert((StatusKind::TcpRoute, k.clone()));
        });
    }

    /// [`Self::mark_changed`] for the objects that are not routes: GatewayClasses,
    /// Gateways, ListenerSets and BackendTLSPolicies.
    pub fn mark_changed_parents(&mut self, before: &Translation, after: &Translation) {
        let class_key = |name: &String| (String::new(), name.clone());
        diff(&before.classes, &after.classes, PartialEq::eq, |k| {
            self.dirty.insert((StatusKind::GatewayClass, class_key(k)));
        });
        diff(&before.gateways, &after.gateways, PartialEq::eq, |k| {
            self.dirty.insert((StatusKind::Gateway, k.clone()));
        });
        diff(
            &before.listener_sets,
            &after.listener_sets,
            PartialEq::eq,
            |k| {
                self.dirty.insert((StatusKind::ListenerSet, k.clone()));
            },
        );
        let (policies_before, policies_after) =
            (&before.backend_tls_policies, &after.backend_tls_policies);
        diff(policies_before, policies_after, PartialEq::eq, |k| {
            self.dirty.insert((StatusKind::BackendTlsPolicy, k.clone()));
        });
    }

    /// This replica has just become the leader: every object is compared again, as
    /// another leader may have written since.
    pub fn lead(&mut self, objects: &GatewayObjects<'_>) {
        self.leading.store(true, Ordering::Release);
        self.written.clear();
        let keys = |kind, keys: Vec<&ObjectKey>| {
            keys.into_iter()
                .map(move |k| (kind, k.clone()))
                .collect::<Vec<_>>()
        };
        let o = objects;
        self.dirty
            .extend(keys(StatusKind::GatewayClass, o.classes.keys().collect()));
        self.dirty
            .extend(keys(StatusKind::Gateway, o.gateways.keys().collect()));
        self.dirty.extend(keys(
            StatusKind::ListenerSet,
            o.listener_sets.keys().collect(),
        ));
        self.dirty
            .extend(keys(StatusKind::HttpRoute, o.http_routes.keys().collect()));
        self.dirty
            .extend(keys(StatusKind::GrpcRoute, o.grpc_routes.keys().collect()));
        self.dirty
            .extend(keys(StatusKind::TlsRoute, o.tls_routes.keys().collect()));
        self.dirty
            .extend(keys(StatusKind::TcpRoute, o.tcp_routes.keys().collect()));
        let policies = o.backend_tls_policies.keys().collect();
        self.dirty
            .extend(keys(StatusKind::BackendTlsPolicy, policies));
    }

    /// This replica has lost the Lease: writes not sent yet are dropped, and nothing is
    /// compared until it leads again (then everything is).
    pub fn follow(&mut self) {
        self.leading.store(false, Ordering::Release);
        self.dirty.clear();
        self.failed.clear();
    }

    /// Failed writes are tried again (at the leader's next tick).
    pub fn retry_failed(&mut self) {
        self.dirty.append(&mut self.failed);
    }

    /// Takes in how a write went; the object is compared again at the next flush.
    pub fn landed(&mut self, outcome: Outcome) {
        let Outcome {
            key,
            written,
            result,
        } = outcome;
        self.in_flight.remove(&key);
        match result {
            Sent::Written => {
                self.written.insert(key.clone(), written);
                self.dirty.insert(key);
            }
            // Compared again when this replica leads again.
            Sent::Dropped => {}
            Sent::Failed(e) => {
                log::warn!(
                    "gateway controller: cannot update the status of {} {}/{}: {e}",
                    key.0.as_str(),
                    (key.1).0,
                    (key.1).1
                );
                self.failed.insert(key);
            }
        }
    }

    /// Compares the dirty objects without a write under way with what `wanted` says, and
    /// sends the writes of those that differ.
    pub fn flush(&mut self, wanted: &Translation, objects: &GatewayObjects<'_>) {
        let stamps = Stamps::now();
        let mut pending = Vec::new();
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            if self.in_flight.contains(&key) {
                self.dirty.insert(key);
                continue;
            }
            let (kind, object) = &key;
            let write = match kind {
                StatusKind::GatewayClass => objects.classes.get(object).and_then(|class| {
                    let status = wanted.classes.get(&object.1)?;
                    self.write(&key, class, status)
                }),
                StatusKind::Gateway => objects.gateways.get(object).and_then(|gateway| {
                    let status = wanted.gateways.get(object)?;
                    self.write(&key, gateway, status)
                }),
                StatusKind::ListenerSet => objects.listener_sets.get(object).and_then(|set| {
                    let status = wanted.listener_sets.get(object)?;
                    self.write(&key, set, status)
                }),
                StatusKind::HttpRoute => objects.http_routes.get(object).and_then(|route| {
                    self.write_route(&key, route, wanted.http_routes.get(object))
                }),
                StatusKind::GrpcRoute => objects.grpc_routes.get(object).and_then(|route| {
                    self.write_route(&key, route, wanted.grpc_routes.get(object))
                }),
                StatusKind::TlsRoute => objects
                    .tls_routes
                    .get(object)
                    .and_then(|route| self.write_route(&key, route, wanted.tls_routes.get(object))),
                StatusKind::TcpRoute => objects
                    .tcp_routes
                    .get(object)
                    .and_then(|route| self.write_route(&key, route, wanted.tcp_routes.get(object))),
                StatusKind::BackendTlsPolicy => {
                    objects.backend_tls_policies.get(object).and_then(|policy| {
                        let ancestors = wanted
                            .backend_tls_policies
                            .get(object)
                            .map(|s| s.ancestors.iter().filter_map(to_json).collect());
                        self.write_entries(&key, policy, ("ancestors", MAX_ANCESTORS), ancestors)
                    })
                }
            };
            let Some((mut status, written)) = write else {
                continue;
            };
            stamps.stamp(&mut status);
            self.in_flight.insert(key.clone());
            pending.push(patch(key, written, status, self.client.clone()));
        }
        if !pending.is_empty() && self.writes.send(pending).is_err() {
            log::error!("gateway controller: the status writer has stopped");
        }
    }

    /// The status to write to `object` (a Gateway or GatewayClass) if it says otherwise,
    /// with its resourceVersion.
    fn write<K>(
        &self,
        key: &StatusKey,
        object: &K,
        wanted: &impl serde::Serialize,
    ) -> Option<(Value, Written)>
    where
        K: Resource<DynamicType = ()> + HasStatus,
        K::Status: serde::Serialize,
    {
        let current = to_json(&object.status())?;
        self.differing(key, object, to_json(wanted)?, &current)
    }

    /// The status to write to a route: sluice's parents as `wanted` says, other
    /// controllers' as they are; a route no longer attached to a Gateway of sluice's loses
    /// sluice's entries.
    fn write_route<K>(
        &self,
        key: &StatusKey,
        route: &K,
        wanted: Option<&Arc<RouteStatus>>,
    ) -> Option<(Value, Written)>
    where
        K: Resource<DynamicType = ()> + HasStatus,
        K::Status: serde::Serialize,
    {
        let parents = wanted.map(|s| s.parents.iter().filter_map(to_json).collect());
        self.write_entries(key, route, ("parents", MAX_PARENTS), parents)
    }

    /// The status to write to an object whose status is a list of entries per controller
    /// (`field`: a route's `parents`, a policy's `ancestors`, with the most entries the
    /// list may have): sluice's entries as `wanted` says, other controllers' as they are.
    /// `None`: the object is no longer sluice's, and loses sluice's entries.
    fn write_entries<K>(
        &self,
        key: &StatusKey,
        object: &K,
        (field, limit): (&str, usize),
        wanted: Option<Vec<Value>>,
    ) -> Option<(Value, Written)>
    where
        K: Resource<DynamicType = ()> + HasStatus,
        K::Status: serde::Serialize,
    {
        let current = to_json(&object.status())?;
        let entries = current
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours = |p: &Value| p["controllerName"] == self.controller_name.as_str();
        if wanted.is_none() && !entries.iter().any(ours) {
            return None;
        }
        let theirs = entries.iter().filter(|p| !ours(p)).count();
        // Sluice's entries go where its first one was (else last), so that the order of
        // other controllers' entries and sluice's never changes by itself: two writers
        // reordering the list would rewrite it forever.
        let at = entries.iter().position(ours).unwrap_or(entries.len());
        let mut kept: Vec<Value> = entries.iter().take(at).cloned().collect();
        let room = limit.saturating_sub(theirs);
        kept.extend(wanted.into_iter().flatten().take(room));
        kept.extend(entries.iter().skip(at).filter(|p| !ours(p)).cloned());
        self.differing(key, object, json!({ field: kept }), &current)
    }

    /// `wanted` with the transition times of `current` kept, if it differs from
    /// `current` and `object` has changed since sluice last wrote it.
    fn differing<K: Resource>(
        &self,
        key: &StatusKey,
        object: &K,
        mut wanted: Value,
        current: &Value,
    ) -> Option<(Value, Written)> {
        keep_transition_times(&mut wanted, current);
        let comparable = without_times(&wanted);
        if comparable == without_times(current) {
            return None;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        comparable.to_string().hash(&mut hasher);
        let written = (object.meta().resource_version.clone(), hasher.finish());
        if self.written.get(key) == Some(&written) {
            return None;
        }
        // A merge patch keeps what it does not name: what sluice no longer wants is
        // removed with an explicit null.
        if let (Value::Object(wanted), Value::Object(current)) = (&mut wanted, current) {
            for name in current.keys() {
                if !wanted.contains_key(name) {
                    wanted.insert(name.clone(), Value::Null);
                }
            }
        }
        Some((wanted, written))
    }
}

/// Calls `changed` with each key whose value differs between `before` and `after` by
/// `same` (present in one only included).
fn diff<K: Ord, V>(
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
    mut changed: impl FnMut(&K),
) {
    for (key, value) in after {
        if !before.get(key).is_some_and(|old| same(old, value)) {
            changed(key);
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            changed(key);
        }
    }
}

/// Whether two shared statuses are the same: the same one (a route taken from the
/// translation cache, the usual case) or equal.
fn same_status(a: &Arc<RouteStatus>, b: &Arc<RouteStatus>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The merge patch of `key`'s status to `status`, as a future for the writer task.
fn patch(key: StatusKey, written: Written, status: Value, client: Client) -> PendingWrite {
    let body = json!({ "status": status });
    let (kind, (namespace, name)) = (key.0, key.1.clone());
    let send = Box::pin(async move {
        let (namespace, name) = (&namespace, &name);
        let patch = Patch::Merge(&body);
        match kind {
            StatusKind::GatewayClass => {
                patch_status(Api::<GatewayClass>::all(client), name, &patch).await
            }
            StatusKind::Gateway => {
                patch_status(Api::<Gateway>::namespaced(client, namespace), name, &patch).await
            }
            StatusKind::ListenerSet => {
                let api = Api::<ListenerSet>::namespaced(client, namespace);
                patch_status(api, name, &patch).await
            }
            StatusKind::HttpRoute => {
                patch_status(
                    Api::<HttpRoute>::namespaced(client, namespace),
                    name,
                    &patch,
                )
                .await
            }
            StatusKind::GrpcRoute => {
                patch_status(
                    Api::<GrpcRoute>::namespaced(client, namespace),
                    name,
                    &patch,
                )
                .await
            }
            StatusKind::TlsRoute => {
                patch_status(Api::<TlsRoute>::namespaced(client, namespace), name, &patch).await
            }
            StatusKind::TcpRoute => {
                patch_status(Api::<TcpRoute>::namespaced(client, namespace), name, &patch).await
            }
            StatusKind::BackendTlsPolicy => {
                let api = Api::<BackendTlsPolicy>::namespaced(client, namespace);
                patch_status(api, name, &patch).await
            }
        }
    });
    PendingWrite { key, written, send }
}

/// Merge-patches the status of object `name` of `api`.
async fn patch_status<K>(api: Api<K>, name: &str, patch: &Patch<&Value>) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(name, &PatchParams::default(), patch)
        .await
        .map(drop)
}

/// The writer task: sends each batch of writes, a few at a time, and reports every
/// outcome as it comes; ends when the controller drops its sender.
async fn send_writes(
    mut batches: mpsc::UnboundedReceiver<Vec<PendingWrite>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    leading: Arc<AtomicBool>,
) {
    // Writes of every batch share the slots: a write queued behind a burst starts as soon
    // as one of the burst's finishes, not after all of them.
    let mut queued: std::collections::VecDeque<PendingWrite> = std::collections::VecDeque::new();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        while running.len() < WRITES_IN_FLIGHT {
            let Some(write) = queued.pop_front() else {
                break;
            };
            running.push(write.run(leading.clone()));
        }
        tokio::select! {
            batch = batches.recv(), if open => match batch {
                Some(batch) => queued.extend(batch),
                None => open = false,
            },
            Some(outcome) = running.next(), if !running.is_empty() => {
                if outcomes.send(outcome).is_err() {
                    return;
                }
            }
            else => return,
        }
    }
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

/// Replaces every [`UNSTAMPED`] transition time in `value` with `now`.
/// [`UNSTAMPED`] and the time of a flush, as JSON (made once per flush).
struct Stamps {
    unstamped: Value,
    now: Value,
}

impl Stamps {
    fn at(now: &Time) -> Self {
        Self {
            unstamped: to_json(&UNSTAMPED).unwrap_or_default(),
            now: to_json(now).unwrap_or_default(),
        }
    }

    fn now() -> Self {
        Self::at(&Time(k8s_openapi::jiff::Timestamp::now()))
    }

    /// Replaces every [`UNSTAMPED`] transition time in `value` with the flush's time.
    fn stamp(&self, value: &mut Value) {
        stamp_with(value, &self.unstamped, &self.now);
    }
}

fn stamp_with(value: &mut Value, unstamped: &Value, now: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "lastTransitionTime" && v == unstamped {
                    *v = now.clone();
                } else {
                    stamp_with(v, unstamped, now);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| stamp_with(v, unstamped, now)),
        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_still_queued_when_the_lease_is_lost_are_dropped() {
        let (writes, batches) = mpsc::unbounded_channel();
        let (outcomes, mut received) = mpsc::unbounded_channel();
        let leading = Arc::new(AtomicBool::new(true));
        tokio::spawn(send_writes(batches, outcomes, leading.clone()));
        let (started, mut starts) = mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let total = WRITES_IN_FLIGHT * 3;
        let batch = (0..total)
            .map(|i| {
                let (started, gate) = (started.clone(), gate.clone());
                PendingWrite {
                    key: (StatusKind::HttpRoute, ("ns".into(), format!("r{i}"))),
                    written: (None, 0),
                    send: Box::pin(async move {
                        let _ = started.send(i);
                        let _permit = gate.acquire().await;
                        Ok(())
                    }),
                }
            })
            .collect();
        writes.send(batch).expect("the writer task runs");
        for _ in 0..WRITES_IN_FLIGHT {
            starts.recv().await.expect("a write starts");
        }
        // The Lease is lost while the first writes are under way.
        leading.store(false, Ordering::Release);
        gate.add_permits(total);
        let (mut sent, mut dropped) = (0, 0);
        for _ in 0..total {
            match received.recv().await.expect("an outcome").result {
                Sent::Written => sent += 1,
                Sent::Dropped => dropped += 1,
                Sent::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            (sent, dropped),
            (WRITES_IN_FLIGHT, total - WRITES_IN_FLIGHT)
        );
        assert!(starts.try_recv().is_err(), "a dropped write was sent");
    }

    #[test]
    fn unchanged_conditions_keep_their_time_and_new_ones_get_the_write_time() {
        let unstamped = to_json(&UNSTAMPED).expect("a time");
        let mut wanted = json!({"conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": unstamped},
            {"type": "ResolvedRefs", "status": "False", "lastTransitionTime": unstamped},
        ]});
        let current = json!({"conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ResolvedRefs", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]});
        keep_transition_times(&mut wanted, &current);
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("a time"));
        Stamps::at(&now).stamp(&mut wanted);
        assert_eq!(
            wanted["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            wanted["conditions"][1]["lastTransitionTime"],
            to_json(&now).expect("a time")
        );
    }

    #[test]
    fn a_diff_names_changed_added_and_removed_keys() {
        let before = BTreeMap::from([(1, "a"), (2, "b"), (3, "c")]);
        let after = BTreeMap::from([(1, "a"), (2, "x"), (4, "d")]);
        let mut changed = Vec::new();
        diff(&before, &after, PartialEq::eq, |k| changed.push(*k));
        changed.sort();
        assert_eq!(changed, [2, 3, 4]);
    }
}
