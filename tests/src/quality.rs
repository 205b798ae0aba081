//! Speech quality against libopus alone: PESQ-WB (ITU-T P.862.2) through the `pesq` Python
//! package, and a synthetic talker to score.
//!
//! `scripts/setup` makes a virtual environment at `target/quality-venv` with `pesq` and
//! `numpy` (set `PINHOLE_QUALITY_PYTHON` to use another interpreter). [`python`] says where it
//! is, or what is missing (a test hands that to [`crate::prereq::missing`]); [`pesq_wb`] writes
//! the two signals as 16 kHz WAVs (PESQ-WB's rate) and prints the score the package computes.
//!
//! [`speech`] makes speech-like audio without a recording: voiced syllables (a glottal pulse
//! train with a moving pitch through three moving formants), fricatives (shaped noise) and
//! pauses, which is what codecs, concealment and FEC are tuned for; a steady tone is not.

use std::f64::consts::PI;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sample rate of the signals passed in (the pipeline's).
pub const RATE: u32 = 48_000;
/// PESQ-WB's sample rate.
pub const PESQ_RATE: u32 = 16_000;

/// The Python interpreter with `pesq` and `numpy`, or what is missing (for
/// [`crate::prereq::missing`]).
pub fn python() -> Result<PathBuf, String> {
    let python = match std::env::var_os("PINHOLE_QUALITY_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/quality-venv/bin/python"),
    };
    if !python.exists() {
        return Err(format!(
            "the PESQ environment {} is missing (scripts/setup makes it)",
            python.display()
        ));
    }
    let ok = Command::new(&python)
        .args(["-c", "import pesq, numpy"])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !ok.status.success() {
        return Err(format!(
            "{} has no pesq/numpy (scripts/setup installs them): {}",
            python.display(),
            String::from_utf8_lossy(&ok.stderr).trim()
        ));
    }
    Ok(python)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

const SCORE: &str = r#"
import sys, wave
import numpy as np
from pesq import pesq
def read(path):
    with wave.open(path) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return w.getframerate(), data.astype(np.float64) / 32768.0
rate, ref = read(sys.argv[1])
_, deg = read(sys.argv[2])
print(pesq(rate, ref, deg, 'wb'))
"#;

/// PESQ-WB (MOS-LQO) of `degraded` against `reference`, both 48 kHz mono; the WAVs are written
/// into `dir` as `NAME-ref.wav` and `NAME-deg.wav` (kept, to listen to).
pub fn pesq_wb(
    python: &Path,
    dir: &Path,
    name: &str,
    reference: &[f32],
    degraded: &[f32],
) -> Result<f64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let r = dir.join(format!("{name}-ref.wav"));
    let d = dir.join(format!("{name}-deg.wav"));
    write_wav(&r, &to_16k(reference), PESQ_RATE).map_err(|e| format!("{}: {e}", r.display()))?;
    write_wav(&d, &to_16k(degraded), PESQ_RATE).map_err(|e| format!("{}: {e}", d.display()))?;
    let out = Command::new(python)
        .arg("-c")
        .arg(SCORE)
        .arg(&r)
        .arg(&d)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "pesq failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|_| format!("pesq printed {text:?}"))
}

/// Writes 16-bit mono PCM.
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> std::io::Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        let v = (f64::from(s).clamp(-1.0, 1.0) * 32_767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::File::create(path)?.write_all(&out)
}

/// The samples of a 16-bit PCM mono WAV (as `wav:PATH` sinks write), in [-1, 1).
pub fn read_wav(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(format!("{}: not a WAV file", path.display()));
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        if id == b"fmt " && body.len() >= 16 {
            format = Some((
                u16::from_le_bytes([body[0], body[1]]),
                u16::from_le_bytes([body[2], body[3]]),
                u16::from_le_bytes([body[14], body[15]]),
            ));
        } else if id == b"data" {
            if format != Some((1, 1, 16)) {
                return Err(format!(
                    "{}: {format:?}, expected 16-bit PCM mono",
                    path.display()
                ));
            }
            return Ok(body
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
                .collect());
        }
        at += 8 + len + (len & 1);
    }
    Err(format!("{}: no data chunk", path.display()))
}

/// 48 kHz to 16 kHz: a windowed-sinc low-pass at 7.6 kHz, then every third sample.
pub fn to_16k(x: &[f32]) -> Vec<f32> {
    const TAPS: usize = 191;
    let half = (TAPS / 2) as isize;
    let cutoff = 7_600.0 / f64::from(RATE);
    let h: Vec<f64> = (0..TAPS)
        .map(|i| {
            let n = i as f64 - half as f64;
            let sinc = if n == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * PI * cutoff * n).sin() / (PI * n)
            };
            let w = 0.42 - 0.5 * (2.0 * PI * i as f64 / (TAPS - 1) as f64).cos()
                + 0.08 * (4.0 * PI * i as f64 / (TAPS - 1) as f64).cos();
            sinc * w
        })
        .collect();
    (0..x.len() / 3)
        .map(|k| {
            let c = (k * 3) as isize;
            let mut acc = 0.0;
            for (i, &hi) in h.iter().enumerate() {
                let j = c + i as isize - half;
                if j >= 0 && (j as usize) < x.len() {
                    acc += hi * f64::from(x[j as usize]);
                }
            }
            acc as f32
        })
        .collect()
}

/// `seconds` of speech-like audio at 48 kHz, the same for the same `seed`: words of two to four
/// syllables with pauses between them, peaks near -6 dBFS.
pub fn speech(seconds: f64, seed: u64) -> Vec<f32> {
    let n = (seconds * f64::from(RATE)) as usize;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = vec![0.0f32; n];
    let fs = f64::from(RATE);
    // Vowels as (F1, F2, F3) in Hz.
    const VOWELS: [(f64, f64, f64); 6] = [
        (730.0, 1_090.0, 2_440.0),
        (270.0, 2_290.0, 3_010.0),
        (530.0, 1_840.0, 2_480.0),
        (570.0, 840.0, 2_410.0),
        (300.0, 870.0, 2_240.0),
        (660.0, 1_720.0, 2_410.0),
    ];
    let mut t = (0.2 * fs) as usize;
    let mut phase = 0.0f64;
    let mut formants = [
        Resonator::default(),
        Resonator::default(),
        Resonator::default(),
    ];
    let mut fricative = Resonator::default();
    while t < n {
        let syllables = 2 + rng.below(3);
        let base_pitch = 100.0 + 80.0 * rng.unit();
        for s in 0..syllables {
            // A consonant first, half the time: 40-90 ms of shaped noise.
            if rng.unit() < 0.5 {
                let len = ((0.04 + 0.05 * rng.unit()) * fs) as usize;
                let centre = 2_500.0 + 3_500.0 * rng.unit();
                fricative.set(centre, 1_500.0, fs);
                for i in 0..len.min(n.saturating_sub(t)) {
                    let env = (PI * i as f64 / len as f64).sin();
                    let v = fricative.run(rng.unit() * 2.0 - 1.0) * 0.08 * env;
                    out[t + i] += v as f32;
                }
                t += len;
            }
            // A vowel: 120-280 ms, pitch gliding, formants moving towards the next vowel.
            let len = ((0.12 + 0.16 * rng.unit()) * fs) as usize;
            let (a, b) = (VOWELS[rng.below(6)], VOWELS[rng.below(6)]);
            let fall = if s + 1 == syllables { 0.75 } else { 1.0 };
            for i in 0..len.min(n.saturating_sub(t)) {
                let x = i as f64 / len as f64;
                let pitch = base_pitch * (1.0 + 0.15 * (PI * x).sin()) * (1.0 - (1.0 - fall) * x);
                phase += pitch / fs;
                // A glottal pulse a period: a short decaying click rich in harmonics.
                let p = phase.fract();
                let glottal = if p < 0.4 {
                    (PI * p / 0.4).sin().powi(2)
                } else {
                    0.0
                } - 0.25;
                let mut v = 0.0;
                for (k, r) in formants.iter_mut().enumerate() {
                    let (fa, fb) = match k {
                        0 => (a.0, b.0),
                        1 => (a.1, b.1),
                        _ => (a.2, b.2),
                    };
                    r.set(fa + (fb - fa) * x, 60.0 + 40.0 * k as f64, fs);
                    v += r.run(glottal) / (1.0 + k as f64);
                }
                let env = (x * 12.0).min(1.0) * ((1.0 - x) * 8.0).min(1.0);
                out[t + i] += (v * 0.05 * env + (rng.unit() - 0.5) * 0.002 * env) as f32;
            }
            t += len;
        }
        // A pause between words: 150-600 ms.
        t += ((0.15 + 0.45 * rng.unit()) * fs) as usize;
    }
    let peak = out.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for v in &mut out {
        *v *= 0.5 / peak;
    }
    out
}

/// A two-pole resonator (a formant).
#[derive(Default)]
struct Resonator {
    a1: f64,
    a2: f64,
    gain: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn set(&mut self, freq: f64, bandwidth: f64, fs: f64) {
        let r = (-PI * bandwidth / fs).exp();
        self.a1 = 2.0 * r * (2.0 * PI * freq / fs).cos();
        self.a2 = -r * r;
        self.gain = 1.0 - r;
    }

    fn run(&mut self, x: f64) -> f64 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n
    }
}

/// Seeded packet loss: which of `packets` packets are lost, each with probability `rate`,
/// independently (the pattern the quality tests give both the product and libopus alone).
pub fn loss_pattern(packets: usize, rate: f64, seed: u64) -> Vec<bool> {
    let mut rng = Rng(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1);
    (0..packets).map(|_| rng.unit() < rate).collect()
}

/// `heard` shifted to line up with `reference` (48 kHz): the lag of 20 ms energy envelopes
/// (up to `max_lag_frames` frames) first, then the best lag of the samples' cross-correlation
/// within a frame of it (summed over every `stride`th sample); cut to `reference`'s length.
pub fn aligned(reference: &[f32], heard: &[f32], max_lag_frames: usize, stride: usize) -> Vec<f32> {
    const FRAME: usize = RATE as usize / 50;
    let envelope = |x: &[f32]| -> Vec<f64> {
        x.chunks(FRAME)
            .map(|c| c.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
            .collect()
    };
    let (er, eh) = (envelope(reference), envelope(heard));
    let frames =
        |lag: usize| -> f64 { er.iter().zip(eh.iter().skip(lag)).map(|(a, b)| a * b).sum() };
    let coarse = (0..max_lag_frames.min(eh.len()))
        .max_by(|&a, &b| frames(a).total_cmp(&frames(b)))
        .unwrap_or(0)
        * FRAME;
    let n = reference
        .len()
        .min(heard.len().saturating_sub(coarse + FRAME));
    let corr = |lag: usize| -> f64 {
        (0..n)
            .step_by(stride.max(1))
            .map(|i| f64::from(reference[i]) * f64::from(heard[i + lag]))
            .sum()
    };
    let best = (coarse.saturating_sub(FRAME)..coarse + FRAME)
        .max_by(|&a, &b| corr(a).total_cmp(&corr(b)))
        .unwrap_or(coarse);
    let end = (best + reference.len()).min(heard.len());
    heard[best.min(end)..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_has_pauses_and_is_reproducible() {
        let a = speech(3.0, 7);
        assert_eq!(a, speech(3.0, 7));
        assert_ne!(a, speech(3.0, 8));
        let frames: Vec<f32> = a
            .chunks(960)
            .map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt())
            .collect();
        let quiet = frames.iter().filter(|&&r| r < 1e-3).count();
        let loud = frames.iter().filter(|&&r| r > 0.03).count();
        assert!(quiet > 10 && loud > 30, "{quiet} quiet, {loud} loud frames");
    }

    #[test]
    fn wavs_round_trip() {
        let dir = std::env::temp_dir().join(format!("pinhole-quality-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.wav");
        let x: Vec<f32> = (0..1_000).map(|i| (i as f32 / 500.0) - 1.0).collect();
        write_wav(&path, &x, RATE).unwrap();
        let y = read_wav(&path).unwrap();
        assert_eq!(y.len(), x.len());
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decimation_keeps_speech_band_and_removes_aliases() {
        let tone = |f: f64| -> Vec<f32> {
            (0..48_000)
                .map(|i| (2.0 * PI * f * i as f64 / 48_000.0).sin() as f32)
                .collect()
        };
        let rms = |x: &[f32]| (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        assert!((rms(&to_16k(&tone(1_000.0))) - 0.707).abs() < 0.01);
        assert!(rms(&to_16k(&tone(12_000.0))) < 0.01);
    }
}
