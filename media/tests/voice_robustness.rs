//! Duplicates, late packets, garbage, a new sender and a path change: counted, survived, and
//! the audio goes on.
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::time::Duration;

use media::analysis::tone_fraction;
use media::voice::link::LinkConfig;
use media::voice::{VoiceConfig, VoiceSession};
use rand::SeedableRng;
use rand::rngs::StdRng;
use voice_common::{Call, CallSetup, RATE, dominant, link, longest_gap_ms};

#[test]
fn duplicates_are_counted_and_dropped() {
    let setup = CallSetup::over(
        LinkConfig {
            duplicate: 0.05,
            ..link(20, 10)
        },
        21,
    );
    let call = Call::started(&setup, Duration::from_secs(10));
    let s = call.b.session.stats().received;
    // RTCP datagrams are duplicated too; the buffer only sees RTP.
    let dup_rtp = call.ab.stats().duplicated;
    eprintln!(
        "duplicated by link {dup_rtp}, counted {} (late {})",
        s.duplicate, s.late
    );
    assert!(
        s.duplicate + 2 >= dup_rtp && s.duplicate <= dup_rtp,
        "{s:?} vs {dup_rtp}"
    );
    assert_eq!(s.lost, 0);
    let heard = &call.b.heard[RATE as usize / 2..];
    assert_eq!(longest_gap_ms(heard, RATE, 0.05), 0.0);
    assert!((dominant(heard, RATE) - setup.tone_a).abs() <= 5.0);
}

#[test]
fn late_packets_are_counted_and_concealed() {
    let setup = CallSetup::over(
        LinkConfig {
            reorder: 0.01,
            reorder_delay: Duration::from_millis(400),
            ..link(20, 0)
        },
        22,
    );
    let call = Call::started(&setup, Duration::from_secs(20));
    let s = call.b.session.stats();
    let held = call.ab.stats().reordered;
    eprintln!(
        "held back {held}, late {}, fec {}, jb {:?}",
        s.received.late, s.received.fec_recovered, s.jitter_buffer_delay
    );
    assert!(held >= 5);
    assert!(
        s.received.late + 2 >= held * 8 / 10 && s.received.late <= held,
        "{s:?}"
    );
    // Each was recovered from the next packet's FEC.
    assert!(s.received.fec_recovered + 2 >= s.received.late);
    assert!(tone_fraction(&call.b.heard[RATE as usize / 2..], setup.tone_a) > 0.95);
}

#[test]
fn malformed_datagrams_are_counted_and_ignored() {
    let mut call = Call::started(&CallSetup::over(link(10, 0), 23), Duration::from_secs(2));
    let mut rng_bytes = StdRng::seed_from_u64(99);
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80, 111, 0, 1],                                     // short RTP
        vec![0x40, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1],          // version 1
        vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9], // extension beyond the end
        vec![0xa0, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 7, 99],      // bad padding
        vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1],            // another payload type
        vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],             // no payload
        vec![0x80, 200, 0, 40, 0, 0, 0, 1], // RTCP length beyond the datagram
        vec![0x81, 201, 0, 1, 0, 0, 0, 1],  // RR claiming a block it lacks
        vec![0x81, 202, 0, 1, 0, 0, 0, 1],  // compound not starting with SR/RR
        vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42], // STUN
        vec![0x17, 0xfe, 0xfd],             // DTLS
    ];
    for _ in 0..50 {
        let len = rand::RngExt::random_range(&mut rng_bytes, 0..200);
        let mut g = vec![0u8; len];
        rand::Rng::fill_bytes(&mut rng_bytes, &mut g);
        // Keep the random ones off our own stream's SSRC... by being random: an accidental
        // valid RTP packet for payload type 111 would be a new source, so force version 1.
        if let Some(b) = g.first_mut() {
            *b &= 0x7f;
        }
        garbage.push(g);
    }
    let now = call.now;
    for g in &garbage {
        call.b.session.handle_datagram(now, g);
    }
    call.run(Duration::from_secs(3));
    let s = call.b.session.stats().received;
    assert_eq!(s.malformed, garbage.len() as u64, "{s:?}");
    assert_eq!(s.resyncs, 0);
    let heard = &call.b.heard[RATE as usize / 2..];
    assert_eq!(longest_gap_ms(heard, RATE, 0.05), 0.0);
}

#[test]
fn a_restarted_sender_after_probation_and_path_changes_resync_without_stalling() {
    let setup = CallSetup::over(link(20, 5), 24);
    let mut call = Call::started(&setup, Duration::from_secs(5));
    // Path change to a relay: 60 ms longer, then back to the direct path.
    call.ab.set_config(link(80, 10));
    call.run(Duration::from_secs(10));
    let on_relay = call.b.session.stats().jitter_buffer_delay;
    call.ab.set_config(setup.link);
    call.run(Duration::from_secs(10));
    let back = call.b.session.stats().jitter_buffer_delay;
    // The peer restarts its stream (a new SSRC, sequence and timestamp).
    let mut rng = StdRng::seed_from_u64(1234);
    call.a.session = VoiceSession::new(VoiceConfig::default(), call.now, &mut rng).unwrap();
    call.run(Duration::from_secs(5));
    let s = call.b.session.stats();
    eprintln!("delay on relay {on_relay:?}, back {back:?}, stats {s:?}");
    assert_eq!(s.received.resyncs, 1);
    assert!(
        back <= Duration::from_millis(80),
        "delay stayed at {back:?}"
    );
    // The new SSRC is played once the old one has been silent for 500 ms and it has sent two
    // packets in sequence (RFC 3550 A.1): the first stream's probation cost one packet, the
    // restart about 25 (500 ms of 20 ms packets).
    assert!(
        (20..=30).contains(&s.received.probation_dropped),
        "{:?}",
        s.received
    );
    let heard = &call.b.heard[RATE as usize / 2..];
    let gap = longest_gap_ms(heard, RATE, 0.05);
    assert!((400.0..=560.0).contains(&gap), "gap {gap} ms");
    assert!(tone_fraction(heard, setup.tone_a) > 0.95);
    // The last two seconds are the new stream.
    let tail = &call.b.heard[call.b.heard.len() - 2 * RATE as usize..];
    assert!((dominant(tail, RATE) - setup.tone_a).abs() <= 5.0);
    assert_eq!(longest_gap_ms(tail, RATE, 0.05), 0.0);
}

/// Hands out chosen values: the SSRC, the initial sequence number and the initial timestamp.
struct Chosen(Vec<u32>);

impl rand::TryRng for Chosen {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(if self.0.is_empty() {
            5
        } else {
            self.0.remove(0)
        })
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::from(self.try_next_u32()?) | 1 << 40)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        dst.fill(7);
        Ok(())
    }
}

#[test]
fn sequence_and_timestamp_wrap_mid_call() {
    let setup = CallSetup::over(
        LinkConfig {
            loss: 0.05,
            reorder: 0.02,
            reorder_delay: Duration::from_millis(15),
            ..link(25, 20)
        },
        25,
    );
    let mut call = Call::new(&setup);
    // The sequence number wraps after 1 s, the timestamp after 2 s.
    let mut chosen = Chosen(vec![0x1234_5678, 65_536 - 50, u32::MAX - 2 * 48_000]);
    call.a.session = VoiceSession::new(VoiceConfig::default(), call.t0, &mut chosen).unwrap();
    call.run(Duration::from_secs(6));
    let s = call.b.session.stats().received;
    let link = call.ab.stats();
    eprintln!("{s:?}, link {link:?}");
    assert_eq!(s.resyncs, 0);
    // The link's losses include RTCP; RTP losses are counted across the wrap, not 65 536 off.
    assert!(
        s.lost <= link.lost && s.lost + 5 >= link.lost,
        "lost {} vs link {}",
        s.lost,
        link.lost
    );
    let heard = &call.b.heard[RATE as usize / 2..];
    assert!(tone_fraction(heard, setup.tone_a) > 0.95);
    assert!(longest_gap_ms(heard, RATE, 0.05) <= 40.0);
}

#[test]
fn a_muted_pause_restarts_as_a_talkspurt() {
    let setup = CallSetup::over(link(30, 10), 26);
    let mut call = Call::started(&setup, Duration::from_secs(3));
    let before = call.b.session.stats();
    call.a.muted = true;
    call.run(Duration::from_secs(2));
    call.a.muted = false;
    let resumed_at = call.b.heard.len();
    call.run(Duration::from_secs(3));
    let after = call.b.session.stats();
    eprintln!("before {before:?}\nafter {after:?}");
    // The pause is silence, not a path problem: the timestamps jumped with it, so the buffer
    // neither grew its target nor counted losses.
    assert!(after.jitter_buffer_target <= before.jitter_buffer_target + Duration::from_millis(5));
    assert!(after.jitter_buffer_delay <= Duration::from_millis(60));
    assert_eq!(after.received.lost, 0);
    assert_eq!(after.received.resyncs, 0);
    // The tone is back within a few frames of resuming and stays.
    let tail = &call.b.heard[resumed_at + RATE as usize / 5..];
    assert_eq!(longest_gap_ms(tail, RATE, 0.05), 0.0);
    assert!((dominant(tail, RATE) - setup.tone_a).abs() <= 5.0);
}

/// Keeps what is sent.
struct Capture(Vec<Vec<u8>>);

impl media::voice::Transport for Capture {
    fn send(&mut self, datagram: &[u8]) -> std::io::Result<()> {
        self.0.push(datagram.to_vec());
        Ok(())
    }
}

#[test]
fn marker_and_timestamps_follow_rfc_7587() {
    let t0 = std::time::Instant::now();
    let mut s =
        VoiceSession::new(VoiceConfig::default(), t0, &mut StdRng::seed_from_u64(8)).unwrap();
    let mut out = Capture(Vec::new());
    let frame = vec![0.1f32; 960];
    for k in 0..3u32 {
        s.push_capture(t0 + Duration::from_millis(20) * k, &frame, &mut out);
    }
    // One second without capture, then one more frame.
    s.push_capture(t0 + Duration::from_millis(1_040), &frame, &mut out);
    // Half frames add up to whole packets.
    s.push_capture(t0 + Duration::from_millis(1_050), &frame[..480], &mut out);
    s.push_capture(t0 + Duration::from_millis(1_060), &frame[480..], &mut out);
    let packets: Vec<_> = out
        .0
        .iter()
        .map(|d| media::voice::rtp::parse_rtp(d).unwrap())
        .collect();
    let markers: Vec<bool> = packets.iter().map(|p| p.marker).collect();
    assert_eq!(markers, [true, false, false, true, false]);
    let ts: Vec<u32> = packets
        .iter()
        .map(|p| p.timestamp.wrapping_sub(packets[0].timestamp))
        .collect();
    assert_eq!(ts, [0, 960, 1_920, 1_040 * 48, 1_060 * 48]);
    let seq: Vec<u16> = packets
        .iter()
        .map(|p| p.seq.wrapping_sub(packets[0].seq))
        .collect();
    assert_eq!(seq, [0, 1, 2, 3, 4]);
    assert!(
        packets
            .iter()
            .all(|p| p.payload_type == 111 && p.ssrc == s.ssrc())
    );
}

#[test]
fn an_echo_of_our_own_stream_plays_back() {
    // The server's echo service sends our packets back unchanged: same SSRC as ours.
    let t0 = std::time::Instant::now();
    let mut s =
        VoiceSession::new(VoiceConfig::default(), t0, &mut StdRng::seed_from_u64(9)).unwrap();
    let mut echo = media::voice::link::LossyLink::new(link(40, 5), 10);
    let mut tone = media::tone::Tone::new(550.0, RATE, 0.5);
    let mut frame = vec![0.0f32; 960];
    let mut heard = Vec::new();
    for k in 0..250u32 {
        let now = t0 + Duration::from_millis(20) * k;
        while let Some(d) = echo.receive(now) {
            s.handle_datagram(now, &d);
        }
        tone.fill(&mut frame);
        s.push_capture(now, &frame, &mut echo.transport(now));
        if now >= s.poll_timeout() {
            s.handle_timeout(now, &mut echo.transport(now));
        }
        s.pull_playout(now, &mut frame);
        heard.extend_from_slice(&frame);
    }
    let stats = s.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.received.malformed, 0);
    assert_eq!(stats.received.lost, 0);
    assert!(stats.received.packets >= 240);
    let tail = &heard[RATE as usize..];
    assert!((dominant(tail, RATE) - 550.0).abs() <= 5.0);
    assert_eq!(longest_gap_ms(tail, RATE, 0.05), 0.0);
}
