//! The client side, sans-IO.
//!
//! - this module's own items: the patent's exchange with the rendezvous server (S1-S14:
//!   verdict, keepalive, mapping lifetime), [`Client`];
//! - [`e2e`]: the end-to-end keys of a call (signed ephemeral X25519 with a commitment);
//! - [`punch`]: connectivity checks between two clients (hole punching), [`punch::Punch`];
//! - [`phone`]: the whole phone: registration, call signalling, punching, datagram
//!   demultiplexing, reconnects, [`phone::Phone`].

pub mod e2e;
mod exchange;
pub mod phone;
pub mod portmap;
pub mod punch;

pub use exchange::*;
