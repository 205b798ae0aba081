//! The rendezvous server's logic, sans-IO: the patent's server S.
//!
//! The driver (the `pinhole-rendezvous` binary, or the lab in tests) feeds it TCP connection
//! events, TCP bytes, UDP datagrams and timer ticks, each with `now`, and after every input
//! drains [`Server::poll_transmit`] (datagrams to send) and [`Server::poll_tcp`] (bytes to
//! write to, or connections to close). [`Server::poll_timeout`] says when to call
//! [`Server::handle_timeout`] next.
//!
//! What it does:
//! - S2/S3: on [`ClientMessage::Hello`] it creates a registration with a server-assigned user
//!   index and a random key, and answers whether the access address the client reported is the
//!   one it sees (`private_network`).
//! - S5/S6: on [`ClientMessage::Addresses`] it keeps at most [`MAX_P4_TARGETS`] listed
//!   addresses that are public unicast (after [`addr::normalize`]); on the first authenticated
//!   UDP request it answers to the observed address, and sends the P4 acknowledgement to each
//!   kept listed address once per registration, never bigger than the request, behind a
//!   per-source token bucket. `allow_private_targets` (tests only) also admits loopback and
//!   private addresses, never multicast, broadcast or unspecified ones.
//! - S11-S14: the mapping table, refreshed by each authenticated request (keepalive), with idle
//!   expiry; probes through a mapping on request ([`ClientMessage::Probe`], the patent's P7).
//! - A request may move a mapping to a new address only if its sequence number (masked in
//!   the transaction id, see [`crate::wire::sequence_mask`]) is higher than any seen: replayed
//!   requests are dropped and counted.
//! - With `alternate_port`, a probe can leave from the driver's second socket (RFC 5780's
//!   filtering test): [`Transmit::from_alternate`].
//! - Plain RFC 8489 Binding Requests get a plain answer; drivers call
//!   [`crate::stun::answer_plain_binding`] first, without locking the server.
//!
//! - Names, calls, the relay and the echo service (docs/calls.md) are [`crate::calls::Calls`]:
//!   the server hands it the call messages, each connection's challenge (sent in `Welcome`), the
//!   media mapping of each registration, and relay frames (first byte 64-79), and sends what it
//!   answers. A registration that closes, or whose mapping expires, ends its call.
//!
//! Memory is bounded: at most `max_registrations` registrations and as many TCP connections
//! (pending ones are closed after [`HELLO_TIMEOUT`]), a fixed table of token buckets, and
//! nothing is allocated for a datagram that fails to authenticate. [`Server::memory_estimate`]
//! gives the bytes held per registration.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::addr;
use crate::calls::{CallStats, Calls, CallsConfig};
use crate::control::{
    self, ClientMessage, FrameDecoder, MAX_LISTED_ADDRESSES, PROTOCOL_VERSION, ProbeTarget,
    ServerMessage, Verdict,
};
use crate::stun;
use crate::wire::{Flags, UdpMessage};

/// Most listed addresses the P4 acknowledgement goes to (besides the observed address).
pub const MAX_P4_TARGETS: usize = 3;
/// A TCP connection that has not said hello within this time is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the per-registration MESSAGE-INTEGRITY key.
pub const KEY_LEN: usize = 16;
/// Slots in the per-source token bucket table (sources hash into it; collisions share).
const BUCKETS: usize = 4096;
/// Minimum time between two probes of one registration.
const PROBE_SPACING: Duration = Duration::from_millis(100);

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cap on registrations (and on TCP connections).
    pub max_registrations: usize,
    /// A mapping with no UDP from it for this long is forgotten.
    pub idle_timeout: Duration,
    /// Test only: allow P4 to loopback and private listed addresses.
    pub allow_private_targets: bool,
    /// Token bucket for unsolicited sends (P4 to listed addresses) per source address: burst.
    pub bucket_burst: u32,
    /// Token bucket refill, tokens per second.
    pub bucket_rate: u32,
    /// The driver has a second UDP socket on another port for [`Transmit::from_alternate`].
    pub alternate_port: bool,
    /// Names, calls and the relay.
    pub calls: CallsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_registrations: 100_000,
            idle_timeout: Duration::from_secs(180),
            allow_private_targets: false,
            bucket_burst: 12,
            bucket_rate: 4,
            alternate_port: false,
            calls: CallsConfig::default(),
        }
    }
}

/// Identifies one TCP connection; chosen by the driver.
pub type ConnId = u64;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    /// Send from the alternate port (a second UDP socket of the server, on another port),
    /// not from the main one: RFC 5780's filtering test.
    pub from_alternate: bool,
}

/// Something to do on a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOutput {
    /// Write these bytes.
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Close the connection (after writing what was queued before).
    Close { conn: ConnId },
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub registrations: usize,
    pub connections: usize,
    pub udp_malformed: u64,
    pub udp_unknown_user: u64,
    pub udp_auth_failed: u64,
    pub udp_too_small: u64,
    pub udp_replayed: u64,
    pub p4_sent: u64,
    pub p4_refused: u64,
    pub rate_limited: u64,
    pub probes_sent: u64,
    pub mappings_expired: u64,
    pub refused_full: u64,
    /// Names, calls and relay counters (drops included).
    pub calls: CallStats,
}

/// One registration: kept small (no heap) so that 100,000 of them stay well under 1 KiB each.
#[derive(Debug, Clone)]
struct Registration {
    key: [u8; KEY_LEN],
    conn: ConnId,
    mapped: Option<SocketAddr>,
    last_seen: Instant,
    test_mapped: Option<SocketAddr>,
    test_last_seen: Instant,
    listed: [Option<SocketAddr>; MAX_P4_TARGETS],
    listed_known: bool,
    p4_done: bool,
    last_request_len: u16,
    last_request_tid: stun::TransactionId,
    /// Highest request sequence accepted from the media socket and from the test socket.
    last_sequence: [u64; 2],
    sequence_mask: u64,
    last_probe: [Option<Instant>; 3],
    verdict: Option<Verdict>,
}

#[derive(Debug)]
struct Connection {
    peer: SocketAddr,
    opened: Instant,
    decoder: FrameDecoder,
    user_index: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    spent_milli: u64,
    stamp_ms: u64,
}

/// The server state machine.
#[derive(Debug)]
pub struct Server {
    config: Config,
    secret: [u8; 32],
    counter: u64,
    epoch: Option<Instant>,
    registrations: HashMap<u32, Registration>,
    connections: HashMap<ConnId, Connection>,
    buckets: Box<[Bucket]>,
    transmits: VecDeque<Transmit>,
    tcp: VecDeque<TcpOutput>,
    stats: Stats,
    calls: Calls,
}

impl Server {
    /// A server with no registrations. `secret` seeds user indexes and keys: give it 32 bytes
    /// from the operating system's random source (tests may give a constant).
    pub fn new(config: Config, secret: [u8; 32]) -> Self {
        // The call router's seed: PRF blocks at counters the identities never reach.
        let mut calls_secret = [0u8; 32];
        calls_secret[..20].copy_from_slice(&prf(&secret, u64::MAX));
        calls_secret[20..].copy_from_slice(&prf(&secret, u64::MAX - 1)[..12]);
        Server {
            calls: Calls::new(config.calls.clone(), calls_secret),
            config,
            secret,
            counter: 0,
            epoch: None,
            registrations: HashMap::new(),
            connections: HashMap::new(),
            buckets: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
            transmits: VecDeque::new(),
            tcp: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            registrations: self.registrations.len(),
            connections: self.connections.len(),
            calls: self.calls.stats(),
            ..self.stats
        }
    }

    /// The call router (names, calls, relay).
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// The call router, to load or save the name table.
    pub fn calls_mut(&mut self) -> &mut Calls {
        &mut self.calls
    }

    /// Number of registrations.
    pub fn registrations(&self) -> usize {
        self.registrations.len()
    }

    /// The current mapping of a user, if the server has one.
    pub fn mapping(&self, user_index: u32) -> Option<SocketAddr> {
        self.registrations.get(&user_index).and_then(|r| r.mapped)
    }

    /// Bytes the server holds for its registrations and connections: table entries
    /// (with the hash tables' spare capacity) plus the frame buffers' heap. Divide by
    /// [`Server::registrations`] for the per-registration figure.
    pub fn memory_estimate(&self) -> usize {
        let reg = self.registrations.capacity()
            * (std::mem::size_of::<u32>() + std::mem::size_of::<Registration>() + 1);
        let conn = self.connections.capacity()
            * (std::mem::size_of::<ConnId>() + std::mem::size_of::<Connection>() + 1);
        let buffers: usize = self
            .connections
            .values()
            .map(|c| c.decoder.capacity())
            .sum();
        reg + conn + buffers + self.calls.memory_estimate()
    }

    /// Size of one registration entry and one connection entry, without hash table overhead.
    pub fn entry_sizes() -> (usize, usize) {
        (
            std::mem::size_of::<Registration>(),
            std::mem::size_of::<Connection>(),
        )
    }

    /// A TCP connection was accepted from `peer`. Returns false (and queues a close) when the
    /// server is full.
    pub fn handle_tcp_open(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) -> bool {
        self.epoch.get_or_insert(now);
        if self.connections.len() >= self.config.max_registrations {
            self.stats.refused_full += 1;
            self.send(
                conn,
                &ServerMessage::Error {
                    code: "server_full".into(),
                    message: "the server has no room for more registrations".into(),
                },
            );
            self.tcp.push_back(TcpOutput::Close { conn });
            return false;
        }
        self.connections.insert(
            conn,
            Connection {
                peer: normalize(peer),
                opened: now,
                decoder: FrameDecoder::with_limit(control::MAX_CLIENT_FRAME_LEN),
                user_index: None,
            },
        );
        true
    }

    /// A TCP connection closed: its registration is released.
    pub fn handle_tcp_closed(&mut self, _now: Instant, conn: ConnId) {
        if let Some(c) = self.connections.remove(&conn)
            && let Some(index) = c.user_index
        {
            self.registrations.remove(&index);
            self.calls.closed(conn);
            self.drain_calls();
            tracing::debug!(user_index = index, "registration released");
        }
    }

    /// Queues what the call router has to say.
    fn drain_calls(&mut self) {
        while let Some((conn, signal)) = self.calls.poll_signal() {
            self.tcp.push_back(TcpOutput::Send {
                conn,
                bytes: control::encode(&signal),
            });
        }
    }

    /// Bytes arrived on a TCP connection.
    pub fn handle_tcp_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        if let Err(err) = c.decoder.push(bytes) {
            self.protocol_error(now, conn, &err.to_string());
            return;
        }
        loop {
            let Some(c) = self.connections.get_mut(&conn) else {
                return;
            };
            match c.decoder.next_message::<ClientMessage>() {
                Ok(Some(message)) => self.handle_message(now, conn, message),
                Ok(None) => return,
                Err(err) => {
                    self.protocol_error(now, conn, &err.to_string());
                    return;
                }
            }
        }
    }

    fn protocol_error(&mut self, now: Instant, conn: ConnId, message: &str) {
        self.send(
            conn,
            &ServerMessage::Error {
                code: "bad_frame".into(),
                message: message.into(),
            },
        );
        self.tcp.push_back(TcpOutput::Close { conn });
        self.handle_tcp_closed(now, conn);
    }

    fn handle_message(&mut self, now: Instant, conn: ConnId, message: ClientMessage) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let peer = c.peer;
        let user_index = c.user_index;
        match (message, user_index) {
            (ClientMessage::Hello { version, access }, None) => {
                if version != PROTOCOL_VERSION {
                    self.send(
                        conn,
                        &ServerMessage::Error {
                            code: "version".into(),
                            message: format!(
                                "protocol version {version} is not supported (this server speaks {PROTOCOL_VERSION})"
                            ),
                        },
                    );
                    self.tcp.push_back(TcpOutput::Close { conn });
                    return;
                }
                let (user_index, key) = self.new_identity();
                let access = normalize(access);
                let private_network = access != peer;
                self.registrations.insert(
                    user_index,
                    Registration {
                        key,
                        conn,
                        mapped: None,
                        last_seen: now,
                        test_mapped: None,
                        test_last_seen: now,
                        listed: [None; MAX_P4_TARGETS],
                        listed_known: false,
                        p4_done: false,
                        last_request_len: 0,
                        last_request_tid: [0; 12],
                        last_sequence: [0; 2],
                        sequence_mask: crate::wire::sequence_mask(&key),
                        last_probe: [None; 3],
                        verdict: None,
                    },
                );
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.user_index = Some(user_index);
                }
                tracing::debug!(user_index, %peer, %access, private_network, "registered");
                let challenge = self.calls.open(conn);
                let welcome = ServerMessage::Welcome {
                    version: PROTOCOL_VERSION,
                    user_index,
                    key: hex(&key),
                    observed: peer,
                    private_network,
                    idle_timeout_s: self.config.idle_timeout.as_secs(),
                    challenge,
                };
                self.send(conn, &welcome);
            }
            (ClientMessage::Addresses { addresses, port }, Some(index)) => {
                if addresses.len() > MAX_LISTED_ADDRESSES {
                    self.refuse(conn, "too_many_addresses", "too many addresses listed");
                    return;
                }
                let allow_private = self.config.allow_private_targets;
                let mut listed = [None; MAX_P4_TARGETS];
                let mut n = 0;
                for ip in addresses {
                    let ip = addr::normalize(ip);
                    if n < MAX_P4_TARGETS
                        && may_send_to(ip, allow_private)
                        && !listed[..n].contains(&Some(SocketAddr::new(ip, port)))
                    {
                        listed[n] = Some(SocketAddr::new(ip, port));
                        n += 1;
                    } else {
                        self.stats.p4_refused += 1;
                    }
                }
                if let Some(r) = self.registrations.get_mut(&index) {
                    r.listed = listed;
                    r.listed_known = true;
                }
                self.send_p4(now, index);
            }
            (ClientMessage::Verdict { verdict, mapped }, Some(index)) => {
                if let Some(r) = self.registrations.get_mut(&index) {
                    r.verdict = Some(verdict);
                }
                tracing::debug!(user_index = index, verdict = verdict.as_str(), %mapped, "verdict");
            }
            (
                ClientMessage::Probe {
                    nonce,
                    target,
                    from_alternate_port,
                },
                Some(index),
            ) => {
                self.probe(now, index, nonce, target, from_alternate_port);
            }
            (
                ClientMessage::Register {
                    name,
                    public_key,
                    signature,
                },
                Some(_),
            ) => {
                self.calls.register(conn, &name, &public_key, &signature);
                self.drain_calls();
            }
            (
                ClientMessage::Call {
                    call_id,
                    to,
                    candidates,
                },
                Some(_),
            ) => {
                self.calls.call(now, conn, call_id, &to, candidates);
                self.drain_calls();
            }
            (ClientMessage::Ringing { call_id }, Some(_)) => {
                self.calls.ringing(conn, call_id);
                self.drain_calls();
            }
            (
                ClientMessage::Accept {
                    call_id,
                    candidates,
                },
                Some(_),
            ) => {
                self.calls.accept(conn, call_id, candidates);
                self.drain_calls();
            }
            (ClientMessage::Reject { call_id, reason }, Some(_)) => {
                self.calls.reject(conn, call_id, reason);
                self.drain_calls();
            }
            (ClientMessage::HangUp { call_id }, Some(_)) => {
                self.calls.hang_up(conn, call_id);
                self.drain_calls();
            }
            (ClientMessage::Ping { nonce }, _) => self.send(conn, &ServerMessage::Pong { nonce }),
            (ClientMessage::Bye, _) => {
                self.tcp.push_back(TcpOutput::Close { conn });
                self.handle_tcp_closed(now, conn);
            }
            (ClientMessage::Hello { .. }, Some(_)) => {
                self.refuse(conn, "already_registered", "hello sent twice");
            }
            (_, None) => self.refuse(conn, "no_hello", "say hello first"),
        }
    }

    fn refuse(&mut self, conn: ConnId, code: &str, message: &str) {
        self.send(
            conn,
            &ServerMessage::Error {
                code: code.into(),
                message: message.into(),
            },
        );
    }

    /// Sends a probe (the patent's P7) through a user's mapping and tells the client over TCP.
    /// This is the server-to-client path that call invitations and relay traffic will use.
    /// `from_alternate` sends it from the alternate port instead (RFC 5780's filtering test:
    /// does the client's NAT or firewall let in what comes from a port it never sent to?).
    pub fn probe(
        &mut self,
        now: Instant,
        user_index: u32,
        nonce: u64,
        target: ProbeTarget,
        from_alternate: bool,
    ) {
        let alternate_port = self.config.alternate_port;
        let Some(r) = self.registrations.get_mut(&user_index) else {
            return;
        };
        let conn = r.conn;
        if from_alternate && !alternate_port {
            self.send(
                conn,
                &ServerMessage::ProbeFailed {
                    nonce,
                    reason: "this server has no alternate port".into(),
                },
            );
            return;
        }
        let (to, slot) = match (target, from_alternate) {
            (ProbeTarget::Main, false) => (r.mapped, 0),
            (ProbeTarget::Test, false) => (r.test_mapped, 1),
            (ProbeTarget::Main, true) => (r.mapped, 2),
            (ProbeTarget::Test, true) => (r.test_mapped, 2),
        };
        let spaced =
            r.last_probe[slot].is_none_or(|t| now.saturating_duration_since(t) >= PROBE_SPACING);
        let reply = match to {
            Some(to) if spaced => {
                r.last_probe[slot] = Some(now);
                let tid = derive_tid(&r.key, nonce);
                let contents = UdpMessage::Probe {
                    transaction_id: tid,
                    user_index,
                    nonce,
                }
                .encode(&r.key);
                self.transmits.push_back(Transmit {
                    destination: to,
                    contents,
                    from_alternate,
                });
                self.stats.probes_sent += 1;
                ServerMessage::ProbeSent { nonce, to }
            }
            Some(_) => {
                self.stats.rate_limited += 1;
                ServerMessage::ProbeFailed {
                    nonce,
                    reason: "probes too close together".into(),
                }
            }
            None => ServerMessage::ProbeFailed {
                nonce,
                reason: "no mapping known".into(),
            },
        };
        self.send(conn, &reply);
    }

    /// A datagram arrived from `from`. Plain Binding Requests are answered here too, but the
    /// driver's hot path answers them with [`stun::answer_plain_binding`] first.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let from = normalize(from);
        let mut plain = [0u8; 44];
        if let Some(n) = stun::answer_plain_binding(bytes, from, &mut plain) {
            self.transmits.push_back(Transmit {
                destination: from,
                contents: plain[..n].to_vec(),
                from_alternate: false,
            });
            return;
        }
        if crate::channel::classify(bytes) == crate::channel::Kind::ChannelData {
            // Relay: one lookup by source address decides; the frame goes on unchanged.
            if let Some(to) = self.calls.relay(now, from, bytes) {
                self.transmits.push_back(Transmit {
                    destination: to,
                    contents: bytes.to_vec(),
                    from_alternate: false,
                });
            }
            return;
        }
        let registrations = &self.registrations;
        let decoded = UdpMessage::decode(bytes, |index| registrations.get(&index).map(|r| r.key));
        let (tid, user_index, flags) = match decoded {
            Ok(UdpMessage::Request {
                transaction_id,
                user_index,
                flags,
            }) => (transaction_id, user_index, flags),
            Ok(_) => {
                self.stats.udp_malformed += 1;
                return;
            }
            Err(crate::wire::WireError::UnknownUser(_)) => {
                self.stats.udp_unknown_user += 1;
                return;
            }
            Err(crate::wire::WireError::Integrity(_)) => {
                self.stats.udp_auth_failed += 1;
                return;
            }
            Err(_) => {
                self.stats.udp_malformed += 1;
                return;
            }
        };
        let Some(r) = self.registrations.get_mut(&user_index) else {
            return;
        };
        let answer = UdpMessage::Answer {
            transaction_id: tid,
            user_index,
            mapped: from,
            flags: Flags {
                test_socket: flags.test_socket,
                to_listed: false,
            },
        }
        .encode(&r.key);
        if answer.len() > bytes.len() {
            self.stats.udp_too_small += 1;
            return;
        }
        // Replay protection (see `wire::sequence_mask`): an old request may only repeat what
        // the server already knows; from another address it is dropped.
        let sequence = crate::wire::tid_sequence(r.sequence_mask, &tid);
        let slot = usize::from(flags.test_socket);
        let current = if flags.test_socket {
            r.test_mapped
        } else {
            r.mapped
        };
        let first = r.last_sequence[slot] == 0 && current.is_none();
        if sequence <= r.last_sequence[slot] && current != Some(from) && !first {
            self.stats.udp_replayed += 1;
            return;
        }
        r.last_sequence[slot] = r.last_sequence[slot].max(sequence);
        let conn = r.conn;
        let changed = if flags.test_socket {
            let changed = r.test_mapped != Some(from);
            r.test_mapped = Some(from);
            r.test_last_seen = now;
            changed
        } else {
            let changed = r.mapped != Some(from);
            r.mapped = Some(from);
            r.last_seen = now;
            r.last_request_len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            r.last_request_tid = tid;
            changed
        };
        self.transmits.push_back(Transmit {
            destination: from,
            contents: answer,
            from_alternate: false,
        });
        if changed {
            tracing::debug!(user_index, %from, test = flags.test_socket, "mapping");
            if !flags.test_socket {
                self.calls.set_mapped(conn, Some(from));
                self.drain_calls();
            }
            self.send(
                conn,
                &ServerMessage::UdpSeen {
                    mapped: from,
                    test: flags.test_socket,
                },
            );
        }
        if !flags.test_socket {
            self.send_p4(now, user_index);
        }
    }

    /// P4 to the listed addresses: once per registration, when both the list (TCP) and the
    /// observed address (UDP) are known.
    fn send_p4(&mut self, now: Instant, user_index: u32) {
        let Some(r) = self.registrations.get(&user_index) else {
            return;
        };
        let Some(observed) = r.mapped else {
            return;
        };
        if r.p4_done || !r.listed_known {
            return;
        }
        let key = r.key;
        let listed = r.listed;
        let tid = r.last_request_tid;
        let limit = usize::from(r.last_request_len);
        if let Some(r) = self.registrations.get_mut(&user_index) {
            r.p4_done = true;
        }
        for to in listed.into_iter().flatten() {
            if to == observed {
                continue;
            }
            if !self.take_token(now, observed.ip()) {
                self.stats.rate_limited += 1;
                continue;
            }
            let contents = UdpMessage::Answer {
                transaction_id: tid,
                user_index,
                mapped: observed,
                flags: Flags {
                    test_socket: false,
                    to_listed: true,
                },
            }
            .encode(&key);
            if contents.len() > limit {
                self.stats.p4_refused += 1;
                continue;
            }
            self.stats.p4_sent += 1;
            self.transmits.push_back(Transmit {
                destination: to,
                contents,
                from_alternate: false,
            });
        }
    }

    fn take_token(&mut self, now: Instant, source: IpAddr) -> bool {
        let epoch = *self.epoch.get_or_insert(now);
        let now_ms = u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(0);
        let slot = (self.hash_ip(source) % BUCKETS as u64) as usize;
        let (burst, rate) = (
            u64::from(self.config.bucket_burst),
            u64::from(self.config.bucket_rate),
        );
        let bucket = &mut self.buckets[slot];
        // The bucket stores what was spent (in thousandths of a token): zero is a full bucket,
        // so the zeroed table needs no initialisation.
        let elapsed = now_ms.saturating_sub(bucket.stamp_ms);
        bucket.spent_milli = bucket.spent_milli.saturating_sub(elapsed * rate);
        bucket.stamp_ms = now_ms;
        if bucket.spent_milli + 1000 > burst * 1000 {
            return false;
        }
        bucket.spent_milli += 1000;
        true
    }

    fn hash_ip(&self, ip: IpAddr) -> u64 {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let k = u64::from_le_bytes([
            self.secret[0],
            self.secret[1],
            self.secret[2],
            self.secret[3],
            self.secret[4],
            self.secret[5],
            self.secret[6],
            self.secret[7],
        ]);
        // FNV-1a, salted with the secret so that collisions cannot be chosen from outside.
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ k;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    /// Timer: expires idle mappings and connections that never said hello.
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        for r in self.registrations.values_mut() {
            if r.mapped.is_some() && now.saturating_duration_since(r.last_seen) >= idle {
                r.mapped = None;
                self.stats.mappings_expired += 1;
                // Its call (if any) ends: the relay has nowhere to send.
                self.calls.set_mapped(r.conn, None);
            }
            if r.test_mapped.is_some() && now.saturating_duration_since(r.test_last_seen) >= idle {
                r.test_mapped = None;
            }
        }
        let stale: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| {
                c.user_index.is_none() && now.saturating_duration_since(c.opened) >= HELLO_TIMEOUT
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in stale {
            self.tcp.push_back(TcpOutput::Close { conn });
            self.handle_tcp_closed(now, conn);
        }
        self.calls.handle_timeout(now);
        self.drain_calls();
    }

    /// When to call [`Server::handle_timeout`] next: the server is happy with a tick every
    /// second (expiry is not precise to less than that).
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        now + Duration::from_secs(1)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next TCP action.
    pub fn poll_tcp(&mut self) -> Option<TcpOutput> {
        self.tcp.pop_front()
    }

    fn send(&mut self, conn: ConnId, message: &ServerMessage) {
        self.tcp.push_back(TcpOutput::Send {
            conn,
            bytes: control::encode(message),
        });
    }

    /// A fresh user index (never 0, never in use) and key, from a PRF over the secret.
    fn new_identity(&mut self) -> (u32, [u8; KEY_LEN]) {
        loop {
            self.counter += 1;
            let block = prf(&self.secret, self.counter);
            let index = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
            if index == 0 || self.registrations.contains_key(&index) {
                continue;
            }
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&block[4..4 + KEY_LEN]);
            return (index, key);
        }
    }
}

/// HMAC-SHA1(secret, counter): 20 pseudo-random bytes.
fn prf(secret: &[u8; 32], counter: u64) -> [u8; 20] {
    use hmac::{KeyInit, Mac};
    let mut out = [0u8; 20];
    if let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret) {
        mac.update(&counter.to_be_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn derive_tid(key: &[u8; KEY_LEN], nonce: u64) -> stun::TransactionId {
    let mut secret = [0u8; 32];
    secret[..KEY_LEN].copy_from_slice(key);
    let block = prf(&secret, nonce);
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&block[..12]);
    tid
}

/// Where the server may send unsolicited UDP: public unicast, or (test only) also loopback
/// and private, but never unspecified, multicast or broadcast.
fn may_send_to(ip: IpAddr, allow_private: bool) -> bool {
    let ip = addr::normalize(ip);
    if addr::is_public_unicast(ip) {
        return true;
    }
    allow_private
        && match ip {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        }
}

fn normalize(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr::normalize(a.ip()), a.port())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lowercase or uppercase hex; `None` for odd length or other characters.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_entry_is_compact() {
        let (reg, conn) = Server::entry_sizes();
        assert!(
            reg + conn < 512,
            "registration {reg} + connection {conn} bytes"
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn may_send_to_refuses_dangerous_targets() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "::ffff:192.168.1.1",
            "100.64.0.1",
        ] {
            assert!(!may_send_to(s.parse().unwrap(), false), "{s}");
        }
        for s in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "ff02::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!may_send_to(s.parse().unwrap(), true), "{s}");
        }
        assert!(may_send_to("127.0.0.1".parse().unwrap(), true));
        assert!(may_send_to("8.8.8.8".parse().unwrap(), false));
    }
}
