//! Audio devices through cpal: listing, opening by name or default, and the lock-free bridge
//! between cpal's callbacks and the media thread.
//!
//! - [`enumerate`]: the devices cpal sees (a PulseAudio/PipeWire server's sinks and sources when
//!   one answers, ALSA's PCMs otherwise), and finding one by id or name.
//! - [`watch`]: hot-plug: [`DeviceWatcher`] keeps the lists up to date in the background, and a
//!   stream whose sound-server device is removed is failed so the engine moves to the default.
//! - [`stream`]: the configuration to ask for, and the real-time callbacks. They convert the
//!   device's sample format to or from `f32`, move interleaved samples through a `ringbuf` SPSC
//!   buffer, update a [`LevelMeter`] and count under/overruns in atomics: no locks, allocation,
//!   logging or blocking.
//! - [`open`]: the one open path of both directions (device, configuration, stream, ring buffer),
//!   and what the media thread's halves share (failure events, the stall watchdog, latency
//!   trimming).
//! - [`capture`] ([`DeviceSource`]) and [`playback`] ([`DeviceSink`]): the media thread's half of
//!   each direction. Down/up-mixing and resampling happen there, in [`Source::read`] and
//!   [`Sink::write`], with buffers allocated when the device is opened.
//!
//! [`LevelMeter`]: crate::audio::LevelMeter
//! [`Source::read`]: crate::audio::Source::read
//! [`Sink::write`]: crate::audio::Sink::write

mod capture;
mod enumerate;
mod open;
mod playback;
mod stream;
mod watch;

pub use capture::DeviceSource;
pub use enumerate::{DeviceInfo, SupportedConfig, input_devices, output_devices};
pub use playback::{DeviceSink, play_test_tone};
pub use stream::DeviceFormat;
pub use watch::{DeviceLists, DeviceWatcher};

use crate::SAMPLE_RATE;

/// Extra audio kept ahead of the reader or the playback callback before it starts, so that
/// callback jitter does not cause underruns: 10 ms.
const CUSHION: usize = SAMPLE_RATE as usize / 100;

/// Which way a device moves audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    /// `"input"` or `"output"`, as [`AudioError`](crate::audio::AudioError) names them.
    fn name(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }

    /// `"capture"` or `"playback"`, for messages about the stream.
    fn activity(self) -> &'static str {
        match self {
            Direction::Input => "capture",
            Direction::Output => "playback",
        }
    }
}
