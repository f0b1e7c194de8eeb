//! `gateway:`: the Gateway API source's settings. Each Gateway listener port names a
//! sluice listener, whose protocol and TLS say which Gateway listener protocol it serves.

use super::ingress::{lease, publish};
use super::Checker;
use crate::model::*;
use crate::sources::file::schema::*;

pub(super) fn gateway(
    check: &mut Checker,
    raw: &RawGateway,
    listeners: &[RawListener],
) -> Option<GatewaySettings> {
    let mut ok = true;
    if raw.controller_name.is_empty() || !raw.controller_name.contains('/') {
        check.error(
            "gateway.controller_name",
            format!(
                "invalid controller name {:?}: GatewayClass controllers are DOMAIN/PATH, \
                 e.g. {DEFAULT_GATEWAY_CONTROLLER}",
                raw.controller_name
            ),
        );
        ok = false;
    }
    if raw.listeners.is_empty() && raw.dedicated.is_empty() {
        check.error(
            "gateway.listeners",
            "needs at least one port: Gateway listeners are served only on these",
        );
        ok = false;
    }
    let ports = gateway_ports(
        check,
        "gateway.listeners",
        &raw.listeners,
        listeners,
        &mut ok,
    );
    // Which Gateway each sluice listener serves: `None` for the shared ones. A listener
    // serving two would break the isolation `dedicated` promises.
    let mut owners: Vec<(String, Option<&str>)> =
        ports.iter().map(|p| (p.listener.clone(), None)).collect();
    let mut dedicated: Vec<DedicatedGateway> = Vec::new();
    for (i, entry) in raw.dedicated.iter().enumerate() {
        let at = format!("gateway.dedicated[{i}]");
        let Some((namespace, name)) = entry
            .gateway
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        else {
            check.error(
                &format!("{at}.gateway"),
                format!("invalid Gateway {:?}: write NAMESPACE/NAME", entry.gateway),
            );
            ok = false;
            continue;
        };
        if dedicated
            .iter()
            .any(|d| d.namespace == namespace && d.name == name)
        {
            check.error(
                &format!("{at}.gateway"),
                format!("Gateway {:?} is already dedicated listeners", entry.gateway),
            );
            ok = false;
        }
        if entry.listeners.is_empty() {
            check.error(
                &format!("{at}.listeners"),
                "needs at least one port: the Gateway is served only on these",
            );
            ok = false;
        }
        let own = gateway_ports(
            check,
            &format!("{at}.listeners"),
            &entry.listeners,
            listeners,
            &mut ok,
        );
        for (j, port) in own.iter().enumerate() {
            let clash = owners
                .iter()
                .find(|(l, owner)| *l == port.listener && *owner != Some(entry.gateway.as_str()));
            if let Some((_, owner)) = clash {
                check.error(
                    &format!("{at}.listeners[{j}].listener"),
                    format!(
                        "listener {:?} already serves {}: a dedicated listener serves its \
                         Gateway alone",
                        port.listener,
                        owner.map_or("the shared gateway.listeners".to_string(), |g| {
                            format!("Gateway {g:?}")
                        })
                    ),
                );
                ok = false;
            }
            owners.push((port.listener.clone(), Some(entry.gateway.as_str())));
        }
        let publish = publish(
            check,
            &format!("{at}.publish"),
            entry.publish.as_ref(),
            &mut ok,
        );
        dedicated.push(DedicatedGateway {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ports: own,
            publish,
        });
    }
    let publish = publish(check, "gateway.publish", raw.publish.as_ref(), &mut ok);
    let lease = lease(
        check,
        "gateway.leader_election",
        &raw.leader_election,
        &mut ok,
    );
    if !ok {
        return None;
    }
    Some(GatewaySettings {
        controller_name: raw.controller_name.clone(),
        ports,
        publish,
        dedicated,
        lease: lease?,
    })
}

/// `KEY[]` (`gateway.listeners`, `gateway.dedicated[].listeners`): each port's sluice
/// listener, whose kind gives the Gateway protocol it serves; one per port and kind.
fn gateway_ports(
    check: &mut Checker,
    key: &str,
    entries: &[RawGatewayListener],
    listeners: &[RawListener],
    ok: &mut bool,
) -> Vec<GatewayPort> {
    let mut ports: Vec<GatewayPort> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Some(listener) = listeners.iter().find(|l| l.name == entry.listener) else {
            check.error(
                &format!("{at}.listener"),
                format!("no listener named {:?}", entry.listener),
            );
            *ok = false;
            continue;
        };
        // A tcp listener with `tls` and `sni_routing: true` terminates some names and
        // relays the others untouched: it serves both TLS modes of its port.
        let kinds: &[GatewayListenerKind] = match (
            listener.protocol,
            listener.tls.is_some(),
            listener.sni_routing,
        ) {
            (ListenerProtocol::Http, false, _) => &[GatewayListenerKind::Http],
            (ListenerProtocol::Http, true, _) => &[GatewayListenerKind::Https],
            (ListenerProtocol::Tcp, true, true) => &[
                GatewayListenerKind::TlsTerminate,
                GatewayListenerKind::TlsPassthrough,
            ],
            (ListenerProtocol::Tcp, true, false) => &[GatewayListenerKind::TlsTerminate],
            (ListenerProtocol::Tcp, false, true) => &[GatewayListenerKind::TlsPassthrough],
            (ListenerProtocol::Tcp, false, false) => &[GatewayListenerKind::Tcp],
        };
        if entry.port == 0 {
            check.error(&format!("{at}.port"), "must be a port (1-65535)");
            *ok = false;
        }
        for &kind in kinds {
            if let Some(other) = ports
                .iter()
                .find(|p| p.port == entry.port && p.kind == kind)
            {
                check.error(
                    &at,
                    format!(
                        "port {} already has a {} listener ({:?})",
                        entry.port,
                        kind.protocol(),
                        other.listener
                    ),
                );
                *ok = false;
            }
            ports.push(GatewayPort {
                port: entry.port,
                listener: entry.listener.clone(),
                kind,
            });
        }
    }
    ports
}
