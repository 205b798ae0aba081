//! `pinhole-rendezvous` as an operator runs it: `--version`, `--help`, the settings from flags,
//! environment and config file (each step of the precedence, and the errors), the log formats
//! and the stop on SIGTERM. Each test runs the built binary on loopback with a fresh state
//! directory and reads its ready line (stdout) and log (stderr).
//!
//! Which setting won is read from what the server does: the address in its ready line (the
//! three sources name three different loopback addresses, 127.0.0.1/2/3), or its `settings:`
//! log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pinhole_tests::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_pinhole-rendezvous");

/// The longest wait for a ready line or an exit.
const WAIT: Duration = Duration::from_secs(10);

/// The server's command with nothing inherited that could choose a setting: no
/// `PINHOLE_RENDEZVOUS_*` or `JOURNAL_STREAM` from the test's own environment, `RUST_LOG=info`.
fn command(dir: &TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PINHOLE_RENDEZVOUS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY")
        .env("RUST_LOG", "info")
        .current_dir(&dir.path)
        .stdin(Stdio::null());
    cmd
}

/// A server started for one test: its ready line and its log so far; killed when dropped.
struct Running {
    child: Child,
    ready: serde_json::Value,
    log: mpsc::Receiver<String>,
    /// The log lines read from `log` so far.
    seen: Vec<String>,
}

impl Running {
    /// Starts `cmd` and waits for its ready line; panics with its log when none comes.
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BIN}: {e}"));
        let (log_tx, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ready_tx.send(line);
            }
        });
        let mut running = Running {
            child,
            ready: serde_json::Value::Null,
            log,
            seen: Vec::new(),
        };
        match ready_rx.recv_timeout(WAIT) {
            Ok(line) => {
                running.ready = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
                assert_eq!(running.ready["event"], "ready", "{line}");
            }
            Err(_) => panic!("no ready line; log: {:#?}", running.drain_log()),
        }
        running
    }

    /// Where it listens, from the ready line.
    fn udp(&self) -> std::net::SocketAddr {
        let udp = self.ready["udp"].as_str().expect("udp in the ready line");
        udp.parse().unwrap_or_else(|e| panic!("{udp}: {e}"))
    }

    /// The log lines written so far.
    fn drain_log(&mut self) -> Vec<String> {
        self.seen.extend(self.log.try_iter());
        self.seen.clone()
    }

    /// Waits for a log line containing `text` (after those already returned); the whole log
    /// up to it, that line last.
    fn wait_log(&mut self, text: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return self.seen.clone();
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no log line with {text:?}; log: {:#?}", self.seen);
    }

    /// The `settings:` log line.
    fn settings_line(&mut self) -> String {
        self.wait_log("settings: ").pop().expect("a line")
    }

    /// Sends `signal` (`TERM`, `INT`) to the server, by its PID.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits (at most [`WAIT`]) for it to exit; its status code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running after {WAIT:?}; log: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end (settings errors, `--check-config`, `--help`).
fn run_to_end(mut cmd: Command) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"));
    assert!(
        output.status.code().is_some(),
        "killed by a signal: {output:?}"
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `line` holds an RFC 3339 time (`2026-12-03T16:21:51`).
fn has_timestamp(line: &str) -> bool {
    line.as_bytes().windows(11).any(|w| {
        w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[7] == b'-' && w[10] == b'T'
    })
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn version_names_the_program() {
    let dir = TempDir::new("server-cli-version");
    let mut cmd = command(&dir);
    cmd.arg("--version");
    let out = run_to_end(cmd);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("pinhole-rendezvous {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_tells_an_operator_what_to_open_keep_and_publish() {
    let dir = TempDir::new("server-cli-help");
    let mut cmd = command(&dir);
    cmd.arg("--help");
    let long = text(&run_to_end(cmd).stdout);
    for needed in [
        "call each other by name",
        "3478",
        "UDP",
        "TCP",
        "second UDP port",
        "needs no inbound rule",
        "state directory",
        "cert.pem",
        "names.txt",
        "fingerprint",
        "PINHOLE_RENDEZVOUS_MAX_REGISTRATIONS",
        "--config",
        "relative to the file's directory",
        "--check-config",
        "/metrics",
        "SIGTERM",
        "A second signal exits at once",
        "--shutdown-grace",
        "journalctl",
        "READY LINE",
        "EXIT STATUS",
    ] {
        assert!(long.contains(needed), "--help lacks {needed:?}:\n{long}");
    }
    for banned in ["patent", "sans-IO", "sans-io"] {
        assert!(!long.contains(banned), "--help says {banned:?}");
    }
    let mut cmd = command(&dir);
    cmd.arg("-h");
    let short = text(&run_to_end(cmd).stdout);
    assert!(
        short.contains("--listen") && short.contains("3478"),
        "{short}"
    );
    assert!(
        short.len() * 2 < long.len(),
        "-h ({} bytes) should be the summary of --help ({} bytes)",
        short.len(),
        long.len()
    );
}

/// Default < file < environment < flag, for `listen` (seen in the ready line) and `batch` (seen
/// in the settings line), each step on its own.
#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let dir = TempDir::new("server-cli-precedence");
    let config = dir.join("rendezvous.toml");
    write(
        &config,
        "# the file's choices\nlisten = \"127.0.0.1:0\"\nbatch = 4\nstate_dir = \"state\"\n",
    );

    // The defaults: --check-config says so (0.0.0.0:3478 may be taken on a test machine).
    let mut cmd = command(&dir);
    cmd.args(["--check-config", "--state-dir", "s"]);
    let out = run_to_end(cmd);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("listen = \"0.0.0.0:3478\"") && shown.contains("batch = 32"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("listen =") && l.ends_with("# default"))
    );

    // Starts the server with the file and these flags and variables: the address it listens
    // on and its settings line.
    let start = |flags: &[&str], env: &[(&str, &str)]| {
        let mut cmd = command(&dir);
        cmd.arg("--config")
            .arg(&config)
            .args(flags)
            .envs(env.iter().copied());
        let mut server = Running::start(cmd);
        (server.udp().ip().to_string(), server.settings_line())
    };
    let env = [
        ("PINHOLE_RENDEZVOUS_LISTEN", "127.0.0.2:0"),
        ("PINHOLE_RENDEZVOUS_BATCH", "5"),
    ];
    // The file over the defaults; the environment over the file; the flag over both.
    for (flags, env, ip, batch) in [
        (&[][..], &[][..], "127.0.0.1", " batch=4 "),
        (&[], &env[..], "127.0.0.2", " batch=5 "),
        (
            &["--listen", "127.0.0.3:0", "--batch", "6"],
            &env[..],
            "127.0.0.3",
            " batch=6 ",
        ),
    ] {
        let (listening, settings) = start(flags, env);
        assert_eq!(listening, ip, "{settings}");
        assert!(settings.contains(batch), "{settings}");
    }

    // The config file itself may come from the environment.
    let mut cmd = command(&dir);
    cmd.env("PINHOLE_RENDEZVOUS_CONFIG", &config);
    let server = Running::start(cmd);
    assert_eq!(server.udp().ip().to_string(), "127.0.0.1");
}

/// A switch set in the file is turned off by the environment (`false`), not only turned on.
#[test]
fn the_environment_can_turn_off_a_switch_the_file_turns_on() {
    let dir = TempDir::new("server-cli-switch");
    let config = dir.join("rendezvous.toml");
    write(
        &config,
        "listen = \"127.0.0.1:0\"\nephemeral_names = true\nstate_dir = \"state\"\n",
    );
    let mut cmd = command(&dir);
    cmd.arg("--config").arg(&config);
    let mut server = Running::start(cmd);
    let log = server.wait_log("listening");
    assert!(
        log.iter().any(|l| l.contains("names in memory only")),
        "{log:#?}"
    );
    drop(server);

    let mut cmd = command(&dir);
    cmd.arg("--config")
        .arg(&config)
        .env("PINHOLE_RENDEZVOUS_EPHEMERAL_NAMES", "false");
    let mut server = Running::start(cmd);
    let log = server.wait_log("names file");
    let expected = dir.join("state").join("names.txt");
    assert!(
        log.last()
            .is_some_and(|l| l.contains(&expected.display().to_string())),
        "{log:#?}"
    );
}

/// Relative paths in the file are relative to the file's directory, whatever the working
/// directory; on the command line, to the working directory.
#[test]
fn paths_in_the_file_are_relative_to_it() {
    let dir = TempDir::new("server-cli-paths");
    let etc = dir.join("etc");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let config = etc.join("rendezvous.toml");
    write(&config, "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n");
    let mut cmd = command(&dir);
    cmd.current_dir(&elsewhere).arg("--config").arg(&config);
    let server = Running::start(cmd);
    assert!(etc.join("state/cert.pem").exists(), "no etc/state/cert.pem");
    assert!(!elsewhere.join("state").exists());
    drop(server);

    let mut cmd = command(&dir);
    cmd.current_dir(&elsewhere)
        .arg("--config")
        .arg(&config)
        .args(["--state-dir", "flagstate"]);
    let _server = Running::start(cmd);
    assert!(elsewhere.join("flagstate/cert.pem").exists());
}

/// One bad setting: the file's text, environment variables, flags, the start of stderr.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], String);

/// Bad settings, wherever they are written, stop the server with status 2 and a message that
/// says where (file and line, or variable) and what is wrong, before anything listens.
#[test]
fn bad_settings_say_where_and_what() {
    let dir = TempDir::new("server-cli-errors");
    let config = dir.join("rendezvous.toml");
    let shown = config.display().to_string();
    let cases: &[Case] = &[
        (
            "listen = \"127.0.0.1:0\"\n\nlistn = \"x\"\n",
            &[],
            &[],
            format!(
                "pinhole-rendezvous: {shown} line 3: unknown key `listn`; known keys: listen, \
                 max_registrations, idle_timeout, max_connections_per_address, batch, \
                 udp_threads, names_file, ephemeral_names, state_dir, cert, key, metrics, \
                 cluster, advertise, shutdown_grace, log_format, allow_private_targets, no_limits\n"
            ),
        ),
        (
            "batch = 65\n",
            &[],
            &[],
            format!(
                "pinhole-rendezvous: {shown} line 1: `batch`: `65` is not a whole number of \
                 datagrams from 1 to 64\n"
            ),
        ),
        (
            "udp_threads = 65\n",
            &[],
            &[],
            format!(
                "pinhole-rendezvous: {shown} line 1: `udp_threads`: `65` is not a whole number \
                 of threads from 1 to 64\n"
            ),
        ),
        (
            "",
            &[],
            &["--udp-threads", "0"],
            "error: invalid value '0' for '--udp-threads <N>': `0` is not a whole number of \
             threads from 1 to 64"
                .to_string(),
        ),
        (
            "",
            &[],
            &["--udp-threads=65"],
            "error: invalid value '65' for '--udp-threads <N>': `65` is not a whole number of \
             threads from 1 to 64"
                .to_string(),
        ),
        (
            "",
            &[("PINHOLE_RENDEZVOUS_UDP_THREADS", "0")],
            &[],
            "pinhole-rendezvous: environment variable PINHOLE_RENDEZVOUS_UDP_THREADS: `0` is not \
             a whole number of threads from 1 to 64\n"
                .to_string(),
        ),
        (
            "idle_timeout = \"180\"\n",
            &[],
            &[],
            format!(
                "pinhole-rendezvous: {shown} line 1: `idle_timeout` must be a whole number \
                 without quotes (idle_timeout = 10), not a string\n"
            ),
        ),
        (
            "listen = \"localhost:3478\"\n",
            &[],
            &[],
            format!(
                "pinhole-rendezvous: {shown} line 1: `listen`: `localhost:3478` is not an IP \
                 address with a port: write 0.0.0.0:3478, [::]:3478 or 192.0.2.7:3478 (host \
                 names are not taken)\n"
            ),
        ),
        (
            "listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:1\"\n",
            &[],
            &[],
            format!("pinhole-rendezvous: {shown} line 2: not valid TOML"),
        ),
        (
            "",
            &[("PINHOLE_RENDEZVOUS_BATCH", "lots")],
            &[],
            "pinhole-rendezvous: environment variable PINHOLE_RENDEZVOUS_BATCH: `lots` is not a \
             whole number of datagrams from 1 to 64\n"
                .to_string(),
        ),
        (
            "",
            &[("PINHOLE_RENDEZVOUS_LOG_FORMAT", "xml")],
            &[],
            "pinhole-rendezvous: environment variable PINHOLE_RENDEZVOUS_LOG_FORMAT: `xml` is \
             not a log format: write auto, text, journald or json\n"
                .to_string(),
        ),
        (
            "",
            &[],
            &["--shutdown-grace=-1"],
            "error: invalid value '-1' for '--shutdown-grace <SECS>': `-1` is not a whole \
             number of seconds from 0 to 3600"
                .to_string(),
        ),
        (
            "names_file = \"names.txt\"\n",
            &[("PINHOLE_RENDEZVOUS_EPHEMERAL_NAMES", "true")],
            &[],
            format!(
                "pinhole-rendezvous: names_file (from {shown} line 1) and ephemeral_names (from \
                 PINHOLE_RENDEZVOUS_EPHEMERAL_NAMES) contradict each other"
            ),
        ),
        (
            "cert = \"cert.pem\"\n",
            &[],
            &[],
            format!("pinhole-rendezvous: cert (from {shown} line 1) needs key too"),
        ),
    ];
    for (file, envs, flags, expected) in cases {
        write(&config, file);
        let mut cmd = command(&dir);
        cmd.arg("--config").arg(&config).args(*flags);
        for (key, value) in *envs {
            cmd.env(key, value);
        }
        let out = run_to_end(cmd);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file:?} {envs:?}: {stderr}");
        assert!(
            stderr.starts_with(expected.as_str()),
            "{file:?} {envs:?} {flags:?}:\n got: {stderr}\nwant: {expected}"
        );
        assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    }

    let mut cmd = command(&dir);
    cmd.arg("--config").arg(dir.join("missing.toml"));
    let out = run_to_end(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "pinhole-rendezvous: config file {}: no such file\n",
            dir.join("missing.toml").display()
        )
    );
}

/// `--check-config`: the settings in effect with where each came from, exit 0; a certificate
/// that does not load, exit 2. It writes nothing.
#[test]
fn check_config_prints_the_settings_and_their_sources() {
    let dir = TempDir::new("server-cli-check");
    let config = dir.join("rendezvous.toml");
    write(
        &config,
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\nmetrics = \"127.0.0.1:9478\"\n",
    );
    let mut cmd = command(&dir);
    cmd.arg("--check-config")
        .arg("--config")
        .arg(&config)
        .arg("--batch=8")
        .env("PINHOLE_RENDEZVOUS_SHUTDOWN_GRACE", "5");
    let out = run_to_end(cmd);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    let source = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in {shown}"))
            .to_string()
    };
    let file = config.display().to_string();
    assert!(
        source("listen").ends_with(&format!("# {file} line 1")),
        "{shown}"
    );
    assert!(source("metrics").contains("\"127.0.0.1:9478\""), "{shown}");
    assert!(source("batch").ends_with("# --batch"), "{shown}");
    assert!(
        source("shutdown_grace").ends_with("# PINHOLE_RENDEZVOUS_SHUTDOWN_GRACE"),
        "{shown}"
    );
    assert!(source("idle_timeout").ends_with("# default"), "{shown}");
    // Not set: the cores this process may run on.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
    assert!(
        source("udp_threads").starts_with(&format!("udp_threads = {cores} "))
            && source("udp_threads").ends_with("# default"),
        "{shown}"
    );
    assert!(shown.contains("# the settings are good"), "{shown}");
    assert!(
        !dir.join("state").exists(),
        "--check-config made the state directory"
    );

    write(&dir.join("cert.pem"), "not a certificate\n");
    write(&dir.join("key.pem"), "not a key\n");
    let mut cmd = command(&dir);
    cmd.args(["--check-config", "--cert", "cert.pem", "--key", "key.pem"]);
    let out = run_to_end(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cert.pem") && stderr.contains("no certificate"),
        "{stderr}"
    );
}

/// Under systemd (`JOURNAL_STREAM` set) every log line starts with its sd-daemon priority, and
/// carries no time and no colour; `--log-format text` overrides it; `json` is one object per
/// line.
#[test]
fn log_formats() {
    let dir = TempDir::new("server-cli-logs");
    let mut cmd = command(&dir);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        "state",
        "--no-limits",
    ])
    .env("JOURNAL_STREAM", "8:12345");
    let mut server = Running::start(cmd);
    server.wait_log("alternate port");
    server.signal("TERM");
    assert_eq!(server.wait_exit(), Some(0));
    let log = server.wait_log("stopped");
    assert!(log.len() >= 5, "{log:#?}");
    for line in &log {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "no priority: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "colour in {line:?}");
        assert!(!has_timestamp(line), "a time in {line:?}");
    }
    assert!(
        log.iter().any(|l| l.starts_with("<6>settings: ")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("<6>TLS certificate fingerprint=sha256:"))
    );
    assert!(
        log.iter().any(|l| l.starts_with("<4>no_limits")),
        "{log:#?}"
    );

    let mut cmd = command(&dir);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        "state",
        "--log-format",
        "text",
    ])
    .env("JOURNAL_STREAM", "8:12345");
    let mut server = Running::start(cmd);
    let log = server.wait_log("settings: ");
    assert!(log.iter().all(|l| !l.starts_with('<')), "{log:#?}");
    assert!(log.iter().any(|l| l.contains(" INFO ")), "{log:#?}");
    drop(server);

    let mut cmd = command(&dir);
    cmd.args(["--listen", "127.0.0.1:0", "--state-dir", "state"])
        .env("PINHOLE_RENDEZVOUS_LOG_FORMAT", "json");
    let mut server = Running::start(cmd);
    let log = server.wait_log("TLS certificate");
    for line in &log {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
    let cert: serde_json::Value = serde_json::from_str(log.last().expect("a line")).expect("json");
    assert!(
        cert["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("sha256:")),
        "{cert}"
    );
}

/// SIGTERM: the graceful shutdown, exit 0. SIGINT the same. The ready line names the metrics
/// endpoint when it is on.
#[test]
fn a_stop_signal_ends_the_server_cleanly() {
    let dir = TempDir::new("server-cli-stop");
    for signal in ["TERM", "INT"] {
        let mut cmd = command(&dir);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            "state",
            "--metrics",
            "127.0.0.1:0",
            "--shutdown-grace",
            "3",
        ]);
        let mut server = Running::start(cmd);
        let metrics = server.ready["metrics"]
            .as_str()
            .unwrap_or_else(|| panic!("no metrics in {}", server.ready));
        let metrics: std::net::SocketAddr = metrics.parse().expect("metrics address");
        assert_eq!(metrics.ip().to_string(), "127.0.0.1");
        assert_ne!(metrics.port(), 0);
        server.wait_log("alternate port");
        server.signal(signal);
        assert_eq!(server.wait_exit(), Some(0), "SIG{signal}");
        let log = server.wait_log("stopped");
        assert!(
            log.iter()
                .any(|l| l.contains(&format!("SIG{signal}: shutting down")) && l.contains("3 s")),
            "{log:#?}"
        );
    }
}

/// The packaged /etc/pinhole/rendezvous.toml passes `--check-config` as shipped, and so does
/// every example key it leaves commented out (except the certificate's and the names file's,
/// whose files are the operator's), so the package and the parser cannot drift apart.
#[test]
fn the_packaged_config_file_is_good() {
    let packaged = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/rendezvous/rendezvous.toml"
    );
    let shipped =
        std::fs::read_to_string(packaged).unwrap_or_else(|e| panic!("reading {packaged}: {e}"));
    let dir = TempDir::new("server-cli-packaged");
    let every_key: String = shipped
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(example)
                if example.contains(" = ")
                    && example.split(' ').next().is_some_and(|key| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                            && !["cert", "key", "names_file"].contains(&key)
                    }) =>
            {
                example
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(every_key.contains("\nshutdown_grace = "), "{every_key}");
    for (name, contents) in [("shipped.toml", &shipped), ("every-key.toml", &every_key)] {
        let file = dir.join(name);
        write(&file, contents);
        let mut cmd = command(&dir);
        cmd.arg("--check-config")
            .arg("--config")
            .arg(&file)
            .args(["--state-dir", "state"]);
        let out = run_to_end(cmd);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}:\n{contents}\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let shown = text(&out.stdout);
        assert!(
            shown.contains("metrics = \"127.0.0.1:9478\""),
            "{name}: {shown}"
        );
    }
}

/// Alice and bob registered through the server's real port and in a call through its relay,
/// so that a graceful shutdown has a call to wait for (the in-process version is
/// `tests/shutdown.rs`'s).
struct RelayedCall {
    alice: pinhole_tests::scripted::Client,
    bob: pinhole_tests::scripted::Client,
}

impl RelayedCall {
    fn start(server: &Running) -> RelayedCall {
        use pinhole_tests::scripted::{Client, Target};
        use serde_json::json;
        let fingerprint = server.ready["fingerprint"]
            .as_str()
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no fingerprint in {}", server.ready));
        let target = Target {
            addr: server.udp(),
            fingerprint: Some(fingerprint),
        };
        let key = |seed| ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let mut alice = Client::connect(target).expect("alice connects");
        let mut bob = Client::connect(target).expect("bob connects");
        alice.register("alice", &key(1)).expect("alice registers");
        bob.register("bob", &key(2)).expect("bob registers");
        alice
            .send(&json!({"type": "call", "call_id": 1, "to": "bob",
                "candidates": [alice.mapped().expect("mapped")], "commitment": "ab".repeat(32)}))
            .expect("call");
        expect(&mut bob, "incoming");
        let e2e = json!({"ephemeral": "cd".repeat(32), "signature": "ef".repeat(64)});
        bob.send(&json!({"type": "accept", "call_id": 1, "candidates": [], "e2e": e2e}))
            .expect("accept");
        expect(&mut alice, "connected");
        expect(&mut bob, "connected");
        RelayedCall { alice, bob }
    }
}

fn expect(client: &mut pinhole_tests::scripted::Client, kind: &str) -> serde_json::Value {
    client
        .next_where(WAIT, |m| m["type"] == kind)
        .unwrap_or_else(|e| panic!("waiting for {kind}: {e}"))
}

/// With a call in progress, SIGTERM starts the graceful shutdown: the apps hear `going_away`
/// and the server waits for the call; `--shutdown-grace` bounds the wait (exit 0), and a second
/// signal ends it at once (exit 128 + the signal).
#[test]
fn the_grace_holds_a_call_and_a_second_signal_cuts_it_short() {
    let dir = TempDir::new("server-cli-grace");
    let start = |grace: &str| {
        let mut cmd = command(&dir);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            "state",
            "--ephemeral-names",
            "--shutdown-grace",
            grace,
        ]);
        Running::start(cmd)
    };

    // The grace passes with the call still up: exit 0, no sooner than the grace.
    let mut server = start("2");
    let mut call = RelayedCall::start(&server);
    let signalled = std::time::Instant::now();
    server.signal("TERM");
    expect(&mut call.alice, "going_away");
    expect(&mut call.bob, "going_away");
    assert_eq!(server.wait_exit(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // A second signal during a long grace: out at once.
    let mut server = start("60");
    let mut call = RelayedCall::start(&server);
    server.signal("TERM");
    expect(&mut call.alice, "going_away");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "stopped before the call ended or the grace passed"
    );
    let second = std::time::Instant::now();
    server.signal("INT");
    assert_eq!(server.wait_exit(), Some(130));
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    let log = server.wait_log("stopping now");
    assert!(
        log.iter().any(|l| l.contains("SIGTERM: shutting down")),
        "{log:#?}"
    );
}
