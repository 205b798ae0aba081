//! Port-mapping routers for the NAT lab: a real `miniupnpd` (Debian `miniupnpd-nftables`) on a
//! [`Nat`] router, serving UPnP IGD and/or NAT-PMP/PCP to the hosts on its LAN
//! ([`Lab::upnp`]).
//!
//! ```no_run
//! use pinhole_tests::miniupnpd::Protocols;
//! use pinhole_tests::netns::{Lab, NatKind};
//! let Some(mut lab) = Lab::new() else { return Ok(()) };
//! if !pinhole_tests::miniupnpd::installed() { return Ok(()) } // prereq::missing said why
//! let mut nat = lab.nat(NatKind::RandomFully)?;
//! let host = lab.host_behind(&mut nat, "cli")?;
//! let upnp = lab.upnp(&nat, Protocols::ALL)?;
//! // In the host's namespace: `upnpc -i -a 10.N.0.2 40000 40000 UDP`, or
//! // `natpmpc -g {upnp.lan_ip} -a 40000 40000 udp 3600`.
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! How it runs, and what it touches:
//! - only the `miniupnpd-nftables` package is needed: it holds the binary and the nft helper
//!   scripts, and no service, init script or maintainer script (the `miniupnpd` package is the
//!   one with the service and its debconf questions; it is not installed). Nothing starts in
//!   the root namespace, and the lab never runs the packaged scripts (they write `/tmp` files).
//! - `miniupnpd` runs in the foreground (`-d`, it logs to stderr, kept in [`Upnp::log`]) in
//!   the router's namespace, with a config file, a PID file (`-P`) and a lease file in a
//!   temporary directory; no system-wide file is read or written (it does also send its log
//!   to syslog's `/dev/log` where a syslog daemon listens, as every daemon does).
//! - its nftables chains (what the package's `nft_init.sh` makes) are made by the lab in the
//!   router's namespace: a table `inet miniupnpd` with a `forward` base chain (policy accept)
//!   jumping to `miniupnpd`, and nat `prerouting`/`postrouting` base chains jumping to
//!   `prerouting_miniupnpd`/`postrouting_miniupnpd`. A mapping is a DNAT rule in
//!   `prerouting_miniupnpd` (and an accept in `miniupnpd`); the router's iptables rules
//!   (MASQUERADE, [`Lab::firewall_wan`], [`Lab::drop_udp_randomly`]) are iptables-nft tables
//!   of their own and keep working: an accept in one base chain does not override a drop in
//!   another, and `firewall_wan` drops in `INPUT` while DNAT'ed packets go through `FORWARD`.
//! - the lab's public addresses are documentation ranges (192.0.2.0/24, 198.51.100.0/24,
//!   203.0.113.0/24), which miniupnpd 2.3 counts as reserved: on such a WAN address it says
//!   "Reserved / private IP address ... Port forwarding is impossible" and refuses every
//!   mapping (and `ext_ip=` refuses them too). So the lab runs a copy of the binary (in its
//!   temporary directory) whose table of reserved ranges has those three entries replaced by
//!   a second copy of 0.0.0.0/8; the other reserved ranges stay, so a home router behind a
//!   carrier NAT (WAN in 100.64.0.0/10) still refuses mappings, as a real one does. Clients
//!   see the same thing from their side: `upnpc` (libminiupnpc) calls the IGD "not connected"
//!   because its external address is reserved, and needs `-i` to go on anyway; `natpmpc` does
//!   not check.
//! - UPnP discovery (SSDP M-SEARCH to 239.255.255.250:1900) works on the LAN bridge: the host
//!   sends it out through its default route, and miniupnpd answers from `br0`. Its HTTP
//!   (description and SOAP) port is chosen by the system ([`Upnp::http_port`]); NAT-PMP and PCP
//!   share UDP port [`PCP_PORT`] (5351) on the LAN address.
//! - it is up, all sockets open, within some 10-50 ms of starting; [`Lab::upnp`] returns once
//!   it said so in its log and its UDP ports listen.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::netns::{Lab, Nat, Ns};

/// The UDP port NAT-PMP and PCP servers listen on (RFC 6886, RFC 6887).
pub const PCP_PORT: u16 = 5351;

/// The UDP port and multicast group of UPnP's SSDP discovery.
pub const SSDP_PORT: u16 = 1900;

/// Which port-mapping protocols a router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    /// UPnP IGD (SSDP discovery, SOAP over HTTP): `enable_upnp`.
    pub upnp: bool,
    /// NAT-PMP and PCP (one UDP port, 5351): `enable_natpmp` (miniupnpd's name for both).
    pub pcp_pmp: bool,
}

impl Protocols {
    /// UPnP IGD only.
    pub const UPNP: Self = Self {
        upnp: true,
        pcp_pmp: false,
    };
    /// NAT-PMP and PCP only.
    pub const PCP_PMP: Self = Self {
        upnp: false,
        pcp_pmp: true,
    };
    /// UPnP IGD, NAT-PMP and PCP.
    pub const ALL: Self = Self {
        upnp: true,
        pcp_pmp: true,
    };
}

/// A `miniupnpd` running on a NAT router of a lab. The process belongs to the lab (it is
/// killed when the lab is dropped); dropping this handle only removes its directory.
#[derive(Debug)]
pub struct Upnp {
    /// The router's namespace.
    pub ns: Ns,
    /// The process's PID.
    pub pid: u32,
    /// The router's LAN address, where miniupnpd listens (the NAT-PMP/PCP gateway address).
    pub lan_ip: Ipv4Addr,
    /// The address it gives clients as the external one: the NAT's `wan_ip`.
    pub external_ip: Ipv4Addr,
    /// Its UPnP HTTP port (root description at `http://LAN_IP:PORT/rootDesc.xml`), with UPnP.
    pub http_port: Option<u16>,
    /// [`PCP_PORT`] with NAT-PMP/PCP.
    pub pcp_port: Option<u16>,
    dir: TempDir,
    _child: Child,
}

impl Upnp {
    /// What miniupnpd has logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("miniupnpd.log")).unwrap_or_default()
    }

    /// The config file it runs with.
    pub fn config(&self) -> PathBuf {
        self.dir.join("miniupnpd.conf")
    }

    /// The UPnP root description's URL (`upnpc -u URL` skips discovery), with UPnP.
    pub fn root_desc_url(&self) -> Option<String> {
        self.http_port
            .map(|port| format!("http://{}:{port}/rootDesc.xml", self.lan_ip))
    }
}

/// True when `miniupnpd` is installed; otherwise says so with [`crate::prereq::missing`] (a
/// failure under `./dev test`) and the caller returns.
pub fn installed() -> bool {
    let found = binary().is_some();
    if !found {
        crate::prereq::missing(
            "miniupnpd is not installed (miniupnpd-nftables, scripts/packages/nat-tests.txt)",
        );
    }
    found
}

/// Where the `miniupnpd` binary is (it lives in /usr/sbin, not always on a test's PATH).
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("miniupnpd"))
        .find(|p| p.is_file())
}

/// The documentation ranges the lab uses as public addresses, as miniupnpd's table of reserved
/// ranges holds them: `{ u32 address; u32 32 - prefix length }`, native (little) endian.
const LAB_PUBLIC_RANGES: [([u8; 4], u32); 3] = [
    ([192, 0, 2, 0], 24),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
];

/// Copies miniupnpd to `to` with the lab's public ranges taken out of its reserved table
/// (each entry becomes 0.0.0.0/8, which the table holds anyway).
fn patched_binary(from: &Path, to: &Path) -> io::Result<()> {
    let mut bytes = std::fs::read(from)?;
    for (addr, prefix) in LAB_PUBLIC_RANGES {
        let mut entry = Vec::with_capacity(8);
        entry.extend_from_slice(&u32::from_be_bytes(addr).to_ne_bytes());
        entry.extend_from_slice(&(32 - prefix).to_ne_bytes());
        let found: Vec<usize> = bytes
            .windows(8)
            .enumerate()
            .filter(|(_, w)| *w == entry.as_slice())
            .map(|(i, _)| i)
            .collect();
        let [at] = found[..] else {
            return Err(io::Error::other(format!(
                "{}: its table of reserved addresses was not found ({} matches for {}/{prefix}; \
                 the lab knows miniupnpd 2.3's): it would refuse the lab's public addresses",
                from.display(),
                found.len(),
                Ipv4Addr::from(addr)
            )));
        };
        let mut blank = Vec::with_capacity(8);
        blank.extend_from_slice(&0u32.to_ne_bytes());
        blank.extend_from_slice(&24u32.to_ne_bytes());
        bytes[at..at + 8].copy_from_slice(&blank);
    }
    std::fs::write(to, &bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The nftables table and chains miniupnpd 2.3 fills (the package's `nft_init.sh`, without
/// its `policy drop` on forwarding: the lab's routers forward everything).
const NFT_TABLE: &str = "table inet miniupnpd {
    chain forward {
        type filter hook forward priority 0; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
";

fn yes(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

impl Lab {
    /// Runs a real `miniupnpd` on `nat`'s router, serving `protocols` to its LAN, and returns
    /// once it listens (at most 10 s). WAN is the router's `eth0`, LAN its bridge `br0`;
    /// secure mode (a client maps only to itself), mappings of ports 1024-65535 for the LAN's
    /// /24 and nothing else, a fixed UUID (5e0c2a3b-7d41-4f6e-9a8b-0000 and the LAN address in
    /// hex), IPv6 off. Works on both kinds of NAT, and through
    /// [`Lab::firewall_wan`]. Call [`installed`] first. See the module doc for what it touches
    /// and why the binary is a patched copy.
    pub fn upnp(&mut self, nat: &Nat, protocols: Protocols) -> io::Result<Upnp> {
        if !protocols.upnp && !protocols.pcp_pmp {
            return Err(io::Error::other("lab: miniupnpd with no protocol to serve"));
        }
        let original = binary()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "miniupnpd is not installed"))?;
        let dir = TempDir::new("miniupnpd");
        let program = dir.join("miniupnpd");
        patched_binary(&original, &program)?;

        let rules = dir.join("miniupnpd.nft");
        std::fs::write(&rules, NFT_TABLE)?;
        self.exec(&nat.ns, "nft", &["-f", &rules.to_string_lossy()])?;

        let lan = nat.lan_network();
        let octets = nat.lan_ip.octets();
        let config = dir.join("miniupnpd.conf");
        std::fs::write(
            &config,
            format!(
                "ext_ifname=eth0\n\
                 listening_ip=br0\n\
                 http_port=0\n\
                 enable_upnp={}\n\
                 enable_natpmp={}\n\
                 secure_mode=yes\n\
                 ipv6_disable=yes\n\
                 system_uptime=no\n\
                 uuid=5e0c2a3b-7d41-4f6e-9a8b-0000{:02x}{:02x}{:02x}{:02x}\n\
                 lease_file={}\n\
                 upnp_table_name=miniupnpd\n\
                 upnp_nat_table_name=miniupnpd\n\
                 allow 1024-65535 {lan}/24 1024-65535\n\
                 deny 0-65535 0.0.0.0/0 0-65535\n",
                yes(protocols.upnp),
                yes(protocols.pcp_pmp),
                octets[0],
                octets[1],
                octets[2],
                octets[3],
                dir.join("miniupnpd.leases").display(),
            ),
        )?;

        let log_path = dir.join("miniupnpd.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = self.command(&nat.ns, &program);
        cmd.arg("-f")
            .arg(&config)
            .arg("-d")
            .arg("-P")
            .arg(dir.join("miniupnpd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = self.spawn(&mut cmd)?;

        // Up when it says so: "HTTP listening on port N" (UPnP), then "Listening for
        // NAT-PMP/PCP traffic on port 5351"; and its UDP sockets show in `ss`.
        let deadline = Instant::now() + Duration::from_secs(10);
        let http_port = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let http = text
                .lines()
                .find_map(|l| l.split("HTTP listening on port ").nth(1))
                .and_then(|p| p.trim().parse::<u16>().ok());
            let pcp = text.contains("Listening for NAT-PMP/PCP traffic on port");
            if (!protocols.upnp || http.is_some()) && (!protocols.pcp_pmp || pcp) {
                break http;
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "miniupnpd exited ({status}) before it listened: {text}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("miniupnpd did not come up within 10 s: {text}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if protocols.upnp {
            self.wait_udp_listen(&nat.ns, SSDP_PORT, left)?;
        }
        if protocols.pcp_pmp {
            self.wait_udp_listen(&nat.ns, PCP_PORT, left)?;
        }
        Ok(Upnp {
            ns: nat.ns.clone(),
            pid: child.id(),
            lan_ip: nat.lan_ip,
            external_ip: nat.wan_ip,
            http_port,
            pcp_port: protocols.pcp_pmp.then_some(PCP_PORT),
            dir,
            _child: child,
        })
    }
}
