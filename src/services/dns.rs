//! DNS discovery: an upstream with `dns:` (an outside API, a Kubernetes ExternalName
//! service) has every address its name resolves to as an endpoint, balanced and health
//! checked like any other.
//!
//! One task per such upstream resolves the name (A and AAAA, asynchronously: never a
//! blocking `getaddrinfo` on a proxy thread), publishes the addresses, and resolves again
//! when the records' TTL runs out, clamped to the upstream's `min_ttl..=max_ttl`. A failed
//! resolution (no answer, NXDOMAIN, no address) keeps the last good set, is logged and
//! counted, and is retried after `min_ttl`. A reload that changes an upstream's name,
//! port or bounds restarts its task, from no endpoints; one that removes it stops it.

use crate::model::{DnsName, EndpointConfig, EndpointSource, ResolverSettings};
use crate::observe::metrics::METRICS;
use crate::state::EndpointsPublisher;
use async_trait::async_trait;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The background service that keeps every `dns` upstream's endpoints current.
pub struct DnsDiscovery {
    publisher: EndpointsPublisher,
    /// `server.resolver`; `None`: the system's configuration.
    settings: Option<ResolverSettings>,
}

impl DnsDiscovery {
    pub fn new(publisher: EndpointsPublisher, settings: Option<ResolverSettings>) -> Self {
        Self {
            publisher,
            settings,
        }
    }
}

/// A resolver for `settings`, or the system's. Resolution results are not cached by the
/// resolver: each re-resolution asks a server, and the TTL is sluice's to honour.
fn resolver(settings: Option<&ResolverSettings>) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match settings {
        Some(settings) => {
            let servers = settings
                .nameservers
                .iter()
                .map(|address| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = address.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = address.port();
                    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                provider,
            );
            builder.options_mut().timeout = settings.timeout;
            builder
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("reading the system's DNS configuration: {e}"))?,
    };
    builder.options_mut().cache_size = 0;
    builder
        .build()
        .map_err(|e| format!("building the DNS resolver: {e}"))
}

#[async_trait]
impl BackgroundService for DnsDiscovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut snapshots = self.publisher.subscribe();
        let mut resolvers: Option<TokioResolver> = None;
        let mut tasks: HashMap<String, (DnsName, JoinHandle<()>)> = HashMap::new();
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            let wanted: HashMap<&str, &DnsName> = snapshot
                .config
                .upstreams
                .iter()
                .filter_map(|u| match &u.source {
                    EndpointSource::Dns(name) => Some((u.name.as_str(), name)),
                    _ => None,
                })
                .collect();
            tasks.retain(|upstream, (name, handle)| {
                let now = wanted.get(upstream.as_str());
                let keep = now == Some(&&*name);
                if !keep {
                    handle.abort();
                }
                if now.is_some() && !keep {
                    // Another name or port: the old one's addresses are not this upstream's.
                    self.publisher.set_discovered(upstream, Vec::new());
                }
                keep
            });
            for (upstream, name) in wanted {
                if tasks.contains_key(upstream) {
                    continue;
                }
                if resolvers.is_none() {
                    // Reading /etc/resolv.conf is file I/O: off the async thread.
                    let settings = self.settings.clone();
                    let built = tokio::task::spawn_blocking(move || resolver(settings.as_ref()))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|built| built);
                    match built {
                        Ok(built) => resolvers = Some(built),
                        Err(e) => {
                            log::error!("DNS upstreams get no endpoints: {e}");
                            break;
                        }
                    }
                }
                let Some(resolver) = resolvers.clone() else {
                    break;
                };
                let task = tokio::spawn(keep_resolved(
                    self.publisher.clone(),
                    resolver,
                    upstream.to_string(),
                    name.clone(),
                ));
                tasks.insert(upstream.to_string(), (name.clone(), task));
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        for (_, (_, handle)) in tasks {
            handle.abort();
        }
    }
}

/// Resolves `name` for `upstream` for ever, publishing each new address set.
async fn keep_resolved(
    publisher: EndpointsPublisher,
    resolver: TokioResolver,
    upstream: String,
    name: DnsName,
) {
    let mut last: Option<Vec<SocketAddr>> = None;
    loop {
        let wait = match resolve(&resolver, &name).await {
            Ok((addresses, ttl)) => {
                if last.as_ref() != Some(&addresses) {
                    log::info!(
                        "upstream {upstream}: {} resolves to {addresses:?}",
                        name.name
                    );
                    METRICS
                        .discovery_updates
                        .with_label_values(&[&upstream])
                        .inc();
                    publisher.set_discovered(&upstream, endpoints(&addresses));
                    last = Some(addresses);
                }
                ttl.clamp(name.min_ttl, name.max_ttl)
            }
            Err(e) => {
                log::warn!(
                    "upstream {upstream}: resolving {} failed, keeping the last addresses: {e}",
                    name.name
                );
                METRICS
                    .discovery_errors
                    .with_label_values(&[&upstream])
                    .inc();
                name.min_ttl
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The addresses of `name` (sorted, so that an answer in another order is no change) and
/// the shortest TTL among them.
async fn resolve(
    resolver: &TokioResolver,
    name: &DnsName,
) -> Result<(Vec<SocketAddr>, Duration), String> {
    // A trailing dot: the name is absolute, never tried under the search domains.
    let lookup = resolver
        .lookup_ip(format!("{}.", name.name))
        .await
        .map_err(|e| e.to_string())?;
    let mut addresses: Vec<SocketAddr> = lookup
        .iter()
        .map(|ip| SocketAddr::new(ip, name.port))
        .collect();
    if addresses.is_empty() {
        return Err("no A or AAAA record".into());
    }
    addresses.sort();
    addresses.dedup();
    let ttl = lookup
        .as_lookup()
        .answers()
        .iter()
        .filter(|record| record.data.ip_addr().is_some())
        .map(|record| record.ttl)
        .min()
        .map_or(name.min_ttl, |seconds| {
            Duration::from_secs(u64::from(seconds))
        });
    Ok((addresses, ttl))
}

fn endpoints(addresses: &[SocketAddr]) -> Vec<EndpointConfig> {
    addresses
        .iter()
        .map(|&address| EndpointConfig {
            address,
            weight: 1,
            terminating: false,
        })
        .collect()
}
