//! The settings, outputs and counters of [`super::Punch`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one call's checks. [`PunchConfig::new`] gives the timings of `docs/calls.md`.
#[derive(Clone)]
pub struct PunchConfig {
    /// The call's secret (16 bytes from `Connected`), the MESSAGE-INTEGRITY key.
    pub secret: Vec<u8>,
    /// The call's id, carried in CALL-ID.
    pub call_id: u64,
    /// The other side's candidates (from `Connected`); at most [`MAX_CANDIDATES`](super::MAX_CANDIDATES) are used.
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
    /// At most this many checks go to candidates the peer was never authenticated from (100,
    /// openers included: issue 13's bound on what a call spends on probing).
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
    /// The first checks to each candidate go once with each of these IP TTLs (2 and 3): far
    /// enough to open our own router's mapping (and a carrier NAT's in front of it), not far
    /// enough to reach the peer's router. Empty: no such openers.
    pub opener_ttls: Vec<u8>,
    /// Checks with the normal TTL start this long after the openers (150 ms), so that the
    /// peer's openers have opened its router before our checks reach it.
    pub opener_lead: Duration,
    /// Birthday probing for a port-random NAT on one side ([`Birthday`]); `None`: none.
    pub birthday: Option<Birthday>,
    /// Birthday probing starts this long after the call is up when no direct path was found
    /// by then (250 ms: the normal checks find one in about 150 ms where they can).
    pub birthday_after: Duration,
    /// Spare sockets the port-random side opens (256).
    pub spares: u16,
    /// Probes the port-keeping side sends at most (2,048).
    pub spray_budget: u32,
    /// Gap between two probes (2.5 ms: 400 per second).
    pub spray_interval: Duration,
    /// The spare sockets are closed this long after they opened when no probe reached one
    /// (8 s: the whole budget goes in 5.1 s).
    pub spares_window: Duration,
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
            probe_budget: 100,
            slow_interval: Duration::from_secs(1),
            consent_interval: Duration::from_secs(1),
            consent_retry_interval: Duration::from_millis(200),
            consent_timeout: Duration::from_secs(3),
            recheck_interval: Duration::from_secs(2),
            opener_ttls: vec![2, 3],
            opener_lead: Duration::from_millis(150),
            birthday: None,
            birthday_after: Duration::from_millis(250),
            spares: 256,
            spray_budget: 2048,
            spray_interval: Duration::from_micros(2500),
            spares_window: Duration::from_secs(8),
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
            .field("opener_ttls", &self.opener_ttls)
            .field("opener_lead", &self.opener_lead)
            .field("birthday", &self.birthday)
            .field("birthday_after", &self.birthday_after)
            .field("spares", &self.spares)
            .field("spray_budget", &self.spray_budget)
            .field("spray_interval", &self.spray_interval)
            .field("spares_window", &self.spares_window)
            .finish_non_exhaustive()
    }
}

/// Birthday probing across one port-random NAT (`MASQUERADE --random-fully`): its mapping
/// towards the peer is a random port nobody can learn, and the peer's router lets in only
/// what comes from an address and port its client sent to. So the port-random side opens
/// [`PunchConfig::spares`] sockets, each of which sends one opener (low TTL) to the peer and
/// so gets its own random port in its router, and the port-keeping side sends probes to
/// random ports of the port-random side's address. A probe that hits one of the spares'
/// ports is let in and answered, and that spare carries the call's media from then on.
/// With 256 spares each probe hits with p = 256 / 64,512, so 2,048 probes find one with
/// probability 1 - (1 - p)^2048 = 99.97 %, and half the calls within 175 probes.
/// Chosen by [`super::birthday_role`] from both sides' candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Birthday {
    /// Our NAT maps each destination to a random port, the peer's keeps ports: open spare
    /// sockets, each sends an opener to `peer` (its port-keeping public address).
    Spares { peer: SocketAddr },
    /// The peer's NAT is port-random, ours keeps ports: probe random ports of `peer`.
    Spray { peer: std::net::IpAddr },
}

/// Which of the client's UDP sockets a datagram leaves from or came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Local {
    /// The media socket (registered with the server).
    #[default]
    Media,
    /// Spare socket number `n` (0-based) of birthday probing ([`PunchEvent::OpenSpares`]).
    Spare(u16),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// From which socket.
    pub local: Local,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
    /// Send it with this IP TTL (IPv6 hop limit) instead of the socket's: an opener
    /// ([`PunchConfig::opener_ttls`]).
    pub ttl: Option<u8>,
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
    /// The peer hung up over the direct path ([`Punch::hang_up`](super::Punch::hang_up) on its side). The checks stop.
    PeerHungUp,
    /// Open this many spare UDP sockets (IPv4, any port) for birthday probing, then call
    /// [`Punch::spares_opened`](super::Punch::spares_opened) with how many opened.
    OpenSpares(u16),
    /// Close the spare sockets, all but `keep` (the one the direct path runs on).
    CloseSpares { keep: Option<u16> },
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
    /// Datagrams dropped because [`MAX_PENDING_TRANSMITS`](super::MAX_PENDING_TRANSMITS) were already queued.
    pub transmits_dropped: u64,
    /// Candidates refused: the table was full, or the address cannot be checked.
    pub candidates_refused: u64,
    /// Checks sent to candidates the peer was not authenticated from (at most
    /// [`PunchConfig::probe_budget`]).
    pub probes_sent: u64,
    /// Candidates whose checks stopped: never answered within [`PunchConfig::probe_window`]
    /// or [`PunchConfig::probe_budget`].
    pub candidates_retired: u64,
    /// Openers sent: checks with a low TTL ([`PunchConfig::opener_ttls`]), counted in
    /// `checks_sent` and `probes_sent` too.
    pub openers_sent: u64,
    /// Spare sockets opened for birthday probing.
    pub spares_opened: u64,
    /// Birthday probes sent to random ports (counted in `checks_sent`, not `probes_sent`);
    /// the spares' openers are counted in `openers_sent`.
    pub spray_sent: u64,
}
