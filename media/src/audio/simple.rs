//! Sources and sinks with no device and no file: a tone, silence, and a sink that drops audio.

use super::{AudioError, LevelMeter, Sink, Source};
use crate::SAMPLE_RATE;
use crate::tone::Tone;

/// Peak amplitude of `tone:HZ`: half full scale (-6 dBFS).
pub const TONE_AMPLITUDE: f32 = 0.5;

/// `tone:HZ`: an endless sine tone at 48 kHz, half full scale. Not paced.
#[derive(Debug)]
pub struct ToneSource {
    tone: Tone,
    meter: LevelMeter,
}

impl ToneSource {
    /// A tone at `hz`.
    pub fn new(hz: f64) -> Self {
        Self {
            tone: Tone::new(hz, SAMPLE_RATE, TONE_AMPLITUDE),
            meter: LevelMeter::new(),
        }
    }
}

impl Source for ToneSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        self.tone.fill(frame);
        self.meter.update(frame);
        Ok(frame.len())
    }

    fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

/// `silence`: endless zeros. Not paced.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilenceSource;

impl SilenceSource {
    /// Silence.
    pub fn new() -> Self {
        Self
    }
}

impl Source for SilenceSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        frame.fill(0.0);
        Ok(frame.len())
    }

    /// A meter that stays at zero.
    fn meter(&self) -> LevelMeter {
        LevelMeter::new()
    }
}

/// `null`: drops everything, but meters it and counts the samples.
#[derive(Debug, Default)]
pub struct NullSink {
    meter: LevelMeter,
    samples: u64,
}

impl NullSink {
    /// A sink that drops audio.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.samples
    }
}

impl Sink for NullSink {
    fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        self.meter.update(frame);
        self.samples += frame.len() as u64;
        Ok(())
    }

    fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}
