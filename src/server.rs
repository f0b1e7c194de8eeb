//! Assembles the Pingora server: one proxy service per HTTP listener (TLS-terminating when it
//! has certificates), the admin service,
//! and the reloader, all sharing one [`State`].

use crate::cli::Cli;
use crate::lifecycle::{ExitMonitor, Signals};
use crate::model::{Config, ListenerProtocol, RequestLimits};
use crate::observe::spans;
use crate::observe::{access_log, metrics, metrics::METRICS};
use crate::ops::admin::{AdminApp, AdminScope};
use crate::ops::webhook::AdmissionWebhook;
use crate::proxy::admission::Admission;
use crate::proxy::http::HttpProxy;
use crate::proxy::tcp::TcpProxy;
use crate::services::checker::HealthChecker;
use crate::services::config_watch::Reloader;
use crate::services::discovery::KubernetesDiscovery;
use crate::services::dns::DnsDiscovery;
use crate::services::gateway::GatewayController;
use crate::services::ingress::IngressController;
use crate::services::trace_export::TraceExporter;
use crate::sockets;
use crate::sources::file::FileConfig;
use crate::state::State;
use crate::tls::client_auth::{ClientVerifier, GatewayClientVerifier};
use crate::tls::handshake::HandshakeRecorder;
use crate::tls::SniResolver;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::connectors::ConnectorOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::v1::server::RequestHeadLimits;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Upper bound on tries per request; each upstream's `retry.attempts` (≤ 10) is the real cap.
const MAX_ATTEMPTS: usize = 10;

/// Runs sluice with the checked config `file` until it is told to stop.
pub fn run(cli: &Cli, file: FileConfig) -> Result<(), String> {
    let path = PathBuf::clone(&file.path);
    let state = Arc::new(State::new(file));
    let config = state.snapshot().config.clone();
    let upgrade = cli.upgrade || (cli.takeover && predecessor_running(&config));
    create_runtime_dirs(&config)?;
    if !upgrade {
        // Pingora retries a taken address forever ("will try again"): fail the start.
        addresses_free(&config)?;
    }
    access_log::open(&config.access_log).map_err(|e| e.to_string())?;

    let mut conf = ServerConf {
        threads: config.server.threads,
        upgrade_sock: config.server.upgrade_sock.clone(),
        pid_file: config.server.pid_file.clone(),
        // ExitMonitor ends the process at grace_period (or sooner); Pingora's own unconditional
        // sleep is only a backstop.
        grace_period_seconds: Some(config.server.grace_period.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        daemon: cli.daemon,
        max_retries: MAX_ATTEMPTS,
        // One single-threaded runtime per thread, each connection on one of them: no
        // cross-thread task wake-ups (futex + IPI) per request, which cost more than the
        // balance work stealing buys for short proxy requests (bench/RESULTS.md).
        work_stealing: false,
        ..ServerConf::default()
    };
    // The pool is one process-wide LRU; size it so every upstream can keep its max_idle.
    conf.upstream_keepalive_pool_size = config
        .upstreams
        .iter()
        .map(|u| u.keepalive.max_idle as usize)
        .sum::<usize>()
        .max(1);
    let pool_size = conf.upstream_keepalive_pool_size;
    let opt = Opt {
        upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // After bootstrap: a successor owns the sockets now, so it owns the pid file too.
    // (Daemonized, Pingora writes the child's pid itself.)
    if !cli.daemon {
        if let Err(e) = std::fs::write(&config.server.pid_file, format!("{}\n", std::process::id()))
        {
            log::warn!("cannot write pid file {}: {e}", config.server.pid_file);
        }
    }
    let watch = config.server.watch_config;
    let grace_period = config.server.grace_period;
    let drain_delay = config.server.drain_delay;
    let upgrade_sock = PathBuf::from(&config.server.upgrade_sock);
    METRICS.config_generation.set(1);
    metrics::init_process_series();
    add_serving_services(&mut server, &state, &config, pool_size)?;
    let mut reloader =
        background_service("config reloader", Reloader::new(state.clone(), path, watch));
    reloader.threads = Some(1);
    server.add_service(reloader);
    log::info!("sluice {} starting", env!("CARGO_PKG_VERSION"));
    let mut log_writer = background_service("access log writer", access_log::Writer);
    log_writer.threads = Some(1);
    server.add_service(log_writer);
    // The queue is set up at start only: a config without `tracing:` at start exports
    // nothing until a restart or upgrade.
    if let Some(tracing) = &config.tracing {
        if let Some(queue) = spans::open(tracing.queue_spans) {
            let exporter = TraceExporter::new(state.clone(), tracing.clone(), queue);
            let mut exporter = background_service("trace exporter", exporter);
            exporter.threads = Some(1);
            server.add_service(exporter);
        }
    }
    let mut exit_monitor = background_service(
        "exit monitor",
        ExitMonitor {
            lifecycle: state.lifecycle.clone(),
            grace_period,
            hold_after_handover: cli.takeover,
        },
    );
    exit_monitor.threads = Some(1);
    server.add_service(exit_monitor);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            lifecycle: state.lifecycle.clone(),
            drain_delay,
            upgrade_sock,
            takeover: cli.takeover,
        }),
    });
    Ok(())
}

/// A sluice running inside this process (mini-redis's `server::run(listener, shutdown)`):
/// the same proxies, admin listeners, discovery and health checks as the binary, without
/// the process's own concerns (pid file, signals, upgrade socket, exit monitor, access log
/// writer, config file reloads). Tests drive its [`State`] directly, as a source would.
pub struct InProcess {
    /// The running state: set fragments, read snapshots, subscribe.
    pub state: Arc<State>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Shuts an in-process server down when its sender is used or dropped: a graceful stop
/// with no grace period, so the accept loops end before the runtimes do. (A fast stop
/// shuts the runtime threads of a listener down one by one while its accept loop, running
/// on another of them, retries a listener whose reactor is gone in a tight loop that
/// never yields: the stop never ends.)
struct StopChannel(Mutex<Option<std::sync::mpsc::Receiver<()>>>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for StopChannel {
    async fn recv(&self) -> ShutdownSignal {
        let receiver = self.0.lock().ok().and_then(|mut r| r.take());
        if let Some(receiver) = receiver {
            // A blocking wait, off the server's runtime threads.
            let _ = tokio::task::spawn_blocking(move || receiver.recv()).await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

impl InProcess {
    /// Starts serving `file` on its listeners; returns once the services are added (the
    /// listeners bind moments later: wait for `/readyz` or a connection).
    pub fn start(file: FileConfig) -> Result<Self, String> {
        let state = Arc::new(State::new(file));
        let config = state.snapshot().config.clone();
        addresses_free(&config)?;
        let conf = ServerConf {
            threads: config.server.threads,
            max_retries: MAX_ATTEMPTS,
            work_stealing: false,
            grace_period_seconds: Some(0),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        let pool_size = conf.upstream_keepalive_pool_size;
        let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
        server.bootstrap();
        state.set_reload_armed();
        state.lifecycle.arm_signals();
        add_serving_services(&mut server, &state, &config, pool_size)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sluice in-process".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(StopChannel(Mutex::new(Some(stopped)))),
                })
            })
            .map_err(|e| format!("cannot start the server thread: {e}"))?;
        Ok(Self {
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for InProcess {
    /// Stops the server and waits for its runtimes to end (listeners closed).
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Adds what serves traffic to `server`: a proxy service per listener, the admin
/// listeners, discovery and health checks, all on `state`.
fn add_serving_services(
    server: &mut Server,
    state: &Arc<State>,
    config: &Config,
    pool_size: usize,
) -> Result<(), String> {
    let server_conf = server.configuration.clone();
    let listeners = config.listeners.clone();
    let admin_settings = config.admin.clone();
    for listener in listeners {
        if listener.protocol == ListenerProtocol::Tcp {
            let mut service = Service::new(
                format!("listener {}", listener.name),
                TcpProxy::new(state.clone(), listener.name.clone())?,
            );
            service.add_tcp(&listener.listen.to_string());
            service
                .endpoints()
                .set_pre_tls_callback(Admission::for_listener(&listener));
            server.add_service(service);
            continue;
        }
        let app = HttpProxy::new(state.clone(), &listener);
        let mut options = HttpServerOptions::default();
        options.keepalive_request_limit = Some(listener.keepalive_max_requests);
        // Pingora tells HTTP/2 from HTTP/1 by the connection preface: one port serves both.
        options.h2c = listener.h2c;
        options.h1_request_head_limits = Some(head_limits(&listener.requests));
        // CONNECT reaches sluice's request filter, which refuses it (405) with a log line and
        // a metric, instead of Pingora answering before any hook.
        options.allow_connect_method_proxying = true;
        let mut service = ProxyServiceBuilder::new(&server_conf, app)
            .name(format!("listener {}", listener.name))
            .server_options(options)
            .client_options(ConnectorOptions::new(pool_size))
            .build();
        if let Some(proxy) = service.app_logic() {
            state.connections.add_pool(proxy.upstream_idle_pool());
        }
        // No 64 KiB read buffer per client connection (Pingora's default): the HTTP parser
        // reads into its own buffer anyway, and an idle keepalive connection should cost a
        // few KiB, not 64 (bench/RESULTS.md, idle connections).
        let mut endpoint = ListenerConfig::tcp(listener.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(0));
        if listener.tls {
            let resolver = state
                .tls_resolver(&listener.name)
                .ok_or_else(|| format!("listener {} has no loaded certificate", listener.name))?;
            let gateway_verifier = state.client_verifier(&listener.name);
            endpoint = endpoint.tls(tls_settings(resolver, gateway_verifier, &listener)?);
        }
        service.add_listener(endpoint);
        service
            .endpoints()
            .set_pre_tls_callback(Admission::for_listener(&listener));
        server.add_service(service);
    }

    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp::new(state.clone(), AdminScope::All)),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_settings.listen.to_string());
    server.add_service(admin);
    if let Some(address) = admin_settings.metrics_listen {
        let mut metrics = Service::new(
            "admin metrics".to_string(),
            HttpServer::new_app(AdminApp::new(state.clone(), AdminScope::MetricsAndProbes)),
        );
        metrics.threads = Some(1);
        metrics.add_tcp(&address.to_string());
        server.add_service(metrics);
    }
    // Background work gets one thread each, so it cannot take both cores from the proxy.
    let mut discovery = background_service(
        "kubernetes discovery",
        KubernetesDiscovery::new(state.endpoints_publisher()),
    );
    discovery.threads = Some(1);
    server.add_service(discovery);
    let mut dns = background_service(
        "dns discovery",
        DnsDiscovery::new(state.endpoints_publisher(), config.server.resolver.clone()),
    );
    dns.threads = Some(1);
    server.add_service(dns);
    if let Some(settings) = config.ingress.clone() {
        let webhook = settings.webhook.clone();
        let controller = IngressController::new(state.clone(), settings, config.kubernetes.clone());
        let view = controller.view();
        let mut ingress = background_service("ingress controller", controller);
        ingress.threads = Some(1);
        server.add_service(ingress);
        if let Some(webhook) = webhook {
            let mut service = Service::new(
                "admission webhook".to_string(),
                HttpServer::new_app(AdmissionWebhook::new(state.clone(), view)),
            );
            service.threads = Some(1);
            let (cert, key) = (webhook.certificate.display(), webhook.key.display());
            service
                .add_tls(
                    &webhook.listen.to_string(),
                    &cert.to_string(),
                    &key.to_string(),
                )
                .map_err(|e| {
                    format!(
                        "ingress.webhook: TLS on {} with {cert} and {key}: {e}",
                        webhook.listen
                    )
                })?;
            server.add_service(service);
        }
    }
    if let Some(settings) = config.gateway.clone() {
        let controller = GatewayController::new(state.clone(), settings, config.kubernetes.clone());
        let mut gateway = background_service("gateway controller", controller);
        gateway.threads = Some(1);
        server.add_service(gateway);
    }
    let mut checker = background_service("health checker", HealthChecker::new(state.subscribe()));
    checker.threads = Some(1);
    server.add_service(checker);
    Ok(())
}

/// Pingora's form of a listener's request head limits.
fn head_limits(limits: &RequestLimits) -> RequestHeadLimits {
    RequestHeadLimits {
        max_request_line: limits.max_request_line,
        max_header_line: limits.max_header_line,
        max_head_size: limits.max_header_bytes,
        max_headers: limits.max_headers,
        header_timeout: Some(limits.header_timeout),
    }
}

/// TLS 1.2 and 1.3 (Pingora's rustls acceptor allows no older version), certificates chosen
/// by SNI through `resolver`, ALPN `h2` then `http/1.1`, and client certificates when the
/// listener asks for them, or else when a Gateway does (`gateway_verifier`); the recorder
/// keeps the server name and the verified certificate for the proxy.
fn tls_settings(
    resolver: Arc<SniResolver>,
    gateway_verifier: Option<Arc<GatewayClientVerifier>>,
    listener: &crate::model::ListenerConfig,
) -> Result<TlsSettings, String> {
    // The paths are unused: the resolver supplies every certificate.
    let recorder = HandshakeRecorder {
        listener: listener.name.clone(),
        asks_client_certificate: listener.client_auth.is_some(),
        verified_by_listener: listener
            .client_auth
            .as_ref()
            .is_some_and(|auth| !auth.ca_certificates.is_empty()),
    };
    let mut settings =
        TlsSettings::with_callbacks(Box::new(recorder)).map_err(|e| e.to_string())?;
    settings.set_cert_resolver(resolver);
    if let Some(auth) = &listener.client_auth {
        settings.set_client_cert_verifier(Arc::new(ClientVerifier::new(
            &listener.name,
            &auth.ca_certificates,
            auth.mode,
            auth.verify_depth,
        )?));
    } else if let Some(verifier) = gateway_verifier {
        settings.set_client_cert_verifier(verifier);
    }
    settings.enable_h2();
    Ok(settings)
}

/// Creates the directories of `server.pid_file` and `server.upgrade_sock` (a missing one
/// used to be a warning, after which `kill -HUP $(cat pid_file)` and `sluice upgrade` fail).
fn create_runtime_dirs(config: &Config) -> Result<(), String> {
    for (setting, file) in [
        ("server.pid_file", &config.server.pid_file),
        ("server.upgrade_sock", &config.server.upgrade_sock),
    ] {
        let Some(dir) = std::path::Path::new(file).parent() else {
            continue;
        };
        if dir.as_os_str().is_empty() || dir.is_dir() {
            continue;
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the directory {} of {setting} ({file}): {e}",
                dir.display()
            )
        })?;
        log::info!("created {} for {setting}", dir.display());
    }
    Ok(())
}

/// Fails when a listener's or the admin address is taken (and this is not an upgrade, where
/// the sockets come from the predecessor).
fn addresses_free(config: &Config) -> Result<(), String> {
    let addresses = config
        .listeners
        .iter()
        .map(|l| (format!("listener {}", l.name), l.listen))
        .chain(
            config
                .admin
                .addresses()
                .map(|(key, address)| (key.to_string(), address)),
        );
    for (what, address) in addresses {
        if let Err(e) = std::net::TcpListener::bind(address) {
            return Err(format!(
                "{what}: cannot listen on {address}: {e}. Is another process (a running \
                 sluice?) using it? To replace a running sluice, use `sluice upgrade`."
            ));
        }
    }
    Ok(())
}

/// Whether another process already listens on one of `config`'s addresses (`--takeover`).
fn predecessor_running(config: &Config) -> bool {
    let listening = sockets::listening_tcp();
    let taken = config
        .listeners
        .iter()
        .map(|l| l.listen)
        .chain(config.admin.addresses().map(|(_, address)| address))
        .find(|address| listening.contains(address));
    match taken {
        Some(address) => {
            log::info!("--takeover: {address} is already listening; taking over its sockets");
            true
        }
        None => {
            log::info!("--takeover: no predecessor listens; starting fresh");
            false
        }
    }
}
