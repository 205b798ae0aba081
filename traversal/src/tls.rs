//! TLS 1.3 on the control connection (rustls with the `ring` provider, no TLS 1.2, no
//! plaintext fallback).
//!
//! The server has a [`ServerIdentity`]: a certificate it was given (`--cert`/`--key`) or a
//! self-signed one made on first start and kept in its state directory. Clients know a server
//! by the [`Fingerprint`] of that certificate, `sha256:<64 hex>`, which the server prints.
//!
//! A client decides whether to trust what a server presents with [`ClientTrust`], in this order:
//! 1. a fingerprint given up front (`pinned`): only that certificate, nothing else;
//! 2. a certificate that a system root CA vouches for, valid for the host name: accepted;
//! 3. the `host:port` entry of the known-servers file ([`KnownServers`]): it must match;
//! 4. otherwise trust on first use: accepted, and recorded in the known-servers file.
//!
//! A mismatch in 1 or 3 fails the handshake with [`CertificateChanged`], which carries both
//! fingerprints (the driver turns it into `DriverError::CertificateChanged`).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The name a self-signed server certificate is made for (clients check fingerprints, not it).
const SELF_SIGNED_NAME: &str = "pinhole-rendezvous";

/// The ring provider: the only one compiled in.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// SHA-256 of a certificate's DER encoding; shown as `sha256:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("a certificate fingerprint starts with `sha256:` (got `{0}`)")]
    Prefix(String),
    #[error("a certificate fingerprint has 64 hex digits after `sha256:`; this one has {0}")]
    Length(usize),
    #[error("`{0}` is not a hex digit (a certificate fingerprint is `sha256:` and 64 of 0-9, a-f)")]
    Digit(char),
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// `sha256:` and 64 hex digits, either case; colons between the digit pairs (as `openssl
    /// x509 -fingerprint` prints them) are allowed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hex = s
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sha256:"))
            .and_then(|_| s.get(7..))
            .ok_or_else(|| FingerprintError::Prefix(s.chars().take(20).collect()))?;
        let digits: Vec<char> = hex.chars().filter(|c| *c != ':').collect();
        if let Some(bad) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
            return Err(FingerprintError::Digit(*bad));
        }
        if digits.len() != 64 {
            return Err(FingerprintError::Length(digits.len()));
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
            let hi = pair[0].to_digit(16).unwrap_or(0);
            let lo = pair[1].to_digit(16).unwrap_or(0);
            *byte = u8::try_from(hi * 16 + lo).unwrap_or(0);
        }
        Ok(Fingerprint(bytes))
    }
}

/// The server's certificate and key, ready to serve TLS 1.3.
#[derive(Clone)]
pub struct ServerIdentity {
    fingerprint: Fingerprint,
    certificate: CertificateDer<'static>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn invalid(what: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A fresh self-signed certificate: its PEM, its key's PEM (PKCS#8), and the identity.
fn self_signed() -> io::Result<(String, String, ServerIdentity)> {
    let made = rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.to_string()])
        .map_err(|e| io::Error::other(format!("making a certificate: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let identity = ServerIdentity::new(vec![made.cert.der().clone()], key)?;
    Ok((made.cert.pem(), made.signing_key.serialize_pem(), identity))
}

impl ServerIdentity {
    /// An identity from a certificate chain (end entity first) and its key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<Self> {
        let end_entity = chain.first().ok_or_else(|| invalid("no certificate"))?;
        let fingerprint = Fingerprint::of(end_entity);
        let certificate = end_entity.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(invalid)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("the certificate and key do not go together: {e}")))?;
        // Clients make a fresh configuration per connection and never resume: no tickets (no
        // bytes on the wire, no session cache to hold).
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(ServerIdentity {
            fingerprint,
            certificate,
            config: Arc::new(config),
        })
    }

    /// A new self-signed certificate, in memory only.
    pub fn generate() -> io::Result<Self> {
        self_signed().map(|(_, _, identity)| identity)
    }

    /// The certificate in `cert` (PEM, end entity first, then any intermediates) with the
    /// private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(format!("reading certificates from {}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(invalid(format!("no certificate in {}", cert.display())));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            invalid(format!(
                "reading the private key from {}: {e}",
                key.display()
            ))
        })?;
        Self::new(chain, private)
    }

    /// `cert.pem` and `key.pem` in `dir`, made (self-signed, the key readable by its owner
    /// only) when neither is there; `dir` is created if missing.
    pub fn load_or_create(dir: &Path) -> io::Result<Self> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        match (cert.exists(), key.exists()) {
            (true, true) => return Self::from_pem_files(&cert, &key),
            (false, false) => {}
            (has_cert, _) => {
                let (there, missing) = if has_cert {
                    (&cert, &key)
                } else {
                    (&key, &cert)
                };
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} is there but {} is not: restore it, or remove both to make a new \
                         certificate (clients that pinned the old one will refuse the new one)",
                        there.display(),
                        missing.display()
                    ),
                ));
            }
        }
        create_private_dir(dir)?;
        let (cert_pem, key_pem, identity) = self_signed()?;
        write_atomically(&key, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert, cert_pem.as_bytes(), 0o644)?;
        Ok(identity)
    }

    /// The certificate's fingerprint, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The end-entity certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The rustls configuration for serving with this identity (TLS 1.3 only).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to a temporary file beside `path` (created with `mode`), syncs it and renames
/// it over `path`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// How a client decides to trust a server's certificate (see the module docs for the order).
/// The default trusts CA-signed certificates, and any other on first use without recording it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTrust {
    /// Accept only the certificate with this fingerprint.
    pub pinned: Option<Fingerprint>,
    /// The known-servers file: trust on first use is recorded there and held to afterwards.
    pub known_servers: Option<PathBuf>,
}

/// A certificate other than the one the client trusts for `server` (the handshake failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{server} presented certificate {presented}, not the trusted {pinned}")]
pub struct CertificateChanged {
    pub server: String,
    pub pinned: Fingerprint,
    pub presented: Fingerprint,
}

/// The known-servers file: one `host:port sha256:<hex>` line per server trusted on first use
/// (blank lines and `#` comments allowed). Rewritten atomically on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServers {
    path: PathBuf,
    entries: Vec<(String, Fingerprint)>,
}

impl KnownServers {
    /// Reads the file (a missing one is empty). A malformed line is an error naming the file
    /// and the line: a damaged entry must not quietly become a new first use.
    pub fn load(path: &Path) -> io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| {
                invalid(format!(
                    "{} line {}: {why} (expected `host:port sha256:<64 hex digits>`); fix or \
                     remove the line",
                    path.display(),
                    n + 1
                ))
            };
            let mut words = line.split_whitespace();
            let (Some(server), Some(fp), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("not two words".into()));
            };
            if !server.contains(':') {
                return Err(bad(format!("`{server}` has no port")));
            }
            let fp = fp.parse::<Fingerprint>().map_err(|e| bad(e.to_string()))?;
            entries.push((server.to_ascii_lowercase(), fp));
        }
        Ok(KnownServers {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The fingerprint recorded for `server` (`host:port`).
    pub fn get(&self, server: &str) -> Option<Fingerprint> {
        let server = server.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(s, _)| *s == server)
            .map(|(_, fp)| *fp)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[(String, Fingerprint)] {
        &self.entries
    }

    /// Records `fingerprint` for `server`, replacing what was there, and writes the file.
    pub fn trust(&mut self, server: &str, fingerprint: Fingerprint) -> io::Result<()> {
        let server = server.to_ascii_lowercase();
        match self.entries.iter_mut().find(|(s, _)| *s == server) {
            Some(entry) => entry.1 = fingerprint,
            None => self.entries.push((server, fingerprint)),
        }
        self.save()
    }

    /// Removes `server`'s entry (the next connection trusts on first use again) and writes
    /// the file. False if there was none.
    pub fn forget(&mut self, server: &str) -> io::Result<bool> {
        let server = server.to_ascii_lowercase();
        let before = self.entries.len();
        self.entries.retain(|(s, _)| *s != server);
        if self.entries.len() == before {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    fn save(&self) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let mut text = String::new();
        for (server, fp) in &self.entries {
            text.push_str(&format!("{server} {fp}\n"));
        }
        write_atomically(&self.path, text.as_bytes(), 0o600)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// The system's root certificates (read once per process; none is fine: then only pinning
/// and trust on first use apply).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("system root certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system root certificates");
            Arc::new(roots)
        })
        .clone()
}

/// The host part of `host:port` (`[v6]:port` too) as TLS names it.
pub fn server_name(server: &str) -> Result<ServerName<'static>, String> {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("`{host}` is neither a host name nor an IP address"))
}

/// The client configuration for one connection to `server` (`host:port`) under `trust`.
pub fn client_config(server: &str, trust: &ClientTrust) -> Result<rustls::ClientConfig, String> {
    let verifier = TrustVerifier::new(server, trust, system_roots());
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

pub use rustls::ProtocolVersion;

/// A blocking TLS client stream (test kits, tools).
pub type BlockingStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// The client's handshake over `tcp` to `server` (`host:port`, for the name and the
/// known-servers entry) under `trust`, blocking within the socket's timeouts. A changed
/// certificate is an error [`certificate_changed`] finds.
pub fn connect_blocking(
    mut tcp: std::net::TcpStream,
    server: &str,
    trust: &ClientTrust,
) -> io::Result<BlockingStream> {
    let config = client_config(server, trust).map_err(io::Error::other)?;
    let name = server_name(server).map_err(io::Error::other)?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The [`CertificateChanged`] inside a failed handshake's error, if that is why it failed.
pub fn certificate_changed<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CertificateChanged> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            return other.0.downcast_ref::<CertificateChanged>();
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
        {
            source = Some(inner);
            continue;
        }
        source = e.source();
    }
    None
}

/// Decides on a server certificate as the module docs say.
#[derive(Debug)]
struct TrustVerifier {
    /// `host:port`, lower case: the known-servers key.
    server: String,
    trust: ClientTrust,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl TrustVerifier {
    /// For `server` (`host:port`) under `trust`, with `roots` for CA-signed certificates.
    fn new(server: &str, trust: &ClientTrust, roots: Arc<RootCertStore>) -> Self {
        let webpki = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| tracing::debug!("no CA verifier: {e}"))
                .ok()
        };
        TrustVerifier {
            server: server.to_ascii_lowercase(),
            trust: trust.clone(),
            webpki,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn changed(&self, pinned: Fingerprint, presented: Fingerprint) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            CertificateChanged {
                server: self.server.clone(),
                pinned,
                presented,
            },
        ))))
    }

    /// Steps 3 and 4: the known-servers entry, or trust on first use.
    fn check_known(&self, presented: Fingerprint) -> Result<(), rustls::Error> {
        let Some(path) = &self.trust.known_servers else {
            tracing::info!(server = %self.server, %presented, "trusting the server's certificate (not recorded)");
            return Ok(());
        };
        let mut known = KnownServers::load(path)
            .map_err(|e| rustls::Error::General(format!("known servers file: {e}")))?;
        match known.get(&self.server) {
            Some(pinned) if pinned == presented => Ok(()),
            Some(pinned) => Err(self.changed(pinned, presented)),
            None => {
                tracing::info!(server = %self.server, %presented, path = %path.display(), "trusting the server's certificate on first use");
                known.trust(&self.server, presented).map_err(|e| {
                    rustls::Error::General(format!("recording the server's certificate: {e}"))
                })
            }
        }
    }
}

impl ServerCertVerifier for TrustVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if let Some(pinned) = self.trust.pinned {
            return if pinned == presented {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(self.changed(pinned, presented))
            };
        }
        if let (Some(webpki), ServerName::DnsName(_)) = (&self.webpki, server_name) {
            match webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(e) => tracing::debug!(server = %self.server, "not CA-signed for the name: {e}"),
            }
        }
        self.check_known(presented)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pinhole-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs the verifier of `trust` for `server` on `identity`'s certificate.
    fn verify(
        server: &str,
        trust: &ClientTrust,
        identity: &ServerIdentity,
    ) -> Result<(), rustls::Error> {
        verify_under(
            Arc::new(RootCertStore::empty()),
            server,
            trust,
            identity.certificate(),
        )
    }

    /// Like [`verify`], with `roots` as the system's CAs, for the certificate `cert`.
    fn verify_under(
        roots: Arc<RootCertStore>,
        server: &str,
        trust: &ClientTrust,
        cert: &CertificateDer<'_>,
    ) -> Result<(), rustls::Error> {
        let verifier = TrustVerifier::new(server, trust, roots);
        let name = server_name(server).unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_ca_signed_certificate_for_the_name_is_accepted_without_a_record() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["rendezvous.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let roots = Arc::new(roots);
        let dir = temp_dir("ca");
        let known = dir.join("known_servers");
        let trust = ClientTrust {
            pinned: None,
            known_servers: Some(known.clone()),
        };
        verify_under(roots.clone(), "rendezvous.example:3478", &trust, leaf.der()).unwrap();
        assert!(!known.exists(), "a CA-signed certificate is not recorded");
        // For another name the CA does not vouch: trust on first use, recorded.
        verify_under(roots.clone(), "other.example:3478", &trust, leaf.der()).unwrap();
        let recorded = KnownServers::load(&known).unwrap();
        assert_eq!(
            recorded.get("other.example:3478"),
            Some(Fingerprint::of(leaf.der()))
        );
        // A pin overrides the CA.
        let pinned = ClientTrust {
            pinned: Some(Fingerprint::of(b"another")),
            known_servers: None,
        };
        let refused = verify_under(roots, "rendezvous.example:3478", &pinned, leaf.der());
        assert!(certificate_changed(&refused.unwrap_err()).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn changed(result: Result<(), rustls::Error>) -> CertificateChanged {
        let err = result.unwrap_err();
        certificate_changed(&err)
            .unwrap_or_else(|| panic!("not a changed certificate: {err}"))
            .clone()
    }

    #[test]
    fn a_pin_accepts_only_its_certificate() {
        let (first, second) = (
            ServerIdentity::generate().unwrap(),
            ServerIdentity::generate().unwrap(),
        );
        assert_ne!(first.fingerprint(), second.fingerprint());
        let trust = ClientTrust {
            pinned: Some(first.fingerprint()),
            known_servers: None,
        };
        verify("example.org:3478", &trust, &first).unwrap();
        let refused = changed(verify("example.org:3478", &trust, &second));
        assert_eq!(
            refused,
            CertificateChanged {
                server: "example.org:3478".into(),
                pinned: first.fingerprint(),
                presented: second.fingerprint(),
            }
        );
    }

    #[test]
    fn first_use_is_recorded_and_a_changed_certificate_refused_until_forgotten() {
        let dir = temp_dir("tofu");
        let path = dir.join("known_servers");
        let trust = ClientTrust {
            pinned: None,
            known_servers: Some(path.clone()),
        };
        let (first, second) = (
            ServerIdentity::generate().unwrap(),
            ServerIdentity::generate().unwrap(),
        );
        verify("Example.org:3478", &trust, &first).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("example.org:3478 {}\n", first.fingerprint()));
        // Another server's first use is its own.
        verify("127.0.0.1:3478", &trust, &second).unwrap();
        verify("example.org:3478", &trust, &first).unwrap();
        let refused = changed(verify("example.org:3478", &trust, &second));
        assert_eq!(
            (refused.pinned, refused.presented),
            (first.fingerprint(), second.fingerprint())
        );
        let mut known = KnownServers::load(&path).unwrap();
        assert_eq!(known.entries().len(), 2);
        assert!(known.forget("example.org:3478").unwrap());
        assert!(!known.forget("example.org:3478").unwrap());
        verify("example.org:3478", &trust, &second).unwrap();
        assert_eq!(
            KnownServers::load(&path).unwrap().get("EXAMPLE.org:3478"),
            Some(second.fingerprint())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_file_any_certificate_is_trusted_and_nothing_written() {
        let identity = ServerIdentity::generate().unwrap();
        verify("[::1]:3478", &ClientTrust::default(), &identity).unwrap();
    }

    #[test]
    fn a_malformed_known_servers_line_is_reported_with_its_number() {
        let dir = temp_dir("malformed");
        let path = dir.join("known_servers");
        let good = Fingerprint::of(b"x");
        for (text, says) in [
            (
                format!("# comment\n\na.example:1 {good}\nb.example:1\n"),
                "line 4: not two words",
            ),
            (
                format!("a.example {good}\n"),
                "line 1: `a.example` has no port",
            ),
            (
                "a.example:1 sha256:00\n".to_string(),
                "line 1: a certificate fingerprint has 64",
            ),
            (
                "a.example:1 md5:00 extra\n".to_string(),
                "line 1: not two words",
            ),
        ] {
            std::fs::write(&path, &text).unwrap();
            let err = KnownServers::load(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            let trust = ClientTrust {
                pinned: None,
                known_servers: Some(path.clone()),
            };
            let refused = verify("a.example:1", &trust, &ServerIdentity::generate().unwrap());
            assert!(
                matches!(&refused, Err(rustls::Error::General(e)) if e.contains(says)),
                "{refused:?}"
            );
            // The file is left as it was for the user to fix.
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_dir_keeps_its_certificate_and_the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("state").join("nested");
        let made = ServerIdentity::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ServerIdentity::load_or_create(&dir).unwrap();
        assert_eq!(again.fingerprint(), made.fingerprint());
        let from_files =
            ServerIdentity::from_pem_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
        assert_eq!(from_files.fingerprint(), made.fingerprint());
        std::fs::remove_file(dir.join("key.pem")).unwrap();
        let err = ServerIdentity::load_or_create(&dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key.pem") && err.contains("is not"), "{err}");
        // A key that is not the certificate's is refused.
        let other = temp_dir("state-other");
        ServerIdentity::load_or_create(&other).unwrap();
        let err = ServerIdentity::from_pem_files(&dir.join("cert.pem"), &other.join("key.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not go together"), "{err}");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    /// A whole handshake in memory: client and server connections pumped into each other.
    fn handshake(trust: &ClientTrust, identity: &ServerIdentity) -> Result<(), rustls::Error> {
        let config = client_config("127.0.0.1:3478", trust).unwrap();
        let mut client = rustls::ClientConnection::new(
            Arc::new(config),
            server_name("127.0.0.1:3478").unwrap(),
        )?;
        let mut server = rustls::ServerConnection::new(identity.server_config())?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                assert_eq!(
                    client.protocol_version(),
                    Some(rustls::ProtocolVersion::TLSv1_3)
                );
                return Ok(());
            }
        }
        panic!("no handshake after 10 round trips")
    }

    #[test]
    fn a_real_handshake_is_tls13_and_a_wrong_pin_fails_it() {
        let identity = ServerIdentity::generate().unwrap();
        let pin = |fp| ClientTrust {
            pinned: Some(fp),
            known_servers: None,
        };
        handshake(&pin(identity.fingerprint()), &identity).unwrap();
        let wrong = Fingerprint::of(b"another");
        let refused = changed(handshake(&pin(wrong), &identity));
        assert_eq!(
            (refused.pinned, refused.presented),
            (wrong, identity.fingerprint())
        );
    }

    #[test]
    fn fingerprints_round_trip_and_bad_ones_say_why() {
        let fp = Fingerprint::of(b"certificate");
        let text = fp.to_string();
        assert!(
            text.starts_with("sha256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            text.to_uppercase()
                .replacen("SHA256", "sha256", 1)
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        let colons: String = text.as_bytes()[7..]
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            format!("sha256:{colons}").parse::<Fingerprint>().unwrap(),
            fp
        );
        assert!(matches!(
            text[7..].parse::<Fingerprint>(),
            Err(FingerprintError::Prefix(_))
        ));
        assert_eq!(
            "sha256:abcd".parse::<Fingerprint>(),
            Err(FingerprintError::Length(4))
        );
        assert_eq!(
            format!("sha256:{}g", &text[8..]).parse::<Fingerprint>(),
            Err(FingerprintError::Digit('g'))
        );
        let message = "md5:00".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(message.contains("starts with `sha256:`"), "{message}");
    }
}
