//! Resampling cost on the media thread, per 20 ms frame, as a fraction of one core:
//! capture (44.1 kHz stereo -> down-mix -> 48 kHz mono) and playback (48 kHz mono -> 44.1 kHz ->
//! up-mix to stereo), the conversions a 44.1 kHz stereo device needs. Also 48 kHz stereo and
//! 16 kHz mono for reference.
//!
//! Each twice: `fixed` with [`StreamResampler`] (FFT, fixed ratio, a pass-through at 48 kHz:
//! what the devices used before drift was steered) and `steered` with [`SteeredResampler`]
//! (asynchronous sinc, its ratio nudged every frame as the drift controller does: what the
//! devices use now, at 48 kHz too).
//!
//! `cargo bench -p media --bench audio_resample` prints the figures; it asserts nothing. Time is
//! the thread's CPU time (`/proc/thread-self/schedstat`), so other load does not inflate it.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use media::audio::{SteeredResampler, StreamResampler, downmix_interleaved, upmix_to_interleaved};
use media::tone::Tone;

use common::cpu_time;

const FRAME: Duration = Duration::from_millis(20);
/// Seconds of audio per measurement.
const SECONDS: usize = 120;

fn report(name: &str, frames: usize, spent: Duration) {
    let per_frame = spent.as_secs_f64() / frames as f64;
    println!(
        "{name:<40} {:>6.1} us/frame  {:.5} of one core ({:.3}%)  {:>5.0}x real time",
        per_frame * 1e6,
        per_frame / FRAME.as_secs_f64(),
        100.0 * per_frame / FRAME.as_secs_f64(),
        FRAME.as_secs_f64() / per_frame
    );
}

/// One second of a tone at `rate` on `channels` interleaved channels.
fn tone_second(rate: u32, channels: usize) -> Vec<f32> {
    let mut mono = vec![0.0f32; rate as usize];
    Tone::new(1_000.0, rate, 0.5).fill(&mut mono);
    let mut out = vec![0.0f32; mono.len() * channels];
    upmix_to_interleaved(&mono, channels, &mut out);
    out
}

type BenchResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `frame` for frames 0, 1, 2... of [`SECONDS`] of audio and reports the CPU time per frame.
fn measure(name: &str, mut frame: impl FnMut(usize) -> BenchResult) -> BenchResult {
    let frames = SECONDS * 50;
    let wall = Instant::now();
    let start = cpu_time(wall);
    for k in 0..frames {
        frame(k)?;
    }
    report(name, frames, cpu_time(wall) - start);
    Ok(())
}

/// One direction's resampler: the fixed one or the steered one (boxed: they differ in size).
enum Either {
    Fixed(Box<StreamResampler>),
    Steered(Box<SteeredResampler>),
}

impl Either {
    fn new(
        steered: bool,
        from: u32,
        to: u32,
        max: usize,
    ) -> Result<Self, media::audio::AudioError> {
        Ok(if steered {
            Self::Steered(Box::new(SteeredResampler::new(from, to, max)?))
        } else {
            Self::Fixed(Box::new(StreamResampler::new(from, to, max)?))
        })
    }

    /// Pushes `input` after steering (frame `k`: the correction swings slowly, as the
    /// controller's does).
    fn push(&mut self, k: usize, input: &[f32]) -> BenchResult {
        match self {
            Self::Fixed(r) => r.push(input)?,
            Self::Steered(r) => {
                r.set_correction_ppm(300.0 * ((k / 25) as f64).sin());
                r.push(input)?;
            }
        }
        Ok(())
    }

    fn pop(&mut self, out: &mut [f32]) -> usize {
        match self {
            Self::Fixed(r) => r.pop(out),
            Self::Steered(r) => r.pop(out),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Fixed(_) => "fixed  ",
            Self::Steered(_) => "steered",
        }
    }
}

/// Device at `rate` with `channels` -> 48 kHz mono, fed in device periods of 20 ms.
fn capture(rate: u32, channels: usize, steered: bool) -> BenchResult {
    let input = tone_second(rate, channels);
    let period = rate as usize / 50 * channels;
    let mut mono = vec![0.0f32; rate as usize / 50];
    let mut out = vec![0.0f32; 960];
    let mut resampler = Either::new(steered, rate, 48_000, 48_000)?;
    let khz = f64::from(rate) / 1e3;
    measure(
        &format!(
            "{} capture  {khz:.1} kHz x{channels} -> 48 kHz mono",
            resampler.name()
        ),
        |k| {
            let piece = &input[k % 50 * period..][..period];
            let n = downmix_interleaved(black_box(piece), channels, &mut mono);
            resampler.push(k, &mono[..n])?;
            resampler.pop(&mut out);
            black_box(&out);
            Ok(())
        },
    )
}

/// 48 kHz mono -> device at `rate` with `channels`, written in 20 ms frames.
fn playback(rate: u32, channels: usize, steered: bool) -> BenchResult {
    let input = tone_second(48_000, 1);
    let mut mono = vec![0.0f32; rate as usize / 25];
    let mut interleaved = vec![0.0f32; mono.len() * channels];
    let mut resampler = Either::new(steered, 48_000, rate, rate as usize)?;
    let khz = f64::from(rate) / 1e3;
    measure(
        &format!(
            "{} playback 48 kHz mono -> {khz:.1} kHz x{channels}",
            resampler.name()
        ),
        |k| {
            resampler.push(k, black_box(&input[k % 50 * 960..][..960]))?;
            let n = resampler.pop(&mut mono);
            upmix_to_interleaved(&mono[..n], channels, &mut interleaved);
            black_box(&interleaved);
            Ok(())
        },
    )
}

fn main() -> BenchResult {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("audio_resample: run with `cargo bench` for figures");
        return Ok(());
    }
    println!("{SECONDS} s of audio each; one frame is 20 ms");
    for (rate, channels) in [(44_100, 2), (48_000, 2), (16_000, 1)] {
        for steered in [false, true] {
            capture(rate, channels, steered)?;
            playback(rate, channels, steered)?;
        }
    }
    Ok(())
}
