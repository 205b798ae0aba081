//! STUN message framing (RFC 8489), the wire format of Pinhole's UDP control messages.
//!
//! This module holds the part every STUN client understands: the 20-byte header with the magic
//! cookie and transaction id, and the Binding method with XOR-MAPPED-ADDRESS. A plain Binding
//! Request to `pinhole-rendezvous` gets a standard answer, so any STUN client can use the server.
//! The patent's own messages (P1-P7) are to be framed the same way, with their fields as
//! comprehension-optional attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
/// XOR-MAPPED-ADDRESS, RFC 8489 section 14.2.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

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

/// The header of a decoded message and a view of its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message type: method and class (RFC 8489 section 5).
    pub kind: u16,
    pub transaction_id: TransactionId,
    attributes: &'a [u8],
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

fn decode_xor_address(
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
