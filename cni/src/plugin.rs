//! The verbs: ADD, DEL, CHECK, GC, STATUS and VERSION, each a function of the environment and
//! the config on stdin, returning the JSON to print (or a [`CniError`]).

use std::{fs::File, net::Ipv4Addr, path::Path};

use serde_json::Value;
use skiff_datapath::{EndpointMap, PodDatapath, PodEndpoint};

use crate::{
    config::{self, Command, Env, GATEWAY, NetConf, version_at_least},
    error::{CniError, Code, Result},
    ipam::{Ipv4Net, Owner, Store},
    netlink::{Mac, Netlink, NetlinkError, VethEnd, format_mac},
    types::{Interface, IpConfig, Route, version_result},
};

impl From<skiff_datapath::LoadError> for CniError {
    fn from(e: skiff_datapath::LoadError) -> Self {
        CniError::new(Code::Io, "loading the skiff-pod eBPF program", e)
    }
}

impl From<skiff_datapath::EndpointError> for CniError {
    fn from(e: skiff_datapath::EndpointError) -> Self {
        CniError::new(Code::Io, "updating the pod endpoint map", e)
    }
}

impl From<NetlinkError> for CniError {
    fn from(e: NetlinkError) -> Self {
        CniError::new(Code::Netlink, "netlink request failed", e)
    }
}

/// Runs one verb. `Ok(None)` means success with nothing to print.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>> {
    if env.command == Command::Version {
        // Only cniVersion matters here; podman sends just `{"cniVersion":"1.0.0"}`.
        let requested = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Ok(Some(version_result(&requested)));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => add(env, &conf).map(Some),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => {
            require_version(&conf, "0.4.0", "CHECK")?;
            check(env, &conf).map(|()| None)
        }
        Command::Gc => {
            require_version(&conf, "1.1.0", "GC")?;
            gc(&conf).map(|()| None)
        }
        Command::Status => {
            require_version(&conf, "1.1.0", "STATUS")?;
            status(&conf).map(|()| None)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn require_version(conf: &NetConf, min: &str, verb: &str) -> Result<()> {
    if version_at_least(&conf.cni_version, min) {
        Ok(())
    } else {
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!("{verb} needs cniVersion {min} or later"),
            format!("config has cniVersion {}", conf.cni_version),
        ))
    }
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases, and these names
/// must stay the same across plugin upgrades so DEL finds what an older ADD made).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The names and MACs of one attachment, all derived from (network, container, ifname) so
/// that DEL and GC need nothing but those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_veth: String,
    pub host_mac: Mac,
    pub pod_mac: Mac,
    pub alias: String,
}

fn mac_from(h: u64) -> Mac {
    let b = h.to_be_bytes();
    // Locally administered, unicast.
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// Host veth names start with this, so operators (and GC) can tell them apart.
pub const HOST_VETH_PREFIX: &str = "skf";

/// The alias on every host veth: `skiff-cni/<network>/<container>/<ifname>`.
fn alias_prefix(network: &str) -> String {
    format!("skiff-cni/{network}/")
}

impl Attachment {
    #[must_use]
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Self {
        let h = fnv1a(&[network, container_id, ifname]);
        Self {
            // 3 + 12 hex digits = 15 bytes, the kernel's limit.
            host_veth: format!("{HOST_VETH_PREFIX}{:012x}", h >> 16),
            host_mac: mac_from(fnv1a(&[network, container_id, ifname, "host"])),
            pod_mac: mac_from(fnv1a(&[network, container_id, ifname, "pod"])),
            alias: format!("{}{container_id}/{ifname}", alias_prefix(network)),
        }
    }
}

fn open_netns(path: &str) -> Result<File> {
    File::open(path).map_err(|e| {
        CniError::new(
            Code::UnknownContainer,
            "cannot open the container's network namespace",
            format!("{path}: {e}"),
        )
    })
}

fn reserved(conf: &NetConf, subnet: Ipv4Net) -> Vec<Ipv4Addr> {
    vec![
        conf.ipam
            .gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1)),
    ]
}

fn add(env: &Env, conf: &NetConf) -> Result<Value> {
    let subnet = conf.subnet()?;
    let prev = conf.prev_result()?;
    let netns = open_netns(&env.netns)?;
    // Refuse before touching anything: an existing interface may be a live attachment (a
    // repeated ADD), and the rollback below must never tear that down.
    if Netlink::in_netns(Path::new(&env.netns))?
        .link(&env.ifname)?
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidConfig,
            "interface already exists in the container",
            format!("{} in {}", env.ifname, env.netns),
        ));
    }
    let att = Attachment::new(&conf.name, &env.container_id, &env.ifname);
    let store = Store::open(conf.data_dir(), &conf.name)?;
    let owner = Owner {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        host_veth: att.host_veth.clone(),
    };
    // The lock covers only the allocation, so parallel ADDs overlap their netlink work.
    let ip = store
        .lock()?
        .allocate(subnet, &reserved(conf, subnet), &owner)?;
    let wired = wire(env, conf, &att, &netns, ip).and_then(|host_index| match &conf.bpffs {
        Some(bpffs) => attach_datapath(bpffs, &att, ip, host_index),
        None => Ok(()),
    });
    if let Err(e) = wired {
        // Leave nothing half-made: the host veth takes its peer and both routes with it.
        if let Ok(mut host) = Netlink::new() {
            let _ = host.del_link(&att.host_veth);
        }
        if let Ok(lock) = store.lock() {
            let _ = lock.remove(ip);
        }
        return Err(e);
    }
    let mut result = prev.unwrap_or_default();
    let base = result.interfaces.len();
    let mtu = Some(conf.mtu());
    result.interfaces.push(Interface {
        name: att.host_veth.clone(),
        mac: format_mac(&att.host_mac),
        mtu,
        sandbox: None,
    });
    result.interfaces.push(Interface {
        name: env.ifname.clone(),
        mac: format_mac(&att.pod_mac),
        mtu,
        sandbox: Some(env.netns.clone()),
    });
    result.ips.push(IpConfig {
        version: None,
        address: format!("{ip}/32"),
        gateway: Some(GATEWAY.to_string()),
        interface: Some(base + 1),
    });
    result.routes.push(Route {
        dst: "0.0.0.0/0".into(),
        gw: Some(GATEWAY.to_string()),
    });
    if conf.dns.is_some() {
        result.dns.clone_from(&conf.dns);
    }
    let result = result.for_version(&conf.cni_version);
    serde_json::to_value(result).map_err(|e| CniError::new(Code::Io, "encoding result", e))
}

/// Pod traffic is routed by the host namespace, which therefore must forward (as Debian's
/// ptp plugin does too); this runs in the runtime's namespace, so it affects only that one.
fn enable_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").map_err(|e| {
        CniError::new(
            Code::Io,
            "cannot enable IPv4 forwarding",
            format!("{PATH}: {e}"),
        )
    })
}

/// Puts the pod on the eBPF fast path: the program on its host veth, its endpoint in the map.
fn attach_datapath(bpffs: &Path, att: &Attachment, ip: Ipv4Addr, host_index: u32) -> Result<()> {
    let mut datapath = PodDatapath::load(bpffs)?;
    datapath.attach(&att.host_veth)?;
    datapath.endpoints()?.insert(&PodEndpoint {
        ip,
        ifindex: host_index,
        pod_mac: att.pod_mac,
        host_mac: att.host_mac,
    })?;
    Ok(())
}

/// Makes the veth pair and configures both ends; returns the host veth's index.
fn wire(env: &Env, conf: &NetConf, att: &Attachment, netns: &File, ip: Ipv4Addr) -> Result<u32> {
    enable_forwarding()?;
    let mut host = Netlink::new()?;
    let mut pod = Netlink::in_netns(Path::new(&env.netns))?;
    // A host veth left by an earlier, interrupted ADD of this same attachment.
    host.del_link(&att.host_veth)?;
    host.add_veth(
        &VethEnd {
            name: &att.host_veth,
            mac: att.host_mac,
        },
        &VethEnd {
            name: &env.ifname,
            mac: att.pod_mac,
        },
        netns,
        conf.mtu(),
        &att.alias,
    )?;
    let missing = |what: &str| CniError::new(Code::Netlink, "veth vanished", what.to_owned());
    let h = host
        .link(&att.host_veth)?
        .ok_or_else(|| missing(&att.host_veth))?;
    host.set_up(h.index)?;
    host.add_route(ip, 32, h.index, None)?;
    host.add_neighbour(h.index, ip, &att.pod_mac)?;

    let p = pod.link(&env.ifname)?.ok_or_else(|| missing(&env.ifname))?;
    if let Some(lo) = pod.link("lo")? {
        pod.set_up(lo.index)?;
    }
    pod.set_up(p.index)?;
    pod.add_address(p.index, ip, 32)?;
    pod.add_route(GATEWAY, 32, p.index, None)?;
    pod.add_neighbour(p.index, GATEWAY, &att.host_mac)?;
    pod.add_route(Ipv4Addr::UNSPECIFIED, 0, p.index, Some(GATEWAY))?;
    Ok(h.index)
}

fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let att = Attachment::new(&conf.name, &env.container_id, &env.ifname);
    let store = Store::open(conf.data_dir(), &conf.name)?;
    if let Some(bpffs) = &conf.bpffs
        && let Some(mut endpoints) = EndpointMap::open(bpffs)?
    {
        // The address from IPAM, else from the runtime's copy of ADD's result.
        let ip = store
            .lock()?
            .find(&env.container_id, &env.ifname)?
            .map(|a| a.ip)
            .or_else(|| {
                conf.prev_result().ok().flatten().and_then(|r| {
                    r.ips
                        .iter()
                        .find_map(|i| i.address.strip_suffix("/32")?.parse().ok())
                })
            });
        // Only this attachment's entry: the address may already belong to a newer pod.
        if let Some(ip) = ip
            && endpoints.get(ip).is_some_and(|e| e.pod_mac == att.pod_mac)
        {
            endpoints.remove(ip)?;
        }
    }
    let mut host = Netlink::new()?;
    let removed = host.del_link(&att.host_veth)?;
    if !removed && !env.netns.is_empty() {
        // The host side is gone but the pod side may linger (e.g. the host veth was deleted
        // by hand); only a veth is ours to remove. A vanished netns is fine.
        if let Ok(mut pod) = Netlink::in_netns(Path::new(&env.netns))
            && let Some(link) = pod.link(&env.ifname)?
            && link.kind.as_deref() == Some("veth")
        {
            pod.del_link(&env.ifname)?;
        }
    }
    store.lock()?.release(&env.container_id, &env.ifname)?;
    Ok(())
}

fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let fail = |msg: &str, details: String| Err(CniError::new(Code::CheckFailed, msg, details));
    let Some(prev) = conf.prev_result()? else {
        return Err(CniError::new(
            Code::InvalidConfig,
            "CHECK needs prevResult",
            "the runtime passed no prevResult",
        ));
    };
    let att = Attachment::new(&conf.name, &env.container_id, &env.ifname);
    let store = Store::open(conf.data_dir(), &conf.name)?;
    let Some(alloc) = store.lock()?.find(&env.container_id, &env.ifname)? else {
        return fail(
            "no address allocated",
            format!("{}/{}", env.container_id, env.ifname),
        );
    };
    let ip = alloc.ip;
    let cidr = format!("{ip}/32");
    if !prev.ips.iter().any(|i| i.address == cidr) {
        return fail(
            "prevResult does not match IPAM",
            format!("{cidr} not among {:?}", prev.ips),
        );
    }
    let mut host = Netlink::new()?;
    let Some(h) = host.link(&att.host_veth)? else {
        return fail("host veth missing", att.host_veth);
    };
    if !h.up || h.mtu != Some(conf.mtu()) {
        return fail(
            "host veth misconfigured",
            format!("{}: up={} mtu={:?}", h.name, h.up, h.mtu),
        );
    }
    if !host
        .routes()?
        .iter()
        .any(|r| r.dst == ip && r.prefix == 32 && r.oif == Some(h.index))
    {
        return fail("host route missing", format!("{cidr} dev {}", h.name));
    }
    open_netns(&env.netns)?;
    let mut pod = Netlink::in_netns(Path::new(&env.netns))?;
    let Some(p) = pod.link(&env.ifname)? else {
        return fail("pod interface missing", env.ifname.clone());
    };
    if !p.up || p.mtu != Some(conf.mtu()) || p.mac != Some(att.pod_mac) {
        return fail(
            "pod interface misconfigured",
            format!("{}: up={} mtu={:?}", p.name, p.up, p.mtu),
        );
    }
    if !pod.addresses(p.index)?.contains(&(ip, 32)) {
        return fail("pod address missing", format!("{cidr} on {}", p.name));
    }
    if !pod
        .routes()?
        .iter()
        .any(|r| r.prefix == 0 && r.gateway == Some(GATEWAY) && r.oif == Some(p.index))
    {
        return fail("pod default route missing", format!("via {GATEWAY}"));
    }
    if !pod
        .permanent_neighbours(p.index)?
        .contains(&(GATEWAY, att.host_mac))
    {
        return fail("pod gateway neighbour missing", format!("{GATEWAY}"));
    }
    if let Some(bpffs) = &conf.bpffs {
        let expected = PodEndpoint {
            ip,
            ifindex: h.index,
            pod_mac: att.pod_mac,
            host_mac: att.host_mac,
        };
        let found = EndpointMap::open(bpffs)?.and_then(|m| m.get(ip));
        if found != Some(expected) {
            return fail(
                "pod endpoint map entry wrong",
                format!("{cidr}: {found:?}, expected {expected:?}"),
            );
        }
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<()> {
    let valid = conf.valid_attachments();
    let keep = |container: &str, ifname: &str| {
        valid
            .iter()
            .any(|a| a.container_id == container && a.ifname == ifname)
    };
    let mut host = Netlink::new()?;
    let store = Store::open(conf.data_dir(), &conf.name)?;
    let lock = store.lock()?;
    let mut endpoints = match &conf.bpffs {
        Some(bpffs) => EndpointMap::open(bpffs)?,
        None => None,
    };
    for alloc in lock.list()? {
        if !keep(&alloc.owner.container_id, &alloc.owner.ifname) {
            if let Some(map) = endpoints.as_mut() {
                map.remove(alloc.ip)?;
            }
            if alloc.owner.host_veth.starts_with(HOST_VETH_PREFIX) {
                host.del_link(&alloc.owner.host_veth)?;
            }
            lock.remove(alloc.ip)?;
        }
    }
    // Host veths whose IPAM record is gone (e.g. a wiped dataDir) are found by their alias.
    let prefix = alias_prefix(&conf.name);
    for link in host.links()? {
        let Some(rest) = link.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((container, ifname)) = rest.rsplit_once('/') else {
            continue;
        };
        if !keep(container, ifname) {
            host.del_link(&link.name)?;
        }
    }
    // Endpoints whose host veth is gone (their IPAM record was lost with it) only drop traffic.
    if let Some(map) = endpoints.as_mut() {
        let alive: Vec<u32> = host.links()?.iter().map(|l| l.index).collect();
        for ep in map.list() {
            if !alive.contains(&ep.ifindex) {
                map.remove(ep.ip)?;
            }
        }
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<()> {
    if let Some(path) = conf.status_file() {
        let status = config::AgentStatus::read(&path)?;
        if !status.ready {
            let code = if status.datapath_ready {
                Code::NotAvailable
            } else {
                Code::LimitedConnectivity
            };
            return Err(CniError::new(
                code,
                "skiff agent is not ready",
                status
                    .message
                    .unwrap_or_else(|| format!("{} says ready=false", path.display())),
            ));
        }
    }
    let subnet = conf
        .subnet()
        .map_err(|e| CniError::new(Code::NotAvailable, "no pod CIDR", e))?;
    let store = Store::open(conf.data_dir(), &conf.name)?;
    let used = store.lock()?.list()?.len();
    let usable = (u32::from(subnet.broadcast()) - u32::from(subnet.network()) - 2) as usize;
    if used >= usable {
        return Err(CniError::new(
            Code::NotAvailable,
            "no free pod address",
            format!("{used} of {usable} addresses of {subnet} allocated"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_stable_and_valid() {
        let a = Attachment::new("skiff", "abc123", "eth0");
        assert_eq!(a, Attachment::new("skiff", "abc123", "eth0"));
        assert_eq!(a.host_veth.len(), 15);
        assert!(a.host_veth.starts_with("skf"));
        assert_ne!(
            a.host_veth,
            Attachment::new("skiff", "abc123", "eth1").host_veth
        );
        assert_ne!(
            a.host_veth,
            Attachment::new("other", "abc123", "eth0").host_veth
        );
        assert_ne!(a.host_mac, a.pod_mac);
        assert_eq!(a.host_mac[0], 0x02);
        assert_eq!(a.alias, "skiff-cni/skiff/abc123/eth0");
        // Pinned: DEL of an attachment an older plugin made must compute the same name.
        assert_eq!(a.host_veth, "skf8fd1557e2400");
    }

    fn env(command: Command) -> Env {
        Env {
            command,
            container_id: "c".into(),
            netns: "/nonexistent/netns".into(),
            ifname: "eth0".into(),
            args: String::new(),
        }
    }

    #[test]
    fn version_needs_no_config() {
        let v = run(&env(Command::Version), br#"{"cniVersion":"0.4.0"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        let v = run(&env(Command::Version), b"").unwrap().unwrap();
        assert_eq!(v["cniVersion"], config::LATEST_VERSION);
    }

    #[test]
    fn verbs_check_their_minimum_version() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.9.0.0/24"}}"#;
        assert_eq!(
            run(&env(Command::Gc), conf).unwrap_err().code,
            Code::IncompatibleVersion
        );
        assert_eq!(
            run(&env(Command::Status), conf).unwrap_err().code,
            Code::IncompatibleVersion
        );
        let old = br#"{"cniVersion":"0.3.1","name":"n","type":"skiff-cni","ipam":{"subnet":"10.9.0.0/24"}}"#;
        assert_eq!(
            run(&env(Command::Check), old).unwrap_err().code,
            Code::IncompatibleVersion
        );
    }

    #[test]
    fn add_into_a_missing_netns_is_unknown_container() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.9.0.0/24","dataDir":"/nonexistent-skiff"}}"#;
        assert_eq!(
            run(&env(Command::Add), conf).unwrap_err().code,
            Code::UnknownContainer
        );
    }

    #[test]
    fn status_reports_agent_readiness() {
        let dir = std::env::temp_dir().join(format!("skiff-cni-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("status.json");
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"skiff-cni","agentStatusFile":"{}","ipam":{{"dataDir":"{}"}}}}"#,
            file.display(),
            dir.join("ipam").display()
        );
        let status = || run(&env(Command::Status), conf.as_bytes());
        assert_eq!(
            status().unwrap_err().code,
            Code::NotAvailable,
            "missing file"
        );
        std::fs::write(&file, r#"{"ready":false,"message":"syncing"}"#).unwrap();
        let e = status().unwrap_err();
        assert_eq!(
            (e.code, e.details.as_str()),
            (Code::NotAvailable, "syncing")
        );
        std::fs::write(&file, r#"{"ready":false,"datapathReady":false}"#).unwrap();
        assert_eq!(status().unwrap_err().code, Code::LimitedConnectivity);
        std::fs::write(&file, r#"{"ready":true}"#).unwrap();
        assert_eq!(status().unwrap_err().code, Code::NotAvailable, "no podCIDR");
        std::fs::write(&file, r#"{"ready":true,"podCIDR":"10.8.0.0/30"}"#).unwrap();
        assert_eq!(status().unwrap(), None);
        // One usable address besides the reserved one: fill it and STATUS says so.
        let store = Store::open(&dir.join("ipam"), "n").unwrap();
        let owner = Owner {
            container_id: "x".into(),
            ifname: "eth0".into(),
            host_veth: String::new(),
        };
        store
            .lock()
            .unwrap()
            .allocate("10.8.0.0/30".parse().unwrap(), &[], &owner)
            .unwrap();
        store
            .lock()
            .unwrap()
            .allocate(
                "10.8.0.0/30".parse().unwrap(),
                &[],
                &Owner {
                    container_id: "y".into(),
                    ..owner
                },
            )
            .unwrap();
        assert_eq!(status().unwrap_err().code, Code::NotAvailable, "pool full");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
