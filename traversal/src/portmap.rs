//! A port mapping on the home router for the media socket: the patent's router-stored mapping,
//! asked for explicitly. PCP (RFC 6887) and NAT-PMP (RFC 6886) through the sans-IO
//! [`crate::client::portmap::PortMap`], then UPnP IGD (SSDP and SOAP, the `igd-next` crate on a
//! blocking thread) when the router answers neither.
//!
//! A mapped port takes datagrams from anyone: it is a candidate that the peer's checks reach
//! whatever the router's NAT does (a port-random one included), so a call that would have been
//! relayed goes direct ([`crate::phone::Phone::set_router_mapping`]).
//!
//! ```text
//! start ──> Asking ──PCP / NAT-PMP──> Mapped ──renewed at half its lifetime──> ...
//!              │  no answer / refused                 │ lost (router restarted, refused)
//!              └──UPnP IGD──> Mapped                  └──> Asking again a minute later
//!              └──neither──> Unavailable(why)
//! release ──> the mapping deleted (lifetime 0 / DeletePortMapping) ──> Released
//! ```
//!
//! The task sends only to the default gateway (PCP, NAT-PMP, the UPnP device it finds) and to
//! the SSDP multicast group of the local network (239.255.255.250:1900). It is not started
//! for a server on loopback or on the local network, where no router is in the way (so tests on
//! loopback never talk to this machine's router).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::portmap::{self, PortMap, PortMapConfig, PortMapEvent};

/// What the router was asked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device (WANIPConnection AddPortMapping).
    Upnp,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Pcp => "PCP",
            Method::NatPmp => "NAT-PMP",
            Method::Upnp => "UPnP IGD",
        })
    }
}

/// Where the port mapping stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not asked for (switched off, or no router in the way).
    Off,
    /// Asking the router.
    Asking,
    /// The router maps `external` to the media socket.
    Mapped {
        /// How.
        method: Method,
        /// The public address and port.
        external: SocketAddr,
        /// The router that maps it.
        gateway: Ipv4Addr,
    },
    /// No mapping: why, in words.
    Unavailable(String),
    /// Deleted on the router (the engine stopped).
    Released,
}

impl Status {
    /// The mapped public address, while there is one.
    pub fn external(&self) -> Option<SocketAddr> {
        match self {
            Status::Mapped { external, .. } => Some(*external),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Off => f.write_str("not asked for"),
            Status::Asking => f.write_str("asking the router"),
            Status::Mapped {
                method,
                external,
                gateway,
            } => write!(f, "{external} mapped by the router at {gateway} ({method})"),
            Status::Unavailable(why) => write!(f, "none: {why}"),
            Status::Released => f.write_str("released"),
        }
    }
}

/// Settings of [`PortMapper::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The router to ask; `None`: the default gateway ([`default_gateway`]).
    pub gateway: Option<Ipv4Addr>,
    /// Ask with PCP, then NAT-PMP.
    pub pcp: bool,
    /// Ask with UPnP IGD when PCP and NAT-PMP got nothing.
    pub upnp: bool,
    /// How long the UPnP search waits for the router (2 s).
    pub upnp_timeout: Duration,
    /// The lifetime asked for (2 h); renewed at half of what the router grants.
    pub lifetime: Duration,
    /// After a mapping is lost, ask again this much later (60 s).
    pub retry_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gateway: None,
            pcp: true,
            upnp: true,
            upnp_timeout: Duration::from_secs(2),
            lifetime: Duration::from_secs(7200),
            retry_after: Duration::from_secs(60),
        }
    }
}

/// True when a router may be between us (at `local`) and the server at `server`: the server
/// is neither on loopback nor on our own /24 (IPv4 only: the routers that map ports are
/// IPv4 NATs).
pub fn worth_asking(local: IpAddr, server: IpAddr) -> bool {
    match (local, server) {
        (IpAddr::V4(local), IpAddr::V4(server)) => {
            !local.is_loopback()
                && !server.is_loopback()
                && !local.is_unspecified()
                && local.octets()[..3] != server.octets()[..3]
        }
        _ => false,
    }
}

/// The default gateway of IPv4 from the kernel's routing table (`/proc/net/route`; Linux).
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&table)
}

/// The gateway of the first default route (destination and mask 0) in `/proc/net/route`'s
/// format: hexadecimal fields in the host's byte order (little-endian here).
fn parse_route_table(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, mask) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        if *destination != "00000000" || *mask != "00000000" {
            return None;
        }
        let gateway = u32::from_str_radix(gateway, 16).ok()?;
        (gateway != 0).then(|| Ipv4Addr::from(gateway.to_le_bytes()))
    })
}

/// The port mapping's task. Dropping it stops the task without deleting the mapping (it then
/// expires on the router); [`PortMapper::release`] deletes it.
#[derive(Debug)]
pub struct PortMapper {
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl PortMapper {
    /// Starts asking the router to map `internal` (our address on the local network and the
    /// media socket's port). Must be called on a tokio runtime.
    pub fn start(internal: SocketAddrV4, options: Options) -> Self {
        let (tx, status) = watch::channel(Status::Asking);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(internal, options, tx, stop_rx));
        PortMapper {
            status,
            stop: Some(stop),
            task,
        }
    }

    /// Where it stands now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Deletes the mapping on the router, waiting at most `timeout`; the status then.
    pub async fn release(mut self, timeout: Duration) -> Status {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            tracing::debug!("port mapping: not released within {timeout:?}");
            self.task.abort();
        }
        self.status.borrow().clone()
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// How one attempt with one method ended.
enum Outcome {
    /// Released on request: the task ends.
    Stopped,
    /// It never mapped: why.
    Unavailable(String),
    /// It mapped, then lost the mapping.
    Lost,
}

async fn run(
    internal: SocketAddrV4,
    options: Options,
    tx: watch::Sender<Status>,
    mut stop: oneshot::Receiver<()>,
) {
    let Some(gateway) = options.gateway.or_else(default_gateway) else {
        let _ = tx.send(Status::Unavailable(
            "no default route, so no router to ask".into(),
        ));
        let _ = (&mut stop).await;
        let _ = tx.send(Status::Released);
        return;
    };
    loop {
        let _ = tx.send(Status::Asking);
        let mut reasons = Vec::new();
        let mut lost = false;
        if options.pcp {
            match pcp(internal, gateway, &options, &tx, &mut stop).await {
                Outcome::Stopped => return finish(&tx),
                Outcome::Unavailable(why) => reasons.push(why),
                Outcome::Lost => lost = true,
            }
        }
        if options.upnp && !lost {
            match upnp(internal, &options, &tx, &mut stop).await {
                Outcome::Stopped => return finish(&tx),
                Outcome::Unavailable(why) => reasons.push(why),
                Outcome::Lost => lost = true,
            }
        }
        if lost {
            tracing::info!(
                "port mapping lost; asking again in {:?}",
                options.retry_after
            );
            let _ = tx.send(Status::Unavailable("the router dropped the mapping".into()));
        } else {
            let why = if reasons.is_empty() {
                "switched off".to_string()
            } else {
                reasons.join("; ")
            };
            tracing::info!("no port mapping from the router at {gateway}: {why}");
            let _ = tx.send(Status::Unavailable(why));
            // Nothing answered: ask no more in this run.
            let _ = (&mut stop).await;
            return finish(&tx);
        }
        tokio::select! {
            _ = &mut stop => return finish(&tx),
            () = tokio::time::sleep(options.retry_after) => {}
        }
    }
}

fn finish(tx: &watch::Sender<Status>) {
    let _ = tx.send(Status::Released);
}

/// PCP, then NAT-PMP, from a socket of our own on `internal`'s address.
async fn pcp(
    internal: SocketAddrV4,
    gateway: Ipv4Addr,
    options: &Options,
    tx: &watch::Sender<Status>,
    stop: &mut oneshot::Receiver<()>,
) -> Outcome {
    let socket = match UdpSocket::bind(SocketAddr::from((*internal.ip(), 0))).await {
        Ok(s) => s,
        Err(e) => return Outcome::Unavailable(crate::plain::io_error(&e)),
    };
    // Connected, so that a router with nothing on the port answers at once: its ICMP "port
    // unreachable" comes back as an error on the next receive.
    if let Err(e) = socket.connect((gateway, portmap::PORT)).await {
        return Outcome::Unavailable(crate::plain::io_error(&e));
    }
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut config = PortMapConfig::new(
        gateway,
        *internal.ip(),
        internal.port(),
        u64::from_le_bytes(seed),
    );
    config.lifetime = options.lifetime;
    let mut map = PortMap::new(config, Instant::now());
    let mut releasing = false;
    let mut mapped = false;
    let mut buf = [0u8; 1100];
    loop {
        while let Some((to, bytes)) = map.poll_transmit() {
            if let Err(e) = socket.send(&bytes).await {
                tracing::debug!(%to, "port mapping: send: {e}");
            }
        }
        while let Some(event) = map.poll_event() {
            match event {
                PortMapEvent::Mapped {
                    protocol,
                    external,
                    lifetime,
                } => {
                    mapped = true;
                    let method = match protocol {
                        portmap::Protocol::Pcp => Method::Pcp,
                        portmap::Protocol::NatPmp => Method::NatPmp,
                    };
                    tracing::info!(%external, %method, ?lifetime, "router port mapping");
                    let _ = tx.send(Status::Mapped {
                        method,
                        external,
                        gateway,
                    });
                }
                PortMapEvent::Unavailable(why) => return Outcome::Unavailable(why.to_string()),
                PortMapEvent::Lost => return Outcome::Lost,
                PortMapEvent::Released => return Outcome::Stopped,
            }
        }
        let deadline = map.poll_timeout();
        if deadline.is_none() {
            return if releasing {
                Outcome::Stopped
            } else if mapped {
                Outcome::Lost
            } else {
                Outcome::Unavailable(portmap::Unavailable::NoAnswer.to_string())
            };
        }
        tokio::select! {
            _ = &mut *stop, if !releasing => {
                releasing = true;
                map.release(Instant::now());
            }
            received = socket.recv(&mut buf) => match received {
                Ok(n) => {
                    let from = SocketAddr::from((gateway, portmap::PORT));
                    map.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && !mapped => {
                    return Outcome::Unavailable(
                        "the router does not listen for PCP or NAT-PMP".into(),
                    );
                }
                Err(e) => tracing::debug!("port mapping: receive: {e}"),
            },
            () = sleep_until(deadline) => map.handle_timeout(Instant::now()),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// UPnP IGD: find the router (SSDP), map the port (the same external port if free, any
/// otherwise), renew at half the lease, delete it when stopped.
async fn upnp(
    internal: SocketAddrV4,
    options: &Options,
    tx: &watch::Sender<Status>,
    stop: &mut oneshot::Receiver<()>,
) -> Outcome {
    use igd_next::{PortMappingProtocol, SearchOptions};
    let lease = u32::try_from(options.lifetime.as_secs())
        .unwrap_or(u32::MAX)
        .max(60);
    let mut search = SearchOptions::default();
    search.bind_addr = SocketAddr::from((*internal.ip(), 0));
    search.timeout = Some(options.upnp_timeout);
    search.single_search_timeout = Some(options.upnp_timeout);
    let local = SocketAddr::V4(internal);
    let found = tokio::select! {
        _ = &mut *stop => return Outcome::Stopped,
        found = tokio::task::spawn_blocking(move || {
            let gateway = igd_next::search_gateway(search).map_err(|e| {
                tracing::debug!("UPnP IGD search: {e}");
                "no UPnP IGD device answered on the local network".to_string()
            })?;
            let ip = gateway
                .get_external_ip()
                .map_err(|e| format!("the UPnP IGD router gave no external address: {e}"))?;
            let port = add(&gateway, local, lease, None)
                .map_err(|e| format!("the UPnP IGD router refused the port mapping: {e}"))?;
            Ok::<_, String>((gateway, ip, port))
        }) => found,
    };
    let (device, ip, port) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return Outcome::Unavailable(why),
        Err(e) => return Outcome::Unavailable(e.to_string()),
    };
    let gateway = match device.addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let external = SocketAddr::new(ip, port);
    tracing::info!(%external, lease, "router port mapping (UPnP IGD)");
    let _ = tx.send(Status::Mapped {
        method: Method::Upnp,
        external,
        gateway,
    });
    let renew = Duration::from_secs(u64::from(lease / 2));
    loop {
        tokio::select! {
            _ = &mut *stop => {
                let device = device.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    device.remove_port(PortMappingProtocol::UDP, port)
                })
                .await;
                tracing::info!(?removed, "UPnP IGD port mapping deleted");
                return Outcome::Stopped;
            }
            () = tokio::time::sleep(renew) => {
                let device = device.clone();
                let renewed = tokio::task::spawn_blocking(move || add(&device, local, lease, Some(port))).await;
                if !matches!(renewed, Ok(Ok(p)) if p == port) {
                    tracing::info!(?renewed, "UPnP IGD port mapping not renewed");
                    return Outcome::Lost;
                }
            }
        }
    }
}

/// AddPortMapping for `local`: external port `port` (a renewal), or the same as the internal
/// one, or any the router picks when that is taken. The external port.
fn add(
    device: &igd_next::Gateway,
    local: SocketAddr,
    lease: u32,
    port: Option<u16>,
) -> Result<u16, String> {
    use igd_next::PortMappingProtocol::UDP;
    let wanted = port.unwrap_or(local.port());
    match device.add_port(UDP, wanted, local, lease, "Pinhole") {
        Ok(()) => Ok(wanted),
        Err(e) if port.is_some() => Err(e.to_string()),
        Err(_) => device
            .add_any_port(UDP, local, lease, "Pinhole")
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_gateway_is_read_from_the_kernels_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_route_table(table), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let no_default = "Iface\tDestination\tGateway\n\
                          eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_route_table(no_default), None);
        assert_eq!(parse_route_table(""), None);
        assert_eq!(parse_route_table("garbage\nx y\n"), None);
    }

    #[test]
    fn only_a_server_beyond_the_local_network_is_worth_a_mapping() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(worth_asking(ip("192.168.1.20"), ip("203.0.113.5")));
        assert!(!worth_asking(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(!worth_asking(ip("192.168.1.20"), ip("192.168.1.5")));
        assert!(!worth_asking(ip("2001:db8::1"), ip("2001:db8:1::1")));
    }

    #[tokio::test]
    async fn a_router_that_answers_nothing_leaves_no_mapping_and_releases_at_once() {
        // A "gateway" on loopback where nothing answers port 5351, no UPnP: unavailable after
        // PCP.s and NAT-PMP.s tries (about 7.5 s of real time).
        let options = Options {
            gateway: Some(Ipv4Addr::LOCALHOST),
            upnp: false,
            ..Options::default()
        };
        let mapper = PortMapper::start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000), options);
        let mut watch = mapper.watch();
        let status = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let now = watch.borrow_and_update().clone();
                if matches!(now, Status::Unavailable(_)) {
                    return now;
                }
                watch.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(
            status,
            Status::Unavailable("the router does not listen for PCP or NAT-PMP".into()),
            "{status}"
        );
        assert_eq!(
            mapper.release(Duration::from_secs(1)).await,
            Status::Released
        );
    }
}
