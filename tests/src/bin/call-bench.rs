//! `call-bench`: call setup time of `pinhole call` / `pinhole answer` (the real binaries), on
//! loopback and across the namespace NATs of `pinhole_tests::netns`, direct and relayed.
//!
//! Run by hand (root for the NAT topologies; without root they are skipped), never as a test:
//!
//! ```text
//! cargo build --workspace --bins
//! target/debug/call-bench --calls 20
//! target/debug/call-bench --calls 20 --birthday    # + one port-random side
//! ```
//!
//! For each topology a callee runs `pinhole answer` (unlimited calls) and a caller runs
//! `pinhole call --duration 1 --json` `--calls` times in a row; each caller's JSON line gives
//! `setup_ms` (placing the call to the first media packet received), the path and the RTCP
//! round trip. Printed: median and p95 of `setup_ms`, and the median `rtt_ms` of the media
//! path for comparison (target: setup within one round trip plus 50 ms).

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use pinhole_tests::netns::{Lab, NatKind};
use pinhole_tests::{Party, Place, Rendezvous, TempDir};

#[derive(Debug, Parser)]
struct Args {
    /// Calls per topology.
    #[arg(long, default_value_t = 20)]
    calls: usize,
    /// Seconds each call talks.
    #[arg(long, default_value_t = 1.0)]
    duration: f64,
    /// Also run two `MASQUERADE` NATs without `Lab::firewall_wan` (bare Linux routers).
    #[arg(long)]
    bare: bool,
    /// Also run a `--random-fully` callee and a `MASQUERADE` caller (birthday probing), with
    /// calls of at least 6 s, and print when they went direct and how many probes it took.
    #[arg(long)]
    birthday: bool,
}

#[derive(Debug, Default)]
struct Figures {
    setup: Vec<f64>,
    rtt: Vec<f64>,
    paths: Vec<String>,
    failed: usize,
    /// The caller's `direct_after_ms`, for calls that went direct.
    direct_after: Vec<f64>,
    /// Birthday probes sent (by either side).
    spray: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `calls` calls from a caller at `caller_at` to a callee answering at `callee_at`.
fn run_calls(
    args: &Args,
    duration: f64,
    server: &str,
    callee_at: Place<'_>,
    caller_at: Place<'_>,
) -> Result<Figures> {
    let dir = TempDir::new("callbench");
    let callee = Party {
        input: "tone:440".into(),
        ..Party::silent(&dir, "bcee")
    };
    let caller = Party {
        input: "tone:660".into(),
        ..Party::silent(&dir, "bcer")
    };
    let mut cmd = callee_at.command("pinhole");
    cmd.args(callee.answer_args(server));
    let mut answer = pinhole_tests::Headless::spawn(cmd);
    if !answer.wait_log("registered", Duration::from_secs(10)) {
        bail!("callee did not register: {:#?}", answer.log);
    }
    let mut figures = Figures::default();
    for _ in 0..args.calls {
        let out = caller
            .call(caller_at, server, &callee.name, duration)
            .finish(Duration::from_secs_f64(duration + 30.0));
        if !out.status.success() {
            eprintln!("call failed: {}", out.last_log());
            figures.failed += 1;
            continue;
        }
        let json = out.one_json();
        if let Some(s) = json["setup_ms"].as_f64() {
            figures.setup.push(s);
        }
        if let Some(r) = json["rtt_ms"].as_f64() {
            figures.rtt.push(r);
        }
        if let Some(d) = json["direct_after_ms"].as_f64() {
            figures.direct_after.push(d);
        }
        figures
            .spray
            .push(json["checks"]["spray"].as_f64().unwrap_or(0.0));
        figures
            .paths
            .push(json["path"].as_str().unwrap_or("?").to_owned());
    }
    Ok(figures)
}

fn report(name: &str, mut f: Figures) {
    f.setup.sort_by(f64::total_cmp);
    f.rtt.sort_by(f64::total_cmp);
    let direct = f.paths.iter().filter(|p| *p == "direct").count();
    let relay = f.paths.iter().filter(|p| *p == "relay").count();
    println!(
        "| {name} | {} | {direct}/{relay} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
        f.setup.len(),
        percentile(&f.setup, 0.5),
        percentile(&f.setup, 0.95),
        f.setup.last().copied().unwrap_or(f64::NAN),
        percentile(&f.rtt, 0.5),
        f.failed,
    );
}

/// When the calls of a birthday-probing topology went direct and what it took, in a line.
fn birthday_report(f: &mut Figures) -> String {
    f.direct_after.sort_by(f64::total_cmp);
    f.spray.sort_by(f64::total_cmp);
    format!(
        "birthday probing: {} of {} calls direct; direct after p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; \
         probes p50 {:.0}, p95 {:.0}, max {:.0} (plus 256 spares' openers)",
        f.direct_after.len(),
        f.paths.len(),
        percentile(&f.direct_after, 0.5),
        percentile(&f.direct_after, 0.95),
        f.direct_after.last().copied().unwrap_or(f64::NAN),
        percentile(&f.spray, 0.5),
        percentile(&f.spray, 0.95),
        f.spray.last().copied().unwrap_or(f64::NAN),
    )
}

/// Two clients each behind its own NAT, the callee's of `kind` and the caller's of
/// `caller_kind` (WAN firewalled as home routers are, when `firewall`).
fn nat_topology(
    args: &Args,
    kind: NatKind,
    caller_kind: NatKind,
    firewall: bool,
) -> Result<Option<Figures>> {
    let Some(mut lab) = Lab::new() else {
        return Ok(None);
    };
    // As deep as the real internet is at least (hole punching's openers, TTL 2 and 3, die in
    // it rather than at the peer's router).
    lab.internet_hops(4)?;
    let server_host = lab.server("srv")?;
    let mut nat_a = lab.nat(kind)?;
    let mut nat_b = lab.nat(caller_kind)?;
    if firewall {
        lab.firewall_wan(&nat_a)?;
        lab.firewall_wan(&nat_b)?;
    }
    let a = lab.host_behind(&mut nat_a, "cee")?;
    let b = lab.host_behind(&mut nat_b, "cer")?;
    let server = Rendezvous::start_at(
        Place::In(&lab, &server_host.ns),
        &format!("{}:3478", server_host.ip),
        &["--allow-private-targets", "--no-limits"],
    );
    let server_addr = server.addr.to_string();
    let duration = if kind == caller_kind {
        args.duration
    } else {
        args.duration.max(6.0)
    };
    let f = run_calls(
        args,
        duration,
        &server_addr,
        Place::In(&lab, &a.ns),
        Place::In(&lab, &b.ns),
    )?;
    drop(server);
    Ok(Some(f))
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!(
        "{} calls per topology, {} s each; setup_ms from the caller's JSON line",
        args.calls, args.duration
    );
    println!(
        "| topology | calls | direct/relay | setup p50 (ms) | p95 (ms) | max (ms) | rtt p50 (ms) | failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    {
        let server = Rendezvous::start_at(Place::Local, "127.0.0.1:0", &["--no-limits"]);
        let server_addr = server.addr.to_string();
        let f = run_calls(
            &args,
            args.duration,
            &server_addr,
            Place::Local,
            Place::Local,
        )?;
        report("loopback", f);
    }
    match nat_topology(&args, NatKind::Masquerade, NatKind::Masquerade, true)? {
        Some(f) => report("2x MASQUERADE NAT (direct)", f),
        None => println!("| 2x MASQUERADE NAT | skipped (not root) |"),
    }
    match nat_topology(&args, NatKind::RandomFully, NatKind::RandomFully, true)? {
        Some(f) => report("2x --random-fully NAT (relay)", f),
        None => println!("| 2x --random-fully NAT | skipped (not root) |"),
    }
    if args.bare {
        match nat_topology(&args, NatKind::Masquerade, NatKind::Masquerade, false)? {
            Some(f) => report("2x MASQUERADE NAT, no WAN firewall", f),
            None => println!("| 2x MASQUERADE NAT, no WAN firewall | skipped (not root) |"),
        }
    }
    if args.birthday {
        match nat_topology(&args, NatKind::RandomFully, NatKind::Masquerade, true)? {
            Some(mut f) => {
                let probing = birthday_report(&mut f);
                report("--random-fully callee, MASQUERADE caller (birthday)", f);
                println!("{probing}");
            }
            None => println!("| --random-fully x MASQUERADE | skipped (not root) |"),
        }
    }
    Ok(())
}
