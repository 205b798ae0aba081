//! The Settings pickers follow hot-plug: the app lists devices through a
//! `media::audio::DeviceWatcher` (never on the UI thread), and a PulseAudio null sink loaded
//! while the Settings view is open appears in the speaker picker (and its monitor in the
//! microphone picker) within 2 s, then goes when it is unloaded; the picker shows it by name
//! and the settings keep its id.
//!
//! Needs a PulseAudio (or PipeWire) server that answers `pactl` and that the media crate's
//! PulseAudio host finds (`./dev test` starts one and names it in `PULSE_SERVER`).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use pinhole::settings;
use pinhole::ui::{DeviceList, FakeEngine, PinholeApp};
use pinhole_tests::prereq::missing;

fn pactl(args: &[&str]) -> Option<String> {
    let out = Command::new("pactl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs frames until `check` holds for the pickers (at most 2 s, the bound); how long.
fn wait_until(
    h: &mut Harness<'static, PinholeApp>,
    what: &str,
    check: impl Fn(&DeviceList) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        h.run();
        if check(h.state().devices()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: not within 2 s; {:?}",
            h.state().devices()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn settings_pickers_follow_a_device_plugged_in_and_out() {
    let Some(default_sink) = pactl(&["get-default-sink"]) else {
        return missing("no PulseAudio/PipeWire server answers pactl (./dev starts one)");
    };
    let listed = media::audio::output_devices().unwrap_or_default();
    if !listed.iter().any(|d| d.id == default_sink) {
        return missing(
            "PulseAudio answers pactl but the media crate does not list its sinks (set \
             PULSE_SERVER=unix:PATH; ./dev test does)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    settings::save(
        &path,
        &settings::Settings {
            name: "gina".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let app = PinholeApp::new(path.clone(), DeviceList::default())
        .with_engine(FakeEngine::new().starter())
        .without_sounds()
        .list_devices_in_background();
    let mut h = Harness::builder()
        .with_size([480.0, 900.0])
        .build_ui_state(|ui, app: &mut PinholeApp| app.show(ui), app);
    h.run();
    h.get_by_label("Settings").click();
    h.run();
    wait_until(&mut h, "the first listing", |d| {
        d.outputs.iter().any(|c| c.id == default_sink)
    });

    let id = format!("pinhole_ui_hotplug_{}", std::process::id());
    let module = pactl(&[
        "load-module",
        "module-null-sink",
        &format!("sink_name={id}"),
        "sink_properties=device.description=Pinhole-hotplug-headset",
    ])
    .expect("pactl load-module");
    struct Unload(Option<String>);
    impl Drop for Unload {
        fn drop(&mut self) {
            if let Some(m) = self.0.take() {
                let _ = pactl(&["unload-module", &m]);
            }
        }
    }
    let mut guard = Unload(Some(module.clone()));
    let monitor = format!("{id}.monitor");
    let appeared = wait_until(&mut h, "the new sink", |d| {
        d.outputs.iter().any(|c| c.id == id) && d.inputs.iter().any(|c| c.id == monitor)
    });
    println!("a sink plugged in showed in the pickers after {appeared:?}");
    let choice = h
        .state()
        .devices()
        .outputs
        .iter()
        .find(|c| c.id == id)
        .unwrap()
        .clone();
    assert_eq!(choice.label, "Pinhole-hotplug-headset");

    // Chosen in the picker by its name; the settings keep its id.
    h.get_by_label("Speaker").click();
    h.run();
    h.get_by_label("Pinhole-hotplug-headset").click();
    h.run();
    h.get_by_label("Save").click();
    h.run();
    let saved = settings::load(&path).unwrap().unwrap();
    assert_eq!(saved.output_device.as_deref(), Some(id.as_str()));

    pactl(&["unload-module", &module]).expect("pactl unload-module");
    guard.0 = None;
    h.get_by_label("Settings").click();
    h.run();
    let gone = wait_until(&mut h, "the sink unplugged", |d| {
        !d.outputs.iter().any(|c| c.id == id) && !d.inputs.iter().any(|c| c.id == monitor)
    });
    println!("a sink unplugged left the pickers after {gone:?}");
    // The saved choice stays, marked missing.
    assert_eq!(
        h.get_by_label("Speaker").value(),
        Some(format!("{id} (missing)"))
    );
}
