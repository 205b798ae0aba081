//! The README's "Calling between two machines", followed step by step as its reader types it,
//! with the real binaries in the network namespaces of `pinhole_tests::netns`:
//!
//! ```text
//!   server (198.51.100.2, the README's nftables ruleset)
//!      │
//!   internet ── alice's router (MASQUERADE) ── alice
//!            ├─ bob's router (MASQUERADE) ──── bob
//!            ├─ carol's router (MASQUERADE --random-fully, a "symmetric" NAT) ── carol
//!            └─ dave's router (MASQUERADE) ──── dave
//! ```
//!
//! 1. The operator starts `pinhole-rendezvous` with no flag (its state directory under its
//!    `$HOME`), opens TCP and UDP 3478 with the README's nftables ruleset (everything else
//!    inbound dropped), and reads the certificate's fingerprint from its log.
//! 2. Each person fills Settings (Server: the host without a port; Server certificate: the
//!    fingerprint; Your name): the settings file the app writes, in `~/.config/pinhole/`, or
//!    (carol, without a display) the README's three lines by hand.
//!    `pinhole nat-check` (no flag: it reads the settings) says behind NAT and reaches the
//!    server.
//! 3. Each calls `echo` and hears their own tone.
//! 4. alice answers; bob calls her: direct (two routers that keep one port per socket), audio
//!    both ways; carol calls her: direct by birthday probing (carol's router gives a new random
//!    port per destination: her 256 spare sockets against alice's probes), audio both ways. Or with an invite link: alice prints hers (`pinhole invite`), dave, who
//!    skipped step 2, calls it (`pinhole call LINK --user dave`): direct, audio both ways.
//! 5. When it does not work, `pinhole nat-check` says what the README's troubleshooting quotes:
//!    a mistyped fingerprint, UDP 3478 not opened ("no UDP answer"), TCP 3478 not opened ("no
//!    answer ... within"), the server not running ("nothing answers on that port"); with the whole
//!    ruleset back, it works again.
//!
//! The people's commands run as they would: `HOME` is their home directory (nothing names the
//! settings file), the working directory is that home (`--output wav:echo.wav` lands there),
//! and logging is the default. The server's lab addresses are documentation ranges, which the
//! README's plain `pinhole-rendezvous` treats as non-public: the clients here are all behind
//! NAT, so nothing it refuses is needed.
//!
//! Without root, network namespaces or nftables' `nft`, the test fails under `./dev test` and
//! skips by hand (`pinhole_tests::prereq`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use pinhole_tests::netns::{Host, Lab, NatKind};
use pinhole_tests::prereq::missing;
use pinhole_tests::{Headless, HeadlessOutput, REGISTER_WAIT, TempDir, binary, signal, tone};

/// The README's nftables ruleset for a server that runs nothing else (`/etc/nftables.conf`):
/// inbound, only SSH and the rendezvous port, TCP and UDP. Nothing for the alternate UDP port:
/// the server only sends from it.
const NFTABLES_CONF: &str = "\
flush ruleset

table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto { icmp, ipv6-icmp } accept
    tcp dport 22 accept
    tcp dport 3478 accept
    udp dport 3478 accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
  }
  chain output {
    type filter hook output priority filter; policy accept;
  }
}
";

/// The port the README's server listens on.
const PORT: u16 = 3478;

/// What a person's router does.
const ALICE_NAT: NatKind = NatKind::Masquerade;
const BOB_NAT: NatKind = NatKind::Masquerade;
const CAROL_NAT: NatKind = NatKind::RandomFully;
const DAVE_NAT: NatKind = NatKind::Masquerade;

/// `pinhole-rendezvous` as its operator runs it: in the foreground, log on stderr.
struct Server {
    child: Child,
    /// Its log so far (stderr lines), filled by a thread.
    log: Receiver<String>,
    lines: Vec<String>,
    /// The ready line on stdout.
    ready: serde_json::Value,
}

impl Server {
    /// `pinhole-rendezvous`, no flag, on `host`, with `$HOME` in `home` (so its state
    /// directory is `home/.local/state/pinhole-rendezvous`, as the README says).
    fn start(lab: &mut Lab, host: &Host, home: &Path) -> Self {
        let mut cmd = lab.command(&host.ns, binary("pinhole-rendezvous"));
        cmd.current_dir(home)
            .env("HOME", home)
            .env_remove("XDG_STATE_HOME")
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The server's own environment settings (PINHOLE_RENDEZVOUS_*) are the operator's
        // choice, not this machine's.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PINHOLE_RENDEZVOUS_") {
                cmd.env_remove(key);
            }
        }
        let mut child = lab.spawn(&mut cmd).expect("start pinhole-rendezvous");
        let (log_tx, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if log_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = ready_tx.send(line);
            }
        });
        let mut server = Self {
            child,
            log,
            lines: Vec::new(),
            ready: serde_json::Value::Null,
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                server.ready = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("the ready line {line:?}: {e}"));
            }
            Err(e) => {
                server.pump(Duration::from_millis(200));
                panic!("no ready line within 10 s ({e}): {:#?}", server.lines);
            }
        }
        server
    }

    /// Reads the log lines that came, waiting at most `wait` for the first.
    fn pump(&mut self, wait: Duration) {
        if let Ok(line) = self.log.recv_timeout(wait) {
            self.lines.push(line);
        }
        while let Ok(line) = self.log.try_recv() {
            self.lines.push(line);
        }
    }

    /// The first log line containing every one of `words`, waiting up to 5 s for it.
    fn log_line(&mut self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .lines
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {words:?}: {:#?}",
                self.lines
            );
            self.pump(Duration::from_millis(100));
        }
    }

    /// Ctrl-C's SIGINT; waits (5 s at most) for it to exit and returns whether it exited 0.
    fn stop(&mut self) -> bool {
        signal(self.child.id(), nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "still running 5 s after Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One person: a host behind their own home router, and a home directory.
struct Person {
    name: &'static str,
    host: Host,
    home: PathBuf,
}

impl Person {
    /// `name`'s host behind a new home router of `kind` that drops unsolicited UDP, as home
    /// routers do.
    fn behind(lab: &mut Lab, kind: NatKind, name: &'static str, dir: &TempDir) -> Self {
        let mut nat = lab.nat(kind).unwrap();
        lab.firewall_wan(&nat).unwrap();
        let host = lab.host_behind(&mut nat, name).unwrap();
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        Self { name, host, home }
    }

    /// Where the app keeps its settings for this person: `~/.config/pinhole/settings.toml`.
    fn settings_path(&self) -> PathBuf {
        self.home.join(".config/pinhole/settings.toml")
    }

    /// Writes `text` as this person's settings file, mode 0600 (as the app does).
    fn write_settings(&self, text: &str) {
        let path = self.settings_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    /// What the app writes when the person fills Settings (Server, Server certificate, Your
    /// name; devices left at "System default", Microphone sound and Advanced untouched) and clicks Save. The key
    /// is added by the first call.
    fn app_settings(&self, server: &str, fingerprint: &str) -> String {
        format!(
            "# Pinhole settings. The app and `pinhole --help` explain each field.\n\
             server = \"{server}\"\n\
             server_fingerprint = \"{fingerprint}\"\n\
             name = \"{}\"\n\
             \n\
             [audio]\n\
             echo_cancellation = true\n\
             noise_suppression = true\n\
             gain_control = true\n\
             \n\
             [interface]\n\
             theme = \"system\"\n\
             push_to_talk = false\n\
             \n\
             [advanced]\n\
             frame_ms = 20\n\
             bitrate_bps = 32000\n\
             udp_port = 0\n\
             embedded_server_lan = false\n\
             port_mapping = true\n",
            self.name
        )
    }

    /// The README's three lines for a machine without a display, written by hand.
    fn hand_settings(&self, server: &str, fingerprint: &str) -> String {
        format!(
            "server = \"{server}\"\n\
             server_fingerprint = \"{fingerprint}\"\n\
             name = \"{}\"\n",
            self.name
        )
    }

    /// `pinhole ARGS...` typed in this person's terminal: in their home, with their `HOME`
    /// and the default logging.
    fn pinhole(&self, lab: &Lab, args: &[&str]) -> Command {
        let mut cmd = lab.command(&self.host.ns, binary("pinhole"));
        cmd.args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PINHOLE_CONFIG")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Starts `pinhole ARGS...` (followed by [`Headless`]).
    fn start(&self, lab: &Lab, args: &[&str]) -> Headless {
        Headless::spawn(self.pinhole(lab, args))
    }

    /// `pinhole nat-check ARGS...` to its end (15 s at most).
    fn nat_check(&self, lab: &Lab, args: &[&str]) -> HeadlessOutput {
        let mut all = vec!["nat-check"];
        all.extend(args);
        self.start(lab, &all).finish(Duration::from_secs(15))
    }

    /// A WAV in this person's home.
    fn wav(&self, file: &str) -> PathBuf {
        self.home.join(file)
    }
}

/// The value of the report line `label:` of `pinhole nat-check`'s human output.
fn field<'a>(out: &'a HeadlessOutput, label: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} line: {out:#?}"))
}

/// The fraction of `wav` (after its first half second) that carries `hz`; prints its
/// timeline.
fn heard(wav: &Path, hz: f64, what: &str) -> f64 {
    let f = tone::fraction(wav, hz, 0.5);
    eprintln!("{what}: {f:.2} {}", tone::timeline(wav, hz));
    f
}

/// One JSON call report from a finished `pinhole call`/`answer --json` that exited 0.
fn report(out: &HeadlessOutput, who: &str) -> serde_json::Value {
    assert!(out.status.success(), "{who} failed: {out:#?}");
    let json = out.one_json();
    eprintln!("{who}: {json}");
    json
}

/// alice answers (`--calls 1`, a 440 Hz tone for a microphone), `caller` calls her for `secs`
/// (660 Hz) with `pinhole call PEER EXTRA...` (PEER: `alice`, or her invite link): both reports
/// (caller's, alice's) after checking that each heard the other's tone.
fn call_alice(
    lab: &Lab,
    alice: &Person,
    caller: &Person,
    peer: &str,
    extra: &[&str],
    secs: f64,
) -> [serde_json::Value; 2] {
    let (alice_hz, caller_hz) = (440.0, 660.0);
    let alice_wav = format!("from-{}.wav", caller.name);
    let caller_wav = "from-alice.wav";
    let mut answer = alice.start(
        lab,
        &[
            "answer",
            "--input",
            "tone:440",
            "--output",
            &format!("wav:{alice_wav}"),
            "--calls",
            "1",
            "--json",
        ],
    );
    answer.expect_log("registered", REGISTER_WAIT);
    let output = format!("wav:{caller_wav}");
    let duration = secs.to_string();
    let mut args = vec![
        "call",
        peer,
        "--input",
        "tone:660",
        "--output",
        &output,
        "--duration",
        &duration,
        "--json",
    ];
    args.extend(extra);
    let call = caller.start(lab, &args);
    let caller_out = call.finish(Duration::from_secs_f64(secs + 25.0));
    let alice_out = answer.finish(Duration::from_secs(10));
    let caller_json = report(&caller_out, caller.name);
    let alice_json = report(&alice_out, "alice");
    assert_eq!(caller_json["peer"], "alice", "{caller_json}");
    assert_eq!(alice_json["peer"], caller.name, "{alice_json}");
    let what = format!("{} hears alice", caller.name);
    let caller_hears = heard(&caller.wav(caller_wav), alice_hz, &what);
    let what = format!("alice hears {}", caller.name);
    let alice_hears = heard(&alice.wav(&alice_wav), caller_hz, &what);
    assert!(
        caller_hears >= 0.8,
        "{} hears alice in {caller_hears:.2}",
        caller.name
    );
    assert!(
        alice_hears >= 0.8,
        "alice hears {} in {alice_hears:.2}",
        caller.name
    );
    [caller_json, alice_json]
}

/// Runs `nat-check` with the server's firewall set to `ruleset` and returns its output after
/// checking it failed with status 1.
fn failing_nat_check(
    lab: &Lab,
    server_host: &Host,
    person: &Person,
    ruleset: &str,
) -> HeadlessOutput {
    load_ruleset(lab, server_host, ruleset);
    let out = person.nat_check(lab, &[]);
    eprintln!("nat-check: {:?}", out.log);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    out
}

/// `nft -f` of `ruleset` inside the server's namespace (its own firewall).
fn load_ruleset(lab: &Lab, server_host: &Host, ruleset: &str) {
    let file = std::env::temp_dir().join(format!("pinhole-walkthrough-{}.nft", std::process::id()));
    std::fs::write(&file, ruleset).unwrap();
    let loaded = lab.exec(&server_host.ns, "nft", &["-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    loaded.unwrap_or_else(|e| panic!("nft -f: {e}"));
}

#[test]
fn the_readme_walkthrough_between_two_homes() {
    let started = Instant::now();
    if Command::new("nft").arg("--version").output().is_err() {
        return missing("nftables' nft is not installed (scripts/packages/nat-tests.txt)");
    }
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let dir = TempDir::new("walkthrough");

    // Step 1: the server on a public host, its firewall opened for 3478 TCP and UDP only.
    let server_host = lab.server("srv").unwrap();
    load_ruleset(&lab, &server_host, NFTABLES_CONF);
    let operator_home = dir.join("operator");
    std::fs::create_dir_all(&operator_home).unwrap();
    let mut server = Server::start(&mut lab, &server_host, &operator_home);
    // The README: "It logs the certificate's fingerprint (`TLS certificate
    // fingerprint=sha256:...`)".
    let line = server.log_line(&["TLS certificate", "fingerprint=sha256:"]);
    let fingerprint = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fingerprint="))
        .unwrap()
        .to_owned();
    assert_eq!(fingerprint.len(), "sha256:".len() + 64, "{line}");
    assert_eq!(
        server.ready["fingerprint"],
        fingerprint.as_str(),
        "{}",
        server.ready
    );
    // On every interface, port 3478; the alternate port (filtering probes) is another one,
    // which the ruleset does not open.
    assert_eq!(server.ready["udp"], "0.0.0.0:3478", "{}", server.ready);
    assert_eq!(server.ready["tcp"], "0.0.0.0:3478", "{}", server.ready);
    let alternate = server.ready["alternate"].as_str().unwrap().to_owned();
    assert!(!alternate.ends_with(":3478"), "{alternate}");
    // Kept in the state directory the README names.
    server.log_line(&["listening"]);
    eprintln!("the server's log:\n{}", server.lines.join("\n"));
    let state = operator_home.join(".local/state/pinhole-rendezvous");
    assert!(
        state.join("cert.pem").exists(),
        "no certificate in {}",
        state.display()
    );

    // Step 2: each person fills Settings and checks the connection.
    let alice = Person::behind(&mut lab, ALICE_NAT, "alice", &dir);
    let bob = Person::behind(&mut lab, BOB_NAT, "bob", &dir);
    let carol = Person::behind(&mut lab, CAROL_NAT, "carol", &dir);
    let people = [&alice, &bob, &carol];
    let host = server_host.ip.to_string();
    let server_addr = format!("{host}:{PORT}");
    // alice and bob in the app's Settings; carol, on a machine without a display, writes the
    // README's three lines.
    alice.write_settings(&alice.app_settings(&host, &fingerprint));
    bob.write_settings(&bob.app_settings(&host, &fingerprint));
    carol.write_settings(&carol.hand_settings(&host, &fingerprint));
    let checks: Vec<Headless> = people
        .iter()
        .map(|p| p.start(&lab, &["nat-check"]))
        .collect();
    for (person, check) in people.iter().zip(checks) {
        let out = check.finish(Duration::from_secs(15));
        eprintln!("{}'s nat-check:\n{}", person.name, out.stdout);
        assert!(
            out.status.success(),
            "{}'s nat-check: {out:#?}",
            person.name
        );
        assert_eq!(
            field(&out, "server:"),
            format!("{server_addr} (server)"),
            "{out:#?}"
        );
        assert_eq!(
            field(&out, "verdict:"),
            "nat (a private address behind NAT)",
            "{out:#?}"
        );
        assert_eq!(field(&out, "behind NAT:"), "yes", "{out:#?}");
    }

    // Step 3: each calls echo and hears their own tone come back through the server.
    let echoes: Vec<Headless> = people
        .iter()
        .map(|p| {
            p.start(
                &lab,
                &[
                    "call",
                    "echo",
                    "--input",
                    "tone:440",
                    "--output",
                    "wav:echo.wav",
                    "--duration",
                    "3",
                ],
            )
        })
        .collect();
    for (person, echo) in people.iter().zip(echoes) {
        let out = echo.finish(Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{}'s echo call: {out:#?}",
            person.name
        );
        let line = out.stdout.trim();
        eprintln!("{}: {line}", person.name);
        // The duration counts from when the devices opened to the hang-up, which the
        // headless loop makes when the talk is up: 3.1 s (the hang-up's round trip).
        let duration = line
            .strip_prefix("call with echo: encrypted AEAD_AES_128_GCM, ")
            .and_then(|rest| rest.split_once(" s, relay"))
            .and_then(|(secs, _)| secs.parse::<f64>().ok());
        assert!(
            duration.is_some_and(|d| (2.9..=3.5).contains(&d)),
            "{out:#?}"
        );
        let what = format!("{} hears the echo", person.name);
        let f = heard(&person.wav("echo.wav"), 440.0, &what);
        assert!(f >= 0.7, "{what} in {f:.2}");
        // The first call saved a key in the settings file, and nothing else changed: the
        // file the test wrote is the one the app writes (carol's three lines come back in
        // the app's longer form, with the defaults).
        let saved = std::fs::read_to_string(person.settings_path()).unwrap();
        let without_key: String = saved
            .lines()
            .filter(|l| !l.starts_with("key = "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(without_key, saved, "no key saved: {saved}");
        assert_eq!(without_key, person.app_settings(&host, &fingerprint));
    }

    // Step 4: bob calls alice (two routers that keep one port: direct), then carol (a router
    // with a new random port per destination: direct by birthday probing, carol's spares
    // against alice's probes). An 8 s call: the probes may take up to 5.5 s on a slow machine.
    let [bob_json, alice_json] = call_alice(&lab, &alice, &bob, "alice", &[], 5.0);
    for json in [&bob_json, &alice_json] {
        assert_eq!(json["path"], "direct", "{json}");
    }
    assert_eq!(bob_json["end"], "hung_up", "{bob_json}");
    assert_eq!(alice_json["end"], "peer_hung_up", "{alice_json}");
    assert_eq!(bob_json["sas"], alice_json["sas"], "the code to compare");
    let [carol_json, alice_json] = call_alice(&lab, &alice, &carol, "alice", &[], 8.0);
    for json in [&carol_json, &alice_json] {
        assert_eq!(json["path"], "direct", "{json}");
    }
    assert_eq!(carol_json["checks"]["spares"], 256, "{carol_json}");
    assert!(
        alice_json["checks"]["spray"].as_u64().unwrap() > 0,
        "{alice_json}"
    );
    assert_eq!(carol_json["sas"], alice_json["sas"], "the code to compare");

    // Or without step 2 for the caller: alice sends her invite link, and dave, who has never
    // set up Pinhole, calls it (his name on the command line, as on a first run).
    let out = alice
        .start(&lab, &["invite"])
        .finish(Duration::from_secs(10));
    assert!(out.status.success(), "pinhole invite: {out:#?}");
    let link = out.stdout.trim().to_owned();
    eprintln!("alice's invite link: {link}");
    assert!(
        link.starts_with(&format!("pinhole://call/alice?server={host}")),
        "{link}"
    );
    assert!(link.contains(&format!("fp={fingerprint}")), "{link}");
    let dave = Person::behind(&mut lab, DAVE_NAT, "dave", &dir);
    assert!(!dave.settings_path().exists());
    let [dave_json, alice_json] = call_alice(&lab, &alice, &dave, &link, &["--user", "dave"], 3.0);
    for json in [&dave_json, &alice_json] {
        assert_eq!(json["path"], "direct", "{json}");
    }
    assert_eq!(dave_json["sas"], alice_json["sas"], "the code to compare");
    let saved = std::fs::read_to_string(dave.settings_path()).unwrap_or_default();
    eprintln!("dave's settings after the call:\n{saved}");
    // His first run kept the link's server with its certificate: later calls check it too.
    assert!(
        saved.contains(&format!("server_fingerprint = \"{fingerprint}\"")),
        "{saved}"
    );

    // Step 5: what nat-check says when it does not work (the README's troubleshooting).
    // A mistyped (or outdated) Server certificate: both fingerprints.
    let wrong = format!("sha256:{}", "0".repeat(64));
    bob.write_settings(&bob.app_settings(&host, &wrong));
    let out = bob.nat_check(&lab, &[]);
    let said = out.log_text();
    eprintln!("nat-check, wrong fingerprint: {said}");
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let expected = format!(
        "pinhole nat-check: the server {server_addr} presented a certificate ({fingerprint}) \
         other than the one trusted for it ({wrong})"
    );
    assert!(said.contains(&expected), "{said}");
    bob.write_settings(&bob.app_settings(&host, &fingerprint));

    // UDP 3478 not opened: TCP works, UDP does not.
    let tcp_only = NFTABLES_CONF.replace("    udp dport 3478 accept\n", "");
    let out = failing_nat_check(&lab, &server_host, &alice, &tcp_only);
    let said = out.log_text();
    let expected = format!(
        "pinhole nat-check: no UDP answer from {server_addr} within 5s (is UDP to it blocked?)"
    );
    assert!(said.contains(&expected), "{said}");

    // TCP 3478 not opened: the connection gets no answer at all.
    let udp_only = NFTABLES_CONF.replace("    tcp dport 3478 accept\n", "");
    let out = failing_nat_check(&lab, &server_host, &alice, &udp_only);
    let said = out.log_text();
    let expected = format!("pinhole nat-check: no answer from {server_addr} within 5s");
    assert!(said.contains(&expected), "{said}");

    // Both opened again: it works again.
    load_ruleset(&lab, &server_host, NFTABLES_CONF);
    let out = alice.nat_check(&lab, &[]);
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(field(&out, "behind NAT:"), "yes", "{out:#?}");

    // The server not running: refused at once.
    assert!(server.stop(), "the server exits 0 on Ctrl-C");
    let out = alice.nat_check(&lab, &[]);
    let said = out.log_text();
    eprintln!("nat-check, no server: {said}");
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(said.contains("nothing answers on that port"), "{said}");
    assert!(!said.contains("os error"), "{said}");

    eprintln!(
        "the walkthrough took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
