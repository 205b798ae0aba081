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
//!
//! Losses: a packet missing when it falls due is recovered from the next packet's in-band FEC
//! when that packet is held, or concealed; a frame concealed because nothing had come yet
//! counts as that packet's frame once newer packets show it was lost, so a single loss never
//! leaves the buffer a frame deeper (which it would later pay for by dropping a frame of real
//! speech). Under sustained loss ([`JitterConfig::fec_lookahead`]) the buffer keeps one packet
//! more, so the next packet is there to recover a lost one from.
//!
//! Discontinuous transmission (DTX): a sender in silence stops sending; sequence numbers stay
//! contiguous and the timestamp jumps. Playout follows the timestamps: a packet whose time has
//! not come is held while comfort noise plays, so the delay is the same after a silence as
//! before it, and a silence is neither a loss nor an underrun.

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
/// Length of a block of the smallest wait of a packet played (2 s of pull time): the buffer
/// sheds a frame it does not need once two whole blocks showed every packet waited longer
/// than a frame.
const HEADROOM_BLOCK_SAMPLES: i64 = 2 * SAMPLE_RATE as i64;
/// What a packet must still have waited after such a shed (3 ms): margin for the jitter the
/// blocks did not see.
const HEADROOM_MARGIN_SAMPLES: i64 = 144;
/// A stream with a DTX silence this recent (10 s) sheds a frame in its next silence, not in
/// speech.
const SILENCE_RECENT_SAMPLES: i64 = 10 * SAMPLE_RATE as i64;
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
    /// Under sustained loss (above [`LOOKAHEAD_ON`] of packets), hold one packet more, so the
    /// packet after a lost one has arrived when the lost one falls due and its in-band FEC
    /// recovers it: 20 ms more delay for speech that scores as libopus' FEC does. Off for a
    /// peer that sends no FEC.
    pub fec_lookahead: bool,
}

/// The recent loss (exponentially forgotten, over about 10 s of packets) above which the
/// buffer holds a packet more for FEC: a second loss within about 7 s (350 packets) of the
/// first. One loss alone does not move the buffer.
pub const LOOKAHEAD_ON: f64 = 0.003;
/// The recent loss below which it stops doing so: about 10 s after two losses, 20 s after a
/// run at 5%.
const LOOKAHEAD_OFF: f64 = 0.001;
/// The loss estimate a buffer starts with: it holds a packet for FEC from the start until
/// about 4 s (200 packets) without loss show it need not, so the first loss of a lossy call
/// is recovered too; one loss in those 4 s keeps it holding.
const LOOKAHEAD_START: f64 = 0.0015;
/// Per-packet forgetting factor of the loss estimate: a memory of about 500 packets.
const LOSS_FORGET: f64 = 0.998;

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(1_000),
            shrink_interval: Duration::from_millis(1_000),
            fec_lookahead: true,
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
    /// The sender is in DTX (silence it does not send): play `samples` of comfort noise (Opus
    /// makes it when asked to conceal after a DTX frame).
    ComfortNoise {
        /// Samples of comfort noise.
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
    /// Frames of comfort noise played while the sender was in DTX.
    pub comfort_noise: u64,
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
    /// Extended timestamp.
    ts: i64,
    /// When it arrived (samples on the local clock).
    arrival: i64,
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
    /// `level` has been set from a level seen (it starts at 1, before any).
    level_seen: bool,
    cooldown: u32,
    counters: JitterCounters,
    now: i64,
    /// The timestamp of the audio the next pull plays (extended, on the sender's clock), once
    /// playout has started: a packet whose timestamp is ahead of it is not due yet (DTX).
    position: Option<i64>,
    /// The sequence number a pull concealed while nothing at or after it had arrived.
    waited: Option<u64>,
    /// The buffer level before the pulls that found nothing to play (see `waited`): if the
    /// packet they waited for turns out lost, they did not find the buffer low, and the level
    /// they wore down is put back.
    level_before_wait: Option<f64>,
    /// The last packet played was a DTX frame: pulls with nothing to play are comfort noise.
    in_dtx: bool,
    /// Recent fraction of packets missing at playout, exponentially forgotten.
    loss: f64,
    /// Holding one packet more for FEC (see [`JitterConfig::fec_lookahead`]).
    lookahead: bool,
    /// The last pull played comfort noise: a silence, where the delay can change without
    /// touching speech.
    gap: bool,
    /// The delay changed in this silence already.
    gap_adjusted: bool,
    /// A DTX silence: from a DTX frame played until two packets play back to back. The
    /// buffer level means nothing then (one comfort-noise update held at a time).
    silence: bool,
    /// A packet has played since the stream started.
    started: bool,
    /// Where the audio of the last sequence number consumed ends (extended timestamp): a
    /// packet starting later comes after time the sender did not send.
    consumed_end: Option<i64>,
    /// Since when the current block of [`HEADROOM_BLOCK_SAMPLES`] runs.
    wait_block_start: i64,
    /// The smallest time a packet played waited in the buffer in the current block, and in
    /// the one before (`i64::MAX`: none measured, or the block was cut short).
    wait_min: i64,
    prev_wait_min: i64,
    /// When the last DTX silence started (local clock).
    silence_at: Option<i64>,
}

impl JitterBuffer {
    /// An empty buffer; `packet_samples` is the expected packet length until one is measured.
    pub fn new(config: JitterConfig, packet_samples: usize) -> Self {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                seq: u64::MAX,
                ts: 0,
                arrival: 0,
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
            level_seen: false,
            cooldown: 0,
            counters: JitterCounters::default(),
            now: 0,
            position: None,
            waited: None,
            level_before_wait: None,
            in_dtx: false,
            loss: if config.fec_lookahead {
                LOOKAHEAD_START
            } else {
                0.0
            },
            lookahead: config.fec_lookahead,
            gap: false,
            gap_adjusted: false,
            silence: false,
            started: false,
            consumed_end: None,
            wait_block_start: 0,
            wait_min: i64::MAX,
            prev_wait_min: i64::MAX,
            silence_at: None,
        }
    }

    /// The decisions so far.
    pub fn counters(&self) -> JitterCounters {
        self.counters
    }

    /// The extra delay the buffer aims for beyond one packet: the 97th percentile of the
    /// measured delay variation, within the configured bounds.
    pub fn target_delay(&self) -> Duration {
        samples_to_duration(self.total_target() + self.packet_samples as f64)
    }

    /// The recent fraction of packets missing at playout (0 to 1), over about 10 s.
    pub fn recent_loss(&self) -> f64 {
        self.loss
    }

    /// The target in samples beyond one packet: the delay variation's, plus a packet while
    /// holding one for FEC.
    fn total_target(&self) -> f64 {
        if self.lookahead {
            self.target + self.packet_samples as f64
        } else {
            self.target
        }
    }

    /// Records whether the sequence number just consumed was missing, for the loss estimate.
    fn note_loss(&mut self, missing: bool) {
        self.loss = self.loss * LOSS_FORGET + if missing { 1.0 - LOSS_FORGET } else { 0.0 };
        if !self.config.fec_lookahead {
            self.lookahead = false;
        } else if self.loss > LOOKAHEAD_ON {
            self.lookahead = true;
        } else if self.loss < LOOKAHEAD_OFF {
            self.lookahead = false;
        }
    }

    /// The timestamp of `seq` (at or after the next to play): its own if held, else counted
    /// back from the first held packet after it, else on from the playout position.
    fn timestamp_of(&self, seq: u64, highest: u64) -> Option<i64> {
        let samples = self.packet_samples as i64;
        let mut s = seq;
        while s <= highest {
            let slot = &self.slots[s as usize % SLOTS];
            if slot.seq == s && slot.state == SlotState::Filled {
                return Some(slot.ts - (s - seq) as i64 * samples);
            }
            s += 1;
        }
        None
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
        self.level_seen = false;
        self.position = None;
        self.waited = None;
        self.in_dtx = false;
        self.silence = false;
        self.started = false;
        self.consumed_end = None;
        self.forget_waits();
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
                // Timestamps jump forward across DTX silences, of any length, while sequence
                // numbers stay contiguous: only a jump back in time is suspicious on its own.
                if !(-MAX_JUMP..=MAX_JUMP).contains(&off)
                    || dts < -MAX_JUMP * self.packet_samples as i64
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
                self.position = None;
                self.waited = None;
            }
        }
        let slot = &mut self.slots[(ext as usize) % SLOTS];
        if slot.seq == ext && slot.state != SlotState::Empty {
            self.counters.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        slot.seq = ext;
        slot.ts = ext_ts;
        slot.arrival = arrival;
        slot.state = SlotState::Filled;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.counters.stored += 1;
        match self.highest {
            Some((h, _)) if ext <= h => {}
            Some((h, hts)) => {
                // The packet's own length when it is valid Opus: timestamps step further than
                // a packet across DTX silences.
                let per = match super::codec::Decoder::packet_samples(payload) {
                    Ok(n) => n as i64,
                    Err(_) => (ext_ts - hts) / (ext - h) as i64,
                };
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

    /// Records how long the packet in slot `index`, played now, waited in the buffer.
    fn note_wait(&mut self, index: usize) {
        if self.now - self.wait_block_start >= HEADROOM_BLOCK_SAMPLES {
            self.prev_wait_min = self.wait_min;
            self.wait_min = i64::MAX;
            self.wait_block_start = self.now;
        }
        let wait = (self.now - self.slots[index].arrival).max(0);
        self.wait_min = self.wait_min.min(wait);
    }

    /// Starts the waits' blocks afresh: the delay changed, or the stream did.
    fn forget_waits(&mut self) {
        self.wait_block_start = self.now;
        self.wait_min = i64::MAX;
        self.prev_wait_min = i64::MAX;
    }

    /// Every packet played over the last two blocks (2 to 4 s) waited over a frame more than
    /// it needed: the buffer holds a frame nobody uses (left from the packet held for FEC at
    /// the start, or from an underrun after a stall of the pulling thread) and can drop it
    /// without an underrun after it. Sound without pauses (a tone, music, or speech with DTX
    /// off) never gives it a silence to shed that frame in, so it goes in the sound,
    /// cross-faded; speech that had a DTX silence in the last 10 s sheds it in the next one.
    fn idle_frame(&self) -> bool {
        let waited = self.wait_min.max(self.prev_wait_min);
        let least = self.wait_min.min(self.prev_wait_min);
        waited != i64::MAX && least >= self.packet_samples as i64 + HEADROOM_MARGIN_SAMPLES
    }

    fn is_filled(&self, index: usize, seq: u64) -> bool {
        self.slots[index].seq == seq && self.slots[index].state == SlotState::Filled
    }

    /// Takes what to play for the next packet's worth of audio, at `now` (samples on the local
    /// clock).
    pub fn pull(&mut self, now: i64) -> Playout<'_> {
        self.now = self.now.max(now);
        let (Some(mut next), Some((highest, _))) = (self.next, self.highest) else {
            return Playout::Idle;
        };
        let samples = self.packet_samples;
        let frame = samples as f64;
        self.cooldown = self.cooldown.saturating_sub(1);
        let waited = self.waited.take();
        if waited == Some(next) && highest > next && !self.is_filled(next as usize % SLOTS, next) {
            // The last pull concealed a frame for `next` while nothing at or after it had come;
            // newer packets came and `next` did not: it is lost, and that frame was its frame.
            self.counters.missing += 1;
            self.note_loss(true);
            // The pulls that found nothing did so because packets were lost, not late: the
            // buffer did not run low, and the level they wore down is put back (or, measured
            // in `voice_fec`, a burst of 4 losses left the buffer thinking itself shallow and
            // it stretched twice: 40 ms deeper for the rest of the call).
            if let Some(level) = self.level_before_wait.take() {
                self.level = level;
            }
            let after = ((next + 1) as usize) % SLOTS;
            let in_time = self
                .position
                .is_none_or(|p| self.slots[after].ts <= p + samples as i64 / 2);
            if self.is_filled(after, next + 1) && !in_time && !self.silence {
                // The packet after it is not due yet: the sender sent nothing for a while
                // after `next`, so `next` was most likely the DTX frame that began a silence
                // (or the last frame before one). The pulls since were that silence: the
                // packets to come keep the delay the buffer had (comfort noise until the
                // next one is due, as after any DTX silence), not a jump ahead that plays them
                // a frame or more early and, at the next loss, a stretch back (measured: 20
                // ms early for 16 frames, then 20 ms late, 89% of libopus alone's PESQ).
                self.silence = true;
                self.silence_at = Some(self.now);
                self.gap_adjusted = false;
                self.gap = true;
            }
            if self.is_filled(after, next + 1)
                && in_time
                && self.estimated_delay() + 0.5 * frame < self.total_target()
            {
                // The buffer wants to be a frame deeper anyway: play the lost frame, recovered
                // from the next packet's FEC, after the concealed one (a stretch).
                self.counters.fec_recovered += 1;
                self.counters.stretched += 1;
                self.forget_waits();
                self.level += 1.0;
                self.cooldown = COOLDOWN_PULLS;
                self.next = Some(next + 1);
                self.position = Some(self.slots[after].ts);
                self.consumed_end = self.position;
                self.in_dtx = false;
                return Playout::Recover {
                    next: &self.slots[after].data,
                    samples,
                };
            }
            next += 1;
            // Each pull that waited concealed a frame: the packets after `next` that are
            // missing too and whose time those pulls covered were lost, and played so.
            if let Some(p) = self.position {
                let first = next;
                while next < highest
                    && !self.is_filled(next as usize % SLOTS, next)
                    && self
                        .timestamp_of(next, highest)
                        .is_some_and(|ts| ts + samples as i64 <= p)
                {
                    self.counters.missing += 1;
                    self.note_loss(true);
                    next += 1;
                }
                // More than a burst: an outage (a dead path), given up as it went.
                if next - first > OUTAGE_SLACK as u64 {
                    self.counters.fast_forwards += 1;
                }
            }
            self.next = Some(next);
        }
        let level = highest as i64 - next as i64 + 1;
        if level <= 0 {
            // Nothing at or after `next`: the sender is silent (DTX), or `next` is late or lost.
            if let Some(p) = &mut self.position {
                *p += samples as i64;
            }
            if self.in_dtx {
                self.counters.comfort_noise += 1;
                self.gap = true;
                return Playout::ComfortNoise { samples };
            }
            if waited.is_none() {
                self.level_before_wait = Some(self.level);
            }
            self.level += (level as f64 - self.level) * LEVEL_ALPHA;
            self.counters.underruns += 1;
            self.level += 1.0 * LEVEL_ALPHA;
            // If newer packets show next time that `next` was lost, this frame was its frame.
            self.waited = Some(next);
            return Playout::Conceal { samples };
        }
        let target_packets = (self.total_target() / frame).ceil() as i64;
        let piled_up = level > target_packets + OUTAGE_SLACK;
        let ts_next = self.timestamp_of(next, highest);
        let fresh = self.position.is_none();
        if fresh && let Some(ts) = ts_next {
            // Playout starts: a packet later when holding one for FEC.
            let hold = if self.lookahead { samples as i64 } else { 0 };
            self.position = Some(ts - hold);
        }
        if let (Some(p), Some(ts), false) = (self.position, ts_next, piled_up) {
            let mut p = p;
            let skipped_time = self
                .consumed_end
                .is_some_and(|end| ts > end + samples as i64 / 2);
            if self.silence && skipped_time && !self.gap_adjusted {
                // A silence (DTX) ends: the place to deepen or shallow the buffer by a frame
                // of comfort noise, not of speech.
                let delay = self.estimated_delay();
                let target = self.total_target();
                if delay + 0.5 * frame < target {
                    p -= samples as i64;
                    self.level += 1.0;
                    self.gap_adjusted = true;
                } else if delay >= target + 0.5 * frame && ts > p + samples as i64 / 2 {
                    p += samples as i64;
                    self.level -= 1.0;
                    self.gap_adjusted = true;
                }
                self.position = Some(p);
            }
            if ts > p + samples as i64 / 2 && !fresh && self.started && !self.silence {
                // The timestamp jumped ahead of playout with no DTX frame before it: the
                // sender's capture stalled and caught up (its timestamp followed the clock
                // over the stall, then the frames it caught up came at once). After a pause
                // of the sender the pulls in between have moved playout on already. Nothing
                // was left unsent: play on, no comfort noise over packets piling up.
                p = ts;
                self.position = Some(p);
            }
            if ts > p + samples as i64 / 2 {
                // After a DTX silence: the packet's time has not come. Comfort noise until it
                // does, so the buffer keeps its delay.
                self.position = Some(p + samples as i64);
                if !self.started {
                    return Playout::Idle;
                }
                self.counters.comfort_noise += 1;
                self.gap = true;
                return Playout::ComfortNoise { samples };
            }
        }
        let due_is_dtx = self.is_filled(next as usize % SLOTS, next)
            && self.slots[next as usize % SLOTS].data.len() <= DTX_PACKET;
        if !self.gap && !due_is_dtx {
            // Packets back to back, not DTX frames: speech flows.
            self.silence = false;
        }
        self.gap = false;
        if !self.silence {
            if self.level_seen {
                self.level += (level as f64 - self.level) * LEVEL_ALPHA;
            } else {
                // The first level seen is the buffer's: smoothed up from 1 instead, the delay
                // read low for the first second, and a loss then stretched the buffer a frame
                // deeper in the middle of speech (measured across NAT: 89.6% of libopus alone).
                // No more than a packet above the target, though: packets piled up before the
                // first pull are shed gradually, as before, not skipped at once.
                self.level = level.min(target_packets + 1).max(1) as f64;
                self.level_seen = true;
            }
        }
        if piled_up && !self.is_filled(next as usize % SLOTS, next) {
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
            self.position = None;
        }
        let delay = self.estimated_delay();
        let target = self.total_target();

        if self.cooldown == 0 {
            let (a, b) = ((next as usize) % SLOTS, ((next + 1) as usize) % SLOTS);
            let both_here = self.is_filled(a, next) && self.is_filled(b, next + 1);
            let pauses = self
                .silence_at
                .is_some_and(|at| self.now - at < SILENCE_RECENT_SAMPLES);
            let shed =
                !self.silence && !pauses && delay >= target + 0.5 * frame && self.idle_frame();
            if (delay > target + 1.5 * frame || shed) && both_here {
                // Accelerate: skip the next frame. Both it and the one after are handed out,
                // so the decoder stays continuous and the caller can cross-fade.
                self.counters.dropped += 1;
                self.note_loss(false);
                self.note_loss(false);
                self.slots[a].state = SlotState::Played;
                self.slots[b].state = SlotState::Played;
                self.next = Some(next + 2);
                self.level -= 1.0;
                self.cooldown = COOLDOWN_PULLS;
                self.position = Some(self.slots[b].ts + samples as i64);
                self.consumed_end = self.position;
                self.in_dtx = self.slots[b].data.len() <= DTX_PACKET;
                self.forget_waits();
                return Playout::Skip {
                    dropped: &self.slots[a].data,
                    next: &self.slots[b].data,
                };
            } else if delay + 0.5 * frame < self.target {
                // Stretch: conceal a frame and play the packet later. (A packet held for FEC
                // is added in a silence, or at a loss, not by concealing speech.)
                self.counters.stretched += 1;
                self.forget_waits();
                self.level += 1.0;
                self.cooldown = COOLDOWN_PULLS;
                return Playout::Conceal { samples };
            }
        }
        self.next = Some(next + 1);
        let idx = (next as usize) % SLOTS;
        if self.slots[idx].seq == next && self.slots[idx].state == SlotState::Filled {
            self.slots[idx].state = SlotState::Played;
            self.note_loss(false);
            if !self.silence {
                self.note_wait(idx);
            }
            self.position = Some(self.slots[idx].ts + samples as i64);
            self.consumed_end = self.position;
            self.started = true;
            self.in_dtx = self.slots[idx].data.len() <= DTX_PACKET;
            if self.in_dtx && !self.silence {
                self.silence = true;
                self.silence_at = Some(self.now);
                self.gap_adjusted = false;
            }
            return Playout::Packet(&self.slots[idx].data);
        }
        self.counters.missing += 1;
        self.note_loss(true);
        self.in_dtx = false;
        self.position = self
            .timestamp_of(next, highest)
            .map(|ts| ts + samples as i64)
            .or(self.position.map(|p| p + samples as i64));
        self.consumed_end = self.position;
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

/// An Opus packet this short carries no audio: a DTX frame (RFC 6716 section 3.2.1: a frame
/// of 0 or 1 bytes is DTX or lost), after which the sender goes quiet.
pub const DTX_PACKET: usize = 2;

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

    /// Without the packet held for FEC: the mechanics below play a packet as soon as it is in.
    fn plain() -> JitterConfig {
        JitterConfig {
            fec_lookahead: false,
            ..JitterConfig::default()
        }
    }

    fn pkt(seq: u16) -> [u8; 3] {
        [0xfc, (seq >> 8) as u8, seq as u8]
    }

    fn played(p: Playout<'_>) -> Option<u16> {
        match p {
            Playout::Packet(d) | Playout::Skip { next: d, .. } => {
                Some(u16::from_be_bytes([d[1], d[2]]))
            }
            _ => None,
        }
    }

    #[test]
    fn reorders_and_wraps() {
        let mut jb = JitterBuffer::new(plain(), F);
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
        let mut jb = JitterBuffer::new(plain(), F);
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
        let mut jb = JitterBuffer::new(plain(), F);
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
        let mut jb = JitterBuffer::new(plain(), F);
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
        let mut jb = JitterBuffer::new(plain(), F);
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

    /// Pushes packet `k` at `k` frames and pulls right after it arrived, for `n` packets, less
    /// the `lost` ones; returns, for every pull that played a packet, how many frames behind
    /// the newest packet it was.
    fn run_with_losses(jb: &mut JitterBuffer, n: u16, lost: &[u16]) -> Vec<(u16, i64)> {
        let f = F as i64;
        let mut lags = vec![];
        for k in 0..n {
            let t = i64::from(k) * f;
            if !lost.contains(&k) {
                jb.push(t, 1, k, u32::from(k) * 960, &pkt(k));
            }
            if let Some(seq) = played(jb.pull(t + 10)) {
                lags.push((k, i64::from(k) - i64::from(seq)));
            }
        }
        lags
    }

    #[test]
    fn single_losses_never_leave_the_buffer_deeper() {
        // Losses far apart (one in 400 packets: the buffer does not start holding a packet
        // for FEC), with and without the packet held from the call's start.
        let lost = [300, 700, 1_100, 1_500];
        for config in [plain(), JitterConfig::default()] {
            let mut jb = JitterBuffer::new(config, F);
            let lags = run_with_losses(&mut jb, 1_900, &lost);
            let before = lags.iter().find(|(k, _)| *k == 290).unwrap().1;
            for &(k, lag) in lags.iter().filter(|(k, _)| *k > 290) {
                assert_eq!(lag, before, "{config:?}: {k} played {lag} frames late");
            }
            let c = jb.counters();
            assert_eq!(c.missing, 4, "{c:?}");
            assert_eq!(
                (c.dropped, c.stretched, c.fast_forwards),
                (0, 0, 0),
                "{c:?}"
            );
            assert!(
                jb.current_delay() <= Duration::from_millis(41),
                "{:?}",
                jb.current_delay()
            );
        }
    }

    #[test]
    fn under_sustained_loss_a_packet_is_held_and_every_single_loss_recovered() {
        // One packet in 20 lost after the start: the buffer holds a packet (from the start,
        // and keeps holding once losses come), so each lost packet's successor is there.
        let lost: Vec<u16> = (1..100).map(|i| i * 20 + 7).collect();
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        let lags = run_with_losses(&mut jb, 2_000, &lost);
        let c = jb.counters();
        assert_eq!(c.missing, lost.len() as u64, "{c:?}");
        assert_eq!(c.fec_recovered, c.missing, "{c:?}");
        assert_eq!((c.dropped, c.underruns), (0, 0), "{c:?}");
        assert!(lags.iter().all(|&(_, lag)| lag == 1), "{lags:?}");
        assert!(jb.recent_loss() > LOOKAHEAD_ON);
        assert_eq!(jb.target_delay(), Duration::from_millis(45));
    }

    #[test]
    fn a_dtx_silence_is_comfort_noise_and_keeps_the_delay() {
        let mut jb = JitterBuffer::new(plain(), F);
        let f = F as i64;
        // Talk for 50 packets, a DTX frame, then 100 frames not sent; the next packet follows
        // in sequence with the timestamp 101 frames on.
        let mut outcomes = vec![];
        for k in 0..300i64 {
            let t = k * f;
            let seq = match k {
                0..=50 => Some(k as u16),
                151.. => Some((k - 100) as u16),
                _ => None,
            };
            if let Some(seq) = seq {
                let payload: &[u8] = if k == 50 { &[0xfc] } else { &pkt(seq) };
                jb.push(t, 1, seq, k as u32 * 960, payload);
            }
            outcomes.push(match jb.pull(t + 10) {
                Playout::Packet(d) if d.len() == 3 => Some(u16::from_be_bytes([d[1], d[2]])),
                Playout::Packet(_) => Some(50),
                Playout::ComfortNoise { .. } => None,
                other => panic!("pull {k}: {other:?}"),
            });
        }
        // Every packet played in the pull right after it arrived, before and after the
        // silence; comfort noise in between.
        for (k, o) in outcomes.iter().enumerate() {
            let want = match k {
                0..=50 => Some(k as u16),
                151.. => Some((k - 100) as u16),
                _ => None,
            };
            assert_eq!(*o, want, "pull {k}");
        }
        let c = jb.counters();
        assert_eq!(c.comfort_noise, 100, "{c:?}");
        assert_eq!(
            (c.missing, c.underruns, c.resyncs, c.dropped),
            (0, 0, 0, 0),
            "{c:?}"
        );
    }

    /// As above, but the DTX frame that began the silence is lost: nothing tells the buffer
    /// the sender went quiet, so it conceals. When packets come again their timestamp says
    /// the sender sent nothing meanwhile: the lost packet began a silence, and the packets
    /// after it play with the delay the buffer had, not a frame early (and later, at a loss,
    /// a frame late again: 89-94% of libopus alone's PESQ-WB in `voice_fec` before).
    #[test]
    fn a_silence_whose_dtx_frame_was_lost_keeps_the_delay() {
        for config in [plain(), JitterConfig::default()] {
            let mut jb = JitterBuffer::new(config, F);
            let f = F as i64;
            // Packets arrive 10 samples after a pull: each is played a pull after it came.
            let mut played_at = vec![];
            for k in 0..300i64 {
                let t = k * f;
                if let Some(seq) = played(jb.pull(t + 5)) {
                    played_at.push((seq, k));
                }
                if let Some(seq) = match k {
                    0..=49 => Some(k as u16),
                    151.. => Some((k - 100) as u16),
                    // 50: the DTX frame, lost; 51..=150: the silence, not sent.
                    _ => None,
                } {
                    jb.push(t + 10, 1, seq, k as u32 * 960, &pkt(seq));
                }
            }
            let lag = |seq: u16| {
                let (_, k) = played_at.iter().find(|(s, _)| *s == seq).unwrap();
                let sent = if seq < 50 {
                    i64::from(seq)
                } else {
                    i64::from(seq) + 100
                };
                k - sent
            };
            let before = lag(40);
            for seq in 51..=60 {
                assert_eq!(
                    lag(seq),
                    before,
                    "packet {seq} after the silence: {played_at:?}"
                );
            }
            let c = jb.counters();
            assert_eq!((c.missing, c.dropped), (1, 0), "{c:?}");
        }
    }

    /// A seeded generator for the virtual-time runs below (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Outcome of [`clean_path`]: the buffer's reported delay at the end, the mean time a
    /// packet waited in it (played less arrived) over the last 5 s, and the counters.
    struct CleanRun {
        delay: Duration,
        mean_wait_ms: f64,
        counters: JitterCounters,
    }

    /// A call to the echo service in virtual time, as the app runs it: every frame a tick
    /// sends a packet and then pulls one to play; the packet comes back 1 ms plus up to
    /// `jitter_ms` (uniform, seeded) later, so each pull plays the packet sent a tick before.
    /// One tick in 50 (seeded) runs `late_ms` late (a loaded machine); ticks missed meanwhile
    /// run at once after it, as tokio's `MissedTickBehavior::Burst` makes them. 15 s, no loss.
    fn clean_path(
        config: JitterConfig,
        frame: usize,
        seed: u64,
        jitter_ms: u64,
        late_ms: (u64, u64),
    ) -> CleanRun {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let f = frame as i64;
        let ms = 48i64;
        let n = (15 * 48_000 / f) as usize;
        let phase = rng.below(f as u64) as i64;
        let mut ticks = Vec::with_capacity(n);
        let mut stall_end = 0;
        for k in 0..n {
            let nominal = k as i64 * f + phase;
            let mut t = nominal.max(stall_end);
            if t == nominal && k > 0 && rng.below(50) == 0 {
                t += (late_ms.0 + rng.below(late_ms.1 - late_ms.0 + 1)) as i64 * ms;
                stall_end = t;
            }
            ticks.push(t);
        }
        let mut arrivals: Vec<(i64, usize)> = ticks
            .iter()
            .enumerate()
            .map(|(k, &t)| (t + ms + rng.below(jitter_ms * 48 + 1) as i64, k))
            .collect();
        arrivals.sort();
        let mut arrived_at = vec![0; n];
        let mut jb = JitterBuffer::new(config, frame);
        let mut pushed = 0;
        let (mut waited, mut played_late) = (0i64, 0i64);
        for &t in &ticks {
            while pushed < n && arrivals[pushed].0 <= t {
                let (at, k) = arrivals[pushed];
                arrived_at[k] = at;
                // A CELT fullband packet of the frame's length (TOC config 30: 10 ms, 31: 20 ms).
                let mut packet = pkt(k as u16);
                if frame == 480 {
                    packet[0] = 0xf4;
                }
                jb.push(at, 1, k as u16, (k * frame) as u32, &packet);
                pushed += 1;
            }
            if let Some(k) = played(jb.pull(t))
                && t > 10 * 48_000
            {
                waited += t - arrived_at[usize::from(k)];
                played_late += 1;
            }
        }
        CleanRun {
            delay: jb.current_delay(),
            mean_wait_ms: waited as f64 / played_late as f64 / 48.0,
            counters: jb.counters(),
        }
    }

    #[test]
    fn a_clean_path_keeps_the_buffer_shallow() {
        // Jitter of 4 ms and a pulling thread stalled 5-15 ms once a second or two: past the
        // packet held for FEC in the first 4 s, the buffer holds one frame plus that jitter,
        // whatever it did at the start; a tone sends no DTX frame, so no comfort noise.
        for frame in [480, 960] {
            let frame_ms = frame as f64 / 48.0;
            for seed in 1..=5 {
                let r = clean_path(JitterConfig::default(), frame, seed, 4, (5, 15));
                let c = r.counters;
                eprintln!(
                    "{frame_ms} ms frames, seed {seed}: delay {:?}, mean wait {:.1} ms, {c:?}",
                    r.delay, r.mean_wait_ms
                );
                assert!(
                    r.delay <= Duration::from_secs_f64((frame_ms + 15.0) / 1e3),
                    "{frame_ms} ms frames, seed {seed}: delay {:?}",
                    r.delay
                );
                assert!(
                    r.mean_wait_ms <= frame_ms + 15.0,
                    "{frame_ms} ms frames, seed {seed}: packets waited {:.1} ms",
                    r.mean_wait_ms
                );
                assert_eq!((c.comfort_noise, c.missing), (0, 0), "{c:?}");
            }
        }
    }

    #[test]
    fn long_stalls_of_the_pulling_thread_are_no_silences() {
        // Stalls of 20-45 ms: bursts of pulls after them find the buffer empty now and then
        // (underruns, concealed); still no comfort noise, and the buffer sheds what they add.
        for frame in [480, 960] {
            let frame_ms = frame as f64 / 48.0;
            for seed in 1..=5 {
                let r = clean_path(JitterConfig::default(), frame, seed, 4, (20, 45));
                let c = r.counters;
                eprintln!(
                    "{frame_ms} ms frames, seed {seed}: delay {:?}, mean wait {:.1} ms, {c:?}",
                    r.delay, r.mean_wait_ms
                );
                assert_eq!(c.comfort_noise, 0, "{c:?}");
                assert!(
                    r.mean_wait_ms <= frame_ms + 45.0,
                    "{frame_ms} ms frames, seed {seed}: packets waited {:.1} ms",
                    r.mean_wait_ms
                );
            }
        }
    }

    #[test]
    fn a_sender_that_stalled_and_caught_up_is_no_silence() {
        // The echo call's thread stalls: then the ticks it missed run at once, each
        // sending a frame and pulling one. The session's sender saw a gap of more than 10
        // frames (300 ms) at the first of them and moved its timestamp on by it (as after a
        // pause in capture), then sent the frames caught up after it, in sequence. The buffer
        // must not play 300 ms of comfort noise over the packets piling up, nor keep them.
        let f = F as i64;
        let mut ticks = vec![];
        for k in 0..400i64 {
            // A stall of 140 ms, then one of 300 ms while the buffer still holds the frames
            // the first one added.
            // The ticks of a burst 2 samples apart, the echo back in 1: the packets sent in a
            // burst are there for its next pulls.
            let t = match k {
                100..107 => 107 * f + 2 * (k - 100),
                110..125 => 125 * f + 2 * (k - 110),
                _ => k * f,
            };
            ticks.push(t + 100);
        }
        let mut jb = JitterBuffer::new(JitterConfig::default(), F);
        let mut ts = 0i64;
        let mut last: Option<i64> = None;
        let mut in_flight: Vec<(i64, u16, u32)> = vec![];
        let mut cn = 0;
        let mut lags = vec![];
        for (k, &t) in ticks.iter().enumerate() {
            if let Some(at) = last
                && t - at > 10 * f
            {
                ts += t - at - f;
            }
            last = Some(t);
            in_flight.push((t + 1, k as u16, ts as u32));
            ts += f;
            in_flight.retain(|&(at, seq, pts)| {
                if at <= t {
                    jb.push(at, 1, seq, pts, &pkt(seq));
                }
                at > t
            });
            match jb.pull(t) {
                Playout::ComfortNoise { .. } => cn += 1,
                p => {
                    if let Some(seq) = played(p) {
                        lags.push((k, k as i64 - i64::from(seq)));
                    }
                }
            }
        }
        assert_eq!(cn, 0, "{:?}", jb.counters());
        // The frames caught up drain (a frame dropped every few pulls) within 3 s, to the
        // packet sent a tick before, or two.
        assert!(
            lags.iter()
                .filter(|(k, _)| *k > 270)
                .all(|&(_, lag)| lag <= 2),
            "{lags:?}"
        );
    }
}
