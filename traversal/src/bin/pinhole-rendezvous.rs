//! `pinhole-rendezvous`: the rendezvous server of the patent (its server S).
//!
//! Listens on one port for both UDP and TCP (default 0.0.0.0:3478). The serving is
//! [`traversal::rendezvous`]; this file holds the flags, the logging and the signals.
//!
//! Ready signal: once both sockets listen (and the alternate UDP port that answers filtering
//! probes), the server prints ONE line of JSON on stdout and nothing else there:
//!
//! ```text
//! {"event":"ready","udp":"127.0.0.1:41234","tcp":"127.0.0.1:41234","alternate":"127.0.0.1:41235"}
//! ```
//!
//! A supervisor or a test reads that line instead of the log (stderr), whose wording may
//! change; with `--listen HOST:0` it is the way to learn the port. Tests start the server
//! through `pinhole_tests::Rendezvous`, which waits for it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::SignalKind;
use traversal::rendezvous::{self, RendezvousConfig};
use traversal::server;

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
                  {\"event\":\"ready\",\"udp\":\"IP:PORT\",\"tcp\":\"IP:PORT\",\"alternate\":\"IP:PORT\"}, \
                  and nothing else there (the log goes to stderr)."
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
    /// Datagrams moved per system call on the UDP path (recvmmsg/sendmmsg), 1 to 64.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Keep the name table (each name and the public key it belongs to) in this file, so a
    /// restart does not free every name. Written atomically when a name is bound. Without it
    /// names live in memory only.
    #[arg(long, value_name = "PATH")]
    names_file: Option<std::path::PathBuf>,
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
    let config = RendezvousConfig {
        listen: args.listen,
        server: server::Config {
            max_registrations: args.max_registrations,
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            allow_private_targets: args.allow_private_targets,
            ..server::Config::default()
        },
        batch: args.batch,
        names_file: args.names_file.clone(),
    };
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
        say_ready(addr, server.alternate_addr());
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
fn say_ready(addr: SocketAddr, alternate: SocketAddr) {
    use std::io::Write;
    // Socket addresses print without quotes or backslashes: no escaping needed.
    let line =
        format!(r#"{{"event":"ready","udp":"{addr}","tcp":"{addr}","alternate":"{alternate}"}}"#);
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!("ready line not written: {err}");
    }
}
