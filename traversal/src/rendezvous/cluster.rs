//! A node of a cluster: what the call router asks of the cluster
//! ([`traversal_core::server::calls::cluster`]) done against Redis, on two threads of its own.
//!
//! - `cluster`: one connection for commands. Takes the router's requests from a channel (name
//!   claims, presence, messages for other nodes), and every [`HEARTBEAT`] renews this node's
//!   liveness key and checks the nodes it has calls with. After (re)connecting it loads the
//!   name bindings into the router's cache, writes back any binding Redis lost (a Redis that
//!   restarted without its data), and announces again every name registered here.
//! - `cluster-sub`: one connection subscribed to this node's channel; each message goes to the
//!   router under the server's lock.
//!
//! Redis holds (every key with the hash tag `{pinhole}`, so one Redis Cluster slot holds them
//! and the scripts may touch several):
//! - `{pinhole}:names` name -> key (hex): bound for good, by [`CLAIM`];
//! - `{pinhole}:skeletons` skeleton -> name, and `{pinhole}:keys` key -> names held;
//! - `{pinhole}:presence` name -> node id: where the name's live registration is;
//! - `{pinhole}:node:<id>`: the node's liveness, expiring [`LIVENESS`] after its last renewal.
//!   A presence entry whose node's liveness expired is a dead node's: treated as offline (and
//!   removed by whoever finds it).
//!
//! Messages between nodes are JSON [`Envelope`]s published on `pinhole:node:<id>`. Whoever may
//! write to the Redis may speak for any node: Redis belongs on a private network (README).
//!
//! When Redis does not answer, the node goes on serving its own clients (registrations of
//! names it has cached, calls between them); a new name is refused with `try_later`, a call to
//! a name not registered here ends `offline`, and presence catches up when Redis is back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, Script};
use traversal_core::server::calls::cluster::{CallRef, Claimed, ClusterOut, Envelope, NodeMessage};

use super::{Shared, lock, send_side};
use crate::server::hex;

/// How often the node renews its liveness and checks the nodes it has calls with.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node's liveness key expires this long after its last renewal: the longest a dead node's
/// names look online to the others, and the longest before its calls' other ends hear of it.
pub const LIVENESS: Duration = Duration::from_secs(5);
/// How long one Redis command may take before the node counts Redis as unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait between attempts to reach Redis.
const RECONNECT: Duration = Duration::from_millis(500);

const NAMES: &str = "{pinhole}:names";
const SKELETONS: &str = "{pinhole}:skeletons";
const KEYS: &str = "{pinhole}:keys";
const PRESENCE: &str = "{pinhole}:presence";

/// Binds a name to a key if it is free. KEYS: names, skeletons, keys. ARGV: name, key (hex),
/// skeleton, names per key. Returns `bound`, `taken:<key>`, `confusable` or `quota`.
const CLAIM: &str = r"
local bound = redis.call('HGET', KEYS[1], ARGV[1])
if bound then
  if bound == ARGV[2] then return 'bound' end
  return 'taken:' .. bound
end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then return 'confusable' end
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if held >= tonumber(ARGV[4]) then return 'quota' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return 'bound'
";

/// Sets a name's node; returns the node it had. KEYS: presence. ARGV: name, node.
const ONLINE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
";

/// Removes a name's presence if it is `node`'s. KEYS: presence. ARGV: name, node.
const OFFLINE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// This node in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` (or `redis://:PASSWORD@HOST:PORT/DB`, `rediss://` needs TLS support
    /// built in: not here).
    pub redis: String,
    /// How the other nodes reach this node: its id, and where they send relay frames (the
    /// server's UDP address as they see it). `None`: the listening address (which then must
    /// not be a wildcard).
    pub advertise: Option<SocketAddr>,
}

fn liveness_key(node: &str) -> String {
    format!("{{pinhole}}:node:{node}")
}

fn channel(node: &str) -> String {
    format!("pinhole:node:{node}")
}

/// What the cluster's threads count (for the metrics endpoint).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) redis_up: AtomicBool,
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) redis_errors: AtomicU64,
}

/// What the cluster's threads share with the server's.
#[derive(Debug, Clone)]
pub(super) struct Threads {
    pub(super) shared: Arc<Mutex<Shared>>,
    /// Sends the datagrams the server queues while a cluster thread drives it.
    pub(super) side: Arc<std::net::UdpSocket>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) counters: Arc<Counters>,
}

/// The node's threads.
#[derive(Debug)]
pub(super) struct Link {
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    /// Starts the threads. `ops` receives what the router asks of the cluster (its sender is
    /// in [`Shared`]).
    pub(super) fn spawn(
        redis_url: &str,
        node: String,
        ops: Receiver<ClusterOut>,
        threads: Threads,
    ) -> std::io::Result<Link> {
        let client = redis::Client::open(redis_url).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cluster: {redis_url} is not a Redis address: {e}"),
            )
        })?;
        let node = Arc::<str>::from(node);
        let commands = {
            let worker = Worker {
                client: client.clone(),
                node: node.clone(),
                threads: threads.clone(),
                claim: Script::new(CLAIM),
                online: Script::new(ONLINE),
                offline: Script::new(OFFLINE),
            };
            std::thread::Builder::new()
                .name("cluster".into())
                .spawn(move || worker.run(&ops))?
        };
        let subscriber = std::thread::Builder::new()
            .name("cluster-sub".into())
            .spawn(move || subscribe(&client, &node, &threads))?;
        Ok(Link {
            threads: vec![commands, subscriber],
        })
    }

    /// Waits for the threads (after `stop` was set and the router's sender dropped).
    pub(super) fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a cluster thread panicked");
            }
        }
    }
}

impl Threads {
    /// Drives the server with `f` under its lock, then hands what it queued (messages to
    /// clients, datagrams) to the sockets.
    fn drive(&self, f: impl FnOnce(&mut Shared)) {
        let mut s = lock(&self.shared);
        f(&mut s);
        s.drain(|bytes, to| send_side(&self.side, bytes, to));
    }
}

struct Worker {
    client: redis::Client,
    node: Arc<str>,
    threads: Threads,
    claim: Script,
    online: Script,
    offline: Script,
}

impl Worker {
    fn run(&self, ops: &Receiver<ClusterOut>) {
        let stop = &self.threads.stop;
        let mut con: Option<Connection> = None;
        let mut beat = Instant::now();
        let mut alive = HashMap::new();
        let mut unreachable_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if con.is_none() {
                match self.connect() {
                    Ok(c) => {
                        if let Some(since) = unreachable_since.take() {
                            tracing::info!(after = ?since.elapsed(), "Redis is back");
                        }
                        con = Some(c);
                        self.threads
                            .counters
                            .redis_up
                            .store(true, Ordering::Relaxed);
                    }
                    Err(err) => {
                        self.threads
                            .counters
                            .redis_errors
                            .fetch_add(1, Ordering::Relaxed);
                        if unreachable_since.is_none() {
                            tracing::warn!(
                                "cluster: Redis unreachable ({err}); serving own clients"
                            );
                            unreachable_since = Some(Instant::now());
                        }
                    }
                }
            }
            let op = match ops.recv_timeout(if con.is_some() { HEARTBEAT } else { RECONNECT }) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(op) = op {
                let result = match con.as_mut() {
                    Some(c) => self.apply(c, &op),
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "not connected",
                    ))),
                };
                if let Err(err) = result {
                    tracing::debug!("cluster: {err}");
                    self.threads
                        .counters
                        .redis_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.failed(op);
                    if is_connection_error(&err) {
                        con = None;
                        self.threads
                            .counters
                            .redis_up
                            .store(false, Ordering::Relaxed);
                    }
                }
            }
            if beat.elapsed() >= HEARTBEAT
                && let Some(c) = con.as_mut()
            {
                beat = Instant::now();
                if let Err(err) = self.heartbeat(c, &mut alive) {
                    tracing::warn!("cluster: heartbeat: {err}");
                    self.threads
                        .counters
                        .redis_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.threads
                        .counters
                        .redis_up
                        .store(false, Ordering::Relaxed);
                    con = None;
                }
            }
        }
        // Leaving: this node's names are no longer here.
        if let Some(c) = con.as_mut() {
            let _: redis::RedisResult<()> = c.del(liveness_key(&self.node));
        }
    }

    /// Connects, loads the names, writes back the ones Redis lost, announces this node's
    /// names and its liveness.
    fn connect(&self) -> redis::RedisResult<Connection> {
        let mut c = self.client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
        c.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        c.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        let stored: Vec<(String, String)> = c.hgetall(NAMES)?;
        let stored: Vec<(String, [u8; 32])> = stored
            .into_iter()
            .filter_map(|(name, key)| {
                let key = crate::server::unhex(&key)?.try_into().ok()?;
                Some((name, key))
            })
            .collect();
        let known: std::collections::HashSet<&str> =
            stored.iter().map(|(n, _)| n.as_str()).collect();
        let (cached, online) = {
            let s = lock(&self.threads.shared);
            (
                s.server.calls().names_snapshot(),
                s.server.calls().online_names(),
            )
        };
        let lost: Vec<&(String, [u8; 32])> = cached
            .iter()
            .filter(|(n, _)| !known.contains(n.as_str()))
            .collect();
        for (name, key) in &lost {
            let skeleton = traversal_core::server::calls::name_skeleton(name);
            self.claim(&mut c, name, key, &skeleton, usize::MAX)?;
        }
        let loaded = stored.len();
        lock(&self.threads.shared)
            .server
            .calls_mut()
            .load_names(stored);
        let mut pipe = redis::pipe();
        for name in &online {
            pipe.hset(PRESENCE, name, &*self.node).ignore();
        }
        pipe.set_ex(liveness_key(&self.node), "1", LIVENESS.as_secs())
            .ignore();
        pipe.query::<()>(&mut c)?;
        tracing::info!(
            node = &*self.node,
            names = loaded,
            written_back = lost.len(),
            announced = online.len(),
            "cluster: connected to Redis"
        );
        Ok(c)
    }

    fn apply(&self, c: &mut Connection, op: &ClusterOut) -> redis::RedisResult<()> {
        match op {
            ClusterOut::Claim {
                conn,
                name,
                key,
                skeleton,
                per_key,
            } => {
                let answer = self.claim(c, name, key, skeleton, *per_key)?;
                let claimed = match answer.as_str() {
                    "bound" => Claimed::Bound,
                    "confusable" => Claimed::Confusable,
                    "quota" => Claimed::KeyQuota,
                    other => other
                        .strip_prefix("taken:")
                        .and_then(crate::server::unhex)
                        .and_then(|k| <[u8; 32]>::try_from(k).ok())
                        .map_or(Claimed::Unavailable, Claimed::Taken),
                };
                self.threads.drive(|s| {
                    s.server.calls_mut().claimed(*conn, name, *key, claimed);
                });
            }
            ClusterOut::Online { name } => {
                let old: Option<String> = self
                    .online
                    .key(PRESENCE)
                    .arg(name)
                    .arg(&*self.node)
                    .invoke(c)?;
                // The name moved here from a live node: its registration there is stale.
                if let Some(old) = old.filter(|o| **o != *self.node) {
                    let message = NodeMessage::Moved { name: name.clone() };
                    self.publish(c, &old, &message)?;
                }
            }
            ClusterOut::Offline { name } => {
                let _: i64 = self
                    .offline
                    .key(PRESENCE)
                    .arg(name)
                    .arg(&*self.node)
                    .invoke(c)?;
            }
            ClusterOut::Send {
                node,
                name,
                call,
                message,
            } => {
                let to = match node {
                    Some(node) => Some(node.clone()),
                    None => self.locate(c, name)?,
                };
                let delivered = match &to {
                    Some(to) => self.publish(c, to, message)? > 0,
                    None => false,
                };
                if !delivered && let Some(call) = call {
                    self.undeliverable(call);
                }
            }
        }
        Ok(())
    }

    /// Runs [`CLAIM`]: its answer.
    fn claim(
        &self,
        c: &mut Connection,
        name: &str,
        key: &[u8; 32],
        skeleton: &str,
        per_key: usize,
    ) -> redis::RedisResult<String> {
        self.claim
            .key(NAMES)
            .key(SKELETONS)
            .key(KEYS)
            .arg(name)
            .arg(hex(key))
            .arg(skeleton)
            .arg(per_key.to_string())
            .invoke(c)
    }

    /// The live node holding `name`'s registration, if any (an entry of a dead node is
    /// removed).
    fn locate(&self, c: &mut Connection, name: &str) -> redis::RedisResult<Option<String>> {
        let Some(node): Option<String> = c.hget(PRESENCE, name)? else {
            return Ok(None);
        };
        if node == *self.node {
            return Ok(None); // Not registered here (or the router would not ask).
        }
        if c.exists(liveness_key(&node))? {
            return Ok(Some(node));
        }
        let _: i64 = self.offline.key(PRESENCE).arg(name).arg(&node).invoke(c)?;
        Ok(None)
    }

    /// Publishes to `node`: how many subscribers heard it (0: the node is gone).
    fn publish(
        &self,
        c: &mut Connection,
        node: &str,
        message: &NodeMessage,
    ) -> redis::RedisResult<i64> {
        let envelope = Envelope {
            from: self.node.to_string(),
            message: message.clone(),
        };
        let text = serde_json::to_string(&envelope).unwrap_or_default();
        self.threads.counters.sent.fetch_add(1, Ordering::Relaxed);
        c.publish(channel(node), text)
    }

    /// Renews this node's liveness; tells the router of nodes it has calls with that are gone
    /// (`alive` holds when each was last seen alive).
    fn heartbeat(
        &self,
        c: &mut Connection,
        alive: &mut HashMap<String, Instant>,
    ) -> redis::RedisResult<()> {
        let () = c.set_ex(liveness_key(&self.node), "1", LIVENESS.as_secs())?;
        let nodes = lock(&self.threads.shared).server.calls().remote_nodes();
        alive.retain(|n, _| nodes.contains(n));
        for node in nodes {
            // When the node last renewed its liveness, from what is left of it (no clocks
            // compared across machines).
            let now = Instant::now();
            let left: i64 = c.pttl(liveness_key(&node))?;
            if left >= 0 {
                let spent = LIVENESS.saturating_sub(Duration::from_millis(left.unsigned_abs()));
                alive.insert(node, now.checked_sub(spent).unwrap_or(now));
                continue;
            }
            let last_alive = alive.remove(&node).unwrap_or(now);
            tracing::warn!(node, "cluster: a node with calls here is gone");
            self.threads.drive(|s| {
                s.server.calls_mut().node_lost(last_alive, &node);
            });
        }
        Ok(())
    }

    /// What to tell the router when an operation failed (Redis unreachable).
    fn failed(&self, op: ClusterOut) {
        match op {
            ClusterOut::Claim {
                conn, name, key, ..
            } => {
                self.threads.drive(|s| {
                    s.server
                        .calls_mut()
                        .claimed(conn, &name, key, Claimed::Unavailable);
                });
            }
            ClusterOut::Send {
                call: Some(call), ..
            } => self.undeliverable(&call),
            // Presence is announced again on reconnecting.
            _ => {}
        }
    }

    fn undeliverable(&self, call: &CallRef) {
        self.threads.drive(|s| {
            s.server.calls_mut().undeliverable(call);
        });
    }
}

fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_timeout()
}

/// The subscriber thread: this node's channel, until `stop`.
fn subscribe(client: &redis::Client, node: &str, threads: &Threads) {
    let Threads { stop, counters, .. } = threads;
    while !stop.load(Ordering::Relaxed) {
        let mut con = match client.get_connection_with_timeout(COMMAND_TIMEOUT) {
            Ok(con) => con,
            Err(_) => {
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        let mut sub = con.as_pubsub();
        if sub.subscribe(channel(node)).is_err() || sub.set_read_timeout(Some(RECONNECT)).is_err() {
            std::thread::sleep(RECONNECT);
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let message = match sub.get_message() {
                Ok(message) => message,
                Err(err) if err.is_timeout() => continue,
                Err(err) => {
                    tracing::debug!("cluster: subscription: {err}");
                    break;
                }
            };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            counters.received.fetch_add(1, Ordering::Relaxed);
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(envelope) => threads.drive(|s| {
                    s.server.calls_mut().from_node(Instant::now(), envelope);
                }),
                Err(err) => tracing::warn!("cluster: a message that does not parse: {err}"),
            }
        }
    }
}
