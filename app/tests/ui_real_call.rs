//! The desktop app on the REAL engine, on 127.0.0.1: it registers, calls `echo` with Enter,
//! reaches the in-call view with live statistics (packets received back, path, RTT), and Esc
//! hangs up back to the main view. Audio is a tone in and nothing out (no sound card needed).
//! Trust: a server whose certificate is not the remembered one is refused until the user trusts
//! it; a caller whose key changed is a warning until the user trusts the new key.
//!
//! The server is the real `pinhole-rendezvous` through `pinhole_tests::Rendezvous` (built by
//! `cargo build --workspace --bins`, which the test command runs first), or the one built into
//! the app.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use media::audio::{SinkSpec, SourceSpec};
use pinhole::settings::{self, Settings};
use pinhole::ui::{DeviceList, Link, PinholeApp, View};
use pinhole_tests::{Rendezvous, TempDir};

type App = Harness<'static, PinholeApp>;

/// The app, named alice, on the real engine with `server` (`None`: the one built into the
/// app), sending `input` and playing nothing; its settings file in a fresh directory.
fn app(server: Option<SocketAddr>, input: SourceSpec) -> (App, PathBuf, TempDir) {
    app_in(TempDir::new("ui-real"), server, input)
}

/// [`app`] with its settings in `dir` (which may already hold known servers and contacts).
fn app_in(dir: TempDir, server: Option<SocketAddr>, input: SourceSpec) -> (App, PathBuf, TempDir) {
    let path = dir.join("settings.toml");
    let s = Settings {
        name: "alice".into(),
        server: server.map(|s| s.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    settings::save(&path, &s).unwrap();
    let app = PinholeApp::new(path.clone(), DeviceList::default())
        .with_audio(input, SinkSpec::Null)
        .without_sounds();
    let h = Harness::builder()
        .with_size([480.0, 640.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app);
    (h, path, dir)
}

/// Runs frames until the app is registered.
fn registered(h: &mut App) {
    run_until(h, 15, "registered", |h| {
        matches!(h.state().link(), Link::Registered { .. })
    });
}

/// Types `name` into "Name to call" and presses Enter.
fn call_by_typing(h: &mut App, name: &str) {
    h.get_by_label("Name to call").focus();
    h.run();
    h.get_by_label("Name to call").type_text(name);
    h.run();
    h.key_press(egui::Key::Enter);
}

/// Runs frames until the call view shows packets received.
fn in_call_with_figures(h: &mut App) {
    run_until(h, 15, "in the call with figures", |h| {
        h.state().view() == View::InCall
            && h.state().call_stats().is_some_and(|s| s.rtp.received > 10)
    });
}

/// Runs frames until `done` holds, at most `secs` (then fails with `what`).
fn run_until(h: &mut App, secs: u64, what: &str, mut done: impl FnMut(&App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        h.run();
        if done(h) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s; app: {:?}",
            h.state()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn calling_echo_on_the_real_engine_reaches_the_call_view_with_statistics() {
    let server = Rendezvous::start("127.0.0.1:0");
    let (mut h, path, _dir) = app(Some(server.addr), SourceSpec::Tone { hz: 440.0 });
    registered(&mut h);
    h.get_by_label(&format!("Online: registered at {}", server.addr));
    // The key that proves the name was created and saved on first start.
    assert!(settings::load(&path).unwrap().unwrap().key.is_some());

    call_by_typing(&mut h, "echo");
    in_call_with_figures(&mut h);
    h.get_by_label("In a call with");
    h.get_by_label("echo");
    h.get_by_label("Relayed through the server");
    assert!(
        h.query_by_label_contains("packets)").is_some(),
        "loss shown"
    );

    // A few seconds of call: the UI keeps drawing; RTT arrives from RTCP.
    let frames_before = h.state().frame_stats();
    run_until(&mut h, 10, "round trip time", |h| {
        h.state().call_stats().is_some_and(|s| s.rtt_ms.is_some())
    });
    let stats = h.state().call_stats().unwrap().clone();
    assert!(stats.rtp.sent > 0 && stats.rtp.received > 0, "{stats:?}");
    assert!(
        h.query_all_by_label_contains(" ms").count() >= 2,
        "RTT and jitter shown"
    );
    let frames = h.state().frame_stats();
    eprintln!(
        "frame time during the call: {} frames, mean {:?}, max {:?} (all frames: mean {:?})",
        frames.frames - frames_before.frames,
        (frames.total - frames_before.total)
            / u32::try_from((frames.frames - frames_before.frames).max(1)).unwrap(),
        frames.max,
        frames.mean()
    );

    h.key_press(egui::Key::Escape);
    h.run();
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label_contains("Call with echo ended after");
    assert_eq!(h.state().book().recent[0].name, "echo");
}

/// The embedded default: no server set, the app runs one inside itself and `echo` answers.
#[test]
fn with_no_server_set_echo_works_on_the_built_in_server() {
    let (mut h, _, _dir) = app(None, SourceSpec::Tone { hz: 440.0 });
    registered(&mut h);
    let embedded = h.state().embedded_server().expect("built-in server runs");
    assert!(embedded.ip().is_loopback());
    h.get_by_label("Server: built into this app (this machine only)");
    h.get_by_label(&format!("Online: registered at {embedded}"));
    call_by_typing(&mut h, "echo");
    in_call_with_figures(&mut h);
    h.get_by_label("Relayed through the server");
    h.key_press(egui::Key::Escape);
    h.run();
    assert_eq!(h.state().view(), View::Main);
}

/// A server that accepts the connection and never answers: the window keeps drawing while the
/// engine waits, and then says the server cannot be reached (and will try again).
#[test]
fn the_ui_keeps_drawing_while_a_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            keep.lock().unwrap().push(stream);
        }
    });
    let (mut h, _, _dir) = app(Some(addr), SourceSpec::Silence);
    h.run();
    h.get_by_label_contains(&format!("Connecting to {addr}"));
    let mut frames_while_waiting = 0u32;
    run_until(&mut h, 20, "the connection given up", |h| {
        let failed = matches!(h.state().link(), Link::Failed { .. });
        if !failed {
            frames_while_waiting += 1;
        }
        failed
    });
    assert!(!held.lock().unwrap().is_empty(), "the engine did connect");
    assert!(
        frames_while_waiting >= 20,
        "only {frames_while_waiting} frames while the server did not answer"
    );
    let f = h.state().frame_stats();
    eprintln!(
        "frame time while the server timed out: {} frames, mean {:?}, max {:?}",
        f.frames,
        f.mean(),
        f.max
    );
    h.get_by_label_contains(&format!("The server {addr} cannot be reached"));
    h.get_by_label_contains("Trying again in");
}

/// A second engine (bob) on the app's built-in server; waits until it is registered.
fn bob(server: SocketAddr) -> pinhole::engine::Engine {
    let mut config = pinhole::engine::EngineConfig::new(
        server.to_string(),
        "bob".into(),
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    );
    config.input = SourceSpec::Tone { hz: 620.0 };
    config.output = SinkSpec::Null;
    let engine = pinhole::engine::Engine::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "bob not registered in 10 s");
        if let Some(pinhole::engine::Event::Registration(pinhole::engine::Registration::Online {
            ..
        })) = engine.next_event(Duration::from_millis(50))
        {
            return engine;
        }
    }
}

/// Waits (bounded) for bob's event that `pick` accepts.
fn bob_waits(
    engine: &pinhole::engine::Engine,
    what: &str,
    mut pick: impl FnMut(&pinhole::engine::Event) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "bob: no {what} in 10 s");
        if let Some(e) = engine.next_event(Duration::from_millis(50))
            && pick(&e)
        {
            return;
        }
    }
}

#[test]
fn a_real_incoming_call_rings_is_accepted_and_rejected() {
    let (mut h, _, _dir) = app(None, SourceSpec::Tone { hz: 440.0 });
    registered(&mut h);
    let bob = bob(h.state().embedded_server().unwrap());

    // bob calls; alice accepts; the call view shows figures; bob hangs up.
    assert!(bob.send(pinhole::engine::Command::Call("alice".into())));
    run_until(&mut h, 10, "ringing", |h| {
        h.state().view() == View::Incoming
    });
    h.get_by_label("bob");
    bob_waits(&bob, "ringing", |e| {
        matches!(e, pinhole::engine::Event::Ringing { .. })
    });
    h.get_by_label("Accept").click();
    in_call_with_figures(&mut h);
    bob.send(pinhole::engine::Command::HangUp);
    run_until(&mut h, 10, "back on the main view", |h| {
        h.state().view() == View::Main
    });
    h.get_by_label_contains("Call with bob ended after");

    // bob calls again; alice rejects; bob hears why.
    assert!(bob.send(pinhole::engine::Command::Call("alice".into())));
    run_until(&mut h, 10, "ringing again", |h| {
        h.state().view() == View::Incoming
    });
    h.get_by_label("Reject").click();
    h.run();
    assert_eq!(h.state().view(), View::Main);
    bob_waits(&bob, "the rejection", |e| {
        matches!(
            e,
            pinhole::engine::Event::Ended {
                reason: pinhole::engine::EndReason::Remote(traversal::control::EndReason::Rejected),
                ..
            }
        )
    });
    let last = h.state().book().recent.first().map(|r| r.outcome.clone());
    assert_eq!(last.as_deref(), Some("declined"));
}

/// A microphone that does not exist: the call to `echo` fails and says so in words.
#[test]
fn a_missing_microphone_is_said_in_words() {
    let microphone = SourceSpec::Device {
        name: Some("no such microphone".into()),
    };
    let (mut h, _, _dir) = app(None, microphone);
    registered(&mut h);
    call_by_typing(&mut h, "echo");
    run_until(&mut h, 15, "the call failed", |h| {
        h.state().view() == View::Main && h.state().notice().is_some()
    });
    let notice = h.state().notice().unwrap().text.clone();
    eprintln!("{notice}");
    assert_eq!(
        notice,
        "No microphone could be opened (no audio input device named \"no such microphone\"). \
         Pick another one in Settings."
    );
}

#[test]
fn a_changed_certificate_and_a_changed_key_wait_for_the_user() {
    let server = Rendezvous::start("127.0.0.1:0");
    let real = server.fingerprint().to_string();
    let dir = TempDir::new("ui-trust");
    // Remembered from an earlier run: another certificate for this server, another key for bob.
    let other = format!("sha256:{}", "00".repeat(32));
    std::fs::write(
        dir.join("known-servers.txt"),
        format!("{} {other}\n", server.addr),
    )
    .unwrap();
    let old_key = "cd".repeat(32);
    std::fs::write(dir.join("contact-keys.txt"), format!("bob {old_key}\n")).unwrap();
    let (mut h, _, dir) = app_in(dir, Some(server.addr), SourceSpec::Tone { hz: 440.0 });

    run_until(&mut h, 15, "the certificate refused", |h| {
        h.query_by_label("Trust the new certificate").is_some()
    });
    h.get_by_label_contains(&format!("The certificate of {} changed", server.addr));
    h.get_by_label_contains(&real);
    h.get_by_label("Trust the new certificate").click();
    registered(&mut h);
    let known = std::fs::read_to_string(dir.join("known-servers.txt")).unwrap();
    assert_eq!(known, format!("{} {real}\n", server.addr));

    // bob calls with his key, not the one remembered: a warning, and the code, until trusted.
    let bob = bob(server.addr);
    assert!(bob.send(pinhole::engine::Command::Call("alice".into())));
    run_until(&mut h, 10, "ringing", |h| {
        h.state().view() == View::Incoming
    });
    h.get_by_label("Accept").click();
    run_until(&mut h, 10, "in the call", |h| {
        h.state().view() == View::InCall
    });
    h.get_by_label_contains("bob's key changed since your last call");
    h.get_by_label("Compare with bob:");
    h.get_by_label("Trust the new key").click();
    h.run();
    h.get_by_label("You trust bob's new key from now on.");
    let bob_key = hex(&ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes());
    let book = pinhole::contacts::Contacts::open(dir.join("contact-keys.txt")).unwrap();
    assert_eq!(book.get("bob"), Some(bob_key.as_str()));
    bob.send(pinhole::engine::Command::HangUp);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
