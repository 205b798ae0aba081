//! Audio devices through cpal: listing, opening by name or default, and the lock-free bridge
//! between cpal's callbacks and the media thread.
//!
//! The callbacks convert the device's sample format to or from `f32`, move interleaved samples
//! through a `ringbuf` SPSC buffer, update a [`LevelMeter`] and count under/overruns in atomics.
//! Down/up-mixing and resampling happen on the media thread, in [`DeviceSource::read`] and
//! [`DeviceSink::write`], with buffers allocated when the device is opened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    BufferSize, ErrorKind, FromSample, Sample, SampleFormat, SizedSample, StreamConfig,
    SupportedBufferSize, SupportedStreamConfig,
};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::resample::{StreamResampler, downmix_interleaved, upmix_to_interleaved};
use super::{AudioError, AudioEvent, AudioStats, LevelMeter, Sink, Source};
use crate::SAMPLE_RATE;

/// Audio the playback ring buffer holds between the media thread and the callback.
const RING: Duration = Duration::from_millis(250);
/// Audio capture holds between the callback and the reader (the ring, then the resampler's
/// queue). Some sources deliver in large blocks, not a period at a time: PulseAudio's sine
/// source (a test microphone) posts 2 s at once, every 2 s, and a 250 ms buffer kept only the
/// first 250 ms of each block, so a call heard an eighth of what was said. 2.5 s holds such a
/// block; what a burst leaves beyond what the next one needs is shed as usual (see [`Capture`]).
const CAPTURE_BACKLOG: Duration = Duration::from_millis(2_500);
/// Reads (or writes) over which a queue's low-water mark is taken: about a second of 20 ms
/// frames. A queue that stays above its target for a whole window holds latency that jitter does
/// not need (the two clocks drift, or a stall has passed), and the excess is dropped; a queue
/// that only swings up and down with bursty callbacks is left alone.
const LOW_WATER_WINDOW: u32 = 50;
/// Excess tolerated above the target before trimming, at 48 kHz: 10 ms.
const LOW_WATER_SLACK: usize = SAMPLE_RATE as usize / 100;
/// Extra audio kept ahead of the reader or the playback callback before it starts, so that
/// callback jitter does not cause underruns: 10 ms.
const CUSHION: usize = SAMPLE_RATE as usize / 100;
/// Device buffer asked for: 20 ms (the backend splits it into periods, about 13 ms with ALSA).
const BUFFER: Duration = Duration::from_millis(20);
/// How long to wait for the backend to build a stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// One stream configuration range a device supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedConfig {
    /// Channel count.
    pub channels: u16,
    /// Lowest sample rate, Hz.
    pub min_rate: u32,
    /// Highest sample rate, Hz.
    pub max_rate: u32,
    /// Sample format, as cpal names it (`f32`, `i16`...).
    pub sample_format: String,
}

/// A device cpal sees, for a device picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Human-readable name.
    pub name: String,
    /// The backend's id (for ALSA the PCM name: `default`, `pulse`, `hw:CARD=...`): stable,
    /// and what to store in settings. `device:NAME` accepts either this or `name`.
    pub id: String,
    /// The system default for this direction.
    pub is_default: bool,
    /// The configurations it supports (empty if it could not be queried).
    pub configs: Vec<SupportedConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// Lists the input devices cpal sees on the default host.
pub fn input_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list(Direction::Input)
}

/// Lists the output devices cpal sees on the default host.
pub fn output_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list(Direction::Output)
}

fn host_error(direction: Direction, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device {
        name: format!("(all {} devices)", direction.name()),
        message: e.to_string(),
    }
}

fn device_id(device: &cpal::Device) -> String {
    device.id().map(|id| id.id().to_owned()).unwrap_or_default()
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| device_id(device))
}

fn devices(direction: Direction) -> Result<Vec<cpal::Device>, AudioError> {
    let host = cpal::default_host();
    let devices: Vec<cpal::Device> = match direction {
        Direction::Input => host
            .input_devices()
            .map_err(|e| host_error(direction, e))?
            .collect(),
        Direction::Output => host
            .output_devices()
            .map_err(|e| host_error(direction, e))?
            .collect(),
    };
    Ok(devices)
}

fn default_device(direction: Direction) -> Option<cpal::Device> {
    let host = cpal::default_host();
    match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
}

fn list(direction: Direction) -> Result<Vec<DeviceInfo>, AudioError> {
    let default_id = default_device(direction).map(|d| device_id(&d));
    let mut infos: Vec<DeviceInfo> = devices(direction)?
        .iter()
        .map(|device| {
            let id = device_id(device);
            let configs = supported_configs(device, direction)
                .unwrap_or_default()
                .into_iter()
                .map(|c| SupportedConfig {
                    channels: c.channels(),
                    min_rate: c.min_sample_rate(),
                    max_rate: c.max_sample_rate(),
                    sample_format: c.sample_format().to_string(),
                })
                .collect();
            DeviceInfo {
                name: device_name(device),
                is_default: default_id.as_deref() == Some(id.as_str()),
                id,
                configs,
            }
        })
        .collect();
    // The default first: it is what a picker should show selected.
    infos.sort_by_key(|d| !d.is_default);
    Ok(infos)
}

fn supported_configs(
    device: &cpal::Device,
    direction: Direction,
) -> Result<Vec<cpal::SupportedStreamConfigRange>, cpal::Error> {
    Ok(match direction {
        Direction::Input => device.supported_input_configs()?.collect(),
        Direction::Output => device.supported_output_configs()?.collect(),
    })
}

/// Finds a device by id (with or without the host prefix, as in `alsa:default`) or name
/// (exactly, then ignoring case); `None` is the system default.
fn find_device(
    direction: Direction,
    name: Option<&str>,
) -> Result<(cpal::Device, String), AudioError> {
    let Some(wanted) = name else {
        let device = default_device(direction).ok_or(AudioError::NoDefaultDevice {
            direction: direction.name(),
        })?;
        let name = device_name(&device);
        return Ok((device, name));
    };
    let all = devices(direction)?;
    let full_id = |d: &cpal::Device| d.id().map(|id| id.to_string()).unwrap_or_default();
    let found = all
        .iter()
        .position(|d| device_id(d) == wanted || full_id(d) == wanted)
        .or_else(|| all.iter().position(|d| device_name(d) == wanted))
        .or_else(|| {
            all.iter().position(|d| {
                device_name(d).eq_ignore_ascii_case(wanted)
                    || device_id(d).eq_ignore_ascii_case(wanted)
            })
        });
    match found {
        Some(i) => {
            let device = all[i].clone();
            Ok((device, wanted.to_owned()))
        }
        None => {
            let available = if all.is_empty() {
                "none".to_owned()
            } else {
                all.iter()
                    .map(|d| format!("{:?} ({})", device_id(d), device_name(d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Err(AudioError::NoSuchDevice {
                direction: direction.name(),
                name: wanted.to_owned(),
                available,
            })
        }
    }
}

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
fn choose_config(
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

/// What the callbacks share with the media thread: counters only.
#[derive(Debug, Default)]
struct Shared {
    underruns: AtomicU64,
    overruns: AtomicU64,
    device_errors: AtomicU64,
    failed: AtomicBool,
    /// Which error failed the stream (an index into [`FAILURES`]).
    failure: AtomicU8,
    /// Data callbacks run so far: the media thread's watchdog.
    callbacks: AtomicU64,
    /// Largest callback buffer seen, in samples (all channels).
    max_callback: AtomicUsize,
}

/// Notices a stream whose data callbacks stopped without an error (the media thread's side).
#[derive(Debug, Default)]
struct Watchdog {
    last_callbacks: u64,
    samples_since: u64,
}

impl Watchdog {
    /// Called with the samples the media thread just asked for or gave.
    fn check(&mut self, shared: &Shared, samples: usize) {
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

/// Errors after which a stream produces nothing more, and how to say so. cpal reports others
/// (a backend call that failed once, say) and carries on; those are only counted.
const FAILURES: [(Option<ErrorKind>, &str); 4] = [
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
];
/// Index in [`FAILURES`] of a stream whose callbacks stopped.
const STALLED: u8 = 3;
/// Audio the media thread asks for (or gives) with no callback running before it calls the
/// device stalled: 2 s.
const STALL_SAMPLES: u64 = 2 * SAMPLE_RATE as u64;
/// Callbacks that show a stream has started; before that the watchdog waits (a sound server can
/// take seconds to connect a new stream, failing its first calls).
const CALLBACKS_TO_ARM: u64 = 20;

impl Shared {
    fn stats(&self) -> AudioStats {
        AudioStats {
            underruns: self.underruns.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            device_errors: self.device_errors.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Acquire),
            callbacks: self.callbacks.load(Ordering::Relaxed),
        }
    }

    /// cpal's error callback: counts, flags a failure. No allocation, no logging.
    fn on_error(&self, direction: Direction, kind: ErrorKind) {
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

    fn fail(&self, code: u8) {
        self.failure.store(code, Ordering::Relaxed);
        self.failed.store(true, Ordering::Release);
    }

    fn failure_reason(&self) -> &'static str {
        FAILURES
            .get(usize::from(self.failure.load(Ordering::Relaxed)))
            .map_or("the audio backend reported an error", |(_, text)| text)
    }
}

/// Keeps the cpal stream alive; cpal's stream type has no `Debug`.
struct StreamHandle(#[allow(dead_code)] cpal::Stream);

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cpal::Stream")
    }
}

/// The low-water mark of a queue over a window of reads or writes (see [`LOW_WATER_WINDOW`]).
#[derive(Debug)]
struct LowWater {
    min: usize,
    count: u32,
}

impl Default for LowWater {
    fn default() -> Self {
        Self {
            min: usize::MAX,
            count: 0,
        }
    }
}

impl LowWater {
    /// Notes the queue's `level`; at the end of a window returns how much of it was never needed
    /// above `target` (plus `slack`), if any.
    fn observe(&mut self, level: usize, target: usize, slack: usize) -> Option<usize> {
        self.min = self.min.min(level);
        self.count += 1;
        if self.count < LOW_WATER_WINDOW {
            return None;
        }
        let min = std::mem::replace(&mut self.min, usize::MAX);
        self.count = 0;
        (min > target + slack).then(|| min - target)
    }

    /// True right after [`LowWater::observe`] closed a window.
    fn window_ended(&self) -> bool {
        self.count == 0
    }
}

/// The media-thread half of a capture: ring consumer, down-mix, resampler to 48 kHz.
struct Capture {
    cons: HeapCons<f32>,
    channels: usize,
    rate: u32,
    raw: Vec<f32>,
    mono: Vec<f32>,
    resampler: StreamResampler,
    primed: bool,
    low_water: LowWater,
    /// Largest audio (48 kHz samples) that arrived at once, beyond one frame, lately: how much
    /// the device's bursts need queued to last until the next. Halved at each window that saw
    /// less, so a one-off stall is shed within a few windows while bursts that recur stay
    /// covered.
    burst: usize,
    /// The largest such arrival in the current window.
    window_burst: usize,
    resampler_dropped: u64,
    watchdog: Watchdog,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("channels", &self.channels)
            .field("queued", &self.cons.occupied_len())
            .field("resampler", &self.resampler)
            .field("primed", &self.primed)
            .field("burst", &self.burst)
            .field("shared", &self.shared)
            .finish()
    }
}

impl Capture {
    fn new(
        cons: HeapCons<f32>,
        channels: usize,
        rate: u32,
        shared: Arc<Shared>,
    ) -> Result<Self, AudioError> {
        let raw_len = (rate as usize / 50).max(64) * channels;
        Ok(Self {
            cons,
            channels,
            rate,
            raw: vec![0.0; raw_len],
            mono: vec![0.0; raw_len / channels],
            resampler: StreamResampler::new(rate, SAMPLE_RATE, backlog_samples(SAMPLE_RATE, 1))?,
            primed: false,
            low_water: LowWater::default(),
            burst: 0,
            window_burst: 0,
            resampler_dropped: 0,
            watchdog: Watchdog::default(),
            shared,
        })
    }

    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        self.watchdog.check(&self.shared, frame.len());
        let mut arrived = 0;
        loop {
            let whole = self.cons.occupied_len() / self.channels * self.channels;
            let take = whole.min(self.raw.len());
            if take == 0 {
                break;
            }
            let n = self.cons.pop_slice(&mut self.raw[..take]);
            let frames = downmix_interleaved(&self.raw[..n], self.channels, &mut self.mono);
            self.resampler.push(&self.mono[..frames])?;
            arrived += frames;
        }
        // Audio nobody read for CAPTURE_BACKLOG (the resampler's queue is full): dropped there.
        if self.resampler.dropped() > self.resampler_dropped {
            self.resampler_dropped = self.resampler.dropped();
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        let arrived = (arrived as u64 * u64::from(SAMPLE_RATE) / u64::from(self.rate)) as usize;
        let burst = arrived.saturating_sub(frame.len());
        self.burst = self.burst.max(burst);
        self.window_burst = self.window_burst.max(burst);
        // Latency never needed for a whole window (the device's clock runs ahead of the
        // reader's, or a stall has passed): dropped, so latency stays low. What the device's
        // bursts need to last until the next one is not excess.
        let available = self.resampler.available();
        if self.primed {
            let target = frame.len() + CUSHION + self.burst;
            if let Some(excess) = self.low_water.observe(available, target, LOW_WATER_SLACK) {
                self.resampler.trim_to(available - excess);
                self.shared.overruns.fetch_add(1, Ordering::Relaxed);
            }
            if self.low_water.window_ended() {
                self.burst = self.window_burst.max(self.burst / 2);
                self.window_burst = 0;
            }
        }
        if !self.primed {
            if self.resampler.available() < frame.len() + CUSHION {
                frame.fill(0.0);
                return Ok(0);
            }
            self.primed = true;
        }
        let n = self.resampler.pop(frame);
        if n < frame.len() {
            frame[n..].fill(0.0);
            self.primed = false;
            if !self.shared.failed.load(Ordering::Acquire) {
                self.shared.underruns.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(n)
    }
}

/// The media-thread half of a playback: resampler from 48 kHz, up-mix, ring producer.
struct Playback {
    prod: HeapProd<f32>,
    channels: usize,
    rate: u32,
    resampler: StreamResampler,
    mono: Vec<f32>,
    interleaved: Vec<f32>,
    low_water: LowWater,
    /// Samples (interleaved) still to drop from what is written, to shed excess latency.
    to_drop: usize,
    watchdog: Watchdog,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback")
            .field("channels", &self.channels)
            .field("queued", &self.prod.occupied_len())
            .field("resampler", &self.resampler)
            .field("shared", &self.shared)
            .finish()
    }
}

impl Playback {
    fn new(
        prod: HeapProd<f32>,
        channels: usize,
        rate: u32,
        shared: Arc<Shared>,
    ) -> Result<Self, AudioError> {
        let mono_len = (rate as usize / 50).max(64);
        Ok(Self {
            prod,
            channels,
            rate,
            resampler: StreamResampler::new(SAMPLE_RATE, rate, rate as usize)?,
            mono: vec![0.0; mono_len],
            interleaved: vec![0.0; mono_len * channels],
            low_water: LowWater::default(),
            to_drop: 0,
            watchdog: Watchdog::default(),
            shared,
        })
    }

    fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        self.watchdog.check(&self.shared, frame.len());
        // Latency the callback never needed for a whole window (the writer's clock runs ahead
        // of the device's, or a stall has passed): shed from what comes next.
        let per_ms = self.rate as usize / 1_000 * self.channels;
        let target = self.shared.max_callback.load(Ordering::Relaxed) + CUSHION / 48 * per_ms;
        if let Some(excess) = self.low_water.observe(
            self.prod.occupied_len(),
            target,
            LOW_WATER_SLACK / 48 * per_ms,
        ) {
            self.to_drop = excess / self.channels * self.channels;
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        self.resampler.push(frame)?;
        let mut dropped = false;
        loop {
            let n = self.resampler.pop(&mut self.mono);
            if n == 0 {
                break;
            }
            let frames =
                upmix_to_interleaved(&self.mono[..n], self.channels, &mut self.interleaved);
            let mut samples = &self.interleaved[..frames * self.channels];
            let skip = self.to_drop.min(samples.len());
            self.to_drop -= skip;
            samples = &samples[skip..];
            // Whole frames only, so channels never slip; until the stream runs, no more than it
            // needs to start (a server can take seconds to start a stream, and what piles up
            // meanwhile would be latency).
            let mut room = self.prod.vacant_len();
            if self.shared.callbacks.load(Ordering::Relaxed) < CALLBACKS_TO_ARM {
                let cap = target + LOW_WATER_SLACK / 48 * per_ms;
                room = room.min(cap.saturating_sub(self.prod.occupied_len()));
            }
            let room = room / self.channels * self.channels;
            let take = samples.len().min(room);
            self.prod.push_slice(&samples[..take]);
            dropped |= take < samples.len();
        }
        if dropped && !self.shared.failed.load(Ordering::Acquire) {
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The stream configurations to try, best first: a buffer of [`BUFFER`] if the device allows
/// it (left to itself, a device may choose a buffer of a second or more), then its default.
fn stream_configs(config: &SupportedStreamConfig) -> Vec<StreamConfig> {
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

fn ring(config: &SupportedStreamConfig, length: Duration) -> (HeapProd<f32>, HeapCons<f32>) {
    let len = config.sample_rate() as usize * length.as_millis() as usize / 1_000
        * usize::from(config.channels());
    HeapRb::<f32>::new(len.max(1024)).split()
}

/// [`CAPTURE_BACKLOG`] in samples at `rate` with `channels` channels.
fn backlog_samples(rate: u32, channels: usize) -> usize {
    rate as usize * CAPTURE_BACKLOG.as_millis() as usize / 1_000 * channels
}

fn open_error(name: &str, what: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device {
        name: name.to_owned(),
        message: format!("{what}: {e}"),
    }
}

/// `device` / `device:NAME` as a source: captures from a cpal input device, at whatever rate and
/// channel count it offers, and reads as 48 kHz mono. Paced by the device: read once per frame
/// period; a read that finds too little pads with silence and counts an underrun.
#[derive(Debug)]
pub struct DeviceSource {
    name: String,
    rate: u32,
    channels: u16,
    capture: Capture,
    meter: LevelMeter,
    reported: bool,
    _stream: StreamHandle,
}

impl DeviceSource {
    /// Opens the input device called `name` (id or name, see [`input_devices`]), or the
    /// system default, and starts capturing.
    pub fn open(name: Option<&str>) -> Result<Self, AudioError> {
        Self::open_with_format(name, DeviceFormat::default())
    }

    /// [`DeviceSource::open`], asking the device for a given rate and channel count.
    pub fn open_with_format(name: Option<&str>, format: DeviceFormat) -> Result<Self, AudioError> {
        let (device, name) = find_device(Direction::Input, name)?;
        let config = choose_config(&device, Direction::Input, &name, format)?;
        let shared = Arc::new(Shared::default());
        let meter = LevelMeter::new();
        let channels = config.channels();
        let mut attempts = stream_configs(&config).into_iter();
        let (stream, cons) = loop {
            let Some(stream_config) = attempts.next() else {
                return Err(open_error(&name, "cannot open", "no stream configuration"));
            };
            let (prod, cons) = ring(&config, CAPTURE_BACKLOG);
            match build_input(
                &device,
                &config,
                stream_config,
                prod,
                shared.clone(),
                meter.clone(),
            ) {
                Ok(stream) => break (stream, cons),
                Err(e) if attempts.len() == 0 => {
                    return Err(open_error(&name, "cannot open for capture", e));
                }
                Err(e) => tracing::debug!(device = %name, "capture with a fixed period: {e}"),
            }
        };
        stream
            .play()
            .map_err(|e| open_error(&name, "cannot start capture", e))?;
        tracing::debug!(device = %name, rate = config.sample_rate(), channels, format = %config.sample_format(), "capture started");
        Ok(Self {
            capture: Capture::new(cons, usize::from(channels), config.sample_rate(), shared)?,
            name,
            rate: config.sample_rate(),
            channels,
            meter,
            reported: false,
            _stream: StreamHandle(stream),
        })
    }

    /// The device's name as opened.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rate and channel count the device runs at (converted to 48 kHz mono on read).
    pub fn device_format(&self) -> (u32, u16) {
        (self.rate, self.channels)
    }
}

impl Source for DeviceSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        self.capture.read(frame)
    }

    fn is_realtime(&self) -> bool {
        true
    }

    fn stats(&self) -> AudioStats {
        self.capture.shared.stats()
    }

    fn poll_event(&mut self) -> Option<AudioEvent> {
        poll_failure(&self.capture.shared, &mut self.reported, &self.name)
    }

    fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

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

/// `device` / `device:NAME` as a sink: plays 48 kHz mono on a cpal output device, converted to
/// whatever rate and channel count it offers. Paced by the device: write one frame per frame
/// period. The callback plays silence until it has a cushion and whenever it runs dry (an
/// underrun); writes that find the buffer full drop audio (an overrun).
#[derive(Debug)]
pub struct DeviceSink {
    name: String,
    rate: u32,
    channels: u16,
    playback: Playback,
    meter: LevelMeter,
    reported: bool,
    _stream: StreamHandle,
}

impl DeviceSink {
    /// Opens the output device called `name` (id or name, see [`output_devices`]), or the
    /// system default, and starts playing (silence until audio is written).
    pub fn open(name: Option<&str>) -> Result<Self, AudioError> {
        Self::open_with_format(name, DeviceFormat::default())
    }

    /// [`DeviceSink::open`], asking the device for a given rate and channel count.
    pub fn open_with_format(name: Option<&str>, format: DeviceFormat) -> Result<Self, AudioError> {
        let (device, name) = find_device(Direction::Output, name)?;
        let config = choose_config(&device, Direction::Output, &name, format)?;
        let shared = Arc::new(Shared::default());
        let meter = LevelMeter::new();
        let channels = config.channels();
        let mut attempts = stream_configs(&config).into_iter();
        let (stream, prod) = loop {
            let Some(stream_config) = attempts.next() else {
                return Err(open_error(&name, "cannot open", "no stream configuration"));
            };
            let (prod, cons) = ring(&config, RING);
            match build_output(
                &device,
                &config,
                stream_config,
                cons,
                shared.clone(),
                meter.clone(),
            ) {
                Ok(stream) => break (stream, prod),
                Err(e) if attempts.len() == 0 => {
                    return Err(open_error(&name, "cannot open for playback", e));
                }
                Err(e) => tracing::debug!(device = %name, "playback with a fixed period: {e}"),
            }
        };
        stream
            .play()
            .map_err(|e| open_error(&name, "cannot start playback", e))?;
        tracing::debug!(device = %name, rate = config.sample_rate(), channels, format = %config.sample_format(), "playback started");
        Ok(Self {
            playback: Playback::new(prod, usize::from(channels), config.sample_rate(), shared)?,
            name,
            rate: config.sample_rate(),
            channels,
            meter,
            reported: false,
            _stream: StreamHandle(stream),
        })
    }

    /// The device's name as opened.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rate and channel count the device runs at (converted from 48 kHz mono on write).
    pub fn device_format(&self) -> (u32, u16) {
        (self.rate, self.channels)
    }
}

impl Sink for DeviceSink {
    fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        self.playback.write(frame)
    }

    fn is_realtime(&self) -> bool {
        true
    }

    fn stats(&self) -> AudioStats {
        self.playback.shared.stats()
    }

    fn poll_event(&mut self) -> Option<AudioEvent> {
        poll_failure(&self.playback.shared, &mut self.reported, &self.name)
    }

    fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

/// Plays a `hz` tone for `duration` on the output device `name` (or the default), blocking the
/// calling thread until it has played: the settings view's "test sound". Waits (up to 3 s) for
/// the device to start first, so the whole tone is heard.
pub fn play_test_tone(name: Option<&str>, hz: f64, duration: Duration) -> Result<(), AudioError> {
    let mut sink = DeviceSink::open(name)?;
    let mut tone = super::ToneSource::new(hz);
    let mut frame = [0.0f32; super::FRAME_20MS];
    let period = Duration::from_millis(20);
    let start = std::time::Instant::now();
    let mut next = start;
    // Silence until the stream runs.
    while sink.stats().callbacks < 5 && start.elapsed() < Duration::from_secs(3) {
        sink.write(&[0.0; super::FRAME_20MS])?;
        next += period;
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    let frames = duration.as_millis().div_ceil(period.as_millis());
    for _ in 0..frames {
        tone.read(&mut frame)?;
        sink.write(&frame)?;
        next += period;
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    // Let the queued tail play out.
    std::thread::sleep(Duration::from_millis(100));
    match sink.poll_event() {
        Some(AudioEvent::DeviceFailed { device, reason }) => Err(AudioError::Device {
            name: device,
            message: reason,
        }),
        None => Ok(()),
    }
}

fn build_input(
    device: &cpal::Device,
    config: &SupportedStreamConfig,
    stream_config: StreamConfig,
    prod: HeapProd<f32>,
    shared: Arc<Shared>,
    meter: LevelMeter,
) -> Result<cpal::Stream, cpal::Error> {
    macro_rules! build {
        ($t:ty) => {
            build_input_typed::<$t>(device, config, stream_config, prod, shared, meter)
        };
    }
    match config.sample_format() {
        SampleFormat::F32 => build!(f32),
        SampleFormat::I16 => build!(i16),
        SampleFormat::I32 => build!(i32),
        SampleFormat::F64 => build!(f64),
        SampleFormat::U16 => build!(u16),
        SampleFormat::I8 => build!(i8),
        SampleFormat::U8 => build!(u8),
        _ => Err(ErrorKind::UnsupportedConfig.into()),
    }
}

fn build_input_typed<T>(
    device: &cpal::Device,
    config: &SupportedStreamConfig,
    stream_config: StreamConfig,
    mut prod: HeapProd<f32>,
    shared: Arc<Shared>,
    meter: LevelMeter,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels()).max(1);
    let errors = shared.clone();
    device.build_input_stream::<T, _, _>(
        stream_config,
        move |data: &[T], _| {
            // Realtime: convert, copy, count. Whole frames only, so channels never slip.
            shared.callbacks.fetch_add(1, Ordering::Relaxed);
            shared.max_callback.fetch_max(data.len(), Ordering::Relaxed);
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
        move |e: cpal::Error| errors.on_error(Direction::Input, e.kind()),
        Some(OPEN_TIMEOUT),
    )
}

fn build_output(
    device: &cpal::Device,
    config: &SupportedStreamConfig,
    stream_config: StreamConfig,
    cons: HeapCons<f32>,
    shared: Arc<Shared>,
    meter: LevelMeter,
) -> Result<cpal::Stream, cpal::Error> {
    macro_rules! build {
        ($t:ty) => {
            build_output_typed::<$t>(device, config, stream_config, cons, shared, meter)
        };
    }
    match config.sample_format() {
        SampleFormat::F32 => build!(f32),
        SampleFormat::I16 => build!(i16),
        SampleFormat::I32 => build!(i32),
        SampleFormat::F64 => build!(f64),
        SampleFormat::U16 => build!(u16),
        SampleFormat::I8 => build!(i8),
        SampleFormat::U8 => build!(u8),
        _ => Err(ErrorKind::UnsupportedConfig.into()),
    }
}

fn build_output_typed<T>(
    device: &cpal::Device,
    config: &SupportedStreamConfig,
    stream_config: StreamConfig,
    mut cons: HeapCons<f32>,
    shared: Arc<Shared>,
    meter: LevelMeter,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels()).max(1);
    let cushion = CUSHION * config.sample_rate() as usize / SAMPLE_RATE as usize * channels;
    let capacity = cons.capacity().get();
    let errors = shared.clone();
    let mut primed = false;
    device.build_output_stream::<T, _, _>(
        stream_config,
        move |data: &mut [T], _| {
            // Realtime: copy, convert, count. Silence until a cushion has built up, and again
            // after running dry, so a late writer gives one gap rather than many.
            shared.callbacks.fetch_add(1, Ordering::Relaxed);
            shared.max_callback.fetch_max(data.len(), Ordering::Relaxed);
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
        move |e: cpal::Error| errors.on_error(Direction::Output, e.kind()),
        Some(OPEN_TIMEOUT),
    )
}

#[cfg(test)]
mod tests {
    //! The bridge without hardware: the test plays the callback's part on the ring buffers.
    use super::*;
    use crate::analysis::dominant_frequency;
    use crate::tone::Tone;

    fn stereo_tone(tone: &mut Tone, frames: usize) -> Vec<f32> {
        let mut mono = vec![0.0; frames];
        tone.fill(&mut mono);
        let mut out = vec![0.0; frames * 2];
        upmix_to_interleaved(&mono, 2, &mut out);
        out
    }

    #[test]
    fn capture_converts_44k1_stereo_to_48k_mono_and_counts_underruns() {
        let shared = Arc::new(Shared::default());
        let (mut prod, cons) = HeapRb::<f32>::new(44_100 / 4 * 2).split();
        let mut capture = Capture::new(cons, 2, 44_100, shared.clone()).unwrap();
        let mut tone = Tone::new(1_000.0, 44_100, 0.5);
        let mut out = Vec::new();
        let mut frame = [0.0f32; 960];
        let mut real = 0;
        // One second: the "callback" delivers 441 frames every 10 ms, the reader reads 20 ms.
        for step in 0..100 {
            assert_eq!(prod.push_slice(&stereo_tone(&mut tone, 441)), 882);
            if step % 2 == 1 {
                real += capture.read(&mut frame).unwrap();
                out.extend_from_slice(&frame);
            }
        }
        // Priming holds back a frame and a cushion at the start, then it flows.
        assert!(real >= 48_000 - 3 * 960, "{real}");
        let f = dominant_frequency(&out[9_600..], 48_000, 100.0, 4_000.0, 10.0);
        assert_eq!(f, 1_000.0);
        assert_eq!(shared.stats().underruns, 0);

        // The device stops delivering: silence, one underrun per dry spell, no panic.
        for _ in 0..5 {
            capture.read(&mut frame).unwrap();
        }
        assert!(frame.iter().all(|&s| s == 0.0));
        let underruns = shared.stats().underruns;
        assert!((1..=2).contains(&underruns), "{underruns}");
    }

    #[test]
    fn capture_sheds_latency_it_never_needs_but_not_jitter() {
        let shared = Arc::new(Shared::default());
        let (mut prod, cons) = HeapRb::<f32>::new(48_000).split();
        let mut capture = Capture::new(cons, 1, 48_000, shared.clone()).unwrap();
        let mut frame = [0.0f32; 960];
        // Bursty but on time: 60 ms arrive every third read. Nothing is dropped.
        for i in 0..300 {
            if i % 3 == 0 {
                prod.push_slice(&[0.1; 2_880]);
            }
            capture.read(&mut frame).unwrap();
        }
        assert_eq!(shared.stats().overruns, 0);
        // A stall delivered 300 ms at once, then steady: it could be a burst that recurs, so
        // the excess goes over a few windows (the allowance for bursts halves at each).
        prod.push_slice(&[0.1; 14_400]);
        for _ in 0..6 * LOW_WATER_WINDOW {
            prod.push_slice(&[0.1; 960]);
            assert_eq!(capture.read(&mut frame).unwrap(), 960);
        }
        let trims = shared.stats().overruns;
        assert!((1..=6).contains(&trims), "{trims} trims");
        let left = capture.resampler.available();
        assert!(
            left <= 2 * CUSHION + LOW_WATER_SLACK,
            "{left} samples still queued"
        );
    }

    #[test]
    fn capture_from_a_source_that_delivers_2s_blocks_loses_nothing() {
        // PulseAudio's sine source (a test microphone) posts 2 s at once, every 2 s. With a
        // 250 ms buffer only the first 250 ms of each block was kept: a call's far end heard
        // 1.75 s gaps, and the speaker meter of an echo call stayed mostly at zero.
        let shared = Arc::new(Shared::default());
        let (mut prod, cons) = HeapRb::<f32>::new(backlog_samples(44_100, 1)).split();
        let mut capture = Capture::new(cons, 1, 44_100, shared.clone()).unwrap();
        let mut tone = Tone::new(330.0, 44_100, 0.5);
        let mut block = vec![0.0f32; 2 * 44_100];
        let mut frame = [0.0f32; 960];
        let mut out = Vec::new();
        let mut real = 0;
        // 10 s: a block at each 2 s, the reader reads 20 ms every 20 ms.
        for step in 0..500 {
            if step % 100 == 0 {
                tone.fill(&mut block);
                assert_eq!(prod.push_slice(&block), block.len(), "ring full");
            }
            let n = capture.read(&mut frame).unwrap();
            real += n;
            if step >= 100 {
                assert_eq!(
                    n,
                    960,
                    "short read at {} ms: {:?}",
                    step * 20,
                    shared.stats()
                );
            }
            out.extend_from_slice(&frame);
        }
        // All but the resampler's delay, and never silence after the first block (the first
        // block, less that delay, runs out one read before the second arrives).
        assert!(
            real >= 500 * 960 - 2 * 960,
            "{real} real samples of {}",
            500 * 960
        );
        let stats = shared.stats();
        assert_eq!(stats.overruns, 0, "{stats:?}");
        assert!(stats.underruns <= 1, "{stats:?}");
        let f = dominant_frequency(&out[48_000..], 48_000, 100.0, 1_000.0, 10.0);
        assert_eq!(f, 330.0);
    }

    #[test]
    fn playback_converts_48k_mono_to_44k1_stereo_and_bounds_its_backlog() {
        let shared = Arc::new(Shared::default());
        let (prod, mut cons) = HeapRb::<f32>::new(44_100 / 4 * 2).split();
        let mut playback = Playback::new(prod, 2, 44_100, shared.clone()).unwrap();
        let mut tone = Tone::new(700.0, 48_000, 0.5);
        let mut frame = [0.0f32; 960];
        let mut played = Vec::new();
        let mut buf = vec![0.0f32; 882 * 2];
        // Before the stream runs, writes queue no more than it needs to start (20 ms here).
        for _ in 0..10 {
            playback.write(&[0.0; 960]).unwrap();
        }
        let queued_ms = cons.occupied_len() / 2 * 1_000 / 44_100;
        assert!(
            queued_ms <= 20,
            "{queued_ms} ms queued before the stream started"
        );
        cons.clear();
        let before = shared.stats().overruns;
        shared.callbacks.store(CALLBACKS_TO_ARM, Ordering::Relaxed);
        for _ in 0..50 {
            tone.fill(&mut frame);
            playback.write(&frame).unwrap();
            // The "callback" takes 20 ms of stereo.
            let n = cons.pop_slice(&mut buf);
            played.extend_from_slice(&buf[..n]);
        }
        assert_eq!(shared.stats().overruns, before);
        assert!(played.len() > 2 * 44_100 * 9 / 10, "{}", played.len());
        let left: Vec<f32> = played.iter().step_by(2).copied().collect();
        let right: Vec<f32> = played.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(left, right);
        assert_eq!(
            dominant_frequency(&left, 44_100, 100.0, 4_000.0, 10.0),
            700.0
        );

        // A stall: nobody plays for 300 ms; the ring holds 250 ms, the rest is counted.
        for _ in 0..15 {
            playback.write(&frame).unwrap();
        }
        let after_stall = shared.stats().overruns;
        assert!(after_stall >= 1);
        // Steady again: the latency the stall left is shed within a window or two.
        shared.max_callback.store(882 * 2, Ordering::Relaxed);
        for _ in 0..2 * LOW_WATER_WINDOW {
            playback.write(&frame).unwrap();
            cons.pop_slice(&mut buf);
        }
        let trims = shared.stats().overruns - after_stall;
        assert!((1..=2).contains(&trims), "{trims} trims");
        let queued_ms = cons.occupied_len() / 2 * 1_000 / 44_100;
        assert!(queued_ms <= 60, "{queued_ms} ms still queued");
    }

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
