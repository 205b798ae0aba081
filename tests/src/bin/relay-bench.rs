//! `relay-bench`: the relay of `pinhole-rendezvous` (ChannelData between the two parties of a
//! connected call): CPU per relayed packet, the rate that gives on one core, and the delay the
//! relay adds on loopback.
//!
//! Run by hand, never as a test (about 15 s; better with both cores to itself):
//!
//! ```text
//! cargo build --release -p traversal --bin pinhole-rendezvous
//! cargo build --release -p pinhole-tests --bin relay-bench
//! chrt -f 10 target/release/relay-bench            # root for chrt; --pairs 200 --secs 5
//! ```
//!
//! `--udp-threads 1,2` runs the server once per count (`--udp-threads N`, on cores 0..N-1) and
//! prints one table; `--coturn` adds coturn's relay at the same counts (`turnserver -m N`,
//! driven by `turnutils_uclient` through a `turnutils_peer` echo, both on core 1). With
//! several threads the table shows how often a UDP thread waited for the server's lock.
//!
//! The server runs pinned to core 0 (`taskset -c 0`), the bench on core 1. The bench scripts
//! `2 x --pairs` clients with the real control protocol (TCP Hello, the authenticated UDP
//! keepalive from the client's own media socket, `Register` signed with an Ed25519 key, then
//! `Call` / `Ringing` / `Accept`), so each pair is in a connected call with a relay channel.
//! Then every client sends ChannelData frames (`traversal::channel`) on its call's channel to
//! the server, which forwards them to the other party. The server caps each call direction at
//! 100 packets/s (docs/calls.md), so the load is spread over many calls, each paced at
//! `--pps` (default 90) per direction: what is measured is the server's CPU time (the sum over
//! its threads of /proc/PID/task/*/schedstat) per forwarded packet, and from it the rate one
//! core would forward (1 s / CPU per packet). The delay the relay adds is measured apart, with
//! one call at 50 packets/s: send-to-receive time through the relay against the same sockets
//! sending to each other directly; each frame carries its send time.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ed25519_dalek::SigningKey;
use pinhole_tests::Rendezvous;
use pinhole_tests::scripted::Client;
use serde_json::json;
use traversal::channel;

#[derive(Debug, Parser)]
struct Args {
    /// Calls (pairs of clients) relayed at once.
    #[arg(long, default_value_t = 200)]
    pairs: usize,
    /// Packets per second each client sends (the relay caps a call direction at 100).
    #[arg(long, default_value_t = 90)]
    pps: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// RTP payload bytes per frame (a 20 ms Opus frame at 32 kb/s is about 80 + 12).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// The server binary (default: pinhole-rendezvous next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// The server's UDP threads (`--udp-threads`), one run per value (`1,2`); with N it runs
    /// on cores 0..N-1 (the bench stays on core 1, so from 2 on it shares that core).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    udp_threads: Vec<usize>,
    /// Also coturn's relay at each thread count (`turnserver -m N` on the same cores), driven
    /// by `turnutils_uclient` against a `turnutils_peer` echo on core 1 (Debian `coturn`).
    #[arg(long)]
    coturn: bool,
}

/// One metric's value from the server's Prometheus endpoint (0 when absent).
fn scrape(metrics: SocketAddr, name: &str) -> Result<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(metrics)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .next()
        .unwrap_or(0))
}

/// A connected call: caller, callee, channel, and each one's relay token.
#[derive(Debug)]
struct Pair {
    a: Client,
    b: Client,
    channel: u16,
    tokens: [[u8; channel::TOKEN_LEN]; 2],
}

impl Pair {
    /// A relay frame from party `j` (0: a, 1: b).
    fn frame(&self, j: usize, media: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(channel::HEADER_LEN + channel::TOKEN_LEN + media.len());
        channel::encode_relay_into(self.channel, self.tokens[j], media, &mut out)?;
        Ok(out)
    }
}

fn token(connected: &serde_json::Value) -> Result<[u8; channel::TOKEN_LEN]> {
    let hex = connected["relay_token"].as_str().context("relay_token")?;
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()?;
    bytes.try_into().ok().context("relay_token length")
}

/// A key of its own for each client of this run.
fn signing_key(seed: u64) -> SigningKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    SigningKey::from_bytes(&bytes)
}

fn connect_pair(server: SocketAddr, i: usize) -> Result<Pair> {
    let pid = std::process::id();
    let (na, nb) = (format!("rb{pid}a{i}"), format!("rb{pid}b{i}"));
    let mut a = Client::connect(server)?;
    let mut b = Client::connect(server)?;
    a.register(&na, &signing_key(2 * i as u64))?;
    b.register(&nb, &signing_key(2 * i as u64 + 1))?;
    let call_id = 1_000 + i as u64;
    let cand = a.mapped()?;
    // The server relays the end-to-end key exchange unread: any well-formed halves do here.
    let commitment = "00".repeat(32);
    a.send(
        &json!({"type": "call", "call_id": call_id, "to": nb, "candidates": [cand],
        "commitment": commitment}),
    )?;
    b.expect("incoming")?;
    b.send(&json!({"type": "ringing", "call_id": call_id}))?;
    let cand = b.mapped()?;
    let e2e = json!({"ephemeral": "00".repeat(32), "signature": "00".repeat(64)});
    b.send(&json!({"type": "accept", "call_id": call_id, "candidates": [cand], "e2e": e2e}))?;
    let connected = a.expect("connected")?;
    let connected_b = b.expect("connected")?;
    let channel = connected["channel"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .context("channel")?;
    let tokens = [token(&connected)?, token(&connected_b)?];
    a.udp.set_nonblocking(true)?;
    b.udp.set_nonblocking(true)?;
    Ok(Pair {
        a,
        b,
        channel,
        tokens,
    })
}

/// CPU time used so far by every thread of `pid`, from /proc/PID/task/*/schedstat.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// CPU time used so far by each thread of `pid` whose name starts with `prefix`, by name.
fn cpu_ns_by_thread(pid: u32, prefix: &str) -> Result<Vec<(String, u64)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path();
        let name = std::fs::read_to_string(path.join("comm"))?
            .trim()
            .to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat"))?;
        let ns = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        threads.push((name, ns));
    }
    threads.sort();
    Ok(threads)
}

fn frame(payload_len: usize, t0: Instant) -> Vec<u8> {
    let mut p = vec![0u8; payload_len.max(16)];
    p[0] = 0x80;
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    p[8..16].copy_from_slice(&ns.to_be_bytes());
    p
}

/// Drains `sock`; for each frame (ChannelData when `relayed`), pushes its one-way delay (µs).
fn drain(sock: &UdpSocket, relayed: bool, t0: Instant, delays: &mut Vec<f64>) -> u64 {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while let Ok(len) = sock.recv(&mut buf) {
        let data = &buf[..len];
        let payload = if relayed {
            match channel::decode_relay(data) {
                Ok(frame) => frame.media,
                Err(_) => continue,
            }
        } else {
            data
        };
        if payload.len() < 16 || payload[0] != 0x80 {
            continue;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&payload[8..16]);
        let sent = u64::from_be_bytes(ts);
        let now = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        delays.push(now.saturating_sub(sent) as f64 / 1_000.0);
        n += 1;
    }
    n
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// One call at 50 packets/s for `secs`: delays through the relay, then directly.
fn latency(pair: &Pair, secs: f64, payload: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    for relayed in [true, false] {
        let mut delays = Vec::new();
        let start = Instant::now();
        let dest = if relayed {
            pair.a.server
        } else {
            pair.b.mapped()?
        };
        while start.elapsed().as_secs_f64() < secs {
            let p = frame(payload, t0);
            let bytes = if relayed { pair.frame(0, &p)? } else { p };
            pair.a.udp.send_to(&bytes, dest)?;
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                drain(&pair.b.udp, relayed, t0, &mut delays);
                std::hint::spin_loop();
            }
        }
        delays.sort_by(f64::total_cmp);
        out.push(delays);
    }
    let direct = out.pop().unwrap_or_default();
    let relayed = out.pop().unwrap_or_default();
    Ok((relayed, direct))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    let bin = match &args.server {
        Some(b) => b.clone(),
        None => exe.parent().context("exe dir")?.join("pinhole-rendezvous"),
    };
    if !bin.exists() {
        bail!("{} is not built", bin.display());
    }
    let mut rows = Vec::new();
    for &threads in &args.udp_threads {
        rows.push(run(&args, &bin, threads.max(1))?);
    }
    let mut theirs = Vec::new();
    if args.coturn {
        for &threads in &args.udp_threads {
            match coturn(&args, threads.max(1)) {
                Ok(row) => theirs.push(row),
                Err(err) => println!("coturn -m {threads}: not measured: {err:#}"),
            }
        }
    }
    println!();
    println!(
        "| server | threads | calls | relayed packets/s | lost | server CPU | CPU per relayed packet | lock waits per 1,000 packets |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in rows
        .iter()
        .map(|r| ("pinhole-rendezvous", r))
        .chain(theirs.iter().map(|r| ("coturn", r)))
    {
        println!(
            "| {name} | {} | {} | {:.0} | {:.2}% | {:.1}% | {:.2} µs | {} |",
            r.threads,
            r.calls,
            r.rate,
            r.lost_pct,
            r.cpu_pct,
            r.us_per_packet,
            if name == "coturn" {
                "-".to_string()
            } else {
                format!("{:.3}", r.waits_per_k)
            }
        );
    }
    for (name, rows) in [("pinhole-rendezvous", &rows), ("coturn", &theirs)] {
        if let (Some(one), Some(last)) = (rows.first(), rows.last())
            && rows.len() > 1
        {
            println!(
                "{name}: {} threads against {}: relayed packets/s {:.2}x, CPU per packet {:.2}x",
                last.threads,
                one.threads,
                last.rate / one.rate.max(1.0),
                last.us_per_packet / one.us_per_packet.max(1e-9)
            );
        }
    }
    for ours in &rows {
        if let Some(c) = theirs.iter().find(|c| c.threads == ours.threads) {
            println!(
                "{} thread(s): CPU per relayed packet, coturn / pinhole-rendezvous: {:.2}x",
                ours.threads,
                c.us_per_packet / ours.us_per_packet.max(1e-9)
            );
        }
    }
    Ok(())
}

/// A child process killed (by its PID) and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// coturn's relay under the same load: `--pairs` TURN clients (`turnutils_uclient`, UDP,
/// channels, no RTCP), each sending `--pps` packets a second of `--payload` bytes to an echo
/// peer (`turnutils_peer`) through its allocation; each packet is relayed twice (out to the
/// peer, back to the client), so the relayed rate matches `--pairs` calls both ways. The
/// server's CPU is read from /proc around the client's run (its allocations included).
fn coturn(args: &Args, threads: usize) -> Result<Row> {
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let peer_port = {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let dir = std::env::temp_dir().join(format!("relay-bench-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cores = if threads > 1 {
        format!("0-{}", threads - 1)
    } else {
        "0".into()
    };
    let quiet = || std::process::Stdio::null();
    let server = Killed(
        std::process::Command::new("taskset")
            .args([
                "-c",
                &cores,
                "turnserver",
                "-n",
                "--listening-ip",
                "127.0.0.1",
            ])
            .args([
                "--relay-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
            ])
            .args([
                "-a",
                "-u",
                "bench:bench",
                "-r",
                "pinhole",
                "--no-tls",
                "--no-dtls",
            ])
            .args([
                "-m",
                &threads.to_string(),
                "--no-cli",
                "--allow-loopback-peers",
            ])
            .args(["--no-stdout-log", "--log-file", "/dev/null", "--pidfile"])
            .arg(dir.join("turnserver.pid"))
            .args(["--min-port", "40000", "--max-port", "60000"])
            .stdin(quiet())
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .context("starting turnserver")?,
    );
    let _peer = Killed(
        std::process::Command::new("taskset")
            .args(["-c", "1", "turnutils_peer", "-L", "127.0.0.1"])
            .args(["-p", &peer_port.to_string()])
            .stdin(quiet())
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .context("starting turnutils_peer")?,
    );
    // Ready when it answers a Binding Request.
    pinhole_tests::stun_client::binding(
        "127.0.0.1:0".parse()?,
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
    .context("turnserver did not answer")?;
    let pid = server.0.id();
    let interval_ms = (1000 / args.pps.max(1)).max(1);
    let messages = (args.secs * f64::from(args.pps)).round() as u64;
    let mut client = Killed(
        std::process::Command::new("taskset")
            .args([
                "-c",
                "1",
                "turnutils_uclient",
                "-u",
                "bench",
                "-w",
                "bench",
                "-c",
            ])
            .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
            .args(["-m", &args.pairs.to_string(), "-n", &messages.to_string()])
            .args([
                "-l",
                &args.payload.to_string(),
                "-z",
                &interval_ms.to_string(),
            ])
            .args(["-p", &port.to_string(), "127.0.0.1"])
            .stdin(quiet())
            .stdout(std::process::Stdio::piped())
            .stderr(quiet())
            .spawn()
            .context("starting turnutils_uclient")?,
    );
    let stdout = client.0.stdout.take().context("uclient's stdout")?;
    // It reports its totals once a second ("start_mclient: msz=M, tot_send_msgs=N,
    // tot_recv_msgs=R, ...") and once more at the end (without msz): the measurement runs from
    // the first report with packets sent (the allocations are made by then) to the last.
    let count = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let mut first: Option<(Instant, u64, u64, u64)> = None;
    let mut last: Option<(Instant, u64, u64, u64)> = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        let (Some(sent), Some(back)) = (
            count(&line, "tot_send_msgs="),
            count(&line, "tot_recv_msgs="),
        ) else {
            continue;
        };
        let at = (Instant::now(), cpu_ns(pid)?, sent, back);
        if first.is_none() && sent > 0 {
            first = Some(at);
        } else if first.is_some() {
            last = Some(at);
        }
    }
    let _ = client.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (Some((t0, cpu0, sent0, back0)), Some((t1, cpu1, sent1, back1))) = (first, last) else {
        bail!("turnutils_uclient printed too few reports");
    };
    let elapsed = t1.duration_since(t0).as_secs_f64();
    let cpu = cpu1.saturating_sub(cpu0);
    let (sent, back) = (sent1 - sent0, back1.saturating_sub(back0));
    // Out to the peer and back: two relayed packets per message that came back.
    let relayed = 2 * back;
    let us_per_packet = cpu as f64 / 1_000.0 / relayed.max(1) as f64;
    println!(
        "coturn -m {threads} on cores {cores}: {} clients, {} B, {elapsed:.1} s measured: sent \
         {sent}, came back {back}, {:.0} packets/s relayed, server CPU {:.1}%, \
         {us_per_packet:.2} µs per relayed packet",
        args.pairs,
        args.payload,
        relayed as f64 / elapsed,
        100.0 * cpu as f64 / 1e9 / elapsed,
    );
    Ok(Row {
        threads,
        calls: args.pairs,
        rate: relayed as f64 / elapsed,
        lost_pct: 100.0 * sent.saturating_sub(back) as f64 / sent.max(1) as f64,
        cpu_pct: 100.0 * cpu as f64 / 1e9 / elapsed,
        us_per_packet,
        waits_per_k: 0.0,
    })
}

/// One run's figures, for the table at the end.
#[derive(Debug)]
struct Row {
    threads: usize,
    calls: usize,
    rate: f64,
    lost_pct: f64,
    cpu_pct: f64,
    us_per_packet: f64,
    waits_per_k: f64,
}

/// Starts a server with `threads` UDP threads, connects the calls, measures; the server is
/// stopped when it returns.
fn run(args: &Args, bin: &std::path::Path, threads: usize) -> Result<Row> {
    let cores = if threads > 1 {
        format!("0-{}", threads - 1)
    } else {
        "0".into()
    };
    let metrics = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", &cores])
        .arg(bin)
        .arg("--no-limits")
        .args(["--udp-threads", &threads.to_string()])
        .args(["--metrics", &metrics.to_string()]);
    let server = Rendezvous::start_command(cmd, "127.0.0.1:0");
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(1)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    println!(
        "server {} (pid {}, {threads} UDP thread(s)) on cores {cores}, bench on core 1",
        bin.display(),
        server.pid()
    );

    let setup = Instant::now();
    let mut pairs = Vec::with_capacity(args.pairs);
    for i in 0..args.pairs {
        pairs.push(connect_pair(server.addr, i).with_context(|| format!("pair {i}"))?);
    }
    println!(
        "{} calls connected in {:.1} s",
        pairs.len(),
        setup.elapsed().as_secs_f64()
    );

    // Added delay, one call, no load.
    let (relayed, direct) = latency(&pairs[0], 3.0, args.payload)?;
    println!(
        "one call, 50 packets/s: relayed p50 {:.1} µs p99 {:.1} µs ({} frames); direct p50 {:.1} µs p99 {:.1} µs; added at p99 {:.1} µs",
        pct(&relayed, 0.5),
        pct(&relayed, 0.99),
        relayed.len(),
        pct(&direct, 0.5),
        pct(&direct, 0.99),
        pct(&relayed, 0.99) - pct(&direct, 0.99)
    );

    // Load: every client sends `pps` frames a second on its call's channel.
    let t0 = Instant::now();
    let cpu0 = cpu_ns(server.pid())?;
    let udp0 = cpu_ns_by_thread(server.pid(), "udp-")?;
    let waits0 = scrape(metrics, "pinhole_udp_lock_waits_total")?;
    let mut sent = vec![0u64; pairs.len() * 2];
    let mut received = 0u64;
    let mut delays = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < args.secs {
        let due = (start.elapsed().as_secs_f64() * f64::from(args.pps)) as u64 + 1;
        for (i, pair) in pairs.iter().enumerate() {
            for (j, from) in [&pair.a, &pair.b].into_iter().enumerate() {
                let k = 2 * i + j;
                while sent[k] < due {
                    let bytes = pair.frame(j, &frame(args.payload, t0))?;
                    match from.udp.send_to(&bytes, server.addr) {
                        Ok(_) => sent[k] += 1,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        for pair in &pairs {
            received += drain(&pair.a.udp, true, t0, &mut delays);
            received += drain(&pair.b.udp, true, t0, &mut delays);
        }
    }
    // Whatever is still in flight.
    let tail = Instant::now();
    while tail.elapsed() < Duration::from_millis(200) {
        for pair in &pairs {
            received += drain(&pair.a.udp, true, t0, &mut delays);
            received += drain(&pair.b.udp, true, t0, &mut delays);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_ns(server.pid())?.saturating_sub(cpu0);
    let udp1 = cpu_ns_by_thread(server.pid(), "udp-")?;
    let waits = scrape(metrics, "pinhole_udp_lock_waits_total")?.saturating_sub(waits0);
    let total_sent: u64 = sent.iter().sum();
    delays.sort_by(f64::total_cmp);
    let us_per_packet = cpu as f64 / 1_000.0 / received.max(1) as f64;
    println!(
        "load: {} calls x 2 directions x {} packets/s, {} B payload, {:.1} s: sent {}, relayed {} ({:.2}% lost), {:.0} packets/s relayed",
        pairs.len(),
        args.pps,
        args.payload,
        elapsed,
        total_sent,
        received,
        100.0 * (total_sent.saturating_sub(received)) as f64 / total_sent.max(1) as f64,
        received as f64 / elapsed
    );
    println!(
        "server CPU {:.1}% of one core, {:.2} µs per relayed packet -> {:.0} packets/s per core at 100%",
        100.0 * cpu as f64 / 1e9 / elapsed,
        us_per_packet,
        1e6 / us_per_packet
    );
    let per_thread: Vec<String> = udp1
        .iter()
        .map(|(name, ns)| {
            let before = udp0.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b);
            format!(
                "{name} {:.1}%",
                100.0 * ns.saturating_sub(before) as f64 / 1e9 / elapsed
            )
        })
        .collect();
    println!("UDP threads' CPU: {}", per_thread.join(", "));
    println!(
        "UDP batches that waited for the server's lock held by another thread: {waits} \
         ({:.3} per 1,000 relayed packets)",
        waits as f64 * 1000.0 / received.max(1) as f64
    );
    println!(
        "delay under load (send to receive, including the bench's sweep over {} sockets): p50 {:.0} µs p99 {:.0} µs",
        pairs.len() * 2,
        pct(&delays, 0.5),
        pct(&delays, 0.99)
    );
    Ok(Row {
        threads,
        calls: pairs.len(),
        rate: received as f64 / elapsed,
        lost_pct: 100.0 * (total_sent.saturating_sub(received)) as f64 / total_sent.max(1) as f64,
        cpu_pct: 100.0 * cpu as f64 / 1e9 / elapsed,
        us_per_packet,
        waits_per_k: waits as f64 * 1000.0 / received.max(1) as f64,
    })
}
