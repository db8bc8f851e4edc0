//! The VXLAN overlay, for nodes that do not share an L2 segment (flannel's vxlan backend is the
//! model): pod traffic to another node crosses inside UDP 8472 between the two node addresses,
//! so the network between nodes only ever routes node addresses.
//!
//! In the node's network namespace the agent keeps one VXLAN device (`skiff.vxlan`, VNI 1,
//! `local` = the node's InternalIP, no learning) addressed with the first address of the node's
//! pod CIDR as a /32 (its VTEP address: the network address, which IPAM never hands to a pod).
//! Its MAC is derived from the node's address, so every node knows every other node's MAC from
//! the Node list alone, with no annotation to publish. For every other node:
//!
//! ```text
//! route  PEER_CIDR via PEER_VTEP dev skiff.vxlan onlink
//! neigh  PEER_VTEP lladdr PEER_MAC dev skiff.vxlan nud permanent
//! fdb    PEER_MAC dev skiff.vxlan dst PEER_NODE_IP self permanent
//! ```
//!
//! The reconciler reads what the device has each round and converges it to the Node list, so
//! nodes that left while the agent was down are cleaned up too. The device goes with the node's
//! namespace; switching the mode off leaves it (unused) in place.

use std::{
    collections::BTreeMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt as _, api::ListParams};
use serde_json::Value;
use tracing::{info, warn};

pub const DEVICE: &str = "skiff.vxlan";
pub const VNI: u32 = 1;
/// The Linux kernel's (and flannel's) VXLAN port, not IANA's 4789.
pub const PORT: u16 = 8472;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const OVERHEAD: u32 = 50;

/// How pod traffic reaches pods on other nodes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlay {
    /// Direct routing: each other node's pod CIDR via its address (nodes share an L2 segment).
    #[default]
    None,
    /// VXLAN encapsulation between node addresses (any IP path between nodes).
    Vxlan,
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(|| format!("{s:?} is not a MAC"))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("{s:?} is not a MAC"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC"));
        }
        Ok(Self(mac))
    }
}

/// The VTEP MAC of the node at `node_ip`: locally administered, unicast, and the address in
/// the low four bytes, so it is unique among nodes and known to all of them.
#[must_use]
pub fn vtep_mac(node_ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = node_ip.octets();
    Mac([0x02, 0x73, a, b, c, d])
}

/// The VTEP address of a node: the network address of its pod CIDR (`A.B.C.D/N`).
pub fn vtep_address(pod_cidr: &str) -> anyhow::Result<Ipv4Addr> {
    let (addr, len) = pod_cidr
        .split_once('/')
        .with_context(|| format!("pod CIDR {pod_cidr:?} has no prefix length"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("pod CIDR {pod_cidr:?}: bad address"))?;
    let len: u32 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .with_context(|| format!("pod CIDR {pod_cidr:?}: bad prefix length"))?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok(Ipv4Addr::from(u32::from(addr) & mask))
}

/// Another node as this node's VXLAN device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub node_ip: Ipv4Addr,
    pub vtep: Ipv4Addr,
    pub mac: Mac,
}

/// Pod CIDR -> peer, for every node but `me` with a pod CIDR and an address (as direct routing
/// chooses them); a CIDR that does not parse is skipped with a warning.
pub fn peers(nodes: &[Node], me: &str) -> BTreeMap<String, Peer> {
    crate::routes::desired(nodes, me)
        .into_iter()
        .filter_map(|(cidr, node_ip)| match vtep_address(&cidr) {
            Ok(vtep) => Some((
                cidr,
                Peer {
                    node_ip,
                    vtep,
                    mac: vtep_mac(node_ip),
                },
            )),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "skipping a node in the overlay");
                None
            }
        })
        .collect()
}

/// What the device has now: its routes, neighbours and forwarding entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fib {
    /// Destination -> gateway.
    pub routes: BTreeMap<String, Option<Ipv4Addr>>,
    /// Address -> MAC, permanent entries only (anything else is replaced).
    pub neighbours: BTreeMap<Ipv4Addr, Option<Mac>>,
    /// MAC -> remote node address.
    pub fdb: BTreeMap<Mac, Option<Ipv4Addr>>,
}

/// The commands (program and arguments) that take the device from `have` to `want`: stale
/// entries go first, then each peer gets its forwarding entry, neighbour and route, in the
/// order a packet needs them.
#[must_use]
pub fn plan(want: &BTreeMap<String, Peer>, have: &Fib) -> Vec<Vec<String>> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let cmd = |parts: &[&str]| parts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for dst in have.routes.keys().filter(|d| !want.contains_key(*d)) {
        cmds.push(cmd(&["ip", "route", "del", dst, "dev", DEVICE]));
    }
    for ip in have.neighbours.keys() {
        if !want.values().any(|p| p.vtep == *ip) {
            cmds.push(cmd(&["ip", "neigh", "del", &ip.to_string(), "dev", DEVICE]));
        }
    }
    for mac in have.fdb.keys() {
        if !want.values().any(|p| p.mac == *mac) {
            cmds.push(cmd(&[
                "bridge",
                "fdb",
                "del",
                &mac.to_string(),
                "dev",
                DEVICE,
                "self",
            ]));
        }
    }
    for (cidr, peer) in want {
        let (mac, vtep, node_ip) = (
            peer.mac.to_string(),
            peer.vtep.to_string(),
            peer.node_ip.to_string(),
        );
        if have.fdb.get(&peer.mac) != Some(&Some(peer.node_ip)) {
            cmds.push(cmd(&[
                "bridge",
                "fdb",
                "replace",
                &mac,
                "dev",
                DEVICE,
                "dst",
                &node_ip,
                "self",
                "permanent",
            ]));
        }
        if have.neighbours.get(&peer.vtep) != Some(&Some(peer.mac)) {
            cmds.push(cmd(&[
                "ip",
                "neigh",
                "replace",
                &vtep,
                "lladdr",
                &mac,
                "dev",
                DEVICE,
                "nud",
                "permanent",
            ]));
        }
        if have.routes.get(cidr) != Some(&Some(peer.vtep)) {
            cmds.push(cmd(&[
                "ip", "route", "replace", cidr, "via", &vtep, "dev", DEVICE, "onlink",
            ]));
        }
    }
    cmds
}

/// Reads the device's routes, neighbours and forwarding entries (`ip -j`, `bridge -j`).
fn read_fib(netns: Option<&Path>) -> anyhow::Result<Fib> {
    let json = |program: &str, args: &[&str]| -> anyhow::Result<Vec<Value>> {
        let out = iproute2(netns, program, args)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out)
            .with_context(|| format!("parsing `{program} {}`", args.join(" ")))
    };
    let str_of = |v: &Value, key: &str| v[key].as_str().map(str::to_owned);
    let mut fib = Fib::default();
    for r in json("ip", &["-j", "-4", "route", "show", "dev", DEVICE])? {
        if let Some(dst) = str_of(&r, "dst") {
            let gw = str_of(&r, "gateway").and_then(|g| g.parse().ok());
            fib.routes.insert(dst, gw);
        }
    }
    for n in json("ip", &["-j", "-4", "neigh", "show", "dev", DEVICE])? {
        let Some(ip) = str_of(&n, "dst").and_then(|d| d.parse().ok()) else {
            continue;
        };
        let permanent = n["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "PERMANENT"));
        let mac = str_of(&n, "lladdr")
            .and_then(|m| m.parse().ok())
            .filter(|_| permanent);
        fib.neighbours.insert(ip, mac);
    }
    for f in json("bridge", &["-j", "fdb", "show", "dev", DEVICE])? {
        let Some(mac) = str_of(&f, "mac").and_then(|m| m.parse().ok()) else {
            continue;
        };
        let dst = str_of(&f, "dst").and_then(|d| d.parse().ok());
        fib.fdb.insert(mac, dst);
    }
    Ok(fib)
}

/// The MTU of the interface holding `node_ip` in the node's namespace: the underlay's, which
/// the overlay's (and so the pods') must stay [`OVERHEAD`] below.
pub fn underlay_mtu(netns: Option<&Path>, node_ip: Ipv4Addr) -> anyhow::Result<u32> {
    let out = iproute2(netns, "ip", &["-j", "-4", "addr", "show"])?;
    let links: Vec<Value> = serde_json::from_str(&out).context("parsing `ip -j addr show`")?;
    let want = node_ip.to_string();
    let link = links
        .iter()
        .find(|l| {
            l["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["local"] == want.as_str()))
        })
        .with_context(|| format!("no interface in the node's namespace has {node_ip}"))?;
    let mtu = link["mtu"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .with_context(|| format!("the interface with {node_ip} reports no MTU"))?;
    if mtu < 68 + OVERHEAD {
        bail!("the interface with {node_ip} has MTU {mtu}: too small for VXLAN");
    }
    Ok(mtu)
}

/// The device as it should be; `mtu` is the device's (the underlay's less [`OVERHEAD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Device {
    local: Ipv4Addr,
    mac: Mac,
    mtu: u32,
}

/// Creates the device, or re-creates it when an earlier one differs (another address, MTU,
/// VNI...), and gives it the VTEP address.
fn ensure_device(netns: Option<&Path>, dev: Device, vtep: Ipv4Addr) -> anyhow::Result<()> {
    let current = iproute2(netns, "ip", &["-j", "-d", "addr", "show", "dev", DEVICE])
        .ok()
        .and_then(|out| serde_json::from_str::<Vec<Value>>(&out).ok())
        .and_then(|v| v.into_iter().next());
    let fits = current.as_ref().is_some_and(|l| {
        let data = &l["linkinfo"]["info_data"];
        l["linkinfo"]["info_kind"] == "vxlan"
            && data["id"] == VNI
            && data["port"] == PORT
            && data["local"] == dev.local.to_string().as_str()
            && data["learning"] == false
            && l["mtu"] == dev.mtu
            && l["address"] == dev.mac.to_string().as_str()
    });
    if !fits {
        if current.is_some() {
            info!(
                device = DEVICE,
                "re-creating the VXLAN device with new settings"
            );
            iproute2(netns, "ip", &["link", "del", DEVICE])?;
        }
        iproute2(
            netns,
            "ip",
            &[
                "link",
                "add",
                DEVICE,
                "address",
                &dev.mac.to_string(),
                "mtu",
                &dev.mtu.to_string(),
                "type",
                "vxlan",
                "id",
                &VNI.to_string(),
                "local",
                &dev.local.to_string(),
                "dstport",
                &PORT.to_string(),
                "nolearning",
            ],
        )?;
        info!(device = DEVICE, local = %dev.local, mac = %dev.mac, mtu = dev.mtu, "VXLAN device created");
    }
    let has_vtep = fits
        && current.as_ref().is_some_and(|l| {
            l["addr_info"].as_array().is_some_and(|a| {
                a.len() == 1
                    && a[0]["local"] == vtep.to_string().as_str()
                    && a[0]["prefixlen"] == 32
            })
        });
    if !has_vtep {
        iproute2(netns, "ip", &["addr", "flush", "dev", DEVICE])?;
        iproute2(
            netns,
            "ip",
            &["addr", "add", &format!("{vtep}/32"), "dev", DEVICE],
        )?;
    }
    iproute2(netns, "ip", &["link", "set", DEVICE, "up"])?;
    Ok(())
}

/// Keeps the VXLAN device of the node's namespace (`netns`, or the agent's own) in line with
/// the Nodes, every few seconds. `local` is this node's address, `mtu` the underlay's.
pub async fn run(
    client: Client,
    me: String,
    netns: Option<PathBuf>,
    local: Ipv4Addr,
    underlay_mtu: u32,
) {
    let nodes: Api<Node> = Api::all(client);
    let dev = Device {
        local,
        mac: vtep_mac(local),
        mtu: underlay_mtu.saturating_sub(OVERHEAD),
    };
    let mut device_ready = false;
    loop {
        match nodes.list(&ListParams::default()).await {
            Ok(list) => {
                let (netns, me) = (netns.clone(), me.clone());
                let round = tokio::task::spawn_blocking(move || {
                    reconcile(&list.items, &me, netns.as_deref(), dev, device_ready)
                })
                .await;
                device_ready = match round {
                    Ok(Ok(ready)) => ready,
                    Ok(Err(e)) => {
                        warn!(error = %format!("{e:#}"), "reconciling the VXLAN overlay");
                        false
                    }
                    Err(e) => {
                        warn!(error = %e, "the overlay reconciler panicked");
                        false
                    }
                };
            }
            Err(e) => warn!(error = %e, "listing nodes for the overlay"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn reconcile(
    nodes: &[Node],
    me: &str,
    netns: Option<&Path>,
    dev: Device,
    device_ready: bool,
) -> anyhow::Result<bool> {
    let Some(own_cidr) = nodes
        .iter()
        .find(|n| n.name_any() == me)
        .and_then(|n| n.spec.as_ref()?.pod_cidr.clone())
        .filter(|c| !c.is_empty())
    else {
        // No VTEP address before the node has its pod CIDR (nor pods to reach).
        return Ok(false);
    };
    if !device_ready {
        ensure_device(netns, dev, vtep_address(&own_cidr)?)?;
    }
    let want = peers(nodes, me);
    let have = read_fib(netns)?;
    for cmd in plan(&want, &have) {
        let (program, args) = cmd.split_first().expect("plan makes no empty commands");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match iproute2(netns, program, &args) {
            Ok(_) => info!(command = %cmd.join(" "), "overlay updated"),
            Err(e) => {
                warn!(command = %cmd.join(" "), error = %format!("{e:#}"), "updating the overlay");
            }
        }
    }
    Ok(true)
}

/// Runs an iproute2 `program` inside `netns` (or right here); returns its standard output.
fn iproute2(netns: Option<&Path>, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", ns.display())).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    let out = cmd
        .args(args)
        .output()
        .with_context(|| format!("running {program} (iproute2)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    fn cmds(plan: &[Vec<String>]) -> Vec<String> {
        plan.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn the_vtep_is_the_network_address_and_the_mac_follows_the_node_address() {
        assert_eq!(
            vtep_address("10.244.3.0/24").unwrap(),
            Ipv4Addr::new(10, 244, 3, 0)
        );
        assert_eq!(
            vtep_address("10.244.3.77/24").unwrap(),
            Ipv4Addr::new(10, 244, 3, 0)
        );
        assert_eq!(vtep_address("0.0.0.0/0").unwrap(), Ipv4Addr::UNSPECIFIED);
        assert!(vtep_address("10.244.3.0").is_err());
        assert!(vtep_address("10.244.3.0/33").is_err());
        let mac = vtep_mac(Ipv4Addr::new(198, 18, 2, 10));
        assert_eq!(mac.to_string(), "02:73:c6:12:02:0a");
        assert_eq!(mac.0[0] & 1, 0, "unicast");
        assert_eq!(mac.0[0] & 2, 2, "locally administered");
        assert_eq!("02:73:c6:12:02:0a".parse::<Mac>().unwrap(), mac);
        assert!("02:73:c6:12:02".parse::<Mac>().is_err());
        assert!("02:73:c6:12:02:0a:00".parse::<Mac>().is_err());
    }

    #[test]
    fn an_empty_device_gets_every_peer_and_a_converged_one_nothing() {
        let nodes = [
            node("n1", "10.244.0.0/24", "198.18.1.2"),
            node("n2", "10.244.1.0/24", "198.18.2.2"),
        ];
        let want = peers(&nodes, "n1");
        assert_eq!(
            cmds(&plan(&want, &Fib::default())),
            [
                "bridge fdb replace 02:73:c6:12:02:02 dev skiff.vxlan dst 198.18.2.2 self permanent",
                "ip neigh replace 10.244.1.0 lladdr 02:73:c6:12:02:02 dev skiff.vxlan nud permanent",
                "ip route replace 10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink",
            ]
        );
        let converged = Fib {
            routes: [("10.244.1.0/24".into(), Some(Ipv4Addr::new(10, 244, 1, 0)))].into(),
            neighbours: [(
                Ipv4Addr::new(10, 244, 1, 0),
                Some(vtep_mac(Ipv4Addr::new(198, 18, 2, 2))),
            )]
            .into(),
            fdb: [(
                vtep_mac(Ipv4Addr::new(198, 18, 2, 2)),
                Some(Ipv4Addr::new(198, 18, 2, 2)),
            )]
            .into(),
        };
        assert!(plan(&want, &converged).is_empty(), "idempotent");
    }

    #[test]
    fn a_node_that_left_is_removed_and_a_moved_one_replaced() {
        let gone_mac = vtep_mac(Ipv4Addr::new(198, 18, 3, 3));
        let have = Fib {
            routes: [
                ("10.244.2.0/24".into(), Some(Ipv4Addr::new(10, 244, 2, 0))),
                ("10.244.1.0/24".into(), Some(Ipv4Addr::new(198, 18, 2, 2))),
            ]
            .into(),
            neighbours: [
                (Ipv4Addr::new(10, 244, 2, 0), Some(gone_mac)),
                // Not permanent: read as no MAC.
                (Ipv4Addr::new(10, 244, 1, 0), None),
            ]
            .into(),
            fdb: [
                (gone_mac, Some(Ipv4Addr::new(198, 18, 3, 3))),
                // The node moved to another address.
                (
                    vtep_mac(Ipv4Addr::new(198, 18, 2, 2)),
                    Some(Ipv4Addr::new(198, 18, 9, 9)),
                ),
            ]
            .into(),
        };
        let nodes = [
            node("n1", "10.244.0.0/24", "198.18.1.2"),
            node("n2", "10.244.1.0/24", "198.18.2.2"),
        ];
        assert_eq!(
            cmds(&plan(&peers(&nodes, "n1"), &have)),
            [
                "ip route del 10.244.2.0/24 dev skiff.vxlan",
                "ip neigh del 10.244.2.0 dev skiff.vxlan",
                "bridge fdb del 02:73:c6:12:03:03 dev skiff.vxlan self",
                "bridge fdb replace 02:73:c6:12:02:02 dev skiff.vxlan dst 198.18.2.2 self permanent",
                "ip neigh replace 10.244.1.0 lladdr 02:73:c6:12:02:02 dev skiff.vxlan nud permanent",
                "ip route replace 10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink",
            ]
        );
    }
}
