//! Signal analysis for tests and call quality checks: level and dominant frequency.

use std::f64::consts::TAU;

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
