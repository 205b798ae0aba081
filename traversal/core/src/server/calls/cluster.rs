//! The call router as a node of a cluster, sans-IO: nodes share name bindings and presence,
//! and a call between clients of two nodes is signalled between the nodes and relayed by both
//! (`docs/cluster.md`). The driver (`traversal::cluster`) does the I/O against Redis.
//!
//! - **Names**: the node's name table is a cache of the cluster's bindings (which never change
//!   once made). A registration whose name the cache does not hold is not bound here: the
//!   router asks for a [`ClusterOut::Claim`] (the driver binds it atomically in the shared
//!   store: taken, lookalike and the key's quota checked there) and finishes the registration
//!   when [`Calls::claimed`] gives the answer.
//! - **Presence**: a name registered here is announced ([`ClusterOut::Online`]) and withdrawn
//!   ([`ClusterOut::Offline`]); another node that takes a name over tells this one
//!   ([`NodeMessage::Moved`]).
//! - **Calls across nodes**: the other node's party of a call is a *remote party*, a client
//!   entry with a connection id of its own ([`REMOTE_BASE`] and up) and no control connection.
//!   What the router says to it becomes a [`NodeMessage`] for its node (through
//!   [`ClusterOut::Send`]), and what its node says arrives through [`Calls::from_node`] as if the
//!   party had said it here. Its "mapped address" is its node's relay address, so each node
//!   relays between its own client and the other node ([`super::relay`]'s trunks); the channel
//!   and the trunk token are chosen by the caller's node and carried in the invitation.
//!
//! Identifiers: a cross-node call is named by a [`CallRef`], the caller node's id and the
//! connection id of its remote party there; every message of the call carries it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{CallKey, Calls, Client, E2eHello, EndReason, ServerMessage, State};
use crate::channel;
use crate::server::{ConnId, hex, unhex};

/// Connection ids of remote parties start here (the driver numbers control connections from
/// 0, far below).
pub const REMOTE_BASE: ConnId = 1 << 62;

/// A call between two nodes' clients that crossed the cluster within this time before the
/// other node was last seen alive was relayed, and ends with that node; otherwise it went
/// direct and is left to its clients. (Voice is 50 frames a second.)
pub const RELAYED_WITHIN: Duration = Duration::from_secs(3);

/// This node, as the others know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's id: its advertised address, as text.
    pub id: String,
    /// Where the other nodes send relay frames for this node's calls (its UDP address).
    pub relay: SocketAddr,
}

/// A cross-node call: the caller's node and the id of the callee's remote party there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallRef {
    pub origin: String,
    pub id: u64,
}

/// A message from one node to another, about a call or a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// A client of the sending node calls `to`, registered on the receiving node.
    Invite {
        call: CallRef,
        call_id: u64,
        from: String,
        /// The caller's name key, hex.
        from_key: String,
        to: String,
        candidates: Vec<SocketAddr>,
        commitment: String,
        /// The call's relay channel.
        channel: u16,
        /// The trunk's relay token, hex: frames between the two nodes for this call carry it.
        token: String,
        /// The sending node's relay address.
        relay: SocketAddr,
        /// The caller's address as the per-address limits key it (for the receiving node's
        /// ring limits).
        source: Option<u64>,
    },
    /// The callee's phone rings.
    Ringing { call: CallRef },
    /// The callee accepted.
    Accepted {
        call: CallRef,
        candidates: Vec<SocketAddr>,
        e2e: E2eHello,
        /// The callee's name key, hex.
        callee_key: String,
        /// The callee node's relay address.
        relay: SocketAddr,
    },
    /// The caller's half of the key exchange.
    Reveal { call: CallRef, e2e: E2eHello },
    /// The call is over, for `reason` (as the receiving node's client is to hear it).
    Ended { call: CallRef, reason: EndReason },
    /// `name` registered on the sending node: the receiving node's registration of it is stale.
    Moved { name: String },
}

/// A message between nodes with its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node's id.
    pub from: String,
    pub message: NodeMessage,
}

/// What the router asks of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOut {
    /// Bind `name` to `key` for good if it is free (no other name with the same `skeleton`,
    /// fewer than `per_key` names held by the key); answer with [`Calls::claimed`].
    Claim {
        conn: ConnId,
        name: String,
        key: [u8; 32],
        skeleton: String,
        per_key: usize,
    },
    /// `name` is registered on this node now.
    Online { name: String },
    /// `name` is no longer registered on this node.
    Offline { name: String },
    /// Deliver `message` to `node`, or with `None` to whichever node holds `name`'s
    /// registration. When it cannot be delivered (nobody holds the name, the node is gone),
    /// tell [`Calls::undeliverable`] with `call`.
    Send {
        node: Option<String>,
        name: String,
        call: Option<CallRef>,
        message: Box<NodeMessage>,
    },
}

/// The cluster's answer to a [`ClusterOut::Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Bound to the key (now, or before).
    Bound,
    /// Bound to another key (given, for the cache).
    Taken([u8; 32]),
    /// Another name with the same skeleton is bound.
    Confusable,
    /// The key holds as many names as it may.
    KeyQuota,
    /// The shared store did not answer.
    Unavailable,
}

/// The other node's party of a call, on this node.
#[derive(Debug)]
pub(super) struct Remote {
    /// The node holding the party's registration; `None` until it answered an invitation.
    pub(super) node: Option<String>,
    pub(super) call: CallRef,
    /// The party's name key (zero until its node said).
    pub(super) key: [u8; 32],
}

/// The router's cluster state.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    pub(super) node: Option<Node>,
    pub(super) out: std::collections::VecDeque<ClusterOut>,
    /// Remote parties by their call.
    pub(super) remotes: HashMap<CallRef, ConnId>,
    /// Remote parties by connection id (their client entry holds name, mapping and call).
    pub(super) parties: HashMap<ConnId, Remote>,
    next_remote: u64,
    /// Registrations waiting for their claim: the name and key.
    pub(super) claims: HashMap<ConnId, (Box<str>, [u8; 32])>,
}

impl Calls {
    /// Makes the router a node of a cluster (before any connection).
    pub fn join_cluster(&mut self, node: Node) {
        self.cluster.node = Some(node);
    }

    /// This node, in a cluster.
    pub fn node(&self) -> Option<&Node> {
        self.cluster.node.as_ref()
    }

    /// The next thing to do against the cluster.
    pub fn poll_cluster(&mut self) -> Option<ClusterOut> {
        self.cluster.out.pop_front()
    }

    /// The names registered on this node (to announce again after the store came back).
    pub fn online_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.online.keys().map(|n| n.to_string()).collect();
        names.sort_unstable();
        names
    }

    /// Parties of cross-node calls held here (one per call with another node).
    pub fn remote_parties(&self) -> usize {
        self.cluster.remotes.len()
    }

    /// The nodes this node has calls with (whose loss the driver watches for).
    pub fn remote_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .cluster
            .remotes
            .values()
            .filter_map(|conn| self.cluster.parties.get(conn)?.node.clone())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The answer to a [`ClusterOut::Claim`]: the registration goes on or is refused. The
    /// binding is cached either way.
    pub fn claimed(&mut self, conn: ConnId, name: &str, key: [u8; 32], claimed: Claimed) {
        match claimed {
            Claimed::Bound => self.names.insert_bound(name, key),
            Claimed::Taken(owner) => self.names.insert_bound(name, owner),
            _ => {}
        }
        let pending = self.cluster.claims.remove(&conn);
        if pending
            .as_ref()
            .is_none_or(|(n, k)| **n != *name || *k != key)
        {
            return; // The connection closed meanwhile, or asked for something else since.
        }
        match claimed {
            Claimed::Bound => self.complete_registration(conn, name),
            Claimed::Taken(_) => {
                self.refuse(conn, "name_taken", "this name belongs to another key")
            }
            Claimed::Confusable => self.refuse(
                conn,
                "name_confusable",
                "this name looks like a name that belongs to another key",
            ),
            Claimed::KeyQuota => self.refuse(
                conn,
                "too_many_names",
                "this key holds as many names as it may",
            ),
            Claimed::Unavailable => self.refuse(
                conn,
                "try_later",
                "the server cannot reach its name store just now: try again in a moment",
            ),
        }
    }

    /// A message from another node.
    pub fn from_node(&mut self, now: Instant, envelope: Envelope) {
        let Envelope { from, message } = envelope;
        match message {
            NodeMessage::Invite {
                call,
                call_id,
                from: caller,
                from_key,
                to,
                candidates,
                commitment,
                channel,
                token,
                relay,
                source,
            } => {
                let key = unhex(&from_key).and_then(|k| <[u8; 32]>::try_from(k).ok());
                let token = unhex(&token).and_then(|t| <[u8; 8]>::try_from(t).ok());
                let (Some(key), Some(token)) = (key, token) else {
                    tracing::warn!(from, "an invitation with a bad key or token: dropped");
                    return;
                };
                if !channel::is_valid_channel(channel) || self.cluster.remotes.contains_key(&call) {
                    return;
                }
                let invite = Invite {
                    call,
                    call_id,
                    caller,
                    key,
                    to,
                    candidates,
                    commitment,
                    channel,
                    token,
                    relay,
                    source,
                };
                self.invited(now, from, invite);
            }
            NodeMessage::Ringing { call } => {
                if let Some((conn, call_id)) = self.remote_call(&from, &call) {
                    self.ringing(conn, call_id);
                }
            }
            NodeMessage::Accepted {
                call,
                candidates,
                e2e,
                callee_key,
                relay,
            } => {
                let Some((conn, call_id)) = self.remote_call(&from, &call) else {
                    return;
                };
                let key = unhex(&callee_key).and_then(|k| <[u8; 32]>::try_from(k).ok());
                if let Some(remote) = self.cluster.parties.get_mut(&conn) {
                    remote.key = key.unwrap_or_default();
                }
                if let Some(c) = self.clients.get_mut(&conn) {
                    c.mapped = Some(relay);
                }
                self.accept(conn, call_id, candidates, e2e);
            }
            NodeMessage::Reveal { call, e2e } => {
                if let Some((conn, call_id)) = self.remote_call(&from, &call) {
                    self.reveal(conn, call_id, e2e);
                }
            }
            NodeMessage::Ended { call, reason } => {
                if let Some((conn, _)) = self.remote_call(&from, &call) {
                    self.end_call_of(conn, None, reason);
                    self.drop_remote(conn);
                }
            }
            NodeMessage::Moved { name } => self.moved(&name),
        }
    }

    /// A message of `call` could not be delivered: its call ends (`offline` while it rings:
    /// nobody holds the name; `peer_lost` once connected: the node is gone).
    pub fn undeliverable(&mut self, call: &CallRef) {
        let Some(&conn) = self.cluster.remotes.get(call) else {
            return;
        };
        let ringing = self
            .clients
            .get(&conn)
            .and_then(|c| self.calls.get(&c.call?))
            .is_some_and(|c| matches!(c.state, State::Ringing { .. }));
        let reason = if ringing {
            EndReason::Offline
        } else {
            EndReason::PeerLost
        };
        self.end_call_of(conn, None, reason);
        self.drop_remote(conn);
    }

    /// `node` is gone (its liveness expired; it was last seen alive at `last_alive`). Its
    /// calls that were relayed (a frame crossed within [`RELAYED_WITHIN`] before
    /// `last_alive`), or not yet up, end for this node's clients with `peer_lost`; calls that
    /// went direct are left to their clients (their media does not cross the nodes; a hang-up
    /// reaches the peer directly).
    pub fn node_lost(&mut self, last_alive: Instant, node: &str) {
        let since = last_alive.checked_sub(RELAYED_WITHIN).unwrap_or(last_alive);
        let mut lost: Vec<ConnId> = self
            .cluster
            .remotes
            .values()
            .copied()
            .filter(|conn| {
                self.cluster
                    .parties
                    .get(conn)
                    .is_some_and(|r| r.node.as_deref() == Some(node))
            })
            .collect();
        lost.sort_unstable();
        for conn in lost {
            let relayed_or_ringing = self
                .clients
                .get(&conn)
                .and_then(|c| self.calls.get(&c.call?))
                .is_none_or(|call| {
                    call.state != State::Connected
                        || self.relay.forwarded_since(call.sources, since)
                });
            if relayed_or_ringing {
                tracing::info!(node, "a node with a relayed call is gone: the call ends");
                self.end_call_of(conn, None, EndReason::PeerLost);
            } else if let Some(key) = self.clients.get(&conn).and_then(|c| c.call) {
                // Direct: the call stays up between its clients; this node forgets it.
                self.end_call(key, None, None);
            }
            self.drop_remote(conn);
        }
    }

    /// A call to `to`, who is not registered on this node: the callee is a remote party,
    /// located through the cluster. `None` outside a cluster.
    pub(super) fn remote_callee(&mut self, to: &str) -> Option<ConnId> {
        let origin = self.cluster.node.as_ref()?.id.clone();
        let conn = self.new_remote_conn();
        let call = CallRef { origin, id: conn };
        self.add_remote(
            conn,
            to,
            None,
            Remote {
                node: None,
                call,
                key: [0; 32],
            },
        );
        Some(conn)
    }

    /// What the router said to a remote party, as a message for its node (`None`: nothing to
    /// say there). Called for every message to a remote party; an `Ended` forgets the party.
    pub(super) fn say_to_remote(&mut self, conn: ConnId, message: ServerMessage) {
        let Some(node) = self.cluster.node.clone() else {
            return;
        };
        let (Some(c), Some(remote)) = (self.clients.get(&conn), self.cluster.parties.get(&conn))
        else {
            return;
        };
        let (name, to_node, call) = (
            c.name.as_deref().unwrap_or_default().to_string(),
            remote.node.clone(),
            remote.call.clone(),
        );
        let ours = self.calls.get(&c.call.unwrap_or(CallKey::MAX));
        let is_callee = ours.is_some_and(|k| k.callee == Some(conn));
        let message = match message {
            ServerMessage::Incoming {
                call_id,
                from,
                candidates,
                key,
                commitment,
            } => {
                let Some(ours) = ours else { return };
                let source = Some(self.source_key(ours.caller));
                NodeMessage::Invite {
                    call: call.clone(),
                    call_id,
                    from,
                    from_key: key,
                    to: name.clone(),
                    candidates,
                    commitment,
                    channel: ours.channel,
                    token: hex(&ours.tokens[1]),
                    relay: node.relay,
                    source,
                }
            }
            ServerMessage::Ringing { .. } => NodeMessage::Ringing { call: call.clone() },
            // The caller's `Connected` (to a remote caller): the callee accepted here.
            ServerMessage::Connected {
                candidates,
                peer_key,
                e2e: Some(e2e),
                ..
            } if !is_callee => NodeMessage::Accepted {
                call: call.clone(),
                candidates,
                e2e,
                callee_key: peer_key,
                relay: node.relay,
            },
            ServerMessage::Reveal { e2e, .. } => NodeMessage::Reveal {
                call: call.clone(),
                e2e,
            },
            ServerMessage::Ended { reason, .. } => {
                self.drop_remote(conn);
                NodeMessage::Ended {
                    call: call.clone(),
                    reason,
                }
            }
            // The callee's own `Connected` went out on its node; errors and the rest concern
            // no one there.
            _ => return,
        };
        self.cluster.out.push_back(ClusterOut::Send {
            node: to_node,
            name,
            call: Some(call),
            message: Box::new(message),
        });
    }

    /// An invitation from `from_node` for a client of this node.
    fn invited(&mut self, now: Instant, from_node: String, invite: Invite) {
        let conn = self.new_remote_conn();
        self.add_remote(
            conn,
            &invite.caller,
            Some(invite.relay),
            Remote {
                node: Some(from_node),
                call: invite.call.clone(),
                key: invite.key,
            },
        );
        if let Some(source) = invite.source {
            self.set_source_key(conn, source);
        }
        let call_id = invite.call_id;
        let Some(&callee) = self.online.get(invite.to.as_str()) else {
            self.ended(conn, call_id, EndReason::Offline);
            return;
        };
        match self.admit_ring(now, conn, call_id, invite.key, (callee, &invite.to)) {
            super::limits::Ring::Go => {}
            super::limits::Ring::Refused => return,
            super::limits::Ring::Busy => {
                self.ended(conn, call_id, EndReason::Busy);
                return;
            }
        }
        let deadline = now.checked_add(self.config.ring_timeout).unwrap_or(now);
        let key = self.new_call(
            call_id,
            conn,
            Some(callee),
            State::Ringing { deadline },
            invite.candidates.clone(),
            invite.key,
        );
        // The caller's node chose the channel and the trunk's token.
        if let Some(call) = self.calls.get_mut(&key) {
            call.channel = invite.channel;
            call.tokens[0] = invite.token;
        }
        self.out.push_back((
            callee,
            ServerMessage::Incoming {
                call_id,
                from: invite.caller,
                candidates: invite.candidates,
                key: hex(&invite.key),
                commitment: invite.commitment,
            },
        ));
    }

    /// `name` registered on another node: its registration here is stale (the client moved).
    fn moved(&mut self, name: &str) {
        let Some(&old) = self.online.get(name) else {
            return;
        };
        self.end_call_of(old, Some(EndReason::ServerError), EndReason::PeerLost);
        if let Some(o) = self.clients.get_mut(&old) {
            o.name = None;
        }
        self.online.remove(name);
        self.error(
            old,
            "replaced",
            "the name was registered again on another server",
        );
    }

    /// The remote party of `call` from `node` and its call's client id. The first node to
    /// answer an invitation is the party's node from then on; no other speaks for it.
    fn remote_call(&mut self, node: &str, call: &CallRef) -> Option<(ConnId, u64)> {
        let &conn = self.cluster.remotes.get(call)?;
        let remote = self.cluster.parties.get_mut(&conn)?;
        match &remote.node {
            Some(n) if n != node => return None,
            Some(_) => {}
            None => remote.node = Some(node.to_string()),
        }
        Some((conn, self.calls.get(&self.clients.get(&conn)?.call?)?.id))
    }

    fn new_remote_conn(&mut self) -> ConnId {
        self.cluster.next_remote += 1;
        REMOTE_BASE + self.cluster.next_remote
    }

    fn add_remote(&mut self, conn: ConnId, name: &str, mapped: Option<SocketAddr>, remote: Remote) {
        self.cluster.remotes.insert(remote.call.clone(), conn);
        self.cluster.parties.insert(conn, remote);
        self.clients.insert(
            conn,
            Client {
                name: Some(name.into()),
                challenge: [0; super::CHALLENGE_LEN],
                mapped,
                call: None,
            },
        );
    }

    /// Forgets a remote party (its call is over).
    fn drop_remote(&mut self, conn: ConnId) {
        self.clients.remove(&conn);
        if let Some(remote) = self.cluster.parties.remove(&conn) {
            self.cluster.remotes.remove(&remote.call);
        }
        self.limits.closed(conn);
    }
}

/// A parsed [`NodeMessage::Invite`].
struct Invite {
    call: CallRef,
    call_id: u64,
    caller: String,
    key: [u8; 32],
    to: String,
    candidates: Vec<SocketAddr>,
    commitment: String,
    channel: u16,
    token: [u8; channel::TOKEN_LEN],
    relay: SocketAddr,
    source: Option<u64>,
}
