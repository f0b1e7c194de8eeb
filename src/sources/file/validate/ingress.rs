//! `ingress:`: the Kubernetes Ingress source's settings. The listeners it names must exist
//! with the right protocol; environment defaults (`POD_NAMESPACE`, `POD_NAME`) are read
//! here, once.

use super::Checker;
use crate::model::*;
use crate::sources::file::schema::*;
use std::path::PathBuf;

pub(super) fn ingress(
    check: &mut Checker,
    raw: &RawIngress,
    listeners: &[RawListener],
) -> Option<IngressSettings> {
    let mut ok = true;
    let mut listener = |check: &mut Checker, key: &str, name: &str, tls: bool| {
        let found = listeners.iter().find(|l| l.name == name);
        let problem = match found {
            None => Some(format!("no listener named {name:?}")),
            Some(l) if l.protocol != ListenerProtocol::Http => {
                Some(format!("listener {name:?} is not an http listener"))
            }
            Some(l) if l.tls.is_some() != tls => Some(if tls {
                format!("listener {name:?} has no tls section")
            } else {
                format!("listener {name:?} terminates TLS; name it in https_listener")
            }),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            check.error(key, problem);
            ok = false;
        }
    };
    listener(check, "ingress.http_listener", &raw.http_listener, false);
    if let Some(https) = &raw.https_listener {
        listener(check, "ingress.https_listener", https, true);
    }
    if let Some(name) = &raw.passthrough_listener {
        let found = listeners.iter().find(|l| &l.name == name);
        let problem = match found {
            None => Some(format!("no listener named {name:?}")),
            Some(l) if l.protocol != ListenerProtocol::Tcp || !l.sni_routing || l.tls.is_some() => {
                Some(format!(
                    "listener {name:?} is not a tcp listener with sni_routing: true and no tls \
                     (it must pass TLS through)"
                ))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            check.error("ingress.passthrough_listener", problem);
            ok = false;
        }
    }
    if raw.controller.is_empty() || !raw.controller.contains('/') {
        check.error(
            "ingress.controller",
            format!(
                "invalid controller name {:?}: IngressClass controllers are DOMAIN/PATH, \
                 e.g. {DEFAULT_CONTROLLER}",
                raw.controller
            ),
        );
        ok = false;
    }
    let publish = publish(check, "ingress.publish", raw.publish.as_ref(), &mut ok);
    let lease = lease(
        check,
        "ingress.leader_election",
        &raw.leader_election,
        &mut ok,
    );
    let webhook = match &raw.webhook {
        None => None,
        Some(webhook) => {
            let listen = check.socket_addr("ingress.webhook.listen", &webhook.listen);
            for (key, value) in [("certificate", &webhook.certificate), ("key", &webhook.key)] {
                if value.is_empty() {
                    check.error(&format!("ingress.webhook.{key}"), "must name a PEM file");
                    ok = false;
                }
            }
            Some(WebhookSettings {
                listen: listen?,
                certificate: PathBuf::from(&webhook.certificate),
                key: PathBuf::from(&webhook.key),
            })
        }
    };
    if !ok {
        return None;
    }
    Some(IngressSettings {
        controller: raw.controller.clone(),
        class: raw.class.clone(),
        unclassed: raw.unclassed,
        also_claim: raw.also_claim.clone(),
        http_listener: raw.http_listener.clone(),
        https_listener: raw.https_listener.clone(),
        https_redirect_port: raw.https_redirect_port,
        passthrough_listener: raw.passthrough_listener.clone(),
        publish,
        lease: lease?,
        webhook,
    })
}

/// `KEY` (`ingress.publish`, `gateway.publish`): a Service or explicit addresses.
pub(super) fn publish(
    check: &mut Checker,
    key: &str,
    raw: Option<&RawPublish>,
    ok: &mut bool,
) -> Option<PublishAddress> {
    match raw {
        None => None,
        Some(RawPublish {
            service: Some(service),
            addresses,
        }) if addresses.is_empty() => match service.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Some(PublishAddress::Service {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => {
                check.error(
                    &format!("{key}.service"),
                    format!("invalid Service {service:?}: write NAMESPACE/NAME"),
                );
                *ok = false;
                None
            }
        },
        Some(RawPublish {
            service: None,
            addresses,
        }) if !addresses.is_empty() => Some(PublishAddress::Addresses(addresses.clone())),
        Some(_) => {
            check.error(key, "needs exactly one of service and addresses");
            *ok = false;
            None
        }
    }
}

/// `KEY` (`ingress.leader_election`, `gateway.leader_election`), with the environment's
/// defaults.
pub(super) fn lease(
    check: &mut Checker,
    key: &str,
    election: &RawLeaderElection,
    ok: &mut bool,
) -> Option<LeaseSettings> {
    let duration = check.duration(&format!("{key}.duration"), &election.duration);
    if duration.is_some_and(|d| d < std::time::Duration::from_secs(2)) {
        check.error(
            &format!("{key}.duration"),
            "must be at least 2s (the leader renews at a third of it)",
        );
        *ok = false;
    }
    let identity = election.identity.clone().unwrap_or_else(default_identity);
    let namespace = election.namespace.clone().unwrap_or_else(|| {
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".to_string())
    });
    Some(LeaseSettings {
        namespace,
        name: election.name.clone(),
        identity,
        duration: duration?,
    })
}

/// `$POD_NAME`, else `HOSTNAME-PID`: unique among the replicas that share a Lease.
fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sluice".to_string());
    format!("{host}-{}", std::process::id())
}
