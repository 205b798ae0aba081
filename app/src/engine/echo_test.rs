//! The echo test's latency: how long after you speak you hear yourself, measured on the audio.
//!
//! **Mouth-to-ear latency** is the time from a sound reaching the microphone to the same sound
//! leaving the speaker. For a call to `echo` it has three parts:
//!
//! ```text
//!   capture device latency   the sound waits in the device, the capture ring and the
//!                            resampler before `Source::read` hands it out
//! + path latency (measured)  from `Source::read` to `Sink::write` of the same sound: the
//!                            frame it is packed in, encoding (Opus look-ahead), the network
//!                            to the server and back, the jitter buffer and decoding
//! + playback device latency  the sound waits in the playback ring, the resampler and the
//!                            device before it is heard
//! ```
//!
//! The path part is measured, not added up from what each stage believes: [`EchoMeter`] keeps
//! the level envelope (RMS over 1 ms blocks) of what the call sends (the frame given to the
//! session, after processing and mute) and of what it plays (the frame written to the sink,
//! after volume), both on the call's own sample clock, and finds the lag at which they match
//! best by normalised cross-correlation, interpolated to a fraction of a millisecond. Matching
//! envelopes rather than waveforms makes it indifferent to what the codec does to the phase and
//! to the pitch of a voice, and to a periodic waveform (a tone's waveform matches itself one
//! period later; its envelope does not). It needs the level to change: speech does all the
//! time; a steady tone only where it starts or stops. A window whose sent level barely varies
//! (a steady tone, silence, mute) gives no new estimate: the last one stands, moved by as much
//! as the jitter buffer's delay has moved since (the one part of the path that changes on its
//! own during a call), so a steady tone's figure follows the buffer after its start is gone.
//!
//! The device parts are what the [`media::audio::Source`] and [`media::audio::Sink`] know of
//! their buffers; files, tones and the null sink have none.

use std::time::Duration;

use serde::Serialize;

/// Samples per envelope block: 1 ms at 48 kHz.
const BLOCK: usize = 48;
/// Blocks of history kept of each signal: 3 s.
const HISTORY: usize = 3_000;
/// The longest lag looked for: 1 s, far beyond any call worth having.
const MAX_LAG: usize = 1_000;
/// Blocks between two estimates: 1 s.
const EVERY: usize = 1_000;
/// Blocks the level is averaged over: 10 ms.
const SMOOTH: usize = 10;
/// A match must explain at least this much of the played envelope's variation (Pearson r).
const MIN_CORRELATION: f64 = 0.8;
/// The sent level must vary at least this much (standard deviation over mean) to be matched:
/// a steady tone's ripple is far below, speech and a tone's start far above.
const MIN_VARIATION: f64 = 0.2;

/// The figures of an echo test, as the report and the call view have them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EchoLatency {
    /// Mouth to ear: `capture_ms + path_ms + playback_ms`.
    pub mouth_to_ear_ms: f64,
    /// From the microphone's frame to the speaker's frame, through the network (measured).
    pub path_ms: f64,
    /// The capture device's buffering (0 for files and tones).
    pub capture_ms: f64,
    /// The playback device's buffering (0 for files and the null sink).
    pub playback_ms: f64,
    /// How well the sent and played envelopes matched (Pearson r, 0 to 1).
    pub correlation: f64,
}

/// Measures the path latency of an echo call from what it sends and plays (module docs).
#[derive(Debug)]
pub struct EchoMeter {
    sent: Envelope,
    played: Envelope,
    /// The jitter buffer's delay now, ms ([`EchoMeter::set_buffered`]).
    buffered: f64,
    /// ... and when the last estimate was found.
    buffered_at_match: f64,
    /// Blocks recorded since the last estimate.
    since: usize,
    last: Option<(f64, f64)>,
}

impl Default for EchoMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoMeter {
    /// An empty meter (allocates its history once).
    pub fn new() -> Self {
        Self {
            sent: Envelope::new(),
            played: Envelope::new(),
            since: 0,
            last: None,
            buffered: 0.0,
            buffered_at_match: 0.0,
        }
    }

    /// One frame of the call: what was sent and what was played in the same tick, 48 kHz.
    /// Re-estimates once a second of audio.
    pub fn record(&mut self, sent: &[f32], played: &[f32]) {
        self.sent.push(sent);
        let before = self.played.blocks;
        self.played.push(played);
        self.since += self.played.blocks - before;
        if self.since < EVERY {
            return;
        }
        self.since = 0;
        let sent = self.sent.smoothed();
        let played = self.played.smoothed();
        let found = if self.sent.blocks <= HISTORY {
            // Nothing was sent before the call: the lags reach back into silence.
            let mut padded = vec![0.0; MAX_LAG];
            padded.extend_from_slice(&sent);
            estimate(&padded, &played)
        } else {
            estimate(&sent, &played[MAX_LAG..])
        };
        if let Some(found) = found {
            self.last = Some(found);
            self.buffered_at_match = self.buffered;
        }
    }

    /// The jitter buffer's current delay: call it with each frame, before
    /// [`EchoMeter::record`].
    pub fn set_buffered(&mut self, delay: Duration) {
        self.buffered = delay.as_secs_f64() * 1000.0;
    }

    /// The path latency (the last one found, moved as the jitter buffer moved since) and the
    /// correlation it was found with, if any yet.
    pub fn path(&self) -> Option<(Duration, f64)> {
        self.last.map(|(ms, r)| {
            let now = (ms + self.buffered - self.buffered_at_match).max(0.0);
            (Duration::from_secs_f64(now / 1000.0), r)
        })
    }
}

/// A ring of 1 ms blocks' mean square.
#[derive(Debug)]
struct Envelope {
    ring: Vec<f64>,
    /// Blocks written in all (the next one goes to `blocks % HISTORY`).
    blocks: usize,
    sum: f64,
    filled: usize,
}

impl Envelope {
    fn new() -> Self {
        Self {
            ring: vec![0.0; HISTORY],
            blocks: 0,
            sum: 0.0,
            filled: 0,
        }
    }

    fn push(&mut self, samples: &[f32]) {
        for &x in samples {
            self.sum += f64::from(x) * f64::from(x);
            self.filled += 1;
            if self.filled == BLOCK {
                self.ring[self.blocks % HISTORY] = self.sum / BLOCK as f64;
                self.blocks += 1;
                self.sum = 0.0;
                self.filled = 0;
            }
        }
    }

    /// The history, oldest first, as the RMS over the last [`SMOOTH`] blocks at each block:
    /// a window of several periods of any voice or tone, so a steady one is a steady level.
    fn smoothed(&self) -> Vec<f64> {
        let n = self.blocks.min(HISTORY);
        let start = self.blocks - n;
        let mut out = Vec::with_capacity(n);
        let mut acc = 0.0;
        for i in start..self.blocks {
            acc += self.ring[i % HISTORY];
            if i >= start + SMOOTH {
                acc -= self.ring[(i - SMOOTH) % HISTORY];
            }
            let k = (i - start + 1).min(SMOOTH);
            out.push((acc.max(0.0) / k as f64).sqrt());
        }
        out
    }
}

/// The lag (ms) at which `played` best matches `sent` delayed, with its correlation; `None`
/// when `sent` hardly varies or nothing matches well. Both are envelopes of 1 ms blocks ending
/// at the same instant; `sent` is longer by the longest lag looked for.
fn estimate(sent: &[f64], played: &[f64]) -> Option<(f64, f64)> {
    let w = played.len();
    let max_lag = sent.len().checked_sub(w)?;
    let p = played;
    let (p_mean, p_dev) = mean_dev(p);
    if w < EVERY / 2 || p_dev <= 1e-9 {
        return None;
    }
    let mut scores = vec![f64::NEG_INFINITY; max_lag + 1];
    for (lag, score) in scores.iter_mut().enumerate() {
        let s = &sent[max_lag - lag..max_lag - lag + w];
        let (s_mean, s_dev) = mean_dev(s);
        if s_dev <= 1e-9 || s_dev < MIN_VARIATION * s_mean {
            continue;
        }
        let cov: f64 = s
            .iter()
            .zip(p)
            .map(|(a, b)| (a - s_mean) * (b - p_mean))
            .sum::<f64>()
            / w as f64;
        *score = cov / (s_dev * p_dev);
    }
    let (best, &r) = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    if r.is_nan() || r < MIN_CORRELATION {
        return None;
    }
    // A parabola through the peak and its neighbours places it between blocks.
    let mut lag = best as f64;
    if best > 0 && best < max_lag {
        let (a, b, c) = (scores[best - 1], r, scores[best + 1]);
        let denom = a - 2.0 * b + c;
        if a.is_finite() && c.is_finite() && denom < 0.0 {
            lag += (0.5 * (a - c) / denom).clamp(-0.5, 0.5);
        }
    }
    Some((
        lag * BLOCK as f64 * 1000.0 / f64::from(media::SAMPLE_RATE),
        r,
    ))
}

fn mean_dev(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like: noise whose level follows syllables of 80-300 ms and pauses.
    fn speechlike(seconds: f64, seed: u64) -> Vec<f32> {
        let n = (seconds * 48_000.0) as usize;
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let len = (0.08 + 0.22 * next()) * 48_000.0;
            let level = if next() < 0.3 {
                0.0
            } else {
                0.1 + 0.4 * next()
            };
            for i in 0..len as usize {
                // A smooth rise and fall within the syllable.
                let shape = (std::f64::consts::PI * i as f64 / len).sin();
                let carrier = (2.0 * next() - 1.0) * 0.7
                    + 0.3
                        * (2.0 * std::f64::consts::PI * 180.0 * out.len() as f64 / 48_000.0).sin();
                out.push((level * shape * carrier) as f32);
            }
        }
        out.truncate(n);
        out
    }

    fn delayed(x: &[f32], samples: usize, gain: f32) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        for i in samples..x.len() {
            y[i] = x[i - samples] * gain;
        }
        y
    }

    fn run(sent: &[f32], played: &[f32], frame: usize) -> Option<(Duration, f64)> {
        let mut meter = EchoMeter::new();
        for (s, p) in sent.chunks(frame).zip(played.chunks(frame)) {
            meter.record(s, p);
        }
        meter.path()
    }

    #[test]
    fn finds_a_known_delay_in_speech_within_a_millisecond() {
        for (delay_ms, frame) in [(63.4, 480), (27.0, 960), (181.7, 480), (5.2, 1920)] {
            let x = speechlike(5.0, (delay_ms * 10.0) as u64);
            let d = (delay_ms * 48.0_f64).round() as usize;
            let y = delayed(&x, d, 0.6);
            let (found, r) = run(&x, &y, frame).expect("an estimate");
            let err = found.as_secs_f64() * 1000.0 - delay_ms;
            assert!(
                err.abs() < 1.0,
                "delay {delay_ms} ms: found {found:?} (r {r})"
            );
        }
    }

    #[test]
    fn finds_the_delay_through_noise_and_level_changes() {
        let x = speechlike(6.0, 7);
        let mut y = delayed(&x, 48 * 85, 0.3);
        let noise = speechlike(6.0, 99);
        for (v, n) in y.iter_mut().zip(&noise) {
            *v += 0.02 * n;
        }
        let (found, _) = run(&x, &y, 960).expect("an estimate");
        assert!(
            (found.as_secs_f64() * 1000.0 - 85.0).abs() < 2.0,
            "{found:?}"
        );
    }

    #[test]
    fn a_tone_is_measured_where_it_starts_and_a_steady_one_keeps_the_last_figure() {
        // Silence, then a steady 440 Hz tone from 0.5 s; played 42 ms later.
        let n = 48_000 * 6;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                if i < 24_000 {
                    0.0
                } else {
                    0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin()
                }
            })
            .collect();
        let y = delayed(&x, 48 * 42, 0.8);
        let mut meter = EchoMeter::new();
        let mut first = None;
        for (s, p) in x.chunks(480).zip(y.chunks(480)) {
            meter.record(s, p);
            if first.is_none() {
                first = meter.path();
            }
        }
        let (found, _) = first.expect("an estimate from the tone's start");
        assert!(
            (found.as_secs_f64() * 1000.0 - 42.0).abs() < 2.0,
            "{found:?}"
        );
        // At 6 s the start has long left the window: the last figure stands.
        let (last, _) = meter.path().expect("the figure stands");
        assert!((last.as_secs_f64() * 1000.0 - 42.0).abs() < 2.0, "{last:?}");
        // The jitter buffer grows by 20 ms: the figure follows.
        meter.set_buffered(Duration::from_millis(20));
        let (moved, _) = meter.path().unwrap();
        assert!(
            (moved.as_secs_f64() * 1000.0 - 62.0).abs() < 2.0,
            "{moved:?}"
        );
        // A steady tone alone gives none.
        assert_eq!(run(&x[48_000..], &y[48_000..], 480), None);
    }

    #[test]
    fn silence_and_unrelated_audio_give_nothing() {
        let silent = vec![0.0f32; 48_000 * 5];
        assert_eq!(run(&silent, &silent, 960), None);
        let x = speechlike(5.0, 1);
        let other = speechlike(5.0, 2);
        assert_eq!(run(&x, &other, 960), None);
        assert_eq!(run(&x, &silent, 960), None);
    }
}
