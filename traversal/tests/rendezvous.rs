//! The real `pinhole-rendezvous` binary on loopback: plain STUN answers, the patent's exchange
//! through the tokio driver (over TLS pinned to the server's certificate), authentication, junk,
//! `--help`, a clean exit on SIGTERM, and a changed certificate refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use pinhole_tests::{Place, Rendezvous};
use traversal::client::Event;
use traversal::control::Verdict;
use traversal::driver::{Driver, DriverError, Options};
use traversal::stun;
use traversal::tls::ClientTrust;
use traversal::wire::{Flags, UdpMessage};

/// The real server on loopback with `extra` flags, from its ready line; killed when dropped.
fn start_server(extra: &[&str]) -> Rendezvous {
    Rendezvous::start_at(Place::Local, "127.0.0.1:0", extra)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn binding(socket: &UdpSocket, server: SocketAddr, tid: [u8; 12]) -> Option<SocketAddr> {
    socket
        .send_to(&stun::encode_binding_request(&tid), server)
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    let m = stun::Message::decode(&buf[..n]).unwrap();
    assert_eq!(m.kind, stun::BINDING_SUCCESS);
    assert_eq!(m.transaction_id, tid);
    m.xor_mapped_address().unwrap()
}

#[test]
fn plain_stun_binding_is_answered_and_junk_is_survived() {
    let server = start_server(&[]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        binding(&socket, server.addr, [1; 12]),
        Some(socket.local_addr().unwrap())
    );
    // Junk, truncated STUN and a forged Pinhole request: dropped without an answer.
    for junk in [
        &b""[..],
        b"\x00",
        b"\x80\x00\x00\x00garbage-rtp",
        &stun::encode_binding_request(&[2; 12])[..10],
        &UdpMessage::Request {
            transaction_id: [3; 12],
            user_index: 1,
            flags: Flags::default(),
        }
        .encode(b"guess"),
    ] {
        socket.send_to(junk, server.addr).unwrap();
    }
    // The next answer is to the next good request.
    assert_eq!(
        binding(&socket, server.addr, [4; 12]),
        Some(socket.local_addr().unwrap())
    );
}

#[test]
fn the_exchange_runs_against_the_binary_and_sigterm_stops_it() {
    let mut server = start_server(&["--idle-timeout", "30"]);
    let rt = runtime();
    rt.block_on(async {
        let options = Options {
            keepalive_interval: Some(Duration::from_millis(300)),
            trust: server.trust(),
            ..Options::default()
        };
        let mut driver = Driver::connect(&server.addr.to_string(), options)
            .await
            .unwrap();
        let (verdict, mapped) = driver.wait_verdict().await.unwrap();
        assert_eq!(verdict, Verdict::Public);
        let media = driver.media_socket().local_addr().unwrap();
        assert_eq!(mapped.port(), media.port());
        assert_eq!(mapped.ip(), server.addr.ip());
        assert!(driver.client().user_index() != 0);
        // Keepalives flow; the server reaches us through the mapping.
        driver
            .run_for(Duration::from_millis(1000), |_| false)
            .await
            .unwrap();
        assert!(driver.client().stats().keepalive_answers >= 2);
        driver.client_mut().check_reachability(Instant::now());
        let mut reachable = None;
        driver
            .run_for(Duration::from_secs(3), |e| match e {
                Event::Reachability { reachable: r } => {
                    reachable = Some(*r);
                    true
                }
                _ => false,
            })
            .await
            .unwrap();
        assert_eq!(reachable, Some(true));
        // A forged request with our user index but the wrong key moves nothing.
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        attacker
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let forged = UdpMessage::Request {
            transaction_id: [5; 12],
            user_index: driver.client().user_index(),
            flags: Flags::default(),
        }
        .encode(&[0u8; 16]);
        attacker.send_to(&forged, server.addr).unwrap();
        let mut buf = [0u8; 1500];
        assert!(
            attacker.recv_from(&mut buf).is_err(),
            "forged request was answered"
        );
        driver.close().await;
    });
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole-rendezvous"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--max-registrations",
        "--idle-timeout",
        "--allow-private-targets",
        "--batch",
        "--names-file",
        "--ephemeral-names",
        "--state-dir",
        "--cert",
        "--key",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_full_server_refuses_with_an_error() {
    let server = start_server(&["--max-registrations", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let addr = server.addr.to_string();
        let options = || Options {
            trust: server.trust(),
            ..Options::default()
        };
        let mut first = Driver::connect(&addr, options()).await.unwrap();
        first.wait_verdict().await.unwrap();
        let mut second = Driver::connect(&addr, options()).await.unwrap();
        let err = second.wait_verdict().await.unwrap_err().to_string();
        assert!(err.contains("server_full"), "{err}");
        first.close().await;
    });
}

#[test]
fn sigterm_with_clients_still_registered_exits_cleanly() {
    let mut server = start_server(&[]);
    let rt = runtime();
    let mut driver = rt.block_on(async {
        let options = Options {
            trust: server.trust(),
            ..Options::default()
        };
        let mut d = Driver::connect(&server.addr.to_string(), options)
            .await
            .unwrap();
        d.wait_verdict().await.unwrap();
        d
    });
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // The client notices the control connection closing.
    let result = rt.block_on(driver.run_for(Duration::from_secs(3), |_| false));
    let err = result.unwrap_err().to_string();
    assert!(err.contains("closed the control connection"), "{err}");
    assert!(!driver.client().is_registered());
}

/// Connects to `server` under `trust`: the verdict, or why not.
fn connect(server: &str, trust: &ClientTrust) -> Result<(), DriverError> {
    let rt = runtime();
    rt.block_on(async {
        let options = Options {
            trust: trust.clone(),
            ..Options::default()
        };
        let mut driver = Driver::connect(server, options).await?;
        driver.wait_verdict().await?;
        driver.close().await;
        Ok(())
    })
}

#[test]
fn a_server_with_another_certificate_is_refused_by_clients_that_trusted_the_first() {
    let dir = std::env::temp_dir().join(format!("pinhole-known-servers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let known = ClientTrust {
        pinned: None,
        known_servers: Some(dir.join("known_servers")),
    };
    let mut first = start_server(&[]);
    let pinned = first.trust();
    let addr = first.addr.to_string();
    connect(&addr, &pinned).unwrap();
    // Trust on first use records the certificate.
    connect(&addr, &known).unwrap();
    let recorded = std::fs::read_to_string(dir.join("known_servers")).unwrap();
    assert_eq!(recorded, format!("{addr} {}\n", first.fingerprint()));
    connect(&addr, &known).unwrap();

    // Another server (another state directory: another certificate) on the same address.
    first.kill();
    let second = start_server_on(&addr);
    assert_ne!(second.fingerprint(), first.fingerprint());
    for trust in [&pinned, &known] {
        match connect(&addr, trust) {
            Err(DriverError::CertificateChanged {
                server,
                pinned,
                presented,
            }) => {
                assert_eq!(server, addr);
                assert_eq!(
                    (pinned, presented),
                    (first.fingerprint(), second.fingerprint())
                );
            }
            other => panic!("expected CertificateChanged, got {other:?}"),
        }
    }
    // The file still holds the first certificate; a client told the new one connects.
    assert_eq!(
        std::fs::read_to_string(dir.join("known_servers")).unwrap(),
        recorded
    );
    connect(&addr, &second.trust()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh server on `addr` (retrying while the old one's port is released).
fn start_server_on(addr: &str) -> Rendezvous {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = std::panic::catch_unwind(|| Rendezvous::start_at(Place::Local, addr, &[]));
        match attempt {
            Ok(server) => return server,
            Err(e) if Instant::now() >= deadline => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn a_server_given_a_certificate_serves_it() {
    let dir = std::env::temp_dir().join(format!("pinhole-given-cert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let identity = traversal::tls::ServerIdentity::load_or_create(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = start_server(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(server.fingerprint(), identity.fingerprint());
    connect(&server.addr.to_string(), &server.trust()).unwrap();
    // A key that is not the certificate's: the server says so and does not start.
    let other = dir.join("other");
    traversal::tls::ServerIdentity::load_or_create(&other).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole-rendezvous"))
        .args(["--listen", "127.0.0.1:0", "--ephemeral-names", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(other.join("key.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("do not go together"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
