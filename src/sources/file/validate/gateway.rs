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
    if raw.listeners.is_empty() {
        check.error(
            "gateway.listeners",
            "needs at least one port: Gateway listeners are served only on these",
        );
        ok = false;
    }
    let mut ports: Vec<GatewayPort> = Vec::new();
    for (i, entry) in raw.listeners.iter().enumerate() {
        let at = format!("gateway.listeners[{i}]");
        let Some(listener) = listeners.iter().find(|l| l.name == entry.listener) else {
            check.error(
                &format!("{at}.listener"),
                format!("no listener named {:?}", entry.listener),
            );
            ok = false;
            continue;
        };
        let kind = match (
            listener.protocol,
            listener.tls.is_some(),
            listener.sni_routing,
        ) {
            (ListenerProtocol::Http, false, _) => GatewayListenerKind::Http,
            (ListenerProtocol::Http, true, _) => GatewayListenerKind::Https,
            (ListenerProtocol::Tcp, _, true) => GatewayListenerKind::TlsPassthrough,
            (ListenerProtocol::Tcp, _, false) => GatewayListenerKind::Tcp,
        };
        if entry.port == 0 {
            check.error(&format!("{at}.port"), "must be a port (1-65535)");
            ok = false;
        }
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
            ok = false;
        }
        ports.push(GatewayPort {
            port: entry.port,
            listener: entry.listener.clone(),
            kind,
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
        lease: lease?,
    })
}
