//! One network emulator in virtual time for Pinhole's sans-IO machines (str0m's `netem`,
//! quinn's `Pair::step`): every test that runs clients, phones, punches or servers on a
//! simulated network uses [`Net`]. Test support only: nothing here reaches a socket or a clock
//! beyond the epoch of the virtual one.
//!
//! [`Net`] holds hosts with addresses, NATs in front of LANs ([`NatKind`]: full cone,
//! restricted, port-restricted, symmetric; mapping timeouts, port preservation, no hairpin),
//! each host's [`Link`] (delay, loss drawn from a seeded `StdRng`, up or down), UDP datagrams
//! and TCP connections as ordered byte pipes that a killed listener breaks. It knows no
//! protocol: a driver sends into it and takes out what is due.
//!
//! ```text
//! loop:
//!   drain the machines' outputs -> net.send_udp / tcp_connect / tcp_send / tcp_close
//!   while let Some(arrival) = net.pop_due() -> handle_udp / handle_tcp... of its machine
//!   t = min(net.next_arrival(), the machines' poll_timeout()); net.advance_to(t); handle_timeout
//! ```
//!
//! [`ServerNode`] runs a [`traversal_core::server::Server`] on a host of the net; [`lab`] runs
//! the patent's exchange with it: [`traversal_core::client::Client`]s and one server.

pub mod lab;
mod net;
mod server;

pub use net::{
    Arrival, ConnId, End, Host, HostId, Link, NatConfig, NatId, NatKind, Net, NetStats, TcpEvent,
};
pub use server::ServerNode;
