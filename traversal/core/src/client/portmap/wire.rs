//! The PCP MAP (RFC 6887 sections 7 and 11) and NAT-PMP (RFC 6886 section 3) datagrams,
//! both ways: [`super::PortMap`] encodes requests and decodes responses; a test gateway does
//! the opposite. Decoders never panic: anything short, too long or of another kind is `None`.
//!
//! ```text
//! PCP request header (24)        PCP response header (24)       MAP payload (36), both ways
//!  0 version=2                    0 version=2                     0..12 mapping nonce
//!  1 R=0 | opcode (1 = MAP)       1 R=1 | opcode (0x81)          12    protocol (17 = UDP)
//!  2..4 reserved                  2 reserved, 3 result code      13..16 reserved
//!  4..8 requested lifetime (s)    4..8 lifetime (s)              16..18 internal port
//!  8..24 client IP (IPv6 form)    8..12 epoch (s)                18..20 (suggested) external port
//!                                 12..24 reserved                20..36 (suggested) external IP
//!
//! NAT-PMP                        request                          response (opcode + 128)
//!  external address (op 0)        0 version=0, 1 op (2 bytes)     0 ver, 1 op, 2..4 result, 4..8 epoch,
//!                                                                 8..12 external IPv4 (12 bytes)
//!  map UDP (op 1)                 0 ver, 1 op, 2..4 reserved,     0 ver, 1 op, 2..4 result, 4..8 epoch,
//!                                 4..6 internal port, 6..8        8..10 internal port, 10..12 mapped
//!                                 suggested external port,        external port, 12..16 lifetime
//!                                 8..12 lifetime (12 bytes)       (16 bytes)
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

/// PCP's version (RFC 6887 section 7).
pub const PCP_VERSION: u8 = 2;
/// NAT-PMP's version (RFC 6886 section 3).
pub const NAT_PMP_VERSION: u8 = 0;
/// The response bit of the opcode byte, both protocols.
pub const RESPONSE_BIT: u8 = 0x80;
/// PCP's MAP opcode (RFC 6887 section 11).
pub const PCP_OP_MAP: u8 = 1;
/// IANA protocol number of UDP, in PCP's MAP.
pub const PROTOCOL_UDP: u8 = 17;
/// NAT-PMP's external address request opcode (RFC 6886 section 3.2).
pub const NAT_PMP_OP_ADDRESS: u8 = 0;
/// NAT-PMP's "map UDP" opcode (RFC 6886 section 3.3).
pub const NAT_PMP_OP_MAP_UDP: u8 = 1;
/// PCP's common header length (RFC 6887 section 7.1, 7.2).
pub const PCP_HEADER_LEN: usize = 24;
/// PCP's MAP payload length (RFC 6887 section 11.1).
pub const PCP_MAP_LEN: usize = 36;
/// PCP messages are at most this long (RFC 6887 section 7).
pub const PCP_MAX_LEN: usize = 1100;
/// NAT-PMP's external address response length.
pub const NAT_PMP_ADDRESS_RESPONSE_LEN: usize = 12;
/// NAT-PMP's map response length.
pub const NAT_PMP_MAP_RESPONSE_LEN: usize = 16;
/// NAT-PMP's error response without a body (e.g. "unsupported version", RFC 6886 section 3.5).
pub const NAT_PMP_HEADER_LEN: usize = 8;

/// The opcode-specific part of a PCP MAP request or response (RFC 6887 section 11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpMap {
    /// The mapping nonce: random, the same for a mapping's renewals and its deletion.
    pub nonce: [u8; 12],
    /// The IANA protocol number ([`PROTOCOL_UDP`]).
    pub protocol: u8,
    /// The internal port.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port.
    pub external_port: u16,
    /// Suggested (request) or assigned (response) external address, IPv4 as `::ffff:a.b.c.d`.
    pub external_ip: Ipv6Addr,
}

impl PcpMap {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&[self.protocol, 0, 0, 0]);
        out.extend_from_slice(&self.internal_port.to_be_bytes());
        out.extend_from_slice(&self.external_port.to_be_bytes());
        out.extend_from_slice(&self.external_ip.octets());
    }

    fn decode(bytes: &[u8]) -> Option<PcpMap> {
        let bytes = bytes.get(..PCP_MAP_LEN)?;
        Some(PcpMap {
            nonce: bytes.get(..12)?.try_into().ok()?,
            protocol: bytes[12],
            internal_port: be16(bytes, 16)?,
            external_port: be16(bytes, 18)?,
            external_ip: ipv6(bytes, 20)?,
        })
    }
}

/// A PCP MAP request (RFC 6887 sections 7.1 and 11.1); lifetime 0 deletes the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpRequest {
    /// Requested lifetime in seconds.
    pub lifetime: u32,
    /// The client's address, IPv4 as `::ffff:a.b.c.d`.
    pub client_ip: Ipv6Addr,
    /// The MAP payload.
    pub map: PcpMap,
}

impl PcpRequest {
    /// The datagram: 60 bytes, no options.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PCP_HEADER_LEN + PCP_MAP_LEN);
        out.extend_from_slice(&[PCP_VERSION, PCP_OP_MAP, 0, 0]);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.client_ip.octets());
        self.map.encode(&mut out);
        out
    }

    /// A PCP MAP request (version 2, opcode 1, response bit clear); options are skipped.
    pub fn decode(bytes: &[u8]) -> Option<PcpRequest> {
        if bytes.len() < PCP_HEADER_LEN + PCP_MAP_LEN || bytes.len() > PCP_MAX_LEN {
            return None;
        }
        if bytes[0] != PCP_VERSION || bytes[1] != PCP_OP_MAP {
            return None;
        }
        Some(PcpRequest {
            lifetime: be32(bytes, 4)?,
            client_ip: ipv6(bytes, 8)?,
            map: PcpMap::decode(bytes.get(PCP_HEADER_LEN..)?)?,
        })
    }
}

/// A PCP response (RFC 6887 section 7.2) to a MAP request, of any version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpResponse {
    /// The server's version: [`PCP_VERSION`], or lower in an UNSUPP_VERSION answer.
    pub version: u8,
    /// The result code (0 success; see [`super::PcpResult`]).
    pub result: u8,
    /// Granted lifetime in seconds (for an error: how long the error is likely to last).
    pub lifetime: u32,
    /// The server's epoch: seconds since it started or lost its state (RFC 6887 section 8.5).
    pub epoch: u32,
    /// The MAP payload; `None` when the response is the bare header (servers answer so when
    /// they could not read the request, e.g. UNSUPP_VERSION).
    pub map: Option<PcpMap>,
}

impl PcpResponse {
    /// The datagram: 60 bytes with a payload, 24 without.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PCP_HEADER_LEN + PCP_MAP_LEN);
        out.extend_from_slice(&[self.version, RESPONSE_BIT | PCP_OP_MAP, 0, self.result]);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&[0; 12]);
        if let Some(map) = &self.map {
            map.encode(&mut out);
        }
        out
    }

    /// A response to a MAP request (RFC 6887 section 8.3: at least 24 bytes, at most 1100, a
    /// multiple of 4; the opcode byte is `0x81`). The version byte must not be 0 (that is
    /// NAT-PMP). Options after the payload are skipped.
    pub fn decode(bytes: &[u8]) -> Option<PcpResponse> {
        let len = bytes.len();
        if !(PCP_HEADER_LEN..=PCP_MAX_LEN).contains(&len) || !len.is_multiple_of(4) {
            return None;
        }
        if bytes[0] == NAT_PMP_VERSION || bytes[1] != RESPONSE_BIT | PCP_OP_MAP {
            return None;
        }
        let map = match bytes.get(PCP_HEADER_LEN..) {
            Some(rest) if rest.len() >= PCP_MAP_LEN => Some(PcpMap::decode(rest)?),
            _ => None,
        };
        Some(PcpResponse {
            version: bytes[0],
            result: bytes[3],
            lifetime: be32(bytes, 4)?,
            epoch: be32(bytes, 8)?,
            map,
        })
    }
}

/// A NAT-PMP request (RFC 6886 sections 3.2 and 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatPmpRequest {
    /// Opcode 0: what is the external address?
    ExternalAddress,
    /// Opcode 1: map a UDP port; lifetime 0 with external port 0 deletes the mapping.
    MapUdp {
        /// The internal port.
        internal_port: u16,
        /// The suggested external port.
        external_port: u16,
        /// Requested lifetime in seconds.
        lifetime: u32,
    },
}

impl NatPmpRequest {
    /// The datagram: 2 or 12 bytes.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            NatPmpRequest::ExternalAddress => vec![NAT_PMP_VERSION, NAT_PMP_OP_ADDRESS],
            NatPmpRequest::MapUdp {
                internal_port,
                external_port,
                lifetime,
            } => {
                let mut out = vec![NAT_PMP_VERSION, NAT_PMP_OP_MAP_UDP, 0, 0];
                out.extend_from_slice(&internal_port.to_be_bytes());
                out.extend_from_slice(&external_port.to_be_bytes());
                out.extend_from_slice(&lifetime.to_be_bytes());
                out
            }
        }
    }

    /// An external address or map-UDP request (version 0).
    pub fn decode(bytes: &[u8]) -> Option<NatPmpRequest> {
        match (bytes.first()?, bytes.get(1)?) {
            (&NAT_PMP_VERSION, &NAT_PMP_OP_ADDRESS) if bytes.len() == 2 => {
                Some(NatPmpRequest::ExternalAddress)
            }
            (&NAT_PMP_VERSION, &NAT_PMP_OP_MAP_UDP) if bytes.len() == 12 => {
                Some(NatPmpRequest::MapUdp {
                    internal_port: be16(bytes, 4)?,
                    external_port: be16(bytes, 6)?,
                    lifetime: be32(bytes, 8)?,
                })
            }
            _ => None,
        }
    }
}

/// A NAT-PMP response (RFC 6886 sections 3.2, 3.3 and 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatPmpResponse {
    /// Opcode 128, 12 bytes.
    ExternalAddress {
        /// The result code (0 success; see [`super::NatPmpResult`]).
        result: u16,
        /// Seconds since the gateway started or lost its state.
        epoch: u32,
        /// The external address (undefined when `result` is not 0).
        address: Ipv4Addr,
    },
    /// Opcode 129, 16 bytes.
    MapUdp {
        /// The result code.
        result: u16,
        /// Seconds since the gateway started or lost its state.
        epoch: u32,
        /// The internal port.
        internal_port: u16,
        /// The mapped external port (0 after a deletion).
        external_port: u16,
        /// Granted lifetime in seconds (0 after a deletion).
        lifetime: u32,
    },
    /// A shorter answer carrying only a non-zero result, e.g. "unsupported version" (8 bytes)
    /// to a request of another version, such as PCP's.
    Error {
        /// The opcode of the request plus 128.
        opcode: u8,
        /// The result code, not 0.
        result: u16,
        /// Seconds since the gateway started or lost its state.
        epoch: u32,
    },
}

impl NatPmpResponse {
    /// The datagram: 12, 16 or 8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(NAT_PMP_MAP_RESPONSE_LEN);
        match *self {
            NatPmpResponse::ExternalAddress {
                result,
                epoch,
                address,
            } => {
                out.extend_from_slice(&[NAT_PMP_VERSION, RESPONSE_BIT | NAT_PMP_OP_ADDRESS]);
                out.extend_from_slice(&result.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&address.octets());
            }
            NatPmpResponse::MapUdp {
                result,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => {
                out.extend_from_slice(&[NAT_PMP_VERSION, RESPONSE_BIT | NAT_PMP_OP_MAP_UDP]);
                out.extend_from_slice(&result.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&internal_port.to_be_bytes());
                out.extend_from_slice(&external_port.to_be_bytes());
                out.extend_from_slice(&lifetime.to_be_bytes());
            }
            NatPmpResponse::Error {
                opcode,
                result,
                epoch,
            } => {
                out.extend_from_slice(&[NAT_PMP_VERSION, opcode]);
                out.extend_from_slice(&result.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
            }
        }
        out
    }

    /// A version-0 response: opcode 128 of at least 12 bytes, 129 of at least 16, or any
    /// response opcode of at least 8 bytes with a non-zero result ([`NatPmpResponse::Error`]).
    pub fn decode(bytes: &[u8]) -> Option<NatPmpResponse> {
        if bytes.len() < NAT_PMP_HEADER_LEN || bytes[0] != NAT_PMP_VERSION {
            return None;
        }
        let opcode = bytes[1];
        if opcode & RESPONSE_BIT == 0 {
            return None;
        }
        let result = be16(bytes, 2)?;
        let epoch = be32(bytes, 4)?;
        let len = bytes.len();
        if opcode == RESPONSE_BIT | NAT_PMP_OP_ADDRESS && len >= NAT_PMP_ADDRESS_RESPONSE_LEN {
            let octets: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
            return Some(NatPmpResponse::ExternalAddress {
                result,
                epoch,
                address: Ipv4Addr::from(octets),
            });
        }
        if opcode == RESPONSE_BIT | NAT_PMP_OP_MAP_UDP && len >= NAT_PMP_MAP_RESPONSE_LEN {
            return Some(NatPmpResponse::MapUdp {
                result,
                epoch,
                internal_port: be16(bytes, 8)?,
                external_port: be16(bytes, 10)?,
                lifetime: be32(bytes, 12)?,
            });
        }
        if result != 0 {
            return Some(NatPmpResponse::Error {
                opcode,
                result,
                epoch,
            });
        }
        None
    }
}

/// A response from port 5351 of the gateway, of either protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Version byte not 0.
    Pcp(PcpResponse),
    /// Version byte 0.
    NatPmp(NatPmpResponse),
}

/// Decodes a response of either protocol, by its version byte.
pub fn decode_response(bytes: &[u8]) -> Option<Response> {
    match bytes.first()? {
        &NAT_PMP_VERSION => NatPmpResponse::decode(bytes).map(Response::NatPmp),
        _ => PcpResponse::decode(bytes).map(Response::Pcp),
    }
}

/// `ip` as PCP carries IPv4 addresses: `::ffff:a.b.c.d` (RFC 6887 section 5).
pub fn mapped(ip: Ipv4Addr) -> Ipv6Addr {
    ip.to_ipv6_mapped()
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn ipv6(bytes: &[u8], at: usize) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}
