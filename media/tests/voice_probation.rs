//! A new SSRC only after probation (RFC 3550 A.1): RTP and RTCP injected from a third sender
//! during a call are dropped, counted and never heard while the real stream flows; a stray
//! packet before the call cannot claim the stream. (A peer that restarts its stream is taken
//! after probation: `voice_robustness::a_restarted_sender_after_probation_...`.)
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::time::{Duration, Instant};

use media::analysis::tone_fraction;
use media::tone::Tone;
use media::voice::{DatagramKind, Transport, VoiceConfig, VoiceSession};
use rand::SeedableRng;
use rand::rngs::StdRng;
use voice_common::{Call, CallSetup, RATE, dominant, link, longest_gap_ms};

/// The third party's tone.
const INTRUDER_HZ: f64 = 1_000.0;

/// Keeps what is sent.
struct Capture(Vec<Vec<u8>>);

impl Transport for Capture {
    fn send(&mut self, datagram: &[u8]) -> std::io::Result<()> {
        self.0.push(datagram.to_vec());
        Ok(())
    }
}

/// A sender of its own: a valid Opus stream with its own SSRC and RTCP reports.
struct Intruder {
    session: VoiceSession,
    tone: Tone,
    frame: Vec<f32>,
    out: Capture,
}

impl Intruder {
    fn new(now: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(666);
        Self {
            session: VoiceSession::new(VoiceConfig::default(), now, &mut rng).unwrap(),
            tone: Tone::new(INTRUDER_HZ, RATE, 0.9),
            frame: vec![0.0; 960],
            out: Capture(Vec::new()),
        }
    }

    /// One frame's worth of packets (and a report when one is due).
    fn send(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.tone.fill(&mut self.frame);
        self.session.push_capture(now, &self.frame, &mut self.out);
        if now >= self.session.poll_timeout() {
            self.session.handle_timeout(now, &mut self.out);
        }
        std::mem::take(&mut self.out.0)
    }
}

#[test]
fn an_injected_stream_is_dropped_counted_and_never_heard() {
    let setup = CallSetup::over(link(20, 5), 41);
    let mut call = Call::started(&setup, Duration::from_secs(2));
    let before = call.b.session.stats().received;
    let heard_from = call.b.heard.len();
    let mut intruder = Intruder::new(call.now);
    let (mut rtp, mut rtcp) = (0u64, 0u64);
    // Six seconds of a second stream, in sequence, at the real one's rate, interleaved with it.
    for _ in 0..300 {
        call.run(Duration::from_millis(20));
        for d in intruder.send(call.now) {
            match call.b.session.handle_datagram(call.now, &d) {
                DatagramKind::Rtp => rtp += 1,
                DatagramKind::Rtcp => rtcp += 1,
                other => panic!("the intruder sent {other:?}"),
            }
        }
    }
    call.run(Duration::from_secs(1));
    let after = call.b.session.stats().received;
    eprintln!("injected {rtp} RTP, {rtcp} RTCP; before {before:?}\nafter {after:?}");
    assert_eq!(rtp, 300);
    assert!(rtcp >= 3, "{rtcp}");
    assert_eq!(
        after.probation_dropped - before.probation_dropped,
        rtp + rtcp
    );
    assert_eq!(after.resyncs, 0);
    assert_eq!(after.malformed, 0);
    let heard = &call.b.heard[heard_from..];
    assert_eq!(tone_fraction(heard, INTRUDER_HZ), 0.0);
    assert!(tone_fraction(heard, setup.tone_a) > 0.95);
    assert_eq!(longest_gap_ms(heard, RATE, 0.05), 0.0);
}

#[test]
fn a_stray_packet_before_the_call_does_not_claim_the_stream() {
    let setup = CallSetup::over(link(20, 5), 42);
    let mut call = Call::new(&setup);
    let mut intruder = Intruder::new(call.now);
    // One packet from elsewhere arrives first (a late one from an earlier call on this port).
    let stray = intruder.send(call.now);
    assert_eq!(
        call.b.session.handle_datagram(call.now, &stray[0]),
        DatagramKind::Rtp
    );
    call.run(Duration::from_secs(3));
    let s = call.b.session.stats().received;
    eprintln!("{s:?}");
    // The stray packet, and the real stream's first packet, spent in probation.
    assert_eq!(s.probation_dropped, 2);
    assert_eq!(s.resyncs, 0);
    let heard = &call.b.heard[RATE as usize / 2..];
    assert!((dominant(heard, RATE) - setup.tone_a).abs() <= 5.0);
    assert_eq!(tone_fraction(heard, INTRUDER_HZ), 0.0);
}
