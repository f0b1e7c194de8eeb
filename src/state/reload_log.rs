//! The last config reloads, for the status page: when, what asked for it, and how it went.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many reloads are kept.
const KEPT: usize = 10;

/// One reload.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    /// What asked for it (`SIGHUP`, `file change`, ...).
    pub trigger: String,
    /// The generation it made, or why it was refused (the first line).
    pub outcome: Result<u64, String>,
}

/// The last [`KEPT`] reloads, newest first.
#[derive(Debug, Default)]
pub struct ReloadLog(Mutex<VecDeque<ReloadRecord>>);

impl ReloadLog {
    pub fn record(&self, record: ReloadRecord) {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.push_front(record);
        kept.truncate(KEPT);
    }

    pub fn recent(&self) -> Vec<ReloadRecord> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter().cloned().collect()
    }
}
