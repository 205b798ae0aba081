//! Return routability, as QUIC validates a new path (RFC 9000 section 8.2): an authenticated
//! request from an address that is not the registration's mapping (or the first one) moves
//! nothing. The server answers it with a path challenge, an answer-shaped datagram no bigger
//! than the request with [`Flags::path_challenge`] set and a transaction id of 96 bits it
//! draws; the mapping moves to that address only when a request with that transaction id and
//! the flag comes back from it. So a request sent with a forged source address (by a client
//! that knows its own key) never points probes, the P4 acknowledgements or relayed media at
//! someone else: the challenge goes to the victim, who cannot echo it.
//!
//! A registration has one challenge outstanding (the latest address), sent again for a
//! retransmitted request from that address, at most [`super::CHALLENGE_RATE`].

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::{Server, Transmit};
use crate::stun::TransactionId;
use crate::wire::{Flags, UdpMessage};

/// A challenge waiting for its echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PathChallenge {
    /// Where it was sent: the address that would become the mapping.
    pub(super) to: SocketAddr,
    /// The transaction id the echo carries.
    pub(super) tid: TransactionId,
    /// For the test socket's mapping, not the media socket's.
    pub(super) test: bool,
}

impl Server {
    /// Sends `to` the challenge of `user_index`'s new address (the same one again for the same
    /// address), within the registration's challenge rate.
    pub(super) fn challenge_path(
        &mut self,
        now: Instant,
        user_index: u32,
        to: SocketAddr,
        test: bool,
    ) {
        let Some(r) = self.registrations.get_mut(&user_index) else {
            return;
        };
        if !r.challenges.take(now, &self.challenge_rate, 1) {
            self.stats.rate_limited += 1;
            return;
        }
        let tid = match self.challenges.get(&user_index) {
            Some(c) if c.to == to && c.test == test => c.tid,
            _ => {
                let mut tid = [0u8; 12];
                self.rng.fill_bytes(&mut tid);
                tid
            }
        };
        self.challenges
            .insert(user_index, PathChallenge { to, tid, test });
        let contents = UdpMessage::Answer {
            transaction_id: tid,
            user_index,
            mapped: to,
            flags: Flags {
                test_socket: test,
                to_listed: false,
                path_challenge: true,
            },
        }
        .encode(&r.key);
        self.stats.path_challenges += 1;
        tracing::debug!(user_index, %to, test, "path challenge");
        self.transmits.push_back(Transmit {
            destination: to,
            contents,
            from_alternate: false,
        });
    }
}
