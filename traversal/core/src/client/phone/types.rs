//! The phone's public types: its settings, what it asks of the driver, what it tells the front
//! end, and the reasons a call ends or the phone stops.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde::Serialize;

pub use crate::client::e2e::{CallSecurity, MediaKey};
use crate::control::{self, Verdict};

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
    /// When the server is lost while the media is on its relay but the peer's connectivity
    /// checks already reach us, the call waits this long for the direct path before it ends
    /// with [`EndReason::ServerLost`].
    pub relay_grace: Duration,
    /// First wait before connecting again after a loss (after an immediate retry).
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Stop ([`StopReason::Unreachable`]) when the first connection fails, instead of retrying
    /// (with several [`PhoneConfig::servers`]: when every one of them failed).
    pub stop_if_first_connect_fails: bool,
    /// The servers to register with, in order, as the driver names them (`host:port`; the
    /// phone never resolves them, it only says which to connect to in [`TcpAction::Connect`]).
    /// The phone starts with the first; when its server is lost it tries the next at once,
    /// round the list, and waits the back-off only after a whole round failed. It stays on a
    /// server that works (no going back to the first). Empty: one server the driver knows
    /// (named `""`).
    pub servers: Vec<String>,
    /// Seeds the phone's cryptographic generator (ChaCha): call ids, transaction ids, the
    /// punch's sender id and every call's ephemeral key. The driver draws it from the OS.
    pub seed: [u8; 32],
}

impl PhoneConfig {
    /// The timings of `docs/calls.md` for `name` with `key`.
    pub fn new(name: String, key: SigningKey, seed: [u8; 32]) -> Self {
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
            relay_grace: Duration::from_secs(3),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            stop_if_first_connect_fails: true,
            servers: Vec::new(),
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
            .field("servers", &self.servers)
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
    /// The media socket carries IPv6 too (dual-stack): our global IPv6 addresses are
    /// candidates even when the server is reached over IPv4.
    pub media_ipv6: bool,
}

/// Something to do with the control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpAction {
    /// Open a control connection to `server` (dropping any old one); answer with
    /// [`Phone::handle_connected`] or [`Phone::handle_connect_failed`].
    Connect {
        /// Which server, as [`PhoneConfig::servers`] names it (`""` when it lists none).
        server: String,
    },
    /// Write these bytes.
    Send(Vec<u8>),
    /// Close the connection after writing what was queued before.
    Close,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// From which socket: the media socket, or a spare of birthday probing.
    pub local: crate::punch::Local,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
    /// Send it with this IP TTL (IPv6 hop limit), not the socket's: a hole-punching opener
    /// ([`crate::punch::PunchConfig::opener_ttls`]).
    pub ttl: Option<u8>,
}

/// Where the media of the call goes. Its `Debug` leaves the relay token out (logs are not
/// where a secret belongs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MediaPath {
    /// Straight to the peer at this address.
    Direct(SocketAddr),
    /// Through the server's relay, as ChannelData (RFC 8656 section 12.4) on `channel`, each
    /// frame carrying `token` ([`crate::channel::encode_relay_into`]).
    Relay {
        /// The server's UDP address.
        server: SocketAddr,
        /// The call's channel number (0x4000-0x4FFF).
        channel: u16,
        /// Our relay token for this call.
        token: [u8; crate::channel::TOKEN_LEN],
    },
}

impl std::fmt::Debug for MediaPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaPath::Direct(addr) => f.debug_tuple("Direct").field(addr).finish(),
            MediaPath::Relay {
                server, channel, ..
            } => f
                .debug_struct("Relay")
                .field("server", server)
                .field("channel", channel)
                .finish_non_exhaustive(),
        }
    }
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
        /// The server registered with, as [`PhoneConfig::servers`] names it (`""` when it
        /// lists none).
        server: String,
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
    /// The server said it is shutting down (a restart, an upgrade): not a failure. The phone
    /// registers again at the time it gave (`retry_at`), then with the usual back-off.
    ShuttingDown,
}

impl ServerLoss {
    pub(super) fn detail(&self) -> String {
        match self {
            ServerLoss::Closed => "the server closed the connection".into(),
            ServerLoss::Unreachable { detail } => detail.clone(),
            ServerLoss::NotAnswering => "the server stopped answering".into(),
            ServerLoss::ShuttingDown => "the server is shutting down".into(),
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
    /// The name looks like one registered with another key (the same confusable skeleton,
    /// Unicode UTS #39: `аlice` with a Cyrillic а, `ｂｏｂ`, `I`/`l`).
    NameConfusable,
    /// Our key already holds as many names as the server allows one key.
    TooManyNames,
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
    /// The server presented another certificate than the one pinned for it: someone may be
    /// in the middle. Nothing was sent. The user accepts the new one explicitly.
    UntrustedServer {
        /// The server as configured (`host:port`).
        server: String,
        /// The fingerprint we expected (`sha256:...`).
        pinned: String,
        /// The fingerprint it presented.
        presented: String,
    },
}

impl StopReason {
    /// The stable snake_case name (the server's code where it gave one).
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Unreachable { .. } => "server_unreachable",
            StopReason::NameTaken => "name_taken",
            StopReason::NameConfusable => "name_confusable",
            StopReason::TooManyNames => "too_many_names",
            StopReason::BadName => "bad_name",
            StopReason::BadSignature => "bad_signature",
            StopReason::ServerFull => "server_full",
            StopReason::Incompatible { .. } => "incompatible_server",
            StopReason::Local { .. } => "local_error",
            StopReason::UntrustedServer { .. } => "server_certificate_changed",
        }
    }
}

/// In words, with the stable name in parentheses: `the name is registered with another key
/// (name_taken)`.
impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.as_str();
        match self {
            StopReason::Unreachable { detail } => {
                write!(f, "server unreachable: {detail} ({code})")
            }
            StopReason::NameTaken => write!(f, "the name is registered with another key ({code})"),
            StopReason::NameConfusable => write!(
                f,
                "the name looks like a name registered with another key ({code})"
            ),
            StopReason::TooManyNames => write!(
                f,
                "this key already holds as many names as the server allows ({code})"
            ),
            StopReason::BadName => write!(f, "the server does not accept this name ({code})"),
            StopReason::BadSignature => {
                write!(f, "the server did not accept our signature ({code})")
            }
            StopReason::ServerFull => write!(f, "the server has no room for more users ({code})"),
            StopReason::Incompatible { detail } => {
                write!(f, "incompatible server: {detail} ({code})")
            }
            StopReason::Local { detail } => write!(f, "{detail} ({code})"),
            StopReason::UntrustedServer {
                server,
                pinned,
                presented,
            } => write!(
                f,
                "the certificate of {server} changed: it was {pinned}, it is now {presented}; \
                 someone may be intercepting the connection; if the server's operator replaced \
                 it, trust the new one ({code})"
            ),
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
    /// The server shut down (it had said so: a restart, an upgrade) while the call was on
    /// its relay; it relayed the call until then.
    ServerShutDown,
    /// The call was placed while the server could not be reached.
    ServerUnreachable,
    /// Nothing came from the peer for [`PhoneConfig::peer_silence`].
    PeerSilent,
    /// We called our own name.
    SelfCall,
    /// An audio device or socket failed here.
    Local,
    /// The peer's half of the key exchange did not verify (signature, commitment) or never
    /// came: the call is not private, so it ends.
    Insecure,
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
            EndReason::ServerShutDown => "server_shut_down",
            EndReason::ServerUnreachable => "server_unreachable",
            EndReason::SelfCall => "self_call",
            EndReason::Local => "local_error",
            EndReason::Insecure => "insecure",
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

/// In words, with the stable name in parentheses: `the peer declined the call (rejected)`.
impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use control::EndReason as Wire;
        let words = match self {
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
            EndReason::ServerShutDown => "the server shut down during the call (it had said so)",
            EndReason::ServerUnreachable => "the server could not be reached",
            EndReason::PeerSilent => "nothing more came from the peer",
            EndReason::SelfCall => "that is our own name",
            EndReason::Local => "the call failed on this machine",
            EndReason::Insecure => {
                "the other side's keys did not verify: the call could not be private"
            }
        };
        write!(f, "{words} ({})", self.as_str())
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
        /// The call's end-to-end keys, short authentication string and the peer's name key.
        security: CallSecurity,
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
    /// Birthday probing (`crate::punch::Birthday`): open this many spare UDP sockets (IPv4,
    /// any port), then say how many opened with [`Phone::spares_opened`](super::Phone::spares_opened).
    /// Datagrams from them go to [`Phone::handle_datagram_on`](super::Phone::handle_datagram_on); the
    /// driver closes them at [`Event::Ended`] at the latest.
    OpenSpares { count: u16 },
    /// Close the spare sockets, all but `keep` (the direct path's).
    CloseSpares { keep: Option<u16> },
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
