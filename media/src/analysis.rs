//! Signal analysis for tests and call quality checks: level, the power at a frequency, the
//! dominant frequency, and whether a tone is heard, window by window.
//!
//! The call tests ask one question of what an end heard: in what share of its 100 ms windows is
//! the other end's tone the loudest frequency (and not silence)? [`tone_fraction`] answers it
//! with the checks every test uses ([`ToneCheck::default`]); [`tone_timeline`] draws the same
//! verdicts as a line of text for a failure message, and [`gaps`] finds where the tone dropped
//! out. [`skip`] and [`last`] cut off a call's setup or keep its end.
//!
//! ```
//! use std::time::Duration;
//! use media::analysis::{skip, tone_fraction, tone_timeline};
//! use media::tone::Tone;
//!
//! // One second of silence (the call's setup), then two of a 440 Hz tone.
//! let mut heard = vec![0.0f32; 48_000 * 3];
//! Tone::new(440.0, 48_000, 0.5).fill(&mut heard[48_000..]);
//! assert_eq!(tone_fraction(&heard, 440.0), 2.0 / 3.0);
//! assert_eq!(tone_fraction(skip(&heard, 48_000, Duration::from_secs(1)), 440.0), 1.0);
//! assert_eq!(tone_fraction(&heard, 660.0), 0.0);
//! assert_eq!(&tone_timeline(&heard, 440.0)[8..12], "..##");
//! ```

use std::f64::consts::TAU;
use std::ops::Range;
use std::time::Duration;

/// Root mean square of `samples` (0.0 for an empty slice).
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// Power of `samples` at `frequency_hz`, by the Goertzel algorithm, normalised by length.
pub fn goertzel_power(samples: &[f32], sample_rate: u32, frequency_hz: f64) -> f64 {
    let coeff = 2.0 * (TAU * frequency_hz / f64::from(sample_rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len().max(1) as f64;
    power / (n * n)
}

/// Peak amplitude of the `frequency_hz` component of `samples` (a full-scale sine at that
/// frequency reads about 1.0), from [`goertzel_power`].
pub fn tone_amplitude(samples: &[f32], sample_rate: u32, frequency_hz: f64) -> f64 {
    2.0 * goertzel_power(samples, sample_rate, frequency_hz)
        .max(0.0)
        .sqrt()
}

/// The frequency between `low_hz` and `high_hz`, in steps of `step_hz`, that carries the most
/// power in `samples`.
pub fn dominant_frequency(
    samples: &[f32],
    sample_rate: u32,
    low_hz: f64,
    high_hz: f64,
    step_hz: f64,
) -> f64 {
    let mut best = (low_hz, f64::MIN);
    let mut f = low_hz;
    while f <= high_hz {
        let p = goertzel_power(samples, sample_rate, f);
        if p > best.1 {
            best = (f, p);
        }
        f += step_hz;
    }
    best.0
}

/// How a window of audio is judged to carry a tone: loud enough, and the tone the loudest
/// frequency in the band searched. [`ToneCheck::default`] is what the call tests use: 48 kHz,
/// 100 ms windows, RMS above 0.05, the dominant frequency between 200 Hz and 2 kHz (in 10 Hz
/// steps) within 10 Hz of the tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneCheck {
    /// Sample rate of the audio, Hz.
    pub rate: u32,
    /// Length of a window; audio after the last whole window is not judged.
    pub window: Duration,
    /// RMS at or below which a window is silence, whatever its frequency.
    pub min_rms: f32,
    /// Lowest frequency searched for the dominant one, Hz.
    pub low_hz: f64,
    /// Highest frequency searched, Hz.
    pub high_hz: f64,
    /// Step of the search, Hz.
    pub step_hz: f64,
    /// How far from the tone the dominant frequency may be, Hz.
    pub tolerance_hz: f64,
}

impl Default for ToneCheck {
    fn default() -> Self {
        Self {
            rate: 48_000,
            window: Duration::from_millis(100),
            min_rms: 0.05,
            low_hz: 200.0,
            high_hz: 2_000.0,
            step_hz: 10.0,
            tolerance_hz: 10.0,
        }
    }
}

impl ToneCheck {
    /// Samples in a window (at least 1).
    pub fn window_len(&self) -> usize {
        samples_in(self.rate, self.window).max(1)
    }

    /// The whole windows of `samples`, in order.
    pub fn windows<'a>(&self, samples: &'a [f32]) -> std::slice::ChunksExact<'a, f32> {
        samples.chunks_exact(self.window_len())
    }

    /// The dominant frequency of `window` in the band searched.
    pub fn dominant(&self, window: &[f32]) -> f64 {
        dominant_frequency(window, self.rate, self.low_hz, self.high_hz, self.step_hz)
    }

    /// Whether `window` carries the tone `hz`: not silent, and `hz` dominates.
    pub fn carries(&self, window: &[f32], hz: f64) -> bool {
        rms(window) > self.min_rms && (self.dominant(window) - hz).abs() <= self.tolerance_hz
    }

    /// For each whole window of `samples`, whether it carries the tone `hz`.
    pub fn flags(&self, samples: &[f32], hz: f64) -> Vec<bool> {
        self.windows(samples).map(|w| self.carries(w, hz)).collect()
    }

    /// The share (0.0 to 1.0) of the whole windows of `samples` that carry the tone `hz`; 0.0
    /// when there is not one whole window.
    pub fn fraction(&self, samples: &[f32], hz: f64) -> f64 {
        let flags = self.flags(samples, hz);
        let carrying = flags.iter().filter(|&&f| f).count();
        carrying as f64 / flags.len().max(1) as f64
    }

    /// One character per window: `#` where it carries the tone `hz`, `.` where it does not.
    pub fn timeline(&self, samples: &[f32], hz: f64) -> String {
        self.windows(samples)
            .map(|w| if self.carries(w, hz) { '#' } else { '.' })
            .collect()
    }

    /// The RMS and the dominant frequency of each whole window, for a failure message.
    pub fn describe(&self, samples: &[f32]) -> Vec<(f32, f64)> {
        self.windows(samples)
            .map(|w| (rms(w), self.dominant(w)))
            .collect()
    }
}

/// The share of the 100 ms windows of 48 kHz `samples` that carry the tone `hz`, as
/// [`ToneCheck::default`] judges them.
pub fn tone_fraction(samples: &[f32], hz: f64) -> f64 {
    ToneCheck::default().fraction(samples, hz)
}

/// The 100 ms windows of 48 kHz `samples` as a line, `#` where the tone `hz` is heard and `.`
/// where it is not, as [`ToneCheck::default`] judges them.
pub fn tone_timeline(samples: &[f32], hz: f64) -> String {
    ToneCheck::default().timeline(samples, hz)
}

/// The gaps in a sequence of per-window verdicts ([`ToneCheck::flags`]): the runs of `false`
/// between the first `true` and the last, as ranges of window indexes. Nothing before the first
/// `true` or after the last counts as a gap.
pub fn gaps(flags: &[bool]) -> Vec<Range<usize>> {
    let mut gaps = Vec::new();
    let mut start = None;
    let mut seen = false;
    for (i, &on) in flags.iter().enumerate() {
        match (on, start) {
            (true, Some(s)) => {
                gaps.push(s..i);
                start = None;
            }
            (false, None) if seen => start = Some(i),
            _ => {}
        }
        seen |= on;
    }
    gaps
}

/// The longest run of windows of `window` length (the last one may be shorter) whose RMS is
/// below `threshold`, as a duration.
pub fn longest_silence(samples: &[f32], rate: u32, window: Duration, threshold: f32) -> Duration {
    let len = samples_in(rate, window).max(1);
    let (mut longest, mut run) = (0u32, 0u32);
    for w in samples.chunks(len) {
        if rms(w) < threshold {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    window * longest
}

/// `samples` without their first `duration` (empty if they are shorter): a call's setup cut
/// off.
pub fn skip(samples: &[f32], rate: u32, duration: Duration) -> &[f32] {
    samples.get(samples_in(rate, duration)..).unwrap_or(&[])
}

/// The last `duration` of `samples` (all of them if they are shorter): a call's end.
pub fn last(samples: &[f32], rate: u32, duration: Duration) -> &[f32] {
    &samples[samples.len().saturating_sub(samples_in(rate, duration))..]
}

/// Samples in `duration` at `rate`, rounded down.
fn samples_in(rate: u32, duration: Duration) -> usize {
    (u128::from(rate) * duration.as_nanos() / 1_000_000_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tone::Tone;

    fn tone(hz: f64, seconds: f64) -> Vec<f32> {
        let mut samples = vec![0.0; (48_000.0 * seconds) as usize];
        Tone::new(hz, 48_000, 0.5).fill(&mut samples);
        samples
    }

    #[test]
    fn silence_has_no_level() {
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(rms(&[0.0; 480]), 0.0);
    }

    #[test]
    fn goertzel_separates_two_tones() {
        let rate = 48_000;
        let samples: Vec<f32> = (0..9_600)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (0.8 * (TAU * 1_000.0 * t).sin() + 0.2 * (TAU * 300.0 * t).sin()) as f32
            })
            .collect();
        let p1000 = goertzel_power(&samples, rate, 1_000.0);
        let p300 = goertzel_power(&samples, rate, 300.0);
        let p700 = goertzel_power(&samples, rate, 700.0);
        assert!(p1000 > 10.0 * p300, "{p1000} vs {p300}");
        assert!(p300 > 100.0 * p700, "{p300} vs {p700}");
        assert_eq!(
            dominant_frequency(&samples, rate, 100.0, 2_000.0, 10.0),
            1_000.0
        );
        let a = tone_amplitude(&samples, rate, 1_000.0);
        assert!((a - 0.8).abs() < 0.01, "amplitude {a}");
    }

    #[test]
    fn windows_are_judged_by_level_and_frequency() {
        // 0.5 s of 440 Hz, 0.3 s of silence, 0.5 s of 440 Hz at 1/100 of the level, 0.5 s of
        // 660 Hz, 0.25 s of 440 Hz (the last 50 ms not a whole window).
        let mut heard = tone(440.0, 0.5);
        heard.extend(vec![0.0; 14_400]);
        heard.extend(tone(440.0, 0.5).iter().map(|s| s / 100.0));
        heard.extend(tone(660.0, 0.5));
        heard.extend(tone(440.0, 0.25));
        let check = ToneCheck::default();
        assert_eq!(check.window_len(), 4_800);
        assert_eq!(tone_timeline(&heard, 440.0), "#####.............##");
        assert_eq!(tone_timeline(&heard, 660.0), ".............#####..");
        assert_eq!(tone_fraction(&heard, 440.0), 7.0 / 20.0);
        assert_eq!(tone_fraction(&heard, 660.0), 5.0 / 20.0);
        assert_eq!(tone_fraction(&[], 440.0), 0.0);
        let described = check.describe(&heard);
        assert_eq!(described.len(), 20);
        assert_eq!(described[0].1, 440.0);
        assert!((described[0].0 - 0.354).abs() < 0.01);
        assert_eq!(described[5].0, 0.0);
        assert_eq!(gaps(&check.flags(&heard, 440.0)), vec![5..18]);
    }

    #[test]
    fn gaps_are_the_dropouts_between_first_and_last() {
        let f = |s: &str| s.chars().map(|c| c == '#').collect::<Vec<_>>();
        assert_eq!(gaps(&f("..##..#.##...")), [4..6, 7..8]);
        assert_eq!(gaps(&f("....")), []);
        assert_eq!(gaps(&f("####")), []);
        assert_eq!(gaps(&[]), []);
    }

    #[test]
    fn silence_is_measured_and_audio_cut() {
        let mut heard = tone(440.0, 0.1);
        heard.extend(vec![0.0; 1_440]);
        heard.extend(tone(440.0, 0.1));
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            ms(longest_silence(
                &heard,
                48_000,
                Duration::from_millis(5),
                0.05
            )),
            30
        );
        assert_eq!(
            longest_silence(&tone(440.0, 0.2), 48_000, Duration::from_millis(5), 0.05),
            Duration::ZERO
        );
        let second = Duration::from_secs(1);
        assert_eq!(
            skip(&heard, 48_000, Duration::from_millis(100)).len(),
            6_240
        );
        assert!(skip(&heard, 48_000, second).is_empty());
        assert_eq!(
            last(&heard, 48_000, Duration::from_millis(100)),
            &heard[6_240..]
        );
        assert_eq!(last(&heard, 48_000, second).len(), heard.len());
    }
}
