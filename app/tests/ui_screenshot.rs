//! Not a test that runs by default: it drives the REAL app window under a display (Xvfb) to take
//! the README's screenshot and to measure start-up and frame times. It launches `pinhole` with
//! no server set (so the app runs its built-in server), types `echo` + Enter with
//! `xdotool`, and captures the window with ImageMagick's `import`. Audio goes through whatever
//! PulseAudio `PULSE_SERVER` names (a null sink; the test adds a sine source as microphone).
//!
//! ```text
//! xvfb-run -a -s "-screen 0 1024x768x24" \
//!   cargo test -p pinhole --test ui_screenshot -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Writes `assets/screenshot.png` (main, incoming and in-call views side by side) when
//! `PINHOLE_WRITE_ASSETS=1`, else in `$PINHOLE_SHOT_DIR` (with the settings view) or a temporary
//! directory; prints the figures.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pinhole_tests::{Headless, Party, Place, TempDir, prereq};

fn xdotool(args: &[&str]) -> String {
    let out = Command::new("xdotool").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn capture(window: &str, path: &Path) {
    let status = Command::new("import")
        .args(["-window", window])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the app's log line containing `what` logged after index `from` of its log: when it
/// came, the line, and the index after it.
fn wait_line(app: &mut Headless, what: &str, from: usize, secs: u64) -> (Instant, String, usize) {
    let line = app.wait_line_after(what, from, Duration::from_secs(secs));
    let line = line.unwrap_or_else(|| panic!("no {what:?} within {secs} s: {:#?}", app.log));
    let at = app
        .log
        .iter()
        .skip(from)
        .position(|l| *l == line)
        .map_or(from, |i| from + i + 1);
    (Instant::now(), line, at)
}

#[test]
#[ignore = "needs a display (Xvfb), xdotool and ImageMagick; takes the README screenshot"]
fn screenshot_and_figures_of_the_real_window() {
    if std::env::var_os("DISPLAY").is_none() {
        return prereq::missing("no display: run under xvfb-run (scripts/packages/base.txt)");
    }
    for tool in ["xdotool", "import"] {
        if Command::new(tool).arg("-version").output().is_err() {
            return prereq::missing(format!(
                "{tool} is missing (scripts/packages/gui-tools.txt)"
            ));
        }
    }
    let dir = TempDir::new("screenshot");
    let settings = dir.join("settings.toml");
    std::fs::write(&settings, "name = \"alice\"\n").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        dir.join("contacts.toml"),
        format!(
            "contacts = [\"bob\", \"carol\"]\n\
             [[recent]]\nname = \"bob\"\noutgoing = true\noutcome = \"12:41\"\nwhen = {}\n\
             [[recent]]\nname = \"carol\"\noutgoing = false\noutcome = \"missed\"\nwhen = {}\n",
            now - 3 * 3600,
            now - 26 * 3600
        ),
    )
    .unwrap();

    // With a sound server, the microphone is a tone so the meters move: a sine source of this
    // test's own, picked in the settings (the server's default stays as it was) and unloaded
    // when the test ends.
    let _sine = SineSource::load(&format!("pinhole_shot_{}", std::process::id()));
    if let Some(sine) = &_sine {
        std::fs::write(
            &settings,
            format!("name = \"alice\"\ninput_device = \"{}\"\n", sine.name),
        )
        .unwrap();
    }
    let spawned = Instant::now();
    let mut app = Command::new(env!("CARGO_BIN_EXE_pinhole"));
    app.env("PINHOLE_CONFIG", &settings)
        .env("RUST_LOG", "warn,pinhole=info,pinhole::frames=debug");
    let mut app = Headless::spawn_as_is(app);
    // The built-in server starts in the first frame (logged before it ends).
    let (_, line, _) = wait_line(&mut app, "built-in server listening", 0, 10);
    let server = line
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let (at, line, _) = wait_line(&mut app, "first frame drawn", 0, 30);
    eprintln!(
        "FIGURE start-up: spawn to first frame {} ms ({line})",
        (at - spawned).as_millis()
    );

    let window = xdotool(&["search", "--sync", "--name", "^Pinhole$"]);
    let window = window.lines().last().unwrap().to_owned();
    std::thread::sleep(Duration::from_secs(3));
    let out = if std::env::var_os("PINHOLE_WRITE_ASSETS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets")
    } else if let Some(d) = std::env::var_os("PINHOLE_SHOT_DIR") {
        d.into()
    } else {
        dir.path.clone()
    };
    let views = std::env::var_os("PINHOLE_SHOT_DIR").map_or(dir.path.clone(), Into::into);
    let main_png = dir.join("main.png");
    capture(&window, &main_png);

    xdotool(&["windowfocus", "--sync", &window]);
    xdotool(&["type", "--delay", "60", "echo"]);
    xdotool(&["key", "Return"]);
    std::thread::sleep(Duration::from_secs(6));
    let call_png = dir.join("call.png");
    capture(&window, &call_png);

    // Frame times while the call runs (the app logs them every 5 s).
    // The first period may hold the call's start; the second is a steady call.
    let (_, _, from) = wait_line(&mut app, "view=InCall", 0, 15);
    let (_, line, _) = wait_line(&mut app, "view=InCall", from, 15);
    eprintln!("FIGURE frame times during the call: {line}");

    // Back on the main view, bob calls (the headless client): the incoming view rings.
    xdotool(&["key", "Escape"]);
    std::thread::sleep(Duration::from_secs(1));
    let bob = Party {
        name: "bob".into(),
        input: "tone:500".into(),
        ..Party::silent(&dir, "bob")
    };
    let bob = bob.call(Place::Local, &server, "alice", 3.0);
    std::thread::sleep(Duration::from_secs(3));
    let incoming_png = dir.join("incoming.png");
    capture(&window, &incoming_png);
    drop(bob);
    std::thread::sleep(Duration::from_secs(2));

    // The settings view (for a look; not in the README).
    xdotool(&["mousemove", "--window", &window, "420", "18", "click", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    capture(&window, &views.join("settings-view.png"));

    let shot = out.join("screenshot.png");
    let status = Command::new("convert")
        .arg(&main_png)
        .arg(&incoming_png)
        .arg(&call_png)
        .args([
            "-background",
            "#202020",
            "-splice",
            "12x0",
            "+append",
            "-chop",
            "12x0",
        ])
        .arg(&shot)
        .status()
        .unwrap();
    assert!(status.success());
    eprintln!("screenshot: {}", shot.display());
}

/// Starts the real app on `settings` (which may not exist: the first run) and waits for its
/// window; the built-in server's address when it runs one.
fn start_app(settings: &Path, args: &[&str]) -> (Headless, String, Option<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinhole"));
    cmd.args(args)
        .env("PINHOLE_CONFIG", settings)
        .env("RUST_LOG", "warn,pinhole=info");
    let mut app = Headless::spawn_as_is(cmd);
    wait_line(&mut app, "first frame drawn", 0, 30);
    let server = app
        .log
        .iter()
        .find_map(|l| {
            l.split("built-in server listening")
                .nth(1)
                .map(str::to_owned)
        })
        .and_then(|rest| {
            rest.split("addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_owned)
        });
    let window = xdotool(&["search", "--sync", "--name", "^Pinhole$"]);
    let window = window.lines().last().unwrap().to_owned();
    // Fonts, devices and the registration settle.
    std::thread::sleep(Duration::from_secs(3));
    (app, window, server)
}

/// Every view of the real app in the light and the dark theme, each in a PNG of its own and a
/// contact sheet per theme (`assets/views-light.png`, `assets/views-dark.png` with
/// `PINHOLE_WRITE_ASSETS=1`):
///
/// ```text
/// xvfb-run -a -s "-screen 0 1280x1024x24" \
///   cargo test -p pinhole --test ui_screenshot every_view -- --ignored --nocapture
/// ```
#[test]
#[ignore = "needs a display (Xvfb), xdotool and ImageMagick; takes the README's view sheets"]
fn every_view_in_both_themes() {
    if std::env::var_os("DISPLAY").is_none() {
        return prereq::missing("no display: run under xvfb-run (scripts/packages/base.txt)");
    }
    let out = if std::env::var_os("PINHOLE_WRITE_ASSETS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets")
    } else if let Some(d) = std::env::var_os("PINHOLE_SHOT_DIR") {
        d.into()
    } else {
        std::env::temp_dir()
    };
    for theme in ["light", "dark"] {
        let dir = TempDir::new(&format!("views-{theme}"));
        let shot = |name: &str| dir.join(&format!("{name}.png"));

        // The first run (no settings file yet) follows the desktop's theme; Xvfb has none
        // (dark), so it is on the dark sheet only.
        let mut views = vec![
            "2-main",
            "3-settings",
            "4-calling",
            "5-in-call",
            "6-incoming",
        ];
        if theme == "dark" {
            let (app, window, _) = start_app(&dir.join("fresh").join("settings.toml"), &[]);
            capture(&window, &shot("1-setup"));
            drop(app);
            views.insert(0, "1-setup");
        }

        let settings = dir.join("settings.toml");
        std::fs::write(
            &settings,
            format!("name = \"alice\"\n[interface]\ntheme = \"{theme}\"\n"),
        )
        .unwrap();
        // Contacts in several scripts (the system fonts draw what egui's lack), and a missed
        // call.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            dir.join("contacts.toml"),
            format!(
                "contacts = [\"张伟\", \"Жанна\", \"Ελένη\"]\n\
                 [[recent]]\nname = \"carol\"\noutgoing = false\noutcome = \"missed\"\nwhen = {}\n\
                 [[recent]]\nname = \"张伟\"\noutgoing = true\noutcome = \"12:41\"\nwhen = {}\n",
                now - 600,
                now - 26 * 3600
            ),
        )
        .unwrap();
        let (app, window, server) = start_app(&settings, &[]);
        let server = server.expect("the built-in server runs");
        capture(&window, &shot("2-main"));

        xdotool(&["windowfocus", "--sync", &window]);
        xdotool(&["key", "ctrl+comma"]);
        std::thread::sleep(Duration::from_secs(2));
        capture(&window, &shot("3-settings"));
        xdotool(&["key", "Escape"]);
        std::thread::sleep(Duration::from_secs(1));

        // bob lets the call ring 4 s: the calling view, then the call.
        let bob = Party {
            name: format!("bob{}", std::process::id()),
            input: "tone:500".into(),
            ..Party::silent(&dir, "bob")
        };
        let answering = bob.answer(Place::Local, &server, &["--ring", "4"]);
        xdotool(&["windowfocus", "--sync", &window]);
        xdotool(&["type", "--delay", "40", &bob.name]);
        xdotool(&["key", "Return"]);
        std::thread::sleep(Duration::from_millis(1500));
        capture(&window, &shot("4-calling"));
        // Answered after 4 s of ringing; the figures fill in during the first seconds.
        std::thread::sleep(Duration::from_secs(6));
        capture(&window, &shot("5-in-call"));
        xdotool(&["key", "Escape"]);
        std::thread::sleep(Duration::from_secs(1));
        drop(answering);

        // carol calls alice: the incoming view.
        let carol = Party {
            name: "carol".into(),
            ..Party::silent(&dir, "carol")
        };
        let caller = carol.call(Place::Local, &server, "alice", 10.0);
        std::thread::sleep(Duration::from_secs(3));
        capture(&window, &shot("6-incoming"));
        xdotool(&["key", "Escape"]);
        drop(caller);
        drop(app);

        // An invite link opened: its confirmation.
        let link = format!(
            "pinhole://call/zo%C3%AB?server=rendezvous.example.org&fp=sha256:{}",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        let (app, window, _) = start_app(&settings, &[&link]);
        capture(&window, &shot("7-invite"));
        drop(app);
        views.push("7-invite");

        let sheet = out.join(format!("views-{theme}.png"));
        let background = if theme == "light" {
            "#f6f6f8"
        } else {
            "#202124"
        };
        let status = Command::new("convert")
            .args(views.iter().map(|v| shot(v)))
            .args([
                "-background",
                background,
                "-splice",
                "12x0",
                "+append",
                "-chop",
                "12x0",
            ])
            .arg(&sheet)
            .status()
            .unwrap();
        assert!(status.success());
        eprintln!("views ({theme}): {}", sheet.display());
    }
}

/// A `module-sine-source` loaded for the test and unloaded when dropped.
struct SineSource {
    name: String,
    module: String,
}

impl SineSource {
    /// `None` without a sound server (the screenshot is then taken without a moving meter).
    fn load(name: &str) -> Option<Self> {
        let out = Command::new("pactl")
            .args(["load-module", "module-sine-source", "frequency=330"])
            .arg(format!("source_name={name}"))
            .output()
            .ok()?;
        out.status.success().then(|| Self {
            name: name.to_owned(),
            module: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        })
    }
}

impl Drop for SineSource {
    fn drop(&mut self) {
        let _ = Command::new("pactl")
            .args(["unload-module", &self.module])
            .status();
    }
}
