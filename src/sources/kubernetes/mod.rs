//! Kubernetes as a source: objects translated into model values.

pub mod endpoint_slices;
pub mod ingress;
