//! The `sluice` binary: parses the command line and runs the proxy, `doctor` or `upgrade`
//! from the library.

use clap::Parser;
use sluice::lifecycle::upgrade;
use sluice::ops::{doctor, ingress_check};
use sluice::sources::file;
use sluice::{cli, observe, server};
use std::path::Path;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: Pingora allocates and frees a lot per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The model of the config file at `path`, or `None` if there is no file there; its
/// errors are printed when it is invalid.
fn optional_config(path: &Path) -> Result<Option<sluice::model::Config>, ()> {
    if !path.exists() {
        return Ok(None);
    }
    match file::load(path) {
        Ok(config) => Ok(Some(config.model())),
        Err(errors) => {
            eprintln!("{errors}");
            Err(())
        }
    }
}

/// `sluice doctor`: prints every finding; fails on an error-severity one. The config is
/// optional: without it, the checks that depend on listeners and upstreams are skipped.
fn run_doctor(config_path: &Path, proc_root: &Path) -> ExitCode {
    let Ok(config) = optional_config(config_path) else {
        return ExitCode::FAILURE;
    };
    if config.is_none() {
        println!(
            "no config at {}: checks that depend on it are skipped (pass -c FILE)",
            config_path.display()
        );
    }
    let findings = doctor::check(proc_root, config.as_ref());
    for finding in &findings {
        print!("{finding}");
    }
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let errors = count(doctor::Severity::Error);
    println!(
        "{} checks: {errors} error(s), {} warning(s)",
        findings.len(),
        count(doctor::Severity::Warning)
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `sluice ingress check`: prints the migration report; fails if anything is rejected or
/// not supported.
fn run_ingress_check(config_path: &Path, from_file: Option<&Path>, emit: bool) -> ExitCode {
    let Ok(config) = optional_config(config_path) else {
        return ExitCode::FAILURE;
    };
    let settings = config
        .as_ref()
        .and_then(|c| c.ingress.clone())
        .unwrap_or_else(ingress_check::default_settings);
    let listeners = match config.as_ref().filter(|c| c.ingress.is_some()) {
        Some(config) => config.listeners.clone(),
        None => match ingress_check::default_listener() {
            Ok(http) => ingress_check::listeners_for(&settings, &http),
            Err(e) => {
                eprintln!("sluice ingress check: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let input = match from_file {
        Some(path) => ingress_check::CheckInput::read_file(path),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))
            .and_then(|runtime| {
                let client = config.as_ref().and_then(|c| c.kubernetes.as_ref());
                runtime.block_on(ingress_check::CheckInput::read_cluster(client))
            }),
    };
    let input = match input {
        Ok(input) => input,
        Err(e) => {
            eprintln!("sluice ingress check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = ingress_check::check(&input, &settings, &listeners);
    if emit {
        let fragments: Vec<_> = outcome.accepted.iter().collect();
        print!("{}", sluice::ops::emit_config::emit(&fragments));
    } else {
        print!("{}", outcome.text);
    }
    if outcome.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Ingress {
            command:
                cli::IngressCommand::Check {
                    ref file,
                    emit_config,
                },
        }) => return run_ingress_check(&cli.config, file.as_deref(), emit_config),
        Some(cli::Command::Doctor { proc_root }) => return run_doctor(&cli.config, &proc_root),
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
    let config = match file::load(&cli.config) {
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
        for warning in config.settings.warnings() {
            println!("warning: {warning}");
        }
        println!("{}: configuration OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| {
            use std::io::Write;
            writeln!(
                out,
                "[{} {:<5} {}] {}",
                out.timestamp_millis(),
                record.level(),
                record.target(),
                observe::one_line(&record.args().to_string())
            )
        })
        .init();
    observe::tracing_events::init();
    for warning in config.settings.warnings() {
        log::warn!("{warning}");
    }
    for finding in doctor::check(Path::new("/proc"), Some(&config.model())) {
        if finding.severity == doctor::Severity::Error {
            log::error!(
                "sluice doctor: {} = {}: {} Fix: {}",
                finding.setting,
                finding.found,
                finding.why,
                finding.fix
            );
        }
    }
    match server::run(&cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
