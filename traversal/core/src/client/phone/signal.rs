//! The phone's call signalling: what the server says on the control connection.

use std::net::SocketAddr;
use std::time::Instant;

use ed25519_dalek::Signer;

use super::types::{EndReason, Event, MediaPath, Registration, StopReason, TcpAction};
use super::{Call, Link, Phone, UpCall};
use crate::calls::registration_message;
use crate::control::{self, ClientMessage, ServerMessage};
use crate::punch::{Punch, PunchConfig};
use crate::server::{hex, unhex};
use rand::Rng;

impl Phone {
    pub(super) fn handle_message(&mut self, now: Instant, message: ServerMessage) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        match message {
            ServerMessage::Welcome { ref challenge, .. } => {
                let challenge = unhex(challenge).filter(|c| !c.is_empty());
                session.client.handle_message(now, message);
                match challenge {
                    Some(challenge) => self.register_name(&challenge),
                    None => self.stop(
                        now,
                        StopReason::Incompatible {
                            detail: "the server has no call service (no registration challenge)"
                                .into(),
                        },
                    ),
                }
            }
            ServerMessage::UdpSeen { .. }
            | ServerMessage::ProbeSent { .. }
            | ServerMessage::ProbeFailed { .. } => session.client.handle_message(now, message),
            ServerMessage::Pong { nonce } => {
                if session.ping.is_some_and(|(n, _)| n == nonce) {
                    session.ping = None;
                    session.next_ping = now + self.config.ping_interval;
                }
            }
            ServerMessage::Registered { name } => {
                tracing::info!(name, "name registered");
                session.name_registered = true;
                self.maybe_online(now);
            }
            ServerMessage::Error { code, message } => self.handle_error(now, code, message),
            ServerMessage::Incoming {
                call_id,
                from,
                candidates,
            } => {
                if !matches!(self.call, Call::Idle) {
                    self.send(&ClientMessage::Reject {
                        call_id,
                        reason: control::EndReason::Busy,
                    });
                    return;
                }
                tracing::info!(call_id, from, ?candidates, "incoming call");
                self.send(&ClientMessage::Ringing { call_id });
                self.call = Call::Ringing {
                    id: call_id,
                    peer: from.clone(),
                };
                self.events.push_back(Event::Incoming { from });
            }
            ServerMessage::Ringing { call_id } => {
                if let Call::Placing { id, peer, .. } = &self.call
                    && *id == call_id
                {
                    let peer = peer.clone();
                    self.events.push_back(Event::Ringing { peer });
                }
            }
            ServerMessage::Connected {
                call_id,
                candidates,
                secret,
                channel,
            } => self.handle_connected_call(now, call_id, candidates, &secret, channel),
            ServerMessage::Ended { call_id, reason } => {
                if self.call.id() != Some(call_id) {
                    return;
                }
                // The server lost the peer's control connection, but a direct path that still
                // carries media says the peer is there: the call goes on (peer silence ends it
                // if the peer is really gone).
                if reason == control::EndReason::PeerLost
                    && let Call::Up(up) = &self.call
                    && matches!(up.path, MediaPath::Direct(_))
                {
                    tracing::info!("the server lost the peer; the direct path goes on");
                    return;
                }
                self.finish(now, EndReason::Remote(reason));
            }
        }
    }

    fn register_name(&mut self, challenge: &[u8]) {
        let name = self.config.name.clone();
        let signature = self
            .config
            .key
            .sign(&registration_message(&name, challenge));
        let public_key = hex(self.config.key.verifying_key().as_bytes());
        self.send(&ClientMessage::Register {
            name,
            public_key,
            signature: hex(&signature.to_bytes()),
        });
    }

    fn handle_error(&mut self, now: Instant, code: String, message: String) {
        let Link::Up(session) = &self.link else {
            return;
        };
        if !session.name_registered {
            // Anything refused before the name is ours is the registration.
            let reason = match code.as_str() {
                "name_taken" => StopReason::NameTaken,
                "bad_name" => StopReason::BadName,
                "bad_signature" => StopReason::BadSignature,
                "server_full" => StopReason::ServerFull,
                _ => StopReason::Incompatible {
                    detail: format!("{message} ({code})"),
                },
            };
            self.stop(now, reason);
            return;
        }
        if code == "replaced" {
            tracing::warn!("our name was registered from another connection");
            self.finish(now, EndReason::ServerLost);
            self.send(&ClientMessage::Bye);
            self.tcp.push_back(TcpAction::Close);
            self.link = Link::Replaced;
            self.events
                .push_back(Event::Registration(Registration::Replaced));
            return;
        }
        // A refusal of the call we are placing ends it.
        if matches!(self.call, Call::Placing { .. }) && code == "not_registered" {
            self.finish(now, EndReason::ServerLost);
        }
        self.events.push_back(Event::Refused { code, message });
    }

    fn handle_connected_call(
        &mut self,
        now: Instant,
        call_id: u64,
        candidates: Vec<SocketAddr>,
        secret: &str,
        channel: u16,
    ) {
        let (peer, setup_from) = match &self.call {
            Call::Placing {
                id, peer, placed, ..
            } if *id == call_id => (peer.clone(), *placed),
            Call::Accepting {
                id, peer, accepted, ..
            } if *id == call_id => (peer.clone(), *accepted),
            _ => {
                tracing::debug!(call_id, "Connected for no call of ours");
                return;
            }
        };
        let Link::Up(session) = &self.link else {
            return;
        };
        let relay = session.server;
        let punch = match unhex(secret) {
            Some(secret) if !candidates.is_empty() => Some(Punch::new(
                PunchConfig::new(secret, call_id, candidates.clone(), self.rng.next_u64()),
                now,
            )),
            _ => None,
        };
        let path = MediaPath::Relay {
            server: relay,
            channel,
        };
        tracing::info!(call_id, peer, channel, ?candidates, "call connected");
        self.call = Call::Up(Box::new(UpCall {
            id: call_id,
            peer: peer.clone(),
            channel,
            relay,
            punch,
            path,
            last_heard: now,
            relay_orphaned_until: None,
        }));
        self.events.push_back(Event::Connected {
            peer,
            path,
            setup_from,
        });
        if let Call::Up(up) = &mut self.call
            && let Some(punch) = up.punch.as_mut()
        {
            punch.handle_timeout(now);
        }
        self.drain_punch(now);
    }
}
