//! One desktop app per profile. The app listens on a Unix socket beside its settings file; a
//! second `pinhole` (the desktop entry runs `pinhole %u` for every link clicked) hands its
//! invite link over that socket and exits, so the link opens in the window already there
//! instead of in a second app that would register the same name and take it from the first.
//!
//! ```text
//!   pinhole LINK --connect--> app.sock --"LINK\n"--> running app: open_invite(LINK), raise
//!                <--"ok\n"---
//!   (nobody listening: the socket is stale or absent; this app listens on it itself)
//! ```
//!
//! An empty line only raises the window (plain `pinhole` while the app runs). The socket is
//! the user's only (mode 0600 in the user's config directory), and a link handed over is only
//! shown for confirmation, never acted on by itself.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::sound::Wake;
use crate::invite::Invite;
use crate::settings;

/// The socket's name, beside the settings file.
pub const SOCKET_FILE: &str = "app.sock";

/// The longest line read from the socket: a link is far shorter.
const MAX_LINE: u64 = 4096;

/// How long either side waits for the other.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The socket of the app that uses the settings file at `settings_path`.
pub fn socket_path(settings_path: &Path) -> PathBuf {
    settings::beside(settings_path, SOCKET_FILE)
}

/// What a second `pinhole` asks of the running app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Show this invite for confirmation.
    Open(Invite),
    /// Only come to the front.
    Raise,
}

/// Hands `invite` (or, without one, a request to come to the front) to the app listening on
/// `socket`. `Ok(true)`: it took it; `Ok(false)`: no app runs there (no socket, or a stale one).
pub fn hand_over(socket: &Path, invite: Option<&Invite>) -> io::Result<bool> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let line = invite.map(ToString::to_string).unwrap_or_default();
    writeln!(stream, "{line}")?;
    let mut answer = String::new();
    BufReader::new(stream.take(MAX_LINE)).read_line(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(true),
        other => Err(io::Error::other(format!(
            "the running app answered {other:?}"
        ))),
    }
}

/// The running app's end: requests arrive on [`Listener::try_request`]. The socket file is
/// removed when it is dropped.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    requests: mpsc::Receiver<Request>,
}

impl Listener {
    /// Listens on `socket`, replacing a stale socket file (call [`hand_over`] first: a live
    /// one means another app runs). Each request wakes the UI through `wake`.
    pub fn bind(socket: &Path, wake: Wake) -> io::Result<Self> {
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(socket) {
            Ok(()) => tracing::debug!(path = %socket.display(), "removed a stale app socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let (tx, requests) = mpsc::channel();
        std::thread::Builder::new()
            .name("pinhole-handoff".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    match serve(stream) {
                        Ok(request) => {
                            if tx.send(request).is_err() {
                                return;
                            }
                            wake();
                        }
                        Err(e) => tracing::warn!("a link handed to this app was not read: {e}"),
                    }
                }
            })?;
        Ok(Self {
            path: socket.to_owned(),
            requests,
        })
    }

    /// The next request, if one came.
    pub fn try_request(&self) -> Option<Request> {
        self.requests.try_recv().ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request and answers it: `ok`, or why not.
fn serve(stream: UnixStream) -> io::Result<Request> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let line = line.trim();
    let request = if line.is_empty() {
        Ok(Request::Raise)
    } else {
        line.parse::<Invite>().map(Request::Open)
    };
    let mut stream = stream;
    match request {
        Ok(request) => {
            writeln!(stream, "ok")?;
            Ok(request)
        }
        Err(e) => {
            writeln!(stream, "{e}")?;
            Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    fn next(listener: &Listener) -> Request {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(request) = listener.try_request() {
                return request;
            }
            assert!(Instant::now() < deadline, "no request came");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_link_is_handed_to_the_running_app_and_a_stale_socket_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket_path(&dir.path().join("settings.toml"));
        let link: Invite = "pinhole://call/alice?server=example.org".parse().unwrap();
        // Nobody listens yet.
        assert!(!hand_over(&socket, Some(&link)).unwrap());

        let woken = Arc::new(AtomicUsize::new(0));
        let count = woken.clone();
        let wake: Wake = Arc::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let listener = Listener::bind(&socket, wake.clone()).unwrap();
        let mode = std::fs::metadata(&socket).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert!(hand_over(&socket, Some(&link)).unwrap());
        assert_eq!(next(&listener), Request::Open(link.clone()));
        assert!(hand_over(&socket, None).unwrap());
        assert_eq!(next(&listener), Request::Raise);
        assert!(woken.load(Ordering::SeqCst) >= 2);

        // A bad line is answered with the reason and delivers nothing.
        let mut raw = UnixStream::connect(&socket).unwrap();
        writeln!(raw, "pinhole://call/?server=x").unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.contains("names nobody to call"), "{answer}");
        assert_eq!(listener.try_request(), None);

        // Gone with the app; a socket left by a crashed app is replaced.
        drop(listener);
        assert!(!socket.exists());
        drop(UnixListener::bind(&socket).unwrap());
        assert!(socket.exists(), "a stale socket file");
        assert!(!hand_over(&socket, Some(&link)).unwrap());
        let listener = Listener::bind(&socket, wake).unwrap();
        assert!(hand_over(&socket, Some(&link)).unwrap());
        assert_eq!(next(&listener), Request::Open(link));
    }
}
