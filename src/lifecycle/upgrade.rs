//! `sluice upgrade [-c FILE] [--pid PID]`: the graceful binary upgrade as one command, for
//! systemd's `ExecReload` and for operators.
//!
//! 1. Validates FILE; a bad config stops here and the running sluice is untouched.
//! 2. Starts this binary as `sluice -u -c FILE`, the successor, and waits until it listens
//!    on `server.upgrade_sock`.
//! 3. Sends SIGQUIT to the running sluice (PID from `--pid`, else `server.pid_file`), which
//!    hands its listening sockets over and drains.
//! 4. Waits until the successor has the sockets (it then writes its PID to
//!    `server.pid_file`) and tells systemd the new main PID when run under it
//!    (`NOTIFY_SOCKET`, needs `NotifyAccess=all`).

// kill(2) has no safe wrapper in std.
#![allow(unsafe_code)]

use crate::sockets;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the successor may take to listen on the upgrade socket, then to take the
/// sockets (Pingora's successor gives up after about 5 s without them).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Performs the upgrade; the error says which step failed and what state things are in.
pub fn run(config_path: &Path, pid: Option<u32>) -> Result<u32, String> {
    let config = crate::sources::file::load(config_path)
        .map_err(|errors| format!("{errors}\nconfig rejected; the running sluice is untouched"))?;
    let pid_file = Path::new(&config.settings.server.pid_file);
    let old = match pid {
        Some(pid) => pid,
        None => read_pid(pid_file)?,
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    if unsafe { libc::kill(old as libc::pid_t, 0) } != 0 {
        return Err(format!("no running sluice with pid {old}"));
    }
    let upgrade_sock = Path::new(&config.settings.server.upgrade_sock);
    let binary = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut successor = Command::new(&binary)
        .arg("-u")
        .arg("-c")
        .arg(config_path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {} -u: {e}", binary.display()))?;
    let new = successor.id();

    wait_for(&mut successor, "listen on the upgrade socket", || {
        sockets::unix_socket_listening(upgrade_sock)
    })?;
    // SAFETY: sends SIGQUIT to the pid checked above.
    if unsafe { libc::kill(old as libc::pid_t, libc::SIGQUIT) } != 0 {
        let _ = successor.kill();
        return Err(format!(
            "cannot send SIGQUIT to {old}: {}; successor stopped, the running sluice is untouched",
            std::io::Error::last_os_error()
        ));
    }
    wait_for(&mut successor, "take the listening sockets", || {
        read_pid(pid_file).is_ok_and(|p| p == new)
    })?;
    notify_systemd(new);
    println!("sluice upgrade: pid {old} handed its sockets to pid {new}; {old} drains and exits");
    Ok(new)
}

/// Polls `done` until it holds, failing if the successor exits or the step takes too long.
fn wait_for(successor: &mut Child, step: &str, done: impl Fn() -> bool) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if let Ok(Some(status)) = successor.try_wait() {
            return Err(format!(
                "the successor exited ({status}) before it could {step}; the running sluice keeps serving"
            ));
        }
        if started.elapsed() > STEP_TIMEOUT {
            let _ = successor.kill();
            return Err(format!(
                "the successor did not {step} within {STEP_TIMEOUT:?}; stopped it, the running sluice keeps serving"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(pid_file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(pid_file).map_err(|e| {
        format!(
            "cannot read pid file {}: {e}; pass --pid",
            pid_file.display()
        )
    })?;
    text.trim()
        .parse()
        .map_err(|e| format!("pid file {} holds {text:?}: {e}", pid_file.display()))
}

/// Tells systemd that `pid` is the service's main process now (ignored outside systemd).
fn notify_systemd(pid: u32) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let address = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(&target),
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let address = address?;
        socket.send_to_addr(format!("MAINPID={pid}\n").as_bytes(), &address)
    });
    if let Err(e) = sent {
        eprintln!("sluice upgrade: cannot tell systemd the new main pid {pid}: {e}");
    }
}
