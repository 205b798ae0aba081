//! Pinhole's NAT traversal.
//!
//! This crate implements the exchange of the patent in `shared/seed/` (steps S1-S14, packets
//! P1-P7) between a client behind a router and the `pinhole-rendezvous` server, and the server
//! itself. See `shared/DESIGN.md`, "From patent to product".
//!
//! Layers:
//! - wire: [`stun`] (RFC 8489 framing, MESSAGE-INTEGRITY, FINGERPRINT), [`wire`] (the patent's
//!   UDP packets as STUN Binding messages with comprehension-optional attributes, keyed per
//!   registration), [`control`] (the TCP control connection: length-prefixed JSON frames);
//! - logic, sans-IO: [`client::Client`] and [`server::Server`]. Inputs carry `now`; outputs
//!   are polled. The caller's loop, after every input:
//!
//!   ```text
//!   feed: handle_tcp(now, bytes) / handle_udp(now, ..) / handle_timeout(now)
//!   drain: poll_tcp() -> write; poll_transmit() -> send_to; poll_event() -> act
//!   sleep until poll_timeout()
//!   ```
//!
//!   Neither reads a clock or a random source: seeds and secrets come from the driver.
//! - I/O: [`driver::Driver`] (tokio; the client's TCP stream, media socket, and the second
//!   socket for the lifetime measurement) and [`rendezvous`] (the server on its own threads:
//!   a batched UDP hot path via [`udp_batch`], TCP on tokio);
//! - tests: [`lab`] runs clients and a server through simulated NATs in virtual time.
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

pub mod addr;
pub mod calls;
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
