//! The two Debian packages installed the way a user installs them, into a fresh Debian
//! bookworm (`debootstrap --variant=minbase`): `apt-get install -y ./pinhole_*.deb
//! ./pinhole-rendezvous_*.deb` with the Depends resolved from the Debian mirror, then what a
//! user and an admin rely on:
//!
//! - both binaries run and say their version; the app's desktop entry, icons and ringtone are
//!   where desktops look; the server's config is a conffile (kept, edited, over a reinstall);
//! - the system user exists, and the unit passes `systemd-analyze verify` (run on this
//!   machine against the root) with an exposure of at most [`MAX_EXPOSURE`];
//! - the server started as the unit starts it (its `ExecStart=` as its `User=`, with
//!   `STATE_DIRECTORY` made as `StateDirectory=` makes it) becomes ready, two installed
//!   clients call each other through it (tones both ways, checked in the WAVs they record),
//!   and SIGTERM stops it cleanly within the unit's `TimeoutStopSec=` (longer than the
//!   server's shutdown grace);
//! - the metrics endpoint the packaged config turns on answers on localhost and counted the call;
//! - purging removes the config and the state.
//!
//! The packages come from `./dev package` (target/debian/); `./dev test` builds them before
//! `cargo test`. The base system is downloaded once and kept as a tarball in
//! target/deb-install/ (the packages apt fetched for the Depends are kept beside it); each run
//! installs into a fresh copy, in a network namespace of its own (so port 3478 is free), and
//! removes it. Needs root, debootstrap, systemd-analyze and the Debian mirror.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pinhole_tests::{Headless, REGISTER_WAIT, output_within, prereq, tone, unique_name};

/// The Debian release the packages are built on and tested against.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// `systemd-analyze security`'s score for the unit must stay at or below this (1.1 when the
/// unit was written; 0 is a unit with no exposure, 10 one with no hardening at all).
const MAX_EXPOSURE: f64 = 1.5;
/// What a process inside the root gets as PATH.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn the_packages_install_into_a_fresh_debian_and_carry_a_call() {
    let started = Instant::now();
    let Some(debs) = prerequisites() else { return };
    let work = target_dir().join("deb-install");
    std::fs::create_dir_all(&work).expect("target/deb-install");
    remove_stale(&work);
    let base = base_tarball(&work);

    // A fresh copy of the base system, removed (and unmounted) when the test ends, however.
    let root = Tree::new(work.join(format!("root-{}", std::process::id())));
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&base)
            .arg("-C")
            .arg(&root.dir),
        Duration::from_secs(120),
    );
    run(
        Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.dir.join("proc")),
        Duration::from_secs(10),
    );
    std::fs::copy("/etc/resolv.conf", root.dir.join("etc/resolv.conf")).expect("resolv.conf");
    let incoming = root.dir.join("tmp/debs");
    std::fs::create_dir_all(&incoming).expect("tmp/debs");
    for deb in &debs {
        let to = incoming.join(deb.file_name().expect("file name"));
        std::fs::copy(deb, &to).expect("copy .deb");
        // apt reads local packages as its sandbox user _apt.
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let archives = work.join("archives");
    copy_debs(&archives, &root.dir.join("var/cache/apt/archives"));

    // What a user types.
    let apt = Instant::now();
    run(
        &mut in_root(&root.dir, &["apt-get", "update", "-q"]),
        Duration::from_secs(300),
    );
    run(
        &mut in_root(
            &root.dir,
            &[
                "sh",
                "-c",
                "cd /tmp/debs && apt-get install -y -q ./pinhole_*.deb ./pinhole-rendezvous_*.deb",
            ],
        ),
        Duration::from_secs(900),
    );
    eprintln!("apt-get update and install: {:.1?}", apt.elapsed());
    copy_debs(&root.dir.join("var/cache/apt/archives"), &archives);

    check_versions(&root.dir);
    check_app_files(&root.dir);
    let user = check_system_user(&root.dir);
    let unit_path = root
        .dir
        .join("lib/systemd/system/pinhole-rendezvous.service");
    check_unit(&root.dir, &unit_path);
    let unit = Unit::read(&unit_path);
    assert_eq!(unit.user, user.name, "the unit runs as the package's user");
    let grace = shutdown_grace(&root.dir.join("etc/pinhole/rendezvous.toml"));
    assert!(
        unit.timeout_stop > grace,
        "TimeoutStopSec ({:?}) leaves the server its shutdown grace ({grace:?})",
        unit.timeout_stop
    );

    // The server as systemd would start it, and a call between two installed clients.
    let netns = Netns::new(&format!("pinhole-deb-{}", std::process::id()));
    let mut server = Server::start(&root.dir, &netns.name, &unit, &user);
    call_through(&root.dir, &netns.name, &server);
    check_metrics(&root.dir, &netns.name, &server);
    let stopped = server.stop(unit.timeout_stop);
    assert!(
        stopped.success(),
        "the server exits 0 on SIGTERM: {stopped}; its log: {:#?}",
        server.log()
    );
    let state = root.dir.join(unit.state_dir.trim_start_matches('/'));
    for file in ["cert.pem", "key.pem"] {
        let meta = std::fs::metadata(state.join(file))
            .unwrap_or_else(|e| panic!("{file} in the state directory {}: {e}", state.display()));
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            user.uid,
            "{file} belongs to the server's user"
        );
    }

    check_conffile_and_purge(&root.dir, &state);
    drop(netns);
    drop(root);
    eprintln!("deb_install: {:.1?} in all", started.elapsed());
}

/// Root, the tools and the two packages; `None` (after [`prereq::missing`]) when one is
/// missing.
fn prerequisites() -> Option<[PathBuf; 2]> {
    if !nix::unistd::geteuid().is_root() {
        prereq::missing("the package install test needs root (debootstrap, chroot, mount)");
        return None;
    }
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-analyze", "systemd"),
        ("chroot", "coreutils"),
        ("ip", "iproute2"),
        ("dpkg", "dpkg"),
    ] {
        if !on_path(tool) {
            prereq::missing(format!(
                "{tool} is not installed (Debian package {package}; scripts/packages/packaging.txt)"
            ));
            return None;
        }
    }
    let arch = stdout(
        Command::new("dpkg").arg("--print-architecture"),
        Duration::from_secs(10),
    );
    let version = env!("CARGO_PKG_VERSION");
    let dir = target_dir().join("debian");
    let debs = ["pinhole", "pinhole-rendezvous"]
        .map(|name| dir.join(format!("{name}_{version}_{}.deb", arch.trim())));
    if let Some(absent) = debs.iter().find(|d| !d.exists()) {
        prereq::missing(format!(
            "{} is not built: run ./dev package (./dev test builds it)",
            absent.display()
        ));
        return None;
    }
    Some(debs)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(tool).is_file())
    })
}

/// The cargo target directory this test was built in (target/<profile>/deps/<this test>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Runs `cmd` within `limit`; panics with its output unless it succeeds.
fn run(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let out = output_within(cmd, limit);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run`]'s stdout as text.
fn stdout(cmd: &mut Command, limit: Duration) -> String {
    String::from_utf8_lossy(&run(cmd, limit).stdout).into_owned()
}

/// `args` run as root inside `root` (chroot), with a clean environment.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg(root)
        .args(args);
    // apt reaches the mirror the way debootstrap did, through the machine's proxy if it has one.
    for var in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
    ] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd
}

/// The base system as a tarball: made by debootstrap on the first run (a couple of minutes),
/// then reused.
fn base_tarball(work: &Path) -> PathBuf {
    let tarball = work.join(format!("{SUITE}-minbase.tar"));
    if tarball.exists() {
        return tarball;
    }
    let made = Instant::now();
    let tree = Tree::new(work.join(format!("debootstrap-{}", std::process::id())));
    run(
        Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(&tree.dir)
            .arg(MIRROR),
        Duration::from_secs(1200),
    );
    // The packages debootstrap fetched are in the system now: no need to keep them.
    run(
        &mut in_root(&tree.dir, &["apt-get", "clean"]),
        Duration::from_secs(60),
    );
    let partial = work.join(format!("{SUITE}-minbase.tar.partial"));
    run(
        Command::new("tar")
            .arg("-cf")
            .arg(&partial)
            .arg("-C")
            .arg(&tree.dir)
            .arg("."),
        Duration::from_secs(300),
    );
    std::fs::rename(&partial, &tarball).expect("rename the tarball");
    eprintln!("debootstrap {SUITE}: {:.1?}", made.elapsed());
    tarball
}

/// Copies the .deb files of `from` (if it exists) into `to`, skipping those already there.
fn copy_debs(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    std::fs::create_dir_all(to).expect("archive directory");
    for entry in entries.flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.extension().is_some_and(|e| e == "deb") && !dest.exists() {
            std::fs::copy(&path, &dest).expect("copy a cached .deb");
        }
    }
}

/// Removes what a run killed before it could clean up (SIGKILL, a power cut) left: its root
/// copy and its namespace.
fn remove_stale(work: &Path) {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("root-")
            .or_else(|| name.strip_prefix("debootstrap-"));
        if let Some(pid) = pid
            && !alive(pid)
        {
            drop(Tree { dir: entry.path() });
        }
    }
    let list = output_within(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    );
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(pid) = name.strip_prefix("pinhole-deb-")
            && !alive(pid)
        {
            drop(Netns { name: name.into() });
        }
    }
}

/// A directory tree the test made (a root copy, a debootstrap target). Dropped: everything
/// mounted under it is unmounted, then it is removed; it is left in place (and said so) if
/// something stays mounted, so nothing is ever deleted through a mount.
#[derive(Debug)]
struct Tree {
    dir: PathBuf,
}

impl Tree {
    fn new(dir: PathBuf) -> Self {
        let tree = Self { dir };
        tree.clear();
        std::fs::create_dir_all(&tree.dir).expect("create the tree");
        tree
    }

    /// The mount points at or under the tree, deepest first.
    fn mounts(&self) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points
    }

    fn clear(&self) {
        for point in self.mounts() {
            let out = output_within(Command::new("umount").arg(&point), Duration::from_secs(20));
            if !out.status.success() {
                // Busy (a process still inside): detach it now, it goes when they exit.
                let _ = output_within(
                    Command::new("umount").arg("-l").arg(&point),
                    Duration::from_secs(20),
                );
            }
        }
        let left = self.mounts();
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "{} not removed: still mounted there: {left:?}",
                self.dir.display()
            );
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A network namespace with only loopback, up; deleted when dropped.
#[derive(Debug)]
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: &str) -> Self {
        let _ = output_within(
            Command::new("ip").args(["netns", "del", name]),
            Duration::from_secs(10),
        );
        run(
            Command::new("ip").args(["netns", "add", name]),
            Duration::from_secs(10),
        );
        let netns = Self { name: name.into() };
        run(
            Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]),
            Duration::from_secs(10),
        );
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new("ip").args(["netns", "del", &self.name]),
            Duration::from_secs(10),
        );
    }
}

fn check_versions(root: &Path) {
    let version = env!("CARGO_PKG_VERSION");
    for bin in ["pinhole", "pinhole-rendezvous"] {
        let said = stdout(
            &mut in_root(root, &[bin, "--version"]),
            Duration::from_secs(10),
        );
        assert_eq!(said.trim(), format!("{bin} {version}"), "{bin} --version");
    }
}

/// The desktop entry (as in assets/), the icons and the ringtone, where desktops look.
fn check_app_files(root: &Path) {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    for (installed, asset) in [
        ("usr/share/applications/pinhole.desktop", "pinhole.desktop"),
        (
            "usr/share/icons/hicolor/scalable/apps/pinhole.svg",
            "pinhole.svg",
        ),
        (
            "usr/share/icons/hicolor/256x256/apps/pinhole.png",
            "pinhole.png",
        ),
        ("usr/share/pinhole/ringtone.wav", "ringtone.wav"),
    ] {
        let got =
            std::fs::read(root.join(installed)).unwrap_or_else(|e| panic!("/{installed}: {e}"));
        let want = std::fs::read(assets.join(asset)).expect("the asset");
        assert!(got == want, "/{installed} is assets/{asset}");
    }
}

/// A user from the root's /etc/passwd.
#[derive(Debug)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

/// The system user the server package made: a system uid, its own group, no login.
fn check_system_user(root: &Path) -> User {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("pinhole-rendezvous:"))
        .unwrap_or_else(|| panic!("no user pinhole-rendezvous in /etc/passwd:\n{passwd}"));
    let f: Vec<&str> = line.split(':').collect();
    let user = User {
        name: f[0].into(),
        uid: f[2].parse().expect("uid"),
        gid: f[3].parse().expect("gid"),
        home: f[5].into(),
        shell: f[6].into(),
    };
    assert!(user.uid < 1000, "a system uid: {line}");
    assert!(user.shell.ends_with("nologin"), "no login shell: {line}");
    let group = std::fs::read_to_string(root.join("etc/group")).expect("/etc/group");
    assert!(
        group.lines().any(|l| l.starts_with("pinhole-rendezvous:")
            && l.split(':').nth(2) == Some(&user.gid.to_string())),
        "its own group pinhole-rendezvous:\n{group}"
    );
    user
}

/// `systemd-analyze verify` on this machine against the root (errors in units the unit
/// merely orders itself after, absent from a root without systemd, do not count), and the
/// exposure `systemd-analyze security` gives it.
fn check_unit(root: &Path, unit: &Path) {
    let verify = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(format!("--root={}", root.display()))
            .arg(unit),
        Duration::from_secs(30),
    );
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify is silent about the unit: {complaints}"
    );
    let security = stdout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg("pinhole-rendezvous.service"),
        Duration::from_secs(30),
    );
    let score: f64 = security
        .lines()
        .find_map(|l| {
            l.split("exposure level for pinhole-rendezvous.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} above {MAX_EXPOSURE}:\n{security}"
    );
}

/// The packaged config's `shutdown_grace`, or the server's default (10 s) when the key is
/// commented out.
fn shutdown_grace(config: &Path) -> Duration {
    let text = std::fs::read_to_string(config).expect("the packaged config");
    let secs = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("shutdown_grace"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|n| n.trim().parse().expect("shutdown_grace is whole seconds"))
        .next_back()
        .unwrap_or(10);
    Duration::from_secs(secs)
}

/// What the test takes from the unit file to start the server as systemd would.
#[derive(Debug)]
struct Unit {
    exec_start: Vec<String>,
    user: String,
    /// Absolute: /var/lib/ + StateDirectory=.
    state_dir: String,
    state_mode: u32,
    timeout_stop: Duration,
}

impl Unit {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("the unit file");
        let key = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name}= in the unit"))
                .trim()
                .to_owned()
        };
        let exec_start = key("ExecStart");
        // Split on blanks as systemd does for a command line without quotes or specifiers.
        assert!(
            !exec_start.contains(['"', '\'', '%', '$', '\\']),
            "ExecStart= needs a real parser now: {exec_start}"
        );
        let timeout = key("TimeoutStopSec");
        let secs: u64 = timeout
            .strip_suffix('s')
            .unwrap_or(&timeout)
            .parse()
            .unwrap_or_else(|_| panic!("TimeoutStopSec={timeout}: seconds expected"));
        Self {
            exec_start: exec_start.split_whitespace().map(str::to_owned).collect(),
            user: key("User"),
            state_dir: format!("/var/lib/{}", key("StateDirectory")),
            state_mode: u32::from_str_radix(&key("StateDirectoryMode"), 8).expect("octal mode"),
            timeout_stop: Duration::from_secs(secs),
        }
    }
}

/// The installed server, started as the unit starts it, in the test's namespace.
struct Server {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Where clients reach it (loopback of the namespace, its port).
    addr: String,
    /// The fingerprint of its certificate, from its ready line.
    fingerprint: String,
    /// Its metrics endpoint, from its ready line.
    metrics: Option<String>,
}

impl Server {
    fn start(root: &Path, netns: &str, unit: &Unit, user: &User) -> Self {
        // StateDirectory=: systemd makes it, owned by User=, with StateDirectoryMode=, and
        // passes it as $STATE_DIRECTORY.
        let state = root.join(unit.state_dir.trim_start_matches('/'));
        std::fs::create_dir_all(&state).expect("the state directory");
        std::os::unix::fs::chown(&state, Some(user.uid), Some(user.gid))
            .expect("chown the state directory");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(unit.state_mode))
            .expect("chmod the state directory");
        let mut cmd = Command::new("ip");
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell)
            .env("STATE_DIRECTORY", &unit.state_dir)
            .args(["netns", "exec", netns, "chroot"])
            .arg(format!("--userspec={}:{}", user.uid, user.gid))
            .arg(format!("--groups={}", user.gid))
            .arg(root)
            .args(&unit.exec_start)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            log,
            addr: String::new(),
            fingerprint: String::new(),
            metrics: None,
        };
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => line,
            Err(e) => panic!(
                "no ready line from {:?} within 15 s ({e}): {:#?}",
                unit.exec_start,
                server.log()
            ),
        };
        let ready: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        assert_eq!(ready["event"], "ready", "{line}");
        let tcp: std::net::SocketAddr = ready["tcp"]
            .as_str()
            .expect("tcp")
            .parse()
            .expect("tcp address");
        server.addr = format!("127.0.0.1:{}", tcp.port());
        server.metrics = ready["metrics"].as_str().map(str::to_owned);
        server.fingerprint = ready["fingerprint"].as_str().expect("fingerprint").into();
        server
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// SIGTERM, as `systemctl stop` sends; its exit status, within `limit` (else SIGKILL and
    /// a panic).
    fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        pinhole_tests::signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the server outlived TimeoutStopSec ({limit:?}) after SIGTERM: {:#?}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pinhole answer` as bob and `pinhole call bob` as alice, both installed in the root, in the
/// namespace, pinning the server's certificate; each sends a tone and records the other's.
fn call_through(root: &Path, netns: &str, server: &Server) {
    let (alice, bob) = (unique_name("alice"), unique_name("bob"));
    let client = |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .args(["netns", "exec", netns, "chroot"])
            .arg(root)
            .arg("pinhole")
            .args(args)
            .args(["--server", &server.addr])
            .args(["--server-fingerprint", &server.fingerprint])
            .arg("--json");
        cmd
    };
    let mut answer = Headless::spawn(client(&[
        "answer",
        "--config",
        "/root/bob.toml",
        "--user",
        &bob,
        "--input",
        "tone:660",
        "--output",
        "wav:/root/bob.wav",
        "--calls",
        "1",
    ]));
    if !answer.wait_log("headless: registered", REGISTER_WAIT) {
        panic!(
            "bob never registered: {:#?}; the server's log: {:#?}",
            answer.log,
            server.log()
        );
    }
    let call = Headless::spawn(client(&[
        "call",
        &bob,
        "--config",
        "/root/alice.toml",
        "--user",
        &alice,
        "--input",
        "tone:440",
        "--output",
        "wav:/root/alice.wav",
        "--duration",
        "3",
    ]))
    .finish(Duration::from_secs(30));
    assert!(call.status.success(), "{call:#?}");
    let report = call.one_json();
    assert_eq!(report["peer"], bob.as_str(), "{report}");
    assert_eq!(report["end"], "hung_up", "{report}");
    assert!(
        report["rtp"]["received"].as_u64().unwrap_or(0) > 100,
        "voice arrived: {report}"
    );
    let answered = answer.finish(Duration::from_secs(15));
    assert!(answered.status.success(), "{answered:#?}");
    assert_eq!(answered.one_json()["peer"], alice.as_str());
    let (alice_wav, bob_wav) = (root.join("root/alice.wav"), root.join("root/bob.wav"));
    let alice_hears = tone::fraction(&alice_wav, 660.0, 0.5);
    let bob_hears = tone::fraction(&bob_wav, 440.0, 0.5);
    assert!(
        alice_hears >= 0.8,
        "alice hears bob's 660 Hz in {alice_hears:.2}: {}",
        tone::timeline(&alice_wav, 660.0)
    );
    assert!(
        bob_hears >= 0.7,
        "bob hears alice's 440 Hz in {bob_hears:.2}: {}",
        tone::timeline(&bob_wav, 440.0)
    );
}

/// The packaged config turns the Prometheus endpoint on, on localhost only, and it counted the
/// call. Read inside the namespace with bash's /dev/tcp (a minimal Debian has no HTTP client).
fn check_metrics(root: &Path, netns: &str, server: &Server) {
    let addr = server.metrics.as_deref().unwrap_or_else(|| {
        panic!(
            "the packaged config turns the metrics endpoint on: {:#?}",
            server.log()
        )
    });
    assert_eq!(addr, "127.0.0.1:9478", "metrics on localhost only");
    let (host, port) = addr.split_once(':').expect("IP:PORT");
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let mut get = Command::new("ip");
    get.env_clear()
        .env("PATH", PATH)
        .args(["netns", "exec", netns, "chroot"])
        .arg(root)
        .args(["bash", "-c", &script]);
    let metrics = stdout(&mut get, Duration::from_secs(10));
    for line in [
        format!(
            "pinhole_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "pinhole_calls_connected_total 1".to_owned(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} in the metrics:\n{metrics}"
        );
    }
}

/// The config is a conffile (an edit survives reinstalling the package), and purging removes
/// it and the server's state.
fn check_conffile_and_purge(root: &Path, state: &Path) {
    let conffiles = stdout(
        &mut in_root(
            root,
            &["dpkg-query", "-W", "-f=${Conffiles}", "pinhole-rendezvous"],
        ),
        Duration::from_secs(10),
    );
    assert!(
        conffiles.contains("/etc/pinhole/rendezvous.toml"),
        "a conffile: {conffiles}"
    );
    let config = root.join("etc/pinhole/rendezvous.toml");
    let edited = format!(
        "{}# edited by the admin\n",
        std::fs::read_to_string(&config).expect("the config")
    );
    std::fs::write(&config, &edited).expect("edit the config");
    run(
        &mut in_root(
            root,
            &["sh", "-c", "dpkg -i /tmp/debs/pinhole-rendezvous_*.deb"],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("the config"),
        edited,
        "a reinstall keeps the admin's edit"
    );
    run(
        &mut in_root(
            root,
            &[
                "apt-get",
                "purge",
                "-y",
                "-q",
                "pinhole",
                "pinhole-rendezvous",
            ],
        ),
        Duration::from_secs(120),
    );
    for gone in [
        &config,
        state,
        &root.join("usr/bin/pinhole"),
        &root.join("usr/bin/pinhole-rendezvous"),
    ] {
        assert!(!gone.exists(), "{} is gone after purge", gone.display());
    }
}
