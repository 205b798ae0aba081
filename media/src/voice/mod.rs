//! The voice pipeline: Opus in RTP, the jitter buffer, loss concealment, RTCP and statistics,
//! over any datagram transport.
//!
//! ```text
//! capture -> VoiceSession::push_capture -> Encoder (Opus, FEC) -> RtpSender -> Transport
//! datagram -> VoiceSession::handle_datagram -> classify -> RTP: source gate (a new SSRC after
//!   probation, RFC 3550 A.1) -> JitterBuffer / RTCP from the played source: stats, RTT
//! VoiceSession::pull_playout <- Decoder (packet, FEC recovery or PLC) <- JitterBuffer::pull
//! VoiceSession::poll_timeout / handle_timeout -> RTCP SR/RR + SDES on the same port (RFC 5761)
//! ```
//!
//! The session is sans I/O: it never reads a clock or touches a socket. Its owner passes `now`
//! into every call and gives it a [`Transport`] to send through; [`link::LossyLink`] is an
//! in-memory transport with seeded loss, delay, jitter, reordering and duplication for tests.
//!
//! A call engine drives it from its media thread, once a frame and on every datagram:
//!
//! - every frame: `push_capture(now, &captured, &mut transport)`, `pull_playout(now, &mut
//!   playback)`, and `handle_timeout(now, &mut transport)` once `now >= poll_timeout()`;
//! - for each datagram from the socket that [`classify`] calls [`DatagramKind::Rtp`] or
//!   [`DatagramKind::Rtcp`] (STUN goes to the traversal code): `handle_datagram(now, &bytes)`.
//!
//! A socket shared with STUN sends through [`SendTo`] (socket and current peer address); on a
//! path change the address changes and the session carries on (the jitter buffer absorbs the
//! step in delay).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use media::voice::link::{LinkConfig, LossyLink};
//! use media::voice::{VoiceConfig, VoiceSession};
//!
//! let t0 = Instant::now();
//! let mut rng = rand::rng();
//! let mut alice = VoiceSession::new(VoiceConfig::default(), t0, &mut rng)?;
//! let mut bob = VoiceSession::new(VoiceConfig::default(), t0, &mut rng)?;
//! let delay = Duration::from_millis(30);
//! let mut wire = LossyLink::new(LinkConfig { delay, ..LinkConfig::default() }, 1);
//! let mut frame = vec![0.0f32; 960];
//! for k in 0..100 {
//!     let now = t0 + Duration::from_millis(20 * k);
//!     media::tone::Tone::new(440.0, 48_000, 0.5).fill(&mut frame);
//!     alice.push_capture(now, &frame, &mut wire.transport(now));
//!     if now >= alice.poll_timeout() {
//!         alice.handle_timeout(now, &mut wire.transport(now));
//!     }
//!     while let Some(datagram) = wire.receive(now) {
//!         bob.handle_datagram(now, &datagram);
//!     }
//!     bob.pull_playout(now, &mut frame);
//! }
//! assert!(bob.stats().received.packets >= 97);
//! # Ok::<(), media::voice::VoiceError>(())
//! ```

pub mod codec;
pub mod jitter;
pub mod link;
mod probation;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod stats;

pub use codec::{CodecConfig, FrameDuration};
pub use jitter::JitterConfig;
pub use rtp::{DatagramKind, classify};
pub use session::{SendTo, Transport, VoiceConfig, VoiceSession};
pub use stats::{ReceiveStats, RemoteStats, SendStats, VoiceStats};

/// Errors of the voice pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VoiceError {
    /// libopus refused a call.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// A frame handed to the encoder had the wrong length.
    #[error("frame of {got} samples; the encoder takes {expected}")]
    FrameLength {
        /// The encoder's frame length.
        expected: usize,
        /// What it got.
        got: usize,
    },
    /// A payload that is not a valid Opus packet.
    #[error("not a valid Opus packet")]
    BadPayload,
    /// A malformed RTP or RTCP packet.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// An RTP packet could not be built.
    #[error("building RTP: {0}")]
    RtpBuild(String),
    /// An output buffer was too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}
