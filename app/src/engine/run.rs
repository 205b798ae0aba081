//! The engine's thread: one tokio task that owns the control connection, the media socket and
//! the clock, and drives the traversal client, the call signalling, the connectivity checks and
//! the media of the call in progress.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ed25519_dalek::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Interval, MissedTickBehavior};
use traversal::calls::registration_message;
use traversal::channel::{self, Kind};
use traversal::client::{self, Client, Socket};
use traversal::control::{
    self, ClientMessage, EndReason as WireReason, FrameDecoder, ServerMessage,
};
use traversal::punch::{Punch, PunchConfig, PunchEvent};

use super::media::{MediaCall, MediaPath, same_addr};
use super::{Command, EndReason, EngineConfig, Event, Notify};

/// Most candidates offered in a call (docs/calls.md: at most 8, the mapped one included).
const MAX_CANDIDATES: usize = 8;
/// How long an accepted call may wait for `Connected`.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to the control connection may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between attempts to reach a lost server.
const RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connected call with nothing from the peer for this long has lost it.
const PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Name-registration errors that stop the engine.
const FATAL_CODES: [&str; 4] = ["name_taken", "bad_signature", "bad_name", "already_online"];

/// Events to the front end, and its wake-up.
#[derive(Clone)]
struct EventTx {
    tx: mpsc::Sender<Event>,
    notify: Option<Notify>,
}

impl EventTx {
    fn send(&self, event: Event) {
        tracing::debug!(?event, "engine event");
        let _ = self.tx.send(event);
        if let Some(notify) = &self.notify {
            notify();
        }
    }
}

/// The thread's body.
pub(super) fn run(
    config: EngineConfig,
    commands: UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let tx = EventTx {
        tx: events,
        notify: config.notify.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tx.send(Event::Stopped {
                error: Some(format!("cannot start the engine: {e}")),
            });
            return;
        }
    };
    let events = tx.clone();
    let error = runtime.block_on(async move {
        match Runner::connect(config, events).await {
            Ok(runner) => runner.run(commands).await,
            Err(e) => Some(e),
        }
    });
    tx.send(Event::Stopped { error });
}

/// The call in progress, if any.
#[derive(Debug)]
enum Call {
    Idle,
    /// We called; waiting for the answer.
    Placing {
        call_id: u64,
        peer: String,
        placed: Instant,
        deadline: Instant,
    },
    /// Someone calls us; waiting for the user.
    Ringing {
        call_id: u64,
        peer: String,
        placed: Instant,
    },
    /// We accepted; waiting for `Connected`.
    Accepting {
        call_id: u64,
        peer: String,
        placed: Instant,
        deadline: Instant,
    },
    /// Media flows.
    Up {
        call_id: u64,
        channel: u16,
        media: Box<MediaCall>,
        punch: Option<Box<Punch>>,
    },
}

impl Call {
    fn id(&self) -> Option<u64> {
        match self {
            Call::Idle => None,
            Call::Placing { call_id, .. }
            | Call::Ringing { call_id, .. }
            | Call::Accepting { call_id, .. }
            | Call::Up { call_id, .. } => Some(*call_id),
        }
    }
}

struct Runner {
    config: EngineConfig,
    events: EventTx,
    tcp: TcpStream,
    tcp_open: bool,
    tcp_out: Vec<u8>,
    socket: UdpSocket,
    server: SocketAddr,
    client: Client,
    decoder: FrameDecoder,
    host_candidates: Vec<SocketAddr>,
    name_registered: bool,
    announced: bool,
    /// Registered at least once: a lost server is then connected again, not fatal.
    ever_announced: bool,
    /// The server was lost (after registering): reconnect.
    lost: Option<String>,
    register_deadline: Instant,
    call: Call,
    frame_tick: Option<Interval>,
    stats_tick: Option<Interval>,
    muted: bool,
    volume: f32,
    audio_error_reported: bool,
    stopping: bool,
    fatal: Option<String>,
}

fn random_u64() -> u64 {
    rand::Rng::next_u64(&mut rand::rng())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

fn wire_reason(reason: WireReason) -> EndReason {
    match reason {
        WireReason::HungUp => EndReason::HungUp,
        WireReason::Cancelled => EndReason::Cancelled,
        WireReason::Rejected => EndReason::Rejected,
        WireReason::Busy => EndReason::Busy,
        WireReason::Offline => EndReason::Offline,
        WireReason::NoAnswer => EndReason::NoAnswer,
        WireReason::PeerLost => EndReason::PeerLost,
        WireReason::ServerError => EndReason::ServerError,
        WireReason::RelayLimit => EndReason::RelayLimit,
    }
}

impl Runner {
    async fn connect(config: EngineConfig, events: EventTx) -> Result<Self, String> {
        let (tcp, server) = open_control(&config).await?;
        let bind = match server {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], config.udp_port)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], config.udp_port)),
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("cannot bind the media socket to {bind}: {e}"))?;
        let (client, host_candidates) = start_client(&config, &tcp, server, &socket)?;
        let now = Instant::now();
        Ok(Self {
            register_deadline: now + config.connect_timeout * 2,
            client,
            events,
            tcp,
            tcp_open: true,
            tcp_out: Vec::new(),
            socket,
            server,
            decoder: FrameDecoder::new(),
            host_candidates,
            name_registered: false,
            announced: false,
            ever_announced: false,
            lost: None,
            call: Call::Idle,
            frame_tick: None,
            stats_tick: None,
            muted: false,
            volume: 1.0,
            audio_error_reported: false,
            stopping: false,
            fatal: None,
            config,
        })
    }

    /// After the server was lost: ends the call, then connects and registers again, with
    /// back-off, until it works or the engine is shut down.
    async fn reconnect(&mut self, reason: String, commands: &mut UnboundedReceiver<Command>) {
        let now = Instant::now();
        if self.call.id().is_some() {
            self.end_call(now, EndReason::ServerError);
        }
        self.events
            .send(Event::Error(format!("{reason}; connecting again")));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.tcp.shutdown()).await;
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    command = commands.recv() => match command {
                        None | Some(Command::Shutdown) => {
                            self.stopping = true;
                            return;
                        }
                        Some(Command::Mute(m)) => self.muted = m,
                        Some(Command::Volume(v)) => self.volume = v,
                        Some(_) => self.events.send(Event::Error(
                            "not connected to the server; connecting again".into(),
                        )),
                    },
                }
            }
            backoff = (backoff * 2).min(RECONNECT_MAX_BACKOFF);
            let attempt = async {
                let (tcp, server) = open_control(&self.config).await?;
                let (client, host_candidates) =
                    start_client(&self.config, &tcp, server, &self.socket)?;
                Ok::<_, String>((tcp, server, client, host_candidates))
            };
            match attempt.await {
                Ok((tcp, server, client, host_candidates)) => {
                    tracing::info!(%server, "connected to the server again");
                    self.tcp = tcp;
                    self.tcp_open = true;
                    self.tcp_out.clear();
                    self.server = server;
                    self.client = client;
                    self.host_candidates = host_candidates;
                    self.decoder = FrameDecoder::new();
                    self.name_registered = false;
                    self.announced = false;
                    self.register_deadline = Instant::now() + self.config.connect_timeout * 2;
                    return;
                }
                Err(e) => tracing::info!("server still unreachable: {e}"),
            }
        }
    }

    /// Runs until shut down or stopped by an error; returns the error.
    async fn run(mut self, mut commands: UnboundedReceiver<Command>) -> Option<String> {
        let mut tcp_buf = vec![0u8; 16 * 1024];
        let mut udp_buf = vec![0u8; 2048];
        loop {
            self.flush().await;
            if let Some(reason) = self.lost.take()
                && self.fatal.is_none()
                && !self.stopping
            {
                self.reconnect(reason, &mut commands).await;
                continue;
            }
            if self.stopping || self.fatal.is_some() {
                break;
            }
            let deadline = self.next_deadline();
            let tcp_open = self.tcp_open;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(Instant::now(), command),
                    None => self.stopping = true,
                },
                read = self.tcp.read(&mut tcp_buf), if tcp_open => {
                    let now = Instant::now();
                    match read {
                        Ok(0) | Err(_) => {
                            self.tcp_open = false;
                            self.client.handle_tcp_closed(now);
                        }
                        Ok(n) => self.handle_tcp(now, &tcp_buf[..n]),
                    }
                }
                received = self.socket.recv_from(&mut udp_buf) => {
                    // ICMP errors from earlier sends surface here: not fatal.
                    if let Ok((n, from)) = received {
                        self.handle_udp(Instant::now(), from, &udp_buf[..n]);
                    }
                }
                _ = tick(&mut self.frame_tick) => self.handle_frame(Instant::now()),
                _ = tick(&mut self.stats_tick) => self.handle_second(Instant::now()),
                () = sleep_until(deadline) => self.handle_timeout(Instant::now()),
            }
        }
        self.shut_down().await;
        self.fatal.take()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.client.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if !self.announced {
            consider(Some(self.register_deadline));
        }
        match &self.call {
            Call::Placing { deadline, .. } | Call::Accepting { deadline, .. } => {
                consider(Some(*deadline));
            }
            Call::Up {
                punch: Some(punch), ..
            } => consider(punch.poll_timeout()),
            _ => {}
        }
        next
    }

    async fn shut_down(&mut self) {
        let now = Instant::now();
        let reason = if self.fatal.is_some() {
            EndReason::ServerError
        } else {
            EndReason::HungUp
        };
        self.hang_up(now, reason);
        self.client.close();
        self.flush_io().await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.tcp.shutdown()).await;
    }

    /// Writes and sends what the state machines queued, and handles their events, until
    /// nothing is left.
    async fn flush(&mut self) {
        loop {
            self.flush_io().await;
            let mut progressed = false;
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                self.handle_client_event(event);
            }
            let mut punch_events = Vec::new();
            if let Call::Up {
                punch: Some(punch), ..
            } = &mut self.call
            {
                while let Some(e) = punch.poll_event() {
                    punch_events.push(e);
                }
            }
            for e in punch_events {
                progressed = true;
                self.handle_punch_event(e);
            }
            if !progressed {
                return;
            }
        }
    }

    async fn flush_io(&mut self) {
        while let Some(bytes) = self.client.poll_tcp() {
            self.tcp_out.extend_from_slice(&bytes);
        }
        if !self.tcp_out.is_empty() {
            let bytes = std::mem::take(&mut self.tcp_out);
            if self.tcp_open {
                let written = tokio::time::timeout(WRITE_TIMEOUT, self.tcp.write_all(&bytes)).await;
                if !matches!(written, Ok(Ok(()))) {
                    self.tcp_open = false;
                    self.client.handle_tcp_closed(Instant::now());
                }
            }
        }
        while let Some(t) = self.client.poll_transmit() {
            if t.socket == Socket::Media
                && let Err(e) = self.socket.try_send_to(&t.contents, t.destination)
            {
                tracing::debug!(to = %t.destination, "UDP send: {e}");
            }
        }
        if let Call::Up {
            punch: Some(punch), ..
        } = &mut self.call
        {
            while let Some((to, bytes)) = punch.poll_transmit() {
                if let Err(e) = self.socket.try_send_to(&bytes, to) {
                    tracing::debug!(%to, "check not sent: {e}");
                }
            }
        }
    }

    fn send_tcp(&mut self, message: &ClientMessage) {
        self.tcp_out.extend(control::encode(message));
    }

    fn fail(&mut self, message: String) {
        tracing::warn!("{message}");
        if self.fatal.is_none() {
            self.fatal = Some(message);
        }
    }

    fn handle_client_event(&mut self, event: client::Event) {
        match event {
            client::Event::Registered { mapped, .. } => {
                tracing::info!(%mapped, "media socket registered");
                self.maybe_announce();
            }
            client::Event::Failed { reason } => {
                if self.ever_announced {
                    tracing::warn!("lost the server: {reason}");
                    self.lost = Some(format!("lost the server: {reason}"));
                } else {
                    self.fail(format!("server unreachable: {reason}"));
                }
            }
            other => tracing::debug!(event = ?other, "traversal client"),
        }
    }

    fn maybe_announce(&mut self) {
        if self.announced || !self.name_registered {
            return;
        }
        if let Some(mapped) = self.client.mapped()
            && self.client.is_registered()
        {
            self.announced = true;
            self.ever_announced = true;
            self.events.send(Event::Registered {
                name: self.config.name.clone(),
                mapped,
                verdict: self.client.verdict(),
            });
        }
    }

    /// Bytes from the control connection. Each frame goes to the traversal client when it is
    /// one of its messages, and to the signalling when it is a call message: the two share the
    /// stream, and neither sees what it does not know.
    fn handle_tcp(&mut self, now: Instant, bytes: &[u8]) {
        if let Err(e) = self.decoder.push(bytes) {
            self.fail(format!("control connection: {e}"));
            return;
        }
        loop {
            let message = match self.decoder.next_message::<ServerMessage>() {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(e) => {
                    self.fail(format!("control connection: {e}"));
                    return;
                }
            };
            match message {
                ServerMessage::Welcome { ref challenge, .. } => {
                    let challenge = challenge.clone();
                    self.client.handle_message(now, message);
                    self.handle_welcome(&challenge);
                }
                ServerMessage::UdpSeen { .. }
                | ServerMessage::ProbeSent { .. }
                | ServerMessage::ProbeFailed { .. }
                | ServerMessage::Pong { .. } => self.client.handle_message(now, message),
                other => self.handle_server(now, other),
            }
        }
    }

    fn candidates(&self) -> Vec<SocketAddr> {
        let mut out = self.host_candidates.clone();
        if let Some(mapped) = self.client.mapped()
            && !out.contains(&mapped)
        {
            out.truncate(MAX_CANDIDATES - 1);
            out.push(mapped);
        }
        out.truncate(MAX_CANDIDATES);
        out
    }

    /// Claims the name with the key over the connection's challenge.
    fn handle_welcome(&mut self, challenge: &str) {
        let Some(challenge) = unhex(challenge).filter(|c| !c.is_empty()) else {
            self.fail(
                "the server sent no registration challenge; does it have the call service?".into(),
            );
            return;
        };
        let name = self.config.name.clone();
        let signature = self
            .config
            .key
            .sign(&registration_message(&name, &challenge));
        let public_key = hex(self.config.key.verifying_key().as_bytes());
        self.send_tcp(&ClientMessage::Register {
            name,
            public_key,
            signature: hex(&signature.to_bytes()),
        });
    }

    fn handle_server(&mut self, now: Instant, message: ServerMessage) {
        match message {
            ServerMessage::Registered { name } => {
                tracing::info!(name, "name registered");
                self.name_registered = true;
                self.maybe_announce();
            }
            ServerMessage::Error { code, message } => {
                if !self.name_registered && FATAL_CODES.contains(&code.as_str()) {
                    self.fail(format!(
                        "cannot register {:?}: {message} ({code})",
                        self.config.name
                    ));
                } else if !self.name_registered {
                    // Anything refused before the name is ours is the registration.
                    self.fail(format!(
                        "the server refused to register {:?}: {message} ({code}); does it \
                         have the call service?",
                        self.config.name
                    ));
                } else {
                    self.events
                        .send(Event::Error(format!("server: {message} ({code})")));
                }
            }
            ServerMessage::Incoming {
                call_id,
                from,
                candidates,
            } => {
                if !matches!(self.call, Call::Idle) {
                    self.send_tcp(&ClientMessage::Reject {
                        call_id,
                        reason: WireReason::Busy,
                    });
                    return;
                }
                tracing::info!(call_id, from, ?candidates, "incoming call");
                self.call = Call::Ringing {
                    call_id,
                    peer: from.clone(),
                    placed: now,
                };
                self.send_tcp(&ClientMessage::Ringing { call_id });
                self.events.send(Event::Incoming { from });
            }
            ServerMessage::Ringing { call_id } => {
                if let Call::Placing {
                    call_id: id, peer, ..
                } = &self.call
                    && *id == call_id
                {
                    let peer = peer.clone();
                    self.events.send(Event::Ringing { peer });
                }
            }
            ServerMessage::Connected {
                call_id,
                candidates,
                secret,
                channel,
            } => self.handle_connected(now, call_id, candidates, &secret, channel),
            ServerMessage::Ended { call_id, reason } => {
                if self.call.id() == Some(call_id) {
                    self.end_call(now, wire_reason(reason));
                }
            }
            _ => {}
        }
    }

    fn handle_connected(
        &mut self,
        now: Instant,
        call_id: u64,
        candidates: Vec<SocketAddr>,
        secret: &str,
        channel: u16,
    ) {
        let (peer, placed) = match &self.call {
            Call::Placing {
                call_id: id,
                peer,
                placed,
                ..
            }
            | Call::Accepting {
                call_id: id,
                peer,
                placed,
                ..
            } if *id == call_id => (peer.clone(), *placed),
            _ => {
                tracing::debug!(call_id, "Connected for no call of ours");
                return;
            }
        };
        let relay = MediaPath::Relay {
            server: self.server,
            channel,
        };
        let opened = self
            .config
            .input
            .open()
            .and_then(|source| Ok((source, self.config.output.open()?)));
        let media = opened
            .map_err(|e| e.to_string())
            .and_then(|(source, sink)| {
                MediaCall::new(
                    peer.clone(),
                    self.config.media,
                    source,
                    sink,
                    relay,
                    placed,
                    now,
                )
                .map_err(|e| e.to_string())
            });
        let mut media = match media {
            Ok(media) => Box::new(media),
            Err(e) => {
                self.events.send(Event::Error(format!("audio: {e}")));
                self.send_tcp(&ClientMessage::HangUp { call_id });
                self.end_call(now, EndReason::LocalError);
                return;
            }
        };
        media.set_muted(self.muted);
        media.set_volume(self.volume);
        let punch = match unhex(secret) {
            Some(secret) if !candidates.is_empty() => Some(Box::new(Punch::new(
                PunchConfig::new(secret, call_id, candidates.clone(), random_u64()),
                now,
            ))),
            _ => None,
        };
        tracing::info!(call_id, peer, channel, ?candidates, "call connected");
        let period = media.frame_period();
        let mut frame_tick = tokio::time::interval(period);
        frame_tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        self.frame_tick = Some(frame_tick);
        let second = Duration::from_secs(1);
        let mut stats_tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
        stats_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.stats_tick = Some(stats_tick);
        self.events.send(Event::Connected {
            peer,
            input_meter: media.input_meter(),
            output_meter: media.output_meter(),
        });
        self.audio_error_reported = false;
        self.call = Call::Up {
            call_id,
            channel,
            media,
            punch,
        };
    }

    fn handle_punch_event(&mut self, event: PunchEvent) {
        let server = self.server;
        let Call::Up { media, channel, .. } = &mut self.call else {
            return;
        };
        let (path, remote) = match event {
            PunchEvent::DirectPath(addr) => (MediaPath::Direct(addr), Some(addr)),
            PunchEvent::DirectLost(_) => (
                MediaPath::Relay {
                    server,
                    channel: *channel,
                },
                None,
            ),
            // This interim loop ends calls through the server only.
            PunchEvent::PeerHungUp => return,
        };
        if media.set_path(path) {
            self.events.send(Event::PathChanged {
                path: path.kind(),
                remote,
            });
        }
    }

    fn handle_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match channel::classify(bytes) {
            Kind::Stun if same_addr(from, self.server) => {
                self.client.handle_udp(now, Socket::Media, from, bytes);
            }
            Kind::Stun => {
                if let Call::Up {
                    punch: Some(punch), ..
                } = &mut self.call
                {
                    punch.handle_datagram(now, from, bytes);
                }
            }
            Kind::Rtp | Kind::ChannelData => {
                if let Call::Up { media, .. } = &mut self.call {
                    media.handle_datagram(now, from, bytes);
                }
            }
            Kind::Unknown => tracing::trace!(%from, "dropped a datagram of unknown kind"),
        }
    }

    fn handle_frame(&mut self, now: Instant) {
        let Call::Up { media, .. } = &mut self.call else {
            return;
        };
        if let Err(e) = media.tick(now, &self.socket)
            && !self.audio_error_reported
        {
            self.audio_error_reported = true;
            self.events.send(Event::Error(format!("audio: {e}")));
        }
    }

    /// Every second of a call: statistics, and the peer's silence.
    fn handle_second(&mut self, now: Instant) {
        let Call::Up { media, call_id, .. } = &self.call else {
            return;
        };
        self.events.send(Event::Stats(media.report(now)));
        if media.silent_for(now) >= PEER_SILENCE_TIMEOUT {
            let call_id = *call_id;
            tracing::warn!("nothing from the peer for {PEER_SILENCE_TIMEOUT:?}: hanging up");
            self.send_tcp(&ClientMessage::HangUp { call_id });
            self.end_call(now, EndReason::PeerLost);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        if !self.announced && now >= self.register_deadline && self.ever_announced {
            self.lost = Some("the server did not register us again".into());
        } else if !self.announced && now >= self.register_deadline {
            let what = if self.client.is_registered() {
                "the server did not confirm the name"
            } else {
                "no registration"
            };
            self.fail(format!(
                "server unreachable: {what} within {:?}",
                self.config.connect_timeout * 2
            ));
        }
        match &mut self.call {
            Call::Placing {
                call_id, deadline, ..
            } if now >= *deadline => {
                let call_id = *call_id;
                self.send_tcp(&ClientMessage::HangUp { call_id });
                self.end_call(now, EndReason::NoAnswer);
            }
            Call::Accepting { deadline, .. } if now >= *deadline => {
                self.end_call(now, EndReason::ServerError);
            }
            Call::Up {
                punch: Some(punch), ..
            } => punch.handle_timeout(now),
            _ => {}
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        tracing::debug!(?command, "command");
        match command {
            Command::Call(peer) => {
                if !self.announced {
                    self.events
                        .send(Event::Error("not registered with the server yet".into()));
                    return;
                }
                if !matches!(self.call, Call::Idle) {
                    self.events
                        .send(Event::Error("already in a call; hang up first".into()));
                    return;
                }
                let call_id = random_u64();
                let candidates = self.candidates();
                tracing::info!(call_id, peer, ?candidates, "placing a call");
                self.send_tcp(&ClientMessage::Call {
                    call_id,
                    to: peer.clone(),
                    candidates,
                });
                self.call = Call::Placing {
                    call_id,
                    peer,
                    placed: now,
                    deadline: now + self.config.call_timeout,
                };
            }
            Command::Accept => {
                if let Call::Ringing {
                    call_id,
                    peer,
                    placed,
                } = std::mem::replace(&mut self.call, Call::Idle)
                {
                    let candidates = self.candidates();
                    self.send_tcp(&ClientMessage::Accept {
                        call_id,
                        candidates,
                    });
                    self.call = Call::Accepting {
                        call_id,
                        peer,
                        placed,
                        deadline: now + ACCEPT_TIMEOUT,
                    };
                } else {
                    self.events.send(Event::Error("no call to accept".into()));
                }
            }
            Command::Reject => {
                if let Call::Ringing { call_id, .. } = self.call {
                    self.send_tcp(&ClientMessage::Reject {
                        call_id,
                        reason: WireReason::Rejected,
                    });
                    self.end_call(now, EndReason::Rejected);
                }
            }
            Command::HangUp => self.hang_up(now, EndReason::HungUp),
            Command::Mute(muted) => {
                self.muted = muted;
                if let Call::Up { media, .. } = &mut self.call {
                    media.set_muted(muted);
                }
            }
            Command::Volume(volume) => {
                self.volume = volume;
                if let Call::Up { media, .. } = &mut self.call {
                    media.set_volume(volume);
                }
            }
            Command::Shutdown => self.stopping = true,
        }
    }

    /// Ends our side of whatever call there is, telling the server.
    fn hang_up(&mut self, now: Instant, reason: EndReason) {
        match self.call {
            Call::Idle => {}
            Call::Ringing { call_id, .. } => {
                self.send_tcp(&ClientMessage::Reject {
                    call_id,
                    reason: WireReason::Rejected,
                });
                self.end_call(now, EndReason::Rejected);
            }
            Call::Placing { call_id, .. } => {
                self.send_tcp(&ClientMessage::HangUp { call_id });
                self.end_call(now, EndReason::Cancelled);
            }
            Call::Accepting { call_id, .. } | Call::Up { call_id, .. } => {
                self.send_tcp(&ClientMessage::HangUp { call_id });
                self.end_call(now, reason);
            }
        }
    }

    /// Forgets the call, finishing its media, and says so.
    fn end_call(&mut self, now: Instant, reason: EndReason) {
        let call = std::mem::replace(&mut self.call, Call::Idle);
        self.frame_tick = None;
        self.stats_tick = None;
        let (peer, report) = match call {
            Call::Idle => return,
            Call::Placing { peer, .. }
            | Call::Ringing { peer, .. }
            | Call::Accepting { peer, .. } => (peer, None),
            Call::Up {
                mut media,
                mut punch,
                ..
            } => {
                if let Some(punch) = punch.as_mut() {
                    punch.close();
                }
                let report = media.report(now);
                if let Err(e) = media.finish(now, &self.socket) {
                    self.events.send(Event::Error(format!("audio: {e}")));
                }
                (report.peer.clone(), Some(report))
            }
        };
        tracing::info!(peer, reason = reason.as_str(), "call ended");
        self.events.send(Event::Ended {
            reason,
            peer,
            connected: report.is_some(),
            report,
        });
    }
}

/// Resolves the server and opens the control connection.
async fn open_control(config: &EngineConfig) -> Result<(TcpStream, SocketAddr), String> {
    let timeout = config.connect_timeout;
    let unreachable = |what: String| format!("server unreachable: {what}");
    let addrs = tokio::time::timeout(timeout, traversal::driver::resolve(&config.server))
        .await
        .map_err(|_| unreachable(format!("resolving {} timed out", config.server)))?
        .map_err(|e| unreachable(e.to_string()))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok((tcp, addr));
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => last = format!("no answer from {addr} within {timeout:?}"),
        }
    }
    Err(unreachable(last))
}

/// A traversal client for the media socket over this control connection, and the host
/// candidates.
fn start_client(
    config: &EngineConfig,
    tcp: &TcpStream,
    server: SocketAddr,
    socket: &UdpSocket,
) -> Result<(Client, Vec<SocketAddr>), String> {
    let io = |e: std::io::Error| format!("socket: {e}");
    let access = tcp.local_addr().map_err(io)?;
    let port = socket.local_addr().map_err(io)?.port();
    let mut locals = traversal::driver::local_addresses();
    if !locals.contains(&access.ip()) {
        locals.insert(0, access.ip());
    }
    let host_candidates = host_candidates(access.ip(), server.ip(), &locals, port);
    tracing::info!(%server, %access, port, ?host_candidates, "connected to the server");
    let mut client_config = client::Config::new(server, access, port);
    client_config.local_addresses = locals;
    client_config.keepalive_interval = config.keepalive;
    client_config.register_timeout = config.connect_timeout;
    client_config.seed = random_u64();
    Ok((Client::new(client_config), host_candidates))
}

/// The host candidates: each local address of the server's family with the media port.
/// Loopback only when the server is on loopback (a test on one machine).
fn host_candidates(
    access: IpAddr,
    server: IpAddr,
    locals: &[IpAddr],
    port: u16,
) -> Vec<SocketAddr> {
    let mut out = vec![SocketAddr::new(access, port)];
    for ip in locals {
        let usable = ip.is_ipv4() == server.is_ipv4()
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && (server.is_loopback() || !ip.is_loopback())
            && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
        let candidate = SocketAddr::new(*ip, port);
        if usable && !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out.truncate(MAX_CANDIDATES - 1);
    out
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_match_the_servers_family_and_scope() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let locals = [
            ip("127.0.0.1"),
            ip("192.168.1.20"),
            ip("10.0.0.5"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::5"),
        ];
        let c = host_candidates(ip("192.168.1.20"), ip("203.0.113.7"), &locals, 5000);
        assert_eq!(
            c,
            vec![
                "192.168.1.20:5000".parse().unwrap(),
                "10.0.0.5:5000".parse().unwrap()
            ],
            "IPv4 only, no loopback, the access address first"
        );
        let c = host_candidates(ip("127.0.0.1"), ip("127.0.0.1"), &locals, 5000);
        assert_eq!(c[0], "127.0.0.1:5000".parse().unwrap());
        assert!(c.len() < MAX_CANDIDATES);
        let c = host_candidates(ip("2001:db8::5"), ip("2001:db8::1"), &locals, 7);
        assert_eq!(c, vec!["[2001:db8::5]:7".parse().unwrap()], "no link-local");
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
