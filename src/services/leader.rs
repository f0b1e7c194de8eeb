//! Leader election on a `coordination.k8s.io/v1` Lease: one replica writes status.
//!
//! Every replica tries the Lease at a third of its duration. The holder renews it; another
//! replica takes it over once it has seen the same version of the Lease for a whole
//! duration (its own clock measures that, so clock skew between nodes does not matter),
//! and optimistic concurrency (the resourceVersion of a replace) makes one of two
//! contenders win. A replica that stops releases the Lease, so the next one takes over at
//! its next try instead of after the duration. The Ingress and Gateway sources of one
//! replica share the Lease by default: their elections have one identity, so they hold it
//! together.

use crate::model::LeaseSettings;
use crate::observe::metrics::METRICS;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// The version of the Lease last seen, and when it was first seen.
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

/// The election's side of one replica.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: std::time::Duration,
    observed: Option<Observed>,
    leader: bool,
}

impl Election {
    /// This replica's side of the election on `lease`, not leading yet.
    pub fn new(client: Client, lease: &LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &lease.namespace),
            name: lease.name.clone(),
            identity: lease.identity.clone(),
            duration: lease.duration,
            observed: None,
            leader: false,
        }
    }

    /// Whether this replica led at its last try.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// One try: create, renew or take over the Lease. Returns whether this replica leads.
    pub async fn try_lead(&mut self) -> bool {
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
    pub async fn release(&mut self) {
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
