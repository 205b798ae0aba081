//! Unit tests of [`super::PortMap`], against a small fake gateway that answers by the RFCs.

// A test's virtual clock starts at any instant; none is read again.
#![allow(clippy::disallowed_methods)]

use super::wire::{NatPmpRequest, NatPmpResponse, PcpRequest, PcpResponse};
use super::*;
use proptest::prelude::*;
use std::net::Ipv6Addr;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const INTERNAL_PORT: u16 = 40000;

fn gateway_addr() -> SocketAddr {
    SocketAddr::from((GATEWAY, PORT))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    /// PCP version 2 (and NAT-PMP).
    Pcp,
    /// NAT-PMP only: PCP requests get "unsupported version".
    NatPmp,
    /// NAT-PMP only, and PCP requests are dropped.
    NatPmpSilentToPcp,
    /// Nothing answers.
    Nothing,
}

/// A router's PCP / NAT-PMP server, one mapping table entry per internal port.
struct Gateway {
    speaks: Speaks,
    /// Epoch 0 is here.
    start: Instant,
    /// The external port the next new mapping gets.
    next_port: u16,
    /// The mapping: internal port -> external port.
    mapped: Option<(u16, u16)>,
    /// Granted lifetimes are at most this.
    max_lifetime: u32,
    /// Refuse with this result code (PCP or NAT-PMP).
    refuse: Option<u8>,
    /// Every request received.
    requests: Vec<Vec<u8>>,
}

impl Gateway {
    fn new(speaks: Speaks, now: Instant) -> Gateway {
        Gateway {
            speaks,
            // The router has been up for a while.
            start: now - Duration::from_secs(5000),
            next_port: INTERNAL_PORT,
            mapped: None,
            max_lifetime: 600,
            refuse: None,
            requests: Vec::new(),
        }
    }

    fn epoch(&self, now: Instant) -> u32 {
        now.duration_since(self.start).as_secs() as u32
    }

    /// Loses every mapping; the next one gets another port.
    fn restart(&mut self, now: Instant) {
        self.start = now;
        self.mapped = None;
        self.next_port += 1;
    }

    fn assign(&mut self, internal: u16) -> u16 {
        match self.mapped {
            Some((i, e)) if i == internal => e,
            _ => {
                let e = self.next_port;
                self.mapped = Some((internal, e));
                e
            }
        }
    }

    fn answer(&mut self, now: Instant, bytes: &[u8]) -> Option<Vec<u8>> {
        self.requests.push(bytes.to_vec());
        let epoch = self.epoch(now);
        match self.speaks {
            Speaks::Nothing => return None,
            Speaks::Pcp => {}
            Speaks::NatPmp | Speaks::NatPmpSilentToPcp if bytes.first() != Some(&0) => {
                if self.speaks == Speaks::NatPmpSilentToPcp {
                    return None;
                }
                let opcode = bytes.get(1).copied().unwrap_or(0) | 0x80;
                return Some(
                    NatPmpResponse::Error {
                        opcode,
                        result: 1,
                        epoch,
                    }
                    .encode(),
                );
            }
            Speaks::NatPmp | Speaks::NatPmpSilentToPcp => {}
        }
        if let Some(request) = PcpRequest::decode(bytes) {
            let mut map = request.map;
            let lifetime = request.lifetime.min(self.max_lifetime);
            if let Some(code) = self.refuse {
                return Some(
                    PcpResponse {
                        version: 2,
                        result: code,
                        lifetime: 30,
                        epoch,
                        map: Some(map),
                    }
                    .encode(),
                );
            }
            if lifetime == 0 {
                self.mapped = None;
            } else {
                map.external_port = self.assign(map.internal_port);
                map.external_ip = EXTERNAL.to_ipv6_mapped();
            }
            return Some(
                PcpResponse {
                    version: 2,
                    result: 0,
                    lifetime,
                    epoch,
                    map: Some(map),
                }
                .encode(),
            );
        }
        let result = u16::from(self.refuse.unwrap_or(0));
        match NatPmpRequest::decode(bytes)? {
            NatPmpRequest::ExternalAddress => Some(
                NatPmpResponse::ExternalAddress {
                    result,
                    epoch,
                    address: EXTERNAL,
                }
                .encode(),
            ),
            NatPmpRequest::MapUdp {
                internal_port,
                lifetime,
                ..
            } => {
                let (external_port, lifetime) = if result != 0 {
                    (0, 0)
                } else if lifetime == 0 {
                    self.mapped = None;
                    (0, 0)
                } else {
                    (self.assign(internal_port), lifetime.min(self.max_lifetime))
                };
                Some(
                    NatPmpResponse::MapUdp {
                        result,
                        epoch,
                        internal_port,
                        external_port,
                        lifetime,
                    }
                    .encode(),
                )
            }
        }
    }
}

fn config() -> PortMapConfig {
    PortMapConfig::new(GATEWAY, CLIENT, INTERNAL_PORT, 42)
}

/// Delivers everything `map` sends to the gateway and the answers back, until quiet.
fn exchange(map: &mut PortMap, gateway: &mut Gateway, now: Instant) {
    while let Some((to, bytes)) = map.poll_transmit() {
        assert_eq!(to, gateway_addr());
        if let Some(answer) = gateway.answer(now, &bytes) {
            assert!(
                map.handle_datagram(now, gateway_addr(), &answer),
                "answer refused"
            );
        }
    }
}

/// Runs every timeout up to `until`, exchanging after each; returns the time reached.
fn run_until(
    map: &mut PortMap,
    gateway: &mut Gateway,
    mut now: Instant,
    until: Instant,
) -> Instant {
    exchange(map, gateway, now);
    while let Some(t) = map.poll_timeout() {
        if t > until {
            break;
        }
        assert!(t >= now, "timeout in the past");
        now = t;
        map.handle_timeout(now);
        exchange(map, gateway, now);
    }
    until.max(now)
}

fn events(map: &mut PortMap) -> Vec<PortMapEvent> {
    std::iter::from_fn(|| map.poll_event()).collect()
}

fn mapped(protocol: Protocol, port: u16, lifetime: u64) -> PortMapEvent {
    PortMapEvent::Mapped {
        protocol,
        external: SocketAddr::from((EXTERNAL, port)),
        lifetime: Duration::from_secs(lifetime),
    }
}

/// A PCP MAP response for `map`'s request `request` with the given fields.
fn pcp_answer(request: &[u8], result: u8, lifetime: u32, epoch: u32) -> PcpResponse {
    let mut map = PcpRequest::decode(request).unwrap().map;
    map.external_ip = EXTERNAL.to_ipv6_mapped();
    PcpResponse {
        version: 2,
        result,
        lifetime,
        epoch,
        map: Some(map),
    }
}

#[test]
fn pcp_request_is_laid_out_as_rfc_6887() {
    let now = Instant::now();
    let mut map = PortMap::new(config(), now);
    assert_eq!(map.state(), &PortMapState::Probing(Protocol::Pcp));
    let (to, bytes) = map.poll_transmit().unwrap();
    assert_eq!(to, gateway_addr());
    assert_eq!(bytes.len(), 60);
    assert_eq!(&bytes[..4], &[2, 1, 0, 0]);
    assert_eq!(&bytes[4..8], &7200u32.to_be_bytes());
    assert_eq!(&bytes[8..24], &CLIENT.to_ipv6_mapped().octets());
    assert_eq!(bytes[36], 17, "UDP");
    assert_eq!(&bytes[37..40], &[0, 0, 0]);
    assert_eq!(&bytes[40..42], &INTERNAL_PORT.to_be_bytes());
    assert_eq!(
        &bytes[42..44],
        &INTERNAL_PORT.to_be_bytes(),
        "suggested port"
    );
    assert_eq!(
        &bytes[44..60],
        &Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets()
    );
    // A random nonce, from the seed.
    assert_ne!(&bytes[24..36], &[0; 12]);
    let mut other = PortMap::new(PortMapConfig::new(GATEWAY, CLIENT, INTERNAL_PORT, 43), now);
    assert_ne!(other.poll_transmit().unwrap().1[24..36], bytes[24..36]);
    assert!(map.poll_transmit().is_none());
}

#[test]
fn pcp_maps_and_renews_at_half_lifetime() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Pcp, start);
    let mut map = PortMap::new(config(), start);
    exchange(&mut map, &mut gateway, start);
    assert_eq!(
        events(&mut map),
        vec![mapped(Protocol::Pcp, INTERNAL_PORT, 600)]
    );
    let external = SocketAddr::from((EXTERNAL, INTERNAL_PORT));
    assert_eq!(map.external(), Some(external));
    assert_eq!(
        map.state(),
        &PortMapState::Mapped {
            protocol: Protocol::Pcp,
            external,
            expires: start + Duration::from_secs(600)
        }
    );
    assert_eq!(map.poll_timeout(), Some(start + Duration::from_secs(300)));
    let first = gateway.requests[0].clone();

    // Nothing before half the lifetime.
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(299),
    );
    assert_eq!(gateway.requests.len(), 1);
    let now = run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(300),
    );
    assert_eq!(gateway.requests.len(), 2);
    let renewal = PcpRequest::decode(&gateway.requests[1]).unwrap();
    assert_eq!(
        renewal.map.nonce,
        PcpRequest::decode(&first).unwrap().map.nonce
    );
    assert_eq!(
        renewal.map.external_ip,
        EXTERNAL.to_ipv6_mapped(),
        "suggests what it had"
    );
    assert_eq!(renewal.lifetime, 7200);
    assert_eq!(events(&mut map), vec![], "same mapping: no event");
    assert_eq!(map.stats().renewals, 1);
    assert_eq!(map.poll_timeout(), Some(now + Duration::from_secs(300)));
    // An hour on: still mapped, renewed every 300 s.
    run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(3600),
    );
    assert_eq!(map.stats().renewals, 12);
    assert_eq!(map.external(), Some(external));
    assert_eq!(map.stats().rejected, 0);
    assert_eq!(map.stats().requests_sent, 13);
}

#[test]
fn short_lifetime_is_honoured() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Pcp, start);
    gateway.max_lifetime = 60;
    let mut map = PortMap::new(config(), start);
    exchange(&mut map, &mut gateway, start);
    assert_eq!(
        events(&mut map),
        vec![mapped(Protocol::Pcp, INTERNAL_PORT, 60)]
    );
    assert_eq!(map.poll_timeout(), Some(start + Duration::from_secs(30)));
    run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(300),
    );
    assert_eq!(map.stats().renewals, 10);
}

#[test]
fn nat_pmp_after_unsupported_version() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::NatPmp, start);
    let mut map = PortMap::new(config(), start);
    let (_, pcp) = map.poll_transmit().unwrap();
    let answer = gateway.answer(start, &pcp).unwrap();
    assert_eq!(answer.len(), 8, "RFC 6886 section 3.5 unsupported version");
    assert!(map.handle_datagram(start, gateway_addr(), &answer));
    assert_eq!(map.state(), &PortMapState::Probing(Protocol::NatPmp));
    // Both NAT-PMP requests go at once.
    let (_, address) = map.poll_transmit().unwrap();
    let (_, mapping) = map.poll_transmit().unwrap();
    assert_eq!(address, vec![0, 0]);
    assert_eq!(
        NatPmpRequest::decode(&mapping),
        Some(NatPmpRequest::MapUdp {
            internal_port: INTERNAL_PORT,
            external_port: INTERNAL_PORT,
            lifetime: 7200
        })
    );
    assert_eq!(mapping[..4], [0, 1, 0, 0]);
    for bytes in [address, mapping] {
        let answer = gateway.answer(start, &bytes).unwrap();
        assert!(map.handle_datagram(start, gateway_addr(), &answer));
    }
    assert_eq!(
        events(&mut map),
        vec![mapped(Protocol::NatPmp, INTERNAL_PORT, 600)]
    );
    assert_eq!(
        map.external(),
        Some(SocketAddr::from((EXTERNAL, INTERNAL_PORT)))
    );
    // And NAT-PMP renews too, both requests.
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(300),
    );
    assert_eq!(gateway.requests.len(), 5);
    assert_eq!(map.stats().renewals, 1);
    assert_eq!(events(&mut map), vec![]);
    assert_eq!(map.poll_timeout(), Some(now + Duration::from_secs(300)));
}

#[test]
fn late_unsupported_version_answers_do_not_stop_nat_pmp() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::NatPmp, start);
    let mut map = PortMap::new(config(), start);
    // A slow gateway: the PCP request goes twice before the first answer arrives.
    let (_, first) = map.poll_transmit().unwrap();
    let now = start + Duration::from_millis(250);
    map.handle_timeout(now);
    let (_, second) = map.poll_transmit().unwrap();
    for pcp in [first, second] {
        let answer = gateway.answer(now, &pcp).unwrap();
        assert!(map.handle_datagram(now, gateway_addr(), &answer));
    }
    // A PCP server of version 1 would answer so too.
    let v1 = PcpResponse {
        version: 1,
        result: 1,
        lifetime: 0,
        epoch: 5000,
        map: None,
    };
    assert!(map.handle_datagram(now, gateway_addr(), &v1.encode()));
    assert_eq!(map.stats().responses_stale, 2);
    assert_eq!(map.state(), &PortMapState::Probing(Protocol::NatPmp));
    exchange(&mut map, &mut gateway, now);
    assert_eq!(
        events(&mut map),
        vec![mapped(Protocol::NatPmp, INTERNAL_PORT, 600)]
    );
}

#[test]
fn nat_pmp_after_pcp_silence() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::NatPmpSilentToPcp, start);
    let mut map = PortMap::new(config(), start);
    // 250 ms doubling: tries at 0, 0.25, 0.75, 1.75 s; NAT-PMP at 3.75 s.
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_millis(3749),
    );
    assert_eq!(gateway.requests.len(), 4);
    assert!(gateway.requests.iter().all(|r| r[0] == 2));
    assert_eq!(map.state(), &PortMapState::Probing(Protocol::Pcp));
    run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_millis(3750),
    );
    assert_eq!(gateway.requests.len(), 6);
    assert_eq!(
        events(&mut map),
        vec![mapped(Protocol::NatPmp, INTERNAL_PORT, 600)]
    );
}

#[test]
fn nat_pmp_retransmits_only_the_unanswered_request() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::NatPmp, start);
    let mut map = PortMap::new(config(), start);
    exchange_one(&mut map, &mut gateway, start); // PCP -> unsupported version
    let (_, address) = map.poll_transmit().unwrap();
    let (_, _lost) = map.poll_transmit().unwrap();
    let answer = gateway.answer(start, &address).unwrap();
    assert!(map.handle_datagram(start, gateway_addr(), &answer));
    let now = start + Duration::from_millis(250);
    assert_eq!(map.poll_timeout(), Some(now));
    map.handle_timeout(now);
    let (_, again) = map.poll_transmit().unwrap();
    assert!(map.poll_transmit().is_none());
    assert_eq!(again[1], 1, "only the map request");
    let answer = gateway.answer(now, &again).unwrap();
    assert!(map.handle_datagram(now, gateway_addr(), &answer));
    assert_eq!(
        events(&mut map),
        vec![mapped(Protocol::NatPmp, INTERNAL_PORT, 600)]
    );
}

fn exchange_one(map: &mut PortMap, gateway: &mut Gateway, now: Instant) {
    let (_, bytes) = map.poll_transmit().unwrap();
    let answer = gateway.answer(now, &bytes).unwrap();
    assert!(map.handle_datagram(now, gateway_addr(), &answer));
}

#[test]
fn silence_is_unavailable_and_then_quiet() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Nothing, start);
    let mut map = PortMap::new(config(), start);
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(60),
    );
    // 4 PCP tries, then 4 tries of the two NAT-PMP requests.
    assert_eq!(gateway.requests.len(), 12);
    assert_eq!(
        events(&mut map),
        vec![PortMapEvent::Unavailable(Unavailable::NoAnswer)]
    );
    assert_eq!(
        map.state(),
        &PortMapState::Unavailable(Unavailable::NoAnswer)
    );
    assert_eq!(map.poll_timeout(), None);
    map.handle_timeout(now + Duration::from_secs(3600));
    assert!(map.poll_transmit().is_none());
    assert!(
        Unavailable::NoAnswer
            .to_string()
            .contains("neither PCP nor NAT-PMP")
    );
}

#[test]
fn refusals_are_unavailable_in_words() {
    let start = Instant::now();
    for (speaks, code, reason, words) in [
        (
            Speaks::Pcp,
            2,
            Unavailable::Pcp(PcpResult::NotAuthorized),
            "NOT_AUTHORIZED",
        ),
        (
            Speaks::Pcp,
            8,
            Unavailable::Pcp(PcpResult::NoResources),
            "NO_RESOURCES",
        ),
        (
            Speaks::Pcp,
            12,
            Unavailable::Pcp(PcpResult::AddressMismatch),
            "another address",
        ),
        (
            Speaks::NatPmp,
            2,
            Unavailable::NatPmp(NatPmpResult::NotAuthorized),
            "not allowed",
        ),
        (
            Speaks::NatPmp,
            4,
            Unavailable::NatPmp(NatPmpResult::OutOfResources),
            "no mappings left",
        ),
    ] {
        let mut gateway = Gateway::new(speaks, start);
        gateway.refuse = Some(code);
        let mut map = PortMap::new(config(), start);
        run_until(
            &mut map,
            &mut gateway,
            start,
            start + Duration::from_secs(1),
        );
        assert_eq!(events(&mut map), vec![PortMapEvent::Unavailable(reason)]);
        assert_eq!(map.state(), &PortMapState::Unavailable(reason));
        assert!(reason.to_string().contains(words), "{reason}");
        assert_eq!(map.poll_timeout(), None);
    }
    assert_eq!(PcpResult::from_code(9), PcpResult::UnsupportedProtocol);
    assert_eq!(PcpResult::from_code(99).code(), 99);
    assert_eq!(NatPmpResult::from_code(5).code(), 5);
}

#[test]
fn refused_renewal_is_lost() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Pcp, start);
    let mut map = PortMap::new(config(), start);
    exchange(&mut map, &mut gateway, start);
    events(&mut map);
    gateway.refuse = Some(7);
    run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(300),
    );
    assert_eq!(events(&mut map), vec![PortMapEvent::Lost]);
    assert_eq!(
        map.state(),
        &PortMapState::Unavailable(Unavailable::Pcp(PcpResult::NetworkFailure))
    );
    assert_eq!(map.external(), None);
}

#[test]
fn foreign_and_broken_datagrams_are_ignored() {
    let now = Instant::now();
    let mut map = PortMap::new(config(), now);
    let (_, request) = map.poll_transmit().unwrap();
    let good = pcp_answer(&request, 0, 600, 100);

    let mut wrong_nonce = good;
    if let Some(m) = wrong_nonce.map.as_mut() {
        m.nonce[0] ^= 1;
    }
    let mut wrong_port = good;
    if let Some(m) = wrong_port.map.as_mut() {
        m.internal_port += 1;
    }
    let mut wrong_protocol = good;
    if let Some(m) = wrong_protocol.map.as_mut() {
        m.protocol = 6;
    }
    let good_bytes = good.encode();
    let mut no_response_bit = good_bytes.clone();
    no_response_bit[1] = 1;
    let mut padded = good_bytes.clone();
    padded.push(0);
    let broken: Vec<Vec<u8>> = vec![
        wrong_nonce.encode(),
        wrong_port.encode(),
        wrong_protocol.encode(),
        good_bytes[..59].to_vec(),
        good_bytes[..56].to_vec(),
        no_response_bit,
        padded,
        vec![],
        vec![2],
        // NAT-PMP responses while PCP is asked: not ours.
        NatPmpResponse::ExternalAddress {
            result: 0,
            epoch: 1,
            address: EXTERNAL,
        }
        .encode(),
        NatPmpResponse::ExternalAddress {
            result: 0,
            epoch: 1,
            address: EXTERNAL,
        }
        .encode()[..11]
            .to_vec(),
    ];
    for (i, bytes) in broken.iter().enumerate() {
        assert!(
            !map.handle_datagram(now, gateway_addr(), bytes),
            "datagram {i}"
        );
    }
    assert_eq!(map.stats().rejected, broken.len() as u64);
    // The right answer from elsewhere: not ours, not counted.
    let elsewhere = [
        SocketAddr::from((GATEWAY, 5350)),
        SocketAddr::from((Ipv4Addr::new(192, 168, 1, 2), PORT)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, PORT)),
    ];
    for from in elsewhere {
        assert!(!map.handle_datagram(now, from, &good_bytes));
    }
    assert_eq!(map.stats().rejected, broken.len() as u64);
    assert_eq!(map.state(), &PortMapState::Probing(Protocol::Pcp));
    assert_eq!(map.poll_event(), None);
    // The gateway seen as an IPv4-mapped IPv6 source is the gateway.
    let mapped_source = SocketAddr::from((GATEWAY.to_ipv6_mapped(), PORT));
    assert!(map.handle_datagram(now, mapped_source, &good_bytes));
    assert_eq!(
        map.external(),
        Some(SocketAddr::from((EXTERNAL, INTERNAL_PORT)))
    );
    assert_eq!(map.stats().responses_accepted, 1);
}

#[test]
fn nat_pmp_wrong_sizes_and_ports_are_ignored() {
    let now = Instant::now();
    let mut gateway = Gateway::new(Speaks::NatPmp, now);
    let mut map = PortMap::new(config(), now);
    exchange_one(&mut map, &mut gateway, now);
    assert_eq!(map.state(), &PortMapState::Probing(Protocol::NatPmp));
    let address = NatPmpResponse::ExternalAddress {
        result: 0,
        epoch: 9,
        address: EXTERNAL,
    }
    .encode();
    let mapping = NatPmpResponse::MapUdp {
        result: 0,
        epoch: 9,
        internal_port: INTERNAL_PORT,
        external_port: 5000,
        lifetime: 600,
    };
    let mut other_port = mapping;
    if let NatPmpResponse::MapUdp { internal_port, .. } = &mut other_port {
        *internal_port = 1;
    }
    let mapping = mapping.encode();
    let mut tcp = mapping.clone();
    tcp[1] = 130;
    for bytes in [
        &address[..11],
        &mapping[..15],
        &mapping[..8],
        &other_port.encode(),
        &tcp,
    ] {
        assert!(!map.handle_datagram(now, gateway_addr(), bytes));
    }
    assert_eq!(map.stats().rejected, 5);
    assert!(map.handle_datagram(now, gateway_addr(), &address));
    assert!(map.handle_datagram(now, gateway_addr(), &mapping));
    assert_eq!(events(&mut map), vec![mapped(Protocol::NatPmp, 5000, 600)]);
}

#[test]
fn unanswered_renewals_are_retried_then_lost() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Pcp, start);
    let mut map = PortMap::new(config(), start);
    exchange(&mut map, &mut gateway, start);
    events(&mut map);
    gateway.speaks = Speaks::Nothing;
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(599),
    );
    assert_eq!(events(&mut map), vec![]);
    assert!(map.external().is_some());
    let unanswered = map.stats().renewals_unanswered;
    assert!(unanswered >= 4, "retried: {unanswered}");
    run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(600),
    );
    assert_eq!(events(&mut map), vec![PortMapEvent::Lost]);
    assert_eq!(
        map.state(),
        &PortMapState::Unavailable(Unavailable::Expired)
    );
    assert_eq!(map.poll_timeout(), None);
    let sent = gateway.requests.len();
    run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(6000),
    );
    assert_eq!(gateway.requests.len(), sent);
}

#[test]
fn answer_after_missed_renewal_keeps_the_mapping() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Pcp, start);
    let mut map = PortMap::new(config(), start);
    exchange(&mut map, &mut gateway, start);
    events(&mut map);
    gateway.speaks = Speaks::Nothing;
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(400),
    );
    assert_eq!(map.stats().renewals_unanswered, 1);
    gateway.speaks = Speaks::Pcp;
    let now = run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(599),
    );
    assert_eq!(map.stats().renewals, 1);
    assert_eq!(events(&mut map), vec![]);
    run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(3000),
    );
    assert!(map.external().is_some());
}

fn restart_remaps(speaks: Speaks, protocol: Protocol) {
    let start = Instant::now();
    let mut gateway = Gateway::new(speaks, start);
    let mut map = PortMap::new(config(), start);
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(10),
    );
    assert_eq!(events(&mut map), vec![mapped(protocol, INTERNAL_PORT, 600)]);
    // The router reboots at 100 s: the renewal at 300 s sees epoch 200 (it was 5300 before).
    gateway.restart(start + Duration::from_secs(100));
    let sent = gateway.requests.len();
    let now = run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(300),
    );
    assert_eq!(map.stats().restarts, 1);
    assert_eq!(
        events(&mut map),
        vec![mapped(protocol, INTERNAL_PORT + 1, 600)]
    );
    // The renewal, then the mapping asked for again at once.
    let per_request = if protocol == Protocol::Pcp { 1 } else { 2 };
    assert_eq!(gateway.requests.len(), sent + 2 * per_request);
    assert_eq!(map.stats().renewals, 2);
    assert_eq!(
        map.external(),
        Some(SocketAddr::from((EXTERNAL, INTERNAL_PORT + 1)))
    );
    // And on as before.
    run_until(
        &mut map,
        &mut gateway,
        now,
        start + Duration::from_secs(1200),
    );
    assert_eq!(map.stats().restarts, 1);
    assert_eq!(events(&mut map), vec![]);
}

#[test]
fn epoch_going_back_remaps_pcp() {
    restart_remaps(Speaks::Pcp, Protocol::Pcp);
}

#[test]
fn epoch_going_back_remaps_nat_pmp() {
    restart_remaps(Speaks::NatPmp, Protocol::NatPmp);
}

#[test]
fn restart_without_an_answer_to_the_remap_is_lost() {
    let start = Instant::now();
    let mut map = PortMap::new(config(), start);
    let (_, request) = map.poll_transmit().unwrap();
    let bytes = pcp_answer(&request, 0, 600, 5000).encode();
    assert!(map.handle_datagram(start, gateway_addr(), &bytes));
    let renew = start + Duration::from_secs(300);
    map.handle_timeout(renew);
    let (_, request) = map.poll_transmit().unwrap();
    // Epoch 3 s: the gateway restarted.
    let bytes = pcp_answer(&request, 0, 600, 3).encode();
    assert!(map.handle_datagram(renew, gateway_addr(), &bytes));
    assert!(map.poll_transmit().is_some(), "asked again at once");
    let mut silence = Gateway::new(Speaks::Nothing, start);
    run_until(
        &mut map,
        &mut silence,
        renew,
        renew + Duration::from_secs(10),
    );
    assert_eq!(
        events(&mut map),
        vec![
            mapped(Protocol::Pcp, INTERNAL_PORT, 600),
            PortMapEvent::Lost
        ]
    );
    assert_eq!(
        map.state(),
        &PortMapState::Unavailable(Unavailable::RemapFailed)
    );
}

#[test]
fn epoch_rules_of_rfc_6887() {
    let t = Instant::now();
    let s = |secs| t + Duration::from_secs(secs);
    assert!(!epoch_invalid(t, 1000, s(100), 1100));
    assert!(!epoch_invalid(t, 1000, s(0), 999), "a second back is slack");
    assert!(epoch_invalid(t, 1000, s(0), 998));
    assert!(epoch_invalid(t, 1000, s(100), 10));
    // Rates: 2 s + 1/16 either way.
    assert!(!epoch_invalid(t, 1000, s(1600), 2500));
    assert!(epoch_invalid(t, 1000, s(1600), 2400));
    assert!(epoch_invalid(t, 1000, s(100), 1200));
}

#[test]
fn release_deletes_and_then_nothing_is_sent() {
    for (speaks, protocol) in [
        (Speaks::Pcp, Protocol::Pcp),
        (Speaks::NatPmp, Protocol::NatPmp),
    ] {
        let start = Instant::now();
        let mut gateway = Gateway::new(speaks, start);
        let mut map = PortMap::new(config(), start);
        let now = run_until(
            &mut map,
            &mut gateway,
            start,
            start + Duration::from_secs(10),
        );
        assert_eq!(events(&mut map), vec![mapped(protocol, INTERNAL_PORT, 600)]);
        let sent = gateway.requests.len();
        map.release(now);
        assert_eq!(map.state(), &PortMapState::Releasing);
        assert_eq!(map.external(), None);
        exchange(&mut map, &mut gateway, now);
        assert_eq!(gateway.requests.len(), sent + 1);
        let delete = &gateway.requests[sent];
        match protocol {
            Protocol::Pcp => {
                let delete = PcpRequest::decode(delete).unwrap();
                assert_eq!(delete.lifetime, 0);
                let first = PcpRequest::decode(&gateway.requests[0]).unwrap();
                assert_eq!(delete.map.nonce, first.map.nonce);
            }
            Protocol::NatPmp => assert_eq!(
                NatPmpRequest::decode(delete),
                Some(NatPmpRequest::MapUdp {
                    internal_port: INTERNAL_PORT,
                    external_port: 0,
                    lifetime: 0
                })
            ),
        }
        assert_eq!(gateway.mapped, None);
        assert_eq!(events(&mut map), vec![PortMapEvent::Released]);
        assert_eq!(map.state(), &PortMapState::Released);
        assert_eq!(map.poll_timeout(), None);
        map.release(now);
        map.handle_timeout(now + Duration::from_secs(10_000));
        assert!(map.poll_transmit().is_none());
        assert_eq!(events(&mut map), vec![]);
        assert_eq!(gateway.requests.len(), sent + 1);
    }
}

#[test]
fn unanswered_release_ends_released() {
    let start = Instant::now();
    let mut gateway = Gateway::new(Speaks::Pcp, start);
    let mut map = PortMap::new(config(), start);
    exchange(&mut map, &mut gateway, start);
    events(&mut map);
    gateway.speaks = Speaks::Nothing;
    map.release(start);
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(60),
    );
    assert_eq!(gateway.requests.len(), 1 + 4);
    assert_eq!(events(&mut map), vec![PortMapEvent::Released]);
    assert_eq!(map.state(), &PortMapState::Released);
    // A late answer to the deletion changes nothing and sends nothing.
    let late = pcp_answer(&gateway.requests[1], 0, 0, 5100).encode();
    map.handle_datagram(now, gateway_addr(), &late);
    assert!(map.poll_transmit().is_none());
    assert_eq!(map.state(), &PortMapState::Released);
}

#[test]
fn release_while_probing_or_unavailable() {
    let start = Instant::now();
    // While probing: the deletion goes with the protocol being tried.
    let mut map = PortMap::new(config(), start);
    map.poll_transmit();
    map.release(start);
    let (_, delete) = map.poll_transmit().unwrap();
    assert_eq!(PcpRequest::decode(&delete).unwrap().lifetime, 0);
    // A NAT-PMP gateway's "unsupported version" answers it.
    let answer = NatPmpResponse::Error {
        opcode: 129,
        result: 1,
        epoch: 7,
    }
    .encode();
    assert!(map.handle_datagram(start, gateway_addr(), &answer));
    assert_eq!(events(&mut map), vec![PortMapEvent::Released]);
    // Unavailable: released at once, nothing sent.
    let mut gateway = Gateway::new(Speaks::Nothing, start);
    let mut map = PortMap::new(config(), start);
    let now = run_until(
        &mut map,
        &mut gateway,
        start,
        start + Duration::from_secs(60),
    );
    events(&mut map);
    map.release(now);
    assert!(map.poll_transmit().is_none());
    assert_eq!(events(&mut map), vec![PortMapEvent::Released]);
}

#[test]
fn queues_are_bounded() {
    let start = Instant::now();
    let mut map = PortMap::new(config(), start);
    // Never drained: retransmissions replace the oldest.
    let mut now = start;
    for _ in 0..100 {
        now += Duration::from_secs(100);
        map.handle_timeout(now);
    }
    assert!(map.transmits.len() <= MAX_PENDING_TRANSMITS);
    assert!(map.events.len() <= MAX_PENDING_EVENTS);
}

fn any_state(step: u8) -> PortMap {
    let start = Instant::now();
    let speaks = match step % 3 {
        0 => Speaks::Pcp,
        1 => Speaks::NatPmp,
        _ => Speaks::Nothing,
    };
    let mut gateway = Gateway::new(speaks, start);
    let mut map = PortMap::new(config(), start);
    let until = start + Duration::from_millis(u64::from(step) * 40);
    let now = run_until(&mut map, &mut gateway, start, until);
    if step.is_multiple_of(5) {
        map.release(now);
    }
    map
}

proptest! {
    #[test]
    fn random_bytes_never_panic(step in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut map = any_state(step);
        let now = Instant::now() + Duration::from_secs(20);
        map.handle_datagram(now, gateway_addr(), &bytes);
        map.handle_timeout(now);
        while map.poll_transmit().is_some() {}
        while map.poll_event().is_some() {}
    }

    #[test]
    fn mutated_responses_never_panic(step in any::<u8>(), flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..6), len in 0usize..70) {
        let mut map = any_state(step);
        let now = Instant::now();
        let mut map2 = PortMap::new(config(), now);
        let (_, request) = map2.poll_transmit().unwrap();
        for mut bytes in [
            pcp_answer(&request, 0, 600, 100).encode(),
            NatPmpResponse::MapUdp { result: 0, epoch: 1, internal_port: INTERNAL_PORT, external_port: 1, lifetime: 9 }.encode(),
            NatPmpResponse::ExternalAddress { result: 0, epoch: 1, address: EXTERNAL }.encode(),
        ] {
            for &(at, value) in &flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            bytes.truncate(len);
            map.handle_datagram(now, gateway_addr(), &bytes);
            map2.handle_datagram(now, gateway_addr(), &bytes);
        }
        map.handle_timeout(now + Duration::from_secs(1));
        map2.handle_timeout(now + Duration::from_secs(1));
    }

    #[test]
    fn pcp_round_trips(nonce in any::<[u8; 12]>(), lifetime in any::<u32>(), epoch in any::<u32>(), result in 1u8.., ports in any::<(u16, u16)>(), ip in any::<[u8; 16]>()) {
        let map = PcpMap { nonce, protocol: 17, internal_port: ports.0, external_port: ports.1, external_ip: Ipv6Addr::from(ip) };
        let request = PcpRequest { lifetime, client_ip: Ipv6Addr::from(ip), map };
        prop_assert_eq!(PcpRequest::decode(&request.encode()), Some(request));
        let response = PcpResponse { version: 2, result, lifetime, epoch, map: Some(map) };
        prop_assert_eq!(PcpResponse::decode(&response.encode()), Some(response));
        let bare = PcpResponse { map: None, ..response };
        prop_assert_eq!(PcpResponse::decode(&bare.encode()), Some(bare));
    }

    #[test]
    fn nat_pmp_round_trips(result in any::<u16>(), epoch in any::<u32>(), ports in any::<(u16, u16)>(), lifetime in any::<u32>(), ip in any::<u32>()) {
        let request = NatPmpRequest::MapUdp { internal_port: ports.0, external_port: ports.1, lifetime };
        prop_assert_eq!(NatPmpRequest::decode(&request.encode()), Some(request));
        for response in [
            NatPmpResponse::ExternalAddress { result, epoch, address: Ipv4Addr::from(ip) },
            NatPmpResponse::MapUdp { result, epoch, internal_port: ports.0, external_port: ports.1, lifetime },
        ] {
            prop_assert_eq!(NatPmpResponse::decode(&response.encode()), Some(response));
        }
        if result != 0 {
            let error = NatPmpResponse::Error { opcode: 0x85, result, epoch };
            prop_assert_eq!(NatPmpResponse::decode(&error.encode()), Some(error));
        }
    }
}
