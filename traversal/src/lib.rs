//! Pinhole's NAT traversal: the sans-IO core (`traversal-core`, re-exported here under the same
//! module names) and its I/O.
//!
//! - [`driver`]: the client's tokio driver for the patent's exchange alone (`pinhole
//!   nat-check`): TCP stream, media socket, the second socket of the lifetime measurement;
//! - [`rendezvous`]: the server on its own threads: a batched UDP hot path via [`udp_batch`],
//!   control connections in one mio poll loop; [`names_file`] keeps its names on disk;
//!   [`metrics`] serves its counters to Prometheus;
//! - [`tls`]: TLS 1.3 on the control connection: the server's certificate, the client's trust;
//! - the `pinhole-rendezvous` binary, its settings from flags, environment and a file in
//!   [`server_config`].
//!
//! See `traversal-core`'s crate documentation for the protocol, its layers and the design
//! choices beyond the patent.

pub use traversal_core::{addr, calls, channel, client, control, phone, punch, server, stun, wire};

pub mod driver;
pub mod media_socket;
pub mod metrics;
pub mod names_file;
pub mod plain;
pub mod portmap;
pub mod rendezvous;
pub mod server_config;
pub mod tls;
pub mod udp_batch;
