//! sluice: a reverse proxy for Kubernetes edges, built on Pingora.
//!
//! See DESIGN.md for the contract: command line, signals, config file, admin endpoints,
//! metrics and access log. The `sluice` binary (src/main.rs) is a thin entry point; the
//! library exists so that tests and benchmarks can drive the same code.
//!
//! The modules form layers; each uses only the layers above it (`tests/module_graph.rs`
//! fails the build on an edge that points up, and on any cycle):
//!
//! | layer | modules | what |
//! |---|---|---|
//! | leaf | `observe`, `tls`, `sockets`, `priority`, `cli` | logging, metrics, certificates, kernel facts |
//! | model | `model` | what sluice serves, as typed values with their origins |
//! | compile | `compile` | fragments of every source → one model; rejections |
//! | sources | `sources` | where configuration comes from: the file, Kubernetes |
//! | runtime | `routing`, `upstream` | route tables; endpoints, balancing, health, pools |
//! | limits | `limits` | rate limits: per replica, and shared by every replica (Redis) |
//! | lifecycle | `lifecycle` | draining, open work, signals, graceful upgrade |
//! | state | `state` | the current snapshot, rebuilt and published on every change |
//! | proxy | `proxy` | the request path: HTTP and TCP |
//! | services | `services` | background work: health checks, discovery, config watch |
//! | ops | `ops` | the admin API, `sluice doctor` |
//! | process | `server` | assembling it all into a Pingora server |

#![deny(unsafe_code)]

pub mod cli;
pub(crate) mod compile;
pub mod lifecycle;
pub mod limits;
pub mod model;
pub mod observe;
pub mod ops;
pub(crate) mod priority;
pub(crate) mod proxy;
pub mod routing;
pub mod server;
pub(crate) mod services;
pub(crate) mod sockets;
pub mod sources;
pub mod state;
pub mod tls;
pub mod upstream;
