//! Streaming sample-rate conversion of mono audio, channel down- and up-mixing, and the
//! correction of clock drift between a device and the media thread.
//!
//! - [`StreamResampler`]: rubato's FFT resampler at a fixed ratio, for files (exact lengths).
//! - [`SteeredResampler`]: rubato's asynchronous sinc resampler, whose ratio can be nudged by a
//!   few hundred ppm while it runs, without a step: what the devices use, at ratio ~1.0 too.
//! - [`DriftController`]: a slow PI controller that watches how much audio a device's queue holds
//!   and steers that ratio so the level stays put (bounded to [`MAX_DRIFT_PPM`]).
//! - [`CaptureDrift`] and [`PlaybackDrift`]: the media thread's logic of a capture and a playback
//!   (queue, priming, steering, the rare one-off trim), without a device: `DeviceSource` and
//!   `DeviceSink` wrap them around a ring buffer, and tests drive them with a simulated clock.
//!
//! Clock drift is never corrected by dropping or repeating samples: the steered ratio absorbs it
//! (up to [`MAX_DRIFT_PPM`]). Only a one-off excess far above what drift can build (a stall that
//! ends with a burst, [`TRIM_ABOVE`]) is still cut, and an empty queue still plays silence.
//!
//! Everything here runs on the media thread, never in a device callback. All buffers are
//! allocated when a converter is built; pushing, popping and steering do not allocate.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, Fft, FixedAsync, FixedSync, Resampler, Resizable,
    SincInterpolationParameters, SincInterpolationType, WindowFunction,
};

use super::AudioError;

/// Converts a stream of mono samples from one rate to another: push any number of input samples,
/// pop output samples as they become ready. Output lines up with input: the resampler's own
/// start-up delay is trimmed, so output sample `n` is input time `n / to`.
///
/// When the two rates are equal it passes samples through untouched.
#[derive(Debug)]
pub struct StreamResampler {
    from: u32,
    to: u32,
    fft: Option<FftBox>,
    /// Input samples per resampler call.
    chunk: usize,
    input: Vec<f32>,
    input_len: usize,
    out_buf: Vec<f32>,
    /// Output samples still to drop: the resampler's start-up delay.
    skip: usize,
    output: VecDeque<f32>,
    max_queued: usize,
    dropped: u64,
    total_in: u64,
    total_out: u64,
}

/// rubato's `Fft` has no `Debug`; this wrapper gives one.
struct FftBox(Fft<f32>);

impl std::fmt::Debug for FftBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fft")
            .field("ratio", &self.0.resample_ratio())
            .field("delay", &self.0.output_delay())
            .finish()
    }
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz that holds at most `max_queued` ready output
    /// samples (older ones are dropped and counted if nobody pops them).
    pub fn new(from: u32, to: u32, max_queued: usize) -> Result<Self, AudioError> {
        let err = |message: String| AudioError::Resampler { from, to, message };
        if from == 0 || to == 0 {
            return Err(err("sample rates must be above zero".into()));
        }
        // 10 ms of input per call: small enough for low delay, large enough to be cheap.
        let chunk = (from as usize / 100).max(16);
        let (fft, out_len, skip) = if from == to {
            (None, 0, 0)
        } else {
            // Sub-chunks of about 10 ms keep the FFT's delay at a few milliseconds.
            let fft = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                .map_err(|e| err(e.to_string()))?;
            let out_len = fft.output_frames_max();
            let skip = fft.output_delay();
            (Some(FftBox(fft)), out_len, skip)
        };
        let max_queued = max_queued.max(out_len);
        Ok(Self {
            from,
            to,
            fft,
            chunk,
            input: vec![0.0; chunk],
            input_len: 0,
            out_buf: vec![0.0; out_len],
            skip,
            output: VecDeque::with_capacity(max_queued + out_len),
            max_queued,
            dropped: 0,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Feeds input samples.
    pub fn push(&mut self, mut samples: &[f32]) -> Result<(), AudioError> {
        self.total_in += samples.len() as u64;
        if self.fft.is_none() {
            self.total_out += samples.len() as u64;
            queue_into(
                &mut self.output,
                self.max_queued,
                &mut self.dropped,
                samples,
            );
            return Ok(());
        }
        while !samples.is_empty() {
            let take = (self.chunk - self.input_len).min(samples.len());
            self.input[self.input_len..self.input_len + take].copy_from_slice(&samples[..take]);
            self.input_len += take;
            samples = &samples[take..];
            if self.input_len == self.chunk {
                self.process_chunk()?;
            }
        }
        Ok(())
    }

    /// Pushes the end of the stream through: after this, `available` covers every input sample
    /// pushed so far (converted), and nothing more. Push no more after flushing.
    pub fn flush(&mut self) -> Result<(), AudioError> {
        if self.fft.is_none() {
            return Ok(());
        }
        let expected = (self.total_in * u64::from(self.to)).div_ceil(u64::from(self.from));
        let mut guard = 0;
        while self.total_out < expected && guard < 1_000 {
            self.input[self.input_len..].fill(0.0);
            self.input_len = self.chunk;
            self.process_chunk()?;
            guard += 1;
        }
        // Drop what came from the zero padding.
        let extra = (self.total_out.saturating_sub(expected)) as usize;
        let keep = self.output.len().saturating_sub(extra);
        self.output.truncate(keep);
        self.total_out = expected;
        Ok(())
    }

    fn process_chunk(&mut self) -> Result<(), AudioError> {
        let (from, to) = (self.from, self.to);
        let err = |message: String| AudioError::Resampler { from, to, message };
        let Some(FftBox(fft)) = self.fft.as_mut() else {
            return Ok(());
        };
        let input = InterleavedSlice::new(&self.input[..], 1, self.chunk)
            .map_err(|e| err(e.to_string()))?;
        let out_frames = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, out_frames)
            .map_err(|e| err(e.to_string()))?;
        let (_, written) = fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| err(e.to_string()))?;
        self.input_len = 0;
        let skip = self.skip.min(written);
        self.skip -= skip;
        let produced = &self.out_buf[skip..written];
        queue_into(
            &mut self.output,
            self.max_queued,
            &mut self.dropped,
            produced,
        );
        self.total_out += produced.len() as u64;
        Ok(())
    }

    /// Output samples ready to pop.
    pub fn available(&self) -> usize {
        self.output.len()
    }

    /// Pops up to `out.len()` ready samples into `out`; returns how many.
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        let n = out.len().min(self.output.len());
        for (dst, src) in out.iter_mut().zip(self.output.drain(..n)) {
            *dst = src;
        }
        n
    }

    /// Drops the oldest ready samples so that at most `keep` remain; returns how many went.
    pub fn trim_to(&mut self, keep: usize) -> usize {
        let extra = self.output.len().saturating_sub(keep);
        self.output.drain(..extra);
        extra
    }

    /// Output samples dropped because nobody popped them in time.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Delay the resampler adds, in output samples, before output starts to appear (its
    /// internal buffering; the output itself is aligned, see the type's documentation).
    pub fn latency(&self) -> usize {
        match &self.fft {
            None => 0,
            Some(FftBox(fft)) => {
                fft.output_delay() + self.chunk * self.to as usize / self.from as usize
            }
        }
    }
}

fn queue_into(output: &mut VecDeque<f32>, max_queued: usize, dropped: &mut u64, samples: &[f32]) {
    // More than fits at all: only the newest count.
    let skip = samples.len().saturating_sub(max_queued);
    let samples = &samples[skip..];
    let room = max_queued.saturating_sub(output.len());
    let drop = samples.len().saturating_sub(room).min(output.len());
    output.drain(..drop);
    *dropped += (skip + drop) as u64;
    output.extend(samples.iter().copied());
}

/// Largest ratio correction the drift controller applies, in ppm: three times the +-300 ppm a
/// cheap crystal may be off, and still a pitch change of under 2 cents.
pub const MAX_DRIFT_PPM: f64 = 1_000.0;

/// A one-off excess of queued audio (48 kHz samples) above its target that is cut rather than
/// steered away: 40 ms. Steering at [`MAX_DRIFT_PPM`] sheds 1 ms a second; drift the controller
/// follows keeps the level within a device period or so of its target (the level is only seen
/// in whole device periods), so only a stall that ends in a burst, or a device that delivers
/// late and then all at once, ever reaches it.
pub const TRIM_ABOVE: usize = 1_920;

/// Length of the cross-fade that hides a cut (48 kHz samples): 2.5 ms. A cut is a one-off;
/// faded, it is a short smear instead of a broadband click.
const CUT_FADE: usize = 120;

/// Taps of the steered resampler's sinc filter: 64 (0.7 ms of delay at 48 kHz). Longer filters
/// gain only above 20 kHz, where Opus at 48 kHz hardly codes anything, for twice the CPU.
const SINC_LEN: usize = 64;

/// A streaming resampler of mono audio whose ratio can be nudged while it runs: rubato's
/// asynchronous sinc resampler, at `to / from` times `1 + correction` (the correction in ppm,
/// bounded by [`MAX_DRIFT_PPM`]). A change of correction is ramped over the next block, so the
/// output has no step in phase or pitch.
///
/// It converts whatever is pushed at once (in blocks of at most 10 ms), so it holds back no
/// input; its only delay is half its filter. Output lines up with input: that delay is trimmed
/// at the start. It runs at ratio 1.0 too (a 48 kHz device): steering needs a resampler even
/// when the nominal rates agree.
#[derive(Debug)]
pub struct SteeredResampler {
    from: u32,
    to: u32,
    inner: AsyncBox,
    /// Most input samples converted in one call.
    max_chunk: usize,
    out_buf: Vec<f32>,
    /// Output samples still to drop: the resampler's start-up delay.
    skip: usize,
    output: VecDeque<f32>,
    max_queued: usize,
    dropped: u64,
    correction_ppm: f64,
}

/// rubato's `Async` has a `Debug` that prints its buffers; this one prints the ratio.
struct AsyncBox(Async<f32>);

impl std::fmt::Debug for AsyncBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Async")
            .field("ratio", &self.0.resample_ratio())
            .finish()
    }
}

impl SteeredResampler {
    /// A resampler from `from` Hz to `to` Hz that holds at most `max_queued` ready output
    /// samples (older ones are dropped and counted if nobody pops them).
    pub fn new(from: u32, to: u32, max_queued: usize) -> Result<Self, AudioError> {
        let err = |message: String| AudioError::Resampler { from, to, message };
        if from == 0 || to == 0 {
            return Err(err("sample rates must be above zero".into()));
        }
        let max_chunk = (from as usize / 100).max(16);
        let params = SincInterpolationParameters {
            sinc_len: SINC_LEN,
            f_cutoff: None,
            oversampling_factor: 128,
            interpolation: SincInterpolationType::Linear,
            window: WindowFunction::BlackmanHarris2,
        };
        // A little room beyond the controller's bound, so its largest correction always fits.
        let max_relative = 1.0 + 2e-6 * MAX_DRIFT_PPM;
        let inner = Async::<f32>::new_sinc(
            f64::from(to) / f64::from(from),
            max_relative,
            &params,
            max_chunk,
            1,
            FixedAsync::Input,
        )
        .map_err(|e| err(e.to_string()))?;
        let out_len = inner.output_frames_max();
        let skip = inner.output_delay();
        let max_queued = max_queued.max(out_len + CUT_FADE);
        Ok(Self {
            from,
            to,
            inner: AsyncBox(inner),
            max_chunk,
            out_buf: vec![0.0; out_len],
            skip,
            output: VecDeque::with_capacity(max_queued + out_len),
            max_queued,
            dropped: 0,
            correction_ppm: 0.0,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Converts input samples; the output is ready to pop at once.
    pub fn push(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        for piece in samples.chunks(self.max_chunk) {
            self.process(piece)?;
        }
        Ok(())
    }

    fn process(&mut self, piece: &[f32]) -> Result<(), AudioError> {
        let (from, to) = (self.from, self.to);
        let err = |message: String| AudioError::Resampler { from, to, message };
        let AsyncBox(inner) = &mut self.inner;
        inner
            .set_chunk_size(piece.len())
            .map_err(|e| err(e.to_string()))?;
        let input = InterleavedSlice::new(piece, 1, piece.len()).map_err(|e| err(e.to_string()))?;
        let out_frames = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, out_frames)
            .map_err(|e| err(e.to_string()))?;
        let (_, written) = inner
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| err(e.to_string()))?;
        let skip = self.skip.min(written);
        self.skip -= skip;
        queue_into(
            &mut self.output,
            self.max_queued,
            &mut self.dropped,
            &self.out_buf[skip..written],
        );
        Ok(())
    }

    /// Sets the ratio to `to / from` times `1 + ppm / 1e6` (clamped to [`MAX_DRIFT_PPM`]); the
    /// change is ramped over the next block converted. Positive: more output per input.
    pub fn set_correction_ppm(&mut self, ppm: f64) {
        let ppm = if ppm.is_finite() {
            ppm.clamp(-MAX_DRIFT_PPM, MAX_DRIFT_PPM)
        } else {
            0.0
        };
        if ppm == self.correction_ppm {
            return;
        }
        // Within the bounds given at construction: cannot fail.
        if self
            .inner
            .0
            .set_resample_ratio_relative(1.0 + ppm * 1e-6, true)
            .is_ok()
        {
            self.correction_ppm = ppm;
        }
    }

    /// The correction in force, ppm.
    pub fn correction_ppm(&self) -> f64 {
        self.correction_ppm
    }

    /// Output samples ready to pop.
    pub fn available(&self) -> usize {
        self.output.len()
    }

    /// Pops up to `out.len()` ready samples into `out`; returns how many.
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        let n = out.len().min(self.output.len());
        for (dst, src) in out.iter_mut().zip(self.output.drain(..n)) {
            *dst = src;
        }
        n
    }

    /// Removes `n` ready samples. With `fade`, they go from just after the first [`CUT_FADE`]
    /// ones, cross-faded across the cut so that it does not click; without, the oldest go (a hard
    /// splice, what trimming did before). Returns how many went (fewer if not that many are
    /// queued, beyond the fade).
    pub fn cut(&mut self, n: usize, fade: bool) -> usize {
        let fade = if fade { CUT_FADE } else { 0 };
        let n = n.min(self.output.len().saturating_sub(fade));
        if n == 0 {
            return 0;
        }
        for i in 0..fade {
            let w = (i as f32 + 0.5) / fade as f32;
            self.output[i] = self.output[i] * (1.0 - w) + self.output[i + n] * w;
        }
        self.output.drain(fade..fade + n);
        n
    }

    /// Output samples dropped because nobody popped them in time.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Delay the resampler adds, in output samples (half its filter; the output itself is
    /// aligned, see the type's documentation).
    pub fn latency(&self) -> usize {
        self.inner.0.output_delay()
    }
}

/// Steers a [`SteeredResampler`] so that the audio a device's queue holds stays at its target:
/// a PI controller on the queue's low-water mark.
///
/// It is fed the queue's level at each read or write ([`DriftController::observe`]). Every
/// half second it takes the lowest level of the last 3 s (the margin before the queue would run
/// dry: jitter and bursty devices move the level up and down, the low-water mark only moves
/// with drift; 3 s covers a device that delivers 2 s at once), low-passes it (5 s) and compares
/// it with the target. The correction is `-(KP * error + KI * integral of error)`, bounded by
/// [`MAX_DRIFT_PPM`], with the integral frozen while bounded: a loop damped at 0.8 with a
/// natural period of about 100 s. The level is only seen between whole device periods, so it
/// carries a saw-tooth of one period (10 ms) as the clocks slide past each other; the
/// correction swings with it (a few hundred ppm, under a cent of pitch, with no step: each
/// change is ramped) while its average cancels the drift, and the queue stays within about a
/// period of its target (`media/tests/drift.rs`). Only an excess above [`TRIM_ABOVE`] is cut.
///
/// Until the level has first reached its band, the controller is starting: whatever offset a
/// device's start left is not drift, so it is not integrated (an estimate wound up there was
/// steered off for tens of seconds after: 70 ppm for a 0.7 ms start shortfall, measured
/// through a null sink, and the echo path slid under the canceller); the offset is closed
/// at [`KP_START`] toward the band's middle, on the raw low-water mark, within a few seconds
/// (two for a millisecond: the low-water mark is taken over half a second), and a capture cuts a start
/// excess at once (it is stale audio; a playback's excess is speech still to be heard).
#[derive(Debug, Clone)]
pub struct DriftController {
    max_ppm: f64,
    trim_above: usize,
    /// Samples (48 kHz) per sub-window.
    window: usize,
    /// Sub-windows the low-water mark looks back over.
    lookback: usize,
    elapsed: usize,
    window_min: usize,
    mins: [usize; LOOKBACK],
    /// Sub-windows seen since the history was last forgotten.
    seen: usize,
    /// The low-water mark, low-passed ([`SMOOTHING`]); `None` after a restart.
    smoothed: Option<f64>,
    integral: f64,
    correction_ppm: f64,
    /// Cuts are cross-faded (false only for [`DriftController::trimming_only`]).
    fade: bool,
    /// The level has not been inside its band yet (see the type's documentation).
    starting: bool,
    /// While starting, an excess above the band is cut at once (capture), not steered.
    cut_start_excess: bool,
}

/// Sub-windows of the low-water mark: 6 of 0.5 s.
const LOOKBACK: usize = 6;
const RATE: f64 = crate::SAMPLE_RATE as f64;
/// Samples per second the queue gains per ppm of correction (the plant's gain).
const PLANT: f64 = RATE * 1e-6;
/// Proportional gain, ppm per sample of error: 10 ms of error asks for about 1000 ppm. The
/// level is seen only at reads (or writes), when whole device periods have arrived: it carries
/// a saw-tooth of one device period whose period is `device period / drift` (33 s at 300 ppm).
/// A lower gain would steer more smoothly but lets a drift that starts at once move the queue
/// for longer: at 0.5 the queue of a capture 300 ppm slow fell 20 ms before the loop caught
/// it.
const KP: f64 = 2.0;
/// Proportional gain while starting ([`DriftController`]): 1 ms from the band's middle asks
/// for 480 ppm (a time constant of about 2 s).
const KP_START: f64 = 10.0;
/// Damping of the loop: a little under critical.
const ZETA: f64 = 0.8;
/// Natural angular frequency of the loop, rad/s (a period of about 100 s).
const LOOP_W: f64 = PLANT * KP / (2.0 * ZETA);
/// Integral gain, ppm per sample-second of error.
const KI: f64 = LOOP_W * LOOP_W / PLANT;
/// Time constant of the low-pass on the low-water mark, s: it takes jitter off, and some of
/// the saw-tooth.
const SMOOTHING: f64 = 5.0;

impl Default for DriftController {
    fn default() -> Self {
        Self::new()
    }
}

impl DriftController {
    /// Steering up to [`MAX_DRIFT_PPM`]; cuts only excesses above [`TRIM_ABOVE`].
    pub fn new() -> Self {
        Self {
            max_ppm: MAX_DRIFT_PPM,
            trim_above: TRIM_ABOVE,
            window: crate::SAMPLE_RATE as usize / 2,
            lookback: LOOKBACK,
            elapsed: 0,
            window_min: usize::MAX,
            mins: [0; LOOKBACK],
            seen: 0,
            smoothed: None,
            integral: 0.0,
            correction_ppm: 0.0,
            fade: true,
            starting: true,
            cut_start_excess: true,
        }
    }

    /// [`DriftController::new`] for a playback: the low-water mark looks back 0.5 s, not 3 s.
    /// Nothing but our own writes fills a playback queue, so it has no bursts to wait out;
    /// what a device stall leaves (the queue full when the device resumes) is cut at once, so
    /// the echo path moves twice within a second (the stall, the cut) and the echo canceller
    /// finds it again once, not twice seconds apart.
    pub fn for_playback() -> Self {
        Self {
            lookback: 1,
            cut_start_excess: false,
            ..Self::new()
        }
    }

    /// What Pinhole did before steering, kept to compare against: no steering; the low-water
    /// mark of each second is compared with the target and anything 10 ms above it is dropped,
    /// in a hard splice. Drift then turns into a click every half minute or so at 300 ppm (or,
    /// the other way, into an empty queue).
    pub fn trimming_only() -> Self {
        Self {
            max_ppm: 0.0,
            trim_above: crate::SAMPLE_RATE as usize / 100,
            window: crate::SAMPLE_RATE as usize,
            lookback: 1,
            fade: false,
            starting: false,
            ..Self::new()
        }
    }

    /// Whether cuts are cross-faded.
    pub fn fades(&self) -> bool {
        self.fade
    }

    /// Notes the queue's `level` against its `target` (both 48 kHz samples) after `elapsed`
    /// samples of reading or writing; returns how much to cut now (0 almost always). Read the
    /// new correction with [`DriftController::correction_ppm`].
    pub fn observe(&mut self, level: usize, target: usize, elapsed: usize) -> usize {
        self.observe_band(level, target..=target, elapsed)
    }

    /// [`DriftController::observe`] with a band for a target: while the low-water mark stays
    /// inside it the level is left alone (only a drift already found is steered), so a level
    /// that holds still is not moved; outside, the distance to the band is the error. An
    /// excess is cut down to the band's middle.
    pub fn observe_band(
        &mut self,
        level: usize,
        band: std::ops::RangeInclusive<usize>,
        elapsed: usize,
    ) -> usize {
        let (floor, ceiling) = (*band.start(), *band.end().max(band.start()));
        self.window_min = self.window_min.min(level);
        self.elapsed += elapsed;
        if self.elapsed < self.window {
            return 0;
        }
        self.elapsed = 0;
        let min = std::mem::replace(&mut self.window_min, usize::MAX);
        self.mins[self.seen % self.lookback] = min;
        self.seen += 1;
        if self.seen < self.lookback {
            return 0;
        }
        let low = self.mins[..self.lookback]
            .iter()
            .copied()
            .min()
            .unwrap_or(min);
        if low > ceiling + self.trim_above {
            self.restart();
            return low - (floor + ceiling) / 2;
        }
        if self.max_ppm == 0.0 {
            return 0;
        }
        if self.starting {
            if low > ceiling && self.cut_start_excess {
                self.restart();
                return low - (floor + ceiling) / 2;
            }
            if !(floor..=ceiling).contains(&low) {
                // Aimed at the band's middle, so that the edge is crossed, not crept up to.
                let error = low as f64 - (floor + ceiling) as f64 / 2.0;
                self.correction_ppm = (-KP_START * error).clamp(-self.max_ppm, self.max_ppm);
                return 0;
            }
            // In the band: from here on, drift is followed.
            self.starting = false;
            self.smoothed = None;
        }
        let dt = self.window as f64 / RATE;
        let smoothed = match self.smoothed {
            Some(level) => level + (low as f64 - level) * (dt / SMOOTHING).min(1.0),
            None => low as f64,
        };
        self.smoothed = Some(smoothed);
        let error = if smoothed < floor as f64 {
            smoothed - floor as f64
        } else {
            (smoothed - ceiling as f64).max(0.0)
        };
        // Inside the band the drift estimate leaks away (over the smoothing time): a level
        // that holds still there has no drift to follow, and an estimate wound up by a start's
        // transients would otherwise steer for ever, sliding the echo path (measured through a
        // null sink: 200 ppm kept after the start, 3 ms in 16 s, and the canceller lost the
        // echo). A real drift carries the level to an edge, where the estimate builds again.
        if error == 0.0 {
            self.integral *= 1.0 - (dt / SMOOTHING).min(1.0);
        }
        let integral = self.integral + error * dt;
        let wanted = -(KP * error + KI * integral);
        let held = -(KP * error + KI * self.integral);
        // Anti-windup: while the output is pinned at a bound, the integral only moves back.
        if wanted.abs() <= self.max_ppm || wanted.abs() < held.abs() {
            self.integral = integral;
        }
        self.correction_ppm = wanted.clamp(-self.max_ppm, self.max_ppm);
        0
    }

    /// Whether the level has not reached its band yet since the start (see the type's
    /// documentation).
    pub fn starting(&self) -> bool {
        self.starting
    }

    /// The correction to steer with, ppm (positive: more output per input).
    pub fn correction_ppm(&self) -> f64 {
        self.correction_ppm
    }

    /// Forgets the level history (after the queue jumped: an underrun, a cut); the drift
    /// estimate (the integral) stays.
    pub fn restart(&mut self) {
        self.elapsed = 0;
        self.window_min = usize::MAX;
        self.seen = 0;
        self.smoothed = None;
        // Until the look-back has filled again, steer by the drift estimate alone.
        self.correction_ppm = (-KI * self.integral).clamp(-self.max_ppm, self.max_ppm);
    }
}

/// What one [`CaptureDrift::read`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureRead {
    /// Real samples in the frame (the rest is silence).
    pub samples: usize,
    /// Samples cut to shed a one-off excess (0 almost always).
    pub cut: usize,
    /// The queue ran dry: the frame ends in silence, and reads are silent until a cushion has
    /// built up again.
    pub underrun: bool,
}

/// The media thread's half of a capture, without the device: device-rate mono audio in
/// ([`CaptureDrift::push`], as it arrives), 48 kHz frames out ([`CaptureDrift::read`], paced by
/// the media thread's clock). The queue between them is kept at one frame plus `cushion` at
/// the low-water mark by steering the resampler ([`DriftController`]).
#[derive(Debug)]
pub struct CaptureDrift {
    resampler: SteeredResampler,
    controller: DriftController,
    cushion: usize,
    primed: bool,
}

impl CaptureDrift {
    /// Converts from `device_rate` to 48 kHz, keeping `cushion` samples (48 kHz) beyond a frame
    /// and at most `backlog`.
    pub fn new(
        device_rate: u32,
        cushion: usize,
        backlog: usize,
        controller: DriftController,
    ) -> Result<Self, AudioError> {
        Ok(Self {
            resampler: SteeredResampler::new(device_rate, crate::SAMPLE_RATE, backlog)?,
            controller,
            cushion,
            primed: false,
        })
    }

    /// Audio from the device (mono, at its rate).
    pub fn push(&mut self, mono: &[f32]) -> Result<(), AudioError> {
        self.resampler.push(mono)
    }

    /// Fills `frame` (48 kHz); silence until a frame and a cushion are queued, and after the
    /// queue ran dry. `callback`: the most the device delivers at once, in its samples (per
    /// channel).
    ///
    /// The queue is seen only here, between whole device periods: as the two clocks slide past
    /// each other its level at reads carries a saw-tooth of one device period. The controller
    /// holds the middle of that saw-tooth at the target, so the target is a frame, the cushion
    /// and half a period (at most 10 ms: a device that delivers seconds at once is covered by
    /// the low-water mark's look-back, not by latency).
    pub fn read(&mut self, frame: &mut [f32], callback: usize) -> CaptureRead {
        let mut read = CaptureRead::default();
        let available = self.resampler.available();
        if self.primed {
            let period = self.period(callback).min(2 * self.cushion);
            let target = frame.len() + self.cushion + period / 2;
            // A band above the target, as for playback: a level that holds still up to half a
            // frame above it (where a device's start or a burst left it) is left alone, not
            // steered down at up to 1 ms a second for many seconds, which slides the echo path
            // the canceller tracks (measured through a null sink's monitor: 17 ms slid over 16
            // s of speech and the canceller lost the echo, ERLE 60 -> 5 dB).
            let cut = self.controller.observe_band(
                available,
                target..=target + frame.len() / 2,
                frame.len(),
            );
            self.resampler
                .set_correction_ppm(self.controller.correction_ppm());
            if cut > 0 {
                read.cut = self.resampler.cut(cut, self.controller.fades());
            }
        } else if available < frame.len() + self.cushion {
            frame.fill(0.0);
            return read;
        } else {
            self.primed = true;
        }
        read.samples = self.resampler.pop(frame);
        if read.samples < frame.len() {
            frame[read.samples..].fill(0.0);
            self.primed = false;
            self.controller.restart();
            read.underrun = true;
        }
        read
    }

    /// `callback` device samples in 48 kHz samples.
    fn period(&self, callback: usize) -> usize {
        let rate = u64::from(self.resampler.from_rate());
        (callback as u64 * u64::from(crate::SAMPLE_RATE) / rate) as usize
    }

    /// 48 kHz samples queued, ready to read.
    pub fn queued(&self) -> usize {
        self.resampler.available()
    }

    /// How far behind the device the reader is, in 48 kHz samples: what is queued plus the
    /// resampler's delay (a sample read next arrived that long ago).
    pub fn delay(&self) -> usize {
        self.resampler.available() + self.resampler.latency()
    }

    /// The drift correction in force, ppm.
    pub fn correction_ppm(&self) -> f64 {
        self.resampler.correction_ppm()
    }

    /// Samples dropped because the backlog was full (nobody read for that long).
    pub fn dropped(&self) -> u64 {
        self.resampler.dropped()
    }
}

/// The media thread's half of a playback, without the device: 48 kHz frames in
/// ([`PlaybackDrift::write`], paced by the media thread's clock), device-rate mono out
/// ([`PlaybackDrift::pop`], into the device's queue). The device's queue is kept at its largest
/// callback plus `cushion` at the low-water mark by steering the resampler.
#[derive(Debug)]
pub struct PlaybackDrift {
    resampler: SteeredResampler,
    controller: DriftController,
    cushion: usize,
    rate: u32,
    /// Device samples still to cut from what comes next.
    to_cut: usize,
}

impl PlaybackDrift {
    /// Converts 48 kHz to `device_rate`, keeping `cushion` samples (48 kHz) beyond a callback.
    pub fn new(
        device_rate: u32,
        cushion: usize,
        controller: DriftController,
    ) -> Result<Self, AudioError> {
        Ok(Self {
            resampler: SteeredResampler::new(
                crate::SAMPLE_RATE,
                device_rate,
                device_rate as usize,
            )?,
            controller,
            cushion,
            rate: device_rate,
            to_cut: 0,
        })
    }

    /// Converts `frame` (48 kHz). `queued`: device samples (per channel) the device's queue
    /// holds just now; `callback`: the most the device takes at once; `running`: the device
    /// has started (before that its queue says nothing about its clock). Returns the device
    /// samples cut to shed a one-off excess (0 almost always).
    pub fn write(
        &mut self,
        frame: &[f32],
        queued: usize,
        callback: usize,
        running: bool,
    ) -> Result<usize, AudioError> {
        if running {
            let to_48k = |n: usize| {
                (n as u64 * u64::from(crate::SAMPLE_RATE) / u64::from(self.rate)) as usize
            };
            let level = to_48k(queued + self.resampler.available());
            // Enough for the device's next callback, with a margin, and at most a frame more:
            // a device (a sound server's null sink) may take each frame as it is written, the
            // queue then holding a frame, which must be left alone (each move of playback
            // latency moves the echo the canceller tracks). Outside the band: steered.
            let callback = to_48k(callback).min(frame.len());
            let floor = callback / 2 + self.cushion;
            let ceiling = callback + self.cushion + frame.len() / 2;
            let cut = self
                .controller
                .observe_band(level, floor..=ceiling, frame.len());
            self.resampler
                .set_correction_ppm(self.controller.correction_ppm());
            let cut = (cut as u64 * u64::from(self.rate) / u64::from(crate::SAMPLE_RATE)) as usize;
            self.to_cut = (self.to_cut + cut).min(self.rate as usize / 2);
        }
        self.resampler.push(frame)?;
        // The excess is in the device's queue, out of reach: hold converted audio back while the
        // device drains it, then make the whole cut at once, in one cross-fade.
        let fade = self.controller.fades();
        if self.to_cut > 0 && self.resampler.available() >= self.to_cut + CUT_FADE {
            let cut = self.resampler.cut(self.to_cut, fade);
            self.to_cut = 0;
            return Ok(cut);
        }
        Ok(0)
    }

    /// Pops up to `out.len()` converted samples (device rate) for the device's queue; returns
    /// how many (none while a cut is pending, see [`PlaybackDrift::write`]).
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        if self.to_cut > 0 {
            return 0;
        }
        self.resampler.pop(out)
    }

    /// Converted samples not popped yet.
    pub fn available(&self) -> usize {
        self.resampler.available()
    }

    /// Device samples between a frame written and the device's queue: those not popped yet
    /// plus the resampler's delay.
    pub fn delay(&self) -> usize {
        self.resampler.available() + self.resampler.latency()
    }

    /// The drift correction in force, ppm.
    pub fn correction_ppm(&self) -> f64 {
        self.resampler.correction_ppm()
    }
}

/// Averages interleaved `channels`-channel audio into mono `out`; returns the frames written
/// (the smaller of the input's whole frames and `out.len()`).
pub fn downmix_interleaved(input: &[f32], channels: usize, out: &mut [f32]) -> usize {
    let channels = channels.max(1);
    if channels == 1 {
        let n = input.len().min(out.len());
        out[..n].copy_from_slice(&input[..n]);
        return n;
    }
    let scale = 1.0 / channels as f32;
    let mut n = 0;
    for (dst, frame) in out.iter_mut().zip(input.chunks_exact(channels)) {
        *dst = frame.iter().sum::<f32>() * scale;
        n += 1;
    }
    n
}

/// Copies mono `input` to every channel of interleaved `out`; returns the frames written (the
/// smaller of `input.len()` and the whole frames `out` holds).
pub fn upmix_to_interleaved(input: &[f32], channels: usize, out: &mut [f32]) -> usize {
    let channels = channels.max(1);
    let mut n = 0;
    for (frame, &s) in out.chunks_exact_mut(channels).zip(input) {
        frame.fill(s);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (0.5 * (std::f64::consts::TAU * hz * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    #[test]
    fn passthrough_when_rates_match() {
        let mut r = StreamResampler::new(48_000, 48_000, 10_000).unwrap();
        r.push(&[0.1, 0.2, 0.3]).unwrap();
        let mut out = [0.0; 4];
        assert_eq!(r.pop(&mut out), 3);
        assert_eq!(&out[..3], &[0.1, 0.2, 0.3]);
    }

    #[test]
    fn lengths_follow_the_ratio_for_common_rates() {
        for &from in &[8_000u32, 16_000, 22_050, 44_100, 96_000] {
            for (a, b) in [(from, 48_000), (48_000, from)] {
                let mut r = StreamResampler::new(a, b, 1 << 20).unwrap();
                let input = sine(440.0, a, a as usize / 2 + 7);
                for piece in input.chunks(333) {
                    r.push(piece).unwrap();
                }
                r.flush().unwrap();
                let expected = (input.len() as u64 * u64::from(b)).div_ceil(u64::from(a));
                assert_eq!(r.available() as u64, expected, "{a} -> {b}");
            }
        }
    }

    #[test]
    fn output_is_aligned_with_input() {
        // A click at a known time comes out at the same time.
        let mut input = vec![0.0f32; 44_100];
        input[22_050] = 1.0;
        let mut r = StreamResampler::new(44_100, 48_000, 1 << 20).unwrap();
        r.push(&input).unwrap();
        r.flush().unwrap();
        let mut out = vec![0.0; r.available()];
        r.pop(&mut out);
        let (at, _) = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert!((at as i64 - 24_000).abs() <= 2, "click at {at}");
    }

    #[test]
    fn queue_is_bounded() {
        let mut r = StreamResampler::new(48_000, 48_000, 1_000).unwrap();
        r.push(&vec![0.0; 5_000]).unwrap();
        assert_eq!(r.available(), 1_000);
        assert_eq!(r.dropped(), 4_000);
    }

    #[test]
    fn steered_output_is_aligned_and_follows_the_correction() {
        for (from, to) in [(48_000u32, 48_000u32), (44_100, 48_000), (48_000, 16_000)] {
            // A click at 0.5 s comes out at 0.5 s.
            let mut input = vec![0.0f32; from as usize];
            input[from as usize / 2] = 1.0;
            let mut r = SteeredResampler::new(from, to, 1 << 20).unwrap();
            for piece in input.chunks(441) {
                r.push(piece).unwrap();
            }
            let mut out = vec![0.0; r.available()];
            r.pop(&mut out);
            let (at, _) = out
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            let expected = to as i64 / 2;
            assert!(
                (at as i64 - expected).abs() <= 2,
                "{from} -> {to}: click at {at}"
            );
            // Output keeps pace with input, less the delay.
            let n = out.len() as i64 + r.latency() as i64;
            assert!((n - to as i64).abs() <= 4, "{from} -> {to}: {n} samples");
        }
        // -500 ppm: 20 s give 480 fewer samples (give or take the delay).
        let mut r = SteeredResampler::new(48_000, 48_000, 1 << 22).unwrap();
        r.set_correction_ppm(-500.0);
        r.push(&vec![0.1; 20 * 48_000]).unwrap();
        let short = 20 * 48_000 - (r.available() + r.latency()) as i64;
        assert!((short - 480).abs() <= 4, "{short} fewer");
        // Beyond the bound: clamped.
        r.set_correction_ppm(5_000.0);
        assert_eq!(r.correction_ppm(), MAX_DRIFT_PPM);
    }

    #[test]
    fn a_cut_is_cross_faded_or_hard() {
        let mut r = SteeredResampler::new(48_000, 48_000, 1 << 20).unwrap();
        r.push(&(0..4_800).map(|i| i as f32).collect::<Vec<_>>())
            .unwrap();
        let before = r.available();
        assert_eq!(r.cut(1_000, true), 1_000);
        assert_eq!(r.available(), before - 1_000);
        let mut out = vec![0.0; r.available()];
        r.pop(&mut out);
        // A ramp: the fade moves from the old stretch to the one 1000 later without a step
        // larger than the jump spread over the fade.
        let worst = out.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max);
        assert!(
            worst < 1.0 + 1_000.0 / CUT_FADE as f32 + 0.5,
            "step {worst}"
        );
        let jump = out[CUT_FADE + 10] - out[0];
        assert!(
            (jump - (1_000.0 + CUT_FADE as f32 + 10.0)).abs() < 10.0,
            "{jump}"
        );

        let mut r = SteeredResampler::new(48_000, 48_000, 1 << 20).unwrap();
        r.push(&(0..4_800).map(|i| i as f32).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(r.cut(1_000, false), 1_000);
        let mut first = [0.0f32; 1];
        r.pop(&mut first);
        assert!((first[0] - 1_000.0).abs() < 40.0, "{}", first[0]);
    }

    #[test]
    fn controller_cuts_a_one_off_excess_and_steers_a_small_one() {
        // Once the level has been at its target, 20 ms above it is steered (negative: less
        // output), never cut.
        let mut c = DriftController::new();
        for _ in 0..200 {
            assert_eq!(c.observe(1_440, 1_440, 960), 0);
        }
        assert!(!c.starting());
        for _ in 0..500 {
            assert_eq!(c.observe(1_440 + 960, 1_440, 960), 0);
        }
        assert_eq!(c.correction_ppm(), -MAX_DRIFT_PPM);
        // 300 ms above: cut once the look-back (3 s) has seen it, down to the target.
        let mut c = DriftController::new();
        let cuts: Vec<usize> = (0..200)
            .map(|_| c.observe(1_440 + 14_400, 1_440, 960))
            .filter(|&n| n > 0)
            .collect();
        assert_eq!(cuts, [14_400]);
    }

    #[test]
    fn a_start_excess_is_cut_by_a_capture_and_steered_by_a_playback() {
        let mut capture = DriftController::new();
        let cuts: Vec<usize> = (0..200)
            .map(|_| capture.observe(1_440 + 960, 1_440, 960))
            .filter(|&n| n > 0)
            .collect();
        assert_eq!(cuts, [960], "a capture cuts its start excess once");
        let mut playback = DriftController::for_playback();
        for _ in 0..200 {
            assert_eq!(playback.observe(1_440 + 960, 1_440, 960), 0);
        }
        assert_eq!(playback.correction_ppm(), -MAX_DRIFT_PPM);
        assert!(playback.starting());
    }

    /// The controller against a queue whose clocks agree: whatever the start left is closed,
    /// and once the level is in band nothing is steered any more (measured through a null sink
    /// before: a 0.7 ms start shortfall wound the integral up and kept 70 ppm for 20 s).
    #[test]
    fn a_start_shortfall_is_closed_in_seconds_and_leaves_no_steering() {
        let band = 1_440..=1_920;
        let mut c = DriftController::for_playback();
        let mut level = 1_440.0 - 34.0;
        let mut closed_at = None;
        for frame in 0..50 * 60 {
            assert_eq!(c.observe_band(level as usize, band.clone(), 960), 0);
            // The resampler makes `ppm` more output per input: the queue gains that.
            level += c.correction_ppm() * 1e-6 * 960.0;
            if closed_at.is_none() && !c.starting() {
                closed_at = Some(frame);
            }
        }
        let closed_at = closed_at.expect("the start shortfall was never closed");
        assert!(closed_at < 50 * 3, "closed after {closed_at} frames");
        assert_eq!(c.correction_ppm(), 0.0);
    }

    #[test]
    fn mixing() {
        let mut mono = [0.0; 3];
        assert_eq!(
            downmix_interleaved(&[1.0, 0.0, 0.5, 0.5, 0.2], 2, &mut mono),
            2
        );
        assert_eq!(&mono[..2], &[0.5, 0.5]);
        let mut stereo = [0.0; 5];
        assert_eq!(upmix_to_interleaved(&[0.1, 0.2, 0.3], 2, &mut stereo), 2);
        assert_eq!(stereo, [0.1, 0.1, 0.2, 0.2, 0.0]);
    }
}
