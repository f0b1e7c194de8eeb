//! A fake Kubernetes API server for EndpointSlices, speaking the wire protocol the `kube`
//! client uses: list with `resourceVersion`, `?watch=true` streams of JSON watch events
//! (ADDED, MODIFIED, DELETED, BOOKMARK) with chunked encoding, `410 Gone` (an ERROR event
//! with an `Expired` Status, as a real API server sends) for a resourceVersion older than the
//! retained history. Objects are `k8s-openapi` types, so the JSON is what a real server
//! sends. Tests can change slices, drop watch connections, and take the server down.

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One change in the server's history.
#[derive(Clone)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    slice: EndpointSlice,
}

#[derive(Default)]
struct Store {
    resource_version: u64,
    slices: BTreeMap<(String, String), EndpointSlice>,
    history: Vec<Change>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    oldest_resource_version: u64,
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    down: AtomicBool,
    drops: AtomicU64,
    stop: AtomicBool,
    watch_requests: AtomicU64,
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

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().expect("fake API store")
    }

    /// Creates or replaces a slice (ADDED or MODIFIED).
    pub fn apply(&self, mut slice: EndpointSlice) {
        let mut store = self.store();
        store.resource_version += 1;
        let rv = store.resource_version;
        slice.metadata.resource_version = Some(rv.to_string());
        let key = (
            slice.metadata.namespace.clone().unwrap_or_default(),
            slice.metadata.name.clone().unwrap_or_default(),
        );
        let kind = if store.slices.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.slices.insert(key, slice.clone());
        store.history.push(Change {
            resource_version: rv,
            kind,
            slice,
        });
        self.shared.changed.notify_all();
    }

    /// Deletes a slice (DELETED).
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut store = self.store();
        let Some(mut slice) = store
            .slices
            .remove(&(namespace.to_string(), name.to_string()))
        else {
            return;
        };
        store.resource_version += 1;
        slice.metadata.resource_version = Some(store.resource_version.to_string());
        let rv = store.resource_version;
        store.history.push(Change {
            resource_version: rv,
            kind: "DELETED",
            slice,
        });
        self.shared.changed.notify_all();
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
                let s = shared.clone();
                thread::spawn(move || serve(stream, &s));
            }
        }
        listener = Some(active);
    }
}

/// Serves requests on one connection (the kube client keeps connections alive).
fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim_end().is_empty() {
                break;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let namespace = path
            .strip_prefix("/apis/discovery.k8s.io/v1/namespaces/")
            .and_then(|rest| rest.strip_suffix("/endpointslices"));
        let stream = reader.get_mut();
        let Some(namespace) = namespace else {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}).to_string();
            let _ = write!(stream, "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            continue;
        };
        let selector = Selector::parse(
            params
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or(""),
        );
        if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) {
            shared.watch_requests.fetch_add(1, Ordering::SeqCst);
            let from: u64 = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let timeout = params
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(290), Duration::from_secs);
            watch(stream, shared, namespace, &selector, from, timeout);
            return;
        }
        let store = shared.store.lock().expect("fake API store");
        let items: Vec<Value> = store
            .slices
            .iter()
            .filter(|((ns, _), slice)| ns == namespace && selector.matches(slice))
            .map(|(_, slice)| serde_json::to_value(slice).expect("slice JSON"))
            .collect();
        let body = json!({
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": { "resourceVersion": store.resource_version.to_string() },
            "items": items,
        })
        .to_string();
        drop(store);
        if write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .is_err()
        {
            return;
        }
    }
}

fn chunk(stream: &mut TcpStream, event: &Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    write!(stream, "{:x}\r\n{line}\r\n", line.len()).is_ok() && stream.flush().is_ok()
}

fn watch(
    stream: &mut TcpStream,
    shared: &Shared,
    namespace: &str,
    selector: &Selector,
    from: u64,
    timeout: Duration,
) {
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
        let pending: Vec<Change> = store
            .history
            .iter()
            .filter(|c| c.resource_version > cursor)
            .cloned()
            .collect();
        if let Some(last) = pending.last() {
            cursor = last.resource_version;
        }
        let current = store.resource_version;
        drop(store);
        for change in pending {
            let ns = change
                .slice
                .metadata
                .namespace
                .as_deref()
                .unwrap_or_default();
            if ns == namespace && selector.matches(&change.slice) {
                let event = json!({"type": change.kind, "object": change.slice});
                if !chunk(stream, &event) {
                    return;
                }
                last_sent = Instant::now();
            }
        }
        if last_sent.elapsed() > Duration::from_millis(500) {
            let bookmark = json!({"type": "BOOKMARK", "object": {
                "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
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
        store = shared
            .changed
            .wait_timeout(store, Duration::from_millis(100))
            .expect("fake API store")
            .0;
        if shared.drops.load(Ordering::SeqCst) != drops {
            // Cut the stream without the final chunk, as a dropped connection would.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// The label selectors sluice sends: `key in (a,b)`, `key=value`, `key==value`.
struct Selector {
    key: String,
    values: Vec<String>,
}

impl Selector {
    fn parse(text: &str) -> Self {
        let text = text.trim();
        if let Some((key, rest)) = text.split_once(" in ") {
            let values = rest
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            return Self {
                key: key.trim().to_string(),
                values,
            };
        }
        let (key, value) = text
            .split_once("==")
            .or_else(|| text.split_once('='))
            .unwrap_or(("", ""));
        Self {
            key: key.trim().to_string(),
            values: vec![value.trim().to_string()],
        }
    }

    fn matches(&self, slice: &EndpointSlice) -> bool {
        if self.key.is_empty() {
            return true;
        }
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&self.key))
            .is_some_and(|v| self.values.contains(v))
    }
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
