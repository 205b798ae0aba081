//! The capture-path processing's CPU cost, printed as figures (`cargo bench -p media --bench
//! processing`).
//!
//! - Per 10 ms block: `render` (what the speaker plays) plus `capture` (the microphone's block)
//!   with everything on, and with each part alone, on synthetic speech in a simulated echo path
//!   (so the canceller and the suppressors do their real work, not silence's shortcuts).
//! - Per call: one end of a 20 ms call as the user's machine runs it (Opus encode of its
//!   microphone, RTP, jitter buffer and Opus decode of the other side, plus `render` of what it
//!   plays and `capture` of what it records), and both ends (the voice_pipeline bench's "both
//!   directions": two sessions, two processors), as a fraction of one core: the frame's 20 ms is
//!   the budget. Issue 12's target: a call with processing on under 5% of one core.
//!
//! Time is the thread's CPU time (`/proc/thread-self/schedstat`), so other load on the machine
//! does not count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::time::{Duration, Instant};

use media::processing::synth::{self, Talker};
use media::processing::{BLOCK, ProcessingConfig, VoiceProcessor};
use media::voice::{CodecConfig, FrameDuration, Transport, VoiceConfig, VoiceSession};
use rand::SeedableRng;
use rand::rngs::StdRng;

use common::cpu_time;

const FS: usize = 48_000;
const SECONDS: usize = 20;

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

/// Far-end speech and a microphone hearing its echo (100 ms later, -6 dB) and a near-end
/// talker who talks half of the time (double talk included).
fn signals() -> (Vec<f32>, Vec<f32>) {
    let n = SECONDS * FS;
    let far = synth::speech(&Talker::LOW, 1, n).samples;
    let near = synth::speech(&Talker::HIGH, 2, n).samples;
    let d = FS / 10;
    let mic = (0..n)
        .map(|i| {
            let echo = if i >= d { 0.5 * far[i - d] } else { 0.0 };
            let talk = if (i / (3 * FS)) % 2 == 1 {
                0.5 * near[i]
            } else {
                0.0
            };
            echo + talk + 1e-4 * ((i * 7_919 % 1_000) as f32 / 500.0 - 1.0)
        })
        .collect();
    (far, mic)
}

/// CPU time per 10 ms block of render and capture with `config` (the clock is read around the
/// whole run: reading it costs a few microseconds itself).
fn per_block(config: ProcessingConfig, far: &[f32], mic: &[f32]) -> Duration {
    let mut p = VoiceProcessor::new(config);
    let mut block = [0.0f32; BLOCK];
    let blocks = far.len() / BLOCK;
    let wall = Instant::now();
    let start = cpu_time(wall);
    for k in 0..blocks {
        let r = k * BLOCK..(k + 1) * BLOCK;
        p.render(&far[r.clone()]);
        block.copy_from_slice(&mic[r]);
        p.capture(&mut block);
        std::hint::black_box(&block);
    }
    (cpu_time(wall) - start) / blocks as u32
}

/// One end of a call: its session, its processor and its reused buffers.
struct End {
    session: VoiceSession,
    processor: VoiceProcessor,
    outbox: Outbox,
    played: Vec<f32>,
    captured: Vec<f32>,
}

/// CPU time per 20 ms frame of a call whose ends process with `config`: one end's work when
/// `both` is false (it receives, decodes and plays, then captures, processes, encodes and
/// sends; what the other end sends it is made beforehand), both ends' when true.
fn per_call_frame(config: ProcessingConfig, both: bool, far: &[f32], mic: &[f32]) -> Duration {
    let frame = FrameDuration::Ms20;
    let n = frame.samples();
    let voice = VoiceConfig {
        codec: CodecConfig {
            frame,
            ..CodecConfig::default()
        },
        ..VoiceConfig::default()
    };
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut end = || End {
        session: VoiceSession::new(voice.clone(), t0, &mut rng).unwrap(),
        processor: VoiceProcessor::new(config),
        outbox: Outbox::new(),
        played: vec![0.0; n],
        captured: vec![0.0; n],
    };
    let (mut a, mut b) = (end(), end());
    let frames = far.len() / n;
    let now = |k: usize| t0 + frame.duration() * (k as u32 + 1);
    // The far end's packets, made beforehand when only one end is measured.
    let mut sent_by_b: Vec<Vec<Vec<u8>>> = Vec::new();
    if !both {
        for k in 0..frames {
            b.session
                .push_capture(now(k), &far[k * n..(k + 1) * n], &mut b.outbox);
            sent_by_b.push(b.outbox.bufs[..b.outbox.len].to_vec());
            b.outbox.len = 0;
        }
    }
    let wall = Instant::now();
    let start = cpu_time(wall);
    for k in 0..frames {
        let now = now(k);
        let r = k * n..(k + 1) * n;
        if both {
            // b (the far end) talks: its microphone is the far-end speech.
            b.captured.copy_from_slice(&far[r.clone()]);
            b.processor.render(&b.played);
            b.processor.capture(&mut b.captured);
            b.session.push_capture(now, &b.captured, &mut b.outbox);
            for d in &b.outbox.bufs[..b.outbox.len] {
                a.session.handle_datagram(now, d);
            }
            b.outbox.len = 0;
        } else {
            for d in sent_by_b.get(k).into_iter().flatten() {
                a.session.handle_datagram(now, d);
            }
        }
        // a: plays what it received, then captures, processes and sends.
        a.session.pull_playout(now, &mut a.played);
        a.processor.render(&a.played);
        a.captured.copy_from_slice(&mic[r]);
        a.processor.capture(&mut a.captured);
        a.session.push_capture(now, &a.captured, &mut a.outbox);
        if both {
            for d in &a.outbox.bufs[..a.outbox.len] {
                b.session.handle_datagram(now, d);
            }
            b.session.pull_playout(now, &mut b.played);
        }
        a.outbox.len = 0;
        std::hint::black_box((&a.captured, &b.played));
    }
    (cpu_time(wall) - start) / frames as u32
}

fn main() {
    let (far, mic) = signals();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let core = |d: Duration, budget_ms: f64| d.as_secs_f64() * 1e3 / budget_ms * 100.0;
    let off = ProcessingConfig::off();
    println!("Processing per 10 ms block, 48 kHz mono ({SECONDS} s of speech with echo):");
    let off_cost = per_block(off, &far, &mic);
    println!(
        "  {:24} render + capture {:6.1} us (the wrapper's own cost)",
        "all off",
        us(off_cost)
    );
    for (name, config) in [
        ("all on", ProcessingConfig::default()),
        (
            "echo cancellation only",
            ProcessingConfig {
                echo_cancellation: true,
                ..off
            },
        ),
        (
            "noise suppression only",
            ProcessingConfig {
                noise_suppression: true,
                ..off
            },
        ),
        (
            "gain control only",
            ProcessingConfig {
                gain_control: true,
                ..off
            },
        ),
        (
            "high-pass only",
            ProcessingConfig {
                high_pass: true,
                ..off
            },
        ),
    ] {
        let cost = per_block(config, &far, &mic);
        println!(
            "  {name:24} render + capture {:6.1} us = {:.2}% of one core",
            us(cost),
            core(cost, 10.0)
        );
    }
    println!("A 20 ms call (Opus, RTP, jitter buffer), CPU per frame:");
    for (name, config) in [
        ("processing on", ProcessingConfig::default()),
        ("processing off", off),
    ] {
        let one = per_call_frame(config, false, &far, &mic);
        let both = per_call_frame(config, true, &far, &mic);
        println!(
            "  {name:15} one end (encode + decode + render + capture): {:6.1} us = {:.2}% of one \
             core; both directions (two ends): {:6.1} us = {:.2}% of one core per call",
            us(one),
            core(one, 20.0),
            us(both),
            core(both, 20.0)
        );
    }
}
