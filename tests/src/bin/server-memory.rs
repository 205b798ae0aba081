//! `server-memory`: heap held by the rendezvous server per registered client (issue 3's
//! "memory per registration at 100,000 registrations"). Run by hand:
//!
//! ```text
//! cargo run --release -p pinhole-tests --bin server-memory -- 100000
//! ```
//!
//! Drives the sans-IO `traversal::server::Server` directly, as its driver would: for each client
//! a TCP connection opens, says Hello (S1), lists its addresses (S5, P2) and sends the
//! authenticated UDP registration request (P1/P3) from its mapped address; the answers are
//! drained. A counting global allocator gives the live heap bytes before and after; the
//! difference divided by the number of clients is the figure. Kernel socket buffers of the
//! real driver (one TCP socket per client) are not heap and are not counted.
// A GlobalAlloc needs `unsafe impl`; this measuring binary is the only place that has one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use traversal::control::{self, ClientMessage, ServerMessage};
use traversal::server::{Config, Server, TcpOutput};
use traversal::wire::{self, Flags, UdpMessage};

/// Counts live heap bytes; delegates every call to the system allocator unchanged.
#[derive(Debug)]
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees are ours; the only addition is an atomic counter, which cannot allocate or fail.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 100_000,
    };
    let now = Instant::now();
    let mut server = Server::new(
        Config {
            max_registrations: n,
            idle_timeout: Duration::from_secs(3600),
            // 500 clients share each of the 200 addresses below.
            max_connections_per_ip: n,
            ..Config::default()
        },
        [42; 32],
    );
    // Scratch reused across clients, allocated before the baseline.
    let mut user_indexes: Vec<(u32, Vec<u8>)> = Vec::with_capacity(n);
    let heap_before = live();
    let rss_before = rss_kib();
    let mut registered = 0usize;
    for i in 0..n {
        let conn = i as u64;
        // Spread the clients over many public addresses and ports, as real ones would be.
        let ip = IpAddr::V4(Ipv4Addr::from(0xCB00_7100u32 + (i as u32 % 200)));
        let tcp_peer = SocketAddr::new(ip, 20_000 + (i / 200) as u16);
        let udp_mapped = SocketAddr::new(ip, 40_000 + (i / 200) as u16);
        if !server.handle_tcp_open(now, conn, tcp_peer) {
            anyhow::bail!("server refused connection {i}");
        }
        let hello = control::encode(&ClientMessage::Hello {
            version: control::PROTOCOL_VERSION,
            access: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 50_000),
        });
        server.handle_tcp_data(now, conn, &hello);
        let addresses = control::encode(&ClientMessage::Addresses {
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))],
            port: 40_000,
        });
        server.handle_tcp_data(now, conn, &addresses);
        let mut welcome = None;
        while let Some(out) = server.poll_tcp() {
            if let TcpOutput::Send { bytes, .. } = out {
                let mut decoder = control::FrameDecoder::new();
                decoder.push(&bytes)?;
                while let Some(message) = decoder.next_message::<ServerMessage>()? {
                    if let ServerMessage::Welcome {
                        user_index, key, ..
                    } = message
                    {
                        welcome = Some((user_index, key));
                    }
                }
            }
        }
        let Some((user_index, key)) = welcome else {
            anyhow::bail!("no Welcome for client {i}");
        };
        let key = traversal::server::unhex(&key).ok_or_else(|| anyhow::anyhow!("bad key"))?;
        let request = UdpMessage::Request {
            transaction_id: [i as u8; 12],
            user_index,
            flags: Flags::default(),
        }
        .encode(&key);
        server.handle_udp(now, udp_mapped, &request);
        // The first mapping moves in once its address echoes the path challenge.
        let mut echo = None;
        while let Some(t) = server.poll_transmit() {
            echo = echo.or_else(|| wire::path_response(&t.contents, user_index, &key));
        }
        if let Some(echo) = echo {
            server.handle_udp(now, udp_mapped, &echo);
            while server.poll_transmit().is_some() {}
        }
        while server.poll_tcp().is_some() {}
        if server.mapping(user_index) == Some(udp_mapped) {
            registered += 1;
        }
        user_indexes.push((user_index, key));
    }
    // The scratch list is the benchmark's, not the server's.
    let scratch: isize = user_indexes
        .iter()
        .map(|(_, key)| key.capacity() as isize)
        .sum();
    let held = live() - heap_before - scratch;
    let rss_after = rss_kib();
    println!(
        "registrations: {} (with a UDP mapping: {registered})",
        server.registrations()
    );
    println!(
        "heap held by the server: {:.1} MiB, {:.0} bytes per registration",
        held as f64 / (1024.0 * 1024.0),
        held as f64 / n as f64
    );
    println!(
        "server's own estimate (Server::memory_estimate): {:.0} bytes per registration",
        server.memory_estimate() as f64 / n as f64
    );
    let (reg, conn) = Server::entry_sizes();
    println!("entry sizes: registration {reg} B, connection {conn} B (before hash-table overhead)");
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        println!(
            "RSS grew by {:.1} MiB ({:.0} bytes per registration, includes the benchmark's own list)",
            (b - a) as f64 / 1024.0,
            (b - a) as f64 * 1024.0 / n as f64
        );
    }
    drop(user_indexes);
    Ok(())
}
