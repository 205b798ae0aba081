//! The rendezvous server's I/O: runs [`Server`] on real sockets, on threads of its own.
//!
//! [`spawn`] binds one port for UDP and TCP and returns a [`Rendezvous`] handle; dropping the
//! handle (or [`Rendezvous::stop`]) shuts the server down. The `pinhole-rendezvous` binary is
//! this plus flags, logging and signals; the app can embed the same server.
//!
//! Threads:
//! - `udp`: the hot path, batched `recvmmsg`/`sendmmsg` ([`crate::udp_batch`]): plain STUN
//!   Binding Requests are answered without any lock; Pinhole messages lock the server once per
//!   batch;
//! - `rendezvous-tcp`: a current-thread tokio runtime that accepts control connections (one
//!   task each) and ticks the server's timer every second, writing the names file (if any)
//!   when a name was bound since the last tick, and once more on the way out.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, oneshot};

use crate::server::{self, ConnId, Server, Stats, TcpOutput};
use crate::{stun, udp_batch};

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct RendezvousConfig {
    /// UDP and TCP address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The server's settings.
    pub server: server::Config,
    /// Datagrams per system call on the UDP path.
    pub batch: usize,
    /// Where the name table is kept across restarts (`None`: in memory only).
    pub names_file: Option<PathBuf>,
}

impl RendezvousConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        RendezvousConfig {
            listen,
            server: server::Config::default(),
            batch: 32,
            names_file: None,
        }
    }
}

/// A running server. Dropping it stops the server.
#[derive(Debug)]
pub struct Rendezvous {
    addr: SocketAddr,
    alternate_addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    tcp_stop: Option<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
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

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).server.stats()
    }

    /// Stops the server and waits for its threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.tcp_stop.take() {
            let _ = tx.send(());
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a rendezvous thread panicked");
            }
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `config.listen` (UDP, then TCP on the same port) and starts serving.
pub fn spawn(config: RendezvousConfig) -> std::io::Result<Rendezvous> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| std::io::Error::other(format!("random bytes: {e}")))?;
    let udp = UdpSocket::bind(config.listen)?;
    let addr = udp.local_addr()?;
    // A second port for RFC 5780's filtering test: same address, any free port.
    let alternate = UdpSocket::bind(SocketAddr::new(config.listen.ip(), 0))?;
    let alternate_addr = alternate.local_addr()?;
    let mut server_config = config.server.clone();
    server_config.alternate_port = true;
    let mut server = Server::new(server_config, secret);
    if let Some(path) = &config.names_file {
        let names = crate::calls::read_names_file(path)?;
        tracing::info!(names = names.len(), path = %path.display(), "names loaded");
        server.calls_mut().load_names(names);
    }
    let shared = Arc::new(Mutex::new(Shared {
        server,
        alternate: Some(alternate),
        conns: HashMap::new(),
    }));
    let std_tcp = std::net::TcpListener::bind(addr)?;
    std_tcp.set_nonblocking(true)?;
    let side_sender = Arc::new(udp.try_clone()?);
    let (rx, tx) = udp_batch::split(udp, config.batch)?;
    let stop = Arc::new(AtomicBool::new(false));
    let udp_thread = {
        let shared = shared.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("udp".into())
            .spawn(move || serve_udp(rx, tx, &shared, &stop))?
    };
    let (tcp_stop, tcp_stopped) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tcp_thread = {
        let shared = shared.clone();
        let names_file = config.names_file.clone();
        std::thread::Builder::new()
            .name("rendezvous-tcp".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(std_tcp) {
                        Ok(tcp) => {
                            serve_tcp_listener(tcp, shared, side_sender, tcp_stopped, names_file)
                                .await;
                        }
                        Err(err) => tracing::error!("TCP listener: {err}"),
                    }
                });
            })?
    };
    Ok(Rendezvous {
        addr,
        alternate_addr,
        shared,
        stop,
        tcp_stop: Some(tcp_stop),
        threads: vec![udp_thread, tcp_thread],
    })
}

async fn serve_tcp_listener(
    tcp: tokio::net::TcpListener,
    shared: Arc<Mutex<Shared>>,
    side_sender: Arc<UdpSocket>,
    mut stopped: oneshot::Receiver<()>,
    names_file: Option<PathBuf>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next_conn: ConnId = 1;
    loop {
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = next_conn;
                    next_conn += 1;
                    tokio::spawn(serve_tcp(stream, peer, conn, shared.clone(), side_sender.clone()));
                }
                Err(err) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!("TCP accept: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tick.tick() => {
                {
                    let mut s = lock(&shared);
                    s.server.handle_timeout(Instant::now());
                    s.drain(|bytes, to| send_side(&side_sender, bytes, to));
                }
                save_names(&shared, names_file.as_deref());
            }
            _ = &mut stopped => break,
        }
    }
    save_names(&shared, names_file.as_deref());
    let stats = lock(&shared).server.stats();
    tracing::info!(?stats, "final counters");
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
    if let Err(err) = crate::calls::write_names_file(path, &names) {
        tracing::warn!(path = %path.display(), "writing the names file: {err}");
        lock(shared).server.calls_mut().mark_names_changed();
    }
}

/// What the UDP thread and the TCP tasks share: the server and the write side of every control
/// connection.
#[derive(Debug)]
struct Shared {
    server: Server,
    /// The alternate port's socket, for probes that test filtering (never read).
    alternate: Option<UdpSocket>,
    conns: HashMap<ConnId, Outbox>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock would be a bug; keep serving with the state as it is.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the server has to say on one control connection, waiting for its task. Kept inside
/// [`Shared`] (no channel per connection: a tokio channel costs about a kilobyte even when
/// idle).
#[derive(Debug)]
struct Outbox {
    queue: VecDeque<Vec<u8>>,
    /// Close after writing what is queued.
    closing: bool,
    wake: Arc<Notify>,
}

impl Shared {
    /// Hands every queued TCP output to its connection and every datagram to `send`.
    fn drain(&mut self, mut send: impl FnMut(&[u8], SocketAddr)) {
        while let Some(t) = self.server.poll_transmit() {
            if t.from_alternate {
                if let Some(alternate) = &self.alternate {
                    send_side(alternate, &t.contents, t.destination);
                }
            } else {
                send(&t.contents, t.destination);
            }
        }
        while let Some(out) = self.server.poll_tcp() {
            match out {
                TcpOutput::Send { conn, bytes } => {
                    if let Some(out) = self.conns.get_mut(&conn) {
                        if out.queue.len() >= OUTBOX {
                            tracing::debug!(conn, "control connection not reading: closed");
                            out.queue.clear();
                            out.closing = true;
                        } else if !out.closing {
                            out.queue.push_back(bytes);
                        }
                        out.wake.notify_one();
                    }
                }
                TcpOutput::Close { conn } => {
                    if let Some(out) = self.conns.get_mut(&conn) {
                        // After everything queued before.
                        out.closing = true;
                        out.wake.notify_one();
                    }
                }
            }
        }
    }
}

fn send_side(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(err) = socket.send_to(bytes, to) {
        tracing::debug!(%to, "UDP send: {err}");
    }
}

/// The UDP hot path: answers plain Binding Requests without touching shared state, and hands
/// Pinhole messages to the server under one lock per batch.
fn serve_udp(
    mut rx: udp_batch::RecvBatch,
    mut tx: udp_batch::SendBatch,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let mut answer = [0u8; 44];
    let mut plain: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut guard: Option<MutexGuard<'_, Shared>> = None;
        let mut now: Option<Instant> = None;
        let received = rx.recv_batch(Duration::from_millis(100), |data, from| {
            if let Some(n) = stun::answer_plain_binding(data, from, &mut answer) {
                plain += 1;
                if let Err(err) = tx.queue(&answer[..n], from) {
                    tracing::debug!(%from, "UDP send: {err}");
                }
                return;
            }
            let now = *now.get_or_insert_with(Instant::now);
            let s = guard.get_or_insert_with(|| lock(shared));
            s.server.handle_udp(now, from, data);
        });
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
    tracing::debug!(plain, "UDP thread done");
}

/// Most messages queued for one control connection; a client that does not read its
/// answers is disconnected rather than allowed to grow the queue.
const OUTBOX: usize = 32;

/// One control connection, in one task: bytes in go to the server; the server's bytes come
/// back through its [`Outbox`] in `Shared::conns`. The read buffer lives on the stack only
/// while a read is handled, so an idle connection holds no buffer.
async fn serve_tcp(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    shared: Arc<Mutex<Shared>>,
    side_sender: Arc<UdpSocket>,
) {
    let _ = stream.set_nodelay(true);
    let wake = Arc::new(Notify::new());
    {
        let mut s = lock(&shared);
        s.conns.insert(
            conn,
            Outbox {
                queue: VecDeque::new(),
                closing: false,
                wake: wake.clone(),
            },
        );
        s.server.handle_tcp_open(Instant::now(), conn, peer);
        s.drain(|bytes, to| send_side(&side_sender, bytes, to));
    }
    'serve: loop {
        tokio::select! {
            readable = stream.readable() => {
                if readable.is_err() {
                    break;
                }
                let mut buf = [0u8; 4096];
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut s = lock(&shared);
                        s.server.handle_tcp_data(Instant::now(), conn, &buf[..n]);
                        s.drain(|bytes, to| send_side(&side_sender, bytes, to));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            () = wake.notified() => {
                let (queue, closing) = {
                    let mut s = lock(&shared);
                    match s.conns.get_mut(&conn) {
                        Some(out) => (std::mem::take(&mut out.queue), out.closing),
                        None => (VecDeque::new(), true),
                    }
                };
                for bytes in queue {
                    if stream.write_all(&bytes).await.is_err() {
                        break 'serve;
                    }
                }
                if closing {
                    let _ = stream.shutdown().await;
                    break;
                }
            }
        }
    }
    let mut s = lock(&shared);
    s.server.handle_tcp_closed(Instant::now(), conn);
    s.conns.remove(&conn);
    s.drain(|bytes, to| send_side(&side_sender, bytes, to));
    tracing::debug!(%peer, conn, "control connection closed");
}
