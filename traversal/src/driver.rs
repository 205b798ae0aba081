//! The tokio driver of [`Client`]: it owns the control connection (TLS 1.3 over TCP, see
//! [`connect_control`]), the UDP media socket
//! and (when measuring the mapping lifetime) a second UDP socket, and runs the state machine.
//!
//! ```no_run
//! # async fn f() -> Result<(), traversal::driver::DriverError> {
//! use traversal::driver::{Driver, Options};
//! let mut driver = Driver::connect("203.0.113.1:3478", Options::default()).await?;
//! let verdict = driver.wait_verdict().await?;
//! // Keep it running while registered: call `next_event` in a loop (or `run_for`).
//! # Ok(()) }
//! ```
//!
//! A later call engine keeps the driver running while registered and shares the media socket
//! ([`Driver::media_socket`]): datagrams the client does not recognise as its own are handed
//! back by [`Driver::next_event`] as [`DriverEvent::Datagram`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::client::{self, Client, Event, Socket};
use crate::control::Verdict;
use crate::stun;
use crate::tls::{self, ClientTrust, Fingerprint};

/// The control connection: TLS 1.3 over TCP.
pub type ControlStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Driver settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time allowed to reach the server and register (TCP connect, welcome, UDP answer).
    pub timeout: Duration,
    /// Fixed keepalive interval; `None` for the default, then the measured one.
    pub keepalive_interval: Option<Duration>,
    /// Measure the mapping lifetime with a second socket.
    pub measure_lifetime: bool,
    /// Probe the mapping before each keepalive.
    pub verify_mapping: bool,
    /// Local address for the media socket; `None` for any address, any port.
    pub media_bind: Option<SocketAddr>,
    /// Longest silence the lifetime measurement tries.
    pub lifetime_max: Duration,
    /// Which server certificates to accept.
    pub trust: ClientTrust,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(5),
            keepalive_interval: None,
            measure_lifetime: false,
            verify_mapping: true,
            media_bind: None,
            lifetime_max: client::LIFETIME_MAX,
            trust: ClientTrust::default(),
        }
    }
}

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("cannot reach the server at {0}: {plain}", plain = crate::plain::io_error(.1))]
    Connect(SocketAddr, std::io::Error),
    #[error("no answer from the server at {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("network error: {plain}", plain = crate::plain::io_error(.0))]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    /// The server's certificate is not the one trusted for it (pinned, or recorded on first
    /// use). Not retried.
    #[error(
        "the server {server} presented a certificate ({presented}) other than the one trusted \
         for it ({pinned}): someone may be intercepting the connection, or the server's operator \
         changed its certificate. If the operator changed it, trust the new one with \
         `pinhole trust-server {server}` (or pin the new fingerprint in the settings)"
    )]
    CertificateChanged {
        server: String,
        pinned: Fingerprint,
        presented: Fingerprint,
    },
    /// Any other failure of the TLS handshake.
    #[error("no secure connection to the server at {0}: {1}")]
    Tls(SocketAddr, String),
}

/// What [`Driver::next_event`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// An event of the state machine.
    Client(Event),
    /// A datagram on the media socket that is not the server's (for a call engine).
    Datagram { from: SocketAddr, data: Vec<u8> },
}

/// Why a name did not resolve, in words ("failed to lookup address information: Name or
/// service not known" is the resolver's).
fn resolve_failure(e: &std::io::Error) -> String {
    let message = e.to_string();
    if message.contains("Name or service not known") || message.contains("No address associated") {
        "no such name (check its spelling)".to_owned()
    } else if message.contains("Temporary failure in name resolution") {
        "the name cannot be looked up just now (is this computer online?)".to_owned()
    } else if message.contains("invalid socket address") {
        "not an address with a port (HOST:PORT)".to_owned()
    } else {
        crate::plain::io_error(e)
    }
}

/// Resolves `HOST:PORT` (or `IP:PORT`) to socket addresses.
pub async fn resolve(server: &str) -> Result<Vec<SocketAddr>, DriverError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(server)
        .await
        .map_err(|e| DriverError::Resolve(server.to_string(), resolve_failure(&e)))?
        .collect();
    if addrs.is_empty() {
        return Err(DriverError::Resolve(
            server.to_string(),
            "no addresses".to_string(),
        ));
    }
    Ok(addrs)
}

/// Resolves `server` and opens the control connection (TCP, then the TLS 1.3 handshake, which
/// accepts the server's certificate only as `trust` says) to the first of its addresses that
/// answers, trying EVERY address in the resolver's order, each within `timeout` for the TCP
/// connect and the handshake together (resolving also gets `timeout`). On failure the error is
/// the last address's (refused, unreachable, timed out, handshake failed), so a name with a dead
/// first address still reaches the server behind the second; but a certificate other than the
/// trusted one stops at once with [`DriverError::CertificateChanged`]. Returns the connection
/// and the address it reached.
pub async fn connect_control(
    server: &str,
    timeout: Duration,
    trust: &ClientTrust,
) -> Result<(ControlStream, SocketAddr), DriverError> {
    connect_control_after_loss(server, timeout, trust, None).await
}

/// [`connect_control`] again after the connection to `lost` (an address of `server`) was lost:
/// when the name has other addresses, `lost` is tried after them, so that a name with several
/// addresses (nodes of one service) moves to another node at once rather than waiting for the
/// dead one's timeout first.
pub async fn connect_control_after_loss(
    server: &str,
    timeout: Duration,
    trust: &ClientTrust,
    lost: Option<SocketAddr>,
) -> Result<(ControlStream, SocketAddr), DriverError> {
    let mut addrs = tokio::time::timeout(timeout, resolve(server))
        .await
        .map_err(|_| DriverError::Resolve(server.to_string(), "timed out".into()))??;
    put_last(&mut addrs, lost);
    connect_any(server, &addrs, timeout, trust).await
}

/// Moves `lost` to the end of `addrs` (keeping the others' order), when it is there.
fn put_last(addrs: &mut Vec<SocketAddr>, lost: Option<SocketAddr>) {
    if let Some(at) = lost.and_then(|lost| addrs.iter().position(|a| *a == lost)) {
        let lost = addrs.remove(at);
        addrs.push(lost);
    }
}

/// [`connect_control`] after resolving: each of `addrs` in turn, each within `timeout`.
async fn connect_any(
    server: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
    trust: &ClientTrust,
) -> Result<(ControlStream, SocketAddr), DriverError> {
    let name = tls::server_name(server).map_err(|e| DriverError::Resolve(server.to_string(), e))?;
    let config = tls::client_config(server, trust)
        .map_err(|e| DriverError::Protocol(format!("TLS configuration: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut last_err = DriverError::Resolve(server.to_string(), "no addresses".to_string());
    for &addr in addrs {
        let attempt = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| DriverError::Connect(addr, e))?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| handshake_error(addr, &e))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(tls)) => return Ok((tls, addr)),
            Ok(Err(e @ DriverError::CertificateChanged { .. })) => return Err(e),
            Ok(Err(e)) => {
                tracing::debug!("control connection to {addr}: {e}");
                last_err = e;
            }
            Err(_) => {
                tracing::debug!("control connection to {addr}: no answer within {timeout:?}");
                last_err = DriverError::Timeout(addr, timeout);
            }
        }
    }
    Err(last_err)
}

/// The fingerprint of the certificate `server` presents, whatever it is (nothing is recorded):
/// for a user to compare with the one the server's operator publishes before trusting it (what
/// `pinhole trust-server` shows).
pub async fn presented_fingerprint(
    server: &str,
    timeout: Duration,
) -> Result<Fingerprint, DriverError> {
    let (tls, addr) = connect_control(server, timeout, &ClientTrust::default()).await?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| Fingerprint::of(cert))
        .ok_or_else(|| DriverError::Tls(addr, "the server presented no certificate".into()))
}

/// A failed handshake in plain words.
fn handshake_error(addr: SocketAddr, e: &std::io::Error) -> DriverError {
    if let Some(changed) = tls::certificate_changed(e) {
        return DriverError::CertificateChanged {
            server: changed.server.clone(),
            pinned: changed.pinned,
            presented: changed.presented,
        };
    }
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let detail = match rustls_error {
        Some(rustls::Error::InvalidMessage(_)) => {
            "it does not speak TLS (a server older than this client?)".to_string()
        }
        Some(rustls::Error::AlertReceived(alert)) => format!("the server refused it ({alert:?})"),
        Some(other) => other.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".to_string()
        }
        None => e.to_string(),
    };
    DriverError::Tls(addr, detail)
}

/// Every local interface address, IPv4 and IPv6 (empty if the system will not say).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// The running client.
#[derive(Debug)]
pub struct Driver {
    client: Client,
    server: SocketAddr,
    tcp: ControlStream,
    media: Arc<UdpSocket>,
    test: Option<UdpSocket>,
    local_addresses: Vec<IpAddr>,
    tcp_closed: bool,
    pending: VecDeque<DriverEvent>,
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Driver {
    /// Resolves `server`, connects the control connection, binds the sockets and starts the
    /// exchange. Fails within `options.timeout` when the server cannot be reached.
    pub async fn connect(server: &str, options: Options) -> Result<Self, DriverError> {
        let (tcp, addr) = connect_control(server, options.timeout, &options.trust).await?;
        Self::start(tcp, addr, options).await
    }

    async fn start(
        tcp: ControlStream,
        server: SocketAddr,
        options: Options,
    ) -> Result<Self, DriverError> {
        let access = tcp.get_ref().0.local_addr()?;
        let media = UdpSocket::bind(
            options
                .media_bind
                .unwrap_or_else(|| unspecified_like(server)),
        )
        .await?;
        let test = if options.measure_lifetime {
            Some(UdpSocket::bind(unspecified_like(server)).await?)
        } else {
            None
        };
        let local_addresses = local_addresses();
        let mut config = client::Config::new(server, access, media.local_addr()?.port());
        config.local_addresses = local_addresses.clone();
        config.keepalive_interval = options.keepalive_interval;
        config.measure_lifetime = options.measure_lifetime;
        config.verify_mapping = options.verify_mapping;
        config.lifetime_max = options.lifetime_max;
        config.register_timeout = options.timeout;
        config.seed = seed();
        Ok(Driver {
            client: Client::new(config),
            server,
            tcp,
            media: Arc::new(media),
            test,
            local_addresses,
            tcp_closed: false,
            pending: VecDeque::new(),
        })
    }

    /// The state machine, for its state and counters.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The state machine, to ask it things ([`Client::check_reachability`]).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The local addresses listed to the server.
    pub fn local_addresses(&self) -> &[IpAddr] {
        &self.local_addresses
    }

    /// The media socket, shared: a call engine sends RTP from it so that it uses the mapping
    /// this driver keeps alive.
    pub fn media_socket(&self) -> Arc<UdpSocket> {
        self.media.clone()
    }

    /// Runs until the next event.
    pub async fn next_event(&mut self) -> Result<DriverEvent, DriverError> {
        let mut tcp_buf = [0u8; 4096];
        let mut media_buf = [0u8; 2048];
        let mut test_buf = [0u8; 2048];
        loop {
            self.flush().await?;
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            if let Some(e) = self.client.poll_event() {
                return Ok(DriverEvent::Client(e));
            }
            let deadline = self
                .client
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let test = self.test.as_ref();
            let tcp_closed = self.tcp_closed;
            tokio::select! {
                read = self.tcp.read(&mut tcp_buf), if !tcp_closed => {
                    self.handle_tcp_read(read, &tcp_buf);
                }
                received = self.media.recv_from(&mut media_buf) => {
                    // ICMP errors from earlier sends surface here on Linux: not fatal.
                    if let Ok((n, from)) = received {
                        let data = &media_buf[..n];
                        if is_for_client(from, self.server, data) {
                            self.client.handle_udp(Instant::now(), Socket::Media, from, data);
                        } else {
                            self.pending.push_back(DriverEvent::Datagram { from, data: data.to_vec() });
                        }
                    }
                }
                received = async {
                    match test {
                        Some(s) => s.recv_from(&mut test_buf).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok((n, from)) = received {
                        self.client.handle_udp(Instant::now(), Socket::Test, from, &test_buf[..n]);
                    }
                }
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.client.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Runs until the verdict (S8/S10), or fails.
    pub async fn wait_verdict(&mut self) -> Result<(Verdict, SocketAddr), DriverError> {
        loop {
            match self.next_event().await? {
                DriverEvent::Client(Event::Verdict { verdict, mapped }) => {
                    return Ok((verdict, mapped));
                }
                DriverEvent::Client(Event::Failed { reason }) => {
                    return Err(DriverError::Protocol(reason));
                }
                _ => {}
            }
        }
    }

    /// Runs for `duration`, calling `on_event` for each event; stops early with an error on
    /// [`Event::Failed`], or when `on_event` returns true.
    pub async fn run_for(
        &mut self,
        duration: Duration,
        mut on_event: impl FnMut(&Event) -> bool,
    ) -> Result<(), DriverError> {
        let end = tokio::time::Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(end, self.next_event()).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(DriverEvent::Client(Event::Failed { reason }))) => {
                    return Err(DriverError::Protocol(reason));
                }
                Ok(Ok(DriverEvent::Client(e))) => {
                    if on_event(&e) {
                        return Ok(());
                    }
                }
                Ok(Ok(DriverEvent::Datagram { .. })) => {}
            }
        }
    }

    /// Hands what the control connection read to the client: bytes, or the end (EOF, error).
    fn handle_tcp_read(&mut self, read: std::io::Result<usize>, buf: &[u8]) {
        let now = Instant::now();
        match read.ok().and_then(|n| buf.get(..n)) {
            Some(bytes) if !bytes.is_empty() => self.client.handle_tcp(now, bytes),
            _ => {
                self.tcp_closed = true;
                self.client.handle_tcp_closed(now);
            }
        }
    }

    /// Says goodbye to the server and closes the connection.
    pub async fn close(mut self) {
        self.client.close();
        let _ = self.flush().await;
        let _ = self.tcp.shutdown().await;
    }

    async fn flush(&mut self) -> Result<(), DriverError> {
        if let Some(bytes) = self.client.poll_tcp()
            && !self.tcp_closed
            && let Err(e) = self.tcp.write_all(&bytes).await
        {
            self.tcp_closed = true;
            self.client.handle_tcp_closed(Instant::now());
            tracing::debug!("control connection: {e}");
        }
        while let Some(t) = self.client.poll_transmit() {
            let socket = match (t.socket, &self.test) {
                (Socket::Test, Some(test)) => test,
                _ => &*self.media,
            };
            if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                tracing::debug!(to = %t.destination, "UDP send: {e}");
            }
        }
        Ok(())
    }
}

/// A datagram from the server's address (any port: probes may come from its alternate port)
/// that looks like STUN is the client's; anything else is left to the caller (RFC 7983
/// demultiplexing by first byte: STUN starts with 0 to 3).
fn is_for_client(from: SocketAddr, server: SocketAddr, data: &[u8]) -> bool {
    crate::addr::normalize(from.ip()) == crate::addr::normalize(server.ip())
        && data.first().is_some_and(|b| *b < 4)
}

/// What a plain STUN server told us.
#[derive(Debug, Clone)]
pub struct StunResult {
    pub server: SocketAddr,
    pub local: SocketAddr,
    pub mapped: SocketAddr,
}

/// Asks a standard STUN server (RFC 8489 Binding) for the mapped address of a fresh socket,
/// retransmitting (RFC 8489 section 6.2.1, with a shorter first timeout) until `timeout`.
pub async fn stun_binding(server: &str, timeout: Duration) -> Result<StunResult, DriverError> {
    let addrs = tokio::time::timeout(timeout, resolve(server))
        .await
        .map_err(|_| DriverError::Resolve(server.to_string(), "timed out".into()))??;
    let server = addrs[0];
    let socket = UdpSocket::bind(unspecified_like(server)).await?;
    let tid: stun::TransactionId = {
        let mut t = [0u8; 12];
        let _ = getrandom::fill(&mut t);
        t
    };
    let request = stun::encode_binding_request(&tid);
    let end = tokio::time::Instant::now() + timeout;
    let mut rto = Duration::from_millis(250);
    let mut buf = [0u8; 2048];
    loop {
        if let Err(e) = socket.send_to(&request, server).await {
            return Err(DriverError::Connect(server, e));
        }
        let wait = (tokio::time::Instant::now() + rto).min(end);
        loop {
            match tokio::time::timeout_at(wait, socket.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(DriverError::Connect(server, e));
                }
                Ok(Err(_)) => continue,
                Ok(Ok((n, from))) => {
                    if from != server {
                        continue;
                    }
                    let Ok(m) = stun::Message::decode(&buf[..n]) else {
                        continue;
                    };
                    if m.kind != stun::BINDING_SUCCESS || m.transaction_id != tid {
                        continue;
                    }
                    if let Ok(Some(mapped)) = m.xor_mapped_address() {
                        let mapped =
                            SocketAddr::new(crate::addr::normalize(mapped.ip()), mapped.port());
                        return Ok(StunResult {
                            server,
                            local: socket.local_addr()?,
                            mapped,
                        });
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= end {
            return Err(DriverError::Timeout(server, timeout));
        }
        rto = (rto * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback address whose SYNs go unanswered: a listener with a backlog of 0 whose accept
    /// queue is filled and never drained (Linux then drops further SYNs), so a connect to it
    /// times out. Returns the listener and the fillers, to keep alive while the address is used.
    async fn silent_address() -> (tokio::net::TcpListener, Vec<TcpStream>, SocketAddr) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => fillers.push(tcp),
                Ok(Err(e)) => panic!("connect to the filling listener: {e}"),
                Err(_) => return (listener, fillers, addr),
            }
        }
        panic!("the listener with a full backlog still accepted 8 connections");
    }

    /// A loopback address nobody listens on (connects are refused at once).
    fn refused_address() -> SocketAddr {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    }

    /// A TLS server on loopback with a fresh certificate, answering every handshake; returns
    /// its address and a trust that pins its certificate.
    async fn tls_server() -> (SocketAddr, ClientTrust) {
        let identity = tls::ServerIdentity::generate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 64];
                        let _ = tls.read(&mut buf).await;
                    }
                });
            }
        });
        let trust = ClientTrust {
            pinned: Some(identity.fingerprint()),
            known_servers: None,
        };
        (addr, trust)
    }

    #[tokio::test]
    async fn connect_tries_every_address_past_one_that_times_out() {
        let (_silent, _fillers, silent) = silent_address().await;
        let (good_addr, trust) = tls_server().await;
        let timeout = Duration::from_millis(300);

        let started = Instant::now();
        let (tls, reached) = connect_any("test", &[silent, good_addr], timeout, &trust)
            .await
            .unwrap();
        assert_eq!(reached, good_addr);
        assert_eq!(tls.get_ref().0.peer_addr().unwrap(), good_addr);
        assert!(
            started.elapsed() >= timeout,
            "the silent address was given its full timeout first"
        );
    }

    #[test]
    fn an_address_lost_is_tried_last() {
        let a: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:3478".parse().unwrap();
        let c: SocketAddr = "[2001:db8::3]:3478".parse().unwrap();
        let mut addrs = vec![a, b, c];
        put_last(&mut addrs, Some(a));
        assert_eq!(addrs, [b, c, a]);
        put_last(&mut addrs, None);
        assert_eq!(addrs, [b, c, a]);
        put_last(&mut addrs, Some("192.0.2.9:3478".parse().unwrap()));
        assert_eq!(
            addrs,
            [b, c, a],
            "not an address of the name: nothing moves"
        );
        let mut one = vec![a];
        put_last(&mut one, Some(a));
        assert_eq!(one, [a]);
    }

    #[tokio::test]
    async fn after_a_loss_the_other_addresses_come_first() {
        // The lost address goes silent (a dead node): tried last, it costs no timeout.
        let (_silent, _fillers, silent) = silent_address().await;
        let (good_addr, trust) = tls_server().await;
        let timeout = Duration::from_millis(500);
        let mut addrs = vec![silent, good_addr];
        put_last(&mut addrs, Some(silent));
        let started = Instant::now();
        let (_tls, reached) = connect_any("test", &addrs, timeout, &trust).await.unwrap();
        assert_eq!(reached, good_addr);
        assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn connect_reports_the_last_addresss_error() {
        let (_silent, _fillers, silent) = silent_address().await;
        let refused = refused_address();
        let timeout = Duration::from_millis(200);
        let trust = ClientTrust::default();

        match connect_any("test", &[refused, silent], timeout, &trust).await {
            Err(DriverError::Timeout(addr, t)) => {
                assert_eq!((addr, t), (silent, timeout));
            }
            other => panic!("expected the silent address's timeout, got {other:?}"),
        }
        match connect_any("test", &[silent, refused], timeout, &trust).await {
            Err(DriverError::Connect(addr, _)) => assert_eq!(addr, refused),
            other => panic!("expected the refused address's error, got {other:?}"),
        }
        match connect_any("test", &[], timeout, &trust).await {
            Err(DriverError::Resolve(name, _)) => assert_eq!(name, "test"),
            other => panic!("expected no address, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_control_resolves_a_name() {
        // `localhost` may also resolve to ::1 (refused here), before or after 127.0.0.1.
        let (good_addr, trust) = tls_server().await;
        let name = format!("localhost:{}", good_addr.port());
        let (_tls, reached) = connect_control(&name, Duration::from_secs(2), &trust)
            .await
            .unwrap();
        assert_eq!(reached, good_addr);
    }

    #[tokio::test]
    async fn the_presented_fingerprint_is_the_servers() {
        let (addr, trust) = tls_server().await;
        let presented = presented_fingerprint(&addr.to_string(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(Some(presented), trust.pinned);
    }

    #[tokio::test]
    async fn a_plaintext_server_is_no_control_connection() {
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = plain.accept().await {
                let mut buf = [0u8; 512];
                let _ = tcp.read(&mut buf).await;
                // What an old server says to bytes it cannot parse: a frame, in clear.
                let _ = tcp.write_all(b"\x00\x00\x00\x10{\"type\":\"error\"}").await;
            }
        });
        match connect_any(
            "test",
            &[addr],
            Duration::from_secs(2),
            &ClientTrust::default(),
        )
        .await
        {
            Err(DriverError::Tls(at, detail)) => {
                assert_eq!(at, addr);
                assert!(detail.contains("does not speak TLS"), "{detail}");
            }
            other => panic!("expected a TLS failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_changed_certificate_stops_at_once_with_both_fingerprints() {
        let (first, trust) = tls_server().await;
        let (second, second_trust) = tls_server().await;
        // Pinned to the second server's certificate, the first address presents another one:
        // the second address is not tried.
        let err = connect_any(
            "test:3478",
            &[first, second],
            Duration::from_secs(2),
            &second_trust,
        )
        .await
        .unwrap_err();
        match &err {
            DriverError::CertificateChanged {
                server,
                pinned,
                presented,
            } => {
                assert_eq!(server, "test:3478");
                assert_eq!(Some(*pinned), second_trust.pinned);
                assert_eq!(Some(*presented), trust.pinned);
            }
            other => panic!("expected CertificateChanged, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("pinhole trust-server test:3478"),
            "{message}"
        );
    }
}
