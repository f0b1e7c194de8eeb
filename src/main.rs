//! sluice: a reverse proxy for Kubernetes edges, built on Pingora.
//!
//! See DESIGN.md for the contract: command line, signals, config file, admin endpoints,
//! metrics and access log.

mod admin;
mod cli;
mod config;
mod discovery;
mod lifecycle;
mod observe;
mod priority;
mod proxy;
mod reload;
mod routing;
mod server;
mod sockets;
mod state;
mod upgrade;
mod upstream;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Doctor) => {
            eprintln!("sluice doctor is not implemented yet (issue #6)");
            return ExitCode::FAILURE;
        }
        Some(cli::Command::Upgrade { pid }) => {
            return match upgrade::run(&cli.config, pid) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice upgrade: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); configuration rejected",
                cli.config.display(),
                errors.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    if cli.test {
        println!("{}: configuration OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match server::run(&cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
