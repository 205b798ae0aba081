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
            .finish_non_exhaustive()
    }
}

/// A datagram to send from the media socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
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
}
