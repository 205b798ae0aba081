//! End-to-end keys of a call: an ephemeral X25519 exchange between the two clients, signed by
//! their name keys, with a hash commitment so that a server in the middle cannot choose its keys
//! to make the short authentication strings of the two sides agree (ZRTP's construction, RFC
//! 6189 section 4.4.1.1).
//!
//! ```text
//!   caller                          server                         callee
//!   Call{commitment = H(e_c)}  ---------------->  Incoming{caller key, commitment}
//!                                                 Accept{e_a, sig_a}
//!   Connected{callee key, e_a, sig_a}  <--------  (sig_a over callee key, caller key,
//!                                                  commitment, e_a)
//!   Reveal{e_c, sig_c}  ----------------------->  Reveal (checks H(e_c) = commitment, sig_c)
//!   keys from X25519(e_c, e_a)                    keys from X25519(e_a, e_c)
//! ```
//!
//! The server learns the public halves and relays them; it cannot compute the keys. A server
//! that substitutes its own ephemeral keys (and name keys) must commit to the one it shows the
//! callee before it sees the callee's, and shows the caller one before it learns the caller's:
//! the two sides then derive different keys, their 6-digit strings differ (one chance in a
//! million of agreeing), and the substituted name key differs from the contact's remembered one.
//!
//! Derivation: `prk = HKDF-SHA256-Extract(salt = "pinhole-e2e-v1", X25519 shared secret)`,
//! `th = SHA-256(caller key | callee key | e_c | e_a)`, then HKDF-Expand with `th` in the info:
//! SRTP master keys and salts for each direction, the secret that keys the connectivity checks,
//! and the short authentication string.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::control::E2eHello;

/// The SRTP suite the keys are for (RFC 7714).
pub const SUITE: &str = "AEAD_AES_128_GCM";
const CONTEXT: &[u8] = b"pinhole-e2e-v1";

/// Master key and salt of one direction's SRTP (RFC 7714: 16-byte key, 12-byte salt).
#[derive(Clone, PartialEq, Eq)]
pub struct MediaKey {
    /// AES-128 master key.
    pub key: [u8; 16],
    /// Master salt.
    pub salt: [u8; 12],
}

impl std::fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaKey(<secret>)")
    }
}

/// What a connected call's encryption is, for the media and for the people.
#[derive(Clone, PartialEq, Eq)]
pub struct CallSecurity {
    /// The SRTP suite, [`SUITE`].
    pub suite: &'static str,
    /// The short authentication string both sides show: six digits, `"123 456"` (`None` for
    /// the echo service, which has no other side).
    pub sas: Option<String>,
    /// The peer's name key (Ed25519), as the server vouched for it and the peer's signature
    /// proved (`None` for the echo service).
    pub peer_key: Option<[u8; 32]>,
    /// Keys what we send.
    pub tx: MediaKey,
    /// Keys what we receive.
    pub rx: MediaKey,
    /// Keys the connectivity checks (MESSAGE-INTEGRITY), in place of a server-made secret.
    pub check_secret: [u8; 16],
}

impl std::fmt::Debug for CallSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSecurity")
            .field("suite", &self.suite)
            .field("sas", &self.sas)
            .field("peer_key", &self.peer_key.map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl CallSecurity {
    /// Keys for a call with the server's echo service: what we send comes back to us, so both
    /// directions use one fresh key from `random`; there is no other side to verify.
    pub fn loopback(random: [u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(CONTEXT), &random);
        let mut okm = [0u8; 28];
        let _ = hkdf.expand(b"pinhole echo srtp", &mut okm);
        let key = MediaKey {
            key: okm[..16].try_into().unwrap_or_default(),
            salt: okm[16..].try_into().unwrap_or_default(),
        };
        CallSecurity {
            suite: SUITE,
            sas: None,
            peer_key: None,
            tx: key.clone(),
            rx: key,
            check_secret: [0; 16],
        }
    }
}

/// Why the peer's keys were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// A field is not the hex of the right length.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the peer's name key.
    #[error("the peer's key signature does not verify")]
    BadSignature,
    /// The revealed key is not the one the caller committed to.
    #[error("the caller's key does not match its commitment")]
    BadCommitment,
    /// The key exchange gave the all-zero secret (a low-order point).
    #[error("the peer's ephemeral key is not acceptable")]
    WeakKey,
}

/// One side's ephemeral X25519 key pair (its `Debug` shows nothing).
struct Ephemeral {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Ephemeral {
    /// A fresh key from `random` (32 bytes from a cryptographic source).
    fn new(random: [u8; 32]) -> Self {
        let secret = StaticSecret::from(random);
        let public = PublicKey::from(&secret).to_bytes();
        Ephemeral { secret, public }
    }

    /// The shared secret with the peer's public key `peer`.
    fn shared(&self, peer: [u8; 32]) -> [u8; 32] {
        self.secret
            .diffie_hellman(&PublicKey::from(peer))
            .to_bytes()
    }
}

/// The caller's side of one call's key exchange.
#[derive(Debug)]
pub struct Caller {
    own: Ephemeral,
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ephemeral(<secret>)")
    }
}

impl Caller {
    /// A fresh ephemeral key from `random` (32 bytes from a cryptographic source).
    pub fn new(random: [u8; 32]) -> Self {
        Caller {
            own: Ephemeral::new(random),
        }
    }

    /// The commitment sent with the call: hex of SHA-256 of our ephemeral public key.
    pub fn commitment(&self) -> String {
        hex::encode(Sha256::digest(self.own.public))
    }

    /// The callee's answer (from `Connected`) under its name key `peer_key` (hex): checks it
    /// and returns our [`E2eHello`] to reveal and the call's keys.
    pub fn finish(
        &self,
        own: &SigningKey,
        peer_key: &str,
        answer: &E2eHello,
    ) -> Result<(E2eHello, CallSecurity), E2eError> {
        let callee = parse_key(peer_key)?;
        let callee_key = callee.to_bytes();
        let caller_key = own.verifying_key().to_bytes();
        let e_a = parse32(&answer.ephemeral, "ephemeral key")?;
        let commitment: [u8; 32] = Sha256::digest(self.own.public).into();
        verify(
            &callee,
            &answer_message(&callee_key, &caller_key, &commitment, &e_a),
            &answer.signature,
        )?;
        let signature = own.sign(&reveal_message(
            &caller_key,
            &callee_key,
            &self.own.public,
            &e_a,
        ));
        let reveal = E2eHello {
            ephemeral: hex::encode(self.own.public),
            signature: hex::encode(signature.to_bytes()),
        };
        let keys = derive(
            &self.own.shared(e_a),
            Side::Caller,
            [&caller_key, &callee_key, &self.own.public, &e_a],
        )?;
        Ok((
            reveal,
            CallSecurity {
                peer_key: Some(callee_key),
                ..keys
            },
        ))
    }
}

/// The callee's side of one call's key exchange.
#[derive(Debug)]
pub struct Callee {
    own: Ephemeral,
    caller_key: VerifyingKey,
    commitment: [u8; 32],
}

impl Callee {
    /// Answers a call from `caller_key` (hex, from `Incoming`) that committed to `commitment`
    /// (hex), with a fresh ephemeral key from `random`.
    pub fn new(random: [u8; 32], caller_key: &str, commitment: &str) -> Result<Self, E2eError> {
        let caller_key = parse_key(caller_key)?;
        let commitment = parse32(commitment, "commitment")?;
        Ok(Callee {
            own: Ephemeral::new(random),
            caller_key,
            commitment,
        })
    }

    /// Our answer, sent with `Accept`.
    pub fn answer(&self, own: &SigningKey) -> E2eHello {
        let callee_key = own.verifying_key().to_bytes();
        let signature = own.sign(&answer_message(
            &callee_key,
            &self.caller_key.to_bytes(),
            &self.commitment,
            &self.own.public,
        ));
        E2eHello {
            ephemeral: hex::encode(self.own.public),
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// The caller's reveal: checks the commitment and the signature, returns the call's keys.
    pub fn finish(&self, own: &SigningKey, reveal: &E2eHello) -> Result<CallSecurity, E2eError> {
        let e_c = parse32(&reveal.ephemeral, "ephemeral key")?;
        let committed: [u8; 32] = Sha256::digest(e_c).into();
        if committed != self.commitment {
            return Err(E2eError::BadCommitment);
        }
        let callee_key = own.verifying_key().to_bytes();
        let caller_key = self.caller_key.to_bytes();
        verify(
            &self.caller_key,
            &reveal_message(&caller_key, &callee_key, &e_c, &self.own.public),
            &reveal.signature,
        )?;
        let keys = derive(
            &self.own.shared(e_c),
            Side::Callee,
            [&caller_key, &callee_key, &e_c, &self.own.public],
        )?;
        Ok(CallSecurity {
            peer_key: Some(caller_key),
            ..keys
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

fn answer_message(
    callee: &[u8; 32],
    caller: &[u8; 32],
    commitment: &[u8; 32],
    e_a: &[u8; 32],
) -> Vec<u8> {
    [CONTEXT, b"A", callee, caller, commitment, e_a].concat()
}

fn reveal_message(caller: &[u8; 32], callee: &[u8; 32], e_c: &[u8; 32], e_a: &[u8; 32]) -> Vec<u8> {
    [CONTEXT, b"C", caller, callee, e_c, e_a].concat()
}

fn verify(key: &VerifyingKey, message: &[u8], signature: &str) -> Result<(), E2eError> {
    let bytes: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(E2eError::Malformed("signature"))?;
    key.verify(message, &Signature::from_bytes(&bytes))
        .map_err(|_| E2eError::BadSignature)
}

fn parse32(field: &str, what: &'static str) -> Result<[u8; 32], E2eError> {
    hex::decode(field)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(E2eError::Malformed(what))
}

fn parse_key(field: &str) -> Result<VerifyingKey, E2eError> {
    VerifyingKey::from_bytes(&parse32(field, "name key")?)
        .map_err(|_| E2eError::Malformed("name key"))
}

/// The keys of a call from the shared secret and the transcript `[caller key, callee key, e_c,
/// e_a]`; `peer_key` is left zero for the caller of this function to fill in.
fn derive(
    shared: &[u8; 32],
    side: Side,
    transcript: [&[u8; 32]; 4],
) -> Result<CallSecurity, E2eError> {
    if shared.iter().all(|&b| b == 0) {
        return Err(E2eError::WeakKey);
    }
    let hkdf = Hkdf::<Sha256>::new(Some(CONTEXT), shared);
    let mut th = Sha256::new();
    for part in transcript {
        th.update(part);
    }
    let th: [u8; 32] = th.finalize().into();
    let expand = |label: &[u8], out: &mut [u8]| {
        // Lengths here are far below HKDF's limit (255 blocks).
        let _ = hkdf.expand_multi_info(&[label, &th], out);
    };
    let mut srtp = [0u8; 56];
    expand(b"pinhole srtp", &mut srtp);
    let mut check_secret = [0u8; 16];
    expand(b"pinhole checks", &mut check_secret);
    let mut sas = [0u8; 4];
    expand(b"pinhole sas", &mut sas);
    let key = |at: usize| MediaKey {
        key: srtp[at..at + 16].try_into().unwrap_or_default(),
        salt: srtp[at + 16..at + 28].try_into().unwrap_or_default(),
    };
    let (caller_to_callee, callee_to_caller) = (key(0), key(28));
    let (tx, rx) = match side {
        Side::Caller => (caller_to_callee, callee_to_caller),
        Side::Callee => (callee_to_caller, caller_to_callee),
    };
    let digits = u32::from_be_bytes(sas) % 1_000_000;
    Ok(CallSecurity {
        suite: SUITE,
        sas: Some(format!("{:03} {:03}", digits / 1000, digits % 1000)),
        peer_key: None,
        tx,
        rx,
        check_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn exchange(alice: &SigningKey, bob: &SigningKey) -> (CallSecurity, CallSecurity) {
        let caller = Caller::new([1; 32]);
        let callee = Callee::new(
            [2; 32],
            &hex::encode(alice.verifying_key().to_bytes()),
            &caller.commitment(),
        )
        .unwrap();
        let answer = callee.answer(bob);
        let (reveal, a) = caller
            .finish(alice, &hex::encode(bob.verifying_key().to_bytes()), &answer)
            .unwrap();
        let b = callee.finish(bob, &reveal).unwrap();
        (a, b)
    }

    #[test]
    fn both_sides_agree_and_directions_differ() {
        let (alice, bob) = (key(1), key(2));
        let (a, b) = exchange(&alice, &bob);
        assert_eq!(a.sas, b.sas);
        assert_eq!(a.sas.as_ref().map(String::len), Some(7));
        assert_eq!(a.tx, b.rx);
        assert_eq!(a.rx, b.tx);
        assert_ne!(a.tx, a.rx);
        assert_eq!(a.check_secret, b.check_secret);
        assert_eq!(a.peer_key, Some(bob.verifying_key().to_bytes()));
        assert_eq!(b.peer_key, Some(alice.verifying_key().to_bytes()));
        assert!(!format!("{a:?}").contains(&hex::encode(a.tx.key)));
    }

    #[test]
    fn fresh_ephemerals_give_fresh_keys() {
        let (alice, bob) = (key(1), key(2));
        let (a1, _) = exchange(&alice, &bob);
        let caller = Caller::new([9; 32]);
        let callee = Callee::new(
            [8; 32],
            &hex::encode(alice.verifying_key().to_bytes()),
            &caller.commitment(),
        )
        .unwrap();
        let (_, a2) = caller
            .finish(
                &alice,
                &hex::encode(bob.verifying_key().to_bytes()),
                &callee.answer(&bob),
            )
            .unwrap();
        assert_ne!(a1.tx, a2.tx);
    }

    #[test]
    fn an_answer_signed_by_another_key_is_refused() {
        let (alice, bob, mallory) = (key(1), key(2), key(3));
        let caller = Caller::new([1; 32]);
        let callee = Callee::new(
            [2; 32],
            &hex::encode(alice.verifying_key().to_bytes()),
            &caller.commitment(),
        )
        .unwrap();
        let answer = callee.answer(&mallory);
        let err = caller
            .finish(
                &alice,
                &hex::encode(bob.verifying_key().to_bytes()),
                &answer,
            )
            .unwrap_err();
        assert_eq!(err, E2eError::BadSignature);
    }

    #[test]
    fn a_reveal_that_breaks_the_commitment_is_refused() {
        let (alice, bob) = (key(1), key(2));
        let caller = Caller::new([1; 32]);
        let other = Caller::new([5; 32]);
        let callee = Callee::new(
            [2; 32],
            &hex::encode(alice.verifying_key().to_bytes()),
            &caller.commitment(),
        )
        .unwrap();
        // A properly signed reveal of another ephemeral key than the committed one.
        let (a, b) = (
            alice.verifying_key().to_bytes(),
            bob.verifying_key().to_bytes(),
        );
        let signature = alice.sign(&reveal_message(
            &a,
            &b,
            &other.own.public,
            &callee.own.public,
        ));
        let reveal = E2eHello {
            ephemeral: hex::encode(other.own.public),
            signature: hex::encode(signature.to_bytes()),
        };
        assert_eq!(
            callee.finish(&bob, &reveal).unwrap_err(),
            E2eError::BadCommitment
        );
    }

    #[test]
    fn a_server_in_the_middle_gets_different_strings() {
        // The server answers the caller as "bob" with its own keys and calls bob as "alice".
        let (alice, bob, mallory) = (key(1), key(2), key(3));
        let mallory_hex = hex::encode(mallory.verifying_key().to_bytes());
        let caller = Caller::new([1; 32]);
        // Towards bob: mallory commits to its own ephemeral.
        let m_caller = Caller::new([7; 32]);
        let callee = Callee::new([2; 32], &mallory_hex, &m_caller.commitment()).unwrap();
        let answer = callee.answer(&bob);
        let (m_reveal, m_bob) = m_caller
            .finish(
                &mallory,
                &hex::encode(bob.verifying_key().to_bytes()),
                &answer,
            )
            .unwrap();
        let b = callee.finish(&bob, &m_reveal).unwrap();
        // Towards alice: mallory answers as a callee.
        let m_callee = Callee::new(
            [6; 32],
            &hex::encode(alice.verifying_key().to_bytes()),
            &caller.commitment(),
        )
        .unwrap();
        let (reveal, a) = caller
            .finish(&alice, &mallory_hex, &m_callee.answer(&mallory))
            .unwrap();
        let m_alice = m_callee.finish(&mallory, &reveal).unwrap();
        assert_eq!(m_bob.sas, b.sas);
        assert_eq!(m_alice.sas, a.sas);
        assert_ne!(a.sas, b.sas, "the two people read different strings");
        assert_ne!(
            a.peer_key,
            Some(bob.verifying_key().to_bytes()),
            "and alice sees a key that is not bob's"
        );
    }

    #[test]
    fn malformed_fields_are_errors() {
        assert_eq!(
            Callee::new([2; 32], "zz", "00").unwrap_err(),
            E2eError::Malformed("name key")
        );
        let alice = key(1);
        let callee = Callee::new(
            [2; 32],
            &hex::encode(alice.verifying_key().to_bytes()),
            &hex::encode([0u8; 32]),
        )
        .unwrap();
        let bad = E2eHello {
            ephemeral: "00".into(),
            signature: String::new(),
        };
        assert_eq!(
            callee.finish(&key(2), &bad).unwrap_err(),
            E2eError::Malformed("ephemeral key")
        );
    }
}
