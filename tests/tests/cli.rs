//! The binaries start, explain themselves and fail clearly.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pinhole_tests::command;

#[test]
fn app_without_display_explains_how_to_run_headless() {
    let out = command("pinhole")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no display found"), "stderr: {stderr}");
    assert!(stderr.contains("xvfb-run"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn rendezvous_help_explains_listen() {
    let out = command("pinhole-rendezvous")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("--listen"), "help: {stdout}");
}

#[test]
fn rendezvous_rejects_a_bad_listen_address() {
    let out = command("pinhole-rendezvous")
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "stderr: {stderr}");
}

#[test]
fn rendezvous_listens_on_udp_and_tcp() {
    let mut child = command("pinhole-rendezvous")
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = BufReader::new(stderr).lines();
    let mut listening = None;
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening") => {
                listening = Some(line);
                break;
            }
            Some(Ok(_)) => continue,
            _ => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let line = listening.expect("server logged that it listens");
    assert!(line.contains("udp=127.0.0.1:"), "{line}");
    assert!(line.contains("tcp=127.0.0.1:"), "{line}");
}
