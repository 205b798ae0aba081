//! Two routers as nodes of one cluster, with the shared store played in memory: what the
//! routers ask of the cluster is done here as `traversal::cluster` does it against Redis.

// A test's virtual clock starts at any instant; none is read again.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use super::cluster::{CallRef, Claimed, ClusterOut, Envelope, Node, NodeMessage};
use super::*;
use crate::server::unhex;
use ed25519_dalek::{Signer, SigningKey};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Node `n`'s relay address.
fn node_addr(n: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + n as u8], 3478))
}

/// A client's mapped address.
fn client(conn: ConnId) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 1], 40_000 + u16::try_from(conn).unwrap()))
}

fn hello() -> E2eHello {
    E2eHello {
        ephemeral: "11".repeat(32),
        signature: "22".repeat(64),
    }
}

/// The nodes, the store (names, presence) and what each node's clients heard.
struct Lab {
    nodes: Vec<Calls>,
    names: HashMap<String, [u8; 32]>,
    presence: HashMap<String, usize>,
    heard: Vec<Vec<(ConnId, ServerMessage)>>,
    undeliverable: usize,
    now: Instant,
}

impl Lab {
    fn new(n: usize) -> Lab {
        let nodes = (0..n)
            .map(|i| {
                let mut calls = Calls::new(
                    CallsConfig {
                        limits: LimitsConfig::none(),
                        ..CallsConfig::default()
                    },
                    [i as u8 + 1; 32],
                );
                calls.join_cluster(Node {
                    id: node_addr(i).to_string(),
                    relay: node_addr(i),
                });
                calls
            })
            .collect();
        Lab {
            nodes,
            names: HashMap::new(),
            presence: HashMap::new(),
            heard: vec![Vec::new(); n],
            undeliverable: 0,
            now: Instant::now(),
        }
    }

    fn index(id: &str) -> usize {
        (0..8).find(|i| node_addr(*i).to_string() == id).unwrap()
    }

    /// Runs every node's outputs until nothing is left; returns what clients heard since.
    fn settle(&mut self) -> Vec<Vec<(ConnId, ServerMessage)>> {
        loop {
            let mut busy = false;
            for n in 0..self.nodes.len() {
                while let Some(signal) = self.nodes[n].poll_signal() {
                    self.heard[n].push(signal);
                    busy = true;
                }
                while let Some(out) = self.nodes[n].poll_cluster() {
                    busy = true;
                    self.store(n, out);
                }
            }
            if !busy {
                return self.heard.iter_mut().map(std::mem::take).collect();
            }
        }
    }

    fn store(&mut self, n: usize, out: ClusterOut) {
        match out {
            ClusterOut::Claim {
                conn, name, key, ..
            } => {
                let bound = *self.names.entry(name.clone()).or_insert(key);
                let claimed = if bound == key {
                    Claimed::Bound
                } else {
                    Claimed::Taken(bound)
                };
                self.nodes[n].claimed(conn, &name, key, claimed);
            }
            ClusterOut::Online { name } => {
                if let Some(old) = self.presence.insert(name.clone(), n)
                    && old != n
                {
                    self.deliver(n, old, NodeMessage::Moved { name });
                }
            }
            ClusterOut::Offline { name } => {
                if self.presence.get(&name) == Some(&n) {
                    self.presence.remove(&name);
                }
            }
            ClusterOut::Send {
                node,
                name,
                call,
                message,
            } => {
                let to = match node {
                    Some(id) => Some(Self::index(&id)),
                    None => self.presence.get(&name).copied(),
                };
                match to {
                    Some(to) => self.deliver(n, to, *message),
                    None => {
                        self.undeliverable += 1;
                        self.nodes[n].undeliverable(&call.unwrap());
                    }
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, message: NodeMessage) {
        let envelope = Envelope {
            from: node_addr(from).to_string(),
            message,
        };
        // Through JSON, as on the wire.
        let text = serde_json::to_string(&envelope).unwrap();
        self.nodes[to].from_node(self.now, serde_json::from_str(&text).unwrap());
    }

    /// Registers `name` with `key` from `conn` on node `n`, mapped at `client(conn)`.
    fn join(&mut self, n: usize, conn: ConnId, name: &str, key: &SigningKey) -> ServerMessage {
        let calls = &mut self.nodes[n];
        let challenge = unhex(&calls.open(conn)).unwrap();
        let sig = key.sign(&registration_message(name, &challenge));
        let pk = hex(key.verifying_key().as_bytes());
        calls.register(self.now, conn, name, &pk, &hex(&sig.to_bytes()));
        calls.set_mapped(conn, Some(client(conn)));
        let mut heard = self.settle();
        heard[n].pop().unwrap().1
    }
}

fn frame(ch: u16, token: &str, media: &[u8]) -> Vec<u8> {
    let token: [u8; 8] = unhex(token).unwrap().try_into().unwrap();
    let mut out = Vec::new();
    channel::encode_relay_into(ch, token, media, &mut out).unwrap();
    out
}

#[test]
fn a_call_between_two_nodes_rings_connects_relays_both_ways_and_hangs_up() {
    let mut lab = Lab::new(2);
    let registered = |name: &str| ServerMessage::Registered { name: name.into() };
    assert_eq!(lab.join(0, 1, "alice", &key(1)), registered("alice"));
    assert_eq!(lab.join(1, 1, "bob", &key(2)), registered("bob"));

    lab.nodes[0].call(lab.now, 1, 5, "bob", vec![client(1)], "c0ffee".into());
    let heard = lab.settle();
    assert!(heard[0].is_empty(), "{heard:?}");
    let [
        (
            1,
            ServerMessage::Incoming {
                call_id: 5,
                from,
                key: k,
                commitment,
                ..
            },
        ),
    ] = &heard[1][..]
    else {
        panic!("{heard:?}")
    };
    assert_eq!((from.as_str(), commitment.as_str()), ("alice", "c0ffee"));
    assert_eq!(*k, hex(key(1).verifying_key().as_bytes()));

    lab.nodes[1].ringing(1, 5);
    let heard = lab.settle();
    assert_eq!(heard[0], [(1, ServerMessage::Ringing { call_id: 5 })]);

    lab.nodes[1].accept(1, 5, vec![client(1)], hello());
    let heard = lab.settle();
    let [
        (
            1,
            ServerMessage::Connected {
                channel: ch_a,
                relay_token: t_a,
                peer_key,
                e2e: Some(_),
                ..
            },
        ),
    ] = &heard[0][..]
    else {
        panic!("{heard:?}")
    };
    assert_eq!(*peer_key, hex(key(2).verifying_key().as_bytes()));
    let [
        (
            1,
            ServerMessage::Connected {
                channel: ch_b,
                relay_token: t_b,
                peer_key,
                e2e: None,
                ..
            },
        ),
    ] = &heard[1][..]
    else {
        panic!("{heard:?}")
    };
    assert_eq!(ch_a, ch_b, "one channel for the call on both nodes");
    assert_eq!(*peer_key, hex(key(1).verifying_key().as_bytes()));

    // alice -> node 0 -> node 1 -> bob, and back; each hop with the receiver's token.
    let now = lab.now;
    let (to, trunk) = lab.nodes[0]
        .relay(now, client(1), &frame(*ch_a, t_a, b"hi"))
        .unwrap();
    assert_eq!(to, node_addr(1));
    let (to, at_bob) = lab.nodes[1].relay(now, node_addr(0), &trunk).unwrap();
    assert_eq!(to, client(1));
    assert_eq!(at_bob, frame(*ch_a, t_b, b"hi"));
    let (to, trunk) = lab.nodes[1]
        .relay(now, client(1), &frame(*ch_a, t_b, b"yo"))
        .unwrap();
    assert_eq!(to, node_addr(0));
    let (to, at_alice) = lab.nodes[0].relay(now, node_addr(1), &trunk).unwrap();
    assert_eq!((to, at_alice), (client(1), frame(*ch_a, t_a, b"yo")));
    // The trunk's frames from anywhere but the other node go nowhere.
    assert!(lab.nodes[0].relay(now, client(9), &trunk).is_none());

    lab.nodes[0].hang_up(1, 5);
    let heard = lab.settle();
    assert_eq!(
        heard[1],
        [(
            1,
            ServerMessage::Ended {
                call_id: 5,
                reason: EndReason::HungUp
            }
        )]
    );
    for node in &lab.nodes {
        let stats = node.stats();
        assert_eq!((stats.calls, stats.routes), (0, 0), "{stats:?}");
        assert!(node.remote_nodes().is_empty());
    }
}

#[test]
fn names_are_owned_across_nodes() {
    let mut lab = Lab::new(2);
    assert!(matches!(
        lab.join(0, 1, "carol", &key(3)),
        ServerMessage::Registered { .. }
    ));
    // Another key on the other node: taken (the store said so; now cached there too).
    let refused = lab.join(1, 1, "carol", &key(4));
    assert!(
        matches!(&refused, ServerMessage::Error { code, .. } if code == "name_taken"),
        "{refused:?}"
    );
    // The owner's key on the other node: registered, and the first node's registration is
    // stale (the client moved), so calls to carol reach the second node.
    assert!(matches!(
        lab.join(1, 2, "carol", &key(3)),
        ServerMessage::Registered { .. }
    ));
    assert_eq!(lab.presence["carol"], 1);
    assert_eq!(lab.nodes[0].online_names(), Vec::<String>::new());
    assert_eq!(lab.nodes[1].online_names(), ["carol"]);
}

#[test]
fn rejects_cancels_and_lost_parties_cross_nodes_with_their_reasons() {
    let mut lab = Lab::new(2);
    lab.join(0, 1, "alice", &key(1));
    lab.join(1, 1, "bob", &key(2));
    let ended = |call_id, reason| ServerMessage::Ended { call_id, reason };

    lab.nodes[0].call(lab.now, 1, 1, "bob", vec![], String::new());
    lab.settle();
    lab.nodes[1].reject(1, 1, EndReason::Busy);
    assert_eq!(lab.settle()[0], [(1, ended(1, EndReason::Busy))]);

    lab.nodes[0].call(lab.now, 1, 2, "bob", vec![], String::new());
    lab.settle();
    lab.nodes[0].hang_up(1, 2);
    assert_eq!(lab.settle()[1], [(1, ended(2, EndReason::Cancelled))]);

    // The callee's connection drops while it rings.
    lab.nodes[0].call(lab.now, 1, 3, "bob", vec![], String::new());
    lab.settle();
    lab.nodes[1].closed(1);
    assert_eq!(lab.settle()[0], [(1, ended(3, EndReason::PeerLost))]);

    // Nobody holds the name anywhere now.
    lab.nodes[0].call(lab.now, 1, 4, "bob", vec![], String::new());
    assert_eq!(lab.settle()[0], [(1, ended(4, EndReason::Offline))]);
    assert_eq!(lab.undeliverable, 1);
    for node in &lab.nodes {
        assert_eq!(node.stats().calls, 0);
    }
}

#[test]
fn a_lost_node_ends_relayed_calls_and_leaves_direct_ones_to_their_clients() {
    let mut lab = Lab::new(3);
    lab.join(0, 1, "alice", &key(1));
    lab.join(0, 2, "dave", &key(4));
    lab.join(1, 1, "bob", &key(2));
    lab.join(1, 2, "carol", &key(3));
    // alice-bob relayed, dave-carol direct (nothing relayed).
    let mut tokens = Vec::new();
    for (caller, callee, id) in [(1, "bob", 1u64), (2, "carol", 2)] {
        lab.nodes[0].call(lab.now, caller, id, callee, vec![], String::new());
        lab.settle();
        let conn = if callee == "bob" { 1 } else { 2 };
        lab.nodes[1].accept(conn, id, vec![], hello());
        let heard = lab.settle();
        let ServerMessage::Connected {
            channel,
            relay_token,
            ..
        } = &heard[0][0].1
        else {
            panic!("{heard:?}")
        };
        tokens.push((*channel, relay_token.clone()));
    }
    let (ch, token) = &tokens[0];
    assert!(
        lab.nodes[0]
            .relay(lab.now, client(1), &frame(*ch, token, b"hi"))
            .is_some()
    );
    assert_eq!(lab.nodes[0].remote_nodes(), [node_addr(1).to_string()]);
    // Last seen alive a second after the frame, noticed five seconds later.
    let last_alive = lab.now + Duration::from_secs(1);
    lab.now += Duration::from_secs(6);
    let now = lab.now;
    lab.nodes[0].node_lost(last_alive, &node_addr(1).to_string());
    let heard = lab.settle();
    assert_eq!(
        heard[0],
        [(
            1,
            ServerMessage::Ended {
                call_id: 1,
                reason: EndReason::PeerLost
            }
        )],
        "dave's direct call is not ended"
    );
    assert_eq!(lab.nodes[0].stats().calls, 0);
    assert!(lab.nodes[0].remote_nodes().is_empty());
    // A stale message for a forgotten call changes nothing.
    lab.nodes[0].from_node(
        now,
        Envelope {
            from: node_addr(1).to_string(),
            message: NodeMessage::Ended {
                call: CallRef {
                    origin: node_addr(0).to_string(),
                    id: cluster::REMOTE_BASE + 1,
                },
                reason: EndReason::HungUp,
            },
        },
    );
    assert!(lab.settle()[0].is_empty());
}

#[test]
fn forged_node_messages_change_nothing() {
    let mut lab = Lab::new(2);
    lab.join(0, 1, "alice", &key(1));
    lab.join(1, 1, "bob", &key(2));
    lab.nodes[0].call(lab.now, 1, 1, "bob", vec![], String::new());
    lab.settle();
    lab.nodes[1].ringing(1, 1);
    lab.settle();
    // A third node speaking for bob's node is not heard.
    let call = CallRef {
        origin: node_addr(0).to_string(),
        id: cluster::REMOTE_BASE + 1,
    };
    let now = lab.now;
    lab.nodes[0].from_node(
        now,
        Envelope {
            from: node_addr(5).to_string(),
            message: NodeMessage::Ended {
                call: call.clone(),
                reason: EndReason::Rejected,
            },
        },
    );
    assert!(lab.settle()[0].is_empty());
    assert_eq!(lab.nodes[0].stats().calls, 1);
    // An invitation with a bad key, token or channel is dropped.
    for (key, token, channel) in [
        ("zz", "00".repeat(8), 0x4001),
        (&"00".repeat(32)[..], "00".into(), 0x4001),
        (&"00".repeat(32)[..], "00".repeat(8), 0x7000),
    ] {
        lab.nodes[1].from_node(
            now,
            Envelope {
                from: node_addr(0).to_string(),
                message: NodeMessage::Invite {
                    call: CallRef {
                        origin: node_addr(0).to_string(),
                        id: 99,
                    },
                    call_id: 9,
                    from: "mallory".into(),
                    from_key: key.to_string(),
                    to: "bob".into(),
                    candidates: vec![],
                    commitment: String::new(),
                    channel,
                    token,
                    relay: node_addr(0),
                    source: None,
                },
            },
        );
    }
    assert!(lab.settle()[1].is_empty());
}
