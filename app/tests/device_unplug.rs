//! A device that vanishes mid-call: `pinhole call echo` plays to a PulseAudio null sink of its
//! own and records from that sink's monitor; the sink is unloaded while the call goes on. The
//! engine sees both devices fail ("the device was removed"), opens the system default for each
//! on a blocking thread, swaps them into the call, and the JSON report lists both moves; the
//! call itself goes on to its end.
//!
//! Needs a PulseAudio (or PipeWire) server that answers `pactl` (`./dev test` starts one);
//! missing, the test fails under `./dev test` and is skipped otherwise.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use pinhole_tests::prereq::missing;
use pinhole_tests::{Headless, Party, Rendezvous, TempDir};

fn pactl(args: &[&str]) -> Option<String> {
    let out = Command::new("pactl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The server's socket as `PULSE_SERVER` names it: cpal's PulseAudio host looks only there and
/// in `$XDG_RUNTIME_DIR`, which a test machine may not have.
fn pulse_server() -> Option<String> {
    if let Ok(s) = std::env::var("PULSE_SERVER") {
        return Some(s);
    }
    let info = pactl(&["info"])?;
    let socket = info
        .lines()
        .find_map(|l| l.strip_prefix("Server String: "))?
        .trim();
    Some(if socket.starts_with('/') {
        format!("unix:{socket}")
    } else {
        socket.to_owned()
    })
}

#[test]
fn a_call_whose_devices_vanish_moves_to_the_default_ones_and_says_so() {
    let Some(default_sink) = pactl(&["get-default-sink"]) else {
        return missing("no PulseAudio/PipeWire server answers pactl (./dev starts one)");
    };
    let Some(server_socket) = pulse_server() else {
        return missing("pactl info names no server socket");
    };
    let id = format!("pinhole_unplug_{}", std::process::id());
    let module = pactl(&[
        "load-module",
        "module-null-sink",
        &format!("sink_name={id}"),
        "rate=48000",
        "sink_properties=device.description=Pinhole-unplug-test",
    ])
    .expect("pactl load-module module-null-sink");
    // Unloaded however the test ends.
    struct Unload(Option<String>);
    impl Drop for Unload {
        fn drop(&mut self) {
            if let Some(m) = self.0.take() {
                let _ = pactl(&["unload-module", &m]);
            }
        }
    }
    let mut guard = Unload(Some(module.clone()));

    let server = Rendezvous::start("127.0.0.1:0");
    let dir = TempDir::new("unplug");
    let mut frank = Party::silent(&dir, "frank");
    frank.input = format!("device:{id}.monitor");
    frank.output = format!("device:{id}");
    let mut cmd = pinhole_tests::command("pinhole");
    cmd.args(frank.call_args(&server.addr.to_string(), "echo", 6.0))
        .env("PULSE_SERVER", &server_socket);
    let mut call = Headless::spawn(cmd);
    call.expect_log("headless: connected", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        pactl(&["unload-module", &module]).is_some(),
        "pactl unload-module {module}"
    );
    guard.0 = None;
    let out = call.finish(Duration::from_secs(30));
    assert!(out.status.success(), "{out:#?}");
    let j = out.one_json();
    println!("{j}");
    let moved = j["devices_moved"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices_moved: {j}\n{}", out.log_text()));
    let sides: Vec<&str> = moved.iter().map(|m| m["side"].as_str().unwrap()).collect();
    assert!(sides.contains(&"speaker"), "{j}\n{}", out.log_text());
    assert!(sides.contains(&"microphone"), "{j}");
    for m in moved {
        assert!(m["reason"].as_str().unwrap().contains("removed"), "{m}");
        let to = m["to"].as_str().unwrap();
        assert!(
            !to.is_empty() && !to.contains(&id),
            "moved to the default: {m}"
        );
    }
    let speaker = moved.iter().find(|m| m["side"] == "speaker").unwrap();
    println!(
        "default sink {default_sink}; the speaker moved to {}",
        speaker["to"]
    );
    let log = out.log_text();
    assert!(
        log.contains("the call now uses the system default"),
        "said on stderr: {log}"
    );
    // The call went on to its end.
    assert_eq!(j["end"], "hung_up", "{j}");
    assert!(j["duration_s"].as_f64().unwrap() > 5.5, "{j}");
}
