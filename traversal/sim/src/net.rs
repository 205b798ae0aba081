//! The network: hosts, NATs, links, UDP datagrams and TCP byte pipes, in virtual time.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A host, by the order it was added.
pub type HostId = usize;
/// A NAT, by the order it was added.
pub type NatId = usize;
/// A TCP connection.
pub type ConnId = u64;

/// How a NAT maps and filters UDP (RFC 4787's terms; the classic names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering: once mapped, anyone gets in.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering: what comes from an address
    /// the inside host sent to gets in, from any port.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (Linux `MASQUERADE`
    /// with conntrack).
    PortRestricted,
    /// A mapping per internal socket and destination (`MASQUERADE --random-fully`); only that
    /// destination gets back in.
    Symmetric,
}

/// A NAT's settings.
#[derive(Debug, Clone, Copy)]
pub struct NatConfig {
    /// Mapping and filtering.
    pub kind: NatKind,
    /// The address hosts behind it show outside.
    pub public_ip: IpAddr,
    /// A mapping with nothing through it for this long is gone; `None`: never.
    pub timeout: Option<Duration>,
    /// Inbound datagrams refresh a mapping too (Linux conntrack does).
    pub inbound_refreshes: bool,
    /// A new endpoint-independent mapping keeps the internal port when it is free
    /// (`MASQUERADE` does; symmetric mappings never do).
    pub preserve_ports: bool,
    /// The first external port handed out.
    pub first_port: u16,
    /// The step between external ports handed out.
    pub port_step: u16,
    /// New mappings get a random free port in 1024-65535 instead (`MASQUERADE
    /// --random-fully`); `first_port` and `port_step` are not used.
    pub random_ports: bool,
    /// One-way delay between two hosts behind this NAT.
    pub lan_delay: Duration,
}

impl NatConfig {
    /// A NAT of `kind` at `public_ip`: mappings never expire, inbound refreshes, ports from
    /// 20000 one by one, 1 ms across the LAN.
    pub fn new(kind: NatKind, public_ip: IpAddr) -> Self {
        NatConfig {
            kind,
            public_ip,
            timeout: None,
            inbound_refreshes: true,
            preserve_ports: false,
            first_port: 20000,
            port_step: 1,
            random_ports: false,
            lan_delay: Duration::from_millis(1),
        }
    }

    /// The same with mappings that die after `timeout` of silence.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        NatConfig {
            timeout: Some(timeout),
            ..self
        }
    }
}

/// A host's access link: its delay and loss count on top of the path's, both ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way delay added to everything the host sends and receives.
    pub delay: Duration,
    /// Chance (0 to 1) that a datagram is lost, drawn once on the way out and once on the
    /// way in.
    pub loss: f64,
    /// False: nothing goes out or comes in (UDP datagrams and TCP segments are lost; TCP
    /// connections stay open, silent).
    pub up: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::ZERO,
            loss: 0.0,
            up: true,
        }
    }
}

/// A host: its addresses, the NAT in front of it (so its LAN), its link.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its interface addresses.
    pub ips: Vec<IpAddr>,
    /// The NAT in front; `None`: on the public internet.
    pub nat: Option<NatId>,
    /// Its access link.
    pub link: Link,
}

/// Something that reached a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// A datagram for the socket at `to`, from `from` (as translated on the way).
    Udp {
        /// The receiving host.
        host: HostId,
        /// The local address it was sent to (after the NAT in front, if any).
        to: SocketAddr,
        /// The source as this host sees it.
        from: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Something on a TCP connection of `host`.
    Tcp {
        /// The receiving host.
        host: HostId,
        /// The connection.
        conn: ConnId,
        /// Which end of it this is.
        end: End,
        /// What happened.
        event: TcpEvent,
    },
}

/// What happens on a TCP connection, as one end sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpEvent {
    /// At the listener: a new connection, from `peer` (after the connector's NAT).
    Accepted {
        /// The listening address.
        listener: SocketAddr,
        /// The connector as the listener sees it.
        peer: SocketAddr,
    },
    /// At the connector: the connection is open.
    Connected,
    /// At the connector: nothing listens there.
    Refused,
    /// Bytes, in order.
    Data(Vec<u8>),
    /// The other end closed, or died (its listener was killed).
    Closed,
}

/// One end of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// The end that connected.
    Connector,
    /// The end that accepted.
    Acceptor,
}

impl End {
    fn index(self) -> usize {
        match self {
            End::Connector => 0,
            End::Acceptor => 1,
        }
    }

    fn other(self) -> End {
        match self {
            End::Connector => End::Acceptor,
            End::Acceptor => End::Connector,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent.
    pub udp_sent: u64,
    /// Datagrams delivered.
    pub udp_delivered: u64,
    /// Lost on a link (loss, or link down).
    pub udp_lost: u64,
    /// Dropped by a NAT: no mapping, expired, filtered, or hairpin.
    pub udp_dropped_at_nat: u64,
    /// To an address nobody has.
    pub udp_unroutable: u64,
}

impl NetStats {
    /// Everything not delivered.
    pub fn udp_dropped(&self) -> u64 {
        self.udp_lost + self.udp_dropped_at_nat + self.udp_unroutable
    }
}

#[derive(Debug, Clone)]
struct NatMapping {
    internal: SocketAddr,
    /// Symmetric NATs: the one destination of this mapping.
    destination: Option<SocketAddr>,
    external_port: u16,
    last: Instant,
    /// Destinations this mapping sent to (what filtering lets back in); for a port forward,
    /// the sources that came in through it (its replies go out through it, as conntrack's).
    sent_to: Vec<SocketAddr>,
    /// A port forward ([`Net::forward_port`]): anyone gets in, it never expires.
    forwarded: bool,
}

#[derive(Debug)]
struct Nat {
    config: NatConfig,
    next_port: u16,
    next_tcp_port: u16,
    mappings: Vec<NatMapping>,
}

impl Nat {
    fn expire(&mut self, now: Instant) {
        if let Some(timeout) = self.config.timeout {
            self.mappings
                .retain(|m| m.forwarded || now.saturating_duration_since(m.last) < timeout);
        }
    }

    fn admits(&self, m: &NatMapping, from: SocketAddr) -> bool {
        if m.forwarded {
            return true;
        }
        match self.config.kind {
            NatKind::FullCone => true,
            NatKind::RestrictedCone => m.sent_to.iter().any(|d| d.ip() == from.ip()),
            NatKind::PortRestricted | NatKind::Symmetric => m.sent_to.contains(&from),
        }
    }
}

#[derive(Debug)]
struct Conn {
    hosts: [HostId; 2],
    open: [bool; 2],
    /// The last arrival scheduled toward each end: TCP keeps order.
    last: [Instant; 2],
    listener: SocketAddr,
}

/// The network. See the crate documentation.
#[derive(Debug)]
pub struct Net {
    start: Instant,
    now: Instant,
    /// One-way delay across the internet (between LANs, or to a public host).
    pub wan_delay: Duration,
    rng: StdRng,
    hosts: Vec<Host>,
    nats: Vec<Nat>,
    queue: BTreeMap<(Instant, u64), Arrival>,
    seq: u64,
    listeners: HashMap<SocketAddr, HostId>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    stats: NetStats,
    delivered: Vec<u64>,
}

impl Net {
    /// An empty network whose losses are drawn from `seed`, with no delay anywhere.
    pub fn new(seed: u64) -> Self {
        // The epoch of the virtual clock: any instant will do, and none is read again.
        let start = Instant::now();
        Net {
            start,
            now: start,
            wan_delay: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            stats: NetStats::default(),
            delivered: Vec::new(),
        }
    }

    // ---- time ----

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the network was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// When the next arrival is due.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// Moves the clock forward to `t` (never back).
    pub fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
    }

    /// The next arrival due by now, in order of time and sending.
    pub fn pop_due(&mut self) -> Option<Arrival> {
        loop {
            let (&key, _) = self.queue.iter().next()?;
            if key.0 > self.now {
                return None;
            }
            let arrival = self.queue.remove(&key)?;
            match &arrival {
                Arrival::Udp { host, .. } => {
                    self.stats.udp_delivered += 1;
                    self.delivered[*host] += 1;
                }
                Arrival::Tcp {
                    conn, end, event, ..
                } => {
                    let Some(c) = self.conns.get_mut(conn) else {
                        continue;
                    };
                    let end = *end;
                    if !c.open[end.index()] {
                        continue;
                    }
                    if matches!(event, TcpEvent::Refused | TcpEvent::Closed) {
                        c.open[end.index()] = false;
                    }
                }
            }
            return Some(arrival);
        }
    }

    // ---- topology ----

    /// Adds a NAT; returns its id.
    pub fn add_nat(&mut self, config: NatConfig) -> NatId {
        self.nats.push(Nat {
            config,
            next_port: config.first_port,
            next_tcp_port: 30000,
            mappings: Vec::new(),
        });
        self.nats.len() - 1
    }

    /// A NAT that forgets its mappings and moves on to other ports (a reboot).
    pub fn reset_nat(&mut self, nat: NatId) {
        if let Some(n) = self.nats.get_mut(nat) {
            n.mappings.clear();
            n.next_port = n.next_port.wrapping_add(1000).max(1024);
        }
    }

    /// Adds a host with these addresses behind `nat` (or public); returns its id.
    pub fn add_host(&mut self, ips: Vec<IpAddr>, nat: Option<NatId>) -> HostId {
        self.hosts.push(Host {
            ips,
            nat,
            link: Link::default(),
        });
        self.delivered.push(0);
        self.hosts.len() - 1
    }

    /// A host.
    pub fn host(&self, host: HostId) -> &Host {
        &self.hosts[host]
    }

    /// A host's link, to change its delay, loss, or cut it.
    pub fn link_mut(&mut self, host: HostId) -> &mut Link {
        &mut self.hosts[host].link
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Datagrams delivered to `host`.
    pub fn delivered(&self, host: HostId) -> u64 {
        self.delivered[host]
    }

    /// A port forward on `nat`, as a router makes for PCP, NAT-PMP or UPnP IGD: datagrams
    /// to its public address and `external_port` go to `internal` whoever sends them, and
    /// the answers leave through it. Returns the public address.
    pub fn forward_port(
        &mut self,
        nat: NatId,
        external_port: u16,
        internal: SocketAddr,
    ) -> SocketAddr {
        let now = self.now;
        let nat = &mut self.nats[nat];
        nat.mappings.push(NatMapping {
            internal,
            destination: None,
            external_port,
            last: now,
            sent_to: Vec::new(),
            forwarded: true,
        });
        SocketAddr::new(nat.config.public_ip, external_port)
    }

    /// The external address `local` on `host` gets toward `destination` (creating the
    /// mapping), as a server there would see it.
    pub fn translate(
        &mut self,
        host: HostId,
        local: SocketAddr,
        destination: SocketAddr,
    ) -> SocketAddr {
        match self.hosts[host].nat {
            None => local,
            Some(n) => self.translate_out(n, local, destination),
        }
    }

    fn translate_out(&mut self, n: NatId, internal: SocketAddr, to: SocketAddr) -> SocketAddr {
        let now = self.now;
        let rng = &mut self.rng;
        let nat = &mut self.nats[n];
        nat.expire(now);
        let symmetric = nat.config.kind == NatKind::Symmetric;
        let key = symmetric.then_some(to);
        // A reply to what came in through a port forward leaves through it.
        let replying = nat
            .mappings
            .iter()
            .position(|m| m.forwarded && m.internal == internal && m.sent_to.contains(&to));
        let i = match replying.or_else(|| {
            nat.mappings
                .iter()
                .position(|m| !m.forwarded && m.internal == internal && m.destination == key)
        }) {
            Some(i) => i,
            None => {
                let preserved = nat.config.preserve_ports
                    && !symmetric
                    && !nat
                        .mappings
                        .iter()
                        .any(|m| m.external_port == internal.port());
                let external_port = if preserved {
                    internal.port()
                } else if nat.config.random_ports {
                    loop {
                        let port = rng.random_range(1024..=u16::MAX);
                        if !nat.mappings.iter().any(|m| m.external_port == port) {
                            break port;
                        }
                    }
                } else {
                    let port = nat.next_port;
                    nat.next_port = nat.next_port.wrapping_add(nat.config.port_step).max(1024);
                    port
                };
                nat.mappings.push(NatMapping {
                    internal,
                    destination: key,
                    external_port,
                    last: now,
                    sent_to: Vec::new(),
                    forwarded: false,
                });
                nat.mappings.len() - 1
            }
        };
        let m = &mut nat.mappings[i];
        m.last = now;
        if !m.sent_to.contains(&to) {
            m.sent_to.push(to);
        }
        SocketAddr::new(nat.config.public_ip, m.external_port)
    }

    /// The host with address `ip` on the LAN behind `nat` (`None`: on the internet).
    fn host_at(&self, ip: IpAddr, nat: Option<NatId>) -> Option<HostId> {
        self.hosts
            .iter()
            .position(|h| h.nat == nat && h.ips.contains(&ip))
    }

    fn base_delay(&self, a: HostId, b: HostId) -> Duration {
        let (ha, hb) = (&self.hosts[a], &self.hosts[b]);
        let path = match (ha.nat, hb.nat) {
            (Some(x), Some(y)) if x == y => self.nats[x].config.lan_delay,
            _ => self.wan_delay,
        };
        path + ha.link.delay + hb.link.delay
    }

    fn link_passes(&mut self, host: HostId) -> bool {
        let link = self.hosts[host].link;
        link.up && (link.loss <= 0.0 || !self.rng.random_bool(link.loss.min(1.0)))
    }

    fn schedule(&mut self, at: Instant, arrival: Arrival) {
        self.seq += 1;
        self.queue.insert((at, self.seq), arrival);
    }

    // ---- UDP ----

    /// Sends a datagram from the socket at `from` on `host` to `to`.
    pub fn send_udp(&mut self, host: HostId, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.stats.udp_sent += 1;
        if !self.link_passes(host) {
            self.stats.udp_lost += 1;
            return;
        }
        let lan = self.hosts[host].nat;
        // Same LAN (or both public): straight there.
        if let Some(dst) = self.host_at(to.ip(), lan) {
            return self.deliver_udp(host, dst, to, from, bytes);
        }
        let source = match lan {
            None => from,
            Some(n) => {
                if self.nats[n].config.public_ip == to.ip() {
                    // No hairpinning, as Linux without extra rules.
                    self.stats.udp_dropped_at_nat += 1;
                    return;
                }
                self.translate_out(n, from, to)
            }
        };
        // Across the internet: a public host, or a NAT's public address.
        if let Some(dst) = self.host_at(to.ip(), None) {
            return self.deliver_udp(host, dst, to, source, bytes);
        }
        let Some(n) = self
            .nats
            .iter()
            .position(|nat| nat.config.public_ip == to.ip())
        else {
            self.stats.udp_unroutable += 1;
            return;
        };
        let now = self.now;
        let nat = &mut self.nats[n];
        nat.expire(now);
        let found = nat.mappings.iter().position(|m| {
            m.external_port == to.port()
                && m.destination.is_none_or(|d| d == source)
                && nat.admits(m, source)
        });
        let Some(i) = found else {
            self.stats.udp_dropped_at_nat += 1;
            return;
        };
        if nat.config.inbound_refreshes {
            nat.mappings[i].last = now;
        }
        let m = &mut nat.mappings[i];
        if m.forwarded && !m.sent_to.contains(&source) {
            m.sent_to.push(source);
        }
        let internal = nat.mappings[i].internal;
        match self.host_at(internal.ip(), Some(n)) {
            Some(dst) => self.deliver_udp(host, dst, internal, source, bytes),
            None => self.stats.udp_unroutable += 1,
        }
    }

    fn deliver_udp(
        &mut self,
        src: HostId,
        dst: HostId,
        to: SocketAddr,
        from: SocketAddr,
        bytes: Vec<u8>,
    ) {
        if !self.link_passes(dst) {
            self.stats.udp_lost += 1;
            return;
        }
        let at = self.now + self.base_delay(src, dst);
        self.schedule(
            at,
            Arrival::Udp {
                host: dst,
                to,
                from,
                bytes,
            },
        );
    }

    // ---- TCP ----

    /// `host` listens for TCP connections at `addr`.
    pub fn listen(&mut self, host: HostId, addr: SocketAddr) {
        self.listeners.insert(addr, host);
    }

    /// Whether something listens at `addr`.
    pub fn is_listening(&self, addr: SocketAddr) -> bool {
        self.listeners.contains_key(&addr)
    }

    /// The listener at `addr` dies (its process was killed): its connections close at the
    /// other end, what was in flight toward it is lost, and connecting there is refused.
    pub fn kill_listener(&mut self, addr: SocketAddr) {
        self.listeners.remove(&addr);
        let mut dead: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.listener == addr && c.open[1])
            .map(|(id, _)| *id)
            .collect();
        dead.sort_unstable();
        for id in dead {
            if let Some(c) = self.conns.get_mut(&id) {
                c.open[1] = false;
            }
            self.schedule_tcp(id, End::Acceptor, TcpEvent::Closed);
        }
    }

    /// `host` opens a TCP connection from `local` to `to`. The listener sees it come from
    /// `seen_as`, or by default from the NAT's public address (or `local` on a public host).
    /// Answered with [`TcpEvent::Connected`] or [`TcpEvent::Refused`] after a round trip, or
    /// never when the way there is cut.
    pub fn tcp_connect(
        &mut self,
        host: HostId,
        local: SocketAddr,
        to: SocketAddr,
        seen_as: Option<SocketAddr>,
    ) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let seen = seen_as.unwrap_or_else(|| match self.hosts[host].nat {
            None => local,
            Some(n) => {
                let nat = &mut self.nats[n];
                nat.next_tcp_port = nat.next_tcp_port.wrapping_add(1).max(1024);
                SocketAddr::new(nat.config.public_ip, nat.next_tcp_port)
            }
        });
        let lan = self.hosts[host].nat;
        let listener = self.listeners.get(&to).copied();
        let target = listener.or_else(|| {
            self.host_at(to.ip(), lan)
                .or_else(|| self.host_at(to.ip(), None))
        });
        self.conns.insert(
            id,
            Conn {
                hosts: [host, target.unwrap_or(host)],
                open: [true, listener.is_some()],
                last: [self.now; 2],
                listener: to,
            },
        );
        let Some(target) = target else {
            return id;
        };
        if !self.hosts[host].link.up || !self.hosts[target].link.up {
            return id;
        }
        let one_way = self.base_delay(host, target);
        let now = self.now;
        let answer = if listener.is_some() {
            let accepted = TcpEvent::Accepted {
                listener: to,
                peer: seen,
            };
            self.schedule(
                now + one_way,
                Arrival::Tcp {
                    host: target,
                    conn: id,
                    end: End::Acceptor,
                    event: accepted,
                },
            );
            TcpEvent::Connected
        } else {
            TcpEvent::Refused
        };
        self.schedule(
            now + one_way * 2,
            Arrival::Tcp {
                host,
                conn: id,
                end: End::Connector,
                event: answer,
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.last = [now + one_way * 2, now + one_way];
        }
        id
    }

    /// Writes bytes from `end` of `conn`; they arrive in order, or are lost while a link on
    /// the way is down.
    pub fn tcp_send(&mut self, conn: ConnId, end: End, bytes: Vec<u8>) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| c.open[end.index()] && c.open[end.other().index()])
        {
            self.schedule_tcp(conn, end, TcpEvent::Data(bytes));
        }
    }

    /// Closes `end` of `conn`: the other end sees [`TcpEvent::Closed`] after what was sent.
    pub fn tcp_close(&mut self, conn: ConnId, end: End) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open[end.index()] {
            return;
        }
        c.open[end.index()] = false;
        if c.open[end.other().index()] {
            self.schedule_tcp(conn, end, TcpEvent::Closed);
        }
    }

    /// Whether `end` of `conn` is open.
    pub fn tcp_is_open(&self, conn: ConnId, end: End) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.open[end.index()])
    }

    /// Schedules `event` from `from` toward the other end of `conn`.
    fn schedule_tcp(&mut self, conn: ConnId, from: End, event: TcpEvent) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let to = from.other();
        let (src, dst) = (c.hosts[from.index()], c.hosts[to.index()]);
        let last = c.last[to.index()];
        if !self.hosts[src].link.up || !self.hosts[dst].link.up {
            return;
        }
        let at = (self.now + self.base_delay(src, dst)).max(last);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last[to.index()] = at;
        }
        self.schedule(
            at,
            Arrival::Tcp {
                host: dst,
                conn,
                end: to,
                event,
            },
        );
    }
}

#[cfg(test)]
mod tests;
