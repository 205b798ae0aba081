//! `cluster-bench`: what `pinhole-rendezvous --cluster redis://...` costs (issue 14 item 6):
//! registrations per second, node memory and CPU per registration with the cluster on and off,
//! cross-node call setup against same-node, Redis commands, bytes, CPU and memory per
//! registration and per call, and from those a projection for 1,000,000 online users. Run by
//! hand (root, or a hard limit on open files above three times `--per-node`), never as a test:
//!
//! ```text
//! cargo build --release -p traversal --bin pinhole-rendezvous -p pinhole-tests --bin cluster-bench
//! target/release/cluster-bench --per-node 20000 --calls 200
//! ```
//!
//! Starts a real `redis-server` (`pinhole_tests::redis::Redis`: append-only file, fsync on
//! every write, as a Redis that keeps name bindings should run), two release nodes with
//! `--cluster` (A and B) and, first, one node without it (solo). Every node runs with
//! `--no-limits --max-registrations 1000000 --idle-timeout 3600` and `RUST_LOG=warn`.
//!
//! Registration is the full exchange of a real client, from `--threads` client threads: a TLS
//! control connection (pinned) from one of 127.0.0.2-251, `hello`, the `welcome`'s user index,
//! key and challenge, `addresses`, the authenticated UDP keepalive from a socket on a distinct
//! 127.1.x.y address (closed once answered: the server keeps the mapping), then `register` of
//! a fresh name with an Ed25519 signature over the challenge, until `registered`. The control
//! connections stay open. A cluster registration counts once the name's presence is in Redis.
//!
//! Figures, each phase measured alone:
//! - node: registrations/s (wall clock of the phase), VmRSS and RssAnon growth per
//!   registration (/proc/PID/status, 2 s after the phase), CPU per registration (utime+stime
//!   of /proc/PID/stat, USER_HZ 100);
//! - Redis (from `INFO all` before and after): commands, bytes in and out, CPU, `used_memory`
//!   and append-only file growth, per operation; the background (node heartbeats) measured
//!   over an idle window and the bench's own `INFO` subtracted;
//! - phases: new names on A, new names on B, same-node calls on A, cross-node calls A -> B,
//!   A's clients gone (presence withdrawn: the presence's share of Redis memory), A's clients
//!   back with the same names (a re-registration: the name is cached, no claim);
//! - calls: time from the caller's `call` to its `connected`, the callee sending `ringing` and
//!   `accept` as soon as `incoming` arrives; then the caller hangs up and the callee hears
//!   `ended`. Same node without a cluster, same node in the cluster, across nodes.
//!
//! Everything (nodes, Redis, the client threads) shares the machine: figures are for this
//! machine, per-node rates are lower bounds for a node with cores of its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ed25519_dalek::{Signer, SigningKey};
use pinhole_tests::Rendezvous;
use pinhole_tests::redis::Redis;
use pinhole_tests::scripted::Client;
use pinhole_tests::scripted::{connect_tcp_from, keepalive_answered};
use serde_json::{Value, json};
use traversal::calls::registration_message;
use traversal::control::{self, FrameDecoder, PROTOCOL_VERSION};
use traversal::server::{hex, unhex};
use traversal::tls::{self, BlockingStream, ClientTrust};

const WAIT: Duration = Duration::from_secs(20);
/// The projection's target.
const USERS: f64 = 1_000_000.0;

#[derive(Debug, Parser)]
struct Args {
    /// Clients registered on each node.
    #[arg(long, default_value_t = 20_000)]
    per_node: u32,
    /// Calls per kind (same node, cross node).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Client threads registering at once.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Projection: registrations (reconnects) per online user per hour.
    #[arg(long, default_value_t = 1.0)]
    reregistrations_per_hour: f64,
    /// Projection: busy-hour calls per online user per hour.
    #[arg(long, default_value_t = 0.5)]
    calls_per_hour: f64,
    /// Projection: registrations a node holds (its control connections): the bound per node.
    #[arg(long, default_value_t = 100_000)]
    node_capacity: u32,
}

// ---------------------------------------------------------------------------------------------
// Processes: memory and CPU from /proc.

/// Kernel-reported memory of a process, in KiB, and its CPU time in seconds.
#[derive(Debug, Clone, Copy)]
struct Proc {
    rss: u64,
    anon: u64,
    cpu: f64,
}

fn proc_now(pid: u32) -> Result<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
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
    // /proc/PID/stat: utime and stime are fields 14 and 15, counted after the ')' that ends
    // the command name (which may hold spaces).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    Ok(Proc {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        cpu: ticks as f64 / 100.0,
    })
}

/// A release node, killed by its pid when dropped.
fn start_node(binary: &str, cluster: Option<&str>) -> Rendezvous {
    let mut cmd = Command::new(binary);
    cmd.args(["--max-registrations", "1000000", "--idle-timeout", "3600"])
        .arg("--no-limits")
        .env("RUST_LOG", "warn");
    if let Some(url) = cluster {
        cmd.args(["--cluster", url]);
    }
    Rendezvous::start_command(cmd, "127.0.0.1:0")
}

// ---------------------------------------------------------------------------------------------
// Redis: INFO snapshots.

#[derive(Debug, Clone, Default)]
struct Snap {
    at: Option<Instant>,
    commands: f64,
    input: f64,
    output: f64,
    cpu: f64,
    used_memory: f64,
    aof: f64,
    /// `cmdstat_<name>` calls.
    cmds: BTreeMap<String, f64>,
}

fn snap(redis: &Redis) -> Result<Snap> {
    let text = redis.command(&["INFO", "all"])?;
    let at = Some(Instant::now());
    let mut s = Snap {
        at,
        ..Snap::default()
    };
    let mut seen = 0;
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let num = || {
            v.trim()
                .parse::<f64>()
                .with_context(|| format!("INFO {k}: {v}"))
        };
        match k {
            "total_commands_processed" => s.commands = num()?,
            "total_net_input_bytes" => s.input = num()?,
            "total_net_output_bytes" => s.output = num()?,
            "used_memory" => s.used_memory = num()?,
            "used_cpu_sys" | "used_cpu_user" => s.cpu += num()?,
            "aof_current_size" => s.aof = num()?,
            _ => {
                if let Some(name) = k.strip_prefix("cmdstat_") {
                    let calls = v
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("calls="))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0.0);
                    s.cmds.insert(name.to_string(), calls);
                }
                continue;
            }
        }
        seen += 1;
    }
    if seen < 7 {
        bail!("INFO lacks fields: {text}");
    }
    Ok(s)
}

/// Per-snapshot overhead and background rate (the nodes' heartbeats), to subtract.
#[derive(Debug, Clone, Default)]
struct Background {
    /// One `INFO all` of the bench (commands, in, out).
    info: [f64; 3],
    /// Per second: commands, in, out, CPU seconds.
    per_second: [f64; 4],
    cmds_per_second: BTreeMap<String, f64>,
}

/// What an interval cost Redis, corrected, divided by `ops`.
#[derive(Debug, Clone, Default)]
struct Cost {
    ops: f64,
    commands: f64,
    /// Commands the nodes sent (round trips), without those run inside the Lua scripts.
    requests: f64,
    input: f64,
    output: f64,
    cpu_us: f64,
    memory: f64,
    aof: f64,
    cmds: BTreeMap<String, f64>,
}

fn cost(before: &Snap, after: &Snap, bg: &Background, ops: f64) -> Cost {
    let secs = match (before.at, after.at) {
        (Some(b), Some(a)) => a.duration_since(b).as_secs_f64(),
        _ => 0.0,
    };
    let per = |d: f64| d / ops;
    let mut cmds = BTreeMap::new();
    // The bench's own polling of the presence hash.
    let mut own = 0.0;
    for (name, calls) in &after.cmds {
        if name == "info" {
            continue;
        }
        if name == "hlen" || name == "memory" {
            own += calls - before.cmds.get(name).copied().unwrap_or(0.0);
            continue;
        }
        let was = before.cmds.get(name).copied().unwrap_or(0.0);
        let bg_calls = bg.cmds_per_second.get(name).copied().unwrap_or(0.0) * secs;
        let d = (calls - was - bg_calls).max(0.0);
        if d / ops >= 0.005 {
            cmds.insert(name.clone(), d / ops);
        }
    }
    // With scripts run, the hash commands are theirs (the nodes send none of their own then:
    // their one plain HGET locates a call's callee).
    let scripted = cmds.contains_key("evalsha") || cmds.contains_key("eval");
    let requests = cmds
        .iter()
        .filter(|(name, _)| {
            !(scripted
                && matches!(
                    name.as_str(),
                    "hget" | "hset" | "hexists" | "hincrby" | "hdel"
                ))
        })
        .map(|(_, per)| per)
        .sum();
    Cost {
        ops,
        requests,
        commands: per(after.commands
            - before.commands
            - own
            - bg.info[0]
            - bg.per_second[0] * secs),
        input: per(after.input - before.input - bg.info[1] - bg.per_second[1] * secs),
        output: per(after.output - before.output - bg.info[2] - bg.per_second[2] * secs),
        cpu_us: per(after.cpu - before.cpu - bg.per_second[3] * secs) * 1e6,
        memory: per(after.used_memory - before.used_memory),
        aof: per(after.aof - before.aof),
        cmds,
    }
}

/// Measures the bench's own INFO and the idle background over `idle`.
fn background(redis: &Redis, idle: Duration) -> Result<Background> {
    let mut info = [f64::MAX; 3];
    for _ in 0..3 {
        let a = snap(redis)?;
        let b = snap(redis)?;
        let d = [
            b.commands - a.commands,
            b.input - a.input,
            b.output - a.output,
        ];
        for (m, v) in info.iter_mut().zip(d) {
            *m = m.min(v);
        }
    }
    let a = snap(redis)?;
    std::thread::sleep(idle);
    let b = snap(redis)?;
    let secs = idle.as_secs_f64();
    let mut cmds_per_second = BTreeMap::new();
    for (name, calls) in &b.cmds {
        if name != "info" {
            let d = calls - a.cmds.get(name).copied().unwrap_or(0.0);
            cmds_per_second.insert(name.clone(), d / secs);
        }
    }
    Ok(Background {
        info,
        per_second: [
            (b.commands - a.commands - info[0]) / secs,
            (b.input - a.input - info[1]) / secs,
            (b.output - a.output - info[2]) / secs,
            (b.cpu - a.cpu) / secs,
        ],
        cmds_per_second,
    })
}

/// `HLEN {pinhole}:presence`.
fn presence(redis: &Redis) -> Result<u64> {
    let reply = redis.command(&["HLEN", "{pinhole}:presence"])?;
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("HLEN: {reply}"))
}

/// `MEMORY USAGE key SAMPLES 0` (every element counted) and `HLEN key`.
fn hash_usage(redis: &Redis, key: &str) -> Result<(f64, f64)> {
    let int = |reply: String| -> Result<f64> {
        reply
            .trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{key}: {reply}"))
    };
    let bytes = int(redis.command(&["MEMORY", "USAGE", key, "SAMPLES", "0"])?)?;
    let len = int(redis.command(&["HLEN", key])?)?;
    Ok((bytes, len))
}

/// Waits (up to 60 s) until the presence hash holds `want` names.
fn wait_presence(redis: &Redis, want: u64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let n = presence(redis)?;
        if n == want {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("presence holds {n} names, not {want}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Registration: the full exchange, with a name.

/// The key of bench user `n` (deterministic: a re-registration signs with the same key).
fn user_key(n: u32) -> SigningKey {
    let mut seed = [0x5a; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    SigningKey::from_bytes(&seed)
}

fn send(tcp: &mut BlockingStream, message: &Value) -> Result<()> {
    tcp.write_all(&control::encode(message))?;
    Ok(())
}

/// The next control message of type `kind` (others skipped; `error` is an error).
fn next(tcp: &mut BlockingStream, decoder: &mut FrameDecoder, kind: &str) -> Result<Value> {
    loop {
        while let Some(m) = decoder.next_message::<Value>()? {
            if m["type"] == kind {
                return Ok(m);
            }
            if m["type"] == "error" {
                bail!("waiting for {kind}: {m}");
            }
        }
        let mut buf = [0u8; 4096];
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            bail!("the server closed the control connection");
        }
        decoder.push(&buf[..n])?;
    }
}

/// Registers `name` (user `user`'s key) from address slot `slot`; the open control connection.
fn register(
    slot: u32,
    user: u32,
    name: &str,
    server: SocketAddr,
    trust: &ClientTrust,
) -> Result<BlockingStream> {
    let tcp_ip = Ipv4Addr::new(127, 0, 0, 2 + (slot % 250) as u8);
    let tcp = connect_tcp_from(SocketAddrV4::new(tcp_ip, 0), server)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let access = tcp.local_addr()?;
    let mut tcp = tls::connect_blocking(tcp, &server.to_string(), trust)?;
    let mut decoder = FrameDecoder::new();
    send(
        &mut tcp,
        &json!({"type": "hello", "version": PROTOCOL_VERSION, "access": access}),
    )?;
    let welcome = next(&mut tcp, &mut decoder, "welcome")?;
    let user_index = welcome["user_index"]
        .as_u64()
        .and_then(|u| u32::try_from(u).ok())
        .context("user_index")?;
    let key = welcome["key"].as_str().and_then(unhex).context("key")?;
    let challenge = welcome["challenge"]
        .as_str()
        .and_then(unhex)
        .context("challenge")?;
    // A distinct address for every client's media socket: 127.1.0.1 upwards.
    let udp_ip = Ipv4Addr::from(0x7F01_0001u32 + slot);
    let udp = UdpSocket::bind(SocketAddrV4::new(udp_ip, 0))?;
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    send(
        &mut tcp,
        &json!({"type": "addresses", "addresses": [IpAddr::V4(udp_ip)],
            "port": udp.local_addr()?.port()}),
    )?;
    let answered = keepalive_answered(&udp, server, user_index, &key, slot.to_be_bytes(), 25)?;
    if !answered {
        bail!("{name}: no answer to the UDP registration");
    }
    drop(udp);
    let signing = user_key(user);
    let signature = signing.sign(&registration_message(name, &challenge));
    send(
        &mut tcp,
        &json!({"type": "register", "name": name,
            "public_key": hex(signing.verifying_key().as_bytes()),
            "signature": hex(&signature.to_bytes())}),
    )?;
    next(&mut tcp, &mut decoder, "registered").with_context(|| format!("registering {name}"))?;
    Ok(tcp)
}

/// The next free address slot (distinct UDP addresses across the whole run).
static SLOT: AtomicU32 = AtomicU32::new(0);

/// Registers users `users` as `{prefix}{n}` on `server` from `threads` threads; the open
/// connections and the wall-clock time.
fn register_many(
    server: &Rendezvous,
    prefix: &str,
    users: std::ops::Range<u32>,
    threads: usize,
) -> Result<(Vec<BlockingStream>, Duration)> {
    let trust = server.trust();
    let addr = server.addr;
    let next_user = AtomicU32::new(users.start);
    let held = Mutex::new(Vec::with_capacity(users.len()));
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let user = next_user.fetch_add(1, Ordering::Relaxed);
                    if user >= users.end {
                        return;
                    }
                    if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        return;
                    }
                    let slot = SLOT.fetch_add(1, Ordering::Relaxed);
                    match register(slot, user, &format!("{prefix}{user}"), addr, &trust) {
                        Ok(tcp) => held.lock().unwrap_or_else(|e| e.into_inner()).push(tcp),
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.context(format!("on {}: {:#?}", server.addr, last_log(server))));
    }
    Ok((held.into_inner().unwrap_or_else(|e| e.into_inner()), took))
}

fn last_log(server: &Rendezvous) -> Vec<String> {
    let log = server.log();
    log[log.len().saturating_sub(10)..].to_vec()
}

// ---------------------------------------------------------------------------------------------
// Calls.

fn named(server: &Rendezvous, name: &str, user: u32) -> Result<Client> {
    let mut c = Client::connect(server)?;
    c.register(name, &user_key(user))?;
    Ok(c)
}

/// `m` calls from `caller` to `callee` (registered as `callee_name`): setup times in ms.
fn calls(
    caller: &mut Client,
    callee: &mut Client,
    callee_name: &str,
    m: usize,
) -> Result<Vec<f64>> {
    let mut setup = Vec::with_capacity(m);
    for k in 0..m {
        let id = 1000 + k as u64;
        let started = Instant::now();
        caller.send(&json!({"type": "call", "call_id": id, "to": callee_name,
            "candidates": [caller.mapped()?], "commitment": "ab".repeat(32)}))?;
        let this = |m: &Value| m["call_id"] == id || m["type"] == "error";
        let incoming = callee.next_where(WAIT, |m| m["type"] == "incoming" || this(m))?;
        if incoming["type"] != "incoming" {
            bail!("call {id}: {incoming}");
        }
        let e2e = json!({"ephemeral": "cd".repeat(32), "signature": "ef".repeat(64)});
        callee.send(&json!({"type": "ringing", "call_id": id}))?;
        callee.send(&json!({"type": "accept", "call_id": id, "candidates": [], "e2e": e2e}))?;
        let connected = caller.next_where(WAIT, |m| {
            (m["type"] == "connected" || m["type"] == "ended") && this(m) || m["type"] == "error"
        })?;
        if connected["type"] != "connected" {
            bail!("call {id}: {connected}");
        }
        setup.push(started.elapsed().as_secs_f64() * 1e3);
        callee.next_where(WAIT, |m| m["type"] == "connected" && this(m))?;
        caller.send(&json!({"type": "hang_up", "call_id": id}))?;
        callee.next_where(WAIT, |m| m["type"] == "ended" && this(m))?;
    }
    Ok(setup)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------------
// Phases and report.

/// A registration phase on one node.
#[derive(Debug, Clone)]
struct RegPhase {
    n: u32,
    secs: f64,
    rss: f64,
    anon: f64,
    cpu_us: f64,
}

/// Registers `users` on `node`, waits for presence (`expect_presence`) and the node to go
/// idle, and reads its growth.
fn reg_phase(
    label: &str,
    node: &Rendezvous,
    prefix: &str,
    users: std::ops::Range<u32>,
    threads: usize,
    redis: Option<(&Redis, u64)>,
    conns: &mut Vec<BlockingStream>,
) -> Result<RegPhase> {
    let pid = node.pid();
    let before = proc_now(pid)?;
    let n = users.len() as u32;
    let (held, took) = register_many(node, prefix, users, threads)?;
    conns.extend(held);
    if let Some((redis, want)) = redis {
        wait_presence(redis, want)?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = proc_now(pid)?;
    let per = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0 / f64::from(n);
    let phase = RegPhase {
        n,
        secs: took.as_secs_f64(),
        rss: per(after.rss, before.rss),
        anon: per(after.anon, before.anon),
        cpu_us: (after.cpu - before.cpu) * 1e6 / f64::from(n),
    };
    println!(
        "  {label}: {n} in {:.1} s ({:.0}/s); node VmRSS {} -> {} KiB, RssAnon {} -> {} KiB",
        phase.secs,
        f64::from(n) / phase.secs,
        before.rss,
        after.rss,
        before.anon,
        after.anon
    );
    Ok(phase)
}

fn print_cost(label: &str, c: &Cost) {
    let breakdown: Vec<String> = c
        .cmds
        .iter()
        .map(|(name, per)| format!("{name} {per:.2}"))
        .collect();
    println!(
        "| {label} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        c.ops,
        c.requests,
        c.commands,
        c.input,
        c.output,
        c.cpu_us,
        c.memory,
        c.aof,
        breakdown.join(", ")
    );
}

/// Raises RLIMIT_NOFILE towards `want` (the nodes inherit it); the limit in effect.
fn raise_nofile(want: u64) -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        println!("RLIMIT_NOFILE raised to {want}");
        return Ok(want);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// `/proc/loadavg` (others' builds share the machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Both cluster nodes' connections are held here at once, plus slack. Without
    // CAP_SYS_RESOURCE the hard limit caps this process: the largest N that fits is used.
    let limit = raise_nofile(2 * u64::from(args.per_node) + 1000)?;
    let fits = u32::try_from(limit.saturating_sub(1000) / 2 / 1000 * 1000)?;
    let n = args.per_node.min(fits);
    if n < args.per_node {
        println!(
            "RLIMIT_NOFILE hard limit {limit} (no CAP_SYS_RESOURCE): {n} registrations per node, \
             not {}",
            args.per_node
        );
    }
    let binary = std::env::var("PINHOLE_RENDEZVOUS")
        .unwrap_or_else(|_| "target/release/pinhole-rendezvous".to_string());
    println!(
        "cluster-bench: {n} registrations per node, {} calls per kind, {} client threads; {binary}",
        args.calls, args.threads
    );

    println!("load average at start: {}", load_average());
    // -- Without a cluster.
    println!("solo node (no --cluster):");
    let (solo_reg, solo_calls) = {
        let solo = start_node(&binary, None);
        std::thread::sleep(Duration::from_millis(500));
        let mut conns = Vec::new();
        let reg = reg_phase(
            "new names",
            &solo,
            "solo-",
            0..n,
            args.threads,
            None,
            &mut conns,
        )?;
        let mut caller = named(&solo, "solo-caller", 9_000_001)?;
        let mut callee = named(&solo, "solo-callee", 9_000_002)?;
        let mut setup = calls(&mut caller, &mut callee, "solo-callee", args.calls)?;
        setup.sort_by(f64::total_cmp);
        drop(conns);
        (reg, setup)
    };

    // -- The cluster.
    let Some(redis) = Redis::start() else {
        bail!("redis-server is not installed");
    };
    let a = start_node(&binary, Some(&redis.url()));
    let b = start_node(&binary, Some(&redis.url()));
    std::thread::sleep(Duration::from_millis(500));
    let bg = background(&redis, Duration::from_secs(5))?;
    println!(
        "Redis background (2 idle nodes): {:.1} commands/s, {:.0} B/s in, {:.0} B/s out; \
         one INFO of the bench: {:.0} command, {:.0} B in, {:.0} B out (subtracted)",
        bg.per_second[0], bg.per_second[1], bg.per_second[2], bg.info[0], bg.info[1], bg.info[2]
    );
    let empty = snap(&redis)?;
    println!("Redis used_memory at start: {:.0} B", empty.used_memory);
    let mut costs: Vec<(String, Cost)> = Vec::new();
    let mut a_conns = Vec::new();
    let mut b_conns = Vec::new();

    println!("cluster node A:");
    let s0 = snap(&redis)?;
    let reg_a = reg_phase(
        "new names",
        &a,
        "a-",
        0..n,
        args.threads,
        Some((&redis, u64::from(n))),
        &mut a_conns,
    )?;
    let s1 = snap(&redis)?;
    costs.push((
        "registration, new name (A)".into(),
        cost(&s0, &s1, &bg, f64::from(n)),
    ));
    println!("cluster node B:");
    let reg_b = reg_phase(
        "new names",
        &b,
        "b-",
        n..2 * n,
        args.threads,
        Some((&redis, 2 * u64::from(n))),
        &mut b_conns,
    )?;
    let s2 = snap(&redis)?;
    costs.push((
        "registration, new name (B)".into(),
        cost(&s1, &s2, &bg, f64::from(n)),
    ));

    // Calls: the parties are four more registrations.
    let mut caller = named(&a, "call-caller", 9_000_003)?;
    let mut local = named(&a, "call-local", 9_000_004)?;
    let mut remote = named(&b, "call-remote", 9_000_005)?;
    wait_presence(&redis, 2 * u64::from(n) + 3)?;
    let s3 = snap(&redis)?;
    let mut same = calls(&mut caller, &mut local, "call-local", args.calls)?;
    let s4 = snap(&redis)?;
    let mut cross = calls(&mut caller, &mut remote, "call-remote", args.calls)?;
    let s5 = snap(&redis)?;
    same.sort_by(f64::total_cmp);
    cross.sort_by(f64::total_cmp);
    costs.push((
        "same-node call (A)".into(),
        cost(&s3, &s4, &bg, args.calls as f64),
    ));
    costs.push((
        "cross-node call (A to B)".into(),
        cost(&s4, &s5, &bg, args.calls as f64),
    ));

    // A's clients go: their presence is withdrawn (the names stay bound).
    println!("node A's {n} clients disconnect:");
    let a_pid = a.pid();
    let before_drop = proc_now(a_pid)?;
    let mut usage = Vec::new();
    for key in [
        "{pinhole}:names",
        "{pinhole}:skeletons",
        "{pinhole}:keys",
        "{pinhole}:presence",
    ] {
        usage.push((key, hash_usage(&redis, key)?));
    }
    // What a node reads when it (re)connects: every binding.
    let read_started = Instant::now();
    let hgetall = redis.command(&["HGETALL", "{pinhole}:names"])?.len();
    let read_ms = read_started.elapsed().as_secs_f64() * 1e3;
    let s6 = snap(&redis)?;
    drop(a_conns);
    wait_presence(&redis, u64::from(n) + 3)?;
    std::thread::sleep(Duration::from_secs(2));
    let s7 = snap(&redis)?;
    let after_drop = proc_now(a_pid)?;
    println!(
        "  node A VmRSS {} -> {} KiB, RssAnon {} -> {} KiB",
        before_drop.rss, after_drop.rss, before_drop.anon, after_drop.anon
    );
    costs.push((
        "disconnect (presence withdrawn)".into(),
        cost(&s6, &s7, &bg, f64::from(n)),
    ));
    println!("cluster node A, the same users again:");
    let mut a_conns = Vec::new();
    let rereg_a = reg_phase(
        "re-registration",
        &a,
        "a-",
        0..n,
        args.threads,
        Some((&redis, 2 * u64::from(n) + 3)),
        &mut a_conns,
    )?;
    let s8 = snap(&redis)?;
    costs.push((
        "re-registration, bound name (A)".into(),
        cost(&s7, &s8, &bg, f64::from(n)),
    ));
    let names_total = 2.0 * f64::from(n) + 3.0;
    let per_entry = |i: usize| usage[i].1.0 / usage[i].1.1.max(1.0);
    let bindings_per_name = per_entry(0) + per_entry(1) + per_entry(2);
    let presence_per_name = per_entry(3);
    let used_per_name = (s6.used_memory - empty.used_memory) / names_total;

    // -- Report.
    println!("load average at the end: {}", load_average());
    println!();
    println!(
        "## Registrations (per node, {n} each, {} client threads)",
        args.threads
    );
    println!(
        "| node | registrations | seconds | registrations/s | VmRSS B/registration | RssAnon B/registration | node CPU µs/registration |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let regs = [
        ("solo (no --cluster), new names", &solo_reg),
        ("cluster A, new names", &reg_a),
        ("cluster B, new names", &reg_b),
        ("cluster A, same names again", &rereg_a),
    ];
    for (label, r) in regs {
        println!(
            "| {label} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.n,
            r.secs,
            f64::from(r.n) / r.secs,
            r.rss,
            r.anon,
            r.cpu_us
        );
    }
    println!();
    println!(
        "## Call setup (call to connected at the caller; {} calls each)",
        args.calls
    );
    println!("| calls | p50 (ms) | p95 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|");
    for (label, s) in [
        ("same node, no cluster", &solo_calls),
        ("same node, cluster (A to A)", &same),
        ("cross-node (A to B)", &cross),
    ] {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            percentile(s, 0.5),
            percentile(s, 0.95),
            s.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!();
    println!("## Redis per operation (background and the bench's INFO subtracted)");
    println!(
        "| operation | count | requests | commands | bytes in | bytes out | Redis CPU µs | used_memory B | AOF B | commands by name (per operation) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (label, c) in &costs {
        print_cost(label, c);
    }
    println!();
    println!(
        "Redis used_memory: {:.0} B empty, {:.0} B with {} bound names of which {} online, {:.0} B \
         with {} online after A's left",
        empty.used_memory,
        s6.used_memory,
        names_total,
        names_total,
        s7.used_memory,
        u64::from(n) + 3
    );
    println!("  = {used_per_name:.0} B per bound and online name");
    println!(
        "| hash (all {names_total} names bound and online) | entries | MEMORY USAGE B | B/entry |"
    );
    println!("|---|---:|---:|---:|");
    for (key, (bytes, len)) in &usage {
        println!(
            "| `{key}` | {len:.0} | {bytes:.0} | {:.0} |",
            bytes / len.max(1.0)
        );
    }
    println!(
        "  HGETALL of the names (what a node reads on connecting): {hgetall} B, {:.0} B per \
         name (read in {read_ms:.0} ms, 200 ms of it the reader's wait for the end)",
        hgetall as f64 / names_total
    );
    println!(
        "  per bound name (names, skeletons, keys): {bindings_per_name:.0} B; per online name \
         (presence): {presence_per_name:.0} B"
    );

    // -- Projection.
    // A reconnect: the old connection's presence withdrawn, then a re-registration.
    let find = |prefix: &str| {
        costs
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    };
    let (rereg, gone) = (find("re-registration"), find("disconnect"));
    let reg_cost = Cost {
        ops: rereg.ops,
        requests: rereg.requests + gone.requests,
        commands: rereg.commands + gone.commands,
        input: rereg.input + gone.input,
        output: rereg.output + gone.output,
        cpu_us: rereg.cpu_us + gone.cpu_us,
        memory: 0.0,
        aof: rereg.aof + gone.aof,
        cmds: BTreeMap::new(),
    };
    let call_cost = costs
        .iter()
        .find(|(l, _)| l.starts_with("cross-node"))
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    let cap = f64::from(args.node_capacity);
    let nodes = (USERS / cap).ceil();
    let per_reg_rss = (reg_a.rss + reg_b.rss) / 2.0;
    // A node's users coming back (after a restart, or a lost node's users arriving) are
    // re-registrations: their names are bound already.
    let node_rate = f64::from(rereg_a.n) / rereg_a.secs;
    let node_cpu_us = rereg_a.cpu_us;
    println!();
    println!("## Projection: 1,000,000 online users");
    println!(
        "- nodes: ceil(1,000,000 / {cap:.0} registrations per node) = {nodes:.0} \
         (+1 to absorb a lost node's users: {:.0})",
        nodes + 1.0
    );
    println!(
        "- node memory at {cap:.0} registrations: {cap:.0} x {per_reg_rss:.0} B = {:.2} GiB \
         above the idle node",
        cap * per_reg_rss / f64::from(1u32 << 30)
    );
    println!(
        "- node CPU: {node_cpu_us:.0} µs per re-registration; all {cap:.0} of a node's users \
         again (a restart): {:.0} s at the measured {node_rate:.0}/s, {:.0} CPU-s",
        cap / node_rate,
        cap * node_cpu_us / 1e6
    );
    let mem = USERS * (bindings_per_name + presence_per_name);
    println!(
        "- Redis memory: 1,000,000 x ({bindings_per_name:.0} + {presence_per_name:.0}) B = \
         {:.2} GiB (MEMORY USAGE of the four hashes; every online user's name bound and present), plus {:.0} B \
         per further bound name offline",
        mem / f64::from(1u32 << 30),
        bindings_per_name
    );
    let regs_s = USERS * args.reregistrations_per_hour / 3600.0;
    let calls_s = USERS * args.calls_per_hour / 3600.0;
    let cross_share = (nodes - 1.0) / nodes;
    // Each node, each second: SETEX of its liveness and a PTTL per node it has calls with (at
    // most all the others).
    let heartbeat = nodes * nodes;
    let ops = regs_s * reg_cost.commands + calls_s * cross_share * call_cost.commands + heartbeat;
    println!(
        "- Redis commands/s at {} reconnects (disconnect + re-registration) per user per hour \
         and {} calls per user per hour, {:.0}% of calls across nodes ((n-1)/n): {regs_s:.0} \
         reconnects/s x {:.2} + \
         {:.0} cross-node calls/s x {:.2} + heartbeats {heartbeat:.0} (nodes x nodes) = {ops:.0} commands/s (counted as \
         INFO counts them, with those inside scripts)",
        args.reregistrations_per_hour,
        args.calls_per_hour,
        cross_share * 100.0,
        reg_cost.commands,
        calls_s * cross_share,
        call_cost.commands,
    );
    let requests =
        regs_s * reg_cost.requests + calls_s * cross_share * call_cost.requests + heartbeat;
    let bytes = regs_s * (reg_cost.input + reg_cost.output)
        + calls_s * cross_share * (call_cost.input + call_cost.output);
    println!(
        "- of which node requests (round trips): {regs_s:.0} x {:.2} + {:.0} x {:.2} + \
         {heartbeat:.0} = {requests:.0}/s; bytes in and out: {regs_s:.0} x {:.0} B + {:.0} x \
         {:.0} B = {:.0} kB/s (heartbeats aside)",
        reg_cost.requests,
        calls_s * cross_share,
        call_cost.requests,
        reg_cost.input + reg_cost.output,
        calls_s * cross_share,
        call_cost.input + call_cost.output,
        bytes / 1e3
    );
    let cpu = regs_s * reg_cost.cpu_us + calls_s * cross_share * call_cost.cpu_us;
    println!(
        "- append-only file: {regs_s:.0} x {:.0} B = {:.0} kB/s ({:.1} GB a day before Redis \
         rewrites it), each write fsync'd (appendfsync always)",
        reg_cost.aof,
        regs_s * reg_cost.aof / 1e3,
        regs_s * reg_cost.aof * 86_400.0 / 1e9
    );
    println!(
        "- Redis CPU: {regs_s:.0} x {:.0} µs + {:.0} x {:.0} µs = {:.2} of a core",
        reg_cost.cpu_us,
        calls_s * cross_share,
        call_cost.cpu_us,
        cpu / 1e6
    );
    println!(
        "- a node (re)connecting to Redis reads every binding (HGETALL): 1,000,000 x {:.0} B = \
         {:.0} MB per node, and caches up to 100,000 of them (max_names)",
        hgetall as f64 / names_total,
        USERS * hgetall as f64 / names_total / 1e6
    );
    drop(a_conns);
    drop(b_conns);
    drop((caller, local, remote));
    Ok(())
}
