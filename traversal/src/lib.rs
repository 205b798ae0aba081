//! Pinhole's NAT traversal.
//!
//! This crate implements the exchange of the patent in `shared/seed/` (steps S1-S14, packets
//! P1-P7) between a client behind a router and the `pinhole-rendezvous` server, and the server
//! itself. See `shared/DESIGN.md`, "From patent to product".

pub mod addr;
pub mod channel;
pub mod client;
pub mod control;
pub mod driver;
pub mod lab;
pub mod punch;
pub mod rendezvous;
pub mod server;
pub mod stun;
pub mod udp_batch;
pub mod wire;
