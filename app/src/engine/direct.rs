//! A call without a server: media straight to an address the caller knows (or through a relay
//! the caller names), for a fixed time. The media loop of every call, on its own; tests drive
//! it with explicit addresses, and path switches at set times.

use std::net::SocketAddr;
use std::time::Duration;

use media::audio::{SinkSpec, SourceSpec};
use tokio::time::{Instant as TokioInstant, MissedTickBehavior};

use super::media::{CallReport, CallSecurity, CallSetup, MediaCall, MediaConfig, MediaPath};
use super::{EngineError, Security};

/// What a call without a server needs.
#[derive(Debug)]
pub struct DirectCall {
    /// The media socket, bound.
    pub socket: std::net::UdpSocket,
    /// Where media goes first.
    pub path: MediaPath,
    /// Media from a relay is accepted from this server and channel (for a relayed test call).
    pub relay: Option<(SocketAddr, u16)>,
    /// Later paths: after this long, move the media to that path.
    pub switches: Vec<(Duration, MediaPath)>,
    /// What we send.
    pub input: SourceSpec,
    /// Where what we receive goes.
    pub output: SinkSpec,
    /// Codec settings.
    pub media: MediaConfig,
    /// How long the call lasts.
    pub duration: Duration,
    /// The peer's name in the report.
    pub peer: String,
    /// The media keys: both ends of a call need mirrored ones (for a test call,
    /// [`CallSecurity::loopback`] of one seed on both sides).
    pub keys: CallSecurity,
}

/// Runs the call on a runtime of its own, in this thread, and returns its report.
pub fn run_direct(call: DirectCall) -> Result<CallReport, EngineError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(direct(call))
}

async fn direct(call: DirectCall) -> Result<CallReport, EngineError> {
    call.socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(call.socket)?;
    let source = call.input.open()?;
    let sink = call.output.open()?;
    let start = std::time::Instant::now();
    let security = Security {
        suite: call.keys.suite,
        sas: call.keys.sas.clone(),
        peer_key: None,
        key_check: None,
    };
    let setup = CallSetup {
        peer: call.peer,
        path: call.path,
        placed: start,
        keys: call.keys,
        security,
    };
    let mut media = MediaCall::new(setup, call.media, source, sink, start)?;
    if let Some((server, channel)) = call.relay {
        media.set_relay(server, channel);
    }
    let mut switches = call.switches;
    switches.sort_by_key(|(at, _)| *at);
    let mut switches = switches.into_iter().peekable();
    let mut tick = tokio::time::interval(media.frame_period());
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = TokioInstant::from_std(start) + call.duration;
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                while let Some((at, path)) = switches.next_if(|(at, _)| start + *at <= now) {
                    tracing::debug!(?at, "scheduled path switch");
                    media.set_path(now, path);
                }
                if let Err(e) = media.tick(now, &socket) {
                    tracing::warn!("audio: {e}");
                }
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    media.handle_datagram(std::time::Instant::now(), from, &buf[..n]);
                }
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    let now = std::time::Instant::now();
    let report = media.report(now);
    media.finish(now, &socket)?;
    Ok(report)
}
