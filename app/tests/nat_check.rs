//! `pinhole nat-check` against a rendezvous server on loopback (run in this process), a plain
//! STUN server, and a dead address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use traversal::rendezvous::{self, RendezvousConfig};

fn server() -> rendezvous::Rendezvous {
    rendezvous::spawn(RendezvousConfig::new("127.0.0.1:0".parse().unwrap())).unwrap()
}

fn nat_check(args: &[&str]) -> Output {
    // A settings path of its own (nothing there): the user's known servers play no part.
    let config =
        std::env::temp_dir().join(format!("pinhole-nat-check-{}.toml", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .arg("nat-check")
        .args(args)
        .env("PINHOLE_CONFIG", config)
        .output()
        .expect("running pinhole nat-check")
}

/// `nat-check --server SERVER --json EXTRA...`: its report (it must succeed).
fn report(server: &rendezvous::Rendezvous, extra: &[&str]) -> serde_json::Value {
    let addr = server.local_addr().to_string();
    json(&nat_check(
        &[&["--server", &addr, "--json"], extra].concat(),
    ))
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn json_gives_the_verdict_and_mapped_address() {
    let server = server();
    let v = report(&server, &[]);
    assert_eq!(v["verdict"], "public");
    assert_eq!(v["behind_nat"], false);
    let mapped: SocketAddr = v["mapped_address"].as_str().unwrap().parse().unwrap();
    assert_eq!(mapped.ip(), server.local_addr().ip());
    assert_ne!(mapped.port(), 0);
    assert!(v["user_index"].as_u64().unwrap() > 0);
    assert!(v["elapsed_ms"].as_u64().is_some());
    // Nothing filters on loopback: the probe from the server's other port got through.
    assert_eq!(v["filtered"], false);
    let locals = v["local_addresses"].as_array().unwrap();
    assert!(locals.iter().any(|a| a == "127.0.0.1"), "{locals:?}");
    // The registration is released when nat-check says goodbye.
    let end = Instant::now() + Duration::from_secs(3);
    while server.stats().registrations != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        server.stats().registrations,
        0,
        "registration released at exit"
    );
}

#[test]
fn human_report_names_the_verdict() {
    let server = server();
    let out = nat_check(&["--server", &server.local_addr().to_string()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("verdict:") && text.contains("public"),
        "{text}"
    );
}

#[test]
fn hold_keeps_the_mapping_reachable() {
    let v = report(&server(), &["--hold", "2", "--keepalive-interval", "0.5"]);
    assert_eq!(v["reachable_at_end"], true);
    assert_eq!(v["mapping_lost"], false);
    assert_eq!(v["reregistrations"], 0);
    assert!(v["keepalives_sent"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["keepalive_interval_s"], 0.5);
}

#[test]
fn measure_lifetime_reports_the_bound_on_an_unnatted_path() {
    let v = report(&server(), &["--measure-lifetime", "--lifetime-max", "2"]);
    // No NAT on loopback: the mapping outlives the longest silence tried.
    assert_eq!(v["mapping_lifetime_s"], 2.0);
    assert_eq!(v["mapping_lifetime_at_least"], true);
    let k = v["keepalive_interval_s"].as_f64().unwrap();
    assert!(k > 0.0 && k < 2.0, "{v}");
}

#[test]
fn stun_mode_against_our_server() {
    let server = server();
    let v = json(&nat_check(&[
        "--stun",
        &server.local_addr().to_string(),
        "--json",
    ]));
    assert_eq!(v["limited"], true);
    assert_eq!(v["verdict"], "public");
    assert_eq!(v["behind_nat"], false);
    assert!(v["user_index"].is_null());
    let mapped: SocketAddr = v["mapped_address"].as_str().unwrap().parse().unwrap();
    assert_eq!(mapped.ip(), server.local_addr().ip());
}

#[test]
fn dead_server_fails_fast_with_one_line() {
    // A port nobody listens on: TCP is refused at once; for STUN, nothing answers.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // A server that accepts the connection and then says nothing.
    let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent_listener.local_addr().unwrap().to_string();
    for args in [
        vec!["--server", dead.as_str(), "--json"],
        vec!["--server", silent.as_str(), "--json", "--timeout", "1"],
        vec!["--stun", dead.as_str(), "--timeout", "1"],
        vec!["--server", "not a host", "--json"],
    ] {
        let start = Instant::now();
        let out = nat_check(&args);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} took too long"
        );
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("pinhole nat-check: "), "{stderr}");
        // Plain words, no operating-system error numbers.
        assert!(!stderr.contains("os error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_server_without_tls_is_refused_in_plain_words() {
    // An old server: it reads the client's first bytes and answers a frame in clear.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = plain.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut tcp, _)) = plain.accept() {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf);
            let _ = tcp.write_all(b"\x00\x00\x00\x10{\"type\":\"error\"}");
        }
    });
    let out = nat_check(&["--server", &addr, "--json", "--timeout", "2"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not speak TLS"), "{stderr}");
    server.join().unwrap();
}

/// `--server-fingerprint`: the server's own is accepted; another one is refused with both
/// fingerprints and nothing else done.
#[test]
fn a_given_fingerprint_is_checked() {
    let server = server();
    let addr = server.local_addr().to_string();
    let own = server.fingerprint().to_string();
    let report = json(&nat_check(&[
        "--server",
        &addr,
        "--json",
        "--server-fingerprint",
        &own,
    ]));
    assert!(report["verdict"].is_string(), "{report}");
    let other = format!("sha256:{}", "ab".repeat(32));
    let out = nat_check(&["--server", &addr, "--server-fingerprint", &other]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&own) && stderr.contains(&other),
        "both fingerprints: {stderr}"
    );
    let out = nat_check(&["--server", &addr, "--server-fingerprint", "sha1:00"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-fingerprint"));
}

/// Without `--server`, the settings file's server is checked (as `pinhole call` does); with
/// none set, one line says what to give.
#[test]
fn without_server_the_settings_server_is_checked() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("settings.toml");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_pinhole"))
            .args(["nat-check", "--json"])
            .env("PINHOLE_CONFIG", &config)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no server to check"), "{stderr}");
    std::fs::write(&config, format!("server = \"{}\"\n", server.local_addr())).unwrap();
    let report = json(&run());
    assert!(report["verdict"].is_string(), "{report}");
    assert_eq!(report["server"], server.local_addr().to_string());
}
