//! The phone's call signalling: what the server says on the control connection.

use std::time::{Duration, Instant};

use ed25519_dalek::Signer;

use super::types::{EndReason, Event, MediaPath, Registration, ServerLoss, StopReason, TcpAction};
use super::{Call, Link, Phone, Route, UpCall};
use crate::calls::ECHO;
use crate::calls::registration_message;
use crate::client::e2e::{self, CallSecurity};
use crate::control::E2eHello;
use crate::control::{self, ClientMessage, ServerMessage};
use crate::punch::{self, Birthday, Punch, PunchConfig};
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
            ServerMessage::GoingAway { retry_after_ms } => {
                self.handle_going_away(now, Duration::from_millis(retry_after_ms));
            }
            ServerMessage::Incoming {
                call_id,
                from,
                candidates,
                key,
                commitment,
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
                    key,
                    commitment,
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
                channel,
                relay_token,
                peer_key,
                e2e,
            } => {
                let Some(token) = unhex(&relay_token).and_then(|t| t.try_into().ok()) else {
                    tracing::warn!(call_id, "Connected without a valid relay token");
                    if self.call.id() == Some(call_id) {
                        self.end_call_here(now, EndReason::Remote(control::EndReason::ServerError));
                    }
                    return;
                };
                let route = Route {
                    candidates,
                    channel,
                    token,
                };
                self.handle_connected_call(now, call_id, route, &peer_key, e2e);
            }
            ServerMessage::Reveal { call_id, e2e } => self.handle_reveal(now, call_id, &e2e),
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
                "name_confusable" => StopReason::NameConfusable,
                "too_many_names" => StopReason::TooManyNames,
                "bad_name" => StopReason::BadName,
                "bad_signature" => StopReason::BadSignature,
                "server_full" => StopReason::ServerFull,
                // The server limits this address or connection for now, or (a node of a
                // cluster) cannot reach its name store: try again later, with the usual
                // back-off.
                "rate_limited" | "too_many_connections" | "try_later" => {
                    let detail = format!("{message} ({code})");
                    self.lose_server(now, ServerLoss::Unreachable { detail });
                    return;
                }
                // A server shutting down (its `going_away` comes first; this is in case not).
                "shutting_down" => {
                    self.lose_server(now, ServerLoss::ShuttingDown);
                    return;
                }
                _ => StopReason::Incompatible {
                    detail: format!("{message} ({code})"),
                },
            };
            self.stop(now, reason);
            return;
        }
        if code == "replaced" {
            tracing::warn!("our name was registered from another connection");
            self.send(&ClientMessage::Bye);
            self.tcp.push_back(TcpAction::Close);
            self.link = Link::Replaced;
            self.finish(now, EndReason::ServerLost);
            self.events
                .push_back(Event::Registration(Registration::Replaced));
            return;
        }
        // A refusal of the call we are placing ends it.
        if matches!(self.call, Call::Placing { .. }) {
            match code.as_str() {
                "not_registered" => self.finish(now, EndReason::ServerLost),
                "shutting_down" => self.finish(now, EndReason::ServerShutDown),
                _ => {}
            }
        }
        self.events.push_back(Event::Refused { code, message });
    }

    /// `Connected`: the caller checks the callee's keys, reveals its own and is up; the
    /// callee waits for that reveal.
    fn handle_connected_call(
        &mut self,
        now: Instant,
        call_id: u64,
        route: Route,
        peer_key: &str,
        answer: Option<E2eHello>,
    ) {
        let random = self.random32();
        match &mut self.call {
            Call::Placing {
                id,
                peer,
                placed,
                e2e,
                ..
            } if *id == call_id => {
                let (peer, placed) = (peer.clone(), *placed);
                let keys = if peer == ECHO {
                    Ok((None, CallSecurity::loopback(random)))
                } else {
                    match answer {
                        Some(answer) => e2e
                            .finish(&self.config.key, peer_key, &answer)
                            .map(|(reveal, keys)| (Some(reveal), keys)),
                        None => Err(e2e::E2eError::Malformed("answer")),
                    }
                };
                match keys {
                    Ok((reveal, security)) => {
                        if let Some(e2e) = reveal {
                            self.send(&ClientMessage::Reveal { call_id, e2e });
                        }
                        self.up(now, call_id, peer, placed, route, security);
                    }
                    Err(err) => {
                        tracing::warn!(call_id, peer, "the callee's keys: {err}");
                        self.end_call_here(now, EndReason::Insecure);
                    }
                }
            }
            Call::Accepting { id, connected, .. } if *id == call_id => {
                *connected = Some(Box::new(route));
            }
            _ => tracing::debug!(call_id, "Connected for no call of ours"),
        }
    }

    /// The caller's key, after `Connected`: the callee is up.
    fn handle_reveal(&mut self, now: Instant, call_id: u64, reveal: &E2eHello) {
        let Call::Accepting {
            id,
            peer,
            accepted,
            e2e,
            connected,
            ..
        } = &mut self.call
        else {
            return;
        };
        if *id != call_id {
            return;
        }
        let Some(route) = connected.take() else {
            tracing::debug!(call_id, "a reveal before Connected");
            return;
        };
        let (peer, accepted) = (peer.clone(), *accepted);
        match e2e.finish(&self.config.key, reveal) {
            Ok(security) => self.up(now, call_id, peer, accepted, *route, security),
            Err(err) => {
                tracing::warn!(call_id, peer, "the caller's keys: {err}");
                self.end_call_here(now, EndReason::Insecure);
            }
        }
    }

    /// The call is up with its keys: checks start, media goes to the relay first.
    fn up(
        &mut self,
        now: Instant,
        call_id: u64,
        peer: String,
        setup_from: Instant,
        route: Route,
        security: CallSecurity,
    ) {
        let Link::Up(session) = &self.link else {
            return;
        };
        let relay = session.server;
        let Route {
            candidates,
            channel,
            token,
        } = route;
        // Checks only to the peer's candidates that make sense from where we are.
        let own = self.candidates();
        let ours: Vec<std::net::IpAddr> = own.iter().map(|c| c.ip()).collect();
        let signalled = candidates;
        let candidates = Punch::filter_candidates(&signalled, &ours);
        // Birthday probing when exactly one side's NAT picks random ports, towards an address
        // the checks may go to anyway.
        let birthday = punch::birthday_role(&own, &signalled).filter(|b| match *b {
            Birthday::Spares { peer } => candidates.contains(&peer),
            Birthday::Spray { peer } => candidates.iter().any(|c| c.ip() == peer),
        });
        let punch = (!candidates.is_empty()).then(|| {
            let mut config = PunchConfig::new(
                security.check_secret.to_vec(),
                call_id,
                candidates.clone(),
                self.rng.next_u64(),
            );
            config.birthday = birthday;
            Punch::new(config, now)
        });
        let path = MediaPath::Relay {
            server: relay,
            channel,
            token,
        };
        tracing::info!(call_id, peer, channel, ?candidates, ?birthday, sas = ?security.sas, "call connected");
        self.call = Call::Up(Box::new(UpCall {
            id: call_id,
            peer: peer.clone(),
            channel,
            token,
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
            security,
        });
        if let Call::Up(up) = &mut self.call
            && let Some(punch) = up.punch.as_mut()
        {
            punch.handle_timeout(now);
        }
        self.drain_punch(now);
    }
}
