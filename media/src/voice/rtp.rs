//! RTP for Opus (RFC 3550, RFC 7587) on top of `rtp-rs`, and the first-byte demultiplexing of
//! a port shared by STUN, RTP and RTCP (RFC 7983, RFC 5761).

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

use super::VoiceError;

/// The default dynamic payload type for Opus (RFC 3551 section 3: 96-127 are dynamic; 111 is
/// what most implementations offer).
pub const DEFAULT_PAYLOAD_TYPE: u8 = 111;

/// The RTP header Pinhole sends: 12 bytes, no CSRC, no extension.
pub const RTP_HEADER_LEN: usize = 12;

/// What a datagram on a shared port is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (RFC 7983: first byte 0-3).
    Stun,
    /// RTP (RFC 7983: first byte 128-191; RFC 5761: second byte's payload type not 64-95).
    Rtp,
    /// RTCP (RFC 5761 section 4: packet type 192-223 in the second byte).
    Rtcp,
    /// Anything else (DTLS, TURN channels, ZRTP, garbage).
    Other,
}

/// Classifies a datagram received on the media port (RFC 7983 section 7, RFC 5761 section 4).
pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram {
        [0..=3, ..] => DatagramKind::Stun,
        [128..=191, second, ..] => {
            if (192..=223).contains(second) {
                DatagramKind::Rtcp
            } else {
                DatagramKind::Rtp
            }
        }
        _ => DatagramKind::Other,
    }
}

/// The send side of one RTP stream: SSRC, sequence number, timestamp and marker.
#[derive(Debug, Clone)]
pub struct RtpSender {
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    start_of_talkspurt: bool,
}

impl RtpSender {
    /// A stream with the given payload type and random SSRC, initial sequence number and
    /// timestamp (RFC 3550 section 5.1: the latter two random to resist known-plaintext
    /// attacks).
    pub fn new(payload_type: u8, ssrc: u32, initial_seq: u16, initial_timestamp: u32) -> Self {
        Self {
            payload_type: payload_type & 0x7f,
            ssrc,
            seq: initial_seq,
            timestamp: initial_timestamp,
            start_of_talkspurt: true,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The timestamp the next packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Marks the next packet as the first of a talkspurt (after silence that was not sent, as
    /// in DTX): RFC 7587 section 4.1 sets the marker bit there.
    pub fn start_talkspurt(&mut self) {
        self.start_of_talkspurt = true;
    }

    /// Writes the RTP packet for `payload`, which covers `samples` samples, into `out` and
    /// advances the stream; returns the packet's length.
    pub fn write(
        &mut self,
        payload: &[u8],
        samples: u32,
        out: &mut [u8],
    ) -> Result<usize, VoiceError> {
        let len = RtpPacketBuilder::new()
            .payload_type(self.payload_type)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.seq))
            .timestamp(self.timestamp)
            .marked(self.start_of_talkspurt)
            .payload(payload)
            .build_into(out)
            .map_err(|e| VoiceError::RtpBuild(format!("{e:?}")))?;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.start_of_talkspurt = false;
        Ok(len)
    }

    /// Skips `samples` of timestamp without sending (silence not sent); the next packet is
    /// marked.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.start_of_talkspurt = true;
    }
}

/// The header fields of a received RTP packet and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp (48 kHz for Opus).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// The payload, padding removed.
    pub payload: &'a [u8],
}

/// Parses an RTP packet, rejecting anything malformed (short, not version 2, truncated header
/// or extension, bad padding, an RTCP packet type, an empty payload).
pub fn parse_rtp(datagram: &[u8]) -> Result<RtpPacket<'_>, VoiceError> {
    let reader = RtpReader::new(datagram).map_err(|e| VoiceError::Malformed(rtp_error(&e)))?;
    let payload_type = reader.payload_type();
    let marker = reader.mark();
    if datagram.get(1).is_some_and(|b| (192..=223).contains(b)) {
        // RFC 5761 section 4: an RTCP packet type, not RTP.
        return Err(VoiceError::Malformed("RTCP packet type in an RTP packet"));
    }
    let payload = reader.payload();
    if payload.is_empty() {
        return Err(VoiceError::Malformed("empty payload"));
    }
    Ok(RtpPacket {
        payload_type,
        marker,
        seq: u16::from(reader.sequence_number()),
        timestamp: reader.timestamp(),
        ssrc: reader.ssrc(),
        payload,
    })
}

fn rtp_error(e: &rtp_rs::RtpReaderError) -> &'static str {
    match e {
        rtp_rs::RtpReaderError::BufferTooShort(_) => "shorter than an RTP header",
        rtp_rs::RtpReaderError::UnsupportedVersion(_) => "not RTP version 2",
        rtp_rs::RtpReaderError::HeadersTruncated { .. } => "truncated RTP header",
        rtp_rs::RtpReaderError::PaddingLengthInvalid(_) => "invalid RTP padding",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrap() {
        let mut tx = RtpSender::new(111, 0xdead_beef, 65_535, u32::MAX - 100);
        let mut buf = [0u8; 64];
        let n = tx.write(&[1, 2, 3], 960, &mut buf).unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert_eq!(
            (p.payload_type, p.seq, p.timestamp, p.ssrc),
            (111, 65_535, u32::MAX - 100, 0xdead_beef)
        );
        assert!(p.marker, "first packet is marked");
        assert_eq!(p.payload, &[1, 2, 3]);
        let n = tx.write(&[4], 960, &mut buf).unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert_eq!((p.seq, p.timestamp, p.marker), (0, 859, false));
        assert_eq!(classify(&buf[..n]), DatagramKind::Rtp);
    }

    #[test]
    fn malformed_are_errors() {
        for bad in [
            &[][..],
            &[0x80, 111, 0, 1][..],
            &[0x40; 20][..],
            &[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert!(parse_rtp(bad).is_err(), "{bad:?}");
        }
        // Padding flag with a padding length larger than the packet.
        let mut p = vec![0xa0, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 200];
        assert!(parse_rtp(&p).is_err());
        p[14] = 1;
        assert_eq!(parse_rtp(&p).unwrap().payload, &[1, 2]);
    }

    #[test]
    fn demultiplexes_by_first_bytes() {
        assert_eq!(classify(&[0x00, 0x01]), DatagramKind::Stun);
        assert_eq!(classify(&[0x80, 200]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x81, 201]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x80, 111]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 0xef]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x17, 0xfe]), DatagramKind::Other);
        assert_eq!(classify(&[]), DatagramKind::Other);
    }
}
