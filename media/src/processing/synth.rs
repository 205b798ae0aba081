//! Synthetic speech and noise, deterministic from a seed, for measuring audio processing
//! without recordings: an echo canceller, a noise suppressor and a gain controller each treat
//! speech differently from a tone (a steady tone is "noise" to a noise suppressor and a trivial
//! echo to a canceller), so their tests and benches need something with speech's structure.
//!
//! The model is the classic source-filter one: a glottal pulse train (its pitch following a
//! contour that falls over a phrase and moves per syllable, its spectrum tilted like a real
//! glottis) through a cascade of four formant resonators set per vowel, gliding between vowels;
//! unvoiced consonants are shaped noise bursts; syllables have an attack and decay, words and
//! phrases are separated by pauses. It is not intelligible and scores nothing on PESQ's
//! language model, but it has speech's spectrum, its modulation (3-6 syllables a second) and its
//! pauses, which is what echo cancellers, voice activity detectors and noise estimators key on.

use crate::SAMPLE_RATE;

/// Who speaks: two settings give two distinct voices (for double talk).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Talker {
    /// Mean fundamental frequency, Hz.
    pub pitch_hz: f32,
    /// Formant frequencies are scaled by this (a shorter vocal tract has higher formants).
    pub formant_scale: f32,
    /// Mean syllables per second.
    pub syllable_rate: f32,
}

impl Talker {
    /// A low voice (about 110 Hz, adult male formants).
    pub const LOW: Talker = Talker {
        pitch_hz: 110.0,
        formant_scale: 1.0,
        syllable_rate: 4.0,
    };
    /// A high voice (about 210 Hz, formants 17% higher).
    pub const HIGH: Talker = Talker {
        pitch_hz: 210.0,
        formant_scale: 1.17,
        syllable_rate: 4.6,
    };
}

/// Synthetic speech and where it is active.
#[derive(Debug, Clone)]
pub struct Speech {
    /// 48 kHz mono samples; the active parts' RMS is -20 dBFS.
    pub samples: Vec<f32>,
    /// Per sample: true inside a syllable (voiced or a consonant), false in pauses.
    pub active: Vec<bool>,
}

/// Vowel formants (F1-F4, Hz) of an adult male voice: i, e, a, o, u, schwa.
const VOWELS: [[f32; 4]; 6] = [
    [270.0, 2290.0, 3010.0, 3500.0],
    [530.0, 1840.0, 2480.0, 3500.0],
    [730.0, 1090.0, 2440.0, 3500.0],
    [570.0, 840.0, 2410.0, 3500.0],
    [300.0, 870.0, 2240.0, 3500.0],
    [500.0, 1500.0, 2500.0, 3500.0],
];

/// Formant bandwidths, Hz.
const BANDWIDTHS: [f32; 4] = [70.0, 100.0, 140.0, 200.0];

/// `samples` samples of speech by `talker`, the same for the same seed.
pub fn speech(talker: &Talker, seed: u64, samples: usize) -> Speech {
    let fs = SAMPLE_RATE as f32;
    let mut rng = SplitMix(seed);
    let mut out = vec![0.0f32; samples];
    let mut active = vec![false; samples];

    // Source state.
    let mut phase = 0.0f32;
    let mut tilt = [0.0f32; 2];
    let mut last_source = 0.0f32;
    // Filter state: four resonators, their current and target formants.
    let mut resonators = [Resonator::default(); 4];
    let mut formants = VOWELS[5].map(|f| f * talker.formant_scale);
    let mut fricative = Resonator::default();

    let mut t = 0usize;
    let mut phrase_pos = 0.0f32; // 0..1 over a phrase, for the pitch's declination
    let mut phrase_len = 2.0 + 2.0 * rng.unit();
    while t < samples {
        // A word: 1-3 syllables, then a pause.
        let syllables = 1 + (rng.unit() * 3.0) as usize;
        for _ in 0..syllables {
            let dur = (0.6 + 0.8 * rng.unit()) / talker.syllable_rate;
            let consonant = if rng.unit() < 0.5 {
                0.03 + 0.05 * rng.unit()
            } else {
                0.0
            };
            let vowel = VOWELS[(rng.unit() * VOWELS.len() as f32) as usize % VOWELS.len()]
                .map(|f| f * talker.formant_scale);
            let syllable_pitch = talker.pitch_hz * (1.0 + 0.12 * (rng.unit() - 0.5) * 2.0);
            let fric_centre = 3500.0 + 2500.0 * rng.unit();
            fricative.set(fric_centre, 1500.0, fs);
            let n_cons = (consonant * fs) as usize;
            let n_vowel = (dur * fs) as usize;
            for i in 0..n_cons + n_vowel {
                if t >= samples {
                    break;
                }
                let sample = if i < n_cons {
                    // Unvoiced consonant: shaped noise, short rise and fall.
                    let x = i as f32 / n_cons as f32;
                    let env = (std::f32::consts::PI * x).sin();
                    0.35 * env * fricative.step(rng.gaussian())
                } else {
                    let j = i - n_cons;
                    let x = j as f32 / n_vowel as f32;
                    // Glide the formants toward the vowel over the first 40 ms.
                    let glide = 1.0 - (-1.0 / (0.012 * fs)).exp();
                    for k in 0..4 {
                        formants[k] += (vowel[k] - formants[k]) * glide;
                    }
                    if j.is_multiple_of(48) {
                        for k in 0..4 {
                            resonators[k].set(formants[k], BANDWIDTHS[k], fs);
                        }
                    }
                    // Pitch: the syllable's, falling over the phrase, rising then falling
                    // within the syllable, with a little jitter.
                    let f0 = syllable_pitch
                        * (1.1 - 0.25 * phrase_pos)
                        * (1.0 + 0.06 * (std::f32::consts::PI * x).sin())
                        * (1.0 + 0.01 * rng.gaussian());
                    phase += f0 / fs;
                    let pulse = if phase >= 1.0 {
                        phase -= 1.0;
                        1.0
                    } else {
                        0.0
                    };
                    // Glottal tilt (two poles near 0) and lip radiation (a difference).
                    tilt[0] += 0.12 * (pulse - tilt[0]);
                    tilt[1] += 0.12 * (tilt[0] - tilt[1]);
                    let source = tilt[1] - last_source + 0.002 * rng.gaussian();
                    last_source = tilt[1];
                    let mut y = source;
                    for r in resonators.iter_mut() {
                        y = r.step(y);
                    }
                    // Syllable envelope: 30 ms attack, a decay over the last third.
                    let attack = (j as f32 / (0.03 * fs)).min(1.0);
                    let decay = ((1.0 - x) * 3.0).min(1.0);
                    y * attack * decay
                };
                out[t] = sample;
                active[t] = true;
                t += 1;
            }
            phrase_pos += dur / phrase_len;
        }
        // Pause between words, longer at the end of a phrase.
        let pause = if phrase_pos >= 1.0 {
            phrase_pos = 0.0;
            phrase_len = 2.0 + 2.0 * rng.unit();
            0.4 + 0.5 * rng.unit()
        } else {
            0.08 + 0.2 * rng.unit()
        };
        t += (pause * fs) as usize;
    }

    // Scale the active parts to -20 dBFS RMS.
    let (sum, n) = out
        .iter()
        .zip(&active)
        .filter(|(_, a)| **a)
        .fold((0.0f64, 0usize), |(s, n), (x, _)| {
            (s + f64::from(*x) * f64::from(*x), n + 1)
        });
    if n > 0 && sum > 0.0 {
        let gain = (0.1 / (sum / n as f64).sqrt()) as f32;
        out.iter_mut().for_each(|x| *x = soft_limit(*x * gain));
    }
    Speech {
        samples: out,
        active,
    }
}

/// Peaks above 0.7 bent smoothly toward 1 (the pulse train's rare peaks reach 20 dB above the
/// RMS; real speech's crest factor is a little lower).
fn soft_limit(x: f32) -> f32 {
    const KNEE: f32 = 0.7;
    if x.abs() <= KNEE {
        x
    } else {
        x.signum() * (KNEE + (1.0 - KNEE) * ((x.abs() - KNEE) / (1.0 - KNEE)).tanh())
    }
}

/// `samples` samples of stationary noise with unit RMS and a gently falling spectrum (white
/// noise through a one-pole low-pass at about 1.5 kHz, plus a white floor): like a fan or an air
/// conditioner.
pub fn stationary_noise(seed: u64, samples: usize) -> Vec<f32> {
    let mut rng = SplitMix(seed ^ 0x006e_6f69_7365);
    let a = 1.0 - (-2.0 * std::f32::consts::PI * 1500.0 / SAMPLE_RATE as f32).exp();
    let mut lp = 0.0f32;
    let mut out: Vec<f32> = (0..samples)
        .map(|_| {
            let w = rng.gaussian();
            lp += a * (w - lp);
            lp * 2.0 + 0.2 * rng.gaussian()
        })
        .collect();
    let rms = (out.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / samples.max(1) as f64)
        .sqrt() as f32;
    if rms > 0.0 {
        out.iter_mut().for_each(|x| *x /= rms);
    }
    out
}

/// A two-pole resonator with unit gain at its centre frequency.
#[derive(Debug, Clone, Copy, Default)]
struct Resonator {
    a1: f32,
    a2: f32,
    gain: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn set(&mut self, centre_hz: f32, bandwidth_hz: f32, fs: f32) {
        let r = (-std::f32::consts::PI * bandwidth_hz / fs).exp();
        let w = 2.0 * std::f32::consts::PI * centre_hz / fs;
        self.a1 = 2.0 * r * w.cos();
        self.a2 = -r * r;
        // |1 - a1 z^-1 - a2 z^-2| at z = e^{jw}: the peak's inverse gain.
        let (c1, s1, c2, s2) = (w.cos(), w.sin(), (2.0 * w).cos(), (2.0 * w).sin());
        let re = 1.0 - self.a1 * c1 - self.a2 * c2;
        let im = self.a1 * s1 + self.a2 * s2;
        self.gain = (re * re + im * im).sqrt();
    }

    fn step(&mut self, x: f32) -> f32 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// SplitMix64: a small, fast, seedable generator (no dependency on a random crate's API).
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Approximately standard normal (sum of four uniforms, scaled).
    fn gaussian(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3.0f32.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_deterministic_levelled_and_has_pauses() {
        let a = speech(&Talker::LOW, 7, 48_000 * 5);
        let b = speech(&Talker::LOW, 7, 48_000 * 5);
        assert_eq!(a.samples, b.samples);
        let active = a.active.iter().filter(|x| **x).count() as f32 / a.active.len() as f32;
        assert!((0.5..0.95).contains(&active), "active fraction {active}");
        let rms = (a
            .samples
            .iter()
            .zip(&a.active)
            .filter(|(_, a)| **a)
            .map(|(x, _)| x * x)
            .sum::<f32>()
            / (active * a.samples.len() as f32))
            .sqrt();
        assert!((rms - 0.1).abs() < 0.005, "active rms {rms}");
        assert!(a.samples.iter().all(|x| x.abs() <= 1.0));
        assert!(
            a.samples
                .iter()
                .zip(&a.active)
                .all(|(x, a)| *a || *x == 0.0)
        );
    }

    #[test]
    fn two_talkers_are_distinct_voices() {
        // The median pitch period over 40 ms voiced frames (autocorrelation peak, 2.5-15 ms).
        let period = |t: &Talker| {
            let s = speech(t, 1, 48_000 * 4);
            let mut periods: Vec<usize> = s
                .samples
                .chunks_exact(1_920)
                .zip(s.active.chunks_exact(1_920))
                .filter(|(_, a)| a.iter().all(|a| *a))
                .filter_map(|(f, _)| {
                    let c = |lag: usize| f.iter().zip(&f[lag..]).map(|(x, y)| x * y).sum::<f32>();
                    (120..720).max_by(|a, b| c(*a).total_cmp(&c(*b)))
                })
                .collect();
            periods.sort_unstable();
            periods[periods.len() / 2]
        };
        let (low, high) = (period(&Talker::LOW), period(&Talker::HIGH));
        assert!((330..560).contains(&low), "low voice period {low} samples");
        assert!(
            (170..300).contains(&high),
            "high voice period {high} samples"
        );
    }

    #[test]
    fn noise_has_unit_rms() {
        let n = stationary_noise(3, 48_000);
        let rms = (n.iter().map(|x| x * x).sum::<f32>() / n.len() as f32).sqrt();
        assert!((rms - 1.0).abs() < 1e-3);
    }
}
