//! The TCP control connection: the patent's S1-S3 (first information and first
//! acknowledgement), P2 (the list of addresses), P5 (the verdict), probe requests, and later
//! call signalling.
//!
//! Framing: each message is a 4-byte big-endian length followed by that many bytes of JSON
//! (one [`ClientMessage`] or [`ServerMessage`], tagged by `"type"`). A frame is at most
//! [`MAX_FRAME_LEN`] bytes. The framing is a plain byte stream, so TLS can wrap it later
//! without any change to the messages. New message kinds (call signalling: register a name,
//! call, ring, answer, hang up, candidates) are new variants of the two enums. A `type` the
//! peer does not know is a frame it cannot decode: the server answers `bad_frame` and closes,
//! a client drops the connection and connects again with its back-off (what a client from
//! before [`ServerMessage::GoingAway`] does with it). The protocol version in the hello
//! ([`PROTOCOL_VERSION`]) is raised when a change is not backwards compatible.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Version of the control protocol, sent in [`ClientMessage::Hello`] and
/// [`ServerMessage::Welcome`].
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest frame body, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Largest frame the server accepts from a client: far more than any client message needs.
pub const MAX_CLIENT_FRAME_LEN: usize = 8 * 1024;
/// Most addresses a client may list in [`ClientMessage::Addresses`].
pub const MAX_LISTED_ADDRESSES: usize = 32;

/// The client's verdict (the patent's S8/S10 and P5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No private network: the address the client uses is the one the server sees.
    Public,
    /// A private network, but the address the server saw on UDP is one of the client's own:
    /// a public address behind a proxy (S8, S9).
    Proxy,
    /// A private address behind NAT (S10).
    Nat,
}

impl Verdict {
    /// The lowercase name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Public => "public",
            Verdict::Proxy => "proxy",
            Verdict::Nat => "nat",
        }
    }
}

/// Which of the client's mappings a probe goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeTarget {
    /// The media socket's mapping.
    Main,
    /// The second socket used to measure the mapping lifetime.
    Test,
}

/// Messages from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// S1: the first information: the local address of this TCP connection (the patent's
    /// "access IP"), and the protocol version.
    Hello { version: u32, access: SocketAddr },
    /// S5, P2: every local interface address (IPv4 and IPv6) and the media socket's port.
    Addresses { addresses: Vec<IpAddr>, port: u16 },
    /// S8/S10, P5: the verdict and the mapped address it was decided on.
    Verdict {
        verdict: Verdict,
        mapped: SocketAddr,
    },
    /// Asks the server to send a probe (P7) through a mapping; `nonce` comes back in it.
    /// With `from_alternate_port` the probe leaves from another server port, to which the
    /// client never sent anything: it tests the NAT's filtering (RFC 5780 section 4.4).
    Probe {
        nonce: u64,
        target: ProbeTarget,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        from_alternate_port: bool,
    },
    /// Orderly goodbye: the server releases the registration.
    Bye,
    /// Claims `name` for the Ed25519 key `public_key` (hex, 32 bytes): `signature` (hex, 64
    /// bytes) over [`crate::calls::registration_message`] with the `challenge` of `Welcome`.
    Register {
        name: String,
        public_key: String,
        signature: String,
    },
    /// Places a call. `candidates`: the caller's host candidates and mapped address, at most
    /// [`crate::calls::MAX_CANDIDATES`] (more are dropped).
    Call {
        call_id: u64,
        to: String,
        candidates: Vec<SocketAddr>,
        /// Hex of SHA-256 of the caller's ephemeral X25519 key ([`crate::client::e2e`]).
        commitment: String,
    },
    /// Callee: the phone rings.
    Ringing { call_id: u64 },
    /// Callee accepts, with its own candidates and its half of the key exchange.
    Accept {
        call_id: u64,
        candidates: Vec<SocketAddr>,
        e2e: E2eHello,
    },
    /// Caller, once connected: its ephemeral key, which the callee checks against the
    /// commitment of the call.
    Reveal { call_id: u64, e2e: E2eHello },
    /// Callee declines: `rejected` or `busy`.
    Reject { call_id: u64, reason: EndReason },
    /// Either side ends the call (the caller before an answer: a cancel).
    HangUp { call_id: u64 },
    /// Is the server there? Answered with [`ServerMessage::Pong`] at once: a client notices a
    /// server that stopped answering without waiting for keepalives to go unanswered.
    Ping { nonce: u64 },
}

/// Messages from server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// S3: the first acknowledgement. `observed` is the address the server sees for this TCP
    /// connection; `private_network` is true when it differs from the access address.
    /// `key` (hex) keys MESSAGE-INTEGRITY of every UDP message of this registration.
    Welcome {
        version: u32,
        user_index: u32,
        key: String,
        observed: SocketAddr,
        private_network: bool,
        /// How long the server keeps a mapping with no UDP from it.
        idle_timeout_s: u64,
        /// The registration challenge (hex, [`crate::calls::CHALLENGE_LEN`] bytes): a client
        /// claims its name by signing it ([`ClientMessage::Register`]). Empty from a server
        /// without the call service.
        #[serde(default)]
        challenge: String,
    },
    /// The server saw an authenticated UDP request from `mapped` (sent for the first one of a
    /// socket and whenever the address changes).
    UdpSeen { mapped: SocketAddr, test: bool },
    /// The server sent the probe `nonce` to `to`.
    ProbeSent { nonce: u64, to: SocketAddr },
    /// The server knows no mapping for the probe's target, or is rate-limiting probes.
    ProbeFailed { nonce: u64, reason: String },
    /// Answer to [`ClientMessage::Ping`].
    Pong { nonce: u64 },
    /// Call signalling (docs/calls.md). The name is the client's.
    Registered { name: String },
    /// To the callee: someone calls, with the caller's candidates, its name key (hex) and
    /// the commitment to its ephemeral key.
    Incoming {
        call_id: u64,
        from: String,
        candidates: Vec<SocketAddr>,
        key: String,
        commitment: String,
    },
    /// To the caller: the callee's phone rings.
    Ringing { call_id: u64 },
    /// To both: the call is up. `candidates` are the other side's; `channel` (0x4000-0x4FFF)
    /// is the relay channel and `relay_token` (hex, 8 bytes) authenticates this client's relay
    /// frames; `peer_key` is the other side's name key (hex); to the caller, `e2e` is the
    /// callee's half of the key exchange.
    Connected {
        call_id: u64,
        candidates: Vec<SocketAddr>,
        channel: u16,
        relay_token: String,
        peer_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        e2e: Option<E2eHello>,
    },
    /// To the callee: the caller's [`ClientMessage::Reveal`].
    Reveal { call_id: u64, e2e: E2eHello },
    /// The call is over.
    Ended { call_id: u64, reason: EndReason },
    /// Something the client sent was refused; `code` is a stable identifier (`name_taken`,
    /// `bad_signature`, `bad_name`, `server_full`, `not_registered`, `replaced`,
    /// `shutting_down`...).
    Error { code: String, message: String },
    /// The server is shutting down (a restart, an upgrade): it takes no new registrations or
    /// calls, keeps relaying the calls in progress until they end or its grace passes, then
    /// stops. A client registers again (here or elsewhere) in `retry_after_ms` at the
    /// earliest, then with its usual back-off. A client from before this message (protocol
    /// version 2 too) cannot decode it and treats it as a broken control connection: it drops
    /// the connection and connects again with its back-off, as when the server closes.
    GoingAway { retry_after_ms: u64 },
}

/// One side's half of a call's key exchange: an ephemeral X25519 public key and the signature
/// of the transcript under the name key (both hex). See [`crate::client::e2e`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2eHello {
    pub ephemeral: String,
    pub signature: String,
}

/// Why a call ended, on the wire (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Either side hung up.
    HungUp,
    /// The caller gave up before an answer.
    Cancelled,
    /// The callee declined.
    Rejected,
    /// The callee (or the caller) is in another call.
    Busy,
    /// No such name online.
    Offline,
    /// Not accepted within the ringing time (30 s).
    NoAnswer,
    /// The other side's control connection dropped or its mapping expired.
    PeerLost,
    /// The server could not go on with the call.
    ServerError,
    /// Too many calls for one client.
    RelayLimit,
}

/// Why bytes on the control connection are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLong(usize),
    #[error("frame is not a valid message: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// Encodes one message as a frame.
pub fn encode<M: Serialize>(message: &M) -> Vec<u8> {
    // Serializing these plain enums cannot fail.
    let body = serde_json::to_vec(message).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Incremental frame decoder: push bytes as they arrive, pop messages as they complete.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::with_limit(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder with nothing buffered, accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses frames longer than `limit` (at most [`MAX_FRAME_LEN`]): the
    /// server uses a small limit, since no client message needs more.
    pub fn with_limit(limit: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            limit: limit.min(MAX_FRAME_LEN),
        }
    }

    /// Appends received bytes. Refuses to buffer more than a frame and a bit beyond the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if self.buf.len() + bytes.len() > 2 * (4 + self.limit) + 4096 {
            return Err(FrameError::TooLong(self.buf.len() + bytes.len()));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message<M: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<M>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLong(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = serde_json::from_slice(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        if self.buf.is_empty() {
            // Idle connections hold no buffer.
            self.buf = Vec::new();
        }
        Ok(Some(message?))
    }

    /// Bytes held, waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes held by the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    /// A call id, a name matching `name` and up to 3 candidates.
    fn arb_call(name: &'static str) -> impl Strategy<Value = (u64, String, Vec<SocketAddr>)> {
        (
            any::<u64>(),
            name,
            proptest::collection::vec(arb_addr(), 0..4),
        )
    }

    fn arb_client() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (any::<u32>(), arb_addr())
                .prop_map(|(version, access)| ClientMessage::Hello { version, access }),
            (
                proptest::collection::vec(any::<IpAddr>(), 0..8),
                any::<u16>()
            )
                .prop_map(|(addresses, port)| ClientMessage::Addresses { addresses, port }),
            (
                prop_oneof![
                    Just(Verdict::Public),
                    Just(Verdict::Proxy),
                    Just(Verdict::Nat)
                ],
                arb_addr()
            )
                .prop_map(|(verdict, mapped)| ClientMessage::Verdict { verdict, mapped }),
            (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(nonce, t, a)| {
                ClientMessage::Probe {
                    nonce,
                    target: if t {
                        ProbeTarget::Test
                    } else {
                        ProbeTarget::Main
                    },
                    from_alternate_port: a,
                }
            }),
            Just(ClientMessage::Bye),
            ("[a-z]{0,8}", "[0-9a-f]{0,8}", "[0-9a-f]{0,8}").prop_map(
                |(name, public_key, signature)| ClientMessage::Register {
                    name,
                    public_key,
                    signature,
                }
            ),
            arb_call(".{0,10}").prop_map(|(call_id, to, candidates)| ClientMessage::Call {
                call_id,
                to,
                candidates,
                commitment: "ab".repeat(32),
            }),
            any::<u64>().prop_map(|call_id| ClientMessage::Ringing { call_id }),
            any::<u64>().prop_map(|call_id| ClientMessage::HangUp { call_id }),
            any::<u64>().prop_map(|call_id| ClientMessage::Reject {
                call_id,
                reason: EndReason::Busy
            }),
            (any::<u64>(), proptest::collection::vec(arb_addr(), 0..4)).prop_map(
                |(call_id, candidates)| ClientMessage::Accept {
                    call_id,
                    candidates,
                    e2e: E2eHello {
                        ephemeral: "01".repeat(32),
                        signature: "02".repeat(64),
                    },
                }
            ),
        ]
    }

    fn arb_server() -> impl Strategy<Value = ServerMessage> {
        prop_oneof![
            (
                any::<u32>(),
                "[0-9a-f]{0,40}",
                arb_addr(),
                any::<bool>(),
                any::<u64>(),
                "[0-9a-f]{0,64}"
            )
                .prop_map(
                    |(user_index, key, observed, private_network, idle_timeout_s, challenge)| {
                        ServerMessage::Welcome {
                            version: PROTOCOL_VERSION,
                            user_index,
                            key,
                            observed,
                            private_network,
                            idle_timeout_s,
                            challenge,
                        }
                    }
                ),
            any::<u64>().prop_map(|nonce| ServerMessage::Pong { nonce }),
            ("[a-z]{1,8}", any::<u64>()).prop_map(|(name, call_id)| {
                if call_id % 2 == 0 {
                    ServerMessage::Registered { name }
                } else {
                    ServerMessage::Ringing { call_id }
                }
            }),
            arb_call("[a-z]{1,8}").prop_map(|(call_id, from, candidates)| {
                ServerMessage::Incoming {
                    call_id,
                    from,
                    candidates,
                    key: "03".repeat(32),
                    commitment: "04".repeat(32),
                }
            }),
            (arb_addr(), any::<bool>())
                .prop_map(|(mapped, test)| ServerMessage::UdpSeen { mapped, test }),
            (any::<u64>(), arb_addr())
                .prop_map(|(nonce, to)| ServerMessage::ProbeSent { nonce, to }),
            (any::<u64>(), ".{0,20}")
                .prop_map(|(nonce, reason)| ServerMessage::ProbeFailed { nonce, reason }),
            ("[a-z_]{0,10}", ".{0,30}")
                .prop_map(|(code, message)| ServerMessage::Error { code, message }),
            any::<u64>().prop_map(|retry_after_ms| ServerMessage::GoingAway { retry_after_ms }),
        ]
    }

    /// The JSON of a message's frame (after the length prefix).
    fn json<M: Serialize>(message: &M) -> String {
        String::from_utf8(encode(message)[4..].to_vec()).unwrap()
    }

    #[test]
    fn wire_form_is_tagged_snake_case() {
        let probe = ClientMessage::Probe {
            nonce: 5,
            target: ProbeTarget::Main,
            from_alternate_port: false,
        };
        assert_eq!(
            json(&probe),
            r#"{"type":"probe","nonce":5,"target":"main"}"#
        );
    }

    #[test]
    fn call_messages_have_the_wire_form_of_the_design() {
        let wire = [
            (
                json(&ClientMessage::Reject {
                    call_id: 1,
                    reason: EndReason::Busy,
                }),
                r#"{"type":"reject","call_id":1,"reason":"busy"}"#,
            ),
            (
                json(&ClientMessage::HangUp { call_id: 7 }),
                r#"{"type":"hang_up","call_id":7}"#,
            ),
            (
                json(&ServerMessage::Ended {
                    call_id: 3,
                    reason: EndReason::NoAnswer,
                }),
                r#"{"type":"ended","call_id":3,"reason":"no_answer"}"#,
            ),
            (
                json(&ServerMessage::Connected {
                    call_id: 1,
                    candidates: vec!["203.0.113.1:40001".parse().unwrap()],
                    channel: 0x4001,
                    relay_token: "0011223344556677".into(),
                    peer_key: "05".into(),
                    e2e: None,
                }),
                r#"{"type":"connected","call_id":1,"candidates":["203.0.113.1:40001"],"channel":16385,"relay_token":"0011223344556677","peer_key":"05"}"#,
            ),
            (
                json(&ClientMessage::Ping { nonce: 9 }),
                r#"{"type":"ping","nonce":9}"#,
            ),
            (
                json(&ServerMessage::GoingAway {
                    retry_after_ms: 11000,
                }),
                r#"{"type":"going_away","retry_after_ms":11000}"#,
            ),
        ];
        for (got, design) in wire {
            assert_eq!(got, design);
        }
        // The challenge is a field of Welcome; a Welcome without one (a server with no call
        // service) decodes with an empty challenge.
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            user_index: 3,
            key: "00".into(),
            observed: "127.0.0.1:5".parse().unwrap(),
            private_network: false,
            idle_timeout_s: 180,
            challenge: "ab".into(),
        };
        let frame = encode(&welcome);
        let mut d = FrameDecoder::new();
        d.push(&frame).unwrap();
        assert_eq!(d.next_message::<ServerMessage>().unwrap(), Some(welcome));
        let bare = br#"{"type":"welcome","version":1,"user_index":3,"key":"00","observed":"127.0.0.1:5","private_network":false,"idle_timeout_s":180}"#;
        d.push(&u32::try_from(bare.len()).unwrap().to_be_bytes())
            .unwrap();
        d.push(bare).unwrap();
        assert!(matches!(
            d.next_message::<ServerMessage>().unwrap(),
            Some(ServerMessage::Welcome { challenge, .. }) if challenge.is_empty()
        ));
    }

    #[test]
    fn a_message_type_a_client_does_not_know_is_a_decode_error() {
        // What a client from before `going_away` makes of it (it drops the connection and
        // connects again with its back-off).
        let mut d = FrameDecoder::new();
        let body = br#"{"type":"moving_house","retry_after_ms":5}"#;
        d.push(&u32::try_from(body.len()).unwrap().to_be_bytes())
            .unwrap();
        d.push(body).unwrap();
        assert!(matches!(
            d.next_message::<ServerMessage>(),
            Err(FrameError::Invalid(_))
        ));
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut d = FrameDecoder::new();
        d.push(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes()).unwrap();
        assert!(matches!(
            d.next_message::<ClientMessage>(),
            Err(FrameError::TooLong(_))
        ));
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 0, 3, b'{', b'x', b'}']).unwrap();
        assert!(matches!(
            d.next_message::<ClientMessage>(),
            Err(FrameError::Invalid(_))
        ));
        let mut d = FrameDecoder::new();
        assert!(d.push(&vec![0u8; 3 * MAX_FRAME_LEN]).is_err());
        let mut d = FrameDecoder::with_limit(MAX_CLIENT_FRAME_LEN);
        d.push(&(MAX_CLIENT_FRAME_LEN as u32 + 1).to_be_bytes())
            .unwrap();
        assert!(matches!(
            d.next_message::<ClientMessage>(),
            Err(FrameError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn client_messages_round_trip_byte_by_byte(messages in proptest::collection::vec(arb_client(), 1..5)) {
            let mut bytes = Vec::new();
            for m in &messages {
                bytes.extend(encode(m));
            }
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for b in bytes {
                d.push(&[b]).unwrap();
                while let Some(m) = d.next_message::<ClientMessage>().unwrap() {
                    out.push(m);
                }
            }
            prop_assert_eq!(out, messages);
        }

        #[test]
        fn server_messages_round_trip(message in arb_server()) {
            let mut d = FrameDecoder::new();
            d.push(&encode(&message)).unwrap();
            prop_assert_eq!(d.next_message::<ServerMessage>().unwrap(), Some(message));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = FrameDecoder::new();
            if d.push(&bytes).is_ok() {
                for _ in 0..4 {
                    match d.next_message::<ClientMessage>() {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
            let mut d = FrameDecoder::new();
            let _ = d.push(&bytes);
            let _ = d.next_message::<ServerMessage>();
        }

        #[test]
        fn truncated_frames_wait_for_more(message in arb_client(), cut in 0usize..60) {
            let frame = encode(&message);
            prop_assume!(cut < frame.len());
            let mut d = FrameDecoder::new();
            d.push(&frame[..cut]).unwrap();
            prop_assert!(d.next_message::<ClientMessage>().unwrap().is_none());
        }
    }
}
