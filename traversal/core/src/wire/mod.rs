//! Wire formats: bytes in, typed messages out, and back. Every decoder treats its input as
//! hostile (typed errors, never a panic; fuzzed in `fuzz/`).
//!
//! - [`stun`]: RFC 8489 framing, MESSAGE-INTEGRITY, FINGERPRINT;
//! - the patent's UDP packets P1/P3/P4/P6/P7 as STUN Binding messages with
//!   comprehension-optional attributes, keyed per registration (this module's own items);
//! - [`control`]: the TCP control connection, length-prefixed JSON frames;
//! - [`channel`]: TURN ChannelData relay frames, and telling datagrams apart (RFC 7983);
//! - [`addr`]: which addresses are public unicast (the anti-reflection checks).

pub mod addr;
pub mod channel;
pub mod control;
mod packets;
pub mod stun;

pub use packets::*;
