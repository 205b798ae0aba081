//! Desktop notifications for incoming and missed calls, through the freedesktop notification
//! service on the session bus (`org.freedesktop.Notifications`, Desktop Notifications
//! Specification 1.2; the `call.*` categories are from 1.3). Where the service offers actions,
//! an incoming call can be answered or declined from the notification.
//!
//! All D-Bus work runs on a thread of its own; the UI thread only queues commands and reads
//! replies, and never waits:
//!
//! ```text
//!   UI: incoming / missed / withdraw --commands--> notifier thread --Notify, CloseNotification-->
//!                                                       |            notification service
//!   UI: poll() <--replies-- wake() <-- ActionInvoked, NotificationClosed (signals) <--'
//! ```
//!
//! The thread connects, subscribes to the service's signals, asks for its capabilities
//! (`GetCapabilities`), then serves commands and signals one at a time, in the order they came:
//! a signal about a notification is always handled after the `Notify` that made it. Without a
//! session bus the notifier is off for good ([`Status::Off`] says why); with a bus but no
//! notification service it asks again at the next notification, since the desktop's service
//! may start after the app. Dropping the [`Notifier`] closes the incoming-call notification
//! still shown and ends the thread.
//!
//! Caller names come from the network: control characters become spaces, long names are cut,
//! and where the service renders markup in the body (capability `body-markup`) `&`, `<` and `>`
//! are escaped so a name shows as written and never as markup.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_lite::{StreamExt, future};
use zbus::message::Type as MessageType;
use zbus::zvariant::Value;
use zbus::{Connection, MatchRule, Message, MessageStream};

use super::i18n::{t, tr};

pub use super::sound::Wake;

/// The service's well-known name, object and interface (spec "D-Bus Protocol").
const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
const INTERFACE: &str = "org.freedesktop.Notifications";
/// The `.desktop` file the notifications belong to (`assets/pinhole.desktop`): desktops take
/// the icon and the app's notification settings from it.
const DESKTOP_ENTRY: &str = "pinhole";
/// Connecting and each call to the service end after this, so a hung bus or service only
/// delays notifications, never the app.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Missed-call notifications remembered for their "Call back" action; older ones still show
/// but their action is ignored.
const MISSED_KEPT: usize = 16;
/// Names longer than this are cut (with an ellipsis): a notification is a line or two.
const NAME_CHARS: usize = 64;

/// Action keys (spec "Actions"; `default` is a click on the notification itself).
const ACTION_DEFAULT: &str = "default";
const ACTION_ACCEPT: &str = "accept";
const ACTION_REJECT: &str = "reject";
const ACTION_CALL_BACK: &str = "call-back";

/// What the user did with a notification, for the UI to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// "Accept" on the incoming-call notification.
    Accept,
    /// "Reject" on the incoming-call notification.
    Reject,
    /// A click on a notification's body: bring the window forward.
    Open,
    /// "Call back" on a missed-call notification: the caller as given to [`Notifier::missed`].
    CallBack(String),
}

/// Whether notifications reach the desktop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Still connecting to the session bus.
    Starting,
    /// Notifications are not shown; why, in words.
    Off(String),
    /// Notifications are shown; `actions`: the desktop shows their buttons (Accept, Reject).
    On {
        /// The service has the `actions` capability.
        actions: bool,
    },
}

/// Shows call notifications on the desktop from a thread of its own (see the module docs).
pub struct Notifier {
    commands: async_channel::Sender<Command>,
    replies: mpsc::Receiver<Reply>,
    status: Arc<Mutex<Status>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// What the UI asks of the notifier thread.
#[derive(Debug)]
enum Command {
    Incoming(String),
    Missed(String),
    Withdraw,
}

/// Which bus to connect to.
enum Bus {
    /// The user's session bus (`DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus`).
    Session,
    /// A bus at this D-Bus address (`unix:path=...`).
    Address(String),
}

impl Notifier {
    /// Starts the notifier on the user's session bus. Never fails: without a bus or a
    /// notification service it is off and [`status`](Self::status) says why. `app_name` is
    /// shown by some desktops as the sender; `wake` is called (from the notifier's thread)
    /// whenever there is a reply to [`poll`](Self::poll) or the status changed.
    pub fn start(app_name: &str, wake: Wake) -> Notifier {
        Self::spawn(Bus::Session, app_name, wake)
    }

    /// Like [`start`](Self::start), on the bus at a D-Bus `address` (`unix:path=...`) rather
    /// than the session bus named by the environment.
    pub fn start_at(address: &str, app_name: &str, wake: Wake) -> Notifier {
        Self::spawn(Bus::Address(address.to_owned()), app_name, wake)
    }

    fn spawn(bus: Bus, app_name: &str, wake: Wake) -> Notifier {
        let (commands, command_rx) = async_channel::unbounded();
        let (reply_tx, replies) = mpsc::channel();
        let status = Arc::new(Mutex::new(Status::Starting));
        let worker = Worker {
            app_name: app_name.to_owned(),
            conn: None,
            caps: None,
            incoming: None,
            missed: VecDeque::new(),
            replies: reply_tx,
            status: Arc::clone(&status),
            wake,
        };
        let spawned = std::thread::Builder::new()
            .name("notifications".into())
            .spawn(move || async_io::block_on(worker.run(bus, command_rx)));
        if let Err(e) = spawned {
            set(
                &status,
                Status::Off(format!("could not start a thread for them: {e}")),
            );
        }
        Notifier {
            commands,
            replies,
            status,
        }
    }

    /// Shows that `caller` is calling, with Accept and Reject where the desktop shows actions;
    /// replaces the incoming-call notification still shown, if any. It stays until
    /// [`withdraw`](Self::withdraw) (or the user closes it).
    pub fn incoming(&self, caller: &str) {
        self.send(Command::Incoming(caller.to_owned()));
    }

    /// Shows that a call from `caller` was missed, with "Call back" where the desktop shows
    /// actions. The desktop keeps the time it was shown.
    pub fn missed(&self, caller: &str) {
        self.send(Command::Missed(caller.to_owned()));
    }

    /// Closes the incoming-call notification (the call was answered, declined, or the caller
    /// hung up). Nothing happens when none is shown.
    pub fn withdraw(&self) {
        self.send(Command::Withdraw);
    }

    /// The next thing the user did with a notification, if any. Never waits.
    pub fn poll(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }

    /// Whether notifications reach the desktop.
    pub fn status(&self) -> Status {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn send(&self, command: Command) {
        // Fails only when the thread has ended (no bus): then there is nothing to show on.
        let _ = self.commands.try_send(command);
    }
}

fn set(status: &Mutex<Status>, new: Status) {
    match status.lock() {
        Ok(mut s) => *s = new,
        Err(poisoned) => *poisoned.into_inner() = new,
    }
}

/// What the service can do (`GetCapabilities`).
#[derive(Debug, Clone, Copy)]
struct Caps {
    actions: bool,
    body: bool,
    markup: bool,
}

/// A notification this app showed: its id and the service's unique bus name (signals about it
/// are taken from that sender only).
#[derive(Debug, Clone)]
struct Shown {
    id: u32,
    server: String,
}

impl Shown {
    fn is(&self, id: u32, sender: &str) -> bool {
        self.id == id && self.server == sender
    }
}

/// The notifier thread's state.
struct Worker {
    app_name: String,
    conn: Option<Connection>,
    caps: Option<Caps>,
    incoming: Option<Shown>,
    missed: VecDeque<(Shown, String)>,
    replies: mpsc::Sender<Reply>,
    status: Arc<Mutex<Status>>,
    wake: Wake,
}

enum Event {
    Command(Command),
    Signal(Message),
    /// The UI dropped the notifier.
    Quit,
    /// The bus connection ended.
    BusGone,
}

impl Worker {
    async fn run(mut self, bus: Bus, commands: async_channel::Receiver<Command>) {
        let conn = match bounded(connect(bus)).await {
            Ok(conn) => conn,
            Err(why) => return self.set_status(Status::Off(why)),
        };
        let mut signals = match bounded(subscribe(&conn)).await {
            Ok(stream) => stream,
            Err(why) => return self.set_status(Status::Off(why)),
        };
        self.conn = Some(conn);
        self.probe().await;
        loop {
            let command = async {
                match commands.recv().await {
                    Ok(c) => Event::Command(c),
                    Err(_) => Event::Quit,
                }
            };
            let signal = async {
                loop {
                    match signals.next().await {
                        Some(Ok(msg)) => return Event::Signal(msg),
                        Some(Err(_)) => continue,
                        None => return Event::BusGone,
                    }
                }
            };
            match future::or(command, signal).await {
                Event::Command(Command::Incoming(caller)) => self.show_incoming(&caller).await,
                Event::Command(Command::Missed(caller)) => self.show_missed(&caller).await,
                Event::Command(Command::Withdraw) => self.withdraw().await,
                Event::Signal(msg) => self.handle_signal(&msg),
                Event::Quit => return self.withdraw().await,
                Event::BusGone => {
                    return self.set_status(Status::Off("the desktop session bus closed".into()));
                }
            }
        }
    }

    fn set_status(&self, new: Status) {
        set(&self.status, new);
        (self.wake)();
    }

    /// Asks the service what it can do; `None` (and the status says why) without a service.
    async fn probe(&mut self) -> Option<Caps> {
        if let Some(caps) = self.caps {
            return Some(caps);
        }
        let conn = self.conn.clone()?;
        let caps = match conn
            .call_method(Some(SERVICE), PATH, Some(INTERFACE), "GetCapabilities", &())
            .await
            .and_then(|reply| reply.body().deserialize::<Vec<String>>())
        {
            Ok(list) => {
                let has = |c: &str| list.iter().any(|x| x == c);
                Caps {
                    actions: has("actions"),
                    body: has("body"),
                    markup: has("body-markup"),
                }
            }
            Err(e) => {
                self.set_status(Status::Off(format!(
                    "the desktop has no notification service ({})",
                    short_error(&e)
                )));
                return None;
            }
        };
        self.caps = Some(caps);
        self.set_status(Status::On {
            actions: caps.actions,
        });
        Some(caps)
    }

    async fn show_incoming(&mut self, caller: &str) {
        let Some(caps) = self.probe().await else {
            return;
        };
        let name = clean_name(caller);
        let text = incoming_text(&name, caps);
        let labels = [t("notify-open"), t("accept"), t("reject")];
        let actions: Vec<&str> = if caps.actions {
            vec![
                ACTION_DEFAULT,
                &labels[0],
                ACTION_ACCEPT,
                &labels[1],
                ACTION_REJECT,
                &labels[2],
            ]
        } else {
            Vec::new()
        };
        let hints = HashMap::from([
            ("urgency", Value::U8(2)), // critical: stays until closed (spec "Urgency Levels")
            ("category", Value::from("call.incoming")),
            ("desktop-entry", Value::from(DESKTOP_ENTRY)),
            ("suppress-sound", Value::Bool(true)), // the app rings on its own
        ]);
        let replaces = self.incoming.as_ref().map_or(0, |s| s.id);
        // Expire timeout 0: never expires (the call is withdrawn when it ends).
        if let Some(shown) = self.notify(replaces, text, &actions, hints, 0).await {
            self.incoming = Some(shown);
        }
    }

    async fn show_missed(&mut self, caller: &str) {
        let Some(caps) = self.probe().await else {
            return;
        };
        let name = clean_name(caller);
        let text = missed_text(&name, caps);
        let labels = [t("notify-open"), t("notify-call-back")];
        let actions: Vec<&str> = if caps.actions {
            vec![ACTION_DEFAULT, &labels[0], ACTION_CALL_BACK, &labels[1]]
        } else {
            Vec::new()
        };
        let hints = HashMap::from([
            ("urgency", Value::U8(1)),
            ("category", Value::from("call.unanswered")),
            ("desktop-entry", Value::from(DESKTOP_ENTRY)),
        ]);
        // Expire timeout -1: as the desktop does for its other notifications.
        if let Some(shown) = self.notify(0, text, &actions, hints, -1).await {
            if self.missed.len() == MISSED_KEPT {
                self.missed.pop_front();
            }
            self.missed.push_back((shown, caller.to_owned()));
        }
    }

    /// `Notify`; the notification shown, or `None` (and the status says why).
    async fn notify(
        &mut self,
        replaces: u32,
        text: Text,
        actions: &[&str],
        hints: HashMap<&str, Value<'_>>,
        expire_ms: i32,
    ) -> Option<Shown> {
        let conn = self.conn.clone()?;
        let body = (
            self.app_name.as_str(),
            replaces,
            DESKTOP_ENTRY, // app_icon: the icon the desktop entry names
            text.summary.as_str(),
            text.body.as_str(),
            actions,
            hints,
            expire_ms,
        );
        let reply = conn
            .call_method(Some(SERVICE), PATH, Some(INTERFACE), "Notify", &body)
            .await;
        match reply.and_then(|r| {
            let id = r.body().deserialize::<u32>()?;
            Ok((id, r.header().sender().map(|s| s.to_string())))
        }) {
            Ok((id, server)) => Some(Shown {
                id,
                server: server.unwrap_or_default(),
            }),
            Err(e) => {
                // The service went away or misbehaves: ask again at the next notification.
                self.caps = None;
                self.set_status(Status::Off(format!(
                    "the desktop's notification service failed ({})",
                    short_error(&e)
                )));
                None
            }
        }
    }

    async fn withdraw(&mut self) {
        let (Some(shown), Some(conn)) = (self.incoming.take(), self.conn.clone()) else {
            return;
        };
        // A notification already closed by the user is an error some services return: nothing
        // to do about it.
        let _ = conn
            .call_method(
                Some(SERVICE),
                PATH,
                Some(INTERFACE),
                "CloseNotification",
                &shown.id,
            )
            .await;
    }

    /// `ActionInvoked(id, key)` and `NotificationClosed(id, reason)` about our notifications.
    fn handle_signal(&mut self, msg: &Message) {
        let header = msg.header();
        let (Some(member), Some(sender)) = (header.member(), header.sender()) else {
            return;
        };
        let sender = sender.as_str();
        match member.as_str() {
            "ActionInvoked" => {
                let Ok((id, key)) = msg.body().deserialize::<(u32, String)>() else {
                    return;
                };
                let reply = if self.incoming.as_ref().is_some_and(|s| s.is(id, sender)) {
                    match key.as_str() {
                        ACTION_ACCEPT => Some(Reply::Accept),
                        ACTION_REJECT => Some(Reply::Reject),
                        ACTION_DEFAULT => Some(Reply::Open),
                        _ => None,
                    }
                } else if let Some((_, caller)) = self.missed.iter().find(|(s, _)| s.is(id, sender))
                {
                    match key.as_str() {
                        ACTION_CALL_BACK => Some(Reply::CallBack(caller.clone())),
                        ACTION_DEFAULT => Some(Reply::Open),
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(reply) = reply
                    && self.replies.send(reply).is_ok()
                {
                    (self.wake)();
                }
            }
            "NotificationClosed" => {
                let Ok((id, _reason)) = msg.body().deserialize::<(u32, u32)>() else {
                    return;
                };
                if self.incoming.as_ref().is_some_and(|s| s.is(id, sender)) {
                    self.incoming = None;
                }
                self.missed.retain(|(s, _)| !s.is(id, sender));
            }
            _ => {}
        }
    }
}

/// Ends `work` with an error after [`BUS_TIMEOUT`].
async fn bounded<T>(work: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    future::or(work, async {
        async_io::Timer::after(BUS_TIMEOUT).await;
        Err(format!(
            "the desktop session bus did not answer within {} s",
            BUS_TIMEOUT.as_secs()
        ))
    })
    .await
}

async fn connect(bus: Bus) -> Result<Connection, String> {
    let builder = match &bus {
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
    };
    let no_bus = |e: zbus::Error| format!("no desktop session bus ({})", short_error(&e));
    builder
        .map_err(no_bus)?
        .method_timeout(BUS_TIMEOUT)
        .build()
        .await
        .map_err(no_bus)
}

/// The service's signals (from whichever connection owns its name now or later).
async fn subscribe(conn: &Connection) -> Result<MessageStream, String> {
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(INTERFACE)
        .and_then(|r| r.path(PATH))
        .map(|r| r.build())
        .map_err(|e| short_error(&e))?;
    MessageStream::for_match_rule(rule, conn, None)
        .await
        .map_err(|e| {
            format!(
                "could not listen to the notification service ({})",
                short_error(&e)
            )
        })
}

/// A D-Bus error in a few words: the error's own message when it has one.
fn short_error(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(message), _) => format!("{name}: {message}"),
        other => other.to_string(),
    }
}

/// A notification's summary (one plain line) and body (markup where the service renders it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text {
    summary: String,
    body: String,
}

/// An incoming call from `name` (already [`clean_name`]d). Without a body the summary names
/// the caller (a summary is never markup).
fn incoming_text(name: &str, caps: Caps) -> Text {
    if caps.body {
        Text {
            summary: t("incoming-call"),
            body: tr("notify-calling", &[("peer", &body_text(name, caps))]),
        }
    } else {
        Text {
            summary: tr("notify-calling-summary", &[("peer", &name)]),
            body: String::new(),
        }
    }
}

/// A missed call from `name` (already [`clean_name`]d).
fn missed_text(name: &str, caps: Caps) -> Text {
    if caps.body {
        Text {
            summary: t("notify-missed"),
            body: tr("missed-call", &[("peer", &body_text(name, caps))]),
        }
    } else {
        Text {
            summary: tr("notify-missed-from", &[("peer", &name)]),
            body: String::new(),
        }
    }
}

/// `text` as the body must carry it: escaped where the service reads markup, as it is where it
/// does not (spec "Markup": a service without `body-markup` shows markup as it is written).
fn body_text(text: &str, caps: Caps) -> String {
    if caps.markup {
        escape_markup(text)
    } else {
        text.to_owned()
    }
}

/// A name from the network made fit for one line: control characters (line breaks, tabs,
/// escapes) become spaces, runs of spaces one, and it is cut at [`NAME_CHARS`] characters.
fn clean_name(name: &str) -> String {
    let spaced: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.is_empty() {
        return t("notify-someone");
    }
    if joined.chars().count() > NAME_CHARS {
        let mut cut: String = joined.chars().take(NAME_CHARS - 1).collect();
        cut.push('…');
        return cut;
    }
    joined
}

/// Escapes the characters the notification body markup (a subset of XML) gives meaning to.
fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Caps = Caps {
        actions: true,
        body: true,
        markup: true,
    };

    #[test]
    fn names_are_escaped_only_where_the_body_is_markup() {
        let name = clean_name("<b>x</b>&");
        assert_eq!(
            incoming_text(&name, ALL).body,
            "&lt;b&gt;x&lt;/b&gt;&amp; is calling."
        );
        let plain = Caps {
            markup: false,
            ..ALL
        };
        assert_eq!(incoming_text(&name, plain).body, "<b>x</b>& is calling.");
        let bodiless = Caps { body: false, ..ALL };
        let text = missed_text(&name, bodiless);
        assert_eq!(text.summary, "Missed call from <b>x</b>&");
        assert_eq!(text.body, "");
    }

    #[test]
    fn names_are_one_short_line() {
        assert_eq!(clean_name("  ann\n\tsmith\u{1b}[31m "), "ann smith [31m");
        assert_eq!(clean_name("\n"), "Someone");
        let long = "x".repeat(200);
        let cut = clean_name(&long);
        assert_eq!(cut.chars().count(), NAME_CHARS);
        assert!(cut.ends_with('…'));
    }
}
