//! The phone's control connection: connecting, registering (the exchange and the name),
//! pings, losing the server and connecting again with back-off.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::types::{Event, Registration, ServerLoss, StopReason, TcpAction, Transmit};
use super::{Call, EndReason, Link, Local, MAX_RETRY_AFTER, MediaPath, Phone, RETRY_SPREAD};
use crate::calls::MAX_CANDIDATES;
use crate::client::{self, Socket};
use crate::control::ClientMessage;

impl Phone {
    pub(super) fn connect(&mut self, now: Instant) {
        self.link = Link::Connecting {
            deadline: now + self.config.register_timeout,
        };
        let server = self.server_name();
        if self.server_count() > 1 {
            tracing::info!(server, "connecting");
        }
        self.tcp.push_back(TcpAction::Connect { server });
        self.events
            .push_back(Event::Registration(Registration::Connecting));
    }

    /// The control connection is gone or useless: calls that need it end, and the phone
    /// connects again after the back-off (or stops, when it never got online). A session
    /// kept for a relayed call after `going_away` ends here when the server stops: the phone
    /// connects again at the time the server gave.
    pub(super) fn lose_server(&mut self, now: Instant, reason: ServerLoss) {
        let going_away = match &self.link {
            Link::Up(session) => session.going_away,
            _ => None,
        };
        let reason = if going_away.is_some() {
            ServerLoss::ShuttingDown
        } else {
            reason
        };
        let server = self.server_name();
        if reason == ServerLoss::ShuttingDown {
            tracing::info!(server, "the server is gone, as it said it would");
            self.server_went_away = true;
        } else {
            tracing::warn!(server, ?reason, "lost the server");
        }
        if matches!(self.link, Link::Up(_)) {
            self.tcp.push_back(TcpAction::Close);
            // Gone: nothing below sends on it any more.
            self.link = Link::Stopped;
        }
        let grace = self.config.relay_grace;
        let keep = match &mut self.call {
            Call::Idle | Call::Waiting { .. } => true,
            Call::Up(up) => match up.path {
                MediaPath::Direct(_) => true,
                // On the relay, but the peer's checks reach us: the direct path is moments
                // away (the other side may have it already). Wait for it, briefly.
                MediaPath::Relay { .. }
                    if up
                        .punch
                        .as_ref()
                        .is_some_and(|p| !p.is_closed() && p.stats().checks_received > 0) =>
                {
                    up.relay_orphaned_until.get_or_insert(now + grace);
                    true
                }
                MediaPath::Relay { .. } => false,
            },
            _ => false,
        };
        if !keep {
            self.finish(now, self.server_loss_end());
        }
        if let Some(retry_at) = going_away {
            // Offline since `going_away` already (which chose when, and where, to go next).
            self.next_server_after_going_away();
            self.link = Link::Waiting {
                retry_at: retry_at.max(now),
            };
            return;
        }
        self.round_failures += 1;
        let round_failed = self.round_failures >= self.server_count();
        if !self.ever_online
            && self.config.stop_if_first_connect_fails
            && reason != ServerLoss::ShuttingDown
            && round_failed
        {
            self.stop(
                now,
                StopReason::Unreachable {
                    detail: reason.detail(),
                },
            );
            return;
        }
        self.next_server();
        let retry_at = if round_failed {
            // Every server failed in turn: wait before the next round.
            self.round_failures = 0;
            let retry_at = now + self.backoff;
            self.backoff = (self.backoff * 2)
                .max(self.config.backoff_min)
                .min(self.config.backoff_max);
            retry_at
        } else {
            // Another server of the list has not been tried yet: at once.
            now
        };
        self.link = Link::Waiting { retry_at };
        self.events
            .push_back(Event::Registration(Registration::Offline {
                reason,
                retry_at,
            }));
    }

    pub(super) fn stop(&mut self, now: Instant, reason: StopReason) {
        tracing::warn!(%reason, "the phone stops");
        if matches!(self.link, Link::Up(_)) {
            self.tcp.push_back(TcpAction::Close);
        }
        self.link = Link::Stopped;
        // Nothing reaches the server any more: a call in progress ends here.
        self.finish(now, EndReason::ServerLost);
        self.events.push_back(Event::Stopped(reason));
    }

    /// `going_away`: the server is shutting down and asks to be left alone for
    /// `retry_after`. The registration goes offline ([`ServerLoss::ShuttingDown`]); a direct
    /// call goes on, calls not yet up end, and a call on the relay keeps the session until it
    /// ends (the server relays it through its grace). See the module documentation.
    pub(super) fn handle_going_away(&mut self, now: Instant, retry_after: Duration) {
        let Link::Up(session) = &self.link else {
            return;
        };
        if session.going_away.is_some() {
            return;
        }
        let spread = RETRY_SPREAD.mul_f64(f64::from(self.rng.next_u32()) / f64::from(u32::MAX));
        // With another server listed that has not failed in this round: go there now (spread,
        // so that the clients of a server do not all arrive at the same instant), rather than
        // wait for this one to come back. Else at the time the server gave.
        self.round_failures += 1;
        let elsewhere = self.round_failures < self.server_count();
        if !elsewhere {
            self.round_failures = 0;
        }
        let retry_at = if elsewhere {
            now + spread
        } else {
            now + retry_after.min(MAX_RETRY_AFTER) + spread
        };
        tracing::info!(
            server = self.server_name(),
            ?retry_after,
            elsewhere,
            "the server is going away"
        );
        self.server_went_away = true;
        // The server is there and said when to come back: failing to reach it while it
        // restarts is not a first connection that failed (no stop, the back-off instead).
        self.ever_online = true;
        // After the attempt at `retry_at`, the usual back-off.
        self.backoff = self.config.backoff_min;
        self.events
            .push_back(Event::Registration(Registration::Offline {
                reason: ServerLoss::ShuttingDown,
                retry_at,
            }));
        let on_relay =
            matches!(&self.call, Call::Up(up) if matches!(up.path, MediaPath::Relay { .. }));
        if on_relay {
            if let Link::Up(session) = &mut self.link {
                session.going_away = Some(retry_at);
            }
            return;
        }
        match &self.call {
            // The server takes no call any more; the way to the peer is still there to say so.
            Call::Placing { id, .. } | Call::Accepting { id, .. } => {
                let call_id = *id;
                self.send(&ClientMessage::HangUp { call_id });
                self.finish(now, EndReason::ServerShutDown);
            }
            Call::Ringing { id, .. } => {
                let call_id = *id;
                let reason = crate::control::EndReason::Rejected;
                self.send(&ClientMessage::Reject { call_id, reason });
                self.finish(now, EndReason::ServerShutDown);
            }
            // Placed once online again (or failed at its deadline); a direct call goes on.
            Call::Idle | Call::Waiting { .. } | Call::Up(_) => {}
        }
        self.tcp.push_back(TcpAction::Close);
        self.next_server_after_going_away();
        self.link = Link::Waiting { retry_at };
    }

    /// How many servers the phone knows (at least one).
    pub(super) fn server_count(&self) -> usize {
        self.config.servers.len().max(1)
    }

    /// The server the phone connects or is connected to, as [`PhoneConfig::servers`] names it.
    pub(super) fn server_name(&self) -> String {
        self.config
            .servers
            .get(self.server)
            .cloned()
            .unwrap_or_default()
    }

    /// Moves on to the next server of the list (round it; the same one when it lists one).
    fn next_server(&mut self) {
        self.server = (self.server + 1) % self.server_count();
    }

    /// Leaving a server that went away: the next one, unless a whole round went by (then the
    /// same server again, at the time it gave).
    pub(super) fn next_server_after_going_away(&mut self) {
        if self.round_failures > 0 {
            self.next_server();
        }
    }

    pub(super) fn ping(&mut self, now: Instant) {
        let nonce = self.rng.next_u64();
        if let Link::Up(session) = &mut self.link {
            session.ping = Some((nonce, now + self.config.server_answer_timeout));
        }
        self.send(&ClientMessage::Ping { nonce });
    }

    /// Our candidates: host addresses, then the router's port mapping, then the mapped
    /// address the server saw (the last two always kept).
    pub(super) fn candidates(&self) -> Vec<SocketAddr> {
        let Link::Up(session) = &self.link else {
            return Vec::new();
        };
        let mut public: Vec<SocketAddr> = Vec::new();
        for addr in [self.router_mapping, session.client.mapped()]
            .into_iter()
            .flatten()
        {
            if addr.is_ipv4() == session.server.is_ipv4() && !public.contains(&addr) {
                public.push(addr);
            }
        }
        let mut out: Vec<SocketAddr> = session
            .host_candidates
            .iter()
            .copied()
            .filter(|a| !public.contains(a))
            .take(MAX_CANDIDATES - public.len())
            .collect();
        out.extend(public);
        out
    }

    pub(super) fn maybe_online(&mut self, now: Instant) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        if session.online || !session.name_registered || !session.client.is_registered() {
            return;
        }
        let Some(mapped) = session.client.mapped() else {
            return;
        };
        session.online = true;
        session.next_ping = now + self.config.ping_interval;
        let verdict = session.client.verdict();
        self.ever_online = true;
        self.backoff = Duration::ZERO;
        self.round_failures = 0;
        let registration = Registration::Online {
            name: self.config.name.clone(),
            mapped,
            verdict,
            server: self.server_name(),
        };
        self.events.push_back(Event::Registration(registration));
        if let Call::Waiting { .. } = self.call
            && let Call::Waiting {
                id, peer, placed, ..
            } = std::mem::replace(&mut self.call, Call::Idle)
        {
            self.place(now, id, peer, placed);
        }
    }

    /// Moves what the exchange client queued out, and acts on its events.
    pub(super) fn drain_exchange(&mut self, now: Instant) {
        loop {
            let Link::Up(session) = &mut self.link else {
                return;
            };
            while let Some(bytes) = session.client.poll_tcp() {
                self.tcp.push_back(TcpAction::Send(bytes));
            }
            while let Some(t) = session.client.poll_transmit() {
                if t.socket == Socket::Media {
                    self.transmits.push_back(Transmit {
                        local: Local::Media,
                        destination: t.destination,
                        contents: t.contents,
                        ttl: None,
                    });
                }
            }
            let Some(event) = session.client.poll_event() else {
                return;
            };
            match event {
                client::Event::Registered { mapped, .. } => {
                    tracing::debug!(%mapped, "media socket registered");
                    if session.online {
                        let verdict = session.client.verdict();
                        let registration = Registration::Online {
                            name: self.config.name.clone(),
                            mapped,
                            verdict,
                            server: self.server_name(),
                        };
                        self.events.push_back(Event::Registration(registration));
                    } else {
                        self.maybe_online(now);
                    }
                }
                client::Event::Failed { reason } => {
                    self.lose_server(now, ServerLoss::Unreachable { detail: reason });
                    return;
                }
                other => tracing::debug!(event = ?other, "exchange"),
            }
        }
    }
}

/// The host candidates: each local address of the server's family with the media port, then,
/// with a dual-stack media socket (`ipv6`), up to [`MAX_IPV6_HOST_CANDIDATES`] global IPv6
/// addresses (a direct IPv6 pair needs no NAT traversal, only the stateful firewalls
/// punched). Loopback only when the server is on loopback (a test on one machine), and then
/// no IPv6.
pub(super) fn host_candidates(
    access: IpAddr,
    server: IpAddr,
    locals: &[IpAddr],
    port: u16,
    ipv6: bool,
) -> Vec<SocketAddr> {
    let mut out = vec![SocketAddr::new(access, port)];
    for ip in locals {
        let usable = ip.is_ipv4() == server.is_ipv4()
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && (server.is_loopback() || !ip.is_loopback())
            && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
        let candidate = SocketAddr::new(*ip, port);
        if usable && !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out.truncate(MAX_CANDIDATES - 1 - MAX_IPV6_HOST_CANDIDATES);
    if ipv6 && server.is_ipv4() && !server.is_loopback() {
        let global = locals.iter().filter_map(|ip| match ip {
            // Global unicast (2000::/3): not loopback, link-local, unique local or multicast.
            IpAddr::V6(v6) if (v6.segments()[0] & 0xe000) == 0x2000 => Some(*ip),
            _ => None,
        });
        for ip in global.take(MAX_IPV6_HOST_CANDIDATES) {
            let candidate = SocketAddr::new(ip, port);
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// At most this many IPv6 host candidates beside IPv4 ones (a host often has a stable and a
/// temporary address; more would only cost checks).
pub(super) const MAX_IPV6_HOST_CANDIDATES: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_match_the_servers_family_and_scope() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let locals = [
            ip("127.0.0.1"),
            ip("192.168.1.20"),
            ip("10.0.0.5"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::5"),
        ];
        let c = host_candidates(ip("192.168.1.20"), ip("203.0.113.7"), &locals, 5000, false);
        assert_eq!(
            c,
            vec![
                "192.168.1.20:5000".parse().unwrap(),
                "10.0.0.5:5000".parse().unwrap()
            ],
            "IPv4 only, no loopback, the access address first"
        );
        let c = host_candidates(ip("127.0.0.1"), ip("127.0.0.1"), &locals, 5000, true);
        assert_eq!(c[0], "127.0.0.1:5000".parse().unwrap());
        assert!(c.len() < MAX_CANDIDATES);
        assert!(
            c.iter().all(|c| c.is_ipv4()),
            "no IPv6 for a loopback server: {c:?}"
        );
        let c = host_candidates(ip("2001:db8::5"), ip("2001:db8::1"), &locals, 7, true);
        assert_eq!(c, vec!["[2001:db8::5]:7".parse().unwrap()], "no link-local");
    }

    #[test]
    fn a_dual_stack_socket_adds_global_ipv6_host_candidates() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let locals = [
            ip("192.168.1.20"),
            ip("::1"),
            ip("fe80::1"),
            ip("fd00::7"),
            ip("2001:db8:3:1::2"),
            ip("2001:db8:3:1::99"),
            ip("2a00::3"),
        ];
        let server = ip("203.0.113.7");
        let c = host_candidates(ip("192.168.1.20"), server, &locals, 5000, true);
        let want: Vec<SocketAddr> = [
            "192.168.1.20:5000",
            "[2001:db8:3:1::2]:5000",
            "[2001:db8:3:1::99]:5000",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            c, want,
            "global IPv6 only (no loopback, link-local, unique local), two at most"
        );
        let c = host_candidates(ip("192.168.1.20"), server, &locals, 5000, false);
        assert_eq!(c.len(), 1, "an IPv4-only socket: {c:?}");
    }
}
