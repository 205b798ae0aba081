//! A voice session: one Opus stream each way over a datagram transport, sans I/O.

use std::io;
use std::time::{Duration, Instant};

use super::VoiceError;
use super::codec::{CodecConfig, Decoder, Encoder, MAX_FRAME_SAMPLES, MAX_OPUS_PACKET};
use super::jitter::{DTX_PACKET, JitterBuffer, JitterConfig, Playout, PushOutcome};
use super::probation::{Admit, SourceGate};
use super::rtcp::{self, MAX_RTCP_LEN, NtpTime, SenderInfo};
use super::rtp::{self, DEFAULT_PAYLOAD_TYPE, DatagramKind, RTP_HEADER_LEN, RtpSender};
use super::stats::{ReceptionTracker, RemoteStats, SendStats, VoiceStats};
use crate::SAMPLE_RATE;

/// Where the session's datagrams go: a UDP socket, a relay, an in-memory link. Sending is
/// best effort, as UDP is; the session counts failures and goes on.
pub trait Transport {
    /// Sends one datagram.
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        (**self).send(datagram)
    }
}

/// A connected UDP socket sends to its peer.
impl Transport for std::net::UdpSocket {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        std::net::UdpSocket::send(self, datagram).map(|_| ())
    }
}

/// Sends to one peer address through a socket that may be shared (with STUN, say): on a path
/// change, make the next one with the new address.
#[derive(Debug, Clone, Copy)]
pub struct SendTo<'a> {
    /// The socket.
    pub socket: &'a std::net::UdpSocket,
    /// Where the media goes now.
    pub peer: std::net::SocketAddr,
}

impl Transport for SendTo<'_> {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send_to(datagram, self.peer).map(|_| ())
    }
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceConfig {
    /// Opus settings for what we send.
    pub codec: CodecConfig,
    /// The RTP payload type of Opus both ways (dynamic, 96-127; the SDP's `a=rtpmap`).
    pub payload_type: u8,
    /// The jitter buffer's bounds.
    pub jitter: JitterConfig,
    /// The mean interval between RTCP reports; each interval is randomised by 0.5-1.5 (RFC 3550
    /// section 6.3.1). The default is 1 s, as WebRTC implementations use for a two-party call:
    /// RFC 3550's 5 s minimum is a default that section 6.2 lets profiles lower (RFC 4585 does),
    /// and the reports cost about 80 bytes a second while giving RTT and loss early in a call.
    pub rtcp_interval: Duration,
    /// The canonical name in SDES (RFC 3550 section 6.5.1).
    pub cname: String,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            codec: CodecConfig::default(),
            payload_type: DEFAULT_PAYLOAD_TYPE,
            jitter: JitterConfig::default(),
            rtcp_interval: Duration::from_secs(1),
            cname: "pinhole".to_owned(),
        }
    }
}

/// One voice stream each way over a datagram transport.
///
/// The owner drives it: captured audio goes in with [`VoiceSession::push_capture`] (any slice
/// length; every full frame is encoded and sent), received datagrams with
/// [`VoiceSession::handle_datagram`], audio for the speaker comes out of
/// [`VoiceSession::pull_playout`] (any length, paced by the playback clock), and RTCP goes out
/// from [`VoiceSession::handle_timeout`] when [`VoiceSession::poll_timeout`] is reached. Time
/// is always passed in, so the session runs as well in virtual time as in real time. The steady
/// state does not allocate.
#[derive(Debug)]
pub struct VoiceSession {
    config: VoiceConfig,
    epoch: Instant,
    encoder: Encoder,
    decoder: Decoder,
    sender: RtpSender,
    jitter: JitterBuffer,
    /// Which source is played; a new SSRC only after probation (RFC 3550 A.1).
    sources: SourceGate,
    reception: ReceptionTracker,
    capture: Vec<f32>,
    packet: Vec<u8>,
    datagram: Vec<u8>,
    playout: Vec<f32>,
    /// Decode space for a frame skipped by the jitter buffer, cross-faded into the next.
    skipped: Vec<f32>,
    playout_pos: usize,
    playout_len: usize,
    sent: SendStats,
    malformed: u64,
    rtcp_received: u64,
    concealed: u64,
    remote: Option<RemoteStats>,
    rtt: Option<Duration>,
    /// The peer's last SR: the middle of its NTP time and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// The last RTP packet we sent: its timestamp and when.
    last_sent: Option<(u32, Instant)>,
    /// When the last frame was encoded, sent or not (DTX).
    last_frame_at: Option<Instant>,
    /// The last frame encoded was a DTX frame, sent or not: the next DTX frame is not sent.
    dtx_run: bool,
    /// DTX frames encoded since the last ordinary frame.
    dtx_frames_in_run: u64,
    /// The loss the encoder plans its FEC for, in percent.
    planned_loss: u8,
    sent_since_report: bool,
    next_rtcp: Instant,
    rng: u64,
}

impl VoiceSession {
    /// A session starting at `now`; SSRC, initial sequence number and timestamp come from `rng`.
    pub fn new(
        config: VoiceConfig,
        now: Instant,
        rng: &mut impl rand::Rng,
    ) -> Result<Self, VoiceError> {
        let encoder = Encoder::new(&config.codec)?;
        let decoder = Decoder::new()?;
        let sender = RtpSender::new(
            config.payload_type,
            rng.next_u32(),
            initial_seq(rng.next_u32()),
            rng.next_u32(),
        );
        let frame = config.codec.frame.samples();
        let mut session = Self {
            jitter: JitterBuffer::new(config.jitter, frame),
            epoch: now,
            encoder,
            decoder,
            sender,
            sources: SourceGate::default(),
            reception: ReceptionTracker::default(),
            capture: Vec::with_capacity(frame),
            packet: vec![0; MAX_OPUS_PACKET],
            datagram: vec![0; MAX_OPUS_PACKET + RTP_HEADER_LEN],
            playout: vec![0.0; MAX_FRAME_SAMPLES],
            skipped: vec![0.0; MAX_FRAME_SAMPLES],
            playout_pos: 0,
            playout_len: 0,
            sent: SendStats::default(),
            malformed: 0,
            rtcp_received: 0,
            concealed: 0,
            remote: None,
            rtt: None,
            last_sr: None,
            last_sent: None,
            last_frame_at: None,
            dtx_run: false,
            dtx_frames_in_run: 0,
            planned_loss: config.codec.expected_loss_percent,
            sent_since_report: false,
            next_rtcp: now,
            rng: rng.next_u64() | 1,
            config,
        };
        // RFC 3550 section 6.2: the first report after half an interval.
        session.next_rtcp = now + session.randomised(session.config.rtcp_interval / 2);
        Ok(session)
    }

    /// Plans the encoder's FEC for `percent` loss from the next frame on, as an RTCP report
    /// from the peer does (a replay of a call sets it where the call did). A change is logged
    /// with the RTP timestamp of the first frame it applies to.
    pub fn set_expected_loss(&mut self, percent: u8) {
        if percent == self.planned_loss {
            return;
        }
        match self.encoder.set_expected_loss(percent) {
            Ok(()) => {
                self.planned_loss = percent;
                tracing::info!(
                    percent,
                    rtp_timestamp = self.sender.next_timestamp(),
                    "FEC planned for {percent}% loss"
                );
            }
            Err(e) => tracing::debug!("expected loss not set: {e}"),
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.sender.ssrc()
    }

    /// The session's settings.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// The encoder's look-ahead.
    pub fn encoder_lookahead(&mut self) -> Result<Duration, VoiceError> {
        self.encoder.lookahead()
    }

    fn randomised(&mut self, d: Duration) -> Duration {
        // xorshift64*: jitter for report intervals only.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + r)
    }

    fn samples_at(&self, now: Instant) -> i64 {
        let d = now.saturating_duration_since(self.epoch);
        (d.as_nanos() * u128::from(SAMPLE_RATE) / 1_000_000_000) as i64
    }

    /// Our NTP-format clock: time since the session started (RFC 3550 section 6.4.1 allows
    /// elapsed time when no wallclock is at hand; only the peer's RTT echo uses it).
    fn ntp_at(&self, now: Instant) -> NtpTime {
        let d = now.saturating_duration_since(self.epoch);
        NtpTime((d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000))
    }

    /// Takes captured audio (48 kHz mono, any length); every full frame is encoded and sent as
    /// one RTP packet.
    pub fn push_capture<T: Transport + ?Sized>(
        &mut self,
        now: Instant,
        mut samples: &[f32],
        transport: &mut T,
    ) {
        let frame = self.encoder.frame_samples();
        while !samples.is_empty() {
            let take = (frame - self.capture.len()).min(samples.len());
            self.capture.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.capture.len() == frame {
                self.send_frame(now, transport);
                self.capture.clear();
            }
        }
    }

    fn send_frame<T: Transport + ?Sized>(&mut self, now: Instant, transport: &mut T) {
        let frame_len = self.config.codec.frame.duration();
        if let Some(at) = self.last_frame_at {
            let gap = now.saturating_duration_since(at);
            if gap > frame_len * TALKSPURT_GAP_FRAMES {
                // Capture stopped for a while (muted, paused): the timestamp follows the time
                // not sent, and the packet starts a talkspurt (RFC 7587 section 4.1's marker).
                let skipped =
                    self.samples_at(now) - self.samples_at(at) - self.capture.len() as i64;
                self.sender.skip(skipped.max(0) as u32);
            }
        }
        let len = match self.encoder.encode(&self.capture, &mut self.packet) {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!("opus encode failed: {e}");
                return;
            }
        };
        self.last_frame_at = Some(now);
        let frame = self.capture.len() as u32;
        if self.config.codec.dtx && len <= DTX_PACKET {
            // Silence: the first DTX frame goes out (the receiver then knows the silence that
            // follows is DTX, not loss); the rest are not sent, their time skipped (RFC 7587
            // section 3.1.3). The encoder's periodic comfort-noise updates are ordinary
            // packets and go out.
            self.dtx_frames_in_run += 1;
            if self.dtx_frames_in_run * self.config.codec.frame.millis() == DTX_UPDATE_MS {
                // libopus sends a comfort-noise update after 400 ms of DTX frames: an ordinary
                // frame at the encoder's bitrate, 1.5 kb/s at a voice rate. Noise needs few
                // bits: the frame expected to be that update is encoded at a low rate (and so
                // is speech that starts just then).
                if let Err(e) = self.encoder.set_bitrate(DTX_BITRATE) {
                    tracing::debug!("DTX bitrate not set: {e}");
                }
            }
            if self.dtx_run {
                self.sender.skip(frame);
                self.sent.dtx_frames += 1;
                return;
            }
            self.dtx_run = true;
        } else {
            self.dtx_run = false;
            if self.dtx_frames_in_run * self.config.codec.frame.millis() >= DTX_UPDATE_MS
                && let Err(e) = self.encoder.set_bitrate(self.config.codec.bitrate_bps)
            {
                tracing::debug!("bitrate not restored: {e}");
            }
            self.dtx_frames_in_run = 0;
        }
        let ts = self.sender.next_timestamp();
        let n = match self
            .sender
            .write(&self.packet[..len], frame, &mut self.datagram)
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("RTP packet not built: {e}");
                return;
            }
        };
        match transport.send(&self.datagram[..n]) {
            Ok(()) => {
                self.sent.packets += 1;
                self.sent.payload_bytes += len as u64;
            }
            Err(e) => {
                self.sent.send_errors += 1;
                tracing::debug!("RTP send failed: {e}");
            }
        }
        self.last_sent = Some((ts, now));
        self.sent_since_report = true;
    }

    /// Handles a datagram from the peer: RTP to the jitter buffer, RTCP to the statistics.
    /// Anything else, or anything malformed, is counted and dropped. Returns what it was.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> DatagramKind {
        let kind = rtp::classify(datagram);
        match kind {
            DatagramKind::Rtp => self.handle_rtp(now, datagram),
            DatagramKind::Rtcp => self.handle_rtcp(now, datagram),
            DatagramKind::Stun | DatagramKind::Other => self.malformed += 1,
        }
        kind
    }

    fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) {
        let packet = match rtp::parse_rtp(datagram) {
            Ok(p) if p.payload_type == self.config.payload_type => p,
            Ok(_) => {
                self.malformed += 1;
                return;
            }
            Err(e) => {
                tracing::trace!("RTP dropped: {e}");
                self.malformed += 1;
                return;
            }
        };
        let arrival = self.samples_at(now);
        if self.sources.admit(arrival, packet.ssrc, packet.seq) == Admit::Dropped {
            tracing::trace!(
                ssrc = packet.ssrc,
                seq = packet.seq,
                "RTP from a source on probation dropped"
            );
            return;
        }
        match self.jitter.push(
            arrival,
            packet.ssrc,
            packet.seq,
            packet.timestamp,
            packet.payload,
        ) {
            PushOutcome::TooLarge => {
                self.malformed += 1;
                return;
            }
            PushOutcome::Resynced => {
                // A new stream: the decoder starts afresh too.
                if let Err(e) = self.decoder.reset() {
                    tracing::debug!("decoder reset failed: {e}");
                }
                tracing::debug!(
                    ssrc = packet.ssrc,
                    seq = packet.seq,
                    "jitter buffer resynchronised"
                );
            }
            PushOutcome::Stored
            | PushOutcome::Duplicate
            | PushOutcome::Late
            | PushOutcome::Discarded => {}
        }
        self.reception
            .record(packet.ssrc, packet.seq, packet.timestamp, arrival);
    }

    fn handle_rtcp(&mut self, now: Instant, datagram: &[u8]) {
        let report = match rtcp::parse_compound(datagram, self.sender.ssrc()) {
            Ok(r) => r,
            Err(e) => {
                tracing::trace!("RTCP dropped: {e}");
                self.malformed += 1;
                return;
            }
        };
        let played = self.sources.current();
        if report
            .sender_ssrc
            .is_some_and(|from| played.is_some_and(|p| p != from))
        {
            // Reports from another source than the one played would steer our RTT, loss
            // figures and FEC: dropped with its RTP.
            tracing::trace!(
                from = report.sender_ssrc,
                "RTCP from another source dropped"
            );
            self.sources.count_dropped();
            return;
        }
        self.rtcp_received += 1;
        if let Some(si) = report.sender_info {
            self.last_sr = Some((si.ntp.middle(), now));
        }
        if let Some(block) = report.about_us {
            let percent = f32::from(block.fraction_lost) * 100.0 / 256.0;
            self.remote = Some(RemoteStats {
                fraction_lost_percent: percent,
                cumulative_lost: block.cumulative_lost,
                jitter: Duration::from_secs_f64(f64::from(block.jitter) / f64::from(SAMPLE_RATE)),
            });
            if block.lsr != 0 {
                // RFC 3550 section 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                let a = self.ntp_at(now).middle();
                let rtt = a.wrapping_sub(block.lsr).wrapping_sub(block.dlsr);
                if rtt < 1 << 31 {
                    self.rtt = Some(Duration::from_secs_f64(f64::from(rtt) / 65_536.0));
                }
            }
            // Plan FEC for the loss the peer sees, but never below the configured figure.
            let wanted = (percent.ceil() as u8).max(self.config.codec.expected_loss_percent);
            self.set_expected_loss(wanted);
        }
        if report.bye {
            tracing::debug!("peer sent RTCP BYE");
        }
    }

    /// Fills `out` with audio to play: decoded packets, recovered or concealed frames, or
    /// silence before the first packet.
    pub fn pull_playout(&mut self, now: Instant, out: &mut [f32]) {
        let mut written = 0;
        while written < out.len() {
            if self.playout_pos == self.playout_len {
                self.decode_next(now);
            }
            let n = (self.playout_len - self.playout_pos).min(out.len() - written);
            out[written..written + n]
                .copy_from_slice(&self.playout[self.playout_pos..self.playout_pos + n]);
            self.playout_pos += n;
            written += n;
        }
    }

    fn decode_next(&mut self, now: Instant) {
        let at = self.samples_at(now);
        let frame = self.config.codec.frame.samples();
        self.playout_pos = 0;
        let pulled = self.jitter.pull(at);
        if !matches!(pulled, Playout::Packet(_)) {
            tracing::debug!(
                at,
                playout = match &pulled {
                    Playout::Idle => "idle",
                    Playout::Packet(_) => "packet",
                    Playout::Skip { .. } => "skip",
                    Playout::Recover { .. } => "recover",
                    Playout::Conceal { .. } => "conceal",
                    Playout::ComfortNoise { .. } => "comfort noise",
                },
                "playout"
            );
        }
        let result = match pulled {
            Playout::Idle => {
                self.playout[..frame].fill(0.0);
                Ok(frame)
            }
            Playout::Packet(p) => match self.decoder.decode(p, &mut self.playout) {
                Ok(n) => Ok(n),
                Err(e) => {
                    tracing::trace!("undecodable packet: {e}");
                    self.malformed += 1;
                    self.concealed += 1;
                    self.decoder.conceal(&mut self.playout[..frame])
                }
            },
            Playout::Skip { dropped, next } => {
                // Decode both so the decoder stays continuous; the skipped frame's start
                // continues what was played last, so fade from it into the next frame.
                let skipped = self.decoder.decode(dropped, &mut self.skipped).unwrap_or(0);
                match self.decoder.decode(next, &mut self.playout) {
                    Ok(n) => {
                        let fade = SKIP_FADE.min(n).min(skipped);
                        for i in 0..fade {
                            let w = (i as f32 + 0.5) / fade as f32;
                            self.playout[i] = self.skipped[i] * (1.0 - w) + self.playout[i] * w;
                        }
                        Ok(n)
                    }
                    Err(e) => Err(e),
                }
            }
            Playout::Recover { next, samples } => {
                let samples = plc_len(samples);
                self.decoder.recover(next, &mut self.playout[..samples])
            }
            Playout::Conceal { samples } => {
                self.concealed += 1;
                self.decoder.conceal(&mut self.playout[..plc_len(samples)])
            }
            Playout::ComfortNoise { samples } => {
                // After a DTX frame Opus' concealment is its comfort noise.
                self.decoder.conceal(&mut self.playout[..plc_len(samples)])
            }
        };
        self.playout_len = match result {
            Ok(n) if n > 0 => n.min(self.playout.len()),
            Ok(_) | Err(_) => {
                self.playout[..frame].fill(0.0);
                frame
            }
        };
        // Opus' float output may overshoot full scale (and a hostile packet can make it);
        // the sink gets samples within it.
        for x in &mut self.playout[..self.playout_len] {
            *x = x.clamp(-1.0, 1.0);
        }
    }

    /// When [`VoiceSession::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_rtcp
    }

    /// Sends an RTCP report when one is due.
    pub fn handle_timeout<T: Transport + ?Sized>(&mut self, now: Instant, transport: &mut T) {
        if now < self.next_rtcp {
            return;
        }
        self.send_rtcp(now, false, transport);
        let interval = self.randomised(self.config.rtcp_interval);
        self.next_rtcp = now + interval;
    }

    /// Ends the stream: sends a final report with BYE (RFC 3550 section 6.6).
    pub fn close<T: Transport + ?Sized>(&mut self, now: Instant, transport: &mut T) {
        self.send_rtcp(now, true, transport);
    }

    fn send_rtcp<T: Transport + ?Sized>(&mut self, now: Instant, bye: bool, transport: &mut T) {
        let sender_info = if self.sent_since_report {
            let (ts, at) = self
                .last_sent
                .unwrap_or((self.sender.next_timestamp(), now));
            let elapsed = self.samples_at(now) - self.samples_at(at);
            Some(SenderInfo {
                ntp: self.ntp_at(now),
                rtp_timestamp: ts.wrapping_add(elapsed as u32),
                packet_count: self.sent.packets as u32,
                octet_count: self.sent.payload_bytes as u32,
            })
        } else {
            None
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let delay = now.saturating_duration_since(at);
                (lsr, (delay.as_secs_f64() * 65_536.0) as u32)
            }
            None => (0, 0),
        };
        let block = self.reception.report_block(lsr, dlsr);
        let mut buf = [0u8; MAX_RTCP_LEN];
        let n = match rtcp::write_compound(
            self.sender.ssrc(),
            sender_info.as_ref(),
            block.as_ref(),
            &self.config.cname,
            bye,
            &mut buf,
        ) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("RTCP not built: {e}");
                return;
            }
        };
        match transport.send(&buf[..n]) {
            Ok(()) => self.sent.rtcp_packets += 1,
            Err(e) => {
                self.sent.send_errors += 1;
                tracing::debug!("RTCP send failed: {e}");
            }
        }
        self.sent_since_report = false;
    }

    /// The session's statistics.
    pub fn stats(&self) -> VoiceStats {
        let c = self.jitter.counters();
        let mut stats = VoiceStats {
            sent: self.sent,
            remote: self.remote,
            rtt: self.rtt,
            jitter_buffer_delay: self.jitter.current_delay(),
            jitter_buffer_target: self.jitter.target_delay(),
            ..VoiceStats::default()
        };
        let r = &mut stats.received;
        r.packets = self.reception.total_received();
        r.lost = self.reception.total_lost();
        r.late = c.late;
        r.duplicate = c.duplicate;
        r.malformed = self.malformed;
        r.rtcp_packets = self.rtcp_received;
        r.jitter = self.reception.jitter();
        r.concealed_frames = self.concealed;
        r.fec_recovered = c.fec_recovered;
        r.comfort_noise_frames = c.comfort_noise;
        r.dropped_frames = c.dropped;
        r.resyncs = c.resyncs;
        r.probation_dropped = self.sources.dropped();
        stats
    }
}

/// The encoder's bitrate while it is in DTX, for its comfort-noise updates.
const DTX_BITRATE: u32 = 6_000;

/// How long libopus stays in DTX before it sends a comfort-noise update (its
/// `MAX_CONSECUTIVE_DTX` of 20 frames of 20 ms).
const DTX_UPDATE_MS: u64 = 400;

/// A pause in capture longer than this many frames starts a new talkspurt.
const TALKSPURT_GAP_FRAMES: u32 = 10;

/// Length of the cross-fade over a frame skipped by the jitter buffer (5 ms).
const SKIP_FADE: usize = SAMPLE_RATE as usize / 200;

/// Opus conceals in multiples of 2.5 ms: rounds `samples` to that, within a decode buffer.
fn plc_len(samples: usize) -> usize {
    let quantum = SAMPLE_RATE as usize / 400;
    (samples / quantum * quantum).clamp(quantum, MAX_FRAME_SAMPLES)
}

/// The first RTP sequence number, random in the lower half of its range: the sequence then
/// wraps (and SRTP's rollover counter goes to 1) no earlier than 2^15 packets (11 minutes at
/// 50 a second) into the call. A receiver takes the first packet it decrypts as ROC 0 (RFC 3711
/// section 3.3.1): had the sequence wrapped among the packets it missed at the start (its media
/// not running yet), it would guess ROC 0 for ROC 1 and reject every packet of the call as
/// forged.
fn initial_seq(random: u32) -> u16 {
    (random & 0x7fff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_starts_in_the_lower_half() {
        for random in [
            0,
            1,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            u32::MAX,
            0xdead_beef,
        ] {
            assert!(initial_seq(random) < 0x8000, "{random:#x}");
        }
        assert_eq!(initial_seq(0x1234_5678), 0x5678);
    }

    #[test]
    fn a_session_can_move_to_a_media_thread() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<VoiceSession>();
        assert_send::<VoiceStats>();
    }

    #[test]
    fn conceal_lengths_are_whole_opus_quanta() {
        assert_eq!(plc_len(960), 960);
        assert_eq!(plc_len(961), 960);
        assert_eq!(plc_len(0), 120);
        assert_eq!(plc_len(1_000_000), MAX_FRAME_SAMPLES);
    }
}
