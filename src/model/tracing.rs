//! Tracing settings: where spans go and which requests are traced (issue #20).

pub use crate::observe::trace_context::Sampler;
use std::time::Duration;

/// `tracing:` of the config file. Whether spans are exported at all, and the queue's size,
/// are set at a start or an upgrade; everything else (the sampler, the collector, batches,
/// and each route's `tracing`) at any reload.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    pub collector: OtlpEndpoint,
    /// The most one export may take; its spans are dropped (and counted) past it.
    pub export_timeout: Duration,
    pub sampler: Sampler,
    /// Spans that may wait for export; more are dropped, and counted.
    pub queue_spans: usize,
    /// Spans sent in one export.
    pub batch_spans: usize,
    /// The most a span waits for its batch to fill.
    pub batch_delay: Duration,
    /// The `service.name` of the spans' resource.
    pub service_name: String,
}

/// An OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    pub tls: bool,
    /// A name (resolved at each export) or an IP literal.
    pub host: String,
    pub port: u16,
    /// The path and query the export is POSTed to.
    pub path: String,
}

impl std::fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}
