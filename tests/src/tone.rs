//! Which tone a recorded WAV carries, window by window, for the call tests (each side sends
//! its own tone; what the other side recorded must carry it). The analysis is
//! [`media::analysis`]'s; this module only cuts a WAV into 100 ms windows.

use std::path::Path;

use media::analysis::{dominant_frequency, rms};
use media::audio::WavSource;

/// The sample rate of the WAVs the headless client records.
pub const RATE: u32 = 48_000;
/// One window: 100 ms.
const WINDOW: usize = RATE as usize / 10;
/// Below this level a window is silence, whatever its spectrum.
const SILENT: f32 = 0.05;

/// For each 100 ms window of `samples`, whether `hz` (within 10 Hz) dominates it and it is
/// not silent.
pub fn windows(samples: &[f32], hz: f64) -> Vec<bool> {
    samples
        .chunks_exact(WINDOW)
        .map(|w| {
            rms(w) > SILENT
                && (dominant_frequency(w, RATE, 200.0, 2_000.0, 10.0) - hz).abs() <= 10.0
        })
        .collect()
}

/// The WAV's samples; panics with the path when it cannot be read.
fn read(path: &Path) -> Vec<f32> {
    WavSource::read_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fraction of the 100 ms windows of the WAV at `path`, from `from_s` seconds on (negative:
/// that many seconds before its end), that carry `hz`.
pub fn fraction(path: &Path, hz: f64, from_s: f64) -> f64 {
    let samples = read(path);
    let offset = (from_s.abs() * f64::from(RATE)) as usize;
    let from = if from_s >= 0.0 {
        offset
    } else {
        samples.len().saturating_sub(offset)
    };
    let windows = windows(samples.get(from..).unwrap_or(&[]), hz);
    let good = windows.iter().filter(|&&w| w).count();
    good as f64 / windows.len().max(1) as f64
}

/// One character per 100 ms window of the WAV at `path`: `#` where `hz` dominates, `.` where
/// it does not (printed by tests, for diagnosis when a check fails).
pub fn timeline(path: &Path, hz: f64) -> String {
    windows(&read(path), hz)
        .into_iter()
        .map(|w| if w { '#' } else { '.' })
        .collect()
}
