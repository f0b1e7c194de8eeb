//! Sources of endpoints other than the config file.

pub mod endpoint_slices;
pub mod kubernetes;
