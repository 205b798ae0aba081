//! Desktop notifications for incoming and missed calls (`pinhole::ui::notify`), against a
//! private D-Bus session bus (a `dbus-daemon` each test starts, and stops by its PID when it
//! ends, failed or not) and a fake notification service on it: an
//! `org.freedesktop.Notifications` object that records every `Notify` and `CloseNotification`
//! and emits `ActionInvoked` when the test clicks a button.
//!
//! Needs `dbus-daemon` (Debian package `dbus-daemon`, in scripts/packages/desktop.txt).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use pinhole::ui::notify::{Notifier, Reply, Status, Wake};
use pinhole_tests::dbus::Bus;
use zbus::Connection;
use zbus::zvariant::{OwnedValue, Value};

const PATH: &str = "/org/freedesktop/Notifications";
const INTERFACE: &str = "org.freedesktop.Notifications";
/// Every wait in these tests ends after this.
const WAIT: Duration = Duration::from_secs(5);

/// The test's own session bus.
fn start_bus() -> Option<Bus> {
    Bus::start()
}

/// One call the fake service received.
#[derive(Debug)]
enum Seen {
    Notify(Notified),
    Close(u32),
}

#[derive(Debug)]
#[allow(dead_code)] // app_name, app_icon: shown when an assertion fails
struct Notified {
    id: u32,
    app_name: String,
    replaces_id: u32,
    app_icon: String,
    summary: String,
    body: String,
    actions: Vec<String>,
    hints: HashMap<String, OwnedValue>,
    expire_timeout: i32,
}

impl Notified {
    /// The actions as (key, label) pairs.
    fn actions(&self) -> Vec<(&str, &str)> {
        self.actions
            .chunks(2)
            .map(|p| (p[0].as_str(), p.get(1).map_or("", String::as_str)))
            .collect()
    }

    fn hint(&self, name: &str) -> Option<&Value<'static>> {
        self.hints.get(name).map(|v| &**v)
    }
}

/// The fake `org.freedesktop.Notifications`.
struct Service {
    capabilities: Vec<String>,
    next_id: u32,
    seen: mpsc::Sender<Seen>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Service {
    fn get_capabilities(&self) -> Vec<String> {
        self.capabilities.clone()
    }

    #[allow(clippy::too_many_arguments)] // the method as the specification defines it
    fn notify(
        &mut self,
        app_name: String,
        replaces_id: u32,
        app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        expire_timeout: i32,
    ) -> u32 {
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.next_id += 1;
            self.next_id
        };
        let _ = self.seen.send(Seen::Notify(Notified {
            id,
            app_name,
            replaces_id,
            app_icon,
            summary,
            body,
            actions,
            hints,
            expire_timeout,
        }));
        id
    }

    fn close_notification(&self, id: u32) {
        let _ = self.seen.send(Seen::Close(id));
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "fake".into(),
            "pinhole tests".into(),
            "0".into(),
            "1.2".into(),
        )
    }
}

/// The fake service on `bus`, with these capabilities; what it receives comes out of the
/// receiver.
fn start_service(bus: &Bus, capabilities: &[&str]) -> (Connection, mpsc::Receiver<Seen>) {
    let (seen, rx) = mpsc::channel();
    let service = Service {
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        next_id: 0,
        seen,
    };
    let conn = async_io::block_on(async {
        zbus::connection::Builder::address(bus.address.as_str())?
            .name(INTERFACE)?
            .serve_at(PATH, service)?
            .build()
            .await
    })
    .unwrap();
    (conn, rx)
}

/// The service's `ActionInvoked(id, key)`: the user clicked a button.
fn click(service: &Connection, id: u32, key: &str) {
    async_io::block_on(service.emit_signal(
        None::<&str>,
        PATH,
        INTERFACE,
        "ActionInvoked",
        &(id, key),
    ))
    .unwrap();
}

/// The service's `NotificationClosed(id, reason)`; reason 2: the user closed it.
fn closed_by_user(service: &Connection, id: u32) {
    async_io::block_on(service.emit_signal(
        None::<&str>,
        PATH,
        INTERFACE,
        "NotificationClosed",
        &(id, 2u32),
    ))
    .unwrap();
}

fn next_notify(seen: &mpsc::Receiver<Seen>) -> Notified {
    match seen.recv_timeout(WAIT) {
        Ok(Seen::Notify(n)) => n,
        other => panic!("expected one Notify within 5 s, got {other:?}"),
    }
}

fn next_close(seen: &mpsc::Receiver<Seen>) -> u32 {
    match seen.recv_timeout(WAIT) {
        Ok(Seen::Close(id)) => id,
        other => panic!("expected CloseNotification within 5 s, got {other:?}"),
    }
}

/// Nothing more reaches the service for a moment.
fn nothing_more(seen: &mpsc::Receiver<Seen>) {
    if let Ok(extra) = seen.recv_timeout(Duration::from_millis(300)) {
        panic!("the service got more than expected: {extra:?}");
    }
}

fn wait_status(n: &Notifier, want: impl Fn(&Status) -> bool) -> Status {
    let start = Instant::now();
    loop {
        let status = n.status();
        if want(&status) {
            return status;
        }
        assert!(start.elapsed() < WAIT, "status still {status:?} after 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_reply(n: &Notifier) -> Reply {
    let start = Instant::now();
    loop {
        if let Some(reply) = n.poll() {
            return reply;
        }
        assert!(start.elapsed() < WAIT, "no reply within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn counting_wake() -> (Wake, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    (
        Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
        count,
    )
}

#[test]
fn incoming_call_is_answered_and_declined_from_the_notification() {
    let Some(bus) = start_bus() else { return };
    let (service, seen) = start_service(&bus, &["actions", "body", "body-markup"]);
    let (wake, woken) = counting_wake();
    let n = Notifier::start_at(&bus.address, "Pinhole", wake);
    wait_status(&n, |s| *s == Status::On { actions: true });

    n.incoming("alice");
    let shown = next_notify(&seen);
    nothing_more(&seen);
    assert_eq!(shown.summary, "Incoming call");
    assert_eq!(shown.body, "alice is calling.");
    assert_eq!(shown.replaces_id, 0);
    assert_eq!(
        shown.actions(),
        [
            ("default", "Open Pinhole"),
            ("accept", "Accept"),
            ("reject", "Reject")
        ]
    );
    assert_eq!(shown.hint("urgency"), Some(&Value::U8(2)), "critical");
    assert_eq!(shown.hint("category"), Some(&Value::from("call.incoming")));
    assert_eq!(shown.hint("desktop-entry"), Some(&Value::from("pinhole")));
    assert_eq!(shown.expire_timeout, 0, "an incoming call never expires");

    let before = woken.load(Ordering::SeqCst);
    click(&service, shown.id, "accept");
    assert_eq!(wait_reply(&n), Reply::Accept);
    assert!(woken.load(Ordering::SeqCst) > before, "the UI was woken");
    click(&service, shown.id, "reject");
    assert_eq!(wait_reply(&n), Reply::Reject);
    // Signals are handled in order: an action on someone else's notification, then a click on
    // ours; only the click comes out.
    click(&service, shown.id + 100, "accept");
    click(&service, shown.id, "default");
    assert_eq!(wait_reply(&n), Reply::Open);
    assert_eq!(n.poll(), None);

    n.withdraw();
    assert_eq!(next_close(&seen), shown.id);
    n.withdraw(); // nothing shown any more: nothing to close
    nothing_more(&seen);

    // A hostile name arrives escaped (this service reads markup in the body).
    n.incoming("<b>x</b>&");
    let hostile = next_notify(&seen);
    assert_eq!(hostile.body, "&lt;b&gt;x&lt;/b&gt;&amp; is calling.");
    // A second call while the first still shows replaces it.
    n.incoming("bob");
    let replaced = next_notify(&seen);
    assert_eq!(replaced.replaces_id, hostile.id);
    assert_eq!(replaced.body, "bob is calling.");
    // The app quits while it rings: the notification goes with it.
    drop(n);
    assert_eq!(next_close(&seen), hostile.id);
    nothing_more(&seen);
}

#[test]
fn missed_call_shows_once_and_calls_back() {
    let Some(bus) = start_bus() else { return };
    let (service, seen) = start_service(&bus, &["actions", "body", "body-markup"]);
    let (wake, _) = counting_wake();
    let n = Notifier::start_at(&bus.address, "Pinhole", wake);

    n.missed("carol & dave");
    let shown = next_notify(&seen);
    nothing_more(&seen);
    assert_eq!(shown.summary, "Missed call");
    assert_eq!(shown.body, "You missed a call from carol &amp; dave.");
    assert_eq!(
        shown.actions(),
        [("default", "Open Pinhole"), ("call-back", "Call back")]
    );
    assert_eq!(
        shown.hint("category"),
        Some(&Value::from("call.unanswered"))
    );
    assert_eq!(shown.expire_timeout, -1);

    click(&service, shown.id, "call-back");
    assert_eq!(wait_reply(&n), Reply::CallBack("carol & dave".into()));
    // Its buttons are not the incoming call's.
    click(&service, shown.id, "accept");
    click(&service, shown.id, "default");
    assert_eq!(wait_reply(&n), Reply::Open);
    // Withdrawing the incoming call leaves missed calls alone.
    n.withdraw();
    nothing_more(&seen);
    // Once the user closed it, its buttons mean nothing: the next reply is another one's.
    closed_by_user(&service, shown.id);
    click(&service, shown.id, "call-back");
    n.missed("erin");
    let erin = next_notify(&seen);
    click(&service, erin.id, "call-back");
    assert_eq!(wait_reply(&n), Reply::CallBack("erin".into()));
    assert_eq!(n.poll(), None);
}

#[test]
fn without_actions_the_notification_has_no_buttons() {
    let Some(bus) = start_bus() else { return };
    // A service that shows a body as plain text and no buttons.
    let (service, seen) = start_service(&bus, &["body"]);
    let (wake, _) = counting_wake();
    let n = Notifier::start_at(&bus.address, "Pinhole", wake);
    wait_status(&n, |s| *s == Status::On { actions: false });

    n.incoming("<b>x</b>&");
    let shown = next_notify(&seen);
    assert!(shown.actions.is_empty(), "{:?}", shown.actions);
    // Plain text: the name as it is (escaped it would show "&lt;b&gt;").
    assert_eq!(shown.body, "<b>x</b>& is calling.");
    n.missed("bob");
    let missed = next_notify(&seen);
    assert!(missed.actions.is_empty(), "{:?}", missed.actions);
    // The user closed the incoming call; the call ends later: nothing left to close. (A click
    // on the missed call's body, handled after the close, shows the close was seen.)
    closed_by_user(&service, shown.id);
    click(&service, missed.id, "default");
    assert_eq!(wait_reply(&n), Reply::Open);
    n.withdraw();
    nothing_more(&seen);
}

#[test]
fn a_bus_without_a_notification_service_is_off_until_one_starts() {
    let Some(bus) = start_bus() else { return };
    let (wake, woken) = counting_wake();
    let n = Notifier::start_at(&bus.address, "Pinhole", wake);
    let Status::Off(why) = wait_status(&n, |s| matches!(s, Status::Off(_))) else {
        unreachable!()
    };
    assert!(why.contains("no notification service"), "{why}");
    // Shown nowhere: it asks the bus again, finds no service, and says so (a wake).
    let before = woken.load(Ordering::SeqCst);
    n.incoming("alice");
    let start = Instant::now();
    while woken.load(Ordering::SeqCst) == before {
        assert!(start.elapsed() < WAIT, "the notifier did not ask again");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The desktop's service starts after the app: the next notification reaches it.
    let (_service, seen) = start_service(&bus, &["actions", "body"]);
    n.missed("bob");
    let shown = next_notify(&seen);
    assert_eq!(shown.body, "You missed a call from bob.");
    wait_status(&n, |s| *s == Status::On { actions: true });
}

#[test]
fn without_a_bus_it_is_off_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("no-bus").display());
    let (wake, woken) = counting_wake();
    let start = Instant::now();
    let n = Notifier::start_at(&address, "Pinhole", wake);
    n.incoming("alice");
    n.missed("bob");
    n.withdraw();
    assert_eq!(n.poll(), None);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "the calls waited: {:?}",
        start.elapsed()
    );
    let Status::Off(why) = wait_status(&n, |s| matches!(s, Status::Off(_))) else {
        unreachable!()
    };
    assert!(why.contains("no desktop session bus"), "{why}");
    assert!(woken.load(Ordering::SeqCst) > 0, "the UI learns it is off");
    // Still fine once the thread has ended.
    n.incoming("alice");
    n.withdraw();
    assert_eq!(n.poll(), None);
}

/// By hand, on a desktop: an incoming call and a missed call on the session bus the
/// environment names, then what is clicked, printed, for `PINHOLE_NOTIFY_SECS` (30 s). Accept
/// or Reject withdraws the incoming call, as the app does.
///
/// `cargo test -p pinhole --test ui_notify -- --ignored --nocapture`
#[test]
#[ignore = "by hand: shows notifications on your desktop"]
fn by_hand_on_the_desktop() {
    let secs = std::env::var("PINHOLE_NOTIFY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let n = Notifier::start("Pinhole", Arc::new(|| {}));
    println!("status: {:?}", wait_status(&n, |s| *s != Status::Starting));
    n.incoming("<b>alice</b> & co");
    n.missed("bob");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Some(reply) = n.poll() {
            println!("reply: {reply:?}");
            if matches!(reply, Reply::Accept | Reply::Reject) {
                n.withdraw();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    n.withdraw();
    println!("status: {:?}", n.status());
}

/// The app on a fake engine, with its notifier on `bus`; its window's focus as given.
struct App {
    fake: pinhole::ui::FakeEngine,
    h: egui_kittest::Harness<'static, pinhole::ui::PinholeApp>,
    _dir: tempfile::TempDir,
}

impl App {
    fn on(bus: &Bus) -> App {
        use pinhole::engine::{Event, Registration};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        let s = pinhole::settings::Settings {
            name: "alice".into(),
            server: "127.0.0.1:3478".into(),
            ..Default::default()
        };
        pinhole::settings::save(&path, &s).unwrap();
        let fake = pinhole::ui::FakeEngine::new();
        let notifier = Notifier::start_at(&bus.address, "Pinhole", Arc::new(|| {}));
        wait_status(&notifier, |s| matches!(s, Status::On { .. }));
        let app = pinhole::ui::PinholeApp::new(path, pinhole::ui::DeviceList::default())
            .with_engine(fake.starter())
            .without_sounds()
            .with_notifier(notifier);
        let mut h = egui_kittest::Harness::builder()
            .with_size([480.0, 700.0])
            .build_ui_state(|ui, app: &mut pinhole::ui::PinholeApp| app.show(ui), app);
        h.run();
        fake.push(Event::Registration(Registration::Online {
            name: "alice".into(),
            mapped: "203.0.113.9:40000".parse().unwrap(),
            verdict: None,
            server: String::new(),
        }));
        h.run();
        App { fake, h, _dir: dir }
    }

    fn focused(&mut self, focused: bool) {
        let id = egui::ViewportId::ROOT;
        self.h.input_mut().viewports.entry(id).or_default().focused = Some(focused);
    }

    /// Runs frames until `done` holds (the notifier's replies come from its thread).
    fn run_until(&mut self, what: &str, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.h.run();
            if done(self) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_app_notifies_a_call_in_the_background_and_accept_there_answers_it() {
    use pinhole::engine::{Command as EngineCommand, EndReason, Event};
    let Some(bus) = start_bus() else { return };
    let (service, seen) = start_service(&bus, &["actions", "body"]);
    let mut app = App::on(&bus);

    // In the foreground a ringing call is in the window only.
    app.focused(true);
    app.fake.push(Event::Incoming { from: "bob".into() });
    app.h.run();
    nothing_more(&seen);
    app.h.get_by_label("Reject").click();
    app.h.run();

    // In the background it is on the desktop; Accept there answers it.
    app.focused(false);
    app.fake.push(Event::Incoming {
        from: "carol".into(),
    });
    app.h.run();
    let shown = next_notify(&seen);
    assert_eq!(shown.body, "carol is calling.");
    click(&service, shown.id, "accept");
    app.run_until("Accept from the notification", |a| {
        a.fake.commands().contains(&EngineCommand::Accept)
    });
    // Answered: the notification goes.
    assert_eq!(next_close(&seen), shown.id);

    // A call that rings out in the background is a missed-call notification, and Call back
    // there calls.
    app.fake.push(Event::Ended {
        reason: EndReason::Remote(traversal::control::EndReason::HungUp),
        peer: "carol".into(),
        connected: false,
        report: None,
    });
    app.h.run();
    app.fake.push(Event::Incoming {
        from: "dave".into(),
    });
    app.h.run();
    let ringing = next_notify(&seen);
    app.fake.push(Event::Ended {
        reason: EndReason::Remote(traversal::control::EndReason::Cancelled),
        peer: "dave".into(),
        connected: false,
        report: None,
    });
    app.h.run();
    assert_eq!(next_close(&seen), ringing.id);
    let missed = next_notify(&seen);
    assert_eq!(missed.summary, "Missed call");
    assert!(missed.body.contains("dave"), "{}", missed.body);
    click(&service, missed.id, "call-back");
    app.run_until("Call back from the notification", |a| {
        a.fake
            .commands()
            .contains(&EngineCommand::Call("dave".into()))
    });
}
