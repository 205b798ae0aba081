//! The media half of a call: audio from a [`Source`] through a [`VoiceSession`] to the media
//! socket, and back to a [`Sink`], over the current [`MediaPath`].
//!
//! ```text
//!   every frame (20 ms):  Source::read -> VoiceProcessor::capture -> mute
//!                                      -> VoiceSession::push_capture -> path
//!                         VoiceSession::pull_playout -> volume -> VoiceProcessor::render
//!                                      -> Sink::write
//!                         VoiceSession::handle_timeout (RTCP)
//!   every datagram:       first byte (RFC 7983) -> RTP/RTCP: session
//!                                                -> ChannelData from the server: unwrap -> session
//!                                                -> STUN: not ours (traversal client, punch)
//! ```
//!
//! The path says where what we send goes: straight to the peer, or to the server as TURN
//! ChannelData (RFC 8656 section 12.4) on the call's channel with our relay token. Whatever the
//! path, media from the peer is accepted both ways, so switching paths never loses audio.
//!
//! Every packet is SRTP or SRTCP (RFC 7714, AES-128-GCM) under the call's end-to-end keys:
//! protected as it leaves the session, unprotected before the session sees it. Replayed,
//! forged and malformed packets are dropped and counted in the report.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media::audio::{AudioError, AudioEvent, LevelMeter, Sink, Source};
use media::processing::{ProcessingConfig, VoiceProcessor};
use media::srtp::{MasterKey, Srtp};
use media::voice::{CodecConfig, DatagramKind, FrameDuration, VoiceConfig, VoiceSession};
use serde::Serialize;
use traversal::channel::{self, Kind};

use super::echo_test::{EchoLatency, EchoMeter};
use super::{AudioSide, Security};
pub use traversal::phone::{CallSecurity, EndReason, MediaPath, PathKind};

/// The server's echo service: calls to it get the latency measure.
const ECHO: &str = "echo";

/// Settings of the media of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Audio per packet, in milliseconds: 10, 20 or 40.
    pub frame_ms: u32,
    /// Opus bitrate in bits per second.
    pub bitrate_bps: u32,
    /// Mean interval between RTCP reports (RTT and loss as the peer sees them).
    pub rtcp_interval: Duration,
    /// What is done to the captured sound before it is sent (all off: nothing, and no cost).
    /// Off by default here: the front ends turn it on from the settings for a microphone.
    pub processing: ProcessingConfig,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            frame_ms: 20,
            bitrate_bps: 32_000,
            rtcp_interval: Duration::from_secs(1),
            processing: ProcessingConfig::off(),
        }
    }
}

impl MediaConfig {
    /// The frame length.
    pub fn frame(&self) -> FrameDuration {
        match self.frame_ms {
            10 => FrameDuration::Ms10,
            40 => FrameDuration::Ms40,
            _ => FrameDuration::Ms20,
        }
    }
}

/// Statistics of the RTP stream, as the JSON report has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RtpReport {
    /// RTP packets sent.
    pub sent: u64,
    /// RTP packets received.
    pub received: u64,
    /// RTP packets lost (expected less received).
    pub lost: u64,
    /// Interarrival jitter (RFC 3550 A.8), milliseconds.
    pub jitter_ms: f64,
    /// Packets dropped as replays of packets already received (SRTP replay window).
    pub replayed: u64,
    /// Packets dropped because their authentication tag did not verify: tampered, or not
    /// sent by the peer.
    pub forged: u64,
    /// Datagrams dropped before decryption during the call: not from the peer's proven
    /// address nor the call's relay, or relay frames without our token.
    pub from_strangers: u64,
    /// Frames not sent because we were silent (DTX): no packet, and not a loss.
    pub dtx_frames: u64,
    /// Frames of comfort noise played while the peer was silent (its DTX): not a loss either.
    pub comfort_noise_frames: u64,
    /// Lost frames recovered from the next packet's FEC.
    pub fec_recovered: u64,
    /// Frames concealed (losses not recovered, late packets).
    pub concealed_frames: u64,
}

/// What hole punching sent and got in a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChecksReport {
    /// Checks sent (openers, periodic, triggered and consent).
    pub sent: u64,
    /// Of those, openers (TTL 2 and 3).
    pub openers: u64,
    /// Of those, to addresses the peer never answered from: what the call spent on probing.
    pub probes: u64,
    /// Checks of the peer received.
    pub received: u64,
    /// Birthday probing (one port-random NAT): spare sockets opened on the port-random side.
    pub spares: u64,
    /// Birthday probing: probes to random ports sent by the port-keeping side (counted in
    /// `sent`, not in `probes`).
    pub spray: u64,
}

impl From<traversal::punch::PunchStats> for ChecksReport {
    fn from(s: traversal::punch::PunchStats) -> Self {
        ChecksReport {
            sent: s.checks_sent,
            openers: s.openers_sent,
            probes: s.probes_sent,
            received: s.checks_received,
            spares: s.spares_opened,
            spray: s.spray_sent,
        }
    }
}

/// A call's figures: the `Stats` event every second, and the report when it ends (one JSON line
/// of `pinhole call` / `pinhole answer --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallReport {
    /// The other party's name (or address for a call without a server).
    pub peer: String,
    /// The path in use (at the end, for a report).
    pub path: PathKind,
    /// How the call sounds over the last seconds, in a word and a reason.
    pub quality: super::quality::CallQuality,
    /// The peer's address on the direct path in use (IPv4 or IPv6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_to: Option<std::net::SocketAddr>,
    /// How many times the media moved between relay and direct.
    pub path_changes: u32,
    /// From connected to the first move to a direct path; `None` if it never went direct.
    pub direct_after_ms: Option<u64>,
    /// The connectivity checks of the call (hole punching), once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksReport>,
    /// From placing (or receiving) the call to the first media packet received; `None` if none
    /// arrived.
    pub setup_ms: Option<u64>,
    /// From connected to now (or to the end).
    pub duration_s: f64,
    /// RTP counters.
    pub rtp: RtpReport,
    /// The end-to-end encryption of the media (the SRTP suite).
    pub e2e: &'static str,
    /// The short authentication string both people can compare (absent for `echo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sas: Option<String>,
    /// The peer's name key is not the one remembered from an earlier call.
    pub peer_key_changed: bool,
    /// Round-trip time from RTCP, once known.
    pub rtt_ms: Option<f64>,
    /// The audio the jitter buffer holds before it is played (its current delay), ms.
    pub jitter_buffer_ms: f64,
    /// Which parts of the capture processing ran.
    pub processing: ProcessingReport,
    /// Echo return loss enhancement over the last second, dB (echo cancellation on, once known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erle_db: Option<f64>,
    /// The delay from speaker to microphone the echo canceller found, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_delay_ms: Option<u32>,
    /// For a call to `echo`: mouth-to-ear latency, milliseconds (see
    /// [`super::echo_test`]), once measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_latency_ms: Option<f64>,
    /// For a call to `echo`: the latency's parts, once measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_latency: Option<EchoLatency>,
    /// Devices that vanished during the call and what the call moved to, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices_moved: Vec<DeviceMove>,
    /// How the call ended (`"hung_up"`, `"peer_hung_up"`, `"server_lost"`...); set in the
    /// report of [`super::Event::Ended`], absent while the call goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<EndReason>,
}

/// A device that vanished during a call, and the one the call uses since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMove {
    /// `"microphone"` or `"speaker"`.
    pub side: &'static str,
    /// The device that vanished, as it was named.
    pub from: String,
    /// The device in use since (the system default).
    pub to: String,
    /// What the audio layer said of the failure.
    pub reason: String,
}

/// Which parts of the capture processing ran (see [`media::processing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessingReport {
    /// Acoustic echo cancellation.
    pub echo_cancellation: bool,
    /// Noise suppression.
    pub noise_suppression: bool,
    /// Automatic gain control.
    pub gain_control: bool,
    /// The high-pass filter.
    pub high_pass: bool,
}

impl From<ProcessingConfig> for ProcessingReport {
    fn from(c: ProcessingConfig) -> Self {
        Self {
            echo_cancellation: c.echo_cancellation,
            noise_suppression: c.noise_suppression,
            gain_control: c.gain_control,
            high_pass: c.high_pass,
        }
    }
}

/// What a call's media starts from: who, where to, since when, and its keys.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The other party's name (or address for a call without a server).
    pub peer: String,
    /// Where media goes first.
    pub path: MediaPath,
    /// When the call was placed or received (for `setup_ms`).
    pub placed: Instant,
    /// The end-to-end keys.
    pub keys: CallSecurity,
    /// What the people are shown about them (for the report).
    pub security: Security,
}

/// One call's media: session, audio ends, path, encryption, counters.
#[derive(Debug)]
pub struct MediaCall {
    peer: String,
    session: VoiceSession,
    /// Encryption and the buffers of what goes out.
    wire: Wire,
    /// What came in, opened, before the session reads it.
    opened: Vec<u8>,
    security: Security,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    path: MediaPath,
    /// The relay of this call, whatever the current path: its frames are accepted always.
    relay: Option<(SocketAddr, u16)>,
    muted: bool,
    volume: f32,
    capture: Vec<f32>,
    playout: Vec<f32>,
    placed: Instant,
    connected: Instant,
    /// When the media first went direct.
    first_direct: Option<Instant>,
    /// Our reception over the last seconds, for [`CallReport::quality`].
    loss_window: super::quality::LossWindow,
    first_media: Option<Instant>,
    path_changes: u32,
    audio_errors: u64,
    dropped: u64,
    strangers: u64,
    finished: bool,
    /// For a call to `echo`: the latency measure (see [`super::echo_test`]).
    echo: Option<EchoMeter>,
    /// The capture processing; `None` when every part is off.
    processor: Option<Box<VoiceProcessor>>,
    /// Devices replaced after they failed (see [`MediaCall::replace_source`]).
    moves: Vec<DeviceMove>,
}

/// The call's SRTP contexts and the buffers of what goes out.
#[derive(Debug)]
struct Wire {
    srtp: Srtp,
    /// What the session wrote, sealed (SRTP), before it is framed for the path.
    sealed: Vec<u8>,
    /// The relay frame around it.
    scratch: Vec<u8>,
}

impl Wire {
    fn transport<'a>(
        &'a mut self,
        socket: &'a tokio::net::UdpSocket,
        path: MediaPath,
    ) -> PathTransport<'a> {
        PathTransport {
            socket,
            path,
            srtp: &mut self.srtp,
            sealed: &mut self.sealed,
            scratch: &mut self.scratch,
        }
    }
}

/// Seals what the session gives it and sends it over the current path, without blocking: a
/// full socket buffer is a lost packet, as on the wire.
struct PathTransport<'a> {
    socket: &'a tokio::net::UdpSocket,
    path: MediaPath,
    srtp: &'a mut Srtp,
    sealed: &'a mut Vec<u8>,
    scratch: &'a mut Vec<u8>,
}

impl media::voice::Transport for PathTransport<'_> {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.srtp
            .protect(datagram, self.sealed)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match self.path {
            MediaPath::Direct(to) => {
                traversal::media_socket::try_send_to(self.socket, self.sealed, to, None).map(|_| ())
            }
            MediaPath::Relay {
                server,
                channel,
                token,
            } => {
                self.scratch.clear();
                channel::encode_relay_into(channel, token, self.sealed, self.scratch)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                traversal::media_socket::try_send_to(self.socket, self.scratch, server, None)
                    .map(|_| ())
            }
        }
    }
}

fn master_key(key: &traversal::phone::MediaKey) -> MasterKey {
    MasterKey {
        key: key.key,
        salt: key.salt,
    }
}

impl MediaCall {
    /// Media for the call `setup` describes, from `now`.
    pub fn new(
        setup: CallSetup,
        config: MediaConfig,
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
        now: Instant,
    ) -> Result<Self, super::EngineError> {
        let CallSetup {
            peer,
            path,
            placed,
            keys,
            security,
        } = setup;
        let voice = VoiceConfig {
            codec: CodecConfig {
                frame: config.frame(),
                bitrate_bps: config.bitrate_bps,
                ..CodecConfig::default()
            },
            rtcp_interval: config.rtcp_interval,
            ..VoiceConfig::default()
        };
        let frame = voice.codec.frame.samples();
        let session = VoiceSession::new(voice, now, &mut rand::rng())?;
        let srtp = Srtp::new(&master_key(&keys.tx), &master_key(&keys.rx))?;
        let echo = peer.eq_ignore_ascii_case(ECHO).then(EchoMeter::new);
        let relay = match path {
            MediaPath::Relay {
                server, channel, ..
            } => Some((server, channel)),
            MediaPath::Direct(_) => None,
        };
        Ok(Self {
            peer,
            session,
            wire: Wire {
                srtp,
                sealed: Vec::with_capacity(1600),
                scratch: Vec::with_capacity(1600),
            },
            opened: Vec::with_capacity(1600),
            security,
            source,
            sink,
            path,
            relay,
            muted: false,
            volume: 1.0,
            capture: vec![0.0; frame],
            playout: vec![0.0; frame],
            placed,
            connected: now,
            first_direct: None,
            loss_window: super::quality::LossWindow::default(),
            first_media: None,
            path_changes: 0,
            audio_errors: 0,
            dropped: 0,
            strangers: 0,
            finished: false,
            echo,
            processor: (!config.processing.is_off())
                .then(|| Box::new(VoiceProcessor::new(config.processing))),
            moves: Vec::new(),
        })
    }

    /// The frame period: how often [`MediaCall::tick`] runs.
    pub fn frame_period(&self) -> Duration {
        self.session.config().codec.frame.duration()
    }

    /// The path in use.
    pub fn path(&self) -> MediaPath {
        self.path
    }

    /// Moves the media to `path` at `now`; true when that is a change (counted in
    /// `path_changes`).
    pub fn set_path(&mut self, now: Instant, path: MediaPath) -> bool {
        if path.kind() == PathKind::Direct && self.first_direct.is_none() {
            self.first_direct = Some(now);
        }
        if let MediaPath::Relay {
            server, channel, ..
        } = path
        {
            self.relay = Some((server, channel));
        }
        if path == self.path {
            return false;
        }
        if path.kind() != self.path.kind() {
            self.path_changes += 1;
        }
        tracing::info!(from = ?self.path, to = ?path, "media path changed");
        self.path = path;
        true
    }

    /// Sets the relay this call's frames come from (and go to when on the relay).
    pub fn set_relay(&mut self, server: SocketAddr, channel: u16) {
        self.relay = Some((server, channel));
    }

    /// Mutes or unmutes what we send (silence goes out, so the stream's timing holds).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Output volume, 0.0 to 2.0 (1.0 unchanged).
    pub fn set_volume(&mut self, volume: f32) {
        self.volume = if volume.is_finite() {
            volume.clamp(0.0, 2.0)
        } else {
            1.0
        };
    }

    /// The next event of the microphone or the speaker (a device that failed), if any; call it
    /// after each [`MediaCall::tick`].
    pub fn poll_audio_event(&mut self) -> Option<(AudioSide, AudioEvent)> {
        if let Some(event) = self.source.poll_event() {
            return Some((AudioSide::Microphone, event));
        }
        self.sink
            .poll_event()
            .map(|event| (AudioSide::Speaker, event))
    }

    /// Puts the call's devices in, once open at `now` (the media runs on silence until then;
    /// the call's duration counts from here, as the front end saw it connect); not a move of a
    /// failed device.
    pub fn set_devices(&mut self, source: Box<dyn Source>, sink: Box<dyn Sink>, now: Instant) {
        self.source = source;
        self.sink = sink;
        self.connected = now;
    }

    /// Takes the microphone out of the call (silence is sent until
    /// [`MediaCall::replace_source`]), to release a failed device before another opens.
    pub fn take_source(&mut self) -> Box<dyn Source> {
        std::mem::replace(&mut self.source, Box::new(media::audio::SilenceSource))
    }

    /// Takes the speaker out of the call (what arrives is dropped until
    /// [`MediaCall::replace_sink`]), to release a failed device before another opens.
    pub fn take_sink(&mut self) -> Box<dyn Sink> {
        std::mem::replace(&mut self.sink, Box::new(media::audio::NullSink::new()))
    }

    /// Puts `source` in place of the microphone that failed (named `from`, for `reason`); the
    /// move is in the report. The next frame reads the new one.
    pub fn replace_source(&mut self, source: Box<dyn Source>, moved: DeviceMove) {
        tracing::info!(from = moved.from, to = moved.to, "microphone replaced");
        self.source = source;
        self.moves.push(moved);
    }

    /// Puts `sink` in place of the speaker that failed; the move is in the report.
    pub fn replace_sink(&mut self, sink: Box<dyn Sink>, moved: DeviceMove) {
        tracing::info!(from = moved.from, to = moved.to, "speaker replaced");
        self.sink = sink;
        self.moves.push(moved);
    }

    /// Devices moved so far.
    pub fn devices_moved(&self) -> usize {
        self.moves.len()
    }

    /// Level of what we capture (the GUI's input meter).
    pub fn input_meter(&self) -> LevelMeter {
        self.source.meter()
    }

    /// Level of what we play (the GUI's output meter).
    pub fn output_meter(&self) -> LevelMeter {
        self.sink.meter()
    }

    /// One frame: capture, send, play, RTCP. Audio errors are counted and returned (the call
    /// goes on).
    pub fn tick(&mut self, now: Instant, socket: &tokio::net::UdpSocket) -> Result<(), AudioError> {
        let mut result = Ok(());
        let mut transport = self.wire.transport(socket, self.path);
        match self.source.read(&mut self.capture) {
            Ok(_) => {}
            Err(e) => {
                self.capture.fill(0.0);
                self.audio_errors += 1;
                result = Err(e);
            }
        }
        // Processed before the mute, so the echo canceller keeps following the room.
        if let Some(processor) = &mut self.processor {
            processor.capture(&mut self.capture);
        }
        if self.muted {
            self.capture.fill(0.0);
        }
        self.session
            .push_capture(now, &self.capture, &mut transport);
        self.session.pull_playout(now, &mut self.playout);
        if self.volume != 1.0 {
            for s in &mut self.playout {
                *s = (*s * self.volume).clamp(-1.0, 1.0);
            }
        }
        if !self.finished {
            // The canceller's reference is exactly what the speaker is given.
            if let Some(processor) = &mut self.processor {
                processor.render(&self.playout);
            }
            if let Err(e) = self.sink.write(&self.playout) {
                self.audio_errors += 1;
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        if let Some(echo) = &mut self.echo {
            echo.set_buffered(self.session.stats().jitter_buffer_delay);
            echo.record(&self.capture, &self.playout);
        }
        self.session.handle_timeout(now, &mut transport);
        result
    }

    /// For a call to `echo`: the mouth-to-ear latency and its parts, once measured.
    pub fn echo_latency(&self) -> Option<EchoLatency> {
        let (path, correlation) = self.echo.as_ref()?.path()?;
        let ms = |d: Duration| round3(d.as_secs_f64() * 1000.0);
        // What the devices buffer (none for tones, files and the null sink).
        let capture_ms = self.source.latency().map_or(0.0, ms);
        let playback_ms = self.sink.latency().map_or(0.0, ms);
        let path_ms = ms(path);
        Some(EchoLatency {
            mouth_to_ear_ms: round3(capture_ms + path_ms + playback_ms),
            path_ms,
            capture_ms,
            playback_ms,
            correlation: round3(correlation),
        })
    }

    /// A datagram on the media socket. Returns false when it is not media of this call (STUN,
    /// for the traversal client or the connectivity checks; or something to drop).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        match channel::classify(datagram) {
            Kind::Rtp => {
                self.handle_media(now, datagram);
                true
            }
            Kind::ChannelData => {
                match (self.relay, channel::decode_relay(datagram)) {
                    (Some((server, channel)), Ok(frame))
                        if frame.channel == channel && same_addr(from, server) =>
                    {
                        self.handle_media(now, frame.media);
                    }
                    _ => self.dropped += 1,
                }
                true
            }
            Kind::Stun => false,
            Kind::Unknown => {
                self.dropped += 1;
                true
            }
        }
    }

    /// A datagram the phone dropped during the call (see [`RtpReport::from_strangers`]).
    pub fn count_stranger(&mut self) {
        self.strangers += 1;
    }

    /// SRTP or SRTCP of this call, already told apart from everything else on the media socket
    /// (by the phone: [`traversal::phone::Received::Media`]): opened, then played. What does
    /// not open (replayed, forged, malformed) is dropped and counted.
    pub fn handle_media(&mut self, now: Instant, datagram: &[u8]) {
        if let Err(e) = self.wire.srtp.unprotect(datagram, &mut self.opened) {
            tracing::trace!("media dropped: {e}");
            return;
        }
        let kind = self.session.handle_datagram(now, &self.opened);
        if kind == DatagramKind::Rtp && self.first_media.is_none() {
            self.first_media = Some(now);
            tracing::info!(
                setup_ms = now.saturating_duration_since(self.placed).as_millis() as u64,
                "first media from the peer"
            );
        }
    }

    /// Samples what was received and lost so far (about once a second), for the quality.
    /// Packets that did not decrypt count as lost: a call where nothing decrypts is not good.
    pub fn sample_quality(&mut self, now: Instant) {
        let stats = self.session.stats();
        let forged = self.wire.srtp.stats().forged;
        self.loss_window
            .sample(now, stats.received.packets, stats.received.lost + forged);
    }

    /// The call's figures now.
    pub fn report(&self, now: Instant) -> CallReport {
        let stats = self.session.stats();
        let srtp = self.wire.srtp.stats();
        let echo_latency = self.echo_latency();
        let (processing, processed) = match &self.processor {
            Some(p) => (p.config().into(), p.stats()),
            None => (ProcessingReport::default(), Default::default()),
        };
        CallReport {
            peer: self.peer.clone(),
            path: self.path.kind(),
            quality: super::quality::CallQuality::assess(
                self.loss_window.loss_percent(),
                stats.remote.map(|r| f64::from(r.fraction_lost_percent)),
                stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
            ),
            direct_to: self.path.remote(),
            path_changes: self.path_changes,
            direct_after_ms: self
                .first_direct
                .map(|t| t.saturating_duration_since(self.connected).as_millis() as u64),
            checks: None,
            setup_ms: self
                .first_media
                .map(|t| t.saturating_duration_since(self.placed).as_millis() as u64),
            duration_s: round3(now.saturating_duration_since(self.connected).as_secs_f64()),
            rtp: RtpReport {
                sent: stats.sent.packets,
                received: stats.received.packets,
                lost: stats.received.lost,
                jitter_ms: round3(stats.received.jitter.as_secs_f64() * 1000.0),
                replayed: srtp.replayed,
                forged: srtp.forged,
                from_strangers: self.strangers + self.dropped,
                dtx_frames: stats.sent.dtx_frames,
                comfort_noise_frames: stats.received.comfort_noise_frames,
                fec_recovered: stats.received.fec_recovered,
                concealed_frames: stats.received.concealed_frames,
            },
            e2e: self.security.suite,
            sas: self.security.sas.clone(),
            peer_key_changed: self
                .security
                .key_check
                .as_ref()
                .is_some_and(|c| c.is_changed()),
            rtt_ms: stats.rtt.map(|d| round3(d.as_secs_f64() * 1000.0)),
            jitter_buffer_ms: round3(stats.jitter_buffer_delay.as_secs_f64() * 1000.0),
            processing,
            erle_db: processed.erle_db.map(|db| round3(f64::from(db))),
            echo_delay_ms: processed.echo_delay_ms,
            echo_latency_ms: echo_latency.map(|e| e.mouth_to_ear_ms),
            echo_latency,
            devices_moved: self.moves.clone(),
            end: None,
        }
    }

    /// Ends the media: RTCP BYE to the peer, and the sink finalised (a WAV file's header).
    pub fn finish(
        &mut self,
        now: Instant,
        socket: &tokio::net::UdpSocket,
    ) -> Result<(), AudioError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let mut transport = self.wire.transport(socket, self.path);
        self.session.close(now, &mut transport);
        self.sink.finish()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Two addresses are the same endpoint (an IPv4-mapped IPv6 address equals its IPv4 form).
pub fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && traversal::addr::normalize(a.ip()) == traversal::addr::normalize(b.ip())
}
