//! The one open path of [`DeviceSource`] and [`DeviceSink`], and what their media-thread halves
//! do alike.
//!
//! Opening, in either direction: find the device ([`find_device`]), choose its configuration
//! ([`choose_config`]), build the stream with a 20 ms buffer and, if the device refuses it, with
//! its default one, start it, and hand the media thread its end of the ring buffer. A
//! [`Half`] ([`Capture`](super::capture::Capture) or [`Playback`](super::playback::Playback))
//! says which end its callback takes.
//!
//! [`DeviceSource`]: super::DeviceSource
//! [`DeviceSink`]: super::DeviceSink

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cpal::traits::StreamTrait;
use ringbuf::traits::Observer;
use ringbuf::{HeapCons, HeapProd};

use super::enumerate::find_device;
use super::stream::{
    STALLED, Shared, StreamHandle, StreamParts, choose_config, ring, stream_configs,
};
use super::{DeviceFormat, Direction};
use crate::SAMPLE_RATE;
use crate::audio::{AudioError, AudioEvent, AudioStats, LevelMeter};

/// Callbacks that show a stream has started; before that the watchdog waits (a sound server can
/// take seconds to connect a new stream, failing its first calls).
pub(super) const CALLBACKS_TO_ARM: u64 = 20;
/// Audio the media thread asks for (or gives) with no callback running before it calls the
/// device stalled: 2 s.
const STALL_SAMPLES: u64 = 2 * SAMPLE_RATE as u64;

/// The media thread's half of one direction.
pub(super) trait Half: Sized {
    /// Which way its stream moves audio.
    const DIRECTION: Direction;
    /// Audio the ring buffer between the callback and the media thread holds.
    const RING: Duration;
    /// The end of the ring buffer the media thread keeps.
    type End;

    /// Builds the stream, giving its callback one end of the ring; returns the other end.
    fn build(
        parts: StreamParts<'_>,
        ring: (HeapProd<f32>, HeapCons<f32>),
    ) -> Result<(cpal::Stream, Self::End), cpal::Error>;

    /// The half, once the stream runs at `rate` Hz with `channels` channels.
    fn new(
        end: Self::End,
        channels: usize,
        rate: u32,
        shared: Arc<Shared>,
    ) -> Result<Self, AudioError>;
}

/// An open device: its running stream and the media thread's half of it.
#[derive(Debug)]
pub(super) struct Endpoint<H> {
    pub(super) half: H,
    name: String,
    rate: u32,
    channels: u16,
    shared: Arc<Shared>,
    meter: LevelMeter,
    /// The failure event has been handed out.
    reported: bool,
    _stream: StreamHandle,
}

impl<H: Half> Endpoint<H> {
    /// Opens the device called `name` (id or name), or the system default, and starts it.
    pub(super) fn open(name: Option<&str>, format: DeviceFormat) -> Result<Self, AudioError> {
        let direction = H::DIRECTION;
        let activity = direction.activity();
        let (device, name) = find_device(direction, name)?;
        let config = choose_config(&device, direction, &name, format)?;
        let shared = Arc::new(Shared::default());
        let meter = LevelMeter::new();
        let mut attempts = stream_configs(&config).into_iter();
        let (stream, end) = loop {
            let Some(stream_config) = attempts.next() else {
                return Err(open_error(&name, "cannot open", "no stream configuration"));
            };
            let parts = StreamParts {
                device: &device,
                config: &config,
                stream_config,
                shared: shared.clone(),
                meter: meter.clone(),
            };
            match H::build(parts, ring(&config, H::RING)) {
                Ok(built) => break built,
                Err(e) if attempts.len() == 0 => {
                    return Err(open_error(&name, &format!("cannot open for {activity}"), e));
                }
                Err(e) => tracing::debug!(device = %name, "{activity} with a fixed period: {e}"),
            }
        };
        stream
            .play()
            .map_err(|e| open_error(&name, &format!("cannot start {activity}"), e))?;
        let (rate, channels) = (config.sample_rate(), config.channels());
        tracing::debug!(device = %name, rate, channels, format = %config.sample_format(), "{activity} started");
        Ok(Self {
            half: H::new(end, usize::from(channels), rate, shared.clone())?,
            name,
            rate,
            channels,
            shared,
            meter,
            reported: false,
            _stream: StreamHandle(stream),
        })
    }
}

impl<H> Endpoint<H> {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The rate and channel count the device runs at.
    pub(super) fn device_format(&self) -> (u32, u16) {
        (self.rate, self.channels)
    }

    pub(super) fn stats(&self) -> AudioStats {
        self.shared.stats()
    }

    pub(super) fn poll_event(&mut self) -> Option<AudioEvent> {
        poll_failure(&self.shared, &mut self.reported, &self.name)
    }

    pub(super) fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

/// Writes what [`DeviceSource`] and [`DeviceSink`] have alike, each a newtype over an
/// [`Endpoint`]: `open`, `open_with_format`, `name` and `device_format`, and the methods of
/// their trait ([`Source`] or [`Sink`]) other than the one that moves audio, which is given.
///
/// [`DeviceSource`]: super::DeviceSource
/// [`DeviceSink`]: super::DeviceSink
/// [`Source`]: crate::audio::Source
/// [`Sink`]: crate::audio::Sink
macro_rules! device_endpoint {
    (
        $device:ident: $role:ident,
        open: $open:literal,
        format: $format:literal,
        $($moves:tt)*
    ) => {
        impl $device {
            #[doc = $open]
            pub fn open(name: Option<&str>) -> Result<Self, $crate::audio::AudioError> {
                Self::open_with_format(name, $crate::audio::DeviceFormat::default())
            }

            #[doc = concat!(
                "[`", stringify!($device), "::open`], asking the device for a given rate and ",
                "channel count."
            )]
            pub fn open_with_format(
                name: Option<&str>,
                format: $crate::audio::DeviceFormat,
            ) -> Result<Self, $crate::audio::AudioError> {
                $crate::audio::device::open::Endpoint::open(name, format).map(Self)
            }

            /// The device's name as opened.
            pub fn name(&self) -> &str {
                self.0.name()
            }

            #[doc = $format]
            pub fn device_format(&self) -> (u32, u16) {
                self.0.device_format()
            }
        }

        impl $crate::audio::$role for $device {
            $($moves)*

            fn is_realtime(&self) -> bool {
                true
            }

            fn stats(&self) -> $crate::audio::AudioStats {
                self.0.stats()
            }

            fn poll_event(&mut self) -> Option<$crate::audio::AudioEvent> {
                self.0.poll_event()
            }

            fn meter(&self) -> $crate::audio::LevelMeter {
                self.0.meter()
            }
        }
    };
}
pub(super) use device_endpoint;

fn open_error(name: &str, what: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device {
        name: name.to_owned(),
        message: format!("{what}: {e}"),
    }
}

/// The failure event, the first time it is asked for after the stream failed.
fn poll_failure(shared: &Shared, reported: &mut bool, name: &str) -> Option<AudioEvent> {
    if *reported || !shared.failed.load(Ordering::Acquire) {
        return None;
    }
    *reported = true;
    let reason = shared.failure_reason();
    tracing::error!(device = %name, "audio device failed: {reason}; going on with silence");
    Some(AudioEvent::DeviceFailed {
        device: name.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Notices a stream whose data callbacks stopped without an error (the media thread's side).
#[derive(Debug, Default)]
pub(super) struct Watchdog {
    last_callbacks: u64,
    samples_since: u64,
}

impl Watchdog {
    /// Called with the samples the media thread just asked for or gave.
    pub(super) fn check(&mut self, shared: &Shared, samples: usize) {
        let callbacks = shared.callbacks.load(Ordering::Relaxed);
        if callbacks != self.last_callbacks {
            self.last_callbacks = callbacks;
            self.samples_since = 0;
            return;
        }
        self.samples_since += samples as u64;
        if callbacks >= CALLBACKS_TO_ARM
            && self.samples_since > STALL_SAMPLES
            && !shared.failed.load(Ordering::Acquire)
        {
            shared.fail(STALLED);
        }
    }
}

/// The media thread's end of a ring buffer: debug-prints how much is queued.
pub(super) struct Queue<T>(pub(super) T);

impl<T: Observer> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} samples queued", self.0.occupied_len())
    }
}

/// A work buffer allocated when the device is opened: debug-prints its length, not its samples.
pub(super) struct Scratch(Vec<f32>);

impl Scratch {
    pub(super) fn new(len: usize) -> Self {
        Self(vec![0.0; len])
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} samples", self.0.len())
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use cpal::ErrorKind;
    use ringbuf::HeapRb;
    use ringbuf::traits::Split;

    use super::super::capture::Capture;
    use super::*;

    #[test]
    fn device_failure_is_an_event_once_and_then_silence() {
        let shared = Arc::new(Shared::default());
        let (_prod, cons) = HeapRb::<f32>::new(4_800).split();
        let mut capture = Capture::new(cons, 1, 48_000, shared.clone()).unwrap();
        let mut reported = false;

        // Xruns and passing backend errors are counted, not fatal.
        shared.on_error(Direction::Input, ErrorKind::Xrun);
        shared.on_error(Direction::Input, ErrorKind::BackendError);
        shared.on_error(Direction::Input, ErrorKind::DeviceChanged);
        assert_eq!(poll_failure(&shared, &mut reported, "mic"), None);
        let stats = shared.stats();
        assert_eq!(
            (stats.overruns, stats.device_errors, stats.failed),
            (1, 1, false)
        );

        shared.on_error(Direction::Input, ErrorKind::DeviceNotAvailable);
        let event = poll_failure(&shared, &mut reported, "mic");
        assert_eq!(
            event,
            Some(AudioEvent::DeviceFailed {
                device: "mic".into(),
                reason: "the device is no longer available".into()
            })
        );
        assert_eq!(poll_failure(&shared, &mut reported, "mic"), None);
        let mut frame = [1.0f32; 480];
        for _ in 0..10 {
            assert_eq!(capture.read(&mut frame).unwrap(), 0);
        }
        assert!(frame.iter().all(|&s| s == 0.0));
        assert_eq!(
            shared.stats().underruns,
            0,
            "a failed device is not underrunning"
        );
    }

    #[test]
    fn a_stream_whose_callbacks_stop_is_reported() {
        let shared = Arc::new(Shared::default());
        let mut watchdog = Watchdog::default();
        // Not armed before the stream has started.
        for _ in 0..500 {
            watchdog.check(&shared, 960);
        }
        assert!(!shared.stats().failed);
        shared.callbacks.store(CALLBACKS_TO_ARM, Ordering::Relaxed);
        for _ in 0..100 {
            watchdog.check(&shared, 960);
        }
        assert!(!shared.stats().failed, "2 s is allowed");
        for _ in 0..10 {
            watchdog.check(&shared, 960);
        }
        assert!(shared.stats().failed);
        assert_eq!(
            shared.failure_reason(),
            "the device stopped delivering audio"
        );
    }
}
