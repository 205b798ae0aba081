//! `server-rss`: memory of the RUNNING `pinhole-rendezvous` per registered client (issue 3's
//! "memory per registration at 100,000 registrations", for the real server rather than the
//! sans-IO tables `server-memory` counts). Run by hand, as root or with a high enough hard
//! limit on open files:
//!
//! ```text
//! cargo build --release -p traversal --bin pinhole-rendezvous
//! cargo run --release -p pinhole-tests --bin server-rss -- 10000 50000 100000
//! ```
//!
//! Starts the release server on 127.0.0.1 (port 0, no names file, idle timeout of an hour)
//! and, one after another, registers clients with the full exchange: a TLS control connection
//! (pinned to the server's certificate) from 127.0.0.2-251 (bound before connecting, so the
//! ephemeral ports do not run out), Hello,
//! the Welcome's user index and key, Addresses, then the authenticated UDP registration request
//! from a socket of its own on a distinct 127.1.x.y address, until the server's Answer comes
//! back. The control connections stay open; each UDP socket is closed once answered (the
//! server keeps the mapping). At every checkpoint it reads the server's VmRSS and RssAnon from
//! /proc/PID/status and prints the growth since startup per registered client. Raises its own
//! RLIMIT_NOFILE (the server inherits it). The server is ended by its pid with SIGTERM.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pinhole_tests::Rendezvous;
use pinhole_tests::scripted::{connect_tcp_from, keepalive_answered};
use traversal::control::{self, ClientMessage, FrameDecoder, ServerMessage};
use traversal::tls::{self, BlockingStream, ClientTrust};

const WAIT: Duration = Duration::from_secs(10);

/// Kernel-reported memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: u64,
    anon: u64,
}

/// The largest mappings of a process by resident size (KiB), from /proc/PID/smaps.
fn largest_mappings(pid: u32, count: usize) -> anyhow::Result<Vec<(u64, String)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut all = Vec::new();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            name = format!("{first} {}", words.nth(4).unwrap_or("[anon]"));
        } else if first == "Rss:" {
            all.push((
                words.next().unwrap_or("0").parse().unwrap_or(0),
                name.clone(),
            ));
        }
    }
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.truncate(count);
    Ok(all)
}

fn memory(pid: u32) -> anyhow::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?)
    };
    Ok(Mem {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
    })
}

/// The release server with room for every client, killed by its pid when dropped.
fn start_server(binary: &str) -> Rendezvous {
    let mut cmd = Command::new(binary);
    cmd.args(["--max-registrations", "1000000", "--idle-timeout", "3600"])
        .arg("--no-limits")
        .env("RUST_LOG", "warn");
    Rendezvous::start_command(cmd, "127.0.0.1:0")
}

/// One registration, the full exchange; returns the open control connection.
fn register(i: u32, server: SocketAddr, trust: &ClientTrust) -> anyhow::Result<BlockingStream> {
    let tcp_ip = Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8);
    let tcp = connect_tcp_from(SocketAddrV4::new(tcp_ip, 0), server)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let access = tcp.local_addr()?;
    let mut tcp = tls::connect_blocking(tcp, &server.to_string(), trust)?;
    tcp.write_all(&control::encode(&ClientMessage::Hello {
        version: control::PROTOCOL_VERSION,
        access,
    }))?;
    let mut decoder = FrameDecoder::new();
    let (user_index, key) = loop {
        if let Some(message) = decoder.next_message::<ServerMessage>()? {
            if let ServerMessage::Welcome {
                user_index, key, ..
            } = message
            {
                break (user_index, key);
            }
            continue;
        }
        let mut buf = [0u8; 2048];
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            bail!("client {i}: the server closed the control connection");
        }
        decoder.push(&buf[..n])?;
    };
    let key = traversal::server::unhex(&key).context("bad key in Welcome")?;
    // A distinct address for every client's media socket: 127.1.0.1 upwards.
    let udp_ip = Ipv4Addr::from(0x7F01_0001u32 + i);
    let udp = UdpSocket::bind(SocketAddrV4::new(udp_ip, 0))?;
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    tcp.write_all(&control::encode(&ClientMessage::Addresses {
        addresses: vec![IpAddr::V4(udp_ip)],
        port: udp.local_addr()?.port(),
    }))?;
    if keepalive_answered(&udp, server, user_index, &key, i.to_be_bytes(), 10)? {
        return Ok(tcp);
    }
    bail!("client {i}: no answer to the UDP registration")
}

fn main() -> anyhow::Result<()> {
    let mut checkpoints: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    if checkpoints.is_empty() {
        checkpoints = vec![10_000, 50_000, 100_000];
    }
    checkpoints.sort_unstable();
    let most = checkpoints.last().copied().unwrap_or(0);
    // One descriptor per control connection here and one in the server, plus slack. Without
    // CAP_SYS_RESOURCE the hard limit caps both processes: the largest N that fits is reported.
    let want = u64::from(most) + 100;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    if want > hard
        && nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, want, want)
            .is_ok()
    {
        println!("RLIMIT_NOFILE raised to {want}");
    } else {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
        if want > hard {
            let fits = hard.saturating_sub(100);
            println!(
                "RLIMIT_NOFILE hard limit {hard} (no CAP_SYS_RESOURCE): at most {fits} clients"
            );
            checkpoints.retain(|&n| u64::from(n) <= fits);
            checkpoints.push(u32::try_from(fits)?);
            checkpoints.dedup();
        }
    }
    let most = checkpoints.last().copied().unwrap_or(0);
    let binary = std::env::var("PINHOLE_RENDEZVOUS")
        .unwrap_or_else(|_| "target/release/pinhole-rendezvous".to_string());
    let server = start_server(&binary);
    let pid = server.pid();
    let trust = server.trust();
    std::thread::sleep(Duration::from_millis(500));
    let base = memory(pid)?;
    println!(
        "server {} (pid {pid}) at start: VmRSS {} KiB, RssAnon {} KiB",
        server.addr, base.rss, base.anon
    );
    println!("clients   VmRSS KiB  RssAnon KiB  B/client (VmRSS)  B/client (RssAnon)  seconds");
    let started = Instant::now();
    let mut conns = Vec::with_capacity(most as usize);
    let mut i = 0u32;
    for &n in &checkpoints {
        while i < n {
            conns.push(register(i, server.addr, &trust)?);
            i += 1;
        }
        // Let the server's threads go idle before reading.
        std::thread::sleep(Duration::from_secs(2));
        let now = memory(pid)?;
        let per =
            |after: u64, before: u64| (after.saturating_sub(before) * 1024) as f64 / f64::from(n);
        println!(
            "{n:>7}  {:>10}  {:>11}  {:>16.0}  {:>18.0}  {:>7.1}",
            now.rss,
            now.anon,
            per(now.rss, base.rss),
            per(now.anon, base.anon),
            started.elapsed().as_secs_f64()
        );
        if std::env::var_os("SERVER_RSS_SMAPS").is_some() {
            for (kib, name) in largest_mappings(pid, 6)? {
                println!("    {kib:>8} KiB  {name}");
            }
        }
    }
    drop(server);
    drop(conns);
    Ok(())
}
