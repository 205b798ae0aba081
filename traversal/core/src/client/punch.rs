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
//!         while let Some(t) = alice.poll_transmit() {
//!             moved |= bob.handle_datagram(now, a, &t.contents);
//!         }
//!         while let Some(t) = bob.poll_transmit() {
//!             moved |= alice.handle_datagram(now, b, &t.contents);
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
//! - Openers first ([`PunchConfig::opener_ttls`]): each signalled candidate gets one check
//!   with TTL 2 and one with TTL 3 at once, which open our router's mapping towards it (and a
//!   carrier NAT's in front) and die in the internet before the peer's router; checks with the
//!   normal TTL follow 150 ms later ([`PunchConfig::opener_lead`]), when the peer's openers
//!   have opened its router too. A router that lets the peer's first check in before its own
//!   client sent anything would otherwise keep a conntrack entry for it and move the client's
//!   own datagrams to another port (see `send_openers`). The driver sends a datagram with
//!   [`Transmit::ttl`] set with that TTL (IPv6: hop limit).
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
//!   together at most [`PunchConfig::probe_budget`] (100) checks; then it is retired
//!   (`candidates_retired`). Addresses the peer was authenticated from are checked as long as
//!   the call lasts (consent, and rechecks after a lost path).

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::addr;

mod birthday;
mod scope;
mod types;

use crate::stun::{
    self, BINDING_INDICATION, BINDING_REQUEST, BINDING_SUCCESS, Builder, Message, TransactionId,
};
pub use birthday::{PortKind, birthday_role, port_kind};
use scope::{checkable, normalize, same};
pub use types::{Birthday, Local, Path, PunchConfig, PunchEvent, PunchStats, Transmit};

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
/// (All the spares' openers go at once: [`PunchConfig::spares`] is 256.)
pub const MAX_PENDING_TRANSMITS: usize = 512;
/// At most this many birthday probes go in one [`Punch::handle_timeout`].
const SPRAY_BURST: u32 = 16;
/// A hang-up is sent this many times at once (indications are not answered or retransmitted).
pub const BYE_COPIES: usize = 3;
/// At most this many events wait in [`Punch::poll_event`]; the oldest go first.
const MAX_PENDING_EVENTS: usize = 64;
/// Checks are padded to at least this many bytes: more than the largest answer (20 header +
/// 24 IPv6 XOR-MAPPED-ADDRESS + 12 CALL-ID + 24 MESSAGE-INTEGRITY + 8 FINGERPRINT = 88).
pub const CHECK_LEN: usize = 96;

/// The call's secret, kept out of `Debug` output.
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// Our socket its checks leave from.
    local: Local,
    addr: SocketAddr,
    /// When the next periodic check goes; `None`: as soon as possible.
    next_check: Option<Instant>,
    /// Signalled (from `Connected` or [`Punch::add_remote_candidate`]), not peer-reflexive.
    signalled: bool,
    /// No more checks: it never answered within the probe window or budget.
    retired: bool,
    /// Its openers (low-TTL checks) went, or it needs none (peer-reflexive).
    opened: bool,
}

#[derive(Debug, Clone, Copy)]
struct Transaction {
    id: TransactionId,
    local: Local,
    destination: SocketAddr,
    sent: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Direct {
    local: Local,
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
    opener_ttls: Vec<u8>,
    opener_lead: Duration,
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
    transmits: VecDeque<Transmit>,
    events: VecDeque<PunchEvent>,
    stats: PunchStats,
    birthday: Option<BirthdayState>,
}

/// Birthday probing ([`Birthday`]) as it goes.
#[derive(Debug)]
struct BirthdayState {
    role: Birthday,
    /// It starts then, unless a direct path was found.
    at: Instant,
    spares: u16,
    spray_budget: u32,
    spray_interval: Duration,
    spares_window: Duration,
    phase: BirthdayPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BirthdayPhase {
    Waiting,
    /// Spares asked for ([`PunchEvent::OpenSpares`]), not opened yet.
    Opening,
    /// Spares open: closed at `until` unless a probe hit one first.
    Open {
        until: Instant,
    },
    /// Probes going, the next one at `next`.
    Probing {
        next: Instant,
    },
    Done,
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
            opener_ttls: config.opener_ttls,
            opener_lead: config.opener_lead,
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
            birthday: config.birthday.map(|role| BirthdayState {
                role,
                at: now + config.birthday_after,
                spares: config.spares,
                spray_budget: config.spray_budget,
                spray_interval: config.spray_interval.max(Duration::from_micros(100)),
                spares_window: config.spares_window,
                phase: BirthdayPhase::Waiting,
            }),
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
            local: Local::Media,
            addr,
            next_check: None,
            signalled: true,
            retired: false,
            opened: false,
        });
        true
    }

    /// The peer's candidates that a check of this call may go to, given `ours`: our own
    /// addresses (the local ones, and the mapped one the server reported). Unusable addresses
    /// (unspecified, multicast, broadcast, reserved, port 0) and addresses of a family none of
    /// ours is in (IPv6 for an IPv4-only host) go; loopback stays only when one
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
            if candidate.port() != 0
                && !out.iter().any(|c| same(*c, candidate))
                && scope::reachable(candidate.ip(), &ours)
            {
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

    /// The socket media leaves from on the direct path ([`Local::Media`] on the relay).
    pub fn direct_local(&self) -> Local {
        self.direct.map_or(Local::Media, |d| d.local)
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
        self.handle_datagram_on(now, Local::Media, from, bytes)
    }

    /// [`Punch::handle_datagram`] for a datagram that came in on `local`.
    pub fn handle_datagram_on(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddr,
        bytes: &[u8],
    ) -> bool {
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
            BINDING_REQUEST => self.handle_check(now, local, from, &message),
            BINDING_SUCCESS => self.handle_answer(now, local, from, &message),
            BINDING_INDICATION => self.handle_bye(&message),
            _ => self.stats.ignored += 1,
        }
        // A direct path ends birthday probing at once: the spares but its own close.
        if self.direct.is_some() && !self.closed {
            self.birthday_step(now);
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
        let direct = self.direct.map(|d| d.local);
        self.close();
        if let Some(local) = direct {
            let mut id = [0u8; 12];
            self.rng.fill_bytes(&mut id);
            let mut bye = Builder::new(BINDING_INDICATION, &id);
            bye.attribute(ATTR_CALL_ID, &self.call_id.to_be_bytes());
            bye.attribute(ATTR_PUNCH_SENDER, &self.sender_id);
            if let Ok(bytes) = bye.finish_with_integrity(&self.key.0) {
                let peers: Vec<SocketAddr> = self.peer_addrs.iter().copied().collect();
                for to in peers {
                    for _ in 0..BYE_COPIES {
                        self.queue(local, to, bytes.clone(), None);
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

    fn handle_check(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddr,
        message: &Message<'_>,
    ) {
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
            && self.queue(local, from, bytes, None)
        {
            self.stats.responses_sent += 1;
        }
        // A check from a new address: the peer's NAT mapped it there (peer-reflexive); check it
        // from now on like the others.
        let reflexive = self.candidates.iter().filter(|c| !c.signalled).count();
        let known = |c: &Candidate| c.local == local && same(c.addr, from);
        if !self.candidates.iter().any(known) && reflexive < MAX_PEER_REFLEXIVE {
            self.candidates.push(Candidate {
                local,
                addr: from,
                next_check: Some(now + self.relay_interval(now)),
                signalled: false,
                retired: false,
                opened: true,
            });
        }
        // Triggered check, unless we have one there already or are settled on a direct path;
        // when the pace does not allow it now, it goes first at the next timeout.
        let recent = self
            .transactions
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(t.sent) < self.check_interval)
            .any(|t| t.local == local && same(t.destination, from));
        if self.direct.is_none() && !recent {
            if now >= self.next_send {
                self.send_check(now, local, from, None);
            } else if let Some(c) = self.candidates.iter_mut().find(|c| known(c)) {
                c.next_check = None;
                c.retired = false;
            }
        }
    }

    fn handle_answer(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddr,
        message: &Message<'_>,
    ) {
        let Some(i) = self.transactions.iter().position(|t| {
            t.id == message.transaction_id && t.local == local && same(t.destination, from)
        }) else {
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
            Some(direct) if direct.local == local && same(direct.addr, from) => {
                direct.last_success = now
            }
            // An IPv6 pair is preferred to an IPv4 one (no NAT on it, fewer hops to go wrong):
            // the media moves; the IPv4 pair stays the peer's too until the call ends.
            Some(direct) if direct.addr.is_ipv4() && from.is_ipv6() => {
                *direct = Direct {
                    local,
                    addr: from,
                    last_success: now,
                    next_consent: now + self.consent_interval,
                };
                self.stats.path_changes += 1;
                self.push_event(PunchEvent::DirectPath(from));
            }
            // Settled on another pair: this one is not needed.
            Some(_) => {}
            None => {
                self.direct = Some(Direct {
                    local,
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
        self.birthday_step(now);
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
                    self.send_check(now, direct.local, direct.addr, None);
                }
                // On IPv4, the IPv6 candidates are still checked: an IPv6 pair is preferred.
                if direct.addr.is_ipv6() {
                    return;
                }
            }
        }
        let upgrading = self.direct.is_some();
        self.retire_probes(now);
        self.send_openers(now);
        if now < self.next_send {
            return;
        }
        // The one check the pace allows: the candidate waiting longest.
        let due = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.retired && c.next_check.is_none_or(|t| t <= now))
            .filter(|(_, c)| !upgrading || c.addr.is_ipv6())
            .min_by_key(|(_, c)| c.next_check.unwrap_or(self.start))
            .map(|(i, c)| (i, c.local, c.addr));
        if let Some((i, local, addr)) = due {
            self.candidates[i].next_check = Some(now + self.relay_interval(now));
            self.send_check(now, local, addr, None);
        }
    }

    /// Sends the openers of every signalled candidate that has none yet: a check with each
    /// of [`PunchConfig::opener_ttls`], at once (they are few and small, and die a few hops
    /// out). Its checks with the normal TTL follow [`PunchConfig::opener_lead`] after the
    /// start.
    ///
    /// Why: a router that lets unsolicited datagrams in on its WAN side (a bare Linux
    /// router, many carrier NATs) keeps a conntrack entry for the peer's first check when it
    /// arrives before its own client sent anything towards the peer; the client's own
    /// datagrams to the peer then leave from another port, which the peer never checks. The
    /// openers create each side's mapping towards the other before any check reaches a
    /// router, and die in between.
    fn send_openers(&mut self, now: Instant) {
        if self.opener_ttls.is_empty() {
            return;
        }
        let first_check = now.max(self.start + self.opener_lead);
        for i in 0..self.candidates.len() {
            let c = self.candidates[i];
            if c.opened || c.retired {
                continue;
            }
            self.candidates[i].opened = true;
            for t in 0..self.opener_ttls.len() {
                let ttl = self.opener_ttls[t];
                if self.send_check(now, c.local, c.addr, Some(ttl)) {
                    self.stats.openers_sent += 1;
                }
            }
            if c.next_check.is_none_or(|t| t < first_check) {
                self.candidates[i].next_check = Some(first_check);
            }
        }
    }

    /// The spare sockets [`PunchEvent::OpenSpares`] asked for are open: `opened` of them (they
    /// are [`Local::Spare`] 0 to `opened - 1`). Each sends one opener to the peer, with the
    /// largest of [`PunchConfig::opener_ttls`], so that it gets a mapping in our router
    /// towards the peer that the peer's probes may hit, without reaching the peer's router.
    pub fn spares_opened(&mut self, now: Instant, opened: u16) {
        self.advance(now);
        let Some(b) = &mut self.birthday else {
            return;
        };
        let Birthday::Spares { peer } = b.role else {
            return;
        };
        if b.phase != BirthdayPhase::Opening || self.closed {
            return;
        }
        if opened == 0 {
            b.phase = BirthdayPhase::Done;
            return;
        }
        b.phase = BirthdayPhase::Open {
            until: now + b.spares_window,
        };
        self.stats.spares_opened += u64::from(opened);
        let ttl = self.opener_ttls.iter().copied().max();
        for i in 0..opened {
            if self.queue_check(now, Local::Spare(i), peer, ttl) {
                self.stats.openers_sent += 1;
            }
        }
    }

    /// Moves birthday probing on: starts it when no direct path came in time, sends the
    /// probes that are due, ends it (closing the spares but the one in use).
    fn birthday_step(&mut self, now: Instant) {
        let direct = self.direct.map(|d| d.local);
        let Some(b) = &mut self.birthday else {
            return;
        };
        match (b.phase, b.role) {
            (BirthdayPhase::Done | BirthdayPhase::Opening, _) => {}
            (BirthdayPhase::Waiting, _) if direct.is_some() => b.phase = BirthdayPhase::Done,
            (BirthdayPhase::Waiting, _) if now < b.at => {}
            (BirthdayPhase::Waiting, Birthday::Spares { .. }) => {
                b.phase = BirthdayPhase::Opening;
                let spares = b.spares;
                self.push_event(PunchEvent::OpenSpares(spares));
            }
            (BirthdayPhase::Waiting, Birthday::Spray { .. }) => {
                // After the peer's spares sent their openers (the same lead as the openers').
                b.phase = BirthdayPhase::Probing {
                    next: now + self.opener_lead,
                };
            }
            (BirthdayPhase::Open { until }, _) => {
                if direct.is_some() || now >= until {
                    b.phase = BirthdayPhase::Done;
                    // The spare the direct path runs on stays, with its candidates.
                    let keep = match direct {
                        Some(Local::Spare(i)) => Some(i),
                        _ => None,
                    };
                    self.candidates.retain(|c| match c.local {
                        Local::Media => true,
                        Local::Spare(i) => keep == Some(i),
                    });
                    self.push_event(PunchEvent::CloseSpares { keep });
                }
            }
            (BirthdayPhase::Probing { mut next }, role) => {
                let Birthday::Spray { peer } = role else {
                    return;
                };
                if direct.is_some() || self.stats.spray_sent >= u64::from(b.spray_budget) {
                    b.phase = BirthdayPhase::Done;
                    return;
                }
                let (interval, budget) = (b.spray_interval, u64::from(b.spray_budget));
                let mut burst = 0;
                while next <= now && self.stats.spray_sent < budget && burst < SPRAY_BURST {
                    // Any port a NAT hands out (1024-65535), at random.
                    let port = 1024 + (self.rng.next_u32() % 64_512) as u16;
                    if !self.queue_check(now, Local::Media, SocketAddr::new(peer, port), None) {
                        break;
                    }
                    self.stats.spray_sent += 1;
                    next += interval;
                    burst += 1;
                }
                // Late (a stalled thread): go on from now rather than in one burst.
                let next = next.max(now.checked_sub(interval).unwrap_or(now));
                if let Some(b) = &mut self.birthday {
                    b.phase = BirthdayPhase::Probing { next };
                }
            }
        }
    }

    /// When birthday probing has something to do next.
    fn birthday_timeout(&self) -> Option<Instant> {
        let b = self.birthday.as_ref()?;
        match b.phase {
            BirthdayPhase::Waiting => Some(b.at),
            BirthdayPhase::Open { until } => Some(until),
            BirthdayPhase::Probing { next } => Some(next),
            BirthdayPhase::Opening | BirthdayPhase::Done => None,
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
        let checks = self
            .candidates
            .iter()
            .filter(|c| !c.retired)
            // On a direct IPv4 pair, only the IPv6 candidates are still checked.
            .filter(|c| {
                self.direct
                    .is_none_or(|d| d.addr.is_ipv4() && c.addr.is_ipv6())
            })
            .map(|c| c.next_check.unwrap_or(self.now))
            .min()
            .map(|t| t.max(self.next_send));
        let checks = match (checks, self.birthday_timeout()) {
            (Some(c), Some(b)) => Some(c.min(b)),
            (c, b) => c.or(b),
        };
        match self.direct {
            Some(d) => {
                let consent = d
                    .next_consent
                    .max(self.next_send)
                    .min(d.last_success + self.consent_timeout);
                Some(checks.map_or(consent, |c| c.min(consent)))
            }
            None => checks,
        }
    }

    /// The next datagram to send from the media socket, where, and with what TTL.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
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

    /// Sends a check to `to` from `local` (with `ttl`, for an opener); false when it could not
    /// be queued.
    fn send_check(&mut self, now: Instant, local: Local, to: SocketAddr, ttl: Option<u8>) -> bool {
        if !self.queue_check(now, local, to, ttl) {
            return false;
        }
        if !self.is_peer_address(to) {
            self.stats.probes_sent += 1;
        }
        self.next_send = now + self.pace;
        true
    }

    /// Queues a check and remembers its transaction; counted in `checks_sent` only.
    fn queue_check(&mut self, now: Instant, local: Local, to: SocketAddr, ttl: Option<u8>) -> bool {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        let mut check = Builder::new(BINDING_REQUEST, &id);
        check.attribute(ATTR_CALL_ID, &self.call_id.to_be_bytes());
        check.attribute(ATTR_PUNCH_SENDER, &self.sender_id);
        check.pad_to(CHECK_LEN, stun::TRAILER_LEN);
        let Ok(bytes) = check.finish_with_integrity(&self.key.0) else {
            return false;
        };
        if !self.queue(local, to, bytes, ttl) {
            return false;
        }
        if self.transactions.len() >= MAX_TRANSACTIONS {
            self.transactions.pop_front();
        }
        self.transactions.push_back(Transaction {
            id,
            local,
            destination: to,
            sent: now,
        });
        self.stats.checks_sent += 1;
        true
    }

    fn queue(&mut self, local: Local, to: SocketAddr, bytes: Vec<u8>, ttl: Option<u8>) -> bool {
        if self.transmits.len() >= MAX_PENDING_TRANSMITS {
            self.stats.transmits_dropped += 1;
            return false;
        }
        self.transmits.push_back(Transmit {
            local,
            destination: to,
            contents: bytes,
            ttl,
        });
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

#[cfg(test)]
mod tests;
