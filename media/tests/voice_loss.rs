//! Tone in, Opus, RTP, a lossy and jittery link, jitter buffer, decoder, WAV out: the output
//! carries the tone without long gaps at 0%, 5% and 15% random loss.
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::time::Duration;

use media::analysis::tone_fraction;
use media::voice::link::LinkConfig;
use voice_common::{Call, CallSetup, RATE, dominant, longest_gap_ms, write_wav};

/// Runs a 20 s call over `link` and checks what each end heard. Opus' concealment keeps a
/// tone going for about a frame and then fades, and FEC recovers single losses, so a gap of
/// near-silence means consecutive frames were missing: `max_gap_ms` bounds it.
fn call_through(name: &str, link: LinkConfig, seed: u64, max_gap_ms: f64) {
    let setup = CallSetup::over(link, seed);
    let call = Call::started(&setup, Duration::from_secs(20));
    for (end, heard_hz, label) in [(&call.b, setup.tone_a, "b"), (&call.a, setup.tone_b, "a")] {
        // Skip the start (nothing has arrived yet) and check the rest.
        let heard = &end.heard[RATE as usize / 2..];
        let path = write_wav(&format!("{name}-{label}"), heard);
        let f = dominant(heard, RATE);
        let share = tone_fraction(heard, heard_hz);
        let gap = longest_gap_ms(heard, RATE, 0.05);
        let s = end.session.stats();
        eprintln!(
            "{name} {label}: dominant {f} Hz, tone in {:.1}% of 100 ms windows, longest gap {gap} ms, \
             received {} lost {} late {} dup {} concealed {} fec {} dropped {} jb {:?}/{:?} jitter {:?} ({})",
            share * 100.0,
            s.received.packets,
            s.received.lost,
            s.received.late,
            s.received.duplicate,
            s.received.concealed_frames,
            s.received.fec_recovered,
            s.received.dropped_frames,
            s.jitter_buffer_delay,
            s.jitter_buffer_target,
            s.received.jitter,
            path.display()
        );
        assert!(
            (f - heard_hz).abs() <= 5.0,
            "{name} {label}: dominant {f} Hz, sent {heard_hz} Hz"
        );
        assert!(
            share >= 0.9,
            "{name} {label}: tone in only {share} of windows"
        );
        assert!(gap <= max_gap_ms, "{name} {label}: a gap of {gap} ms");
    }
}

fn jittery(loss: f64) -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(30),
        loss,
        duplicate: 0.01,
        reorder: 0.02,
        reorder_delay: Duration::from_millis(25),
    }
}

#[test]
fn clean_link_plays_the_tone_without_gaps() {
    call_through("loss-0", jittery(0.0), 11, 10.0);
}

#[test]
fn five_percent_loss_is_concealed() {
    call_through("loss-5", jittery(0.05), 12, 40.0);
}

#[test]
fn fifteen_percent_loss_is_concealed() {
    call_through("loss-15", jittery(0.15), 13, 60.0);
}
