//! The config file as a source: `sluice.yaml` parsed, checked and turned into the process
//! settings, the listeners and one [`Fragment`] with the file's routes and upstreams.
//!
//! Loading is two steps: serde parses the text into [`schema::RawConfig`] (every unknown
//! key and wrong type is collected, see [`schema_errors`]), then [`validate`] checks every
//! value and, through the compiler, every cross-reference, collecting *all* problems, each
//! with FILE:LINE:COL and key path. The file is
//! all-or-nothing: one problem and the running configuration stays.

mod location;
pub mod schema;
mod schema_errors;
mod validate;

use crate::compile::Compiler;
use crate::model::{Config, Fragment};
pub use location::Position;
use schema::RawConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A checked config file.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The file it was read from.
    pub path: Arc<PathBuf>,
    /// The file as parsed, with defaults filled in (served by `/config`).
    pub raw: Arc<RawConfig>,
    /// The files whose content makes up this configuration: the config file and every
    /// certificate and key it names (watched for changes with `server.watch_config`).
    pub files: Vec<PathBuf>,
    /// The process settings, listeners and their certificates (no routes or upstreams:
    /// those are in [`Self::fragment`]).
    pub settings: Config,
    /// The file's routes and upstreams.
    pub fragment: Arc<Fragment>,
    /// The file has a `routes:` key (`routes: []` says "no routes" on purpose).
    pub routes_declared: bool,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub position: Position,
    /// Key path, e.g. `upstreams[1].hash_key`; empty for file-level problems.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file, self.position.line, self.position.column
        )?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl FileConfig {
    /// The model of this file alone (no other source).
    pub fn model(&self) -> Config {
        let offered = crate::compile::Offered {
            source: super::FILE_SOURCE.to_string(),
            fragment: self.fragment.clone(),
        };
        crate::compile::compile(&self.settings, &[offered]).config
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<FileConfig, ConfigErrors> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            position: Position { line: 0, column: 0 },
            key_path: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(path, &source)
}

/// Parses and validates `source`, read from `path`.
pub fn parse(path: &Path, source: &str) -> Result<FileConfig, ConfigErrors> {
    let file = path.display().to_string();
    let error_at = |position: Position, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            position,
            key_path: String::new(),
            message,
        }])
    };
    let document: serde_yaml::Value = serde_yaml::from_str(source).map_err(|e| {
        let position = e
            .location()
            .map(|l| Position {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or(Position { line: 1, column: 1 });
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_string(),
            None => message,
        };
        error_at(position, message)
    })?;
    // An empty file (often one truncated by an editor or a copy in progress) would parse as
    // all defaults: a config without listeners.
    if document.is_null() {
        return Err(error_at(
            Position { line: 1, column: 1 },
            "the file is empty (truncated, or still being written?): no listeners, routes or \
             upstreams"
                .into(),
        ));
    }
    let routes_declared = document
        .as_mapping()
        .is_some_and(|m| m.contains_key("routes"));
    let positions = location::PositionIndex::build(source);
    let raw =
        schema_errors::deserialize(&file, source, document, &positions).map_err(ConfigErrors)?;
    validate::validate(path, raw, &positions, routes_declared)
}
