//! The trace exporter: takes finished spans from the queue (`observe::spans`) and POSTs
//! them to the collector as OTLP/HTTP protobuf, in batches.
//!
//! A batch leaves when `tracing.batch_spans` are waiting or `tracing.batch_delay` after its
//! first span, as the config in effect says (a reload changes them and the collector). One export runs at a time, bounded by `tracing.export_timeout`; a failed one
//! is not retried (its spans are counted as `export_failed`), so a collector that is down
//! costs one timeout per batch and never a request's time: meanwhile spans wait in the
//! bounded queue, and past it are dropped. At a stop, what is queued is sent once.

use crate::model::{OtlpEndpoint, TracingSettings};
use crate::observe::metrics::METRICS;
use crate::observe::spans::{attribute, Value};
use crate::proxy::subrequest;
use crate::state::State;
use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most bytes of a collector's answer read (its body is a small protobuf message).
const MAX_ANSWER: usize = 64 * 1024;

/// The background service that exports spans.
pub struct TraceExporter {
    state: Arc<State>,
    /// The settings at start, in effect while a reloaded config has no `tracing:`.
    started: TracingSettings,
    /// Taken by the service when it starts.
    queue: Mutex<Option<mpsc::Receiver<Span>>>,
}

impl TraceExporter {
    pub fn new(state: Arc<State>, started: TracingSettings, queue: mpsc::Receiver<Span>) -> Self {
        Self {
            state,
            started,
            queue: Mutex::new(Some(queue)),
        }
    }

    /// The settings of the config in effect: a reload changes the collector, the batches
    /// and the timeout (the queue's size is set at start).
    fn settings(&self) -> TracingSettings {
        let config = &self.state.snapshot().config;
        config
            .tracing
            .clone()
            .unwrap_or_else(|| self.started.clone())
    }
}

#[async_trait]
impl BackgroundService for TraceExporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut queue) = queue else {
            return;
        };
        let mut settings = self.settings();
        let mut batch = Vec::with_capacity(settings.batch_spans);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                span = queue.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
            }
            settings = self.settings();
            let due = Instant::now() + settings.batch_delay;
            while batch.len() < settings.batch_spans {
                tokio::select! {
                    span = queue.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(due) => break,
                }
            }
            export(&settings, std::mem::take(&mut batch)).await;
        }
        // Stopping: what is queued goes once more, in batches.
        while let Ok(span) = queue.try_recv() {
            batch.push(span);
            if batch.len() >= settings.batch_spans {
                export(&settings, std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            export(&settings, batch).await;
        }
    }
}

/// Sends `spans` and counts how it went.
async fn export(settings: &TracingSettings, spans: Vec<Span>) {
    let count = spans.len() as u64;
    let body = Bytes::from(request(settings, spans).encode_to_vec());
    let sent = tokio::time::timeout(settings.export_timeout, post(&settings.collector, body)).await;
    let result = match sent {
        Ok(Ok(())) => "exported",
        Ok(Err(e)) => {
            log::warn!(
                "tracing: cannot export {count} spans to {}: {e}",
                settings.collector
            );
            "export_failed"
        }
        Err(_) => {
            log::warn!(
                "tracing: the collector {} did not take {count} spans within {:?}",
                settings.collector,
                settings.export_timeout
            );
            "export_failed"
        }
    };
    METRICS
        .tracing_spans
        .with_label_values(&[result])
        .inc_by(count);
}

/// The OTLP export request of `spans`: one resource (this process), one scope (sluice).
fn request(settings: &TracingSettings, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let version = env!("CARGO_PKG_VERSION");
    let resource = Resource {
        attributes: vec![
            attribute("service.name", Value::Text(&settings.service_name)),
            attribute("service.version", Value::Text(version)),
            attribute("telemetry.sdk.name", Value::Text("sluice")),
        ],
        ..Resource::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "sluice".into(),
                    version: version.into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// POSTs `body` to `collector`; an answer other than 2xx is an error.
async fn post(collector: &OtlpEndpoint, body: Bytes) -> Result<(), String> {
    let address = tokio::net::lookup_host((collector.host.as_str(), collector.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", collector.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", collector.host))?;
    let sni = if collector.tls {
        collector.host.clone()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(address, collector.tls, sni);
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    let mut request = RequestHeader::build("POST", collector.path.as_bytes(), None)
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let host = match (collector.tls, collector.port) {
        (true, 443) | (false, 80) => collector.host.clone(),
        (_, port) => format!("{}:{port}", collector.host),
    };
    let headers = [
        ("host", host),
        ("content-type", "application/x-protobuf".to_string()),
        ("content-length", body.len().to_string()),
    ];
    for (name, value) in headers {
        request
            .insert_header(name, value)
            .map_err(|e| format!("cannot build the request: {e}"))?;
    }
    let answer = subrequest::exchange(&peer, request, body, MAX_ANSWER)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.header.status.as_u16();
    if answer.body.is_none() {
        return Err(format!(
            "answered {status} with more than {MAX_ANSWER} bytes"
        ));
    }
    if !(200..300).contains(&status) {
        return Err(format!("answered {status}"));
    }
    Ok(())
}
