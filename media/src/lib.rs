//! Pinhole's media pipeline.
//!
//! Audio comes from a source (a device, a WAV file, a tone, silence), is resampled to 48 kHz
//! mono, encoded with Opus into RTP and handed to a datagram transport; the way back goes through
//! a jitter buffer and the decoder to a sink (a device, a WAV file, nothing).

pub mod analysis;
pub mod audio;
pub mod processing;
pub mod srtp;
pub mod tone;
pub mod voice;

/// The rate at which Pinhole's pipeline runs: Opus' native rate, and RTP's clock for Opus
/// (RFC 7587 section 4.1).
pub const SAMPLE_RATE: u32 = 48_000;
