//! cpal for real: the default input and output devices move audio. Under `./dev test` a
//! PulseAudio null sink provides them (what is played comes back on capture through its monitor);
//! with no audio server or sound card they fail there, and skip with a message by hand.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use media::analysis::{dominant_frequency, goertzel_power, rms};
use media::audio::{
    AudioError, DeviceFormat, DeviceSink, DeviceSource, Sink, SinkSpec, Source, SourceSpec,
    ToneSource, input_devices, output_devices,
};
use pinhole_tests::prereq::missing;

/// One test at a time on the devices: two tests playing into the same null sink would hear
/// each other.
static DEVICES: Mutex<()> = Mutex::new(());

fn devices_lock() -> MutexGuard<'static, ()> {
    DEVICES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// No sound server or card: fails under `./dev test`, skips with a message by hand.
#[track_caller]
fn skip(why: impl std::fmt::Display) {
    missing(format!("no usable audio device ({why})"));
}

#[test]
fn lists_devices() {
    let _devices = devices_lock();
    let (inputs, outputs) = match (input_devices(), output_devices()) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => return skip(e),
    };
    for d in inputs.iter().chain(&outputs) {
        eprintln!(
            "{} {:?} ({}): {} configs {:?}",
            if d.is_default { "*" } else { " " },
            d.id,
            d.name,
            d.configs.len(),
            d.configs.first()
        );
    }
    assert!(inputs.iter().filter(|d| d.is_default).count() <= 1);
    assert!(outputs.iter().filter(|d| d.is_default).count() <= 1);
    if let Some(first) = inputs.first() {
        // The default comes first when there is one.
        assert!(first.is_default || inputs.iter().all(|d| !d.is_default));
    }
}

/// Plays a 1 kHz tone on the default output for 2 s while capturing the default input, with
/// the devices running at the formats given; checks the tone comes back.
fn loopback(input: DeviceFormat, output: DeviceFormat) {
    let _devices = devices_lock();
    let mut source = match DeviceSource::open_with_format(None, input) {
        Ok(s) => s,
        Err(e) => return skip(e),
    };
    let mut sink = match DeviceSink::open_with_format(None, output) {
        Ok(s) => s,
        Err(e) => return skip(e),
    };
    eprintln!(
        "capture {:?} at {:?}, playback {:?} at {:?}",
        source.name(),
        source.device_format(),
        sink.name(),
        sink.device_format()
    );
    assert!(source.is_realtime() && sink.is_realtime());

    // A sound server can take a moment to start a stream: wait (up to 10 s) for both to flow,
    // playing silence meanwhile.
    let silence = vec![0.0f32; 960];
    let mut warm = vec![0.0f32; 960];
    let warm_start = Instant::now();
    while source.read(&mut warm).unwrap() < 960 || sink.stats().callbacks < 20 {
        sink.write(&silence).unwrap();
        // They opened, so there is a server: not starting is a failure, not a skip.
        assert!(
            warm_start.elapsed() < Duration::from_secs(10),
            "the default devices opened but did not start within 10 s: capture {:?}, playback {:?}",
            source.stats(),
            sink.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (source_before, sink_before) = (source.stats(), sink.stats());
    eprintln!(
        "streams flowing after {:?}: capture {source_before:?}, playback {sink_before:?}",
        warm_start.elapsed()
    );

    // 2 s of a 1 kHz tone, paced by the clock in 20 ms frames, while capturing.
    let hz = 1_000.0;
    let mut tone = ToneSource::new(hz);
    let frame_len = 960;
    let period = Duration::from_millis(20);
    let mut out = vec![0.0f32; frame_len];
    let mut captured = Vec::new();
    let mut real = 0;
    let start = Instant::now();
    let mut next = start;
    let meter = source.meter();
    let mut peak_seen = 0.0f32;
    for _ in 0..100 {
        tone.read(&mut out).unwrap();
        sink.write(&out).unwrap();
        let mut frame = vec![0.0f32; frame_len];
        real += source.read(&mut frame).unwrap();
        captured.extend_from_slice(&frame);
        peak_seen = peak_seen.max(meter.peak());
        let events = (source.poll_event(), sink.poll_event());
        assert_eq!(
            events,
            (None, None),
            "device failed: {:?} {:?}",
            source.stats(),
            sink.stats()
        );
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{elapsed:?}: captured {real} real samples; capture {:?}; playback {:?}; input peak {peak_seen}",
        source.stats(),
        sink.stats()
    );
    // Round trip (playback buffer, sound server, capture buffer): where the tone starts.
    if let Some(onset) = captured.iter().position(|s| s.abs() > 0.1) {
        eprintln!(
            "loopback latency {} ms; during the tone: capture +{} underruns +{} overruns, \
             playback +{} underruns +{} overruns",
            onset / 48,
            source.stats().underruns - source_before.underruns,
            source.stats().overruns - source_before.overruns,
            sink.stats().underruns - sink_before.underruns,
            sink.stats().overruns - sink_before.overruns,
        );
    }
    // The device delivered most of the 2 s (the first ~0.5 s may be start-up).
    assert!(real > 48_000, "only {real} samples captured in 2 s");
    // The tone is there: the loudest frequency in the second half, well above the rest.
    let tail = &captured[captured.len() / 2..];
    let level = rms(tail);
    // The null sink has unity gain: the tone (RMS 0.354) comes back at about its level.
    assert!(level > 0.1, "captured audio is too quiet (rms {level})");
    let f = dominant_frequency(tail, 48_000, 100.0, 4_000.0, 10.0);
    assert!(
        (f - hz).abs() <= 10.0,
        "dominant frequency {f} Hz, not {hz}"
    );
    let on = goertzel_power(tail, 48_000, hz);
    let off = goertzel_power(tail, 48_000, 1_370.0);
    assert!(on > 100.0 * off, "tone {on} vs elsewhere {off}");
    // The input meter followed the capture callback.
    assert!(peak_seen > 0.05, "input meter peak {peak_seen}");
    assert!(!source.stats().failed && !sink.stats().failed);
}

#[test]
fn tone_played_on_the_default_output_comes_back_on_the_default_input() {
    loopback(DeviceFormat::default(), DeviceFormat::default());
}

#[test]
fn loopback_through_devices_at_44k1_stereo_is_converted() {
    let cd = DeviceFormat {
        rate: 44_100,
        channels: Some(2),
    };
    loopback(cd, cd);
}

#[test]
fn a_missing_device_lists_what_exists() {
    let _devices = devices_lock();
    match DeviceSource::open(Some("pinhole-no-such-microphone")) {
        Ok(_) => panic!("opened a device that does not exist"),
        Err(AudioError::NoSuchDevice { available, .. }) => {
            eprintln!("available: {available}");
            assert!(!available.is_empty());
        }
        Err(e) => skip(e),
    }
    match DeviceSink::open(Some("pinhole-no-such-speaker")) {
        Ok(_) => panic!("opened a device that does not exist"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn devices_open_by_id_and_by_spec() {
    let _devices = devices_lock();
    let outputs = match output_devices() {
        Ok(o) if !o.is_empty() => o,
        Ok(_) => return skip("no output devices listed"),
        Err(e) => return skip(e),
    };
    // Every listed device that has configurations is one `device:ID` can name.
    let Some(named) = outputs
        .iter()
        .find(|d| !d.is_default && !d.configs.is_empty())
        .or_else(|| outputs.first())
    else {
        return skip("no output devices listed");
    };
    let spec: SinkSpec = format!("device:{}", named.id).parse().unwrap();
    match spec.open() {
        Ok(mut sink) => {
            assert!(sink.is_realtime());
            sink.write(&[0.0; 960]).unwrap();
        }
        Err(e) => panic!("listed output {:?} does not open: {e}", named.id),
    }
    let spec: SourceSpec = "device".parse().unwrap();
    match spec.open() {
        Ok(mut source) => {
            let mut frame = [1.0f32; 960];
            source.read(&mut frame).unwrap();
        }
        Err(e) => skip(e),
    }
}

#[test]
fn test_tone_plays_on_the_default_output() {
    let _devices = devices_lock();
    if let Err(e) = DeviceSink::open(None) {
        return skip(e);
    }
    let start = Instant::now();
    media::audio::play_test_tone(None, 440.0, Duration::from_millis(300)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
}
