//! The desktop app's views (egui). They hold view state only: settings go through
//! [`crate::settings`], calls run in the engine off the UI thread.
//!
//! [`PinholeApp::show`] draws one frame into a `Ui`; the binary wraps it in an `eframe::App`, and
//! the tests drive it with `egui_kittest` without a window.
//!
//! ```text
//!   show(ui) -> poll the engine's events (never waits) -> update call and link state
//!            -> draw the view: Setup | Main | Settings | Incoming | Calling | InCall
//!            -> clicks become engine Commands; slow work (NAT check, devices, sounds) goes
//!               to threads that wake the UI with request_repaint() when done
//! ```
//!
//! - [`backend`]: the engine behind a trait ([`CallEngine`]): the real one or a fake for tests.
//! - [`sound`]: ringtone, test sound, input level meter (threads of their own).
//! - [`net`]: NAT check and the embedded rendezvous server.
//! - [`contacts`]: contacts and recent calls, persisted next to the settings.

pub mod backend;
pub mod contacts;
pub mod net;
pub mod sound;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use egui::{Color32, RichText};
use media::audio::{LevelMeter, SinkSpec, SourceSpec};
use traversal::rendezvous::Rendezvous;

use crate::engine::{
    CallReport, Command, EndReason, EngineConfig, Event, MediaConfig, PathKind, Registration,
    StopReason,
};
use crate::settings::{self, AddrError, Settings};
use traversal::control::EndReason as WireReason;

pub use backend::{CallEngine, FakeEngine, StartEngine, real_engine};
use contacts::Book;
use net::NatReport;
use sound::{InputMonitor, MonitorState, Ringer, Wake};

/// How long to wait before reaching the server again after it could not be reached.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Time allowed for the NAT check.
const NAT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Meters and timers repaint this often while they move (20 Hz).
const METER_REPAINT: Duration = Duration::from_millis(50);

/// Which view fills the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// First run: no settings file yet.
    Setup,
    /// Who you are, where you are registered, a field to call a name.
    Main,
    /// The same fields as setup, plus advanced ones.
    Settings,
    /// Someone calls: accept or reject.
    Incoming,
    /// We call: waiting for the answer.
    Calling,
    /// A call is up.
    InCall,
}

/// The devices the pickers offer, as the audio layer lists them.
#[derive(Debug, Clone, Default)]
pub struct DeviceList {
    /// Capture device names.
    pub inputs: Vec<String>,
    /// Playback device names.
    pub outputs: Vec<String>,
}

impl DeviceList {
    /// What cpal sees (names only, each once). Slow on some systems: call it off the UI
    /// thread ([`PinholeApp::list_devices_in_background`]).
    pub fn from_system() -> Self {
        Self {
            inputs: usable_names(&media::audio::input_devices().unwrap_or_default()),
            outputs: usable_names(&media::audio::output_devices().unwrap_or_default()),
        }
    }
}

/// The names worth offering a person, each once: devices that report at least one stream
/// configuration (ALSA lists plugins that cannot open on their own), without the system default
/// (the picker's first entry) and ALSA's `null` (it discards everything).
pub fn usable_names(list: &[media::audio::DeviceInfo]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in list {
        let useless = d.configs.is_empty() || d.is_default || d.id == "null";
        if !useless && !out.contains(&d.name) {
            out.push(d.name.clone());
        }
    }
    out
}

/// Where the app stands with its server.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// No engine (no settings yet, or the engine is off).
    Off,
    /// Reaching the server and registering.
    Connecting {
        /// The server.
        server: String,
    },
    /// Registered: calls can go out and come in.
    Registered {
        /// Our name.
        name: String,
        /// The server.
        server: String,
        /// Our media socket's address as the server sees it.
        mapped: SocketAddr,
    },
    /// The server could not be reached (or refused us); the app tries again.
    Failed {
        /// The server.
        server: String,
        /// Why, in one line.
        error: String,
    },
}

/// The call in progress.
#[derive(Debug)]
enum Call {
    Idle,
    /// We called `peer`; `ringing` once its phone rings.
    Placing {
        peer: String,
        ringing: bool,
        since: Instant,
    },
    /// `from` calls us; `answered` once Accept is sent.
    Incoming {
        from: String,
        answered: bool,
        ringer: Option<Ringer>,
        attention: bool,
    },
    /// The call is up.
    Up(Box<UpCall>),
}

#[derive(Debug)]
struct UpCall {
    peer: String,
    outgoing: bool,
    since: Instant,
    input: LevelMeter,
    output: LevelMeter,
    stats: Option<CallReport>,
    path: PathKind,
    remote: Option<SocketAddr>,
}

/// A line shown on the main view until the next call (the last call's outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What to say.
    pub text: String,
    /// Whether it reports a failure.
    pub failure: bool,
}

/// The NAT check's state.
#[derive(Debug)]
enum NatState {
    Idle,
    Running(mpsc::Receiver<Result<NatReport, String>>),
    Done(Result<NatReport, String>),
}

/// Frame time of [`PinholeApp::show`], for measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameStats {
    /// Frames drawn.
    pub frames: u64,
    /// Total time in `show`.
    pub total: Duration,
    /// The slowest frame.
    pub max: Duration,
}

impl FrameStats {
    /// Mean time per frame.
    pub fn mean(&self) -> Duration {
        if self.frames == 0 {
            Duration::ZERO
        } else {
            self.total / u32::try_from(self.frames).unwrap_or(u32::MAX)
        }
    }
}

/// The whole app's view state.
pub struct PinholeApp {
    path: PathBuf,
    saved: Option<Settings>,
    form: Settings,
    /// Text of the advanced numeric fields, kept as typed so that a half-typed number is not lost.
    bitrate_text: String,
    keepalive_text: String,
    devices: DeviceList,
    devices_rx: Option<mpsc::Receiver<DeviceList>>,
    view: View,
    /// A problem loading or saving the settings file, shown until the next successful save.
    file_error: Option<String>,

    start_engine: StartEngine,
    engine: Option<Box<dyn CallEngine>>,
    link: Link,
    retry_at: Option<Instant>,
    embedded: Option<(bool, Rendezvous)>,
    lan_hint: Option<String>,
    input_spec: Option<SourceSpec>,
    output_spec: Option<SinkSpec>,
    sounds: bool,
    wake: Option<Wake>,

    call: Call,
    muted: bool,
    volume: f32,
    last_error: Option<String>,
    notice: Option<Notice>,
    call_field: String,
    book: Book,
    book_path: PathBuf,
    book_error: Option<String>,

    nat: NatState,
    nat_server: Option<String>,
    monitor: Option<InputMonitor>,
    test_sound: Option<mpsc::Receiver<Result<(), String>>>,
    test_sound_result: Option<Result<(), String>>,
    frames: FrameStats,
}

impl std::fmt::Debug for PinholeApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinholeApp")
            .field("path", &self.path)
            .field("view", &self.view())
            .field("link", &self.link)
            .field("call", &self.call)
            .field("notice", &self.notice)
            .finish_non_exhaustive()
    }
}

impl PinholeApp {
    /// Starts from the settings file at `path`: its absence means first run. A file that cannot
    /// be read is reported in the setup view and left untouched until the user saves. Calls go
    /// through the real engine; see [`PinholeApp::with_engine`].
    pub fn new(path: PathBuf, devices: DeviceList) -> Self {
        let (saved, file_error) = match settings::load(&path) {
            Ok(saved) => (saved, None),
            Err(err) => (
                None,
                Some(format!("Your settings could not be read: {err}")),
            ),
        };
        let form = saved.clone().unwrap_or_default();
        let view = if saved.is_some() {
            View::Main
        } else {
            View::Setup
        };
        let book_path = contacts::path_next_to(&path);
        let (book, book_error) = match contacts::load(&book_path) {
            Ok(book) => (book, None),
            Err(e) => (Book::default(), Some(e)),
        };
        let mut app = Self {
            path,
            saved,
            bitrate_text: String::new(),
            keepalive_text: String::new(),
            form,
            devices,
            devices_rx: None,
            view,
            file_error,
            start_engine: real_engine(),
            engine: None,
            link: Link::Off,
            retry_at: None,
            embedded: None,
            lan_hint: None,
            input_spec: None,
            output_spec: None,
            sounds: true,
            wake: None,
            call: Call::Idle,
            muted: false,
            volume: 1.0,
            last_error: None,
            notice: None,
            call_field: String::new(),
            book,
            book_path,
            book_error,
            nat: NatState::Idle,
            nat_server: None,
            monitor: None,
            test_sound: None,
            test_sound_result: None,
            frames: FrameStats::default(),
        };
        app.reset_form_text();
        app
    }

    /// Uses another engine (a [`FakeEngine`] in tests).
    pub fn with_engine(mut self, start: StartEngine) -> Self {
        self.start_engine = start;
        self
    }

    /// Audio for calls other than the settings' devices (`tone:440` and `null` in tests).
    pub fn with_audio(mut self, input: SourceSpec, output: SinkSpec) -> Self {
        self.input_spec = Some(input);
        self.output_spec = Some(output);
        self
    }

    /// Turns off the app's own sounds (ringtone) and device monitors: for tests on machines
    /// without a sound card.
    pub fn without_sounds(mut self) -> Self {
        self.sounds = false;
        self
    }

    /// Repaints through `ctx` when background work finishes (before the first frame, too).
    pub fn with_repaint(mut self, ctx: egui::Context) -> Self {
        self.wake = Some(Arc::new(move || ctx.request_repaint()));
        self
    }

    /// Lists the audio devices on a thread; the pickers fill in when it is done.
    pub fn list_devices_in_background(mut self) -> Self {
        let (tx, rx) = mpsc::channel();
        let wake = self.wake.clone();
        let spawned = std::thread::Builder::new()
            .name("pinhole-devices".into())
            .spawn(move || {
                let _ = tx.send(DeviceList::from_system());
                if let Some(wake) = wake {
                    wake();
                }
            });
        if spawned.is_ok() {
            self.devices_rx = Some(rx);
        }
        self
    }

    /// The view on screen.
    pub fn view(&self) -> View {
        match &self.call {
            Call::Idle => self.view,
            Call::Placing { .. } => View::Calling,
            Call::Incoming { .. } => View::Incoming,
            Call::Up(_) => View::InCall,
        }
    }

    /// The settings as last saved, if any.
    pub fn saved(&self) -> Option<&Settings> {
        self.saved.as_ref()
    }

    /// Where the app stands with its server.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The last call's outcome, as shown on the main view.
    pub fn notice(&self) -> Option<&Notice> {
        self.notice.as_ref()
    }

    /// Contacts and recent calls.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The latest statistics of the call in progress.
    pub fn call_stats(&self) -> Option<&CallReport> {
        match &self.call {
            Call::Up(up) => up.stats.as_ref(),
            _ => None,
        }
    }

    /// The embedded server's address, when it runs.
    pub fn embedded_server(&self) -> Option<SocketAddr> {
        self.embedded.as_ref().map(|(_, s)| s.local_addr())
    }

    /// How long `show` took per frame so far.
    pub fn frame_stats(&self) -> FrameStats {
        self.frames
    }

    fn reset_form_text(&mut self) {
        self.bitrate_text = (self.form.advanced.bitrate_bps / 1000).to_string();
        self.keepalive_text = self
            .form
            .advanced
            .keepalive_s
            .map(|k| k.to_string())
            .unwrap_or_default();
    }

    /// Draws one frame.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let start = Instant::now();
        if self.wake.is_none() {
            let ctx = ui.ctx().clone();
            self.wake = Some(Arc::new(move || ctx.request_repaint()));
        }
        if let Some(rx) = &self.devices_rx
            && let Ok(list) = rx.try_recv()
        {
            self.devices = list;
            self.devices_rx = None;
        }
        self.ensure_engine();
        self.poll_engine();
        self.poll_nat();

        match self.view() {
            View::Setup => self.setup_view(ui),
            View::Main => self.main_view(ui),
            View::Settings => self.settings_view(ui),
            View::Incoming => self.incoming_view(ui),
            View::Calling => self.calling_view(ui),
            View::InCall => self.in_call_view(ui),
        }
        if self.view() != View::Settings {
            self.monitor = None;
        }
        if let Some(at) = self.retry_at {
            ui.ctx()
                .request_repaint_after(at.saturating_duration_since(Instant::now()));
        }

        let took = start.elapsed();
        self.frames.frames += 1;
        self.frames.total += took;
        self.frames.max = self.frames.max.max(took);
    }

    // ----- engine -----

    /// Starts the engine when there are settings and none runs (again after a failure, once
    /// the retry time has come).
    fn ensure_engine(&mut self) {
        if self.engine.is_some() || matches!(self.view, View::Setup) {
            return;
        }
        let Some(mut saved) = self.saved.clone() else {
            return;
        };
        match self.retry_at {
            Some(at) if Instant::now() < at => return,
            Some(_) => self.retry_at = None,
            // Failed for good (a taken name): wait for "Try again now" or new settings.
            None if matches!(self.link, Link::Failed { .. }) => return,
            None => {}
        }
        let server = match self.server_target(&saved) {
            Ok(server) => server,
            Err(error) => {
                self.link = Link::Failed {
                    server: saved.server.clone(),
                    error,
                };
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                return;
            }
        };
        let key = match saved.ensure_key() {
            Ok((key, created)) => {
                if created {
                    if let Err(e) = settings::save(&self.path, &saved) {
                        self.file_error = Some(format!("Your key could not be saved: {e}"));
                    }
                    self.saved = Some(saved.clone());
                }
                key
            }
            Err(e) => {
                self.link = Link::Failed {
                    server,
                    error: format!("your settings hold a bad key: {e}"),
                };
                return;
            }
        };
        let mut config = EngineConfig::new(server.clone(), saved.name.trim().to_owned(), key);
        config.input = self.input_spec.clone().unwrap_or(SourceSpec::Device {
            name: saved.input_device.clone(),
        });
        config.output = self.output_spec.clone().unwrap_or(SinkSpec::Device {
            name: saved.output_device.clone(),
        });
        config.media = MediaConfig {
            frame_ms: saved.advanced.frame_ms,
            bitrate_bps: saved.advanced.bitrate_bps,
            ..MediaConfig::default()
        };
        config.udp_port = saved.advanced.udp_port;
        config.keepalive = saved
            .advanced
            .keepalive_s
            .map(|s| Duration::from_secs(u64::from(s)));
        config.notify = self.wake.clone();
        match (self.start_engine)(config) {
            Ok(engine) => {
                self.engine = Some(engine);
                self.link = Link::Connecting { server };
            }
            Err(error) => {
                // Trying again helps a server that is down, not a name someone else owns.
                self.retry_at = retry_helps(&error).then(|| Instant::now() + RETRY_AFTER);
                self.link = Link::Failed { server, error };
            }
        }
    }

    /// The server to use for `saved`: the configured one, or the embedded server (started
    /// here when needed).
    fn server_target(&mut self, saved: &Settings) -> Result<String, String> {
        match saved.server_addr() {
            Ok(Some(addr)) => {
                self.embedded = None;
                Ok(addr.to_string())
            }
            Ok(None) => {
                let lan = saved.advanced.embedded_server_lan;
                if self.embedded.as_ref().is_some_and(|(l, _)| *l != lan) {
                    self.embedded = None;
                }
                if self.embedded.is_none() {
                    let server = net::start_embedded(lan)
                        .map_err(|e| format!("the built-in server could not start: {e}"))?;
                    tracing::info!(addr = %server.local_addr(), "built-in server listening");
                    // Where other machines find it (asked once: it reads the interfaces).
                    let port = server.local_addr().port();
                    let shown: Vec<String> = net::lan_addresses()
                        .iter()
                        .map(|ip| SocketAddr::new(*ip, port).to_string())
                        .collect();
                    self.lan_hint = (lan && !shown.is_empty()).then(|| shown.join(" or "));
                    self.embedded = Some((lan, server));
                }
                self.embedded
                    .as_ref()
                    .map(|(_, s)| net::embedded_target(s).to_string())
                    .ok_or_else(|| "the built-in server is not running".to_owned())
            }
            Err(e) => Err(server_message(&e)),
        }
    }

    /// The server "Test connection" checks: the form's, or the built-in one. Unlike
    /// [`Self::server_target`] it never stops or moves the running built-in server (the form is
    /// not saved yet).
    fn test_target(&mut self, form: &Settings) -> Result<String, String> {
        match form.server_addr() {
            Ok(Some(addr)) => Ok(addr.to_string()),
            Ok(None) => match &self.embedded {
                Some((_, server)) => Ok(net::embedded_target(server).to_string()),
                None => self.server_target(form),
            },
            Err(e) => Err(server_message(&e)),
        }
    }

    /// Stops the engine without waiting for it (its goodbye to the server runs on a thread).
    fn stop_engine(&mut self) {
        if let Some(engine) = self.engine.take() {
            let _ = std::thread::Builder::new()
                .name("pinhole-engine-stop".into())
                .spawn(move || drop(engine));
        }
        self.call = Call::Idle;
        self.link = Link::Off;
        self.retry_at = None;
        self.nat = NatState::Idle;
        self.nat_server = None;
    }

    fn send(&mut self, command: Command) {
        let sent = self.engine.as_ref().is_some_and(|e| e.send(command));
        if !sent {
            self.notice = Some(Notice {
                text: "The call engine is not running.".into(),
                failure: true,
            });
        }
    }

    fn poll_engine(&mut self) {
        // A bounded batch per frame: a flood of events never stalls drawing.
        for _ in 0..64 {
            let Some(event) = self.engine.as_ref().and_then(|e| e.try_event()) else {
                break;
            };
            self.handle_event(event);
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Registration(Registration::Online {
                name,
                mapped,
                verdict,
            }) => {
                let server = self.link_server();
                self.link = Link::Registered {
                    name,
                    server: server.clone(),
                    mapped,
                };
                self.retry_at = None;
                match verdict {
                    Some(verdict) => {
                        self.nat = NatState::Done(Ok(NatReport {
                            verdict: verdict.as_str().to_owned(),
                            mapped,
                            elapsed: Duration::ZERO,
                        }));
                        self.nat_server = Some(server);
                    }
                    None if self.nat_server.as_deref() != Some(server.as_str()) => {
                        self.start_nat_check(server);
                    }
                    None => {}
                }
            }
            Event::Incoming { from } => {
                let ringer = (self.sounds).then(|| {
                    Ringer::start(self.saved.as_ref().and_then(|s| s.output_device.clone()))
                });
                self.last_error = None;
                self.call = Call::Incoming {
                    from,
                    answered: false,
                    ringer,
                    attention: false,
                };
            }
            Event::Ringing { .. } => {
                if let Call::Placing { ringing, .. } = &mut self.call {
                    *ringing = true;
                }
            }
            Event::Connected {
                peer,
                input_meter,
                output_meter,
            } => {
                let outgoing = matches!(self.call, Call::Placing { .. });
                self.call = Call::Up(Box::new(UpCall {
                    peer,
                    outgoing,
                    since: Instant::now(),
                    input: input_meter,
                    output: output_meter,
                    stats: None,
                    path: PathKind::Relay,
                    remote: None,
                }));
            }
            Event::Stats(report) => {
                if let Call::Up(up) = &mut self.call {
                    up.path = report.path;
                    up.stats = Some(report);
                }
            }
            Event::PathChanged { path, remote } => {
                if let Call::Up(up) = &mut self.call {
                    up.path = path;
                    up.remote = remote;
                }
            }
            Event::Ended {
                reason,
                peer,
                connected,
                report,
            } => self.call_ended(reason, &peer, connected, report.as_ref()),
            // Interim (the view state's reducer replaces this): other registration changes
            // and the mute state are not shown yet.
            Event::Registration(_) | Event::Muted(_) => {}
            Event::Warning(warning) => {
                let message = warning.to_string();
                tracing::info!("engine: {message}");
                // Before registration the reason arrives with `Stopped`; say it once, there.
                if matches!(self.call, Call::Idle) && matches!(self.link, Link::Registered { .. }) {
                    self.notice = Some(Notice {
                        text: sentence(&message),
                        failure: true,
                    });
                }
                self.last_error = Some(message);
            }
            Event::Stopped { reason } => {
                self.engine = None;
                let server = self.link_server();
                let mut error = reason.map_or_else(
                    || "the call engine stopped".into(),
                    |r| match r {
                        StopReason::NameTaken => "cannot register (name_taken)".to_string(),
                        StopReason::BadName => "cannot register (bad_name)".to_string(),
                        StopReason::BadSignature => "cannot register (bad_signature)".to_string(),
                        other => other.to_string(),
                    },
                );
                // What the server said before it closed the connection is the better reason.
                if matches!(self.link, Link::Connecting { .. })
                    && let Some(said) = self.last_error.take()
                {
                    error = format!("{said}; {error}");
                }
                if !matches!(self.call, Call::Idle) {
                    let peer = self.call_peer().unwrap_or_default();
                    self.notice = Some(Notice {
                        text: format!(
                            "The call with {peer} failed: {}",
                            server_words(&server, &error)
                        ),
                        failure: true,
                    });
                    self.call = Call::Idle;
                }
                // Trying again helps a server that is down, not a name someone else owns.
                self.retry_at = retry_helps(&error).then(|| Instant::now() + RETRY_AFTER);
                self.link = Link::Failed { server, error };
            }
        }
    }

    fn link_server(&self) -> String {
        match &self.link {
            Link::Off => String::new(),
            Link::Connecting { server }
            | Link::Registered { server, .. }
            | Link::Failed { server, .. } => server.clone(),
        }
    }

    fn call_peer(&self) -> Option<String> {
        match &self.call {
            Call::Idle => None,
            Call::Placing { peer, .. } => Some(peer.clone()),
            Call::Incoming { from, .. } => Some(from.clone()),
            Call::Up(up) => Some(up.peer.clone()),
        }
    }

    fn call_ended(
        &mut self,
        reason: EndReason,
        peer: &str,
        connected: bool,
        report: Option<&CallReport>,
    ) {
        let outgoing = match &self.call {
            // Already recorded when the user hung up, cancelled or rejected.
            Call::Idle => return,
            Call::Placing { .. } => true,
            Call::Incoming { .. } => false,
            Call::Up(up) => up.outgoing,
        };
        let duration = match (&self.call, report) {
            (_, Some(r)) => Duration::from_secs_f64(r.duration_s.max(0.0)),
            (Call::Up(up), None) => up.since.elapsed(),
            _ => Duration::ZERO,
        };
        self.call = Call::Idle;
        let (text, failure, outcome) = if connected {
            let words = if reason.is_normal() {
                format!("Call with {peer} ended after {}.", clock(duration))
            } else {
                format!(
                    "Call with {peer} ended after {}: {}",
                    clock(duration),
                    failure_text(reason, peer, self.last_error.as_deref())
                )
            };
            (words, !reason.is_normal(), clock(duration))
        } else {
            let words = failure_text(reason, peer, self.last_error.as_deref());
            let outcome = match reason {
                EndReason::Remote(WireReason::NoAnswer | WireReason::Cancelled) if !outgoing => {
                    "missed".to_owned()
                }
                r => short_outcome(r).to_owned(),
            };
            (words, true, outcome)
        };
        self.notice = Some(Notice { text, failure });
        self.record(peer, outgoing, outcome);
        self.last_error = None;
    }

    fn record(&mut self, peer: &str, outgoing: bool, outcome: String) {
        self.book.record(peer, outgoing, outcome);
        self.save_book();
    }

    fn save_book(&mut self) {
        self.book_error = contacts::save(&self.book_path, &self.book).err();
    }

    fn place_call(&mut self, peer: &str) {
        let peer = peer.trim().to_owned();
        if peer.is_empty() {
            return;
        }
        if let Err(e) = settings::validate_name(&peer)
            && peer != "echo"
        {
            self.notice = Some(Notice {
                text: format!("Cannot call {peer:?}: {e}."),
                failure: true,
            });
            return;
        }
        match &self.link {
            Link::Registered { .. } => {}
            Link::Failed { server, error } => {
                self.notice = Some(Notice {
                    text: format!("Cannot call {peer}: {}", server_words(server, error)),
                    failure: true,
                });
                return;
            }
            _ => {
                self.notice = Some(Notice {
                    text: format!("Cannot call {peer} yet: still connecting to the server."),
                    failure: true,
                });
                return;
            }
        }
        self.notice = None;
        self.last_error = None;
        self.send(Command::Call(peer.clone()));
        self.call = Call::Placing {
            peer,
            ringing: false,
            since: Instant::now(),
        };
    }

    fn hang_up(&mut self) {
        let call = std::mem::replace(&mut self.call, Call::Idle);
        match call {
            Call::Idle => {}
            Call::Placing { peer, .. } => {
                self.send(Command::HangUp);
                self.notice = Some(Notice {
                    text: format!("You cancelled the call to {peer}."),
                    failure: false,
                });
                self.record(&peer, true, "cancelled".into());
            }
            Call::Incoming { from, .. } => {
                self.send(Command::HangUp);
                self.record(&from, false, "hung up".into());
            }
            Call::Up(up) => {
                self.send(Command::HangUp);
                let took = clock(up.since.elapsed());
                self.notice = Some(Notice {
                    text: format!("Call with {} ended after {took}.", up.peer),
                    failure: false,
                });
                self.record(&up.peer, up.outgoing, took);
            }
        }
    }

    // ----- NAT check -----

    fn start_nat_check(&mut self, server: String) {
        let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
        self.nat = NatState::Running(net::nat_check(server.clone(), NAT_CHECK_TIMEOUT, wake));
        self.nat_server = Some(server);
    }

    fn poll_nat(&mut self) {
        if let NatState::Running(rx) = &self.nat {
            match rx.try_recv() {
                Ok(result) => self.nat = NatState::Done(result),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.nat = NatState::Done(Err("the check stopped".into()));
                }
            }
        }
    }

    fn nat_ui(&self, ui: &mut egui::Ui) {
        match &self.nat {
            NatState::Idle => {}
            NatState::Running(_) => {
                ui.horizontal(|ui| {
                    working(ui);
                    ui.label("Checking your network…");
                });
            }
            NatState::Done(Ok(report)) => {
                ui.label(format!(
                    "Network: {} ({})",
                    report.describe(),
                    report.verdict
                ));
                ui.label(format!(
                    "Your address as the server sees it: {}",
                    report.mapped
                ));
            }
            NatState::Done(Err(e)) => {
                error_line(ui, &format!("Network check failed: {e}"));
            }
        }
    }

    // ----- views -----

    fn setup_view(&mut self, ui: &mut egui::Ui) {
        ui.heading("Welcome to Pinhole");
        ui.label("Pinhole calls people straight through their routers. Tell it who you are.");
        ui.label("Leave the server empty to use the one built into this app: call echo to hear yourself.");
        ui.add_space(8.0);
        if let Some(err) = &self.file_error {
            ui.colored_label(ui.visuals().error_fg_color, err);
        }
        let valid = self.basic_fields(ui);
        ui.add_space(8.0);
        if ui
            .add_enabled(valid, egui::Button::new("Save and start"))
            .clicked()
        {
            self.save();
        }
    }

    fn settings_view(&mut self, ui: &mut egui::Ui) {
        ui.heading("Settings");
        if let Some(err) = &self.file_error {
            ui.colored_label(ui.visuals().error_fg_color, err);
        }
        let basic_ok = self.basic_fields(ui);
        ui.add_space(6.0);
        self.device_tests_ui(ui);
        ui.add_space(6.0);
        self.connection_test_ui(ui, basic_ok);
        let advanced_ok = self.advanced_fields(ui);
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui
                .add_enabled(basic_ok && advanced_ok, egui::Button::new("Save"))
                .clicked()
            {
                self.save();
            }
            if ui.button("Cancel").clicked() {
                self.form = self.saved.clone().unwrap_or_default();
                self.reset_form_text();
                self.view = View::Main;
            }
        });
    }

    /// The chosen input's live level, and a test sound on the chosen output.
    fn device_tests_ui(&mut self, ui: &mut egui::Ui) {
        if self.sounds {
            let wanted = self.form.input_device.clone();
            if self.monitor.as_ref().is_none_or(|m| m.device != wanted) {
                let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
                self.monitor = Some(InputMonitor::start(wanted, wake));
            }
        }
        ui.horizontal(|ui| {
            let label = ui.label("Microphone level");
            match self.monitor.as_mut().map(|m| m.state().clone()) {
                Some(MonitorState::Running(meter)) => {
                    meter_bar(ui, &meter, label.id);
                    ui.ctx().request_repaint_after(METER_REPAINT);
                }
                Some(MonitorState::Opening) => {
                    working(ui);
                }
                Some(MonitorState::Failed(e)) => {
                    error_line(ui, &format!("No microphone: {e}"));
                }
                None => {
                    ui.label("off").labelled_by(label.id);
                }
            }
        });
        ui.horizontal(|ui| {
            let playing = self.test_sound.is_some();
            if ui
                .add_enabled(!playing, egui::Button::new("Play test sound"))
                .clicked()
            {
                let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
                self.test_sound_result = None;
                self.test_sound = Some(sound::play_test_sound(
                    self.form.output_device.clone(),
                    wake,
                ));
            }
            if let Some(rx) = &self.test_sound
                && let Ok(result) = rx.try_recv()
            {
                self.test_sound_result = Some(result);
                self.test_sound = None;
            }
            if self.test_sound.is_some() {
                working(ui);
                ui.label("Playing a 440 Hz tone…");
            } else {
                match &self.test_sound_result {
                    Some(Ok(())) => {
                        ui.label("Played: did you hear it?");
                    }
                    Some(Err(e)) => error_line(ui, &format!("No sound: {e}")),
                    None => {}
                }
            }
        });
    }

    fn connection_test_ui(&mut self, ui: &mut egui::Ui, valid: bool) {
        ui.horizontal(|ui| {
            let running = matches!(self.nat, NatState::Running(_));
            if ui
                .add_enabled(valid && !running, egui::Button::new("Test connection"))
                .clicked()
            {
                let form = self.form.clone();
                match self.test_target(&form) {
                    Ok(server) => self.start_nat_check(server),
                    Err(e) => self.nat = NatState::Done(Err(e)),
                }
            }
        });
        self.nat_ui(ui);
    }

    fn main_view(&mut self, ui: &mut egui::Ui) {
        let name = self
            .saved
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let server = self
            .saved
            .as_ref()
            .map(|s| s.server.clone())
            .unwrap_or_default();
        ui.horizontal(|ui| {
            ui.heading(format!("You are {name}"));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("Settings").clicked() {
                    self.form = self.saved.clone().unwrap_or_default();
                    self.reset_form_text();
                    self.test_sound_result = None;
                    self.view = View::Settings;
                }
            });
        });
        if server.is_empty() {
            let lan = self
                .saved
                .as_ref()
                .is_some_and(|s| s.advanced.embedded_server_lan);
            let reach = if lan {
                "this machine and the local network"
            } else {
                "this machine only"
            };
            ui.label(format!("Server: built into this app ({reach})"));
            if lan && let Some(hint) = &self.lan_hint {
                ui.label(format!("Others on your network set their server to {hint}"));
            }
        } else {
            ui.label(format!("Server: {server}"));
        }
        self.link_ui(ui);
        self.nat_ui(ui);
        ui.separator();

        ui.horizontal(|ui| {
            let label = ui.label("Name to call");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.call_field)
                        .hint_text("a name, or echo to hear yourself")
                        .desired_width((ui.available_width() - 150.0).max(120.0)),
                )
                .labelled_by(label.id);
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            // Typing a name works at once: the field takes the keyboard when nothing has it.
            if !enter && ui.memory(|m| m.focused().is_none()) {
                field.request_focus();
            }
            let ready = !self.call_field.trim().is_empty();
            let clicked = ui.add_enabled(ready, egui::Button::new("Call")).clicked();
            if (enter || clicked) && ready {
                let peer = self.call_field.trim().to_owned();
                self.place_call(&peer);
            }
            if ui
                .add_enabled(ready, egui::Button::new("Add contact"))
                .clicked()
            {
                let peer = self.call_field.trim().to_owned();
                self.book.add_contact(&peer);
                self.save_book();
            }
        });
        if let Some(notice) = &self.notice {
            if notice.failure {
                ui.colored_label(ui.visuals().error_fg_color, &notice.text);
            } else {
                ui.label(&notice.text);
            }
        }
        if let Some(e) = &self.book_error {
            error_line(ui, e);
        }
        ui.separator();
        self.contacts_ui(ui);
    }

    fn link_ui(&mut self, ui: &mut egui::Ui) {
        match self.link.clone() {
            Link::Off => {}
            Link::Connecting { server } => {
                ui.horizontal(|ui| {
                    working(ui);
                    ui.label(format!("Connecting to {server}…"));
                });
            }
            Link::Registered { server, .. } => {
                ui.label(
                    RichText::new(format!("Online: registered at {server}"))
                        .color(Color32::from_rgb(60, 170, 90)),
                );
            }
            Link::Failed { server, error } => {
                error_line(ui, &server_words(&server, &error));
                ui.horizontal(|ui| {
                    if let Some(at) = self.retry_at {
                        let left = at.saturating_duration_since(Instant::now()).as_secs() + 1;
                        ui.label(format!("Trying again in {left} s."));
                    }
                    if ui.button("Try again now").clicked() {
                        self.retry_at = Some(Instant::now());
                    }
                });
            }
        }
    }

    fn contacts_ui(&mut self, ui: &mut egui::Ui) {
        let mut call = None;
        let mut remove = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.strong("Contacts");
            if self.book.contacts.is_empty() {
                ui.weak("Nobody yet: type a name above and press Add contact.");
            }
            for name in &self.book.contacts {
                ui.horizontal(|ui| {
                    if ui.button(format!("Call {name}")).clicked() {
                        call = Some(name.clone());
                    }
                    if ui
                        .small_button("remove")
                        .on_hover_text("Remove from contacts")
                        .clicked()
                    {
                        remove = Some(name.clone());
                    }
                });
            }
            ui.add_space(8.0);
            ui.strong("Recent calls");
            if self.book.recent.is_empty() {
                ui.weak("No calls yet.");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            for (i, r) in self.book.recent.iter().enumerate() {
                ui.push_id(i, |ui| {
                    ui.horizontal(|ui| {
                        if ui
                            .add(egui::Button::new(&r.name).frame(false))
                            .on_hover_text(format!("Call {}", r.name))
                            .clicked()
                        {
                            call = Some(r.name.clone());
                        }
                        let way = if r.outgoing { "outgoing" } else { "incoming" };
                        ui.weak(format!(
                            "{way} · {} · {}",
                            r.outcome,
                            ago(now.saturating_sub(r.when))
                        ));
                    });
                });
            }
        });
        if let Some(name) = remove {
            self.book.remove_contact(&name);
            self.save_book();
        }
        if let Some(name) = call {
            self.call_field = name.clone();
            self.place_call(&name);
        }
    }

    fn incoming_view(&mut self, ui: &mut egui::Ui) {
        let Call::Incoming {
            from,
            answered,
            attention,
            ..
        } = &mut self.call
        else {
            return;
        };
        let from = from.clone();
        let focused = ui.input(|i| i.viewport().focused.unwrap_or(true));
        if !focused && !*attention {
            ui.ctx()
                .send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(
                    egui::UserAttentionType::Critical,
                ));
            *attention = true;
        }
        let answered = *answered;
        ui.vertical_centered(|ui| {
            ui.add_space(24.0);
            ui.label("Incoming call");
            ui.heading(RichText::new(&from).size(28.0));
            ui.add_space(24.0);
        });
        if answered {
            ui.vertical_centered(|ui| {
                working(ui);
                ui.label("Connecting…");
            });
            return;
        }
        let mut accept = false;
        let mut reject = false;
        ui.columns(2, |cols| {
            let green = Color32::from_rgb(40, 150, 70);
            let red = Color32::from_rgb(190, 50, 50);
            cols[0].vertical_centered(|ui| {
                accept = ui
                    .add(
                        egui::Button::new(RichText::new("Accept").color(Color32::WHITE).size(18.0))
                            .fill(green)
                            .min_size(egui::vec2(120.0, 40.0)),
                    )
                    .clicked();
            });
            cols[1].vertical_centered(|ui| {
                reject = ui
                    .add(
                        egui::Button::new(RichText::new("Reject").color(Color32::WHITE).size(18.0))
                            .fill(red)
                            .min_size(egui::vec2(120.0, 40.0)),
                    )
                    .clicked();
            });
        });
        if accept {
            self.send(Command::Accept);
            ui.ctx()
                .send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(
                    egui::UserAttentionType::Reset,
                ));
            if let Call::Incoming {
                answered, ringer, ..
            } = &mut self.call
            {
                *answered = true;
                *ringer = None;
            }
        } else if reject {
            self.send(Command::Reject);
            self.call = Call::Idle;
            self.notice = Some(Notice {
                text: format!("You declined the call from {from}."),
                failure: false,
            });
            self.record(&from, false, "declined".into());
            ui.ctx()
                .send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(
                    egui::UserAttentionType::Reset,
                ));
        }
    }

    fn calling_view(&mut self, ui: &mut egui::Ui) {
        let Call::Placing {
            peer,
            ringing,
            since,
        } = &self.call
        else {
            return;
        };
        let (peer, ringing, since) = (peer.clone(), *ringing, *since);
        ui.vertical_centered(|ui| {
            ui.add_space(24.0);
            ui.label("Calling");
            ui.heading(RichText::new(&peer).size(28.0));
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                working(ui);
                ui.label(if ringing {
                    format!("Ringing… {}", clock(since.elapsed()))
                } else {
                    "Reaching them…".into()
                });
            });
            ui.add_space(24.0);
        });
        ui.ctx().request_repaint_after(Duration::from_millis(500));
        let esc = ui.input(|i| i.key_pressed(egui::Key::Escape));
        let cancel = ui
            .vertical_centered(|ui| {
                ui.add(
                    egui::Button::new(RichText::new("Cancel").color(Color32::WHITE))
                        .fill(Color32::from_rgb(190, 50, 50))
                        .min_size(egui::vec2(120.0, 36.0)),
                )
                .clicked()
            })
            .inner;
        if cancel || esc {
            self.hang_up();
        }
    }

    fn in_call_view(&mut self, ui: &mut egui::Ui) {
        let Call::Up(up) = &self.call else {
            return;
        };
        let peer = up.peer.clone();
        let elapsed = up.since.elapsed();
        let path = match (up.path, up.remote) {
            (PathKind::Direct, Some(remote)) => format!("Direct to {remote}"),
            (PathKind::Direct, None) => "Direct".to_owned(),
            (PathKind::Relay, _) => "Relayed through the server".to_owned(),
        };
        let stats = up.stats.clone();
        let (input, output) = (up.input.clone(), up.output.clone());

        ui.vertical_centered(|ui| {
            ui.add_space(12.0);
            ui.label("In a call with");
            ui.heading(RichText::new(&peer).size(28.0));
            ui.label(RichText::new(clock(elapsed)).size(22.0).monospace());
        });
        ui.add_space(8.0);
        egui::Grid::new("call-stats")
            .num_columns(2)
            .spacing([16.0, 4.0])
            .show(ui, |ui| {
                ui.label("Path");
                ui.label(path);
                ui.end_row();
                let rtt = stats
                    .as_ref()
                    .and_then(|s| s.rtt_ms)
                    .map_or("measuring…".to_owned(), |ms| format!("{ms:.0} ms"));
                ui.label("Round trip");
                ui.label(rtt);
                ui.end_row();
                ui.label("Jitter");
                ui.label(
                    stats
                        .as_ref()
                        .map_or("–".to_owned(), |s| format!("{:.1} ms", s.rtp.jitter_ms)),
                );
                ui.end_row();
                ui.label("Time to first audio");
                ui.label(
                    stats
                        .as_ref()
                        .and_then(|s| s.setup_ms)
                        .map_or("–".to_owned(), |ms| format!("{ms} ms")),
                );
                ui.end_row();
                ui.label("Loss");
                ui.label(stats.as_ref().map_or("–".to_owned(), |s| {
                    let expected = s.rtp.received + s.rtp.lost;
                    let pct = if expected == 0 {
                        0.0
                    } else {
                        100.0 * s.rtp.lost as f64 / expected as f64
                    };
                    format!("{pct:.1} % ({} of {expected} packets)", s.rtp.lost)
                }));
                ui.end_row();
                let label = ui.label("Microphone");
                meter_bar(ui, &input, label.id);
                ui.end_row();
                let label = ui.label("Speaker");
                meter_bar(ui, &output, label.id);
                ui.end_row();
                let label = ui.label("Volume");
                let before = self.volume;
                ui.add(
                    egui::Slider::new(&mut self.volume, 0.0..=2.0)
                        .custom_formatter(|v, _| format!("{:.0} %", v * 100.0)),
                )
                .labelled_by(label.id);
                ui.end_row();
                if (self.volume - before).abs() > f32::EPSILON {
                    let v = self.volume;
                    self.send(Command::Volume(v));
                }
            });
        ui.add_space(8.0);
        let mut muted = self.muted;
        let mut hang_up = ui.input(|i| i.key_pressed(egui::Key::Escape));
        ui.horizontal(|ui| {
            let text = if muted {
                "Unmute microphone"
            } else {
                "Mute microphone"
            };
            if ui
                .add(
                    egui::Button::new(text)
                        .selected(muted)
                        .min_size(egui::vec2(140.0, 32.0)),
                )
                .clicked()
            {
                muted = !muted;
            }
            hang_up |= ui
                .add(
                    egui::Button::new(RichText::new("Hang up (Esc)").color(Color32::WHITE))
                        .fill(Color32::from_rgb(190, 50, 50))
                        .min_size(egui::vec2(120.0, 32.0)),
                )
                .clicked();
        });
        if muted != self.muted {
            self.muted = muted;
            self.send(Command::Mute(muted));
        }
        ui.ctx().request_repaint_after(METER_REPAINT);
        if hang_up {
            self.hang_up();
        }
    }

    /// Server, name and devices. Returns whether they are valid; each problem is shown under
    /// its field as the user types.
    fn basic_fields(&mut self, ui: &mut egui::Ui) -> bool {
        let mut valid = true;
        egui::Grid::new("basic")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let label = ui.label("Server");
                ui.add(
                    egui::TextEdit::singleline(&mut self.form.server)
                        .hint_text("empty: built-in server")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
                ui.end_row();
                match self.form.server_addr() {
                    Ok(_) => {}
                    Err(err) => {
                        valid = false;
                        ui.label("");
                        error_line(ui, &server_message(&err));
                        ui.end_row();
                    }
                }

                let label = ui.label("Your name");
                ui.add(egui::TextEdit::singleline(&mut self.form.name).desired_width(220.0))
                    .labelled_by(label.id);
                ui.end_row();
                if let Err(msg) = settings::validate_name(&self.form.name) {
                    valid = false;
                    ui.label("");
                    error_line(ui, &msg);
                    ui.end_row();
                }

                let label = ui.label("Microphone");
                device_picker(
                    ui,
                    label.id,
                    &mut self.form.input_device,
                    &self.devices.inputs,
                );
                ui.end_row();
                let label = ui.label("Speaker");
                device_picker(
                    ui,
                    label.id,
                    &mut self.form.output_device,
                    &self.devices.outputs,
                );
                ui.end_row();
            });
        valid
    }

    fn advanced_fields(&mut self, ui: &mut egui::Ui) -> bool {
        let mut valid = true;
        egui::CollapsingHeader::new("Advanced").show(ui, |ui| {
            egui::Grid::new("advanced")
                .num_columns(2)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    ui.label("Frame length");
                    ui.horizontal(|ui| {
                        for ms in settings::FRAME_MS_CHOICES {
                            ui.radio_value(
                                &mut self.form.advanced.frame_ms,
                                ms,
                                format!("{ms} ms"),
                            );
                        }
                    });
                    ui.end_row();

                    let label = ui.label("Bitrate (kbit/s)");
                    ui.text_edit_singleline(&mut self.bitrate_text)
                        .labelled_by(label.id);
                    ui.end_row();
                    match self.bitrate_text.trim().parse::<u32>() {
                        Ok(k) if settings::BITRATE_RANGE.contains(&k.saturating_mul(1000)) => {
                            self.form.advanced.bitrate_bps = k * 1000;
                        }
                        _ => {
                            valid = false;
                            ui.label("");
                            error_line(ui, "bitrate is a number from 6 to 510 kbit/s");
                            ui.end_row();
                        }
                    }

                    let label = ui.label("Keepalive (s)");
                    ui.add(
                        egui::TextEdit::singleline(&mut self.keepalive_text)
                            .hint_text("empty: measured"),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                    let text = self.keepalive_text.trim();
                    if text.is_empty() {
                        self.form.advanced.keepalive_s = None;
                    } else {
                        match text.parse::<u32>() {
                            Ok(k) if settings::KEEPALIVE_RANGE.contains(&k) => {
                                self.form.advanced.keepalive_s = Some(k);
                            }
                            _ => {
                                valid = false;
                                ui.label("");
                                error_line(ui, "keepalive is empty (measured) or 1 to 300 seconds");
                                ui.end_row();
                            }
                        }
                    }

                    let label = ui.label("UDP port");
                    ui.add(
                        egui::DragValue::new(&mut self.form.advanced.udp_port)
                            .range(0..=65535)
                            .custom_formatter(|v, _| {
                                if v == 0.0 {
                                    "any".into()
                                } else {
                                    format!("{v}")
                                }
                            }),
                    )
                    .labelled_by(label.id);
                    ui.end_row();

                    ui.label("Built-in server");
                    ui.checkbox(
                        &mut self.form.advanced.embedded_server_lan,
                        "reachable from the local network",
                    );
                    ui.end_row();
                });
        });
        valid
    }

    fn save(&mut self) {
        match settings::save(&self.path, &self.form) {
            Ok(()) => {
                let changed = self.saved.as_ref() != Some(&self.form);
                // The key is created by the engine's first start; keep it.
                let key = self.saved.as_ref().and_then(|s| s.key.clone());
                self.saved = Some(self.form.clone());
                if let Some(saved) = &mut self.saved
                    && saved.key.is_none()
                {
                    saved.key = key;
                }
                self.file_error = None;
                self.view = View::Main;
                self.monitor = None;
                if changed {
                    self.stop_engine();
                }
            }
            Err(err) => self.file_error = Some(format!("Settings not saved: {err}")),
        }
    }
}

impl Drop for PinholeApp {
    fn drop(&mut self) {
        // The engine says goodbye to the server (and hangs up) before the embedded server
        // goes away.
        self.engine = None;
        self.embedded = None;
    }
}

/// Why a call failed, in words a person understands. `detail` is the engine's last error
/// line (it tells which device failed).
pub fn failure_text(reason: EndReason, peer: &str, detail: Option<&str>) -> String {
    match reason {
        EndReason::HungUp | EndReason::Remote(WireReason::HungUp) => {
            format!("Call with {peer} ended.")
        }
        EndReason::Cancelled | EndReason::Remote(WireReason::Cancelled) => {
            format!("The call with {peer} was cancelled.")
        }
        EndReason::Declined | EndReason::Remote(WireReason::Rejected) => {
            format!("{peer} declined the call.")
        }
        EndReason::Remote(WireReason::Busy) => format!("{peer} is busy in another call."),
        EndReason::Remote(WireReason::Offline) => format!("{peer} is not online right now."),
        EndReason::Remote(WireReason::NoAnswer) => format!("{peer} did not answer."),
        EndReason::Remote(WireReason::PeerLost) | EndReason::PeerSilent => {
            format!("The connection to {peer} was lost.")
        }
        EndReason::Remote(WireReason::ServerError)
        | EndReason::ServerLost
        | EndReason::ServerUnreachable => "The server dropped the call.".to_owned(),
        EndReason::Remote(WireReason::RelayLimit) => {
            "The server would not carry the call (it relays one call per person).".to_owned()
        }
        EndReason::SelfCall => {
            "That is you: call someone else, or echo to hear yourself.".to_owned()
        }
        EndReason::Local => {
            let detail = detail.unwrap_or("an audio device or the network failed");
            // The device list that follows "available:" belongs in Settings, not here.
            let detail = detail.trim_start_matches("audio: ");
            let detail = detail.split("; available").next().unwrap_or(detail);
            let lower = detail.to_lowercase();
            if lower.contains("input") || lower.contains("capture") || lower.contains("microphone")
            {
                format!("No microphone could be opened ({detail}). Pick another one in Settings.")
            } else if lower.contains("output")
                || lower.contains("playback")
                || lower.contains("speaker")
            {
                format!("No speaker could be opened ({detail}). Pick another one in Settings.")
            } else {
                format!("The call failed on this computer: {detail}.")
            }
        }
    }
}

fn short_outcome(reason: EndReason) -> &'static str {
    match reason {
        EndReason::HungUp | EndReason::Remote(WireReason::HungUp) => "ended",
        EndReason::Cancelled | EndReason::Remote(WireReason::Cancelled) => "cancelled",
        EndReason::Declined | EndReason::Remote(WireReason::Rejected) => "declined",
        EndReason::Remote(WireReason::Busy) => "busy",
        EndReason::Remote(WireReason::Offline) => "offline",
        EndReason::Remote(WireReason::NoAnswer) => "no answer",
        EndReason::Remote(WireReason::PeerLost) | EndReason::PeerSilent => "connection lost",
        EndReason::Remote(WireReason::ServerError | WireReason::RelayLimit)
        | EndReason::ServerLost
        | EndReason::ServerUnreachable => "server error",
        EndReason::SelfCall => "your own name",
        EndReason::Local => "failed",
    }
}

/// "the server at X cannot be reached: why", for a link that failed.
/// Why the app is not connected to `server`, in words: `error` is the engine's reason.
fn server_words(server: &str, error: &str) -> String {
    let server = if server.is_empty() {
        "the server"
    } else {
        server
    };
    if error.contains("(name_taken)") || error.contains("(bad_signature)") {
        format!(
            "Your name is taken on {server}: someone else registered it first. Choose another \
             name in Settings."
        )
    } else if error.contains("(bad_name)") {
        format!("{server} does not accept your name. Choose another name in Settings.")
    } else if error.contains("(already_online)") {
        format!("Your name is in use on {server} by another Pinhole that is online.")
    } else if error.contains("unknown variant `register`") || error.contains("(bad_frame)") {
        format!(
            "{server} has no call service (names and calls): set a server that has it in \
             Settings."
        )
    } else if let Some(rest) = error.strip_prefix("server unreachable: ") {
        format!("The server {server} cannot be reached: {}", sentence(rest))
    } else {
        format!("Not connected to {server}: {}", sentence(error))
    }
}

/// Whether reaching the server again later may work.
fn retry_helps(error: &str) -> bool {
    !["(name_taken)", "(bad_signature)", "(bad_name)"]
        .iter()
        .any(|code| error.contains(code))
}

/// Capitalised, with a full stop.
fn sentence(text: &str) -> String {
    let mut s = text.trim().to_owned();
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

/// m:ss, or h:mm:ss.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        86_400..172_800 => "yesterday".into(),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// A level meter: the peak on a dB scale (-60 dBFS empty, 0 dBFS full).
fn meter_bar(ui: &mut egui::Ui, meter: &LevelMeter, label: egui::Id) {
    let peak = meter.peak().max(1e-6);
    let db = 20.0 * peak.log10();
    let fill = ((db + 60.0) / 60.0).clamp(0.0, 1.0);
    let color = if db > -3.0 {
        Color32::from_rgb(200, 60, 50)
    } else {
        Color32::from_rgb(60, 170, 90)
    };
    ui.add(
        egui::ProgressBar::new(fill)
            .desired_width(200.0)
            .desired_height(10.0)
            .fill(color),
    )
    .labelled_by(label);
}

/// A small "working" mark that moves without asking for an immediate repaint (egui's spinner
/// repaints every frame; this one four times a second).
fn working(ui: &mut egui::Ui) {
    let phase = (ui.input(|i| i.time) * 4.0) as usize % 4;
    ui.label(RichText::new("·".repeat(phase % 3 + 1)).monospace());
    ui.ctx().request_repaint_after(Duration::from_millis(250));
}

fn error_line(ui: &mut egui::Ui, text: &str) {
    ui.label(
        RichText::new(text)
            .color(ui.visuals().error_fg_color)
            .small(),
    );
}

/// The server field's message: the empty field is valid (built-in server), so only real
/// problems reach here.
fn server_message(err: &AddrError) -> String {
    let mut msg = err.to_string();
    if let Some(first) = msg.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    msg
}

fn device_picker(
    ui: &mut egui::Ui,
    label: egui::Id,
    choice: &mut Option<String>,
    names: &[String],
) {
    let shown = choice.clone().unwrap_or_else(|| "System default".into());
    egui::ComboBox::from_id_salt(label)
        .selected_text(shown)
        .width(220.0)
        .show_ui(ui, |ui| {
            ui.selectable_value(choice, None, "System default");
            for name in names {
                ui.selectable_value(choice, Some(name.clone()), name);
            }
            // A saved device that is not present now stays selectable, marked missing.
            if let Some(current) = choice.clone()
                && !names.contains(&current)
            {
                ui.selectable_value(
                    choice,
                    Some(current.clone()),
                    format!("{current} (missing)"),
                );
            }
        })
        .response
        .labelled_by(label);
}
