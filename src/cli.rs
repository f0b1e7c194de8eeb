//! Command line, as in DESIGN.md.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// sluice: a reverse proxy for Kubernetes edges.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(short = 'c', long = "conf", default_value = "/etc/sluice/sluice.yaml")]
    pub config: PathBuf,
    /// Validate the config file completely, print every error, and exit 0 or 1.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Start as the successor of a running sluice: take over its listening sockets.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Run in the background (writes server.pid_file).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check kernel and limits settings (issue #6).
    Doctor,
}
