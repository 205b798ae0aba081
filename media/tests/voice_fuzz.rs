//! Property tests: the RTP, RTCP and SRTP decoders, the jitter buffer and a whole session take
//! any input without panicking, and what is written parses back the same. (The cargo-fuzz
//! targets in `fuzz/` explore the same decoders further; these run on stable in every test run.)
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use media::srtp::{MasterKey, Srtp, SrtpError};
use media::voice::codec::MAX_FRAME_SAMPLES;
use media::voice::jitter::{JitterBuffer, JitterConfig, Playout};
use media::voice::rtcp::{self, NtpTime, ReportBlock, SenderInfo};
use media::voice::rtp::{self, RtpSender};
use media::voice::{VoiceConfig, VoiceSession};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

proptest! {
    #[test]
    fn parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), ssrc in any::<u32>()) {
        let _ = rtp::classify(&bytes);
        let _ = rtp::parse_rtp(&bytes);
        let _ = rtcp::parse_compound(&bytes, ssrc);
        // Also with a valid-looking first byte, to get past the version checks.
        let mut b = bytes.clone();
        if let Some(first) = b.first_mut() {
            *first = 0x80 | (*first & 0x3f);
        }
        let _ = rtp::parse_rtp(&b);
        let _ = rtcp::parse_compound(&b, ssrc);
    }

    #[test]
    fn rtp_round_trips(pt in 96u8..128, ssrc in any::<u32>(), seq in any::<u16>(), ts in any::<u32>(),
                       payload in proptest::collection::vec(any::<u8>(), 1..1_200)) {
        let mut tx = RtpSender::new(pt, ssrc, seq, ts);
        let mut buf = vec![0u8; 1_500];
        let n = tx.write(&payload, 960, &mut buf).unwrap();
        let p = rtp::parse_rtp(&buf[..n]).unwrap();
        prop_assert_eq!((p.payload_type, p.ssrc, p.seq, p.timestamp, p.marker), (pt, ssrc, seq, ts, true));
        prop_assert_eq!(p.payload, &payload[..]);
        prop_assert_eq!(rtp::classify(&buf[..n]), rtp::DatagramKind::Rtp);
    }

    #[test]
    fn rtcp_round_trips(ssrc in any::<u32>(), ntp in any::<u64>(), counts in any::<(u32, u32, u32)>(),
                        block in any::<(u32, u8, i32, u32, u32, u32, u32)>(), sr in any::<bool>(), bye in any::<bool>(),
                        cname in "[a-z0-9@.]{0,40}") {
        let si = SenderInfo { ntp: NtpTime(ntp), rtp_timestamp: counts.0, packet_count: counts.1, octet_count: counts.2 };
        let b = ReportBlock {
            ssrc: block.0, fraction_lost: block.1, cumulative_lost: block.2.clamp(-0x80_0000, 0x7f_ffff),
            highest_seq: block.3, jitter: block.4, lsr: block.5, dlsr: block.6,
        };
        let mut buf = [0u8; rtcp::MAX_RTCP_LEN];
        let n = rtcp::write_compound(ssrc, sr.then_some(&si), Some(&b), &cname, bye, &mut buf).unwrap();
        let r = rtcp::parse_compound(&buf[..n], block.0).unwrap();
        prop_assert_eq!(r.sender_ssrc, Some(ssrc));
        prop_assert_eq!(r.sender_info, sr.then_some(si));
        prop_assert_eq!(r.about_us, Some(b));
        prop_assert_eq!(r.bye, bye);
        prop_assert!(r.has_cname);
        prop_assert_eq!(rtp::classify(&buf[..n]), rtp::DatagramKind::Rtcp);
    }

    #[test]
    fn jitter_buffer_takes_any_packet_order(
        ops in proptest::collection::vec((any::<bool>(), 0u32..3, any::<u16>(), any::<u32>(), 0usize..40, 0i64..5_000), 1..300),
    ) {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 960);
        let mut now = 0i64;
        for (pull, ssrc, seq, ts, len, advance) in ops {
            now += advance;
            if pull {
                match jb.pull(now) {
                    Playout::Idle | Playout::Packet(_) | Playout::Skip { .. } => {}
                    Playout::Recover { samples, .. }
                    | Playout::Conceal { samples }
                    | Playout::ComfortNoise { samples } => {
                        prop_assert!(samples > 0 && samples <= MAX_FRAME_SAMPLES);
                    }
                }
            } else {
                let payload = vec![0xfcu8; len];
                let _ = jb.push(now, ssrc, seq, ts, &payload);
            }
        }
        prop_assert!(jb.current_delay() <= Duration::from_secs(10));
    }

    #[test]
    fn a_session_survives_any_datagrams(
        datagrams in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()), 1..60),
    ) {
        let t0 = Instant::now();
        let mut s = VoiceSession::new(VoiceConfig::default(), t0, &mut StdRng::seed_from_u64(1)).unwrap();
        let mut out = vec![0.0f32; 960];
        for (i, (mut d, rtp_like)) in datagrams.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(7 * i as u64);
            if rtp_like && d.len() > 12 {
                // Opus payload type, one source counting up: past the SSRC probation, so the
                // jitter buffer and the decoder get the random payloads.
                d[0] = 0x80;
                d[1] = 111;
                d[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                d[8..12].copy_from_slice(&[0, 0, 0, 1]);
            }
            s.handle_datagram(now, &d);
            s.pull_playout(now, &mut out);
            prop_assert!(out.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        }
    }

    #[test]
    fn srtp_and_rtcp_decoders_take_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        second in any::<u8>(),
        flip in any::<usize>(),
    ) {
        const KEY: MasterKey = MasterKey { key: [7; 16], salt: [9; 12] };
        let mut rx = Srtp::new(&KEY, &KEY).unwrap();
        let mut tx = Srtp::new(&KEY, &KEY).unwrap();
        let mut out = Vec::new();
        let mut shaped = bytes.clone();
        if shaped.len() >= 2 {
            // Version 2, and a second octet that makes it RTCP (192-223) or RTP.
            shaped[0] = 0x80 | (shaped[0] & 0x3f);
            shaped[1] = second;
        }
        for input in [&bytes, &shaped] {
            // Nothing random authenticates; nothing panics; the output is left empty.
            prop_assert!(rx.unprotect(input, &mut out).is_err());
            prop_assert!(out.is_empty());
            let _ = rtcp::parse_compound(input, 1);
        }
        // What protects opens once, and refuses a changed byte; the opened RTCP parses or not.
        let mut wire = Vec::new();
        if tx.protect(&shaped, &mut wire).is_ok() {
            let mut bad = wire.clone();
            let at = flip % bad.len();
            bad[at] ^= 1;
            prop_assert!(rx.unprotect(&bad, &mut out).is_err());
            rx.unprotect(&wire, &mut out).unwrap();
            prop_assert_eq!(&out, &shaped);
            prop_assert_eq!(rx.unprotect(&wire, &mut out), Err(SrtpError::Replayed));
            let _ = rtcp::parse_compound(&shaped, 1);
        }
        let s = rx.stats();
        prop_assert_eq!(s.unprotected + s.replayed + s.forged + s.malformed, if wire.is_empty() { 2 } else { 5 });
    }
}
