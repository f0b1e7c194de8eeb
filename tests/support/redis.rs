//! A real `redis-server` (Debian's, which `make test` installs) on a loopback port, for the
//! fleet-wide rate limit tests, and a minimal RESP client to drive it (`DEBUG SLEEP`,
//! `SHUTDOWN`, `CONFIG SET`).

use super::{free_port, wait_until, ScratchDir, READY_TIMEOUT};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `redis-server` process; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Arguments after the port ones (TLS, `requirepass`), kept for [`Self::restart`].
    extra: Vec<String>,
    /// The port that plain-text commands from the test go to (the TLS port's server also
    /// listens in plain text there).
    pub plain_port: u16,
    pub dir: ScratchDir,
}

impl RedisServer {
    /// A plain-text server with no password.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A Redis Cluster node. Its cluster bus port is one of `free_port`'s too: the default
    /// (port + 10000) can fall in the kernel's ephemeral range, where a client may hold it.
    pub fn start_cluster_node() -> Self {
        let bus = free_port().to_string();
        Self::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            &bus,
        ])
    }

    /// A server with `extra` arguments (`--requirepass`, ...).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            plain_port: port,
            dir: ScratchDir::new(),
        };
        server.spawn();
        server
    }

    /// A server whose `port` speaks TLS with `cert`/`key`; test commands use a second,
    /// plain-text port.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, extra: &[&str]) -> Self {
        let port = free_port();
        let plain_port = free_port();
        let mut args = vec![
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Self {
            child: None,
            port,
            extra: args,
            plain_port,
            dir: ScratchDir::new(),
        };
        server.spawn();
        server
    }

    /// `127.0.0.1:PORT` as the config writes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let tls = self.plain_port != self.port;
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.plain_port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(self.dir.0.join("redis.log"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if tls {
            // The TLS port's certificate is only for that port.
            command.args(["--tls-replication", "no"]);
        }
        let child = command
            .spawn()
            .expect("start redis-server (make test installs Debian's redis-server)");
        let pid = child.id();
        self.child = Some(child);
        let plain = SocketAddr::from(([127, 0, 0, 1], self.plain_port));
        let password = self.password();
        // Our own server answers, not another process that took the port meanwhile.
        let ours = format!("process_id:{pid}\r\n");
        wait_until("redis-server to answer", READY_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default();
                panic!(
                    "redis-server on port {} exited ({status}):\n{log}",
                    self.plain_port
                );
            }
            try_command(plain, password.as_deref(), &["INFO", "server"])
                .is_ok_and(|info| info.contains(&ours))
        });
    }

    fn password(&self) -> Option<String> {
        let at = self.extra.iter().position(|a| a == "--requirepass")?;
        self.extra.get(at + 1).cloned()
    }

    /// Sends `args` as one command on a fresh connection; the reply as text.
    pub fn command(&self, args: &[&str]) -> String {
        let plain = SocketAddr::from(([127, 0, 0, 1], self.plain_port));
        try_command(plain, self.password().as_deref(), args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Sends `args` without reading the reply (for `DEBUG SLEEP`, which blocks the server).
    pub fn send(&self, args: &[&str]) -> TcpStream {
        let plain = SocketAddr::from(([127, 0, 0, 1], self.plain_port));
        let mut stream = TcpStream::connect(plain).expect("connect to redis");
        if let Some(password) = self.password() {
            stream
                .write_all(&encode(&["AUTH", &password]))
                .expect("auth");
            read_reply(&mut BufReader::new(&stream)).expect("auth reply");
        }
        stream.write_all(&encode(args)).expect("send to redis");
        stream
    }

    /// Kills the server (as a crash or a network partition would end it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

fn try_command(
    address: SocketAddr,
    password: Option<&str>,
    args: &[&str],
) -> Result<String, String> {
    let stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut writer = &stream;
    let mut reader = BufReader::new(&stream);
    if let Some(password) = password {
        writer
            .write_all(&encode(&["AUTH", password]))
            .map_err(|e| e.to_string())?;
        read_reply(&mut reader)?;
    }
    writer.write_all(&encode(args)).map_err(|e| e.to_string())?;
    read_reply(&mut reader)
}

/// One RESP reply, flattened to text (arrays joined by spaces).
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(rest.to_string()),
        "$" => {
            let length: i64 = rest.parse().map_err(|_| format!("bad length {rest:?}"))?;
            if length < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0; length as usize + 2];
            std::io::Read::read_exact(reader, &mut body).map_err(|e| e.to_string())?;
            body.truncate(length as usize);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        "*" => {
            let count: i64 = rest.parse().map_err(|_| format!("bad count {rest:?}"))?;
            let items: Result<Vec<String>, String> =
                (0..count.max(0)).map(|_| read_reply(reader)).collect();
            Ok(items?.join(" "))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}
