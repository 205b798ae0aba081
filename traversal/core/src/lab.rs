//! An in-memory lab: [`Client`]s and a [`Server`] on a simulated network with NAT tables,
//! driven in virtual time. No socket, no thread, no real clock beyond the base instant.
//!
//! The lab's NATs translate UDP: an endpoint-independent one keeps one external port per
//! internal address (like Linux `MASQUERADE`), a symmetric one a port per internal address and
//! destination (like `MASQUERADE --random-fully`). A mapping dies after `timeout` with no
//! outbound packet (inbound packets refresh it too when `inbound_refreshes`, as Linux
//! conntrack does), and with `port_dependent_filtering` lets in only what comes from an
//! address and port the inside host sent to. TCP is not translated: each client's control connection simply shows the
//! server the address the host spec gives (`tcp_observed`), which is how a NAT, a proxy or no
//! middlebox at all look to the server. Delivery is instant.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::client::{self, Client, Event, Socket};
use crate::server::{self, ConnId, Server, TcpOutput};

/// How a lab NAT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// One external port per internal address, whatever the destination.
    EndpointIndependent,
    /// One external port per internal address and destination.
    Symmetric,
}

/// A NAT's settings.
#[derive(Debug, Clone, Copy)]
pub struct NatConfig {
    pub kind: NatKind,
    pub public_ip: IpAddr,
    pub timeout: Duration,
    pub inbound_refreshes: bool,
    /// Let in only what comes from an address and port the inside host sent to (Linux
    /// conntrack's behaviour); otherwise anything that reaches a live mapping gets in.
    pub port_dependent_filtering: bool,
}

#[derive(Debug, Clone)]
struct Mapping {
    internal: SocketAddr,
    remote: Option<SocketAddr>,
    external_port: u16,
    last: Instant,
    /// Remote addresses the inside host sent to through this mapping.
    contacted: Vec<SocketAddr>,
}

#[derive(Debug)]
struct Nat {
    config: NatConfig,
    next_port: u16,
    mappings: Vec<Mapping>,
}

/// Where a lab client sits.
#[derive(Debug, Clone)]
pub struct Host {
    /// The address its sockets are bound to.
    pub local_ip: IpAddr,
    /// Its interface addresses (the list sent in P2); `local_ip` is added if missing.
    pub interfaces: Vec<IpAddr>,
    /// Index of the NAT in front of it, if any.
    pub nat: Option<usize>,
    /// The address the server sees on its TCP connection.
    pub tcp_observed: SocketAddr,
    /// Media socket port.
    pub media_port: u16,
}

/// A client in the lab, with the events it produced.
#[derive(Debug)]
pub struct LabClient {
    pub client: Client,
    pub events: Vec<Event>,
    pub host: Host,
    conn: ConnId,
    open: bool,
}

impl LabClient {
    /// The media socket's local address.
    pub fn media_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.local_ip, self.host.media_port)
    }

    fn test_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.local_ip, self.host.media_port + 1)
    }
}

/// The lab.
#[derive(Debug)]
pub struct Lab {
    pub now: Instant,
    pub server: Server,
    pub server_addr: SocketAddr,
    /// The server's alternate port (filtering probes come from it).
    pub server_alternate: SocketAddr,
    pub clients: Vec<LabClient>,
    nats: Vec<Nat>,
    server_tick: Instant,
    next_conn: ConnId,
    /// Every datagram the server sent: destination and length.
    pub server_sent: Vec<(SocketAddr, usize)>,
    /// Datagrams dropped by a NAT (no mapping, expired, or filtered).
    pub dropped_at_nat: u64,
    /// Every datagram that reached the server from a client: source (after NAT) and bytes.
    pub server_received: Vec<(SocketAddr, Vec<u8>)>,
    /// Hosts (by local address) whose outgoing UDP is dropped, as by a firewall.
    pub udp_blocked: Vec<IpAddr>,
}

impl Lab {
    /// A lab with a server at `5.5.5.5:3478`. Lab addresses look public on purpose (no packet
    /// leaves the process), so the server's public-unicast checks treat them as such.
    pub fn new(config: server::Config) -> Self {
        // The epoch of the virtual clock: any instant will do, and none is read again.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Lab {
            now,
            server: Server::new(
                server::Config {
                    alternate_port: true,
                    ..config
                },
                [7; 32],
            ),
            server_addr: SocketAddr::from(([5, 5, 5, 5], 3478)),
            server_alternate: SocketAddr::from(([5, 5, 5, 5], 3479)),
            clients: Vec::new(),
            nats: Vec::new(),
            server_tick: now,
            next_conn: 1,
            server_sent: Vec::new(),
            dropped_at_nat: 0,
            server_received: Vec::new(),
            udp_blocked: Vec::new(),
        }
    }

    /// Adds a NAT; returns its index.
    pub fn add_nat(&mut self, config: NatConfig) -> usize {
        self.nats.push(Nat {
            config,
            next_port: 20000,
            mappings: Vec::new(),
        });
        self.nats.len() - 1
    }

    /// Simulates a NAT that forgets its mappings and moves on to other ports (a reboot or a
    /// new public port range).
    pub fn reset_nat(&mut self, nat: usize) {
        if let Some(n) = self.nats.get_mut(nat) {
            n.mappings.clear();
            n.next_port = n.next_port.wrapping_add(1000);
        }
    }

    /// Adds a client; `tweak` adjusts its config (keepalive, measurement...). Returns its index.
    pub fn add_client(&mut self, mut host: Host, tweak: impl FnOnce(&mut client::Config)) -> usize {
        if !host.interfaces.contains(&host.local_ip) {
            host.interfaces.push(host.local_ip);
        }
        let access = SocketAddr::new(host.local_ip, 40000 + self.clients.len() as u16);
        let mut config = client::Config::new(self.server_addr, access, host.media_port);
        config.local_addresses = host.interfaces.clone();
        config.seed = 1000 + self.clients.len() as u64;
        tweak(&mut config);
        let conn = self.next_conn;
        self.next_conn += 1;
        // A refused connection still carries the server's error before it closes.
        self.server
            .handle_tcp_open(self.now, conn, host.tcp_observed);
        let open = true;
        self.clients.push(LabClient {
            client: Client::new(config),
            events: Vec::new(),
            host,
            conn,
            open,
        });
        self.pump();
        self.clients.len() - 1
    }

    /// Closes a client's control connection orderly.
    pub fn close_client(&mut self, i: usize) {
        self.clients[i].client.close();
        self.pump();
        let conn = self.clients[i].conn;
        self.server.handle_tcp_closed(self.now, conn);
        self.clients[i].open = false;
    }

    /// Runs the lab for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            self.pump();
            let mut next = self.server_tick;
            for c in &self.clients {
                if let Some(t) = c.client.poll_timeout() {
                    next = next.min(t);
                }
            }
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if self.server_tick <= now {
                self.server.handle_timeout(now);
                self.server_tick = self.server.poll_timeout(now);
            }
            for c in &mut self.clients {
                if c.client.poll_timeout().is_some_and(|t| t <= now) {
                    c.client.handle_timeout(now);
                }
            }
        }
    }

    /// Runs until `done` holds or `limit` passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Lab) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run_for(Duration::from_millis(100));
        }
        done(self)
    }

    /// Delivers everything queued until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut progress = false;
            let now = self.now;
            for i in 0..self.clients.len() {
                while let Some(bytes) = self.clients[i].client.poll_tcp() {
                    progress = true;
                    if self.clients[i].open {
                        self.server
                            .handle_tcp_data(now, self.clients[i].conn, &bytes);
                    }
                }
                while let Some(t) = self.clients[i].client.poll_transmit() {
                    progress = true;
                    self.route_from_client(i, t);
                }
                while let Some(e) = self.clients[i].client.poll_event() {
                    progress = true;
                    self.clients[i].events.push(e);
                }
            }
            while let Some(out) = self.server.poll_tcp() {
                progress = true;
                match out {
                    TcpOutput::Send { conn, bytes } => {
                        if let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn && c.open)
                        {
                            c.client.handle_tcp(now, &bytes);
                        }
                    }
                    TcpOutput::Close { conn } => {
                        if let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn && c.open)
                        {
                            c.open = false;
                            c.client.handle_tcp_closed(now);
                        }
                    }
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                progress = true;
                self.server_sent.push((t.destination, t.contents.len()));
                let from = if t.from_alternate {
                    self.server_alternate
                } else {
                    self.server_addr
                };
                self.route_from_server(from, t.destination, &t.contents);
            }
            if !progress {
                return;
            }
        }
    }

    /// Sends raw bytes to the server from `from` (an attacker, or junk).
    pub fn inject_to_server(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.server.handle_udp(self.now, from, bytes);
        self.pump();
    }

    fn route_from_client(&mut self, i: usize, t: client::Transmit) {
        if self.udp_blocked.contains(&self.clients[i].host.local_ip) {
            return;
        }
        let local = match t.socket {
            Socket::Media => self.clients[i].media_addr(),
            Socket::Test => self.clients[i].test_addr(),
        };
        let now = self.now;
        let source = match self.clients[i].host.nat {
            None => local,
            Some(n) => {
                let nat = &mut self.nats[n];
                let timeout = nat.config.timeout;
                nat.mappings
                    .retain(|m| now.saturating_duration_since(m.last) < timeout);
                let remote = match nat.config.kind {
                    NatKind::EndpointIndependent => None,
                    NatKind::Symmetric => Some(t.destination),
                };
                let existing = nat
                    .mappings
                    .iter_mut()
                    .find(|m| m.internal == local && m.remote == remote);
                let port = match existing {
                    Some(m) => {
                        m.last = now;
                        if !m.contacted.contains(&t.destination) {
                            m.contacted.push(t.destination);
                        }
                        m.external_port
                    }
                    None => {
                        let port = nat.next_port;
                        nat.next_port = nat.next_port.wrapping_add(1).max(1024);
                        nat.mappings.push(Mapping {
                            internal: local,
                            remote,
                            external_port: port,
                            last: now,
                            contacted: vec![t.destination],
                        });
                        port
                    }
                };
                SocketAddr::new(nat.config.public_ip, port)
            }
        };
        if t.destination == self.server_addr {
            self.server.handle_udp(now, source, &t.contents);
            self.server_received.push((source, t.contents));
        }
    }

    fn route_from_server(&mut self, from: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        let now = self.now;
        // Through a NAT?
        let mut internal = None;
        for nat in &mut self.nats {
            if nat.config.public_ip != destination.ip() {
                continue;
            }
            let timeout = nat.config.timeout;
            let inbound_refreshes = nat.config.inbound_refreshes;
            let port_dependent = nat.config.port_dependent_filtering;
            nat.mappings
                .retain(|m| now.saturating_duration_since(m.last) < timeout);
            if let Some(m) = nat.mappings.iter_mut().find(|m| {
                m.external_port == destination.port()
                    && m.remote.is_none_or(|r| r == from)
                    && (!port_dependent || m.contacted.contains(&from))
            }) {
                if inbound_refreshes {
                    m.last = now;
                }
                internal = Some(m.internal);
            }
            if internal.is_none() {
                self.dropped_at_nat += 1;
                return;
            }
        }
        let target = internal.unwrap_or(destination);
        for c in &mut self.clients {
            let socket = if c.media_addr() == target
                || (c.host.nat.is_none()
                    && c.host.interfaces.contains(&target.ip())
                    && target.port() == c.host.media_port)
            {
                Socket::Media
            } else if c.test_addr() == target {
                Socket::Test
            } else {
                continue;
            };
            if internal.is_some() && c.host.nat.is_none() {
                continue;
            }
            c.client.handle_udp(now, socket, from, contents);
            return;
        }
    }
}
