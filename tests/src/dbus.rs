//! A D-Bus session bus of the test's own: a `dbus-daemon` that listens in a temporary
//! directory and activates no services (so a desktop service installed on the machine never
//! answers for a test's fake one), stopped by its PID when dropped.
//!
//! Needs `dbus-daemon` (Debian package `dbus-daemon`, in scripts/packages/desktop.txt).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::TempDir;
use crate::prereq::missing;

/// A running `dbus-daemon`; see the module docs.
#[derive(Debug)]
pub struct Bus {
    child: Child,
    /// Its D-Bus address (`unix:path=...`), for clients (`DBUS_SESSION_BUS_ADDRESS`).
    pub address: String,
    _dir: TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bus {
    /// Starts one. `None` (after [`missing`]: a failure under `PINHOLE_TEST_STRICT`) when
    /// `dbus-daemon` is not installed.
    pub fn start() -> Option<Bus> {
        let dir = TempDir::new("dbus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path.display()
            ),
        )
        .expect("write the bus configuration");
        let spawned = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--print-address", "--nofork"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing(
                    "dbus-daemon is not installed (Debian package dbus-daemon, \
                     scripts/packages/desktop.txt)",
                );
                return None;
            }
            Err(e) => panic!("dbus-daemon did not start: {e}"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The guard exists before the wait, so a daemon that never prints is still stopped.
        let mut bus = Bus {
            child,
            address: String::new(),
            _dir: dir,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("dbus-daemon printed no address within 5 s");
        bus.address = line.trim().to_owned();
        assert!(
            bus.address.starts_with("unix:"),
            "dbus-daemon printed {line:?}, not an address"
        );
        Some(bus)
    }
}
