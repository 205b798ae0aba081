//! The whole sans-IO rendezvous server (`traversal::server::Server`) fed an arbitrary sequence
//! of events: TCP connections opening, sending bytes and closing, datagrams from a handful of
//! sources, time passing. Every decoder runs in context; nothing may panic and the server must
//! keep answering. Input format: repeated `[op, len, len bytes...]`.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use traversal::server::{Config, Server};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut server = Server::new(
        Config {
            max_registrations: 8,
            ..Config::default()
        },
        [1; 32],
    );
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let who = u64::from(op >> 3);
        let addr = SocketAddr::from(([203, 0, 113, (op >> 3) + 1], 40_000 + u16::from(op & 7)));
        match op & 3 {
            0 => server.handle_udp(now, addr, bytes),
            1 => {
                let _ = server.handle_tcp_open(now, who, addr);
                server.handle_tcp_data(now, who, bytes);
            }
            2 => server.handle_tcp_data(now, who, bytes),
            _ => {
                now += Duration::from_millis(len as u64 * 50);
                server.handle_timeout(now);
                if bytes.first().is_some_and(|b| b & 1 == 1) {
                    server.handle_tcp_closed(now, who);
                }
            }
        }
        while server.poll_transmit().is_some() {}
        while server.poll_tcp().is_some() {}
        let _ = server.poll_timeout(now);
    }
    // Still answers a plain Binding Request after all that.
    let request = traversal::stun::encode_binding_request(&[9; 12]);
    server.handle_udp(now, SocketAddr::from(([192, 0, 2, 1], 5000)), &request);
    assert!(
        server.poll_transmit().is_some(),
        "no answer to a Binding Request"
    );
});
