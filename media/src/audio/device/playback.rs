//! Playback: [`DeviceSink`], the media thread's half of an output stream. It resamples from
//! 48 kHz, up-mixes and fills the ring buffer the callback drains, keeping the latency low.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringbuf::traits::{Observer, Producer};
use ringbuf::{HeapCons, HeapProd};

use super::open::{
    CALLBACKS_TO_ARM, Endpoint, Half, LOW_WATER_SLACK, LowWater, Queue, Scratch, Watchdog,
    device_endpoint,
};
use super::stream::{Shared, StreamParts, build_output};
use super::{CUSHION, Direction};
use crate::SAMPLE_RATE;
use crate::audio::{
    AudioError, AudioEvent, FRAME_20MS, Sink, Source, StreamResampler, ToneSource,
    upmix_to_interleaved,
};

/// Audio the playback ring buffer holds between the media thread and the callback.
const RING: Duration = Duration::from_millis(250);

/// The media-thread half of a playback: resampler from 48 kHz, up-mix, ring producer.
#[derive(Debug)]
pub(super) struct Playback {
    prod: Queue<HeapProd<f32>>,
    channels: usize,
    rate: u32,
    resampler: StreamResampler,
    mono: Scratch,
    interleaved: Scratch,
    low_water: LowWater,
    /// Samples (interleaved) still to drop from what is written, to shed excess latency.
    to_drop: usize,
    watchdog: Watchdog,
    shared: Arc<Shared>,
}

impl Playback {
    pub(super) fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        self.watchdog.check(&self.shared, frame.len());
        // Latency the callback never needed for a whole window (the writer's clock runs ahead
        // of the device's, or a stall has passed): shed from what comes next.
        let per_ms = self.rate as usize / 1_000 * self.channels;
        let target = self.shared.max_callback.load(Ordering::Relaxed) + CUSHION / 48 * per_ms;
        if let Some(excess) = self.low_water.observe(
            self.prod.0.occupied_len(),
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
            let mut room = self.prod.0.vacant_len();
            if self.shared.callbacks.load(Ordering::Relaxed) < CALLBACKS_TO_ARM {
                let cap = target + LOW_WATER_SLACK / 48 * per_ms;
                room = room.min(cap.saturating_sub(self.prod.0.occupied_len()));
            }
            let room = room / self.channels * self.channels;
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
            resampler: StreamResampler::new(SAMPLE_RATE, rate, rate as usize)?,
            mono: Scratch::new(mono_len),
            interleaved: Scratch::new(mono_len * channels),
            low_water: LowWater::default(),
            to_drop: 0,
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
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    //! Playback without hardware: the test plays the callback's part on the ring buffer.
    use ringbuf::HeapRb;
    use ringbuf::traits::{Consumer, Split};

    use super::super::open::LOW_WATER_WINDOW;
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
}
