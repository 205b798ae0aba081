//! Invite links: `pinhole://call/NAME?server=HOST[:PORT]&fp=sha256:HEX`.
//!
//! A link carries what someone needs to call NAME: the rendezvous server both use, and
//! optionally the fingerprint of that server's certificate. Opening one (the desktop entry hands
//! it to `pinhole URL`) shows a confirmation that fills in the settings and the name to call;
//! `pinhole call URL` calls with it; `pinhole invite` prints one's own.
//!
//! The fingerprint is what makes a link safe to follow to a server never used before: the
//! certificate is pinned to it, so a link passed on over a channel the two people trust cannot be
//! turned into a connection to someone else's server by whoever sits on the network path. A
//! link without one falls back to the usual trust (a CA-signed certificate, else trust on first
//! use).
//!
//! ```text
//!   pinhole://call/Zo%C3%AB?server=[2001:db8::1]:4000&fp=sha256:ab12…
//!   └scheme┘ └kind┘└ name ┘ └────── server ───────┘ └─ fingerprint ─┘
//! ```
//!
//! - The name is percent-encoded UTF-8 (RFC 3986 §2.1): letters outside ASCII are sent as
//!   their bytes. It is checked as a name others register ([`settings::validate_name`]); `echo`
//!   (the server's echo service) is allowed.
//! - The server is `host`, `host:port`, `IPv4[:port]` or `[IPv6][:port]` ([`ServerAddr`]); the
//!   port defaults to 3478 and is left out of formatted links when it is that.
//! - `fp` is parsed by [`Fingerprint`]'s own parser, so the link accepts what
//!   `pinhole-rendezvous` prints and nothing else.
//! - Parameters other than `server` and `fp` are refused, and so is one given twice: a mistyped
//!   `fp` must not quietly become a link without a pin.
//!
//! ```
//! use pinhole::invite::Invite;
//! let link = "pinhole://call/alice?server=rendezvous.example.org";
//! let invite: Invite = link.parse().unwrap();
//! assert_eq!(invite.name, "alice");
//! assert_eq!(invite.server.to_string(), "rendezvous.example.org:3478");
//! assert_eq!(invite.fingerprint, None);
//! assert_eq!(invite.to_string(), link);
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use traversal::tls::{Fingerprint, FingerprintError, KnownServers};

use crate::settings::{self, AddrError, DEFAULT_SERVER_PORT, ServerAddr, Settings};

/// The scheme of invite links (registered by the desktop entry as `x-scheme-handler/pinhole`).
pub const SCHEME: &str = "pinhole";

/// What follows `pinhole://` in a link to call someone.
const CALL_PREFIX: &str = "call/";

/// An invite: whom to call, and through which server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The name to call (checked as a name others register, or `echo`).
    pub name: String,
    /// The rendezvous server.
    pub server: ServerAddr,
    /// The server certificate's fingerprint, when the link pins one.
    pub fingerprint: Option<Fingerprint>,
}

/// Why a text is not an invite link, in words for people (the CLI prints it after the link).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// It does not start with `pinhole://`.
    #[error("not a Pinhole link: it must start with pinhole:// (got {0:?})")]
    Scheme(String),
    /// `pinhole://` followed by something other than `call/`.
    #[error(
        "a Pinhole link reads pinhole://call/NAME?server=HOST[:PORT]; this one has {0:?} after pinhole://"
    )]
    Kind(String),
    /// No name after `call/`.
    #[error("the link names nobody to call: pinhole://call/NAME?server=HOST[:PORT]")]
    NoName,
    /// The name is not one anybody can register.
    #[error("the name in the link, {name:?}, is not a name: {why}")]
    Name {
        /// The name as decoded.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8.
    #[error("the link's {part} is not properly percent-encoded UTF-8: {detail}")]
    Encoding {
        /// `name`, `server` or `fp`.
        part: &'static str,
        /// What was found.
        detail: String,
    },
    /// No `server=` parameter.
    #[error("the link names no server: add ?server=HOST[:PORT]")]
    NoServer,
    /// The server is not a host and port.
    #[error("the link's server {text:?} is not usable: {why}")]
    Server {
        /// The server as decoded.
        text: String,
        /// What is wrong with it.
        why: AddrError,
    },
    /// The fingerprint is not `sha256:` and 64 hex digits.
    #[error("the link's certificate fingerprint is not usable: {0}")]
    Fingerprint(FingerprintError),
    /// A parameter the link format does not have.
    #[error("the link has a parameter Pinhole does not know, {0:?} (a link has server= and fp=)")]
    UnknownParameter(String),
    /// A parameter given twice.
    #[error("the link gives {0}= twice")]
    Repeated(&'static str),
    /// A `#fragment`, or a path below the name.
    #[error("the link has something after the name that Pinhole does not read: {0:?}")]
    Trailing(String),
}

impl Invite {
    /// An invite to call `name` through `server`, pinned to `fingerprint` when given.
    pub fn new(name: String, server: ServerAddr, fingerprint: Option<Fingerprint>) -> Self {
        Self {
            name,
            server,
            fingerprint,
        }
    }

    /// Whether `text` looks like it was meant as a link (`pinhole:`, any case): such a text is
    /// parsed as one and refused with the reason, rather than taken for a name.
    pub fn looks_like_link(text: &str) -> bool {
        text.trim()
            .get(..SCHEME.len() + 1)
            .is_some_and(|p| p.eq_ignore_ascii_case("pinhole:"))
    }

    /// The server as the settings write it (`host:port`, `[v6]:port`).
    pub fn server_setting(&self) -> String {
        self.server.to_string()
    }
}

impl FromStr for Invite {
    type Err = InviteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let rest = text
            .get(..SCHEME.len() + 3)
            .filter(|p| p.eq_ignore_ascii_case("pinhole://"))
            .and_then(|_| text.get(SCHEME.len() + 3..))
            .ok_or_else(|| InviteError::Scheme(text.chars().take(40).collect()))?;
        let rest = rest
            .get(..CALL_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(CALL_PREFIX))
            .and_then(|_| rest.get(CALL_PREFIX.len()..))
            .ok_or_else(|| InviteError::Kind(rest.chars().take(20).collect()))?;
        if let Some((_, fragment)) = rest.split_once('#') {
            return Err(InviteError::Trailing(format!("#{fragment}")));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        // One trailing slash is what some programs add to a path; more is not a name.
        let path = path.strip_suffix('/').unwrap_or(path);
        if let Some((_, below)) = path.split_once('/') {
            return Err(InviteError::Trailing(format!("/{below}")));
        }
        if path.is_empty() {
            return Err(InviteError::NoName);
        }
        let name = decode(path, "name")?;
        if name.trim().is_empty() {
            return Err(InviteError::NoName);
        }
        if name != "echo"
            && let Err(why) = settings::validate_name(&name)
        {
            return Err(InviteError::Name { name, why });
        }

        let (mut server, mut fingerprint) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "server" => {
                    if server.is_some() {
                        return Err(InviteError::Repeated("server"));
                    }
                    server = Some(decode(value, "server")?);
                }
                "fp" => {
                    if fingerprint.is_some() {
                        return Err(InviteError::Repeated("fp"));
                    }
                    fingerprint = Some(decode(value, "fp")?);
                }
                other => {
                    return Err(InviteError::UnknownParameter(
                        other.chars().take(20).collect(),
                    ));
                }
            }
        }
        let server = server.ok_or(InviteError::NoServer)?;
        if server.trim().is_empty() {
            return Err(InviteError::NoServer);
        }
        let server = ServerAddr::parse(&server).map_err(|why| InviteError::Server {
            text: server.clone(),
            why,
        })?;
        let fingerprint = fingerprint
            .map(|fp| fp.parse::<Fingerprint>())
            .transpose()
            .map_err(InviteError::Fingerprint)?;
        Ok(Self {
            name,
            server,
            fingerprint,
        })
    }
}

impl fmt::Display for Invite {
    /// The link, as short as it parses back to the same invite: the default port left out,
    /// IPv6 hosts in brackets, the name percent-encoded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{CALL_PREFIX}{}?server=", Encoded(&self.name))?;
        let host = &self.server.host;
        let bracketed = host.contains(':');
        if bracketed {
            write!(f, "[{host}]")?;
        } else {
            write!(f, "{}", Encoded(host))?;
        }
        if self.server.port != DEFAULT_SERVER_PORT {
            write!(f, ":{}", self.server.port)?;
        }
        if let Some(fp) = &self.fingerprint {
            write!(f, "&fp={fp}")?;
        }
        Ok(())
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (§2.3), byte by byte of the UTF-8.
struct Encoded<'a>(&'a str);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "%{byte:02X}")?;
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (either case) into UTF-8; `part` names the piece for the error.
fn decode(text: &str, part: &'static str) -> Result<String, InviteError> {
    let bad = |detail: String| InviteError::Encoding { part, detail };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| {
                    let found: String = text[i..].chars().take(3).collect();
                    bad(format!("{found:?} is not % and two hex digits"))
                })?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| bad(e.to_string()))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("the escaped bytes are not UTF-8".into()))
}

/// Why no invite could be made from the settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnInviteError {
    /// The settings have no name yet.
    #[error("no name to invite people to call: set `name` in the settings first")]
    NoName,
    /// The settings use the app's built-in server, which others cannot reach by a fixed name.
    #[error(
        "no server: the settings use the server built into the app; pass --server HOST[:PORT] \
         (a server others can reach)"
    )]
    NoServer,
    /// The settings' name or server is broken.
    #[error("{0}")]
    Settings(String),
}

/// The user's own invite from their settings at `path`, through `server` (default: the
/// settings' server). The fingerprint is the settings' pin when it is for that server, else the
/// one recorded in the known-servers file beside the settings (on the first connection, or by
/// `pinhole trust-server`); without either the link has none.
pub fn own_invite(
    settings: &Settings,
    path: &Path,
    server: Option<&ServerAddr>,
) -> Result<Invite, OwnInviteError> {
    let name = settings.name.trim();
    if name.is_empty() {
        return Err(OwnInviteError::NoName);
    }
    settings::validate_name(name).map_err(|e| OwnInviteError::Settings(format!("name: {e}")))?;
    let configured = settings
        .server_addr()
        .map_err(|e| OwnInviteError::Settings(format!("server: {e}")))?;
    let server = match (server, &configured) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => return Err(OwnInviteError::NoServer),
    };
    let pinned = if configured.as_ref() == Some(&server) {
        settings
            .pinned_fingerprint()
            .map_err(|e| OwnInviteError::Settings(format!("server certificate: {e}")))?
    } else {
        None
    };
    let fingerprint = match pinned {
        Some(fp) => Some(fp),
        None => known_fingerprint(path, &server)?,
    };
    Ok(Invite::new(name.to_owned(), server, fingerprint))
}

/// The fingerprint recorded for `server` in the known-servers file beside the settings at
/// `path`, if any.
pub fn known_fingerprint(
    path: &Path,
    server: &ServerAddr,
) -> Result<Option<Fingerprint>, OwnInviteError> {
    let known = settings::beside(path, settings::KNOWN_SERVERS_FILE);
    let file = KnownServers::load(&known).map_err(|e| OwnInviteError::Settings(e.to_string()))?;
    Ok(file.get(&server.to_string()))
}

/// What accepting `invite` makes of `settings`: its server, and the pin (the link's; else the
/// settings' own when the server stays the same, since a pin belongs to one server).
pub fn apply(settings: &Settings, invite: &Invite) -> Settings {
    let mut next = settings.clone();
    // One of the servers listed: the list stays.
    let same_server = settings
        .server_addrs()
        .unwrap_or_default()
        .contains(&invite.server);
    if !same_server {
        next.server = invite.server_setting();
    }
    next.server_fingerprint = match (&invite.fingerprint, same_server) {
        (Some(fp), _) => fp.to_string(),
        (None, true) => settings.server_fingerprint.clone(),
        (None, false) => String::new(),
    };
    next
}

#[cfg(test)]
mod tests;
