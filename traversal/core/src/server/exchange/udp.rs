//! UDP: authenticated requests and keepalives (S11-S14) with their answers, the P4
//! acknowledgements to listed addresses (S6), probes through a mapping (P7), relay frames.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::Rng;

use super::{BUCKETS, Server, TokenBucket, Transmit, normalize};
use crate::control::{ProbeTarget, ServerMessage};
use crate::stun;
use crate::wire::{Flags, UdpMessage};

impl Server {
    /// Sends a probe (the patent's P7) through a user's mapping and tells the client over TCP.
    /// This is the server-to-client path that call invitations and relay traffic will use.
    /// `from_alternate` sends it from the alternate port instead (RFC 5780's filtering test:
    /// does the client's NAT or firewall let in what comes from a port it never sent to?).
    pub fn probe(
        &mut self,
        now: Instant,
        user_index: u32,
        nonce: u64,
        target: ProbeTarget,
        from_alternate: bool,
    ) {
        let alternate_port = self.config.alternate_port;
        let Some(r) = self.registrations.get_mut(&user_index) else {
            return;
        };
        let conn = r.conn;
        if from_alternate && !alternate_port {
            self.send(
                conn,
                &ServerMessage::ProbeFailed {
                    nonce,
                    reason: "this server has no alternate port".into(),
                },
            );
            return;
        }
        let (to, slot) = match (target, from_alternate) {
            (ProbeTarget::Main, false) => (r.mapped, 0),
            (ProbeTarget::Test, false) => (r.test_mapped, 1),
            (ProbeTarget::Main, true) => (r.mapped, 2),
            (ProbeTarget::Test, true) => (r.test_mapped, 2),
        };
        let paced = match &self.probe_budget {
            Some(budget) => TokenBucket::take_both(
                now,
                (&mut r.probes[slot], &self.probe_rate, 1),
                (&mut r.probe_budget, budget, 1),
            ),
            None => r.probes[slot].take(now, &self.probe_rate, 1),
        };
        let reply = match to {
            Some(to) if paced => {
                let mut tid = [0u8; 12];
                self.rng.fill_bytes(&mut tid);
                let contents = UdpMessage::Probe {
                    transaction_id: tid,
                    user_index,
                    nonce,
                }
                .encode(&r.key);
                self.transmits.push_back(Transmit {
                    destination: to,
                    contents,
                    from_alternate,
                });
                self.stats.probes_sent += 1;
                ServerMessage::ProbeSent { nonce, to }
            }
            Some(_) => {
                self.stats.rate_limited += 1;
                ServerMessage::ProbeFailed {
                    nonce,
                    reason: "probes too close together".into(),
                }
            }
            None => ServerMessage::ProbeFailed {
                nonce,
                reason: "no mapping known".into(),
            },
        };
        self.send(conn, &reply);
    }

    /// A datagram arrived from `from`. Plain Binding Requests are answered here too, but the
    /// driver's hot path answers them with [`stun::answer_plain_binding`] first.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let from = normalize(from);
        let mut plain = [0u8; 44];
        if let Some(n) = stun::answer_plain_binding(bytes, from, &mut plain) {
            self.transmits.push_back(Transmit {
                destination: from,
                contents: plain[..n].to_vec(),
                from_alternate: false,
            });
            return;
        }
        if crate::channel::classify(bytes) == crate::channel::Kind::ChannelData {
            // Relay: one lookup by source address and the sender's token decide; the frame
            // goes on with the receiver's token.
            if let Some((to, contents)) = self.calls.relay(now, from, bytes) {
                self.transmits.push_back(Transmit {
                    destination: to,
                    contents,
                    from_alternate: false,
                });
            }
            return;
        }
        let registrations = &self.registrations;
        let decoded = UdpMessage::decode(bytes, |index| registrations.get(&index).map(|r| r.key));
        let (tid, user_index, flags) = match decoded {
            Ok(UdpMessage::Request {
                transaction_id,
                user_index,
                flags,
            }) => (transaction_id, user_index, flags),
            Ok(_) => {
                self.stats.udp_malformed += 1;
                return;
            }
            Err(crate::wire::WireError::UnknownUser(_)) => {
                self.stats.udp_unknown_user += 1;
                return;
            }
            Err(crate::wire::WireError::Integrity(_)) => {
                self.stats.udp_auth_failed += 1;
                return;
            }
            Err(_) => {
                self.stats.udp_malformed += 1;
                return;
            }
        };
        let Some(r) = self.registrations.get_mut(&user_index) else {
            return;
        };
        let answer = answer(&r.key, tid, user_index, from, flags.test_socket, false);
        if answer.len() > bytes.len() {
            self.stats.udp_too_small += 1;
            return;
        }
        let slot = usize::from(flags.test_socket);
        let current = if flags.test_socket {
            r.test_mapped
        } else {
            r.mapped
        };
        let challenge = self.challenges.get(&user_index).copied();
        let challenged = challenge.is_some_and(|c| c.to == from && c.test == flags.test_socket);
        if flags.path_challenge {
            // A path response (path.rs): only the echo of the challenge sent to `from` moves
            // the mapping there. It carries no sequence.
            if !(challenged && challenge.is_some_and(|c| c.tid == tid)) {
                self.stats.udp_bad_path_response += 1;
                return;
            }
            self.challenges.remove(&user_index);
            self.stats.paths_validated += 1;
        } else {
            // Replay protection (see `wire::sequence_mask`): an old request may only repeat
            // what the server already knows, or ask again for the challenge of its address;
            // from another address it is dropped.
            let sequence = crate::wire::tid_sequence(r.sequence_mask, &tid);
            let first = r.last_sequence[slot] == 0 && current.is_none();
            if sequence <= r.last_sequence[slot] && current != Some(from) && !first && !challenged {
                self.stats.udp_replayed += 1;
                return;
            }
            r.last_sequence[slot] = r.last_sequence[slot].max(sequence);
            if current != Some(from) {
                // A new address moves nothing until it proves it receives (return
                // routability): a forged source never redirects probes or media.
                self.challenge_path(now, user_index, from, flags.test_socket);
                return;
            }
        }
        let conn = r.conn;
        let changed = if flags.test_socket {
            let changed = r.test_mapped != Some(from);
            r.test_mapped = Some(from);
            r.test_last_seen = now;
            changed
        } else {
            let changed = r.mapped != Some(from);
            r.mapped = Some(from);
            r.last_seen = now;
            r.last_request_len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            r.last_request_tid = tid;
            changed
        };
        self.transmits.push_back(Transmit {
            destination: from,
            contents: answer,
            from_alternate: false,
        });
        if changed {
            tracing::debug!(user_index, %from, test = flags.test_socket, "mapping");
            if !flags.test_socket {
                self.calls.set_mapped(conn, Some(from));
                self.drain_calls();
            }
            self.send(
                conn,
                &ServerMessage::UdpSeen {
                    mapped: from,
                    test: flags.test_socket,
                },
            );
        }
        if !flags.test_socket {
            self.send_p4(now, user_index);
        }
    }

    /// P4 to the listed addresses: once per registration, when both the list (TCP) and the
    /// observed address (UDP) are known.
    pub(super) fn send_p4(&mut self, now: Instant, user_index: u32) {
        let Some(r) = self.registrations.get(&user_index) else {
            return;
        };
        let Some(observed) = r.mapped else {
            return;
        };
        if r.p4_done || !r.listed_known {
            return;
        }
        let key = r.key;
        let listed = r.listed;
        let tid = r.last_request_tid;
        let limit = usize::from(r.last_request_len);
        if let Some(r) = self.registrations.get_mut(&user_index) {
            r.p4_done = true;
        }
        for to in listed.into_iter().flatten() {
            if to == observed {
                continue;
            }
            if !self.take_token(now, observed.ip()) {
                self.stats.rate_limited += 1;
                continue;
            }
            let contents = answer(&key, tid, user_index, observed, false, true);
            if contents.len() > limit {
                self.stats.p4_refused += 1;
                continue;
            }
            self.stats.p4_sent += 1;
            self.transmits.push_back(Transmit {
                destination: to,
                contents,
                from_alternate: false,
            });
        }
    }

    /// A token of `source`'s P4 bucket (sources hash into a fixed table; collisions share).
    fn take_token(&mut self, now: Instant, source: IpAddr) -> bool {
        let slot = (self.hash_ip(source) % BUCKETS as u64) as usize;
        self.buckets[slot].take(now, &self.p4_rate, 1)
    }

    fn hash_ip(&self, ip: IpAddr) -> u64 {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        // FNV-1a, salted from the secret so that collisions cannot be chosen from outside.
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ self.salt;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

/// The answer to a request (`to_listed`: the P4 acknowledgement to a listed address), sealed
/// with the registration's key.
fn answer(
    key: &[u8],
    transaction_id: stun::TransactionId,
    user_index: u32,
    mapped: SocketAddr,
    test_socket: bool,
    to_listed: bool,
) -> Vec<u8> {
    UdpMessage::Answer {
        transaction_id,
        user_index,
        mapped,
        flags: Flags {
            test_socket,
            to_listed,
            path_challenge: false,
        },
    }
    .encode(key)
}
