//! sluice: a reverse proxy for Kubernetes edges, built on Pingora.
//!
//! See DESIGN.md for the contract: command line, signals, config file, admin endpoints,
//! metrics and access log. The `sluice` binary (src/main.rs) is a thin entry point; the
//! library exists so that benchmarks in `bench/` can drive the same code.

pub mod admin;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod doctor;
pub mod lifecycle;
pub mod observe;
pub mod priority;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod sockets;
pub mod state;
pub mod tls;
pub mod upgrade;
pub mod upstream;
