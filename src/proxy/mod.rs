//! The data path: the HTTP proxy (Pingora `ProxyHttp` glue) and its retry policy.

pub mod context;
pub mod errors;
pub mod headers;
pub mod http;
pub mod report;
pub mod retry;
