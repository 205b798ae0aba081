//! Unit tests of [`super::Punch`].

// A test's virtual clock starts at any instant; none is read again.
#![allow(clippy::disallowed_methods)]

use super::*;

/// A configuration without openers: the timings these tests check came before them (the
/// openers have their own tests below).
fn plain(secret: Vec<u8>, call_id: u64, candidates: Vec<SocketAddr>, seed: u64) -> PunchConfig {
    PunchConfig {
        opener_ttls: Vec::new(),
        ..PunchConfig::new(secret, call_id, candidates, seed)
    }
}

/// The next datagram, without its TTL.
fn tx(p: &mut Punch) -> Option<(SocketAddr, Vec<u8>)> {
    p.poll_transmit().map(|t| {
        assert_eq!(t.ttl, None, "an opener where none was configured");
        (t.destination, t.contents)
    })
}

/// Both sides of call 7, at `a` and `b`, and the first check `a` sent to `b`.
fn pair(now: Instant) -> (Punch, Punch, SocketAddr, SocketAddr, Vec<u8>) {
    let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let mut pa = Punch::new(plain(b"s".to_vec(), 7, vec![b], 1), now);
    let pb = Punch::new(plain(b"s".to_vec(), 7, vec![a], 2), now);
    pa.handle_timeout(now);
    let (to, check) = tx(&mut pa).unwrap();
    assert_eq!(to, b);
    (pa, pb, a, b, check)
}

#[test]
fn check_and_answer_select_the_path() {
    let now = Instant::now();
    let (mut pa, mut pb, a, b, check) = pair(now);
    assert!(check.len() >= CHECK_LEN);
    assert!(is_punch_message(&check));
    assert!(!is_punch_message(&stun::encode_binding_request(&[1; 12])));
    assert!(pb.handle_datagram(now, a, &check));
    let (to, answer) = tx(&mut pb).unwrap();
    assert_eq!(to, a);
    assert!(answer.len() <= check.len());
    // And the triggered check back.
    let (to, _) = tx(&mut pb).unwrap();
    assert_eq!(to, a);
    assert!(pa.handle_datagram(now, b, &answer));
    assert_eq!(pa.path(), Path::Direct(b));
    assert_eq!(pa.poll_event(), Some(PunchEvent::DirectPath(b)));
    assert_eq!(pa.reflexive_address(), Some(a));
    assert!(pa.is_peer_address(b));
    // The same answer again matches nothing any more.
    assert!(pa.handle_datagram(now, b, &answer));
    assert_eq!(pa.stats().rejected_unmatched, 1);
    assert_eq!(pa.stats().path_changes, 1);
}

#[test]
fn answer_from_another_address_does_not_count() {
    let now = Instant::now();
    let (mut pa, mut pb, a, _, check) = pair(now);
    pb.handle_datagram(now, a, &check);
    let (_, answer) = tx(&mut pb).unwrap();
    let elsewhere: SocketAddr = "203.0.113.9:5000".parse().unwrap();
    assert!(pa.handle_datagram(now, elsewhere, &answer));
    assert_eq!(pa.path(), Path::Relay);
    assert_eq!(pa.stats().rejected_unmatched, 1);
}

#[test]
fn own_check_is_not_the_peer() {
    let now = Instant::now();
    let me: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let mut p = Punch::new(plain(b"s".to_vec(), 7, vec![me], 1), now);
    p.handle_timeout(now);
    let (to, check) = tx(&mut p).unwrap();
    assert!(p.handle_datagram(now, to, &check));
    assert_eq!(tx(&mut p), None);
    assert_eq!(p.stats().rejected_own, 1);
}

#[test]
fn candidates_are_bounded_and_filtered() {
    let now = Instant::now();
    let many = (0..40)
        .map(|i| SocketAddr::from(([192, 0, 2, 1], 1000 + i)))
        .collect();
    let mut p = Punch::new(plain(b"s".to_vec(), 7, many, 1), now);
    assert_eq!(p.remote_candidates().count(), MAX_CANDIDATES);
    assert!(!p.add_remote_candidate("0.0.0.0:1".parse().unwrap()));
    assert!(!p.add_remote_candidate("192.0.2.1:1000".parse().unwrap()));
    let mut q = Punch::new(plain(b"s".to_vec(), 7, vec![], 1), now);
    assert!(!q.add_remote_candidate("224.0.0.1:5".parse().unwrap()));
    assert!(!q.add_remote_candidate("255.255.255.255:5".parse().unwrap()));
    assert!(!q.add_remote_candidate("192.0.2.1:0".parse().unwrap()));
    assert!(q.add_remote_candidate("[::ffff:192.0.2.1]:7".parse().unwrap()));
    assert_eq!(
        q.remote_candidates().collect::<Vec<_>>(),
        ["192.0.2.1:7".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(q.poll_timeout(), Some(now));
    assert!(!q.add_remote_candidate("0.1.2.3:5".parse().unwrap()));
    assert!(!q.add_remote_candidate("240.0.0.1:5".parse().unwrap()));
    // Paced: one check per timeout, every candidate in turn.
    let mut sent = Vec::new();
    let mut t = now;
    for _ in 0..MAX_CANDIDATES {
        assert!(p.poll_timeout().unwrap() <= t);
        p.handle_timeout(t);
        let (to, _) = tx(&mut p).unwrap();
        assert_eq!(tx(&mut p), None);
        sent.push(to);
        t += Duration::from_millis(20);
    }
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), MAX_CANDIDATES);
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// Each rule of `filter_candidates`: candidate, our addresses ("home": a LAN address and
/// a public one), kept or not.
#[test]
fn candidates_are_filtered_by_our_own_addresses() {
    let table = "
        8.8.8.8:5000                home                    kept
        [2a00:1450::1]:5000         home                    kept
        0.0.0.0:5000                home                    dropped
        [::]:5000                   home                    dropped
        224.0.0.1:5000              home                    dropped
        [ff02::1]:5000              home                    dropped
        255.255.255.255:5000        home                    dropped
        0.1.2.3:5000                home                    dropped
        240.0.0.1:5000              home                    dropped
        8.8.8.8:0                   home                    dropped
        127.0.0.1:5000              home                    dropped
        [::1]:5000                  home                    dropped
        127.0.0.1:5000              127.0.0.1               kept
        169.254.7.7:5000            home                    dropped
        169.254.7.7:5000            169.254.1.1             kept
        [fe80::7]:5000              home                    dropped
        [fe80::7]:5000              fe80::1                 kept
        192.168.1.30:5000           home                    kept
        [::ffff:192.168.1.30]:5000  home                    kept
        192.168.2.30:5000           home                    dropped
        10.0.0.1:5000               home                    dropped
        172.16.0.1:5000             home                    dropped
        10.0.0.9:5000               10.0.0.1                kept
        100.64.0.9:5000             home                    dropped
        100.64.0.9:5000             100.64.0.1              kept
        [fd00:1:2::9]:5000          home                    dropped
        [fd00:1:2:3::9]:5000        fd00:1:2::1             kept
        [fd00:1:3::9]:5000          fd00:1:2::1             dropped
        192.0.2.1:5000              home                    dropped
        198.51.100.1:5000           home                    dropped
        203.0.113.1:5000            home                    dropped
        198.18.0.1:5000             home                    dropped
        [2001:db8::1]:5000          home                    dropped
        203.0.113.1:5000            10.1.0.2,203.0.113.6    kept
        [2001:4860::9]:5000         home                    kept
        [2001:4860::9]:5000         192.168.1.20            dropped
        8.8.8.8:5000                2001:4860::5            dropped";
    for row in table.lines().filter(|l| !l.trim().is_empty()) {
        let [candidate, ours, kept] = row.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("{row}");
        };
        let ours = match ours {
            "home" => ips(&["192.168.1.20", "2001:4860::5"]),
            list => ips(&list.split(',').collect::<Vec<_>>()),
        };
        let out = Punch::filter_candidates(&addrs(&[candidate]), &ours);
        assert_eq!(out.len() == 1, kept == "kept", "{row}: {out:?}");
    }
    // IPv4-mapped candidates come out as IPv4.
    assert_eq!(
        Punch::filter_candidates(&addrs(&["[::ffff:8.8.8.8]:1"]), &[]),
        addrs(&["8.8.8.8:1"])
    );
}

#[test]
fn at_most_eight_candidates_are_kept_in_order_without_duplicates() {
    let mut list: Vec<SocketAddr> = (0..40)
        .map(|i| SocketAddr::from(([8, 8, 8, 8], 1000 + i)))
        .collect();
    list.insert(1, list[0]);
    let out = Punch::filter_candidates(&list, &ips(&["192.168.1.20"]));
    assert_eq!(out.len(), MAX_CANDIDATES);
    assert_eq!(out[0], list[0]);
    assert_eq!(out[1..], list[2..=MAX_CANDIDATES][..], "{out:?}");
}

/// Every check of the call, `step` apart from `from`: a punch whose peer never answers.
fn silent_peer(candidates: usize, until: Duration) -> (Punch, Vec<(Duration, SocketAddr)>) {
    let start = Instant::now();
    let list = (0..candidates)
        .map(|i| SocketAddr::from(([8, 8, 8, 8], 1000 + u16::try_from(i).unwrap())))
        .collect();
    let mut p = Punch::new(plain(b"s".to_vec(), 7, list, 1), start);
    let mut sent = Vec::new();
    while let Some(t) = p.poll_timeout() {
        if t - start > until {
            break;
        }
        p.handle_timeout(t);
        while let Some((to, _)) = tx(&mut p) {
            sent.push((t - start, to));
        }
    }
    (p, sent)
}

#[test]
fn checks_are_paced() {
    let (p, sent) = silent_peer(MAX_CANDIDATES, Duration::from_secs(2));
    for pair in sent.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(20),
            "{pair:?}"
        );
    }
    // 2 s at one check per 20 ms at most.
    assert!((95..=101).contains(&sent.len()), "{}", sent.len());
    assert_eq!(p.stats().probes_sent, sent.len() as u64);
}

#[test]
fn checks_to_silent_candidates_are_bounded_in_number_and_time() {
    // Many candidates: the budget ends it.
    let (p, sent) = silent_peer(MAX_CANDIDATES, Duration::from_secs(600));
    assert_eq!(sent.len(), 100);
    assert!(sent.last().unwrap().0 < Duration::from_secs(30));
    assert_eq!(p.stats().candidates_retired, MAX_CANDIDATES as u64);
    assert_eq!(p.poll_timeout(), None);
    // One candidate: the window ends it (2 s at 50 ms, then one a second).
    let (p, sent) = silent_peer(1, Duration::from_secs(600));
    assert!(sent.len() < 80, "{}", sent.len());
    assert!(sent.last().unwrap().0 < Duration::from_secs(30));
    assert_eq!(p.stats().candidates_retired, 1);
}

#[test]
fn peer_reflexive_candidates_are_bounded_too() {
    let now = Instant::now();
    let mut p = Punch::new(plain(b"s".to_vec(), 7, vec![], 1), now);
    let mut q = Punch::new(plain(b"s".to_vec(), 7, vec![], 2), now);
    q.add_remote_candidate("8.8.8.8:1".parse().unwrap());
    q.handle_timeout(now);
    let (_, check) = tx(&mut q).unwrap();
    for port in 0..40u16 {
        p.handle_datagram(now, SocketAddr::from(([8, 8, 4, 4], 2000 + port)), &check);
    }
    assert_eq!(p.remote_candidates().count(), MAX_PEER_REFLEXIVE);
    // Their checks are paced like the others: one triggered check, the rest later.
    let checks = std::iter::from_fn(|| tx(&mut p))
        .filter(|(_, b)| Message::decode(b).is_ok_and(|m| m.kind == BINDING_REQUEST))
        .count();
    assert_eq!(checks, 1);
    assert_eq!(p.stats().responses_sent, 40);
}

#[test]
fn transactions_are_bounded() {
    let now = Instant::now();
    let mut p = Punch::new(
        plain(b"s".to_vec(), 7, vec!["192.0.2.1:1".parse().unwrap()], 1),
        now,
    );
    for i in 0..(MAX_TRANSACTIONS as u64 * 2) {
        p.send_check(
            now + Duration::from_micros(i),
            Local::Media,
            "192.0.2.1:1".parse().unwrap(),
            None,
        );
        p.transmits.clear();
    }
    assert_eq!(p.transactions.len(), MAX_TRANSACTIONS);
}

#[test]
fn ipv6_scope_and_mapped_v4_match_their_candidates() {
    let now = Instant::now();
    let a: SocketAddr = "[fe80::1]:4000".parse().unwrap();
    let b: SocketAddr = "[fe80::2]:5000".parse().unwrap();
    let mut pa = Punch::new(plain(b"s".to_vec(), 7, vec![b], 1), now);
    let mut pb = Punch::new(plain(b"s".to_vec(), 7, vec![a], 2), now);
    pa.handle_timeout(now);
    let (_, check) = tx(&mut pa).unwrap();
    let scoped = |addr: SocketAddr| match addr {
        SocketAddr::V6(v6) => {
            SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), v6.port(), 0, 3))
        }
        v4 => v4,
    };
    assert!(pb.handle_datagram(now, scoped(a), &check));
    let (_, answer) = tx(&mut pb).unwrap();
    assert!(pa.handle_datagram(now, scoped(b), &answer));
    assert_eq!(pa.path(), Path::Direct(scoped(b)));
    assert!(pa.is_peer_address(b));
    // IPv4-mapped IPv6 sources (a dual-stack socket) match IPv4 candidates.
    let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let mut pc = Punch::new(plain(b"s".to_vec(), 7, vec![v4], 1), now);
    let mut pd = Punch::new(plain(b"s".to_vec(), 7, vec![], 2), now);
    pc.handle_timeout(now);
    let (_, check) = tx(&mut pc).unwrap();
    let me: SocketAddr = "192.0.2.9:9".parse().unwrap();
    pd.handle_datagram(now, me, &check);
    let (_, answer) = tx(&mut pd).unwrap();
    assert!(pc.handle_datagram(now, "[::ffff:192.0.2.1]:4000".parse().unwrap(), &answer));
    assert_eq!(pc.path(), Path::Direct(v4));
}

#[test]
fn debug_hides_the_secret() {
    let config = plain(b"topsecret".to_vec(), 7, vec![], 1);
    assert!(!format!("{config:?}").contains("topsecret"));
    let punch = Punch::new(config, Instant::now());
    let debug = format!("{punch:?}");
    assert!(
        !debug.contains("topsecret") && !debug.contains("116, 111, 112"),
        "{debug}"
    );
}

#[test]
fn a_hang_up_on_the_direct_path_ends_the_call_on_the_other_side() {
    let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let now = Instant::now();
    let secret = b"0123456789abcdef".to_vec();
    let mut alice = Punch::new(plain(secret.clone(), 7, vec![b], 1), now);
    let mut bob = Punch::new(plain(secret, 7, vec![a], 2), now);
    for _ in 0..3 {
        alice.handle_timeout(now);
        bob.handle_timeout(now);
        while let Some((_, bytes)) = tx(&mut alice) {
            bob.handle_datagram(now, a, &bytes);
        }
        while let Some((_, bytes)) = tx(&mut bob) {
            alice.handle_datagram(now, b, &bytes);
        }
    }
    assert_eq!(alice.path(), Path::Direct(b));
    while alice.poll_event().is_some() {}
    while bob.poll_event().is_some() {}
    // A forged hang-up (wrong key) changes nothing.
    let mut eve = Punch::new(plain(b"fedcba9876543210".to_vec(), 7, vec![b], 3), now);
    eve.direct = Some(Direct {
        local: Local::Media,
        addr: b,
        last_success: now,
        next_consent: now,
    });
    eve.peer_addrs.push_back(b);
    eve.hang_up();
    while let Some((_, bytes)) = tx(&mut eve) {
        assert!(bob.handle_datagram(now, a, &bytes));
    }
    assert_eq!(bob.poll_event(), None);
    assert_eq!(bob.path(), Path::Direct(a));

    alice.hang_up();
    assert!(alice.is_closed());
    let byes: Vec<_> = std::iter::from_fn(|| tx(&mut alice)).collect();
    assert_eq!(byes.len(), BYE_COPIES);
    for (to, bytes) in byes {
        assert_eq!(to, b);
        assert!(bob.handle_datagram(now, a, &bytes));
    }
    assert_eq!(bob.poll_event(), Some(PunchEvent::PeerHungUp));
    assert!(bob.is_closed());
}

#[test]
fn openers_go_first_with_low_ttls_and_checks_follow_after_the_lead() {
    let start = Instant::now();
    let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let c: SocketAddr = "203.0.113.7:6000".parse().unwrap();
    let config = PunchConfig::new(b"s".to_vec(), 7, vec![b, c], 1);
    let lead = config.opener_lead;
    let mut p = Punch::new(config, start);
    p.handle_timeout(start);
    let sent: Vec<(SocketAddr, Option<u8>)> = std::iter::from_fn(|| p.poll_transmit())
        .map(|t| (t.destination, t.ttl))
        .collect();
    assert_eq!(
        sent,
        [(b, Some(2)), (b, Some(3)), (c, Some(2)), (c, Some(3))],
        "two openers per candidate, at once, nothing else"
    );
    assert_eq!(p.stats().openers_sent, 4);
    // Nothing with the normal TTL before the lead.
    assert_eq!(p.poll_timeout(), Some(start + lead));
    p.handle_timeout(start + lead - Duration::from_millis(1));
    assert!(p.poll_transmit().is_none());
    // Then the normal checks, paced, never an opener again.
    let mut now = start + lead;
    let mut normal = Vec::new();
    while now < start + Duration::from_secs(3) {
        p.handle_timeout(now);
        while let Some(t) = p.poll_transmit() {
            assert_eq!(t.ttl, None, "an opener after the first round");
            normal.push(t.destination);
        }
        now += Duration::from_millis(10);
    }
    assert!(normal.contains(&b) && normal.contains(&c), "{normal:?}");
    assert_eq!(p.stats().openers_sent, 4);
}

#[test]
fn an_opener_answered_on_a_shared_lan_selects_the_path_at_once() {
    // Two hosts on one LAN: the opener's TTL is enough to reach the peer, whose answer counts.
    let now = Instant::now();
    let a: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let mut pa = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![b], 1), now);
    let mut pb = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![a], 2), now);
    pa.handle_timeout(now);
    let opener = pa.poll_transmit().unwrap();
    assert_eq!(opener.ttl, Some(2));
    assert!(pb.handle_datagram(now, a, &opener.contents));
    let answer = pb.poll_transmit().unwrap();
    assert_eq!(answer.ttl, None, "answers use the normal TTL");
    assert!(pa.handle_datagram(now, b, &answer.contents));
    assert_eq!(pa.path(), Path::Direct(b));
}

#[test]
fn candidates_learnt_late_get_openers_and_peer_reflexive_ones_none() {
    let start = Instant::now();
    let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 1), start);
    p.handle_timeout(start);
    assert!(p.poll_transmit().is_none());
    let late: SocketAddr = "198.51.100.9:7000".parse().unwrap();
    let now = start + Duration::from_secs(1);
    assert!(p.add_remote_candidate(late));
    p.handle_timeout(now);
    let ttls: Vec<Option<u8>> = std::iter::from_fn(|| p.poll_transmit())
        .map(|t| t.ttl)
        .collect();
    // Past the lead: the openers, then the first normal check (the pace allows it later).
    assert_eq!(ttls[..2], [Some(2), Some(3)]);
    // A check from a new address (peer-reflexive) is answered and checked back at the
    // normal TTL: it already came through both routers.
    let mut q = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 2), start);
    let prflx: SocketAddr = "203.0.113.50:9000".parse().unwrap();
    let mut r = Punch::new(
        PunchConfig {
            opener_ttls: Vec::new(),
            ..PunchConfig::new(b"s".to_vec(), 7, vec!["192.0.2.1:1".parse().unwrap()], 3)
        },
        start,
    );
    r.handle_timeout(start);
    let check = r.poll_transmit().unwrap();
    assert!(q.handle_datagram(now, prflx, &check.contents));
    let out: Vec<Option<u8>> = std::iter::from_fn(|| q.poll_transmit())
        .map(|t| t.ttl)
        .collect();
    assert_eq!(out, [None, None], "answer and triggered check: {out:?}");
    q.handle_timeout(now + Duration::from_secs(1));
    assert!(std::iter::from_fn(|| q.poll_transmit()).all(|t| t.ttl.is_none()));
    assert_eq!(q.stats().openers_sent, 0);
}

#[test]
fn an_ipv6_pair_is_preferred_to_an_ipv4_one_found_first() {
    let start = Instant::now();
    let (a4, a6): (SocketAddr, SocketAddr) = (
        "192.0.2.1:4000".parse().unwrap(),
        "[2001:db8:3:1::2]:4000".parse().unwrap(),
    );
    let (b4, b6): (SocketAddr, SocketAddr) = (
        "198.51.100.2:5000".parse().unwrap(),
        "[2001:db8:3:2::2]:5000".parse().unwrap(),
    );
    let mut alice = Punch::new(plain(b"s".to_vec(), 7, vec![b4, b6], 1), start);
    let mut bob = Punch::new(plain(b"s".to_vec(), 7, vec![a4, a6], 2), start);
    // The IPv6 path comes up a second late (a firewall rule, a slow router): until then its
    // datagrams are lost.
    let mut now = start;
    let mut paths = Vec::new();
    while now < start + Duration::from_secs(3) {
        alice.handle_timeout(now);
        bob.handle_timeout(now);
        let v6_up = now >= start + Duration::from_secs(1);
        loop {
            let mut moved = false;
            while let Some(t) = alice.poll_transmit() {
                let from = if t.destination.is_ipv6() { a6 } else { a4 };
                if from.is_ipv4() || v6_up {
                    moved |= bob.handle_datagram(now, from, &t.contents);
                }
            }
            while let Some(t) = bob.poll_transmit() {
                let from = if t.destination.is_ipv6() { b6 } else { b4 };
                if from.is_ipv4() || v6_up {
                    moved |= alice.handle_datagram(now, from, &t.contents);
                }
            }
            if !moved {
                break;
            }
        }
        while let Some(e) = alice.poll_event() {
            paths.push((now - start, e));
        }
        now += Duration::from_millis(10);
    }
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert_eq!(paths[0].1, PunchEvent::DirectPath(b4), "{paths:?}");
    assert!(paths[0].0 < Duration::from_millis(100), "{paths:?}");
    assert_eq!(paths[1].1, PunchEvent::DirectPath(b6), "{paths:?}");
    assert!(paths[1].0 < Duration::from_millis(2100), "{paths:?}");
    assert_eq!(alice.path(), Path::Direct(b6));
    // And it stays there: no move back to IPv4 while IPv6 answers.
    assert_eq!(alice.stats().path_changes, 2);
    assert_eq!(bob.path(), Path::Direct(a6));
}

/// The port-keeping side's birthday probes: none while the normal checks may still find a
/// path, then to random ports (1024-65535) of the peer's address only, at most 400 a second
/// however late the timeouts come, and never more than the budget.
#[test]
fn birthday_probes_are_paced_aimed_and_bounded() {
    let start = Instant::now();
    let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let mut config = plain(b"s".to_vec(), 7, vec![b], 1);
    config.birthday = Some(Birthday::Spray { peer: b.ip() });
    let mut p = Punch::new(config, start);
    let mut sent: Vec<(Duration, SocketAddr)> = Vec::new();
    let mut now = start;
    // Timeouts every 1 ms for 2 s, then every 50 ms (a slow thread) until the end.
    while now < start + Duration::from_secs(8) {
        p.handle_timeout(now);
        while let Some(t) = p.poll_transmit() {
            assert_eq!(t.local, Local::Media);
            if t.destination != b {
                sent.push((now - start, t.destination));
            }
        }
        let step = if now < start + Duration::from_secs(2) {
            1
        } else {
            50
        };
        now += Duration::from_millis(step);
    }
    assert_eq!(sent.len(), 2048);
    assert_eq!(p.stats().spray_sent, 2048);
    // Not counted against the normal checks' probe budget.
    assert!(p.stats().probes_sent <= 100);
    assert!(
        sent.iter()
            .all(|(_, to)| to.ip() == b.ip() && to.port() >= 1024)
    );
    let first = sent[0].0;
    assert!(first >= Duration::from_millis(400), "{first:?}");
    // 400 a second at most, in any second.
    for (i, (t, _)) in sent.iter().enumerate() {
        let in_a_second = sent[i..]
            .iter()
            .take_while(|(u, _)| *u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_a_second <= 400 + 16,
            "{in_a_second} probes in the second from {t:?}"
        );
    }
    // Distinct enough to be random: few repeats among 2,048 of 64,512 ports.
    let mut ports: Vec<u16> = sent.iter().map(|(_, to)| to.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(ports.len() > 1950, "{} distinct ports", ports.len());
}

/// A direct path found by the normal checks before birthday probing was due: no spares, no
/// probes.
#[test]
fn birthday_probing_waits_for_the_normal_checks() {
    let now = Instant::now();
    let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let mut config = plain(b"s".to_vec(), 7, vec![b], 1);
    config.birthday = Some(Birthday::Spares { peer: b });
    let mut pa = Punch::new(config, now);
    let mut pb = Punch::new(plain(b"s".to_vec(), 7, vec![a], 2), now);
    // The first check is answered at once: direct before birthday probing is due (250 ms).
    pa.handle_timeout(now);
    let (to, check) = tx(&mut pa).unwrap();
    assert_eq!(to, b);
    assert!(pb.handle_datagram(now, a, &check));
    while let Some((to, bytes)) = tx(&mut pb) {
        if to == a {
            pa.handle_datagram(now, b, &bytes);
        }
    }
    assert_eq!(pa.path(), Path::Direct(b));
    pa.handle_timeout(now + Duration::from_secs(1));
    let events: Vec<PunchEvent> = std::iter::from_fn(|| pa.poll_event()).collect();
    assert_eq!(events, vec![PunchEvent::DirectPath(b)]);
    assert_eq!(pa.stats().spares_opened, 0);
}
