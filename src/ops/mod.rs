//! What operators use: the admin API and `sluice doctor`.

pub(crate) mod admin;
pub mod doctor;
pub mod emit_config;
pub mod ingress_check;
pub mod status_page;
pub mod webhook;
