//! The source and sink strings of the headless commands: what parses, what does not, and how
//! opening them fails.
#![allow(clippy::unwrap_used)]

use std::fmt::{Debug, Display};
use std::path::PathBuf;
use std::str::FromStr;

use media::audio::{AudioError, SinkSpec, Source, SourceSpec};
use pinhole_tests::TempDir;

/// Each text parses to what it says, and prints back to a string that parses the same.
fn assert_parse<T>(cases: &[(&str, T)])
where
    T: FromStr<Err = AudioError> + Display + PartialEq + Debug,
{
    for (text, want) in cases {
        let got: T = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&got, want, "{text}");
        assert_eq!(&got.to_string().parse::<T>().unwrap(), want, "{text}");
    }
}

/// Each text is refused with a one-line `BadSpec` of `kind` whose message has the fragment.
fn assert_refused<T: FromStr<Err = AudioError> + Debug>(kind: &str, cases: &[(&str, &str)]) {
    for (text, fragment) in cases {
        let err = text.parse::<T>().expect_err(text);
        let message = err.to_string();
        assert!(
            matches!(&err, AudioError::BadSpec { kind: k, .. } if *k == kind),
            "{text}: {err:?}"
        );
        assert!(message.contains(fragment), "{text}: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn good_specs_parse() {
    assert_parse(&[
        ("tone:440", SourceSpec::Tone { hz: 440.0 }),
        ("tone:1000.5", SourceSpec::Tone { hz: 1000.5 }),
        ("silence", SourceSpec::Silence),
    ]);
    assert_parse(&[("null", SinkSpec::Null)]);
    // The forms sources and sinks share.
    for text in ["wav:/tmp/in put.wav", "wav:C:dir/x.wav", "wav:out.wav"] {
        let path = PathBuf::from(text.trim_start_matches("wav:"));
        let path2 = path.clone();
        assert_parse(&[(text, SourceSpec::Wav { path })]);
        assert_parse(&[(text, SinkSpec::Wav { path: path2 })]);
    }
    for (text, name) in [
        ("device", None),
        ("device:hw:CARD=PCH,DEV=0", Some("hw:CARD=PCH,DEV=0")),
        ("device:pulse", Some("pulse")),
    ] {
        let name = name.map(String::from);
        let name2 = name.clone();
        assert_parse(&[(text, SourceSpec::Device { name })]);
        assert_parse(&[(text, SinkSpec::Device { name: name2 })]);
    }
}

#[test]
fn bad_specs_say_why() {
    assert_refused::<SourceSpec>(
        "source",
        &[
            ("", "expected tone:HZ"),
            ("mic", "expected tone:HZ"),
            ("tone", "needs a frequency"),
            ("tone:", "not a number"),
            ("tone:abc", "not a number"),
            ("tone:0", "between 1 and"),
            ("tone:-5", "between 1 and"),
            ("tone:30000", "between 1 and"),
            ("tone:NaN", "between 1 and"),
            ("tone:inf", "between 1 and"),
            ("silence:5", "expected tone:HZ"),
            ("null", "expected tone:HZ"),
            ("TONE:440", "expected tone:HZ"),
            ("song.wav", "did you mean wav:song.wav?"),
        ],
    );
    assert_refused::<SinkSpec>(
        "sink",
        &[
            ("", "expected wav:PATH"),
            ("speaker", "expected wav:PATH"),
            ("null:x", "expected wav:PATH"),
            ("tone:440", "expected wav:PATH"),
            ("silence", "expected wav:PATH"),
            ("recording.WAV", "did you mean wav:recording.WAV?"),
        ],
    );
    // The forms both take, refused alike.
    let shared = [
        ("wav", "needs a path"),
        ("wav:", "needs a path"),
        ("device:", "device name is empty"),
        ("device: ", "device name is empty"),
    ];
    assert_refused::<SourceSpec>("source", &shared);
    assert_refused::<SinkSpec>("sink", &shared);
}

#[test]
fn opening_what_is_not_there_is_a_clear_error() {
    let missing = "wav:/nonexistent/dir/none.wav";
    let err = missing.parse::<SourceSpec>().unwrap().open().unwrap_err();
    assert!(matches!(err, AudioError::Wav { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/dir/none.wav"),
        "{err}"
    );

    let err = missing.parse::<SinkSpec>().unwrap().open().unwrap_err();
    assert!(matches!(err, AudioError::Wav { .. }), "{err:?}");

    // A file that is not a WAV.
    let dir = TempDir::new("audio-spec");
    let junk = dir.join("junk.wav");
    std::fs::write(&junk, b"this is not a RIFF file at all").unwrap();
    let err = SourceSpec::Wav { path: junk }.open().unwrap_err();
    assert!(matches!(err, AudioError::Wav { .. }), "{err:?}");

    // An encoding hound does not decode (A-law, format 6) is named, with what is supported.
    let alaw = dir.join("alaw.wav");
    let fmt: Vec<u8> = [6u16, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain([8000u32, 8000].iter().flat_map(|v| v.to_le_bytes()))
        .chain([1u16, 8].iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let data = [0xd5u8; 160];
    let mut file = b"RIFF".to_vec();
    file.extend(((4 + 8 + fmt.len() + 8 + data.len()) as u32).to_le_bytes());
    file.extend(b"WAVEfmt ");
    file.extend((fmt.len() as u32).to_le_bytes());
    file.extend(&fmt);
    file.extend(b"data");
    file.extend((data.len() as u32).to_le_bytes());
    file.extend(data);
    std::fs::write(&alaw, file).unwrap();
    let err = SourceSpec::Wav { path: alaw }
        .open()
        .unwrap_err()
        .to_string();
    for words in [
        "A-law",
        "0x0006",
        "8 to 32 bit integer or 32-bit float",
        "pcm_s16le",
    ] {
        assert!(err.contains(words), "{words:?} in {err}");
    }

    // WAV headers that are valid but absurd are refused, not allocated for.
    for (channels, rate, what) in [(200, 48_000, "channels"), (1, 10, "sample rate")] {
        let odd = dir.join(&format!("odd-{channels}-{rate}.wav"));
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&odd, spec).unwrap();
        for _ in 0..channels {
            writer.write_sample(0i16).unwrap();
        }
        writer.finalize().unwrap();
        let err = SourceSpec::Wav { path: odd }.open().unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn a_device_that_is_not_there_is_a_clear_error() {
    let name = "no-such-device-pinhole-test";
    for result in [
        SourceSpec::Device {
            name: Some(name.into()),
        }
        .open()
        .map(|_| ()),
        SinkSpec::Device {
            name: Some(name.into()),
        }
        .open()
        .map(|_| ()),
    ] {
        let err = result.expect_err("a device that does not exist opened");
        let message = err.to_string();
        // Either the device list came back without it (the usual case, and it says what there
        // is), or the host has no devices at all.
        match err {
            AudioError::NoSuchDevice { .. } => {
                assert!(
                    message.contains(name) && message.contains("available:"),
                    "{message}"
                )
            }
            AudioError::Device { .. } => {}
            other => panic!("unexpected error {other:?}"),
        }
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn tone_and_silence_sources_fill_whole_frames() {
    let mut tone = "tone:1000".parse::<SourceSpec>().unwrap().open().unwrap();
    assert!(!tone.is_realtime());
    let mut frame = vec![0.0f32; 960 * 50];
    for chunk in frame.chunks_mut(960) {
        assert_eq!(tone.read(chunk).unwrap(), 960);
    }
    let f = media::analysis::dominant_frequency(&frame, 48_000, 100.0, 4_000.0, 10.0);
    assert_eq!(f, 1000.0);
    assert!(
        (tone.meter().peak() - 0.5).abs() < 0.01,
        "{}",
        tone.meter().peak()
    );

    let mut silence = "silence".parse::<SourceSpec>().unwrap().open().unwrap();
    let mut frame = vec![1.0f32; 480];
    assert_eq!(silence.read(&mut frame).unwrap(), 480);
    assert!(frame.iter().all(|&s| s == 0.0));

    let mut null = "null".parse::<SinkSpec>().unwrap().open().unwrap();
    null.write(&frame).unwrap();
    null.finish().unwrap();
    let _: &dyn Source = tone.as_ref();
}

proptest::proptest! {
    /// Any string: a parse or a one-line error, never a panic; what parses prints back to itself.
    #[test]
    fn any_string_parses_or_says_why(text in "\\PC{0,40}|(tone|wav|device|null|silence):\\PC{0,20}") {
        match text.parse::<SourceSpec>() {
            Ok(spec) => proptest::prop_assert_eq!(spec.to_string().parse::<SourceSpec>().unwrap(), spec),
            Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
        }
        match text.parse::<SinkSpec>() {
            Ok(spec) => proptest::prop_assert_eq!(spec.to_string().parse::<SinkSpec>().unwrap(), spec),
            Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
        }
    }
}
