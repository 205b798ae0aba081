//! The cpal streams: which configuration to ask a device for, and the callbacks that bridge it to
//! the media thread.
//!
//! The callbacks are real-time code: they convert the device's sample format to or from `f32`,
//! move interleaved samples through a `ringbuf` SPSC buffer, update a [`LevelMeter`] and count in
//! atomics ([`Shared`]). No locks, allocation, logging or blocking here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cpal::traits::DeviceTrait;
use cpal::{
    BufferSize, ErrorKind, FromSample, Sample, SampleFormat, SizedSample, StreamConfig,
    SupportedBufferSize, SupportedStreamConfig,
};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::enumerate::{device_id, is_sound_server, supported_configs};
use super::{CUSHION, Direction, watch};
use crate::SAMPLE_RATE;
use crate::audio::{AudioError, AudioStats, LevelMeter};

/// Device buffer asked for: 20 ms (the backend splits it into periods, about 13 ms with ALSA).
const BUFFER: Duration = Duration::from_millis(20);
/// How long to wait for the backend to build a stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Sample formats the bridge converts, best first.
fn format_rank(format: SampleFormat) -> Option<u32> {
    match format {
        SampleFormat::F32 => Some(6),
        SampleFormat::I16 => Some(5),
        SampleFormat::I32 => Some(4),
        SampleFormat::F64 => Some(3),
        SampleFormat::U16 => Some(2),
        SampleFormat::I8 | SampleFormat::U8 => Some(1),
        _ => None,
    }
}

/// The stream format to ask a device for. The default asks for 48 kHz (no resampling) with as
/// few channels as the device allows; anything else is converted to and from 48 kHz mono all
/// the same. A device that cannot do what is asked runs at what it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFormat {
    /// Sample rate to prefer, Hz.
    pub rate: u32,
    /// Channel count to prefer; `None` for the fewest.
    pub channels: Option<u16>,
}

impl Default for DeviceFormat {
    fn default() -> Self {
        Self {
            rate: SAMPLE_RATE,
            channels: None,
        }
    }
}

/// Picks a configuration: the preferred rate if the device has it, then the preferred (or
/// fewest) channels, then a format we convert well; otherwise the device's default.
pub(super) fn choose_config(
    device: &cpal::Device,
    direction: Direction,
    name: &str,
    want: DeviceFormat,
) -> Result<SupportedStreamConfig, AudioError> {
    let ranges = supported_configs(device, direction).unwrap_or_default();
    let best = ranges
        .into_iter()
        .filter_map(|range| {
            let rank = format_rank(range.sample_format())?;
            let has_rate =
                range.min_sample_rate() <= want.rate && want.rate <= range.max_sample_rate();
            let channels = range.channels();
            if channels == 0 {
                return None;
            }
            let channel_score = match want.channels {
                Some(c) if c == channels => 100,
                Some(_) => 0,
                None => 9u32.saturating_sub(u32::from(channels)),
            };
            let score = u32::from(has_rate) * 1_000 + channel_score + rank * 10;
            Some((score, range))
        })
        .max_by_key(|(score, _)| *score);
    if let Some((_, range)) = best {
        let rate = want
            .rate
            .clamp(range.min_sample_rate(), range.max_sample_rate());
        return Ok(range.with_sample_rate(rate));
    }
    let default = match direction {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    };
    default.map_err(|e| AudioError::Device {
        name: name.to_owned(),
        message: format!("no usable {} configuration: {e}", direction.name()),
    })
}

/// The stream configurations to try, best first: a buffer of [`BUFFER`] if the device allows
/// it (left to itself, a device may choose a buffer of a second or more), then its default.
pub(super) fn stream_configs(config: &SupportedStreamConfig) -> Vec<StreamConfig> {
    let default = config.config();
    let frames = (u64::from(config.sample_rate()) * BUFFER.as_millis() as u64 / 1_000) as u32;
    let mut configs = Vec::with_capacity(2);
    if let SupportedBufferSize::Range { min, max } = *config.buffer_size()
        && (min..=max).contains(&frames)
    {
        configs.push(StreamConfig {
            buffer_size: BufferSize::Fixed(frames),
            ..default
        });
    }
    configs.push(default);
    configs
}

pub(super) fn ring(
    config: &SupportedStreamConfig,
    length: Duration,
) -> (HeapProd<f32>, HeapCons<f32>) {
    let len = config.sample_rate() as usize * length.as_millis() as usize / 1_000
        * usize::from(config.channels());
    HeapRb::<f32>::new(len.max(1024)).split()
}

/// What the callbacks share with the media thread: counters only.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) underruns: AtomicU64,
    pub(super) overruns: AtomicU64,
    pub(super) device_errors: AtomicU64,
    pub(super) failed: AtomicBool,
    /// Which error failed the stream (an index into [`FAILURES`]).
    pub(super) failure: AtomicU8,
    /// Data callbacks run so far: the media thread's watchdog.
    pub(super) callbacks: AtomicU64,
    /// Largest callback buffer seen, in samples (all channels).
    pub(super) max_callback: AtomicUsize,
}

/// Errors after which a stream produces nothing more, and how to say so. cpal reports others
/// (a backend call that failed once, say) and carries on; those are only counted. The last two
/// are found on the media thread's side: callbacks that stopped ([`STALLED`]), and a sound
/// server's device that left its list ([`REMOVED`]).
const FAILURES: [(Option<ErrorKind>, &str); 5] = [
    (
        Some(ErrorKind::DeviceNotAvailable),
        "the device is no longer available",
    ),
    (
        Some(ErrorKind::StreamInvalidated),
        "the stream was invalidated",
    ),
    (
        Some(ErrorKind::HostUnavailable),
        "the audio server went away",
    ),
    (None, "the device stopped delivering audio"),
    (None, "the device was removed"),
];
/// Index in [`FAILURES`] of a stream whose callbacks stopped.
pub(super) const STALLED: u8 = 3;
/// Index in [`FAILURES`] of a stream whose device the sound server no longer lists (unplugged,
/// module unloaded). PulseAudio and PipeWire move such a stream to another device and carry on
/// without telling the client, so this is found by listing ([`watch::watch_presence`]).
pub(super) const REMOVED: u8 = 4;

impl Shared {
    pub(super) fn stats(&self) -> AudioStats {
        AudioStats {
            underruns: self.underruns.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            device_errors: self.device_errors.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Acquire),
            callbacks: self.callbacks.load(Ordering::Relaxed),
        }
    }

    /// Counts a data callback of `len` samples (all channels). Real-time: atomics only.
    fn on_callback(&self, len: usize) {
        self.callbacks.fetch_add(1, Ordering::Relaxed);
        self.max_callback.fetch_max(len, Ordering::Relaxed);
    }

    /// cpal's error callback: counts, flags a failure. No allocation, no logging.
    pub(super) fn on_error(&self, direction: Direction, kind: ErrorKind) {
        match kind {
            ErrorKind::Xrun => {
                let counter = match direction {
                    Direction::Input => &self.overruns,
                    Direction::Output => &self.underruns,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            // Informational: the stream goes on.
            ErrorKind::DeviceChanged | ErrorKind::RealtimeDenied => {}
            kind => {
                self.device_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(code) = FAILURES.iter().position(|(k, _)| *k == Some(kind)) {
                    self.fail(code as u8);
                }
            }
        }
    }

    pub(super) fn fail(&self, code: u8) {
        self.failure.store(code, Ordering::Relaxed);
        self.failed.store(true, Ordering::Release);
    }

    pub(super) fn failure_reason(&self) -> &'static str {
        FAILURES
            .get(usize::from(self.failure.load(Ordering::Relaxed)))
            .map_or("the audio backend reported an error", |(_, text)| text)
    }
}

/// cpal's error callback for a stream in `direction`: [`Shared::on_error`].
fn error_callback(
    shared: &Arc<Shared>,
    direction: Direction,
) -> impl FnMut(cpal::Error) + Send + use<> {
    let shared = shared.clone();
    move |e| shared.on_error(direction, e.kind())
}

/// Keeps the cpal stream alive: dropping it stops the stream. cpal's stream type has no `Debug`.
#[allow(dead_code, reason = "the stream is held, never read")]
pub(super) struct StreamHandle(pub(super) cpal::Stream);

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cpal::Stream")
    }
}

/// Calls `$build::<T>(args...)` with `T` the Rust type of the sample format `$format`.
macro_rules! with_sample_type {
    ($format:expr, $build:ident($($arg:expr),* $(,)?)) => {
        match $format {
            SampleFormat::F32 => $build::<f32>($($arg),*),
            SampleFormat::I16 => $build::<i16>($($arg),*),
            SampleFormat::I32 => $build::<i32>($($arg),*),
            SampleFormat::F64 => $build::<f64>($($arg),*),
            SampleFormat::U16 => $build::<u16>($($arg),*),
            SampleFormat::I8 => $build::<i8>($($arg),*),
            SampleFormat::U8 => $build::<u8>($($arg),*),
            _ => Err(ErrorKind::UnsupportedConfig.into()),
        }
    };
}

/// What building a stream takes, besides its end of the ring buffer.
pub(super) struct StreamParts<'a> {
    pub(super) device: &'a cpal::Device,
    pub(super) config: &'a SupportedStreamConfig,
    pub(super) stream_config: StreamConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) meter: LevelMeter,
}

/// Builds a capture stream whose callback fills `prod`. A sound server's source whose latency
/// is fixed and longer than a fixed period is refused one (see [`fixed_latency`]): the caller
/// then opens it with the default buffer.
pub(super) fn build_input(
    parts: StreamParts<'_>,
    prod: HeapProd<f32>,
) -> Result<cpal::Stream, cpal::Error> {
    if let BufferSize::Fixed(frames) = parts.stream_config.buffer_size
        && let Some(latency) = fixed_latency(parts.device)
    {
        let period = Duration::from_micros(
            u64::from(frames) * 1_000_000 / u64::from(parts.stream_config.sample_rate.max(1)),
        );
        if latency > period {
            return Err(cpal::Error::with_message(
                ErrorKind::UnsupportedConfig,
                format!(
                    "the source's latency is fixed at {} ms, longer than a period of {} ms",
                    latency.as_millis(),
                    period.as_millis()
                ),
            ));
        }
    }
    let presence = presence(&parts);
    let stream = with_sample_type!(parts.config.sample_format(), build_input_typed(parts, prod))?;
    watch_presence(Direction::Input, presence);
    Ok(stream)
}

/// The latency of a sound server's source that cannot change it (PulseAudio's flag
/// `DYNAMIC_LATENCY` unset), as the server reports it; `None` for a source that adapts to what
/// its streams ask, and for ALSA.
///
/// Why: with a fixed period cpal asks the server for a record buffer (`maxlength`) of exactly
/// one period, 20 ms. A source whose latency is fixed and longer (`module-sine-source`'s 2 s, a
/// network or Bluetooth source) hands the server blocks larger than that whole buffer, and the
/// server drops every one of them (its log: "Final latency 2020.00 ms = 20.00 ms + 2000.00
/// ms"): no audio until a block happens to be small enough, 2 to 20 s later, and cpal's `play`
/// waits for that first audio. The default buffer takes the blocks as they come.
///
/// cpal gives no other way to the server's source information than the `Debug` text of its
/// device (its type is private): `flags: SourceFlags(HARDWARE | DYNAMIC_LATENCY | ...)` and
/// `configured_latency: MICROSECONDS`. Text not found means `None`: a fixed period, as before.
fn fixed_latency(device: &cpal::Device) -> Option<Duration> {
    if !is_sound_server(device) {
        return None;
    }
    let text = format!("{:?}", device.as_inner());
    let info = &text[text.find("Source {")?..];
    let flags = &info[info.find("flags: ")?..];
    let flags = &flags[..flags.find(')')?];
    if flags.contains("DYNAMIC_LATENCY") {
        return None;
    }
    let latency = &info[info.find("configured_latency: ")? + "configured_latency: ".len()..];
    let digits = latency.find(|c: char| !c.is_ascii_digit())?;
    latency[..digits].parse().ok().map(Duration::from_micros)
}

/// What [`watch_presence`] needs of a sound server's device: its id and the stream's counters.
fn presence(parts: &StreamParts<'_>) -> Option<(String, Arc<Shared>)> {
    is_sound_server(parts.device).then(|| (device_id(parts.device), parts.shared.clone()))
}

/// A sound server's device is watched for removal once its stream is built (see [`REMOVED`]);
/// an ALSA device's stream fails by itself.
fn watch_presence(direction: Direction, presence: Option<(String, Arc<Shared>)>) {
    if let Some((id, shared)) = presence {
        watch::watch_presence(direction, id, &shared);
    }
}

fn build_input_typed<T>(
    parts: StreamParts<'_>,
    mut prod: HeapProd<f32>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(parts.config.channels()).max(1);
    let (shared, meter) = (parts.shared, parts.meter);
    let on_error = error_callback(&shared, Direction::Input);
    parts.device.build_input_stream::<T, _, _>(
        parts.stream_config,
        move |data: &[T], _| {
            // Realtime: convert, copy, count. Whole frames only, so channels never slip.
            shared.on_callback(data.len());
            let room = prod.vacant_len() / channels * channels;
            let take = data.len().min(room);
            let (mut peak, mut sum) = (0.0f32, 0.0f32);
            prod.push_iter(data[..take].iter().map(|&s| {
                let v = f32::from_sample(s);
                peak = peak.max(v.abs());
                sum += v * v;
                v
            }));
            meter.update_from(peak, sum, take);
            if take < data.len() {
                shared.overruns.fetch_add(1, Ordering::Relaxed);
            }
        },
        on_error,
        Some(OPEN_TIMEOUT),
    )
}

/// Builds a playback stream whose callback drains `cons`.
pub(super) fn build_output(
    parts: StreamParts<'_>,
    cons: HeapCons<f32>,
) -> Result<cpal::Stream, cpal::Error> {
    let presence = presence(&parts);
    let stream = with_sample_type!(
        parts.config.sample_format(),
        build_output_typed(parts, cons)
    )?;
    watch_presence(Direction::Output, presence);
    Ok(stream)
}

fn build_output_typed<T>(
    parts: StreamParts<'_>,
    mut cons: HeapCons<f32>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(parts.config.channels()).max(1);
    let cushion = CUSHION * parts.config.sample_rate() as usize / SAMPLE_RATE as usize * channels;
    let capacity = cons.capacity().get();
    let (shared, meter) = (parts.shared, parts.meter);
    let on_error = error_callback(&shared, Direction::Output);
    let mut primed = false;
    parts.device.build_output_stream::<T, _, _>(
        parts.stream_config,
        move |data: &mut [T], _| {
            // Realtime: copy, convert, count. Silence until a cushion has built up, and again
            // after running dry, so a late writer gives one gap rather than many.
            shared.on_callback(data.len());
            if !primed {
                if cons.occupied_len() < (data.len() + cushion).min(capacity / 2) {
                    data.fill(T::EQUILIBRIUM);
                    return;
                }
                primed = true;
            }
            let (mut peak, mut sum, mut short) = (0.0f32, 0.0f32, false);
            for out in data.iter_mut() {
                match cons.try_pop() {
                    Some(v) => {
                        peak = peak.max(v.abs());
                        sum += v * v;
                        *out = T::from_sample(v);
                    }
                    None => {
                        *out = T::EQUILIBRIUM;
                        short = true;
                    }
                }
            }
            meter.update_from(peak, sum, data.len());
            if short {
                primed = false;
                if !shared.failed.load(Ordering::Relaxed) {
                    shared.underruns.fetch_add(1, Ordering::Relaxed);
                }
            }
        },
        on_error,
        Some(OPEN_TIMEOUT),
    )
}
