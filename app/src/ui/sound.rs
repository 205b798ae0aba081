//! Sounds the app makes on its own, each on a thread of its own so the UI never waits for an
//! audio device: the ringtone (from `assets/ringtone.wav`, looped until answered or rejected),
//! the settings view's test sound and its live input level meter.
//!
//! The ringtone is synthesised by [`synth_ringtone`] (a two-note chime) and stored as a small
//! 16 kHz 16-bit mono WAV; `app/tests/ui_assets.rs` checks the file is what the synthesiser
//! makes (and rewrites it with `PINHOLE_WRITE_ASSETS=1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use media::audio::{DeviceSink, DeviceSource, FRAME_20MS, LevelMeter, Sink, Source};

/// The ringtone shipped in `assets/`.
pub const RINGTONE_WAV: &[u8] = include_bytes!("../../../assets/ringtone.wav");
/// The rate the ringtone is stored at (it only holds tones below 3 kHz).
pub const RINGTONE_RATE: u32 = 16_000;
/// Silence between two rings.
const RING_PAUSE: Duration = Duration::from_millis(1_400);
/// The rate audio devices are fed at.
const RATE: u32 = 48_000;

/// Wakes the UI (`ctx.request_repaint()`), from any thread.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// One ring: a falling two-note chime (E5 then C5 with a soft octave), 16-bit at
/// [`RINGTONE_RATE`].
pub fn synth_ringtone() -> Vec<i16> {
    let rate = RINGTONE_RATE as f64;
    let notes = [(659.25, 0.0, 0.45), (523.25, 0.28, 0.75)];
    let total = (rate * 1.05) as usize;
    let mut out = vec![0.0f64; total];
    for (hz, start, len) in notes {
        let first = (start * rate) as usize;
        let count = (len * rate) as usize;
        for i in 0..count {
            let t = i as f64 / rate;
            let attack = (t / 0.006).min(1.0);
            let decay = (-t * 5.5).exp();
            let release = ((len - t) / 0.05).clamp(0.0, 1.0);
            let tau = std::f64::consts::TAU;
            let s = (tau * hz * t).sin() + 0.35 * (tau * 2.0 * hz * t).sin() * (-t * 9.0).exp();
            if let Some(o) = out.get_mut(first + i) {
                *o += 0.32 * s * attack * decay * release;
            }
        }
    }
    out.iter()
        .map(|s| (s.clamp(-1.0, 1.0) * f64::from(i16::MAX)) as i16)
        .collect()
}

/// A 16-bit mono PCM WAV file of `samples` at `rate`.
pub fn encode_wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Decodes a 16-bit mono PCM WAV: its rate and samples (full scale 1.0). `None` for anything
/// else.
pub fn decode_wav(bytes: &[u8]) -> Option<(u32, Vec<f32>)> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut format = None;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let id = header.get(0..4)?;
        let len = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?) as usize;
        let body = bytes.get(pos + 8..(pos + 8).checked_add(len)?)?;
        if id == b"fmt " {
            let tag = u16::from_le_bytes(body.get(0..2)?.try_into().ok()?);
            let channels = u16::from_le_bytes(body.get(2..4)?.try_into().ok()?);
            let rate = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
            let bits = u16::from_le_bytes(body.get(14..16)?.try_into().ok()?);
            if tag != 1 || channels != 1 || bits != 16 || rate == 0 {
                return None;
            }
            format = Some(rate);
        } else if id == b"data" {
            let rate = format?;
            let samples = body
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect();
            return Some((rate, samples));
        }
        pos += 8 + len + (len & 1);
    }
    None
}

/// Linear interpolation to 48 kHz (good enough for a chime).
fn to_48k(rate: u32, samples: &[f32]) -> Vec<f32> {
    if rate == RATE || samples.is_empty() {
        return samples.to_vec();
    }
    let step = f64::from(rate) / f64::from(RATE);
    let len = (samples.len() as f64 / step) as usize;
    (0..len)
        .map(|i| {
            let x = i as f64 * step;
            let j = x as usize;
            let frac = (x - j as f64) as f32;
            let a = samples.get(j).copied().unwrap_or(0.0);
            let b = samples.get(j + 1).copied().unwrap_or(a);
            a + (b - a) * frac
        })
        .collect()
}

/// One ring cycle at 48 kHz: the chime, then a pause.
pub fn ring_cycle() -> Vec<f32> {
    let mut cycle = decode_wav(RINGTONE_WAV)
        .map(|(rate, s)| to_48k(rate, &s))
        .unwrap_or_default();
    cycle.extend(std::iter::repeat_n(
        0.0,
        (RING_PAUSE.as_secs_f64() * f64::from(RATE)) as usize,
    ));
    cycle
}

/// The ringtone playing on an output device until this is dropped.
#[derive(Debug)]
pub struct Ringer {
    stop: Arc<AtomicBool>,
}

impl Ringer {
    /// Starts ringing on the output device `device` (or the default). A device that cannot
    /// open is logged; the call view still shows the call.
    pub fn start(device: Option<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("pinhole-ringtone".into())
            .spawn(move || ring(device.as_deref(), &flag));
        if let Err(e) = spawned {
            tracing::warn!("ringtone thread: {e}");
        }
        Self { stop }
    }
}

impl Drop for Ringer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn ring(device: Option<&str>, stop: &AtomicBool) {
    let mut sink = match DeviceSink::open(device) {
        Ok(sink) => sink,
        Err(e) => {
            tracing::warn!("ringtone not played: {e}");
            return;
        }
    };
    let cycle = ring_cycle();
    if cycle.is_empty() {
        return;
    }
    let period = Duration::from_millis(20);
    let mut next = Instant::now();
    let mut pos = 0;
    let mut frame = [0.0f32; FRAME_20MS];
    while !stop.load(Ordering::Acquire) {
        for s in frame.iter_mut() {
            *s = cycle.get(pos).copied().unwrap_or(0.0);
            pos = (pos + 1) % cycle.len();
        }
        if let Err(e) = sink.write(&frame) {
            tracing::warn!("ringtone: {e}");
            return;
        }
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Plays the test sound on `device` on a thread; the outcome arrives on the receiver.
pub fn play_test_sound(device: Option<String>, wake: Wake) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pinhole-test-sound".into())
        .spawn(move || {
            let result =
                media::audio::play_test_tone(device.as_deref(), 440.0, Duration::from_millis(800))
                    .map_err(|e| e.to_string());
            let _ = tx.send(result);
            wake();
        });
    if let Err(e) = spawned {
        tracing::warn!("test sound thread: {e}");
    }
    rx
}

/// A capture device held open on a thread for its level meter (the settings view's).
#[derive(Debug)]
pub struct InputMonitor {
    /// The device it watches (`None`: the default).
    pub device: Option<String>,
    opened: mpsc::Receiver<Result<LevelMeter, String>>,
    state: MonitorState,
    stop: Arc<AtomicBool>,
}

/// What an [`InputMonitor`] knows.
#[derive(Debug, Clone)]
pub enum MonitorState {
    /// Still opening the device.
    Opening,
    /// Capturing: the meter moves.
    Running(LevelMeter),
    /// The device could not open.
    Failed(String),
}

impl InputMonitor {
    /// Opens `device` (off the UI thread) and keeps reading it until dropped.
    pub fn start(device: Option<String>, wake: Wake) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let name = device.clone();
        let spawned = std::thread::Builder::new()
            .name("pinhole-input-meter".into())
            .spawn(move || {
                let mut source = match DeviceSource::open(name.as_deref()) {
                    Ok(source) => source,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        wake();
                        return;
                    }
                };
                let _ = tx.send(Ok(source.meter()));
                wake();
                let mut frame = [0.0f32; FRAME_20MS];
                while !flag.load(Ordering::Acquire) {
                    // Drain what was captured; the callback updates the meter.
                    let _ = source.read(&mut frame);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        let state = match spawned {
            Ok(_) => MonitorState::Opening,
            Err(e) => MonitorState::Failed(e.to_string()),
        };
        Self {
            device,
            opened: rx,
            state,
            stop,
        }
    }

    /// The current state (picks up the opening's outcome).
    pub fn state(&mut self) -> &MonitorState {
        if let Ok(result) = self.opened.try_recv() {
            self.state = match result {
                Ok(meter) => MonitorState::Running(meter),
                Err(e) => MonitorState::Failed(e),
            };
        }
        &self.state
    }
}

impl Drop for InputMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
