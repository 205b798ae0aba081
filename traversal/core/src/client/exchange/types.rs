//! The exchange client's public types: settings, sockets, datagrams, events, counters.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::lifetime::LIFETIME_MAX;
use crate::control::Verdict;

/// Client settings, discovered by the driver.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's UDP address (same as its TCP address).
    pub server: SocketAddr,
    /// The local address of the TCP connection: the patent's access IP.
    pub access: SocketAddr,
    /// Every local interface address, IPv4 and IPv6.
    pub local_addresses: Vec<IpAddr>,
    /// The media socket's local port.
    pub media_port: u16,
    /// Keepalive interval; `None` for [`DEFAULT_KEEPALIVE`], then the measured one. Either
    /// way it is kept under [`KEEPALIVE_FRACTION`] of the server's idle expiry.
    pub keepalive_interval: Option<Duration>,
    /// Measure the mapping lifetime with the second socket.
    pub measure_lifetime: bool,
    /// Ask the server for a probe through the mapping before each keepalive.
    pub verify_mapping: bool,
    /// Give up the first registration after this long without an answer.
    pub register_timeout: Duration,
    /// How long a probe may take to arrive after the server says it sent it.
    pub probe_wait: Duration,
    /// Longest silence the lifetime measurement tries (default [`LIFETIME_MAX`]).
    pub lifetime_max: Duration,
    /// Seeds transaction ids and nonces; give it a random value.
    pub seed: u64,
}

impl Config {
    /// Defaults for everything but the addresses.
    pub fn new(server: SocketAddr, access: SocketAddr, media_port: u16) -> Self {
        Config {
            server,
            access,
            local_addresses: Vec::new(),
            media_port,
            keepalive_interval: None,
            measure_lifetime: false,
            verify_mapping: true,
            register_timeout: Duration::from_secs(5),
            probe_wait: Duration::from_secs(1),
            lifetime_max: LIFETIME_MAX,
            seed: 0x5eed,
        }
    }
}

/// Which of the client's UDP sockets a datagram is for or from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The media socket: its mapping is the one kept alive and used for calls.
    Media,
    /// The second socket, used only to measure the mapping lifetime.
    Test,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub socket: Socket,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Why the client believes its mapping is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// A probe through the mapping did not arrive.
    ProbeNotReceived,
    /// Several keepalives in a row went unanswered.
    KeepalivesUnanswered,
}

/// What happened, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// S3: the server's first acknowledgement.
    Welcomed {
        user_index: u32,
        private_network: bool,
        observed: SocketAddr,
    },
    /// The media socket is registered (again) and the server saw it at `mapped`.
    Registered { user_index: u32, mapped: SocketAddr },
    /// S8/S10: the verdict (also after a re-registration).
    Verdict {
        verdict: Verdict,
        mapped: SocketAddr,
    },
    /// A keepalive answer showed another mapped address.
    MappingChanged { old: SocketAddr, new: SocketAddr },
    /// The mapping was lost; the client registers again.
    MappingLost { reason: LostReason },
    /// Answer to [`Client::check_reachability`]: did the server's probe arrive?
    Reachability { reachable: bool },
    /// Answer to [`Client::check_filtering`]: `Some(true)` when a probe from another server
    /// port did not arrive (the NAT or a firewall filters by remote port), `Some(false)` when
    /// it did, `None` when the server cannot send from another port.
    Filtering { filtered: Option<bool> },
    /// The lifetime measurement finished.
    LifetimeMeasured {
        /// The longest silence the mapping survived.
        lifetime: Duration,
        /// True when the mapping survived the longest silence tried
        /// ([`Config::lifetime_max`]): the lifetime is at least that.
        at_least: bool,
        /// The keepalive interval now in use.
        keepalive_interval: Duration,
    },
    /// The exchange failed; the client is of no further use.
    Failed { reason: String },
}

/// Counters for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub keepalives_sent: u64,
    pub keepalive_answers: u64,
    pub reregistrations: u64,
    pub mappings_lost: u64,
    pub mapping_changes: u64,
    pub probes_received: u64,
    /// Path challenges answered (the server checking that a new address receives).
    pub path_challenges: u64,
}
