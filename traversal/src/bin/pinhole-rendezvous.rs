//! `pinhole-rendezvous`: the rendezvous server of the patent (its server S).
//!
//! Listens on one port for both UDP and TCP (default 0.0.0.0:3478). The serving is
//! [`traversal::rendezvous`]; this file holds the flags, the logging and the signals.
//!
//! Control connections are TLS 1.3 only. The certificate is `--cert`/`--key`, or a self-signed
//! one made on first start in the state directory (`--state-dir`; by default
//! `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/pinhole-rendezvous`, else
//! `~/.local/state/pinhole-rendezvous`) as `cert.pem` and `key.pem` (mode 0600) and reused
//! afterwards. Its fingerprint, which clients pin, is in the log and the ready line. The name
//! table is kept in the state directory's `names.txt` unless `--names-file` says where or
//! `--ephemeral-names` keeps it in memory.
//!
//! Ready signal: once both sockets listen (and the alternate UDP port that answers filtering
//! probes), the server prints ONE line of JSON on stdout and nothing else there:
//!
//! ```text
//! {"event":"ready","udp":"127.0.0.1:41234","tcp":"127.0.0.1:41234","alternate":"127.0.0.1:41235","fingerprint":"sha256:9f86d0..."}
//! ```
//!
//! A supervisor or a test reads that line instead of the log (stderr), whose wording may
//! change; with `--listen HOST:0` it is the way to learn the port. Tests start the server
//! through `pinhole_tests::Rendezvous`, which waits for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::SignalKind;
use traversal::rendezvous::{self, RendezvousConfig};
use traversal::server;
use traversal::tls::{Fingerprint, ServerIdentity};

/// Pinhole's rendezvous server: NAT detection (the patent's exchange), registrations with
/// keepalives and probes through the client's mapping, names with keys, call signalling, a
/// relay between the two parties of a call and an echo service, and plain STUN Binding answers
/// for any STUN client.
#[derive(Debug, Parser)]
#[command(
    name = "pinhole-rendezvous",
    version,
    about = "Pinhole's rendezvous server: NAT detection, registrations, names, call signalling, \
             relay and echo, and plain STUN answers, on one UDP and TCP port.",
    after_help = "Ready signal: once it listens, the server prints one JSON line on stdout, \
                  {\"event\":\"ready\",\"udp\":\"IP:PORT\",\"tcp\":\"IP:PORT\",\"alternate\":\"IP:PORT\",\
                  \"fingerprint\":\"sha256:HEX\"}, and nothing else there (the log goes to stderr)."
)]
struct Args {
    /// Address to listen on, for both UDP and TCP. Port 0 picks a free port (the ready line on
    /// stdout says which).
    #[arg(long, default_value = "0.0.0.0:3478")]
    listen: SocketAddr,
    /// Most registrations (and TCP control connections) held at once; more are refused with
    /// an error.
    #[arg(long, default_value_t = 100_000)]
    max_registrations: usize,
    /// Seconds without UDP from a client's mapping before the server forgets the mapping.
    #[arg(long, default_value_t = 180)]
    idle_timeout: u64,
    /// TEST ONLY: also send the P4 acknowledgement to loopback and private addresses a client
    /// lists (never to multicast, broadcast or unspecified ones). Never use it on a public
    /// server: it lets clients aim the server's UDP at its own network.
    #[arg(long)]
    allow_private_targets: bool,
    /// Most control connections open at once from one address (an IPv6 /64). Raise it for a
    /// server whose users share one address (a carrier NAT).
    #[arg(long, default_value_t = 16)]
    max_connections_per_address: usize,
    /// BENCH AND TEST ONLY: none of the limits on calls, rings, registrations and names (per
    /// connection, key and address), and up to --max-registrations connections from one
    /// address, so thousands of clients and calls can run from one machine. Never on a public
    /// server.
    #[arg(long)]
    no_limits: bool,
    /// Datagrams moved per system call on the UDP path (recvmmsg/sendmmsg), 1 to 64.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Keep the name table (each name and the public key it belongs to) in this file instead
    /// of the state directory's names.txt. Written atomically when a name is bound.
    #[arg(long, value_name = "PATH", conflicts_with = "ephemeral_names")]
    names_file: Option<PathBuf>,
    /// Keep the name table in memory only: a restart frees every name.
    #[arg(long)]
    ephemeral_names: bool,
    /// Where the server keeps its state: cert.pem and key.pem (made on first start unless
    /// --cert and --key are given) and names.txt. Default: $STATE_DIRECTORY, else
    /// $XDG_STATE_HOME/pinhole-rendezvous, else ~/.local/state/pinhole-rendezvous.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The TLS certificate (PEM, end entity first, then any intermediates) instead of the state
    /// directory's self-signed one. With --key.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
}

/// The state directory the flags and the environment name (see `--state-dir`).
fn state_dir(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.state_dir {
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
    anyhow::bail!("no state directory: give --state-dir (or set STATE_DIRECTORY or HOME)")
}

/// Creates `dir` (mode 0700) if it is not there.
fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let names_file = match (&args.names_file, args.ephemeral_names) {
        (_, true) => None,
        (Some(file), false) => Some(file.clone()),
        (None, false) => {
            let state = state_dir(&args)?;
            create_state_dir(&state)?;
            Some(state.join("names.txt"))
        }
    };
    if let Some(file) = &names_file {
        rendezvous::check_names_file(file)?;
    }
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => ServerIdentity::from_pem_files(cert, key)
            .with_context(|| format!("loading --cert {}", cert.display()))?,
        _ => {
            let state = state_dir(&args)?;
            ServerIdentity::load_or_create(&state)
                .with_context(|| format!("the certificate in {}", state.display()))?
        }
    };
    tracing::info!(fingerprint = %identity.fingerprint(), "TLS certificate");
    match &names_file {
        Some(file) => tracing::info!(path = %file.display(), "names file"),
        None => tracing::info!("names in memory only (--ephemeral-names)"),
    }
    let config = RendezvousConfig {
        listen: args.listen,
        server: server::Config {
            max_registrations: args.max_registrations,
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            allow_private_targets: args.allow_private_targets,
            max_connections_per_ip: if args.no_limits {
                args.max_registrations
            } else {
                args.max_connections_per_address.max(1)
            },
            calls: traversal::calls::CallsConfig {
                limits: if args.no_limits {
                    traversal::calls::LimitsConfig::none()
                } else {
                    traversal::calls::LimitsConfig::default()
                },
                ..traversal::calls::CallsConfig::default()
            },
            ..server::Config::default()
        },
        batch: args.batch,
        names_file,
        identity: Some(Arc::new(identity)),
    };
    if args.no_limits {
        tracing::warn!(
            "--no-limits: no limits on calls, rings, registrations or names (bench and test only)"
        );
    }
    if config.server.allow_private_targets {
        tracing::warn!(
            "--allow-private-targets: P4 may go to private and loopback addresses (test only)"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let server =
            rendezvous::spawn(config).with_context(|| format!("listening on {}", args.listen))?;
        let addr = server.local_addr();
        tracing::info!(udp = %addr, tcp = %addr, "listening");
        tracing::info!(udp = %server.alternate_addr(), "alternate port for filtering probes");
        say_ready(addr, server.alternate_addr(), server.fingerprint());
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        server.stop();
        anyhow::Ok(())
    })
}

/// Prints the ready line on stdout (see the crate docs). A closed stdout is no reason to stop
/// serving, so a failed write is only logged.
fn say_ready(addr: SocketAddr, alternate: SocketAddr, fingerprint: Fingerprint) {
    use std::io::Write;
    // Socket addresses and fingerprints print without quotes or backslashes: no escaping.
    let line = format!(
        r#"{{"event":"ready","udp":"{addr}","tcp":"{addr}","alternate":"{alternate}","fingerprint":"{fingerprint}"}}"#
    );
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!("ready line not written: {err}");
    }
}
