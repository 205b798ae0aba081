//! The settings flows of the desktop app, driven through its accessibility tree with
//! `egui_kittest` (no window, no GPU).

#![allow(clippy::unwrap_used)]

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use pinhole::settings;
use pinhole::ui::{DeviceList, FakeEngine, PinholeApp, View};

fn devices() -> DeviceList {
    DeviceList {
        inputs: vec!["pulse".into(), "USB headset".into()],
        outputs: vec!["pulse".into()],
    }
}

/// The app on a fake engine and without device monitors: these tests are about the forms.
fn harness(app: PinholeApp) -> Harness<'static, PinholeApp> {
    let app = app
        .with_engine(FakeEngine::new().starter())
        .without_sounds();
    Harness::builder()
        .with_size([480.0, 1100.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app)
}

/// The app on its first run (no settings file yet), and where it will save them.
fn first_run() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Harness<'static, PinholeApp>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let mut h = harness(PinholeApp::new(path.clone(), devices()));
    h.run();
    (dir, path, h)
}

/// Clicks what is labelled `label` and runs the frames that follow.
fn click(h: &mut Harness<'static, PinholeApp>, label: &str) {
    h.get_by_label(label).click();
    h.run();
}

/// Replaces the text of the field labelled `label` (egui's text edit selects nothing on focus,
/// so clear it first with the keyboard).
fn type_into(h: &mut Harness<'static, PinholeApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.key_press(egui::Key::Backspace);
    h.run();
    h.get_by_label(label).type_text(text);
    h.run();
}

#[test]
fn first_run_setup_saves_settings_and_shows_the_main_view() {
    let (_dir, path, mut h) = first_run();
    assert_eq!(h.state().view(), View::Setup);
    h.get_by_label("Welcome to Pinhole");
    // Nothing typed yet: no error on arrival, and Save waits for a name.
    assert!(
        h.query_by_label("enter a name others can call you by")
            .is_none()
    );
    click(&mut h, "Save and start");
    assert_eq!(h.state().view(), View::Setup);
    // A name typed and erased is said to be missing.
    type_into(&mut h, "Your name", "a");
    type_into(&mut h, "Your name", "");
    h.get_by_label("enter a name others can call you by");

    type_into(&mut h, "Server", "rendezvous.example.org:4000");
    type_into(&mut h, "Your name", "alice");
    click(&mut h, "Save and start");

    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("You are alice");
    let saved = settings::load(&path)
        .unwrap()
        .expect("settings file written");
    assert_eq!(saved.server, "rendezvous.example.org:4000");
    assert_eq!(saved.name, "alice");
    assert_eq!(saved.input_device, None, "system default unless picked");
}

#[test]
fn an_invalid_server_address_shows_the_message_and_is_not_saved() {
    let (_dir, path, mut h) = first_run();
    type_into(&mut h, "Your name", "alice");
    type_into(&mut h, "Server", "example.org:99999");

    h.get_by_label("The port must be a number from 1 to 65535, not \"99999\"");
    // The button is disabled: clicking it does nothing.
    click(&mut h, "Save and start");
    assert_eq!(h.state().view(), View::Setup);
    assert!(!path.exists(), "nothing saved");

    type_into(&mut h, "Server", "bad_host");
    h.get_by_label("\"bad_host\" is not a host name or IP address");

    // Fixing it clears the message and saving works.
    type_into(&mut h, "Server", "203.0.113.7");
    assert!(h.query_by_label_contains("not a host name").is_none());
    click(&mut h, "Save and start");
    assert_eq!(h.state().view(), View::Main);
    assert_eq!(
        settings::load(&path).unwrap().unwrap().server,
        "203.0.113.7"
    );
}

#[test]
fn the_server_field_takes_a_list_and_names_a_bad_entry() {
    let (_dir, path, mut h) = first_run();
    type_into(&mut h, "Your name", "alice");
    type_into(&mut h, "Server", "a.example.org, b.example.org:99999");
    h.get_by_label(
        "Server 2 of 2, \"b.example.org:99999\": The port must be a number from 1 to 65535, \
         not \"99999\"",
    );
    click(&mut h, "Save and start");
    assert_eq!(h.state().view(), View::Setup);
    assert!(!path.exists(), "nothing saved");

    type_into(&mut h, "Server", "a.example.org, b.example.org:3479");
    assert!(h.query_by_label_contains("Server 2 of 2").is_none());
    click(&mut h, "Save and start");
    assert_eq!(h.state().view(), View::Main);
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(saved.server, "a.example.org, b.example.org:3479");
    assert_eq!(saved.server_addrs().unwrap().len(), 2);
}

#[test]
fn settings_view_edits_advanced_fields_and_cancel_keeps_the_saved_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let first = settings::Settings {
        name: "bob".into(),
        ..Default::default()
    };
    settings::save(&path, &first).unwrap();
    let mut h = harness(PinholeApp::new(path.clone(), devices()));
    h.run();
    assert_eq!(h.state().view(), View::Main);
    h.get_by_label("Server: built into this app (this machine only)");

    // Cancel throws edits away.
    click(&mut h, "Settings");
    type_into(&mut h, "Your name", "mallory");
    click(&mut h, "Cancel");
    h.get_by_label("You are bob");

    // Advanced: a bad bitrate blocks saving; a good one is saved.
    click(&mut h, "Settings");
    click(&mut h, "Advanced");
    type_into(&mut h, "Bitrate (kbit/s)", "900");
    h.get_by_label("bitrate is a number from 6 to 510 kbit/s");
    type_into(&mut h, "Bitrate (kbit/s)", "24");
    type_into(&mut h, "Keepalive (s)", "10");
    click(&mut h, "10 ms");
    // The UDP port is a plain field: empty is any port, a bad one is said and blocks saving.
    type_into(&mut h, "UDP port", "70000");
    h.get_by_label("the UDP port is empty (any free port) or a number from 1 to 65535");
    type_into(&mut h, "UDP port", "40000");
    // Port mapping is on by default; it can be switched off.
    assert_eq!(
        h.get_by_label("ask the router (UPnP, NAT-PMP, PCP)")
            .accesskit_node()
            .toggled(),
        Some(egui::accesskit::Toggled::True)
    );
    click(&mut h, "ask the router (UPnP, NAT-PMP, PCP)");
    click(&mut h, "Save");
    assert_eq!(h.state().view(), View::Main);
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(saved.name, "bob");
    assert_eq!(saved.advanced.bitrate_bps, 24_000);
    assert_eq!(saved.advanced.keepalive_s, Some(10));
    assert_eq!(saved.advanced.frame_ms, 10);
    assert_eq!(saved.advanced.udp_port, 40_000);
    assert!(!saved.advanced.port_mapping);

    // Back to any port (Advanced is still open).
    click(&mut h, "Settings");
    type_into(&mut h, "UDP port", "");
    click(&mut h, "Save");
    assert_eq!(settings::load(&path).unwrap().unwrap().advanced.udp_port, 0);
}

#[test]
fn settings_view_turns_the_microphone_processing_on_and_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let first = settings::Settings {
        name: "bob".into(),
        ..Default::default()
    };
    settings::save(&path, &first).unwrap();
    let mut h = harness(PinholeApp::new(path.clone(), devices()));
    h.run();
    click(&mut h, "Settings");
    h.get_by_label("Microphone sound (from the next call)");
    // All on by default.
    for label in ["Echo cancellation", "Noise suppression", "Automatic gain"] {
        assert_eq!(
            h.get_by_label(label).accesskit_node().toggled(),
            Some(egui::accesskit::Toggled::True),
            "{label}"
        );
    }
    click(&mut h, "Echo cancellation");
    click(&mut h, "Automatic gain");
    assert_eq!(
        h.get_by_label("Echo cancellation")
            .accesskit_node()
            .toggled(),
        Some(egui::accesskit::Toggled::False)
    );
    click(&mut h, "Save");
    let saved = settings::load(&path).unwrap().unwrap();
    assert!(!saved.audio.echo_cancellation);
    assert!(saved.audio.noise_suppression);
    assert!(!saved.audio.gain_control);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("[audio]") && text.contains("echo_cancellation = false"),
        "{text}"
    );
    // Shown as saved when the view opens again.
    click(&mut h, "Settings");
    assert_eq!(
        h.get_by_label("Noise suppression")
            .accesskit_node()
            .toggled(),
        Some(egui::accesskit::Toggled::True)
    );
    assert_eq!(
        h.get_by_label("Automatic gain").accesskit_node().toggled(),
        Some(egui::accesskit::Toggled::False)
    );
}

#[test]
fn an_unreadable_settings_file_is_reported_and_kept_until_the_user_saves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    std::fs::write(&path, "name = [\n").unwrap();
    let mut h = harness(PinholeApp::new(path.clone(), devices()));
    h.run();
    assert_eq!(h.state().view(), View::Setup);
    assert!(
        h.query_by_label_contains("Your settings could not be read")
            .is_some()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "name = [\n");
}

#[test]
fn test_connection_runs_the_nat_check_off_the_ui_thread_and_shows_the_verdict() {
    let server = spawn_server();
    let (_dir, _path, mut h) = settings_view_with_server("127.0.0.1:9");
    type_into(&mut h, "Server", &server.local_addr().to_string());
    click(&mut h, "Test connection");
    // The frame that started it came back at once; the verdict arrives later (bounded).
    wait_for(&mut h, "Your address as the server sees it: 127.0.0.1:");
    assert!(h.query_by_label_contains("Network: ").is_some());

    // A server that does not answer: a clear message, and the UI kept drawing meanwhile.
    type_into(&mut h, "Server", "127.0.0.1:9");
    click(&mut h, "Test connection");
    wait_for(&mut h, "Network check failed");
}

/// A rendezvous server in this process, on a free loopback port.
fn spawn_server() -> traversal::rendezvous::Rendezvous {
    let listen = "127.0.0.1:0".parse().unwrap();
    traversal::rendezvous::spawn(traversal::rendezvous::RendezvousConfig::new(listen)).unwrap()
}

/// The app as bob with `server` saved, on the Settings view; and where the settings are.
fn settings_view_with_server(
    server: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Harness<'static, PinholeApp>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let first = settings::Settings {
        name: "bob".into(),
        server: server.into(),
        ..Default::default()
    };
    settings::save(&path, &first).unwrap();
    let mut h = harness(PinholeApp::new(path.clone(), devices()));
    h.run();
    click(&mut h, "Settings");
    (dir, path, h)
}

/// Runs frames until a label contains `text` (at most 10 s: the checks run on threads).
fn wait_for(h: &mut Harness<'static, PinholeApp>, text: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.query_by_label_contains(text).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.run();
    }
}

#[test]
fn the_server_certificate_field_is_checked_and_pins_the_server() {
    let server = spawn_server();
    let (_dir, path, mut h) = settings_view_with_server(&server.local_addr().to_string());

    // Not a fingerprint: said under the field, and Save does nothing.
    type_into(&mut h, "Server certificate", "sha256:12ab");
    h.get_by_label_contains("has 64 hex digits after `sha256:`; this one has 4");
    click(&mut h, "Save");
    assert_eq!(h.state().view(), View::Settings);
    assert_eq!(
        settings::load(&path).unwrap().unwrap().server_fingerprint,
        ""
    );

    // Another certificate's fingerprint: the connection test refuses the server.
    let wrong = format!("sha256:{}", "00".repeat(32));
    type_into(&mut h, "Server certificate", &wrong);
    click(&mut h, "Test connection");
    wait_for(&mut h, "Network check failed");
    h.get_by_label_contains(&server.fingerprint().to_string());

    // Its own: the test passes, and Save keeps it.
    let right = server.fingerprint().to_string();
    type_into(&mut h, "Server certificate", &right);
    click(&mut h, "Test connection");
    wait_for(&mut h, "Your address as the server sees it: 127.0.0.1:");
    click(&mut h, "Save");
    assert_eq!(h.state().view(), View::Main);
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(saved.server_fingerprint, right);
}

#[test]
fn device_pickers_offer_usable_devices_once_after_the_system_default() {
    use media::audio::{DeviceInfo, SupportedConfig};
    let config = SupportedConfig {
        channels: 2,
        min_rate: 8_000,
        max_rate: 192_000,
        sample_format: "i16".into(),
    };
    let device = |id: &str, name: &str, is_default: bool, configs: bool| DeviceInfo {
        id: id.into(),
        name: name.into(),
        is_default,
        configs: if configs {
            vec![config.clone()]
        } else {
            vec![]
        },
    };
    let list = [
        device(
            "default",
            "Playback/recording through PulseAudio",
            true,
            true,
        ),
        device("null", "Discard all samples", false, true),
        device("lavrate", "Rate Converter Plugin", false, false),
        device("pulse", "PulseAudio Sound Server", false, true),
        device("hw:CARD=USB,DEV=0", "USB headset", false, true),
        device("plughw:CARD=USB,DEV=0", "USB headset", false, true),
    ];
    assert_eq!(
        pinhole::ui::usable_names(&list),
        ["PulseAudio Sound Server", "USB headset"]
    );

    // A sound server's devices: the default is a real one and kept; two null sinks share a
    // name and are told apart by their ids; a monitor is a microphone too.
    let server = [
        device("vsink", "Null Output", true, true),
        device("headset_sink", "USB headset", false, true),
        device("other", "Null Output", false, true),
        device("vsink.monitor", "Monitor of Null Output", false, true),
    ];
    let choices = pinhole::ui::usable(&server);
    assert_eq!(
        choices.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
        [
            "Null Output (vsink)",
            "USB headset",
            "Null Output (other)",
            "Monitor of Null Output"
        ]
    );
    assert_eq!(choices[1].id, "headset_sink");

    // The picker: "System default" first, then those names.
    let (_dir, path, mut h) = first_run();
    type_into(&mut h, "Your name", "alice");
    click(&mut h, "Microphone");
    click(&mut h, "USB headset");
    click(&mut h, "Save and start");
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(saved.input_device.as_deref(), Some("USB headset"));
    assert_eq!(saved.output_device, None);
}
