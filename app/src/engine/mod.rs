//! The call engine: it owns the media socket and the clock, and drives the sans-IO parts (the
//! traversal client, call signalling, connectivity checks, the voice session) with audio from a
//! source to a sink. See docs/calls.md, "The client engine".
//!
//! - [`media`]: one call's media loop (frame tick, demultiplexing, relay framing, path switch).
//! - [`direct`]: a call without a server, to explicit addresses (tests, the media loop alone).

pub mod direct;
pub mod media;

pub use direct::{DirectCall, run_direct};
pub use media::{CallReport, MediaCall, MediaConfig, MediaPath, PathKind, RtpReport};

/// Why the engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source or sink could not be opened or run.
    #[error(transparent)]
    Audio(#[from] ::media::audio::AudioError),
    /// The voice pipeline could not start.
    #[error("voice: {0}")]
    Voice(#[from] ::media::voice::VoiceError),
    /// A socket or runtime error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
