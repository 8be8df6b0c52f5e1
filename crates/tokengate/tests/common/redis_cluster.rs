//! A Redis Cluster of a test's own: three `redis-server` primaries with `--cluster-enabled yes`
//! on free loopback ports, each in a directory of its own with nothing saved to disk, joined
//! with `redis-cli --cluster create` (no replicas), and all killed when dropped. Every wait is
//! bounded; tests never talk to a Redis they did not start (each node is checked to be the
//! process started here).
//!
//! A test includes it by path beside `mod common;` (it uses `common::redis_server::free_port`):
//! `#[path = "common/redis_cluster.rs"] mod redis_cluster;`.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::redis_server::{command_stat, free_port};

/// How many primaries.
pub const NODES: usize = 3;

/// How long the nodes may take to answer, and the cluster to form, before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times to start again when another process took a port found free.
const ATTEMPTS: usize = 5;

/// The slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// One `redis-server` of the cluster.
#[derive(Debug)]
struct Node {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running three-primary cluster, killed (and its directories removed) on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three nodes, joins them into a cluster, and waits (at most 20 s) until every node
    /// says `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is not installed, or the cluster does not form in
    /// time.
    pub fn start() -> RedisCluster {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(why) => last = why,
            }
        }
        panic!("no Redis Cluster formed in {ATTEMPTS} attempts: {last}");
    }

    fn try_start() -> Result<RedisCluster, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            nodes.push(start_node()?);
        }
        // From here on, dropping the cluster kills every node.
        let cluster = RedisCluster { nodes };
        for node in &cluster.nodes {
            wait_for_own_server(node, deadline)?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = Command::new("redis-cli");
        create
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = run_bounded(create, deadline)?;
        if !output.contains("All 16384 slots covered") {
            return Err(format!("redis-cli --cluster create said:\n{output}"));
        }
        for i in 0..NODES {
            cluster.wait_until_ok(i, deadline)?;
        }
        Ok(cluster)
    }

    /// Waits until node `i` says `cluster_state:ok` and knows every node.
    fn wait_until_ok(&self, i: usize, deadline: Instant) -> Result<(), String> {
        let port = self.nodes[i].port;
        let mut info = String::new();
        while Instant::now() < deadline {
            if let Ok(text) = self.try_query::<String>(i, redis::cmd("CLUSTER").arg("INFO")) {
                if text.contains("cluster_state:ok")
                    && text.contains(&format!("cluster_known_nodes:{NODES}"))
                {
                    return Ok(());
                }
                info = text;
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "node on port {port} not ok within {START_TIMEOUT:?}; CLUSTER INFO:\n{info}"
        ))
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// A connection to node `i` alone (not a cluster connection), for looking at what that
    /// node holds or doing something to it.
    pub fn node(&self, i: usize) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.nodes[i].port))
            .expect("a node URL")
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("node {i} (port {}): {e}", self.nodes[i].port))
    }

    fn try_query<T: redis::FromRedisValue>(
        &self,
        i: usize,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut connection =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.nodes[i].port))?
                .get_connection_with_timeout(Duration::from_secs(1))?;
        connection.set_read_timeout(Some(Duration::from_secs(5)))?;
        cmd.query(&mut connection)
    }

    /// Runs `cmd` on node `i` alone.
    ///
    /// # Panics
    /// When the node answers an error, or nothing within 5 s.
    pub fn query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> T {
        self.try_query(i, cmd).unwrap_or_else(|e| {
            panic!(
                "node {i} (port {}): {:?}: {e}",
                self.nodes[i].port,
                cmd.args_iter().next()
            )
        })
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        self.query(0, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
    }

    /// The node that owns `slot`, by the cluster's own account (`CLUSTER SLOTS` on node 0).
    pub fn owner(&self, slot: u16) -> usize {
        let ranges: Vec<redis::Value> = self.query(0, redis::cmd("CLUSTER").arg("SLOTS"));
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                panic!("CLUSTER SLOTS: a range {range:?}");
            };
            let from: u16 = redis::from_redis_value(fields[0].clone()).expect("a slot");
            let to: u16 = redis::from_redis_value(fields[1].clone()).expect("a slot");
            if (from..=to).contains(&slot) {
                let redis::Value::Array(primary) = &fields[2] else {
                    panic!("CLUSTER SLOTS: a primary {:?}", fields[2]);
                };
                let port: u16 = redis::from_redis_value(primary[1].clone()).expect("a port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .unwrap_or_else(|| panic!("slot {slot} owned by port {port}, not ours"));
            }
        }
        panic!("slot {slot} is owned by no node");
    }

    /// The node that owns `key`'s slot.
    pub fn owner_of(&self, key: &str) -> usize {
        self.owner(self.slot(key))
    }

    /// How many function libraries node `i` holds (`FUNCTION LIST`).
    pub fn libraries(&self, i: usize) -> usize {
        let list: Vec<redis::Value> = self.query(i, redis::cmd("FUNCTION").arg("LIST"));
        list.len()
    }

    /// Field `name` of command `command`'s line in node `i`'s `INFO commandstats`
    /// (`cmdstat_fcall`, `calls`), 0 when the command never ran there.
    pub fn command_stat(&self, i: usize, command: &str, name: &str) -> u64 {
        let info: String = self.query(i, redis::cmd("INFO").arg("commandstats"));
        command_stat(&info, command, name)
    }

    /// Node `i`'s `INFO errorstats`: one line per error prefix it answered
    /// (`errorstat_CROSSSLOT:count=N`).
    pub fn error_stats(&self, i: usize) -> String {
        self.query(i, redis::cmd("INFO").arg("errorstats"))
    }
}

/// Starts one cluster-enabled node on a free port, its bus on another.
fn start_node() -> Result<Node, String> {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    // The bus listens on a port of its own: the default (the port plus 10,000) may not exist.
    let (port, bus) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!(
        "tokengate-cluster-{}-{}-{port}",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-port", &bus.to_string()])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => Ok(Node { child, port, dir }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed (the Redis Cluster tests start their own): \
             apt-get install -y redis-server"
        ),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(format!("redis-server: {e}"))
        }
    }
}

/// Waits until `node`'s port is answered by `node`'s own process (`INFO server`).
fn wait_for_own_server(node: &Node, deadline: Instant) -> Result<(), String> {
    let port = node.port;
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        let answered = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(1)))?;
                redis::cmd("INFO").arg("server").query::<String>(&mut c)
            });
        match answered {
            Ok(info) => {
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|p| p.trim().parse::<u32>().ok());
                return match pid {
                    Some(pid) if pid == node.child.id() => Ok(()),
                    // Another process took the port: this node cannot bind it.
                    other => Err(format!("port {port} is answered by process {other:?}")),
                };
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(format!("no answer on port {port} within {START_TIMEOUT:?}"));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Runs `command` to its end, killed at `deadline`: what it printed, or why it failed.
fn run_bounded(mut command: Command, deadline: Instant) -> Result<String, String> {
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-cli is not installed (the Redis Cluster tests create their cluster with it): \
             apt-get install -y redis-tools"
        ),
        Err(e) => return Err(format!("redis-cli: {e}")),
    };
    // Its output is short (well below a pipe's buffer): read once it has ended.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-cli did not end within {START_TIMEOUT:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("redis-cli: {e}")),
        }
    };
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut output);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut output);
    }
    if status.success() {
        Ok(output)
    } else {
        Err(format!("redis-cli exited with {status}:\n{output}"))
    }
}
