//! The app without a mouse, and as a screen reader sees it (issue 16, item 3): every control of
//! every view has a name and a role in the AccessKit tree; accept, reject, mute, push-to-talk,
//! hang up, settings, save and cancel each work from their key; the first run can be done with
//! Tab and typing alone. Driven through `egui_kittest` against a fake engine.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use egui::{Key, Modifiers};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use media::audio::LevelMeter;
use pinhole::engine::{Command, Event, KeyCheck, Registration, Security};
use pinhole::settings::{self, Settings, Theme};
use pinhole::ui::{DeviceList, FakeEngine, PinholeApp, View};
use traversal::control::Verdict;

const SERVER: &str = "127.0.0.1:3478";

fn harness(
    dir: &Path,
    fake: &FakeEngine,
    settings: Option<Settings>,
) -> Harness<'static, PinholeApp> {
    let path = dir.join("settings.toml");
    if let Some(s) = settings {
        settings::save(&path, &s).unwrap();
    }
    let devices = DeviceList {
        inputs: vec!["Built-in microphone".into()],
        outputs: vec!["Built-in speaker".into()],
    };
    let app = PinholeApp::new(path, devices)
        .with_engine(fake.starter())
        .without_sounds();
    let mut h = Harness::builder()
        .with_size([480.0, 900.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app);
    h.run();
    h
}

fn alice() -> Settings {
    Settings {
        name: "alice".into(),
        server: SERVER.into(),
        ..Default::default()
    }
}

/// alice, registered, on the main view.
fn registered(dir: &Path, fake: &FakeEngine, settings: Settings) -> Harness<'static, PinholeApp> {
    let mut h = harness(dir, fake, Some(settings));
    fake.push(Event::Registration(Registration::Online {
        name: "alice".into(),
        mapped: "203.0.113.9:40000".parse().unwrap(),
        verdict: Some(Verdict::Nat),
        server: String::new(),
    }));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    h
}

fn connected(peer: &str) -> Event {
    Event::Connected {
        peer: peer.into(),
        input_meter: LevelMeter::new(),
        output_meter: LevelMeter::new(),
        security: Security {
            suite: "AEAD_AES_128_GCM",
            sas: Some("123 456".into()),
            peer_key: Some("aa".repeat(32)),
            key_check: Some(KeyCheck::Same),
        },
    }
}

/// Roles a person acts on: each needs a name a screen reader can say.
fn is_control(role: egui::accesskit::Role) -> bool {
    use egui::accesskit::Role::*;
    matches!(
        role,
        Button
            | DefaultButton
            | CheckBox
            | RadioButton
            | ComboBox
            | TextInput
            | MultilineTextInput
            | SearchInput
            | Slider
            | SpinButton
            | Link
            | ProgressIndicator
            | Switch
            | MenuItem
            | Tab
    )
}

/// Every control on screen without a name, as "role (value)"; and how many controls there are.
fn unnamed_controls(h: &Harness<'static, PinholeApp>) -> (Vec<String>, usize) {
    let mut unnamed = Vec::new();
    let mut controls = 0;
    for node in h.root().children_recursive() {
        let n = node.accesskit_node();
        if !is_control(n.role()) || n.is_hidden() {
            continue;
        }
        controls += 1;
        if n.label().is_none_or(|l| l.trim().is_empty()) {
            unnamed.push(format!("{:?} ({:?})", n.role(), n.value()));
        }
    }
    (unnamed, controls)
}

fn assert_all_named(h: &Harness<'static, PinholeApp>, view: &str, at_least: usize) {
    let (unnamed, controls) = unnamed_controls(h);
    assert!(
        unnamed.is_empty(),
        "{view}: controls without a name: {unnamed:?}"
    );
    assert!(
        controls >= at_least,
        "{view}: only {controls} controls in the tree (expected {at_least} or more)"
    );
}

#[test]
fn every_control_of_every_view_has_a_name_and_a_role() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();

    // First run: server, certificate, name, devices, test sound, test connection, save.
    let first = tempfile::tempdir().unwrap();
    let h = harness(first.path(), &FakeEngine::new(), None);
    assert_eq!(h.state().view(), View::Setup);
    assert_all_named(&h, "setup", 8);
    drop(h);

    let mut h = registered(dir.path(), &fake, alice());
    assert_all_named(&h, "main", 3);

    h.get_by_label("Settings").click();
    h.run();
    assert_eq!(h.state().view(), View::Settings);
    h.get_by_label("Advanced").click();
    h.run();
    assert_all_named(&h, "settings", 20);
    h.key_press(Key::Escape);
    h.run();
    assert_eq!(h.state().view(), View::Main);

    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    assert_eq!(h.state().view(), View::Incoming);
    assert_all_named(&h, "incoming", 2);

    fake.push(connected("bob"));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    assert_all_named(&h, "in call", 5);
}

#[test]
fn enter_accepts_a_ringing_call_after_a_moment_and_esc_rejects_one() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = registered(dir.path(), &fake, alice());

    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    // An Enter typed for something else, as the call comes in, does not answer it.
    h.key_press(Key::Enter);
    h.run();
    assert!(!fake.commands().contains(&Command::Accept));
    std::thread::sleep(Duration::from_millis(550));
    h.key_press(Key::Enter);
    h.run();
    assert!(
        fake.commands().contains(&Command::Accept),
        "{:?}",
        fake.commands()
    );

    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = registered(dir.path(), &fake, alice());
    fake.push(Event::Incoming {
        from: "carol".into(),
    });
    h.run();
    h.key_press(Key::Escape);
    h.run();
    assert!(
        fake.commands().contains(&Command::Reject),
        "{:?}",
        fake.commands()
    );
    assert_eq!(h.state().view(), View::Main);
}

#[test]
fn m_mutes_and_esc_hangs_up_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = registered(dir.path(), &fake, alice());
    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    h.get_by_label("Accept").click();
    h.run();
    fake.push(connected("bob"));
    h.run();

    h.key_press(Key::M);
    h.run();
    assert!(
        fake.commands().contains(&Command::Mute(true)),
        "{:?}",
        fake.commands()
    );
    fake.push(Event::Muted(true));
    h.run();
    h.get_by_label("Unmute microphone");
    h.key_press(Key::M);
    h.run();
    assert!(
        fake.commands().contains(&Command::Mute(false)),
        "{:?}",
        fake.commands()
    );

    h.key_press(Key::Escape);
    h.run();
    assert_eq!(fake.commands().last(), Some(&Command::HangUp));
}

#[test]
fn push_to_talk_opens_the_microphone_only_while_space_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut s = alice();
    s.interface.push_to_talk = true;
    let mut h = registered(dir.path(), &fake, s);
    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    h.get_by_label("Accept").click();
    h.run();
    fake.push(connected("bob"));
    h.run();
    let mutes = |fake: &FakeEngine| {
        fake.commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::Mute(m) => Some(m),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The call starts with the microphone off.
    assert_eq!(mutes(&fake), vec![true]);
    h.get_by_label("Push to talk: hold Space to speak.");

    h.key_down(Key::Space);
    h.run();
    assert_eq!(mutes(&fake), vec![true, false]);
    // Held over several frames: asked once.
    h.run_steps(3);
    assert_eq!(mutes(&fake), vec![true, false]);
    h.key_up(Key::Space);
    h.run();
    assert_eq!(mutes(&fake), vec![true, false, true]);
    // M does nothing in push-to-talk: the key is the microphone's only switch.
    h.key_press(Key::M);
    h.run();
    assert_eq!(mutes(&fake), vec![true, false, true]);
}

#[test]
fn ctrl_comma_opens_settings_where_ctrl_s_saves_and_esc_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = registered(dir.path(), &fake, alice());

    h.key_press_modifiers(Modifiers::COMMAND, Key::Comma);
    h.run();
    assert_eq!(h.state().view(), View::Settings);
    // A change, then Esc: forgotten.
    h.get_by_label("Light").click();
    h.run();
    h.key_press(Key::Escape);
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(h.state().saved().unwrap().interface.theme, Theme::System);

    h.key_press_modifiers(Modifiers::COMMAND, Key::Comma);
    h.run();
    h.get_by_label("Dark").click();
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(h.state().saved().unwrap().interface.theme, Theme::Dark);
    let on_disk = settings::load(&dir.path().join("settings.toml"))
        .unwrap()
        .unwrap();
    assert_eq!(on_disk.interface.theme, Theme::Dark);
}

#[test]
fn the_chosen_theme_is_the_one_on_screen() {
    for (choice, dark) in [(Theme::Light, false), (Theme::Dark, true)] {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEngine::new();
        let mut s = alice();
        s.interface.theme = choice;
        let h = registered(dir.path(), &fake, s);
        assert_eq!(h.ctx.global_style().visuals.dark_mode, dark, "{choice:?}");
    }
}

#[test]
fn the_first_run_is_done_with_tab_and_typing_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = harness(dir.path(), &fake, None);
    assert_eq!(h.state().view(), View::Setup);

    // Tab until the name field has the keyboard (server and certificate come first).
    let mut tabs = 0;
    while !h.get_by_label("Your name").is_focused() {
        h.key_press(Key::Tab);
        h.run();
        tabs += 1;
        assert!(tabs <= 10, "Tab never reached the name field");
    }
    h.get_by_label("Your name").type_text("dora");
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert_eq!(h.state().view(), View::Main, "Ctrl+S saves the first run");
    assert_eq!(h.state().saved().unwrap().name, "dora");
    assert!(
        !fake.started_with().is_empty(),
        "saving the first run starts the engine"
    );
}

#[test]
fn save_and_cancel_stay_in_a_small_window_while_the_long_form_scrolls() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = registered(dir.path(), &fake, alice());
    // The app's smallest window.
    h.set_size(egui::vec2(320.0, 400.0));
    h.run();
    h.get_by_label("Settings").click();
    h.run();
    h.get_by_label("Advanced").click();
    h.run();
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(320.0, 400.0));
    for button in ["Save", "Cancel"] {
        let rect = h.get_by_label(button).rect();
        assert!(
            window.contains_rect(rect),
            "{button} at {rect:?} is outside {window:?}"
        );
    }
    h.get_by_label("Cancel").click();
    h.run();
    assert_eq!(h.state().view(), View::Main);
}
