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
//!   requests are dropped and counted. And it moves only once that address has echoed a path
//!   challenge (return routability, `path.rs`), the first mapping too: a request with a
//!   forged source address moves nothing. Probes are paced per registration
//!   ([`Config::probes`]).
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
//! - Shutting down ([`Server::go_away`]): every connection hears
//!   [`ServerMessage::GoingAway`] with when to come back; hellos, names and calls are refused
//!   (`shutting_down`); connected calls keep their relay until they end ([`Server::drained`])
//!   or the driver stops at the end of its grace ([`Server::close_all`]).
//!
//! Memory is bounded: at most `max_registrations` registrations and as many TCP connections,
//! at most [`Config::max_connections_per_ip`] from one address (an IPv6 /64), pending ones
//! closed after [`HELLO_TIMEOUT`] and those with neither a name nor a validated mapping after
//! [`Config::unauthenticated_timeout`]; a fixed table of token buckets, and
//! nothing is allocated for a datagram that fails to authenticate. [`Server::memory_estimate`]
//! gives the bytes held per registration.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::bucket::{Rate, TokenBucket};
use super::limits::{Limit, Source};
use crate::addr;
use crate::calls::{CallStats, Calls, CallsConfig};
use crate::control::{self, FrameDecoder, ServerMessage, Verdict};
use crate::stun;

mod path;
mod tcp;
mod udp;

use path::PathChallenge;

/// Most listed addresses the P4 acknowledgement goes to (besides the observed address).
pub const MAX_P4_TARGETS: usize = 3;
/// A TCP connection that has not said hello within this time is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that said hello but has neither registered a name nor a UDP mapping within
/// this time is closed (the default of [`Config::unauthenticated_timeout`]).
pub const UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(30);
/// What a client told `going_away` adds to the time the server needs to stop: a restarted
/// server listens again within about this long.
pub const RESTART_ALLOWANCE: Duration = Duration::from_secs(1);
/// Length of the per-registration MESSAGE-INTEGRITY key.
pub const KEY_LEN: usize = 16;
/// Slots in the per-source token bucket table (sources hash into it; collisions share).
const BUCKETS: usize = 4096;
/// Probes of one registration, per kind: at least 100 ms apart (10 a second, a burst of 1).
const PROBE_RATE: (u32, u32) = (10, 1);
/// Path challenges of one registration: 4 at once, then one every 250 ms.
const CHALLENGE_RATE: (u32, u32) = (4, 4);

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
    /// Most control connections open at once from one address (an IPv6 /64 counts as one).
    pub max_connections_per_ip: usize,
    /// A connection with neither a name nor a validated UDP mapping this long after it opened
    /// is closed.
    pub unauthenticated_timeout: Duration,
    /// Probes of one registration, all kinds together (each kind is also spaced 100 ms).
    pub probes: Limit,
    /// A connection that sent no control message and no authenticated UDP request for this
    /// long is closed (a phone pings every 15 s).
    pub idle_connection_timeout: Duration,
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
            max_connections_per_ip: 16,
            unauthenticated_timeout: UNAUTHENTICATED_TIMEOUT,
            probes: Limit::new(4, Duration::from_millis(500)),
            idle_connection_timeout: Duration::from_secs(300),
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
    /// Connections refused because their address held [`Config::max_connections_per_ip`].
    pub refused_per_address: u64,
    /// Connections closed for saying no hello, or nothing more, in time, or for falling
    /// silent ([`Config::idle_connection_timeout`]).
    pub closed_unauthenticated: u64,
    /// Path challenges sent (a request from an address that is not the mapping).
    pub path_challenges: u64,
    /// New addresses that answered their challenge (the mapping moved).
    pub paths_validated: u64,
    /// Path responses that echo no challenge of that address.
    pub udp_bad_path_response: u64,
    /// Hellos, name registrations and calls refused because the server is shutting down
    /// (`shutting_down`, after [`Server::go_away`]).
    pub refused_shutting_down: u64,
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
    /// Probe spacing: main socket, test socket, from the alternate port.
    probes: [TokenBucket; 3],
    /// Probes of all kinds together ([`Config::probes`]).
    probe_budget: TokenBucket,
    /// Challenges sent ([`CHALLENGE_RATE`]).
    challenges: TokenBucket,
    verdict: Option<Verdict>,
}

#[derive(Debug)]
struct Connection {
    peer: SocketAddr,
    opened: Instant,
    /// The last control message.
    last_heard: Instant,
    decoder: FrameDecoder,
    user_index: Option<u32>,
}

/// The server state machine.
#[derive(Debug)]
pub struct Server {
    config: Config,
    /// User indexes and keys.
    rng: StdRng,
    /// Salt of the hash that spreads sources over the P4 buckets.
    salt: u64,
    /// P4 to listed addresses, per source (hashed): [`Config::bucket_rate`], `bucket_burst`.
    p4_rate: Rate,
    probe_rate: Rate,
    /// [`Config::probes`], `None` for no limit.
    probe_budget: Option<Rate>,
    challenge_rate: Rate,
    registrations: HashMap<u32, Registration>,
    /// The challenge sent to each registration's new address, waiting for its echo (path.rs).
    challenges: HashMap<u32, PathChallenge>,
    connections: HashMap<ConnId, Connection>,
    /// Open connections per source address.
    per_source: HashMap<Source, u32>,
    buckets: Box<[TokenBucket]>,
    transmits: VecDeque<Transmit>,
    tcp: VecDeque<TcpOutput>,
    stats: Stats,
    calls: Calls,
    /// Set by [`Server::go_away`]: the instant by which the server will have stopped.
    going_away: Option<Instant>,
}

impl Server {
    /// A server with no registrations. `secret` seeds user indexes and keys: give it 32 bytes
    /// from the operating system's random source (tests may give a constant).
    pub fn new(config: Config, secret: [u8; 32]) -> Self {
        let mut rng = StdRng::from_seed(secret);
        let mut calls_seed = [0u8; 32];
        rng.fill_bytes(&mut calls_seed);
        Server {
            calls: Calls::new(config.calls.clone(), calls_seed),
            salt: rng.next_u64(),
            rng,
            p4_rate: Rate::new(config.bucket_rate, config.bucket_burst),
            probe_rate: Rate::new(PROBE_RATE.0, PROBE_RATE.1),
            probe_budget: config.probes.rate(),
            challenge_rate: Rate::new(CHALLENGE_RATE.0, CHALLENGE_RATE.1),
            config,
            registrations: HashMap::new(),
            challenges: HashMap::new(),
            connections: HashMap::new(),
            per_source: HashMap::new(),
            buckets: vec![TokenBucket::FULL; BUCKETS].into_boxed_slice(),
            transmits: VecDeque::new(),
            tcp: VecDeque::new(),
            stats: Stats::default(),
            going_away: None,
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
        let challenges = self.challenges.capacity()
            * (std::mem::size_of::<u32>() + std::mem::size_of::<PathChallenge>() + 1);
        let per_source = self.per_source.capacity()
            * (std::mem::size_of::<Source>() + std::mem::size_of::<u32>() + 1);
        let buffers: usize = self
            .connections
            .values()
            .map(|c| c.decoder.capacity())
            .sum();
        reg + conn + challenges + per_source + buffers + self.calls.memory_estimate()
    }

    /// Size of one registration entry and one connection entry, without hash table overhead.
    pub fn entry_sizes() -> (usize, usize) {
        (
            std::mem::size_of::<Registration>(),
            std::mem::size_of::<Connection>(),
        )
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
        let unauthenticated = self.config.unauthenticated_timeout;
        let idle_connection = self.config.idle_connection_timeout;
        let stale: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(id, c)| {
                let age = now.saturating_duration_since(c.opened);
                match c.user_index {
                    None => age >= HELLO_TIMEOUT,
                    Some(index) => {
                        let r = self.registrations.get(&index);
                        let udp = r.filter(|r| r.mapped.is_some()).map(|r| r.last_seen);
                        let heard = udp.map_or(c.last_heard, |t| t.max(c.last_heard));
                        now.saturating_duration_since(heard) >= idle_connection
                            || (age >= unauthenticated
                                && udp.is_none()
                                && !self.calls.is_registered(**id))
                    }
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in stale {
            self.stats.closed_unauthenticated += 1;
            self.tcp.push_back(TcpOutput::Close { conn });
            self.handle_tcp_closed(now, conn);
        }
        self.calls.handle_timeout(now);
        self.drain_calls();
    }

    /// The server is shutting down and will have stopped by `until`: every control connection
    /// hears [`ServerMessage::GoingAway`], calls still ringing end (`server_error`; the
    /// parties' phones have ended them already on hearing `going_away`), and from now on
    /// hellos, name registrations and calls are refused with `shutting_down`. Connected calls
    /// go on (the relay with them) until their parties hang up or leave; the driver stops
    /// once [`Server::drained`] or at `until`, after [`Server::close_all`].
    pub fn go_away(&mut self, now: Instant, until: Instant) {
        if self.going_away.is_some() {
            return;
        }
        self.going_away = Some(until);
        self.calls.end_ringing();
        let message = ServerMessage::GoingAway {
            retry_after_ms: millis(self.retry_after(now)),
        };
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.send(conn, &message);
        }
        self.drain_calls();
        tracing::info!(
            connections = self.connections.len(),
            calls = self.calls.stats().calls,
            "going away"
        );
    }

    /// True after [`Server::go_away`].
    pub fn is_going_away(&self) -> bool {
        self.going_away.is_some()
    }

    /// Going away, and no call is left to relay: the driver may stop now.
    pub fn drained(&self) -> bool {
        self.going_away.is_some() && self.calls.stats().calls == 0
    }

    /// The last step of a shutdown: every control connection is closed after what is queued
    /// for it. Calls are not ended one by one (the parties have heard `going_away`; their
    /// connections closing is the end).
    pub fn close_all(&mut self) {
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.tcp.push_back(TcpOutput::Close { conn });
        }
    }

    /// How long a client told `going_away` should wait before it registers again: until the
    /// server has stopped (at the latest when the grace ends, at once when no call holds it),
    /// plus [`RESTART_ALLOWANCE`] for a restart to be listening again.
    fn retry_after(&self, now: Instant) -> Duration {
        let until = match self.going_away {
            Some(until) if self.calls.stats().calls > 0 => until,
            _ => now,
        };
        until.saturating_duration_since(now) + RESTART_ALLOWANCE
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

    /// Queues what the call router has to say after it was driven from outside the server
    /// ([`Server::calls_mut`]: a cluster's answers and messages from other nodes).
    pub fn flush_calls(&mut self) {
        self.drain_calls();
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

    fn send(&mut self, conn: ConnId, message: &ServerMessage) {
        self.tcp.push_back(TcpOutput::Send {
            conn,
            bytes: control::encode(message),
        });
    }

    /// A fresh user index (never 0, never in use) and key.
    fn new_identity(&mut self) -> (u32, [u8; KEY_LEN]) {
        let index = loop {
            let index = self.rng.next_u32();
            if index != 0 && !self.registrations.contains_key(&index) {
                break index;
            }
        };
        let mut key = [0u8; KEY_LEN];
        self.rng.fill_bytes(&mut key);
        (index, key)
    }
}

/// A duration in whole milliseconds, as `going_away` carries it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn normalize(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr::normalize(a.ip()), a.port())
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
}
