//! A fake Kubernetes API server speaking the wire protocol the `kube` client uses, for any
//! kind: list with `resourceVersion`, `?watch=true` streams of JSON watch events (ADDED,
//! MODIFIED, DELETED, BOOKMARK) with chunked encoding, `410 Gone` (an ERROR event with an
//! `Expired` Status, as a real API server sends) for a resourceVersion older than the
//! retained history, label selectors (equality and set-based) and field selectors
//! (`metadata.name`, `metadata.namespace`), get, create (409 AlreadyExists), replace with
//! optimistic concurrency (409 Conflict on a stale resourceVersion), JSON merge patch,
//! delete, and the `status` subresource (a write to it changes only `status`; a write to
//! the object keeps it). Events (core and events.k8s.io) and Leases are ordinary objects;
//! Namespaces get the `kubernetes.io/metadata.name` label, as from a real server.
//!
//! Objects are stored as JSON; tests put `k8s-openapi` values in and read them back, so the
//! JSON is what a real server sends. Tests can change objects, drop watch connections, and
//! take the server down.

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A resource type: `group/version/plural` (`/v1/secrets` for the core group).
type ResourceId = String;

/// Where a stored object lives.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    resource: ResourceId,
    namespace: String,
    name: String,
}

/// One change in the server's history.
#[derive(Clone)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    resource: ResourceId,
    object: Value,
}

#[derive(Default)]
struct Store {
    resource_version: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    oldest_resource_version: u64,
    /// Every request as `METHOD path` (query left out), in order.
    requests: Vec<String>,
    next_uid: u64,
}

impl Store {
    /// Records `object` under `key` as ADDED or MODIFIED, or DELETED when `object` is
    /// `None`; sets its resourceVersion. Returns the stored object.
    fn record(&mut self, key: Key, object: Option<Value>) -> Option<Value> {
        self.resource_version += 1;
        let rv = self.resource_version;
        let (kind, mut object) = match object {
            Some(object) => {
                let kind = if self.objects.contains_key(&key) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                (kind, object)
            }
            None => ("DELETED", self.objects.remove(&key)?),
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind != "DELETED" {
            self.objects.insert(key.clone(), object.clone());
        }
        self.history.push(Change {
            resource_version: rv,
            kind,
            resource: key.resource,
            object: object.clone(),
        });
        Some(object)
    }

    /// Fills what a real server sets on create: uid, generation, creationTimestamp.
    fn created(&mut self, object: &mut Value) {
        self.next_uid += 1;
        let metadata = &mut object["metadata"];
        metadata["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", self.next_uid));
        if metadata.get("generation").is_none_or(Value::is_null) {
            metadata["generation"] = json!(1);
        }
        if metadata.get("creationTimestamp").is_none_or(Value::is_null) {
            // Distinct, increasing timestamps: creation order is what conflicts use.
            metadata["creationTimestamp"] = json!(timestamp(self.next_uid));
        }
    }
}

/// `2026-01-01T00:00:00Z` plus `seconds`.
fn timestamp(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let day = 1 + h / 24;
    format!("2026-01-{day:02}T{:02}:{m:02}:{s:02}Z", h % 24)
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    down: AtomicBool,
    drops: AtomicU64,
    stop: AtomicBool,
    watch_requests: AtomicU64,
    /// Resources the server answers 404 for, as one whose CRD is not installed.
    uninstalled: Mutex<BTreeSet<ResourceId>>,
}

/// The fake API server, stopped on drop.
pub struct FakeKube {
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

/// An endpoint of a slice: address and its conditions.
#[derive(Clone, Copy)]
pub struct SliceEndpoint<'a> {
    pub ip: &'a str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A ready endpoint.
pub fn ready(ip: &str) -> SliceEndpoint<'_> {
    SliceEndpoint {
        ip,
        ready: true,
        serving: true,
        terminating: false,
    }
}

/// A terminating endpoint that still serves.
pub fn terminating(ip: &str) -> SliceEndpoint<'_> {
    SliceEndpoint {
        ip,
        ready: false,
        serving: true,
        terminating: true,
    }
}

/// An EndpointSlice of `service` in `namespace` with one named port.
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    port: (&str, u16),
    endpoints: &[SliceEndpoint],
) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [(
                    "kubernetes.io/service-name".to_string(),
                    service.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ports: Some(vec![EndpointPort {
            name: Some(port.0.into()),
            port: Some(i32::from(port.1)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        endpoints: Some(
            endpoints
                .iter()
                .map(|e| Endpoint {
                    addresses: vec![e.ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(e.ready),
                        serving: Some(e.serving),
                        terminating: Some(e.terminating),
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

/// The resource id of kind `K`.
/// Any kind with a static type: k8s-openapi's kinds and the CRD types kube derives.
pub trait Kind: Resource<DynamicType = ()> {}
impl<K: Resource<DynamicType = ()>> Kind for K {}

fn resource_of<K: Kind>() -> ResourceId {
    format!("{}/{}/{}", K::group(&()), K::version(&()), K::plural(&()))
}

/// The kind of the objects of a resource (for list and bookmark bodies).
fn kind_of(resource: &str) -> String {
    let plural = resource.rsplit('/').next().unwrap_or_default();
    let kind = match plural {
        "endpointslices" => "EndpointSlice",
        "ingresses" => "Ingress",
        "ingressclasses" => "IngressClass",
        "services" => "Service",
        "secrets" => "Secret",
        "leases" => "Lease",
        "events" => "Event",
        "configmaps" => "ConfigMap",
        "namespaces" => "Namespace",
        "gatewayclasses" => "GatewayClass",
        "gateways" => "Gateway",
        "httproutes" => "HTTPRoute",
        "grpcroutes" => "GRPCRoute",
        "tlsroutes" => "TLSRoute",
        "tcproutes" => "TCPRoute",
        "listenersets" => "ListenerSet",
        "referencegrants" => "ReferenceGrant",
        "backendtlspolicies" => "BackendTLSPolicy",
        _ => "Object",
    };
    kind.to_string()
}

/// The `apiVersion` of a resource id.
fn api_version_of(resource: &str) -> String {
    let mut parts = resource.split('/');
    let group = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Kinds whose `status` is a subresource: writes to the object keep it.
fn has_status_subresource(resource: &str) -> bool {
    !matches!(
        resource.rsplit('/').next(),
        Some("secrets" | "configmaps" | "leases" | "events" | "endpointslices")
    )
}

impl FakeKube {
    /// Starts the server on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API server");
        let address = listener.local_addr().expect("fake API address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, address, s));
        Self { address, shared }
    }

    /// Serves `K` as if its CRD were not installed (404 for lists and watches) until
    /// [`FakeKube::install`]; objects applied meanwhile are kept.
    pub fn uninstall<K: Kind>(&self) {
        self.uninstalled().insert(resource_of::<K>());
    }

    /// Serves `K` again, as once its CRD is installed.
    pub fn install<K: Kind>(&self) {
        self.uninstalled().remove(&resource_of::<K>());
    }

    fn uninstalled(&self) -> std::sync::MutexGuard<'_, BTreeSet<ResourceId>> {
        self.shared.uninstalled.lock().expect("fake API resources")
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().expect("fake API store")
    }

    /// Creates or replaces an object (ADDED or MODIFIED), as a client's apply would: a new
    /// object gets a uid, generation 1 and a creation time; a changed `spec` bumps the
    /// generation. Returns the stored object.
    pub fn apply<K: Kind + Serialize + DeserializeOwned>(&self, object: K) -> K {
        let mut value = serde_json::to_value(&object).expect("object JSON");
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        let key = Key {
            resource: resource_of::<K>(),
            namespace: value["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name: value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        if key.resource == "/v1/namespaces" {
            // The API server labels every Namespace with its name (Kubernetes 1.22+).
            let name = key.name.clone();
            value["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        let mut store = self.store();
        match store.objects.get(&key) {
            Some(old) => {
                let metadata = old["metadata"].clone();
                for field in ["uid", "creationTimestamp"] {
                    value["metadata"][field] = metadata[field].clone();
                }
                let generation = metadata["generation"].as_i64().unwrap_or(1);
                let bump = i64::from(old.get("spec") != value.get("spec"));
                value["metadata"]["generation"] = json!(generation + bump);
            }
            None => store.created(&mut value),
        }
        let stored = store.record(key, Some(value)).expect("recorded object");
        drop(store);
        self.shared.changed.notify_all();
        serde_json::from_value(stored).expect("stored object")
    }

    /// Deletes an EndpointSlice (DELETED).
    pub fn delete(&self, namespace: &str, name: &str) {
        self.delete_object::<EndpointSlice>(namespace, name);
    }

    /// Deletes an object of kind `K` (DELETED).
    pub fn delete_object<K: Kind>(&self, namespace: &str, name: &str) {
        let key = Key {
            resource: resource_of::<K>(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.store().record(key, None);
        self.shared.changed.notify_all();
    }

    /// The stored object of kind `K`, as a client would read it.
    pub fn get<K: Kind + DeserializeOwned>(&self, namespace: &str, name: &str) -> Option<K> {
        let key = Key {
            resource: resource_of::<K>(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let value = self.store().objects.get(&key).cloned()?;
        Some(serde_json::from_value(value).expect("stored object"))
    }

    /// Every stored object of kind `K`.
    pub fn list<K: Kind + DeserializeOwned>(&self) -> Vec<K> {
        let resource = resource_of::<K>();
        self.store()
            .objects
            .iter()
            .filter(|(key, _)| key.resource == resource)
            .map(|(_, value)| serde_json::from_value(value.clone()).expect("stored object"))
            .collect()
    }

    /// Every Event created so far, core (`v1`) and `events.k8s.io` alike, as JSON.
    pub fn events(&self) -> Vec<Value> {
        self.store()
            .objects
            .iter()
            .filter(|(key, _)| key.resource.ends_with("/events"))
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// Waits until `done` holds for the store, re-checking at every change; false if
    /// `timeout` passes first.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&FakeKube) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.store().resource_version;
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let store = self.store();
            if store.resource_version == seen {
                let _ = self.shared.changed.wait_timeout(store, deadline - now);
            }
        }
    }

    /// Every request received so far as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }

    /// Forgets the history: watches resuming from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut store = self.store();
        store.oldest_resource_version = store.resource_version;
        store.history.clear();
    }

    /// Ends every open watch stream mid-stream.
    pub fn drop_watches(&self) {
        self.shared.drops.fetch_add(1, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }

    /// Refuses connections (the port is closed) until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.drop_watches();
            // Wake the accept loop so it closes the listener.
            let _ = TcpStream::connect(self.address);
        }
    }

    /// Watch requests received so far.
    pub fn watch_requests(&self) -> u64 {
        self.shared.watch_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.drop_watches();
        let _ = TcpStream::connect(self.address);
    }
}

fn accept_loop(listener: TcpListener, address: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.down.load(Ordering::SeqCst) {
            listener = None;
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let active = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(address) {
                Ok(l) => l,
                Err(_) => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        if let Ok((stream, _)) = active.accept() {
            if !shared.down.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
                // As the API server (Go's net/http) does: answers and watch events leave
                // when written.
                let _ = stream.set_nodelay(true);
                let s = shared.clone();
                thread::spawn(move || serve(stream, &s));
            }
        }
        listener = Some(active);
    }
}

/// What a request path names.
struct Target {
    resource: ResourceId,
    /// `None`: every namespace (or a cluster-scoped kind).
    namespace: Option<String>,
    name: Option<String>,
    /// A subresource such as `status`.
    subresource: Option<String>,
}

impl Target {
    /// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...` paths.
    fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
                (Some(namespace.to_string()), rest)
            }
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return None,
        };
        Some(Self {
            resource: format!("{group}/{version}/{plural}"),
            namespace,
            name,
            subresource,
        })
    }

    fn key(&self) -> Option<Key> {
        Some(Key {
            resource: self.resource.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone()?,
        })
    }
}

/// An HTTP response: status and JSON body.
struct Reply(u16, Value);

fn status(code: u16, reason: &str, message: String) -> Reply {
    Reply(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "code": code, "reason": reason, "message": message}),
    )
}

/// Serves requests on one connection (the kube client keeps connections alive).
fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("GET").to_string();
        let target = words.next().unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        shared
            .store
            .lock()
            .expect("fake API store")
            .requests
            .push(format!("{method} {path}"));
        let stream = reader.get_mut();
        let Some(target) = Target::parse(path) else {
            let reply = status(404, "NotFound", format!("no such path {path}"));
            if !respond(stream, reply) {
                return;
            }
            continue;
        };
        let installed = !shared
            .uninstalled
            .lock()
            .expect("fake API resources")
            .contains(&target.resource);
        if !installed {
            let reply = status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            );
            if !respond(stream, reply) {
                return;
            }
            continue;
        }
        let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
        if method == "GET" && target.name.is_none() && watching {
            shared.watch_requests.fetch_add(1, Ordering::SeqCst);
            let filter = Filter::new(&target, &params);
            let from: u64 = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let timeout = params
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(290), Duration::from_secs);
            watch(stream, shared, &filter, from, timeout);
            return;
        }
        let reply = handle(shared, &method, &target, &params, &body);
        if !respond(stream, reply) {
            return;
        }
    }
}

/// Writes the whole answer in one write (see [`chunk`]).
fn respond(stream: &mut TcpStream, Reply(code, body): Reply) -> bool {
    let body = body.to_string();
    let answer = format!(
        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).is_ok()
}

/// Everything but a watch.
fn handle(
    shared: &Shared,
    method: &str,
    target: &Target,
    params: &BTreeMap<String, String>,
    body: &[u8],
) -> Reply {
    let mut store = shared.store.lock().expect("fake API store");
    let reply = match (method, target.key()) {
        ("GET", None) => {
            let filter = Filter::new(target, params);
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|(key, object)| filter.matches(&key.resource, object))
                .map(|(_, object)| object.clone())
                .collect();
            Reply(
                200,
                json!({
                    "kind": format!("{}List", kind_of(&target.resource)),
                    "apiVersion": api_version_of(&target.resource),
                    "metadata": { "resourceVersion": store.resource_version.to_string() },
                    "items": items,
                }),
            )
        }
        ("GET", Some(key)) => match store.objects.get(&key) {
            Some(object) => Reply(200, object.clone()),
            None => not_found(&key),
        },
        ("POST", None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
                return status(400, "BadRequest", "the body is not JSON".into());
            };
            let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name is required".into());
            };
            let key = Key {
                resource: target.resource.clone(),
                namespace: target.namespace.clone().unwrap_or_default(),
                name,
            };
            if store.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{} {:?} already exists", target.resource, key.name),
                );
            }
            object["metadata"]["namespace"] = json!(key.namespace);
            store.created(&mut object);
            let stored = store.record(key, Some(object)).expect("recorded object");
            Reply(201, stored)
        }
        ("PUT" | "PATCH", Some(key)) => {
            let Some(old) = store.objects.get(&key).cloned() else {
                return not_found(&key);
            };
            let Ok(sent) = serde_json::from_slice::<Value>(body) else {
                return status(400, "BadRequest", "the body is not JSON".into());
            };
            let mut object = if method == "PUT" {
                let stale = sent["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|rv| Some(rv) != old["metadata"]["resourceVersion"].as_str());
                if stale {
                    return status(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} {:?}: the object has been \
                             modified; please apply your changes to the latest version and \
                             try again",
                            target.resource, key.name
                        ),
                    );
                }
                sent
            } else {
                let mut merged = old.clone();
                merge_patch(&mut merged, &sent);
                merged
            };
            for field in ["uid", "creationTimestamp", "namespace", "name"] {
                object["metadata"][field] = old["metadata"][field].clone();
            }
            let subresource = target.subresource.as_deref() == Some("status");
            if subresource {
                let status = object.get("status").cloned().unwrap_or(Value::Null);
                object = old.clone();
                object["status"] = status;
            } else if has_status_subresource(&target.resource) {
                if let Some(status) = old.get("status") {
                    object["status"] = status.clone();
                }
            }
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let bump = i64::from(old.get("spec") != object.get("spec"));
            object["metadata"]["generation"] = json!(generation + bump);
            let stored = store.record(key, Some(object)).expect("recorded object");
            Reply(200, stored)
        }
        ("DELETE", Some(key)) => match store.record(key.clone(), None) {
            Some(object) => Reply(200, object),
            None => not_found(&key),
        },
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not served here"),
        ),
    };
    drop(store);
    shared.changed.notify_all();
    reply
}

fn not_found(key: &Key) -> Reply {
    status(
        404,
        "NotFound",
        format!("{} {:?} not found", key.resource, key.name),
    )
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in patch {
        if value.is_null() {
            if let Value::Object(map) = target {
                map.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

/// Writes `event` as one chunk of a watch, in one write: `write!` on the socket would send
/// each piece as a segment of its own, and with Nagle's algorithm the client's delayed ACK
/// (40 ms) would hold the rest back.
fn chunk(stream: &mut TcpStream, event: &Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    let framed = format!("{:x}\r\n{line}\r\n", line.len());
    stream.write_all(framed.as_bytes()).is_ok()
}

fn watch(stream: &mut TcpStream, shared: &Shared, filter: &Filter, from: u64, timeout: Duration) {
    if write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let drops = shared.drops.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut cursor = from;
    let mut last_sent = Instant::now();
    let mut store = shared.store.lock().expect("fake API store");
    if from < store.oldest_resource_version {
        let gone = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", store.oldest_resource_version),
            "reason": "Expired", "code": 410,
        }});
        drop(store);
        let _ = chunk(stream, &gone) && write!(stream, "0\r\n\r\n").is_ok();
        return;
    }
    loop {
        // The history is in resourceVersion order: a wake-up costs the changes since the
        // cursor, not a scan of every change since the server started.
        let start = store
            .history
            .partition_point(|c| c.resource_version <= cursor);
        let pending: Vec<Change> = store.history[start..].to_vec();
        if let Some(last) = pending.last() {
            cursor = last.resource_version;
        }
        let current = store.resource_version;
        drop(store);
        for change in pending {
            if filter.matches(&change.resource, &change.object) {
                let event = json!({"type": change.kind, "object": change.object});
                if !chunk(stream, &event) {
                    return;
                }
                last_sent = Instant::now();
            }
        }
        if last_sent.elapsed() > Duration::from_millis(500) {
            let bookmark = json!({"type": "BOOKMARK", "object": {
                "kind": kind_of(&filter.resource),
                "apiVersion": api_version_of(&filter.resource),
                "metadata": { "resourceVersion": current.max(cursor).to_string() },
            }});
            if !chunk(stream, &bookmark) {
                return;
            }
            last_sent = Instant::now();
        }
        if started.elapsed() >= timeout {
            let _ = write!(stream, "0\r\n\r\n");
            return;
        }
        store = shared.store.lock().expect("fake API store");
        // A change made while the events were written has already been notified: waiting
        // now would hold it back until the timeout.
        if store.resource_version == current {
            store = shared
                .changed
                .wait_timeout(store, Duration::from_millis(100))
                .expect("fake API store")
                .0;
        }
        if shared.drops.load(Ordering::SeqCst) != drops {
            // Cut the stream without the final chunk, as a dropped connection would.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Which objects a list or watch returns.
struct Filter {
    resource: ResourceId,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
}

impl Filter {
    fn new(target: &Target, params: &BTreeMap<String, String>) -> Self {
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let fields = split_top_level(param("fieldSelector"))
            .into_iter()
            .filter_map(|term| {
                let (field, equal, value) = match term.split_once("!=") {
                    Some((f, v)) => (f, false, v),
                    None => {
                        let (f, v) = term.split_once("==").or_else(|| term.split_once('='))?;
                        (f, true, v)
                    }
                };
                Some((field.trim().to_string(), equal, value.trim().to_string()))
            })
            .collect();
        Self {
            resource: target.resource.clone(),
            namespace: target.namespace.clone(),
            labels: split_top_level(param("labelSelector"))
                .iter()
                .map(|term| Requirement::parse(term))
                .collect(),
            fields,
        }
    }

    fn matches(&self, resource: &str, object: &Value) -> bool {
        let metadata = &object["metadata"];
        let namespace = metadata["namespace"].as_str().unwrap_or_default();
        if resource != self.resource || self.namespace.as_deref().is_some_and(|ns| ns != namespace)
        {
            return false;
        }
        let fields_match = self.fields.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => metadata["name"].as_str().unwrap_or_default(),
                "metadata.namespace" => namespace,
                "type" => object["type"].as_str().unwrap_or_default(),
                _ => return true,
            };
            (actual == value) == *equal
        });
        let labels = metadata["labels"].as_object();
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        fields_match && self.labels.iter().all(|r| r.matches(label(&r.key)))
    }
}

/// One requirement of a label selector.
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Requirement {
    /// `key in (a,b)`, `key notin (a,b)`, `key=v`, `key==v`, `key!=v`, `key`, `!key`.
    fn parse(term: &str) -> Self {
        let term = term.trim();
        let list = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect()
        };
        let requirement = |key: &str, operator, values| Self {
            key: key.trim().to_string(),
            operator,
            values,
        };
        if let Some((key, rest)) = term.split_once(" notin ") {
            return requirement(key, Operator::NotIn, list(rest));
        }
        if let Some((key, rest)) = term.split_once(" in ") {
            return requirement(key, Operator::In, list(rest));
        }
        if let Some((key, value)) = term.split_once("!=") {
            return requirement(key, Operator::NotIn, vec![value.trim().to_string()]);
        }
        if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return requirement(key, Operator::In, vec![value.trim().to_string()]);
        }
        match term.strip_prefix('!') {
            Some(key) => requirement(key, Operator::DoesNotExist, Vec::new()),
            None => requirement(term, Operator::Exists, Vec::new()),
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|w| w == v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.iter().any(|w| w == v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// Splits a selector at the commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    terms.retain(|t| !t.trim().is_empty());
    terms
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
