//! Capture: [`DeviceSource`], the media thread's half of an input stream. It drains the ring
//! buffer the callback fills, down-mixes, resamples to 48 kHz and keeps the latency low.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringbuf::traits::{Consumer, Observer};
use ringbuf::{HeapCons, HeapProd};

use super::open::{
    Endpoint, Half, LOW_WATER_SLACK, LowWater, Queue, Scratch, Watchdog, device_endpoint,
};
use super::stream::{Shared, StreamParts, build_input};
use super::{CUSHION, Direction};
use crate::SAMPLE_RATE;
use crate::audio::AudioError;
use crate::audio::{StreamResampler, downmix_interleaved};

/// Audio capture holds between the callback and the reader (the ring, then the resampler's
/// queue). Some sources deliver in large blocks, not a period at a time: PulseAudio's sine
/// source (a test microphone) posts 2 s at once, every 2 s, and a 250 ms buffer kept only the
/// first 250 ms of each block, so a call heard an eighth of what was said. 2.5 s holds such a
/// block; what a burst leaves beyond what the next one needs is shed as usual (see [`Capture`]).
const CAPTURE_BACKLOG: Duration = Duration::from_millis(2_500);

/// The media-thread half of a capture: ring consumer, down-mix, resampler to 48 kHz.
#[derive(Debug)]
pub(super) struct Capture {
    cons: Queue<HeapCons<f32>>,
    channels: usize,
    rate: u32,
    raw: Scratch,
    mono: Scratch,
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

impl Capture {
    pub(super) fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        self.watchdog.check(&self.shared, frame.len());
        let mut arrived = 0;
        loop {
            let whole = self.cons.0.occupied_len() / self.channels * self.channels;
            let take = whole.min(self.raw.len());
            if take == 0 {
                break;
            }
            let n = self.cons.0.pop_slice(&mut self.raw[..take]);
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

impl Half for Capture {
    const DIRECTION: Direction = Direction::Input;
    const RING: Duration = CAPTURE_BACKLOG;
    type End = HeapCons<f32>;

    fn build(
        parts: StreamParts<'_>,
        (prod, cons): (HeapProd<f32>, HeapCons<f32>),
    ) -> Result<(cpal::Stream, HeapCons<f32>), cpal::Error> {
        Ok((build_input(parts, prod)?, cons))
    }

    fn new(
        cons: HeapCons<f32>,
        channels: usize,
        rate: u32,
        shared: Arc<Shared>,
    ) -> Result<Self, AudioError> {
        let raw_len = (rate as usize / 50).max(64) * channels;
        Ok(Self {
            cons: Queue(cons),
            channels,
            rate,
            raw: Scratch::new(raw_len),
            mono: Scratch::new(raw_len / channels),
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
}

/// [`CAPTURE_BACKLOG`] in samples at `rate` with `channels` channels.
fn backlog_samples(rate: u32, channels: usize) -> usize {
    rate as usize * CAPTURE_BACKLOG.as_millis() as usize / 1_000 * channels
}

/// `device` / `device:NAME` as a source: captures from a cpal input device, at whatever rate and
/// channel count it offers, and reads as 48 kHz mono. Paced by the device: read once per frame
/// period; a read that finds too little pads with silence and counts an underrun.
#[derive(Debug)]
pub struct DeviceSource(Endpoint<Capture>);

device_endpoint! {
    DeviceSource: Source,
    open: "Opens the input device called `name` (id or name, see \
        [`input_devices`](super::input_devices)), or the system default, and starts capturing.",
    format: "The rate and channel count the device runs at (converted to 48 kHz mono on \
        read).",
    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        self.0.half.read(frame)
    }
}

#[cfg(test)]
mod tests {
    //! Capture without hardware: the test plays the callback's part on the ring buffer.
    use ringbuf::HeapRb;
    use ringbuf::traits::{Producer, Split};

    use super::super::open::LOW_WATER_WINDOW;
    use super::*;
    use crate::analysis::dominant_frequency;
    use crate::audio::upmix_to_interleaved;
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
}
