//! Background work (discovery, health checks) runs at a lower CPU priority than the proxy.
//!
//! On a small node, rebuilding a consistent-hash ring or decoding a watch event competes with
//! the threads serving requests; at nice 10 the kernel lets request threads preempt it, so
//! endpoint churn costs background time rather than request latency.

// setpriority(2) has no safe wrapper in std.
#![allow(unsafe_code)]

/// Niceness of background threads (0 is normal, 19 the lowest priority).
const BACKGROUND_NICENESS: libc::c_int = 10;

/// Lowers the priority of the calling thread; logs and carries on if the OS refuses.
pub fn lower_current_thread() {
    // SAFETY: gettid and setpriority take no pointers; a failure is reported through errno.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICENESS)
    };
    if result != 0 {
        log::warn!(
            "cannot lower the priority of a background thread: {}",
            std::io::Error::last_os_error()
        );
    }
}
