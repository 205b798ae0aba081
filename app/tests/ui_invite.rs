//! Invite links in the desktop app, against a fake engine, through the accessibility tree with
//! `egui_kittest`: the confirmation says who, which server and which certificate; taking it
//! writes the settings (server and pin) and calls once registered there; Cancel changes
//! nothing; on first run the setup form takes the server; a link that pins another certificate
//! than the one trusted is said loudly; the main view's "Copy invite link" copies the user's
//! own link.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use pinhole::engine::{Command, Event, Registration};
use pinhole::invite::Invite;
use pinhole::settings::{self, Settings};
use pinhole::ui::{Call, DeviceList, FakeEngine, Link, PinholeApp, View};

const SERVER: &str = "127.0.0.1:3478";
const OTHER: &str = "other.example.org:4000";
const FP: &str = "sha256:ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";
const OLD_FP: &str = "sha256:0101010101010101010101010101010101010101010101010101010101010101";

fn link(name: &str, server: &str, fp: Option<&str>) -> Invite {
    let fp = fp.map_or_else(String::new, |fp| format!("&fp={fp}"));
    format!("pinhole://call/{name}?server={server}{fp}")
        .parse()
        .unwrap()
}

fn harness(app: PinholeApp) -> Harness<'static, PinholeApp> {
    Harness::builder()
        .with_size([480.0, 640.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app)
}

/// alice's settings at `server` in `dir` (written when absent), and the app on `fake`.
fn app_at(dir: &Path, fake: &FakeEngine, server: &str, pin: &str) -> (PathBuf, PinholeApp) {
    let path = dir.join("settings.toml");
    if !path.exists() {
        let s = Settings {
            name: "alice".into(),
            server: server.into(),
            server_fingerprint: pin.into(),
            ..Default::default()
        };
        settings::save(&path, &s).unwrap();
    }
    let app = PinholeApp::new(path.clone(), DeviceList::default())
        .with_engine(fake.starter())
        .without_sounds();
    (path, app)
}

fn online() -> Event {
    Event::Registration(Registration::Online {
        name: "alice".into(),
        mapped: "203.0.113.9:40000".parse().unwrap(),
        verdict: None,
        server: String::new(),
    })
}

/// alice registered at `SERVER` on the main view.
fn registered() -> (
    tempfile::TempDir,
    PathBuf,
    FakeEngine,
    Harness<'static, PinholeApp>,
) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let (path, app) = app_at(dir.path(), &fake, SERVER, "");
    let mut h = harness(app);
    h.run();
    fake.push(online());
    h.run();
    assert!(matches!(h.state().link(), Link::Registered { .. }));
    (dir, path, fake, h)
}

fn click(h: &mut Harness<'static, PinholeApp>, label: &str) {
    h.get_by_label(label).click();
    h.run();
}

fn calls(fake: &FakeEngine) -> Vec<String> {
    fake.commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Call(peer) => Some(peer),
            _ => None,
        })
        .collect()
}

#[test]
fn taking_an_invite_pins_its_server_and_calls_once_registered_there() {
    let (_dir, path, fake, mut h) = registered();
    h.state_mut().open_invite(link("bob", OTHER, Some(FP)));
    h.run();
    assert_eq!(h.state().view(), View::Invite);
    h.get_by_label("bob invites you");
    h.get_by_label("Call bob through this server?");
    h.get_by_label(OTHER);
    h.get_by_label("instead of 127.0.0.1:3478");
    h.get_by_label(FP);
    h.get_by_label_contains("only with this certificate");
    assert!(h.query_by_label_contains("another certificate").is_none());

    click(&mut h, "Use this server and call");
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(saved.server, OTHER);
    assert_eq!(saved.server_fingerprint, FP);
    assert_eq!(saved.name, "alice", "the rest is kept");
    assert!(saved.key.is_some(), "the identity key is kept");
    assert_eq!(h.state().saved(), Some(&saved));

    // The engine is started again for the invite's server, pinned to the link's certificate;
    // the call waits for the registration.
    assert_eq!(fake.started_with(), [SERVER, OTHER]);
    assert_eq!(
        fake.configs()[1].trust.pinned.map(|fp| fp.to_string()),
        Some(FP.to_owned())
    );
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("Calling bob once connected to the server…");
    assert!(calls(&fake).is_empty());
    fake.push(online());
    h.run();
    assert_eq!(calls(&fake), ["bob"]);
    assert_eq!(h.state().view(), View::Calling);
    assert!(matches!(&h.state().state().call, Call::Placing { peer, .. } if peer == "bob"));
}

#[test]
fn cancel_leaves_everything_as_it_was() {
    let (_dir, path, fake, mut h) = registered();
    let before = std::fs::read_to_string(&path).unwrap();
    h.state_mut().open_invite(link("bob", OTHER, Some(FP)));
    h.run();
    click(&mut h, "Cancel");
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    assert_eq!(fake.started_with(), [SERVER]);
    assert!(calls(&fake).is_empty());
    // Esc cancels too.
    h.state_mut().open_invite(link("bob", OTHER, None));
    h.run();
    h.key_press(egui::Key::Escape);
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[test]
fn an_invite_to_the_server_in_use_calls_at_once() {
    let (_dir, path, fake, mut h) = registered();
    let before = std::fs::read_to_string(&path).unwrap();
    h.state_mut().open_invite(link("echo", SERVER, None));
    h.run();
    h.get_by_label("A link to the echo service");
    h.get_by_label("the server you use already");
    h.get_by_label_contains("not in the link: checked as for any server");
    click(&mut h, "Use this server and call");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "nothing to change"
    );
    assert_eq!(fake.started_with(), [SERVER], "the engine goes on");
    assert_eq!(calls(&fake), ["echo"]);
}

#[test]
fn on_first_run_the_invite_fills_the_setup_and_calls_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let fake = FakeEngine::new();
    let app = PinholeApp::new(path.clone(), DeviceList::default())
        .with_engine(fake.starter())
        .without_sounds();
    let mut h = harness(app);
    h.state_mut().open_invite(link("bob", OTHER, Some(FP)));
    h.run();
    h.get_by_label("instead of the server built into this app");
    click(&mut h, "Use this server and call");
    assert_eq!(h.state().view(), View::Setup);
    h.get_by_label("Once you have told Pinhole your name and saved, it calls bob.");
    assert!(
        !path.exists(),
        "nothing saved before the user says who they are"
    );

    h.get_by_label("Your name").focus();
    h.run();
    h.get_by_label("Your name").type_text("alice");
    h.run();
    click(&mut h, "Save and start");
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(
        (saved.server.as_str(), saved.server_fingerprint.as_str()),
        (OTHER, FP)
    );
    assert_eq!(fake.started_with(), [OTHER]);
    fake.push(online());
    h.run();
    assert_eq!(calls(&fake), ["bob"]);
}

#[test]
fn a_link_pinning_another_certificate_than_the_trusted_one_is_said_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    // The certificate recorded on an earlier connection to the link's server.
    std::fs::write(
        dir.path().join("known-servers.txt"),
        format!("{OTHER} {OLD_FP}\n"),
    )
    .unwrap();
    let (path, app) = app_at(dir.path(), &fake, SERVER, "");
    let mut h = harness(app);
    h.run();
    h.state_mut().open_invite(link("bob", OTHER, Some(FP)));
    h.run();
    h.get_by_label_contains(&format!(
        "This link gives another certificate for {OTHER} than the one you trusted until now"
    ));
    h.get_by_label("Trusted until now:");
    h.get_by_label(OLD_FP);
    h.get_by_label("In the link:");
    // Taken anyway, the link's certificate is pinned for that server.
    click(&mut h, "Use this server and call");
    assert_eq!(
        settings::load(&path).unwrap().unwrap().server_fingerprint,
        FP
    );

    // The settings' own pin counts as trusted too, for their server.
    let dir = tempfile::tempdir().unwrap();
    let (_path, app) = app_at(dir.path(), &FakeEngine::new(), SERVER, OLD_FP);
    let mut h = harness(app);
    h.run();
    h.state_mut().open_invite(link("bob", SERVER, Some(FP)));
    h.run();
    h.get_by_label_contains("another certificate for 127.0.0.1:3478");
}

#[test]
fn copy_invite_link_copies_the_users_own_link() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let (_path, app) = app_at(dir.path(), &fake, "rendezvous.example.org", FP);
    let mut h = harness(app);
    h.run();
    let own = format!("pinhole://call/alice?server=rendezvous.example.org&fp={FP}");
    assert_eq!(h.state().own_invite(), Some(own.as_str()));
    h.get_by_label(&own);
    assert!(h.query_by_label("Copied").is_none());
    h.get_by_label("Copy invite link").click();
    h.step();
    let copied: Vec<&egui::OutputCommand> = h.output().platform_output.commands.iter().collect();
    assert!(
        copied
            .iter()
            .any(|c| matches!(c, egui::OutputCommand::CopyText(t) if *t == own)),
        "{copied:?}"
    );
    h.run();
    h.get_by_label("Copied");

    // The link opens, in another app, on the confirmation with the same server and pin.
    let theirs = tempfile::tempdir().unwrap();
    let (_path, app) = app_at(theirs.path(), &FakeEngine::new(), "", "");
    let mut them = harness(app);
    them.state_mut().open_invite(own.parse().unwrap());
    them.run();
    them.get_by_label("alice invites you");
    them.get_by_label("rendezvous.example.org:3478");
    them.get_by_label(FP);
}

#[test]
fn the_own_link_carries_the_certificate_recorded_on_the_first_connection() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let (_path, app) = app_at(dir.path(), &fake, SERVER, "");
    let mut h = harness(app);
    h.run();
    let bare = "pinhole://call/alice?server=127.0.0.1";
    assert_eq!(h.state().own_invite(), Some(bare));
    // The engine records the certificate (trust on first use) before it registers.
    std::fs::write(
        dir.path().join("known-servers.txt"),
        format!("{SERVER} {FP}\n"),
    )
    .unwrap();
    fake.push(online());
    h.run();
    let pinned = format!("{bare}&fp={FP}");
    assert_eq!(h.state().own_invite(), Some(pinned.as_str()));

    // The built-in server on this machine only: nobody else can use a link to it.
    let dir = tempfile::tempdir().unwrap();
    let (_path, app) = app_at(dir.path(), &FakeEngine::new(), "", "");
    let mut h = harness(app);
    h.run();
    assert_eq!(h.state().own_invite(), None);
    assert!(h.query_by_label("Copy invite link").is_none());
}
