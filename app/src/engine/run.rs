//! The engine's thread: a thin driver of the sans-IO [`Phone`]. It moves bytes between the
//! phone and the control connection and media socket, feeds it the clock and the user's
//! commands, opens the audio devices off the loop, and ticks the media of the call.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ::media::audio::{
    AudioEvent, DeviceSink, DeviceSource, LevelMeter, Sink, SinkSpec, Source, SourceSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use traversal::driver::{ControlStream, DriverError};
use traversal::phone::{
    self, ControlConnected, Local, Phone, PhoneConfig, Received, StopReason, TcpAction,
};
use traversal::portmap::{self, PortMapper};

use super::media::{CallSetup, DeviceMove, MediaCall};
use super::spares::Spares;
use super::{AudioSide, Command, EngineConfig, Event, Notify, PathKind, Security, Warning};
use crate::contacts::Contacts;

/// How long a write to the control connection may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the goodbye to the server may take when the engine stops.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

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
                reason: Some(StopReason::Local {
                    detail: format!("cannot start the engine: {e}"),
                }),
            });
            return;
        }
    };
    let reason = match Driver::new(config, tx.clone()) {
        Ok(driver) => runtime.block_on(driver.run(commands)),
        Err(reason) => Some(reason),
    };
    tx.send(Event::Stopped { reason });
}

/// The open control connection: reads here, writes through a task of its own (so a slow
/// server never stalls the loop).
struct Control {
    reader: ReadHalf<ControlStream>,
    writer: UnboundedSender<Vec<u8>>,
    writer_task: JoinHandle<()>,
}

type Audio = (Box<dyn Source>, Box<dyn Sink>);
type AudioResult = Result<Audio, (AudioSide, String)>;

/// The call whose audio devices are being opened (its media already runs on silence).
struct Opening {
    /// The other party, for [`Event::Connected`].
    peer: String,
    /// The call's protection, for [`Event::Connected`].
    security: Security,
    task: JoinHandle<AudioResult>,
}

/// The most devices one call moves to the default: a default that fails at once would
/// otherwise be reopened for ever.
const MAX_DEVICE_MOVES: usize = 8;

/// Datagrams handed to the call before a frame at most (see `Driver::drain_media`): four 10 ms
/// frames' worth of media and checks from both paths, with room to spare.
const MAX_DRAIN: usize = 32;

/// The default device opened in place of one that failed, or why it could not be.
enum Replacement {
    Source(Box<dyn Source>, String, LevelMeter),
    Sink(Box<dyn Sink>, String, LevelMeter),
}

/// A failed device taken out of the call, to be closed off the media thread.
type Failed = Box<dyn Send>;

/// A failed device being replaced: which, what failed and why, and the opening.
struct Reopening {
    side: AudioSide,
    from: String,
    reason: String,
    task: JoinHandle<Result<Replacement, String>>,
}

/// The connected call's media and its clocks.
struct Media {
    call: Box<MediaCall>,
    frame: Interval,
    stats: Interval,
    audio_error_reported: bool,
    /// The default device opening in place of one that failed.
    reopening: Option<Reopening>,
    /// Failures waiting for that opening to end (the other side, failed meanwhile): which
    /// side, what failed and why.
    failed: Vec<(AudioSide, String, String)>,
    /// The call's devices are open and the front end knows it is connected; before, the
    /// media runs on silence and no statistics are sent.
    ready: bool,
}

struct Driver {
    config: EngineConfig,
    events: EventTx,
    phone: Phone,
    socket: Option<UdpSocket>,
    /// Birthday probing's spare sockets, while the call has them.
    spares: Option<Spares>,
    control: Option<Control>,
    /// The writer of the last control connection closed, still writing out.
    closing: Option<JoinHandle<()>>,
    /// The server (as listed) and its address the last control connection reached: when the
    /// phone connects to that server again (the connection was lost), the address is tried
    /// after the name's other addresses.
    reached: Option<(String, SocketAddr)>,
    /// The server (as listed) of the connection being opened.
    connecting_to: String,
    connecting: Option<JoinHandle<Result<(ControlStream, SocketAddr), DriverError>>>,
    opening: Option<Opening>,
    media: Option<Media>,
    muted: bool,
    volume: f32,
    stop: Option<Option<StopReason>>,
    /// Peers' name keys from earlier calls.
    contacts: Contacts,
    /// The router's port mapping for the media socket, once asked for.
    port_mapper: Option<PortMapper>,
    /// Its changes.
    port_mapping: Option<watch::Receiver<portmap::Status>>,
    /// Our address towards the server when the port mapping was last decided: a new one (a
    /// laptop on another network) decides again, with the new router.
    port_mapping_access: Option<std::net::IpAddr>,
}

impl Driver {
    fn new(config: EngineConfig, events: EventTx) -> Result<Self, StopReason> {
        // The phone's generator makes every call's ephemeral key: seeded from the OS.
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| StopReason::Local {
            detail: format!("no random numbers from the system: {e}"),
        })?;
        let contacts = match &config.contacts {
            Some(path) => Contacts::open(path.clone()).unwrap_or_else(|e| {
                // Never overwrite a file we cannot read: remember keys for this run only.
                tracing::warn!("contacts: {e}");
                events.send(Event::Warning(Warning::Contacts {
                    detail: e.to_string(),
                }));
                Contacts::in_memory()
            }),
            None => Contacts::in_memory(),
        };
        let mut phone_config = PhoneConfig::new(config.name.clone(), config.key.clone(), seed);
        phone_config.keepalive = config.keepalive;
        phone_config.register_timeout = config.connect_timeout * 2;
        phone_config.call_timeout = config.call_timeout;
        phone_config.servers = config.servers();
        let phone = Phone::new(phone_config, Instant::now());
        Ok(Driver {
            config,
            events,
            phone,
            socket: None,
            spares: None,
            control: None,
            closing: None,
            reached: None,
            connecting_to: String::new(),
            connecting: None,
            opening: None,
            media: None,
            muted: false,
            volume: 1.0,
            stop: None,
            contacts,
            port_mapper: None,
            port_mapping: None,
            port_mapping_access: None,
        })
    }

    /// Runs until shut down or stopped; the reason when it was not asked to stop.
    async fn run(mut self, mut commands: UnboundedReceiver<Command>) -> Option<StopReason> {
        let mut tcp_buf = vec![0u8; 16 * 1024];
        let mut udp_buf = vec![0u8; 2048];
        loop {
            self.flush(Instant::now());
            if let Some(reason) = self.stop.take() {
                self.goodbye().await;
                return reason;
            }
            let deadline = self.phone.poll_timeout();
            tokio::select! {
                command = commands.recv() => {
                    let now = Instant::now();
                    match command {
                        Some(command) => self.handle_command(now, command),
                        None => self.shut_down(now),
                    }
                }
                read = read_control(&mut self.control, &mut tcp_buf) => {
                    let now = Instant::now();
                    match read {
                        Ok(0) | Err(_) => {
                            self.control = None;
                            self.phone.handle_tcp_closed(now);
                        }
                        Ok(n) => self.phone.handle_tcp(now, &tcp_buf[..n]),
                    }
                }
                received = recv_media(&self.socket, &mut udp_buf) => {
                    // ICMP errors from earlier sends surface here: not fatal.
                    if let Ok((n, from)) = received {
                        self.handle_datagram(Instant::now(), Local::Media, from, &udp_buf[..n]);
                    }
                }
                spare = Spares::recv(&mut self.spares) => {
                    let from = traversal::media_socket::peer(spare.from);
                    self.handle_datagram(Instant::now(), Local::Spare(spare.spare), from, &spare.bytes);
                }
                connected = join(self.connecting.as_mut()) => {
                    self.connecting = None;
                    self.handle_connect(Instant::now(), connected);
                }
                opened = join(self.opening.as_mut().map(|o| &mut o.task)) => {
                    self.handle_audio(Instant::now(), opened);
                }
                tick = media_tick(&mut self.media) => match tick {
                    MediaTick::Frame => {
                        self.drain_media(&mut udp_buf);
                        self.handle_frame(Instant::now());
                    }
                    MediaTick::Reopened(result) => self.handle_reopened(result),
                    MediaTick::Second => {
                        if let Some(media) = self.media.as_mut() {
                            let now = Instant::now();
                            media.call.sample_quality(now);
                            if media.ready {
                                self.events.send(Event::Stats(media.call.report(now)));
                            }
                        }
                    }
                },
                () = sleep_until(deadline) => self.phone.handle_timeout(Instant::now()),
                status = port_mapping_changed(&mut self.port_mapping) => match status {
                    Some(status) => {
                        self.phone.set_router_mapping(status.external());
                        self.events.send(Event::PortMapping(status));
                    }
                    // The mapper ended: nothing more will change.
                    None => self.port_mapping = None,
                },
            }
        }
    }

    /// Carries out what the phone asks for and passes its events on, until it has nothing more.
    fn flush(&mut self, now: Instant) {
        loop {
            while let Some(action) = self.phone.poll_tcp() {
                match action {
                    TcpAction::Connect { server } => self.start_connect(server),
                    TcpAction::Send(bytes) => {
                        if let Some(control) = &self.control {
                            let _ = control.writer.send(bytes);
                        }
                    }
                    // The writer task finishes what is queued, then shuts the stream down.
                    TcpAction::Close => self.close_control(),
                }
            }
            while let Some(t) = self.phone.poll_transmit() {
                let Some(socket) = socket_of(&self.socket, &self.spares, t.local) else {
                    tracing::debug!(to = %t.destination, local = ?t.local, "UDP send: no such socket");
                    continue;
                };
                if let Err(e) =
                    traversal::media_socket::try_send_to(socket, &t.contents, t.destination, t.ttl)
                {
                    tracing::debug!(to = %t.destination, "UDP send: {e}");
                }
            }
            let Some(event) = self.phone.poll_event() else {
                return;
            };
            self.handle_phone_event(now, event);
        }
    }

    fn handle_phone_event(&mut self, now: Instant, event: phone::Event) {
        match event {
            phone::Event::OpenSpares { count } => {
                let spares = Spares::open(count);
                let opened = spares.opened();
                tracing::info!(count, opened, "birthday probing: spare sockets open");
                self.spares = Some(spares);
                self.phone.spares_opened(now, opened);
            }
            phone::Event::CloseSpares { keep } => {
                tracing::info!(?keep, "birthday probing over: spare sockets closed");
                match (keep, self.spares.as_mut()) {
                    (Some(_), Some(spares)) => spares.keep_only(keep),
                    _ => self.spares = None,
                }
            }
            phone::Event::Registration(registration) => {
                if let phone::Registration::Online {
                    name,
                    mapped,
                    server,
                    ..
                } = &registration
                {
                    tracing::info!(name, %mapped, server, "registered");
                }
                self.events.send(Event::Registration(registration));
            }
            phone::Event::Incoming { from } => self.events.send(Event::Incoming { from }),
            phone::Event::Ringing { peer } => self.events.send(Event::Ringing { peer }),
            phone::Event::Connected {
                peer,
                path,
                setup_from,
                security: keys,
            } => {
                let peer_key = keys.peer_key.map(hex::encode);
                let key_check = peer_key
                    .as_deref()
                    .map(|key| self.contacts.check(&peer, key));
                if let Some(check) = &key_check
                    && check.is_changed()
                {
                    tracing::warn!(peer, "the peer's key changed since the last call");
                }
                let security = Security {
                    suite: keys.suite,
                    sas: keys.sas.clone(),
                    peer_key,
                    key_check,
                };
                self.open_audio(CallSetup {
                    peer,
                    path,
                    placed: setup_from,
                    keys,
                    security,
                });
            }
            phone::Event::PathChanged { path } => {
                // Before the devices are open the front end hears of the path with Connected.
                if let Some(media) = &mut self.media
                    && media.call.set_path(now, path)
                    && media.ready
                {
                    self.events.send(Event::PathChanged {
                        path: path.kind(),
                        remote: path.remote(),
                    });
                }
            }
            phone::Event::Ended { peer, reason, .. } => {
                self.opening = None;
                self.spares = None;
                let report = self.media.take().map(|mut media| {
                    let mut report = media.call.report(now);
                    report.end = Some(reason);
                    report.checks = self.phone.punch_stats().map(Into::into);
                    if let Some(socket) = &self.socket
                        && let Err(e) = media.call.finish(now, socket)
                    {
                        self.events.send(Event::Warning(Warning::Audio {
                            side: AudioSide::Speaker,
                            detail: e.to_string(),
                        }));
                    }
                    report
                });
                // Connected for the front end means the media had started (it saw `Connected`).
                let connected = report.is_some();
                self.events.send(Event::Ended {
                    reason,
                    peer,
                    connected,
                    report,
                });
            }
            phone::Event::Refused { code, message } => {
                self.events
                    .send(Event::Warning(Warning::Refused { code, message }));
            }
            phone::Event::Stopped(reason) => {
                self.stop = Some(Some(reason));
            }
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        tracing::debug!(?command, "command");
        let refused = match command {
            Command::Call(peer) => self.phone.call(now, &peer).err(),
            Command::Accept => self.phone.accept(now).err(),
            Command::Reject => self.phone.reject(now).err(),
            Command::HangUp => {
                self.phone.hang_up(now);
                None
            }
            Command::Mute(muted) => {
                self.muted = muted;
                if let Some(media) = &mut self.media {
                    media.call.set_muted(muted);
                }
                self.events.send(Event::Muted(muted));
                None
            }
            Command::Volume(volume) => {
                self.volume = volume;
                if let Some(media) = &mut self.media {
                    media.call.set_volume(volume);
                }
                None
            }
            Command::Reconnect => {
                self.phone.reconnect(now);
                None
            }
            Command::Shutdown => {
                self.shut_down(now);
                None
            }
        };
        if let Some(refused) = refused {
            self.events.send(Event::Warning(match refused {
                phone::CommandError::AlreadyInCall => Warning::AlreadyInCall,
                phone::CommandError::NoCallToAccept => Warning::NoCallToAccept,
            }));
        }
    }

    fn shut_down(&mut self, now: Instant) {
        self.phone.shut_down(now);
        self.stop = Some(None);
    }

    /// Stops reading the control connection; its writer finishes what is queued (the last
    /// words to the server: a hang-up, a goodbye), then shuts the stream down.
    fn close_control(&mut self) {
        if let Some(control) = self.control.take() {
            self.closing = Some(control.writer_task);
        }
    }

    /// Writes out what the phone queued last, briefly, before the runtime (and with it the
    /// writer task) goes away.
    async fn goodbye(&mut self) {
        self.flush(Instant::now());
        self.close_control();
        let released = async {
            if let Some(mapper) = self.port_mapper.take() {
                let status = mapper.release(GOODBYE_TIMEOUT).await;
                tracing::info!(%status, "port mapping");
            }
        };
        let closed = async {
            if let Some(task) = self.closing.take() {
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, task).await;
            }
        };
        tokio::join!(released, closed);
    }

    /// Asks the router to map the media socket's port when the server is beyond the local
    /// network (over IPv4, from `access`, our address towards the server): on the first
    /// connection, and again on one from another address (another network, another router),
    /// after deleting the old mapping in the background.
    fn start_port_mapping(&mut self, access: SocketAddr, server: SocketAddr, media_port: u16) {
        if self.port_mapping_access == Some(access.ip()) || media_port == 0 {
            return;
        }
        self.port_mapping_access = Some(access.ip());
        if let Some(old) = self.port_mapper.take() {
            tracing::info!(%access, "new local address: asking the router again");
            self.port_mapping = None;
            self.phone.set_router_mapping(None);
            tokio::spawn(async move {
                old.release(GOODBYE_TIMEOUT).await;
            });
        }
        let local = match access.ip() {
            std::net::IpAddr::V4(local)
                if self.config.port_mapping && portmap::worth_asking(access.ip(), server.ip()) =>
            {
                local
            }
            _ => {
                self.events.send(Event::PortMapping(portmap::Status::Off));
                return;
            }
        };
        let internal = std::net::SocketAddrV4::new(local, media_port);
        let mapper = PortMapper::start(internal, portmap::Options::default());
        self.port_mapping = Some(mapper.watch());
        self.port_mapper = Some(mapper);
    }

    fn handle_datagram(&mut self, now: Instant, local: Local, from: SocketAddr, bytes: &[u8]) {
        let Some(call) = &mut self.media else {
            let _ = self.phone.handle_datagram_on(now, local, from, bytes);
            return;
        };
        match self.phone.handle_datagram_on(now, local, from, bytes) {
            Received::Media(media) => call.call.handle_media(now, media),
            // During a call: from an address that is not the peer's or the relay's, or a relay
            // frame without our token. Counted in the report, never played.
            Received::Dropped => call.call.count_stranger(),
            Received::Consumed => {}
        }
    }

    /// Hands what already waits on the media socket to the call before a frame is pulled.
    /// After this thread was late (a stall, then the missed frame ticks at once), `select!`
    /// may run the catch-up ticks before the datagrams that came meanwhile: each tick would
    /// find the jitter buffer empty, conceal, and leave it a frame deeper. At most
    /// [`MAX_DRAIN`] datagrams, so a flood cannot hold a frame back.
    fn drain_media(&mut self, buf: &mut [u8]) {
        // The same for a direct path on a spare socket (birthday probing).
        for _ in 0..MAX_DRAIN {
            let Some(spare) = self.spares.as_mut().and_then(Spares::try_recv) else {
                break;
            };
            let from = traversal::media_socket::peer(spare.from);
            self.handle_datagram(
                Instant::now(),
                Local::Spare(spare.spare),
                from,
                &spare.bytes,
            );
        }
        for _ in 0..MAX_DRAIN {
            let Some(socket) = &self.socket else {
                return;
            };
            match socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    let from = traversal::media_socket::peer(from);
                    self.handle_datagram(Instant::now(), Local::Media, from, &buf[..n]);
                }
                // Nothing waiting (or an ICMP error, which the select loop's read sees too).
                Err(_) => return,
            }
        }
    }

    fn handle_frame(&mut self, now: Instant) {
        // On a direct path through a spare socket (birthday probing), media leaves from it.
        let socket = socket_of(&self.socket, &self.spares, self.phone.media_local())
            .or(self.socket.as_ref());
        let (Some(media), Some(socket)) = (&mut self.media, socket) else {
            return;
        };
        if let Err(e) = media.call.tick(now, socket)
            && !media.audio_error_reported
        {
            media.audio_error_reported = true;
            self.events.send(Event::Warning(Warning::Audio {
                side: AudioSide::Microphone,
                detail: e.to_string(),
            }));
        }
        while let Some((side, event)) = media.call.poll_audio_event() {
            let AudioEvent::DeviceFailed { device, reason } = event else {
                continue;
            };
            tracing::warn!(side = side.as_str(), device, reason, "audio device failed");
            let is_device = match side {
                AudioSide::Microphone => matches!(self.config.input, SourceSpec::Device { .. }),
                AudioSide::Speaker => matches!(self.config.output, SinkSpec::Device { .. }),
            };
            if !is_device || media.call.devices_moved() >= MAX_DEVICE_MOVES {
                self.events.send(Event::Warning(Warning::Audio {
                    side,
                    detail: format!("{device}: {reason}"),
                }));
                continue;
            }
            media.failed.push((side, device, reason));
        }
        start_reopening(media);
    }

    /// The default device opened for one that failed: swapped into the call, or a warning.
    fn handle_reopened(
        &mut self,
        result: Result<Result<Replacement, String>, tokio::task::JoinError>,
    ) {
        let Some(media) = &mut self.media else {
            return;
        };
        let Some(reopening) = media.reopening.take() else {
            return;
        };
        let Reopening {
            side, from, reason, ..
        } = reopening;
        // The other side may have failed meanwhile.
        start_reopening(media);
        let replacement = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(side = side.as_str(), "no default device to move to: {e}");
                self.events.send(Event::Warning(Warning::Audio {
                    side,
                    detail: format!("{from}: {reason}; the system default did not open: {e}"),
                }));
                return;
            }
            Err(e) => {
                self.events.send(Event::Warning(Warning::Audio {
                    side,
                    detail: format!("{from}: {reason}; {e}"),
                }));
                return;
            }
        };
        let moved = |to: String| DeviceMove {
            side: side.as_str(),
            from: from.clone(),
            to,
            reason: reason.clone(),
        };
        let (moved, meter) = match replacement {
            Replacement::Source(source, to, meter) => {
                let moved = moved(to);
                media.call.replace_source(source, moved.clone());
                (moved, meter)
            }
            Replacement::Sink(sink, to, meter) => {
                let moved = moved(to);
                media.call.replace_sink(sink, moved.clone());
                (moved, meter)
            }
        };
        self.events.send(Event::DeviceMoved { side, moved, meter });
    }

    /// Opens a control connection to `server` (one of the list; and, the first time, the
    /// media socket) in a task: the loop goes on meanwhile.
    fn start_connect(&mut self, server: String) {
        self.close_control();
        let timeout = self.config.connect_timeout;
        let trust = self.config.trust.clone();
        let lost = self
            .reached
            .as_ref()
            .filter(|(name, _)| *name == server)
            .map(|(_, addr)| *addr);
        self.connecting_to.clone_from(&server);
        self.connecting = Some(tokio::spawn(async move {
            traversal::driver::connect_control_after_loss(&server, timeout, &trust, lost).await
        }));
    }

    fn handle_connect(
        &mut self,
        now: Instant,
        result: Result<Result<(ControlStream, SocketAddr), DriverError>, tokio::task::JoinError>,
    ) {
        let (tls, server) = match result {
            Ok(Ok(opened)) => opened,
            Ok(Err(DriverError::CertificateChanged {
                server,
                pinned,
                presented,
            })) => {
                return self.phone.handle_untrusted_server(
                    now,
                    server,
                    pinned.to_string(),
                    presented.to_string(),
                );
            }
            Ok(Err(e)) => return self.phone.handle_connect_failed(now, e.to_string()),
            Err(e) => return self.phone.handle_connect_failed(now, e.to_string()),
        };
        let access = match tls.get_ref().0.local_addr() {
            Ok(access) => access,
            Err(e) => {
                return self
                    .phone
                    .handle_connect_failed(now, traversal::plain::io_error(&e));
            }
        };
        if self.socket.is_none() {
            // IPv4 and IPv6 on one socket: the relay over the server's family, a direct path
            // over either.
            match traversal::media_socket::bind(self.config.udp_port) {
                Ok(socket) => self.socket = Some(socket),
                Err(e) => {
                    self.stop = Some(Some(StopReason::Local {
                        detail: format!(
                            "cannot use UDP port {} for calls: {}",
                            self.config.udp_port,
                            traversal::plain::io_error(&e)
                        ),
                    }));
                    return;
                }
            }
        }
        let media_port = self
            .socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map_or(0, |a| a.port());
        let media_ipv6 = self
            .socket
            .as_ref()
            .is_some_and(traversal::media_socket::is_dual_stack);
        self.start_port_mapping(access, server, media_port);
        self.reached = Some((self.connecting_to.clone(), server));
        let (reader, mut writer) = tokio::io::split(tls);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let writer_task = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes)).await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::debug!("control connection: write failed");
                    return;
                }
            }
            let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
        });
        self.control = Some(Control {
            reader,
            writer: tx,
            writer_task,
        });
        self.phone.handle_connected(
            now,
            ControlConnected {
                server,
                access,
                local_addresses: traversal::driver::local_addresses(),
                media_port,
                media_ipv6,
            },
        );
    }

    /// The call is up: its media starts at once, sending silence and dropping what arrives,
    /// while its audio devices open on a blocking thread (a sound server may take seconds,
    /// longer than the peer waits for media); they are put in when open, and the front end is
    /// told the call is connected then. Devices that do not open end the call.
    fn open_audio(&mut self, setup: CallSetup) {
        let now = Instant::now();
        let (peer, security) = (setup.peer.clone(), setup.security.clone());
        let silent: Audio = (
            Box::new(::media::audio::SilenceSource),
            Box::new(::media::audio::NullSink::new()),
        );
        let mut call = match MediaCall::new(setup, self.config.media, silent.0, silent.1, now) {
            Ok(call) => Box::new(call),
            Err(e) => {
                let (side, detail) = (AudioSide::Microphone, e.to_string());
                tracing::warn!(?side, "audio: {detail}");
                self.events
                    .send(Event::Warning(Warning::Audio { side, detail }));
                self.phone.fail_call(now);
                return;
            }
        };
        // Every call starts unmuted, and the front end is told so.
        self.muted = false;
        call.set_muted(false);
        call.set_volume(self.volume);
        if let Some(path) = self.phone.media_path() {
            call.set_path(now, path);
        }
        let mut frame = tokio::time::interval(call.frame_period());
        frame.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let second = Duration::from_secs(1);
        let mut stats = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.media = Some(Media {
            call,
            frame,
            stats,
            audio_error_reported: false,
            reopening: None,
            failed: Vec::new(),
            ready: false,
        });

        let input = self.config.input.clone();
        let output = self.config.output.clone();
        let task = tokio::task::spawn_blocking(move || -> AudioResult {
            let source = input
                .open()
                .map_err(|e| (AudioSide::Microphone, e.to_string()))?;
            let sink = output
                .open()
                .map_err(|e| (AudioSide::Speaker, e.to_string()))?;
            Ok((source, sink))
        });
        self.opening = Some(Opening {
            peer,
            security,
            task,
        });
    }

    fn handle_audio(&mut self, now: Instant, result: Result<AudioResult, tokio::task::JoinError>) {
        let Some(opening) = self.opening.take() else {
            return;
        };
        let opened = match result {
            Ok(Ok(audio)) => Ok(audio),
            Ok(Err(failure)) => Err(failure),
            Err(e) => Err((AudioSide::Microphone, e.to_string())),
        };
        let (source, sink) = match opened {
            Ok(audio) => audio,
            Err((side, detail)) => {
                tracing::warn!(?side, "audio: {detail}");
                // The call never connected for the front end: no report of its silent media.
                self.media = None;
                self.events
                    .send(Event::Warning(Warning::Audio { side, detail }));
                self.phone.fail_call(now);
                return;
            }
        };
        let Some(media) = &mut self.media else {
            return;
        };
        media.call.set_devices(source, sink, now);
        media.ready = true;
        let call = &media.call;
        self.events.send(Event::Connected {
            peer: opening.peer,
            input_meter: call.input_meter(),
            output_meter: call.output_meter(),
            security: opening.security,
        });
        self.events.send(Event::Muted(self.muted));
        let path = call.path();
        if path.kind() != PathKind::Relay {
            // The checks found the direct path while the devices were opening.
            self.events.send(Event::PathChanged {
                path: path.kind(),
                remote: path.remote(),
            });
        }
    }
}

/// Starts opening the default for the next failed device, unless one is opening.
fn start_reopening(media: &mut Media) {
    if media.reopening.is_some() || media.failed.is_empty() {
        return;
    }
    let (side, from, reason) = media.failed.remove(0);
    // The failed device is released first: a sound server may refuse a second stream while
    // the first, moved to its default, still holds it.
    let failed = match side {
        AudioSide::Microphone => Box::new(media.call.take_source()) as Failed,
        AudioSide::Speaker => Box::new(media.call.take_sink()),
    };
    media.reopening = Some(Reopening {
        side,
        from,
        reason,
        task: reopen_default(side, failed),
    });
}

/// Tries to open the default device after one failed: a sound server rearranging itself
/// right after a removal may refuse the first opening ("Invalid argument" from PulseAudio a
/// few milliseconds after a sink went away).
const REOPEN_TRIES: u32 = 5;
/// The wait between those tries.
const REOPEN_RETRY: Duration = Duration::from_millis(200);

/// Opens the system default device for `side` on a blocking thread (a sound server may take a
/// while), with its name and meter.
fn reopen_default(side: AudioSide, failed: Failed) -> JoinHandle<Result<Replacement, String>> {
    tokio::task::spawn_blocking(move || {
        drop(failed);
        let mut tries = 0;
        loop {
            tries += 1;
            let opened = match side {
                AudioSide::Microphone => DeviceSource::open(None).map(|source| {
                    let name = source.name().to_owned();
                    let meter = source.meter();
                    Replacement::Source(Box::new(source), name, meter)
                }),
                AudioSide::Speaker => DeviceSink::open(None).map(|sink| {
                    let name = sink.name().to_owned();
                    let meter = sink.meter();
                    Replacement::Sink(Box::new(sink), name, meter)
                }),
            };
            match opened {
                Ok(replacement) => return Ok(replacement),
                Err(e) if tries >= REOPEN_TRIES => return Err(e.to_string()),
                Err(e) => {
                    tracing::debug!(
                        side = side.as_str(),
                        tries,
                        "default device not open yet: {e}"
                    );
                    std::thread::sleep(REOPEN_RETRY);
                }
            }
        }
    })
}

/// The socket a datagram of the phone leaves from: the media socket, or a spare.
fn socket_of<'a>(
    socket: &'a Option<UdpSocket>,
    spares: &'a Option<Spares>,
    local: Local,
) -> Option<&'a UdpSocket> {
    match local {
        Local::Media => socket.as_ref(),
        Local::Spare(i) => spares.as_ref()?.socket(i),
    }
}

async fn read_control(control: &mut Option<Control>, buf: &mut [u8]) -> std::io::Result<usize> {
    match control {
        Some(control) => control.reader.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_media(
    socket: &Option<UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => {
            let (n, from) = socket.recv_from(buf).await?;
            Ok((n, traversal::media_socket::peer(from)))
        }
        None => std::future::pending().await,
    }
}

/// The port mapping's next status; `None` when its task ended.
async fn port_mapping_changed(
    watch: &mut Option<watch::Receiver<portmap::Status>>,
) -> Option<portmap::Status> {
    match watch {
        Some(watch) => match watch.changed().await {
            Ok(()) => Some(watch.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn join<T>(task: Option<&mut JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Which of the call's clocks ticked.
enum MediaTick {
    /// A frame is due.
    Frame,
    /// A second passed (statistics).
    Second,
    /// The default device opened in place of a failed one (or not).
    Reopened(Result<Result<Replacement, String>, tokio::task::JoinError>),
}

async fn media_tick(media: &mut Option<Media>) -> MediaTick {
    match media {
        Some(media) => tokio::select! {
            _ = media.frame.tick() => MediaTick::Frame,
            _ = media.stats.tick() => MediaTick::Second,
            reopened = join(media.reopening.as_mut().map(|r| &mut r.task)) => {
                MediaTick::Reopened(reopened)
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
