//! Helpers for Pinhole's end-to-end tests: find and start the workspace's real binaries.
//!
//! The binaries are built by `cargo build --workspace --bins` (the test command does it before
//! `cargo test`); tests find them next to their own executable, in the same profile directory.

use std::path::PathBuf;
use std::process::Command;

pub mod netns;
pub mod prereq;
pub mod stun_client;

/// Path of a binary of this workspace, built in the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe>  ->  target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
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

/// A `pinhole-rendezvous` server started for one test, killed when dropped.
#[derive(Debug)]
pub struct Rendezvous {
    child: std::process::Child,
    /// The address it listens on (UDP and TCP), as it logged it.
    pub addr: std::net::SocketAddr,
}

impl Rendezvous {
    /// Starts the server on `listen` (port 0 picks a free one) and waits, at most 10 s, for
    /// its "listening" log line.
    pub fn start(listen: &str) -> Self {
        Self::start_command(command("pinhole-rendezvous"), listen)
    }

    /// Like [`Rendezvous::start`] inside a lab namespace (`ip netns exec`).
    pub fn start_in(lab: &netns::Lab, ns: &netns::Ns, listen: &str) -> Self {
        Self::start_command(lab.command(ns, binary("pinhole-rendezvous")), listen)
    }

    /// Starts `cmd` (a `pinhole-rendezvous` command, perhaps wrapped) with `--listen listen`.
    pub fn start_command(mut cmd: Command, listen: &str) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .args(["--listen", listen])
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start pinhole-rendezvous");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("udp=").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(std::time::Duration::from_secs(10)) else {
            let _ = child.kill();
            panic!("pinhole-rendezvous did not log that it listens within 10 s");
        };
        let addr = addr.parse().expect("logged address parses");
        Self { child, addr }
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the server to exit by itself.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// coturn's `turnserver`, STUN only, on a free loopback port, killed by PID when dropped.
/// `None` (after printing why) when coturn is not installed.
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
            eprintln!(
                "SKIP: coturn's turnserver is not installed (scripts/packages/nat-tests.txt)"
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

/// A headless `pinhole call` or `pinhole answer` process, its stderr (the log) followed on a
/// thread and its stdout (the JSON lines) collected; killed by PID when dropped.
#[derive(Debug)]
pub struct Headless {
    child: Option<std::process::Child>,
    log_rx: std::sync::mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
    /// Every log line read so far.
    pub log: Vec<String>,
}

/// What a finished [`Headless`] process left.
#[derive(Debug)]
pub struct HeadlessOutput {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Its stdout (one JSON line per call with `--json`).
    pub stdout: String,
    /// Its whole log (stderr).
    pub log: Vec<String>,
    /// How long [`Headless::finish`] waited for it.
    pub waited: std::time::Duration,
}

impl HeadlessOutput {
    /// The JSON lines on stdout.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// The one JSON line (panics, with the log, when there is not exactly one).
    pub fn one_json(&self) -> serde_json::Value {
        let lines = self.json();
        assert_eq!(lines.len(), 1, "expected one JSON line: {self:#?}");
        lines.into_iter().next().expect("one line")
    }

    /// The last log line (where the reason of a failure is).
    pub fn last_log(&self) -> &str {
        self.log.last().map(String::as_str).unwrap_or_default()
    }
}

impl Headless {
    /// Starts `cmd` (a `pinhole` command, perhaps inside a namespace, with its arguments),
    /// logging at info.
    pub fn spawn(mut cmd: Command) -> Self {
        use std::io::{BufRead, BufReader, Read};
        let mut child = cmd
            .env("RUST_LOG", "warn,pinhole=info")
            .env_remove("PINHOLE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start pinhole");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, log_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        Self {
            child: Some(child),
            log_rx,
            stdout: Some(stdout),
            log: Vec::new(),
        }
    }

    /// Waits up to `timeout` for a log line containing `needle`; true when it came.
    pub fn wait_log(&mut self, needle: &str, timeout: std::time::Duration) -> bool {
        if self.log.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match self
                .log_rx
                .recv_timeout(left.min(std::time::Duration::from_millis(100)))
            {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line);
                    if found {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Waits up to `timeout` for a log line containing `needle` among the lines from index
    /// `from` of [`Headless::log`] on (lines logged after a point); true when it came.
    pub fn wait_log_after(
        &mut self,
        needle: &str,
        from: usize,
        timeout: std::time::Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.log.iter().skip(from).any(|l| l.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match self
                .log_rx
                .recv_timeout(left.min(std::time::Duration::from_millis(100)))
            {
                Ok(line) => self.log.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Like [`Headless::wait_log`] but panics, with the log, when the line does not come.
    pub fn expect_log(&mut self, needle: &str, timeout: std::time::Duration) {
        if !self.wait_log(needle, timeout) {
            panic!(
                "never logged {needle:?} within {timeout:?}: {:#?}",
                self.log
            );
        }
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit; kills it and panics (with its log) if
    /// it does not.
    pub fn finish(mut self, timeout: std::time::Duration) -> HeadlessOutput {
        let start = std::time::Instant::now();
        let mut child = self.child.take().expect("not finished yet");
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.drain();
                panic!("still running after {timeout:?}: {:#?}", self.log);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let waited = start.elapsed();
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        self.drain();
        HeadlessOutput {
            status,
            stdout,
            log: std::mem::take(&mut self.log),
            waited,
        }
    }

    /// Reads the rest of the log (the reader thread ends when the process's stderr closes).
    fn drain(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            match self
                .log_rx
                .recv_timeout(std::time::Duration::from_millis(50))
            {
                Ok(line) => self.log.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

impl Drop for Headless {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Arguments of `pinhole answer` (one call unless `calls` says otherwise is up to the caller).
pub fn answer_args(
    config: &std::path::Path,
    server: &str,
    user: &str,
    input: &str,
    output: &str,
) -> Vec<String> {
    [
        "answer",
        "--config",
        &config.display().to_string(),
        "--server",
        server,
        "--user",
        user,
        "--input",
        input,
        "--output",
        output,
        "--json",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Arguments of `pinhole call PEER ... --duration SECS`.
pub fn call_args(
    config: &std::path::Path,
    server: &str,
    user: &str,
    peer: &str,
    input: &str,
    output: &str,
    secs: f64,
) -> Vec<String> {
    [
        "call",
        peer,
        "--config",
        &config.display().to_string(),
        "--server",
        server,
        "--user",
        user,
        "--input",
        input,
        "--output",
        output,
        "--duration",
        &secs.to_string(),
        "--json",
    ]
    .map(str::to_owned)
    .to_vec()
}
