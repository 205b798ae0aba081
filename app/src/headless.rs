//! `pinhole call` and `pinhole answer`: the headless front end on the call engine.
//!
//! Each takes its server, name and audio from the flags, or from the settings file where a flag
//! is absent (`--config PATH`, else `$PINHOLE_CONFIG`, else the user's config directory). The
//! identity key is created on first use and saved in that file. With `--json` each finished
//! call prints one JSON line on stdout ([`CallReport`]). Exit status 0 when the call connected
//! and ended normally; otherwise a one-line reason on stderr and a non-zero status: 1 when the
//! call or the server failed, 2 for bad flags or settings. SIGINT and SIGTERM hang up cleanly
//! (the WAV file is finalised, the server told).
//!
//! Trust: the server's certificate is checked as the settings say (`server_fingerprint`, or
//! `--server-fingerprint`; else a CA-signed certificate, else the one recorded in
//! `known-servers.txt` on the first connection). A changed certificate stops the command with
//! both fingerprints and status 1; `pinhole trust-server` accepts the new one. A peer whose
//! key changed since the last call is a warning on stderr (and `"peer_key_changed": true` in
//! the report); `pinhole trust-contact` accepts the new key.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use media::audio::{SinkSpec, SourceSpec};
use media::processing::ProcessingConfig;

use traversal::tls::Fingerprint;

use crate::contacts::Contacts;
use crate::engine::{
    CallReport, Command, EndReason, Engine, EngineConfig, Event, MediaConfig, Registration,
    Security, StopReason,
};
use crate::settings::{self, ServerAddr, Settings};

/// How often the front end looks at its flags between events.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for the engine to say it registered (it gives up on its own before).
const REGISTER_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for the end of a call after hanging up.
const HANGUP_WAIT: Duration = Duration::from_secs(5);

/// The flags `call` and `answer` share.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Rendezvous server, HOST:PORT; or several, comma-separated (A,B): registered with the
    /// first that answers, moving to the next when it fails (default: the settings file's).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub server: Option<String>,
    /// Accept only the server certificate with this fingerprint, as its operator publishes it
    /// (default: the settings file's `server_fingerprint` for its server; else a CA-signed
    /// certificate, else the one recorded on the first connection in known-servers.txt).
    #[arg(long, value_name = "sha256:HEX")]
    pub server_fingerprint: Option<String>,
    /// Your name, as others call it (default: the settings file's).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// What to send: tone:HZ, wav:PATH, silence, device or device:NAME (default: the settings
    /// file's input device).
    #[arg(long, value_name = "SRC")]
    pub input: Option<String>,
    /// Where to play what arrives: wav:PATH, null, device or device:NAME (default: the settings
    /// file's output device).
    #[arg(long, value_name = "SINK")]
    pub output: Option<String>,
    /// Audio per packet, milliseconds: 10, 20 or 40 (default: the settings file's
    /// `frame_ms`, 20).
    #[arg(long, value_name = "MS")]
    pub frame_ms: Option<u32>,
    /// Echo cancellation, noise suppression and gain control on what is sent: on or off
    /// (default: on for a device input, as the settings file's [audio] says; off for a tone, a
    /// WAV or silence, which are sent as they are).
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    pub processing: Option<String>,
    /// No echo cancellation (when processing is on).
    #[arg(long)]
    pub no_echo_cancellation: bool,
    /// No noise suppression, nor its high-pass filter (when processing is on).
    #[arg(long)]
    pub no_noise_suppression: bool,
    /// No automatic gain control (when processing is on).
    #[arg(long)]
    pub no_gain_control: bool,
    /// Print one JSON line per finished call on stdout.
    #[arg(long)]
    pub json: bool,
    /// The settings file (default: $PINHOLE_CONFIG, or settings.toml in the user's config
    /// directory). The identity key is created and saved there on first use.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Call a name, talk for a while, hang up.
#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Whom to call (`echo`: the server sends your own audio back).
    #[arg(value_name = "PEER")]
    pub peer: String,
    /// Seconds to talk once connected, then hang up (more than 0, at most 86400).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Register and answer incoming calls.
#[derive(Debug, Clone, Args)]
pub struct AnswerArgs {
    /// Answer this many calls (1 or more), then exit (default: until interrupted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: Option<u64>,
    /// Let each call ring this many seconds before answering (default: answer at once). Past
    /// the server's ringing time (30 s) the caller hears no answer.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_ring)]
    pub ring: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--ring`: seconds, 0 to 300.
fn parse_ring(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=300.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds from 0 to 300")),
    }
}

/// A failure for the user: a status and one line.
#[derive(Debug)]
struct Failure {
    status: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        status: 2,
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> Failure {
    Failure {
        status: 1,
        message: message.into(),
    }
}

fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("pinhole: {}", f.message.replace('\n', " "));
            ExitCode::from(f.status)
        }
    }
}

/// `pinhole call`.
pub fn call(args: CallArgs) -> ExitCode {
    exit(run_call(args))
}

/// `pinhole answer`.
pub fn answer(args: AnswerArgs) -> ExitCode {
    exit(run_answer(args))
}

/// The settings file: `--config`, else the default.
fn settings_path(config: Option<&PathBuf>) -> Result<PathBuf, Failure> {
    match config {
        Some(path) => Ok(path.clone()),
        None => settings::default_path().map_err(|e| usage(e.to_string())),
    }
}

/// Flags over settings: the engine's configuration. Creates and saves the key on first use.
fn configure(common: &CommonArgs) -> Result<EngineConfig, Failure> {
    let path = settings_path(common.config.as_ref())?;
    let loaded = settings::load(&path).map_err(|e| usage(e.to_string()))?;
    let first_run = loaded.is_none();
    let mut stored = loaded.unwrap_or_default();

    let (server, from) = match &common.server {
        Some(server) => (server.clone(), "--server".to_owned()),
        None => (stored.server.clone(), format!("{}: server", path.display())),
    };
    let servers =
        settings::parse_server_list(&server).map_err(|e| usage(format!("{from}: {e}")))?;
    if servers.is_empty() {
        return Err(usage(format!(
            "no server: pass --server HOST:PORT or set `server` in {}",
            path.display()
        )));
    }
    let mut trust = stored
        .client_trust(&path)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    // The settings' fingerprint is their servers': not another one's given with --server.
    let stored_servers = stored.server_addrs().unwrap_or_default();
    if !servers.iter().all(|s| stored_servers.contains(s)) {
        trust.pinned = None;
    }
    if let Some(fp) = &common.server_fingerprint {
        let fp = fp
            .parse::<Fingerprint>()
            .map_err(|e| usage(format!("--server-fingerprint: {e}")))?;
        trust.pinned = Some(fp);
    }
    let name = common
        .user
        .clone()
        .unwrap_or_else(|| stored.name.clone())
        .trim()
        .to_owned();
    if name.is_empty() {
        return Err(usage(format!(
            "no name: pass --user NAME or set `name` in {}",
            path.display()
        )));
    }
    settings::validate_name(&name).map_err(|e| usage(format!("--user: {e}")))?;
    let input = match &common.input {
        Some(spec) => spec.parse::<SourceSpec>(),
        None => Ok(SourceSpec::Device {
            name: stored.input_device.clone(),
        }),
    }
    .map_err(|e| usage(e.to_string()))?;
    let output = match &common.output {
        Some(spec) => spec.parse::<SinkSpec>(),
        None => Ok(SinkSpec::Device {
            name: stored.output_device.clone(),
        }),
    }
    .map_err(|e| usage(e.to_string()))?;

    let (key, created) = stored
        .ensure_key()
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    if created {
        if first_run {
            stored.server = settings::format_server_list(&servers);
            stored.name = name.clone();
            // The server is kept with the certificate it was reached with (a link's or
            // --server-fingerprint's), or later runs would trust whatever it shows first.
            if let Some(fp) = trust.pinned {
                stored.server_fingerprint = fp.to_string();
            }
        }
        save_key(&path, &stored)?;
    }

    // Audio that cannot open fails now, before anyone's phone rings.
    input.open().map_err(|e| failed(format!("input: {e}")))?;
    output.open().map_err(|e| failed(format!("output: {e}")))?;

    let advanced = &stored.advanced;
    let frame_ms = common.frame_ms.unwrap_or(advanced.frame_ms);
    if !settings::FRAME_MS_CHOICES.contains(&frame_ms) {
        return Err(usage(format!(
            "--frame-ms {frame_ms}: a frame is 10, 20 or 40 ms"
        )));
    }
    let processing = processing(common, &stored.audio, &input);
    let mut config = EngineConfig::new(settings::format_server_list(&servers), name, key);
    config.input = input;
    config.output = output;
    config.media = MediaConfig {
        frame_ms,
        bitrate_bps: advanced.bitrate_bps,
        processing,
        ..MediaConfig::default()
    };
    config.udp_port = advanced.udp_port;
    config.port_mapping = advanced.port_mapping;
    config.keepalive = advanced
        .keepalive_s
        .map(|s| Duration::from_secs(u64::from(s)));
    config.trust = trust;
    config.contacts = Some(settings::contacts_path(&path));
    Ok(config)
}

/// The capture processing for a headless call: `--processing`, else on for a device input (as
/// the settings' `[audio]` says) and off for a tone, a file or silence (a steady tone is the
/// very noise a suppressor removes); the `--no-...` flags turn parts off.
fn processing(
    common: &CommonArgs,
    audio: &settings::Audio,
    input: &SourceSpec,
) -> ProcessingConfig {
    let on = match common.processing.as_deref() {
        Some(flag) => flag == "on",
        None => matches!(input, SourceSpec::Device { .. }),
    };
    if !on {
        return ProcessingConfig::off();
    }
    let audio = settings::Audio {
        echo_cancellation: audio.echo_cancellation && !common.no_echo_cancellation,
        noise_suppression: audio.noise_suppression && !common.no_noise_suppression,
        gain_control: audio.gain_control && !common.no_gain_control,
    };
    audio.processing()
}

fn save_key(path: &std::path::Path, stored: &Settings) -> Result<(), Failure> {
    settings::save(path, stored)
        .map_err(|e| usage(format!("cannot save the new identity key: {e}")))?;
    tracing::info!(path = %path.display(), "created an identity key");
    Ok(())
}

/// SIGINT and SIGTERM set the flag (watched by a small thread of its own).
fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("pinhole-signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                set.store(true, Ordering::SeqCst);
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("signals not watched: {e}");
    }
    flag
}

/// Waits for the engine to register, and with `mapping` for the router's answer about a port
/// mapping too (at most [`PORT_MAPPING_WAIT`] more), so that a call placed next lists the
/// mapped address. (`pinhole answer` takes its answer in its loop: an incoming call must not
/// be missed meanwhile.)
fn wait_registered(
    engine: &Engine,
    interrupted: &AtomicBool,
    mapping: bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + REGISTER_WAIT;
    let mut online_until: Option<Instant> = None;
    let mut mapping_settled = false;
    loop {
        // Registered first: a signal that came after the registration was logged (a script
        // that waits for that line, then stops the phone) is a clean stop of a registered
        // phone, handled by the caller, not a failure to register.
        match online_until {
            Some(until) if !mapping || mapping_settled || Instant::now() >= until => {
                return Ok(());
            }
            None if Instant::now() >= deadline => {
                return Err(failed(format!(
                    "server unreachable: not registered within {REGISTER_WAIT:?}"
                )));
            }
            _ => {}
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(failed(if online_until.is_some() {
                "interrupted while waiting for the router's port mapping"
            } else {
                "interrupted before registering"
            }));
        }
        match engine.next_event(POLL) {
            Some(Event::Registration(registration @ Registration::Online { .. })) => {
                log_registration(&registration);
                online_until = Some(Instant::now() + PORT_MAPPING_WAIT);
            }
            Some(Event::PortMapping(status)) => {
                log_port_mapping(&status);
                mapping_settled = !matches!(status, traversal::portmap::Status::Asking);
            }
            Some(Event::Stopped { reason }) => return Err(stopped(reason)),
            Some(Event::Warning(w)) => tracing::warn!("{w}"),
            Some(_) => {}
            None if engine.is_stopped() => {
                return Err(failed("the engine stopped"));
            }
            None => {}
        }
    }
}

/// How long a headless phone waits for the router's port mapping after registering.
const PORT_MAPPING_WAIT: Duration = Duration::from_secs(4);

fn log_port_mapping(status: &traversal::portmap::Status) {
    tracing::info!("headless: router port mapping: {status}");
    if *status != traversal::portmap::Status::Asking {
        // For scripts: the candidates of the next call are known.
        tracing::info!("headless: port mapping settled");
    }
}

/// Logs a change of the registration (also a new one after the server came back).
fn log_registration(registration: &Registration) {
    match registration {
        Registration::Online {
            name,
            mapped,
            verdict,
            server,
        } => {
            let verdict = verdict.map_or("unknown", |v| v.as_str());
            tracing::info!(name, %mapped, verdict, server, "registered");
        }
        // A restart the server announced is no failure: info, not a warning.
        Registration::Offline {
            reason: crate::engine::ServerLoss::ShuttingDown,
            ..
        } => tracing::info!("the server is restarting; registering again when it is back"),
        Registration::Offline { reason, .. } => {
            tracing::warn!(?reason, "lost the server; connecting again");
        }
        Registration::Replaced => {
            tracing::warn!("the name was registered from another device");
        }
        Registration::Connecting => tracing::debug!("connecting to the server"),
    }
}

/// The failure for an engine that stopped.
fn stopped(reason: Option<StopReason>) -> Failure {
    match reason {
        Some(StopReason::UntrustedServer {
            server,
            pinned,
            presented,
        }) => failed(format!(
            "the certificate of {server} changed: trusted {pinned}, presented {presented}. \
             Someone may be intercepting the connection, so nothing was sent. If the server's \
             operator replaced the certificate (check the fingerprint with them), accept it with \
             `pinhole trust-server {server} {presented}` (server_certificate_changed)"
        )),
        reason => failed(reason.map_or_else(|| "the engine stopped".into(), |r| r.to_string())),
    }
}

/// Says on stderr how the call is protected: the code to compare, and loudly a changed key.
fn say_security(peer: &str, security: &Security) {
    let Some(sas) = &security.sas else {
        tracing::info!(peer, e2e = security.suite, "connected");
        return;
    };
    tracing::info!(
        peer,
        e2e = security.suite,
        sas,
        "connected; compare the code with {peer}"
    );
    if let (Some(check), Some(key)) = (&security.key_check, &security.peer_key)
        && check.is_changed()
    {
        eprintln!(
            "pinhole: WARNING: {peer}'s key changed since your last call. Compare the code \
             {sas} with {peer} before saying anything private: if it differs, someone is \
             listening in. If it matches, accept the new key with `pinhole trust-contact {peer} \
             {key}`"
        );
    }
}

fn print_report(report: &CallReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => tracing::error!("report not printed: {e}"),
        }
    } else {
        let code = report
            .sas
            .as_deref()
            .map_or_else(String::new, |sas| format!(", code {sas}"));
        let changed = if report.peer_key_changed {
            ", PEER KEY CHANGED"
        } else {
            ""
        };
        let echo = report.echo_latency_ms.map_or_else(String::new, |ms| {
            format!(", your voice came back after {ms:.0} ms")
        });
        println!(
            "call with {}: encrypted {}{code}{changed}, {:.1} s, {} ({} path changes), setup {}, RTP sent {} received {} lost {}, jitter {:.1} ms, RTT {}{echo}; quality: {}",
            report.peer,
            report.e2e,
            report.duration_s,
            report.path.as_str(),
            report.path_changes,
            report
                .setup_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            report.rtp.sent,
            report.rtp.received,
            report.rtp.lost,
            report.rtp.jitter_ms,
            report
                .rtt_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms")),
            report.quality.words(),
        );
    }
}

/// Hangs up and waits for the call's end; its report if it had connected.
fn hang_up_and_wait(engine: &Engine) -> Option<CallReport> {
    engine.send(Command::HangUp);
    let deadline = Instant::now() + HANGUP_WAIT;
    while Instant::now() < deadline {
        match engine.next_event(POLL) {
            Some(Event::Ended { report, .. }) => return report,
            Some(Event::Stopped { .. }) => return None,
            _ => {}
        }
    }
    None
}

fn run_call(args: CallArgs) -> Result<(), Failure> {
    if !args.duration.is_finite() || args.duration <= 0.0 || args.duration > 86_400.0 {
        return Err(usage(format!(
            "--duration {}: the call must last more than 0 and at most 86400 seconds",
            args.duration
        )));
    }
    let talk = Duration::from_secs_f64(args.duration);
    let config = configure(&args.common)?;
    let call_bound = config.call_timeout + Duration::from_secs(5);
    let interrupted = watch_signals();
    let engine = Engine::start(config).map_err(|e| failed(e.to_string()))?;
    wait_registered(&engine, &interrupted, true)?;

    let peer = args.peer;
    engine.send(Command::Call(peer.clone()));
    let placed = Instant::now();
    let mut last_warning = None;
    // Until connected.
    loop {
        if interrupted.load(Ordering::SeqCst) {
            hang_up_and_wait(&engine);
            return Err(failed(format!("interrupted before {peer} answered")));
        }
        if placed.elapsed() >= call_bound {
            hang_up_and_wait(&engine);
            return Err(failed(format!("no answer from {peer}")));
        }
        match engine.next_event(POLL) {
            Some(Event::Warning(w)) => {
                tracing::warn!("{w}");
                last_warning = Some(w);
            }
            Some(Event::Ringing { .. }) => tracing::info!(peer, "ringing"),
            Some(Event::Connected { security, .. }) => {
                say_security(&peer, &security);
                break;
            }
            Some(Event::Ended { reason, .. }) => {
                let detail = match (&last_warning, reason) {
                    (Some(w), EndReason::Local) => format!(" ({w})"),
                    _ => String::new(),
                };
                return Err(failed(format!("call to {peer}: {reason}{detail}")));
            }
            Some(Event::Registration(r)) => log_registration(&r),
            Some(Event::Stopped { reason }) => return Err(stopped(reason)),
            _ => {}
        }
    }
    let connected = Instant::now();
    // Talk.
    loop {
        if interrupted.load(Ordering::SeqCst) || connected.elapsed() >= talk {
            let report = hang_up_and_wait(&engine);
            return match report {
                Some(report) => {
                    print_report(&report, args.common.json);
                    Ok(())
                }
                None => Err(failed("the call ended without a report")),
            };
        }
        // Woken at the end of the talk at the latest, so the call lasts what was asked for
        // (polling alone ended it up to a poll late: 3.2 s for `--duration 3`).
        let left = talk.saturating_sub(connected.elapsed());
        match engine.next_event(POLL.min(left)) {
            Some(Event::Ended { reason, report, .. }) => {
                if let Some(report) = &report {
                    print_report(report, args.common.json);
                }
                return if reason.is_normal() {
                    Ok(())
                } else {
                    Err(failed(format!("call with {peer}: {reason}")))
                };
            }
            Some(Event::PathChanged { path, remote }) => {
                tracing::info!(path = path.as_str(), ?remote, "media path changed");
            }
            Some(Event::DeviceMoved { moved, .. }) => log_device_moved(&moved),
            Some(Event::Registration(r)) => log_registration(&r),
            Some(Event::Stopped { reason }) => return Err(stopped(reason)),
            Some(Event::Warning(w)) => tracing::warn!("{w}"),
            _ => {}
        }
    }
}

/// A device that vanished mid-call, and the default the call moved to.
fn log_device_moved(moved: &crate::engine::DeviceMove) {
    tracing::warn!(
        side = moved.side,
        from = moved.from,
        to = moved.to,
        reason = moved.reason,
        "the {} vanished; the call now uses the system default",
        moved.side
    );
}

fn run_answer(args: AnswerArgs) -> Result<(), Failure> {
    let config = configure(&args.common)?;
    let interrupted = watch_signals();
    let engine = Engine::start(config).map_err(|e| failed(e.to_string()))?;
    wait_registered(&engine, &interrupted, false)?;
    let mut answered = 0u64;
    let mut in_call = false;
    let ring = Duration::from_secs_f64(args.ring);
    // The call ringing now, and when it is answered.
    let mut ringing: Option<Instant> = None;
    loop {
        if ringing.is_some_and(|at| Instant::now() >= at) {
            ringing = None;
            tracing::info!("answering");
            engine.send(Command::Accept);
        }
        if interrupted.load(Ordering::SeqCst) {
            if in_call && let Some(report) = hang_up_and_wait(&engine) {
                print_report(&report, args.common.json);
            }
            return Ok(());
        }
        match engine.next_event(POLL) {
            Some(Event::Registration(r)) => log_registration(&r),
            Some(Event::PortMapping(status)) => log_port_mapping(&status),
            Some(Event::Incoming { from }) if ring.is_zero() => {
                tracing::info!(from, "incoming call: answering");
                engine.send(Command::Accept);
            }
            Some(Event::Incoming { from }) => {
                tracing::info!(from, secs = args.ring, "incoming call: ringing");
                ringing = Some(Instant::now() + ring);
            }
            Some(Event::Connected { peer, security, .. }) => {
                say_security(&peer, &security);
                in_call = true;
            }
            Some(Event::PathChanged { path, remote }) => {
                tracing::info!(path = path.as_str(), ?remote, "media path changed");
            }
            Some(Event::DeviceMoved { moved, .. }) => log_device_moved(&moved),
            Some(Event::Ended {
                reason,
                peer,
                report,
                ..
            }) => {
                in_call = false;
                ringing = None;
                match report {
                    Some(report) => {
                        print_report(&report, args.common.json);
                        answered += 1;
                        if !reason.is_normal() {
                            tracing::warn!(peer, "the call ended: {reason}");
                        }
                        if args.calls.is_some_and(|n| answered >= n) {
                            // The exit status says whether the last call ended as calls do.
                            return if reason.is_normal() {
                                Ok(())
                            } else {
                                Err(failed(format!("call with {peer}: {reason}")))
                            };
                        }
                    }
                    None => tracing::warn!(peer, "missed call: {reason}"),
                }
            }
            Some(Event::Stopped { reason }) => return Err(stopped(reason)),
            Some(Event::Warning(w)) => tracing::warn!("{w}"),
            _ => {}
        }
    }
}

/// Accept a server's changed certificate.
#[derive(Debug, Clone, Args)]
pub struct TrustServerArgs {
    /// The server, HOST[:PORT] (port 3478 when left out), as in the settings or --server.
    #[arg(value_name = "HOST[:PORT]")]
    pub server: String,
    /// The new certificate's fingerprint, `sha256:...` (check it with the server's operator:
    /// `pinhole-rendezvous` prints it). Without it, the remembered certificate is forgotten and
    /// the next connection trusts whatever the server presents, and remembers it.
    #[arg(value_name = "FINGERPRINT")]
    pub fingerprint: Option<String>,
    #[command(flatten)]
    pub profile: Profile,
}

/// Whose trust: the settings file; known-servers.txt and contact-keys.txt are beside it.
#[derive(Debug, Clone, Args)]
pub struct Profile {
    /// The settings file (default: $PINHOLE_CONFIG, or settings.toml in the user's config
    /// directory); known-servers.txt and contact-keys.txt are beside it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Accept a contact's changed key.
#[derive(Debug, Clone, Args)]
pub struct TrustContactArgs {
    /// The contact's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The new key, 64 hex digits, as the warning printed it. Without it, the remembered key is
    /// forgotten and the next call with NAME remembers the key it brings.
    #[arg(value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub profile: Profile,
}

/// `pinhole trust-server`.
pub fn trust_server(args: TrustServerArgs) -> ExitCode {
    exit(run_trust_server(&args))
}

/// `pinhole trust-contact`.
pub fn trust_contact(args: TrustContactArgs) -> ExitCode {
    exit(run_trust_contact(&args))
}

fn run_trust_server(args: &TrustServerArgs) -> Result<(), Failure> {
    let path = settings_path(args.profile.config.as_ref())?;
    let server = ServerAddr::parse(&args.server).map_err(|e| usage(format!("server: {e}")))?;
    let fingerprint = args
        .fingerprint
        .as_deref()
        .map(str::parse::<Fingerprint>)
        .transpose()
        .map_err(|e| usage(format!("fingerprint: {e}")))?;
    let done =
        settings::trust_server(&path, &server, fingerprint).map_err(|e| failed(e.to_string()))?;
    for line in done.lines {
        println!("{line}");
    }
    Ok(())
}

fn run_trust_contact(args: &TrustContactArgs) -> Result<(), Failure> {
    let path = settings::contacts_path(&settings_path(args.profile.config.as_ref())?);
    let mut book = Contacts::open(path.clone()).map_err(|e| failed(e.to_string()))?;
    let name = args.name.trim();
    match &args.key {
        Some(key) => {
            book.trust(name, key)
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
            println!(
                "{name}: trusting key {} ({})",
                key.trim().to_ascii_lowercase(),
                path.display()
            );
        }
        None => {
            let had = book
                .forget(name)
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
            if had {
                println!(
                    "{name}: forgot the remembered key ({}); the next call with {name} remembers \
                     the key it brings",
                    path.display()
                );
            } else {
                println!("{name}: no key was remembered ({})", path.display());
            }
        }
    }
    Ok(())
}
