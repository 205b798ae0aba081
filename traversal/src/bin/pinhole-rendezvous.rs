//! `pinhole-rendezvous`: the server Pinhole apps register with to call each other by name.
//!
//! It listens on one port for both UDP and TCP (default 0.0.0.0:3478) and sends the NAT
//! test's filtering probes from a second UDP port the system picks. The serving is
//! [`traversal::rendezvous`]; the settings (flags > `PINHOLE_RENDEZVOUS_*` environment >
//! `--config` TOML file > defaults) are [`traversal::server_config`]; this file holds the
//! logging, the start, the signals and `--check-config`. `--help` is the operator's manual.
//!
//! Control connections are TLS 1.3 only. The certificate is `--cert`/`--key`, or a self-signed
//! one made on first start in the state directory (`--state-dir`; by default
//! `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/pinhole-rendezvous`, else
//! `~/.local/state/pinhole-rendezvous`) as `cert.pem` and `key.pem` (mode 0600) and reused
//! afterwards. Its fingerprint, which clients pin, is in the log and the ready line. The name
//! table is kept in the state directory's `names.txt` unless `--names-file` says where or
//! `--ephemeral-names` keeps it in memory.
//!
//! Logs go to stderr: text, or under systemd (`$JOURNAL_STREAM` set, or `--log-format
//! journald`) one line per event with its sd-daemon priority (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug) and no time or colour, which journald files under that priority; or
//! `--log-format json`. The first line after the certificate is the settings in effect.
//!
//! Ready signal: once both sockets listen (and the alternate UDP port that sends filtering
//! probes), the server prints ONE line of JSON on stdout and nothing else there:
//!
//! ```text
//! {"event":"ready","udp":"127.0.0.1:41234","tcp":"127.0.0.1:41234","alternate":"127.0.0.1:41235","fingerprint":"sha256:9f86d0..."}
//! ```
//!
//! with `"metrics":"IP:PORT"` added when the metrics endpoint is on. A supervisor or a test
//! reads that line instead of the log (stderr), whose wording may change; with `--listen
//! HOST:0` it is the way to learn the port. Tests start the server through
//! `pinhole_tests::Rendezvous`, which waits for it.
//!
//! Stopping: SIGTERM or SIGINT starts a graceful shutdown (apps are told the server is going
//! away, calls in progress are relayed for up to `--shutdown-grace`), then exit 0; a second
//! signal exits at once with 128 + its number. Exit 1: could not start or failed; exit 2: bad
//! settings.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::SignalKind;
use traversal::rendezvous::{self, RendezvousConfig};
use traversal::server;
use traversal::server_config::{self, LoadError, Loaded, LogFormat, Settings};
use traversal::tls::{Fingerprint, ServerIdentity};

/// Exit status for bad settings (as clap's usage errors).
const EXIT_BAD_SETTINGS: u8 = 2;

fn main() -> ExitCode {
    let loaded = match server_config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        // --help and --version print on stdout and exit 0; a bad flag exits 2.
        Err(LoadError::Usage(err)) => err.exit(),
        Err(LoadError::Config(err)) => {
            eprintln!("pinhole-rendezvous: {err}");
            return ExitCode::from(EXIT_BAD_SETTINGS);
        }
    };
    if loaded.check_only {
        return check_config(&loaded);
    }
    init_logging(loaded.settings.log_format);
    match run(&loaded) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the checks a start makes before it binds anything (settings, state
/// directory, certificate and key, the names file's directory), the settings on stdout.
fn check_config(loaded: &Loaded) -> ExitCode {
    print!("{}", loaded.render());
    let s = &loaded.settings;
    let mut problems = Vec::new();
    if let Err(problem) = check_state(s) {
        problems.push(problem);
    }
    match load_identity(s, true) {
        Ok(Some(identity)) => println!("# certificate fingerprint: {}", identity.fingerprint()),
        Ok(None) => println!("# certificate: made in the state directory at the first start"),
        Err(err) => problems.push(format!("{err:#}")),
    }
    if problems.is_empty() {
        println!("# the settings are good");
        return ExitCode::SUCCESS;
    }
    for problem in problems {
        eprintln!("pinhole-rendezvous: {problem}");
    }
    ExitCode::from(EXIT_BAD_SETTINGS)
}

/// The state directory and the names file: where they will be, whether that can work.
fn check_state(s: &Settings) -> Result<(), String> {
    let state = s.state_dir().map_err(|e| e.to_string())?;
    let state_shown = state.display();
    if state.exists() && !state.is_dir() {
        return Err(format!("state_dir {state_shown} is not a directory"));
    }
    println!(
        "# state directory: {state_shown}{}",
        if state.is_dir() {
            ""
        } else {
            " (made at start)"
        }
    );
    if let Some(file) = names_file(s, &state) {
        if s.names_file.is_some() {
            rendezvous::check_names_file(&file).map_err(|e| format!("names_file: {e}"))?;
        }
        println!("# names file: {}", file.display());
    }
    Ok(())
}

/// Where the names are kept: `None` in memory only.
fn names_file(s: &Settings, state: &std::path::Path) -> Option<PathBuf> {
    match (&s.names_file, s.ephemeral_names) {
        (_, true) => None,
        (Some(file), false) => Some(file.clone()),
        (None, false) => Some(state.join("names.txt")),
    }
}

/// The TLS certificate: `cert`/`key`, else the state directory's, made there when neither
/// file is there, unless `dry_run` (`--check-config` writes nothing: `None`, the start will
/// make it).
fn load_identity(s: &Settings, dry_run: bool) -> anyhow::Result<Option<ServerIdentity>> {
    if let (Some(cert), Some(key)) = (&s.cert, &s.key) {
        return ServerIdentity::from_pem_files(cert, key)
            .with_context(|| {
                format!(
                    "the certificate {} with the key {}",
                    cert.display(),
                    key.display()
                )
            })
            .map(Some);
    }
    let state = s.state_dir()?;
    if dry_run && !state.join("cert.pem").exists() && !state.join("key.pem").exists() {
        return Ok(None);
    }
    ServerIdentity::load_or_create(&state)
        .with_context(|| format!("the certificate in {}", state.display()))
        .map(Some)
}

/// Creates `dir` (mode 0700) if it is not there.
fn create_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
    }
    Ok(())
}

/// Starts serving and waits for a signal; the exit status.
fn run(loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let s = &loaded.settings;
    match &loaded.config_file {
        Some(file) => tracing::info!(config = %file.display(), "settings: {}", s.summary()),
        None => tracing::info!("settings: {}", s.summary()),
    }
    let names_file = match (&s.names_file, s.ephemeral_names) {
        (_, true) => None,
        (Some(file), false) => Some(file.clone()),
        (None, false) => {
            let state = s.state_dir()?;
            create_state_dir(&state)?;
            Some(state.join("names.txt"))
        }
    };
    if let Some(file) = &names_file {
        rendezvous::check_names_file(file)?;
    }
    let identity = load_identity(s, false)?
        .context("no certificate: neither cert and key nor a state directory")?;
    tracing::info!(fingerprint = %identity.fingerprint(), "TLS certificate");
    match &names_file {
        Some(file) => tracing::info!(path = %file.display(), "names file"),
        None => tracing::info!("names in memory only (ephemeral_names)"),
    }
    let config = RendezvousConfig {
        listen: s.listen,
        server: server::Config {
            max_registrations: s.max_registrations,
            idle_timeout: s.idle_timeout,
            allow_private_targets: s.allow_private_targets,
            max_connections_per_ip: if s.no_limits {
                s.max_registrations
            } else {
                s.max_connections_per_address
            },
            calls: traversal::calls::CallsConfig {
                limits: if s.no_limits {
                    traversal::calls::LimitsConfig::none()
                } else {
                    traversal::calls::LimitsConfig::default()
                },
                ..traversal::calls::CallsConfig::default()
            },
            ..server::Config::default()
        },
        batch: s.batch,
        udp_threads: s.udp_threads,
        names_file,
        identity: Some(Arc::new(identity)),
        metrics: s.metrics,
        cluster: s.cluster.clone().map(|redis| rendezvous::ClusterConfig {
            redis,
            advertise: s.advertise,
        }),
    };
    if let Some(cluster) = &s.cluster {
        tracing::info!(redis = %cluster, advertise = ?s.advertise, "a node of a cluster");
    }
    if s.no_limits {
        tracing::warn!(
            "no_limits: no limits on calls, rings, registrations or names (bench and test only)"
        );
    }
    if s.allow_private_targets {
        tracing::warn!(
            "allow_private_targets: the NAT test may answer to private and loopback addresses \
             (test only)"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let grace = s.shutdown_grace;
    let listen = s.listen;
    runtime.block_on(async move {
        let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())
            .context("installing the SIGINT handler")?;
        let server = rendezvous::spawn(config).with_context(|| format!("listening on {listen}"))?;
        let addr = server.local_addr();
        tracing::info!(udp = %addr, tcp = %addr, "listening");
        tracing::info!(udp = %server.alternate_addr(), "alternate port for filtering probes");
        say_ready(
            addr,
            server.alternate_addr(),
            server.fingerprint(),
            server.metrics_addr(),
        );
        let first = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(
            "{first}: shutting down; calls in progress have up to {} s (a second signal stops at \
             once)",
            grace.as_secs()
        );
        let mut shutdown = tokio::task::spawn_blocking(move || server.shut_down_gracefully(grace));
        let second = tokio::select! {
            done = &mut shutdown => {
                done.context("the shutdown")?;
                tracing::info!("stopped");
                return Ok(ExitCode::SUCCESS);
            }
            _ = interrupt.recv() => ("SIGINT", 2u8),
            _ = terminate.recv() => ("SIGTERM", 15u8),
        };
        tracing::warn!("{}: stopping now, cutting calls in progress", second.0);
        // The shutdown thread still holds the server: leaving now is what was asked for.
        std::process::exit(128 + i32::from(second.1));
    })
}

/// Prints the ready line on stdout (see the crate docs). A closed stdout is no reason to stop
/// serving, so a failed write is only logged.
fn say_ready(
    addr: SocketAddr,
    alternate: SocketAddr,
    fingerprint: Fingerprint,
    metrics: Option<SocketAddr>,
) {
    use std::io::Write;
    // Socket addresses and fingerprints print without quotes or backslashes: no escaping.
    let metrics = metrics.map_or_else(String::new, |m| format!(r#","metrics":"{m}""#));
    let line = format!(
        r#"{{"event":"ready","udp":"{addr}","tcp":"{addr}","alternate":"{alternate}","fingerprint":"{fingerprint}"{metrics}}}"#
    );
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!("ready line not written: {err}");
    }
}

/// Logging on stderr in the chosen format, filtered by `RUST_LOG` (default info).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.resolve(std::env::var_os("JOURNAL_STREAM").as_deref()) {
        // No colour anywhere, span fields included (they are formatted when the span opens).
        LogFormat::Journald => builder
            .with_ansi(false)
            .event_format(log_format::Journald::new())
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .event_format(log_format::JsonLines)
            .init(),
        LogFormat::Text | LogFormat::Auto => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}

/// The journald and JSON line formats.
mod log_format {
    use std::fmt;

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    use tracing_subscriber::fmt::{FmtContext, FormattedFields};
    use tracing_subscriber::registry::LookupSpan;

    /// sd-daemon(3) lines: `<N>` priority, then the message and fields; no time (the journal
    /// stamps each entry), no colour, no target. One line per event: journald makes an entry
    /// of each line, so a newline inside a message is written as `\n`.
    #[derive(Debug)]
    pub(super) struct Journald {
        inner: format::Format<format::Full, ()>,
    }

    impl Journald {
        pub(super) fn new() -> Self {
            Journald {
                inner: format::Format::default()
                    .without_time()
                    .with_ansi(false)
                    .with_level(false)
                    .with_target(false),
            }
        }
    }

    impl<S, N> FormatEvent<S, N> for Journald
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            let mut line = String::new();
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let line = line.trim_end_matches('\n').replace('\n', "\\n");
            writeln!(writer, "<{priority}>{line}")
        }
    }

    /// One JSON object per event: `timestamp`, `level`, `target`, `spans` (when inside any),
    /// `message` and the event's fields.
    #[derive(Debug)]
    pub(super) struct JsonLines;

    impl<S, N> FormatEvent<S, N> for JsonLines
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let meta = event.metadata();
            let mut object = serde_json::Map::new();
            let mut time = String::new();
            if SystemTime.format_time(&mut Writer::new(&mut time)).is_ok() {
                object.insert("timestamp".into(), time.into());
            }
            object.insert("level".into(), meta.level().as_str().into());
            object.insert("target".into(), meta.target().into());
            if let Some(scope) = ctx.event_scope() {
                let spans: Vec<serde_json::Value> = scope
                    .from_root()
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<FormattedFields<N>>()
                            .map(|f| f.fields.clone())
                            .unwrap_or_default();
                        if fields.is_empty() {
                            span.name().into()
                        } else {
                            format!("{}{{{fields}}}", span.name()).into()
                        }
                    })
                    .collect();
                object.insert("spans".into(), spans.into());
            }
            event.record(&mut Fields(&mut object));
            writeln!(writer, "{}", serde_json::Value::Object(object))
        }
    }

    /// Puts each field of an event into the JSON object, numbers and booleans as such.
    struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0
                .insert(field.name().into(), format!("{value:?}").into());
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().into(), value.into());
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0.insert(field.name().into(), value.into());
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0.insert(field.name().into(), value.into());
        }
        fn record_bool(&mut self, field: &Field, value: bool) {
            self.0.insert(field.name().into(), value.into());
        }
        fn record_f64(&mut self, field: &Field, value: f64) {
            self.0.insert(field.name().into(), value.into());
        }
    }
}
