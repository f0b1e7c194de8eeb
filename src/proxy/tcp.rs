//! L4 TCP proxying for `protocol: tcp` listeners: each client connection is relayed to one
//! endpoint of the listener's route's upstream, byte for byte, until both sides have
//! closed, one side fails, or no byte moved for `timeouts.idle`.
//!
//! - Endpoint choice is the upstream's balancer with its health, ejection and slow start
//!   (a `consistent_hash` key can use `$remote_addr`). A connect failure or timeout tries
//!   another endpoint, up to `retry.attempts` tries, when `retry.on` has `connect_failure`.
//! - Half-close is relayed: a side's FIN becomes a write shutdown towards the other side,
//!   and data keeps flowing the other way until that side closes too.
//! - On a listener with `sni_routing`, the client's TLS ClientHello is read first (within
//!   the listener's `requests.header_timeout`) and its server name chooses the route; the
//!   bytes read are then sent on unchanged, so TLS runs end to end between the client and
//!   the endpoint (TLS passthrough). A connection that is not TLS, or names no server,
//!   takes the route without hosts, as nginx's `ssl_preread` leaves the name empty.
//! - A listener with `tls` terminates it instead (TLSRoute in mode Terminate): once routed,
//!   the handshake completes (within the same timeout) with the listener's certificate for
//!   the name, and what the TLS carries is relayed in the clear; a route with `relay_tls`
//!   (a TLSRoute in mode Passthrough on the same port) is relayed untouched.
//! - An upstream with `proxy_protocol` gets a PROXY header naming the client first.
//! - An established connection belongs to no config: reloads, route removal and endpoint
//!   changes leave it alone. It ignores Pingora's shutdown signal too, so a graceful upgrade
//!   or stop lets it run on; the exit monitor ends the process when it closes, or at
//!   `server.grace_period`.

use super::context::{Attempt, AttemptResult};
use super::headers::new_request_id;
use super::proxy_protocol::{self, Header};
use super::report::{attempt_records, millis};
use super::rewind::Rewound;
use super::traffic::weighted_backend;
use crate::observe::access_log::{self, Record};
use crate::observe::metrics::METRICS;
use crate::state::{RouteBackend, State};
use crate::tls::client_hello::{self, Peek};
use crate::upstream::hash_key::RequestFacts;
use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Bytes read from one side before they are written to the other.
const RELAY_BUFFER: usize = 16 * 1024;

/// The proxy of one tcp listener.
pub struct TcpProxy {
    state: Arc<State>,
    listener: String,
    /// Terminates the client's TLS (a listener with `tls`), with the listener's
    /// certificates as the state swaps them.
    terminate: Option<TlsAcceptor>,
}

impl TcpProxy {
    /// A proxy for tcp listener `listener`, routing with the state's current snapshot.
    pub fn new(state: Arc<State>, listener: String) -> Result<Self, String> {
        let terminate = match state.tls_resolver(&listener) {
            Some(resolver) => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS settings of tcp listener {listener}: {e}"))?
                    .with_no_client_auth()
                    .with_cert_resolver(resolver);
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        Ok(Self {
            state,
            listener,
            terminate,
        })
    }
}

/// The client side of a relay: the connection, or the TLS it carries.
trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// Which side of a relayed connection failed.
#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Backend,
}

/// How a connection ended, for the access log.
fn ended_label(outcome: &Result<(), (Side, io::Error)>) -> &'static str {
    match outcome {
        Ok(()) => "closed",
        Err((Side::Client, _)) => "client_error",
        Err((Side::Backend, _)) => "backend_error",
    }
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(
        self: &Arc<Self>,
        client: Stream,
        // Not watched on purpose: see the module comment.
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.state.lifecycle.track();
        let started = Instant::now();
        let client_address = client
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let snapshot = self.state.snapshot();
        let mut log = ConnectionLog {
            listener: &self.listener,
            server_name: None,
            route: None,
            upstream: None,
            client: client_address,
            started,
            attempts: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
        };
        let listener = snapshot
            .config
            .listeners
            .iter()
            .find(|l| l.name == self.listener);
        let mut client = client;
        // What was read of the ClientHello, sent on before anything else (or handed to
        // the TLS handshake).
        let mut first_bytes = Vec::new();
        // The ClientHello and the handshake share the listener's header timeout.
        let handshake_deadline = tokio::time::Instant::now()
            + listener.map_or(Duration::from_secs(60), |l| l.requests.header_timeout);
        if let Some(listener) = listener.filter(|l| l.sni_routing) {
            let timeout = listener.requests.header_timeout;
            match read_client_hello(&mut client, &mut first_bytes, timeout).await {
                Ok(name) => log.server_name = name,
                Err(ended) => {
                    log.bytes_in = first_bytes.len() as u64;
                    log.write(ended);
                    return None;
                }
            }
        }
        let table = snapshot.route_tables.get(&self.listener);
        let found = table.and_then(|t| t.find_server_name(log.server_name.as_deref()));
        let Some(route_index) = found else {
            log::warn!(
                "tcp listener {}: no route{}; closing the connection from {client_address:?}",
                self.listener,
                log.server_name
                    .as_ref()
                    .map(|n| format!(" for server name {n:?}"))
                    .unwrap_or_default()
            );
            log.write("no_route");
            return None;
        };
        let route = &snapshot.routes[route_index];
        // One backend by weight per connection (the compiler gives a tcp route at least one).
        let Some(RouteBackend {
            upstream, timeouts, ..
        }) = weighted_backend(route)
        else {
            log.route = Some(&route.name);
            log.write(
                if snapshot.config.routes[route_index].unresolved.is_some() {
                    "backend_unresolved"
                } else {
                    "no_route"
                },
            );
            return None;
        };
        let upstream = &snapshot.upstreams[upstream];
        log.route = Some(&route.name);
        log.upstream = Some(upstream.name());
        METRICS
            .tcp_connections
            .with_label_values(&[&route.name])
            .inc();
        let active = METRICS
            .tcp_connections_active
            .with_label_values(&[&route.name]);
        active.inc();

        let client_ip = client_address.map(|a| a.ip());
        let local = client
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        let terminate = self
            .terminate
            .as_ref()
            .filter(|_| !snapshot.config.routes[route_index].relay_tls);
        let client: Box<dyn ClientIo> = match terminate {
            None => Box::new(client),
            Some(acceptor) => {
                let read = std::mem::take(&mut first_bytes);
                let accepting = acceptor.accept(Rewound::new(read, client));
                match tokio::time::timeout_at(handshake_deadline, accepting).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => {
                        log::debug!("tcp listener {}: TLS handshake: {e}", self.listener);
                        active.dec();
                        log.write("tls_handshake_failed");
                        return None;
                    }
                    Err(_) => {
                        active.dec();
                        log.write("tls_handshake_timeout");
                        return None;
                    }
                }
            }
        };
        let ended = match connect(upstream, client_ip, timeouts.connect, &mut log).await {
            Some((backend, endpoint)) => {
                let _in_flight = upstream.endpoints[endpoint].state.start_request();
                let mut preamble = match upstream.config.proxy_protocol {
                    Some(version) => {
                        let header = match (client_address, local) {
                            (Some(source), Some(destination)) => Header::Proxied {
                                source,
                                destination,
                            },
                            _ => Header::Local,
                        };
                        proxy_protocol::encode(version, header)
                    }
                    None => Vec::new(),
                };
                let client_bytes = first_bytes.len() as u64;
                preamble.append(&mut first_bytes);
                let relayed = Relay::default();
                relayed
                    .client_to_backend
                    .fetch_add(client_bytes, Ordering::Relaxed);
                let outcome = relayed.run(client, backend, &preamble, timeouts.idle).await;
                log.bytes_in = relayed.client_to_backend.load(Ordering::Relaxed);
                log.bytes_out = relayed.backend_to_client.load(Ordering::Relaxed);
                for (direction, bytes) in [("in", log.bytes_in), ("out", log.bytes_out)] {
                    METRICS
                        .tcp_bytes
                        .with_label_values(&[&route.name, direction])
                        .inc_by(bytes);
                }
                match outcome {
                    Some(outcome) => ended_label(&outcome),
                    None => "idle_timeout",
                }
            }
            None if log.attempts.is_empty() => "no_endpoint",
            None => "connect_failed",
        };
        active.dec();
        log.write(ended);
        None
    }
}

/// Connects to an endpoint of `upstream`, trying others on failure as the retry policy
/// allows; returns the connection and the endpoint's index.
async fn connect(
    upstream: &Upstream,
    client_ip: Option<IpAddr>,
    timeout: Duration,
    log: &mut ConnectionLog<'_>,
) -> Option<(TcpStream, usize)> {
    let facts = RequestFacts {
        header: None,
        client_ip,
        scheme: "tcp",
    };
    let retry = &upstream.config.retry;
    let tries = if retry.on_connect_failure {
        retry.attempts
    } else {
        1
    };
    for _ in 0..tries {
        let attempts = &log.attempts;
        let tried = |i: usize| attempts.iter().any(|a| a.endpoint == i);
        let Some(endpoint) = upstream.pick(&facts, &tried) else {
            log::warn!(
                "upstream {} has no endpoint for a tcp connection",
                upstream.name()
            );
            return None;
        };
        let address = upstream.endpoints[endpoint].address;
        let mut attempt = Attempt::start(endpoint, address);
        let connected = tokio::time::timeout(timeout, TcpStream::connect(address)).await;
        attempt.connect_time = Some(attempt.started.elapsed());
        match connected {
            Ok(Ok(stream)) => {
                // Small writes (SQL, protocol handshakes) go out at once.
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("cannot set TCP_NODELAY towards {address}: {e}");
                }
                upstream.record_outcome(endpoint, false);
                log.attempts.push(attempt);
                return Some((stream, endpoint));
            }
            Ok(Err(e)) => {
                attempt.result = if e.kind() == io::ErrorKind::ConnectionRefused {
                    AttemptResult::ConnectRefused
                } else {
                    AttemptResult::ConnectError
                };
                log::warn!(
                    "upstream {}: cannot connect to {address}: {e}",
                    upstream.name()
                );
            }
            Err(_) => {
                attempt.result = AttemptResult::ConnectTimeout;
                log::warn!(
                    "upstream {}: connect to {address} timed out after {timeout:?}",
                    upstream.name()
                );
            }
        }
        attempt.ended = Some(Instant::now());
        upstream.record_outcome(endpoint, true);
        log.attempts.push(attempt);
    }
    None
}

/// Reads the client's ClientHello into `read` and returns the server name it sends (`None`
/// also when the connection is not TLS); `Err` is how the connection ended meanwhile.
async fn read_client_hello(
    client: &mut Stream,
    read: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Option<String>, &'static str> {
    let reading = async {
        let mut buffer = [0u8; 4096];
        // Parsed again only once the record under way has arrived.
        let mut needed = 1;
        loop {
            if read.len() >= needed {
                match client_hello::server_name(read) {
                    Peek::NeedMore(more) => needed = more,
                    Peek::Hello(name) => return Ok(name),
                    Peek::NotTls(why) => {
                        log::debug!("no TLS server name to route by: {why}");
                        return Ok(None);
                    }
                }
            }
            match client.read(&mut buffer).await {
                Ok(0) => return Err("client_closed"),
                Ok(n) => read.extend_from_slice(&buffer[..n]),
                Err(e) => {
                    log::debug!("reading a TLS ClientHello: {e}");
                    return Err("client_error");
                }
            }
        }
    };
    tokio::time::timeout(timeout, reading)
        .await
        .unwrap_or(Err("client_hello_timeout"))
}

/// Byte counts and activity of one relayed connection.
#[derive(Default)]
struct Relay {
    client_to_backend: AtomicU64,
    backend_to_client: AtomicU64,
    /// Milliseconds from `epoch` to the last byte moved either way.
    last_activity_ms: AtomicU64,
}

impl Relay {
    /// Sends `preamble` to the backend, then relays until both directions are closed
    /// (`Some(Ok)`), a side fails (`Some(Err)`), or nothing moves for `idle` (`None`).
    async fn run(
        &self,
        client: Box<dyn ClientIo>,
        mut backend: TcpStream,
        preamble: &[u8],
        idle: Duration,
    ) -> Option<Result<(), (Side, io::Error)>> {
        if !preamble.is_empty() {
            let sent = tokio::time::timeout(idle, backend.write_all(preamble)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(Err((Side::Backend, e))),
                Err(_) => return None,
            }
        }
        let epoch = Instant::now();
        let (client_read, client_write) = tokio::io::split(client);
        let (backend_read, backend_write) = backend.into_split();
        let up = self.pump(
            client_read,
            backend_write,
            (Side::Client, Side::Backend),
            &self.client_to_backend,
            epoch,
        );
        let down = self.pump(
            backend_read,
            client_write,
            (Side::Backend, Side::Client),
            &self.backend_to_client,
            epoch,
        );
        let idle_timer = async {
            loop {
                let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
                let deadline = epoch + last + idle;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        };
        tokio::select! {
            outcome = async { tokio::try_join!(up, down).map(|_| ()) } => Some(outcome),
            () = idle_timer => None,
        }
    }

    /// Copies `from` to `to` until `from` ends, then shuts `to`'s write side (half-close).
    async fn pump<R, W>(
        &self,
        mut from: R,
        mut to: W,
        (from_side, to_side): (Side, Side),
        moved: &AtomicU64,
        epoch: Instant,
    ) -> Result<(), (Side, io::Error)>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buffer = vec![0u8; RELAY_BUFFER];
        loop {
            let n = from.read(&mut buffer).await.map_err(|e| (from_side, e))?;
            if n == 0 {
                return to.shutdown().await.map_err(|e| (to_side, e));
            }
            to.write_all(&buffer[..n]).await.map_err(|e| (to_side, e))?;
            to.flush().await.map_err(|e| (to_side, e))?;
            moved.fetch_add(n as u64, Ordering::Relaxed);
            self.last_activity_ms
                .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// What the access log says about one tcp connection.
struct ConnectionLog<'a> {
    listener: &'a str,
    /// The TLS server name the connection was routed by.
    server_name: Option<String>,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    client: Option<SocketAddr>,
    started: Instant,
    attempts: Vec<Attempt>,
    bytes_in: u64,
    bytes_out: u64,
}

impl ConnectionLog<'_> {
    fn write(&self, ended: &'static str) {
        access_log::write(&Record {
            ts: access_log::Timestamp(SystemTime::now()),
            request_id: &new_request_id(),
            trace_id: None,
            listener: self.listener,
            route: self.route,
            client: self.client.map(|a| a.ip()),
            method: "",
            host: self.server_name.as_deref().unwrap_or_default(),
            uri: "",
            proto: "tcp",
            status: 0,
            bytes_in: self.bytes_in as usize,
            bytes_out: self.bytes_out as usize,
            duration_ms: millis(self.started.elapsed()),
            upstream: self.upstream,
            attempts: attempt_records(&self.attempts),
            ended: Some(ended),
            user_agent: None,
            referer: None,
            x_forwarded_for: None,
        });
    }
}
