//! [`Rendezvous`]: the one way tests start the real `pinhole-rendezvous`, on loopback or inside
//! a lab namespace, and know when it is ready from its ready line (see the binary's docs).
//!
//! Each server gets a fresh temporary `--state-dir` (its certificate and names; removed when it
//! is dropped) unless the test gives one, so nothing leaks between tests; a restart keeps it.
//! Clients pin [`Rendezvous::fingerprint`], the certificate's fingerprint from the ready line.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use traversal::tls::{ClientTrust, Fingerprint};

use crate::{Place, netns};

/// Longest wait for the ready line.
const READY_WAIT: Duration = Duration::from_secs(10);

/// A `pinhole-rendezvous` server started for one test, killed (by PID) when dropped.
#[derive(Debug)]
pub struct Rendezvous {
    child: Option<Child>,
    /// What started it, without `--listen`: [`Rendezvous::restart`] runs it again.
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    log: Arc<Mutex<Vec<String>>>,
    /// The address it listens on, UDP and TCP (from its ready line).
    pub addr: SocketAddr,
    /// Its second UDP port, which answers filtering probes (from its ready line).
    pub alternate: SocketAddr,
    /// Its certificate's fingerprint (from its ready line).
    fingerprint: Option<Fingerprint>,
    /// The temporary state directory made for it, removed when it is dropped.
    temp_state: Option<PathBuf>,
}

/// What the ready line says.
struct Ready {
    udp: SocketAddr,
    tcp: SocketAddr,
    alternate: SocketAddr,
    fingerprint: Fingerprint,
}

/// A fresh, empty directory under the system's temporary directory.
fn temp_state_dir() -> PathBuf {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pinhole-rendezvous-state-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Rendezvous {
    /// Starts the server on `listen` (port 0 picks a free one) on this machine and waits, at
    /// most 10 s, for its ready line.
    pub fn start(listen: &str) -> Self {
        Self::start_at(Place::Local, listen, &[])
    }

    /// Like [`Rendezvous::start`] inside a lab namespace (`ip netns exec`).
    pub fn start_in(lab: &netns::Lab, ns: &netns::Ns, listen: &str) -> Self {
        Self::start_at(Place::In(lab, ns), listen, &[])
    }

    /// Starts the server at `place` with more flags (`--names-file`, `--allow-private-targets`).
    pub fn start_at(place: Place<'_>, listen: &str, flags: &[&str]) -> Self {
        let mut cmd = place.command("pinhole-rendezvous");
        cmd.args(flags);
        Self::start_command(cmd, listen)
    }

    /// Starts `cmd` (a `pinhole-rendezvous` command, perhaps wrapped: `taskset`, `ip netns
    /// exec`) with `--listen listen`, and a fresh temporary `--state-dir` unless `cmd` has one.
    /// Panics, with the server's log, when no ready line comes.
    pub fn start_command(cmd: Command, listen: &str) -> Self {
        let mut args: Vec<OsString> = cmd.get_args().map(ToOwned::to_owned).collect();
        let temp_state = if args.iter().any(|a| a == "--state-dir") {
            None
        } else {
            let dir = temp_state_dir();
            args.push("--state-dir".into());
            args.push(dir.clone().into());
            Some(dir)
        };
        let mut server = Self {
            child: None,
            program: cmd.get_program().to_owned(),
            args,
            envs: cmd
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
            log: Arc::default(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            alternate: SocketAddr::from(([0, 0, 0, 0], 0)),
            fingerprint: None,
            temp_state,
        };
        if let Err(why) = server.launch(listen) {
            panic!("pinhole-rendezvous: {why}; its log: {:#?}", server.log());
        }
        server
    }

    /// Spawns the stored command on `listen` and waits for its ready line.
    fn launch(&mut self, listen: &str) -> Result<(), String> {
        let mut cmd = Command::new(&self.program);
        // Logging at info unless the command says otherwise (its own RUST_LOG wins).
        cmd.args(&self.args)
            .args(["--listen", listen])
            .env("RUST_LOG", "info");
        for (key, value) in &self.envs {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        self.child = Some(child);
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in stderr.into_iter().flat_map(|e| BufReader::new(e).lines()) {
                let Ok(line) = line else { break };
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.into_iter().flat_map(|o| BufReader::new(o).lines()) {
                let Ok(line) = line else { break };
                if let Some(ready) = parse_ready(&line) {
                    let _ = tx.send(ready);
                }
            }
        });
        let ready = match rx.recv_timeout(READY_WAIT) {
            Ok(ready) => ready,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.kill();
                return Err(format!("no ready line within {READY_WAIT:?}"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.as_mut().and_then(|c| c.wait().ok());
                self.child = None;
                return Err(format!("exited ({status:?}) before its ready line"));
            }
        };
        if ready.udp != ready.tcp {
            return Err(format!("UDP {} and TCP {} differ", ready.udp, ready.tcp));
        }
        self.addr = ready.udp;
        self.alternate = ready.alternate;
        self.fingerprint = Some(ready.fingerprint);
        Ok(())
    }

    /// The fingerprint of the certificate it serves TLS with (from its ready line).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
            .unwrap_or_else(|| panic!("pinhole-rendezvous gave no fingerprint"))
    }

    /// A client trust that accepts only this server's certificate.
    pub fn trust(&self) -> ClientTrust {
        ClientTrust {
            pinned: Some(self.fingerprint()),
            known_servers: None,
        }
    }

    /// The process id, to signal it (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the server (SIGKILL, no goodbye to anyone) and reaps it; [`Rendezvous::addr`] is
    /// kept for [`Rendezvous::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts the same command again on the same address
    /// (retrying for a few seconds while the old sockets are released).
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let deadline = Instant::now() + READY_WAIT;
        loop {
            match self.launch(&listen) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    panic!(
                        "pinhole-rendezvous again on {listen}: {why}; log: {:#?}",
                        self.log()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits up to `timeout` for the server to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Asks the server to stop (SIGTERM) and waits up to 5 s for it to exit; panics, with its
    /// log, when it does not.
    pub fn terminate(&mut self) -> ExitStatus {
        crate::signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM; log: {:#?}", self.log()))
    }

    /// Its log (stderr) so far, across restarts.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.temp_state.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The addresses of a ready line, `None` for any other line.
fn parse_ready(line: &str) -> Option<Ready> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    if json["event"] != "ready" {
        return None;
    }
    let addr = |key: &str| json[key].as_str()?.parse::<SocketAddr>().ok();
    Some(Ready {
        udp: addr("udp")?,
        tcp: addr("tcp")?,
        alternate: addr("alternate")?,
        fingerprint: json["fingerprint"].as_str()?.parse().ok()?,
    })
}
