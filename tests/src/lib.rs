//! Pinhole's test kit for the real binaries: find and start them, on loopback and inside the
//! network namespaces of [`netns`].
//!
//! - [`Rendezvous`]: the one way tests start `pinhole-rendezvous` (it waits for the server's
//!   ready line and kills it on drop);
//! - [`Party`] and [`Headless`]: the two sides of a call through `pinhole call` / `pinhole
//!   answer`, their logs and JSON lines; [`tone`] reads what each recorded;
//! - [`scripted::Client`]: the raw control protocol, step by step, for states a real client
//!   does not reach on its own;
//! - [`hostile`]: an attacker's tools: spoofed UDP from a namespace, captures with a real
//!   `tcpdump` ([`pcap`] reads them), what a capture shows (TLS records, RTP payload entropy);
//! - [`Place`]: where a binary runs (this machine, or a lab namespace);
//! - [`prereq::missing`]: what a test does when root, a sound server, ffmpeg, tcpdump or coturn is
//!   missing.
//!
//! The binaries are built by `cargo build --workspace --bins` (the test command does it before
//! `cargo test`); tests find them next to their own executable, in the same profile directory.

use std::path::PathBuf;
use std::process::Command;

pub mod dbus;
mod headless;
pub mod hostile;
pub mod miniupnpd;
pub mod netns;
pub mod pcap;
pub mod prereq;
pub mod quality;
pub mod redis;
mod rendezvous;
pub mod scripted;
pub mod stun_client;
pub mod tone;

pub use headless::{Headless, HeadlessOutput, Party, REGISTER_WAIT, signal};
pub use rendezvous::Rendezvous;

/// Path of a binary of this workspace, built in the same profile as the running test (or
/// bench binary).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe> or target/<profile>/<bench-binary>
    let mut dir = exe.parent().expect("executable has a directory");
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A `Command` for a workspace binary.
pub fn command(name: &str) -> Command {
    Command::new(binary(name))
}

/// Where a test runs a binary: on this machine, or inside a namespace of a NAT lab.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// This machine's network (loopback).
    Local,
    /// A lab namespace (`ip netns exec`; the process is the program itself).
    In(&'a netns::Lab, &'a netns::Ns),
}

impl Place<'_> {
    /// A `Command` for the workspace binary `name` here.
    pub fn command(&self, name: &str) -> Command {
        match self {
            Place::Local => command(name),
            Place::In(lab, ns) => lab.command(ns, binary(name)),
        }
    }
}

/// coturn's `turnserver`, STUN only, on a free loopback port, killed by PID when dropped.
/// `None` when coturn is not installed (after [`prereq::missing`]: a failure under `./dev test`).
#[derive(Debug)]
pub struct Coturn {
    child: std::process::Child,
    dir: PathBuf,
    /// Where it answers STUN (UDP).
    pub addr: std::net::SocketAddr,
}

impl Coturn {
    /// Starts `turnserver` with a temporary config on a free port of 127.0.0.1 and waits, at
    /// most 10 s, until it answers a Binding Request.
    pub fn start() -> Option<Self> {
        let port = free_port();
        let server = Self::launch(Command::new("turnserver"), [127, 0, 0, 1].into(), port)?;
        stun_client::binding(
            "127.0.0.1:0".parse().expect("address"),
            server.addr,
            std::time::Duration::from_secs(10),
        )
        .expect("turnserver answers STUN within 10 s");
        Some(server)
    }

    /// Starts `turnserver` inside a lab namespace on `ip:port` and waits, at most 10 s, until
    /// it listens there.
    pub fn start_in(
        lab: &netns::Lab,
        ns: &netns::Ns,
        ip: std::net::Ipv4Addr,
        port: u16,
    ) -> Option<Self> {
        let server = Self::launch(lab.command(ns, "turnserver"), ip, port)?;
        lab.wait_udp_listen(ns, port, std::time::Duration::from_secs(10))
            .expect("turnserver listens within 10 s");
        Some(server)
    }

    fn launch(mut cmd: Command, ip: std::net::Ipv4Addr, port: u16) -> Option<Self> {
        if Command::new("turnserver").arg("--help").output().is_err() {
            prereq::missing(
                "coturn's turnserver is not installed (scripts/packages/nat-tests.txt)",
            );
            return None;
        }
        let addr = std::net::SocketAddr::from((ip, port));
        let dir =
            std::env::temp_dir().join(format!("pinhole-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("turnserver.conf");
        std::fs::write(
            &config,
            format!(
                "listening-ip={ip}\nlistening-port={port}\nstun-only\nno-cli\nno-tls\n\
                 no-dtls\nrelay-threads=1\nno-stdout-log\nlog-file={}\npidfile={}\n",
                dir.join("turnserver.log").display(),
                dir.join("turnserver.pid").display()
            ),
        )
        .expect("write turnserver.conf");
        let child = cmd
            .arg("-c")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start turnserver");
        Some(Self { child, dir, addr })
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port of 127.0.0.1 free for both UDP and TCP at the time of the call.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Runs `cmd` to completion, capturing its output, and kills it (by PID) if it runs longer
/// than `limit`: then the panic message carries what it printed.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = out_reader.join().unwrap_or_default();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "{cmd:?} ran longer than {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A temporary directory for one test (configs, WAVs), removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system's temp dir; `tag` is kept in its name.
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pinhole-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A unique call name for this process: `tag` plus the PID and a counter (names are at most
/// 32 characters of `[a-z0-9_-]`).
pub fn unique_name(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id())
}
