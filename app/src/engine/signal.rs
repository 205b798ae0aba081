//! The call signalling messages of docs/calls.md ("Names and keys", "Call signalling") as the
//! engine sends and reads them on the control connection: the same framing and JSON as
//! [`traversal::control`] (`type`-tagged, snake_case), so they share the stream with the
//! traversal client's messages. Messages of other types are skipped.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Why a call ended, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireReason {
    /// Either side hung up.
    HungUp,
    /// The caller gave up before an answer.
    Cancelled,
    /// The callee declined.
    Rejected,
    /// The callee is in another call.
    Busy,
    /// No such name online.
    Offline,
    /// 30 s of ringing.
    NoAnswer,
    /// The other side's connection dropped.
    PeerLost,
    /// The server failed.
    ServerError,
    /// Too many calls for one client.
    RelayLimit,
}

/// Client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalOut {
    /// Claim `name`, proving the key: `signature` over [`registration_message`].
    Register {
        /// The name.
        name: String,
        /// Ed25519 public key, hex (32 bytes).
        public_key: String,
        /// Ed25519 signature, hex (64 bytes).
        signature: String,
    },
    /// Place a call.
    Call {
        /// Chosen at random by the caller.
        call_id: u64,
        /// The callee's name.
        to: String,
        /// Our host candidates and mapped address (at most 8).
        candidates: Vec<SocketAddr>,
    },
    /// The phone rings.
    Ringing {
        /// The call.
        call_id: u64,
    },
    /// Accept, with our candidates.
    Accept {
        /// The call.
        call_id: u64,
        /// Our candidates.
        candidates: Vec<SocketAddr>,
    },
    /// Decline (`rejected` or `busy`).
    Reject {
        /// The call.
        call_id: u64,
        /// Why.
        reason: WireReason,
    },
    /// End the call (before an answer: cancel).
    HangUp {
        /// The call.
        call_id: u64,
    },
}

/// Server to client (only what the engine needs; other types are skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalIn {
    /// The first acknowledgement; `challenge` (hex, 32 bytes) is what a registration signs.
    Welcome {
        /// Fresh per connection.
        #[serde(default)]
        challenge: String,
    },
    /// The name is ours.
    Registered {
        /// The name.
        name: String,
    },
    /// Someone calls us.
    Incoming {
        /// The call.
        call_id: u64,
        /// The caller's name.
        from: String,
        /// The caller's candidates.
        candidates: Vec<SocketAddr>,
    },
    /// The callee's phone rings.
    Ringing {
        /// The call.
        call_id: u64,
    },
    /// The call is up.
    Connected {
        /// The call.
        call_id: u64,
        /// The other side's candidates.
        candidates: Vec<SocketAddr>,
        /// Hex, 16 bytes: the key of the connectivity checks.
        secret: String,
        /// The relay channel of the call.
        channel: u16,
    },
    /// The call is over.
    Ended {
        /// The call.
        call_id: u64,
        /// Why.
        reason: WireReason,
    },
    /// Something we sent was refused.
    Error {
        /// Stable identifier (`name_taken`, `bad_signature`...).
        code: String,
        /// In words.
        message: String,
    },
}

/// The bytes a registration signs: `b"pinhole-register-v1\0" || name || 0x00 || challenge`.
pub fn registration_message(name: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = b"pinhole-register-v1\0".to_vec();
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m.extend_from_slice(challenge);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_follow_the_design() {
        let frame = traversal::control::encode(&SignalOut::HangUp { call_id: 7 });
        assert_eq!(&frame[4..], br#"{"type":"hang_up","call_id":7}"#);
        let frame = traversal::control::encode(&SignalOut::Reject {
            call_id: 1,
            reason: WireReason::Busy,
        });
        assert_eq!(
            &frame[4..],
            br#"{"type":"reject","call_id":1,"reason":"busy"}"#
        );
        let mut d = traversal::control::FrameDecoder::new();
        let welcome = br#"{"type":"welcome","version":1,"user_index":3,"key":"00","observed":"127.0.0.1:5","private_network":false,"idle_timeout_s":180,"challenge":"ab"}"#;
        let mut frame = (welcome.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(welcome);
        d.push(&frame).unwrap();
        assert_eq!(
            d.next_message::<SignalIn>().unwrap(),
            Some(SignalIn::Welcome {
                challenge: "ab".into()
            })
        );
        let other = br#"{"type":"udp_seen","mapped":"127.0.0.1:5","test":false}"#;
        let mut frame = (other.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(other);
        d.push(&frame).unwrap();
        assert!(
            d.next_message::<SignalIn>().is_err(),
            "other types are skipped"
        );
        assert_eq!(d.buffered(), 0);
    }
}
