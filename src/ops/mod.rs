//! What operators use: the admin API and `sluice doctor`.

pub mod admin;
pub mod doctor;
