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
/// Socket reverse translation (LRU hash): [`SockRevNat4Key`] -> [`SockRevNat4`], so
/// getpeername() and recvmsg() show the service address the application connected to.
pub const MAP_SOCK_REVNAT4: &str = "SKIFF_SKRV4_V1";
/// sessionAffinity ClientIP (LRU hash): [`Affinity4Key`] -> [`Affinity4`].
pub const MAP_AFFINITY4: &str = "SKIFF_AFF4_V1";
/// Maglev lookup tables (hash, allocated on demand): [`Maglev4Key`] -> backend id (`u32`).
pub const MAP_MAGLEV4: &str = "SKIFF_MAG4_V1";
/// Connection tracking of per-packet (north-south) flows (LRU hash): [`Ct4Key`] -> [`Ct4Entry`].
pub const MAP_CT4: &str = "SKIFF_CT4_V1";
/// Node configuration (array of one [`NodeConfig4`]), written by the loader.
pub const MAP_CONFIG: &str = "SKIFF_CFG_V1";

/// Kernel map names are at most 15 bytes (BPF_OBJ_NAME_LEN - 1); longer ones get cut.
const _: () = {
    let names = [
        MAP_SERVICES4,
        MAP_BACKENDS4,
        MAP_STATS,
        MAP_SOCK_REVNAT4,
        MAP_AFFINITY4,
        MAP_MAGLEV4,
        MAP_CT4,
        MAP_CONFIG,
    ];
    let mut i = 0;
    while i < names.len() {
        assert!(names[i].len() <= 15);
        i += 1;
    }
};

/// Default capacity of the service map (service records plus backend slots).
pub const DEFAULT_SERVICES_MAX: u32 = 65_536;
/// Default capacity of the backend map.
pub const DEFAULT_BACKENDS_MAX: u32 = 262_144;
/// Default capacity of the conntrack map (two entries per flow).
pub const DEFAULT_CT_MAX: u32 = 524_288;
/// Default capacity of the affinity map.
pub const DEFAULT_AFFINITY_MAX: u32 = 65_536;
/// Default capacity of the socket reverse-translation map.
pub const DEFAULT_SOCK_REVNAT_MAX: u32 = 262_144;
/// Default capacity of the Maglev map: 64 services at the default table size, in both banks.
/// Entries are allocated on use, so unused capacity costs no memory.
pub const DEFAULT_MAGLEV_MAX: u32 = 2 * 64 * MAGLEV_DEFAULT_SIZE;
/// Maglev table size (a prime) for services of up to 163 backends: at least 100 slots per
/// backend keeps the share of flows moved by a backend change near the ideal 1/N.
pub const MAGLEV_DEFAULT_SIZE: u32 = 16_381;

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
    /// Size of this service's Maglev table (a prime; 0 unless `algorithm` is `ALG_MAGLEV`).
    pub maglev_size: u32,
}
const _: () = assert!(size_of::<Lb4Service>() == 24);

impl Lb4Service {
    /// The key of slot `index` of this service's live Maglev table.
    #[must_use]
    pub const fn maglev_key(&self, index: u32) -> Maglev4Key {
        Maglev4Key {
            rev_nat_id: self.rev_nat_id,
            bank: self.bank,
            _pad: 0,
            index,
        }
    }

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

/// Key of [`MAP_SOCK_REVNAT4`]: a socket and the backend address it was translated to. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRevNat4Key {
    /// `bpf_get_socket_cookie()` of the socket.
    pub cookie: u64,
    /// Backend address, network byte order.
    pub address: u32,
    /// Backend port, network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<SockRevNat4Key>() == 16);

impl SockRevNat4Key {
    /// The key of socket `cookie` translated to `address`:`port` (network byte order).
    #[must_use]
    pub const fn new(cookie: u64, address: u32, port: u16) -> Self {
        Self {
            cookie,
            address,
            port,
            _pad: [0; 2],
        }
    }
}

/// Value of [`MAP_SOCK_REVNAT4`]: the service address to show instead. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRevNat4 {
    /// Frontend address, network byte order.
    pub address: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    pub rev_nat_id: u16,
}
const _: () = assert!(size_of::<SockRevNat4>() == 8);

/// Affinity of a client identified by its network namespace (socket LB: one pod = one client).
pub const AFFINITY_NETNS: u8 = 0;
/// Affinity of a client identified by its IPv4 address (per-packet LB).
pub const AFFINITY_IP: u8 = 1;

/// Key of [`MAP_AFFINITY4`]. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Affinity4Key {
    /// Network namespace cookie, or the IPv4 address (network byte order) in the low 32 bits.
    pub client: u64,
    pub rev_nat_id: u16,
    /// `AFFINITY_NETNS` or `AFFINITY_IP`.
    pub kind: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<Affinity4Key>() == 16);

/// Value of [`MAP_AFFINITY4`]. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Affinity4 {
    /// `bpf_ktime_get_ns()` of the last flow that used this entry.
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Affinity4>() == 16);

/// Key of [`MAP_MAGLEV4`]: one slot of one bank of a service's Maglev table. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Maglev4Key {
    pub rev_nat_id: u16,
    /// The bank, as in [`Lb4Service::bank`]: tables switch with the service record.
    pub bank: u8,
    pub _pad: u8,
    /// 0..maglev_size.
    pub index: u32,
}
const _: () = assert!(size_of::<Maglev4Key>() == 8);

/// A flow as it arrives from the client (`dir = CT_ORIGINAL`) ...
pub const CT_ORIGINAL: u8 = 0;
/// ... or a reply as it arrives from the backend (`dir = CT_REPLY`).
pub const CT_REPLY: u8 = 1;

/// Key of [`MAP_CT4`]: the packet's 5-tuple as seen on arrival. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ct4Key {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    pub proto: u8,
    /// `CT_ORIGINAL` or `CT_REPLY`.
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Ct4Key>() == 16);

/// Value of [`MAP_CT4`]. 40 bytes.
///
/// An `CT_ORIGINAL` entry says where a client's flow goes; its `CT_REPLY` twin says how to
/// translate the backend's replies back: source := frontend, destination := client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ct4Entry {
    /// `bpf_ktime_get_ns()` after which the entry is dead.
    pub expires_ns: u64,
    /// Packets seen in this direction.
    pub packets: u64,
    /// The backend chosen when the flow started; kept even if the backend set changes.
    pub backend_id: u32,
    /// Frontend address (network byte order): the original destination.
    pub frontend_addr: u32,
    /// Frontend port, network byte order.
    pub frontend_port: u16,
    pub rev_nat_id: u16,
    /// ORIGINAL: the SNAT source address (0 = no SNAT). REPLY: the client's address.
    pub nat_addr: u32,
    /// ORIGINAL: the SNAT source port. REPLY: the client's port. Network byte order.
    pub nat_port: u16,
    /// TCP flags seen (`CT_TCP_*`).
    pub tcp_flags: u8,
    /// `CT_FLAG_*`.
    pub flags: u8,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<Ct4Entry>() == 40);

pub const CT_TCP_SYN: u8 = 1 << 0;
pub const CT_TCP_FIN: u8 = 1 << 1;
pub const CT_TCP_RST: u8 = 1 << 2;
/// The flow's source was translated to the node address (the backend is elsewhere).
pub const CT_FLAG_SNAT: u8 = 1 << 0;

/// Lifetime of a TCP flow after its handshake (as Cilium's regular TCP timeout).
pub const CT_LIFETIME_TCP_NS: u64 = 8000 * 1_000_000_000;
/// Lifetime of a TCP flow still in its handshake.
pub const CT_LIFETIME_SYN_NS: u64 = 60 * 1_000_000_000;
/// Lifetime of a TCP flow after FIN or RST.
pub const CT_LIFETIME_CLOSING_NS: u64 = 10 * 1_000_000_000;
/// Lifetime of a UDP (or other) flow since its last packet.
pub const CT_LIFETIME_OTHER_NS: u64 = 60 * 1_000_000_000;

/// Value of [`MAP_CONFIG`] (index 0). 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeConfig4 {
    /// The node address used as source when a flow is SNATed; network byte order. 0 = never
    /// SNAT (flows to remote backends then keep the client's address).
    pub snat_addr: u32,
    /// SNAT source ports are taken from `nat_port_min..=nat_port_max` (host byte order).
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    pub flags: u32,
}
const _: () = assert!(size_of::<NodeConfig4>() == 12);

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
/// Packets to a frontend translated to a backend by the tc program.
pub const STAT_TC_TRANSLATED: u32 = 5;
/// Replies translated back to the frontend by the tc program.
pub const STAT_TC_REVNAT: u32 = 6;
/// Packets to a frontend without backends, dropped.
pub const STAT_TC_NO_BACKEND: u32 = 7;
/// New flows that could not be tracked (conntrack insert failed): dropped.
pub const STAT_CT_INSERT_FAIL: u32 = 8;
/// New flows that found no free SNAT port: dropped.
pub const STAT_NAT_NO_PORT: u32 = 9;
/// getpeername()/recvmsg() answers translated back to the service address.
pub const STAT_SOCK4_REVNAT: u32 = 10;
/// Flows that reused their client's affinity entry.
pub const STAT_AFFINITY_HIT: u32 = 11;
/// Number of counters in [`MAP_STATS`].
pub const STAT_MAX: u32 = 16;

/// Pods on this node (hash): pod IPv4 address (`u32`, network byte order) -> [`Endpoint4`].
/// Written by skiff-cni on ADD and DEL; read by the `skiff-pod` tc program.
pub const MAP_ENDPOINTS4: &str = "SKIFF_EP4_V1";
/// Default capacity of [`MAP_ENDPOINTS4`] (pods per node, with a wide margin).
pub const DEFAULT_ENDPOINTS_MAX: u32 = 16_384;
const _: () = assert!(MAP_ENDPOINTS4.len() <= 15);

/// Value of [`MAP_ENDPOINTS4`]: how to hand a packet straight to a local pod. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint4 {
    /// Index of the pod's host-side veth (in the node's namespace).
    pub ifindex: u32,
    /// MAC of the pod's interface: the destination of frames delivered to it.
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth: the source the pod expects (its gateway's neighbour entry).
    pub host_mac: [u8; 6],
}
const _: () = assert!(size_of::<Endpoint4>() == 16);

#[cfg(feature = "user")]
mod pod {
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    // SAFETY: #[repr(C)], Copy, integers and byte arrays adding up to 16 bytes: no padding.
    unsafe impl aya::Pod for super::Endpoint4 {}
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers, with explicit padding
    // fields, so every bit pattern is valid and there is no uninitialised padding.
    unsafe impl aya::Pod for super::Lb4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Lb4Service {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockRevNat4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockRevNat4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Affinity4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Affinity4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Maglev4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ct4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ct4Entry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NodeConfig4 {}
}
