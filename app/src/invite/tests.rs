//! Links in and out: what parses to what, every bad link's reason, the user's own link from the
//! settings and the known servers, what accepting one writes, and format -> parse round trips.

#![allow(clippy::unwrap_used)]

use super::*;

const HEX: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";

fn fp() -> Fingerprint {
    format!("sha256:{HEX}").parse().unwrap()
}

fn parse(link: &str) -> Result<Invite, InviteError> {
    link.parse()
}

fn server(text: &str) -> ServerAddr {
    ServerAddr::parse(text).unwrap()
}

#[test]
fn links_parse_to_name_server_and_fingerprint() {
    let i = parse(&format!(
        "pinhole://call/alice?server=rendezvous.example.org:4000&fp=sha256:{HEX}"
    ))
    .unwrap();
    assert_eq!(i.name, "alice");
    assert_eq!(i.server, server("rendezvous.example.org:4000"));
    assert_eq!(i.fingerprint, Some(fp()));

    // The port defaults to 3478; no fingerprint is no pin.
    let i = parse("pinhole://call/bob?server=203.0.113.7").unwrap();
    assert_eq!(i.server, server("203.0.113.7:3478"));
    assert_eq!(i.fingerprint, None);

    // IPv6 in brackets, literally or percent-encoded; with and without a port.
    for link in [
        "pinhole://call/bob?server=[2001:db8::1]:4000",
        "pinhole://call/bob?server=%5B2001%3Adb8%3A%3A1%5D%3A4000",
    ] {
        assert_eq!(
            parse(link).unwrap().server,
            server("[2001:db8::1]:4000"),
            "{link}"
        );
    }
    assert_eq!(
        parse("pinhole://call/bob?server=[::1]").unwrap().server,
        server("[::1]:3478")
    );

    // UTF-8 names, percent-encoded in either case; echo; the scheme in any case; the order
    // of parameters; one trailing slash; blanks around the link (pasted text).
    assert_eq!(
        parse("pinhole://call/Zo%C3%AB?server=h").unwrap().name,
        "Zoë"
    );
    assert_eq!(
        parse("pinhole://call/Zo%c3%ab?server=h").unwrap().name,
        "Zoë"
    );
    assert_eq!(
        parse("pinhole://call/Zoë?server=h").unwrap().name,
        "Zoë",
        "as a browser may show it"
    );
    assert_eq!(parse("pinhole://call/echo?server=h").unwrap().name, "echo");
    let i = parse(&format!(
        "  PINHOLE://Call/alice/?fp=SHA256:{}&server=h  ",
        HEX.to_uppercase()
    ))
    .unwrap();
    assert_eq!((i.name.as_str(), i.fingerprint), ("alice", Some(fp())));
}

#[test]
fn every_bad_link_says_what_is_wrong() {
    let long_fp = format!("sha256:{HEX}00");
    let cases: Vec<(String, InviteError, &str)> = vec![
        (
            "https://call/alice?server=h".into(),
            InviteError::Scheme("https://call/alice?server=h".into()),
            "must start with pinhole://",
        ),
        (
            "pinhole:call/alice?server=h".into(),
            InviteError::Scheme("pinhole:call/alice?server=h".into()),
            "must start with pinhole://",
        ),
        (
            "alice".into(),
            InviteError::Scheme("alice".into()),
            "not a Pinhole link",
        ),
        (
            "pinhole://join/alice?server=h".into(),
            InviteError::Kind("join/alice?server=h".into()),
            "pinhole://call/NAME",
        ),
        (
            "pinhole://call/?server=h".into(),
            InviteError::NoName,
            "names nobody to call",
        ),
        (
            "pinhole://call".into(),
            InviteError::Kind("call".into()),
            "pinhole://call/NAME",
        ),
        (
            "pinhole://call/al%20ice?server=h".into(),
            InviteError::Name {
                name: "al ice".into(),
                why: "a name has only letters, digits, '.', '_' and '-', not ' '".into(),
            },
            "is not a name",
        ),
        (
            "pinhole://call/al%2?server=h".into(),
            InviteError::Encoding {
                part: "name",
                detail: "\"%2\" is not % and two hex digits".into(),
            },
            "percent-encoded",
        ),
        (
            "pinhole://call/al%FFice?server=h".into(),
            InviteError::Encoding {
                part: "name",
                detail: "the escaped bytes are not UTF-8".into(),
            },
            "UTF-8",
        ),
        (
            "pinhole://call/alice".into(),
            InviteError::NoServer,
            "names no server",
        ),
        (
            "pinhole://call/alice?server=".into(),
            InviteError::NoServer,
            "names no server",
        ),
        (
            "pinhole://call/alice?server=h:99999".into(),
            InviteError::Server {
                text: "h:99999".into(),
                why: AddrError::Port("99999".into()),
            },
            "the port must be a number",
        ),
        (
            "pinhole://call/alice?server=[2001:db8::1".into(),
            InviteError::Server {
                text: "[2001:db8::1".into(),
                why: AddrError::Ipv6,
            },
            "in brackets",
        ),
        (
            "pinhole://call/alice?server=bad_host".into(),
            InviteError::Server {
                text: "bad_host".into(),
                why: AddrError::Host("bad_host".into()),
            },
            "not a host name",
        ),
        (
            format!("pinhole://call/alice?server=h&fp={long_fp}"),
            InviteError::Fingerprint(FingerprintError::Length(66)),
            "64 hex digits",
        ),
        (
            format!("pinhole://call/alice?server=h&fp={HEX}"),
            InviteError::Fingerprint(FingerprintError::Prefix(HEX[..20].into())),
            "starts with `sha256:`",
        ),
        (
            "pinhole://call/alice?server=h&fp=sha256:xyz".into(),
            InviteError::Fingerprint(FingerprintError::Digit('x')),
            "not a hex digit",
        ),
        (
            "pinhole://call/alice?server=h&fingerprint=sha256:00".into(),
            InviteError::UnknownParameter("fingerprint".into()),
            "does not know",
        ),
        (
            "pinhole://call/alice?server=h&server=i".into(),
            InviteError::Repeated("server"),
            "twice",
        ),
        (
            format!("pinhole://call/alice?server=h&fp=sha256:{HEX}&fp=sha256:{HEX}"),
            InviteError::Repeated("fp"),
            "twice",
        ),
        (
            "pinhole://call/alice?server=h#top".into(),
            InviteError::Trailing("#top".into()),
            "after the name",
        ),
        (
            "pinhole://call/alice/bob?server=h".into(),
            InviteError::Trailing("/bob".into()),
            "after the name",
        ),
    ];
    for (link, error, says) in cases {
        let got = parse(&link);
        assert_eq!(got, Err(error), "{link}");
        let text = got.unwrap_err().to_string();
        assert!(text.contains(says), "{link}: {text}");
    }
}

#[test]
fn looks_like_link_is_about_the_scheme_only() {
    assert!(Invite::looks_like_link("pinhole://call/a?server=h"));
    assert!(Invite::looks_like_link(" PINHOLE:whatever"));
    assert!(!Invite::looks_like_link("alice"));
    assert!(!Invite::looks_like_link("pinhole"));
    assert!(!Invite::looks_like_link("pinholé:"));
}

#[test]
fn links_are_formatted_short_and_bracketed() {
    let link = |name: &str, s: &str, fp| Invite::new(name.into(), server(s), fp).to_string();
    assert_eq!(
        link("alice", "rendezvous.example.org", None),
        "pinhole://call/alice?server=rendezvous.example.org"
    );
    assert_eq!(
        link("alice", "203.0.113.7:4000", Some(fp())),
        format!("pinhole://call/alice?server=203.0.113.7:4000&fp=sha256:{HEX}")
    );
    assert_eq!(
        link("Zoë", "[2001:db8::1]:3478", None),
        "pinhole://call/Zo%C3%AB?server=[2001:db8::1]"
    );
    assert_eq!(
        link("a.b_c-d", "[::1]:9", None),
        "pinhole://call/a.b_c-d?server=[::1]:9"
    );
}

/// A settings file in a temporary directory, for own links.
fn saved(name: &str, server: &str, pin: &str) -> (tempfile::TempDir, std::path::PathBuf, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let s = Settings {
        name: name.into(),
        server: server.into(),
        server_fingerprint: pin.into(),
        ..Settings::default()
    };
    (dir, path, s)
}

#[test]
fn ones_own_link_comes_from_the_settings_and_the_known_servers() {
    let pin = format!("sha256:{}", "01".repeat(32));
    let known = format!("sha256:{}", "02".repeat(32));

    // The settings' pin for their server.
    let (dir, path, s) = saved("alice", "rendezvous.example.org", &pin);
    let i = own_invite(&s, &path, None).unwrap();
    assert_eq!(
        i.to_string(),
        format!("pinhole://call/alice?server=rendezvous.example.org&fp={pin}")
    );

    // No pin: the certificate recorded on the first connection; none recorded: no fp.
    let (_d, path2, s2) = saved("alice", "Rendezvous.example.org:3478", "");
    assert_eq!(own_invite(&s2, &path2, None).unwrap().fingerprint, None);
    std::fs::write(
        dir.path().join("known-servers.txt"),
        format!("rendezvous.example.org:3478 {known}\nother.example.org:3478 {pin}\n"),
    )
    .unwrap();
    let (_, _, s3) = saved("alice", "Rendezvous.example.org:3478", "");
    let i = own_invite(&s3, &path, None).unwrap();
    assert_eq!(i.fingerprint, Some(known.parse().unwrap()));

    // Another server: the settings' pin is not its; the known-servers entry is.
    let other = server("other.example.org");
    let i = own_invite(&s, &path, Some(&other)).unwrap();
    assert_eq!(i.server, other);
    assert_eq!(i.fingerprint, Some(pin.parse().unwrap()));
    let third = server("third.example.org");
    assert_eq!(
        own_invite(&s, &path, Some(&third)).unwrap().fingerprint,
        None
    );

    // What cannot make a link.
    let (_d, p, s) = saved("", "h", "");
    assert_eq!(own_invite(&s, &p, None), Err(OwnInviteError::NoName));
    let (_d, p, s) = saved("alice", "", "");
    assert_eq!(own_invite(&s, &p, None), Err(OwnInviteError::NoServer));
    let err = own_invite(&s, &p, None).unwrap_err().to_string();
    assert!(err.contains("--server"), "{err}");
    assert!(own_invite(&s, &p, Some(&third)).is_ok(), "--server helps");
    std::fs::write(dir.path().join("known-servers.txt"), "garbage\n").unwrap();
    let err = own_invite(&s3, &path, None).unwrap_err().to_string();
    assert!(err.contains("known-servers.txt line 1"), "{err}");
}

#[test]
fn accepting_a_link_sets_the_server_and_its_pin_only() {
    let pin = format!("sha256:{}", "01".repeat(32));
    let (_d, _p, s) = saved("bob", "rendezvous.example.org", &pin);
    let same = |fingerprint| {
        Invite::new(
            "alice".into(),
            server("rendezvous.example.org:3478"),
            fingerprint,
        )
    };

    // Same server, no fingerprint: nothing changes (the pin stays, the text too).
    assert_eq!(apply(&s, &same(None)), s);
    // Same server with one: it is pinned.
    assert_eq!(
        apply(&s, &same(Some(fp()))).server_fingerprint,
        fp().to_string()
    );
    // Another server: its pin, or none (the old pin was the old server's).
    let other = Invite::new("alice".into(), server("[2001:db8::1]:4000"), None);
    let next = apply(&s, &other);
    assert_eq!(next.server, "[2001:db8::1]:4000");
    assert_eq!(next.server_fingerprint, "");
    assert_eq!(
        (next.name.as_str(), next.advanced.clone()),
        ("bob", s.advanced.clone())
    );
    assert!(next.validate().is_ok());
    // From the built-in server.
    let (_d, _p, builtin) = saved("bob", "", "");
    let next = apply(
        &builtin,
        &Invite {
            fingerprint: Some(fp()),
            ..other
        },
    );
    assert_eq!(next.server_fingerprint, fp().to_string());
}

mod round_trip {
    //! format -> parse gives back the same invite, for names in any script, every kind of host,
    //! any port, with or without a fingerprint.

    use proptest::prelude::*;

    use super::*;

    fn name() -> impl Strategy<Value = String> {
        // Letters in several scripts (of one to four UTF-8 bytes), digits and the three marks.
        proptest::string::string_regex("[a-zA-Z0-9._\\-éßøЖжλ中文ﬁ𝔸]{1,32}")
            .unwrap()
            .prop_filter("a name anybody can register", |n| {
                settings::validate_name(n).is_ok()
            })
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
            // Zero groups are likely, so that `::` comes in every position.
            proptest::array::uniform8(prop_oneof![Just(0u16), any::<u16>()])
                .prop_map(|g| std::net::Ipv6Addr::from(g).to_string()),
            proptest::string::string_regex(
                "[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}"
            )
            .unwrap(),
        ]
    }

    fn port() -> impl Strategy<Value = u16> {
        prop_oneof![Just(DEFAULT_SERVER_PORT), 1u16..]
    }

    proptest! {
        #[test]
        fn format_then_parse_is_the_same_invite(
            name in name(),
            host in host(),
            port in port(),
            fp in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let fingerprint = fp.map(|bytes| {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}").parse::<Fingerprint>().unwrap()
            });
            let invite = Invite::new(name, ServerAddr { host, port }, fingerprint);
            let link = invite.to_string();
            prop_assert!(link.is_ascii(), "{}", link);
            prop_assert_eq!(link.parse::<Invite>(), Ok(invite), "{}", link);
        }
    }
}
