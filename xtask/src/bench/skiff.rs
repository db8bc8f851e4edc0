//! skiff's datapath in a benchmark node: the socket LB on the client cgroup, the tc program on
//! both node interfaces, and services programmed through `LbTable` on the pinned maps.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use skiff_datapath::{
    Backend, Datapath, DatapathConfig, Frontend, LbTable, PinnedLbMaps, Protocol, Service,
    ServiceKind, Stats, detach_all, read_stats,
};
use skiff_test_support::{BpffsDir, Cgroup};

use super::{
    rules::{SERVICE_PORT, Version, endpoints, vip},
    topology::{BACKEND_PORT, Node},
};

/// Service-map capacity for the benchmark. Each service takes 1 record plus one slot per
/// backend, and a backend change briefly needs a second bank: 10,000 services x 10 backends
/// need about 110,000 entries, more than the default 65,536.
const SERVICES_MAX: u32 = 262_144;

/// The ClusterIP service `i` with `endpoints` backends in `version`.
pub fn cluster_ip(i: usize, endpoint_count: usize, version: Version) -> Service {
    Service::new(
        Frontend::new(vip(i), SERVICE_PORT, Protocol::Tcp),
        backends(endpoint_count, version),
    )
}

/// A NodePort service on `node_ip:port` with the same backends as the ClusterIPs.
pub fn node_port(node_ip: Ipv4Addr, port: u16, endpoint_count: usize) -> Service {
    Service {
        kind: ServiceKind::NodePort,
        ..Service::new(
            Frontend::new(node_ip, port, Protocol::Tcp),
            backends(endpoint_count, Version::A),
        )
    }
}

/// Service `i` of a programming-only table where every service has `count` endpoints of its
/// own (as pods are), `10.245.0.0` upwards; `version` B moves the last one to a fresh address.
/// These addresses are only ever written into maps no program reads from.
pub fn distinct(i: usize, count: usize, version: Version) -> Service {
    let backends = (0..count)
        .map(|j| {
            let mut k = (i * count + j) as u32;
            if version == Version::B && j + 1 == count {
                // Past every address the table uses for version A.
                k += 1 << 20;
            }
            Backend::active(SocketAddrV4::new(
                Ipv4Addr::from(0x0af5_0000 + k),
                BACKEND_PORT,
            ))
        })
        .collect();
    Service::new(Frontend::new(vip(i), SERVICE_PORT, Protocol::Tcp), backends)
}

fn backends(count: usize, version: Version) -> Vec<Backend> {
    endpoints(count, version)
        .into_iter()
        .map(|ip| Backend::active(SocketAddrV4::new(ip, BACKEND_PORT)))
        .collect()
}

/// skiff's programs attached in a node, and the writer of its maps. Detached and unpinned on
/// drop.
pub struct Skiff {
    table: Option<LbTable<PinnedLbMaps>>,
    pins: BpffsDir,
}

impl std::fmt::Debug for Skiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Skiff")
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

impl Skiff {
    /// Loads the objects with their maps pinned in a fresh bpffs directory, attaches connect4
    /// to `cgroup` (a benchmark-made one) and the tc program to the ingress of both node
    /// interfaces.
    pub fn attach(node: &Node, cgroup: &Cgroup) -> anyhow::Result<Self> {
        let pins = BpffsDir::new("pins");
        let config = DatapathConfig {
            bpffs: pins.path().to_owned(),
            services_max: SERVICES_MAX,
            ..DatapathConfig::default()
        };
        let ifaces = [node.pod_if.clone(), node.ext_if.clone()];
        node.ns.run(|| -> anyhow::Result<()> {
            let mut datapath = Datapath::load(config).context("loading skiff's eBPF objects")?;
            datapath
                .attach_cgroup(cgroup.path())
                .context("attaching connect4 to the client cgroup")?;
            for iface in &ifaces {
                datapath
                    .attach_tc(iface)
                    .with_context(|| format!("attaching tc to {iface}"))?;
            }
            Ok(())
        })?;
        let maps = PinnedLbMaps::open(pins.path()).context("opening the pinned maps")?;
        let table = LbTable::open(maps).context("opening the LB table")?;
        Ok(Self {
            table: Some(table),
            pins,
        })
    }

    /// Loads the objects with their maps in a fresh bpffs directory and attaches nothing: a
    /// table to time programming on, which no packet ever reaches.
    pub fn detached() -> anyhow::Result<Self> {
        let pins = BpffsDir::new("prog");
        let config = DatapathConfig {
            bpffs: pins.path().to_owned(),
            services_max: SERVICES_MAX,
            ..DatapathConfig::default()
        };
        drop(Datapath::load(config).context("loading skiff's eBPF objects")?);
        let maps = PinnedLbMaps::open(pins.path()).context("opening the pinned maps")?;
        let table = LbTable::open(maps).context("opening the LB table")?;
        Ok(Self {
            table: Some(table),
            pins,
        })
    }

    fn table(&mut self) -> &mut LbTable<PinnedLbMaps> {
        self.table.as_mut().expect("the table lives until drop")
    }

    /// Upserts every service, timed.
    pub fn install(&mut self, services: &[Service]) -> anyhow::Result<Duration> {
        let table = self.table();
        let started = Instant::now();
        for service in services {
            table
                .upsert(service)
                .with_context(|| format!("programming {}", service.frontend))?;
        }
        Ok(started.elapsed())
    }

    /// Changes one endpoint of service `i` back and forth `reps` times (each upsert a real
    /// change), timing every upsert; `make` builds the service in a version. Leaves the service
    /// as it was.
    pub fn endpoint_changes(
        &mut self,
        reps: usize,
        make: impl Fn(Version) -> Service,
    ) -> anyhow::Result<Vec<Duration>> {
        let table = self.table();
        let mut version = Version::A;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            version = version.other();
            let service = make(version);
            let started = Instant::now();
            table.upsert(&service).context("changing an endpoint")?;
            times.push(started.elapsed());
        }
        if version != Version::A {
            table.upsert(&make(Version::A))?;
        }
        Ok(times)
    }

    /// How long a restarted agent takes to adopt the pinned maps (`LbTable::open`).
    pub fn reopen(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let maps = PinnedLbMaps::open(self.pins.path())?;
        let table = LbTable::open(maps)?;
        let elapsed = started.elapsed();
        drop(table);
        Ok(elapsed)
    }

    pub fn stats(&self) -> anyhow::Result<Stats> {
        Ok(read_stats(self.pins.path())?)
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        self.table = None;
        // Unpinning the links detaches the programs; the BpffsDir guard removes the directory.
        let _ = detach_all(self.pins.path());
    }
}
