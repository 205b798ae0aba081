//! The patent's UDP messages, framed as STUN (RFC 8489).
//!
//! | patent | here | STUN class | attributes |
//! | --- | --- | --- | --- |
//! | P1/P3/P6: UDP packet with the 4-byte user index, from the media socket; also every keepalive (S13) | [`UdpMessage::Request`] | Binding Request | USER-INDEX, PINHOLE-FLAGS, PADDING, MESSAGE-INTEGRITY, FINGERPRINT |
//! | P4: acknowledgement carrying the address the server saw; also every keepalive answer | [`UdpMessage::Answer`] | Binding Success Response | XOR-MAPPED-ADDRESS, USER-INDEX, PINHOLE-FLAGS, MESSAGE-INTEGRITY, FINGERPRINT |
//! | P7: the server reaching the client through its mapping | [`UdpMessage::Probe`] | Binding Indication | USER-INDEX, PROBE-NONCE, MESSAGE-INTEGRITY, FINGERPRINT |
//! | path challenge to a new source address, and the client's path response ([`Flags::path_challenge`]) | [`UdpMessage::Answer`], [`UdpMessage::Request`] | as above | as above |
//!
//! The Pinhole attributes are in the comprehension-optional range (0x8000-0xFFFF), so a
//! standard STUN stack skips them; a Binding Request without USER-INDEX is a plain STUN request
//! and gets a plain answer. MESSAGE-INTEGRITY is keyed with the per-registration key that the
//! server hands out on the TCP control connection ([`crate::control`]), so nobody can steer
//! another client's mapping by guessing its user index. A request is padded (RFC 5780 PADDING)
//! to at least [`REQUEST_LEN`] bytes so that no answer is bigger than the request that caused it.

use std::net::SocketAddr;

use crate::stun::{
    self, Builder, DecodeError, IntegrityError, Message, TRAILER_LEN, TransactionId,
};

/// USER-INDEX: the patent's 4-byte user index, assigned by the server (big-endian u32).
pub const ATTR_USER_INDEX: u16 = 0xC0F0;
/// PINHOLE-FLAGS: 4 bytes of flags, see [`Flags`].
pub const ATTR_PINHOLE_FLAGS: u16 = 0xC0F1;
/// PROBE-NONCE: 8 bytes chosen by the client when it asks for a probe.
pub const ATTR_PROBE_NONCE: u16 = 0xC0F2;

/// Every request is padded to at least this many bytes: larger than the largest answer
/// (20 header + 24 IPv6 XOR-MAPPED-ADDRESS + 8 USER-INDEX + 8 FLAGS + 24 MI + 8 FP = 92).
/// The request itself is 20 + 8 + 8 + 24 + 8 = 68 bytes before padding.
pub const REQUEST_LEN: usize = 96;

/// Replay protection: the client's requests carry a sequence number in the first 8 bytes of
/// the transaction id (covered by MESSAGE-INTEGRITY), XORed with a mask derived from the key
/// so that the id still looks random on the wire. The server lets a request move a mapping
/// to a new address only if its sequence is higher than any seen, so a captured request
/// replayed from elsewhere moves nothing.
pub fn sequence_mask(key: &[u8]) -> u64 {
    use hmac::{KeyInit, Mac};
    let mut out = [0u8; 8];
    if let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(key) {
        mac.update(b"pinhole request sequence");
        out.copy_from_slice(&mac.finalize().into_bytes()[..8]);
    }
    u64::from_be_bytes(out)
}

/// A request transaction id carrying `sequence` (see [`sequence_mask`]) and 4 random bytes.
pub fn sequenced_tid(mask: u64, sequence: u64, random: [u8; 4]) -> TransactionId {
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&(sequence ^ mask).to_be_bytes());
    tid[8..].copy_from_slice(&random);
    tid
}

/// The sequence number in a request's transaction id (see [`sequence_mask`]).
pub fn tid_sequence(mask: u64, tid: &TransactionId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&tid[..8]);
    u64::from_be_bytes(b) ^ mask
}

/// True for the attribute types that make a Binding Request a Pinhole message.
pub fn is_pinhole_attribute(kind: u16) -> bool {
    matches!(
        kind,
        ATTR_USER_INDEX | ATTR_PINHOLE_FLAGS | ATTR_PROBE_NONCE
    )
}

/// Flags of PINHOLE-FLAGS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// The request comes from the client's second (lifetime test) socket, not its media socket.
    pub test_socket: bool,
    /// The answer was sent to an address the client listed (the patent's P4 to a listed
    /// address), not to the address it came from.
    pub to_listed: bool,
    /// Return routability (as QUIC validates a new path, RFC 9000 section 8.2). On an answer:
    /// a path challenge, not an answer; the server saw a request from an address that is not
    /// the registration's mapping and moves nothing until the client proves it receives there.
    /// On a request: the path response, sent from the socket the challenge reached, with the
    /// challenge's transaction id (96 bits the server drew).
    pub path_challenge: bool,
}

impl Flags {
    fn to_bits(self) -> u32 {
        u32::from(self.test_socket)
            | (u32::from(self.to_listed) << 1)
            | (u32::from(self.path_challenge) << 2)
    }

    fn from_bits(bits: u32) -> Self {
        Flags {
            test_socket: bits & 1 != 0,
            to_listed: bits & 2 != 0,
            path_challenge: bits & 4 != 0,
        }
    }
}

/// The path response to a datagram, if it is a path challenge (see [`Flags::path_challenge`])
/// for `user_index` sealed with `key`: the bytes to send back from the socket it arrived on.
pub fn path_response(datagram: &[u8], user_index: u32, key: &[u8]) -> Option<Vec<u8>> {
    match UdpMessage::decode(datagram, |u| (u == user_index).then_some(key)) {
        Ok(UdpMessage::Answer {
            transaction_id,
            flags,
            ..
        }) if flags.path_challenge => Some(
            UdpMessage::Request {
                transaction_id,
                user_index,
                flags: Flags {
                    test_socket: flags.test_socket,
                    to_listed: false,
                    path_challenge: true,
                },
            }
            .encode(key),
        ),
        _ => None,
    }
}

/// A Pinhole UDP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpMessage {
    /// Client to server: registration (P1/P3/P6) or keepalive, from the socket being mapped.
    Request {
        transaction_id: TransactionId,
        user_index: u32,
        flags: Flags,
    },
    /// Server to client: the address the server saw on the request (P4, keepalive answer).
    Answer {
        transaction_id: TransactionId,
        user_index: u32,
        mapped: SocketAddr,
        flags: Flags,
    },
    /// Server to client through the mapping (P7), asked for by the client over TCP.
    Probe {
        transaction_id: TransactionId,
        user_index: u32,
        nonce: u64,
    },
}

/// Why a datagram is not a valid Pinhole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Stun(#[from] DecodeError),
    #[error("not a Pinhole message (no USER-INDEX)")]
    NotPinhole,
    #[error("STUN message type {0:#06x} is not a Pinhole message")]
    UnexpectedKind(u16),
    #[error("attribute {0:#06x} is missing or has the wrong length")]
    BadAttribute(u16),
    #[error("unknown user index {0}")]
    UnknownUser(u32),
    #[error("authentication failed: {0}")]
    Integrity(#[from] IntegrityError),
}

impl UdpMessage {
    /// The user index the message carries.
    pub fn user_index(&self) -> u32 {
        match *self {
            UdpMessage::Request { user_index, .. }
            | UdpMessage::Answer { user_index, .. }
            | UdpMessage::Probe { user_index, .. } => user_index,
        }
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        match *self {
            UdpMessage::Request { transaction_id, .. }
            | UdpMessage::Answer { transaction_id, .. }
            | UdpMessage::Probe { transaction_id, .. } => transaction_id,
        }
    }

    /// Encodes and seals the message with `key`. Requests are padded to [`REQUEST_LEN`].
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let kind = match self {
            UdpMessage::Request { .. } => stun::BINDING_REQUEST,
            UdpMessage::Answer { .. } => stun::BINDING_SUCCESS,
            UdpMessage::Probe { .. } => stun::BINDING_INDICATION,
        };
        let mut b = Builder::new(kind, &self.transaction_id());
        if let UdpMessage::Answer { mapped, .. } = *self {
            b.xor_mapped_address(mapped);
        }
        b.attribute(ATTR_USER_INDEX, &self.user_index().to_be_bytes());
        match *self {
            UdpMessage::Request { flags, .. } => {
                b.attribute(ATTR_PINHOLE_FLAGS, &flags.to_bits().to_be_bytes());
                b.pad_to(REQUEST_LEN, TRAILER_LEN);
            }
            UdpMessage::Answer { flags, .. } => {
                b.attribute(ATTR_PINHOLE_FLAGS, &flags.to_bits().to_be_bytes());
            }
            UdpMessage::Probe { nonce, .. } => {
                b.attribute(ATTR_PROBE_NONCE, &nonce.to_be_bytes());
            }
        }
        // Our messages are a few dozen bytes: far below the limit, so this cannot fail.
        b.finish_with_integrity(key).unwrap_or_default()
    }

    /// Decodes a datagram, finds the user index, asks `key_for` for that user's key, and
    /// checks MESSAGE-INTEGRITY (and FINGERPRINT). Only attributes before MESSAGE-INTEGRITY
    /// are read, so nothing unauthenticated is trusted.
    pub fn decode<K: AsRef<[u8]>>(
        bytes: &[u8],
        key_for: impl FnOnce(u32) -> Option<K>,
    ) -> Result<Self, WireError> {
        let message = Message::decode(bytes)?;
        let user_index = read_user_index(&message)?;
        let key = key_for(user_index).ok_or(WireError::UnknownUser(user_index))?;
        message.verify_integrity(key.as_ref())?;
        // Pinhole messages end with MESSAGE-INTEGRITY then FINGERPRINT, nothing after.
        if message.integrity_offset() != bytes.len().checked_sub(TRAILER_LEN)
            || message.offset_of(stun::ATTR_FINGERPRINT) != bytes.len().checked_sub(8)
        {
            return Err(WireError::BadAttribute(stun::ATTR_FINGERPRINT));
        }
        let covered_end = message.integrity_offset().unwrap_or(bytes.len());
        // Only attributes that MESSAGE-INTEGRITY covers.
        let get = |kind: u16| {
            let mut offset = stun::HEADER_LEN;
            for attribute in message.attributes() {
                let (k, v) = attribute.ok()?;
                if offset >= covered_end {
                    return None;
                }
                if k == kind {
                    return Some(v);
                }
                offset += 4 + v.len().div_ceil(4) * 4;
            }
            None
        };
        let flags = match get(ATTR_PINHOLE_FLAGS) {
            Some(v) => Flags::from_bits(u32::from_be_bytes(
                v.try_into()
                    .map_err(|_| WireError::BadAttribute(ATTR_PINHOLE_FLAGS))?,
            )),
            None => Flags::default(),
        };
        let transaction_id = message.transaction_id;
        match message.kind {
            stun::BINDING_REQUEST => Ok(UdpMessage::Request {
                transaction_id,
                user_index,
                flags,
            }),
            stun::BINDING_SUCCESS => {
                let value = get(stun::ATTR_XOR_MAPPED_ADDRESS)
                    .ok_or(WireError::BadAttribute(stun::ATTR_XOR_MAPPED_ADDRESS))?;
                let mapped = stun::decode_xor_address(value, &transaction_id)?;
                Ok(UdpMessage::Answer {
                    transaction_id,
                    user_index,
                    mapped,
                    flags,
                })
            }
            stun::BINDING_INDICATION => {
                let nonce = get(ATTR_PROBE_NONCE)
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(u64::from_be_bytes)
                    .ok_or(WireError::BadAttribute(ATTR_PROBE_NONCE))?;
                Ok(UdpMessage::Probe {
                    transaction_id,
                    user_index,
                    nonce,
                })
            }
            other => Err(WireError::UnexpectedKind(other)),
        }
    }
}

/// Reads USER-INDEX from a decoded STUN message: `NotPinhole` when absent.
pub fn read_user_index(message: &Message<'_>) -> Result<u32, WireError> {
    let value = message
        .attribute(ATTR_USER_INDEX)
        .ok_or(WireError::NotPinhole)?;
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| WireError::BadAttribute(ATTR_USER_INDEX))?;
    Ok(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_flags() -> impl Strategy<Value = Flags> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(test_socket, to_listed, path_challenge)| Flags {
                test_socket,
                to_listed,
                path_challenge,
            },
        )
    }

    fn arb_message() -> impl Strategy<Value = UdpMessage> {
        prop_oneof![
            (any::<[u8; 12]>(), any::<u32>(), arb_flags()).prop_map(|(t, u, f)| {
                UdpMessage::Request {
                    transaction_id: t,
                    user_index: u,
                    flags: f,
                }
            }),
            (
                any::<[u8; 12]>(),
                any::<u32>(),
                any::<SocketAddr>(),
                arb_flags()
            )
                .prop_map(|(t, u, a, f)| UdpMessage::Answer {
                    transaction_id: t,
                    user_index: u,
                    mapped: SocketAddr::new(a.ip(), a.port()),
                    flags: f,
                }),
            (any::<[u8; 12]>(), any::<u32>(), any::<u64>()).prop_map(|(t, u, n)| {
                UdpMessage::Probe {
                    transaction_id: t,
                    user_index: u,
                    nonce: n,
                }
            }),
        ]
    }

    #[test]
    fn the_wire_bytes_do_not_change() {
        // Pinned: clients and servers of other versions, and the fuzz corpus, read these.
        let tid = [9; 12];
        let request = UdpMessage::Request {
            transaction_id: tid,
            user_index: 0x0102_0304,
            flags: Flags {
                test_socket: true,
                to_listed: false,
                path_challenge: false,
            },
        };
        let answer = UdpMessage::Answer {
            transaction_id: tid,
            user_index: 5,
            mapped: "[2001:db8::1]:3478".parse().unwrap(),
            flags: Flags {
                test_socket: false,
                to_listed: true,
                path_challenge: false,
            },
        };
        let probe = UdpMessage::Probe {
            transaction_id: tid,
            user_index: 6,
            nonce: 0x1122_3344_5566_7788,
        };
        let pinned = [
            "0001004c2112a442090909090909090909090909c0f0000401020304c0f1000400000001002600180000\
             0000000000000000000000000000000000000000000000080014a7a587637acdb8c7aeab79e637f9fbf9\
             1cb92fee80280004557109bc",
            "010100482112a4420909090909090909090909090020001400022c840113a9fa09090909090909090909\
             0908c0f0000400000005c0f1000400000002000800140328aa2e06cfc095ad960f09eb5c9cf8310d65c6\
             80280004c6b78533",
            "001100342112a442090909090909090909090909c0f0000400000006c0f2000811223344556677880008\
             0014f95a07fc16d75949cb0dad5f1c1338e545aa4d7f802800041c6e53e8",
        ];
        for (m, pinned) in [request, answer, probe].iter().zip(pinned) {
            assert_eq!(crate::server::hex(&m.encode(b"key")), pinned, "{m:?}");
        }
    }

    /// A request of user 7, sealed with `key`.
    fn request_of_user_7(key: &[u8]) -> Vec<u8> {
        UdpMessage::Request {
            transaction_id: [1; 12],
            user_index: 7,
            flags: Flags::default(),
        }
        .encode(key)
    }

    /// An answer to user 7 that says `mapped`, sealed with `b"k"`.
    fn answer_to_user_7(mapped: &str, flags: Flags) -> Vec<u8> {
        let (transaction_id, mapped) = ([5; 12], mapped.parse().unwrap());
        let answer = UdpMessage::Answer {
            transaction_id,
            user_index: 7,
            mapped,
            flags,
        };
        answer.encode(b"k")
    }

    #[test]
    fn answers_are_never_bigger_than_requests() {
        let request = request_of_user_7(b"k");
        let all = Flags {
            test_socket: true,
            to_listed: true,
            path_challenge: true,
        };
        let answer = answer_to_user_7("[2a00::1]:65535", all);
        assert!(request.len() >= REQUEST_LEN);
        assert!(
            answer.len() <= request.len(),
            "{} > {}",
            answer.len(),
            request.len()
        );
    }

    #[test]
    fn a_path_challenge_is_answered_with_its_transaction_id() {
        let flags = Flags {
            test_socket: true,
            to_listed: false,
            path_challenge: true,
        };
        let challenge = answer_to_user_7("192.0.2.1:4000", flags);
        let response = path_response(&challenge, 7, b"k").unwrap();
        assert_eq!(
            UdpMessage::decode(&response, |_| Some(b"k")).unwrap(),
            UdpMessage::Request {
                transaction_id: [5; 12],
                user_index: 7,
                flags,
            }
        );
        // Not for an ordinary answer, another user or another key.
        let answer = answer_to_user_7("192.0.2.1:4000", Flags::default());
        assert_eq!(path_response(&answer, 7, b"k"), None);
        assert_eq!(path_response(&challenge, 8, b"k"), None);
        assert_eq!(path_response(&challenge, 7, b"other"), None);
    }

    #[test]
    fn sequence_round_trips_through_the_transaction_id() {
        let mask = sequence_mask(b"key");
        let tid = sequenced_tid(mask, 42, [1, 2, 3, 4]);
        assert_eq!(tid_sequence(mask, &tid), 42);
        assert_ne!(tid_sequence(sequence_mask(b"other"), &tid), 42);
    }

    #[test]
    fn wrong_key_or_unknown_user_is_refused() {
        let bytes = request_of_user_7(b"right");
        assert!(matches!(
            UdpMessage::decode(&bytes, |_| Some(b"wrong")),
            Err(WireError::Integrity(IntegrityError::Mismatch))
        ));
        assert_eq!(
            UdpMessage::decode(&bytes, |_| None::<&[u8]>),
            Err(WireError::UnknownUser(7))
        );
        let plain = stun::encode_binding_request(&[2; 12]);
        assert_eq!(
            UdpMessage::decode(&plain, |_| Some(b"k")),
            Err(WireError::NotPinhole)
        );
    }

    proptest! {
        #[test]
        fn round_trips(message in arb_message(), key in proptest::collection::vec(any::<u8>(), 1..40)) {
            let bytes = message.encode(&key);
            let decoded = UdpMessage::decode(&bytes, |u| (u == message.user_index()).then_some(&key)).unwrap();
            prop_assert_eq!(decoded, message);
        }

        #[test]
        fn truncations_are_errors(message in arb_message(), cut in 0usize..120) {
            let bytes = message.encode(b"key");
            prop_assume!(cut < bytes.len());
            prop_assert!(UdpMessage::decode(&bytes[..cut], |_| Some(b"key")).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = UdpMessage::decode(&bytes, |_| Some(b"key"));
        }

        #[test]
        fn mutated_messages_never_panic_and_never_verify(message in arb_message(), at in 0usize..120, bit in 0u8..8) {
            let mut bytes = message.encode(b"key");
            prop_assume!(at < bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert!(UdpMessage::decode(&bytes, |_| Some(b"key")).is_err());
        }
    }
}
