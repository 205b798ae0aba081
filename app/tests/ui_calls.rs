//! Call flows of the desktop app against a fake engine (events injected, commands recorded),
//! driven through the accessibility tree with `egui_kittest`: incoming calls accepted and
//! rejected, the in-call view with its statistics, hang up (button and Esc) back to the main
//! view, failed calls said in words, an unreachable server, a lost server that comes back,
//! another device taking the name, mute across calls, contacts and recents persisted.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use media::audio::LevelMeter;
use pinhole::engine::{
    AudioSide, CallReport, Command, DeviceMove, EchoLatency, EndReason, Event, KeyCheck, PathKind,
    ProcessingReport, Registration, RtpReport, Security, ServerLoss, StopReason, Warning,
};
use pinhole::settings::{self, Settings};
use pinhole::ui::{DeviceList, FakeEngine, Link, PinholeApp, View};
use traversal::control::{EndReason as Remote, Verdict};

const SERVER: &str = "127.0.0.1:3478";

/// The app as alice at `server` (empty: the built-in one), on the fake engine. The settings
/// are written on first use of `dir`.
fn app_at(dir: &Path, fake: &FakeEngine, server: &str) -> PinholeApp {
    let path = dir.join("settings.toml");
    if !path.exists() {
        let s = Settings {
            name: "alice".into(),
            server: server.into(),
            ..Default::default()
        };
        settings::save(&path, &s).unwrap();
    }
    PinholeApp::new(path, DeviceList::default())
        .with_engine(fake.starter())
        .without_sounds()
}

fn app(dir: &Path, fake: &FakeEngine) -> PinholeApp {
    app_at(dir, fake, SERVER)
}

fn harness(app: PinholeApp) -> Harness<'static, PinholeApp> {
    Harness::builder()
        .with_size([480.0, 640.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app)
}

/// An app registered with the fake engine, on the main view.
fn registered(dir: &Path, fake: &FakeEngine) -> Harness<'static, PinholeApp> {
    let mut h = harness(app(dir, fake));
    h.run();
    assert_eq!(fake.started_with(), vec![SERVER.to_owned()]);
    fake.push(online());
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert!(matches!(h.state().link(), Link::Registered { .. }));
    h
}

fn online() -> Event {
    Event::Registration(Registration::Online {
        name: "alice".into(),
        mapped: "203.0.113.9:40000".parse().unwrap(),
        verdict: Some(Verdict::Nat),
        server: String::new(),
    })
}

/// The end of a call; one that connected comes with its figures, as from the engine.
fn ended(peer: &str, reason: EndReason, connected: bool) -> Event {
    let report = connected.then(|| CallReport {
        end: Some(reason),
        ..report(peer)
    });
    Event::Ended {
        reason,
        peer: peer.into(),
        connected,
        report,
    }
}

/// A fresh app registered with a fake engine, on the main view (with the directory that
/// holds its settings).
fn registered_app() -> (tempfile::TempDir, FakeEngine, Harness<'static, PinholeApp>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let h = registered(dir.path(), &fake);
    (dir, fake, h)
}

/// A fresh app whose fake engine has started and said nothing yet.
fn started_app() -> (tempfile::TempDir, FakeEngine, Harness<'static, PinholeApp>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let mut h = harness(app(dir.path(), &fake));
    h.run();
    (dir, fake, h)
}

fn connected(peer: &str) -> Event {
    let input = LevelMeter::new();
    input.update(&[0.5; 960]);
    connected_with(peer, KeyCheck::Same)
}

const KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NEW_KEY: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A call with `peer` is up; its key (`NEW_KEY` when `check` says it changed) checked so.
fn connected_with(peer: &str, check: KeyCheck) -> Event {
    let input = LevelMeter::new();
    input.update(&[0.5; 960]);
    let key = if check.is_changed() { NEW_KEY } else { KEY };
    Event::Connected {
        peer: peer.into(),
        input_meter: input,
        output_meter: LevelMeter::new(),
        security: Security {
            suite: "AEAD_AES_128_GCM",
            sas: Some("123 456".into()),
            peer_key: Some(key.into()),
            key_check: Some(check),
        },
    }
}

fn stats(peer: &str) -> Event {
    Event::Stats(report(peer))
}

/// Three seconds of a direct call.
fn report(peer: &str) -> CallReport {
    CallReport {
        peer: peer.into(),
        path: PathKind::Direct,
        quality: pinhole::engine::quality::CallQuality::Good,
        direct_to: None,
        path_changes: 1,
        direct_after_ms: Some(160),
        checks: None,
        setup_ms: Some(40),
        duration_s: 3.0,
        rtp: RtpReport {
            sent: 150,
            received: 148,
            lost: 2,
            jitter_ms: 1.5,
            replayed: 0,
            forged: 0,
            from_strangers: 0,
            dtx_frames: 0,
            comfort_noise_frames: 0,
            fec_recovered: 0,
            concealed_frames: 0,
        },
        e2e: "AEAD_AES_128_GCM",
        sas: Some("123 456".into()),
        peer_key_changed: false,
        rtt_ms: Some(23.4),
        jitter_buffer_ms: 40.0,
        processing: ProcessingReport::default(),
        erle_db: None,
        echo_delay_ms: None,
        echo_latency_ms: None,
        echo_latency: None,
        devices_moved: Vec::new(),
        end: None,
    }
}

#[test]
fn main_view_shows_who_and_where_and_the_nat_verdict() {
    let (_dir, _fake, h) = registered_app();
    h.get_by_label("You are alice");
    h.get_by_label(&format!("Online: registered at {SERVER}"));
    h.get_by_label("Network: Behind NAT: calls go through the router's mapping (nat)");
    h.get_by_label("Your address as the server sees it: 203.0.113.9:40000");
}

#[test]
fn main_view_shows_the_routers_port_mapping() {
    use traversal::portmap::{Method, Status};
    let (_dir, fake, mut h) = registered_app();
    // Not asked for (a server on this machine): no line.
    fake.push(Event::PortMapping(Status::Off));
    h.run();
    assert!(h.query_by_label_contains("Router port mapping").is_none());
    fake.push(Event::PortMapping(Status::Asking));
    h.run();
    h.get_by_label("Router port mapping: asking the router…");
    fake.push(Event::PortMapping(Status::Mapped {
        method: Method::Pcp,
        external: "203.0.113.9:41000".parse().unwrap(),
        gateway: "10.0.0.1".parse().unwrap(),
    }));
    h.run();
    h.get_by_label("Router port mapping: 203.0.113.9:41000 (PCP): calls can come straight in");
    fake.push(Event::PortMapping(Status::Unavailable(
        "the router does not listen for PCP or NAT-PMP".into(),
    )));
    h.run();
    h.get_by_label("Router port mapping: none (the router does not listen for PCP or NAT-PMP)");
}

#[test]
fn an_incoming_call_accepted_shows_the_call_and_hang_up_returns_to_main() {
    let (_dir, fake, mut h) = registered_app();

    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    assert_eq!(h.state().view(), View::Incoming);
    h.get_by_label("Incoming call");
    h.get_by_label("bob");
    click(&mut h, "Accept");
    assert_eq!(fake.commands(), vec![Command::Accept]);

    fake.push(connected("bob"));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    h.get_by_label("In a call with");
    h.get_by_label("Relayed through the server");
    h.get_by_label("measuring…");
    h.get_by_label("Measuring…");
    // The encryption, and the code to compare in large digits; a known key: no warning.
    h.get_by_label("Encrypted end to end (AEAD_AES_128_GCM)");
    h.get_by_label("Compare with bob:");
    h.get_by_label("123 456");
    assert!(h.query_by_label("Trust the new key").is_none());
    assert!(h.query_by_label_contains("key changed").is_none());

    fake.push(stats("bob"));
    h.run();
    h.get_by_label("Quality");
    h.get_by_label("Good");
    h.get_by_label("Direct");
    h.get_by_label("23 ms");
    h.get_by_label("1.5 ms");
    h.get_by_label("40 ms");
    h.get_by_label("1.3 % (2 of 150 packets)");
    assert_eq!(h.state().call_stats().unwrap().rtp.received, 148);

    // A device that fails in the call is said while the call goes on.
    fake.push(Event::Warning(Warning::Audio {
        side: AudioSide::Speaker,
        detail: "device unplugged".into(),
    }));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    h.get_by_label("The speaker failed (device unplugged): you cannot hear them.");

    // Mute reaches the engine; the button says what the engine answers.
    click(&mut h, "Mute microphone");
    assert!(fake.commands().contains(&Command::Mute(true)));
    h.get_by_label("Mute microphone");
    fake.push(Event::Muted(true));
    h.run();
    h.get_by_label("Unmute microphone");

    click(&mut h, "Hang up (Esc)");
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(fake.commands().last(), Some(&Command::HangUp));
    h.get_by_label_contains("Call with bob ended after 0:0");
    let recent = &h.state().book().recent[0];
    assert_eq!((recent.name.as_str(), recent.outgoing), ("bob", false));

    // The engine's own Ended for the call that was hung up changes nothing.
    fake.push(ended("bob", EndReason::HungUp, true));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(h.state().book().recent.len(), 1);
}

#[test]
fn an_incoming_call_rejected_goes_back_to_main_and_is_remembered() {
    let (_dir, fake, mut h) = registered_app();
    fake.push(Event::Incoming { from: "bob".into() });
    h.run();
    click(&mut h, "Reject");
    assert_eq!(fake.commands(), vec![Command::Reject]);
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("You declined the call from bob.");
    h.get_by_label("bob");
    h.get_by_label_contains("incoming · declined");

    // A caller who gives up before an answer: a missed call.
    fake.push(Event::Incoming {
        from: "carol".into(),
    });
    h.run();
    assert_eq!(h.state().view(), View::Incoming);
    fake.push(ended("carol", EndReason::Remote(Remote::Cancelled), false));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(h.state().book().recent[0].outcome, "missed");
    h.get_by_label("You missed a call from carol.");
}

#[test]
fn esc_hangs_up_a_call_we_placed_with_enter() {
    let (_dir, fake, mut h) = registered_app();
    type_name(&mut h, "echo");
    h.key_press(egui::Key::Enter);
    h.run();
    assert_eq!(fake.commands(), vec![Command::Call("echo".into())]);
    assert_eq!(h.state().view(), View::Calling);
    h.get_by_label("Reaching them…");
    fake.push(Event::Ringing {
        peer: "echo".into(),
    });
    h.run();
    h.get_by_label_contains("Ringing…");
    fake.push(connected("echo"));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    h.key_press(egui::Key::Escape);
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(fake.commands().last(), Some(&Command::HangUp));
    assert!(h.state().book().recent[0].outgoing);
}

#[test]
fn a_call_to_echo_shows_how_long_the_voice_took_to_come_back() {
    let (_dir, fake, mut h) = registered_app();
    call(&mut h, "echo");
    fake.push(connected("echo"));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    h.get_by_label_contains("the time your voice takes to come back is measured");
    let latency = EchoLatency {
        mouth_to_ear_ms: 63.2,
        path_ms: 41.2,
        capture_ms: 12.0,
        playback_ms: 10.0,
        correlation: 0.95,
    };
    fake.push(Event::Stats(CallReport {
        echo_latency_ms: Some(latency.mouth_to_ear_ms),
        echo_latency: Some(latency),
        sas: None,
        ..report("echo")
    }));
    h.run();
    h.get_by_label("Your voice came back after 63 ms");
    assert!(
        h.query_by_label_contains("is measured as you speak")
            .is_none()
    );
}

#[test]
fn a_device_that_vanishes_mid_call_is_replaced_and_said() {
    let (_dir, fake, mut h) = registered_app();
    call(&mut h, "bob");
    fake.push(connected("bob"));
    h.run();
    fake.push(Event::Warning(Warning::Audio {
        side: AudioSide::Speaker,
        detail: "USB headset: the device was removed".into(),
    }));
    h.run();
    h.get_by_label_contains("The speaker failed");
    let meter = LevelMeter::new();
    fake.push(Event::DeviceMoved {
        side: AudioSide::Speaker,
        moved: DeviceMove {
            side: "speaker",
            from: "USB headset".into(),
            to: "Null Output".into(),
            reason: "the device was removed".into(),
        },
        meter,
    });
    h.run();
    h.get_by_label("Your speaker USB headset was unplugged; now using Null Output.");
    // The failure is over: the call plays again.
    assert!(h.query_by_label_contains("The speaker failed").is_none());
    assert_eq!(h.state().view(), View::InCall);
}

/// Replaces what the call field holds with `name`.
fn type_name(h: &mut Harness<'static, PinholeApp>, name: &str) {
    h.get_by_label("Name to call").focus();
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.key_press(egui::Key::Backspace);
    h.get_by_label("Name to call").type_text(name);
    h.run();
}

/// Clicks what is labelled `label` and runs the frames that follow.
fn click(h: &mut Harness<'static, PinholeApp>, label: &str) {
    h.get_by_label(label).click();
    h.run();
}

/// Types `peer` into the call field and presses Call.
fn call(h: &mut Harness<'static, PinholeApp>, peer: &str) {
    type_name(h, peer);
    click(h, "Call");
}

/// Places a call to `peer` and ends it with `reason` (after `warning`); returns the notice
/// shown.
fn failed_call(
    h: &mut Harness<'static, PinholeApp>,
    fake: &FakeEngine,
    peer: &str,
    reason: EndReason,
    warning: Option<Warning>,
) -> String {
    call(h, peer);
    assert_eq!(h.state().view(), View::Calling, "calling {peer}");
    if let Some(warning) = warning {
        fake.push(Event::Warning(warning));
    }
    fake.push(ended(peer, reason, false));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    let notice = h.state().notice().unwrap().clone();
    assert!(notice.failure);
    h.get_by_label(&notice.text);
    notice.text
}

#[test]
fn a_failed_call_says_why_in_words() {
    let (_dir, fake, mut h) = registered_app();
    assert_eq!(
        failed_call(
            &mut h,
            &fake,
            "bob",
            EndReason::Remote(Remote::Offline),
            None
        ),
        "bob is not online right now."
    );
    assert_eq!(
        failed_call(
            &mut h,
            &fake,
            "carol",
            EndReason::Remote(Remote::Rejected),
            None
        ),
        "carol declined the call."
    );
    assert_eq!(
        failed_call(
            &mut h,
            &fake,
            "dave",
            EndReason::Remote(Remote::NoAnswer),
            None
        ),
        "dave did not answer."
    );
    assert_eq!(
        failed_call(&mut h, &fake, "erin", EndReason::Remote(Remote::Busy), None),
        "erin is busy in another call."
    );
    let no_mic = failed_call(
        &mut h,
        &fake,
        "frank",
        EndReason::Local,
        Some(Warning::Audio {
            side: AudioSide::Microphone,
            detail: "input device \"USB\": cannot open for capture".into(),
        }),
    );
    assert_eq!(
        no_mic,
        "No microphone could be opened (input device \"USB\": cannot open for capture). Pick \
         another one in Settings."
    );
    let outcomes: Vec<&str> = h
        .state()
        .book()
        .recent
        .iter()
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        ["failed", "busy", "no answer", "declined", "offline"]
    );
}

#[test]
fn an_unreachable_server_is_said_and_calls_explain_it() {
    let (_dir, fake, mut h) = started_app();
    h.get_by_label_contains("Connecting to 127.0.0.1:3478");
    fake.push(Event::Stopped {
        reason: Some(StopReason::Unreachable {
            detail: "cannot reach the server at 127.0.0.1:3478: Connection refused".into(),
        }),
    });
    h.run();
    assert!(matches!(h.state().link(), Link::Failed { .. }));
    h.get_by_label_contains("cannot be reached: Cannot reach the server");
    h.get_by_label("Try again now");
    call(&mut h, "bob");
    assert_eq!(h.state().view(), View::Main);
    assert!(
        fake.commands().is_empty(),
        "no call sent to a stopped engine"
    );
    assert!(
        h.state()
            .notice()
            .unwrap()
            .text
            .starts_with("Cannot call bob: The server 127.0.0.1:3478 cannot be reached")
    );

    // Try again now starts a new engine at once.
    click(&mut h, "Try again now");
    assert_eq!(fake.started_with().len(), 2);
}

#[test]
fn contacts_are_kept_and_a_click_calls_them() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    {
        let mut h = registered(dir.path(), &fake);
        type_name(&mut h, "bob");
        click(&mut h, "Add contact");
        h.get_by_label("Call bob");
    }
    // A new app on the same settings directory still knows bob.
    let fake = FakeEngine::new();
    let mut h = registered(dir.path(), &fake);
    assert_eq!(h.state().book().contacts, vec!["bob".to_owned()]);
    click(&mut h, "Call bob");
    assert_eq!(fake.commands(), vec![Command::Call("bob".into())]);
    assert_eq!(h.state().view(), View::Calling);
    click(&mut h, "Cancel");
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("You cancelled the call to bob.");
    assert!(dir.path().join("contacts.toml").exists());
}

#[test]
fn with_no_server_the_app_runs_its_own_and_the_engine_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    // Tall enough for the whole settings form without scrolling.
    let mut h = Harness::builder()
        .with_size([480.0, 1000.0])
        .build_ui_state(
            |ui, app: &mut PinholeApp| app.show(ui),
            app_at(dir.path(), &fake, ""),
        );
    h.run();
    let addr = h.state().embedded_server().expect("embedded server runs");
    assert!(addr.ip().is_loopback(), "this machine only: {addr}");
    assert_eq!(fake.started_with(), vec![addr.to_string()]);
    h.get_by_label("Server: built into this app (this machine only)");
    // It answers the traversal exchange: the connection test against it gives a verdict.
    click(&mut h, "Settings");
    h.get_by_label("Test connection").click();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h
        .query_by_label_contains("Your address as the server sees it")
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no verdict in 10 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.run();
    }

    // "Reachable from the local network": the server moves to every interface and the
    // engine starts again.
    click(&mut h, "Advanced");
    click(&mut h, "reachable from the local network");
    click(&mut h, "Save");
    let lan = h.state().embedded_server().unwrap();
    assert!(lan.ip().is_unspecified(), "{lan}");
    let started = fake.started_with();
    assert_eq!(started.len(), 2);
    assert_eq!(started[1], format!("127.0.0.1:{}", lan.port()));
    h.get_by_label("Server: built into this app (this machine and the local network)");
    // And says where other machines find it.
    if let Some(ip) = pinhole::ui::net::lan_addresses().first() {
        h.get_by_label_contains(&format!(
            "Others on your network set their server to {ip}:{}",
            lan.port()
        ));
    }
}

#[test]
fn a_taken_name_is_said_and_not_retried() {
    let (_dir, fake, mut h) = started_app();
    fake.push(Event::Stopped {
        reason: Some(StopReason::NameTaken),
    });
    h.run();
    h.get_by_label(
        "Your name is taken on 127.0.0.1:3478: someone else registered it first. Choose another \
         name in Settings.",
    );
    assert!(h.query_by_label_contains("Trying again in").is_none());
    assert_eq!(fake.started_with().len(), 1);
}

#[test]
fn an_incoming_call_asks_for_attention_when_the_window_is_not_focused() {
    let (_dir, fake, mut h) = registered_app();
    h.input_mut()
        .viewports
        .entry(egui::ViewportId::ROOT)
        .or_default()
        .focused = Some(false);
    fake.push(Event::Incoming { from: "bob".into() });
    h.step();
    let attention = egui::ViewportCommand::RequestUserAttention(egui::UserAttentionType::Critical);
    let asked = |h: &Harness<'static, PinholeApp>| {
        h.output()
            .viewport_output
            .get(&egui::ViewportId::ROOT)
            .is_some_and(|v| v.commands.contains(&attention))
    };
    assert!(asked(&h), "attention requested");
    assert_eq!(h.state().view(), View::Incoming);
    // Once, not every frame.
    h.step();
    assert!(!asked(&h));
}

#[test]
fn a_lost_server_is_said_until_it_comes_back_and_then_the_words_go() {
    let (_dir, fake, mut h) = registered_app();
    h.get_by_label(&format!("Online: registered at {SERVER}"));
    fake.push(Event::Registration(Registration::Offline {
        reason: ServerLoss::Closed,
        retry_at: Instant::now() + Duration::from_secs(3),
    }));
    h.run();
    assert!(matches!(h.state().link(), Link::Offline { .. }));
    h.get_by_label_contains("Lost the server (it closed the connection); trying again in ");
    assert!(h.query_by_label_contains("Online").is_none());
    // The engine reconnects by itself: the app starts no other.
    fake.push(Event::Registration(Registration::Connecting));
    h.run();
    h.get_by_label_contains("Connecting to 127.0.0.1:3478");
    fake.push(online());
    h.run();
    h.get_by_label(&format!("Online: registered at {SERVER}"));
    assert!(h.query_by_label_contains("Lost the server").is_none());
    assert!(h.state().notice().is_none(), "{:?}", h.state().notice());
    assert_eq!(fake.started_with().len(), 1);
}

#[test]
fn another_device_with_our_name_is_said_and_sign_in_again_asks_the_engine() {
    let (_dir, fake, mut h) = registered_app();
    fake.push(Event::Registration(Registration::Replaced));
    h.run();
    assert!(matches!(h.state().link(), Link::Replaced { .. }));
    h.get_by_label("alice signed in on another device.");
    assert!(h.query_by_label_contains("Online").is_none());
    // No automatic retry: no new engine, no countdown, nothing sent.
    h.run();
    assert!(h.query_by_label_contains("Trying again").is_none());
    assert_eq!(fake.started_with().len(), 1);
    assert!(fake.commands().is_empty());
    // A call is not placed, and says why.
    call(&mut h, "bob");
    assert_eq!(h.state().view(), View::Main);
    assert!(fake.commands().is_empty());
    h.get_by_label_contains("Cannot call bob: alice signed in on another device.");

    click(&mut h, "Sign in here again");
    assert_eq!(fake.commands(), vec![Command::Reconnect]);
    assert_eq!(fake.started_with().len(), 1, "the same engine reconnects");
    fake.push(Event::Registration(Registration::Connecting));
    fake.push(online());
    h.run();
    h.get_by_label(&format!("Online: registered at {SERVER}"));
    assert!(
        h.query_by_label_contains("signed in on another device")
            .is_none()
    );
}

#[test]
fn a_call_that_ended_muted_is_followed_by_an_unmuted_one() {
    let (_dir, fake, mut h) = registered_app();
    call(&mut h, "bob");
    fake.push(connected("bob"));
    fake.push(Event::Muted(false));
    h.run();
    click(&mut h, "Mute microphone");
    fake.push(Event::Muted(true));
    h.run();
    h.get_by_label("Unmute microphone");
    // bob hangs up while we are muted.
    fake.push(ended("bob", EndReason::Remote(Remote::HungUp), true));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label_contains("Call with bob ended after 0:0");

    call(&mut h, "carol");
    fake.push(connected("carol"));
    h.run();
    assert_eq!(h.state().view(), View::InCall);
    h.get_by_label("Mute microphone");
    assert!(h.query_by_label("Unmute microphone").is_none());
    assert_eq!(
        fake.commands(),
        vec![
            Command::Call("bob".into()),
            Command::Mute(true),
            Command::Call("carol".into())
        ],
        "nothing about mute sent for the second call"
    );
}

#[test]
fn calling_yourself_says_so_and_not_busy() {
    let (_dir, fake, mut h) = registered_app();
    call(&mut h, "alice");
    assert_eq!(fake.commands(), vec![Command::Call("alice".into())]);
    fake.push(ended("alice", EndReason::SelfCall, false));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("That is you: call someone else, or echo to hear yourself.");
    assert!(h.query_by_label_contains("busy").is_none());
    assert_eq!(h.state().book().recent[0].outcome, "that is you");
}

#[test]
fn a_changed_key_is_a_loud_warning_until_the_user_trusts_the_new_one() {
    let (dir, fake, mut h) = registered_app();
    call(&mut h, "bob");
    fake.push(connected_with(
        "bob",
        KeyCheck::Changed {
            previous: KEY.into(),
        },
    ));
    h.run();
    h.get_by_label_contains(
        "bob's key changed since your last call. Compare the code below with bob before saying \
         anything private",
    );
    h.get_by_label("123 456");
    click(&mut h, "Trust the new key");
    // Remembered where the engine checks keys, and the warning is gone.
    let book = pinhole::contacts::Contacts::open(dir.path().join("contact-keys.txt")).unwrap();
    assert_eq!(book.get("bob"), Some(NEW_KEY));
    assert!(h.query_by_label_contains("key changed").is_none());
    assert!(h.query_by_label("Trust the new key").is_none());
    h.get_by_label("You trust bob's new key from now on.");
    assert_eq!(h.state().view(), View::InCall, "the call goes on");
}

#[test]
fn a_changed_server_certificate_shows_both_fingerprints_and_trusting_it_reconnects() {
    let old = format!("sha256:{}", "01".repeat(32));
    let new = format!("sha256:{}", "02".repeat(32));
    let (dir, fake, mut h) = started_app();
    let config = &fake.configs()[0];
    assert_eq!(
        config.trust.known_servers.as_deref(),
        Some(dir.path().join("known-servers.txt").as_path())
    );
    assert_eq!(config.trust.pinned, None);
    assert_eq!(
        config.contacts.as_deref(),
        Some(dir.path().join("contact-keys.txt").as_path())
    );
    fake.push(Event::Stopped {
        reason: Some(StopReason::UntrustedServer {
            server: SERVER.into(),
            pinned: old.clone(),
            presented: new.clone(),
        }),
    });
    h.run();
    h.get_by_label_contains("The certificate of 127.0.0.1:3478 changed since you last connected");
    h.get_by_label_contains(&old);
    h.get_by_label_contains(&new);
    assert!(
        h.query_by_label_contains("Trying again in").is_none(),
        "not by itself"
    );
    assert_eq!(fake.started_with().len(), 1);

    click(&mut h, "Trust the new certificate");
    let known = std::fs::read_to_string(dir.path().join("known-servers.txt")).unwrap();
    assert_eq!(known.trim(), format!("{SERVER} {new}"));
    assert_eq!(fake.started_with().len(), 2, "connects again at once");
    assert!(h.query_by_label("Trust the new certificate").is_none());
}

#[test]
fn the_built_in_server_keeps_its_certificate_and_the_app_pins_it() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = |fake: &FakeEngine| fake.configs()[0].trust.pinned.expect("pinned");
    let fake = FakeEngine::new();
    let first = {
        let mut h = harness(app_at(dir.path(), &fake, ""));
        h.run();
        pinned(&fake)
    };
    assert!(dir.path().join("built-in-server/cert.pem").exists());
    // A restarted app presents the same certificate: nothing looks changed.
    let fake = FakeEngine::new();
    let mut h = harness(app_at(dir.path(), &fake, ""));
    h.run();
    assert_eq!(pinned(&fake), first);
}

#[test]
fn codes_compared_mark_a_contact_verified_until_the_key_changes() {
    let (dir, fake, mut h) = registered_app();
    // The engine recorded bob's key on the first call (trust on first use).
    std::fs::write(dir.path().join("contact-keys.txt"), format!("bob {KEY}\n")).unwrap();
    type_name(&mut h, "bob");
    click(&mut h, "Add contact");
    click(&mut h, "Call");
    fake.push(connected("bob"));
    h.run();
    assert!(h.query_by_label_contains("Verified").is_none());
    click(&mut h, "The codes match: mark bob as verified");
    h.get_by_label("Verified: you compared the code with bob for this key.");
    assert!(h.query_by_label_contains("The codes match").is_none());
    let book = pinhole::ui::contacts::load(&dir.path().join("contacts.toml")).unwrap();
    assert_eq!(book.verified.len(), 1);
    assert_eq!(book.verified[0].key, KEY);

    h.key_press(egui::Key::Escape);
    h.run();
    fake.push(ended("bob", EndReason::HungUp, true));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    assert!(h.state().is_verified("bob"));
    h.get_by_label("✔ verified");

    // bob's key changes and the user trusts the new one: no longer verified.
    click(&mut h, "Call bob");
    fake.push(connected_with(
        "bob",
        KeyCheck::Changed {
            previous: KEY.into(),
        },
    ));
    h.run();
    assert!(h.query_by_label_contains("Verified:").is_none());
    assert!(
        h.query_by_label_contains("The codes match").is_none(),
        "a changed key is trusted first"
    );
    click(&mut h, "Trust the new key");
    assert!(!h.state().is_verified("bob"));
    // Compared again: verified with the new key.
    click(&mut h, "The codes match: mark bob as verified");
    assert!(h.state().is_verified("bob"));
}
