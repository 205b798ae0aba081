//! The binaries start, explain themselves and fail clearly.

use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use pinhole_tests::{Rendezvous, command, signal};
use traversal::stun;

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
    assert!(
        stdout.contains(r#"{"event":"ready""#),
        "help documents the ready line: {stdout}"
    );
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
fn rendezvous_names_itself_and_refuses_a_names_file_it_could_not_write() {
    let out = command("pinhole-rendezvous")
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pinhole-rendezvous "),
        "{out:?}"
    );
    // Every name would be lost: the server says why and does not start.
    let missing = std::env::temp_dir().join(format!("pinhole-no-dir-{}", std::process::id()));
    let out = command("pinhole-rendezvous")
        .args(["--listen", "127.0.0.1:0", "--names-file"])
        .arg(missing.join("names"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "stderr: {stderr}");
}

#[test]
fn rendezvous_listens_on_udp_and_tcp() {
    // Rendezvous::start waits for the ready line on stdout, which gives the addresses.
    let server = Rendezvous::start("127.0.0.1:0");
    assert!(server.addr.ip().is_loopback());
    assert_ne!(server.addr.port(), 0);
    assert_ne!(server.alternate.port(), server.addr.port());
    // The same port takes TCP connections too.
    TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)).unwrap();
}

#[test]
fn rendezvous_answers_stun_binding_with_the_mapped_address_and_survives_junk() {
    let server = Rendezvous::start("127.0.0.1:0");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Junk first: empty, RTP-looking, a truncated header, a bad cookie.
    let mut bad_cookie = stun::encode_binding_request(&[1; 12]);
    bad_cookie[4] ^= 0xff;
    for junk in [
        &[][..],
        &[0x80, 0x60, 0, 1][..],
        &[0, 1, 0][..],
        &bad_cookie[..],
    ] {
        socket.send_to(junk, server.addr).unwrap();
    }
    let id = [0x5a; 12];
    socket
        .send_to(&stun::encode_binding_request(&id), server.addr)
        .unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(from, server.addr);
    let answer = stun::Message::decode(&buf[..len]).unwrap();
    assert_eq!(answer.kind, stun::BINDING_SUCCESS);
    assert_eq!(answer.transaction_id, id);
    assert_eq!(
        answer.xor_mapped_address().unwrap(),
        Some(socket.local_addr().unwrap())
    );
}

#[test]
fn rendezvous_shuts_down_cleanly_on_sigterm() {
    let mut server = Rendezvous::start("127.0.0.1:0");
    signal(server.pid(), nix::sys::signal::Signal::SIGTERM);
    let exit = server
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}
