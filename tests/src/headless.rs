//! The headless client in tests: [`Headless`] follows a running `pinhole` (its log and its
//! JSON lines), [`Party`] is one side of a test call (name, config, what it sends and where it
//! records what it hears).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::{Place, TempDir, tone, unique_name};

/// How long `pinhole answer` may take to say it registered.
pub const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// A running process (a headless `pinhole call` / `pinhole answer`, or the app), its stderr
/// (the log) and stdout (JSON lines) followed on threads; killed by PID when dropped.
#[derive(Debug)]
pub struct Headless {
    child: Option<Child>,
    log_rx: Receiver<String>,
    out_rx: Receiver<String>,
    /// Every log line read so far.
    pub log: Vec<String>,
    /// Every stdout line read so far.
    pub stdout: Vec<String>,
    json_seen: usize,
}

/// What a finished [`Headless`] process left.
#[derive(Debug)]
pub struct HeadlessOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (one JSON line per call with `--json`).
    pub stdout: String,
    /// Its whole log (stderr).
    pub log: Vec<String>,
    /// How long [`Headless::finish`] waited for it.
    pub waited: Duration,
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
        let mut lines = self.json();
        assert_eq!(lines.len(), 1, "expected one JSON line: {self:#?}");
        lines.remove(0)
    }

    /// The last log line (where the reason of a failure is).
    pub fn last_log(&self) -> &str {
        self.log.last().map(String::as_str).unwrap_or_default()
    }

    /// The log as one string, to search.
    pub fn log_text(&self) -> String {
        self.log.join("\n")
    }
}

/// Reads `pipe` line by line on a thread into a channel.
fn follow(pipe: Option<impl std::io::Read + Send + 'static>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in pipe.into_iter().flat_map(|p| BufReader::new(p).lines()) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Headless {
    /// Starts `cmd` (a `pinhole` command with its arguments), logging at info (or as
    /// `$PINHOLE_TEST_CHILD_LOG` says, a `RUST_LOG` filter: `media::voice::session=debug`
    /// logs every frame the jitter buffer did not simply play), without the user's
    /// `PINHOLE_CONFIG`.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.env(
            "RUST_LOG",
            std::env::var("PINHOLE_TEST_CHILD_LOG").unwrap_or("warn,pinhole=info".into()),
        )
        .env_remove("PINHOLE_CONFIG");
        Self::spawn_as_is(cmd)
    }

    /// Starts `cmd` with the environment it has (the app, say, with its own `RUST_LOG`).
    pub fn spawn_as_is(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log_rx = follow(child.stderr.take());
        let out_rx = follow(child.stdout.take());
        Self {
            child: Some(child),
            log_rx,
            out_rx,
            log: Vec::new(),
            stdout: Vec::new(),
            json_seen: 0,
        }
    }

    /// Reads what came on both pipes, waiting at most `wait` for a log line; false once the
    /// log has closed.
    fn pump(&mut self, wait: Duration) -> bool {
        while let Ok(line) = self.out_rx.try_recv() {
            self.stdout.push(line);
        }
        match self.log_rx.recv_timeout(wait) {
            Ok(line) => {
                self.log.push(line);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait);
                false
            }
        }
    }

    /// Waits up to `timeout` for a log line containing `needle` among the lines from index
    /// `from` of [`Headless::log`] on; the line when it came.
    pub fn wait_line_after(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut open = true;
        loop {
            if let Some(line) = self.log.iter().skip(from).find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !open {
                return None;
            }
            open = self.pump(left.min(Duration::from_millis(100)));
        }
    }

    /// Waits up to `timeout` for a log line containing `needle`; true when it came.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> bool {
        self.wait_line_after(needle, 0, timeout).is_some()
    }

    /// Like [`Headless::wait_log`] for lines logged after index `from` of [`Headless::log`].
    pub fn wait_log_after(&mut self, needle: &str, from: usize, timeout: Duration) -> bool {
        self.wait_line_after(needle, from, timeout).is_some()
    }

    /// Like [`Headless::wait_log`] but panics, with the log, when the line does not come.
    pub fn expect_log(&mut self, needle: &str, timeout: Duration) {
        if !self.wait_log(needle, timeout) {
            panic!(
                "never logged {needle:?} within {timeout:?}: {:#?}",
                self.log
            );
        }
    }

    /// Waits up to `timeout` for the next JSON line on stdout (one per finished call).
    pub fn wait_json(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines: Vec<&String> = self
                .stdout
                .iter()
                .filter(|l| !l.trim().is_empty())
                .collect();
            if let Some(line) = lines.get(self.json_seen) {
                self.json_seen += 1;
                return Some(
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")),
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self
                .out_rx
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The process id, to signal it (0 once finished).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM (what Ctrl-C or a service manager does).
    pub fn terminate(&self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
    }

    /// Kills the process at once (SIGKILL: it says goodbye to nobody).
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit; kills it and panics (with its log) if
    /// it does not.
    pub fn finish(mut self, timeout: Duration) -> HeadlessOutput {
        let start = Instant::now();
        let Some(mut child) = self.child.take() else {
            panic!("finished twice");
        };
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.drain();
                panic!("still running after {timeout:?}: {:#?}", self.log);
            }
            self.pump(Duration::from_millis(20));
        };
        let waited = start.elapsed();
        self.drain();
        HeadlessOutput {
            status,
            stdout: self.stdout.iter().map(|l| format!("{l}\n")).collect(),
            log: std::mem::take(&mut self.log),
            waited,
        }
    }

    /// Reads the rest of both pipes (their threads end when the process's pipes close).
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.pump(Duration::from_millis(50)) {}
        while let Ok(line) = self.out_rx.recv_timeout(Duration::from_millis(200)) {
            self.stdout.push(line);
        }
    }
}

impl Drop for Headless {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` to `pid` (a process the test started).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid}"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

/// One side of a test call: a name, a config file (its key), what it sends and where what it
/// hears goes.
#[derive(Debug, Clone)]
pub struct Party {
    /// The name it registers.
    pub name: String,
    /// Its settings file (the identity key is created there on first use).
    pub config: PathBuf,
    /// `--input` (`tone:HZ`, `silence`...).
    pub input: String,
    /// `--output` (`wav:PATH`, `null`...).
    pub output: String,
    /// The tone it sends, if it sends one.
    pub hz: Option<f64>,
    /// The WAV it records, if it records.
    pub wav: Option<PathBuf>,
}

impl Party {
    /// A party named after `tag` (made unique) that sends `hz` and records into a WAV in `dir`.
    pub fn tone(dir: &TempDir, tag: &str, hz: f64) -> Self {
        let wav = dir.join(&format!("{tag}.wav"));
        Self {
            name: unique_name(tag),
            config: dir.join(&format!("{tag}.toml")),
            input: format!("tone:{hz}"),
            output: format!("wav:{}", wav.display()),
            hz: Some(hz),
            wav: Some(wav),
        }
    }

    /// A party that sends silence and plays nothing.
    pub fn silent(dir: &TempDir, tag: &str) -> Self {
        Self {
            name: unique_name(tag),
            config: dir.join(&format!("{tag}.toml")),
            input: "silence".into(),
            output: "null".into(),
            hz: None,
            wav: None,
        }
    }

    /// The flags `call` and `answer` share, against `server`.
    fn common_args(&self, server: &str) -> Vec<String> {
        let config = self.config.display().to_string();
        [
            "--config",
            &config,
            "--server",
            server,
            "--user",
            &self.name,
            "--input",
            &self.input,
            "--output",
            &self.output,
            "--json",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Arguments of `pinhole answer` (until interrupted; add `--calls N` to stop).
    pub fn answer_args(&self, server: &str) -> Vec<String> {
        let mut args = vec!["answer".to_owned()];
        args.extend(self.common_args(server));
        args
    }

    /// Arguments of `pinhole call PEER ... --duration SECS`.
    pub fn call_args(&self, server: &str, peer: &str, secs: f64) -> Vec<String> {
        let mut args = vec!["call".to_owned(), peer.to_owned()];
        args.extend(self.common_args(server));
        args.extend(["--duration".to_owned(), secs.to_string()]);
        args
    }

    /// Starts `pinhole answer` at `place` with `extra` flags and waits until it registered.
    pub fn answer(&self, place: Place<'_>, server: &str, extra: &[&str]) -> Headless {
        let mut cmd = place.command("pinhole");
        cmd.args(self.answer_args(server)).args(extra);
        let mut answer = Headless::spawn(cmd);
        answer.expect_log("headless: registered", REGISTER_WAIT);
        // The router's answer about a port mapping (at once where none is asked for): a call
        // placed from now on gets the mapped candidate.
        answer.expect_log("headless: port mapping settled", REGISTER_WAIT);
        answer
    }

    /// Starts `pinhole call PEER` at `place`, to talk `secs` once connected.
    pub fn call(&self, place: Place<'_>, server: &str, peer: &str, secs: f64) -> Headless {
        let mut cmd = place.command("pinhole");
        cmd.args(self.call_args(server, peer, secs));
        Headless::spawn(cmd)
    }

    /// The fraction of the 100 ms windows of its WAV, after the first half second, that carry
    /// `other`'s tone.
    pub fn hears(&self, other: &Party) -> f64 {
        tone::fraction(self.wav_path(), other.tone_hz(), 0.5)
    }

    /// Like [`Party::hears`] over the last `secs` of its WAV.
    pub fn hears_at_end(&self, other: &Party, secs: f64) -> f64 {
        tone::fraction(self.wav_path(), other.tone_hz(), -secs)
    }

    /// Prints both WAVs' timelines and checks that each side heard the other's tone in at
    /// least `least` of the call and in 0.8 of its last 3 s.
    pub fn check_heard_each_other(caller: &Party, callee: &Party, least: f64) {
        eprintln!("caller's WAV: {}", caller.timeline(callee));
        eprintln!("callee's WAV: {}", callee.timeline(caller));
        let (caller_hears, callee_hears) = (caller.hears(callee), callee.hears(caller));
        eprintln!(
            "caller hears the callee in {caller_hears:.2}, callee the caller in {callee_hears:.2}"
        );
        assert!(
            caller_hears >= least,
            "caller hears the callee in {caller_hears:.2}"
        );
        assert!(
            callee_hears >= least,
            "callee hears the caller in {callee_hears:.2}"
        );
        let caller_end = caller.hears_at_end(callee, 3.0);
        let callee_end = callee.hears_at_end(caller, 3.0);
        assert!(
            caller_end >= 0.8 && callee_end >= 0.8,
            "the tones over the call's last 3 s: caller {caller_end:.2}, callee {callee_end:.2}"
        );
    }

    /// One character per 100 ms window of its WAV: `#` where `other`'s tone is (for output).
    pub fn timeline(&self, other: &Party) -> String {
        tone::timeline(self.wav_path(), other.tone_hz())
    }

    fn wav_path(&self) -> &Path {
        self.wav
            .as_deref()
            .unwrap_or_else(|| panic!("{} records no WAV", self.name))
    }

    fn tone_hz(&self) -> f64 {
        self.hz
            .unwrap_or_else(|| panic!("{} sends no tone", self.name))
    }
}
