//! `media::voice::rtcp::parse_compound` and `media::voice::rtp::parse_rtp` (RFC 3550 packets on
//! the RFC 5761 shared port): any bytes give a report or an error, never a panic; what is
//! written from a parsed report parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::voice::rtcp::{self, MAX_RTCP_LEN};
use media::voice::rtp;

fuzz_target!(|data: &[u8]| {
    let _ = rtp::classify(data);
    let _ = std::hint::black_box(rtp::parse_rtp(data));
    // The SSRC we are asked about: the input's first word, so "about us" blocks are reachable.
    let ours = data
        .get(..4)
        .map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    let Ok(report) = rtcp::parse_compound(data, ours) else {
        return;
    };
    let Some(sender) = report.sender_ssrc else {
        return;
    };
    let mut buf = [0u8; MAX_RTCP_LEN];
    let Ok(n) = rtcp::write_compound(
        sender,
        report.sender_info.as_ref(),
        report.about_us.as_ref(),
        "fuzz",
        report.bye,
        &mut buf,
    ) else {
        return;
    };
    let again = rtcp::parse_compound(&buf[..n], ours).expect("what we write parses");
    assert_eq!(again.sender_ssrc, Some(sender));
    assert_eq!(again.sender_info, report.sender_info);
    assert_eq!(again.about_us, report.about_us);
    assert_eq!(again.bye, report.bye);
});
