//! Relay frames and the media socket's first-byte demultiplexer.
//!
//! A relay frame is TURN's ChannelData message (RFC 8656 section 12.4): a 2-byte channel number
//! in 0x4000-0x4FFF, a 2-byte payload length, and the payload (an RTP or RTCP packet), all
//! big-endian. The server forwards a frame unchanged between the two parties of the call whose
//! channel it carries (`docs/calls.md`, "Relay").
//!
//! Every datagram on the media socket is told apart by its first byte, as RFC 7983 section 7
//! does: see [`classify`].
//!
//! Pinhole's relay frames carry, first in the payload, the sender's 8-byte relay token (handed
//! out with the call over the encrypted control connection): the server forwards a frame only
//! with the token of the party its source address belongs to, and puts the receiver's token in
//! its place, so an off-path sender that forges a party's address cannot get frames relayed,
//! and a client accepts from the server only frames with its own token. See
//! [`encode_relay_into`], [`decode_relay`], [`set_token`].
//!
//! The decoder is strict: a frame that is truncated, longer than its length field says (beyond
//! the optional padding to 4 bytes of RFC 8656 section 12.5), larger than [`MAX_PAYLOAD_LEN`], or
//! on a channel outside the range is an error, never a panic.

/// Lowest channel number, RFC 8656 section 12.
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number, RFC 8656 section 12 (0x5000-0xFFFF are reserved).
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Length of the ChannelData header: channel number and length.
pub const HEADER_LEN: usize = 4;
/// Largest payload carried: an Opus packet (at most 1275 bytes, RFC 6716 section 3.2.1) with
/// its RTP header and room for extensions, well under a 1500-byte Ethernet MTU.
pub const MAX_PAYLOAD_LEN: usize = 1400;

/// Length of a relay token, at the start of a relay frame's payload.
pub const TOKEN_LEN: usize = 8;

/// Why bytes are not a relay frame, or a payload cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("{0} bytes is shorter than the 4-byte ChannelData header")]
    TooShort(usize),
    #[error("channel number {0:#06x} is outside 0x4000-0x4FFF")]
    BadChannel(u16),
    #[error("length field says {declared} bytes of payload but {actual} follow")]
    Truncated { declared: usize, actual: usize },
    #[error("{extra} bytes follow the {declared}-byte payload (at most 3 of padding allowed)")]
    TrailingBytes { declared: usize, extra: usize },
    #[error("payload of {0} bytes is larger than the {MAX_PAYLOAD_LEN}-byte limit")]
    TooLong(usize),
}

/// A decoded relay frame: a view of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number, 0x4000-0x4FFF.
    pub channel: u16,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

/// True for a channel number in RFC 8656's range.
pub fn is_valid_channel(channel: u16) -> bool {
    (CHANNEL_MIN..=CHANNEL_MAX).contains(&channel)
}

/// Frames `payload` on `channel`, appending to `out` (which is not cleared). No padding: over
/// UDP it is optional (RFC 8656 section 12.5).
pub fn encode_into(channel: u16, payload: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
    if !is_valid_channel(channel) {
        return Err(ChannelError::BadChannel(channel));
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(ChannelError::TooLong(payload.len()));
    }
    let len = u16::try_from(payload.len()).map_err(|_| ChannelError::TooLong(payload.len()))?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Frames `payload` on `channel` as a new datagram.
pub fn encode(channel: u16, payload: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(channel, payload, &mut out)?;
    Ok(out)
}

/// Decodes one relay frame, the whole datagram. Up to 3 bytes of padding after the payload are
/// allowed when they bring the frame to a multiple of 4 bytes (RFC 8656 section 12.5).
pub fn decode(bytes: &[u8]) -> Result<ChannelData<'_>, ChannelError> {
    if bytes.len() < HEADER_LEN {
        return Err(ChannelError::TooShort(bytes.len()));
    }
    let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
    if !is_valid_channel(channel) {
        return Err(ChannelError::BadChannel(channel));
    }
    let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if declared > MAX_PAYLOAD_LEN {
        return Err(ChannelError::TooLong(declared));
    }
    let rest = &bytes[HEADER_LEN..];
    if declared > rest.len() {
        return Err(ChannelError::Truncated {
            declared,
            actual: rest.len(),
        });
    }
    let extra = rest.len() - declared;
    if extra != 0 && extra != declared.next_multiple_of(4) - declared {
        return Err(ChannelError::TrailingBytes { declared, extra });
    }
    Ok(ChannelData {
        channel,
        payload: &rest[..declared],
    })
}

/// A relay frame of Pinhole: the token and the media it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayFrame<'a> {
    /// Channel number, 0x4000-0x4FFF.
    pub channel: u16,
    /// The relay token.
    pub token: [u8; TOKEN_LEN],
    /// The media (RTP or RTCP, encrypted end to end).
    pub media: &'a [u8],
}

/// Frames `media` with `token` on `channel`, appending to `out` (not cleared).
pub fn encode_relay_into(
    channel: u16,
    token: [u8; TOKEN_LEN],
    media: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ChannelError> {
    let total = TOKEN_LEN + media.len();
    if total > MAX_PAYLOAD_LEN {
        return Err(ChannelError::TooLong(total));
    }
    let start = out.len();
    encode_into(channel, &token, out)?;
    out.extend_from_slice(media);
    let len = u16::try_from(total).map_err(|_| ChannelError::TooLong(total))?;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes a relay frame and splits its payload into token and media.
pub fn decode_relay(bytes: &[u8]) -> Result<RelayFrame<'_>, ChannelError> {
    let frame = decode(bytes)?;
    let (token, media) =
        frame
            .payload
            .split_first_chunk::<TOKEN_LEN>()
            .ok_or(ChannelError::Truncated {
                declared: TOKEN_LEN,
                actual: frame.payload.len(),
            })?;
    Ok(RelayFrame {
        channel: frame.channel,
        token: *token,
        media,
    })
}

/// Puts `token` in place of a (decoded, valid) relay frame's token; a frame too short for one
/// is left alone.
pub fn set_token(frame: &mut [u8], token: [u8; TOKEN_LEN]) {
    if let Some(slot) = frame.get_mut(HEADER_LEN..HEADER_LEN + TOKEN_LEN) {
        slot.copy_from_slice(&token);
    }
}

/// What a datagram on the media socket is, by its first byte (RFC 7983 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 0-3: STUN (registration and keepalive answers, probes, connectivity checks).
    Stun,
    /// 64-79: a relay frame (TURN ChannelData) from the server.
    ChannelData,
    /// 128-191: RTP or RTCP (RFC 5761 muxing) sent directly by the peer.
    Rtp,
    /// Anything else (ZRTP, DTLS, QUIC, garbage, empty): dropped and counted.
    Unknown,
}

/// Tells a media socket datagram's kind from its first byte (RFC 7983 section 7).
pub fn classify(bytes: &[u8]) -> Kind {
    match bytes.first() {
        Some(0..=3) => Kind::Stun,
        Some(64..=79) => Kind::ChannelData,
        Some(128..=191) => Kind::Rtp,
        _ => Kind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let frame = encode(0x4001, b"abcde").unwrap();
        assert_eq!(
            frame,
            [0x40, 0x01, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e']
        );
        let data = decode(&frame).unwrap();
        assert_eq!(data.channel, 0x4001);
        assert_eq!(data.payload, b"abcde");
        assert_eq!(classify(&frame), Kind::ChannelData);
    }

    #[test]
    fn padding_is_accepted_only_to_a_multiple_of_four() {
        let mut frame = encode(0x4FFF, b"abcde").unwrap();
        frame.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode(&frame).unwrap().payload, b"abcde");
        frame.push(0);
        assert_eq!(
            decode(&frame),
            Err(ChannelError::TrailingBytes {
                declared: 5,
                extra: 4
            })
        );
        let mut frame = encode(0x4000, b"abcd").unwrap();
        frame.push(0);
        assert!(decode(&frame).is_err());
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(decode(&[]), Err(ChannelError::TooShort(0)));
        assert_eq!(decode(&[0x40, 0, 0]), Err(ChannelError::TooShort(3)));
        assert_eq!(decode(&[0x40, 0, 0, 0]).unwrap().payload, b"");
        assert_eq!(
            decode(&[0x3F, 0xFF, 0, 0]),
            Err(ChannelError::BadChannel(0x3FFF))
        );
        assert_eq!(
            decode(&[0x50, 0x00, 0, 0]),
            Err(ChannelError::BadChannel(0x5000))
        );
        assert_eq!(
            decode(&[0x40, 0, 0, 2, 1]),
            Err(ChannelError::Truncated {
                declared: 2,
                actual: 1
            })
        );
        assert_eq!(
            decode(&[0x40, 0, 0xFF, 0xFF]),
            Err(ChannelError::TooLong(0xFFFF))
        );
        assert_eq!(encode(0x5000, b""), Err(ChannelError::BadChannel(0x5000)));
        assert_eq!(
            encode(0x4000, &[0; MAX_PAYLOAD_LEN + 1]),
            Err(ChannelError::TooLong(MAX_PAYLOAD_LEN + 1))
        );
        assert!(encode(0x4000, &[0; MAX_PAYLOAD_LEN]).is_ok());
    }

    #[test]
    fn classify_follows_rfc7983() {
        for b in 0..=255u8 {
            let want = match b {
                0..=3 => Kind::Stun,
                64..=79 => Kind::ChannelData,
                128..=191 => Kind::Rtp,
                _ => Kind::Unknown,
            };
            assert_eq!(classify(&[b, 0, 0, 0]), want, "first byte {b}");
        }
        assert_eq!(classify(&[]), Kind::Unknown);
    }
}
