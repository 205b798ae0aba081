//! The exchange lab: [`Client`]s and a [`Server`] on a [`Net`], driven in virtual time.
//!
//! Each client is a host of its own (its local address and interfaces) behind a NAT or on the
//! internet; the server is the public host `5.5.5.5`, its main UDP port 3478 (TCP too) and an
//! alternate port 3479 for filtering probes. The control connection is a TCP pipe of the net
//! that shows the server the address the host spec gives (`tcp_observed`), which is how a NAT,
//! a proxy or no middlebox at all look to the server. Delivery is instant unless a test sets
//! delays on the net.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use traversal_core::client::{self, Client, Event, Socket};
use traversal_core::server::{self, Server};

use crate::server::ServerNode;
use crate::{Arrival, ConnId, End, HostId, NatConfig, NatId, Net, TcpEvent};

/// Where a lab client sits.
#[derive(Debug, Clone)]
pub struct Host {
    /// The address its sockets are bound to.
    pub local_ip: IpAddr,
    /// Its interface addresses (the list sent in P2); `local_ip` is added if missing.
    pub interfaces: Vec<IpAddr>,
    /// The NAT in front of it, if any.
    pub nat: Option<NatId>,
    /// The address the server sees on its TCP connection.
    pub tcp_observed: SocketAddr,
    /// Media socket port (the test socket is the next one).
    pub media_port: u16,
}

impl Host {
    /// A host on the internet at `ip`, with no other interface.
    pub fn public(ip: IpAddr, tcp_observed: SocketAddr) -> Self {
        Host {
            local_ip: ip,
            interfaces: Vec::new(),
            nat: None,
            tcp_observed,
            media_port: 5000,
        }
    }
}

/// A client in the lab, with the events it produced.
#[derive(Debug)]
pub struct LabClient {
    /// The machine.
    pub client: Client,
    /// Everything it said.
    pub events: Vec<Event>,
    /// Where it sits.
    pub host: Host,
    net_host: HostId,
    conn: ConnId,
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
    /// The virtual time.
    pub now: Instant,
    /// The network.
    pub net: Net,
    /// The server (derefs to [`Server`]), with what it sent and received.
    pub server: ServerNode,
    /// The clients, by the order they were added.
    pub clients: Vec<LabClient>,
    /// Hosts (by local address) whose outgoing UDP is dropped, as by a firewall.
    pub udp_blocked: Vec<IpAddr>,
}

impl Lab {
    /// A lab with a server at `5.5.5.5:3478`. Lab addresses look public on purpose (no packet
    /// leaves the process), so the server's public-unicast checks treat them as such.
    pub fn new(config: server::Config) -> Self {
        let mut net = Net::new(7);
        let now = net.now();
        let server_addr = SocketAddr::from(([5, 5, 5, 5], 3478));
        let server_host = net.add_host(vec![server_addr.ip()], None);
        let config = server::Config {
            alternate_port: true,
            ..config
        };
        let server = Server::new(config, [7; 32]);
        Lab {
            now,
            server: ServerNode::start(&mut net, server_host, server_addr, server),
            net,
            clients: Vec::new(),
            udp_blocked: Vec::new(),
        }
    }

    /// Adds a NAT; returns its id.
    pub fn add_nat(&mut self, config: NatConfig) -> NatId {
        self.net.add_nat(config)
    }

    /// Simulates a NAT that forgets its mappings and moves on to other ports.
    pub fn reset_nat(&mut self, nat: NatId) {
        self.net.reset_nat(nat);
    }

    /// Datagrams dropped by a NAT (no mapping, expired, or filtered).
    pub fn dropped_at_nat(&self) -> u64 {
        self.net.stats().udp_dropped_at_nat
    }

    /// Adds a client; `tweak` adjusts its config (keepalive, measurement...). Returns its index.
    pub fn add_client(&mut self, mut host: Host, tweak: impl FnOnce(&mut client::Config)) -> usize {
        if !host.interfaces.contains(&host.local_ip) {
            host.interfaces.push(host.local_ip);
        }
        let n = u16::try_from(self.clients.len()).unwrap_or(u16::MAX);
        let access = SocketAddr::new(host.local_ip, 40000u16.wrapping_add(n));
        let mut config = client::Config::new(self.server.addr, access, host.media_port);
        config.local_addresses = host.interfaces.clone();
        config.seed = 1000 + u64::from(n);
        tweak(&mut config);
        let mut ips = vec![host.local_ip];
        ips.extend(host.interfaces.iter().filter(|ip| **ip != host.local_ip));
        let net_host = self.net.add_host(ips, host.nat);
        let conn =
            self.net
                .tcp_connect(net_host, access, self.server.addr, Some(host.tcp_observed));
        self.clients.push(LabClient {
            client: Client::new(config),
            events: Vec::new(),
            host,
            net_host,
            conn,
        });
        self.pump();
        self.clients.len() - 1
    }

    /// Closes a client's control connection orderly.
    pub fn close_client(&mut self, i: usize) {
        self.clients[i].client.close();
        self.pump();
        self.net.tcp_close(self.clients[i].conn, End::Connector);
        self.pump();
    }

    /// Runs the lab for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            self.pump();
            let mut next = self.server.poll_timeout();
            for c in &self.clients {
                if let Some(t) = c.client.poll_timeout() {
                    next = next.min(t);
                }
            }
            if let Some(t) = self.net.next_arrival() {
                next = next.min(t);
            }
            if next > end {
                self.now = end;
                self.net.advance_to(end);
                return;
            }
            self.now = self.now.max(next);
            self.net.advance_to(self.now);
            let now = self.now;
            self.server.handle_timeout(now);
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

    /// Delivers everything due until nothing moves.
    pub fn pump(&mut self) {
        self.net.advance_to(self.now);
        loop {
            let mut progress = false;
            for i in 0..self.clients.len() {
                while let Some(bytes) = self.clients[i].client.poll_tcp() {
                    progress = true;
                    self.net
                        .tcp_send(self.clients[i].conn, End::Connector, bytes);
                }
                while let Some(t) = self.clients[i].client.poll_transmit() {
                    progress = true;
                    self.send_from_client(i, t);
                }
                while let Some(e) = self.clients[i].client.poll_event() {
                    progress = true;
                    self.clients[i].events.push(e);
                }
            }
            progress |= self.server.drain(&mut self.net);
            while let Some(arrival) = self.net.pop_due() {
                progress = true;
                self.deliver(arrival);
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

    fn send_from_client(&mut self, i: usize, t: client::Transmit) {
        let c = &self.clients[i];
        if self.udp_blocked.contains(&c.host.local_ip) {
            return;
        }
        let local = match t.socket {
            Socket::Media => c.media_addr(),
            Socket::Test => c.test_addr(),
        };
        let host = c.net_host;
        self.net.send_udp(host, local, t.destination, t.contents);
    }

    fn deliver(&mut self, arrival: Arrival) {
        let now = self.now;
        match arrival {
            Arrival::Udp { host, .. } | Arrival::Tcp { host, .. } if host == self.server.host => {
                self.server.handle(now, arrival);
            }
            Arrival::Udp {
                host,
                to,
                from,
                bytes,
            } => {
                let Some(c) = self.clients.iter_mut().find(|c| c.net_host == host) else {
                    return;
                };
                let socket = if to.port() == c.host.media_port {
                    Socket::Media
                } else if to == c.test_addr() {
                    Socket::Test
                } else {
                    return;
                };
                c.client.handle_udp(now, socket, from, &bytes);
            }
            Arrival::Tcp { conn, event, .. } => {
                let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn) else {
                    return;
                };
                match event {
                    TcpEvent::Data(bytes) => c.client.handle_tcp(now, &bytes),
                    TcpEvent::Closed | TcpEvent::Refused => c.client.handle_tcp_closed(now),
                    TcpEvent::Connected | TcpEvent::Accepted { .. } => {}
                }
            }
        }
    }
}
