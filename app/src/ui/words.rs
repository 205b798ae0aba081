//! Every sentence the app says, made from typed reasons: how a call ended ([`EndReason`]),
//! why the engine stopped ([`StopReason`]), why the server was lost ([`ServerLoss`]), what went
//! wrong on the way ([`Warning`](crate::engine::Warning)). Nothing here reads error text to
//! decide what happened: a `detail` is only shown, for people.

use std::net::SocketAddr;
use std::time::Duration;

use traversal::control::EndReason as Remote;

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
    /// A few words for the recent calls list ("2:31", "declined", "missed"...).
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
            format!("Call with {peer} ended after {took}.")
        } else {
            format!(
                "Call with {peer} ended after {took}: {}",
                why(reason, peer, outgoing, audio)
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
            text: format!("You missed a call from {peer}."),
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
    match reason {
        EndReason::HungUp => format!("Call with {peer} ended."),
        EndReason::Cancelled if outgoing => cancelled_by_you(peer),
        EndReason::Cancelled => format!("The call from {peer} was cancelled."),
        EndReason::Declined => declined_by_you(peer),
        EndReason::Remote(remote) => match remote {
            Remote::HungUp => format!("{peer} hung up."),
            Remote::Cancelled if outgoing => format!("The call to {peer} was cancelled."),
            Remote::Cancelled => format!("{peer} gave up before you answered."),
            Remote::Rejected => format!("{peer} declined the call."),
            Remote::Busy => format!("{peer} is busy in another call."),
            Remote::Offline => format!("{peer} is not online right now."),
            Remote::NoAnswer if outgoing => format!("{peer} did not answer."),
            Remote::NoAnswer => format!("You did not answer {peer} in time."),
            Remote::PeerLost => format!("The connection to {peer} was lost."),
            Remote::ServerError => "The server dropped the call.".into(),
            Remote::RelayLimit => {
                "The server would not carry the call (it relays one call per person).".into()
            }
        },
        EndReason::ServerLost => {
            format!("The server went away, and the call with {peer} needed it.")
        }
        EndReason::ServerShutDown => {
            format!("The server shut down (a restart), and the call with {peer} went through it.")
        }
        EndReason::ServerUnreachable => {
            format!("Cannot call {peer}: the server cannot be reached right now.")
        }
        EndReason::PeerSilent => {
            format!("Nothing came from {peer} for 5 seconds: the connection was lost.")
        }
        EndReason::SelfCall => SELF_CALL.into(),
        EndReason::Local => match audio {
            Some((side, detail)) => audio_failed(side, detail),
            None => "The call failed on this computer (an audio device or the network).".into(),
        },
        EndReason::Insecure => format!(
            "The call with {peer} was ended: its encryption keys did not check out, so it \
             could not be private (someone may be interfering between you)."
        ),
    }
}

/// What calling your own name says.
pub const SELF_CALL: &str = "That is you: call someone else, or echo to hear yourself.";

/// A few words for the recent calls list.
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

/// We gave up on a call before an answer.
pub fn cancelled_by_you(peer: &str) -> String {
    format!("You cancelled the call to {peer}.")
}

/// We rejected an incoming call.
pub fn declined_by_you(peer: &str) -> String {
    format!("You declined the call from {peer}.")
}

/// We hung up a call that was up for `took`.
pub fn hung_up(peer: &str, took: Duration) -> String {
    format!("Call with {peer} ended after {}.", clock(took))
}

/// Recent-list outcomes of what the user did.
pub const OUTCOME_CANCELLED: &str = "cancelled";
/// See [`OUTCOME_CANCELLED`].
pub const OUTCOME_DECLINED: &str = "declined";
/// See [`OUTCOME_CANCELLED`].
pub const OUTCOME_HUNG_UP: &str = "hung up";
/// See [`OUTCOME_CANCELLED`].
pub const OUTCOME_FAILED: &str = "failed";

/// The engine stopped during a call with `peer`; `why` is [`failed`]'s sentence.
pub fn call_failed(peer: &str, why: &str) -> String {
    format!("The call with {peer} failed: {why}")
}

/// An audio device that failed. Only the first clause of `detail` is shown: what follows
/// (the list of devices present) belongs in Settings.
pub fn audio_failed(side: &AudioSide, detail: &str) -> String {
    let detail = detail.split("; ").next().unwrap_or(detail).trim();
    match side {
        AudioSide::Microphone => {
            format!("No microphone could be opened ({detail}). Pick another one in Settings.")
        }
        AudioSide::Speaker => {
            format!("No speaker could be opened ({detail}). Pick another one in Settings.")
        }
    }
}

/// An audio device that failed during a call that goes on.
pub fn audio_failed_in_call(side: &AudioSide, detail: &str) -> String {
    let detail = detail.split("; ").next().unwrap_or(detail).trim();
    match side {
        AudioSide::Microphone => format!("The microphone failed ({detail}): they cannot hear you."),
        AudioSide::Speaker => format!("The speaker failed ({detail}): you cannot hear them."),
    }
}

/// A device of the call vanished and the call moved to the system default.
pub fn device_moved(side: AudioSide, moved: &crate::engine::DeviceMove) -> String {
    let what = match side {
        AudioSide::Microphone => "microphone",
        AudioSide::Speaker => "speaker",
    };
    if moved.reason.contains("removed") || moved.reason.contains("unplugged") {
        format!(
            "Your {what} {} was unplugged; now using {}.",
            moved.from, moved.to
        )
    } else {
        format!(
            "Your {what} {} stopped working ({}); now using {}.",
            moved.from,
            sentence_fragment(&moved.reason),
            moved.to
        )
    }
}

/// `reason` without a trailing full stop, to sit inside a sentence.
fn sentence_fragment(reason: &str) -> &str {
    reason.trim().trim_end_matches('.')
}

/// The server refused something after registration; `message` is its text for people.
pub fn refused(message: &str) -> String {
    format!("The server refused: {}", sentence(message))
}

/// The engine is gone and a command could not be sent.
pub const ENGINE_NOT_RUNNING: &str = "The call engine is not running.";

// ----- the main view's status lines -----

/// Which server the app uses: `server` as set, or the built-in one (`lan`: reachable from the
/// local network).
pub fn server_line(server: &str, lan: bool) -> String {
    match (server.is_empty(), lan) {
        (false, _) => format!("Server: {server}"),
        (true, false) => "Server: built into this app (this machine only)".into(),
        (true, true) => "Server: built into this app (this machine and the local network)".into(),
    }
}

/// Where other machines find the built-in server.
pub fn lan_hint(addresses: &str) -> String {
    format!("Others on your network set their server to {addresses}")
}

/// The NAT check's verdict, and the address the server saw.
pub fn nat_found(report: &NatReport) -> [String; 3] {
    [
        if report.elapsed.is_zero() {
            // From the registration itself: no check of its own ran.
            "Connection OK: registered with the server.".to_owned()
        } else {
            format!(
                "Connection OK: the server answered (the check took {} ms).",
                report.elapsed.as_millis()
            )
        },
        format!("Network: {} ({})", report.describe(), report.verdict),
        format!("Your address as the server sees it: {}", report.mapped),
    ]
}

/// The router's port mapping for calls, in one line.
pub fn port_mapping(status: &traversal::portmap::Status) -> String {
    use traversal::portmap::Status;
    match status {
        Status::Off => "Router port mapping: not asked for".into(),
        Status::Asking => "Router port mapping: asking the router…".into(),
        Status::Mapped {
            method, external, ..
        } => format!("Router port mapping: {external} ({method}): calls can come straight in"),
        Status::Unavailable(why) => format!("Router port mapping: none ({why})"),
        Status::Released => "Router port mapping: released".into(),
    }
}

/// The NAT check did not finish.
pub fn nat_failed(why: &str) -> String {
    format!("Network check failed: {why}")
}

/// The media path of the call in progress.
pub fn path(path: PathKind, remote: Option<SocketAddr>) -> String {
    match (path, remote) {
        (PathKind::Direct, Some(remote)) => format!("Direct to {remote}"),
        (PathKind::Direct, None) => "Direct".to_owned(),
        (PathKind::Relay, _) => "Relayed through the server".to_owned(),
    }
}

/// A placed call: ringing for `ringing`, or not yet.
pub fn placing(ringing: Option<Duration>) -> String {
    match ringing {
        Some(d) => format!("Ringing… {}", clock(d)),
        None => "Reaching them…".into(),
    }
}

// ----- settings -----

/// The settings file could not be read at start.
pub fn settings_unreadable(err: &dyn std::fmt::Display) -> String {
    format!("Your settings could not be read: {err}")
}

/// The settings file could not be written.
pub fn settings_not_saved(err: &dyn std::fmt::Display) -> String {
    format!("Settings not saved: {err}")
}

/// The key made on the first start could not be written.
pub fn key_not_saved(err: &dyn std::fmt::Display) -> String {
    format!("Your key could not be saved: {err}")
}

/// The microphone monitor could not open the device.
pub fn no_microphone(why: &str) -> String {
    format!("No microphone: {why}")
}

/// The test sound: played, or why not.
pub fn test_sound(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "Played: did you hear it?".into(),
        Err(why) => format!("No sound: {why}"),
    }
}

// ----- the registration line -----

/// While the engine reaches the server.
pub fn connecting(server: &str) -> String {
    format!("Connecting to {}…", shown(server))
}

/// Registered.
pub fn online(server: &str) -> String {
    format!("Online: registered at {}", shown(server))
}

/// The server was lost; the engine tries again in `left`.
pub fn offline(reason: &ServerLoss, left: Duration) -> String {
    if *reason == ServerLoss::ShuttingDown {
        // Not a failure: the server said so and said when to come back.
        return match whole_seconds(left) {
            0 => "The server is restarting; signing in again now.".to_owned(),
            n => format!("The server is restarting; signing in again in {n} s."),
        };
    }
    let why = match reason {
        ServerLoss::Closed => "it closed the connection".to_owned(),
        // The detail names the server and the step that failed.
        ServerLoss::Unreachable { detail } => detail.trim().to_owned(),
        ServerLoss::NotAnswering => "it stopped answering".to_owned(),
        ServerLoss::ShuttingDown => "it is shutting down".to_owned(),
    };
    match whole_seconds(left) {
        0 => format!("Lost the server ({why}); trying again now."),
        n => format!("Lost the server ({why}); trying again in {n} s."),
    }
}

/// Another device registered our name.
pub fn replaced(name: &str) -> String {
    format!("{name} signed in on another device.")
}

/// The label of the button that takes the name back after [`replaced`].
pub const SIGN_IN_AGAIN: &str = "Sign in here again";

/// When the app starts the engine again.
pub fn retry_in(left: Duration) -> String {
    format!("Trying again in {} s.", whole_seconds(left).max(1))
}

/// Why the app is not connected to `server`.
pub fn failed(server: &str, failure: &Failure) -> String {
    let server = shown(server);
    match failure {
        Failure::Stopped(None) => format!("Not connected to {server}: the call engine stopped."),
        Failure::Stopped(Some(reason)) => stopped(server, reason),
        Failure::Start(why) | Failure::Settings(why) => {
            format!("Not connected to {server}: {}", sentence(why))
        }
    }
}

fn stopped(server: &str, reason: &StopReason) -> String {
    match reason {
        StopReason::Unreachable { detail } => {
            format!(
                "The server {server} cannot be reached: {}",
                sentence(detail)
            )
        }
        StopReason::NameTaken => format!(
            "Your name is taken on {server}: someone else registered it first. Choose another \
             name in Settings."
        ),
        StopReason::NameConfusable => format!(
            "Your name looks too much like a name someone else registered on {server} (the \
             same letters from another alphabet, or I and l): people could mistake one for the \
             other. Choose another name in Settings."
        ),
        StopReason::TooManyNames => format!(
            "Your key already holds as many names as {server} allows one person. Use one of \
             your names, or another server."
        ),
        StopReason::BadName => {
            format!("{server} does not accept your name. Choose another name in Settings.")
        }
        StopReason::BadSignature => format!(
            "{server} did not accept your key's signature for your name. Choose another name \
             in Settings."
        ),
        StopReason::ServerFull => {
            format!("{server} is full: it has no room for more people right now.")
        }
        StopReason::Incompatible { detail } => format!(
            "{server} has no call service for this app ({}): set a server that has it in \
             Settings.",
            detail.trim()
        ),
        StopReason::Local { detail } => {
            format!(
                "Pinhole could not run on this computer: {}",
                sentence(detail)
            )
        }
        StopReason::UntrustedServer { .. } => certificate_changed(server),
    }
}

// ----- security: the server's certificate, the call's encryption, the peer's key -----

/// The server presented another certificate than the one trusted for it (the fingerprints are
/// shown apart, by [`fingerprints`]).
pub fn certificate_changed(server: &str) -> String {
    format!(
        "The certificate of {server} changed since you last connected. Someone may be \
         intercepting the connection, so Pinhole did not connect and sent nothing. If the \
         server's operator replaced the certificate, check the new fingerprint with them, then \
         trust it."
    )
}

/// The two fingerprints of a changed certificate: (what, fingerprint).
pub fn fingerprints<'a>(pinned: &'a str, presented: &'a str) -> [(&'static str, &'a str); 2] {
    [
        ("Trusted until now:", pinned),
        ("Presented now:", presented),
    ]
}

/// What the settings' "Server certificate" field is for.
pub const FINGERPRINT_HINT: &str = "The fingerprint of the server's certificate, sha256:…, as \
     its operator publishes it (pinhole-rendezvous prints it when it starts). Pinhole then \
     talks to that server only. Empty: the certificate the server presents on the first \
     connection is remembered and must stay the same.";

/// The button that accepts a server's new certificate.
pub const TRUST_NEW_CERTIFICATE: &str = "Trust the new certificate";

/// The new certificate could not be remembered.
pub fn certificate_not_trusted(err: &dyn std::fmt::Display) -> String {
    format!("The new certificate could not be saved: {err}")
}

/// The call view's line about the media's encryption.
pub fn encrypted(suite: &str) -> String {
    format!("Encrypted end to end ({suite})")
}

/// Above the short authentication string, which is shown in large digits.
pub fn compare_with(peer: &str) -> String {
    format!("Compare with {peer}:")
}

/// Under the code on a call whose key was known: what comparing does.
pub fn compare_hint(peer: &str) -> String {
    format!(
        "{peer} sees the same digits if nobody is in the middle. Read them to each other once \
         to be sure."
    )
}

/// Settings: the capture processing's heading and checkboxes (`[audio]`).
pub const PROCESSING_HEADING: &str = "Microphone sound (from the next call)";
pub const ECHO_CANCELLATION: &str = "Echo cancellation";
pub const ECHO_CANCELLATION_HINT: &str = "Keeps the other side from hearing themselves when \
     your microphone picks up your speakers. Turn it off only with headphones.";
pub const NOISE_SUPPRESSION: &str = "Noise suppression";
pub const NOISE_SUPPRESSION_HINT: &str =
    "Removes steady background noise (fans, hum, rumble) from what you send.";
pub const GAIN_CONTROL: &str = "Automatic gain";
pub const GAIN_CONTROL_HINT: &str = "Brings a quiet or loud microphone to a steady speaking level.";

/// The echo test's figure (see `engine::echo_test`).
pub fn voice_came_back(ms: f64) -> String {
    format!("Your voice came back after {ms:.0} ms")
}

/// Until the echo test has a figure: what it needs.
/// After the code in a call: the person read the same digits as `peer`.
pub fn codes_match(peer: &str) -> String {
    format!("The codes match: mark {peer} as verified")
}

/// What "The codes match" means.
pub const CODES_MATCH_HINT: &str = "Press this only after you and they read the same digits \
    to each other. Pinhole then marks them verified, until their key changes.";

/// A verified contact, in a call or in the contacts list.
pub fn verified(peer: &str) -> String {
    format!("Verified: you compared the code with {peer} for this key.")
}

/// Beside a verified contact's name.
pub const VERIFIED_MARK: &str = "✔ verified";

/// The recent calls list's word for a call that rang out unanswered.
pub const OUTCOME_MISSED: &str = "missed";

/// Under the call's buttons when push-to-talk is on.
pub const PUSH_TO_TALK_HINT: &str = "Push to talk: hold Space to speak.";

pub const ECHO_MEASURING: &str =
    "Say something: the time your voice takes to come back is measured as you speak.";

/// The echo test's figure in its parts.
pub fn echo_latency_parts(l: &crate::engine::EchoLatency) -> String {
    format!(
        "From microphone to speaker: {:.0} ms in the microphone's buffers, {:.0} ms through \
         the call (the frame, the codec, the network to the server and back, the jitter \
         buffer), {:.0} ms in the speaker's buffers.",
        l.capture_ms, l.path_ms, l.playback_ms
    )
}

/// The echo service has no other side to compare a code with.
pub const NO_CODE_FOR_ECHO: &str = "The echo service has no code to compare.";

/// The loud warning of a call whose peer's key is not the one remembered.
pub fn key_changed(peer: &str) -> String {
    format!(
        "{peer}'s key changed since your last call. Compare the code below with {peer} before \
         saying anything private: if the digits differ, someone is listening in. If they \
         match ({peer} may have a new computer or reinstalled Pinhole), trust the new key."
    )
}

/// The button that accepts a peer's changed key.
pub const TRUST_NEW_KEY: &str = "Trust the new key";

/// After the user trusted the new key.
pub fn key_trusted(peer: &str) -> String {
    format!("You trust {peer}'s new key from now on.")
}

/// The new key could not be remembered.
pub fn key_not_trusted(peer: &str, err: &dyn std::fmt::Display) -> String {
    format!("{peer}'s new key could not be saved: {err}")
}

/// The contacts file could not be read: keys are remembered for this run only.
pub fn contacts_unreadable(detail: &str) -> String {
    format!(
        "Your contacts' keys could not be read, so changed keys cannot be noticed until it is \
         fixed: {}",
        sentence(detail)
    )
}

/// Why a call to `peer` is not placed now (the registration is not [`Link::Registered`]).
pub fn cannot_call(peer: &str, link: &Link, name: &str) -> String {
    match link {
        Link::Off | Link::Connecting { .. } | Link::Registered { .. } => {
            format!("Cannot call {peer} yet: still connecting to the server.")
        }
        Link::Offline { .. } => {
            format!("Cannot call {peer} now: the server was lost and the app is reaching it again.")
        }
        Link::Replaced { .. } => format!(
            "Cannot call {peer}: {} Press \"{SIGN_IN_AGAIN}\" first.",
            replaced(name)
        ),
        Link::Failed {
            server, failure, ..
        } => format!("Cannot call {peer}: {}", failed(server, failure)),
    }
}

/// A name that cannot be called.
pub fn bad_name(peer: &str, why: &str) -> String {
    format!("Cannot call {peer:?}: {why}.")
}

/// "the server" for an empty address.
fn shown(server: &str) -> &str {
    if server.is_empty() {
        "the server"
    } else {
        server
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
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        86_400..172_800 => "yesterday".into(),
        _ => format!("{} days ago", secs / 86_400),
    }
}

// ----- invite links -----

/// The invite dialog's heading: who invites (the link's name is the one to call).
pub fn invite_heading(name: &str) -> String {
    if name == "echo" {
        "A link to the echo service".into()
    } else {
        format!("{name} invites you")
    }
}

/// The question the invite dialog asks.
pub fn invite_question(name: &str) -> String {
    if name == "echo" {
        "Call echo (you hear yourself) through this server?".into()
    } else {
        format!("Call {name} through this server?")
    }
}

/// What taking the invite's server changes in the settings.
pub fn invite_server_note(offer: &InviteOffer) -> String {
    if offer.same_server() {
        "the server you use already".into()
    } else if offer.current_server.trim().is_empty() {
        "instead of the server built into this app".into()
    } else {
        format!("instead of {}", offer.current_server.trim())
    }
}

/// The link pins no certificate.
pub const INVITE_NO_FINGERPRINT: &str = "not in the link: checked as for any server (a \
     certificate signed by an authority, else the one it presents the first time is remembered)";

/// Under the fingerprint: what it does.
pub const INVITE_FINGERPRINT_PINS: &str = "Pinhole will talk to this server only with this \
     certificate.";

/// The link pins another certificate than the one trusted for its server.
pub fn invite_certificate_differs(server: &str) -> String {
    format!(
        "This link gives another certificate for {server} than the one you trusted until now. \
         Use it only if the link came from someone you trust: a wrong one would let someone \
         else's server stand in for {server}."
    )
}

/// The two fingerprints of [`invite_certificate_differs`].
pub fn invite_fingerprints<'a>(trusted: &'a str, link: &'a str) -> [(&'static str, &'a str); 2] {
    [("Trusted until now:", trusted), ("In the link:", link)]
}

/// The dialog's yes.
pub const USE_INVITE: &str = "Use this server and call";

/// On first run, after taking the invite's server.
pub fn call_after_setup(peer: &str) -> String {
    format!("Once you have told Pinhole your name and saved, it calls {peer}.")
}

/// The invite's call waits for the registration.
pub fn call_when_connected(peer: &str) -> String {
    format!("Calling {peer} once connected to the server…")
}

/// The invite's server could not be saved.
pub fn invite_not_used(why: &str) -> String {
    format!("The invite's server was not taken: {why}")
}

/// The main view's button that copies the user's own invite link.
pub const COPY_INVITE: &str = "Copy invite link";

/// Its tooltip.
pub const COPY_INVITE_HINT: &str = "Send this link to someone: opening it in Pinhole sets their \
     server (and its certificate) to yours and calls you.";

/// After the copy.
pub const INVITE_COPIED: &str = "Copied";

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
        assert_eq!(e.text, SELF_CALL);
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
    fn clock_and_ago() {
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
        assert_eq!(clock(Duration::from_secs(3_723)), "1:02:03");
        assert_eq!(ago(30), "just now");
        assert_eq!(ago(7_200), "2 h ago");
        assert_eq!(sentence("no route"), "No route.");
    }
}
