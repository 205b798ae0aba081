//! The voice pipeline: Opus in RTP, the jitter buffer, loss concealment, RTCP and statistics,
//! over any datagram transport.
//!
//! ```text
//! capture -> VoiceSession::push_capture -> Encoder (Opus, FEC) -> RtpSender -> Transport
//! datagram -> VoiceSession::handle_datagram -> classify -> RTP: JitterBuffer / RTCP: stats, RTT
//! VoiceSession::pull_playout <- Decoder (packet, FEC recovery or PLC) <- JitterBuffer::pull
//! VoiceSession::poll_timeout / handle_timeout -> RTCP SR/RR + SDES on the same port (RFC 5761)
//! ```
//!
//! The session is sans I/O: it never reads a clock or touches a socket. Its owner passes `now`
//! into every call and gives it a [`Transport`] to send through; [`link::LossyLink`] is an
//! in-memory transport with seeded loss, delay, jitter, reordering and duplication for tests.

pub mod codec;
pub mod jitter;
pub mod link;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod stats;

pub use codec::{CodecConfig, FrameDuration};
pub use jitter::JitterConfig;
pub use rtp::{DatagramKind, classify};
pub use session::{Transport, VoiceConfig, VoiceSession};
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
