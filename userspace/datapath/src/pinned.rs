//! The real maps: opened from their pins under `<bpffs>/maps`, so this works the same from the
//! agent, from the CLI and while no agent runs at all.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, IterableMap as _, Map, MapData, PerCpuArray};
use serde::Serialize;
use skiff_ebpf_common::{
    Affinity4, Affinity4Key, Backend4, CT_FLAG_SNAT, CT_REPLY, CT_TCP_FIN, CT_TCP_RST, CT_TCP_SYN,
    Ct4Entry, Ct4Key, Lb4Key, Lb4Service, MAP_AFFINITY4, MAP_BACKENDS4, MAP_CT4, MAP_MAGLEV4,
    MAP_SERVICES4, MAP_SOCK_REVNAT4, MAP_STATS, Maglev4Key, SockRevNat4, SockRevNat4Key,
};

use crate::{
    LbMaps, MapsError, Protocol,
    batch::{self, BatchError},
};

/// Where the maps of a bpffs directory are pinned.
#[must_use]
pub fn maps_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("maps")
}

fn open(bpffs: &Path, name: &str) -> Result<MapData, MapsError> {
    let path = maps_dir(bpffs).join(name);
    MapData::from_pin(&path).map_err(|source| MapsError::Open {
        path: path.display().to_string(),
        source,
    })
}

fn op_err(op: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapsError {
    move |source| {
        // A hash map with every entry taken refuses a new key with E2BIG.
        let full = matches!(&source, aya::maps::MapError::SyscallError(e)
            if e.io_error.raw_os_error() == Some(libc::E2BIG));
        match capacity_flag(map) {
            Some(flag) if full => MapsError::Full { op, map, flag },
            _ => MapsError::Op { op, map, source },
        }
    }
}

/// A batch call's failure as the error of the single operation it stands for.
fn batch_err(
    op: &'static str,
    map: &'static str,
    call: &'static str,
) -> impl FnOnce(BatchError) -> MapsError {
    move |e| {
        op_err(op, map)(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call,
            io_error: e.into_io(),
        }))
    }
}

/// Every entry of a hash map (see [`for_each`]).
fn dump<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError> {
    let mut out = Vec::new();
    for_each(map, name, |k, v| out.push((k, v)))?;
    Ok(out)
}

/// Calls `each` on every entry of a hash map: batched lookups, or get_next_key + lookup per
/// entry on kernels without them.
fn for_each<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
    mut each: impl FnMut(K, V),
) -> Result<(), MapsError> {
    match batch::lookup_each(map.map().fd().as_fd(), &mut each) {
        Err(BatchError::Unsupported) => {
            for item in map.iter() {
                let (k, v) = item.map_err(op_err("dump", name))?;
                each(k, v);
            }
            Ok(())
        }
        other => other.map_err(batch_err("dump", name, "bpf_map_lookup_batch")),
    }
}

/// Batched update, or one update per element on kernels without batch commands.
fn update_all<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    entries: &[(K, V)],
) -> Result<(), MapsError> {
    match batch::update(map.map().fd().as_fd(), entries) {
        Err(BatchError::Unsupported) => entries
            .iter()
            .try_for_each(|(k, v)| map.insert(k, v, 0).map_err(op_err("update", name))),
        other => other.map_err(batch_err("update", name, "bpf_map_update_batch")),
    }
}

/// Batched delete (missing keys skipped), or one delete per key.
fn delete_all<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
) -> Result<(), MapsError> {
    match batch::delete(map.map().fd().as_fd(), keys) {
        Err(BatchError::Unsupported) => keys.iter().try_for_each(|k| match map.remove(k) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(op_err("delete", name)(e)),
        }),
        other => other.map_err(batch_err("delete", name, "bpf_map_delete_batch")),
    }
}

/// The `skiff datapath attach` option sizing `map`.
fn capacity_flag(map: &str) -> Option<&'static str> {
    match map {
        MAP_SERVICES4 => Some("--services-max"),
        MAP_BACKENDS4 => Some("--backends-max"),
        MAP_MAGLEV4 => Some("--maglev-max"),
        _ => None,
    }
}

/// The pinned service and backend maps.
pub struct PinnedLbMaps {
    services: HashMap<MapData, Lb4Key, Lb4Service>,
    backends: HashMap<MapData, u32, Backend4>,
    maglev: HashMap<MapData, Maglev4Key, u32>,
}

impl std::fmt::Debug for PinnedLbMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedLbMaps").finish_non_exhaustive()
    }
}

impl PinnedLbMaps {
    /// Opens the maps pinned under `bpffs` (the directory given to [`crate::Datapath::load`]).
    pub fn open(bpffs: &Path) -> Result<Self, MapsError> {
        let services = HashMap::try_from(Map::HashMap(open(bpffs, MAP_SERVICES4)?))
            .map_err(op_err("open", MAP_SERVICES4))?;
        let backends = HashMap::try_from(Map::HashMap(open(bpffs, MAP_BACKENDS4)?))
            .map_err(op_err("open", MAP_BACKENDS4))?;
        let maglev = HashMap::try_from(Map::HashMap(open(bpffs, MAP_MAGLEV4)?))
            .map_err(op_err("open", MAP_MAGLEV4))?;
        Ok(Self {
            services,
            backends,
            maglev,
        })
    }
}

impl LbMaps for PinnedLbMaps {
    fn update_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapsError> {
        self.services
            .insert(key, value, 0)
            .map_err(op_err("update", MAP_SERVICES4))
    }

    fn delete_service(&mut self, key: &Lb4Key) -> Result<(), MapsError> {
        match self.services.remove(key) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(op_err("delete", MAP_SERVICES4)(e)),
        }
    }

    fn update_backend(&mut self, id: u32, value: &Backend4) -> Result<(), MapsError> {
        self.backends
            .insert(id, value, 0)
            .map_err(op_err("update", MAP_BACKENDS4))
    }

    fn delete_backend(&mut self, id: u32) -> Result<(), MapsError> {
        match self.backends.remove(&id) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(op_err("delete", MAP_BACKENDS4)(e)),
        }
    }

    fn dump_services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, MapsError> {
        dump(&self.services, MAP_SERVICES4)
    }

    fn dump_backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
        dump(&self.backends, MAP_BACKENDS4)
    }

    fn update_maglev(&mut self, key: &Maglev4Key, backend_id: u32) -> Result<(), MapsError> {
        self.maglev
            .insert(key, backend_id, 0)
            .map_err(op_err("update", MAP_MAGLEV4))
    }

    fn delete_maglev(&mut self, key: &Maglev4Key) -> Result<(), MapsError> {
        match self.maglev.remove(key) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(op_err("delete", MAP_MAGLEV4)(e)),
        }
    }

    fn dump_maglev(&self) -> Result<Vec<(Maglev4Key, u32)>, MapsError> {
        dump(&self.maglev, MAP_MAGLEV4)
    }

    fn update_services(&mut self, entries: &[(Lb4Key, Lb4Service)]) -> Result<(), MapsError> {
        update_all(&mut self.services, MAP_SERVICES4, entries)
    }

    fn delete_services(&mut self, keys: &[Lb4Key]) -> Result<(), MapsError> {
        delete_all(&mut self.services, MAP_SERVICES4, keys)
    }

    fn update_maglev_slots(&mut self, entries: &[(Maglev4Key, u32)]) -> Result<(), MapsError> {
        update_all(&mut self.maglev, MAP_MAGLEV4, entries)
    }

    fn delete_maglev_slots(&mut self, keys: &[Maglev4Key]) -> Result<(), MapsError> {
        delete_all(&mut self.maglev, MAP_MAGLEV4, keys)
    }
}

/// The datapath's counters, summed over CPUs, by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub sock4_translated: u64,
    pub sock4_no_backend: u64,
    pub sock4_revnat: u64,
    pub lb_slot_miss: u64,
    pub affinity_hit: u64,
    pub tc_packets: u64,
    pub tc_ipv4: u64,
    pub tc_translated: u64,
    pub tc_revnat: u64,
    pub tc_no_backend: u64,
    pub ct_insert_fail: u64,
    pub nat_no_port: u64,
}

/// Reads the pinned counters.
pub fn read_stats(bpffs: &Path) -> Result<Stats, MapsError> {
    use skiff_ebpf_common as c;
    let map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(bpffs, MAP_STATS)?))
            .map_err(op_err("open", MAP_STATS))?;
    let sum = |index: u32| -> Result<u64, MapsError> {
        let values = map.get(&index, 0).map_err(op_err("lookup", MAP_STATS))?;
        Ok(values.iter().sum())
    };
    Ok(Stats {
        sock4_translated: sum(c::STAT_SOCK4_TRANSLATED)?,
        sock4_no_backend: sum(c::STAT_SOCK4_NO_BACKEND)?,
        sock4_revnat: sum(c::STAT_SOCK4_REVNAT)?,
        lb_slot_miss: sum(c::STAT_LB_SLOT_MISS)?,
        affinity_hit: sum(c::STAT_AFFINITY_HIT)?,
        tc_packets: sum(c::STAT_TC_PACKETS)?,
        tc_ipv4: sum(c::STAT_TC_IPV4)?,
        tc_translated: sum(c::STAT_TC_TRANSLATED)?,
        tc_revnat: sum(c::STAT_TC_REVNAT)?,
        tc_no_backend: sum(c::STAT_TC_NO_BACKEND)?,
        ct_insert_fail: sum(c::STAT_CT_INSERT_FAIL)?,
        nat_no_port: sum(c::STAT_NAT_NO_PORT)?,
    })
}

/// One tracked flow direction, as `skiff ct list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CtFlow {
    pub protocol: Option<Protocol>,
    /// `original` (client to frontend) or `reply` (backend to client or node).
    pub direction: &'static str,
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
    pub frontend: SocketAddrV4,
    pub backend_id: u32,
    /// The SNAT address of an original flow, or the client an answer goes back to.
    pub nat: Option<SocketAddrV4>,
    pub packets: u64,
    /// Seconds until the entry expires (negative: expired, awaiting reuse or eviction).
    pub expires_in_s: i64,
    pub tcp_flags: String,
}

fn sock(addr: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr.to_ne_bytes()), u16::from_be(port))
}

impl CtFlow {
    fn new(key: &Ct4Key, entry: &Ct4Entry, now_ns: u64) -> Self {
        let reply = key.dir == CT_REPLY;
        let nat = if reply || entry.flags & CT_FLAG_SNAT != 0 {
            Some(sock(entry.nat_addr, entry.nat_port))
        } else {
            None
        };
        let mut tcp_flags = String::new();
        for (bit, name) in [(CT_TCP_SYN, "S"), (CT_TCP_FIN, "F"), (CT_TCP_RST, "R")] {
            if entry.tcp_flags & bit != 0 {
                tcp_flags.push_str(name);
            }
        }
        let remaining = i128::from(entry.expires_ns) - i128::from(now_ns);
        Self {
            protocol: Protocol::from_number(key.proto),
            direction: if reply { "reply" } else { "original" },
            source: sock(key.saddr, key.sport),
            destination: sock(key.daddr, key.dport),
            frontend: sock(entry.frontend_addr, entry.frontend_port),
            backend_id: entry.backend_id,
            nat,
            packets: entry.packets,
            expires_in_s: i64::try_from(remaining / 1_000_000_000).unwrap_or(i64::MAX),
            tcp_flags,
        }
    }
}

/// Every conntrack entry, decoded. `now_ns` is CLOCK_MONOTONIC in nanoseconds (the clock of
/// `bpf_ktime_get_ns`).
pub fn read_conntrack(bpffs: &Path, now_ns: u64) -> Result<Vec<CtFlow>, MapsError> {
    let map: HashMap<MapData, Ct4Key, Ct4Entry> =
        HashMap::try_from(Map::LruHashMap(open(bpffs, MAP_CT4)?))
            .map_err(op_err("open", MAP_CT4))?;
    let mut flows = Vec::new();
    for_each(&map, MAP_CT4, |key, entry| {
        flows.push(CtFlow::new(&key, &entry, now_ns));
    })?;
    flows.sort_by_key(|f| (f.frontend, f.source, f.direction));
    Ok(flows)
}

/// Deletes conntrack entries that expired before `now_ns`; returns how many. The kernel
/// programs treat expired entries as absent already: this only gives their room back before
/// the LRU would evict live flows for it.
pub fn gc_conntrack(bpffs: &Path, now_ns: u64) -> Result<usize, MapsError> {
    let mut map: HashMap<MapData, Ct4Key, Ct4Entry> =
        HashMap::try_from(Map::LruHashMap(open(bpffs, MAP_CT4)?))
            .map_err(op_err("open", MAP_CT4))?;
    let mut expired = Vec::new();
    for_each(&map, MAP_CT4, |key, entry| {
        if entry.expires_ns < now_ns {
            expired.push(key);
        }
    })?;
    // An entry the datapath re-created for a new flow of the same five-tuple between the dump
    // and the delete goes too, as it would with single deletes; evicted ones are skipped.
    delete_all(&mut map, MAP_CT4, &expired)?;
    Ok(expired.len())
}

/// How full a map is: the numbers behind map-pressure alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapUsage {
    pub name: &'static str,
    /// The kernel's id of the map: unchanged as long as the map is adopted, not recreated.
    pub id: u32,
    pub entries: u64,
    pub capacity: u32,
}

/// Entries against capacity for the maps that fill up with traffic or services.
pub fn map_usage(bpffs: &Path) -> Result<Vec<MapUsage>, MapsError> {
    fn count<K: aya::Pod, V: aya::Pod>(
        bpffs: &Path,
        name: &'static str,
        wrap: fn(MapData) -> Map,
    ) -> Result<MapUsage, MapsError> {
        let data = open(bpffs, name)?;
        let info = data.info().map_err(op_err("info", name))?;
        let (id, capacity) = (info.id(), info.max_entries());
        let map: HashMap<MapData, K, V> =
            HashMap::try_from(wrap(data)).map_err(op_err("open", name))?;
        let mut entries = 0;
        for_each(&map, name, |_, _| entries += 1)?;
        Ok(MapUsage {
            name,
            id,
            entries,
            capacity,
        })
    }
    Ok(vec![
        count::<Ct4Key, Ct4Entry>(bpffs, MAP_CT4, Map::LruHashMap)?,
        count::<Lb4Key, Lb4Service>(bpffs, MAP_SERVICES4, Map::HashMap)?,
        count::<u32, Backend4>(bpffs, MAP_BACKENDS4, Map::HashMap)?,
        count::<Affinity4Key, Affinity4>(bpffs, MAP_AFFINITY4, Map::LruHashMap)?,
        count::<SockRevNat4Key, SockRevNat4>(bpffs, MAP_SOCK_REVNAT4, Map::LruHashMap)?,
        count::<Maglev4Key, u32>(bpffs, MAP_MAGLEV4, Map::HashMap)?,
    ])
}
