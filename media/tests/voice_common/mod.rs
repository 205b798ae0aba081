//! Shared by the voice tests: two sessions over two lossy links in virtual time, and the audio
//! checks.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use media::analysis::{dominant_frequency, longest_silence};
use media::tone::Tone;
use media::voice::link::{LinkConfig, LossyLink};
use media::voice::{VoiceConfig, VoiceSession, VoiceStats};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub const RATE: u32 = 48_000;

/// One end of a simulated call.
pub struct End {
    pub session: VoiceSession,
    pub tone: Tone,
    /// The end's audio clock error in parts per million (positive: runs fast).
    pub ppm: f64,
    /// Everything this end played, if recorded.
    pub heard: Vec<f32>,
    pub record: bool,
    /// Capture goes on but nothing is sent (the user muted).
    pub muted: bool,
    pub max_jb_delay: Duration,
    /// (virtual seconds, jitter buffer delay) sampled once a second.
    pub delay_trace: Vec<(f64, Duration)>,
    next_capture: Instant,
    next_playout: Instant,
    frames: u64,
    frame_buf: Vec<f32>,
}

pub struct Call {
    pub t0: Instant,
    pub now: Instant,
    pub a: End,
    pub b: End,
    /// a -> b and b -> a.
    pub ab: LossyLink,
    pub ba: LossyLink,
}

pub struct CallSetup {
    pub config: VoiceConfig,
    pub link: LinkConfig,
    pub seed: u64,
    pub tone_a: f64,
    pub tone_b: f64,
    pub ppm_a: f64,
    pub ppm_b: f64,
    pub record: bool,
}

impl Default for CallSetup {
    fn default() -> Self {
        Self {
            config: VoiceConfig::default(),
            link: LinkConfig::default(),
            seed: 1,
            tone_a: 440.0,
            tone_b: 660.0,
            ppm_a: 0.0,
            ppm_b: 0.0,
            record: true,
        }
    }
}

/// A link that delays by `delay_ms` plus up to `jitter_ms`, and does nothing else wrong.
pub fn link(delay_ms: u64, jitter_ms: u64) -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(delay_ms),
        jitter: Duration::from_millis(jitter_ms),
        ..LinkConfig::default()
    }
}

impl CallSetup {
    /// The default call (440 Hz from a, 660 Hz from b, recorded) over `link`, seeded.
    pub fn over(link: LinkConfig, seed: u64) -> Self {
        Self {
            link,
            seed,
            ..Self::default()
        }
    }
}

impl Call {
    /// The call `setup` describes, run for `duration` of virtual time.
    pub fn started(setup: &CallSetup, duration: Duration) -> Self {
        let mut call = Self::new(setup);
        call.run(duration);
        call
    }

    pub fn new(setup: &CallSetup) -> Self {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(setup.seed);
        let frame = setup.config.codec.frame.samples();
        let end = |rng: &mut StdRng, hz: f64, ppm: f64, phase: Duration| End {
            session: VoiceSession::new(setup.config.clone(), t0, rng).unwrap(),
            tone: Tone::new(hz, RATE, 0.5),
            ppm,
            heard: Vec::new(),
            record: setup.record,
            muted: false,
            max_jb_delay: Duration::ZERO,
            delay_trace: Vec::new(),
            next_capture: t0 + phase,
            next_playout: t0 + phase + Duration::from_micros(7_300),
            frames: 0,
            frame_buf: vec![0.0; frame],
        };
        let a = end(&mut rng, setup.tone_a, setup.ppm_a, Duration::ZERO);
        let b = end(
            &mut rng,
            setup.tone_b,
            setup.ppm_b,
            Duration::from_micros(3_100),
        );
        Self {
            t0,
            now: t0,
            a,
            b,
            ab: LossyLink::new(setup.link, setup.seed.wrapping_mul(31).wrapping_add(7)),
            ba: LossyLink::new(setup.link, setup.seed.wrapping_mul(17).wrapping_add(3)),
        }
    }

    /// Runs the call for `duration` of virtual time.
    pub fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let mut t = self.a.next_capture.min(self.a.next_playout);
            t = t.min(self.b.next_capture).min(self.b.next_playout);
            t = t
                .min(self.a.session.poll_timeout())
                .min(self.b.session.poll_timeout());
            if let Some(x) = self.ab.next_arrival() {
                t = t.min(x);
            }
            if let Some(x) = self.ba.next_arrival() {
                t = t.min(x);
            }
            if t > end {
                break;
            }
            self.now = t;
            while let Some(d) = self.ab.receive(t) {
                self.b.session.handle_datagram(t, &d);
            }
            while let Some(d) = self.ba.receive(t) {
                self.a.session.handle_datagram(t, &d);
            }
            step(&mut self.a, t, &mut self.ab, self.t0);
            step(&mut self.b, t, &mut self.ba, self.t0);
        }
        self.now = end;
    }
}

/// The end's audio device period (the setup's frame), on its own clock.
fn frame_interval(end: &End) -> Duration {
    let period = Duration::from_secs_f64(end.frame_buf.len() as f64 / f64::from(RATE));
    period.div_f64(1.0 + end.ppm * 1e-6)
}

fn step(end: &mut End, t: Instant, out: &mut LossyLink, t0: Instant) {
    if t >= end.session.poll_timeout() {
        end.session.handle_timeout(t, &mut out.transport(t));
    }
    if t >= end.next_capture {
        end.tone.fill(&mut end.frame_buf);
        if !end.muted {
            end.session
                .push_capture(t, &end.frame_buf, &mut out.transport(t));
        }
        end.next_capture += frame_interval(end);
    }
    if t >= end.next_playout {
        end.session.pull_playout(t, &mut end.frame_buf);
        if end.record {
            end.heard.extend_from_slice(&end.frame_buf);
        }
        end.next_playout += frame_interval(end);
        end.frames += 1;
        let delay = end.session.stats().jitter_buffer_delay;
        end.max_jb_delay = end.max_jb_delay.max(delay);
        if end.frames.is_multiple_of(50) {
            end.delay_trace.push(((t - t0).as_secs_f64(), delay));
        }
    }
}

pub fn stats(end: &End) -> VoiceStats {
    end.session.stats()
}

/// Writes `samples` as a 48 kHz mono float WAV for a look after the test (the path is printed);
/// into cargo's temporary directory for tests (`target/tmp`), overwritten by the next run
/// rather than piling up in the system's temp directory.
pub fn write_wav(name: &str, samples: &[f32]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("voice-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wav"));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    path
}

/// Reads a mono WAV back as f32.
pub fn read_wav(path: &std::path::Path) -> (Vec<f32>, u32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.unwrap() as f32 / scale)
                .collect()
        }
    };
    (samples, spec.sample_rate)
}

/// The longest run of near-silence (5 ms windows with RMS below `threshold`), in milliseconds.
pub fn longest_gap_ms(samples: &[f32], rate: u32, threshold: f32) -> f64 {
    let window = Duration::from_millis(5);
    longest_silence(samples, rate, window, threshold).as_secs_f64() * 1_000.0
}

/// The dominant frequency between 100 Hz and 2 kHz, to 5 Hz.
pub fn dominant(samples: &[f32], rate: u32) -> f64 {
    dominant_frequency(samples, rate, 100.0, 2_000.0, 5.0)
}
