//! Call statistics: what was sent, what arrived, and what the peer reports (RFC 3550 A.3, A.8).

use std::time::Duration;

use super::rtcp::ReportBlock;
use crate::SAMPLE_RATE;

/// Statistics of the stream we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendStats {
    /// RTP packets sent.
    pub packets: u64,
    /// RTP payload bytes sent.
    pub payload_bytes: u64,
    /// RTCP packets sent.
    pub rtcp_packets: u64,
    /// Datagrams the transport failed to send.
    pub send_errors: u64,
    /// Frames not sent because the encoder was in DTX (silence).
    pub dtx_frames: u64,
}

/// Statistics of the stream we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiveStats {
    /// RTP packets received (valid ones, including duplicates and late ones).
    pub packets: u64,
    /// Packets lost: expected less received (RFC 3550 A.3), never negative here.
    pub lost: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Duplicate packets.
    pub duplicate: u64,
    /// Datagrams that were not valid RTP or RTCP (or had another payload type).
    pub malformed: u64,
    /// RTCP packets received.
    pub rtcp_packets: u64,
    /// Interarrival jitter (RFC 3550 A.8).
    pub jitter: Duration,
    /// Frames concealed by PLC (losses, underruns and stretches).
    pub concealed_frames: u64,
    /// Frames recovered from the next packet's FEC.
    pub fec_recovered: u64,
    /// Frames of comfort noise played while the peer was in DTX (silence it did not send):
    /// neither lost nor concealed.
    pub comfort_noise_frames: u64,
    /// Frames dropped by the jitter buffer to shrink its delay.
    pub dropped_frames: u64,
    /// Resynchronisations on a new SSRC or a sequence jump.
    pub resyncs: u64,
    /// RTP and RTCP packets dropped for coming from another source than the one played: a new
    /// SSRC on probation (RFC 3550 A.1), or any other while the played one is alive (a stray
    /// or injected stream).
    pub probation_dropped: u64,
}

/// What the peer reports about the stream we send (its last RTCP report block).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RemoteStats {
    /// Fraction of our packets lost in the peer's last interval, in percent.
    pub fraction_lost_percent: f32,
    /// Cumulative packets of ours the peer counts as lost.
    pub cumulative_lost: i32,
    /// The interarrival jitter the peer measures on our stream.
    pub jitter: Duration,
}

/// All statistics of a voice session.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VoiceStats {
    /// What we sent.
    pub sent: SendStats,
    /// What we received.
    pub received: ReceiveStats,
    /// What the peer reports about our stream, once it has.
    pub remote: Option<RemoteStats>,
    /// Round-trip time from the last report block the peer sent about us (RFC 3550 6.4.1).
    pub rtt: Option<Duration>,
    /// The jitter buffer's current delay.
    pub jitter_buffer_delay: Duration,
    /// The jitter buffer's target delay.
    pub jitter_buffer_target: Duration,
}

/// The receive side's sequence accounting (RFC 3550 A.1, A.3) and jitter (A.8).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReceptionTracker {
    ssrc: Option<u32>,
    base_seq: u64,
    max_seq: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    last_transit: Option<i64>,
    /// Jitter in timestamp units, times 16 (A.8's integer form).
    jitter16: i64,
    /// Received and lost packets of earlier sources (before an SSRC change).
    earlier_received: u64,
    earlier_lost: u64,
}

impl ReceptionTracker {
    /// Records a packet from `ssrc` with `seq` and `timestamp`, arrived at `arrival` (samples).
    pub(crate) fn record(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: i64) {
        if self.ssrc != Some(ssrc) {
            *self = Self {
                ssrc: Some(ssrc),
                base_seq: (1 << 32) + u64::from(seq),
                max_seq: (1 << 32) + u64::from(seq),
                earlier_received: self.total_received(),
                earlier_lost: self.total_lost(),
                ..Self::default()
            };
        }
        let d = i64::from(seq.wrapping_sub(self.max_seq as u16) as i16);
        if d.abs() > 3_000 {
            // A jump (a restarted sender): count from here.
            self.earlier_received += self.received;
            self.earlier_lost += self.cumulative_lost().max(0) as u64;
            self.max_seq = (self.max_seq as i64 + d) as u64;
            self.base_seq = self.max_seq;
            self.received = 0;
            self.expected_prior = 0;
            self.received_prior = 0;
        } else if d > 0 {
            self.max_seq = (self.max_seq as i64 + d) as u64;
        }
        self.received += 1;
        let transit = arrival - i64::from(timestamp);
        if let Some(last) = self.last_transit {
            // Transit differences use the 32-bit timestamp's wrap.
            let diff = i64::from((transit - last) as i32).abs();
            self.jitter16 += diff - ((self.jitter16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Packets received from all sources so far.
    pub(crate) fn total_received(&self) -> u64 {
        self.earlier_received + self.received
    }

    /// Packets lost from all sources so far.
    pub(crate) fn total_lost(&self) -> u64 {
        self.earlier_lost + self.cumulative_lost().max(0) as u64
    }

    fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        self.max_seq - self.base_seq + 1
    }

    /// Packets lost so far (may be negative with duplicates, RFC 3550 A.3).
    pub(crate) fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    pub(crate) fn jitter_samples(&self) -> u32 {
        (self.jitter16 >> 4).max(0) as u32
    }

    pub(crate) fn jitter(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.jitter_samples()) / f64::from(SAMPLE_RATE))
    }

    /// A report block for the interval since the last one (RFC 3550 A.3), with LSR/DLSR given.
    pub(crate) fn report_block(&mut self, lsr: u32, dlsr: u32) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: self.max_seq as u32,
            jitter: self.jitter_samples(),
            lsr,
            dlsr,
        })
    }
}
