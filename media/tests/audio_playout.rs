//! Playback as a call drives it: a `DeviceSink` opened and written at once with 20 ms frames
//! paced by a 20 ms timer (no warm-up), as the engine's media loop does. What is played must be
//! heard from early on and without gaps. Under `./dev test` the PulseAudio null sink's monitor
//! (the default input) hears what the default output plays; with no audio device the test fails
//! there, and skips with a message by hand.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use media::analysis::{gaps, tone_amplitude};
use media::audio::{DeviceSink, DeviceSource, Sink, Source, ToneSource};
use pinhole_tests::prereq::missing;

/// No sound server or card: fails under `./dev test`, skips with a message by hand.
#[track_caller]
fn skip(why: impl std::fmt::Display) {
    missing(format!("no usable audio device ({why})"));
}

const FRAME: usize = 960;
const HZ: f64 = 440.0;

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
    // The tone's amplitude in each 10 ms block; a block with more than 0.1 of it hears it.
    let levels: Vec<f64> = captured
        .chunks(480)
        .map(|block| tone_amplitude(block, 48_000, HZ))
        .collect();
    let on: Vec<bool> = levels.iter().map(|&l| l > 0.1).collect();
    let onset = on.iter().position(|&o| o).map(|i| i * 10);
    // (at ms, ms long)
    let gaps: Vec<(usize, usize)> = gaps(&on)
        .into_iter()
        .map(|g| (g.start * 10, g.len() * 10))
        .collect();
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
