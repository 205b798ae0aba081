//! Invite links on the command line, the real `pinhole` binary against the real
//! `pinhole-rendezvous` on 127.0.0.1: `pinhole call LINK` calls the link's name through its
//! server with its certificate pinned (a link with another fingerprint connects to nothing);
//! `pinhole invite` prints the user's own link, with the certificate recorded on the first
//! connection, and that link calls them; bad links exit 2 with the reason, before any network.
//!
//! Needs `cargo build --workspace --bins` first (as the other tests that run the binaries).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pinhole_tests::{Headless, HeadlessOutput, Party, Rendezvous, TempDir};

/// `pinhole ARGS...` run to its end (at most 30 s), without the user's settings.
fn pinhole(args: &[&str]) -> HeadlessOutput {
    let mut cmd = pinhole_tests::command("pinhole");
    cmd.args(args);
    Headless::spawn(cmd).finish(Duration::from_secs(30))
}

/// `pinhole call LINK` as `party` (its name, settings, silence in and nothing out), for 2 s.
fn call_link(party: &Party, link: &str) -> HeadlessOutput {
    let config = party.config.display().to_string();
    pinhole(&[
        "call",
        link,
        "--config",
        &config,
        "--user",
        &party.name,
        "--input",
        "silence",
        "--output",
        "null",
        "--json",
        "--duration",
        "2",
    ])
}

#[test]
fn call_with_a_link_uses_its_server_and_pins_its_certificate() {
    let server = Rendezvous::start("127.0.0.1:0");
    let dir = TempDir::new("invite-call");
    let carol = Party::silent(&dir, "carol");
    let fp = server.fingerprint();
    let link = format!("pinhole://call/echo?server={}&fp={fp}", server.addr);

    let out = call_link(&carol, &link);
    assert!(out.status.success(), "{out:#?}");
    let report = out.one_json();
    assert_eq!(report["peer"], "echo", "{report}");
    assert!(report["rtp"]["received"].as_u64().unwrap() > 0, "{report}");
    // carol's first run kept the link's server with its certificate, not the server alone.
    let saved = std::fs::read_to_string(&carol.config).unwrap();
    assert!(
        saved.contains(&format!("server_fingerprint = \"{fp}\"")),
        "{saved}"
    );

    // Another fingerprint in the link: the server's certificate is refused, nothing is sent.
    let other = format!("sha256:{}", "00".repeat(32));
    let bad = format!("pinhole://call/echo?server={}&fp={other}", server.addr);
    let out = call_link(&Party::silent(&dir, "dave"), &bad);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let log = out.log_text();
    assert!(log.contains("server_certificate_changed"), "{log}");
    assert!(
        log.contains(&other) && log.contains(&fp.to_string()),
        "{log}"
    );
}

#[test]
fn ones_own_invite_link_calls_one() {
    let server = Rendezvous::start("127.0.0.1:0");
    let dir = TempDir::new("invite-own");
    let alice = Party::silent(&dir, "alice");
    let bob = Party::silent(&dir, "bob");
    let config = alice.config.display().to_string();
    // alice answers; her first connection records the server's certificate beside her
    // settings (and her first run wrote her name and server into them).
    let answer = alice.answer(
        pinhole_tests::Place::Local,
        &server.addr.to_string(),
        &["--calls", "1"],
    );

    let out = pinhole(&["invite", "--config", &config]);
    assert!(out.status.success(), "{out:#?}");
    let link = out.stdout.trim().to_owned();
    assert_eq!(
        link,
        format!(
            "pinhole://call/{}?server={}&fp={}",
            alice.name,
            server.addr,
            server.fingerprint()
        )
    );

    let out = call_link(&bob, &link);
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.one_json()["peer"], alice.name.as_str());
    let answered = answer.finish(Duration::from_secs(15));
    assert!(answered.status.success(), "{answered:#?}");

    // Another server: no certificate known for it, so the link has none, and says so.
    let out = pinhole(&[
        "invite",
        "--config",
        &config,
        "--server",
        "[2001:db8::1]:4000",
    ]);
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(
        out.stdout.trim(),
        format!("pinhole://call/{}?server=[2001:db8::1]:4000", alice.name)
    );
    assert!(
        out.log_text()
            .contains("no certificate fingerprint is known"),
        "{out:#?}"
    );
}

#[test]
fn bad_links_exit_2_with_the_reason() {
    let dir = TempDir::new("invite-bad");
    let erin = Party::silent(&dir, "erin");
    let fp = format!("sha256:{}", "ab".repeat(32));
    for (link, says) in [
        (
            "https://example.org/call/echo".to_owned(),
            "not a Pinhole link: it must start with pinhole://".to_owned(),
        ),
        (
            "pinhole://call/?server=127.0.0.1".to_owned(),
            "the link names nobody to call".to_owned(),
        ),
        (
            "pinhole://call/echo?server=127.0.0.1:99999".to_owned(),
            "the port must be a number from 1 to 65535".to_owned(),
        ),
        (
            "pinhole://call/echo?server=127.0.0.1&fp=sha256:12".to_owned(),
            "fingerprint has 64 hex digits".to_owned(),
        ),
        (
            "pinhole://call/echo".to_owned(),
            "the link names no server".to_owned(),
        ),
    ] {
        // https://... is not taken for a link by `call` (it is a name there, and a bad one).
        if link.starts_with("pinhole:") {
            let out = call_link(&erin, &link);
            assert_eq!(out.status.code(), Some(2), "{link}: {out:#?}");
            assert!(out.log_text().contains(&says), "{link}: {out:#?}");
        }
        // The bare link (what the desktop entry runs) is refused before any window opens.
        let out = pinhole(&[&link]);
        assert_eq!(out.status.code(), Some(2), "{link}: {out:#?}");
        assert!(out.log_text().contains(&says), "{link}: {out:#?}");
    }
    // A link names its own server and certificate: flags that name others are refused.
    let link = format!("pinhole://call/echo?server=127.0.0.1&fp={fp}");
    let config = erin.config.display().to_string();
    let out = pinhole(&[
        "call",
        &link,
        "--server",
        "127.0.0.1:1",
        "--duration",
        "1",
        "--config",
        &config,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(out.log_text().contains("leave out --server"), "{out:#?}");
    let out = pinhole(&[
        "call",
        &link,
        "--server-fingerprint",
        &fp,
        "--duration",
        "1",
        "--config",
        &config,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(
        out.log_text().contains("leave out --server-fingerprint"),
        "{out:#?}"
    );
    // A word that is neither a command nor a link.
    let out = pinhole(&["cal"]);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(
        out.log_text()
            .contains("is neither a command nor an invite link"),
        "{out:#?}"
    );
    assert!(!erin.config.exists(), "nothing was written");
}
