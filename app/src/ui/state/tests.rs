//! Every transition of [`AppState`]: engine events and user actions in, state and effects out,
//! in virtual time (no egui, no engine, no clock).

use std::time::{Duration, Instant};

use media::audio::LevelMeter;
use traversal::control::EndReason as Remote;

use super::*;
use crate::engine::KeyCheck;

const SERVER: &str = "127.0.0.1:3478";

fn mapped() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 9], 40_000))
}

fn online() -> Event {
    Event::Registration(Registration::Online {
        name: "alice".into(),
        mapped: mapped(),
        verdict: None,
        server: String::new(),
    })
}

const KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NEW_KEY: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const OLD_FP: &str = "sha256:0101010101010101010101010101010101010101010101010101010101010101";
const NEW_FP: &str = "sha256:0202020202020202020202020202020202020202020202020202020202020202";

fn connected(peer: &str) -> Event {
    connected_with(peer, KEY, KeyCheck::Same)
}

fn connected_with(peer: &str, key: &str, check: KeyCheck) -> Event {
    Event::Connected {
        peer: peer.into(),
        input_meter: LevelMeter::new(),
        output_meter: LevelMeter::new(),
        security: Security {
            suite: "AEAD_AES_128_GCM",
            sas: Some("123 456".into()),
            peer_key: Some(key.into()),
            key_check: Some(check),
        },
    }
}

fn untrusted() -> StopReason {
    StopReason::UntrustedServer {
        server: SERVER.into(),
        pinned: OLD_FP.into(),
        presented: NEW_FP.into(),
    }
}

fn ended(peer: &str, reason: EndReason, connected: bool) -> Event {
    Event::Ended {
        reason,
        peer: peer.into(),
        connected,
        report: None,
    }
}

/// An engine started for alice that stopped at `now` with `reason`; the effects of the stop.
fn stopped(reason: StopReason, now: Instant) -> (AppState, Vec<Effect>) {
    let mut s = AppState::default();
    s.engine_started(SERVER.into(), "alice".into());
    let effects = s.apply(
        Event::Stopped {
            reason: Some(reason),
        },
        now,
    );
    (s, effects)
}

/// Registered as alice, no call.
fn registered(now: Instant) -> AppState {
    let mut s = AppState::default();
    s.engine_started(SERVER.into(), "alice".into());
    assert!(matches!(s.link, Link::Connecting { .. }));
    let effects = s.apply(online(), now);
    assert_eq!(
        effects,
        [Effect::Registered {
            server: SERVER.into(),
            mapped: mapped(),
            verdict: None
        }]
    );
    s
}

/// Registered now, and when that is.
fn registered_now() -> (AppState, Instant) {
    let now = Instant::now();
    (registered(now), now)
}

/// In a call with bob that we placed, and when it connected.
fn in_call_with_bob() -> (AppState, Instant) {
    let (mut s, now) = registered_now();
    in_call(&mut s, "bob", now);
    (s, now)
}

/// `s` in a call with `peer` that we placed.
fn in_call(s: &mut AppState, peer: &str, now: Instant) {
    let effects = s.act(Action::Call(peer.into()), now);
    assert_eq!(effects, [Effect::Send(Command::Call(peer.into()))]);
    assert!(matches!(s.call, Call::Placing { ringing: false, .. }));
    s.apply(Event::Ringing { peer: peer.into() }, now);
    assert!(matches!(s.call, Call::Placing { ringing: true, .. }));
    s.apply(connected(peer), now);
    s.apply(Event::Muted(false), now);
    assert!(matches!(&s.call, Call::Up(up) if up.outgoing && up.peer == peer));
}

fn notice(s: &AppState) -> &str {
    s.notice.as_ref().map_or("", |n| n.text.as_str())
}

fn recorded(effects: &[Effect]) -> Vec<(String, bool, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record {
                peer,
                outgoing,
                outcome,
            } => Some((peer.clone(), *outgoing, outcome.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lost_server_is_said_until_registration_comes_back() {
    let (mut s, now) = registered_now();
    let retry_at = now + Duration::from_secs(2);
    s.apply(
        Event::Registration(Registration::Offline {
            reason: ServerLoss::Closed,
            retry_at,
        }),
        now,
    );
    assert!(
        matches!(&s.link, Link::Offline { server, retry_at: at, .. } if server == SERVER && *at == retry_at)
    );
    // The engine retries by itself: the app does not start another.
    assert!(!s.engine_due(now + Duration::from_secs(60)));
    // A call is not placed while the server is lost, and says why.
    assert!(s.act(Action::Call("bob".into()), now).is_empty());
    assert!(notice(&s).contains("the server was lost"), "{}", notice(&s));

    s.apply(Event::Registration(Registration::Connecting), now);
    assert!(matches!(s.link, Link::Connecting { .. }));
    s.apply(online(), now);
    assert!(matches!(&s.link, Link::Registered { server, .. } if server == SERVER));
    assert!(
        s.notice.is_none(),
        "the words about the lost server go with it"
    );
}

#[test]
fn a_call_goes_on_through_a_lost_server_and_a_failed_device() {
    let (mut s, now) = in_call_with_bob();
    // On a direct path the call does not need the server.
    s.apply(
        Event::Registration(Registration::Offline {
            reason: ServerLoss::NotAnswering,
            retry_at: now,
        }),
        now,
    );
    assert!(matches!(s.call, Call::Up(_)));
    assert!(matches!(s.link, Link::Offline { .. }));
    // A device that fails is kept for the call view to say, not as the notice.
    let unplugged = (AudioSide::Speaker, "device unplugged".to_owned());
    let (side, detail) = unplugged.clone();
    s.apply(Event::Warning(Warning::Audio { side, detail }), now);
    assert!(matches!(s.call, Call::Up(_)));
    assert!(s.notice.is_none());
    assert_eq!(s.audio_problem(), Some(&unplugged));
    s.apply(ended("bob", EndReason::Remote(Remote::HungUp), true), now);
    assert!(s.audio_problem().is_none(), "the next call starts clean");
}

#[test]
fn replaced_waits_for_the_user_to_sign_in_again() {
    let (mut s, now) = registered_now();
    s.apply(Event::Registration(Registration::Replaced), now);
    assert!(matches!(&s.link, Link::Replaced { server } if server == SERVER));
    assert!(!s.engine_due(now + Duration::from_secs(3600)), "no retry");
    assert!(s.act(Action::Call("bob".into()), now).is_empty());
    assert!(
        notice(&s).contains("alice signed in on another device."),
        "{}",
        notice(&s)
    );
    assert_eq!(
        s.act(Action::Reconnect, now),
        [Effect::Send(Command::Reconnect)]
    );
    // The line changes only when the engine says so.
    assert!(matches!(s.link, Link::Replaced { .. }));
}

#[test]
fn an_unreachable_server_is_retried_every_5_s_and_on_try_again_now() {
    let now = Instant::now();
    let unreachable = StopReason::Unreachable {
        detail: "connection refused".into(),
    };
    let (mut s, effects) = stopped(unreachable, now);
    assert_eq!(effects, [Effect::EngineStopped]);
    assert!(!s.engine_due(now + Duration::from_secs(4)));
    assert!(s.engine_due(now + RETRY_AFTER));
    let mut s2 = AppState::default();
    s2.engine_started(SERVER.into(), "alice".into());
    s2.apply(Event::Stopped { reason: None }, now);
    assert!(s2.engine_due(now + RETRY_AFTER), "stopped unasked: retried");

    s.act(Action::TryAgainNow, now);
    assert!(s.engine_due(now));
}

#[test]
fn a_taken_or_refused_name_is_not_retried() {
    for reason in [
        StopReason::NameTaken,
        StopReason::BadName,
        StopReason::BadSignature,
        untrusted(),
    ] {
        let now = Instant::now();
        let (mut s, _) = stopped(reason, now);
        assert!(matches!(s.link, Link::Failed { retry_at: None, .. }));
        assert!(!s.engine_due(now + Duration::from_secs(3600)));
        // Unless the user asks.
        s.act(Action::TryAgainNow, now);
        assert!(s.engine_due(now));
    }
}

#[test]
fn a_settings_problem_is_not_retried_but_a_failed_start_is() {
    let now = Instant::now();
    let mut s = AppState::default();
    s.engine_failed(SERVER.into(), Failure::Settings("bad key".into()), now);
    assert!(!s.engine_due(now + Duration::from_secs(60)));
    s.engine_failed(SERVER.into(), Failure::Start("no thread".into()), now);
    assert!(s.engine_due(now + RETRY_AFTER));
    s.engine_off();
    assert!(s.engine_due(now), "off: start one");
}

#[test]
fn mute_follows_the_engine_and_is_off_at_the_start_of_every_call() {
    let (mut s, now) = in_call_with_bob();
    assert!(!s.muted);
    // The click asks; the engine's answer changes the state.
    assert_eq!(
        s.act(Action::Mute(true), now),
        [Effect::Send(Command::Mute(true))]
    );
    assert!(!s.muted);
    s.apply(Event::Muted(true), now);
    assert!(s.muted);
    s.apply(ended("bob", EndReason::Remote(Remote::HungUp), true), now);
    assert!(!s.muted, "no call: not muted");

    // The next call starts unmuted without the app sending anything about mute.
    let effects = s.act(Action::Call("carol".into()), now);
    assert_eq!(effects, [Effect::Send(Command::Call("carol".into()))]);
    s.apply(connected("carol"), now);
    assert!(!s.muted);
    // Even when the engine's Muted(false) comes first and a stale Muted(true) was last.
    s.apply(Event::Muted(true), now);
    s.apply(ended("carol", EndReason::Remote(Remote::HungUp), true), now);
    s.apply(
        Event::Incoming {
            from: "dave".into(),
        },
        now,
    );
    assert!(!s.muted);
    // Mute means nothing outside a call.
    s.act(Action::HangUp, now);
    assert!(s.act(Action::Mute(true), now).is_empty());
}

#[test]
fn calling_yourself_has_its_own_words() {
    let (mut s, now) = registered_now();
    s.act(Action::Call("alice".into()), now);
    let effects = s.apply(ended("alice", EndReason::SelfCall, false), now);
    assert_eq!(notice(&s), words::self_call());
    assert!(!notice(&s).contains("busy"));
    assert_eq!(
        recorded(&effects),
        [("alice".into(), true, "that is you".into())]
    );
    assert!(matches!(s.call, Call::Idle));
}

#[test]
fn an_incoming_call_the_caller_cancels_is_missed() {
    let (mut s, now) = registered_now();
    s.apply(
        Event::Incoming {
            from: "carol".into(),
        },
        now,
    );
    assert!(matches!(&s.call, Call::Incoming { from, answered: false } if from == "carol"));
    let effects = s.apply(
        ended("carol", EndReason::Remote(Remote::Cancelled), false),
        now,
    );
    assert_eq!(
        recorded(&effects),
        [("carol".into(), false, "missed".into())]
    );
    assert_eq!(notice(&s), "You missed a call from carol.");
}

#[test]
fn accept_is_sent_once_and_reject_is_recorded_at_once() {
    let (mut s, now) = registered_now();
    s.apply(Event::Incoming { from: "bob".into() }, now);
    assert_eq!(s.act(Action::Accept, now), [Effect::Send(Command::Accept)]);
    assert!(s.act(Action::Accept, now).is_empty());
    assert!(matches!(s.call, Call::Incoming { answered: true, .. }));
    s.apply(connected("bob"), now);
    assert!(matches!(&s.call, Call::Up(up) if !up.outgoing));
    s.act(Action::HangUp, now);

    s.apply(Event::Incoming { from: "bob".into() }, now);
    let effects = s.act(Action::Reject, now);
    assert_eq!(effects[0], Effect::Send(Command::Reject));
    assert_eq!(
        recorded(&effects),
        [("bob".into(), false, "declined".into())]
    );
    assert_eq!(notice(&s), "You declined the call from bob.");
    // The engine's Ended for it says nothing more.
    assert!(
        s.apply(ended("bob", EndReason::Declined, false), now)
            .is_empty()
    );
    assert_eq!(notice(&s), "You declined the call from bob.");
}

#[test]
fn the_end_of_a_call_the_user_hung_up_does_not_end_the_next_one() {
    let (mut s, now) = in_call_with_bob();
    let later = now + Duration::from_secs(65);
    let effects = s.act(Action::HangUp, later);
    assert_eq!(effects[0], Effect::Send(Command::HangUp));
    assert_eq!(recorded(&effects), [("bob".into(), true, "1:05".into())]);
    assert_eq!(notice(&s), "Call with bob ended after 1:05.");
    // bob again at once: the old call's Ended comes while the new one is placed.
    s.act(Action::Call("bob".into()), later);
    assert!(
        s.apply(ended("bob", EndReason::HungUp, true), later)
            .is_empty()
    );
    assert!(matches!(s.call, Call::Placing { .. }));
    // An Ended for someone else is not this call's.
    assert!(
        s.apply(
            ended("carol", EndReason::Remote(Remote::Busy), false),
            later
        )
        .is_empty()
    );
    assert!(matches!(s.call, Call::Placing { .. }));
    // This call's own end is said.
    let effects = s.apply(ended("bob", EndReason::Remote(Remote::Busy), false), later);
    assert_eq!(recorded(&effects), [("bob".into(), true, "busy".into())]);
    assert_eq!(notice(&s), "bob is busy in another call.");
    assert!(s.notice.as_ref().is_some_and(|n| n.failure));
}

#[test]
fn cancelling_a_placed_call_says_so() {
    let (mut s, now) = registered_now();
    s.act(Action::Call("bob".into()), now);
    let effects = s.act(Action::HangUp, now);
    assert_eq!(
        recorded(&effects),
        [("bob".into(), true, "cancelled".into())]
    );
    assert_eq!(notice(&s), "You cancelled the call to bob.");
    assert!(!s.notice.as_ref().is_some_and(|n| n.failure));
}

#[test]
fn a_connected_call_ended_by_the_peer_says_how_long() {
    let (mut s, now) = in_call_with_bob();
    let effects = s.apply(
        ended("bob", EndReason::Remote(Remote::HungUp), true),
        now + Duration::from_secs(3),
    );
    assert_eq!(recorded(&effects), [("bob".into(), true, "0:03".into())]);
    assert_eq!(notice(&s), "Call with bob ended after 0:03.");
}

#[test]
fn a_failed_device_explains_the_local_end() {
    let (mut s, now) = registered_now();
    s.act(Action::Call("echo".into()), now);
    s.apply(
        Event::Warning(Warning::Audio {
            side: AudioSide::Microphone,
            detail: "no audio input device named \"x\"".into(),
        }),
        now,
    );
    // The server had connected the call, but no media flowed: not a call that was up.
    let effects = s.apply(ended("echo", EndReason::Local, true), now);
    assert_eq!(
        notice(&s),
        "No microphone could be opened (no audio input device named \"x\"). Pick another one in \
         Settings."
    );
    assert_eq!(recorded(&effects), [("echo".into(), true, "failed".into())]);
    // The next call that fails here does not inherit the old device's words.
    s.act(Action::Call("echo".into()), now);
    s.apply(ended("echo", EndReason::Local, false), now);
    assert!(notice(&s).starts_with("The call failed on this computer"));
}

#[test]
fn the_engine_stopping_in_a_call_fails_the_call_and_the_link() {
    let (mut s, now) = in_call_with_bob();
    let effects = s.apply(
        Event::Stopped {
            reason: Some(StopReason::Local {
                detail: "socket closed".into(),
            }),
        },
        now,
    );
    assert_eq!(recorded(&effects), [("bob".into(), true, "failed".into())]);
    assert_eq!(effects.last(), Some(&Effect::EngineStopped));
    assert!(notice(&s).starts_with("The call with bob failed: "));
    assert!(matches!(s.call, Call::Idle));
    assert!(matches!(&s.link, Link::Failed { server, .. } if server == SERVER));
}

#[test]
fn calls_are_placed_only_when_registered_and_to_valid_names() {
    let now = Instant::now();
    let mut s = AppState::default();
    s.engine_started(SERVER.into(), "alice".into());
    assert!(s.act(Action::Call("bob".into()), now).is_empty());
    assert_eq!(
        notice(&s),
        "Cannot call bob yet: still connecting to the server."
    );
    let mut s = registered(now);
    assert!(s.act(Action::Call("bad name!".into()), now).is_empty());
    assert!(notice(&s).starts_with("Cannot call \"bad name!\""));
    assert!(s.act(Action::Call("  ".into()), now).is_empty());
    assert_eq!(
        s.act(Action::Call(" echo ".into()), now),
        [Effect::Send(Command::Call("echo".into()))]
    );
    assert!(s.notice.is_none());
}

#[test]
fn figures_and_path_reach_the_call_in_progress() {
    let (mut s, now) = in_call_with_bob();
    let remote = SocketAddr::from(([198, 51, 100, 2], 5000));
    s.apply(
        Event::PathChanged {
            path: PathKind::Direct,
            remote: Some(remote),
        },
        now,
    );
    assert!(
        matches!(&s.call, Call::Up(up) if up.path == PathKind::Direct && up.remote == Some(remote))
    );
    let effects = s.act(Action::Volume(0.5), now);
    assert_eq!(effects, [Effect::Send(Command::Volume(0.5))]);
    assert!((s.volume - 0.5).abs() < f32::EPSILON);
}

#[test]
fn warnings_outside_a_call_are_said_and_races_are_not() {
    let (mut s, now) = registered_now();
    s.apply(
        Event::Warning(Warning::Refused {
            code: "bad_frame".into(),
            message: "that is not allowed".into(),
        }),
        now,
    );
    assert_eq!(notice(&s), "The server refused: That is not allowed.");
    s.notice = None;
    s.apply(Event::Warning(Warning::NoCallToAccept), now);
    s.apply(Event::Warning(Warning::AlreadyInCall), now);
    assert!(s.notice.is_none());
    // Keys of contacts that cannot be read: changed keys cannot be noticed, so it is said.
    let detail = "contact-keys.txt line 3: `x` is not two words";
    s.apply(
        Event::Warning(Warning::Contacts {
            detail: detail.into(),
        }),
        now,
    );
    assert!(
        notice(&s).contains("keys could not be read"),
        "{}",
        notice(&s)
    );
    assert!(notice(&s).contains("line 3"), "{}", notice(&s));
}

#[test]
fn a_changed_key_warns_until_the_user_trusts_it() {
    let (mut s, now) = registered_now();
    s.act(Action::Call("bob".into()), now);
    let previous = KEY.to_owned();
    s.apply(
        connected_with("bob", NEW_KEY, KeyCheck::Changed { previous }),
        now,
    );
    let Call::Up(up) = &s.call else {
        panic!("{:?}", s.call)
    };
    assert!(up.key_warning());
    assert_eq!(up.security.sas.as_deref(), Some("123 456"));
    // Trusting asks the app to remember the new key; the warning stays until that is done.
    let effects = s.act(Action::TrustKey, now);
    assert_eq!(
        effects,
        [Effect::TrustKey {
            peer: "bob".into(),
            key: NEW_KEY.into()
        }]
    );
    s.key_trusted("carol");
    assert!(
        matches!(&s.call, Call::Up(up) if up.key_warning()),
        "another peer"
    );
    s.key_trusted("bob");
    assert!(matches!(&s.call, Call::Up(up) if !up.key_warning()));
    assert!(
        s.act(Action::TrustKey, now).is_empty(),
        "nothing left to trust"
    );
}

#[test]
fn a_known_or_first_key_has_nothing_to_trust() {
    for check in [KeyCheck::Same, KeyCheck::FirstCall] {
        let (mut s, now) = registered_now();
        s.act(Action::Call("bob".into()), now);
        s.apply(connected_with("bob", KEY, check.clone()), now);
        assert!(
            matches!(&s.call, Call::Up(up) if !up.key_warning()),
            "{check:?}"
        );
        assert!(s.act(Action::TrustKey, now).is_empty(), "{check:?}");
    }
    // Nor has a call that is not up.
    let (mut s, now) = registered_now();
    assert!(s.act(Action::TrustKey, now).is_empty());
}

#[test]
fn a_changed_server_certificate_waits_for_the_user_then_connects_at_once() {
    let now = Instant::now();
    let (mut s, effects) = stopped(untrusted(), now);
    assert_eq!(effects, [Effect::EngineStopped]);
    assert!(
        !s.engine_due(now + Duration::from_secs(3600)),
        "never by itself"
    );
    let said = words::failed(
        s.link.server(),
        match &s.link {
            Link::Failed { failure, .. } => failure,
            other => panic!("{other:?}"),
        },
    );
    assert!(
        said.contains("certificate of 127.0.0.1:3478 changed"),
        "{said}"
    );
    let later = now + Duration::from_secs(10);
    let effects = s.act(Action::TrustServer, later);
    assert_eq!(
        effects,
        [Effect::TrustServer {
            server: SERVER.into(),
            presented: NEW_FP.into()
        }]
    );
    assert!(s.engine_due(later));
    // Only a changed certificate can be trusted.
    let (mut s, _) = stopped(StopReason::NameTaken, now);
    assert!(s.act(Action::TrustServer, later).is_empty());
    assert!(!s.engine_due(later));
}

// ----- invite links -----

fn offer(name: &str, server: &str) -> InviteOffer {
    InviteOffer {
        invite: Invite::new(
            name.into(),
            settings::ServerAddr::parse(server).unwrap(),
            Some(NEW_FP.parse().unwrap()),
        ),
        current_server: SERVER.into(),
        trusted: None,
    }
}

#[test]
fn an_invite_waits_for_the_user_and_cancel_changes_nothing() {
    let (mut s, now) = registered_now();
    s.invite_opened(offer("bob", "other.example.org"));
    assert!(s.invite.is_some());
    // A second link replaces the first.
    s.invite_opened(offer("carol", "other.example.org"));
    assert_eq!(s.invite.as_ref().unwrap().invite.name, "carol");
    assert!(s.act(Action::DismissInvite, now).is_empty());
    assert!(s.invite.is_none());
    assert!(s.pending_call.is_none());
    assert!(matches!(s.link, Link::Registered { .. }));
    assert!(
        s.act(Action::UseInvite, now).is_empty(),
        "nothing on screen: nothing to use"
    );
}

#[test]
fn using_an_invite_on_the_same_server_calls_at_once() {
    let (mut s, now) = registered_now();
    let offer = offer("bob", SERVER);
    assert!(offer.same_server());
    s.invite_opened(offer.clone());
    let effects = s.act(Action::UseInvite, now);
    assert_eq!(effects, [Effect::UseInvite(offer.invite)]);
    assert!(s.invite.is_none());
    assert_eq!(s.pending_call.as_deref(), Some("bob"));
    // The settings did not change: the engine stays registered and the call goes out.
    let effects = s.invite_used(now);
    assert_eq!(effects, [Effect::Send(Command::Call("bob".into()))]);
    assert!(matches!(&s.call, Call::Placing { peer, .. } if peer == "bob"));
    assert!(s.pending_call.is_none());
}

#[test]
fn using_an_invite_on_another_server_calls_once_registered_there() {
    let (mut s, now) = registered_now();
    let offer = offer("bob", "other.example.org:4000");
    assert!(!offer.same_server());
    s.invite_opened(offer);
    s.act(Action::UseInvite, now);
    // New settings: the app stops the engine and starts one for the invite's server.
    s.engine_off();
    assert!(s.invite_used(now).is_empty(), "not registered there yet");
    s.engine_started("other.example.org:4000".into(), "alice".into());
    assert!(
        s.apply(Event::Registration(Registration::Connecting), now)
            .is_empty()
    );
    assert_eq!(s.pending_call.as_deref(), Some("bob"));
    let effects = s.apply(online(), now);
    assert!(
        effects.contains(&Effect::Send(Command::Call("bob".into()))),
        "{effects:?}"
    );
    assert!(matches!(&s.call, Call::Placing { peer, .. } if peer == "bob"));
    assert!(s.pending_call.is_none(), "called once only");
}

#[test]
fn an_invite_call_is_not_placed_later_by_surprise() {
    // The engine fails at the invite's server (here its certificate is not the link's): the
    // call is said not to go out, and a later registration places nothing.
    let now = Instant::now();
    let mut s = AppState::default();
    s.invite_opened(offer("bob", "other.example.org"));
    s.act(Action::UseInvite, now);
    s.engine_started("other.example.org:3478".into(), "alice".into());
    s.apply(
        Event::Stopped {
            reason: Some(untrusted()),
        },
        now,
    );
    assert!(s.pending_call.is_none());
    assert!(notice(&s).starts_with("Cannot call bob:"), "{}", notice(&s));
    s.engine_started(SERVER.into(), "alice".into());
    let effects = s.apply(online(), now);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Send(_))),
        "{effects:?}"
    );
    assert!(
        s.notice.is_none(),
        "the words about the failed server go with it"
    );

    // Calling someone else drops the invite's call; so does a settings file not written.
    let (mut s, now) = registered_now();
    s.pending_call = Some("bob".into());
    s.act(Action::Call("carol".into()), now);
    assert!(s.pending_call.is_none());
    let mut s = AppState {
        pending_call: Some("bob".into()),
        ..AppState::default()
    };
    s.invite_failed("The invite's server was not taken: disk full".into());
    assert!(s.pending_call.is_none());
    assert_eq!(notice(&s), "The invite's server was not taken: disk full");
}

#[test]
fn an_invite_pinning_another_certificate_is_flagged() {
    let mut o = offer("bob", SERVER);
    assert!(!o.certificate_differs(), "nothing trusted before");
    o.trusted = Some(NEW_FP.parse().unwrap());
    assert!(!o.certificate_differs(), "the same one");
    o.trusted = Some(OLD_FP.parse().unwrap());
    assert!(o.certificate_differs());
    o.invite.fingerprint = None;
    assert!(
        !o.certificate_differs(),
        "no pin in the link: the usual checks apply"
    );
}

#[test]
fn of_a_list_of_servers_the_registered_one_is_shown_and_the_list_while_offline() {
    let now = Instant::now();
    let list = "a.example:3478, b.example:3478";
    let mut s = AppState::default();
    s.engine_started(list.into(), "alice".into());
    assert_eq!(s.link.server(), list);
    let effects = s.apply(
        Event::Registration(Registration::Online {
            name: "alice".into(),
            mapped: mapped(),
            verdict: None,
            server: "b.example:3478".into(),
        }),
        now,
    );
    // The connection check and the main view go to the server registered with.
    assert_eq!(
        effects,
        [Effect::Registered {
            server: "b.example:3478".into(),
            mapped: mapped(),
            verdict: None
        }]
    );
    assert!(matches!(&s.link, Link::Registered { server, .. } if server == "b.example:3478"));
    s.apply(
        Event::Registration(Registration::Offline {
            reason: ServerLoss::Closed,
            retry_at: now,
        }),
        now,
    );
    assert_eq!(s.link.server(), list, "reaching any of the list again");
}
