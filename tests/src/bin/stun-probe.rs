//! `stun-probe`: sends RFC 8489 Binding Requests from one UDP socket to one or more servers and
//! prints what each saw, as one JSON object on stdout:
//!
//! ```text
//! stun-probe --server 198.51.100.2:3478 --server 198.51.100.2:3479
//! {"local":"10.1.0.2:41234","results":[{"server":"198.51.100.2:3478","mapped":"203.0.113.2:41234"},...]}
//! ```
//!
//! Exit status 0 when every server answered, 1 otherwise (the JSON still says which did not:
//! `"mapped": null`). The NAT lab tests run it inside network namespaces.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// Ask STUN servers for this socket's mapped address.
#[derive(Debug, Parser)]
struct Args {
    /// A STUN server to ask (repeat for several; all are asked from the same socket).
    #[arg(long, required = true)]
    server: Vec<SocketAddr>,
    /// Local address to bind.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Give up on servers that have not answered after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let socket = UdpSocket::bind(args.bind).with_context(|| format!("binding {}", args.bind))?;
    let mapped = pinhole_tests::stun_client::binding_many(
        &socket,
        &args.server,
        Duration::from_millis(args.timeout_ms),
    )?;
    let results: Vec<serde_json::Value> = args
        .server
        .iter()
        .zip(&mapped)
        .map(|(server, mapped)| {
            serde_json::json!({
                "server": server.to_string(),
                "mapped": mapped.map(|m| m.to_string()),
            })
        })
        .collect();
    let all = mapped.iter().all(Option::is_some);
    println!(
        "{}",
        serde_json::json!({ "local": socket.local_addr()?.to_string(), "results": results })
    );
    if !all {
        std::process::exit(1);
    }
    Ok(())
}
