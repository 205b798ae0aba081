//! A level meter shared between the audio side and the GUI through atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// How much of the previous peak is kept per update (a falling needle, not a flicker).
const PEAK_DECAY: f32 = 0.85;

/// Peak and RMS of recent audio, full scale 1.0. Cheap to clone; every clone sees the same
/// values. Updating and reading take no lock and allocate nothing, so the capture callback can
/// update it and the GUI read it at its frame rate.
#[derive(Debug, Clone, Default)]
pub struct LevelMeter {
    inner: Arc<Levels>,
}

#[derive(Debug, Default)]
struct Levels {
    peak: AtomicU32,
    rms: AtomicU32,
}

impl LevelMeter {
    /// A meter reading zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the meter one block of samples (one callback or one frame).
    pub fn update(&self, samples: &[f32]) {
        if samples.is_empty() {
            return;
        }
        let mut peak = 0.0f32;
        let mut sum = 0.0f32;
        for &s in samples {
            peak = peak.max(s.abs());
            sum += s * s;
        }
        self.update_from(peak, sum, samples.len());
    }

    /// Feeds the meter a block already measured: its peak, sum of squares and length.
    pub(crate) fn update_from(&self, peak: f32, sum_squares: f32, len: usize) {
        if len == 0 {
            return;
        }
        let rms = (sum_squares / len as f32).sqrt();
        let old_peak = f32::from_bits(self.inner.peak.load(Ordering::Relaxed));
        let peak = peak.max(old_peak * PEAK_DECAY);
        self.inner.peak.store(peak.to_bits(), Ordering::Relaxed);
        self.inner.rms.store(rms.to_bits(), Ordering::Relaxed);
    }

    /// Peak of recent audio (decaying), 0.0 to 1.0 (more if the source clips).
    pub fn peak(&self) -> f32 {
        f32::from_bits(self.inner.peak.load(Ordering::Relaxed))
    }

    /// RMS of the last block, 0.0 to 1.0.
    pub fn rms(&self) -> f32 {
        f32::from_bits(self.inner.rms.load(Ordering::Relaxed))
    }

    /// RMS in dBFS (-inf for silence clamped to -100).
    pub fn rms_dbfs(&self) -> f32 {
        (20.0 * self.rms().max(1e-5).log10()).max(-100.0)
    }
}
