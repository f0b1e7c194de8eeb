//! Requests per upstream connection, for `keepalive.max_requests`.
//!
//! Pingora does not cap the uses of a pooled connection, so sluice counts them per socket:
//! a fresh connection starts at 1, a reused one adds 1, and when the count reaches the limit
//! the request is sent with `Connection: close`, so the connection is not returned to the
//! pool. A socket number is only reused by the kernel after its close, and the next
//! connection on it is fresh, which resets the count.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Mutex;

/// Use counts of open upstream connections, by socket.
#[derive(Debug, Default)]
pub struct ConnectionUses {
    uses: Mutex<HashMap<RawFd, u32>>,
}

impl ConnectionUses {
    /// Records one more request on socket `fd` and returns how many it has carried,
    /// this one included.
    pub fn record(&self, fd: RawFd, reused: bool) -> u32 {
        let mut uses = match self.uses.lock() {
            Ok(guard) => guard,
            // A panic elsewhere while holding the lock leaves plain counters: still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = uses.entry(fd).or_insert(0);
        *count = if reused { count.saturating_add(1) } else { 1 };
        *count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reuse_and_resets_on_fresh_connection() {
        let uses = ConnectionUses::default();
        assert_eq!(uses.record(7, false), 1);
        assert_eq!(uses.record(7, true), 2);
        assert_eq!(uses.record(7, true), 3);
        assert_eq!(uses.record(8, false), 1);
        assert_eq!(uses.record(7, false), 1);
    }
}
