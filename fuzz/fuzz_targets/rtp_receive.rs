//! The voice session's receive path (`media::voice::VoiceSession::handle_datagram`): RTP and
//! RTCP parsing, the SSRC probation gate, the jitter buffer and the Opus decoder, fed a
//! sequence of datagrams with time passing and playout pulled. Input: repeated
//! `[op, len, len bytes...]`; `op & 0x80` wraps the bytes in a valid RTP header (Opus payload
//! type, one SSRC, the sequence number counting up) so the fuzzer reaches the jitter buffer and
//! the decoder past the gate; `op & 0x40` pulls a frame of playout; `op & 0x3f` ms pass.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use media::voice::{VoiceConfig, VoiceSession};
use rand::SeedableRng;
use rand::rngs::StdRng;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(1);
    let Ok(mut session) = VoiceSession::new(VoiceConfig::default(), t0, &mut rng) else {
        return;
    };
    let mut now = t0;
    let mut playout = vec![0.0f32; 960];
    let mut datagram = Vec::with_capacity(1_600);
    let mut seq = 0u16;
    let mut datagrams = 0u64;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        datagram.clear();
        if op & 0x80 != 0 {
            datagram.extend_from_slice(&[0x80, 111]);
            datagram.extend_from_slice(&seq.to_be_bytes());
            datagram.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
            datagram.extend_from_slice(&0x5eed_u32.to_be_bytes());
            seq = seq.wrapping_add(1);
        }
        datagram.extend_from_slice(bytes);
        session.handle_datagram(now, &datagram);
        datagrams += 1;
        if op & 0x40 != 0 {
            session.pull_playout(now, &mut playout);
            assert!(playout.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        }
        now += Duration::from_millis(u64::from(op & 0x3f));
    }
    let received = session.stats().received;
    assert!(received.packets + received.probation_dropped <= datagrams);
});
