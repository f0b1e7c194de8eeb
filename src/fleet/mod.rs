//! Fleet-wide rate limits (issue #21): limits that hold across every sluice replica, counted
//! in Redis.
//!
//! - [`store`]: the connection to Redis (one server, Sentinel or Cluster; TLS, AUTH), the
//!   reservation script, and the [`breaker`] every call passes.
//! - [`reservation`]: the tokens one replica holds for one key, reserved ahead of the
//!   requests that spend them, so that most requests make no round trip.
//! - [`limiter`]: a route's limit: request keys, pools, and what a request gets when Redis
//!   cannot say.

pub mod breaker;
pub mod limiter;
pub mod reservation;
pub mod store;

pub use limiter::{GlobalLimiter, Verdict};
pub use store::Store;
