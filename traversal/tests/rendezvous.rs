//! The real `pinhole-rendezvous` binary on loopback: plain STUN answers, the patent's exchange
//! through the tokio driver, authentication, junk, `--help`, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use traversal::client::Event;
use traversal::control::Verdict;
use traversal::driver::{Driver, Options};
use traversal::stun;
use traversal::wire::{Flags, UdpMessage};

/// The server process; killed (by its pid) if a test fails before it stops it.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinhole-rendezvous"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pinhole-rendezvous");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening udp=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no 'listening' line")
            .parse()
            .unwrap();
        Server { child, addr }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "server did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
    let server = Server::start(&[]);
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
    let mut server = Server::start(&["--idle-timeout", "30"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = Options {
            keepalive_interval: Some(Duration::from_millis(300)),
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
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_full_server_refuses_with_an_error() {
    let server = Server::start(&["--max-registrations", "1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = server.addr.to_string();
        let mut first = Driver::connect(&addr, Options::default()).await.unwrap();
        first.wait_verdict().await.unwrap();
        let mut second = Driver::connect(&addr, Options::default()).await.unwrap();
        let err = second.wait_verdict().await.unwrap_err().to_string();
        assert!(err.contains("server_full"), "{err}");
        first.close().await;
    });
}

#[test]
fn sigterm_with_clients_still_registered_exits_cleanly() {
    let mut server = Server::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut driver = rt.block_on(async {
        let mut d = Driver::connect(&server.addr.to_string(), Options::default())
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
