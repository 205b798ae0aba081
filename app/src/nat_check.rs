//! `pinhole nat-check`: runs the patent's exchange once against a rendezvous server (or asks a
//! plain STUN server for the mapped address) and prints what it found.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use traversal::client::Event;
use traversal::driver::{self, Driver, Options};

/// Longest the lifetime measurement may run before nat-check gives up on it.
const MEASURE_LIMIT: Duration = Duration::from_secs(900);

/// Check how this machine's NAT treats UDP: the patent's exchange against a Pinhole
/// rendezvous server (or, with --stun, mapped-address discovery against any STUN server).
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["server", "stun"]))]
pub(crate) struct NatCheckArgs {
    /// Rendezvous server, HOST[:PORT] (UDP and TCP on the same port; the port is 3478 when left
    /// out). Default: the settings file's server.
    #[arg(long, value_name = "HOST[:PORT]")]
    server: Option<String>,
    /// Any standard STUN server, HOST:PORT: only the mapped address is learnt, so the verdict
    /// is limited (it compares that address with the local ones).
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with_all = ["hold", "measure_lifetime", "keepalive_interval"]
    )]
    stun: Option<String>,
    /// Accept only the server certificate with this fingerprint (default: the settings' for
    /// their server; else a CA-signed certificate, else the one in known-servers.txt beside the
    /// settings, else the first one seen, recorded there).
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "stun")]
    server_fingerprint: Option<String>,
    /// Print one JSON object on stdout instead of a report.
    #[arg(long)]
    json: bool,
    /// Seconds allowed to reach the server and get an answer.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// After the verdict, stay registered this many seconds sending keepalives, then check
    /// that the server still reaches this machine through the mapping.
    #[arg(long, value_name = "SECS")]
    hold: Option<f64>,
    /// Keepalive interval in seconds (default: 15 s, or the measured one with
    /// --measure-lifetime).
    #[arg(long, value_name = "SECS")]
    keepalive_interval: Option<f64>,
    /// Measure how long the NAT keeps an idle UDP mapping (with a second socket; may take
    /// minutes when the NAT keeps mappings long).
    #[arg(long)]
    measure_lifetime: bool,
    /// Longest idle time the lifetime measurement tries, in seconds; a mapping that outlives
    /// it is reported as living at least that long.
    #[arg(long, value_name = "SECS", default_value_t = 240.0)]
    lifetime_max: f64,
    /// Also test filtering behind NAT: does a probe from another server port get through?
    /// (Always done for the `public` and `proxy` verdicts, where it tells whether a firewall
    /// filters unsolicited UDP.)
    #[arg(long)]
    filtering: bool,
    /// Do not ask the router for a port mapping (by default nat-check asks with PCP, NAT-PMP
    /// and UPnP IGD, reports what it got, and deletes the mapping again).
    #[arg(long, conflicts_with = "stun")]
    no_port_mapping: bool,
}

/// What `pinhole nat-check` found; the measurements that were not made stay `None` (left out
/// of the JSON).
#[derive(Debug, Default, Serialize)]
struct Report {
    mode: &'static str,
    server: String,
    behind_nat: bool,
    verdict: &'static str,
    local_addresses: Vec<IpAddr>,
    mapped_address: String,
    user_index: Option<u32>,
    elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    limited: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_tcp: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filtered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalives_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive_answers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping_lost: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reregistrations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping_changes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reachable_at_end: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    final_mapped_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping_lifetime_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping_lifetime_at_least: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive_interval_s: Option<f64>,
    /// How the NAT picks the public port of the media socket: "kept" (its own port, as
    /// `MASQUERADE` and most home routers do), "random" (`--random-fully`, some carrier NATs),
    /// "unknown" (no NAT, or nothing to go by). A call between a "random" and a "kept" side
    /// goes direct by birthday probing; between two "random" ones it is relayed unless a port
    /// mapping or IPv6 helps.
    #[serde(skip_serializing_if = "Option::is_none")]
    nat_ports: Option<&'static str>,
    /// The router's port mapping, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    port_mapping: Option<String>,
    /// How it was mapped: "PCP", "NAT-PMP", "UPnP IGD".
    #[serde(skip_serializing_if = "Option::is_none")]
    port_mapping_method: Option<String>,
    /// The public address the router mapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    port_mapping_external: Option<SocketAddr>,
}

fn secs(value: f64, flag: &str) -> Result<Duration, String> {
    if (0.0..1e7).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{flag} must be a number of seconds, not {value}"))
    }
}

/// Runs the subcommand; prints the report on stdout or one line on stderr.
pub(crate) fn run(args: NatCheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pinhole nat-check: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    match runtime.block_on(check(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("pinhole nat-check: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_human(&report);
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("pinhole nat-check: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn check(args: NatCheckArgs) -> Result<Report, String> {
    let start = Instant::now();
    let timeout = secs(args.timeout, "--timeout")?;
    if timeout.is_zero() {
        return Err("--timeout must be more than 0".into());
    }
    if let Some(stun) = &args.stun {
        return check_stun(stun, timeout, start).await;
    }
    let server = match args.server.as_deref() {
        // The port defaults to 3478, as in Settings and `pinhole call`.
        Some(server) => pinhole::settings::ServerAddr::parse(server)
            .map_err(|e| format!("--server: {e}"))?
            .to_string(),
        None => settings_server()?,
    };
    let keepalive_interval = args
        .keepalive_interval
        .map(|v| secs(v, "--keepalive-interval"))
        .transpose()?;
    if keepalive_interval.is_some_and(|d| d < Duration::from_millis(100)) {
        return Err("--keepalive-interval must be at least 0.1 s".into());
    }
    let hold = args.hold.map(|v| secs(v, "--hold")).transpose()?;
    let options = Options {
        timeout,
        keepalive_interval,
        measure_lifetime: args.measure_lifetime,
        verify_mapping: true,
        media_bind: None,
        lifetime_max: secs(args.lifetime_max, "--lifetime-max")?,
        trust: trust(args.server_fingerprint.as_deref(), &server)?,
    };
    let mut driver = tokio::time::timeout(timeout, Driver::connect(&server, options))
        .await
        .map_err(|_| format!("no answer from {server} within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let mut observed_tcp = None;
    let mut verdict = None;
    let remaining = timeout.saturating_sub(start.elapsed());
    driver
        .run_for(remaining, |e| match e {
            Event::Welcomed { observed, .. } => {
                observed_tcp = Some(*observed);
                false
            }
            Event::Verdict { verdict: v, mapped } => {
                verdict = Some((*v, *mapped));
                true
            }
            _ => false,
        })
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let Some((verdict, mapped)) = verdict else {
        return Err(if observed_tcp.is_none() {
            format!("{server} accepted the connection but did not answer within {timeout:?}")
        } else {
            format!("no UDP answer from {server} within {timeout:?} (is UDP to it blocked?)")
        });
    };
    let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let client = driver.client();
    let mut report = Report {
        mode: "server",
        server: driver.server().to_string(),
        behind_nat: client.private_network(),
        verdict: verdict.as_str(),
        local_addresses: driver.local_addresses().to_vec(),
        mapped_address: mapped.to_string(),
        user_index: Some(client.user_index()),
        elapsed_ms,
        observed_tcp,
        nat_ports: Some(nat_ports(&driver, mapped)),
        ..Report::default()
    };

    if args.filtering || verdict != traversal::control::Verdict::Nat {
        // RFC 5780's filtering test: a probe from the server's other port, to which we never
        // sent anything.
        driver.client_mut().check_filtering(Instant::now());
        report.filtered = wait_for(&mut driver, &server, timeout, |e| match e {
            Event::Filtering { filtered } => Some(*filtered),
            _ => None,
        })
        .await?
        .flatten();
    }

    let mut lifetime = None;
    let mut lost_events = 0u64;
    if hold.is_some() || args.measure_lifetime {
        let hold_end = start + hold.unwrap_or_default();
        let measure_end = start + MEASURE_LIMIT;
        loop {
            let now = Instant::now();
            let measuring = args.measure_lifetime && lifetime.is_none() && now < measure_end;
            if now >= hold_end && !measuring {
                break;
            }
            let until = if measuring {
                measure_end.max(hold_end)
            } else {
                hold_end
            };
            let wait = until.saturating_duration_since(now);
            let measured = wait_for(&mut driver, &server, wait, |e| match e {
                Event::LifetimeMeasured {
                    lifetime, at_least, ..
                } => Some((*lifetime, *at_least)),
                Event::MappingLost { .. } => {
                    lost_events += 1;
                    None
                }
                _ => None,
            })
            .await?;
            let measured_now = measured.is_some();
            if measured_now {
                lifetime = measured;
            }
            if !measured_now
                && args.measure_lifetime
                && lifetime.is_none()
                && Instant::now() >= measure_end
            {
                return Err(format!(
                    "the mapping lifetime measurement did not finish within {MEASURE_LIMIT:?}"
                ));
            }
        }
        if hold.is_some() {
            // The end of the hold: does the server still reach us through the mapping?
            driver.client_mut().check_reachability(Instant::now());
            let reachable = wait_for(&mut driver, &server, timeout, |e| match e {
                Event::Reachability { reachable } => Some(*reachable),
                Event::MappingLost { .. } => {
                    lost_events += 1;
                    None
                }
                _ => None,
            })
            .await?
            .unwrap_or(false);
            let stats = driver.client().stats();
            report.hold_s = hold.map(|d| d.as_secs_f64());
            report.keepalives_sent = Some(stats.keepalives_sent);
            report.keepalive_answers = Some(stats.keepalive_answers);
            report.mapping_lost = Some(lost_events > 0 || !reachable);
            report.reregistrations = Some(stats.reregistrations);
            report.mapping_changes = Some(stats.mapping_changes);
            report.reachable_at_end = Some(reachable);
            report.final_mapped_address = driver.client().mapped().map(|m| m.to_string());
        }
    }
    if let Some((l, at_least)) = lifetime {
        report.mapping_lifetime_s = Some(l.as_secs_f64());
        report.mapping_lifetime_at_least = Some(at_least);
    }
    if hold.is_some() || args.measure_lifetime {
        report.keepalive_interval_s = Some(driver.client().keepalive_interval().as_secs_f64());
    }
    if !args.no_port_mapping {
        let port = driver.media_socket().local_addr().map_or(0, |a| a.port());
        let status = port_mapping(driver.server(), port).await;
        if let traversal::portmap::Status::Mapped {
            method, external, ..
        } = &status
        {
            report.port_mapping_method = Some(method.to_string());
            report.port_mapping_external = Some(*external);
        }
        report.port_mapping = Some(status.to_string());
    }
    driver.close().await;
    Ok(report)
}

/// Longest nat-check waits for the router's answer about a port mapping.
const PORT_MAPPING_LIMIT: Duration = Duration::from_secs(10);

/// Asks the router to map the media socket's `port` (when a router may be between us and
/// `server`), waits for its answer, deletes the mapping again: what it said.
async fn port_mapping(server: SocketAddr, port: u16) -> traversal::portmap::Status {
    use traversal::portmap::{self, PortMapper, Status};
    // The local address towards the server: a route lookup, nothing is sent.
    let local = std::net::UdpSocket::bind(SocketAddr::new(
        if server.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))
    .and_then(|s| s.connect(server).and_then(|()| s.local_addr()));
    let internal = match local {
        Ok(SocketAddr::V4(local))
            if port != 0 && portmap::worth_asking(IpAddr::V4(*local.ip()), server.ip()) =>
        {
            std::net::SocketAddrV4::new(*local.ip(), port)
        }
        _ => return Status::Off,
    };
    let mapper = PortMapper::start(internal, portmap::Options::default());
    let mut watch = mapper.watch();
    let settled = tokio::time::timeout(PORT_MAPPING_LIMIT, async {
        loop {
            let status = watch.borrow_and_update().clone();
            if status != Status::Asking {
                return status;
            }
            if watch.changed().await.is_err() {
                return Status::Unavailable("the port mapping stopped".into());
            }
        }
    })
    .await
    .unwrap_or_else(|_| Status::Unavailable(format!("no answer within {PORT_MAPPING_LIMIT:?}")));
    mapper.release(Duration::from_secs(2)).await;
    settled
}

async fn check_stun(server: &str, timeout: Duration, start: Instant) -> Result<Report, String> {
    let result = driver::stun_binding(server, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let local_addresses = driver::local_addresses();
    let own = local_addresses.contains(&result.mapped.ip());
    let behind_nat = !own || result.mapped.port() != result.local.port();
    Ok(Report {
        mode: "stun",
        server: result.server.to_string(),
        behind_nat,
        verdict: if behind_nat { "nat" } else { "public" },
        local_addresses,
        mapped_address: result.mapped.to_string(),
        user_index: None,
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        limited: Some(true),
        note: Some(
            "plain STUN: verdict from comparing the mapped address with the local addresses; \
             a proxy cannot be told from a public address, and nothing is kept alive",
        ),
        ..Report::default()
    })
}

/// Runs the driver for at most `wait`, until `pick` finds what it waits for in an event.
async fn wait_for<T>(
    driver: &mut Driver,
    server: &str,
    wait: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<Option<T>, String> {
    let mut found = None;
    driver
        .run_for(wait, |e| {
            found = pick(e);
            found.is_some()
        })
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    Ok(found)
}

/// How the NAT picked the media socket's public port ([`Report::nat_ports`]), from the
/// socket's own addresses and the one the server saw.
fn nat_ports(driver: &Driver, mapped: SocketAddr) -> &'static str {
    let port = driver.media_socket().local_addr().map_or(0, |a| a.port());
    let mut candidates: Vec<SocketAddr> = driver
        .local_addresses()
        .iter()
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    candidates.push(mapped);
    match traversal::punch::port_kind(&candidates) {
        traversal::punch::PortKind::Keeps(_) => "kept",
        traversal::punch::PortKind::Random(_) => "random",
        traversal::punch::PortKind::Unknown => "unknown",
    }
}

fn print_human(r: &Report) {
    let what = match r.verdict {
        "public" => "a public address: no NAT between you and the server",
        "proxy" => "a public address of your own, reached through a proxy",
        _ => "a private address behind NAT",
    };
    println!("server:          {} ({})", r.server, r.mode);
    println!("verdict:         {} ({what})", r.verdict);
    if r.limited == Some(true) {
        println!("                 limited: plain STUN tells only the mapped address");
    }
    println!(
        "behind NAT:      {}",
        if r.behind_nat { "yes" } else { "no" }
    );
    println!("mapped address:  {}", r.mapped_address);
    if let Some(u) = r.user_index {
        println!("user index:      {u}");
    }
    let locals: Vec<String> = r.local_addresses.iter().map(ToString::to_string).collect();
    println!("local addresses: {}", locals.join(", "));
    if let Some(hold) = r.hold_s {
        println!(
            "held {hold} s:     {} keepalives, {} re-registrations, mapping {}, reachable at the end: {}",
            r.keepalives_sent.unwrap_or(0),
            r.reregistrations.unwrap_or(0),
            if r.mapping_lost == Some(true) {
                "lost at least once"
            } else {
                "kept"
            },
            if r.reachable_at_end == Some(true) {
                "yes"
            } else {
                "no"
            },
        );
    }
    if let Some(l) = r.mapping_lifetime_s {
        let at_least = if r.mapping_lifetime_at_least == Some(true) {
            "at least "
        } else {
            ""
        };
        println!("mapping lifetime: {at_least}{l:.1} s");
    }
    if let Some(k) = r.keepalive_interval_s {
        println!("keepalive every: {k:.1} s");
    }
    match r.nat_ports {
        Some("kept") => println!(
            "NAT ports:       kept (direct with most peers; a port-random one by birthday probing)"
        ),
        Some("random") => println!(
            "NAT ports:       random (direct with port-keeping peers by birthday probing; \
             relayed with port-random ones unless a port mapping or IPv6 helps)"
        ),
        _ => {}
    }
    if let Some(m) = &r.port_mapping {
        println!("port mapping:    {m}");
    }
    println!("took:            {} ms", r.elapsed_ms);
}

/// How `server`'s certificate is checked: `--server-fingerprint`, else the settings' pinned
/// fingerprint for their own server, else the one recorded for it in known-servers.txt beside
/// the settings. A check is a diagnosis: it reads the known servers but records nothing (a
/// server seen for the first time is trusted for this run only).
fn trust(fingerprint: Option<&str>, server: &str) -> Result<traversal::tls::ClientTrust, String> {
    use pinhole::settings;
    let mut trust = traversal::tls::ClientTrust::default();
    if let Ok(path) = settings::default_path() {
        if let Ok(Some(stored)) = settings::load(&path)
            && stored
                .server_addrs()
                .unwrap_or_default()
                .iter()
                .any(|a| a.to_string() == server)
        {
            trust.pinned = stored.pinned_fingerprint().ok().flatten();
        }
        let known = settings::beside(&path, settings::KNOWN_SERVERS_FILE);
        if trust.pinned.is_none() && known.exists() {
            let known = traversal::tls::KnownServers::load(&known)
                .map_err(|e| format!("{}: {e}", known.display()))?;
            trust.pinned = known.get(server);
        }
    }
    if let Some(fp) = fingerprint {
        let fp = fp
            .parse()
            .map_err(|e| format!("--server-fingerprint: {e}"))?;
        trust.pinned = Some(fp);
    }
    Ok(trust)
}

/// The settings file's server, for a check without `--server` (as `pinhole call` does).
fn settings_server() -> Result<String, String> {
    use pinhole::settings;
    let path = settings::default_path().map_err(|e| e.to_string())?;
    let stored = settings::load(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .unwrap_or_default();
    match stored.server_addr() {
        Ok(Some(server)) => Ok(server.to_string()),
        Ok(None) => Err(format!(
            "no server to check: pass --server HOST[:PORT] (or --stun HOST:PORT), or set \
             `server` in {}",
            path.display()
        )),
        Err(e) => Err(format!("{}: server: {e}", path.display())),
    }
}
