//! Config reload triggers: SIGHUP, and (with `server.watch_config`) a change of the content
//! of the file or of the certificate files it names, which also catches Kubernetes ConfigMap updates (an atomic symlink swap that
//! leaves the path's own modification time unchanged).

use crate::observe::metrics::{self, METRICS};
use crate::state::{ReloadRecord, State};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often the file is read when `watch_config` is on.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads the config on SIGHUP and on content change.
pub struct Reloader {
    state: Arc<State>,
    path: PathBuf,
    watch: bool,
}

impl Reloader {
    /// A reloader of `path` into `state`.
    pub fn new(state: Arc<State>, path: PathBuf, watch: bool) -> Self {
        Self { state, path, watch }
    }

    /// Reloads on a blocking thread: reading the files (config, certificates) must not
    /// stall the runtime's worker thread.
    async fn reload(&self, trigger: &'static str) {
        let (state, path) = (self.state.clone(), self.path.clone());
        let done = tokio::task::spawn_blocking(move || reload(&state, &path, trigger)).await;
        if let Err(e) = done {
            log::error!("config reload ({trigger}) failed: {e}");
        }
    }

    /// [`fingerprint`] on a blocking thread.
    async fn fingerprint(&self) -> Option<u64> {
        let (state, path) = (self.state.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || fingerprint(&state, &path))
            .await
            .ok()
            .flatten()
    }
}

/// Re-reads `path` into `state`, logging and counting the outcome. The line is written
/// before the count moves, so whoever sees the count can read the line.
fn reload(state: &State, path: &Path, trigger: &str) {
    let outcome = state.reload();
    state.reloads.record(ReloadRecord {
        at: std::time::SystemTime::now(),
        trigger: trigger.to_string(),
        outcome: match &outcome {
            Ok(generation) => Ok(*generation),
            Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
        },
    });
    match outcome {
        Ok(generation) => {
            log::info!(
                "config reloaded ({trigger}): {} is generation {generation}",
                path.display()
            );
            metrics::config_loaded();
            METRICS.config_reloads.with_label_values(&["ok"]).inc();
        }
        Err(e) => {
            log::error!(
                "config reload ({trigger}) rejected; still serving the previous config:\n{e}"
            );
            METRICS.config_reloads.with_label_values(&["error"]).inc();
        }
    }
}

/// A fingerprint of the content of the config file and of the certificate files it names
/// (so a renewed certificate is picked up too), or `None` when the config file cannot be
/// read right now.
fn fingerprint(state: &State, path: &Path) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut hasher);
    for file in state.snapshot().file.files.iter().skip(1) {
        std::fs::read(file).ok().hash(&mut hasher);
    }
    Some(hasher.finish())
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                return;
            }
        };
        self.state.set_reload_armed();
        let mut last = self.fingerprint().await;
        let mut ticker = tokio::time::interval(WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangups.recv() => {
                    self.reload("SIGHUP").await;
                    last = self.fingerprint().await;
                }
                _ = ticker.tick(), if self.watch => {
                    let now = self.fingerprint().await;
                    if now.is_some() && now != last {
                        last = now;
                        self.reload("file changed").await;
                    }
                }
            }
        }
    }
}
