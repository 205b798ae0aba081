//! A sine tone generator: the headless `tone:HZ` source and the test signal of the pipeline.

use std::f64::consts::TAU;

/// Generates a continuous sine tone, frame after frame, with no phase jump between frames.
#[derive(Debug, Clone)]
pub struct Tone {
    phase: f64,
    step: f64,
    amplitude: f32,
}

impl Tone {
    /// A tone of `frequency_hz` at `sample_rate`, with peak `amplitude` (0.0 to 1.0 of full scale).
    pub fn new(frequency_hz: f64, sample_rate: u32, amplitude: f32) -> Self {
        Self {
            phase: 0.0,
            step: TAU * frequency_hz / f64::from(sample_rate),
            amplitude: amplitude.clamp(0.0, 1.0),
        }
    }

    /// Fills `out` with the next samples of the tone.
    pub fn fill(&mut self, out: &mut [f32]) {
        for sample in out {
            *sample = self.amplitude * self.phase.sin() as f32;
            self.phase = (self.phase + self.step) % TAU;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{dominant_frequency, rms};

    #[test]
    fn tone_has_its_frequency_and_level() {
        let mut tone = Tone::new(440.0, 48_000, 0.5);
        let mut buf = vec![0.0; 48_000];
        // Filled in uneven pieces: the phase must carry over between calls.
        for chunk in buf.chunks_mut(777) {
            tone.fill(chunk);
        }
        let f = dominant_frequency(&buf, 48_000, 100.0, 4_000.0, 5.0);
        assert!((f - 440.0).abs() <= 5.0, "dominant frequency {f}");
        let level = rms(&buf);
        assert!((level - 0.5 / 2f32.sqrt()).abs() < 0.01, "rms {level}");
    }
}
