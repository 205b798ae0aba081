//! The whole client side of Pinhole, sans-IO: one [`Phone`] owns the registration with the
//! rendezvous server (the patent's exchange, [`crate::client::Client`], and the name claimed
//! with a key), call signalling, hole punching ([`Punch`]), the demultiplexing of datagrams on
//! the media socket, its timers, and reconnecting with back-off. The counterpart of the
//! server's [`crate::calls::Calls`]; str0m's `Rtc` and quinn-proto's `Connection` are the models.
//!
//! # The loop
//!
//! The driver owns the control connection (TCP), the media socket (UDP), the clock and the
//! randomness, and knows nothing of the protocol:
//!
//! ```text
//! inputs (each with `now`):
//!   handle_connected / handle_connect_failed   a control connection the phone asked for
//!   handle_tcp / handle_tcp_closed              bytes from the control connection
//!   handle_datagram                             every datagram of the media socket: STUN is
//!                                               consumed here, media is handed back
//!   handle_timeout                              when poll_timeout is reached
//!   call / accept / reject / hang_up / fail_call / reconnect / shut_down   the user
//! outputs, drained after every input:
//!   poll_tcp       -> Connect (open a control connection), Send(bytes), Close
//!   poll_transmit  -> datagrams to send from the media socket
//!   poll_event     -> what happened: registration, calls, paths
//!   poll_timeout   -> when to call handle_timeout
//!   media_path     -> where the call's media goes now (direct, or relay frames to the server)
//! ```
//!
//! # Rules
//!
//! - A call outlives the control connection when its media does not need the server: on a
//!   direct path it goes on while the phone reconnects behind it, and a hang-up reaches the
//!   peer over the media path ([`Punch::hang_up`]). A call on the relay ends with
//!   [`EndReason::ServerLost`], unless the peer's checks already reach us: then the direct
//!   path gets [`PhoneConfig::relay_grace`] to come up. A call not yet up ends at once. A call placed while the server is unreachable ends with
//!   [`EndReason::ServerUnreachable`] within [`PhoneConfig::server_answer_timeout`] twice over.
//! - The server must answer a [`ClientMessage::Ping`] within
//!   [`PhoneConfig::server_answer_timeout`]; a ping goes every [`PhoneConfig::ping_interval`]
//!   and with every call placed, so a server that vanished is noticed in seconds.
//! - After a loss the phone connects again at once, then with back-off from
//!   [`PhoneConfig::backoff_min`] doubling to [`PhoneConfig::backoff_max`], forever, except
//!   after [`Registration::Replaced`] (another device took the name) or a fatal refusal
//!   ([`StopReason`]). When the very first connection fails and
//!   [`PhoneConfig::stop_if_first_connect_fails`] is set, the phone stops instead.
//! - With several [`PhoneConfig::servers`], a loss (or a failed attempt) moves to the next
//!   server of the list at once, round the list; the back-off counts whole rounds that
//!   failed, not servers. The phone stays on the server that works: the first of the list is
//!   not preferred once another took over (moving back would cost a registration for
//!   nothing). A server going away sends the phone to the next one at once (spread by up to
//!   [`RETRY_SPREAD`]) instead of waiting for its restart. The first connection stops the
//!   phone (above) only when every server of the list failed.
//! - A server that says it is going away ([`ServerMessage::GoingAway`], a restart) is not a
//!   failure: the registration goes offline ([`ServerLoss::ShuttingDown`]) and the phone
//!   registers again at the time the server gave (plus a random spread of up to
//!   [`RETRY_SPREAD`], so that its clients do not all come back at once), then with the
//!   back-off. A call on a direct path goes on; calls not yet up end
//!   ([`EndReason::ServerShutDown`]); a call on the relay keeps the control connection (and
//!   the relay) until it ends or the server stops, then ends with
//!   [`EndReason::ServerShutDown`].
//! - Every state a front end shows comes from an [`Event`]: it never has to guess.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::channel::{self, Kind};
use crate::client::{self, Client, Socket, e2e};
use crate::control::{self, ClientMessage, FrameDecoder, ServerMessage};
pub use crate::punch::Local;
use crate::punch::{Punch, PunchEvent, PunchStats};

mod link;
mod signal;
mod types;

pub use types::*;

/// The longest wait a server's `going_away` may ask for (a longer one is cut to this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Reconnections after a server's `going_away` are spread over this much time (also when they
/// go to the next server of the list at once).
pub const RETRY_SPREAD: Duration = Duration::from_secs(1);

/// The control connection and what runs over it.
#[derive(Debug)]
struct Session {
    server: SocketAddr,
    client: Client,
    decoder: FrameDecoder,
    host_candidates: Vec<SocketAddr>,
    name_registered: bool,
    online: bool,
    register_deadline: Instant,
    next_ping: Instant,
    /// The nonce of the ping in flight and when its pong is due.
    ping: Option<(u64, Instant)>,
    /// The server said it is going away while a call was on its relay: the session stays
    /// for that call only (not online), and the phone connects again at this instant once
    /// the call is over.
    going_away: Option<Instant>,
}

#[derive(Debug)]
enum Link {
    /// Asked the driver for a control connection; it must answer by the deadline.
    Connecting {
        deadline: Instant,
    },
    Up(Box<Session>),
    /// Waiting to connect again.
    Waiting {
        retry_at: Instant,
    },
    Replaced,
    Stopped,
}

#[derive(Debug)]
struct UpCall {
    id: u64,
    peer: String,
    channel: u16,
    /// Our relay token: on what we send through the relay, and on what it sends us.
    token: [u8; channel::TOKEN_LEN],
    relay: SocketAddr,
    punch: Option<Punch>,
    path: MediaPath,
    last_heard: Instant,
    /// The server was lost while the media was on its relay: the call ends at this instant
    /// unless the checks find the direct path first.
    relay_orphaned_until: Option<Instant>,
}

/// What `Connected` said about the way to the peer.
#[derive(Debug)]
struct Route {
    candidates: Vec<SocketAddr>,
    channel: u16,
    token: [u8; channel::TOKEN_LEN],
}

#[derive(Debug)]
enum Call {
    Idle,
    /// Placed while not registered: goes out once registered, or fails at the deadline.
    Waiting {
        id: u64,
        peer: String,
        placed: Instant,
        deadline: Instant,
    },
    /// We called; waiting for the answer.
    Placing {
        id: u64,
        peer: String,
        placed: Instant,
        deadline: Instant,
        e2e: Box<e2e::Caller>,
    },
    /// Someone calls us; waiting for the user. `key` and `commitment` (hex) are the caller's
    /// name key and key commitment.
    Ringing {
        id: u64,
        peer: String,
        key: String,
        commitment: String,
    },
    /// We accepted; waiting for `Connected` and then the caller's [`ServerMessage::Reveal`]
    /// (the keys are known only then).
    Accepting {
        id: u64,
        peer: String,
        accepted: Instant,
        deadline: Instant,
        e2e: Box<e2e::Callee>,
        connected: Option<Box<Route>>,
    },
    Up(Box<UpCall>),
}

impl Call {
    fn id(&self) -> Option<u64> {
        match self {
            Call::Idle => None,
            Call::Waiting { id, .. }
            | Call::Placing { id, .. }
            | Call::Ringing { id, .. }
            | Call::Accepting { id, .. } => Some(*id),
            Call::Up(up) => Some(up.id),
        }
    }
}

/// The phone. See the module documentation.
#[derive(Debug)]
pub struct Phone {
    config: PhoneConfig,
    rng: StdRng,
    link: Link,
    /// Registered once, or told by the server to come back later: a failed connection is
    /// then retried, never a reason to stop ([`PhoneConfig::stop_if_first_connect_fails`]).
    ever_online: bool,
    /// The wait before the next attempt after a failed round; zero: retry at once.
    backoff: Duration,
    /// Which of [`PhoneConfig::servers`] the phone connects to (or is connected to).
    server: usize,
    /// Servers lost or failed one after the other since the phone was last online (or since
    /// the last whole round failed): the back-off waits only once every server failed.
    round_failures: usize,
    /// The last server said it was going away: a call that loses it ends with
    /// [`EndReason::ServerShutDown`], not [`EndReason::ServerLost`].
    server_went_away: bool,
    call: Call,
    /// The public address the router maps to the media socket (PCP, NAT-PMP or UPnP IGD, the
    /// patent's router-stored mapping), from [`Phone::set_router_mapping`]: a candidate.
    router_mapping: Option<SocketAddr>,
    /// The checks' counters of the last call that ended, for its report.
    last_punch_stats: Option<PunchStats>,
    tcp: VecDeque<TcpAction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Phone {
    /// A phone that starts at once: drain [`Phone::poll_tcp`] for the first
    /// [`TcpAction::Connect`].
    pub fn new(config: PhoneConfig, now: Instant) -> Self {
        let mut phone = Phone {
            rng: StdRng::from_seed(config.seed),
            link: Link::Stopped,
            ever_online: false,
            backoff: Duration::ZERO,
            server: 0,
            round_failures: 0,
            server_went_away: false,
            call: Call::Idle,
            router_mapping: None,
            last_punch_stats: None,
            tcp: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            config,
        };
        phone.connect(now);
        phone
    }

    // ---- state, for the driver ----

    /// Where the call's media goes now; `None` with no connected call.
    pub fn media_path(&self) -> Option<MediaPath> {
        match &self.call {
            Call::Up(up) => Some(up.path),
            _ => None,
        }
    }

    /// The connectivity checks' counters of the call in progress, else of the last call that
    /// ended (`None`: no checks, e.g. no candidate to check).
    pub fn punch_stats(&self) -> Option<PunchStats> {
        match &self.call {
            Call::Up(up) => up.punch.as_ref().map(Punch::stats),
            _ => self.last_punch_stats,
        }
    }

    /// True while registered (not after the server said it is going away).
    pub fn is_online(&self) -> bool {
        matches!(&self.link, Link::Up(s) if s.online && s.going_away.is_none())
    }

    /// True once the phone stopped for good (or was shut down).
    pub fn is_stopped(&self) -> bool {
        matches!(self.link, Link::Stopped)
    }

    // ---- outputs ----

    /// The next thing to do with the control connection.
    pub fn poll_tcp(&mut self) -> Option<TcpAction> {
        self.tcp.pop_front()
    }

    /// The next datagram to send from the media socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Phone::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match &self.link {
            Link::Connecting { deadline } => at(Some(*deadline)),
            Link::Waiting { retry_at } => at(Some(*retry_at)),
            Link::Up(s) => {
                at(s.client.poll_timeout());
                if !s.online && s.going_away.is_none() {
                    at(Some(s.register_deadline));
                }
                match s.ping {
                    Some((_, due)) => at(Some(due)),
                    None if s.online => at(Some(s.next_ping)),
                    None => {}
                }
            }
            Link::Replaced | Link::Stopped => {}
        }
        match &self.call {
            Call::Waiting { deadline, .. }
            | Call::Placing { deadline, .. }
            | Call::Accepting { deadline, .. } => at(Some(*deadline)),
            Call::Up(up) => {
                at(up.punch.as_ref().and_then(Punch::poll_timeout));
                at(Some(up.last_heard + self.config.peer_silence));
                at(up.relay_orphaned_until);
            }
            Call::Idle | Call::Ringing { .. } => {}
        }
        next
    }

    // ---- inputs: the router ----

    /// The router maps this public address to the media socket (a port mapping the driver
    /// obtained with PCP, NAT-PMP or UPnP IGD), or no longer does (`None`). Calls placed or
    /// accepted from now on list it among our candidates: the peer's checks to it come
    /// through the router however it maps and filters.
    pub fn set_router_mapping(&mut self, mapping: Option<SocketAddr>) {
        if self.router_mapping != mapping {
            tracing::info!(?mapping, "router port mapping");
        }
        self.router_mapping = mapping;
    }

    /// The router's port mapping given to [`Phone::set_router_mapping`].
    pub fn router_mapping(&self) -> Option<SocketAddr> {
        self.router_mapping
    }

    // ---- inputs: the control connection ----

    /// The control connection asked for with [`TcpAction::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant, info: ControlConnected) {
        if !matches!(self.link, Link::Connecting { .. }) {
            // Not asked for (any more): the driver drops it.
            self.tcp.push_back(TcpAction::Close);
            return;
        }
        let mut locals = info.local_addresses;
        if !locals.contains(&info.access.ip()) {
            locals.insert(0, info.access.ip());
        }
        let host_candidates = link::host_candidates(
            info.access.ip(),
            info.server.ip(),
            &locals,
            info.media_port,
            info.media_ipv6,
        );
        let mut config = client::Config::new(info.server, info.access, info.media_port);
        config.local_addresses = locals;
        config.keepalive_interval = self.config.keepalive;
        config.register_timeout = self.config.register_timeout;
        config.seed = self.rng.next_u64();
        tracing::info!(server = %info.server, access = %info.access, "control connection open");
        self.link = Link::Up(Box::new(Session {
            server: info.server,
            client: Client::new(config),
            decoder: FrameDecoder::new(),
            host_candidates,
            name_registered: false,
            online: false,
            register_deadline: now + self.config.register_timeout,
            next_ping: now + self.config.ping_interval,
            ping: None,
            going_away: None,
        }));
        self.server_went_away = false;
        self.drain_exchange(now);
    }

    /// The control connection asked for could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, detail: String) {
        if matches!(self.link, Link::Connecting { .. }) {
            self.lose_server(now, ServerLoss::Unreachable { detail });
        }
    }

    /// Bytes arrived on the control connection.
    pub fn handle_tcp(&mut self, now: Instant, bytes: &[u8]) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        if let Err(e) = session.decoder.push(bytes) {
            let detail = format!("control connection: {e}");
            self.lose_server(now, ServerLoss::Unreachable { detail });
            return;
        }
        loop {
            let Link::Up(session) = &mut self.link else {
                return;
            };
            match session.decoder.next_message::<ServerMessage>() {
                Ok(Some(message)) => self.handle_message(now, message),
                Ok(None) => break,
                Err(e) => {
                    let detail = format!("control connection: {e}");
                    self.lose_server(now, ServerLoss::Unreachable { detail });
                    return;
                }
            }
        }
        self.drain_exchange(now);
    }

    /// The server presented another certificate than the one pinned for it: the phone stops
    /// ([`StopReason::UntrustedServer`]) without a retry; the user decides.
    pub fn handle_untrusted_server(
        &mut self,
        now: Instant,
        server: String,
        pinned: String,
        presented: String,
    ) {
        self.stop(
            now,
            StopReason::UntrustedServer {
                server,
                pinned,
                presented,
            },
        );
    }

    /// The control connection closed (or failed).
    pub fn handle_tcp_closed(&mut self, now: Instant) {
        if matches!(self.link, Link::Up(_)) {
            self.lose_server(now, ServerLoss::Closed);
        }
    }

    // ---- inputs: the media socket ----

    /// A datagram arrived on the media socket.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Received<'a> {
        self.handle_datagram_on(now, Local::Media, from, bytes)
    }

    /// [`Phone::handle_datagram`] for a datagram that came in on `local`: on a spare socket
    /// (birthday probing) only the peer's checks and direct media count.
    pub fn handle_datagram_on<'a>(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Received<'a> {
        let from = SocketAddr::new(crate::addr::normalize(from.ip()), from.port());
        match channel::classify(bytes) {
            Kind::Stun => {
                if let Link::Up(session) = &mut self.link
                    && local == Local::Media
                    && session.server == from
                {
                    session.client.handle_udp(now, Socket::Media, from, bytes);
                    self.drain_exchange(now);
                    return Received::Consumed;
                }
                if let Call::Up(up) = &mut self.call
                    && let Some(punch) = up.punch.as_mut()
                    && punch.handle_datagram_on(now, local, from, bytes)
                {
                    self.drain_punch(now);
                    return Received::Consumed;
                }
                Received::Dropped
            }
            // Relay frames only from the call's relay, on its channel, with our token.
            Kind::ChannelData => match &mut self.call {
                Call::Up(up) if up.relay == from && local == Local::Media => {
                    match channel::decode_relay(bytes) {
                        Ok(frame) if frame.channel == up.channel && frame.token == up.token => {
                            up.last_heard = now;
                            Received::Media(frame.media)
                        }
                        _ => Received::Dropped,
                    }
                }
                _ => Received::Dropped,
            },
            // Direct RTP only from an address the punch authenticated as the peer's: anyone
            // else's would be played, and would hide the peer's silence.
            Kind::Rtp => match &mut self.call {
                Call::Up(up) if up.punch.as_ref().is_some_and(|p| p.is_peer_address(from)) => {
                    up.last_heard = now;
                    Received::Media(bytes)
                }
                _ => Received::Dropped,
            },
            Kind::Unknown => Received::Dropped,
        }
    }

    /// The spare sockets asked for by [`Event::OpenSpares`] are open: `opened` of them, numbered
    /// from 0 ([`Local::Spare`]).
    pub fn spares_opened(&mut self, now: Instant, opened: u16) {
        if let Call::Up(up) = &mut self.call
            && let Some(punch) = up.punch.as_mut()
        {
            punch.spares_opened(now, opened);
            self.drain_punch(now);
        }
    }

    /// The socket the call's media leaves from: a spare when the direct path runs on one
    /// (birthday probing), else the media socket.
    pub fn media_local(&self) -> Local {
        match &self.call {
            Call::Up(up) => up.punch.as_ref().map_or(Local::Media, Punch::direct_local),
            _ => Local::Media,
        }
    }

    // ---- inputs: time ----

    /// Time passed: retransmissions, keepalives, pings, checks, deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.link {
            Link::Connecting { deadline } if now >= *deadline => {
                let detail = "no control connection in time".to_string();
                self.lose_server(now, ServerLoss::Unreachable { detail });
            }
            Link::Waiting { retry_at } if now >= *retry_at => self.connect(now),
            Link::Up(session) => {
                session.client.handle_timeout(now);
                if !session.online
                    && session.going_away.is_none()
                    && now >= session.register_deadline
                {
                    let detail = if session.name_registered || session.client.is_registered() {
                        "registration not completed in time"
                    } else {
                        "no registration in time"
                    };
                    let detail = detail.to_string();
                    self.lose_server(now, ServerLoss::Unreachable { detail });
                } else if session.ping.is_some_and(|(_, due)| now >= due) {
                    tracing::warn!("the server did not answer a ping");
                    self.lose_server(now, ServerLoss::NotAnswering);
                } else if session.online && session.ping.is_none() && now >= session.next_ping {
                    self.ping(now);
                }
                self.drain_exchange(now);
            }
            _ => {}
        }
        match &mut self.call {
            Call::Waiting { deadline, .. } if now >= *deadline => {
                self.finish(now, EndReason::ServerUnreachable);
            }
            Call::Placing { id, deadline, .. } if now >= *deadline => {
                let id = *id;
                self.send(&ClientMessage::HangUp { call_id: id });
                self.finish(now, EndReason::Remote(control::EndReason::NoAnswer));
            }
            Call::Accepting {
                deadline,
                connected,
                ..
            } if now >= *deadline => {
                // Connected but the caller never revealed its key: not a private call.
                if connected.is_some() {
                    self.end_call_here(now, EndReason::Insecure);
                } else {
                    self.finish(now, EndReason::ServerLost);
                }
            }
            Call::Up(up) => {
                if let Some(punch) = up.punch.as_mut() {
                    punch.handle_timeout(now);
                }
                if up.relay_orphaned_until.is_some_and(|t| now >= t)
                    && matches!(up.path, MediaPath::Relay { .. })
                {
                    tracing::warn!("no direct path before the grace ran out; no server to relay");
                    self.finish(now, self.server_loss_end());
                } else if now.saturating_duration_since(up.last_heard) >= self.config.peer_silence {
                    let id = up.id;
                    tracing::warn!("nothing from the peer for {:?}", self.config.peer_silence);
                    self.send(&ClientMessage::HangUp { call_id: id });
                    self.finish(now, EndReason::PeerSilent);
                } else {
                    self.drain_punch(now);
                }
            }
            _ => {}
        }
    }

    // ---- inputs: the user ----

    /// Calls `peer` (`echo` for the server's echo service).
    pub fn call(&mut self, now: Instant, peer: &str) -> Result<(), CommandError> {
        if !matches!(self.call, Call::Idle) {
            return Err(CommandError::AlreadyInCall);
        }
        if peer == self.config.name {
            self.events.push_back(Event::Ended {
                peer: peer.to_string(),
                reason: EndReason::SelfCall,
                connected: false,
            });
            return Ok(());
        }
        let id = self.rng.next_u64();
        let peer = peer.to_string();
        if self.is_online() {
            self.place(now, id, peer, now);
            return Ok(());
        }
        match self.link {
            Link::Replaced | Link::Stopped => {
                self.events.push_back(Event::Ended {
                    peer,
                    reason: EndReason::ServerUnreachable,
                    connected: false,
                });
                return Ok(());
            }
            // A call is worth trying again now rather than after the back-off.
            Link::Waiting { .. } => self.connect(now),
            Link::Connecting { .. } | Link::Up(_) => {}
        }
        tracing::info!(peer, "placing a call once registered");
        self.call = Call::Waiting {
            id,
            peer,
            placed: now,
            deadline: now + self.config.server_answer_timeout * 2,
        };
        Ok(())
    }

    /// Answers the ringing call.
    pub fn accept(&mut self, now: Instant) -> Result<(), CommandError> {
        let Call::Ringing {
            id,
            peer,
            key,
            commitment,
        } = std::mem::replace(&mut self.call, Call::Idle)
        else {
            return Err(CommandError::NoCallToAccept);
        };
        let e2e = match e2e::Callee::new(self.random32(), &key, &commitment) {
            Ok(e2e) => e2e,
            Err(err) => {
                tracing::warn!(peer, "the caller's keys are malformed: {err}");
                self.call = Call::Ringing {
                    id,
                    peer,
                    key,
                    commitment,
                };
                self.send(&ClientMessage::Reject {
                    call_id: id,
                    reason: control::EndReason::Rejected,
                });
                self.finish(now, EndReason::Insecure);
                return Ok(());
            }
        };
        let candidates = self.candidates();
        self.send(&ClientMessage::Accept {
            call_id: id,
            candidates,
            e2e: e2e.answer(&self.config.key),
        });
        self.call = Call::Accepting {
            id,
            peer,
            accepted: now,
            deadline: now + self.config.accept_timeout,
            e2e: Box::new(e2e),
            connected: None,
        };
        Ok(())
    }

    /// Declines the ringing call.
    pub fn reject(&mut self, now: Instant) -> Result<(), CommandError> {
        let Call::Ringing { id, .. } = self.call else {
            return Err(CommandError::NoCallToAccept);
        };
        self.send(&ClientMessage::Reject {
            call_id: id,
            reason: control::EndReason::Rejected,
        });
        self.finish(now, EndReason::Declined);
        Ok(())
    }

    /// Ends our side of whatever call there is: declines, cancels or hangs up.
    pub fn hang_up(&mut self, now: Instant) {
        match &self.call {
            Call::Idle => {}
            Call::Ringing { .. } => {
                let _ = self.reject(now);
            }
            Call::Waiting { .. } => self.finish(now, EndReason::Cancelled),
            Call::Placing { id, .. } => {
                let id = *id;
                self.send(&ClientMessage::HangUp { call_id: id });
                self.finish(now, EndReason::Cancelled);
            }
            Call::Accepting { .. } | Call::Up(_) => self.end_call_here(now, EndReason::HungUp),
        }
    }

    /// Ends the call because something failed here (the audio devices): the peer is told,
    /// and the call ends with [`EndReason::Local`].
    pub fn fail_call(&mut self, now: Instant) {
        self.end_call_here(now, EndReason::Local);
    }

    /// Connects and registers again now (after [`Registration::Replaced`], or to skip the
    /// back-off). Does nothing while connected or connecting.
    pub fn reconnect(&mut self, now: Instant) {
        if matches!(self.link, Link::Replaced | Link::Waiting { .. }) {
            self.backoff = Duration::ZERO;
            self.connect(now);
        }
    }

    /// Hangs up, says goodbye to the server and stops. Drain [`Phone::poll_tcp`] and
    /// [`Phone::poll_transmit`] once more before closing the sockets.
    pub fn shut_down(&mut self, now: Instant) {
        self.hang_up(now);
        if let Link::Up(session) = &mut self.link {
            session.client.close();
            while let Some(bytes) = session.client.poll_tcp() {
                self.tcp.push_back(TcpAction::Send(bytes));
            }
            self.tcp.push_back(TcpAction::Close);
        }
        self.link = Link::Stopped;
    }

    // ---- internals ----

    /// Hangs up a call that is accepted or up: over the server when it is there, and over
    /// the direct path always (the peer takes whichever comes first).
    fn end_call_here(&mut self, now: Instant, reason: EndReason) {
        let Some(id) = self.call.id() else {
            return;
        };
        self.send(&ClientMessage::HangUp { call_id: id });
        if let Call::Up(up) = &mut self.call
            && let Some(punch) = up.punch.as_mut()
        {
            punch.hang_up();
            self.drain_punch(now);
        }
        self.finish(now, reason);
    }

    /// Forgets the call, closing its checks, and says how it ended.
    fn finish(&mut self, _now: Instant, reason: EndReason) {
        let call = std::mem::replace(&mut self.call, Call::Idle);
        let (peer, connected) = match call {
            Call::Idle => return,
            Call::Waiting { peer, .. }
            | Call::Placing { peer, .. }
            | Call::Ringing { peer, .. }
            | Call::Accepting { peer, .. } => (peer, false),
            Call::Up(mut up) => {
                self.last_punch_stats = up.punch.as_mut().map(|punch| {
                    punch.close();
                    punch.stats()
                });
                (up.peer, true)
            }
        };
        tracing::info!(peer, reason = reason.as_str(), "call ended");
        self.events.push_back(Event::Ended {
            peer,
            reason,
            connected,
        });
        // The session was kept for this call only: the server is going away.
        if let Link::Up(session) = &self.link
            && let Some(retry_at) = session.going_away
        {
            tracing::info!("the call is over; leaving the server that is going away");
            self.tcp.push_back(TcpAction::Close);
            self.next_server_after_going_away();
            self.link = Link::Waiting { retry_at };
        }
    }

    /// How a call that needed the server ends when the server is gone.
    fn server_loss_end(&self) -> EndReason {
        if self.server_went_away {
            EndReason::ServerShutDown
        } else {
            EndReason::ServerLost
        }
    }

    fn send(&mut self, message: &ClientMessage) {
        if let Link::Up(_) = self.link {
            self.tcp
                .push_back(TcpAction::Send(control::encode(message)));
        }
    }

    fn place(&mut self, now: Instant, id: u64, peer: String, placed: Instant) {
        let candidates = self.candidates();
        tracing::info!(call_id = id, peer, ?candidates, "placing a call");
        let e2e = e2e::Caller::new(self.random32());
        self.send(&ClientMessage::Call {
            call_id: id,
            to: peer.clone(),
            candidates,
            commitment: e2e.commitment(),
        });
        if matches!(&self.link, Link::Up(s) if s.ping.is_none()) {
            self.ping(now);
        }
        self.call = Call::Placing {
            id,
            peer,
            placed,
            deadline: now + self.config.call_timeout,
            e2e: Box::new(e2e),
        };
    }

    /// 32 bytes from the phone's generator (seeded by the driver from the OS).
    fn random32(&mut self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    /// Moves what the punch queued out, and acts on its events.
    fn drain_punch(&mut self, now: Instant) {
        let Call::Up(up) = &mut self.call else {
            return;
        };
        let Some(punch) = up.punch.as_mut() else {
            return;
        };
        while let Some(t) = punch.poll_transmit() {
            self.transmits.push_back(Transmit {
                local: t.local,
                destination: t.destination,
                contents: t.contents,
                ttl: t.ttl,
            });
        }
        let mut hung_up = false;
        let mut direct_lost = false;
        while let Some(event) = punch.poll_event() {
            let path = match event {
                PunchEvent::DirectPath(addr) => MediaPath::Direct(addr),
                PunchEvent::DirectLost(_) => {
                    direct_lost = true;
                    MediaPath::Relay {
                        server: up.relay,
                        channel: up.channel,
                        token: up.token,
                    }
                }
                PunchEvent::PeerHungUp => {
                    hung_up = true;
                    break;
                }
                PunchEvent::OpenSpares(count) => {
                    self.events.push_back(Event::OpenSpares { count });
                    continue;
                }
                PunchEvent::CloseSpares { keep } => {
                    self.events.push_back(Event::CloseSpares { keep });
                    continue;
                }
            };
            if path != up.path {
                up.path = path;
                self.events.push_back(Event::PathChanged { path });
            }
        }
        let (id, on_relay) = (up.id, matches!(up.path, MediaPath::Relay { .. }));
        let server_there = matches!(&self.link, Link::Up(_));
        if hung_up {
            self.send(&ClientMessage::HangUp { call_id: id });
            self.finish(now, EndReason::Remote(control::EndReason::HungUp));
        } else if !server_there && on_relay && direct_lost {
            // Back on the relay with no server: nothing carries the media any more.
            self.finish(now, self.server_loss_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_have_stable_names() {
        use control::EndReason as Wire;
        assert_eq!(EndReason::HungUp.as_str(), "hung_up");
        assert_eq!(EndReason::Remote(Wire::HungUp).as_str(), "peer_hung_up");
        assert_eq!(EndReason::Remote(Wire::Busy).as_str(), "busy");
        assert_eq!(EndReason::ServerLost.as_str(), "server_lost");
        assert_eq!(EndReason::ServerShutDown.as_str(), "server_shut_down");
        assert!(!EndReason::ServerShutDown.is_normal());
        assert_eq!(
            serde_json::to_string(&EndReason::SelfCall).unwrap(),
            "\"self_call\""
        );
        assert!(EndReason::Remote(Wire::HungUp).is_normal());
        assert!(!EndReason::ServerLost.is_normal());
    }
}
