//! Playback as a call drives it: a `DeviceSink` opened and written at once with 20 ms frames
//! paced by a 20 ms timer (no warm-up), as the engine's media loop does. What is played must be
//! heard from early on and without gaps. Under `./dev test` the PulseAudio null sink's monitor
//! (the default input) hears what the default output plays; with no audio device at all the test
//! says so and passes.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use media::analysis::goertzel_power;
use media::audio::{DeviceSink, DeviceSource, Sink, Source, ToneSource};

fn skip(why: impl std::fmt::Display) {
    eprintln!("SKIPPED: no usable audio device ({why}); run under `./dev test` for the real test");
}

const FRAME: usize = 960;
const HZ: f64 = 440.0;

/// Amplitude of `HZ` in a 10 ms block (a full-scale sine reads 1.0).
fn tone_level(block: &[f32]) -> f64 {
    2.0 * goertzel_power(block, 48_000, HZ).max(0.0).sqrt()
}

#[test]
fn a_sink_written_at_once_by_a_20ms_timer_plays_from_early_on_without_gaps() {
    // The capture side first, warmed up: it is the microphone, not what is tested.
    let mut source = match DeviceSource::open(None) {
        Ok(s) => s,
        Err(e) => return skip(e),
    };
    let mut frame = vec![0.0f32; FRAME];
    let warm = Instant::now();
    while source.read(&mut frame).unwrap() < FRAME {
        assert!(
            warm.elapsed() < Duration::from_secs(10),
            "the default input opened but did not start within 10 s: {:?}",
            source.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Drain what queued while waiting.
    while source.read(&mut frame).unwrap() == FRAME && warm.elapsed() < Duration::from_secs(12) {}

    let opened = Instant::now();
    let mut sink = match DeviceSink::open(None) {
        Ok(s) => s,
        Err(e) => return skip(e),
    };
    eprintln!(
        "playback {:?} at {:?} opened in {:?}",
        sink.name(),
        sink.device_format(),
        opened.elapsed()
    );
    let meter = sink.meter();
    let mut tone = ToneSource::new(HZ);
    let mut out = vec![0.0f32; FRAME];
    let mut captured: Vec<f32> = Vec::new();
    let mut peak_seen = 0.0f32;
    let mut first_callback = None;
    let period = Duration::from_millis(20);
    let start = Instant::now();
    let mut next = start;
    for i in 0..150 {
        tone.read(&mut out).unwrap();
        sink.write(&out).unwrap();
        source.read(&mut frame).unwrap();
        captured.extend_from_slice(&frame);
        peak_seen = peak_seen.max(meter.peak());
        if first_callback.is_none() && sink.stats().callbacks > 0 {
            first_callback = Some(i * 20);
        }
        assert_eq!(sink.poll_event(), None, "{:?}", sink.stats());
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let stats = sink.stats();
    let levels: Vec<f64> = captured.chunks(480).map(tone_level).collect();
    let on: Vec<bool> = levels.iter().map(|&l| l > 0.1).collect();
    let onset = on.iter().position(|&o| o).map(|i| i * 10);
    let end = on.iter().rposition(|&o| o).unwrap_or(0);
    let mut gaps = Vec::new();
    if let Some(first) = on.iter().position(|&o| o) {
        let mut run = 0;
        for (i, &o) in on.iter().enumerate().take(end + 1).skip(first) {
            if o {
                if run > 0 {
                    gaps.push(((i - run) * 10, run * 10));
                }
                run = 0;
            } else {
                run += 1;
            }
        }
    }
    eprintln!(
        "first callback by {first_callback:?} ms; tone heard from {onset:?} ms (loopback \
         latency included); gaps (at ms, ms long) {gaps:?}; playback {stats:?}; meter peak \
         {peak_seen}; capture {:?}",
        source.stats()
    );
    eprintln!(
        "levels: {}",
        levels
            .iter()
            .map(|l| format!("{:.0}", l * 10.0))
            .collect::<String>()
    );
    let onset = onset.expect("the tone never came back");
    assert!(
        onset <= 300,
        "the tone was first heard {onset} ms after the sink opened"
    );
    assert!(
        gaps.is_empty(),
        "gaps in playback (at ms, ms long): {gaps:?}"
    );
    assert!(peak_seen > 0.1, "output meter peak {peak_seen}");
}
