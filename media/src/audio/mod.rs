//! Audio in and out: devices (cpal), WAV files, tones, silence, and resampling to and from the
//! pipeline's 48 kHz mono.
//!
//! The media thread works in frames of 48 kHz mono `f32` samples (10, 20 or 40 ms: 480, 960 or
//! 1920 samples). Everything it reads comes from a [`Source`] and everything it plays goes to a
//! [`Sink`]:
//!
//! ```text
//!   capture:  cpal callback -> ringbuf (device rate, interleaved) -> [media thread] down-mix
//!             -> resample to 48 kHz -> Source::read(frame)
//!   playback: Sink::write(frame) -> [media thread] resample from 48 kHz -> up-mix -> ringbuf
//!             -> cpal callback
//! ```
//!
//! The cpal callbacks only move samples through `ringbuf` SPSC buffers, convert the sample format
//! and keep a level meter in atomics: no locks, allocation, logging or blocking there. Under- and
//! overruns and device failures are counted in atomics ([`AudioStats`]); a device that fails
//! mid-call raises an [`AudioEvent`] and the stream goes on as silence.
//!
//! Devices are a PulseAudio or PipeWire server's sinks and sources when one answers (ALSA's PCMs
//! otherwise), named by description (`Null Output`) or id (`vsink`, `vsink.monitor`); a
//! [`DeviceWatcher`] follows devices added and removed, and a stream whose device is removed
//! fails with [`AudioEvent::DeviceFailed`] so the engine can move to the default.
//!
//! A device is paced by its own clock ([`Source::is_realtime`]); a file, a tone or silence is not,
//! and the caller paces it with its own clock. Sources and sinks are opened from the strings the
//! headless commands take ([`SourceSpec`], [`SinkSpec`]):
//!
//! | source             | sink               |
//! |--------------------|--------------------|
//! | `tone:HZ`          | `wav:PATH`         |
//! | `wav:PATH`         | `null`             |
//! | `silence`          | `device`           |
//! | `device`           | `device:NAME`      |
//! | `device:NAME`      |                    |

mod device;
mod level;
mod resample;
mod simple;
mod spec;
mod wav;

use std::path::PathBuf;
use std::time::Duration;

pub use device::{
    DeviceFormat, DeviceInfo, DeviceLists, DeviceSink, DeviceSource, DeviceWatcher,
    SupportedConfig, input_devices, output_devices, play_test_tone,
};
pub use level::LevelMeter;
pub use resample::{
    CaptureDrift, CaptureRead, DriftController, MAX_DRIFT_PPM, PlaybackDrift, SteeredResampler,
    StreamResampler, TRIM_ABOVE, downmix_interleaved, upmix_to_interleaved,
};
pub use simple::{NullSink, SilenceSource, TONE_AMPLITUDE, ToneSource};
pub use spec::{SinkSpec, SourceSpec};
pub use wav::{WavSink, WavSource};

/// Samples in a 10 ms frame at 48 kHz.
pub const FRAME_10MS: usize = 480;
/// Samples in a 20 ms frame at 48 kHz (the default).
pub const FRAME_20MS: usize = 960;
/// Samples in a 40 ms frame at 48 kHz.
pub const FRAME_40MS: usize = 1920;

/// What can go wrong opening or running a source or sink. Each message is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// A source or sink spec string that does not parse.
    #[error("bad audio {kind} {spec:?}: {reason}")]
    BadSpec {
        /// `"source"` or `"sink"`.
        kind: &'static str,
        /// The string as given.
        spec: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// A WAV file that cannot be opened, read, written or finalised.
    #[error("WAV file {path}: {message}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No device by that name; lists those that exist.
    #[error("no audio {direction} device named {name:?}; available: {available}")]
    NoSuchDevice {
        /// `"input"` or `"output"`.
        direction: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated (or "none").
        available: String,
    },
    /// The system has no default device in that direction (no sound card, no audio server).
    #[error("no default audio {direction} device (is a sound card or audio server present?)")]
    NoDefaultDevice {
        /// `"input"` or `"output"`.
        direction: &'static str,
    },
    /// A device that exists but cannot be queried or opened.
    #[error("audio device {name:?}: {message}")]
    Device {
        /// The device.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A resampler that cannot be built or run (bad rates).
    #[error("resampler {from} Hz -> {to} Hz: {message}")]
    Resampler {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// What went wrong.
        message: String,
    },
}

/// Counters of a source or sink, cumulative since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioStats {
    /// Times audio was needed and not there (a read padded with silence, a playback callback
    /// that ran dry), including device xruns.
    pub underruns: u64,
    /// Times audio was there and had to be dropped (capture buffer full, playback buffer full,
    /// latency trimmed after clock drift), including device xruns.
    pub overruns: u64,
    /// Device errors reported by the audio backend (cpal's error callback), fatal or not.
    pub device_errors: u64,
    /// The device has failed: it produces (or plays) silence from now on.
    pub failed: bool,
    /// Device callbacks run so far (0 for files and generators): a stream that has started
    /// shows a growing count.
    pub callbacks: u64,
}

/// Something the media engine should know about, polled with [`Source::poll_event`] /
/// [`Sink::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioEvent {
    /// The device failed mid-stream (unplugged, removed from the sound server, server gone...).
    /// The source now reads silence, the sink drops what it is given; the call can go on, and
    /// the engine opens the default device in its place and says so (its own
    /// `Event::DeviceMoved`: the move is the engine's, not the device's).
    DeviceFailed {
        /// The device's name.
        device: String,
        /// What the backend reported, one line (`the device was removed` when a sound server
        /// no longer lists it).
        reason: String,
    },
}

/// Where the media thread reads 48 kHz mono audio from.
pub trait Source: Send + std::fmt::Debug {
    /// Fills all of `frame` with the next 48 kHz mono samples and returns how many of them are
    /// real audio; the rest (at the end) is silence: a device that has not delivered enough (an
    /// underrun, counted in [`AudioStats`]), or a file that has ended.
    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError>;

    /// `true` for a device, paced by its hardware clock: read it once per frame period and it
    /// returns what arrived. `false` for files, tones and silence: they return a full frame at
    /// every call, and the caller paces them with its own clock. The default is `false`.
    fn is_realtime(&self) -> bool {
        false
    }

    /// `true` once a finite source (a WAV file) has nothing more to give.
    fn is_finished(&self) -> bool {
        false
    }

    /// Under/overrun and error counters.
    fn stats(&self) -> AudioStats {
        AudioStats::default()
    }

    /// The next event (a device failure), if any; call it once per frame.
    fn poll_event(&mut self) -> Option<AudioEvent> {
        None
    }

    /// How old the newest sample handed out by [`Source::read`] is: for a device, what waits
    /// in its buffers (capture ring, resampler, the device's own period). `None` when unknown,
    /// or nothing waits (files, tones, silence). The echo test adds it to the measured path.
    fn latency(&self) -> Option<Duration> {
        None
    }

    /// The level of recent audio (peak and RMS), readable from any thread without locking: the
    /// GUI's input meter. For a device it follows the capture callback, so it moves even when
    /// nobody reads.
    fn meter(&self) -> LevelMeter;
}

/// Where the media thread writes 48 kHz mono audio to.
pub trait Sink: Send + std::fmt::Debug {
    /// Takes the next 48 kHz mono samples. A device sink queues them for its callback (counting
    /// an overrun if its buffer is full); a WAV sink writes them; a null sink drops them.
    fn write(&mut self, frame: &[f32]) -> Result<(), AudioError>;

    /// `true` for a device, paced by its hardware clock; `false` for a file or null sink, which
    /// take whatever they are given at once. The default is `false`.
    fn is_realtime(&self) -> bool {
        false
    }

    /// Flushes and closes what needs it (a WAV file's header). Dropping a sink does this too,
    /// ignoring errors; call it to see them. Writing after `finish` is an error for a file.
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }

    /// Under/overrun and error counters.
    fn stats(&self) -> AudioStats {
        AudioStats::default()
    }

    /// The next event (a device failure), if any; call it once per frame.
    fn poll_event(&mut self) -> Option<AudioEvent> {
        None
    }

    /// How long until a sample written now is heard: for a device, what waits before it
    /// (resampler, playback ring, the device's own period). `None` when unknown, or when
    /// nothing is played (files, null).
    fn latency(&self) -> Option<Duration> {
        None
    }

    /// The level of what is being played (peak and RMS), readable from any thread without
    /// locking: the GUI's output meter.
    fn meter(&self) -> LevelMeter;
}

impl SourceSpec {
    /// Opens the source this spec names. Devices are opened by name (see [`input_devices`]) or
    /// the system default.
    pub fn open(&self) -> Result<Box<dyn Source>, AudioError> {
        Ok(match self {
            SourceSpec::Tone { hz } => Box::new(ToneSource::new(*hz)),
            SourceSpec::Wav { path } => Box::new(WavSource::open(path)?),
            SourceSpec::Silence => Box::new(SilenceSource::new()),
            SourceSpec::Device { name } => Box::new(DeviceSource::open(name.as_deref())?),
        })
    }
}

impl SinkSpec {
    /// Opens the sink this spec names. A WAV file is created (or truncated); devices are opened
    /// by name (see [`output_devices`]) or the system default.
    pub fn open(&self) -> Result<Box<dyn Sink>, AudioError> {
        Ok(match self {
            SinkSpec::Wav { path } => Box::new(WavSink::create(path)?),
            SinkSpec::Null => Box::new(NullSink::new()),
            SinkSpec::Device { name } => Box::new(DeviceSink::open(name.as_deref())?),
        })
    }
}
