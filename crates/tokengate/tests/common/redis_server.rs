//! A redis-server of a test's own: started on a free port of the loopback interface with
//! nothing saved to disk, and killed when dropped. Tests never talk to a Redis they did not
//! start: the server answering is checked to be the process started here.
//!
//! Standard library only, so that benches can include it by path (what they leave unused is
//! theirs to allow).
#![allow(unreachable_pub)]

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

/// A running redis-server, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// What [`start_with`](Self::start_with) added to the usual arguments.
    extra: Vec<String>,
    /// The program it runs under, with its arguments (`valgrind ...`), if any.
    under: Vec<String>,
}

impl RedisServer {
    /// Starts a server and waits (at most 10 s) until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or no server answers in time.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server as [`start`](Self::start) does, with `extra` arguments after the usual
    /// ones (a later setting wins), such as `--tls-port` and its files. It still listens in
    /// plain text on [`port`](Self::port): that is how it is known to be up, and to be the
    /// process started here.
    ///
    /// # Panics
    /// As `start`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_under(&[], extra)
    }

    /// Starts a server as [`start_with`](Self::start_with) does, run by `under` (a program
    /// and its arguments, such as `valgrind --tool=callgrind`; the server's command line
    /// follows them), which must run it in its own process.
    ///
    /// # Panics
    /// As `start`, or when `under`'s program is not installed.
    pub fn start_under(under: &[&str], extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let under: Vec<String> = under.iter().map(|&a| a.to_owned()).collect();
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start(&under, &extra) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn try_start(under: &[String], extra: &[String]) -> Result<RedisServer, String> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tokengate-redis-{}-{}-{port}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let spawned = command(under, port, &dir, extra).spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "{} is not installed (the Redis tests start their own redis-server): \
                 apt-get install -y {}",
                under.first().map_or("redis-server", String::as_str),
                under.first().map_or("redis-server", String::as_str),
            ),
            Err(e) => return Err(format!("redis-server: {e}")),
        };
        // From here on, dropping the server kills the child and removes the directory.
        let mut server = RedisServer {
            child,
            port,
            dir,
            extra: extra.to_vec(),
            under: under.to_vec(),
        };
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
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (`kill -9`) and reaps it. It saves nothing (no RDB, no
    /// AOF), so everything it held is gone; its clients' connections break at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a server again on the same port, with the same settings, after [`kill`]: an
    /// empty one. Waits (at most 10 s) until it answers.
    ///
    /// [`kill`]: Self::kill
    ///
    /// # Panics
    /// When the old server still runs, or the new one does not answer on the port in time.
    pub fn restart(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "restart a killed server only"
        );
        let port = self.port;
        self.child = command(&self.under, port, &self.dir, &self.extra)
            .spawn()
            .expect("redis-server starts again");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server restarted on port {port} exited: {status}");
            }
            match server_pid(port) {
                Some(pid) if pid == self.child.id() => return,
                Some(pid) => panic!("port {port} is answered by process {pid}"),
                None if Instant::now() >= deadline => {
                    panic!("no answer on port {port} in {START_TIMEOUT:?} after a restart")
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Stops the server with SIGSTOP (`kill -STOP`): it keeps its connections and its state
    /// but answers nothing (the kernel still accepts connections and queues what is sent)
    /// until [`resume`]. Dropped while paused, it is killed all the same.
    ///
    /// [`resume`]: Self::resume
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server run again (SIGCONT, `kill -CONT`): it answers
    /// what was queued meanwhile, in order.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(
            status.success(),
            "kill {signal} {}: {status}",
            self.child.id()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command that starts a server on `port` with its files in `dir`: `redis-server` (run
/// by `under`, if given) with nothing saved to disk, then `extra`.
fn command(under: &[String], port: u16, dir: &std::path::Path, extra: &[String]) -> Command {
    let mut command = match under.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("redis-server");
            c
        }
        None => Command::new("redis-server"),
    };
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A port nothing listens on now (the OS's pick for port 0).
pub fn free_port() -> u16 {
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

/// Field `name` (`calls`, `usec`, `failed_calls`) of command `command`'s line
/// (`cmdstat_fcall`, `cmdstat_function|load`) in the text of `INFO commandstats`; 0 when the
/// command never ran.
pub fn command_stat(info: &str, command: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(command)?.strip_prefix(':'))
        .and_then(|l| {
            l.split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        })
        .map_or(0, |v| v.trim().parse().expect("a count"))
}
