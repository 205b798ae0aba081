//! A NAT lab in Linux network namespaces: real kernel NAT (conntrack + iptables MASQUERADE) on
//! one machine, for end-to-end tests of traversal and calls.
//!
//! ```text
//!   server ns ──198.51.100.x/30── inet ns (router) ──203.0.113.x/30── nat ns ──10.N.0.0/24── client ns
//!                                     │                                 (MASQUERADE [--random-fully])
//!                                     └──203.0.113.x/30── public client ns
//! ```
//!
//! [`Lab::new`] creates the "internet": a router namespace that every public host and every NAT's
//! WAN side hangs off, each on its own /30 (servers from 198.51.100.0/24, others from
//! 203.0.113.0/24; 192.0.2.0/24 is left for a test's own extra addresses), with IPv6 beside
//! (2001:db8:1::/48 for servers, 2001:db8:2::/48 for others, a /64 per link). The internet
//! routes only public addresses: private ones never leave their NAT, as on the real Internet.
//! Behind a NAT, hosts share one LAN segment (a bridge in the NAT's namespace), IPv4 only
//! unless the router is dual-stack ([`Lab::nat_dual_stack`], [`Lab::enable_ipv6`]): then its LAN
//! also has a global /64 (2001:db8:3:N::/64), routed to it by the internet and guarded by a
//! home router's stateful IPv6 firewall (replies only), no NAT66.
//!
//! More shapes of network:
//! - [`Lab::carrier_nat`] is a carrier-grade NAT: its LAN is shared address space
//!   (100.64.N.0/24, RFC 6598), and [`Lab::nat_behind`] puts a home NAT on it (its WAN is an
//!   address on the carrier's LAN, its own LAN a private 10.N.0.0/24), so a host behind the
//!   home NAT is behind two NATs and servers see the carrier's WAN address. `nat_behind` works
//!   behind any NAT (a home router behind another home router too).
//! - [`Lab::internet_hops`] makes the internet look several routers deep to TTLs (the router
//!   namespace takes more off each packet's TTL), so a packet sent with a small TTL opens the
//!   sender's own NAT and dies in the internet before it reaches the far router.
//! - [`Lab::upnp`] (in [`crate::miniupnpd`]) runs a real `miniupnpd` on a NAT router: UPnP IGD
//!   and NAT-PMP/PCP port mappings, through both kinds of NAT.
//!
//! What reaches a NAT router's WAN unsolicited: without [`Lab::firewall_wan`] the router's own
//! stack accepts it (nothing listens there, so it answers ICMP port unreachable) and nothing is
//! forwarded to the LAN unless a mapping says so; with `firewall_wan` it is dropped. Port
//! mappings (miniupnpd's DNAT) are forwarded in both cases: `firewall_wan` drops in `INPUT`
//! only, and a DNAT'ed packet goes through `FORWARD`.
//!
//! ```no_run
//! use pinhole_tests::netns::{Lab, NatKind};
//! let Some(mut lab) = Lab::new() else { return Ok(()) }; // prereq::missing said why
//! let server = lab.server("srv")?;
//! let mut nat = lab.nat(NatKind::RandomFully)?;
//! lab.set_udp_timeout(&nat, std::time::Duration::from_secs(5))?;
//! let client = lab.host_behind(&mut nat, "cli")?;
//! let mut child = lab.spawn(lab.command(&client.ns, "ping").args(["-c1", &server.ip.to_string()]))?;
//! child.wait()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Rules kept here (see `shared/DESIGN.md`, "Testing across real NAT"):
//! - nothing is added to the root namespace: veth pairs are created inside lab namespaces
//!   (`ip -n A link add ... peer ... netns B`), addresses, routes, rules and sysctls are set
//!   with `ip -n NS` / `ip netns exec NS`;
//! - namespace names are unique per process and lab (`ph<pid>x<n><role>`), so tests run in
//!   parallel;
//! - [`Lab`] tears everything down on drop: every process still running in its namespaces is
//!   killed by PID (`ip netns pids`), then the namespaces are deleted (which deletes their veths);
//! - [`Lab::new`] returns `None` where namespaces cannot be made (not root, no `ip`, no netns
//!   support), after [`crate::prereq::missing`]: a failure under `./dev test`, a SKIP by hand.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A network namespace made by a [`Lab`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ns {
    /// Its name, for `ip netns exec`.
    pub name: String,
}

/// A host: a namespace with one address that its peers can reach.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's namespace.
    pub ns: Ns,
    /// Its address (public for hosts on the internet, private behind a NAT).
    pub ip: Ipv4Addr,
    /// Its IPv6 address (2001:db8::/32), for hosts on the internet and behind a dual-stack
    /// router ([`Lab::enable_ipv6`]: a global address, routed, not translated); `None` behind
    /// an IPv4-only NAT.
    pub ip6: Option<Ipv6Addr>,
}

/// How a [`Nat`] maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// `MASQUERADE`: Linux keeps the source port where it can and reuses the mapping for every
    /// destination (endpoint-independent mapping, port-preserving).
    Masquerade,
    /// `MASQUERADE --random-fully`: a random port per connection, so a new mapping per
    /// destination (what is usually called a symmetric NAT).
    RandomFully,
}

/// A NAT router: WAN on the internet, a private /24 behind it on a bridge (one LAN segment).
#[derive(Debug, Clone)]
pub struct Nat {
    /// The router's namespace.
    pub ns: Ns,
    /// Its public (WAN) address: what servers see for hosts behind it.
    pub wan_ip: Ipv4Addr,
    /// Its LAN address, the gateway of hosts behind it.
    pub lan_ip: Ipv4Addr,
    /// How it maps.
    pub kind: NatKind,
    /// Its WAN IPv6 address, for a NAT on the internet (2001:db8:2:L::2 on its WAN link); for a
    /// NAT behind another one, its address on that NAT's LAN if it has IPv6, else `None`.
    pub wan_ip6: Option<Ipv6Addr>,
    /// Its LAN IPv6 address, 2001:db8:3:N::1 (the gateway of hosts behind it), once
    /// [`Lab::enable_ipv6`] made it dual-stack; `None` on an IPv4-only NAT.
    pub lan_ip6: Option<Ipv6Addr>,
    /// The first three octets of its LAN /24 (10.N.0 for a home NAT, 100.64.N for a carrier's).
    lan_prefix: [u8; 3],
    /// N: its subnet number, in its LAN /24 and in its IPv6 /64.
    subnet: u8,
    /// Its WAN is on another NAT's LAN ([`Lab::nat_behind`]).
    behind: bool,
    hosts: u8,
}

impl Nat {
    /// Its LAN's network address (the LAN is a /24): 10.N.0.0, or 100.64.N.0 for a carrier NAT.
    pub fn lan_network(&self) -> Ipv4Addr {
        let [a, b, c] = self.lan_prefix;
        Ipv4Addr::new(a, b, c, 0)
    }

    /// Its routed LAN /64 once dual-stack ([`Lab::enable_ipv6`]): 2001:db8:3:N::, else `None`.
    pub fn lan_network6(&self) -> Option<Ipv6Addr> {
        self.lan_ip6.map(|_| lan6(self.subnet, 0))
    }
}

/// Address `host` in the routed LAN /64 of the NAT with subnet number `subnet`:
/// 2001:db8:3:N::host.
fn lan6(subnet: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 3, u16::from(subnet), 0, 0, 0, host)
}

/// The lab: owns its namespaces and everything started in them.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<Ns>,
    children: Vec<u32>,
    /// The internet's router namespace.
    pub inet: Ns,
    next_ns: u32,
    next_link: u32,
    next_server_link: u32,
    next_subnet: u8,
}

impl Lab {
    /// Creates an empty internet (one router namespace). Returns `None`, after
    /// [`crate::prereq::missing`] (which panics under `./dev test`), when this machine cannot
    /// make network namespaces for us.
    pub fn new() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            crate::prereq::missing("the NAT lab needs root (network namespaces, iptables)");
            return None;
        }
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("ph{}x{}", std::process::id(), n);
        let inet = Ns {
            name: format!("{prefix}inet"),
        };
        match run(Command::new("ip").args(["netns", "add", &inet.name])) {
            Ok(_) => {}
            Err(err) => {
                crate::prereq::missing(format!(
                    "cannot create a network namespace here (`ip netns add`): {err}"
                ));
                return None;
            }
        }
        let lab = Self {
            prefix,
            namespaces: vec![inet.clone()],
            children: Vec::new(),
            inet,
            next_ns: 0,
            next_link: 0,
            next_server_link: 0,
            next_subnet: 0,
        };
        let setup = lab
            .basic_setup(&lab.inet.clone())
            .and_then(|()| lab.sysctl(&lab.inet.clone(), "net.ipv4.ip_forward", "1"))
            .and_then(|()| lab.sysctl(&lab.inet.clone(), "net.ipv6.conf.all.forwarding", "1"));
        if let Err(err) = setup {
            crate::prereq::missing(format!("cannot configure a network namespace here: {err}"));
            return None;
        }
        Some(lab)
    }

    /// A new empty namespace with loopback up. `role` is a short tag kept in its name.
    pub fn namespace(&mut self, role: &str) -> io::Result<Ns> {
        let ns = Ns {
            name: format!("{}n{}{}", self.prefix, self.next_ns, role),
        };
        self.next_ns += 1;
        run(Command::new("ip").args(["netns", "add", &ns.name]))?;
        self.namespaces.push(ns.clone());
        self.basic_setup(&ns)?;
        Ok(ns)
    }

    fn basic_setup(&self, ns: &Ns) -> io::Result<()> {
        self.ip(ns, &["link", "set", "lo", "up"])?;
        // No IPv6 duplicate address detection: addresses (link-local ones too, which neighbour
        // discovery needs) are usable at once rather than after a second or two.
        self.exec(
            ns,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        Ok(())
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, ns: &Ns, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&ns.name).args(args))
    }

    /// Runs a command to completion inside `ns` (bounded by 10 s), failing on a non-zero exit.
    pub fn exec(&self, ns: &Ns, program: &str, args: &[&str]) -> io::Result<Output> {
        run(self.command(ns, program).args(args))
    }

    /// A `Command` that runs `program` inside `ns` (`ip netns exec NS program`); the process
    /// it starts is the program itself (`ip` execs it), so its PID is the program's.
    pub fn command(&self, ns: &Ns, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).arg(program);
        cmd
    }

    /// Starts `cmd` (made by [`Lab::command`]); the lab kills it on drop if it still runs.
    pub fn spawn(&mut self, cmd: &mut Command) -> io::Result<Child> {
        let child = cmd.spawn()?;
        self.children.push(child.id());
        Ok(child)
    }

    /// Sets a sysctl inside `ns` (per-namespace ones only: forwarding, conntrack timeouts...).
    pub fn sysctl(&self, ns: &Ns, key: &str, value: &str) -> io::Result<()> {
        self.exec(ns, "sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `iptables ARGS...` inside `ns`.
    pub fn iptables(&self, ns: &Ns, args: &[&str]) -> io::Result<()> {
        self.exec(ns, "iptables", args)?;
        Ok(())
    }

    /// Runs `ip6tables ARGS...` inside `ns`.
    pub fn ip6tables(&self, ns: &Ns, args: &[&str]) -> io::Result<()> {
        self.exec(ns, "ip6tables", args)?;
        Ok(())
    }

    /// Connects two namespaces with a veth pair, `a_if` in `a` and `b_if` in `b`, and gives
    /// each end an address (CIDR form, e.g. "203.0.113.1/30"). Both ends come up.
    pub fn link(
        &self,
        a: &Ns,
        a_if: &str,
        a_addr: &str,
        b: &Ns,
        b_if: &str,
        b_addr: &str,
    ) -> io::Result<()> {
        self.ip(
            a,
            &[
                "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
            ],
        )?;
        self.ip(a, &["addr", "add", a_addr, "dev", a_if])?;
        self.ip(b, &["addr", "add", b_addr, "dev", b_if])?;
        self.ip(a, &["link", "set", a_if, "up"])?;
        self.ip(b, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Next /30 on the internet: (router side, host side, interface name, link number).
    fn public_link(&mut self, server: bool) -> io::Result<(Ipv4Addr, Ipv4Addr, String, u32)> {
        let (counter, base) = if server {
            (&mut self.next_server_link, [198, 51, 100])
        } else {
            (&mut self.next_link, [203, 0, 113])
        };
        let i = *counter;
        if i >= 63 {
            return Err(io::Error::other("lab: out of public /30s"));
        }
        *counter += 1;
        let router = Ipv4Addr::new(base[0], base[1], base[2], (4 * i + 1) as u8);
        let host = Ipv4Addr::new(base[0], base[1], base[2], (4 * i + 2) as u8);
        let tag = if server { "s" } else { "p" };
        Ok((router, host, format!("{tag}{i}"), i))
    }

    /// A host on the internet with its own public address (203.0.113.0/24, and an IPv6 one in
    /// 2001:db8:2::/48).
    pub fn public_host(&mut self, role: &str) -> io::Result<Host> {
        self.attach(role, false)
    }

    /// A server on the internet (198.51.100.0/24, and IPv6 in 2001:db8:1::/48).
    pub fn server(&mut self, role: &str) -> io::Result<Host> {
        self.attach(role, true)
    }

    fn attach(&mut self, role: &str, server: bool) -> io::Result<Host> {
        let ns = self.namespace(role)?;
        let (router, host, ifname, i) = self.public_link(server)?;
        let inet = self.inet.clone();
        self.link(
            &inet,
            &ifname,
            &format!("{router}/30"),
            &ns,
            "eth0",
            &format!("{host}/30"),
        )?;
        self.ip(
            &ns,
            &["route", "add", "default", "via", &router.to_string()],
        )?;
        // IPv6 on the same link: 2001:db8:{1 servers, 2 others}:{link}::/64, router ::1.
        let net = if server { 1 } else { 2 };
        let link = u16::try_from(i).map_err(io::Error::other)?;
        let router6 = Ipv6Addr::new(0x2001, 0xdb8, net, link, 0, 0, 0, 1);
        let host6 = Ipv6Addr::new(0x2001, 0xdb8, net, link, 0, 0, 0, 2);
        // `nodad`: usable at once, not after duplicate address detection's second or two.
        self.ip(
            &inet,
            &[
                "-6",
                "addr",
                "add",
                &format!("{router6}/64"),
                "dev",
                &ifname,
                "nodad",
            ],
        )?;
        self.ip(
            &ns,
            &[
                "-6",
                "addr",
                "add",
                &format!("{host6}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        self.ip(
            &ns,
            &["-6", "route", "add", "default", "via", &router6.to_string()],
        )?;
        Ok(Host {
            ns,
            ip: host,
            ip6: Some(host6),
        })
    }

    /// Adds another address to a public host, routed to it by the internet (for a second
    /// server address, say). Use 192.0.2.0/24.
    pub fn add_public_address(&self, host: &Host, ip: Ipv4Addr) -> io::Result<()> {
        self.ip(&host.ns, &["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
        self.ip(
            &self.inet,
            &[
                "route",
                "add",
                &format!("{ip}/32"),
                "via",
                &host.ip.to_string(),
            ],
        )?;
        Ok(())
    }

    /// A NAT router on the internet with a private 10.N.0.0/24 behind it.
    pub fn nat(&mut self, kind: NatKind) -> io::Result<Nat> {
        let router = self.attach("nat", false)?;
        let subnet = self.next_subnet();
        self.make_nat(router, kind, [10, subnet, 0], subnet, false)
    }

    /// A dual-stack home router: [`Lab::nat`] then [`Lab::enable_ipv6`]. Hosts behind it get
    /// a private IPv4 address (NAT'ed) and a global IPv6 one (routed, behind a stateful
    /// firewall).
    pub fn nat_dual_stack(&mut self, kind: NatKind) -> io::Result<Nat> {
        let mut nat = self.nat(kind)?;
        self.enable_ipv6(&mut nat)?;
        Ok(nat)
    }

    /// A carrier-grade NAT on the internet: like [`Lab::nat`], but its LAN is shared address
    /// space, 100.64.N.0/24 (RFC 6598), as an ISP's is. Put home NATs on it with
    /// [`Lab::nat_behind`] (or hosts straight on it with [`Lab::host_behind`], as a mobile
    /// carrier does).
    pub fn carrier_nat(&mut self, kind: NatKind) -> io::Result<Nat> {
        let router = self.attach("cgn", false)?;
        let subnet = self.next_subnet();
        self.make_nat(router, kind, [100, 64, subnet], subnet, false)
    }

    /// A NAT router whose WAN side sits on the LAN of `outer` (a home router behind a carrier's
    /// NAT, made by [`Lab::carrier_nat`], or behind another home router), with a private
    /// 10.N.0.0/24 behind it. Its `wan_ip` is its address on `outer`'s LAN; what servers see
    /// for hosts behind it is `outer.wan_ip`. Its WAN interface is `eth0`, as on every NAT here,
    /// so [`Lab::firewall_wan`], [`Lab::masquerade`] and [`Lab::set_udp_timeout`] apply to it.
    pub fn nat_behind(&mut self, outer: &mut Nat, kind: NatKind) -> io::Result<Nat> {
        let router = self.host_behind(outer, "hnat")?;
        let subnet = self.next_subnet();
        self.make_nat(router, kind, [10, subnet, 0], subnet, true)
    }

    fn next_subnet(&mut self) -> u8 {
        let subnet = self.next_subnet;
        self.next_subnet = self.next_subnet.wrapping_add(1);
        subnet
    }

    /// Turns `router` (WAN on its `eth0`) into a NAT with the LAN `lan_prefix`.0/24 on a bridge.
    fn make_nat(
        &mut self,
        router: Host,
        kind: NatKind,
        lan_prefix: [u8; 3],
        subnet: u8,
        behind: bool,
    ) -> io::Result<Nat> {
        let [a, b, c] = lan_prefix;
        let lan_ip = Ipv4Addr::new(a, b, c, 1);
        self.sysctl(&router.ns, "net.ipv4.ip_forward", "1")?;
        let extra: &[&str] = match kind {
            NatKind::Masquerade => &[],
            NatKind::RandomFully => &["--random-fully"],
        };
        self.masquerade(&router.ns, &[], extra)?;
        // The LAN is a bridge, so hosts behind one NAT share a segment and reach each other
        // directly, as on a home network.
        self.ip(&router.ns, &["link", "add", "br0", "type", "bridge"])?;
        self.ip(
            &router.ns,
            &["addr", "add", &format!("{lan_ip}/24"), "dev", "br0"],
        )?;
        self.ip(&router.ns, &["link", "set", "br0", "up"])?;
        Ok(Nat {
            ns: router.ns,
            wan_ip: router.ip,
            lan_ip,
            kind,
            wan_ip6: router.ip6,
            lan_ip6: None,
            lan_prefix,
            subnet,
            behind,
            hosts: 0,
        })
    }

    /// Makes `nat` (a NAT on the internet: [`Lab::nat`] or [`Lab::carrier_nat`]) a dual-stack
    /// router, as a home router with IPv6 is: besides its IPv4 NAT, its LAN gets a global /64,
    /// 2001:db8:3:N::/64 (N its subnet number, as in 10.N.0.0/24), which the internet routes
    /// to the router's WAN IPv6 address; its LAN address is 2001:db8:3:N::1 ([`Nat::lan_ip6`]).
    /// IPv6 is routed, never translated (no NAT66). Hosts added afterwards by
    /// [`Lab::host_behind`] get 2001:db8:3:N::2, ::3... ([`Host::ip6`]) and a default IPv6
    /// route via the router; hosts added before stay IPv4 only.
    ///
    /// The router has a home router's default stateful IPv6 firewall (`ip6tables` in its
    /// namespace): what it forwards from the WAN (`eth0`) to the LAN is accepted only when
    /// conntrack says `ESTABLISHED,RELATED`, or when it is ICMPv6 error IPv6 needs
    /// (destination unreachable, packet too big, time exceeded, parameter problem); the rest
    /// is dropped. From the LAN to the WAN everything is forwarded. So a host behind it is
    /// reachable over IPv6 only from addresses and ports it sent to (a hole punch works between
    /// two such routers); a ping from outside gets no answer.
    ///
    /// A NAT behind another one ([`Lab::nat_behind`]) cannot be made dual-stack (that needs
    /// prefix delegation): an error.
    pub fn enable_ipv6(&mut self, nat: &mut Nat) -> io::Result<()> {
        if nat.lan_ip6.is_some() {
            return Ok(());
        }
        let wan6 = match nat.wan_ip6 {
            Some(wan6) if !nat.behind => wan6,
            _ => {
                return Err(io::Error::other(
                    "lab: only a NAT on the internet can be made dual-stack",
                ));
            }
        };
        let ns = nat.ns.clone();
        let lan6_ip = lan6(nat.subnet, 1);
        self.sysctl(&ns, "net.ipv6.conf.all.forwarding", "1")?;
        self.ip(
            &ns,
            &[
                "-6",
                "addr",
                "add",
                &format!("{lan6_ip}/64"),
                "dev",
                "br0",
                "nodad",
            ],
        )?;
        // A home router's default (RFC 6092): replies in, ICMPv6 errors in, nothing else.
        self.ip6tables(
            &ns,
            &[
                "-A",
                "FORWARD",
                "-i",
                "eth0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        )?;
        for icmp in [
            "destination-unreachable",
            "packet-too-big",
            "time-exceeded",
            "parameter-problem",
        ] {
            self.ip6tables(
                &ns,
                &[
                    "-A",
                    "FORWARD",
                    "-i",
                    "eth0",
                    "-p",
                    "ipv6-icmp",
                    "--icmpv6-type",
                    icmp,
                    "-j",
                    "ACCEPT",
                ],
            )?;
        }
        self.ip6tables(&ns, &["-A", "FORWARD", "-i", "eth0", "-j", "DROP"])?;
        let inet = self.inet.clone();
        self.ip(
            &inet,
            &[
                "-6",
                "route",
                "add",
                &format!("{}/64", lan6(nat.subnet, 0)),
                "via",
                &wan6.to_string(),
            ],
        )?;
        nat.lan_ip6 = Some(lan6_ip);
        Ok(())
    }

    /// Masquerades what `router` forwards out of its `eth0`: `iptables -t nat -A POSTROUTING
    /// -o eth0 MATCH... -j MASQUERADE OPTIONS...` (`MATCH` such as `-p tcp`, `OPTIONS` such as
    /// `--random-fully`).
    pub fn masquerade(&self, router: &Ns, matches: &[&str], options: &[&str]) -> io::Result<()> {
        let mut rule = vec!["-t", "nat", "-A", "POSTROUTING", "-o", "eth0"];
        rule.extend(matches);
        rule.extend(["-j", "MASQUERADE"]);
        rule.extend(options);
        self.iptables(router, &rule)
    }

    /// A host behind `nat`, on its private /24, with the NAT as default gateway; behind a
    /// dual-stack router ([`Lab::enable_ipv6`]) also with a global IPv6 address in its /64
    /// (2001:db8:3:N::2, ::3...) and the router's LAN address as IPv6 default gateway.
    pub fn host_behind(&mut self, nat: &mut Nat, role: &str) -> io::Result<Host> {
        if nat.hosts >= 250 {
            return Err(io::Error::other("lab: that NAT's LAN is full"));
        }
        let ns = self.namespace(role)?;
        nat.hosts += 1;
        let [a, b, c] = nat.lan_prefix;
        let ip = Ipv4Addr::new(a, b, c, nat.hosts + 1);
        let lan_if = format!("lan{}", nat.hosts);
        self.ip(
            &nat.ns,
            &[
                "link", "add", &lan_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ],
        )?;
        self.ip(&nat.ns, &["link", "set", &lan_if, "master", "br0"])?;
        self.ip(&nat.ns, &["link", "set", &lan_if, "up"])?;
        self.ip(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        self.ip(&ns, &["link", "set", "eth0", "up"])?;
        self.ip(
            &ns,
            &["route", "add", "default", "via", &nat.lan_ip.to_string()],
        )?;
        let ip6 = match nat.lan_ip6 {
            None => None,
            Some(gateway) => {
                let ip6 = lan6(nat.subnet, u16::from(nat.hosts) + 1);
                self.ip(
                    &ns,
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("{ip6}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )?;
                self.ip(
                    &ns,
                    &["-6", "route", "add", "default", "via", &gateway.to_string()],
                )?;
                Some(ip6)
            }
        };
        Ok(Host { ns, ip, ip6 })
    }

    /// Sets the NAT's conntrack UDP timeouts (`nf_conntrack_udp_timeout` for a one-way flow,
    /// `_stream` once replies were seen) in its namespace.
    pub fn set_udp_timeout(&self, nat: &Nat, timeout: Duration) -> io::Result<()> {
        let secs = timeout.as_secs().max(1).to_string();
        self.sysctl(&nat.ns, "net.netfilter.nf_conntrack_udp_timeout", &secs)?;
        self.sysctl(
            &nat.ns,
            "net.netfilter.nf_conntrack_udp_timeout_stream",
            &secs,
        )?;
        Ok(())
    }

    /// Drops each UDP packet forwarded by `router` (a NAT or the internet) with probability
    /// `probability` (0.0-1.0), both ways: `iptables -m statistic --mode random` (there is no
    /// `tc netem` here).
    pub fn drop_udp_randomly(&self, router: &Ns, probability: f64) -> io::Result<()> {
        self.drop_udp(router, &[], probability)
    }

    /// Like [`Lab::drop_udp_randomly`], only what a NAT router forwards in from its WAN side
    /// (`-i eth0`): the hosts behind it lose packets, what they send is untouched.
    pub fn drop_udp_randomly_inbound(&self, router: &Ns, probability: f64) -> io::Result<()> {
        self.drop_udp(router, &["-i", "eth0"], probability)
    }

    fn drop_udp(&self, router: &Ns, matches: &[&str], probability: f64) -> io::Result<()> {
        let p = format!("{:.4}", probability.clamp(0.0, 1.0));
        let mut rule = vec!["-A", "FORWARD"];
        rule.extend_from_slice(matches);
        rule.extend_from_slice(&[
            "-p",
            "udp",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ]);
        self.iptables(router, &rule)
    }

    /// Drops unsolicited UDP addressed to the NAT router itself on its WAN side, as a home
    /// router's firewall does (`iptables -A INPUT -i eth0 -p udp -m conntrack --ctstate NEW
    /// -j DROP`). Without it, a peer's hole-punching packet that reaches the router before the
    /// host behind it has sent anything to that peer is accepted by the router's own stack and
    /// conntrack confirms an entry for it; that entry then holds the tuple the host's own
    /// outgoing packet would map to, so `MASQUERADE` picks another source port for it and the
    /// hole never opens. Dropped in the filter table, the packet's conntrack entry is never
    /// confirmed and the tuple stays free.
    pub fn firewall_wan(&self, nat: &Nat) -> io::Result<()> {
        self.iptables(
            &nat.ns,
            &[
                "-A",
                "INPUT",
                "-i",
                "eth0",
                "-p",
                "udp",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "DROP",
            ],
        )
    }

    /// Makes the internet look `hops` routers deep to TTLs (IPv4) and hop limits (IPv6): its
    /// router namespace takes `hops - 1` off each packet it receives (`iptables -t mangle -A
    /// PREROUTING -j TTL --ttl-dec N`, `ip6tables ... ! -p ipv6-icmp -j HL --hl-dec N`: ICMPv6
    /// is left alone, as neighbour discovery needs hop limit 255) before forwarding takes
    /// the last one. A packet from a host behind a NAT then needs a TTL of at least `hops + 2`
    /// to reach (and make a conntrack entry on) the far NAT router and `hops + 3` to reach a
    /// host behind it, while a TTL of 2 is enough to make the mapping on its own NAT. `hops` 0
    /// or 1 changes nothing (the router is one hop); call it once per lab (calls add up).
    pub fn internet_hops(&self, hops: u8) -> io::Result<()> {
        if hops <= 1 {
            return Ok(());
        }
        let dec = (hops - 1).to_string();
        self.iptables(
            &self.inet,
            &[
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-j",
                "TTL",
                "--ttl-dec",
                &dec,
            ],
        )?;
        // Not ICMPv6: neighbour discovery must arrive with hop limit 255 (RFC 4861), or the
        // router never answers its neighbours and IPv6 through it dies.
        self.exec(
            &self.inet,
            "ip6tables",
            &[
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "!",
                "-p",
                "ipv6-icmp",
                "-j",
                "HL",
                "--hl-dec",
                &dec,
            ],
        )?;
        Ok(())
    }

    /// Waits up to `timeout` until something accepts UDP on `addr` inside `ns`, as shown by
    /// `ss` in that namespace.
    pub fn wait_udp_listen(&self, ns: &Ns, port: u16, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let needle = format!(":{port} ");
        while Instant::now() < deadline {
            let out = self.exec(ns, "ss", &["-uln"])?;
            if String::from_utf8_lossy(&out.stdout).contains(&needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "nothing listens on UDP port {port} in {} after {timeout:?}",
                ns.name
            ),
        ))
    }

    /// Names of every namespace this lab made.
    pub fn namespaces(&self) -> &[Ns] {
        &self.namespaces
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        // Everything still running inside our namespaces is ours: kill it by PID.
        let mut pids: Vec<u32> = Vec::new();
        for ns in &self.namespaces {
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &ns.name])
                .output()
            {
                pids.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        for pid in &pids {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Our own direct children: one that `ip netns pids` missed (it had not entered its
        // namespace yet, a race under load) is killed too. A PID that waitpid says is still
        // alive is our unreaped child, so it cannot belong to anyone else; one its owner already
        // reaped answers ECHILD at once and is left alone. Then reap, so none lingers as a zombie.
        let deadline = Instant::now() + Duration::from_secs(2);
        for pid in &self.children {
            let Ok(raw) = i32::try_from(*pid) else {
                continue;
            };
            if !pids.contains(pid)
                && matches!(
                    nix::sys::wait::waitpid(
                        Pid::from_raw(raw),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                    ),
                    Ok(nix::sys::wait::WaitStatus::StillAlive)
                )
            {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
            while Instant::now() < deadline {
                match nix::sys::wait::waitpid(
                    Pid::from_raw(raw),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                ) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => break,
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs a command with a 10 s bound; an error names the command and carries its stderr.
fn run(cmd: &mut Command) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain both pipes on threads: a command with a lot to say cannot block on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stdout.as_mut() {
            let _ = io::Read::read_to_end(pipe, &mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stderr.as_mut() {
            let _ = io::Read::read_to_end(pipe, &mut buf);
        }
        buf
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} took more than 10 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}
