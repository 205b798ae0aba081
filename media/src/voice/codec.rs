//! Opus (RFC 6716) for voice: VoIP mode, in-band FEC, packet loss concealment.

use std::time::Duration;

use super::VoiceError;
use crate::SAMPLE_RATE;

/// The largest Opus packet (RFC 6716 section 3.2.1: 1275 bytes a frame) plus room: the size of
/// every packet buffer in the pipeline.
pub const MAX_OPUS_PACKET: usize = 1_500;

/// The longest frame Opus decodes in one packet (120 ms at 48 kHz), so the size of a decode
/// buffer that any peer's packet fits in.
pub const MAX_FRAME_SAMPLES: usize = SAMPLE_RATE as usize * 120 / 1_000;

/// How much audio each packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FrameDuration {
    /// 10 ms: lower latency, more packets.
    Ms10,
    /// 20 ms: the usual choice for voice (RFC 7587 section 4.2's default `ptime`).
    #[default]
    Ms20,
    /// 40 ms: fewer packets, more latency.
    Ms40,
}

impl FrameDuration {
    /// The frame's length.
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.millis())
    }

    /// The frame's length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Self::Ms10 => 10,
            Self::Ms20 => 20,
            Self::Ms40 => 40,
        }
    }

    /// Samples in one frame at 48 kHz mono.
    pub fn samples(self) -> usize {
        SAMPLE_RATE as usize * self.millis() as usize / 1_000
    }
}

/// The codec's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    /// Audio per packet.
    pub frame: FrameDuration,
    /// Target bitrate in bits per second (Opus accepts 6 000 to 510 000).
    pub bitrate_bps: u32,
    /// Add in-band forward error correction (the previous frame at low rate) to each packet.
    pub fec: bool,
    /// The loss the encoder plans its FEC for, in percent (0 to 100).
    pub expected_loss_percent: u8,
    /// Encoder complexity, 0 (cheapest) to 10 (best).
    pub complexity: u8,
    /// Discontinuous transmission: in silence the encoder makes DTX frames, which the session
    /// does not send (but for a comfort-noise update every 400 ms), and the receiver plays
    /// comfort noise.
    pub dtx: bool,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            frame: FrameDuration::Ms20,
            bitrate_bps: 32_000,
            fec: true,
            expected_loss_percent: 10,
            complexity: 9,
            dtx: true,
        }
    }
}

/// An Opus encoder for 48 kHz mono voice.
#[derive(Debug)]
pub struct Encoder {
    inner: opus::Encoder,
    frame_samples: usize,
}

impl Encoder {
    /// An encoder in VoIP mode with `config`'s bitrate, FEC and expected loss.
    pub fn new(config: &CodecConfig) -> Result<Self, VoiceError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        let bitrate = config.bitrate_bps.clamp(6_000, 510_000) as i32;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        inner.set_inband_fec(config.fec)?;
        inner.set_packet_loss_perc(i32::from(config.expected_loss_percent.min(100)))?;
        inner.set_complexity(i32::from(config.complexity.min(10)))?;
        inner.set_dtx(config.dtx)?;
        Ok(Self {
            inner,
            frame_samples: config.frame.samples(),
        })
    }

    /// Samples the encoder takes per call.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Encodes one frame (exactly [`Encoder::frame_samples`] samples) into `out`; returns the
    /// packet's length.
    pub fn encode(&mut self, frame: &[f32], out: &mut [u8]) -> Result<usize, VoiceError> {
        if frame.len() != self.frame_samples {
            return Err(VoiceError::FrameLength {
                expected: self.frame_samples,
                got: frame.len(),
            });
        }
        Ok(self.inner.encode_float(frame, out)?)
    }

    /// Changes the target bitrate (bits per second, 6 000 to 510 000).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), VoiceError> {
        Ok(self
            .inner
            .set_bitrate(opus::Bitrate::Bits(bps.clamp(6_000, 510_000) as i32))?)
    }

    /// The encoder's look-ahead: how far its output lags its input beyond the frame itself.
    pub fn lookahead(&mut self) -> Result<Duration, VoiceError> {
        let samples = self.inner.get_lookahead()?.max(0) as u64;
        Ok(Duration::from_micros(
            samples * 1_000_000 / u64::from(SAMPLE_RATE),
        ))
    }

    /// Changes the expected loss (from RTCP reports, say), which tunes how much FEC is sent.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), VoiceError> {
        Ok(self
            .inner
            .set_packet_loss_perc(i32::from(percent.min(100)))?)
    }
}

/// An Opus decoder for 48 kHz mono, with concealment and FEC recovery.
#[derive(Debug)]
pub struct Decoder {
    inner: opus::Decoder,
}

impl Decoder {
    /// A 48 kHz mono decoder.
    pub fn new() -> Result<Self, VoiceError> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
        })
    }

    /// Samples (at 48 kHz) that `packet` decodes to, or an error if it is not valid Opus.
    pub fn packet_samples(packet: &[u8]) -> Result<usize, VoiceError> {
        let n = opus::packet::get_nb_samples(packet, SAMPLE_RATE)?;
        if n == 0 || n > MAX_FRAME_SAMPLES {
            return Err(VoiceError::BadPayload);
        }
        Ok(n)
    }

    /// Decodes `packet` into `out` (at least as long as the packet's audio); returns the samples
    /// written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, VoiceError> {
        if packet.is_empty() {
            return Err(VoiceError::BadPayload);
        }
        Ok(self.inner.decode_float(packet, out, false)?)
    }

    /// Conceals one lost frame of `out.len()` samples (a multiple of 2.5 ms) by Opus' PLC.
    pub fn conceal(&mut self, out: &mut [f32]) -> Result<usize, VoiceError> {
        Ok(self.inner.decode_float(&[], out, false)?)
    }

    /// Recovers the lost frame before `next_packet` from the FEC data `next_packet` carries
    /// (RFC 6716 section 2.1.7); `out.len()` must be the lost frame's length. Without FEC data in
    /// the packet Opus conceals instead.
    pub fn recover(&mut self, next_packet: &[u8], out: &mut [f32]) -> Result<usize, VoiceError> {
        Ok(self.inner.decode_float(next_packet, out, true)?)
    }

    /// Forgets the stream's state (on a new source).
    pub fn reset(&mut self) -> Result<(), VoiceError> {
        Ok(self.inner.reset_state()?)
    }
}
