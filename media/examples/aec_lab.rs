//! The canceller against echo paths from 0 to -30 dB, in virtual time: far-end speech (four
//! seeds) through a pure delay of 104.6 ms and a gain, with or without a -70 dBFS microphone
//! floor, through a [`VoiceProcessor`] with everything on. Prints the ERLE from 2 s on (the
//! microphone's energy against the output's) per case, and per second for the first seed.
//!
//! `cargo run --release -p media --example aec_lab`. The figures are in the README ("Sound").
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use media::processing::synth::{self, Talker};
use media::processing::{ProcessingConfig, VoiceProcessor};

const FS: usize = 48_000;
const FRAME: usize = 960;
/// 104.6 ms: about what a PulseAudio null sink and its monitor put between play and capture.
const DELAY: usize = 5_022;

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|s| f64::from(*s).powi(2)).sum()
}

fn erle(mic: &[f32], out: &[f32]) -> f64 {
    10.0 * (energy(mic) / energy(out).max(1e-20)).log10()
}

/// ERLE from 2 s on, and per second.
fn run(seed: u64, gain: f32, floor: bool) -> (f64, Vec<f64>) {
    let seconds = 16;
    let far = synth::speech(&Talker::LOW, seed, seconds * FS).samples;
    let noise = synth::stationary_noise(7, far.len());
    let mic: Vec<f32> = (0..far.len())
        .map(|i| {
            let echo = if i >= DELAY {
                gain * far[i - DELAY]
            } else {
                0.0
            };
            echo + if floor { 3.16e-4 * noise[i] } else { 0.0 }
        })
        .collect();
    let mut processor = VoiceProcessor::new(ProcessingConfig::default());
    let mut out = mic.clone();
    for (played, frame) in far.chunks_exact(FRAME).zip(out.chunks_exact_mut(FRAME)) {
        processor.render(played);
        processor.capture(frame);
    }
    let per_second = (0..seconds)
        .map(|k| erle(&mic[k * FS..(k + 1) * FS], &out[k * FS..(k + 1) * FS]))
        .collect();
    (erle(&mic[2 * FS..], &out[2 * FS..]), per_second)
}

fn main() {
    let seeds = [11, 61, 63, 64];
    println!("ERLE from 2 s on, dB (seeds {seeds:?}); echo delay 104.6 ms, everything on");
    for (gain, path) in [
        (1.0, "0 dB"),
        (0.5, "-6 dB"),
        (0.1, "-20 dB"),
        (0.03, "-30 dB"),
    ] {
        for floor in [false, true] {
            let figures: Vec<String> = seeds
                .iter()
                .map(|&seed| format!("{:5.1}", run(seed, gain, floor).0))
                .collect();
            println!(
                "echo path {path:>6}, {:<20} {}",
                if floor {
                    "floor -70 dBFS:"
                } else {
                    "no noise:"
                },
                figures.join(" ")
            );
        }
    }
    let (_, per_second) = run(seeds[0], 1.0, false);
    let per_second: Vec<String> = per_second.iter().map(|e| format!("{e:.0}")).collect();
    println!(
        "seed {}, 0 dB, per second (silent seconds read below 0): {}",
        seeds[0],
        per_second.join(" ")
    );
}
