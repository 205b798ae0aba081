//! Network work the views start and never wait for: the NAT check (the traversal exchange
//! against the server, on a thread with its own runtime) and the rendezvous server the app runs
//! inside itself when no server is configured.
//!
//! The built-in server keeps its certificate (and its names) in a directory beside the
//! settings, so a restarted app presents the same certificate; the app's own client pins that
//! certificate's fingerprint ([`embedded_trust`]) and never asks about it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use traversal::driver::{Driver, Options};
use traversal::rendezvous::{self, Rendezvous, RendezvousConfig};
use traversal::tls::{ClientTrust, ServerIdentity};

use super::sound::Wake;

/// The port the embedded server tries first (the usual rendezvous/STUN port), before any port.
pub const EMBEDDED_PORT: u16 = 3478;

/// What a NAT check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// `public`, `proxy` or `nat`.
    pub verdict: String,
    /// The address the server saw our UDP come from.
    pub mapped: SocketAddr,
    /// How long the check took.
    pub elapsed: Duration,
}

impl NatReport {
    /// The verdict in words.
    pub fn describe(&self) -> &'static str {
        match self.verdict.as_str() {
            "public" => "Public address: no NAT in the way",
            "proxy" => "Public address behind a proxy or firewall",
            "nat" => "Behind NAT: calls go through the router's mapping",
            _ => "Unknown",
        }
    }
}

/// Runs the traversal exchange against `server` on a thread (at most `timeout`), trusting its
/// certificate per `trust`; the report or a one-line reason arrives on the receiver.
pub fn nat_check(
    server: String,
    trust: ClientTrust,
    timeout: Duration,
    wake: Wake,
) -> mpsc::Receiver<Result<NatReport, String>> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pinhole-nat-check".into())
        .spawn(move || {
            let result = run_nat_check(&server, trust, timeout);
            let _ = tx.send(result);
            wake();
        });
    if let Err(e) = spawned {
        tracing::warn!("nat check thread: {e}");
    }
    rx
}

fn run_nat_check(server: &str, trust: ClientTrust, timeout: Duration) -> Result<NatReport, String> {
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the check: {e}"))?;
    runtime.block_on(async {
        let options = Options {
            timeout,
            trust,
            ..Options::default()
        };
        let mut driver = tokio::time::timeout(timeout, Driver::connect(server, options))
            .await
            .map_err(|_| format!("no answer from {server} within {} s", timeout.as_secs()))?
            .map_err(|e| e.to_string())?;
        let remaining = timeout.saturating_sub(start.elapsed());
        let verdict = tokio::time::timeout(remaining, driver.wait_verdict())
            .await
            .map_err(|_| {
                format!("no UDP answer from {server} (is UDP to it blocked by a firewall?)")
            })?
            .map_err(|e| e.to_string())?;
        driver.close().await;
        Ok(NatReport {
            verdict: verdict.0.as_str().to_owned(),
            mapped: verdict.1,
            elapsed: start.elapsed(),
        })
    })
}

/// Starts the embedded server: on 127.0.0.1, or on every interface when `lan` is set; on
/// [`EMBEDDED_PORT`] when it is free, else on any free port. Its certificate and names are
/// kept in `dir` (made on the first start, reused after).
pub fn start_embedded(lan: bool, dir: &Path) -> std::io::Result<Rendezvous> {
    let ip = if lan {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let identity = Arc::new(ServerIdentity::load_or_create(dir)?);
    let config = |port| {
        let mut config = RendezvousConfig::new(SocketAddr::new(ip, port));
        config.identity = Some(identity.clone());
        config.names_file = Some(dir.join("names.txt"));
        config
    };
    rendezvous::spawn(config(EMBEDDED_PORT)).or_else(|_| rendezvous::spawn(config(0)))
}

/// How the app's own client trusts the embedded server: its fingerprint, pinned.
pub fn embedded_trust(server: &Rendezvous) -> ClientTrust {
    ClientTrust {
        pinned: Some(server.fingerprint()),
        known_servers: None,
    }
}

/// The address the app's own engine uses to reach the embedded server.
pub fn embedded_target(server: &Rendezvous) -> SocketAddr {
    let addr = server.local_addr();
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// This machine's addresses other machines on the local network can reach (IPv4, not loopback
/// or link-local), at most three.
pub fn lan_addresses() -> Vec<IpAddr> {
    traversal::driver::local_addresses()
        .into_iter()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(_) => false,
        })
        .take(3)
        .collect()
}
