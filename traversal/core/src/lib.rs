//! Pinhole's NAT traversal, sans-IO (the `traversal` crate re-exports it and adds the I/O).
//!
//! This crate implements the exchange of the patent in `shared/seed/` (steps S1-S14, packets
//! P1-P7) between a client behind a router and the `pinhole-rendezvous` server, and the server
//! itself. See `shared/DESIGN.md`, "From patent to product".
//!
//! Layers, one folder each:
//! - [`wire`]: [`stun`] (RFC 8489 framing, MESSAGE-INTEGRITY, FINGERPRINT), the patent's
//!   UDP packets as STUN Binding messages with comprehension-optional attributes, keyed per
//!   registration, [`control`] (the TCP control connection: length-prefixed JSON frames),
//!   [`channel`] (relay frames, datagram kinds);
//! - [`client`]: [`client::Client`] (the patent's exchange), [`punch`] (hole punching) and
//!   [`phone`] (the whole client: registration, signalling, punching, reconnects);
//! - [`server`]: [`server::Server`] (registrations, P4, probes) and [`calls`] (names, call
//!   signalling, relay). Inputs carry `now`; outputs are polled. The caller's loop, after
//!   every input:
//!
//!   ```text
//!   feed: handle_tcp(now, bytes) / handle_udp(now, ..) / handle_timeout(now)
//!   drain: poll_tcp() -> write; poll_transmit() -> send_to; poll_event() -> act
//!   sleep until poll_timeout()
//!   ```
//!
//!   Neither reads a clock or a random source: seeds and secrets come from the driver.
//!   This crate cannot reach a clock, a random source, a socket or a file: it depends on no
//!   I/O crate, and its `clippy.toml` disallows the std ones.
//! - tests: the `traversal-sim` crate runs these machines on a simulated network in virtual time.
//!
//! The I/O (tokio and mio drivers, the `pinhole-rendezvous` binary) is in the `traversal`
//! crate, which re-exports these modules under the same names.
//!
//! Design choices beyond the patent, and why:
//! - The patent's P4 ("send the acknowledgement to every listed address") is kept for the
//!   verdict but made safe: the answer goes to the observed address, and to at most three
//!   listed addresses that are public unicast, once per registration, never bigger than the
//!   request (requests are padded), behind a per-source token bucket. See [`server`].
//! - Every UDP message carrying a user index is authenticated with HMAC-SHA1 keyed by a random
//!   per-registration key handed out over TCP, so a guessed index steers nothing.
//! - The verdict compares socket addresses (IP and port) for S3: a NAT that keeps the IP but
//!   rewrites the port is still a private network.
//! - Keepalives (S13) carry the address the server sees, and the server can probe a mapping on
//!   request: a changed mapping and a lost one are both noticed. The NAT's idle timeout is
//!   measured (RFC 5780 section 4.6 in spirit) and keepalives run at a fraction of it.

pub mod client;
pub mod server;
pub mod wire;

// The modules under their short names, as the rest of Pinhole uses them.
pub use client::{phone, portmap, punch};
pub use server::calls;
pub use wire::{addr, channel, control, stun};
