//! A sans-IO [`Server`] on a host of the net: what every driver of a server does.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use traversal_core::server::{Server, TcpOutput};

use crate::{Arrival, End, HostId, Net, TcpEvent};

/// A [`Server`] listening (TCP) and bound (UDP) at `addr` on a host, with its alternate port
/// next to it. It derefs to the server.
#[derive(Debug)]
pub struct ServerNode {
    server: Server,
    /// The host it runs on.
    pub host: HostId,
    /// Its main address, UDP and TCP.
    pub addr: SocketAddr,
    /// Its alternate UDP address (the next port), for filtering probes.
    pub alternate: SocketAddr,
    tick: Instant,
    /// Every datagram it sent: destination and length.
    pub sent: Vec<(SocketAddr, usize)>,
    /// Every datagram it received on its main port: source (after NAT) and bytes.
    pub received: Vec<(SocketAddr, Vec<u8>)>,
}

impl ServerNode {
    /// Starts `server` on `host` at `addr`.
    pub fn start(net: &mut Net, host: HostId, addr: SocketAddr, server: Server) -> Self {
        net.listen(host, addr);
        ServerNode {
            server,
            host,
            addr,
            alternate: SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)),
            tick: net.now(),
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Moves what the server queued into the net; returns whether there was anything.
    pub fn drain(&mut self, net: &mut Net) -> bool {
        let mut progress = false;
        while let Some(out) = self.server.poll_tcp() {
            progress = true;
            match out {
                TcpOutput::Send { conn, bytes } => net.tcp_send(conn, End::Acceptor, bytes),
                TcpOutput::Close { conn } => net.tcp_close(conn, End::Acceptor),
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            progress = true;
            self.sent.push((t.destination, t.contents.len()));
            let from = if t.from_alternate {
                self.alternate
            } else {
                self.addr
            };
            net.send_udp(self.host, from, t.destination, t.contents);
        }
        progress
    }

    /// Hands the server what reached its host (its connections use the net's ids).
    pub fn handle(&mut self, now: Instant, arrival: Arrival) {
        match arrival {
            Arrival::Udp {
                to, from, bytes, ..
            } => {
                if to == self.addr {
                    self.server.handle_udp(now, from, &bytes);
                    self.received.push((from, bytes));
                }
            }
            Arrival::Tcp {
                conn,
                end: End::Acceptor,
                event,
                ..
            } => match event {
                TcpEvent::Accepted { peer, .. } => {
                    // A refused connection still carries the server's error before it closes.
                    self.server.handle_tcp_open(now, conn, peer);
                }
                TcpEvent::Data(bytes) => self.server.handle_tcp_data(now, conn, &bytes),
                TcpEvent::Closed => self.server.handle_tcp_closed(now, conn),
                TcpEvent::Connected | TcpEvent::Refused => {}
            },
            Arrival::Tcp { .. } => {}
        }
    }

    /// When [`ServerNode::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Instant {
        self.tick
    }

    /// Runs the server's timers when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.tick <= now {
            self.server.handle_timeout(now);
            self.tick = self.server.poll_timeout(now);
        }
    }
}

impl Deref for ServerNode {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for ServerNode {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}
