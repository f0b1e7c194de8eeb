//! Typed Gateway API v1.6.1 (standard channel) objects, generated from the official CRDs in
//! `k8s/gateway-api/crds/` by `k8s/gateway-api/generate.sh` (kopium). Do not edit the
//! generated files; regenerate them.
#![allow(clippy::all, missing_docs)]

pub mod backendtlspolicies;
pub mod gatewayclasses;
pub mod gateways;
pub mod grpcroutes;
pub mod httproutes;
pub mod listenersets;
pub mod referencegrants;
pub mod tcproutes;
pub mod tlsroutes;
