//! The client side, sans-IO.
//!
//! - this module's own items: the patent's exchange with the rendezvous server (S1-S14:
//!   verdict, keepalive, mapping lifetime), [`Client`];
//! - [`punch`]: connectivity checks between two clients (hole punching), [`punch::Punch`];
//! - [`phone`]: the whole phone: registration, call signalling, punching, datagram
//!   demultiplexing, reconnects, [`phone::Phone`].

mod exchange;
pub mod phone;
pub mod punch;

pub use exchange::*;
