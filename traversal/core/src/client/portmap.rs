//! A UDP port mapping on the home router, sans-IO: PCP (RFC 6887) first, NAT-PMP (RFC 6886)
//! when the router only speaks that.
//!
//! A router that maps the media socket's port gives a public address that takes datagrams
//! from anyone (no hole punching needed): an extra candidate for calls. [`PortMap`] asks the
//! default gateway for one mapping of [`PortMapConfig::internal_port`], keeps it renewed, notices
//! when the router restarted and lost it, and deletes it on [`PortMap::release`].
//!
//! # The loop
//!
//! The caller owns the socket (the media socket, so that the mapping is for its port) and the
//! clock. It feeds [`PortMap`] what arrives and when: [`PortMap::handle_datagram`] for
//! datagrams from the gateway's port [`PORT`] (it answers `false` for anything that is not a
//! valid response to us), [`PortMap::handle_timeout`] when [`PortMap::poll_timeout`] is
//! reached, and [`PortMap::release`] when the candidate is no longer wanted. After every input
//! it drains [`PortMap::poll_transmit`] (datagrams to send to the gateway) and
//! [`PortMap::poll_event`], then sleeps until [`PortMap::poll_timeout`]. `PortMap` never reads
//! a clock or a random source: time is an input and the nonce comes from
//! [`PortMapConfig::seed`].
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddr};
//! use std::time::{Duration, Instant};
//! use traversal_core::portmap::wire::{PcpRequest, PcpResponse};
//! use traversal_core::portmap::{PortMap, PortMapConfig, PortMapEvent, Protocol, PORT};
//!
//! let gateway = Ipv4Addr::new(192, 168, 1, 1);
//! let now = Instant::now();
//! let config = PortMapConfig::new(gateway, Ipv4Addr::new(192, 168, 1, 20), 40000, 7);
//! let mut map = PortMap::new(config, now);
//! // The PCP MAP request goes to the gateway...
//! let (to, request) = map.poll_transmit().unwrap();
//! assert_eq!(to, SocketAddr::from((gateway, PORT)));
//! let request = PcpRequest::decode(&request).unwrap();
//! // ...which maps 203.0.113.7:40000 for an hour.
//! let mut granted = request.map;
//! granted.external_ip = Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped();
//! let response = PcpResponse { version: 2, result: 0, lifetime: 3600, epoch: 1000, map: Some(granted) };
//! assert!(map.handle_datagram(now, to, &response.encode()));
//! assert_eq!(
//!     map.poll_event(),
//!     Some(PortMapEvent::Mapped {
//!         protocol: Protocol::Pcp,
//!         external: "203.0.113.7:40000".parse().unwrap(),
//!         lifetime: Duration::from_secs(3600),
//!     })
//! );
//! // The renewal is due at half the lifetime.
//! assert_eq!(map.poll_timeout(), Some(now + Duration::from_secs(1800)));
//! ```
//!
//! # Rules
//!
//! - PCP first: a MAP request for UDP (version 2, opcode 1, protocol 17) suggesting the
//!   internal port as external port and `::ffff:0.0.0.0` as external address (the previous
//!   mapping's once there is one), with a 96-bit random nonce kept for the renewals and the
//!   deletion (RFC 6887 section 11.1), and our address as the client IP.
//! - Every request is retransmitted at [`PortMapConfig::retransmit_first`] (250 ms), doubling
//!   (RFC 6886 section 3.1), [`PortMapConfig::tries_per_protocol`] tries (4: given up 3.75 s
//!   after the first).
//! - NAT-PMP when PCP gets no answer, or an "unsupported version" answer of a lower version
//!   (RFC 6887 section 9; a NAT-PMP gateway answers version 0, result 1): an external address
//!   request (opcode 0) and a map UDP request (opcode 1), each retransmitted until answered.
//!   The mapping is the external address of the one and the external port of the other.
//! - Responses count only from the gateway's address and port [`PORT`], of the right version,
//!   opcode (with the response bit) and size (PCP: 24-1100 bytes, a multiple of 4, at least 60
//!   with the MAP payload; NAT-PMP: at least 12 and 16 bytes, 8 for a bare error), and with our
//!   internal port (PCP: also our nonce and UDP). Anything else is ignored and counted ([`PortMapStats::rejected`]); decoding never
//!   panics.
//! - A result code other than success ends it: [`PortMapEvent::Unavailable`] with the code in
//!   words ([`Unavailable`]), or [`PortMapEvent::Lost`] when a mapping was announced.
//! - Renewal at half the granted lifetime (as granted, even below RFC 6887's 120 s; at most
//!   [`MAX_LIFETIME`] is used). A renewal that gets no answer is tried again at half the time
//!   left (at least [`RENEW_RETRY_MIN`] later) until the mapping expires: then
//!   [`PortMapEvent::Lost`].
//! - The gateway's epoch (seconds since it started, in every response) is checked as RFC 6887
//!   section 8.5 says: going back more than a second, or running at a rate off ours by more than
//!   2 s + 1/16, means the router restarted and lost its mappings: the mapping is asked for again
//!   at once ([`PortMapStats::restarts`]); if that goes unanswered, [`PortMapEvent::Lost`]. A
//!   changed external address or port is a new [`PortMapEvent::Mapped`].
//! - [`PortMap::release`] sends the deletion (lifetime 0, the same nonce; NAT-PMP external port
//!   0), tries as above, and ends [`PortMapEvent::Released`] at the first answer or when the
//!   tries run out. After that, and after `Unavailable` or `Lost`, nothing is sent.
//! - Bounded: one mapping; at most [`MAX_PENDING_TRANSMITS`] datagrams and
//!   [`MAX_PENDING_EVENTS`] events wait, the oldest dropped first.
//!
//! # Left to the caller
//!
//! Finding the gateway and our address on its link, listening for the routers' multicast
//! announcements (port 5350), and judging the external address (a private or RFC 6598 address
//! means another NAT beyond the router: the candidate is of little use).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod types;
pub mod wire;

#[cfg(test)]
mod tests;

pub use types::{
    NatPmpResult, PcpResult, PortMapConfig, PortMapEvent, PortMapState, PortMapStats, Protocol,
    Unavailable,
};
use wire::{NatPmpRequest, NatPmpResponse, PcpMap, PcpRequest, PcpResponse, Response};

/// The port of PCP and NAT-PMP servers on the gateway (RFC 6887 section 19.1).
pub const PORT: u16 = 5351;
/// A granted lifetime above this is taken as this (renewals at least every 12 hours).
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The retransmission interval stops doubling here (RFC 6886 section 3.1 stops at 64 s).
pub const MAX_RETRANSMIT_INTERVAL: Duration = Duration::from_secs(64);
/// An unanswered renewal is tried again no sooner than this.
pub const RENEW_RETRY_MIN: Duration = Duration::from_secs(1);
/// At most this many datagrams wait in [`PortMap::poll_transmit`]; the oldest go first.
pub const MAX_PENDING_TRANSMITS: usize = 8;
/// At most this many events wait in [`PortMap::poll_event`]; the oldest go first.
pub const MAX_PENDING_EVENTS: usize = 8;
/// PCP's result code UNSUPP_VERSION; NAT-PMP's "unsupported version" is also 1.
const UNSUPPORTED_VERSION: u8 = 1;

/// What a run of requests is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The first mapping.
    Map,
    /// A renewal at half the lifetime.
    Renew,
    /// Mapping again after the gateway restarted: no answer and the mapping is lost.
    Remap,
    /// The deletion.
    Release,
}

/// One request (two for NAT-PMP) and its retransmissions.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    kind: Kind,
    protocol: Protocol,
    /// Tries sent so far.
    sent: u32,
    /// The wait after the next try.
    interval: Duration,
    /// The next try, or giving up once `sent` reached the tries.
    next: Instant,
    /// NAT-PMP: the external address answered in this run.
    address: Option<Ipv4Addr>,
    /// NAT-PMP: the external port and lifetime answered in this run.
    port: Option<(u16, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    protocol: Protocol,
    external: SocketAddr,
    expires: Instant,
    renew_at: Instant,
}

/// One UDP port mapping on the gateway. See the module documentation.
#[derive(Debug)]
pub struct PortMap {
    gateway: Ipv4Addr,
    client_ip: Ipv4Addr,
    internal_port: u16,
    /// The lifetime asked for, in seconds (at least 1).
    lifetime: u32,
    retransmit_first: Duration,
    tries: u32,
    /// PCP's mapping nonce: random, the same for renewals and the deletion.
    nonce: [u8; 12],
    state: PortMapState,
    mapping: Option<Mapping>,
    attempt: Option<Attempt>,
    /// The gateway's latest epoch and when it came (RFC 6887 section 8.5).
    epoch: Option<(Instant, u32)>,
    /// The gateway restarted during this run: map again once it is done.
    restart_pending: bool,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<PortMapEvent>,
    stats: PortMapStats,
}

impl PortMap {
    /// Starts asking for the mapping with PCP: the first request is ready in
    /// [`PortMap::poll_transmit`].
    pub fn new(config: PortMapConfig, now: Instant) -> Self {
        let mut nonce = [0u8; 12];
        StdRng::seed_from_u64(config.seed).fill_bytes(&mut nonce);
        let lifetime = u32::try_from(config.lifetime.as_secs()).unwrap_or(u32::MAX);
        let mut map = PortMap {
            gateway: config.gateway,
            client_ip: config.client_ip,
            internal_port: config.internal_port,
            lifetime: lifetime.max(1),
            retransmit_first: config.retransmit_first,
            tries: config.tries_per_protocol.max(1),
            nonce,
            state: PortMapState::Probing(Protocol::Pcp),
            mapping: None,
            attempt: None,
            epoch: None,
            restart_pending: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: PortMapStats::default(),
        };
        map.start(now, Kind::Map, Protocol::Pcp);
        map
    }

    /// Handles a datagram that arrived from `from`. True when it is a valid response to us
    /// from the gateway's port [`PORT`]: it is consumed here (acted upon, or counted as stale).
    /// False for anything else: from elsewhere (not counted), or from the gateway's port but
    /// malformed, truncated or not ours (counted in [`PortMapStats::rejected`]).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let from_gateway = from.port() == PORT
            && match from.ip() {
                IpAddr::V4(ip) => ip == self.gateway,
                IpAddr::V6(ip) => ip.to_ipv4_mapped() == Some(self.gateway),
            };
        if !from_gateway {
            return false;
        }
        let consumed = match wire::decode_response(bytes) {
            Some(Response::Pcp(response)) => self.handle_pcp(now, response),
            Some(Response::NatPmp(response)) => self.handle_nat_pmp(now, response),
            None => false,
        };
        if !consumed {
            self.stats.rejected += 1;
        }
        consumed
    }

    /// Retransmits, gives up, renews and expires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (PortMapState::Mapped { expires, .. }, Some(_)) = (self.state, self.mapping)
            && now >= expires
        {
            self.fail(Unavailable::Expired);
            return;
        }
        if let Some(attempt) = self.attempt
            && now >= attempt.next
        {
            if attempt.sent < self.tries {
                self.send(now);
            } else {
                self.give_up(now);
            }
        }
        if let (PortMapState::Mapped { .. }, Some(mapping), None) =
            (self.state, self.mapping, self.attempt)
            && now >= mapping.renew_at
        {
            self.start(now, Kind::Renew, mapping.protocol);
        }
    }

    /// The next datagram to send, to the gateway's port [`PORT`].
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// When [`PortMap::handle_timeout`] is due next; `None` once nothing more will be sent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.attempt.map(|a| a.next);
        if let (PortMapState::Mapped { expires, .. }, Some(mapping)) = (self.state, self.mapping) {
            next = Some(next.map_or(expires, |t| t.min(expires)));
            if self.attempt.is_none() {
                next = next.map(|t| t.min(mapping.renew_at));
            }
        }
        next
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PortMapEvent> {
        self.events.pop_front()
    }

    /// Deletes the mapping: requests with lifetime 0 (PCP with the mapping's nonce), then
    /// [`PortMapEvent::Released`] when the gateway answers or the tries run out. Without a
    /// mapping or a request under way, `Released` at once and nothing is sent. A second call
    /// does nothing.
    pub fn release(&mut self, now: Instant) {
        let protocol = match self.state {
            PortMapState::Releasing | PortMapState::Released => return,
            PortMapState::Unavailable(_) => {
                self.finish_release();
                return;
            }
            PortMapState::Probing(protocol) | PortMapState::Mapped { protocol, .. } => protocol,
        };
        self.transmits.clear();
        self.restart_pending = false;
        self.state = PortMapState::Releasing;
        self.start(now, Kind::Release, protocol);
    }

    /// Where the mapping stands.
    pub fn state(&self) -> &PortMapState {
        &self.state
    }

    /// The public address and port, while mapped.
    pub fn external(&self) -> Option<SocketAddr> {
        match self.state {
            PortMapState::Mapped { external, .. } => Some(external),
            _ => None,
        }
    }

    /// The counters.
    pub fn stats(&self) -> PortMapStats {
        self.stats
    }

    /// Starts a run of requests of `kind` and sends its first try.
    fn start(&mut self, now: Instant, kind: Kind, protocol: Protocol) {
        self.attempt = Some(Attempt {
            kind,
            protocol,
            sent: 0,
            interval: self.retransmit_first,
            next: now,
            address: None,
            port: None,
        });
        self.send(now);
    }

    /// Sends a try of the current run: the request, or for NAT-PMP those not yet answered.
    fn send(&mut self, now: Instant) {
        let Some(mut attempt) = self.attempt else {
            return;
        };
        let delete = attempt.kind == Kind::Release;
        let previous = self.mapping.map(|m| m.external);
        let mut datagrams: [Option<Vec<u8>>; 2] = [None, None];
        match attempt.protocol {
            Protocol::Pcp => {
                let (external_port, external_ip) = match previous {
                    Some(SocketAddr::V4(a)) => (a.port(), a.ip().to_ipv6_mapped()),
                    Some(SocketAddr::V6(a)) => (a.port(), *a.ip()),
                    None => (self.internal_port, Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()),
                };
                let request = PcpRequest {
                    lifetime: if delete { 0 } else { self.lifetime },
                    client_ip: wire::mapped(self.client_ip),
                    map: PcpMap {
                        nonce: self.nonce,
                        protocol: wire::PROTOCOL_UDP,
                        internal_port: self.internal_port,
                        external_port,
                        external_ip,
                    },
                };
                datagrams[0] = Some(request.encode());
            }
            Protocol::NatPmp => {
                if !delete && attempt.address.is_none() {
                    datagrams[0] = Some(NatPmpRequest::ExternalAddress.encode());
                }
                if attempt.port.is_none() {
                    let request = NatPmpRequest::MapUdp {
                        internal_port: self.internal_port,
                        // RFC 6886 section 3.4: a deletion suggests port 0.
                        external_port: match (delete, previous) {
                            (true, _) => 0,
                            (false, Some(external)) => external.port(),
                            (false, None) => self.internal_port,
                        },
                        lifetime: if delete { 0 } else { self.lifetime },
                    };
                    datagrams[1] = Some(request.encode());
                }
            }
        }
        let to = SocketAddr::V4(SocketAddrV4::new(self.gateway, PORT));
        for bytes in datagrams.into_iter().flatten() {
            if self.transmits.len() >= MAX_PENDING_TRANSMITS {
                self.transmits.pop_front();
                self.stats.dropped += 1;
            }
            self.transmits.push_back((to, bytes));
            self.stats.requests_sent += 1;
        }
        attempt.sent += 1;
        attempt.next = after(now, attempt.interval);
        attempt.interval = attempt
            .interval
            .saturating_mul(2)
            .min(MAX_RETRANSMIT_INTERVAL);
        self.attempt = Some(attempt);
    }

    /// The current run's tries are all unanswered.
    fn give_up(&mut self, now: Instant) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        match (attempt.kind, attempt.protocol) {
            (Kind::Map, Protocol::Pcp) => self.fall_back(now),
            (Kind::Map, Protocol::NatPmp) => self.fail(Unavailable::NoAnswer),
            (Kind::Renew, _) => {
                self.stats.renewals_unanswered += 1;
                if let Some(mapping) = self.mapping.as_mut() {
                    let left = mapping.expires.saturating_duration_since(now);
                    mapping.renew_at = after(now, (left / 2).max(RENEW_RETRY_MIN));
                }
            }
            (Kind::Remap, _) => self.fail(Unavailable::RemapFailed),
            (Kind::Release, _) => self.finish_release(),
        }
    }

    /// PCP is not spoken here: ask with NAT-PMP.
    fn fall_back(&mut self, now: Instant) {
        tracing::debug!(gateway = %self.gateway, "no PCP: trying NAT-PMP");
        self.state = PortMapState::Probing(Protocol::NatPmp);
        self.epoch = None;
        self.start(now, Kind::Map, Protocol::NatPmp);
    }

    /// No mapping, for `reason`: `Lost` if one was announced, else `Unavailable`.
    fn fail(&mut self, reason: Unavailable) {
        tracing::debug!(gateway = %self.gateway, %reason, "no port mapping");
        let event = match self.state {
            PortMapState::Mapped { .. } => PortMapEvent::Lost,
            _ => PortMapEvent::Unavailable(reason),
        };
        self.state = PortMapState::Unavailable(reason);
        self.stop();
        self.event(event);
    }

    fn finish_release(&mut self) {
        self.state = PortMapState::Released;
        self.stop();
        self.event(PortMapEvent::Released);
    }

    /// Nothing more is sent.
    fn stop(&mut self) {
        self.mapping = None;
        self.attempt = None;
        self.restart_pending = false;
        self.transmits.clear();
    }

    fn event(&mut self, event: PortMapEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.stats.dropped += 1;
        }
        self.events.push_back(event);
    }

    /// A result other than success to a request of the current run (not a deletion).
    fn refused(&mut self, now: Instant, reason: Unavailable, unsupported_version: bool) {
        let probing_pcp = matches!(
            self.attempt,
            Some(Attempt {
                kind: Kind::Map,
                protocol: Protocol::Pcp,
                ..
            })
        );
        if unsupported_version && probing_pcp {
            self.fall_back(now);
        } else {
            self.fail(reason);
        }
    }

    fn handle_pcp(&mut self, now: Instant, response: PcpResponse) -> bool {
        let Some(attempt) = self.attempt.filter(|a| a.protocol == Protocol::Pcp) else {
            // Valid and ours (the nonce matches) but nothing waits for it: a late answer. An
            // "unsupported version" is the answer to a PCP try sent before the fallback.
            let late_unsupported = response.version != wire::PCP_VERSION
                && response.result == UNSUPPORTED_VERSION
                && self.attempt.is_some_and(|a| a.protocol == Protocol::NatPmp);
            if late_unsupported
                || response.version == wire::PCP_VERSION
                    && response.map.is_some_and(|m| self.ours(&m))
            {
                self.stats.responses_stale += 1;
                return true;
            }
            return false;
        };
        let Some(map) = response
            .map
            .filter(|_| response.version == wire::PCP_VERSION)
        else {
            // A bare header (or another version): the server could not read our request.
            // Only an error means anything; RFC 6887 section 9 version negotiation included.
            if response.result == 0 {
                return false;
            }
            self.stats.responses_accepted += 1;
            if attempt.kind == Kind::Release {
                self.finish_release();
            } else {
                let result = PcpResult::from_code(response.result);
                self.refused(
                    now,
                    Unavailable::Pcp(result),
                    response.result == UNSUPPORTED_VERSION,
                );
            }
            return true;
        };
        if !self.ours(&map) {
            return false;
        }
        if attempt.kind == Kind::Release {
            if response.result != 0 || response.lifetime == 0 {
                self.stats.responses_accepted += 1;
                self.finish_release();
            } else {
                // The answer to a mapping request sent before the deletion.
                self.stats.responses_stale += 1;
            }
            return true;
        }
        if response.result != 0 {
            self.stats.responses_accepted += 1;
            let result = PcpResult::from_code(response.result);
            self.refused(
                now,
                Unavailable::Pcp(result),
                response.result == UNSUPPORTED_VERSION,
            );
            return true;
        }
        let ip = map.external_ip.to_canonical();
        if map.external_port == 0 || ip.is_unspecified() {
            return false;
        }
        self.stats.responses_accepted += 1;
        self.check_epoch(now, response.epoch, attempt.kind);
        if response.lifetime == 0 {
            self.fail(Unavailable::NoLifetime);
        } else {
            let external = SocketAddr::new(ip, map.external_port);
            self.granted(now, Protocol::Pcp, external, response.lifetime);
        }
        true
    }

    /// A MAP payload for our mapping: our nonce, UDP, our internal port (RFC 6887 section 11.3).
    fn ours(&self, map: &PcpMap) -> bool {
        map.nonce == self.nonce
            && map.protocol == wire::PROTOCOL_UDP
            && map.internal_port == self.internal_port
    }

    fn handle_nat_pmp(&mut self, now: Instant, response: NatPmpResponse) -> bool {
        let result = match response {
            NatPmpResponse::ExternalAddress { result, .. }
            | NatPmpResponse::MapUdp { result, .. }
            | NatPmpResponse::Error { result, .. } => result,
        };
        let Some(mut attempt) = self.attempt else {
            if let NatPmpResponse::MapUdp { internal_port, .. } = response
                && internal_port != self.internal_port
            {
                return false;
            }
            self.stats.responses_stale += 1;
            return true;
        };
        if attempt.protocol == Protocol::Pcp {
            // A NAT-PMP gateway answers a PCP request "unsupported version" (RFC 6887 section 9).
            if result == u16::from(UNSUPPORTED_VERSION) {
                self.stats.responses_accepted += 1;
                if attempt.kind == Kind::Release {
                    self.finish_release();
                } else {
                    let result = NatPmpResult::from_code(result);
                    self.refused(now, Unavailable::NatPmp(result), true);
                }
                return true;
            }
            return false;
        }
        if result == u16::from(UNSUPPORTED_VERSION) {
            // Our NAT-PMP requests are of version 0: this answers a PCP try sent before the
            // fallback (a slow gateway answers each of them).
            self.stats.responses_stale += 1;
            return true;
        }
        let release = attempt.kind == Kind::Release;
        match response {
            NatPmpResponse::MapUdp {
                result,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => {
                if internal_port != self.internal_port {
                    return false;
                }
                if release {
                    if result != 0 || lifetime == 0 {
                        self.stats.responses_accepted += 1;
                        self.finish_release();
                    } else {
                        self.stats.responses_stale += 1;
                    }
                    return true;
                }
                if attempt.port.is_some() {
                    self.stats.responses_stale += 1;
                    return true;
                }
                if result == 0 && lifetime != 0 && external_port == 0 {
                    return false;
                }
                self.stats.responses_accepted += 1;
                if result != 0 {
                    let reason = Unavailable::NatPmp(NatPmpResult::from_code(result));
                    self.refused(now, reason, false);
                    return true;
                }
                self.check_epoch(now, epoch, attempt.kind);
                if lifetime == 0 {
                    self.fail(Unavailable::NoLifetime);
                    return true;
                }
                attempt.port = Some((external_port, lifetime));
            }
            NatPmpResponse::ExternalAddress {
                result,
                epoch,
                address,
            } => {
                if release || attempt.address.is_some() {
                    self.stats.responses_stale += 1;
                    return true;
                }
                self.stats.responses_accepted += 1;
                if result != 0 {
                    let reason = Unavailable::NatPmp(NatPmpResult::from_code(result));
                    self.refused(now, reason, false);
                    return true;
                }
                self.check_epoch(now, epoch, attempt.kind);
                if address.is_unspecified() {
                    self.fail(Unavailable::NoExternalAddress);
                    return true;
                }
                attempt.address = Some(address);
            }
            NatPmpResponse::Error { opcode, result, .. } => {
                let ours = [wire::NAT_PMP_OP_ADDRESS, wire::NAT_PMP_OP_MAP_UDP]
                    .iter()
                    .any(|op| opcode == wire::RESPONSE_BIT | op);
                if !ours {
                    return false;
                }
                self.stats.responses_accepted += 1;
                if release {
                    self.finish_release();
                } else {
                    let reason = Unavailable::NatPmp(NatPmpResult::from_code(result));
                    self.refused(now, reason, false);
                }
                return true;
            }
        }
        if let (Some(address), Some((port, lifetime))) = (attempt.address, attempt.port) {
            self.attempt = Some(attempt);
            let external = SocketAddr::V4(SocketAddrV4::new(address, port));
            self.granted(now, Protocol::NatPmp, external, lifetime);
        } else {
            self.attempt = Some(attempt);
        }
        true
    }

    /// RFC 6887 section 8.5 (and RFC 6886 section 3.6): an epoch that went back more than a
    /// second, or ran at a rate off ours, means the gateway restarted and lost its mappings.
    fn check_epoch(&mut self, now: Instant, epoch: u32, kind: Kind) {
        let restarted = match self.epoch {
            None => false,
            Some((then, previous)) => epoch_invalid(then, previous, now, epoch),
        };
        self.epoch = Some((now, epoch));
        if restarted {
            tracing::debug!(gateway = %self.gateway, epoch, "the gateway restarted");
            self.stats.restarts += 1;
            // A restart seen by the answer to the new request itself needs no third one.
            if kind != Kind::Remap {
                self.restart_pending = true;
            }
        }
    }

    /// The gateway maps `external` for `lifetime` seconds (not 0).
    fn granted(&mut self, now: Instant, protocol: Protocol, external: SocketAddr, lifetime: u32) {
        let kind = self.attempt.take().map(|a| a.kind);
        let lifetime = Duration::from_secs(u64::from(lifetime)).min(MAX_LIFETIME);
        let changed = self
            .mapping
            .is_none_or(|m| m.external != external || m.protocol != protocol);
        let expires = after(now, lifetime);
        self.mapping = Some(Mapping {
            protocol,
            external,
            expires,
            renew_at: after(now, lifetime / 2),
        });
        self.state = PortMapState::Mapped {
            protocol,
            external,
            expires,
        };
        if matches!(kind, Some(Kind::Renew | Kind::Remap)) {
            self.stats.renewals += 1;
        }
        if changed {
            tracing::debug!(%protocol, %external, ?lifetime, "port mapped");
            self.event(PortMapEvent::Mapped {
                protocol,
                external,
                lifetime,
            });
        }
        if self.restart_pending {
            self.restart_pending = false;
            self.start(now, Kind::Remap, protocol);
        }
    }
}

/// RFC 6887 section 8.5: the epoch `epoch` received at `now` is invalid after `previous`
/// received at `then` when it is more than 1 s lower, or when the two clocks' deltas differ by
/// more than 2 s and 1/16.
fn epoch_invalid(then: Instant, previous: u32, now: Instant, epoch: u32) -> bool {
    if u64::from(epoch) + 1 < u64::from(previous) {
        return true;
    }
    let client_delta = now.saturating_duration_since(then).as_secs();
    let server_delta = u64::from(epoch.saturating_sub(previous));
    client_delta + 2 < server_delta - server_delta / 16
        || server_delta + 2 < client_delta - client_delta / 16
}

/// `now + d`, or `now` if that cannot be represented (lifetimes are capped well below).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}
