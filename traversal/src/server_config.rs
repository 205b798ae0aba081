//! The `pinhole-rendezvous` server's settings: flags, environment variables and a TOML file,
//! merged into one [`Settings`].
//!
//! Every setting has three spellings: a long flag (`--max-registrations 5000`), an environment
//! variable (`PINHOLE_RENDEZVOUS_MAX_REGISTRATIONS=5000`) and a key in the file given by
//! `--config` (`max_registrations = 5000`). Precedence: flag > environment > file > built-in
//! default, decided per setting; [`Loaded::sources`] says where each value came from.
//!
//! The file is read only when `--config` (or `PINHOLE_RENDEZVOUS_CONFIG`) names it: an operator
//! who runs the binary by hand gets the defaults, the systemd unit passes
//! `/etc/pinhole/rendezvous.toml`. It is flat TOML (no sections). A key the server does not
//! know, a value of the wrong type or out of range, or a syntax error stops the server with
//! the file, the line and the key (`/etc/pinhole/rendezvous.toml line 3: unknown key `listn`;
//! known keys: ...`): a misspelt key silently ignored would leave a server running on settings
//! its operator did not choose. Values in the file and the environment go through the same
//! checks as the flags, so the messages are the same.
//!
//! Relative paths in the file (`names_file`, `state_dir`, `cert`, `key`) are relative to the
//! file's directory, so the file means the same whatever directory the server starts in
//! (systemd starts it in `/`); relative paths in flags and the environment are relative to the
//! working directory, as on any command line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

/// What `-h` shows above the flags.
const ABOUT: &str = "Pinhole's rendezvous server: Pinhole apps register with it to call each \
                     other by name. Listens on UDP and TCP port 3478. --help says what an \
                     operator needs: ports, state, certificate, config file, signals.";

/// What `--help` shows above the flags: what the server is for, then what running it takes.
const LONG_ABOUT: &str = "\
Pinhole's rendezvous server. People point their Pinhole apps at it to call each other by name.
It tells each app what kind of router (NAT) it sits behind, passes calls from one app to the
other, helps both open a direct path through their routers, and carries the voice itself
(relays it) when no direct path opens. The voice is encrypted end to end: the server sees who
calls whom and when, never what is said. It also answers plain STUN requests from any client.

PORTS: one port, 3478 unless --listen says otherwise, for both UDP (voice, keepalives, router
tests) and TCP (signalling, TLS 1.3). Open both, inbound, in the firewall. The server also
sends from a second UDP port, any free port the system gives at start (the log line
'alternate port for filtering probes' and the ready line name it), to test how callers'
routers filter. Nothing comes in on that port, so it needs no inbound rule; only outbound UDP
must be allowed, as it usually is.

STATE: the state directory (--state-dir; under systemd, StateDirectory=, e.g.
/var/lib/pinhole-rendezvous) holds cert.pem and key.pem, the server's TLS certificate, made on
the first start and kept, and names.txt, the names people registered with their keys. Back it
up: losing it frees every name and changes the certificate.

CERTIFICATE: the log ('TLS certificate fingerprint=sha256:...') and the ready line show its
fingerprint. Publish it to your users: pasted into the app's Settings (Server certificate), it
lets their apps check they reach your server and nobody in between. A new key is a new
fingerprint, which apps that pinned the old one refuse. --cert and --key serve a certificate of
your own (for example from Let's Encrypt) instead.

CONFIGURATION: each setting is a flag (--max-registrations 5000), an environment variable
(PINHOLE_RENDEZVOUS_MAX_REGISTRATIONS=5000) or a key in the TOML file --config names
(max_registrations = 5000; keys are the long flags with '_' for '-'). A flag wins over the
environment, which wins over the file, which wins over the defaults below. Relative paths in
the file are relative to the file's directory. No file is read unless --config names one (the
packaged systemd unit passes /etc/pinhole/rendezvous.toml). An unknown key or a bad value stops
the server with the file, line and key. --check-config prints the settings in effect and
where each came from, and exits.

METRICS: --metrics 127.0.0.1:9478 serves Prometheus text at http://127.0.0.1:9478/metrics
(registrations, connections, names, calls, relayed packets and bytes, drops by reason). It has
no authentication: keep it on localhost or behind the firewall.

SIGNALS: on SIGTERM or SIGINT (Ctrl-C) the server tells every app it is going away, takes no
new registrations or calls, keeps relaying calls in progress until they end or
--shutdown-grace seconds pass, then exits 0. A second signal exits at once.

LOGS go to stderr, filtered by RUST_LOG (default info; for example RUST_LOG=debug). Under
systemd they go to the journal with a priority per line (journalctl -u pinhole-rendezvous).";

/// What `--help` shows below the flags.
const AFTER_LONG_HELP: &str = "\
READY LINE: once it listens, the server prints one line of JSON on stdout, and nothing else
there, for scripts and supervisors:
  {\"event\":\"ready\",\"udp\":\"IP:PORT\",\"tcp\":\"IP:PORT\",\"alternate\":\"IP:PORT\",\"fingerprint\":\"sha256:HEX\"}
(plus \"metrics\":\"IP:PORT\" when --metrics is on). With --listen IP:0 it is how to learn the
port.

EXIT STATUS: 0 after a clean stop (or good settings with --check-config); 1 when it cannot
start (port in use, unreadable certificate) or fails; 2 for bad settings; 130 or 143 when a
second SIGINT or SIGTERM cut the shutdown short.";

/// The environment variables' common prefix: `PINHOLE_RENDEZVOUS_` + the key in capitals.
pub const ENV_PREFIX: &str = "PINHOLE_RENDEZVOUS_";

/// The flags. Their environment variables are spelled out (clap's `env` takes a literal); a
/// unit test checks each is [`ENV_PREFIX`] + the key, and each key has a flag.
#[derive(Debug, Parser)]
#[command(
    name = "pinhole-rendezvous",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
)]
pub struct Args {
    /// Read settings from this TOML file
    ///
    /// Its keys are the long flags with '_' for '-'. Flags and environment variables win over
    /// it. No file is read unless one is given.
    #[arg(long, value_name = "FILE", env = "PINHOLE_RENDEZVOUS_CONFIG", hide_env_values = true, value_parser = parse_path)]
    pub config: Option<PathBuf>,
    /// Check the settings, print them and exit (0: good, 2: not)
    ///
    /// Reads the file, the environment and the flags, checks the state directory and the
    /// certificate, and prints each setting in effect with where it came from. Writes nothing.
    #[arg(long)]
    pub check_config: bool,
    /// Address to listen on, UDP and TCP
    ///
    /// One port serves both. 0.0.0.0 is every IPv4 interface, [::] every IPv6 one; port 0
    /// picks a free one (the ready line says which).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:3478",
          env = "PINHOLE_RENDEZVOUS_LISTEN", hide_env_values = true, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Most apps registered at once
    ///
    /// Each holds one TLS control connection; more are refused.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          env = "PINHOLE_RENDEZVOUS_MAX_REGISTRATIONS", hide_env_values = true, value_parser = parse_max_registrations)]
    pub max_registrations: usize,
    /// Seconds without UDP before an app's address is forgotten
    ///
    /// From 1 to 86400.
    #[arg(long, value_name = "SECS", default_value_t = 180,
          env = "PINHOLE_RENDEZVOUS_IDLE_TIMEOUT", hide_env_values = true, value_parser = parse_idle_timeout)]
    pub idle_timeout: u64,
    /// Most control connections from one address
    ///
    /// An IPv6 /64 counts as one address. Raise it when many users share one address (a
    /// carrier-grade NAT, an office).
    #[arg(long, value_name = "N", default_value_t = 16,
          env = "PINHOLE_RENDEZVOUS_MAX_CONNECTIONS_PER_ADDRESS", hide_env_values = true,
          value_parser = parse_max_connections_per_address)]
    pub max_connections_per_address: usize,
    /// UDP datagrams per system call, 1 to 64
    ///
    /// The batch of recvmmsg/sendmmsg.
    #[arg(long, value_name = "N", default_value_t = 32,
          env = "PINHOLE_RENDEZVOUS_BATCH", hide_env_values = true, value_parser = parse_batch)]
    pub batch: usize,
    /// UDP threads, 1 to 64 (default: the machine's cores)
    ///
    /// Each serves the port from a socket of its own (SO_REUSEPORT); the kernel spreads
    /// clients over them. The default is the number of cores the server may run on.
    #[arg(long, value_name = "N",
          env = "PINHOLE_RENDEZVOUS_UDP_THREADS", hide_env_values = true, value_parser = parse_udp_threads)]
    pub udp_threads: Option<usize>,
    /// Keep the names in this file
    ///
    /// The registered names, each with its owner's public key, go there instead of names.txt
    /// in the state directory. Its directory must exist.
    #[arg(long, value_name = "PATH", env = "PINHOLE_RENDEZVOUS_NAMES_FILE", hide_env_values = true, value_parser = parse_path)]
    pub names_file: Option<PathBuf>,
    /// Keep the names in memory only
    ///
    /// A restart frees every name. In the file or the environment: true or false.
    #[arg(long, env = "PINHOLE_RENDEZVOUS_EPHEMERAL_NAMES", hide_env_values = true, value_parser = parse_switch)]
    pub ephemeral_names: bool,
    /// Where the certificate and the names are kept
    ///
    /// cert.pem, key.pem and names.txt. Default: $STATE_DIRECTORY (systemd's StateDirectory=), else
    /// $XDG_STATE_HOME/pinhole-rendezvous, else ~/.local/state/pinhole-rendezvous.
    #[arg(long, value_name = "DIR", env = "PINHOLE_RENDEZVOUS_STATE_DIR", hide_env_values = true, value_parser = parse_path)]
    pub state_dir: Option<PathBuf>,
    /// A TLS certificate of your own (PEM), with --key
    ///
    /// PEM: the server's certificate, then any intermediates. Served instead of the state
    /// directory's self-signed one.
    #[arg(long, value_name = "PEM", env = "PINHOLE_RENDEZVOUS_CERT", hide_env_values = true, value_parser = parse_path)]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "PEM", env = "PINHOLE_RENDEZVOUS_KEY", hide_env_values = true, value_parser = parse_path)]
    pub key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics
    ///
    /// Off unless given. No authentication: keep it on 127.0.0.1 or behind the firewall.
    #[arg(long, value_name = "IP:PORT", env = "PINHOLE_RENDEZVOUS_METRICS", hide_env_values = true, value_parser = parse_metrics)]
    pub metrics: Option<SocketAddr>,
    /// Be a node of a cluster that shares names, presence and calls through this Redis
    ///
    /// redis://HOST:PORT (or redis://:PASSWORD@HOST:PORT/DB). Every node of the cluster names
    /// the same Redis; users registered on different nodes call each other by name. Keep
    /// Redis on a private network: whoever can write to it can speak for any node.
    #[arg(long, value_name = "redis://HOST:PORT", env = "PINHOLE_RENDEZVOUS_CLUSTER", hide_env_values = true, value_parser = parse_cluster)]
    pub cluster: Option<String>,
    /// The address other nodes of the cluster reach this node at (its UDP and TCP port)
    ///
    /// Default: --listen, which then must not be a wildcard address (0.0.0.0 or [::]).
    #[arg(long, value_name = "IP:PORT", env = "PINHOLE_RENDEZVOUS_ADVERTISE", hide_env_values = true, value_parser = parse_advertise)]
    pub advertise: Option<SocketAddr>,
    /// Seconds calls in progress go on after SIGTERM
    ///
    /// On SIGTERM or SIGINT, keep relaying calls in progress for up to this many seconds
    /// (0 to 3600) before exiting. Keep it below systemd's TimeoutStopSec.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          env = "PINHOLE_RENDEZVOUS_SHUTDOWN_GRACE", hide_env_values = true, value_parser = parse_shutdown_grace)]
    pub shutdown_grace: u64,
    /// Log lines: auto, text, journald or json
    ///
    /// How log lines on stderr look: auto (journald when started by systemd, i.e.
    /// $JOURNAL_STREAM is set, else text), text, journald (a <N> priority prefix, no time, no
    /// colour) or json (one object per line).
    #[arg(long, value_name = "FORMAT", default_value = "auto",
          env = "PINHOLE_RENDEZVOUS_LOG_FORMAT", hide_env_values = true, value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// TEST ONLY: answer to private addresses
    ///
    /// Also sends the first answer of the NAT test to loopback and private addresses an app
    /// lists. Never on a public server: it lets apps aim the server's UDP at its own
    /// network.
    #[arg(long, env = "PINHOLE_RENDEZVOUS_ALLOW_PRIVATE_TARGETS", hide_env_values = true, value_parser = parse_switch)]
    pub allow_private_targets: bool,
    /// BENCH AND TEST ONLY: no per-client limits
    ///
    /// No limits on calls, rings, registrations and names per connection, key and address,
    /// and up to --max-registrations connections from one address. Never on
    /// a public server.
    #[arg(long, env = "PINHOLE_RENDEZVOUS_NO_LIMITS", hide_env_values = true, value_parser = parse_switch)]
    pub no_limits: bool,
}

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Journald when `$JOURNAL_STREAM` is set (systemd sets it for a service whose stderr is
    /// the journal), else text.
    Auto,
    /// Time, level, target, message and fields; coloured on a terminal.
    Text,
    /// `<N>` sd-daemon priority prefix, then the message and fields; no time (the journal
    /// adds its own), no colour.
    Journald,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// [`LogFormat::Auto`] decided: journald under systemd (`JOURNAL_STREAM` set), else text.
    pub fn resolve(self, journal_stream: Option<&std::ffi::OsStr>) -> LogFormat {
        match self {
            LogFormat::Auto if journal_stream.is_some_and(|v| !v.is_empty()) => LogFormat::Journald,
            LogFormat::Auto => LogFormat::Text,
            other => other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Journald => "journald",
            LogFormat::Json => "json",
        }
    }
}

/// The settings in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// UDP and TCP address.
    pub listen: SocketAddr,
    /// Most registrations (and control connections) at once.
    pub max_registrations: usize,
    /// How long an app's address is kept without UDP from it.
    pub idle_timeout: Duration,
    /// Most control connections from one address.
    pub max_connections_per_address: usize,
    /// Datagrams per system call.
    pub batch: usize,
    /// UDP threads (each with a socket of its own on the port).
    pub udp_threads: usize,
    /// The names file, when not the state directory's.
    pub names_file: Option<PathBuf>,
    /// Names in memory only.
    pub ephemeral_names: bool,
    /// The state directory, when given (see [`Settings::state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// A certificate of the operator's own, with [`Settings::key`].
    pub cert: Option<PathBuf>,
    /// The key of [`Settings::cert`].
    pub key: Option<PathBuf>,
    /// Where the Prometheus endpoint listens (`None`: off).
    pub metrics: Option<SocketAddr>,
    /// The cluster's Redis (`None`: a server of its own).
    pub cluster: Option<String>,
    /// How other nodes reach this one (`None`: the listening address).
    pub advertise: Option<SocketAddr>,
    /// How long calls in progress are relayed after a stop signal.
    pub shutdown_grace: Duration,
    /// How log lines look.
    pub log_format: LogFormat,
    /// Test only: the NAT test's answer may go to private addresses.
    pub allow_private_targets: bool,
    /// Bench and test only: no per-client limits.
    pub no_limits: bool,
}

impl Settings {
    /// The state directory: the configured one, else `$STATE_DIRECTORY` (its first entry),
    /// else `$XDG_STATE_HOME/pinhole-rendezvous`, else `~/.local/state/pinhole-rendezvous`.
    pub fn state_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        // systemd's StateDirectory= may list several, separated by colons: the first is ours.
        if let Some(dirs) = env("STATE_DIRECTORY")
            && let Some(first) = dirs.to_string_lossy().split(':').next()
        {
            return Ok(PathBuf::from(first));
        }
        if let Some(state) = env("XDG_STATE_HOME") {
            return Ok(PathBuf::from(state).join("pinhole-rendezvous"));
        }
        if let Some(home) = env("HOME") {
            return Ok(PathBuf::from(home).join(".local/state/pinhole-rendezvous"));
        }
        Err(ConfigError(
            "no state directory: set state_dir (--state-dir), or STATE_DIRECTORY or HOME".into(),
        ))
    }

    /// One line for the log: every setting as `key=value`.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        for (key, value) in self.values() {
            let value = value.unwrap_or_else(|| "-".into());
            let _ = write!(
                line,
                "{}{key}={value}",
                if line.is_empty() { "" } else { " " }
            );
        }
        line
    }

    /// Each key with its value as the file would spell it (`None`: not set).
    fn values(&self) -> Vec<(&'static str, Option<String>)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        vec![
            ("listen", Some(self.listen.to_string())),
            (
                "max_registrations",
                Some(self.max_registrations.to_string()),
            ),
            (
                "idle_timeout",
                Some(self.idle_timeout.as_secs().to_string()),
            ),
            (
                "max_connections_per_address",
                Some(self.max_connections_per_address.to_string()),
            ),
            ("batch", Some(self.batch.to_string())),
            ("udp_threads", Some(self.udp_threads.to_string())),
            ("names_file", path(&self.names_file)),
            ("ephemeral_names", Some(self.ephemeral_names.to_string())),
            ("state_dir", path(&self.state_dir)),
            ("cert", path(&self.cert)),
            ("key", path(&self.key)),
            ("metrics", self.metrics.map(|m| m.to_string())),
            ("cluster", self.cluster.clone()),
            ("advertise", self.advertise.map(|a| a.to_string())),
            (
                "shutdown_grace",
                Some(self.shutdown_grace.as_secs().to_string()),
            ),
            ("log_format", Some(self.log_format.name().to_string())),
            (
                "allow_private_targets",
                Some(self.allow_private_targets.to_string()),
            ),
            ("no_limits", Some(self.no_limits.to_string())),
        ]
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The config file, at this line.
    File(usize),
    /// `PINHOLE_RENDEZVOUS_<KEY>`.
    Environment,
    /// The command line.
    Flag,
}

impl Source {
    fn describe(&self, key: &str, file: Option<&Path>) -> String {
        match self {
            Source::Default => "default".into(),
            Source::File(line) => match file {
                Some(file) => format!("{} line {line}", file.display()),
                None => format!("config file line {line}"),
            },
            Source::Environment => format!("{ENV_PREFIX}{}", key.to_uppercase()),
            Source::Flag => format!("--{}", key.replace('_', "-")),
        }
    }
}

/// The flags, environment and file, merged.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings in effect.
    pub settings: Settings,
    /// Where each key's value came from (keys not set anywhere: [`Source::Default`]).
    pub sources: BTreeMap<&'static str, Source>,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// `--check-config`: check, print, exit.
    pub check_only: bool,
}

impl Loaded {
    /// The settings as a TOML file (every key; those not set commented out), each with where
    /// its value came from: what `--check-config` prints.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# pinhole-rendezvous {}: the settings in effect (config file: {})\n",
            env!("CARGO_PKG_VERSION"),
            self.config_file
                .as_ref()
                .map_or_else(|| "none".into(), |f| f.display().to_string())
        );
        for (key, value) in self.settings.values() {
            let source = self
                .sources
                .get(key)
                .unwrap_or(&Source::Default)
                .describe(key, self.config_file.as_deref());
            let line = match value {
                Some(value) => format!("{key} = {}", toml_value(key, &value)),
                None => format!("# {key} = (not set)"),
            };
            let _ = writeln!(out, "{line:<48} # {source}");
        }
        out
    }

    /// The line saying where a key's value came from, for error messages.
    fn origin(&self, key: &str) -> String {
        self.sources
            .get(key)
            .unwrap_or(&Source::Default)
            .describe(key, self.config_file.as_deref())
    }
}

/// A key's value as TOML: numbers and switches bare, the rest quoted.
fn toml_value(key: &str, value: &str) -> String {
    match kind_of(key) {
        Some(Kind::Number | Kind::Switch) => value.to_string(),
        _ => toml::Value::String(value.to_string()).to_string(),
    }
}

/// Bad settings, in words for the operator (the binary exits with status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why [`load`] did not produce settings.
#[derive(Debug)]
pub enum LoadError {
    /// From the command-line parser: `--help` or `--version` (print and exit 0), or a bad or
    /// unknown flag (print and exit 2). [`clap::Error::exit`] does both.
    Usage(Box<clap::Error>),
    /// A bad file, environment variable, value or combination.
    Config(ConfigError),
}

/// Parses `args` (the program name first) and the environment, reads the config file they
/// name and merges the three over the defaults.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = match Args::command().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(err) => {
            return Err(match from_environment(&err, &args) {
                Some(message) => LoadError::Config(message),
                None => LoadError::Usage(Box::new(err)),
            });
        }
    };
    let parsed = Args::from_arg_matches(&matches).map_err(|e| LoadError::Usage(Box::new(e)))?;
    merge(&parsed, &matches).map_err(LoadError::Config)
}

/// When clap refused a value that came from the environment (its flag is not on the command
/// line), the message naming the variable, as the file's name the file and line: clap's own
/// names only the flag, which the operator did not type.
fn from_environment(err: &clap::Error, args: &[OsString]) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a.strip_prefix("--")
            .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
    });
    if on_command_line {
        return None;
    }
    let command = Args::command();
    let variable = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_string_lossy()
        .into_owned();
    let value = std::env::var_os(&variable)?;
    // The value parser's own words; clap's wrapper around them is about the flag.
    let why = std::error::Error::source(err).map_or_else(
        || format!("{:?} is not a valid value", value.to_string_lossy()),
        ToString::to_string,
    );
    Some(ConfigError(format!(
        "environment variable {variable}: {why}"
    )))
}

/// What a key's value is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string (addresses, formats).
    Text,
    /// A string naming a file or directory, relative to the config file's directory.
    Path,
    /// A whole number.
    Number,
    /// `true` or `false`.
    Switch,
}

/// Every key the file may hold, in the order `--help` and [`Loaded::render`] list them.
const KEYS: &[(&str, Kind)] = &[
    ("listen", Kind::Text),
    ("max_registrations", Kind::Number),
    ("idle_timeout", Kind::Number),
    ("max_connections_per_address", Kind::Number),
    ("batch", Kind::Number),
    ("udp_threads", Kind::Number),
    ("names_file", Kind::Path),
    ("ephemeral_names", Kind::Switch),
    ("state_dir", Kind::Path),
    ("cert", Kind::Path),
    ("key", Kind::Path),
    ("metrics", Kind::Text),
    ("cluster", Kind::Text),
    ("advertise", Kind::Text),
    ("shutdown_grace", Kind::Number),
    ("log_format", Kind::Text),
    ("allow_private_targets", Kind::Switch),
    ("no_limits", Kind::Switch),
];

fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind)
}

/// A value read from the file, spelled as its flag would take it.
#[derive(Debug, Clone)]
struct FileValue {
    text: String,
    line: usize,
}

/// A config file, read and checked for keys and types (values are checked when merged, by
/// the flags' own parsers).
#[derive(Debug, Clone)]
struct ConfigFile {
    path: PathBuf,
    values: BTreeMap<&'static str, FileValue>,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads and checks `path`: TOML, known keys only, each of the right type.
fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigError(match err.kind() {
            std::io::ErrorKind::NotFound => format!("config file {shown}: no such file"),
            std::io::ErrorKind::InvalidData => format!("config file {shown}: not UTF-8 text"),
            _ => format!("config file {shown}: {err}"),
        })
    })?;
    let table = toml::de::DeTable::parse(&text).map_err(|err| {
        let line = err.span().map_or(1, |span| line_of(&text, span.start));
        ConfigError(format!(
            "{shown} line {line}: not valid TOML: {}",
            err.message().trim_end()
        ))
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut values = BTreeMap::new();
    for (key, value) in table.get_ref() {
        let line = line_of(&text, key.span().start);
        let name: &str = key.get_ref();
        let Some(&(key, kind)) = KEYS.iter().find(|(k, _)| *k == name) else {
            let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            let hint = if name.contains('-') && kind_of(&name.replace('-', "_")).is_some() {
                format!(" (keys are written with '_': `{}`)", name.replace('-', "_"))
            } else {
                String::new()
            };
            return Err(ConfigError(format!(
                "{shown} line {line}: unknown key `{name}`{hint}; known keys: {}",
                known.join(", ")
            )));
        };
        use toml::de::DeValue;
        let text = match (kind, value.get_ref()) {
            (Kind::Text | Kind::Path, DeValue::String(s)) => s.to_string(),
            (Kind::Number, DeValue::Integer(n)) => {
                // TOML integers are 64-bit: anything else is out of every key's range anyway.
                match i64::from_str_radix(n.as_str(), n.radix()) {
                    Ok(n) => n.to_string(),
                    Err(_) => n.as_str().to_string(),
                }
            }
            (Kind::Switch, DeValue::Boolean(b)) => b.to_string(),
            (kind, other) => {
                let expected = match kind {
                    Kind::Text => format!("a string in quotes ({key} = \"...\")"),
                    Kind::Path => format!("a path in quotes ({key} = \"/path\")"),
                    Kind::Number => format!("a whole number without quotes ({key} = 10)"),
                    Kind::Switch => format!("true or false, without quotes ({key} = true)"),
                };
                let found = match other {
                    DeValue::String(_) => "a string",
                    DeValue::Integer(_) => "a number",
                    DeValue::Float(_) => "a number with a fraction",
                    DeValue::Boolean(_) => "true or false",
                    DeValue::Datetime(_) => "a date",
                    DeValue::Array(_) => "a list",
                    DeValue::Table(_) => "a table (the file has no sections)",
                };
                return Err(ConfigError(format!(
                    "{shown} line {line}: `{key}` must be {expected}, not {found}"
                )));
            }
        };
        let text = if kind == Kind::Path && !text.is_empty() && Path::new(&text).is_relative() {
            dir.join(&text).display().to_string()
        } else {
            text
        };
        values.insert(key, FileValue { text, line });
    }
    Ok(ConfigFile {
        path: path.to_path_buf(),
        values,
    })
}

/// Picks each setting from the flag, the environment, the file or the default, in that order.
struct Merger<'a> {
    matches: &'a ArgMatches,
    file: Option<ConfigFile>,
    sources: BTreeMap<&'static str, Source>,
}

impl Merger<'_> {
    /// `key`'s value: clap's when it came from the command line or the environment, else the
    /// file's (through the flag's parser), else clap's default (`from_clap`, perhaps `None`).
    fn pick<T>(
        &mut self,
        key: &'static str,
        from_clap: Option<T>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.matches.value_source(key) {
            Some(ValueSource::CommandLine) => {
                self.sources.insert(key, Source::Flag);
                return Ok(from_clap);
            }
            Some(ValueSource::EnvVariable) => {
                self.sources.insert(key, Source::Environment);
                return Ok(from_clap);
            }
            _ => {}
        }
        if let Some(file) = &self.file
            && let Some(value) = file.values.get(key)
        {
            let parsed = parse(&value.text).map_err(|why| {
                ConfigError(format!(
                    "{} line {}: `{key}`: {why}",
                    file.path.display(),
                    value.line
                ))
            })?;
            self.sources.insert(key, Source::File(value.line));
            return Ok(Some(parsed));
        }
        self.sources.insert(key, Source::Default);
        Ok(from_clap)
    }

    /// [`Merger::pick`] for a key with a default.
    fn pick_or<T: Clone>(
        &mut self,
        key: &'static str,
        from_clap: T,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        Ok(self
            .pick(key, Some(from_clap.clone()), parse)?
            .unwrap_or(from_clap))
    }
}

fn merge(args: &Args, matches: &ArgMatches) -> Result<Loaded, ConfigError> {
    let file = args.config.as_deref().map(read_file).transpose()?;
    let config_file = file.as_ref().map(|f| f.path.clone());
    let mut m = Merger {
        matches,
        file,
        sources: BTreeMap::new(),
    };
    let settings = Settings {
        listen: m.pick_or("listen", args.listen, parse_listen)?,
        max_registrations: m.pick_or(
            "max_registrations",
            args.max_registrations,
            parse_max_registrations,
        )?,
        idle_timeout: Duration::from_secs(m.pick_or(
            "idle_timeout",
            args.idle_timeout,
            parse_idle_timeout,
        )?),
        max_connections_per_address: m.pick_or(
            "max_connections_per_address",
            args.max_connections_per_address,
            parse_max_connections_per_address,
        )?,
        batch: m.pick_or("batch", args.batch, parse_batch)?,
        udp_threads: m
            .pick("udp_threads", args.udp_threads, parse_udp_threads)?
            .unwrap_or_else(default_udp_threads),
        names_file: m.pick("names_file", args.names_file.clone(), parse_path)?,
        ephemeral_names: m.pick_or("ephemeral_names", args.ephemeral_names, parse_switch)?,
        state_dir: m.pick("state_dir", args.state_dir.clone(), parse_path)?,
        cert: m.pick("cert", args.cert.clone(), parse_path)?,
        key: m.pick("key", args.key.clone(), parse_path)?,
        metrics: m.pick("metrics", args.metrics, parse_metrics)?,
        cluster: m.pick("cluster", args.cluster.clone(), parse_cluster)?,
        advertise: m.pick("advertise", args.advertise, parse_advertise)?,
        shutdown_grace: Duration::from_secs(m.pick_or(
            "shutdown_grace",
            args.shutdown_grace,
            parse_shutdown_grace,
        )?),
        log_format: m.pick_or("log_format", args.log_format, parse_log_format)?,
        allow_private_targets: m.pick_or(
            "allow_private_targets",
            args.allow_private_targets,
            parse_switch,
        )?,
        no_limits: m.pick_or("no_limits", args.no_limits, parse_switch)?,
    };
    let loaded = Loaded {
        settings,
        sources: m.sources,
        config_file,
        check_only: args.check_config,
    };
    check_combinations(&loaded)?;
    Ok(loaded)
}

/// Settings that are good alone but not together; the message says where each came from.
fn check_combinations(loaded: &Loaded) -> Result<(), ConfigError> {
    let s = &loaded.settings;
    if s.names_file.is_some() && s.ephemeral_names {
        return Err(ConfigError(format!(
            "names_file (from {}) and ephemeral_names (from {}) contradict each other: names are \
             kept in a file or in memory only; drop one",
            loaded.origin("names_file"),
            loaded.origin("ephemeral_names")
        )));
    }
    if s.advertise.is_some() && s.cluster.is_none() {
        return Err(ConfigError(format!(
            "advertise (from {}) is for a node of a cluster: give cluster too (redis://HOST:PORT)",
            loaded.origin("advertise")
        )));
    }
    if s.cluster.is_some() && s.advertise.is_none() && s.listen.ip().is_unspecified() {
        return Err(ConfigError(format!(
            "cluster (from {}) with listen {} (a wildcard): give advertise, the address the other \
             nodes reach this one at",
            loaded.origin("cluster"),
            s.listen
        )));
    }
    match (&s.cert, &s.key) {
        (Some(_), None) => {
            return Err(ConfigError(format!(
                "cert (from {}) needs key too: the certificate's private key (PEM)",
                loaded.origin("cert")
            )));
        }
        (None, Some(_)) => {
            return Err(ConfigError(format!(
                "key (from {}) needs cert too: the certificate it belongs to (PEM)",
                loaded.origin("key")
            )));
        }
        _ => {}
    }
    if let Some(metrics) = s.metrics {
        let same_host = metrics.ip() == s.listen.ip()
            || metrics.ip().is_unspecified()
            || s.listen.ip().is_unspecified();
        if metrics.port() != 0 && metrics.port() == s.listen.port() && same_host {
            return Err(ConfigError(format!(
                "metrics {metrics} (from {}) is on the port the server listens on ({}, from {}): \
                 give it a port of its own, for example 127.0.0.1:9478",
                loaded.origin("metrics"),
                s.listen,
                loaded.origin("listen")
            )));
        }
    }
    Ok(())
}

// The parsers below serve the flags (clap's `value_parser`), the environment (through clap)
// and the file alike, so a bad value reads the same wherever it was written.

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "`{s}` is not an IP address with a port: write 0.0.0.0:3478, [::]:3478 or \
             192.0.2.7:3478 (host names are not taken)"
        )
    })
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s)
}

fn parse_metrics(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s)
}

fn parse_advertise(s: &str) -> Result<SocketAddr, String> {
    let addr = parse_addr(s)?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(format!(
            "`{s}` is not an address other nodes can reach (no wildcard address, no port 0)"
        ));
    }
    Ok(addr)
}

/// A Redis URL: `redis://HOST[:PORT][/DB]`, with an optional `:PASSWORD@` (or `USER:PASSWORD@`).
fn parse_cluster(s: &str) -> Result<String, String> {
    let s = s.trim();
    let rest = s.strip_prefix("redis://").ok_or_else(|| {
        format!("`{s}` is not a Redis address: redis://HOST:PORT (rediss:// is not supported)")
    })?;
    let host = rest.rsplit('@').next().unwrap_or_default();
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("`{s}` names no host: redis://HOST:PORT"));
    }
    Ok(s.to_string())
}

/// A whole number from `min` to `max`.
fn whole(s: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a whole number of {unit} from {min} to {max}"
        )),
    }
}

/// `whole` for counts held in a `usize`.
fn count(s: &str, min: u64, max: u64, unit: &str) -> Result<usize, String> {
    let n = whole(s, min, max, unit)?;
    usize::try_from(n).map_err(|_| format!("`{s}` is too large for this machine"))
}

fn parse_max_registrations(s: &str) -> Result<usize, String> {
    count(s, 1, 10_000_000, "registrations")
}

fn parse_idle_timeout(s: &str) -> Result<u64, String> {
    whole(s, 1, 86_400, "seconds")
}

fn parse_max_connections_per_address(s: &str) -> Result<usize, String> {
    count(s, 1, 10_000_000, "connections")
}

fn parse_batch(s: &str) -> Result<usize, String> {
    count(s, 1, 64, "datagrams")
}

fn parse_udp_threads(s: &str) -> Result<usize, String> {
    count(s, 1, MAX_UDP_THREADS as u64, "threads")
}

/// Most UDP threads (`udp_threads`).
pub const MAX_UDP_THREADS: usize = crate::rendezvous::MAX_UDP_THREADS;

/// `udp_threads` when not set: the cores this process may run on (its CPU affinity, as
/// `taskset` or systemd's `CPUAffinity=` leave it), at most [`MAX_UDP_THREADS`].
pub fn default_udp_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_UDP_THREADS)
}

fn parse_shutdown_grace(s: &str) -> Result<u64, String> {
    whole(s, 0, 3600, "seconds")
}

fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("an empty path: give a file or directory".into());
    }
    Ok(PathBuf::from(s))
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("`{s}` is not a switch: write true or false")),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(LogFormat::Auto),
        "text" => Ok(LogFormat::Text),
        "journald" => Ok(LogFormat::Journald),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "`{s}` is not a log format: write auto, text, journald or json"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_its_flag_and_variable() {
        let command = Args::command();
        for (key, _) in KEYS {
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .unwrap_or_else(|| panic!("no --{long} for key {key}"));
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no env"));
            assert_eq!(
                env.to_string_lossy(),
                format!("{ENV_PREFIX}{}", key.to_uppercase())
            );
        }
        Args::command().debug_assert();
    }

    /// `load` with `--config` holding `text`: its error.
    fn file_error(text: &str) -> String {
        let dir = std::env::temp_dir().join(format!(
            "pinhole-server-config-{}-{:x}",
            std::process::id(),
            text.len() * 7919 + text.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("rendezvous.toml");
        std::fs::write(&file, text).expect("write");
        let result = load([
            "pinhole-rendezvous".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Err(LoadError::Config(err)) => {
                let shown = file.display().to_string();
                err.0
                    .strip_prefix(&shown)
                    .map_or(err.0.clone(), str::to_string)
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn file_errors_name_the_line_and_key() {
        let cases = [
            (
                "listen = \"0.0.0.0:3478\"\n\nlistn = 1\n",
                " line 3: unknown key `listn`; known keys: listen, max_registrations,",
            ),
            (
                "batch = \"32\"\n",
                " line 1: `batch` must be a whole number",
            ),
            (
                "\nbatch = 65\n",
                " line 2: `batch`: `65` is not a whole number of datagrams from 1 to 64",
            ),
            (
                "max-registrations = 5\n",
                "keys are written with '_': `max_registrations`",
            ),
            (
                "[server]\nlisten = \"x\"\n",
                " line 1: unknown key `server`",
            ),
            ("listen = \n", " line 1: not valid TOML"),
            (
                "log_format = \"xml\"\n",
                " line 1: `log_format`: `xml` is not a log format",
            ),
            (
                "listen = \"localhost:3478\"\n",
                " line 1: `listen`: `localhost:3478` is not an IP",
            ),
            (
                "ephemeral_names = \"yes\"\n",
                " line 1: `ephemeral_names` must be true or false",
            ),
            ("batch = 1\nbatch = 2\n", " line 2: not valid TOML"),
        ];
        for (text, expected) in cases {
            let err = file_error(text);
            assert!(
                err.starts_with(expected) || err.contains(expected),
                "{text:?}: {err}"
            );
        }
        let err = file_error("names_file = \"n.txt\"\nephemeral_names = true\n");
        assert!(err.contains("contradict"), "{err}");
        assert!(
            err.contains("rendezvous.toml line 1") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_in_the_file_are_relative_to_its_directory() {
        let dir =
            std::env::temp_dir().join(format!("pinhole-server-config-rel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("rendezvous.toml");
        std::fs::write(&file, "state_dir = \"state\"\ncert = \"/etc/ssl/a.pem\"\n").expect("write");
        let read = read_file(&file).expect("read");
        assert_eq!(
            read.values["state_dir"].text,
            dir.join("state").display().to_string()
        );
        assert_eq!(read.values["cert"].text, "/etc/ssl/a.pem");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
