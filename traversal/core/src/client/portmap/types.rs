//! The settings, outputs, reasons and counters of [`super::PortMap`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Settings of the port mapping. [`PortMapConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct PortMapConfig {
    /// The default gateway (the router); requests go to its port [`PORT`](super::PORT).
    pub gateway: Ipv4Addr,
    /// Our address as the gateway sees it: the source of our requests, PCP's client IP field.
    pub client_ip: Ipv4Addr,
    /// The UDP port to map (the media socket's port).
    pub internal_port: u16,
    /// The lifetime asked for (2 h). The gateway may grant less (or more, up to
    /// [`MAX_LIFETIME`](super::MAX_LIFETIME) is used).
    pub lifetime: Duration,
    /// Seeds the random PCP mapping nonce (e.g. from `getrandom`).
    pub seed: u64,
    /// The first retransmission interval (250 ms); it doubles after every try (RFC 6886
    /// section 3.1), up to [`MAX_RETRANSMIT_INTERVAL`](super::MAX_RETRANSMIT_INTERVAL).
    pub retransmit_first: Duration,
    /// Tries of a request before the gateway counts as silent (4; at least 1): PCP's then
    /// fall back to NAT-PMP, a renewal's are retried later.
    pub tries_per_protocol: u32,
}

impl PortMapConfig {
    /// A configuration with the default lifetime and timings.
    pub fn new(gateway: Ipv4Addr, client_ip: Ipv4Addr, internal_port: u16, seed: u64) -> Self {
        PortMapConfig {
            gateway,
            client_ip,
            internal_port,
            lifetime: Duration::from_secs(7200),
            seed,
            retransmit_first: Duration::from_millis(250),
            tries_per_protocol: 4,
        }
    }
}

/// The port-mapping protocol in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887), version 2.
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886), PCP's predecessor.
    NatPmp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
        })
    }
}

/// What the caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMapEvent {
    /// The gateway maps `external` to our internal port: offer it as a candidate. Again
    /// whenever the external address or port changes (replace the candidate).
    Mapped {
        /// The protocol that mapped it.
        protocol: Protocol,
        /// The public address and port the gateway forwards to our internal port.
        external: SocketAddr,
        /// The lifetime granted; renewals keep the mapping.
        lifetime: Duration,
    },
    /// No mapping was ever made, for this reason; nothing more is sent.
    Unavailable(Unavailable),
    /// A mapping announced by [`PortMapEvent::Mapped`] is gone (renewals unanswered until it
    /// expired, a renewal refused, or the gateway restarted and did not map again): withdraw
    /// the candidate. The reason is in [`PortMapState::Unavailable`]; nothing more is sent.
    Lost,
    /// After [`PortMap::release`](super::PortMap::release): the gateway confirmed the deletion,
    /// or it did not answer (the mapping is gone on our side anyway).
    Released,
}

/// Where the mapping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMapState {
    /// Asking for the first mapping with this protocol.
    Probing(Protocol),
    /// The gateway maps `external` to our internal port until `expires` (renewed before).
    Mapped {
        /// The protocol that mapped it.
        protocol: Protocol,
        /// The public address and port.
        external: SocketAddr,
        /// When it expires unless renewed.
        expires: Instant,
    },
    /// No mapping, for this reason (never made, or lost); nothing is sent.
    Unavailable(Unavailable),
    /// Deleting the mapping ([`PortMap::release`](super::PortMap::release)).
    Releasing,
    /// Deleted (or given up); nothing is sent.
    Released,
}

/// Why there is no mapping, in words (`Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// Neither a PCP nor a NAT-PMP request was answered.
    #[error("the router answered neither PCP nor NAT-PMP (port mapping is off or not supported)")]
    NoAnswer,
    /// The gateway refused the PCP mapping.
    #[error("the router refused the PCP port mapping: {0}")]
    Pcp(PcpResult),
    /// The gateway refused the NAT-PMP mapping.
    #[error("the router refused the NAT-PMP port mapping: {0}")]
    NatPmp(NatPmpResult),
    /// The gateway said it has no external address (NAT-PMP 0.0.0.0).
    #[error("the router has no external address (is it connected to the internet?)")]
    NoExternalAddress,
    /// The gateway granted a lifetime of 0 seconds to a mapping request.
    #[error("the router granted the port mapping for 0 seconds")]
    NoLifetime,
    /// Renewals went unanswered until the mapping expired.
    #[error("the router stopped answering renewals and the port mapping expired")]
    Expired,
    /// The gateway restarted (its epoch went back) and did not answer the new request.
    #[error("the router restarted and did not map the port again")]
    RemapFailed,
}

/// A PCP result code (RFC 6887 section 7.4) other than SUCCESS, in words (`Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PcpResult {
    /// 1 UNSUPP_VERSION.
    UnsupportedVersion,
    /// 2 NOT_AUTHORIZED.
    NotAuthorized,
    /// 3 MALFORMED_REQUEST.
    MalformedRequest,
    /// 4 UNSUPP_OPCODE.
    UnsupportedOpcode,
    /// 5 UNSUPP_OPTION.
    UnsupportedOption,
    /// 6 MALFORMED_OPTION.
    MalformedOption,
    /// 7 NETWORK_FAILURE.
    NetworkFailure,
    /// 8 NO_RESOURCES.
    NoResources,
    /// 9 UNSUPP_PROTOCOL.
    UnsupportedProtocol,
    /// 10 USER_EX_QUOTA.
    UserExceededQuota,
    /// 11 CANNOT_PROVIDE_EXTERNAL.
    CannotProvideExternal,
    /// 12 ADDRESS_MISMATCH.
    AddressMismatch,
    /// 13 EXCESSIVE_REMOTE_PEERS.
    ExcessiveRemotePeers,
    /// A code this client does not know.
    Other(u8),
}

impl PcpResult {
    /// The result for `code` (0, SUCCESS, is [`PcpResult::Other`]`(0)`: not an error here).
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => PcpResult::UnsupportedVersion,
            2 => PcpResult::NotAuthorized,
            3 => PcpResult::MalformedRequest,
            4 => PcpResult::UnsupportedOpcode,
            5 => PcpResult::UnsupportedOption,
            6 => PcpResult::MalformedOption,
            7 => PcpResult::NetworkFailure,
            8 => PcpResult::NoResources,
            9 => PcpResult::UnsupportedProtocol,
            10 => PcpResult::UserExceededQuota,
            11 => PcpResult::CannotProvideExternal,
            12 => PcpResult::AddressMismatch,
            13 => PcpResult::ExcessiveRemotePeers,
            other => PcpResult::Other(other),
        }
    }

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            PcpResult::UnsupportedVersion => 1,
            PcpResult::NotAuthorized => 2,
            PcpResult::MalformedRequest => 3,
            PcpResult::UnsupportedOpcode => 4,
            PcpResult::UnsupportedOption => 5,
            PcpResult::MalformedOption => 6,
            PcpResult::NetworkFailure => 7,
            PcpResult::NoResources => 8,
            PcpResult::UnsupportedProtocol => 9,
            PcpResult::UserExceededQuota => 10,
            PcpResult::CannotProvideExternal => 11,
            PcpResult::AddressMismatch => 12,
            PcpResult::ExcessiveRemotePeers => 13,
            PcpResult::Other(code) => code,
        }
    }
}

impl fmt::Display for PcpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = match self {
            PcpResult::UnsupportedVersion => "it does not speak this PCP version (UNSUPP_VERSION)",
            PcpResult::NotAuthorized => "port mapping is not allowed (NOT_AUTHORIZED)",
            PcpResult::MalformedRequest => "it could not read the request (MALFORMED_REQUEST)",
            PcpResult::UnsupportedOpcode => "it does not map ports (UNSUPP_OPCODE)",
            PcpResult::UnsupportedOption => "it does not know an option (UNSUPP_OPTION)",
            PcpResult::MalformedOption => "it could not read an option (MALFORMED_OPTION)",
            PcpResult::NetworkFailure => "its network is down (NETWORK_FAILURE)",
            PcpResult::NoResources => "it has no mappings left (NO_RESOURCES)",
            PcpResult::UnsupportedProtocol => "it does not map UDP (UNSUPP_PROTOCOL)",
            PcpResult::UserExceededQuota => {
                "this machine has too many mappings on it (USER_EX_QUOTA)"
            }
            PcpResult::CannotProvideExternal => {
                "it cannot give the external port asked for (CANNOT_PROVIDE_EXTERNAL)"
            }
            PcpResult::AddressMismatch => {
                "it sees this machine at another address, another router in between? \
                 (ADDRESS_MISMATCH)"
            }
            PcpResult::ExcessiveRemotePeers => "too many remote peers (EXCESSIVE_REMOTE_PEERS)",
            PcpResult::Other(code) => return write!(f, "unknown PCP result code {code}"),
        };
        f.write_str(words)
    }
}

/// A NAT-PMP result code (RFC 6886 section 3.5) other than success, in words (`Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatPmpResult {
    /// 1 Unsupported Version.
    UnsupportedVersion,
    /// 2 Not Authorized/Refused.
    NotAuthorized,
    /// 3 Network Failure.
    NetworkFailure,
    /// 4 Out of resources.
    OutOfResources,
    /// 5 Unsupported opcode.
    UnsupportedOpcode,
    /// A code this client does not know.
    Other(u16),
}

impl NatPmpResult {
    /// The result for `code` (0, success, is [`NatPmpResult::Other`]`(0)`: not an error here).
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => NatPmpResult::UnsupportedVersion,
            2 => NatPmpResult::NotAuthorized,
            3 => NatPmpResult::NetworkFailure,
            4 => NatPmpResult::OutOfResources,
            5 => NatPmpResult::UnsupportedOpcode,
            other => NatPmpResult::Other(other),
        }
    }

    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            NatPmpResult::UnsupportedVersion => 1,
            NatPmpResult::NotAuthorized => 2,
            NatPmpResult::NetworkFailure => 3,
            NatPmpResult::OutOfResources => 4,
            NatPmpResult::UnsupportedOpcode => 5,
            NatPmpResult::Other(code) => code,
        }
    }
}

impl fmt::Display for NatPmpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = match self {
            NatPmpResult::UnsupportedVersion => "it does not speak NAT-PMP version 0",
            NatPmpResult::NotAuthorized => "port mapping is not allowed or was refused",
            NatPmpResult::NetworkFailure => "its network is down (no external address?)",
            NatPmpResult::OutOfResources => "it has no mappings left",
            NatPmpResult::UnsupportedOpcode => "it does not map UDP ports",
            NatPmpResult::Other(code) => return write!(f, "unknown NAT-PMP result code {code}"),
        };
        f.write_str(words)
    }
}

/// Counters, for the log and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortMapStats {
    /// Datagrams sent to the gateway (first tries and retransmissions, both protocols).
    pub requests_sent: u64,
    /// Responses acted upon (a mapping, a refusal, a fallback, a deletion).
    pub responses_accepted: u64,
    /// Valid responses to us that came too late to matter (a retransmission's answer).
    pub responses_stale: u64,
    /// Datagrams from the gateway's port that were not a valid response to us (malformed,
    /// truncated, another nonce or port, another protocol); ignored.
    pub rejected: u64,
    /// Renewals the gateway answered.
    pub renewals: u64,
    /// Renewals that went unanswered after all their tries (retried later).
    pub renewals_unanswered: u64,
    /// Times the gateway's epoch went back (it restarted and lost its mappings).
    pub restarts: u64,
    /// Datagrams or events dropped because their queue was full.
    pub dropped: u64,
}
