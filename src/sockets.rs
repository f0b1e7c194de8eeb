//! What the kernel's socket tables (/proc/net) say: which TCP addresses listen, and whether
//! a unix socket path listens. Reading them never opens a connection, so checking a tcp
//! listener does not reach a backend, and checking for an upgrade successor does not take
//! its one handoff connection.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The local addresses of listening TCP sockets in this network namespace.
pub fn listening_tcp() -> HashSet<SocketAddr> {
    let tables: String = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect();
    listening_addresses(&tables)
}

/// Whether a process listens on the unix socket `path` in this network namespace.
pub fn unix_socket_listening(path: &Path) -> bool {
    match std::fs::read_to_string("/proc/net/unix") {
        Ok(table) => listening_unix_socket(&table, path),
        Err(e) => {
            log::warn!("cannot read /proc/net/unix: {e}");
            false
        }
    }
}

/// `st` of a listening socket in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// The local addresses of the listening sockets in /proc/net/tcp{,6} text `tables`.
fn listening_addresses(tables: &str) -> HashSet<SocketAddr> {
    tables
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            (state == TCP_LISTEN).then(|| parse_proc_address(local))?
        })
        .collect()
}

/// Parses `0100007F:1F90` (IPv4) or a 32-digit IPv6 form: the address is printed as
/// 32-bit words in host byte order, the port as a plain hex number.
fn parse_proc_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in 0..address.len() / 8 {
        let value = u32::from_str_radix(address.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&value.to_ne_bytes());
    }
    let ip: IpAddr = match bytes.len() {
        4 => Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether `/proc/net/unix` text `table` has a listening socket bound to `path`.
fn listening_unix_socket(table: &str, path: &Path) -> bool {
    /// `__SO_ACCEPTCON` in the Flags column: the socket listens.
    const ACCEPTING: u32 = 0x0001_0000;
    let wanted = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        let flags = fields
            .get(3)
            .and_then(|f| u32::from_str_radix(f, 16).ok())
            .unwrap_or(0);
        flags & ACCEPTING != 0 && fields.get(7) == Some(&wanted.as_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/sluice/upgrade.sock
0000000000000000: 00000002 00000000 00000000 0001 01 31338 /run/other.sock
0000000000000000: 00000003 00000000 00000000 0001 03 31339
";

    #[test]
    fn finds_only_listening_sockets_by_path() {
        assert!(listening_unix_socket(
            TABLE,
            Path::new("/run/sluice/upgrade.sock")
        ));
        assert!(!listening_unix_socket(TABLE, Path::new("/run/other.sock")));
        assert!(!listening_unix_socket(
            TABLE,
            Path::new("/run/missing.sock")
        ));
    }

    #[test]
    fn reads_listening_sockets_from_the_kernel_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";
        let listening = listening_addresses(table);
        let expected: HashSet<SocketAddr> = ["127.0.0.1:8080", "0.0.0.0:10000", "[::1]:80"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        assert_eq!(listening, expected);
    }
}
