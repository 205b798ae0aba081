//! The rendezvous server's Prometheus endpoint: `GET /metrics` answers the server's counters in
//! the text exposition format 0.0.4 (`text/plain; version=0.0.4`), anything else gets 404 (405
//! for another method on `/metrics`, 400 for what is not HTTP/1.x, 431 for a request over
//! [`MAX_REQUEST`] bytes, 408 when it does not arrive within [`READ_TIMEOUT`]).
//!
//! One thread of its own (`metrics`), one connection at a time, one request per connection
//! (`Connection: close`): a scraper every few seconds is the whole load. The serving threads
//! never wait for it: it copies the counters under the server's lock (a struct of integers,
//! the same copy [`crate::rendezvous::Rendezvous::stats`] makes) and renders and writes them
//! outside it. A client that sends slowly holds the endpoint for [`READ_TIMEOUT`] at most.
//!
//! Every metric has its `# HELP` and `# TYPE` lines; label values are escaped
//! ([`escape_label`]). Names are prefixed `pinhole_`; counters end in `_total`.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::server::Stats;

/// The most bytes of a request (line and headers) read; more gets 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request must arrive whole within this time (then 408); writing the answer has as long.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What one scrape shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The server's counters.
    pub stats: Stats,
    /// Plain STUN Binding Requests answered (RFC 8489), counted by every UDP thread.
    pub stun_answers: u64,
    /// UDP threads serving the port.
    pub udp_threads: u64,
    /// Batches of datagrams whose UDP thread waited for the server's lock, held by another.
    pub udp_lock_waits: u64,
    /// The server is going away (a graceful shutdown has begun).
    pub shutting_down: bool,
    /// A node of a cluster: its link to the others.
    pub cluster: Option<ClusterSnapshot>,
}

/// A cluster node's link to Redis and to the other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The node's command connection to Redis is up.
    pub redis_up: bool,
    /// Messages published to other nodes.
    pub messages_sent: u64,
    /// Messages from other nodes.
    pub messages_received: u64,
    /// Redis commands that failed (Redis unreachable or refusing).
    pub redis_errors: u64,
    /// Calls with a party on another node, now.
    pub remote_calls: u64,
}

/// One metric family: name, type and help, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A family with one sample and no labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A family with one sample per value of the label `label`.
    fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: &[(&str, u64)],
    ) {
        self.header(name, kind, help);
        for (value, n) in samples {
            let _ = writeln!(
                self.out,
                "{name}{{{label}=\"{}\"}} {n}",
                escape_label(value)
            );
        }
    }
}

/// The counters in the text exposition format 0.0.4.
pub fn render(snapshot: &Snapshot) -> String {
    let s = &snapshot.stats;
    let c = &s.calls;
    let mut out = String::with_capacity(4096);
    let mut f = Family { out: &mut out };
    f.labelled(
        "pinhole_build_info",
        "gauge",
        "The server's version (the value is always 1).",
        "version",
        &[(env!("CARGO_PKG_VERSION"), 1)],
    );
    let gauges: [(&str, &str, u64); 8] = [
        (
            "pinhole_registrations",
            "Registrations now (control connections that said hello).",
            s.registrations as u64,
        ),
        (
            "pinhole_connections",
            "Control connections open now.",
            s.connections as u64,
        ),
        ("pinhole_names", "Names in the name table.", c.names as u64),
        (
            "pinhole_names_online",
            "Names registered on a control connection now.",
            c.online as u64,
        ),
        (
            "pinhole_calls_active",
            "Calls ringing or connected now.",
            c.calls as u64,
        ),
        (
            "pinhole_relay_routes",
            "Relay routes installed now (one per direction of a connected call).",
            c.routes as u64,
        ),
        (
            "pinhole_shutting_down",
            "1 once a graceful shutdown has begun (clients were told to go away).",
            u64::from(snapshot.shutting_down),
        ),
        (
            "pinhole_udp_threads",
            "UDP threads serving the port (udp_threads).",
            snapshot.udp_threads,
        ),
    ];
    for (name, help, value) in gauges {
        f.single(name, "gauge", help, value);
    }
    let counters: [(&str, &str, u64); 11] = [
        (
            "pinhole_calls_placed_total",
            "Calls placed (to an online name or the echo service).",
            c.calls_placed,
        ),
        (
            "pinhole_calls_connected_total",
            "Calls connected.",
            c.calls_connected,
        ),
        (
            "pinhole_relayed_packets_total",
            "Relay frames forwarded.",
            c.relayed,
        ),
        (
            "pinhole_relayed_bytes_total",
            "Bytes of the relay frames forwarded.",
            c.relayed_bytes,
        ),
        (
            "pinhole_stun_answers_total",
            "Plain STUN Binding Requests answered.",
            snapshot.stun_answers,
        ),
        (
            "pinhole_udp_lock_waits_total",
            "Batches of datagrams whose UDP thread waited for the server's lock.",
            snapshot.udp_lock_waits,
        ),
        (
            "pinhole_p4_sent_total",
            "Acknowledgements sent to listed addresses (the patent's P4).",
            s.p4_sent,
        ),
        (
            "pinhole_probes_sent_total",
            "Probes sent through clients' mappings.",
            s.probes_sent,
        ),
        (
            "pinhole_path_challenges_total",
            "Path challenges sent to a registration's new address.",
            s.path_challenges,
        ),
        (
            "pinhole_paths_validated_total",
            "New addresses that answered their challenge (the mapping moved).",
            s.paths_validated,
        ),
        (
            "pinhole_mappings_expired_total",
            "Mappings forgotten after the idle timeout.",
            s.mappings_expired,
        ),
    ];
    for (name, help, value) in counters {
        f.single(name, "counter", help, value);
    }
    if let Some(cluster) = snapshot.cluster {
        f.single(
            "pinhole_cluster_redis_up",
            "gauge",
            "1 while this node's connection to the cluster's Redis is up.",
            u64::from(cluster.redis_up),
        );
        f.single(
            "pinhole_cluster_remote_calls",
            "gauge",
            "Calls with a party registered on another node, now.",
            cluster.remote_calls,
        );
        f.labelled(
            "pinhole_cluster_messages_total",
            "counter",
            "Messages between this node and the others, by direction.",
            "direction",
            &[
                ("sent", cluster.messages_sent),
                ("received", cluster.messages_received),
            ],
        );
        f.single(
            "pinhole_cluster_redis_errors_total",
            "counter",
            "Redis commands that failed (Redis unreachable or refusing).",
            cluster.redis_errors,
        );
    }
    f.labelled(
        "pinhole_dropped_total",
        "counter",
        "Datagrams dropped, and connections, registrations and calls refused, by reason.",
        "reason",
        &[
            ("udp_malformed", s.udp_malformed),
            ("udp_unknown_user", s.udp_unknown_user),
            ("udp_auth_failed", s.udp_auth_failed),
            ("udp_too_small", s.udp_too_small),
            ("udp_replayed", s.udp_replayed),
            ("udp_bad_path_response", s.udp_bad_path_response),
            ("p4_refused", s.p4_refused),
            ("p4_rate_limited", s.rate_limited),
            ("relay_no_route", c.relay_no_route),
            ("relay_bad_frame", c.relay_bad_frame),
            ("relay_rate_limited", c.relay_rate_limited),
            ("server_full", s.refused_full),
            ("too_many_connections", s.refused_per_address),
            ("closed_unauthenticated", s.closed_unauthenticated),
            ("registration_refused", c.registrations_refused),
            ("rate_limited", c.rate_limited),
            ("shutting_down", s.refused_shutting_down),
        ],
    );
    out
}

/// A label value as the exposition format quotes it: backslash, double quote and line feed
/// escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            ch => out.push(ch),
        }
    }
    out
}

/// Help text: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The running endpoint: its thread, stopped (and joined) by [`Endpoint::stop`] or on drop.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: mio::Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

impl Endpoint {
    /// Binds `addr` and serves `snapshot()` on its own thread.
    pub(crate) fn spawn(
        addr: SocketAddr,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> std::io::Result<Endpoint> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let mut listener = mio::net::TcpListener::from_std(std_listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || serve(poll, &listener, &snapshot, &stop))?
        };
        tracing::info!(%addr, "metrics endpoint listening");
        Ok(Endpoint {
            addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(err) = self.waker.wake() {
            tracing::error!("waking the metrics thread: {err}");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the metrics thread panicked");
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The endpoint's loop: accepts, and answers each connection in turn.
fn serve(
    mut poll: Poll,
    listener: &mio::net::TcpListener,
    snapshot: &dyn Fn() -> Snapshot,
    stop: &AtomicBool,
) {
    let mut events = Events::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() != ErrorKind::Interrupted {
                tracing::warn!("metrics poll: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(err) = answer(stream.into(), snapshot) {
                        tracing::debug!(%peer, "metrics request: {err}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    // Out of descriptors and the like: a little later rather than spinning.
                    tracing::warn!("metrics accept: {err}");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: `HEAD`, the same without the body).
    Metrics { head: bool },
    /// `/metrics` with another method.
    WrongMethod,
    /// Another path.
    NotFound,
    /// Not an HTTP/1.x request line.
    Malformed,
}

/// The answer to a request that did not arrive in [`READ_TIMEOUT`].
fn request_timeout(stream: &mut std::net::TcpStream) -> std::io::Result<()> {
    respond(
        stream,
        408,
        "Request Timeout",
        &[],
        "request timeout\n",
        false,
    )
}

/// Reads one request (bounded in size and time) and answers it; the connection then closes.
fn answer(mut stream: std::net::TcpStream, snapshot: &dyn Fn() -> Snapshot) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = loop {
        if let Some(end) = find_end_of_head(&buf) {
            break Some(end);
        }
        if buf.len() > MAX_REQUEST {
            break None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return request_timeout(&mut stream);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            // The client gave up, or sent half a request and closed: nothing to answer.
            Ok(0) if buf.is_empty() => return Ok(()),
            Ok(0) => break Some(buf.len()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return request_timeout(&mut stream);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let Some(head) = head else {
        let body = "request too large\n";
        return respond(
            &mut stream,
            431,
            "Request Header Fields Too Large",
            &[],
            body,
            false,
        );
    };
    match parse(&buf[..head.min(MAX_REQUEST)]) {
        Request::Metrics { head } => {
            let body = render(&snapshot());
            let content_type = [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")];
            respond(&mut stream, 200, "OK", &content_type, &body, head)
        }
        Request::WrongMethod => {
            let allow = [("Allow", "GET, HEAD")];
            respond(
                &mut stream,
                405,
                "Method Not Allowed",
                &allow,
                "use GET\n",
                false,
            )
        }
        Request::NotFound => respond(
            &mut stream,
            404,
            "Not Found",
            &[],
            "not found: the metrics are at /metrics\n",
            false,
        ),
        Request::Malformed => respond(&mut stream, 400, "Bad Request", &[], "bad request\n", false),
    }
}

/// Where the request's head ends (after the blank line), if it has.
fn find_end_of_head(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The request line: `METHOD SP TARGET SP HTTP/1.x`.
fn parse(head: &[u8]) -> Request {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Request::Malformed;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match (path, method) {
        ("/metrics", "GET") => Request::Metrics { head: false },
        ("/metrics", "HEAD") => Request::Metrics { head: true },
        ("/metrics", _) => Request::WrongMethod,
        _ => Request::NotFound,
    }
}

fn respond(
    stream: &mut std::net::TcpStream,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    let has_type = headers.iter().any(|(k, _)| *k == "Content-Type");
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if !has_type {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    let _ = write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Closing with unread bytes (the rest of a request too large) would reset the connection
    // and could lose the answer on its way: what is still coming is read and dropped, briefly.
    stream.set_read_timeout(Some(LINGER))?;
    let mut sink = [0u8; 1024];
    let mut left = MAX_REQUEST * 8;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// How long the end of a request is waited for, after the answer, before closing.
const LINGER: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        assert_eq!(escape_label("0.1.0"), "0.1.0");
    }

    #[test]
    fn every_sample_has_its_help_and_type_first() {
        let mut snapshot = Snapshot::default();
        snapshot.stats.calls.relayed = 7;
        snapshot.stats.udp_replayed = 3;
        let text = render(&snapshot);
        let mut typed: Vec<String> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap_or_default().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or_default().to_string();
                let kind = it.next().unwrap_or_default();
                assert!(matches!(kind, "gauge" | "counter"), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                typed.push(name);
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(name.starts_with("pinhole_"), "{line}");
                assert_eq!(typed.last().map(String::as_str), Some(name), "{line}");
                assert_eq!(helped.last().map(String::as_str), Some(name), "{line}");
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
        assert!(text.contains("pinhole_relayed_packets_total 7\n"));
        assert!(text.contains("pinhole_dropped_total{reason=\"udp_replayed\"} 3\n"));
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("pinhole_build_info{{version=\"{version}\"}} 1\n")));
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics { head: true }
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::WrongMethod
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"GET /metricsx HTTP/1.1\r\n\r\n"), Request::NotFound);
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Request::Malformed,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
