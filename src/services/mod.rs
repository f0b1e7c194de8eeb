//! Background services: they follow the published snapshot and act on the world.

pub mod checker;
pub mod config_watch;
pub mod discovery;
pub mod dns;
pub mod gateway;
pub mod ingress;
pub mod leader;
pub mod trace_export;
pub mod watch;
