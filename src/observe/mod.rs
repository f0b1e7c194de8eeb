//! What sluice tells operators: Prometheus metrics and the JSON access log; and how its
//! dependencies' `tracing` events reach the log.

pub mod access_log;
pub mod metrics;
pub mod redact;
pub mod tracing_events;
