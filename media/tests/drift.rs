//! Clock drift without clicks (issue 12, item 4).
//!
//! A device's clock and the media thread's clock never agree exactly: a cheap crystal is off by
//! up to a few hundred ppm. Capture and playback keep the queue between them steady by steering
//! the resampling ratio ([`DriftController`], [`CaptureDrift`], [`PlaybackDrift`]), never by
//! dropping or repeating a sample. These tests drive the very code `DeviceSource` and
//! `DeviceSink` run, in virtual time: a simulated device whose clock runs `ppm` fast or slow
//! delivers (or takes) a pure tone in periods, with jitter, while the media thread reads (or
//! writes) 20 ms frames on its own clock. Ten minutes of audio take seconds, with no waiting.
//!
//! # The discontinuity measure
//!
//! A pure sine `x[n] = A sin(w n + p)` obeys `x[n-1] + x[n+1] = 2 cos(w) x[n]` exactly (the
//! best local sinusoid through three samples). The residual
//!
//! ```text
//!     r[n] = x[n-1] - 2 cos(w) x[n] + x[n+1]
//! ```
//!
//! is zero for a clean tone; a slowly steered ratio (a frequency off by up to 1000 ppm) leaves
//! `|r| < 2 A w * 1e-3`, the resampler's own error less. A dropped or repeated sample shifts the
//! waveform by one sample at once: `|r|` near the splice is up to `A w` (the tone's largest
//! step from one sample to the next), and at least `A w^2 / 2` even at a crest. The measure
//! scores each sample as `|r[n]| / (A w)`, in units of that one-sample step, and **flags every
//! sample scoring above [`THRESHOLD`] (2 %)**: 10 times below what a dropped sample at a crest
//! of the test tone scores, about 100 times above what steering and resampling leave. The tone
//! (1733.3 Hz) has no whole number of periods in any number of samples a queue would trim, so a
//! cut of any length shows. A stretch of silence (an empty queue) is flagged at its edges.

#![allow(clippy::unwrap_used)]

use media::audio::{CaptureDrift, DriftController, PlaybackDrift, SteeredResampler};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The test tone, Hz.
const TONE: f64 = 1_733.3;
/// Its amplitude.
const AMPLITUDE: f64 = 0.5;
/// Score above which a sample is a discontinuity (see the module documentation).
const THRESHOLD: f64 = 0.02;
/// The media thread's frame: 20 ms at 48 kHz.
const FRAME: usize = 960;
/// The cushion the devices keep (device/mod.rs `CUSHION`): 10 ms.
const CUSHION: usize = 480;
/// Ten minutes.
const SECONDS: f64 = 600.0;
/// Latency bounds, ms of audio queued between the device and the media thread (see
/// `check_steered`): capture, after a read, from 10 s on and from 3 minutes on...
/// (5 ms more each since capture, like playback, leaves a level up to half a frame above its
/// target alone and the drift estimate leaks inside the band, so that a level holding still
/// is not slid, which moves the echo path: measured 35.8 ms settled at +300 ppm, was 24-26)
const CAPTURE_BOUND_MS: f64 = 45.0;
const CAPTURE_SETTLED_MS: f64 = 40.0;
/// ...and playback, when the device takes a period (60.0 ms measured settled at -300 ppm on a
/// 44.1 kHz device with the leaking drift estimate, was 49.6).
const PLAYBACK_BOUND_MS: f64 = 70.0;
const PLAYBACK_SETTLED_MS: f64 = 65.0;

/// Samples whose score exceeds [`THRESHOLD`] in `x`, a tone of [`TONE`] Hz at `rate` (and
/// [`AMPLITUDE`]), with the highest score seen.
fn discontinuities(x: &[f32], rate: f64) -> (Vec<usize>, f64) {
    let w = std::f64::consts::TAU * TONE / rate;
    let c = 2.0 * w.cos();
    let step = AMPLITUDE * w;
    let mut flagged = Vec::new();
    let mut worst = 0.0f64;
    for n in 1..x.len().saturating_sub(1) {
        let r = f64::from(x[n - 1]) - c * f64::from(x[n]) + f64::from(x[n + 1]);
        let score = r.abs() / step;
        worst = worst.max(score);
        if score > THRESHOLD {
            flagged.push(n);
        }
    }
    (flagged, worst)
}

fn tone(rate: f64, from: u64, out: &mut [f32]) {
    let w = std::f64::consts::TAU * TONE / rate;
    for (i, s) in out.iter_mut().enumerate() {
        *s = (AMPLITUDE * (w * (from + i as u64) as f64 + 0.3).sin()) as f32;
    }
}

fn clean_tone(rate: f64, len: usize) -> Vec<f32> {
    let mut x = vec![0.0; len];
    tone(rate, 0, &mut x);
    x
}

/// The sample indices flagged, grouped into events (flags within 8 samples of each other).
fn events(flagged: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for &n in flagged {
        if out.last().is_none_or(|&last| n > last + 8) {
            out.push(n);
        }
    }
    out
}

#[test]
fn the_measure_passes_a_clean_tone_and_a_steered_one() {
    let x = clean_tone(48_000.0, 48_000);
    let (flagged, worst) = discontinuities(&x, 48_000.0);
    assert!(
        flagged.is_empty(),
        "{} flagged, worst {worst}",
        flagged.len()
    );
    assert!(worst < 0.001, "worst {worst}");

    // Through the steered resampler at ratio 1.0, its correction swung between the bounds.
    let mut resampler = SteeredResampler::new(48_000, 48_000, 1 << 20).unwrap();
    let x = clean_tone(48_000.0, 10 * 48_000);
    for (k, piece) in x.chunks(480).enumerate() {
        resampler.set_correction_ppm(if k / 100 % 2 == 0 { 1_000.0 } else { -1_000.0 });
        resampler.push(piece).unwrap();
    }
    let mut y = vec![0.0; resampler.available()];
    resampler.pop(&mut y);
    let (flagged, worst) = discontinuities(&y[480..], 48_000.0);
    println!("steered at +-1000 ppm: worst score {worst:.5}");
    assert!(
        flagged.is_empty(),
        "{} flagged, worst {worst}",
        flagged.len()
    );
}

#[test]
fn the_measure_catches_one_dropped_or_repeated_sample_wherever_it_falls() {
    let x = clean_tone(48_000.0, 4_800);
    let period = 48_000.0 / TONE;
    // Splices at 40 phases across one period of the tone, crests and zero crossings included.
    for k in 0..40 {
        let at = 2_000 + (k as f64 * period / 40.0) as usize;
        let mut dropped = x.clone();
        dropped.remove(at);
        let mut repeated = x.clone();
        repeated.insert(at, x[at]);
        for (what, y) in [("dropped", dropped), ("repeated", repeated)] {
            let (flagged, worst) = discontinuities(&y, 48_000.0);
            assert!(
                !flagged.is_empty(),
                "{what} sample at {at} not caught (worst score {worst})"
            );
            assert!(
                flagged.iter().all(|&n| n.abs_diff(at) <= 2),
                "{what} sample at {at}: flagged {flagged:?}"
            );
        }
    }
}

#[test]
fn the_measure_catches_a_cut_and_a_gap() {
    let x = clean_tone(48_000.0, 9_600);
    for cut in [1, 2, 7, 48, 480, 960] {
        let mut y = x.clone();
        y.drain(3_000..3_000 + cut);
        let (flagged, _) = discontinuities(&y, 48_000.0);
        assert_eq!(events(&flagged).len(), 1, "cut of {cut}: {flagged:?}");
    }
    let mut y = x.clone();
    y[3_000..3_960].fill(0.0);
    let (flagged, _) = discontinuities(&y, 48_000.0);
    assert_eq!(
        events(&flagged).len(),
        2,
        "a gap has two edges: {flagged:?}"
    );
}

/// What a run of one direction gave.
#[derive(Debug)]
struct Run {
    /// What the far side heard: the reader's frames (capture) or what the device played.
    heard: Vec<f32>,
    /// Its rate.
    rate: f64,
    /// Queue level after each read (capture) or before each device callback (playback), ms:
    /// lowest and highest from 10 s on, highest from 3 minutes on (the loop has converged).
    level_ms: (f64, f64, f64),
    underruns: u32,
    /// Cuts (from 10 s on, for a capture).
    cuts: u32,
    /// A capture's cuts in its first 10 s: what its start left above the band.
    start_cuts: u32,
    /// The correction, averaged from 3 minutes on, ppm.
    mean_ppm: f64,
}

/// A simulated clock: event `k` at `k * period * (1 + jitter)`, seconds.
struct Clock {
    period: f64,
    jitter: f64,
    k: u64,
    next: f64,
}

impl Clock {
    fn new(period: f64, jitter: f64, rng: &mut StdRng) -> Self {
        let mut clock = Self {
            period,
            jitter,
            k: 0,
            next: 0.0,
        };
        clock.advance(rng);
        clock
    }

    fn advance(&mut self, rng: &mut StdRng) {
        self.k += 1;
        let late = rng.random_range(0.0..=self.jitter);
        self.next = self.k as f64 * self.period + late;
    }
}

/// Capture for [`SECONDS`]: a device at `device_rate` whose clock is `ppm` fast delivers the
/// tone in 10 ms periods (up to 3 ms late); the media thread reads 20 ms frames (up to 2 ms
/// late), draining what arrived into [`CaptureDrift`] first, as `DeviceSource` does.
fn capture(ppm: f64, device_rate: u32, controller: DriftController, seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let rate = f64::from(device_rate);
    let period = device_rate as usize / 100;
    let mut device = Clock::new(period as f64 / (rate * (1.0 + ppm * 1e-6)), 0.003, &mut rng);
    let mut media = Clock::new(0.02, 0.002, &mut rng);
    let mut drift = CaptureDrift::new(device_rate, CUSHION, 120_000, controller).unwrap();
    let mut produced = 0u64;
    let mut chunk = vec![0.0f32; period];
    let mut arrived: Vec<f32> = Vec::with_capacity(48_000);
    let mut frame = [0.0f32; FRAME];
    let mut heard = Vec::with_capacity((SECONDS * 48_000.0) as usize);
    let (mut low, mut high, mut settled_high) = (f64::MAX, 0.0f64, 0.0f64);
    let mut steered = (0.0, 0.0);
    let (mut underruns, mut cuts, mut start_cuts) = (0, 0, 0);
    while media.next < SECONDS {
        if device.next <= media.next {
            tone(rate, produced, &mut chunk);
            produced += period as u64;
            arrived.extend_from_slice(&chunk);
            device.advance(&mut rng);
        } else {
            drift.push(&arrived).unwrap();
            arrived.clear();
            let read = drift.read(&mut frame, period);
            heard.extend_from_slice(&frame);
            underruns += u32::from(read.underrun);
            // A capture cuts what its start left above the band at once (stale audio, see
            // DriftController): counted apart.
            if media.next < 10.0 {
                start_cuts += u32::from(read.cut > 0);
            } else {
                cuts += u32::from(read.cut > 0);
            }
            let ms = drift.queued() as f64 / 48.0;
            if media.next > 10.0 {
                low = low.min(ms);
                high = high.max(ms);
            }
            if media.next > 180.0 {
                settled_high = settled_high.max(ms);
                steered.0 += drift.correction_ppm();
                steered.1 += 1.0;
            }
            media.advance(&mut rng);
        }
    }
    Run {
        heard,
        rate: 48_000.0,
        level_ms: (low, high, settled_high),
        underruns,
        cuts,
        start_cuts,
        mean_ppm: steered.0 / steered.1,
    }
}

/// Playback for [`SECONDS`]: the media thread writes 20 ms frames of the tone (up to 2 ms
/// late) into [`PlaybackDrift`] and moves what it converted into the device's queue, as
/// `DeviceSink` does; a device at `device_rate` whose clock is `ppm` fast takes 10 ms periods
/// (up to 3 ms late), playing silence until it has a period and a cushion and whenever the
/// queue runs dry, as the cpal callback does.
fn playback(ppm: f64, device_rate: u32, controller: DriftController, seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let rate = f64::from(device_rate);
    let period = device_rate as usize / 100;
    let cushion = CUSHION * device_rate as usize / 48_000;
    let mut device = Clock::new(period as f64 / (rate * (1.0 + ppm * 1e-6)), 0.003, &mut rng);
    let mut media = Clock::new(0.02, 0.002, &mut rng);
    let mut drift = PlaybackDrift::new(device_rate, CUSHION, controller).unwrap();
    let mut written = 0u64;
    let mut frame = [0.0f32; FRAME];
    let mut converted = vec![0.0f32; device_rate as usize / 25];
    let mut queue: std::collections::VecDeque<f32> = Default::default();
    let capacity = device_rate as usize / 4;
    let mut primed = false;
    let mut callbacks = 0u64;
    let mut heard = Vec::with_capacity((SECONDS * rate) as usize);
    let (mut low, mut high, mut settled_high) = (f64::MAX, 0.0f64, 0.0f64);
    let mut steered = (0.0, 0.0);
    let (mut underruns, mut cuts) = (0, 0);
    while media.next < SECONDS {
        if device.next <= media.next {
            callbacks += 1;
            let ms = queue.len() as f64 * 1e3 / rate;
            if device.next > 10.0 {
                low = low.min(ms);
                high = high.max(ms);
            }
            if device.next > 180.0 {
                settled_high = settled_high.max(ms);
                steered.0 += drift.correction_ppm();
                steered.1 += 1.0;
            }
            if !primed && queue.len() >= period + cushion {
                primed = true;
            }
            if primed && queue.len() < period {
                primed = false;
                underruns += 1;
            }
            if primed {
                heard.extend(queue.drain(..period));
            } else if !heard.is_empty() {
                heard.extend(std::iter::repeat_n(0.0, period));
            }
            device.advance(&mut rng);
        } else {
            tone(48_000.0, written, &mut frame);
            written += FRAME as u64;
            let running = callbacks >= 20;
            let cut = drift.write(&frame, queue.len(), period, running).unwrap();
            cuts += u32::from(cut > 0);
            loop {
                let n = drift.pop(&mut converted);
                if n == 0 {
                    break;
                }
                let room = capacity - queue.len();
                queue.extend(&converted[..n.min(room)]);
            }
            media.advance(&mut rng);
        }
    }
    Run {
        heard,
        rate,
        level_ms: (low, high, settled_high),
        underruns,
        cuts,
        start_cuts: 0,
        mean_ppm: steered.0 / steered.1,
    }
}

/// The heard signal from the first real sample on, less 50 ms (the start fades in through the
/// resampler).
fn settled(run: &Run) -> &[f32] {
    let first = run.heard.iter().position(|&s| s != 0.0).unwrap_or(0);
    &run.heard[(first + (run.rate / 20.0) as usize).min(run.heard.len())..]
}

/// Asserts that `run` (`ppm` of drift) had no discontinuity, no underrun or cut, found the
/// drift (`sign`: the correction that cancels a fast device is negative for capture, positive
/// for playback), and kept its queue within `bound` ms (from 10 s on) and `settled` ms (from 3
/// minutes on).
fn check_steered(direction: &str, run: &Run, ppm: f64, sign: f64, bound: f64, settled_bound: f64) {
    let (flagged, worst) = discontinuities(settled(run), run.rate);
    println!(
        "{direction} {ppm:+} ppm: {:.0} s heard, mean correction {:+.1} ppm, queue \
         {:.1}-{:.1} ms from 10 s, up to {:.1} ms from 3 min, {} underruns, {} cuts ({} at the \
         start), worst score \
         {worst:.5}, {} flagged",
        run.heard.len() as f64 / run.rate,
        run.mean_ppm,
        run.level_ms.0,
        run.level_ms.1,
        run.level_ms.2,
        run.underruns,
        run.cuts,
        run.start_cuts,
        flagged.len()
    );
    assert!(
        flagged.is_empty(),
        "{direction} at {ppm:+} ppm: {} discontinuities, first at {:?}, worst score {worst}",
        flagged.len(),
        &flagged[..flagged.len().min(5)]
    );
    assert_eq!(
        (run.underruns, run.cuts),
        (0, 0),
        "{direction} at {ppm:+} ppm"
    );
    assert!(run.start_cuts <= 1, "{direction} at {ppm:+} ppm");
    // The controller found the drift: on average the correction cancels it (it swings around
    // that with the saw-tooth the level carries, see DriftController).
    assert!(
        (run.mean_ppm - sign * ppm).abs() < 20.0,
        "{direction} at {ppm:+} ppm steered {:+.1} ppm",
        run.mean_ppm
    );
    assert!(run.level_ms.0 > 0.0, "{direction} at {ppm:+} ppm ran dry");
    assert!(
        run.level_ms.1 < bound && run.level_ms.2 < settled_bound,
        "{direction} at {ppm:+} ppm: up to {:.1} ms queued, {:.1} ms once settled",
        run.level_ms.1,
        run.level_ms.2
    );
}

fn check_trimming_clicks(direction: &str, run: &Run, ppm: f64) {
    let (flagged, worst) = discontinuities(settled(run), run.rate);
    let clicks = events(&flagged).len();
    println!(
        "{direction} {ppm:+} ppm, trimming only: {} underruns, {} cuts, {clicks} clicks, worst \
         score {worst:.3}",
        run.underruns, run.cuts
    );
    assert!(
        clicks >= 5,
        "{direction} at {ppm:+} ppm: trimming gave {clicks} clicks ({} cuts, {} underruns)",
        run.cuts,
        run.underruns
    );
}

#[test]
fn capture_steers_300_ppm_either_way_for_10_minutes_without_a_click() {
    for (ppm, rate, seed) in [(300.0, 48_000, 1), (-300.0, 48_000, 2), (300.0, 44_100, 3)] {
        let run = capture(ppm, rate, DriftController::new(), seed);
        // The queue after a read: the cushion, half a device period, the saw-tooth of a
        // device period (see DriftController) and jitter.
        check_steered(
            &format!("capture from a {rate} Hz device"),
            &run,
            ppm,
            -1.0,
            CAPTURE_BOUND_MS,
            CAPTURE_SETTLED_MS,
        );
    }
}

#[test]
fn playback_steers_300_ppm_either_way_for_10_minutes_without_a_click() {
    for (ppm, rate, seed) in [(300.0, 48_000, 4), (-300.0, 48_000, 5), (-300.0, 44_100, 6)] {
        let run = playback(ppm, rate, DriftController::for_playback(), seed);
        check_steered(
            &format!("playback to a {rate} Hz device"),
            &run,
            ppm,
            1.0,
            PLAYBACK_BOUND_MS,
            PLAYBACK_SETTLED_MS,
        );
    }
}

#[test]
fn trimming_instead_of_steering_clicks_and_the_measure_says_so() {
    for ppm in [300.0, -300.0] {
        let run = capture(ppm, 48_000, DriftController::trimming_only(), 7);
        check_trimming_clicks("capture", &run, ppm);
        let run = playback(ppm, 48_000, DriftController::trimming_only(), 8);
        check_trimming_clicks("playback", &run, ppm);
    }
}

#[test]
fn near_its_bound_it_steers_700_ppm_without_a_click() {
    // MAX_DRIFT_PPM is 1000: the loop needs room beyond the drift to steer the level back. At
    // 900 ppm a slow capture device came within 0.6 ms of running dry while the loop caught up.
    let run = capture(-700.0, 48_000, DriftController::new(), 9);
    check_steered(
        "capture",
        &run,
        -700.0,
        -1.0,
        CAPTURE_BOUND_MS,
        CAPTURE_SETTLED_MS,
    );
    let run = playback(700.0, 48_000, DriftController::for_playback(), 10);
    check_steered(
        "playback",
        &run,
        700.0,
        1.0,
        PLAYBACK_BOUND_MS,
        PLAYBACK_SETTLED_MS,
    );
}
