//! A capture device that delivers in large blocks: PulseAudio's sine source (the microphone of
//! the app's screenshot test) posts 2 s of audio at once, every 2 s. A capture buffer of 250 ms
//! kept only the first 250 ms of each block: in an echo call the speaker played 250 ms of every
//! 2 s, and its meter read zero most of the time. Here the test loads a sine source into the
//! running PulseAudio (`pactl`), opens it by its name (in a child process) and checks capture is
//! continuous once the first block has come. (It used to be the child's default input through
//! `PULSE_SOURCE`, which libpulse honours and cpal's PulseAudio host does not: the child then
//! heard the server's default source.) With no
//! PulseAudio the test fails under `./dev test`, and skips with a message by hand.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use media::analysis::dominant_frequency;
use media::audio::{DeviceSource, Source};
use pinhole_tests::prereq::missing;

/// Set in the child: the name of the sine source to open.
const CHILD: &str = "PINHOLE_TEST_BURSTY_CHILD";
const HZ: f64 = 330.0;

/// Unloads the module when dropped, whatever the test's outcome.
struct Module(String);

impl Drop for Module {
    fn drop(&mut self) {
        let _ = Command::new("pactl")
            .args(["unload-module", &self.0])
            .status();
    }
}

#[test]
fn capture_from_a_source_that_posts_2s_blocks_is_continuous() {
    if let Ok(source) = std::env::var(CHILD) {
        return child(&source);
    }
    match Command::new("pactl").arg("info").output() {
        Ok(out) if out.status.success() => {}
        Ok(_) => return missing("no PulseAudio server answers pactl"),
        Err(e) => return missing(format!("pactl: {e}")),
    }
    let name = format!("pinhole_test_sine_{}", std::process::id());
    let loaded = Command::new("pactl")
        .args(["load-module", "module-sine-source"])
        .arg(format!("source_name={name}"))
        .arg(format!("frequency={HZ}"))
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "pactl load-module module-sine-source: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let _module = Module(String::from_utf8_lossy(&loaded.stdout).trim().to_owned());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "capture_from_a_source_that_posts_2s_blocks_is_continuous",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, &name)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the capture child failed");
}

/// Reads the sine source `name` in 20 ms frames for 5 s after the first block.
fn child(name: &str) {
    let mut source = match DeviceSource::open(Some(name)) {
        Ok(s) => s,
        Err(e) => return missing(format!("no usable audio device ({e})")),
    };
    let mut frame = vec![0.0f32; 960];
    let start = Instant::now();
    let mut next = start;
    let period = Duration::from_millis(20);
    let mut first = None;
    let mut reads = Vec::new();
    let mut captured = Vec::new();
    while reads.len() < 250 {
        let n = source.read(&mut frame).unwrap();
        if first.is_none() && n > 0 {
            first = Some(start.elapsed());
        }
        if first.is_some() {
            reads.push(n);
            captured.extend_from_slice(&frame);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no audio from the sine source: {:?}",
            source.stats()
        );
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let full = reads.iter().filter(|&&n| n == 960).count();
    let stats = source.stats();
    eprintln!(
        "first audio after {first:?}; {full} of {} reads full after it; {stats:?}",
        reads.len()
    );
    // 5 s after the first block: two more blocks came. Before, about 1 read in 8 was full.
    assert!(
        full >= reads.len() * 95 / 100,
        "capture had gaps: {full} of {} reads full; {stats:?}",
        reads.len()
    );
    let f = dominant_frequency(&captured, 48_000, 100.0, 1_000.0, 10.0);
    assert!((f - HZ).abs() <= 10.0, "dominant frequency {f} Hz");
}
