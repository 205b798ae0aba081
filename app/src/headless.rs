//! `pinhole call` and `pinhole answer`: the headless front end on the call engine.
//!
//! Each takes its server, name and audio from the flags, or from the settings file where a flag
//! is absent (`--config PATH`, else `$PINHOLE_CONFIG`, else the user's config directory). The
//! identity key is created on first use and saved in that file. With `--json` each finished
//! call prints one JSON line on stdout ([`CallReport`]). Exit status 0 when the call connected
//! and ended normally; otherwise a one-line reason on stderr and a non-zero status: 1 when the
//! call or the server failed, 2 for bad flags or settings. SIGINT and SIGTERM hang up cleanly
//! (the WAV file is finalised, the server told).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use media::audio::{SinkSpec, SourceSpec};

use crate::engine::{
    CallReport, Command, EndReason, Engine, EngineConfig, Event, MediaConfig, Registration,
    StopReason,
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
    /// Rendezvous server, HOST:PORT (default: the settings file's).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
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
    /// Seconds to talk once connected, then hang up.
    #[arg(long, value_name = "SECS")]
    pub duration: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Register and answer incoming calls.
#[derive(Debug, Clone, Args)]
pub struct AnswerArgs {
    /// Answer this many calls, then exit (default: until interrupted).
    #[arg(long, value_name = "N")]
    pub calls: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
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

/// Flags over settings: the engine's configuration. Creates and saves the key on first use.
fn configure(common: &CommonArgs) -> Result<EngineConfig, Failure> {
    let path = match &common.config {
        Some(path) => path.clone(),
        None => settings::default_path().map_err(|e| usage(e.to_string()))?,
    };
    let loaded = settings::load(&path).map_err(|e| usage(e.to_string()))?;
    let first_run = loaded.is_none();
    let mut stored = loaded.unwrap_or_default();

    let server = common
        .server
        .clone()
        .unwrap_or_else(|| stored.server.clone());
    if server.trim().is_empty() {
        return Err(usage(format!(
            "no server: pass --server HOST:PORT or set `server` in {}",
            path.display()
        )));
    }
    let server = ServerAddr::parse(&server).map_err(|e| usage(format!("--server: {e}")))?;
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
            stored.server = server.to_string();
            stored.name = name.clone();
        }
        save_key(&path, &stored)?;
    }

    // Audio that cannot open fails now, before anyone's phone rings.
    input.open().map_err(|e| failed(format!("input: {e}")))?;
    output.open().map_err(|e| failed(format!("output: {e}")))?;

    let advanced = &stored.advanced;
    let mut config = EngineConfig::new(server.to_string(), name, key);
    config.input = input;
    config.output = output;
    config.media = MediaConfig {
        frame_ms: advanced.frame_ms,
        bitrate_bps: advanced.bitrate_bps,
        ..MediaConfig::default()
    };
    config.udp_port = advanced.udp_port;
    config.keepalive = advanced
        .keepalive_s
        .map(|s| Duration::from_secs(u64::from(s)));
    Ok(config)
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

/// Waits for the engine to register; the name on success.
fn wait_registered(engine: &Engine, interrupted: &AtomicBool) -> Result<(), Failure> {
    let deadline = Instant::now() + REGISTER_WAIT;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return Err(failed("interrupted before registering"));
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "server unreachable: not registered within {REGISTER_WAIT:?}"
            )));
        }
        match engine.next_event(POLL) {
            Some(Event::Registration(registration @ Registration::Online { .. })) => {
                log_registration(&registration);
                return Ok(());
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

/// Logs a change of the registration (also a new one after the server came back).
fn log_registration(registration: &Registration) {
    match registration {
        Registration::Online {
            name,
            mapped,
            verdict,
        } => {
            let verdict = verdict.map_or("unknown", |v| v.as_str());
            tracing::info!(name, %mapped, verdict, "registered");
        }
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
    failed(reason.map_or_else(|| "the engine stopped".into(), |r| r.to_string()))
}

fn print_report(report: &CallReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => tracing::error!("report not printed: {e}"),
        }
    } else {
        println!(
            "call with {}: {:.1} s, {} ({} path changes), setup {}, RTP sent {} received {} lost {}, jitter {:.1} ms, RTT {}",
            report.peer,
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
    if !args.duration.is_finite() || !(0.0..=86_400.0).contains(&args.duration) {
        return Err(usage(
            "--duration must be a number of seconds from 0 to 86400",
        ));
    }
    let talk = Duration::from_secs_f64(args.duration);
    let config = configure(&args.common)?;
    let call_bound = config.call_timeout + Duration::from_secs(5);
    let interrupted = watch_signals();
    let engine = Engine::start(config).map_err(|e| failed(e.to_string()))?;
    wait_registered(&engine, &interrupted)?;

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
            Some(Event::Connected { .. }) => break,
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
    tracing::info!(peer, "connected");
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
        match engine.next_event(POLL) {
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
            Some(Event::Registration(r)) => log_registration(&r),
            Some(Event::Stopped { reason }) => return Err(stopped(reason)),
            Some(Event::Warning(w)) => tracing::warn!("{w}"),
            _ => {}
        }
    }
}

fn run_answer(args: AnswerArgs) -> Result<(), Failure> {
    let config = configure(&args.common)?;
    let interrupted = watch_signals();
    let engine = Engine::start(config).map_err(|e| failed(e.to_string()))?;
    wait_registered(&engine, &interrupted)?;
    let mut answered = 0u64;
    let mut in_call = false;
    if args.calls == Some(0) {
        return Ok(());
    }
    loop {
        if interrupted.load(Ordering::SeqCst) {
            if in_call && let Some(report) = hang_up_and_wait(&engine) {
                print_report(&report, args.common.json);
            }
            return Ok(());
        }
        match engine.next_event(POLL) {
            Some(Event::Registration(r)) => log_registration(&r),
            Some(Event::Incoming { from }) => {
                tracing::info!(from, "incoming call: answering");
                engine.send(Command::Accept);
            }
            Some(Event::Connected { peer, .. }) => {
                tracing::info!(peer, "connected");
                in_call = true;
            }
            Some(Event::PathChanged { path, remote }) => {
                tracing::info!(path = path.as_str(), ?remote, "media path changed");
            }
            Some(Event::Ended {
                reason,
                peer,
                report,
                ..
            }) => {
                in_call = false;
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
