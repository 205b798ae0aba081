//! RTCP (RFC 3550 section 6): sender and receiver reports with an SDES CNAME in compound
//! packets, and a defensive parser for what the peer sends.

use super::VoiceError;

/// RTCP packet types (RFC 3550 section 12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// SDES item type CNAME (RFC 3550 section 6.5.1).
const SDES_CNAME: u8 = 1;

/// The largest RTCP compound packet Pinhole builds.
pub const MAX_RTCP_LEN: usize = 256;

/// An NTP timestamp (RFC 3550 section 4): seconds since 1900 in 32.32 fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The middle 32 bits, as LSR carries them (RFC 3550 section 6.4.1).
    pub fn middle(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// The sender information of an SR (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// Wallclock time when the report was sent.
    pub ntp: NtpTime,
    /// The RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent since the stream started.
    pub packet_count: u32,
    /// Payload octets sent since the stream started.
    pub octet_count: u32,
}

/// A reception report block (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed: duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Last SR timestamp (middle 32 bits of its NTP time), 0 if none.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// What Pinhole takes from a received compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcpReport {
    /// The SSRC of the report's sender (from its SR or RR).
    pub sender_ssrc: Option<u32>,
    /// The sender information, if it was an SR.
    pub sender_info: Option<SenderInfo>,
    /// The report block about the stream we send, if any.
    pub about_us: Option<ReportBlock>,
    /// The peer said BYE.
    pub bye: bool,
    /// The peer's CNAME was present.
    pub has_cname: bool,
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Builds a compound RTCP packet (RFC 3550 section 6.1): an SR when `sender_info` is given,
/// else an RR, with at most one report block, then an SDES with `cname`; optionally a BYE.
/// Returns its length.
pub fn write_compound(
    ssrc: u32,
    sender_info: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &str,
    bye: bool,
    out: &mut [u8],
) -> Result<usize, VoiceError> {
    let cname = &cname.as_bytes()[..cname.len().min(64)];
    let report_len =
        8 + if sender_info.is_some() { 20 } else { 0 } + if block.is_some() { 24 } else { 0 };
    let sdes_len = (8 + 2 + cname.len() + 1).div_ceil(4) * 4;
    let total = report_len + sdes_len + if bye { 8 } else { 0 };
    if out.len() < total {
        return Err(VoiceError::BufferTooSmall);
    }
    out[..total].fill(0);
    let rc = u8::from(block.is_some());
    out[0] = 0x80 | rc;
    out[1] = if sender_info.is_some() { PT_SR } else { PT_RR };
    out[2..4].copy_from_slice(&((report_len / 4 - 1) as u16).to_be_bytes());
    put_u32(out, 4, ssrc);
    let mut at = 8;
    if let Some(si) = sender_info {
        put_u32(out, at, (si.ntp.0 >> 32) as u32);
        put_u32(out, at + 4, si.ntp.0 as u32);
        put_u32(out, at + 8, si.rtp_timestamp);
        put_u32(out, at + 12, si.packet_count);
        put_u32(out, at + 16, si.octet_count);
        at += 20;
    }
    if let Some(b) = block {
        put_u32(out, at, b.ssrc);
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        put_u32(out, at + 4, (u32::from(b.fraction_lost) << 24) | lost);
        put_u32(out, at + 8, b.highest_seq);
        put_u32(out, at + 12, b.jitter);
        put_u32(out, at + 16, b.lsr);
        put_u32(out, at + 20, b.dlsr);
        at += 24;
    }
    // SDES with one chunk: SSRC, CNAME item, END item and padding to a word boundary.
    out[at] = 0x81;
    out[at + 1] = PT_SDES;
    out[at + 2..at + 4].copy_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
    put_u32(out, at + 4, ssrc);
    out[at + 8] = SDES_CNAME;
    out[at + 9] = cname.len() as u8;
    out[at + 10..at + 10 + cname.len()].copy_from_slice(cname);
    at += sdes_len;
    if bye {
        out[at] = 0x81;
        out[at + 1] = PT_BYE;
        out[at + 2..at + 4].copy_from_slice(&1u16.to_be_bytes());
        put_u32(out, at + 4, ssrc);
        at += 8;
    }
    Ok(at)
}

/// Parses a compound RTCP packet, keeping the parts about `our_ssrc`. Every sub-packet's
/// header and length are checked; anything malformed is an error, never a panic.
pub fn parse_compound(buf: &[u8], our_ssrc: u32) -> Result<RtcpReport, VoiceError> {
    let mut report = RtcpReport::default();
    let mut rest = buf;
    if rest.len() < 4 {
        return Err(VoiceError::Malformed("RTCP shorter than a header"));
    }
    let mut first = true;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(VoiceError::Malformed("trailing bytes after RTCP packet"));
        }
        if rest[0] >> 6 != 2 {
            return Err(VoiceError::Malformed("not RTCP version 2"));
        }
        let count = usize::from(rest[0] & 0x1f);
        let padded = rest[0] & 0x20 != 0;
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(VoiceError::Malformed("RTCP length beyond the datagram"));
        }
        let (packet, tail) = rest.split_at(len);
        rest = tail;
        // RFC 3550 section 6.1: the first packet is an SR or RR; padding only on the last.
        if first && pt != PT_SR && pt != PT_RR {
            return Err(VoiceError::Malformed(
                "compound RTCP does not start with SR/RR",
            ));
        }
        first = false;
        let body_len = if padded {
            if !rest.is_empty() {
                return Err(VoiceError::Malformed("RTCP padding before the last packet"));
            }
            let pad = usize::from(packet[len - 1]);
            if pad == 0 || pad > len - 4 {
                return Err(VoiceError::Malformed("invalid RTCP padding"));
            }
            len - pad
        } else {
            len
        };
        let packet = &packet[..body_len];
        match pt {
            PT_SR | PT_RR => {
                let info_len = if pt == PT_SR { 20 } else { 0 };
                if packet.len() < 8 + info_len + 24 * count {
                    return Err(VoiceError::Malformed("RTCP report shorter than its count"));
                }
                report.sender_ssrc = Some(get_u32(packet, 4));
                if pt == PT_SR {
                    report.sender_info = Some(SenderInfo {
                        ntp: NtpTime(
                            (u64::from(get_u32(packet, 8)) << 32) | u64::from(get_u32(packet, 12)),
                        ),
                        rtp_timestamp: get_u32(packet, 16),
                        packet_count: get_u32(packet, 20),
                        octet_count: get_u32(packet, 24),
                    });
                }
                for i in 0..count {
                    let at = 8 + info_len + 24 * i;
                    let ssrc = get_u32(packet, at);
                    if ssrc != our_ssrc {
                        continue;
                    }
                    let word = get_u32(packet, at + 4);
                    // Sign-extend the 24-bit cumulative loss.
                    let lost = ((word << 8) as i32) >> 8;
                    report.about_us = Some(ReportBlock {
                        ssrc,
                        fraction_lost: (word >> 24) as u8,
                        cumulative_lost: lost,
                        highest_seq: get_u32(packet, at + 8),
                        jitter: get_u32(packet, at + 12),
                        lsr: get_u32(packet, at + 16),
                        dlsr: get_u32(packet, at + 20),
                    });
                }
            }
            PT_SDES => {
                report.has_cname |= sdes_has_cname(&packet[4..], count)?;
            }
            PT_BYE => report.bye = true,
            _ => {} // APP, feedback and future types: skipped by their length.
        }
    }
    Ok(report)
}

fn sdes_has_cname(mut chunks: &[u8], count: usize) -> Result<bool, VoiceError> {
    let mut found = false;
    for _ in 0..count {
        if chunks.len() < 4 {
            return Err(VoiceError::Malformed("SDES chunk truncated"));
        }
        let mut at = 4;
        loop {
            let Some(&kind) = chunks.get(at) else {
                return Err(VoiceError::Malformed("SDES items truncated"));
            };
            if kind == 0 {
                at += 1;
                break;
            }
            let Some(&len) = chunks.get(at + 1) else {
                return Err(VoiceError::Malformed("SDES item truncated"));
            };
            let end = at + 2 + usize::from(len);
            if end > chunks.len() {
                return Err(VoiceError::Malformed("SDES item beyond its packet"));
            }
            found |= kind == SDES_CNAME;
            at = end;
        }
        let next = at.div_ceil(4) * 4;
        chunks = chunks.get(next..).unwrap_or(&[]);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_round_trip() {
        let si = SenderInfo {
            ntp: NtpTime(0x0123_4567_89ab_cdef),
            rtp_timestamp: 7,
            packet_count: 9,
            octet_count: 11,
        };
        let block = ReportBlock {
            ssrc: 42,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 96,
            lsr: 5,
            dlsr: 6,
        };
        let mut buf = [0u8; MAX_RTCP_LEN];
        let n = write_compound(1, Some(&si), Some(&block), "pinhole@test", true, &mut buf).unwrap();
        assert_eq!(n % 4, 0);
        assert_eq!(
            super::super::rtp::classify(&buf[..n]),
            super::super::rtp::DatagramKind::Rtcp
        );
        let r = parse_compound(&buf[..n], 42).unwrap();
        assert_eq!(r.sender_ssrc, Some(1));
        assert_eq!(r.sender_info, Some(si));
        assert_eq!(r.about_us, Some(block));
        assert!(r.bye && r.has_cname);
        // A report about someone else is not ours.
        assert_eq!(parse_compound(&buf[..n], 43).unwrap().about_us, None);
    }

    #[test]
    fn rr_round_trip_and_truncations_fail() {
        let mut buf = [0u8; MAX_RTCP_LEN];
        let n = write_compound(3, None, None, "x", false, &mut buf).unwrap();
        let r = parse_compound(&buf[..n], 42).unwrap();
        assert_eq!(
            (r.sender_ssrc, r.sender_info, r.about_us),
            (Some(3), None, None)
        );
        for cut in 0..n {
            let _ = parse_compound(&buf[..cut], 42); // Must not panic.
        }
        assert!(parse_compound(&buf[..n - 1], 42).is_err());
    }
}
