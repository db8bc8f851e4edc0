//! The maps shared by all skiff programs. Each is pinned by name under the loader's bpffs
//! directory, so the objects share them and a restarted agent adopts them untouched.
//! Sizes here are defaults; the loader overrides them from its configuration.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use skiff_ebpf_common::{
    Affinity4, Affinity4Key, Backend4, Ct4Entry, Ct4Key, DEFAULT_AFFINITY_MAX,
    DEFAULT_BACKENDS_MAX, DEFAULT_CT_MAX, DEFAULT_MAGLEV_MAX, DEFAULT_SERVICES_MAX,
    DEFAULT_SOCK_REVNAT_MAX, Lb4Key, Lb4Service, Maglev4Key, NodeConfig4, STAT_MAX, SockRevNat4,
    SockRevNat4Key,
};

#[map]
pub static SKIFF_SVC4_V1: HashMap<Lb4Key, Lb4Service> = HashMap::pinned(DEFAULT_SERVICES_MAX, 0);

#[map]
pub static SKIFF_BE4_V1: HashMap<u32, Backend4> = HashMap::pinned(DEFAULT_BACKENDS_MAX, 0);

#[map]
pub static SKIFF_STATS_V1: PerCpuArray<u64> = PerCpuArray::pinned(STAT_MAX, 0);

#[map]
pub static SKIFF_SKRV4_V1: LruHashMap<SockRevNat4Key, SockRevNat4> =
    LruHashMap::pinned(DEFAULT_SOCK_REVNAT_MAX, 0);

#[map]
pub static SKIFF_AFF4_V1: LruHashMap<Affinity4Key, Affinity4> =
    LruHashMap::pinned(DEFAULT_AFFINITY_MAX, 0);

// Most services never use Maglev, so its tables are allocated on insert rather than up front.
#[map]
pub static SKIFF_MAG4_V1: HashMap<Maglev4Key, u32> =
    HashMap::pinned(DEFAULT_MAGLEV_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static SKIFF_CT4_V1: LruHashMap<Ct4Key, Ct4Entry> = LruHashMap::pinned(DEFAULT_CT_MAX, 0);

#[map]
pub static SKIFF_CFG_V1: Array<NodeConfig4> = Array::pinned(1, 0);
