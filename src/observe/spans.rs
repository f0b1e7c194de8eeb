//! Finished spans on their way to the collector: the bounded queue between the request
//! path and the exporter, and the OTLP shapes spans are written in.
//!
//! The request path never waits here: [`submit`] puts a span in the queue or, when
//! `tracing.queue_spans` are already waiting (the collector is slow or down), drops it and
//! counts it in `sluice_tracing_spans_total{result="queue_full"}`. The exporter
//! (`services::trace_export`) takes them out in batches.

use super::metrics::METRICS;
use once_cell::sync::OnceCell;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

/// The queue's sending side, once tracing is set up.
static QUEUE: OnceCell<mpsc::Sender<Span>> = OnceCell::new();

/// Sets up the queue of `capacity` spans and returns its receiving side; `None` if it was
/// set up before (one exporter per process).
pub fn open(capacity: usize) -> Option<mpsc::Receiver<Span>> {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    QUEUE.set(sender).ok()?;
    for result in ["exported", "queue_full", "export_failed"] {
        METRICS.tracing_spans.with_label_values(&[result]);
    }
    Some(receiver)
}

/// Whether spans are exported at all (tracing was set up at start).
pub fn is_enabled() -> bool {
    QUEUE.get().is_some()
}

/// Queues `spans` for export, dropping (and counting) those the queue has no room for.
pub fn submit(spans: impl IntoIterator<Item = Span>) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let mut dropped = 0;
    for span in spans {
        if queue.try_send(span).is_err() {
            dropped += 1;
        }
    }
    if dropped > 0 {
        METRICS
            .tracing_spans
            .with_label_values(&["queue_full"])
            .inc_by(dropped);
    }
}

/// An attribute's value.
pub enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// A span attribute `key` = `value`.
pub fn attribute(key: &str, value: Value<'_>) -> KeyValue {
    let value = match value {
        Value::Text(text) => any_value::Value::StringValue(text.to_string()),
        Value::Int(n) => any_value::Value::IntValue(n),
        Value::Float(x) => any_value::Value::DoubleValue(x),
        Value::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}
