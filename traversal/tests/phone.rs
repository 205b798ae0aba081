//! `Phone`s against the real sans-IO `Server` (its `calls` service inside), on the simulated
//! network of `traversal-sim`, in virtual time: registration, every way a call starts and
//! ends, the server lost, killed, restarted or silent, and media on the direct and relayed
//! paths. Each test runs in milliseconds of wall time.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use traversal::channel;
use traversal::client::e2e;
use traversal::control::{ClientMessage, EndReason as Wire, ServerMessage, Verdict};
use traversal::phone::{
    CallSecurity, ControlConnected, EndReason, Event, Local, MediaPath, PathKind, Phone,
    PhoneConfig, RETRY_SPREAD, Received, Registration, ServerLoss, StopReason, TcpAction,
};
use traversal::server::{self, Server};
use traversal_sim::{Arrival, ConnId, End, HostId, NatConfig, NatKind, Net, ServerNode, TcpEvent};

const SERVER: &str = "5.5.5.5:3478";
/// A second, independent server (another node of the service), when a test starts one.
const SECOND: &str = "6.6.6.6:3478";
const MEDIA_PORT: u16 = 5000;
/// One RTP packet every 20 ms while a handset talks.
const PACKET_TIME: Duration = Duration::from_millis(20);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Where a phone sits.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// On the internet at this address.
    Public(&'static str),
    /// At this private address behind a NAT of this kind with this public address.
    Behind(NatKind, &'static str, &'static str),
    /// At this private address on the same LAN as that phone.
    NextTo(usize, &'static str),
    /// At this private address behind a NAT made so.
    BehindNat(NatConfig, &'static str),
}

/// A phone on a host, with what it said and what it heard.
#[derive(Debug)]
struct Handset {
    phone: Phone,
    host: HostId,
    media: SocketAddr,
    /// The control connection and its local address.
    conn: Option<(ConnId, SocketAddr)>,
    connects: u16,
    /// The server of the control connection.
    server: SocketAddr,
    /// The server of each [`TcpAction::Connect`], in order.
    connected_to: Vec<String>,
    events: Vec<(Instant, Event)>,
    /// Bytes written on the control connection.
    tcp_bytes: usize,
    /// Sends an RTP packet every 20 ms while a call is connected.
    talking: bool,
    next_packet: Instant,
    rtp_seq: u16,
    /// Media received: when, and over which path kind it came.
    heard: Vec<(Instant, Vec<u8>)>,
    /// Birthday probing's spare sockets, while open (ports 30000 up).
    spares: Vec<SocketAddr>,
}

/// The net, the server and the phones.
#[derive(Debug)]
struct World {
    net: Net,
    /// The server process, while it runs.
    server: Option<ServerNode>,
    server_host: HostId,
    server_addr: SocketAddr,
    /// The server takes nothing in any more (hung), but its connections stay open.
    frozen: bool,
    /// The second server's host, and its process while it runs ([`World::start_second`]).
    second_host: HostId,
    second: Option<ServerNode>,
    phones: Vec<Handset>,
    /// A server in the middle: rewrites the messages between the phones and the server.
    tamper: Option<Middle>,
}

/// A server in the middle: sees and rewrites every control message, both ways (whole frames,
/// as the phones and the simulated server write them).
struct Middle {
    /// Phone `i` sends this to the server.
    up: Box<dyn FnMut(usize, ClientMessage) -> ClientMessage>,
    /// The server sends this to phone `i`.
    down: Box<dyn FnMut(usize, ServerMessage) -> ServerMessage>,
}

impl Middle {
    fn down(f: impl FnMut(usize, ServerMessage) -> ServerMessage + 'static) -> Self {
        Middle {
            up: Box::new(|_, m| m),
            down: Box::new(f),
        }
    }
}

impl std::fmt::Debug for Middle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Middle")
    }
}

impl World {
    fn new() -> Self {
        let mut net = Net::new(1);
        net.wan_delay = Duration::from_millis(10);
        let server_addr: SocketAddr = SERVER.parse().unwrap();
        let server_host = net.add_host(vec![server_addr.ip()], None);
        let second_addr: SocketAddr = SECOND.parse().unwrap();
        let second_host = net.add_host(vec![second_addr.ip()], None);
        let mut world = World {
            net,
            server: None,
            server_host,
            server_addr,
            frozen: false,
            second_host,
            second: None,
            phones: Vec::new(),
            tamper: None,
        };
        world.start_server();
        world
    }

    fn now(&self) -> Instant {
        self.net.now()
    }

    /// A (new) server process on the server's address: no names, no registrations.
    fn start_server(&mut self) {
        let seed = u8::try_from(self.phones.len()).unwrap() + 1;
        let server = Server::new(server::Config::default(), [seed; 32]);
        let node = ServerNode::start(&mut self.net, self.server_host, self.server_addr, server);
        self.server = Some(node);
        self.frozen = false;
    }

    /// A server process on [`SECOND`], independent of the first (no names shared).
    fn start_second(&mut self) {
        let server = Server::new(server::Config::default(), [200; 32]);
        let addr = SECOND.parse().unwrap();
        self.second = Some(ServerNode::start(
            &mut self.net,
            self.second_host,
            addr,
            server,
        ));
    }

    /// The server process dies: its connections close at the phones' end.
    fn kill_server(&mut self) {
        self.net.kill_listener(self.server_addr);
        self.server = None;
    }

    /// A phone named `name` with key `key` at `place`, with `tweak` applied to its config.
    fn add(
        &mut self,
        name: &str,
        key: u8,
        place: Place,
        tweak: impl FnOnce(&mut PhoneConfig),
    ) -> usize {
        let (local, nat) = match place {
            Place::Public(ip) => (ip, None),
            Place::Behind(kind, local, public) => {
                let config = NatConfig::new(kind, public.parse().unwrap()).with_timeout(secs(60));
                (local, Some(self.net.add_nat(config)))
            }
            Place::NextTo(phone, local) => (local, self.net.host(self.phones[phone].host).nat),
            Place::BehindNat(config, local) => (local, Some(self.net.add_nat(config))),
        };
        let ip: IpAddr = local.parse().unwrap();
        let host = self.net.add_host(vec![ip], nat);
        let seed = [100 + self.phones.len() as u8; 32];
        let mut config = PhoneConfig::new(name.into(), SigningKey::from_bytes(&[key; 32]), seed);
        tweak(&mut config);
        let now = self.now();
        self.phones.push(Handset {
            phone: Phone::new(config, now),
            host,
            media: SocketAddr::new(ip, MEDIA_PORT),
            conn: None,
            connects: 0,
            server: self.server_addr,
            connected_to: Vec::new(),
            events: Vec::new(),
            tcp_bytes: 0,
            talking: true,
            next_packet: now,
            rtp_seq: 0,
            heard: Vec::new(),
            spares: Vec::new(),
        });
        self.pump();
        self.phones.len() - 1
    }

    fn phone(&mut self, name: &str, place: Place) -> usize {
        let key = name.bytes().next().unwrap();
        self.add(name, key, place, |_| {})
    }

    /// Two phones behind port-restricted NATs (a direct path opens), or symmetric ones (the
    /// call stays on the relay), registered.
    fn pair(kind: NatKind) -> (World, usize, usize) {
        World::pair_of(kind, kind)
    }

    /// Alice and bob behind port-restricted NATs, in a call gone direct.
    fn direct_call() -> (World, usize, usize) {
        let (mut w, a, b) = World::pair(NatKind::PortRestricted);
        w.connect(a, b);
        assert!(w.both_direct(a, b));
        (w, a, b)
    }

    /// Alice behind a NAT of kind `a`, bob behind one of kind `b`, registered.
    fn pair_of(a: NatKind, b: NatKind) -> (World, usize, usize) {
        let mut w = World::new();
        let a = w.phone("alice", Place::Behind(a, "192.168.1.10", "203.0.113.1"));
        let b = w.phone("bob", Place::Behind(b, "10.0.0.7", "198.51.100.1"));
        w.run(secs(2));
        assert!(w.online(a) && w.online(b), "{:?}", w.events(a));
        (w, a, b)
    }

    /// Runs `f` on phone `i` now, then delivers what it queued.
    fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Phone, Instant) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.phones[i].phone, now);
        self.pump();
        r
    }

    fn call(&mut self, i: usize, peer: &str) {
        self.with(i, |p, now| p.call(now, peer)).unwrap();
    }

    /// `a` calls `b`, `b` answers when it rings: both connected.
    fn connect(&mut self, a: usize, b: usize) {
        let name = self.phones[b].phone_name();
        self.call(a, &name);
        assert!(self.run_until(secs(2), |w| {
            w.has(b, |e| matches!(e, Event::Incoming { .. }))
        }));
        self.with(b, |p, now| p.accept(now)).unwrap();
        assert!(self.run_until(secs(2), |w| w.connected(a) && w.connected(b)));
    }

    fn online(&self, i: usize) -> bool {
        self.phones[i].phone.is_online()
    }

    fn connected(&self, i: usize) -> bool {
        self.phones[i].phone.media_path().is_some()
    }

    fn events(&self, i: usize) -> Vec<Event> {
        self.phones[i]
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn has(&self, i: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.phones[i].events.iter().any(|(_, e)| f(e))
    }

    fn count(&self, i: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.phones[i].events.iter().filter(|(_, e)| f(e)).count()
    }

    /// How the last call of phone `i` ended, and when.
    fn ended(&self, i: usize) -> Option<(Instant, EndReason, bool)> {
        self.phones[i]
            .events
            .iter()
            .rev()
            .find_map(|(t, e)| match e {
                Event::Ended {
                    reason, connected, ..
                } => Some((*t, *reason, *connected)),
                _ => None,
            })
    }

    /// Phone `i` hangs up: within a second its call ends `HungUp` and `peer`'s `Remote(HungUp)`.
    fn hang_up(&mut self, i: usize, peer: usize) {
        self.with(i, |p, now| p.hang_up(now));
        self.run(secs(1));
        self.assert_ended(i, EndReason::HungUp);
        self.assert_ended(peer, EndReason::Remote(Wire::HungUp));
    }

    /// Asserts that the last call of phone `i` ended for `reason`.
    fn assert_ended(&self, i: usize, reason: EndReason) {
        assert_eq!(
            self.end_reason(i),
            Some(reason),
            "phone {i}: {:?}",
            self.events(i)
        );
    }

    fn end_reason(&self, i: usize) -> Option<EndReason> {
        self.ended(i).map(|(_, r, _)| r)
    }

    /// Runs until both phones' media go direct (2 s at most); returns whether they did.
    fn both_direct(&mut self, a: usize, b: usize) -> bool {
        self.run_until(secs(2), |w| {
            [a, b].map(|i| path_kind(w, i)) == [Some(PathKind::Direct); 2]
        })
    }

    /// Runs for `d` and asserts that phones `a` and `b`, connected, each heard at least `min`
    /// media packets meanwhile.
    fn assert_media(&mut self, [a, b]: [usize; 2], d: Duration, min: usize) {
        let since = self.now();
        self.run(d);
        for i in [a, b] {
            let heard = self.heard_since(i, since);
            assert!(self.connected(i), "phone {i}: {:?}", self.events(i));
            assert!(heard >= min, "phone {i} heard {heard} packets in {d:?}");
        }
    }

    /// Media packets phone `i` heard since `since`.
    fn heard_since(&self, i: usize, since: Instant) -> usize {
        self.phones[i]
            .heard
            .iter()
            .filter(|(t, _)| *t >= since)
            .count()
    }

    fn run(&mut self, d: Duration) {
        let end = self.now() + d;
        self.run_to(end);
    }

    /// Runs until `done` holds (checked every 10 ms) or `limit` passes; returns whether it held.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&World) -> bool) -> bool {
        let end = self.now() + limit;
        while self.now() < end {
            if done(self) {
                return true;
            }
            let step = (self.now() + Duration::from_millis(10)).min(end);
            self.run_to(step);
        }
        done(self)
    }

    fn run_to(&mut self, end: Instant) {
        loop {
            self.pump();
            let mut next = self.net.next_arrival();
            let mut at = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            };
            if !self.frozen {
                at(self.server.as_ref().map(ServerNode::poll_timeout));
            }
            at(self.second.as_ref().map(ServerNode::poll_timeout));
            for h in &self.phones {
                at(h.phone.poll_timeout());
                if h.talking && h.phone.media_path().is_some() {
                    at(Some(h.next_packet));
                }
            }
            let Some(next) = next.filter(|t| *t <= end) else {
                self.net.advance_to(end);
                self.pump();
                return;
            };
            self.net.advance_to(next);
            let now = self.now();
            if let Some(server) = self.server.as_mut()
                && !self.frozen
            {
                server.handle_timeout(now);
            }
            if let Some(second) = self.second.as_mut() {
                second.handle_timeout(now);
            }
            for i in 0..self.phones.len() {
                let h = &mut self.phones[i];
                if h.phone.poll_timeout().is_some_and(|t| t <= now) {
                    h.phone.handle_timeout(now);
                }
                if h.talking && h.next_packet <= now {
                    h.next_packet = now + PACKET_TIME;
                    self.send_media(i);
                }
            }
        }
    }

    /// One RTP packet from phone `i` along its media path.
    fn send_media(&mut self, i: usize) {
        let h = &mut self.phones[i];
        let Some(path) = h.phone.media_path() else {
            return;
        };
        h.rtp_seq = h.rtp_seq.wrapping_add(1);
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&h.rtp_seq.to_be_bytes());
        rtp.extend_from_slice(&[0; 8]);
        rtp.extend_from_slice(&[i as u8; 40]);
        // From the spare the direct path runs on (birthday probing), else the media socket.
        let from = match h.phone.media_local() {
            Local::Spare(n) => h.spares[usize::from(n)],
            Local::Media => h.media,
        };
        let (to, bytes) = match path {
            MediaPath::Direct(addr) => (addr, rtp),
            MediaPath::Relay {
                server,
                channel,
                token,
            } => {
                let mut frame = Vec::new();
                channel::encode_relay_into(channel, token, &rtp, &mut frame).unwrap();
                (server, frame)
            }
        };
        let host = h.host;
        self.net.send_udp(host, from, to, bytes);
    }

    /// Moves everything queued and due until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            let now = self.now();
            for i in 0..self.phones.len() {
                while let Some(action) = self.phones[i].phone.poll_tcp() {
                    progress = true;
                    self.tcp_action(i, action);
                }
                let h = &mut self.phones[i];
                while let Some(e) = h.phone.poll_event() {
                    progress = true;
                    match e {
                        Event::OpenSpares { count } => {
                            let ip = h.media.ip();
                            h.spares = (0..count).map(|n| SocketAddr::new(ip, 30000 + n)).collect();
                            h.phone.spares_opened(now, count);
                        }
                        Event::CloseSpares { keep: None } => h.spares.clear(),
                        _ => {}
                    }
                    h.events.push((now, e));
                }
                while let Some(t) = h.phone.poll_transmit() {
                    progress = true;
                    let from = match t.local {
                        Local::Spare(n) => h.spares[usize::from(n)],
                        Local::Media => h.media,
                    };
                    self.net.send_udp(h.host, from, t.destination, t.contents);
                }
            }
            if let Some(server) = self.server.as_mut() {
                progress |= server.drain(&mut self.net);
            }
            if let Some(second) = self.second.as_mut() {
                progress |= second.drain(&mut self.net);
            }
            while let Some(arrival) = self.net.pop_due() {
                progress = true;
                self.deliver(arrival);
            }
            if !progress {
                return;
            }
        }
    }

    fn tcp_action(&mut self, i: usize, action: TcpAction) {
        let h = &mut self.phones[i];
        match action {
            TcpAction::Connect { server } => {
                if let Some((conn, _)) = h.conn.take() {
                    self.net.tcp_close(conn, End::Connector);
                }
                h.connects += 1;
                h.connected_to.push(server.clone());
                // A phone with a list of servers names one; else the world's server.
                let to = server.parse().unwrap_or(self.server_addr);
                h.server = to;
                let local = SocketAddr::new(h.media.ip(), 40000 + h.connects);
                let conn = self.net.tcp_connect(h.host, local, to, None);
                h.conn = Some((conn, local));
            }
            TcpAction::Send(bytes) => {
                if let Some((conn, _)) = h.conn {
                    h.tcp_bytes += bytes.len();
                    let bytes = match &mut self.tamper {
                        Some(middle) => rewrite(&bytes, |m| (middle.up)(i, m)),
                        None => bytes,
                    };
                    self.net.tcp_send(conn, End::Connector, bytes);
                }
            }
            TcpAction::Close => {
                if let Some((conn, _)) = h.conn.take() {
                    self.net.tcp_close(conn, End::Connector);
                }
            }
        }
    }

    fn deliver(&mut self, arrival: Arrival) {
        let now = self.now();
        match arrival {
            Arrival::Udp { host, .. } | Arrival::Tcp { host, .. } if host == self.server_host => {
                if let Some(server) = self.server.as_mut()
                    && !self.frozen
                {
                    server.handle(now, arrival);
                }
            }
            Arrival::Udp { host, .. } | Arrival::Tcp { host, .. } if host == self.second_host => {
                if let Some(second) = self.second.as_mut() {
                    second.handle(now, arrival);
                }
            }
            Arrival::Udp {
                host,
                to,
                from,
                bytes,
            } => {
                let Some(h) = self.phones.iter_mut().find(|h| h.host == host) else {
                    return;
                };
                let local = match h.spares.iter().position(|s| *s == to) {
                    Some(n) => Local::Spare(n as u16),
                    None => Local::Media,
                };
                if let Received::Media(m) = h.phone.handle_datagram_on(now, local, from, &bytes) {
                    h.heard.push((now, m.to_vec()));
                }
            }
            Arrival::Tcp { conn, event, .. } => {
                let Some((i, h)) = self
                    .phones
                    .iter_mut()
                    .enumerate()
                    .find(|(_, h)| h.conn.is_some_and(|(c, _)| c == conn))
                else {
                    return;
                };
                let local = h.conn.map(|(_, l)| l).unwrap();
                let server = h.server;
                match event {
                    TcpEvent::Connected => h.phone.handle_connected(
                        now,
                        ControlConnected {
                            server,
                            access: local,
                            local_addresses: vec![local.ip()],
                            media_port: MEDIA_PORT,
                            media_ipv6: false,
                        },
                    ),
                    TcpEvent::Refused => {
                        h.conn = None;
                        h.phone
                            .handle_connect_failed(now, "connection refused".into());
                    }
                    TcpEvent::Data(bytes) => match &mut self.tamper {
                        Some(middle) => {
                            let bytes = rewrite(&bytes, |m| (middle.down)(i, m));
                            h.phone.handle_tcp(now, &bytes);
                        }
                        None => h.phone.handle_tcp(now, &bytes),
                    },
                    TcpEvent::Closed => {
                        h.conn = None;
                        h.phone.handle_tcp_closed(now);
                    }
                    TcpEvent::Accepted { .. } => {}
                }
            }
        }
    }

    /// Phone `i`'s control connection breaks (a reset both ways).
    fn break_control(&mut self, i: usize) {
        let (conn, _) = self.phones[i].conn.take().unwrap();
        self.net.tcp_close(conn, End::Connector);
        let now = self.now();
        self.phones[i].phone.handle_tcp_closed(now);
        self.pump();
    }
}

trait Name {
    fn phone_name(&self) -> String;
}

impl Name for Handset {
    fn phone_name(&self) -> String {
        self.events
            .iter()
            .find_map(|(_, e)| match e {
                Event::Registration(Registration::Online { name, .. }) => Some(name.clone()),
                _ => None,
            })
            .unwrap()
    }
}

/// The frames of `bytes` (whole ones, as the simulated server and the phones write them)
/// through `tamper`.
fn rewrite<M: serde::Serialize + serde::de::DeserializeOwned>(
    mut bytes: &[u8],
    mut tamper: impl FnMut(M) -> M,
) -> Vec<u8> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let message: M = serde_json::from_slice(&bytes[4..4 + len]).unwrap();
        out.extend(traversal::control::encode(&tamper(message)));
        bytes = &bytes[4 + len..];
    }
    out
}

/// The call's keys as phone `i` got them.
fn security(w: &World, i: usize) -> CallSecurity {
    w.events(i)
        .into_iter()
        .find_map(|e| match e {
            Event::Connected { security, .. } => Some(security),
            _ => None,
        })
        .unwrap()
}

fn is_online_event(e: &Event) -> bool {
    matches!(e, Event::Registration(Registration::Online { .. }))
}

fn is_offline_event(e: &Event) -> bool {
    matches!(e, Event::Registration(Registration::Offline { .. }))
}

fn path_kind(w: &World, i: usize) -> Option<PathKind> {
    w.phones[i].phone.media_path().map(|p| p.kind())
}

// ---- registration ----

#[test]
fn registers_behind_a_nat_and_in_public_with_mapped_address_and_verdict() {
    let mut w = World::new();
    let natted = w.phone(
        "alice",
        Place::Behind(NatKind::PortRestricted, "192.168.1.10", "203.0.113.1"),
    );
    let public = w.phone("bob", Place::Public("7.7.7.7"));
    w.run(secs(3));
    let online = |i: usize| {
        w.events(i).into_iter().find_map(|e| match e {
            Event::Registration(Registration::Online {
                name,
                mapped,
                verdict,
                ..
            }) => Some((name, mapped, verdict)),
            _ => None,
        })
    };
    let (name, mapped, verdict) = online(natted).unwrap();
    assert_eq!(name, "alice");
    assert_eq!(mapped.ip(), "203.0.113.1".parse::<IpAddr>().unwrap());
    assert_eq!(verdict, Some(Verdict::Nat));
    let (name, mapped, verdict) = online(public).unwrap();
    assert_eq!(name, "bob");
    assert_eq!(mapped, "7.7.7.7:5000".parse().unwrap());
    assert_eq!(verdict, Some(Verdict::Public));
    for i in [natted, public] {
        assert_eq!(
            w.events(i)[0],
            Event::Registration(Registration::Connecting)
        );
        assert_eq!(w.count(i, is_online_event), 1, "{:?}", w.events(i));
    }
}

// ---- calls ----

/// The path a call settles on for each pair of NATs (iroh's patchbay matrix, in virtual time):
/// direct wherever hole punching can work, the relay elsewhere, media both ways on either.
#[test]
fn path_by_nat_pair() {
    use NatKind::{FullCone, PortRestricted, RestrictedCone, Symmetric};
    let cases = [
        (PortRestricted, PortRestricted, PathKind::Direct),
        (RestrictedCone, PortRestricted, PathKind::Direct),
        (FullCone, Symmetric, PathKind::Direct),
        (Symmetric, FullCone, PathKind::Direct),
        // Bob's NAT lets in alice's fresh port: it filters by address only.
        (Symmetric, RestrictedCone, PathKind::Direct),
        (Symmetric, PortRestricted, PathKind::Relay),
        (Symmetric, Symmetric, PathKind::Relay),
    ];
    for (ka, kb, expected) in cases {
        let (mut w, a, b) = World::pair_of(ka, kb);
        w.connect(a, b);
        w.run(secs(3));
        w.assert_media([a, b], secs(2), 90);
        for i in [a, b] {
            assert_eq!(path_kind(&w, i), Some(expected), "{ka:?} / {kb:?}");
        }
    }
}

/// One port-random NAT (`MASQUERADE --random-fully`: a random port per destination) and one
/// port-keeping, port-filtering one (`MASQUERADE`): the normal checks find nothing, and birthday
/// probing does. The phones take their roles from each other's candidates: alice's spares
/// open 250 ms in, bob's probes hit one of their ports, and the media goes direct, alice's
/// from that spare; the other spares close. Whoever calls.
#[test]
fn one_port_random_nat_goes_direct_by_birthday_probing() {
    let random = NatConfig {
        random_ports: true,
        ..NatConfig::new(NatKind::Symmetric, "203.0.113.1".parse().unwrap()).with_timeout(secs(60))
    };
    let keeps = NatConfig {
        preserve_ports: true,
        ..NatConfig::new(NatKind::PortRestricted, "198.51.100.1".parse().unwrap())
            .with_timeout(secs(60))
    };
    for alice_calls in [true, false] {
        let mut w = World::new();
        let a = w.phone("alice", Place::BehindNat(random, "192.168.1.10"));
        let b = w.phone("bob", Place::BehindNat(keeps, "10.0.0.7"));
        w.run(secs(2));
        if alice_calls {
            w.connect(a, b);
        } else {
            w.connect(b, a);
        }
        assert!(
            w.run_until(secs(8), |w| w.phones[a].phone.media_local() != Local::Media),
            "alice calls: {alice_calls}: {:?}",
            w.events(a)
        );
        assert!(w.both_direct(a, b), "alice calls: {alice_calls}");
        let Local::Spare(kept) = w.phones[a].phone.media_local() else {
            unreachable!()
        };
        assert!(w.has(a, |e| *e == Event::OpenSpares { count: 256 }));
        assert!(w.has(a, |e| *e == Event::CloseSpares { keep: Some(kept) }));
        assert!(!w.has(b, |e| matches!(e, Event::OpenSpares { .. })));
        // Bob sends to alice's spare's port, which is not the one the server saw.
        let Some(MediaPath::Direct(to_alice)) = w.phones[b].phone.media_path() else {
            panic!("bob not direct");
        };
        assert_eq!(to_alice.ip(), "203.0.113.1".parse::<IpAddr>().unwrap());
        w.run(secs(3));
        w.assert_media([a, b], secs(2), 90);
        w.hang_up(a, b);
        assert_eq!(w.phones[a].phone.media_local(), Local::Media);
    }
}

/// Two symmetric NATs never go direct (`path_by_nat_pair`), unless one router maps a port to
/// its phone (PCP, NAT-PMP or UPnP IGD in the driver): the mapped address is a candidate the
/// other side's checks reach, whichever side calls, and the answers go back through it.
#[test]
fn a_routers_port_mapping_turns_symmetric_nats_direct() {
    for bob_has_it in [false, true] {
        let (mut w, a, b) = World::pair(NatKind::Symmetric);
        let (mapped_one, mapped) = if bob_has_it { (b, a) } else { (a, b) };
        let nat = w.net.host(w.phones[mapped_one].host).nat.unwrap();
        let internal = w.phones[mapped_one].media;
        let public = w.net.forward_port(nat, 40_000, internal);
        w.with(mapped_one, |p, _| p.set_router_mapping(Some(public)));
        assert_eq!(w.phones[mapped_one].phone.router_mapping(), Some(public));
        w.connect(a, b);
        assert!(w.both_direct(a, b), "bob maps: {bob_has_it}");
        // The other side sends to the mapped address.
        assert_eq!(
            w.phones[mapped].phone.media_path(),
            Some(MediaPath::Direct(public)),
            "bob maps: {bob_has_it}"
        );
        w.run(secs(3));
        w.assert_media([a, b], secs(2), 90);
    }
}

#[test]
fn phones_on_one_lan_go_direct_over_their_host_addresses() {
    let mut w = World::new();
    let a = w.phone(
        "alice",
        Place::Behind(NatKind::PortRestricted, "192.168.1.10", "203.0.113.1"),
    );
    let b = w.phone("bob", Place::NextTo(a, "192.168.1.11"));
    w.run(secs(2));
    w.connect(a, b);
    assert!(w.both_direct(a, b));
    assert_eq!(
        w.phones[a].phone.media_path(),
        Some(MediaPath::Direct("192.168.1.11:5000".parse().unwrap()))
    );
}

#[test]
fn call_rings_connects_goes_direct_carries_media_and_hangs_up() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.call(a, "bob");
    w.run(Duration::from_millis(200));
    assert!(w.has(a, |e| *e == Event::Ringing { peer: "bob".into() }));
    assert!(w.has(b, |e| *e
        == Event::Incoming {
            from: "alice".into()
        }));
    assert!(!w.connected(a) && !w.connected(b));
    w.with(b, |p, now| p.accept(now)).unwrap();
    w.run(Duration::from_millis(200));
    for (i, peer) in [(a, "bob"), (b, "alice")] {
        assert!(
            w.has(i, |e| matches!(e, Event::Connected { peer: p, path: MediaPath::Relay { .. }, .. } if p == peer)),
            "{:?}",
            w.events(i)
        );
    }
    // Both sides read the same six digits; what one sends the other decrypts.
    let (ka, kb) = (security(&w, a), security(&w, b));
    assert_eq!(ka.sas, kb.sas);
    assert_eq!(ka.sas.as_ref().unwrap().len(), 7);
    assert_eq!((&ka.tx, &ka.rx), (&kb.rx, &kb.tx));
    assert_eq!(ka.suite, "AEAD_AES_128_GCM");
    assert!(ka.peer_key.is_some() && kb.peer_key.is_some() && ka.peer_key != kb.peer_key);
    assert!(w.both_direct(a, b));
    for i in [a, b] {
        assert!(w.has(i, |e| matches!(
            e,
            Event::PathChanged {
                path: MediaPath::Direct(_)
            }
        )));
    }
    w.assert_media([a, b], secs(1), 45);
    assert_eq!(w.phones[a].heard.last().unwrap().1[0], 0x80);
    w.with(a, |p, now| p.hang_up(now));
    w.run(Duration::from_millis(200));
    assert_eq!(
        w.ended(a).map(|e| (e.1, e.2)),
        Some((EndReason::HungUp, true))
    );
    assert_eq!(
        w.ended(b).map(|e| (e.1, e.2)),
        Some((EndReason::Remote(Wire::HungUp), true))
    );
    assert!(!w.connected(a) && !w.connected(b));
    // Both stay registered for the next call.
    assert!(w.online(a) && w.online(b));
}

/// The callee declines, or the caller gives up while it rings: each side's reason.
#[test]
fn declined_and_cancelled_calls_end_on_both_sides() {
    type Act = fn(&mut World, usize, usize);
    let cases: [(&str, Act, EndReason, EndReason); 2] = [
        (
            "reject",
            |w, _, b| w.with(b, |p, now| p.reject(now)).unwrap(),
            EndReason::Remote(Wire::Rejected),
            EndReason::Declined,
        ),
        (
            "cancel",
            |w, a, _| w.with(a, |p, now| p.hang_up(now)),
            EndReason::Cancelled,
            EndReason::Remote(Wire::Cancelled),
        ),
    ];
    for (what, act, caller, callee) in cases {
        let (mut w, a, b) = World::pair(NatKind::PortRestricted);
        w.call(a, "bob");
        assert!(w.run_until(secs(1), |w| {
            w.has(a, |e| matches!(e, Event::Ringing { .. }))
        }));
        act(&mut w, a, b);
        w.run(Duration::from_millis(300));
        assert_eq!(
            w.ended(a).map(|e| (e.1, e.2)),
            Some((caller, false)),
            "{what}"
        );
        assert_eq!(
            w.ended(b).map(|e| (e.1, e.2)),
            Some((callee, false)),
            "{what}"
        );
    }
}

#[test]
fn busy_peer_offline_peer_and_no_answer() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    let c = w.phone("carol", Place::Public("7.7.7.7"));
    w.run(secs(1));
    // Busy: bob is in a call with alice.
    w.connect(a, b);
    w.call(c, "bob");
    w.run(Duration::from_millis(300));
    w.assert_ended(c, EndReason::Remote(Wire::Busy));
    assert!(w.connected(a) && w.connected(b), "the call goes on");
    // Offline: nobody has that name.
    w.call(c, "nobody");
    w.run(Duration::from_millis(300));
    w.assert_ended(c, EndReason::Remote(Wire::Offline));
    // No answer: alice rings for 30 s.
    w.with(a, |p, now| p.hang_up(now));
    w.run(Duration::from_millis(300));
    let placed = w.now();
    w.call(c, "alice");
    assert!(w.run_until(
        secs(40),
        |w| w.has(a, |e| matches!(e, Event::Incoming { .. }))
            && w.end_reason(c) == Some(EndReason::Remote(Wire::NoAnswer))
    ));
    let (at, _, connected) = w.ended(c).unwrap();
    assert!(!connected);
    let after = at - placed;
    assert!(after >= secs(30) && after <= secs(31), "{after:?}");
    let (_, callee, _) = w.ended(a).unwrap();
    assert_eq!(callee, EndReason::Remote(Wire::NoAnswer));
}

#[test]
fn calling_yourself_ends_at_once_and_sends_nothing() {
    let (mut w, a, _) = World::pair(NatKind::PortRestricted);
    let before = w.phones[a].tcp_bytes;
    w.call(a, "alice");
    w.assert_ended(a, EndReason::SelfCall);
    assert_eq!(w.phones[a].tcp_bytes, before);
    assert!(!w.connected(a));
}

// ---- the peer or the name lost ----

#[test]
fn peer_losing_its_control_connection_ends_a_relayed_call() {
    let (mut w, a, b) = World::pair(NatKind::Symmetric);
    w.connect(a, b);
    w.break_control(b);
    w.run(Duration::from_millis(200));
    w.assert_ended(a, EndReason::Remote(Wire::PeerLost));
    w.assert_ended(b, EndReason::ServerLost);
    // Bob reconnects by himself; alice never went offline.
    assert!(w.run_until(secs(3), |w| w.online(b)));
    assert_eq!(w.count(a, is_offline_event), 0);
}

#[test]
fn the_same_name_from_another_phone_takes_over_until_reconnect() {
    let mut w = World::new();
    let old = w.add("alice", 1, Place::Public("7.7.7.7"), |_| {});
    w.run(secs(2));
    assert!(w.online(old));
    let new = w.add("alice", 1, Place::Public("7.7.7.8"), |_| {});
    w.run(secs(2));
    assert!(w.online(new));
    assert!(w.has(old, |e| *e == Event::Registration(Registration::Replaced)));
    let seen = w.phones[old].events.len();
    w.run(secs(60));
    assert!(!w.online(old));
    assert_eq!(
        w.phones[old].events.len(),
        seen,
        "{:?}",
        &w.events(old)[seen..]
    );
    assert!(w.online(new));
    // Until the user says so; then the old phone takes the name back.
    w.with(old, |p, now| p.reconnect(now));
    assert!(w.run_until(secs(3), |w| w.online(old)));
    w.run(secs(1));
    assert!(w.has(new, |e| *e == Event::Registration(Registration::Replaced)));
    assert!(!w.online(new));
}

/// `first` registered, `second` claims `taken` with another key: the second phone stops with
/// `reason`, without a retry.
fn second_claim_stops(taken: &str, reason: StopReason) {
    let mut w = World::new();
    let first = w.add("alice", 1, Place::Public("7.7.7.7"), |_| {});
    w.run(secs(2));
    let second = w.add(taken, 2, Place::Public("7.7.7.8"), |_| {});
    w.run(secs(5));
    assert!(w.online(first));
    assert!(
        w.has(second, |e| *e == Event::Stopped(reason.clone())),
        "{:?}",
        w.events(second)
    );
    assert!(w.phones[second].phone.is_stopped());
    assert_eq!(w.phones[second].connects, 1, "no retry");
}

#[test]
fn name_taken_by_another_key_stops_the_phone() {
    second_claim_stops("alice", StopReason::NameTaken);
}

/// A name that looks like a registered one (Cyrillic а in `аlice`) stops the phone with its
/// own reason.
#[test]
fn a_lookalike_name_stops_the_phone() {
    second_claim_stops("\u{430}lice", StopReason::NameConfusable);
}

// ---- the server lost ----

#[test]
fn server_killed_mid_call_on_a_direct_path_leaves_the_call_up() {
    let (mut w, a, b) = World::direct_call();
    w.kill_server();
    w.run(secs(1));
    for i in [a, b] {
        assert!(
            w.has(i, |e| matches!(
                e,
                Event::Registration(Registration::Offline {
                    reason: ServerLoss::Closed,
                    ..
                })
            )),
            "{:?}",
            w.events(i)
        );
        assert_eq!(w.ended(i), None, "{:?}", w.events(i));
    }
    // Media goes on both ways while the phones try to reconnect.
    w.assert_media([a, b], secs(10), 450);
    // A new server on the same address: both back online, the call still up.
    w.start_server();
    assert!(w.run_until(secs(10), |w| w.online(a) && w.online(b)));
    assert!(w.connected(a) && w.connected(b));
    // The hang-up reaches the peer over the direct path (the new server knows no call).
    w.hang_up(a, b);
}

#[test]
fn server_killed_mid_call_on_the_relay_ends_it_on_both_sides() {
    let (mut w, a, b) = World::pair(NatKind::Symmetric);
    w.connect(a, b);
    w.kill_server();
    w.run(secs(1));
    for i in [a, b] {
        assert_eq!(
            w.ended(i).map(|e| (e.1, e.2)),
            Some((EndReason::ServerLost, true))
        );
        assert!(!w.connected(i));
    }
}

#[test]
fn call_placed_while_the_server_is_down_fails_in_seconds() {
    let (mut w, a, _) = World::pair(NatKind::PortRestricted);
    w.kill_server();
    w.run(secs(1));
    let placed = w.now();
    w.call(a, "bob");
    assert!(w.run_until(secs(15), |w| w.ended(a).is_some()));
    let (at, reason, _) = w.ended(a).unwrap();
    assert_eq!(reason, EndReason::ServerUnreachable);
    assert!(at - placed <= secs(10), "{:?}", at - placed);
}

#[test]
fn phones_register_again_by_themselves_after_a_restart_and_call() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.kill_server();
    w.run(secs(20));
    let attempts = w.phones[a].connects;
    // Back-off: from 0.5 s doubling to 5 s, so about 6 attempts in 20 s, not hundreds.
    assert!((4..=10).contains(&attempts), "{attempts} attempts");
    w.start_server();
    assert!(w.run_until(secs(10), |w| w.online(a) && w.online(b)));
    for i in [a, b] {
        assert_eq!(w.count(i, is_online_event), 2, "{:?}", w.events(i));
    }
    w.connect(a, b);
    w.hang_up(b, a);
}

#[test]
fn server_that_stops_answering_is_noticed_by_its_pings() {
    let (mut w, a, _) = World::pair(NatKind::PortRestricted);
    let frozen_at = w.now();
    w.frozen = true;
    assert!(w.run_until(secs(30), |w| w.has(a, is_offline_event)));
    let (at, reason) = w.phones[a]
        .events
        .iter()
        .find_map(|(t, e)| match e {
            Event::Registration(Registration::Offline { reason, .. }) => Some((*t, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(reason, ServerLoss::NotAnswering);
    // A ping every 15 s, answered within 5 s.
    assert!(at - frozen_at <= secs(21), "{:?}", at - frozen_at);
}

#[test]
fn first_connection_failing_stops_or_retries_as_configured() {
    for stop in [true, false] {
        let mut w = World::new();
        w.kill_server();
        let a = w.add("alice", 1, Place::Public("7.7.7.7"), |c| {
            c.stop_if_first_connect_fails = stop;
        });
        w.run(secs(5));
        let stopped = w.events(a).into_iter().find_map(|e| match e {
            Event::Stopped(StopReason::Unreachable { detail }) => Some(detail),
            _ => None,
        });
        if stop {
            assert!(stopped.is_some(), "{:?}", w.events(a));
            assert_eq!(w.phones[a].connects, 1);
        } else {
            assert_eq!(stopped, None);
            assert!(w.phones[a].connects >= 3, "{}", w.phones[a].connects);
            w.start_server();
            assert!(w.run_until(secs(10), |w| w.online(a)));
        }
    }
}

#[test]
fn peer_falling_silent_on_a_direct_path_ends_the_call() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.connect(a, b);
    assert!(w.run_until(secs(2), |w| path_kind(w, a) == Some(PathKind::Direct)));
    w.run(secs(1));
    let silent_from = w.now();
    w.phones[b].talking = false;
    assert!(w.run_until(secs(10), |w| w.ended(a).is_some()));
    let (at, reason, connected) = w.ended(a).unwrap();
    assert_eq!((reason, connected), (EndReason::PeerSilent, true));
    let after = at - silent_from;
    assert!(after >= secs(5) && after <= secs(6), "{after:?}");
}

#[test]
fn peer_losing_its_control_connection_keeps_a_direct_call() {
    let (mut w, a, b) = World::direct_call();
    w.break_control(b);
    // The server ends the call for alice (peer_lost), but the direct path says bob is there.
    assert!(w.run_until(secs(3), |w| w.online(b)));
    w.assert_media([a, b], secs(6), 250);
    // The hang-up reaches bob over the direct path (the server forgot the call).
    w.hang_up(a, b);
}

#[test]
fn hang_up_reaches_the_peer_over_the_direct_path_while_the_server_is_down() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.connect(a, b);
    assert!(w.run_until(secs(2), |w| path_kind(w, b) == Some(PathKind::Direct)));
    w.kill_server();
    w.run(secs(2));
    w.hang_up(b, a);
}

#[test]
fn direct_path_lost_while_the_server_is_down_ends_the_call() {
    let (mut w, a, b) = World::direct_call();
    w.kill_server();
    w.run(secs(1));
    for i in [a, b] {
        let host = w.phones[i].host;
        w.net.link_mut(host).up = false;
    }
    w.run(secs(10));
    for i in [a, b] {
        w.assert_ended(i, EndReason::ServerLost);
    }
}

#[test]
fn media_from_a_stranger_is_not_the_peers() {
    let mut w = World::new();
    let a = w.phone("alice", Place::Public("7.7.7.7"));
    let b = w.phone("bob", Place::Public("7.7.7.8"));
    let stranger = w.net.add_host(vec!["6.6.6.6".parse().unwrap()], None);
    w.run(secs(2));
    w.connect(a, b);
    assert!(w.run_until(secs(2), |w| path_kind(w, a) == Some(PathKind::Direct)));
    let mut rtp = vec![0x80, 0x00, 0, 1];
    rtp.extend_from_slice(&[0xee; 48]);
    let from: SocketAddr = "6.6.6.6:5000".parse().unwrap();
    let to = w.phones[a].media;
    // Bob falls silent; a stranger sends RTP-looking datagrams to alice all along.
    w.phones[b].talking = false;
    for _ in 0..400 {
        w.net.send_udp(stranger, from, to, rtp.clone());
        w.run(PACKET_TIME);
    }
    assert!(
        !w.phones[a].heard.iter().any(|(_, m)| m[4] == 0xee),
        "a stranger's datagram was taken for the call's media"
    );
    w.assert_ended(a, EndReason::PeerSilent);
}

#[test]
fn call_placed_before_the_first_registration_goes_out_once_online() {
    let mut w = World::new();
    let b = w.phone("bob", Place::Public("7.7.7.8"));
    w.run(secs(1));
    let a = w.phone("alice", Place::Public("7.7.7.7"));
    w.call(a, "bob");
    assert!(w.run_until(secs(3), |w| {
        w.has(b, |e| matches!(e, Event::Incoming { .. }))
            && w.has(a, |e| *e == Event::Ringing { peer: "bob".into() })
    }));
}

#[test]
fn calls_crossing_each_other_both_end() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.call(a, "bob");
    w.call(b, "alice");
    w.run(secs(40));
    for i in [a, b] {
        assert!(!w.connected(i));
        assert_eq!(
            w.count(i, |e| matches!(e, Event::Ended { .. })),
            1,
            "{:?}",
            w.events(i)
        );
    }
    // Both can call again.
    w.connect(a, b);
}

#[test]
fn shutting_down_mid_call_tells_the_peer_and_frees_the_registration() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.connect(a, b);
    let before = w.server.as_ref().unwrap().registrations();
    w.with(a, |p, now| p.shut_down(now));
    w.run(secs(1));
    assert!(w.phones[a].phone.is_stopped());
    w.assert_ended(a, EndReason::HungUp);
    w.assert_ended(b, EndReason::Remote(Wire::HungUp));
    assert_eq!(w.server.as_ref().unwrap().registrations(), before - 1);
    w.run(secs(30));
    assert_eq!(w.phones[a].connects, 1, "no reconnect after shut_down");
}

#[test]
fn accepted_call_the_server_never_connects_ends() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.call(a, "bob");
    assert!(w.run_until(secs(2), |w| {
        w.has(b, |e| matches!(e, Event::Incoming { .. }))
    }));
    w.frozen = true;
    let accepted = w.now();
    w.with(b, |p, now| p.accept(now)).unwrap();
    assert!(w.run_until(secs(30), |w| w.ended(a).is_some() && w.ended(b).is_some()));
    let (at, reason, connected) = w.ended(b).unwrap();
    assert_eq!((reason, connected), (EndReason::ServerLost, false));
    assert!(at - accepted <= secs(11), "{:?}", at - accepted);
    w.assert_ended(a, EndReason::ServerLost);
}

#[test]
fn reconnects_back_off_from_half_a_second_doubling_to_five() {
    let (mut w, a, _) = World::pair(NatKind::PortRestricted);
    w.kill_server();
    w.run(secs(30));
    let waits: Vec<Duration> = w.phones[a]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Registration(Registration::Offline { retry_at, .. }) => Some(*retry_at - *t),
            _ => None,
        })
        .collect();
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    assert!(waits.len() >= 8, "{waits:?}");
    assert_eq!(
        waits[..8],
        ms(&[0, 500, 1000, 2000, 4000, 5000, 5000, 5000])[..]
    );
    // reconnect() skips the wait.
    let before = w.phones[a].connects;
    w.with(a, |p, now| p.reconnect(now));
    assert_eq!(w.phones[a].connects, before + 1);
}

#[test]
fn ringing_call_ends_when_the_server_dies_and_calls_while_replaced_fail_at_once() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.call(a, "bob");
    assert!(w.run_until(secs(2), |w| {
        w.has(b, |e| matches!(e, Event::Incoming { .. }))
    }));
    w.kill_server();
    w.run(secs(1));
    assert_eq!(
        w.ended(b).map(|e| (e.1, e.2)),
        Some((EndReason::ServerLost, false))
    );
    assert_eq!(
        w.ended(a).map(|e| (e.1, e.2)),
        Some((EndReason::ServerLost, false))
    );
    assert_eq!(
        w.with(b, |p, now| p.accept(now)),
        Err(traversal::phone::CommandError::NoCallToAccept)
    );
    // Alice's name taken over on a new server: calling ends at once.
    w.start_server();
    assert!(w.run_until(secs(10), |w| w.online(a)));
    let other = w.add("alice", b'a', Place::Public("7.7.7.9"), |_| {});
    assert!(w.run_until(secs(3), |w| w.online(other)));
    assert!(w.has(a, |e| *e == Event::Registration(Registration::Replaced)));
    let sent = w.phones[a].tcp_bytes;
    w.call(a, "bob");
    w.assert_ended(a, EndReason::ServerUnreachable);
    assert_eq!(w.phones[a].tcp_bytes, sent);
}

/// A server that swaps the callee's ephemeral key (it cannot sign for the callee): the caller
/// refuses it and the call ends as insecure on both sides, with no media.
#[test]
fn a_server_that_swaps_the_callees_key_gets_no_call() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.tamper = Some(Middle::down(|_, m| match m {
        ServerMessage::Connected {
            call_id,
            candidates,
            channel,
            relay_token,
            peer_key,
            e2e: Some(mut e2e),
        } => {
            e2e.ephemeral = "09".repeat(32);
            ServerMessage::Connected {
                call_id,
                candidates,
                channel,
                relay_token,
                peer_key,
                e2e: Some(e2e),
            }
        }
        other => other,
    }));
    w.call(a, "bob");
    w.run(Duration::from_millis(200));
    w.with(b, |p, now| p.accept(now)).unwrap();
    w.run(Duration::from_millis(500));
    assert_eq!(w.end_reason(a), Some(EndReason::Insecure));
    assert!(!w.has(a, |e| matches!(e, Event::Connected { .. })));
    assert!(!w.has(b, |e| matches!(e, Event::Connected { .. })));
    assert!(w.end_reason(b).is_some(), "{:?}", w.events(b));
}

/// A server that keeps the caller's reveal from the callee: the callee never has keys, and
/// gives up as insecure when its accept times out.
#[test]
fn a_callee_without_the_callers_key_ends_the_call_as_insecure() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.tamper = Some(Middle::down(|_, m| match m {
        ServerMessage::Reveal { call_id, .. } => ServerMessage::Ringing { call_id },
        other => other,
    }));
    w.call(a, "bob");
    w.run(Duration::from_millis(200));
    w.with(b, |p, now| p.accept(now)).unwrap();
    w.run(secs(3));
    // The caller is up (it has the keys); the callee has none and plays nothing.
    assert!(w.has(a, |e| matches!(e, Event::Connected { .. })));
    assert!(!w.has(b, |e| matches!(e, Event::Connected { .. })));
    assert_eq!(w.end_reason(b), None);
    w.run(secs(10));
    // Whichever comes first: the caller hears nothing and hangs up, or the callee's accept
    // times out without the key.
    assert!(matches!(
        w.end_reason(b),
        Some(EndReason::Insecure | EndReason::Remote(Wire::HungUp))
    ));
    assert!(!w.has(b, |e| matches!(e, Event::Connected { .. })));
}

/// A server in the middle that runs the key exchange with each side under its own name key
/// (it cannot sign for either person): both calls connect, but the two people read different
/// strings, and each sees a name key that is not the other's (the contacts' warning in the
/// app).
#[test]
fn a_server_in_the_middle_is_seen_in_the_strings_and_the_keys() {
    use std::cell::RefCell;
    use std::rc::Rc;

    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    let mallory = SigningKey::from_bytes(&[66; 32]);
    let mallory_hex = hex(&mallory.verifying_key().to_bytes());
    #[derive(Default)]
    struct State {
        /// Towards bob, mallory is the caller.
        as_caller: Option<e2e::Caller>,
        /// Towards alice, mallory is the callee.
        as_callee: Option<e2e::Callee>,
        alice_key: String,
        alice_commitment: String,
        reveal_for_bob: Option<traversal::control::E2eHello>,
    }
    let state = Rc::new(RefCell::new(State::default()));
    let (up_state, down_state) = (state.clone(), state);
    let (m_up, mk_down) = (mallory.clone(), mallory_hex);
    w.tamper = Some(Middle {
        up: Box::new(move |_, m| {
            let mut st = up_state.borrow_mut();
            match m {
                // alice's call: mallory keeps her commitment and commits to its own key.
                ClientMessage::Call {
                    call_id,
                    to,
                    candidates,
                    commitment,
                } => {
                    st.alice_commitment = commitment;
                    let caller = e2e::Caller::new([11; 32]);
                    let commitment = caller.commitment();
                    st.as_caller = Some(caller);
                    ClientMessage::Call {
                        call_id,
                        to,
                        candidates,
                        commitment,
                    }
                }
                // bob's answer: mallory finishes its exchange with bob, and answers alice.
                ClientMessage::Accept {
                    call_id,
                    candidates,
                    e2e: answer,
                } => {
                    let bob_key = hex(&SigningKey::from_bytes(&[b'b'; 32])
                        .verifying_key()
                        .to_bytes());
                    let (reveal, _) = st
                        .as_caller
                        .as_ref()
                        .unwrap()
                        .finish(&m_up, &bob_key, &answer)
                        .unwrap();
                    st.reveal_for_bob = Some(reveal);
                    let callee =
                        e2e::Callee::new([12; 32], &st.alice_key, &st.alice_commitment).unwrap();
                    let e2e = callee.answer(&m_up);
                    st.as_callee = Some(callee);
                    ClientMessage::Accept {
                        call_id,
                        candidates,
                        e2e,
                    }
                }
                // alice's reveal goes to mallory; bob gets mallory's.
                ClientMessage::Reveal { call_id, e2e } => {
                    st.as_callee.as_ref().unwrap().finish(&m_up, &e2e).unwrap();
                    ClientMessage::Reveal {
                        call_id,
                        e2e: st.reveal_for_bob.clone().unwrap(),
                    }
                }
                other => other,
            }
        }),
        down: Box::new(move |_, m| {
            let mut st = down_state.borrow_mut();
            match m {
                // bob is told the caller's key is mallory's.
                ServerMessage::Incoming {
                    call_id,
                    from,
                    candidates,
                    key,
                    commitment,
                } => {
                    st.alice_key = key;
                    ServerMessage::Incoming {
                        call_id,
                        from,
                        candidates,
                        key: mk_down.clone(),
                        commitment,
                    }
                }
                // alice is told the callee's key is mallory's.
                ServerMessage::Connected {
                    call_id,
                    candidates,
                    channel,
                    relay_token,
                    e2e: Some(e2e),
                    ..
                } => ServerMessage::Connected {
                    call_id,
                    candidates,
                    channel,
                    relay_token,
                    peer_key: mk_down.clone(),
                    e2e: Some(e2e),
                },
                other => other,
            }
        }),
    });
    w.call(a, "bob");
    w.run(Duration::from_millis(200));
    w.with(b, |p, now| p.accept(now)).unwrap();
    w.run(Duration::from_millis(500));
    let (ka, kb) = (security(&w, a), security(&w, b));
    assert_ne!(ka.sas, kb.sas, "the two people read different strings");
    let mallory_key = Some(mallory.verifying_key().to_bytes());
    assert_eq!(
        ka.peer_key, mallory_key,
        "alice sees a key that is not bob's"
    );
    assert_eq!(
        kb.peer_key, mallory_key,
        "bob sees a key that is not alice's"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- a server that shuts down gracefully (going_away) ----

impl World {
    /// The server starts a graceful shutdown: it will have stopped `grace` from now.
    fn go_away(&mut self, grace: Duration) {
        let now = self.now();
        self.server.as_mut().unwrap().go_away(now, now + grace);
        // The word reaches the phones (10 ms away) and they act on it.
        self.run(Duration::from_millis(100));
    }

    /// The `retry_at` of phone `i`'s offline event for a server going away, if any.
    fn going_away_retry_at(&self, i: usize) -> Option<Instant> {
        self.phones[i].events.iter().find_map(|(_, e)| match e {
            Event::Registration(Registration::Offline {
                reason: ServerLoss::ShuttingDown,
                retry_at,
            }) => Some(*retry_at),
            _ => None,
        })
    }
}

#[test]
fn a_relayed_call_keeps_its_media_through_the_grace_and_ends_as_a_server_shutdown() {
    let (mut w, a, b) = World::pair(NatKind::Symmetric);
    w.connect(a, b);
    assert_eq!(path_kind(&w, a), Some(PathKind::Relay));
    let grace = secs(6);
    w.go_away(grace);
    for i in [a, b] {
        assert!(w.going_away_retry_at(i).is_some(), "{:?}", w.events(i));
        assert!(!w.online(i), "offline: the server takes no calls now");
        assert!(w.connected(i));
    }
    // The server relays the call through its grace: media both ways, 25 packets a second.
    w.assert_media([a, b], secs(5), 200);
    assert!(!w.server.as_ref().unwrap().drained(), "the call holds it");
    // The grace is over: the process exits with the call still up.
    w.run(secs(1));
    w.kill_server();
    assert!(w.run_until(secs(5), |w| w.ended(a).is_some() && w.ended(b).is_some()));
    for i in [a, b] {
        assert_eq!(
            w.ended(i).map(|e| (e.1, e.2)),
            Some((EndReason::ServerShutDown, true)),
            "{:?}",
            w.events(i)
        );
        assert_eq!(EndReason::ServerShutDown.as_str(), "server_shut_down");
        // Not a failure: no other offline reason, and nothing stopped.
        assert!(!w.has(i, |e| matches!(e, Event::Stopped(_))));
    }
    // Back on a restarted server by themselves.
    w.start_server();
    assert!(w.run_until(secs(10), |w| w.online(a) && w.online(b)));
}

#[test]
fn a_relayed_call_that_ends_during_the_grace_lets_the_server_stop_early() {
    let (mut w, a, b) = World::pair(NatKind::Symmetric);
    w.connect(a, b);
    w.go_away(secs(10));
    w.run(secs(1));
    w.hang_up(a, b);
    // Both phones left the server once the call was over: nothing holds it any more.
    assert!(w.run_until(secs(1), |w| w.server.as_ref().unwrap().drained()));
    assert_eq!(w.server.as_ref().unwrap().stats().connections, 0);
}

#[test]
fn a_direct_call_goes_on_across_a_server_shutdown() {
    let (mut w, a, b) = World::direct_call();
    w.go_away(secs(10));
    // The phones leave at once (the call does not need the server); nothing holds it.
    assert!(w.run_until(secs(1), |w| w.server.as_ref().unwrap().drained()));
    for i in [a, b] {
        assert!(w.going_away_retry_at(i).is_some(), "{:?}", w.events(i));
        assert_eq!(w.ended(i), None, "{:?}", w.events(i));
    }
    w.kill_server();
    w.assert_media([a, b], secs(5), 200);
    w.start_server();
    assert!(w.run_until(secs(10), |w| w.online(a) && w.online(b)));
    assert!(w.connected(a) && w.connected(b));
    w.hang_up(a, b);
}

#[test]
fn a_phone_registers_again_at_the_time_the_server_gave_when_it_comes_back_on_the_same_port() {
    let mut w = World::new();
    let a = w.phone("alice", Place::Public("7.7.7.7"));
    w.run(secs(2));
    assert!(w.online(a));
    let told = w.now();
    w.go_away(secs(10));
    // No call holds the server: come back after the restart allowance (1 s), spread by up to
    // 1 s so that a server's clients do not all come back at the same instant.
    let retry_at = w.going_away_retry_at(a).unwrap();
    assert!(
        retry_at >= told + server::RESTART_ALLOWANCE
            && retry_at <= told + server::RESTART_ALLOWANCE + secs(1),
        "{:?}",
        retry_at - told
    );
    assert!(w.server.as_ref().unwrap().drained());
    w.kill_server();
    let connects = w.phones[a].connects;
    w.run_to(retry_at - Duration::from_millis(1));
    assert_eq!(w.phones[a].connects, connects, "no attempt before retry_at");
    // The restart takes longer than the server said: the usual back-off after the first try.
    w.run(secs(2));
    assert!(w.phones[a].connects > connects);
    w.start_server();
    assert!(w.run_until(secs(6), |w| w.online(a)), "{:?}", w.events(a));
    assert!(!w.has(a, |e| matches!(e, Event::Stopped(_))));
}

#[test]
fn a_phone_that_connects_during_the_grace_is_refused_and_comes_back_later() {
    let (mut w, a, b) = World::pair(NatKind::Symmetric);
    w.connect(a, b);
    w.go_away(secs(10));
    // A phone that starts now (one that stops if its first connection fails).
    let c = w.phone("carol", Place::Public("7.7.7.7"));
    w.run(secs(1));
    assert!(!w.online(c));
    assert!(
        !w.has(c, |e| matches!(e, Event::Stopped(_))),
        "{:?}",
        w.events(c)
    );
    assert!(w.going_away_retry_at(c).is_some(), "{:?}", w.events(c));
    assert_eq!(w.server.as_ref().unwrap().stats().refused_shutting_down, 1);
    // The restart takes a while: carol's attempt at the time the server gave fails, and she
    // goes on with the back-off (a phone whose first connection fails would stop, but this
    // server answered).
    w.run(secs(1));
    w.kill_server();
    w.run(secs(15));
    assert!(w.phones[c].connects >= 3, "{}", w.phones[c].connects);
    assert!(
        !w.has(c, |e| matches!(e, Event::Stopped(_))),
        "{:?}",
        w.events(c)
    );
    w.start_server();
    assert!(w.run_until(secs(10), |w| w.online(c)), "{:?}", w.events(c));
}

#[test]
fn calls_ringing_when_the_server_goes_away_end_as_a_server_shutdown() {
    let (mut w, a, b) = World::pair(NatKind::PortRestricted);
    w.call(a, "bob");
    assert!(w.run_until(secs(2), |w| {
        w.has(b, |e| matches!(e, Event::Incoming { .. }))
    }));
    w.go_away(secs(10));
    for i in [a, b] {
        assert_eq!(
            w.ended(i).map(|e| (e.1, e.2)),
            Some((EndReason::ServerShutDown, false)),
            "{:?}",
            w.events(i)
        );
    }
    assert!(w.server.as_ref().unwrap().drained());
}

#[test]
fn a_going_away_that_asks_for_ages_is_cut_to_ten_minutes() {
    let mut w = World::new();
    let a = w.phone("alice", Place::Public("7.7.7.7"));
    w.run(secs(2));
    w.tamper = Some(Middle::down(|_, m| match m {
        ServerMessage::GoingAway { .. } => ServerMessage::GoingAway {
            retry_after_ms: u64::MAX,
        },
        m => m,
    }));
    let told = w.now();
    w.go_away(secs(10));
    let retry_at = w.going_away_retry_at(a).unwrap();
    let most = traversal::phone::MAX_RETRY_AFTER + traversal::phone::RETRY_SPREAD;
    assert!(retry_at - told <= most, "{:?}", retry_at - told);
    assert!(retry_at - told >= traversal::phone::MAX_RETRY_AFTER);
}

// ---- several servers ----

/// Alice, in public, knowing `servers` in that order.
fn listing(w: &mut World, servers: &[&str]) -> usize {
    let servers: Vec<String> = servers.iter().map(|s| (*s).to_string()).collect();
    w.add("alice", b'a', Place::Public("7.7.7.7"), |c| {
        c.servers = servers
    })
}

/// The server of phone `i`'s last `Online`.
fn online_at(w: &World, i: usize) -> Option<String> {
    w.phones[i].events.iter().rev().find_map(|(_, e)| match e {
        Event::Registration(Registration::Online { server, .. }) => Some(server.clone()),
        _ => None,
    })
}

/// Each `Offline`'s wait before the next attempt.
fn offline_waits(w: &World, i: usize) -> Vec<Duration> {
    w.phones[i]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Registration(Registration::Offline { retry_at, .. }) => Some(*retry_at - *t),
            _ => None,
        })
        .collect()
}

#[test]
fn a_phone_moves_to_the_next_server_at_once_when_its_own_dies_and_stays_there() {
    let mut w = World::new();
    w.start_second();
    let a = listing(&mut w, &[SERVER, SECOND]);
    w.run(secs(1));
    assert_eq!(online_at(&w, a).as_deref(), Some(SERVER));
    assert_eq!(w.phones[a].connected_to, [SERVER]);

    let died = w.now();
    w.kill_server();
    assert!(
        w.run_until(secs(5), |w| w.online(a)
            && online_at(w, a).as_deref() == Some(SECOND)),
        "{:?}",
        w.events(a)
    );
    // Noticed as the connection closes, the next server at once: a few round trips.
    let took = w.now() - died;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(offline_waits(&w, a), [Duration::ZERO]);
    assert_eq!(w.phones[a].connected_to, [SERVER, SECOND]);

    // The first comes back: the phone stays where it works.
    w.start_server();
    w.run(secs(30));
    assert_eq!(w.phones[a].connected_to, [SERVER, SECOND]);
    assert!(w.online(a));

    // The second dies: round the list, back to the first.
    w.net.kill_listener(SECOND.parse().unwrap());
    w.second = None;
    assert!(
        w.run_until(secs(5), |w| w.online(a)
            && online_at(w, a).as_deref() == Some(SERVER)),
        "{:?}",
        w.events(a)
    );
    assert_eq!(w.phones[a].connected_to, [SERVER, SECOND, SERVER]);
}

#[test]
fn a_first_server_dead_from_the_start_costs_one_refusal() {
    let mut w = World::new();
    w.kill_server();
    w.start_second();
    // A phone that stops when its first connection fails: the list is tried first.
    let a = listing(&mut w, &[SERVER, SECOND]);
    assert!(w.run_until(secs(5), |w| w.online(a)), "{:?}", w.events(a));
    assert!(w.now() - w.phones[a].events[0].0 < Duration::from_millis(500));
    assert_eq!(online_at(&w, a).as_deref(), Some(SECOND));
    assert_eq!(w.phones[a].connected_to, [SERVER, SECOND]);
    assert!(!w.has(a, |e| matches!(e, Event::Stopped(_))));
}

#[test]
fn the_first_connection_stops_only_when_every_server_failed() {
    let mut w = World::new();
    w.kill_server();
    let a = listing(&mut w, &[SERVER, SECOND]);
    w.run(secs(5));
    assert_eq!(w.phones[a].connected_to, [SERVER, SECOND]);
    assert!(
        w.has(a, |e| matches!(
            e,
            Event::Stopped(StopReason::Unreachable { .. })
        )),
        "{:?}",
        w.events(a)
    );
}

#[test]
fn the_back_off_waits_only_after_a_whole_round_of_servers_failed() {
    let mut w = World::new();
    let a = listing(&mut w, &[SERVER, SECOND]);
    w.run(secs(1));
    assert!(w.online(a));
    w.kill_server();
    w.run(secs(30));
    let waits = offline_waits(&w, a);
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    assert!(waits.len() >= 10, "{waits:?}");
    // Each round: the next server at once, then the back-off of one server alone.
    assert_eq!(
        waits[..10],
        ms(&[0, 0, 0, 500, 0, 1000, 0, 2000, 0, 4000])[..]
    );
    let tried = &w.phones[a].connected_to;
    assert!(
        tried
            .iter()
            .enumerate()
            .all(|(n, s)| s == [SERVER, SECOND][n % 2]),
        "round the list: {tried:?}"
    );
}

#[test]
fn a_server_going_away_sends_the_phone_to_the_next_at_once() {
    let mut w = World::new();
    w.start_second();
    let a = listing(&mut w, &[SERVER, SECOND]);
    w.run(secs(1));
    assert_eq!(online_at(&w, a).as_deref(), Some(SERVER));
    let told = w.now();
    w.go_away(secs(60));
    let retry_at = w.going_away_retry_at(a).unwrap();
    // Spread by up to a second, not the server's restart time.
    assert!(
        retry_at <= told + RETRY_SPREAD + secs(1) / 5,
        "{:?}",
        retry_at - told
    );
    assert!(
        w.run_until(secs(3), |w| w.online(a)
            && online_at(w, a).as_deref() == Some(SECOND)),
        "{:?}",
        w.events(a)
    );
    assert!(
        w.now() - told < RETRY_SPREAD + secs(1),
        "{:?}",
        w.now() - told
    );
    assert_eq!(w.phones[a].connected_to, [SERVER, SECOND]);
}

#[test]
fn a_server_that_stops_answering_pings_is_left_for_the_next() {
    let mut w = World::new();
    w.start_second();
    let a = listing(&mut w, &[SERVER, SECOND]);
    w.run(secs(1));
    assert_eq!(online_at(&w, a).as_deref(), Some(SERVER));
    // Hung, its connections open: only the unanswered ping tells.
    w.frozen = true;
    assert!(
        w.run_until(secs(30), |w| w.online(a)
            && online_at(w, a).as_deref() == Some(SECOND)),
        "{:?}",
        w.events(a)
    );
    let lost = w.phones[a]
        .events
        .iter()
        .find_map(|(t, e)| match e {
            Event::Registration(Registration::Offline { reason, retry_at }) => {
                Some((*t, reason.clone(), *retry_at))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(lost.1, ServerLoss::NotAnswering);
    assert_eq!(lost.2, lost.0, "the next server at once");
    assert!(
        w.now() - lost.0 < Duration::from_millis(500),
        "{:?}",
        w.now() - lost.0
    );
}

#[test]
fn one_listed_server_behaves_as_none_listed() {
    // A list of one is the single server: the back-off of `reconnects_back_off_…`.
    let mut w = World::new();
    let a = listing(&mut w, &[SERVER]);
    w.run(secs(1));
    assert_eq!(online_at(&w, a).as_deref(), Some(SERVER));
    w.kill_server();
    w.run(secs(10));
    let waits = offline_waits(&w, a);
    assert_eq!(
        waits[..4],
        [0, 500, 1000, 2000].map(Duration::from_millis)[..]
    );
}

/// A node of a cluster that cannot reach its name store answers a new name with `try_later`:
/// the phone tries again with its back-off (no stop), and registers once the store answers.
#[test]
fn a_name_store_that_is_away_delays_the_registration_and_does_not_stop_the_phone() {
    let mut w = World::new();
    let mut refusals = 2;
    w.tamper = Some(Middle::down(move |_, m| match m {
        ServerMessage::Registered { .. } if refusals > 0 => {
            refusals -= 1;
            ServerMessage::Error {
                code: "try_later".into(),
                message: "the server cannot reach its name store just now".into(),
            }
        }
        other => other,
    }));
    // As the app runs (a headless phone stops at a first refusal instead, and says why).
    let a = w.add("alice", 1, Place::Public("203.0.113.9"), |c| {
        c.stop_if_first_connect_fails = false;
    });
    assert!(w.run_until(secs(10), |w| w.online(a)), "{:?}", w.events(a));
    assert_eq!(w.phones[a].connects, 3, "two refusals, then registered");
    assert!(
        !w.has(a, |e| matches!(e, Event::Stopped { .. })),
        "{:?}",
        w.events(a)
    );
}
