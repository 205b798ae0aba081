//! Resampling cost on the media thread, per 20 ms frame, as a fraction of one core:
//! capture (44.1 kHz stereo -> down-mix -> 48 kHz mono) and playback (48 kHz mono -> 44.1 kHz ->
//! up-mix to stereo), the conversions a 44.1 kHz stereo device needs. Also 48 kHz stereo (down-
//! and up-mix only) for reference.
//!
//! `cargo bench -p media --bench audio_resample` prints the figures; it asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use media::audio::{StreamResampler, downmix_interleaved, upmix_to_interleaved};
use media::tone::Tone;

const FRAME: Duration = Duration::from_millis(20);
/// Seconds of audio per measurement.
const SECONDS: usize = 60;

fn report(name: &str, frames: usize, elapsed: Duration) {
    let per_frame = elapsed / frames as u32;
    println!(
        "{name:<44} {:>8.1} us/frame  {:>7.4}% of one core  ({:.0}x real time)",
        per_frame.as_secs_f64() * 1e6,
        100.0 * per_frame.as_secs_f64() / FRAME.as_secs_f64(),
        FRAME.as_secs_f64() / per_frame.as_secs_f64()
    );
}

/// Device at `rate` with `channels` -> 48 kHz mono, fed in device periods of 20 ms.
fn capture(rate: u32, channels: usize) -> Result<(), Box<dyn std::error::Error>> {
    let device_frame = rate as usize / 50;
    let mut tone = Tone::new(1_000.0, rate, 0.5);
    let mut mono_in = vec![0.0f32; device_frame];
    let mut interleaved = vec![0.0f32; device_frame * channels];
    let mut mono = vec![0.0f32; device_frame];
    let mut out = vec![0.0f32; 960];
    let mut resampler = StreamResampler::new(rate, 48_000, 48_000)?;
    let frames = SECONDS * 50;
    let mut spent = Duration::ZERO;
    for _ in 0..frames {
        tone.fill(&mut mono_in);
        upmix_to_interleaved(&mono_in, channels, &mut interleaved);
        let start = Instant::now();
        let n = downmix_interleaved(black_box(&interleaved), channels, &mut mono);
        resampler.push(&mono[..n])?;
        resampler.pop(&mut out);
        black_box(&out);
        spent += start.elapsed();
    }
    report(
        &format!(
            "capture  {:.1} kHz x{channels} -> 48 kHz mono",
            f64::from(rate) / 1e3
        ),
        frames,
        spent,
    );
    Ok(())
}

/// 48 kHz mono -> device at `rate` with `channels`, written in 20 ms frames.
fn playback(rate: u32, channels: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut tone = Tone::new(1_000.0, 48_000, 0.5);
    let mut frame = vec![0.0f32; 960];
    let mut mono = vec![0.0f32; rate as usize / 25];
    let mut interleaved = vec![0.0f32; mono.len() * channels];
    let mut resampler = StreamResampler::new(48_000, rate, rate as usize)?;
    let frames = SECONDS * 50;
    let mut spent = Duration::ZERO;
    for _ in 0..frames {
        tone.fill(&mut frame);
        let start = Instant::now();
        resampler.push(black_box(&frame))?;
        let n = resampler.pop(&mut mono);
        upmix_to_interleaved(&mono[..n], channels, &mut interleaved);
        black_box(&interleaved);
        spent += start.elapsed();
    }
    report(
        &format!(
            "playback 48 kHz mono -> {:.1} kHz x{channels}",
            f64::from(rate) / 1e3
        ),
        frames,
        spent,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --benches` runs benches with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("audio_resample: run with `cargo bench` for figures");
        return Ok(());
    }
    println!("{SECONDS} s of audio each; one frame is 20 ms");
    capture(44_100, 2)?;
    playback(44_100, 2)?;
    capture(48_000, 2)?;
    playback(48_000, 2)?;
    capture(16_000, 1)?;
    playback(16_000, 1)?;
    Ok(())
}
