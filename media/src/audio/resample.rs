//! Streaming sample-rate conversion of mono audio (rubato's FFT resampler), and channel down- and
//! up-mixing.
//!
//! The resampler works on the media thread, never in a device callback. All its buffers are
//! allocated when it is built; `push` and `pop` do not allocate.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

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
