//! Which RTP source a session plays: a new SSRC is taken only after probation (RFC 3550
//! appendix A.1), and never while the source being played is alive.
//!
//! Before, any packet with a new SSRC reset the stream at once: whoever could reach the media
//! port replaced the call's audio with one packet. Now a new source must send `MIN_SEQUENTIAL`
//! packets in sequence, and the current source must have been silent for `STREAM_TIMEOUT`,
//! before the session switches to it. Packets from any other source are dropped and counted.
//!
//! The first source of a call goes through probation too, as in appendix A.1: one 20 ms packet
//! is the cost, paid while the jitter buffer fills anyway, and a stray packet (a late one from
//! an earlier call on the same port, or garbage that parses as RTP) cannot claim the stream.

/// In-order packets a new source must send before it is played (RFC 3550 appendix A.1).
pub(crate) const MIN_SEQUENTIAL: u16 = 2;

/// How long after its last packet the current source still counts as alive, in samples at
/// 48 kHz (500 ms): a new source waits this long after the old one stops. A restarted peer
/// is heard again after it; an injected stream never, while the real one keeps flowing.
pub(crate) const STREAM_TIMEOUT: i64 = 24_000;

/// Candidate sources tracked at once, so that packets from a second stranger do not reset a
/// genuine newcomer's probation.
const CANDIDATES: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Current {
    ssrc: u32,
    last_arrival: i64,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    ssrc: u32,
    max_seq: u16,
    in_sequence: u16,
    last_arrival: i64,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// From the source being played.
    Current,
    /// From a source that just passed probation and is played from now on.
    NewSource,
    /// From a source on probation, or from another one while the current is alive: dropped.
    Dropped,
}

/// The gate in front of the jitter buffer. Fixed size: no allocation per packet.
#[derive(Debug, Default)]
pub(crate) struct SourceGate {
    current: Option<Current>,
    candidates: [Option<Candidate>; CANDIDATES],
    dropped: u64,
}

impl SourceGate {
    /// The SSRC being played, if any.
    pub(crate) fn current(&self) -> Option<u32> {
        self.current.map(|c| c.ssrc)
    }

    /// Packets dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Counts a packet dropped elsewhere for not coming from the current source (RTCP).
    pub(crate) fn count_dropped(&mut self) {
        self.dropped += 1;
    }

    /// Decides on an RTP packet from `ssrc` with `seq` that arrived at `arrival` (samples).
    pub(crate) fn admit(&mut self, arrival: i64, ssrc: u32, seq: u16) -> Admit {
        if let Some(c) = self.current.as_mut().filter(|c| c.ssrc == ssrc) {
            c.last_arrival = c.last_arrival.max(arrival);
            return Admit::Current;
        }
        let in_sequence = self.probation(arrival, ssrc, seq);
        let current_alive = self
            .current
            .is_some_and(|c| arrival.saturating_sub(c.last_arrival) < STREAM_TIMEOUT);
        if in_sequence >= MIN_SEQUENTIAL && !current_alive {
            self.current = Some(Current {
                ssrc,
                last_arrival: arrival,
            });
            self.candidates = [None; CANDIDATES];
            return Admit::NewSource;
        }
        self.dropped += 1;
        Admit::Dropped
    }

    /// Updates `ssrc`'s probation (RFC 3550 appendix A.1's `update_seq` for a source with
    /// `probation` set): returns how many packets in sequence it has sent.
    fn probation(&mut self, arrival: i64, ssrc: u32, seq: u16) -> u16 {
        if let Some(c) = self
            .candidates
            .iter_mut()
            .flatten()
            .find(|c| c.ssrc == ssrc)
        {
            c.in_sequence = if seq == c.max_seq.wrapping_add(1) {
                c.in_sequence.saturating_add(1)
            } else {
                1
            };
            c.max_seq = seq;
            c.last_arrival = arrival;
            return c.in_sequence;
        }
        // A free slot, else the one heard from longest ago.
        let slot = self
            .candidates
            .iter_mut()
            .min_by_key(|c| c.map_or(i64::MIN, |c| c.last_arrival));
        if let Some(slot) = slot {
            *slot = Some(Candidate {
                ssrc,
                max_seq: seq,
                in_sequence: 1,
                last_arrival: arrival,
            });
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: i64 = 960;

    #[test]
    fn the_first_source_is_played_after_two_packets_in_sequence() {
        let mut gate = SourceGate::default();
        assert_eq!(gate.admit(0, 7, 100), Admit::Dropped);
        assert_eq!(gate.admit(FRAME, 7, 102), Admit::Dropped, "not in sequence");
        assert_eq!(gate.admit(2 * FRAME, 7, 103), Admit::NewSource);
        assert_eq!(gate.admit(3 * FRAME, 7, 104), Admit::Current);
        assert_eq!(
            gate.admit(4 * FRAME, 7, 90),
            Admit::Current,
            "order is the jitter buffer's"
        );
        assert_eq!((gate.current(), gate.dropped()), (Some(7), 2));
    }

    #[test]
    fn a_second_source_waits_until_the_first_is_silent() {
        let mut gate = SourceGate::default();
        gate.admit(0, 1, 10);
        gate.admit(FRAME, 1, 11);
        let mut t = FRAME;
        // Another source in perfect sequence, interleaved with the live one: never played.
        for k in 0..100u16 {
            t += FRAME;
            assert_eq!(gate.admit(t, 1, 12 + k), Admit::Current);
            assert_eq!(gate.admit(t + 1, 2, 500 + k), Admit::Dropped);
        }
        assert_eq!(gate.dropped(), 101);
        // The first stops; the second goes on and is played once the first has timed out.
        let stopped = t;
        let mut k = 100;
        while gate.admit(t, 2, 500 + k) == Admit::Dropped {
            t += FRAME;
            k += 1;
        }
        assert!(t - stopped >= STREAM_TIMEOUT && t - stopped < STREAM_TIMEOUT + 2 * FRAME);
        assert_eq!(gate.current(), Some(2));
        // The old one coming back is now the stranger.
        assert_eq!(gate.admit(t + 1, 1, 112), Admit::Dropped);
    }

    #[test]
    fn strangers_do_not_reset_a_newcomers_probation() {
        let mut gate = SourceGate::default();
        for k in 0..3u16 {
            let t = i64::from(k) * FRAME;
            gate.admit(t, 100 + u32::from(k), k);
            if k < 2 {
                assert_eq!(
                    gate.admit(t + 1, 9, 40 + k),
                    if k == 0 {
                        Admit::Dropped
                    } else {
                        Admit::NewSource
                    }
                );
            }
        }
        assert_eq!(gate.current(), Some(9));
    }

    #[test]
    fn sequence_wraps_count_as_in_sequence() {
        let mut gate = SourceGate::default();
        assert_eq!(gate.admit(0, 5, u16::MAX), Admit::Dropped);
        assert_eq!(gate.admit(FRAME, 5, 0), Admit::NewSource);
    }
}
