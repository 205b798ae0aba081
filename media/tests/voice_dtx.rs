//! DTX and comfort noise, in virtual time: silence costs under 1 kb/s, the receiver plays
//! comfort noise (not digital silence, not a concealment buzz), and statistics do not count
//! the silences as loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use media::voice::{CodecConfig, Transport, VoiceConfig, VoiceSession};
use rand::SeedableRng;

const FRAME: usize = 960;

#[derive(Default)]
struct Wire {
    sent: VecDeque<Vec<u8>>,
    /// (virtual ms, RTP bytes) of every RTP packet sent.
    rtp: Vec<(u64, usize)>,
}

impl Transport for Wire {
    fn send(&mut self, datagram: &[u8]) -> std::io::Result<()> {
        self.sent.push_back(datagram.to_vec());
        Ok(())
    }
}

/// Low background noise, about -55 dBFS: a quiet room.
fn room_noise(state: &mut u64, out: &mut [f32]) {
    for v in out {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *v = ((*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.006;
    }
}

/// Talks (a 300 Hz buzz with harmonics) for `talk` frames, then `source` for `quiet` frames,
/// then talks again; returns the wire, what the receiver heard, and both sessions.
fn call(
    dtx: bool,
    talk: usize,
    quiet: usize,
    source: fn(&mut u64, &mut [f32]),
) -> (Wire, Vec<f32>, VoiceSession) {
    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let config = VoiceConfig {
        codec: CodecConfig {
            dtx,
            ..CodecConfig::default()
        },
        ..VoiceConfig::default()
    };
    let mut alice = VoiceSession::new(config.clone(), t0, &mut rng).unwrap();
    let mut bob = VoiceSession::new(config, t0, &mut rng).unwrap();
    let mut wire = Wire::default();
    let mut heard = vec![];
    let mut frame = vec![0.0f32; FRAME];
    let mut noise = 0x1234_5678_9abc_def1u64;
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut phase = 0.0f64;
    for k in 0..(2 * talk + quiet) {
        let now = t0 + Duration::from_millis(20 * k as u64);
        if k < talk || k >= talk + quiet {
            for v in frame.iter_mut() {
                phase += 300.0 / 48_000.0;
                let p = phase.fract() as f32 * std::f32::consts::TAU;
                *v = 0.3 * p.sin() + 0.1 * (2.0 * p).sin() + 0.05 * (3.0 * p).sin();
            }
        } else {
            source(&mut noise, &mut frame);
        }
        alice.push_capture(now, &frame, &mut wire);
        while let Some(d) = wire.sent.pop_front() {
            wire.rtp.push((20 * k as u64, d.len()));
            in_flight.push_back((now + Duration::from_millis(25), d));
        }
        let pull = now + Duration::from_millis(7);
        while in_flight.front().is_some_and(|(at, _)| *at <= pull) {
            let (at, d) = in_flight.pop_front().unwrap();
            bob.handle_datagram(at, &d);
        }
        bob.pull_playout(pull, &mut frame);
        heard.extend_from_slice(&frame);
        if now >= alice.poll_timeout() {
            let mut rtcp = Wire::default();
            alice.handle_timeout(now, &mut rtcp);
            for d in rtcp.sent {
                bob.handle_datagram(now, &d);
            }
        }
    }
    assert_eq!(alice.stats().sent.packets as usize, wire.rtp.len());
    (wire, heard, bob)
}

/// RTP bits a second (header and payload) sent between `from_ms` and `to_ms`.
fn rtp_kbps(wire: &Wire, from_ms: u64, to_ms: u64) -> f64 {
    let bytes: usize = wire
        .rtp
        .iter()
        .filter(|(t, _)| (from_ms..to_ms).contains(t))
        .map(|(_, n)| n)
        .sum();
    bytes as f64 * 8.0 / (to_ms - from_ms) as f64
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

#[test]
fn silence_costs_under_1_kbps_and_plays_comfort_noise() {
    let (talk, quiet) = (100, 500); // 2 s talking, 10 s quiet, 2 s talking
    for (label, source) in [
        ("room noise", room_noise as fn(&mut u64, &mut [f32])),
        ("digital silence", |_: &mut u64, out: &mut [f32]| {
            out.fill(0.0)
        }),
    ] {
        let (wire, heard, bob) = call(true, talk, quiet, source);
        // From 1.5 s into the silence (the encoder's voice activity detector takes about a
        // second to call steady room noise silence, then 200 ms of hangover) to its end.
        let from = (talk as u64 + 75) * 20;
        let to = (talk + quiet) as u64 * 20;
        let quiet_kbps = rtp_kbps(&wire, from, to);
        let talk_kbps = rtp_kbps(&wire, 0, talk as u64 * 20);
        let packets = wire
            .rtp
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .count();
        let s = bob.stats();
        eprintln!(
            "{label}: talking {talk_kbps:.1} kb/s, silence {quiet_kbps:.2} kb/s of RTP \
             ({packets} packets in {} s); receiver {:?}",
            (to - from) / 1000,
            s.received
        );
        assert!(quiet_kbps < 1.0, "{label}: {quiet_kbps} kb/s in silence");
        assert!(talk_kbps > 20.0, "{label}: {talk_kbps} kb/s talking");
        // Statistics: the silence is neither loss nor concealment.
        assert_eq!(s.received.lost, 0, "{label}: {:?}", s.received);
        assert_eq!(s.received.resyncs, 0, "{label}: {:?}", s.received);
        // Of the 500 frames, the first 50-60 are sent in full (the detector's second) and
        // every 21st after is a comfort-noise update.
        assert!(
            s.received.comfort_noise_frames as usize >= quiet * 3 / 4,
            "{label}: {:?}",
            s.received
        );
        assert_eq!(s.received.dropped_frames, 0, "{label}: speech dropped");
        assert!(
            s.received.concealed_frames <= 2,
            "{label}: silence concealed, not comfort noise: {:?}",
            s.received
        );
        // The receiver's output in the silence, after the hangover and the buffer's delay.
        let quiet_heard = &heard[(talk + 30) * FRAME..(talk + quiet - 5) * FRAME];
        let level = rms(quiet_heard);
        let peak = quiet_heard.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!("{label}: heard in silence rms {level:.5}, peak {peak:.4}");
        if label == "room noise" {
            // Comfort noise: not dead air, and about the room's level (rms 0.0017), not a
            // concealment buzz.
            assert!(level > 0.0003, "dead air: rms {level}");
            assert!(level < 0.006, "too loud for comfort noise: rms {level}");
            // No stretch of digital silence longer than 20 ms.
            let mut run = 0usize;
            let mut longest = 0usize;
            for v in quiet_heard {
                run = if *v == 0.0 { run + 1 } else { 0 };
                longest = longest.max(run);
            }
            assert!(longest < FRAME, "{longest} samples of digital silence");
        } else {
            assert!(level < 0.001, "noise made of nothing: rms {level}");
        }
        // Talking again: the tone is back, at its level.
        let back = &heard[(talk + quiet + 20) * FRAME..];
        assert!(rms(back) > 0.15, "{label}: rms {} after silence", rms(back));
    }
}

#[test]
fn without_dtx_silence_costs_as_much_as_speech() {
    let (wire, _, bob) = call(false, 50, 200, room_noise);
    let quiet = rtp_kbps(&wire, 70 * 20, 250 * 20);
    eprintln!("DTX off: silence {quiet:.1} kb/s");
    assert!(quiet > 5.0, "{quiet}");
    assert_eq!(bob.stats().received.comfort_noise_frames, 0);
}

#[test]
fn dtx_gaps_with_loss_count_only_the_lost_packets() {
    // The silence's few packets (comfort-noise updates) and the talk's cross one lossy link:
    // lost counts sequence numbers that never came, and never the time not sent.
    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut alice = VoiceSession::new(VoiceConfig::default(), t0, &mut rng).unwrap();
    let mut bob = VoiceSession::new(VoiceConfig::default(), t0, &mut rng).unwrap();
    let mut wire = Wire::default();
    let mut frame = vec![0.0f32; FRAME];
    let mut noise = 77u64;
    let mut dropped = 0u64;
    let mut n = 0u64;
    for k in 0..1_000u64 {
        let now = t0 + Duration::from_millis(20 * k);
        if (k / 150) % 2 == 0 {
            for (i, v) in frame.iter_mut().enumerate() {
                *v = 0.3 * ((k as usize * FRAME + i) as f32 * 0.04).sin();
            }
        } else {
            room_noise(&mut noise, &mut frame);
        }
        alice.push_capture(now, &frame, &mut wire);
        while let Some(d) = wire.sent.pop_front() {
            n += 1;
            if n % 23 == 5 {
                dropped += 1;
                continue;
            }
            bob.handle_datagram(now + Duration::from_millis(20), &d);
        }
        bob.pull_playout(now + Duration::from_millis(25), &mut frame);
    }
    let r = bob.stats().received;
    eprintln!("{dropped} of {n} packets dropped; receiver {r:?}");
    assert!(r.comfort_noise_frames > 250, "{r:?}");
    // The last packet may be dropped: nothing after it tells that it was sent.
    assert!(r.lost == dropped || r.lost + 1 == dropped, "{r:?}");
}

#[test]
fn a_steady_tone_is_never_taken_for_silence() {
    // Headless calls and their tests send tones for tens of seconds and count 50 packets a
    // second: the encoder's voice activity detector must not call a steady tone noise.
    use media::voice::codec::{Encoder, MAX_OPUS_PACKET};
    use media::voice::jitter::DTX_PACKET;
    for (hz, amplitude) in [(440.0, 0.5), (660.0, 0.5), (1_000.0, 0.1)] {
        let mut encoder = Encoder::new(&CodecConfig::default()).unwrap();
        let mut tone = media::tone::Tone::new(hz, 48_000, amplitude);
        let mut frame = vec![0.0f32; FRAME];
        let mut out = vec![0u8; MAX_OPUS_PACKET];
        let mut dtx = 0;
        for _ in 0..1_500 {
            tone.fill(&mut frame);
            if encoder.encode(&frame, &mut out).unwrap() <= DTX_PACKET {
                dtx += 1;
            }
        }
        assert_eq!(dtx, 0, "{hz} Hz at {amplitude}: {dtx} DTX frames in 30 s");
    }
}
