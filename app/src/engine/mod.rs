//! The call engine: a thin driver of the sans-IO [`Phone`](traversal::phone::Phone). It owns
//! the control connection, the media socket, the clock and the audio devices; the phone owns
//! every protocol decision (registration, signalling, punching, reconnects). See
//! docs/ARCHITECTURE.md, "The life of a call".
//!
//! It runs on a thread of its own with a tokio runtime. Front ends (the GUI, `pinhole call` and
//! `pinhole answer`) talk to it through channels: [`Command`]s in, [`Event`]s out.
//!
//! ```text
//!   Engine::start(config) -> thread: loop {
//!     select { command | control connection bytes | media socket | connect result
//!              | audio devices opened | 20 ms frame | 1 s stats | phone.poll_timeout() }
//!     -> feed the phone; drain its outputs: TCP actions, datagrams, events
//!   }
//! ```
//!
//! Audio devices open on a blocking thread (up to seconds for a sound server), so
//! keepalives, checks and signalling never stop for them.
//!
//! - [`media`]: one call's media (frame tick, voice session, path).
//! - [`direct`]: a call without a server, to explicit addresses (tests, the media loop alone).

pub mod direct;
pub mod echo_test;
pub mod media;
pub mod quality;
mod run;
mod spares;

use std::fmt;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ::media::audio::{LevelMeter, SinkSpec, SourceSpec};

pub use direct::{DirectCall, run_direct};
pub use echo_test::EchoLatency;
pub use media::{
    CallReport, CallSetup, DeviceMove, MediaCall, MediaConfig, ProcessingReport, RtpReport,
};

pub use crate::contacts::KeyCheck;

/// How a connected call is protected, as the people see it: the call view and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// The SRTP suite of the media (`AEAD_AES_128_GCM`).
    pub suite: &'static str,
    /// The short authentication string both people can compare (`None` for the echo service,
    /// which has no other side).
    pub sas: Option<String>,
    /// The peer's name key, hex (`None` for the echo service).
    pub peer_key: Option<String>,
    /// What the contacts say about that key (`None` for the echo service).
    pub key_check: Option<KeyCheck>,
}
pub use traversal::phone::{EndReason, MediaPath, PathKind, Registration, ServerLoss, StopReason};

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
    /// Send silence instead of the input (true) or the input again (false). Every call starts
    /// unmuted.
    Mute(bool),
    /// Output volume, 0.0 to 2.0 (1.0: unchanged).
    Volume(f32),
    /// Connect and register again now (after [`Registration::Replaced`], or to skip the wait).
    Reconnect,
    /// End any call, say goodbye to the server, stop the engine.
    Shutdown,
}

/// Which audio device failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioSide {
    /// The input.
    Microphone,
    /// The output.
    Speaker,
}

impl AudioSide {
    /// `"microphone"` or `"speaker"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioSide::Microphone => "microphone",
            AudioSide::Speaker => "speaker",
        }
    }
}

/// Something failed that does not stop the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// An audio device could not be opened or failed in a call (the call ends with
    /// [`EndReason::Local`] when it could not be opened).
    Audio {
        /// Which device.
        side: AudioSide,
        /// The error, for people.
        detail: String,
    },
    /// A call was placed while another is in progress.
    AlreadyInCall,
    /// Accept or Reject with nothing ringing.
    NoCallToAccept,
    /// The server refused something after registration.
    Refused {
        /// Its stable code.
        code: String,
        /// For people.
        message: String,
    },
    /// The contacts file cannot be read: peers' keys are remembered for this run only (the
    /// file is left as it is).
    Contacts {
        /// What is wrong with it.
        detail: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Audio { side, detail } => {
                let side = match side {
                    AudioSide::Microphone => "microphone",
                    AudioSide::Speaker => "speaker",
                };
                write!(f, "{side}: {detail}")
            }
            Warning::AlreadyInCall => f.write_str("already in a call; hang up first"),
            Warning::NoCallToAccept => f.write_str("no incoming call to answer"),
            Warning::Refused { code, message } => {
                write!(f, "the server refused: {message} ({code})")
            }
            Warning::Contacts { detail } => {
                write!(f, "contact keys not saved: {detail}")
            }
        }
    }
}

/// What the engine tells a front end.
#[derive(Debug, Clone)]
pub enum Event {
    /// The registration changed: the only source of the "online" line.
    Registration(Registration),
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
    /// The call is up: media flows (on the relay first), unmuted.
    Connected {
        /// The other party.
        peer: String,
        /// Level of what we send (for a meter).
        input_meter: LevelMeter,
        /// Level of what we play (for a meter).
        output_meter: LevelMeter,
        /// The call's encryption and the peer's key.
        security: Security,
    },
    /// The microphone's mute state: after [`Command::Mute`], and `false` when a call starts.
    Muted(bool),
    /// The call's figures, every second while connected.
    Stats(CallReport),
    /// A device of the call vanished and the call uses the system default since.
    DeviceMoved {
        /// Which one.
        side: AudioSide,
        /// What vanished, what is used now, and why.
        moved: DeviceMove,
        /// The level of the new device (replaces the meter of [`Event::Connected`]).
        meter: LevelMeter,
    },
    /// The router's port mapping for the media socket changed (asked, mapped, unavailable).
    PortMapping(traversal::portmap::Status),
    /// The media moved between relay and direct.
    PathChanged {
        /// The path now.
        path: PathKind,
        /// The peer's address on a direct path.
        remote: Option<std::net::SocketAddr>,
    },
    /// The call (placed, incoming or connected) is over.
    Ended {
        /// Why.
        reason: EndReason,
        /// The other party.
        peer: String,
        /// Whether the call had connected.
        connected: bool,
        /// The figures (with `end` set), for a call whose media had started.
        report: Option<CallReport>,
    },
    /// Something failed that does not stop the engine.
    Warning(Warning),
    /// The engine stopped: after [`Command::Shutdown`] (`reason: None`) or because it cannot
    /// go on.
    Stopped {
        /// Why, when it was not asked to.
        reason: Option<StopReason>,
    },
}

/// Called after every event is queued: the GUI passes `ctx.request_repaint()`.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// How the engine runs.
#[derive(Clone)]
pub struct EngineConfig {
    /// The rendezvous server, `host:port`; or several, comma-separated (`a:3478, b:3478`):
    /// the engine registers with the first that answers and moves to the next when its server
    /// is lost or goes away ([`EngineConfig::servers`]).
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
    /// Which certificates of the server to trust (pinned fingerprint, known-servers file).
    pub trust: traversal::tls::ClientTrust,
    /// The file of peers' name keys remembered from earlier calls (`None`: remembered for this
    /// run only).
    pub contacts: Option<std::path::PathBuf>,
    /// Ask the router to map the media port (PCP, NAT-PMP, UPnP IGD) when the server is
    /// beyond the local network ([`traversal::portmap`]).
    pub port_mapping: bool,
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
            trust: traversal::tls::ClientTrust::default(),
            contacts: None,
            port_mapping: true,
        }
    }
}

impl EngineConfig {
    /// The servers of [`EngineConfig::server`], in order: each comma-separated entry, trimmed
    /// (empty entries skipped).
    pub fn servers(&self) -> Vec<String> {
        split_servers(&self.server)
    }
}

/// The entries of a comma-separated server list, trimmed, empty ones skipped.
pub fn split_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
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
            .field("port_mapping", &self.port_mapping)
            .finish_non_exhaustive()
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source or sink could not be opened or run.
    #[error(transparent)]
    Audio(#[from] ::media::audio::AudioError),
    /// The voice pipeline could not start.
    #[error("voice: {0}")]
    Voice(#[from] ::media::voice::VoiceError),
    /// The call's keys could not be set up.
    #[error("media encryption: {0}")]
    Keys(#[from] ::media::srtp::SrtpError),
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
