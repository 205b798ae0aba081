//! Capture: [`DeviceSource`], the media thread's half of an input stream. It drains the ring
//! buffer the callback fills, down-mixes, and hands the audio to a [`CaptureDrift`], which
//! resamples to 48 kHz and steers the resampling ratio so that the device's clock drift never
//! costs a dropped or repeated sample.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringbuf::traits::{Consumer, Observer};
use ringbuf::{HeapCons, HeapProd};

use super::open::{Endpoint, Half, Queue, Scratch, Watchdog, device_endpoint};
use super::stream::{Shared, StreamParts, build_input};
use super::{CUSHION, Direction};
use crate::SAMPLE_RATE;
use crate::audio::AudioError;
use crate::audio::downmix_interleaved;
use crate::audio::resample::{CaptureDrift, DriftController};

/// Audio capture holds between the callback and the reader (the ring, then the resampler's
/// queue). Some sources deliver in large blocks, not a period at a time: PulseAudio's sine
/// source (a test microphone) posts 2 s at once, every 2 s, and a 250 ms buffer kept only the
/// first 250 ms of each block, so a call heard an eighth of what was said. 2.5 s holds such a
/// block; the drift controller looks at the low-water mark over 3 s, so such bursts are not
/// taken for excess.
const CAPTURE_BACKLOG: Duration = Duration::from_millis(2_500);

/// The media-thread half of a capture: ring consumer, down-mix, [`CaptureDrift`].
#[derive(Debug)]
pub(super) struct Capture {
    cons: Queue<HeapCons<f32>>,
    channels: usize,
    rate: u32,
    raw: Scratch,
    mono: Scratch,
    drift: CaptureDrift,
    dropped: u64,
    watchdog: Watchdog,
    shared: Arc<Shared>,
}

impl Capture {
    pub(super) fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        self.watchdog.check(&self.shared, frame.len());
        loop {
            let whole = self.cons.0.occupied_len() / self.channels * self.channels;
            let take = whole.min(self.raw.len());
            if take == 0 {
                break;
            }
            let n = self.cons.0.pop_slice(&mut self.raw[..take]);
            let frames = downmix_interleaved(&self.raw[..n], self.channels, &mut self.mono);
            self.drift.push(&self.mono[..frames])?;
        }
        // Audio nobody read for CAPTURE_BACKLOG (the resampler's queue is full): dropped there.
        if self.drift.dropped() > self.dropped {
            self.dropped = self.drift.dropped();
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        let callback = self.shared.max_callback.load(Ordering::Relaxed) / self.channels;
        let read = self.drift.read(frame, callback);
        // A one-off excess (a stall that ended in a burst) cut, cross-faded: counted as an
        // overrun, as audio lost.
        if read.cut > 0 {
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        if read.underrun && !self.shared.failed.load(Ordering::Acquire) {
            self.shared.underruns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(read.samples)
    }

    /// 48 kHz samples queued for the reader.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.drift.queued()
    }

    /// How old a sample read now is: the ring, the resampler's queue and delay, and a device
    /// period (the device's own buffer: cpal does not say more).
    fn latency(&self) -> Duration {
        let rate = u64::from(self.rate);
        let device = (self.cons.0.occupied_len() / self.channels) as u64
            + (self.shared.max_callback.load(Ordering::Relaxed) / self.channels) as u64;
        let samples = device * u64::from(SAMPLE_RATE) / rate + self.drift.delay() as u64;
        Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}

impl DeviceSource {
    /// How old a sample read now is (the capture ring, the resampler's queue and delay, and
    /// one device period for the device's own buffer): what capture adds to mouth-to-ear
    /// latency. It varies by a device period as the clocks slide past each other.
    pub fn latency(&self) -> Duration {
        self.0.half.latency()
    }

    /// The drift correction the capture's resampler steers with just now, ppm (positive: more
    /// 48 kHz samples per device sample).
    pub fn drift_ppm(&self) -> f64 {
        self.0.half.drift.correction_ppm()
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
            drift: CaptureDrift::new(
                rate,
                CUSHION,
                backlog_samples(SAMPLE_RATE, 1),
                DriftController::new(),
            )?,
            dropped: 0,
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

    fn latency(&self) -> Option<Duration> {
        Some(self.0.half.latency())
    }
}

#[cfg(test)]
mod tests {
    //! Capture without hardware: the test plays the callback's part on the ring buffer.
    use ringbuf::HeapRb;
    use ringbuf::traits::{Producer, Split};

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
        // What is queued after a read: the cushion, give or take a device period.
        let latency = capture.latency().as_secs_f64() * 1e3;
        assert!((5.0..=30.0).contains(&latency), "{latency} ms");

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
        // A stall delivered 300 ms at once, then steady: it could be a burst that recurs, so it
        // is kept while the low-water mark looks back (3 s), then cut at once, cross-faded.
        prod.push_slice(&[0.1; 14_400]);
        for _ in 0..200 {
            prod.push_slice(&[0.1; 960]);
            assert_eq!(capture.read(&mut frame).unwrap(), 960);
        }
        assert_eq!(shared.stats().overruns, 1, "one cut");
        let left = capture.queued();
        assert!(left <= 2 * CUSHION, "{left} samples still queued");
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
