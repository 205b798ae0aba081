//! The app in German (forced, as `PINHOLE_LANG=de` or a German locale would choose it): the
//! views' labels and the failure texts, driven through the accessibility tree with
//! `egui_kittest`; and the failure texts of `ui::words` in both languages.
//!
//! The language is process-wide, so the tests here take turns ([`speaking`]).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use media::audio::LevelMeter;
use pinhole::engine::{
    AudioSide, Command, EndReason, Event, Registration, Security, ServerLoss, StopReason,
};
use pinhole::settings::{self, Settings};
use pinhole::ui::i18n::{self, Language};
use pinhole::ui::{DeviceList, Failure, FakeEngine, Link, PinholeApp, View, words};
use traversal::control::{EndReason as Remote, Verdict};

const SERVER: &str = "127.0.0.1:3478";

/// Sets the app's language for as long as the guard is held.
fn speaking(language: Language) -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    i18n::set_language(language);
    guard
}

fn app(dir: &Path, fake: &FakeEngine) -> PinholeApp {
    let path = dir.join("settings.toml");
    let s = Settings {
        name: "alice".into(),
        server: SERVER.into(),
        ..Default::default()
    };
    settings::save(&path, &s).unwrap();
    PinholeApp::new(path, DeviceList::default())
        .with_engine(fake.starter())
        .without_sounds()
}

fn harness(app: PinholeApp) -> Harness<'static, PinholeApp> {
    Harness::builder()
        .with_size([480.0, 1000.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app)
}

fn online() -> Event {
    Event::Registration(Registration::Online {
        name: "alice".into(),
        mapped: "203.0.113.9:40000".parse().unwrap(),
        verdict: Some(Verdict::Nat),
        server: String::new(),
    })
}

fn connected(peer: &str) -> Event {
    Event::Connected {
        peer: peer.into(),
        input_meter: LevelMeter::new(),
        output_meter: LevelMeter::new(),
        security: Security {
            suite: "AEAD_AES_128_GCM",
            sas: Some("123 456".into()),
            peer_key: None,
            key_check: None,
        },
    }
}

fn click(h: &mut Harness<'static, PinholeApp>, label: &str) {
    h.get_by_label(label).click();
    h.run();
}

#[test]
fn the_views_speak_german() {
    let _german = speaking(Language::German);
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = harness(app(dir.path(), &fake));
    h.run();
    h.get_by_label_contains("Verbinde mit 127.0.0.1:3478");
    fake.push(online());
    h.run();
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("Online: angemeldet bei 127.0.0.1:3478");

    h.get_by_label("Sie sind alice");
    h.get_by_label("Anrufen");
    h.get_by_label("Kontakte");
    h.get_by_label("Noch keine Anrufe.");
    assert!(h.query_by_label("Settings").is_none());
    click(&mut h, "Einstellungen");
    assert_eq!(h.state().view(), View::Settings);
    h.get_by_label("Ihr Name");
    h.get_by_label("Mikrofon");
    h.get_by_label("Verbindung testen");
    h.get_by_label("Speichern");
    h.get_by_label("Echounterdrückung");
    click(&mut h, "Abbrechen");
    assert_eq!(h.state().view(), View::Main);

    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    assert_eq!(h.state().view(), View::Incoming);
    h.get_by_label("Eingehender Anruf");
    h.get_by_label("Annehmen");
    click(&mut h, "Ablehnen");
    assert_eq!(fake.commands(), vec![Command::Reject]);
    assert_eq!(
        h.state().notice().unwrap().text,
        "Sie haben den Anruf von bob abgelehnt."
    );
    assert!(h.query_by_label("Accept").is_none());

    // A call that is up: the call view's buttons.
    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    click(&mut h, "Annehmen");
    fake.push(connected("bob"));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    h.get_by_label("Im Gespräch mit");
    h.get_by_label("Über den Server weitergeleitet");
    h.get_by_label("Mit bob vergleichen:");
    h.get_by_label("Stummschalten");
    click(&mut h, "Auflegen (Esc)");
    assert_eq!(h.state().view(), View::Main);
    assert!(
        h.state()
            .notice()
            .unwrap()
            .text
            .starts_with("Anruf mit bob nach 0:0")
    );
    // The recent calls, their outcomes in German (stored in English).
    h.get_by_label_contains("eingehend · abgelehnt · gerade eben");
    h.get_by_label_contains("eingehend · 0:0");
}

#[test]
fn failures_are_said_in_german_in_the_window() {
    let _german = speaking(Language::German);
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = harness(app(dir.path(), &fake));
    h.run();
    fake.push(online());
    h.run();

    // A call that rang out before we answered: missed.
    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    fake.push(Event::Ended {
        reason: EndReason::Remote(Remote::Cancelled),
        peer: "bob".into(),
        connected: false,
        report: None,
    });
    h.run();
    h.get_by_label("Sie haben einen Anruf von bob verpasst.");

    // The server takes the name away.
    fake.push(Event::Stopped {
        reason: Some(StopReason::NameTaken),
    });
    h.run();
    assert!(matches!(h.state().link(), Link::Failed { .. }));
    h.get_by_label_contains("Ihr Name ist auf 127.0.0.1:3478 vergeben");
}

/// The failure texts, each naming the peer (or the server), in English and in German.
#[test]
fn failure_texts_in_both_languages() {
    let ended = |reason: EndReason, outgoing| words::ending(&reason, "bob", outgoing, None, None);
    let stopped = |reason| words::failed(SERVER, &Failure::Stopped(Some(reason)));
    let up = Some(Duration::from_secs(83));
    let mic = (
        AudioSide::Microphone,
        "device busy; available: pulse".to_owned(),
    );
    let link = Link::Offline {
        server: SERVER.into(),
        reason: ServerLoss::NotAnswering,
        retry_at: std::time::Instant::now(),
    };

    let cases: Vec<(String, &str, &str)> = {
        let _english = speaking(Language::English);
        let english = texts(&ended, &stopped, up, &mic, &link);
        drop(_english);
        let _german = speaking(Language::German);
        let german = texts(&ended, &stopped, up, &mic, &link);
        english
            .into_iter()
            .zip(german)
            .zip(EXPECTED)
            .map(|((en, de), (want_en, want_de))| {
                assert_eq!(en, want_en);
                (de, want_en, want_de)
            })
            .collect()
    };
    for (de, en, want) in cases {
        assert_eq!(de, want, "German of {en:?}");
        assert_ne!(de, en);
    }
}

type Ended<'a> = &'a dyn Fn(EndReason, bool) -> words::Ending;
type Stopped<'a> = &'a dyn Fn(StopReason) -> String;

/// The failure texts in the current language, in the order of [`EXPECTED`].
fn texts(
    ended: Ended<'_>,
    stopped: Stopped<'_>,
    up: Option<Duration>,
    mic: &(AudioSide, String),
    link: &Link,
) -> Vec<String> {
    vec![
        ended(EndReason::Remote(Remote::Busy), true).text,
        ended(EndReason::Remote(Remote::Offline), true).text,
        ended(EndReason::Remote(Remote::Rejected), true).text,
        ended(EndReason::Remote(Remote::NoAnswer), true).text,
        ended(EndReason::Remote(Remote::NoAnswer), false).text,
        ended(EndReason::PeerSilent, true).text,
        ended(EndReason::ServerUnreachable, true).text,
        words::ending(&EndReason::Remote(Remote::PeerLost), "bob", true, up, None).text,
        words::ending(&EndReason::Local, "bob", true, None, Some(mic)).text,
        stopped(StopReason::NameTaken),
        stopped(StopReason::ServerFull),
        words::failed("", &Failure::Stopped(None)),
        words::offline(&ServerLoss::NotAnswering, Duration::from_secs(3)),
        words::nat_failed("no answer from 127.0.0.1:3478"),
        words::no_microphone("device busy"),
        words::call_failed("bob", "the call engine stopped"),
        words::cannot_call("bob", link, "alice"),
    ]
}

/// (English, German) of [`texts`].
const EXPECTED: [(&str, &str); 17] = [
    (
        "bob is busy in another call.",
        "bob ist gerade in einem anderen Gespräch.",
    ),
    (
        "bob is not online right now.",
        "bob ist gerade nicht online.",
    ),
    ("bob declined the call.", "bob hat den Anruf abgelehnt."),
    ("bob did not answer.", "bob hat nicht abgenommen."),
    (
        "You missed a call from bob.",
        "Sie haben einen Anruf von bob verpasst.",
    ),
    (
        "Nothing came from bob for 5 seconds: the connection was lost.",
        "Von bob kam 5 Sekunden lang nichts an: Die Verbindung ist abgebrochen.",
    ),
    (
        "Cannot call bob: the server cannot be reached right now.",
        "bob kann nicht angerufen werden: Der Server ist gerade nicht erreichbar.",
    ),
    (
        "Call with bob ended after 1:23: The connection to bob was lost.",
        "Anruf mit bob nach 1:23 beendet: Die Verbindung zu bob ist abgebrochen.",
    ),
    (
        "No microphone could be opened (device busy). Pick another one in Settings.",
        "Kein Mikrofon ließ sich öffnen (device busy). Wählen Sie in den Einstellungen ein \
         anderes.",
    ),
    (
        "Your name is taken on 127.0.0.1:3478: someone else registered it first. Choose \
         another name in Settings.",
        "Ihr Name ist auf 127.0.0.1:3478 vergeben: Jemand anderes hat ihn zuerst angemeldet. \
         Wählen Sie in den Einstellungen einen anderen Namen.",
    ),
    (
        "127.0.0.1:3478 is full: it has no room for more people right now.",
        "127.0.0.1:3478 ist voll: Gerade ist kein Platz für weitere Personen.",
    ),
    (
        "Not connected to the server: the call engine stopped.",
        "Nicht verbunden mit dem Server: Die Anrufsteuerung wurde beendet.",
    ),
    (
        "Lost the server (it stopped answering); trying again in 3 s.",
        "Verbindung zum Server verloren (er antwortet nicht mehr); neuer Versuch in 3 s.",
    ),
    (
        "Network check failed: no answer from 127.0.0.1:3478",
        "Netzwerkprüfung fehlgeschlagen: no answer from 127.0.0.1:3478",
    ),
    ("No microphone: device busy", "Kein Mikrofon: device busy"),
    (
        "The call with bob failed: the call engine stopped",
        "Der Anruf mit bob ist gescheitert: the call engine stopped",
    ),
    (
        "Cannot call bob now: the server was lost and the app is reaching it again.",
        "bob kann gerade nicht angerufen werden: Die Verbindung zum Server ist verloren, und \
         die App baut sie wieder auf.",
    ),
];

#[test]
fn a_missing_german_message_is_english_never_an_id() {
    let _german = speaking(Language::German);
    assert_eq!(i18n::t("settings"), "Einstellungen");
    assert_eq!(i18n::tr_in(Language::English, "settings", &[]), "Settings");
    // The built-in server, at the start of a sentence.
    assert_eq!(
        words::failed("", &Failure::Stopped(Some(StopReason::ServerFull))),
        "Der Server ist voll: Gerade ist kein Platz für weitere Personen."
    );
}

#[test]
fn field_problems_in_both_languages() {
    use pinhole::settings::{AddrError, NameError, check_name};
    let cases = |language| {
        let _turn = speaking(language);
        (
            words::name_problem(&check_name("a b").unwrap_err()),
            words::name_problem(&NameError::Echo),
            words::server_problem(&AddrError::Port("99999".into())),
            words::server_problem(&AddrError::Host("bad_host".into())),
        )
    };
    assert_eq!(
        cases(Language::English),
        (
            "a name has only letters, digits, '.', '_' and '-', not ' '".to_owned(),
            "\"echo\" is the server's echo service; choose another name".to_owned(),
            "The port must be a number from 1 to 65535, not \"99999\"".to_owned(),
            "\"bad_host\" is not a host name or IP address".to_owned(),
        )
    );
    assert_eq!(
        cases(Language::German),
        (
            "ein Name besteht nur aus Buchstaben, Ziffern, '.', '_' und '-', nicht ' '".to_owned(),
            "„echo“ ist der Echodienst des Servers; wählen Sie einen anderen Namen".to_owned(),
            "Der Port ist eine Zahl von 1 bis 65535, nicht \"99999\"".to_owned(),
            "\"bad_host\" ist kein Hostname und keine IP-Adresse".to_owned(),
        )
    );
    // The English words are the errors' own (the command line says those).
    assert_eq!(
        NameError::Echo.to_string(),
        "\"echo\" is the server's echo service; choose another name"
    );
}
