//! The voice pipeline's CPU cost and latency, printed as figures (`cargo bench -p media --bench
//! voice_pipeline`).
//!
//! - CPU per call: Opus encode, RTP, jitter buffer and Opus decode for one direction and for
//!   both, per frame, as a fraction of one core (the frame's duration is the budget); without
//!   and with SRTP (AEAD_AES_128_GCM protect at the sender, unprotect at the receiver), and
//!   SRTP alone per 20 ms packet (issue 11's budget: encryption within 20% of the call's CPU).
//! - Latency with no network delay: a noise burst enters one session's capture, and its
//!   position in the other session's playout is found by cross-correlation. Capture delivers a
//!   frame when it is complete and playout starts playing a pulled frame at once, so a sample's
//!   latency is its offset in the output plus one frame; the floor is one frame plus the Opus
//!   encoder's look-ahead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::time::{Duration, Instant};

use media::audio::StreamResampler;
use media::srtp::{MasterKey, Srtp};
use media::voice::link::{LinkConfig, LossyLink};
use media::voice::{CodecConfig, FrameDuration, Transport, VoiceConfig, VoiceSession};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use common::cpu_time;

/// Collects datagrams in reused buffers.
struct Outbox {
    bufs: Vec<Vec<u8>>,
    len: usize,
}

impl Outbox {
    fn new() -> Self {
        Self {
            bufs: (0..4).map(|_| Vec::with_capacity(1_500)).collect(),
            len: 0,
        }
    }
}

impl Transport for Outbox {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        if self.len == self.bufs.len() {
            self.bufs.push(Vec::with_capacity(1_500));
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.extend_from_slice(datagram);
        self.len += 1;
        Ok(())
    }
}

fn config(frame: FrameDuration) -> VoiceConfig {
    VoiceConfig {
        codec: CodecConfig {
            frame,
            ..CodecConfig::default()
        },
        ..VoiceConfig::default()
    }
}

/// A device at 44.1 kHz: capture is resampled to 48 kHz before the encoder, playout from 48 kHz
/// after the decoder.
struct Device {
    capture: StreamResampler,
    playback: StreamResampler,
    device_in: Vec<f32>,
    device_out: Vec<f32>,
    frame: Vec<f32>,
}

impl Device {
    fn new(frame: FrameDuration) -> Self {
        let n = frame.samples();
        let device_n = n * 44_100 / 48_000;
        Self {
            capture: StreamResampler::new(44_100, 48_000, 4 * n).unwrap(),
            playback: StreamResampler::new(48_000, 44_100, 4 * n).unwrap(),
            device_in: vec![0.1; device_n],
            device_out: vec![0.0; device_n],
            frame: vec![0.0; n],
        }
    }

    /// Captures a device period and hands what is ready (at 48 kHz) to `session`.
    fn capture(
        &mut self,
        session: &mut VoiceSession,
        now: Instant,
        input: &[f32],
        out: &mut Outbox,
    ) {
        for (d, s) in self.device_in.iter_mut().zip(input) {
            *d = *s;
        }
        self.capture.push(&self.device_in).unwrap();
        let got = self.capture.pop(&mut self.frame);
        session.push_capture(now, &self.frame[..got], out);
    }

    /// Pulls a frame from `session` and resamples it for the device.
    fn play(&mut self, session: &mut VoiceSession, now: Instant) {
        session.pull_playout(now, &mut self.frame);
        self.playback.push(&self.frame).unwrap();
        self.playback.pop(&mut self.device_out);
        std::hint::black_box(&self.device_out);
    }
}

/// One end of the CPU measurement: its session, its 44.1 kHz device, what it sends, and its
/// SRTP contexts with their reused buffers when the call is encrypted.
struct End {
    session: VoiceSession,
    device: Device,
    outbox: Outbox,
    srtp: Option<Srtp>,
    wire: Vec<u8>,
    clear: Vec<u8>,
}

/// A direction's key of an encrypted call, made of `seed`.
fn master_key(seed: u8) -> MasterKey {
    MasterKey {
        key: [seed; 16],
        salt: [!seed; 12],
    }
}

impl End {
    fn new(
        frame: FrameDuration,
        t0: Instant,
        rng: &mut StdRng,
        keys: Option<(MasterKey, MasterKey)>,
    ) -> Self {
        Self {
            session: VoiceSession::new(config(frame), t0, rng).unwrap(),
            device: Device::new(frame),
            outbox: Outbox::new(),
            srtp: keys.map(|(tx, rx)| Srtp::new(&tx, &rx).unwrap()),
            wire: Vec::with_capacity(1_500),
            clear: Vec::with_capacity(1_500),
        }
    }
}

/// One frame one way: `from` captures `chunk` (through its device if `resample`), `to` takes
/// what it sent and plays a frame (into `out`, or through its device).
fn one_way(
    from: &mut End,
    to: &mut End,
    now: Instant,
    chunk: &[f32],
    resample: bool,
    out: &mut [f32],
) {
    if resample {
        from.device
            .capture(&mut from.session, now, chunk, &mut from.outbox);
    } else {
        from.session.push_capture(now, chunk, &mut from.outbox);
    }
    for d in &from.outbox.bufs[..from.outbox.len] {
        match (&mut from.srtp, &mut to.srtp) {
            (Some(tx), Some(rx)) => {
                tx.protect(d, &mut from.wire).unwrap();
                rx.unprotect(&from.wire, &mut to.clear).unwrap();
                to.session.handle_datagram(now, &to.clear);
            }
            _ => {
                to.session.handle_datagram(now, d);
            }
        }
    }
    from.outbox.len = 0;
    if resample {
        to.device.play(&mut to.session, now);
    } else {
        to.session.pull_playout(now, out);
    }
}

/// How a CPU measurement runs.
#[derive(Clone, Copy)]
struct Run {
    frame: FrameDuration,
    both: bool,
    resample: bool,
    srtp: bool,
}

/// Runs `frames` frames of speech-like audio through one or both directions, with or without
/// a 44.1 kHz device's resampling at each end, with or without SRTP; returns the CPU time per
/// frame.
fn cpu_per_frame(run: Run, frames: u32) -> Duration {
    let Run {
        frame,
        both,
        resample,
        srtp,
    } = run;
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut a = End::new(
        frame,
        t0,
        &mut rng,
        srtp.then(|| (master_key(0x5a), master_key(0x3c))),
    );
    let mut b = End::new(
        frame,
        t0,
        &mut rng,
        srtp.then(|| (master_key(0x3c), master_key(0x5a))),
    );
    let n = frame.samples();
    // A tone with noise, so the codec has work like speech's.
    let input: Vec<f32> = (0..n * 50)
        .map(|i| 0.3 * (i as f32 * 0.057).sin() + 0.05 * (rng.random::<f32>() - 0.5))
        .collect();
    let mut out = vec![0.0f32; n];
    let wall = Instant::now();
    let start = cpu_time(wall);
    for k in 0..frames {
        let now = t0 + frame.duration() * k;
        let chunk = &input[(k as usize % 50) * n..][..n];
        one_way(&mut a, &mut b, now, chunk, resample, &mut out);
        if both {
            one_way(&mut b, &mut a, now, chunk, resample, &mut out);
        }
        std::hint::black_box(&out);
    }
    (cpu_time(wall) - start) / frames
}

/// A quiet room (noise at about -55 dBFS) through two sessions for `frames` 20 ms frames,
/// after 3 s of it to let the encoder call it silence: CPU per frame (both ends, one
/// direction) and the RTP bits a second sent, with DTX on or off.
fn quiet_room(dtx: bool, frames: u32) -> (Duration, f64) {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(11);
    let config = VoiceConfig {
        codec: CodecConfig {
            dtx,
            ..CodecConfig::default()
        },
        ..VoiceConfig::default()
    };
    let mut a = VoiceSession::new(config.clone(), t0, &mut rng).unwrap();
    let mut b = VoiceSession::new(config, t0, &mut rng).unwrap();
    let mut outbox = Outbox::new();
    let mut frame = vec![0.0f32; 960];
    let mut out = vec![0.0f32; 960];
    let mut bytes = 0usize;
    let warm = 150;
    let mut start = Duration::ZERO;
    let wall = Instant::now();
    for k in 0..warm + frames {
        if k == warm {
            start = cpu_time(wall);
            bytes = 0;
        }
        let now = t0 + Duration::from_millis(20 * u64::from(k));
        for v in frame.iter_mut() {
            *v = 0.006 * (rng.random::<f32>() - 0.5);
        }
        outbox.len = 0;
        a.push_capture(now, &frame, &mut outbox);
        for d in &outbox.bufs[..outbox.len] {
            bytes += d.len();
            b.handle_datagram(now, d);
        }
        b.pull_playout(now + Duration::from_millis(5), &mut out);
        std::hint::black_box(&out);
    }
    let per = (cpu_time(wall) - start) / frames;
    (per, bytes as f64 * 8.0 / (f64::from(frames) * 0.02))
}

/// SRTP alone: protect at one end and unprotect at the other of a 20 ms Opus packet (32 kb/s:
/// 80 octets of payload behind a 12-octet RTP header), and of an 80-octet RTCP report; CPU
/// time per packet.
fn srtp_per_packet(rtcp: bool, packets: u32) -> Duration {
    let mut alice = Srtp::new(&master_key(0x5a), &master_key(0x3c)).unwrap();
    let mut bob = Srtp::new(&master_key(0x3c), &master_key(0x5a)).unwrap();
    let mut packet = vec![0x80, 111, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    packet.resize(12 + 80, 0x5c);
    if rtcp {
        packet[1] = 201;
    }
    let (mut wire, mut clear) = (Vec::with_capacity(1_500), Vec::with_capacity(1_500));
    let wall = Instant::now();
    let start = cpu_time(wall);
    for k in 0..packets {
        packet[2..4].copy_from_slice(&(k as u16).to_be_bytes());
        alice.protect(&packet, &mut wire).unwrap();
        bob.unprotect(&wire, &mut clear).unwrap();
        std::hint::black_box(&clear);
    }
    (cpu_time(wall) - start) / packets
}

/// Where `burst` is found in `output`, at most `max_lag` samples on: the lag of the largest
/// cross-correlation.
fn best_lag(burst: &[f32], output: &[f32], max_lag: usize) -> usize {
    let lags = max_lag.min(output.len().saturating_sub(burst.len()));
    let mut best = (0usize, f32::MIN);
    for lag in 0..lags {
        let c: f32 = burst.iter().zip(&output[lag..]).map(|(x, y)| x * y).sum();
        if c > best.1 {
            best = (lag, c);
        }
    }
    best.0
}

/// Latency in samples of a burst at `offset` samples into the stream.
fn latency(frame: FrameDuration, offset: usize) -> (usize, usize) {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(offset as u64);
    let mut a = VoiceSession::new(config(frame), t0, &mut rng).unwrap();
    let mut b = VoiceSession::new(config(frame), t0, &mut rng).unwrap();
    let n = frame.samples();
    let total = 48_000;
    let burst: Vec<f32> = (0..480)
        .map(|_| 0.5 * (rng.random::<f32>() - 0.5))
        .collect();
    let mut input = vec![0.0f32; total];
    input[offset..offset + burst.len()].copy_from_slice(&burst);
    let mut output = vec![0.0f32; total];
    let mut ab = Outbox::new();
    for k in 0..total / n {
        // Frame k is complete (and pushed) at the end of its duration; the playout pulls at
        // the same moment.
        let now = t0 + frame.duration() * (k as u32 + 1);
        a.push_capture(now, &input[k * n..(k + 1) * n], &mut ab);
        for d in &ab.bufs[..ab.len] {
            b.handle_datagram(now, d);
        }
        ab.len = 0;
        b.pull_playout(now, &mut output[k * n..(k + 1) * n]);
    }
    // Cross-correlate the burst against the output.
    let lag = best_lag(&burst, &output[offset..], 9_600);
    let lookahead = a.encoder_lookahead().unwrap();
    (
        lag + n,
        (lookahead.as_secs_f64() * 48_000.0).round() as usize,
    )
}

/// Latencies in samples of bursts sent once a second through a link with `delay` and uniform
/// `jitter`, after the jitter buffer has settled.
fn latency_through_link(delay: Duration, jitter: Duration) -> Vec<usize> {
    let frame = FrameDuration::Ms20;
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(11);
    let mut a = VoiceSession::new(config(frame), t0, &mut rng).unwrap();
    let mut b = VoiceSession::new(config(frame), t0, &mut rng).unwrap();
    let mut link = LossyLink::new(
        LinkConfig {
            delay,
            jitter,
            ..LinkConfig::default()
        },
        12,
    );
    let n = frame.samples();
    let total = 48_000 * 12;
    let burst: Vec<f32> = (0..480)
        .map(|_| 0.5 * (rng.random::<f32>() - 0.5))
        .collect();
    let mut input = vec![0.0f32; total];
    let starts: Vec<usize> = (3..11).map(|s| s * 48_000 + s * 1_013).collect();
    for &s in &starts {
        input[s..s + burst.len()].copy_from_slice(&burst);
    }
    let mut output = vec![0.0f32; total];
    for k in 0..total / n {
        let now = t0 + frame.duration() * (k as u32 + 1);
        a.push_capture(now, &input[k * n..(k + 1) * n], &mut link.transport(now));
        while let Some(d) = link.receive(now) {
            b.handle_datagram(now, &d);
        }
        b.pull_playout(now, &mut output[k * n..(k + 1) * n]);
    }
    starts
        .iter()
        .map(|&s| best_lag(&burst, &output[s..], 24_000) + n)
        .collect()
}

fn ms(samples: usize) -> f64 {
    samples as f64 / 48.0
}

fn main() {
    println!("voice pipeline (48 kHz mono Opus VoIP, 32 kb/s, FEC on, complexity 9)");
    for frame in [FrameDuration::Ms20, FrameDuration::Ms10] {
        let budget = frame.duration().as_secs_f64();
        let frames = 3_000;
        let run = |both, resample, srtp| Run {
            frame,
            both,
            resample,
            srtp,
        };
        // Warm up, then measure.
        cpu_per_frame(run(false, false, false), 200);
        for resample in [false, true] {
            let mut plain_both = Duration::ZERO;
            for srtp in [false, true] {
                let one = cpu_per_frame(run(false, resample, srtp), frames);
                let two = cpu_per_frame(run(true, resample, srtp), frames);
                let versus = if srtp {
                    format!(
                        " ({:+.1}% against plain RTP)",
                        (two.as_secs_f64() / plain_both.as_secs_f64() - 1.0) * 100.0
                    )
                } else {
                    plain_both = two;
                    String::new()
                };
                println!(
                    "{} ms frames{}{}: CPU per frame one direction {:.1} us ({:.2}% of a core), both directions {:.1} us ({:.2}% of a core){versus}",
                    frame.millis(),
                    if resample {
                        ", 44.1 kHz devices (resampling)"
                    } else {
                        ""
                    },
                    if srtp { ", SRTP" } else { "" },
                    one.as_secs_f64() * 1e6,
                    one.as_secs_f64() / budget * 100.0,
                    two.as_secs_f64() * 1e6,
                    two.as_secs_f64() / budget * 100.0,
                );
            }
        }
    }
    for dtx in [true, false] {
        let (per, bps) = quiet_room(dtx, 1_500);
        println!(
            "quiet room (noise at -55 dBFS), DTX {}: RTP {:.2} kb/s sent; CPU per frame (encode and send, receive and play) {:.1} us ({:.2}% of a core)",
            if dtx { "on" } else { "off" },
            bps / 1_000.0,
            per.as_secs_f64() * 1e6,
            per.as_secs_f64() / 0.02 * 100.0,
        );
    }
    srtp_per_packet(false, 10_000);
    for (what, rtcp) in [("RTP, 92 octets", false), ("RTCP, 92 octets", true)] {
        let per = srtp_per_packet(rtcp, 200_000);
        println!(
            "SRTP ({}) protect + unprotect per packet ({what}): {:.2} us; per call and end (50 protected and 50 unprotected a second): {:.3}% of a core",
            media::srtp::SUITE,
            per.as_secs_f64() * 1e6,
            per.as_secs_f64() * 50.0 * 100.0,
        );
    }
    for frame in [FrameDuration::Ms20, FrameDuration::Ms10] {
        let n = frame.samples();
        let mut lat = Vec::new();
        let mut floor = 0;
        for i in 0..8 {
            let offset = 9_600 + i * (n / 8 + 37);
            let (l, look) = latency(frame, offset);
            lat.push(l);
            floor = n + look;
        }
        lat.sort_unstable();
        println!(
            "{} ms frames: latency with no network delay {:.2} ms (min {:.2}, max {:.2} over 8 positions); floor (frame + Opus look-ahead) {:.2} ms",
            frame.millis(),
            ms(lat[lat.len() / 2]),
            ms(lat[0]),
            ms(lat[lat.len() - 1]),
            ms(floor)
        );
    }
    for jitter_ms in [0, 20, 60] {
        let mut lat =
            latency_through_link(Duration::from_millis(30), Duration::from_millis(jitter_ms));
        lat.sort_unstable();
        println!(
            "20 ms frames through a 30 ms link with 0-{jitter_ms} ms jitter: latency {:.1} ms (min {:.1}, max {:.1}), of which beyond the link's 30 ms: {:.1} ms",
            ms(lat[lat.len() / 2]),
            ms(lat[0]),
            ms(lat[lat.len() - 1]),
            ms(lat[lat.len() / 2]) - 30.0
        );
    }
}
