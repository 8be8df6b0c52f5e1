//! A TCP proxy on the loopback interface in front of a server, for fault tests: it forwards
//! both ways until it is [blackholed](TcpProxy::blackhole); then it still accepts connections
//! and reads everything sent to it, from clients and from the server, but forwards nothing,
//! so nothing is ever answered (a path that swallows packets whose far end still acknowledges
//! them: a hung middlebox, a proxy that lost its backend). After
//! [`forward`](TcpProxy::forward) it forwards again.
//!
//! A connection that lost bytes while blackholed is dead for good: its byte stream has a hole,
//! so it could never be forwarded again (a client that matches answers to requests in order, as
//! a pipelined Redis client does, would match the wrong ones). It stays open, read and never
//! answered, until its client closes it (a half-open connection: the far end vanished, and
//! nothing tells the client), or until [`reset_dead`](TcpProxy::reset_dead) closes it (the
//! far end, back, refuses the connection it no longer knows). Either way a client recovers
//! only by opening a new connection. A connection that lost nothing forwards again.
//!
//! Standard library only: threads, stopped and joined when the proxy is dropped.
#![allow(unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often a blocked thread looks at whether the proxy stops.
const TICK: Duration = Duration::from_millis(10);

/// A running proxy; dropped, it closes every connection and joins its threads.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    blackholed: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    dead: AtomicUsize,
    swallowed: AtomicU64,
    connections: Mutex<Vec<Arc<Connection>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// One connection's state, shared by its two pumps.
#[derive(Debug, Default)]
struct Connection {
    /// It lost bytes.
    dead: AtomicBool,
    /// To be closed.
    reset: AtomicBool,
}

impl TcpProxy {
    /// A proxy on a free loopback port, forwarding to `127.0.0.1:upstream_port`.
    ///
    /// # Panics
    /// When no port can be bound or no thread started.
    pub fn start(upstream_port: u16) -> TcpProxy {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port for a proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound address").port();
        let shared = Arc::new(Shared {
            upstream: (Ipv4Addr::LOCALHOST, upstream_port).into(),
            blackholed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            dead: AtomicUsize::new(0),
            swallowed: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("tcp-proxy-accept".into())
                .spawn(move || accept(&listener, &shared))
                .expect("a proxy thread")
        };
        TcpProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `redis://127.0.0.1:PORT/`: the proxy's address as a Redis URL.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing is forwarded: what arrives is read and dropped.
    pub fn blackhole(&self) {
        self.shared.blackholed.store(true, Ordering::SeqCst);
    }

    /// From now on connections that lost nothing forward again, and new ones are forwarded.
    pub fn forward(&self) {
        self.shared.blackholed.store(false, Ordering::SeqCst);
    }

    /// Closes every dead connection, both ways: its client sees it closed.
    pub fn reset_dead(&self) {
        for c in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if c.dead.load(Ordering::SeqCst) {
                c.reset.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections that lost bytes to the blackhole (dead for good).
    pub fn dead(&self) -> usize {
        self.shared.dead.load(Ordering::SeqCst)
    }

    /// Bytes read and dropped while blackholed, or on a dead connection.
    pub fn swallowed(&self) -> u64 {
        self.shared.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                connect(client, shared);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// One connection: the server's side opened, and a pump each way.
fn connect(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(1)) else {
        // Nothing to forward to (the server is down): the client sees its connection close.
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let connection = Arc::new(Connection::default());
    shared
        .connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(&connection));
    let mut threads = shared
        .threads
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Two pumps; either one ending shuts both sockets, which ends the other.
    for (from, to) in [(client, server_out), (server, client_out)] {
        let (shared, connection) = (Arc::clone(shared), Arc::clone(&connection));
        if let Ok(t) = thread::Builder::new()
            .name("tcp-proxy-pump".into())
            .spawn(move || pump(from, to, &shared, &connection))
        {
            threads.push(t);
        }
    }
}

/// Copies `from` to `to` until either closes, the connection is reset or the proxy stops;
/// while the proxy is blackholed, or once the connection is dead, reads and drops instead (and
/// the connection is dead from the first byte dropped).
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, connection: &Connection) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0; 16 * 1024];
    let dead = &connection.dead;
    while !shared.stop.load(Ordering::SeqCst) && !connection.reset.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if dead.load(Ordering::SeqCst) || shared.blackholed.load(Ordering::SeqCst) {
            if !dead.swap(true, Ordering::SeqCst) {
                shared.dead.fetch_add(1, Ordering::SeqCst);
            }
            shared.swallowed.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
