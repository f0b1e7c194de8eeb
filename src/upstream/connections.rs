//! Open upstream connections, by socket: how many requests each has carried (for
//! `keepalive.max_requests`), whether a request is using it, and which endpoint it goes to
//! (to close the pooled idle ones of an endpoint that left every upstream).
//!
//! Pingora owns the connection pool and offers neither a cap on uses nor eviction by
//! address, but it hands every request its upstream socket number. So sluice keeps this
//! table beside the pool:
//! - uses: a fresh connection starts at 1, a reused one adds 1; at the limit the request is
//!   sent with `Connection: close`, so the connection is not returned to the pool;
//! - removal: an idle socket of a removed endpoint is shut down; the pool watches its idle
//!   sockets for EOF and drops them. A socket in use is shut down when its request ends,
//!   so requests in flight finish.
//!
//! Socket numbers are reused by the kernel after a close, and the pool closes sockets
//! without telling sluice, so an entry may be stale. Before shutting a socket down, its
//! local and peer addresses are checked against the entry: a stale entry never closes
//! another connection.

use std::collections::{HashMap, HashSet};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};

/// What sluice knows of one upstream socket.
#[derive(Debug, Clone, Copy)]
struct Socket {
    peer: SocketAddr,
    /// The socket's local address when it connected: with `peer`, the connection's identity.
    local: Option<SocketAddr>,
    uses: u32,
    in_use: bool,
    /// The endpoint was removed while a request used the socket: close it when that ends.
    close_when_idle: bool,
}

/// The process's upstream sockets (every listener and upstream share one pool).
#[derive(Debug, Default)]
pub struct UpstreamConnections {
    sockets: Mutex<HashMap<RawFd, Socket>>,
}

impl UpstreamConnections {
    fn lock(&self) -> MutexGuard<'_, HashMap<RawFd, Socket>> {
        // A panic elsewhere while holding the lock leaves plain records: still usable.
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a request now uses socket `fd`, connected to `peer` (`reused` from the
    /// pool or fresh), and returns how many requests the connection has carried, this one
    /// included.
    pub fn start_use(&self, fd: RawFd, peer: SocketAddr, reused: bool) -> u32 {
        let mut sockets = self.lock();
        match sockets.get_mut(&fd) {
            Some(socket) if reused && socket.peer == peer => {
                socket.uses = socket.uses.saturating_add(1);
                socket.in_use = true;
                socket.uses
            }
            _ => {
                let local = addresses(fd).map(|(local, _)| local);
                sockets.insert(
                    fd,
                    Socket {
                        peer,
                        local,
                        uses: 1,
                        in_use: true,
                        close_when_idle: false,
                    },
                );
                1
            }
        }
    }

    /// Records that the request using socket `fd` ended; shuts the socket down if its
    /// endpoint was removed meanwhile.
    pub fn end_use(&self, fd: RawFd) {
        let mut sockets = self.lock();
        let Some(socket) = sockets.get_mut(&fd) else {
            return;
        };
        socket.in_use = false;
        if socket.close_when_idle {
            let socket = *socket;
            sockets.remove(&fd);
            shut_down_if_same(fd, &socket);
        }
    }

    /// Closes the idle sockets to any of `removed`, and marks those in use to be closed
    /// when their request ends. Returns how many were closed now.
    pub fn close_idle_to(&self, removed: &HashSet<SocketAddr>) -> usize {
        let mut sockets = self.lock();
        let mut closed = 0;
        sockets.retain(|&fd, socket| {
            if !removed.contains(&socket.peer) {
                return true;
            }
            if socket.in_use {
                socket.close_when_idle = true;
                return true;
            }
            if shut_down_if_same(fd, socket) {
                closed += 1;
            }
            false
        });
        closed
    }

    /// Of `candidates`, the addresses some recorded socket goes to.
    pub fn connected_to(&self, candidates: &HashSet<SocketAddr>) -> HashSet<SocketAddr> {
        self.lock()
            .values()
            .filter(|s| candidates.contains(&s.peer))
            .map(|s| s.peer)
            .collect()
    }
}

/// The local and peer addresses of socket `fd`, if it is a connected TCP socket.
fn addresses(fd: RawFd) -> Option<(SocketAddr, SocketAddr)> {
    // SAFETY: the stream is never dropped, so it never closes `fd`; it only borrows the
    // number for getsockname/getpeername, which fail harmlessly on a closed or non-TCP fd.
    let stream = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    Some((stream.local_addr().ok()?, stream.peer_addr().ok()?))
}

/// Shuts socket `fd` down if it is still the connection `socket` describes; returns
/// whether it did.
fn shut_down_if_same(fd: RawFd, socket: &Socket) -> bool {
    let Some(local) = socket.local else {
        return false;
    };
    if addresses(fd) != Some((local, socket.peer)) {
        return false;
    }
    // SAFETY: as in `addresses`; shutdown does not release the number, Pingora still
    // owns and closes it.
    let stream = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    stream.shutdown(Shutdown::Both).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn counts_reuse_and_resets_on_fresh_connection() {
        let (client, _server) = connected_pair();
        let (fd, peer) = (client.as_raw_fd(), client.peer_addr().expect("peer"));
        let connections = UpstreamConnections::default();
        assert_eq!(connections.start_use(fd, peer, false), 1);
        assert_eq!(connections.start_use(fd, peer, true), 2);
        assert_eq!(connections.start_use(fd, peer, true), 3);
        assert_eq!(connections.start_use(fd, peer, false), 1);
    }

    #[test]
    fn closes_idle_socket_of_removed_address_and_busy_one_when_it_ends() {
        let (idle, mut idle_server) = connected_pair();
        let (busy, mut busy_server) = connected_pair();
        let (kept, _kept_server) = connected_pair();
        let connections = UpstreamConnections::default();
        for stream in [&idle, &busy, &kept] {
            let peer = stream.peer_addr().expect("peer");
            connections.start_use(stream.as_raw_fd(), peer, false);
        }
        connections.end_use(idle.as_raw_fd());
        connections.end_use(kept.as_raw_fd());
        let removed: HashSet<_> = [&idle, &busy]
            .iter()
            .map(|s| s.peer_addr().expect("peer"))
            .collect();
        assert_eq!(connections.connected_to(&removed), removed);

        assert_eq!(connections.close_idle_to(&removed), 1);
        let mut byte = [0u8; 1];
        assert_eq!(
            idle_server.read(&mut byte).expect("read"),
            0,
            "idle one closed"
        );
        busy_server.set_nonblocking(true).expect("nonblocking");
        assert!(busy_server.read(&mut byte).is_err(), "busy one still open");

        connections.end_use(busy.as_raw_fd());
        busy_server.set_nonblocking(false).expect("blocking");
        assert_eq!(
            busy_server.read(&mut byte).expect("read"),
            0,
            "closed after use"
        );
        assert!(kept.peer_addr().is_ok());
    }

    #[test]
    fn stale_entry_never_closes_a_different_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = listener.local_addr().expect("address");
        let first = TcpStream::connect(endpoint).expect("connect");
        let fd = first.as_raw_fd();
        let connections = UpstreamConnections::default();
        connections.start_use(fd, endpoint, false);
        connections.end_use(fd);
        // The pool closes the connection and the kernel hands its number to a new
        // connection to the same endpoint (forced here with dup2, which closes the first).
        let second = TcpStream::connect(endpoint).expect("connect");
        let (_first_server, _) = listener.accept().expect("accept");
        let (mut second_server, _) = listener.accept().expect("accept");
        // SAFETY: both descriptors are open and owned by this test; `first` owns `fd` and
        // closes the duplicate of `second` when dropped.
        assert_eq!(unsafe { libc::dup2(second.as_raw_fd(), fd) }, fd);

        assert_eq!(connections.close_idle_to(&HashSet::from([endpoint])), 0);
        second_server.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        assert!(
            second_server.read(&mut byte).is_err(),
            "the new connection on the same number stays open"
        );
        drop(first);
    }
}
