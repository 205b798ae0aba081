//! RTCP on the media port: both sides learn the round-trip time and the loss the other sees.
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::time::Duration;

use media::voice::link::LinkConfig;
use media::voice::{VoiceConfig, VoiceStats};
use voice_common::{Call, CallSetup};

#[test]
fn reports_carry_rtt_loss_and_jitter_both_ways() {
    let setup = CallSetup {
        config: VoiceConfig {
            rtcp_interval: Duration::from_secs(1),
            ..VoiceConfig::default()
        },
        link: LinkConfig {
            delay: Duration::from_millis(40),
            loss: 0.10,
            ..LinkConfig::default()
        },
        seed: 9,
        record: false,
        ..CallSetup::default()
    };
    let mut call = Call::new(&setup);
    call.run(Duration::from_secs(60));
    let (a, b) = (call.a.session.stats(), call.b.session.stats());
    for (label, me, peer, my_link, peer_link) in [
        ("a", &a, &b, &call.ab, &call.ba),
        ("b", &b, &a, &call.ba, &call.ab),
    ] {
        let rtt = me.rtt.unwrap();
        let remote = me.remote.unwrap();
        eprintln!(
            "{label}: rtt {rtt:?}, peer reports {:.1}% lost ({} cumulative), jitter {:?}; \
             my link lost {} of {}; I sent {} RTP + {} RTCP, received {} RTP + {} RTCP, lost {}",
            remote.fraction_lost_percent,
            remote.cumulative_lost,
            remote.jitter,
            my_link.stats().lost,
            my_link.stats().sent,
            me.sent.packets,
            me.sent.rtcp_packets,
            me.received.packets,
            me.received.rtcp_packets,
            me.received.lost
        );
        // RTT: twice the one-way delay, to the 1/65536 s resolution of LSR/DLSR.
        let err = rtt.as_secs_f64() - 0.080;
        assert!(err.abs() < 0.002, "{label}: rtt {rtt:?}");
        // The peer's cumulative loss matches what the link dropped of our RTP (up to the
        // packets in flight and since its last report).
        let lost_by_link = my_link.stats().lost as i64;
        assert!(
            (i64::from(remote.cumulative_lost) - lost_by_link).abs() <= lost_by_link / 10 + 10,
            "{label}"
        );
        // What we count as lost of the peer's packets is close to the link's 10%.
        assert!(me.received.lost <= peer_link.stats().lost, "{label}");
        let expected_lost = fraction(me, peer);
        assert!(
            (0.07..=0.13).contains(&expected_lost),
            "{label}: loss {expected_lost}"
        );
        assert!(
            me.sent.rtcp_packets >= 40,
            "{label}: {} reports",
            me.sent.rtcp_packets
        );
        assert!(
            me.received.rtcp_packets >= 30,
            "{label}: {} reports in",
            me.received.rtcp_packets
        );
        assert_eq!(me.received.malformed, 0);
    }
}

/// The loss rate `me` saw on what `peer` sent.
fn fraction(me: &VoiceStats, peer: &VoiceStats) -> f64 {
    me.received.lost as f64 / peer.sent.packets as f64
}
