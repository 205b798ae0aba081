//! STUN message framing (RFC 8489), the wire format of Pinhole's UDP control messages.
//!
//! This module holds the part every STUN client understands: the 20-byte header with the magic
//! cookie and transaction id, and the Binding method with XOR-MAPPED-ADDRESS. A plain Binding
//! Request to `pinhole-rendezvous` gets a standard answer, so any STUN client can use the server.
//! The patent's own messages (P1-P7) are framed the same way, with their fields as
//! comprehension-optional attributes, MESSAGE-INTEGRITY (section 14.5) and FINGERPRINT
//! (section 14.7): see [`crate::wire`]. This module has the generic pieces: an attribute
//! writer ([`Builder`]) and the integrity and fingerprint checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{KeyInit, Mac};

/// The magic cookie, RFC 8489 section 5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed header, RFC 8489 section 5.
pub const HEADER_LEN: usize = 20;
/// Largest message we decode or answer: a datagram that fits an unfragmented IPv6 path
/// (RFC 8489 section 6.1 asks for at most the path MTU).
pub const MAX_MESSAGE_LEN: usize = 1280;

/// Binding Request: method 0x001, class request (RFC 8489 section 18.2).
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding Success Response: method 0x001, class success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Binding Indication: method 0x001, class indication (the patent's P7 probe).
pub const BINDING_INDICATION: u16 = 0x0011;
/// XOR-MAPPED-ADDRESS, RFC 8489 section 14.2.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// MESSAGE-INTEGRITY (HMAC-SHA1), RFC 8489 section 14.5.
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// FINGERPRINT (CRC-32 xor 0x5354554e), RFC 8489 section 14.7.
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// PADDING, RFC 5780 section 7.6: makes a request at least as big as its answer.
pub const ATTR_PADDING: u16 = 0x0026;
/// Value XORed into the CRC-32 of FINGERPRINT.
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Length of an HMAC-SHA1 value.
pub const INTEGRITY_LEN: usize = 20;
/// Bytes that MESSAGE-INTEGRITY and FINGERPRINT add at the end of a sealed message
/// ([`Builder::finish_with_integrity`]).
pub const TRAILER_LEN: usize = 4 + INTEGRITY_LEN + 8;

/// A STUN transaction id: 96 bits chosen by the requester.
pub type TransactionId = [u8; 12];

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is shorter than the 20-byte STUN header")]
    TooShort(usize),
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(usize),
    #[error("first two bits are not zero: not a STUN message")]
    NotStun,
    #[error("magic cookie {0:#010x} is not RFC 8489's")]
    BadCookie(u32),
    #[error("header says {declared} bytes of attributes but {actual} follow")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("attribute length {0} is not padded to a multiple of 4")]
    Unpadded(usize),
    #[error("attribute {kind:#06x} runs past the end of the message")]
    TruncatedAttribute { kind: u16 },
    #[error("XOR-MAPPED-ADDRESS is malformed")]
    BadAddress,
}

/// Why a message fails its integrity or fingerprint check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("no MESSAGE-INTEGRITY attribute")]
    Missing,
    #[error("MESSAGE-INTEGRITY is not 20 bytes")]
    Malformed,
    #[error("MESSAGE-INTEGRITY does not match the key")]
    Mismatch,
    #[error("FINGERPRINT does not match the message")]
    BadFingerprint,
}

/// The header of a decoded message and a view of its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message type: method and class (RFC 8489 section 5).
    pub kind: u16,
    pub transaction_id: TransactionId,
    attributes: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Message<'a> {
    /// Decodes and validates a whole message: header, total length, and the framing of every
    /// attribute. Attribute values are read on demand.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        if bytes[0] & 0xc0 != 0 {
            return Err(DecodeError::NotStun);
        }
        let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let cookie = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadCookie(cookie));
        }
        let attributes = &bytes[HEADER_LEN..];
        if declared != attributes.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                actual: attributes.len(),
            });
        }
        if declared % 4 != 0 {
            return Err(DecodeError::Unpadded(declared));
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&bytes[8..HEADER_LEN]);
        let message = Message {
            kind,
            transaction_id,
            attributes,
            raw: bytes,
        };
        for attribute in message.attributes() {
            attribute?;
        }
        Ok(message)
    }

    /// The attributes in order, as `(type, value)`; an error for one that runs past the end.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            rest: self.attributes,
        }
    }

    /// The whole encoded message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The value of the first attribute of type `kind`, if any.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes()
            .filter_map(Result::ok)
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }

    /// Checks MESSAGE-INTEGRITY (RFC 8489 section 14.5) with `key`, and FINGERPRINT when it
    /// follows. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are not covered by
    /// the MAC; callers read only attributes before it (see [`Message::integrity_offset`]).
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let offset = self.integrity_offset().ok_or(IntegrityError::Missing)?;
        let value = &self.raw[offset + 4..];
        if u16::from_be_bytes([self.raw[offset + 2], self.raw[offset + 3]]) as usize
            != INTEGRITY_LEN
            || value.len() < INTEGRITY_LEN
        {
            return Err(IntegrityError::Malformed);
        }
        // The MAC's own comparison, in constant time.
        let verified = integrity_mac(&self.raw[..offset], key)
            .is_some_and(|mac| mac.verify_slice(&value[..INTEGRITY_LEN]).is_ok());
        if !verified {
            return Err(IntegrityError::Mismatch);
        }
        if let Some(fp_offset) = self.offset_of(ATTR_FINGERPRINT) {
            let value = &self.raw[fp_offset + 4..];
            if value.len() < 4 {
                return Err(IntegrityError::BadFingerprint);
            }
            let got = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            if got != fingerprint(&self.raw[..fp_offset]) {
                return Err(IntegrityError::BadFingerprint);
            }
        }
        Ok(())
    }

    /// Byte offset in the message of the MESSAGE-INTEGRITY attribute's header, if present.
    pub fn integrity_offset(&self) -> Option<usize> {
        self.offset_of(ATTR_MESSAGE_INTEGRITY)
    }

    /// Byte offset in the message of the first attribute of type `wanted`.
    pub fn offset_of(&self, wanted: u16) -> Option<usize> {
        let mut offset = HEADER_LEN;
        for attribute in self.attributes() {
            let (kind, value) = attribute.ok()?;
            if kind == wanted {
                return Some(offset);
            }
            offset += 4 + value.len().div_ceil(4) * 4;
        }
        None
    }

    /// The first XOR-MAPPED-ADDRESS, if any.
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, DecodeError> {
        for attribute in self.attributes() {
            let (kind, value) = attribute?;
            if kind == ATTR_XOR_MAPPED_ADDRESS {
                return decode_xor_address(value, &self.transaction_id).map(Some);
            }
        }
        Ok(None)
    }
}

/// Iterator over a message's attributes.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < 4 {
            self.rest = &[];
            return Some(Err(DecodeError::TruncatedAttribute { kind: 0 }));
        }
        let kind = u16::from_be_bytes([self.rest[0], self.rest[1]]);
        let len = usize::from(u16::from_be_bytes([self.rest[2], self.rest[3]]));
        let padded = len.div_ceil(4) * 4;
        if 4 + padded > self.rest.len() {
            self.rest = &[];
            return Some(Err(DecodeError::TruncatedAttribute { kind }));
        }
        let value = &self.rest[4..4 + len];
        self.rest = &self.rest[4 + padded..];
        Some(Ok((kind, value)))
    }
}

/// Writes a STUN message attribute by attribute, then seals it with MESSAGE-INTEGRITY and
/// FINGERPRINT. Values longer than the message limit are refused by [`Builder::finish`].
#[derive(Debug, Clone)]
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// Starts a message of type `kind` (method and class).
    pub fn new(kind: u16, transaction_id: &TransactionId) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.resize(HEADER_LEN, 0);
        write_header(&mut buf, kind, 0, transaction_id);
        Builder { buf }
    }

    /// Appends one attribute, padded to 4 bytes with zeros.
    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&value[..usize::from(len)]);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    /// Appends XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&self.buf[8..HEADER_LEN]);
        let mut value = [0u8; 20];
        let xport = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        value[2..4].copy_from_slice(&xport.to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(v4) => {
                value[1] = 0x01;
                value[4..8].copy_from_slice(&(u32::from(v4) ^ MAGIC_COOKIE).to_be_bytes());
                8
            }
            IpAddr::V6(v6) => {
                value[1] = 0x02;
                let key = xor_key(&tid);
                for (i, b) in v6.octets().iter().enumerate() {
                    value[4 + i] = b ^ key[i];
                }
                20
            }
        };
        self.attribute(ATTR_XOR_MAPPED_ADDRESS, &value[..len])
    }

    /// Current length of the message, with the attributes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no attribute has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// Adds a PADDING attribute so that the sealed message (with `trailer` more bytes of
    /// integrity and fingerprint) is at least `total` bytes long.
    pub fn pad_to(&mut self, total: usize, trailer: usize) -> &mut Self {
        let have = self.buf.len() + trailer + 4;
        if total > have {
            let zeros = [0u8; MAX_MESSAGE_LEN];
            let n = (total - have).min(MAX_MESSAGE_LEN - self.buf.len().min(MAX_MESSAGE_LEN));
            self.attribute(ATTR_PADDING, &zeros[..n]);
        }
        self
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` and FINGERPRINT, and returns the message.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let offset = self.buf.len();
        self.set_length(offset + 4 + INTEGRITY_LEN);
        let mut mac = [0u8; INTEGRITY_LEN];
        if let Some(m) = integrity_mac(&self.buf, key) {
            mac.copy_from_slice(&m.finalize().into_bytes());
        }
        self.attribute(ATTR_MESSAGE_INTEGRITY, &mac);
        self.finish()
    }

    /// Appends FINGERPRINT and returns the message.
    pub fn finish(mut self) -> Result<Vec<u8>, DecodeError> {
        let offset = self.buf.len();
        self.set_length(offset + 8);
        let crc = fingerprint(&self.buf);
        self.attribute(ATTR_FINGERPRINT, &crc.to_be_bytes());
        if self.buf.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong(self.buf.len()));
        }
        Ok(self.buf)
    }

    fn set_length(&mut self, total: usize) {
        let len = u16::try_from(total - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The HMAC-SHA1 of `prefix` (the message up to MESSAGE-INTEGRITY, with the header length
/// counting it), RFC 8489 section 14.5, ready to finalize or verify.
/// (HMAC takes a key of any length, so this is never `None`.)
fn integrity_mac(prefix: &[u8], key: &[u8]) -> Option<hmac::Hmac<sha1::Sha1>> {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).ok()?;
    // The length field must count the MESSAGE-INTEGRITY attribute itself.
    let len = u16::try_from(prefix.len() + 4 + INTEGRITY_LEN - HEADER_LEN).unwrap_or(0);
    mac.update(&prefix[..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&prefix[4..]);
    Some(mac)
}

/// FINGERPRINT value of `prefix` (the message up to FINGERPRINT), RFC 8489 section 14.7: the
/// CRC-32 of ISO 3309, xor 0x5354554e.
fn fingerprint(prefix: &[u8]) -> u32 {
    let len = u16::try_from(prefix.len() + 8 - HEADER_LEN).unwrap_or(0);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&prefix[..2]);
    crc.update(&len.to_be_bytes());
    crc.update(&prefix[4..]);
    crc.finalize() ^ FINGERPRINT_XOR
}

/// True when `bytes` decode as a Binding Request carrying no Pinhole attribute: the plain
/// RFC 8489 request any STUN client sends. The server answers these without touching state.
pub fn answer_plain_binding(bytes: &[u8], from: SocketAddr, out: &mut [u8; 44]) -> Option<usize> {
    let request = Message::decode(bytes).ok()?;
    if request.kind != BINDING_REQUEST
        || request
            .attributes()
            .any(|a| matches!(a, Ok((kind, _)) if crate::wire::is_pinhole_attribute(kind)))
    {
        return None;
    }
    let from = SocketAddr::new(crate::addr::normalize(from.ip()), from.port());
    Some(encode_binding_success(&request.transaction_id, from, out))
}

/// Encodes a Binding Request with no attributes.
pub fn encode_binding_request(transaction_id: &TransactionId) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    write_header(&mut out, BINDING_REQUEST, 0, transaction_id);
    out
}

/// Encodes a Binding Success Response carrying `mapped` as XOR-MAPPED-ADDRESS into `out`,
/// returning the message's length (32 bytes for IPv4, 44 for IPv6).
pub fn encode_binding_success(
    transaction_id: &TransactionId,
    mapped: SocketAddr,
    out: &mut [u8; 44],
) -> usize {
    let value_len: u16 = match mapped.ip() {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 20,
    };
    let total = HEADER_LEN + 4 + usize::from(value_len);
    write_header(&mut out[..], BINDING_SUCCESS, 4 + value_len, transaction_id);
    out[20..22].copy_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out[22..24].copy_from_slice(&value_len.to_be_bytes());
    out[24] = 0;
    let xport = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[26..28].copy_from_slice(&xport.to_be_bytes());
    match mapped.ip() {
        IpAddr::V4(v4) => {
            out[25] = 0x01;
            let x = u32::from(v4) ^ MAGIC_COOKIE;
            out[28..32].copy_from_slice(&x.to_be_bytes());
        }
        IpAddr::V6(v6) => {
            out[25] = 0x02;
            let key = xor_key(transaction_id);
            for (i, b) in v6.octets().iter().enumerate() {
                out[28 + i] = b ^ key[i];
            }
        }
    }
    total
}

fn write_header(out: &mut [u8], kind: u16, len: u16, transaction_id: &TransactionId) {
    out[0..2].copy_from_slice(&kind.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(transaction_id);
}

/// The 16-byte key IPv6 addresses are XORed with: cookie then transaction id (section 14.2).
fn xor_key(transaction_id: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(transaction_id);
    key
}

pub(crate) fn decode_xor_address(
    value: &[u8],
    transaction_id: &TransactionId,
) -> Result<SocketAddr, DecodeError> {
    if value.len() < 4 {
        return Err(DecodeError::BadAddress);
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let x = u32::from_be_bytes([value[4], value[5], value[6], value[7]]);
            IpAddr::V4(Ipv4Addr::from(x ^ MAGIC_COOKIE))
        }
        (0x02, 20) => {
            let key = xor_key(transaction_id);
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(DecodeError::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc5769_ipv4_response_vector_decodes() {
        // RFC 5769 section 2.2, with the SOFTWARE, MESSAGE-INTEGRITY and FINGERPRINT attributes
        // kept: the decoder must skip attributes it does not read.
        let hex = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
                   002000080001a147e112a643000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
                   80280004c07d4c96";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.kind, BINDING_SUCCESS);
        assert_eq!(
            message.xor_mapped_address().unwrap(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc5769_request_integrity_and_fingerprint_verify() {
        // RFC 5769 section 2.1, password "VOkJxbRl1RmTxUk/WvJxBt".
        let bytes = unhex(
            "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74\
             002400046e0001ff80290008932ff9b151263b36000600096576746a3a6836765920202000080014\
             9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf",
        );
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"), Ok(()));
        assert_eq!(
            message.verify_integrity(b"wrong"),
            Err(IntegrityError::Mismatch)
        );
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        let message = Message::decode(&flipped).unwrap();
        assert!(message.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt").is_err());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let message = Message::decode(&flipped).unwrap();
        assert_eq!(
            message.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"),
            Err(IntegrityError::BadFingerprint)
        );
    }

    #[test]
    fn builder_output_verifies_and_detects_tampering() {
        let id = [3u8; 12];
        let mut b = Builder::new(BINDING_SUCCESS, &id);
        b.attribute(0x8022, b"test vector");
        b.xor_mapped_address("192.0.2.1:32853".parse().unwrap());
        b.pad_to(100, TRAILER_LEN);
        let bytes = b.finish_with_integrity(b"key").unwrap();
        assert!(bytes.len() >= 100, "{}", bytes.len());
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.verify_integrity(b"key"), Ok(()));
        assert_eq!(message.attribute(0x8022), Some(&b"test vector"[..]));
        assert_eq!(
            message.xor_mapped_address().unwrap(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        // Every byte but the FINGERPRINT attribute's type (changing it makes an unknown
        // attribute after MESSAGE-INTEGRITY, which RFC 8489 says to ignore).
        for i in (0..bytes.len()).filter(|i| !(bytes.len() - 8..bytes.len() - 6).contains(i)) {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x40;
            if let Ok(m) = Message::decode(&tampered) {
                assert!(m.verify_integrity(b"key").is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let id = [7u8; 12];
        let good = encode_binding_request(&id);
        assert_eq!(Message::decode(&good[..19]), Err(DecodeError::TooShort(19)));
        let mut rtp = good;
        rtp[0] = 0x80;
        assert_eq!(Message::decode(&rtp), Err(DecodeError::NotStun));
        let mut cookie = good;
        cookie[4] = 0;
        assert!(matches!(
            Message::decode(&cookie),
            Err(DecodeError::BadCookie(_))
        ));
        let mut long = good.to_vec();
        long.extend_from_slice(&[0; 4]);
        assert!(matches!(
            Message::decode(&long),
            Err(DecodeError::LengthMismatch { .. })
        ));
        assert_eq!(
            Message::decode(&vec![0u8; 2000]),
            Err(DecodeError::TooLong(2000))
        );
    }

    proptest! {
        #[test]
        fn binding_success_round_trips(id in any::<[u8; 12]>(), ip in any::<IpAddr>(), port in any::<u16>()) {
            // The wire carries address and port only, no IPv6 flow label or scope.
            let addr = SocketAddr::new(ip, port);
            let mut buf = [0u8; 44];
            let len = encode_binding_success(&id, addr, &mut buf);
            let message = Message::decode(&buf[..len]).unwrap();
            prop_assert_eq!(message.kind, BINDING_SUCCESS);
            prop_assert_eq!(message.transaction_id, id);
            prop_assert_eq!(message.xor_mapped_address().unwrap(), Some(addr));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(message) = Message::decode(&bytes) {
                let _ = message.xor_mapped_address();
            }
        }

        #[test]
        fn truncations_are_errors(id in any::<[u8; 12]>(), addr in any::<SocketAddr>(), cut in 0usize..44) {
            let mut buf = [0u8; 44];
            let len = encode_binding_success(&id, addr, &mut buf);
            prop_assume!(cut < len);
            prop_assert!(Message::decode(&buf[..cut]).is_err());
        }
    }
}
