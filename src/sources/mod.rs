//! Where configuration comes from. Each source turns what it reads into model values
//! ([`crate::model`]): the config file into process settings, listeners and one fragment;
//! Kubernetes EndpointSlices into endpoints. The compiler joins them.

pub mod file;
pub mod kubernetes;

/// The name of the config file source (in `/config`, metrics and logs).
pub const FILE_SOURCE: &str = "file";
