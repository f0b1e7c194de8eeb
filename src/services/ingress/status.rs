//! The leader's one job for Ingresses: writing `status.loadBalancer` of the served ones
//! (the election is [`crate::services::leader`]'s).

use super::IngressView;
use crate::services::leader::Election;
use crate::sources::kubernetes::ingress::ObjectKey;
use crate::sources::kubernetes::services::published_addresses;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use pingora::server::ShutdownWatch;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

/// Runs the election and, while leading, keeps the status of the served Ingresses.
pub(super) async fn run(
    client: Client,
    view: Arc<IngressView>,
    mut served: watch::Receiver<Arc<BTreeSet<ObjectKey>>>,
    mut shutdown: ShutdownWatch,
) {
    let settings = &view.settings;
    let lease = &settings.lease;
    let mut election = Election::new(client.clone(), lease);
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
        if election.is_leader() {
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
    let publish = view.settings.publish.as_ref()?;
    let objects = view.objects.load();
    let addresses = published_addresses(publish, |namespace, name| {
        objects
            .services
            .get(&(namespace.to_string(), name.to_string()))
    })?;
    Some(addresses.iter().map(|a| entry(a)).collect())
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
