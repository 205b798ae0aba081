//! The control connection: hello (S2/S3), listed addresses (S5), verdicts, probe requests and
//! the call messages handed to the router.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{
    ConnId, Connection, MAX_P4_TARGETS, Registration, Server, TcpOutput, TokenBucket, normalize,
};
use crate::addr;
use crate::control::{
    self, ClientMessage, FrameDecoder, MAX_LISTED_ADDRESSES, PROTOCOL_VERSION, ServerMessage,
};
use crate::server::hex;
use crate::server::limits::Source;

impl Server {
    /// A TCP connection was accepted from `peer`. Returns false (and queues a close) when the
    /// server is full, or `peer`'s address (its /64 for IPv6) holds
    /// [`super::Config::max_connections_per_ip`] connections already.
    pub fn handle_tcp_open(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) -> bool {
        let source = Source::of(peer.ip());
        let open = self.per_source.get(&source).map_or(0, |n| *n as usize);
        if open >= self.config.max_connections_per_ip {
            self.stats.refused_per_address += 1;
            let message = "too many control connections from this address";
            self.refuse_connection(conn, "too_many_connections", message);
            return false;
        }
        if self.connections.len() >= self.config.max_registrations {
            self.stats.refused_full += 1;
            let message = "the server has no room for more registrations";
            self.refuse_connection(conn, "server_full", message);
            return false;
        }
        self.connections.insert(
            conn,
            Connection {
                peer: normalize(peer),
                opened: now,
                last_heard: now,
                decoder: FrameDecoder::with_limit(control::MAX_CLIENT_FRAME_LEN),
                user_index: None,
            },
        );
        *self.per_source.entry(source).or_default() += 1;
        true
    }

    /// Says why, and closes.
    fn refuse_connection(&mut self, conn: ConnId, code: &str, message: &str) {
        self.refuse(conn, code, message);
        self.tcp.push_back(TcpOutput::Close { conn });
    }

    /// A TCP connection closed: its registration is released.
    pub fn handle_tcp_closed(&mut self, _now: Instant, conn: ConnId) {
        let Some(c) = self.connections.remove(&conn) else {
            return;
        };
        let source = Source::of(c.peer.ip());
        if let Some(n) = self.per_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        if let Some(index) = c.user_index {
            self.registrations.remove(&index);
            self.challenges.remove(&index);
            self.calls.closed(conn);
            self.drain_calls();
            tracing::debug!(user_index = index, "registration released");
        }
    }

    /// Bytes arrived on a TCP connection.
    pub fn handle_tcp_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.last_heard = now;
        if let Err(err) = c.decoder.push(bytes) {
            self.protocol_error(now, conn, &err.to_string());
            return;
        }
        loop {
            let Some(c) = self.connections.get_mut(&conn) else {
                return;
            };
            match c.decoder.next_message::<ClientMessage>() {
                Ok(Some(message)) => self.handle_message(now, conn, message),
                Ok(None) => return,
                Err(err) => {
                    self.protocol_error(now, conn, &err.to_string());
                    return;
                }
            }
        }
    }

    fn protocol_error(&mut self, now: Instant, conn: ConnId, message: &str) {
        self.send(
            conn,
            &ServerMessage::Error {
                code: "bad_frame".into(),
                message: message.into(),
            },
        );
        self.tcp.push_back(TcpOutput::Close { conn });
        self.handle_tcp_closed(now, conn);
    }

    fn handle_message(&mut self, now: Instant, conn: ConnId, message: ClientMessage) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let peer = c.peer;
        let user_index = c.user_index;
        if self.going_away.is_some() && self.refuse_while_going_away(now, conn, &message) {
            return;
        }
        match (message, user_index) {
            (ClientMessage::Hello { version, access }, None) => {
                if version != PROTOCOL_VERSION {
                    self.send(
                        conn,
                        &ServerMessage::Error {
                            code: "version".into(),
                            message: format!(
                                "protocol version {version} is not supported (this server speaks {PROTOCOL_VERSION})"
                            ),
                        },
                    );
                    self.tcp.push_back(TcpOutput::Close { conn });
                    return;
                }
                let (user_index, key) = self.new_identity();
                let access = normalize(access);
                let private_network = access != peer;
                self.registrations.insert(
                    user_index,
                    Registration {
                        key,
                        conn,
                        mapped: None,
                        last_seen: now,
                        test_mapped: None,
                        test_last_seen: now,
                        listed: [None; MAX_P4_TARGETS],
                        listed_known: false,
                        p4_done: false,
                        last_request_len: 0,
                        last_request_tid: [0; 12],
                        last_sequence: [0; 2],
                        sequence_mask: crate::wire::sequence_mask(&key),
                        probes: [TokenBucket::FULL; 3],
                        probe_budget: TokenBucket::FULL,
                        challenges: TokenBucket::FULL,
                        verdict: None,
                    },
                );
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.user_index = Some(user_index);
                }
                tracing::debug!(user_index, %peer, %access, private_network, "registered");
                let challenge = self.calls.open(conn);
                let welcome = ServerMessage::Welcome {
                    version: PROTOCOL_VERSION,
                    user_index,
                    key: hex(&key),
                    observed: peer,
                    private_network,
                    idle_timeout_s: self.config.idle_timeout.as_secs(),
                    challenge,
                };
                self.send(conn, &welcome);
            }
            (ClientMessage::Addresses { addresses, port }, Some(index)) => {
                if addresses.len() > MAX_LISTED_ADDRESSES {
                    self.refuse(conn, "too_many_addresses", "too many addresses listed");
                    return;
                }
                let allow_private = self.config.allow_private_targets;
                let mut listed = [None; MAX_P4_TARGETS];
                let mut n = 0;
                for ip in addresses {
                    let ip = addr::normalize(ip);
                    if n < MAX_P4_TARGETS
                        && may_send_to(ip, allow_private)
                        && !listed[..n].contains(&Some(SocketAddr::new(ip, port)))
                    {
                        listed[n] = Some(SocketAddr::new(ip, port));
                        n += 1;
                    } else {
                        self.stats.p4_refused += 1;
                    }
                }
                if let Some(r) = self.registrations.get_mut(&index) {
                    r.listed = listed;
                    r.listed_known = true;
                }
                self.send_p4(now, index);
            }
            (ClientMessage::Verdict { verdict, mapped }, Some(index)) => {
                if let Some(r) = self.registrations.get_mut(&index) {
                    r.verdict = Some(verdict);
                }
                tracing::debug!(user_index = index, verdict = verdict.as_str(), %mapped, "verdict");
            }
            (
                ClientMessage::Probe {
                    nonce,
                    target,
                    from_alternate_port,
                },
                Some(index),
            ) => {
                self.probe(now, index, nonce, target, from_alternate_port);
            }
            (
                ClientMessage::Register {
                    name,
                    public_key,
                    signature,
                },
                Some(_),
            ) => {
                self.calls.set_source(conn, peer.ip());
                self.calls
                    .register(now, conn, &name, &public_key, &signature);
                self.drain_calls();
            }
            (
                ClientMessage::Call {
                    call_id,
                    to,
                    candidates,
                    commitment,
                },
                Some(_),
            ) => {
                self.calls.set_source(conn, peer.ip());
                self.calls
                    .call(now, conn, call_id, &to, candidates, commitment);
                self.drain_calls();
            }
            (ClientMessage::Ringing { call_id }, Some(_)) => {
                self.calls.ringing(conn, call_id);
                self.drain_calls();
            }
            (
                ClientMessage::Accept {
                    call_id,
                    candidates,
                    e2e,
                },
                Some(_),
            ) => {
                self.calls.accept(conn, call_id, candidates, e2e);
                self.drain_calls();
            }
            (ClientMessage::Reveal { call_id, e2e }, Some(_)) => {
                self.calls.reveal(conn, call_id, e2e);
                self.drain_calls();
            }
            (ClientMessage::Reject { call_id, reason }, Some(_)) => {
                self.calls.reject(conn, call_id, reason);
                self.drain_calls();
            }
            (ClientMessage::HangUp { call_id }, Some(_)) => {
                self.calls.hang_up(conn, call_id);
                self.drain_calls();
            }
            (ClientMessage::Ping { nonce }, _) => self.send(conn, &ServerMessage::Pong { nonce }),
            (ClientMessage::Bye, _) => {
                self.tcp.push_back(TcpOutput::Close { conn });
                self.handle_tcp_closed(now, conn);
            }
            (ClientMessage::Hello { .. }, Some(_)) => {
                self.refuse(conn, "already_registered", "hello sent twice");
            }
            (_, None) => self.refuse(conn, "no_hello", "say hello first"),
        }
    }

    /// After [`Server::go_away`]: a hello hears `going_away` (with when to come back) and
    /// `shutting_down`, and its connection closes; a name registration or a call is refused
    /// with `shutting_down` (a call also ends, `server_error`). True when `message` was
    /// refused; everything else (hang-ups, pings, the calls in progress) goes on.
    fn refuse_while_going_away(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: &ClientMessage,
    ) -> bool {
        const WHY: &str = "the server is shutting down; register again later";
        match message {
            ClientMessage::Hello { .. } => {
                let retry_after_ms = super::millis(self.retry_after(now));
                self.send(conn, &ServerMessage::GoingAway { retry_after_ms });
                self.refuse_connection(conn, "shutting_down", WHY);
            }
            ClientMessage::Register { .. } => self.refuse(conn, "shutting_down", WHY),
            ClientMessage::Call { call_id, .. } => {
                let call_id = *call_id;
                self.refuse(
                    conn,
                    "shutting_down",
                    "the server is shutting down: no new calls",
                );
                self.send(
                    conn,
                    &ServerMessage::Ended {
                        call_id,
                        reason: control::EndReason::ServerError,
                    },
                );
            }
            _ => return false,
        }
        self.stats.refused_shutting_down += 1;
        true
    }

    fn refuse(&mut self, conn: ConnId, code: &str, message: &str) {
        self.send(
            conn,
            &ServerMessage::Error {
                code: code.into(),
                message: message.into(),
            },
        );
    }
}

/// Where the server may send unsolicited UDP: public unicast, or (test only) also loopback
/// and private, but never unspecified, multicast or broadcast.
fn may_send_to(ip: IpAddr, allow_private: bool) -> bool {
    let ip = addr::normalize(ip);
    if addr::is_public_unicast(ip) {
        return true;
    }
    allow_private
        && match ip {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn may_send_to_refuses_dangerous_targets() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "::ffff:192.168.1.1",
            "100.64.0.1",
        ] {
            assert!(!may_send_to(s.parse().unwrap(), false), "{s}");
        }
        for s in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "ff02::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!may_send_to(s.parse().unwrap(), true), "{s}");
        }
        assert!(may_send_to("127.0.0.1".parse().unwrap(), true));
        assert!(may_send_to("8.8.8.8".parse().unwrap(), false));
    }
}
