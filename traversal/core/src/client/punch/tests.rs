//! Unit tests of [`super::Punch`].

// A test's virtual clock starts at any instant; none is read again.
#![allow(clippy::disallowed_methods)]

use super::*;

/// Both sides of call 7, at `a` and `b`, and the first check `a` sent to `b`.
fn pair(now: Instant) -> (Punch, Punch, SocketAddr, SocketAddr, Vec<u8>) {
    let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let mut pa = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![b], 1), now);
    let pb = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![a], 2), now);
    pa.handle_timeout(now);
    let (to, check) = pa.poll_transmit().unwrap();
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
    let (to, answer) = pb.poll_transmit().unwrap();
    assert_eq!(to, a);
    assert!(answer.len() <= check.len());
    // And the triggered check back.
    let (to, _) = pb.poll_transmit().unwrap();
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
    let (_, answer) = pb.poll_transmit().unwrap();
    let elsewhere: SocketAddr = "203.0.113.9:5000".parse().unwrap();
    assert!(pa.handle_datagram(now, elsewhere, &answer));
    assert_eq!(pa.path(), Path::Relay);
    assert_eq!(pa.stats().rejected_unmatched, 1);
}

#[test]
fn own_check_is_not_the_peer() {
    let now = Instant::now();
    let me: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![me], 1), now);
    p.handle_timeout(now);
    let (to, check) = p.poll_transmit().unwrap();
    assert!(p.handle_datagram(now, to, &check));
    assert_eq!(p.poll_transmit(), None);
    assert_eq!(p.stats().rejected_own, 1);
}

#[test]
fn candidates_are_bounded_and_filtered() {
    let now = Instant::now();
    let many = (0..40)
        .map(|i| SocketAddr::from(([192, 0, 2, 1], 1000 + i)))
        .collect();
    let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, many, 1), now);
    assert_eq!(p.remote_candidates().count(), MAX_CANDIDATES);
    assert!(!p.add_remote_candidate("0.0.0.0:1".parse().unwrap()));
    assert!(!p.add_remote_candidate("192.0.2.1:1000".parse().unwrap()));
    let mut q = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 1), now);
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
        let (to, _) = p.poll_transmit().unwrap();
        assert_eq!(p.poll_transmit(), None);
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
        203.0.113.1:5000            10.1.0.2,203.0.113.6    kept";
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
    let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, list, 1), start);
    let mut sent = Vec::new();
    while let Some(t) = p.poll_timeout() {
        if t - start > until {
            break;
        }
        p.handle_timeout(t);
        while let Some((to, _)) = p.poll_transmit() {
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
    assert_eq!(sent.len(), 200);
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
    let mut p = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 1), now);
    let mut q = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 2), now);
    q.add_remote_candidate("8.8.8.8:1".parse().unwrap());
    q.handle_timeout(now);
    let (_, check) = q.poll_transmit().unwrap();
    for port in 0..40u16 {
        p.handle_datagram(now, SocketAddr::from(([8, 8, 4, 4], 2000 + port)), &check);
    }
    assert_eq!(p.remote_candidates().count(), MAX_PEER_REFLEXIVE);
    // Their checks are paced like the others: one triggered check, the rest later.
    let checks = std::iter::from_fn(|| p.poll_transmit())
        .filter(|(_, b)| Message::decode(b).is_ok_and(|m| m.kind == BINDING_REQUEST))
        .count();
    assert_eq!(checks, 1);
    assert_eq!(p.stats().responses_sent, 40);
}

#[test]
fn transactions_are_bounded() {
    let now = Instant::now();
    let mut p = Punch::new(
        PunchConfig::new(b"s".to_vec(), 7, vec!["192.0.2.1:1".parse().unwrap()], 1),
        now,
    );
    for i in 0..(MAX_TRANSACTIONS as u64 * 2) {
        p.send_check(
            now + Duration::from_micros(i),
            "192.0.2.1:1".parse().unwrap(),
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
    let mut pa = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![b], 1), now);
    let mut pb = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![a], 2), now);
    pa.handle_timeout(now);
    let (_, check) = pa.poll_transmit().unwrap();
    let scoped = |addr: SocketAddr| match addr {
        SocketAddr::V6(v6) => {
            SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), v6.port(), 0, 3))
        }
        v4 => v4,
    };
    assert!(pb.handle_datagram(now, scoped(a), &check));
    let (_, answer) = pb.poll_transmit().unwrap();
    assert!(pa.handle_datagram(now, scoped(b), &answer));
    assert_eq!(pa.path(), Path::Direct(scoped(b)));
    assert!(pa.is_peer_address(b));
    // IPv4-mapped IPv6 sources (a dual-stack socket) match IPv4 candidates.
    let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let mut pc = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![v4], 1), now);
    let mut pd = Punch::new(PunchConfig::new(b"s".to_vec(), 7, vec![], 2), now);
    pc.handle_timeout(now);
    let (_, check) = pc.poll_transmit().unwrap();
    let me: SocketAddr = "192.0.2.9:9".parse().unwrap();
    pd.handle_datagram(now, me, &check);
    let (_, answer) = pd.poll_transmit().unwrap();
    assert!(pc.handle_datagram(now, "[::ffff:192.0.2.1]:4000".parse().unwrap(), &answer));
    assert_eq!(pc.path(), Path::Direct(v4));
}

#[test]
fn debug_hides_the_secret() {
    let config = PunchConfig::new(b"topsecret".to_vec(), 7, vec![], 1);
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
    let mut alice = Punch::new(PunchConfig::new(secret.clone(), 7, vec![b], 1), now);
    let mut bob = Punch::new(PunchConfig::new(secret, 7, vec![a], 2), now);
    for _ in 0..3 {
        alice.handle_timeout(now);
        bob.handle_timeout(now);
        while let Some((_, bytes)) = alice.poll_transmit() {
            bob.handle_datagram(now, a, &bytes);
        }
        while let Some((_, bytes)) = bob.poll_transmit() {
            alice.handle_datagram(now, b, &bytes);
        }
    }
    assert_eq!(alice.path(), Path::Direct(b));
    while alice.poll_event().is_some() {}
    while bob.poll_event().is_some() {}
    // A forged hang-up (wrong key) changes nothing.
    let mut eve = Punch::new(
        PunchConfig::new(b"fedcba9876543210".to_vec(), 7, vec![b], 3),
        now,
    );
    eve.direct = Some(Direct {
        addr: b,
        last_success: now,
        next_consent: now,
    });
    eve.peer_addrs.push_back(b);
    eve.hang_up();
    while let Some((_, bytes)) = eve.poll_transmit() {
        assert!(bob.handle_datagram(now, a, &bytes));
    }
    assert_eq!(bob.poll_event(), None);
    assert_eq!(bob.path(), Path::Direct(a));

    alice.hang_up();
    assert!(alice.is_closed());
    let byes: Vec<_> = std::iter::from_fn(|| alice.poll_transmit()).collect();
    assert_eq!(byes.len(), BYE_COPIES);
    for (to, bytes) in byes {
        assert_eq!(to, b);
        assert!(bob.handle_datagram(now, a, &bytes));
    }
    assert_eq!(bob.poll_event(), Some(PunchEvent::PeerHungUp));
    assert!(bob.is_closed());
}
