//! Clock drift: the two ends' audio clocks differ by 200 ppm (one +100, the other -100) for ten
//! virtual minutes; the jitter buffers drop and conceal frames and their delay stays bounded.
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::time::Duration;

use voice_common::{Call, CallSetup, RATE, dominant, link, longest_gap_ms};

#[test]
fn plus_minus_100_ppm_for_ten_minutes_keeps_the_delay_bounded() {
    let setup = CallSetup {
        link: link(20, 10),
        seed: 5,
        ppm_a: 100.0,
        ppm_b: -100.0,
        record: false,
        ..CallSetup::default()
    };
    let mut call = Call::new(&setup);
    call.run(Duration::from_secs(10 * 60 - 5));
    // The last five seconds are recorded and must still carry the tones.
    call.a.record = true;
    call.b.record = true;
    call.run(Duration::from_secs(5));

    for (end, hz, label) in [
        (&call.a, setup.tone_b, "a (+100 ppm, drains)"),
        (&call.b, setup.tone_a, "b (-100 ppm, fills)"),
    ] {
        let s = end.session.stats();
        let trace = &end.delay_trace;
        let late: Vec<Duration> = trace
            .iter()
            .filter(|(t, _)| *t > 10.0)
            .map(|(_, d)| *d)
            .collect();
        let (late_min, late_max) = (late.iter().min().unwrap(), late.iter().max().unwrap());
        let gap = longest_gap_ms(&end.heard, RATE, 0.05);
        let f = dominant(&end.heard, RATE);
        eprintln!(
            "{label}: jitter buffer delay {late_min:?}..{late_max:?} after 10 s (max ever {:?}), \
             dropped {}, concealed {}, received {}, last 5 s: {f} Hz, longest gap {gap} ms",
            end.max_jb_delay,
            s.received.dropped_frames,
            s.received.concealed_frames,
            s.received.packets
        );
        // 200 ppm over 10 minutes is 120 ms: unbounded, the delay would drift that far.
        assert!(
            *late_max <= Duration::from_millis(100),
            "{label}: delay grew to {late_max:?}"
        );
        assert!(
            (f - hz).abs() <= 5.0,
            "{label}: dominant {f} Hz, sent {hz} Hz"
        );
        assert!(gap <= 20.0, "{label}: gap of {gap} ms at the end");
    }
    // The receiver with the slower clock had to drop frames (sender 200 ppm faster: about
    // 6 frames in 10 minutes); the faster one had to conceal for lack of packets.
    let b = call.b.session.stats().received;
    let a = call.a.session.stats().received;
    assert!(b.dropped_frames >= 3, "b dropped {}", b.dropped_frames);
    assert!(
        a.concealed_frames >= 3,
        "a concealed {}",
        a.concealed_frames
    );
}
