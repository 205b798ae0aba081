//! The whole client side of Pinhole, sans-IO: one [`Phone`] owns the registration with the
//! rendezvous server (the patent's exchange, [`crate::client::Client`], and the name claimed
//! with a key), call signalling, hole punching ([`Punch`]), the demultiplexing of datagrams on
//! the media socket, its timers, and reconnecting with back-off. The counterpart of the
//! server's [`crate::calls::Calls`]; str0m's `Rtc` and quinn-proto's `Connection` are the models.
//!
//! # The loop
//!
//! The driver owns the control connection (TCP), the media socket (UDP), the clock and the
//! randomness, and knows nothing of the protocol:
//!
//! ```text
//! inputs (each with `now`):
//!   handle_connected / handle_connect_failed   a control connection the phone asked for
//!   handle_tcp / handle_tcp_closed              bytes from the control connection
//!   handle_datagram                             every datagram of the media socket: STUN is
//!                                               consumed here, media is handed back
//!   handle_timeout                              when poll_timeout is reached
//!   call / accept / reject / hang_up / fail_call / reconnect / shut_down   the user
//! outputs, drained after every input:
//!   poll_tcp       -> Connect (open a control connection), Send(bytes), Close
//!   poll_transmit  -> datagrams to send from the media socket
//!   poll_event     -> what happened: registration, calls, paths
//!   poll_timeout   -> when to call handle_timeout
//!   media_path     -> where the call's media goes now (direct, or relay frames to the server)
//! ```
//!
//! # Rules
//!
//! - A call outlives the control connection when its media does not need the server: on a
//!   direct path it goes on while the phone reconnects behind it, and a hang-up reaches the
//!   peer over the media path ([`Punch::hang_up`]). A call on the relay, or not yet up, ends
//!   with [`EndReason::ServerLost`]. A call placed while the server is unreachable ends with
//!   [`EndReason::ServerUnreachable`] within [`PhoneConfig::server_answer_timeout`] twice over.
//! - The server must answer a [`ClientMessage::Ping`] within
//!   [`PhoneConfig::server_answer_timeout`]; a ping goes every [`PhoneConfig::ping_interval`]
//!   and with every call placed, so a server that vanished is noticed in seconds.
//! - After a loss the phone connects again at once, then with back-off from
//!   [`PhoneConfig::backoff_min`] doubling to [`PhoneConfig::backoff_max`], forever, except
//!   after [`Registration::Replaced`] (another device took the name) or a fatal refusal
//!   ([`StopReason`]). When the very first connection fails and
//!   [`PhoneConfig::stop_if_first_connect_fails`] is set, the phone stops instead.
//! - Every state a front end shows comes from an [`Event`]: it never has to guess.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::calls::{MAX_CANDIDATES, registration_message};
use crate::channel::{self, Kind};
use crate::client::{self, Client, Socket};
use crate::control::{self, ClientMessage, FrameDecoder, ServerMessage, Verdict};
use crate::punch::{Punch, PunchConfig, PunchEvent};
use crate::server::{hex, unhex};

/// How the phone runs.
#[derive(Clone)]
pub struct PhoneConfig {
    /// Our name.
    pub name: String,
    /// The key that proves the name.
    pub key: SigningKey,
    /// Keepalive interval of the media mapping; `None`: the exchange's default.
    pub keepalive: Option<Duration>,
    /// From asking for a control connection to being registered, at most.
    pub register_timeout: Duration,
    /// A placed call unanswered for this long is given up (the server ends it at 30 s; this
    /// bounds it when the server does not).
    pub call_timeout: Duration,
    /// An accepted call must be connected by the server within this time.
    pub accept_timeout: Duration,
    /// How long the server may take to answer a ping.
    pub server_answer_timeout: Duration,
    /// Interval of pings while registered.
    pub ping_interval: Duration,
    /// A connected call with nothing from the peer for this long has lost it.
    pub peer_silence: Duration,
    /// First wait before connecting again after a loss (after an immediate retry).
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Stop ([`StopReason::Unreachable`]) when the first connection fails, instead of retrying.
    pub stop_if_first_connect_fails: bool,
    /// Seeds call ids, transaction ids and the punch's sender id.
    pub seed: u64,
}

impl PhoneConfig {
    /// The timings of `docs/calls.md` for `name` with `key`.
    pub fn new(name: String, key: SigningKey, seed: u64) -> Self {
        PhoneConfig {
            name,
            key,
            keepalive: None,
            register_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(35),
            accept_timeout: Duration::from_secs(10),
            server_answer_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
            peer_silence: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            stop_if_first_connect_fails: true,
            seed,
        }
    }
}

impl std::fmt::Debug for PhoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneConfig")
            .field("name", &self.name)
            .field("key", &"<secret>")
            .field("register_timeout", &self.register_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("server_answer_timeout", &self.server_answer_timeout)
            .field("peer_silence", &self.peer_silence)
            .finish_non_exhaustive()
    }
}

/// What the driver learnt when the control connection it was asked for opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConnected {
    /// The server's address (TCP; its UDP is on the same address).
    pub server: SocketAddr,
    /// The connection's local address: the patent's "access IP" (S1).
    pub access: SocketAddr,
    /// Every local interface address.
    pub local_addresses: Vec<IpAddr>,
    /// The media socket's local port.
    pub media_port: u16,
}

/// Something to do with the control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpAction {
    /// Open a control connection to the server (dropping any old one); answer with
    /// [`Phone::handle_connected`] or [`Phone::handle_connect_failed`].
    Connect,
    /// Write these bytes.
    Send(Vec<u8>),
    /// Close the connection after writing what was queued before.
    Close,
}

/// A datagram to send from the media socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Where the media of the call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPath {
    /// Straight to the peer at this address.
    Direct(SocketAddr),
    /// Through the server's relay, as ChannelData (RFC 8656 section 12.4) on `channel`.
    Relay {
        /// The server's UDP address.
        server: SocketAddr,
        /// The call's channel number (0x4000-0x4FFF).
        channel: u16,
    },
}

impl MediaPath {
    /// Direct or relayed.
    pub fn kind(&self) -> PathKind {
        match self {
            MediaPath::Direct(_) => PathKind::Direct,
            MediaPath::Relay { .. } => PathKind::Relay,
        }
    }

    /// The peer's address on a direct path.
    pub fn remote(&self) -> Option<SocketAddr> {
        match self {
            MediaPath::Direct(addr) => Some(*addr),
            MediaPath::Relay { .. } => None,
        }
    }
}

/// Direct or relayed, as reports and the GUI show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Straight between the two clients.
    Direct,
    /// Through the server.
    Relay,
}

impl PathKind {
    /// `"direct"` or `"relay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        }
    }
}

/// The registration, as a front end shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Reaching the server and registering (first time, or again after a loss).
    Connecting,
    /// Registered: calls can go out and come in.
    Online {
        /// Our name.
        name: String,
        /// The media socket's address as the server sees it.
        mapped: SocketAddr,
        /// The patent's verdict.
        verdict: Option<Verdict>,
    },
    /// The server was lost; the phone connects again by itself at `retry_at`.
    Offline {
        /// Why.
        reason: ServerLoss,
        /// When the next attempt starts.
        retry_at: Instant,
    },
    /// Another device registered our name: no retry until [`Phone::reconnect`].
    Replaced,
}

/// Why the server was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLoss {
    /// The server closed the control connection (it stopped or restarted).
    Closed,
    /// Connecting or registering failed; `detail` says how, for people.
    Unreachable {
        /// The OS error, the timeout, or the step that failed.
        detail: String,
    },
    /// The server stopped answering (no pong in time).
    NotAnswering,
}

impl ServerLoss {
    fn detail(&self) -> String {
        match self {
            ServerLoss::Closed => "the server closed the connection".into(),
            ServerLoss::Unreachable { detail } => detail.clone(),
            ServerLoss::NotAnswering => "the server stopped answering".into(),
        }
    }
}

/// Why the phone stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The first connection failed (with [`PhoneConfig::stop_if_first_connect_fails`]).
    Unreachable {
        /// What failed.
        detail: String,
    },
    /// The name is registered with another key.
    NameTaken,
    /// The server refuses the name itself (characters, length, `echo`).
    BadName,
    /// The server did not accept our signature.
    BadSignature,
    /// The server has no room for more registrations.
    ServerFull,
    /// The server speaks another protocol version or has no call service.
    Incompatible {
        /// What the server said or lacks.
        detail: String,
    },
    /// Something on this machine (socket, runtime).
    Local {
        /// What failed.
        detail: String,
    },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Unreachable { detail } => write!(f, "server unreachable: {detail}"),
            StopReason::NameTaken => f.write_str("the name is registered with another key"),
            StopReason::BadName => f.write_str("the server does not accept this name"),
            StopReason::BadSignature => f.write_str("the server did not accept our signature"),
            StopReason::ServerFull => f.write_str("the server has no room for more users"),
            StopReason::Incompatible { detail } => write!(f, "incompatible server: {detail}"),
            StopReason::Local { detail } => write!(f, "{detail}"),
        }
    }
}

/// How a call ended. [`EndReason::as_str`] names it in reports (`"end"` of the JSON line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// We hung up.
    HungUp,
    /// We gave up before an answer.
    Cancelled,
    /// We declined an incoming call.
    Declined,
    /// The server or the peer ended it, for this reason (`Remote(HungUp)`: the peer hung up).
    Remote(control::EndReason),
    /// The server went away while the call needed it.
    ServerLost,
    /// The call was placed while the server could not be reached.
    ServerUnreachable,
    /// Nothing came from the peer for [`PhoneConfig::peer_silence`].
    PeerSilent,
    /// We called our own name.
    SelfCall,
    /// An audio device or socket failed here.
    Local,
}

impl EndReason {
    /// The stable snake_case name for reports.
    pub fn as_str(self) -> &'static str {
        use control::EndReason as Wire;
        match self {
            EndReason::HungUp => "hung_up",
            EndReason::Cancelled => "cancelled",
            EndReason::Declined => "declined",
            EndReason::Remote(Wire::HungUp) => "peer_hung_up",
            EndReason::Remote(Wire::Cancelled) => "peer_cancelled",
            EndReason::Remote(Wire::Rejected) => "rejected",
            EndReason::Remote(Wire::Busy) => "busy",
            EndReason::Remote(Wire::Offline) => "offline",
            EndReason::Remote(Wire::NoAnswer) => "no_answer",
            EndReason::Remote(Wire::PeerLost) | EndReason::PeerSilent => "peer_lost",
            EndReason::Remote(Wire::ServerError) => "server_error",
            EndReason::Remote(Wire::RelayLimit) => "relay_limit",
            EndReason::ServerLost => "server_lost",
            EndReason::ServerUnreachable => "server_unreachable",
            EndReason::SelfCall => "self_call",
            EndReason::Local => "local_error",
        }
    }

    /// True when the call ended as calls do: one side hung up.
    pub fn is_normal(self) -> bool {
        matches!(
            self,
            EndReason::HungUp | EndReason::Remote(control::EndReason::HungUp)
        )
    }
}

impl Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use control::EndReason as Wire;
        f.write_str(match self {
            EndReason::HungUp => "we hung up",
            EndReason::Cancelled => "we cancelled the call",
            EndReason::Declined => "we declined the call",
            EndReason::Remote(Wire::HungUp) => "the peer hung up",
            EndReason::Remote(Wire::Cancelled) => "the caller cancelled",
            EndReason::Remote(Wire::Rejected) => "the peer declined the call",
            EndReason::Remote(Wire::Busy) => "the peer is busy in another call",
            EndReason::Remote(Wire::Offline) => "the peer is offline (no such name is registered)",
            EndReason::Remote(Wire::NoAnswer) => "no answer",
            EndReason::Remote(Wire::PeerLost) => "the server lost the peer",
            EndReason::Remote(Wire::ServerError) => "the server ended the call (server error)",
            EndReason::Remote(Wire::RelayLimit) => "the server refused to relay the call",
            EndReason::ServerLost => "the server was lost during the call",
            EndReason::ServerUnreachable => "the server could not be reached",
            EndReason::PeerSilent => "nothing more came from the peer",
            EndReason::SelfCall => "that is our own name",
            EndReason::Local => "the call failed on this machine",
        })
    }
}

/// A command that does not fit the phone's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A call is in progress.
    #[error("already in a call; hang up first")]
    AlreadyInCall,
    /// Nothing rings.
    #[error("no incoming call to answer")]
    NoCallToAccept,
}

/// What happened, for the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The registration changed.
    Registration(Registration),
    /// Someone calls: [`Phone::accept`] or [`Phone::reject`].
    Incoming {
        /// The caller's name.
        from: String,
    },
    /// The peer's phone rings.
    Ringing {
        /// Whom we call.
        peer: String,
    },
    /// The call is up: start the media on `path`.
    Connected {
        /// The other party.
        peer: String,
        /// Where media goes first (the relay).
        path: MediaPath,
        /// When the call was placed (caller) or accepted (callee): setup time counts from it.
        setup_from: Instant,
    },
    /// The media moved between relay and direct.
    PathChanged {
        /// The path now.
        path: MediaPath,
    },
    /// The call (placed, incoming or connected) is over.
    Ended {
        /// The other party.
        peer: String,
        /// Why.
        reason: EndReason,
        /// Whether it had connected.
        connected: bool,
    },
    /// The server refused something after registration (`code` is stable).
    Refused {
        /// The server's code.
        code: String,
        /// For people.
        message: String,
    },
    /// The phone stopped for good.
    Stopped(StopReason),
}

/// What [`Phone::handle_datagram`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// RTP or RTCP of the call (unwrapped from a relay frame): for the media session.
    Media(&'a [u8]),
    /// A STUN message for the registration or the connectivity checks: handled.
    Consumed,
    /// Not for us (no call, unknown kind, wrong source or channel): dropped.
    Dropped,
}

/// The control connection and what runs over it.
#[derive(Debug)]
struct Session {
    server: SocketAddr,
    client: Client,
    decoder: FrameDecoder,
    host_candidates: Vec<SocketAddr>,
    name_registered: bool,
    online: bool,
    register_deadline: Instant,
    next_ping: Instant,
    /// The nonce of the ping in flight and when its pong is due.
    ping: Option<(u64, Instant)>,
}

#[derive(Debug)]
enum Link {
    /// Asked the driver for a control connection; it must answer by the deadline.
    Connecting { deadline: Instant },
    Up(Box<Session>),
    /// Waiting to connect again.
    Waiting { retry_at: Instant },
    Replaced,
    Stopped,
}

#[derive(Debug)]
struct UpCall {
    id: u64,
    peer: String,
    channel: u16,
    relay: SocketAddr,
    punch: Option<Punch>,
    path: MediaPath,
    last_heard: Instant,
}

#[derive(Debug)]
enum Call {
    Idle,
    /// Placed while not registered: goes out once registered, or fails at the deadline.
    Waiting {
        id: u64,
        peer: String,
        placed: Instant,
        deadline: Instant,
    },
    /// We called; waiting for the answer.
    Placing {
        id: u64,
        peer: String,
        placed: Instant,
        deadline: Instant,
    },
    /// Someone calls us; waiting for the user.
    Ringing { id: u64, peer: String },
    /// We accepted; waiting for `Connected`.
    Accepting {
        id: u64,
        peer: String,
        accepted: Instant,
        deadline: Instant,
    },
    Up(Box<UpCall>),
}

impl Call {
    fn id(&self) -> Option<u64> {
        match self {
            Call::Idle => None,
            Call::Waiting { id, .. }
            | Call::Placing { id, .. }
            | Call::Ringing { id, .. }
            | Call::Accepting { id, .. } => Some(*id),
            Call::Up(up) => Some(up.id),
        }
    }
}

/// The phone. See the module documentation.
#[derive(Debug)]
pub struct Phone {
    config: PhoneConfig,
    rng: StdRng,
    link: Link,
    ever_online: bool,
    /// The wait before the next attempt after a failed one; zero: retry at once.
    backoff: Duration,
    call: Call,
    tcp: VecDeque<TcpAction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Phone {
    /// A phone that starts at once: drain [`Phone::poll_tcp`] for the first
    /// [`TcpAction::Connect`].
    pub fn new(config: PhoneConfig, now: Instant) -> Self {
        let mut phone = Phone {
            rng: StdRng::seed_from_u64(config.seed),
            link: Link::Stopped,
            ever_online: false,
            backoff: Duration::ZERO,
            call: Call::Idle,
            tcp: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            config,
        };
        phone.connect(now);
        phone
    }

    // ---- state, for the driver ----

    /// Where the call's media goes now; `None` with no connected call.
    pub fn media_path(&self) -> Option<MediaPath> {
        match &self.call {
            Call::Up(up) => Some(up.path),
            _ => None,
        }
    }

    /// True while registered.
    pub fn is_online(&self) -> bool {
        matches!(&self.link, Link::Up(s) if s.online)
    }

    /// True once the phone stopped for good (or was shut down).
    pub fn is_stopped(&self) -> bool {
        matches!(self.link, Link::Stopped)
    }

    /// The traversal exchange's counters, while connected.
    pub fn exchange_stats(&self) -> Option<client::Stats> {
        match &self.link {
            Link::Up(s) => Some(s.client.stats()),
            _ => None,
        }
    }

    /// Path changes of the connected call, counted by its punch.
    pub fn punch_stats(&self) -> Option<crate::punch::PunchStats> {
        match &self.call {
            Call::Up(up) => up.punch.as_ref().map(Punch::stats),
            _ => None,
        }
    }

    // ---- outputs ----

    /// The next thing to do with the control connection.
    pub fn poll_tcp(&mut self) -> Option<TcpAction> {
        self.tcp.pop_front()
    }

    /// The next datagram to send from the media socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Phone::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match &self.link {
            Link::Connecting { deadline } => at(Some(*deadline)),
            Link::Waiting { retry_at } => at(Some(*retry_at)),
            Link::Up(s) => {
                at(s.client.poll_timeout());
                if !s.online {
                    at(Some(s.register_deadline));
                }
                match s.ping {
                    Some((_, due)) => at(Some(due)),
                    None if s.online => at(Some(s.next_ping)),
                    None => {}
                }
            }
            Link::Replaced | Link::Stopped => {}
        }
        match &self.call {
            Call::Waiting { deadline, .. }
            | Call::Placing { deadline, .. }
            | Call::Accepting { deadline, .. } => at(Some(*deadline)),
            Call::Up(up) => {
                at(up.punch.as_ref().and_then(Punch::poll_timeout));
                at(Some(up.last_heard + self.config.peer_silence));
            }
            Call::Idle | Call::Ringing { .. } => {}
        }
        next
    }

    // ---- inputs: the control connection ----

    /// The control connection asked for with [`TcpAction::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant, info: ControlConnected) {
        if !matches!(self.link, Link::Connecting { .. }) {
            // Not asked for (any more): the driver drops it.
            self.tcp.push_back(TcpAction::Close);
            return;
        }
        let mut locals = info.local_addresses;
        if !locals.contains(&info.access.ip()) {
            locals.insert(0, info.access.ip());
        }
        let host_candidates =
            host_candidates(info.access.ip(), info.server.ip(), &locals, info.media_port);
        let mut config = client::Config::new(info.server, info.access, info.media_port);
        config.local_addresses = locals;
        config.keepalive_interval = self.config.keepalive;
        config.register_timeout = self.config.register_timeout;
        config.seed = self.rng.next_u64();
        tracing::info!(server = %info.server, access = %info.access, "control connection open");
        self.link = Link::Up(Box::new(Session {
            server: info.server,
            client: Client::new(config),
            decoder: FrameDecoder::new(),
            host_candidates,
            name_registered: false,
            online: false,
            register_deadline: now + self.config.register_timeout,
            next_ping: now + self.config.ping_interval,
            ping: None,
        }));
        self.drain_exchange(now);
    }

    /// The control connection asked for could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, detail: String) {
        if matches!(self.link, Link::Connecting { .. }) {
            self.lose_server(now, ServerLoss::Unreachable { detail });
        }
    }

    /// Bytes arrived on the control connection.
    pub fn handle_tcp(&mut self, now: Instant, bytes: &[u8]) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        if let Err(e) = session.decoder.push(bytes) {
            let detail = format!("control connection: {e}");
            self.lose_server(now, ServerLoss::Unreachable { detail });
            return;
        }
        loop {
            let Link::Up(session) = &mut self.link else {
                return;
            };
            match session.decoder.next_message::<ServerMessage>() {
                Ok(Some(message)) => self.handle_message(now, message),
                Ok(None) => break,
                Err(e) => {
                    let detail = format!("control connection: {e}");
                    self.lose_server(now, ServerLoss::Unreachable { detail });
                    return;
                }
            }
        }
        self.drain_exchange(now);
    }

    /// The control connection closed (or failed).
    pub fn handle_tcp_closed(&mut self, now: Instant) {
        if matches!(self.link, Link::Up(_)) {
            self.lose_server(now, ServerLoss::Closed);
        }
    }

    // ---- inputs: the media socket ----

    /// A datagram arrived on the media socket.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Received<'a> {
        let from = SocketAddr::new(crate::addr::normalize(from.ip()), from.port());
        match channel::classify(bytes) {
            Kind::Stun => {
                if let Link::Up(session) = &mut self.link
                    && session.server == from
                {
                    session.client.handle_udp(now, Socket::Media, from, bytes);
                    self.drain_exchange(now);
                    return Received::Consumed;
                }
                if let Call::Up(up) = &mut self.call
                    && let Some(punch) = up.punch.as_mut()
                    && punch.handle_datagram(now, from, bytes)
                {
                    self.drain_punch(now);
                    return Received::Consumed;
                }
                Received::Dropped
            }
            Kind::ChannelData => match &mut self.call {
                Call::Up(up) if up.relay == from => match channel::decode(bytes) {
                    Ok(frame) if frame.channel == up.channel => {
                        up.last_heard = now;
                        Received::Media(frame.payload)
                    }
                    _ => Received::Dropped,
                },
                _ => Received::Dropped,
            },
            Kind::Rtp => match &mut self.call {
                Call::Up(up) => {
                    up.last_heard = now;
                    Received::Media(bytes)
                }
                _ => Received::Dropped,
            },
            Kind::Unknown => Received::Dropped,
        }
    }

    // ---- inputs: time ----

    /// Time passed: retransmissions, keepalives, pings, checks, deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.link {
            Link::Connecting { deadline } if now >= *deadline => {
                let detail = "no control connection in time".to_string();
                self.lose_server(now, ServerLoss::Unreachable { detail });
            }
            Link::Waiting { retry_at } if now >= *retry_at => self.connect(now),
            Link::Up(session) => {
                session.client.handle_timeout(now);
                if !session.online && now >= session.register_deadline {
                    let detail = if session.name_registered || session.client.is_registered() {
                        "registration not completed in time"
                    } else {
                        "no registration in time"
                    };
                    let detail = detail.to_string();
                    self.lose_server(now, ServerLoss::Unreachable { detail });
                } else if session.ping.is_some_and(|(_, due)| now >= due) {
                    tracing::warn!("the server did not answer a ping");
                    self.lose_server(now, ServerLoss::NotAnswering);
                } else if session.online && session.ping.is_none() && now >= session.next_ping {
                    self.ping(now);
                }
                self.drain_exchange(now);
            }
            _ => {}
        }
        match &mut self.call {
            Call::Waiting { deadline, .. } if now >= *deadline => {
                self.finish(now, EndReason::ServerUnreachable);
            }
            Call::Placing { id, deadline, .. } if now >= *deadline => {
                let id = *id;
                self.send(&ClientMessage::HangUp { call_id: id });
                self.finish(now, EndReason::Remote(control::EndReason::NoAnswer));
            }
            Call::Accepting { deadline, .. } if now >= *deadline => {
                self.finish(now, EndReason::ServerLost);
            }
            Call::Up(up) => {
                if let Some(punch) = up.punch.as_mut() {
                    punch.handle_timeout(now);
                }
                if now.saturating_duration_since(up.last_heard) >= self.config.peer_silence {
                    let id = up.id;
                    tracing::warn!("nothing from the peer for {:?}", self.config.peer_silence);
                    self.send(&ClientMessage::HangUp { call_id: id });
                    self.finish(now, EndReason::PeerSilent);
                } else {
                    self.drain_punch(now);
                }
            }
            _ => {}
        }
    }

    // ---- inputs: the user ----

    /// Calls `peer` (`echo` for the server's echo service).
    pub fn call(&mut self, now: Instant, peer: &str) -> Result<(), CommandError> {
        if !matches!(self.call, Call::Idle) {
            return Err(CommandError::AlreadyInCall);
        }
        if peer == self.config.name {
            self.events.push_back(Event::Ended {
                peer: peer.to_string(),
                reason: EndReason::SelfCall,
                connected: false,
            });
            return Ok(());
        }
        let id = self.rng.next_u64();
        let peer = peer.to_string();
        if self.is_online() {
            self.place(now, id, peer, now);
            return Ok(());
        }
        match self.link {
            Link::Replaced | Link::Stopped => {
                self.events.push_back(Event::Ended {
                    peer,
                    reason: EndReason::ServerUnreachable,
                    connected: false,
                });
                return Ok(());
            }
            // A call is worth trying again now rather than after the back-off.
            Link::Waiting { .. } => self.connect(now),
            Link::Connecting { .. } | Link::Up(_) => {}
        }
        tracing::info!(peer, "placing a call once registered");
        self.call = Call::Waiting {
            id,
            peer,
            placed: now,
            deadline: now + self.config.server_answer_timeout * 2,
        };
        Ok(())
    }

    /// Answers the ringing call.
    pub fn accept(&mut self, now: Instant) -> Result<(), CommandError> {
        let Call::Ringing { id, peer } = std::mem::replace(&mut self.call, Call::Idle) else {
            return Err(CommandError::NoCallToAccept);
        };
        let candidates = self.candidates();
        self.send(&ClientMessage::Accept {
            call_id: id,
            candidates,
        });
        self.call = Call::Accepting {
            id,
            peer,
            accepted: now,
            deadline: now + self.config.accept_timeout,
        };
        Ok(())
    }

    /// Declines the ringing call.
    pub fn reject(&mut self, now: Instant) -> Result<(), CommandError> {
        let Call::Ringing { id, .. } = self.call else {
            return Err(CommandError::NoCallToAccept);
        };
        self.send(&ClientMessage::Reject {
            call_id: id,
            reason: control::EndReason::Rejected,
        });
        self.finish(now, EndReason::Declined);
        Ok(())
    }

    /// Ends our side of whatever call there is: declines, cancels or hangs up.
    pub fn hang_up(&mut self, now: Instant) {
        match &self.call {
            Call::Idle => {}
            Call::Ringing { .. } => {
                let _ = self.reject(now);
            }
            Call::Waiting { .. } => self.finish(now, EndReason::Cancelled),
            Call::Placing { id, .. } => {
                let id = *id;
                self.send(&ClientMessage::HangUp { call_id: id });
                self.finish(now, EndReason::Cancelled);
            }
            Call::Accepting { .. } | Call::Up(_) => self.end_call_here(now, EndReason::HungUp),
        }
    }

    /// Ends the call because something failed here (the audio devices): the peer is told,
    /// and the call ends with [`EndReason::Local`].
    pub fn fail_call(&mut self, now: Instant) {
        self.end_call_here(now, EndReason::Local);
    }

    /// Connects and registers again now (after [`Registration::Replaced`], or to skip the
    /// back-off). Does nothing while connected or connecting.
    pub fn reconnect(&mut self, now: Instant) {
        if matches!(self.link, Link::Replaced | Link::Waiting { .. }) {
            self.backoff = Duration::ZERO;
            self.connect(now);
        }
    }

    /// Hangs up, says goodbye to the server and stops. Drain [`Phone::poll_tcp`] and
    /// [`Phone::poll_transmit`] once more before closing the sockets.
    pub fn shut_down(&mut self, now: Instant) {
        self.hang_up(now);
        if let Link::Up(session) = &mut self.link {
            session.client.close();
            while let Some(bytes) = session.client.poll_tcp() {
                self.tcp.push_back(TcpAction::Send(bytes));
            }
            self.tcp.push_back(TcpAction::Close);
        }
        self.link = Link::Stopped;
    }

    // ---- internals ----

    /// Hangs up a call that is accepted or up: over the server when it is there, and over
    /// the direct path always (the peer takes whichever comes first).
    fn end_call_here(&mut self, now: Instant, reason: EndReason) {
        let Some(id) = self.call.id() else {
            return;
        };
        self.send(&ClientMessage::HangUp { call_id: id });
        if let Call::Up(up) = &mut self.call
            && let Some(punch) = up.punch.as_mut()
        {
            punch.hang_up();
            self.drain_punch(now);
        }
        self.finish(now, reason);
    }

    /// Forgets the call, closing its checks, and says how it ended.
    fn finish(&mut self, _now: Instant, reason: EndReason) {
        let call = std::mem::replace(&mut self.call, Call::Idle);
        let (peer, connected) = match call {
            Call::Idle => return,
            Call::Waiting { peer, .. }
            | Call::Placing { peer, .. }
            | Call::Ringing { peer, .. }
            | Call::Accepting { peer, .. } => (peer, false),
            Call::Up(mut up) => {
                if let Some(punch) = up.punch.as_mut() {
                    punch.close();
                }
                (up.peer, true)
            }
        };
        tracing::info!(peer, reason = reason.as_str(), "call ended");
        self.events.push_back(Event::Ended {
            peer,
            reason,
            connected,
        });
    }

    fn connect(&mut self, now: Instant) {
        self.link = Link::Connecting {
            deadline: now + self.config.register_timeout,
        };
        self.tcp.push_back(TcpAction::Connect);
        self.events
            .push_back(Event::Registration(Registration::Connecting));
    }

    /// The control connection is gone or useless: calls that need it end, and the phone
    /// connects again after the back-off (or stops, when it never got online).
    fn lose_server(&mut self, now: Instant, reason: ServerLoss) {
        tracing::warn!(?reason, "lost the server");
        if matches!(self.link, Link::Up(_)) {
            self.tcp.push_back(TcpAction::Close);
        }
        let keep = match &self.call {
            Call::Idle | Call::Waiting { .. } => true,
            Call::Up(up) => matches!(up.path, MediaPath::Direct(_)),
            _ => false,
        };
        if !keep {
            self.finish(now, EndReason::ServerLost);
        }
        if !self.ever_online && self.config.stop_if_first_connect_fails {
            self.stop(now, StopReason::Unreachable {
                detail: reason.detail(),
            });
            return;
        }
        let retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2)
            .max(self.config.backoff_min)
            .min(self.config.backoff_max);
        self.link = Link::Waiting { retry_at };
        self.events
            .push_back(Event::Registration(Registration::Offline { reason, retry_at }));
    }

    fn stop(&mut self, now: Instant, reason: StopReason) {
        tracing::warn!(%reason, "the phone stops");
        if matches!(self.link, Link::Up(_)) {
            self.tcp.push_back(TcpAction::Close);
        }
        // Nothing reaches the server any more: a call in progress ends here.
        self.finish(now, EndReason::ServerLost);
        self.link = Link::Stopped;
        self.events.push_back(Event::Stopped(reason));
    }

    fn send(&mut self, message: &ClientMessage) {
        if let Link::Up(_) = self.link {
            self.tcp.push_back(TcpAction::Send(control::encode(message)));
        }
    }

    fn ping(&mut self, now: Instant) {
        let nonce = self.rng.next_u64();
        if let Link::Up(session) = &mut self.link {
            session.ping = Some((nonce, now + self.config.server_answer_timeout));
        }
        self.send(&ClientMessage::Ping { nonce });
    }

    fn place(&mut self, now: Instant, id: u64, peer: String, placed: Instant) {
        let candidates = self.candidates();
        tracing::info!(call_id = id, peer, ?candidates, "placing a call");
        self.send(&ClientMessage::Call {
            call_id: id,
            to: peer.clone(),
            candidates,
        });
        if matches!(&self.link, Link::Up(s) if s.ping.is_none()) {
            self.ping(now);
        }
        self.call = Call::Placing {
            id,
            peer,
            placed,
            deadline: now + self.config.call_timeout,
        };
    }

    /// Our candidates: host addresses, then the mapped one.
    fn candidates(&self) -> Vec<SocketAddr> {
        let Link::Up(session) = &self.link else {
            return Vec::new();
        };
        let mut out = session.host_candidates.clone();
        if let Some(mapped) = session.client.mapped()
            && !out.contains(&mapped)
        {
            out.truncate(MAX_CANDIDATES - 1);
            out.push(mapped);
        }
        out.truncate(MAX_CANDIDATES);
        out
    }

    fn handle_message(&mut self, now: Instant, message: ServerMessage) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        match message {
            ServerMessage::Welcome { ref challenge, .. } => {
                let challenge = unhex(challenge).filter(|c| !c.is_empty());
                session.client.handle_message(now, message);
                match challenge {
                    Some(challenge) => self.register_name(&challenge),
                    None => self.stop(now, StopReason::Incompatible {
                        detail: "the server has no call service (no registration challenge)"
                            .into(),
                    }),
                }
            }
            ServerMessage::UdpSeen { .. }
            | ServerMessage::ProbeSent { .. }
            | ServerMessage::ProbeFailed { .. } => session.client.handle_message(now, message),
            ServerMessage::Pong { nonce } => {
                if session.ping.is_some_and(|(n, _)| n == nonce) {
                    session.ping = None;
                    session.next_ping = now + self.config.ping_interval;
                }
            }
            ServerMessage::Registered { name } => {
                tracing::info!(name, "name registered");
                session.name_registered = true;
                self.maybe_online(now);
            }
            ServerMessage::Error { code, message } => self.handle_error(now, code, message),
            ServerMessage::Incoming {
                call_id,
                from,
                candidates,
            } => {
                if !matches!(self.call, Call::Idle) {
                    self.send(&ClientMessage::Reject {
                        call_id,
                        reason: control::EndReason::Busy,
                    });
                    return;
                }
                tracing::info!(call_id, from, ?candidates, "incoming call");
                self.send(&ClientMessage::Ringing { call_id });
                self.call = Call::Ringing {
                    id: call_id,
                    peer: from.clone(),
                };
                self.events.push_back(Event::Incoming { from });
            }
            ServerMessage::Ringing { call_id } => {
                if let Call::Placing { id, peer, .. } = &self.call
                    && *id == call_id
                {
                    let peer = peer.clone();
                    self.events.push_back(Event::Ringing { peer });
                }
            }
            ServerMessage::Connected {
                call_id,
                candidates,
                secret,
                channel,
            } => self.handle_connected_call(now, call_id, candidates, &secret, channel),
            ServerMessage::Ended { call_id, reason } => {
                if self.call.id() != Some(call_id) {
                    return;
                }
                // The server lost the peer's control connection, but a direct path that still
                // carries media says the peer is there: the call goes on (peer silence ends it
                // if the peer is really gone).
                if reason == control::EndReason::PeerLost
                    && let Call::Up(up) = &self.call
                    && matches!(up.path, MediaPath::Direct(_))
                {
                    tracing::info!("the server lost the peer; the direct path goes on");
                    return;
                }
                self.finish(now, EndReason::Remote(reason));
            }
        }
    }

    fn register_name(&mut self, challenge: &[u8]) {
        let name = self.config.name.clone();
        let signature = self.config.key.sign(&registration_message(&name, challenge));
        let public_key = hex(self.config.key.verifying_key().as_bytes());
        self.send(&ClientMessage::Register {
            name,
            public_key,
            signature: hex(&signature.to_bytes()),
        });
    }

    fn handle_error(&mut self, now: Instant, code: String, message: String) {
        let Link::Up(session) = &self.link else {
            return;
        };
        if !session.name_registered {
            // Anything refused before the name is ours is the registration.
            let reason = match code.as_str() {
                "name_taken" => StopReason::NameTaken,
                "bad_name" => StopReason::BadName,
                "bad_signature" => StopReason::BadSignature,
                "server_full" => StopReason::ServerFull,
                _ => StopReason::Incompatible {
                    detail: format!("{message} ({code})"),
                },
            };
            self.stop(now, reason);
            return;
        }
        if code == "replaced" {
            tracing::warn!("our name was registered from another connection");
            self.finish(now, EndReason::ServerLost);
            self.send(&ClientMessage::Bye);
            self.tcp.push_back(TcpAction::Close);
            self.link = Link::Replaced;
            self.events
                .push_back(Event::Registration(Registration::Replaced));
            return;
        }
        // A refusal of the call we are placing ends it.
        if matches!(self.call, Call::Placing { .. }) && code == "not_registered" {
            self.finish(now, EndReason::ServerLost);
        }
        self.events.push_back(Event::Refused { code, message });
    }

    fn handle_connected_call(
        &mut self,
        now: Instant,
        call_id: u64,
        candidates: Vec<SocketAddr>,
        secret: &str,
        channel: u16,
    ) {
        let (peer, setup_from) = match &self.call {
            Call::Placing { id, peer, placed, .. } if *id == call_id => (peer.clone(), *placed),
            Call::Accepting {
                id, peer, accepted, ..
            } if *id == call_id => (peer.clone(), *accepted),
            _ => {
                tracing::debug!(call_id, "Connected for no call of ours");
                return;
            }
        };
        let Link::Up(session) = &self.link else {
            return;
        };
        let relay = session.server;
        let punch = match unhex(secret) {
            Some(secret) if !candidates.is_empty() => Some(Punch::new(
                PunchConfig::new(secret, call_id, candidates.clone(), self.rng.next_u64()),
                now,
            )),
            _ => None,
        };
        let path = MediaPath::Relay {
            server: relay,
            channel,
        };
        tracing::info!(call_id, peer, channel, ?candidates, "call connected");
        self.call = Call::Up(Box::new(UpCall {
            id: call_id,
            peer: peer.clone(),
            channel,
            relay,
            punch,
            path,
            last_heard: now,
        }));
        self.events.push_back(Event::Connected {
            peer,
            path,
            setup_from,
        });
        if let Call::Up(up) = &mut self.call
            && let Some(punch) = up.punch.as_mut()
        {
            punch.handle_timeout(now);
        }
        self.drain_punch(now);
    }

    fn maybe_online(&mut self, now: Instant) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        if session.online || !session.name_registered || !session.client.is_registered() {
            return;
        }
        let Some(mapped) = session.client.mapped() else {
            return;
        };
        session.online = true;
        session.next_ping = now + self.config.ping_interval;
        self.ever_online = true;
        self.backoff = Duration::ZERO;
        let registration = Registration::Online {
            name: self.config.name.clone(),
            mapped,
            verdict: session.client.verdict(),
        };
        self.events.push_back(Event::Registration(registration));
        if let Call::Waiting { .. } = self.call
            && let Call::Waiting {
                id, peer, placed, ..
            } = std::mem::replace(&mut self.call, Call::Idle)
        {
            self.place(now, id, peer, placed);
        }
    }

    /// Moves what the exchange client queued out, and acts on its events.
    fn drain_exchange(&mut self, now: Instant) {
        loop {
            let Link::Up(session) = &mut self.link else {
                return;
            };
            while let Some(bytes) = session.client.poll_tcp() {
                self.tcp.push_back(TcpAction::Send(bytes));
            }
            while let Some(t) = session.client.poll_transmit() {
                if t.socket == Socket::Media {
                    self.transmits.push_back(Transmit {
                        destination: t.destination,
                        contents: t.contents,
                    });
                }
            }
            let Some(event) = session.client.poll_event() else {
                return;
            };
            match event {
                client::Event::Registered { mapped, .. } => {
                    tracing::debug!(%mapped, "media socket registered");
                    if session.online {
                        let registration = Registration::Online {
                            name: self.config.name.clone(),
                            mapped,
                            verdict: session.client.verdict(),
                        };
                        self.events.push_back(Event::Registration(registration));
                    } else {
                        self.maybe_online(now);
                    }
                }
                client::Event::Failed { reason } => {
                    self.lose_server(now, ServerLoss::Unreachable { detail: reason });
                    return;
                }
                other => tracing::debug!(event = ?other, "exchange"),
            }
        }
    }

    /// Moves what the punch queued out, and acts on its events.
    fn drain_punch(&mut self, now: Instant) {
        let Call::Up(up) = &mut self.call else {
            return;
        };
        let Some(punch) = up.punch.as_mut() else {
            return;
        };
        while let Some((destination, contents)) = punch.poll_transmit() {
            self.transmits.push_back(Transmit {
                destination,
                contents,
            });
        }
        let mut hung_up = false;
        while let Some(event) = punch.poll_event() {
            let path = match event {
                PunchEvent::DirectPath(addr) => MediaPath::Direct(addr),
                PunchEvent::DirectLost(_) => MediaPath::Relay {
                    server: up.relay,
                    channel: up.channel,
                },
                PunchEvent::PeerHungUp => {
                    hung_up = true;
                    break;
                }
            };
            if path != up.path {
                up.path = path;
                self.events.push_back(Event::PathChanged { path });
            }
        }
        let (id, on_relay) = (up.id, matches!(up.path, MediaPath::Relay { .. }));
        let server_there = matches!(&self.link, Link::Up(_));
        if hung_up {
            self.send(&ClientMessage::HangUp { call_id: id });
            self.finish(now, EndReason::Remote(control::EndReason::HungUp));
        } else if !server_there && on_relay {
            // Back on the relay with no server: nothing carries the media any more.
            self.finish(now, EndReason::ServerLost);
        }
    }
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
    fn end_reasons_have_stable_names() {
        use control::EndReason as Wire;
        assert_eq!(EndReason::HungUp.as_str(), "hung_up");
        assert_eq!(EndReason::Remote(Wire::HungUp).as_str(), "peer_hung_up");
        assert_eq!(EndReason::Remote(Wire::Busy).as_str(), "busy");
        assert_eq!(EndReason::ServerLost.as_str(), "server_lost");
        assert_eq!(
            serde_json::to_string(&EndReason::SelfCall).unwrap(),
            "\"self_call\""
        );
        assert!(EndReason::Remote(Wire::HungUp).is_normal());
        assert!(!EndReason::ServerLost.is_normal());
    }
}
