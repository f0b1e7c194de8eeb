//! `sluice doctor` against fake /proc trees (`--proc-root`), one test per finding.

mod support;

use std::process::Command;
use support::*;

const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units
Max open files            {NOFILE}              {NOFILE}              files
";

/// A /proc tree with healthy settings, then `overrides` (path under the root, content).
fn proc_tree(overrides: &[(&str, &str)]) -> ScratchDir {
    let dir = ScratchDir::new();
    let healthy = [
        ("sys/net/ipv4/ip_local_port_range", "32768\t60999"),
        ("sys/net/ipv4/ip_local_reserved_ports", ""),
        ("sys/net/core/somaxconn", "4096"),
        ("sys/fs/file-max", "9223372036854775807"),
        ("sys/net/ipv4/tcp_tw_reuse", "1"),
        ("sys/net/ipv4/tcp_syn_retries", "6"),
        ("sys/net/ipv4/tcp_synack_retries", "5"),
        ("self/limits", &LIMITS.replace("{NOFILE}", "1048576")),
    ];
    for (path, content) in healthy.iter().chain(overrides) {
        let file = dir.0.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("create dirs");
        std::fs::write(&file, format!("{content}\n")).expect("write proc file");
    }
    dir
}

/// Runs `sluice doctor` on `proc` with `config` (a body under a generated header) or none.
fn doctor(proc: &ScratchDir, config: Option<&str>) -> (i32, String) {
    let config_dir = ScratchDir::new();
    let path = match config {
        Some(body) => config_dir.write("sluice.yaml", body),
        None => config_dir.0.join("absent.yaml"),
    };
    let output = Command::new(sluice_binary())
        .args(["doctor", "--proc-root"])
        .arg(&proc.0)
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run sluice doctor");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The finding block of `setting` in doctor's output: its line and the indented lines after.
fn finding(text: &str, setting: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains(&format!(" {setting} = ")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no finding for {setting} in:\n{text}"));
    std::iter::once(first)
        .chain(lines.take_while(|l| l.starts_with(' ')))
        .collect::<Vec<_>>()
        .join("\n")
}

fn web_config(upstream_extra: &str) -> String {
    format!(
        "listeners: [{{ name: web, listen: \"127.0.0.1:8080\" }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"127.0.0.1:9000\"]{upstream_extra} }}]\n"
    )
}

#[test]
fn healthy_machine_has_no_error_and_exits_0() {
    let (code, text) = doctor(&proc_tree(&[]), Some(&web_config("")));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("0 error(s), 0 warning(s)"), "{text}");
    assert!(finding(&text, "net.ipv4.ip_local_port_range").starts_with("OK"));
}

#[test]
fn port_range_overlapping_node_ports_is_an_error_unless_reserved() {
    let overlapping = ("sys/net/ipv4/ip_local_port_range", "1024\t65535");
    let (code, text) = doctor(&proc_tree(&[overlapping]), None);
    assert_eq!(code, 1, "{text}");
    let block = finding(&text, "net.ipv4.ip_local_port_range");
    assert!(block.starts_with("ERROR"), "{block}");
    assert!(block.contains("ports 30000-32767"), "{block}");
    assert!(
        block.contains("fix: sysctl -w net.ipv4.ip_local_reserved_ports=30000-32767"),
        "{block}"
    );
    assert!(
        text.contains("no config at"),
        "runs without a config: {text}"
    );

    let reserved = ("sys/net/ipv4/ip_local_reserved_ports", "30000-32767");
    let (code, text) = doctor(&proc_tree(&[overlapping, reserved]), None);
    assert_eq!(code, 0, "{text}");
    assert!(finding(&text, "net.ipv4.ip_local_port_range").starts_with("OK"));
}

#[test]
fn small_somaxconn_is_a_warning() {
    let (code, text) = doctor(&proc_tree(&[("sys/net/core/somaxconn", "128")]), None);
    assert_eq!(code, 0, "warnings do not fail: {text}");
    let block = finding(&text, "net.core.somaxconn");
    assert!(
        block.starts_with("WARNING") && block.contains("fix: sysctl -w net.core.somaxconn"),
        "{block}"
    );
}

#[test]
fn open_file_limits_below_what_the_config_implies() {
    let limits = LIMITS.replace("{NOFILE}", "1024");
    let (code, text) = doctor(
        &proc_tree(&[("self/limits", &limits), ("sys/fs/file-max", "5000")]),
        Some(&web_config("")),
    );
    assert_eq!(code, 1, "{text}");
    let block = finding(&text, "RLIMIT_NOFILE");
    assert!(
        block.starts_with("ERROR") && block.contains("LimitNOFILE"),
        "{block}"
    );
    assert!(finding(&text, "fs.file-max").starts_with("WARNING"));

    // Above the floor but below the estimate: a warning, not a failure.
    let limits = LIMITS.replace("{NOFILE}", "8192");
    let (code, text) = doctor(
        &proc_tree(&[("self/limits", &limits)]),
        Some(&web_config("")),
    );
    assert_eq!(code, 0, "{text}");
    assert!(finding(&text, "RLIMIT_NOFILE").starts_with("WARNING"));
}

#[test]
fn tw_reuse_other_than_1_is_a_warning() {
    for (value, says) in [("2", "loopback"), ("0", "no TIME_WAIT reuse")] {
        let (_, text) = doctor(&proc_tree(&[("sys/net/ipv4/tcp_tw_reuse", value)]), None);
        let block = finding(&text, "net.ipv4.tcp_tw_reuse");
        assert!(
            block.starts_with("WARNING") && block.contains(says),
            "{block}"
        );
        assert!(
            block.contains("fix: sysctl -w net.ipv4.tcp_tw_reuse=1"),
            "{block}"
        );
    }
}

#[test]
fn syn_retries_against_the_connect_timeout() {
    let tree = proc_tree(&[
        ("sys/net/ipv4/tcp_syn_retries", "1"),
        ("sys/net/ipv4/tcp_synack_retries", "8"),
    ]);
    let (_, text) = doctor(&tree, Some(&web_config(", timeouts: { connect: 5s }")));
    let block = finding(&text, "net.ipv4.tcp_syn_retries");
    assert!(
        block.starts_with("WARNING") && block.contains("after 3s"),
        "{block}"
    );
    assert!(finding(&text, "net.ipv4.tcp_synack_retries").starts_with("WARNING"));

    let (_, text) = doctor(&proc_tree(&[]), Some(&web_config("")));
    let block = finding(&text, "net.ipv4.tcp_syn_retries");
    assert!(
        block.starts_with("INFO") && block.contains("after 127s"),
        "{block}"
    );
}

#[test]
fn connection_churn_against_the_ephemeral_ports() {
    let tree = proc_tree(&[("sys/net/ipv4/tcp_tw_reuse", "0")]);
    let (_, text) = doctor(&tree, Some(&web_config(", keepalive: { max_idle: 0 }")));
    let block = finding(&text, "ephemeral ports per upstream endpoint");
    assert!(block.starts_with("WARNING"), "{block}");
    // (60999 - 32768 + 1) ports / 60 s of TIME_WAIT.
    assert!(block.contains("at most 470 new connections/s"), "{block}");

    let (_, text) = doctor(&proc_tree(&[]), Some(&web_config("")));
    assert!(finding(&text, "ephemeral ports per upstream endpoint").starts_with("OK"));
}

/// A connect timeout within Linux's first SYN retransmission (1 s) fails every connect
/// whose first SYN is dropped; the default (5 s) is above it.
#[test]
fn connect_timeout_against_the_first_syn_retransmission() {
    let (_, text) = doctor(
        &proc_tree(&[]),
        Some(&web_config(", timeouts: { connect: 1s }")),
    );
    let block = finding(&text, "upstreams[].timeouts.connect");
    assert!(
        block.starts_with("WARNING") && block.contains("app (1s)") && block.contains("after 1 s"),
        "{block}"
    );
    let (_, text) = doctor(&proc_tree(&[]), Some(&web_config("")));
    assert!(finding(&text, "upstreams[].timeouts.connect").starts_with("OK"));
}
