//! Which tone a recorded WAV carries, for the call tests (each side sends its own tone; what
//! the other side recorded must carry it). The analysis is [`media::analysis`]'s
//! ([`tone_fraction`], [`tone_timeline`]: 100 ms windows, as every test judges them); this
//! module only reads the WAV and cuts off the call's setup or keeps its end.

use std::path::Path;
use std::time::Duration;

use media::analysis::{last, skip, tone_fraction, tone_timeline};
use media::audio::WavSource;

/// The sample rate of the WAVs the headless client records.
pub const RATE: u32 = 48_000;

/// The WAV's samples; panics with the path when it cannot be read.
fn read(path: &Path) -> Vec<f32> {
    WavSource::read_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fraction of the 100 ms windows of the WAV at `path`, from `from_s` seconds on (negative:
/// only the last `-from_s` seconds), that carry `hz`.
pub fn fraction(path: &Path, hz: f64, from_s: f64) -> f64 {
    let samples = read(path);
    let span = Duration::from_secs_f64(from_s.abs());
    let part = if from_s >= 0.0 {
        skip(&samples, RATE, span)
    } else {
        last(&samples, RATE, span)
    };
    tone_fraction(part, hz)
}

/// One character per 100 ms window of the WAV at `path`: `#` where `hz` dominates, `.` where
/// it does not (printed by tests, for diagnosis when a check fails).
pub fn timeline(path: &Path, hz: f64) -> String {
    tone_timeline(&read(path), hz)
}
