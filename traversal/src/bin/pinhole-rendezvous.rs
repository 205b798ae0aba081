//! `pinhole-rendezvous`: the rendezvous server of the patent (its server S).
//!
//! Listens on one port for both UDP and TCP (default 0.0.0.0:3478).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

/// Pinhole's rendezvous server: NAT detection, registrations and call set-up for Pinhole clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on, for both UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:3478")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let udp = tokio::net::UdpSocket::bind(args.listen)
            .await
            .with_context(|| format!("binding UDP {}", args.listen))?;
        let tcp = tokio::net::TcpListener::bind(udp.local_addr()?)
            .await
            .with_context(|| format!("binding TCP {}", args.listen))?;
        tracing::info!(udp = %udp.local_addr()?, tcp = %tcp.local_addr()?, "listening");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
        anyhow::Ok(())
    })
}
