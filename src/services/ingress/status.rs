//! Leader election on a `coordination.k8s.io/v1` Lease, and the leader's one job: writing
//! `status.loadBalancer` of the served Ingresses.
//!
//! Every replica tries the Lease at a third of its duration. The holder renews it; another
//! replica takes it over once it has seen the same version of the Lease for a whole
//! duration (its own clock measures that, so clock skew between nodes does not matter),
//! and optimistic concurrency (the resourceVersion of a replace) makes one of two
//! contenders win. A replica that stops releases the Lease, so the next one takes over at
//! its next try instead of after the duration.

use super::IngressView;
use crate::model::PublishAddress;
use crate::observe::metrics::METRICS;
use crate::sources::kubernetes::ingress::ObjectKey;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pingora::server::ShutdownWatch;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// The version of the Lease last seen, and when it was first seen.
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

/// The election's side of one replica.
struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: std::time::Duration,
    observed: Option<Observed>,
    leader: bool,
}

impl Election {
    /// One try: create, renew or take over the Lease. Returns whether this replica leads.
    async fn try_lead(&mut self) -> bool {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let lease = match self.api.get_opt(&self.name).await {
            Ok(lease) => lease,
            Err(e) => {
                log::warn!("leader election: cannot read Lease {}: {e}", self.name);
                return self.still_leading();
            }
        };
        let Some(mut lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => self.became(true),
                Err(e) => {
                    log::debug!("leader election: creating Lease {}: {e}", self.name);
                    self.became(false)
                }
            };
        };
        let version = lease.metadata.resource_version.clone();
        if self.observed.as_ref().map(|o| &o.resource_version) != Some(&version) {
            self.observed = Some(Observed {
                resource_version: version,
                since: Instant::now(),
            });
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let held_for = spec.lease_duration_seconds.map_or(self.duration, |s| {
            std::time::Duration::from_secs(s.max(1) as u64)
        });
        let expired = holder.is_none()
            || self
                .observed
                .as_ref()
                .is_some_and(|o| o.since.elapsed() >= held_for);
        if !mine && !expired {
            return self.became(false);
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => self.became(true),
            Err(e) => {
                log::debug!("leader election: updating Lease {}: {e}", self.name);
                self.became(false)
            }
        }
    }

    /// Whether a replica that could not reach the API still counts as leader: only while
    /// its last renewal lasts.
    fn still_leading(&mut self) -> bool {
        let lasting = self
            .observed
            .as_ref()
            .is_some_and(|o| o.since.elapsed() < self.duration);
        self.became(self.leader && lasting)
    }

    fn became(&mut self, leader: bool) -> bool {
        if leader != self.leader {
            if leader {
                log::info!(
                    "leader election: {} now holds Lease {}",
                    self.identity,
                    self.name
                );
                // Our own write is the version we renew from.
                self.observed = None;
            } else {
                log::info!(
                    "leader election: {} no longer holds Lease {}",
                    self.identity,
                    self.name
                );
            }
            self.leader = leader;
            METRICS
                .kubernetes_leader
                .with_label_values(&[&self.name])
                .set(i64::from(leader));
        }
        leader
    }

    /// Gives the Lease up, so another replica takes over at once.
    async fn release(&mut self) {
        if !self.leader {
            return;
        }
        let patch = serde_json::json!({ "spec": { "holderIdentity": null } });
        if let Err(e) = self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log::warn!("leader election: cannot release Lease {}: {e}", self.name);
        }
        self.became(false);
    }
}

/// Runs the election and, while leading, keeps the status of the served Ingresses.
pub(super) async fn run(
    client: Client,
    view: Arc<IngressView>,
    mut served: watch::Receiver<Arc<BTreeSet<ObjectKey>>>,
    mut shutdown: ShutdownWatch,
) {
    let settings = &view.settings;
    let lease = &settings.lease;
    let mut election = Election {
        api: Api::namespaced(client.clone(), &lease.namespace),
        name: lease.name.clone(),
        identity: lease.identity.clone(),
        duration: lease.duration,
        observed: None,
        leader: false,
    };
    let mut written = Written::new();
    let mut tick = tokio::time::interval(lease.duration / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                election.try_lead().await;
            }
            changed = served.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        // Marked seen whether or not this replica leads: `changed()` would return at once
        // forever after otherwise.
        let keys = served.borrow_and_update().clone();
        if election.leader {
            write_status(&client, &view, &keys, &mut written).await;
        }
    }
    election.release().await;
}

/// The addresses to publish, if any are known.
fn addresses(view: &IngressView) -> Option<Vec<IngressLoadBalancerIngress>> {
    let entry = |address: &str| IngressLoadBalancerIngress {
        ip: address
            .parse::<std::net::IpAddr>()
            .is_ok()
            .then(|| address.to_string()),
        hostname: address
            .parse::<std::net::IpAddr>()
            .is_err()
            .then(|| address.to_string()),
        ports: None,
    };
    match view.settings.publish.as_ref()? {
        PublishAddress::Addresses(list) => Some(list.iter().map(|a| entry(a)).collect()),
        PublishAddress::Service { namespace, name } => {
            let objects = view.objects.load();
            let service = objects.services.get(&(namespace.clone(), name.clone()))?;
            let ingress = service
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?;
            Some(
                ingress
                    .iter()
                    .filter_map(|i| i.ip.as_deref().or(i.hostname.as_deref()))
                    .map(entry)
                    .collect(),
            )
        }
    }
}

/// The status writes of this replica: for each Ingress, the version it had when its status
/// was written, so that a view that has not seen the write yet does not cause a second one.
type Written = BTreeMap<ObjectKey, Option<String>>;

/// Patches `status.loadBalancer` of each served Ingress whose status differs.
async fn write_status(
    client: &Client,
    view: &IngressView,
    served: &BTreeSet<ObjectKey>,
    written: &mut Written,
) {
    let Some(wanted) = addresses(view) else {
        return;
    };
    let objects = view.objects.load();
    written.retain(|key, _| served.contains(key));
    for key in served {
        let Some(ingress) = objects.ingresses.get(key) else {
            continue;
        };
        if current(ingress) == wanted.as_slice() {
            continue;
        }
        let version = &ingress.metadata.resource_version;
        if written.get(key) == Some(version) {
            // Written already; the watch has not brought the new version yet.
            continue;
        }
        let api: Api<Ingress> = Api::namespaced(client.clone(), &key.0);
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": wanted } } });
        match api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                written.insert(key.clone(), version.clone());
            }
            Err(e) => log::warn!("ingress status: cannot update {}/{}: {e}", key.0, key.1),
        }
    }
}

fn current(ingress: &Ingress) -> &[IngressLoadBalancerIngress] {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}
