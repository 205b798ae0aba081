//! An adaptive jitter buffer for one audio stream, pulled one packet at a time by the playout
//! clock.
//!
//! Packets are stored in a ring of preallocated slots indexed by extended sequence number, so
//! reordering is free, duplicates and late packets are recognised, and the steady state does not
//! allocate. The buffer measures each packet's delay variation (its transit time less the
//! smallest recent transit time) into a histogram with exponential forgetting, in the manner of
//! WebRTC NetEq's delay manager; its target delay is the 97th percentile of that variation. At
//! every pull it compares its estimated buffering delay with the target: well above, it drops
//! a frame (accelerate); below, it plays a concealed frame without consuming a packet (stretch).
//! The same two moves absorb clock drift between the ends: a faster sender fills the buffer and
//! frames get dropped, a slower one drains it and frames get concealed. A new SSRC or a
//! sequence jump resynchronises instead of stalling.

use std::time::Duration;

use crate::SAMPLE_RATE;

use super::codec::MAX_OPUS_PACKET;

/// Slots in the ring: the most packets held at once (2.56 s of 20 ms packets).
const SLOTS: usize = 128;
/// Histogram buckets of delay variation, each [`BUCKET_SAMPLES`] wide (5 ms): up to 1 s.
const BUCKETS: usize = 200;
const BUCKET_SAMPLES: i64 = 240;
/// Per-packet forgetting factor of the histogram: a memory of about 150 packets (3 s at 20 ms).
const FORGET: f64 = 0.993;
/// The percentile of delay variation the target covers.
const PERCENTILE: f64 = 0.97;
/// Smoothing of the buffer level measured at each pull.
const LEVEL_ALPHA: f64 = 0.05;
/// Pulls between two adjustments (drop or stretch).
const COOLDOWN_PULLS: u32 = 8;
/// Length of a block of the running minimum transit time, in samples of arrival time (2 s).
const MIN_BLOCK_SAMPLES: i64 = 2 * SAMPLE_RATE as i64;
/// Packets beyond the target held while the one due is missing: past this, the missing ones
/// are given up at once (an outage), not concealed one by one.
const OUTAGE_SLACK: i64 = 5;
/// A sequence number this far from the expected one starts a new stream (RFC 3550 A.1's
/// `MAX_DROPOUT` idea, scaled to a voice stream).
const MAX_JUMP: i64 = 1_000;

/// The jitter buffer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The smallest extra delay the buffer keeps beyond one packet.
    pub min_delay: Duration,
    /// The largest extra delay it adapts to.
    pub max_delay: Duration,
    /// How fast the target may come down again: one packet's worth per this interval.
    pub shrink_interval: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(1_000),
            shrink_interval: Duration::from_millis(1_000),
        }
    }
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Stored,
    /// Already stored or already played.
    Duplicate,
    /// Arrived after its playout time.
    Late,
    /// Started a new stream (new SSRC or a sequence jump); stored as its first packet.
    Resynced,
    /// Too large for a slot.
    TooLarge,
    /// Far from the stream's sequence or timestamp: held on probation and discarded; if the next
    /// packet follows it, the stream resynchronises there.
    Discarded,
}

/// What to play next.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Nothing received yet: play silence.
    Idle,
    /// Decode this packet.
    Packet(&'a [u8]),
    /// The packet is lost; the next one is here: recover `samples` from its FEC.
    Recover {
        /// The packet after the lost one.
        next: &'a [u8],
        /// The lost packet's length in samples.
        samples: usize,
    },
    /// The buffer is too full: decode `dropped` (to keep the decoder's state) and `next`, and
    /// play `next`, cross-faded from `dropped` at its start.
    Skip {
        /// The packet skipped.
        dropped: &'a [u8],
        /// The packet to play.
        next: &'a [u8],
    },
    /// Conceal `samples` (a lost packet, an underrun, or a stretch).
    Conceal {
        /// Samples to conceal.
        samples: usize,
    },
}

/// Counters of the buffer's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterCounters {
    /// Packets stored.
    pub stored: u64,
    /// Duplicates discarded.
    pub duplicate: u64,
    /// Late packets discarded.
    pub late: u64,
    /// Packets that were missing at playout time (then recovered by FEC or concealed).
    pub missing: u64,
    /// Of those, recovered from the next packet's FEC.
    pub fec_recovered: u64,
    /// Outages given up at once: missing packets jumped over because far newer ones were held.
    pub fast_forwards: u64,
    /// Pulls with nothing to play (the buffer ran dry): concealed, playout held back.
    pub underruns: u64,
    /// Frames concealed on purpose to grow the delay.
    pub stretched: u64,
    /// Frames dropped to shrink the delay.
    pub dropped: u64,
    /// Resynchronisations (new SSRC, sequence jumps).
    pub resyncs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Filled,
    Played,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    state: SlotState,
    data: Vec<u8>,
}

/// The adaptive jitter buffer. Times are in samples at 48 kHz (arrival times on the local
/// clock, timestamps on the sender's).
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Vec<Slot>,
    ssrc: Option<u32>,
    /// Highest extended sequence number stored, with its extended timestamp.
    highest: Option<(u64, i64)>,
    /// The next extended sequence number to play.
    next: Option<u64>,
    /// Samples per packet, learned from consecutive packets' timestamps.
    packet_samples: usize,
    pending_jump: Option<u64>,
    // Delay estimation.
    histogram: [f64; BUCKETS],
    block_start: i64,
    block_min: i64,
    prev_block_min: i64,
    mean_variation: f64,
    target: f64,
    last_target_drop: i64,
    // Playout.
    level: f64,
    cooldown: u32,
    counters: JitterCounters,
    now: i64,
}

impl JitterBuffer {
    /// An empty buffer; `packet_samples` is the expected packet length until one is measured.
    pub fn new(config: JitterConfig, packet_samples: usize) -> Self {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                seq: u64::MAX,
                state: SlotState::Empty,
                data: Vec::with_capacity(MAX_OPUS_PACKET),
            })
            .collect();
        let mut histogram = [0.0; BUCKETS];
        histogram[0] = 1.0;
        Self {
            config,
            slots,
            ssrc: None,
            highest: None,
            next: None,
            packet_samples: packet_samples.max(1),
            pending_jump: None,
            histogram,
            block_start: 0,
            block_min: i64::MAX,
            prev_block_min: i64::MAX,
            mean_variation: 0.0,
            target: 0.0,
            last_target_drop: 0,
            level: 1.0,
            cooldown: 0,
            counters: JitterCounters::default(),
            now: 0,
        }
    }

    /// The decisions so far.
    pub fn counters(&self) -> JitterCounters {
        self.counters
    }

    /// The extra delay the buffer aims for beyond one packet: the 97th percentile of the
    /// measured delay variation, within the configured bounds.
    pub fn target_delay(&self) -> Duration {
        samples_to_duration(self.target + self.packet_samples as f64)
    }

    /// The audio buffered at playout time, smoothed: the buffer's current delay.
    pub fn current_delay(&self) -> Duration {
        samples_to_duration(self.estimated_delay() + self.packet_samples as f64)
    }

    /// Samples per packet of the stream.
    pub fn packet_samples(&self) -> usize {
        self.packet_samples
    }

    fn estimated_delay(&self) -> f64 {
        ((self.level - 1.0) * self.packet_samples as f64 + self.mean_variation).max(0.0)
    }

    fn reset_stream(&mut self, ssrc: u32) {
        self.ssrc = Some(ssrc);
        self.highest = None;
        self.next = None;
        self.pending_jump = None;
        self.block_min = i64::MAX;
        self.prev_block_min = i64::MAX;
        self.block_start = self.now;
        self.level = 1.0;
        for slot in &mut self.slots {
            slot.state = SlotState::Empty;
            slot.seq = u64::MAX;
        }
    }

    /// Stores a packet that arrived at `arrival` (samples on the local clock).
    pub fn push(
        &mut self,
        arrival: i64,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
    ) -> PushOutcome {
        self.now = self.now.max(arrival);
        if payload.len() > MAX_OPUS_PACKET {
            return PushOutcome::TooLarge;
        }
        let mut resynced = false;
        if self.ssrc != Some(ssrc) {
            resynced = self.ssrc.is_some();
            self.reset_stream(ssrc);
        }
        let (ext, ext_ts) = match self.highest {
            None => (
                (1u64 << 32) + u64::from(seq),
                (1i64 << 40) + i64::from(timestamp),
            ),
            Some((h, hts)) => {
                let d = i64::from(seq.wrapping_sub(h as u16) as i16);
                let dts = i64::from(timestamp.wrapping_sub(hts as u32) as i32);
                let ext = (h as i64 + d) as u64;
                let expected_from = self.next.unwrap_or(h);
                let off = ext as i64 - expected_from as i64;
                if !(-MAX_JUMP..=MAX_JUMP).contains(&off)
                    || dts.abs() > MAX_JUMP * self.packet_samples as i64
                {
                    // A jump: believe it when the next packet follows it (RFC 3550 A.1's probation).
                    if self.pending_jump == Some(u64::from(seq)) || self.next.is_none() {
                        self.counters.resyncs += 1;
                        self.reset_stream(ssrc);
                        return match self.push(arrival, ssrc, seq, timestamp, payload) {
                            PushOutcome::Stored => PushOutcome::Resynced,
                            other => other,
                        };
                    }
                    self.pending_jump = Some(u64::from(seq.wrapping_add(1)));
                    return PushOutcome::Discarded;
                }
                (ext, hts + dts)
            }
        };
        self.pending_jump = None;
        if resynced {
            self.counters.resyncs += 1;
        }
        if let Some(next) = self.next {
            if ext < next {
                let slot = &self.slots[(ext as usize) % SLOTS];
                if slot.seq == ext && slot.state == SlotState::Played {
                    self.counters.duplicate += 1;
                    return PushOutcome::Duplicate;
                }
                self.counters.late += 1;
                return PushOutcome::Late;
            }
            if ext >= next + SLOTS as u64 {
                // Far ahead of playout (a long stall or a burst): skip playout forward.
                self.next = Some(ext + 1 - SLOTS as u64 / 2);
            }
        }
        let slot = &mut self.slots[(ext as usize) % SLOTS];
        if slot.seq == ext && slot.state != SlotState::Empty {
            self.counters.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        slot.seq = ext;
        slot.state = SlotState::Filled;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.counters.stored += 1;
        match self.highest {
            Some((h, _)) if ext <= h => {}
            Some((h, hts)) => {
                let per = (ext_ts - hts) / (ext - h) as i64;
                if per > 0 && per <= super::codec::MAX_FRAME_SAMPLES as i64 {
                    self.packet_samples = per as usize;
                }
                self.highest = Some((ext, ext_ts));
            }
            None => self.highest = Some((ext, ext_ts)),
        }
        if self.next.is_none() {
            self.next = Some(ext);
        }
        self.measure(arrival, ext_ts);
        if resynced {
            PushOutcome::Resynced
        } else {
            PushOutcome::Stored
        }
    }

    /// Records a packet's delay variation and updates the target.
    fn measure(&mut self, arrival: i64, ext_ts: i64) {
        let transit = arrival - ext_ts;
        if arrival - self.block_start >= MIN_BLOCK_SAMPLES {
            self.prev_block_min = self.block_min;
            self.block_min = i64::MAX;
            self.block_start = arrival;
        }
        self.block_min = self.block_min.min(transit);
        let reference = self.block_min.min(self.prev_block_min);
        let variation = (transit - reference).max(0);
        for p in &mut self.histogram {
            *p *= FORGET;
        }
        let bucket = ((variation / BUCKET_SAMPLES) as usize).min(BUCKETS - 1);
        self.histogram[bucket] += 1.0 - FORGET;
        self.mean_variation += (variation as f64 - self.mean_variation) / 16.0;

        let total: f64 = self.histogram.iter().sum();
        let mut acc = 0.0;
        let mut q = BUCKETS;
        for (i, p) in self.histogram.iter().enumerate() {
            acc += p;
            if acc >= PERCENTILE * total {
                q = i + 1;
                break;
            }
        }
        let wanted = (q as f64 * BUCKET_SAMPLES as f64).clamp(
            duration_to_samples(self.config.min_delay),
            duration_to_samples(self.config.max_delay),
        );
        if wanted >= self.target {
            self.target = wanted;
            self.last_target_drop = arrival;
        } else {
            // Come down slowly: by at most a packet per shrink interval.
            let interval = duration_to_samples(self.config.shrink_interval).max(1.0);
            let allowed =
                (arrival - self.last_target_drop) as f64 / interval * self.packet_samples as f64;
            if allowed >= 1.0 {
                self.target = wanted.max(self.target - allowed);
                self.last_target_drop = arrival;
            }
        }
    }

    fn is_filled(&self, index: usize, seq: u64) -> bool {
        self.slots[index].seq == seq && self.slots[index].state == SlotState::Filled
    }

    /// Takes what to play for the next packet's worth of audio, at `now` (samples on the local
    /// clock).
    pub fn pull(&mut self, now: i64) -> Playout<'_> {
        self.now = self.now.max(now);
        let (Some(next), Some((highest, _))) = (self.next, self.highest) else {
            return Playout::Idle;
        };
        let samples = self.packet_samples;
        let level = highest as i64 - next as i64 + 1;
        self.level += (level as f64 - self.level) * LEVEL_ALPHA;
        self.cooldown = self.cooldown.saturating_sub(1);
        if level <= 0 {
            self.counters.underruns += 1;
            self.level += 1.0 * LEVEL_ALPHA;
            return Playout::Conceal { samples };
        }
        let frame = samples as f64;
        let mut next = next;
        let target_packets = (self.target / frame).ceil() as i64;
        if level > target_packets + OUTAGE_SLACK && !self.is_filled(next as usize % SLOTS, next) {
            // After an outage (a dead path, a path switch): the packets at `next` never came,
            // and what did come is far ahead. Waiting for the missing ones, or concealing each
            // of them, would add the whole outage to the delay; they are lost: play on from
            // the oldest packet held, counting what is jumped over as missing.
            let mut first = next + 1;
            while first < highest && !self.is_filled(first as usize % SLOTS, first) {
                first += 1;
            }
            self.counters.missing += first - next;
            self.counters.fast_forwards += 1;
            next = first;
            self.next = Some(first);
            self.level = (highest - first + 1) as f64;
        }
        let delay = self.estimated_delay();

        if self.cooldown == 0 {
            let (a, b) = ((next as usize) % SLOTS, ((next + 1) as usize) % SLOTS);
            let both_here = self.is_filled(a, next) && self.is_filled(b, next + 1);
            if delay > self.target + 1.5 * frame && both_here {
                // Accelerate: skip the next frame. Both it and the one after are handed out,
                // so the decoder stays continuous and the caller can cross-fade.
                self.counters.dropped += 1;
                self.slots[a].state = SlotState::Played;
                self.slots[b].state = SlotState::Played;
                self.next = Some(next + 2);
                self.level -= 1.0;
                self.cooldown = COOLDOWN_PULLS;
                return Playout::Skip {
                    dropped: &self.slots[a].data,
                    next: &self.slots[b].data,
                };
            } else if delay + 0.5 * frame < self.target {
                // Stretch: conceal a frame and play the packet later.
                self.counters.stretched += 1;
                self.level += 1.0;
                self.cooldown = COOLDOWN_PULLS;
                return Playout::Conceal { samples };
            }
        }
        self.next = Some(next + 1);
        let idx = (next as usize) % SLOTS;
        if self.slots[idx].seq == next && self.slots[idx].state == SlotState::Filled {
            self.slots[idx].state = SlotState::Played;
            return Playout::Packet(&self.slots[idx].data);
        }
        self.counters.missing += 1;
        let after = ((next + 1) as usize) % SLOTS;
        if self.slots[after].seq == next + 1 && self.slots[after].state == SlotState::Filled {
            self.counters.fec_recovered += 1;
            return Playout::Recover {
                next: &self.slots[after].data,
                samples,
            };
        }
        Playout::Conceal { samples }
    }
}

fn samples_to_duration(samples: f64) -> Duration {
    Duration::from_secs_f64(samples.max(0.0) / f64::from(SAMPLE_RATE))
}

fn duration_to_samples(d: Duration) -> f64 {
    d.as_secs_f64() * f64::from(SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: usize = 960;

    fn pkt(seq: u16) -> [u8; 3] {
        [0xfc, (seq >> 8) as u8, seq as u8]
    }

    fn played(p: Playout<'_>) -> Option<u16> {
        match p {
            Playout::Packet(d) => Some(u16::from_be_bytes([d[1], d[2]])),
            _ => None,
        }
    }

    #[test]
    fn reorders_and_wraps() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        let base: u16 = 65_534;
        let ts0: u32 = u32::MAX - 960;
        let order = [0u16, 2, 1, 3, 5, 4];
        for (i, &k) in order.iter().enumerate() {
            let seq = base.wrapping_add(k);
            let out = jb.push(
                i as i64 * 960,
                7,
                seq,
                ts0.wrapping_add(u32::from(k) * 960),
                &pkt(seq),
            );
            assert_eq!(out, PushOutcome::Stored);
        }
        let mut got = vec![];
        for i in 0..6 {
            got.push(played(jb.pull(6 * 960 + i * 960)));
        }
        let want: Vec<_> = (0..6u16).map(|k| Some(base.wrapping_add(k))).collect();
        assert_eq!(got, want);
        assert_eq!(jb.packet_samples(), 960);
    }

    #[test]
    fn an_outage_is_given_up_at_once_not_added_to_the_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        let f = F as i64;
        // A clean stream: one packet in, one pulled, every 20 ms.
        for k in 0..50u16 {
            let t = i64::from(k) * f;
            jb.push(t, 1, k, u32::from(k) * 960, &pkt(k));
            assert_eq!(played(jb.pull(t + 10)), Some(k));
        }
        // 2.2 s of nothing (110 packets lost: a dead path before the switch to the relay).
        for k in 50..160u16 {
            let t = i64::from(k) * f;
            assert!(matches!(jb.pull(t + 10), Playout::Conceal { .. }));
        }
        // Packets flow again: the buffer plays the new ones within a few frames instead of
        // concealing the 110 lost ones first.
        let mut first_played = None;
        for k in 160..200u16 {
            let t = i64::from(k) * f;
            jb.push(t, 1, k, u32::from(k) * 960, &pkt(k));
            if let Some(seq) = played(jb.pull(t + 10))
                && first_played.is_none()
            {
                first_played = Some((k, seq));
            }
        }
        let (at, seq) = first_played.expect("the stream plays again");
        assert!(
            at <= 168,
            "first packet played {} frames after the outage",
            at - 160
        );
        assert!(seq >= 160, "played {seq}, a packet from before the outage");
        assert_eq!(jb.counters().fast_forwards, 1);
        // And it settles near its target: the last packet pulled is the last one pushed, or
        // close to it.
        let last = played(jb.pull(200 * f + 10));
        assert!(last.is_none_or(|s| s >= 195), "{last:?}");
    }

    #[test]
    fn duplicates_late_and_loss() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        assert_eq!(jb.push(0, 1, 10, 0, &pkt(10)), PushOutcome::Stored);
        assert_eq!(jb.push(1, 1, 10, 0, &pkt(10)), PushOutcome::Duplicate);
        assert_eq!(played(jb.pull(10)), Some(10));
        assert_eq!(jb.push(20, 1, 10, 0, &pkt(10)), PushOutcome::Duplicate);
        // 11 lost, 12 arrives: 11 is recovered from 12's FEC.
        assert_eq!(jb.push(960, 1, 12, 1920, &pkt(12)), PushOutcome::Stored);
        assert!(matches!(
            jb.pull(970),
            Playout::Recover { samples: 960, .. }
        ));
        assert_eq!(jb.push(980, 1, 11, 960, &pkt(11)), PushOutcome::Late);
        assert_eq!(played(jb.pull(1930)), Some(12));
        // Nothing left: an underrun conceals.
        assert!(matches!(jb.pull(2900), Playout::Conceal { samples: 960 }));
        let c = jb.counters();
        assert_eq!(
            (c.duplicate, c.late, c.missing, c.fec_recovered, c.underruns),
            (2, 1, 1, 1, 1)
        );
    }

    #[test]
    fn a_full_buffer_skips_frames_and_an_empty_one_stretches() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        // Ten packets arrive at once: far more than the clean target.
        for i in 0..10u16 {
            jb.push(0, 1, i, u32::from(i) * 960, &pkt(i));
        }
        let mut skips = 0;
        let mut played = vec![];
        for k in 0..10 {
            match jb.pull(k * 960) {
                Playout::Skip { dropped, next } => {
                    skips += 1;
                    played.push(u16::from_be_bytes([next[1], next[2]]));
                    assert_eq!(dropped[2] + 1, next[2]);
                }
                p => played.extend(played_seq(p)),
            }
        }
        assert!(skips >= 1, "{played:?}");
        assert_eq!(jb.counters().dropped, skips);
        // Played in order, never twice.
        assert!(played.windows(2).all(|w| w[0] < w[1]), "{played:?}");
        // Then with no packets it conceals (underruns) without skipping ahead.
        assert!(matches!(jb.pull(20 * 960), Playout::Conceal { .. }));
    }

    fn played_seq(p: Playout<'_>) -> Option<u16> {
        played(p)
    }

    #[test]
    fn new_ssrc_and_jumps_resync() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        for i in 0..5u16 {
            jb.push(
                i64::from(i) * 960,
                1,
                100 + i,
                u32::from(i) * 960,
                &pkt(100 + i),
            );
            let _ = jb.pull(i64::from(i) * 960 + 1);
        }
        assert_eq!(
            jb.push(5 * 960, 2, 9_000, 77, &pkt(9_000)),
            PushOutcome::Resynced
        );
        assert_eq!(played(jb.pull(5 * 960 + 1)), Some(9_000));
        // A jump within the same SSRC: the first packet is held on probation, the second resyncs.
        assert_eq!(
            jb.push(6 * 960, 2, 30_000, 5_000_000, &pkt(30_000)),
            PushOutcome::Discarded
        );
        assert_eq!(
            jb.push(7 * 960, 2, 30_001, 5_000_960, &pkt(30_001)),
            PushOutcome::Resynced
        );
        assert_eq!(played(jb.pull(7 * 960 + 1)), Some(30_001));
        assert_eq!(jb.counters().resyncs, 2);
    }
}
