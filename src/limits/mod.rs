//! Rate limits: per replica, and fleet-wide across every sluice replica (issue #21).
//!
//! - [`rate_limit`]: `routes[].rate_limit`, counted in each process; the limit keys both
//!   kinds share.
//! - [`global`]: `routes[].global_rate_limit`, a route's fleet-wide limit: request keys,
//!   pools, and what a request gets when Redis cannot say.
//! - [`reservation`]: the tokens one replica holds for one key, reserved ahead of the
//!   requests that spend them, so that most requests make no round trip.
//! - [`store`]: the connection to Redis (one server, Sentinel or Cluster; TLS, AUTH), the
//!   counting script, and the [`breaker`] every call passes.

pub mod breaker;
pub mod global;
pub mod rate_limit;
pub mod reservation;
pub mod store;

pub use global::{GlobalLimiter, Verdict};
pub use store::Store;
