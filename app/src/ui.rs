//! The desktop app's views (egui). They hold view state only: settings go through
//! [`crate::settings`], calls run in the engine off the UI thread.
//!
//! [`PinholeApp::show`] draws one frame into a `Ui`; the binary wraps it in an `eframe::App`, and
//! the tests drive it with `egui_kittest` without a window.
//!
//! ```text
//!   show(ui) -> start the engine when due -> poll its events (never waits) into AppState::apply
//!            -> draw the view: Setup | Main | Settings | Incoming | Calling | InCall
//!            -> clicks become Actions: AppState::act -> Effects (engine Commands, recents)
//!            -> slow work (NAT check, devices, sounds) goes to threads that wake the UI with
//!               request_repaint() when done
//! ```
//!
//! - [`state`]: what the app knows of its server and its call, and its reducer (no egui).
//! - [`words`]: every sentence the app says, from typed reasons.
//! - `driver`: starts the engine from the settings, feeds its events to the state, carries out
//!   the effects; the NAT check.
//! - one file per view: `setup_view`, `main_view`, `settings_view`, `incoming_view`,
//!   `call_view` (calling and in a call); `widgets` holds what they share.
//! - [`backend`]: the engine behind a trait ([`CallEngine`]): the real one or a fake for tests.
//! - [`sound`]: ringtone, test sound, input level meter (threads of their own).
//! - `theme`: the type scale, spacing and the light and dark palettes (WCAG AA contrast);
//!   `keys`: every action's key, named in tooltips.
//! - [`notify`]: desktop notifications over D-Bus; `alerts`: when the app shows them (a call
//!   ringing or missed while the window is in the background) and what their buttons do.
//! - [`fonts`]: system fonts for the scripts egui's own fonts lack (CJK, Arabic, ...).
//! - [`net`]: NAT check and the embedded rendezvous server.
//! - [`contacts`]: contacts and recent calls, persisted next to the settings.
//! - `invite_view`: an invite link's confirmation, and the user's own link; [`handoff`]: a link
//!   opened while the app runs goes to it (one app per profile).

mod alerts;
pub mod backend;
mod call_view;
pub mod contacts;
mod driver;
pub mod fonts;
pub mod handoff;
pub mod i18n;
mod incoming_view;
mod invite_view;
mod keys;
mod main_view;
pub mod net;
pub mod notify;
mod settings_view;
mod setup_view;
pub mod sound;
pub mod state;
mod theme;
pub mod tray;
mod widgets;
pub mod words;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use media::audio::{SinkSpec, SourceSpec};
use traversal::rendezvous::Rendezvous;
use traversal::tls::ClientTrust;

use crate::engine::CallReport;
use crate::settings::{self, Settings};

pub use backend::{CallEngine, FakeEngine, StartEngine, real_engine};
use contacts::Book;
use driver::NatState;
use sound::{InputMonitor, Ringer, Wake};
pub use state::{Action, AppState, Call, Effect, Failure, InviteOffer, Link, Notice};

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
    /// An invite link was opened: take its server and call, or not.
    Invite,
}

/// The devices the pickers offer, as the audio layer lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList {
    /// Capture devices.
    pub inputs: Vec<DeviceChoice>,
    /// Playback devices.
    pub outputs: Vec<DeviceChoice>,
}

/// One entry of a device picker: what the settings keep and what the person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    /// What the settings keep and `device:NAME` opens: the device's id (a sound server's sink
    /// or source name, an ALSA PCM name).
    pub id: String,
    /// What the picker shows: the device's name, with its id when another has the same name.
    pub label: String,
}

impl From<&str> for DeviceChoice {
    /// A device whose id and name are the same.
    fn from(name: &str) -> Self {
        Self {
            id: name.into(),
            label: name.into(),
        }
    }
}

impl DeviceList {
    /// What the audio layer sees. Slow on some systems: call it off the UI thread (the app
    /// follows a [`media::audio::DeviceWatcher`], see [`PinholeApp::list_devices_in_background`]).
    pub fn from_system() -> Self {
        Self {
            inputs: usable(&media::audio::input_devices().unwrap_or_default()),
            outputs: usable(&media::audio::output_devices().unwrap_or_default()),
        }
    }

    /// The pickers' lists from a watcher's snapshot.
    pub fn from_lists(lists: &media::audio::DeviceLists) -> Self {
        Self {
            inputs: usable(&lists.inputs),
            outputs: usable(&lists.outputs),
        }
    }
}

/// The devices worth offering a person, each once, in the audio layer's order (a sound
/// server's default first, monitors of outputs last): without devices that report no stream
/// configuration (ALSA lists plugins that cannot open on their own), ALSA's `default` (the
/// picker's "System default" is that) and `null` (it discards everything). ALSA lists one card
/// under several plugins (`hw:`, `plughw:`) with the same name: the first is kept. A sound
/// server's devices may share a name too (every null sink is "Null Output"): they are different
/// devices, so each is kept and shown with its id.
pub fn usable(list: &[media::audio::DeviceInfo]) -> Vec<DeviceChoice> {
    let mut kept: Vec<&media::audio::DeviceInfo> = Vec::new();
    for d in list {
        let useless = d.configs.is_empty() || d.id == "default" || d.id == "null";
        let alsa_alias = d.id.contains(':') && kept.iter().any(|k| k.name == d.name);
        if !useless && !alsa_alias && !kept.iter().any(|k| k.id == d.id) {
            kept.push(d);
        }
    }
    kept.iter()
        .map(|d| {
            let shared = kept.iter().filter(|k| k.name == d.name).count() > 1;
            DeviceChoice {
                id: d.id.clone(),
                label: if shared {
                    format!("{} ({})", d.name, d.id)
                } else {
                    d.name.clone()
                },
            }
        })
        .collect()
}

/// The labels [`usable`] gives (what the pickers show).
pub fn usable_names(list: &[media::audio::DeviceInfo]) -> Vec<String> {
    usable(list).into_iter().map(|c| c.label).collect()
}

/// How often the device lists are taken again (hot-plug shows within about twice that).
const DEVICE_POLL: Duration = Duration::from_millis(500);

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

/// The whole app: its state, the engine that feeds it, and what the views edit.
pub struct PinholeApp {
    path: PathBuf,
    saved: Option<Settings>,
    form: Settings,
    /// Text of the advanced numeric fields, kept as typed so that a half-typed number is not lost.
    bitrate_text: String,
    keepalive_text: String,
    /// The UDP port field as typed (empty: any port).
    udp_port_text: String,
    /// The name field was edited: an empty name is a problem to say only from then on (the
    /// first run does not open with an error).
    name_edited: bool,
    devices: DeviceList,
    /// Lists the devices in the background; the pickers follow it (hot-plug).
    watcher: Option<media::audio::DeviceWatcher>,
    /// The watcher's generation the pickers show.
    devices_generation: u64,
    view: View,
    /// A problem loading or saving the settings file, shown until the next successful save.
    file_error: Option<String>,

    start_engine: StartEngine,
    engine: Option<Box<dyn CallEngine>>,
    embedded: Option<(bool, Rendezvous)>,
    /// How the running engine trusts its server's certificate (the NAT check uses it too).
    trust: ClientTrust,
    lan_hint: Option<String>,
    /// The built-in server's first address on the local network, when it listens there.
    lan_addr: Option<SocketAddr>,
    /// The user's own invite link (`pinhole://call/...`), when one can be made.
    own_invite: Option<String>,
    /// The own link was copied (said beside the button until the next view).
    invite_copied: bool,
    input_spec: Option<SourceSpec>,
    output_spec: Option<SinkSpec>,
    sounds: bool,
    wake: Option<Wake>,

    state: AppState,
    ringer: Option<Ringer>,
    /// The window asked for attention for the ringing call.
    attention: bool,
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
    /// The theme last put into the context (the form's: a choice in Settings shows at once).
    applied_theme: Option<settings::Theme>,
    /// When the ringing call came in: Enter accepts only after a moment (an Enter typed for
    /// something else does not answer a call that just arrived).
    incoming_since: Option<Instant>,
    /// Push-to-talk: whether the key was held when the microphone was last switched.
    talk_key: Option<bool>,
    /// Desktop notifications, when the app shows them ([`PinholeApp::with_notifier`]).
    notifier: Option<notify::Notifier>,
    /// The caller whose ringing call has a notification on the desktop.
    notified_incoming: Option<String>,
    /// The window had the keyboard focus at the last frame (or nobody said it had not).
    focused: bool,
    /// Contacts verified with the key the key file holds for them now (a changed key since
    /// takes the mark away); from [`PinholeApp::refresh_verified`].
    verified_now: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for PinholeApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view();
        write!(
            f,
            "PinholeApp {{ view: {view:?}, state: {:?}, .. }}",
            self.state
        )
    }
}

impl PinholeApp {
    /// Starts from the settings file at `path`: its absence means first run. A file that cannot
    /// be read is reported in the setup view and left untouched until the user saves. Calls go
    /// through the real engine; see [`PinholeApp::with_engine`].
    pub fn new(path: PathBuf, devices: DeviceList) -> Self {
        let (saved, file_error) = match settings::load(&path) {
            Ok(saved) => (saved, None),
            Err(err) => (None, Some(words::settings_unreadable(&err))),
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
            watcher: None,
            devices_generation: 0,
            view,
            file_error,
            start_engine: real_engine(),
            engine: None,
            embedded: None,
            trust: ClientTrust::default(),
            lan_hint: None,
            lan_addr: None,
            own_invite: None,
            invite_copied: false,
            input_spec: None,
            output_spec: None,
            sounds: true,
            wake: None,
            state: AppState::default(),
            ringer: None,
            attention: false,
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
            name_edited: false,
            udp_port_text: String::new(),
            applied_theme: None,
            incoming_since: None,
            talk_key: None,
            notifier: None,
            notified_incoming: None,
            focused: true,
            verified_now: Default::default(),
        };
        app.refresh_verified();
        app.reset_form_text();
        app.refresh_own_invite();
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

    /// Shows incoming and missed calls as desktop notifications while the window is in the
    /// background, and takes Accept, Reject and Call back from them.
    pub fn with_notifier(mut self, notifier: notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Repaints through `ctx` when background work finishes (before the first frame, too).
    pub fn with_repaint(mut self, ctx: egui::Context) -> Self {
        self.wake = Some(Arc::new(move || ctx.request_repaint()));
        self
    }

    /// Lists the audio devices on a thread of their own, again every half second: the pickers
    /// fill in when the first listing is done and follow devices added or removed.
    pub fn list_devices_in_background(mut self) -> Self {
        self.watcher = Some(media::audio::DeviceWatcher::spawn(DEVICE_POLL));
        self
    }

    /// Takes the watcher's lists when they changed (cheap: a lock and a number per frame).
    fn poll_devices(&mut self, ui: &egui::Ui) {
        let Some(watcher) = &self.watcher else {
            return;
        };
        if watcher.generation() != self.devices_generation {
            let lists = watcher.snapshot();
            self.devices_generation = lists.generation;
            self.devices = DeviceList::from_lists(&lists);
        }
        // The watcher wakes nobody: the views with pickers look again soon.
        if matches!(self.view(), View::Settings | View::Setup) {
            ui.ctx().request_repaint_after(DEVICE_POLL);
        }
    }

    /// The view on screen.
    pub fn view(&self) -> View {
        match &self.state.call {
            Call::Idle if self.state.invite.is_some() => View::Invite,
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

    /// What the app knows of its server and its call.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Where the app stands with its server.
    pub fn link(&self) -> &Link {
        &self.state.link
    }

    /// The last call's outcome, as shown on the main view.
    pub fn notice(&self) -> Option<&Notice> {
        self.state.notice.as_ref()
    }

    /// Contacts and recent calls.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The latest statistics of the call in progress.
    pub fn call_stats(&self) -> Option<&CallReport> {
        match &self.state.call {
            Call::Up(up) => up.stats.as_ref(),
            _ => None,
        }
    }

    /// The embedded server's address, when it runs.
    pub fn embedded_server(&self) -> Option<SocketAddr> {
        self.embedded.as_ref().map(|(_, s)| s.local_addr())
    }

    /// The user's own invite link, as the main view's "Copy invite link" copies it.
    pub fn own_invite(&self) -> Option<&str> {
        self.own_invite.as_deref()
    }

    /// What the device pickers offer now.
    pub fn devices(&self) -> &DeviceList {
        &self.devices
    }

    /// How long `show` took per frame so far.
    pub fn frame_stats(&self) -> FrameStats {
        self.frames
    }

    /// Draws one frame.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let start = Instant::now();
        if self.wake.is_none() {
            let ctx = ui.ctx().clone();
            self.wake = Some(Arc::new(move || ctx.request_repaint()));
        }
        if self.applied_theme != Some(self.form.interface.theme) {
            theme::apply(ui.ctx(), self.form.interface.theme);
            self.applied_theme = Some(self.form.interface.theme);
        }
        self.poll_devices(ui);
        self.ensure_engine(start);
        self.poll_engine();
        self.notifications(ui);
        self.poll_nat();
        self.ring();

        match self.view() {
            View::Setup => self.setup_ui(ui),
            View::Main => self.main_ui(ui),
            View::Settings => self.settings_ui(ui),
            View::Incoming => self.incoming_ui(ui),
            View::Calling => self.calling_ui(ui),
            View::InCall => self.in_call_ui(ui),
            View::Invite => self.invite_ui(ui),
        }
        if !matches!(self.view(), View::Settings | View::Setup) {
            self.monitor = None;
        }
        if self.view() != View::Main {
            self.invite_copied = false;
        }
        if self.view() != View::Incoming {
            self.incoming_since = None;
        }
        if self.view() != View::InCall {
            self.talk_key = None;
        }
        // The engine is started again at its retry time, whatever the view.
        if let Link::Failed {
            retry_at: Some(at), ..
        } = &self.state.link
        {
            ui.ctx()
                .request_repaint_after(at.saturating_duration_since(Instant::now()));
        }

        let took = start.elapsed();
        self.frames.frames += 1;
        self.frames.total += took;
        self.frames.max = self.frames.max.max(took);
    }

    /// Carries out what the user asked.
    fn act(&mut self, action: Action) {
        let effects = self.state.act(action, Instant::now());
        self.run(effects);
    }

    /// The ringtone plays while an incoming call waits for an answer.
    fn ring(&mut self) {
        match &self.state.call {
            Call::Incoming {
                answered: false, ..
            } => {
                if self.sounds && self.ringer.is_none() {
                    let device = self.saved.as_ref().and_then(|s| s.output_device.clone());
                    self.ringer = Some(Ringer::start(device));
                }
            }
            Call::Incoming { .. } => self.ringer = None,
            _ => {
                self.ringer = None;
                self.attention = false;
            }
        }
    }

    fn reset_form_text(&mut self) {
        self.bitrate_text = (self.form.advanced.bitrate_bps / 1000).to_string();
        self.keepalive_text = self
            .form
            .advanced
            .keepalive_s
            .map(|k| k.to_string())
            .unwrap_or_default();
        self.udp_port_text = match self.form.advanced.udp_port {
            0 => String::new(),
            port => port.to_string(),
        };
    }

    /// The form as saved, for Settings or after Cancel.
    fn reset_form(&mut self) {
        self.form = self.saved.clone().unwrap_or_default();
        self.reset_form_text();
    }

    fn record(&mut self, peer: &str, outgoing: bool, outcome: String) {
        self.book.record(peer, outgoing, outcome);
        self.save_book();
        // The call may have recorded a first key, or met a changed one.
        self.refresh_verified();
    }

    /// Marks `peer` verified with the call's `key`: the person compared the code.
    fn verify(&mut self, peer: &str, key: &str) {
        self.book.verify(peer, key);
        self.save_book();
        self.refresh_verified();
    }

    /// Which verified contacts still have the key they were verified with, as the key file
    /// (`contact-keys.txt`) holds it now. Read once per change, not per frame.
    fn refresh_verified(&mut self) {
        if self.book.verified.is_empty() {
            self.verified_now.clear();
            return;
        }
        let keys = crate::contacts::Contacts::open(settings::contacts_path(&self.path));
        self.verified_now = match keys {
            Ok(keys) => self
                .book
                .verified
                .iter()
                .filter(|v| self.book.is_verified(&v.name, keys.get(&v.name)))
                .map(|v| v.name.clone())
                .collect(),
            Err(e) => {
                tracing::warn!("contact keys not read: {e}");
                Default::default()
            }
        };
    }

    /// Whether `name` is a verified contact (with the key known now).
    pub fn is_verified(&self, name: &str) -> bool {
        self.verified_now.contains(name)
    }

    fn save_book(&mut self) {
        self.book_error = contacts::save(&self.book_path, &self.book).err();
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
                self.refresh_own_invite();
            }
            Err(err) => self.file_error = Some(words::settings_not_saved(&err)),
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
