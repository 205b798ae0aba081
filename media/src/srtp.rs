//! SRTP and SRTCP with AEAD_AES_128_GCM (RFC 7714) for one call: the media of both directions
//! encrypted and authenticated end to end, so a relay or anyone on the path sees ciphertext it
//! can neither read nor forge.
//!
//! ```text
//! RTP  -> protect   -> header | AES-GCM(payload) | tag(16)                    (RFC 7714 section 8)
//! RTCP -> protect   -> header(8) | AES-GCM(rest) | tag(16) | E=1,index(31)    (RFC 7714 section 9)
//! datagram -> unprotect -> RTCP if payload type 64-95 (RFC 5761 section 4), else RTP:
//!             parse -> packet index (RFC 3711 section 3.3.1) -> replay window -> decrypt+verify
//! ```
//!
//! Each direction has its own master key and salt (the call's key exchange gives two); the
//! session keys and salts for SRTP and SRTCP come from them through the AES-CM PRF of RFC 3711
//! section 4.3 (key derivation rate 0, so once per call). The receive side keeps a 64-packet
//! replay window per source, apart for SRTP and SRTCP (RFC 3711 section 3.3.2); a packet is
//! only counted into the window once its tag verified, so forged packets cannot move it.
//!
//! Built on RustCrypto's `aes-gcm` and `aes` (constant time with AES-NI and CLMUL, detected at
//! run time). `webrtc-srtp` was considered: it does this suite, but it pulls in tokio with its
//! file-system and multi-thread features, `webrtc-util`, and an older RustCrypto generation
//! next to the one in our lock file, and it returns a fresh `Bytes` per packet; this module
//! writes into a buffer the caller reuses, so the steady state does not allocate.
//!
//! ```
//! use media::srtp::{MasterKey, Srtp};
//!
//! let a_to_b = MasterKey { key: [1; 16], salt: [2; 12] };
//! let b_to_a = MasterKey { key: [3; 16], salt: [4; 12] };
//! let mut alice = Srtp::new(&a_to_b, &b_to_a)?;
//! let mut bob = Srtp::new(&b_to_a, &a_to_b)?;
//! let rtp = [0x80, 111, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0xfc, 0xff, 0xfe];
//! let (mut wire, mut clear) = (Vec::new(), Vec::new());
//! alice.protect(&rtp, &mut wire)?;
//! bob.unprotect(&wire, &mut clear)?;
//! assert_eq!(clear, rtp);
//! assert_eq!(bob.unprotect(&wire, &mut clear), Err(media::srtp::SrtpError::Replayed));
//! # Ok::<(), media::srtp::SrtpError>(())
//! ```

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::{AeadInOut, Nonce, Tag};

/// The protection profile, as the call's security report names it (RFC 7714 section 14.2).
pub const SUITE: &str = "AEAD_AES_128_GCM";

// Lengths in octets: the authentication tag (RFC 7714 section 14.2), the fixed RTP header
// (RFC 3550 section 5.1), what SRTCP leaves in clear (first word and sender SSRC, RFC 7714
// section 9.1), and the SRTCP trailer of E flag and index (RFC 3711 section 3.4).
const TAG_LEN: usize = 16;
const RTP_HEADER_LEN: usize = 12;
const RTCP_CLEAR_LEN: usize = 8;
const SRTCP_INDEX_LEN: usize = 4;

/// The E flag: the SRTCP packet is encrypted (RFC 3711 section 3.4).
const E_FLAG: u32 = 0x8000_0000;

// The last packet index a key may protect, SRTP (48 bits: ROC and sequence number, RFC 3711
// section 3.3.1) and SRTCP (31 bits); then the key must not be used (section 9.2).
const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;
const MAX_SRTCP_INDEX: u64 = 0x7fff_ffff;

/// Replay window size (RFC 3711 section 3.3.2 asks for at least 64).
const REPLAY_WINDOW: u64 = 64;

/// Sources tracked per direction and kind. A Pinhole peer sends one SSRC per call; a few more
/// leave room for a restarted stream without letting a flood of SSRCs grow the state.
const MAX_SOURCES: usize = 4;

/// Key derivation labels (RFC 3711 section 4.3.1; the authentication keys' are not needed, GCM
/// authenticates with the encryption key).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Label {
    SrtpKey = 0x00,
    SrtpSalt = 0x02,
    SrtcpKey = 0x03,
    SrtcpSalt = 0x05,
}

/// One direction's master key and salt (RFC 7714 section 12: 16 and 12 octets).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// The master key.
    pub key: [u8; 16],
    /// The master salt.
    pub salt: [u8; 12],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey { .. }")
    }
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// Already received, or older than the replay window (RFC 3711 section 3.3.2); on the send
    /// side, a packet index already used (GCM must never see a nonce twice).
    #[error("replayed packet")]
    Replayed,
    /// The authentication tag did not verify: tampered, or not from the key's holder.
    #[error("authentication failed")]
    Forged,
    /// Not an RTP or RTCP packet this suite can carry: too short, not version 2, a header
    /// longer than the packet, an unencrypted SRTCP packet, or one source too many.
    #[error("malformed packet")]
    Malformed,
    /// The key has protected all the packets it may (2^48 SRTP or 2^31 SRTCP): the call needs
    /// new keys (RFC 3711 section 9.2). At 50 packets a second this takes centuries.
    #[error("key exhausted")]
    Exhausted,
}

/// Packet counts of one call's SRTP contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SrtpStats {
    /// Packets protected (sent).
    pub protected: u64,
    /// Packets unprotected (received, authentic and new).
    pub unprotected: u64,
    /// Received packets dropped as replays.
    pub replayed: u64,
    /// Received packets dropped because their tag did not verify.
    pub forged: u64,
    /// Received datagrams that were not SRTP or SRTCP.
    pub malformed: u64,
}

/// One direction's session keys and salts, for SRTP and for SRTCP.
struct SessionKeys {
    rtp: Aes128Gcm,
    rtp_salt: [u8; 12],
    rtcp: Aes128Gcm,
    rtcp_salt: [u8; 12],
}

impl SessionKeys {
    /// Derives the session keys from a master key (RFC 3711 section 4.3, RFC 7714 section 11).
    fn derive(master: &MasterKey) -> Self {
        let mut rtp_key = [0u8; 16];
        let mut rtp_salt = [0u8; 12];
        let mut rtcp_key = [0u8; 16];
        let mut rtcp_salt = [0u8; 12];
        let derive =
            |label: Label, out: &mut [u8]| kdf(&master.key, &master.salt, label as u8, out);
        derive(Label::SrtpKey, &mut rtp_key);
        derive(Label::SrtpSalt, &mut rtp_salt);
        derive(Label::SrtcpKey, &mut rtcp_key);
        derive(Label::SrtcpSalt, &mut rtcp_salt);
        Self::from_session(rtp_key, rtp_salt, rtcp_key, rtcp_salt)
    }

    fn from_session(
        rtp_key: [u8; 16],
        rtp_salt: [u8; 12],
        rtcp_key: [u8; 16],
        rtcp_salt: [u8; 12],
    ) -> Self {
        Self {
            rtp: Aes128Gcm::new(&rtp_key.into()),
            rtp_salt,
            rtcp: Aes128Gcm::new(&rtcp_key.into()),
            rtcp_salt,
        }
    }
}

/// The AES-CM PRF of RFC 3711 section 4.3.3 with key derivation rate 0: `out` is the keystream
/// of AES-CM under the master key from IV = (salt XOR (label << 48)) * 2^16. The 12-octet salt
/// of RFC 7714 is the 14-octet salt's leftmost octets, the rest zero (as libsrtp does); the
/// label goes at octet 7 of the salt either way.
fn kdf(master_key: &[u8; 16], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let aes = Aes128::new(&(*master_key).into());
    let mut x = [0u8; 16];
    let n = master_salt.len().min(14);
    x[..n].copy_from_slice(&master_salt[..n]);
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        let mut block = aes::Block::from(block);
        aes.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// What a context remembers about one source: the highest packet index seen and, on the
/// receive side, which of the 64 before it arrived.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    highest: u64,
    /// Bit `i` set: index `highest - i` was received (bit 0 is `highest` itself).
    window: u64,
}

/// The sources of one direction and kind, in a fixed table (no allocation per packet).
#[derive(Debug, Default)]
struct Sources {
    slots: [Option<Source>; MAX_SOURCES],
}

impl Sources {
    fn get(&self, ssrc: u32) -> Option<&Source> {
        self.slots.iter().flatten().find(|s| s.ssrc == ssrc)
    }

    /// Records `index` as received (or sent) for `ssrc`, after its tag verified. A full table
    /// refuses a new source: only the key's holder can add one, and the real source's replay
    /// state is never pushed out.
    fn record(&mut self, ssrc: u32, index: u64) -> Result<(), SrtpError> {
        if let Some(s) = self.slots.iter_mut().flatten().find(|s| s.ssrc == ssrc) {
            if index > s.highest {
                let shift = index - s.highest;
                s.window = if shift >= REPLAY_WINDOW {
                    1
                } else {
                    (s.window << shift) | 1
                };
                s.highest = index;
            } else {
                s.window |= 1 << (s.highest - index);
            }
            return Ok(());
        }
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(SrtpError::Malformed)?;
        *slot = Some(Source {
            ssrc,
            highest: index,
            window: 1,
        });
        Ok(())
    }
}

/// Whether `index` is new for a source (RFC 3711 section 3.3.2).
fn check_replay(source: Option<&Source>, index: u64) -> Result<(), SrtpError> {
    let Some(s) = source else {
        return Ok(());
    };
    if index > s.highest {
        return Ok(());
    }
    let age = s.highest - index;
    if age >= REPLAY_WINDOW || s.window & (1 << age) != 0 {
        return Err(SrtpError::Replayed);
    }
    Ok(())
}

/// The packet index of a sequence number (RFC 3711 section 3.3.1 and appendix A): the rollover
/// counter guessed from the highest index seen, so that `seq` lands within 2^15 of it.
fn estimate_index(highest: Option<u64>, seq: u16) -> u64 {
    let Some(highest) = highest else {
        // A new source starts with ROC 0 (RFC 3711 section 3.3.1).
        return u64::from(seq);
    };
    let roc = highest >> 16;
    let s_l = (highest & 0xffff) as u16;
    let seq32 = u32::from(seq);
    let v = if s_l < 0x8000 {
        if seq32 > u32::from(s_l) + 0x8000 {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if u32::from(s_l) - 0x8000 > seq32 {
        roc + 1
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

/// Whether a datagram is RTCP (RFC 5761 section 4: packet types 192-223 in the second octet,
/// which RTP payload types 64-95 with the marker bit would collide with). Both must be RTP
/// version 2.
fn is_rtcp(packet: &[u8]) -> Result<bool, SrtpError> {
    match packet {
        [first, second, ..] if first >> 6 == 2 => Ok((192..=223).contains(second)),
        _ => Err(SrtpError::Malformed),
    }
}

/// The length of an RTP header with its CSRC list and extension (RFC 3550 section 5.3.1), if
/// it fits in `len` octets.
fn rtp_header_len(packet: &[u8], len: usize) -> Result<usize, SrtpError> {
    if len < RTP_HEADER_LEN || packet.len() < len {
        return Err(SrtpError::Malformed);
    }
    let csrc = usize::from(packet[0] & 0x0f);
    let mut header = RTP_HEADER_LEN + 4 * csrc;
    if packet[0] & 0x10 != 0 {
        let ext = packet
            .get(header + 2..header + 4)
            .ok_or(SrtpError::Malformed)?;
        header += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if header > len {
        return Err(SrtpError::Malformed);
    }
    Ok(header)
}

fn be32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

/// The SRTP nonce: (0x0000 || SSRC || ROC || SEQ) XOR salt (RFC 7714 section 8.1).
fn rtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> Nonce<Aes128Gcm> {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    Nonce::<Aes128Gcm>::from(iv)
}

/// The SRTCP nonce: (0x0000 || SSRC || 0x0000 || 0 || index) XOR salt (RFC 7714 section 9.1).
fn rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> Nonce<Aes128Gcm> {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & !E_FLAG).to_be_bytes());
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    Nonce::<Aes128Gcm>::from(iv)
}

/// One call's SRTP: the context that protects what we send and the one that checks what we
/// receive. RTP and RTCP go through the same calls, told apart by their second octet.
pub struct Srtp {
    tx: SessionKeys,
    rx: SessionKeys,
    tx_rtp: Sources,
    tx_rtcp_index: u64,
    rx_rtp: Sources,
    rx_rtcp: Sources,
    stats: SrtpStats,
}

impl fmt::Debug for Srtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srtp")
            .field("suite", &SUITE)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Srtp {
    /// A call's contexts: `tx` keys what we send, `rx` what the peer sends.
    pub fn new(tx: &MasterKey, rx: &MasterKey) -> Result<Self, SrtpError> {
        Ok(Self::with_session_keys(
            SessionKeys::derive(tx),
            SessionKeys::derive(rx),
        ))
    }

    fn with_session_keys(tx: SessionKeys, rx: SessionKeys) -> Self {
        Self {
            tx,
            rx,
            tx_rtp: Sources::default(),
            tx_rtcp_index: 0,
            rx_rtp: Sources::default(),
            rx_rtcp: Sources::default(),
            stats: SrtpStats::default(),
        }
    }

    /// Protects an RTP or RTCP packet into `out` (cleared first; its capacity is reused).
    pub fn protect(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let result = if is_rtcp(packet)? {
            self.protect_rtcp(packet, out)
        } else {
            self.protect_rtp(packet, out)
        };
        if result.is_ok() {
            self.stats.protected += 1;
        } else {
            out.clear();
        }
        result
    }

    fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = rtp_header_len(packet, packet.len())?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = be32(&packet[8..]);
        let source = self.tx_rtp.get(ssrc);
        let index = estimate_index(source.map(|s| s.highest), seq);
        if index > MAX_SRTP_INDEX {
            return Err(SrtpError::Exhausted);
        }
        // Never the same nonce twice under one key: an index at or below the highest sent is
        // refused (our sender only counts up).
        if source.is_some_and(|s| index <= s.highest) {
            return Err(SrtpError::Replayed);
        }
        self.tx_rtp.record(ssrc, index)?;
        out.reserve(packet.len() + TAG_LEN);
        out.extend_from_slice(packet);
        let iv = rtp_iv(&self.tx.rtp_salt, ssrc, index);
        let (aad, body) = out.split_at_mut(header);
        let tag = self
            .tx
            .rtp
            .encrypt_inout_detached(&iv, aad, body.into())
            .map_err(|_| SrtpError::Malformed)?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < RTCP_CLEAR_LEN {
            return Err(SrtpError::Malformed);
        }
        if self.tx_rtcp_index > MAX_SRTCP_INDEX {
            return Err(SrtpError::Exhausted);
        }
        let index = self.tx_rtcp_index as u32;
        self.tx_rtcp_index += 1;
        let ssrc = be32(&packet[4..]);
        let trailer = (E_FLAG | index).to_be_bytes();
        let mut aad = [0u8; RTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
        aad[..RTCP_CLEAR_LEN].copy_from_slice(&packet[..RTCP_CLEAR_LEN]);
        aad[RTCP_CLEAR_LEN..].copy_from_slice(&trailer);
        out.reserve(packet.len() + TAG_LEN + SRTCP_INDEX_LEN);
        out.extend_from_slice(packet);
        let iv = rtcp_iv(&self.tx.rtcp_salt, ssrc, index);
        let tag = self
            .tx
            .rtcp
            .encrypt_inout_detached(&iv, &aad, out[RTCP_CLEAR_LEN..].as_mut().into())
            .map_err(|_| SrtpError::Malformed)?;
        out.extend_from_slice(&tag);
        out.extend_from_slice(&trailer);
        Ok(())
    }

    /// Checks and decrypts an SRTP or SRTCP packet into `out` (cleared first; its capacity is
    /// reused). On an error `out` is empty and the error is counted.
    pub fn unprotect(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let result = match is_rtcp(packet) {
            Ok(true) => self.unprotect_rtcp(packet, out),
            Ok(false) => self.unprotect_rtp(packet, out),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.stats.unprotected += 1,
            Err(e) => {
                out.clear();
                match e {
                    SrtpError::Replayed => self.stats.replayed += 1,
                    SrtpError::Forged => self.stats.forged += 1,
                    SrtpError::Malformed | SrtpError::Exhausted => self.stats.malformed += 1,
                }
            }
        }
        result
    }

    fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let body_end = packet
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(SrtpError::Malformed)?;
        let header = rtp_header_len(packet, body_end)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = be32(&packet[8..]);
        let source = self.rx_rtp.get(ssrc);
        let index = estimate_index(source.map(|s| s.highest), seq);
        check_replay(source, index)?;
        let tag =
            Tag::<Aes128Gcm>::try_from(&packet[body_end..]).map_err(|_| SrtpError::Malformed)?;
        out.reserve(body_end);
        out.extend_from_slice(&packet[..body_end]);
        let iv = rtp_iv(&self.rx.rtp_salt, ssrc, index);
        let (aad, body) = out.split_at_mut(header);
        self.rx
            .rtp
            .decrypt_inout_detached(&iv, aad, body.into(), &tag)
            .map_err(|_| SrtpError::Forged)?;
        self.rx_rtp.record(ssrc, index)
    }

    fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let trailer_at = packet
            .len()
            .checked_sub(SRTCP_INDEX_LEN)
            .filter(|&t| t >= RTCP_CLEAR_LEN + TAG_LEN)
            .ok_or(SrtpError::Malformed)?;
        let body_end = trailer_at - TAG_LEN;
        let trailer = be32(&packet[trailer_at..]);
        if trailer & E_FLAG == 0 {
            // We always encrypt SRTCP; an unencrypted one is not ours.
            return Err(SrtpError::Malformed);
        }
        let index = trailer & !E_FLAG;
        let ssrc = be32(&packet[4..]);
        check_replay(self.rx_rtcp.get(ssrc), u64::from(index))?;
        let tag = Tag::<Aes128Gcm>::try_from(&packet[body_end..trailer_at])
            .map_err(|_| SrtpError::Malformed)?;
        let mut aad = [0u8; RTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
        aad[..RTCP_CLEAR_LEN].copy_from_slice(&packet[..RTCP_CLEAR_LEN]);
        aad[RTCP_CLEAR_LEN..].copy_from_slice(&packet[trailer_at..]);
        out.reserve(body_end);
        out.extend_from_slice(&packet[..body_end]);
        let iv = rtcp_iv(&self.rx.rtcp_salt, ssrc, index);
        self.rx
            .rtcp
            .decrypt_inout_detached(&iv, &aad, out[RTCP_CLEAR_LEN..].as_mut().into(), &tag)
            .map_err(|_| SrtpError::Forged)?;
        self.rx_rtcp.record(ssrc, u64::from(index))
    }

    /// Packet counts so far.
    pub fn stats(&self) -> SrtpStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
