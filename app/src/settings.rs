//! The client's settings: one TOML file in the user's config directory, shared by the desktop app
//! and the headless commands (`nat-check`, `call`, `answer`); command-line flags override it.
//!
//! The file is written atomically (a temporary file renamed over the old one) and readable only
//! by its owner, because it holds the key that proves the user's name to the server. A file that
//! does not exist means "first run"; a file that exists but cannot be read or parsed is an error
//! that names the file and the problem, and is never overwritten silently.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use traversal::tls::{ClientTrust, Fingerprint, FingerprintError, KnownServers};

/// The port a rendezvous server listens on when an address names none (STUN's port).
pub const DEFAULT_SERVER_PORT: u16 = 3478;

/// Environment variable that points at another settings file (tests, several profiles).
pub const CONFIG_ENV: &str = "PINHOLE_CONFIG";

/// The servers' certificates trusted on first use (`host:port sha256:...` lines), next to the
/// settings file.
pub const KNOWN_SERVERS_FILE: &str = "known-servers.txt";
/// Where the app's built-in server keeps its certificate and names, next to the settings file.
pub const EMBEDDED_SERVER_DIR: &str = "built-in-server";

/// Everything a user sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The rendezvous server, `host[:port]`; or several, comma-separated
    /// (`a.example.org, b.example.org:3479`): the client registers with the first that answers
    /// and moves to the next when its server fails or goes away ([`Settings::server_addrs`]).
    /// Empty: the app runs a server inside itself.
    pub server: String,
    /// The fingerprint of the server's certificate, `sha256:<64 hex digits>`, as its operator
    /// publishes it (`pinhole-rendezvous` prints it). Empty: a CA-signed certificate, or the
    /// one the server presented on the first connection (kept in [`KNOWN_SERVERS_FILE`]).
    pub server_fingerprint: String,
    /// The name others call.
    pub name: String,
    /// Capture device by name; `None`: the system default.
    pub input_device: Option<String>,
    /// Playback device by name; `None`: the system default.
    pub output_device: Option<String>,
    /// What is done to the microphone's sound before it is sent (`[audio]`).
    pub audio: Audio,
    /// How the window looks and which keys do what (`[interface]`).
    pub interface: Interface,
    /// Advanced settings most users never touch.
    pub advanced: Advanced,
    /// The Ed25519 secret key (64 hex digits) that proves the name to the server; created on
    /// first use ([`Settings::ensure_key`]). Whoever has this file can take the name's calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The capture processing (`[audio]`): each part on by default. They apply to a microphone;
/// a call sending a tone or a file is sent as it is unless `pinhole call --processing on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Audio {
    /// Remove what the microphone hears of the speaker (the other side's voice coming back).
    pub echo_cancellation: bool,
    /// Remove steady background noise (fans, hum), with a high-pass filter for rumble.
    pub noise_suppression: bool,
    /// Bring a quiet or loud microphone to a steady speaking level.
    pub gain_control: bool,
}

impl Default for Audio {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
        }
    }
}

impl Audio {
    /// The processing these settings ask for; the high-pass filter goes with noise
    /// suppression (both take away what is not voice).
    pub fn processing(&self) -> media::processing::ProcessingConfig {
        media::processing::ProcessingConfig {
            echo_cancellation: self.echo_cancellation,
            noise_suppression: self.noise_suppression,
            gain_control: self.gain_control,
            high_pass: self.noise_suppression,
        }
    }
}

/// The window's look and keys (`[interface]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Interface {
    /// Light or dark colours, or whatever the desktop says (the default).
    pub theme: Theme,
    /// The microphone is off in calls except while the push-to-talk key (Space) is held.
    pub push_to_talk: bool,
}

/// The colour theme: `"system"`, `"light"` or `"dark"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Follow the desktop's light or dark setting (dark where the desktop does not say).
    #[default]
    System,
    /// Dark text on a light background.
    Light,
    /// Light text on a dark background.
    Dark,
}

/// Settings behind the "Advanced" section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Advanced {
    /// Opus frame length in milliseconds: 10, 20 or 40.
    pub frame_ms: u32,
    /// Opus bitrate in bits per second.
    pub bitrate_bps: u32,
    /// Keepalive interval in seconds; `None`: the default, every 15 s (within the server's idle timeout).
    pub keepalive_s: Option<u32>,
    /// Local UDP port for media; 0 lets the system choose.
    pub udp_port: u16,
    /// The embedded server also listens for other machines on the local network.
    pub embedded_server_lan: bool,
    /// Ask the router to map the media port (UPnP IGD, NAT-PMP, PCP) so that calls come
    /// straight in.
    pub port_mapping: bool,
}

impl Default for Advanced {
    fn default() -> Self {
        Self {
            frame_ms: 20,
            bitrate_bps: 32_000,
            keepalive_s: None,
            udp_port: 0,
            embedded_server_lan: false,
            port_mapping: true,
        }
    }
}

/// Frame lengths Opus runs at in Pinhole.
pub const FRAME_MS_CHOICES: [u32; 3] = [10, 20, 40];
/// The bitrates Opus accepts for one voice channel, in bits per second.
pub const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 6_000..=510_000;
/// Keepalive intervals that make sense: below that wastes traffic, above it no NAT keeps a mapping.
pub const KEEPALIVE_RANGE: std::ops::RangeInclusive<u32> = 1..=300;

impl Settings {
    /// Checks every field; the first problem found, in words for the settings view.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.server_addrs().map_err(SettingsError::Server)?;
        self.pinned_fingerprint()
            .map_err(SettingsError::Fingerprint)?;
        validate_name(&self.name).map_err(SettingsError::Name)?;
        let a = &self.advanced;
        if !FRAME_MS_CHOICES.contains(&a.frame_ms) {
            return Err(SettingsError::Invalid(format!(
                "frame length must be 10, 20 or 40 ms, not {}",
                a.frame_ms
            )));
        }
        if !BITRATE_RANGE.contains(&a.bitrate_bps) {
            return Err(SettingsError::Invalid(format!(
                "bitrate must be between 6000 and 510000 bit/s, not {}",
                a.bitrate_bps
            )));
        }
        if let Some(k) = a.keepalive_s
            && !KEEPALIVE_RANGE.contains(&k)
        {
            return Err(SettingsError::Invalid(format!(
                "keepalive interval must be between 1 and 300 s, not {k}"
            )));
        }
        self.identity_key()?;
        Ok(())
    }

    /// The identity key, if there is one; an error if the file holds a malformed one.
    pub fn identity_key(&self) -> Result<Option<ed25519_dalek::SigningKey>, SettingsError> {
        let Some(hex) = self.key.as_deref() else {
            return Ok(None);
        };
        parse_key(hex)
            .map(Some)
            .ok_or_else(|| SettingsError::Invalid("key must be 64 hexadecimal digits".into()))
    }

    /// The identity key, created (from the system's random source) when there is none yet.
    /// Returns the key and whether it was just created (then the settings need saving).
    pub fn ensure_key(&mut self) -> Result<(ed25519_dalek::SigningKey, bool), SettingsError> {
        if let Some(key) = self.identity_key()? {
            return Ok((key, false));
        }
        let mut secret = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
        self.key = Some(secret.iter().map(|b| format!("{b:02x}")).collect());
        Ok((ed25519_dalek::SigningKey::from_bytes(&secret), true))
    }

    /// The server certificate's fingerprint given up front, if any.
    pub fn pinned_fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        let text = self.server_fingerprint.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some)
    }

    /// How the client trusts the configured server's certificate: the pinned fingerprint, else
    /// the known-servers file next to the settings file at `path`.
    pub fn client_trust(&self, path: &Path) -> Result<ClientTrust, SettingsError> {
        Ok(ClientTrust {
            pinned: self
                .pinned_fingerprint()
                .map_err(SettingsError::Fingerprint)?,
            known_servers: Some(beside(path, KNOWN_SERVERS_FILE)),
        })
    }

    /// The server to use (the first of the list), parsed; `None` when the embedded server is
    /// meant.
    pub fn server_addr(&self) -> Result<Option<ServerAddr>, ServerListError> {
        Ok(self.server_addrs()?.into_iter().next())
    }

    /// Every server of the list, parsed, in order; empty when the embedded server is meant.
    pub fn server_addrs(&self) -> Result<Vec<ServerAddr>, ServerListError> {
        parse_server_list(&self.server)
    }
}

/// A server list's entry that is not an address: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ServerListError {
    /// The entry as written (trimmed).
    pub entry: String,
    /// Its place in the list, from 1.
    pub position: usize,
    /// How many entries the list has.
    pub count: usize,
    /// What is wrong with it.
    pub error: AddrError,
}

impl ServerListError {
    /// The problem alone for a list of one; with the entry and its place for a longer one.
    fn describe(&self) -> String {
        if self.count <= 1 {
            self.error.to_string()
        } else {
            format!(
                "{:?} (server {} of {}): {}",
                self.entry, self.position, self.count, self.error
            )
        }
    }
}

/// Parses a server list: addresses ([`ServerAddr::parse`]) separated by commas, blank entries
/// skipped (`a.example, b.example:3479,`). Nothing at all: an empty list (the embedded server);
/// commas alone are an error. The first entry that is no address is the error, named.
pub fn parse_server_list(text: &str) -> Result<Vec<ServerAddr>, ServerListError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(ServerListError {
            entry: text.trim().to_owned(),
            position: 1,
            count: 1,
            error: AddrError::Empty,
        });
    }
    let count = entries.len();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            ServerAddr::parse(entry).map_err(|error| ServerListError {
                entry: (*entry).to_owned(),
                position: i + 1,
                count,
                error,
            })
        })
        .collect()
}

/// A server list written back: the addresses, comma-separated.
pub fn format_server_list(servers: &[ServerAddr]) -> String {
    servers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Settings {}

/// A 32-byte Ed25519 secret key from 64 hex digits.
fn parse_key(hex: &str) -> Option<ed25519_dalek::SigningKey> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut secret = [0u8; 32];
    for (byte, pair) in secret.iter_mut().zip(hex.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(ed25519_dalek::SigningKey::from_bytes(&secret))
}

/// Checks a user name: what others type to call you.
pub fn validate_name(name: &str) -> Result<(), String> {
    check_name(name).map_err(|e| e.to_string())
}

/// Why a name cannot be registered ([`check_name`]); the app says it in the user's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing but spaces.
    #[error("enter a name others can call you by")]
    Empty,
    /// More than 32 characters.
    #[error("a name has at most 32 characters")]
    TooLong,
    /// A character other than a letter, a digit, `.`, `_` or `-`.
    #[error("a name has only letters, digits, '.', '_' and '-', not {0:?}")]
    Character(char),
    /// `echo`, the server's echo service.
    #[error("\"echo\" is the server's echo service; choose another name")]
    Echo,
}

/// [`validate_name`], with the reason as a value.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > 32 {
        return Err(NameError::TooLong);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::Character(c));
    }
    if name.eq_ignore_ascii_case("echo") {
        return Err(NameError::Echo);
    }
    Ok(())
}

/// A rendezvous server's address as the user wrote it: a host (name, IPv4, or `[IPv6]`) and a
/// port. Resolving the name is left to the caller, off the UI thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// UDP and TCP port.
    pub port: u16,
}

/// Why a server address is not usable, in words for the settings view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Nothing was typed.
    #[error("enter the server's address, such as example.org or 203.0.113.7:3478")]
    Empty,
    /// The port is not a number from 1 to 65535.
    #[error("the port must be a number from 1 to 65535, not {0:?}")]
    Port(String),
    /// An IPv6 address is missing its closing bracket or is malformed.
    #[error("an IPv6 address goes in brackets, such as [2001:db8::1]:3478")]
    Ipv6,
    /// The host is not a valid name or IP address.
    #[error("{0:?} is not a host name or IP address")]
    Host(String),
}

impl ServerAddr {
    /// Parses `host`, `host:port`, `IPv4[:port]` or `[IPv6][:port]`; the port defaults to 3478.
    pub fn parse(text: &str) -> Result<Self, AddrError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddrError::Empty);
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or(AddrError::Ipv6)?;
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(AddrError::Ipv6);
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(AddrError::Ipv6)?),
            };
            (v6.to_owned(), port)
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address: allowed without a port.
            if text.parse::<std::net::Ipv6Addr>().is_ok() {
                (text.to_owned(), None)
            } else {
                return Err(AddrError::Ipv6);
            }
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (text.to_owned(), None),
            }
        };
        let port = match port {
            None => DEFAULT_SERVER_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(AddrError::Port(p.to_owned())),
            },
        };
        if host.parse::<std::net::IpAddr>().is_err() && !is_host_name(&host) {
            return Err(AddrError::Host(host));
        }
        Ok(Self { host, port })
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. A name made
/// only of digits and dots is a mistyped IPv4 address, not a name.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Why settings could not be loaded, checked or saved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A server address is not usable.
    #[error("server address: {0}")]
    Server(ServerListError),
    /// The name is not usable.
    #[error("name: {0}")]
    Name(String),
    /// The server certificate's fingerprint is not one.
    #[error("server certificate: {0}")]
    Fingerprint(FingerprintError),
    /// Another field is out of range.
    #[error("{0}")]
    Invalid(String),
    /// No config directory could be found for this user (no home directory).
    #[error("no config directory for this user; set {CONFIG_ENV} to a file path")]
    NoConfigDir,
    /// The file exists but could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The settings file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid settings.
    #[error("{path}: {message}")]
    Parse {
        /// The settings file.
        path: PathBuf,
        /// The parser's message, with the line.
        message: String,
    },
}

/// Where the settings live: `$PINHOLE_CONFIG`, or `settings.toml` in the user's config
/// directory (`~/.config/pinhole/` on Linux).
pub fn default_path() -> Result<PathBuf, SettingsError> {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    directories::ProjectDirs::from("", "", "pinhole")
        .map(|dirs| dirs.config_dir().join("settings.toml"))
        .ok_or(SettingsError::NoConfigDir)
}

/// `name` in the directory of the settings file at `path`.
pub fn beside(path: &Path, name: &str) -> PathBuf {
    match path.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The file of contacts' keys (trust on first use) for the settings file at `path`.
pub fn contacts_path(path: &Path) -> PathBuf {
    beside(path, crate::contacts::FILE_NAME)
}

/// What [`trust_server`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    /// What changed, one line each, for people.
    pub lines: Vec<String>,
    /// The settings file changed (its pinned fingerprint): read it again.
    pub settings_changed: bool,
}

/// Accepts a server's changed certificate for the profile of the settings file at `path`:
/// with `fingerprint`, it is recorded for `server` in the known-servers file (and replaces the
/// settings' pinned fingerprint when the settings pin one for that server); without, the
/// recorded one (and the settings' pin for it) is forgotten, so the next connection trusts what
/// the server presents and records it.
pub fn trust_server(
    path: &Path,
    server: &ServerAddr,
    fingerprint: Option<Fingerprint>,
) -> Result<Trusted, SettingsError> {
    let known_path = beside(path, KNOWN_SERVERS_FILE);
    let io = |source| SettingsError::Io {
        path: known_path.clone(),
        source,
    };
    let name = server.to_string();
    let mut known = KnownServers::load(&known_path).map_err(io)?;
    let mut lines = vec![match fingerprint {
        Some(fp) => {
            known.trust(&name, fp).map_err(io)?;
            format!(
                "{name}: trusting certificate {fp} ({})",
                known_path.display()
            )
        }
        None if known.forget(&name).map_err(io)? => format!(
            "{name}: forgot its certificate ({}); the next connection trusts the one it presents and remembers it",
            known_path.display()
        ),
        None => format!(
            "{name}: no certificate was remembered for it ({}); the next connection trusts the one it presents and remembers it",
            known_path.display()
        ),
    }];
    let mut settings_changed = false;
    if let Some(mut stored) = load(path)?
        && !stored.server_fingerprint.trim().is_empty()
        && stored
            .server_addr()
            .ok()
            .flatten()
            .is_some_and(|a| a.to_string().eq_ignore_ascii_case(&name))
    {
        stored.server_fingerprint = fingerprint.map(|fp| fp.to_string()).unwrap_or_default();
        save(path, &stored)?;
        settings_changed = true;
        lines.push(match fingerprint {
            Some(fp) => format!("{}: the server certificate is now {fp}", path.display()),
            None => format!(
                "{}: the server certificate is no longer pinned",
                path.display()
            ),
        });
    }
    Ok(Trusted {
        lines,
        settings_changed,
    })
}

/// Reads the settings; `Ok(None)` when the file does not exist yet (first run).
pub fn load(path: &Path) -> Result<Option<Settings>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SettingsError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let settings: Settings = toml::from_str(&text).map_err(|err| SettingsError::Parse {
        path: path.to_owned(),
        message: err.to_string().trim_end().replace('\n', " "),
    })?;
    Ok(Some(settings))
}

/// Writes the settings atomically, readable only by the user. Invalid settings are refused, so
/// the file on disk is always one that loads.
pub fn save(path: &Path, settings: &Settings) -> Result<(), SettingsError> {
    settings.validate()?;
    let io = |source| SettingsError::Io {
        path: path.to_owned(),
        source,
    };
    let text =
        toml::to_string_pretty(settings).map_err(|err| SettingsError::Invalid(err.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(b"# Pinhole settings. The app and `pinhole --help` explain each field.\n")
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory (kept while the first value lives) and a settings file in it.
    fn temp_settings() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        (dir, path)
    }

    fn valid() -> Settings {
        Settings {
            server: "rendezvous.example.org:3478".into(),
            server_fingerprint: String::new(),
            name: "alice".into(),
            input_device: Some("pulse".into()),
            output_device: None,
            audio: Audio {
                gain_control: false,
                ..Audio::default()
            },
            interface: Interface {
                theme: Theme::Dark,
                push_to_talk: true,
            },
            advanced: Advanced {
                keepalive_s: Some(20),
                ..Advanced::default()
            },
            key: None,
        }
    }

    #[test]
    fn first_run_has_no_file_and_save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("settings.toml");
        assert!(load(&path).unwrap().is_none());
        save(&path, &valid()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(valid()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "settings hold the name key: owner only"
            );
        }
        assert!(!path.with_extension("toml.tmp").exists());
    }

    #[test]
    fn the_interface_section_reads_its_words_and_refuses_others() {
        let (_dir, path) = temp_settings();
        std::fs::write(
            &path,
            "name = \"bob\"\n[interface]\ntheme = \"light\"\npush_to_talk = true\n",
        )
        .unwrap();
        let s = load(&path).unwrap().unwrap();
        assert_eq!(s.interface.theme, Theme::Light);
        assert!(s.interface.push_to_talk);
        std::fs::write(&path, "name = \"bob\"\n[interface]\ntheme = \"purple\"\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("purple"), "{err}");
    }

    #[test]
    fn a_partial_file_takes_defaults_for_the_rest() {
        let (_dir, path) = temp_settings();
        std::fs::write(&path, "name = \"bob\"\n[advanced]\nframe_ms = 10\n").unwrap();
        let s = load(&path).unwrap().unwrap();
        assert_eq!(s.name, "bob");
        assert_eq!(s.server, "");
        assert_eq!(s.advanced.frame_ms, 10);
        assert_eq!(s.advanced.bitrate_bps, Advanced::default().bitrate_bps);
    }

    #[test]
    fn a_broken_file_is_an_error_naming_file_and_line_and_is_kept() {
        let (_dir, path) = temp_settings();
        std::fs::write(&path, "name = \"bob\"\nserver = 3478\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("settings.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("colour"), "unknown fields are named: {err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "colour = \"blue\"\n"
        );
    }

    #[test]
    fn invalid_settings_are_not_saved() {
        let (_dir, path) = temp_settings();
        let mut s = valid();
        s.server = "example.org:99999".into();
        let err = save(&path, &s).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
        assert!(!path.exists());
        let mut s = valid();
        s.advanced.frame_ms = 30;
        assert!(save(&path, &s).is_err());
        let mut s = valid();
        s.name = "   ".into();
        assert!(save(&path, &s).is_err());
    }

    #[test]
    fn server_addresses_parse_with_default_port() {
        let ok = |t: &str, host: &str, port| {
            assert_eq!(
                ServerAddr::parse(t),
                Ok(ServerAddr {
                    host: host.into(),
                    port
                }),
                "{t}"
            )
        };
        ok("example.org", "example.org", 3478);
        ok(" example.org:5000 ", "example.org", 5000);
        ok("203.0.113.7:3478", "203.0.113.7", 3478);
        ok("[2001:db8::1]:4000", "2001:db8::1", 4000);
        ok("[2001:db8::1]", "2001:db8::1", 3478);
        ok("2001:db8::1", "2001:db8::1", 3478);
        ok("localhost", "localhost", 3478);
        assert_eq!(
            ServerAddr::parse("[2001:db8::1]:4000").unwrap().to_string(),
            "[2001:db8::1]:4000"
        );
    }

    #[test]
    fn bad_server_addresses_say_what_is_wrong() {
        let port = |p: &str| AddrError::Port(p.into());
        let host = |h: &str| AddrError::Host(h.into());
        for (text, error) in [
            ("", AddrError::Empty),
            ("example.org:", port("")),
            ("example.org:0", port("0")),
            ("example.org:http", port("http")),
            ("[2001:db8::1", AddrError::Ipv6),
            ("2001:db8::zz", AddrError::Ipv6),
            ("bad_host:1", host("bad_host")),
            ("300.1.2.3", host("300.1.2.3")),
            ("-bad.example", host("-bad.example")),
        ] {
            assert_eq!(ServerAddr::parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn a_server_list_parses_each_entry_and_names_a_bad_one() {
        let list =
            parse_server_list(" a.example.org, b.example.org:3479 ,[2001:db8::1]:4000,").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "a.example.org:3478",
                "b.example.org:3479",
                "[2001:db8::1]:4000"
            ]
        );
        assert_eq!(
            format_server_list(&list),
            "a.example.org:3478, b.example.org:3479, [2001:db8::1]:4000"
        );
        assert_eq!(parse_server_list("  "), Ok(Vec::new()));
        assert_eq!(
            parse_server_list("a.example.org:3478, bad_host:1, c.example.org"),
            Err(ServerListError {
                entry: "bad_host:1".into(),
                position: 2,
                count: 3,
                error: AddrError::Host("bad_host".into()),
            })
        );
        let err = parse_server_list("a.example.org, b.example.org:99999").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"b.example.org:99999\" (server 2 of 2): the port must be a number from 1 to 65535, \
             not \"99999\""
        );
        // One entry: the problem alone, as before lists.
        let err = parse_server_list("example.org:0").unwrap_err();
        assert_eq!(err.to_string(), AddrError::Port("0".into()).to_string());
        assert_eq!(
            parse_server_list(" , ").unwrap_err().error,
            AddrError::Empty,
            "commas alone are no list"
        );
    }

    #[test]
    fn a_settings_file_lists_servers_and_an_old_one_still_loads() {
        let (_dir, path) = temp_settings();
        // A file from before lists: one server.
        std::fs::write(&path, "name = \"bob\"\nserver = \"old.example.org\"\n").unwrap();
        let s = load(&path).unwrap().unwrap();
        assert!(s.validate().is_ok());
        let one = vec![ServerAddr::parse("old.example.org").unwrap()];
        assert_eq!(s.server_addrs().unwrap(), one);
        assert_eq!(s.server_addr().unwrap(), Some(one[0].clone()));

        std::fs::write(
            &path,
            "name = \"bob\"\nserver = \"a.example:3478, b.example:3478\"\n",
        )
        .unwrap();
        let s = load(&path).unwrap().unwrap();
        assert!(s.validate().is_ok());
        let names: Vec<String> = s
            .server_addrs()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(names, ["a.example:3478", "b.example:3478"]);
        assert_eq!(s.server_addr().unwrap().unwrap().host, "a.example");
        // Saved and loaded as written.
        save(&path, &s).unwrap();
        assert_eq!(
            load(&path).unwrap().unwrap().server,
            "a.example:3478, b.example:3478"
        );

        // A bad entry: the error names it, and the file is not taken.
        let mut bad = s.clone();
        bad.server = "a.example:3478, b.example:http".into();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.starts_with("server address: "), "{err}");
        assert!(err.contains("\"b.example:http\" (server 2 of 2)"), "{err}");
        assert!(err.contains("\"http\""), "{err}");
        let err = save(&path, &bad).unwrap_err().to_string();
        assert!(err.contains("b.example:http"), "{err}");
        assert_eq!(
            load(&path).unwrap().unwrap().server,
            "a.example:3478, b.example:3478"
        );
    }

    #[test]
    fn a_key_is_created_once_saved_and_checked() {
        let (_dir, path) = temp_settings();
        let mut s = valid();
        let (key, created) = s.ensure_key().unwrap();
        assert!(created);
        save(&path, &s).unwrap();
        let mut loaded = load(&path).unwrap().unwrap();
        let (again, created) = loaded.ensure_key().unwrap();
        assert!(!created);
        assert_eq!(again.to_bytes(), key.to_bytes());
        let mut other = valid();
        assert_ne!(other.ensure_key().unwrap().0.to_bytes(), key.to_bytes());
        let mut bad = valid();
        bad.key = Some("12zz".into());
        assert!(bad.validate().is_err());
        assert!(
            bad.ensure_key().is_err(),
            "a broken key is never replaced silently"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("Zoë_2.b-c").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("with space").is_err());
        assert!(validate_name("Echo").is_err());
        assert!(validate_name(&"x".repeat(33)).is_err());
    }

    #[test]
    fn a_server_fingerprint_is_checked_and_pinned() {
        let fp = format!("sha256:{}", "ab".repeat(32));
        let mut s = valid();
        assert_eq!(s.pinned_fingerprint(), Ok(None));
        let trust = s.client_trust(Path::new("/p/settings.toml")).unwrap();
        assert_eq!(trust.pinned, None);
        assert_eq!(
            trust.known_servers.as_deref(),
            Some(Path::new("/p/known-servers.txt"))
        );

        s.server_fingerprint = format!(" {} ", fp.to_uppercase().replace("SHA256", "sha256"));
        let pinned = s.pinned_fingerprint().unwrap().unwrap();
        assert_eq!(pinned.to_string(), fp);
        assert!(s.validate().is_ok());
        let trust = s.client_trust(Path::new("settings.toml")).unwrap();
        assert_eq!(trust.pinned, Some(pinned));
        assert_eq!(
            trust.known_servers.as_deref(),
            Some(Path::new("known-servers.txt"))
        );

        for (bad, says) in [
            ("ab".repeat(32), "starts with `sha256:`"),
            (format!("sha256:{}", "ab".repeat(31)), "64 hex digits"),
            (format!("sha256:{}zz", "ab".repeat(31)), "not a hex digit"),
        ] {
            s.server_fingerprint = bad.clone();
            let err = s.validate().unwrap_err().to_string();
            assert!(err.starts_with("server certificate: "), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err}");
            assert!(s.client_trust(Path::new("s.toml")).is_err());
        }
    }

    #[test]
    fn trusting_a_server_records_or_forgets_its_certificate_and_the_settings_pin() {
        let (dir, path) = temp_settings();
        let known = dir.path().join(KNOWN_SERVERS_FILE);
        let server = ServerAddr::parse("Rendezvous.example.org").unwrap();
        let (old, new) = (
            format!("sha256:{}", "01".repeat(32)),
            format!("sha256:{}", "02".repeat(32)),
        );
        // No settings file: only the known servers change.
        let done = trust_server(&path, &server, Some(new.parse().unwrap())).unwrap();
        assert!(!done.settings_changed);
        assert!(done.lines[0].contains(&new), "{:?}", done.lines);
        let text = std::fs::read_to_string(&known).unwrap();
        assert_eq!(text.trim(), format!("rendezvous.example.org:3478 {new}"));
        let done = trust_server(&path, &server, None).unwrap();
        assert!(done.lines[0].contains("forgot"), "{:?}", done.lines);
        assert!(std::fs::read_to_string(&known).unwrap().trim().is_empty());
        let done = trust_server(&path, &server, None).unwrap();
        assert!(done.lines[0].contains("no certificate was remembered"));

        // Settings that pin the old certificate for this server: the pin follows.
        let mut s = valid();
        s.server_fingerprint = old.clone();
        save(&path, &s).unwrap();
        let done = trust_server(&path, &server, Some(new.parse().unwrap())).unwrap();
        assert!(done.settings_changed);
        assert_eq!(load(&path).unwrap().unwrap().server_fingerprint, new);
        trust_server(&path, &server, None).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().server_fingerprint, "");
        // Another server's pin is left alone.
        save(&path, &s).unwrap();
        let other = ServerAddr::parse("other.example.org").unwrap();
        let done = trust_server(&path, &other, Some(new.parse().unwrap())).unwrap();
        assert!(!done.settings_changed);
        assert_eq!(load(&path).unwrap().unwrap().server_fingerprint, old);
    }

    #[test]
    fn the_fingerprint_round_trips_through_the_file() {
        let (dir, path) = temp_settings();
        let mut s = valid();
        s.server_fingerprint = format!("sha256:{}", "0f".repeat(32));
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s));
        assert_eq!(
            contacts_path(&path),
            dir.path().join(crate::contacts::FILE_NAME)
        );
    }
}
