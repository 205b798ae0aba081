//! One control connection's TLS, through rustls' unbuffered API: the caller owns the buffers,
//! so an idle connection holds no buffer at all (rustls' buffered connection keeps a 4 KiB
//! read buffer per connection). Records are read into the poll loop's one read buffer and
//! decrypted there; only bytes that do not complete a record yet are kept, until the next
//! read completes it. Everything to send (handshake records, encrypted messages, the
//! close_notify) is appended to a buffer the caller gives and writes out.

use std::collections::VecDeque;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

/// The TLS of one control connection.
pub(super) struct TlsSession {
    conn: Box<UnbufferedServerConnection>,
    /// Received bytes that do not complete a record yet (empty, unallocated, otherwise).
    partial: Vec<u8>,
    /// The close_notify was queued.
    close_notified: bool,
    /// The handshake is done (messages can be encrypted).
    established: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("partial", &self.partial.len())
            .field("close_notified", &self.close_notified)
            .finish_non_exhaustive()
    }
}

/// Whether the connection goes on after [`TlsSession::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Open,
    /// The peer closed TLS (close_notify) or the session is over: close the connection.
    Finished,
}

/// Appends what `write` puts in a buffer to `out`, growing the room it gets as it asks.
fn append(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::General("cannot encode a TLS record".into()));
            }
        }
    }
}

fn encode_room(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

impl TlsSession {
    pub(super) fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(TlsSession {
            conn: Box::new(UnbufferedServerConnection::new(config)?),
            partial: Vec::new(),
            close_notified: false,
            established: false,
        })
    }

    /// Whether the handshake is done: from then on [`TlsSession::process`] only decrypts and
    /// encrypts (symmetric crypto, no public-key operation).
    pub(super) fn is_established(&self) -> bool {
        self.established
    }

    /// Runs the session over `received` (may be empty): each message that arrives whole goes to
    /// `on_data`; once the handshake is done, the messages in `plain` are encrypted (taken out
    /// of it) and, with `close`, a close_notify after them; every record to send is appended to
    /// `out`. An error is the peer's fault (not TLS, a bad record, a failed handshake).
    pub(super) fn process(
        &mut self,
        received: &mut [u8],
        plain: &mut VecDeque<Vec<u8>>,
        close: bool,
        out: &mut Vec<u8>,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<Status, rustls::Error> {
        let mut joined = std::mem::take(&mut self.partial);
        let incoming: &mut [u8] = if joined.is_empty() {
            received
        } else {
            joined.extend_from_slice(received);
            &mut joined
        };
        let mut consumed = 0;
        let status = loop {
            let UnbufferedStatus {
                mut discard, state, ..
            } = self.conn.process_tls_records(&mut incoming[consumed..]);
            let done = match state? {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        on_data(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(out, |buf| encode.encode(buf).map_err(encode_room))?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The caller sends `out`.
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Status::Open),
                ConnectionState::WriteTraffic(mut write) => {
                    self.established = true;
                    while let Some(message) = plain.pop_front() {
                        append(out, |buf| {
                            write.encrypt(&message, buf).map_err(encrypt_room)
                        })?;
                    }
                    if close && !self.close_notified {
                        append(out, |buf| {
                            write.queue_close_notify(buf).map_err(encrypt_room)
                        })?;
                        self.close_notified = true;
                    }
                    Some(Status::Open)
                }
                // Early data is off; anything else ends the session.
                _ => Some(Status::Finished),
            };
            consumed += discard;
            if let Some(status) = done {
                break status;
            }
        };
        if consumed < incoming.len() {
            self.partial = incoming[consumed..].to_vec();
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tls::{ClientTrust, ServerIdentity, client_config, server_name};

    /// Moves bytes between a buffered client and the session, one byte at a time from the
    /// client when `trickle` (every record split across reads); returns what the session
    /// delivered.
    fn converse(trickle: bool) -> Vec<u8> {
        let identity = ServerIdentity::generate().unwrap();
        let trust = ClientTrust {
            pinned: Some(identity.fingerprint()),
            known_servers: None,
        };
        let config = client_config("127.0.0.1:1", &trust).unwrap();
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), server_name("127.0.0.1:1").unwrap())
                .unwrap();
        let mut session = TlsSession::new(identity.server_config()).unwrap();
        std::io::Write::write_all(&mut client.writer(), b"hello, server").unwrap();
        let mut plain = VecDeque::from([b"welcome".to_vec()]);
        let mut delivered = Vec::new();
        let mut answered = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let chunks: Vec<Vec<u8>> = if trickle {
                wire.iter().map(|b| vec![*b]).collect()
            } else {
                vec![wire]
            };
            let mut out = Vec::new();
            for mut chunk in chunks {
                let status = session
                    .process(&mut chunk, &mut plain, false, &mut out, |d| {
                        delivered.extend_from_slice(d)
                    })
                    .unwrap();
                assert_eq!(status, Status::Open);
            }
            client.read_tls(&mut out.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n) = std::io::Read::read(&mut client.reader(), &mut buf) {
                answered.extend_from_slice(&buf[..n]);
            }
            if answered == b"welcome" && delivered == b"hello, server" {
                assert!(session.partial.is_empty(), "nothing kept once idle");
                return delivered;
            }
        }
        panic!("delivered {delivered:?}, answered {answered:?}")
    }

    #[test]
    fn a_session_carries_messages_both_ways() {
        assert_eq!(converse(false), b"hello, server");
    }

    #[test]
    fn records_split_across_reads_are_joined() {
        assert_eq!(converse(true), b"hello, server");
    }

    #[test]
    fn bytes_that_are_not_tls_are_an_error() {
        let identity = ServerIdentity::generate().unwrap();
        let mut session = TlsSession::new(identity.server_config()).unwrap();
        let mut hello = b"\x00\x00\x00\x10{\"type\":\"hello\"}".to_vec();
        let mut out = Vec::new();
        let result = session.process(&mut hello, &mut VecDeque::new(), false, &mut out, |_| {
            panic!("plaintext delivered")
        });
        assert!(result.is_err(), "{result:?}");
    }
}
