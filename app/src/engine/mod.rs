//! The call engine: it owns the media socket and the clock, and drives the sans-IO parts (the
//! traversal [`Client`](traversal::client::Client): registration and keepalive; call
//! signalling; [`Punch`](traversal::punch::Punch): connectivity checks; a voice session) with
//! audio from a source to a sink. See docs/calls.md, "The client engine".
//!
//! It runs on a thread of its own with a tokio runtime. Front ends (the GUI, `pinhole call` and
//! `pinhole answer`) talk to it through channels: [`Command`]s in, [`Event`]s out.
//!
//! ```text
//!   Engine::start(config) -> thread: connect, register (name + key), then loop:
//!     select { control connection | media socket | timers (client, punch, 20 ms frame, 1 s stats)
//!              | commands }
//!     -> drain the client's and punch's outputs; events to the front end
//! ```
//!
//! - [`media`]: one call's media loop (frame tick, demultiplexing, relay framing, path switch).
//! - [`direct`]: a call without a server, to explicit addresses (tests, the media loop alone).

pub mod direct;
pub mod media;
mod run;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ::media::audio::{LevelMeter, SinkSpec, SourceSpec};

pub use direct::{DirectCall, run_direct};
pub use media::{CallReport, MediaCall, MediaConfig, MediaPath, PathKind, RtpReport};

/// What a front end asks of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Call this name (`echo` for the server's echo service).
    Call(String),
    /// Answer the ringing incoming call.
    Accept,
    /// Decline the ringing incoming call.
    Reject,
    /// End the call (before an answer: cancel it).
    HangUp,
    /// Send silence instead of the input (true) or the input again (false).
    Mute(bool),
    /// Output volume, 0.0 to 2.0 (1.0: unchanged).
    Volume(f32),
    /// End any call, say goodbye to the server, stop the engine.
    Shutdown,
}

/// Why a call ended, for people and for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// One side hung up after the call connected.
    HungUp,
    /// The caller gave up before an answer.
    Cancelled,
    /// The callee declined.
    Rejected,
    /// The callee is in another call.
    Busy,
    /// No such name online.
    Offline,
    /// Nobody answered in time.
    NoAnswer,
    /// The other side vanished (its connection dropped, its keepalives stopped).
    PeerLost,
    /// The server failed or dropped the call.
    ServerError,
    /// The server refused to relay another call for this client.
    RelayLimit,
    /// Something on this machine failed (audio device, socket).
    LocalError,
}

impl EndReason {
    /// The stable snake_case name (as on the wire and in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::HungUp => "hung_up",
            EndReason::Cancelled => "cancelled",
            EndReason::Rejected => "rejected",
            EndReason::Busy => "busy",
            EndReason::Offline => "offline",
            EndReason::NoAnswer => "no_answer",
            EndReason::PeerLost => "peer_lost",
            EndReason::ServerError => "server_error",
            EndReason::RelayLimit => "relay_limit",
            EndReason::LocalError => "local_error",
        }
    }

    /// In words a person understands.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::HungUp => "the call ended",
            EndReason::Cancelled => "the call was cancelled",
            EndReason::Rejected => "the call was rejected",
            EndReason::Busy => "the peer is busy in another call",
            EndReason::Offline => "the peer is offline (no such name is registered)",
            EndReason::NoAnswer => "no answer",
            EndReason::PeerLost => "the connection to the peer was lost",
            EndReason::ServerError => "the server ended the call (server error)",
            EndReason::RelayLimit => "the server refused to relay the call (relay limit)",
            EndReason::LocalError => "the call failed on this machine",
        }
    }

    /// True for an end that is part of a normal call (someone hung up).
    pub fn is_normal(self) -> bool {
        matches!(self, EndReason::HungUp)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What the engine tells a front end.
#[derive(Debug, Clone)]
pub enum Event {
    /// Registered with the server under `name`; the server sees the media socket at `mapped`.
    Registered {
        /// Our name.
        name: String,
        /// The media socket's mapped address.
        mapped: SocketAddr,
        /// The NAT verdict of the traversal exchange (`public`, `proxy` or `nat`).
        verdict: Option<traversal::control::Verdict>,
    },
    /// Someone calls: answer with [`Command::Accept`] or [`Command::Reject`].
    Incoming {
        /// The caller's name.
        from: String,
    },
    /// The peer's phone rings.
    Ringing {
        /// Whom we call.
        peer: String,
    },
    /// The call is up: media flows (on the relay first).
    Connected {
        /// The other party.
        peer: String,
        /// Level of what we send (for a meter).
        input_meter: LevelMeter,
        /// Level of what we play (for a meter).
        output_meter: LevelMeter,
    },
    /// The call's figures, every second while connected.
    Stats(CallReport),
    /// The media moved between relay and direct.
    PathChanged {
        /// The path now.
        path: PathKind,
        /// The peer's address on a direct path.
        remote: Option<SocketAddr>,
    },
    /// The call (placed, incoming or connected) is over.
    Ended {
        /// Why.
        reason: EndReason,
        /// The other party.
        peer: String,
        /// Whether the call had connected.
        connected: bool,
        /// The figures, for a call that connected.
        report: Option<CallReport>,
    },
    /// Something went wrong that does not stop the engine (one line).
    Error(String),
    /// The engine stopped: after [`Command::Shutdown`] (`error: None`) or because it cannot
    /// go on (the server is unreachable, the name is taken...).
    Stopped {
        /// Why, when it was not asked to.
        error: Option<String>,
    },
}

/// Called after every event is queued: the GUI passes `ctx.request_repaint()`.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// How the engine runs.
#[derive(Clone)]
pub struct EngineConfig {
    /// The rendezvous server, `host:port`.
    pub server: String,
    /// Our name.
    pub name: String,
    /// The key that proves the name.
    pub key: ed25519_dalek::SigningKey,
    /// What we send.
    pub input: SourceSpec,
    /// Where what we receive goes.
    pub output: SinkSpec,
    /// Codec settings.
    pub media: MediaConfig,
    /// Local UDP port of the media socket; 0: any.
    pub udp_port: u16,
    /// Keepalive interval; `None`: the traversal client's default.
    pub keepalive: Option<Duration>,
    /// How long to reach the server and register before giving up.
    pub connect_timeout: Duration,
    /// How long a placed call may go unanswered before the engine cancels it (the server ends
    /// it at 30 s; this is a bound in case it does not).
    pub call_timeout: Duration,
    /// Called after each event (wake the GUI).
    pub notify: Option<Notify>,
}

impl EngineConfig {
    /// Defaults for everything but who and where.
    pub fn new(server: String, name: String, key: ed25519_dalek::SigningKey) -> Self {
        Self {
            server,
            name,
            key,
            input: SourceSpec::Device { name: None },
            output: SinkSpec::Device { name: None },
            media: MediaConfig::default(),
            udp_port: 0,
            keepalive: None,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(35),
            notify: None,
        }
    }
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("key", &"<secret>")
            .field("input", &self.input)
            .field("output", &self.output)
            .field("media", &self.media)
            .field("udp_port", &self.udp_port)
            .field("keepalive", &self.keepalive)
            .field("connect_timeout", &self.connect_timeout)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Why the engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source or sink could not be opened or run.
    #[error(transparent)]
    Audio(#[from] ::media::audio::AudioError),
    /// The voice pipeline could not start.
    #[error("voice: {0}")]
    Voice(#[from] ::media::voice::VoiceError),
    /// A socket or runtime error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A cloneable way to send commands to a running engine (for a signal handler, say).
#[derive(Debug, Clone)]
pub struct CommandSender(tokio::sync::mpsc::UnboundedSender<Command>);

impl CommandSender {
    /// Sends a command; false when the engine has stopped.
    pub fn send(&self, command: Command) -> bool {
        self.0.send(command).is_ok()
    }
}

/// A running engine: its thread, the command channel in and the event channel out. Dropping
/// it shuts the engine down (and waits for it: the call is hung up, a WAV file finalised).
#[derive(Debug)]
pub struct Engine {
    commands: CommandSender,
    events: mpsc::Receiver<Event>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine on its own thread: it connects to the server and registers at once
    /// ([`Event::Registered`], or [`Event::Stopped`] with the reason).
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let (command_tx, command_rx) = tokio::sync::mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pinhole-engine".into())
            .spawn(move || run::run(config, command_rx, event_tx))?;
        Ok(Self {
            commands: CommandSender(command_tx),
            events: event_rx,
            thread: Some(thread),
        })
    }

    /// Sends a command; false when the engine has stopped.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command)
    }

    /// A sender of commands that can be moved to another thread.
    pub fn command_sender(&self) -> CommandSender {
        self.commands.clone()
    }

    /// The next event if there is one (never blocks: for the GUI's frame).
    pub fn try_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or when the engine is
    /// gone.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// True once the engine's thread has finished.
    pub fn is_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the engine thread panicked");
        }
    }
}
