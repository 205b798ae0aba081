//! Return routability, the client's side (the module's step 4): a request from an address the
//! server does not know as this client's mapping gets a path challenge instead of an answer; the
//! client echoes its transaction id from the socket the challenge reached, and takes the answer
//! to that echo for the answer to the request that was waiting.

use super::lifetime::MeasureStage;
use super::{Client, Phase, Socket};
use crate::stun::TransactionId;

impl Client {
    /// Echoes a path challenge from the socket it reached (see the module's step 4).
    pub(super) fn answer_path_challenge(&mut self, socket: Socket, tid: TransactionId) {
        self.stats.path_challenges += 1;
        let test = socket == Socket::Test;
        self.path_response[usize::from(test)] = Some(tid);
        self.send_request_flagged(socket, tid, test, true);
    }

    /// The transaction id an answer on `socket` stands for: the request waiting there when it
    /// answers our path response, else its own.
    pub(super) fn waiting_for(&mut self, socket: Socket, tid: TransactionId) -> TransactionId {
        let slot = &mut self.path_response[usize::from(socket == Socket::Test)];
        if *slot != Some(tid) {
            return tid;
        }
        *slot = None;
        let waiting = match (socket, self.phase) {
            (Socket::Media, Phase::Registering { tid, .. }) => Some(tid),
            (Socket::Media, _) => self.keepalive_pending,
            (Socket::Test, _) => self.measure.and_then(|m| match m.stage {
                MeasureStage::Refresh { tid, .. } => Some(tid),
                _ => None,
            }),
        };
        waiting.unwrap_or(tid)
    }
}
