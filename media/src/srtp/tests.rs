#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    clean
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn array<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().unwrap()
}

/// RFC 7714 sections 16 and 17: the vectors give session keys and salts directly.
fn rfc7714() -> Srtp {
    let keys = || {
        SessionKeys::from_session(
            array("000102030405060708090a0b0c0d0e0f"),
            array("517569642070726f2071756f"),
            array("000102030405060708090a0b0c0d0e0f"),
            array("517569642070726f2071756f"),
        )
    };
    Srtp::with_session_keys(keys(), keys())
}

const RFC_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                       20646976 69736120 696e2070 61727465 73207472 6573";
const RFC_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                        be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                        6a9152cf 765ee439 0cce";
const RFC_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
const RFC_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                         6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                         96cf4d2f c5abf872 45d9eade 800005d4";

#[test]
fn rfc_7714_srtp_vector_encrypts_and_decrypts() {
    let mut srtp = rfc7714();
    let mut out = Vec::new();
    srtp.protect(&hex(RFC_RTP), &mut out).unwrap();
    assert_eq!(out, hex(RFC_SRTP));
    let mut clear = Vec::new();
    srtp.unprotect(&hex(RFC_SRTP), &mut clear).unwrap();
    assert_eq!(clear, hex(RFC_RTP));
}

#[test]
fn rfc_7714_srtcp_vector_encrypts_and_decrypts() {
    let mut srtp = rfc7714();
    srtp.tx_rtcp_index = 0x5d4;
    let mut out = Vec::new();
    srtp.protect(&hex(RFC_RTCP), &mut out).unwrap();
    assert_eq!(out, hex(RFC_SRTCP));
    assert_eq!(srtp.tx_rtcp_index, 0x5d5, "the index counts up");
    let mut clear = Vec::new();
    srtp.unprotect(&hex(RFC_SRTCP), &mut clear).unwrap();
    assert_eq!(clear, hex(RFC_RTCP));
}

#[test]
fn rfc_3711_key_derivation_vector() {
    // RFC 3711 appendix B.3 (14-octet salt).
    let key = array("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut cipher_key = [0u8; 16];
    kdf(&key, &salt, Label::SrtpKey as u8, &mut cipher_key);
    assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut auth_key = [0u8; 20];
    kdf(&key, &salt, 0x01, &mut auth_key);
    assert_eq!(
        auth_key.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
    let mut cipher_salt = [0u8; 14];
    kdf(&key, &salt, Label::SrtpSalt as u8, &mut cipher_salt);
    assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
}

#[test]
fn twelve_octet_salts_derive_as_libsrtp_does() {
    // Master key 00..0f, salt 40..4b; the expected values come from AES-ECB in Python's
    // `cryptography` over the libsrtp layout (salt left-aligned, label at octet 7), and the
    // SRTP salt matches webrtc-srtp's.
    let key = array("000102030405060708090a0b0c0d0e0f");
    let salt = hex("404142434445464748494a4b");
    let mut out12 = [0u8; 12];
    let mut out16 = [0u8; 16];
    kdf(&key, &salt, Label::SrtpSalt as u8, &mut out12);
    assert_eq!(out12.to_vec(), hex("1fcd5d561e66dc49ec1c3ccb"));
    kdf(&key, &salt, Label::SrtpKey as u8, &mut out16);
    assert_eq!(out16.to_vec(), hex("ec5cc97f149b8079c78bd9379d0e677e"));
    kdf(&key, &salt, Label::SrtcpKey as u8, &mut out16);
    assert_eq!(out16.to_vec(), hex("50bf33d4a54c54ee37f2c8b00f788609"));
    kdf(&key, &salt, Label::SrtcpSalt as u8, &mut out12);
    assert_eq!(out12.to_vec(), hex("76eb9145928e0e5f1e1b80a4"));
}

const A_TO_B: MasterKey = MasterKey {
    key: [0x11; 16],
    salt: [0x22; 12],
};
const B_TO_A: MasterKey = MasterKey {
    key: [0x33; 16],
    salt: [0x44; 12],
};

fn pair() -> (Srtp, Srtp) {
    (
        Srtp::new(&A_TO_B, &B_TO_A).unwrap(),
        Srtp::new(&B_TO_A, &A_TO_B).unwrap(),
    )
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A receiver report with an SDES CNAME, as the voice session sends.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x81, 202, 0, 3]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 3, b'p', b'h', b'o', 0, 0, 0]);
    p
}

/// `count` RTP packets of one source, protected by Alice, for Bob to receive.
fn stream(count: u16) -> (Srtp, Srtp, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut alice, bob) = pair();
    let packets: Vec<_> = (0..count)
        .map(|seq| rtp(seq, 3, &[seq as u8; 10]))
        .collect();
    let wire = protect_all(&mut alice, &packets);
    (alice, bob, packets, wire)
}

fn protect_all(tx: &mut Srtp, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    packets
        .iter()
        .map(|p| {
            let mut out = Vec::new();
            tx.protect(p, &mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn both_directions_round_trip_rtp_and_rtcp() {
    let (mut alice, mut bob) = pair();
    let mut wire = Vec::new();
    let mut clear = Vec::new();
    for seq in 100..110 {
        let packet = rtp(seq, 7, &[seq as u8; 80]);
        alice.protect(&packet, &mut wire).unwrap();
        assert_eq!(wire.len(), packet.len() + TAG_LEN);
        assert_eq!(wire[..12], packet[..12], "the header stays in clear");
        assert_ne!(wire[12..92], packet[12..], "the payload does not");
        bob.unprotect(&wire, &mut clear).unwrap();
        assert_eq!(clear, packet);
        // The other way, with the other key.
        bob.protect(&packet, &mut wire).unwrap();
        alice.unprotect(&wire, &mut clear).unwrap();
        assert_eq!(clear, packet);
    }
    for _ in 0..3 {
        let report = rtcp(7);
        alice.protect(&report, &mut wire).unwrap();
        assert_eq!(wire.len(), report.len() + TAG_LEN + SRTCP_INDEX_LEN);
        assert_eq!(wire[..8], report[..8]);
        assert_ne!(wire[8..report.len()], report[8..]);
        bob.unprotect(&wire, &mut clear).unwrap();
        assert_eq!(clear, report);
    }
    // A packet protected with one direction's key does not open with the other's.
    alice.protect(&rtp(500, 7, &[1; 20]), &mut wire).unwrap();
    assert_eq!(alice.unprotect(&wire, &mut clear), Err(SrtpError::Forged));
    assert!(clear.is_empty());
    let (a, b) = (alice.stats(), bob.stats());
    assert_eq!((a.protected, a.unprotected, a.forged), (14, 10, 1));
    assert_eq!((b.protected, b.unprotected, b.forged), (10, 13, 0));
}

#[test]
fn any_flipped_byte_is_forged_and_moves_nothing() {
    let (mut alice, mut bob) = pair();
    let mut clear = Vec::new();
    for packet in [rtp(9, 5, &[0xfc, 0xff, 0xfe, 1, 2, 3]), rtcp(5)] {
        let wire = protect_all(&mut alice, std::slice::from_ref(&packet)).remove(0);
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            // The low bit: every field keeps a parseable value (a CSRC count of 1, another
            // sequence number or index), so each must fail authentication.
            bad[i] ^= 0x01;
            assert_eq!(
                bob.unprotect(&bad, &mut clear),
                Err(SrtpError::Forged),
                "byte {i}"
            );
            // Any other change is refused too, one way or another.
            bad[i] ^= 0xff;
            assert!(bob.unprotect(&bad, &mut clear).is_err(), "byte {i}");
        }
        // The genuine packet still gets through: forgeries did not touch the replay window.
        bob.unprotect(&wire, &mut clear).unwrap();
        assert_eq!(clear, packet);
    }
    let s = bob.stats();
    assert!(s.forged >= 2 * 22, "{s:?}");
    assert_eq!(s.unprotected, 2);
    assert_eq!(s.replayed, 0);
}

#[test]
fn replays_and_packets_older_than_the_window_are_refused() {
    let (mut alice, mut bob, packets, wire) = stream(100);
    let mut clear = Vec::new();
    bob.unprotect(&wire[0], &mut clear).unwrap();
    assert_eq!(
        bob.unprotect(&wire[0], &mut clear),
        Err(SrtpError::Replayed)
    );
    // Skip ahead: 1..=10 never arrived; 80 moves the window past them.
    bob.unprotect(&wire[80], &mut clear).unwrap();
    // Within the window (80 - 17 = 63 back): new, accepted once.
    bob.unprotect(&wire[17], &mut clear).unwrap();
    assert_eq!(clear, packets[17]);
    assert_eq!(
        bob.unprotect(&wire[17], &mut clear),
        Err(SrtpError::Replayed)
    );
    // 64 back and more: refused although never seen.
    assert_eq!(
        bob.unprotect(&wire[16], &mut clear),
        Err(SrtpError::Replayed)
    );
    assert_eq!(
        bob.unprotect(&wire[5], &mut clear),
        Err(SrtpError::Replayed)
    );
    assert_eq!(bob.stats().replayed, 4);

    // SRTCP has its own window.
    let reports = protect_all(&mut alice, &[rtcp(3), rtcp(3), rtcp(3)]);
    bob.unprotect(&reports[1], &mut clear).unwrap();
    bob.unprotect(&reports[0], &mut clear).unwrap();
    assert_eq!(
        bob.unprotect(&reports[0], &mut clear),
        Err(SrtpError::Replayed)
    );
    bob.unprotect(&reports[2], &mut clear).unwrap();
    assert_eq!(
        bob.unprotect(&reports[2], &mut clear),
        Err(SrtpError::Replayed)
    );
}

#[test]
fn reordering_within_the_window_is_accepted() {
    let (_, mut bob, packets, wire) = stream(64);
    let mut clear = Vec::new();
    // Newest first, then all the others from newest to oldest: all 64 are in the window.
    for i in (0..64).rev() {
        bob.unprotect(&wire[i], &mut clear).unwrap();
        assert_eq!(clear, packets[i]);
    }
    assert_eq!(bob.stats().unprotected, 64);
}

#[test]
fn the_rollover_counter_follows_a_sequence_wrap() {
    let (mut alice, mut bob) = pair();
    let seqs: Vec<u16> = (0..12).map(|k| 65_530u16.wrapping_add(k)).collect();
    let packets: Vec<_> = seqs.iter().map(|&s| rtp(s, 9, &[s as u8; 30])).collect();
    let wire = protect_all(&mut alice, &packets);
    // The packet after the wrap (seq 2) was sealed with ROC 1 (RFC 7714 section 8.1's IV).
    let after = &wire[8];
    assert_eq!(&after[2..4], &2u16.to_be_bytes());
    let tx = SessionKeys::derive(&A_TO_B);
    let mut body = packets[8][12..].to_vec();
    let tag = tx
        .rtp
        .encrypt_inout_detached(
            &rtp_iv(&tx.rtp_salt, 9, (1 << 16) | 2),
            &packets[8][..12],
            body.as_mut_slice().into(),
        )
        .unwrap();
    assert_eq!(after[12..12 + body.len()], body[..]);
    assert_eq!(after[12 + body.len()..], tag[..]);
    // The receiver follows the wrap, and a packet from before it arriving late.
    let mut clear = Vec::new();
    for i in [0, 1, 2, 3, 4, 7, 8, 6, 5, 9, 11, 10] {
        bob.unprotect(&wire[i], &mut clear).unwrap();
        assert_eq!(clear, packets[i], "packet {i}");
    }
    // And refuses a replay from before the wrap.
    assert_eq!(
        bob.unprotect(&wire[5], &mut clear),
        Err(SrtpError::Replayed)
    );
}

#[test]
fn the_index_estimate_follows_rfc_3711() {
    assert_eq!(estimate_index(None, 7), 7);
    assert_eq!(estimate_index(Some(65_535), 0), 1 << 16);
    assert_eq!(estimate_index(Some((1 << 16) | 2), 65_534), 65_534);
    assert_eq!(estimate_index(Some((3 << 16) | 40_000), 10), (4 << 16) | 10);
    assert_eq!(
        estimate_index(Some((3 << 16) | 100), 60_000),
        (2 << 16) | 60_000
    );
    // Before the first packet of ROC 0: no negative ROC.
    assert_eq!(estimate_index(Some(100), 60_000), 60_000);
}

#[test]
fn the_sender_never_reuses_an_index() {
    let (mut alice, _) = pair();
    let mut wire = Vec::new();
    alice.protect(&rtp(10, 1, &[1]), &mut wire).unwrap();
    assert_eq!(
        alice.protect(&rtp(10, 1, &[2]), &mut wire),
        Err(SrtpError::Replayed)
    );
    assert_eq!(
        alice.protect(&rtp(9, 1, &[2]), &mut wire),
        Err(SrtpError::Replayed)
    );
    assert!(wire.is_empty());
    alice.protect(&rtp(11, 1, &[2]), &mut wire).unwrap();
    assert_eq!(alice.stats().protected, 2);
}

#[test]
fn short_and_garbage_input_is_malformed() {
    let (mut alice, mut bob) = pair();
    let mut out = Vec::new();
    let header_only = rtp(1, 1, &[]);
    let mut extension_past_end = rtp(1, 1, &[0; 20]);
    extension_past_end[0] |= 0x10;
    extension_past_end[14] = 0xff;
    let mut unencrypted_srtcp = protect_all(&mut alice, &[rtcp(1)]).remove(0);
    let at = unencrypted_srtcp.len() - 4;
    unencrypted_srtcp[at] &= 0x7f;
    for bad in [
        &[][..],
        &[0x80][..],
        &[0x40, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3][..],
        &[0x80, 111, 0, 1][..],
        &header_only[..],
        &[0x80, 200, 0, 0, 0, 0, 0, 1][..],
        &extension_past_end[..],
        &unencrypted_srtcp[..],
        &[0x8f; 40][..], // 15 CSRCs: a 72-octet header in 40 octets
    ] {
        assert_eq!(
            bob.unprotect(bad, &mut out),
            Err(SrtpError::Malformed),
            "{bad:?}"
        );
        assert!(out.is_empty());
    }
    assert_eq!(bob.stats().malformed, 9);
    for bad in [
        &[][..],
        &[0x80][..],
        &[0x40, 111, 0, 1][..],
        &[0x80, 200, 0, 0][..],
    ] {
        assert_eq!(
            alice.protect(bad, &mut out),
            Err(SrtpError::Malformed),
            "{bad:?}"
        );
    }
    // A header with CSRCs and an extension is fine when it fits: authenticated, not encrypted.
    let mut full = vec![0x91, 111, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9];
    full.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4, 0xaa, 0xbb]);
    alice.protect(&full, &mut out).unwrap();
    assert_eq!(out[..24], full[..24]);
    assert_ne!(out[24..26], full[24..]);
    let wire = out.clone();
    bob.unprotect(&wire, &mut out).unwrap();
    assert_eq!(out, full);
}

#[test]
fn a_warm_buffer_is_reused() {
    let (mut alice, mut bob) = pair();
    let mut wire = Vec::new();
    let mut clear = Vec::new();
    alice.protect(&rtp(0, 1, &[0; 160]), &mut wire).unwrap();
    bob.unprotect(&wire, &mut clear).unwrap();
    let (wire_at, clear_at) = (wire.as_ptr(), clear.as_ptr());
    for seq in 1..200 {
        alice
            .protect(&rtp(seq, 1, &[seq as u8; 160]), &mut wire)
            .unwrap();
        bob.unprotect(&wire, &mut clear).unwrap();
        if seq % 10 == 0 {
            alice.protect(&rtcp(1), &mut wire).unwrap();
            bob.unprotect(&wire, &mut clear).unwrap();
        }
    }
    assert_eq!((wire.as_ptr(), clear.as_ptr()), (wire_at, clear_at));
}

#[test]
fn keys_stay_out_of_debug_output() {
    let (alice, _) = pair();
    let shown = format!("{A_TO_B:?} {alice:?}");
    assert!(!shown.contains("17") && !shown.contains("0x11"), "{shown}");
    assert!(shown.contains(SUITE));
}

proptest! {
    #[test]
    fn any_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                           first in any::<u8>(), second in any::<u8>()) {
        let (mut alice, mut bob) = pair();
        let mut out = vec![0xaa; 8];
        // As they come, and with a version-2 first octet so parsing goes further.
        let mut versioned = bytes.clone();
        if versioned.len() >= 2 {
            versioned[0] = 0x80 | (first & 0x3f);
            versioned[1] = second;
        }
        for input in [&bytes, &versioned] {
            prop_assert!(bob.unprotect(input, &mut out).is_err());
            prop_assert!(out.is_empty());
            // Protecting takes any version-2 packet long enough for its header.
            let _ = alice.protect(input, &mut out);
        }
        let s = bob.stats();
        prop_assert_eq!(s.unprotected, 0);
        prop_assert_eq!(s.forged + s.malformed + s.replayed, 2);
    }

    #[test]
    fn what_is_protected_unprotects(seq in any::<u16>(), ssrc in any::<u32>(),
                                    payload in proptest::collection::vec(any::<u8>(), 1..1_200)) {
        let (mut alice, mut bob) = pair();
        let (mut wire, mut clear) = (Vec::new(), Vec::new());
        let packet = rtp(seq, ssrc, &payload);
        alice.protect(&packet, &mut wire).unwrap();
        bob.unprotect(&wire, &mut clear).unwrap();
        prop_assert_eq!(&clear, &packet);
    }
}
