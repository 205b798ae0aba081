//! WAV files in and out: any rate and channel count in, 48 kHz mono out, valid however the
//! writer ends.
#![allow(clippy::unwrap_used)]

use std::f64::consts::TAU;
use std::path::Path;

use media::analysis::{dominant_frequency, goertzel_power, rms};
use media::audio::{Sink, SinkSpec, Source, SourceSpec, WavSink, WavSource};
use pinhole_tests::TempDir;

/// Writes `seconds` of a `hz` tone, in phase on every channel.
fn write_tone(path: &Path, spec: hound::WavSpec, hz: f64, seconds: f64) {
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    let n = (f64::from(spec.sample_rate) * seconds) as usize;
    for i in 0..n {
        let v = 0.5 * (TAU * hz * i as f64 / f64::from(spec.sample_rate)).sin();
        for _ in 0..spec.channels {
            match spec.sample_format {
                hound::SampleFormat::Float => writer.write_sample(v as f32).unwrap(),
                hound::SampleFormat::Int => {
                    let full = (1i64 << (spec.bits_per_sample - 1)) - 1;
                    writer.write_sample((v * full as f64) as i32).unwrap()
                }
            }
        }
    }
    writer.finalize().unwrap();
}

#[test]
fn stereo_44k1_file_reads_as_48k_mono_with_the_same_tone() {
    let dir = TempDir::new("wav-44k1");
    let formats = [
        (44_100, 2, 16, hound::SampleFormat::Int),
        (44_100, 2, 32, hound::SampleFormat::Float),
        (22_050, 1, 24, hound::SampleFormat::Int),
        (96_000, 6, 16, hound::SampleFormat::Int),
        (48_000, 1, 16, hound::SampleFormat::Int),
        (8_000, 1, 8, hound::SampleFormat::Int),
    ];
    for (rate, channels, bits, format) in formats {
        let path = dir.join(&format!("tone-{rate}-{channels}-{bits}.wav"));
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        };
        let hz = 1_000.0;
        write_tone(&path, spec, hz, 1.0);

        let source: SourceSpec = format!("wav:{}", path.display()).parse().unwrap();
        let mut source = source.open().unwrap();
        assert!(!source.is_realtime());
        let mut audio = Vec::new();
        let mut frame = [0.0f32; 960];
        let mut reads = 0;
        while !source.is_finished() && reads < 200 {
            let n = source.read(&mut frame).unwrap();
            audio.extend_from_slice(&frame[..n]);
            reads += 1;
        }
        let what = format!("{rate} Hz, {channels} ch, {bits} bit {format:?}");
        assert!(source.is_finished(), "{what}: never finished");
        // One second of input is one second at 48 kHz.
        assert!(
            (audio.len() as i64 - 48_000).abs() <= 2,
            "{what}: {} samples",
            audio.len()
        );
        let f = dominant_frequency(&audio, 48_000, 100.0, 3_500.0, 5.0);
        assert!((f - hz).abs() <= 5.0, "{what}: dominant {f} Hz");
        // Level kept: a 0.5 peak sine has RMS 0.354 (8-bit quantisation allowed for).
        let level = rms(&audio[2_400..45_600]);
        assert!((level - 0.3536).abs() < 0.01, "{what}: rms {level}");
        // After the end: silence, and zero real samples.
        assert_eq!(source.read(&mut frame).unwrap(), 0);
        assert!(frame.iter().all(|&s| s == 0.0));
    }
}

#[test]
fn round_trip_44k1_stereo_to_48k_mono_file() {
    let dir = TempDir::new("wav-roundtrip");
    let input = dir.join("in.wav");
    let output = dir.join("out.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    write_tone(&input, spec, 697.0, 2.0);

    let mut source = WavSource::open(&input).unwrap();
    let mut sink = format!("wav:{}", output.display())
        .parse::<SinkSpec>()
        .unwrap()
        .open()
        .unwrap();
    let mut frame = [0.0f32; 960];
    while !source.is_finished() {
        let n = source.read(&mut frame).unwrap();
        sink.write(&frame[..n]).unwrap();
    }
    sink.finish().unwrap();
    assert!(
        sink.write(&frame).is_err(),
        "writing after finish must fail"
    );

    let reader = hound::WavReader::open(&output).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 1, 16)
    );
    let audio = WavSource::read_all(&output).unwrap();
    assert!(
        (audio.len() as i64 - 96_000).abs() <= 2,
        "{} samples",
        audio.len()
    );
    let f = dominant_frequency(&audio, 48_000, 100.0, 3_500.0, 1.0);
    assert!((f - 697.0).abs() <= 2.0, "dominant {f} Hz");
    // Nothing but the tone: 20 Hz away there is (almost) nothing.
    let on = goertzel_power(&audio, 48_000, 697.0);
    let off = goertzel_power(&audio, 48_000, 1_209.0);
    assert!(on > 1_000.0 * off, "{on} vs {off}");
}

#[test]
fn a_dropped_sink_leaves_a_valid_file() {
    let dir = TempDir::new("wav-drop");
    let path = dir.join("dropped.wav");
    {
        let mut sink = WavSink::create(&path).unwrap();
        let mut tone = media::audio::ToneSource::new(440.0);
        let mut frame = [0.0f32; 960];
        for _ in 0..25 {
            tone.read(&mut frame).unwrap();
            sink.write(&frame).unwrap();
        }
        // Dropped without finish(), as when a call's task is cancelled.
    }
    let audio = WavSource::read_all(&path).unwrap();
    assert_eq!(audio.len(), 25 * 960);
    let f = dominant_frequency(&audio, 48_000, 100.0, 2_000.0, 5.0);
    assert!((f - 440.0).abs() <= 5.0, "{f}");
}

#[test]
fn a_sink_killed_without_drop_leaves_a_valid_file_up_to_the_last_second() {
    let dir = TempDir::new("wav-kill");
    let path = dir.join("killed.wav");
    let mut sink = WavSink::create(&path).unwrap();
    let frame = [0.25f32; 960];
    for _ in 0..120 {
        sink.write(&frame).unwrap();
    }
    // As if the process died here: never finished, never dropped.
    std::mem::forget(sink);
    let reader = hound::WavReader::open(&path).unwrap();
    let samples = reader.len() as usize;
    assert!(samples >= 96_000, "only {samples} samples readable");
    let audio = WavSource::read_all(&path).unwrap();
    assert!(audio.len() >= 96_000);
    assert!(audio.iter().all(|&s| (s - 0.25).abs() < 0.001));
}
