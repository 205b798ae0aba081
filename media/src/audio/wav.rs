//! WAV files: read any rate, channel count and sample format as 48 kHz mono; write 48 kHz mono
//! 16-bit.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavIntoSamples, WavReader, WavSpec, WavWriter};

use super::resample::{StreamResampler, downmix_interleaved};
use super::{AudioError, LevelMeter, Sink, Source};
use crate::SAMPLE_RATE;

/// Frames read from the file per step (before resampling).
const READ_FRAMES: usize = 1024;

/// Limits on what a WAV source accepts: beyond them a file is more likely broken than real.
const MAX_CHANNELS: u16 = 64;
const MIN_RATE: u32 = 1_000;
const MAX_RATE: u32 = 768_000;

/// How often a WAV sink rewrites its header, in samples: a process killed without unwinding
/// still leaves a valid file holding all but the last second.
const HEADER_EVERY: u64 = SAMPLE_RATE as u64;

fn wav_error(path: &Path, e: impl std::fmt::Display) -> AudioError {
    AudioError::Wav {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// What Pinhole reads, for messages about what it does not.
const READABLE: &str = "PCM WAV with 8 to 32 bit integer or 32-bit float samples";

/// The error for a file hound could not open: an encoding it does not decode is named (from
/// the `fmt ` chunk's format tag), with what is supported and how to convert it.
fn open_error(path: &Path, e: hound::Error) -> AudioError {
    match (&e, format_tag(path)) {
        (hound::Error::Unsupported, Some(tag)) => wav_error(
            path,
            format!(
                "its samples are {} (WAV format {tag:#06x}), which Pinhole does not decode; it \
                 reads {READABLE} (convert it with `ffmpeg -i IN -c:a pcm_s16le OUT.wav`)",
                format_name(tag)
            ),
        ),
        _ => wav_error(path, e),
    }
}

/// The format tag of a RIFF/WAVE file's `fmt ` chunk, if the file has one.
fn format_tag(path: &Path) -> Option<u16> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .ok()?
        .take(512)
        .read_to_end(&mut head)
        .ok()?;
    if head.get(..4)? != b"RIFF" || head.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    while let Some(header) = head.get(at..at + 8) {
        let size = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
        if &header[..4] == b"fmt " {
            let tag = head.get(at + 8..at + 10)?;
            return Some(u16::from_le_bytes([tag[0], tag[1]]));
        }
        at = at.checked_add(8)?.checked_add(size + size % 2)?;
    }
    None
}

/// The usual name of a WAV format tag.
fn format_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "\u{3bc}-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 | 0x0055 => "MPEG audio",
        0xFFFE => "in an extensible format Pinhole does not decode",
        _ => "in an encoding Pinhole does not know",
    }
}

enum Samples {
    Int {
        samples: WavIntoSamples<BufReader<File>, i32>,
        scale: f32,
    },
    Float(WavIntoSamples<BufReader<File>, f32>),
}

impl std::fmt::Debug for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Samples::Int { scale, .. } => write!(f, "Int(scale {scale})"),
            Samples::Float(_) => f.write_str("Float"),
        }
    }
}

impl Samples {
    fn next(&mut self) -> Option<hound::Result<f32>> {
        match self {
            Samples::Int { samples, scale } => samples.next().map(|r| r.map(|s| s as f32 * *scale)),
            Samples::Float(samples) => samples.next(),
        }
    }
}

/// `wav:PATH` as a source: the file's audio, down-mixed to mono and resampled to 48 kHz, then
/// silence once it ends ([`Source::is_finished`]). Not paced.
#[derive(Debug)]
pub struct WavSource {
    path: PathBuf,
    samples: Samples,
    spec: WavSpec,
    resampler: StreamResampler,
    raw: Vec<f32>,
    mono: Vec<f32>,
    eof: bool,
    meter: LevelMeter,
}

impl WavSource {
    /// Opens `path`: integer PCM of 8 to 32 bits or 32-bit float, any rate, any channels.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let path = path.as_ref();
        let reader = WavReader::open(path).map_err(|e| open_error(path, e))?;
        let spec = reader.spec();
        if !(1..=MAX_CHANNELS).contains(&spec.channels) {
            return Err(wav_error(
                path,
                format!("{} channels (1 to {MAX_CHANNELS} supported)", spec.channels),
            ));
        }
        if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
            return Err(wav_error(
                path,
                format!(
                    "sample rate {} Hz ({MIN_RATE} to {MAX_RATE} Hz supported)",
                    spec.sample_rate
                ),
            ));
        }
        let samples = match spec.sample_format {
            SampleFormat::Float if spec.bits_per_sample == 32 => {
                Samples::Float(reader.into_samples())
            }
            SampleFormat::Int if (8..=32).contains(&spec.bits_per_sample) => Samples::Int {
                samples: reader.into_samples(),
                scale: 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32,
            },
            format => {
                return Err(wav_error(
                    path,
                    format!(
                        "unsupported sample format {format:?} {} bit (expected 8-32 bit integer \
                         or 32-bit float)",
                        spec.bits_per_sample
                    ),
                ));
            }
        };
        let resampler = StreamResampler::new(spec.sample_rate, SAMPLE_RATE, 1 << 16)?;
        Ok(Self {
            path: path.to_owned(),
            samples,
            spec,
            resampler,
            raw: vec![0.0; READ_FRAMES * usize::from(spec.channels)],
            mono: vec![0.0; READ_FRAMES],
            eof: false,
            meter: LevelMeter::new(),
        })
    }

    /// Reads a whole file as 48 kHz mono.
    pub fn read_all(path: impl AsRef<Path>) -> Result<Vec<f32>, AudioError> {
        let mut source = Self::open(path)?;
        let mut all = Vec::new();
        let mut frame = [0.0f32; 4096];
        while !source.is_finished() {
            let n = source.read(&mut frame)?;
            all.extend_from_slice(&frame[..n]);
        }
        Ok(all)
    }

    /// The file's own rate, channels and sample format.
    pub fn file_spec(&self) -> WavSpec {
        self.spec
    }

    fn fill(&mut self) -> Result<(), AudioError> {
        let mut n = 0;
        while n < self.raw.len() {
            match self.samples.next() {
                Some(Ok(s)) => {
                    self.raw[n] = s;
                    n += 1;
                }
                Some(Err(e)) => return Err(wav_error(&self.path, e)),
                None => {
                    self.eof = true;
                    break;
                }
            }
        }
        let channels = usize::from(self.spec.channels);
        let frames = downmix_interleaved(&self.raw[..n], channels, &mut self.mono);
        self.resampler.push(&self.mono[..frames])?;
        if self.eof {
            self.resampler.flush()?;
        }
        Ok(())
    }
}

impl Source for WavSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<usize, AudioError> {
        while self.resampler.available() < frame.len() && !self.eof {
            self.fill()?;
        }
        let n = self.resampler.pop(frame);
        frame[n..].fill(0.0);
        self.meter.update(frame);
        Ok(n)
    }

    fn is_finished(&self) -> bool {
        self.eof && self.resampler.available() == 0
    }

    fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

/// `wav:PATH` as a sink: 48 kHz mono 16-bit PCM. The header is rewritten every second and when
/// the sink is finished or dropped, so the file is valid however the call ends.
pub struct WavSink {
    path: PathBuf,
    writer: Option<WavWriter<BufWriter<File>>>,
    since_header: u64,
    samples: u64,
    meter: LevelMeter,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .field("open", &self.writer.is_some())
            .field("samples", &self.samples)
            .finish()
    }
}

impl WavSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let path = path.as_ref();
        let spec = WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let writer = WavWriter::create(path, spec).map_err(|e| wav_error(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            writer: Some(writer),
            since_header: 0,
            samples: 0,
            meter: LevelMeter::new(),
        })
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.samples
    }
}

impl Sink for WavSink {
    fn write(&mut self, frame: &[f32]) -> Result<(), AudioError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(wav_error(&self.path, "written after it was finished"));
        };
        for &s in frame {
            let s = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
            writer
                .write_sample(s)
                .map_err(|e| wav_error(&self.path, e))?;
        }
        self.meter.update(frame);
        self.samples += frame.len() as u64;
        self.since_header += frame.len() as u64;
        if self.since_header >= HEADER_EVERY {
            self.since_header = 0;
            writer.flush().map_err(|e| wav_error(&self.path, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(writer) => writer.finalize().map_err(|e| wav_error(&self.path, e)),
            None => Ok(()),
        }
    }

    fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Err(e) = writer.finalize()
        {
            tracing::warn!(path = %self.path.display(), "WAV file not finalised: {e}");
        }
    }
}
