//! The data path: the HTTP proxy (Pingora `ProxyHttp` glue), its retry policy, gRPC
//! awareness, rate limits, and the L4 TCP proxy.

pub mod admission;
pub mod auth;
pub mod client_ip;
pub mod context;
pub mod error_pages;
pub mod errors;
pub mod grpc;
pub mod headers;
pub mod http;
pub mod mirror;
pub mod path;
pub mod proxy_protocol;
pub mod report;
pub mod request_body;
pub mod request_head;
pub mod retry;
mod rewind;
pub mod subrequest;
pub mod tcp;
pub mod trace;
pub mod traffic;
