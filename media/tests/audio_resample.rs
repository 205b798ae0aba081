//! Resampler quality: a tone through 44.1 kHz -> 48 kHz -> 44.1 kHz keeps its frequency and its
//! level, and nothing else appears.
#![allow(clippy::unwrap_used)]

use std::f64::consts::TAU;

use media::analysis::{dominant_frequency, goertzel_power, rms};
use media::audio::StreamResampler;

fn sine(hz: f64, rate: u32, n: usize, amplitude: f64) -> Vec<f32> {
    (0..n)
        .map(|i| (amplitude * (TAU * hz * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Resamples `input` in pieces of `piece` samples, as a device feeds it.
fn stream(input: &[f32], from: u32, to: u32, piece: usize) -> Vec<f32> {
    let mut r = StreamResampler::new(from, to, 1 << 20).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0.0f32; 4096];
    for chunk in input.chunks(piece) {
        r.push(chunk).unwrap();
        let n = r.pop(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    r.flush().unwrap();
    loop {
        let n = r.pop(&mut buf);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(r.dropped(), 0);
    out
}

#[test]
fn tone_survives_44k1_to_48k_and_back() {
    for hz in [300.0, 1_000.0, 3_400.0, 7_000.0] {
        let input = sine(hz, 44_100, 44_100, 0.5);
        let up = stream(&input, 44_100, 48_000, 441);
        assert_eq!(up.len(), 48_000);
        let f_up = dominant_frequency(&up, 48_000, 100.0, 8_000.0, 10.0);
        assert!(
            (f_up - hz).abs() <= 10.0,
            "{hz} Hz at 48 kHz came out at {f_up}"
        );

        let back = stream(&up, 48_000, 44_100, 960);
        assert_eq!(back.len(), 44_100);
        let f_back = dominant_frequency(&back, 44_100, 100.0, 8_000.0, 10.0);
        assert!((f_back - hz).abs() <= 10.0, "{hz} Hz came back at {f_back}");

        // Gain: within 0.2 dB, away from the edges.
        let (a, b) = (rms(&input[4_410..39_690]), rms(&back[4_410..39_690]));
        let db = 20.0 * (b / a).log10();
        assert!(db.abs() < 0.2, "{hz} Hz: gain {db:.3} dB");

        // Sample by sample, the round trip is the input (aligned, no delay), to -40 dB.
        let err: Vec<f32> = input[4_410..39_690]
            .iter()
            .zip(&back[4_410..39_690])
            .map(|(x, y)| x - y)
            .collect();
        let snr = 20.0 * (a / rms(&err).max(1e-9)).log10();
        assert!(snr > 40.0, "{hz} Hz: round-trip SNR {snr:.1} dB");
    }
}

#[test]
fn downsampling_filters_what_does_not_fit() {
    // 20 kHz at 48 kHz has no place at 16 kHz: it must be filtered, not folded to 4 kHz.
    let input = sine(20_000.0, 48_000, 48_000, 0.5);
    let down = stream(&input, 48_000, 16_000, 960);
    let level = rms(&down[1_600..14_400]);
    assert!(level < 0.005, "alias level {level}");
    let alias = goertzel_power(&down, 16_000, 4_000.0);
    let reference = goertzel_power(&sine(4_000.0, 16_000, 16_000, 0.5), 16_000, 4_000.0);
    assert!(alias < reference * 1e-4, "alias {alias} vs {reference}");
}

#[test]
fn odd_piece_sizes_give_the_same_stream() {
    let input = sine(1_000.0, 44_100, 22_050, 0.5);
    let a = stream(&input, 44_100, 48_000, 441);
    let b = stream(&input, 44_100, 48_000, 97);
    assert_eq!(a.len(), b.len());
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max_diff < 1e-5, "{max_diff}");
}
