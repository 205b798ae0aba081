//! Every sentence the app says, made from typed reasons: how a call ended ([`EndReason`]),
//! why the engine stopped ([`StopReason`]), why the server was lost ([`ServerLoss`]), what went
//! wrong on the way ([`Warning`](crate::engine::Warning)). Nothing here reads error text to
//! decide what happened: a `detail` is only shown, for people.
//!
//! The sentences themselves are Fluent messages in the app's language ([`super::i18n`]); the
//! functions here pick the message and its arguments.

use std::net::SocketAddr;
use std::time::Duration;

use traversal::control::EndReason as Remote;

use super::i18n::{t, tr};
use super::net::NatReport;
use super::state::{Failure, InviteOffer, Link};
use crate::engine::{AudioSide, EndReason, PathKind, ServerLoss, StopReason};

/// What the main view says about a call that ended, and what the recent calls list keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The notice.
    pub text: String,
    /// Whether the notice reports a failure (shown in the error colour).
    pub failure: bool,
    /// A few words for the recent calls list ("2:31", "declined", "missed"...), stored in
    /// English: [`outcome_shown`] says them in the app's language.
    pub outcome: String,
}

/// How a call with `peer` ended. `connected_for` is how long it was up (`None`: it never
/// connected); `audio` the device problem the engine reported during the call, if any.
pub fn ending(
    reason: &EndReason,
    peer: &str,
    outgoing: bool,
    connected_for: Option<Duration>,
    audio: Option<&(AudioSide, String)>,
) -> Ending {
    let normal = matches!(
        reason,
        EndReason::HungUp | EndReason::Remote(Remote::HungUp)
    );
    if let Some(up) = connected_for {
        let took = clock(up);
        let text = if normal {
            tr("call-ended-after", &[("peer", &peer), ("took", &took)])
        } else {
            let why = why(reason, peer, outgoing, audio);
            tr(
                "call-ended-after-because",
                &[("peer", &peer), ("took", &took), ("why", &why)],
            )
        };
        return Ending {
            text,
            failure: !normal,
            outcome: took,
        };
    }
    if is_missed(reason, outgoing) {
        return Ending {
            text: tr("missed-call", &[("peer", &peer)]),
            failure: false,
            outcome: OUTCOME_MISSED.into(),
        };
    }
    let by_us = matches!(
        reason,
        EndReason::HungUp | EndReason::Cancelled | EndReason::Declined
    );
    Ending {
        text: why(reason, peer, outgoing, audio),
        failure: !by_us,
        outcome: outcome(reason).into(),
    }
}

/// An incoming call that ended before we answered because the caller gave up or the server
/// stopped ringing.
fn is_missed(reason: &EndReason, outgoing: bool) -> bool {
    !outgoing
        && matches!(
            reason,
            EndReason::Remote(Remote::Cancelled | Remote::NoAnswer)
        )
}

/// Why a call ended, as one sentence.
fn why(
    reason: &EndReason,
    peer: &str,
    outgoing: bool,
    audio: Option<&(AudioSide, String)>,
) -> String {
    let with_peer = |id: &str| tr(id, &[("peer", &peer)]);
    match reason {
        EndReason::HungUp => with_peer("call-ended"),
        EndReason::Cancelled if outgoing => cancelled_by_you(peer),
        EndReason::Cancelled => with_peer("call-from-cancelled"),
        EndReason::Declined => declined_by_you(peer),
        EndReason::Remote(remote) => match remote {
            Remote::HungUp => with_peer("peer-hung-up"),
            Remote::Cancelled if outgoing => with_peer("call-to-cancelled"),
            Remote::Cancelled => with_peer("peer-gave-up"),
            Remote::Rejected => with_peer("peer-declined"),
            Remote::Busy => with_peer("peer-busy"),
            Remote::Offline => with_peer("peer-offline"),
            Remote::NoAnswer if outgoing => with_peer("peer-no-answer"),
            Remote::NoAnswer => with_peer("you-no-answer"),
            Remote::PeerLost => with_peer("peer-lost"),
            Remote::ServerError => t("server-dropped-call"),
            Remote::RelayLimit => t("relay-limit"),
        },
        EndReason::ServerLost => with_peer("call-server-lost"),
        EndReason::ServerShutDown => with_peer("call-server-shut-down"),
        EndReason::ServerUnreachable => with_peer("call-server-unreachable"),
        EndReason::PeerSilent => with_peer("peer-silent"),
        EndReason::SelfCall => self_call(),
        EndReason::Local => match audio {
            Some((side, detail)) => audio_failed(side, detail),
            None => t("call-failed-locally"),
        },
        EndReason::Insecure => with_peer("call-insecure"),
    }
}

/// What calling your own name says.
pub fn self_call() -> String {
    t("self-call")
}

/// A few words for the recent calls list (data: stored in English).
fn outcome(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::HungUp | EndReason::Remote(Remote::HungUp) => "ended",
        EndReason::Cancelled | EndReason::Remote(Remote::Cancelled) => "cancelled",
        EndReason::Declined | EndReason::Remote(Remote::Rejected) => "declined",
        EndReason::Remote(Remote::Busy) => "busy",
        EndReason::Remote(Remote::Offline) => "offline",
        EndReason::Remote(Remote::NoAnswer) => "no answer",
        EndReason::Remote(Remote::PeerLost) | EndReason::PeerSilent => "connection lost",
        EndReason::Remote(Remote::ServerError | Remote::RelayLimit) => "server error",
        EndReason::ServerLost => "server lost",
        EndReason::ServerShutDown => "server restart",
        EndReason::ServerUnreachable => "no server",
        EndReason::SelfCall => "that is you",
        EndReason::Local => "failed",
        EndReason::Insecure => "not private",
    }
}

/// A stored outcome (see [`Ending::outcome`]) in the app's language; a call's length and
/// words from elsewhere as they are.
pub fn outcome_shown(outcome: &str) -> String {
    let id = match outcome {
        "ended" => "outcome-ended",
        "cancelled" => "outcome-cancelled",
        "declined" => "outcome-declined",
        "busy" => "outcome-busy",
        "offline" => "outcome-offline",
        "no answer" => "outcome-no-answer",
        "connection lost" => "outcome-connection-lost",
        "server error" => "outcome-server-error",
        "server lost" => "outcome-server-lost",
        "server restart" => "outcome-server-restart",
        "no server" => "outcome-no-server",
        "that is you" => "outcome-that-is-you",
        "failed" => "outcome-failed",
        "not private" => "outcome-not-private",
        "hung up" => "outcome-hung-up",
        "missed" => "outcome-missed",
        _ => return outcome.to_owned(),
    };
    t(id)
}

/// We gave up on a call before an answer.
pub fn cancelled_by_you(peer: &str) -> String {
    tr("cancelled-by-you", &[("peer", &peer)])
}

/// We rejected an incoming call.
pub fn declined_by_you(peer: &str) -> String {
    tr("declined-by-you", &[("peer", &peer)])
}

/// We hung up a call that was up for `took`.
pub fn hung_up(peer: &str, took: Duration) -> String {
    tr(
        "call-ended-after",
        &[("peer", &peer), ("took", &clock(took))],
    )
}

/// Recent-list outcomes of what the user did (data, stored in English; see [`outcome_shown`]).
pub const OUTCOME_CANCELLED: &str = "cancelled";
/// See [`OUTCOME_CANCELLED`].
pub const OUTCOME_DECLINED: &str = "declined";
/// See [`OUTCOME_CANCELLED`].
pub const OUTCOME_HUNG_UP: &str = "hung up";
/// See [`OUTCOME_CANCELLED`].
pub const OUTCOME_FAILED: &str = "failed";

/// The engine stopped during a call with `peer`; `why` is [`failed`]'s sentence.
pub fn call_failed(peer: &str, why: &str) -> String {
    tr("call-failed", &[("peer", &peer), ("why", &why)])
}

/// An audio device that failed. Only the first clause of `detail` is shown: what follows
/// (the list of devices present) belongs in Settings.
pub fn audio_failed(side: &AudioSide, detail: &str) -> String {
    let detail = detail.split("; ").next().unwrap_or(detail).trim();
    let id = match side {
        AudioSide::Microphone => "microphone-not-opened",
        AudioSide::Speaker => "speaker-not-opened",
    };
    tr(id, &[("detail", &detail)])
}

/// An audio device that failed during a call that goes on.
pub fn audio_failed_in_call(side: &AudioSide, detail: &str) -> String {
    let detail = detail.split("; ").next().unwrap_or(detail).trim();
    let id = match side {
        AudioSide::Microphone => "microphone-failed-in-call",
        AudioSide::Speaker => "speaker-failed-in-call",
    };
    tr(id, &[("detail", &detail)])
}

/// A device of the call vanished and the call moved to the system default.
pub fn device_moved(side: AudioSide, moved: &crate::engine::DeviceMove) -> String {
    let (from, to) = (&moved.from, &moved.to);
    if moved.reason.contains("removed") || moved.reason.contains("unplugged") {
        let id = match side {
            AudioSide::Microphone => "microphone-unplugged",
            AudioSide::Speaker => "speaker-unplugged",
        };
        tr(id, &[("from", from), ("to", to)])
    } else {
        let id = match side {
            AudioSide::Microphone => "microphone-stopped",
            AudioSide::Speaker => "speaker-stopped",
        };
        let why = sentence_fragment(&moved.reason);
        tr(id, &[("from", from), ("why", &why), ("to", to)])
    }
}

/// `reason` without a trailing full stop, to sit inside a sentence.
fn sentence_fragment(reason: &str) -> &str {
    reason.trim().trim_end_matches('.')
}

/// The server refused something after registration; `message` is its text for people.
pub fn refused(message: &str) -> String {
    tr("refused", &[("message", &sentence(message))])
}

/// The engine is gone and a command could not be sent.
pub fn engine_not_running() -> String {
    t("engine-not-running")
}

// ----- the main view's status lines -----

/// Which server the app uses: `server` as set, or the built-in one (`lan`: reachable from the
/// local network).
pub fn server_line(server: &str, lan: bool) -> String {
    match (server.is_empty(), lan) {
        (false, _) => tr("server-line", &[("server", &server)]),
        (true, false) => t("server-builtin-local"),
        (true, true) => t("server-builtin-lan"),
    }
}

/// Where other machines find the built-in server.
pub fn lan_hint(addresses: &str) -> String {
    tr("lan-hint", &[("addresses", &addresses)])
}

/// The NAT check's verdict, and the address the server saw.
pub fn nat_found(report: &NatReport) -> [String; 3] {
    [
        if report.elapsed.is_zero() {
            // From the registration itself: no check of its own ran.
            t("nat-registered")
        } else {
            tr("nat-answered", &[("ms", &report.elapsed.as_millis())])
        },
        tr(
            "nat-network",
            &[
                ("nat", &nat_kind(&report.verdict)),
                ("verdict", &report.verdict),
            ],
        ),
        tr("nat-mapped", &[("address", &report.mapped)]),
    ]
}

/// [`NatReport::describe`] in the app's language (the verdict itself is the server's word).
fn nat_kind(verdict: &str) -> String {
    t(match verdict {
        "public" => "nat-public",
        "proxy" => "nat-proxy",
        "nat" => "nat-behind",
        _ => "nat-unknown",
    })
}

/// The router's port mapping for calls, in one line.
pub fn port_mapping(status: &traversal::portmap::Status) -> String {
    use traversal::portmap::Status;
    match status {
        Status::Off => t("port-mapping-off"),
        Status::Asking => t("port-mapping-asking"),
        Status::Mapped {
            method, external, ..
        } => tr(
            "port-mapping-mapped",
            &[("external", external), ("method", method)],
        ),
        Status::Unavailable(why) => tr("port-mapping-none", &[("why", why)]),
        Status::Released => t("port-mapping-released"),
    }
}

/// The NAT check did not finish.
pub fn nat_failed(why: &str) -> String {
    tr("nat-failed", &[("why", &why)])
}

/// The media path of the call in progress.
pub fn path(path: PathKind, remote: Option<SocketAddr>) -> String {
    match (path, remote) {
        (PathKind::Direct, Some(remote)) => tr("path-direct-to", &[("remote", &remote)]),
        (PathKind::Direct, None) => t("path-direct"),
        (PathKind::Relay, _) => t("path-relay"),
    }
}

/// The call's quality in words, in the app's language (`CallQuality::words` is the English
/// the command line and the reports keep).
pub fn quality(quality: &crate::engine::quality::CallQuality) -> String {
    use crate::engine::quality::CallQuality;
    match quality {
        CallQuality::Measuring => t("measuring"),
        CallQuality::Good => t("quality-good"),
        CallQuality::ChoppyHere { loss_percent } => tr(
            "quality-choppy",
            &[("percent", &format!("{loss_percent:.0}"))],
        ),
        CallQuality::WeakThere { loss_percent } => tr(
            "quality-weak",
            &[("percent", &format!("{loss_percent:.0}"))],
        ),
        CallQuality::Delayed { rtt_ms } => {
            tr("quality-delayed", &[("ms", &format!("{rtt_ms:.0}"))])
        }
    }
}

/// A placed call: ringing for `ringing`, or not yet.
pub fn placing(ringing: Option<Duration>) -> String {
    match ringing {
        Some(d) => tr("ringing", &[("time", &clock(d))]),
        None => t("reaching"),
    }
}

// ----- settings -----

/// The settings file could not be read at start.
pub fn settings_unreadable(err: &dyn std::fmt::Display) -> String {
    tr("settings-unreadable", &[("error", err)])
}

/// The settings file could not be written.
pub fn settings_not_saved(err: &dyn std::fmt::Display) -> String {
    tr("settings-not-saved", &[("error", err)])
}

/// The key made on the first start could not be written.
pub fn key_not_saved(err: &dyn std::fmt::Display) -> String {
    tr("key-not-saved", &[("error", err)])
}

/// The microphone monitor could not open the device.
pub fn no_microphone(why: &str) -> String {
    tr("no-microphone", &[("why", &why)])
}

/// The test sound: played, or why not.
pub fn test_sound(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => t("test-sound-played"),
        Err(why) => tr("no-sound", &[("why", why)]),
    }
}

// ----- the registration line -----

/// While the engine reaches the server.
pub fn connecting(server: &str) -> String {
    tr("connecting-to", &[("server", &shown(server))])
}

/// Registered.
pub fn online(server: &str) -> String {
    tr("online", &[("server", &shown(server))])
}

/// The server was lost; the engine tries again in `left`.
pub fn offline(reason: &ServerLoss, left: Duration) -> String {
    if *reason == ServerLoss::ShuttingDown {
        // Not a failure: the server said so and said when to come back.
        return match whole_seconds(left) {
            0 => t("server-restarting-now"),
            n => tr("server-restarting-in", &[("seconds", &n)]),
        };
    }
    let why = match reason {
        ServerLoss::Closed => t("loss-closed"),
        // The detail names the server and the step that failed.
        ServerLoss::Unreachable { detail } => detail.trim().to_owned(),
        ServerLoss::NotAnswering => t("loss-not-answering"),
        ServerLoss::ShuttingDown => t("loss-shutting-down"),
    };
    match whole_seconds(left) {
        0 => tr("lost-server-now", &[("why", &why)]),
        n => tr("lost-server-in", &[("why", &why), ("seconds", &n)]),
    }
}

/// Another device registered our name.
pub fn replaced(name: &str) -> String {
    tr("replaced", &[("name", &name)])
}

/// The label of the button that takes the name back after [`replaced`].
pub fn sign_in_again() -> String {
    t("sign-in-again")
}

/// When the app starts the engine again.
pub fn retry_in(left: Duration) -> String {
    tr("retry-in", &[("seconds", &whole_seconds(left).max(1))])
}

/// Why the app is not connected to `server`.
pub fn failed(server: &str, failure: &Failure) -> String {
    let server = shown(server);
    match failure {
        Failure::Stopped(None) => tr("engine-stopped", &[("server", &server)]),
        Failure::Stopped(Some(reason)) => stopped(&server, reason),
        Failure::Start(why) | Failure::Settings(why) => tr(
            "not-connected",
            &[("server", &server), ("why", &sentence(why))],
        ),
    }
}

/// `server` is [`shown`]; its form at the start of a sentence goes along as `subject`.
fn stopped(server: &str, reason: &StopReason) -> String {
    let subject = if server.is_empty() || server == t("the-server") {
        t("the-server-subject")
    } else {
        server.to_owned()
    };
    let with_server = |id: &str| tr(id, &[("server", &server), ("subject", &subject)]);
    match reason {
        StopReason::Unreachable { detail } => tr(
            "server-unreachable",
            &[
                ("server", &server),
                ("subject", &subject),
                ("detail", &sentence(detail)),
            ],
        ),
        StopReason::NameTaken => with_server("name-taken"),
        StopReason::NameConfusable => with_server("name-confusable"),
        StopReason::TooManyNames => with_server("too-many-names"),
        StopReason::BadName => with_server("name-not-accepted"),
        StopReason::BadSignature => with_server("bad-signature"),
        StopReason::ServerFull => with_server("server-full"),
        StopReason::Incompatible { detail } => tr(
            "incompatible",
            &[
                ("server", &server),
                ("subject", &subject),
                ("detail", &detail.trim()),
            ],
        ),
        StopReason::Local { detail } => tr("local-failure", &[("detail", &sentence(detail))]),
        StopReason::UntrustedServer { .. } => certificate_changed(server),
    }
}

// ----- security: the server's certificate, the call's encryption, the peer's key -----

/// The server presented another certificate than the one trusted for it (the fingerprints are
/// shown apart, by [`fingerprints`]).
pub fn certificate_changed(server: &str) -> String {
    tr("certificate-changed", &[("server", &server)])
}

/// The two fingerprints of a changed certificate: (what, fingerprint).
pub fn fingerprints<'a>(pinned: &'a str, presented: &'a str) -> [(String, &'a str); 2] {
    [
        (t("trusted-until-now"), pinned),
        (t("presented-now"), presented),
    ]
}

/// What the settings' "Server certificate" field is for.
pub fn fingerprint_hint() -> String {
    t("fingerprint-hint")
}

/// The button that accepts a server's new certificate.
pub fn trust_new_certificate() -> String {
    t("trust-new-certificate")
}

/// The new certificate could not be remembered.
pub fn certificate_not_trusted(err: &dyn std::fmt::Display) -> String {
    tr("certificate-not-saved", &[("error", err)])
}

/// The call view's line about the media's encryption.
pub fn encrypted(suite: &str) -> String {
    tr("encrypted", &[("suite", &suite)])
}

/// Above the short authentication string, which is shown in large digits.
pub fn compare_with(peer: &str) -> String {
    tr("compare-with", &[("peer", &peer)])
}

/// Under the code on a call whose key was known: what comparing does.
pub fn compare_hint(peer: &str) -> String {
    tr("compare-hint", &[("peer", &peer)])
}

/// Settings: the capture processing's heading and checkboxes (`[audio]`).
pub fn processing_heading() -> String {
    t("processing-heading")
}
/// See [`processing_heading`].
pub fn echo_cancellation() -> String {
    t("echo-cancellation")
}
/// See [`processing_heading`].
pub fn echo_cancellation_hint() -> String {
    t("echo-cancellation-hint")
}
/// See [`processing_heading`].
pub fn noise_suppression() -> String {
    t("noise-suppression")
}
/// See [`processing_heading`].
pub fn noise_suppression_hint() -> String {
    t("noise-suppression-hint")
}
/// See [`processing_heading`].
pub fn gain_control() -> String {
    t("gain-control")
}
/// See [`processing_heading`].
pub fn gain_control_hint() -> String {
    t("gain-control-hint")
}

/// The echo test's figure (see `engine::echo_test`).
pub fn voice_came_back(ms: f64) -> String {
    tr("voice-came-back", &[("ms", &format!("{ms:.0}"))])
}

/// After the code in a call: the person read the same digits as `peer`.
pub fn codes_match(peer: &str) -> String {
    tr("codes-match", &[("peer", &peer)])
}

/// What "The codes match" means.
pub fn codes_match_hint() -> String {
    t("codes-match-hint")
}

/// A verified contact, in a call or in the contacts list.
pub fn verified(peer: &str) -> String {
    tr("verified", &[("peer", &peer)])
}

/// Beside a verified contact's name.
pub fn verified_mark() -> String {
    t("verified-mark")
}

/// The recent calls list's word for a call that rang out unanswered (data: stored in
/// English; see [`outcome_shown`]).
pub const OUTCOME_MISSED: &str = "missed";

/// Under the call's buttons when push-to-talk is on.
pub fn push_to_talk_hint() -> String {
    t("push-to-talk-hint")
}

/// Until the echo test has a figure: what it needs.
pub fn echo_measuring() -> String {
    t("echo-measuring")
}

/// The echo test's figure in its parts.
pub fn echo_latency_parts(l: &crate::engine::EchoLatency) -> String {
    tr(
        "echo-latency-parts",
        &[
            ("capture", &format!("{:.0}", l.capture_ms)),
            ("path", &format!("{:.0}", l.path_ms)),
            ("playback", &format!("{:.0}", l.playback_ms)),
        ],
    )
}

/// The echo service has no other side to compare a code with.
pub fn no_code_for_echo() -> String {
    t("no-code-for-echo")
}

/// The loud warning of a call whose peer's key is not the one remembered.
pub fn key_changed(peer: &str) -> String {
    tr("key-changed", &[("peer", &peer)])
}

/// The button that accepts a peer's changed key.
pub fn trust_new_key() -> String {
    t("trust-new-key")
}

/// After the user trusted the new key.
pub fn key_trusted(peer: &str) -> String {
    tr("key-trusted", &[("peer", &peer)])
}

/// The new key could not be remembered.
pub fn key_not_trusted(peer: &str, err: &dyn std::fmt::Display) -> String {
    tr("key-not-trusted", &[("peer", &peer), ("error", err)])
}

/// The contacts file could not be read: keys are remembered for this run only.
pub fn contacts_unreadable(detail: &str) -> String {
    tr("contacts-unreadable", &[("detail", &sentence(detail))])
}

/// Why a call to `peer` is not placed now (the registration is not [`Link::Registered`]).
pub fn cannot_call(peer: &str, link: &Link, name: &str) -> String {
    match link {
        Link::Off | Link::Connecting { .. } | Link::Registered { .. } => {
            tr("cannot-call-connecting", &[("peer", &peer)])
        }
        Link::Offline { .. } => tr("cannot-call-offline", &[("peer", &peer)]),
        Link::Replaced { .. } => tr(
            "cannot-call-replaced",
            &[("peer", &peer), ("why", &replaced(name))],
        ),
        Link::Failed {
            server, failure, ..
        } => tr(
            "cannot-call",
            &[("peer", &peer), ("why", &failed(server, failure))],
        ),
    }
}

/// A name that cannot be called.
/// Why a name cannot be registered, for the name field.
pub fn name_problem(why: &crate::settings::NameError) -> String {
    use crate::settings::NameError;
    match why {
        NameError::Empty => t("name-empty"),
        NameError::TooLong => t("name-too-long"),
        NameError::Character(c) => tr("name-character", &[("char", &format!("{c:?}"))]),
        NameError::Echo => t("name-echo"),
    }
}

/// Why a server address cannot be used, for the server field (a sentence).
pub fn server_problem(why: &crate::settings::AddrError) -> String {
    use crate::settings::AddrError;
    match why {
        AddrError::Empty => t("address-empty"),
        AddrError::Port(port) => tr("address-port", &[("port", &format!("{port:?}"))]),
        AddrError::Ipv6 => t("address-ipv6"),
        AddrError::Host(host) => tr("address-host", &[("host", &format!("{host:?}"))]),
    }
}

pub fn bad_name(peer: &str, why: &str) -> String {
    tr("bad-name", &[("peer", &format!("{peer:?}")), ("why", &why)])
}

/// "the server" for an empty address.
fn shown(server: &str) -> String {
    if server.is_empty() {
        t("the-server")
    } else {
        server.to_owned()
    }
}

/// Whole seconds, rounded up.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Capitalised, with a full stop.
pub fn sentence(text: &str) -> String {
    let mut s = text.trim().to_owned();
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

/// m:ss, or h:mm:ss.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// How long ago, in words.
pub fn ago(secs: u64) -> String {
    match secs {
        0..60 => t("ago-just-now"),
        60..3600 => tr("ago-minutes", &[("n", &(secs / 60))]),
        3600..86_400 => tr("ago-hours", &[("n", &(secs / 3600))]),
        86_400..172_800 => t("ago-yesterday"),
        _ => tr("ago-days", &[("n", &(secs / 86_400))]),
    }
}

// ----- invite links -----

/// The invite dialog's heading: who invites (the link's name is the one to call).
pub fn invite_heading(name: &str) -> String {
    if name == "echo" {
        t("invite-heading-echo")
    } else {
        tr("invite-heading", &[("name", &name)])
    }
}

/// The question the invite dialog asks.
pub fn invite_question(name: &str) -> String {
    if name == "echo" {
        t("invite-question-echo")
    } else {
        tr("invite-question", &[("name", &name)])
    }
}

/// What taking the invite's server changes in the settings.
pub fn invite_server_note(offer: &InviteOffer) -> String {
    if offer.same_server() {
        t("invite-same-server")
    } else if offer.current_server.trim().is_empty() {
        t("invite-instead-of-builtin")
    } else {
        tr(
            "invite-instead-of",
            &[("server", &offer.current_server.trim())],
        )
    }
}

/// The link pins no certificate.
pub fn invite_no_fingerprint() -> String {
    t("invite-no-fingerprint")
}

/// Under the fingerprint: what it does.
pub fn invite_fingerprint_pins() -> String {
    t("invite-fingerprint-pins")
}

/// The link pins another certificate than the one trusted for its server.
pub fn invite_certificate_differs(server: &str) -> String {
    tr("invite-certificate-differs", &[("server", &server)])
}

/// The two fingerprints of [`invite_certificate_differs`].
pub fn invite_fingerprints<'a>(trusted: &'a str, link: &'a str) -> [(String, &'a str); 2] {
    [(t("trusted-until-now"), trusted), (t("in-the-link"), link)]
}

/// The dialog's yes.
pub fn use_invite() -> String {
    t("use-invite")
}

/// On first run, after taking the invite's server.
pub fn call_after_setup(peer: &str) -> String {
    tr("call-after-setup", &[("peer", &peer)])
}

/// The invite's call waits for the registration.
pub fn call_when_connected(peer: &str) -> String {
    tr("call-when-connected", &[("peer", &peer)])
}

/// The invite's server could not be saved.
pub fn invite_not_used(why: &str) -> String {
    tr("invite-not-used", &[("why", &why)])
}

/// The main view's button that copies the user's own invite link.
pub fn copy_invite() -> String {
    t("copy-invite")
}

/// Its tooltip.
pub fn copy_invite_hint() -> String {
    t("copy-invite-hint")
}

/// After the copy.
pub fn invite_copied() -> String {
    t("invite-copied")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_connected(reason: EndReason, outgoing: bool) -> Ending {
        ending(&reason, "bob", outgoing, None, None)
    }

    #[test]
    fn every_end_reason_has_its_own_words() {
        let reasons = [
            EndReason::HungUp,
            EndReason::Cancelled,
            EndReason::Declined,
            EndReason::Remote(Remote::HungUp),
            EndReason::Remote(Remote::Cancelled),
            EndReason::Remote(Remote::Rejected),
            EndReason::Remote(Remote::Busy),
            EndReason::Remote(Remote::Offline),
            EndReason::Remote(Remote::NoAnswer),
            EndReason::Remote(Remote::PeerLost),
            EndReason::Remote(Remote::ServerError),
            EndReason::Remote(Remote::RelayLimit),
            EndReason::ServerLost,
            EndReason::ServerShutDown,
            EndReason::ServerUnreachable,
            EndReason::PeerSilent,
            EndReason::SelfCall,
            EndReason::Local,
            EndReason::Insecure,
        ];
        let mut seen = std::collections::HashSet::new();
        for reason in &reasons {
            let text = not_connected(*reason, true).text;
            assert!(text.ends_with('.'), "{reason:?}: {text}");
            assert!(
                seen.insert(text.clone()),
                "{reason:?} says the same as another: {text}"
            );
        }
    }

    #[test]
    fn calling_yourself_is_not_busy() {
        let e = not_connected(EndReason::SelfCall, true);
        assert_eq!(e.text, self_call());
        assert_eq!(e.outcome, "that is you");
        assert!(!e.text.contains("busy"));
    }

    #[test]
    fn an_incoming_call_the_caller_gave_up_is_missed() {
        for reason in [
            EndReason::Remote(Remote::Cancelled),
            EndReason::Remote(Remote::NoAnswer),
        ] {
            let e = not_connected(reason, false);
            assert_eq!(e.text, "You missed a call from bob.");
            assert_eq!(e.outcome, "missed");
            assert!(!e.failure);
        }
        // Placed by us, the same reason is not a missed call.
        assert_eq!(
            not_connected(EndReason::Remote(Remote::NoAnswer), true).text,
            "bob did not answer."
        );
    }

    #[test]
    fn a_connected_call_says_how_long_and_why_it_ended_abnormally() {
        let up = Some(Duration::from_secs(83));
        let e = ending(&EndReason::Remote(Remote::HungUp), "bob", true, up, None);
        assert_eq!(e.text, "Call with bob ended after 1:23.");
        assert!(!e.failure);
        assert_eq!(e.outcome, "1:23");
        let e = ending(&EndReason::PeerSilent, "bob", true, up, None);
        assert!(e.failure);
        assert!(
            e.text
                .starts_with("Call with bob ended after 1:23: Nothing came")
        );
    }

    #[test]
    fn a_failed_device_is_named_without_the_device_list() {
        let audio = (
            AudioSide::Microphone,
            "no audio input device named \"USB\"; available: \"pulse\" (PulseAudio)".to_owned(),
        );
        let e = ending(&EndReason::Local, "echo", true, None, Some(&audio));
        assert_eq!(
            e.text,
            "No microphone could be opened (no audio input device named \"USB\"). Pick another \
             one in Settings."
        );
        let speaker = audio_failed(&AudioSide::Speaker, "device busy");
        assert_eq!(
            speaker,
            "No speaker could be opened (device busy). Pick another one in Settings."
        );
    }

    #[test]
    fn the_registration_line_counts_down_in_whole_seconds() {
        let loss = ServerLoss::NotAnswering;
        assert_eq!(
            offline(&loss, Duration::from_millis(2_100)),
            "Lost the server (it stopped answering); trying again in 3 s."
        );
        assert_eq!(
            offline(&loss, Duration::ZERO),
            "Lost the server (it stopped answering); trying again now."
        );
        assert_eq!(
            offline(&ServerLoss::ShuttingDown, Duration::from_millis(1_500)),
            "The server is restarting; signing in again in 2 s."
        );
        assert_eq!(retry_in(Duration::ZERO), "Trying again in 1 s.");
        assert_eq!(replaced("bob"), "bob signed in on another device.");
    }

    #[test]
    fn stop_reasons_say_what_to_do() {
        let server = "s.example:3478";
        let say = |r: StopReason| failed(server, &Failure::Stopped(Some(r)));
        assert!(say(StopReason::NameTaken).starts_with("Your name is taken on s.example:3478"));
        assert!(say(StopReason::BadName).contains("does not accept your name"));
        assert!(say(StopReason::BadSignature).contains("signature"));
        assert_eq!(
            say(StopReason::Unreachable {
                detail: "connection refused".into()
            }),
            "The server s.example:3478 cannot be reached: Connection refused."
        );
        assert_eq!(
            failed("", &Failure::Stopped(None)),
            "Not connected to the server: the call engine stopped."
        );
    }

    #[test]
    fn the_call_quality_reads_as_the_engine_says_it_in_english() {
        use crate::engine::quality::CallQuality;
        for q in [
            CallQuality::Measuring,
            CallQuality::Good,
            CallQuality::ChoppyHere { loss_percent: 8.2 },
            CallQuality::WeakThere { loss_percent: 12.0 },
            CallQuality::Delayed { rtt_ms: 612.4 },
        ] {
            assert_eq!(quality(&q), q.words());
        }
    }

    #[test]
    fn clock_and_ago() {
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
        assert_eq!(clock(Duration::from_secs(3_723)), "1:02:03");
        assert_eq!(ago(30), "just now");
        assert_eq!(ago(7_200), "2 h ago");
        assert_eq!(sentence("no route"), "No route.");
    }
}
