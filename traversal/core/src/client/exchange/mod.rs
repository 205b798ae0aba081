//! The client side of the patent's exchange (S1-S14), sans-IO.
//!
//! The caller owns a TCP connection to the server, the UDP media socket and (only when the
//! mapping lifetime is measured) a second UDP socket. It feeds the client what arrives, with
//! `now`: [`Client::handle_tcp`], [`Client::handle_udp`], [`Client::handle_timeout`]; and after
//! every input drains [`Client::poll_tcp`] (bytes to write), [`Client::poll_transmit`]
//! (datagrams to send, and from which socket), [`Client::poll_event`], and sleeps until
//! [`Client::poll_timeout`]. The client never reads a clock or a random source.
//!
//! The exchange:
//! 1. S1: `hello` with the access address (the local address of the TCP connection).
//! 2. S3: `welcome` says whether the server sees another address (`private_network`) and gives
//!    the user index and the MESSAGE-INTEGRITY key.
//! 3. S5: `addresses` (every local address and the media port) over TCP, and the registration
//!    request (P1/P3) from the media socket over UDP, retransmitted until answered.
//! 4. S6/S7: the answer (P4) carries the address the server saw. Verdict: `public` when there is
//!    no private network, `proxy` when that address is one of ours, `nat` otherwise; reported
//!    over TCP (P5). Return routability: a request from an address the server does not know as
//!    this client's mapping (the first one included) gets a path challenge instead of an
//!    answer ([`crate::wire::Flags::path_challenge`]); the client echoes its transaction id
//!    from the socket it reached, and the server's answer to that echo stands for the answer
//!    to the request that was waiting (`path.rs`).
//! 5. S13/S14: keepalives from the media socket; each answer carries the address the server
//!    sees, so a changed mapping is noticed and registered again. Before each keepalive the
//!    client may ask the server to probe the mapping (P7, `verify_mapping`): a probe that does
//!    not arrive means the mapping was lost (idle expiry) and the client re-registers.
//! 6. Filtering (RFC 5780 section 4.4 in spirit, on request: [`Client::check_filtering`]):
//!    the server probes the mapping from another port, to which the client never sent.
//! 7. Mapping lifetime (RFC 5780 section 4.6 in spirit): from a second socket, register a test
//!    mapping, stay silent for T, ask the server to probe it; grow T by doubling until a probe is
//!    lost, then bisect. The keepalive interval becomes [`KEEPALIVE_FRACTION`] of the measured
//!    lifetime, within [`KEEPALIVE_FLOOR`] and [`KEEPALIVE_CEILING`]
//!    ([`DEFAULT_KEEPALIVE`] until measured).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::addr;
use crate::control::{
    self, ClientMessage, FrameDecoder, PROTOCOL_VERSION, ProbeTarget, ServerMessage, Verdict,
};
use crate::stun::TransactionId;
use crate::wire::{Flags, UdpMessage};

mod lifetime;
mod path;
mod types;

pub use lifetime::{
    DEFAULT_KEEPALIVE, KEEPALIVE_CEILING, KEEPALIVE_FLOOR, KEEPALIVE_FRACTION,
    LIFETIME_FIRST_TRIAL, LIFETIME_MAX,
};
use lifetime::{Measure, MeasureStage};
pub use types::*;

/// Unanswered keepalives in a row that count as a lost mapping.
pub const MAX_KEEPALIVE_MISSES: u32 = 3;
/// First retransmission timeout of a registration request (then doubling, up to 2 s).
const RTO: Duration = Duration::from_millis(250);
/// How long to wait for the server to confirm a probe request over TCP.
const PROBE_CONFIRM_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Registering {
        tid: TransactionId,
        started: Instant,
        next_send: Instant,
        rto: Duration,
        first: bool,
    },
    Registered,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbePurpose {
    /// Before a keepalive.
    Verify,
    /// Asked for by the caller.
    Check,
}

/// One probe of the media mapping in flight; it may serve both purposes.
#[derive(Debug, Clone, Copy)]
struct PendingProbe {
    nonce: u64,
    deadline: Instant,
    verify: bool,
    check: bool,
}

/// The client state machine.
#[derive(Debug)]
pub struct Client {
    config: Config,
    /// Nonces and the random part of transaction ids.
    rng: StdRng,
    /// Last request sequence number, and its mask (see [`crate::wire::sequence_mask`]).
    sequence: u64,
    sequence_mask: u64,
    decoder: FrameDecoder,
    phase: Phase,
    user_index: u32,
    key: Vec<u8>,
    private_network: bool,
    mapped: Option<SocketAddr>,
    verdict: Option<Verdict>,
    interval: Duration,
    /// The server's idle expiry of mappings, from its welcome.
    server_idle: Option<Duration>,
    next_keepalive: Option<Instant>,
    keepalive_pending: Option<TransactionId>,
    /// The path responses in flight from the media and the test socket: their answer stands
    /// for the answer to the request waiting on that socket.
    path_response: [Option<TransactionId>; 2],
    misses: u32,
    main_probe: Option<PendingProbe>,
    /// The filtering probe in flight: nonce and deadline.
    filter_probe: Option<(u64, Instant)>,
    last_probe_arrived: Option<Instant>,
    measure: Option<Measure>,
    lifetime: Option<Duration>,
    stats: Stats,
    tcp_out: VecDeque<u8>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Client {
    /// A client that starts the exchange at once: the hello is ready in [`Client::poll_tcp`].
    pub fn new(config: Config) -> Self {
        let interval = config.keepalive_interval.unwrap_or(DEFAULT_KEEPALIVE);
        let mut client = Client {
            // Not the very stream a `Punch` given the same seed would draw.
            rng: StdRng::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15),
            sequence: 0,
            sequence_mask: 0,
            decoder: FrameDecoder::new(),
            phase: Phase::Hello,
            user_index: 0,
            key: Vec::new(),
            private_network: false,
            mapped: None,
            verdict: None,
            interval,
            server_idle: None,
            next_keepalive: None,
            keepalive_pending: None,
            path_response: [None; 2],
            misses: 0,
            main_probe: None,
            filter_probe: None,
            last_probe_arrived: None,
            measure: None,
            lifetime: None,
            stats: Stats::default(),
            tcp_out: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            config,
        };
        client.send_tcp(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            access: client.config.access,
        });
        client
    }

    /// The user index, once welcomed (0 before).
    pub fn user_index(&self) -> u32 {
        self.user_index
    }

    /// The media socket's mapped address, once registered.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The verdict, once decided.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Whether the server saw another address than the access address (S3).
    pub fn private_network(&self) -> bool {
        self.private_network
    }

    /// True while registered (not registering again, not failed).
    pub fn is_registered(&self) -> bool {
        self.phase == Phase::Registered
    }

    /// The keepalive interval in use.
    pub fn keepalive_interval(&self) -> Duration {
        self.interval
    }

    /// The measured mapping lifetime, once measured.
    pub fn mapping_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes arrived on the TCP connection.
    pub fn handle_tcp(&mut self, now: Instant, bytes: &[u8]) {
        if let Err(err) = self.decoder.push(bytes) {
            self.fail(format!("control connection: {err}"));
            return;
        }
        loop {
            match self.decoder.next_message::<ServerMessage>() {
                Ok(Some(message)) => self.handle_message(now, message),
                Ok(None) => return,
                Err(err) => {
                    self.fail(format!("control connection: {err}"));
                    return;
                }
            }
        }
    }

    /// The TCP connection closed.
    pub fn handle_tcp_closed(&mut self, _now: Instant) {
        if self.phase != Phase::Failed {
            self.fail("the server closed the control connection".into());
        }
    }

    /// A message from the server, already decoded (for a caller that reads the control stream
    /// itself, as [`crate::phone::Phone`] does; [`Client::handle_tcp`] decodes and calls this).
    /// Call signalling is not the client's business and is ignored.
    pub fn handle_message(&mut self, now: Instant, message: ServerMessage) {
        match message {
            ServerMessage::Welcome {
                version,
                user_index,
                key,
                observed,
                private_network,
                idle_timeout_s,
                ..
            } => {
                if self.phase != Phase::Hello {
                    return;
                }
                if version != PROTOCOL_VERSION {
                    self.fail(format!("server speaks protocol version {version}"));
                    return;
                }
                let Some(key) = crate::server::unhex(&key) else {
                    self.fail("server sent a malformed key".into());
                    return;
                };
                // Keepalives must come well within the server's own idle expiry too.
                let server_idle = Duration::from_secs(idle_timeout_s.max(1));
                let cap = server_idle.mul_f64(KEEPALIVE_FRACTION);
                if self.interval > cap {
                    self.interval = cap;
                }
                self.server_idle = Some(server_idle);
                self.user_index = user_index;
                self.sequence_mask = crate::wire::sequence_mask(&key);
                self.key = key;
                self.private_network = private_network;
                self.events.push_back(Event::Welcomed {
                    user_index,
                    private_network,
                    observed,
                });
                let addresses = self.config.local_addresses.clone();
                self.send_tcp(&ClientMessage::Addresses {
                    addresses,
                    port: self.config.media_port,
                });
                self.start_registering(now, true);
            }
            ServerMessage::ProbeSent { nonce, .. } => {
                let wait = self.config.probe_wait;
                if let Some((n, deadline)) = self.filter_probe.as_mut()
                    && *n == nonce
                {
                    *deadline = now + wait;
                }
                if let Some(p) = self.main_probe.as_mut()
                    && p.nonce == nonce
                {
                    p.deadline = now + wait;
                }
                if let Some(m) = self.measure.as_mut()
                    && let MeasureStage::Probing { nonce: n, deadline } = &mut m.stage
                    && *n == nonce
                {
                    *deadline = now + wait;
                }
            }
            ServerMessage::ProbeFailed { nonce, .. } => {
                if self.filter_probe.is_some_and(|(n, _)| n == nonce) {
                    self.filter_probe = None;
                    self.events.push_back(Event::Filtering { filtered: None });
                }
                if self.main_probe.is_some_and(|p| p.nonce == nonce) {
                    self.main_probe_done(now, false);
                }
                if let Some(m) = self.measure
                    && let MeasureStage::Probing { nonce: n, .. } = m.stage
                    && n == nonce
                {
                    self.trial_done(now, false);
                }
            }
            ServerMessage::UdpSeen { .. }
            | ServerMessage::Pong { .. }
            | ServerMessage::Registered { .. }
            | ServerMessage::Incoming { .. }
            | ServerMessage::Ringing { .. }
            | ServerMessage::Connected { .. }
            | ServerMessage::Reveal { .. }
            | ServerMessage::Ended { .. }
            // A server shutting down: its refusal (`shutting_down`) or its closing follows.
            | ServerMessage::GoingAway { .. } => {}
            ServerMessage::Error { code, message } => {
                if self.phase == Phase::Hello {
                    self.fail(format!("server refused: {message} ({code})"));
                } else {
                    tracing::warn!(code, message, "server error");
                }
            }
        }
    }

    /// A datagram arrived on `socket` from `from`.
    pub fn handle_udp(&mut self, now: Instant, socket: Socket, from: SocketAddr, bytes: &[u8]) {
        if self.key.is_empty() {
            return;
        }
        let from = SocketAddr::new(addr::normalize(from.ip()), from.port());
        // Any port of the server's address: probes may come from its alternate port. Every
        // message is authenticated anyway.
        if from.ip() != addr::normalize(self.config.server.ip()) {
            return;
        }
        let user_index = self.user_index;
        let key = &self.key;
        let message =
            match UdpMessage::decode(bytes, |u| (u == user_index).then_some(key.as_slice())) {
                Ok(m) => m,
                Err(err) => {
                    tracing::debug!(%from, "dropped datagram: {err}");
                    return;
                }
            };
        match (socket, message) {
            (
                socket,
                UdpMessage::Answer {
                    transaction_id,
                    flags,
                    ..
                },
            ) if flags.path_challenge && flags.test_socket == (socket == Socket::Test) => {
                self.answer_path_challenge(socket, transaction_id);
            }
            (
                Socket::Media,
                UdpMessage::Answer {
                    transaction_id,
                    mapped,
                    flags,
                    ..
                },
            ) if !flags.test_socket => {
                let tid = self.waiting_for(Socket::Media, transaction_id);
                self.handle_answer(now, tid, mapped);
            }
            (
                Socket::Test,
                UdpMessage::Answer {
                    transaction_id,
                    flags,
                    ..
                },
            ) if flags.test_socket => {
                let transaction_id = self.waiting_for(Socket::Test, transaction_id);
                if let Some(m) = self.measure.as_mut()
                    && let MeasureStage::Refresh { tid, sent, .. } = m.stage
                    && tid == transaction_id
                {
                    m.stage = MeasureStage::Silent {
                        until: sent + m.trial,
                    };
                }
            }
            (Socket::Media, UdpMessage::Probe { nonce, .. }) => {
                self.stats.probes_received += 1;
                if self.filter_probe.is_some_and(|(n, _)| n == nonce) {
                    self.filter_probe = None;
                    self.events.push_back(Event::Filtering {
                        filtered: Some(false),
                    });
                }
                if self.main_probe.is_some_and(|p| p.nonce == nonce) {
                    self.main_probe_done(now, true);
                }
            }
            (Socket::Test, UdpMessage::Probe { nonce, .. }) => {
                self.stats.probes_received += 1;
                if let Some(m) = self.measure
                    && let MeasureStage::Probing { nonce: n, .. } = m.stage
                    && n == nonce
                {
                    self.trial_done(now, true);
                }
            }
            _ => {}
        }
    }

    fn handle_answer(&mut self, now: Instant, tid: TransactionId, mapped: SocketAddr) {
        let mapped = SocketAddr::new(addr::normalize(mapped.ip()), mapped.port());
        match self.phase {
            Phase::Registering { tid: t, first, .. } if t == tid => {
                self.phase = Phase::Registered;
                let old = self.mapped;
                self.mapped = Some(mapped);
                let verdict = if !self.private_network {
                    Verdict::Public
                } else if self
                    .config
                    .local_addresses
                    .iter()
                    .any(|ip| addr::normalize(*ip) == mapped.ip())
                {
                    Verdict::Proxy
                } else {
                    Verdict::Nat
                };
                self.verdict = Some(verdict);
                if let Some(old) = old
                    && old != mapped
                {
                    self.stats.mapping_changes += 1;
                    self.events
                        .push_back(Event::MappingChanged { old, new: mapped });
                }
                self.events.push_back(Event::Registered {
                    user_index: self.user_index,
                    mapped,
                });
                self.events.push_back(Event::Verdict { verdict, mapped });
                self.send_tcp(&ClientMessage::Verdict { verdict, mapped });
                self.keepalive_pending = None;
                self.misses = 0;
                self.next_keepalive = Some(now + self.interval);
                if first && self.config.measure_lifetime {
                    self.start_measuring(now);
                }
            }
            Phase::Registered if self.keepalive_pending == Some(tid) => {
                self.keepalive_pending = None;
                self.misses = 0;
                self.stats.keepalive_answers += 1;
                if let Some(old) = self.mapped
                    && old != mapped
                {
                    self.stats.mapping_changes += 1;
                    self.mapped = Some(mapped);
                    self.events
                        .push_back(Event::MappingChanged { old, new: mapped });
                    self.start_registering(now, false);
                }
            }
            _ => {}
        }
    }

    /// Asks the server to probe the media mapping now; the answer comes as
    /// [`Event::Reachability`].
    pub fn check_reachability(&mut self, now: Instant) {
        if self.phase != Phase::Registered {
            self.events
                .push_back(Event::Reachability { reachable: false });
            return;
        }
        // A probe that arrived a moment ago answers the question (the server spaces probes).
        if self
            .last_probe_arrived
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(200))
        {
            self.events
                .push_back(Event::Reachability { reachable: true });
            return;
        }
        self.request_main_probe(now, ProbePurpose::Check);
    }

    /// Asks the server for a probe from its alternate port through the media mapping; the
    /// answer comes as [`Event::Filtering`]. Does nothing unless registered.
    pub fn check_filtering(&mut self, now: Instant) {
        if self.phase != Phase::Registered || self.filter_probe.is_some() {
            return;
        }
        let nonce = self.rng.next_u64();
        self.filter_probe = Some((nonce, now + PROBE_CONFIRM_WAIT));
        self.send_tcp(&ClientMessage::Probe {
            nonce,
            target: ProbeTarget::Main,
            from_alternate_port: true,
        });
    }

    /// Says goodbye: the server releases the registration. Write out [`Client::poll_tcp`]
    /// before closing the connection.
    pub fn close(&mut self) {
        self.send_tcp(&ClientMessage::Bye);
        self.phase = Phase::Failed;
        self.next_keepalive = None;
        self.main_probe = None;
        self.measure = None;
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Registering {
            tid,
            started,
            next_send,
            rto,
            first,
        } = self.phase
            && now >= next_send
        {
            if first && now.saturating_duration_since(started) >= self.config.register_timeout {
                self.fail(format!(
                    "no UDP answer from the server within {:?}",
                    self.config.register_timeout
                ));
                return;
            }
            self.send_request(Socket::Media, tid, false);
            let rto = (rto * 2).min(Duration::from_secs(2));
            self.phase = Phase::Registering {
                tid,
                started,
                next_send: now + rto,
                rto,
                first,
            };
        }
        if let Some(p) = self.main_probe
            && now >= p.deadline
        {
            self.main_probe_done(now, false);
        }
        if let Some((_, deadline)) = self.filter_probe
            && now >= deadline
        {
            self.filter_probe = None;
            self.events.push_back(Event::Filtering {
                filtered: Some(true),
            });
        }
        if self.phase == Phase::Registered
            && let Some(at) = self.next_keepalive
            && now >= at
        {
            self.next_keepalive = Some(now + self.interval);
            if self.config.verify_mapping {
                self.request_main_probe(now, ProbePurpose::Verify);
            } else {
                self.send_keepalive(now);
            }
        }
        if let Some(m) = self.measure {
            match m.stage {
                MeasureStage::Refresh {
                    tid,
                    sent,
                    attempts,
                } if now >= sent + RTO * 4 => {
                    if attempts >= 4 {
                        tracing::warn!("lifetime measurement: the test socket gets no answer");
                        self.measure = None;
                    } else {
                        self.send_request(Socket::Test, tid, true);
                        if let Some(m) = self.measure.as_mut() {
                            m.stage = MeasureStage::Refresh {
                                tid,
                                sent: now,
                                attempts: attempts + 1,
                            };
                        }
                    }
                }
                MeasureStage::Silent { until } if now >= until => {
                    let nonce = self.rng.next_u64();
                    self.send_tcp(&ClientMessage::Probe {
                        nonce,
                        target: ProbeTarget::Test,
                        from_alternate_port: false,
                    });
                    if let Some(m) = self.measure.as_mut() {
                        m.stage = MeasureStage::Probing {
                            nonce,
                            deadline: now + PROBE_CONFIRM_WAIT,
                        };
                    }
                }
                MeasureStage::Probing { deadline, .. } if now >= deadline => {
                    self.trial_done(now, false);
                }
                _ => {}
            }
        }
    }

    /// The next instant [`Client::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Phase::Registering { next_send, .. } = self.phase {
            consider(Some(next_send));
        }
        if self.phase == Phase::Registered {
            consider(self.next_keepalive);
        }
        consider(self.main_probe.map(|p| p.deadline));
        consider(self.filter_probe.map(|(_, d)| d));
        if let Some(m) = self.measure {
            consider(match m.stage {
                MeasureStage::Refresh { sent, .. } => Some(sent + RTO * 4),
                MeasureStage::Silent { until } => Some(until),
                MeasureStage::Probing { deadline, .. } => Some(deadline),
                MeasureStage::Done => None,
            });
        }
        next
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Bytes to write to the TCP connection (everything queued).
    pub fn poll_tcp(&mut self) -> Option<Vec<u8>> {
        if self.tcp_out.is_empty() {
            None
        } else {
            Some(self.tcp_out.drain(..).collect())
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn start_registering(&mut self, now: Instant, first: bool) {
        if !first {
            self.stats.reregistrations += 1;
        }
        let tid = self.new_tid();
        self.send_request(Socket::Media, tid, false);
        self.phase = Phase::Registering {
            tid,
            started: now,
            next_send: now + RTO,
            rto: RTO,
            first,
        };
    }

    fn send_keepalive(&mut self, _now: Instant) {
        if self.keepalive_pending.is_some() {
            self.misses += 1;
            if self.misses >= MAX_KEEPALIVE_MISSES {
                self.misses = 0;
                self.lost(_now, LostReason::KeepalivesUnanswered);
                return;
            }
        }
        let tid = self.new_tid();
        self.keepalive_pending = Some(tid);
        self.stats.keepalives_sent += 1;
        self.send_request(Socket::Media, tid, false);
    }

    fn lost(&mut self, now: Instant, reason: LostReason) {
        self.stats.mappings_lost += 1;
        self.events.push_back(Event::MappingLost { reason });
        self.start_registering(now, false);
    }

    fn request_main_probe(&mut self, now: Instant, purpose: ProbePurpose) {
        if let Some(p) = self.main_probe.as_mut() {
            match purpose {
                ProbePurpose::Verify => p.verify = true,
                ProbePurpose::Check => p.check = true,
            }
            return;
        }
        let nonce = self.rng.next_u64();
        self.main_probe = Some(PendingProbe {
            nonce,
            deadline: now + PROBE_CONFIRM_WAIT,
            verify: purpose == ProbePurpose::Verify,
            check: purpose == ProbePurpose::Check,
        });
        self.send_tcp(&ClientMessage::Probe {
            nonce,
            target: ProbeTarget::Main,
            from_alternate_port: false,
        });
    }

    fn main_probe_done(&mut self, now: Instant, arrived: bool) {
        let Some(p) = self.main_probe.take() else {
            return;
        };
        if arrived {
            self.last_probe_arrived = Some(now);
        }
        if p.check {
            self.events
                .push_back(Event::Reachability { reachable: arrived });
        }
        if p.verify && self.phase == Phase::Registered {
            if arrived {
                self.send_keepalive(now);
            } else {
                self.lost(now, LostReason::ProbeNotReceived);
            }
        }
    }

    fn send_request(&mut self, socket: Socket, tid: TransactionId, test: bool) {
        self.send_request_flagged(socket, tid, test, false);
    }

    /// A request from `socket` (`path_challenge`: the echo of a path challenge, path.rs).
    fn send_request_flagged(
        &mut self,
        socket: Socket,
        tid: TransactionId,
        test: bool,
        path_challenge: bool,
    ) {
        let contents = UdpMessage::Request {
            transaction_id: tid,
            user_index: self.user_index,
            flags: Flags {
                test_socket: test,
                to_listed: false,
                path_challenge,
            },
        }
        .encode(&self.key);
        self.transmits.push_back(Transmit {
            socket,
            destination: self.config.server,
            contents,
        });
    }

    fn send_tcp(&mut self, message: &ClientMessage) {
        self.tcp_out.extend(control::encode(message));
    }

    fn fail(&mut self, reason: String) {
        self.phase = Phase::Failed;
        self.next_keepalive = None;
        self.main_probe = None;
        self.filter_probe = None;
        self.measure = None;
        self.events.push_back(Event::Failed { reason });
    }

    /// A request transaction id: the next sequence number (masked) and 4 random bytes.
    fn new_tid(&mut self) -> TransactionId {
        self.sequence += 1;
        let r = self.rng.next_u32().to_be_bytes();
        crate::wire::sequenced_tid(self.sequence_mask, self.sequence, r)
    }
}
