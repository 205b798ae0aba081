//! Two `Punch` instances on the simulated network of `traversal-sim`, in virtual time.
//!
//! The network: hosts on LANs behind NATs, public hosts (the rendezvous server), fixed delays
//! (15 ms across the internet, 1 ms on a LAN). The NATs map UDP like Linux:
//! - port-restricted (`MASQUERADE`): one external port per internal socket whatever the
//!   destination, keeping the internal port when it can; filtering by address and port
//!   (conntrack: an inbound datagram passes only when the mapping sent to exactly that address
//!   and port);
//! - symmetric (`MASQUERADE --random-fully`): a new external port per internal socket and
//!   destination;
//! - full cone where a test says so: anything that reaches a mapping gets in.
//!
//! No hairpinning: a datagram from inside to the NAT's own public address is dropped, as Linux
//! does without extra rules. Mappings do not expire within these short tests.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use traversal::punch::{
    ATTR_CALL_ID, ATTR_PUNCH_SENDER, Birthday, Local, Path, Punch, PunchConfig, PunchEvent,
    birthday_role,
};
use traversal::stun::{BINDING_REQUEST, BINDING_SUCCESS, Builder};
use traversal_sim::{Arrival, HostId, NatConfig, NatKind, Net};

const WAN_DELAY: Duration = Duration::from_millis(15);
const SECRET: &[u8] = b"0123456789abcdef";
const CALL_ID: u64 = 0x1234_5678_9abc_def0;

#[derive(Debug)]
struct Peer {
    host: usize,
    punch: Punch,
    /// Events with the virtual time since the start.
    events: Vec<(Duration, PunchEvent)>,
    /// Its spare sockets (birthday probing), as endpoints.
    spares: Vec<usize>,
}

/// A socket on a host of the net, and the punch running there, if any.
#[derive(Debug)]
struct Endpoint {
    host: HostId,
    addr: SocketAddr,
    peer: Option<usize>,
    /// Which of its peer's sockets it is.
    local: Local,
}

/// The net, the sockets on it and the punches.
#[derive(Debug)]
struct World {
    net: Net,
    endpoints: Vec<Endpoint>,
    peers: Vec<Peer>,
}

impl World {
    fn new() -> Self {
        Self::with_seed(0x5eed)
    }

    fn with_seed(seed: u64) -> Self {
        let mut net = Net::new(seed);
        net.wan_delay = WAN_DELAY;
        World {
            net,
            endpoints: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// Two LANs behind NATs of these kinds, one host on each: A at 192.168.1.10:5000 and B
    /// at `b`.
    fn two_lans(a: NatKind, b: NatKind, b_addr: &str) -> (World, usize, usize) {
        let mut net = World::new();
        let na = net.add_nat(a, "203.0.113.1");
        let nb = net.add_nat(b, "198.51.100.1");
        let ha = net.add_host("192.168.1.10:5000", Some(na));
        let hb = net.add_host(b_addr, Some(nb));
        (net, ha, hb)
    }

    fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    fn add_nat(&mut self, kind: NatKind, public_ip: &str) -> usize {
        self.net.add_nat(NatConfig {
            preserve_ports: true,
            first_port: 40007,
            port_step: 7,
            ..NatConfig::new(kind, public_ip.parse().unwrap())
        })
    }

    fn add_host(&mut self, addr: &str, nat: Option<usize>) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let host = self.net.add_host(vec![addr.ip()], nat);
        self.add_host_socket(host, addr)
    }

    fn addr(&self, e: usize) -> SocketAddr {
        self.endpoints[e].addr
    }

    fn delivered(&self, e: usize) -> u64 {
        self.net.delivered(self.endpoints[e].host)
    }

    /// Cuts every link (or mends them).
    fn cut(&mut self, cut: bool) {
        for e in &self.endpoints {
            self.net.link_mut(e.host).up = !cut;
        }
    }

    /// The external address `e` gets toward `destination` (creating the mapping), as the
    /// rendezvous server reports it after registration.
    fn mapped_address(&mut self, e: usize, destination: SocketAddr) -> SocketAddr {
        let (host, addr) = (self.endpoints[e].host, self.endpoints[e].addr);
        self.net.translate(host, addr, destination)
    }

    fn send(&mut self, from: usize, to: SocketAddr, bytes: Vec<u8>) {
        let (host, addr) = (self.endpoints[from].host, self.endpoints[from].addr);
        self.net.send_udp(host, addr, to, bytes);
    }

    fn start_call(&mut self, e: usize, remote_candidates: Vec<SocketAddr>, seed: u64) -> usize {
        let config = PunchConfig::new(SECRET.to_vec(), CALL_ID, remote_candidates, seed);
        self.start_call_with(e, config)
    }

    fn start_call_with(&mut self, e: usize, config: PunchConfig) -> usize {
        let punch = Punch::new(config, self.net.now());
        self.peers.push(Peer {
            host: e,
            punch,
            events: Vec::new(),
            spares: Vec::new(),
        });
        self.endpoints[e].peer = Some(self.peers.len() - 1);
        self.peers.len() - 1
    }

    fn flush(&mut self) {
        for p in 0..self.peers.len() {
            // The simulated network has no TTL: openers travel as far as checks (its NATs
            // drop what they were not asked for; the namespace lab has the routers that don't).
            let elapsed = self.elapsed();
            while let Some(event) = self.peers[p].punch.poll_event() {
                self.peers[p].events.push((elapsed, event));
                if let PunchEvent::OpenSpares(count) = event {
                    self.open_spares(p, count);
                }
            }
            while let Some(t) = self.peers[p].punch.poll_transmit() {
                let e = match t.local {
                    Local::Media => self.peers[p].host,
                    Local::Spare(i) => self.peers[p].spares[usize::from(i)],
                };
                self.send(e, t.destination, t.contents);
            }
        }
    }

    /// Runs the network and the peers until `elapsed() == until`.
    /// Opens `count` spare sockets for peer `p`: ports 30000 up on its host's address.
    fn open_spares(&mut self, p: usize, count: u16) {
        let media = self.endpoints[self.peers[p].host].addr;
        for i in 0..count {
            let addr = SocketAddr::new(media.ip(), 30000 + i);
            let e = self.add_host_socket(self.endpoints[self.peers[p].host].host, addr);
            self.endpoints[e].peer = Some(p);
            self.endpoints[e].local = Local::Spare(i);
            self.peers[p].spares.push(e);
        }
        let now = self.net.now();
        self.peers[p].punch.spares_opened(now, count);
    }

    /// Another socket on an existing host.
    fn add_host_socket(&mut self, host: HostId, addr: SocketAddr) -> usize {
        self.endpoints.push(Endpoint {
            host,
            addr,
            peer: None,
            local: Local::Media,
        });
        self.endpoints.len() - 1
    }

    fn run_until(&mut self, until: Duration) {
        let until = self.net.now() - self.net.elapsed() + until;
        loop {
            self.flush();
            let next_timer = self
                .peers
                .iter()
                .filter_map(|p| p.punch.poll_timeout())
                .min();
            let next = match (self.net.next_arrival(), next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.net.advance_to(next);
            let now = self.net.now();
            while let Some(arrival) = self.net.pop_due() {
                let Arrival::Udp {
                    host,
                    to,
                    from,
                    bytes,
                } = arrival
                else {
                    continue;
                };
                let peer = self
                    .endpoints
                    .iter()
                    .find(|e| e.host == host && e.addr == to)
                    .and_then(|e| Some((e.peer?, e.local)));
                if let Some((p, local)) = peer {
                    self.peers[p]
                        .punch
                        .handle_datagram_on(now, local, from, &bytes);
                }
            }
            for p in &mut self.peers {
                if p.punch.poll_timeout().is_some_and(|t| t <= now) {
                    p.punch.handle_timeout(now);
                }
            }
        }
        self.net.advance_to(until);
        self.flush();
    }
}

const SERVER: &str = "192.0.2.1:3478";

/// Sets up a call between a client on `host_a` and one on `host_b` with the candidates the
/// signalling would give: each side's host address and its mapped address at the server.
fn call(
    net: &mut World,
    host_a: usize,
    host_b: usize,
) -> (usize, usize, [SocketAddr; 2], [SocketAddr; 2]) {
    let server: SocketAddr = SERVER.parse().unwrap();
    if !net.endpoints.iter().any(|e| e.addr == server) {
        net.add_host(SERVER, None);
    }
    let a = [net.addr(host_a), net.mapped_address(host_a, server)];
    let b = [net.addr(host_b), net.mapped_address(host_b, server)];
    let pa = net.start_call(host_a, b.to_vec(), 1);
    let pb = net.start_call(host_b, a.to_vec(), 2);
    (pa, pb, a, b)
}

/// A call between a host at 192.168.1.10:5000 and one at `b_addr`, each behind a `MASQUERADE`-like
/// (port-restricted) NAT: the world, the two punches and each side's candidates.
fn masquerade_call(b_addr: &str) -> (World, usize, usize, [SocketAddr; 2], [SocketAddr; 2]) {
    let (mut net, ha, hb) =
        World::two_lans(NatKind::PortRestricted, NatKind::PortRestricted, b_addr);
    let (pa, pb, a, b) = call(&mut net, ha, hb);
    (net, pa, pb, a, b)
}

fn first_direct(peer: &Peer) -> Option<(Duration, SocketAddr)> {
    peer.events.iter().find_map(|(t, e)| match e {
        PunchEvent::DirectPath(addr) => Some((*t, *addr)),
        _ => None,
    })
}

/// Both behind `MASQUERADE`-like NATs (the same private address and port on both LANs, so each
/// side's host candidate for the other is its own socket): direct over the mapped addresses
/// within a few round trips.
#[test]
fn endpoint_independent_nats_go_direct() {
    let (mut net, pa, pb, a, b) = masquerade_call("192.168.1.10:5000");
    net.run_until(Duration::from_millis(300));
    let (ta, via_a) = first_direct(&net.peers[pa]).expect("A went direct");
    let (tb, via_b) = first_direct(&net.peers[pb]).expect("B went direct");
    assert_eq!(via_a, b[1]);
    assert_eq!(via_b, a[1]);
    // The openers first, the checks with the normal TTL 150 ms later, then a round trip.
    assert!(ta <= Duration::from_millis(250), "{ta:?}");
    assert!(tb <= Duration::from_millis(250), "{tb:?}");
    // Each side reached its own socket through the other's host candidate, and refused it.
    assert!(net.peers[pa].punch.stats().rejected_own > 0);
    // The path holds: consent checks about once a second, no more path changes.
    let before = net.peers[pa].punch.stats().checks_sent;
    net.run_until(Duration::from_secs(20));
    for p in [pa, pb] {
        let punch = &net.peers[p].punch;
        assert_eq!(net.peers[p].events.len(), 1, "{:?}", net.peers[p].events);
        assert_eq!(punch.stats().path_changes, 1);
        assert!(matches!(punch.path(), Path::Direct(_)));
    }
    let consent = net.peers[pa].punch.stats().checks_sent - before;
    assert!(
        (18..=21).contains(&consent),
        "{consent} consent checks in ~19.7 s"
    );
    assert_eq!(net.peers[pa].punch.reflexive_address(), Some(a[1]));
    assert!(net.peers[pa].punch.is_peer_address(b[1]));
}

/// A behind a `MASQUERADE --random-fully`-like (symmetric) NAT, B behind the same or a
/// port-restricted one: every check of A leaves from a new port that B's NAT never sent to, and
/// B's checks go to A's mapped address, whose mapping is for the server only. Nothing passes:
/// the call stays on the relay, with no event; the checks go on, backed off to one per
/// candidate per second. (With a "full cone" B, see the next test, it goes direct.)
#[test]
fn symmetric_nat_against_a_port_filtering_one_stays_on_relay() {
    for kb in [NatKind::Symmetric, NatKind::PortRestricted] {
        let (mut net, ha, hb) = World::two_lans(NatKind::Symmetric, kb, "10.0.0.7:6000");
        let (pa, pb, _, _) = call(&mut net, ha, hb);
        net.run_until(Duration::from_secs(2));
        let fast = net.peers[pa].punch.stats().checks_sent;
        // 2 candidates every 50 ms for 2 s.
        assert!((78..=82).contains(&fast), "{kb:?}: {fast}");
        net.run_until(Duration::from_secs(10));
        for p in [pa, pb] {
            let punch = &net.peers[p].punch;
            assert!(
                net.peers[p].events.is_empty(),
                "{kb:?}: {:?}",
                net.peers[p].events
            );
            assert_eq!(punch.path(), Path::Relay);
            assert_eq!(punch.stats().path_changes, 0);
            assert_eq!(punch.stats().checks_received, 0);
            assert_eq!(punch.stats().responses_received, 0);
        }
        let slow = net.peers[pa].punch.stats().checks_sent - fast;
        assert!(
            (15..=17).contains(&slow),
            "{kb:?}: {slow} checks in the 8 s after the fast phase"
        );
        assert_eq!(net.delivered(ha), 0);
    }
}

/// One symmetric NAT (A) and one endpoint-independent NAT with endpoint-independent filtering
/// (B, "full cone"). A's check from a fresh port passes B's NAT; B answers to that source, a
/// peer-reflexive address, and sends a triggered check there, which A's NAT lets in because A
/// sent to B's mapped address from that very port. Both go direct: A to B's mapped address, B to
/// A's peer-reflexive address.
#[test]
fn symmetric_and_full_cone_go_direct_over_a_peer_reflexive_address() {
    let (mut net, ha, hb) = World::two_lans(NatKind::Symmetric, NatKind::FullCone, "10.0.0.7:6000");
    let (pa, pb, a, b) = call(&mut net, ha, hb);
    net.run_until(Duration::from_millis(300));
    let (_, via_a) = first_direct(&net.peers[pa]).expect("A went direct");
    let (_, via_b) = first_direct(&net.peers[pb]).expect("B went direct");
    assert_eq!(via_a, b[1]);
    assert_ne!(via_b, a[1], "A's signalled mapping is for the server only");
    assert_eq!(via_b.ip(), a[1].ip());
    assert!(net.peers[pb].punch.remote_candidates().any(|c| c == via_b));
}

/// Two clients behind the same NAT (no hairpinning): direct over their host candidates.
#[test]
fn same_lan_goes_direct_over_host_candidates() {
    let mut net = World::new();
    let n = net.add_nat(NatKind::PortRestricted, "203.0.113.1");
    let ha = net.add_host("192.168.1.10:5000", Some(n));
    let hb = net.add_host("192.168.1.11:5000", Some(n));
    let (pa, pb, a, b) = call(&mut net, ha, hb);
    net.run_until(Duration::from_millis(100));
    assert_eq!(net.peers[pa].punch.path(), Path::Direct(b[0]));
    assert_eq!(net.peers[pb].punch.path(), Path::Direct(a[0]));
    let (t, _) = first_direct(&net.peers[pa]).unwrap();
    assert!(t <= Duration::from_millis(10), "{t:?}");
}

/// A direct path that dies mid-call is given up 3-4 s later (relay again); when it comes back
/// it is taken again within the 2 s recheck interval.
#[test]
fn lost_direct_path_falls_back_to_relay_and_comes_back() {
    let (mut net, pa, pb, a, b) = masquerade_call("10.0.0.7:6000");
    net.run_until(Duration::from_secs(5));
    assert_eq!(net.peers[pa].punch.path(), Path::Direct(b[1]));
    let cut_at = Duration::from_millis(5_500);
    net.run_until(cut_at);
    net.cut(true);
    net.run_until(Duration::from_secs(12));
    for (p, addr) in [(pa, b[1]), (pb, a[1])] {
        let peer = &net.peers[p];
        assert_eq!(peer.punch.path(), Path::Relay);
        let lost = peer
            .events
            .iter()
            .find_map(|(t, e)| (*e == PunchEvent::DirectLost(addr)).then_some(*t))
            .expect("path lost");
        let after = lost - cut_at;
        assert!(
            after > Duration::from_secs(2) && after <= Duration::from_secs(4),
            "{after:?}"
        );
        assert_eq!(peer.punch.stats().path_changes, 2);
    }
    // While lost, every candidate is checked every 2 s.
    let before = net.peers[pa].punch.stats().checks_sent;
    net.run_until(Duration::from_secs(16));
    let rechecks = net.peers[pa].punch.stats().checks_sent - before;
    assert_eq!(rechecks, 4, "2 candidates, twice in 4 s");
    let back_at = net.elapsed();
    net.cut(false);
    net.run_until(Duration::from_secs(20));
    for (p, addr) in [(pa, b[1]), (pb, a[1])] {
        let peer = &net.peers[p];
        assert_eq!(peer.punch.path(), Path::Direct(addr));
        let (t, e) = *peer.events.last().unwrap();
        assert_eq!(e, PunchEvent::DirectPath(addr));
        assert!(
            t - back_at <= Duration::from_millis(2_100),
            "{:?}",
            t - back_at
        );
        assert_eq!(peer.punch.stats().path_changes, 3);
        assert_eq!(peer.events.len(), 3);
    }
}

/// Nobody answers a client with no candidates for the other, but the other's checks reach it:
/// it answers, checks back (triggered check) and both go direct.
#[test]
fn triggered_checks_find_the_path_without_candidates() {
    let mut net = World::new();
    let nb = net.add_nat(NatKind::PortRestricted, "198.51.100.1");
    let ha = net.add_host("203.0.113.5:5000", None);
    let hb = net.add_host("10.0.0.7:6000", Some(nb));
    let server: SocketAddr = SERVER.parse().unwrap();
    net.add_host(SERVER, None);
    let a = net.addr(ha);
    let b = net.mapped_address(hb, server);
    // A (public) learns nothing of B; B has A's address.
    let pa = net.start_call(ha, vec![], 1);
    let pb = net.start_call(hb, vec![a], 2);
    net.run_until(Duration::from_millis(200));
    assert_eq!(net.peers[pa].punch.path(), Path::Direct(b));
    assert_eq!(net.peers[pb].punch.path(), Path::Direct(a));
    assert_eq!(
        net.peers[pa].punch.remote_candidates().collect::<Vec<_>>(),
        [b]
    );
}

/// A candidate added late is checked at once.
#[test]
fn late_candidate_is_checked() {
    let mut net = World::new();
    let ha = net.add_host("203.0.113.5:5000", None);
    let hb = net.add_host("198.51.100.6:6000", None);
    let a = net.addr(ha);
    let b = net.addr(hb);
    let pa = net.start_call(ha, vec![], 1);
    let pb = net.start_call(hb, vec![], 2);
    net.run_until(Duration::from_secs(3));
    assert_eq!(net.peers[pa].punch.path(), Path::Relay);
    assert!(net.peers[pa].punch.add_remote_candidate(b));
    net.run_until(Duration::from_millis(3_050));
    assert_eq!(net.peers[pa].punch.path(), Path::Direct(b));
    assert_eq!(net.peers[pb].punch.path(), Path::Direct(a));
}

/// After `close` nothing more is sent, even when checks arrive.
#[test]
fn close_stops_everything() {
    let (mut net, pa, pb, _, b) = masquerade_call("10.0.0.7:6000");
    net.run_until(Duration::from_secs(1));
    net.peers[pa].punch.close();
    assert_eq!(net.peers[pa].punch.poll_timeout(), None);
    let sent = net.peers[pa].punch.stats().checks_sent;
    let answered = net.peers[pa].punch.stats().responses_sent;
    net.run_until(Duration::from_secs(10));
    assert_eq!(net.peers[pa].punch.stats().checks_sent, sent);
    assert_eq!(net.peers[pa].punch.stats().responses_sent, answered);
    // The path in use when the call ended stays readable for the report.
    assert_eq!(net.peers[pa].punch.path(), Path::Direct(b[1]));
    // B lost it, as it should.
    assert_eq!(net.peers[pb].punch.path(), Path::Relay);
}

fn forged_check(key: &[u8], call_id: u64, id: u8) -> Vec<u8> {
    let mut b = Builder::new(BINDING_REQUEST, &[id; 12]);
    b.attribute(ATTR_CALL_ID, &call_id.to_be_bytes());
    b.attribute(ATTR_PUNCH_SENDER, &[9; 8]);
    b.finish_with_integrity(key).unwrap()
}

/// Checks and answers with the wrong secret or the wrong call id, from an attacker on the
/// internet, are ignored and counted: no answer, no triggered check toward the attacker, no
/// path change.
#[test]
fn forged_checks_are_ignored() {
    let mut net = World::new();
    let ha = net.add_host("203.0.113.5:5000", None);
    let attacker = net.add_host("192.0.2.66:666", None);
    // The peer never shows up.
    let pa = net.start_call(ha, vec!["198.51.100.200:6000".parse().unwrap()], 1);
    net.run_until(Duration::from_millis(500));
    let target = net.addr(ha);
    let mut forged = vec![
        forged_check(b"wrong secret", CALL_ID, 1),
        forged_check(SECRET, CALL_ID ^ 1, 2),
        forged_check(b"", CALL_ID, 3),
    ];
    // An answer with the wrong key, and one sealed right but for no check of ours.
    for (key, id) in [(&b"wrong secret"[..], 4u8), (SECRET, 5)] {
        let mut b = Builder::new(BINDING_SUCCESS, &[id; 12]);
        b.xor_mapped_address(target);
        b.attribute(ATTR_CALL_ID, &CALL_ID.to_be_bytes());
        forged.push(b.finish_with_integrity(key).unwrap());
    }
    // A CALL-ID that MESSAGE-INTEGRITY does not cover.
    let mut b = Builder::new(BINDING_REQUEST, &[6; 12]);
    b.attribute(ATTR_PUNCH_SENDER, &[9; 8]);
    let mut uncovered = b.finish_with_integrity(b"wrong").unwrap();
    let len = uncovered.len();
    uncovered.truncate(len - 8);
    uncovered.extend_from_slice(&ATTR_CALL_ID.to_be_bytes());
    uncovered.extend_from_slice(&8u16.to_be_bytes());
    uncovered.extend_from_slice(&CALL_ID.to_be_bytes());
    let body = u16::try_from(uncovered.len() - 20).unwrap();
    uncovered[2..4].copy_from_slice(&body.to_be_bytes());
    forged.push(uncovered);
    let stats_before = net.peers[pa].punch.stats();
    for _ in 0..10 {
        for bytes in &forged {
            net.send(attacker, target, bytes.clone());
        }
        net.run_until(net.elapsed() + Duration::from_millis(100));
    }
    net.run_until(Duration::from_secs(5));
    let stats = net.peers[pa].punch.stats();
    assert_eq!(stats.rejected_call - stats_before.rejected_call, 20);
    assert_eq!(stats.rejected_auth - stats_before.rejected_auth, 30);
    assert_eq!(
        stats.rejected_unmatched - stats_before.rejected_unmatched,
        10
    );
    assert_eq!(stats.checks_received, 0);
    assert_eq!(stats.responses_sent, 0);
    assert!(net.peers[pa].events.is_empty());
    assert_eq!(net.peers[pa].punch.path(), Path::Relay);
    assert!(!net.peers[pa].punch.is_peer_address(net.addr(attacker)));
    assert_eq!(
        net.delivered(attacker),
        0,
        "nothing was sent to the attacker"
    );
}

/// With 10% of datagrams lost at random, the direct path is found quickly and kept for minutes:
/// a missed consent check is retried every 200 ms, so losing a few does not lose the path.
#[test]
fn lossy_direct_path_is_kept() {
    let (mut net, ha, hb) = World::two_lans(
        NatKind::PortRestricted,
        NatKind::PortRestricted,
        "10.0.0.7:6000",
    );
    for e in [ha, hb] {
        net.net.link_mut(net.endpoints[e].host).loss = 0.05;
    }
    let (pa, pb, a, b) = call(&mut net, ha, hb);
    net.run_until(Duration::from_secs(180));
    for (p, addr) in [(pa, b[1]), (pb, a[1])] {
        let peer = &net.peers[p];
        assert_eq!(peer.events.len(), 1, "{:?}", peer.events);
        let (t, e) = peer.events[0];
        assert_eq!(e, PunchEvent::DirectPath(addr));
        assert!(t <= Duration::from_millis(300), "{t:?}");
        assert_eq!(peer.punch.path(), Path::Direct(addr));
    }
    assert!(net.net.stats().udp_dropped() > 0);
}

/// A behind a `MASQUERADE --random-fully` NAT (a random port per destination), B behind a
/// port-keeping, port-filtering one (`MASQUERADE`), with the birthday roles the phone gives
/// them from the signalled candidates; `tune` changes both configurations.
fn birthday_call(seed: u64, tune: impl Fn(&mut PunchConfig)) -> (World, usize, usize) {
    let mut net = World::with_seed(seed);
    let na = net.net.add_nat(NatConfig {
        random_ports: true,
        ..NatConfig::new(NatKind::Symmetric, "203.0.113.1".parse().unwrap())
    });
    let nb = net.add_nat(NatKind::PortRestricted, "198.51.100.1");
    let ha = net.add_host("192.168.1.10:5000", Some(na));
    let hb = net.add_host("10.0.0.7:6000", Some(nb));
    let server: SocketAddr = SERVER.parse().unwrap();
    net.add_host(SERVER, None);
    let a = [net.addr(ha), net.mapped_address(ha, server)];
    let b = [net.addr(hb), net.mapped_address(hb, server)];
    let config = |ours: &[SocketAddr], theirs: &[SocketAddr], seed| {
        let mut config = PunchConfig::new(SECRET.to_vec(), CALL_ID, theirs.to_vec(), seed);
        config.birthday = birthday_role(ours, theirs);
        tune(&mut config);
        config
    };
    let (ca, cb) = (config(&a, &b, seed * 2 + 1), config(&b, &a, seed * 2 + 2));
    assert_eq!(ca.birthday, Some(Birthday::Spares { peer: b[1] }));
    assert_eq!(cb.birthday, Some(Birthday::Spray { peer: a[1].ip() }));
    let pa = net.start_call_with(ha, ca);
    let pb = net.start_call_with(hb, cb);
    (net, pa, pb)
}

/// One port-random side: its spares open the moment the normal checks have found nothing
/// (250 ms), the port-keeping side's probes to random ports hit one of them, and both go direct
/// over that spare: A's media leaves from it, the other spares close. The path then holds.
#[test]
fn one_port_random_side_goes_direct_by_birthday_probing() {
    let (mut net, pa, pb) = birthday_call(7, |_| {});
    net.run_until(Duration::from_secs(10));
    let (a, b) = (&net.peers[pa], &net.peers[pb]);
    assert!(
        a.events
            .iter()
            .any(|(t, e)| *e == PunchEvent::OpenSpares(256)
                && (Duration::from_millis(250)..Duration::from_millis(300)).contains(t)),
        "{:?}",
        a.events
    );
    let Local::Spare(kept) = a.punch.direct_local() else {
        panic!("A's direct path is not on a spare: {:?}", a.events);
    };
    assert!(
        a.events
            .iter()
            .any(|(_, e)| *e == PunchEvent::CloseSpares { keep: Some(kept) })
    );
    let (ta, via_a) = first_direct(a).expect("A went direct");
    let (tb, via_b) = first_direct(b).expect("B went direct");
    assert_eq!(via_a, "198.51.100.1:6000".parse().unwrap());
    assert_eq!(
        via_b.ip(),
        "203.0.113.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(b.punch.direct_local(), Local::Media);
    let (sa, sb) = (a.punch.stats(), b.punch.stats());
    assert_eq!(sa.spares_opened, 256);
    assert!(sb.spray_sent >= 1 && sb.spray_sent <= 2048, "{sb:?}");
    assert_eq!(sa.spray_sent + sb.spares_opened, 0);
    // Each probe is 2.5 ms after the last, from 150 ms after the spares opened.
    let expected = Duration::from_millis(400) + Duration::from_micros(2500) * sb.spray_sent as u32;
    for t in [ta, tb] {
        assert!(t <= expected + Duration::from_millis(100), "{t:?}, {sb:?}");
    }
    // The path holds, with consent checks from the kept spare.
    net.run_until(Duration::from_secs(30));
    for p in [pa, pb] {
        let peer = &net.peers[p];
        assert!(
            !peer
                .events
                .iter()
                .any(|(_, e)| matches!(e, PunchEvent::DirectLost(_))),
            "{:?}",
            peer.events
        );
        assert!(matches!(peer.punch.path(), Path::Direct(_)));
    }
    assert_eq!(net.peers[pa].punch.direct_local(), Local::Spare(kept));
    // No probe after the hit.
    assert_eq!(net.peers[pb].punch.stats().spray_sent, sb.spray_sent);
}

/// The odds, over 400 calls with different random ports: with 256 spares and at most 2,048
/// probes a call misses with probability (1 - 256/64,512)^2048 = 0.03 %. Prints the figures
/// for docs/figures.md (`--nocapture`).
#[test]
fn birthday_probing_almost_always_finds_a_path() {
    let mut probes = Vec::new();
    let mut times = Vec::new();
    let mut missed = 0;
    for seed in 0..400 {
        let (mut net, pa, pb) = birthday_call(1000 + seed, |_| {});
        net.run_until(Duration::from_secs(9));
        match (first_direct(&net.peers[pa]), first_direct(&net.peers[pb])) {
            (Some((ta, _)), Some((tb, _))) => {
                times.push(ta.max(tb));
                probes.push(net.peers[pb].punch.stats().spray_sent);
            }
            _ => missed += 1,
        }
        assert!(net.peers[pb].punch.stats().spray_sent <= 2048);
    }
    probes.sort_unstable();
    times.sort_unstable();
    let at = |q: f64| ((probes.len() - 1) as f64 * q) as usize;
    println!(
        "birthday probing over 400 calls: {} direct, probes p50 {} p95 {} max {}, direct after p50 {:?} p95 {:?} max {:?}",
        probes.len(),
        probes[at(0.5)],
        probes[at(0.95)],
        probes[probes.len() - 1],
        times[at(0.5)],
        times[at(0.95)],
        times[times.len() - 1]
    );
    assert!(missed <= 2, "{missed} of 400 calls stayed on the relay");
    // Half the calls need fewer than 252 * ln 2 = 175 probes or so.
    assert!(
        (100..=260).contains(&probes[at(0.5)]),
        "{}",
        probes[at(0.5)]
    );
}

/// When no probe hits (here: the port-keeping side sends none), the spares close when their
/// window is over and the call stays on the relay; nothing more is sent from them.
#[test]
fn spares_close_when_no_probe_hits() {
    let (mut net, pa, pb) = birthday_call(3, |c| c.spray_budget = 0);
    net.run_until(Duration::from_secs(12));
    let a = &net.peers[pa];
    let closed = a
        .events
        .iter()
        .find(|(_, e)| *e == PunchEvent::CloseSpares { keep: None })
        .map(|(t, _)| *t)
        .expect("the spares closed");
    // Opened at 250 ms, kept for 8 s.
    assert!(
        (Duration::from_millis(8200)..Duration::from_millis(8300)).contains(&closed),
        "{closed:?}"
    );
    assert_eq!(a.punch.path(), Path::Relay);
    assert_eq!(net.peers[pb].punch.stats().spray_sent, 0);
    let sent = a.punch.stats().checks_sent;
    net.run_until(Duration::from_secs(20));
    // Only the media socket's rechecks (two candidates, 1 s apart) go on.
    let more = net.peers[pa].punch.stats().checks_sent - sent;
    assert!(more <= 20, "{more}");
}
