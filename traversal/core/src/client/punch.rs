//! Hole punching and path selection between the two clients of a call, sans-IO
//! (`docs/calls.md`, "Hole punching and path selection").
//!
//! Media starts on the server's relay. At the same time both clients send connectivity checks
//! from their media sockets to each other's candidates; the first check that gets an
//! authenticated answer proves a path that works both ways, and media moves to it. Consent
//! checks keep it; when they stop being answered the media goes back to the relay, and checks
//! go on so that a path that comes back is taken again.
//!
//! # The loop
//!
//! The caller owns the media socket and the clock. It feeds [`Punch`] what arrives and when:
//! [`Punch::handle_datagram`] for every STUN datagram on the media socket (it answers `false`
//! for the ones that are not connectivity checks, which belong to [`crate::client`]),
//! [`Punch::handle_timeout`] when [`Punch::poll_timeout`] is reached, [`Punch::add_remote_candidate`]
//! and [`Punch::close`]. After every input it drains [`Punch::poll_transmit`] (datagrams to send
//! from the media socket) and [`Punch::poll_event`], then sleeps until [`Punch::poll_timeout`].
//! `Punch` never reads a clock or a random source: time is an input and randomness comes in
//! [`PunchConfig::seed`].
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use traversal_core::punch::{Path, Punch, PunchConfig, PunchEvent};
//!
//! let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
//! let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
//! let secret = b"0123456789abcdef".to_vec();
//! let mut now = Instant::now();
//! // From `Connected`: the call id, the secret, the other side's candidates; a random seed each.
//! let mut alice = Punch::new(PunchConfig::new(secret.clone(), 7, vec![b], 1), now);
//! let mut bob = Punch::new(PunchConfig::new(secret, 7, vec![a], 2), now);
//! // Two media sockets wired straight together, and a coarse clock.
//! for _ in 0..4 {
//!     alice.handle_timeout(now);
//!     bob.handle_timeout(now);
//!     loop {
//!         let mut moved = false;
//!         while let Some((_to, bytes)) = alice.poll_transmit() {
//!             moved |= bob.handle_datagram(now, a, &bytes);
//!         }
//!         while let Some((_to, bytes)) = bob.poll_transmit() {
//!             moved |= alice.handle_datagram(now, b, &bytes);
//!         }
//!         if !moved {
//!             break;
//!         }
//!     }
//!     now += Duration::from_millis(50);
//! }
//! assert_eq!(alice.poll_event(), Some(PunchEvent::DirectPath(b)));
//! assert_eq!(alice.path(), Path::Direct(b));
//! assert_eq!(bob.path(), Path::Direct(a));
//! ```
//!
//! # Wire
//!
//! | message | STUN class | attributes |
//! | --- | --- | --- |
//! | check | Binding Request | CALL-ID, PUNCH-SENDER, PADDING, MESSAGE-INTEGRITY, FINGERPRINT |
//! | answer | Binding Success Response | XOR-MAPPED-ADDRESS (the source seen), CALL-ID, MESSAGE-INTEGRITY, FINGERPRINT |
//! | hang-up | Binding Indication | CALL-ID, PUNCH-SENDER, MESSAGE-INTEGRITY, FINGERPRINT |
//!
//! The hang-up ([`Punch::hang_up`]) goes to the peer over the direct path, [`BYE_COPIES`]
//! times (an indication is not answered): it ends the call on the other side even when the
//! server, which also carries the hang-up, is gone.
//!
//! MESSAGE-INTEGRITY is keyed with the call's secret (from `Connected`). CALL-ID and
//! PUNCH-SENDER are comprehension-optional (RFC 8489 section 14). PUNCH-SENDER is a random
//! 8-byte id of the checking side, so a client that reaches its own socket (a host candidate
//! equal to its own address) does not mistake itself for the peer; ICE uses its username
//! fragments for that. Checks are padded to [`CHECK_LEN`] bytes so that no answer is larger
//! than the check that caused it.
//!
//! # Rules
//!
//! - A check is answered only when it carries this call's CALL-ID and its MESSAGE-INTEGRITY
//!   verifies; the answer goes to the check's source (which may be a peer-reflexive address),
//!   and a check goes back to that source (ICE's triggered check, RFC 8445 section 7.3.1.4).
//! - An answer counts only when its transaction id is one of a check sent to the very address
//!   it comes from, and it is authenticated.
//! - Timings ([`PunchConfig`]): checks every 50 ms to each candidate, every 1 s after 2 s; on
//!   the direct path a consent check every 1 s (RFC 7675 in spirit), every 200 ms once one went
//!   unanswered for a second; 3 s without an answer and the path is lost; then checks every 2 s
//!   to every candidate.
//! - Bounded: [`MAX_CANDIDATES`] signalled and [`MAX_PEER_REFLEXIVE`] peer-reflexive remote
//!   candidates, [`MAX_TRANSACTIONS`] outstanding checks, [`MAX_PENDING_TRANSMITS`] queued
//!   datagrams.
//!
//! # Checks only where they make sense, paced and bounded
//!
//! The candidates come from the other side of the call through the server: a hostile caller
//! could list any address (other hosts on the callee's LAN, public services) and have the
//! callee send them datagrams. So:
//! - [`Punch::filter_candidates`] (the phone calls it with our own addresses) keeps only
//!   candidates a check can reach for this call: no unspecified, multicast, broadcast or
//!   reserved address; loopback only when we are on loopback ourselves; link-local only on a
//!   link-local subnet of ours; private (RFC 1918, RFC 6598 shared, RFC 4193 unique local) only
//!   in a private network of ours (the same /24, or /48 for unique local); documentation and
//!   benchmarking ranges only when we have such an address (a test lab); at most
//!   [`MAX_CANDIDATES`].
//! - All checks together are paced: at most one per [`PunchConfig::pace`] (20 ms, RFC 8445
//!   section 14.2's Ta), triggered and consent checks included.
//! - A candidate that never answered (the peer was never authenticated from it) gets checks
//!   for [`PunchConfig::probe_window`] (30 s) from the start of the call, and all of them
//!   together at most [`PunchConfig::probe_budget`] (200) checks; then it is retired
//!   (`candidates_retired`). Addresses the peer was authenticated from are checked as long as
//!   the call lasts (consent, and rechecks after a lost path).

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::addr;
use crate::stun::{
    self, BINDING_INDICATION, BINDING_REQUEST, BINDING_SUCCESS, Builder, Message, TransactionId,
};

/// CALL-ID: the call's `call_id` (big-endian u64). Comprehension-optional.
pub const ATTR_CALL_ID: u16 = 0xC0F8;
/// PUNCH-SENDER: a random 8-byte id of the side that sends a check. Comprehension-optional.
pub const ATTR_PUNCH_SENDER: u16 = 0xC0F9;
/// At most this many signalled remote candidates are checked.
pub const MAX_CANDIDATES: usize = 8;
/// At most this many peer-reflexive candidates (sources of authenticated checks) are added.
pub const MAX_PEER_REFLEXIVE: usize = 8;
/// At most this many checks are remembered while their answers may arrive; the oldest go first.
pub const MAX_TRANSACTIONS: usize = 1024;
/// At most this many datagrams wait in [`Punch::poll_transmit`]; more are dropped and counted.
pub const MAX_PENDING_TRANSMITS: usize = 256;
/// A hang-up is sent this many times at once (indications are not answered or retransmitted).
pub const BYE_COPIES: usize = 3;
/// At most this many events wait in [`Punch::poll_event`]; the oldest go first.
const MAX_PENDING_EVENTS: usize = 64;
/// Checks are padded to at least this many bytes: more than the largest answer (20 header +
/// 24 IPv6 XOR-MAPPED-ADDRESS + 12 CALL-ID + 24 MESSAGE-INTEGRITY + 8 FINGERPRINT = 88).
pub const CHECK_LEN: usize = 96;

/// Settings of one call's checks. [`PunchConfig::new`] gives the timings of `docs/calls.md`.
#[derive(Clone)]
pub struct PunchConfig {
    /// The call's secret (16 bytes from `Connected`), the MESSAGE-INTEGRITY key.
    pub secret: Vec<u8>,
    /// The call's id, carried in CALL-ID.
    pub call_id: u64,
    /// The other side's candidates (from `Connected`); at most [`MAX_CANDIDATES`] are used.
    pub remote_candidates: Vec<SocketAddr>,
    /// Random bits for transaction ids and the PUNCH-SENDER id (e.g. from `getrandom`); the
    /// two sides of a call must not use the same seed.
    pub seed: u64,
    /// Interval of the first checks to each candidate (50 ms).
    pub check_interval: Duration,
    /// How long checks go at `check_interval` (2 s).
    pub fast_phase: Duration,
    /// Smallest gap between two checks, to any address (20 ms).
    pub pace: Duration,
    /// Checks to candidates the peer was never authenticated from stop this long after the
    /// start (30 s).
    pub probe_window: Duration,
    /// At most this many checks go to candidates the peer was never authenticated from (200).
    pub probe_budget: u64,
    /// Interval of checks to each candidate after the fast phase (1 s).
    pub slow_interval: Duration,
    /// Interval of consent checks on the direct path (1 s).
    pub consent_interval: Duration,
    /// Interval of consent checks once one went unanswered for `consent_interval` (200 ms), so
    /// that a few lost datagrams do not lose a working path.
    pub consent_retry_interval: Duration,
    /// The direct path is lost after this long without an answer (3 s).
    pub consent_timeout: Duration,
    /// Interval of checks to each candidate after a direct path was lost (2 s).
    pub recheck_interval: Duration,
}

impl PunchConfig {
    /// A configuration with the default timings.
    pub fn new(
        secret: Vec<u8>,
        call_id: u64,
        remote_candidates: Vec<SocketAddr>,
        seed: u64,
    ) -> Self {
        PunchConfig {
            secret,
            call_id,
            remote_candidates,
            seed,
            check_interval: Duration::from_millis(50),
            fast_phase: Duration::from_secs(2),
            pace: Duration::from_millis(20),
            probe_window: Duration::from_secs(30),
            probe_budget: 200,
            slow_interval: Duration::from_secs(1),
            consent_interval: Duration::from_secs(1),
            consent_retry_interval: Duration::from_millis(200),
            consent_timeout: Duration::from_secs(3),
            recheck_interval: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for PunchConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PunchConfig")
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("call_id", &self.call_id)
            .field("remote_candidates", &self.remote_candidates)
            .field("check_interval", &self.check_interval)
            .field("fast_phase", &self.fast_phase)
            .field("pace", &self.pace)
            .field("probe_window", &self.probe_window)
            .field("probe_budget", &self.probe_budget)
            .field("slow_interval", &self.slow_interval)
            .field("consent_interval", &self.consent_interval)
            .field("consent_retry_interval", &self.consent_retry_interval)
            .field("consent_timeout", &self.consent_timeout)
            .field("recheck_interval", &self.recheck_interval)
            .finish_non_exhaustive()
    }
}

/// Where media goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Through the server, as relay frames on the call's channel.
    Relay,
    /// Straight to the peer at this address, from the media socket.
    Direct(SocketAddr),
}

/// What the caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchEvent {
    /// A check to this address was answered: send media there (`path_changes` counted).
    DirectPath(SocketAddr),
    /// The direct path to this address stopped answering: send media on the relay again
    /// (`path_changes` counted). Checks go on; a later [`PunchEvent::DirectPath`] may follow.
    DirectLost(SocketAddr),
    /// The peer hung up over the direct path ([`Punch::hang_up`] on its side). The checks stop.
    PeerHungUp,
}

/// Counters, for the call's statistics and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// Checks sent (periodic, triggered and consent).
    pub checks_sent: u64,
    /// Authenticated checks of this call received (and answered).
    pub checks_received: u64,
    /// Answers sent.
    pub responses_sent: u64,
    /// Authenticated answers received that matched a check we sent.
    pub responses_received: u64,
    /// Datagrams carrying CALL-ID that were for another call (or malformed CALL-ID).
    pub rejected_call: u64,
    /// Datagrams of this call whose MESSAGE-INTEGRITY did not verify (or was missing).
    pub rejected_auth: u64,
    /// Authenticated answers matching no check sent to their source address.
    pub rejected_unmatched: u64,
    /// Our own checks that came back to us (a host candidate that is our own socket).
    pub rejected_own: u64,
    /// Other punch messages ignored (wrong STUN class, missing PUNCH-SENDER, after close).
    pub ignored: u64,
    /// Moves between relay and direct, both ways.
    pub path_changes: u64,
    /// Datagrams dropped because [`MAX_PENDING_TRANSMITS`] were already queued.
    pub transmits_dropped: u64,
    /// Candidates refused: the table was full, or the address cannot be checked.
    pub candidates_refused: u64,
    /// Checks sent to candidates the peer was not authenticated from (at most
    /// [`PunchConfig::probe_budget`]).
    pub probes_sent: u64,
    /// Candidates whose checks stopped: never answered within [`PunchConfig::probe_window`]
    /// or [`PunchConfig::probe_budget`].
    pub candidates_retired: u64,
}

/// The call's secret, kept out of `Debug` output.
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    /// When the next periodic check goes; `None`: as soon as possible.
    next_check: Option<Instant>,
    /// Signalled (from `Connected` or [`Punch::add_remote_candidate`]), not peer-reflexive.
    signalled: bool,
    /// No more checks: it never answered within the probe window or budget.
    retired: bool,
}

#[derive(Debug, Clone, Copy)]
struct Transaction {
    id: TransactionId,
    destination: SocketAddr,
    sent: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Direct {
    addr: SocketAddr,
    last_success: Instant,
    next_consent: Instant,
}

/// One call's connectivity checks and path selection. See the module documentation.
#[derive(Debug)]
pub struct Punch {
    key: Secret,
    call_id: u64,
    sender_id: [u8; 8],
    /// Transaction ids and the sender id: unique, not secret (answers are authenticated).
    rng: StdRng,
    check_interval: Duration,
    fast_phase: Duration,
    pace: Duration,
    probe_window: Duration,
    probe_budget: u64,
    /// No check goes before this (pacing).
    next_send: Instant,
    slow_interval: Duration,
    consent_interval: Duration,
    consent_retry_interval: Duration,
    consent_timeout: Duration,
    recheck_interval: Duration,
    start: Instant,
    /// The latest `now` seen: when "as soon as possible" is.
    now: Instant,
    candidates: Vec<Candidate>,
    transactions: VecDeque<Transaction>,
    direct: Option<Direct>,
    lost_once: bool,
    closed: bool,
    /// Addresses the peer was authenticated from (bounded like the candidates).
    peer_addrs: VecDeque<SocketAddr>,
    reflexive: Option<SocketAddr>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<PunchEvent>,
    stats: PunchStats,
}

impl Punch {
    /// Starts the checks of a call at `now`: the first go out at once (drain
    /// [`Punch::poll_transmit`] after calling [`Punch::handle_timeout`]).
    pub fn new(config: PunchConfig, now: Instant) -> Self {
        let mut punch = Punch {
            key: Secret(config.secret),
            call_id: config.call_id,
            sender_id: [0; 8],
            rng: StdRng::seed_from_u64(config.seed),
            check_interval: config.check_interval,
            fast_phase: config.fast_phase,
            pace: config.pace,
            probe_window: config.probe_window,
            probe_budget: config.probe_budget,
            next_send: now,
            slow_interval: config.slow_interval,
            consent_interval: config.consent_interval,
            consent_retry_interval: config.consent_retry_interval,
            consent_timeout: config.consent_timeout,
            recheck_interval: config.recheck_interval,
            start: now,
            now,
            candidates: Vec::new(),
            transactions: VecDeque::new(),
            direct: None,
            lost_once: false,
            closed: false,
            peer_addrs: VecDeque::new(),
            reflexive: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: PunchStats::default(),
        };
        punch.sender_id = punch.rng.next_u64().to_be_bytes();
        for addr in config.remote_candidates {
            punch.add_remote_candidate(addr);
        }
        punch
    }

    /// Adds a candidate of the peer learnt late; it is checked at the next
    /// [`Punch::handle_timeout`]. False when it is already known, cannot be checked
    /// (unspecified, multicast, broadcast, reserved, port 0) or [`MAX_CANDIDATES`] are known.
    /// Filter what the peer sent with [`Punch::filter_candidates`] first.
    pub fn add_remote_candidate(&mut self, addr: SocketAddr) -> bool {
        let addr = normalize(addr);
        if self.candidates.iter().any(|c| same(c.addr, addr)) {
            return false;
        }
        let signalled = self.candidates.iter().filter(|c| c.signalled).count();
        if !checkable(addr) || signalled >= MAX_CANDIDATES {
            self.stats.candidates_refused += 1;
            return false;
        }
        self.candidates.push(Candidate {
            addr,
            next_check: None,
            signalled: true,
            retired: false,
        });
        true
    }

    /// The peer's candidates that a check of this call may go to, given `ours`: our own
    /// addresses (the local ones, and the mapped one the server reported). Unusable addresses
    /// (unspecified, multicast, broadcast, reserved, port 0) go; loopback stays only when one
    /// of ours is loopback; link-local only on a link-local subnet of ours (IPv4 /16, IPv6
    /// /64); private ones (RFC 1918, RFC 6598, RFC 4193) only in a private network of ours
    /// (IPv4 /24, IPv6 /48); documentation and benchmarking ranges only when one of ours is
    /// in one (a lab that uses them as public addresses). Duplicates go; at most
    /// [`MAX_CANDIDATES`] stay, in order.
    pub fn filter_candidates(candidates: &[SocketAddr], ours: &[IpAddr]) -> Vec<SocketAddr> {
        let ours: Vec<IpAddr> = ours.iter().map(|ip| addr::normalize(*ip)).collect();
        let mut out: Vec<SocketAddr> = Vec::new();
        for &candidate in candidates {
            let candidate = normalize(candidate);
            if out.len() >= MAX_CANDIDATES {
                break;
            }
            if candidate.port() == 0 || out.iter().any(|c| same(*c, candidate)) {
                continue;
            }
            let ip = candidate.ip();
            let keep = match scope(ip) {
                Scope::Unusable => false,
                Scope::Public => true,
                Scope::Loopback => ours.iter().any(|o| scope(*o) == Scope::Loopback),
                Scope::Lab => ours.iter().any(|o| scope(*o) == Scope::Lab),
                Scope::LinkLocal => ours
                    .iter()
                    .any(|o| scope(*o) == Scope::LinkLocal && same_prefix(ip, *o, 16, 64)),
                Scope::Private => ours
                    .iter()
                    .any(|o| scope(*o) == Scope::Private && same_prefix(ip, *o, 24, 48)),
            };
            if keep {
                out.push(candidate);
            }
        }
        out
    }

    /// Stops every check: no more datagrams or timeouts. [`Punch::path`] keeps the path that was
    /// in use, for the call's report.
    pub fn close(&mut self) {
        self.closed = true;
        self.transmits.clear();
        self.transactions.clear();
    }

    /// True once [`Punch::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The path media should take now.
    pub fn path(&self) -> Path {
        match self.direct {
            Some(d) => Path::Direct(d.addr),
            None => Path::Relay,
        }
    }

    /// The counters.
    pub fn stats(&self) -> PunchStats {
        self.stats
    }

    /// Our address as the peer saw it on the latest answer (XOR-MAPPED-ADDRESS).
    pub fn reflexive_address(&self) -> Option<SocketAddr> {
        self.reflexive
    }

    /// True when an authenticated check or answer of this call came from `addr`: direct RTP
    /// from it is the peer's.
    pub fn is_peer_address(&self, addr: SocketAddr) -> bool {
        let addr = normalize(addr);
        self.peer_addrs.iter().any(|a| same(*a, addr))
    }

    /// The remote candidates being checked (signalled and peer-reflexive).
    pub fn remote_candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.candidates.iter().map(|c| c.addr)
    }

    /// Handles a datagram that arrived on the media socket from `from`. True when it is a
    /// connectivity check or answer (it carries CALL-ID): it is consumed here, whether accepted
    /// or refused and counted. False for anything else (registration answers, keepalives, RTP),
    /// which the caller passes on.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Ok(message) = Message::decode(bytes) else {
            return false;
        };
        if message.attribute(ATTR_CALL_ID).is_none() {
            return false;
        }
        self.advance(now);
        let from = normalize(from);
        if self.closed {
            self.stats.ignored += 1;
            return true;
        }
        let call_ok = match covered(&message, ATTR_CALL_ID) {
            Some(value) => value.len() == 8 && value == self.call_id.to_be_bytes(),
            // A CALL-ID that MESSAGE-INTEGRITY does not cover proves nothing.
            None => false,
        };
        if !call_ok {
            self.stats.rejected_call += 1;
            return true;
        }
        if message.verify_integrity(&self.key.0).is_err() {
            self.stats.rejected_auth += 1;
            return true;
        }
        match message.kind {
            BINDING_REQUEST => self.handle_check(now, from, &message),
            BINDING_SUCCESS => self.handle_answer(now, from, &message),
            BINDING_INDICATION => self.handle_bye(&message),
            _ => self.stats.ignored += 1,
        }
        true
    }

    /// Sends the hang-up to the peer on the direct path (and every address it was
    /// authenticated from), then stops, as [`Punch::close`]. Nothing is sent on the relay path:
    /// there the server carries the hang-up.
    pub fn hang_up(&mut self) {
        if self.closed {
            return;
        }
        let direct = self.direct.is_some();
        self.close();
        if direct {
            let mut id = [0u8; 12];
            self.rng.fill_bytes(&mut id);
            let mut bye = Builder::new(BINDING_INDICATION, &id);
            bye.attribute(ATTR_CALL_ID, &self.call_id.to_be_bytes());
            bye.attribute(ATTR_PUNCH_SENDER, &self.sender_id);
            if let Ok(bytes) = bye.finish_with_integrity(&self.key.0) {
                let peers: Vec<SocketAddr> = self.peer_addrs.iter().copied().collect();
                for to in peers {
                    for _ in 0..BYE_COPIES {
                        self.queue(to, bytes.clone());
                    }
                }
            }
        }
    }

    fn handle_bye(&mut self, message: &Message<'_>) {
        match covered(message, ATTR_PUNCH_SENDER) {
            Some(sender) if sender.len() == 8 && sender != self.sender_id => {
                self.closed = true;
                self.direct = None;
                self.push_event(PunchEvent::PeerHungUp);
            }
            _ => self.stats.ignored += 1,
        }
    }

    fn handle_check(&mut self, now: Instant, from: SocketAddr, message: &Message<'_>) {
        match covered(message, ATTR_PUNCH_SENDER) {
            Some(sender) if sender.len() == 8 => {
                if sender == self.sender_id {
                    self.stats.rejected_own += 1;
                    return;
                }
            }
            _ => {
                self.stats.ignored += 1;
                return;
            }
        }
        self.stats.checks_received += 1;
        self.note_peer(from);
        let mut answer = Builder::new(BINDING_SUCCESS, &message.transaction_id);
        answer.xor_mapped_address(from);
        answer.attribute(ATTR_CALL_ID, &self.call_id.to_be_bytes());
        if let Ok(bytes) = answer.finish_with_integrity(&self.key.0)
            && self.queue(from, bytes)
        {
            self.stats.responses_sent += 1;
        }
        // A check from a new address: the peer's NAT mapped it there (peer-reflexive); check it
        // from now on like the others.
        let reflexive = self.candidates.iter().filter(|c| !c.signalled).count();
        if !self.candidates.iter().any(|c| same(c.addr, from)) && reflexive < MAX_PEER_REFLEXIVE {
            self.candidates.push(Candidate {
                addr: from,
                next_check: Some(now + self.relay_interval(now)),
                signalled: false,
                retired: false,
            });
        }
        // Triggered check, unless we have one there already or are settled on a direct path;
        // when the pace does not allow it now, it goes first at the next timeout.
        let recent = self
            .transactions
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(t.sent) < self.check_interval)
            .any(|t| same(t.destination, from));
        if self.direct.is_none() && !recent {
            if now >= self.next_send {
                self.send_check(now, from);
            } else if let Some(c) = self.candidates.iter_mut().find(|c| same(c.addr, from)) {
                c.next_check = None;
                c.retired = false;
            }
        }
    }

    fn handle_answer(&mut self, now: Instant, from: SocketAddr, message: &Message<'_>) {
        let Some(i) = self
            .transactions
            .iter()
            .position(|t| t.id == message.transaction_id && same(t.destination, from))
        else {
            self.stats.rejected_unmatched += 1;
            return;
        };
        self.transactions.remove(i);
        self.stats.responses_received += 1;
        self.note_peer(from);
        if let Ok(Some(mapped)) = message.xor_mapped_address()
            && message
                .offset_of(stun::ATTR_XOR_MAPPED_ADDRESS)
                .zip(message.integrity_offset())
                .is_some_and(|(a, i)| a < i)
        {
            self.reflexive = Some(normalize(mapped));
        }
        match &mut self.direct {
            Some(direct) if same(direct.addr, from) => direct.last_success = now,
            // Settled on another pair: this one is not needed.
            Some(_) => {}
            None => {
                self.direct = Some(Direct {
                    addr: from,
                    last_success: now,
                    next_consent: now + self.consent_interval,
                });
                self.stats.path_changes += 1;
                self.push_event(PunchEvent::DirectPath(from));
            }
        }
    }

    /// Sends the checks that are due and notices a lost direct path.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.closed {
            return;
        }
        let lifetime = self.consent_timeout.max(self.recheck_interval);
        while let Some(t) = self.transactions.front() {
            if now.saturating_duration_since(t.sent) < lifetime {
                break;
            }
            self.transactions.pop_front();
        }
        if let Some(direct) = self.direct {
            if now.saturating_duration_since(direct.last_success) >= self.consent_timeout {
                self.direct = None;
                self.lost_once = true;
                self.stats.path_changes += 1;
                self.push_event(PunchEvent::DirectLost(direct.addr));
                for c in &mut self.candidates {
                    c.next_check = None;
                }
            } else {
                if now >= direct.next_consent && now >= self.next_send {
                    let unanswered =
                        now.saturating_duration_since(direct.last_success) >= self.consent_interval;
                    let next = now
                        + if unanswered {
                            self.consent_retry_interval
                        } else {
                            self.consent_interval
                        };
                    if let Some(d) = &mut self.direct {
                        d.next_consent = next;
                    }
                    self.send_check(now, direct.addr);
                }
                return;
            }
        }
        self.retire_probes(now);
        if now < self.next_send {
            return;
        }
        // The one check the pace allows: the candidate waiting longest.
        let due = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.retired && c.next_check.is_none_or(|t| t <= now))
            .min_by_key(|(_, c)| c.next_check.unwrap_or(self.start))
            .map(|(i, c)| (i, c.addr));
        if let Some((i, addr)) = due {
            self.candidates[i].next_check = Some(now + self.relay_interval(now));
            self.send_check(now, addr);
        }
    }

    /// Retires the candidates the peer was never authenticated from once the probe window
    /// is over or the probe budget spent.
    fn retire_probes(&mut self, now: Instant) {
        let over = now.saturating_duration_since(self.start) >= self.probe_window
            || self.stats.probes_sent >= self.probe_budget;
        if !over {
            return;
        }
        for i in 0..self.candidates.len() {
            let c = self.candidates[i];
            if !c.retired && !self.is_peer_address(c.addr) {
                self.candidates[i].retired = true;
                self.stats.candidates_retired += 1;
            }
        }
    }

    /// When [`Punch::handle_timeout`] should be called next; `None` when nothing is pending
    /// (closed, or no candidate on the relay path).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if let Some(d) = self.direct {
            return Some(
                d.next_consent
                    .max(self.next_send)
                    .min(d.last_success + self.consent_timeout),
            );
        }
        self.candidates
            .iter()
            .filter(|c| !c.retired)
            .map(|c| c.next_check.unwrap_or(self.now))
            .min()
            .map(|t| t.max(self.next_send))
    }

    /// The next datagram to send from the media socket, and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PunchEvent> {
        self.events.pop_front()
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Interval of periodic checks while on the relay.
    fn relay_interval(&self, now: Instant) -> Duration {
        if self.lost_once {
            self.recheck_interval
        } else if now.saturating_duration_since(self.start) < self.fast_phase {
            self.check_interval
        } else {
            self.slow_interval
        }
    }

    fn send_check(&mut self, now: Instant, to: SocketAddr) {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        let mut check = Builder::new(BINDING_REQUEST, &id);
        check.attribute(ATTR_CALL_ID, &self.call_id.to_be_bytes());
        check.attribute(ATTR_PUNCH_SENDER, &self.sender_id);
        check.pad_to(CHECK_LEN, stun::TRAILER_LEN);
        let Ok(bytes) = check.finish_with_integrity(&self.key.0) else {
            return;
        };
        if !self.queue(to, bytes) {
            return;
        }
        if self.transactions.len() >= MAX_TRANSACTIONS {
            self.transactions.pop_front();
        }
        self.transactions.push_back(Transaction {
            id,
            destination: to,
            sent: now,
        });
        self.stats.checks_sent += 1;
        if !self.is_peer_address(to) {
            self.stats.probes_sent += 1;
        }
        self.next_send = now + self.pace;
    }

    fn queue(&mut self, to: SocketAddr, bytes: Vec<u8>) -> bool {
        if self.transmits.len() >= MAX_PENDING_TRANSMITS {
            self.stats.transmits_dropped += 1;
            return false;
        }
        self.transmits.push_back((to, bytes));
        true
    }

    fn push_event(&mut self, event: PunchEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn note_peer(&mut self, addr: SocketAddr) {
        if self.peer_addrs.iter().any(|a| same(*a, addr)) {
            return;
        }
        if self.peer_addrs.len() >= MAX_CANDIDATES {
            self.peer_addrs.pop_front();
        }
        self.peer_addrs.push_back(addr);
    }
}

/// True when `bytes` are a connectivity check or answer of some call (a STUN message with
/// CALL-ID): what [`Punch::handle_datagram`] consumes. For a driver with no call in progress,
/// such datagrams are stale and dropped, not given to [`crate::client::Client`].
pub fn is_punch_message(bytes: &[u8]) -> bool {
    Message::decode(bytes).is_ok_and(|m| m.attribute(ATTR_CALL_ID).is_some())
}

/// The value of the first attribute `kind` when MESSAGE-INTEGRITY covers it (it comes before).
fn covered<'a>(message: &Message<'a>, kind: u16) -> Option<&'a [u8]> {
    let offset = message.offset_of(kind)?;
    if offset >= message.integrity_offset()? {
        return None;
    }
    message.attribute(kind)
}

/// The same transport address: IP and port (an IPv6 scope id or flow label the socket reports
/// on a datagram need not be on the candidate it answers).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

/// Folds an IPv4-mapped IPv6 address to IPv4; keeps the scope id of other IPv6 addresses.
fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            SocketAddr::new(addr::normalize(addr.ip()), addr.port())
        }
        other => other,
    }
}

/// True for an address a check may go to at all (whatever our own addresses are).
fn checkable(addr: SocketAddr) -> bool {
    addr.port() != 0 && scope(addr.ip()) != Scope::Unusable
}

/// What kind of network an address is on, for [`Punch::filter_candidates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Unspecified, multicast, broadcast, "this network" or reserved: never checked.
    Unusable,
    Loopback,
    LinkLocal,
    /// RFC 1918, RFC 6598 shared (CGNAT) and RFC 4193 unique local addresses.
    Private,
    /// Documentation (RFC 5737, RFC 3849) and benchmarking (RFC 2544) ranges: not on the
    /// Internet, but test labs use them as public addresses.
    Lab,
    Public,
}

fn scope(ip: IpAddr) -> Scope {
    match addr::normalize(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || a == 0 || a >= 240 {
                Scope::Unusable
            } else if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_link_local() {
                Scope::LinkLocal
            } else if v4.is_private() || (a == 100 && (b & 0xc0) == 64) {
                Scope::Private
            } else if v4.is_documentation() || (a == 198 && (b & 0xfe) == 18) {
                Scope::Lab
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() || v6.is_multicast() {
                Scope::Unusable
            } else if v6.is_loopback() {
                Scope::Loopback
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Scope::LinkLocal
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Scope::Private
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Scope::Lab
            } else {
                Scope::Public
            }
        }
    }
}

/// True when `a` and `b` share their first `v4` (IPv4) or `v6` (IPv6) bits.
fn same_prefix(a: IpAddr, b: IpAddr, v4: u32, v6: u32) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - v4).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - v6).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    // A test's virtual clock starts at any instant; none is read again.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    /// Both sides of call 7, at `a` and `b`, and the first check `a` sent to `b`.
    fn pair(now: Instant) -> (Punch, Punch, SocketAddr, SocketAddr, Vec<u8>) {
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        let mut pa = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![b], 1), now);
        let pb = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![a], 2), now);
        pa.handle_timeout(now);
        let (to, check) = pa.poll_transmit().unwrap();
        assert_eq!(to, b);
        (pa, pb, a, b, check)
    }

    #[test]
    fn check_and_answer_select_the_path() {
        let now = Instant::now();
        let (mut pa, mut pb, a, b, check) = pair(now);
        assert!(check.len() >= CHECK_LEN);
        assert!(is_punch_message(&check));
        assert!(!is_punch_message(&stun::encode_binding_request(&[1; 12])));
        assert!(pb.handle_datagram(now, a, &check));
        let (to, answer) = pb.poll_transmit().unwrap();
        assert_eq!(to, a);
        assert!(answer.len() <= check.len());
        // And the triggered check back.
        let (to, _) = pb.poll_transmit().unwrap();
        assert_eq!(to, a);
        assert!(pa.handle_datagram(now, b, &answer));
        assert_eq!(pa.path(), Path::Direct(b));
        assert_eq!(pa.poll_event(), Some(PunchEvent::DirectPath(b)));
        assert_eq!(pa.reflexive_address(), Some(a));
        assert!(pa.is_peer_address(b));
        // The same answer again matches nothing any more.
        assert!(pa.handle_datagram(now, b, &answer));
        assert_eq!(pa.stats().rejected_unmatched, 1);
        assert_eq!(pa.stats().path_changes, 1);
    }

    #[test]
    fn answer_from_another_address_does_not_count() {
        let now = Instant::now();
        let (mut pa, mut pb, a, _, check) = pair(now);
        pb.handle_datagram(now, a, &check);
        let (_, answer) = pb.poll_transmit().unwrap();
        let elsewhere: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        assert!(pa.handle_datagram(now, elsewhere, &answer));
        assert_eq!(pa.path(), Path::Relay);
        assert_eq!(pa.stats().rejected_unmatched, 1);
    }

    #[test]
    fn own_check_is_not_the_peer() {
        let now = Instant::now();
        let me: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![me], 1), now);
        p.handle_timeout(now);
        let (to, check) = p.poll_transmit().unwrap();
        assert!(p.handle_datagram(now, to, &check));
        assert_eq!(p.poll_transmit(), None);
        assert_eq!(p.stats().rejected_own, 1);
    }

    #[test]
    fn candidates_are_bounded_and_filtered() {
        let now = Instant::now();
        let many = (0..40)
            .map(|i| SocketAddr::from(([192, 0, 2, 1], 1000 + i)))
            .collect();
        let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, many, 1), now);
        assert_eq!(p.remote_candidates().count(), MAX_CANDIDATES);
        assert!(!p.add_remote_candidate("0.0.0.0:1".parse().unwrap()));
        assert!(!p.add_remote_candidate("192.0.2.1:1000".parse().unwrap()));
        let mut q = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 1), now);
        assert!(!q.add_remote_candidate("224.0.0.1:5".parse().unwrap()));
        assert!(!q.add_remote_candidate("255.255.255.255:5".parse().unwrap()));
        assert!(!q.add_remote_candidate("192.0.2.1:0".parse().unwrap()));
        assert!(q.add_remote_candidate("[::ffff:192.0.2.1]:7".parse().unwrap()));
        assert_eq!(
            q.remote_candidates().collect::<Vec<_>>(),
            ["192.0.2.1:7".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(q.poll_timeout(), Some(now));
        assert!(!q.add_remote_candidate("0.1.2.3:5".parse().unwrap()));
        assert!(!q.add_remote_candidate("240.0.0.1:5".parse().unwrap()));
        // Paced: one check per timeout, every candidate in turn.
        let mut sent = Vec::new();
        let mut t = now;
        for _ in 0..MAX_CANDIDATES {
            assert!(p.poll_timeout().unwrap() <= t);
            p.handle_timeout(t);
            let (to, _) = p.poll_transmit().unwrap();
            assert_eq!(p.poll_transmit(), None);
            sent.push(to);
            t += Duration::from_millis(20);
        }
        sent.sort();
        sent.dedup();
        assert_eq!(sent.len(), MAX_CANDIDATES);
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// Each rule of `filter_candidates`: (candidate, our addresses, kept).
    #[test]
    fn candidates_are_filtered_by_our_own_addresses() {
        let home = ["192.168.1.20", "2001:4860::5"];
        let cases: &[(&str, &[&str], bool)] = &[
            ("8.8.8.8:5000", &home, true),
            ("[2a00:1450::1]:5000", &home, true),
            ("0.0.0.0:5000", &home, false),
            ("[::]:5000", &home, false),
            ("224.0.0.1:5000", &home, false),
            ("[ff02::1]:5000", &home, false),
            ("255.255.255.255:5000", &home, false),
            ("0.1.2.3:5000", &home, false),
            ("240.0.0.1:5000", &home, false),
            ("8.8.8.8:0", &home, false),
            // Loopback: only when we are on loopback (tests on one machine).
            ("127.0.0.1:5000", &home, false),
            ("[::1]:5000", &home, false),
            ("127.0.0.1:5000", &["127.0.0.1"], true),
            // Link-local: only on a link-local subnet of ours.
            ("169.254.7.7:5000", &home, false),
            ("169.254.7.7:5000", &["169.254.1.1"], true),
            ("[fe80::7]:5000", &home, false),
            ("[fe80::7]:5000", &["fe80::1"], true),
            // Private: only in a private network of ours.
            ("192.168.1.30:5000", &home, true),
            ("192.168.2.30:5000", &home, false),
            ("10.0.0.1:5000", &home, false),
            ("172.16.0.1:5000", &home, false),
            ("10.0.0.9:5000", &["10.0.0.1"], true),
            ("100.64.0.9:5000", &home, false),
            ("100.64.0.9:5000", &["100.64.0.1"], true),
            ("[fd00:1:2::9]:5000", &home, false),
            ("[fd00:1:2:3::9]:5000", &["fd00:1:2::1"], true),
            ("[fd00:1:3::9]:5000", &["fd00:1:2::1"], false),
            ("[::ffff:192.168.1.30]:5000", &home, true),
            // Documentation and benchmarking ranges: only in a lab that uses them.
            ("192.0.2.1:5000", &home, false),
            ("198.51.100.1:5000", &home, false),
            ("203.0.113.1:5000", &home, false),
            ("198.18.0.1:5000", &home, false),
            ("[2001:db8::1]:5000", &home, false),
            ("203.0.113.1:5000", &["10.1.0.2", "203.0.113.6"], true),
        ];
        for (candidate, ours, kept) in cases {
            let out = Punch::filter_candidates(&addrs(&[candidate]), &ips(ours));
            assert_eq!(out.len() == 1, *kept, "{candidate} with {ours:?}: {out:?}");
        }
        // IPv4-mapped candidates come out as IPv4.
        assert_eq!(
            Punch::filter_candidates(&addrs(&["[::ffff:8.8.8.8]:1"]), &[]),
            addrs(&["8.8.8.8:1"])
        );
    }

    #[test]
    fn at_most_eight_candidates_are_kept_in_order_without_duplicates() {
        let mut list: Vec<SocketAddr> = (0..40)
            .map(|i| SocketAddr::from(([8, 8, 8, 8], 1000 + i)))
            .collect();
        list.insert(1, list[0]);
        let out = Punch::filter_candidates(&list, &ips(&["192.168.1.20"]));
        assert_eq!(out.len(), MAX_CANDIDATES);
        assert_eq!(out[0], list[0]);
        assert_eq!(out[1..], list[2..=MAX_CANDIDATES][..], "{out:?}");
    }

    /// Every check of the call, `step` apart from `from`: a punch whose peer never answers.
    fn silent_peer(candidates: usize, until: Duration) -> (Punch, Vec<(Duration, SocketAddr)>) {
        let start = Instant::now();
        let list = (0..candidates)
            .map(|i| SocketAddr::from(([8, 8, 8, 8], 1000 + u16::try_from(i).unwrap())))
            .collect();
        let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, list, 1), start);
        let mut sent = Vec::new();
        while let Some(t) = p.poll_timeout() {
            if t - start > until {
                break;
            }
            p.handle_timeout(t);
            while let Some((to, _)) = p.poll_transmit() {
                sent.push((t - start, to));
            }
        }
        (p, sent)
    }

    #[test]
    fn checks_are_paced() {
        let (p, sent) = silent_peer(MAX_CANDIDATES, Duration::from_secs(2));
        for pair in sent.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= Duration::from_millis(20),
                "{pair:?}"
            );
        }
        // 2 s at one check per 20 ms at most.
        assert!((95..=101).contains(&sent.len()), "{}", sent.len());
        assert_eq!(p.stats().probes_sent, sent.len() as u64);
    }

    #[test]
    fn checks_to_silent_candidates_are_bounded_in_number_and_time() {
        // Many candidates: the budget ends it.
        let (p, sent) = silent_peer(MAX_CANDIDATES, Duration::from_secs(600));
        assert_eq!(sent.len(), 200);
        assert!(sent.last().unwrap().0 < Duration::from_secs(30));
        assert_eq!(p.stats().candidates_retired, MAX_CANDIDATES as u64);
        assert_eq!(p.poll_timeout(), None);
        // One candidate: the window ends it (2 s at 50 ms, then one a second).
        let (p, sent) = silent_peer(1, Duration::from_secs(600));
        assert!(sent.len() < 80, "{}", sent.len());
        assert!(sent.last().unwrap().0 < Duration::from_secs(30));
        assert_eq!(p.stats().candidates_retired, 1);
    }

    #[test]
    fn peer_reflexive_candidates_are_bounded_too() {
        let now = Instant::now();
        let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 1), now);
        let mut q = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 2), now);
        q.add_remote_candidate("8.8.8.8:1".parse().unwrap());
        q.handle_timeout(now);
        let (_, check) = q.poll_transmit().unwrap();
        for port in 0..40u16 {
            p.handle_datagram(now, SocketAddr::from(([8, 8, 4, 4], 2000 + port)), &check);
        }
        assert_eq!(p.remote_candidates().count(), MAX_PEER_REFLEXIVE);
        // Their checks are paced like the others: one triggered check, the rest later.
        let checks = std::iter::from_fn(|| p.poll_transmit())
            .filter(|(_, b)| Message::decode(b).is_ok_and(|m| m.kind == BINDING_REQUEST))
            .count();
        assert_eq!(checks, 1);
        assert_eq!(p.stats().responses_sent, 40);
    }

    #[test]
    fn transactions_are_bounded() {
        let now = Instant::now();
        let mut p = Punch::new(
            PunchConfig::new(b"s".to_vec(), 7, vec!["192.0.2.1:1".parse().unwrap()], 1),
            now,
        );
        for i in 0..(MAX_TRANSACTIONS as u64 * 2) {
            p.send_check(
                now + Duration::from_micros(i),
                "192.0.2.1:1".parse().unwrap(),
            );
            p.transmits.clear();
        }
        assert_eq!(p.transactions.len(), MAX_TRANSACTIONS);
    }

    #[test]
    fn ipv6_scope_and_mapped_v4_match_their_candidates() {
        let now = Instant::now();
        let a: SocketAddr = "[fe80::1]:4000".parse().unwrap();
        let b: SocketAddr = "[fe80::2]:5000".parse().unwrap();
        let mut pa = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![b], 1), now);
        let mut pb = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![a], 2), now);
        pa.handle_timeout(now);
        let (_, check) = pa.poll_transmit().unwrap();
        let scoped = |addr: SocketAddr| match addr {
            SocketAddr::V6(v6) => {
                SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), v6.port(), 0, 3))
            }
            v4 => v4,
        };
        assert!(pb.handle_datagram(now, scoped(a), &check));
        let (_, answer) = pb.poll_transmit().unwrap();
        assert!(pa.handle_datagram(now, scoped(b), &answer));
        assert_eq!(pa.path(), Path::Direct(scoped(b)));
        assert!(pa.is_peer_address(b));
        // IPv4-mapped IPv6 sources (a dual-stack socket) match IPv4 candidates.
        let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut pc = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![v4], 1), now);
        let mut pd = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 2), now);
        pc.handle_timeout(now);
        let (_, check) = pc.poll_transmit().unwrap();
        let me: SocketAddr = "192.0.2.9:9".parse().unwrap();
        pd.handle_datagram(now, me, &check);
        let (_, answer) = pd.poll_transmit().unwrap();
        assert!(pc.handle_datagram(now, "[::ffff:192.0.2.1]:4000".parse().unwrap(), &answer));
        assert_eq!(pc.path(), Path::Direct(v4));
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = PunchConfig::new(b"topsecret".to_vec(), 7, vec![], 1);
        assert!(!format!("{config:?}").contains("topsecret"));
        let punch = Punch::new(config, Instant::now());
        let debug = format!("{punch:?}");
        assert!(
            !debug.contains("topsecret") && !debug.contains("116, 111, 112"),
            "{debug}"
        );
    }

    #[test]
    fn a_hang_up_on_the_direct_path_ends_the_call_on_the_other_side() {
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        let now = Instant::now();
        let secret = b"0123456789abcdef".to_vec();
        let mut alice = Punch::new(PunchConfig::new(secret.clone(), 7, vec![b], 1), now);
        let mut bob = Punch::new(PunchConfig::new(secret, 7, vec![a], 2), now);
        for _ in 0..3 {
            alice.handle_timeout(now);
            bob.handle_timeout(now);
            while let Some((_, bytes)) = alice.poll_transmit() {
                bob.handle_datagram(now, a, &bytes);
            }
            while let Some((_, bytes)) = bob.poll_transmit() {
                alice.handle_datagram(now, b, &bytes);
            }
        }
        assert_eq!(alice.path(), Path::Direct(b));
        while alice.poll_event().is_some() {}
        while bob.poll_event().is_some() {}
        // A forged hang-up (wrong key) changes nothing.
        let mut eve = Punch::new(
            PunchConfig::new(b"fedcba9876543210".to_vec(), 7, vec![b], 3),
            now,
        );
        eve.direct = Some(Direct {
            addr: b,
            last_success: now,
            next_consent: now,
        });
        eve.peer_addrs.push_back(b);
        eve.hang_up();
        while let Some((_, bytes)) = eve.poll_transmit() {
            assert!(bob.handle_datagram(now, a, &bytes));
        }
        assert_eq!(bob.poll_event(), None);
        assert_eq!(bob.path(), Path::Direct(a));

        alice.hang_up();
        assert!(alice.is_closed());
        let byes: Vec<_> = std::iter::from_fn(|| alice.poll_transmit()).collect();
        assert_eq!(byes.len(), BYE_COPIES);
        for (to, bytes) in byes {
            assert_eq!(to, b);
            assert!(bob.handle_datagram(now, a, &bytes));
        }
        assert_eq!(bob.poll_event(), Some(PunchEvent::PeerHungUp));
        assert!(bob.is_closed());
    }
}
