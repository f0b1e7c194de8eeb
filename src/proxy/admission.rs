//! What a client connection goes through before its first byte of HTTP (or TLS, or a TCP
//! route's protocol): its PROXY protocol header is read, and the client it names replaces
//! the TCP peer everywhere; then the listener's connection limits admit it or close it.
//!
//! Pingora runs [`Admission`] after `accept()` and before the TLS handshake (patch 0013 runs
//! it on plain listeners too), so a refused connection costs no handshake. An admitted one
//! holds its place in the open-connections gauge (and a [`Slot`] in the listener's limits)
//! in its stream's tracer, which Pingora tells when the stream is dropped: the counts then
//! fall whatever ended the connection.

use crate::model::{ConnectionLimits, ListenerConfig, ListenerProtocol};
use crate::observe::metrics::METRICS;
use crate::proxy::proxy_protocol::{self, Header};
use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::GetSocketDigest;
use pingora::protocols::SocketDigest;
use pingora::upstreams::peer::{Tracer, Tracing};
use pingora::{Error, ErrorType};
use pingora_prometheus::prometheus::{IntCounter, IntGauge};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One listener's admission of new connections.
#[derive(Debug)]
pub struct Admission {
    listener: String,
    /// Read a PROXY header within this time; `None`: the listener takes none.
    proxy_protocol: Option<Duration>,
    counts: Option<Arc<OpenConnections>>,
    /// `sluice_downstream_connections_open` and `_total` of the listener.
    open: IntGauge,
    accepted: IntCounter,
}

impl Admission {
    /// What `listener` asks of new connections; every connection is counted.
    pub fn for_listener(listener: &ListenerConfig) -> Arc<Self> {
        let counts = (!listener.connections.is_unlimited()).then(|| {
            Arc::new(OpenConnections {
                limits: listener.connections,
                open: Mutex::default(),
            })
        });
        let protocol = match (listener.protocol, listener.tls) {
            (ListenerProtocol::Tcp, _) => "tcp",
            (ListenerProtocol::Http, true) => "https",
            (ListenerProtocol::Http, false) => "http",
        };
        let labels = [listener.name.as_str(), protocol];
        Arc::new(Self {
            listener: listener.name.clone(),
            proxy_protocol: listener.proxy_protocol.map(|p| p.timeout),
            counts,
            open: METRICS
                .downstream_connections_open
                .with_label_values(&labels),
            accepted: METRICS.downstream_connections.with_label_values(&labels),
        })
    }

    fn refuse(&self, reason: &'static str, why: String) -> Box<Error> {
        METRICS
            .connections_rejected
            .with_label_values(&[&self.listener, reason])
            .inc();
        // Pingora logs the error with the peer's address ("Downstream handshake error").
        Error::explain(
            ErrorType::Custom("connection refused"),
            format!("listener {}: {why}", self.listener),
        )
    }
}

#[async_trait]
impl PreTlsProcess for Admission {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(PingoraAddr::as_inet).copied());
        // `::ffff:192.0.2.1` and `192.0.2.1` are one client.
        let mut client = peer.map(|p| p.ip().to_canonical());
        if let Some(timeout) = self.proxy_protocol {
            let header =
                match tokio::time::timeout(timeout, proxy_protocol::read_header(stream)).await {
                    Ok(Ok(header)) => header,
                    Ok(Err(e)) => return Err(self.refuse("proxy_protocol", e.to_string())),
                    Err(_) => {
                        return Err(self.refuse(
                            "proxy_protocol",
                            format!("no PROXY protocol header within {timeout:?}"),
                        ))
                    }
                };
            if let Header::Proxied { source, .. } = header {
                let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                // A fresh digest: its cells are empty, so the first `set` cannot fail.
                let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
                stream.set_socket_digest(digest);
                client = Some(source.ip().to_canonical());
            }
        }
        let slot = match &self.counts {
            Some(counts) => match counts.admit(client) {
                Ok(slot) => Some(slot),
                Err(refusal) => return Err(self.refuse(refusal.reason(), refusal.to_string())),
            },
            None => None,
        };
        self.accepted.inc();
        self.open.inc();
        let held = Held {
            open: self.open.clone(),
            slot,
            released: Arc::new(AtomicBool::new(false)),
        };
        stream.tracer = Some(Tracer(Box::new(held)));
        Ok(())
    }
}

/// The connections open on one listener, in all and per client address.
#[derive(Debug)]
struct OpenConnections {
    limits: ConnectionLimits,
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_client: HashMap<IpAddr, u32>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Listener(u32),
    Client(IpAddr, u32),
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Self::Listener(_) => "listener_limit",
            Self::Client(..) => "client_limit",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Listener(max) => write!(f, "{max} connections open (connections.max)"),
            Self::Client(ip, max) => write!(
                f,
                "client {ip} has {max} connections open (connections.max_per_client)"
            ),
        }
    }
}

impl OpenConnections {
    fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(max) = self.limits.max {
            if open.total >= max {
                return Err(Refusal::Listener(max));
            }
        }
        let counted_client = match (client, self.limits.max_per_client) {
            (Some(ip), Some(max)) => {
                let of_client = open.per_client.entry(ip).or_default();
                if *of_client >= max {
                    return Err(Refusal::Client(ip, max));
                }
                *of_client += 1;
                Some(ip)
            }
            _ => None,
        };
        open.total += 1;
        Ok(Slot {
            counts: self.clone(),
            client: counted_client,
        })
    }

    fn release(&self, client: Option<IpAddr>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = client {
            if let Some(of_client) = open.per_client.get_mut(&ip) {
                *of_client -= 1;
                if *of_client == 0 {
                    open.per_client.remove(&ip);
                }
            }
        }
    }
}

/// One admitted connection's place in a listener's limits.
#[derive(Debug, Clone)]
struct Slot {
    counts: Arc<OpenConnections>,
    client: Option<IpAddr>,
}

/// What a connection holds until its stream is dropped: its place in the open-connections
/// gauge and, on a listener with limits, in the counts.
#[derive(Debug, Clone)]
struct Held {
    open: IntGauge,
    slot: Option<Slot>,
    /// Shared by clones, so that a clone of the tracer cannot give the place back twice.
    released: Arc<AtomicBool>,
}

impl Tracing for Held {
    fn on_connected(&self) {}

    fn on_disconnected(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.open.dec();
            if let Some(slot) = &self.slot {
                slot.counts.release(slot.client);
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(max: Option<u32>, max_per_client: Option<u32>) -> Arc<OpenConnections> {
        Arc::new(OpenConnections {
            limits: ConnectionLimits {
                max,
                max_per_client,
            },
            open: Mutex::default(),
        })
    }

    #[test]
    fn per_client_limit_counts_each_address_and_frees_on_release() {
        let counts = counts(None, Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.admit(Some(a)).unwrap();
        let _second = counts.admit(Some(a)).unwrap();
        assert_eq!(counts.admit(Some(a)).unwrap_err(), Refusal::Client(a, 2));
        let _other = counts.admit(Some(b)).unwrap();
        let held = Held {
            open: IntGauge::new("open", "open").unwrap(),
            slot: Some(first),
            released: Arc::new(AtomicBool::new(false)),
        };
        held.open.inc();
        held.on_disconnected();
        held.clone().on_disconnected();
        assert_eq!(held.open.get(), 0);
        let _again = counts.admit(Some(a)).unwrap();
        assert_eq!(counts.admit(Some(a)).unwrap_err(), Refusal::Client(a, 2));
    }

    #[test]
    fn listener_limit_counts_everyone() {
        let counts = counts(Some(2), Some(5));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counts.admit(Some(a)).unwrap();
        let _second = counts.admit(None).unwrap();
        assert_eq!(counts.admit(Some(a)).unwrap_err(), Refusal::Listener(2));
        counts.release(first.client);
        assert!(counts.admit(Some(a)).is_ok());
        assert!(counts.open.lock().unwrap().per_client[&a] == 1);
    }
}
