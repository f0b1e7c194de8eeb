//! Operator events: text-log lines about conditions an operator can act on (an upstream
//! answering garbage, a backend resetting connections), at most one line per kind and
//! subject per [`INTERVAL`]. Repeats in between are counted and reported with the next line,
//! so a failing upstream under load writes a line every few seconds, not one per request.
//! Per-request outcomes belong in the access log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two lines of one kind and subject.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Distinct kinds and subjects remembered; past it the table starts over (bounded memory
/// whatever the number of endpoints).
const MAX_KEYS: usize = 4096;

/// When each (kind, subject) last wrote a line, and the repeats suppressed since.
type LastLines = HashMap<(&'static str, String), (Instant, u64)>;

static LAST: Mutex<Option<LastLines>> = Mutex::new(None);

/// Logs `message()` at warn level unless a line of `kind` about `subject` was written in
/// the last [`INTERVAL`]; the message is built only when it is written.
pub fn warn(kind: &'static str, subject: &str, message: impl FnOnce() -> String) {
    if let Some(suppressed) = admit(kind, subject, Instant::now()) {
        let repeats = if suppressed > 0 {
            format!(" ({suppressed} more like it in the last {INTERVAL:?})")
        } else {
            String::new()
        };
        log::warn!("{}{repeats}", message());
    }
}

/// Whether a line of `kind` about `subject` may be written at `now`, and how many were
/// suppressed before it.
fn admit(kind: &'static str, subject: &str, now: Instant) -> Option<u64> {
    let mut table = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let table = table.get_or_insert_with(HashMap::new);
    if table.len() >= MAX_KEYS {
        table.clear();
    }
    let key = (kind, subject.to_string());
    match table.get_mut(&key) {
        Some((last, suppressed)) if now.duration_since(*last) < INTERVAL => {
            *suppressed += 1;
            None
        }
        Some((last, suppressed)) => {
            *last = now;
            Some(std::mem::take(suppressed))
        }
        None => {
            table.insert(key, (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let start = Instant::now();
        assert_eq!(admit("t", "a", start), Some(0));
        assert_eq!(admit("t", "a", start + Duration::from_secs(1)), None);
        assert_eq!(admit("t", "a", start + Duration::from_secs(2)), None);
        // Another subject is independent.
        assert_eq!(admit("t", "b", start + Duration::from_secs(2)), Some(0));
        assert_eq!(admit("t", "a", start + INTERVAL), Some(2));
        assert_eq!(admit("t", "a", start + INTERVAL), None);
    }
}
