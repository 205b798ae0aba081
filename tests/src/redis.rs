//! A real `redis-server` (Debian package `redis-server`) for the cluster's tests: started on a
//! free loopback port with its data in a temporary directory (append-only file on, as a
//! production Redis that keeps name bindings should run), stopped when dropped; restartable
//! with its data ([`Redis::restart`]). And [`Cut`], a TCP forwarder in front of it that a test
//! cuts to take one node off Redis while the others keep it.
//!
//! ```no_run
//! let Some(redis) = pinhole_tests::redis::Redis::start() else { return }; // prereq said why
//! let url = redis.url(); // redis://127.0.0.1:PORT
//! ```
//!
//! Or inside a lab namespace ([`Redis::start_in`]), bound to that namespace's address, for
//! nodes in other namespaces to reach across the lab's internet:
//!
//! ```no_run
//! use pinhole_tests::{netns::Lab, redis::Redis};
//! let Some(mut lab) = Lab::new() else { return Ok(()) };
//! let host = lab.server("redis")?;
//! let Some(redis) = Redis::start_in(&lab, &host.ns, host.ip) else { return Ok(()) };
//! let url = redis.url(); // redis://198.51.100.x:6379
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::netns::{Lab, Ns};

/// The port [`Redis::start_in`] listens on (a namespace of its own has it free).
pub const LAB_PORT: u16 = 6379;

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// The address it binds (127.0.0.1, or the namespace's address).
    bind: Ipv4Addr,
    /// The lab namespace it runs in (`ip netns exec`), `None` on this machine's loopback.
    ns: Option<Ns>,
}

/// Where `redis-server` is, if installed.
fn binary() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Redis {
    /// Starts one on a free port; `None` (after [`crate::prereq::missing`]) when the package
    /// is not installed. Panics when it is installed but does not start.
    pub fn start() -> Option<Redis> {
        if !installed() {
            return None;
        }
        let port = free_port();
        let mut redis = Redis {
            child: None,
            port,
            dir: TempDir::new("redis"),
            bind: Ipv4Addr::LOCALHOST,
            ns: None,
        };
        redis.launch().expect("start redis-server");
        Some(redis)
    }

    /// Starts one inside the lab namespace `ns`, bound to `ip` (an address of that namespace,
    /// which the lab routes: a server's or public host's) on [`LAB_PORT`]. It runs as
    /// [`Lab::command`] runs the lab's other daemons (`ip netns exec`, the process being
    /// `redis-server` itself), and is stopped by PID when dropped (or by the lab's teardown if
    /// the lab goes first); [`Redis::restart`] and [`Redis::wipe_and_start`] start it in `ns`
    /// again. Its [`Redis::command`]s are sent from a thread inside `ns`. `None` (after
    /// [`crate::prereq::missing`]) when the package is not installed; panics when it is
    /// installed but does not start.
    pub fn start_in(lab: &Lab, ns: &Ns, ip: Ipv4Addr) -> Option<Redis> {
        if !installed() {
            return None;
        }
        // One of this lab's namespaces: the lab's teardown (which kills what still runs in
        // them) is the backstop if this is never dropped.
        assert!(
            lab.namespaces().contains(ns),
            "{} is not a namespace of this lab",
            ns.name
        );
        let mut redis = Redis {
            child: None,
            port: LAB_PORT,
            dir: TempDir::new("redis"),
            bind: ip,
            ns: Some(ns.clone()),
        };
        redis.launch().expect("start redis-server in the lab");
        Some(redis)
    }

    /// `redis://IP:PORT` (127.0.0.1, or the namespace's address for [`Redis::start_in`]).
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.bind, self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.bind, self.port))
    }

    /// Its process id while it runs (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops it (SIGKILL: as a crash; the append-only file keeps what was written).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    /// Starts it again on the same port with no data (a Redis that lost its disk).
    pub fn wipe_and_start(&mut self) -> io::Result<()> {
        self.stop();
        self.dir = TempDir::new("redis");
        self.launch()
    }

    /// Runs a command with `redis-cli`-like simplicity: the reply as RESP text. (From a thread
    /// inside its namespace for [`Redis::start_in`].)
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        match &self.ns {
            None => command_at(self.addr(), args),
            Some(ns) => {
                let addr = self.addr();
                let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                crate::hostile::in_namespace(ns, move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    command_at(addr, &args)
                })?
            }
        }
    }

    /// A field of `INFO` (for example `total_net_input_bytes`), as a number.
    pub fn info(&self, field: &str) -> io::Result<u64> {
        let text = self.command(&["INFO", "all"])?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no INFO field {field}")))
    }

    fn launch(&mut self) -> io::Result<()> {
        let bin = binary().ok_or_else(|| io::Error::other("redis-server not installed"))?;
        let mut cmd = match &self.ns {
            None => Command::new(bin),
            Some(ns) => in_ns(ns, bin),
        };
        let child = cmd
            .args(["--port", &self.port.to_string()])
            .args(["--bind", &self.bind.to_string()])
            // Bound to one address on purpose: reachable from the lab's other namespaces.
            .args(["--protected-mode", "no"])
            .args(["--dir", &self.dir.path.display().to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no", "--logfile", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .command(&["PING"])
                .is_ok_and(|r| r.starts_with("+PONG"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "redis-server did not answer on {} within 10 s",
            self.addr()
        )))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `redis-server` is installed; if not, says so ([`crate::prereq::missing`]).
fn installed() -> bool {
    if binary().is_none() {
        crate::prereq::missing(
            "redis-server is not installed (Debian package redis-server, \
             scripts/packages/cluster.txt)",
        );
        return false;
    }
    true
}

/// `program` inside the lab namespace `ns`: what [`Lab::command`] makes (`ip netns exec NS
/// program`, the process being the program itself).
fn in_ns(ns: &Ns, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).arg(program);
    cmd
}

/// One command to the Redis at `addr`, its reply as RESP text.
fn command_at(addr: SocketAddr, args: &[&str]) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    // One reply: read until a short pause after the first bytes.
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !out.is_empty() || Instant::now() > deadline {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A port nobody listens on now (the system's choice).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A TCP forwarder to `to` on a port of its own: what goes through it is cut at once by
/// [`Cut::cut`] (every connection closed, new ones refused) and let through again by
/// [`Cut::restore`]. One node given the forwarder's URL is cut off from Redis alone.
#[derive(Debug)]
pub struct Cut {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Cut {
    /// Forwards a free loopback port to `to`.
    pub fn new(to: SocketAddr) -> io::Result<Cut> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, st, sp) = (open.clone(), streams.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if o.load(Ordering::Relaxed) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(to) {
                            pump(client, server, &st);
                        }
                    }
                    Ok((client, _)) => drop(client),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Cut {
            addr,
            open,
            streams,
            stop,
        })
    }

    /// `redis://` URL of the forwarder.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection through it and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Relaxed);
        for s in self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pump(a: TcpStream, b: TcpStream, streams: &Mutex<Vec<TcpStream>>) {
    let pairs = [
        (a.try_clone(), b.try_clone()),
        (b.try_clone(), a.try_clone()),
    ];
    {
        let mut held = streams.lock().unwrap_or_else(|e| e.into_inner());
        held.push(a);
        held.push(b);
    }
    for pair in pairs {
        if let (Ok(mut from), Ok(mut to)) = pair {
            std::thread::spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Both);
            });
        }
    }
}
