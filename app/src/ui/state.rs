//! The app's view state and its reducer, apart from egui: what the app knows about its server
//! and its call, changed only by the engine's [`Event`]s ([`AppState::apply`]) and by what the
//! user does ([`AppState::act`]). Both return [`Effect`]s for the caller to carry out (commands
//! to the engine, a call to remember, a NAT check to start), so every transition is a plain
//! function of (state, input, `now`), unit tested beside it (`state/tests.rs`).
//!
//! ```text
//!   engine Event --apply(event, now)--> AppState --> Effects (Send, Record, Registered, EngineStopped)
//!   user Action  --act(action, now)---> AppState --> Effects
//!   views read AppState (Link, Call, muted, notice) and say it with `words`
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media::audio::LevelMeter;
use traversal::control::Verdict;

use super::words;
use crate::engine::{
    AudioSide, CallReport, Command, EndReason, Event, PathKind, Registration, Security, ServerLoss,
    StopReason, Warning,
};
use crate::invite::Invite;
use crate::settings;
use traversal::tls::Fingerprint;

#[cfg(test)]
mod tests;

/// How long to wait before starting the engine again after it stopped (or could not start).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Where the app stands with its server, as the engine last said.
#[derive(Debug, Clone)]
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
    /// The server was lost; the engine reaches it again by itself at `retry_at`.
    Offline {
        /// The server.
        server: String,
        /// How it was lost.
        reason: ServerLoss,
        /// When the engine tries again.
        retry_at: Instant,
    },
    /// Another device signed in with our name; nothing is retried until the user asks
    /// ([`Action::Reconnect`]).
    Replaced {
        /// The server.
        server: String,
    },
    /// The engine stopped (or could not start); the app starts it again at `retry_at`.
    Failed {
        /// The server.
        server: String,
        /// Why.
        failure: Failure,
        /// When the engine is started again; `None`: only on "Try again now" or new settings.
        retry_at: Option<Instant>,
    },
}

impl Link {
    /// The server this is about (empty when off).
    pub fn server(&self) -> &str {
        match self {
            Link::Off => "",
            Link::Connecting { server }
            | Link::Registered { server, .. }
            | Link::Offline { server, .. }
            | Link::Replaced { server }
            | Link::Failed { server, .. } => server,
        }
    }
}

/// Why there is no engine.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The engine stopped: with its reason, or `None` when it stopped unasked without one.
    Stopped(Option<StopReason>),
    /// The app could not start the engine (the built-in server, the engine's thread): words
    /// for people. Trying again may help.
    Start(String),
    /// The settings cannot work as they are (a bad key or server address): words for people.
    /// Trying again does not help; saving new settings does.
    Settings(String),
}

impl Failure {
    /// Whether starting the engine again later may work: it helps a server that is down, not
    /// a name someone else owns.
    pub fn retry_helps(&self) -> bool {
        match self {
            Failure::Stopped(Some(
                StopReason::NameTaken
                | StopReason::NameConfusable
                | StopReason::TooManyNames
                | StopReason::BadName
                | StopReason::BadSignature
                | StopReason::UntrustedServer { .. },
            ))
            | Failure::Settings(_) => false,
            Failure::Stopped(_) | Failure::Start(_) => true,
        }
    }
}

/// The call in progress.
#[derive(Debug, Default)]
pub enum Call {
    /// No call.
    #[default]
    Idle,
    /// We called `peer`; `ringing` once its phone rings.
    Placing {
        /// Whom we call.
        peer: String,
        /// The peer's phone rings.
        ringing: bool,
        /// When we called.
        since: Instant,
    },
    /// `from` calls us; `answered` once Accept is sent.
    Incoming {
        /// The caller.
        from: String,
        /// Accept was sent; the call connects.
        answered: bool,
    },
    /// The call is up.
    Up(Box<UpCall>),
}

impl Call {
    /// The other party.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Call::Idle => None,
            Call::Placing { peer, .. } => Some(peer),
            Call::Incoming { from, .. } => Some(from),
            Call::Up(up) => Some(&up.peer),
        }
    }

    /// Whether we placed the call in progress.
    pub fn outgoing(&self) -> Option<bool> {
        match self {
            Call::Idle => None,
            Call::Placing { .. } => Some(true),
            Call::Incoming { .. } => Some(false),
            Call::Up(up) => Some(up.outgoing),
        }
    }
}

/// A call that is up.
#[derive(Debug)]
pub struct UpCall {
    /// The other party.
    pub peer: String,
    /// We placed it.
    pub outgoing: bool,
    /// When it connected.
    pub since: Instant,
    /// Level of what we send.
    pub input: LevelMeter,
    /// Level of what we play.
    pub output: LevelMeter,
    /// The latest figures.
    pub stats: Option<CallReport>,
    /// Relay or direct.
    pub path: PathKind,
    /// The peer's address on a direct path.
    pub remote: Option<SocketAddr>,
    /// The encryption, the short authentication string and what the contacts say of the
    /// peer's key.
    pub security: Security,
    /// The user accepted the peer's changed key during this call.
    pub key_trusted: bool,
    /// What was said of devices that vanished and were replaced, in order.
    pub moves: Vec<String>,
}

impl UpCall {
    /// The peer's key differs from the one remembered, and the user has not accepted it.
    pub fn key_warning(&self) -> bool {
        !self.key_trusted
            && self
                .security
                .key_check
                .as_ref()
                .is_some_and(|c| c.is_changed())
    }
}

/// A line shown on the main view until the next call (the last call's outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What to say.
    pub text: String,
    /// Whether it reports a failure.
    pub failure: bool,
    /// It says why a call was not placed with the server as it was: registering again makes
    /// it untrue, so it goes then.
    about_link: bool,
}

impl Notice {
    fn failure(text: String) -> Self {
        Self {
            text,
            failure: true,
            about_link: false,
        }
    }

    fn info(text: String) -> Self {
        Self {
            text,
            failure: false,
            about_link: false,
        }
    }
}

/// What the user asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call this name.
    Call(String),
    /// Cancel the call we placed, or end the call that is up.
    HangUp,
    /// Answer the ringing call.
    Accept,
    /// Decline the ringing call.
    Reject,
    /// Mute (true) or unmute the microphone.
    Mute(bool),
    /// Output volume, 0.0 to 2.0.
    Volume(f32),
    /// Take our name back after another device signed in with it.
    Reconnect,
    /// Start the engine again now, without waiting for the retry time.
    TryAgainNow,
    /// Accept the peer's changed key (after comparing the short authentication string).
    TrustKey,
    /// Accept the server's new certificate (after [`StopReason::UntrustedServer`]) and connect.
    TrustServer,
    /// Take the server of the invite on screen and call its name ("Use this server and call").
    UseInvite,
    /// Put the invite on screen away, changing nothing.
    DismissInvite,
}

/// What the caller of [`AppState::apply`] and [`AppState::act`] carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this command to the engine.
    Send(Command),
    /// Remember a call in the recent calls list.
    Record {
        /// The other party.
        peer: String,
        /// We placed it.
        outgoing: bool,
        /// In a few words.
        outcome: String,
    },
    /// A call came in and ended before anyone answered it: say so on the desktop.
    Missed {
        /// Who called.
        peer: String,
    },
    /// Registered with `server`: show the NAT verdict, or check it when none came.
    Registered {
        /// The server.
        server: String,
        /// Our media socket as the server sees it.
        mapped: SocketAddr,
        /// The verdict of the registration's traversal exchange.
        verdict: Option<Verdict>,
    },
    /// The engine stopped: let it go (it is started again per [`Link::Failed`]).
    EngineStopped,
    /// Remember `key` (hex) as `peer`'s key; then [`AppState::key_trusted`].
    TrustKey {
        /// The other party.
        peer: String,
        /// Its key, hex.
        key: String,
    },
    /// Trust the certificate `presented` (`sha256:...`) for `server`; the engine starts again
    /// at once (the link is [`Link::Failed`] due now).
    TrustServer {
        /// The server (`host:port`).
        server: String,
        /// The fingerprint it presented.
        presented: String,
    },
    /// Write the invite's server (and its certificate's fingerprint) into the settings, and
    /// put its name in the call field; then say [`AppState::invite_used`] (or
    /// [`AppState::invite_failed`]). The call follows once registered with that server.
    UseInvite(Invite),
}

/// An invite link opened from outside (the command line, the desktop), waiting for the user's
/// yes or no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteOffer {
    /// What the link says.
    pub invite: Invite,
    /// The server the settings use now (`host:port`; empty: the built-in one).
    pub current_server: String,
    /// The certificate this profile already trusts for the invite's server (the settings' pin
    /// or the known-servers record), when there is one.
    pub trusted: Option<Fingerprint>,
}

impl InviteOffer {
    /// The link's fingerprint is not the one trusted before for that server: accepting it pins
    /// another certificate, which the user should hear loudly.
    pub fn certificate_differs(&self) -> bool {
        matches!((&self.invite.fingerprint, &self.trusted), (Some(new), Some(old)) if new != old)
    }

    /// The invite's server is the one the settings use already.
    pub fn same_server(&self) -> bool {
        settings::ServerAddr::parse(&self.current_server)
            .ok()
            .as_ref()
            == Some(&self.invite.server)
    }
}

/// The app's view of its server and its call.
#[derive(Debug)]
pub struct AppState {
    /// Our name as configured (the engine's own says it once registered).
    pub name: String,
    /// Where the app stands with its server.
    pub link: Link,
    /// The call in progress.
    pub call: Call,
    /// The engine's mute state (off at the start of every call).
    pub muted: bool,
    /// The output volume the user set.
    pub volume: f32,
    /// The last call's outcome (or why a call was not placed).
    pub notice: Option<Notice>,
    /// An invite link on screen, waiting for the user.
    pub invite: Option<InviteOffer>,
    /// The name to call as soon as the app is registered: an invite's, accepted.
    pub pending_call: Option<String>,
    /// The router's port mapping for calls, as the engine last said (`None`: not asked).
    pub port_mapping: Option<traversal::portmap::Status>,
    /// A device problem the engine reported during this call: it says why the call ends with
    /// [`EndReason::Local`].
    audio_problem: Option<(AudioSide, String)>,
    /// The peer of a call the user ended: the engine's `Ended` for it is already said.
    ended_by_user: Option<String>,
    /// The server setting the engine runs with: one server, or a comma-separated list (then
    /// [`Link::Registered`] names the one registered with, the other states the list).
    servers: String,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            name: String::new(),
            link: Link::Off,
            call: Call::Idle,
            muted: false,
            volume: 1.0,
            notice: None,
            invite: None,
            pending_call: None,
            port_mapping: None,
            audio_problem: None,
            ended_by_user: None,
            servers: String::new(),
        }
    }
}

impl AppState {
    /// An engine was started for `name` at `server`: it connects.
    pub fn engine_started(&mut self, server: String, name: String) {
        self.name = name;
        self.servers.clone_from(&server);
        self.link = Link::Connecting { server };
    }

    /// The engine could not be started.
    pub fn engine_failed(&mut self, server: String, failure: Failure, now: Instant) {
        let retry_at = failure.retry_helps().then_some(now + RETRY_AFTER);
        self.link = Link::Failed {
            server,
            failure,
            retry_at,
        };
    }

    /// The app stopped the engine (new settings): no call, no link.
    pub fn engine_off(&mut self) {
        self.link = Link::Off;
        self.end_call();
    }

    /// A device problem the engine reported during the call in progress (the call may go on
    /// without that device).
    pub fn audio_problem(&self) -> Option<&(AudioSide, String)> {
        self.audio_problem.as_ref()
    }

    /// A command could not reach the engine.
    pub fn engine_missing(&mut self) {
        self.notice = Some(Notice::failure(words::engine_not_running()));
    }

    /// Whether the app should start an engine now (none runs: it is off, or failed and the
    /// retry time has come).
    pub fn engine_due(&self, now: Instant) -> bool {
        match &self.link {
            Link::Off => true,
            Link::Failed { retry_at, .. } => retry_at.is_some_and(|at| now >= at),
            _ => false,
        }
    }

    /// Takes in one engine event.
    pub fn apply(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Registration(registration) => {
                self.registration(registration, &mut effects);
                self.call_pending(now, &mut effects);
            }
            Event::Incoming { from } => {
                self.end_call();
                self.call = Call::Incoming {
                    from,
                    answered: false,
                };
            }
            Event::Ringing { .. } => {
                self.ended_by_user = None;
                if let Call::Placing { ringing, .. } = &mut self.call {
                    *ringing = true;
                }
            }
            Event::Connected {
                peer,
                input_meter,
                output_meter,
                security,
            } => {
                let outgoing = matches!(self.call, Call::Placing { .. });
                self.ended_by_user = None;
                self.muted = false;
                self.call = Call::Up(Box::new(UpCall {
                    peer,
                    outgoing,
                    since: now,
                    input: input_meter,
                    output: output_meter,
                    stats: None,
                    path: PathKind::Relay,
                    remote: None,
                    security,
                    key_trusted: false,
                    moves: Vec::new(),
                }));
            }
            Event::Muted(muted) => self.muted = muted,
            Event::Stats(report) => {
                if let Call::Up(up) = &mut self.call {
                    up.path = report.path;
                    up.stats = Some(report);
                }
            }
            Event::DeviceMoved { side, moved, meter } => {
                if let Call::Up(up) = &mut self.call {
                    up.moves.push(words::device_moved(side, &moved));
                    match side {
                        AudioSide::Microphone => up.input = meter,
                        AudioSide::Speaker => up.output = meter,
                    }
                }
                // The side that failed works again.
                if self.audio_problem.as_ref().is_some_and(|(s, _)| *s == side) {
                    self.audio_problem = None;
                }
            }
            Event::PortMapping(status) => self.port_mapping = Some(status),
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
            } => self.ended(
                &reason,
                &peer,
                connected,
                report.as_ref(),
                now,
                &mut effects,
            ),
            Event::Warning(warning) => self.warning(warning),
            Event::Stopped { reason } => {
                let failure = Failure::Stopped(reason);
                if let (Some(peer), Some(outgoing)) = (self.call.peer(), self.call.outgoing()) {
                    let why = words::failed(self.link.server(), &failure);
                    self.notice = Some(Notice::failure(words::call_failed(peer, &why)));
                    effects.push(Effect::Record {
                        peer: peer.to_owned(),
                        outgoing,
                        outcome: words::OUTCOME_FAILED.into(),
                    });
                }
                self.end_call();
                let server = self.link.server().to_owned();
                self.engine_failed(server, failure, now);
                // The invite's call is not placed later by surprise: it is said, with why.
                if let Some(peer) = self.pending_call.take() {
                    self.notice = Some(Notice {
                        about_link: true,
                        ..Notice::failure(words::cannot_call(&peer, &self.link, &self.name))
                    });
                }
                effects.push(Effect::EngineStopped);
            }
        }
        effects
    }

    fn registration(&mut self, registration: Registration, effects: &mut Vec<Effect>) {
        let server = if self.servers.is_empty() {
            self.link.server().to_owned()
        } else {
            self.servers.clone()
        };
        self.link = match registration {
            Registration::Connecting => Link::Connecting { server },
            Registration::Online {
                name,
                mapped,
                verdict,
                server: registered,
            } => {
                // The one of the list the engine registered with.
                let server = if registered.is_empty() {
                    server
                } else {
                    registered
                };
                self.name.clone_from(&name);
                if self.notice.as_ref().is_some_and(|n| n.about_link) {
                    self.notice = None;
                }
                effects.push(Effect::Registered {
                    server: server.clone(),
                    mapped,
                    verdict,
                });
                Link::Registered {
                    name,
                    server,
                    mapped,
                }
            }
            Registration::Offline { reason, retry_at } => Link::Offline {
                server,
                reason,
                retry_at,
            },
            Registration::Replaced => Link::Replaced { server },
        };
    }

    fn ended(
        &mut self,
        reason: &EndReason,
        peer: &str,
        connected: bool,
        report: Option<&CallReport>,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        let said = self.ended_by_user.take().is_some_and(|p| p == peer);
        // Already said and recorded when the user hung up, cancelled or rejected; or the end
        // of an earlier call that crossed the next one.
        if said || self.call.peer() != Some(peer) {
            return;
        }
        let Some(outgoing) = self.call.outgoing() else {
            return;
        };
        // Up for the user only once media flowed (Event::Connected): a call the server
        // connected whose audio never opened did not connect for them.
        let connected_for = match (&self.call, report) {
            (Call::Up(_), Some(r)) if connected => {
                Some(Duration::from_secs_f64(r.duration_s.max(0.0)))
            }
            (Call::Up(up), None) if connected => Some(now.saturating_duration_since(up.since)),
            _ => None,
        };
        let ending = words::ending(
            reason,
            peer,
            outgoing,
            connected_for,
            self.audio_problem.as_ref(),
        );
        self.notice = Some(Notice {
            text: ending.text,
            failure: ending.failure,
            about_link: false,
        });
        if matches!(
            self.call,
            Call::Incoming {
                answered: false,
                ..
            }
        ) {
            effects.push(Effect::Missed {
                peer: peer.to_owned(),
            });
        }
        effects.push(Effect::Record {
            peer: peer.to_owned(),
            outgoing,
            outcome: ending.outcome,
        });
        self.end_call();
    }

    fn warning(&mut self, warning: Warning) {
        match warning {
            Warning::Audio { side, detail } => {
                tracing::info!(?side, "audio device failed: {detail}");
                if matches!(self.call, Call::Idle) {
                    self.notice = Some(Notice::failure(words::audio_failed(&side, &detail)));
                } else {
                    self.audio_problem = Some((side, detail));
                }
            }
            Warning::Contacts { detail } => {
                tracing::warn!("contact keys: {detail}");
                self.notice = Some(Notice::failure(words::contacts_unreadable(&detail)));
            }
            Warning::Refused { code, message } => {
                tracing::info!(code, "server refused: {message}");
                if matches!(self.call, Call::Idle) {
                    self.notice = Some(Notice::failure(words::refused(&message)));
                }
            }
            // A click that crossed an event (Accept as the caller gave up): the event says
            // what happened.
            other => tracing::debug!("engine: {other:?}"),
        }
    }

    /// Carries out what the user asked.
    pub fn act(&mut self, action: Action, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        match action {
            Action::Call(peer) => {
                // The user calls someone else: the invite's call is not placed after it.
                self.pending_call = None;
                self.place_call(peer.trim(), now, &mut effects);
            }
            Action::HangUp => self.hang_up(now, &mut effects),
            Action::Accept => {
                if let Call::Incoming { answered, .. } = &mut self.call
                    && !*answered
                {
                    *answered = true;
                    effects.push(Effect::Send(Command::Accept));
                }
            }
            Action::Reject => {
                if let Call::Incoming { from, .. } = &self.call {
                    let from = from.clone();
                    effects.push(Effect::Send(Command::Reject));
                    self.notice = Some(Notice::info(words::declined_by_you(&from)));
                    self.user_ended(&from, false, words::OUTCOME_DECLINED.into(), &mut effects);
                }
            }
            Action::Mute(muted) => {
                // The button shows the engine's answer (Event::Muted), not the click.
                if matches!(self.call, Call::Up(_)) {
                    effects.push(Effect::Send(Command::Mute(muted)));
                }
            }
            Action::Volume(volume) => {
                self.volume = volume;
                if matches!(self.call, Call::Up(_)) {
                    effects.push(Effect::Send(Command::Volume(volume)));
                }
            }
            Action::Reconnect => effects.push(Effect::Send(Command::Reconnect)),
            Action::TryAgainNow => {
                if let Link::Failed { retry_at, .. } = &mut self.link {
                    *retry_at = Some(now);
                }
            }
            Action::TrustKey => {
                if let Call::Up(up) = &self.call
                    && up.key_warning()
                    && let Some(key) = &up.security.peer_key
                {
                    effects.push(Effect::TrustKey {
                        peer: up.peer.clone(),
                        key: key.clone(),
                    });
                }
            }
            Action::TrustServer => {
                if let Link::Failed {
                    failure:
                        Failure::Stopped(Some(StopReason::UntrustedServer {
                            server, presented, ..
                        })),
                    retry_at,
                    ..
                } = &mut self.link
                {
                    effects.push(Effect::TrustServer {
                        server: server.clone(),
                        presented: presented.clone(),
                    });
                    *retry_at = Some(now);
                }
            }
            Action::UseInvite => {
                if let Some(offer) = self.invite.take() {
                    self.pending_call = Some(offer.invite.name.clone());
                    effects.push(Effect::UseInvite(offer.invite));
                }
            }
            Action::DismissInvite => self.invite = None,
        }
        effects
    }

    /// An invite link was opened: it waits on screen for the user (replacing one shown before).
    pub fn invite_opened(&mut self, offer: InviteOffer) {
        self.invite = Some(offer);
    }

    /// The invite's server is in the settings ([`Effect::UseInvite`] done): when the app is
    /// registered with it already, the call goes out now; else once it is.
    pub fn invite_used(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.call_pending(now, &mut effects);
        effects
    }

    /// The invite's server could not be written into the settings: no call, and why.
    pub fn invite_failed(&mut self, text: String) {
        self.pending_call = None;
        self.notice = Some(Notice::failure(text));
    }

    /// Places the invite's call once registered and free.
    fn call_pending(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if matches!(self.link, Link::Registered { .. })
            && matches!(self.call, Call::Idle)
            && let Some(peer) = self.pending_call.take()
        {
            self.place_call(&peer, now, effects);
        }
    }

    /// The peer's new key is remembered ([`Effect::TrustKey`] done): the warning goes.
    pub fn key_trusted(&mut self, peer: &str) {
        if let Call::Up(up) = &mut self.call
            && up.peer == peer
        {
            up.key_trusted = true;
        }
    }

    /// Something the app did for the user failed (a file not written): said on the main view.
    pub fn app_failed(&mut self, text: String) {
        self.notice = Some(Notice::failure(text));
    }

    fn place_call(&mut self, peer: &str, now: Instant, effects: &mut Vec<Effect>) {
        if peer.is_empty() || !matches!(self.call, Call::Idle) {
            return;
        }
        if let Err(e) = settings::check_name(peer)
            && peer != "echo"
        {
            self.notice = Some(Notice::failure(words::bad_name(
                peer,
                &words::name_problem(&e),
            )));
            return;
        }
        if !matches!(self.link, Link::Registered { .. }) {
            let text = words::cannot_call(peer, &self.link, &self.name);
            self.notice = Some(Notice {
                about_link: true,
                ..Notice::failure(text)
            });
            return;
        }
        // Not `end_call`: the engine's `Ended` of a call the user just ended may still come.
        self.notice = None;
        self.muted = false;
        self.audio_problem = None;
        self.call = Call::Placing {
            peer: peer.to_owned(),
            ringing: false,
            since: now,
        };
        effects.push(Effect::Send(Command::Call(peer.to_owned())));
    }

    fn hang_up(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let (peer, outgoing, notice, outcome) = match &self.call {
            Call::Idle => return,
            Call::Placing { peer, .. } => (
                peer.clone(),
                true,
                Some(Notice::info(words::cancelled_by_you(peer))),
                words::OUTCOME_CANCELLED.to_owned(),
            ),
            Call::Incoming { from, .. } => {
                (from.clone(), false, None, words::OUTCOME_HUNG_UP.to_owned())
            }
            Call::Up(up) => {
                let took = now.saturating_duration_since(up.since);
                (
                    up.peer.clone(),
                    up.outgoing,
                    Some(Notice::info(words::hung_up(&up.peer, took))),
                    words::clock(took),
                )
            }
        };
        effects.push(Effect::Send(Command::HangUp));
        if notice.is_some() {
            self.notice = notice;
        }
        self.user_ended(&peer, outgoing, outcome, effects);
    }

    /// The user ended the call with `peer`: it is recorded now, and the engine's `Ended` for
    /// it is not said again.
    fn user_ended(
        &mut self,
        peer: &str,
        outgoing: bool,
        outcome: String,
        effects: &mut Vec<Effect>,
    ) {
        effects.push(Effect::Record {
            peer: peer.to_owned(),
            outgoing,
            outcome,
        });
        self.end_call();
        self.ended_by_user = Some(peer.to_owned());
    }

    /// Back to no call: the next one starts unmuted.
    fn end_call(&mut self) {
        self.call = Call::Idle;
        self.muted = false;
        self.audio_problem = None;
        self.ended_by_user = None;
    }
}
