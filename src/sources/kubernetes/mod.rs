//! Kubernetes as a source: objects translated into model values.

pub mod endpoint_slices;
pub mod gateway;
pub mod ingress;
pub mod secrets;
pub mod services;
