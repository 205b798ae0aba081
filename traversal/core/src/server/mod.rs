//! The server side, sans-IO.
//!
//! - this module's own items: registrations, the first acknowledgement, P4, probes, keepalive
//!   answers and the dispatch of relay frames, [`Server`];
//! - [`calls`]: names with keys, call signalling, the relay and the echo service.

pub mod calls;
mod exchange;

pub use exchange::*;
