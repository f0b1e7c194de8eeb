//! Kubernetes watches for the controllers: kube-runtime's watcher (list, then watch; relist
//! on 410 Gone; capped backoff on errors) feeding a controller loop through a channel, and
//! the objects of one kind as the loop last saw them.

use crate::model::KubernetesClient;
use crate::services::discovery::make_client;
use crate::sources::kubernetes::ingress::{key_of, ObjectKey};
use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use pingora::server::ShutdownWatch;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A kind's objects as watched: applies list and watch events, keeping the last complete
/// list until a relist completes.
pub struct Watched<K> {
    pub objects: BTreeMap<ObjectKey, K>,
    relisting: Option<BTreeMap<ObjectKey, K>>,
    pub synced: bool,
}

impl<K: Resource> Watched<K> {
    pub fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            relisting: None,
            synced: false,
        }
    }

    /// Applies `event`; `keep` filters what is stored.
    pub fn apply(&mut self, event: Event<K>, keep: impl Fn(&K) -> bool) {
        match event {
            Event::Apply(object) => {
                let key = key_of(object.meta());
                if keep(&object) {
                    self.objects.insert(key, object);
                } else {
                    self.objects.remove(&key);
                }
            }
            Event::Delete(object) => {
                self.objects.remove(&key_of(object.meta()));
            }
            Event::Init => self.relisting = Some(BTreeMap::new()),
            Event::InitApply(object) => {
                if keep(&object) {
                    let key = key_of(object.meta());
                    self.relisting
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, object);
                }
            }
            Event::InitDone => {
                self.objects = self.relisting.take().unwrap_or_default();
                self.synced = true;
            }
        }
    }
}

/// Runs a watch of `api`, sending each event as `wrap(event)`; errors are logged and
/// retried by the watcher's backoff.
pub fn spawn_watch<K, U>(
    api: Api<K>,
    updates: mpsc::UnboundedSender<U>,
    wrap: impl Fn(Event<K>) -> U + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
    U: Send + 'static,
{
    let resource = K::plural(&K::DynamicType::default()).to_string();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(forward(resource, stream, updates, wrap))
}

/// Sends the events of `stream` (a watch of `resource`). A resource the API server does
/// not serve (404: its CRD is not installed, e.g. an older Gateway API release) or does
/// not let sluice list (403: a ClusterRole not updated with the binary) counts as synced
/// with no objects, so the kinds that are there are served; the watch keeps trying, and
/// the objects come once the CRD or the permission does.
async fn forward<K, U>(
    resource: String,
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    updates: mpsc::UnboundedSender<U>,
    wrap: impl Fn(Event<K>) -> U + Send,
) {
    let mut stream = std::pin::pin!(stream);
    let mut missing = false;
    // Once listed, a failure keeps what was listed: an API server that starts refusing
    // (a ClusterRole edited under a running sluice) must not empty the store.
    let mut listed = false;
    while let Some(event) = stream.next().await {
        let events = match event {
            Ok(event) => {
                missing = false;
                listed |= matches!(event, Event::InitDone);
                vec![event]
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if matches!(status.code, 403 | 404) && !missing && !listed =>
            {
                missing = true;
                let why = if status.code == 404 {
                    "does not serve it (CRD not installed?)"
                } else {
                    "does not let sluice list it (RBAC: apply the shipped ClusterRole)"
                };
                log::warn!(
                    "kubernetes watch of {resource}: the API server {why}; taken as none \
                     until it does"
                );
                vec![Event::Init, Event::InitDone]
            }
            // Still not served: said once.
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if matches!(status.code, 403 | 404) && missing =>
            {
                log::debug!("kubernetes watch: {resource} still not served");
                Vec::new()
            }
            Err(e) => {
                log::warn!("kubernetes watch of {resource} failed (retrying): {e}");
                Vec::new()
            }
        };
        for event in events {
            if updates.send(wrap(event)).is_err() {
                return;
            }
        }
    }
}

/// The API client, retried with a capped backoff until it can be set up; `None` if
/// `shutdown` comes first. `who` names the controller in the log.
pub async fn client_or_shutdown(
    settings: Option<&KubernetesClient>,
    shutdown: &mut ShutdownWatch,
    who: &str,
) -> Option<Client> {
    let mut wait = Duration::from_secs(1);
    loop {
        match make_client(settings).await {
            Ok(client) => return Some(client),
            Err(e) => {
                log::error!("{who}: cannot set up the API client: {e}; retrying in {wait:?}");
                tokio::select! {
                    _ = shutdown.changed() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}
