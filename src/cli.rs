//! Command line, as in DESIGN.md.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// sluice: a reverse proxy for Kubernetes edges.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(
        short = 'c',
        long = "conf",
        global = true,
        default_value = "/etc/sluice/sluice.yaml"
    )]
    pub config: PathBuf,
    /// Validate the config file completely, print every error, and exit 0 or 1.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Start as the successor of a running sluice: take over its listening sockets.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Kubernetes rollouts: if a sluice already listens on this config's addresses (the
    /// previous pod of a hostNetwork DaemonSet), take over its sockets as with -u; otherwise
    /// start normally. A process started this way hands its sockets to the next one that
    /// waits on server.upgrade_sock, and after draining exits only at SIGTERM.
    #[arg(long = "takeover", conflicts_with = "upgrade")]
    pub takeover: bool,
    /// Run in the background (writes server.pid_file).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check kernel and limits settings; print each finding with the fix; exit 1 on an
    /// error-severity finding.
    Doctor {
        /// Where /proc is (a copy of another machine's, or a test tree).
        #[arg(long = "proc-root", default_value = "/proc")]
        proc_root: PathBuf,
    },
    /// Kubernetes Ingress tools.
    Ingress {
        #[command(subcommand)]
        command: IngressCommand,
    },
    /// Graceful binary upgrade: start this binary as the successor of the running sluice,
    /// hand the sockets over, and tell systemd the new main PID.
    Upgrade {
        /// PID of the running sluice (default: read server.pid_file).
        #[arg(long)]
        pid: Option<u32>,
    },
}

/// `sluice ingress ...`.
#[derive(Debug, Subcommand)]
pub enum IngressCommand {
    /// The migration report: per Ingress, what sluice will serve, each ingress-nginx
    /// annotation as mapped, not supported or refused, and the differences from
    /// ingress-nginx. Exits 1 if anything is rejected or not supported. Uses the `ingress:`
    /// settings of the config file (-c) if there is one.
    Check {
        /// Read the objects from this file (`kubectl get ingress,ingressclass,svc -A -o
        /// yaml`) instead of the cluster; Services and Secrets it lacks are assumed to exist.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print the equivalent sluice.yaml routes and upstreams instead of the report
        /// (objects that would be rejected are left out).
        #[arg(long = "emit-config")]
        emit_config: bool,
    },
}
