//! Playback: [`DeviceSink`], the media thread's half of an output stream. A [`PlaybackDrift`]
//! resamples from 48 kHz, steering the ratio so that the device's clock drift never costs a
//! dropped or repeated sample; the result is up-mixed into the ring buffer the callback drains.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringbuf::traits::{Observer, Producer};
use ringbuf::{HeapCons, HeapProd};

use super::open::{CALLBACKS_TO_ARM, Endpoint, Half, Queue, Scratch, Watchdog, device_endpoint};
use super::stream::{Shared, StreamParts, build_output};
use super::{CUSHION, Direction};
use crate::audio::resample::{DriftController, PlaybackDrift};
use crate::audio::{
    AudioError, AudioEvent, FRAME_20MS, Sink, Source, ToneSource, upmix_to_interleaved,
};

/// Audio the playback ring buffer holds between the media thread and the callback.
const RING: Duration = Duration::from_millis(250);

/// The media-thread half of a playback: [`PlaybackDrift`], up-mix, ring producer.
#[derive(Debug)]
pub(super) struct Playback {
    prod: Queue<HeapProd<f32>>,
    channels: usize,
    rate: u32,
    drift: PlaybackDrift,
    mono: Scratch,
    interleaved: Scratch,
    watchdog: Watchdog,
    shared: Arc<Shared>,
}

impl Playback {
    pub(super) fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        self.watchdog.check(&self.shared, frame.len());
        let running = self.shared.callbacks.load(Ordering::Relaxed) >= CALLBACKS_TO_ARM;
        let callback = self.shared.max_callback.load(Ordering::Relaxed) / self.channels;
        let queued = self.prod.0.occupied_len() / self.channels;
        // A one-off excess (a stall has passed) cut, cross-faded: counted as an overrun.
        if self.drift.write(frame, queued, callback, running)? > 0 {
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        // Until the stream runs, no more than it needs to start (a server can take seconds to
        // start a stream, and what piles up meanwhile would be latency).
        let start_cap = (callback + 2 * CUSHION * self.rate as usize / crate::SAMPLE_RATE as usize)
            * self.channels;
        let mut dropped = false;
        loop {
            // Whole frames only, so channels never slip.
            let mut room = self.prod.0.vacant_len();
            if !running {
                room = room.min(start_cap.saturating_sub(self.prod.0.occupied_len()));
            }
            let room = room / self.channels * self.channels;
            // Once the stream runs, what the ring cannot take waits in the resampler's queue
            // (the drift controller sees it, and cuts it once, cross-faded, if it is a one-off
            // excess) rather than being dropped a write at a time after a stall.
            let want = if running {
                (room / self.channels).min(self.mono.len())
            } else {
                self.mono.len()
            };
            if want == 0 {
                break;
            }
            let n = self.drift.pop(&mut self.mono[..want]);
            if n == 0 {
                break;
            }
            let frames =
                upmix_to_interleaved(&self.mono[..n], self.channels, &mut self.interleaved);
            let samples = &self.interleaved[..frames * self.channels];
            let take = samples.len().min(room);
            self.prod.0.push_slice(&samples[..take]);
            dropped |= take < samples.len();
        }
        if dropped && !self.shared.failed.load(Ordering::Acquire) {
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Playback {
    /// How long until a sample written now is heard: the resampler's queue and delay, the
    /// ring, and a device period (the device's own buffer: cpal does not say more).
    fn latency(&self) -> Duration {
        let frames = (self.prod.0.occupied_len() / self.channels) as u64
            + (self.shared.max_callback.load(Ordering::Relaxed) / self.channels) as u64
            + self.drift.delay() as u64;
        Duration::from_micros(frames * 1_000_000 / u64::from(self.rate))
    }
}

impl DeviceSink {
    /// How long until a sample written now is heard (the resampler, the playback ring and one
    /// device period for the device's own buffer): what playback adds to mouth-to-ear
    /// latency. It varies by a device period as the clocks slide past each other.
    pub fn latency(&self) -> Duration {
        self.0.half.latency()
    }

    /// The drift correction the playback's resampler steers with just now, ppm (positive:
    /// more device samples per 48 kHz sample).
    pub fn drift_ppm(&self) -> f64 {
        self.0.half.drift.correction_ppm()
    }
}

impl Half for Playback {
    const DIRECTION: Direction = Direction::Output;
    const RING: Duration = RING;
    type End = HeapProd<f32>;

    fn build(
        parts: StreamParts<'_>,
        (prod, cons): (HeapProd<f32>, HeapCons<f32>),
    ) -> Result<(cpal::Stream, HeapProd<f32>), cpal::Error> {
        Ok((build_output(parts, cons)?, prod))
    }

    fn new(
        prod: HeapProd<f32>,
        channels: usize,
        rate: u32,
        shared: Arc<Shared>,
    ) -> Result<Self, AudioError> {
        let mono_len = (rate as usize / 50).max(64);
        Ok(Self {
            prod: Queue(prod),
            channels,
            rate,
            drift: PlaybackDrift::new(rate, CUSHION, DriftController::for_playback())?,
            mono: Scratch::new(mono_len),
            interleaved: Scratch::new(mono_len * channels),
            watchdog: Watchdog::default(),
            shared,
        })
    }
}

/// `device` / `device:NAME` as a sink: plays 48 kHz mono on a cpal output device, converted to
/// whatever rate and channel count it offers. Paced by the device: write one frame per frame
/// period. The callback plays silence until it has a cushion and whenever it runs dry (an
/// underrun); writes that find the buffer full drop audio (an overrun).
#[derive(Debug)]
pub struct DeviceSink(Endpoint<Playback>);

device_endpoint! {
    DeviceSink: Sink,
    open: "Opens the output device called `name` (id or name, see \
        [`output_devices`](super::output_devices)), or the system default, and starts playing \
        (silence until audio is written).",
    format: "The rate and channel count the device runs at (converted from 48 kHz mono on \
        write).",
    fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        self.0.half.write(frame)
    }

    fn latency(&self) -> Option<Duration> {
        Some(self.0.half.latency())
    }
}

/// Plays a `hz` tone for `duration` on the output device `name` (or the default), blocking the
/// calling thread until it has played: the settings view's "test sound". Waits (up to 3 s) for
/// the device to start first, so the whole tone is heard.
pub fn play_test_tone(name: Option<&str>, hz: f64, duration: Duration) -> Result<(), AudioError> {
    let mut sink = DeviceSink::open(name)?;
    let mut tone = ToneSource::new(hz);
    let mut frame = [0.0f32; FRAME_20MS];
    let period = Duration::from_millis(20);
    let start = std::time::Instant::now();
    let mut next = start;
    // Silence until the stream runs.
    while sink.stats().callbacks < 5 && start.elapsed() < Duration::from_secs(3) {
        sink.write(&[0.0; FRAME_20MS])?;
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
        // None, or moved to another device: the tone played there.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    //! Playback without hardware: the test plays the callback's part on the ring buffer.
    use ringbuf::HeapRb;
    use ringbuf::traits::{Consumer, Split};

    use super::*;
    use crate::analysis::dominant_frequency;
    use crate::tone::Tone;

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
        // Right after a write the ring holds the 20 ms written (the "callback" took the rest),
        // and the resampler delays by 0.7 ms.
        playback.write(&frame).unwrap();
        let latency = playback.latency().as_secs_f64() * 1e3;
        assert!((15.0..=30.0).contains(&latency), "{latency} ms");
        cons.pop_slice(&mut buf);
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
        // Steady again: the latency the stall left is kept while the low-water mark looks back
        // (3 s), then cut at once, cross-faded (the first write may still find the ring full).
        shared.max_callback.store(882 * 2, Ordering::Relaxed);
        for _ in 0..250 {
            playback.write(&frame).unwrap();
            cons.pop_slice(&mut buf);
        }
        let trims = shared.stats().overruns - after_stall;
        assert!((1..=2).contains(&trims), "{trims} trims");
        let queued_ms = cons.occupied_len() / 2 * 1_000 / 44_100;
        assert!(queued_ms <= 60, "{queued_ms} ms still queued");
    }
}
