//! The rendezvous server's I/O: runs [`Server`] on real sockets, on threads of its own.
//!
//! [`spawn`] binds one port for UDP and TCP and returns a [`Rendezvous`] handle; dropping the
//! handle (or [`Rendezvous::stop`]) shuts the server down. The `pinhole-rendezvous` binary is
//! this plus flags, logging and signals; the app can embed the same server.
//!
//! Threads:
//! - `udp-0` .. `udp-{N-1}` ([`RendezvousConfig::udp_threads`]): the hot path, batched
//!   `recvmmsg`/`sendmmsg` ([`crate::udp_batch`]), each on a socket of its own bound to the
//!   same address with `SO_REUSEPORT` (with more than one), so the kernel spreads the
//!   datagrams over the threads by a hash of their source and destination (a client's
//!   datagrams always reach the same thread). Plain STUN Binding Requests are answered without
//!   any lock; Pinhole messages and relayed ChannelData lock the server once per batch, for the
//!   table lookups only: receiving and sending (the system calls, most of the cost) happen
//!   outside the lock, so two threads overlap there (docs/figures.md measures how often a
//!   batch waits for the lock). Every socket sends from the same address and port, so a thread
//!   answers and relays to any peer from its own socket and the server's address is the same
//!   whichever thread a datagram reached;
//! - `rendezvous-tcp`: one `mio` poll loop for every control connection (no task, channel or
//!   buffer per connection: a slab of small entries inside the shared state, one read buffer
//!   for all): accepts, reads, writes what did not fit at first, and ticks the server's timer
//!   every second, writing the names file (if any) when a name was bound since the last tick,
//!   and once more on the way out;
//! - `metrics` (with [`RendezvousConfig::metrics`]): the Prometheus endpoint
//!   ([`crate::metrics`]), which copies the counters under the lock and renders them outside.
//!
//! [`Rendezvous::shut_down_gracefully`] tells every client the server is going away, refuses
//! new registrations and calls, and stops once no call is left to relay or the grace passed.
//!
//! Whichever thread has the lock when the server says something on a control connection
//! writes it to the socket at once (non-blocking); only what the socket does not take waits in
//! the connection's queue (bounded) for writability.
//!
//! Control connections are TLS 1.3 only ([`crate::tls`]): each has a rustls session driven
//! through the unbuffered API ([`tls_session`]: records are decrypted in the shared read
//! buffer, no buffer per idle connection); the server's messages are encrypted when written.
//! A connection that does not speak TLS, or breaks it, is closed without an answer; other
//! connections go on.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::metrics::{self, Snapshot};
use crate::server::{self, Server, Stats, TcpOutput};
use crate::tls::{Fingerprint, ServerIdentity};
use crate::{stun, udp_batch};

mod cluster;
mod conns;
mod tls_session;
pub use cluster::{ClusterConfig, HEARTBEAT as CLUSTER_HEARTBEAT, LIVENESS as CLUSTER_LIVENESS};
use conns::Conns;
use tls_session::{Status, TlsSession};
use traversal_core::server::calls::cluster::{ClusterOut, Node};

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct RendezvousConfig {
    /// UDP and TCP address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The server's settings.
    pub server: server::Config,
    /// Datagrams per system call on the UDP path.
    pub batch: usize,
    /// UDP threads, each with a socket of its own on `listen` (`SO_REUSEPORT` when more than
    /// one); clamped to 1..=[`MAX_UDP_THREADS`]. Default 1 (the app's embedded server); the
    /// `pinhole-rendezvous` binary defaults to the machine's cores.
    pub udp_threads: usize,
    /// Where the name table is kept across restarts (`None`: in memory only).
    pub names_file: Option<PathBuf>,
    /// The certificate and key of the control connections' TLS (`None`: a self-signed one
    /// made at [`spawn`], in memory only).
    pub identity: Option<Arc<ServerIdentity>>,
    /// Where to serve the Prometheus endpoint (`GET /metrics`, [`crate::metrics`]); `None`:
    /// no endpoint. Port 0 picks a free port ([`Rendezvous::metrics_addr`]).
    pub metrics: Option<SocketAddr>,
    /// Be a node of a cluster that shares names, presence and calls through Redis
    /// ([`cluster`]); `None`: a server of its own.
    pub cluster: Option<ClusterConfig>,
}

impl RendezvousConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        RendezvousConfig {
            listen,
            server: server::Config::default(),
            batch: 32,
            udp_threads: 1,
            names_file: None,
            identity: None,
            metrics: None,
            cluster: None,
        }
    }
}

/// Most UDP threads ([`RendezvousConfig::udp_threads`]).
pub const MAX_UDP_THREADS: usize = 64;

/// What the UDP threads count outside the server's lock.
#[derive(Debug)]
struct UdpCounters {
    /// Plain STUN Binding Requests answered (added once per batch, by every thread).
    stun_answers: AtomicU64,
    /// Batches that found the server's lock held by another thread and waited for it.
    lock_waits: AtomicU64,
    /// Datagrams received, per thread.
    datagrams: Vec<AtomicU64>,
}

/// A running server. Dropping it stops the server.
#[derive(Debug)]
pub struct Rendezvous {
    addr: SocketAddr,
    alternate_addr: SocketAddr,
    fingerprint: Fingerprint,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    /// Wakes the TCP thread's poll (to see `stop`).
    waker: mio::Waker,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// What the UDP threads count outside the lock.
    udp: Arc<UdpCounters>,
    /// Sends what the server queues from outside the serving threads (a shutdown's messages).
    side_sender: Arc<UdpSocket>,
    metrics: Option<metrics::Endpoint>,
    /// The cluster's threads, in a cluster.
    cluster: Option<cluster::Link>,
    /// What the cluster's threads count.
    cluster_counters: Option<Arc<cluster::Counters>>,
}

impl Rendezvous {
    /// The address it listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The alternate UDP port's address (probes for the filtering test leave from it).
    pub fn alternate_addr(&self) -> SocketAddr {
        self.alternate_addr
    }

    /// The fingerprint of the certificate its control connections present.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).server.stats()
    }

    /// The address the Prometheus endpoint listens on (`None` without
    /// [`RendezvousConfig::metrics`]).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(metrics::Endpoint::local_addr)
    }

    /// What the metrics endpoint shows now.
    pub fn metrics_snapshot(&self) -> Snapshot {
        snapshot(&self.shared, &self.udp, self.cluster_counters.as_deref())
    }

    /// Datagrams each UDP thread has received so far, one entry per thread (which thread
    /// serves a client is the kernel's choice: a hash of the datagram's addresses).
    pub fn udp_datagrams_per_thread(&self) -> Vec<u64> {
        self.udp
            .datagrams
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops the server and waits for its threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Shuts down as an operator expects: every control connection hears `going_away` (with
    /// when to come back), new registrations and calls are refused (`shutting_down`), and the
    /// calls in progress keep their relay until they end or `grace` passes; then every control
    /// connection is closed (after what is queued for it, TLS `close_notify` last) and the
    /// server stops. Blocks for up to `grace` and a second more: call it from a thread that
    /// may wait (`spawn_blocking`); to stop sooner (a second signal), exit the process.
    pub fn shut_down_gracefully(self, grace: Duration) {
        let started = Instant::now();
        let until = started.checked_add(grace).unwrap_or(started);
        {
            let mut s = lock(&self.shared);
            s.server.go_away(started, until);
            s.drain(|bytes, to| send_side(&self.side_sender, bytes, to));
        }
        tracing::info!(?grace, "shutting down: clients told to go away");
        let drained = loop {
            if lock(&self.shared).server.drained() {
                break true;
            }
            let now = Instant::now();
            if now >= until {
                break false;
            }
            std::thread::sleep(DRAIN_POLL.min(until - now));
        };
        let calls = {
            let mut s = lock(&self.shared);
            let calls = s.server.stats().calls.calls;
            s.server.close_all();
            s.drain(|bytes, to| send_side(&self.side_sender, bytes, to));
            calls
        };
        if drained {
            tracing::info!(after = ?started.elapsed(), "no call left to relay: stopping");
        } else {
            tracing::warn!(calls, "the grace passed with calls in progress: stopping");
        }
        // What a socket did not take at once goes out as it drains, for a moment.
        let flushed_by = Instant::now() + CLOSE_FLUSH;
        while !lock(&self.shared).conns.is_empty() && Instant::now() < flushed_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
    }

    fn shutdown(&mut self) {
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Err(err) = self.waker.wake() {
            tracing::error!("waking the TCP thread: {err}");
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a rendezvous thread panicked");
            }
        }
        if let Some(link) = self.cluster.take() {
            link.join();
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// UDP and TCP on one port: `listen`'s, or with port 0 one that is free for both. The system
/// picks a free UDP port, which another program may hold for TCP: then a new one is tried (a
/// few times), so `--listen HOST:0` never fails on a busy machine where a free pair exists.
/// With `reuse_port` the UDP socket has `SO_REUSEPORT`, so more can join it ([`bind_udp`]).
fn bind_udp_and_tcp(
    listen: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<(UdpSocket, std::net::TcpListener)> {
    const ATTEMPTS: usize = 16;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let udp = bind_udp(listen, reuse_port)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

/// A UDP socket bound to `addr`, with `SO_REUSEPORT` set before the bind when `reuse_port`
/// (every socket of a group needs it, the first included). The TCP listener on the same port
/// has no `SO_REUSEPORT`: two servers given port 0 never share a port, since the second's TCP
/// bind fails and [`bind_udp_and_tcp`] picks another.
fn bind_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    if !reuse_port {
        return UdpSocket::bind(addr);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds `config.listen` (UDP, then TCP on the same port) and starts serving.
pub fn spawn(config: RendezvousConfig) -> std::io::Result<Rendezvous> {
    let identity = match &config.identity {
        Some(identity) => identity.clone(),
        None => Arc::new(ServerIdentity::generate()?),
    };
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| std::io::Error::other(format!("random bytes: {e}")))?;
    let threads = config.udp_threads.clamp(1, MAX_UDP_THREADS);
    let (udp, std_tcp) = bind_udp_and_tcp(config.listen, threads > 1)?;
    let addr = udp.local_addr()?;
    // The other threads' sockets join the first's port (SO_REUSEPORT): same address, so
    // whichever sends, peers see the server's one address.
    let mut sockets = vec![udp];
    for _ in 1..threads {
        sockets.push(bind_udp(addr, true)?);
    }
    // A second port for RFC 5780's filtering test: same address, any free port.
    let alternate = UdpSocket::bind(SocketAddr::new(config.listen.ip(), 0))?;
    let alternate_addr = alternate.local_addr()?;
    let mut server_config = config.server.clone();
    server_config.alternate_port = true;
    let mut server = Server::new(server_config, secret);
    if let Some(path) = &config.names_file {
        check_names_file(path)?;
        let names = crate::names_file::read(path)?;
        tracing::info!(names = names.len(), path = %path.display(), "names loaded");
        server.calls_mut().load_names(names);
    }
    let cluster_ops = match &config.cluster {
        Some(cluster) => {
            let advertise = cluster.advertise.unwrap_or(addr);
            if advertise.ip().is_unspecified() || advertise.port() == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "cluster: the other nodes cannot reach {advertise}: give the address \
                         they reach this node at (--advertise HOST:PORT)"
                    ),
                ));
            }
            server.calls_mut().join_cluster(Node {
                id: advertise.to_string(),
                relay: advertise,
            });
            Some((std::sync::mpsc::channel(), advertise))
        }
        None => None,
    };
    let cluster_ops = cluster_ops.map(|((tx, rx), advertise)| (tx, (rx, advertise)));
    let poll = Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), WAKER)?;
    let shared = Arc::new(Mutex::new(Shared {
        server,
        alternate: Some(alternate),
        conns: Conns::default(),
        registry: poll.registry().try_clone()?,
        tls: identity.server_config(),
        scratch: Vec::new(),
        cluster: cluster_ops.as_ref().map(|(tx, _)| tx.clone()),
    }));
    std_tcp.set_nonblocking(true)?;
    let listener = mio::net::TcpListener::from_std(std_tcp);
    // Sends from the first socket's address, which is every UDP thread's.
    let side_sender = Arc::new(sockets[0].try_clone()?);
    let stop = Arc::new(AtomicBool::new(false));
    let cluster_counters = config
        .cluster
        .as_ref()
        .map(|_| Arc::new(cluster::Counters::default()));
    let link = match (cluster_ops, &config.cluster, &cluster_counters) {
        (Some((_, (rx, advertise))), Some(cluster), Some(counters)) => Some(cluster::Link::spawn(
            &cluster.redis,
            advertise.to_string(),
            rx,
            cluster::Threads {
                shared: shared.clone(),
                side: side_sender.clone(),
                stop: stop.clone(),
                counters: counters.clone(),
            },
        )?),
        _ => None,
    };
    let udp = Arc::new(UdpCounters {
        stun_answers: AtomicU64::new(0),
        lock_waits: AtomicU64::new(0),
        datagrams: (0..threads).map(|_| AtomicU64::new(0)).collect(),
    });
    // Bound before any thread starts: a port that is taken fails the spawn, nothing runs.
    let metrics = match config.metrics {
        Some(addr) => {
            let (shared, udp) = (shared.clone(), udp.clone());
            let counters = cluster_counters.clone();
            let endpoint = metrics::Endpoint::spawn(addr, move || {
                snapshot(&shared, &udp, counters.as_deref())
            })
            .map_err(|e| std::io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))?;
            Some(endpoint)
        }
        None => None,
    };
    let mut threads = Vec::with_capacity(sockets.len() + 1);
    for (index, socket) in sockets.into_iter().enumerate() {
        let (rx, tx) = udp_batch::split(socket, config.batch)?;
        let (shared, thread_stop, udp) = (shared.clone(), stop.clone(), udp.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("udp-{index}"))
            .spawn(move || serve_udp(rx, tx, &shared, &thread_stop, &udp, index));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(err) => {
                // The threads already running stop before the error goes back.
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(err);
            }
        }
    }
    let tcp_thread = {
        let shared = shared.clone();
        let stop = stop.clone();
        let side_sender = side_sender.clone();
        let names_file = config.names_file.clone();
        std::thread::Builder::new()
            .name("rendezvous-tcp".into())
            .spawn(move || {
                serve_tcp(
                    poll,
                    listener,
                    &shared,
                    &side_sender,
                    &stop,
                    names_file.as_deref(),
                );
            })
    };
    let tcp_thread = match tcp_thread {
        Ok(thread) => thread,
        Err(err) => {
            // The UDP threads stop before the error goes back.
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                let _ = t.join();
            }
            return Err(err);
        }
    };
    Ok(Rendezvous {
        addr,
        alternate_addr,
        fingerprint: identity.fingerprint(),
        shared,
        stop,
        waker,
        threads: {
            threads.push(tcp_thread);
            threads
        },
        udp,
        side_sender,
        metrics,
        cluster: link,
        cluster_counters,
    })
}

/// The counters, copied under the lock (a struct of integers), for the metrics endpoint.
fn snapshot(
    shared: &Mutex<Shared>,
    udp: &UdpCounters,
    cluster: Option<&cluster::Counters>,
) -> Snapshot {
    let (stats, shutting_down, remote_calls) = {
        let s = lock(shared);
        let remote = s.server.calls().remote_parties() as u64;
        (s.server.stats(), s.server.is_going_away(), remote)
    };
    let cluster = cluster.map(|c| metrics::ClusterSnapshot {
        redis_up: c.redis_up.load(Ordering::Relaxed),
        messages_sent: c.sent.load(Ordering::Relaxed),
        messages_received: c.received.load(Ordering::Relaxed),
        redis_errors: c.redis_errors.load(Ordering::Relaxed),
        remote_calls,
    });
    Snapshot {
        stats,
        stun_answers: udp.stun_answers.load(Ordering::Relaxed),
        udp_threads: udp.datagrams.len() as u64,
        udp_lock_waits: udp.lock_waits.load(Ordering::Relaxed),
        shutting_down,
        cluster,
    }
}

/// Names are written next to the names file (atomically, through a temporary file): a
/// directory that is not there would lose every name, so the server refuses to start.
pub fn check_names_file(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the names file's directory {} does not exist",
                dir.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Writes the names file when a name was bound since the last write (the table is copied
/// under the lock, written outside it). A failed write is logged and tried again next time.
fn save_names(shared: &Mutex<Shared>, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        return;
    };
    let names = {
        let mut s = lock(shared);
        if !s.server.calls_mut().take_names_changed() {
            return;
        }
        s.server.calls().names_snapshot()
    };
    if let Err(err) = crate::names_file::write(path, &names) {
        tracing::warn!(path = %path.display(), "writing the names file: {err}");
        lock(shared).server.calls_mut().mark_names_changed();
    }
}

/// What the UDP thread and the TCP thread share: the server and every control connection.
#[derive(Debug)]
struct Shared {
    server: Server,
    /// The alternate port's socket, for probes that test filtering (never read).
    alternate: Option<UdpSocket>,
    conns: Conns,
    /// The TCP thread's poll registry: a connection whose writes would block asks for
    /// writability, from whichever thread found out.
    registry: mio::Registry,
    /// What every control connection's TLS is served with.
    tls: Arc<rustls::ServerConfig>,
    /// Records to send, encoded for one connection at a time (kept, not shrunk).
    scratch: Vec<u8>,
    /// Where the router's requests to the cluster go (its thread), in a cluster.
    cluster: Option<std::sync::mpsc::Sender<ClusterOut>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock would be a bug; keep serving with the state as it is.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Hands every queued datagram to `send` and writes every queued TCP output to its
    /// connection (what the socket does not take waits in the connection's queue for
    /// writability); closes the connections the server is done with.
    fn drain(&mut self, mut send: impl FnMut(&[u8], SocketAddr)) {
        loop {
            while let Some(t) = self.server.poll_transmit() {
                if t.from_alternate {
                    if let Some(alternate) = &self.alternate {
                        send_side(alternate, &t.contents, t.destination);
                    }
                } else {
                    send(&t.contents, t.destination);
                }
            }
            if let Some(ops) = &self.cluster {
                // The router may have been driven directly (by the cluster's threads).
                self.server.flush_calls();
                while let Some(op) = self.server.calls_mut().poll_cluster() {
                    // The cluster's thread is gone only when the server stops.
                    let _ = ops.send(op);
                }
            }
            while let Some(out) = self.server.poll_tcp() {
                let (TcpOutput::Send { conn, .. } | TcpOutput::Close { conn }) = out;
                let Some((key, c)) = self.conns.by_id(conn) else {
                    continue;
                };
                match out {
                    TcpOutput::Send { bytes, .. } => {
                        if c.out.as_ref().is_some_and(|o| o.len() >= OUTBOX) {
                            tracing::debug!(conn, "control connection not reading: closed");
                            c.out = None;
                            c.closing = true;
                        } else if !c.closing {
                            c.out
                                .get_or_insert_with(Box::default)
                                .plain
                                .push_back(bytes);
                        }
                    }
                    // After everything queued before.
                    TcpOutput::Close { .. } => c.closing = true,
                }
                if !c.touched {
                    c.touched = true;
                    self.conns.touched.push(key);
                }
            }
            if self.conns.touched.is_empty() {
                break;
            }
            // Flushing may close connections, and closing one may have the server say
            // something on others (a call ends): go round again.
            for key in std::mem::take(&mut self.conns.touched) {
                if let Some(c) = self.conns.get_mut(key) {
                    c.touched = false;
                }
                self.flush(key);
            }
        }
    }

    /// Encrypts what connection `key` has queued (once its handshake is done) and writes it.
    fn flush(&mut self, key: usize) {
        let Shared { conns, scratch, .. } = self;
        let Some(c) = conns.get_mut(key) else {
            return;
        };
        scratch.clear();
        let mut none = VecDeque::new();
        let plain = c.out.as_mut().map_or(&mut none, |o| &mut o.plain);
        let Some(tls) = c.tls.as_mut() else {
            // Its handshake is running: the TCP thread flushes once it is back.
            return;
        };
        if let Err(err) = tls.process(&mut [], plain, c.closing, scratch, |_| {}) {
            tracing::debug!(conn = c.id, "control connection TLS: {err}");
            self.close(key);
            return;
        }
        self.write(key);
    }

    /// Writes the records in `scratch` after those connection `key` still holds, as far as the
    /// socket takes them (the rest waits for writability); closes it when it is done.
    fn write(&mut self, key: usize) {
        let Shared {
            conns,
            registry,
            scratch,
            ..
        } = self;
        let Some(c) = conns.get_mut(key) else {
            return;
        };
        if !scratch.is_empty() {
            c.out
                .get_or_insert_with(Box::default)
                .records
                .push_back(std::mem::take(scratch));
        }
        let mut failed = false;
        while let Some(out) = c.out.as_mut()
            && let Some(front) = out.records.front()
        {
            match (&c.stream).write(&front[out.written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    out.written += n;
                    if out.written >= front.len() {
                        if let Some(done) = out.records.pop_front()
                            && scratch.capacity() == 0
                        {
                            // The one scratch buffer comes back for the next connection.
                            *scratch = done;
                            scratch.clear();
                        }
                        out.written = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !c.want_write {
                        c.want_write = true;
                        if let Err(err) = registry.reregister(
                            &mut c.stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        ) {
                            tracing::debug!(conn = c.id, "poll registration: {err}");
                            failed = true;
                            break;
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.close(key);
            return;
        }
        if c.want_write {
            c.want_write = false;
            if let Err(err) = registry.reregister(&mut c.stream, Token(key), Interest::READABLE) {
                tracing::debug!(conn = c.id, "poll registration: {err}");
            }
        }
        if c.closing && c.out.as_ref().is_some_and(|o| !o.plain.is_empty()) {
            // The last words wait for the handshake's end (or for LINGER to pass).
            if !c.lingering {
                c.lingering = true;
                let id = c.id;
                conns.lingering.push((id, Instant::now()));
            }
        } else if c.closing {
            // Every record is written (the close_notify last, once the handshake was done).
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            self.close(key);
        } else if c.out.as_ref().is_some_and(|o| o.plain.is_empty()) {
            // Idle again: nothing held (messages wait here only for the handshake's end).
            c.out = None;
        }
    }

    /// Closes the lingering connections whose handshake has not ended within [`LINGER`].
    fn close_lingering(&mut self, now: Instant) {
        let lingering = std::mem::take(&mut self.conns.lingering);
        for (id, since) in lingering {
            let Some((key, _)) = self.conns.by_id(id) else {
                continue;
            };
            if now.saturating_duration_since(since) >= LINGER {
                self.close(key);
            } else {
                self.conns.lingering.push((id, since));
            }
        }
    }

    /// Forgets connection `key` (closing its socket) and tells the server.
    fn close(&mut self, key: usize) {
        let Some(mut c) = self.conns.remove(key) else {
            return;
        };
        let _ = self.registry.deregister(&mut c.stream);
        self.server.handle_tcp_closed(Instant::now(), c.id);
        match c.stream.peer_addr() {
            Ok(peer) => tracing::debug!(%peer, conn = c.id, "control connection closed"),
            Err(_) => tracing::debug!(conn = c.id, "control connection closed"),
        }
    }
}

fn send_side(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(err) = socket.send_to(bytes, to) {
        tracing::debug!(%to, "UDP send: {err}");
    }
}

/// The UDP hot path, one thread per socket: answers plain Binding Requests without touching
/// shared state, and hands Pinhole messages and relay frames to the server under one lock per
/// batch (taken at the first such datagram, after the receive; released before the send).
fn serve_udp(
    mut rx: udp_batch::RecvBatch,
    mut tx: udp_batch::SendBatch,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    counters: &UdpCounters,
    index: usize,
) {
    let mut answer = [0u8; 44];
    let mut plain: u64 = 0;
    let mut datagrams: u64 = 0;
    let mut waits: u64 = 0;
    let received_here = counters.datagrams.get(index);
    while !stop.load(Ordering::Relaxed) {
        let (before, datagrams_before, waits_before) = (plain, datagrams, waits);
        let mut guard: Option<MutexGuard<'_, Shared>> = None;
        let mut now: Option<Instant> = None;
        let received = rx.recv_batch(Duration::from_millis(100), |data, from| {
            datagrams += 1;
            if let Some(n) = stun::answer_plain_binding(data, from, &mut answer) {
                plain += 1;
                if let Err(err) = tx.queue(&answer[..n], from) {
                    tracing::debug!(%from, "UDP send: {err}");
                }
                return;
            }
            let now = *now.get_or_insert_with(Instant::now);
            let s = guard.get_or_insert_with(|| match shared.try_lock() {
                Ok(s) => s,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    waits += 1;
                    lock(shared)
                }
            });
            s.server.handle_udp(now, from, data);
        });
        // Counted before the answers go out: whoever got an answer sees it counted.
        if plain != before {
            counters
                .stun_answers
                .fetch_add(plain - before, Ordering::Relaxed);
        }
        if datagrams != datagrams_before
            && let Some(c) = received_here
        {
            c.fetch_add(datagrams - datagrams_before, Ordering::Relaxed);
        }
        if waits != waits_before {
            counters
                .lock_waits
                .fetch_add(waits - waits_before, Ordering::Relaxed);
        }
        if let Some(mut s) = guard {
            s.drain(|bytes, to| {
                if let Err(err) = tx.queue(bytes, to) {
                    tracing::debug!(%to, "UDP send: {err}");
                }
            });
        }
        if let Err(err) = tx.flush() {
            tracing::debug!("UDP send: {err}");
        }
        if let Err(err) = received {
            tracing::warn!("UDP receive: {err}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    tracing::debug!(
        index,
        plain,
        datagrams,
        lock_waits = waits,
        "UDP thread done"
    );
}

/// Most messages queued for one control connection; a client that does not read its
/// answers is disconnected rather than allowed to grow the queue.
const OUTBOX: usize = 32;

/// The listener's poll token (connections use their slot).
const LISTENER: Token = Token(usize::MAX);
/// The token of the waker that stops the TCP thread.
const WAKER: Token = Token(usize::MAX - 1);
/// Bytes read per system call, into one buffer for all connections.
const READ_BUF: usize = 4096;
/// Reads for one connection per turn; a connection with more to read waits for the others.
const READS_PER_TURN: usize = 16;
/// How long a connection the server closed may still finish its TLS handshake to hear why.
const LINGER: Duration = Duration::from_secs(5);
/// How often a graceful shutdown looks whether a call is still in progress.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long a graceful shutdown's last words (`close_notify`) may take to be written.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// The TCP thread: accepts control connections, reads them (one buffer for all), writes what
/// the server says when the socket had no room at first, and ticks the server's timer every
/// second, writing the names file (if any) when a name was bound since the last tick.
fn serve_tcp(
    mut poll: Poll,
    mut listener: mio::net::TcpListener,
    shared: &Mutex<Shared>,
    side_sender: &UdpSocket,
    stop: &AtomicBool,
    names_file: Option<&std::path::Path>,
) {
    if let Err(err) = poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
    {
        tracing::error!("TCP listener: {err}");
        return;
    }
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; READ_BUF];
    // Connections that had more to read than one turn allows.
    let mut again: Vec<usize> = Vec::new();
    let mut next_tick = Instant::now();
    let mut accept_paused_until: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_tick {
            {
                let mut s = lock(shared);
                s.server.handle_timeout(now);
                s.close_lingering(now);
                s.drain(|bytes, to| send_side(side_sender, bytes, to));
            }
            save_names(shared, names_file);
            next_tick += Duration::from_secs(1);
            if next_tick <= now {
                next_tick = now + Duration::from_secs(1);
            }
        }
        if accept_paused_until.is_some_and(|t| now >= t) {
            accept_paused_until = accept(&listener, shared, side_sender);
        }
        let deadline = accept_paused_until.map_or(next_tick, |t| t.min(next_tick));
        let timeout = if again.is_empty() {
            deadline.saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        if let Err(err) = poll.poll(&mut events, Some(timeout)) {
            if err.kind() != ErrorKind::Interrupted {
                tracing::warn!("TCP poll: {err}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let retry = std::mem::take(&mut again);
        for event in &events {
            match event.token() {
                LISTENER => {
                    if accept_paused_until.is_none() {
                        accept_paused_until = accept(&listener, shared, side_sender);
                    }
                }
                WAKER => {}
                Token(key) => {
                    if event.is_writable() {
                        let mut s = lock(shared);
                        s.flush(key);
                        s.drain(|bytes, to| send_side(side_sender, bytes, to));
                    }
                    if (event.is_readable() || event.is_read_closed() || event.is_error())
                        && read(key, &mut buf, shared, side_sender)
                    {
                        again.push(key);
                    }
                }
            }
        }
        for key in retry {
            if !again.contains(&key) && read(key, &mut buf, shared, side_sender) {
                again.push(key);
            }
        }
    }
    save_names(shared, names_file);
    let stats = lock(shared).server.stats();
    tracing::info!(?stats, "final counters");
}

/// Accepts every waiting connection. On an error (out of descriptors and the like) returns
/// when to try again: a little later rather than spinning.
fn accept(
    listener: &mio::net::TcpListener,
    shared: &Mutex<Shared>,
    side_sender: &UdpSocket,
) -> Option<Instant> {
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let mut s = lock(shared);
                let tls = match TlsSession::new(s.tls.clone()) {
                    Ok(tls) => tls,
                    Err(err) => {
                        tracing::warn!(%peer, "TLS session: {err}");
                        continue;
                    }
                };
                let key = s.conns.vacant();
                if let Err(err) = s
                    .registry
                    .register(&mut stream, Token(key), Interest::READABLE)
                {
                    tracing::warn!(%peer, "TCP poll registration: {err}");
                    continue;
                }
                let conn = s.conns.insert(stream, tls);
                s.server.handle_tcp_open(Instant::now(), conn, peer);
                s.drain(|bytes, to| send_side(side_sender, bytes, to));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::warn!("TCP accept: {err}");
                return Some(Instant::now() + Duration::from_millis(50));
            }
        }
    }
}

/// Reads what connection `key` has sent, a few buffers' worth: TLS records, decrypted in `buf`,
/// each message to the server (handshake records go back); closes it at the end of the stream,
/// on an error, or when it breaks TLS. True if there may be more to read.
fn read(key: usize, buf: &mut [u8], shared: &Mutex<Shared>, side_sender: &UdpSocket) -> bool {
    let mut s = lock(shared);
    for _ in 0..READS_PER_TURN {
        let Some(c) = s.conns.get_mut(key) else {
            return false;
        };
        let n = match (&c.stream).read(buf) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let open = if n == 0 {
            false
        } else if c.tls.as_ref().is_some_and(TlsSession::is_established) {
            receive(&mut s, key, &mut buf[..n])
        } else {
            // The handshake's public-key crypto runs without the lock, so that the UDP path
            // (relayed media) goes on meanwhile; what the server says to this connection in
            // the meantime waits in its queue.
            let Some(mut tls) = c.tls.take() else {
                return false;
            };
            let conn = c.id;
            drop(s);
            let (mut out, mut data) = (Vec::new(), Vec::new());
            let result = tls.process(&mut buf[..n], &mut VecDeque::new(), false, &mut out, |m| {
                data.extend_from_slice(m);
            });
            s = lock(shared);
            let Some((_, c)) = s.conns.by_id(conn) else {
                return false;
            };
            c.tls = Some(tls);
            match result {
                Ok(Status::Open) => {
                    s.scratch.clear();
                    s.scratch.extend_from_slice(&out);
                    s.write(key);
                    if !data.is_empty() {
                        s.server.handle_tcp_data(Instant::now(), conn, &data);
                    }
                    s.flush(key);
                    true
                }
                Ok(Status::Finished) => false,
                Err(err) => {
                    tracing::debug!(conn, "control connection TLS handshake: {err}");
                    false
                }
            }
        };
        if open {
            // Records to send; then what the server said.
            s.write(key);
            s.drain(|bytes, to| send_side(side_sender, bytes, to));
            continue;
        }
        // End of stream, an error, or broken TLS.
        s.close(key);
        s.drain(|bytes, to| send_side(side_sender, bytes, to));
        return false;
    }
    true
}

/// Decrypts `received` on connection `key`, whose handshake is done, handing each message to
/// the server; the records to send are left in `scratch`. False when the connection is over.
fn receive(s: &mut Shared, key: usize, received: &mut [u8]) -> bool {
    let Shared {
        server,
        conns,
        scratch,
        ..
    } = s;
    let Some(c) = conns.get_mut(key) else {
        return false;
    };
    let Some(tls) = c.tls.as_mut() else {
        return false;
    };
    let (conn, now) = (c.id, Instant::now());
    scratch.clear();
    let mut none = VecDeque::new();
    let plain = c.out.as_mut().map_or(&mut none, |o| &mut o.plain);
    let received = tls.process(received, plain, c.closing, scratch, |message| {
        server.handle_tcp_data(now, conn, message);
    });
    match received {
        Ok(status) => status == Status::Open,
        Err(err) => {
            tracing::debug!(conn, "control connection TLS: {err}");
            false
        }
    }
}
