//! `pinhole-rendezvous`: the rendezvous server of the patent (its server S).
//!
//! Listens on one port for both UDP and TCP (default 0.0.0.0:3478).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::SignalKind;
use traversal::stun;

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
        let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            result = serve_udp(&udp) => result?,
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        drop(tcp);
        anyhow::Ok(())
    })
}

/// Answers RFC 8489 Binding Requests with the source address they came from. Anything else is
/// counted and dropped: a malformed datagram never stops the server.
async fn serve_udp(socket: &tokio::net::UdpSocket) -> anyhow::Result<()> {
    let mut buf = [0u8; stun::MAX_MESSAGE_LEN + 1];
    let mut answer = [0u8; 44];
    let mut dropped: u64 = 0;
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors from earlier sends surface here on Linux; they are not fatal.
            Err(err) => {
                tracing::debug!("UDP receive: {err}");
                continue;
            }
        };
        match stun::Message::decode(&buf[..len]) {
            Ok(request) if request.kind == stun::BINDING_REQUEST => {
                let from =
                    std::net::SocketAddr::new(traversal::addr::normalize(from.ip()), from.port());
                let n = stun::encode_binding_success(&request.transaction_id, from, &mut answer);
                if let Err(err) = socket.send_to(&answer[..n], from).await {
                    tracing::debug!(%from, "UDP send: {err}");
                }
            }
            Ok(other) => {
                dropped += 1;
                tracing::debug!(%from, kind = other.kind, dropped, "unhandled STUN message");
            }
            Err(err) => {
                dropped += 1;
                tracing::debug!(%from, dropped, "malformed datagram: {err}");
            }
        }
    }
}
