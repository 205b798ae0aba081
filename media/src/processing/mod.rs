//! Capture-path audio processing: echo cancellation, noise suppression, gain control and a
//! high-pass filter, so that a laptop without headphones does not send the other side its own
//! voice back, and a fan or a quiet microphone does not reach it either.
//!
//! The engine is [`sonora`], a pure-Rust port of WebRTC's audio processing module (AEC3 with its
//! delay estimator, the noise suppressor, AGC2's adaptive digital gain with its limiter, the
//! high-pass filter). It was chosen over the `aec3` crate (AEC3 alone, no noise suppression or
//! gain control) and over the `webrtc-audio-processing` bindings (a C++ build of the upstream
//! sources, a toolchain and minutes of compile time); the comparison is in the README.
//!
//! # The flow
//!
//! ```text
//!  jitter buffer -> decoder -> volume -> render(played) -> Sink  (speaker)
//!                                             |  the reference: exactly what is played
//!                                             v
//!  Source (microphone) -> capture(frame) -> [high-pass -> AEC3 -> noise suppression -> AGC2]
//!                                        -> encoder -> RTP
//! ```
//!
//! With echo cancellation on, the engine is given the microphone 18 dB down and the level is
//! restored after it (AGC2's gains raised as much), so that AEC3 adapts to an echo as loud as
//! what is played; see [`CANCELLER_INPUT_GAIN`].
//!
//! # The timing contract
//!
//! [`VoiceProcessor::render`] is called for each frame written to the sink, with the samples as
//! written (after the volume); [`VoiceProcessor::capture`] for each frame read from the source,
//! before it is encoded. Both run on the media thread, in whatever order frames arrive. The time
//! between a sample being handed to `render` and its echo appearing in `capture` (the sink's and
//! the source's buffers, the device latencies, the room) is not given to the canceller: AEC3
//! estimates it by matching the two signals (up to about half a second with its default
//! settings; up to 200 ms it is found within the first second or two of far-end speech, longer
//! delays take a few seconds more), and
//! [`ProcessingStats::echo_delay_ms`] says what it found. What the canceller cannot follow is a
//! reference that is not what is played (a volume applied after `render`), nor an echo path
//! that jumps (a sink that cuts or pads its buffer, a resampling ratio steered hard): AEC3
//! finds a new delay only after several seconds of far-end speech (a 40 ms jump: about 7 s in
//! `media/tests/processing.rs`), and the echo passes meanwhile. So `render` sees the
//! very samples the sink is given, and the devices' latency should hold still.
//!
//! # Format
//!
//! 48 kHz mono `f32` in `[-1, 1]`. The engine works in 10 ms blocks (480 samples); a frame of
//! any multiple of 480 samples (10, 20, 40 ms...) is cut into blocks. A frame whose length is not
//! a multiple of 480 is processed up to its last whole block; the rest passes unprocessed (and
//! is logged once), since the pipeline's frames are always whole 10 ms multiples.
//!
//! # Cost and allocation
//!
//! This module's buffers are allocated in [`VoiceProcessor::new`]; its own code in `render`,
//! `capture` and `stats` allocates nothing. sonora 0.2 itself does allocate: about 50 small
//! heap allocations per 10 ms block (render and capture together, all parts on), counted in
//! `media/tests/processing.rs` with a counting allocator; they are short-lived buffers the
//! system allocator serves from its thread cache, and the bench's CPU figure includes them.
//! [`VoiceProcessor::set_config`] reconfigures the engine, which allocates and resets the parts
//! it turns on: call it on a user's change, not per frame. The CPU cost is measured by
//! `cargo bench -p media --bench processing`.

pub mod synth;

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression,
    NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

/// The sample rate the processor takes and gives (the pipeline's rate).
pub const SAMPLE_RATE: u32 = crate::SAMPLE_RATE;

/// Samples in one 10 ms block, the unit the engine processes.
pub const BLOCK: usize = SAMPLE_RATE as usize / 100;

/// Blocks in the window [`ProcessingStats::erle_db`] is measured over (one second).
const ERLE_WINDOW: usize = 100;

/// Blocks after far-end activity during which the microphone may still carry its echo: the
/// longest echo delay AEC3 looks for (about 0.5 s with its default settings) plus a reverberant
/// tail.
const FAR_END_HANGOVER: u32 = 60;

/// A render block with at least this mean square (-50 dBFS) counts as far-end activity.
const FAR_END_ACTIVE: f32 = 1e-5;

/// Far-end-active blocks needed in the window before an ERLE figure is given (a quarter second).
const ERLE_MIN_BLOCKS: usize = 25;

/// Which parts of the capture processing run. Default: all on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingConfig {
    /// Acoustic echo cancellation (AEC3) against what the speaker plays.
    pub echo_cancellation: bool,
    /// Stationary noise suppression (fans, hum, hiss), moderate level (about 12 dB).
    pub noise_suppression: bool,
    /// Automatic gain (AGC2 adaptive digital gain and its limiter): a quiet or distant talker
    /// brought to a steady level.
    pub gain_control: bool,
    /// A high-pass filter (cut-off about 80 Hz): rumble, handling noise and DC removed.
    pub high_pass: bool,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
            high_pass: true,
        }
    }
}

impl ProcessingConfig {
    /// Everything off: the microphone's samples pass untouched.
    pub fn off() -> Self {
        Self {
            echo_cancellation: false,
            noise_suppression: false,
            gain_control: false,
            high_pass: false,
        }
    }

    /// True when nothing runs.
    pub fn is_off(&self) -> bool {
        *self == Self::off()
    }

    /// The engine's configuration for these switches.
    fn engine_config(&self) -> Config {
        Config {
            high_pass_filter: self.high_pass.then(HighPassFilter::default),
            echo_canceller: self.echo_cancellation.then(|| EchoCanceller {
                // AEC3 wants its own high-pass in front; with the user's filter off it still
                // runs inside the canceller only, as in WebRTC.
                enforce_high_pass_filtering: true,
                ..EchoCanceller::default()
            }),
            noise_suppression: self.noise_suppression.then(|| NoiseSuppression {
                level: NoiseSuppressionLevel::Moderate,
                ..NoiseSuppression::default()
            }),
            gain_controller2: self.gain_control.then(|| GainController2 {
                // No input volume controller: Pinhole does not drive the OS mixer.
                input_volume_controller: false,
                adaptive_digital: Some(self.adaptive_digital()),
                ..GainController2::default()
            }),
            ..Config::default()
        }
    }

    /// What the engine is given of the microphone: [`CANCELLER_INPUT_GAIN`] with echo
    /// cancellation on, all of it otherwise.
    fn input_gain(&self) -> f32 {
        if self.echo_cancellation {
            CANCELLER_INPUT_GAIN
        } else {
            1.0
        }
    }

    /// AGC2's adaptive gain, its starting and largest gains raised by what the input was
    /// lowered (it finds the rest itself: its targets are levels of its output).
    fn adaptive_digital(&self) -> AdaptiveDigital {
        let lowered_db = -20.0 * self.input_gain().log10();
        let default = AdaptiveDigital::default();
        AdaptiveDigital {
            initial_gain_db: default.initial_gain_db + lowered_db,
            max_gain_db: default.max_gain_db + lowered_db,
            ..default
        }
    }

    /// What the engine's output is multiplied by to bring it back to the microphone's level:
    /// the inverse of [`ProcessingConfig::input_gain`], unless gain control sets the level.
    fn output_gain(&self) -> f32 {
        if self.gain_control {
            1.0
        } else {
            1.0 / self.input_gain()
        }
    }
}

/// What the engine is given of the microphone with echo cancellation on: its samples times this
/// (-18 dB); the level comes back after it (AGC2's gains raised as much, or the output
/// multiplied by the inverse with gain control off).
///
/// AEC3's adaptive filter steps by `H_error / (0.5 * H_error * X2 + n * E2)` (render power
/// `X2`, error power `E2`, `n` its 13 partitions): it takes an error as loud as the render for
/// double talk and barely adapts. An echo path near 0 dB (a speaker at full volume beside the
/// microphone, a sound server's monitor of what it plays) is such an error until the filter has
/// converged, so the filter never converged: the suppressor alone held the echo through AEC3's
/// initial state, then its near-end detector took the echo it had not removed for the local
/// talker and let it through (ERLE 8-33 dB from 2 s on, 1-20 dB in many seconds; through a real
/// null sink 2-20 dB after 4 s). Lowered, a 0 dB path looks like a -18 dB one, where the
/// filter converges. AEC3 is linear in its input up to its suppressor, whose
/// gains are ratios; what moves is its absolute floors (comfort noise, thresholds), 18 dB higher
/// relative to the microphone. The price is paid by weak echoes, which were removed down to
/// that floor: a -20 dB path without any room noise keeps 26.8-28.6 dB of ERLE instead of 44,
/// its residual about -67 dBFS during speech, under a quiet room's own noise. Measured over echo paths from 0 to
/// -30 dB in `media/examples/aec_lab.rs` (the README has the table).
pub const CANCELLER_INPUT_GAIN: f32 = 0.125;

/// What the processing measures, for the call view and the JSON report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessingStats {
    /// Echo return loss enhancement over the last second, dB (None while unknown / AEC off).
    ///
    /// Measured here, not by the canceller: the microphone's energy against the processed
    /// output's, over the 10 ms blocks of the last second during which the far end was playing
    /// (or had played within the last 0.6 s, the echo's reach). In single talk this is the echo
    /// removed (noise suppression and gain included, as the other side hears it); while the
    /// near end talks too, it falls, since the near-end voice is rightly kept.
    pub erle_db: Option<f32>,
    /// The echo path delay the canceller found, ms.
    pub echo_delay_ms: Option<u32>,
}

/// The microphone's and the output's energy of one 10 ms block, and whether the far end could
/// be heard in it.
#[derive(Debug, Clone, Copy, Default)]
struct BlockEnergy {
    far_end: bool,
    mic: f32,
    out: f32,
}

/// Capture-path processing for one call: 48 kHz mono, 10 ms blocks inside.
///
/// Feed it what is played ([`render`](Self::render)) and what is captured
/// ([`capture`](Self::capture)); see the [module docs](self) for the timing contract.
#[derive(Debug)]
pub struct VoiceProcessor {
    config: ProcessingConfig,
    engine: AudioProcessing,
    /// The microphone's block as captured (for the ERLE figure).
    input: Box<[f32; BLOCK]>,
    /// The engine's input block, the microphone times [`ProcessingConfig::input_gain`] (the
    /// engine does not process in place).
    staged: Box<[f32; BLOCK]>,
    /// Where `render`'s output goes (unused: the render path is only analysed).
    render_out: Box<[f32; BLOCK]>,
    /// The last second of capture blocks, a ring.
    energies: Box<[BlockEnergy; ERLE_WINDOW]>,
    next_energy: usize,
    /// Blocks since the last far-end activity (saturating).
    since_far_end: u32,
    /// Whether a frame of an odd length has been logged.
    odd_length_logged: bool,
}

impl VoiceProcessor {
    /// A processor with these parts on. Allocates everything it will need.
    pub fn new(config: ProcessingConfig) -> Self {
        let stream = StreamConfig::new(SAMPLE_RATE, 1);
        let engine = AudioProcessing::builder()
            .config(config.engine_config())
            .capture_config(stream)
            .render_config(stream)
            .build();
        Self {
            config,
            engine,
            input: Box::new([0.0; BLOCK]),
            staged: Box::new([0.0; BLOCK]),
            render_out: Box::new([0.0; BLOCK]),
            energies: Box::new([BlockEnergy::default(); ERLE_WINDOW]),
            next_energy: 0,
            since_far_end: u32::MAX,
            odd_length_logged: false,
        }
    }

    /// Turns parts on or off. The parts turned on start afresh (the canceller reconverges in a
    /// second or two); may allocate, so call it on a change, not per frame.
    pub fn set_config(&mut self, config: ProcessingConfig) {
        if config == self.config {
            return;
        }
        self.config = config;
        self.engine.apply_config(config.engine_config());
        *self.energies = [BlockEnergy::default(); ERLE_WINDOW];
    }

    /// The parts that run.
    pub fn config(&self) -> ProcessingConfig {
        self.config
    }

    /// What the speaker is about to play (after volume), exactly as written to the Sink.
    pub fn render(&mut self, played: &[f32]) {
        if self.config.is_off() {
            return;
        }
        self.check_length(played.len());
        for block in played.chunks_exact(BLOCK) {
            let energy = mean_square(block);
            if energy >= FAR_END_ACTIVE {
                self.since_far_end = 0;
            }
            if self.config.echo_cancellation {
                // Errors are only for unsupported formats, which the constant 48 kHz mono
                // 480-sample blocks never are.
                let _ = self
                    .engine
                    .process_render_f32(&[block], &mut [&mut self.render_out[..]]);
            }
        }
    }

    /// The microphone's frame, processed in place (echo removed, noise suppressed, gain).
    pub fn capture(&mut self, frame: &mut [f32]) {
        if self.config.is_off() {
            return;
        }
        self.check_length(frame.len());
        let (input_gain, output_gain) = (self.config.input_gain(), self.config.output_gain());
        for block in frame.chunks_exact_mut(BLOCK) {
            self.input.copy_from_slice(block);
            for (staged, mic) in self.staged.iter_mut().zip(block.iter()) {
                *staged = mic * input_gain;
            }
            let _ = self
                .engine
                .process_capture_f32(&[&self.staged[..]], &mut [&mut *block]);
            if output_gain != 1.0 {
                block.iter_mut().for_each(|s| *s *= output_gain);
            }
            let far_end = self.since_far_end <= FAR_END_HANGOVER;
            self.since_far_end = self.since_far_end.saturating_add(1);
            self.energies[self.next_energy] = BlockEnergy {
                far_end,
                mic: mean_square(&self.input[..]),
                out: mean_square(block),
            };
            self.next_energy = (self.next_energy + 1) % ERLE_WINDOW;
        }
    }

    /// What the processing measured; see [`ProcessingStats`].
    pub fn stats(&self) -> ProcessingStats {
        if !self.config.echo_cancellation {
            return ProcessingStats::default();
        }
        let (mut blocks, mut mic, mut out) = (0, 0.0f64, 0.0f64);
        for e in self.energies.iter().filter(|e| e.far_end) {
            blocks += 1;
            mic += f64::from(e.mic);
            out += f64::from(e.out);
        }
        let erle_db = (blocks >= ERLE_MIN_BLOCKS && mic > 0.0)
            // Floor the output at -120 dBFS so that a fully suppressed second reads as a large
            // finite figure rather than infinity.
            .then(|| (10.0 * (mic / out.max(1e-12 * blocks as f64)).log10()) as f32);
        let echo_delay_ms = self
            .engine
            .statistics()
            .delay_ms
            .and_then(|d| u32::try_from(d).ok());
        ProcessingStats {
            erle_db,
            echo_delay_ms,
        }
    }

    fn check_length(&mut self, len: usize) {
        if !len.is_multiple_of(BLOCK) && !self.odd_length_logged {
            self.odd_length_logged = true;
            tracing::warn!(
                len,
                "audio processing takes frames of whole 10 ms blocks (480 samples); the last {} \
                 samples of this frame pass unprocessed",
                len % BLOCK
            );
        }
    }
}

/// Mean of the squared samples.
fn mean_square(block: &[f32]) -> f32 {
    block.iter().map(|s| s * s).sum::<f32>() / block.len().max(1) as f32
}
