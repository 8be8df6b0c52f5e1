//! A redis-server of a test's own: started on a free port of the loopback interface with
//! nothing saved to disk, and killed (its directory removed) when dropped. The server
//! answering on the port is checked to be the process started here, so a test never talks
//! to a Redis it did not start.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to answer before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports to try when another process takes the one found free first.
const ATTEMPTS: usize = 5;

/// A running redis-server, killed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server and waits (at most 10 s) until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or no server answers in time.
    pub(crate) fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start() {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn try_start() -> Result<RedisServer, String> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tokengate-cli-redis-{}-{}-{port}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not installed (the --redis tests start their own): \
                 apt-get install -y redis-server"
            ),
            Err(e) => return Err(format!("redis-server: {e}")),
        };
        // From here on, dropping the server kills the child and removes the directory.
        let mut server = RedisServer { child, port, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            match server_pid(port) {
                Some(pid) if pid == server.child.id() => return Ok(server),
                // Another process took the port: this server cannot bind it.
                Some(pid) => return Err(format!("port {port} is answered by process {pid}")),
                None if Instant::now() >= deadline => {
                    return Err(format!("no answer on port {port} in {START_TIMEOUT:?}"))
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now (the OS's pick for port 0).
pub(crate) fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port for redis");
    listener.local_addr().expect("a bound address").port()
}

/// The process id of the Redis answering on `port` (`INFO server`), if one answers.
fn server_pid(port: u16) -> Option<u32> {
    let timeout = Duration::from_millis(500);
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0; 4096];
    // A bulk string: `$LEN\r\n` then the text; read until the pid's line is complete.
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some((pid, _)) = rest.split_once("\r\n") {
                return pid.trim().parse().ok();
            }
        }
        if reply.len() > 1 << 16 {
            return None;
        }
    }
}
