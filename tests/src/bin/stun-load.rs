//! `stun-load`: STUN Binding load generator and the side-by-side server benchmark (issue 3).
//!
//! Run by hand, never as a test (it takes about a minute and wants both cores to itself):
//!
//! ```text
//! cargo build --release -p traversal --bin pinhole-rendezvous
//! chrt -f 10 cargo run --release -p pinhole-tests --bin stun-load -- bench
//! ```
//!
//! `chrt -f 10` (as root) runs the benchmark and the servers it starts under SCHED_FIFO, so
//! compilers and tests running at the same time on this 2-core machine do not take the two
//! cores away mid-run; without it the figures swing by a factor of several when the machine is
//! busy. The kernel's RT throttling still leaves 5% of each second to everything else.
//!
//! Several server threads: `bench --threads 1,2` runs each server once per count
//! (`pinhole-rendezvous --udp-threads N`, coturn `-m N`) on cores 0..N-1; the generator spreads
//! its requests over `--sockets` source ports (16), since `SO_REUSEPORT` hands each source to
//! one server thread. On a 2-core machine the second server thread shares core 1 with the
//! generator: a second thread can then show its cost, not a gain.
//!
//! `bench` starts each server pinned to core 0 (`taskset -c 0`) and pins itself to core 1, then
//! for each server and each window size runs a closed loop: `window` Binding Requests in flight
//! at all times, each answer immediately replaced by a new request (a request unanswered after
//! 200 ms counts as lost and is replaced too). The generator itself uses `recvmmsg`/`sendmmsg`
//! (`traversal::udp_batch`), so one core of it can offer more than one core of server answers.
//! A small window shows latency without queueing; a large one saturates the server and shows
//! its throughput (and the latency that queueing adds at that load). Figures: answers per
//! second over the measured interval (after a warm-up), p50 and p99 round-trip latency, loss,
//! and the server's CPU use (from /proc) to show it was the bottleneck.
//!
//! Servers: `pinhole-rendezvous` (the release build next to this binary), coturn's
//! `turnserver` STUN-only with one relay thread, and two references built into this binary:
//! `serve --mode batched` (a bare recvmmsg/sendmmsg Binding responder over
//! `traversal::udp_batch`: the ceiling of this design) and `serve --mode blocking` (a plain
//! `recv_from`/`send_to` loop).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use traversal::stun;
use traversal::udp_batch;

#[derive(Debug, Parser)]
#[command(about = "STUN Binding load generator and server benchmark")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the side-by-side benchmark and print a table.
    Bench {
        /// Seconds measured per run (after a 0.5 s warm-up).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Requests in flight, one run per value.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,128")]
        windows: Vec<usize>,
        /// Servers to measure.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "pinhole,coturn,batched,blocking"
        )]
        servers: Vec<ServerKind>,
        /// Server threads, one set of runs per value: `pinhole-rendezvous --udp-threads N`,
        /// coturn `-m N` (the reference responders run at 1 only). A server with N threads
        /// runs on cores `server_core` .. `server_core + N - 1`.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        threads: Vec<usize>,
        /// Source sockets of the load generator (requests in flight spread over them): with
        /// `SO_REUSEPORT` a server's threads each serve the sources that hash to them, so one
        /// source would reach one thread only.
        #[arg(long, default_value_t = 16)]
        sockets: usize,
        /// First core for the servers.
        #[arg(long, default_value_t = 0)]
        server_core: usize,
        /// Core for the load generator.
        #[arg(long, default_value_t = 1)]
        load_core: usize,
        /// The pinhole-rendezvous binary (default: next to this one).
        #[arg(long)]
        rendezvous: Option<PathBuf>,
    },
    /// Offer load to a running server and print one result line.
    Load {
        /// The server.
        #[arg(long)]
        target: SocketAddr,
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Source sockets.
        #[arg(long, default_value_t = 16)]
        sockets: usize,
    },
    /// Run a reference Binding responder (used by `bench`).
    Serve {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Batched (recvmmsg/sendmmsg) or one datagram per system call.
        #[arg(long, value_enum)]
        mode: ServeMode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    Pinhole,
    Coturn,
    Batched,
    Blocking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServeMode {
    Batched,
    Blocking,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Serve { listen, mode } => serve(listen, mode),
        Cmd::Load {
            target,
            window,
            seconds,
            sockets,
        } => {
            let r = run_load(
                target,
                window,
                sockets,
                Duration::from_secs_f64(seconds),
                None,
            )?;
            println!("{}", r.row("server", window));
            Ok(())
        }
        Cmd::Bench {
            seconds,
            windows,
            servers,
            threads,
            sockets,
            server_core,
            load_core,
            rendezvous,
        } => bench(&Bench {
            seconds,
            windows,
            servers,
            threads,
            sockets,
            server_core,
            load_core,
            rendezvous,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Reference servers.

fn serve(listen: SocketAddr, mode: ServeMode) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen)?;
    match mode {
        ServeMode::Batched => {
            let (mut rx, mut tx) = udp_batch::split(socket, 32)?;
            let mut answer = [0u8; 44];
            loop {
                let mut send_error = None;
                rx.recv_batch(Duration::from_secs(1), |data, from| {
                    if let Ok(request) = stun::Message::decode(data)
                        && request.kind == stun::BINDING_REQUEST
                    {
                        let n = stun::encode_binding_success(
                            &request.transaction_id,
                            from,
                            &mut answer,
                        );
                        if let Err(err) = tx.queue(&answer[..n], from) {
                            send_error = Some(err);
                        }
                    }
                })?;
                if let Err(err) = tx.flush() {
                    send_error = Some(err);
                }
                drop(send_error); // a refused destination is not fatal
            }
        }
        ServeMode::Blocking => {
            let mut buf = [0u8; 2048];
            let mut answer = [0u8; 44];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Ok(request) = stun::Message::decode(&buf[..len])
                    && request.kind == stun::BINDING_REQUEST
                {
                    let n =
                        stun::encode_binding_success(&request.transaction_id, from, &mut answer);
                    let _ = socket.send_to(&answer[..n], from);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load generator.

/// What one run measured.
#[derive(Debug)]
struct LoadResult {
    answers: u64,
    elapsed: Duration,
    lost: u64,
    p50: Duration,
    p99: Duration,
    server_cpu: Option<f64>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64()
    }

    fn row(&self, name: &str, window: usize) -> String {
        format!(
            "| {name:<22} | {window:>6} | {:>10.0} | {:>9} | {:>8.1} | {:>8.1} | {:>8} | {:>7} |",
            self.rate(),
            self.server_cpu
                .map(|c| format!("{:.0}", self.rate() / c.max(0.01)))
                .unwrap_or_else(|| "-".into()),
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.lost,
            self.server_cpu
                .map(|c| format!("{:.0}%", c * 100.0))
                .unwrap_or_else(|| "-".into()),
        )
    }
}

const LOST_AFTER: Duration = Duration::from_millis(200);
const WARMUP: Duration = Duration::from_millis(500);

/// Closed-loop load: `window` requests in flight, spread over `sockets` source sockets (slot
/// `i` on socket `i % sockets`); see the module docs.
fn run_load(
    target: SocketAddr,
    window: usize,
    sockets: usize,
    measure: Duration,
    server_pid: Option<u32>,
) -> anyhow::Result<LoadResult> {
    let window = window.max(1);
    let sockets = sockets.clamp(1, window);
    let mut polled = Vec::with_capacity(sockets);
    let mut rxs = Vec::with_capacity(sockets);
    let mut txs = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let socket = UdpSocket::bind(if target.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        })?;
        // Room for a whole window of answers, so the generator's own buffer never drops any.
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &(4 << 20),
        )
        .or_else(|_| {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &(4 << 20))
        });
        // Waited on with poll(2) (the same open socket as the receiver's).
        polled.push(socket.try_clone()?);
        let (rx, tx) = udp_batch::split(socket, 64)?;
        rxs.push(rx);
        txs.push(tx);
    }
    // Per slot: generation of the request in flight and when it was sent.
    let mut generation = vec![0u32; window];
    let mut sent_at = vec![Instant::now(); window];
    let mut latencies: Vec<u32> = Vec::with_capacity(4_000_000);
    let run_id = std::process::id();
    let request = |slot: usize, generation: u32| {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&(slot as u32).to_be_bytes());
        id[4..8].copy_from_slice(&generation.to_be_bytes());
        id[8..].copy_from_slice(&run_id.to_be_bytes());
        stun::encode_binding_request(&id)
    };
    let start = Instant::now();
    for (slot, sent) in sent_at.iter_mut().enumerate() {
        txs[slot % sockets].queue(&request(slot, 0), target)?;
        *sent = Instant::now();
    }
    for tx in &mut txs {
        tx.flush()?;
    }
    let measure_from = start + WARMUP;
    let end = measure_from + measure;
    let mut answers = 0u64;
    let mut lost = 0u64;
    let mut cpu_start = None;
    let mut next_scan = start + LOST_AFTER;
    let mut to_resend: Vec<usize> = Vec::with_capacity(window);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= measure_from && cpu_start.is_none() {
            cpu_start = Some((now, server_pid.and_then(cpu_ticks)));
        }
        let measuring = cpu_start.is_some();
        let mut ready = vec![false; sockets];
        {
            use std::os::fd::AsFd;
            let mut fds: Vec<nix::poll::PollFd<'_>> = polled
                .iter()
                .map(|s| nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN))
                .collect();
            match nix::poll::poll(&mut fds, 5u8) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            for (r, fd) in ready.iter_mut().zip(&fds) {
                *r = fd.any().unwrap_or(false);
            }
        }
        for (rx, _) in rxs.iter_mut().zip(&ready).filter(|(_, r)| **r) {
            rx.recv_batch(Duration::ZERO, |data, _from| {
                let Ok(answer) = stun::Message::decode(data) else {
                    return;
                };
                if answer.kind != stun::BINDING_SUCCESS {
                    return;
                }
                let id = answer.transaction_id;
                let slot = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) as usize;
                let generation_of = u32::from_be_bytes([id[4], id[5], id[6], id[7]]);
                if slot >= window || generation[slot] != generation_of {
                    return; // a late answer to a request already counted lost
                }
                let received = Instant::now();
                if measuring {
                    answers += 1;
                    let ns = received.duration_since(sent_at[slot]).as_nanos();
                    latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
                }
                to_resend.push(slot);
            })?;
        }
        let now = Instant::now();
        if now >= next_scan {
            for (slot, sent) in sent_at.iter().enumerate() {
                if now.duration_since(*sent) > LOST_AFTER && !to_resend.contains(&slot) {
                    if measuring {
                        lost += 1;
                    }
                    to_resend.push(slot);
                }
            }
            next_scan = now + LOST_AFTER / 4;
        }
        for &slot in &to_resend {
            generation[slot] = generation[slot].wrapping_add(1);
            txs[slot % sockets].queue(&request(slot, generation[slot]), target)?;
            sent_at[slot] = Instant::now();
        }
        to_resend.clear();
        // A refused send (server gone) shows up as loss, not as an abort.
        for tx in &mut txs {
            let _ = tx.flush();
        }
    }
    let Some((measured_from, ticks_start)) = cpu_start else {
        bail!("the run ended before the warm-up did");
    };
    let elapsed = measured_from.elapsed();
    let server_cpu = match (ticks_start, server_pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / clock_ticks() / elapsed.as_secs_f64()),
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |p: f64| {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_nanos(u64::from(latencies[i]))
    };
    Ok(LoadResult {
        answers,
        elapsed,
        lost,
        p50: pct(0.50),
        p99: pct(0.99),
        server_cpu,
    })
}

/// utime + stime of a process and all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux we run on.
    100.0
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

/// A server process started for one set of runs, killed by PID when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    addr: SocketAddr,
    _temp: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self._temp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    // A port free for both UDP and TCP now (the servers bind both).
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn start_server(
    kind: ServerKind,
    threads: usize,
    core: usize,
    rendezvous: &std::path::Path,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new("taskset");
    let cores = if threads > 1 {
        format!("{core}-{}", core + threads - 1)
    } else {
        core.to_string()
    };
    cmd.args(["-c", &cores]);
    let mut temp = None;
    match kind {
        ServerKind::Pinhole => {
            cmd.arg(rendezvous)
                .args(["--listen", &addr.to_string()])
                .args(["--udp-threads", &threads.to_string()])
                .env("RUST_LOG", "warn");
        }
        ServerKind::Coturn => {
            let dir = std::env::temp_dir().join(format!("stun-load-coturn-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            cmd.arg("turnserver").args([
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
                "--stun-only",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "-m",
                &threads.to_string(),
                "--no-stdout-log",
                "--log-file",
                "/dev/null",
                "--pidfile",
            ]);
            cmd.arg(dir.join("turnserver.pid"));
            temp = Some(dir);
        }
        ServerKind::Batched | ServerKind::Blocking => {
            let mode = if kind == ServerKind::Batched {
                "batched"
            } else {
                "blocking"
            };
            cmd.arg(std::env::current_exe()?).args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--mode",
                mode,
            ]);
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {kind:?}"))?;
    let server = Server {
        child,
        addr,
        _temp: temp,
    };
    // Ready when it answers a Binding Request (at most 10 s).
    pinhole_tests::stun_client::binding("127.0.0.1:0".parse()?, addr, Duration::from_secs(10))
        .with_context(|| format!("{kind:?} did not answer on {addr}"))?;
    Ok(server)
}

/// What `bench` runs.
#[derive(Debug)]
struct Bench {
    seconds: f64,
    windows: Vec<usize>,
    servers: Vec<ServerKind>,
    threads: Vec<usize>,
    sockets: usize,
    server_core: usize,
    load_core: usize,
    rendezvous: Option<PathBuf>,
}

fn bench(b: &Bench) -> anyhow::Result<()> {
    let rendezvous = match &b.rendezvous {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .join("pinhole-rendezvous"),
    };
    if b.servers.contains(&ServerKind::Pinhole) && !rendezvous.exists() {
        bail!(
            "{} not built: cargo build --release -p traversal --bin pinhole-rendezvous",
            rendezvous.display()
        );
    }
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(b.load_core)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)
        .context("pinning the load generator")?;
    println!(
        "STUN Binding over loopback: servers with N threads on cores {}..{}+N-1, load generator \
         on core {} ({} source sockets), {} s per run after a {} ms warm-up; window = requests \
         in flight",
        b.server_core,
        b.server_core,
        b.load_core,
        b.sockets,
        b.seconds,
        WARMUP.as_millis()
    );
    println!(
        "| server                 | window |  answers/s | per CPU-s | p50 (us) | p99 (us) |     lost | srv CPU |"
    );
    println!(
        "|------------------------|-------:|-----------:|----------:|---------:|---------:|---------:|--------:|"
    );
    let mut results: Vec<(ServerKind, usize, usize, LoadResult)> = Vec::new();
    for &kind in &b.servers {
        for &threads in &b.threads {
            let name = match kind {
                ServerKind::Pinhole => format!("pinhole-rendezvous x{threads}"),
                ServerKind::Coturn => format!("coturn turnserver -m {threads}"),
                ServerKind::Batched if threads == 1 => "ref: udp_batch echo".into(),
                ServerKind::Blocking if threads == 1 => "ref: blocking loop".into(),
                ServerKind::Batched | ServerKind::Blocking => continue,
            };
            let server = match start_server(kind, threads, b.server_core, &rendezvous) {
                Ok(server) => server,
                Err(err) => {
                    println!("| {name:<22} | (not measured: {err:#})");
                    continue;
                }
            };
            let pid = resolve_pid(server.child.id());
            for &window in &b.windows {
                let r = run_load(
                    server.addr,
                    window,
                    b.sockets,
                    Duration::from_secs_f64(b.seconds),
                    Some(pid),
                )?;
                println!("{}", r.row(&name, window));
                results.push((kind, threads, window, r));
            }
        }
    }
    summary(&results);
    Ok(())
}

/// The issue's comparison: best answers/s of each server over the windows at each thread
/// count, pinhole against coturn and N threads against one; p99 at each window both ran.
fn summary(results: &[(ServerKind, usize, usize, LoadResult)]) {
    let best = |kind: ServerKind, threads: usize| {
        results
            .iter()
            .filter(|(k, t, _, _)| *k == kind && *t == threads)
            .map(|(_, _, w, r)| (r.rate(), *w))
            .fold(None, |acc: Option<(f64, usize)>, x| match acc {
                Some(a) if a.0 >= x.0 => Some(a),
                _ => Some(x),
            })
    };
    let mut counts: Vec<usize> = results.iter().map(|(_, t, _, _)| *t).collect();
    counts.sort_unstable();
    counts.dedup();
    println!();
    for &threads in &counts {
        let (Some((ours, ours_w)), Some((theirs, theirs_w))) = (
            best(ServerKind::Pinhole, threads),
            best(ServerKind::Coturn, threads),
        ) else {
            continue;
        };
        println!(
            "{threads} thread(s): best answers/s: pinhole-rendezvous {ours:.0} (window {ours_w}), \
             coturn {theirs:.0} (window {theirs_w}): {:.2}x",
            ours / theirs
        );
        for (kind, t, window, r) in results {
            if *kind != ServerKind::Pinhole || *t != threads {
                continue;
            }
            if let Some((_, _, _, c)) = results
                .iter()
                .find(|(k, t, w, _)| *k == ServerKind::Coturn && *t == threads && w == window)
            {
                println!(
                    "  window {window:>4}: p99 pinhole {:.0} us, coturn {:.0} us ({})",
                    r.p99.as_secs_f64() * 1e6,
                    c.p99.as_secs_f64() * 1e6,
                    if r.p99 <= c.p99 { "no worse" } else { "WORSE" }
                );
            }
        }
    }
    for kind in [ServerKind::Pinhole, ServerKind::Coturn] {
        for &threads in counts.iter().filter(|&&t| t > 1) {
            if let (Some((one, _)), Some((many, _))) = (best(kind, 1), best(kind, threads)) {
                println!(
                    "{kind:?}: {threads} threads against 1: {many:.0} / {one:.0} = {:.2}x",
                    many / one
                );
            }
        }
    }
}

/// `taskset` execs the server, so the PID is the server's own.
fn resolve_pid(pid: u32) -> u32 {
    pid
}
