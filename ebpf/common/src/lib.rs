//! skiff-ebpf-common: the ABI between skiff's eBPF programs and userspace (map names, keys, values).
//!
//! Every type here is `#[repr(C)]` with explicit padding and a compile-time size check, so the
//! kernel programs and the loader can never disagree on a layout. Addresses and ports are kept in
//! network byte order exactly as they appear on the wire and in `struct bpf_sock_addr`; each field
//! says so. Map names carry a version suffix: a layout change gets a new name, so a restarted agent
//! never reinterprets an old pinned map under a new layout.
#![no_std]

use core::mem::size_of;

/// Service map (hash): [`Lb4Key`] -> [`Lb4Service`]. Slot 0 holds the service record, the other
/// slots hold backend ids (see [`Lb4Key::slot`]).
pub const MAP_SERVICES4: &str = "SKIFF_SVC4_V1";
/// Backend map (hash): backend id (`u32`) -> [`Backend4`].
pub const MAP_BACKENDS4: &str = "SKIFF_BE4_V1";
/// Per-CPU counters (array of `u64`), indexed by the `STAT_*` constants.
pub const MAP_STATS: &str = "SKIFF_STATS_V1";

/// Default capacity of the service map (service records plus backend slots).
pub const DEFAULT_SERVICES_MAX: u32 = 65_536;
/// Default capacity of the backend map.
pub const DEFAULT_BACKENDS_MAX: u32 = 262_144;

/// IANA protocol numbers as used in [`Lb4Key::proto`] and [`Backend4::proto`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// Scope of a service entry: traffic entering the node (externalTrafficPolicy) ...
pub const SCOPE_EXTERNAL: u8 = 0;
/// ... or traffic from inside the cluster (internalTrafficPolicy), looked up second when a
/// service has [`SVC_FLAG_TWO_SCOPES`].
pub const SCOPE_INTERNAL: u8 = 1;

/// Slots of a service live in one of two banks; the service record says which bank is live, so
/// a new backend set is written into the idle bank and published by one update of slot 0.
pub const SLOT_BANK_BIT: u16 = 0x8000;
/// Most backends one service can have (the slot number must stay below [`SLOT_BANK_BIT`]).
pub const MAX_BACKENDS_PER_SERVICE: u16 = SLOT_BANK_BIT - 1;

/// Key of [`MAP_SERVICES4`]. 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lb4Key {
    /// Frontend IPv4 address, network byte order (as `user_ip4`).
    pub address: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// 0 = the service record; `bank | n` with n in 1..=count = the n-th backend of that bank.
    pub slot: u16,
    /// IANA protocol number (`PROTO_*`).
    pub proto: u8,
    /// `SCOPE_EXTERNAL` or `SCOPE_INTERNAL`.
    pub scope: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Lb4Key>() == 12);

impl Lb4Key {
    /// The key of the service record of a frontend.
    #[must_use]
    pub const fn service(address: u32, port: u16, proto: u8, scope: u8) -> Self {
        Self {
            address,
            port,
            slot: 0,
            proto,
            scope,
            _pad: [0; 2],
        }
    }

    /// The key of backend slot `n` (1-based) in `bank` (0 or [`SLOT_BANK_BIT`]).
    #[must_use]
    pub const fn backend_slot(&self, bank: u16, n: u16) -> Self {
        Self {
            slot: bank | n,
            ..*self
        }
    }
}

/// Value of [`MAP_SERVICES4`]. 20 bytes. For slot 0 (the service record) every field but
/// `backend_id` is meaningful; for a backend slot only `backend_id` is.
///
/// The live bank holds `count` active backends in slots `1..=count`, then `qcount` inactive
/// (terminating or quarantined) ones in slots `count+1..=count+qcount`: new flows only ever pick
/// from the first group, while the second keeps the complete backend set in the map itself so a
/// restarted agent can rebuild its state from the pinned maps alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4Service {
    /// Backend slot: the backend's id in [`MAP_BACKENDS4`]. Service record: 0.
    pub backend_id: u32,
    /// Number of active backend slots in the live bank (0 = connections are refused).
    pub count: u16,
    /// Number of inactive backend slots following the active ones.
    pub qcount: u16,
    /// Reverse-NAT index of this frontend (non-zero).
    pub rev_nat_id: u16,
    /// `SVC_FLAG_*` bits.
    pub flags: u16,
    /// sessionAffinity ClientIP timeout in seconds; 0 = no affinity.
    pub affinity_timeout: u32,
    /// `ALG_*`.
    pub algorithm: u8,
    /// The live slot bank: 0 or 1 (slots `n` or `SLOT_BANK_BIT | n`).
    pub bank: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Lb4Service>() == 20);

impl Lb4Service {
    /// The slot-bank bit of the live bank, to combine with a slot number.
    #[must_use]
    pub const fn bank_bit(&self) -> u16 {
        if self.bank == 0 { 0 } else { SLOT_BANK_BIT }
    }
}

/// Frontend is a ClusterIP (reachable by the socket LB from inside the cluster).
pub const SVC_FLAG_CLUSTER_IP: u16 = 1 << 0;
/// Frontend is a NodePort on a node address.
pub const SVC_FLAG_NODE_PORT: u16 = 1 << 1;
/// Frontend is an externalIP.
pub const SVC_FLAG_EXTERNAL_IP: u16 = 1 << 2;
/// Frontend is a LoadBalancer ingress IP.
pub const SVC_FLAG_LOAD_BALANCER: u16 = 1 << 3;
/// The service has a second record with `SCOPE_INTERNAL` (traffic policies differ by scope).
pub const SVC_FLAG_TWO_SCOPES: u16 = 1 << 4;
/// The backends of this scope are node-local only (traffic policy Local).
pub const SVC_FLAG_LOCAL_ONLY: u16 = 1 << 5;

/// Backend selection: uniformly random per connection.
pub const ALG_RANDOM: u8 = 0;
/// Backend selection: Maglev consistent hashing.
pub const ALG_MAGLEV: u8 = 1;

/// Value of [`MAP_BACKENDS4`]. 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend4 {
    /// Backend IPv4 address, network byte order.
    pub address: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// IANA protocol number.
    pub proto: u8,
    /// `BACKEND_*` state.
    pub state: u8,
    /// Topology zone id (0 = unknown).
    pub zone: u8,
    /// `BACKEND_FLAG_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Backend4>() == 12);

/// Backend takes new connections.
pub const BACKEND_ACTIVE: u8 = 0;
/// Backend is terminating: existing flows keep it, new flows never pick it.
pub const BACKEND_TERMINATING: u8 = 1;
/// Backend failed health checks: existing flows keep it, new flows never pick it.
pub const BACKEND_QUARANTINED: u8 = 2;

/// Backend runs on this node.
pub const BACKEND_FLAG_LOCAL: u8 = 1 << 0;

/// connect4/sendmsg4 translated a service address to a backend.
pub const STAT_SOCK4_TRANSLATED: u32 = 0;
/// connect4/sendmsg4 found a service with no backend and refused the connection.
pub const STAT_SOCK4_NO_BACKEND: u32 = 1;
/// A service slot or backend was missing while its service record pointed at it.
pub const STAT_LB_SLOT_MISS: u32 = 2;
/// Packets seen by the tc program on the node's interfaces.
pub const STAT_TC_PACKETS: u32 = 3;
/// IPv4 packets among them.
pub const STAT_TC_IPV4: u32 = 4;
/// Number of counters in [`MAP_STATS`].
pub const STAT_MAX: u32 = 16;

#[cfg(feature = "user")]
mod pod {
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers, with explicit padding
    // fields, so every bit pattern is valid and there is no uninitialised padding.
    unsafe impl aya::Pod for super::Lb4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Lb4Service {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend4 {}
}
