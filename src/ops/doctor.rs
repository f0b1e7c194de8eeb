//! `sluice doctor`: the kernel and limits settings behind ingress incidents, read from
//! `/proc` (or a copy of it, `--proc-root`), each reported with its severity, the value
//! found, why it matters and the fix. At startup, error findings are also logged.

use crate::model::Config;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Kubernetes' default NodePort range.
const NODE_PORTS: (u32, u32) = (30000, 32767);
/// Pingora's listen backlog (not configurable in 0.9.1); the kernel caps it at somaxconn.
const LISTEN_BACKLOG: u64 = 65535;
/// How long a closed connection keeps its local port in TIME_WAIT (Linux, fixed).
const TIME_WAIT: Duration = Duration::from_secs(60);
/// File descriptors sluice wants beyond its connections (logs, config, runtime).
const FD_HEADROOM: u64 = 1024;
/// Below this open-files limit an edge proxy fails under ordinary load (the usual default
/// is 1024).
const MIN_OPEN_FILES: u64 = 4096;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Ok => "OK",
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        })
    }
}

/// One checked setting.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    /// The setting, e.g. `net.ipv4.ip_local_port_range`.
    pub setting: &'static str,
    pub found: String,
    pub why: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<7} {} = {}", self.severity, self.setting, self.found)?;
        writeln!(f, "        why: {}", self.why)?;
        if !self.fix.is_empty() {
            writeln!(f, "        fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// The settings sluice reads, from a `/proc` tree.
struct Proc<'a> {
    root: &'a Path,
}

impl Proc<'_> {
    fn read(&self, relative: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(relative))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn sysctl(&self, name: &str) -> Option<String> {
        self.read(&format!("sys/{}", name.replace('.', "/")))
    }

    fn sysctl_number(&self, name: &str) -> Option<u64> {
        self.sysctl(name)?.parse().ok()
    }

    /// The soft `Max open files` of this process.
    fn open_files_limit(&self) -> Option<u64> {
        let limits = self.read("self/limits")?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

/// A missing setting (a container without the file, or another kernel).
fn unreadable(setting: &'static str) -> Finding {
    Finding {
        severity: Severity::Info,
        setting,
        found: "unreadable".into(),
        why: "the setting could not be read under this /proc".into(),
        fix: String::new(),
    }
}

/// Runs every check against the `/proc` tree at `proc_root`; `config` adds the checks
/// that depend on listeners and upstreams.
pub fn check(proc_root: &Path, config: Option<&Config>) -> Vec<Finding> {
    let proc = Proc { root: proc_root };
    let ports = port_range(&proc);
    let mut findings = vec![
        ports.as_ref().map_or_else(
            || unreadable("net.ipv4.ip_local_port_range"),
            |p| node_port_overlap(&proc, p),
        ),
        somaxconn(&proc),
        tw_reuse(&proc),
        syn_retries(&proc, config),
        synack_retries(&proc),
    ];
    findings.extend(open_files(&proc, config));
    findings.extend(config.and_then(connect_timeouts));
    if let (Some(ports), Some(config)) = (ports, config) {
        findings.extend(ephemeral_ports(&proc, ports, config));
    }
    findings
}

/// `net.ipv4.ip_local_port_range` as (low, high).
fn port_range(proc: &Proc) -> Option<(u32, u32)> {
    let text = proc.sysctl("net.ipv4.ip_local_port_range")?;
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
        _ => None,
    }
}

/// `net.ipv4.ip_local_reserved_ports`: `30000-32767,40000` as ranges.
fn reserved_ports(proc: &Proc) -> Vec<(u32, u32)> {
    proc.sysctl("net.ipv4.ip_local_reserved_ports")
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => part.parse().ok().map(|p| (p, p)),
            }
        })
        .collect()
}

/// Whether every port of `low..=high` is in one of `reserved`.
fn covered(low: u32, high: u32, reserved: &[(u32, u32)]) -> bool {
    (low..=high).all(|port| reserved.iter().any(|(a, b)| (*a..=*b).contains(&port)))
}

fn node_port_overlap(proc: &Proc, (low, high): &(u32, u32)) -> Finding {
    let setting = "net.ipv4.ip_local_port_range";
    let found = format!("{low} {high}");
    let overlap = (NODE_PORTS.0.max(*low), NODE_PORTS.1.min(*high));
    if overlap.0 > overlap.1 {
        return Finding {
            severity: Severity::Ok,
            setting,
            found,
            why: "does not overlap the Kubernetes NodePort range 30000-32767".into(),
            fix: String::new(),
        };
    }
    if covered(overlap.0, overlap.1, &reserved_ports(proc)) {
        return Finding {
            severity: Severity::Ok,
            setting,
            found,
            why: format!(
                "overlaps the NodePort range at {}-{}, but net.ipv4.ip_local_reserved_ports covers it",
                overlap.0, overlap.1
            ),
            fix: String::new(),
        };
    }
    Finding {
        severity: Severity::Error,
        setting,
        found,
        why: format!(
            "ports {}-{} are both ephemeral source ports and Kubernetes NodePorts: an outgoing \
             connection that picks a source port a NodePort rule also matches is hijacked by \
             kube-proxy, and the connect stalls until it times out (the 30 s stalls seen since \
             Kubernetes 1.24)",
            overlap.0, overlap.1
        ),
        fix: format!(
            "sysctl -w net.ipv4.ip_local_reserved_ports={}-{} (and persist it in \
             /etc/sysctl.d/), or move the range: net.ipv4.ip_local_port_range=\"32768 60999\"",
            NODE_PORTS.0, NODE_PORTS.1
        ),
    }
}

fn somaxconn(proc: &Proc) -> Finding {
    let setting = "net.core.somaxconn";
    let Some(value) = proc.sysctl_number(setting) else {
        return unreadable(setting);
    };
    let (severity, why, fix) = if value < 1024 {
        (
            Severity::Warning,
            format!(
                "caps every listener's accept queue at {value} (sluice asks for {LISTEN_BACKLOG}); \
                 a burst of new connections beyond it is dropped and clients retry their SYN after 1 s"
            ),
            "sysctl -w net.core.somaxconn=4096 (or higher), persisted in /etc/sysctl.d/".to_string(),
        )
    } else {
        (
            Severity::Ok,
            format!("accept queues up to {value} connections (sluice asks for {LISTEN_BACKLOG})"),
            String::new(),
        )
    };
    Finding {
        severity,
        setting,
        found: value.to_string(),
        why,
        fix,
    }
}

fn tw_reuse(proc: &Proc) -> Finding {
    let setting = "net.ipv4.tcp_tw_reuse";
    let Some(value) = proc.sysctl_number(setting) else {
        return unreadable(setting);
    };
    let (severity, why) = match value {
        1 => (
            Severity::Ok,
            "source ports in TIME_WAIT may be reused for new upstream connections".to_string(),
        ),
        2 => (
            Severity::Warning,
            "TIME_WAIT reuse only for loopback: sluice's connections to pod IPs leave every \
             closed port unusable for 60 s, which exhausts source ports towards one upstream \
             under connection churn"
                .to_string(),
        ),
        _ => (
            Severity::Warning,
            "no TIME_WAIT reuse: every upstream connection sluice closes keeps its source port \
             for 60 s"
                .to_string(),
        ),
    };
    Finding {
        severity,
        setting,
        found: value.to_string(),
        why,
        fix: if severity == Severity::Ok {
            String::new()
        } else {
            "sysctl -w net.ipv4.tcp_tw_reuse=1, persisted in /etc/sysctl.d/".into()
        },
    }
}

/// Seconds until the kernel gives up a connect after `retries` SYN retransmissions
/// (1 s initial timeout, doubling).
fn syn_give_up(retries: u64) -> Duration {
    Duration::from_secs((1u64 << (retries.min(20) + 1)) - 1)
}

fn syn_retries(proc: &Proc, config: Option<&Config>) -> Finding {
    let setting = "net.ipv4.tcp_syn_retries";
    let Some(value) = proc.sysctl_number(setting) else {
        return unreadable(setting);
    };
    let give_up = syn_give_up(value);
    let longest_connect = config.and_then(|c| c.upstreams.iter().map(|u| u.timeouts.connect).max());
    match longest_connect {
        Some(connect) if connect > give_up => Finding {
            severity: Severity::Warning,
            setting,
            found: value.to_string(),
            why: format!(
                "the kernel abandons a connect after {give_up:?}, before the longest \
                 timeouts.connect ({connect:?}): connects fail earlier than configured"
            ),
            fix: "raise net.ipv4.tcp_syn_retries, or lower timeouts.connect".into(),
        },
        _ => Finding {
            severity: Severity::Info,
            setting,
            found: value.to_string(),
            why: format!(
                "the kernel abandons a connect to a dead endpoint after {give_up:?}; sluice's \
                 timeouts.connect ends it sooner and tries another endpoint"
            ),
            fix: String::new(),
        },
    }
}

/// Linux's initial retransmission timeout: an unanswered SYN is sent again after this.
const INITIAL_SYN_RTO: Duration = Duration::from_secs(1);

/// Upstreams whose `timeouts.connect` is within the first SYN retransmission (plus a round
/// trip): one dropped SYN (a full accept queue in a burst) fails their connect.
fn connect_timeouts(config: &Config) -> Option<Finding> {
    let margin = Duration::from_millis(500);
    let short: Vec<String> = config
        .upstreams
        .iter()
        .filter(|u| u.timeouts.connect <= INITIAL_SYN_RTO + margin)
        .map(|u| format!("{} ({:?})", u.name, u.timeouts.connect))
        .collect();
    let setting = "upstreams[].timeouts.connect";
    Some(if short.is_empty() {
        Finding {
            severity: Severity::Ok,
            setting,
            found: "every upstream above 1.5s".into(),
            why: "Linux resends an unanswered SYN after 1 s, then 2 s later; a connect timeout \
                  above that lets a dropped SYN be retried"
                .into(),
            fix: String::new(),
        }
    } else {
        Finding {
            severity: Severity::Warning,
            setting,
            found: short.join(", "),
            why: "Linux resends an unanswered SYN only after 1 s: with a connect timeout of \
                  1.5 s or less, one dropped SYN (a backend's full accept queue during a burst \
                  of new connections) fails the connect with a 504"
                .into(),
            fix: "raise timeouts.connect above 1.5s (default 5s); refused connects fail at once \
                  whatever the timeout"
                .into(),
        }
    })
}

fn synack_retries(proc: &Proc) -> Finding {
    let setting = "net.ipv4.tcp_synack_retries";
    let Some(value) = proc.sysctl_number(setting) else {
        return unreadable(setting);
    };
    let give_up = syn_give_up(value);
    let (severity, fix) = if value > 5 {
        (
            Severity::Warning,
            "sysctl -w net.ipv4.tcp_synack_retries=5 (or lower)".to_string(),
        )
    } else {
        (Severity::Ok, String::new())
    };
    Finding {
        severity,
        setting,
        found: value.to_string(),
        why: format!(
            "half-open client connections hold accept-queue slots for up to {give_up:?} \
             before the kernel drops them"
        ),
        fix,
    }
}

/// File descriptors the config implies: one per pooled upstream connection, plus client
/// connections (each with its upstream connection while in use), plus headroom.
fn implied_descriptors(config: &Config) -> u64 {
    let pooled: u64 = config
        .upstreams
        .iter()
        .map(|u| u64::from(u.keepalive.max_idle))
        .sum();
    // Client connections cannot be known from the config; 10,000 active ones per listener,
    // each with an upstream connection, is the sizing an edge node should plan for.
    let clients = 10_000 * config.listeners.len() as u64;
    pooled + 2 * clients + FD_HEADROOM
}

fn open_files(proc: &Proc, config: Option<&Config>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let needed = config.map_or(FD_HEADROOM + 20_000, implied_descriptors);
    match proc.open_files_limit() {
        None => findings.push(unreadable("RLIMIT_NOFILE")),
        Some(limit) => {
            let (severity, fix) = if limit < needed {
                (
                    // The default 1024 fails a busy edge outright; between that and the
                    // estimate, it depends on the traffic.
                    if limit < MIN_OPEN_FILES {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    format!(
                        "raise the limit to at least {needed}: LimitNOFILE=1048576 in the systemd \
                         unit (conf/sluice.service), or `ulimit -n` before starting"
                    ),
                )
            } else {
                (Severity::Ok, String::new())
            };
            findings.push(Finding {
                severity,
                setting: "RLIMIT_NOFILE",
                found: limit.to_string(),
                why: format!(
                    "every client and upstream connection is a file descriptor; the config implies \
                     about {needed} (pools, 10,000 clients per listener with their upstream \
                     connections, headroom); past the limit, accept and connect fail with EMFILE"
                ),
                fix,
            });
        }
    }
    let setting = "fs.file-max";
    match proc.sysctl_number(setting) {
        None => findings.push(unreadable(setting)),
        Some(max) => {
            let limit = proc.open_files_limit().unwrap_or(0);
            let (severity, fix) = if max < needed.max(limit) {
                (
                    Severity::Warning,
                    format!("sysctl -w fs.file-max={}", needed.max(limit) * 2),
                )
            } else {
                (Severity::Ok, String::new())
            };
            findings.push(Finding {
                severity,
                setting,
                found: max.to_string(),
                why: "the system-wide cap on open files, shared by every process of the node"
                    .into(),
                fix,
            });
        }
    }
    findings
}

/// Source ports towards one upstream endpoint, against connection churn.
fn ephemeral_ports(proc: &Proc, (low, high): (u32, u32), config: &Config) -> Vec<Finding> {
    let reserved = reserved_ports(proc);
    let usable = (low..=high)
        .filter(|p| !reserved.iter().any(|(a, b)| (*a..=*b).contains(p)))
        .count() as u64;
    let per_second = usable / TIME_WAIT.as_secs();
    let tw_reuse = proc.sysctl_number("net.ipv4.tcp_tw_reuse") == Some(1);
    config
        .upstreams
        .iter()
        .map(|upstream| {
            let keepalive = &upstream.keepalive;
            let churn = keepalive.max_idle == 0 || keepalive.max_requests < 100;
            let (severity, why, fix) = if churn && !tw_reuse {
                (
                    Severity::Warning,
                    format!(
                        "upstream {}: {} new connections per request, each closed one holds its \
                         source port for 60 s in TIME_WAIT: at most {per_second} new connections/s \
                         to each endpoint before connects fail with EADDRNOTAVAIL",
                        upstream.name,
                        if keepalive.max_idle == 0 {
                            "keepalive is off, so one".to_string()
                        } else {
                            format!("max_requests {} means a", keepalive.max_requests)
                        }
                    ),
                    "keep connections pooled (keepalive.max_idle > 0, max_requests >= 1000) or set \
                     net.ipv4.tcp_tw_reuse=1"
                        .to_string(),
                )
            } else {
                (
                    Severity::Ok,
                    format!(
                        "upstream {}: {usable} source ports per endpoint; pooled connections \
                         (max_idle {}, max_requests {}) keep churn low",
                        upstream.name, keepalive.max_idle, keepalive.max_requests
                    ),
                    String::new(),
                )
            };
            Finding {
                severity,
                setting: "ephemeral ports per upstream endpoint",
                found: usable.to_string(),
                why,
                fix,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_give_up_doubles_from_one_second() {
        assert_eq!(syn_give_up(6), Duration::from_secs(127));
        assert_eq!(syn_give_up(2), Duration::from_secs(7));
    }

    #[test]
    fn reserved_ranges_cover_the_node_ports() {
        assert!(covered(30000, 32767, &[(30000, 32767)]));
        assert!(covered(30000, 32767, &[(29000, 31000), (31001, 40000)]));
        assert!(!covered(30000, 32767, &[(30000, 32766)]));
    }
}
