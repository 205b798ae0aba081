//! The jitter buffer's target delay: small on a clean network, grows under jitter, comes back
//! down slowly when the jitter ends; and other frame sizes than 20 ms work the same way.
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::time::Duration;

use media::analysis::tone_fraction;
use media::voice::link::LinkConfig;
use media::voice::{CodecConfig, FrameDuration, VoiceConfig};
use voice_common::{Call, CallSetup, RATE, dominant, longest_gap_ms};

/// A 30 ms link with `jitter_ms` of jitter.
fn link(jitter_ms: u64) -> LinkConfig {
    voice_common::link(30, jitter_ms)
}

#[test]
fn target_delay_follows_the_jitter() {
    let setup = CallSetup {
        link: link(0),
        seed: 31,
        ..CallSetup::default()
    };
    let mut call = Call::new(&setup);
    call.run(Duration::from_secs(10));
    let clean = call.b.session.stats();
    call.ab.set_config(link(80));
    call.run(Duration::from_secs(10));
    let jittery = call.b.session.stats();
    call.ab.set_config(link(0));
    call.run(Duration::from_secs(1));
    let just_after = call.b.session.stats();
    call.run(Duration::from_secs(29));
    let settled = call.b.session.stats();
    for (label, s) in [
        ("clean", &clean),
        ("80 ms jitter", &jittery),
        ("1 s after", &just_after),
        ("30 s after", &settled),
    ] {
        eprintln!(
            "{label}: target {:?}, delay {:?}, interarrival jitter {:?}, concealed {}, dropped {}",
            s.jitter_buffer_target,
            s.jitter_buffer_delay,
            s.received.jitter,
            s.received.concealed_frames,
            s.received.dropped_frames
        );
    }
    // Clean: one or two frames.
    assert!(clean.jitter_buffer_target <= Duration::from_millis(40));
    assert!(clean.jitter_buffer_delay <= Duration::from_millis(40));
    assert_eq!(clean.received.concealed_frames, 0);
    // Under 80 ms of jitter the target covers most of it.
    assert!(jittery.jitter_buffer_target >= Duration::from_millis(70));
    assert!(jittery.jitter_buffer_delay >= Duration::from_millis(50));
    // It comes down slowly, not at once...
    assert!(just_after.jitter_buffer_target >= Duration::from_millis(60));
    // ...but it does come down.
    assert!(settled.jitter_buffer_target <= Duration::from_millis(40));
    assert!(settled.jitter_buffer_delay <= Duration::from_millis(60));
    let heard = &call.b.heard[RATE as usize / 2..];
    assert!(tone_fraction(heard, setup.tone_a) > 0.9);
    // Frames dropped to bring the delay down are cross-faded: no clicks. A 440 Hz tone at 0.5
    // moves at most 0.029 a sample; a hard cut could jump by up to 1.
    let after = &call.b.heard[21 * RATE as usize..];
    let jump = after
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0f32, f32::max);
    eprintln!("largest step between samples after the jitter: {jump}");
    assert!(settled.received.dropped_frames > just_after.received.dropped_frames);
    assert!(jump < 0.1, "a click of {jump}");
}

#[test]
fn ten_and_forty_ms_frames_carry_the_tone_through_loss() {
    for (frame, seed) in [(FrameDuration::Ms10, 41), (FrameDuration::Ms40, 42)] {
        let setup = CallSetup {
            config: VoiceConfig {
                codec: CodecConfig {
                    frame,
                    bitrate_bps: 24_000,
                    ..CodecConfig::default()
                },
                ..VoiceConfig::default()
            },
            link: LinkConfig {
                loss: 0.05,
                ..link(20)
            },
            seed,
            ..CallSetup::default()
        };
        let mut call = Call::new(&setup);
        call.run(Duration::from_secs(10));
        let heard = &call.b.heard[RATE as usize / 2..];
        let f = dominant(heard, RATE);
        let gap = longest_gap_ms(heard, RATE, 0.05);
        let s = call.b.session.stats();
        eprintln!("{frame:?}: {f} Hz, longest gap {gap} ms, {:?}", s.received);
        assert!((f - setup.tone_a).abs() <= 5.0, "{frame:?}: {f} Hz");
        assert!(
            gap <= 2.0 * frame.millis() as f64,
            "{frame:?}: gap {gap} ms"
        );
        assert!(s.received.lost > 0 && s.received.fec_recovered > 0);
        assert_eq!(s.sent.packets, 10_000 / frame.millis());
    }
}

#[test]
fn ends_with_different_frame_sizes_understand_each_other() {
    let setup = CallSetup {
        link: LinkConfig {
            loss: 0.03,
            ..link(15)
        },
        seed: 43,
        ..CallSetup::default()
    };
    let mut call = Call::new(&setup);
    // A sends 10 ms packets (and pulls in 10 ms pieces); B keeps 20 ms.
    let ten = VoiceConfig {
        codec: CodecConfig {
            frame: FrameDuration::Ms10,
            ..CodecConfig::default()
        },
        ..VoiceConfig::default()
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(44);
    call.a.session = media::voice::VoiceSession::new(ten, call.t0, &mut rng).unwrap();
    call.run(Duration::from_secs(8));
    for (end, hz, label) in [
        (&call.b, setup.tone_a, "b hears 10 ms packets"),
        (&call.a, setup.tone_b, "a hears 20 ms packets"),
    ] {
        let heard = &end.heard[RATE as usize / 2..];
        let f = dominant(heard, RATE);
        let gap = longest_gap_ms(heard, RATE, 0.05);
        eprintln!(
            "{label}: {f} Hz, gap {gap} ms, {:?}",
            end.session.stats().received
        );
        assert!((f - hz).abs() <= 5.0, "{label}: {f} Hz");
        assert!(gap <= 40.0, "{label}: gap {gap} ms");
        assert!(tone_fraction(heard, hz) > 0.95, "{label}");
    }
}
